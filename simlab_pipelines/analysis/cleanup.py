"""The clean-up after a search: which evaluated configurations to look at again, how many more
replications each needs, and the recommendation with its guarantee.

An optimiser's search leaves many configurations with a few replications each (the first stage,
R replications). The configuration with the best sample mean among them is biased towards good
luck, and a configuration that looks feasible may be feasible only by chance. Boesel, Nelson &
Kim (2003), "Using ranking and selection to 'clean up' after simulation optimization",
Operations Research 51(5):814–825, turn the search's best into a decision with a guarantee:
screen the evaluated configurations to a few candidates, then run an indifference-zone
selection among them. This module does that, with stochastic constraints:

1. **Candidates** (from the first stage only, replications 0..R-1): the configurations not shown
   infeasible (``analysis.constraints``: feasible or undecided, each bound at its constraint's
   confidence), whose objective mean is within ``zones`` indifference zones of the best
   feasible mean (the best undecided one when none is feasible yet), and the three best
   feasible ones wherever they are (the best may be feasible only by chance), at most
   ``max_candidates`` (best mean first).
2. **Fresh first stage**: each candidate gets replications R..2R-1. The clean-up restarts on new
   replications because the search's own values chose the candidates (a candidate is one whose
   first replications happened to look good); every statistic below uses replications R and
   later only, which the choice never saw, so its guarantee holds whatever the search did.
3. **Second stage**: ``selection.two_stage_selection`` on the fresh first stage gives each
   candidate's total N_i (Clark & Yang's Bonferroni procedure with common random numbers,
   Rinott's without), capped at ``max_replications`` (then ``capped`` is set: the guarantee
   needs the full N_i).
4. **Decision**: the feasibility of every candidate on every constraint from its fresh
   replications, by Stein's statistic (the mean over all of them, the standard deviation of the
   fresh first stage with its n0 - 1 degrees of freedom: exact, although N_i was chosen from the
   first stage's spread — with the standard deviation of all N_i values the error rate exceeds
   its level when the constraint's metric moves with the objective), at *looks* N_i, 2 N_i,
   4 N_i, ... up to ``max_replications``: a candidate is decided at its first look that decides
   it, each look's bound at level ``1 - (1 - c_j)/(k L_i)`` (Bonferroni over the k candidates and
   their L_i looks), and a candidate still undecided gets its next look only while its mean is
   better than the best feasible one's (a near-limit best would otherwise stay undecided and
   never be recommended). The recommendation: the best second-stage mean (replications
   R .. R + N_i - 1, what the selection's guarantee is about) among the candidates declared
   feasible.

The guarantee (normal outputs; Andradóttir & Kim 2010, "Fully sequential procedures for comparing
constrained systems via simulation", Naval Research Logistics 57(5):403–421, combine the two
statements the same way):

- *Feasibility*: the recommendation violates constraint j with probability at most
  ``1 - c_j``: a violating candidate is declared feasible at one of its L_i looks with
  probability at most ``(1 - c_j)/k``, and there are at most k of them.
- *Selection*: let b be the best candidate feasible in truth. With probability at least the
  file's confidence P*, b's final mean beats that of every candidate at least the indifference
  zone worse than b, whatever the means (Rinott: the product bound over those candidates, at
  most k - 1 factors; Clark & Yang: each of b's k - 1 pairwise comparisons fails with
  probability at most (1 - P*)/(k - 1)). The recommendation is the best final mean among the
  candidates declared feasible, so when b is among them the recommendation's mean is within
  the indifference zone of b's (b itself when every other candidate is a zone worse): with
  probability at least ``P* - P(b is not declared feasible)``. That last term is small when b
  meets its limits by more than noise, and up to 1 when b's mean sits at a limit (b then stays
  *undecided* and is never recommended; the answer says how many candidates are undecided).
- Together (Bonferroni): the recommendation is feasible and within the zone of b with
  probability at least ``P* - sum_j (1 - c_j) - P(b is not declared feasible)``.

The guarantee is about the candidates: a configuration the search never proposed, or one it
screened out on its first stage, is not covered.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from simlab_pipelines.analysis.constraints import (
    FEASIBLE,
    UNDECIDED,
    ConstraintStatus,
    Feasibility,
    Limit,
    closest_to_feasible,
    feasibility,
    overall,
    status_of,
)
from simlab_pipelines.analysis.frames import check_observations
from simlab_pipelines.analysis.intervals import Interval, check_confidence, t_interval
from simlab_pipelines.analysis.selection import (
    TwoStageSelection,
    select_best,
    two_stage_selection,
)

FRESH, SECOND, LOOKS, DONE, NONE = "fresh", "second", "looks", "done", "none"
MAX_CANDIDATES = 10
ZONES = 3.0  # "within a few indifference zones of the best"
FEASIBLE_RESERVE = 3  # the best screened-feasible configurations are always candidates


@dataclass(frozen=True)
class CleanUp:
    """Where the clean-up stands, what it wants next, and (once done) its recommendation."""

    stage: str                         # fresh | second | looks | done | none (no candidate)
    candidates: tuple[str, ...]        # best first-stage mean first
    targets: dict[str, int]            # candidate -> total replications wanted now
    screening: Feasibility             # every configuration on replications 0..R-1 (m = 1)
    first_means: dict[str, float]      # every configuration's first-stage objective mean
    first_stage: int                   # R
    n0: int                            # the fresh first stage (replications R .. R+n0-1)
    minimize: bool
    indifference_zone: float | None
    confidence: float
    selection: TwoStageSelection | None = None  # on the fresh data (None for one candidate)
    final: Feasibility | None = None   # candidates on the fresh data (m = k), once done
    means: dict[str, float] = field(default_factory=dict)  # candidates' fresh means, once done
    # candidates' objective on the fresh replications (t intervals at ``confidence``), once done
    intervals: dict[str, Interval] = field(default_factory=dict)
    recommended: str | None = None     # the best candidate declared feasible (None: none is)
    closest: str | None = None         # nothing feasible: the closest to meeting the limits
    capped: bool = False               # some N_i was cut to max_replications: no guarantee
    # candidate -> the replication counts (fresh ones) at which its feasibility may be tested
    looks: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.stage in (DONE, NONE)

    @property
    def statuses(self) -> dict[str, str]:
        """Every evaluated configuration's overall constraint status as it stands: a candidate's
        final one (fresh replications) once the clean-up is done, else the first stage's."""
        found = self.screening.overall
        if self.final is not None:
            found.update(self.final.overall)
        return found

    @property
    def best_first_stage(self) -> str | None:
        """The search's own best: the best first-stage mean among those not shown infeasible."""
        return self.candidates[0] if self.candidates else None

    def simulations(self, current: Mapping[str, int]) -> int:
        """Replications the clean-up adds beyond the first stage, given ``current`` counts."""
        return sum(max(0, int(current.get(k, 0)) - self.first_stage) for k in self.candidates)


