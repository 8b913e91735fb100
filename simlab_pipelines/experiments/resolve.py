"""Resolving a structurally valid spec against its model: fixed parameters, the configurations
(full factorial or explicit list), the baseline, the analysis fields and the canonical form.

Every problem is collected with its field path and raised together as SpecErrors, so a user fixes
a file in one pass.
"""

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.models.base import Model
from engine.parameters import Parameter, ParameterError
from simlab_pipelines.experiments import designs, scale
from simlab_pipelines.experiments import search as searches
from simlab_pipelines.experiments.constraints import check_constraints
from simlab_pipelines.experiments.errors import Loc, SpecErrors, format_path
from simlab_pipelines.experiments.keys import Configuration, canonical_json, config_key
from simlab_pipelines.experiments.models import ExperimentModel, check_run_length, resolve_model

if TYPE_CHECKING:  # spec.py imports this module
    from simlab_pipelines.experiments.spec import ExperimentSpec

MAX_CONFIGURATIONS = 10_000  # a factorial larger than this is almost surely a typo
# warm-up + horizon may be at most this many times the model's default run length (_check_length)
MAX_RUN_LENGTH_FACTOR = 10_000
MAX_REPLICATIONS = 100_000  # per configuration (spec.py bounds the fields with it)
DEFAULT_TIMEOUT_SECONDS = 3600.0  # one simulation's wall-time limit unless the file says otherwise


@dataclass
class Checker:
    """Checks values against the model's parameters and collects (field path, reason) errors."""

    model: Model
    errors: list[tuple[Loc, str]] = field(default_factory=list)

    @property
    def known(self) -> dict[str, Parameter]:
        return {p.name: p for p in self.model.parameters}

    def unknown(self, name: str) -> str:
        return (f"unknown parameter {name!r} for model {self.model.name!r} "
                f"(known: {', '.join(sorted(self.known))})")

    def check(self, loc: Loc, name: str, value: Any) -> tuple[bool, Any]:
        """(True, the normalised value) or (False, None) with the error recorded at ``loc``."""
        try:
            return True, self.known[name].validate(value)
        except ParameterError as exc:
            self.errors.append((loc, str(exc)))
            return False, None

    def values(self, section: str, given: dict[str, Any]) -> dict[str, Any]:
        """The valid, normalised values of a ``{parameter: value}`` mapping at ``section``."""
        out: dict[str, Any] = {}
        for name, value in given.items():
            loc: Loc = (section, name)
            if name not in self.known:
                self.errors.append((loc, self.unknown(name)))
                continue
            ok, normal = self.check(loc, name, value)
            if ok:
                out[name] = normal
        return out

    def raise_if_any(self) -> None:
        if self.errors:
            raise SpecErrors(self.errors)


# (varying values, where each value came from, where the entry is)
Entry = tuple[dict[str, Any], dict[str, Loc], Loc]


@dataclass(frozen=True)
class Resolved:
    """What resolving adds to a spec."""

    configurations: tuple[Configuration, ...]
    baseline_key: str | None
    canonical: dict[str, Any]  # the normalised file: what spec_hash hashes
    model: ExperimentModel
    design: designs.DesignPoints | None = None  # with ``design``: the generated points
    search: searches.SearchSpace | None = None  # with ``search``: the resolved space


def resolve_spec(spec: "ExperimentSpec", directory: Path | None = None) -> Resolved:
    """Check ``spec`` against its model and resolve configurations, baseline and canonical form.

    ``directory`` is the experiment file's (where path models and commands live). Raises
    SpecErrors with every problem found (the structure is already valid here).
    """
    resolved_model = resolve_model(spec.model, directory)
    model = resolved_model.model
    checker = Checker(model, check_run_length(spec.horizon, model))
    fixed = checker.values("parameters", spec.parameters)
    entries, canonical_varying, design = _entries(spec, checker)
    space = _searched(spec, checker)
    checker.raise_if_any()
    generated = spec.factors is not None or spec.design is not None  # not the file's entries
    configurations = _configurations(model, fixed, entries, generated, checker)
    _check_scale(spec, len(configurations), checker)
    baseline_key, canonical_baseline = (_baseline(spec, configurations, checker)
                                        if spec.search is None else (None, None))
    _check_analysis(spec, model, checker)
    _check_length(spec, model, checker)
    checker.raise_if_any()
    canonical = spec.model_dump(mode="json")
    if spec.timeout_seconds == DEFAULT_TIMEOUT_SECONDS:  # files that leave it keep their hash
        canonical.pop("timeout_seconds")
    canonical.update({"parameters": fixed, "baseline": canonical_baseline, "factors": None,
                      "configurations": None, **canonical_varying})
    if space is None:  # files without a search keep the spec hash they had
        canonical.pop("search", None)
    else:
        canonical["search"] = searches.canonical(spec.search, space)
    return Resolved(tuple(configurations), baseline_key, canonical, resolved_model, design,
                    space)


