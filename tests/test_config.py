import math
import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qd.config import (
    DEFAULTS,
    DEMO_CONFIG,
    OPERATOR_FLAGS,
    SCHEMA,
    ConfigError,
    demo_operators_note,
    dump_config,
    load_config,
    resolve_config,
)


def test_demo_config_resolves_and_round_trips_through_toml(tmp_path):
    config = resolve_config(DEMO_CONFIG)
    path = tmp_path / "config.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_the_demo_operators_note_names_the_demo_configs_operators_and_proposals():
    note = demo_operators_note(resolve_config(DEMO_CONFIG))
    assert note.startswith("qd: operators: mutation and uniform_crossover, each proposing 4 children")
    assert "the LLM operators (lmx, llm_mutation) are off" in note
    changed = resolve_config({**DEMO_CONFIG, "operators": {"mutation": 1.0, "lmx": 0.5, "proposals": 2}})
    note = demo_operators_note(changed)
    assert note.startswith("qd: operators: mutation and lmx, each proposing 2 children") and "are off" not in note
    unfiltered = resolve_config({**DEMO_CONFIG, "operators": {"mutation": 1.0, "filter": False}})
    assert demo_operators_note(unfiltered).startswith("qd: operators: mutation; the LLM operators")


@pytest.mark.parametrize("raw, message", [
    ({"archive": {"type": "hex"}}, "archive.type must be one of 'grid', 'cvt', got 'hex'"),
    ({"archive": {"bin": [3]}}, "unknown key 'archive.bin' (allowed: type, measures, bins"),
    ({"runn": {}}, "unknown section [runn]"),
    ({"run": {"evaluations": 0}}, "run.evaluations must be an integer >= 1, got 0"),
    ({"archive": {"noise_share": 0}},
     "archive.noise_share must be a number in (0, 1]: re-evaluations at most per result under noise, got 0"),
    ({"evaluator": {"backend": "dask"}}, "evaluator.backend must be one of 'serial', 'ray', got 'dask'"),
    ({"archive": {"measures": ["x", "y"], "ranges": [[0, 1]]}}, "archive.ranges has 1 entries for 2 measures"),
    ({"archive": {"measures": ["x"], "bins": [3, 3]}}, "archive.bins has 2 entries for 1 measures"),
    ({"archive": {"measures": ["x"], "ranges": [[1, 0]]}},
     "archive.ranges[0] = [1, 0] (low must be below high): archive.ranges must be a list of [low, high] pairs"),
    ({"operators": {"iso_line_dd": -1}}, "operators.iso_line_dd must be a non-negative weight or a table"),
    # the holes of issue 11 item 9: each is refused at load, naming the key, the value and what is allowed
    ({"llm": {"temperature": "hot"}}, "llm.temperature must be a number in [0, 2], got 'hot'"),
    ({"llm": {"cache": 1}}, "llm.cache must be true, false, or a path ending in .sqlite, .sqlite3 or .db, got 1"),
    ({"llm": {"cache": "yes"}}, "llm.cache must be true, false, or a path ending in .sqlite"),
    ({"llm": {"api_key_env": 5}}, "llm.api_key_env must be an environment variable name"),
    ({"evaluator": {"actor_concurrency": "many"}}, "evaluator.actor_concurrency must be an integer >= 1, got 'many'"),
    ({"evaluator": {"ray_address": 5}}, "evaluator.ray_address must be a string"),
    ({"evaluator": {"batch_size": -1}}, "evaluator.batch_size must be an integer >= 0 (0: chosen from the measured"),
    ({"run": {"seed": True}}, "run.seed must be an integer, got True"),
    ({"run": {"evaluations": "10"}}, "run.evaluations must be an integer >= 1, got '10'"),
    ({"evaluator": {"timeout_s": math.inf}}, "evaluator.timeout_s must be a number > 0, got inf"),
    ({"llm": {"prices": {"m": [1.0]}}}, "llm.prices must be a table of model"),
    ({"llm": {"fail_fast": -1}}, "llm.fail_fast must be an integer >= 0"),
    ({"run": {"seeds": ["default", 3]}}, 'run.seeds must be "default", a path'),
    ({"run": 3}, "[run] must be a table, got 3"),
])
def test_bad_configs_name_the_key_the_value_and_what_is_allowed(raw, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(raw)
    assert message in str(err.value)


def test_a_config_file_error_names_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[llm]\ntemperature = "hot"\n')
    with pytest.raises(ConfigError, match=r"run\.toml: llm\.temperature must be a number in \[0, 2\], got 'hot'"):
        load_config(path)


def test_every_error_is_listed_not_only_the_first():
    with pytest.raises(ConfigError) as err:
        resolve_config({"llm": {"temperature": "hot", "retries": -1}, "run": {"plot": "yes"}})
    text = str(err.value)
    assert "llm.temperature" in text and "llm.retries" in text and "run.plot" in text


def test_upcoming_keys_are_accepted_with_their_defaults():
    config = resolve_config({
        "run": {"seeds": ["default", {"x": 1.0}]},
        "operators": {"mutation": 1, "iso_line_dd": {"weight": 1.0, "iso_sigma": 0.1}},
        "archive": {"noise": "auto"}, "llm": {"fail_fast": 0},
    })
    assert config["run"]["seeds"] == ["default", {"x": 1.0}]
    assert config["operators"]["iso_line_dd"] == {"weight": 1.0, "iso_sigma": 0.1}  # tables pass through
    assert config["operators"]["mutation"] == 1.0
    assert resolve_config({"run": {"seeds": "seeds.toml"}})["run"]["seeds"] == "seeds.toml"
    assert DEFAULTS["run"]["seeds"] is None and DEFAULTS["archive"]["noise"] == "auto"
    assert DEFAULTS["llm"]["fail_fast"] == 5


def test_operator_tables_and_seeds_round_trip_through_toml(tmp_path):
    config = resolve_config({"run": {"seeds": ["default", {"x": 1.5, "name": "a\x7fb"}]},
                             "operators": {"mutation": 0.5, "iso_line_dd": {"weight": 1.0, "iso_sigma": 0.1}}})
    path = tmp_path / "config.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_overrides_apply_last():
    config = resolve_config({"run": {"evaluations": 10}}, {"run": {"evaluations": 20}})
    assert config["run"]["evaluations"] == 20
    assert config["llm"] == DEFAULTS["llm"]


def test_tuples_from_python_callers_are_lists():
    config = resolve_config({"archive": {"measures": ["a"], "ranges": [(0, 1)]}})
    assert config["archive"]["ranges"] == [[0.0, 1.0]]


def test_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[run\nevaluations = 3")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


# -- property: whatever value a key gets, the outcome is a valid config or a ConfigError naming the key ---------------
KEYS = [(section, name) for section, model in SCHEMA.items() for name in model.model_fields]
toml_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
                | st.text(max_size=12) | st.sampled_from(["default", "grid", "cvt", "ray", "serial", "chat",
                                                         "completions", "task", "actor", "c.sqlite", "auto"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=5), inner, max_size=3),
                           max_leaves=8)
python_values = st.recursive(st.none() | toml_scalars | st.floats() | st.binary(max_size=3),
                             lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                             | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
names = st.sampled_from(KEYS) | st.tuples(st.sampled_from(list(SCHEMA)), st.text(max_size=8))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=names, value=python_values)
def test_any_value_gives_a_config_or_a_config_error_naming_its_key(where, value):
    section, name = where
    try:
        config = resolve_config({section: {name: value}})
    except ConfigError as exc:
        assert f"{section}.{name}" in str(exc)
    else:
        assert set(config) == set(SCHEMA) and name in config[section]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=names, value=toml_values | python_values)
