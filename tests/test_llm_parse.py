"""operators.parse: JSON extraction from model text, repair and validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qd.operators.parse import ParseError, extract_json_object, parse_config
from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text

SPACE = Space({
    "temperature": Float(0.0, 2.0),
    "top_p": Float(1e-3, 1.0, log=True),
    "n": Int(1, 16),
    "strategy": Categorical(["cot", "direct", "vote"]),
    "verify": Bool(),
    "prompt": Text(40),
    "layers": Seq(Space({"model": Categorical(["small", "large"]), "k": Int(1, 4)}), 1, 3),
})
PARENT = SPACE.sample(np.random.default_rng(0))


@pytest.mark.parametrize("text, expected", [
    ('Sure:\n```json\n{"a": 1, "b": [1, 2,],}\n```\nDone.', {"a": 1, "b": [1, 2]}),
    ("{'a': 'it\\'s', 'b': True, 'c': None}", {"a": "it's", "b": True, "c": None}),
    ('text {"a": {"b": 1}, "c": "}{", "d": 2', {"a": {"b": 1}, "c": "}{"}),  # cut off: keep complete members
    ('{"a": [1, {"b": 2}, 3', {"a": [1, {"b": 2}]}),
    ('{"t": NaN, "u": 1}', {"t": None, "u": 1}),
    ('{} and then {"a": 1}', {"a": 1}),
    ('It\'s here: {"a": "x"} and {"b": 2}', {"a": "x"}),
    ('{"quote": "say \\"hi\\"", "n": -1.5e2}', {"quote": 'say "hi"', "n": -150.0}),
])
def test_extract_tolerates_common_model_output(text, expected):
    assert extract_json_object(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", "{" * 3000, '{"a":' + "[" * 3000, "}{", "[1, 2]"])
def test_extract_raises_parse_error(text):
    with pytest.raises(ParseError):
        extract_json_object(text)


def test_parse_config_repairs_and_fills_from_parent():
    text = ('Here you go: {"temperature": 3.7, "n": 4.6, "strategy": "VOTE", "verify": "true", '
            '"unknown": 1, "layers": [{"model": "large", "k": 9}]}')
    config = parse_config(text, SPACE, fallback=PARENT)
    assert SPACE.validate(config) == []
    assert config["temperature"] == 2.0 and config["n"] == 5 and config["strategy"] == "vote"
    assert config["verify"] is True and "unknown" not in config
    assert config["layers"] == [{"model": "large", "k": 4}]
    assert config["prompt"] == PARENT["prompt"] and config["top_p"] == PARENT["top_p"]


def test_parse_config_truncated_output_keeps_parent_for_the_rest():
    full = json.dumps({**PARENT, "n": 16, "strategy": "cot"})
    cut = full[: full.index('"strategy"') + 14]  # cut inside the strategy value
    config = parse_config(cut, SPACE, fallback=PARENT)
    assert SPACE.validate(config) == []
    assert config["n"] == 16


def test_parse_config_without_object_raises():
    with pytest.raises(ParseError, match="no JSON object"):
        parse_config("I think a temperature of 0.5 would be best.", SPACE, fallback=PARENT)


def _noisy(obj_strategy):
    """Model-like text around a JSON-ish object: prose, fences, quote style, truncation."""
    @st.composite
    def build(draw):
        obj = draw(obj_strategy)
        text = json.dumps(obj, allow_nan=True)
        if draw(st.booleans()):
            text = text.replace('"', "'")
        if draw(st.booleans()):
            text = text[: draw(st.integers(0, len(text)))]
        if draw(st.booleans()):
            text = "```json\n" + text + "\n```"
        return draw(st.text(max_size=20)) + text + draw(st.text(max_size=20))
    return build()


leaf = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=12)
values = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["model", "k", "x"]), inner, max_size=3), max_leaves=12)
configs = st.dictionaries(st.sampled_from(sorted(SPACE.params) + ["extra"]), values, max_size=9)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), _noisy(configs)), st.booleans())
def test_parse_config_never_raises_other_errors_or_returns_invalid(text, with_fallback):
    fallback = PARENT if with_fallback else None
    try:
        config = parse_config(text, SPACE, fallback=fallback)
    except ParseError:
        return
    assert SPACE.validate(config) == []
    json.dumps(config, allow_nan=False)  # finite, plain JSON


# Text made of JSON's structural characters, quotes, literals and numbers: drives the scanner,
# the truncation salvage and the normalizer through their odd corners far more often than
# arbitrary unicode does.
json_ish = st.lists(st.sampled_from(['{', '}', '[', ']', '"', "'", ',', ':', ' ', '\n', '\\', 'True', 'null',
                                     'NaN', '-1e999', '3.5', '"temperature"', '"n"', '"strategy"', '"vote"',
                                     '"layers"', '"model"', '"k"', 'x']), max_size=60).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_ish, st.booleans())
def test_parse_config_on_json_like_noise(text, with_fallback):
    try:
        config = parse_config(text, SPACE, fallback=PARENT if with_fallback else None)
    except ParseError as exc:
        assert isinstance(exc.problems, list)
        return
    assert SPACE.validate(config) == []
    json.dumps(config, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_extract_only_raises_parse_error_and_returns_dicts(text):
    try:
        obj = extract_json_object(text)
    except ParseError:
        return
    assert isinstance(obj, dict)