def _check_scale(spec: "ExperimentSpec", configurations: int, checker: Checker) -> None:
    """No more simulations than this machine can plan (experiments/scale.py), named before
    anything runs; a search's are bounded by its budget."""
    if spec.search is not None or not configurations:
        return
    loc: Loc = ("precision", "max_replications") if spec.precision else ("replications",)
    replications = spec.precision.max_replications if spec.precision else spec.replications
    reason = scale.simulations_error(configurations, replications)
    if reason:
        checker.errors.append((loc, reason))


def _searched(spec: "ExperimentSpec", checker: Checker) -> searches.SearchSpace | None:
    """With ``search``: the resolved space, and what a search rules out elsewhere in the file
    (its configurations are proposed from the results: nothing can name one at load)."""
    if spec.search is None:
        return None
    search = spec.search
    if spec.replications != search.replications:
        checker.errors.append((("replications",), f"{spec.replications} differs from "
                               f"search.replications ({search.replications}): give it once, "
                               "under search"))
    for name, why in (("baseline", "a search's configurations are proposed as it runs: none "
                       "can be named as the baseline"),
                      ("precision", "a search sets its replications itself (search.replications, "
                       "then the clean-up's second stage up to search.max_replications)")):
        if getattr(spec, name) is not None:
            checker.errors.append(((name,), f"not allowed with search: {why}"))
    metrics = [*checker.model.metrics, *spec.responses]
    if search.method != "threshold":
        if spec.objective is None:
            checker.errors.append((("objective",), f"required with search method "
                                   f"{search.method!r}: {{metric, direction, indifference_zone}} "
                                   "(what the search minimises or maximises)"))
        elif spec.objective.indifference_zone is None:
            checker.errors.append((("objective", "indifference_zone"), "required with search: "
                                   "the clean-up selects the best within it, with its guarantee"))
    space, errors = searches.check_search(search, checker.known, spec.parameters, metrics,
                                          MAX_REPLICATIONS)
    checker.errors += errors
    return space


def _entries(spec: "ExperimentSpec", checker: Checker
             ) -> tuple[list[Entry], dict[str, Any], designs.DesignPoints | None]:
    """The varying values of each configuration to be, their canonical form in the file, and the
    generated design (with ``design``)."""
    given = [f for f in ("factors", "configurations", "design", "search")
             if getattr(spec, f) is not None]
    if len(given) > 1:
        checker.errors.append(((given[-1],), "give either factors (a full factorial) or "
                               "configurations (an explicit list) or a design or a search, only "
                               f"one of them (got {' and '.join(given)})"))
        return [], {}, None
    if spec.search is not None:  # proposed from the results as the search runs (plan.py)
        return [], {}, None
    if spec.factors is not None:
        return (*_factorial(spec, checker), None)
    if spec.configurations is not None:
        return (*_explicit(spec, checker), None)
    if spec.design is not None:
        return _designed(spec, checker)
    return [({}, {}, ())], {}, None


