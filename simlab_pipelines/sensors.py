"""Sensors: new or changed experiment files, sequential rounds, and bad files reported where users
look (a failed check on the rejected file's asset, logged once per change of the file)."""

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import polars as pl
import sqlalchemy as sa

from simlab_pipelines import metadata as ui
from simlab_pipelines import partitions, plan, recovery
from simlab_pipelines.assets import replications_key, spec_key, summary_key
from simlab_pipelines.experiments import ExperimentSpec, load_experiments
from simlab_pipelines.partitions import batches
from simlab_pipelines.resources import default_storage
from simlab_pipelines.summary import OBSERVATION_SCHEMA, current_results, summarised_counts

log = logging.getLogger("simlab.sensors")


# A run that failed because a simulation raised would fail again (same inputs, same streams):
# run retries are for crashed run processes and pods, the asset's RetryPolicy for transient errors.
NO_RETRY_TAGS = {"dagster/retry_on_asset_or_op_failure": "false"}


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey) -> int | None:
    """The storage id of the asset's latest materialization (None if never materialised)."""
    latest = _latest(instance, key)
    return latest[0] if latest else None


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[int, str] | None:
    """(storage id, run id) of the asset's latest materialization.

    Asked of the SQL event log directly where it is one (SQLite, PostgreSQL): fetching the
    record would deserialize the whole event, and a summary's carries its plots (0.1 s)."""
    storage = instance.event_log_storage
    try:
        from dagster._core.storage.event_log.schema import SqlEventLogStorageTable as Events

        table_query = sa.select(Events.c.id, Events.c.run_id).where(
            Events.c.asset_key == key.to_string(),
            Events.c.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION.value
        ).order_by(Events.c.id.desc()).limit(1)
        query = storage._add_assets_wipe_filter_to_query(  # as Dagster's own reads: after a wipe
            table_query, storage._get_assets_details([key]), [key])
        with storage.index_connection() as connection:
            row = connection.execute(query).first()
        return (row[0], row[1]) if row else None
    except (ImportError, AttributeError):  # not a SQL event log, or Dagster moved these
        records = instance.fetch_materializations(key, limit=1).records
        return (records[0].storage_id, records[0].run_id) if records else None


def replications_job_name(name: str) -> str:
    return f"{name}_replications"


def missing_partitions(instance: dg.DagsterInstance, spec: ExperimentSpec
                       ) -> tuple[dict[str, plan.Target], list[str]]:
    """The replication targets now, and the wanted partition keys not materialised in the
    instance or whose file is gone (in configuration/replication order)."""
    targets, missing, _ = plan_state(instance, spec)
    return targets, missing


def plan_state(instance: dg.DagsterInstance, spec: ExperimentSpec
               ) -> tuple[dict[str, plan.Target], list[str], list[str]]:
    """``missing_partitions``, and the keys of results beyond the plan (``beyond_plan``), from
    one look at the results: memory in proportion to what exists and what is missing, not to the
    experiment's whole space. When the summary says it all (``_summarised``), no result row is
    read."""
    summarised = _summarised(instance, spec)
    if summarised is not None:
        return summarised
    targets, present = current_results(spec, default_storage().store())
    materialized = instance.get_materialized_partitions(replications_key(spec.name))
    return (targets, plan.missing_partitions(spec, targets, materialized, present),
            _beyond(targets, present))


