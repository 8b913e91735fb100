"""The clean-up after a search: candidates, the fresh first stage, the second stage, and a
recommendation that is right with its stated probability.

A known configuration set (normal outputs, a shared per-replication term as common random numbers
give): the cheapest feasible configuration "best" is exactly one indifference zone cheaper than
its feasible rivals (the slippage configuration, the hardest for the selection), a cheaper
"trap" violates the latency limit by a hair (the worst case for the feasibility check: it is
declared feasible at the largest rate the check allows), and a cheaper one violates it clearly.
Over 300 seeded clean-ups with common random numbers (150 with Rinott's procedure), each of the
clean-up's three statements is checked against a binomial bound at the 99.9 % level (a procedure
exactly at its nominal rate fails one of them about 1 run in 1,000; seeds are fixed):

- selection: a feasible configuration other than the best is recommended at most at 1 - 0.95;
- feasibility: a configuration infeasible in truth is recommended at most at the constraint's
  error rate 1 - 0.95;
- both: the best is recommended at least at 0.95 - 0.05 = 0.90 (Bonferroni).
"""

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from simlab_pipelines.analysis.cleanup import (
    DONE,
    FRESH,
    LOOKS,
    NONE,
    SECOND,
    candidates,
    clean_up,
    replication_arrays,
)
from simlab_pipelines.analysis.constraints import Limit, feasibility

DELTA = 2.0
LIMITS = [Limit("latency", None, 0.2, 0.95)]
COST = {"best": 80.0, "rival1": 82.0, "rival2": 82.0, "rival3": 82.0, "tight": 82.0,
        "trap": 70.0, "slow": 75.0, "dear": 95.0}
LATENCY = {"best": 0.15, "rival1": 0.15, "rival2": 0.12, "rival3": 0.16, "tight": 0.19,
           "trap": 0.2 + 1e-9, "slow": 0.26, "dear": 0.10}
INFEASIBLE_IN_TRUTH = {"trap", "slow"}


def _generator(seed: int, crn: bool, size: int = 400, spread: float = 2.0
               ) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    common = rng.normal(0.0, 3.0, size) if crn else np.zeros(size)
    own = spread if crn else math.hypot(spread, 3.0)  # the same variance either way
    return {k: {"cost": COST[k] + common + rng.normal(0.0, own, size),
                "latency": LATENCY[k] + rng.normal(0.0, 0.03, size)} for k in COST}


def _run(seed: int, crn: bool = True, first_stage: int = 10, limits=LIMITS, spread: float = 2.0,
         max_replications: int = 400):
    """Replay the clean-up round by round, adding the replications it asks for."""
    full = _generator(seed, crn, spread=spread)
    have = dict.fromkeys(full, first_stage)
    for _ in range(12):
        values = {k: {m: v[:have[k]] for m, v in full[k].items()} for k in full}
        state = clean_up(values, objective="cost", minimize=True, indifference_zone=DELTA,
                         limits=limits, confidence=0.95, first_stage=first_stage,
                         max_replications=max_replications, common_random_numbers=crn)
        if state.done:
            return state, have
        for key, total in state.targets.items():
            have[key] = max(have[key], total)
    raise AssertionError("the clean-up did not finish in 12 rounds")


@pytest.mark.parametrize("crn", [True, False], ids=["clark-yang-crn", "rinott"])
def test_the_recommendation_is_right_at_the_stated_probability(crn):
    trials = 300 if crn else 150
    runs = [_run(seed, crn)[0] for seed in range(trials)]
    correct = sum(r.recommended == "best" for r in runs)
    infeasible = sum(r.recommended in INFEASIBLE_IN_TRUTH for r in runs)
    wrong_feasible = trials - correct - infeasible  # another feasible one, or none at all
    assert wrong_feasible <= stats.binom.ppf(0.999, trials, 0.05), wrong_feasible / trials
    assert infeasible <= stats.binom.ppf(0.999, trials, 0.05), infeasible / trials
    assert correct >= stats.binom.ppf(0.001, trials, 0.90), correct / trials
    assert not any(r.capped for r in runs)
    assert {r.selection.procedure for r in runs if r.selection} == (
        {"bonferroni-crn"} if crn else {"rinott"})
    # the trap passes the first-stage screen now and then, and is then a candidate
    assert any("trap" in r.candidates for r in runs)


