"""Issue 11 item 11: measure values outside the archive's ranges are counted per measure in
`qd status`, and the run warns once per measure when more than 5% fall outside, naming the range."""
from __future__ import annotations

import json

from qd.cli import main, run_status
from qd.measure_range import WARN_MIN_VALUES, out_of_range


def write(path, ranges: str) -> str:
    path.write_text(f"""
[run]
name = "ranges"
evaluations = 150
init_random = 150
plot = false
progress = false
[domain]
name = "arm"
[domain.options]
joints = 4
[archive]
measures = ["x", "y"]
bins = [10, 10]
ranges = {ranges}
[operators]
mutation = 1.0
[evaluator]
backend = "serial"
""")
    return str(path)


def test_a_too_narrow_range_warns_once_and_status_counts_the_values_outside(tmp_path, capsys):
    # x spans [-4, 4] for a 4-joint arm: [-1, 1] cuts most of it off; y keeps its full range
    config = write(tmp_path / "narrow.toml", "[[-1.0, 1.0], [-4.0, 4.0]]")
    assert main(["run", config, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("qd: warning:")]
    assert len(warnings) == 1  # once, for x only
    assert "of x values" in warnings[0] and "archive range [-1, 1]" in warnings[0]
    assert "widen archive.ranges[0]" in warnings[0]
    status = run_status(tmp_path / "run")
    x, y = status["out_of_range"]["x"], status["out_of_range"]["y"]
    assert x["of"] == y["of"] == status["statuses"]["ok"] == 150
    assert x["below"] > 10 and x["above"] > 10 and y["below"] == y["above"] == 0
    assert "out of range: " in out and "of x values" in out and "widen archive.ranges[0]" in out  # the summary
    assert main(["status", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out_of_range"]["x"] == x
    assert main(["status", str(tmp_path / "run")]) == 0
    assert f"out of range: x: {x['below']} below, {x['above']} above, of 150 values" in capsys.readouterr().out


def test_ranges_that_hold_every_value_stay_silent(tmp_path, capsys):
    config = write(tmp_path / "wide.toml", "[[-4.0, 4.0], [-4.0, 4.0]]")
    assert main(["run", config, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "qd: warning" not in capsys.readouterr().err
    counts = run_status(tmp_path / "run")["out_of_range"]
    assert all(c["below"] == c["above"] == 0 for c in counts.values())


def test_counts_skip_missing_and_non_finite_values():
    rows = [{"a": 0.5}, {"a": 2.0}, {"a": float("nan")}, {}, {"a": -1.0}]
    assert out_of_range(rows, ["a"], [0.0], [1.0]) == {"a": {"below": 1, "above": 1, "of": 3}}
    assert WARN_MIN_VALUES >= 10
