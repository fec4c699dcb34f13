"""Small domains for tests, importable as ``sample_domains:NAME`` when tests/ is on sys.path."""
from __future__ import annotations

import os
import time

from qd.domain import Domain
from qd.domains.arm import ArmDomain
from qd.result import EvalResult
from qd.space import Categorical, Int, Space


class SlowArm(ArmDomain):
    """The arm, with a sleep per evaluation so a test can kill a run mid-way."""

    name = "slow-arm"

    def __init__(self, joints: int = 6, delay_s: float = 0.004):
        super().__init__(joints=joints)
        self.delay_s = delay_s

    def evaluate(self, config: dict) -> EvalResult:
        time.sleep(self.delay_s)
        return super().evaluate(config)


class FaultyArm(ArmDomain):
    """The arm, failing on purpose for some configurations (by the first angle's sign and size)."""

    name = "faulty-arm"

    def __init__(self, joints: int = 4):
        super().__init__(joints=joints)

    def evaluate(self, config: dict) -> EvalResult:
        first = config["angles"][0]
        if first > 2.5:
            raise RuntimeError("boom: first angle too large")
        if first < -2.5:
            return EvalResult(status="invalid", error="rejected by the domain")
        if -0.05 < first < 0.05 and os.environ.get("QD_TEST_NAN"):
            return EvalResult(fitness=float("nan"))
        return super().evaluate(config)


class SmallGrid(Domain):
    """Eight configurations (``k`` in 0..3 times ``letter`` a/b): a space a short run exhausts."""

    name = "small-grid"
    space = Space({"k": Int(0, 3), "letter": Categorical(["a", "b"])})
    default_measures = ("k", "b")
    default_ranges = ((0.0, 3.0), (0.0, 1.0))
    default_bins = (4, 2)

    def evaluate(self, config: dict) -> EvalResult:
        b = float(config["letter"] == "b")
        return EvalResult(fitness=config["k"] + b, measures={"k": float(config["k"]), "b": b})
