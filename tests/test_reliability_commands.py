"""Faults of `simlab` commands, injected as they happen in life, then the ordinary command works.

- A sweep stopped (SIGINT) just as one of its two overlapping runs succeeds: that run keeps
  SUCCESS (it was marked CANCELING, then CANCELED).
- A DuckDB file held open for writing by another process (a DuckDB shell, a notebook):
  `simlab query` and a sweep's summary say so in one line naming the holder's PID, with no
  traceback and no false "summary rebuilt"; once it is closed, the same commands work.
- A plug-in whose import hangs: after the first process waited its timeout, the next processes
  refuse it at once until its file changes.
- `simlab query` runs under a time and a memory limit (defaults, flags to change them): a
  runaway query stops at its time limit, one that needs more memory fails saying which limit.

Every command here is a real `simlab` process (or the CLI in-process where only its output
matters) on a real SQLite instance and DuckDB file, with real signals.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner
from dagster._core.events import DagsterEventType
from lab import observations, sweep
from test_reliability_runs import (
    SIMLAB,
    UNFINISHED,
    _assert_exact,
    _finish,
    _start,
    _wait_for,
)

from engine.registry import IMPORT_TIMEOUT_VARIABLE
from simlab_pipelines import query
from simlab_pipelines.assets import experiment_assets
from simlab_pipelines.cli import main
from simlab_pipelines.experiments import load_experiment

# Loaded by the sweep's interpreter at start-up (sitecustomize on PYTHONPATH): it widens the two
# windows of the race without changing what happens in them. The first run's step pauses 1.5 s
# after its simulations (its files are all written, it is still STARTED: the test signals then),
# and the first look at the unfinished runs after the stop waits 2 s before they are marked (the
# first run ends meanwhile: the race, every time instead of 2 stops in 4).
_WIDEN_RACE = textwrap.dedent("""
    import os, time
    if os.environ.pop("SIMLAB_TEST_WIDEN_RACE", None):
        from simlab_pipelines import manifest, sweep

        record, listing, first = manifest.record_run, sweep._unfinished_runs, []

        def slow_record(*args, **kwargs):
            if not first:
                first.append(1)
                time.sleep(1.5)
            return record(*args, **kwargs)

        def slow_listing(*args, **kwargs):
            runs = listing(*args, **kwargs)
            if len(first) == 1 and sweep._stopped():
                first.append(2)
                time.sleep(2)
            return runs

        manifest.record_run, sweep._unfinished_runs = slow_record, slow_listing
