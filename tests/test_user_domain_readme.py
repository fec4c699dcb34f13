"""README "Your own system": the examples it shows are the shipped files, and they run with `qd run` as written."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from counting_openai import CountingOpenAI

from qd.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "own_system"


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Your own system")
    return readme[start:readme.index("\n## ", start + 1)]


@pytest.mark.parametrize("name", ["qa.py", "qa.toml", "dspy_qa.py"])
def test_the_readme_shows_the_shipped_example_files_verbatim(name):
    assert (EXAMPLES / name).read_text() in _section()


@pytest.fixture
def example_dir(tmp_path, monkeypatch):
    for path in EXAMPLES.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for module in ("qa", "dspy_qa"):
        sys.modules.pop(module, None)


@pytest.mark.parametrize("config, calls_per_eval", [("qa.toml", 4), ("dspy_qa.toml", 2 * 2)])
def test_the_examples_run_with_qd_run_and_report_the_pipeline_spend(example_dir, ray_session, capsys, config,
                                                                     calls_per_eval):
    with CountingOpenAI(reply=None if config.startswith("dspy") else (lambda req: "Paris")) as server:
        # as written, with a small budget and the counting server as the run's [llm] endpoint
        assert main(["run", config, "--out", "out", "--evals", "3", "--llm-base-url", server.base_url,
                     "--no-progress"]) == 0
        served = server.served()
    capsys.readouterr()
    assert main(["status", "out", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["statuses"]["ok"] == status["evaluations"] == 3
    pipeline = status["spend"]["pipeline"]
    assert pipeline["calls"] == served["calls"] == 3 * calls_per_eval
    assert (pipeline["tokens_in"], pipeline["tokens_out"]) == (served["tokens_in"], served["tokens_out"])
    assert pipeline["untraced_calls"] == 0
