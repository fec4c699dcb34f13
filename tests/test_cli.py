"""The qd command line on a real (small) arm run."""
import csv
import io
import json

import pytest

from qd.cli import main


def write_arm_config(path, run: str, bins: int, operators: str = "iso_line_dd = 1.0", backend: str = ""):
    """A 6-joint arm run config as a user writes it: ``run`` and ``operators`` are TOML lines.

    ``backend`` sets ``[evaluator] backend`` (default: the config's, Ray).
    """
    path.write_text(f"""
[run]
{run}
[domain]
name = "arm"
[domain.options]
joints = 6
[archive]
measures = ["x", "y"]
bins = [{bins}, {bins}]
[operators]
{operators}
""" + (f'[evaluator]\nbackend = "{backend}"\n' if backend else ""))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ray_session):
    """A run with the default evaluator (Ray, on the session's runtime)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    config = write_arm_config(out.parent / "arm.toml", 'name = "cli-arm"\nevaluations = 400\ninit_random = 40',
                              bins=15, operators="iso_line_dd = 1.0\nmutation = 0.5")
    assert main(["run", str(config), "--out", str(out), "--no-progress", "--seed", "7"]) == 0
    return out


def test_run_writes_config_store_and_heatmap(run_dir):
    assert (run_dir / "config.toml").exists() and (run_dir / "run.sqlite").exists()
    assert (run_dir / "heatmap.png").stat().st_size > 5000
    config = (run_dir / "config.toml").read_text()
    assert "seed = 7" in config and 'backend = "ray"' in config  # Ray is the default evaluator


def test_status_json_has_the_documented_keys(run_dir, capsys):
    assert main(["status", str(run_dir), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    for key in ("evaluations", "budget", "num_elites", "coverage", "qd_score", "obj_max", "invalid", "errors",
                "statuses", "operators", "llm"):
        assert key in status
    assert status["evaluations"] == 400 == status["budget"]
    assert 0 < status["coverage"] <= 1
    assert set(status["operators"]) >= {"random", "iso_line_dd", "mutation"}
    assert status["operators"]["random"]["evaluated"] == 40


def test_elites_top_diverse_where_and_csv(run_dir, capsys):
    assert main(["elites", str(run_dir), "--top", "3"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert len(top) == 3 and top[0]["objective"] >= top[1]["objective"] >= top[2]["objective"]
    assert len(top[0]["config"]["angles"]) == 6
    assert all(e["feedback"].startswith("angle variance") for e in top)  # what the evaluation said
    assert main(["elites", str(run_dir), "--diverse", "4"]) == 0
    diverse = json.loads(capsys.readouterr().out)
    assert len({(round(e["x"], 3), round(e["y"], 3)) for e in diverse}) == 4
    assert main(["elites", str(run_dir), "--where", "x > 0 and y < 0", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(float(r["x"]) > 0 and float(r["y"]) < 0 for r in rows)
    assert json.loads(rows[0]["config"])["angles"]
    assert rows[0]["feedback"].startswith("angle variance")


def test_plot_other_file_and_curve(run_dir, tmp_path, capsys):
    out, curve = tmp_path / "map.png", tmp_path / "curve.png"
    assert main(["plot", str(run_dir), "-o", str(out), "--curve", str(curve)]) == 0
    assert out.stat().st_size > 5000 and curve.stat().st_size > 5000


def test_errors_are_clear_and_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a qd run directory" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[archive]\ntype = 'hex'\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "archive.type must be one of 'grid', 'cvt', got 'hex'" in capsys.readouterr().err
    for args in (["elites", str(tmp_path), "--top", "-2"], ["elites", str(tmp_path), "--diverse", "0"],
                 ["validate", str(tmp_path), "--samples", "0"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 2 and "expected an integer >= 1" in capsys.readouterr().err


def test_existing_run_dir_is_not_overwritten(run_dir, capsys):
    assert main(["run", "--out", str(run_dir), "--evals", "10"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_domains_lists_builtins(capsys):
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    assert "arm" in out and "retrieval" in out



def test_ordered_runs_on_ray_are_reproducible(tmp_path, ray_session):
    """`[run] ordered = true`: the same seed gives the same evaluations and archive on the default (Ray) backend."""
    from qd.runner import open_run

    config = write_arm_config(tmp_path / "ordered.toml",
                              "evaluations = 200\ninit_random = 30\nordered = true\nplot = false", bins=12)
    runs = []
    for name in ("a", "b"):
        assert main(["run", str(config), "--out", str(tmp_path / name), "--no-progress", "--seed", "3"]) == 0
        run = open_run(tmp_path / name)
        runs.append(([(r.id, r.hash) for r in run.store.evaluations()], run.archive.stats.qd_score))
    assert runs[0] == runs[1] and len(runs[0][0]) == 200


def test_status_piped_into_a_reader_that_leaves_early_ends_quietly(run_dir):
    import subprocess
    import sys

    # `qd status RUN | head -1`: a closed pipe is the reader's choice, not an error with a traceback.
    # The read end closes before qd has printed anything, so every line it writes meets a closed pipe.
    proc = subprocess.Popen([sys.executable, "-m", "qd.cli", "status", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_a_run_that_fails_to_start_leaves_no_run_behind_so_the_fixed_config_runs_in_the_same_directory(
        tmp_path, capsys):
    out = tmp_path / "run"
    good = write_arm_config(tmp_path / "good.toml", "evaluations = 20\ninit_random = 5", bins=5,
                            backend="serial").read_text()
    # the archive builds (ranges given); the unknown measure fails when the search resolves it
    bad = good.replace('measures = ["x", "y"]', 'measures = ["x", "yy"]\nranges = [[-6, 6], [-6, 6]]')
    (tmp_path / "bad.toml").write_text(bad)
    assert main(["run", str(tmp_path / "bad.toml"), "--out", str(out), "--no-progress"]) == 2
    assert "'yy'" in capsys.readouterr().err
    assert not (out / "run.sqlite").exists() and not (out / "config.toml").exists()
    assert main(["run", str(tmp_path / "good.toml"), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == 20


def test_resume_refuses_a_budget_below_the_evaluations_already_done(tmp_path, capsys):
    config = write_arm_config(tmp_path / "arm.toml", "evaluations = 30\ninit_random = 10", bins=5, backend="serial")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--evals", "20", "--no-progress"]) == 2
    assert "already holds 30 evaluations: the budget (run.evaluations, --evals) can only stay or grow, got 20" \
        in capsys.readouterr().err
    assert main(["run", "--resume", str(out), "--evals", "40", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["evaluations"] == 40 == status["budget"]


def test_resume_uses_the_stored_config_when_config_toml_is_gone(tmp_path, capsys):
    config = write_arm_config(tmp_path / "arm.toml", "evaluations = 20\ninit_random = 10", bins=5, backend="serial")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    (out / "config.toml").unlink()
    assert main(["run", "--resume", str(out), "--evals", "30", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == 30
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert f"nothing to resume: {tmp_path / 'nothing'} holds no run" in capsys.readouterr().err
