"""Classic operators: validity over random spaces, determinism and each operator's own behaviour."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from space_strategies import spaces

import qd.operators
from qd.operators import CLASSIC, Gaussian, IsoLineDD, Mutation, Operator, Parent, UniformCrossover
from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text, UnitTransform

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def mixed_space() -> Space:
    return Space({
        "temperature": Float(0.0, 2.0),
        "lr": Float(1e-5, 1e-1, log=True),
        "model": Categorical(["a", "b", "c"]),
        "layers": Seq(Space({"k": Int(1, 8), "fuse": Bool(), "prompt": Text(40, default="rank the answers")}), 1, 4),
        "instruction": Text(30, min_len=5, default="Answer step by step."),
    })


def parents_of(space: Space, rng: np.random.Generator, n: int = 2) -> list[Parent]:
    return [Parent(config=space.sample(rng), fitness=0.0, measures={}) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(CLASSIC))
@SETTINGS
@given(space=spaces, seed=seeds)
def test_offspring_always_validate_and_are_deterministic(name, space, seed):
    op = CLASSIC[name](space)
    rng = np.random.default_rng(seed)
    parents = parents_of(space, rng)
    for _ in range(3):
        state = rng.bit_generator.state
        children = op.vary(parents, rng)
        assert len(children) == 1
        for child in children:
            assert space.validate(child) == [], (space.to_prompt(), parents[0].config, child)
        rng2 = np.random.default_rng()
        rng2.bit_generator.state = state
        assert op.vary(parents, rng2) == children
        parents = [Parent(children[0], 0.0, {}), parents[0]]


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_parents_are_not_modified(name):
    space = mixed_space()
    rng = np.random.default_rng(3)
    parents = parents_of(space, rng)
    before = [space.canonical(p.config) for p in parents]
    for _ in range(50):
        children = CLASSIC[name](space, children=2).vary(parents, rng)
        assert len(children) == 2
        for child in children:
            child["layers"].append("mutated")  # must not reach the parents through shared lists
    assert [space.canonical(p.config) for p in parents] == before


def test_registry_and_protocol():
    assert set(CLASSIC) == {"gaussian", "iso_line_dd", "mutation", "uniform_crossover"}
    space = mixed_space()
    for name, cls in CLASSIC.items():
        op = cls(space)
        assert op.name == name and isinstance(op, Operator) and op.uses_llm is False
        assert op.num_parents == (2 if name in ("iso_line_dd", "uniform_crossover") else 1)
    assert qd.operators.Parent is Parent
    with pytest.raises(ValueError, match="sigma must be a number > 0, got 0"):
        Gaussian(space, sigma=0)
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\] \(left out: 1 / sites\), got 1.5"):
        Mutation(space, rate=1.5)
    with pytest.raises(ValueError, match="expected a qd.space.Space, got dict"):
        IsoLineDD({"x": Float(0, 1)})
    with pytest.raises(ValueError, match="children must be an integer >= 1, got 0"):
        UniformCrossover(space, children=0)


# -- Iso+LineDD ---------------------------------------------------------------------------------------
def test_iso_line_dd_follows_the_line_between_parents():
    space = Space({f"x{i}": Float(-1.0, 1.0) for i in range(6)})
    p1 = {f"x{i}": -0.2 for i in range(6)}
    p2 = {f"x{i}": 0.2 * (i % 2) for i in range(6)}
    rng = np.random.default_rng(0)
    op = IsoLineDD(space, iso_sigma=0.0, line_sigma=0.2)
    units = UnitTransform(space)
    u1, _ = units.unit_view(p1)
    u2, _ = units.unit_view(p2)
    ts = []
    for _ in range(300):
        child, _ = units.unit_view(op.vary([Parent(p1, 0, {}), Parent(p2, 0, {})], rng)[0])
        t = (child - u1) / (u2 - u1)
        assert np.allclose(t, t[0])  # on the line through both parents
        ts.append(t[0])
    assert abs(np.std(ts) - 0.2) < 0.03 and abs(np.mean(ts)) < 0.05


def test_iso_line_dd_isotropic_noise_and_clamping():
    space = Space({"angles": Seq(Float(-math.pi, math.pi), 20, 20)})
    p = {"angles": [0.0] * 20}
    rng = np.random.default_rng(1)
    op = IsoLineDD(space, iso_sigma=0.05, line_sigma=0.0)
    deltas = np.array([UnitTransform(space).unit_view(op.vary([Parent(p, 0, {}), Parent(p, 0, {})], rng)[0])[0] - 0.5
                       for _ in range(200)])
    assert abs(deltas.std() - 0.05) < 0.005
    edge = {"angles": [math.pi] * 20}
    child = IsoLineDD(space, iso_sigma=0.5).vary([Parent(edge, 0, {}), Parent(edge, 0, {})], rng)[0]
    assert space.validate(child) == [] and max(child["angles"]) == math.pi


def test_iso_line_dd_keeps_first_parents_structure():
    space = Space({"xs": Seq(Float(0.0, 1.0), 1, 5), "n": Int(0, 100)})
    p1, p2 = {"xs": [0.5, 0.5], "n": 50}, {"xs": [0.1, 0.9, 0.3], "n": 0}
    rng = np.random.default_rng(2)
    op = IsoLineDD(space, iso_sigma=0.01, line_sigma=5.0)
    for _ in range(50):
        child = op.vary([Parent(p1, 0, {}), Parent(p2, 0, {})], rng)[0]
        assert len(child["xs"]) == 2 and space.validate(child) == []
        assert abs(child["n"] - 50) <= 5  # no line term when the structures differ
    assert type(child["n"]) is int


def test_iso_line_dd_mutates_non_numeric_leaves_sometimes():
    space = mixed_space()
    rng = np.random.default_rng(4)
    parents = parents_of(space, rng)
    changed = 0
    for _ in range(200):
        child = IsoLineDD(space).vary(parents, rng)[0]
        changed += child["model"] != parents[0].config["model"]
    assert 0 < changed < 100
    only_cats = Space({"m": Categorical(["a", "b"]), "flag": Bool()})
    parent = Parent({"m": "a", "flag": False}, 0, {})
    assert IsoLineDD(only_cats).vary([parent, parent], rng)[0] != parent.config  # falls back to Mutation


# -- Gaussian -------------------------------------------------------------------------------------------
def test_gaussian_moves_numeric_leaves_in_unit_space():
    space = Space({"x": Float(0.0, 10.0), "lr": Float(1e-4, 1.0, log=True), "n": Int(0, 1000)})
    parent = {"x": 5.0, "lr": 1e-2, "n": 500}
    rng = np.random.default_rng(5)
    children = [Gaussian(space, sigma=0.1).vary([Parent(parent, 0, {})], rng)[0] for _ in range(400)]
    assert all(type(c["n"]) is int and space.validate(c) == [] for c in children)
    assert abs(np.std([c["x"] for c in children]) - 1.0) < 0.1
    assert abs(np.std([math.log10(c["lr"]) for c in children]) - 0.4) < 0.05  # 0.1 of 4 decades
    assert abs(np.std([c["n"] for c in children]) - 100) < 10


# -- Mutation -------------------------------------------------------------------------------------------
def test_mutation_always_changes_something_and_respects_bounds():
    space = mixed_space()
    rng = np.random.default_rng(6)
    parent = space.sample(rng)
    op = Mutation(space)
    lengths, models = set(), set()
    for _ in range(300):
        child = op.vary([Parent(parent, 0, {})], rng)[0]
        assert child != parent and space.validate(child) == []
        lengths.add(len(child["layers"]))
        models.add(child["model"])
        parent = child
    assert lengths == {1, 2, 3, 4} and models == {"a", "b", "c"}


def test_mutation_of_each_leaf_type():
    rng = np.random.default_rng(7)
    for param, value in [(Categorical(["a", "b", "c"]), "b"), (Bool(), True), (Int(0, 3), 3), (Float(0, 1), 1.0),
                         (Text(40, default="x"), "think step by step\nthen answer")]:
        space = Space({"v": param})
        seen = set()
        for _ in range(100):
            child = Mutation(space).vary([Parent({"v": value}, 0, {})], rng)[0]["v"]
            assert child != value and space.validate({"v": child}) == []
            seen.add(child)
        if isinstance(param, Categorical):
            assert seen == {"a", "c"}
        if isinstance(param, Int):
            assert seen <= {0, 1, 2} and 2 in seen
        if isinstance(param, Text):
            assert all("\n" in t for t in seen)  # words move, the whitespace layout stays
    # a text at max_len cannot grow: duplicating is ruled out, deleting or swapping still works
    text_space = Space({"t": Text(11, default="")})
    for _ in range(50):
        child = Mutation(text_space).vary([Parent({"t": "hello world"}, 0, {})], rng)[0]["t"]
        assert child in {"hello", "world", "world hello"}


def test_mutation_rate_one_touches_every_leaf():
    space = Space({f"b{i}": Bool() for i in range(10)})
    parent = {f"b{i}": False for i in range(10)}
    child = Mutation(space, rate=1.0).vary([Parent(parent, 0, {})], np.random.default_rng(0))[0]
    assert all(child.values())


# -- UniformCrossover ---------------------------------------------------------------------------------
def test_uniform_crossover_takes_each_leaf_from_a_parent():
    space = Space({"xs": Seq(Int(0, 100), 1, 6), "m": Categorical(["a", "b"]),
                   "sub": {"f": Float(0, 1), "t": Text(10)},
                   "layers": Seq(Space({"k": Int(0, 9), "flag": Bool()}), 1, 3)})
    a = {"xs": [1, 2, 3, 4], "m": "a", "sub": {"f": 0.0, "t": "aa"}, "layers": [{"k": 1, "flag": True}]}
    b = {"xs": [50, 60], "m": "b", "sub": {"f": 1.0, "t": "bb"},
         "layers": [{"k": 9, "flag": False}, {"k": 8, "flag": False}]}
    rng = np.random.default_rng(8)
    op = UniformCrossover(space)
    mixes = set()
    for _ in range(200):
        child = op.vary([Parent(a, 0, {}), Parent(b, 0, {})], rng)[0]
        assert space.validate(child) == []
        assert child["xs"][0] in (1, 50) and child["xs"][1] in (2, 60)
        assert child["xs"][2:] in ([], [3, 4])
        assert child["sub"]["f"] in (0.0, 1.0) and child["sub"]["t"] in ("aa", "bb")
        assert child["layers"][0]["k"] in (1, 9) and child["layers"][0]["flag"] in (True, False)
        mixes.add((child["m"], child["sub"]["t"], len(child["xs"])))
    assert len(mixes) == 8
    single = op.vary([Parent(a, 0, {})], rng)[0]
    assert single != a and space.validate(single) == []


def test_sigmas_in_value_units_are_divided_by_each_parameters_range():
    """One sigma in the parameters' own units: a 10-wide and a 1000-wide leaf move by the same amount."""
    space = Space({"a": Float(0.0, 10.0), "b": Float(0.0, 1000.0)})
    parent = [Parent({"a": 5.0, "b": 500.0})]
    rng = np.random.default_rng(0)
    for op in (IsoLineDD(space, iso_sigma=0.5, line_sigma=0.0, sigma_units="value"),
               Gaussian(space, sigma=0.5, sigma_units="value"),
               Mutation(space, sigma=0.5, rate=1.0, sigma_units="value")):
        children = [op.vary(parent, rng)[0] for _ in range(2000)]
        for key, centre in (("a", 5.0), ("b", 500.0)):
            sd = float(np.std([c[key] - centre for c in children]))
            assert 0.45 < sd < 0.55, (type(op).__name__, key, sd)


def test_value_units_match_unit_units_scaled_by_the_range():
    space = Space({"angles": Seq(Float(-math.pi, math.pi), 6, 6), "n": Int(0, 100)})
    parents = [Parent(space.sample(np.random.default_rng(s))) for s in (1, 2)]
    by_value = IsoLineDD(space, iso_sigma=0.1, sigma_units="value")
    by_unit = IsoLineDD(space, iso_sigma=0.1 / (2 * math.pi))  # the angles' range is 2 pi; n's is 100
    child = by_value.vary(parents, np.random.default_rng(9))[0]
    assert child["angles"] == by_unit.vary(parents, np.random.default_rng(9))[0]["angles"]
    with pytest.raises(ValueError, match="sigma_units must be 'unit' or 'value'"):
        IsoLineDD(space, sigma_units="radians")
