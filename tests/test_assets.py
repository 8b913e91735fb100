"""The experiment assets, materialised with dg.materialize on a test instance."""


import dagster as dg
import duckdb
import polars as pl
import pytest

import engine
from simlab_pipelines.assets import replications_key, summary_key
from simlab_pipelines.partitions import range_tags


def test_one_partition_writes_its_file_and_metadata(tiny, materialize):
    spec, storage = tiny
    with dg.instance_for_test() as instance:
        result = materialize(spec, storage, instance, [replications_key(spec.name)],
                              partition_key="servers-2|3")
        assert result.success
        records = instance.fetch_materializations(replications_key(spec.name), limit=10).records
        assert [r.partition_key for r in records] == ["servers-2|3"]
        metadata = records[0].asset_materialization.metadata
        for field in ("seed_entropy", "spawn_key", "params", "wall_seconds", "trace_id",
                      "mean_wait"):
            assert field in metadata
        assert metadata["seed_entropy"].value == spec.seed
        assert metadata["spawn_key"].value == "[3]"
        tags = records[0].asset_materialization.tags
        assert tags["dagster/code_version"] == f"engine-{engine.ENGINE_VERSION}"
    row = pl.read_parquet(storage.store().path(spec.name, "servers-2", 3))
    assert row.height == 1 and row["replication"][0] == 3
    direct = engine.simulate("mmck", {**spec.configurations_list()[1].params}, replication=3,
                             seed=spec.seed, horizon=spec.horizon, warmup=spec.warmup)
    assert row["metrics"][0] == direct.metrics  # same numbers as the engine run on its own


def test_a_failing_simulation_fails_only_its_partition(tiny, materialize, planted_failure):
    spec, storage = tiny
    with dg.instance_for_test() as instance:
        result = materialize(spec, storage, instance, [replications_key(spec.name)],
                              tags=range_tags("servers-1", 0, 5))
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "planted failure in replication 2" in failure.step_failure_data.error.message
        done = instance.get_materialized_partitions(replications_key(spec.name))
        assert done == {f"servers-1|{r}" for r in (0, 1, 3, 4, 5)}
    assert not (storage.store().existing(spec.name) & {("servers-1", 2)})


def test_summary_and_checks_after_all_partitions(tiny, materialize):
    spec, storage = tiny
    with dg.instance_for_test() as instance:
        for config in spec.configurations_list():
            tags = range_tags(config.key, 0, spec.replications - 1)
            assert materialize(spec, storage, instance, [replications_key(spec.name)],
                                tags=tags).success
        result = materialize(spec, storage, instance, [summary_key(spec.name)])
        assert result.success
        checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
                  for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        assert checks["no_missing_replications"] is True
        # tiny is mmck but asks for no theory check: its short runs from empty are biased
        assert "agrees_with_theory" not in checks
    with duckdb.connect(storage.duckdb_path, read_only=True) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT partition_key) "
                                  "FROM replications").fetchone()
        assert n == distinct == 2 * spec.replications
        obs = con.execute("SELECT count(*) FROM observations").fetchone()[0]
        assert obs == n * len(engine.get_model("mmck").metrics)
        # the summary's interval is the t interval of the observations
        mean, sd, k, low, high = con.execute(
            "SELECT avg(value), stddev_samp(value), count(*), any_value(s.ci_low), "
            "any_value(s.ci_high) FROM observations o JOIN summary s USING "
            "(experiment, config_key, metric) WHERE metric = 'mean_wait' AND "
            "config_key = 'servers-1'").fetchone()
    from scipy import stats
    half = stats.t.ppf(0.975, k - 1) * sd / k**0.5
    assert low == pytest.approx(mean - half) and high == pytest.approx(mean + half)


def test_no_missing_check_fails_when_partitions_are_missing(tiny, materialize):
    spec, storage = tiny
    with dg.instance_for_test() as instance:
        materialize(spec, storage, instance, [replications_key(spec.name)],
                     partition_key="servers-1|0")
        result = materialize(spec, storage, instance, [summary_key(spec.name)])
        evaluation = next(e.asset_check_evaluation_data for e in result.all_events
                      if e.event_type_value == "ASSET_CHECK_EVALUATION"
                      and e.asset_check_evaluation_data.check_name == "no_missing_replications")
        assert evaluation.passed is False
        assert evaluation.metadata["missing"].value == 2 * spec.replications - 1
