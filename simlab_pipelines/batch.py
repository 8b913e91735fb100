"""One run's simulations: spread over a process pool, each written to its own Parquet file.

``run_task`` is what a pool worker does for one partition: simulate inside a ``simlab.simulation``
span (child of the run's batch span, whose W3C traceparent travels with the task), then write the
replication file. ``execute`` drives a whole batch from the run process and yields one
``Outcome`` per partition, as results arrive. A simulation that raises fails only its own partition.

A worker that dies (a plug-in calling ``os._exit``, a segfault in native code, the OOM killer)
breaks a ``ProcessPoolExecutor`` for good. Workers mark each partition they start and finish on a
``Board`` (one int64 per task in a file both sides map: two stores per partition, nothing for the
run process to read unless a worker dies). When the pool breaks, the partitions that were running
in a worker that died on its own (not one the pool then stopped) fail, named with its exit status
or signal; the other unfinished ones run again on a new pool, in the same batch.

A pool lives as long as the step that made it, and never longer than the process that made it
(its workers watch that process and exit when it is gone, and with them the fork server and the
resource tracker): every process it started (workers) is gone when the step ends, so a run process
(``dagster api execute_run``, a run pod, a run of ``dagster dev``) exits with its run.
``simlab sweep`` runs many runs in one process and keeps one pool across them
(``keep_pools``), shut when the sweep ends. ``cancel`` (a sweep's Ctrl-C or SIGTERM) kills the
workers: the step in progress fails (not retried) within moments.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import select
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

import engine
from engine import command
from engine.registry import ModelRef
from simlab_pipelines import pool_server, simulate, telemetry
from simlab_pipelines.storage import (
    SCHEMA_COLUMNS,
    CorruptResultFile,
    ResultStore,
    replication_row,
    stem,
    storage_options,
)

log = logging.getLogger("simlab.batch")


@dataclass(frozen=True)
class Ahead:
    """A simulation run before any run held its partition (a sweep's head start, ``ahead.py``):
    its result, when it started, and its run at twice the horizon (JSON) if it needs one."""

    started_at: datetime
    result: engine.SimulationResult
    doubled: str | None


@dataclass(frozen=True)
class Task:
    """Everything a worker needs to run and record one partition (picklable)."""

    experiment: str
    config_key: str
    replication: int
    partition_key: str
    model: str
    params: dict[str, Any]
    seed: int
    horizon: float
    warmup: float
    common_random_numbers: bool
    series_interval: float | None
    inputs_hash: str
    code_version: str
    run_id: str
    results_uri: str
    traceparent: str | None
    # Wall-time limit of one simulation, the experiment's timeout_seconds (None: no limit). For a
    # Python model engine.simulate(timeout_seconds=...) stops it; for a command-line simulator it
    # is the default of its own model.timeout (simlab_pipelines/simulate.py, issue 10).
    timeout_seconds: float | None = None
    # A plug-in or command-line simulator: how the worker finds it (None: ``model`` is the name).
    model_ref: ModelRef | None = None
    # A block partition holds replications ``replication`` .. ``last_replication`` (None: one).
    last_replication: int | None = None
    # Replications 0 .. n-1 of every configuration also run at twice the horizon (the
    # steady-state check of a model that records no series; spec.doubling_sample).
    horizon_doubling: int = 0
    # Its simulation, already run (``simulate_ahead``): the worker records it, simulating nothing.
    ahead: Ahead | None = None

    @property
    def last(self) -> int:
        return self.replication if self.last_replication is None else self.last_replication


@dataclass(frozen=True)
class Outcome:
    """What a worker reports back: the stored row, or the error. A block's outcome has all its
    rows in ``rows`` (``row`` is the first), and ``error`` names its failed replications, whose
    (replication, error) are in ``failed``: its file holds the others."""

    task: Task
    row: dict[str, Any] | None
    path: str | None
    error: str | None = None
    traceback: str | None = None
    trace_id: str | None = None
    # The written file's (size, mtime_ns, inode) on a local disk (None in an object store): lets
    # the summary's manifest trust ``row`` without reading the file back (manifest.record_run).
    identity: tuple[int, int, int] | None = None
    rows: tuple[dict[str, Any], ...] = ()
    failed: tuple[tuple[int, str], ...] = ()
    simulated: int = 1  # simulations run for it (a re-run block runs only what it lacks)
    # ``data_version`` of its rows, computed in the worker: the run process has one thread for
    # every partition's bookkeeping, the workers are many.
    content_hash: str | None = None

    @property
    def all_rows(self) -> tuple[dict[str, Any], ...]:
        """Every row its file holds (a block's, or the one row)."""
        return self.rows or ((self.row,) if self.row is not None else ())


def spec_tasks(spec: Any, partitions: Iterable[tuple[str, str, int, int]],
               configurations: Mapping[str, Any], *, run_id: str, results_uri: str,
               traceparent: str | None) -> list[Task]:
    """The tasks of an experiment's partitions, each given as (partition key, configuration key,
    first, last replication): ``spec`` an ``ExperimentSpec``, ``configurations`` its
    configurations by key (holding every one named)."""
    hashes: dict[str, str] = {}  # one inputs hash per configuration, not per partition
    doubling = spec.doubling_sample  # (reads every metric's kind: once, not per partition)
    tasks = []
    for key, config_key, first, last in partitions:
        if config_key not in hashes:
            hashes[config_key] = spec.inputs_hash(configurations[config_key])
        tasks.append(Task(
            experiment=spec.name, config_key=config_key, replication=first, partition_key=key,
            model=spec.model_name, params=configurations[config_key].params, seed=spec.seed,
            horizon=spec.resolved_horizon, warmup=spec.resolved_warmup,
            common_random_numbers=spec.common_random_numbers,
            series_interval=spec.series_interval, inputs_hash=hashes[config_key],
            code_version=spec.code_version, run_id=run_id, results_uri=results_uri,
            traceparent=traceparent, model_ref=spec.model_ref,
            timeout_seconds=spec.timeout_seconds,
            last_replication=last if last != first else None, horizon_doubling=doubling,
        ))
    return tasks


def _store(uri: str) -> ResultStore:
    # keyed by the object store's options too (AWS_ENDPOINT_URL...): a process whose
    # environment changes (a test, a notebook) does not keep writing to the old endpoint
    return _cached_store(uri, json.dumps(storage_options(), sort_keys=True))


@functools.lru_cache(maxsize=8)
def _cached_store(uri: str, options: str) -> ResultStore:
    return ResultStore(uri)


def _simulate_one(task: Task, prepared: engine.Simulation | None = None
                  ) -> tuple[dict[str, Any] | None, str | None, str | None, str | None]:
    """One simulation, replication ``task.replication``, in its own span: (row, None, None,
    trace id) or (None, error, traceback, trace id). ``prepared``: its block's
    ``simulate.prepare``."""
    started_at = datetime.now(UTC)
    def attributes() -> dict[str, Any]:  # only for a span that is recorded
        return telemetry.simulation_attributes(
            experiment=task.experiment, config_key=task.config_key,
            replication=task.replication, seed_entropy=task.seed,
            spawn_key=engine.spawn_key(task.model, task.params, task.replication,
                                       task.common_random_numbers),
            model=task.model, params=task.params, engine_version=engine.ENGINE_VERSION,
            run_id=task.run_id, partition_key=task.partition_key,
            simulated_ahead=task.ahead is not None,
        )

    span = None
    ahead = task.ahead
    try:
        with telemetry.attach_traceparent(task.traceparent), \
                telemetry.simulation_span(attributes) as span:
            if ahead is None:
                result = simulate.simulate(task, span, prepared)  # by name, ModelRef or command
            else:
                started_at, result = ahead.started_at, ahead.result
            span.warmup_end(result.warmup)
            span.run_end(result.warmup + result.horizon, result.events)
            doubled = None
            if task.replication < task.horizon_doubling:
                doubled = ahead.doubled if ahead is not None else doubled_run(task, span)
    except Exception as exc:
        return (None, f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                span.trace_id if span is not None else None)
    row = replication_row(
        experiment=task.experiment, config_key=task.config_key, partition_key=task.partition_key,
        result=_record(result), code_version=task.code_version, run_id=task.run_id,
        trace_id=span.trace_id, span_id=span.span_id, started_at=started_at,
        inputs_hash=task.inputs_hash, double_horizon=doubled,
    )
    return row, None, None, span.trace_id


def doubled_run(task: Task, span: telemetry.SpanInfo) -> str:
    """The JSON of ``task``'s replication run again at twice the horizon (same seed, streams and
    warm-up; twice the time limit) for the horizon-doubling steady-state check: its horizon and
    metrics, or why it failed. Its failure leaves the check untested for it and fails nothing
    else: the replication's own result stands."""
    long = dataclasses.replace(task, horizon=2 * task.horizon, timeout_seconds=(
        2 * task.timeout_seconds if task.timeout_seconds is not None else None))
    try:
        result = simulate.simulate(long, span)
    except Exception as exc:
        log.warning("%s %s: the run at twice the horizon failed (the steady-state check leaves "
                    "it out): %s: %s", task.experiment, task.partition_key, type(exc).__name__,
                    exc)
        return json.dumps({"horizon": long.horizon,
                           "error": f"{type(exc).__name__}: {exc}"[:1000]})
    return json.dumps({"horizon": long.horizon,
                       "metrics": {k: float(v) for k, v in result.metrics.items()}},
                      sort_keys=True)


def _record(result: engine.SimulationResult) -> dict[str, Any]:
    """``result.to_dict()`` without its deep copy (dataclasses.asdict: 14% of a short
    simulation's worker time): replication_row only reads it."""
    if not isinstance(result, engine.SimulationResult):
        return result.to_dict()
    return {"model": result.model, "params": result.params, "replication": result.replication,
            "seed": {"entropy": result.seed.entropy, "spawn_key": list(result.seed.spawn_key)},
            "horizon": result.horizon, "warmup": result.warmup, "metrics": result.metrics,
            "events": result.events, "wall_seconds": result.wall_seconds,
            "engine_version": result.engine_version, "series": result.series}


def simulate_ahead(task: Task) -> Ahead | None:
    """Run ``task``'s simulation before a run holds its partition (a sweep's head start, in a
    pool worker; not a command-line simulator, which needs its span): the result only, kept
    until a run takes it over (``execute``) and records it with its own run id and span. None
    when it fails: the run then simulates it again and records the failure as usual."""
    started_at = datetime.now(UTC)
    try:
        result = simulate.simulate(task, None)  # type: ignore[arg-type]
        doubled = (doubled_run(task, None) if  # type: ignore[arg-type]
                   task.replication < task.horizon_doubling else None)
    except Exception:
        return None
    return Ahead(started_at, result, doubled)


def run_task(task: Task) -> Outcome:
    """Simulate one partition and write its replication file (runs in a pool worker): one
    replication, or a block's (``run_block``)."""
    if task.last != task.replication:
        return run_block(task)
    row, error, trace, trace_id = _simulate_one(task)
    if row is None:
        return Outcome(task, None, None, error, trace, trace_id)
    # A storage error is not the simulation's fault: it propagates, and the step is retried.
    path, identity = _store(task.results_uri).write_identified(row)
    return Outcome(task, row, path, identity=identity, content_hash=data_version(row))


def _kept_rows(store: ResultStore, task: Task, name: str) -> dict[int, dict[str, Any]]:
    """The rows a previous attempt at this block left in its file that still hold (made from
    the task's inputs): a re-run simulates only the others."""
    try:
        frame = store.read(task.experiment, task.config_key, name)
    except CorruptResultFile:  # overwritten below with what this attempt simulates
        return {}
    if frame is None or "inputs_hash" not in frame.columns:
        return {}
    frame = frame.filter((pl.col("inputs_hash") == task.inputs_hash)
                         & pl.col("replication").is_between(task.replication, task.last))
    return {int(row["replication"]): {k: row.get(k) for k in SCHEMA_COLUMNS}
            for row in frame.to_dicts()}


def run_block(task: Task) -> Outcome:
    """Replications ``task.replication`` .. ``task.last`` of one configuration, each in its own
    span with its own seed, spawn key and row (as if each were its own partition), written as
    one file. A replication that fails does not stop the others: the file holds every row that
    succeeded, and the outcome names the failed ones."""
    store = _store(task.results_uri)
    name = stem(task.replication, task.last)
    rows = _kept_rows(store, task, name)
    failed: list[tuple[int, str]] = []
    first_failure: tuple[str | None, str | None] = (None, None)
    simulated = 0
    try:  # the model and its parameters checked once for the block
        prepared = simulate.prepare(task)
    except Exception:  # then each replication fails with it, in its own span, as on its own
        prepared = None
    for replication in range(task.replication, task.last + 1):
        if replication in rows:
            continue
        simulated += 1
        row, error, trace, trace_id = _simulate_one(dataclasses.replace(
            task, replication=replication, last_replication=None), prepared)
        if row is None:
            failed.append((replication, error or "failed"))
            if first_failure[0] is None:
                first_failure = (trace, trace_id)
            continue
        rows[replication] = row
    ordered = tuple(rows[r] for r in sorted(rows))
    path = identity = None
    if ordered:  # also when nothing was simulated: the file then holds the same rows again
        path, identity = store.write_rows(ordered, name)
    error = None
    if failed:
        error = "; ".join(f"replication {r}: {why}" for r, why in failed[:5]) + (
            f" (and {len(failed) - 5} more)" if len(failed) > 5 else "")
        error = f"{len(failed)} of {task.last - task.replication + 1} replications failed: " + error
    return Outcome(task, ordered[0] if ordered else None, path, error, first_failure[0],
                   first_failure[1], identity, rows=ordered, failed=tuple(failed),
                   simulated=simulated, content_hash=data_version(ordered) if ordered else None)


def run_tasks(tasks: Sequence[Task], board: str | None = None,
              indexes: Sequence[int] = ()) -> list[Outcome]:
    """Several partitions in one pool task (each as ``run_task``: its own span, file, error),
    each marked started and done on the ``board`` (a ``Board``'s path) at its index."""
    marks = None
    if board is not None:
        with suppress(OSError):  # gone (another host's clean-up?): run it unmarked
            marks = _board_view(board)
    if marks is None:
        return [run_task(task) for task in tasks]
    pid = os.getpid()
    outcomes = []
    for task, index in zip(tasks, indexes, strict=True):
        marks[index] = pid
        outcomes.append(run_task(task))
        marks[index] = -pid
    return outcomes


class Board:
    """Which pool worker runs which of a batch's tasks: one int64 per task in a small file that
    the run process and the workers map: 0 not started, ``pid`` while worker ``pid`` runs it,
    ``-pid`` once it is done. Read only when a worker dies."""

    PREFIX = "simlab-board-"

    def __init__(self, size: int) -> None:
        directory = tempfile.gettempdir()
        _remove_orphans(directory, self.PREFIX)
        self.path: str | None = os.path.join(
            directory, f"{self.PREFIX}{os.getpid()}_{uuid.uuid4().hex}_{socket.gethostname()}")
        self._map: mmap.mmap | bytearray
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, 8 * max(1, size))
                self._map = mmap.mmap(fd, 8 * max(1, size))
            finally:
                os.close(fd)
        except OSError:  # no writable temporary directory: a dead worker's partitions are
            self.path = None  # then not told apart, all its pool's unfinished ones run again
            self._map = bytearray(8 * max(1, size))
        self.marks = memoryview(self._map).cast("q")

    def clear(self, indexes: Sequence[int]) -> None:
        for index in indexes:
            self.marks[index] = 0

    def close(self) -> None:
        self.marks.release()
        if self.path is not None:
            self._map.close()  # type: ignore[union-attr]
            with suppress(FileNotFoundError):
                os.unlink(self.path)


def _remove_orphans(directory: str, prefix: str) -> None:
    """Remove the boards that run processes of this host left when they were killed."""
    host = socket.gethostname()
    with suppress(OSError):
        for name in os.listdir(directory):
            if not name.startswith(prefix):
                continue
            owner, _, rest = name[len(prefix):].partition("_")
            if (rest.partition("_")[2] == host and owner.isdigit()
                    and not _alive(int(owner))):
                with suppress(OSError):
                    os.unlink(os.path.join(directory, name))


@functools.lru_cache(maxsize=4)
def _board_view(path: str) -> memoryview:
    # A worker maps a batch's board once (its name is unique; the file is gone after the batch).
    with open(path, "r+b") as file:
        return memoryview(mmap.mmap(file.fileno(), 0)).cast("q")


def chunk_size(tasks: int, workers: int) -> int:
    """Partitions per pool task. A pool keeps only workers + 1 tasks queued for its workers and
    refills that queue from a thread of the run process, which competes for the interpreter
    with the run's own bookkeeping (metadata, events): a worker that finished a 5 ms
    simulation often waited for its next one. Chunks of up to 8 leave each worker a queue of
    work, while every worker still gets several chunks (an even end)."""
    return max(1, min(8, tasks // (workers * 4)))


def data_version(row: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """A content hash of a replication (or of a block's, in order): identical inputs and engine
    give the same version."""
    rows = [row] if isinstance(row, dict) else list(row)
    content = [{k: r[k] for k in ("params", "seed_entropy", "spawn_key", "horizon", "warmup",
                                  "engine_version", "metrics")} for r in rows]
    payload = content[0] if isinstance(row, dict) else content
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


# The pools of this process, by worker count and OTEL_* settings; forkserver, because forking a
# process with Dagster's threads is unsafe. The settings are passed to the workers (a fork server
# keeps the environment it started with) and are part of the key, so new settings get new workers.
# Outside ``keep_pools`` a pool is shut when the batch that made it ends.
_POOLS: dict[tuple, ProcessPoolExecutor] = {}
_LOCK = threading.Lock()
_KEEP = [0]  # depth of keep_pools()
_CANCELLED = threading.Event()


def _worker_initializer(owner: int, *initargs) -> None:
    # Ctrl-C reaches the terminal's whole process group; the run process decides what it means
    # (a sweep cancels, killing the workers). A worker must not die of it on its own, printing a
    # traceback and breaking the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with(owner)
    telemetry.pool_initializer(*initargs)


def _exit_with(owner: int) -> None:
    """End this worker when ``owner``, the process that made its pool, is gone however it ended
    (kill -9 of a sweep's main process, the OOM killer). Idle workers wait on a queue whose other
    end they hold themselves, and the fork server and the resource tracker wait for the workers:
    without this, all of them were left running for good."""
    try:
        handle = os.pidfd_open(owner)  # readable once it has exited (Linux 5.3+)
    except ProcessLookupError:
        os._exit(OWNER_GONE)
    except (AttributeError, OSError):
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while _alive(owner):
                time.sleep(1.0)
        os._exit(OWNER_GONE)  # its simulation (if any) is abandoned: the next sweep runs it

    threading.Thread(target=watch, name="simlab-owner-watch", daemon=True).start()


OWNER_GONE = 70  # a worker's exit status when the process that made its pool is gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _pool(workers: int) -> tuple[tuple, ProcessPoolExecutor]:
    _, service_name, otel = telemetry.worker_initargs()
    key = (workers, tuple(sorted(otel.items())))
    with _LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(pool_server.PRELOAD)
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                       initializer=_worker_initializer,
                                       initargs=(os.getpid(), None, service_name, otel))
            _POOLS[key] = pool
    return key, pool


def _drop(key: tuple, pool: ProcessPoolExecutor, wait: bool) -> None:
    with _LOCK:
        if _POOLS.get(key) is pool:
            del _POOLS[key]
    pool.shutdown(wait=wait, cancel_futures=True)


def shutdown_pools() -> None:
    """Stop the pools (and a head start); workers flush their spans on the way out."""
    forget_ahead()
    while True:
        with _LOCK:
            if not _POOLS:
                return
            _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


def stop_pools() -> None:
    """Stop the pools at once, killing workers still simulating: for a command that ends before
    its runs took over what it started (it failed or was interrupted during its start-up)."""
    forget_ahead()
    with _LOCK:
        pools = list(_POOLS.values())
    for pool in pools:
        _kill_workers(pool)
    shutdown_pools()


@contextmanager
def keep_pools() -> Iterator[None]:
    """Keep pools across the batches run inside this block (a sweep's runs, in one process), and
    shut them when it ends, however it ends: at once when it raised (``stop_pools``), since
    nothing will take over what they still simulate (a head start's guesses), which may take
    minutes."""
    _KEEP[0] += 1
    ended = False
    try:
        yield
        ended = True
    finally:
        _KEEP[0] -= 1
        if not _KEEP[0]:
            if ended:
                shutdown_pools()
            else:
                stop_pools()


def prestart(workers: int) -> None:
    """Start the pool a sweep's runs will use (``workers`` > 1) in the background, so that its
    fork server and workers import the engine while the first run is being set up (starting
    the fork server blocks the caller ~0.2 s)."""
    if workers < 2 or _CANCELLED.is_set():
        return
    _, pool = _pool(workers)

    def spawn() -> None:
        with suppress(RuntimeError):  # shut down meanwhile (the sweep ended early)
            for _ in range(workers):  # a worker is spawned per task queued while none is idle
                pool.submit(int)

    threading.Thread(target=spawn, name="simlab-pool-start", daemon=True).start()


# A sweep's head start (``ahead.py``): simulations run before a run holds them, by what they
# simulate (``_simulation``), until a run takes them over (``_adopt``) or the sweep ends.
_AHEAD: dict[tuple, Future] = {}
# The head start's next simulations, not handed to the pool yet (in order), and those of them a
# run took (``_adopt``), with their metrics once the run has them (None: failed).
_WAITING: dict[tuple, Task] = {}
_HANDED: dict[tuple, tuple[Task, dict[str, Any] | None]] = {}
_PENDING: dict[str, Any] = {}  # (a marker: not yet)
_AHEAD_LOCK = threading.Lock()
_AHEAD_STOP: list[threading.Event] = []  # the head start feeding the pool, if any


def _simulation(task: Task) -> tuple:
    """What a task's result depends on (not which run, partition key or file it goes to): a
    simulation run ahead is taken over only by a task equal in all of it."""
    return (task.experiment, task.config_key, task.replication, task.model, task.model_ref,
            task.inputs_hash, task.code_version, task.seed, task.horizon, task.warmup,
            task.common_random_numbers, task.series_interval, task.timeout_seconds,
            task.replication < task.horizon_doubling, task.last_replication)


# What a round of simulations run ahead gives the next: (task, its result's metrics) each.
Results = list[tuple[Task, dict[str, Any]]]


def run_ahead(tasks: Sequence[Task], workers: int,
              after: Callable[[Results], list[Task]] | None = None, hold: int = 1000) -> None:
    """Simulate ``tasks`` (single replications, not a command's) on the pool of ``workers``
    from now on, in order, until a run takes them over (``execute``):
    nothing is written; the run records each as if its worker had simulated it then.

    ``after``: once every task so far has its result (none failed), the tasks that follow from
    them (a sequential experiment's next round), fed on the same way; none ends the head start.
    A run that takes over only simulations run ahead lets it go on. At most ``hold`` results
    wait in memory for their run: the next waits for a run to take some over."""
    if workers < 2 or not tasks or _CANCELLED.is_set():
        return
    stop = threading.Event()
    with _AHEAD_LOCK:
        _stop_feeding()
        _AHEAD_STOP.append(stop)
        _WAITING.update((_simulation(task), task) for task in tasks)
    threading.Thread(target=_feed, args=(workers, stop, after, hold),
                     name="simlab-ahead", daemon=True).start()


def _feed(workers: int, stop: threading.Event, after: Callable[[Results], list[Task]] | None,
          hold: int) -> None:
    # Two a worker at a time: each worker has its next simulation queued (this thread waits for
    # the interpreter while the sweep imports), and few are left to wait for when a run takes
    # over (those queued behind the running ones run before the run's own).
    key, pool = _pool(workers)
    flying: set[Future] = set()
    this_round: list[tuple[Task, Future]] = []
    results: Results = []  # of the rounds before
    while not stop.is_set():
        while len(flying) < 2 * workers and len(_AHEAD) < hold:
            with _AHEAD_LOCK:
                if stop.is_set() or not _WAITING:
                    break
                simulation = next(iter(_WAITING))
                task = _WAITING.pop(simulation)
                try:
                    future = pool.submit(simulate_ahead, task)
                except RuntimeError:  # the pool was shut down or broke (the sweep ended)
                    return
                _AHEAD[simulation] = future
            flying.add(future)
            this_round.append((task, future))
        if flying:
            done, flying = wait(flying, timeout=0.05, return_when=FIRST_COMPLETED)  # (stop)
            if any(not f.cancelled() and isinstance(f.exception(), BrokenProcessPool)
                   for f in done):
                _drop(key, pool, wait=False)  # a worker died (a plug-in's doing)
                return
            continue
        with _AHEAD_LOCK:
            waiting = bool(_WAITING) or any(m is _PENDING for _, m in _HANDED.values())
            handed = list(_HANDED.values())
        if waiting:  # for ``hold`` results to be taken over, or a run's outcomes
            stop.wait(0.05)
            continue
        # The round is in: the next one follows from it, if it can be known.
        ended = [(task, _ahead_result(future)) for task, future in this_round]
        if after is None or any(result is None for _, result in ended) or any(
                metrics is None for _, metrics in handed):
            return
        results += [(task, result.result.metrics) for task, result in ended]  # type: ignore[union-attr]
        results += handed  # type: ignore[arg-type]
        this_round = []
        try:
            following = after(results)
        except Exception:  # a guess that cannot be made: the runs plan it themselves
            log.debug("no next round ahead", exc_info=True)
            return
        with _AHEAD_LOCK:
            _HANDED.clear()
            if stop.is_set() or not following:
                return
            _WAITING.update((_simulation(task), task) for task in following)


def _stop_feeding() -> None:
    """(holding _AHEAD_LOCK)"""
    while _AHEAD_STOP:
        _AHEAD_STOP.pop().set()
    _WAITING.clear()
    _HANDED.clear()


def forget_ahead() -> None:
    """End the head start: stop simulating ahead and drop what no run took over."""
    with _AHEAD_LOCK:
        _stop_feeding()
        futures = list(_AHEAD.values())
        _AHEAD.clear()
    for future in futures:
        future.cancel()


def _ahead_result(future: Future) -> Ahead | None:
    if future.cancelled() or future.exception() is not None:
        return None
    return future.result()


def _adopt(tasks: Sequence[Task]) -> tuple[Sequence[Task], dict[int, Future]]:
    """Take over the simulations run ahead for ``tasks``: those done come back in the tasks
    (``Task.ahead``: their worker only records them); those not done yet, by the task's index
    (the run records them when they end); the others, failed, are simulated again as usual.
    Those the head start had not handed to the pool yet, the run simulates itself, telling the
    head start their outcomes (``_HANDED``). The head start stops unless it had every one of
    ``tasks``: the runs go on from there."""
    with _AHEAD_LOCK:
        if not _AHEAD and not _WAITING:
            # Nothing to take over; a head start still planning its next round would simulate
            # these tasks again once it has: the runs go on from here.
            _stop_feeding()
            return tasks, {}
        found, handed = {}, 0
        for index, task in enumerate(tasks):
            simulation = _simulation(task)
            if (future := _AHEAD.pop(simulation, None)) is not None:
                found[index] = future
            elif (guessed := _WAITING.pop(simulation, None)) is not None:
                _HANDED[simulation] = (guessed, _PENDING)
                handed += 1
        if len(found) + handed < len(tasks):  # the runs go on from here
            _stop_feeding()
    if not found:
        return tasks, {}
    tasks = list(tasks)
    running: dict[int, Future] = {}
    for index, future in found.items():
        if future.done():
            ahead = _ahead_result(future)
            if ahead is not None:
                tasks[index] = dataclasses.replace(tasks[index], ahead=ahead)
        else:
            running[index] = future
    return tasks, running


def _handed_in(outcome: Outcome) -> None:
    """Tell the head start the outcome of one of its simulations a run took over (its
    metrics; None: it failed)."""
    with _AHEAD_LOCK:
        simulation = _simulation(outcome.task)
        if simulation in _HANDED:
            _HANDED[simulation] = (_HANDED[simulation][0],
                                   outcome.row["metrics"] if outcome.row is not None else None)


def _record_ahead(task: Task, future: Future) -> Outcome | None:
    """A task's simulation that was running ahead when its run took it over, recorded in this
    process once it ended (its file, span and row: a few ms); None when it failed or its worker
    died (the task then runs again, on the pool)."""
    ahead = _ahead_result(future)
    return None if ahead is None else run_task(dataclasses.replace(task, ahead=ahead))


_QUEUED = threading.local()


def on_queued(event: threading.Event) -> None:
    """Set ``event`` once a batch run later in this thread has queued all its simulations on a
    pool (a sweep then starts its next run: the pool never waits between runs)."""
    _QUEUED.event = event


def _queued() -> None:
    event = getattr(_QUEUED, "event", None)
    if event is not None:
        event.set()


def on_simulated(callback: Callable[[bool], None]) -> None:
    """Call ``callback(clean)`` once a batch run later in this thread has every simulation's
    outcome recorded (``clean``: none failed), before it writes its events: a sweep then plans
    its next round from the result files, so the pool does not wait for that bookkeeping."""
    _QUEUED.simulated = callback


def simulated(clean: bool) -> None:
    """Tell this thread's ``on_simulated`` callback, if any, that the batch's outcomes are in."""
    callback = getattr(_QUEUED, "simulated", None)
    if callback is not None:
        callback(clean)


def cancel() -> None:
    """Stop the batches in progress now (any thread; safe in a signal handler): kill the pool
    workers, so their batches fail at once, and the command-line simulators this process runs
    itself (a worker's are ended by its guardian when it dies: ``engine.command``);
    ``reset_cancel`` allows batches again."""
    _CANCELLED.set()
    for pool in list(_POOLS.values()):
        _kill_workers(pool)
    command.end_simulators()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with suppress(OSError, ValueError):  # already gone, or already closed
            process.kill()


def reset_cancel() -> None:
    _CANCELLED.clear()


def _interrupted(tasks_done: int, total: int) -> Exception:
    # A Failure that is not retried: Dagster retries an interrupted step under its retry policy,
    # and the run, being canceled, ends CANCELED. Imported here: pool workers never load Dagster.
    import dagster as dg

    return dg.Failure(description=f"batch cancelled after {tasks_done} of {total} simulations; "
                                  "the pool workers were stopped", allow_retries=False)


def execute(tasks: Sequence[Task], workers: int) -> Iterator[Outcome]:
    """Run ``tasks``, yielding one outcome each as they complete; in-process when one worker
    suffices (but for a Python plug-in's: ``_untrusted``). A pool worker that dies fails only
    the partitions it was running (see the module's docstring); the others are run again on a
    new pool."""
    try:
        for outcome in _execute(tasks, workers):
            if _HANDED:  # (a head start waits for the outcomes of its simulations a run took)
                _handed_in(outcome)
            yield outcome
    except BaseException:  # (stopped, or closed early): what it took will not be reported
        if _HANDED:
            with _AHEAD_LOCK:
                _stop_feeding()
        raise


def _execute(tasks: Sequence[Task], workers: int) -> Iterator[Outcome]:
    workers = max(1, min(workers, len(tasks)))
    if workers == 1 and not any(_untrusted(task) for task in tasks):
        yield from _execute_in_process(*_adopt(tasks))
        return
    if _CANCELLED.is_set():
        raise _interrupted(0, len(tasks))
    tasks, running = _adopt(tasks)  # simulations a sweep ran ahead for these tasks
    board = Board(len(tasks))
    try:
        todo = list(range(len(tasks)))
        blind = 0  # pool breaks in a row that no partition running in a dead worker explains
        while todo:
            if _CANCELLED.is_set():  # (adopted simulations ended with the workers killed)
                raise _interrupted(len(tasks) - len(todo), len(tasks))
            board.clear(todo)
            received: set[int] = set()
            casualties: list[int] = []
            for index, outcome in _pool_round(tasks, todo, workers, board, casualties, running):
                received.add(index)
                yield outcome
            running = {}  # one that failed runs again in the next round, like the others
            todo = [i for i in todo if i not in received]
            blind = 0 if casualties or not todo else blind + 1
            if blind > MAX_UNEXPLAINED_BREAKS:
                for index in todo:
                    yield Outcome(tasks[index], None, None, _NOT_RUN)
                return
    finally:
        board.close()


# How long a broken pool waits for a stop in progress to be told (the failure path only).
STOP_GRACE_SECONDS = 1.0
UNKNOWN_STATUS = 255  # what multiprocessing reports when the fork server cannot say

# Pool breaks in a row with no partition running in the dead worker (it died between two, or in
# its initializer) after which the remaining partitions are failed rather than tried again.
MAX_UNEXPLAINED_BREAKS = 2
_NOT_RUN = ("WorkerDied: not run: pool workers kept dying outside any simulation; the next "
            "sweep runs it again")


def _untrusted(task: Task) -> bool:
    """A Python plug-in's simulation: its code (a C extension's too) may kill the process that
    runs it, so it runs in a pool worker even when one suffices (the run process would die with
    it, naming nothing, and every later sweep would run it again, in-process, and die again). A
    built-in runs in-process then, and so does a command-line simulator (its own process)."""
    ref = task.model_ref
    return ref is not None and ref.command is None and ref.reference not in engine.MODELS


def _execute_in_process(tasks: Sequence[Task], running: Mapping[int, Future]
                        ) -> Iterator[Outcome]:
    telemetry.configure_tracing()
    for done, task in enumerate(tasks):
        if _CANCELLED.is_set():
            raise _interrupted(done, len(tasks))
        outcome = _record_ahead(task, running[done]) if done in running else None
        if outcome is None and _CANCELLED.is_set():  # (its worker was killed by the stop)
            raise _interrupted(done, len(tasks))
        yield outcome or run_task(task)


def _pool_round(tasks: Sequence[Task], todo: Sequence[int], workers: int, board: Board,
                casualties: list[int], running: Mapping[int, Future] | None = None
                ) -> Iterator[tuple[int, Outcome]]:
    """Run ``tasks[i]`` for ``i`` in ``todo`` on the pool, yielding ``(i, outcome)``; those in
    ``running`` (simulating ahead: ``_adopt``) are recorded here when they end. If a worker
    dies, yield what had arrived and a failure for each partition it was running (their indexes
    also in ``casualties``), drop the pool and return: the caller runs the rest again."""
    running = running or {}
    key, pool = _pool(workers)
    processes = getattr(pool, "_processes", None)  # the pool's own dict, filled as it goes
    if processes is None:
        processes = {}
    chunks: dict[Future, list[int]] = {}
    ahead: dict[Future, int] = {}
    received = 0
    broken = finished = False
    try:
        queued = [i for i in todo if i not in running]
        size = chunk_size(len(queued), workers)
        for start in range(0, len(queued), size):
            indexes = queued[start:start + size]
            chunk = [tasks[i] for i in indexes]
            chunks[pool.submit(run_tasks, chunk, board.path, indexes)] = indexes
        ahead.update({running[i]: i for i in todo if i in running})
        chunks.update({future: [index] for future, index in ahead.items()})
        _queued()
        for future in as_completed(chunks):
            if future in ahead:
                outcome = _record_ahead(tasks[ahead[future]], future)
                if outcome is not None:
                    yield ahead[future], outcome
                    received += 1
            else:
                for index, outcome in zip(chunks[future], future.result(), strict=True):
                    yield index, outcome
                    received += 1
            del chunks[future]  # (as_completed iterates its own copy)
        finished = True
    except BrokenProcessPool:
        # A worker died: this pool is unusable. Drop it so that the next round, and the sweep's
        # next run, start a fresh one.
        broken = True
        manager = getattr(pool, "_executor_manager_thread", None)  # (shutdown forgets it)
        _drop(key, pool, wait=False)
        # A stop that reached the workers too (SIGTERM to the whole process group, as systemd or
        # `kill -TERM -PGID` send it) can break the pool before the main thread's handler has
        # cancelled: the workers did not die of their partitions then.
        if _CANCELLED.wait(STOP_GRACE_SECONDS):
            raise _interrupted(len(tasks) - len(todo) + received, len(tasks)) from None
        for future, indexes in chunks.items():  # results that arrived with the break
            if future in ahead:  # (run again in the next round)
                continue
            if future.done() and not future.cancelled() and future.exception() is None:
                yield from zip(indexes, future.result(), strict=True)
        for index, outcome in _casualties(tasks, todo, board, manager, processes):
            casualties.append(index)
            yield index, outcome
    finally:
        for future in chunks:
            future.cancel()
        if not finished and not broken and any(f.running() for f in chunks):
            # The step was interrupted (SIGTERM of a run pod, a failure further up): simulations
            # still running would hold the step, and the pool, until they end.
            _drop(key, pool, wait=False)
            _kill_workers(pool)
            pool.shutdown(wait=True)
        elif not _KEEP[0] and not broken:
            # Nobody reuses it: the workers end with the step (waiting for them also flushes
            # their spans), so nothing outlives the run.
            _drop(key, pool, wait=True)


def _casualties(tasks: Sequence[Task], todo: Sequence[int], board: Board,
                manager: threading.Thread | None, processes: dict[int, Any]
                ) -> Iterator[tuple[int, Outcome]]:
    """A failed outcome for each partition that was running in a worker that died on its own."""
    # The pool's manager thread stops the other workers (SIGTERM) and joins them all: then
    # every worker's exit status is known.
    if manager is not None:
        manager.join(timeout=60)
    codes = {pid: process.exitcode for pid, process in list(processes.items())}
    if len(codes) > 1 and set(codes.values()) == {UNKNOWN_STATUS}:
        return  # the fork server, which reports the workers' statuses, is gone: none is known
    # A worker the pool stopped is sometimes reported with the unknown status instead of
    # -SIGTERM; while another worker's death is known, it is not blamed (its partition runs again,
    # and fails alone next time if it was its own death after all).
    explained = any(c not in (None, UNKNOWN_STATUS, -signal.SIGTERM) for c in codes.values())
    for index in todo:
        pid = board.marks[index]
        code = codes.get(pid) if pid > 0 else None
        if code is None or code == -signal.SIGTERM or (code == UNKNOWN_STATUS and explained):
            continue  # not started, done (its outcome lost with the pool), or stopped by the pool
        death = _death(pid, code)
        yield index, Outcome(tasks[index], None, None,
                             f"WorkerDied: {death} while simulating this partition",
                             f"(no traceback: {death}; the run process saw it go)")


def _death(pid: int, code: int) -> str:
    """How a pool worker ended, from its exit code."""
    if code >= 0:
        return f"its pool worker (pid {pid}) exited with status {code} (os._exit or sys.exit?)"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = {"SIGSEGV": ": a crash in native code", "SIGBUS": ": a crash in native code",
           "SIGABRT": ": aborted (a failed assertion in native code?)",
           "SIGKILL": " (out of memory?)"}.get(name, "")
    return f"its pool worker (pid {pid}) was killed by signal {-code} ({name}){why}"
