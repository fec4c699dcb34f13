"""Configurations of flat numeric spaces as bytes (qd.space.Layout): one identity with the canonical JSON.

The scheduler dedups and the run store keeps such configurations by their bytes; these tests hold
the bytes to the JSON they replace: equal exactly when the canonical texts are equal, and read back
to the same configuration, text and hash.
"""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from space_strategies import floats, keys

from qd.keyset import key_of, key_of_bytes
from qd.space import Bool, Categorical, Float, Int, Layout, Seq, Space, Text
from qd.store import _ENCODER, _json

numeric_leaves = st.one_of(floats(), st.builds(lambda low, width: Int(low, low + width), st.integers(-50, 50),
                                               st.integers(1, 20)))
flat_params = st.one_of(numeric_leaves, st.builds(lambda item, n: Seq(item, n, n), numeric_leaves,
                                                  st.integers(1, 4)))
flat_spaces = st.dictionaries(keys, flat_params, min_size=1, max_size=4).map(Space)


def _with_variants(space: Space, config: dict, rnd) -> dict:
    """``config`` with values written another way that canonicalises the same (-0.0, ints for Floats)."""
    def variant(param, value):
        if isinstance(param, Seq):
            return [variant(param.item, v) for v in value]
        if isinstance(param, Float) and value == 0.0:
            return rnd.choice([0.0, -0.0, 0]) if param.low <= 0 <= param.high else value
        if isinstance(param, Float) and float(value).is_integer() and rnd.random() < 0.5:
            return int(value)
        return value
    return {k: variant(space[k], v) for k, v in config.items()}


@st.composite
def spaces_and_pairs(draw):
    """A flat numeric space and two valid configurations, the second often a near or exact repeat."""
    space = draw(flat_spaces)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = space.sample(rng)
    if draw(st.booleans()):  # snap some Float values to zero or to integers, where repeats are likeliest
        for key, param in space.params.items():
            item = param.item if isinstance(param, Seq) else param
            if isinstance(item, Float) and item.low <= 0 <= item.high:
                a[key] = [0.0] * len(a[key]) if isinstance(param, Seq) else 0.0
    choice = draw(st.sampled_from(["same", "variant", "other", "one value"]))
    rnd = draw(st.randoms(use_true_random=False))
    if choice == "same":
        b = json.loads(json.dumps(a))
    elif choice == "variant":
        b = _with_variants(space, a, rnd)
    elif choice == "other":
        b = space.sample(rng)
    else:  # one leaf moved by one step of its type
        b = json.loads(json.dumps(a))
        key = rnd.choice(sorted(space.params))
        param = space[key]
        value = space.sample(rng)[key]
        if isinstance(param, Seq):
            if b[key]:
                b[key][0] = value[0]
        else:
            b[key] = value
        assert space.is_valid(b)
    return space, a, b


@settings(max_examples=300, deadline=None)
@given(spaces_and_pairs())
def test_bytes_are_equal_exactly_when_the_canonical_json_is(case):
    space, a, b = case
    layout = Layout.of(space)
    assert layout is not None and space.is_valid(a) and space.is_valid(b)
    assert (layout.pack(a) == layout.pack(b)) == (space.canonical(a) == space.canonical(b))
    assert (key_of_bytes(layout.pack(a)) == key_of_bytes(layout.pack(b))) == (space.hash(a) == space.hash(b))
    assert len(layout.pack(a)) == layout.size


@settings(max_examples=200, deadline=None)
@given(spaces_and_pairs())
def test_bytes_read_back_to_the_configuration_its_text_and_its_hash(case):
    space, a, _ = case
    layout = Layout.of(space)
    back = layout.unpack(layout.pack(a))
    assert layout.canonical(back) == space.canonical(a)
    assert space.hash(back) == space.hash(a)
    assert back == json.loads(space.canonical(a))  # the dict the stored JSON gave, keys in the same order
    assert list(back) == list(json.loads(space.canonical(a)))
    assert Layout.from_list(json.loads(json.dumps(layout.to_list()))) == layout


def test_negative_zero_and_an_int_given_for_a_float_are_the_same_configuration():
    space = Space({"t": Float(-1.0, 1.0), "k": Int(-3, 3), "v": Seq(Float(0.0, 2.0), 2, 2)})
    layout = Layout.of(space)
    a, b = {"t": -0.0, "k": 0, "v": [1, 0.5]}, {"t": 0.0, "k": 0, "v": [1.0, 0.5]}
    assert space.canonical(a) == space.canonical(b) and layout.pack(a) == layout.pack(b)
    assert layout.pack({"t": 0.0, "k": 1, "v": [1.0, 0.5]}) != layout.pack(b)
    # a plain float in a Seq is kept as Space.canonical keeps it, -0.0 included: the bytes follow the text
    c, d = {"t": 0.0, "k": 0, "v": [-0.0, 0.5]}, {"t": 0.0, "k": 0, "v": [0.0, 0.5]}
    assert (space.canonical(c) == space.canonical(d)) == (layout.pack(c) == layout.pack(d))
    assert key_of_bytes(layout.pack(a)) == key_of(hashlib.sha256(layout.pack(a)).hexdigest())  # key_of's rule


@pytest.mark.parametrize("space", [
    Space({"x": Float(0, 1), "c": Categorical(["a", "b"])}),
    Space({"x": Float(0, 1), "b": Bool()}),
    Space({"x": Float(0, 1), "t": Text(10)}),
    Space({"v": Seq(Float(0, 1), 1, 3)}),  # variable length
    Space({"inner": Space({"x": Float(0, 1)})}),  # nested
    Space({"big": Int(0, 2**70)}),  # beyond int64
])
def test_spaces_other_than_flat_numeric_ones_have_no_layout(space):
    assert Layout.of(space) is None


def test_the_arm_has_a_layout_of_its_angles():
    from qd.domains.arm import ArmDomain

    layout = Layout.of(ArmDomain(joints=7).space)
    assert layout.to_list() == [["angles", "f", 7]] and layout.size == 56


number_dicts = st.dictionaries(st.text(max_size=5), st.one_of(
    st.floats(), st.integers(-2**70, 2**70), st.booleans(), st.none(), st.text(max_size=3)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.one_of(number_dicts, st.dictionaries(st.sampled_from(["x", "y", "eval_s"]), st.floats(), max_size=3),
                 st.lists(st.integers(), max_size=3)))
def test_the_stores_json_of_flat_dicts_is_the_encoders(value):
    for _ in range(2):  # the second time from the template the first one left
        assert _json(value) == _ENCODER.encode(value)
    if isinstance(value, dict) and all(isinstance(v, float) and math.isfinite(v) for v in value.values()):
        assert json.loads(_json(value)) == value
