"""Each extension point has one registry: a backend, an operator's parameters and a listener are declared once."""
from __future__ import annotations

import re

import pytest
from test_run_dir import arm_config

from qd.cli import main
from qd.config import ConfigError, resolve_config
from qd.domains.arm import ArmDomain
from qd.evaluators import SerialEvaluator, registry
from qd.rundir import read_run
from qd.runner import build_evaluator


class CountingEvaluator(SerialEvaluator):
    """A serial evaluator that keeps count of what it ran: a backend registered by a user."""

    built: list[CountingEvaluator] = []

    def __init__(self, domain, timeout_s=None, label="counting"):
        super().__init__(domain, timeout_s=timeout_s)
        self.label, self.evaluated = label, 0
        CountingEvaluator.built.append(self)

    def collect(self, timeout):
        done = super().collect(timeout)
        self.evaluated += len(done)
        return done


@pytest.fixture
def counting_backend(monkeypatch):
    """Register ``counting`` for one test; the registry is left as it was afterwards."""
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    CountingEvaluator.built.clear()
    return registry.register_backend("counting", CountingEvaluator, options=("timeout_s", "label"),
                                     help="counts what it evaluates")


def test_an_unregistered_backend_is_refused_by_the_config_naming_the_registered_ones():
    with pytest.raises(ConfigError, match="evaluator.backend must be one of 'serial', 'ray', got 'counting'"):
        resolve_config({"evaluator": {"backend": "counting"}})


def test_one_registration_makes_a_backend_known_to_the_config_the_runner_and_the_cli(counting_backend, tmp_path,
                                                                                        capsys):
    config = resolve_config({"evaluator": {"backend": "counting", "timeout_s": 7.0}})
    assert config["evaluator"]["backend"] == "counting"
    assert "counting" in registry.backend_names()
    from qd.domains.arm import ArmDomain

    evaluator = build_evaluator(config, ArmDomain(joints=2))  # [evaluator] keys named like its options
    assert isinstance(evaluator, CountingEvaluator) and evaluator.timeout_s == 7.0
    # the CLI's --backend takes it, and a whole run goes through it
    out = tmp_path / "run"
    assert main(["run", str(arm_config(tmp_path / "arm.toml", evaluations=20)), "--out", str(out),
                 "--backend", "counting", "--no-progress"]) == 0
    assert CountingEvaluator.built[-1].evaluated == 20
    assert read_run(out).config["evaluator"]["backend"] == "counting"
    with pytest.raises(SystemExit):  # and `qd run --help` lists it with its line of help
        main(["run", "--help"])
    assert "counting: counts what it evaluates" in " ".join(capsys.readouterr().out.split())


def test_a_backend_refuses_an_option_it_did_not_declare_and_a_name_cannot_be_taken_twice(counting_backend):
    from qd.domains.arm import ArmDomain

    with pytest.raises(ValueError, match=r"'counting' does not take option\(s\) \['workers'\]"):
        registry.make_evaluator("counting", ArmDomain(joints=2), workers=2)
    assert registry.make_evaluator("counting", ArmDomain(joints=2), label="x").label == "x"
    with pytest.raises(ValueError, match="'counting' is already registered"):
        registry.register_backend("counting", CountingEvaluator, options=())


EVALUATOR_MODULE = """
from qd.evaluators import SerialEvaluator


class Marking(SerialEvaluator):
    built = []

    def __init__(self, domain, timeout_s=None):
        super().__init__(domain, timeout_s=timeout_s)
        Marking.built.append(timeout_s)
"""


