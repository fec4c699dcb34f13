"""qd.space: sampling, validation, canonical form, walk, repair, unit maps and serialization."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from space_strategies import is_close_config, json_like, shuffled, spaces

from qd.space import (
    Bool,
    Categorical,
    Float,
    Int,
    Numeric,
    Param,
    Seq,
    Space,
    Text,
    UnitTransform,
    param_from_dict,
)
from qd.space.units import from_unit, to_unit

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def pipeline_space() -> Space:
    return Space({
        "temperature": Float(0.0, 2.0),
        "model": Categorical(["a", "b"]),
        "layers": Seq(Space({"model": Categorical(["a", "b"]), "k": Int(1, 8), "lr": Float(1e-5, 1e-1, log=True)}),
                      1, 4),
        "instruction": Text(200, default="Answer step by step."),
        "verify": Bool(),
    })


def valid_pipeline() -> dict:
    return {"temperature": 0.7, "model": "a",
            "layers": [{"model": "b", "k": 3, "lr": 1e-3}, {"model": "a", "k": 8, "lr": 0.1}],
            "instruction": "Be brief.", "verify": True}


# -- invariants over random spaces ---------------------------------------------------------------
@SETTINGS
@given(spaces, seeds)
def test_sampled_configs_validate_and_are_deterministic(space, seed):
    config = space.sample(np.random.default_rng(seed))
    assert space.validate(config) == []
    assert space.sample(np.random.default_rng(seed)) == config
    assert space.validate(space.default()) == []


@SETTINGS
@given(spaces, seeds, st.randoms(use_true_random=False))
def test_canonical_is_stable_and_round_trips(space, seed, rnd):
    config = space.sample(np.random.default_rng(seed))
    text = space.canonical(config)
    assert space.canonical(shuffled(config, rnd)) == text
    decoded = json.loads(text)
    assert decoded == config
    assert space.validate(decoded) == []
    assert space.canonical(decoded) == text
    assert space.hash(config) == hashlib.sha256(text.encode("utf-8")).hexdigest() == Space.digest(text)


def _at_path(value, path):
    for key in path:
        value = value[key]
    return value


@SETTINGS
@given(spaces, seeds, json_like)
def test_walk_visits_every_value_at_its_path(space, seed, junk):
    config = space.sample(np.random.default_rng(seed))
    pairs = list(space.walk(config))
    assert pairs[0] == ((), space, config)
    for path, param, value in pairs:
        assert _at_path(config, path) is value
        assert param.validate(value) == []
    # every dict key and list item of a valid config is visited exactly once
    paths = [path for path, _, _ in pairs]
    assert len(paths) == len(set(paths))
    children = [(*path, k) for path, _, v in pairs if isinstance(v, dict) for k in v]
    children += [(*path, i) for path, p, v in pairs if isinstance(p, Seq) for i in range(len(v))]
    assert sorted(map(repr, children)) == sorted(repr(p) for p in paths if p)
    # junk is walked without raising, and only what sits under declared keys is visited
    for bad in (junk, {k: junk for k in space.params}):
        for path, _, value in space.walk(bad):
            assert _at_path(bad, path) is value


@SETTINGS
@given(spaces, json_like, seeds)
def test_is_valid_agrees_with_validate(space, junk, seed):
    config = space.sample(np.random.default_rng(seed))
    for value in (config, junk, {k: junk for k in space.params}, {**config, "zz_unknown": 1}):
        assert space.is_valid(value) == (space.validate(value) == [])
        for _, param, sub in space.walk(value):
            assert param.is_valid(sub) == (param.validate(sub) == [])


@SETTINGS
@given(spaces, st.dictionaries(st.text(max_size=4), json_like, max_size=5), json_like, seeds)
def test_repair_never_raises_and_returns_valid(space, junk, fallback_junk, seed):
    # garbage under the real keys too, so that every parameter's repair sees odd values
    keyed = {k: v for k, v in zip(space.params, junk.values())}
    for config in (junk, keyed, {**keyed, **junk}):
        for fallback in (None, fallback_junk, space.sample(np.random.default_rng(seed))):
            repaired = space.repair(config, fallback=fallback if isinstance(fallback, dict) else None)
            assert space.validate(repaired) == []
            repaired = space.repair(config, fallback=fallback if isinstance(fallback, dict) else None,
                                    rng=np.random.default_rng(seed))
            assert space.validate(repaired) == []


@SETTINGS
@given(spaces, seeds, seeds)
def test_repair_keeps_valid_configs_and_does_not_alias(space, seed, other):
    config = space.sample(np.random.default_rng(seed))
    before = json.loads(json.dumps(config))
    fallback = space.sample(np.random.default_rng(other))
    repaired = space.repair(config, fallback=fallback)
    assert repaired == config
    assert config == before


@SETTINGS
@given(spaces, json_like)
def test_validate_empty_means_canonical_round_trips(space, junk):
    for config in ({k: junk for k in space.params}, junk):
        problems = space.validate(config)
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
        if not problems:
            assert json.loads(space.canonical(config)) == config


@SETTINGS
@given(spaces)
def test_to_dict_from_dict_round_trip(space):
    description = json.loads(json.dumps(space.to_dict()))
    rebuilt = Space.from_dict(description)
    assert rebuilt == space
    assert rebuilt.to_dict() == space.to_dict()
    assert rebuilt.to_prompt() == space.to_prompt()


@SETTINGS
@given(spaces, seeds)
def test_unit_maps_round_trip(space, seed):
    config = space.sample(np.random.default_rng(seed))
    leaves = [(param, value) for _, param, value in space.walk(config) if isinstance(param, Numeric)]
    unit = np.array([to_unit(param, value) for param, value in leaves])
    assert np.all((unit >= 0) & (unit <= 1))
    for (param, value), u in zip(leaves, unit):
        assert math.isclose(from_unit(param, u), value, rel_tol=1e-9, abs_tol=1e-9)
    units = UnitTransform(space)
    fast, key = units.unit_view(config)
    assert fast.shape == unit.shape and np.allclose(fast, unit)
    assert is_close_config(units.with_units(config, fast, key), config)
    assert is_close_config(units.with_units(config, fast), config)
    # any unit vector, even out of range, maps to a valid config
    wild = np.random.default_rng(seed).uniform(-0.5, 1.5, len(leaves))
    assert space.validate(units.with_units(config, wild, key)) == []


# -- validation messages --------------------------------------------------------------------------
def test_validate_reports_every_problem_with_its_path():
    space = pipeline_space()
    assert space.validate(valid_pipeline()) == []
    bad = {"temperature": 3.5, "model": "a", "extra": 1,
           "layers": [{"model": "a", "k": 2, "lr": 0.01}, {"model": "a", "k": 2, "lr": 0.01},
                      {"model": "gpt-9", "k": 2.0, "lr": 0.0}],
           "instruction": "x" * 201}
    problems = space.validate(bad)
    assert "temperature: 3.5 above high 2.0" in problems
    assert "layers[2].model: 'gpt-9' not in choices ['a', 'b']" in problems
    assert "layers[2].k: expected an integer, got float 2.0" in problems
    assert "layers[2].lr: 0.0 below low 1e-05" in problems
    assert "instruction: text length 201 above max_len 200" in problems
    assert "missing key 'verify'" in problems
    assert "unknown key 'extra'" in problems
    assert len(problems) == 7
    assert space.validate([1]) == ["expected a dict, got list [1]"]
    assert space.validate({**valid_pipeline(), "layers": []}) == ["layers: length 0 below min_len 1"]
    assert space.validate({**valid_pipeline(), "layers": [{}]}) == [
        "layers[0]: missing key 'model'", "layers[0]: missing key 'k'", "layers[0]: missing key 'lr'"]


def test_type_rules():
    f, i, b = Float(0, 10), Int(0, 10), Bool()
    assert f.validate(3) == [] and f.validate(3.5) == []
    assert f.validate(True) and i.validate(True) and i.validate(1.0)
    assert b.validate(1) == ["expected a bool, got int 1"] and b.validate(True) == []
    assert f.validate(float("nan")) == ["nan is not finite"]
    assert f.validate(float("inf")) == ["inf is not finite"]
    assert f.validate("1") == ["expected a number, got str '1'"]
    assert f.validate(np.float64(2.0)) == [] and i.validate(np.int64(2)) == []
    c = Categorical([1, True, None, "x", 2.5])
    assert c.validate(1) == [] and c.validate(1.0) == [] and c.validate(True) == [] and c.validate(None) == []
    assert Categorical([1]).validate(True) == ["True not in choices [1]"]
    assert Categorical(["x"]).validate(["x"]) == ["['x'] not in choices ['x']"]
    space = Space({"c": Categorical([1, 2]), "f": Float(0, 5)})
    assert space.canonical({"f": 1, "c": 1.0}) == '{"c":1,"f":1.0}'


def test_canonical_format_and_errors():
    space = pipeline_space()
    config = valid_pipeline()
    config["temperature"] = 1
    config["instruction"] = "Réponds brièvement."
    text = space.canonical(config)
    assert text.startswith('{"instruction":"Réponds brièvement.","layers":[{"k":3,"lr":0.001,"model":"b"}')
    assert '"temperature":1.0' in text and " " not in text.replace("Réponds brièvement.", "")
    assert space.hash(config) != space.hash(valid_pipeline())
    with pytest.raises(ValueError, match="configuration is not canonical JSON: Out of range float values"):
        space.canonical({**config, "temperature": float("nan")})


@pytest.mark.parametrize("make, message", [
    (lambda: Float(1, 1), "low < high"),
    (lambda: Float(2, 1), "low < high"),
    (lambda: Float(0, 1, log=True), "low > 0"),
    (lambda: Float(0, math.inf), "finite"),
    (lambda: Float("a", 1), "numbers"),
    (lambda: Int(3, 3), "low < high"),
    (lambda: Int(0.5, 3), "integers"),
    (lambda: Categorical([]), "at least one"),
    (lambda: Categorical(["a", "a"]), "duplicate"),
    (lambda: Categorical([1, 1.0]), "duplicate"),
    (lambda: Categorical([[1]]), "JSON scalars"),
    (lambda: Categorical("ab"), "list"),
    (lambda: Text(3, min_len=4), "min_len"),
    (lambda: Text(3, default="toolong"), "default"),
    (lambda: Seq(Bool(), 3, 2), "min_len"),
    (lambda: Seq(Bool(), -1, 2), "min_len"),
    (lambda: Space({}), "at least one"),
    (lambda: Space({"a": 3}), "'a'"),
    (lambda: param_from_dict({"type": "nope"}), "unknown parameter type"),
])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_to_prompt_is_compact():
    assert pipeline_space().to_prompt() == (
        '{"temperature": float in [0.0, 2.0], "model": one of ["a","b"], "layers": list of 1..4 × '
        '{"model": one of ["a","b"], "k": int in [1, 8], "lr": float in [1e-05, 0.1] (log scale)}, '
        '"instruction": text ≤ 200 chars, "verify": bool}')
    assert Seq(Float(0, 1), 3, 3).to_prompt() == "list of 3 × float in [0.0, 1.0]"


# -- repair of LLM output ---------------------------------------------------------------------------
def test_repair_coerces_llm_output():
    space = pipeline_space()
    parent = valid_pipeline()
    llm = {"Temperature": "0.5", "model": " B ", "instruction": "y" * 300, "verify": "yes", "extra": [1],
           "layers": [{"model": "aa", "k": "3", "lr": "1e-9"}, {"model": "A", "k": 9.6, "lr": 0.5},
                      {"model": "zzz", "k": True, "lr": None}, {}, {}]}
    parent["layers"].append({"model": "b", "k": 5, "lr": 1e-4})
    repaired = space.repair(llm, fallback=parent)
    assert space.validate(repaired) == []
    assert repaired["temperature"] == 0.5
    assert repaired["model"] == "b"
    assert repaired["instruction"] == "y" * 200
    assert repaired["verify"] is True
    assert "extra" not in repaired
    assert len(repaired["layers"]) == 4
    assert repaired["layers"][0] == {"model": "a", "k": 3, "lr": 1e-5}
    assert repaired["layers"][1] == {"model": "a", "k": 8, "lr": 0.1}
    # hopeless values fall back to the parent's item at the same index
    assert repaired["layers"][2] == {"model": "b", "k": 5, "lr": 1e-4}
    # beyond the parent's items: the item's default
    assert repaired["layers"][3] == space["layers"].item.default()


def test_repair_fills_missing_and_pads():
    space = pipeline_space()
    assert space.repair({}) == space.default()
    assert space.repair({"verify": "no", "temperature": 7}, fallback=valid_pipeline()) == {
        **valid_pipeline(), "verify": False, "temperature": 2.0}
    # layers as a JSON string, padded from the fallback
    repaired = space.repair({"layers": "[]"}, fallback={"layers": [{"model": "b", "k": "2"}]})
    assert repaired["layers"] == [{"model": "b", "k": 2, "lr": Float(1e-5, 1e-1, log=True).default()}]
    sampled = space.repair({"layers": []}, rng=np.random.default_rng(0))
    assert len(sampled["layers"]) == 1 and space.validate(sampled) == []
    with pytest.raises(ValueError, match="expects a dict"):
        space.repair([valid_pipeline()])


def test_repair_leaves_and_snapping():
    assert Float(0, 1).repair("0.25") == 0.25
    assert Float(0, 1).repair("'0.25',") == 0.25
    assert Float(0, 1).repair(float("inf")) == 1.0
    assert Float(0, 1).repair(10**400) == 1.0
    assert Float(0, 1).repair(float("nan"), 0.3) == 0.3
    assert Float(0, 1).repair(True) == 0.5
    assert Int(0, 10).repair(" 7 ") == 7 and Int(0, 10).repair(2.5) == 2 and Int(0, 10).repair(-3) == 0
    assert Bool().repair(1) is True and Bool().repair("FALSE") is False and Bool().repair("maybe", True) is True
    cat = Categorical(["gpt-4o", "gpt-4o-mini", "claude"])
    assert cat.repair("GPT-4o") == "gpt-4o"
    assert cat.repair("claud") == "claude"
    assert cat.repair("totally different", "claude") == "claude"
    assert Categorical([1, 3, 5]).repair("3") == 3 and Categorical([1, 3, 5]).repair(3.9) == 3
    assert Categorical([1, 3]).repair(2) == 1  # equidistant: not unambiguous, falls back to the default
    assert Categorical([None, True]).repair("null") is None and Categorical([None, True]).repair("true") is True
    assert Text(5).repair(12) == "12" and Text(5, min_len=2, default="ok").repair("a") == "ok"
    assert Seq(Int(0, 3), 2, 3).repair([9, "1", 2, 2]) == [3, 1, 2]


def test_a_value_that_breaks_a_repair_rule_gets_the_fallback():
    # 10**400 has no float: measuring its distance to the numeric choices raises OverflowError inside the
    # categorical rule; the value is replaced like any other hopeless one (fallback, else default)
    assert Categorical([1, 2]).repair(10**400, 2) == 2 and Categorical([1, 2]).repair(10**400) == 1
    assert Seq(Categorical([1, 2]), 1, 3).repair([10**400, 2.2, "1"], [2]) == [2, 2, 1]


# -- unit maps ------------------------------------------------------------------------------------------
def test_unit_maps_are_log_aware_and_round_ints():
    space = Space({"lr": Float(1e-4, 1e-2, log=True), "n": Int(0, 10), "x": Float(-1, 1),
                   "s": Seq(Space({"k": Int(1, 3), "flag": Bool()}), 0, 3)})
    config = {"lr": 1e-3, "n": 4, "x": 0.0, "s": [{"k": 1, "flag": True}, {"k": 3, "flag": False}]}
    paths = [path for path, param, _ in space.walk(config) if isinstance(param, Numeric)]
    assert paths == [("lr",), ("n",), ("x",), ("s", 0, "k"), ("s", 1, "k")]
    units = UnitTransform(space)
    unit, key = units.unit_view(config)
    assert key == (2,) and np.allclose(unit, [0.5, 0.4, 0.5, 0.0, 1.0])
    moved = units.with_units(config, [1.2, 0.46, -3, 0.74, 0.26], key)
    assert moved == {"lr": 1e-2, "n": 5, "x": -1.0, "s": [{"k": 2, "flag": True}, {"k": 2, "flag": False}]}
    assert type(moved["n"]) is int and config["n"] == 4  # a copy
    assert moved["s"][0] is not config["s"][0]
    assert to_unit(space["lr"], 1e-3) == pytest.approx(0.5) and from_unit(space["n"], 0.46) == 5
    with pytest.raises(ValueError, match="1 unit values for 5 numeric leaves"):
        units.with_units(config, [0.5], key)
    with pytest.raises(ValueError, match="needs a qd.space.Space"):
        UnitTransform(Float(0, 1))


def test_space_helpers():
    space = pipeline_space()
    assert list(space) == ["temperature", "model", "layers", "instruction", "verify"]
    assert len(space) == 5 and isinstance(space["layers"], Seq)
    nested = Space({"retriever": {"k": Int(1, 5)}})
    assert isinstance(nested["retriever"], Space)
    assert repr(Float(0, 1)) == "Float(low=0.0, high=1.0, log=False)"
    assert Space.from_dict({"x": {"type": "bool"}}) == Space({"x": Bool()})


def test_sample_covers_the_range():
    rng = np.random.default_rng(1)
    space = Space({"lr": Float(1e-6, 1.0, log=True), "n": Int(1, 3), "s": Seq(Bool(), 0, 2)})
    samples = [space.sample(rng) for _ in range(400)]
    assert {s["n"] for s in samples} == {1, 2, 3}
    assert {len(s["s"]) for s in samples} == {0, 1, 2}
    # log-uniform: about half the samples below the geometric midpoint 1e-3
    assert 0.35 < np.mean([s["lr"] < 1e-3 for s in samples]) < 0.65


def test_walk_order_and_invalid_configs():
    space = pipeline_space()
    walked = [(path, param.kind) for path, param, _ in space.walk(valid_pipeline())]
    assert walked == [
        ((), "space"), (("temperature",), "float"), (("model",), "categorical"), (("layers",), "seq"),
        (("layers", 0), "space"), (("layers", 0, "model"), "categorical"), (("layers", 0, "k"), "int"),
        (("layers", 0, "lr"), "float"),
        (("layers", 1), "space"), (("layers", 1, "model"), "categorical"), (("layers", 1, "k"), "int"),
        (("layers", 1, "lr"), "float"),
        (("instruction",), "text"), (("verify",), "bool")]
    # missing keys are skipped, unknown keys ignored, a non-list Seq value is not descended into
    walked = [path for path, _, _ in space.walk({"layers": "[]", "extra": [1], "verify": 3})]
    assert walked == [(), ("layers",), ("verify",)]


def test_categorical_index_is_type_aware():
    c = Categorical(["a", 1, True, None, 2.5])
    assert [c.index(v) for v in ("a", 1, 1.0, np.int64(1), True, np.bool_(True), None, 2.5)] == [0, 1, 1, 1, 2, 2, 3, 4]
    assert c.index("A") is None and c.index(2) is None and c.index([1]) is None and c.index(float("nan")) is None


def test_repair_and_prompt_name_an_unknown_parameter_kind():
    class Odd(Param):
        kind = "odd"

    with pytest.raises(ValueError, match="cannot render parameter kind 'odd'"):
        Odd().to_prompt()
    with pytest.raises(ValueError, match="cannot repair values of parameter kind 'odd'"):
        Odd().repair(1)


def test_minus_zero_and_zero_are_one_configuration():
    space = Space({"t": Float(-1.0, 1.0), "k": Int(-3, 3)})
    assert space.canonical({"t": -0.0, "k": 0}) == space.canonical({"t": 0.0, "k": 0}) == '{"k":0,"t":0.0}'
    assert space.hash({"t": -0.0, "k": 0}) == space.hash({"t": 0.0, "k": 0})
