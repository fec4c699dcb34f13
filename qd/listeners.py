"""What a search reports as it runs: the run store, the archive history, the progress bar.

The search driver (:class:`qd.search.Search`) calls every listener's ``on_start`` once,
``on_results`` after each batch of results is told to the scheduler (by default ``on_result``
for each, in the order they were told), ``on_idle`` while it waits, and ``on_end`` when it stops
(also on an interrupt). Listeners read the search (``finished``, ``budget``, ``archive``,
``scheduler``) and never change it. Write your own by subclassing :class:`SearchListener`, and
pass it to ``Search(listeners=...)`` or name it in a run config (``[run] listeners``,
:func:`build_listeners`).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from qd.analysis.descriptors import summarize
from qd.archive_store import write_elites
from qd.archives import AddStatus
from qd.references import resolve_reference
from qd.result import DEFAULT_TRACE_TEXT_CHARS, EvalResult, clip_trace_text
from qd.scheduler import Candidate
from qd.space import Layout
from qd.store import EvaluationRecord
from qd.totals import TOTALS_META, RunTotals

if TYPE_CHECKING:
    from qd.llm.client import Usage
    from qd.search import Search
    from qd.store import RunStore

__all__ = ["Evaluated", "SearchListener", "StoreRecorder", "ProgressBar", "build_listeners"]


@dataclass
class Evaluated:
    """One finished evaluation, as told to the scheduler.

    Attributes
    ----------
    id : int
        Evaluation id (the run store's row id).
    candidate : Candidate
        What was evaluated and who made it.
    result : EvalResult
        The domain's result (status set to ``error``/``invalid`` when its measures failed).
    measures : dict of str to float
        The result's own measures plus the archive's measure values.
    status : AddStatus
        What the archive did with the result.
    seq : int or None
        The noise policy's count of recorded results after this one (``qd.noise``; None without
        a policy): the order a replay follows.
    """

    id: int
    candidate: Candidate
    result: EvalResult
    measures: dict[str, float]
    status: AddStatus
    seq: int | None = None


class SearchListener:
    """Base class of search listeners; every hook does nothing by default."""

    def on_start(self, search: Search) -> None:
        """Called once when :meth:`Search.run` starts."""

    def on_result(self, search: Search, event: Evaluated) -> None:
        """Called for each result, after its batch has been told to the scheduler (see :meth:`on_results`)."""

    def on_results(self, search: Search, events: Sequence[Evaluated]) -> None:
        """Called after a batch of results has been told to the scheduler; calls :meth:`on_result` for each."""
        for event in events:
            self.on_result(search, event)

    def on_idle(self, search: Search) -> None:
        """Called while the driver waits for results (about once a second at most)."""

    def on_end(self, search: Search) -> None:
        """Called once when :meth:`Search.run` stops (budget reached, error or interrupt)."""


def build_listeners(entries: Sequence[str | Mapping[str, Any]], where: str = "run.listeners") -> list[SearchListener]:
    """The listeners a run config names (``[run] listeners``), built in order.

    Parameters
    ----------
    entries : sequence of str or mapping
        Each a ``"package.module:attribute"`` reference, resolved as domains and operators are
        (:func:`qd.references.resolve_reference`: the working directory first), to a
        :class:`SearchListener` subclass or factory (called with no arguments) or instance; or a
        table whose ``listener`` key is such a reference and whose other keys are the class's or
        factory's keyword arguments.
    where : str
        The config key the entries come from, named in errors.

    Raises
    ------
    ValueError
        Naming the entry (``run.listeners[1]``) whose reference does not load, whose arguments the
        class refuses, or which gives no :class:`SearchListener`.
    """
    built: list[SearchListener] = []
    for i, entry in enumerate(entries):
        key = f"{where}[{i}]"
        options = dict(entry) if isinstance(entry, Mapping) else {}
        ref = options.pop("listener", None) if isinstance(entry, Mapping) else entry
        if not isinstance(ref, str):
            raise ValueError(f"{key} must be a \"package.module:attribute\" reference or a table with listener = "
                             f"\"package.module:attribute\", got {entry!r}")
        target = resolve_reference(ref, f"listener ({key})")
        if isinstance(target, SearchListener):
            if options:
                raise ValueError(f"{key}: {ref!r} is a listener instance; it takes no options, got {sorted(options)}")
            listener = target
        elif callable(target):
            try:
                listener = target(**options)
            except TypeError as exc:  # a misspelt option reaches the constructor as an unexpected keyword
                raise ValueError(f"{key}: {ref}: {exc}") from None
        else:
            raise ValueError(f"{key}: {ref!r} is a {type(target).__name__}, not a SearchListener class or factory")
        if not isinstance(listener, SearchListener):
            raise ValueError(f"{key}: {ref!r} gave a {type(listener).__name__}, not a qd.listeners.SearchListener")
        built.append(listener)
    return built


class WarningListener(SearchListener):
    """A listener that warns the user once per kind of problem, on stderr, above the progress bar.

    Attributes
    ----------
    messages : list of str
        Every warning given, in order.
    warned : set of str
        The kinds already warned about.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.warned: set[str] = set()

    def warn_once(self, kind: str, text: str) -> None:
        """Print ``qd: warning: text`` unless ``kind`` was warned about already."""
        if kind in self.warned:
            return
        self.warned.add(kind)
        message = "qd: warning: " + text
        self.messages.append(message)
        tqdm.write(message, file=sys.stderr)


