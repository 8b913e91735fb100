"""The ``search:`` field of an experiment file: the schema, its checks against the model, and the
resolved search space.

A search replaces ``factors``/``configurations``/``design``: instead of a list of configurations
fixed at load, an optimiser proposes them round by round from the results (``plan.py`` and
``simlab_pipelines/search.py`` replay the rounds)::

    search:
      method: tpe           # tpe | gp | cmaes | random | grid | threshold
      seed: 7               # the search's own seed
      budget: {configurations: 64, simulations: 4000}
      batch: 8              # proposals per round
      replications: 10      # first-stage replications per proposal
      factors:
        pool_size: {min: 1, max: 64}              # integer: the parameter's type
        client_timeout: {min: 0.1, max: 10, scale: log}
        retries: {values: [0, 1, 2, 3]}

or the breaking point of one factor (``method: threshold``: ``factor``, ``min``, ``max``,
``metric``, ``limit``, ``tolerance``).

Checks that need the model (unknown parameters, integer parameters, bounds, unknown metrics) are
made here and reported by field path (``search.factors.pool_size.max``). The optimiser's name
and version are part of the canonical form, so another Optuna, which may propose other points,
changes the spec hash (as a design's generator does). No Dagster and no Optuna import here.
"""

import importlib.metadata
import importlib.util
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.parameters import Parameter, ParameterError
from simlab_pipelines.experiments.keys import Configuration, config_key

Loc = tuple[str | int, ...]

# Bump when the replay proposes other configurations for the same file and optimiser version
# (part of the spec hash).
SEARCH_VERSION = "2"  # 2: a round asks again for repeated proposals
METHODS = ("tpe", "gp", "cmaes", "random", "grid", "threshold")
OPTIMISERS = ("tpe", "gp", "cmaes", "random")  # proposals from an Optuna sampler
MAX_SEARCH_CONFIGURATIONS = 10_000  # as a factorial's limit
MAX_SEED = 2**32 - 1  # Optuna's samplers seed numpy's RandomState, which takes 32 bits
DEFAULT_BATCH = 8
# Floats of a proposal keep this many significant digits (as designs do): short, readable keys.
SIGNIFICANT_DIGITS = 6

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class SearchFactor(BaseModel):
    """One factor of a search: a range (``min``, ``max``, ``scale``) or a finite set (``values``)."""

    model_config = _STRICT

    min: int | float | None = Field(default=None, allow_inf_nan=False)
    max: int | float | None = Field(default=None, allow_inf_nan=False)
    scale: Literal["linear", "log"] | None = None
    values: list[Any] | None = Field(default=None, min_length=1)


class Budget(BaseModel):
    """When a search stops proposing: whichever of the two comes first."""

    model_config = _STRICT

    configurations: int | None = Field(default=None, ge=1, le=MAX_SEARCH_CONFIGURATIONS)
    simulations: int | None = Field(default=None, ge=1)


class Search(BaseModel):
    """The ``search`` field of an experiment file."""

    model_config = _STRICT

    # tpe unless the file says otherwise: the best of Optuna's samplers at simlab's budgets
    # (BENCHMARKS.md, "Search"), and it takes constraints
    method: Literal["tpe", "gp", "cmaes", "random", "grid", "threshold"] = "tpe"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    budget: Budget | None = None
    batch: int = Field(default=DEFAULT_BATCH, ge=1, le=MAX_SEARCH_CONFIGURATIONS)
    replications: int = Field(ge=2, le=100_000)
    # the clean-up's and the threshold search's most replications of one configuration
    max_replications: int | None = Field(default=None, ge=2, le=100_000)
    factors: dict[str, SearchFactor] | None = None
    # method threshold: the breaking point of one factor
    factor: str | None = None
    min: int | float | None = Field(default=None, allow_inf_nan=False)
    max: int | float | None = Field(default=None, allow_inf_nan=False)
    metric: str | None = None
    limit: int | float | None = Field(default=None, allow_inf_nan=False)
    tolerance: int | float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # how the metric moves as the factor grows (default increasing): decreasing makes the
    # breaking point the smallest value within the limit (analysis/threshold.py)
    direction: Literal["increasing", "decreasing"] | None = None