def test_a_run_config_names_an_unregistered_evaluator_factory_by_reference(tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "my_evaluators.py").write_text(EVALUATOR_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_evaluators", raising=False)
    config = arm_config(tmp_path / "arm.toml", evaluations=12, extra="")
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--backend", "my_evaluators:Marking",
                 "--no-progress"]) == 0
    assert sys.modules["my_evaluators"].Marking.built == [60.0]  # [evaluator] timeout_s, its one keyword option
    assert main(["run", str(config), "--out", str(tmp_path / "bad"), "--backend", "dask", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "evaluator.backend must be one of 'serial', 'ray', got 'dask' (not a registered evaluator backend" in err
    sys.modules.pop("my_evaluators", None)


def test_the_built_in_backends_are_imported_only_when_built():
    import subprocess
    import sys

    code = ("import sys; import qd.config, qd.cli; from qd.evaluators.registry import backend_names; "
            "assert backend_names()[:2] == ('serial', 'ray'), backend_names(); "
            "assert 'qd.evaluators.serial' not in sys.modules and 'ray' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('qd.evaluat', 'ray')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# -- operator parameters: one declaration, read by the run config and the constructor ----------------------
def _build(name, params):
    from qd.domains.arm import ArmDomain
    from qd.llm import LLMClient
    from qd.operators import BUILTIN

    cls, space = BUILTIN[name], ArmDomain(joints=3).space
    return cls(space, LLMClient(base_url="http://127.0.0.1:9/v1"), **params) if cls.uses_llm else cls(space, **params)


def _declared():
    from qd.operators import PARAMETERS

    return [(op, p) for op, params in PARAMETERS.items() for p in params]


@pytest.mark.parametrize("operator, param", _declared())
def test_the_config_and_the_constructor_refuse_a_bad_parameter_with_the_same_words(operator, param):
    from test_run_config_operators_seeds import BAD

    from qd.operators import BUILTIN

    with pytest.raises(ValueError) as built:
        _build(operator, {param: BAD[param]})
    with pytest.raises(ConfigError) as loaded:
        resolve_config({"operators": {operator: {param: BAD[param]}}})
    allowed = BUILTIN[operator].parameters[param].allowed
    assert str(built.value) == f"{param} must be {allowed}, got {BAD[param]!r}"
    assert str(loaded.value) == f"operators.{operator}.{built.value}"


def test_a_declared_parameter_changes_what_both_accept(monkeypatch):
    """The class's declaration is the only check: tightening it tightens the config and the constructor."""
    from qd.operators import Mutation
    from qd.operators.params import Parameter

    assert _build("mutation", {"children": 5}).children == 5
    resolve_config({"operators": {"mutation": {"children": 5}}})
    monkeypatch.setattr(Mutation, "parameters", {**Mutation.parameters,
                                                 "children": Parameter("at most 4", lambda v: v <= 4)})
    with pytest.raises(ValueError, match=r"^children must be at most 4, got 5$"):
        _build("mutation", {"children": 5})
    with pytest.raises(ConfigError, match=r"^operators\.mutation\.children must be at most 4, got 5$"):
        resolve_config({"operators": {"mutation": {"children": 5}}})


# -- listeners named in a run config ----------------------------------------------------------------------
LISTENER_MODULE = '''
import json
from qd.listeners import SearchListener


class Tally(SearchListener):
    def __init__(self, path, label="tally"):
        self.path, self.label, self.seen = path, label, []

    def on_start(self, search):
        self.seen.append("start")

    def on_result(self, search, event):
        self.seen.append(event.id)

    def on_end(self, search):
        self.seen.append("end")
        with open(self.path, "a") as f:
            f.write(json.dumps({"label": self.label, "seen": self.seen}) + "\\n")


NOT_A_LISTENER = 3
'''


@pytest.fixture
def listener_module(tmp_path, monkeypatch):
    import sys

    (tmp_path / "my_listeners.py").write_text(LISTENER_MODULE)
    monkeypatch.chdir(tmp_path)  # references resolve from the working directory first, as a domain's do
    yield tmp_path
    sys.modules.pop("my_listeners", None)


def test_listeners_named_in_the_run_config_see_every_result_and_are_written_to_config_toml(listener_module):
    import json

    from qd.config import load_config

    tally = listener_module / "tally.jsonl"
    config = arm_config(listener_module / "arm.toml", evaluations=15,
                        extra=f'listeners = [{{listener = "my_listeners:Tally", path = "{tally}"}}, '
                              f'{{listener = "my_listeners:Tally", path = "{tally}", label = "second"}}]')
    out = listener_module / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in tally.read_text().splitlines()]
    assert [r["label"] for r in rows] == ["tally", "second"]
    for row in rows:
        assert row["seen"][0] == "start" and row["seen"][-1] == "end"
        assert sorted(row["seen"][1:-1]) == list(range(15))  # every evaluation id, once
    assert load_config(out / "config.toml")["run"]["listeners"][1] == {"listener": "my_listeners:Tally",
                                                                     "path": str(tally), "label": "second"}


@pytest.mark.parametrize("entry, message", [
    ('"my_listeners"', r"run\.listeners\[0\] 'my_listeners': expected 'package\.module:attribute'"),
    ('{path = "x"}', r"run\.listeners\[0\] must have listener = \"package\.module:attribute\""),
])
def test_a_malformed_listener_reference_is_refused_at_load_naming_its_key(listener_module, entry, message):
    from qd.config import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(arm_config(listener_module / "arm.toml", extra=f"listeners = [{entry}]"))


@pytest.mark.parametrize("entry, message", [
    ('"no_such_module:Tally"', r"run\.listeners\[0\].*no module 'no_such_module'"),
    ('"my_listeners:Tallly"', r"run\.listeners\[0\].*has no attribute 'Tallly'"),
    ('"my_listeners:NOT_A_LISTENER"', r"run\.listeners\[0\]: 'my_listeners:NOT_A_LISTENER' is a int, not a "
                                      r"SearchListener class or factory"),
    ('{listener = "my_listeners:Tally", path = "t", colour = "red"}',
     r"run\.listeners\[0\]: my_listeners:Tally: .*unexpected keyword argument 'colour'"),
])
def test_a_listener_that_does_not_build_stops_the_run_before_it_starts_naming_its_key(listener_module, entry, message,
                                                                                     capsys):
    out = listener_module / "run"
    assert main(["run", str(arm_config(listener_module / "arm.toml", extra=f"listeners = [{entry}]")),
                 "--out", str(out), "--no-progress"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (out / "run.sqlite").exists()  # a run that fails to start leaves no store behind


# -- one word for the objective: `objective`, with `fitness` still accepted ---------------------------------
def test_an_eval_result_takes_objective_and_its_alias_fitness_as_the_same_thing():
    from qd.result import EvalResult, check_result

    new, old = EvalResult(objective=0.5, measures={"x": 1.0}), EvalResult(fitness=0.5, measures={"x": 1.0})
    assert new == old and new.fitness == old.objective == 0.5
    assert EvalResult(0.25).fitness == 0.25  # positionally, as before
    old.fitness = 0.75  # the attribute is an alias too, both ways
    assert old.objective == 0.75 and check_result(old).objective == 0.75
    with pytest.raises(TypeError, match="objective or its alias fitness, not both"):
        EvalResult(objective=1.0, fitness=2.0)


class _OldSpelling(ArmDomain):
    """A user's domain written before `objective`: it still says EvalResult(fitness=...)."""

    def evaluate(self, config):
        result = super().evaluate(config)
        from qd.result import EvalResult

        return EvalResult(fitness=result.objective, measures=result.measures, feedback=result.feedback)


def test_a_domain_written_with_fitness_runs_and_its_rows_and_queries_answer_to_both_names(tmp_path):
    from qd.analysis.descriptors import resolve_measures
    from qd.archives import GridArchive
    from qd.evaluators import SerialEvaluator
    from qd.operators import Mutation
    from qd.search import Search
    from qd.store import RunStore

    domain = _OldSpelling(joints=3)
    archive = GridArchive(dims=[6, 6], ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    with RunStore(tmp_path / "run.sqlite") as store:
        with Search(domain, archive, SerialEvaluator(domain), operators={"mutation": (Mutation(domain.space), 1.0)},
                    measures=resolve_measures(["x", "y"], domain), budget=30, store=store, init_random=10,
                    seed=0, progress=False) as search:
            search.run()
        rows = list(store.evaluations())
    assert len(rows) == 30
    for row in rows:
        assert row.objective == domain.evaluate(row.config).objective
    best = max(r.objective for r in rows)
    assert archive.best_elite["objective"] == best
    cut = sorted(r.objective for r in rows)[len(rows) // 2]
    by_objective, by_fitness = archive.where(f"objective > {cut}"), archive.where(f"fitness > {cut}")
    assert by_objective and [e["id"] for e in by_objective] == [e["id"] for e in by_fitness]
    assert all(e["objective"] > cut for e in by_objective)
