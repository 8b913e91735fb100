"""The web_pool model's own tests: its randomness follows simlab's seeding contract, and with
timeouts off, no slowdown and no contention it is an M/M/c queue (Erlang C)."""

import statistics

import numpy as np
import pytest
from scipy import stats
from webpool.model import MODEL

import engine
from engine.randomness import Stream, stream_id
from engine.theory import mmc

STREAMS = ("arrivals", "service", "retry_service", "backoff")
STORMY = {"arrival_rate": 20.0, "service_time": 0.1, "db_cores": 4, "pool_size": 8,
          "timeout": 1.0, "max_retries": 2, "slowdown_factor": 4.0, "slowdown_start": 10.0,
          "slowdown_duration": 5.0}


def test_declaration_is_a_valid_plug_in():
    from engine.registry import check_model

    assert check_model(MODEL, "web_pool") is MODEL
    assert MODEL.name == "web_pool" and MODEL.version


def test_every_draw_comes_from_the_contract_streams(monkeypatch):
    # Record what each named stream hands out, then rebuild every stream with numpy alone:
    # SeedSequence(entropy=seed, spawn_key=(replication, stream_id(name))), the helpers drawing
    # standard exponentials in blocks of 512.
    seen: dict[str, list[float]] = {}
    real = Stream.exponential

    def recording(self, mean):
        value = real(self, mean)
        seen.setdefault(self.name, []).append(value / mean)
        return value

    monkeypatch.setattr(Stream, "exponential", recording)
    seed, replication = 2**65 + 3, 4
    params = MODEL.validate(STORMY)
    via_engine = engine.simulate(MODEL, params, replication=replication, seed=seed, horizon=40,
                                 warmup=5)
    assert set(seen) == set(STREAMS)  # retries happened: all four streams were used
    for name, values in seen.items():
        sequence = np.random.SeedSequence(entropy=seed, spawn_key=(replication, stream_id(name)))
        expected = np.random.Generator(np.random.PCG64(sequence)).standard_exponential(len(values))
        assert np.allclose(values, expected, rtol=1e-12, atol=0), name
    # And engine.simulate is exactly the model's run on the contract's streams.
    direct = MODEL.run(params, engine.Streams(seed, (replication,)), 5.0, 40.0, None)
    assert direct.metrics == via_engine.metrics


def test_common_random_numbers_keep_arrivals_across_pool_sizes():
    # Same replication, other pool size: the same requests with the same work arrive, so with no
    # timeouts every request is answered in both and goodput (answered per second) is equal.
    calm = {"arrival_rate": 5.0, "service_time": 0.1, "timeout": 0.0}
    a = engine.simulate(MODEL, {**calm, "pool_size": 2}, replication=1, seed=9, horizon=50,
                        warmup=0)
    b = engine.simulate(MODEL, {**calm, "pool_size": 6}, replication=1, seed=9, horizon=50,
                        warmup=0)
    assert a.metrics["success_rate"] == b.metrics["success_rate"] == 1.0
    assert a.metrics["mean_wait"] >= b.metrics["mean_wait"]


def test_without_timeouts_it_is_an_m_m_c_queue():
    # lambda = 2, mu = 1, c = 3 (rho = 2/3): the mean wait for a connection must be Erlang C's
    # Wq. A 99% t interval over independent replications (fixed seed) must contain it.
    params = {"arrival_rate": 2.0, "service_time": 1.0, "pool_size": 3, "timeout": 0.0,
              "db_cores": 0, "slowdown_duration": 0.0}
    waits = [engine.simulate(MODEL, params, replication=r, seed=20260401, horizon=1000,
                             warmup=100).metrics["mean_wait"] for r in range(10)]
    theory = mmc(3, 2.0, 1.0)
    mean, sem = statistics.fmean(waits), statistics.stdev(waits) / len(waits) ** 0.5
    half = stats.t.ppf(0.995, len(waits) - 1) * sem
    assert abs(mean - theory.Wq) <= half, (mean, half, theory.Wq)
    assert half < 0.35 * theory.Wq  # the interval is narrow enough to mean something


@pytest.mark.parametrize("cancel", [0, 1])
def test_retries_without_cancellation_keep_the_storm_going(cancel):
    # The behaviour the example experiment is about: same seed, with and without cancellation.
    result = engine.simulate(MODEL, {**STORMY, "pool_size": 4, "max_retries": 3,
                                     "cancel_abandoned": cancel},
                             replication=0, seed=5, horizon=60, warmup=5)
    assert result.metrics["attempts_per_request"] > 1.0
    if cancel:
        assert result.metrics["final_success_rate"] > 0.9
    else:
        assert result.metrics["final_success_rate"] < 0.1


def test_every_metric_says_its_unit_and_which_way_is_better():
    # the answer writes every number with its unit and knows which way each metric is better
    assert set(MODEL.units) == set(MODEL.metrics) == set(MODEL.better)


def test_the_backlog_grows_in_a_retry_storm_and_settles_after_a_recovery():
    # Recorded only when asked (series_interval); the steady-state check reads it. A storm (3
    # retries, nothing cancelled) keeps piling attempts up to the end; without retries and with
    # cancellation the backlog is back to its old level after the slowdown.
    base = {"arrival_rate": 20.0, "service_time": 0.1, "db_cores": 4, "pool_size": 8,
            "timeout": 1.0, "backoff": 0.2, "slowdown_factor": 4.0, "slowdown_start": 60.0,
            "slowdown_duration": 15.0}

    def backlog(**changes):
        record = engine.simulate(MODEL, base | changes, replication=0, seed=1, horizon=240,
                                 warmup=30, series_interval=10)
        return record.series["database_backlog"]

    storm = backlog(max_retries=3, cancel_abandoned=0)
    calm = backlog(max_retries=0, cancel_abandoned=1)
    assert np.mean(storm[-6:]) > 1.2 * np.mean(storm[-12:-6]) > 100  # still growing at the end
    assert np.mean(calm[-6:]) < 10  # back to a few attempts in flight
    assert engine.simulate(MODEL, base, replication=0, seed=1, horizon=60,
                           warmup=0).series is None  # not asked: not recorded
