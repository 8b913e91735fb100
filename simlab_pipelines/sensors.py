"""Sensors: new or changed experiment files, and bad files reported where users look."""

import json
import logging

import dagster as dg

from simlab_pipelines import plan
from simlab_pipelines.assets import replications_key
from simlab_pipelines.experiments import ExperimentSpec, load_experiments
from simlab_pipelines.partitions import batches, range_tags
from simlab_pipelines.resources import default_storage
from simlab_pipelines.summary import current_results

log = logging.getLogger("simlab.sensors")


# A run that failed because a simulation raised would fail again (same inputs, same streams):
# run retries are for crashed run processes and pods, the asset's RetryPolicy for transient errors.
NO_RETRY_TAGS = {"dagster/retry_on_asset_or_op_failure": "false"}


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey) -> int | None:
    """The storage id of the asset's latest materialization (None if never materialised)."""
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else None


def replications_job_name(name: str) -> str:
    return f"{name}_replications"


def missing_partitions(instance: dg.DagsterInstance, spec: ExperimentSpec
                       ) -> tuple[dict[str, plan.Target], list[str]]:
    """The replication targets now, and the wanted partition keys not materialised in the
    instance or whose file is gone (in configuration/replication order)."""
    targets, present = current_results(spec, default_storage().store())
    materialized = instance.get_materialized_partitions(replications_key(spec.name))
    return targets, plan.missing_partitions(spec, targets, materialized, present)


def run_requests(spec: ExperimentSpec, keys: list[str], batch_size: int,
                 key_prefix: str) -> list[dg.RunRequest]:
    """One run request per batch of consecutive replications of one configuration."""
    return [
        dg.RunRequest(
            run_key=f"{key_prefix}:{config_key}:{first}-{last}",
            job_name=replications_job_name(spec.name),
            tags={**range_tags(config_key, first, last), "simlab/experiment": spec.name,
                  **NO_RETRY_TAGS},
        )
        for config_key, first, last in batches(keys, batch_size)
    ]


def experiment_files_sensor(loaded: dict[str, ExperimentSpec], directory, batch_size_of,
                            jobs: list) -> dg.SensorDefinition:
    """Requests runs for exactly the missing partitions of a new or changed experiment file.

    Partitions come from the files when the code location loads; a file whose content differs from
    the loaded definition needs a reload of the code location first, and the sensor says so.
    """

    @dg.sensor(name="experiment_files", jobs=jobs, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Runs the missing partitions of new or changed experiment files; "
                           "reports invalid files.")
    def sensor(context: dg.SensorEvaluationContext):
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        specs, errors = load_experiments(directory)
        for error in errors:
            context.log.error(str(error))
        requests, notes, cursor = [], [], dict(seen)
        for spec in specs:
            digest = spec.spec_hash()
            if seen.get(spec.name) == digest:
                continue
            current = loaded.get(spec.name)
            if current is None or current.spec_hash() != digest:
                notes.append(f"{spec.name}: file changed since the code location loaded; "
                             "reload the code location to add its partitions")
                continue
            _, missing = missing_partitions(context.instance, spec)
            requests += run_requests(spec, missing, batch_size_of(spec), f"{spec.name}:{digest[:12]}")
            notes.append(f"{spec.name}: {len(missing)} missing partitions requested")
            cursor[spec.name] = digest
        message = "; ".join(notes + [str(e).replace("\n", "; ") for e in errors]) or "no changes"
        context.log.info(message)
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else message,
                               cursor=json.dumps(cursor, sort_keys=True))

    return sensor


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
        cursor, requests, notes = dict(seen), [], []
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
            if missing:
                digest = ",".join(f"{k}={t.replications}" for k, t in sorted(targets.items()))
                requests += run_requests(spec, missing, batch_size_of(spec),
                                         f"{spec.name}:seq:{digest}")
                notes.append(f"{spec.name}: {len(missing)} more replications requested")
            else:
                states = sorted({t.status for t in targets.values()})
                notes.append(f"{spec.name}: no more replications needed ({', '.join(states)})")
            cursor[spec.name] = latest
        message = "; ".join(notes) or "no new replications"
        context.log.info(message)
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else message,
                               cursor=json.dumps(cursor, sort_keys=True))

    return sensor