def _summarised(instance: dg.DagsterInstance, spec: ExperimentSpec
                ) -> tuple[dict[str, plan.Target], list[str], list[str]] | None:
    """``plan_state`` from the counts in DuckDB, without reading a result row, when they are
    the whole story: a fixed experiment whose summary is current (built after the last
    replication and the spec landed, from this definition) and whose result files have not
    changed since its run started (the configurations' directories' mtimes), with every
    configuration's replications all there. None otherwise (then the rows are read): a million
    rows are seconds and hundreds of MB, these counts a few milliseconds."""
    storage = default_storage()
    store = storage.store()
    if plan.uses_results(spec) or not store.is_local:
        return None
    summary = _latest(instance, summary_key(spec.name))
    if summary is None or any(
            other is not None and other >= summary[0]
            for other in (latest_materialization(instance, replications_key(spec.name)),
                          latest_materialization(instance, spec_key(spec.name)))):
        return None
    record = instance.get_run_record_by_id(summary[1])
    if record is None or record.start_time is None:
        return None
    counts = summarised_counts(spec, store, Path(storage.duckdb_path), record.start_time)
    targets = plan.replication_targets(spec, pl.DataFrame(schema=OBSERVATION_SCHEMA))
    if counts is None or any(counts.get(key) != (t.replications, 0, t.replications - 1)
                             for key, t in targets.items()):
        return None
    materialized = instance.get_materialized_partitions(replications_key(spec.name))
    missing = plan.unmaterialized(spec, targets, materialized)
    # Files beyond the plan are not in DuckDB: their names say which (the listing is cached).
    limits = {k: t.replications for k, t in targets.items()}
    files = store.listing(spec.name).join(
        pl.DataFrame({"config_key": list(limits), "_limit": list(limits.values())},
                     schema={"config_key": pl.String, "_limit": pl.Int64}), on="config_key")
    extra = ((key, r) for key, first, last, limit in files.filter(
        pl.col("last") >= pl.col("_limit")).select("config_key", "first", "last", "_limit")
        .iter_rows() for r in range(max(first, limit), last + 1))
    return targets, missing, partitions.beyond_plan(limits, extra)


def _beyond(targets: Mapping[str, plan.Target], present: pl.DataFrame) -> list[str]:
    """``partitions.beyond_plan`` of the current results (a frame of config_key, replication),
    looking only at the rows past their configuration's target."""
    limits = pl.DataFrame({"config_key": list(targets),
                           "_limit": [t.replications for t in targets.values()]},
                          schema={"config_key": pl.String, "_limit": pl.Int64})
    extra = present.join(limits, on="config_key").filter(
        pl.col("replication") >= pl.col("_limit"))
    return partitions.beyond_plan({k: t.replications for k, t in targets.items()},
                                  extra.select("config_key", "replication").iter_rows())


def run_requests(spec: ExperimentSpec, keys: list[str], batch_size: int,
                 key_prefix: str, order: list[str] | None = None) -> list[dg.RunRequest]:
    """One run request per batch: a range of the grid (adjacent configurations, consecutive
    replications) or a contiguous stretch of ``order``, a sequential experiment's dynamic
    partition set."""
    configurations = [c.key for c in spec.configurations_list()]
    return [
        dg.RunRequest(
            run_key=f"{key_prefix}:{part.start}-{part.end}",
            job_name=replications_job_name(spec.name),
            tags={**part.tags(), "simlab/experiment": spec.name, **NO_RETRY_TAGS},
        )
        for part in batches(keys, batch_size, order, configurations)
    ]


def partition_requests(instance: dg.DagsterInstance, spec: ExperimentSpec,
                       targets: Mapping[str, plan.Target]
                       ) -> tuple[list[dg.AddDynamicPartitionsRequest], list[str] | None]:
    """The dynamic partitions a sequential experiment's wanted keys need, and the set's order
    once they are added (None for a fixed experiment: its grid is static)."""
    if not plan.is_sequential(spec):
        return [], None
    return partitions.add_request(instance, spec.name, plan.wanted_partitions(spec, targets))


def add_partitions(instance: dg.DagsterInstance, spec: ExperimentSpec,
                   targets: Mapping[str, plan.Target]) -> list[str] | None:
    """Add a sequential experiment's wanted keys to its dynamic partitions now (``simlab sweep``,
    before it launches runs); the set's order, or None for a fixed experiment's static grid."""
    if not plan.is_sequential(spec):
        return None
    return partitions.add_keys(instance, spec.name, plan.wanted_partitions(spec, targets))


def beyond_plan(spec: ExperimentSpec, targets: Mapping[str, plan.Target]) -> list[str]:
    """Keys of results the plan does not want (e.g. launched from the UI): not used."""
    _, present = current_results(spec, default_storage().store())
    return _beyond(targets, present)


