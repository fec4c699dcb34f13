"""One self-contained HTML file from the report's data: inline style and script, no network at view time.

The page's Content-Security-Policy allows nothing to be fetched (``default-src 'none'``): only its
own inline script and style run, and images only as ``data:`` URLs. The data travels inside the
page as gzip-compressed JSON in base64, unpacked by the browser's ``DecompressionStream``.
"""
from __future__ import annotations

import base64
import gzip
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["CSP", "render", "write_report"]

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def _asset(name: str) -> str:
    return resources.files("qd.report").joinpath("templates", name).read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that cannot end the ``<script>`` element it is inlined in."""
    return text.replace("</", "<\\/")


def render(data: dict[str, Any]) -> str:
    """The report page for ``data`` (:func:`qd.report.data.collect`)."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    packed = base64.b64encode(gzip.compress(payload, mtime=0)).decode("ascii")
    values = {"__CSP__": CSP, "__TITLE__": _html_escape(f"qd report: {data['meta']['name']}"),
              "/*__STYLE__*/": _asset("report.css"), "__DATA__": packed,
              "/*__SCRIPT__*/": _script_safe(_asset("report.js"))}
    # one pass: text put in (a run's name, the script) is never searched for the next placeholder
    return re.sub("|".join(re.escape(k) for k in values), lambda m: values[m.group(0)], _asset("report.html"))


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def write_report(data: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`render` of ``data`` to ``path`` (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    return path
