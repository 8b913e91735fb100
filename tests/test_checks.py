"""The theory check's treatment of metrics that were the same in every replication."""

import duckdb
import pytest

from engine import theory
from simlab_pipelines.checks import theory_check
from simlab_pipelines.experiments import parse_experiment


def _spec(arrival_rate: float):
    return parse_experiment({
        "name": "degenerate", "model": "mmck", "seed": 1, "replications": 40, "horizon": 3000,
        "warmup": 300, "parameters": {"servers": 2, "capacity": 10, "service_rate": 1.0,
                                      "arrival_rate": arrival_rate}})


def _summary_table(tmp_path, rows) -> str:
    """A DuckDB file whose summary table holds ``rows`` (experiment, config_key, metric, n, mean,
    stddev): what the theory check reads."""
    path = tmp_path / "simlab.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE summary (experiment VARCHAR, config_key VARCHAR, "
                    "metric VARCHAR, n BIGINT, mean DOUBLE, stddev DOUBLE)")
        con.executemany("INSERT INTO summary VALUES (?, ?, ?, ?, ?, ?)", rows)
    return str(path)


def _database(tmp_path, spec, blocking_mean: float):
    """A summary table where every metric sits on its theoretical value with a small spread,
    except the blocking probability: 0 in every replication (standard deviation 0)."""
    config = spec.configurations_list()[0]
    truth = theory.expected_metrics(config.params)
    rows = [[spec.name, config.key, metric, 40,
             *((blocking_mean, 0.0) if metric == "blocking_probability" else (value, 0.01))]
            for metric, value in truth.items()]
    return _summary_table(tmp_path, rows), truth["blocking_probability"]


def test_no_blocked_arrival_passes_when_blocking_is_too_rare_to_be_seen(tmp_path):
    spec = _spec(0.5)  # rho = 0.25, K = 10: P(block) ~ 1e-6, ~0.07 blocked arrivals expected
    path, truth = _database(tmp_path, spec, 0.0)
    assert 0 < truth < 1e-5
    assert theory_check(spec, path).passed


@pytest.mark.parametrize("arrival_rate", [1.5, 1.9])
def test_no_blocked_arrival_fails_where_blocking_should_have_been_seen(tmp_path, arrival_rate):
    spec = _spec(arrival_rate)  # rho >= 0.75: thousands of blocked arrivals expected
    path, truth = _database(tmp_path, spec, 0.0)
    assert truth > 1e-3
    result = theory_check(spec, path)
    assert not result.passed
    assert result.metadata["failures"].value == [
        f"{spec.configurations_list()[0].key}/blocking_probability"]


def test_a_constant_metric_must_equal_the_theory(tmp_path):
    spec = _spec(0.5)
    path, _ = _database(tmp_path, spec, 0.5)  # constant, and far from ~1e-6
    assert not theory_check(spec, path).passed


def test_a_configuration_without_steady_state_is_skipped_not_fatal(tmp_path):
    spec = parse_experiment({
        "name": "unstable", "model": "mmck", "seed": 1, "replications": 5, "horizon": 100,
        "check_theory": True, "parameters": {"service_rate": 1.0, "arrival_rate": 1.2},
        "configurations": [{"servers": 1}, {"servers": 2}]})  # rho = 1.2 (no steady state), 0.6
    stable = spec.configurations_list()[1]
    truth = theory.expected_metrics(stable.params)
    path = _summary_table(tmp_path, [[spec.name, key, metric, 5, value, 0.01]
                                     for key in spec.config_keys()
                                     for metric, value in truth.items()])
    result = theory_check(spec, path)
    assert result.passed
    assert result.metadata["no_steady_state"].value == ["servers-1"]
    assert result.metadata["intervals"].value == len(truth)


def test_expected_partitions_include_the_selection_second_stage(tmp_path):
    # The no_missing_replications check replays the targets from DuckDB's observations: with an
    # indifference zone small against the spread, the second stage is wanted too.
    import numpy as np
    import polars as pl

    from simlab_pipelines import plan
    from simlab_pipelines.checks import expected_partitions

    spec = parse_experiment({
        "name": "staged", "model": "mmck", "seed": 1, "replications": 10,
        "parameters": {"capacity": 10, "service_rate": 1.0, "arrival_rate": 0.8},
        "factors": {"servers": [1, 2]},
        "precision": {"metric": "mean_wait", "relative_half_width": 0.5,
                      "max_replications": 300},
        "objective": {"metric": "mean_wait", "direction": "minimize",
                      "indifference_zone": 0.5}})
    rng = np.random.default_rng(8)
    common = rng.normal(0.0, 2.0, 10)
    rows = [("staged", f"servers-{s}", r, "mean_wait", float(10.0 - s + common[r]
                                                            + rng.normal(0.0, 1.0)))
            for s in (1, 2) for r in range(10)]
    obs = pl.DataFrame(rows, schema=["experiment", "config_key", "replication", "metric",
                                     "value"], orient="row")
    path = tmp_path / "simlab.duckdb"
    with duckdb.connect(str(path)) as con:
        con.register("frame", obs)
        con.execute("CREATE TABLE observations AS SELECT * FROM frame")
    targets = plan.replication_targets(spec, obs)
    assert all(t.selection_required and t.replications > 10 for t in targets.values())
    assert expected_partitions(spec, str(path)) == set(plan.wanted_partitions(spec, targets))


def test_theory_check_tests_percentiles_and_leaves_out_those_on_the_atom(tmp_path):
    from simlab_pipelines.checks import expected_values

    spec = _spec(0.5)  # M/M/2/10 at rho = 0.25: ~90% of customers do not wait
    config = spec.configurations_list()[0]
    truth, on_atom = expected_values(config.params)
    assert on_atom == ["wait_p90"]  # P(no wait) ~ 0.9: the p90 sits on the jump
    assert truth["wait_p50"] == 0.0 and truth["wait_p95"] > 0 and "wait_p90" not in truth
    assert truth["fraction_wait_over"] == pytest.approx(
        theory.wait_distribution(2, 10, 0.5, 1.0).wait_survival(1.0))
    rows = [[spec.name, config.key, metric, 40, value, 0.0 if value == 0 else 0.01]
            for metric, value in truth.items() if metric != "blocking_probability"]
    result = theory_check(spec, _summary_table(tmp_path, rows))
    assert result.passed and result.metadata["not_tested_on_atom"].value == [
        f"{config.key}/wait_p90"]
    assert result.metadata["intervals"].value == len(rows)
    # A percentile 10% off its closed form is caught.
    off = [[*row[:4], row[4] * 1.1 if row[2] == "time_in_system_p95" else row[4], row[5]]
           for row in rows]
    (tmp_path / "off").mkdir()
    result = theory_check(spec, _summary_table(tmp_path / "off", off))
    assert result.metadata["failures"].value == [f"{config.key}/time_in_system_p95"]
