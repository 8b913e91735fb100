"""Warm-up detection with MSER-5 on a model's recorded time series.

MSER (Marginal Standard Error Rule; White 1997, "An effective truncation heuristic for bias
reduction in simulation output", Simulation 69(6):323–334; White, Cobb & Spratt 2000, "A
comparison of five steady-state truncation heuristics for simulation", Proc. Winter Simulation
Conference; Franklin & White 2008, "Stationarity tests and MSER-5: exploring the intuition behind
mean-squared-error-reduction in warm-up period determination", Proc. WSC) picks the truncation
point d that minimises

    MSER(d) = 1 / (m - d)^2 · sum_{j = d+1}^{m} (Z_j - Zbar_{m,d})^2,

the squared standard error of the mean of what is kept. MSER-5 applies it to the means ``Z_j`` of
non-overlapping batches of 5 observations, and searches d over the first half of the series only
(a minimum later than that says the run is too short to show a steady state).

The engine records a time series as batch means of width ``w`` from time 0 (warm-up included:
``engine.simulate(..., series_interval=w).series[name]``). Observation i covers
``[i·w, (i+1)·w)``, so deleting ``5·d`` observations means a warm-up of ``5·d·w`` time units.

With replications, MSER-5 is applied to each replication and to the across-replication average
series (averaging removes noise but not the initial bias, which is the same in every replication;
Hoad, Robinson & Davies 2010, "Automating warm-up length estimation", JORS 61(9):1389–1403, found
MSER-5 on averaged data among the most reliable automatic methods). The suggestion is the averaged
series' truncation; the per-replication truncations are reported beside it.

Is a shorter warm-up a problem? On a series without initial bias MSER's minimum is the argmin of a
flat, noisy curve and often lands after the start, so "the experiment's warm-up is shorter than the
suggestion" alone would warn on many unbiased experiments. The warning therefore needs evidence of
bias in the observations the experiment keeps but MSER-5 would delete: per replication, the mean
over ``[warm-up, suggestion)`` minus the mean after the suggestion; replications are independent,
so a paired t test across them is exact for the mean difference. The warning is raised when it is
significant at ``BIAS_ALPHA`` (1%: the false-alarm rate on an unbiased experiment), or, with a
single replication (no test possible), whenever the warm-up is shorter. A minimum at the end of
the searched half ("no steady state") needs the same evidence when the test can be made.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

BATCH_SIZE = 5
BIAS_ALPHA = 0.01  # the bias test's false-alarm rate


def mser_statistic(series: Sequence[float] | np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """``MSER(d)`` for d = 0 .. floor(m/2) batches (m = number of whole batches of ``batch_size``).

    An incomplete last batch is dropped. Raises ValueError when there are fewer than 2 batches or
    the series holds NaN.
    """
    z = _batch_means(series, batch_size)
    m = z.size
    d = np.arange(0, m // 2 + 1)
    # Suffix sums give every truncation in O(m); centring keeps the sum of squares accurate.
    centred = z - z.mean()
    tail_sum = np.cumsum(centred[::-1])[::-1]
    tail_sq = np.cumsum((centred**2)[::-1])[::-1]
    kept = (m - d).astype(float)
    sse = np.maximum(tail_sq[d] - tail_sum[d] ** 2 / kept, 0.0)
    return sse / kept**2


def mser_truncation(series: Sequence[float] | np.ndarray, batch_size: int = BATCH_SIZE) -> int:
    """The number of *observations* (not batches) MSER-``batch_size`` deletes from the start."""
    return int(np.argmin(mser_statistic(series, batch_size))) * batch_size


@dataclass(frozen=True)
class WarmupSuggestion:
    """MSER-5's warm-up for one series name, in observations and in simulated time."""

    series_interval: float                 # width w of one observation of the series
    truncation: int                        # observations deleted from the averaged series
    suggested_warmup: float                # truncation · w (simulated time)
    per_replication_warmup: tuple[float, ...]   # the same, replication by replication
    replications: int
    at_boundary: bool                      # the minimum is at the end of the searched half
                                           # and the bias test (if any) does not clear it
    experiment_warmup: float | None
    warning: str | None                    # set when the experiment's warm-up is too short
                                           # (significant bias) or at_boundary
    bias_p_value: float | None = None      # the bias test's p-value (None: no test was needed)

    @property
    def shorter(self) -> bool:
        """True when the experiment's warm-up is shorter than the suggestion."""
        return self.experiment_warmup is not None and self.experiment_warmup < self.suggested_warmup

    @property
    def biased(self) -> bool:
        """True when the experiment's warm-up is shorter and what it keeps but MSER-5 deletes is
        significantly different from the rest (see the module docstring)."""
        if not self.shorter:
            return False
        return self.bias_p_value is None or self.bias_p_value < BIAS_ALPHA

    @property
    def mean_replication_warmup(self) -> float:
        """The mean of the per-replication suggestions."""
        return float(np.mean(self.per_replication_warmup))