""")


def _succeeded(instance, run_id: str) -> bool:
    return bool(instance.all_logs(run_id, of_type=DagsterEventType.RUN_SUCCESS))


def test_a_run_that_succeeds_as_the_sweep_stops_keeps_its_status(lab, tmp_path):
    """The tiny experiment in runs of 3 partitions (4 runs, two in flight at a time)."""
    instance = dg.DagsterInstance.get()
    path = lab / "experiments" / "tiny_mmck.yaml"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_WIDEN_RACE)
    env = {**os.environ, "SIMLAB_TEST_WIDEN_RACE": "1",
           "PYTHONPATH": os.pathsep.join([str(inject), *sys.path])}
    running = _start(path, env=env, name="stopped")
    results = lab / "data" / "results" / "tiny_mmck"

    def first_run_simulated():
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="tiny_mmck_replications"),
                                 ascending=True)
        if not runs or runs[0].status != dg.DagsterRunStatus.STARTED:
            return None
        start, end = (runs[0].tags[f"dagster/asset_partition_range_{e}"] for e in ("start", "end"))
        config_key, first_replication = start.split("|")
        files = [results / config_key / f"{r}.parquet"
                 for r in range(int(first_replication), int(end.split("|")[1]) + 1)]
        return runs[0] if all(f.exists() for f in files) else None

    first = _wait_for(first_run_simulated, "the first run to write its files", process=running)
    os.killpg(running.pid, signal.SIGINT)
    code, out, err = _finish(running)
    assert code == 130, out + err
    assert "Traceback" not in err
    # The fault: the first run succeeded, and was re-marked CANCELING (then CANCELED).
    assert _succeeded(instance, first.run_id)
    assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.SUCCESS
    canceled = re.search(r"run\(s\) ([0-9a-f, -]+) canceled", err)  # none: the second ended too
    assert canceled is None or first.run_id not in canceled.group(1)
    for run in instance.get_runs():  # every run that ended keeps the status it ended with
        if _succeeded(instance, run.run_id):
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
        else:
            assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS)

    # The next sweep runs the rest, with exact results, and leaves no run unfinished.
    sweep(path, "--workers", "1")
    assert instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)) == []
    _assert_exact(lab, path)


@contextmanager
def _writer(db: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the DuckDB file open for writing (a DuckDB shell, a notebook)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('open', flush=True); time.sleep(600)", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _query(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SIMLAB, "query", "--db", str(db), *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_duckdb_file_held_by_another_writer_is_named_in_one_line(lab):
    path = lab / "experiments" / "tiny_mmck.yaml"
    db = lab / "data" / "simlab.duckdb"
    sweep(path, "--workers", "1")
    # The question changes: the spec and the summary must be rebuilt, nothing is missing.
    path.write_text(path.read_text().replace("Does a second server", "Does one more server"))
    with _writer(db) as holder:
        held = f"{db} is open for writing in another process (PID {holder.pid}: "
        done = _query(db, "SELECT count(*) FROM summary")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert done.stderr.count("\n") == 1 and held in done.stderr and "import duckdb" \
            in done.stderr, done.stderr  # its command line
        result = CliRunner().invoke(main, ["sweep", str(path), "--workers", "1"],
                                    catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert "summary rebuilt" not in result.output
        assert "all 12 partitions are materialised; the summary could not be rebuilt (below)" \
            in result.stdout
        failed = [line for line in result.stderr.splitlines() if line.startswith("run ")]
        assert len(failed) == 1 and held in failed[0], result.stderr
        assert "confidence interval" not in result.stdout  # no stale summary shown
        report = CliRunner().invoke(main, ["report", "tiny_mmck"])
        assert report.exit_code == 1 and report.stderr.startswith(f"Error: {held}"), \
            report.output
    # Once it is closed, the ordinary commands work.
    assert "summary rebuilt" in sweep(path, "--workers", "1")
    done = _query(db, "--json", "SELECT question FROM experiments")
    assert done.returncode == 0, done.stderr
    assert "Does one more server" in done.stdout


def test_query_runs_under_a_time_and_a_memory_limit(tmp_path):
    db = tmp_path / "simlab.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE summary AS SELECT 1 AS n")
    # A query of about a minute on one thread, stopped at its time limit: one line, exit 1.
    started = time.monotonic()
    done = _query(db, "--timeout", "1", "SET threads = 1; SELECT count(*) FROM range(100000000000)")
    assert time.monotonic() - started < 15  # start-up on a loaded machine, and 1 s
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: query stopped after 1 s, its time limit (--timeout SECONDS " \
                          "changes it; 0: no limit)\n"

    def run(*args: str):
        return CliRunner().invoke(main, ["query", "--db", str(db), *args])

    # The default memory limit is a quarter of the memory (DuckDB's own: 80 %), and the flag's.
    def setting(limit: str) -> str:  # as DuckDB shows it
        with duckdb.connect(config={"memory_limit": limit}) as con:
            return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]

    shown = "SELECT current_setting('memory_limit') AS m"
    assert json.loads(run("--json", shown).stdout) == {"m": setting(query.DEFAULT_MEMORY_LIMIT)}
    assert setting(query.DEFAULT_MEMORY_LIMIT) != setting("80%")  # not DuckDB's default
    assert json.loads(run("--json", "--memory-limit", "1GB", shown).stdout) == {
        "m": setting("1GB")}
    # An 80 MB list under 20 MB: refused, saying which limit and how to raise it.
    big = "SELECT len(list(i)) AS n FROM range(10000000) t(i)"
    refused = run("--memory-limit", "20MB", big)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: query failed: out of memory under the query's "
                                     "memory limit of 20MB (--memory-limit raises it): ")
    assert refused.stderr.count("\n") == 1
    assert json.loads(run("--json", "--memory-limit", "1GB", big).stdout) == {"n": 10_000_000}
    bad = run("--memory-limit", "12", "SELECT 1")
    assert bad.exit_code == 2 and "Invalid value for '--memory-limit': '12' is not a size" \
        in bad.stderr
    # Documented in --help, with the defaults the code uses.
    usage = " ".join(run("--help").stdout.split())
    assert f"--timeout SECONDS Stop the query after this many seconds (all its statements); 0: " \
           f"no limit. [default: {query.DEFAULT_TIMEOUT}; x>=0]" in usage
    assert f"[default: {query.DEFAULT_MEMORY_LIMIT}]" in usage


# Holds each `simlab` process just before it opens the instance until all have come (as "two
# terminals at once" does, every time instead of often: their start-up on a loaded machine
# differs by seconds); each then ends, its part in the fault done (what it would do next costs CPU
# and shows nothing more). What opening needs is imported first, so that they open it together.
_OPEN_TOGETHER = textwrap.dedent("""
    import os, time
    meet = os.environ.pop("SIMLAB_TEST_MEET", None)
    if meet:
        import alembic.util.exc
        import dagster._core.storage.runs.sqlite.sqlite_run_storage
        import dagster._core.storage.schedules.sqlite.sqlite_schedule_storage
        from simlab_pipelines import cli, instance

        where, count = meet.rsplit(":", 1)
        opener = cli._instance

        def together(*args, **kwargs):
            open(os.path.join(where, str(os.getpid())), "w").close()
            deadline = time.time() + 120
            while len(os.listdir(where)) < int(count) and time.time() < deadline:
                time.sleep(0.002)
            opener(*args, **kwargs)
            print("opened", flush=True)
            os._exit(0)

        cli._instance = together
