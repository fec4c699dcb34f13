"""Seed configurations: where a search starts before random samples and operators.

``[run] seeds`` in a run config is one of

- ``"default"``: the domain's default configuration (:meth:`qd.Domain.default_config`, the
  system the user runs today);
- a path to a JSON Lines file, one configuration (a JSON object) per line (in a config file,
  a relative path is read next to that file);
- an array mixing ``"default"`` and tables (inline configurations).

The scheduler evaluates seeds first, in order, then ``init_random`` random samples.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qd.domain import Domain

__all__ = ["DEFAULT", "load_seeds", "read_jsonl"]

DEFAULT = "default"


def load_seeds(spec: str | Sequence[Any] | None, domain: Domain, base_dir: str | Path | None = None) -> list[dict]:
    """The seed configurations ``spec`` names, each checked against ``domain.space``.

    Parameters
    ----------
    spec : str, sequence or None
        ``"default"``, a path to a JSON Lines file, or a sequence of ``"default"`` and dicts.
        None or empty: no seeds.
    domain : Domain
        Gives the default configuration and the space the seeds must be valid for.
    base_dir : path, optional
        Relative file paths are read from here (default: the working directory).

    Raises
    ------
    ValueError
        Naming the entry (``run.seeds[2]``, or the file and line) that is missing or invalid.
    """
    if spec is None or (not isinstance(spec, str) and not spec):
        return []
    if isinstance(spec, str):
        if spec == DEFAULT:
            entries: list[tuple[str, Any]] = [("run.seeds", DEFAULT)]
        else:
            path = Path(spec)
            if base_dir is not None and not path.is_absolute():
                path = Path(base_dir) / path
            entries = read_jsonl(path)
    else:
        entries = [(f"run.seeds[{i}]", entry) for i, entry in enumerate(spec)]
    seeds = []
    for where, entry in entries:
        if entry == DEFAULT:
            config = domain.default_config()
        elif isinstance(entry, dict):
            config = entry
        else:
            raise ValueError(f"{where} must be \"default\" or a table (a configuration), got {entry!r}")
        problems = domain.space.validate(config)
        if problems:
            raise ValueError(f"{where} is not a valid configuration of {domain.name!r}: {'; '.join(problems)}")
        seeds.append(config)
    return seeds


def read_jsonl(path: str | Path) -> list[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line of a JSON Lines file (``where``: ``FILE:LINE``).

    Raises
    ------
    ValueError
        If the file cannot be read or a line is not JSON.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"run.seeds: cannot read seeds file {str(path)!r}: {exc.strerror or exc}") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            out.append((where, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"run.seeds: {where} is not JSON: {exc.msg}") from None
    return out
