"""Builds the Dagster definitions of a set of experiments: their assets, jobs, checks, sensors and
schedule. An invalid file is logged and shown in the UI (an asset in the group
``rejected_experiments`` whose ``valid_experiment_file`` check fails, the code location's metadata
and the file sensor's log); it never takes the valid ones down."""

import hashlib
import logging
import re
from pathlib import Path

import dagster as dg

from simlab_pipelines import logs, plan, settings
from simlab_pipelines.assets import experiment_assets, replications_key, spec_key, summary_key
from simlab_pipelines.checks import experiment_checks
from simlab_pipelines.experiments import ExperimentSpec
from simlab_pipelines.resources import default_storage
from simlab_pipelines.schedules import VALIDATION_EXPERIMENT, validation_schedule
from simlab_pipelines.sensors import (
    VALID_FILE_CHECK,
    dead_runs_sensor,
    experiment_files_sensor,
    rejection_evaluation,
    replications_job_name,
    sequential_sensor,
    spec_job_name,
)

log = logging.getLogger("simlab.definitions")
_WARNED: set[str] = set()  # definitions whose partitions warning was given


def give_partitions_warning(spec: ExperimentSpec) -> str | None:
    """``spec.partitions_warning()``, recorded as given in this process: a sweep announces it
    (every time) and then builds the definitions, which then do not log it again."""
    warning = spec.partitions_warning()
    if warning is not None:
        _WARNED.add(spec.spec_hash())
    return warning


def batch_size(spec: ExperimentSpec) -> int:
    return spec.max_partitions_per_run or settings.max_partitions_per_run()


# Dagster uses a job's own loggers only when its run config names them: the JSON console logger.
_JSON_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _job(name: str, key: dg.AssetKey, description: str):
    return dg.define_asset_job(name, selection=dg.AssetSelection.assets(key),
                               description=description, config=_JSON_LOGS)


def replications_job(spec: ExperimentSpec):
    return _job(replications_job_name(spec.name), replications_key(spec.name),
                f"Simulations of '{spec.name}' (partitioned).")


def spec_job(spec: ExperimentSpec):
    return _job(spec_job_name(spec.name), spec_key(spec.name),
                f"Record the definition of '{spec.name}'.")


def summary_job(spec: ExperimentSpec):
    return _job(f"{spec.name}_summary", summary_key(spec.name),
                f"Rebuild the DuckDB tables of '{spec.name}'.")


def rejected_file_asset(error, taken: set[str]) -> dg.AssetSpec:
    """A bad experiment file, shown in the UI's asset catalog with its errors as description.

    Keyed by the file's stem; when that is taken (``broken.yaml`` and ``broken.yml``, or
    ``a-b.yaml`` and ``a_b.yaml``), by its whole name, then with a short hash of its path, so no
    bad file can collide with another and take the code location down. ``taken`` collects the
    keys used so far.
    """
    path = error.path
    candidates = [path.stem, path.name] if path else ["unknown"]
    cleaned = [re.sub(r"[^A-Za-z0-9_]", "_", c) or "unnamed" for c in candidates]
    safe = next((c for c in cleaned if c not in taken), None)
    if safe is None:
        safe = cleaned[-1] + "_" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
    taken.add(safe)
    return dg.AssetSpec(
        key=dg.AssetKey(["rejected_experiments", safe]),
        group_name="rejected_experiments",
        description=f"REJECTED experiment file, not loaded:\n\n{error}",
        metadata={"file": str(error.path) if error.path else "",
                  "errors": dg.MetadataValue.json([list(e) for e in error.errors])},
    )


def rejected_file_check(key: dg.AssetKey, error) -> dg.AssetChecksDefinition:
    """The check that makes a rejected file red in the UI: it always fails, with the reasons.

    The ``experiment_files`` sensor reports it once per change of the file; executing it from the
    UI reports it again."""

    @dg.asset_check(asset=key, name=VALID_FILE_CHECK, blocking=False,
                    description="The experiment file loads: schema, model, parameters and bounds.")
    def check() -> dg.AssetCheckResult:
        evaluation = rejection_evaluation(key, error)
        return dg.AssetCheckResult(passed=False, severity=evaluation.severity,
                                   metadata=evaluation.metadata)

    return check


def build_definitions(specs: list[ExperimentSpec], errors: list | None = None,
                      directory: Path | None = None) -> dg.Definitions:
    """Definitions for ``specs``; ``errors`` (bad files) are logged and shown as metadata."""
    errors = errors or []
    for error in errors:
        log.error("experiment file rejected: %s", error)
    taken: set[str] = set()
    assets: list = [rejected_file_asset(error, taken) for error in errors]
    checks: list = [rejected_file_check(a.key, e) for a, e in zip(assets, errors, strict=True)]
    rejected_keys = {str(e.path): a.key for a, e in zip(assets, errors, strict=True)}
    jobs, schedules = [], []
    for spec in specs:
        warning = spec.partitions_warning()
        if warning and spec.spec_hash() not in _WARNED:  # once per definition and process
            _WARNED.add(spec.spec_hash())
            log.warning(warning)
        assets += experiment_assets(spec)
        checks += experiment_checks(spec)
        jobs += [spec_job(spec), replications_job(spec), summary_job(spec)]
        if spec.name == VALIDATION_EXPERIMENT:
            schedules.append(validation_schedule(spec, batch_size(spec), jobs[-2]))
    sensors = [
        dg.AutomationConditionSensorDefinition(
            "summary_automation", target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
            description="Rebuilds an experiment's summary when its replications land."),
        dead_runs_sensor(),
    ]
    replication_jobs = [j for j in jobs if j.name.endswith("_replications")]
    spec_jobs = [j for j in jobs if j.name.endswith("_spec")]
    by_name = {s.name: s for s in specs}
    if any(plan.uses_results(s) for s in specs):
        sensors.append(sequential_sensor(by_name, batch_size, replication_jobs))
    if directory is not None:
        sensors.append(experiment_files_sensor(by_name, directory, batch_size,
                                               spec_jobs + replication_jobs, rejected_keys))
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={"simlab": default_storage()},
        loggers={"console": logs.dagster_logger()},  # run and step log lines as JSON
        # The step runs in the run process and spreads its partitions over its own process pool.
        executor=dg.in_process_executor,
        metadata={
            "experiments_dir": str(directory) if directory else "",
            "experiments": dg.MetadataValue.json(sorted(s.name for s in specs)),
            "rejected_experiment_files": dg.MetadataValue.md(
                "\n".join(f"- `{line}`" for e in errors for line in str(e).splitlines()) or "none"),
        },
    )
