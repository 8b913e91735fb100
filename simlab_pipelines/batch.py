"""One run's simulations: spread over a process pool, each written to its own Parquet file.

``run_task`` is what a pool worker does for one partition: simulate inside a ``simlab.simulation``
span (child of the run's batch span, whose W3C traceparent travels with the task), then write the
replication file. ``execute`` drives a whole batch from the run process and yields one
``AssetMaterialization`` per successful partition, as results arrive. A simulation that raises fails
only its own partition.

A pool lives as long as the step that made it: every process it started (workers) is gone when the
step ends, so a run process (``dagster api execute_run``, a run pod, a run of ``dagster dev``) exits
with its run. ``simlab sweep`` runs many runs in one process and keeps one pool across them
(``keep_pools``), shut when the sweep ends. ``cancel`` (a sweep's Ctrl-C or SIGTERM) kills the
workers: the step in progress fails (not retried) within moments.
"""

import functools
import hashlib
import json
import multiprocessing
import signal
import threading
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import engine
from engine.registry import ModelRef
from simlab_pipelines import simulate, telemetry
from simlab_pipelines.storage import ResultStore, replication_row


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


@dataclass(frozen=True)
class Outcome:
    """What a worker reports back: the stored row, or the error."""

    task: Task
    row: dict[str, Any] | None
    path: str | None
    error: str | None = None
    traceback: str | None = None
    trace_id: str | None = None
    # The written file's (size, mtime_ns, inode) on a local disk (None in an object store): lets
    # the summary's manifest trust ``row`` without reading the file back (manifest.record_run).
    identity: tuple[int, int, int] | None = None


@functools.lru_cache(maxsize=8)
def _store(uri: str) -> ResultStore:
    return ResultStore(uri)


def run_task(task: Task) -> Outcome:
    """Simulate one partition and write its replication file (runs in a pool worker)."""
    started_at = datetime.now(UTC)
    attributes = telemetry.simulation_attributes(
        experiment=task.experiment, config_key=task.config_key, replication=task.replication,
        seed_entropy=task.seed,
        spawn_key=engine.spawn_key(task.model, task.params, task.replication,
                                   task.common_random_numbers),
        model=task.model, params=task.params, engine_version=engine.ENGINE_VERSION,
        run_id=task.run_id, partition_key=task.partition_key,
    )
    span = None
    try:
        with telemetry.attach_traceparent(task.traceparent), \
                telemetry.simulation_span(attributes) as span:
            result = simulate.simulate(task, span)  # the model by name, ModelRef or command
            span.warmup_end(result.warmup)
            span.run_end(result.warmup + result.horizon, result.events)
    except Exception as exc:
        return Outcome(task, None, None, f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                       span.trace_id if span is not None else None)
    row = replication_row(
        experiment=task.experiment, config_key=task.config_key, partition_key=task.partition_key,
        result=result.to_dict(), code_version=task.code_version, run_id=task.run_id,
        trace_id=span.trace_id, span_id=span.span_id, started_at=started_at,
        inputs_hash=task.inputs_hash,
    )
    # A storage error is not the simulation's fault: it propagates, and the step is retried.
    path, identity = _store(task.results_uri).write_identified(row)
    return Outcome(task, row, path, identity=identity)


def run_tasks(tasks: Sequence[Task]) -> list[Outcome]:
    """Several partitions in one pool task (each as ``run_task``: its own span, file, error)."""
    return [run_task(task) for task in tasks]


