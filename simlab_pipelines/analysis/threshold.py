"""The breaking point of one factor: the largest value whose metric stays within a limit.

``search: {method: threshold, factor, min, max, metric, limit, tolerance, replications}``: the
metric's mean g(x) is monotone in the factor x (it grows with x unless ``increasing=False``), and
the breaking point is ``theta = sup {x in [min, max] : g(x) <= limit}`` (for a falling metric,
``inf {x : g(x) <= limit}``). It is found by bisection on one-sided intervals, one of the
stochastic root-finding methods surveyed by Pasupathy & Kim (2011), "The stochastic root-finding
problem: overview, solutions, and open questions", ACM TOMACS 21(3): each point is *decided* to
be within or beyond the limit with a bounded error, and replications are added only where a
decision is not yet clear:

1. Round 0 evaluates min, max and the middle with ``replications`` (R) each.
2. Each point is tested at fixed *looks*: after n = R, 2R, 4R, ... replications (capped at
   ``max_replications``). At a look, with the one-sided t bounds at level ``1 - beta`` on the
   first n values, the point is **within** the limit if its upper bound is <= limit, **beyond**
   it if its lower bound is > limit; otherwise it waits for the next look, and after the last
   one it is **unclear** (its mean is within noise of the limit).
3. The bracket is ``[lo, hi]``: lo the largest point within, hi the smallest point beyond above
   it. The next point halves the bracket; when unclear points sit inside it, the wider of the two
   outer gaps (between lo and the first unclear point, between the last and hi) is halved
   instead, since a point between two unclear ones is itself within noise of the limit.
4. Stop when ``hi - lo <= tolerance`` (for an integer factor when hi = lo + 1), when the outer
   gaps are no wider than the tolerance (unclear points inside: the interval is wider than the
   tolerance, and says why), when the whole range is beyond the limit (a growing metric already
   at min) or within it (still at max), or when the decision budget (below) is spent.

Coverage. At most D points are ever decided: D = 3 (round 0) + twice the bisections from the
middle down to the tolerance (both edges of a stretch of unclear points) + 2; each
has at most L looks. Every
test is at ``beta = (1 - confidence) / (D L)``. A wrong test is a point declared within while
g(x) > limit, or beyond while g(x) <= limit; a point at exactly the limit is within (only
"beyond" is wrong, probability <= beta). With independent replications at different points
(``common_random_numbers: false``), each test, given everything decided before it, is wrong with
probability at most beta (Student t, normal outputs), so all decisions are right with
probability at least ``1 - D L beta = confidence`` (Bonferroni over the decisions). When they
are, monotonicity puts theta in ``[lo, hi]``: g(lo) <= limit gives theta >= lo, and g(hi) > limit
gives g(x) > limit for every x >= hi, so theta <= hi. Hence ``[lo, hi]`` covers theta with
probability at least ``confidence``; "beyond throughout" and "within throughout" are statements
at the same confidence (the interval is then open on one side). With common random numbers the points' errors are positively correlated (the
same streams): errors then come together rather than add up, but the argument above, which
conditions on the past, does not apply as it stands; the tests check coverage in that case too,
by simulation.

The estimate is where the piecewise-linear interpolation of the points' means in ``[lo, hi]``
crosses the limit (the middle of the bracket when it does not).
"""

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import special

from simlab_pipelines.analysis.intervals import check_confidence
from simlab_pipelines.analysis.units import format_setting, setting_digits
from simlab_pipelines.experiments.search import threshold_points

WITHIN, BEYOND, PENDING, UNCLEAR = "within", "beyond", "pending", "unclear"
# Result statuses
FOUND = "found"                # lo and hi within the tolerance (or adjacent integers)
WIDE = "wide"                  # unclear points between lo and hi: wider than the tolerance
BUDGET = "budget"              # the decision budget ran out first
# The whole range is beyond the limit (increasing: already at min) or within it (increasing: still
# at max); for a falling metric the ends swap.
BEYOND_THROUGHOUT = "beyond_throughout"
WITHIN_THROUGHOUT = "within_throughout"
UNCLEAR_END = "unclear_end"    # an end of the range sits within noise of the limit
# Beyond the limit below a value within it and nothing beyond above: the metric does not move in
# the declared direction (search.direction), or a decision was wrong; no interval is given.
NOT_MONOTONE = "not_monotone"
SIMULATION_BUDGET = "simulation_budget"  # the next round would pass budget.simulations
SIGNIFICANT_DIGITS = 6  # as a search's proposals: short, readable configuration keys