_THRESHOLD_FIELDS = ("factor", "min", "max", "metric", "limit", "tolerance")


THRESHOLD_RESERVE = 2  # decisions beyond bisecting both edges of a stretch of unclear values


def threshold_points(low: float, high: float, tolerance: float, integer: bool) -> int:
    """The most factor values a breaking-point search decides (``analysis/threshold.py``, whose
    coverage argument counts on it): round 0's three, twice the halvings from half the range
    down to the tolerance (a stretch of values within noise of the limit has two edges to
    narrow down), and THRESHOLD_RESERVE."""
    step = max(tolerance, 1.0) if integer else tolerance
    span = (high - low) / 2
    halvings = max(0, math.ceil(math.log2(span / step))) if span > step else 0
    return 3 + 2 * halvings + THRESHOLD_RESERVE


@dataclass(frozen=True)
class Threshold:
    """A threshold search, resolved: the largest ``factor`` in [min, max] whose ``metric`` stays
    within ``limit``, to ``tolerance`` (the smallest, when the metric falls as the factor grows:
    ``increasing`` False)."""

    factor: str
    min: float
    max: float
    metric: str
    limit: float
    tolerance: float
    integer: bool  # the factor is an integer parameter
    increasing: bool = True  # the metric grows with the factor (search.direction)

    @property
    def max_points(self) -> int:
        """The most factor values the search can evaluate (``threshold_points``)."""
        return threshold_points(self.min, self.max, self.tolerance, self.integer)


@dataclass(frozen=True)
class SpaceFactor:
    """One resolved factor: ``kind`` int or float (a range) or values (a finite set)."""

    name: str
    kind: Literal["int", "float", "values"]
    min: float | int | None = None
    max: float | int | None = None
    log: bool = False
    values: tuple[Any, ...] = ()  # normalised by the parameter; numbers sorted (an order)
    ordered: bool = True  # values: all numbers, offered to the optimiser as an ordered index

    @property
    def size(self) -> int | None:
        """How many values the factor can take (None: a continuous range)."""
        if self.kind == "values":
            return len(self.values)
        if self.kind == "int":
            return int(self.max) - int(self.min) + 1
        return None

    def grid(self) -> list[Any]:
        """Every value, in order (finite factors only)."""
        if self.kind == "values":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.min), int(self.max) + 1))
        raise ValueError(f"factor {self.name!r} is continuous: it has no grid")


@dataclass(frozen=True)
class SearchSpace:
    """A resolved ``search``: what the replay needs."""

    method: str
    seed: int
    batch: int
    replications: int
    max_replications: int
    budget_configurations: int | None  # None: no limit on configurations
    budget_simulations: int | None     # None: no limit on first-stage simulations
    factors: tuple[SpaceFactor, ...]
    threshold: Threshold | None
    optimiser: dict[str, str]          # name, version, sampler: part of the spec hash

    @property
    def names(self) -> list[str]:
        """The parameters the search varies (a threshold search: its one factor)."""
        if self.threshold is not None:
            return [self.threshold.factor]
        return [f.name for f in self.factors]

    @property
    def size(self) -> int | None:
        """Configurations in the space (None: a continuous factor makes it infinite)."""
        sizes = [f.size for f in self.factors]
        return None if any(s is None for s in sizes) else math.prod(sizes)

    def round_value(self, factor: SpaceFactor, value: Any) -> Any:
        """A proposed value as a parameter: ints as ints, floats to SIGNIFICANT_DIGITS."""
        if factor.kind == "int":
            return int(value)
        if factor.kind == "float":
            return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}")
        return value


def default_max_replications(replications: int, cap: int) -> int:
    """The clean-up's bound when the file gives none: ten first stages, at least 100."""
    return min(max(10 * replications, 100), cap)