@example(where=("run", "seeds"), value="0")  # a relative seeds file: read next to the config file
@example(where=("domain", "options"), value={"a": None})  # issue 22: dropped from config.toml, then refused on resume
def test_any_accepted_value_from_toml_or_python_round_trips_through_the_run_directory(tmp_path_factory, where, value):
    section, name = where
    try:
        config = resolve_config({section: {name: value}})
    except ConfigError as exc:
        assert f"{section}.{name}" in str(exc)
        return
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(dump_config(config))
    seeds = config["run"]["seeds"]
    if isinstance(seeds, str) and seeds != "default" and not Path(seeds).is_absolute():
        config["run"]["seeds"] = str((path.parent / seeds).resolve())  # found next to the config it was read from
    assert load_config(path) == config


def test_demo_is_the_retrieval_pipeline_on_the_embedded_model_with_classic_operators_and_the_filter():
    from qd.analysis import resolve_measures
    from qd.domains import get_domain
    from qd.operators import CLASSIC

    config = resolve_config(DEMO_CONFIG)
    assert config["domain"]["name"] == "retrieval" and config["llm"]["base_url"] == ""
    assert "base_url" not in config["domain"]["options"]  # the domain's calls go to the embedded model too
    ops = {k for k, v in config["operators"].items() if k not in OPERATOR_FLAGS and v > 0}
    # the README's decision rules turned the LLM operators off for this pipeline; the filter is on by default
    assert ops and ops <= set(CLASSIC) and config["operators"]["filter"] == "auto"  # on for its slow evaluations
    # every measure name resolves against the domain (a misspelt one would list the available names)
    options = {k: v for k, v in config["domain"]["options"].items() if k != "cache"}
    domain = get_domain("retrieval-sim", **options)
    assert len(resolve_measures(config["archive"]["measures"], domain)) == 2
    bins, ranges = config["archive"]["bins"], config["archive"]["ranges"]
    assert len(bins) == len(ranges) == 2 and 10 <= bins[0] * bins[1] <= 100  # a map a short run can fill
    # LLM calls per question run from 1 to max_samples * n_pairs + fusion + verify; log2 of that fits the x range
    max_calls = options["max_samples"] * options["n_pairs"] + 2
    assert ranges[0][0] <= 0.0 and math.log2(max_calls) < ranges[0][1]
    assert config["evaluator"]["timeout_s"] >= 300  # many-call configurations on a slow CPU are not timeouts


