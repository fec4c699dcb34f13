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
