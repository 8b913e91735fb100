"""Designs beyond the full factorial: space-filling, screening and variance-based sampling plans.

An experiment's ``design`` replaces ``factors``/``configurations``::

    design:
      method: latin_hypercube   # sobol, halton, nolh, fractional_factorial, saltelli, morris
      points: 64                # configurations (saltelli, morris: the base sample size N)
      seed: 7                   # the design's own seed
      factors:
        arrival_rate: {min: 0.5, max: 0.95}
        servers: {min: 1, max: 8, type: int}
        service_rate: {min: 0.5, max: 2.0, scale: log}

Each method draws points in the unit cube, deterministically from ``seed``:

- ``latin_hypercube``, ``sobol``, ``halton``: ``scipy.stats.qmc`` (scrambled; Sobol' needs 2^m
  points, whose every one-dimensional projection then has one point per interval of width 2^-m);
- ``nolh``: nearly orthogonal Latin hypercubes of 17, 33 or 65 points (``nolh_matrix``);
- ``fractional_factorial``: two-level 2^(k-p) designs of resolution III or IV from generators
  (``fractional_factorial_matrix``);
- ``saltelli``: SALib's Saltelli/Sobol' sample for Sobol' indices, N(2k+2) points (N(k+2) without
  second order); ``morris``: SALib's Morris trajectories, N(k+1) points on a ``levels`` grid.

Points are mapped to factor values linearly or on a log scale. Integer factors keep the design's
balance: stratified designs map the stratum of a point to an integer, so that each of the L
integers of [min, max] receives an equal share of strata (``min + floor(u L)``); NOLH levels are
mapped the same way through their strata; the grid designs (two-level, Morris) round their
levels, so that min and max stay the ends. Other values keep 6 significant digits. Rows that
round to the same values are one configuration (simulated once); ``DesignPoints.row_config`` keeps
each row's configuration, which the Saltelli and Morris analyses need, in the sampler's row
order.

No Dagster here; the resolver (``resolve.py``) calls ``check_design`` and ``generate``.
"""

import importlib.metadata
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.parameters import Parameter, ParameterError

# Bump when a method generates other points for the same fields (part of the spec hash).
DESIGNS_VERSION = "1"
METHODS = ("latin_hypercube", "sobol", "halton", "nolh", "fractional_factorial", "saltelli",
           "morris")
MAX_ROWS = 100_000  # sampler rows (Saltelli: N(2k+2)); distinct configurations are capped too
MAX_FACTORS = 50

Loc = tuple[str | int, ...]
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class DesignFactor(BaseModel):
    """One factor's range; ``type`` defaults to the model parameter's type."""

    model_config = _STRICT

    min: int | float = Field(allow_inf_nan=False)
    max: int | float = Field(allow_inf_nan=False)
    type: Literal["int", "float"] | None = None
    scale: Literal["linear", "log"] = "linear"


class Design(BaseModel):
    """The ``design`` field of an experiment file."""

    model_config = _STRICT

    method: Literal["latin_hypercube", "sobol", "halton", "nolh", "fractional_factorial",
                    "saltelli", "morris"]
    points: int | None = Field(default=None, ge=2, le=MAX_ROWS)
    seed: int = Field(default=0, ge=0, lt=2**63)
    factors: dict[str, DesignFactor]
    levels: int | None = Field(default=None, ge=2, le=64)  # morris: grid levels (default 4)
    second_order: bool = True  # saltelli: also the second-order indices (N(2k+2) points)
    resolution: Literal[3, 4] | None = None  # fractional_factorial (default 4)
    # the metrics (or responses) whose sensitivity the summary analyses and the answer names;
    # default: every metric, the answer naming the experiment's headline metric
    metrics: list[str] | None = Field(default=None, min_length=1)


