"""Sequential replications: how many replications each configuration needs for a relative precision.

Procedure (deterministic; one call plans one round). It is the *replication algorithm* of Hoad,
Robinson & Davies (2010), "Automated selection of the number of replications for a discrete-event
simulation", Journal of the Operational Research Society 61(11):1632–1644, run in rounds, with the
round size projected as in the sequential procedure of Law (2015), *Simulation Modeling and
Analysis*, 5th ed., §9.4.1:

1. ``d_i = t_{i-1, (1+confidence)/2} · s_i / (sqrt(i) · |mean_i|)`` is the relative half-width of
   the t interval on the first ``i`` replications (in replication order, so that the result does
   not depend on the order in which runs finished).
2. A configuration is **met** when it has at least ``min_replications`` observations and the
   precision has held for a look-ahead: ``d_j <= target`` for every ``j`` from ``N_sol`` to ``n``,
   with ``n - N_sol >= f(N_sol)``, where ``f(N) = look_ahead`` for ``N <= 100`` and
   ``floor(look_ahead · N / 100)`` above (Hoad et al.'s ``kLimit`` rule; they recommend 5). The
   look-ahead guards against stopping on a chance dip of the variance estimate. ``look_ahead=0``
   gives Law's plain sequential rule (stop as soon as ``d_n <= target``).
3. Otherwise the next round asks for
   - ``min_replications`` observations (the pilot) if there are fewer;
   - ``N_sol + f(N_sol)`` if the precision holds now but not yet for the look-ahead;
   - else the projection ``n* + f(n*)``, ``n*`` the smallest ``i > n`` with
     ``t_{i-1} · s_n / (sqrt(i) · |mean_n|) <= target`` (Law's ``n*_r``, with the current
     estimates), at most ``max_growth · n`` so that a pilot variance that happens to be large does
     not order a huge batch;
   and never more than ``max_replications`` in total (status **max_reached** once there).
4. Mean (about) zero. The relative half-width is unbounded as the mean goes to zero, so it is
   treated as undefined whenever the interval contains zero (``d_n >= 1``, i.e. ``|mean| <=
   half_width``; ``inf`` for a mean of exactly zero, see ``intervals``): the sign of the mean is
   not even known, so no projection from it is trusted. Such a configuration is grown by
   ``max_growth`` per round up to ``max_replications`` with status **undefined** (kept once the
   maximum is reached), so the caller can warn that a relative precision is meaningless for this
   metric and an absolute one is needed. A constant output (half-width 0) is *met*.
5. A metric that is NaN (undefined) in a replication gives no observation: that replication is
   made up for. But a configuration whose metric is undefined in *every* replication of its pilot
   (a mean over nothing, each time) gets no more (status **undefined**): more replications would
   not define it.

Replications are added at the end: a configuration with ``current`` replications gets replication
numbers ``current .. target-1``, and replication r always has the same random streams, so adding
replications never changes earlier ones and the common random numbers stay aligned across
configurations.

Law's procedure bounds the *relative error* ``|mean - mu| / |mu|`` by ``gamma`` with the adjusted
target ``gamma / (1 + gamma)``; pass that as ``target`` for his guarantee. Here the target is the
relative half-width itself (what the summary reports).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from simlab_pipelines.analysis.frames import as_arrays
from simlab_pipelines.analysis.intervals import (
    RELATIVE_CAP,
    check_confidence,
    t_interval,
    t_quantile,
)

MET, MORE, MAX_REACHED, UNDEFINED = "met", "more", "max_reached", "undefined"


@dataclass(frozen=True)
class ReplicationPlan:
    """What one configuration needs after this round."""

    config_key: str
    current: int                 # replications scheduled so far
    observed: int                # observations of the precision metric among them
    target: int                  # replications it should have after the next round (>= current)
    mean: float
    half_width: float
    relative_half_width: float   # d_n on the observations (inf for a mean of about zero)
    status: str                  # met | more | max_reached | undefined

    @property
    def additional(self) -> int:
        """Replications to add in the next round (replication numbers current .. target-1)."""
        return self.target - self.current


def look_ahead_length(n: int, look_ahead: int) -> int:
    """Hoad et al.'s look-ahead ``f(kLimit, n)``: ``kLimit`` up to 100, then proportional."""
    return look_ahead if n <= 100 else (look_ahead * n) // 100


