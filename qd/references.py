"""Resolve ``package.module:attribute`` references the way uvicorn, gunicorn and celery do.

The current directory comes first on the search path, so a run config next to ``mydomain.py``
can say ``[domain] name = "mydomain:MyDomain"`` with no ``PYTHONPATH``. When a module cannot
be found the error names it, the directories searched and the fix.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["UnresolvedReference", "resolve_reference", "split_reference"]


class UnresolvedReference(ValueError):
    """A ``package.module:attribute`` reference that does not resolve (message says why and the fix)."""


def split_reference(ref: str, what: str = "reference", example: str = "mydomain:MyDomain") -> tuple[str, str]:
    """``"pkg.mod:attr.sub"`` -> ``("pkg.mod", "attr.sub")``; raises for a malformed reference (showing ``example``)."""
    module, sep, attr = ref.partition(":")
    parts = module.split(".") + attr.split(".")
    if not sep or not all(part.isidentifier() for part in parts):
        raise UnresolvedReference(f"{what} {ref!r}: expected 'package.module:attribute' (e.g. '{example}')")
    return module, attr


def _with_cwd_first() -> str:
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in ("", cwd):
        if cwd in sys.path:
            sys.path.remove(cwd)
        sys.path.insert(0, cwd)
    return cwd


def resolve_reference(ref: str, what: str = "reference") -> Any:
    """The object a ``package.module:attribute`` reference names, importing from the current directory first.

    Parameters
    ----------
    ref : str
        ``"package.module:attribute"``; the attribute may be dotted (``"mod:Outer.inner"``).
    what : str
        What the reference is for, used in error messages (``"domain"``, ``"descriptor"``).

    Raises
    ------
    UnresolvedReference
        (a ``ValueError``) naming the module, where it was looked for and how to fix it; or the
        attribute and what the module has instead; or the error importing the module raised.
    """
    module_name, attr = split_reference(ref, what)
    cwd = _with_cwd_first()
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            top = module_name.split(".")[0]
            searched = ", ".join(p or "." for p in sys.path[:4]) + (", ..." if len(sys.path) > 4 else "")
            raise UnresolvedReference(
                f"cannot load {what} {ref!r}: no module {missing!r} (looked for {top}.py or {top}/__init__.py in the "
                f"current directory {cwd} and on sys.path: {searched}). Fix: run qd from the directory that holds "
                f"{top}.py, add that directory to PYTHONPATH, or pip install the package") from None
        raise UnresolvedReference(f"cannot load {what} {ref!r}: module {module_name!r} was found but importing it "
                              f"failed: {exc} (install the missing package)") from exc
    except Exception as exc:
        raise UnresolvedReference(f"cannot load {what} {ref!r}: importing module {module_name!r} raised "
                              f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = getattr(sys.modules.get(module_name), "__file__", None) or module_name
            public = [n for n in dir(obj) if not n.startswith("_")][:15]
            raise UnresolvedReference(f"cannot load {what} {ref!r}: {where} has no attribute {part!r} "
                                  f"(it has: {', '.join(public) or 'nothing public'})") from None
    return obj
