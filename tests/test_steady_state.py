"""Unstable configurations are flagged (issue 22, item 2): the trend test on recorded series.

Synthetic series with a fixed seed check the test's decisions (a queue growing linearly, one that
is stationary, one with an initial transient); the test's false-alarm rate is 1 % per series
(``stationarity.ALPHA``), and the stationary cases here sit far from it (p ~ 0.5). Then the real
thing: an M/M/c clinic with 1, 2 and 3 doctors at 1.5 times one doctor's capacity, simulated by
the engine and analysed by the summary step: the 1-doctor configuration is marked in the
``steady_state`` table, its notes and the answer, the others are not; its steady_state check
fails in a real Dagster run while the stable experiment's passes.
"""

import json
import re
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

import engine
from engine import command
from engine.models.base import metric_kind
from simlab_pipelines.analysis.stationarity import (
    ALPHA,
    DOUBLING,
    doubling_test,
    growing,
    trend_test,
)
from simlab_pipelines.experiments import ExperimentError, parse_experiment
from simlab_pipelines.summary import analyse

RNG_SEED = 20261203


def _rows(shape, n=10, length=60, seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=float)
    return [shape(t) + rng.normal(0.0, 1.0, length) for _ in range(n)]


def test_a_linearly_growing_queue_is_flagged():
    trend = trend_test(_rows(lambda t: 0.5 * t), 10.0, warmup=0.0, config_key="a", name="queue")
    assert trend.growing and trend.p_value < ALPHA and trend.relative_growth > 0.2
    assert growing([trend]) == {"a": "the queue keeps growing over the run, without bound"}


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


# --- models that record no series: the horizon-doubling test --------------------------------------

def test_a_level_that_grows_when_the_run_doubles_is_flagged_and_a_stable_one_is_not():
    rng = np.random.default_rng(RNG_SEED)
    at_horizon = rng.normal(100.0, 10.0, 3)
    # a queue growing without bound: +60 % in a run twice as long, a little noise per pair
    grows = doubling_test(at_horizon, at_horizon * 1.6 + rng.normal(0.0, 2.0, 3),
                          config_key="a", metric="mean_wait")
    assert grows.growing and grows.test == DOUBLING and grows.p_value < ALPHA
    assert growing([grows], {"mean_wait": "mean wait before service"}) == {
        "a": "the mean wait before service keeps growing with the run's length"}
    assert grows.words("mean wait") == f"mean wait ({grows.relative_growth * 100:+.0f} % in a " \
                                       "run twice as long)"
    # stable: the longer run's mean differs by noise only (its first half is the same path)
    still = doubling_test(at_horizon, at_horizon + rng.normal(0.0, 5.0, 3))
    assert not still.growing
    # significant but within MIN_GROWTH (2 %) is no alarm; NaN pairs are left out
    assert not doubling_test([10.0, 10.0, 10.0], [10.2, 10.2, 10.2]).growing
    assert doubling_test([np.nan, np.nan], [1.0, 2.0]) is None
    with pytest.raises(ValueError, match="3 values at the horizon against 2"):
        doubling_test([1.0, 2.0, 3.0], [1.0, 2.0])


def test_a_shared_false_alarm_rate_needs_more_evidence_per_metric():
    # +10 % with t = 17.3 on 2 degrees of freedom (p = 0.0017): significant alone, not as one
    # of 17 metrics sharing 1 %
    before = np.array([100.0, 100.0, 100.0])
    after = before + np.array([9.0, 10.0, 11.0])
    alone = doubling_test(before, after)
    shared = doubling_test(before, after, alpha=ALPHA / 17)
    assert alone.p_value == shared.p_value and ALPHA / 17 < alone.p_value < ALPHA
    assert alone.growing and not shared.growing


@pytest.mark.parametrize(("name", "unit", "declared", "kind"), [
    ("mean_wait", "time units", None, "level"), ("wait_p95", "min", None, "level"),
    ("blocking_probability", None, None, "level"), ("utilisation", "fraction", None, "level"),
    ("profit", "$/day", None, "level"), ("calls", "per hour", None, "level"),
    ("customers", "customers", None, None), ("max_queue", None, None, None),
    ("mean_wait", "min", "total", "total"), ("served", None, "level", "level"),
])
def test_a_metrics_kind_is_declared_or_read_from_its_name_and_unit(name, unit, declared, kind):
    assert metric_kind(name, unit, declared) == kind


def test_a_bad_kind_is_refused_where_it_is_declared():
    with pytest.raises(ValueError, match=r"kind must be 'level' or 'total', got x='often'"):
        engine.Model(name="m", description="", parameters=(), metrics={"x": "x"},
                     run=lambda *a: None, default_horizon=1.0, default_warmup=0.0,
                     kinds={"x": "often"})
    with pytest.raises(command.DeclarationError, match=r"metrics\.calls\.kind.*'level'.*'total'"):
        command.parse_declaration({"name": "sim", "command": ["./sim"], "version": "1",
                                   "metrics": {"calls": {"kind": "lots"}}}, frozenset())


