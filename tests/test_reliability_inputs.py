"""Faults in what simlab reads, injected as they happen, each followed by the ordinary command that
must recover by itself: corrupt result files, hostile experiment files, hostile query input, a
killed DuckDB build's leftovers, a simulation past its time limit (docs/reliability.md)."""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from lab import observations as _observations
from lab import sweep as _sweep

import engine
from simlab_pipelines.cli import main
from simlab_pipelines.storage import ResultStore, replication_row

SIMLAB = str(Path(sys.executable).with_name("simlab"))


def test_corrupt_result_files_are_named_moved_aside_and_run_again(tiny, materialize, caplog,
                                                                  monkeypatch):
    import dagster as dg

    from simlab_pipelines.assets import build_experiment_summary, replications_key
    from simlab_pipelines.resources import SimlabStorage
    from simlab_pipelines.summary import observations, read_all_replications

    spec, _ = tiny
    path = spec.source
    # A data directory whose path holds a quote (the rebuild below attaches the old file by path).
    data = path.parent.parent / "it's data"
    monkeypatch.setenv("SIMLAB_DATA_DIR", str(data))
    storage = SimlabStorage(results_uri=str(data / "results"),
                            duckdb_path=str(data / "simlab.duckdb"), workers=1)
    instance = dg.DagsterInstance.get()
    for key in spec.config_keys():  # every partition, without a summary yet: one run a config
        assert materialize(spec, storage, instance, [replications_key(spec.name)], tags={
            "dagster/asset_partition_range_start": f"{key}|0",
            "dagster/asset_partition_range_end": f"{key}|{spec.replications - 1}"}).success
    db = storage.duckdb_path
    before = sorted(observations(read_all_replications(spec, storage.store())).select(
        "config_key", "replication", "metric", "value").iter_rows())
    assert len(before) == 12 * len(engine.get_model("mmck").metrics)
    results = os.path.join(storage.results_uri, spec.name)
    truncated = os.path.join(results, "servers-2", "3.parquet")
    garbage = os.path.join(results, "servers-1", "0.parquet")
    with open(truncated, "rb") as handle:
        head = handle.read(300)
    with open(truncated, "wb") as handle:  # what a disk or a copy cut short leaves
        handle.write(head)
    with open(garbage, "wb") as handle:
        handle.write(b"\0" * 4096)

    # The summary does not crash: it leaves both out and says which files, and why, on stderr
    # (simlab.summary) and in the step's own log (the UI; a logger stands for context.log here).
    step_log = logging.getLogger("test.step_log")
    with caplog.at_level(logging.WARNING):
        summary = build_experiment_summary(spec, storage, step_log)
    assert summary.replications.height == 10 and summary.missing == 2
    for logger in ("simlab.summary", "test.step_log"):
        lines = [r.getMessage() for r in caplog.records
                 if r.name == logger and "corrupt result file" in r.getMessage()]
        assert len(lines) == 2, (logger, lines)
        assert any(truncated in m and "not a readable Parquet file (300 bytes" in m for m in lines)
        assert any(garbage in m and "moved aside to" in m for m in lines)
    assert os.path.exists(truncated + ".corrupt") and not os.path.exists(truncated)
    assert os.path.exists(garbage + ".corrupt")

    # The next ordinary sweep runs exactly those two partitions, with the same values as before,
    # and rebuilds the summary over the old file in a directory named with a quote.
    assert "ran 2 partitions in 2 run(s); 12 wanted in all" in _sweep(path, "--workers", "1")
    assert _observations(db) == before


@pytest.fixture
def database(tmp_path):
    """A DuckDB file holding data that looks like markup."""
    path = tmp_path / "q.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE notes AS SELECT * FROM (VALUES ('Does [the new policy] help?'), "
                    "('[/x]'), ('[bold]x[/bold] :smile:')) AS t(\"[note]\")")
    return path


def _query(db, *args):
    return CliRunner().invoke(main, ["query", "--db", str(db), *args])


def test_query_prints_data_as_it_is(database):
    result = _query(database, "SELECT * FROM notes")
    assert result.exit_code == 0, result.output
    for text in ("[note]", "Does [the new policy] help?", "[/x]", "[bold]x[/bold] :smile:"):
        assert text in result.output
    settings = _query(database, "SELECT name, value, description FROM duckdb_settings()")
    assert settings.exit_code == 0 and "access_mode" in settings.output, settings.output


def test_query_empty_and_several_statements(database):
    for empty in ("", "  ", "/* only a comment */"):
        result = _query(database, "--", empty)
        assert result.exit_code == 2 and "no SQL statement given" in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    both = _query(database, "SELECT 1 AS first; SET threads = 1; SELECT 2 AS second")
    assert both.exit_code == 0
    assert both.output.index("-- SELECT 1 AS first") < both.output.index("first") \
        < both.output.index("-- SELECT 2 AS second") < both.output.index("second ")
    lines = _query(database, "--json", "SELECT 1 AS a; SELECT 2 AS b").output.splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1}, {"b": 2}]
    failed = _query(database, "SELECT 1; SELECT * FROM nowhere")
    assert failed.exit_code == 1
    assert "statement 2 of 2: SELECT * FROM nowhere" in failed.output


