"""Operators and seeds from the run config: parameter tables, references, errors naming the key,
and searches that start from the user's own configurations."""
from __future__ import annotations

import json
import math

import pytest

from qd.config import ConfigError, resolve_config
from qd.domains.arm import ArmDomain
from qd.operators import BUILTIN, PARAMETERS, Gaussian, IsoLineDD, LMXCrossover, build_operators
from qd.runner import build_operators as build_run_operators
from qd.runner import run_search
from qd.seeds import load_seeds
from qd.store import RunStore

JOINTS = 4

# One bad value per documented parameter of every built-in operator.
BAD = {"sigma": 0, "iso_sigma": -0.1, "line_sigma": -1, "rate": 1.5, "children": 0, "int_step": -2, "k": 0,
       "temperature": 3.0, "max_tokens": 0, "target": 5, "score_name": 1}


def arm_config(operators: dict, **run: object) -> dict:
    return resolve_config({
        "run": {"name": "cfg", "evaluations": 30, "init_random": 5, "progress": False, "plot": False, **run},
        "domain": {"name": "arm", "options": {"joints": JOINTS}},
        "archive": {"measures": ["x", "y"], "bins": [10, 10], "noise": "none"},
        "operators": operators,
        "evaluator": {"backend": "serial"},
    })


def test_every_builtin_operator_documents_its_parameters():
    assert set(PARAMETERS) == set(BUILTIN)
    for name, params in PARAMETERS.items():
        assert set(params) <= set(BAD), name
        doc = BUILTIN[name].__doc__ + (BUILTIN[name].__init__.__doc__ or "")
        for param in params:  # LLM operators document their keywords on the base class
            assert param in doc or param in (BUILTIN[name].__mro__[1].__doc__ or ""), (name, param)


@pytest.mark.parametrize("operator,param", [(op, p) for op, params in PARAMETERS.items() for p in params])
def test_a_bad_operator_parameter_is_refused_at_load_naming_its_key(operator, param):
    with pytest.raises(ConfigError, match=rf"operators\.{operator}\.{param} must "):
        arm_config({operator: {"weight": 1.0, param: BAD[param]}})


