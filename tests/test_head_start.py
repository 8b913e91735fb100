"""A sweep's head start (``simlab_pipelines/ahead.py``): the first round's simulations run on the
pool while the sweep starts up, and the run that holds them takes them over: each recorded with
its run's id, its own span and row, and the very values it would have had if simulated then. A
simulation is taken over only by a task equal in all its result depends on; one that fails ahead
is simulated again and fails as usual. Only an experiment without results gets a head start. A
precision target's later rounds follow ahead, each from the results of the rounds before it."""

import dataclasses
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

import engine
from simlab_pipelines import ahead, batch, plan
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.summary import observations

PROJECT = Path(__file__).resolve().parent.parent
SIMLAB = Path(sys.executable).parent / "simlab"

EXPERIMENT = {"name": "head", "model": "mmck", "seed": 99, "replications": 3, "horizon": 40.0,
              "warmup": 4.0, "parameters": {"arrival_rate": 0.8, "service_rate": 1.0},
              "factors": {"servers": [1, 2]}}


def _spec(directory: Path, **changes):
    document = {**EXPERIMENT, **changes}
    path = directory / f"{document['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_experiment(path)


def _ran(tasks, run_id: str, results: Path):
    """The tasks as a run holds them: with its id, partition keys and result directory."""
    return [dataclasses.replace(t, run_id=run_id, partition_key=f"{t.config_key}|{t.replication}",
                                results_uri=str(results)) for t in tasks]


def _until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _ahead(state: str, count: int | None = None):
    """Whether the simulations ahead (``count`` of them, if given) are all ``state``: running
    (handed to the workers) or done."""
    def check() -> bool:
        with batch._AHEAD_LOCK:
            futures = list(batch._AHEAD.values())
        return bool(futures) and count in (None, len(futures)) and all(
            getattr(f, state)() for f in futures)
    return check


# What a row's values are: the same whichever process simulated it, and when.
VALUES = ("metrics", "events", "seed_entropy", "spawn_key", "series", "double_horizon",
          "inputs_hash", "horizon", "warmup")


@pytest.fixture
def pools():
    try:
        yield
    finally:
        batch.shutdown_pools()


def test_the_first_round_goes_ahead_replication_by_replication(tmp_path, monkeypatch):
    monkeypatch.delenv(ahead.VARIABLE, raising=False)
    spec = _spec(tmp_path)
    tasks = ahead.tasks(spec, str(tmp_path / "results"))
    assert [(t.config_key, t.replication) for t in tasks] == [
        ("servers-1", 0), ("servers-2", 0), ("servers-1", 1), ("servers-2", 1),
        ("servers-1", 2), ("servers-2", 2)]
    assert {t.run_id for t in tasks} == {""} and all(t.last_replication is None for t in tasks)
    # A precision target's first round is its pilot: the file's replications, not the maximum.
    pilot = _spec(tmp_path, name="pilot", replications=2, precision={
        "metric": "mean_wait", "relative_half_width": 0.1, "max_replications": 50})
    assert len(ahead.tasks(pilot, str(tmp_path / "results"))) == 4
    monkeypatch.setattr(ahead, "MAX_AHEAD", 5)
    assert len(ahead.tasks(spec, str(tmp_path / "results"))) == 5


def test_no_head_start_where_the_first_round_is_not_known_from_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(ahead.VARIABLE, raising=False)
    spec = _spec(tmp_path)
    results = tmp_path / "results"
    (results / "head").mkdir(parents=True)  # an empty directory: nothing landed yet
    assert ahead.tasks(spec, str(results))
    (results / "head" / "servers-1").mkdir()  # results of the experiment: the instance knows
    assert ahead.tasks(spec, str(results)) == []
    assert ahead.tasks(spec, "s3://bucket/results") == []
    blocks = _spec(tmp_path, name="blocks", replications_per_partition=2)
    assert ahead.tasks(blocks, str(results)) == []
    search = load_experiment(PROJECT / "experiments" / "mmck_breaking_point.yaml")
    assert ahead.tasks(search, str(results)) == []
    monkeypatch.setenv(ahead.VARIABLE, "0")
    assert ahead.tasks(_spec(tmp_path, name="other"), str(results)) == []


