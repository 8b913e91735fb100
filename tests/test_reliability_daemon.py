"""Faults met under `dagster dev` (the UI and its daemon), injected as they happen in life; then
the daemon by itself recovers.

One `dagster dev` session (it costs ~30 s of CPU) on a lab whose experiments directory holds the
tiny experiment and an experiment whose plug-in model hangs at import:

- a plug-in whose import hangs took the code location down (`dagster dev` gave up after 180 s,
  every experiment unavailable): now it rejects its own experiment only, with the reason;
- runs queued by hand for the tiny experiment's partitions (no daemon yet), then a sweep does
  those partitions: when the queued runs start later they leave them out (done since they were
  queued), so nothing runs twice and DuckDB's run ids agree with Dagster's;
- a sweep of another experiment is killed (kill -9 of its process group) while two of its runs
  overlap: they stay STARTED and hold both run slots, so every queued run waits. With only
  `dagster dev` running, the `dead_runs` sensor fails them (saying why) and frees the slots: the
  queued runs then run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.events import DagsterEventType
from lab import dagster_server, free_port, sweep
from test_reliability_runs import TIMEOUT, _finish, _start, _wait_for

from engine.registry import IMPORT_TIMEOUT_VARIABLE
from simlab_pipelines.assets import experiment_assets
from simlab_pipelines.experiments import load_experiment

TINY = dg.AssetKey(["tiny_mmck", "replications"])


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _hanging_plugin(experiments: Path) -> None:
    """An experiment whose model is a plug-in module that sleeps for an hour at import."""
    (experiments / "hangs.py").write_text("import time\n\ntime.sleep(3600)\n")
    spec = yaml.safe_load((experiments / "tiny_mmck.yaml").read_text())
    spec.update(name="hanging_plugin", model="hangs:MODEL")
    (experiments / "hanging_plugin.yaml").write_text(yaml.safe_dump(spec))


def _queue_by_hand(lab: Path) -> str:
    """A run of every partition of the tiny experiment, launched as `dagster job launch` does
    (QUEUED: no daemon yet); its id."""
    keys = experiment_assets(load_experiment(lab / "experiments" / "tiny_mmck.yaml"))[1] \
        .partitions_def.get_partition_keys()
    tags = {"dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1]}
    done = subprocess.run([_bin("dagster"), "job", "launch", "-m", "simlab_pipelines.definitions",
                           "-j", "tiny_mmck_replications", "--tags", json.dumps(tags)],
                          cwd=lab, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    queued = dg.DagsterInstance.get().get_runs(filters=dg.RunsFilter(
        job_name="tiny_mmck_replications", statuses=[dg.DagsterRunStatus.QUEUED]))
    assert len(queued) == 1
    return queued[0].run_id


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


def _rejection(instance: dg.DagsterInstance, name: str) -> str | None:
    """The reasons of the failed ``valid_experiment_file`` check of a rejected file, if any."""
    key = dg.AssetCheckKey(dg.AssetKey(["rejected_experiments", name]), "valid_experiment_file")
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    if not records or records[0].event is None:
        return None
    evaluation = records[0].event.dagster_event.event_specific_data
    return " ".join(str(row.data) for row in evaluation.metadata["errors"].records) \
        if evaluation else None


@pytest.mark.slow
def test_dagster_dev_alone_recovers_from_a_killed_sweep(lab, monkeypatch):
    monkeypatch.setenv(IMPORT_TIMEOUT_VARIABLE, "3")  # the default 30 s, shortened for the test
    _hanging_plugin(lab / "experiments")
    instance = dg.DagsterInstance.get()
    queued = _queue_by_hand(lab)
    assert "ran 12 partitions in 1 run(s)" in sweep(lab / "experiments" / "tiny_mmck.yaml",
                                                    "--workers", "1", "--batch-size", "12")
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
        # ... and the queued run proceeds; it leaves out what the sweep did since it was queued.
        _wait_for(lambda: instance.get_run_by_id(queued).status == dg.DagsterRunStatus.SUCCESS,
                  "the queued run to succeed", timeout=TIMEOUT)
        # The hanging plug-in rejects its own experiment, with the reason (the file sensor's
        # check), and nothing else: the UI came up and the other runs ran.
        reason = _wait_for(lambda: _rejection(instance, "hanging_plugin"),
                           "the hanging plug-in's rejection", timeout=120)
        assert "model 'hangs:MODEL'" in reason and "did not finish within 3 s" in reason
    assert recovered < 90
    left = [record.message for record in instance.all_logs(queued) if "left out" in record.message]
    assert left and "12 of this run's 12 partitions left out" in left[0], left
    assert "since this run was created" in left[0]
    # Each partition ran once, and DuckDB's run ids are Dagster's.
    records = instance.fetch_materializations(dg.AssetRecordsFilter(TINY), limit=1000).records
    assert Counter(Counter(r.partition_key for r in records).values()) == {1: 12}
    latest = {r.partition_key: r.run_id for r in records}
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        stored = dict(con.execute("SELECT partition_key, dagster_run_id FROM replications "
                                  "WHERE experiment = 'tiny_mmck'").fetchall())
    assert stored == latest
