"""Turn free model text into a valid configuration: extract it, repair it, validate it.

Two formats. A JSON object, which language models wrap in prose and code fences, write with
single quotes or Python literals, leave trailing commas in, and get cut off by ``max_tokens``:
:func:`extract_json_object` tolerates all of that where the meaning is unambiguous. And the
compact line a small base model completes best, ``chunk_size=4 aggregation=majority
temperature=0.37`` (:func:`render_pairs` writes it for flat spaces, :func:`extract_pairs` reads
it back; text values are JSON strings). :func:`parse_config` then lets the space repair what is
safe to repair (clamp to bounds, drop unknown keys, fill missing keys from the parent) and raises
:class:`ParseError` for anything that is still invalid. Nothing else ever escapes.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["ParseError", "extract_json_object", "extract_pairs", "is_flat", "parse_config", "render_pairs",
           "short_number"]

_PAIR = re.compile(r'([A-Za-z_][\w.-]*)\s*=\s*("(?:[^"\\]|\\.)*"?|[^\s,;|]+)')
_LEAF_KINDS = ("float", "int", "categorical", "bool", "text")

_MAX_TEXT = 20_000  # longer model outputs are truncated before scanning (bounded work)
_MAX_STARTS = 32  # opening braces tried before giving up
_MAX_SALVAGE = 24  # truncation points tried when no object is closed
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


class ParseError(ValueError):
    """Model output that holds no usable configuration.

    Raised when no JSON object can be found in the text, or when the object is still invalid for
    the space after repair. ``problems`` lists the validation problems (empty when no object was
    found).
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


def _scan(text: str, start: int) -> tuple[int | None, list[tuple[int, str]]]:
    """Scan from the ``{`` at ``start``.

    Returns the end index (exclusive) of the balanced object, or ``None`` when the text ends
    first, plus the truncation points seen: ``(index of a comma outside strings, closers for the
    brackets open there)`` so a cut-off object can be closed at its last complete member.
    """
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []
    quote = ""
    escaped = False
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            elif ch == "\n" and quote == "'":
                quote = ""  # an apostrophe in prose, not a string
        elif ch == '"' or ch == "'":
            quote = ch
        elif ch == "{" or ch == "[":
            stack.append("}" if ch == "{" else "]")
        elif ch == "}" or ch == "]":
            if not stack or stack[-1] != ch:
                return None, cuts  # mismatched bracket: not an object we can trust
            stack.pop()
            if not stack:
                return i + 1, cuts
        elif ch == ",":
            cuts.append((i, "".join(reversed(stack))))
        i += 1
    return None, cuts


def _normalize(candidate: str) -> str:
    """Rewrite lenient JSON (single quotes, Python literals, trailing commas) as strict JSON.

    Works token by token outside strings so text inside strings is never altered.
    """
    out: list[str] = []
    i = 0
    n = len(candidate)
    while i < n:
        ch = candidate[i]
        if ch == '"' or ch == "'":
            j = i + 1
            buf: list[str] = []
            while j < n and candidate[j] != ch:
                if candidate[j] == "\\" and j + 1 < n:
                    buf.append(candidate[j : j + 2])
                    j += 2
                    continue
                buf.append(candidate[j])
                j += 1
            body = "".join(buf)
            if ch == "'":
                # Re-quote: unescape \' and escape bare double quotes.
                body = body.replace("\\'", "'").replace('"', '\\"')
            out.append('"' + body + '"')
            i = j + 1
            continue
        if ch == ",":
            k = i + 1
            while k < n and candidate[k] in " \t\r\n":
                k += 1
            if k < n and candidate[k] in "}]":
                i += 1  # trailing comma
                continue
        if ch.isalpha():
            j = i
            while j < n and (candidate[j].isalnum() or candidate[j] == "_"):
                j += 1
            word = candidate[i:j]
            out.append(_PY_LITERALS.get(word, word))
            i = j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _reject_constant(name: str) -> None:
    return None  # NaN / Infinity become null: a missing value the repair step fills


def _loads(candidate: str) -> Any:
    for text in (candidate, None):
        if text is None:
            text = _normalize(candidate)
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            continue
    return None


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``.

    Tolerates surrounding prose and code fences, single-quoted strings, ``True``/``False``/``None``,
    trailing commas, and an object cut off mid-way (closed after its last complete member).

    Parameters
    ----------
    text : str
        Raw model output.

    Returns
    -------
    dict
        The parsed object.

    Raises
    ------
    ParseError
        If no object can be recovered.
    """
    if not isinstance(text, str):
        raise ParseError(f"expected model text, got {type(text).__name__}")
    text = text[:_MAX_TEXT]
    start = text.find("{")
    empty: dict[str, Any] | None = None
    for _ in range(_MAX_STARTS):
        if start == -1:
            break
        end, cuts = _scan(text, start)
        if end is not None:
            obj = _loads(text[start:end])
            if isinstance(obj, dict):
                if obj:
                    return obj
                empty = obj  # "{}" only if nothing better follows
        else:
            # Not closed: a completion cut off by max_tokens. Keep the members that were complete
            # (before trying objects nested inside it, which are only parts of it).
            for pos, closers in list(reversed(cuts))[:_MAX_SALVAGE]:
                obj = _loads(text[start:pos] + closers)
                if isinstance(obj, dict) and obj:
                    return obj
        start = text.find("{", start + 1)
    if empty is not None:
        return empty
    raise ParseError("no JSON object found in model output: " + repr(text[:80]))


def _finite(value: Any) -> bool:
    """False for NaN/inf floats anywhere in a nested value (JSON configs must be finite)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def is_flat(space: Any) -> bool:
    """Whether every parameter of ``space`` is a leaf (no nested space, no list): pairs can hold it."""
    return all(p.kind in _LEAF_KINDS for p in space.params.values())


