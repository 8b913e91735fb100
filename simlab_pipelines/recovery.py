"""What a sweep finds left behind by processes that died, and how two sweeps keep out of each other's way.

- **Dead runs.** A run killed with its process (kill -9, OOM, a closed laptop) stays STARTED in the
  instance forever and keeps its slots: the run queue's, and the ``simlab_duckdb`` pool's when the
  summary step was running. ``simlab sweep`` tags the runs it starts with its process (``simlab/pid``,
  ``simlab/host``: host name and boot id, ``simlab/process_started``: the kernel's start time of the
  process, so a reused pid is not taken for the run's process). ``recover`` marks runs whose process
  is gone failed (canceled if they were canceling), frees their slots, and frees slots still held by
  runs that ended. Runs launched by others are judged on an instance with SQLite run storage and the
  DefaultRunLauncher only (one machine, processes of this host), from the pid Dagster records when it
  starts a run's process; on PostgreSQL or Kubernetes the daemon's run monitoring does it
  (dagster.yaml, the Helm chart). The same judgement runs from the daemon side too: the
  ``dead_runs`` sensor (``sensors.py``) calls ``recover`` every 30 s under ``dagster dev``, so a
  killed sweep's runs no longer hold the run queue until the next sweep.
- **A slot held by a live run** (another sweep's summary): ``wait_for_pool`` says which run holds it
  and waits, instead of entering the run, whose executor would poll the pool in a busy loop
  (Dagster 1.13's ``interval_to_next_pending_claim_check`` is never positive) and not see signals.
- **One sweep at a time per experiment and instance**: ``sweep_lock``, an ``fcntl`` lock on a file
  in DAGSTER_HOME (in the temporary directory where that is read-only); the kernel releases it
  when its process dies, however it dies.
"""

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from simlab_pipelines.instance import lock_directory

PID_TAG = "simlab/pid"
HOST_TAG = "simlab/host"
STARTED_TAG = "simlab/process_started"

# Runs whose process may be gone: not yet started, running, or asked to cancel.
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def host_id() -> str:
    """This machine as the tags name it: host name and, on Linux, the boot id (pids restart at
    every boot)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def process_started(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot), None when there is no
    such process; "" where /proc is not available (any live pid then counts as the same process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _exists(pid)
    # Field 22, counted after the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def _exists(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def process_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it executes itself."""
    pid = os.getpid()
    return {PID_TAG: str(pid), HOST_TAG: host_id(), STARTED_TAG: process_started(pid) or ""}


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class DeadRun:
    run: dg.DagsterRun
    reason: str


def _launched_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[int, float] | None:
    """The pid Dagster recorded when it started the run's process, and when."""
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        pid = event.engine_event_data.metadata.get("pid") if event.engine_event_data else None
        if pid is not None and record.message.startswith("Started process for run"):
            return int(pid.value), record.timestamp
    return None


def _judges_other_runs(instance: dg.DagsterInstance) -> bool:
    # One machine by construction: a SQLite instance whose runs are processes of this host.
    return (isinstance(instance.run_storage, SqliteRunStorage)
            and isinstance(instance.run_launcher, DefaultRunLauncher))


def _dead(instance: dg.DagsterInstance, run: dg.DagsterRun, here: str,
          judge_others: bool) -> str | None:
    tags = run.tags
    if PID_TAG in tags:
        if tags.get(HOST_TAG) != here:
            return None  # another machine's sweep: not ours to judge
        started = process_started(int(tags[PID_TAG]))
        if started is not None and (started == tags.get(STARTED_TAG) or started == ""):
            return None
        return f"its process (simlab sweep, pid {tags[PID_TAG]}) is gone"
    if not judge_others:
        return None
    launched = _launched_pid(instance, run)
    if launched is None:
        return None  # never started a process: the queue and run monitoring deal with it
    pid, at = launched
    started = process_started(pid)
    if started == "":
        return None
    boot = _boot_time()
    if started is not None and boot is not None and boot + int(started) / _CLOCK_TICKS <= at + 2:
        return None  # the process that started the run (a newer one would have a reused pid)
    return f"its process (pid {pid}) is gone"


