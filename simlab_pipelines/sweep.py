"""``simlab sweep``: run one experiment's missing partitions through Dagster on the local instance.

Each batch (consecutive replications of one configuration) is one Dagster run, executed in this
process with ``execute_job`` so it is recorded in the instance and shows in the UI; runs reuse one
process pool. With a ``precision`` target, rounds follow until every configuration meets it or
reaches ``max_replications`` (``plan.py``: the same rounds the Dagster sensor runs). Then the
summary asset (and its checks) is materialised the same way.

Faults (docs/reliability.md): a sweep first recovers what dead processes left behind
(``recovery.recover``: runs left STARTED, pool slots they hold), takes the experiment's
one-sweep-at-a-time lock, and waits, saying for which run, while another run holds the DuckDB
pool's slot. Each run executes in a worker thread while the main thread watches for a stop request
(``request_stop``, from the CLI's SIGINT/SIGTERM handler): the run in progress is marked canceling
and its pool workers killed, so it ends CANCELED within moments and the sweep raises
``SweepInterrupted``. (Dagster's own interrupt handling, in the main thread, would defer a signal
to the next user-code boundary and then forget it when the run ends: the sweep went on.)
"""

import functools
import importlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import sqlalchemy as sa
from dagster._core.events import EVENT_TYPE_TO_PIPELINE_RUN_STATUS

from simlab_pipelines import batch, claims, logs, plan, recovery, telemetry
from simlab_pipelines.assets import (
    DUCKDB_POOL,
    TRACEPARENT_TAG,
    replications_key,
    spec_key,
    summary_key,
)
from simlab_pipelines.build import batch_size as default_batch_size
from simlab_pipelines.build import build_definitions, give_partitions_warning
from simlab_pipelines.experiments import ExperimentSpec, load_experiment
from simlab_pipelines.failures import FailureGroup, first_line, groups_from_metadata
from simlab_pipelines.partitions import Batch, batches, split_block
from simlab_pipelines.resources import default_storage
from simlab_pipelines.sensors import (
    NO_RETRY_TAGS,
    add_partitions,
    latest_materialization,
    missing_partitions,
    plan_state,
    replications_job_name,
    spec_is_current,
)
from simlab_pipelines.summary import current_results, query


@functools.lru_cache(maxsize=4)
def _definitions(spec: ExperimentSpec) -> dg.Definitions:
    return build_definitions([spec])


def experiment_job(path: str, job_name: str) -> dg.JobDefinition:
    """The named job of the experiment in ``path`` (the reconstructable target of a sweep's runs).

    Cached by the definition's content (specs hash by it), so an edited file gets new jobs."""
    return _definitions(load_experiment(path)).resolve_job_def(job_name)


def summary_is_current(instance: dg.DagsterInstance, spec: ExperimentSpec) -> bool:
    """Whether the summary was built after the last replication landed, from this definition,
    and the DuckDB file still holds it."""
    summary = latest_materialization(instance, summary_key(spec.name))
    if summary is None:
        return False
    inputs = (latest_materialization(instance, key)
              for key in (replications_key(spec.name), spec_key(spec.name)))
    if not all(storage_id is None or storage_id < summary for storage_id in inputs):
        return False
    try:
        _, rows = query("SELECT spec_hash FROM experiments WHERE experiment = ?",
                        Path(default_storage().duckdb_path), [spec.name])
    except (FileNotFoundError, duckdb.Error):
        return False
    return rows == [(spec.spec_hash(),)]


def ensure_pool(instance: dg.DagsterInstance, pool: str) -> None:
    """Create ``pool``'s default limit in the instance before any run claims a slot in it.

    Dagster 1.13 creates it at a run's first claim with INSERT, then UPDATE after an IntegrityError,
    in one transaction; PostgreSQL aborts that transaction at the failed INSERT, so of two runs
    claiming a new pool at the same moment one fails (dagster-io/dagster#33552). Sweeps started
    together race here instead, where losing is harmless: the other one created the row.
    """
    storage = instance.event_log_storage
    if (storage.get_pool_config().default_pool_limit is None
            or not storage.supports_global_concurrency_limits):
        return
    if pool in storage.get_concurrency_keys():
        return
    try:
        storage.initialize_concurrency_limit_to_default(pool)
    except sa.exc.DBAPIError:
        if pool not in storage.get_concurrency_keys():
            raise


