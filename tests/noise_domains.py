"""Domains for the noise tests, importable as ``noise_domains:NAME`` when tests/ is on sys.path."""
from __future__ import annotations

import time

from qd.domain import SEARCH
from qd.domains.arm import ArmDomain
from qd.result import EvalResult


class SlowNoisyArm(ArmDomain):
    """The arm with objective noise and a sleep per evaluation, so a test can kill a run mid-way."""

    name = "slow-noisy-arm"

    def __init__(self, joints: int = 6, noise: float = 0.5, delay_s: float = 0.004):
        super().__init__(joints=joints, noise=noise)
        self.delay_s = delay_s

    def evaluate(self, config: dict, *, draw: int = 0, split: str = SEARCH) -> EvalResult:
        time.sleep(self.delay_s)
        return super().evaluate(config, draw=draw, split=split)
