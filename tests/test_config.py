import math

import pytest

from qd.config import DEFAULTS, DEMO_CONFIG, ConfigError, dump_config, load_config, resolve_config


def test_demo_config_resolves_and_round_trips_through_toml(tmp_path):
    config = resolve_config(DEMO_CONFIG)
    path = tmp_path / "config.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize("raw, message", [
    ({"archive": {"type": "hex"}}, "archive.type = 'hex'; allowed values: grid, cvt"),
    ({"archive": {"bin": [3]}}, "unknown key 'archive.bin' (allowed: type, measures, bins"),
    ({"runn": {}}, "unknown section [runn]"),
    ({"run": {"evaluations": 0}}, "run.evaluations must be an integer >= 1"),
    ({"evaluator": {"backend": "dask"}}, "allowed values: serial, ray"),
    ({"archive": {"measures": ["x", "y"], "ranges": [[0, 1]]}}, "archive.ranges has 1 entries for 2 measures"),
    ({"archive": {"measures": ["x"], "ranges": [[1, 0]]}}, "archive.ranges[0] must be [low, high] with low < high"),
    ({"operators": {"iso_line_dd": -1}}, "operators.iso_line_dd must be a non-negative weight"),
])
def test_bad_configs_name_the_key_and_allowed_values(raw, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(raw)
    assert message in str(err.value)


def test_overrides_apply_last():
    config = resolve_config({"run": {"evaluations": 10}}, {"run": {"evaluations": 20}})
    assert config["run"]["evaluations"] == 20
    assert config["llm"] == DEFAULTS["llm"]


def test_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[run\nevaluations = 3")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_demo_is_the_retrieval_pipeline_on_the_embedded_model_with_llm_operators():
    from qd.domains import get_domain
    from qd.operators import CLASSIC

    from qd.analysis import resolve_measures

    config = resolve_config(DEMO_CONFIG)
    assert config["domain"]["name"] == "retrieval" and config["llm"]["base_url"] == ""
    assert "base_url" not in config["domain"]["options"]  # the domain's calls go to the embedded model too
    ops = {k for k, v in config["operators"].items() if k != "adaptive" and v > 0}
    assert {"lmx", "llm_mutation"} <= ops and ops & set(CLASSIC)
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
