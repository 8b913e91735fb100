"""Is a configuration in a steady state at all? A trend test on the series a model records.

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

Why a trend test rather than re-running a sample at twice the horizon: it uses the data the
sweep already has (the summary step never runs a user's model), it has a stated false-alarm
rate, and it judges the state (queue, number in system), where doubling the horizon doubles
counts (parties served) as much as the wait of an unstable queue, so that check would need to
know which metrics are counts. A model records a series by declaring ``Model.series`` and
returning ``ModelRun(..., series={name: batch means})`` when ``series_interval`` is given; an
experiment asks for it with ``series_interval``.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

ALPHA = 0.01       # the one-sided test's false-alarm rate per configuration and series
MIN_GROWTH = 0.05  # growth between the last two quarters, relative to the third's level
MIN_QUARTER = 2    # observations per quarter, at least


@dataclass(frozen=True)
class Trend:
    """The trend test on one configuration's series."""

    config_key: str
    series: str
    replications: int
    third_quarter_mean: float   # across replications
    last_quarter_mean: float
    relative_growth: float      # (last - third) / |third| (inf from an empty third quarter)
    p_value: float | None       # one-sided t test across replications (None with one)
    growing: bool

    def words(self) -> str:
        """``number in system (+40 % from the third to the last quarter of the run)``."""
        growth = ("from nothing" if math.isinf(self.relative_growth) else
                  f"{self.relative_growth * 100:+.0f} %")
        return (f"{self.series.replace('_', ' ')} ({growth} from the third to the last quarter "
                "of the run)")


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
    d = last - third
    level, gain = float(np.abs(third).mean()), float(d.mean())
    growth = gain / level if level > 0 else (math.inf if gain > 0 else 0.0)
    p_value = _one_sided_p(d)
    significant = p_value is None or p_value < ALPHA
    return Trend(config_key, name, matrix.shape[0], float(third.mean()), float(last.mean()),
                 growth, p_value, significant and growth >= MIN_GROWTH)


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


def growing(trends: Sequence[Trend]) -> dict[str, str]:
    """config_key -> what keeps growing in it, in words (``number in system``; several joined
    by "and the")."""
    out: dict[str, list[str]] = {}
    for trend in trends:
        if trend.growing:
            out.setdefault(trend.config_key, []).append(trend.series.replace("_", " "))
    return {key: " and the ".join(parts) for key, parts in out.items()}


def trends_by_configuration(series: Mapping[tuple[str, str], Sequence[Sequence[float]]],
                            series_interval: float, warmup: float) -> list[Trend]:
    """``trend_test`` for every (config_key, series name) -> per-replication rows."""
    out = []
    for (key, name), rows in sorted(series.items()):
        trend = trend_test(rows, series_interval, warmup=warmup, config_key=key, name=name)
        if trend is not None:
            out.append(trend)
    return out
