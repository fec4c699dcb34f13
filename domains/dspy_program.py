"""DSPy programs as domains: a program, a trainset and a metric become a search problem.

::

    from qd.domains.dspy_program import DSPyDomain

    domain = DSPyDomain(MyProgram(), trainset, metric)      # in mydomain.py; `[domain] name = "mydomain:domain"`

The space is derived from the program. Each *slot* (an attribute holding a ``dspy.Predict`` or
``dspy.ChainOfThought``, found recursively through sub-modules) gets

``instruction`` (:class:`~qd.space.Text`)
    The signature's instructions (the program's own as the default).
``demos`` (:class:`~qd.space.Int`, 0..``max_demos``)
    How many labelled demos the slot shows: the first ones of the *demo pool*, examples that are
    never scored, so a configuration cannot score by repeating an answer it was shown. The pool is
    ``demoset`` when given, else the first ``min(max_demos, len(trainset) // 2)`` trainset examples,
    and the search scores the rest. (No parameter when the pool is empty.)
``kind`` (:class:`~qd.space.Categorical`)
    ``"Predict"`` or ``"ChainOfThought"``: the slot is rebuilt as that module over the same signature.

plus the LM's ``temperature`` and, when ``models`` lists several, the ``model``. :meth:`DSPyDomain.program`
maps a configuration back to a runnable program; :meth:`DSPyDomain.export` writes it as DSPy's own
program state (``program.load(path)``) and as a whole saved program (``dspy.load(dir, allow_pickle=True)``);
``qd elites RUN --export DIR`` does this for the selected elites.

Calls go to the run's ``[llm]`` endpoint (:func:`qd.pipeline_llm`; ``pipeline_model`` picks another
model than the operators') with DSPy's cache off, so every evaluation's trace counts its real calls.
The objective is the metric's mean over the scored examples (the trainset less the demo pool); an
example whose program or metric fails (e.g. a small model's reply DSPy cannot parse) scores 0 and is
reported with its index. The default map is accuracy over ``llm_calls_per_example`` x
``tokens_total_per_example`` (one example's calls and tokens, on average); ``critical_path`` and
``max_fanout`` describe one example (the largest), as for every :class:`~qd.FunctionDomain`.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM must not fetch its price map

import dspy  # noqa: E402

from qd.domain import SEARCH  # noqa: E402
from qd.function_domain import FunctionDomain  # noqa: E402
from qd.llm.pipeline import pipeline_llm  # noqa: E402
from qd.result import EvalResult  # noqa: E402
from qd.space import Categorical, Float, Int, Space, Text  # noqa: E402

__all__ = ["DSPyDomain", "program_slots"]

KINDS = ("Predict", "ChainOfThought")


def _is_slot(value: Any) -> bool:
    return isinstance(value, dspy.ChainOfThought) or type(value) is dspy.Predict


def program_slots(program: dspy.Module, prefix: str = "") -> list[tuple[str, Any, str, Any]]:
    """``(path, parent, attribute, module)`` of every Predict / ChainOfThought attribute, depth first."""
    out = []
    for attr, value in vars(program).items():
        if attr.startswith("_"):
            continue
        if _is_slot(value):
            out.append((prefix + attr, program, attr, value))
        elif isinstance(value, dspy.Module):
            out += program_slots(value, prefix + attr + ".")
    return out


def _base_signature(module: Any) -> Any:
    """The slot's signature without ChainOfThought's reasoning field."""
    if isinstance(module, dspy.ChainOfThought):
        return module.predict.signature.delete("reasoning")
    return module.signature


def _inner(module: Any) -> Any:
    return module.predict if isinstance(module, dspy.ChainOfThought) else module


class _Built(dict):
    """A configuration with its program and LM, built once and shared by the examples of one evaluation.

    DSPy keeps per-call state in thread-local settings, so one program serves the concurrent
    examples.
    """

    def __init__(self, config: dict, program: Any, lm: Any) -> None:
        super().__init__(config)
        self.program, self.lm = program, lm


class DSPyDomain(FunctionDomain):
    """A DSPy program searched over its instructions, demos, module kinds and LM settings.

    Parameters
    ----------
    program : dspy.Module
        The program (it is copied, never changed); it needs at least one Predict/ChainOfThought attribute.
    trainset : sequence of dspy.Example
        Examples with inputs marked (``.with_inputs(...)``). The search scores on these, less the
        first ``min(max_demos, len(trainset) // 2)`` when no ``demoset`` is given: those are the
        demo pool, never scored.
    demoset : sequence of dspy.Example, optional
        Labelled examples the slots show as demos (never scored); the whole trainset is then scored.
    metric : callable
        ``metric(example, prediction) -> float | bool`` (DSPy's convention; a ``trace`` argument is
        passed as ``None`` when the metric takes one), or GEPA's feedback metric returning
        ``dspy.Prediction(score=..., feedback="what went wrong")``: the text reaches the LLM operators.
    devset : sequence of dspy.Example, optional
        Held-out examples for re-scoring elites (the ``validation`` split).
    models : sequence of str, optional
        Models (at the run's endpoint) to choose among; default: the pipeline model only.
    temperature : (float, float)
        Range of the LM temperature.
    max_demos : int
        Most demos per slot (and the most examples the demo pool takes from the trainset).
    max_instruction_chars : int
        Longest instruction the space allows.
    max_tokens : int
        Completion limit of each LM call.
    measures : mapping, optional
        Default measures and ranges; default ``llm_calls_per_example`` and
        ``tokens_total_per_example`` (one example's calls and tokens on average; ``llm_calls`` and
        ``tokens_total`` count the whole evaluation) with ranges from the program's size.
    concurrency : int
        Examples run at once.
    """

    def __init__(self, program: dspy.Module, trainset: Sequence[Any], metric: Callable[..., Any], *,
                 devset: Sequence[Any] | None = None, demoset: Sequence[Any] | None = None,
                 models: Sequence[str] | None = None,
                 temperature: tuple[float, float] = (0.0, 1.5), max_demos: int = 4, max_instruction_chars: int = 600,
                 max_tokens: int = 256, measures: dict[str, tuple[float, float]] | None = None,
                 concurrency: int = 4, name: str = "dspy") -> None:
        if not isinstance(program, dspy.Module):
            raise TypeError(f"program must be a dspy.Module, got {type(program).__name__}")
        slots = program_slots(program)
        if not slots:
            raise ValueError(f"{type(program).__name__} has no dspy.Predict or dspy.ChainOfThought attribute to search")
        self.base_program = program
        self.metric = metric
        self._metric_takes_trace = len(inspect.signature(metric).parameters) >= 3
        self.models = list(models or [])
        self.max_tokens = int(max_tokens)
        trainset = list(trainset)
        if demoset is None:  # demos from examples the search never scores (no answer leakage)
            pool = min(max_demos, len(trainset) // 2)
            self.demo_pool, scored = trainset[:pool], trainset[pool:]
        else:
            self.demo_pool, scored = list(demoset), trainset
        most_demos = min(max_demos, len(self.demo_pool))
        params: dict[str, Any] = {}
        for path, _, _, module in slots:
            instructions = _base_signature(module).instructions or ""
            slot: dict[str, Any] = {"instruction": Text(max(max_instruction_chars, len(instructions)),
                                                        default=instructions)}
            if most_demos:
                slot["demos"] = Int(0, most_demos)
            slot["kind"] = Categorical(list(KINDS))
            params[path] = Space(slot)
        params["temperature"] = Float(float(temperature[0]), float(temperature[1]))
        if len(self.models) > 1:
            params["model"] = Categorical(self.models)
        calls = 2 * len(slots)  # per example: a ChainOfThought and a retried parse at most
        measures = measures or {"llm_calls_per_example": (0, calls), "tokens_total_per_example": (0, calls * 800)}
        super().__init__(Space(params), scored, self._score_example, validation=devset, measures=measures,
                         concurrency=concurrency, name=name, uses_llm=True)
        self.objective_name = getattr(metric, "__name__", "metric")
        user = {type(program).__module__, getattr(metric, "__module__", "")}
        self.source_modules = tuple(m for m in user if m and m.split(".")[0] not in ("dspy", "qd"))

    # -- configuration -> program --------------------------------------------------------------
    def program(self, config: dict) -> dspy.Module:
        """A runnable copy of the program with ``config``'s instructions, demos and module kinds."""
        program = self.base_program.deepcopy()
        for path, parent, attr, module in program_slots(program):
            slot = config[path]
            signature = _base_signature(module).with_instructions(slot["instruction"])
            rebuilt = dspy.ChainOfThought(signature) if slot["kind"] == "ChainOfThought" else dspy.Predict(signature)
            _inner(rebuilt).demos = list(self.demo_pool[: int(slot.get("demos", 0))])
            setattr(parent, attr, rebuilt)
        return program

    def lm(self, config: dict) -> Any:
        """The ``dspy.LM`` of ``config`` at the run's endpoint (cache off: every call is real)."""
        settings = pipeline_llm()
        model = config.get("model") or (self.models[0] if self.models else None)
        return settings.dspy_lm(model=model, temperature=float(config["temperature"]), max_tokens=self.max_tokens,
                                cache=False, num_retries=0)

    def evaluate(self, config: dict, *, draw: int = 0, split: str = SEARCH) -> EvalResult:
        """Score ``config`` as :meth:`FunctionDomain.evaluate` does, building its program and LM once.

        A configuration whose program or LM cannot be built raises that error: the evaluation
        fails with it, instead of every example scoring 0.
        """
        return super().evaluate(self._build(config), draw=draw, split=split)

    def _build(self, config: dict) -> _Built:
        return _Built(config, self.program(config), self.lm(config))

    def _score_example(self, config: dict, example: Any) -> Any:
        if not isinstance(config, _Built):  # called on its own, outside evaluate()
            config = self._build(config)
        with dspy.context(lm=config.lm):
            prediction = config.program(**example.inputs())
        return self.metric(example, prediction, None) if self._metric_takes_trace else self.metric(example, prediction)

    # -- export --------------------------------------------------------------------------------
    def export(self, config: dict, directory: str | Path) -> dict[str, Path]:
        """Write ``config`` as DSPy artefacts in ``directory``.

        Returns
        -------
        dict
            ``{"state": DIR/program.json, "program": DIR/program}``: the state loads with
            ``program.load(path)`` into a program of the same structure (``self.program(config)``
            or the original class when the kinds are unchanged); the directory with
            ``dspy.load(path, allow_pickle=True)``, which needs nothing else.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        program = self.program(config)
        state = directory / "program.json"
        program.save(str(state))
        whole = directory / "program"
        module = inspect.getmodule(type(self.base_program))
        extra = [module] if module is not None and module.__name__.split(".")[0] not in ("dspy",) else None
        program.save(str(whole), save_program=True, modules_to_serialize=extra)
        return {"state": state, "program": whole}