def torch_available() -> bool:
    """Whether PyTorch can be imported (Optuna's GPSampler needs it)."""
    return importlib.util.find_spec("torch") is not None


def optimiser_identity(method: str) -> dict[str, str]:
    """What proposes a method's configurations, with its version (the spec hash names it)."""
    if method in OPTIMISERS:
        sampler = {"tpe": "TPESampler", "gp": "GPSampler", "cmaes": "CmaEsSampler",
                   "random": "RandomSampler"}[method]
        found = {"name": "optuna", "version": importlib.metadata.version("optuna"),
                 "sampler": sampler, "simlab": SEARCH_VERSION}
        if method == "cmaes":
            found["cmaes"] = importlib.metadata.version("cmaes")
        if method == "gp" and torch_available():
            found["torch"] = importlib.metadata.version("torch")
        return found
    return {"name": "simlab", "version": SEARCH_VERSION, "sampler": method}


def check_search(search: Search, parameters: Mapping[str, Parameter], fixed: Collection[str],
                 metrics: Collection[str], max_replications_cap: int,
                 loc: Loc = ("search",)) -> tuple[SearchSpace | None, list[tuple[Loc, str]]]:
    """The resolved space and every problem with ``search``, by field path."""
    errors: list[tuple[Loc, str]] = []
    method = search.method
    if method == "gp" and not torch_available():
        errors.append(((*loc, "method"), "method 'gp' needs PyTorch (Optuna's GPSampler uses it), "
                       "which is not installed here; install torch, or choose tpe, cmaes or "
                       "random"))
    max_replications = search.max_replications
    if max_replications is None:
        max_replications = default_max_replications(search.replications, max_replications_cap)
    elif max_replications < search.replications:
        errors.append(((*loc, "max_replications"), f"{max_replications} must be >= "
                       f"search.replications ({search.replications})"))
    elif method != "threshold" and max_replications < search.replications + 2:
        errors.append(((*loc, "max_replications"), f"{max_replications} leaves the clean-up "
                       f"fewer than 2 fresh replications after the first stage of "
                       f"{search.replications}: give at least {search.replications + 2}"))
    elif max_replications > max_replications_cap:
        errors.append(((*loc, "max_replications"), f"{max_replications} is more than "
                       f"{max_replications_cap}"))
    threshold, factors = None, ()
    if method == "threshold":
        threshold = _check_threshold(search, parameters, fixed, metrics, loc, errors)
    else:
        factors = _check_factors(search, parameters, fixed, loc, errors)
    space_size = None
    if factors and not errors:
        sizes = [f.size for f in factors]
        space_size = None if None in sizes else math.prod(sizes)
    budget_configurations, budget_simulations = _check_budget(search, space_size, loc, errors)
    if errors:
        return None, errors
    return SearchSpace(method, search.seed, search.batch, search.replications, max_replications,
                       budget_configurations, budget_simulations, tuple(factors), threshold,
                       optimiser_identity(method)), errors


def _check_budget(search: Search, space_size: int | None, loc: Loc,
                  errors: list[tuple[Loc, str]]) -> tuple[int | None, int | None]:
    budget = search.budget
    method = search.method
    if budget is not None and budget.configurations is None and budget.simulations is None:
        errors.append(((*loc, "budget"), "give configurations, simulations or both (the search "
                       "stops at whichever comes first)"))
        return None, None
    if budget is None:
        if method in OPTIMISERS:
            errors.append(((*loc, "budget"), f"required for method {method!r}: "
                           "{configurations: N, simulations: M} (either or both)"))
        return None, None
    configurations, simulations = budget.configurations, budget.simulations
    if method == "threshold":
        if configurations is not None:
            errors.append(((*loc, "budget", "configurations"), "method threshold evaluates "
                           "points of one factor: give budget.simulations only"))
        return None, simulations
    if configurations is not None and search.batch > configurations:
        default = "" if "batch" in search.model_fields_set else " (the default: set batch)"
        errors.append(((*loc, "batch"), f"{search.batch} proposals per round{default} is more "
                       f"than the budget of {configurations} configurations"))
    if simulations is not None and simulations < search.replications:
        errors.append(((*loc, "budget", "simulations"), f"{simulations} is less than one "
                       f"configuration's first stage (search.replications = "
                       f"{search.replications})"))
    if (configurations is not None and space_size is not None and method != "grid"
            and configurations > space_size):
        configurations = space_size  # the space runs out first: nothing to reject
    return configurations, simulations


