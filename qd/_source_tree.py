"""In a checkout, ``qd.archives``, ``qd.operators`` and ``qd.domains`` come from the folders beside ``qd/``.

The repository keeps those packages at the top level, and an install maps them under ``qd``
(``[tool.setuptools.package-dir]`` in ``pyproject.toml``). A Python started in the checkout
imports this ``qd/`` first (the current directory leads ``sys.path``), where the install's
mapping does not reach: a wheel install has its own copies, an editable one may belong to another
checkout, and there may be no install at all. Importing this module (``qd/__init__.py`` does,
first) maps the three names to the folders beside this ``qd/``. In the installed wheel layout,
where they are subfolders of ``qd/``, it does nothing.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

FOLDERS = ("archives", "operators", "domains")


class SourceFolders(importlib.abc.MetaPathFinder):
    """Finds ``qd.<folder>`` as the package ``root/<folder>``; its submodules follow from its ``__path__``."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        """The spec of ``qd.archives``, ``qd.operators`` or ``qd.domains``; None for any other name."""
        package, _, name = fullname.partition(".")
        if package != "qd" or name not in FOLDERS:
            return None
        init = self.root / name / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


def install() -> None:
    """Map the three folders when this ``qd/`` sits in a checkout (once per process)."""
    here = Path(__file__).resolve().parent
    root = here.parent
    in_checkout = (root / "pyproject.toml").is_file() and all((root / f / "__init__.py").is_file() for f in FOLDERS)
    if (here / FOLDERS[0]).is_dir() or not in_checkout:  # the wheel layout, or not a checkout
        return
    if not any(isinstance(finder, SourceFolders) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFolders(root))  # before an install's finder: this checkout's folders win


install()