@dataclass(frozen=True)
class FactorRange:
    """A factor's resolved range."""

    name: str
    min: float
    max: float
    type: str  # "int" or "float"
    scale: str  # "linear" or "log"

    def coded(self, values: np.ndarray) -> np.ndarray:
        """Values mapped to [-1, 1] on the factor's scale (min -> -1, max -> 1)."""
        values = np.asarray(values, dtype=float)
        if self.scale == "log":
            low, high, values = math.log(self.min), math.log(self.max), np.log(values)
        else:
            low, high = self.min, self.max
        return 2.0 * (values - low) / (high - low) - 1.0


@dataclass(frozen=True, eq=False)
class DesignPoints:
    """A generated design: the sampler's rows and the distinct configurations they map to.

    Equal when generated alike (specs compare their private state, and arrays have no ``==``
    that answers with one bool)."""

    method: str
    factors: tuple[FactorRange, ...]
    unit: np.ndarray  # (rows, k): the sampler's points in [0, 1], before mapping and rounding
    configurations: tuple[dict[str, Any], ...]  # distinct rows, in order of first appearance
    row_config: np.ndarray  # (rows,): each row's index in ``configurations``
    base_points: int  # N of saltelli/morris; the row count otherwise
    second_order: bool  # saltelli
    levels: int | None  # morris
    generators: tuple[str, ...]  # fractional factorial: the defining generators
    generator: dict[str, str]  # what generated the points, with its version (spec hash)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DesignPoints):
            return NotImplemented
        return (self.method == other.method and self.factors == other.factors
                and self.configurations == other.configurations
                and self.generator == other.generator and self.generators == other.generators
                and (self.base_points, self.second_order, self.levels)
                == (other.base_points, other.second_order, other.levels)
                and np.array_equal(self.unit, other.unit)
                and np.array_equal(self.row_config, other.row_config))

    def __hash__(self) -> int:
        return hash((self.method, self.factors, self.rows, len(self.configurations)))

    @property
    def names(self) -> list[str]:
        """The factor names, in the design's column order."""
        return [f.name for f in self.factors]

    @property
    def rows(self) -> int:
        return int(self.unit.shape[0])

    def configuration_matrix(self, coded: bool = False) -> np.ndarray:
        """(configurations, k) of the factor values, or of the values coded to [-1, 1]."""
        raw = np.array([[c[f.name] for f in self.factors] for c in self.configurations],
                       dtype=float)
        if not coded:
            return raw
        return np.column_stack([f.coded(raw[:, j]) for j, f in enumerate(self.factors)])


# ---------------------------------------------------------------------------------------------
# Checking the fields against the model


def check_design(design: Design, parameters: Mapping[str, Parameter], fixed: Collection[str],
                 loc: Loc = ("design",), metrics: Collection[str] | None = None,
                 ) -> tuple[list[FactorRange], list[tuple[Loc, str]]]:
    """The factors' resolved ranges and every problem with the fields, by field path;
    ``metrics``: the names ``design.metrics`` may use (None: not checked)."""
    errors: list[tuple[Loc, str]] = []
    for i, name in enumerate(design.metrics or []):
        if metrics is not None and name not in metrics:
            errors.append(((*loc, "metrics", i), f"unknown metric {name!r} (known: "
                           f"{', '.join(sorted(metrics))})"))
    ranges: list[FactorRange] = []
    if not design.factors:
        errors.append(((*loc, "factors"), "no factors: give at least one"))
    if len(design.factors) > MAX_FACTORS:
        errors.append(((*loc, "factors"), f"{len(design.factors)} factors, more than "
                       f"{MAX_FACTORS}"))
    for name, factor in design.factors.items():
        where = (*loc, "factors", name)
        if name not in parameters:
            errors.append((where, f"unknown parameter {name!r} (known: "
                           f"{', '.join(sorted(parameters))})"))
            continue
        if name in fixed:
            errors.append((where, f"parameter {name!r} is given both as fixed "
                           f"(parameters.{name}) and as a design factor"))
            continue
        found = _factor_range(name, factor, parameters[name], where, errors)
        if found is not None:
            ranges.append(found)
    errors += _check_method(design, len(design.factors), loc)
    return ranges, errors


