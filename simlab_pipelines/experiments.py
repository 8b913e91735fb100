"""Experiment definitions: load, validate and resolve ``experiments/<name>.yaml``.

An experiment names a model, the parameters fixed for every configuration, and either a full
factorial (``factors``) or an explicit list (``configurations``) of the values that vary. Loading
checks everything the engine would later reject (unknown keys at any level, strict types, unknown
models, parameters and metrics, bounds, duplicates, the baseline) and reports every problem with
the file, the field path and the reason, e.g.::

    experiments/bad.yaml: factors.tables[1]: parameter 'tables' = 0 must be >= 1 (line 9)

Each resolved configuration gets a key derived from its values (``tables-8_waiters-3``), never
from its position, so adding or reordering configurations never renames results.

No Dagster here: the assets import this module, not the other way round.
"""

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

import engine
from engine.parameters import Parameter, ParameterError

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# Asset groups of our own: an experiment by that name would collide with them in the UI.
RESERVED_NAMES = frozenset({"rejected_experiments"})
MAX_REPLICATIONS = 100_000
MAX_CONFIGURATIONS = 10_000  # a factorial larger than this is almost surely a typo
MAX_KEY_LENGTH = 64
KEY_HASH_DIGITS = 10  # hex digits of blake2b in a shortened key: 40 bits
EXPERIMENTS_DIR_ENV = "SIMLAB_EXPERIMENTS_DIR"

_KEY_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_NOT_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

Loc = tuple[str | int, ...]


# ---------------------------------------------------------------------------------------------
# Errors