def test_a_run_takes_over_what_ran_ahead_with_its_own_id_and_the_same_values(tmp_path, pools):
    spec = _spec(tmp_path)
    early = ahead.tasks(spec, str(tmp_path / "unused"))
    batch.run_ahead(early, 2)
    _until(_ahead("done", len(early)), "the simulations ahead to end")
    # One of the run's tasks differs in what its result depends on (its seed): not taken over.
    tasks = _ran(early, "run-1", tmp_path / "taken")
    tasks[-1] = dataclasses.replace(tasks[-1], seed=tasks[-1].seed + 1)
    started = datetime.now(UTC)
    outcomes = {o.task.partition_key: o for o in batch.execute(tasks, 2)}
    assert len(batch._AHEAD) == 1  # the one no task took over, kept for another run...
    batch.shutdown_pools()
    assert not batch._AHEAD  # ...until the sweep ends
    fresh_tasks = _ran(early, "run-2", tmp_path / "fresh")
    fresh_tasks[-1] = dataclasses.replace(fresh_tasks[-1], seed=tasks[-1].seed)
    fresh = {o.task.partition_key: o for o in batch.execute(fresh_tasks, 2)}
    assert len(outcomes) == len(fresh) == 6
    for key, outcome in outcomes.items():
        assert outcome.error is None, outcome.error
        row = outcome.row
        assert row["dagster_run_id"] == "run-1" and row["partition_key"] == key
        assert outcome.path.startswith(str(tmp_path / "taken")) and Path(outcome.path).is_file()
        assert pl.read_parquet(outcome.path)["dagster_run_id"].to_list() == ["run-1"]
        assert (row["started_at"] < started) == (key != tasks[-1].partition_key), key
        assert {k: row[k] for k in VALUES} == {k: fresh[key].row[k] for k in VALUES}, key


def test_a_simulation_still_running_ahead_is_recorded_when_it_ends(tmp_path, pools):
    spec = _spec(tmp_path, name="slow", horizon=20000.0, warmup=10.0,
                 factors={"servers": [1]}, replications=2)
    early = ahead.tasks(spec, str(tmp_path / "unused"))
    batch.run_ahead(early, 2)
    _until(_ahead("running", 2), "both simulations ahead to be handed to the workers")
    running = list(batch._AHEAD.values())
    assert not any(f.done() for f in running)  # (handed to the workers, not ended)
    outcomes = list(batch.execute(_ran(early, "run-1", tmp_path / "r"), 2))
    assert sorted(o.task.replication for o in outcomes) == [0, 1]
    # Simulated once, ahead: the rows are those simulations', recorded for the run.
    assert sorted(o.row["started_at"] for o in outcomes) == sorted(
        f.result().started_at for f in running)
    for outcome in outcomes:
        assert outcome.error is None and outcome.row["dagster_run_id"] == "run-1"
        assert Path(outcome.path).is_file()


def test_a_simulation_that_fails_ahead_fails_in_its_run_as_usual(tmp_path, pools):
    spec = _spec(tmp_path, timeout_seconds=0.05, horizon=10_000_000.0)
    early = ahead.tasks(spec, str(tmp_path / "unused"))[:2]
    batch.run_ahead(early, 2)
    _until(_ahead("done", len(early)), "the simulations ahead to end")
    assert all(f.result() is None for f in batch._AHEAD.values())  # failed ahead: no result
    outcomes = list(batch.execute(_ran(early, "run-1", tmp_path / "r"), 2))
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert outcome.row is None and "SimulationTimeout" in outcome.error, outcome.error


# Simulations of minutes: what a stop or an error must not wait for.
LONG = {"name": "long", "horizon": 1e8, "warmup": 1.0, "factors": {"servers": [1]}}


