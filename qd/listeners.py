"""What a search reports as it runs: the run store, the archive history, the progress bar.

The search driver (:class:`qd.search.Search`) calls every listener's ``on_start`` once,
``on_result`` after each result is told to the scheduler, and ``on_end`` when it stops (also on
an interrupt). Listeners read the search (``finished``, ``budget``, ``archive``, ``scheduler``)
and never change it. Write your own by subclassing :class:`SearchListener`.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from qd.analysis.descriptors import summarize
from qd.archives import AddStatus
from qd.result import EvalResult
from qd.scheduler import Candidate

if TYPE_CHECKING:
    from qd.llm.client import Usage
    from qd.search import Search
    from qd.store import RunStore

__all__ = ["Evaluated", "SearchListener", "StoreRecorder", "ProgressBar"]


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
    """

    id: int
    candidate: Candidate
    result: EvalResult
    measures: dict[str, float]
    status: AddStatus


class SearchListener:
    """Base class of search listeners; every hook does nothing by default."""

    def on_start(self, search: Search) -> None:
        """Called once when :meth:`Search.run` starts."""

    def on_result(self, search: Search, event: Evaluated) -> None:
        """Called after each result has been told to the scheduler."""

    def on_end(self, search: Search) -> None:
        """Called once when :meth:`Search.run` stops (budget reached, error or interrupt)."""


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
    """Commits every evaluation, the archive history and the counters to a :class:`~qd.store.RunStore`.

    Parameters
    ----------
    store : RunStore
        Where to write.
    llm_client : LLMClient, optional
        Its usage is saved in the store's ``llm`` counters, added to earlier sessions' usage.
    history_every : int, optional
        Record archive stats every this many evaluations (default: budget / 200).
    """

    def __init__(self, store: RunStore, llm_client: Any = None, history_every: int | None = None):
        self.store, self.llm_client, self.history_every = store, llm_client, history_every
        self._llm_base = store.counters("llm")  # LLM usage of earlier sessions of a resumed run
        # Counters as last committed (scope -> name -> fields): each evaluation writes only what changed.
        self._written: dict[str, dict[str, dict[str, float]]] = {"operators": {}, "noise": {}, "llm": {}}
        self._every = 1

    def on_start(self, search: Search) -> None:
        """Fix the history interval from the budget."""
        self._every = self.history_every or max(1, search.budget // 200)

    def on_result(self, search: Search, event: Evaluated) -> None:
        """Commit the evaluation with the counters (one transaction); every ``history_every`` results, the history."""
        child, result = event.candidate, event.result
        noise = search.scheduler.noise
        sample = None
        if noise is not None or result.scores is not None:  # draws, policy order and per-instance scores
            sample = (child.draw, noise.seq if noise is not None else event.id, result.scores)
        self.store.add_evaluation(
            id=event.id, hash=child.hash, config_json=child.canonical, status=result.status,
            fitness=result.fitness, measures=event.measures, error=result.error, feedback=result.feedback,
            operator=child.operator, parent_ids=child.parent_ids, trace_summary=summarize(result.trace),
            metrics={k: v for k, v in result.metrics.items() if k != "traceback"},
            archive_status=int(event.status), submitted_at=child.submitted_at, counters=self._changed(search),
            sample=sample)
        if search.finished % self._every == 0 or search.finished == search.budget:
            s = search.archive.stats
            self.store.add_history(search.finished, s.num_elites, s.coverage, s.qd_score,
                                   s.obj_max if s.num_elites else math.nan, search.elapsed_s)

    def on_end(self, search: Search) -> None:
        """Save the final counters."""
        self.save_counters(search)

    def _changed(self, search: Search) -> dict[str, dict[str, dict[str, float]]]:
        """The counter fields that changed since the last write (a handful per evaluation)."""
        changed: dict[str, dict[str, dict[str, float]]] = {}
        for scope, table in self.counters(search).items():
            self._diff(scope, table, changed)
        return changed

    def _diff(self, scope: str, table: dict[str, dict[str, float]],
              changed: dict[str, dict[str, dict[str, float]]]) -> None:
        """Add the fields of ``table`` that differ from the last write to ``changed``; remember them."""
        written = self._written[scope]
        for name, fields in table.items():
            old = written.get(name)
            if fields == old:
                continue
            old = old or {}
            changed.setdefault(scope, {})[name] = {k: v for k, v in fields.items() if old.get(k) != v}
            written[name] = fields

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

    def on_result(self, search: Search, event: Evaluated) -> None:
        """Advance the bar; refresh the archive figures every 25 results."""
        self._bar.update(1)
        if search.finished % 25 == 0 or search.finished == search.budget:
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
