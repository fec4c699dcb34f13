"""operators.parse: JSON extraction from model text, repair and validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qd.operators.parse import ParseError, extract_json_object, extract_pairs, parse_config, render_pairs, short_number
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


# -- key=value pairs: the line format of flat spaces -------------------------------------------------
FLAT = Space({
    "temperature": Float(0.0, 2.0),
    "top_p": Float(1e-3, 1.0, log=True),
    "n": Int(1, 16),
    "strategy": Categorical(["cot", "direct", "two words", 'say "x"']),
    "verify": Bool(),
    "prompt": Text(40),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), prompt=st.text(max_size=40))
@example(seed=0, prompt="\\")  # a text ending in a backslash: its closing quote looked escaped
@example(seed=0, prompt='a\\"')
@example(seed=0, prompt="a\nb")  # a newline in the text stays escaped in the one line
@example(seed=0, prompt="{}")  # braces in a text value: read as the pairs they are, not as a JSON object
def test_pairs_round_trip_up_to_float_rounding(seed, prompt):
    config = {**FLAT.sample(np.random.default_rng(seed)), "prompt": prompt}
    line = render_pairs(FLAT, config)
    assert "\n" not in line  # texts are JSON strings: one line, whatever the text holds
    back = parse_config(line, FLAT)
    assert {k: v for k, v in back.items() if k not in ("temperature", "top_p")} == \
        {k: v for k, v in config.items() if k not in ("temperature", "top_p")}
    assert back["temperature"] == pytest.approx(config["temperature"], abs=0.011)
    assert back["top_p"] == pytest.approx(config["top_p"], rel=0.06)


def test_pairs_tolerate_separators_case_and_a_cut_off_text():
    text = 'temperature=0.5, n=3; strategy=DIRECT| verify=yes prompt="cut off'
    assert extract_pairs(text, FLAT) == {"temperature": "0.5", "n": "3", "strategy": "DIRECT", "verify": "yes",
                                         "prompt": "cut off"}
    assert parse_config(text, FLAT, fallback=FLAT.default())["strategy"] == "direct"


def test_pairs_drop_values_their_parameter_cannot_read_and_unknown_keys():
    parent = FLAT.default()
    assert extract_pairs("temperature=I n=4 colour=red n=5", FLAT) == {"n": "4"}  # the first n wins
    with pytest.raises(ParseError, match="no key=value pair"):
        parse_config("temperature= I would rather not", FLAT, fallback=parent)
    with pytest.raises(ParseError):
        parse_config("n=4", SPACE, fallback=PARENT)  # a nested space reads JSON only


def test_pairs_read_only_the_first_line():
    assert extract_pairs("n=4\nn=5 verify=true", FLAT) == {"n": "4"}


@pytest.mark.parametrize("value, step, text", [
    (0.123456, None, "0.12"), (123.4, None, "123"), (3.58, None, "3.6"), (-0.001, 0.01, "0.00"),
    (0.37, 0.015, "0.38"), (float("nan"), None, "nan"), (1234.5, 10.0, "1230"),
])
def test_short_numbers(value, step, text):
    assert short_number(value, step) == text