class StoreRecorder(SearchListener):
    """Commits evaluations (with their traces) to a :class:`~qd.store.RunStore` in groups, with what goes with them.

    With each group: the archive's changed cells, the running totals, the history and the counters.

    Evaluations are buffered and committed in one transaction when ``commit_rows`` are waiting
    or ``commit_s`` seconds have passed since the last commit (checked after each batch of results
    and while the driver waits), and when the search stops. Each group carries, in the same
    transaction, the evaluations' traces (their spans, text clipped to ``[run] trace_text_chars``),
    the counters that changed, the archive's changed cells and state, the running totals and the
    history: a run killed with SIGKILL loses at most the group not yet committed, and what is
    committed always agrees with itself.

    Parameters
    ----------
    store : RunStore
        Where to write.
    llm_client : LLMClient, optional
        Its usage is saved in the store's ``llm`` counters, added to earlier sessions' usage.
    history_every : int, optional
        Record archive stats every this many evaluations (default: budget / 200).
    commit_s : float
        Seconds between group commits at most while results arrive (0: one commit per batch).
    commit_rows : int
        Evaluations that trigger a commit whatever the time.
    """

    def __init__(self, store: RunStore, llm_client: Any = None, history_every: int | None = None,
                 commit_s: float = 0.2, commit_rows: int = 4096):
        self.store, self.llm_client, self.history_every = store, llm_client, history_every
        self.commit_s, self.commit_rows = float(commit_s), int(commit_rows)
        self._llm_base = store.counters("llm")  # LLM usage of earlier sessions of a resumed run
        # Counters as last committed (scope -> name -> fields): each commit writes only what changed.
        self._written: dict[str, dict[str, dict[str, float]]] = {"operators": {}, "noise": {}, "llm": {}}
        self._every = 1
        self._pending: list[EvaluationRecord] = []
        self._history: list[tuple] = []
        self._last_commit = time.monotonic()
        self._no_trace = summarize([])
        self.totals: RunTotals | None = None
        self._text_chars = DEFAULT_TRACE_TEXT_CHARS
        self._layout: Layout | None = None  # to write with the next group

    def on_start(self, search: Search) -> None:
        """Fix the history interval, start tracking the archive's changes, and continue the stored totals."""
        self._every = self.history_every or max(1, search.budget // 200)
        archive = search.archive
        archive.track_changes(current=self.store.get_meta("archive_state") is None)
        self.totals = RunTotals(search.measure_names, archive.lower_bounds, archive.upper_bounds,
                                self.store.get_meta(TOTALS_META))
        # The prompt and answer text kept per span ([run] trace_text_chars, set on the domain by the
        # runner): the tracer clipped what it recorded already; a domain that returns its own trace is
        # clipped here.
        self._text_chars = int(getattr(search.domain, "trace_text_chars", DEFAULT_TRACE_TEXT_CHARS))
        self._last_commit = time.monotonic()
        # configurations identified by bytes are stored as bytes: the store keeps their layout, once
        layout = search.scheduler.layout
        self._layout = layout if layout is not None and self.store.config_layout() is None else None

    def on_results(self, search: Search, events: Sequence[Evaluated]) -> None:
        """Buffer the evaluations (and the history when due); commit when a group is full or old enough."""
        noise = search.scheduler.noise
        now = time.time()
        totals = self.totals
        assert totals is not None, "on_start() was not called"
        chars, no_trace, pending = self._text_chars, self._no_trace, self._pending
        first = len(pending)
        for event in events:
            child, result = event.candidate, event.result
            sample = None
            if noise is not None or result.scores is not None:  # draws, policy order and per-instance scores
                sample = (child.draw, event.seq if noise is not None else event.id, result.scores)
            trace = result.trace
            metrics = result.metrics
            if "traceback" in metrics:
                metrics = {k: v for k, v in metrics.items() if k != "traceback"}
            packed = child.packed
            # a trace without spans is not stored: its summary says so (RunStore.traces)
            pending.append(EvaluationRecord(
                event.id, None if packed is not None else child.canonical, result.status, result.fitness,
                event.measures, child.operator, child.parent_ids, None if packed is not None else child.hash,
                packed, child.key, result.error, result.feedback, summarize(trace) if trace else no_trace, metrics,
                int(event.status), child.submitted_at, now, sample, clip_trace_text(trace, chars) if trace else None))
        totals.add_rows(pending[first:])
        done = search.finished
        if done // self._every > (done - len(events)) // self._every or done == search.budget:
            s = search.archive.stats
            self._history.append((done, s.num_elites, s.coverage, s.qd_score,
                                  s.obj_max if s.num_elites else math.nan, search.elapsed_s))
        if len(self._pending) >= self.commit_rows or time.monotonic() - self._last_commit >= self.commit_s:
            self.commit(search)

    def on_idle(self, search: Search) -> None:
        """Commit what waits once ``commit_s`` has passed."""
        if self._pending and time.monotonic() - self._last_commit >= self.commit_s:
            self.commit(search)

    def on_end(self, search: Search) -> None:
        """Commit what waits with the final counters (whole tables) and the LLM endpoint's latest errors.

        In the same transaction, why the search stopped before its budget (meta ``stopped``; a
        later session that reaches its budget clears it).
        """
        with self.store.transaction():
            self.save_counters(search)  # whole tables (stale names go), so the commit finds no counter to write
            self.commit(search)
            if search.stopped or self.store.get_meta("stopped"):
                self.store.set_meta("stopped", search.stopped and {
                    "reason": search.stopped, "evaluations": search.finished, "budget": search.budget})

    def commit(self, search: Search) -> None:
        """Write the buffered evaluations, with everything that goes with them, in one transaction."""
        store, archive = self.store, search.archive
        changed, tables = self._changed(search)
        elites, emptied = archive.take_changes()
        try:
            with store.transaction():
                if self._layout is not None:
                    store.set_config_layout(self._layout)
                store.add_evaluations(self._pending)
                if changed:
                    store.update_counters(changed)
                write_elites(store, archive, elites, emptied)
                if self.totals is not None:
                    store.set_meta(TOTALS_META, self.totals.as_dict())
                for row in self._history:
                    store.add_history(*row)
        except BaseException:  # nothing was written: these cells are still to write with the next group
            archive.track_changes(cells=[*elites["index"].tolist(), *emptied.tolist()])
            raise
        self._written.update({scope: {n: dict(f) for n, f in table.items()} for scope, table in tables.items()})
        self._pending.clear()
        self._history.clear()
        self._layout = None
        self._last_commit = time.monotonic()

    def _changed(self, search: Search) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict]]:
        """The counter fields that changed since the last write (a handful per group).

        Also the whole tables, to remember as written once the group is committed.
        """
        changed: dict[str, dict[str, dict[str, float]]] = {}
        tables = self.counters(search)
        for scope, table in tables.items():
            written = self._written.get(scope, {})
            for name, fields in table.items():
                old = written.get(name)
                if fields == old:
                    continue
                old = old or {}
                changed.setdefault(scope, {})[name] = {k: v for k, v in fields.items() if old.get(k) != v}
        return changed, tables

    def _llm_usage(self) -> list[tuple[str, Usage]]:
        """``("total", usage)`` and each tag's usage (a list: LLM threads may add tags meanwhile)."""
        return [("total", self.llm_client.usage), *list(self.llm_client.usage_by_tag.items())]

    def _llm_merged(self, tag: str, usage: Usage) -> dict[str, float]:
        """A tag's usage added to earlier sessions' (zero fields left out)."""
        merged = dict(self._llm_base.get(tag, {}))
        for key, value in usage.as_dict().items():
            if value:
                merged[key] = merged.get(key, 0) + value
        return merged

    def save_counters(self, search: Search) -> None:
        """Write the counters (:meth:`counters`) and the LLM endpoint's latest error per cause."""
        for scope, table in self.counters(search).items():
            self.store.set_counters(scope, table)
            self._written[scope] = {name: dict(fields) for name, fields in table.items()}
        if self.llm_client is not None and self.llm_client.last_errors:
            self.store.set_meta("llm_last_errors", {**self.store.get_meta("llm_last_errors", {}),
                                                    **self.llm_client.last_errors})

    def counters(self, search: Search) -> dict[str, dict[str, dict[str, float]]]:
        """Every counter table, as scope -> name -> field -> value.

        The operator counters (with each one's current ``share`` and, once the adaptive weights
        judged it, whether it ``pays`` and its ``value``: :mod:`qd.bandit`), the noise policy's,
        and the LLM usage added to earlier sessions' (zero fields left out).
        """
        shares, judged = search.scheduler.shares(), search.scheduler.judgements
        out = {"operators": {n: {**s.as_dict(), **({"share": shares[n]} if n in shares else {}),
                                 **({"pays": float(judged[n].pays), "value": judged[n].value} if n in judged else {})}
                             for n, s in search.scheduler.stats.items()}}
        if search.scheduler.noise is not None:
            out["noise"] = {"policy": search.scheduler.noise.counters()}
        if self.llm_client is None:
            return out
        usage = {tag: dict(fields) for tag, fields in self._llm_base.items()}
        usage.update({tag: self._llm_merged(tag, u) for tag, u in self._llm_usage()})  # added to earlier sessions'
        out["llm"] = usage
        return out