def _factor_range(name: str, factor: DesignFactor, parameter: Parameter, where: Loc,
                  errors: list[tuple[Loc, str]]) -> FactorRange | None:
    kind = factor.type or ("int" if parameter.type is int else "float")
    before = len(errors)
    if kind == "float" and parameter.type is int:
        errors.append(((*where, "type"), f"parameter {name!r} is an integer: use type: int"))
    if kind == "int":
        for side in ("min", "max"):
            value = getattr(factor, side)
            if not float(value).is_integer():
                errors.append(((*where, side), f"{value!r} is not an integer (type: int)"))
    for side in ("min", "max"):
        try:
            parameter.validate(getattr(factor, side))
        except ParameterError as exc:
            errors.append(((*where, side), str(exc)))
    if factor.min >= factor.max:
        errors.append(((*where, "max"), f"max ({factor.max!r}) must be greater than min "
                       f"({factor.min!r})"))
    if factor.scale == "log" and factor.min <= 0:
        errors.append(((*where, "min"), f"a log scale needs min > 0, got {factor.min!r}"))
    if len(errors) > before:
        return None
    return FactorRange(name, float(factor.min), float(factor.max), kind, factor.scale)


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _check_method(design: Design, k: int, loc: Loc) -> list[tuple[Loc, str]]:
    method, points = design.method, design.points
    errors: list[tuple[Loc, str]] = []
    where = (*loc, "points")
    for field, allowed in (("levels", "morris"), ("resolution", "fractional_factorial")):
        if getattr(design, field) is not None and method != allowed:
            errors.append(((*loc, field), f"{field} applies to method {allowed} only"))
    if not design.second_order and method != "saltelli":
        errors.append(((*loc, "second_order"), "second_order applies to method saltelli only"))
    if method == "fractional_factorial":
        return errors + _check_fractional(design, k, loc)
    if points is None:
        what = "the base sample size N" if method in ("saltelli", "morris") else "configurations"
        return [*errors, (where, f"required field is missing ({what})")]
    if method in ("sobol", "saltelli") and not _power_of_two(points):
        low = 1 << (points.bit_length() - 1)
        errors.append((where, f"{points} is not a power of 2: Sobol' points are balanced only "
                       f"in blocks of 2^m (use {low} or {low * 2})"))
    if method == "nolh":
        sizes = sorted(NOLH_PERMUTATIONS)
        if points not in (2 * q + 1 for q in sizes):
            errors.append((where, f"NOLH designs have {', '.join(str(2 * q + 1) for q in sizes)}"
                           f" points, not {points}"))
        elif k > nolh_columns(points // 2):
            errors.append((where, f"{points} NOLH points hold at most {nolh_columns(points // 2)}"
                           f" factors, not {k}; use more points"))
        elif k > nolh_columns(max(sizes)):
            errors.append(((*loc, "factors"), f"NOLH designs hold at most "
                           f"{nolh_columns(max(sizes))} factors"))
    if method == "morris":
        levels = design.levels or 4
        if levels % 2:
            errors.append(((*loc, "levels"), f"{levels} levels: Morris needs an even number "
                           "(a step of levels/(2(levels-1)) keeps the grid symmetric)"))
    rows = {"saltelli": points * (2 * k + 2 if design.second_order else k + 2),
            "morris": points * (k + 1)}.get(method, points)
    if rows > MAX_ROWS:
        errors.append((where, f"{rows} design points, more than {MAX_ROWS}"))
    return errors


def _check_fractional(design: Design, k: int, loc: Loc) -> list[tuple[Loc, str]]:
    resolution = design.resolution or 4
    smallest = fractional_runs(k, resolution)
    points = design.points
    if points is None:
        return []
    if not _power_of_two(points):
        return [((*loc, "points"), f"{points} is not a power of 2 (two-level designs have 2^p "
                 "runs)")]
    if points < smallest:
        return [((*loc, "points"), f"{points} runs cannot give resolution {resolution} for "
                 f"{k} factors: at least {smallest}")]
    if k and points > 2**k:
        return [((*loc, "points"), f"{points} runs exceed the full factorial of {k} two-level "
                 f"factors ({2**k})")]
    return []


# ---------------------------------------------------------------------------------------------
# Generating


def generator_version(method: str) -> dict[str, str]:
    """What generates ``method``'s points, with its version (part of the spec hash)."""
    if method in ("latin_hypercube", "sobol", "halton"):
        # The installed distribution's version (scipy.__version__), without importing scipy.
        return {"name": "scipy.stats.qmc", "version": importlib.metadata.version("scipy"),
                "designs": DESIGNS_VERSION}
    if method in ("saltelli", "morris"):
        return {"name": "SALib", "version": importlib.metadata.version("SALib"),
                "designs": DESIGNS_VERSION}
    return {"name": "simlab", "version": DESIGNS_VERSION, "designs": DESIGNS_VERSION}


def generate(design: Design, factors: list[FactorRange]) -> DesignPoints:
    """The design's points for ``factors`` (as ``check_design`` resolved them)."""
    k = len(factors)
    method, generators = design.method, ()
    if method in ("latin_hypercube", "sobol", "halton"):
        # Only for these: scipy.stats takes ~0.4 s to import, and every process that loads the
        # definitions generates every design (nolh and fractional factorials are numpy only).
        from scipy.stats import qmc
    if method == "latin_hypercube":
        unit = qmc.LatinHypercube(k, rng=np.random.default_rng(design.seed)).random(design.points)
    elif method == "sobol":
        sampler = qmc.Sobol(k, scramble=True, rng=np.random.default_rng(design.seed))
        unit = sampler.random_base2(int(math.log2(design.points)))
    elif method == "halton":
        unit = qmc.Halton(k, scramble=True, rng=np.random.default_rng(design.seed)).random(
            design.points)
    elif method == "nolh":
        unit = (nolh_matrix(design.points, k) + design.points // 2) / (design.points - 1)
    elif method == "fractional_factorial":
        points = design.points or fractional_runs(k, design.resolution or 4)
        coded, generators = fractional_factorial_matrix(k, points, design.resolution or 4,
                                                        [f.name for f in factors])
        unit = (coded + 1.0) / 2.0
    elif method == "saltelli":
        unit = _salib_sobol(k, design.points, design.second_order, design.seed)
    else:
        unit = _salib_morris(k, design.points, design.levels or 4, design.seed)
    values = _map(unit, factors, method, design.points)
    configurations: list[dict[str, Any]] = []
    index: dict[tuple, int] = {}
    row_config = np.empty(len(values), dtype=np.int64)
    for i, row in enumerate(values):
        key = tuple(row)
        if key not in index:
            index[key] = len(configurations)
            configurations.append({f.name: v for f, v in zip(factors, row, strict=True)})
        row_config[i] = index[key]
    base = design.points if method in ("saltelli", "morris") else len(values)
    return DesignPoints(method, tuple(factors), unit, tuple(configurations), row_config, base,
                        design.second_order, design.levels or 4 if method == "morris" else None,
                        tuple(generators), generator_version(method))


def _problem(k: int) -> dict[str, Any]:
    return {"num_vars": k, "names": [f"x{j}" for j in range(k)], "bounds": [[0.0, 1.0]] * k}


def _salib_sobol(k: int, n: int, second_order: bool, seed: int) -> np.ndarray:
    from SALib.sample import sobol as salib_sobol  # imported on use: SALib loads pandas

    return salib_sobol.sample(_problem(k), n, calc_second_order=second_order, scramble=True,
                              seed=seed)


def _salib_morris(k: int, n: int, levels: int, seed: int) -> np.ndarray:
    from SALib.sample import morris as salib_morris

    return salib_morris.sample(_problem(k), n, num_levels=levels, seed=seed)


def _map(unit: np.ndarray, factors: list[FactorRange], method: str,
         points: int | None) -> list[list[Any]]:
    """Unit-cube rows to factor values (see the module docstring for integer factors)."""
    columns = []
    for j, f in enumerate(factors):
        u = unit[:, j]
        if method == "nolh" and f.type == "int":
            # Level g of G becomes the midpoint of stratum g, then an integer stratum.
            levels = points
            g = np.rint(u * (levels - 1))
            columns.append(_stratum_int(f, (g + 0.5) / levels))
        elif f.type == "int" and method in ("fractional_factorial", "morris"):
            columns.append([int(v) for v in np.rint(_scale(f, u, f.min, f.max))])
        elif f.type == "int":
            columns.append(_stratum_int(f, u))
        else:  # 6 significant digits: readable keys, far finer than any stratum
            columns.append([float(f"{v:.6g}") for v in _scale(f, u, f.min, f.max)])
    return [list(row) for row in zip(*columns, strict=True)]


def _scale(f: FactorRange, u: np.ndarray, low: float, high: float) -> np.ndarray:
    if f.scale == "log":
        value = np.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    return np.clip(value, min(f.min, low), max(f.max, high))  # no rounding past the ends


def _stratum_int(f: FactorRange, u: np.ndarray) -> list[int]:
    """Integers in [min, max] with equal shares of [0, 1): min + floor(u L) on a linear scale;
    on a log scale the integer below a log-uniform value on [min, max + 1)."""
    lo, hi = int(f.min), int(f.max)
    u = np.clip(u, 0.0, np.nextafter(1.0, 0.0))
    if f.scale == "log":
        raw = np.floor(np.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))))
    else:
        raw = lo + np.floor(u * (hi - lo + 1))
    return [int(v) for v in np.clip(raw, lo, hi)]