""")


def _alembic_rows(home: Path) -> dict[str, int]:
    """Rows of ``alembic_version`` in each SQLite database of the instance (1: one head)."""
    rows = {}
    for db in home.rglob("*.db"):
        con = sqlite3.connect(db)
        try:
            rows[str(db.relative_to(home))] = con.execute(
                "SELECT count(*) FROM alembic_version").fetchone()[0]
        finally:
            con.close()
    return rows


@pytest.mark.slow
def test_simlab_commands_started_together_on_a_new_instance_create_it_once(lab, tmp_path):
    """Four sweeps opening a new DAGSTER_HOME at once (without the lock, 4 tries in 4 broke the
    schema or failed a command), then an ordinary sweep; then the steps docs/reliability.md
    gives for an instance damaged before the lock existed."""
    home, path = lab / "dagster_home", lab / "experiments" / "tiny_mmck.yaml"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_OPEN_TOGETHER)
    (tmp_path / "meet").mkdir()
    # Dagster's own schema creation, as without a template (simlab copies a template's databases
    # into a new instance when it can, under the same lock; with none, or while the first
    # template is made, Dagster creates them).
    env = {**os.environ, "SIMLAB_TEST_MEET": f"{tmp_path / 'meet'}:4",
           "SIMLAB_INSTANCE_TEMPLATE": "0",
           "PYTHONPATH": os.pathsep.join([str(inject), *sys.path])}
    processes = [subprocess.Popen([SIMLAB, "sweep", str(path), "--workers", "1"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    outcomes = [(*process.communicate(timeout=240), process.returncode) for process in processes]
    for out, err, code in outcomes:
        assert code == 0 and out == "opened\n" and "Traceback" not in err, out + err
    rows = _alembic_rows(home)
    assert {"history/runs.db", "schedules/schedules.db"} <= set(rows)
    assert set(rows.values()) == {1}, rows
    assert "ran 12 partitions in 1 run(s)" in sweep(path, "--workers", "1")

    # An instance damaged before (two heads in one database): a clear line, not a traceback ...
    con = sqlite3.connect(home / "schedules" / "schedules.db")
    with con:
        con.execute("INSERT INTO alembic_version VALUES ('5771160a95ad')")
    con.close()
    damaged = CliRunner().invoke(main, ["sweep", str(path), "--workers", "1"])
    assert damaged.exit_code == 1
    assert damaged.stderr.startswith(f"Error: the Dagster instance in {home} is damaged (")
    assert "'A damaged instance'" in damaged.stderr and damaged.stderr.count("\n") == 1
    # ... and the documented steps: move its databases aside, sweep again (identical results).
    before = observations(lab / "data" / "simlab.duckdb")
    aside = home / "damaged"
    aside.mkdir()
    for part in ("history", "schedules", "storage"):
        if (home / part).exists():
            (home / part).rename(aside / part)
    assert "ran 12 partitions in 1 run(s)" in sweep(path, "--workers", "1")
    assert observations(lab / "data" / "simlab.duckdb") == before


# The hand-launched run's step pauses after its simulation, still STARTED and holding its
# partition, until the sweep's run of that partition has started and 5 s more (so that the sweep
# finds it still running when it is about to summarise); a longer simulation would do the same,
# at a cost in CPU.
_HOLD = textwrap.dedent("""
    import os, time
    if os.environ.pop("SIMLAB_TEST_HOLD", None):
        from simlab_pipelines import manifest

        record = manifest.record_run

        def held(*args, **kwargs):
            import dagster as dg

            instance, deadline = dg.DagsterInstance.get(), time.time() + 120
            while time.time() < deadline and not instance.get_runs(filters=dg.RunsFilter(
                    job_name="tiny_mmck_replications", statuses=[dg.DagsterRunStatus.STARTED])):
                time.sleep(0.1)
            time.sleep(5)
            return record(*args, **kwargs)

        manifest.record_run = held