ENGINE_CLI = str(Path(sys.executable).parent / "simlab-engine")
# The clinic as a command-line simulator: simlab-engine's own mmck run through argv, which records
# no series (a command never does), so its experiments get the horizon-doubling test.
COMMAND_CLINIC = CLINIC | {
    "name": "clinic_command", "horizon": 400, "replications": 4,
    "model": {"name": "clinic_cli", "version": "1",
              "metrics": {"mean_wait": {"unit": "time units", "better": "lower",
                                        "description": "mean wait before service"},
                          "mean_number_in_system": {"unit": "customers"},
                          "server_utilisation": {"unit": "fraction"},
                          "customers_served": {"unit": "customers", "kind": "total"}},
              "command": [ENGINE_CLI, "run", "mmck", "--servers", "{servers}",
                          "--arrival-rate", "{arrival_rate}", "--service-rate", "{service_rate}",
                          "--seed", "{seed_entropy}", "--replication", "{replication}",
                          "--horizon", "{horizon}", "--warmup", "{warmup}", "--json"],
              "parameters": {"servers": {"type": "int", "minimum": 1},
                             "arrival_rate": {"type": "float", "minimum": 0},
                             "service_rate": {"type": "float", "minimum": 0}}},
}
COMMAND_CLINIC.pop("series_interval")


def test_which_experiments_run_the_doubling_sample():
    spec = parse_experiment(COMMAND_CLINIC)
    assert spec.doubling_sample == 3  # auto: no series recorded, level metrics declared
    assert spec.level_metrics == ("mean_wait", "mean_number_in_system", "server_utilisation")
    assert parse_experiment(COMMAND_CLINIC | {"horizon_doubling": 0}).doubling_sample == 0
    assert parse_experiment(COMMAND_CLINIC | {"horizon_doubling": 9}).doubling_sample == 4
    # a model that declares series is checked by their trend (with series_interval), not this
    assert parse_experiment(CLINIC).doubling_sample == 0
    assert parse_experiment({k: v for k, v in CLINIC.items() if k != "series_interval"}
                            ).doubling_sample == 0
    # asking for it changes what the simulations depend on; auto without it changes nothing
    assert parse_experiment(COMMAND_CLINIC | {"horizon_doubling": 0}).simulation_hash() != \
        parse_experiment(COMMAND_CLINIC).simulation_hash()
    assert parse_experiment(CLINIC | {"horizon_doubling": 0}).simulation_hash() == \
        parse_experiment(CLINIC).simulation_hash()
    counts = dict(COMMAND_CLINIC["model"], metrics={"customers_served": {"kind": "total"}})
    counting = COMMAND_CLINIC | {"model": counts, "objective": None}
    assert parse_experiment(counting).doubling_sample == 0
    with pytest.raises(ExperimentError, match=r"horizon_doubling: 3 .*metrics of model "
                                              r"'clinic_cli'.*kind: level"):
        parse_experiment(counting | {"horizon_doubling": 3})


def test_an_overloaded_command_clinic_is_flagged_by_doubling_its_horizon(lab):
    import dagster as dg

    from simlab_pipelines.sweep import sweep

    path = lab / "experiments" / "clinic_command.yaml"
    path.write_text(yaml.safe_dump(COMMAND_CLINIC, sort_keys=False))
    with dg.instance_for_test() as instance:
        report = sweep(path, instance, workers=2)
    assert report.still_missing == 0 and report.checks["steady_state"] is False
    database = str(lab / "data" / "simlab.duckdb")
    with duckdb.connect(database, read_only=True) as con:
        rows = con.execute("SELECT config_key, metric, replications, growing FROM steady_state "
                           "WHERE test = 'horizon_doubling'").fetchall()
        (answer,) = con.execute("SELECT answer FROM answers").fetchone()
    flagged = {key for key, _, _, grows in rows if grows}
    assert flagged == {"servers-1"}
    # every level metric of every configuration tested on the sample; the count is not
    assert {m for _, m, _, _ in rows} == {"mean_wait", "mean_number_in_system",
                                          "server_utilisation"}
    assert {n for *_, n, _ in rows} == {3} and len(rows) == 9
    # (which of its level metrics reach significance is the test's; the queue's do by far)
    what = r"(mean number in system|mean wait before service)"
    assert re.search(rf"1 server: demand exceeds capacity: the {what}( and the {what} keep|"
                     r" keeps) growing with the run's length, so its mean wait before service "
                     r"depends only on how long you simulate\.", answer)
    assert "- 1 server: no steady state" in answer
    html = (lab / "data" / "clinic_command.html").read_text(encoding="utf-8")
    section = html[html.index('id="steady-state--horizon-doubled"'):]
    assert "servers-1" in section and "no: keeps growing" in section
    # turning the check off (or on) re-runs the experiment, and the sweep says why
    from simlab_pipelines.staleness import stale_reasons
    from simlab_pipelines.storage import ResultStore

    store = ResultStore(str(lab / "data" / "results"))
    assert stale_reasons(parse_experiment(COMMAND_CLINIC), store) == []
    assert stale_reasons(parse_experiment(COMMAND_CLINIC | {"horizon_doubling": 0}), store) == [
        "steady-state check's runs at twice the horizon dropped (horizon_doubling: 0): 12 "
        "results are stale"]
    # the sample's runs are the same replications at twice the horizon, same random numbers,
    # and they leave the replications' own results as they were
    files = pl.read_parquet(str(lab / "data" / "results" / "clinic_command" / "*" / "*.parquet"))
    for row in files.iter_rows(named=True):
        params = json.loads(row["params"])
        at = engine.simulate("mmck", params, replication=row["replication"], seed=11,
                             horizon=400.0, warmup=100.0)
        assert row["metrics"]["mean_wait"] == at.metrics["mean_wait"]
        if row["replication"] >= 3:
            assert row["double_horizon"] is None
            continue
        twice = engine.simulate("mmck", params, replication=row["replication"], seed=11,
                                horizon=800.0, warmup=100.0)
        assert json.loads(row["double_horizon"]) == {
            "horizon": 800.0, "metrics": {m: twice.metrics[m] for m in
                                          ("mean_wait", "mean_number_in_system",
                                           "server_utilisation", "customers_served")}}
