"""Replications assets: a new engine version marks materialised partitions stale (code version),
and the RetryPolicy re-runs a step whose storage failed transiently, with dg.materialize on
dg.instance_for_test."""

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

import engine
from simlab_pipelines import assets
from simlab_pipelines.partitions import range_tags
from simlab_pipelines.storage import ResultStore


def _status(instance, spec, storage, key, partition=None):
    graph = dg.Definitions(assets=assets.experiment_assets(spec),
                           resources={"simlab": storage}).resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    return (resolver.get_status(key, partition),
            [c.reason for c in resolver.get_stale_causes(key, partition)])


def test_a_new_engine_version_marks_results_stale(tiny, materialize, monkeypatch):
    spec, storage = tiny
    assert f"engine-{engine.ENGINE_VERSION}" == assets.REPLICATIONS_CODE_VERSION
    key = assets.replications_key(spec.name)
    with dg.instance_for_test() as instance:
        assert materialize(spec, storage, instance, [assets.spec_key(spec.name)]).success
        # a batched run (one MaterializeResult for many partitions) and a single partition
        assert materialize(spec, storage, instance, [key],
                            tags=range_tags("servers-1", 0, 2)).success
        assert materialize(spec, storage, instance, [key], partition_key="servers-2|0").success
        for partition in ("servers-1|0", "servers-1|2", "servers-2|0"):
            assert _status(instance, spec, storage, key, partition) == (StaleStatus.FRESH, [])
        assert _status(instance, spec, storage, key, "servers-2|1")[0] == StaleStatus.MISSING

        # next release: a built-in's code version is the engine's (spec.code_version)
        monkeypatch.setattr(engine, "ENGINE_VERSION", "99.0.0")
        for partition in ("servers-1|0", "servers-1|2", "servers-2|0"):
            status, causes = _status(instance, spec, storage, key, partition)
            assert status == StaleStatus.STALE and causes == ["has a new code version"]


def test_retry_policy_reruns_a_step_after_a_transient_storage_error(tiny, materialize, monkeypatch):
    spec, storage = tiny
    key = assets.replications_key(spec.name)
    [definition] = [a for a in assets.experiment_assets(spec) if key in a.keys]
    policy = definition.op.retry_policy
    assert policy is not None and policy.max_retries >= 1
    real_write, calls = ResultStore.write_identified, []

    def flaky_write(self, row):
        calls.append(row["partition_key"])
        if len(calls) == 2:  # the second file of the first attempt
            raise OSError("transient: disk briefly unavailable")
        return real_write(self, row)

    # What a worker calls (write is its wrapper without the file's identity).
    monkeypatch.setattr(ResultStore, "write_identified", flaky_write)
    with dg.instance_for_test() as instance:
        result = materialize(spec, storage, instance, [key], tags=range_tags("servers-2", 0, 3))
        assert result.success
        events = [e.event_type_value for e in result.all_events]
        assert "STEP_UP_FOR_RETRY" in events and "STEP_RESTARTED" in events
        assert instance.get_materialized_partitions(key) == {f"servers-2|{r}" for r in range(4)}
    assert len(calls) == 2 + 4  # the failed attempt stopped at its second file; the retry wrote 4
    assert storage.store().existing(spec.name) == {("servers-2", r) for r in range(4)}