def test_unknown_operator_parameter_and_name_and_weight_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'operators\.iso_line_dd\.sigma' .*allowed: .*iso_sigma"):
        arm_config({"iso_line_dd": {"sigma": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown operator 'isoline' \(operators\.isoline\)"):
        arm_config({"isoline": 1.0})
    with pytest.raises(ConfigError, match=r"operators\.iso_line_dd\.weight must be a non-negative weight"):
        arm_config({"iso_line_dd": {"weight": -1.0}})
    with pytest.raises(ConfigError, match=r"operators\.iso_line_dd: iso_sigma and line_sigma cannot both be 0"):
        arm_config({"iso_line_dd": {"iso_sigma": 0.0, "line_sigma": 0.0}})


def test_flat_weights_and_parameter_tables_build_the_same_classes():
    domain = ArmDomain(joints=JOINTS)
    config = arm_config({"iso_line_dd": {"weight": 2.0, "iso_sigma": 0.1, "line_sigma": 0.3, "children": 2},
                         "gaussian": 0.5, "mutation": 0.0})
    ops, client = build_run_operators(config, domain)
    assert client is None and set(ops) == {"iso_line_dd", "gaussian"}  # weight 0: not built
    iso, weight = ops["iso_line_dd"]
    assert isinstance(iso, IsoLineDD) and weight == 2.0
    assert (iso.iso_sigma, iso.line_sigma, iso.children, iso.sigma_units) == (0.1, 0.3, 2, "value")
    gaussian, weight = ops["gaussian"]
    assert isinstance(gaussian, Gaussian) and weight == 0.5 and gaussian.sigma_units == "unit"


def test_a_sigma_in_the_config_is_in_the_parameters_own_units():
    """iso_sigma = 0.1 rad on the arm's [-pi, pi] angles moves them like 0.1 / (2 pi) of the range."""
    import numpy as np

    domain = ArmDomain(joints=JOINTS)
    ops = build_operators({"iso_line_dd": {"iso_sigma": 0.1, "line_sigma": 0.0}}, domain.space)
    by_config, _ = ops["iso_line_dd"]
    by_range = IsoLineDD(domain.space, iso_sigma=0.1 / (2 * math.pi), line_sigma=0.0)
    parent = [domain.default_config()]
    assert by_config.vary(parent, np.random.default_rng(4)) == by_range.vary(parent, np.random.default_rng(4))


def test_operators_named_by_reference_with_parameters():
    domain = ArmDomain(joints=JOINTS)
    ops = build_operators({"small": {"operator": "qd.operators.classic:Gaussian", "sigma": 0.05, "weight": 3.0},
                           "qd.operators.classic:UniformCrossover": 1.0}, domain.space)
    assert isinstance(ops["small"][0], Gaussian) and ops["small"][1] == 3.0
    assert ops["small"][0].sigma == 0.05 and ops["small"][0].sigma_units == "unit"  # parameters pass as given
    assert ops["small"][0].name == "small"  # counters and LLM usage tags follow the config's name
    assert type(ops["qd.operators.classic:UniformCrossover"][0]).__name__ == "UniformCrossover"
    with pytest.raises(ValueError, match=r"operators\.x: cannot load operator 'no_such_module:Op'"):
        build_operators({"x": {"operator": "no_such_module:Op"}}, domain.space)
    with pytest.raises(ValueError, match=r"operators\.x: .*unexpected keyword argument 'strength'"):
        build_operators({"x": {"operator": "qd.operators.classic:Mutation", "strength": 3}}, domain.space)
    with pytest.raises(ValueError, match=r"operators\.x: 'math:pi' is a float, not an operator class"):
        build_operators({"x": {"operator": "math:pi"}}, domain.space)
    with pytest.raises(ValueError, match="no operator a positive weight"):
        build_operators({"mutation": 0.0}, domain.space)


def test_llm_operators_get_the_client_only_when_built():
    domain = ArmDomain(joints=JOINTS)

    class Client:
        api = "completions"

    made: list[Client] = []

    def client() -> Client:
        made.append(Client())
        return made[-1]

    build_operators({"mutation": 1.0, "lmx": 0.0}, domain.space, client)
    assert made == []  # no LLM operator with a positive weight: no client
    ops = build_operators({"lmx": {"k": 3, "temperature": 0.5}, "llm_mutation": 1.0}, domain.space, client)
    lmx = ops["lmx"][0]
    assert isinstance(lmx, LMXCrossover) and lmx.k == 3 and lmx.temperature == 0.5
    assert len(made) == 1 and lmx.client is made[0] is ops["llm_mutation"][0].client  # one shared client


# -- seeds --------------------------------------------------------------------------------------
def test_seeds_default_jsonl_inline_and_mixed(tmp_path):
    domain = ArmDomain(joints=JOINTS)
    straight = {"angles": [0.0] * JOINTS}
    assert domain.default_config() == straight
    assert load_seeds("default", domain) == [straight]
    assert load_seeds(None, domain) == [] and load_seeds([], domain) == []
    path = tmp_path / "seeds.jsonl"
    lines = [{"angles": [0.1 * i] * JOINTS} for i in range(3)]
    path.write_text("\n".join(json.dumps(c) for c in lines) + "\n\n")
    assert load_seeds(str(path), domain) == lines
    assert load_seeds("seeds.jsonl", domain, base_dir=tmp_path) == lines
    assert load_seeds([lines[2], "default", lines[0]], domain) == [lines[2], straight, lines[0]]


def test_bad_seeds_are_refused_naming_the_entry(tmp_path):
    domain = ArmDomain(joints=JOINTS)
    with pytest.raises(ValueError, match=r"run\.seeds\[1\] is not a valid configuration of 'arm': .*angles"):
        load_seeds(["default", {"angles": [1.0]}], domain)
    with pytest.raises(ValueError, match=r'run\.seeds\[0\] must be "default" or a table'):
        load_seeds([3], domain)
    with pytest.raises(ValueError, match=r"run\.seeds: cannot read seeds file '.*missing\.jsonl'"):
        load_seeds(str(tmp_path / "missing.jsonl"), domain)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"angles": [0, 0, 0, 0]}\n{"angles": [\n')
    with pytest.raises(ValueError, match=r"run\.seeds: .*bad\.jsonl:2 is not JSON"):
        load_seeds(str(bad), domain)
    # an empty path names no file (a config file's directory would be read as one): refused at load
    with pytest.raises(ConfigError, match=r"run\.seeds must be \"default\", a path to a seeds file.*got ''"):
        arm_config({"mutation": 1.0}, seeds="")


def test_a_run_evaluates_its_seeds_first_then_random_samples_then_operators(tmp_path):
    seed_file = tmp_path / "mine.jsonl"
    seed_file.write_text(json.dumps({"angles": [0.2] * JOINTS}) + "\n")
    config = arm_config({"iso_line_dd": {"iso_sigma": 0.05}},
                        seeds=["default", {"angles": [-0.3] * JOINTS}], init_random=3)
    run_search(config, tmp_path / "inline", progress=False)
    with RunStore(tmp_path / "inline" / "run.sqlite") as store:
        rows = sorted(store.evaluations(), key=lambda r: r.id)
    assert [r.operator for r in rows[:5]] == ["seed", "seed", "random", "random", "random"]
    assert [r.config for r in rows[:2]] == [{"angles": [0.0] * JOINTS}, {"angles": [-0.3] * JOINTS}]
    assert {r.operator for r in rows[5:]} == {"iso_line_dd"} and len(rows) == 30

    run_search(arm_config({"iso_line_dd": 1.0}, seeds=str(seed_file), init_random=0), tmp_path / "file",
               progress=False)
    with RunStore(tmp_path / "file" / "run.sqlite") as store:
        rows = sorted(store.evaluations(), key=lambda r: r.id)
    assert rows[0].operator == "seed" and rows[0].config == {"angles": [0.2] * JOINTS}
    assert {r.operator for r in rows[1:]} == {"iso_line_dd"}  # init_random = 0: no random sample at all


def test_a_run_with_a_bad_seed_evaluates_nothing(tmp_path):
    config = arm_config({"iso_line_dd": 1.0}, seeds=[{"angles": [5.0] * JOINTS}])
    with pytest.raises(ConfigError, match=r"run\.seeds\[0\] is not a valid configuration"):
        run_search(config, tmp_path / "run", progress=False)
    with RunStore(tmp_path / "run" / "run.sqlite") as store:
        assert store.count() == 0


def test_a_seeds_file_named_in_a_config_file_is_found_next_to_it(tmp_path, monkeypatch):
    from qd.config import load_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "seeds.jsonl").write_text(json.dumps({"angles": [0.1] * JOINTS}) + "\n")
    (tmp_path / "conf" / "run.toml").write_text('[run]\nseeds = "seeds.jsonl"\n[domain.options]\njoints = 4\n'
                                                '[operators]\nmutation = 1.0\n')
    monkeypatch.chdir(tmp_path)  # elsewhere: a path relative to the working directory would miss it
    config = load_config(tmp_path / "conf" / "run.toml")
    assert config["run"]["seeds"] == str(tmp_path / "conf" / "seeds.jsonl")
    assert load_seeds(config["run"]["seeds"], ArmDomain(joints=JOINTS)) == [{"angles": [0.1] * JOINTS}]


def test_an_operator_reference_resolves_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_ops.py").write_text(
        "from qd.operators import Mutation\n\n"
        "class Strong(Mutation):\n"
        "    def __init__(self, space, strength=1):\n"
        "        super().__init__(space, rate=1.0)\n"
        "        self.strength = strength\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ops = build_operators({"strong": {"operator": "my_ops:Strong", "strength": 3}}, ArmDomain(joints=JOINTS).space)
    assert ops["strong"][0].strength == 3 and ops["strong"][0].name == "strong"
    with pytest.raises(ConfigError, match=r"operators\.bad: operator 'my_ops:Strong:x': expected 'package.module"):
        arm_config({"bad": {"operator": "my_ops:Strong:x"}})