""")


def test_a_sweep_leaves_a_partition_to_the_run_that_started_it_first(lab, tmp_path):
    """A partition materialised by hand (`dagster asset materialize`) is still running when a
    sweep of the experiment starts: the sweep's run leaves it to that run and the sweep waits
    for it; each partition runs once and DuckDB's run ids are Dagster's."""
    path = lab / "experiments" / "tiny_mmck.yaml"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_HOLD)
    env = {**os.environ, "SIMLAB_TEST_HOLD": "1",
           "PYTHONPATH": os.pathsep.join([str(inject), *sys.path])}
    key = experiment_assets(load_experiment(path))[1].partitions_def.get_partition_keys()[0]
    by_hand = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
         "simlab_pipelines.definitions", "--select", "tiny_mmck/replications", "--partition",
         str(key)], env=env, cwd=lab, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    instance = dg.DagsterInstance.get()
    config_key = str(key).split("|")[0]

    def holding():
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        files = list((lab / "data" / "results" / "tiny_mmck" / config_key).glob("*.parquet"))
        return runs[0] if runs and files else None

    held = _wait_for(holding, "the hand-launched run to simulate", process=by_hand)
    result = CliRunner().invoke(main, ["sweep", str(path), "--workers", "1", "--batch-size", "6"],
                                catch_exceptions=False)
    assert by_hand.wait(120) == 0, by_hand.stdout.read()
    assert result.exit_code == 0, result.output
    # Each partition ran once (the fault: twice, by both runs at once), and DuckDB's run ids are
    # Dagster's.
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(["tiny_mmck", "replications"])), limit=1000).records
    assert sorted(Counter(r.partition_key for r in records).values()) == [1] * 12
    assert {r.partition_key: r.run_id for r in records}[str(key)] == held.run_id
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        stored = dict(con.execute("SELECT partition_key, dagster_run_id FROM replications "
                                  "WHERE experiment = 'tiny_mmck'").fetchall())
    assert stored == {r.partition_key: r.run_id for r in records}
    assert f"waiting for run {held.run_id} (__ASSET_JOB, STARTED), which runs partitions of " \
           "this experiment" in result.output
    first = instance.get_runs(filters=dg.RunsFilter(job_name="tiny_mmck_replications"),
                              ascending=True)[0]
    left = [r.message for r in instance.all_logs(first.run_id) if "left out" in r.message]
    assert left == [f"1 of this run's 6 partitions left out (e.g. {key}): held by run "
                    f"{held.run_id} (__ASSET_JOB, STARTED), which started first; never run "
                    "twice at once"]


def test_a_hanging_plug_in_is_refused_at_once_by_the_next_processes(tmp_path):
    """Every process that loads the experiments (the code server, each run's process) waited the
    plug-in import timeout again: the first one's note makes the next refuse it at once, until
    the plug-in's file changes; then it is imported again (here: fixed, it runs)."""
    plugin = tmp_path / "hangs.py"
    plugin.write_text("import time\n\ntime.sleep(3600)\n")
    env = {**os.environ, IMPORT_TIMEOUT_VARIABLE: "2", "TMPDIR": str(tmp_path)}
    engine_cli = str(Path(sys.executable).with_name("simlab-engine"))

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([engine_cli, "run", "--path", str(tmp_path), "hangs:MODEL",
                               "--seed", "1", "--replication", "0", "--horizon", "50", "--json"],
                              env=env, capture_output=True, text=True, timeout=120, check=False)

    first = run()
    assert first.returncode == 2
    assert "model 'hangs:MODEL' (from " in first.stderr
    assert "the import of 'hangs' did not finish within 2 s (SIMLAB_PLUGIN_IMPORT_TIMEOUT); a " \
           "plug-in must not block at import time" in first.stderr
    second = run()
    assert second.returncode == 2
    assert "did not finish within 2 s (SIMLAB_PLUGIN_IMPORT_TIMEOUT) in process " in second.stderr
    assert "not tried again until its files change or 10 minutes pass" in second.stderr
    plugin.write_text("import dataclasses\n\nfrom engine.models import MODELS\n\n"
                      "MODEL = dataclasses.replace(MODELS['mmck'], name='quick', version='1')\n")
    fixed = run()
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["model"] == "quick"