def _check_factors(search: Search, parameters: Mapping[str, Parameter], fixed: Collection[str],
                   loc: Loc, errors: list[tuple[Loc, str]]) -> list[SpaceFactor]:
    for name in (*_THRESHOLD_FIELDS, "direction"):
        if getattr(search, name) is not None:
            errors.append(((*loc, name), f"only for method threshold (method is "
                           f"{search.method!r}: give the factors under search.factors)"))
    if not search.factors:
        errors.append(((*loc, "factors"), "no factors: give at least one, each a range "
                       "{min, max} or a set {values: [...]}"))
        return []
    out: list[SpaceFactor] = []
    for name, factor in search.factors.items():
        where = (*loc, "factors", name)
        if name not in parameters:
            errors.append((where, f"unknown parameter {name!r} (known: "
                           f"{', '.join(sorted(parameters))})"))
            continue
        if name in fixed:
            errors.append((where, f"parameter {name!r} is given both as fixed "
                           f"(parameters.{name}) and as a search factor"))
            continue
        found = _factor(name, factor, parameters[name], search.method, where, errors)
        if found is not None:
            out.append(found)
    if search.method == "grid" and not errors:
        size = math.prod(f.size for f in out)
        if size > MAX_SEARCH_CONFIGURATIONS:
            errors.append(((*loc, "factors"), f"the grid has {size} configurations, more than "
                           f"{MAX_SEARCH_CONFIGURATIONS}; search it with tpe instead"))
    return out


def _factor(name: str, factor: SearchFactor, parameter: Parameter, method: str, where: Loc,
            errors: list[tuple[Loc, str]]) -> SpaceFactor | None:
    bounded = factor.min is not None or factor.max is not None
    if factor.values is not None:
        if bounded or factor.scale is not None:
            errors.append((where, "give either values (a finite set) or min and max (a range), "
                           "not both"))
            return None
        return _values_factor(name, factor.values, parameter, where, errors)
    if not bounded:
        errors.append((where, "give min and max (a range) or values (a finite set)"))
        return None
    for side in ("min", "max"):
        if getattr(factor, side) is None:
            errors.append(((*where, side), f"required with {'max' if side == 'min' else 'min'} "
                           "(a range needs both ends)"))
    if factor.min is None or factor.max is None:
        return None
    integer = parameter.type is int
    before = len(errors)
    for side in ("min", "max"):
        value = getattr(factor, side)
        if integer and not isinstance(value, int):
            errors.append(((*where, side), f"parameter {name!r} is an integer: give an integer "
                           f"(got {value!r})"))
            continue
        try:
            parameter.validate(value)
        except ParameterError as exc:
            errors.append(((*where, side), str(exc)))
    if len(errors) > before:
        return None
    if factor.min >= factor.max:
        errors.append(((*where, "max"), f"{factor.max!r} must be greater than min "
                       f"({factor.min!r})"))
        return None
    log = factor.scale == "log"
    if log and factor.min <= 0:
        errors.append(((*where, "min"), f"a log scale needs min > 0 (got {factor.min!r})"))
        return None
    if not integer and method == "grid":
        errors.append((where, f"method grid needs a finite set, and {name!r} is a continuous "
                       "parameter: give values: [...]"))
        return None
    if integer:
        return SpaceFactor(name, "int", int(factor.min), int(factor.max), log)
    return SpaceFactor(name, "float", float(factor.min), float(factor.max), log)


