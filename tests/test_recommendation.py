"""The recommendation: the answer's first paragraph names what to change, by the objective, with
the indifference zone respected, its evidence in units and its trade-offs.

Constructed observations with known means (a common per-replication term plays the part of
common random numbers, so paired differences are precise): a clear best; two configurations
within the indifference zone of each other (the one changing fewer parameters wins, and a cost
response overrides that); nothing significantly different (it says so and keeps the current
configuration). The differences are many standard errors away from every decision boundary, so
the outcomes hold with overwhelming probability (any seed), not only for the seed used; the
sentences are pinned by their structure (roles, units), never by the seeded numbers.
"""

import re

import numpy as np
import polars as pl
import pytest

from simlab_pipelines.analysis import analyse_experiment
from simlab_pipelines.analysis.answer import format_quantity
from simlab_pipelines.analysis.selection import recommend

CONFIGS = {"tables-8_waiters-2": {"tables": 8, "waiters": 2},
           "tables-8_waiters-3": {"tables": 8, "waiters": 3},
           "tables-9_waiters-2": {"tables": 9, "waiters": 2},
           "tables-9_waiters-3": {"tables": 9, "waiters": 3}}
BASELINE = "tables-8_waiters-2"
UNITS = {"time": "min", "lost": "fraction", "cost": "$"}


def _observations(means: dict[str, dict[str, float]], n: int = 60, noise: float = 0.3,
                  seed: int = 5) -> pl.DataFrame:
    """``means[metric][config]``; each replication adds a common N(0, (2 s)^2) term and
    N(0, (noise s)^2), with s = 1 for times, 0.01 for fractions and 0 for costs (constant)."""
    rng = np.random.default_rng(seed)
    rows = []
    for metric, by_config in means.items():
        scale = {"lost": 0.01, "cost": 0.0}.get(metric, 1.0)
        common = rng.normal(0.0, 2.0 * scale, n)
        for key, mean in by_config.items():
            values = mean + common + rng.normal(0.0, noise * scale, n)
            rows += [("exp", key, r, metric, float(v)) for r, v in enumerate(values)]
    return pl.DataFrame(rows, schema=["experiment", "config_key", "replication", "metric", "value"],
                        orient="row")


def _analyse(obs: pl.DataFrame, **kwargs):
    options = {"experiment": "exp", "baseline": BASELINE, "objective_metric": "time",
               "minimize": True, "configurations": CONFIGS, "units": UNITS}
    return analyse_experiment(obs, **(options | kwargs))


def test_a_clear_best_is_recommended_with_evidence_and_trade_offs():
    obs = _observations({
        "time": {BASELINE: 56.0, "tables-8_waiters-3": 52.5, "tables-9_waiters-2": 56.8,
                 "tables-9_waiters-3": 55.0},
        "lost": {BASELINE: 0.21, "tables-8_waiters-3": 0.17, "tables-9_waiters-2": 0.16,
                 "tables-9_waiters-3": 0.13},
    }, noise=0.3)
    result = _analyse(obs, indifference_zone=1.0, tradeoffs=["lost"])
    first, statistics = result.answer.split("\n\n")
    assert result.recommendation.choice == "tables-8_waiters-3"
    # the change in the reader's words, then its effect against today's setting, in minutes
    assert first.startswith("Recommendation: waiters 2 → 3 (8 tables, 3 waiters). Against "
                            "today's setting (8 tables, 2 waiters) it lowers time by ")
    assert re.search(r"lowers time by [\d.]+ ± [\d.]+ min \(95 % confidence\): [\d.]+ instead of [\d.]+ min\.", first)
    # the trade-off in the file's units: a fraction as a percentage, its change in points
    assert re.search(r"\nIts other effects against today's setting:\n- lost [\d.]+ ± [\d.]+ "
                     r"points lower \([\d.]+ % instead of [\d.]+ %\)\n", first)
    # the procedure's name and constants are below the first paragraph
    assert "bonferroni-crn" not in first and "bonferroni-crn" in statistics
    assert "n0 = 60" in statistics