class ExperimentError(Exception):
    """An experiment file (or mapping) that cannot be used, with every problem found.

    ``path`` is the file (None for a mapping given directly), ``errors`` a list of
    ``(field path, reason)``; the field path is "" for problems of the whole file. ``lines`` maps a
    field path to its 1-based line in the file, when known.
    """

    def __init__(self, path: Path | str | None, errors: list[tuple[str, str]],
                 lines: Mapping[str, int] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.errors = list(errors)
        self.lines = dict(lines or {})
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "<experiment>"
        out = []
        for field, reason in self.errors:
            line = self.lines.get(field)
            suffix = f" (line {line})" if line else ""
            out.append(f"{where}: {field}: {reason}{suffix}" if field else f"{where}: {reason}{suffix}")
        return "\n".join(out)

    def __reduce__(self):  # picklable across processes despite the custom __init__
        return (type(self), (self.path, self.errors, self.lines))


class _SpecErrors(ValueError):
    """Raised inside the spec's validator; the loader unpacks ``errors`` into ExperimentError."""

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{format_path(loc)}: {reason}" for loc, reason in errors))


def format_path(loc: Loc) -> str:
    """``('factors', 'tables', 1)`` -> ``factors.tables[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# ---------------------------------------------------------------------------------------------
# Configuration keys


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        # repr is the shortest string that round-trips; '+' (1e+20) is not a key character.
        return repr(value).replace("+", "")
    if isinstance(value, str):
        return value
    return _canonical_json(value)


def config_key(varying: Mapping[str, Any]) -> str:
    """The key of a configuration, from the values that distinguish it (never its position).

    Parameter names sorted, ``name-value`` joined by ``_``: ``tables-8_waiters-3``; floats in their
    shortest round-tripping form (``arrival_rate-0.25``), None as ``none``; no varying values:
    ``base``. Keys use only ``[A-Za-z0-9_.-]`` (valid Dagster partition keys). A key longer than
    64 characters becomes a readable prefix, ``_`` and 10 hex digits of blake2b over the canonical
    JSON of ``varying``.

    Uniqueness: for the validated values of a spec (ints, floats, None) the readable form is
    injective: names contain no ``-``, values contain no ``_``, and int/float/None print
    differently and round-trip. Two distinct configurations can therefore only share a key through
    a 40-bit hash collision between shortened keys, which ExperimentSpec rejects at load.
    """
    if not varying:
        return "base"
    readable = "_".join(f"{name}-{_format_value(varying[name])}" for name in sorted(varying))
    if len(readable) <= MAX_KEY_LENGTH and _KEY_CHARS.fullmatch(readable):
        return readable
    digest = hashlib.blake2b(_canonical_json(dict(varying)).encode("utf-8"),
                             digest_size=KEY_HASH_DIGITS // 2).hexdigest()
    prefix = _NOT_KEY_CHARS.sub("", readable)[: MAX_KEY_LENGTH - KEY_HASH_DIGITS - 1]
    prefix = prefix.rstrip("_.-")
    return f"{prefix}_{digest}" if prefix else digest


@dataclass(frozen=True)
class Configuration:
    """One resolved configuration of an experiment."""

    key: str
    params: dict[str, Any]  # every model parameter, defaults filled (as model.validate returns)
    varying: dict[str, Any]  # what distinguishes it: factor values or the explicit entry


# ---------------------------------------------------------------------------------------------
# The spec

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class Precision(BaseModel):
    """Sequential replications: add replications until ``metric``'s CI is narrow enough."""

    model_config = _STRICT

    metric: str
    relative_half_width: float = Field(gt=0, lt=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    max_replications: int = Field(ge=2, le=MAX_REPLICATIONS)


class Objective(BaseModel):
    """What "better" means when configurations are compared or ranked."""

    model_config = _STRICT

    metric: str
    direction: Literal["minimize", "maximize"]
    indifference_zone: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class ExperimentSpec(BaseModel):
    """A validated experiment definition (see DESIGN.md, "Experiment definition")."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=60)
    description: str = ""
    question: str = ""  # the plain question the experiment answers
    model: str
    seed: int = Field(ge=0, lt=2**63)
    replications: int = Field(ge=2, le=MAX_REPLICATIONS)
    horizon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    warmup: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    common_random_numbers: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)
    factors: dict[str, list[Any]] | None = None
    configurations: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    baseline: dict[str, Any] | None = None
    precision: Precision | None = None
    objective: Objective | None = None
    confidence: float = Field(default=0.95, gt=0, lt=1)
    series_interval: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_partitions_per_run: int | None = Field(default=None, ge=1)
    compare_all_pairs: bool = False  # comparisons between every pair, not only to the baseline
    check_theory: bool = False  # mmck only: the agrees_with_theory check on the summary

    _source: Path | None = PrivateAttr(default=None)
    _configurations: tuple[Configuration, ...] = PrivateAttr(default=())
    _baseline_key: str | None = PrivateAttr(default=None)
    _canonical: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"name {value!r} is reserved (the UI's group of rejected files); "
                             "choose another")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in engine.MODELS:
            raise ValueError(f"unknown model {value!r} (known: {', '.join(sorted(engine.MODELS))})")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> "ExperimentSpec":
        configurations, baseline_key, canonical = _resolve_spec(self)
        self._configurations = configurations
        self._baseline_key = baseline_key
        self._canonical = canonical
        return self

    def __hash__(self) -> int:
        return hash(self.spec_hash())

    @property
    def source(self) -> Path | None:
        """The file this spec was loaded from (not part of the hash)."""
        return self._source

    def configurations_list(self) -> list[Configuration]:
        """The configurations: factorial order (first factor slowest) or the file's order."""
        return [Configuration(c.key, dict(c.params), dict(c.varying)) for c in self._configurations]

    def config_keys(self) -> list[str]:
        """The configuration keys, in ``configurations_list()`` order."""
        return [c.key for c in self._configurations]

    @property
    def baseline_key(self) -> str | None:
        """The key of the baseline configuration, or None without a baseline."""
        return self._baseline_key

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the validated spec (mapping order and source ignored).

        Parameter values are normalised to the model's types first (``1`` and ``1.0`` for a float
        parameter hash the same); list order (factor values, configurations) counts.
        """
        return hashlib.sha256(_canonical_json(self._canonical).encode("utf-8")).hexdigest()

    def simulation_hash(self) -> str:
        """sha256 of what every simulation of the experiment depends on besides its configuration
        and replication: model, seed, horizon, warm-up, common random numbers, recorded series and
        the fixed parameters. Adding configurations or replications, or changing the analysis
        (baseline, objective, precision, confidence), leaves it unchanged."""
        shared = {"model": self.model, "seed": self.seed, "horizon": self.resolved_horizon,
                  "warmup": self.resolved_warmup, "crn": self.common_random_numbers,
                  "series_interval": self.series_interval,
                  "parameters": self._canonical.get("parameters", {})}
        return hashlib.sha256(_canonical_json(shared).encode("utf-8")).hexdigest()

    def inputs_hash(self, config: Configuration) -> str:
        """A short hash of everything one simulation of ``config`` depends on (but the replication
        number, which is in its partition key): a result file whose hash differs was made from
        other inputs and must be run again."""
        inputs = {"simulation": self.simulation_hash(), "params": config.params,
                  "engine": engine.ENGINE_VERSION}
        return hashlib.sha256(_canonical_json(inputs).encode("utf-8")).hexdigest()[:24]

    @property
    def resolved_horizon(self) -> float:
        """The horizon, or the model's default."""
        return self.horizon if self.horizon is not None else engine.get_model(self.model).default_horizon

    @property
    def resolved_warmup(self) -> float:
        """The warm-up, or the model's default."""
        return self.warmup if self.warmup is not None else engine.get_model(self.model).default_warmup

    @property
    def max_replications(self) -> int:
        """The most replications any configuration may get (``precision.max_replications`` or
        ``replications``)."""
        return self.precision.max_replications if self.precision is not None else self.replications

    def replication_keys(self) -> list[str]:
        """``"0"`` .. ``"replications-1"``."""
        return [str(r) for r in range(self.replications)]


def _resolve_spec(spec: ExperimentSpec) -> tuple[tuple[Configuration, ...], str | None, dict]:
    """Check the spec against its model and resolve configurations, baseline and canonical form.

    Raises _SpecErrors with every problem found (the structure is already valid here).
    """
    model = engine.get_model(spec.model)
    known: dict[str, Parameter] = {p.name: p for p in model.parameters}
    errors: list[tuple[Loc, str]] = []

    def unknown(name: str) -> str:
        return f"unknown parameter {name!r} for model {model.name!r} (known: {', '.join(sorted(known))})"

    def check(loc: Loc, name: str, value: Any) -> tuple[bool, Any]:
        try:
            return True, known[name].validate(value)
        except ParameterError as exc:
            errors.append((loc, str(exc)))
            return False, None

    fixed: dict[str, Any] = {}
    for name, value in spec.parameters.items():
        loc: Loc = ("parameters", name)
        if name not in known:
            errors.append((loc, unknown(name)))
            continue
        ok, normal = check(loc, name, value)
        if ok:
            fixed[name] = normal

    # (varying values, where each came from, where the entry is)
    entries: list[tuple[dict[str, Any], dict[str, Loc], Loc]] = []
    canonical_factors: dict[str, list[Any]] | None = None
    canonical_configurations: list[dict[str, Any]] | None = None
    if spec.factors is not None and spec.configurations is not None:
        errors.append((("configurations",), "give either factors (a full factorial) or "
                       "configurations (an explicit list), not both"))
    elif spec.factors is not None:
        if not spec.factors:
            errors.append((("factors",), "no factors: give at least one, or leave factors out"))
        levels: list[tuple[str, list[tuple[int, Any]]]] = []
        for name, values in spec.factors.items():
            loc = ("factors", name)
            if name not in known:
                errors.append((loc, unknown(name)))
                continue
            if name in spec.parameters:
                errors.append((loc, f"parameter {name!r} is given both as fixed "
                               f"(parameters.{name}) and as a factor"))
                continue
            if not values:
                errors.append((loc, f"factor {name!r} has no values: give at least one"))
                continue
            seen: dict[str, int] = {}
            good: list[tuple[int, Any]] = []
            for i, value in enumerate(values):
                ok, normal = check((*loc, i), name, value)
                if not ok:
                    continue
                token = _canonical_json(normal)
                if token in seen:
                    errors.append(((*loc, i), f"duplicate value {value!r} in factor {name!r} "
                                   f"(same as factors.{name}[{seen[token]}])"))
                    continue
                seen[token] = i
                good.append((i, normal))
            levels.append((name, good))
        size = math.prod(len(good) for _, good in levels)
        if size > MAX_CONFIGURATIONS:
            errors.append((("factors",), f"the factorial has {size} configurations, more than "
                           f"{MAX_CONFIGURATIONS}"))
        if not errors:
            names = [name for name, _ in levels]
            for combo in itertools.product(*(good for _, good in levels)):
                varying = {name: normal for name, (_, normal) in zip(names, combo, strict=True)}
                locs = {name: ("factors", name, i) for name, (i, _) in zip(names, combo, strict=True)}
                entries.append((varying, locs, ("factors",)))
            canonical_factors = {name: [normal for _, normal in good] for name, good in levels}
    elif spec.configurations is not None:
        if len(spec.configurations) > MAX_CONFIGURATIONS:
            errors.append((("configurations",), f"{len(spec.configurations)} configurations, more "
                           f"than {MAX_CONFIGURATIONS}"))
        for i, entry in enumerate(spec.configurations):
            varying, locs = {}, {}
            for name, value in entry.items():
                loc = ("configurations", i, name)
                if name not in known:
                    errors.append((loc, unknown(name)))
                    continue
                if name in spec.parameters:
                    errors.append((loc, f"parameter {name!r} is already fixed in parameters.{name}; "
                                   "give it in one place"))
                    continue
                ok, normal = check(loc, name, value)
                if ok:
                    varying[name] = normal
                    locs[name] = loc
            entries.append((varying, locs, ("configurations", i)))
        canonical_configurations = [varying for varying, _, _ in entries]
    else:
        entries.append(({}, {}, ()))
    if errors:
        raise _SpecErrors(errors)

    # Resolve each configuration through the model (cross-parameter checks, defaults).
    configurations: list[Configuration] = []
    by_params: dict[str, Loc] = {}
    by_key: dict[str, Loc] = {}
    factorial = spec.factors is not None
    for varying, locs, entry_loc in entries:
        key = config_key(varying)
        try:
            params = model.validate({**fixed, **varying})
        except ParameterError as exc:
            loc = locs.get(exc.name) or (("parameters", exc.name) if exc.name in fixed else entry_loc)
            # In a factorial one value meets many others: say which combination fails.
            reason = f"{exc} (in configuration {key})" if factorial else str(exc)
            if (loc, reason) not in errors:
                errors.append((loc, reason))
            continue
        token = _canonical_json(params)
        if token in by_params:
            errors.append((entry_loc, f"resolves to the same parameters as "
                           f"{format_path(by_params[token])} (fixed parameters and defaults "
                           f"filled in): {token}"))
            continue
        if key in by_key:  # only through a hash collision of shortened keys (see config_key)
            errors.append((entry_loc, f"configuration key {key!r} is also the key of "
                           f"{format_path(by_key[key])}; change a value slightly"))
            continue
        by_params[token] = by_key[key] = entry_loc
        configurations.append(Configuration(key, params, varying))

    baseline_key: str | None = None
    canonical_baseline: dict[str, Any] | None = None
    if spec.baseline is not None:
        wanted: dict[str, Any] = {}
        for name, value in spec.baseline.items():
            loc = ("baseline", name)
            if name not in known:
                errors.append((loc, unknown(name)))
                continue
            ok, normal = check(loc, name, value)
            if ok:
                wanted[name] = normal
        canonical_baseline = wanted
        if not errors:  # after failed configurations, matching would only add noise
            matches = [c for c in configurations
                       if all(c.params[name] == value for name, value in wanted.items())]
            shown = _canonical_json(wanted)
            keys = ", ".join(c.key for c in configurations[:12])
            keys += ", ..." if len(configurations) > 12 else ""
            if len(matches) == 1:
                baseline_key = matches[0].key
            elif not matches:
                errors.append((("baseline",), f"{shown} matches no configuration "
                               f"(configurations: {keys})"))
            else:
                errors.append((("baseline",), f"{shown} matches {len(matches)} configurations "
                               f"({', '.join(c.key for c in matches[:12])}); give more parameters"))

    for field, target in (("precision", spec.precision), ("objective", spec.objective)):
        if target is not None and target.metric not in model.metrics:
            errors.append(((field, "metric"), f"unknown metric {target.metric!r} for model "
                           f"{model.name!r} (known: {', '.join(sorted(model.metrics))})"))
    if spec.check_theory and spec.model != "mmck":
        errors.append((("check_theory",), f"closed forms exist for model 'mmck' only, not "
                       f"{spec.model!r}"))
    if spec.precision is not None and spec.precision.max_replications < spec.replications:
        errors.append((("precision", "max_replications"),
                       f"{spec.precision.max_replications} must be >= replications "
                       f"({spec.replications})"))
    if errors:
        raise _SpecErrors(errors)

    canonical = spec.model_dump(mode="json")
    canonical.update(parameters=fixed, factors=canonical_factors,
                     configurations=canonical_configurations, baseline=canonical_baseline)
    return tuple(configurations), baseline_key, canonical


# ---------------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` and ``2.5e6`` as floats (YAML 1.2; 1.1 needs a dot and
    a signed exponent, so pyyaml would hand the engine the string '1e-3')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(text: str) -> tuple[Any, dict[str, int], list[tuple[str, str]]]:
    """Parse ``text``: (data, line of each field path, duplicate-key errors).

    Raises yaml.YAMLError on a syntax error.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        lines: dict[str, int] = {}
        duplicates: list[tuple[str, str]] = []
        _walk(node, (), lines, duplicates, set())
        return loader.construct_document(node), lines, duplicates
    finally:
        loader.dispose()


def _walk(node: yaml.Node, loc: Loc, lines: dict[str, int],
          duplicates: list[tuple[str, str]], visiting: set[int]) -> None:
    if id(node) in visiting:  # a recursive alias: the constructor handles it
        return
    visiting.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            path = format_path((*loc, key))
            if key in first:
                duplicates.append((path, f"duplicate key {key!r} at line {line} (first given at "
                                   f"line {first[key]})"))
            else:
                first[key] = line
                lines.setdefault(path, line)
            _walk(value_node, (*loc, key), lines, duplicates, visiting)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault(format_path((*loc, i)), item.start_mark.line + 1)
            _walk(item, (*loc, i), lines, duplicates, visiting)
    visiting.discard(id(node))


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    reason = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is not None:
        reason += f" at line {mark.line + 1}, column {mark.column + 1}"
    return reason


def _allowed_keys(parent: Loc) -> list[str] | None:
    if parent == ():
        return list(ExperimentSpec.model_fields)
    if parent == ("precision",):
        return list(Precision.model_fields)
    if parent == ("objective",):
        return list(Objective.model_fields)
    return None


def _validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (field path, reason), with our semantic errors unpacked."""
    out: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _SpecErrors):
            out.extend((format_path(where), reason) for where, reason in cause.errors)
            continue
        kind = error["type"]
        if error["loc"] and error["loc"][-1] == "[key]":
            # A mapping key that is not a string (YAML reads `true:` or `3:` as bool/int). The
            # key is the last part of ``loc``, in pydantic's rendering (True shows as 1): name the
            # mapping instead, and the key as written.
            out.append((format_path(loc[:-1]), f"key {error['input']!r} must be a string "
                        "(quote it in the YAML)"))
            continue
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            reason = f"unknown key {loc[-1]!r}"
            if allowed:
                reason += f" (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            reason = "required field is missing"
        elif kind == "value_error" and cause is not None:
            reason = str(cause)
        else:
            msg = error["msg"]
            reason = f"{msg[:1].lower()}{msg[1:]} (got {error['input']!r})"
        out.append((format_path(loc), reason))
    return out


