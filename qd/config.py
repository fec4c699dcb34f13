"""Run configuration: a declared schema of TOML keys, validated at load, with defaults.

A run config is a nested dict of sections (``run``, ``domain``, ``archive``, ``operators``,
``llm``, ``evaluator``). Each section is a pydantic model below: every key has a type, a range
and a default, and a one-line ``allowed`` text that error messages quote. :func:`load_config`
reads a TOML file, :func:`resolve_config` validates it (and command-line overrides) against the
schema and returns the plain dict the runner uses, and :func:`dump_config` writes the resolved
config back as TOML for the run directory.

Adding a key is one line in its section model: ``name: type = key(default, "allowed text", **limits)``.
"""
from __future__ import annotations

import copy
import json
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from qd.evaluators.registry import backend_names
from qd.llm.models import MODEL_ALIAS
from qd.llm.prices import normalize_prices
from qd.operators.llm import LLM_OPERATORS
from qd.operators.registry import check_operators
from qd.references import split_reference
from qd.result import DEFAULT_TRACE_TEXT_CHARS

__all__ = ["ConfigError", "DEFAULTS", "DEMO_CONFIG", "demo_operators_note", "OPERATOR_FLAGS", "SCHEMA", "load_config",
           "resolve_config", "dump_config"]


class ConfigError(ValueError):
    """A run config key is missing, unknown, or has a value that is not allowed."""


def key(default: Any, allowed: str | Callable[[], str], **limits: Any) -> Any:
    """A config key: its default, the text shown when a value is not allowed, and pydantic limits.

    ``allowed`` may be a function giving the text when an error is shown (for a registry that can grow).
    """
    return Field(default, json_schema_extra={"allowed": allowed}, **limits)


def _low_below_high(pair: list[float]) -> list[float]:
    if not pair[0] < pair[1]:
        raise ValueError("low must be below high")
    return pair


def _cache_setting(value: bool | str) -> bool | str:
    # A bare word such as "yes" would silently become a SQLite file of that name.
    if isinstance(value, str) and not value.endswith((".sqlite", ".sqlite3", ".db")):
        raise ValueError("a cache path must end in .sqlite, .sqlite3 or .db")
    return value


def _backends_text() -> str:
    return "one of " + ", ".join(map(repr, backend_names()))


def _known_backend(name: str) -> str:
    # the registry of qd.evaluators.registry, which may grow, or a reference imported when the run starts
    if name not in backend_names():
        try:
            split_reference(name, "evaluator backend", example="my_pkg.evaluators:ThreadEvaluator")
        except ValueError:
            raise ValueError("not a registered evaluator backend, nor 'package.module:attribute' of an evaluator "
                             "factory") from None
    return name


def _price_table(value: dict[str, Any]) -> dict[str, Any]:
    normalize_prices(value)  # raises ValueError naming the model
    return value


Range = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_low_below_high)]
Weight = Annotated[float, Field(ge=0)]
SeedEntry = Literal["default"] | dict[str, Any]


class _Section(BaseModel):
    # strict: no "5" -> 5 or true -> 1 coercion; a value of the wrong type is an error naming its key.
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, validate_default=False)