@dataclass(frozen=True)
class Point:
    """One evaluated factor value and its decision."""

    x: float
    n: int             # replications given
    used: int          # replications of the decisive (or last) look
    mean: float        # over the ``used`` replications
    stddev: float
    lower: float       # one-sided bounds at 1 - beta over the ``used`` replications
    upper: float
    looks: int         # looks made
    status: str        # within | beyond | pending | unclear
    next_look: int | None = None  # pending: the replications its next look needs


@dataclass(frozen=True)
class BreakingPoint:
    """The answer: the breaking point's estimate and its interval at ``confidence``."""

    estimate: float | None
    ci_low: float | None       # None: unbounded on that side (at or below min)
    ci_high: float | None      # None: at or above max
    confidence: float
    status: str  # found | wide | budget | beyond_throughout | within_throughout | unclear_end
    #              | not_monotone | simulation_budget
    simulations: int
    limit: float
    low: float                 # the searched range
    high: float
    tolerance: float
    increasing: bool
    notes: tuple[str, ...] = ()
    factor: str = ""
    metric: str = ""

    def named(self, factor: str, metric: str) -> "BreakingPoint":
        """The same result with the factor's and the metric's names."""
        return replace(self, factor=factor, metric=metric)


@dataclass(frozen=True)
class ThresholdPlan:
    """What the next round needs, and the answer once the search is done."""

    wanted: dict[float, int]   # factor value -> total replications it needs now
    done: bool
    points: tuple[Point, ...]  # every evaluated value, in factor order
    beta: float                # the level of each test
    decisions: int             # D: the most points the search may decide
    looks: tuple[int, ...]     # the replication counts at which a point is tested
    result: BreakingPoint | None = None
    bracket: tuple[float | None, float | None] = (None, None)
    notes: tuple[str, ...] = field(default_factory=tuple)


def look_schedule(replications: int, max_replications: int) -> tuple[int, ...]:
    """R, 2R, 4R, ... up to ``max_replications`` (which is the last look)."""
    looks, n = [], replications
    while n < max_replications:
        looks.append(n)
        n *= 2
    looks.append(max_replications)
    return tuple(looks)


def decision_budget(low: float, high: float, tolerance: float, integer: bool) -> int:
    """D: round 0's three points, twice the bisections from half the range down to the
    tolerance (a stretch of unclear points has two edges to narrow down), and 2 more. The
    formula lives with the schema (``experiments.search.threshold_points``), which also bounds
    the experiment's partitions by it without loading scipy."""
    return threshold_points(low, high, tolerance, integer)


def round_value(x: float, integer: bool) -> float:
    """A factor value as the search proposes it: an int, or 6 significant digits."""
    if integer:
        return math.floor(x + 1e-9)
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def _decide(x: float, values: np.ndarray, limit: float, beta: float, looks: Sequence[int]
            ) -> Point:
    n = int(values.size)
    made, point = 0, None
    for size in looks:
        if size > n:
            return replace(point, status=PENDING, next_look=size) if point else Point(
                x, n, 0, math.nan, math.nan, math.nan, math.nan, 0, PENDING, size)
        made += 1
        head = values[:size]
        head = head[np.isfinite(head)]
        if head.size < 2:
            point = Point(x, n, size, math.nan, math.nan, math.nan, math.nan, made, PENDING)
            continue
        mean, sd = float(head.mean()), float(head.std(ddof=1))
        margin = float(special.stdtrit(head.size - 1, 1.0 - beta)) * sd / math.sqrt(head.size)
        point = Point(x, n, size, mean, sd, mean - margin, mean + margin, made, PENDING)
        if mean + margin <= limit:
            return replace(point, status=WITHIN)
        if mean - margin > limit:
            return replace(point, status=BEYOND)
    return replace(point, status=UNCLEAR)