def test_within_the_indifference_zone_the_smaller_change_wins():
    means = {"time": {BASELINE: 56.0, "tables-8_waiters-3": 52.6, "tables-9_waiters-2": 56.9,
                      "tables-9_waiters-3": 52.3}}
    result = _analyse(_observations(means), indifference_zone=1.0)
    rec = result.recommendation
    assert rec.best == "tables-9_waiters-3"  # the best sample mean ...
    assert rec.choice == "tables-8_waiters-3" and rec.reason == "fewest changes"  # ... not chosen
    assert set(rec.equivalent) == {"tables-8_waiters-3", "tables-9_waiters-3"}
    first, statistics = result.answer.split("\n\n")
    assert first.startswith("Recommendation: waiters 2 → 3 (8 tables, 3 waiters).")
    # why not the best sample mean, in one sentence with the zone's unit
    assert ("9 tables, 3 waiters has the lowest sample mean of time, but 8 tables, 3 waiters is "
            "as good within 1 min and changes one setting less.") in first
    # the statistics never call the recommendation ruled out
    assert "ruled out" not in result.answer
    assert "the recommendation, tables-8_waiters-3, is within the indifference zone" in statistics
    # Outside a narrower zone the best wins again.
    assert _analyse(_observations(means), indifference_zone=0.1).recommendation.choice \
        == "tables-9_waiters-3"


def test_a_cost_response_picks_the_cheapest_of_the_equivalent():
    means = {"time": {BASELINE: 56.0, "tables-8_waiters-3": 52.6, "tables-9_waiters-2": 56.9,
                      "tables-9_waiters-3": 52.3},
             # here a waiter costs more than a table and a waiter together (say, overtime rules)
             "cost": {BASELINE: 480.0, "tables-8_waiters-3": 700.0, "tables-9_waiters-2": 505.0,
                      "tables-9_waiters-3": 645.0}}
    result = _analyse(_observations(means), indifference_zone=1.0, cost_metric="cost")
    assert result.recommendation.choice == "tables-9_waiters-3"
    assert result.recommendation.reason == "cost"
    first = result.answer.split("\n\n")[0]
    assert first.startswith("Recommendation: tables 8 → 9, waiters 2 → 3 (9 tables, 3 waiters).")
    # it is the best sample mean too: nothing to explain
    assert "sample mean" not in first


def test_nothing_significantly_different_says_so_and_keeps_the_current_configuration():
    flat = dict.fromkeys(CONFIGS, 56.0)
    result = _analyse(_observations({"time": flat}, noise=1.0), indifference_zone=0.1)
    first = result.answer.split("\n\n")[0]
    assert result.recommendation.choice == BASELINE
    assert first.startswith("Recommendation: keep today's setting (8 tables, 2 waiters): no "
                            "configuration tested changes time significantly.")
    assert "- 9 tables, 3 waiters: time about the same (" in first


def test_keeping_the_baseline_when_it_is_within_the_zone_of_the_best():
    rec = recommend({"a": 10.0, "b": 9.6, "c": 12.0}, minimize=True, indifference_zone=0.5,
                    changes={"a": 0, "b": 1, "c": 1})
    assert rec.choice == "a" and rec.best == "b" and rec.equivalent == ("b", "a")
    # maximising, no zone: the subset's survivors are the equivalent ones
    rec = recommend({"a": 10.0, "b": 9.6, "c": 12.0}, minimize=False, keep=["c", "a"],
                    changes={"a": 0, "b": 1, "c": 1})
    assert rec.choice == "a" and rec.equivalent == ("c", "a")


@pytest.mark.parametrize(("value", "half", "unit", "text"), [
    (3.4812, 0.2712, "min", "3.48 ± 0.27 min"),
    (0.1712, 0.0131, "fraction", "17.1 ± 1.3 %"),
    (1017.3, 22.4, "$", "$1,017 ± 22"),
    (-12.5, 3.1, "$", "-$12 ± 3"),
    (1075.3, 18.2, "$/day", "$1,075 ± 18 a day"),
    (20.04, 0.53, "requests/s", "20.0 ± 0.5 requests a second"),
    (2.0, 0.0, None, "2"),
])
def test_quantities_carry_their_units(value, half, unit, text):
    assert format_quantity(value, half, unit) == text


def test_without_a_baseline_the_evidence_is_against_the_best():
    means = {"time": {BASELINE: 56.0, "tables-8_waiters-3": 52.6, "tables-9_waiters-2": 56.9,
                      "tables-9_waiters-3": 52.3},
             "cost": {BASELINE: 480.0, "tables-8_waiters-3": 620.0, "tables-9_waiters-2": 505.0,
                      "tables-9_waiters-3": 645.0}}
    result = _analyse(_observations(means), baseline=None, indifference_zone=1.0,
                      cost_metric="cost", tradeoffs=["cost"])
    first = result.answer.split("\n\n")[0]
    assert first.startswith("Recommendation: 8 tables, 3 waiters. Its mean time is ")
    assert "min longer than that of 9 tables, 3 waiters" in first
    assert "is as good within 1 min and costs $25 less." in first
    assert "- 9 tables, 3 waiters: time " in first and "cost $25 higher" in first
    assert "today's setting" not in result.answer  # there is none
