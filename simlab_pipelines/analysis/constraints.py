"""Which configurations meet the experiment's constraints, with a stated confidence.

A constraint bounds the mean of one metric: ``mu <= max`` and/or ``mu >= min``. Each configuration's
status on it comes from one-sided t intervals on its replications (independent and identically
distributed, so ``mean ± t_{level, n-1} s / sqrt(n)`` is exact for normal outputs and
asymptotically right otherwise):

- **feasible**: the upper bound ``mean + t s / sqrt(n)`` is at most ``max`` (and the lower bound
  ``mean - t s / sqrt(n)`` at least ``min``);
- **infeasible**: the lower bound is above ``max`` (or the upper bound below ``min``);
- **undecided**: neither (the mean is within noise of the limit, or fewer than 2 values).

A configuration is feasible when it is feasible on every constraint, infeasible when it is
infeasible on any, undecided otherwise.

Error rates. Each bound's test is at the one-sided level ``1 - (1 - c)/m``: ``c`` is the
constraint's confidence and ``m`` the number of configurations the statement is made for at once
(``simultaneous``; Bonferroni over configurations). Then

- a configuration that violates a constraint (in truth) is declared feasible with probability at
  most ``(1 - c)/m``: its violated bound alone must pass, so no correction over the *other*
  constraints is needed; over the ``m`` configurations, *some* configuration that violates
  constraint j is declared feasible with probability at most ``1 - c_j``. The recommendation is
  chosen among the configurations declared feasible, so it violates constraint j with
  probability at most ``1 - c_j`` — whatever the number of configurations or constraints;
- every status of the ``m`` configurations is right at once with probability at least
  ``1 - sum_j (1 - c_j)`` (Bonferroni over the file's constraints; a two-sided constraint counts
  twice). A configuration whose mean is exactly at a limit is feasible: it often comes out
  *undecided* (no claim), and is declared infeasible at most at the rate above.

This is the feasibility check of Andradóttir & Kim (2010), "Fully sequential procedures for
comparing constrained systems via simulation", Naval Research Logistics 57(5):403–421, in its
two-stage (fixed sample) form without their tolerance ``epsilon`` around each limit: a
configuration within noise of a limit is reported undecided instead of being forced to a side. The
recommendation of an experiment with constraints is the best among the configurations declared
feasible (``selection.recommend(feasible=...)``); when none is, ``closest_to_feasible`` names the
one that misses the limits by the least (relative to each limit).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy import special

from simlab_pipelines.analysis.frames import check_observations
from simlab_pipelines.analysis.intervals import check_confidence

FEASIBLE, INFEASIBLE, UNDECIDED = "feasible", "infeasible", "undecided"

CONSTRAINT_COLUMNS = ("experiment", "config_key", "metric", "min", "max", "n", "mean", "stddev",
                      "ci_low", "ci_high", "confidence", "level", "simultaneous", "status",
                      "miss")
_SCHEMA = {"experiment": pl.String, "config_key": pl.String, "metric": pl.String,
           "min": pl.Float64, "max": pl.Float64, "n": pl.Int64, "mean": pl.Float64,
           "stddev": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
           "confidence": pl.Float64, "level": pl.Float64, "simultaneous": pl.Int64,
           "status": pl.String, "miss": pl.Float64}


@dataclass(frozen=True)
class Limit:
    """A constraint as the analysis sees it: bounds on the mean of ``metric``, at ``confidence``."""

    metric: str
    min: float | None
    max: float | None
    confidence: float

    def __post_init__(self) -> None:
        check_confidence(self.confidence, f"confidence of the constraint on {self.metric!r}")
        if self.min is None and self.max is None:
            raise ValueError(f"constraint on {self.metric!r}: give min, max or both")

    @property
    def bounds(self) -> int:
        """How many one-sided statements the constraint makes (1, or 2 for a band)."""
        return (self.min is not None) + (self.max is not None)


def limits(constraints: Sequence[Any], default_confidence: float) -> list[Limit]:
    """``Limit`` objects from the file's constraints (``experiments.constraints.Constraint``:
    anything with metric, min, max and confidence), each at its own confidence or the file's."""
    return [Limit(c.metric, c.min, c.max,
                  c.confidence if c.confidence is not None else default_confidence)
            for c in constraints]


