"""A k-module configuration problem: one right option per pipeline stage, found by search.

After OpenEvolve's ``examples/k_module_problem``: a pipeline of ``stages`` stages (loader,
preprocess, model, postprocess, ...) with ``options`` choices each has one right combination,
hidden from the search and drawn from ``seed``. Two numeric knobs ride along: ``threshold``
(a float with one best value, also drawn from ``seed``) and ``batch_size`` (free: it only moves
the configuration on the map). The objective is

    (stages right + 1 - |threshold - best threshold|) / (stages + 1)

so 1.0 means solved, and the map is two measures computed statically from the configuration
(:meth:`KModuleDomain.predict_measures` gives them without evaluating anything):

``cost``
    the sum of each chosen option's cost (a fixed table of 1..options per stage);
``log2_batch``
    ``log2(batch_size)``.

What the feedback says is the experiment's variable (``feedback``):

``"attributable"``
    names every wrong stage with the option that was tried, and says which way the threshold
    is off (the "rich feedback" of the OpenEvolve example, which solved it in 3 iterations);
``"count"``
    only how many stages are right (the score a blind search sees anyway);
``"none"``
    nothing beyond the objective.

An evaluation takes microseconds and is deterministic: run it with ``[archive] noise = "none"``
and ``[evaluator] backend = "serial"``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from qd.domain import Domain
from qd.result import EvalResult
from qd.space import Categorical, Float, Int, Space

__all__ = ["KModuleDomain", "STAGE_OPTIONS", "FEEDBACK_MODES"]

#: Stage names and their options, in order; a domain takes the first ``stages`` stages and the
#: first ``options`` options of each.
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "loader": ("csv", "json", "parquet", "sql", "stream", "xml", "avro", "excel"),
    "preprocess": ("none", "normalize", "standardize", "minmax", "log", "robust", "quantile", "pca"),
    "model": ("linear", "tree", "forest", "boosting", "knn", "svm", "mlp", "bayes"),
    "postprocess": ("none", "clip", "round", "calibrate", "smooth", "rank", "cutoff", "ensemble"),
    "cache": ("off", "memory", "disk", "redis", "lru", "ttl", "tiered", "remote"),
    "export": ("stdout", "file", "s3", "kafka", "http", "email", "parquet", "db"),
}
FEEDBACK_MODES = ("attributable", "count", "none")
MAX_BATCH = 64


class KModuleDomain(Domain):
    """``stages`` stages × ``options`` options with one right combination (see the module docstring).

    Parameters
    ----------
    stages : int
        Pipeline stages, 1 to 6 (default 4, as in OpenEvolve's example).
    options : int
        Options per stage, 2 to 8 (default 5: 625 combinations at 4 stages).
    feedback : {"attributable", "count", "none"}
        What the evaluation's feedback text says.
    seed : int
        Draws the right combination and the best threshold.
    """

    name = "k-module"
    objective_name = "score"
    qd_score_offset = 0.0

    def __init__(self, stages: int = 4, options: int = 5, feedback: str = "attributable", seed: int = 0) -> None:
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= len(STAGE_OPTIONS):
            raise ValueError(f"stages must be an integer in [1, {len(STAGE_OPTIONS)}], got {stages!r}")
        longest = min(len(v) for v in STAGE_OPTIONS.values())
        if isinstance(options, bool) or not isinstance(options, int) or not 2 <= options <= longest:
            raise ValueError(f"options must be an integer in [2, {longest}], got {options!r}")
        if feedback not in FEEDBACK_MODES:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK_MODES)}, got {feedback!r}")
        self.stages, self.options, self.feedback_mode, self.seed = stages, options, feedback, int(seed)
        self.stage_names = tuple(STAGE_OPTIONS)[:stages]
        self.choices = {s: STAGE_OPTIONS[s][:options] for s in self.stage_names}
        rng = np.random.default_rng([self.seed, stages, options])
        self.answer = {s: self.choices[s][int(rng.integers(options))] for s in self.stage_names}
        self.best_threshold = round(float(rng.uniform(0.1, 0.9)), 2)
        # Option i of stage number k costs 1 + (3i + k) mod options: a permutation per stage, so the
        # right option is cheap in some stages and dear in others.
        self.costs = {s: {o: 1 + (3 * i + k) % options for i, o in enumerate(self.choices[s])}
                      for k, s in enumerate(self.stage_names)}
        self.space = Space({**{s: Categorical(list(self.choices[s])) for s in self.stage_names},
                            "threshold": Float(0.0, 1.0), "batch_size": Int(1, MAX_BATCH)})
        self.default_measures = ("cost", "log2_batch")
        self.default_ranges = ((float(stages), float(stages * options)), (0.0, math.log2(MAX_BATCH)))
        self.default_bins = (8, 6)

    def default_config(self) -> dict:
        """The first option of every stage, threshold 0.5, batch size 8."""
        return {**{s: self.choices[s][0] for s in self.stage_names}, "threshold": 0.5, "batch_size": 8}

    # -- static analysis -------------------------------------------------------------------------
    def predict_measures(self, config: dict) -> dict[str, float]:
        """``cost`` and ``log2_batch`` of ``config``: exact, computed without evaluating it."""
        return {"cost": float(sum(self.costs[s][config[s]] for s in self.stage_names)),
                "log2_batch": math.log2(int(config["batch_size"]))}

    def descriptors(self) -> dict[str, Callable[[dict, EvalResult], float]]:
        """``cost`` and ``log2_batch`` (static, :meth:`predict_measures`)."""
        return {"cost": lambda c, r: self.predict_measures(c)["cost"],
                "log2_batch": lambda c, r: self.predict_measures(c)["log2_batch"]}

    # -- evaluation ------------------------------------------------------------------------------
    def wrong_stages(self, config: dict) -> list[str]:
        """The stages whose option is not the right one, in pipeline order."""
        return [s for s in self.stage_names if config[s] != self.answer[s]]

    def evaluate(self, config: dict) -> EvalResult:
        """Score ``config``: stages right plus threshold closeness, over ``stages + 1``."""
        problems = self.space.validate(config)
        if problems:
            return EvalResult.failure("invalid", "; ".join(problems[:5]))
        wrong = self.wrong_stages(config)
        right = self.stages - len(wrong)
        offset = float(config["threshold"]) - self.best_threshold
        fitness = (right + 1.0 - abs(offset)) / (self.stages + 1)
        return EvalResult(objective=fitness, measures=self.predict_measures(config),
                          metrics={"stages_right": right, "solved": not wrong},
                          feedback=self._feedback(config, wrong, offset))

    def _feedback(self, config: dict, wrong: list[str], offset: float) -> str:
        right = self.stages - len(wrong)
        if self.feedback_mode == "none":
            return ""
        if self.feedback_mode == "count":
            return f"{right} of {self.stages} stages right"
        lines = [f"{right} of {self.stages} stages right"]
        lines += [f"stage {s}: {config[s]} is wrong" for s in wrong]
        if abs(offset) >= 0.05:
            lines.append(f"threshold {float(config['threshold']):.2f} is too {'high' if offset > 0 else 'low'}")
        return "\n".join(lines)