# ---------------------------------------------------------------------------------------------
# Nearly orthogonal Latin hypercubes

# Generating permutations of Cioppa's construction (T. M. Cioppa, "Efficient nearly orthogonal
# and space-filling experimental designs for high-dimensional complex models", PhD thesis, Naval
# Postgraduate School, 2002; Cioppa & Lucas, Technometrics 49(1), 2007). q = 2^(m-1) -> a design
# of 2q + 1 points and m + C(m-1, 2) columns.
# q = 8 (17 points, 7 columns) is Cioppa's published permutation (as listed in the pynolh package,
# github.com/fmder/pynolh). q = 16 and 32 were found by simlab with the search Cioppa describes
# (random restarts + pairwise swaps of the permutation, minimising the largest absolute column
# correlation and the correlation matrix's condition number), since the permutations pynolh lists for them do not give near-orthogonal designs
# under this construction; tests/test_designs.py checks the bound of Cioppa & Lucas (every
# |correlation| <= 0.03) for each.
NOLH_PERMUTATIONS: dict[int, tuple[int, ...]] = {
    8: (1, 2, 8, 4, 5, 6, 7, 3),
    16: (11, 2, 8, 12, 16, 5, 7, 14, 4, 6, 1, 13, 10, 9, 3, 15),
    32: (17, 16, 29, 12, 24, 1, 23, 14, 13, 3, 20, 15, 22, 6, 30, 7, 27, 10, 26, 21, 28, 8, 32,
         5, 18, 11, 19, 4, 31, 2, 25, 9),
}


