"""`simlab sweep` end to end on a real (SQLite) Dagster instance and a real DuckDB file."""

import os
import shutil

import dagster as dg
import duckdb
from click.testing import CliRunner
from lab import observations as _observations
from lab import sweep as _sweep

import engine
from simlab_pipelines.cli import main
from simlab_pipelines.experiments import load_experiment


def test_sweep_runs_everything_once_and_a_rerun_does_nothing(lab):
    path = lab / "experiments" / "tiny_mmck.yaml"
    spec = load_experiment(path)
    expected = len(spec.configurations_list()) * spec.replications
    output = _sweep(path, "--batch-size", "4", "--workers", "2")
    assert f"ran {expected} partitions in 4 run(s); {expected} wanted in all" in output
    db = lab / "data" / "simlab.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT (config_key, replication)) "
                                     "FROM replications").fetchone()
        runs = con.execute("SELECT count(DISTINCT dagster_run_id) FROM replications").fetchone()[0]
        traces = con.execute("SELECT count(*) FROM replications WHERE length(trace_id) = 32 "
                             "AND trace_id <> repeat('0', 32)").fetchone()[0]
    assert rows == distinct == expected
    assert runs == 4 and traces == expected
    instance = dg.DagsterInstance.get()
    # the spec, four batches and the summary: all visible in the UI
    assert len(instance.get_runs()) == 6
    before = _observations(db)

    again = _sweep(path)
    assert f"nothing to do, all {expected} partitions are materialised" in again
    assert len(instance.get_runs()) == 6
    assert _observations(db) == before

    # a lost result file is run again, and only that one
    os.unlink(lab / "data" / "results" / spec.name / "servers-2" / "3.parquet")
    assert "ran 1 partition in 1 run(s)" in _sweep(path)
    assert _observations(db) == before


def test_results_do_not_depend_on_batch_size_or_workers(lab, monkeypatch):
    source = lab / "experiments" / "tiny_mmck.yaml"
    results = {}
    for label, args in {"b1w1": ["--batch-size", "1", "--workers", "1"],
                        "b7w1": ["--batch-size", "7", "--workers", "1"],
                        "b7w2": ["--batch-size", "7", "--workers", "2"]}.items():
        root = lab / label
        (root / "home").mkdir(parents=True)
        shutil.copy(lab / "dagster_home" / "dagster.yaml", root / "home")
        path = root / "tiny_mmck.yaml"
        shutil.copy(source, path)
        monkeypatch.setenv("DAGSTER_HOME", str(root / "home"))
        monkeypatch.setenv("SIMLAB_DATA_DIR", str(root / "data"))
        _sweep(path, *args)
        results[label] = _observations(root / "data" / "simlab.duckdb")
    assert len(results["b1w1"]) == 12 * len(engine.get_model("mmck").metrics)
    assert results["b1w1"] == results["b7w1"] == results["b7w2"]


def test_bad_experiment_file_is_rejected_before_anything_runs(lab):
    bad = lab / "experiments" / "tiny_mmck.yaml"
    bad.write_text(bad.read_text().replace("servers: [1, 2]", "servers: [1, 0]"))
    result = CliRunner().invoke(main, ["sweep", str(bad)])
    assert result.exit_code == 2
    assert "tiny_mmck.yaml" in result.output and "factors.servers[1]" in result.output
    assert not (lab / "data" / "results").exists()
    assert not os.listdir(lab / "dagster_home") or dg.DagsterInstance.get().get_runs() == []


def test_query_is_read_only_and_prints_a_table(lab):
    _sweep(lab / "experiments" / "tiny_mmck.yaml", "--workers", "1")
    runner = CliRunner()
    ok = runner.invoke(main, ["query", "SELECT count(*) AS n FROM replications", "--json"])
    assert ok.exit_code == 0 and '{"n": 12}' in ok.output
    write = runner.invoke(main, ["query", "DELETE FROM replications"])
    assert write.exit_code == 1 and "read-only" in write.output.lower()


def test_changed_inputs_rerun_and_added_replications_do_not(lab):
    path = lab / "experiments" / "tiny_mmck.yaml"
    _sweep(path, "--workers", "1")
    instance = dg.DagsterInstance.get()
    spec_key = dg.AssetKey(["tiny_mmck", "spec"])
    version = instance.get_latest_materialization_event(spec_key).asset_materialization.tags[
        "dagster/data_version"]
    db = lab / "data" / "simlab.duckdb"

    # two more replications: only they run (one run: servers-1|6 .. servers-2|7 is the grid's
    # 2 x 2 rectangle), and the definition's data version stays (existing partitions not stale)
    path.write_text(path.read_text().replace("replications: 6", "replications: 8"))
    assert "ran 4 partitions in 1 run(s); 16 wanted in all" in _sweep(path, "--workers", "1")
    event = instance.get_latest_materialization_event(spec_key).asset_materialization
    assert event.tags["dagster/data_version"] == version
    assert event.metadata["spec_hash"].value == load_experiment(path).spec_hash()

    # a changed fixed input makes other simulations: every partition runs again, and DuckDB
    # holds only results of the new inputs
    path.write_text(path.read_text().replace("arrival_rate: 0.8", "arrival_rate: 0.7"))
    assert "ran 16 partitions" in _sweep(path, "--workers", "1")
    with duckdb.connect(str(db), read_only=True) as con:
        rates = con.execute("SELECT DISTINCT json_extract(params, '$.arrival_rate')::DOUBLE "
                            "FROM replications").fetchall()
        count = con.execute("SELECT count(*) FROM replications").fetchone()[0]
    assert rates == [(0.7,)] and count == 16
    assert instance.get_latest_materialization_event(spec_key).asset_materialization.tags[
        "dagster/data_version"] != version
    assert "nothing to do" in _sweep(path)


def test_query_cannot_write_files(lab, tmp_path):
    _sweep(lab / "experiments" / "tiny_mmck.yaml", "--workers", "1")
    target = tmp_path / "out.csv"
    runner = CliRunner()
    for sql in (f"COPY (SELECT 1) TO '{target}'", f"ATTACH '{tmp_path / 'new.duckdb'}' AS x"):
        result = runner.invoke(main, ["query", sql])
        assert result.exit_code == 1 and "query failed" in result.output
    assert not target.exists() and not (tmp_path / "new.duckdb").exists()