def replication_arrays(observations: pl.DataFrame, metrics: Sequence[str],
                       experiment: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """config_key -> metric -> values indexed by replication (0 .. the largest present; NaN where
    a replication has no value), from the long observations frame: ``clean_up``'s input."""
    frame = check_observations(observations)
    if experiment is not None:
        frame = frame.filter(pl.col("experiment") == experiment)
    frame = frame.filter(pl.col("metric").is_in(list(metrics)))
    out: dict[str, dict[str, np.ndarray]] = {}
    for (key, metric), group in frame.group_by("config_key", "metric"):
        reps = group["replication"].to_numpy()
        values = np.full(int(reps.max()) + 1, np.nan)
        values[reps] = group["value"].to_numpy()
        out.setdefault(key, {})[metric] = values
    return out


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def candidates(screening: Feasibility, first_means: Mapping[str, float], *, minimize: bool,
               indifference_zone: float | None, max_candidates: int = MAX_CANDIDATES,
               zones: float = ZONES) -> list[str]:
    """The configurations to clean up (step 1 of the module docstring), best mean first."""
    sign = 1.0 if minimize else -1.0
    overall = screening.overall
    open_ = [k for k, s in overall.items() if s in (FEASIBLE, UNDECIDED)
             and math.isfinite(first_means.get(k, math.nan))]
    if not open_:
        return []
    order = sorted(open_, key=lambda k: (sign * first_means[k], k))
    feasible = [k for k in order if overall[k] == FEASIBLE]
    reference = feasible[0] if feasible else order[0]
    window = math.inf if indifference_zone is None else zones * indifference_zone
    chosen = [k for k in order
              if sign * (first_means[k] - first_means[reference]) <= window * (1 + 1e-12)]
    # The best few feasible always get their second look: the best one may be feasible only by
    # chance (a limit missed by a hair passes the screen at rate 1 - c), and then the window
    # around its mean could leave out every configuration that is feasible in truth.
    # Reserved first, then the window's best others: a cut at max_candidates drops the tail.
    reserved = feasible[:min(FEASIBLE_RESERVE, max_candidates)]
    chosen = [*reserved, *(k for k in chosen if k not in reserved)][:max(1, max_candidates)]
    return sorted(chosen, key=lambda k: (sign * first_means[k], k))


def _block(values: Mapping[str, Mapping[str, np.ndarray]], keys: Sequence[str], metric: str,
           start: int, stop: Mapping[str, int], aligned: bool) -> dict[str, np.ndarray]:
    """Each key's ``metric`` over replications start .. stop[key]-1 (with ``aligned``, only the
    replications where every key has a value, so row i is one replication for all)."""
    blocks = {k: np.asarray(values[k].get(metric, np.empty(0)), dtype=float)[start:stop[k]]
              for k in keys}
    if not aligned:
        return {k: b[np.isfinite(b)] for k, b in blocks.items()}
    length = min(b.size for b in blocks.values())
    ok = np.ones(length, dtype=bool)
    for b in blocks.values():
        ok &= np.isfinite(b[:length])
    return {k: b[:length][ok] for k, b in blocks.items()}


def clean_up(values: Mapping[str, Mapping[str, np.ndarray]], *, objective: str, minimize: bool,
             indifference_zone: float | None, limits: Sequence[Limit], confidence: float,
             first_stage: int, max_replications: int, common_random_numbers: bool = True,
             max_candidates: int = MAX_CANDIDATES, zones: float = ZONES,
             n0: int | None = None) -> CleanUp:
    """The clean-up's state from every evaluated configuration's values (module docstring).

    ``values``: config_key -> metric -> values over replications 0..n-1 in replication order,
    none skipped (NaN only where a value is undefined): the objective's metric and every
    constraint's. ``first_stage``: R, the search's replications per configuration (all have at
    least R). ``n0``: the fresh first stage (default R, at most ``max_replications - R``).
    A pure function: the same values give the same state, whoever replays it.
    """
    confidence = check_confidence(confidence)
    if first_stage < 2:
        raise ValueError(f"first_stage = {first_stage}: the search needs >= 2 replications")
    n0 = min(first_stage if n0 is None else int(n0), max_replications - first_stage)
    if n0 < 2:
        raise ValueError(f"max_replications = {max_replications}: leaves {n0} fresh "
                         f"replications after the first stage of {first_stage}; needs >= 2")
    for key, metrics in values.items():
        have = np.asarray(metrics.get(objective, np.empty(0))).size
        if have < first_stage:
            raise ValueError(f"configuration {key!r}: {have} replications of {objective!r}, "
                             f"fewer than the first stage ({first_stage})")
    first = {k: {m: np.asarray(v, dtype=float)[:first_stage] for m, v in metrics.items()}
             for k, metrics in values.items()}
    screening = feasibility(first, limits, simultaneous=1)
    first_means = {k: _mean(first[k][objective]) for k in first}
    chosen = candidates(screening, first_means, minimize=minimize,
                        indifference_zone=indifference_zone, max_candidates=max_candidates,
                        zones=zones)
    state = {"screening": screening, "first_means": first_means, "first_stage": first_stage,
             "n0": n0, "minimize": minimize, "indifference_zone": indifference_zone,
             "confidence": confidence}
    if not chosen:
        return CleanUp(NONE, (), {}, closest=closest_to_feasible(screening, first_means,
                                                                 minimize), **state)
    have = {k: int(np.asarray(values[k][objective]).size) for k in chosen}
    fresh_end = first_stage + n0
    if any(have[k] < fresh_end for k in chosen):
        return CleanUp(FRESH, tuple(chosen), dict.fromkeys(chosen, fresh_end), **state)
    selection, totals, capped = _second_stage(values, chosen, objective, first_stage, fresh_end,
                                              indifference_zone, confidence, minimize,
                                              common_random_numbers, max_replications)
    if any(have[k] < totals[k] for k in chosen):
        return CleanUp(SECOND, tuple(chosen), totals, selection=selection, capped=capped,
                       **state)
    return _decide(values, chosen, objective, limits, totals, selection, capped,
                   common_random_numbers, max_replications, state)


def _second_stage(values: Mapping[str, Mapping[str, np.ndarray]], chosen: list[str],
                  objective: str, first_stage: int, fresh_end: int,
                  indifference_zone: float | None, confidence: float, minimize: bool,
                  crn: bool, max_replications: int
                  ) -> tuple[TwoStageSelection | None, dict[str, int], bool]:
    """The two-stage selection on the fresh first stage, and each candidate's total."""
    if len(chosen) == 1 or indifference_zone is None:
        return None, dict.fromkeys(chosen, fresh_end), False
    block = _block(values, chosen, objective, first_stage, dict.fromkeys(chosen, fresh_end), crn)
    shortest = min(b.size for b in block.values())
    if shortest < 2:  # undefined objective values in the fresh stage: nothing to select on
        return None, dict.fromkeys(chosen, fresh_end), False
    selection = two_stage_selection(block, indifference_zone=indifference_zone, pstar=confidence,
                                    minimize=minimize, common_random_numbers=crn, n0=shortest)
    totals, capped = {}, False
    for key in chosen:
        wanted = first_stage + selection.required[key] + (fresh_end - first_stage - shortest)
        totals[key] = max(fresh_end, min(wanted, max_replications))
        capped = capped or wanted > max_replications
    return selection, totals, capped


def feasibility_looks(second_stage: int, cap: int) -> tuple[int, ...]:
    """The fresh replication counts at which a candidate's feasibility is tested: its second
    stage's N, then 2N, 4N, ... up to ``cap`` (the last look)."""
    looks, n = [], max(1, second_stage)
    while n < cap:
        looks.append(n)
        n *= 2
    looks.append(cap)
    return tuple(looks)


def _judge(values: Mapping[str, np.ndarray], key: str, limits: Sequence[Limit], start: int,
           n0: int, looks: tuple[int, ...], k: int
           ) -> tuple[tuple[ConstraintStatus, ...], int | None]:
    """A candidate's statuses at its first look that decides it (or its last look made), and
    the replications its next look needs (None: decided, or no look left)."""
    fresh = {m: np.asarray(v, dtype=float)[start:] for m, v in values.items()}
    have = max((v.size for v in fresh.values()), default=0)
    empty = np.empty(0)
    statuses: tuple[ConstraintStatus, ...] = ()
    for size in looks:
        if size > have:
            return statuses or tuple(status_of(empty, lim, config_key=key) for lim in limits), \
                start + size
        statuses = tuple(status_of(fresh.get(lim.metric, empty)[:size], lim, simultaneous=k,
                                   looks=len(looks), variance_from=n0, config_key=key)
                         for lim in limits)
        if overall(statuses) != UNDECIDED:
            return statuses, None
    return statuses, None


def _decide(values: Mapping[str, Mapping[str, np.ndarray]], chosen: list[str], objective: str,
            limits: Sequence[Limit], totals: Mapping[str, int],
            selection: TwoStageSelection | None, capped: bool, crn: bool,
            max_replications: int, state: dict) -> CleanUp:
    """Final feasibility and the best feasible candidate. Each candidate's constraints are
    tested on its fresh replications by Stein's statistic (the fresh first stage's standard
    deviation, the mean over all), at looks N_i, 2 N_i, ... up to max_replications, each test at
    ``1 - (1 - c)/(k L_i)`` (Bonferroni over the k candidates and their L_i looks). A candidate
    still undecided whose mean is better than the best feasible one's gets its next look; the
    selection's means stay those of the second stage (replications R .. R + N_i - 1)."""
    start, n0, k = state["first_stage"], state["n0"], len(chosen)
    looks = {key: feasibility_looks(totals[key] - start, max_replications - start)
             for key in chosen}
    judged = {key: _judge(values[key], key, limits, start, n0, looks[key], k) for key in chosen}
    final = Feasibility(tuple(limits), {key: judged[key][0] for key in chosen}, k)
    block = _block(values, chosen, objective, start, totals, crn and selection is not None)
    means = {key: (float(b.mean()) if b.size else math.nan) for key, b in block.items()}
    intervals = {key: t_interval(b, state["confidence"]) for key, b in block.items()}
    feasible = {key: means[key] for key in final.feasible if math.isfinite(means[key])}
    recommended = select_best(feasible, state["minimize"]) if feasible else None
    sign = 1.0 if state["minimize"] else -1.0
    more = {key: nxt for key, (_, nxt) in judged.items()
            if nxt is not None and math.isfinite(means[key])
            and (recommended is None or sign * (means[key] - means[recommended]) < 0)}
    if more:
        targets = {key: max(totals[key], more.get(key, 0)) for key in chosen}
        return CleanUp(LOOKS, tuple(chosen), targets, selection=selection, capped=capped,
                       looks=looks, **state)
    closest = None if recommended else closest_to_feasible(final, means, state["minimize"])
    return CleanUp(DONE, tuple(chosen), dict(totals), selection=selection, final=final,
                   means=means, intervals=intervals, recommended=recommended, closest=closest,
                   capped=capped, looks=looks, **state)


__all__ = ["DONE", "FRESH", "LOOKS", "MAX_CANDIDATES", "NONE", "SECOND", "ZONES", "CleanUp",
           "candidates", "clean_up", "feasibility_looks", "replication_arrays"]
