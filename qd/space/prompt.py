"""Prompt rendering: a parameter's schema as compact text for LLM prompts.

``{"temperature": float in [0.0, 2.0], "model": one of ["a","b"], "layers": list of 1..4 × {...}}``.
Dispatches on :attr:`qd.space.schema.Param.kind` and reads public attributes only, so the
schema can call it from :meth:`~qd.space.schema.Param.to_prompt` without an import cycle.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qd.space.schema import Param

__all__ = ["render"]


def render(param: Param) -> str:
    """Compact schema text of ``param``, e.g. ``int in [1, 8]`` or ``list of 3 × bool``."""
    kind = param.kind
    p: Any = param
    if kind == "float":
        return f"float in [{p.low!r}, {p.high!r}]" + (" (log scale)" if p.log else "")
    if kind == "int":
        return f"int in [{p.low}, {p.high}]"
    if kind == "categorical":
        return "one of " + json.dumps(p.choices, separators=(",", ":"), ensure_ascii=False)
    if kind == "bool":
        return "bool"
    if kind == "text":
        if p.min_len:
            return f"text of {p.min_len}..{p.max_len} chars"
        return f"text ≤ {p.max_len} chars"
    if kind == "seq":
        n = str(p.min_len) if p.min_len == p.max_len else f"{p.min_len}..{p.max_len}"
        return f"list of {n} × {render(p.item)}"
    if kind == "space":
        body = ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {render(sub)}" for k, sub in p.params.items())
        return "{" + body + "}"
    raise ValueError(f"cannot render parameter kind {kind!r} for a prompt")