@dataclass
class SweepReport:
    experiment: str
    total: int            # partitions wanted at the end
    missing: int          # partitions this sweep ran (or tried to)
    runs: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    summary_run: str | None = None
    rounds: list[int] = field(default_factory=list)  # partitions run per round
    checks: dict[str, bool] = field(default_factory=dict)  # the summary's checks: passed?
    landed: int = 0       # of the partitions run, how many are materialised now (with their file)
    still_missing: int = 0  # wanted partitions not materialised at the end
    failures: dict[str, str] = field(default_factory=dict)  # failed run id -> why
    recovered: list[str] = field(default_factory=list)  # what was cleaned up before starting
    beyond: list[str] = field(default_factory=list)  # results beyond the plan: not used
    # The partitions that failed, by reason (of every run; not those of a run stopped by a signal)
    failed_partitions: list[FailureGroup] = field(default_factory=list)


class SweepInterrupted(Exception):
    """The sweep stopped on a signal; ``report`` counts what landed before it."""

    def __init__(self, signum: int, report: SweepReport, canceled: list[str], forced: bool):
        super().__init__(f"interrupted by signal {signum}")
        self.signum, self.report, self.canceled, self.forced = signum, report, canceled, forced


# A signal handler's request to stop: set from the main thread, read by the sweep loop.
_STOP: dict[str, int | bool | float | None] = {"signum": None, "force": False, "at": None}
# After a stop request the run must end within this; then its process gives up on it.
GRACE_SECONDS = 30.0


def request_stop(signum: int) -> None:
    """Stop the sweep in progress (call from a SIGINT/SIGTERM handler): its current run is
    canceled and its pool workers killed. A second request stops without waiting for the run."""
    if _STOP["signum"] is not None:
        _STOP["force"] = True
    else:
        _STOP.update(signum=signum, at=time.monotonic())


def _stopped() -> bool:
    return _STOP["signum"] is not None


def _unfinished_runs(instance: dg.DagsterInstance, sweep_id: str) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(
        tags={"simlab/sweep": sweep_id},
        statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                  dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]))


# A sweep's runs change status in this process only: their threads end them, the main thread
# marks them canceling (or canceled) on a stop. Both happen under this lock, so a run listed as
# unfinished is still unfinished when it is marked: a run that ended keeps its status (without
# it, a run that succeeded between the listing and the marking was left CANCELING, then
# CANCELED).
_STATUS = threading.RLock()
_STATUS_EVENTS = frozenset(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)


@contextmanager
def _status_guard(instance: dg.DagsterInstance) -> Iterator[None]:
    """While inside, ``instance`` writes run status changes under ``_STATUS``; after a stop, a
    run marked canceling before it had started stays canceling when it starts."""
    handle = instance.handle_new_event

    def guarded(event, *args, **kwargs):
        if not (event.is_dagster_event and event.dagster_event_type in _STATUS_EVENTS):
            return handle(event, *args, **kwargs)
        with _STATUS:
            # A run created just before a stop was marked canceling while NOT_STARTED; its
            # start would make it STARTED again, and the canceled batch then failed it.
            run = (instance.get_run_by_id(event.run_id)
                   if _stopped() and event.dagster_event_type == dg.DagsterEventType.RUN_START
                   else None)
            result = handle(event, *args, **kwargs)
            if run is not None and run.status == dg.DagsterRunStatus.CANCELING:
                instance.report_run_canceling(run, "simlab sweep stopped by a signal")
            return result

    instance.handle_new_event = guarded  # type: ignore[method-assign]
    try:
        yield
    finally:
        del instance.handle_new_event  # the class's method again


