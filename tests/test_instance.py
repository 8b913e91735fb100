"""The local instance (dagster_home/dagster.yaml) and its faster SQLite event log."""

import multiprocessing

import dagster as dg

from simlab_pipelines.instance import FastSqliteEventLogStorage

KEY = dg.AssetKey(["t", "replications"])


def _report(prefix: str, n: int) -> None:
    instance = dg.DagsterInstance.get()
    for i in range(n):
        instance.report_runless_asset_event(dg.AssetMaterialization(KEY, partition=f"{prefix}|{i}"))


def test_project_instance_uses_the_fast_event_log_and_keeps_every_event(lab):
    instance = dg.DagsterInstance.get()
    assert isinstance(instance.event_log_storage, FastSqliteEventLogStorage)
    assert str(instance.event_log_storage._base_dir).startswith(str(lab / "dagster_home"))
    # two processes writing at once (as a run and the daemon would): nothing lost, nothing doubled
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_report, args=(p, 60)) for p in ("a", "b")]
    for w in workers:
        w.start()
    _report("c", 30)
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    fresh = dg.DagsterInstance.get()  # a new reader sees everything
    records = fresh.fetch_materializations(KEY, limit=1000).records
    assert len(records) == 150
    assert len({r.partition_key for r in records}) == 150
    assert fresh.get_materialized_partitions(KEY) == {f"{p}|{i}" for p, n in
                                                      (("a", 60), ("b", 60), ("c", 30))
                                                      for i in range(n)}
