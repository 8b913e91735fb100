"""Faults in what simlab reads, injected as they happen, each followed by the ordinary command that
must recover by itself: corrupt result files, hostile experiment files, hostile query input, a
killed DuckDB build's leftovers, a simulation past its time limit (docs/reliability.md)."""

import logging
import os
from datetime import UTC, datetime

import duckdb
from click.testing import CliRunner

import engine
from simlab_pipelines.cli import main
from simlab_pipelines.storage import ResultStore, replication_row


def _sweep(path, *args):
    result = CliRunner().invoke(main, ["sweep", str(path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _observations(db):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT config_key, replication, metric, value FROM observations "
                           "ORDER BY ALL").fetchall()


def test_corrupt_result_files_are_named_moved_aside_and_run_again(tiny, caplog):
    from simlab_pipelines.assets import build_experiment_summary

    spec, storage = tiny
    path = spec.source
    _sweep(path, "--workers", "1")
    db = storage.duckdb_path
    before = _observations(db)
    results = os.path.join(storage.results_uri, spec.name)
    truncated = os.path.join(results, "servers-2", "3.parquet")
    garbage = os.path.join(results, "servers-1", "0.parquet")
    with open(truncated, "rb") as handle:
        head = handle.read(300)
    with open(truncated, "wb") as handle:  # what a disk or a copy cut short leaves
        handle.write(head)
    with open(garbage, "wb") as handle:
        handle.write(b"\0" * 4096)

    # The summary does not crash: it leaves both out and says which files, and why.
    with caplog.at_level(logging.WARNING, logger="simlab"):
        summary = build_experiment_summary(spec, storage)
    assert summary.replications.height == 10 and summary.missing == 2
    warnings = [r.getMessage() for r in caplog.records if "corrupt result file" in r.getMessage()]
    assert len(warnings) == 2
    assert any(truncated in w and "not a readable Parquet file (300 bytes" in w for w in warnings)
    assert os.path.exists(truncated + ".corrupt") and not os.path.exists(truncated)
    assert os.path.exists(garbage + ".corrupt")

    # The next ordinary sweep runs exactly those two partitions, with the same values as before.
    assert "ran 2 partitions in 2 run(s); 12 wanted in all" in _sweep(path, "--workers", "1")
    assert _observations(db) == before
    assert "nothing to do" in _sweep(path)


def _row(replication: int = 0) -> dict:
    result = engine.simulate("mmck", {"servers": 1}, replication=replication, seed=5, horizon=20,
                             warmup=2)
    return replication_row(experiment="exp", config_key="servers-1",
                           partition_key=f"servers-1|{replication}", result=result.to_dict(),
                           code_version="engine-x", run_id="run", trace_id="0" * 32,
                           span_id="0" * 16, started_at=datetime.now(UTC), inputs_hash="inputs")


def test_result_files_respect_the_umask(tmp_path):
    store = ResultStore(str(tmp_path))
    old = os.umask(0o027)
    try:
        path = store.write(_row())
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640
    old = os.umask(0o002)
    try:
        path = store.write(_row(1))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o664