class ProgressBar(SearchListener):
    """A tqdm progress bar with the archive's elites, coverage and best objective."""

    def __init__(self) -> None:
        self._bar: Any = None

    def on_start(self, search: Search) -> None:
        """Open the bar at the evaluations already finished."""
        self._bar = tqdm(total=search.budget, initial=search.finished, unit="eval", dynamic_ncols=True,
                         mininterval=0.5)

    def on_results(self, search: Search, events: Sequence[Evaluated]) -> None:
        """Advance the bar; refresh the archive figures every 25 results."""
        self._bar.update(len(events))
        done = search.finished
        if done // 25 > (done - len(events)) // 25 or done == search.budget:
            self._show_figures(search)

    def _show_figures(self, search: Search) -> None:
        s = search.archive.stats
        extra = {}
        failed = search.llm_client.usage.by_cause() if search.llm_client is not None else {}
        if failed:  # LLM failures by cause, e.g. "authentication 5"
            extra["llm_failed"] = ", ".join(f"{cause.replace('_', ' ')} {n}" for cause, n in failed.items())
        self._bar.set_postfix(elites=s.num_elites, coverage=f"{s.coverage:.1%}",
                              best=f"{s.obj_max:.4g}" if s.num_elites else "-", **extra, refresh=False)

    def on_end(self, search: Search) -> None:
        """Show the final figures (LLM calls drained at the budget included) and close the bar."""
        if self._bar is not None:
            self._show_figures(search)
            self._bar.close()
            self._bar = None