def test_the_second_stage_is_what_keeps_the_crn_selection_right():
    """With common random numbers the test above needs few second-stage replications (the
    common term cancels): a selection on the fresh first stage alone would pass it too. Here
    each configuration's own noise is 2.5 times larger, so the first stage alone picks a rival
    ~38 % of the time; Clark & Yang's second stage must bring it to at most 5 % (99.9 %
    binomial bound, fixed seeds)."""
    trials = 200
    runs = [_run(seed, spread=5.0)[0] for seed in range(trials)]
    wrong_feasible = sum(r.recommended not in ("best", *INFEASIBLE_IN_TRUTH) for r in runs)
    assert wrong_feasible <= stats.binom.ppf(0.999, trials, 0.05), wrong_feasible / trials
    assert not any(r.capped for r in runs)
    assert min(max(r.targets.values()) for r in runs) > 40  # a real second stage


def test_several_candidates_infeasible_by_a_hair_are_recommended_at_most_at_the_error_rate():
    """Five cheaper candidates each violate the latency limit by a hair: judged one at a time
    (level c each), one of them would pass about 1 - 0.95^5 = 23 % of the time and be
    recommended; the final check's Bonferroni over the k candidates keeps the recommendation
    infeasible at most 1 - c = 5 % of the time (99.9 % binomial bound, fixed seeds)."""
    traps = {f"trap{i}": 70.0 + i for i in range(5)}
    cost = {"best": 80.0, "rival": 82.0, **traps}
    trials, infeasible = 200, 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        common = rng.normal(0.0, 3.0, 150)
        full = {k: {"cost": c + common + rng.normal(0.0, 2.0, 150),
                    "latency": (0.2 + 1e-9 if k in traps else 0.15) + rng.normal(0.0, 0.03, 150)}
                for k, c in cost.items()}
        have = dict.fromkeys(full, 10)
        for _ in range(12):
            state = clean_up({k: {m: v[:have[k]] for m, v in full[k].items()} for k in full},
                             objective="cost", minimize=True, indifference_zone=DELTA,
                             limits=LIMITS, confidence=0.95, first_stage=10, max_replications=150)
            if state.done:
                break
            have.update(state.targets)
        assert state.done and not state.capped
        infeasible += state.recommended in traps
    assert infeasible <= stats.binom.ppf(0.999, trials, 0.05), infeasible / trials


def test_a_best_candidate_near_its_limit_gets_more_looks_and_is_recommended():
    """The best configuration meets the latency limit by less than a second stage can show
    (0.185 against 0.2, sd 0.04): judged once on its N_i it stays undecided ~3 times in 4 and a
    rival is recommended; with looks at 2 N_i, 4 N_i, ... (each at (1 - c)/(k L), Bonferroni
    over the looks) it is shown feasible, and the best is recommended at least at 0.95 - 0.05
    (99.9 % binomial bound, 200 fixed seeds). The looks are asked for as a round of their own."""
    cost = {"best": 80.0, "rival1": 82.0, "rival2": 82.0, "rival3": 83.0}
    latency = {"best": 0.185, "rival1": 0.12, "rival2": 0.12, "rival3": 0.12}
    trials, correct, looked = 200, 0, 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        common = rng.normal(0.0, 3.0, 400)
        full = {k: {"cost": c + common + rng.normal(0.0, 2.0, 400),
                    "latency": latency[k] + rng.normal(0.0, 0.04, 400)} for k, c in cost.items()}
        have, stages = dict.fromkeys(full, 10), []
        for _ in range(12):
            state = clean_up({k: {m: v[:have[k]] for m, v in full[k].items()} for k in full},
                             objective="cost", minimize=True, indifference_zone=DELTA,
                             limits=LIMITS, confidence=0.95, first_stage=10, max_replications=400)
            stages.append(state.stage)
            if state.done:
                break
            have.update(state.targets)
        assert state.done and set(state.looks) == set(state.candidates)
        correct += state.recommended == "best"
        looked += LOOKS in stages
    assert correct >= stats.binom.ppf(0.001, trials, 0.90), correct / trials
    assert looked > trials / 2


