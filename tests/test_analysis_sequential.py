"""Sequential replications stop near the replications a known variance calls for, never exceed the
maximum, and only add replications to configurations that need them."""

import math

import numpy as np
import pytest

from simlab_pipelines.analysis.intervals import t_interval, t_quantile
from simlab_pipelines.analysis.sequential import (
    MAX_REACHED,
    MET,
    UNDEFINED,
    is_finished,
    look_ahead_length,
    next_round,
)

TARGET, MAXIMUM, LOOK_AHEAD = 0.05, 2000, 5


def required(mu: float, sigma: float, target: float) -> int:
    """The smallest n with t_{n-1} sigma / (sqrt(n) mu) <= target: what a known sigma calls for."""
    n = np.arange(2, 100_000)
    return int(n[np.argmax(t_quantile(0.95, n - 1) * sigma / (np.sqrt(n) * mu) <= target)])


def run_rounds(streams: dict[str, np.ndarray], maximum: int = MAXIMUM, **options):
    """Drive next_round to the end; replication r of a configuration is always streams[key][r]."""
    current = dict.fromkeys(streams, 0)
    history = []
    for _ in range(50):
        plans = next_round({k: streams[k][:current[k]] for k in streams}, target=TARGET,
                           max_replications=maximum, current=current, **options)
        history.append(plans)
        if is_finished(plans):
            return plans, history
        current = {k: p.target for k, p in plans.items()}
    raise AssertionError("no convergence in 50 rounds")


def test_stops_near_the_replications_a_known_sigma_requires():
    # 40 normal configurations, mean 10, sigma 1.5..3.5, target relative half-width 5%: they need
    # n* = 38..190 replications (t-based, known sigma). The procedure sees only the samples. Over
    # 400 such configurations the ratio (final - look-ahead) / n* had median 1.01 and 0.1% / 99.9%
    # quantiles 0.58 / 1.83 (sampling error of s at the stop). Checked: the median over 40 within
    # [0.85, 1.2] (sd of that median ~0.035: > 4 sd margin) and every ratio within [0.4, 2.2].
    rng = np.random.default_rng(99)
    sigmas = np.linspace(1.5, 3.5, 40)
    streams = {f"c{i}": rng.normal(10.0, s, MAXIMUM) for i, s in enumerate(sigmas)}
    plans, _ = run_rounds(streams)
    ratios = []
    for i, sigma in enumerate(sigmas):
        plan = plans[f"c{i}"]
        assert plan.status == MET
        truth = required(10.0, sigma, TARGET)
        ratios.append((plan.target - look_ahead_length(truth, LOOK_AHEAD)) / truth)
        # The precision really holds on the replications it stopped with.
        assert t_interval(streams[f"c{i}"][:plan.target]).relative_half_width <= TARGET
    assert 0.85 <= np.median(ratios) <= 1.2, np.median(ratios)
    assert min(ratios) >= 0.4 and max(ratios) <= 2.2, (min(ratios), max(ratios))


def test_never_exceeds_the_maximum_and_only_grows_configurations_that_need_it():
    rng = np.random.default_rng(5)
    streams = {
        "easy": rng.normal(100.0, 1.0, 3000),      # met after the pilot and its look-ahead
        "hard": rng.normal(10.0, 3.0, 3000),       # n* ~ 140
        "hopeless": rng.normal(10.0, 40.0, 3000),  # n* ~ 24,600 > maximum
        "zero": rng.normal(0.0, 1.0, 3000),        # mean 0: relative precision undefined
        "constant": np.full(3000, 7.0),            # half-width 0: met at once
    }
    plans, history = run_rounds(streams, maximum=300)
    for plans_of_round in history:
        for plan in plans_of_round.values():
            assert plan.current <= plan.target <= 300
    assert plans["easy"].status == MET and plans["easy"].target == 10 + LOOK_AHEAD
    assert plans["constant"].status == MET and plans["constant"].target == 10 + LOOK_AHEAD
    assert plans["hard"].status == MET and plans["hard"].target < 300
    assert plans["hopeless"].status == MAX_REACHED and plans["hopeless"].target == 300
    assert plans["zero"].status == UNDEFINED and plans["zero"].target == 300
    # Once a configuration is met it gets nothing more while the others keep growing.
    met_at = next(i for i, h in enumerate(history) if h["easy"].status == MET)
    assert all(h["easy"].additional == 0 for h in history[met_at:])
    assert any(h["hard"].additional > 0 for h in history[met_at:])


def test_missing_values_are_made_up_and_the_plan_is_deterministic():
    rng = np.random.default_rng(8)
    values = rng.normal(10.0, 3.0, 30)
    values[[3, 17]] = math.nan  # two replications without a value: they count as scheduled
    first = next_round({"a": values}, target=TARGET, max_replications=500)
    again = next_round({"a": values.copy()}, target=TARGET, max_replications=500)
    assert first == again
    assert first["a"].observed == 28 and first["a"].current == 30
    assert first["a"].target > 30
    pilot = next_round({"a": values[4:8]}, target=TARGET, max_replications=500, current={"a": 6})
    assert pilot["a"].target == 6 + (10 - 4)  # the pilot asks for 10 observations


def test_a_metric_undefined_in_every_replication_of_the_pilot_gets_no_more():
    undefined = np.full(10, math.nan)  # e.g. a mean wait with nobody served, every time
    plans = next_round({"never": undefined, "once": np.r_[undefined[:9], 4.0]}, target=TARGET,
                       max_replications=1000)
    assert plans["never"].target == 10 and plans["never"].status == UNDEFINED
    assert plans["once"].target > 10  # a value now and then: the missing ones are made up for
    short = next_round({"a": undefined[:4]}, target=TARGET, max_replications=1000)
    assert short["a"].target == 4 + 10  # not a whole pilot yet: it asks for 10 values


def test_look_ahead_rule_and_arguments():
    assert look_ahead_length(50, 5) == 5 and look_ahead_length(400, 5) == 20
    with pytest.raises(ValueError, match="target"):
        next_round({"a": [1.0, 2.0]}, target=0.0, max_replications=100)
    with pytest.raises(ValueError, match="max_replications"):
        next_round({"a": [1.0, 2.0]}, target=0.1, max_replications=1)
    small = next_round({"a": [1.0, 2.0]}, target=0.01, max_replications=5)
    assert small["a"].target == 5  # the pilot is capped by a small maximum
    with pytest.raises(ValueError, match="current"):
        next_round({"a": [1.0, 2.0, 3.0]}, target=0.1, max_replications=100, current={"a": 2})