def _mark_unfinished(instance: dg.DagsterInstance, sweep_id: str, canceled: bool) -> list[str]:
    """Mark the sweep's unfinished runs canceling (``canceled``: canceled, their slots freed),
    reading their status under ``_STATUS`` (see there); the run ids marked."""
    marked = []
    with _STATUS:
        for run in _unfinished_runs(instance, sweep_id):
            if canceled:
                instance.report_run_canceled(run, "simlab sweep stopped by a signal; the run "
                                                  f"did not end within {GRACE_SECONDS:.0f} s")
                if instance.event_log_storage.supports_global_concurrency_limits:
                    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            # Not again for a run already canceling: it may have ended CANCELED meanwhile,
            # and marking it again would leave it CANCELING for good.
            elif run.status != dg.DagsterRunStatus.CANCELING:
                instance.report_run_canceling(run, "simlab sweep stopped by a signal")
            else:
                continue
            marked.append(run.run_id)
    return marked


# Set when a sweep's run thread has news for the main thread (its run ended, queued or simulated
# everything): the main thread waits on it rather than polling.
_CHANGED = threading.Event()


class _Signal(threading.Event):
    """An Event whose ``set`` also wakes the sweep's main thread (``_CHANGED``)."""

    def set(self) -> None:
        super().set()
        _CHANGED.set()


class _Run:
    """One Dagster run executing in a thread of this process (see the module's docstring)."""

    def __init__(self, path: Path, job_name: str, instance: dg.DagsterInstance,
                 tags: dict[str, str]):
        self.recon = dg.build_reconstructable_job(
            "simlab_pipelines.sweep", "experiment_job",
            reconstructable_kwargs={"path": str(path), "job_name": job_name})
        self.instance, self.tags = instance, tags
        self.outcome: dict[str, object] = {}
        # Set when the run's step has queued all its simulations on the pool (or the run ended):
        # from then on the next run may start, its set-up overlapping these simulations.
        self.queued = _Signal()
        # Set when the step has every simulation's outcome recorded (its result files and
        # fragment written), before the run writes its events; ``clean``: none failed.
        self.simulated = _Signal()
        self.clean = False
        self.finished = _Signal()  # the run has ended (its outcome is in ``outcome``)
        self.thread = threading.Thread(target=self._execute, name=f"simlab-run-{job_name}",
                                       daemon=True)
        self.thread.start()

    def _outcomes_in(self, clean: bool) -> None:
        self.clean = clean
        self.simulated.set()

    def _execute(self) -> None:
        batch.on_queued(self.queued)
        batch.on_simulated(self._outcomes_in)
        try:
            # The run's own events go to the instance (and the UI); the terminal gets its
            # warnings as JSON, or nothing in text format (simlab sweep reports what failed).
            self.outcome["result"] = dg.execute_job(
                self.recon, instance=self.instance,
                tags={**self.tags, **recovery.process_tags()}, raise_on_error=False,
                run_config=logs.run_logger_config("WARNING"))
        except BaseException as exc:  # handed to the main thread
            self.outcome["error"] = exc
        finally:
            self.queued.set()
            self.simulated.set()  # (``clean`` stays False if the step did not say so)
            self.finished.set()

    def done(self) -> bool:
        return self.finished.is_set()

    def result(self):
        if "error" in self.outcome:
            raise self.outcome["error"]  # type: ignore[misc]
        return self.outcome["result"]


