"""Faults of the processes a sweep starts, as they happen in life, then the ordinary command works.

- A plug-in that calls ``os._exit`` in one partition and segfaults in another, swept by a real
  `simlab sweep` on 2 pool workers: those two partitions fail, each named with its worker's exit
  status or signal; every other partition lands (the whole run failed, "0 of the 12 partitions
  run landed", and every later sweep did the same). The next sweep runs only the two (each alone
  in a run: a Python plug-in is simulated in a pool worker even then, never in the sweep's own
  process, which it would kill), and once fixed they land.
- A sweep running command-line simulators (each in its own session, with a child that left for a
  session of its own) stopped by Ctrl-C, SIGTERM, kill -9 of its whole process group, or kill -9
  of its main process only (what the OOM killer does): within seconds nothing it started is left,
  neither its pool workers, fork server and resource tracker (left running for good after kill -9
  of the main process only) nor any process of its simulators (they ran their full length). The
  next sweep runs what is missing.
"""

import os
import re
import signal
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.events import DagsterEventType
from test_command_model import _alive
from test_reliability_runs import _finish, _session_processes, _start, _sweep, _wait_for

CRASHY = textwrap.dedent('''
    """A plug-in that kills its own process in two partitions while the file CRASH exists."""
    import ctypes, os
    from pathlib import Path
    from engine import Model, ModelRun, Parameter

    CRASH = Path(__file__).with_name("CRASH")


    def run(params, streams, warmup, horizon, series_interval=None):
        replication = streams.spawn_key[0]
        if CRASH.exists() and (params["x"], replication) == (1, 2):
            os._exit(3)
        if CRASH.exists() and (params["x"], replication) == (2, 4):
            ctypes.string_at(0)  # a segfault, as a broken C extension has
        return ModelRun({"mean_y": streams["y"].uniform() + params["x"]}, 1)


    MODEL = Model(name="crashy", description="crashes on demand",
                  parameters=(Parameter("x", int, "a factor", default=1),),
                  metrics={"mean_y": "a uniform plus x"}, run=run, default_horizon=1.0,
                  default_warmup=0.0, version="1")
''')


def _landed(lab: Path, experiment: str) -> set[str]:
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        return {f"{c}|{r}" for c, r in con.execute(
            "SELECT config_key, replication FROM replications WHERE experiment = ?",
            [experiment]).fetchall()}


def _failure_reasons(instance) -> dict[str, str]:
    """Every failed partition's reason, from the failed runs' step failures (their metadata)."""
    reasons = {}
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        for record in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
            data = record.dagster_event.step_failure_data.user_failure_data
            reasons.update(data.metadata["errors"].value)
    return reasons


@pytest.mark.slow
def test_a_crashing_partition_fails_alone_and_the_next_sweep_runs_only_it(lab):
    experiments = lab / "experiments"
    (experiments / "crashy_model.py").write_text(CRASHY)
    (experiments / "CRASH").touch()
    path = experiments / "crashy.yaml"
    path.write_text(yaml.safe_dump({"name": "crashy", "model": "crashy_model:MODEL", "seed": 3,
                                    "replications": 6, "factors": {"x": [1, 2]}}))
    sweep = _start(path, name="crashing")
    code, out, err = _finish(sweep)
    assert code == 1, out + err
    assert "10 of the 12 partitions run landed (4 run(s)); 2 of 12 wanted are still missing." \
        in out, out + err
    assert "x-1|2" in err and "x-2|4" in err and "WorkerDied" in err and "Traceback" not in err
    reasons = _failure_reasons(dg.DagsterInstance.get())
    assert set(reasons) == {"x-1|2", "x-2|4"}, reasons
    assert re.fullmatch(r"WorkerDied: its pool worker \(pid \d+\) exited with status 3 "
                        r"\(os\._exit or sys\.exit\?\) while simulating this partition",
                        reasons["x-1|2"])
    assert re.fullmatch(r"WorkerDied: its pool worker \(pid \d+\) was killed by signal 11 "
                        r"\(SIGSEGV\): a crash in native code while simulating this partition",
                        reasons["x-2|4"])
    landed = _landed(lab, "crashy")
    assert len(landed) == 10 and not landed & {"x-1|2", "x-2|4"}
    _wait_for(lambda: not _session_processes(sweep.pid), "the sweep's processes to end", 10)

    # Still crashing: the next sweep runs only the two (one a run: a run of one partition, which
    # a built-in would simulate in the sweep's own process), and they fail alone again.
    sweep = _start(path, name="still-crashing")
    code, out, err = _finish(sweep)
    assert code == 1, out + err
    assert "0 of the 2 partitions run landed (2 run(s)); 2 of 12 wanted are still missing." \
        in out, out + err
    assert "Traceback" not in err and _landed(lab, "crashy") == landed

    # Fixed (or a transient crash): the next sweep runs exactly the two.
    (experiments / "CRASH").unlink()
    sweep = _start(path, name="fixed")
    code, out, err = _finish(sweep)
    assert code == 0, out + err
    assert "crashy: ran 2 partitions in 2 run(s); 12 wanted in all." in out
    assert len(_landed(lab, "crashy")) == 12