def spec_is_current(instance: dg.DagsterInstance, spec: ExperimentSpec) -> bool:
    """Whether ``<name>/spec`` was last materialised from this very definition."""
    record = instance.get_latest_materialization_event(spec_key(spec.name))
    metadata = record.asset_materialization.metadata if record and record.asset_materialization \
        else {}
    recorded = metadata.get("spec_hash")
    return recorded is not None and recorded.value == spec.spec_hash()


def spec_job_name(name: str) -> str:
    return f"{name}_spec"


VALID_FILE_CHECK = "valid_experiment_file"


def rejection_digest(error) -> str:
    """What identifies one rejection: the file's bytes and the reasons (a change of either is a
    new rejection, logged and reported again)."""
    digest = hashlib.sha256(str(error).encode())
    with contextlib.suppress(OSError):  # gone since: the reasons alone
        digest.update(error.path.read_bytes() if error.path else b"")
    return digest.hexdigest()[:16]


def rejection_evaluation(key: dg.AssetKey, error) -> dg.AssetCheckEvaluation:
    """The failed check a rejected file shows in the UI (red), with the file and reasons."""
    return dg.AssetCheckEvaluation(
        asset_key=key, check_name=VALID_FILE_CHECK, passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"file": str(error.path) if error.path else "",
                  "errors": ui.records_table([{"field": field or "(file)", "reason": reason}
                                              for field, reason in error.errors])})


def experiment_files_sensor(loaded: dict[str, ExperimentSpec], directory, batch_size_of,
                            jobs: list, rejected_keys: Mapping[str, dg.AssetKey] | None = None
                            ) -> dg.SensorDefinition:
    """Requests runs for exactly the missing partitions of a new or changed experiment file, after
    its spec (the lineage root) when that is not current; reports rejected files.

    Partitions come from the files when the code location loads; a file whose content differs from
    the loaded definition needs a reload of the code location first, and the sensor says so. A
    rejected file is logged, and its asset's ``valid_experiment_file`` check fails (``rejected_keys``:
    file path -> its asset), once per change of the file.
    """
    rejected_keys = dict(rejected_keys or {})

    @dg.sensor(name="experiment_files", jobs=jobs, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Runs the missing partitions of new or changed experiment files; "
                           "reports invalid files.")
    def sensor(context: dg.SensorEvaluationContext):
        seen: dict = json.loads(context.cursor) if context.cursor else {}
        specs, errors = load_experiments(directory)
        requests, dynamic, notes, cursor = [], [], [], dict(seen)
        for spec in specs:
            digest = spec.spec_hash()
            if seen.get(spec.name) == digest:
                continue
            current = loaded.get(spec.name)
            if current is None or current.spec_hash() != digest:
                notes.append(f"{spec.name}: file changed since the code location loaded; "
                             "reload the code location to add its partitions")
                continue
            targets, missing = missing_partitions(context.instance, spec)
            adds, order = partition_requests(context.instance, spec, targets)
            dynamic += adds
            if not spec_is_current(context.instance, spec):
                # The lineage root first, so the replications record its data version; the
                # missing partitions follow on a later tick (the cursor does not move yet).
                requests.append(dg.RunRequest(run_key=f"{spec.name}:spec:{digest[:12]}",
                                              job_name=spec_job_name(spec.name),
                                              tags={"simlab/experiment": spec.name}))
                notes.append(f"{spec.name}: spec requested; its {len(missing)} missing "
                             "partitions follow once it is materialised")
                continue
            requests += run_requests(spec, missing, batch_size_of(spec),
                                     f"{spec.name}:{digest[:12]}", order)
            notes.append(f"{spec.name}: {len(missing)} missing partitions requested")
            cursor[spec.name] = digest
        events, rejected = _rejections(context, errors, seen.get("_rejected", {}), rejected_keys)
        cursor.pop("_rejected", None)
        if rejected:
            cursor["_rejected"] = rejected
            notes.append(f"{len(rejected)} rejected file(s): "
                         + ", ".join(sorted(p.rsplit("/", 1)[-1] for p in rejected))
                         + " (their check valid_experiment_file fails)")
        message = "; ".join(notes) or "no changes"
        context.log.info(message)
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else message,
                               dynamic_partitions_requests=dynamic, asset_events=events,
                               cursor=json.dumps(cursor, sort_keys=True))

    return sensor