def suggest_warmup(series: Sequence[Sequence[float]] | Mapping[object, Sequence[float]] | np.ndarray,
                   series_interval: float, *, experiment_warmup: float | None = None,
                   batch_size: int = BATCH_SIZE, name: str = "series") -> WarmupSuggestion:
    """MSER-5 warm-up from one series per replication (each a list of batch means from time 0).

    ``series``: a sequence (or a mapping replication -> series) of equally spaced batch means of
    width ``series_interval``; replications of different length are cut to the shortest.
    ``experiment_warmup``: the warm-up the experiment uses; a warning is set when it is shorter
    than the suggestion. ``name`` is used in messages.
    """
    if not (series_interval > 0 and math.isfinite(series_interval)):
        raise ValueError(f"series_interval = {series_interval!r}: must be a positive number")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    rows = list(series.values()) if isinstance(series, Mapping) else list(series)
    if not rows:
        raise ValueError(f"{name}: no replications")
    arrays = [np.asarray(row, dtype=float).ravel() for row in rows]
    length = min(a.size for a in arrays)
    if length < 2 * batch_size:
        raise ValueError(f"{name}: {length} observations; MSER-{batch_size} needs at least "
                         f"{2 * batch_size} (record a longer run or a smaller series_interval)")
    matrix = np.vstack([a[:length] for a in arrays])
    if np.isnan(matrix).any():
        raise ValueError(f"{name}: the series holds NaN")

    statistic = mser_statistic(matrix.mean(axis=0), batch_size)
    best = int(np.argmin(statistic))
    truncation = best * batch_size
    per_replication = tuple(mser_truncation(row, batch_size) * series_interval for row in matrix)
    suggested = truncation * series_interval
    p_value = None
    if experiment_warmup is not None and experiment_warmup < suggested:
        start = min(math.ceil(experiment_warmup / series_interval), truncation)
        p_value = bias_p_value(matrix, start, truncation)
    # A minimum on the last searched batch means MSER would have liked to cut further; like a
    # shorter warm-up it counts only with evidence of bias where the bias test can be made: on a
    # stationary series the flat, noisy curve's minimum lands there too (a stable queue's one
    # late spike in the first half made MSER "find no steady state" at 40 % utilisation).
    at_boundary = (best == statistic.size - 1 and statistic.size > 1
                   and (p_value is None or p_value < BIAS_ALPHA))
    warnings = []
    if at_boundary:
        warnings.append(f"MSER-{batch_size} found no steady state in the first half of the "
                        f"run (minimum at the end of the search, {suggested:g}); the run is too "
                        "short or the model has no steady state")
    shorter = experiment_warmup is not None and experiment_warmup < suggested
    if shorter and (p_value is None or p_value < BIAS_ALPHA):
        evidence = ("" if p_value is None else
                    f", and what it keeps before the suggestion differs from the rest "
                    f"(paired t over {matrix.shape[0]} replications, p = {p_value:.2g})")
        warnings.append(f"the experiment's warm-up {experiment_warmup:g} is shorter "
                        f"than the MSER-{batch_size} suggestion {suggested:g}{evidence}; its "
                        "statistics may carry initial-condition bias")
    return WarmupSuggestion(series_interval, truncation, suggested, per_replication,
                            matrix.shape[0], at_boundary, experiment_warmup,
                            f"{name}: " + "; ".join(warnings) if warnings else None, p_value)


def bias_p_value(matrix: np.ndarray, start: int, stop: int) -> float | None:
    """Two-sided p-value of a paired t test across replications (rows) that the mean over
    observations ``[start, stop)`` equals the mean after ``stop``; None with one replication."""
    n = matrix.shape[0]
    if n < 2 or stop <= start or stop >= matrix.shape[1]:
        return None
    d = matrix[:, start:stop].mean(axis=1) - matrix[:, stop:].mean(axis=1)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 1.0 if float(d.mean()) == 0.0 else 0.0
    t = float(d.mean()) / (sd / math.sqrt(n))
    return float(2.0 * special.stdtr(n - 1, -abs(t)))


def _batch_means(series: Sequence[float] | np.ndarray, batch_size: int) -> np.ndarray:
    x = np.asarray(series, dtype=float).ravel()
    m = x.size // batch_size
    if m < 2:
        raise ValueError(f"series of {x.size} observations: MSER-{batch_size} needs at least "
                         f"{2 * batch_size}")
    if np.isnan(x[: m * batch_size]).any():
        raise ValueError("series holds NaN")
    return x[: m * batch_size].reshape(m, batch_size).mean(axis=1)