@dataclass(frozen=True)
class ConstraintStatus:
    """One configuration on one constraint."""

    config_key: str
    limit: Limit
    n: int
    mean: float
    stddev: float
    ci_low: float    # one-sided lower bound at ``level`` (NaN with n < 2)
    ci_high: float   # one-sided upper bound at ``level``
    level: float     # the one-sided level of each bound: 1 - (1 - confidence) / simultaneous
    simultaneous: int
    status: str      # feasible | infeasible | undecided
    df: int | None = None  # the t quantile's degrees of freedom (None: n - 1)

    @property
    def miss(self) -> float:
        """How far the mean is beyond the limit (0 when within; in the metric's units)."""
        if math.isnan(self.mean):
            return math.nan
        over = self.mean - self.limit.max if self.limit.max is not None else -math.inf
        under = self.limit.min - self.mean if self.limit.min is not None else -math.inf
        return max(0.0, over, under)

    @property
    def relative_miss(self) -> float:
        """``miss`` relative to the limit it misses (its standard deviation for a zero limit)."""
        miss = self.miss
        if not miss > 0:
            return miss
        bound = self.limit.max if (self.limit.max is not None
                                   and self.mean > self.limit.max) else self.limit.min
        scale = abs(bound) if bound else (self.stddev if self.stddev > 0 else 1.0)
        return miss / scale


def one_sided_bounds(values: np.ndarray, level: float) -> tuple[int, float, float, float, float]:
    """(n, mean, stddev, lower, upper): one-sided bounds at ``level`` on the mean of ``values``
    (NaNs dropped; the bounds are NaN with fewer than 2 values)."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return 1, mean, math.nan, math.nan, math.nan
    stddev = float(x.std(ddof=1))
    margin = float(special.stdtrit(n - 1, level)) * stddev / math.sqrt(n)
    return n, mean, stddev, mean - margin, mean + margin


def stein_bounds(values: np.ndarray, first: int, level: float
                 ) -> tuple[int, float, float, float, float, int]:
    """(n, mean, stddev, lower, upper, df): one-sided bounds at ``level`` by Stein's two-stage
    statistic: the mean over all ``values``, the standard deviation over the first ``first``
    of them only, with its ``first - 1`` degrees of freedom (NaNs dropped). When how many values
    there are was decided from the first ones' spread alone (a two-stage procedure's N), this is
    exactly t-distributed for normal outputs (Stein 1945); the standard deviation over all of
    them is not, and its bounds are too narrow when a large spread called for more values."""
    x = np.asarray(values, dtype=float).ravel()
    head = x[:first]
    head = head[~np.isnan(head)]
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0 or head.size < 2:
        return n, (float(x.mean()) if n else math.nan), math.nan, math.nan, math.nan, 0
    mean, stddev = float(x.mean()), float(head.std(ddof=1))
    df = int(head.size) - 1
    margin = float(special.stdtrit(df, level)) * stddev / math.sqrt(n)
    return n, mean, stddev, mean - margin, mean + margin, df


def status_of(values: Sequence[float] | np.ndarray, limit: Limit, *, simultaneous: int = 1,
              config_key: str = "", looks: int = 1,
              variance_from: int | None = None) -> ConstraintStatus:
    """One configuration's status on ``limit`` (see the module docstring for the error rates).

    ``looks``: the tests this configuration may get (each at ``1 - (1 - c)/(simultaneous
    looks)``, Bonferroni over the looks too). ``variance_from``: Stein's statistic
    (``stein_bounds``) with the standard deviation of the first ``variance_from`` values, for
    values whose number a two-stage procedure chose from their first ones.
    """
    if simultaneous < 1 or looks < 1:
        raise ValueError(f"simultaneous = {simultaneous}, looks = {looks}: must be >= 1")
    level = 1.0 - (1.0 - limit.confidence) / (simultaneous * looks)
    df = None
    if variance_from is None:
        n, mean, stddev, low, high = one_sided_bounds(np.asarray(values, dtype=float), level)
    else:
        n, mean, stddev, low, high, df = stein_bounds(np.asarray(values, dtype=float),
                                                      variance_from, level)
    if n < 2 or not math.isfinite(low):
        status = UNDECIDED
    elif ((limit.max is not None and low > limit.max)
          or (limit.min is not None and high < limit.min)):
        status = INFEASIBLE
    elif ((limit.max is None or high <= limit.max)
          and (limit.min is None or low >= limit.min)):
        status = FEASIBLE
    else:
        status = UNDECIDED
    return ConstraintStatus(config_key, limit, n, mean, stddev, low, high, level, simultaneous,
                            status, df)


def overall(statuses: Sequence[ConstraintStatus]) -> str:
    """A configuration's status from its constraints' (feasible with no constraint at all)."""
    kinds = {s.status for s in statuses}
    if INFEASIBLE in kinds:
        return INFEASIBLE
    return UNDECIDED if UNDECIDED in kinds else FEASIBLE


@dataclass(frozen=True)
class Feasibility:
    """Every configuration's status on every constraint, and overall."""

    limits: tuple[Limit, ...]
    statuses: dict[str, tuple[ConstraintStatus, ...]]  # config_key -> one per limit
    simultaneous: int

    @property
    def overall(self) -> dict[str, str]:
        """config_key -> feasible | infeasible | undecided."""
        return {key: overall(s) for key, s in self.statuses.items()}

    def keys(self, status: str) -> list[str]:
        """The configurations with overall ``status``, sorted."""
        return sorted(k for k, s in self.overall.items() if s == status)

    @property
    def feasible(self) -> list[str]:
        return self.keys(FEASIBLE)

    def missed(self, key: str) -> list[ConstraintStatus]:
        """The constraints ``key`` does not meet (infeasible or undecided)."""
        return [s for s in self.statuses[key] if s.status != FEASIBLE]

    def table(self, experiment: str) -> pl.DataFrame:
        """The DuckDB ``constraints`` table: one row per (configuration, constraint)."""
        rows = [{"experiment": experiment, "config_key": key, "metric": s.limit.metric,
                 "min": s.limit.min, "max": s.limit.max, "n": s.n, "mean": s.mean,
                 "stddev": s.stddev, "ci_low": s.ci_low, "ci_high": s.ci_high,
                 "confidence": s.limit.confidence, "level": s.level,
                 "simultaneous": s.simultaneous, "status": s.status, "miss": s.miss}
                for key in sorted(self.statuses) for s in self.statuses[key]]
        return pl.DataFrame(rows, schema=_SCHEMA)


