"""Issue 22, item 4: a search over a small or repetitive space ends cleanly and says why.

A run whose space runs out of configurations it has not evaluated stops early with a clear
message, writes its summary and heatmap, and records why in the store (``qd status`` shows it).
Random draws that keep hitting evaluated configurations are not the end: a finite space is
counted and enumerated exactly, and otherwise the operators go on from the elites.
"""
from __future__ import annotations

import json
import math

import pytest
from sample_domains import SmallGrid

from qd.archives import GridArchive
from qd.cli import main
from qd.operators import Mutation, Operator
from qd.scheduler import RANDOM, Scheduler, SchedulerOptions, SpaceExhausted
from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text


class FlipOn(Operator):
    """Flips ``on`` and never touches anything else."""

    name = "flip"

    def vary(self, parents, rng):
        return [{**parents[0].config, "on": not parents[0].config["on"]}]


def grid_archive() -> GridArchive:
    return GridArchive(dims=[4, 2], ranges=[(0, 3), (0, 1)], measure_names=["k", "b"])


def test_cardinality_counts_every_configuration_and_value_at_lists_each_once():
    space = Space({"k": Int(0, 3), "letter": Categorical(["a", "b", 3]), "on": Bool(),
                   "layers": Seq(Int(1, 2), 0, 2), "empty": Text(0)})
    assert space.cardinality() == 4 * 3 * 2 * (1 + 2 + 4) * 1
    configs = [space.value_at(i) for i in range(space.cardinality())]
    assert all(space.is_valid(c) for c in configs)
    assert len({space.hash(c) for c in configs}) == space.cardinality()
    with pytest.raises(IndexError):
        space.value_at(space.cardinality())
    assert Space({"t": Float(0, 1), "k": Int(0, 3)}).cardinality() == math.inf
    assert Space({"prompt": Text(10), "k": Int(0, 3)}).cardinality() == math.inf
    assert Space({"layers": Seq(Float(0, 1), 0, 3)}).cardinality() == math.inf


def test_a_small_run_ends_cleanly_when_every_configuration_is_evaluated(tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text("""
[run]
name = "small"
evaluations = 20
init_random = 5
progress = false
[domain]
name = "sample_domains:SmallGrid"
[archive]
noise = "none"
[evaluator]
backend = "serial"
[operators]
mutation = 1.0
""")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "stopped early at 8 of 20 evaluations: all 8 configurations of the space have been evaluated" \
        in captured.err
    assert "evaluations: 8  elites: 8" in captured.out  # the summary
    assert (out / "heatmap.png").stat().st_size > 1000
    assert main(["status", str(out), "--json"]) == 0
    stopped = json.loads(capsys.readouterr().out)["stopped"]
    assert stopped["evaluations"] == 8 and stopped["budget"] == 20
    assert "all 8 configurations of the space have been evaluated" in stopped["reason"]
    assert main(["status", str(out)]) == 0
    assert "stopped early at 8 of 20 evaluations: all 8 configurations" in capsys.readouterr().out
    # a resume with a bigger budget has nothing to evaluate either: it says so again, cleanly
    assert main(["run", "--resume", str(out), "--evals", "30", "--no-progress"]) == 0
    assert "stopped early at 8 of 30 evaluations" in capsys.readouterr().err


def test_random_draws_that_hit_evaluated_configurations_do_not_end_a_finite_space_early():
    """9,999 of 10,000 configurations evaluated: random draws collide, the exact count finds the last one."""
    space = Space({"k": Int(0, 9999)})
    archive = GridArchive(dims=[10], ranges=[(0, 9999)], measure_names=["k"])
    scheduler = Scheduler(archive, space, {"mutation": (Mutation(space), 1.0)},
                          SchedulerOptions(init_random=10_000, seed=1))
    scheduler.resume({space.hash({"k": k}) for k in range(10_000) if k != 6173})
    last = scheduler.ask()
    assert last.config == {"k": 6173} and last.operator == RANDOM
    scheduler.tell(last, 1.0, [6173.0])
    with pytest.raises(SpaceExhausted, match="all 10000 configurations of the space have been evaluated"):
        scheduler.ask()


def test_operators_go_on_when_random_samples_repeat_but_the_space_is_not_exhausted():
    """Random sampling leaves Text at its default, so it finds two configurations; Mutation edits the text."""
    space = Space({"prompt": Text(60, default="answer briefly"), "on": Bool()})
    archive = GridArchive(dims=[2], ranges=[(0, 1)], measure_names=["on"])
    scheduler = Scheduler(archive, space, {"mutation": (Mutation(space), 1.0)},
                          SchedulerOptions(init_random=10, seed=0))
    asked = []
    for _ in range(12):
        candidate = scheduler.ask()
        scheduler.tell(candidate, float(len(candidate.config["prompt"])), [float(candidate.config["on"])])
        asked.append(candidate)
    assert len({c.hash for c in asked}) == 12
    assert [c.operator for c in asked[:2]] == [RANDOM, RANDOM]
    assert {c.operator for c in asked[2:]} == {"mutation"}


def test_a_space_no_operator_can_leave_is_reported_once_tries_run_out():
    """A Text parameter no operator edits: two configurations can be reached, and the scheduler says so."""
    space = Space({"prompt": Text(60, default="answer briefly"), "on": Bool()})
    archive = GridArchive(dims=[2], ranges=[(0, 1)], measure_names=["on"])
    scheduler = Scheduler(archive, space, {"flip": (FlipOn(), 1.0)}, SchedulerOptions(init_random=10, seed=0))
    for _ in range(2):
        candidate = scheduler.ask()
        scheduler.tell(candidate, 1.0, [float(candidate.config["on"])])
    with pytest.raises(SpaceExhausted, match="no configuration that has not been evaluated"):
        scheduler.ask()
    assert scheduler.exhausted


def test_search_stops_cleanly_and_records_why(tmp_path):
    from qd.analysis.descriptors import resolve_measures
    from qd.evaluators import SerialEvaluator
    from qd.search import Search
    from qd.store import RunStore

    domain = SmallGrid()
    with RunStore(tmp_path / "run.sqlite") as store:
        with Search(domain, grid_archive(), SerialEvaluator(domain),
                    operators={"mutation": (Mutation(domain.space), 1.0)},
                    measures=resolve_measures(["k", "b"], domain), budget=20, store=store, init_random=3) as search:
            archive = search.run()
        assert search.finished == 8 and len(archive) == 8
        assert "all 8 configurations" in search.stopped
        assert store.get_meta("stopped")["reason"] == search.stopped