def _watch(instance: dg.DagsterInstance, sweep_id: str, until: Callable[[], bool]) -> None:
    """Wait until ``until()``, acting on a stop request meanwhile: the sweep's unfinished runs
    are marked canceling and the pool workers killed, so they end CANCELED within moments;
    ``_Abandon`` if they don't within GRACE_SECONDS of the request (at once on a second one)."""
    canceled = False
    while not until():
        # Woken when a run ends, has queued or simulated everything; else every 50 ms (stops).
        _CHANGED.wait(0.05)
        _CHANGED.clear()
        if _stopped() and not canceled:
            canceled = True
            # Canceling first: an interrupted run then ends CANCELED, not failed (and retried).
            _mark_unfinished(instance, sweep_id, canceled=False)
            batch.cancel()
        if canceled and not until() and (
                _STOP["force"] or time.monotonic() - _STOP["at"] > GRACE_SECONDS):
            raise _Abandon()


def _run(path: Path, job_name: str, instance: dg.DagsterInstance, tags: dict[str, str]):
    """Execute one run to its end (the spec and summary runs)."""
    run = _Run(path, job_name, instance, tags)
    _watch(instance, tags["simlab/sweep"], run.done)
    return run.result()


@contextmanager
def _overlapping(instance: dg.DagsterInstance) -> Iterator[dg.DagsterInstance | None]:
    """The instance a sweep's replication runs use so that two of them can overlap in this
    process, or None when they cannot. The same storage as ``instance``, but:

    - no compute-log capture: Dagster redirects the process's stdout and stderr around a run,
      which two runs in one process would undo for each other (their output goes to the sweep's
      terminal instead, where its warnings already go);
    - no Python logging handlers from the instance file: Dagster installs them with
      ``logging.config.dictConfig`` at every run's start, which flushes every handler under
      logging's module lock; a run logging at that moment holds its handler's lock and waits
      for the module lock: a deadlock. Without ``python_logs`` handlers there is nothing to
      install; with them, runs do not overlap.

    Only a persistent instance (with a ref) can be opened twice. An instance opened without
    capture (``instance.open_instance(capture_logs=False)``, as ``simlab sweep`` opens it) is
    its own twin."""
    try:
        ref = instance.get_ref()
    except Exception:  # an ephemeral instance
        yield None
        return
    if instance.get_python_log_dagster_handler_config():
        yield None
        return
    from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
    from dagster._serdes import ConfigurableClassData

    if isinstance(instance.compute_log_manager, NoOpComputeLogManager):
        instance.get_yaml_python_handlers = lambda: []  # type: ignore[method-assign]
        try:
            yield instance
        finally:
            del instance.get_yaml_python_handlers  # the class's method again
        return

    twin = dg.DagsterInstance.from_ref(ref._replace(compute_logs_data=ConfigurableClassData(
        "dagster._core.storage.noop_compute_log_manager", "NoOpComputeLogManager", "{}\n")))
    twin.get_yaml_python_handlers = lambda: []  # type: ignore[method-assign]
    try:
        with _status_guard(twin):
            yield twin
    finally:
        twin.dispose()


class _Abandon(Exception):
    """The run did not end within the grace period after a stop request."""