def feasibility(values: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
                constraint_limits: Sequence[Limit], *,
                simultaneous: int | None = None) -> Feasibility:
    """Each configuration's status on each constraint.

    ``values``: config_key -> metric -> the metric's values over its replications (a metric
    missing from a configuration leaves it undecided on that constraint). ``simultaneous``: the
    number of configurations the statements cover at once (default: all of ``values``), which
    sets each bound's level to ``1 - (1 - confidence) / simultaneous``.
    """
    m = len(values) if simultaneous is None else int(simultaneous)
    m = max(m, 1)
    empty = np.empty(0)
    statuses = {key: tuple(status_of(metrics.get(limit.metric, empty), limit, simultaneous=m,
                                     config_key=key) for limit in constraint_limits)
                for key, metrics in values.items()}
    return Feasibility(tuple(constraint_limits), statuses, m)


def values_by_configuration(observations: pl.DataFrame, metrics: Sequence[str],
                            experiment: str | None = None
                            ) -> dict[str, dict[str, np.ndarray]]:
    """config_key -> metric -> values in replication order, from the long observations frame."""
    frame = check_observations(observations)
    if experiment is not None:
        frame = frame.filter(pl.col("experiment") == experiment)
    frame = frame.filter(pl.col("metric").is_in(list(metrics))).sort(
        "config_key", "metric", "replication")
    out: dict[str, dict[str, np.ndarray]] = {key: {} for key in
                                             frame["config_key"].unique().sort().to_list()}
    for (key, metric), group in frame.group_by("config_key", "metric"):
        out[key][metric] = group["value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return out


def frame_feasibility(observations: pl.DataFrame, constraint_limits: Sequence[Limit], *,
                      experiment: str | None = None, keys: Sequence[str] | None = None,
                      simultaneous: int | None = None) -> Feasibility:
    """``feasibility`` over the long observations frame (every configuration in it, or ``keys``)."""
    values = values_by_configuration(observations, [lim.metric for lim in constraint_limits],
                                     experiment)
    if keys is not None:
        values = {k: values.get(k, {}) for k in keys}
    return feasibility(values, constraint_limits, simultaneous=simultaneous)


def closest_to_feasible(result: Feasibility, objective: Mapping[str, float] | None = None,
                        minimize: bool = True) -> str | None:
    """The configuration that misses the constraints by the least: the smallest largest relative
    miss (each miss relative to its limit), then the smallest total, then the best objective."""
    if not result.statuses:
        return None
    sign = 1.0 if minimize else -1.0

    def key(config: str) -> tuple[float, float, float, str]:
        misses = [s.relative_miss for s in result.statuses[config]]
        misses = [m if math.isfinite(m) else math.inf for m in misses] or [0.0]
        value = (objective or {}).get(config, math.nan)
        return (max(misses), sum(misses), sign * value if math.isfinite(value) else math.inf,
                config)

    return min(result.statuses, key=key)