def parse_experiment(data: Mapping[str, Any], source: Path | str | None = None) -> ExperimentSpec:
    """Validate an experiment given as a mapping (e.g. parsed YAML); raises ExperimentError."""
    return _parse(data, Path(source) if source is not None else None, {})


def _parse(data: Any, source: Path | None, lines: dict[str, int],
           extra: list[tuple[str, str]] | None = None) -> ExperimentSpec:
    if not isinstance(data, Mapping):
        kind = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ExperimentError(source, [("", f"expected a mapping of experiment fields "
                                        f"(name: ..., model: ...), got {kind}")])
    errors = list(extra or [])
    try:
        spec = ExperimentSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise ExperimentError(source, errors + _validation_errors(exc), lines) from None
    if errors:
        raise ExperimentError(source, errors, lines)
    spec._source = source
    return spec


def load_experiment(path: Path | str) -> ExperimentSpec:
    """Load and validate one experiment file; raises ExperimentError naming every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExperimentError(path, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentError(path, [("", f"cannot read the file: not UTF-8 text "
                                      f"({exc.reason} at byte {exc.start})")]) from None
    try:
        data, lines, duplicates = _read_yaml(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(path, [("", _yaml_reason(exc))]) from None
    if duplicates:  # pyyaml would silently keep the last value
        raise ExperimentError(path, duplicates)
    extra: list[tuple[str, str]] = []
    if isinstance(data, Mapping) and isinstance(data.get("name"), str) and data["name"] != path.stem:
        extra.append(("name", f"name {data['name']!r} must match the file name {path.stem!r} "
                      f"(rename the file or the experiment)"))
    return _parse(data, path, lines, extra)


def load_experiments(directory: Path | str | None = None,
                     ) -> tuple[list[ExperimentSpec], list[ExperimentError]]:
    """Every ``*.yaml``/``*.yml`` in ``directory`` (default ``experiments_dir()``), sorted by name.

    Returns the valid specs and one error per bad file; a bad file never stops the others. A
    second file with an already used experiment name is an error. Hidden files are skipped
    (editors' temporary files).
    """
    directory = Path(directory) if directory is not None else experiments_dir()
    if not directory.is_dir():
        reason = "not a directory" if directory.exists() else "no such directory"
        return [], [ExperimentError(directory, [("", f"cannot list experiments: {reason} "
                                                 f"(set {EXPERIMENTS_DIR_ENV})")])]
    files = sorted((p for p in directory.iterdir()
                    if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")),
                   key=lambda p: p.name)
    specs: list[ExperimentSpec] = []
    errors: list[ExperimentError] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            spec = load_experiment(path)
        except ExperimentError as exc:
            errors.append(exc)
            continue
        if spec.name in seen:
            errors.append(ExperimentError(path, [("name", f"experiment {spec.name!r} is already "
                                                  f"defined in {seen[spec.name]}")]))
            continue
        seen[spec.name] = path
        specs.append(spec)
    return specs, errors


def experiments_dir() -> Path:
    """Where experiment files live: ``$SIMLAB_EXPERIMENTS_DIR``, else ``experiments/`` in the
    project (the parent of this package), else ``./experiments`` if that exists."""
    env = os.environ.get(EXPERIMENTS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    project = Path(__file__).resolve().parent.parent / "experiments"
    if project.is_dir():
        return project
    cwd = Path.cwd() / "experiments"
    return cwd if cwd.is_dir() else project


__all__ = [
    "Configuration",
    "ExperimentError",
    "ExperimentSpec",
    "Objective",
    "Precision",
    "config_key",
    "experiments_dir",
    "load_experiment",
    "load_experiments",
    "parse_experiment",
]