def _failure_reason(result) -> str:
    """Why a run failed, in a few lines: its first step failure, else the run failure."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            error = data.error
            while error is not None and error.cause is not None:  # the user's exception
                error = error.cause
            text = (data.user_failure_data.description if data.user_failure_data else None) or (
                error.message if error else "")
            lines = [line for line in text.strip().splitlines() if line.strip()]
            if lines:
                more = f" (+{len(lines) - 4} more lines)" if len(lines) > 4 else ""
                return "\n".join(lines[:4]) + more
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.RUN_FAILURE and event.message:
            return event.message
    return "unknown (see the run's logs)"


def sweep(path: Path, instance: dg.DagsterInstance, *, workers: int | None = None,
          batch_size: int | None = None,
          progress: Callable[[int, int], None] | None = None,
          announce: Callable[[str], None] | None = None) -> SweepReport:
    """Run the missing partitions of the experiment in ``path`` (in rounds when it has a
    precision target), then its summary. ``progress(done, total)`` follows the simulations;
    ``announce`` gets a line when a new round starts, a dead run is cleaned up, or the sweep
    waits for another. Raises ``SweepInterrupted`` after ``request_stop``."""
    path = Path(path).resolve()
    spec = load_experiment(path)
    say = announce or (lambda line: None)
    if (warning := give_partitions_warning(spec)) is not None:
        say(f"warning: {warning}")
    _STOP.update(signum=None, force=False, at=None)
    batch.reset_cancel()
    recovered = recovery.recover(instance)
    for line in recovered:
        say(line)
    sweep_id = uuid.uuid4().hex[:12]
    report = SweepReport(spec.name, 0, 0, recovered=recovered)
    attempted: set[str] = set()
    try:
        with _status_guard(instance), \
                recovery.sweep_lock(instance, spec.name, say, _stopped) as locked:
            if locked:
                with batch.keep_pools():
                    _sweep(path, spec, instance, sweep_id, report, attempted, workers,
                           batch_size, progress, say)
    except _Abandon:
        canceled = _abandon(instance, sweep_id)
        raise SweepInterrupted(int(_STOP["signum"] or 2), _count(instance, spec, report, attempted),
                               canceled, forced=True) from None
    if _stopped():
        canceled = [run.run_id for run in instance.get_runs(filters=dg.RunsFilter(
            tags={"simlab/sweep": sweep_id}, statuses=[dg.DagsterRunStatus.CANCELED]))]
        raise SweepInterrupted(int(_STOP["signum"] or 2), _count(instance, spec, report, attempted),
                               canceled, forced=False)
    return report


def _abandon(instance: dg.DagsterInstance, sweep_id: str) -> list[str]:
    """Mark this sweep's unfinished runs canceled and free their slots (their thread is left)."""
    batch.cancel()
    return _mark_unfinished(instance, sweep_id, canceled=True)


def _count(instance: dg.DagsterInstance, spec: ExperimentSpec, report: SweepReport,
           attempted: set[str]) -> SweepReport:
    """Fill in what landed: the partitions run that are materialised (with their file) now."""
    targets, missing = missing_partitions(instance, spec)
    report.total = plan.wanted_count(spec, targets)
    report.still_missing = len(missing)
    report.landed = len(attempted - set(missing))
    return report


def _sweep(path: Path, spec: ExperimentSpec, instance: dg.DagsterInstance, sweep_id: str,
           report: SweepReport, attempted: set[str], workers: int | None,
           batch_size: int | None, progress: Callable[[int, int], None] | None,
           say: Callable[[str], None]) -> None:
    targets, missing, report.beyond = plan_state(instance, spec)
    report.total = plan.wanted_count(spec, targets)
    if not missing and summary_is_current(instance, spec):
        return
    size = batch_size or default_batch_size(spec)
    ensure_pool(instance, DUCKDB_POOL)
    telemetry.configure_tracing()

    def record(result) -> None:
        if not result.success:
            report.failed_runs.append(result.run_id)
            if not _stopped():
                report.failures[result.run_id] = _failure_reason(result)

    with telemetry.batch_span("simlab.sweep", {"simlab.experiment": spec.name,
                                               "simlab.partitions": len(missing)}):
        base_tags = {TRACEPARENT_TAG: telemetry.current_traceparent() or "",
                     "simlab/sweep": sweep_id, "simlab/experiment": spec.name, **NO_RETRY_TAGS,
                     # The next sweep runs what a failed run left missing (the daemon retrying
                     # it too, e.g. after recovery.recover failed it, would do the work twice).
                     "dagster/max_retries": "0"}
        if workers:
            base_tags["simlab/workers"] = str(workers)
        if missing:  # the workers start while the spec and the first run are set up
            batch.prestart(workers or default_storage().pool_size())
        # The rounds' plan and the summary analyse (scipy, ~0.3 s to import): imported while
        # the first simulations run rather than between rounds.
        threading.Thread(target=importlib.import_module, name="simlab-preload", daemon=True,
                         args=("simlab_pipelines.analysis.experiment",)).start()
        if not spec_is_current(instance, spec):  # the lineage root, once per new definition
            record(_run(path, f"{spec.name}_spec", instance, base_tags))
        with _overlapping(instance) as twin:
            done = _rounds(_Rounds(path, spec, twin or instance, instance, base_tags, size,
                                   overlap=twin is not None), report, attempted, targets,
                           missing, progress, say, record)
        # The workers are not needed by the summary: they shut (flushing their spans) meanwhile.
        closing = threading.Thread(target=batch.shutdown_pools, name="simlab-pool-shutdown")
        closing.start()
        report.missing = done
        try:
            _summarise(path, spec, instance, report, attempted, base_tags, record, say)
        finally:
            closing.join()