def test_a_command_that_ends_during_its_start_up_leaves_nothing_simulating(tmp_path, pools,
                                                                          monkeypatch):
    """Ctrl-C or an error before the runs took over: the workers simulating ahead are stopped at
    once, not waited for (each of these simulations would take minutes)."""
    spec = _spec(tmp_path, **LONG)
    monkeypatch.setenv("SIMLAB_RESULTS_URI", str(tmp_path / "results"))
    ahead.start(spec, 2)
    _until(_ahead("running"), "the simulations ahead to be handed to the workers")
    (pool,) = batch._POOLS.values()
    workers = list(pool._processes.values())
    assert workers and all(w.is_alive() for w in workers)
    started = time.monotonic()
    ahead.stop()
    assert time.monotonic() - started < 10
    assert not batch._POOLS and not batch._AHEAD
    for worker in workers:
        worker.join(5)
        assert not worker.is_alive()


def test_results_wait_for_their_run_when_too_many_are_ahead(tmp_path, pools):
    """At most ``hold`` results wait in memory; a run that takes over only simulations run
    ahead lets the head start go on with the rest."""
    spec = _spec(tmp_path)
    early = ahead.tasks(spec, str(tmp_path / "unused"))
    batch.run_ahead(early, 2, hold=3)
    _until(_ahead("done", 3), "three simulations ahead to end")
    time.sleep(0.3)  # (the feed would have handed out more by now)
    assert len(batch._AHEAD) == 3
    with batch.keep_pools():  # (as a sweep's runs do)
        first = list(batch.execute(_ran(early[:3], "run-1", tmp_path / "r"), 2))
        assert [o.error for o in first] == [None] * 3
        _until(lambda: len(batch._AHEAD) == 3 and all(f.done() for f in batch._AHEAD.values()),
               "the other three to be simulated ahead")
        assert set(batch._AHEAD) == {batch._simulation(t) for t in early[3:]}


PRECISION = {"name": "rounds", "replications": 10, "horizon": 60.0, "warmup": 5.0,
             "factors": {"servers": [1, 2]},
             "precision": {"metric": "mean_wait", "relative_half_width": 0.05,
                           "max_replications": 60}}


def _feeding() -> bool:
    return any(t.name == "simlab-ahead" for t in threading.enumerate())


def _feed_ended() -> bool:
    return not _feeding() and bool(batch._AHEAD) and all(
        f.done() for f in batch._AHEAD.values())


def test_a_precision_targets_rounds_go_ahead_as_the_sweep_plans_them(tmp_path, pools,
                                                                      monkeypatch):
    """Each later round is simulated ahead once the one before it is in: exactly the
    replications the sweep's own plan wants from the same results (a round that does not
    reach the target, then the target met: nothing more)."""
    monkeypatch.setenv("SIMLAB_RESULTS_URI", str(tmp_path / "results"))
    spec = _spec(tmp_path, **PRECISION)
    ahead.start(spec, 2)
    _until(_feed_ended, "the head start to end", timeout=120)
    simulated = {(key, replication) for _, key, replication, *_ in batch._AHEAD}
    # The plan, replayed from the same simulations (run here, in this process), wants no more.
    assert simulated == _plan_wants(spec, simulated)
    assert len(simulated) > spec.replications * 2  # (rounds beyond the pilot ran ahead)


def _plan_wants(spec, simulated) -> set[tuple[str, int]]:
    """The replications the sweep's plan wants once ``simulated`` are in (run here)."""
    params = {c.key: c.params for c in spec.configurations_list()}
    rows = [{"experiment": spec.name, "config_key": key, "replication": r,
             "metrics": engine.simulate("mmck", params[key], replication=r, seed=spec.seed,
                                        horizon=spec.horizon, warmup=spec.warmup).metrics}
            for key, r in sorted(simulated)]
    targets = plan.replication_targets(spec, observations(pl.DataFrame(rows), spec))
    return {(key, r) for key, target in targets.items() for r in range(target.replications)}