def _rejections(context: dg.SensorEvaluationContext, errors: list, seen: Mapping[str, str],
                keys: Mapping[str, dg.AssetKey]
                ) -> tuple[list[dg.AssetCheckEvaluation], dict[str, str]]:
    """A failed check and one error line per rejected file that is new or changed since the last
    tick; the cursor's part for rejected files (path -> digest)."""
    events, now = [], {}
    for error in errors:
        path = str(error.path)
        now[path] = rejection_digest(error)
        if seen.get(path) == now[path]:
            continue
        context.log.error(str(error))
        key = keys.get(path)
        if key is not None:
            events.append(rejection_evaluation(key, error))
        else:  # rejected after the code location loaded: no asset yet
            context.log.error(f"{path}: reload the code location to show it in the catalog")
    return events, now


_ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
           dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def sequential_sensor(loaded: dict[str, ExperimentSpec], batch_size_of,
                      jobs: list) -> dg.SensorDefinition:
    """Runs the next round of the sequential procedure when an experiment's round has landed.

    For each experiment with a precision target (or a selection's second stage): once new
    replications are materialised and none of the experiment's runs is queued or running, the
    targets are replayed from the result files (``plan.py``) and the missing partitions requested.
    The rounds are the same as ``simlab sweep``'s, whoever runs them.
    """

    @dg.sensor(name="sequential_replications", jobs=jobs, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Adds replications, round after round, to the configurations whose "
                           "interval is not yet as narrow as the experiment's precision target.")
    def sensor(context: dg.SensorEvaluationContext):
        seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        cursor, requests, notes, dynamic = dict(seen), [], [], []
        for spec in loaded.values():
            if not plan.uses_results(spec):
                continue
            latest = latest_materialization(context.instance, replications_key(spec.name))
            if latest is None or seen.get(spec.name) == latest:
                continue  # nothing ran yet (a sweep or the file sensor starts it), or no news
            active = context.instance.get_runs(
                filters=dg.RunsFilter(tags={"simlab/experiment": spec.name}, statuses=_ACTIVE),
                limit=1)
            if active:
                notes.append(f"{spec.name}: waiting for run {active[0].run_id} to finish")
                continue
            targets, missing = missing_partitions(context.instance, spec)
            adds, order = partition_requests(context.instance, spec, targets)
            dynamic += adds
            if missing:
                digest = ",".join(f"{k}={t.replications}" for k, t in sorted(targets.items()))
                requests += run_requests(spec, missing, batch_size_of(spec),
                                         f"{spec.name}:seq:{digest}", order)
                count = sum(last - first + 1  # a partition may be a block of replications
                            for _, first, last in map(partitions.split_block, missing))
                notes.append(f"{spec.name}: {count} more replications requested")
            else:
                states = sorted({t.status for t in targets.values()})
                notes.append(f"{spec.name}: no more replications needed ({', '.join(states)})")
            cursor[spec.name] = latest
        message = "; ".join(notes) or "no new replications"
        context.log.info(message)
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else message,
                               dynamic_partitions_requests=dynamic,
                               cursor=json.dumps(cursor, sort_keys=True))

    return sensor


def dead_runs_sensor() -> dg.SensorDefinition:
    """Fails runs whose process is gone and frees their slots, from the daemon's side.

    A killed ``simlab sweep`` (kill -9, OOM) or run process leaves its runs STARTED: they hold
    the run queue's slots (every queued run waits) and the ``sequential_replications`` sensor
    waits for them, for every experiment. This sensor makes the judgement ``simlab sweep`` makes
    before it starts (``recovery.recover``: pid, host and boot id, the process's start time), so
    that ``dagster dev`` alone recovers within a minute; on Kubernetes run monitoring does it.
    """

    @dg.sensor(name="dead_runs", minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Fails runs whose process is gone (a killed sweep, a killed run "
                           "process) and frees the run-queue and pool slots they hold.")
    def sensor(context: dg.SensorEvaluationContext):
        lines = recovery.recover(context.instance, by="the dead_runs sensor")
        for line in lines:
            context.log.warning(line)
        return dg.SkipReason("; ".join(lines) if lines else "no dead runs")

    return sensor