def _values_factor(name: str, values: list[Any], parameter: Parameter, where: Loc,
                   errors: list[tuple[Loc, str]]) -> SpaceFactor | None:
    normal: list[Any] = []
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        try:
            checked = parameter.validate(value)
        except ParameterError as exc:
            errors.append(((*where, "values", i), str(exc)))
            continue
        token = repr(checked)
        if token in seen:
            errors.append(((*where, "values", i), f"duplicate value {value!r} (same as "
                           f"values[{seen[token]}])"))
            continue
        seen[token] = i
        normal.append(checked)
    if len(normal) != len(values):
        return None
    ordered = None not in normal
    if ordered:
        normal.sort()
    return SpaceFactor(name, "values", values=tuple(normal), ordered=ordered)


def _check_threshold(search: Search, parameters: Mapping[str, Parameter],
                     fixed: Collection[str], metrics: Collection[str], loc: Loc,
                     errors: list[tuple[Loc, str]]) -> Threshold | None:
    if search.factors is not None:
        errors.append(((*loc, "factors"), "method threshold searches one factor: give factor, "
                       "min and max instead"))
    missing = [f for f in _THRESHOLD_FIELDS if getattr(search, f) is None]
    for name in missing:
        errors.append(((*loc, name), "required for method threshold"))
    if missing:
        return None
    name, before = search.factor, len(errors)
    if name not in parameters:
        errors.append(((*loc, "factor"), f"unknown parameter {name!r} (known: "
                       f"{', '.join(sorted(parameters))})"))
        return None
    if name in fixed:
        errors.append(((*loc, "factor"), f"parameter {name!r} is also fixed in "
                       f"parameters.{name}; give it in one place"))
    parameter = parameters[name]
    integer = parameter.type is int
    for side in ("min", "max"):
        value = getattr(search, side)
        if integer and not isinstance(value, int):
            errors.append(((*loc, side), f"parameter {name!r} is an integer: give an integer "
                           f"(got {value!r})"))
            continue
        try:
            parameter.validate(value)
        except ParameterError as exc:
            errors.append(((*loc, side), str(exc)))
    if search.metric not in metrics:
        errors.append(((*loc, "metric"), f"unknown metric {search.metric!r} (known: "
                       f"{', '.join(sorted(metrics))})"))
    if len(errors) > before:
        return None
    if search.min >= search.max:
        errors.append(((*loc, "max"), f"{search.max!r} must be greater than min "
                       f"({search.min!r})"))
        return None
    if search.tolerance >= search.max - search.min:
        errors.append(((*loc, "tolerance"), f"{search.tolerance!r} is not narrower than the "
                       f"range [{search.min!r}, {search.max!r}]"))
        return None
    return Threshold(name, search.min, search.max, search.metric, float(search.limit),
                     float(search.tolerance), integer, search.direction != "decreasing")


def probes(space: SearchSpace, model: Any, fixed: Mapping[str, Any]) -> list[Configuration]:
    """Configurations that show every value a factor can take at least once (a range: its
    ends), the others at their first: what responses are checked against at load (a search's
    configurations are not known then). Combinations the model rejects are left out."""
    names = [space.threshold.factor] if space.threshold is not None else space.names
    choices = ([[space.threshold.min, space.threshold.max]] if space.threshold is not None else
               [list(f.values) if f.kind == "values" else [f.min, f.max] for f in space.factors])
    out: dict[str, Configuration] = {}
    for i in range(len(names)):
        for value in choices[i]:
            varying = {n: (value if j == i else choices[j][0]) for j, n in enumerate(names)}
            try:
                params = model.validate({**fixed, **varying})
            except ParameterError:
                continue
            key = config_key(varying)
            out.setdefault(key, Configuration(key, params, varying))
    return list(out.values())


def canonical(search: Search, space: SearchSpace) -> dict[str, Any]:
    """The canonical form of ``search`` (spec hash): the file's fields with the optimiser's
    identity and the resolved max_replications."""
    out = search.model_dump(mode="json", exclude_none=True)
    out["max_replications"] = space.max_replications
    out["optimiser"] = dict(space.optimiser)
    return out

