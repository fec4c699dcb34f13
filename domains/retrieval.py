"""Compound-AI retrieval domain: answer "what is the code of key K?" over N records by decomposition.

One LLM call over a long record list fails (gemma-3-270m, greedy, one call over the whole list:
accuracy falls from ~0.7 at 4 records to ~0 at 64; see ``domains/retrieval_fit.json``), so the
pipeline splits the list into chunks, asks each chunk (``samples`` votes each, in parallel),
aggregates the chunk answers, and may verify the result:

``chunk``  (LLM, ``n_chunks * samples`` calls, independent)
    forward question over one chunk, optional few-shot examples, the (evolvable) instruction.
``aggregate``
    ``first_hit``: first chunk whose voted answer is a code; ``majority``: most votes over all
    chunk answers (a tool span depending on the chunk calls); ``llm_fusion``: one LLM call that
    re-asks the question over the *candidate records* (the lines whose codes the chunks proposed;
    the first chunk if none), depending on every chunk call.
``verify`` (Bool, one LLM call depending on the aggregate)
    reverse lookup "which key has code C?" over the candidate records; if it names another key,
    the runner-up candidate is used instead. With no answer to check, it re-asks the forward
    question over the candidate records.

So an instance costs ``samples * ceil(N / chunk_size) + fusion + verify`` LLM calls with a critical
path of 1 + fusion + verify (:func:`predict_calls`, checked against traces in the tests). Each
instance is an example of the evaluation (:func:`~qd.analysis.tracer.example_scope`): the demo's map
is ``log2_calls`` (calls per instance) by ``max_prompt_tokens`` (the largest prompt of any call),
and ``critical_path`` and ``max_fanout`` are an instance's (the largest); ``llm_calls`` and
``tokens_total`` count the whole evaluation.

``backend="simulated"`` swaps the model for :class:`qd.domains.retrieval_sim.SimulatedLLM` (fitted to
the real curve; domain name ``retrieval-sim``, spans ``model="simulated"``, feedback says so).
"""
from __future__ import annotations

import contextvars
import math
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from qd.analysis.descriptors import llm_calls_per_example
from qd.analysis.tracer import active_tracer, example_scope, span
from qd.domain import SEARCH, VALIDATION, Domain
from qd.domains.retrieval_task import (
    DEFAULT_INSTRUCTION,
    Instance,
    chunks,
    forward_prompt,
    make_instance,
    make_instances,
    n_chunks,
    parse_code,
    parse_key,
    reverse_prompt_with_example,
)
from qd.llm.cache import cache_path
from qd.llm.models import MODEL_ALIAS
from qd.result import EvalResult
from qd.space import Bool, Categorical, Float, Int, Space, Text

if TYPE_CHECKING:
    from qd.llm.pipeline import PipelineLLM
    from qd.llm.prices import Price

__all__ = ["RetrievalDomain", "predict_calls", "make_space", "AGGREGATIONS"]

AGGREGATIONS = ("first_hit", "majority", "llm_fusion")
MAX_SAMPLES = 5
MAX_FEW_SHOT = 3
INSTRUCTION_MAX = 300


def make_space(n_pairs: int, max_samples: int = MAX_SAMPLES, max_few_shot: int = MAX_FEW_SHOT) -> Space:
    """The configuration space for ``n_pairs`` records.

    ``max_samples`` and ``max_few_shot`` narrow the space (the real-backend demo caps them to keep
    each evaluation affordable on a CPU); they cannot exceed :data:`MAX_SAMPLES`, :data:`MAX_FEW_SHOT`.
    """
    # Int ranges need low < high, so at least two choices each.
    if not 2 <= max_samples <= MAX_SAMPLES:
        raise ValueError(f"max_samples must be in [2, {MAX_SAMPLES}], got {max_samples!r}")
    if not 1 <= max_few_shot <= MAX_FEW_SHOT:
        raise ValueError(f"max_few_shot must be in [1, {MAX_FEW_SHOT}], got {max_few_shot!r}")
    if not 2 <= n_pairs:
        raise ValueError(f"n_pairs must be at least 2, got {n_pairs!r}")
    return Space({
        "chunk_size": Int(1, n_pairs),
        "samples": Int(1, max_samples),
        "few_shot": Int(0, max_few_shot),
        "instruction": Text(INSTRUCTION_MAX, default=DEFAULT_INSTRUCTION),
        "aggregation": Categorical(list(AGGREGATIONS)),
        "verify": Bool(),
        "temperature": Float(0.0, 1.5),
    })


