"""The local instance (dagster_home/dagster.yaml) and its faster SQLite event log."""

import multiprocessing

import dagster as dg
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

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


def test_project_instance_settings_fit_a_small_machine(lab):
    # Loading validates dagster_home/dagster.yaml against Dagster's instance schema.
    instance = dg.DagsterInstance.get()
    home = str(lab / "dagster_home")
    # every SQLite database and local file inside DAGSTER_HOME
    assert isinstance(instance.run_storage, SqliteRunStorage)  # simlab's FastSqliteRunStorage
    assert type(instance.schedule_storage).__name__ == "SqliteScheduleStorage"
    for conn in (instance.run_storage._conn_string, instance.schedule_storage._conn_string):
        assert conn.startswith(f"sqlite:///{home}/"), conn
    assert str(instance.event_log_storage._base_dir).startswith(home)
    assert instance._local_artifact_storage.base_dir.startswith(home)
    # runs queued (what the daemon reads), two at a time, two per experiment; one DuckDB writer
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    concurrency = instance.get_concurrency_config()
    queue = concurrency.run_queue_config
    assert queue.max_concurrent_runs == 2
    assert queue.tag_concurrency_limits == [
        {"key": "simlab/experiment", "value": {"applyLimitPerUniqueValue": True}, "limit": 2}]
    assert concurrency.pool_config.default_pool_limit == 1
    # crashed runs retried, failed simulations not (they would fail again); no telemetry
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    assert instance.run_monitoring_enabled
    assert instance.telemetry_enabled is False
