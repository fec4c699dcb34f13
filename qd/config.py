"""Run configuration: the TOML keys of DESIGN.md, validated, with defaults.

A run config is a nested dict of sections (``run``, ``domain``, ``archive``,
``operators``, ``llm``, ``evaluator``). :func:`load_config` reads a TOML file,
:func:`resolve_config` merges it over the defaults and checks every key, and
:func:`dump_config` writes the resolved config back as TOML for the run directory.
"""
from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "DEFAULTS", "DEMO_CONFIG", "OPERATOR_FLAGS", "load_config", "resolve_config", "dump_config"]


class ConfigError(ValueError):
    """A run config key is missing, unknown, or has a value that is not allowed."""


DEFAULTS: dict[str, dict[str, Any]] = {
    # ordered: insert results in submission order, so the same seed and workers give the same
    # archive run to run on Ray too (classic operators; slots may idle behind a slow evaluation).
    "run": {"name": "qd-run", "evaluations": 1000, "seed": 0, "init_random": 100, "progress": True,
            "plot": True, "ordered": False},
    "domain": {"name": "arm", "options": {}},
    "archive": {"type": "grid", "measures": [], "bins": [], "ranges": [], "cells": 0,
                "qd_score_offset": None, "learning_rate": None, "threshold_min": None},
    "operators": {"adaptive": False, "wait_for_llm": False},
    "llm": {"base_url": "", "model": "gemma-3-270m", "api": "completions", "api_key_env": "OPENAI_API_KEY",
            "temperature": 0.8, "max_tokens": 256, "timeout_s": 60.0, "retries": 3, "concurrency": 4,
            "cache": True, "prices": {}},
    # backend "ray": a local runtime (or a cluster with ray_address); workers = 0 uses every CPU.
    # "serial" evaluates in the driver: for debugging and for domains that take microseconds.
    "evaluator": {"backend": "ray", "workers": 0, "timeout_s": 60.0, "ray_address": "", "mode": "task",
                  "actor_concurrency": 64},
}

# Keys of [operators] that are switches, not operator weights.
OPERATOR_FLAGS = ("adaptive", "wait_for_llm")

# `qd run` with no config file: the retrieval pipeline (domains/retrieval.py) on the embedded
# gemma-3-270m, searched with LLM operators (LMX, LLM mutation) and a classic mutation. The map is
# log2(LLM calls per question) x largest prompt in tokens, coloured by accuracy: the trade-off of
# more calls on shorter contexts. Sized to finish in about 7 minutes on 2 CPU cores from an empty
# request cache (7.3 min measured): 8 records and 3 questions per evaluation, at most 3 votes and
# 2 few-shot examples, a small map, and the request cache (a mutation that keeps the chunking
# reuses its parent's chunk answers; calls still count).
DEMO_CONFIG: dict[str, dict[str, Any]] = {
    "run": {"name": "retrieval-demo", "evaluations": 40, "init_random": 6},
    "domain": {"name": "retrieval", "options": {"n_pairs": 8, "n_instances": 3, "max_samples": 3,
                                                "max_few_shot": 2, "cache": True}},
    "archive": {"type": "grid", "measures": ["log2_calls", "max_prompt_tokens"], "bins": [5, 5],
                "ranges": [[0.0, 5.0], [50.0, 300.0]]},
    "operators": {"mutation": 1.0, "lmx": 0.5, "llm_mutation": 0.5},
    # A many-call configuration on a busy CPU can take minutes; the default 60 s would cut it off.
    "evaluator": {"timeout_s": 600.0},
}

_CHOICES = {
    ("archive", "type"): ("grid", "cvt"),
    ("llm", "api"): ("chat", "completions"),
    ("evaluator", "backend"): ("serial", "ray"),
    ("evaluator", "mode"): ("task", "actor"),
}