def test_the_rounds_ask_for_fresh_replications_then_the_second_stage():
    full = _generator(11, True)
    first = {k: {m: v[:10] for m, v in full[k].items()} for k in full}
    state = clean_up(first, objective="cost", minimize=True, indifference_zone=DELTA,
                     limits=LIMITS, confidence=0.95, first_stage=10, max_replications=400)
    assert state.stage == FRESH
    assert set(state.targets) == set(state.candidates) and set(state.targets.values()) == {20}
    assert "slow" not in state.candidates and "dear" not in state.candidates  # infeasible, far
    assert state.candidates[0] == min(state.candidates, key=state.first_means.get)
    fresh = {k: {m: v[:20] for m, v in full[k].items()} for k in full}
    second = clean_up(fresh, objective="cost", minimize=True, indifference_zone=DELTA,
                      limits=LIMITS, confidence=0.95, first_stage=10, max_replications=400)
    assert second.stage == SECOND and second.candidates == state.candidates
    totals = set(second.targets.values())
    assert len(totals) == 1 and totals.pop() >= 20  # Clark & Yang: one common total
    required = next(iter(second.selection.required.values()))
    assert second.targets[second.candidates[0]] == 10 + required


def test_the_decision_uses_only_the_replications_the_candidates_were_not_chosen_on():
    """Changing the first stage's values of the candidates (not enough to change who they are)
    leaves the final means and the recommendation exactly as they were."""
    state, have = _run(5)
    assert state.stage == DONE
    full = _generator(5, True)
    values = {k: {m: v[:have[k]].copy() for m, v in full[k].items()} for k in full}
    again = clean_up(values, objective="cost", minimize=True, indifference_zone=DELTA,
                     limits=LIMITS, confidence=0.95, first_stage=10, max_replications=400)
    for key in state.candidates:
        values[key]["cost"][:10] -= 0.01  # everyone a little cheaper: the same order
    shifted = clean_up(values, objective="cost", minimize=True, indifference_zone=DELTA,
                       limits=LIMITS, confidence=0.95, first_stage=10, max_replications=400)
    assert shifted.candidates == again.candidates == state.candidates
    assert shifted.means == again.means and shifted.recommended == again.recommended
    assert shifted.first_means != again.first_means
    assert again.final.simultaneous == len(state.candidates)  # Bonferroni over the candidates
    # the statuses to show: a candidate's final one, every other configuration's first-stage one
    shown = again.statuses
    assert all(shown[k] == again.final.overall[k] for k in again.candidates)
    assert all(shown[k] == again.screening.overall[k] for k in shown if k not in again.candidates)


def test_nothing_feasible_names_the_closest_and_by_how_much():
    state, _ = _run(3, limits=[Limit("latency", None, 0.05, 0.95)])
    assert state.stage == NONE and state.recommended is None and not state.candidates
    assert state.closest == "dear"  # latency 0.10 misses 0.05 by the least
    missed = state.screening.missed("dear")[0]
    assert missed.miss == pytest.approx(state.screening.statuses["dear"][0].mean - 0.05)


