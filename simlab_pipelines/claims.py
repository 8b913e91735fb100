"""One experiment's partitions are not run twice at once, whoever launched the runs.

Runs of an experiment's replications come from three places: ``simlab sweep`` (runs executed in
its own process), the daemon under ``dagster dev`` (the file and sequential sensors' runs, queued)
and people (the UI's Materialize, a backfill, ``dagster job launch``). None of them knows what the
others have queued or started, and two runs simulating one partition at once left its file
written by one and its materialization recorded by the other (DuckDB's run ids then disagreed
with Dagster's), besides doing the work twice. So the rule is kept where every run passes: the
replications step, as it starts (``held_elsewhere``), leaves out

- the partitions another unfinished run of the experiment holds that started before this one
  (the earliest started run does them; ties go by run id), and
- the partitions another run materialised since this run was created (a run that waited in the
  queue while a sweep did its work: the work is done).

Both are judged from the instance, so the rule holds for every launcher and on Kubernetes. A run
that sees another run over its partitions about to start (NOT_STARTED, STARTING) first waits
until ``SETTLE_SECONDS`` after its own start, so that a run started just before it has recorded
its start by then: of two runs started together, each sees the other's start and exactly one
keeps the partitions. A STARTED run's start is recorded already; a QUEUED run starts after this
one, and when it does it sees this one started earlier and leaves these partitions. What a run
leaves out is in its log, not a failure; ``simlab sweep`` waits for the other runs before it
summarises (``wait_for_others``). Left open: a partition another run finishes between a sweep's
look at what is missing and the creation of its run is run again, after (not at once).
"""

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import dagster as dg

# Every status of a run that may still simulate or is about to.
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED,
               dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]
_RUNNING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING]
_ABOUT_TO_START = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
# Longer than it takes a run to record its start in the instance (milliseconds; a second of
# margin for a busy SQLite file). Paid only by a run that overlaps a run about to start.
SETTLE_SECONDS = 1.0


def targets(run: dg.DagsterRun, asset_key: dg.AssetKey) -> bool:
    """Whether ``run`` materialises ``asset_key`` (its own job, or an asset selection)."""
    return asset_key in (run.asset_selection or ()) or (
        run.job_name == f"{asset_key.path[0]}_replications" and not run.asset_selection)


def run_partitions(run: dg.DagsterRun, partitions_def: dg.PartitionsDefinition,
                   instance: dg.DagsterInstance) -> set[str]:
    """The partition keys ``run`` covers (its range or partition tags, or its subset)."""
    tags = run.tags
    start, end = (tags.get("dagster/asset_partition_range_start"),
                  tags.get("dagster/asset_partition_range_end"))
    try:
        if run.partitions_subset is not None:
            # A dynamic partitions definition's subset is read through the instance.
            with dg.partition_loading_context(datetime.now(UTC), instance):
                return {str(k) for k in run.partitions_subset.get_partition_keys()}
        if start and end:
            return {str(k) for k in partitions_def.get_partition_keys_in_range(
                dg.PartitionKeyRange(start, end), dynamic_partitions_store=instance)}
    except Exception:  # a range of another definition (the file changed since): its ends only
        return {start, end} if start and end else set()
    return {tags["dagster/partition"]} if "dagster/partition" in tags else set()


def _materialised_since(instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: list[str],
                        since: float, run_id: str) -> dict[str, str]:
    """Keys of ``keys`` another run materialised after ``since`` -> that run's id."""
    found: dict[str, str] = {}
    for start in range(0, len(keys), 1000):  # one SQL variable a key
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key, asset_partitions=keys[start:start + 1000],
                                      after_timestamp=since), limit=1000, cursor=cursor)
            for record in page.records:
                if record.run_id != run_id and record.partition_key is not None:
                    found.setdefault(record.partition_key, record.run_id)
            if not page.has_more:
                break
            cursor = page.cursor
    return found


def _earlier(other: dg.RunRecord, mine: dg.RunRecord) -> bool:
    return other.start_time is not None and (other.start_time, other.dagster_run.run_id) < (
        mine.start_time or time.time(), mine.dagster_run.run_id)


