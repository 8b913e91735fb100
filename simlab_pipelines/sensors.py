"""Sensors: new or changed experiment files, and bad files reported where users look."""

import json
import logging

import dagster as dg

from simlab_pipelines.assets import replications_key
from simlab_pipelines.experiments import ExperimentSpec, load_experiments
from simlab_pipelines.partitions import batches, partition_key, range_tags

log = logging.getLogger("simlab.sensors")


def replications_job_name(name: str) -> str:
    return f"{name}_replications"


def missing_partitions(instance: dg.DagsterInstance, spec: ExperimentSpec) -> list[str]:
    """Partition keys of ``spec`` with no materialization, in configuration/replication order."""
    done = instance.get_materialized_partitions(replications_key(spec.name))
    return [partition_key(c.key, r) for c in spec.configurations_list()
            for r in range(spec.replications) if partition_key(c.key, r) not in done]


def run_requests(spec: ExperimentSpec, keys: list[str], batch_size: int,
                 key_prefix: str) -> list[dg.RunRequest]:
    """One run request per batch of consecutive replications of one configuration."""
    return [
        dg.RunRequest(
            run_key=f"{key_prefix}:{config_key}:{first}-{last}",
            job_name=replications_job_name(spec.name),
            tags={**range_tags(config_key, first, last), "simlab/experiment": spec.name},
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
            missing = missing_partitions(context.instance, spec)
            requests += run_requests(spec, missing, batch_size_of(spec), f"{spec.name}:{digest[:12]}")
            notes.append(f"{spec.name}: {len(missing)} missing partitions requested")
            cursor[spec.name] = digest
        message = "; ".join(notes + [str(e).replace("\n", "; ") for e in errors]) or "no changes"
        context.log.info(message)
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else message,
                               cursor=json.dumps(cursor, sort_keys=True))

    return sensor