def _designed(spec: "ExperimentSpec", checker: Checker
              ) -> tuple[list[Entry], dict[str, Any], designs.DesignPoints | None]:
    """A design's configurations (designs.py); its canonical form names the generator's version,
    so another scipy or SALib that draws other points changes the spec hash."""
    metrics = [*checker.model.metrics, *getattr(spec, "responses", {})]
    ranges, errors = designs.check_design(spec.design, checker.known, spec.parameters,
                                          metrics=metrics)
    checker.errors += errors
    if errors:
        return [], {}, None
    points = designs.generate(spec.design, ranges)
    if len(points.configurations) > MAX_CONFIGURATIONS:
        checker.errors.append((("design", "points"), f"{len(points.configurations)} "
                               f"configurations, more than {MAX_CONFIGURATIONS}"))
        return [], {}, None
    locs = {f.name: ("design", "factors", f.name) for f in ranges}
    entries: list[Entry] = [(dict(c), locs, ("design",)) for c in points.configurations]
    canonical = spec.design.model_dump(mode="json")
    for f in ranges:
        canonical["factors"][f.name]["type"] = f.type
    canonical["generator"] = points.generator
    return entries, {"design": canonical}, points


def _factorial(spec: "ExperimentSpec", checker: Checker) -> tuple[list[Entry], dict[str, Any]]:
    if not spec.factors:
        checker.errors.append((("factors",), "no factors: give at least one, or leave factors out"))
    levels: list[tuple[str, list[tuple[int, Any]]]] = []
    for name, values in spec.factors.items():
        loc: Loc = ("factors", name)
        if name not in checker.known:
            checker.errors.append((loc, checker.unknown(name)))
            continue
        if name in spec.parameters:
            checker.errors.append((loc, f"parameter {name!r} is given both as fixed "
                                   f"(parameters.{name}) and as a factor"))
            continue
        if not values:
            checker.errors.append((loc, f"factor {name!r} has no values: give at least one"))
            continue
        levels.append((name, _levels(loc, name, values, checker)))
    size = math.prod(len(good) for _, good in levels)
    if size > MAX_CONFIGURATIONS:
        checker.errors.append((("factors",), f"the factorial has {size} configurations, more "
                               f"than {MAX_CONFIGURATIONS}"))
    if checker.errors:
        return [], {}
    names = [name for name, _ in levels]
    entries: list[Entry] = []
    for combo in itertools.product(*(good for _, good in levels)):
        varying = {name: normal for name, (_, normal) in zip(names, combo, strict=True)}
        locs = {name: ("factors", name, i) for name, (i, _) in zip(names, combo, strict=True)}
        entries.append((varying, locs, ("factors",)))
    return entries, {"factors": {name: [normal for _, normal in good] for name, good in levels}}


def _levels(loc: Loc, name: str, values: list[Any], checker: Checker) -> list[tuple[int, Any]]:
    """A factor's valid, distinct values with their positions in the file."""
    seen: dict[str, int] = {}
    good: list[tuple[int, Any]] = []
    for i, value in enumerate(values):
        ok, normal = checker.check((*loc, i), name, value)
        if not ok:
            continue
        token = canonical_json(normal)
        if token in seen:
            checker.errors.append(((*loc, i), f"duplicate value {value!r} in factor {name!r} "
                                   f"(same as factors.{name}[{seen[token]}])"))
            continue
        seen[token] = i
        good.append((i, normal))
    return good


def _explicit(spec: "ExperimentSpec", checker: Checker) -> tuple[list[Entry], dict[str, Any]]:
    if len(spec.configurations) > MAX_CONFIGURATIONS:
        checker.errors.append((("configurations",), f"{len(spec.configurations)} configurations, "
                               f"more than {MAX_CONFIGURATIONS}"))
    entries: list[Entry] = []
    for i, entry in enumerate(spec.configurations):
        varying, locs = {}, {}
        for name, value in entry.items():
            loc: Loc = ("configurations", i, name)
            if name not in checker.known:
                checker.errors.append((loc, checker.unknown(name)))
                continue
            if name in spec.parameters:
                checker.errors.append((loc, f"parameter {name!r} is already fixed in "
                                       f"parameters.{name}; give it in one place"))
                continue
            ok, normal = checker.check(loc, name, value)
            if ok:
                varying[name] = normal
                locs[name] = loc
        entries.append((varying, locs, ("configurations", i)))
    return entries, {"configurations": [varying for varying, _, _ in entries]}