SLEEPY = textwrap.dedent('''
    # A command simulator: while the file SLOW exists it sleeps, with two children in its process
    # group and one in a session of its own; else it answers at once. Each writes its pid to pids.
    echo $$ >> pids
    if [ -e SLOW ]; then
        sleep 120 & echo $! >> pids
        if command -v setsid > /dev/null; then setsid sleep 120 & else sleep 120 & fi
        echo $! >> pids
        sleep 120 & echo $! >> pids
        wait
    fi
    echo \'{"mean_x": 1.5}\'
''')


def _sleepy(lab: Path) -> Path:
    """An experiment of 4 simulations of the sleepy simulator, slow for now."""
    experiments = lab / "experiments"
    (experiments / "sleepy.sh").write_text(SLEEPY)
    (experiments / "SLOW").touch()
    path = experiments / "sleepy.yaml"
    path.write_text(yaml.safe_dump({"name": "sleepy", "seed": 1, "replications": 4,
                                    "horizon": 1.0, "model": {
                                        "name": "sleepy", "command": ["/bin/sh", "sleepy.sh"],
                                        "metrics": ["mean_x"], "timeout": 600}}))
    return path


def _pids(lab: Path) -> set[int]:
    pids = lab / "experiments" / "pids"
    return {int(p) for p in pids.read_text().split()} if pids.exists() else set()


def _stop_mid_batch(lab: Path, path: Path, name: str, stop, code: int | None = None) -> None:
    """A sweep stopped by ``stop(pid)`` while two simulators run (exiting with ``code``, if
    given, and blaming no partition): then nothing it started, in its session (pool workers, fork
    server, resource tracker) or in the simulators' own, is left within seconds."""
    before = _pids(lab)
    sweep = _start(path, name=name)
    _wait_for(lambda: len(_pids(lab) - before) >= 8, "two simulators to run", process=sweep)
    simulators = _pids(lab) - before
    stop(sweep.pid)
    exit_code, out, err = _finish(sweep)
    if code is not None:
        assert exit_code == code, out + err
        assert "stopped by" in err and "WorkerDied" not in out + err, out + err
    _wait_for(lambda: not _session_processes(sweep.pid), f"the pool to end ({name})", 10)
    _wait_for(lambda: not [p for p in simulators if _alive(p)], f"the simulators to end ({name})",
              10)


def _recovers(lab: Path, path: Path) -> None:
    """With the simulator fast again, the next sweep runs what is missing, by itself."""
    (lab / "experiments" / "SLOW").unlink()
    code, out, err = _sweep(path)
    assert code == 0, out + err
    assert "sleepy: ran 4 partitions in 2 run(s); 4 wanted in all." in out, out + err


@pytest.mark.slow
def test_whatever_stops_a_sweep_nothing_it_started_is_left_and_the_next_sweep_recovers(lab):
    path = _sleepy(lab)
    _stop_mid_batch(lab, path, "ctrl-c", lambda pid: os.killpg(pid, signal.SIGINT), 130)
    # to every process of the group, as systemd stops a service: the workers and the fork server
    # die of it too, which is no partition's fault
    _stop_mid_batch(lab, path, "sigterm", lambda pid: os.killpg(pid, signal.SIGTERM), 143)
    _stop_mid_batch(lab, path, "kill-9", lambda pid: os.killpg(pid, signal.SIGKILL))
    # the main process only, as the OOM killer does
    _stop_mid_batch(lab, path, "oom", lambda pid: os.kill(pid, signal.SIGKILL))
    _recovers(lab, path)