def threshold_round(points: Mapping[float, Sequence[float] | np.ndarray], *, low: float,
                    high: float, limit: float, tolerance: float, replications: int,
                    max_replications: int, confidence: float = 0.95, integer: bool = False,
                    increasing: bool = True, simulations: int | None = None) -> ThresholdPlan:
    """The next round of a breaking-point search (see the module docstring).

    ``points``: factor value -> the metric's values over replications 0..n-1 of that value
    (empty for round 0). ``low``/``high``: the factor's range; ``limit``: the metric's;
    ``tolerance``: the interval's width to reach; ``replications``: R, the first look;
    ``max_replications``: the last look (a point's cap); ``integer``: the factor takes integers;
    ``increasing``: the metric grows with the factor; ``simulations``: budget.simulations, which
    no round but the first may pass (the search then stops with the interval it has: every
    decision made stands, so its coverage too). Returns the values wanted next (with their total
    replications), and the answer once ``done``. A pure function of its arguments.
    """
    confidence = check_confidence(confidence)
    if not low < high:
        raise ValueError(f"low = {low!r}, high = {high!r}: need low < high")
    if not tolerance > 0:
        raise ValueError(f"tolerance = {tolerance!r}: must be > 0")
    if replications < 2 or max_replications < replications:
        raise ValueError(f"replications = {replications}, max_replications = {max_replications}:"
                         " need 2 <= replications <= max_replications")
    looks = look_schedule(replications, max_replications)
    budget = decision_budget(low, high, tolerance, integer)
    beta = (1.0 - confidence) / (budget * len(looks))
    sign = 1.0 if increasing else -1.0  # search in u = sign * x, where the metric grows
    decided = sorted((_decide(round_value(x, integer), np.asarray(v, dtype=float).ravel(),
                              limit, beta, looks)
                      for x, v in points.items()), key=lambda p: p.x)
    plan = {"points": tuple(decided), "beta": beta, "decisions": budget, "looks": looks}
    ends = (round_value(low, integer), round_value(high, integer))
    if not decided:
        middle = round_value((low + high) / 2, integer)
        wanted = {x: replications for x in dict.fromkeys((ends[0], middle, ends[1]))}
        return ThresholdPlan(wanted, False, **plan)
    u = {p.x: sign * p.x for p in decided}
    within = [p for p in decided if p.status == WITHIN]
    beyond = [p for p in decided if p.status == BEYOND]
    lo = max(within, key=lambda p: u[p.x], default=None)
    above = [p for p in beyond if lo is None or u[p.x] > u[lo.x]]
    hi = min(above, key=lambda p: u[p.x], default=None)
    notes = []
    if len(above) < len(beyond):
        notes.append("some values beyond the limit lie below values within it: the metric does "
                     "not look monotone in the factor, or a decision was wrong")

    def inside(p: Point) -> bool:
        return (lo is None or u[p.x] > u[lo.x]) and (hi is None or u[p.x] < u[hi.x])

    spent = sum(p.n for p in decided)

    def affordable(wanted: Mapping[float, int]) -> bool:
        have = {p.x: p.n for p in decided}
        more = sum(max(0, n - have.get(x, 0)) for x, n in wanted.items())
        return simulations is None or spent + more <= simulations

    unclear = sorted((p for p in decided if p.status == UNCLEAR and inside(p)),
                     key=lambda p: u[p.x])
    pending = {p.x: p.next_look for p in decided if p.status == PENDING and inside(p)}
    if pending:
        status, wanted = SIMULATION_BUDGET, {x: n for x, n in pending.items() if n}
    else:
        status, nxt = _next(lo, hi, unclear, u, decided, budget, tolerance, integer, sign,
                            ends, low, high)
        wanted = {nxt: replications} if nxt is not None else {}
    if wanted and affordable(wanted):
        return ThresholdPlan(wanted, False, **plan, bracket=_bracket(lo, hi, sign),
                             notes=tuple(notes))
    if wanted:
        status = SIMULATION_BUDGET
        notes.append(f"budget.simulations ({simulations:,}) would be passed by the next round, "
                     "so the search stopped with the interval it had")
    result = _result(decided, lo, hi, unclear, status, limit, confidence, low, high, tolerance,
                     increasing, notes, max_replications)
    return ThresholdPlan({}, True, **plan, result=result, bracket=_bracket(lo, hi, sign),
                         notes=result.notes)


def _bracket(lo: Point | None, hi: Point | None, sign: float
             ) -> tuple[float | None, float | None]:
    ends = [lo.x if lo else None, hi.x if hi else None]
    return (ends[0], ends[1]) if sign > 0 else (ends[1], ends[0])