def test_ctrl_c_stops_a_query_at_once(database):
    # A query of about a minute on one thread.
    child = subprocess.Popen(
        [SIMLAB, "query", "--db", str(database),
         "SET threads = 1; SELECT count(*) FROM range(100000000000)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt once the query runs: the child has the database open (startup may be slow).
    fds = Path(f"/proc/{child.pid}/fd")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == str(database) for fd in fds.iterdir()):
                break
        time.sleep(0.1)
    time.sleep(0.5)
    assert child.poll() is None
    child.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = child.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and out == ""
    assert _query(database, "SELECT count(*) AS n FROM notes").exit_code == 0  # file unharmed


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


_KILLED_BUILD = """
import sys, time, types
import polars as pl
from simlab_pipelines import summary
def stuck(*args):
    print("building", flush=True)
    time.sleep(60)
summary._carry_over = stuck  # the build is under way, its temporary file open, when killed
result = types.SimpleNamespace(tables={"notes": pl.DataFrame({"experiment": ["a"], "x": [2]})})
summary.write_database(types.SimpleNamespace(name="a"), result, sys.argv[1])
"""


def test_a_killed_summary_build_leaves_nothing_the_next_build_keeps(tmp_path):
    from types import SimpleNamespace

    import polars as pl

    from simlab_pipelines.summary import write_database

    db = tmp_path / "simlab.duckdb"

    def build(experiment: str, x: int) -> None:
        tables = {"notes": pl.DataFrame({"experiment": [experiment], "x": [x]})}
        write_database(SimpleNamespace(name=experiment), SimpleNamespace(tables=tables), db)

    build("a", 1)
    child = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(db)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdout.readline().strip() == "building"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(10)
    leftovers = sorted(p.name for p in tmp_path.glob(".simlab.duckdb.*"))
    assert leftovers and all(".tmp" in name for name in leftovers)

    build("b", 3)  # the next build removes what the killed one left, under the build lock
    assert list(tmp_path.glob(".simlab.duckdb.*")) == []
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT * FROM notes ORDER BY ALL").fetchall() == [("a", 1), ("b", 3)]


def _task(tmp_path, replication: int, arrival_rate: float, timeout: float):
    from simlab_pipelines.batch import Task

    return Task(experiment="slow", config_key=f"arrival_rate-{arrival_rate}",
                replication=replication, partition_key=f"arrival_rate-{arrival_rate}|{replication}",
                model="mmck", params={"servers": 1, "capacity": 5, "arrival_rate": arrival_rate,
                                      "service_rate": 1.0},
                seed=3, horizon=100_000.0, warmup=0.0, common_random_numbers=True,
                series_interval=None, inputs_hash="h", code_version="c", run_id="r",
                results_uri=str(tmp_path), traceparent=None, timeout_seconds=timeout)


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "pool"])
def test_a_simulation_past_its_time_limit_fails_alone(tmp_path, workers):
    from simlab_pipelines.batch import execute

    # 100,000 time units at 20 arrivals each: minutes of work, stopped after 0.5 s; at 0.001
    # arrivals per unit the same horizon takes milliseconds.
    tasks = [_task(tmp_path, 0, 20.0, 0.5), _task(tmp_path, 0, 0.001, 0.5),
             _task(tmp_path, 1, 0.001, 0.5)]
    started = time.monotonic()
    outcomes = {o.task.partition_key: o for o in execute(tasks, workers)}
    assert time.monotonic() - started < 30
    slow = outcomes["arrival_rate-20.0|0"]
    assert slow.row is None and slow.error.startswith("SimulationTimeout: simulation of model "
                                                      "'mmck' timed out after 0.5 s")
    assert "timed out after 0.5 s (timeout_seconds)" in slow.error
    assert not os.path.exists(os.path.join(tmp_path, "slow", "arrival_rate-20.0"))
    for key in ("arrival_rate-0.001|0", "arrival_rate-0.001|1"):
        assert outcomes[key].error is None and os.path.exists(outcomes[key].path)


def test_time_limit_and_run_length_are_checked_at_load():
    from simlab_pipelines.experiments import ExperimentError, parse_experiment

    base = {"name": "x", "model": "mmck", "seed": 1, "replications": 2}
    assert parse_experiment(base).timeout_seconds == 3600
    assert parse_experiment({**base, "timeout_seconds": 5}).timeout_seconds == 5
    for extra, field, reason in [
            ({"horizon": 1e12}, "horizon", "more than 10,000 times the default run length of "
                                           "model 'mmck' (11000)"),
            ({"warmup": 2e8}, "warmup", "would not finish"),
            ({"timeout_seconds": 0}, "timeout_seconds", "greater than 0"),
            ({"timeout_seconds": 1e9}, "timeout_seconds", "less than or equal to 604800")]:
        with pytest.raises(ExperimentError) as caught:
            parse_experiment({**base, **extra})
        assert caught.value.errors[0][0] == field and reason in caught.value.errors[0][1]