def _summarise(path: Path, spec: ExperimentSpec, instance: dg.DagsterInstance,
               report: SweepReport, attempted: set[str], base_tags: dict[str, str],
               record: Callable, say: Callable[[str], None]) -> None:
    # Partitions another run of the experiment held were left to it (claims.py): its results
    # belong in the counts and the summary.
    claims.wait_for_others(instance, replications_key(spec.name), report.runs, say, _stopped)
    _count(instance, spec, report, attempted)
    if _stopped():
        return
    if report.missing and not report.landed and (
            report.still_missing == report.total or summary_is_current(instance, spec)):
        return  # nothing new to summarise (with no result at all it could only fail)
    recovery.wait_for_pool(instance, DUCKDB_POOL, say, _stopped)
    if _stopped():
        return
    result = _run(path, f"{spec.name}_summary", instance, base_tags)
    report.summary_run = result.run_id
    report.checks = {
        evaluation.check_name: evaluation.passed
        for evaluation in result.get_asset_check_evaluations()}
    record(result)


def _landed(result, part: Batch, report: SweepReport) -> int:
    """How many of a replications run's partitions landed (were materialised); a failed run's
    failed partitions, by reason, go to ``report.failed_partitions`` (unless it was stopped)."""
    if result.success:
        return len(part.keys)
    landed = sum(1 for event in result.all_events
                 if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION)
    if _stopped():
        return landed
    groups: list[FailureGroup] = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data is not None:
            recorded = event.step_failure_data.user_failure_data.metadata.get("failure_reasons")
            groups = groups_from_metadata(recorded.value if recorded is not None else None)
            break
    if not groups and len(part.keys) > landed:  # the run failed as a whole: one reason for all
        reason = report.failures.get(result.run_id, "unknown (see the run's logs)")
        groups = [FailureGroup(first_line(reason), len(part.keys) - landed, part.keys[0])]
    report.failed_partitions.extend(groups)
    return landed


@dataclass
class _Rounds:
    """What a sweep's rounds of replication runs share: where the runs go (``instance``: the
    overlapping twin, or the instance) and where to plan (``planning``: the instance)."""

    path: Path
    spec: ExperimentSpec
    instance: dg.DagsterInstance
    planning: dg.DagsterInstance
    base_tags: dict[str, str]
    size: int
    overlap: bool
    configurations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.configurations = [c.key for c in self.spec.configurations_list()]

    def start(self, part: Batch) -> "_Run":
        return _Run(self.path, replications_job_name(self.spec.name), self.instance,
                    {**self.base_tags, **part.tags()})

    def plan(self, landing: set[str]) -> tuple[dict[str, plan.Target], list[str]]:
        """The targets and missing partitions as ``missing_partitions`` finds them once the
        ``landing`` partitions' runs (simulated, writing their events) have ended."""
        targets, present = current_results(self.spec, default_storage().store())
        materialized = self.planning.get_materialized_partitions(
            replications_key(self.spec.name)) | landing
        return targets, plan.missing_partitions(self.spec, targets, materialized, present)