def _configurations(model: Model, fixed: dict[str, Any], entries: list[Entry],
                    factorial: bool, checker: Checker) -> list[Configuration]:
    """Each entry through the model (cross-parameter checks, defaults); duplicates rejected."""
    configurations: list[Configuration] = []
    by_params: dict[str, Loc] = {}
    by_key: dict[str, Loc] = {}
    for varying, locs, entry_loc in entries:
        key = config_key(varying)
        try:
            params = model.validate({**fixed, **varying})
        except ParameterError as exc:
            loc = locs.get(exc.name) or (("parameters", exc.name) if exc.name in fixed else entry_loc)
            # In a factorial one value meets many others: say which combination fails.
            reason = f"{exc} (in configuration {key})" if factorial else str(exc)
            if (loc, reason) not in checker.errors:
                checker.errors.append((loc, reason))
            continue
        token = canonical_json(params)
        if token in by_params:
            checker.errors.append((entry_loc, f"resolves to the same parameters as "
                                   f"{format_path(by_params[token])} (fixed parameters and "
                                   f"defaults filled in): {token}"))
            continue
        if key in by_key:  # only through a hash collision of shortened keys (see config_key)
            checker.errors.append((entry_loc, f"configuration key {key!r} is also the key of "
                                   f"{format_path(by_key[key])}; change a value slightly"))
            continue
        by_params[token] = by_key[key] = entry_loc
        configurations.append(Configuration(key, params, varying))
    return configurations


def _baseline(spec: "ExperimentSpec", configurations: list[Configuration],
              checker: Checker) -> tuple[str | None, dict[str, Any] | None]:
    """The baseline's key (exactly one configuration must match it) and its canonical form."""
    if spec.baseline is None:
        return None, None
    wanted = checker.values("baseline", spec.baseline)
    if checker.errors:  # after failed configurations, matching would only add noise
        return None, wanted
    matches = [c for c in configurations
               if all(c.params[name] == value for name, value in wanted.items())]
    if len(matches) == 1:
        return matches[0].key, wanted
    shown = canonical_json(wanted)
    if not matches:
        keys = ", ".join(c.key for c in configurations[:12])
        keys += ", ..." if len(configurations) > 12 else ""
        checker.errors.append((("baseline",), f"{shown} matches no configuration "
                               f"(configurations: {keys})"))
    else:
        checker.errors.append((("baseline",), f"{shown} matches {len(matches)} configurations "
                               f"({', '.join(c.key for c in matches[:12])}); give more "
                               "parameters"))
    return None, wanted


def _check_length(spec: "ExperimentSpec", model: Model, checker: Checker) -> None:
    """A run length the model can finish: warm-up + horizon at most MAX_RUN_LENGTH_FACTOR times
    the model's default (which its author chose as a run of sensible cost). Without a default
    (a command that declares none) only the engine's absolute bounds apply."""
    default = model.default_warmup + model.default_horizon
    length = ((spec.warmup if spec.warmup is not None else model.default_warmup)
              + (spec.horizon if spec.horizon is not None else model.default_horizon))
    if not math.isfinite(default) or default <= 0 or length <= MAX_RUN_LENGTH_FACTOR * default:
        return
    field_name = "horizon" if spec.horizon is not None else "warmup"
    checker.errors.append(((field_name,), f"warm-up + horizon = {length:g} is more than "
                           f"{MAX_RUN_LENGTH_FACTOR:,} times the default run length of model "
                           f"{model.name!r} ({default:g}): one simulation that long would not finish "
                           "(nor fit its time limit); shorten it, and add replications instead"))


def _check_analysis(spec: "ExperimentSpec", model: Model, checker: Checker) -> None:
    """Metrics named by the analysis exist; the theory check and the precision bounds fit."""
    for section, target in (("precision", spec.precision), ("objective", spec.objective)):
        if target is not None and target.metric not in {*model.metrics, *spec.responses}:
            checker.errors.append(((section, "metric"), f"unknown metric {target.metric!r} for "
                                   f"model {model.name!r} (known: "
                                   f"{', '.join([*sorted(model.metrics), *spec.responses])})"))
    checker.errors += check_constraints(spec.constraints, [*model.metrics, *spec.responses],
                                        model.name)
    if spec.check_theory and spec.model != "mmck":
        checker.errors.append((("check_theory",), f"closed forms exist for model 'mmck' only, "
                               f"not {spec.model!r}"))
    if spec.precision is not None and spec.precision.max_replications < spec.replications:
        checker.errors.append((("precision", "max_replications"),
                               f"{spec.precision.max_replications} must be >= replications "
                               f"({spec.replications})"))
