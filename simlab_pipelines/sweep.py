"""``simlab sweep``: run one experiment's missing partitions through Dagster on the local instance.

Each batch (consecutive replications of one configuration) is one Dagster run, executed in this
process with ``execute_job`` so it is recorded in the instance and shows in the UI; runs reuse one
process pool. With a ``precision`` target, rounds follow until every configuration meets it or
reaches ``max_replications`` (``plan.py``: the same rounds the Dagster sensor runs). Then the
summary asset (and its checks) is materialised the same way.
"""

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import sqlalchemy as sa

from simlab_pipelines import plan, telemetry
from simlab_pipelines.assets import (
    DUCKDB_POOL,
    TRACEPARENT_TAG,
    replications_key,
    spec_key,
    summary_key,
)
from simlab_pipelines.build import batch_size as default_batch_size
from simlab_pipelines.build import build_definitions
from simlab_pipelines.experiments import ExperimentSpec, load_experiment
from simlab_pipelines.partitions import batches, range_tags
from simlab_pipelines.resources import default_storage
from simlab_pipelines.sensors import (
    NO_RETRY_TAGS,
    add_partitions,
    beyond_plan,
    latest_materialization,
    missing_partitions,
    replications_job_name,
    spec_is_current,
)
from simlab_pipelines.summary import query


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
    beyond: list[str] = field(default_factory=list)  # results beyond the plan: not used


def _run(path: Path, job_name: str, instance: dg.DagsterInstance,
         tags: dict[str, str]):
    recon = dg.build_reconstructable_job("simlab_pipelines.sweep", "experiment_job",
                                         reconstructable_kwargs={"path": str(path),
                                                                 "job_name": job_name})
    # The run's own events go to the instance (and the UI); the terminal gets warnings only.
    return dg.execute_job(recon, instance=instance, tags=tags, raise_on_error=False,
                          run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})


def sweep(path: Path, instance: dg.DagsterInstance, *, workers: int | None = None,
          batch_size: int | None = None,
          progress: Callable[[int, int], None] | None = None,
          announce: Callable[[str], None] | None = None) -> SweepReport:
    """Run the missing partitions of the experiment in ``path`` (in rounds when it has a
    precision target), then its summary. ``progress(done, total)`` follows the simulations;
    ``announce`` gets a line when a new round starts."""
    path = Path(path).resolve()
    spec = load_experiment(path)
    targets, missing = missing_partitions(instance, spec)
    report = SweepReport(spec.name, len(plan.wanted_partitions(spec, targets)), 0)
    report.beyond = beyond_plan(spec, targets)
    if not missing and summary_is_current(instance, spec):
        return report
    size = batch_size or default_batch_size(spec)
    sweep_id = uuid.uuid4().hex[:12]
    ensure_pool(instance, DUCKDB_POOL)
    telemetry.configure_tracing()
    with telemetry.batch_span("simlab.sweep", {"simlab.experiment": spec.name,
                                               "simlab.partitions": len(missing)}):
        base_tags = {TRACEPARENT_TAG: telemetry.current_traceparent() or "",
                     "simlab/sweep": sweep_id, "simlab/experiment": spec.name, **NO_RETRY_TAGS}
        if workers:
            base_tags["simlab/workers"] = str(workers)
        if not spec_is_current(instance, spec):  # the lineage root, once per new definition
            result = _run(path, f"{spec.name}_spec", instance, base_tags)
            if not result.success:
                report.failed_runs.append(result.run_id)
        done = 0
        while missing and not report.failed_runs:
            if report.rounds and announce:
                configs = len({key.split("|")[0] for key in missing})
                announce(f"{spec.name}: round {len(report.rounds) + 1} of the sequential "
                         f"procedure: {len(missing)} more replications for {configs} "
                         "configuration(s)")
            report.rounds.append(len(missing))
            total = done + len(missing)
            if progress:
                progress(done, total)
            # A sequential experiment's partitions are dynamic: its round's keys first.
            for config_key, first, last in batches(missing, size,
                                                   add_partitions(instance, spec, targets)):
                result = _run(path, replications_job_name(spec.name), instance,
                              {**base_tags, **range_tags(config_key, first, last)})
                report.runs.append(result.run_id)
                if not result.success:
                    report.failed_runs.append(result.run_id)
                done += last - first + 1
                if progress:
                    progress(done, total)
            if not plan.uses_results(spec):
                break
            before = missing
            targets, missing = missing_partitions(instance, spec)
            if missing == before:  # nothing landed: stop rather than loop
                break
        report.missing = done
        report.total = len(plan.wanted_partitions(spec, targets))
        result = _run(path, f"{spec.name}_summary", instance, base_tags)
        report.summary_run = result.run_id
        report.checks = {
            evaluation.check_name: evaluation.passed
            for evaluation in result.get_asset_check_evaluations()}
        if not result.success:
            report.failed_runs.append(result.run_id)
    return report
