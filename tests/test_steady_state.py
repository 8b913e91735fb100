"""Unstable configurations are flagged (issue 22, item 2): the trend test on recorded series.

Synthetic series with a fixed seed check the test's decisions (a queue growing linearly, one that
is stationary, one with an initial transient); the test's false-alarm rate is 1 % per series
(``stationarity.ALPHA``), and the stationary cases here sit far from it (p ~ 0.5). Then the real
thing: an M/M/c clinic with 1, 2 and 3 doctors at 1.5 times one doctor's capacity, simulated by
the engine and analysed by the summary step: the 1-doctor configuration is marked in the
``steady_state`` table, its notes and the answer, the others are not; its steady_state check
fails in a real Dagster run while the stable experiment's passes.
"""

import duckdb
import numpy as np
import polars as pl
import pytest

import engine
from simlab_pipelines.analysis.stationarity import ALPHA, growing, trend_test
from simlab_pipelines.experiments import parse_experiment
from simlab_pipelines.summary import analyse

RNG_SEED = 20261203


def _rows(shape, n=10, length=60, seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=float)
    return [shape(t) + rng.normal(0.0, 1.0, length) for _ in range(n)]


def test_a_linearly_growing_queue_is_flagged():
    trend = trend_test(_rows(lambda t: 0.5 * t), 10.0, warmup=0.0, config_key="a", name="queue")
    assert trend.growing and trend.p_value < ALPHA and trend.relative_growth > 0.2
    assert growing([trend]) == {"a": "queue"}


@pytest.mark.parametrize("shape", [
    lambda t: np.full_like(t, 5.0),                  # stationary from the start
    lambda t: 5.0 * (1.0 - np.exp(-t / 4.0)),        # fills up, then settles (a day from empty)
])
def test_stationary_and_settling_series_are_not_flagged(shape):
    trend = trend_test(_rows(shape), 10.0, warmup=0.0)
    assert not trend.growing


def test_a_significant_but_tiny_drift_is_not_flagged():
    # 1,000 replications make 1 % of growth significant; it is below MIN_GROWTH (5 %)
    trend = trend_test(_rows(lambda t: 100.0 + 0.02 * t, n=1000), 10.0)
    assert trend.p_value < ALPHA and not trend.growing


def test_too_short_after_the_warmup_is_not_tested():
    assert trend_test(_rows(lambda t: t, length=20), 10.0, warmup=150.0) is None  # 5 left
    with pytest.raises(ValueError, match="series_interval"):
        trend_test(_rows(lambda t: t), 0.0)


CLINIC = {
    "name": "clinic_load", "question": "How many doctors?", "model": "mmck", "seed": 11,
    "replications": 6, "horizon": 800, "warmup": 100, "series_interval": 20,
    "parameters": {"arrival_rate": 1.5, "service_rate": 1.0},
    "factors": {"servers": [1, 2, 3]}, "baseline": {"servers": 2},
    "objective": {"metric": "mean_wait", "direction": "minimize"},
}


def _simulated(spec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The observations and series frames the summary step reads, from the engine directly."""
    obs, series = [], []
    for config in spec.configurations_list():
        for r in range(spec.replications):
            record = engine.simulate(spec.resolved_model, config.params, replication=r,
                                     seed=spec.seed, horizon=spec.resolved_horizon,
                                     warmup=spec.resolved_warmup,
                                     series_interval=spec.series_interval)
            obs += [(spec.name, config.key, r, m, v) for m, v in record.metrics.items()]
            series += [(spec.name, config.key, r, name, i, v)
                       for name, values in record.series.items() for i, v in enumerate(values)]
    return (pl.DataFrame(obs, schema=["experiment", "config_key", "replication", "metric",
                                      "value"], orient="row"),
            pl.DataFrame(series, schema=["experiment", "config_key", "replication", "series",
                                         "index", "value"], orient="row"))


def test_an_overloaded_clinic_is_marked_in_the_summary_and_the_answer():
    spec = parse_experiment(CLINIC)
    result = analyse(spec, *_simulated(spec))
    flagged = {t.config_key for t in result.trends if t.growing}
    assert flagged == {"servers-1"}
    assert any(n.startswith("servers-1: no steady state: the number in system") for n in
               result.notes)
    first = result.answer.split("\n\n")[0]
    assert ("1 server: demand exceeds capacity: the number in system keeps growing over the run, "
            "without bound, so its mean wait before service depends only on how long you "
            "simulate.") in first
    assert "- 1 server: no steady state" in first


def test_the_steady_state_check_fails_only_for_the_growing_configuration(lab, materialize):
    import dagster as dg

    from simlab_pipelines.assets import replications_key, summary_key
    from simlab_pipelines.partitions import Batch
    from simlab_pipelines.resources import SimlabStorage

    spec = parse_experiment(CLINIC | {"horizon": 400, "replications": 4})
    storage = SimlabStorage(results_uri=str(lab / "data" / "results"),
                            duckdb_path=str(lab / "data" / "simlab.duckdb"), workers=1)
    with dg.instance_for_test() as instance:
        every = Batch(("servers-1|0", f"servers-3|{spec.replications - 1}"))  # one run
        assert materialize(spec, storage, instance, [replications_key(spec.name)],
                           tags=every.tags()).success
        result = materialize(spec, storage, instance, [summary_key(spec.name)])
        assert result.success
        checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
                  for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        event = instance.get_latest_materialization_event(summary_key(spec.name))
        metadata = event.asset_materialization.metadata
    check = checks["steady_state"]
    assert not check.passed
    assert check.metadata["failing_configurations"].value == ["servers-1"]
    with duckdb.connect(storage.duckdb_path, read_only=True) as con:
        rows = dict(con.execute("SELECT config_key, growing FROM steady_state").fetchall())
        (answer,) = con.execute("SELECT answer FROM answers").fetchone()
    assert rows == {"servers-1": True, "servers-2": False, "servers-3": False}
    assert "1 server: demand exceeds capacity" in answer
    # the UI's table and the HTML report say it too
    marked = {r.data["configuration"]: r.data["steady state"]
              for r in metadata["steady_state"].value.records}
    assert marked == {"servers-1": "no: keeps growing", "servers-2": "yes", "servers-3": "yes"}
    from simlab_pipelines.report import write_experiment_report

    html = write_experiment_report(spec.name, storage.duckdb_path).read_text(encoding="utf-8")
    section = html[html.index('id="steady-state--trend-test"'):]
    assert "servers-1" in section and "no: keeps growing" in section
