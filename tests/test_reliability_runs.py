"""Faults of runs, injected as they happen in life, then the next ordinary `simlab sweep` recovers.

Every sweep here is a real `simlab` process (its own session, as a terminal would start it) on a
real SQLite instance and DuckDB file; faults are real signals to it: kill -9 of its whole process
group while a batch runs or while the summary holds the DuckDB pool's slot, SIGINT (Ctrl-C) and
SIGTERM (an evicted pod) while a batch runs. After each, one ordinary sweep must finish by itself
(subprocess timeouts catch a hang) with exactly the wanted rows, values bit-identical to what the
engine computes for those inputs (the same as an uninterrupted sweep: results do not depend on
batching, order or process), no run left unfinished and no pool slot held. Also: a run executed as
a run pod executes it (`dagster api execute_run`) leaves no process behind, and two sweeps of one
experiment never run a partition twice.
"""

import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from click.testing import CliRunner
from dagster._cli.api import ExecuteRunArgs
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._grpc.impl import start_run_in_subprocess
from dagster._grpc.types import ExecuteExternalJobArgs
from dagster._serdes import serialize_value
from lab import run_pod_run

import engine
from simlab_pipelines.assets import DUCKDB_POOL, replications_key
from simlab_pipelines.cli import main
from simlab_pipelines.experiments import load_experiment

SIMLAB = str(Path(sys.executable).with_name("simlab"))
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
TIMEOUT = 240  # a hang fails the test; a loaded 2-CPU machine is slow, never this slow


@pytest.fixture
def slow(lab) -> Path:
    """The tiny experiment with simulations long enough (~1 s of CPU) to be caught mid-batch:
    4 configurations x 3 replications, one configuration a run (4 runs). A sweep starts a run
    while the previous one writes its events, so a run counted as succeeded may already have
    simulations of the next one done: they must outlast that bookkeeping by far."""
    spec = yaml.safe_load((lab / "experiments" / "tiny_mmck.yaml").read_text())
    del spec["parameters"]["arrival_rate"]
    spec.update(name="slow_mmck", horizon=40000, replications=3)
    spec["factors"]["arrival_rate"] = [0.7, 0.8]
    spec["baseline"]["arrival_rate"] = 0.7
    path = lab / "experiments" / "slow_mmck.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _start(path: Path, *args: str, env: dict | None = None, name: str = "sweep"):
    """`simlab sweep` as its own process group (a terminal's job), output in files."""
    directory = path.parent.parent
    out = open(directory / f"{name}.out", "w+")  # noqa: SIM115 (closed by _finish)
    err = open(directory / f"{name}.err", "w+")  # noqa: SIM115
    process = subprocess.Popen([SIMLAB, "sweep", str(path), "--workers", "2", "--batch-size", "3",
                                *args], stdout=out, stderr=err, env=env or dict(os.environ),
                               start_new_session=True)
    process.files = (out, err)
    return process