def chunk_size(tasks: int, workers: int) -> int:
    """Partitions per pool task. A pool keeps only workers + 1 tasks queued for its workers and
    refills that queue from a thread of the run process, which competes for the interpreter
    with the run's own bookkeeping (metadata, events): a worker that finished a 5 ms
    simulation often waited for its next one. Chunks of up to 8 leave each worker a queue of
    work, while every worker still gets several chunks (an even end)."""
    return max(1, min(8, tasks // (workers * 4)))


def data_version(row: dict[str, Any]) -> str:
    """A content hash of a replication: identical inputs and engine give the same version."""
    content = {k: row[k] for k in ("params", "seed_entropy", "spawn_key", "horizon", "warmup",
                                    "engine_version", "metrics")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


# The pools of this process, by worker count and OTEL_* settings; forkserver, because forking a
# process with Dagster's threads is unsafe. The settings are passed to the workers (a fork server
# keeps the environment it started with) and are part of the key, so new settings get new workers.
# Outside ``keep_pools`` a pool is shut when the batch that made it ends.
_POOLS: dict[tuple, ProcessPoolExecutor] = {}
_LOCK = threading.Lock()
_KEEP = [0]  # depth of keep_pools()
_CANCELLED = threading.Event()


def _worker_initializer(*initargs) -> None:
    # Ctrl-C reaches the terminal's whole process group; the run process decides what it means
    # (a sweep cancels, killing the workers). A worker must not die of it on its own, printing a
    # traceback and breaking the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    telemetry.pool_initializer(*initargs)


def _pool(workers: int) -> tuple[tuple, ProcessPoolExecutor]:
    _, service_name, otel = telemetry.worker_initargs()
    key = (workers, tuple(sorted(otel.items())))
    with _LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["simlab_pipelines.batch"])
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                       initializer=_worker_initializer,
                                       initargs=(None, service_name, otel))
            _POOLS[key] = pool
    return key, pool


def _drop(key: tuple, pool: ProcessPoolExecutor, wait: bool) -> None:
    with _LOCK:
        if _POOLS.get(key) is pool:
            del _POOLS[key]
    pool.shutdown(wait=wait, cancel_futures=True)


def shutdown_pools() -> None:
    """Stop the pools; workers flush their spans on the way out."""
    while True:
        with _LOCK:
            if not _POOLS:
                return
            _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def keep_pools() -> Iterator[None]:
    """Keep pools across the batches run inside this block (a sweep's runs, in one process), and
    shut them when it ends, however it ends."""
    _KEEP[0] += 1
    try:
        yield
    finally:
        _KEEP[0] -= 1
        if not _KEEP[0]:
            shutdown_pools()


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


_QUEUED = threading.local()


def on_queued(event: threading.Event) -> None:
    """Set ``event`` once a batch run later in this thread has queued all its simulations on a
    pool (a sweep then starts its next run: the pool never waits between runs)."""
    _QUEUED.event = event


def _queued() -> None:
    event = getattr(_QUEUED, "event", None)
    if event is not None:
        event.set()


def cancel() -> None:
    """Stop the batches in progress now (any thread; safe in a signal handler): kill the pool
    workers, so their batches fail at once; ``reset_cancel`` allows batches again."""
    _CANCELLED.set()
    for pool in list(_POOLS.values()):
        _kill_workers(pool)


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
    """Run ``tasks``, yielding outcomes as they complete; in-process when one worker suffices."""
    workers = max(1, min(workers, len(tasks)))
    done = 0
    if workers == 1:
        telemetry.configure_tracing()
        for task in tasks:
            if _CANCELLED.is_set():
                raise _interrupted(done, len(tasks))
            yield run_task(task)
            done += 1
        return
    if _CANCELLED.is_set():
        raise _interrupted(0, len(tasks))
    key, pool = _pool(workers)
    futures: list[Future] = []
    broken = finished = False
    try:
        size = chunk_size(len(tasks), workers)
        futures = [pool.submit(run_tasks, tasks[i:i + size]) for i in range(0, len(tasks), size)]
        _queued()
        for future in as_completed(futures):
            for outcome in future.result():
                yield outcome
                done += 1
        finished = True
    except BrokenProcessPool as exc:
        # A worker died (killed, out of memory): this pool is unusable. Drop it so that the
        # step's retry, and the sweep's next run, start a fresh one.
        broken = True
        _drop(key, pool, wait=False)
        if _CANCELLED.is_set():
            raise _interrupted(done, len(tasks)) from None
        raise WorkerDied(f"a pool worker died during the batch ({exc}); the unfinished "
                         "partitions are run again on a new pool when the step is retried") from exc
    finally:
        for future in futures:
            future.cancel()
        if not finished and not broken and any(f.running() for f in futures):
            # The step was interrupted (SIGTERM of a run pod, a failure further up): simulations
            # still running would hold the step, and the pool, until they end.
            _drop(key, pool, wait=False)
            _kill_workers(pool)
            pool.shutdown(wait=True)
        elif not _KEEP[0] and not broken:
            # Nobody reuses it: the workers end with the step (waiting for them also flushes
            # their spans), so nothing outlives the run.
            _drop(key, pool, wait=True)


class WorkerDied(RuntimeError):
    """A pool worker process died; the batch can be retried on a new pool."""

