"""MSER-5 finds a planted initial transient, leaves a stationary series alone, and warns."""

import numpy as np
import pytest

import engine
from simlab_pipelines.analysis.warmup import mser_statistic, mser_truncation, suggest_warmup

T = 1000  # observations per replication


def transient_replications(seed: int, replications: int = 10) -> list[np.ndarray]:
    # 10·exp(-t/40) + N(0, 1): the bias is below 0.07 (a fifteenth of the noise) after t = 200,
    # i.e. the transient occupies the first 20% of the run.
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return [10.0 * np.exp(-t / 40.0) + rng.normal(0.0, 1.0, T) for _ in range(replications)]


def test_finds_a_planted_transient():
    # Over 200 seeds the averaged-series suggestion ranged over 130..265 observations (median
    # 165) and the per-replication mean over 107..147; the bands below hold all of them.
    suggestion = suggest_warmup(transient_replications(seed=2025), series_interval=0.5,
                                experiment_warmup=20.0)
    assert 0.1 * T <= suggestion.truncation <= 0.3 * T
    assert suggestion.suggested_warmup == suggestion.truncation * 0.5  # in simulated time
    assert 0.05 * T * 0.5 <= suggestion.mean_replication_warmup <= 0.3 * T * 0.5
    assert len(suggestion.per_replication_warmup) == suggestion.replications == 10
    assert not suggestion.at_boundary
    assert suggestion.shorter and "shorter than the MSER-5 suggestion" in suggestion.warning


def test_no_warning_when_the_warmup_is_long_enough_and_a_stationary_series_is_kept():
    # Pure noise: over 300 seeds the suggestion never exceeded 65 of 1000 observations.
    rng = np.random.default_rng(11)
    suggestion = suggest_warmup([rng.normal(5.0, 1.0, T) for _ in range(10)], 1.0,
                                experiment_warmup=200.0)
    assert suggestion.truncation <= 0.1 * T
    assert not suggestion.shorter and suggestion.warning is None


def test_a_trend_is_flagged_as_having_no_steady_state():
    trend = np.linspace(10.0, 0.0, T) + np.random.default_rng(1).normal(0.0, 0.1, T)
    suggestion = suggest_warmup([trend], 1.0)
    assert suggestion.at_boundary and "no steady state" in suggestion.warning


def test_a_minimum_at_the_boundary_on_a_stationary_series_is_not_flagged():
    # A stable queue's series, one replication with a spike late in the first half: MSER-5's
    # minimum is the last searched batch, but what it would cut does not differ from the rest
    # (paired t across the 10 replications, p ~ 0.35): no warning, the check passes.
    rng = np.random.default_rng(5)
    rows = [rng.normal(0.2, 0.05, 270) for _ in range(10)]
    rows[0][130:135] += 30.0
    statistic = mser_statistic(np.mean(rows, axis=0))
    assert int(np.argmin(statistic)) == statistic.size - 1  # the boundary case
    suggestion = suggest_warmup(rows, 10.0, experiment_warmup=60.0)
    assert suggestion.bias_p_value > 0.01
    assert not suggestion.at_boundary and suggestion.warning is None


def test_mser_statistic_by_definition():
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 1.0, 103)  # 20 whole batches of 5; the last 3 observations are dropped
    z = x[:100].reshape(20, 5).mean(axis=1)
    want = [np.sum((z[d:] - z[d:].mean()) ** 2) / (20 - d) ** 2 for d in range(11)]
    assert mser_statistic(x) == pytest.approx(want)
    assert mser_truncation(x) == 5 * int(np.argmin(want))


def test_bad_series_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="at least 10"):
        suggest_warmup([[1.0] * 9], 1.0)
    with pytest.raises(ValueError, match="series_interval"):
        suggest_warmup([[1.0] * 20], 0.0)
    with pytest.raises(ValueError, match="NaN"):
        suggest_warmup([[1.0] * 19 + [float("nan")]], 1.0)


def test_engine_series_of_a_queue_started_empty():
    # M/M/20 at rho = 0.8 starts empty and climbs to its mean of 16 in system within a few mean
    # service times. MSER-5 on the engine's series (batch means of width 0.5 over 300 time units,
    # 8 replications) suggested 2.5..62.5 time units over 40 seeds, never 0; a zero warm-up is
    # flagged as too short.
    runs = [engine.simulate("mmck", {"servers": 20, "arrival_rate": 16.0, "service_rate": 1.0},
                            replication=r, seed=77, horizon=300.0, warmup=0.0,
                            series_interval=0.5).series["number_in_system"] for r in range(8)]
    suggestion = suggest_warmup(runs, 0.5, experiment_warmup=0.0, name="number_in_system")
    assert 0.0 < suggestion.suggested_warmup < 100.0
    assert suggestion.shorter and suggestion.warning.startswith("number_in_system")


def test_a_short_warmup_on_an_unbiased_series_rarely_warns():
    # Stationary noise and no warm-up at all: MSER-5's minimum often falls after the start (the
    # warm-up is then "shorter"), but the bias test keeps false alarms at its 1% level. Over 200
    # independent experiments the number of warnings is Binomial(200, <= 0.01): P(X > 8) < 3e-4.
    shorter = warned = 0
    rng = np.random.default_rng(314)
    for _ in range(200):
        suggestion = suggest_warmup([rng.normal(5.0, 1.0, 200) for _ in range(10)], 1.0,
                                    experiment_warmup=0.0)
        shorter += suggestion.shorter
        warned += suggestion.warning is not None
        assert suggestion.biased == (suggestion.warning is not None)
    assert shorter >= 40  # the case the test exists for does happen
    assert warned <= 8


def test_a_planted_bias_after_the_warmup_is_found_by_the_test():
    # The transient of transient_replications lasts ~200 observations; a warm-up of 50 keeps a
    # bias of 10·exp(-50/40) ~ 2.9 noise units at its start: significant far beyond 1%.
    suggestion = suggest_warmup(transient_replications(seed=7), 1.0, experiment_warmup=50.0)
    assert suggestion.shorter and suggestion.biased
    assert suggestion.bias_p_value < 1e-6