def find_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Unfinished runs of this instance whose process is gone (see the module docstring)."""
    here, judge_others = host_id(), _judges_other_runs(instance)
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED)):
        reason = _dead(instance, run, here, judge_others)
        if reason is not None:
            dead.append(DeadRun(run, reason))
    return dead


def recover(instance: dg.DagsterInstance, by: str = "simlab sweep") -> list[str]:
    """Fail the dead runs, free their slots and the slots of ended runs; one line for each.
    ``by`` says who did it, in the runs' event logs."""
    lines = []
    storage = instance.event_log_storage
    for dead in find_dead_runs(instance):
        run = instance.get_run_by_id(dead.run.run_id)
        if run is None or run.status not in _UNFINISHED:
            continue  # it ended meanwhile
        message = f"Marked failed by {by}: {dead.reason}."
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message.replace("failed", "canceled"))
        else:
            instance.report_run_failed(run, message)
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slots_for_run(run.run_id)
        verb = "canceled" if run.status == dg.DagsterRunStatus.CANCELING else "failed"
        lines.append(f"run {run.run_id} ({run.job_name}, {run.status.value}) marked {verb}: "
                     f"{dead.reason}; its slots are freed")
    if storage.supports_global_concurrency_limits:
        for run_id in sorted(storage.get_concurrency_run_ids() | _slot_holders(storage)):
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
                state = run.status.value if run else "deleted"
                lines.append(f"freed the pool slots still held by run {run_id} ({state})")
    return lines


def _slot_holders(storage) -> set[str]:
    keys = storage.get_concurrency_keys()
    return {slot.run_id for info in storage.get_concurrency_infos(list(keys)).values()
            for slot in info.claimed_slots}


def pool_holders(instance: dg.DagsterInstance, pool: str) -> list[str] | None:
    """The runs holding every slot of ``pool``, or None when a slot is free (or no limit)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or pool not in storage.get_concurrency_keys():
        return None
    info = storage.get_concurrency_info(pool)
    holders = [slot.run_id for slot in info.claimed_slots]
    return holders if info.slot_count and len(holders) >= info.slot_count else None


def wait_for_pool(instance: dg.DagsterInstance, pool: str, announce: Callable[[str], None],
                  stopped: Callable[[], bool], poll_seconds: float = 1.0) -> None:
    """Return when ``pool`` has a free slot, saying once which run holds it; dead holders are
    recovered on the way. Returns early when ``stopped()``."""
    said: set[str] = set()
    while not stopped():
        holders = pool_holders(instance, pool)
        if holders is None:
            return
        for line in recover(instance):
            announce(line)
        holders = pool_holders(instance, pool)
        if holders is None:
            return
        for run_id in holders:
            if run_id not in said:
                run = instance.get_run_by_id(run_id)
                what = f"{run.job_name}, {run.status.value}" if run else "unknown run"
                announce(f"waiting for the {pool} pool: its slot is held by run {run_id} "
                         f"({what})")
                said.add(run_id)
        time.sleep(poll_seconds)


@contextmanager
def sweep_lock(instance: dg.DagsterInstance, experiment: str,
               announce: Callable[[str], None], stopped: Callable[[], bool]
               ) -> Iterator[bool]:
    """Hold the one-sweep-at-a-time lock of ``experiment`` on this instance; waits (saying so)
    while another process holds it. Yields False when ``stopped()`` while waiting."""
    path = lock_directory(instance.root_directory) / f"sweep-{experiment}.lock"
    with open(path, "a+") as handle:
        said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stopped():
                    yield False
                    return
                if not said:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    announce(f"{experiment}: another simlab sweep of it is running ({holder}); "
                             "waiting for it to finish")
                    said = True
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield True
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