def test_bins_or_ranges_without_measures_apply_to_the_domains_default_measures():
    from qd.domains import get_domain
    from qd.runner import build_archive

    arm = get_domain("arm", joints=4)
    archive = build_archive(resolve_config({"archive": {"bins": [6, 5], "ranges": [[-4, 4], [-3, 3]]}}), arm)
    assert archive.measure_names == ["x", "y"] and list(archive.dims) == [6, 5]
    with pytest.raises(ConfigError, match=r"archive.bins has 1 entries for 2 measures \(domain 'arm''s defaults "
                                          r"= \['x', 'y'\]\); give one per measure"):
        build_archive(resolve_config({"archive": {"bins": [6]}}), arm)


def test_a_directory_given_as_the_config_file_points_to_resume(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory, not a config file \(to continue the run in it: "
                                          r"qd run --resume "):
        load_config(tmp_path)


@pytest.mark.parametrize("raw, named", [
    ({"domain": {"name": "arm", "options": {"joints": None}}}, "domain.options.joints is None"),
    ({"domain": {"name": "arm", "options": {"limits": {"low": None}}}}, "domain.options.limits.low is None"),
    ({"domain": {"name": "arm", "options": {"angles": [0.1, None]}}}, "domain.options.angles[1] is None"),
    ({"operators": {"mutation": {"weight": 1.0, "sigma": None}}}, "operators.mutation.sigma is None"),
    ({"run": {"seeds": [{"k": None}]}}, "run.seeds[0].k is None"),
    ({"domain": {"name": "arm", "options": {"scale": math.nan}}}, "domain.options.scale is NaN"),
    ({"domain": {"name": "arm", "options": {"blob": b"x"}}}, "domain.options.blob = b'x' is not a TOML value"),
    ({"domain": {"name": "arm", "options": {"by_id": {1: "a"}}}}, "domain.options.by_id has the key 1"),
])
def test_a_value_config_toml_cannot_keep_is_refused_when_the_config_loads(raw, named):
    """Issue 22: a None option given through the Python API was dropped from config.toml; the resume then refused it."""
    with pytest.raises(ConfigError, match=re.escape(named)):
        resolve_config(raw)



def test_dump_config_refuses_a_none_it_would_drop_from_a_config_that_skipped_resolve_config():
    config = resolve_config({"domain": {"name": "arm", "options": {"joints": 4}}})
    config["domain"]["options"]["joints"] = None  # built by hand after resolving
    with pytest.raises(ConfigError, match=re.escape("domain.options.joints is None")):
        dump_config(config)


def test_the_filter_switch_and_proposals_are_checked_and_reach_the_search():
    config = resolve_config({"operators": {"mutation": 1.0, "filter": True, "proposals": 6}})
    assert config["operators"]["filter"] is True and config["operators"]["proposals"] == 6
    assert resolve_config({})["operators"]["filter"] == "auto"
    with pytest.raises(ConfigError, match=r"operators\.filter must be true, false or 'auto'"):
        resolve_config({"operators": {"mutation": 1.0, "filter": "yes"}})
    with pytest.raises(ConfigError, match=r"operators\.proposals must be an integer in \[1, 32\], got 0"):
        resolve_config({"operators": {"mutation": 1.0, "proposals": 0}})