def _rounds(rounds: _Rounds, report: SweepReport, attempted: set[str],
            targets: dict[str, plan.Target], missing: list[str],
            progress: Callable[[int, int], None] | None, say: Callable[[str], None],
            record: Callable) -> int:
    """Run the missing partitions, in rounds while the experiment's targets depend on its
    results; the number of partitions run.

    With ``overlap`` a run starts as soon as the previous one has queued all its simulations on
    the shared pool (at most two in flight), and the next round is planned as soon as the
    current round's simulations are all in, from their result files (``_Rounds.plan``): its
    first run starts while the last one writes its events, so the pool never waits for a
    run's bookkeeping, the plan or the next run's creation. A round with failed simulations is
    the last (as is the round after which nothing new is wanted)."""
    spec, sweep_id = rounds.spec, rounds.base_tags["simlab/sweep"]
    sequential = plan.uses_results(spec)
    parts: list[Batch] = []  # this round's batches not started yet
    pending: list[tuple[_Run, Batch]] = []  # started, in order
    current: list[_Run] = []  # this round's runs
    done = landed = in_flight = total = 0  # total: the progress bar's (what landed + may land)

    def start_round(targets: dict[str, plan.Target], missing: list[str]) -> None:
        if report.rounds:
            spans = [split_block(key) for key in missing]  # a partition may be a block
            configs = len({config for config, _, _ in spans})
            count = sum(last - first + 1 for _, first, last in spans)
            what = "search" if plan.is_search(spec) else "sequential procedure"
            say(f"{spec.name}: round {len(report.rounds) + 1} of the {what}: "
                f"{count} more replications for {configs} configuration(s)")
        nonlocal total
        report.rounds.append(len(missing))
        total = landed + in_flight + len(missing)
        if progress:
            progress(landed, total)
        # A sequential experiment's partitions are dynamic: its round's keys first.
        order = add_partitions(rounds.planning, spec, targets)
        parts.extend(batches(missing, rounds.size, order, rounds.configurations))
        current.clear()

    def planned_ahead() -> bool:
        """Plan the next round if this one's simulations are all in; whether it was planned."""
        nonlocal targets, missing
        if parts or not current or not all(run.simulated.is_set() for run in current):
            return False
        landing = {key for run, part in pending if not run.done() for key in part.keys}
        if not all(run.clean for run in current) or report.failed_runs or _stopped():
            current.clear()  # no next round: what is pending ends the sweep
            return True
        before = missing
        targets, missing = rounds.plan(landing)
        current.clear()
        if missing and missing != before:  # (nothing landed: stop rather than loop)
            start_round(targets, missing)
        return True

    def ready() -> bool:
        return bool((pending and pending[0][0].done())
                    or (parts and _room(pending, rounds.overlap))
                    or (sequential and not parts and current
                        and all(run.simulated.is_set() for run in current)))

    if missing:
        start_round(targets, missing)
    while (parts or pending) and not _stopped():
        if parts and _room(pending, rounds.overlap):  # (a failed run ends only the rounds)
            part = parts.pop(0)
            run = rounds.start(part)
            pending.append((run, part))
            current.append(run)
            attempted.update(part.keys)
            in_flight += len(part.keys)
            continue
        if sequential and planned_ahead():
            continue
        if pending and pending[0][0].done():
            run, part = pending.pop(0)
            result = run.result()
            report.runs.append(result.run_id)
            record(result)
            done += len(part.keys)
            in_flight -= len(part.keys)
            landed += _landed(result, part, report)
            if progress:
                progress(landed, total)
            continue
        _watch(rounds.instance, sweep_id, lambda: ready() or _stopped())
    while pending:  # stopped: what was started ends (CANCELED) and is counted
        run, part = pending.pop(0)
        _watch(rounds.instance, sweep_id, run.done)
        result = run.result()
        report.runs.append(result.run_id)
        record(result)
        done += len(part.keys)
        landed += _landed(result, part, report)
        if progress:
            progress(landed, total)
    return done


def _room(pending: list[tuple["_Run", Batch]], overlap: bool) -> bool:
    alive = [run for run, _ in pending if not run.done()]
    if not overlap:
        return not alive
    return len(alive) < 2 and all(run.queued.is_set() for run in alive)
