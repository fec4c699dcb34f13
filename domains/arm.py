"""The planar robotic arm, the classic MAP-Elites benchmark (pyribs's arm tutorial).

A configuration holds ``joints`` angles in [-pi, pi]; every link has length 1.
The objective is the negative variance of the angles (smooth arms are better);
the measures are the end effector's (x, y) position. With ``noise > 0`` every
evaluation adds Gaussian noise to the objective (and with ``measure_noise > 0`` to both
measures), seeded by the configuration, the split and the draw, so the true objective is
known (:meth:`ArmDomain.true_objective`) and re-evaluations on fresh draws differ (a
benchmark of uncertain QD, ``qd.noise``).
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from qd.domain import SEARCH, VALIDATION, Domain
from qd.result import EvalResult
from qd.space import Float, Seq, Space


class ArmDomain(Domain):
    """Planar arm with ``joints`` links of unit length.

    Parameters
    ----------
    joints : int
        Number of joints (the configuration's ``angles`` list has this length).
    noise : float
        Standard deviation of the Gaussian noise added to the objective of every evaluation
        (0: deterministic, the classic benchmark).
    measure_noise : float
        Standard deviation of the Gaussian noise added to each measure (link lengths; 0: none).
    """

    name = "arm"
    objective_name = "-variance of joint angles"
    splits = (SEARCH, VALIDATION)
    makes_calls = False  # pure computation: no tracer per evaluation

    def __init__(self, joints: int = 20, noise: float = 0.0, measure_noise: float = 0.0):
        if not isinstance(joints, int) or joints < 1:
            raise ValueError(f"joints must be a positive integer, got {joints!r}")
        for label, value in (("noise", noise), ("measure_noise", measure_noise)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < math.inf:
                raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
        self.joints = joints
        self.noise, self.measure_noise = float(noise), float(measure_noise)
        self.space = Space({"angles": Seq(Float(-math.pi, math.pi), joints, joints)})
        self.default_measures = ("x", "y")
        self.default_ranges = ((-joints, joints), (-joints, joints))
        self.default_bins = (100, 100)
        # -var(angles) >= -pi**2, so this offset makes every elite count positively in the QD score
        self.qd_score_offset = -math.pi**2

    def true_objective(self, config: dict) -> float:
        """The noise-free objective ``-var(angles)``."""
        return -float(np.asarray(config["angles"], dtype=float).var())

    def evaluate(self, config: dict, *, draw: int = 0, split: str = SEARCH) -> EvalResult:
        """Score one arm: objective ``-var(angles)`` (plus noise), measures the end effector ``x``, ``y``."""
        angles = np.asarray(config["angles"], dtype=float)
        cumulative = np.cumsum(angles)
        x, y = float(np.cos(cumulative).sum()), float(np.sin(cumulative).sum())
        fitness = -float(angles.var())
        if self.noise > 0 or self.measure_noise > 0:
            digest = hashlib.blake2b(angles.tobytes() + f"|{split}|{int(draw)}".encode(), digest_size=8).digest()
            fitness_noise, dx, dy = np.random.default_rng(int.from_bytes(digest, "little")).normal(size=3)
            fitness += self.noise * float(fitness_noise)
            x, y = x + self.measure_noise * float(dx), y + self.measure_noise * float(dy)
        return EvalResult(objective=fitness, measures={"x": x, "y": y},
                          feedback=f"angle variance {angles.var():.3f}; end effector at ({x:.2f}, {y:.2f})")