def load_config(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Read a TOML run config and return it resolved over :data:`DEFAULTS` (then ``overrides``).

    Raises
    ------
    ConfigError
        If the file is not valid TOML or any key is unknown or out of range.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return resolve_config(raw, overrides)


def resolve_config(raw: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Merge ``raw`` (and then ``overrides``) over the defaults and validate every key.

    Parameters
    ----------
    raw : dict
        Parsed TOML: a dict of sections.
    overrides : dict, optional
        Section -> key -> value from command-line flags; applied last.

    Returns
    -------
    dict
        A complete config; every section and key present.
    """
    config = copy.deepcopy(DEFAULTS)
    for source in (raw, overrides or {}):
        for section, values in source.items():
            if section not in config:
                raise ConfigError(f"unknown section [{section}] (allowed: {', '.join(DEFAULTS)})")
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table, got {type(values).__name__}")
            for key, value in values.items():
                if section != "operators" and key not in DEFAULTS[section]:
                    allowed = ", ".join(DEFAULTS[section])
                    raise ConfigError(f"unknown key '{section}.{key}' (allowed: {allowed})")
                config[section][key] = value
    _validate(config)
    return config


def _validate(config: dict[str, dict[str, Any]]) -> None:
    for (section, key), allowed in _CHOICES.items():
        if config[section][key] not in allowed:
            raise ConfigError(f"{section}.{key} = {config[section][key]!r}; allowed values: {', '.join(allowed)}")
    run = config["run"]
    _positive_int(run, "run", "evaluations")
    _positive_int(run, "run", "init_random", allow_zero=True)
    if not isinstance(run["seed"], int) or isinstance(run["seed"], bool):
        raise ConfigError(f"run.seed must be an integer, got {run['seed']!r}")
    for flag in ("progress", "plot", "ordered"):
        if not isinstance(run[flag], bool):
            raise ConfigError(f"run.{flag} must be true or false, got {run[flag]!r}")
    if not isinstance(config["domain"]["name"], str) or not config["domain"]["name"]:
        raise ConfigError("domain.name must be a non-empty string (see `qd domains`)")
    if not isinstance(config["domain"]["options"], dict):
        raise ConfigError("[domain.options] must be a table")

    archive = config["archive"]
    measures = archive["measures"]
    if not isinstance(measures, list) or not all(isinstance(m, str) and m for m in measures):
        raise ConfigError(f"archive.measures must be a list of descriptor names, got {measures!r}")
    if archive["ranges"]:
        if len(archive["ranges"]) != len(measures):
            raise ConfigError(f"archive.ranges has {len(archive['ranges'])} entries for {len(measures)} measures")
        for i, rng in enumerate(archive["ranges"]):
            if (not isinstance(rng, list) or len(rng) != 2 or not all(_is_number(v) for v in rng)
                    or not rng[0] < rng[1]):
                raise ConfigError(f"archive.ranges[{i}] must be [low, high] with low < high, got {rng!r}")
    if archive["type"] == "grid" and archive["bins"]:
        if len(archive["bins"]) != len(measures):
            raise ConfigError(f"archive.bins has {len(archive['bins'])} entries for {len(measures)} measures")
        if not all(isinstance(b, int) and b > 0 for b in archive["bins"]):
            raise ConfigError(f"archive.bins must be positive integers, got {archive['bins']!r}")
    if archive["type"] == "cvt" and archive["cells"] and not (isinstance(archive["cells"], int) and archive["cells"] > 0):
        raise ConfigError(f"archive.cells must be a positive integer, got {archive['cells']!r}")

    ops = config["operators"]
    for flag in OPERATOR_FLAGS:
        if not isinstance(ops.get(flag, False), bool):
            raise ConfigError(f"operators.{flag} must be true or false")
    for name, weight in ops.items():
        if name not in OPERATOR_FLAGS and (not _is_number(weight) or weight < 0):
            raise ConfigError(f"operators.{name} must be a non-negative weight, got {weight!r}")

    ev = config["evaluator"]
    _positive_int(ev, "evaluator", "workers", allow_zero=True)
    if not _is_number(ev["timeout_s"]) or ev["timeout_s"] <= 0:
        raise ConfigError(f"evaluator.timeout_s must be a positive number, got {ev['timeout_s']!r}")
    llm = config["llm"]
    _positive_int(llm, "llm", "max_tokens")
    _positive_int(llm, "llm", "concurrency")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(section: dict, name: str, key: str, allow_zero: bool = False) -> None:
    value = section[key]
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name}.{key} must be an integer >= {low}, got {value!r}")


def dump_config(config: dict[str, dict[str, Any]]) -> str:
    """Render a resolved config as TOML (``None`` values are omitted, as TOML has no null)."""
    lines: list[str] = []
    for section, values in config.items():
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None and key not in tables:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, table in tables.items():
            lines.append(f"\n[{section}.{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} to TOML")
