"""Output statistics restricted to the observation window [warmup, warmup + horizon].

Time averages are time-weighted; tallies record an observation only when it is made inside the
window. Optional batch means over the whole run (warm-up included) feed warm-up diagnostics.
``Sample`` keeps a tally's observations, for exact per-replication quantiles and tail fractions.
"""

import math
from array import array
from collections.abc import Sequence

import numpy as np


class TimeAverage:
    """The time-weighted average of a piecewise-constant quantity over the observation window."""

    __slots__ = ("_area", "_batch_area", "_batch_end", "_batch_width", "_end", "_last", "_start",
                 "batches", "value")

    def __init__(self, start: float, end: float, batch_width: float | None = None) -> None:
        self._start = start
        self._end = end
        self._last = 0.0
        self._area = 0.0
        self.value = 0.0
        self._batch_width = batch_width
        self._batch_area = 0.0
        self._batch_end = batch_width if batch_width else 0.0
        self.batches: list[float] = []

    def set(self, now: float, value: float) -> None:
        """Record that the quantity changes to ``value`` at time ``now``."""
        if self._batch_width:
            self._advance_batches(now)
        lo = self._last if self._last > self._start else self._start
        hi = now if now < self._end else self._end
        if hi > lo:
            self._area += self.value * (hi - lo)
        self._last = now
        self.value = value

    def add(self, now: float, delta: float) -> None:
        """Record a change of the quantity by ``delta`` at time ``now``."""
        self.set(now, self.value + delta)

    def _advance_batches(self, now: float) -> None:
        last, width = self._last, self._batch_width
        while now >= self._batch_end:
            self._batch_area += self.value * (self._batch_end - last)
            self.batches.append(self._batch_area / width)
            self._batch_area = 0.0
            last = self._batch_end
            self._batch_end += width
        self._batch_area += self.value * (now - last)

    def mean(self) -> float:
        """The time average over the window (call after the run, once the clock reached its end)."""
        self.set(self._end, self.value)
        span = self._end - self._start
        return self._area / span if span > 0 else float("nan")


class Tally:
    """The mean of observations made inside the observation window."""

    __slots__ = ("_end", "_start", "count", "total")

    def __init__(self, start: float, end: float) -> None:
        self._start = start
        self._end = end
        self.count = 0
        self.total = 0.0

    def record(self, now: float, value: float) -> None:
        if self._start <= now <= self._end:
            self.count += 1
            self.total += value

    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


class Counter:
    """A count of occurrences inside the observation window."""

    __slots__ = ("_end", "_start", "count")

    def __init__(self, start: float, end: float) -> None:
        self._start = start
        self._end = end
        self.count = 0

    def hit(self, now: float) -> None:
        if self._start <= now <= self._end:
            self.count += 1


class Sample:
    """Every observation made inside the observation window, for its mean, quantiles and tail.

    The values go into a typed array of doubles (one append per observation, 8 bytes each), and
    the quantiles are computed once, after the run, over all of them: exact order statistics, not
    a streaming approximation.
    """

    __slots__ = ("_end", "_start", "values")

    def __init__(self, start: float, end: float) -> None:
        self._start = start
        self._end = end
        self.values = array("d")

    def record(self, now: float, value: float) -> None:
        if self._start <= now <= self._end:
            self.values.append(value)

    @property
    def count(self) -> int:
        return len(self.values)

    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values) if self.values else float("nan")

    def quantiles(self, probabilities: Sequence[float]) -> list[float]:
        """The sample quantiles (type 7, numpy's default); NaN for each when nothing was observed."""
        if not self.values:
            return [float("nan")] * len(probabilities)
        data = np.frombuffer(self.values, dtype=np.float64)
        return [float(q) for q in np.quantile(data, probabilities)]

    def fraction_over(self, threshold: float) -> float:
        """The fraction of observations strictly greater than ``threshold`` (NaN when none)."""
        if not self.values:
            return float("nan")
        data = np.frombuffer(self.values, dtype=np.float64)
        return float(np.count_nonzero(data > threshold)) / data.size


# The percentiles the built-in models report for their per-entity times: p50, p90, p95, p99.
PERCENTILES = (50, 90, 95, 99)


def percentile_metrics(prefix: str, sample: Sample) -> dict[str, float]:
    """``{f"{prefix}_p50": ..., ..., f"{prefix}_p99": ...}`` from ``sample``."""
    values = sample.quantiles([p / 100 for p in PERCENTILES])
    return {f"{prefix}_p{p}": v for p, v in zip(PERCENTILES, values, strict=True)}


def percentile_help(prefix_help: str) -> dict[str, str]:
    """Help texts for ``percentile_metrics``: ``{"p50": "50th percentile of <prefix_help>", ...}``."""
    return {f"p{p}": f"{p}th percentile of {prefix_help}" for p in PERCENTILES}