class RunSection(_Section):
    """``[run]``: budget, seed and output switches."""

    name: str = key("qd-run", "a non-empty string", min_length=1)
    evaluations: int = key(1000, "an integer >= 1", ge=1)
    seed: int = key(0, "an integer")
    init_random: int = key(100, "an integer >= 0", ge=0)
    progress: bool = key(True, "true or false")
    plot: bool = key(True, "true or false")
    # ordered: insert results in submission order, so the same seed and workers give the same
    # archive run to run on Ray too (classic operators; slots may idle behind a slow evaluation).
    ordered: bool = key(False, "true or false")
    # batch: candidates asked and results told at once; 0 chooses (1, or growing batches when
    # evaluations take under a millisecond: qd.search.SearchOptions.batch).
    batch: int = key(0, "an integer >= 0 (0: chosen from the evaluation time)", ge=0)
    seeds: Annotated[str, Field(min_length=1)] | list[SeedEntry] | None = key(
        None, '"default", a path to a seeds file, or an array of "default" and tables of configurations')
    # Characters of each traced LLM call's prompt and answer text kept in the run store (0: no text).
    trace_text_chars: int = key(DEFAULT_TRACE_TEXT_CHARS, "an integer >= 0 (0: keep no prompt or answer text)",
                                ge=0)
    # Search listeners besides the store and the progress bar (qd.listeners.build_listeners): each a
    # "package.module:attribute" reference to a SearchListener class, factory or instance, or a table
    # {listener = "...", option = value, ...} whose other keys go to the class or factory.
    listeners: list[Annotated[str, Field(min_length=1)] | dict[str, Any]] = key(
        [], 'a list of "package.module:attribute" listener references or tables {listener = "...", ...}')


class DomainSection(_Section):
    """``[domain]``: which domain, and the options passed to its constructor."""

    name: str = key("arm", "a non-empty domain name (see `qd domains`)", min_length=1)
    options: dict[str, Any] = key({}, "a table of the domain's constructor options")


class ArchiveSection(_Section):
    """``[archive]``: the map's measures, ranges and cells."""

    type: Literal["grid", "cvt"] = key("grid", "one of 'grid', 'cvt'")
    measures: list[Annotated[str, Field(min_length=1)]] = key([], "a list of descriptor names")
    bins: list[Annotated[int, Field(ge=1)]] = key([], "a list of integers >= 1, one per measure")
    ranges: list[Range] = key([], "a list of [low, high] pairs with low < high, one per measure")
    cells: int = key(0, "an integer >= 0 (0: 1000 CVT cells)", ge=0)
    qd_score_offset: float | None = key(None, "a finite number")
    learning_rate: float | None = key(None, "a number in [0, 1]", ge=0, le=1)
    threshold_min: float | None = key(None, "a finite number")
    noise: Literal["auto", "none", "adaptive"] = key(
        "auto", "one of 'auto' (detect noise, then adaptive), 'none' (one evaluation each), 'adaptive'")
    noise_samples: int = key(5, "an integer in [1, 100]: evaluations per configuration at most under noise",
                             ge=1, le=100)
    noise_share: float = key(0.5, "a number in (0, 1]: re-evaluations at most per result under noise", gt=0, le=1)


