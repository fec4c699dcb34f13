"""Hypothesis strategies for random search spaces and JSON-like values (shared by space/operator tests)."""
from __future__ import annotations

import math

from hypothesis import strategies as st

from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text
from qd.space.values import choice_key

keys = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
scalars = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.floats(-10, 10, allow_nan=False),
                    st.booleans(), st.none())


@st.composite
def floats(draw):
    log = draw(st.booleans())
    low = draw(st.floats(1e-4, 10)) if log else draw(st.floats(-100, 100))
    width = draw(st.floats(0.01, 100))
    return Float(low, low + width, log=log)


@st.composite
def texts(draw):
    min_len = draw(st.integers(0, 3))
    max_len = draw(st.integers(max(min_len, 1), 30))
    words = draw(st.lists(st.sampled_from(["be", "brief", "think", "step by", "answer\n", "ünï"]), max_size=6))
    default = " ".join(words)[:max_len]
    if len(default) < min_len:
        default = default + "x" * (min_len - len(default))
    return Text(max_len, min_len=min_len, default=default)


leaf_params = st.one_of(
    floats(),
    st.builds(lambda low, width: Int(low, low + width), st.integers(-50, 50), st.integers(1, 20)),
    st.lists(scalars, min_size=1, max_size=5, unique_by=choice_key).map(Categorical),
    st.just(Bool()),
    texts(),
)


def _seq(item, min_len, extra):
    return Seq(item, min_len, max(min_len + extra, 1))


params = st.recursive(
    leaf_params,
    lambda children: st.one_of(
        st.builds(_seq, children, st.integers(0, 3), st.integers(0, 2)),
        st.dictionaries(keys, children, min_size=1, max_size=3).map(Space),
    ),
    max_leaves=6,
)
spaces = st.dictionaries(keys, params, min_size=1, max_size=4).map(Space)

json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=4), children, max_size=4)),
    max_leaves=12,
)


def shuffled(value, rnd):
    """Same JSON value with every dict's key order permuted."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    return value


def is_close_config(a, b) -> bool:
    """Equal up to float rounding."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(is_close_config(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(is_close_config(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b
