"""Faults of `simlab` commands, injected as they happen in life, then the ordinary command works.

- A sweep stopped (SIGINT) just as one of its two overlapping runs succeeds: that run keeps
  SUCCESS (it was marked CANCELING, then CANCELED).
- A DuckDB file held open for writing by another process (a DuckDB shell, a notebook):
  `simlab query` and a sweep's summary say so in one line naming the holder's PID, with no
  traceback and no false "summary rebuilt"; once it is closed, the same commands work.
- `simlab query` runs under a time and a memory limit (defaults, flags to change them).

Every command here is a real `simlab` process (or the CLI in-process where only its output
matters) on a real SQLite instance and DuckDB file, with real signals.
"""

import os
import re
import signal
import sys
import textwrap

import dagster as dg
from dagster._core.events import DagsterEventType
from test_reliability_runs import (
    UNFINISHED,
    _assert_exact,
    _finish,
    _start,
    _sweep,
    _wait_for,
)

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
    sweep = _start(path, env=env, name="stopped")
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

    first = _wait_for(first_run_simulated, "the first run to write its files", process=sweep)
    os.killpg(sweep.pid, signal.SIGINT)
    code, out, err = _finish(sweep)
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
    code, out, err = _sweep(path)
    assert code == 0, out + err
    assert instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)) == []
    _assert_exact(lab, path)