def test_a_run_that_catches_up_simulates_the_rest_and_the_next_round_still_goes_ahead(
        tmp_path, pools):
    """A run created while most of its round still waits to be handed to the pool simulates
    those itself; the head start takes their outcomes from the run and plans the next round."""
    spec = _spec(tmp_path, **PRECISION)
    first = ahead.tasks(spec, str(tmp_path / "unused"))
    batch.run_ahead(first, 2, ahead._next_round(spec, str(tmp_path / "unused")), hold=2)
    _until(_ahead("done", 2), "two simulations ahead to end")
    with batch.keep_pools():
        outcomes = list(batch.execute(_ran(first, "run-1", tmp_path / "r"), 2))
        assert len(outcomes) == 20 and all(o.error is None for o in outcomes)
        assert sum(o.task.ahead is not None for o in outcomes) == 2  # (the others: the run's)
        pilot = {(t.config_key, t.replication) for t in first}

        def next_round() -> set[tuple[str, int]]:
            with batch._AHEAD_LOCK:
                keys = list(batch._AHEAD) + list(batch._WAITING)
            return {(key, replication) for _, key, replication, *_ in keys}

        _until(lambda: bool(next_round()), "the next round to go ahead")
        assert next_round() == _plan_wants(spec, pilot) - pilot


def test_a_single_simulation_run_in_process_takes_over_its_simulation(tmp_path, pools):
    spec = _spec(tmp_path, factors={"servers": [1]}, replications=2)
    early = ahead.tasks(spec, str(tmp_path / "unused"))[:1]
    batch.run_ahead(early, 2)
    _until(_ahead("done", 1), "the simulation ahead to end")
    started = next(iter(batch._AHEAD.values())).result().started_at
    (outcome,) = batch.execute(_ran(early, "run-1", tmp_path / "r"), 2)  # (one: in-process)
    assert outcome.error is None and outcome.row["started_at"] == started
    assert outcome.row["dagster_run_id"] == "run-1" and Path(outcome.path).is_file()
    assert not batch._AHEAD


def test_a_run_that_finds_nothing_ahead_stops_a_head_start_still_planning(tmp_path, pools):
    """A run that comes for the next round while the head start still plans it simulates its
    tasks itself; the head start, stopped, does not simulate them a second time."""
    spec = _spec(tmp_path, factors={"servers": [1]}, replications=4)
    tasks = ahead.tasks(spec, str(tmp_path / "unused"))
    first, later = tasks[:2], tasks[2:]
    planning, release = threading.Event(), threading.Event()

    def after(results):
        planning.set()
        release.wait(60)
        return later

    batch.run_ahead(first, 2, after)
    try:
        with batch.keep_pools():
            assert [o.error for o in batch.execute(_ran(first, "run-1", tmp_path / "r"), 2)] == [
                None, None]
            _until(planning.is_set, "the head start to plan its next round")
            outcomes = list(batch.execute(_ran(later, "run-2", tmp_path / "r"), 2))
            assert [(o.error, o.task.ahead) for o in outcomes] == [(None, None)] * 2
            release.set()
            _until(lambda: not _feeding(), "the head start to end")
            assert not batch._WAITING and not batch._AHEAD  # (nothing simulated twice)
    finally:
        release.set()


def test_a_run_stopped_after_taking_simulations_over_ends_the_head_start(tmp_path, pools):
    """The head start waits for the outcomes of the simulations a run took from it; a run that
    is stopped part way will not report them, so the head start ends rather than wait."""
    spec = _spec(tmp_path, **PRECISION)
    first = ahead.tasks(spec, str(tmp_path / "unused"))
    batch.run_ahead(first, 2, ahead._next_round(spec, str(tmp_path / "unused")), hold=2)
    _until(_ahead("done", 2), "two simulations ahead to end")
    try:
        with batch.keep_pools():
            outcomes = batch.execute(_ran(first, "run-1", tmp_path / "r"), 2)
            assert next(outcomes).error is None
            assert batch._HANDED  # (the run took the ones not handed to the pool yet)
            batch.cancel()
            with pytest.raises(dg.Failure, match="batch cancelled"):
                list(outcomes)
            _until(lambda: not _feeding(), "the head start to end", timeout=10)
            assert not batch._HANDED and not batch._WAITING
    finally:
        batch.reset_cancel()


