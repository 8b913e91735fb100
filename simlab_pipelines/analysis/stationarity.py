"""Is a configuration in a steady state at all? A trend test on the series a model records, or,
for a model that records none, its level metrics compared at the horizon and at twice it.

An M/M/1 queue with more arrivals than service capacity has no steady state: its queue grows
without bound, and its mean wait over a run grows with the run's length. Its replications agree
with each other, so the confidence interval is tight and the number looks like a result, but it
measures only how long the run was (1,807 h of mean wait for a clinic with 1.5 times more demand
than its one doctor can serve). MSER-5 (``warmup.py``) cannot say so: it looks for the end of an
initial transient, not for a trend that never ends.

The test. The engine records a series as batch means of width ``w`` from time 0
(``series_interval``); the part after the warm-up is split into quarters, and per replication
``d = mean(last quarter) - mean(third quarter)``. Replications are independent, so a one-sided
t test across them is exact for the mean of ``d``. A configuration is *growing* when

- the growth is significant (p < ``ALPHA``, 1 %: the false-alarm rate per configuration and
  series of a stationary model), and
- it is large: at least ``MIN_GROWTH`` (5 %) of the third quarter's level. A queue that grows
  linearly from empty gains 40 % between those quarters, one that starts half full 15 %; a
  stationary one, once past its warm-up, gains nothing, however many replications there are.

Comparing the last two quarters ignores an initial transient in the first half (a restaurant's
day that starts empty), which the warm-up check judges; a queue that is still filling up in the
last quarter of the run is flagged whatever the cause (too much demand, or a run too short to
reach its steady state): either way its means depend on the run's length. With one replication
there is no test: the size alone decides.

**Models that record no series** (a command-line simulator, a plug-in without ``Model.series``)
get the horizon-doubling test instead (:func:`doubling_test`): replications 0 .. n-1 of every
configuration are run again at twice the horizon, with the same seed, streams and warm-up
(``horizon_doubling`` in the experiment file, 3 by default; the pool workers run them with the
partition, the summary step never runs a model), and per replication
``d = value(2T) - value(T)`` of each metric that measures a *level* (a mean, a rate, a share:
``engine.models.base.metric_kind``). The first ``T`` of both runs is the same sample path, so
the pairs are tight. A metric that is a *total* (customers served) doubles whether the system is
stable or not, so it is not tested. The decision is the trend test's: one-sided paired t at
``ALPHA`` and growth of at least ``MIN_GROWTH``, but ``ALPHA`` is shared (Bonferroni) by a
configuration's k level metrics, which move together (the mean wait and its percentiles): its
false-alarm rate stays at most 1 % a configuration. A queue that grows linearly from empty gains
33-100 % when the run doubles (all of it when the warm-up is short), a stable one nothing beyond
its noise: an M/M/1 clinic at 1.5 times its capacity, 3 replications of horizon 400, gives
t = 55 on the number in system, where 17 metrics at 2 degrees of freedom need 28.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

ALPHA = 0.01       # the one-sided test's false-alarm rate per configuration and series
MIN_GROWTH = 0.05  # growth between the last two quarters, relative to the third's level
MIN_QUARTER = 2    # observations per quarter, at least


TREND = "trend"                     # Trend.test: the trend of a recorded series
DOUBLING = "horizon_doubling"       # a metric at the horizon against twice it


@dataclass(frozen=True)
class Trend:
    """A steady-state test on one configuration: the trend of a recorded series (``before``,
    ``after``: the third and last quarters' means) or a level metric at the horizon and at twice
    it (``test == DOUBLING``; ``series`` names the metric)."""

    config_key: str
    series: str
    replications: int
    before: float               # mean across replications
    after: float
    relative_growth: float      # (after - before) / |before| (inf from nothing)
    p_value: float | None       # one-sided t test across replications (None with one)
    growing: bool
    test: str = TREND

    def words(self, name: str | None = None) -> str:
        """``number in system (+40 % from the third to the last quarter of the run)``, or
        ``mean wait (+85 % in a run twice as long)``; ``name``: what to call the series or metric."""
        growth = ("from nothing" if math.isinf(self.relative_growth) else
                  f"{self.relative_growth * 100:+.0f} %")
        where = ("in a run twice as long" if self.test == DOUBLING else
                 "from the third to the last quarter of the run")
        return f"{name or self.series.replace('_', ' ')} ({growth} {where})"


def trend_test(series: Sequence[Sequence[float]] | np.ndarray, series_interval: float, *,
               warmup: float = 0.0, config_key: str = "", name: str = "series") -> Trend | None:
    """The trend test (module docstring) on one series per replication, each a list of batch
    means of width ``series_interval`` from time 0; replications of different length are cut to
    the shortest. None when the part after ``warmup`` is too short (fewer than
    ``4 * MIN_QUARTER`` observations) or holds NaN."""
    if not (series_interval > 0 and math.isfinite(series_interval)):
        raise ValueError(f"series_interval = {series_interval!r}: must be a positive number")
    rows = [np.asarray(row, dtype=float).ravel() for row in series]
    if not rows:
        return None
    length = min(r.size for r in rows)
    start = min(length, math.ceil(warmup / series_interval - 1e-9))
    quarter = (length - start) // 4
    if quarter < MIN_QUARTER:
        return None
    matrix = np.vstack([r[:length] for r in rows])
    third = matrix[:, length - 2 * quarter:length - quarter].mean(axis=1)
    last = matrix[:, length - quarter:length].mean(axis=1)
    if np.isnan(third).any() or np.isnan(last).any():
        return None
    return _decide(third, last, config_key, name, TREND)


def doubling_test(at_horizon: Sequence[float], at_double: Sequence[float], *,
                  config_key: str = "", metric: str = "metric", alpha: float = ALPHA
                  ) -> Trend | None:
    """The horizon-doubling test (module docstring) on one level metric of one configuration:
    its values per replication at the horizon and, in the same order, at twice the horizon;
    ``alpha``: its false-alarm rate (``ALPHA`` over the configuration's k level metrics).
    None without a pair of finite values."""
    before, after = np.asarray(at_horizon, dtype=float), np.asarray(at_double, dtype=float)
    if before.shape != after.shape:
        raise ValueError(f"{before.size} values at the horizon against {after.size} at twice it")
    finite = np.isfinite(before) & np.isfinite(after)
    if not finite.any():
        return None
    return _decide(before[finite], after[finite], config_key, metric, DOUBLING, alpha)


def _decide(before: np.ndarray, after: np.ndarray, config_key: str, name: str,
            test: str, alpha: float = ALPHA) -> Trend:
    """Growing: a significant (one-sided paired t at ``alpha``) and large (MIN_GROWTH) rise."""
    d = after - before
    level, gain = float(np.abs(before).mean()), float(d.mean())
    growth = gain / level if level > 0 else (math.inf if gain > 0 else 0.0)
    p_value = _one_sided_p(d)
    significant = p_value is None or p_value < alpha
    return Trend(config_key, name, before.size, float(before.mean()), float(after.mean()),
                 growth, p_value, significant and growth >= MIN_GROWTH, test)


def _one_sided_p(d: np.ndarray) -> float | None:
    """P(T >= t) for H0: mean(d) <= 0 (paired t over replications); None with one."""
    n = d.size
    if n < 2:
        return None
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if float(d.mean()) > 0 else 1.0
    t = float(d.mean()) / (sd / math.sqrt(n))
    return float(special.stdtr(n - 1, -t))


def growing(trends: Sequence[Trend], names: Mapping[str, str] | None = None) -> dict[str, str]:
    """config_key -> what shows it has no steady state, in words: ``the number in system keeps
    growing over the run, without bound`` (a series' trend) or ``the mean wait keeps growing
    with the run's length`` (a metric doubling the horizon); several joined by "and".
    ``names``: what to call a metric or series (its description), else its name."""
    names = names or {}
    grows: dict[str, dict[str, list[str]]] = {}
    for trend in trends:
        if trend.growing:
            what = names.get(trend.series) or trend.series.replace("_", " ")
            grows.setdefault(trend.config_key, {}).setdefault(trend.test, []).append(what)
    phrases = {TREND: "growing over the run, without bound",
               DOUBLING: "growing with the run's length"}
    return {key: " and ".join(
        f"the {' and the '.join(parts)} {'keep' if len(parts) > 1 else 'keeps'} {phrases[test]}"
        for test, parts in by_test.items()) for key, by_test in grows.items()}


def trends_by_configuration(series: Mapping[tuple[str, str], Sequence[Sequence[float]]],
                            series_interval: float, warmup: float) -> list[Trend]:
    """``trend_test`` for every (config_key, series name) -> per-replication rows."""
    out = []
    for (key, name), rows in sorted(series.items()):
        trend = trend_test(rows, series_interval, warmup=warmup, config_key=key, name=name)
        if trend is not None:
            out.append(trend)
    return out