def nolh_columns(q: int) -> int:
    """Columns of Cioppa's construction from a permutation of 1..q."""
    m = int(math.log2(q)) + 1
    return m + (m - 1) * (m - 2) // 2


def nolh_matrix(points: int, k: int) -> np.ndarray:
    """The first ``k`` columns of the NOLH of ``points`` runs, in levels -q..q (q = points // 2).

    Cioppa's construction: with e the permutation and A_i = ⊗_{j<m} (I if j < m-i else R) (R the
    2x2 exchange matrix), the columns are e, A_j e (j = 1..m-1) and A_i A_j e (i < j); each is
    multiplied elementwise by a sign column (alternating blocks of 2^(i-1) for A_i, products of
    two for A_i A_j), and the q rows are stacked with a centre row of zeros and their negation.
    """
    q = points // 2
    e = np.asarray(NOLH_PERMUTATIONS[q], dtype=np.int64)
    m = int(math.log2(q)) + 1
    exchange, identity = np.array([[0, 1], [1, 0]]), np.eye(2, dtype=np.int64)
    a = []
    for i in range(1, m):
        matrix = np.ones((1, 1), dtype=np.int64)
        for j in range(1, m):
            matrix = np.kron(matrix, identity if j < m - i else exchange)
        a.append(matrix)
    rows = np.arange(q)
    signs = [np.where((rows // 2 ** (i - 1)) % 2 == 0, -1, 1) for i in range(1, m)]
    columns, column_signs = [e], [np.ones(q, dtype=np.int64)]
    for j in range(m - 1):
        columns.append(a[j] @ e)
        column_signs.append(signs[j])
    for i in range(m - 1):
        for j in range(i + 1, m - 1):
            columns.append(a[i] @ (a[j] @ e))
            column_signs.append(signs[i] * signs[j])
    half = np.column_stack(columns) * np.column_stack(column_signs)
    full = np.vstack([half, np.zeros((1, half.shape[1]), dtype=np.int64), -half])
    return full[:, :k].astype(float)


# ---------------------------------------------------------------------------------------------
# Two-level fractional factorials


def fractional_runs(k: int, resolution: int) -> int:
    """The fewest runs (a power of 2) of a two-level design of ``resolution`` for ``k`` factors:
    k + 1 for resolution III, 2k for IV (at least 2)."""
    need = k + 1 if resolution == 3 else 2 * k
    return max(2, 1 << max(0, need - 1).bit_length())


def fractional_factorial_matrix(k: int, runs: int, resolution: int,
                                names: list[str] | None = None
                                ) -> tuple[np.ndarray, list[str]]:
    """A 2^(k-p) design in ±1 (``runs`` rows, ``k`` columns) and its generators.

    The first log2(runs) factors form a full factorial in standard order; each further factor is
    the product of a set of them (its generator). For resolution IV only products of an odd
    number (>= 3) of base factors are used: any product of two or three such columns has odd
    weight or is a distinct column, so no defining word is shorter than 4. For resolution III
    odd products come first, then even ones (largest first), which keeps words short only when
    the runs force it. Columns are balanced and mutually orthogonal by construction.
    """
    names = names or [f"x{j}" for j in range(k)]
    p = int(math.log2(runs))
    base = np.array([[1 if (r >> (p - 1 - b)) & 1 else -1 for b in range(p)]
                     for r in range(runs)], dtype=float)
    masks = [1 << b for b in range(min(p, k))]
    extra = sorted((m for m in range(1, 2**p) if bin(m).count("1") >= 2),
                   key=lambda m: (bin(m).count("1") % 2 == 0, -bin(m).count("1")
                                  if bin(m).count("1") % 2 == 0 else bin(m).count("1"), m))
    if resolution == 4:
        extra = [m for m in extra if bin(m).count("1") % 2 == 1]
    masks += extra[: k - len(masks)]
    if len(masks) < k:
        raise ValueError(f"{runs} runs cannot hold {k} factors at resolution {resolution}")
    columns, generators = [], []
    for j, mask in enumerate(masks):
        members = [b for b in range(p) if mask >> b & 1]
        columns.append(np.prod(base[:, members], axis=1))
        if len(members) > 1:
            generators.append(f"{names[j]} = " + "·".join(names[b] for b in members))
    return np.column_stack(columns), generators


__all__ = [
    "DESIGNS_VERSION",
    "METHODS",
    "NOLH_PERMUTATIONS",
    "Design",
    "DesignFactor",
    "DesignPoints",
    "FactorRange",
    "check_design",
    "fractional_factorial_matrix",
    "fractional_runs",
    "generate",
    "generator_version",
    "nolh_columns",
    "nolh_matrix",
]