def short_number(value: float, step: float | None = None) -> str:
    """A number as few characters as say it: to ``step`` (e.g. 1% of a range), else 2 digits.

    Numbers of 10 or more are whole; ``nan`` stays ``nan``.
    """
    x = float(value)
    if not math.isfinite(x):
        return str(x)
    if step is not None and step > 0:
        digits = max(0, -math.floor(math.log10(step)))
        text = f"{round(x / step) * step:.{digits}f}"
    elif abs(x) >= 10:
        text = str(int(round(x)))
    else:
        text = f"{x:.2g}"
    return text.lstrip("-") if float(text) == 0 else text


def render_pairs(space: Any, config: dict[str, Any], keys: Iterable[str] | None = None) -> str:
    """``config`` as ``key=value`` pairs in the space's order (flat spaces only; see :func:`is_flat`).

    Floats are rounded to 1% of their range, bools are ``true``/``false``, texts and choices that
    hold spaces or quotes are JSON strings. ``keys`` picks and orders the parameters shown.
    """
    out = []
    for key in space.params if keys is None else keys:
        param, value = space.params[key], config[key]
        if param.kind == "float":
            text = short_number(value, (param.high - param.low) / 100 if not param.log else None)
        elif param.kind == "bool":
            text = "true" if value else "false"
        elif isinstance(value, str) and (param.kind == "text" or not value or re.search(r'[\s"=,;|]', value)):
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
        out.append(f"{key}={text}")
    return " ".join(out)


def _readable(param: Any, value: Any) -> bool:
    """Whether ``param``'s repair reads ``value`` itself: it repairs alike whatever the fallback."""
    kind = param.kind
    if kind in ("float", "int"):
        a, b = param.low, param.high
    elif kind == "categorical":
        a, b = param.choices[0], param.choices[-1]
    elif kind == "bool":
        a, b = False, True
    else:
        return True
    return a == b or param.repair(value, fallback=a) == param.repair(value, fallback=b)


def extract_pairs(text: str, space: Any) -> dict[str, Any]:
    """The ``key=value`` pairs of the first line of ``text`` that name a parameter of ``space``.

    A value is a JSON string (a cut-off one is closed) or a bare word; numbers stay text for the
    space's repair to read. A value the parameter cannot read (``temperature=I``) is left out, and
    the first value of a key wins.

    Raises
    ------
    ParseError
        If no pair names a parameter with a value it can read.
    """
    if not isinstance(text, str):
        raise ParseError(f"expected model text, got {type(text).__name__}")
    out: dict[str, Any] = {}
    for key, raw in _PAIR.findall(text[:_MAX_TEXT].split("\n", 1)[0]):
        if key not in space.params or key in out:
            continue
        if raw.startswith('"'):
            body = raw[1:-1] if len(raw) > 1 and raw.endswith('"') else None
            # the last quote closes the string unless an odd run of backslashes escapes it
            closed = raw if body is not None and (len(body) - len(body.rstrip("\\"))) % 2 == 0 else raw + '"'
            try:
                value = json.loads(closed)
            except ValueError:
                value = closed[1:-1]
        else:
            value = raw
        if _readable(space.params[key], value):
            out[key] = value
    if not out:
        raise ParseError("no key=value pair of a known parameter in model output: " + repr(text[:80]))
    return out


def _pairs_first(text: str, space: Any) -> bool:
    """Whether a ``key=value`` pair naming a parameter of ``space`` comes before the text's first ``{``."""
    line = text[:_MAX_TEXT].split("\n", 1)[0]
    brace = line.find("{")
    first = next((m for m in _PAIR.finditer(line) if m.group(1) in space.params and not m.group(2).startswith("{")),
                 None)  # `key={...`: a JSON answer after a prefilled key
    return first is not None and (brace < 0 or first.start() < brace)


def parse_config(text: str, space: Any, fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    """Extract, repair and validate a configuration from model text.

    Parameters
    ----------
    text : str
        Raw model output.
    space : qd.space.Space
        The search space.
    fallback : dict, optional
        A valid configuration (usually the parent) that fills missing or unrepairable fields.

    Returns
    -------
    dict
        A configuration for which ``space.validate`` reports no problems.

    Raises
    ------
    ParseError
        If no object is found, or the repaired object is still invalid. No other exception escapes.

    Notes
    -----
    The text is read as ``key=value`` pairs (:func:`extract_pairs`) when the space is flat and a
    pair naming one of its parameters comes before any ``{`` (a text value may hold braces), and
    as JSON otherwise, or when it holds no such pair.
    """
    flat = isinstance(text, str) and is_flat(space)
    if flat and _pairs_first(text, space):
        obj = extract_pairs(text, space)
    else:
        try:
            obj = extract_json_object(text)
        except ParseError:
            if not flat:
                raise
            obj = extract_pairs(text, space)
    try:
        config = space.repair(obj, fallback=fallback)
        problems = list(space.validate(config))
    except Exception as exc:  # noqa: BLE001 - a repair bug must not crash the search
        raise ParseError(f"repair failed: {type(exc).__name__}: {exc}") from exc
    if not problems and not _finite(config):
        problems = ["configuration contains a non-finite number"]
    if problems:
        raise ParseError("invalid configuration after repair: " + "; ".join(problems[:5]), problems)
    return config
