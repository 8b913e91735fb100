"""Student-t confidence intervals for the mean of independent replications.

Each replication of a configuration yields one observation of each metric; replications are
independent and identically distributed, so the classical interval
``mean ± t_{n-1, (1+confidence)/2} · s / sqrt(n)`` applies (Law 2015, *Simulation Modeling and
Analysis*, 5th ed., §4.5 and §9.4.1). Relative half-width is ``half_width / |mean|``.

Relative half-width when the mean is (about) zero: it is undefined, and this module defines it as
``0.0`` when the half-width is 0 (a constant output, e.g. a blocking probability that is always 0:
nothing more to learn) and ``inf`` when ``|mean| <= 1e-12 · half_width`` (a ratio above 10^12 is
treated as infinite, so a mean that is zero up to rounding never satisfies a relative target).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import special

from simlab_pipelines.analysis.frames import check_observations, defined

# Beyond this ratio of half-width to |mean| the relative half-width is reported as infinite.
RELATIVE_CAP = 1e12

SUMMARY_COLUMNS = ("experiment", "config_key", "metric", "n", "mean", "stddev", "ci_low", "ci_high",
                   "half_width", "confidence", "relative_half_width", "undefined")


def check_confidence(confidence: float, argument: str = "confidence") -> float:
    """Return ``confidence`` if it is strictly between 0 and 1, else raise ValueError."""
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(confidence, bool) or not 0.0 < value < 1.0:
        raise ValueError(f"{argument} = {confidence!r}: must be a number strictly between 0 and 1")
    return value


def t_quantile(confidence: float, df: float | np.ndarray) -> float | np.ndarray:
    """The two-sided Student-t critical value ``t_{df, (1+confidence)/2}`` (NaN where df < 1)."""
    confidence = check_confidence(confidence)
    df = np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        # special.stdtrit is scipy.stats.t.ppf without the distribution machinery (much faster).
        q = special.stdtrit(np.where(df >= 1, df, np.nan), 0.5 + confidence / 2.0)
    return float(q) if q.ndim == 0 else q


def relative_half_width(half_width: float, mean: float) -> float:
    """``half_width / |mean|``, with the zero-mean convention of this module (see its docstring)."""
    if math.isnan(half_width) or math.isnan(mean):
        return math.nan
    if half_width == 0.0:
        return 0.0
    if abs(mean) * RELATIVE_CAP <= half_width:
        return math.inf
    return half_width / abs(mean)


@dataclass(frozen=True)
class Interval:
    """A t confidence interval for a mean (NaN fields when n < 2 leaves them undefined)."""

    n: int
    mean: float
    stddev: float
    half_width: float
    ci_low: float
    ci_high: float
    confidence: float

    @property
    def relative_half_width(self) -> float:
        """Half-width over |mean| (0 for a constant sample, inf for a mean of about zero)."""
        return relative_half_width(self.half_width, self.mean)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """The t interval for the mean of ``values`` (NaNs are dropped: undefined replications)."""
    confidence = check_confidence(confidence)
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan, math.nan, confidence)
    mean = float(x.mean())
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan, math.nan, confidence)
    stddev = float(x.std(ddof=1))
    half = float(t_quantile(confidence, n - 1)) * stddev / math.sqrt(n)
    return Interval(n, mean, stddev, half, mean - half, mean + half, confidence)


def summarise(observations: pl.DataFrame, confidence: float = 0.95) -> pl.DataFrame:
    """One t interval per (experiment, config_key, metric): the DuckDB ``summary`` table.

    Columns: experiment, config_key, metric, n, mean, stddev, ci_low, ci_high, half_width,
    confidence, relative_half_width, undefined; sorted by experiment, config_key, metric. ``n``
    counts the replications with a value, ``undefined`` those where the metric was undefined
    (NaN): the interval is over the ``n``; with none (n = 0) the row is kept, its statistics NaN.
    """
    confidence = check_confidence(confidence)
    frame = check_observations(observations, keep_undefined=True)
    value = pl.col("value").filter(defined())
    grouped = (
        frame.group_by("experiment", "config_key", "metric")
        .agg(value.len().alias("n"), value.mean().alias("mean"),
             value.std(ddof=1).alias("stddev"),
             (~defined()).sum().cast(pl.Int64).alias("undefined"))
        .sort("experiment", "config_key", "metric")
    )
    n = grouped["n"].to_numpy().astype(float)
    stddev = grouped["stddev"].fill_null(np.nan).to_numpy()
    mean = grouped["mean"].fill_null(np.nan).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        half = t_quantile(confidence, n - 1) * stddev / np.sqrt(n)
    relative = [relative_half_width(float(h), float(m)) for h, m in zip(half, mean, strict=True)]
    return grouped.with_columns(
        pl.Series("n", n.astype(np.int64)),
        pl.Series("mean", mean),
        pl.Series("stddev", stddev),
        pl.Series("ci_low", mean - half),
        pl.Series("ci_high", mean + half),
        pl.Series("half_width", half),
        pl.lit(confidence).alias("confidence"),
        pl.Series("relative_half_width", relative, dtype=pl.Float64),
    ).select(SUMMARY_COLUMNS)