def test_a_stop_fails_a_single_simulation_run_whose_simulation_ahead_it_killed(tmp_path,
                                                                               pools):
    """The stop kills the worker simulating ahead for an in-process run: the run fails as
    cancelled at once; it does not simulate the task again itself (for minutes here)."""
    early = ahead.tasks(_spec(tmp_path, **LONG), str(tmp_path / "unused"))[:1]
    batch.run_ahead(early, 2)
    _until(_ahead("running", 1), "the simulation ahead to be handed to a worker")
    raised: list[BaseException] = []

    def run() -> None:
        try:
            list(batch.execute(_ran(early, "run-1", tmp_path / "r"), 2))
        except BaseException as exc:  # (handed to the test)
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    _until(lambda: not batch._AHEAD, "the run to take the simulation over")
    time.sleep(0.5)  # (the run now waits for the simulation to end)
    try:
        batch.cancel()
        thread.join(15)
        assert not thread.is_alive(), "the run went on simulating after the stop"
        assert len(raised) == 1 and "batch cancelled" in str(raised[0]), raised
    finally:
        batch.reset_cancel()


def test_a_sweep_that_fails_does_not_wait_for_its_simulations_ahead(tmp_path, pools):
    """An error inside the sweep's pools (not a stop) ends them at once: the workers still
    simulating ahead (for minutes here) are killed, not waited for."""
    early = ahead.tasks(_spec(tmp_path, **LONG), str(tmp_path / "unused"))[:2]
    ended: list[float] = []

    def sweep() -> None:
        try:
            with batch.keep_pools():
                batch.run_ahead(early, 2)
                _until(_ahead("running", 2), "the simulations ahead to be handed to the workers")
                raise RuntimeError("a Dagster error mid-sweep")
        except RuntimeError:
            ended.append(time.monotonic())

    started = time.monotonic()
    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    thread.join(30)
    assert ended and ended[0] - started < 20, "the pools waited for the simulations ahead"
    assert not batch._POOLS and not batch._AHEAD


def test_a_sweep_records_what_ran_ahead_with_its_runs(tmp_path, monkeypatch):
    """``simlab sweep`` of a fresh experiment with a precision target: simulations started
    before their run was created, recorded with that run's id, each once, with the values the
    engine gives for their seeds, and as many as the target wants."""
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "dagster_home" / "dagster.yaml").read_text())
    spec = _spec(tmp_path, **PRECISION)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMLAB_", "OTEL_"))}
    env.update(DAGSTER_HOME=str(home), SIMLAB_DATA_DIR=str(data))
    done = subprocess.run([str(SIMLAB), "sweep", str(tmp_path / "rounds.yaml"), "--workers", "2"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    with duckdb.connect(str(data / "simlab.duckdb"), read_only=True) as con:
        runs = con.sql("select config_key, replication, dagster_run_id, started_at "
                       "from replications").fetchall()
        values = con.sql("select experiment, config_key, replication, metric, value "
                         "from observations").pl()
    targets = plan.replication_targets(spec, values)
    assert sorted((key, r) for key, r, _, _ in runs) == sorted(
        (key, r) for key, target in targets.items() for r in range(target.replications))
    assert {t.status for t in targets.values()} <= {"met", "max_reached"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # (its storage is relative to it)
    with dg.DagsterInstance.get() as instance:
        created = {run_id: instance.get_run_record_by_id(run_id).create_timestamp
                   for run_id in {run_id for _, _, run_id, _ in runs}}
    assert sum(started < created[run_id] for _, _, run_id, started in runs) > 0
    params = {c.key: c.params for c in spec.configurations_list()}
    for _, config_key, replication, metric, value in values.iter_rows():
        expected = engine.simulate("mmck", params[config_key], replication=replication,
                                   seed=spec.seed, horizon=spec.horizon, warmup=spec.warmup)
        assert value == expected.metrics[metric], (config_key, replication, metric)