def test_the_best_few_feasible_are_candidates_even_far_from_a_lucky_one():
    """A configuration feasible by chance far ahead of the others must not shut out every
    configuration that is feasible in truth."""
    values = {"lucky": {"cost": np.array([50.0, 51.0, 49.0]), "latency": np.array([.1, .1, .1])},
              "a": {"cost": np.array([80.0, 81.0, 79.0]), "latency": np.array([.1, .1, .1])},
              "b": {"cost": np.array([82.0, 83.0, 81.0]), "latency": np.array([.1, .1, .1])},
              "c": {"cost": np.array([90.0, 91.0, 89.0]), "latency": np.array([.1, .1, .1])},
              "d": {"cost": np.array([99.0, 98.0, 97.0]), "latency": np.array([.1, .1, .1])}}
    screening = feasibility(values, LIMITS, simultaneous=1)
    means = {k: float(v["cost"].mean()) for k, v in values.items()}
    assert candidates(screening, means, minimize=True, indifference_zone=DELTA) == [
        "lucky", "a", "b"]
    assert candidates(screening, means, minimize=True, indifference_zone=DELTA,
                      max_candidates=2) == ["lucky", "a"]


def test_a_crowded_window_keeps_the_best_configurations_not_the_worst():
    """More configurations within the window than max_candidates: the candidates are the best
    ones (the best feasible first among them), never the window's tail."""
    values = {f"c{i:02d}": {"cost": 80.0 + 0.1 * i + np.array([0.0, 1.0, -1.0]),
                            "latency": np.array([.1, .1, .1])} for i in range(14)}
    screening = feasibility(values, LIMITS, simultaneous=1)
    means = {k: float(v["cost"].mean()) for k, v in values.items()}
    assert candidates(screening, means, minimize=True, indifference_zone=DELTA) == [
        f"c{i:02d}" for i in range(10)]
    assert candidates(screening, means, minimize=True, indifference_zone=DELTA,
                      max_candidates=4) == ["c00", "c01", "c02", "c03"]


def test_replication_arrays_index_values_by_replication():
    frame = pl.DataFrame({"experiment": ["e"] * 4, "config_key": ["a", "a", "a", "b"],
                          "replication": [0, 2, 1, 0], "metric": ["cost"] * 4,
                          "value": [1.0, 3.0, None, 4.0]})
    arrays = replication_arrays(frame, ["cost"])
    assert arrays["a"]["cost"][[0, 2]].tolist() == [1.0, 3.0]
    assert math.isnan(arrays["a"]["cost"][1]) and arrays["b"]["cost"].tolist() == [4.0]


def test_one_candidate_is_checked_again_on_fresh_replications_and_maximising_works():
    rng = np.random.default_rng(2)
    full = {"only": {"profit": 10 + rng.normal(0, 1, 40), "latency": 0.1 + rng.normal(0, .01, 40)},
            "bad": {"profit": 20 + rng.normal(0, 1, 40), "latency": 0.5 + rng.normal(0, .01, 40)}}
    have = dict.fromkeys(full, 10)
    for _ in range(3):
        values = {k: {m: v[:have[k]] for m, v in full[k].items()} for k in full}
        state = clean_up(values, objective="profit", minimize=False, indifference_zone=1.0,
                         limits=LIMITS, confidence=0.95, first_stage=10, max_replications=40)
        if state.done:
            break
        have.update(state.targets)
    assert state.stage == DONE and state.candidates == ("only",) and state.selection is None
    assert have == {"only": 20, "bad": 10} and state.recommended == "only"
    assert state.intervals["only"].n == 10  # the fresh replications only


def test_a_second_stage_cut_at_max_replications_is_flagged():
    rng = np.random.default_rng(4)
    full = {k: {"cost": m + rng.normal(0, 10, 60), "latency": np.full(60, 0.1)}
            for k, m in (("a", 80.0), ("b", 80.5), ("c", 81.0))}
    values = {k: {m: v[:20] for m, v in full[k].items()} for k in full}
    state = clean_up(values, objective="cost", minimize=True, indifference_zone=0.5,
                     limits=LIMITS, confidence=0.95, first_stage=10, max_replications=60)
    assert state.stage == SECOND and state.capped and set(state.targets.values()) == {60}