class OperatorsSection(_Section):
    """``[operators]``: switches, then one entry per operator: a weight or a table of its options."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Weight | dict[str, Any]]

    adaptive: bool = key(False, "true or false")
    wait_for_llm: bool = key(False, "true or false")
    # filter: every operator proposes `proposals` children per draw; the one predicted to fill an
    # empty cell (else the weakest elite's) is evaluated (qd.prefilter)
    filter: bool | Literal["auto"] = key(
        "auto", "true, false or 'auto' (on unless the domain makes no calls: Domain.makes_calls)")
    proposals: int = key(4, "an integer in [1, 32]", ge=1, le=32)


class LLMSection(_Section):
    """``[llm]``: the OpenAI-compatible endpoint of the LLM operators (embedded model when empty)."""

    base_url: str = key("", "a URL string ('' for the embedded model)")
    model: str = key(MODEL_ALIAS, "a non-empty model name", min_length=1)
    api: Literal["chat", "completions"] = key("completions", "one of 'chat', 'completions'")
    api_key_env: str = key("OPENAI_API_KEY", "an environment variable name (letters, digits, _)",
                           pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    temperature: float = key(0.8, "a number in [0, 2]", ge=0, le=2)
    max_tokens: int = key(256, "an integer >= 1", ge=1)
    timeout_s: float = key(60.0, "a number > 0", gt=0)
    retries: int = key(3, "an integer >= 0", ge=0)
    concurrency: int = key(4, "an integer >= 1", ge=1)
    cache: Annotated[bool | str, AfterValidator(_cache_setting)] = key(
        True, "true, false, or a path ending in .sqlite, .sqlite3 or .db")
    prices: Annotated[dict[str, Any], AfterValidator(_price_table)] = key(
        {}, "a table of model = [input, output] USD per 1M tokens (non-negative)")
    fail_fast: int = key(5, "an integer >= 0 (0: never stop early)", ge=0)
    server_threads: int = key(
        0, "an integer >= 0: compute threads of the embedded model (0: the cores the run leaves free)", ge=0)
    # The pipeline (the domain's own LLM calls, qd.pipeline_llm()) uses the same endpoint unless these are set.
    pipeline_model: str = key("", "a model name ('': the same as model)")
    pipeline_base_url: str = key("", "a URL string ('': the same as base_url)")


class EvaluatorSection(_Section):
    """``[evaluator]``: where evaluations run."""

    # "ray": a local runtime (or a cluster with ray_address); workers = 0 uses every CPU.
    # "serial" evaluates in the driver: for debugging and for domains that take microseconds.
    # Any backend of qd.evaluators.registry (register_backend adds one), or a factory's reference.
    backend: Annotated[str, AfterValidator(_known_backend)] = key("ray", _backends_text)
    workers: int = key(0, "an integer >= 0 (0: every CPU)", ge=0)
    timeout_s: float = key(60.0, "a number > 0", gt=0)
    ray_address: str = key("", "a string: '', 'auto' or HOST:PORT")
    mode: Literal["task", "actor"] = key("task", "one of 'task', 'actor'")
    actor_concurrency: int = key(64, "an integer >= 1", ge=1)
    # Configurations per Ray call; 0 sizes batches from the measured evaluation time (1 for slow ones).
    batch_size: int = key(0, "an integer >= 0 (0: chosen from the measured evaluation time)", ge=0)


class RunConfig(_Section):
    """A whole run config: one model per TOML section."""

    run: RunSection = Field(default_factory=RunSection)
    domain: DomainSection = Field(default_factory=DomainSection)
    archive: ArchiveSection = Field(default_factory=ArchiveSection)
    operators: OperatorsSection = Field(default_factory=OperatorsSection)
    llm: LLMSection = Field(default_factory=LLMSection)
    evaluator: EvaluatorSection = Field(default_factory=EvaluatorSection)


SCHEMA: dict[str, type[_Section]] = {
    name: field.annotation for name, field in RunConfig.model_fields.items()  # type: ignore[misc]
}

DEFAULTS: dict[str, dict[str, Any]] = RunConfig().model_dump()

# Keys of [operators] that are switches, not operators.
OPERATOR_FLAGS = tuple(OperatorsSection.model_fields)

# `qd run` with no config file: the retrieval pipeline (domains/retrieval.py) on the embedded
# gemma-3-270m, searched with classic operators and the pre-evaluation filter (the LLM operators did
# not beat them at equal evaluations on this pipeline: demo_operators_note, README). The map is
# log2(LLM calls per question) x largest prompt in tokens, coloured by accuracy: the trade-off of
# more calls on shorter contexts. Sized to finish in minutes on 2 CPU cores from an empty request
# cache (README gives the measured time): 8 records and 3 questions per evaluation, at most 3 votes
# and 2 few-shot examples, a small map, and the request cache (a mutation that keeps the chunking
# reuses its parent's chunk answers; calls still count).
DEMO_CONFIG: dict[str, dict[str, Any]] = {
    "run": {"name": "retrieval-demo", "evaluations": 40, "init_random": 6},
    "domain": {"name": "retrieval", "options": {"n_pairs": 8, "n_instances": 3, "max_samples": 3,
                                                "max_few_shot": 2, "cache": True}},
    "archive": {"type": "grid", "measures": ["log2_calls", "max_prompt_tokens"], "bins": [5, 5],
                "ranges": [[0.0, 5.0], [50.0, 300.0]]},
    "operators": {"mutation": 1.0, "uniform_crossover": 1.0},
    # A many-call configuration on a busy CPU can take minutes; the default 60 s would cut it off.
    "evaluator": {"timeout_s": 600.0},
}


def demo_operators_note(config: dict[str, dict[str, Any]]) -> str:
    """What `qd run` with no config says before it starts (README, "Search against the alternatives", rule 3).

    Parameters
    ----------
    config : dict
        The resolved run config of the demo (:data:`DEMO_CONFIG` with the command line's overrides).
    """
    section = config["operators"]
    names = [name for name in section if name not in OperatorsSection.model_fields]
    note = f"qd: operators: {' and '.join(names)}"
    if section["filter"] is not False:
        note += (f", each proposing {section['proposals']} children of which the filter keeps the one predicted "
                 "into an empty cell")
    if not set(names) & set(LLM_OPERATORS):
        note += (f"; the LLM operators ({', '.join(LLM_OPERATORS)}) are off: on this pipeline they did not beat "
                 "classic operators at equal evaluations (README, 'Search against the alternatives'); name them in a "
                 "config's [operators] to use them")
    return note


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
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file (to continue the run in it: "
                          f"qd run --resume {path})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    run = raw.get("run")
    seeds = run.get("seeds") if isinstance(run, dict) else None
    if isinstance(seeds, str) and seeds != "default" and not Path(seeds).is_absolute():
        run["seeds"] = str((path.parent / seeds).resolve())  # a seeds file is found next to its config
    try:
        return resolve_config(raw, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve_config(raw: dict[str, Any],
                   overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
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

    Raises
    ------
    ConfigError
        Naming each key whose value is not allowed, the value, and what is allowed.
    """
    merged: dict[str, Any] = {}
    for source in (raw, overrides or {}):
        if not isinstance(source, dict):
            raise ConfigError(f"a run config must be a table of sections, got {type(source).__name__}")
        for section, values in source.items():
            if section not in SCHEMA:
                raise ConfigError(f"unknown section [{section}] (allowed: {', '.join(SCHEMA)})")
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table, got {_show(values)}")
            merged.setdefault(section, {}).update(copy.deepcopy(values))
    try:
        config = RunConfig.model_validate(_lists(merged)).model_dump()
    except ValidationError as exc:
        raise ConfigError(_explain(exc, merged)) from None
    for section, values in config.items():
        for name, value in values.items():
            if isinstance(value, (dict, list)):
                _check_toml(value, f"{section}.{name}")
    _check_across_keys(config)
    return config


def _check_toml(value: Any, path: str) -> None:
    """Refuse what ``config.toml`` cannot keep: a resume reads the run's config back from it.

    TOML has no null (``dump_config`` would drop the key, and the resume then sees a changed
    option), and a NaN never equals itself (the resume could not tell it unchanged).

    Raises
    ------
    ConfigError
        Naming the key (``domain.options.retries``) and what to do instead.
    """
    if value is None:
        where = ("; put seed configurations with None values in a seeds file (run.seeds = \"seeds.jsonl\")"
                 if path.startswith("run.seeds") else "")
        raise ConfigError(f"{path} is None, which TOML cannot hold (config.toml, which a resume reads back, would "
                          f"lose it): leave the key out to use the default, or give a value{where}")
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{path} is NaN, which never equals itself, so a resume could not tell it unchanged: "
                          "give a number")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path} has the key {k!r}; TOML keys are strings")
            _check_toml(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_toml(v, f"{path}[{i}]")
    elif not isinstance(value, (bool, int, float, str)):
        raise ConfigError(f"{path} = {_show(value)} is not a TOML value (a string, number, boolean, array or table)")


def _lists(value: Any) -> Any:
    """Tuples as lists (Python callers pass pairs as tuples; TOML has only arrays)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _explain(exc: ValidationError, merged: dict[str, Any]) -> str:
    """One line per offending key: the key, what is allowed, the value given."""
    lines: dict[str, str] = {}
    for error in exc.errors():
        loc = error["loc"]
        section = str(loc[0])
        if len(loc) == 1:
            lines.setdefault(section, f"[{section}] must be a table, got {_show(error['input'])}")
            continue
        name = str(loc[1])
        model = SCHEMA[section]
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            lines.setdefault(f"{section}.{name}", f"unknown key '{section}.{name}' (allowed: {allowed})")
            continue
        path, value = f"{section}.{name}", merged.get(section, {}).get(name)
        element = ""
        if len(loc) > 2 and isinstance(loc[2], int):  # one element of a list
            element = f"{path}[{loc[2]}] = {_show(error['input'])}{_detail(error)}: "
        if name in model.model_fields:
            allowed = (model.model_fields[name].json_schema_extra or {}).get("allowed", error["msg"])
            if callable(allowed):
                allowed = allowed()
        elif section == "operators":
            allowed = "a non-negative weight or a table of the operator's options"
        else:
            allowed = error["msg"]
        if element:
            lines.setdefault(path, f"{element}{path} must be {allowed}")
        else:
            lines.setdefault(path, f"{path} must be {allowed}, got {_show(value)}{_detail(error)}")
    return "\n".join(lines.values())


def _detail(error: Any) -> str:
    """The validator's own reason when it adds to the declared ``allowed`` text."""
    if error["type"] == "value_error":
        return f" ({str(error['msg']).removeprefix('Value error, ')})"
    return ""


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_across_keys(config: dict[str, dict[str, Any]]) -> None:
    """Rules that relate keys to each other (each key alone already passed the schema)."""
    for i, entry in enumerate(config["run"]["listeners"]):
        _check_listener_entry(entry, f"run.listeners[{i}]")
    try:  # each operator's parameters, by the operator registry (qd.operators.registry)
        check_operators({k: v for k, v in config["operators"].items() if k not in OPERATOR_FLAGS})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    archive = config["archive"]
    n = len(archive["measures"])
    if not n:  # the domain's default measures apply: the runner checks ranges and bins against them
        return
    if archive["ranges"] and len(archive["ranges"]) != n:
        raise ConfigError(f"archive.ranges has {len(archive['ranges'])} entries for {n} measures "
                          f"(archive.measures = {_show(archive['measures'])})")
    if archive["type"] == "grid" and archive["bins"] and len(archive["bins"]) != n:
        raise ConfigError(f"archive.bins has {len(archive['bins'])} entries for {n} measures "
                          f"(archive.measures = {_show(archive['measures'])})")


def _check_listener_entry(entry: str | dict[str, Any], path: str) -> None:
    """A listener entry's reference is well-formed (it is imported when the run starts, not at load)."""
    if isinstance(entry, dict):
        ref = entry.get("listener")
        if not isinstance(ref, str):
            raise ConfigError(f"{path} must have listener = \"package.module:attribute\", got {_show(entry)}")
        path += ".listener"
    else:
        ref = entry
    try:
        split_reference(ref, path, example="my_listeners:Notify")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def dump_config(config: dict[str, dict[str, Any]]) -> str:
    """Render a resolved config as TOML (a key set to ``None`` is omitted: its default, as TOML has no null).

    Raises
    ------
    ConfigError
        For a value inside a table or array that TOML cannot keep (a config that did not go
        through :func:`resolve_config`), rather than writing a config that reads back otherwise.
    """
    lines: list[str] = []
    for section, values in config.items():
        for name, value in values.items():
            if isinstance(value, (dict, list)):
                _check_toml(value, f"{section}.{name}")
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{section}]")
        for name, value in values.items():
            if value is not None and name not in tables:
                lines.append(f"{_toml_key(name)} = {_toml_value(value)}")
        for name, table in tables.items():
            lines.append(f"\n[{section}.{_toml_key(name)}]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items())
        lines.append("")
    return "\n".join(lines)


def _toml_key(name: str) -> str:
    return name if name and all(c.isascii() and (c.isalnum() or c in "-_") for c in name) else _toml_string(name)


def _toml_string(text: str) -> str:
    # JSON escapes are TOML escapes, except that TOML also requires DEL escaped and has no
    # surrogate-pair escapes (so non-ASCII stays literal).
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} to TOML")