def _finish(process, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("simlab sweep hung") from None
    texts = []
    for handle in process.files:
        handle.seek(0)
        texts.append(handle.read())
        handle.close()
    return code, texts[0], texts[1]


def _sweep(path: Path, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    return _finish(_start(path, *args, env=env, name=f"sweep-{uuid.uuid4().hex[:6]}"))


def _wait_for(condition, what: str, timeout: float = TIMEOUT, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _runs(instance, job_name: str, statuses) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=statuses))


def _batch_running(instance, name: str, after: int, results: Path):
    """A replications run simulating (not all its files written yet) once ``after`` of them
    succeeded."""
    job = f"{name}_replications"
    if len(_runs(instance, job, [dg.DagsterRunStatus.SUCCESS])) < after:
        return None
    for run in _runs(instance, job, [dg.DagsterRunStatus.STARTED]):
        config_key = run.tags["dagster/asset_partition_range_start"].split("|")[0]
        if len(list((results / name / config_key).glob("*.parquet"))) < 3:
            return run
    return None


def _session_processes(sid: int) -> list[int]:
    """Live processes of a session (the sweep, its fork server and pool workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _expected(path: Path) -> dict[tuple[str, int, str], float]:
    """What an uninterrupted sweep stores: the engine's metrics for each partition's inputs."""
    spec = load_experiment(path)
    values = {}
    for config in spec.configurations_list():
        for replication in range(spec.replications):
            result = engine.simulate(spec.model, config.params, replication=replication,
                                     seed=spec.seed, horizon=spec.resolved_horizon,
                                     warmup=spec.resolved_warmup,
                                     common_random_numbers=spec.common_random_numbers)
            for metric, value in result.to_dict()["metrics"].items():
                values[(config.key, replication, metric)] = value
    return values


def _stored(db: Path, name: str) -> tuple[int, dict[tuple[str, int, str], float]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM replications WHERE experiment = ?",
                           [name]).fetchone()[0]
        values = con.execute("SELECT config_key, replication, metric, value FROM observations "
                             "WHERE experiment = ?", [name]).fetchall()
    return rows, {(c, r, m): v for c, r, m, v in values}


def _assert_clean(instance) -> None:
    """No run left unfinished, no pool slot held."""
    assert instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)) == []
    info = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL)
    assert info.claimed_slots == [] and info.pending_steps == []


def _assert_exact(lab: Path, path: Path) -> None:
    spec = load_experiment(path)
    rows, stored = _stored(lab / "data" / "simlab.duckdb", spec.name)
    assert rows == len(spec.configurations_list()) * spec.replications
    expected = _expected(path)
    assert {k: stored[k] for k in expected} == expected  # bit-identical: == on floats


def _interrupt(instance, sweep, after: int, signum: int) -> dg.DagsterRun:
    """Send ``signum`` to the sweep's process group while a batch runs, once ``after`` batches
    landed; returns the run that was in progress."""
    results = Path(os.environ["SIMLAB_DATA_DIR"]) / "results"
    running = _wait_for(lambda: _batch_running(instance, "slow_mmck", after, results),
                        f"batch {after + 1} to run", process=sweep)
    os.killpg(sweep.pid, signum)  # Ctrl-C, too, reaches the terminal's whole process group
    return running


@pytest.mark.slow
def test_kill_9_then_ctrl_c_then_sigterm_mid_batch_and_each_next_sweep_recovers(lab, slow):
    """One user's afternoon: kill -9 of a sweep, then Ctrl-C of the next, then SIGTERM of the
    next (a pod evicted), then two sweeps started together."""
    instance = dg.DagsterInstance.get()

    # kill -9 of the whole process group: the run stays STARTED, nothing cleans it up. (Without
    # the head start, which would simulate the next runs' partitions ahead: the counts of runs
    # below rely on one run landing at a time.)
    sweep = _start(slow, name="killed", env={**os.environ, "SIMLAB_HEAD_START": "0"})
    dead = _interrupt(instance, sweep, 1, signal.SIGKILL)
    _finish(sweep)
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.STARTED  # the fault
    _wait_for(lambda: not _session_processes(sweep.pid), "the killed processes to go", 30)

    # The next sweep marks it failed, saying so; then Ctrl-C stops it within seconds.
    for after, signum in [(2, signal.SIGINT), (3, signal.SIGTERM)]:
        sweep = _start(slow, name=signal.Signals(signum).name)
        running = _interrupt(instance, sweep, after, signum)
        sent = time.monotonic()
        code, out, err = _finish(sweep)
        assert time.monotonic() - sent < 20, "a sweep must stop within seconds"
        assert code == 128 + signum, out + err
        assert "Traceback" not in err
        # the run in progress, and the next one if it had started (a sweep starts it once the
        # previous run has queued all its simulations)
        stopped = re.search(rf"stopped by {signal.Signals(signum).name}: run\(s\) ([0-9a-f, -]+) "
                            "canceled", err)
        assert stopped, out + err
        canceled = stopped.group(1).split(", ")
        assert running.run_id in canceled and len(canceled) <= 2
        assert "runs the rest" in err
        # The progress bar counts what landed, as the last line does (not what was tried).
        landed = re.search(r"(\d+) partition\(s\) landed", err)
        bar = re.findall(r"^slow_mmck\b.*?(\d+)/\d+", out, flags=re.MULTILINE)
        assert landed and bar and int(bar[-1]) == int(landed.group(1)), out + err
        for run_id in canceled:
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
        if signum == signal.SIGINT:
            assert (f"run {dead.run_id} (slow_mmck_replications, STARTED) marked failed: its "
                    "process (simlab sweep, pid") in out
            assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        _assert_clean(instance)
        # pool workers and the fork server end with the sweep
        _wait_for(lambda pid=sweep.pid: not _session_processes(pid), "the sweep's processes to end",
                  10)

    # Two sweeps started together: one runs only what is missing, the other waits for it (saying
    # so), then has nothing to do. No partition runs twice.
    done = instance.get_materialized_partitions(replications_key("slow_mmck"))
    results = [_finish(sweep) for sweep in [_start(slow, name="a"), _start(slow, name="b")]]
    for code, out, err in results:
        assert code == 0, out + err
        assert "Traceback" not in err
    outputs = [out for _, out, _ in results]
    assert sum(f"ran {12 - len(done)} partitions in 1 run(s)" in out for out in outputs) == 1
    assert sum("another simlab sweep of it is running" in out and
               "nothing to do, all 12 partitions are materialised and summarised" in out
               for out in outputs) == 1
    assert len(_runs(instance, "slow_mmck_replications", [dg.DagsterRunStatus.SUCCESS])) == 4
    _assert_clean(instance)
    _assert_exact(lab, slow)


@pytest.mark.slow
def test_kill_9_during_the_summary_then_a_sweep_of_another_experiment_recovers(lab):
    instance = dg.DagsterInstance.get()
    path = lab / "experiments" / "tiny_mmck.yaml"
    storage = instance.event_log_storage

    def summary_holds_the_slot():
        slots = storage.get_concurrency_info(DUCKDB_POOL).claimed_slots \
            if DUCKDB_POOL in storage.get_concurrency_keys() else []
        return slots[0].run_id if slots else None

    sweep = _start(path)
    holder = _wait_for(summary_holds_the_slot, "the summary to hold the DuckDB slot", process=sweep)
    os.killpg(sweep.pid, signal.SIGKILL)
    _finish(sweep)
    assert summary_holds_the_slot() == holder  # the fault: a dead run holds the only slot

    # Another experiment, another data directory, same instance: it needs that slot too.
    other = lab / "experiments" / "other_mmck.yaml"
    other.write_text(path.read_text().replace("name: tiny_mmck", "name: other_mmck"))
    env = {**os.environ, "SIMLAB_DATA_DIR": str(lab / "other_data")}
    code, out, err = _sweep(other, env=env)
    assert code == 0, out + err
    assert f"run {holder} (tiny_mmck_summary, STARTED) marked failed" in out
    assert "its slots are freed" in out
    assert "ran 12 partitions in 4 run(s); 12 wanted in all" in out
    assert "Traceback" not in err
    assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.FAILURE
    _assert_clean(instance)


def test_the_last_lines_count_what_landed_and_name_what_failed_and_why(lab, planted_failure):
    """Replication 2 of every configuration raises: 10 of the 12 partitions land."""
    path = lab / "experiments" / "tiny_mmck.yaml"
    result = CliRunner().invoke(main, ["sweep", str(path), "--workers", "1", "--batch-size", "3"])
    assert result.exit_code == 1, result.output
    assert "10 of the 12 partitions run landed (4 run(s)); 2 of 12 wanted are still missing." \
        in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("run ")]
    assert len(failed) == 2
    assert all(line.endswith("failed: 1 of 3 simulations failed (the other partitions are "
                             "kept)") for line in failed)
    # Then one table of the failed partitions by reason: one row, 2 partitions.
    rows = [line for line in result.stderr.splitlines() if line.startswith("│")]
    assert len(rows) == 1 and "RuntimeError: planted failure in replication 2" in rows[0]
    assert rows[0].split("│")[-2].strip() == "2"
    assert "runs what is missing again" in result.stderr
    # The next sweep runs them again, not also the daemon (twice the work).
    failed_runs = dg.DagsterInstance.get().get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert len(failed_runs) == 2
    assert all(run.tags["dagster/max_retries"] == "0" for run in failed_runs)


def _marked(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (inherited from the run's process)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes()
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("launcher", ["run_pod", "dagster_dev"])
def test_a_multi_worker_run_process_exits_with_its_run_and_leaves_no_process(
        lab, monkeypatch, launcher):
    """A run pod's command (`dagster api execute_run`) and what `dagster dev`'s code server starts
    for a run (a spawned multiprocessing child, which at exit waits for its child processes: it
    waited forever for a pool nobody shut down) both exit when the run ends, and with them every
    pool worker and the fork server."""
    instance, origin, run = run_pod_run(lab)
    context = multiprocessing.get_context("spawn")
    # Made before the marker is set: their resource tracker is this process's, not the run's.
    queue, termination = context.Queue(), context.Event()  # alive until the child has them
    marker = uuid.uuid4().hex  # in the environment of every process the run starts
    monkeypatch.setenv("SIMLAB_TEST_MARKER", marker)
    if launcher == "run_pod":
        command = ExecuteRunArgs(job_origin=origin, run_id=run.run_id,
                                 instance_ref=instance.get_ref()).get_command_args()
        done = subprocess.run(command, cwd=lab, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    else:  # as dagster._grpc.server starts a run
        recon = ReconstructableRepository.for_module(
            "simlab_pipelines.definitions", "defs", working_directory=str(lab)
        ).get_reconstructable_job(run.job_name)
        location = InProcessCodeLocationOrigin(LoadableTargetOrigin(
            python_file=None, module_name="simlab_pipelines.definitions", attribute="defs",
            working_directory=str(lab)), location_name="simlab")
        args = ExecuteExternalJobArgs(
            job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"),
                                       run.job_name),
            run_id=run.run_id, instance_ref=instance.get_ref())
        process = context.Process(target=start_run_in_subprocess,
                                  args=[serialize_value(args), recon, queue, termination])
        process.start()
        process.join(timeout=120)
        if process.is_alive():
            for pid in [process.pid, *_marked(marker)]:
                os.kill(pid, signal.SIGKILL)
            raise AssertionError("the run's process did not exit after its run")
        assert process.exitcode == 0
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    try:
        _wait_for(lambda: not _marked(marker), "the run's processes to end", 10)
    except AssertionError:
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120]
                for pid in _marked(marker)}
        raise AssertionError(f"processes left after the run: {left}") from None


def test_run_monitoring_has_the_settings_each_launcher_supports(lab, tmp_path, monkeypatch):
    # Local (dagster_home/dagster.yaml): the DefaultRunLauncher has no worker health check and
    # cannot resume runs; the daemon fails runs that never start or never finish canceling and
    # frees pool slots of ended runs.
    instance = dg.DagsterInstance.get()
    assert isinstance(instance.run_launcher, DefaultRunLauncher)
    assert not instance.run_launcher.supports_check_run_worker_health
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_max_resume_run_attempts == 0
    assert instance.run_monitoring_start_timeout_seconds > 0
    assert instance.run_monitoring_cancel_timeout_seconds > 0
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0

    # Kubernetes (the chart's values, as the dagster chart writes them into dagster.yaml): the
    # K8sRunLauncher checks run pods, so a dead pod's run fails and run retries relaunch it.
    import helm_python as helm
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher
    from test_run_pod_job import CHART, ENVIRONMENTS, _merge, instance_yaml

    assert K8sRunLauncher.supports_check_run_worker_health.fget(None)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "offline")
    with helm.Chart.load(CHART) as chart:
        for environment, files in ENVIRONMENTS.items():
            overrides: dict = {}
            for name in files:
                overrides = _merge(overrides, helm.values_from_yaml((CHART / name).read_text()))
            values = chart.merge_values(overrides)
            home = tmp_path / environment
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(values)))
            config, _ = dagster_instance_config(str(home))
            monitoring = config["run_monitoring"]
            assert monitoring["enabled"] is True, environment
            assert monitoring["free_slots_after_run_end_seconds"] > 0, environment
            assert monitoring["cancel_timeout_seconds"] > 0, environment
            assert monitoring["start_timeout_seconds"] >= 120, environment  # image pulls
            assert config["run_retries"]["enabled"] is True, environment


def test_a_sweep_names_the_live_run_holding_the_pool_slot_and_frees_a_dead_ones(lab):
    """In-process, with the instance's own concurrency API: a slot held by a run of a live
    process is waited for (naming the run); by a run whose process is gone (a reused pid: same
    pid, another start time), freed."""
    from simlab_pipelines import recovery
    from simlab_pipelines.sweep import ensure_pool

    instance = dg.DagsterInstance.get()
    ensure_pool(instance, DUCKDB_POOL)
    alive = recovery.process_tags()
    reused = {**alive, recovery.STARTED_TAG: "1"}  # this pid, but not this process
    runs = {}
    for name, tags in [("live", alive), ("reused", reused)]:
        run = instance.add_run(dg.DagsterRun(job_name=f"{name}_summary", tags=tags,
                                             status=dg.DagsterRunStatus.STARTED))
        runs[name] = run.run_id
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot(DUCKDB_POOL, runs["live"], "summary").is_claimed

    lines: list[str] = []
    recovery.wait_for_pool(instance, DUCKDB_POOL, lines.append,
                           stopped=lambda: any(line.startswith("waiting") for line in lines),
                           poll_seconds=0.01)
    assert lines == [
        f"run {runs['reused']} (reused_summary, STARTED) marked failed: its process (simlab "
        f"sweep, pid {os.getpid()}) is gone; its slots are freed",
        f"waiting for the {DUCKDB_POOL} pool: its slot is held by run {runs['live']} "
        "(live_summary, STARTED)"]
    assert instance.get_run_by_id(runs["reused"]).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(runs["live"]).status == dg.DagsterRunStatus.STARTED

    # A slot still held by a run that ended is freed.
    storage.free_concurrency_slots_for_run(runs["live"])
    assert storage.claim_concurrency_slot(DUCKDB_POOL, runs["reused"], "summary").is_claimed
    lines.clear()
    recovery.wait_for_pool(instance, DUCKDB_POOL, lines.append, stopped=lambda: False)
    assert lines == [f"freed the pool slots still held by run {runs['reused']} (FAILURE)"]
    assert storage.get_concurrency_info(DUCKDB_POOL).claimed_slots == []


def test_the_sweep_lock_is_exclusive_and_works_with_a_read_only_dagster_home(lab, monkeypatch):
    from simlab_pipelines import recovery

    instance = dg.DagsterInstance.get()
    mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):  # DAGSTER_HOME mounted read-only (a ConfigMap)
        if self == Path(instance.root_directory) / "locks":
            raise OSError(30, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    lines: list[str] = []
    with recovery.sweep_lock(instance, "tiny_mmck", lines.append, lambda: False) as first:
        assert first is True
        # another open file description of the same lock, as another process would hold
        with recovery.sweep_lock(instance, "tiny_mmck", lines.append,
                                 lambda: bool(lines)) as second:
            assert second is False
        with recovery.sweep_lock(instance, "other", lines.append, lambda: False) as other:
            assert other is True  # one lock per experiment
    assert lines == [f"tiny_mmck: another simlab sweep of it is running (pid {os.getpid()} on "
                     f"{socket.gethostname()}); waiting for it to finish"]
    assert not (Path(instance.root_directory) / "locks").exists()
    with recovery.sweep_lock(instance, "tiny_mmck", lines.append, lambda: True) as again:
        assert again is True  # released