BOMB = "name: bomb\nmodel: mmck\nseed: 1\nreplications: 2\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))

_CODE_LOCATION = """
import json
import dagster as dg
from simlab_pipelines.definitions import defs
with dg.instance_for_test() as instance:
    result = defs.resolve_sensor_def("experiment_files")(dg.build_sensor_context(instance=instance))
print(json.dumps({"assets": sorted(k.to_user_string() for k in defs.resolve_all_asset_keys()),
                  "rejected": defs.metadata["rejected_experiment_files"].value,
                  "requests": [r.job_name for r in result.run_requests]}))
"""


def test_hostile_experiment_files_are_refused_and_the_others_load(lab):
    experiments = lab / "experiments"
    (experiments / "bomb.yaml").write_text(BOMB)  # a billion laughs: 9^9 values from ~400 bytes
    (experiments / "loop.yaml").write_text("name: loop\nmodel: mmck\nseed: 1\nreplications: 2\n"
                                           "parameters: &p {x: *p}\n")
    tiny = (experiments / "tiny_mmck.yaml").read_text()
    (experiments / "huge.yaml").write_text(tiny.replace("tiny_mmck", "huge")
                                           + "# " + "x" * 2_000_000 + "\n")
    assert len(BOMB) < 450
    done = subprocess.run([sys.executable, "-c", _CODE_LOCATION], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert {"tiny_mmck/spec", "tiny_mmck/replications", "tiny_mmck/summary",
            "rejected_experiments/bomb", "rejected_experiments/loop",
            "rejected_experiments/huge"} <= set(loaded["assets"])
    # the sensor went on to the good file
    assert loaded["requests"] and all(j.startswith("tiny_mmck_") for j in loaded["requests"])
    rejected = loaded["rejected"]
    assert "bomb.yaml: refused: the aliases (*name) from line" in rejected
    assert "expand to more than 100,000 values (an alias bomb?)" in rejected
    assert "loop.yaml: refused: recursive alias at line 5" in rejected
    assert "huge.yaml: the file is larger than 1,000,000 bytes" in rejected


def test_the_experiments_time_limit_reaches_its_simulations(tiny, materialize):
    import dagster as dg

    from simlab_pipelines.assets import replications_key
    from simlab_pipelines.experiments import parse_experiment

    _, storage = tiny
    spec = parse_experiment({
        "name": "slow", "model": "mmck", "seed": 3, "replications": 2, "horizon": 100_000,
        "warmup": 0, "parameters": {"servers": 1, "capacity": 5, "service_rate": 1.0},
        "factors": {"arrival_rate": [0.001, 20.0]}, "timeout_seconds": 0.5})
    with dg.instance_for_test() as instance:
        slow = materialize(spec, storage, instance, [replications_key("slow")],
                           partition_key="arrival_rate-20.0|0")
        fast = materialize(spec, storage, instance, [replications_key("slow")],
                           partition_key="arrival_rate-0.001|0")
    assert fast.success and not slow.success
    failure = slow.get_step_failure_events()[0].step_failure_data.error
    assert "arrival_rate-20.0|0: SimulationTimeout" in failure.message
    assert "timed out after 0.5 s (timeout_seconds)" in failure.message


def test_an_experiment_file_is_validated_once_per_content(lab):
    # A sweep reads its file about four times per run: the same bytes are validated once.
    from simlab_pipelines.experiments import load_experiment

    path = lab / "experiments" / "tiny_mmck.yaml"
    first = load_experiment(path)
    assert load_experiment(path) is first
    path.write_text(path.read_text().replace("seed: 7", "seed: 8"))
    edited = load_experiment(path)
    assert edited is not first and edited.seed == 8


def test_the_time_limit_holds_in_any_thread_and_through_a_models_except():
    import threading

    from engine.limits import SimulationTimeout

    def stubborn(params, streams, warmup, horizon, series_interval=None):
        while True:  # a model that swallows every Exception cannot swallow its time limit
            with contextlib.suppress(Exception):
                sum(range(1000))

    model = engine.Model("stubborn", "loops", (), {"x": "nothing"}, stubborn, 1.0, 0.0)
    caught = []

    def run() -> None:
        try:
            engine.simulate(model, {}, replication=0, seed=1, timeout_seconds=0.3)
        except SimulationTimeout as exc:
            caught.append(str(exc))

    thread = threading.Thread(target=run)  # as when Dagster runs a step in a thread of its own
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert caught == ["simulation of model 'stubborn' timed out after 0.3 s (timeout_seconds) "
                      "and was stopped"]