def _next(lo: Point | None, hi: Point | None, unclear: list[Point], u: Mapping[float, float],
          decided: list[Point], budget: int, tolerance: float, integer: bool, sign: float,
          ends: tuple[float, float], low: float, high: float) -> tuple[str, float | None]:
    """(status if stopping, the next value to evaluate or None)."""
    start_u, end_u = sorted((sign * ends[0], sign * ends[1]))
    if hi is None and lo is not None and any(p.status == BEYOND for p in decided):
        return NOT_MONOTONE, None
    if lo is None and hi is not None and u[hi.x] == start_u:
        return BEYOND_THROUGHOUT, None
    if hi is None and lo is not None and u[lo.x] == end_u:
        return WITHIN_THROUGHOUT, None
    gaps = []  # (width, left u, right u) of the gaps that can still be split
    if not unclear:
        if lo is not None and hi is not None:
            gaps.append((u[hi.x] - u[lo.x], u[lo.x], u[hi.x]))
    else:
        if lo is not None:
            gaps.append((u[unclear[0].x] - u[lo.x], u[lo.x], u[unclear[0].x]))
        if hi is not None:
            gaps.append((u[hi.x] - u[unclear[-1].x], u[unclear[-1].x], u[hi.x]))
    step = max(tolerance, 1.0) if integer else tolerance
    gaps = [g for g in gaps if g[0] > step * (1 + 1e-9)]
    stop = UNCLEAR_END if lo is None or hi is None else (WIDE if unclear else FOUND)
    if not gaps:
        return stop, None
    if len(decided) >= budget:
        return BUDGET, None
    existing = {p.x for p in decided}
    for _, a, b in sorted(gaps, reverse=True):
        x = round_value(sign * (a + b) / 2, integer)
        if x not in existing and min(sign * a, sign * b) < x < max(sign * a, sign * b):
            return stop, x
    return stop, None


def _interpolate(points: list[Point], limit: float, u: Mapping[float, float]) -> float | None:
    """Where the means, joined by straight lines in factor order, first cross ``limit``."""
    ordered = sorted((p for p in points if math.isfinite(p.mean)), key=lambda p: u[p.x])
    for a, b in itertools.pairwise(ordered):
        if (a.mean - limit) * (b.mean - limit) <= 0 and a.mean != b.mean:
            return a.x + (limit - a.mean) / (b.mean - a.mean) * (b.x - a.x)
    return None


def _result(decided: list[Point], lo: Point | None, hi: Point | None, unclear: list[Point],
            status: str, limit: float, confidence: float, low: float, high: float,
            tolerance: float, increasing: bool, notes: list[str],
            max_replications: int) -> BreakingPoint:
    sign = 1.0 if increasing else -1.0
    u = {p.x: sign * p.x for p in decided}
    simulations = sum(p.n for p in decided)
    if unclear:
        # as a person writes them (the plan keeps 6 significant digits: 1.02031 reads 1.02)
        digits = setting_digits([p.x for p in unclear])
        xs = ", ".join(format_setting(p.x, None, digits) for p in unclear)
        notes.append(f"the metric at {xs} stayed within noise of the limit after "
                     f"{max_replications} replications, so the interval is wider than the "
                     "tolerance; more replications (search.max_replications) would narrow it")
    if status == BUDGET:
        notes.append("the decision budget ran out before the interval reached the tolerance")
    # In factor order: the side of lo is the within side.
    within_end = lo.x if lo else None
    beyond_end = hi.x if hi else None
    if increasing:
        ci_low, ci_high = within_end, beyond_end
    else:
        ci_low, ci_high = beyond_end, within_end
    if status == NOT_MONOTONE:
        ci_low = ci_high = None
    estimate = None
    if status not in (BEYOND_THROUGHOUT, WITHIN_THROUGHOUT, NOT_MONOTONE) and lo is not None \
            and hi is not None:
        span = [p for p in decided if u[lo.x] <= u[p.x] <= u[hi.x]]
        estimate = _interpolate(span, limit, u)
        if estimate is None:
            estimate = (lo.x + hi.x) / 2
        if isinstance(lo.x, int) and isinstance(hi.x, int):
            # an integer factor's breaking point is one of its values: the last within the limit
            # before the crossing (the first after it, for a falling metric), inside [lo, hi)
            step = math.floor(estimate + 1e-9) if increasing else math.ceil(estimate - 1e-9)
            estimate = min(max(step, min(lo.x, hi.x)), max(lo.x, hi.x))
        # adjacent integers: the breaking point is the value within the limit
        if isinstance(lo.x, int) and isinstance(hi.x, int) and abs(hi.x - lo.x) == 1:
            estimate = ci_low = ci_high = lo.x
    if status == UNCLEAR_END:
        notes.append("an end of the range is within noise of the limit, so the interval is open "
                     "on that side")
    return BreakingPoint(estimate, ci_low, ci_high, confidence, status, simulations, limit,
                         low, high, tolerance, increasing, tuple(notes))


__all__ = ["BEYOND", "BEYOND_THROUGHOUT", "BUDGET", "FOUND", "NOT_MONOTONE", "PENDING",
           "SIMULATION_BUDGET", "UNCLEAR", "UNCLEAR_END",
           "WIDE", "WITHIN", "WITHIN_THROUGHOUT", "BreakingPoint", "Point", "ThresholdPlan",
           "decision_budget", "look_schedule", "round_value", "threshold_round"]
