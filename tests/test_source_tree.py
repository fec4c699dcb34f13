"""Issue 22, item 7: ``import qd.archives`` works in a Python started in the checkout, and the wheel layout still works.

The repository keeps ``archives/``, ``operators/`` and ``domains/`` beside ``qd/``; an install maps them
under ``qd``. A Python started in the checkout imports this ``qd/`` first (the current directory leads
``sys.path``), where an install's mapping may not reach: a wheel install, or none at all.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("archives", "operators", "domains")
SHOW = ("import json, qd, qd.archives, qd.operators, qd.domains.arm; "
        "print(json.dumps({m.__name__: m.__file__ for m in (qd, qd.archives, qd.operators, qd.domains.arm)}))")


def _dependencies() -> list[str]:
    """This interpreter's package folders (numpy and the rest), without the checkout and without .pth hooks."""
    return [p for p in sys.path if p and Path(p).resolve() not in (ROOT, ROOT / "tests") and Path(p).is_dir()]


def _bare_python(cwd: Path, path: list[str]) -> dict[str, str]:
    """Where ``SHOW``'s modules come from in a Python with no site hooks (no editable install), run in ``cwd``."""
    code = f"import sys; sys.path[1:1] = {path!r}; {SHOW}"
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_python_started_in_the_checkout_imports_the_top_level_folders_as_qd_subpackages():
    found = _bare_python(ROOT, _dependencies())  # '' (the checkout) first: its qd/ is imported
    assert found["qd"] == str(ROOT / "qd" / "__init__.py")
    assert found["qd.archives"] == str(ROOT / "archives" / "__init__.py")
    assert found["qd.operators"] == str(ROOT / "operators" / "__init__.py")
    assert found["qd.domains.arm"] == str(ROOT / "domains" / "arm.py")


def test_the_installed_python_imports_them_from_the_checkout_in_and_out_of_it(tmp_path):
    for cwd in (ROOT, tmp_path):
        done = subprocess.run([sys.executable, "-c", SHOW], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["qd.archives"] == str(ROOT / "archives" / "__init__.py")


def test_the_wheel_layout_imports_its_own_subpackages(tmp_path):
    """Installed as a wheel (archives/ inside qd/), nothing is mapped: each subpackage is the wheel's own."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "qd", site / "qd", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, site / "qd" / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "work").mkdir()
    found = _bare_python(tmp_path / "work", [str(site), *_dependencies()])
    assert found["qd"] == str(site / "qd" / "__init__.py")
    assert found["qd.archives"] == str(site / "qd" / "archives" / "__init__.py")
    assert found["qd.domains.arm"] == str(site / "qd" / "domains" / "arm.py")