def predict_calls(config: dict, n_pairs: int) -> dict[str, int]:
    """Static analysis: LLM calls and critical path of one instance, without running anything.

    Returns
    -------
    dict
        ``llm_calls = samples * ceil(n_pairs / chunk_size) + [aggregation == "llm_fusion"] + [verify]``
        and ``critical_path = 1 + [llm_fusion] + [verify]``.
    """
    fusion = int(config["aggregation"] == "llm_fusion")
    verify = int(bool(config["verify"]))
    calls = int(config["samples"]) * n_chunks(n_pairs, int(config["chunk_size"])) + fusion + verify
    return {"llm_calls": calls, "critical_path": 1 + fusion + verify}


def _vote(answers: list[str | None]) -> str | None:
    """Most common answer, ties to the earliest; ``None`` ("none") may win."""
    if not answers:
        return None
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a)))


def _ranked(answers: list[str | None]) -> list[str]:
    """Distinct codes by votes (desc), ties to the earliest."""
    codes = [a for a in answers if a is not None]
    counts = Counter(codes)
    return sorted(dict.fromkeys(codes), key=lambda a: (-counts[a], codes.index(a)))


class RetrievalDomain(Domain):
    """Key-value retrieval by chunking, voting, fusion and verification on an LLM.

    Parameters
    ----------
    n_pairs : int
        Records per instance.
    n_instances : int
        Instances in the fixed evaluation set (fitness = accuracy over them).
    seed : int
        Seed of the evaluation set.
    backend : {"real", "simulated"}
        ``"real"`` calls an LLM through :class:`qd.llm.LLMClient`; ``"simulated"`` uses the fitted
        :class:`~qd.domains.retrieval_sim.SimulatedLLM` (fast, deterministic, labelled simulated).
    base_url, model, api, api_key_env, timeout_s, prices :
        Passed to :class:`qd.llm.LLMClient` (real backend; ``base_url=None`` is the embedded model).
        A run gives the first three, and ``prices``, from its ``[llm]`` section (:meth:`llm_options`).
    cache : str, bool or None
        Request cache of the real backend: a SQLite path, ``True`` for qd's shared cache
        (``$QD_CACHE_DIR/llm-cache.sqlite``, default ``~/.cache/qd``), ``None``/``False`` for none.
        Chunk calls are seeded by (instance, chunk, sample) only, so configurations that differ
        only in aggregation, verification or sample count reuse each other's chunk answers; the
        trace still counts every call (``cached=True``), so descriptors are unchanged.
    concurrency : int
        Chunk calls in flight at once (real backend).
    max_tokens : int
        Completion limit of every call (answers are one short line).
    fit_path : str, optional
        Parameters of the simulated backend (default ``domains/retrieval_fit.json``).
    max_samples, max_few_shot : int
        Upper bounds of ``samples`` (2..5) and ``few_shot`` (1..3) in the space; smaller values make
        the most expensive configurations cheaper (the default ``qd run`` job uses 3 and 2).

    Notes
    -----
    Each result's metrics hold ``predicted_calls_per_instance`` (static analysis),
    ``traced_calls`` (LLM spans this evaluation recorded) and ``prediction_ok`` (whether the two
    agree for all instances; ``None`` when no tracer was active).
    """

    objective_name = "accuracy"
    qd_score_offset = 0.0
    splits = (SEARCH, VALIDATION)

    def __init__(self, n_pairs: int = 32, n_instances: int = 8, seed: int = 0, backend: str = "real",
                 base_url: str | None = None, model: str = MODEL_ALIAS, api: str = "completions",
                 api_key_env: str = "OPENAI_API_KEY", cache: str | bool | None = None, timeout_s: float = 60.0,
                 concurrency: int = 4, max_tokens: int = 8, fit_path: str | None = None,
                 max_samples: int = MAX_SAMPLES, max_few_shot: int = MAX_FEW_SHOT,
                 prices: Mapping[str, Price] | None = None) -> None:
        if backend not in ("real", "simulated"):
            raise ValueError(f"backend must be 'real' or 'simulated', got {backend!r}")
        if not isinstance(n_pairs, int) or not 2 <= n_pairs <= 1600:
            raise ValueError(f"n_pairs must be an integer in [2, 1600], got {n_pairs!r}")
        if not isinstance(n_instances, int) or n_instances < 1:
            raise ValueError(f"n_instances must be a positive integer, got {n_instances!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.n_pairs, self.n_instances, self.seed, self.backend = n_pairs, n_instances, int(seed), backend
        self.name = "retrieval-sim" if backend == "simulated" else "retrieval"
        self.concurrency, self.max_tokens = int(concurrency), int(max_tokens)
        self.fit_path = fit_path
        self.max_samples, self.max_few_shot = int(max_samples), int(max_few_shot)
        self.space = make_space(n_pairs, self.max_samples, self.max_few_shot)
        self.instances: list[Instance] = make_instances(n_pairs, n_instances, self.seed)
        if backend == "simulated":
            from qd.domains.retrieval_sim import SimulatedLLM

            self.llm: Any = SimulatedLLM(fit_path)
        else:
            from qd.llm.client import LLMClient

            self.llm = LLMClient(base_url=base_url, model=model, api=api, api_key_env=api_key_env,
                                 cache=cache_path(cache), prices=dict(prices or {}),
                                 timeout_s=timeout_s, concurrency=concurrency, max_tokens=max_tokens)
        # Default map: log2(LLM calls per instance) x largest prompt: the calls-vs-context trade-off.
        self.default_measures = ("log2_calls", "max_prompt_tokens")
        max_calls = self.max_samples * n_pairs + 2
        self.default_ranges = ((0.0, math.ceil(math.log2(max_calls) * 2) / 2), (0.0, float(self._max_prompt_tokens())))
        self.default_bins = (16, 16)

    @classmethod
    def llm_options(cls, pipeline: PipelineLLM, prices: Mapping[str, Price] | None) -> dict[str, Any]:
        """The options a run's ``[llm]`` gives (``qd.domains.get_domain``): the pipeline's endpoint and prices."""
        return {"base_url": pipeline.base_url, "model": pipeline.model, "api_key_env": pipeline.api_key_env,
                "prices": prices}

    # -- static analysis ------------------------------------------------------------------------
    def _max_prompt_tokens(self) -> int:
        """Upper end of the ``max_prompt_tokens`` range.

        The longest prompt any configuration can send (all records, the longest instruction, every
        few-shot example, or the verification prompt), with 10% slack for the real tokenizer,
        rounded up to 50.
        """
        from qd.domains.retrieval_sim import SimulatedLLM

        longest = "x" * INSTRUCTION_MAX
        prompts = [p for inst in self.instances for p in (
            forward_prompt(inst.records, inst.key, instruction=longest, few_shot=self.max_few_shot),
            reverse_prompt_with_example(inst.records, inst.code, instruction=longest))]
        tokens = max(SimulatedLLM().count_tokens(p) for p in prompts)
        return int(math.ceil(tokens * 1.1 / 50.0) * 50)

    def predict(self, config: dict) -> dict[str, int]:
        """:func:`predict_calls` for one instance of this domain."""
        return predict_calls(config, self.n_pairs)

    def predict_measures(self, config: dict) -> dict[str, float]:
        """The measures ``config`` will get, computed without running it (the search's cost model).

        Call counts are exact (:func:`predict_calls`; ``llm_calls`` over all instances,
        ``log2_calls`` and ``calls_per_instance`` per instance). ``max_prompt_tokens`` is the
        simulated model's token estimate of the longest chunk prompt, or of a fusion or verification
        prompt; those carry the records the chunks' votes proposed, taken as
        ``n_chunks * (1 + samples) // 2`` (on ``retrieval-sim``: within one of 16 bins for 99% of
        random configurations).
        """
        from qd.domains.retrieval_sim import SimulatedLLM

        calls = predict_calls(config, self.n_pairs)
        size = max(1, int(config["chunk_size"]))
        instr, shots = config["instruction"], int(config["few_shot"])
        count = SimulatedLLM(self.fit_path).count_tokens if self.backend == "real" else self.llm.count_tokens
        longest = 0
        for inst in self.instances:
            prompts = [forward_prompt(part, inst.key, instruction=instr, few_shot=shots)
                       for part in chunks(inst.records, size)]
            proposed = inst.records[: (n_chunks(self.n_pairs, size) * (1 + int(config["samples"]))) // 2]
            if config["aggregation"] == "llm_fusion" or config["verify"]:
                prompts.append(forward_prompt(proposed, inst.key, instruction=instr, few_shot=shots))
            if config["verify"]:
                prompts.append(reverse_prompt_with_example(proposed, inst.code, instruction=instr))
            longest = max(longest, *(count(p) for p in prompts))
        per_instance = calls["llm_calls"]
        return {"llm_calls": float(per_instance * self.n_instances), "calls_per_instance": float(per_instance),
                "predicted_calls": float(per_instance), "log2_calls": math.log2(max(1, per_instance)),
                "critical_path": float(calls["critical_path"]), "max_prompt_tokens": float(longest),
                "chunk_size": float(min(size, self.n_pairs)), "n_chunks": float(n_chunks(self.n_pairs, size)),
                "samples": float(config["samples"])}

    def descriptors(self) -> dict[str, Callable[[dict, EvalResult], float]]:
        """Domain descriptors.

        ``log2_calls`` (log2 of the LLM calls per instance, from the trace: the built-in
        ``llm_calls_per_example``, an instance being an example), ``predicted_calls`` (static, per
        instance), ``chunk_size`` (effective), ``n_chunks``, ``samples``.
        """
        return {
            "log2_calls": lambda c, r: math.log2(max(1.0, llm_calls_per_example(c, r))),
            "predicted_calls": lambda c, r: float(predict_calls(c, self.n_pairs)["llm_calls"]),
            "chunk_size": lambda c, r: float(min(int(c["chunk_size"]), self.n_pairs)),
            "n_chunks": lambda c, r: float(n_chunks(self.n_pairs, int(c["chunk_size"]))),
            "samples": lambda c, r: float(c["samples"]),
        }

    # -- running --------------------------------------------------------------------------------
    def _call(self, prompt: str, *, name: str, temperature: float, deps: list, seed: int,
              errors: list) -> tuple[str, int | None]:
        try:
            r = self.llm.complete(prompt, stop=["\n"], temperature=temperature, max_tokens=self.max_tokens,
                                  name=name, deps=deps, seed=seed)
            return r.text, r.span_id
        except Exception as exc:  # one failed call is a wrong answer, not a failed evaluation
            errors.append(f"{name}: {type(exc).__name__}: {exc}"[:200])
            return "", None

    def _run_instance(self, config: dict, idx: int, inst: Instance, pool: ThreadPoolExecutor | None,
                      errors: list) -> dict:
        instr, shots, temp = config["instruction"], int(config["few_shot"]), float(config["temperature"])
        samples, agg = int(config["samples"]), config["aggregation"]
        parts = chunks(inst.records, max(1, int(config["chunk_size"])))
        prompts = [forward_prompt(part, inst.key, instruction=instr, few_shot=shots) for part in parts]

        def ask(c: int, s: int) -> tuple[str, int | None]:
            return self._call(prompts[c], name="chunk", temperature=temp, deps=[],
                              seed=inst.seed * 1009 + c * MAX_SAMPLES + s, errors=errors)

        def ask_chunk(c: int) -> list[tuple[str, int | None]]:
            return [ask(c, s) for s in range(samples)]

        if pool is None:
            outs = [out for c in range(len(parts)) for out in ask_chunk(c)]
        else:  # each chunk runs in a copy of this context so its spans land in this tracer, under this step
            # A chunk's samples share one prompt and are asked one after another: each later sample
            # finds the prompt in the server's cache (the slot that just answered it) and only decodes,
            # where one sent alongside the first would compute the whole prompt again.
            futures = [pool.submit(contextvars.copy_context().run, ask_chunk, c) for c in range(len(parts))]
            outs = [out for f in futures for out in f.result()]
        chunk_ids = [sid for _, sid in outs if sid is not None]
        answers = [parse_code(text) for text, _ in outs]
        per_chunk = [answers[c * samples:(c + 1) * samples] for c in range(len(parts))]
        voted = [_vote(a) for a in per_chunk]
        # candidate records: lines whose codes the chunks proposed, by votes (the fusion/verify context)
        ranked_all = _ranked(answers)
        lines = {c_code: (k, c_code) for part in parts for k, c_code in part}
        candidates = [lines[c] for c in ranked_all if c in lines] or list(parts[0])
        agg_deps = chunk_ids
        if agg == "llm_fusion":
            text, fid = self._call(forward_prompt(candidates, inst.key, instruction=instr, few_shot=shots),
                                   name="fuse", temperature=0.0, deps=chunk_ids, seed=inst.seed, errors=errors)
            answer = parse_code(text)
            ranking = ([answer] if answer else []) + [c for c in ranked_all if c != answer]
            agg_deps = [fid] if fid is not None else []
        else:
            with span("tool", f"aggregate:{agg}", deps=chunk_ids) as tid:
                if agg == "first_hit":
                    ranking = list(dict.fromkeys(v for v in voted if v is not None))
                else:
                    ranking = ranked_all
                answer = ranking[0] if ranking else None
            agg_deps = [tid] if tid is not None else []
        verdict = ""
        if config["verify"]:
            if answer is not None:
                text, _ = self._call(reverse_prompt_with_example(candidates, answer, instruction=instr),
                                     name="verify", temperature=0.0, deps=agg_deps, seed=inst.seed, errors=errors)
                named = parse_key(text)
                if named != inst.key.lower():
                    runner_up = next((c for c in ranking if c != answer), None)
                    verdict = f"verification named {named or 'nothing'} for {answer}"
                    if runner_up is not None:
                        verdict += f", switched to {runner_up}"
                        answer = runner_up
            else:
                text, _ = self._call(forward_prompt(candidates, inst.key, instruction=instr, few_shot=shots),
                                     name="verify", temperature=0.0, deps=agg_deps, seed=inst.seed, errors=errors)
                answer = parse_code(text)
                verdict = f"no answer to verify; re-asked and got {answer or 'none'}"
        holder = next(c for c, part in enumerate(parts) if any(k == inst.key for k, _ in part))
        return {"answer": answer, "correct": answer == inst.code, "expected": inst.code, "holder": holder,
                "n_chunks": len(parts), "holder_answers": per_chunk[holder], "verdict": verdict}

    def instances_for(self, draw: int = 0, split: str = SEARCH) -> list[Instance]:
        """The ``n_instances`` instances of ``draw`` in ``split``.

        Draw 0 of the search split is the fixed evaluation set; every other draw of the search
        split is a fresh set (re-evaluations under noise), and the validation split never
        shares an instance with the search split (instance seeds from 1_000_003 on, past any
        search draw below a million instances).
        """
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; the retrieval domain has {', '.join(self.splits)}")
        if split == SEARCH and draw == 0:
            return self.instances
        start = self.seed * 100_003 + (1_000_003 if split == VALIDATION else 0) + int(draw) * self.n_instances
        return [make_instance(self.n_pairs, start + i) for i in range(self.n_instances)]

    def evaluate(self, config: dict, *, draw: int = 0, split: str = SEARCH) -> EvalResult:
        """Run ``config`` on every instance of ``draw`` in ``split`` (:meth:`instances_for`); fitness = accuracy.

        ``scores`` holds 1.0 or 0.0 per instance.
        """
        instances = self.instances_for(draw, split)
        problems = self.space.validate(config)
        if problems:
            return EvalResult.failure("invalid", "; ".join(problems[:5]))
        errors: list[str] = []
        tracer = active_tracer()
        first_span = len(tracer) if tracer is not None else 0

        def run(i: int, inst: Instance, pool: ThreadPoolExecutor | None) -> dict:
            with example_scope(i, f"instance{i}"):  # structural descriptors are per instance
                return self._run_instance(config, i, inst, pool, errors)

        if self.backend == "simulated":
            rows = [run(i, inst, None) for i, inst in enumerate(instances)]
        else:
            # Instances run concurrently too (the fusion/verify calls of one overlap the chunk calls of
            # another); the client's semaphore keeps at most `concurrency` requests in flight.
            outer = ThreadPoolExecutor(min(self.concurrency, self.n_instances))
            inner = ThreadPoolExecutor(self.concurrency)
            try:
                futures = [outer.submit(contextvars.copy_context().run, run, i, inst, inner)
                           for i, inst in enumerate(instances)]
                rows = [f.result() for f in futures]
            finally:
                outer.shutdown(wait=True)
                inner.shutdown(wait=True)
        predicted = predict_calls(config, self.n_pairs)
        if errors and len(errors) >= predicted["llm_calls"] * self.n_instances:
            raise RuntimeError(f"every LLM call failed, e.g. {errors[0]}")
        correct = sum(r["correct"] for r in rows)
        accuracy = correct / self.n_instances
        # Static analysis checked against the trace on every evaluation (None without a tracer).
        traced = (sum(s["kind"] == "llm" for s in tracer.spans[first_span:]) if tracer is not None else None)
        expected = predicted["llm_calls"] * self.n_instances
        return EvalResult(
            objective=accuracy, scores=[float(r["correct"]) for r in rows],
            metrics={"accuracy": accuracy, "correct": correct, "instances": self.n_instances,
                     "backend": self.backend, "simulated": self.backend == "simulated",
                     "answers": [r["answer"] for r in rows], "call_errors": len(errors),
                     "predicted_calls_per_instance": predicted["llm_calls"], "traced_calls": traced,
                     "prediction_ok": None if traced is None else traced == expected},
            feedback=self._feedback(config, rows, accuracy, errors),
        )

    def _feedback(self, config: dict, rows: list[dict], accuracy: float, errors: list[str]) -> str:
        label = " (SIMULATED LLM)" if self.backend == "simulated" else ""
        pred = predict_calls(config, self.n_pairs)
        lines = [f"accuracy {accuracy:.2f} ({sum(r['correct'] for r in rows)}/{len(rows)}){label}; "
                 f"{pred['llm_calls']} LLM calls per instance over {rows[0]['n_chunks']} chunk(s), "
                 f"critical path {pred['critical_path']}"]
        for i, r in enumerate(rows):
            if r["correct"] or len(lines) > 5:
                continue
            held = ", ".join(a or "none" for a in r["holder_answers"])
            line = (f"instance {i}: answered {r['answer'] or 'none'}, expected {r['expected']}; "
                    f"chunk {r['holder'] + 1}/{r['n_chunks']} holding the key answered {held}")
            if r["verdict"]:
                line += f"; {r['verdict']}"
            lines.append(line)
        if errors:
            lines.append(f"{len(errors)} LLM call(s) failed, e.g. {errors[0]}")
        return "\n".join(lines)
