"""Faults met under `dagster dev` (the UI and its daemon), injected as they happen in life; then
the daemon by itself recovers.

One `dagster dev` session (it costs ~30 s of CPU) on a lab whose experiments directory holds the
tiny experiment:

- item 1: a sweep of another experiment is killed (kill -9 of its process group) while two of
  its runs overlap: they stay STARTED and hold both run slots, so every queued run waits. With
  only `dagster dev` running, the `dead_runs` sensor fails them (saying why) and frees the
  slots: the queued runs then run.
"""

import os
import signal
import time
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.events import DagsterEventType
from lab import dagster_server, free_port
from test_reliability_runs import TIMEOUT, _finish, _start, _wait_for

BIN = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" if os.environ.get("VIRTUAL_ENV") else None


def _bin(name: str) -> str:
    import sys

    return str(Path(sys.executable).with_name(name))


def _killed_sweep(lab: Path, instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """A sweep of an experiment outside the experiments directory (simulations of ~0.3 s, four
    runs of 3), killed with its process group once two of its runs are STARTED at once."""
    spec = yaml.safe_load((lab / "experiments" / "tiny_mmck.yaml").read_text())
    del spec["parameters"]["arrival_rate"]
    spec.update(name="killed_mmck", horizon=40000, replications=3)
    spec["factors"]["arrival_rate"] = [0.7, 0.8]
    spec["baseline"]["arrival_rate"] = 0.7
    (lab / "other").mkdir()
    path = lab / "other" / "killed_mmck.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep = _start(path, name="killed")

    def two_started():
        runs = instance.get_runs(filters=dg.RunsFilter(
            job_name="killed_mmck_replications", statuses=[dg.DagsterRunStatus.STARTED]))
        return runs if len(runs) == 2 else None

    _wait_for(two_started, "two of the sweep's runs to overlap", process=sweep)
    os.killpg(sweep.pid, signal.SIGKILL)
    _finish(sweep)
    dead = instance.get_runs(filters=dg.RunsFilter(job_name="killed_mmck_replications",
                                                   statuses=[dg.DagsterRunStatus.STARTED]))
    assert len(dead) == 2  # the fault: they hold both run slots (max_concurrent_runs: 2)
    return dead


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str | None:
    records = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    return records[-1].message if records else None


def test_dagster_dev_alone_recovers_from_a_killed_sweep(lab):
    instance = dg.DagsterInstance.get()
    dead = _killed_sweep(lab, instance)

    port = free_port()
    with dagster_server([_bin("dagster"), "dev", "-m", "simlab_pipelines.definitions",
                         "-h", "127.0.0.1", "-p", str(port)], port, lab / "dagster_dev.log",
                        timeout=180):
        up = time.monotonic()
        # Item 1: the dead runs fail by the daemon alone, within a minute or two, saying why.
        for run in dead:
            message = _wait_for(lambda run=run: _failure_message(instance, run.run_id),
                                "the dead run to be failed", timeout=120)
            assert message.startswith("Marked failed by the dead_runs sensor: its process "
                                      f"(simlab sweep, pid {run.tags['simlab/pid']}) is gone")
        recovered = time.monotonic() - up
        # ... and the queued runs proceed: the file sensor's runs of the tiny experiment.
        key = dg.AssetKey(["tiny_mmck", "replications"])
        _wait_for(lambda: len(instance.get_materialized_partitions(key)) == 12,
                  "the tiny experiment's runs to land", timeout=TIMEOUT)
    assert recovered < 90
