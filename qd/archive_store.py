"""The archive in the run store: written as it changes, read back without replaying the history.

The run store keeps one row per occupied cell (``RunStore.put_elites``) and the archive's
statistics state (:func:`qd.archives.archive_state`), both updated in the transaction of every
group of evaluations, so a reader rebuilds exactly the archive the run had at its last commit
(elites, thresholds, ``data()`` order, QD score to the last bit) from as many rows as the archive
has elites (:func:`load_archive`), and a run that predates this (a version 1 store) is replayed
(:func:`replay`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from qd.archives import archive_state, restore
from qd.noise import MAX_RESAMPLE_SHARE, make_handler

if TYPE_CHECKING:
    from qd.noise import NoiseHandler
    from qd.store import RunStore

__all__ = ["write_elites", "write_archive", "load_archive", "replay"]

_REPLAY_CHUNK = 4096


def _rows(elites: dict[str, np.ndarray]) -> list[tuple[int, int, float, float, np.ndarray, int]]:
    ids = elites["id"].tolist() if "id" in elites else [-1] * len(elites["index"])
    return list(zip(elites["index"].tolist(), ids, elites["objective"].tolist(), elites["threshold"].tolist(),
                    elites["measures"], elites["rank"].tolist()))


def write_elites(store: RunStore, archive: Any, elites: dict[str, np.ndarray], emptied: np.ndarray) -> None:
    """Write changed cells of ``archive`` (``archive.take_changes()``'s ``elites`` and ``emptied``) and its state."""
    store.put_elites(_rows(elites), emptied.tolist(), archive_state(archive))


def write_archive(store: RunStore, archive: Any) -> None:
    """Replace the stored archive with the whole of ``archive`` (after a replay)."""
    with store.transaction():
        store.clear_elites()
        archive.track_changes(current=True)
        write_elites(store, archive, *archive.take_changes())


def load_archive(store: RunStore, archive: Any, solutions: bool = True) -> bool:
    """Fill the empty ``archive`` with the stored elites and state; False when the store keeps none.

    Configurations and feedback come from each elite's evaluation row; without ``solutions`` they
    are left None and those rows are not read (``RunStore.configs_of`` reads the ones needed).
    """
    stored = store.elites(configs=solutions)
    if stored is None:
        return False
    elites, state = stored
    n = len(elites["cell"])
    measures = np.array(elites["measures"], dtype=float).reshape(n, archive.measure_dim)
    restore(archive, elites["cell"], elites["objective"], elites["threshold"], measures, elites["config"],
            {"id": elites["id"], "feedback": elites["feedback"]} if n else {}, state, ranks=elites["rank"])
    return True


def replay(store: RunStore, archive: Any, noise: NoiseHandler | None = None) -> None:
    """Insert every stored usable evaluation into ``archive``, as the run did.

    Without a noise policy, in id order (``add_in_order`` gives what one ``add_single`` per row
    gives); with one, through the policy in the order it recorded them
    (:meth:`qd.noise.NoiseHandler.replay`), which rebuilds every sample too, and the elites are
    written under the policy's last prior. A run made with a noise policy is replayed through
    that policy when ``noise`` is not given.
    """
    saved = store.get_meta("noise") if noise is None else None
    if saved:
        noise = make_handler(archive, saved["noise"], samples=saved["noise_samples"], probes=saved["noise_probes"],
                             top=saved.get("noise_top"), share=saved.get("noise_share", MAX_RESAMPLE_SHARE))
    if noise is not None:
        noise.replay(store.evaluations_in_seq_order(), archive.measure_names)
        if noise.active:
            noise.refresh()  # every elite under the last prior, as a run shows them when it ends
        return
    names = archive.measure_names
    chunk: list[Any] = []
    for row in store.evaluations(status="ok"):
        if math.isfinite(row.fitness):
            chunk.append(row)
            if len(chunk) >= _REPLAY_CHUNK:
                _insert(archive, chunk, names)
                chunk = []
    _insert(archive, chunk, names)


def _insert(archive: Any, rows: list[Any], names: list[str]) -> None:
    if rows:
        archive.add_in_order([r.config for r in rows], [r.fitness for r in rows],
                             [[r.measures[n] for n in names] for r in rows], id=[r.id for r in rows],
                             feedback=[r.feedback for r in rows])