def held_elsewhere(instance: dg.DagsterInstance, run_id: str, asset_key: dg.AssetKey,
                   keys: Sequence[str], partitions_def: dg.PartitionsDefinition
                   ) -> dict[str, str]:
    """Which of ``keys`` (the partitions of run ``run_id``'s step) to leave out, and why: the
    module's rule. Key -> a reason naming the other run."""
    mine = instance.get_run_record_by_id(run_id)
    if mine is None:
        return {}
    wanted = [str(k) for k in keys]

    sweep = mine.dagster_run.tags.get("simlab/sweep")

    def overlapping() -> list[tuple[dg.RunRecord, set[str]]]:
        found, mine_set = [], set(wanted)
        for record in instance.get_run_records(dg.RunsFilter(statuses=_UNFINISHED)):
            run = record.dagster_run
            if sweep is not None and run.tags.get("simlab/sweep") == sweep:
                continue  # one sweep's runs are disjoint by construction: not worth reading
            if run.run_id != run_id and targets(run, asset_key):
                shared = mine_set & run_partitions(run, partitions_def, instance)
                if shared:
                    found.append((record, shared))
        return found

    others = overlapping()
    # A run about to start (NOT_STARTED, STARTING) may have started just before this one without
    # its start recorded yet: let it record it (the docstring). A STARTED run's start is known,
    # and a QUEUED one starts after this one.
    if any(record.dagster_run.status in _ABOUT_TO_START for record, _ in others):
        wait = (mine.start_time or time.time()) + SETTLE_SECONDS - time.time()
        if wait > 0:
            time.sleep(wait)
        mine = instance.get_run_record_by_id(run_id) or mine
        others = overlapping()
    # After the wait: what a run that ended meanwhile did is materialised by now.
    left: dict[str, str] = {
        key: f"materialised by run {other} since this run was created"
        for key, other in _materialised_since(instance, asset_key, wanted,
                                              mine.create_timestamp.timestamp(), run_id).items()}
    for record, shared in others:
        other = record.dagster_run
        if other.status in _RUNNING and _earlier(record, mine):
            for key in shared:
                left.setdefault(key, f"held by run {other.run_id} ({other.job_name}, "
                                     f"{other.status.value}), which started first")
    return left


def describe(left: dict[str, str], total: int) -> list[str]:
    """Log lines for what a run leaves out: one per reason, with a count and an example key."""
    by_reason: dict[str, list[str]] = {}
    for key, reason in left.items():
        by_reason.setdefault(reason, []).append(key)
    return [f"{len(keys)} of this run's {total} partitions left out (e.g. {min(keys)}): {reason}; "
            "never run twice at once" for reason, keys in sorted(by_reason.items())]


def others_running(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                   exclude: Iterable[str] = ()) -> list[dg.DagsterRun]:
    """Runs of ``asset_key`` that started (or are starting) and have not ended, but for
    ``exclude``."""
    skip = set(exclude)
    return [run for run in instance.get_runs(filters=dg.RunsFilter(statuses=_RUNNING))
            if run.run_id not in skip and targets(run, asset_key)]


def wait_for_others(instance: dg.DagsterInstance, asset_key: dg.AssetKey, exclude: Iterable[str],
                    announce: Callable[[str], None], stopped: Callable[[], bool],
                    poll_seconds: float = 1.0) -> None:
    """Return once no other run of ``asset_key`` is running (saying once which one is waited
    for), or early when ``stopped()``. A run whose process dies meanwhile is failed on the way
    (``recovery.recover``), so it is not waited for forever."""
    from simlab_pipelines import recovery  # recovery's own imports need not load for a run

    exclude = set(exclude)
    said: set[str] = set()
    while not stopped():
        running = others_running(instance, asset_key, exclude)
        if running:
            for line in recovery.recover(instance):
                announce(line)
            running = others_running(instance, asset_key, exclude)
        if not running:
            return
        for run in running:
            if run.run_id not in said:
                announce(f"waiting for run {run.run_id} ({run.job_name}, {run.status.value}), "
                         "which runs partitions of this experiment")
                said.add(run.run_id)
        time.sleep(poll_seconds)
