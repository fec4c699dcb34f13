"""The planar robotic arm, the classic MAP-Elites benchmark (pyribs's arm tutorial).

A configuration holds ``joints`` angles in [-pi, pi]; every link has length 1.
The objective is the negative variance of the angles (smooth arms are better);
the measures are the end effector's (x, y) position.
"""
from __future__ import annotations

import math

import numpy as np

from qd.domain import Domain
from qd.result import EvalResult
from qd.space import Float, Seq, Space


class ArmDomain(Domain):
    """Planar arm with ``joints`` links of unit length.

    Parameters
    ----------
    joints : int
        Number of joints (the configuration's ``angles`` list has this length).
    """

    name = "arm"
    objective_name = "-variance of joint angles"

    def __init__(self, joints: int = 20):
        if not isinstance(joints, int) or joints < 1:
            raise ValueError(f"joints must be a positive integer, got {joints!r}")
        self.joints = joints
        self.space = Space({"angles": Seq(Float(-math.pi, math.pi), joints, joints)})
        self.default_measures = ("x", "y")
        self.default_ranges = ((-joints, joints), (-joints, joints))
        self.default_bins = (100, 100)
        # -var(angles) >= -pi**2, so this offset makes every elite count positively in the QD score
        self.qd_score_offset = -math.pi**2

    def evaluate(self, config: dict) -> EvalResult:
        """Score one arm: objective ``-var(angles)``, measures the end effector ``x``, ``y``."""
        angles = np.asarray(config["angles"], dtype=float)
        cumulative = np.cumsum(angles)
        x, y = float(np.cos(cumulative).sum()), float(np.sin(cumulative).sum())
        fitness = -float(angles.var())
        return EvalResult(fitness=fitness, measures={"x": x, "y": y},
                          feedback=f"angle variance {-fitness:.3f}; end effector at ({x:.2f}, {y:.2f})")