def prefix_relative_half_widths(values: np.ndarray, confidence: float) -> np.ndarray:
    """``d_i`` for i = 1..n (NaN for i = 1): relative half-width on the first i observations."""
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return np.empty(0)
    shifted = x - x.mean()  # shifting keeps the running sums of squares accurate
    i = np.arange(1, n + 1, dtype=float)
    s1, s2 = np.cumsum(shifted), np.cumsum(shifted**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(s2 - s1**2 / i, 0.0) / (i - 1)
        half = t_quantile(confidence, i - 1) * np.sqrt(var / i)
        means = np.abs(s1 / i + x.mean())
        d = np.where(means * RELATIVE_CAP <= half, np.inf, half / means)
    return np.where(half == 0.0, 0.0, d)  # NaN (i = 1) stays NaN


def next_round(observations: Mapping[str, Sequence[float] | np.ndarray], *, target: float,
               max_replications: int, confidence: float = 0.95,
               current: Mapping[str, int] | None = None, min_replications: int = 10,
               look_ahead: int = 5, max_growth: float = 2.0) -> dict[str, ReplicationPlan]:
    """Plan the next round of replications for every configuration (see the module docstring).

    ``observations``: config_key -> the precision metric's values in replication order (NaN =
    undefined in that replication, ignored). ``target``: the relative half-width wanted (e.g.
    0.05). ``current``: replications already scheduled per configuration (default: the number of
    values given, NaN included; a replication without a value counts here but not as an
    observation, and is made up for). ``min_replications``: the pilot (Law recommends >= 10;
    capped at ``max_replications``). ``look_ahead``: Hoad et al.'s kLimit. ``max_growth``: the
    largest factor by which a round may multiply a configuration's observations. Returns
    config_key -> ReplicationPlan; the experiment is finished when every plan has
    ``additional == 0`` (``is_finished``).
    """
    confidence = check_confidence(confidence)
    if not (isinstance(target, int | float) and target > 0 and math.isfinite(target)):
        raise ValueError(f"target = {target!r}: the relative half-width must be a positive number")
    if min_replications < 2:
        raise ValueError(f"min_replications = {min_replications}: must be >= 2")
    if max_replications < 2:
        raise ValueError(f"max_replications = {max_replications}: must be >= 2")
    min_replications = min(min_replications, max_replications)  # a small maximum caps the pilot
    if look_ahead < 0:
        raise ValueError(f"look_ahead = {look_ahead}: must be >= 0")
    if not max_growth > 1:
        raise ValueError(f"max_growth = {max_growth}: must be > 1")
    data = as_arrays(observations, "observations")
    plans = {}
    for key, x in data.items():
        # By default every value given, defined or not, is a replication already run.
        given = np.asarray(observations[key], dtype=float).size
        scheduled = int(current[key]) if current is not None and key in current else int(given)
        if scheduled < x.size:
            raise ValueError(f"current[{key!r}] = {scheduled}: fewer than its {x.size} observations")
        plans[key] = _plan(key, x, scheduled, target, max_replications, confidence,
                           min_replications, look_ahead, max_growth)
    return plans


def is_finished(plans: Mapping[str, ReplicationPlan]) -> bool:
    """True when no configuration needs more replications."""
    return all(plan.additional == 0 for plan in plans.values())


def _plan(key: str, x: np.ndarray, scheduled: int, target: float, max_replications: int,
          confidence: float, min_replications: int, look_ahead: int,
          max_growth: float) -> ReplicationPlan:
    n = int(x.size)
    d = prefix_relative_half_widths(x, confidence)
    d_n = float(d[-1]) if n else math.nan
    interval = t_interval(x, confidence)
    mean, half = interval.mean, interval.half_width

    undefined = n >= 2 and not d_n < 1.0  # the interval contains zero (or d_n is NaN)
    if n == 0 and scheduled >= min_replications:  # undefined in every replication so far
        return ReplicationPlan(key, scheduled, 0, scheduled, mean, half, d_n, UNDEFINED)

    def plan(wanted_observations: int | None, status: str) -> ReplicationPlan:
        if wanted_observations is None:
            total = scheduled
        else:
            total = max(scheduled, min(max_replications, scheduled + max(wanted_observations - n, 1)))
        if total == scheduled and status != MET:
            status = UNDEFINED if undefined else MAX_REACHED
        return ReplicationPlan(key, scheduled, n, total, mean, half, d_n, status)

    if n < min_replications:
        if scheduled >= max_replications:
            return plan(None, MAX_REACHED)
        return plan(min_replications, MORE)

    # Start of the final run of prefixes (from min_replications on) meeting the target.
    ok = d[min_replications - 1:] <= target
    start = None
    if ok[-1]:
        failing = np.flatnonzero(~ok)
        start = min_replications + (int(failing[-1]) + 1 if failing.size else 0)
        if n - start >= look_ahead_length(start, look_ahead):
            return plan(None, MET)
    if scheduled >= max_replications:
        return plan(None, MAX_REACHED)
    grow_cap = math.ceil(max_growth * n)
    if start is not None:
        return plan(min(start + look_ahead_length(start, look_ahead), grow_cap), MORE)
    if undefined:
        return plan(grow_cap, UNDEFINED)
    projected = _projection(n, d_n, target, confidence, max(grow_cap, max_replications))
    wanted = projected + look_ahead_length(projected, look_ahead)
    return plan(min(wanted, grow_cap), MORE)


def _projection(n: int, d_n: float, target: float, confidence: float, limit: int) -> int:
    """Smallest i > n with ``t_{i-1} · s / (sqrt(i) |mean|) <= target`` (capped at ``limit``).

    With ``c = s / |mean| = d_n · sqrt(n) / t_{n-1}`` the condition is ``t_{i-1} c / sqrt(i) <=
    target``; the normal approximation ``(z c / target)^2`` gives a start, then t is checked.
    """
    c = d_n * math.sqrt(n) / float(t_quantile(confidence, n - 1))
    z = float(t_quantile(confidence, 1e12))
    guess = max(n + 1, math.ceil((z * c / target) ** 2))
    if guess >= limit:
        return limit
    i = np.arange(guess, limit + 1)
    ok = t_quantile(confidence, i - 1) * c / np.sqrt(i) <= target
    hits = np.flatnonzero(ok)
    return int(i[hits[0]]) if hits.size else limit
