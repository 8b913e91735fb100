"""simlab's own bookkeeping per partition (issue 11): per-partition metadata attached in one step,
run databases copied from an initialised template; what the user sees must not change."""

import sqlite3

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from simlab_pipelines.assets import add_partition_metadata, replications_key, spec_key
from simlab_pipelines.instance import _TEMPLATE, FastSqliteEventLogStorage
from simlab_pipelines.partitions import range_tags


def test_a_run_over_two_configurations_gives_each_partition_its_own_metadata(tiny, materialize):
    spec, storage = tiny
    with dg.instance_for_test() as instance:
        assert materialize(spec, storage, instance, [spec_key(spec.name)]).success
        # One range over both configurations: servers-1|0 .. servers-2|5 is 2 x 6 partitions.
        tags = {**range_tags("servers-1", 0, 5),
                "dagster/asset_partition_range_end": "servers-2|5"}
        result = materialize(spec, storage, instance, [replications_key(spec.name)], tags=tags)
        assert result.success
        records = instance.fetch_materializations(replications_key(spec.name), limit=100).records
    assert sorted(r.partition_key for r in records) == sorted(
        f"{c}|{r}" for c in ("servers-1", "servers-2") for r in range(6))
    files = pl.read_parquet([storage.store().path(spec.name, c, r)
                             for c in ("servers-1", "servers-2") for r in range(6)])
    by_key = {row["partition_key"]: row for row in files.iter_rows(named=True)}
    for record in records:
        metadata = record.asset_materialization.metadata
        row = by_key[record.partition_key]
        config_key, replication = record.partition_key.split("|")
        assert metadata["spawn_key"].value == f"[{replication}]"
        assert metadata["params"].value["servers"] == int(config_key.split("-")[1])
        assert metadata["trace_id"].value == row["trace_id"]
        assert metadata["span_id"].value == row["span_id"]
        for name, value in row["metrics"].items():  # shown to 6 significant digits
            assert metadata[name].value == pytest.approx(value, rel=1e-5, nan_ok=True)
        # Still Dagster's materialization of the step's output: data and code versions, lineage.
        tags = record.asset_materialization.tags
        assert "dagster/data_version" in tags and "dagster/code_version" in tags
        assert any(t.startswith("dagster/input_data_version/") for t in tags)


def test_metadata_for_a_partition_the_run_does_not_target_fails_the_step():
    grid = dg.MultiPartitionsDefinition({
        "config": dg.StaticPartitionsDefinition(["a", "b"]),
        "replication": dg.StaticPartitionsDefinition(["0", "1", "2"])})

    @dg.asset(partitions_def=grid)
    def stray(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        add_partition_metadata(context, {"a|0": {"x": 1}, "b|2": {"x": 2}})
        return dg.MaterializeResult()

    with dg.instance_for_test() as instance:
        result = dg.materialize([stray], instance=instance, raise_on_error=False,
                                tags=range_tags("a", 0, 2))
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "b|2" in failure.step_failure_data.error.message
        ok = dg.materialize([stray], instance=instance, raise_on_error=False,
                            tags={**range_tags("a", 0, 2),
                                  "dagster/asset_partition_range_end": "b|2"})
        assert ok.success
        values = {r.partition_key: r.asset_materialization.metadata.get("x")
                  for r in instance.fetch_materializations(stray.key, limit=10).records}
    assert values["a|0"].value == 1 and values["b|2"].value == 2
    assert values["a|1"] is None  # the others got no metadata of another partition


def _schema(path) -> tuple[list, list]:
    with sqlite3.connect(path) as con:
        tables = sorted(con.execute("SELECT type, name, sql FROM sqlite_master").fetchall(),
                        key=lambda row: (row[0], row[1]))
        version = con.execute("SELECT version_num FROM alembic_version").fetchall()
    return tables, version


def test_run_databases_are_copies_of_an_initialised_template(tmp_path):
    fast = FastSqliteEventLogStorage(str(tmp_path / "fast"))
    plain = SqliteEventLogStorage(str(tmp_path / "plain"))
    for storage in (fast, plain):
        with storage.run_connection("run1"):
            pass
    assert (tmp_path / "fast" / _TEMPLATE).exists()
    # The template is not a run (Dagster lists runs as "*.db" files).
    assert sorted(p.name for p in (tmp_path / "fast").glob("*.db")) == ["index.db", "run1.db"]
    assert _schema(tmp_path / "fast" / "run1.db") == _schema(tmp_path / "plain" / "run1.db")
    with sqlite3.connect(tmp_path / "fast" / "run1.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_existing_run_database_is_never_replaced(tmp_path):
    first = FastSqliteEventLogStorage(str(tmp_path))
    event = dg.EventLogEntry(error_info=None, level="INFO", user_message="kept", run_id="r",
                             timestamp=1.0)
    first.store_event(event)
    # Another process (a new storage object) opens the same run: its events are still there.
    second = FastSqliteEventLogStorage(str(tmp_path))
    second.store_event(event._replace(user_message="added"))
    messages = [r.event_log_entry.user_message for r in second.get_records_for_run("r").records]
    assert messages == ["kept", "added"]


def test_without_a_usable_template_dagster_initialises_the_run(tmp_path, monkeypatch):
    storage = FastSqliteEventLogStorage(str(tmp_path))

    def fail():
        raise OSError("no space left")

    monkeypatch.setattr(storage, "_template", fail)
    event = dg.EventLogEntry(error_info=None, level="INFO", user_message="m", run_id="r2",
                             timestamp=1.0)
    storage.store_event(event)
    assert [r.event_log_entry.user_message
            for r in storage.get_records_for_run("r2").records] == ["m"]
