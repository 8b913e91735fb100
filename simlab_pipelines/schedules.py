"""Schedules: re-run the validation experiment nightly, so a change to the engine that breaks
agreement with queueing theory shows up as a failed asset check the next morning."""

import dagster as dg

from simlab_pipelines import plan
from simlab_pipelines.experiments import ExperimentSpec
from simlab_pipelines.sensors import replications_job_name, run_requests

VALIDATION_EXPERIMENT = "mmck_validation"


def validation_schedule(spec: ExperimentSpec, batch_size: int, job) -> dg.ScheduleDefinition:
    @dg.schedule(name="nightly_validation", cron_schedule="0 3 * * *", job=job,
                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
                 description=f"Re-runs every partition of '{spec.name}' at 03:00 UTC; the summary "
                             "and its theory check follow automatically.")
    def schedule(context: dg.ScheduleEvaluationContext):
        keys = plan.wanted_partitions(spec, {})  # every partition (blocks, if it has them)
        stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
        return run_requests(spec, keys, batch_size, f"nightly:{stamp}")

    return schedule


__all__ = ["VALIDATION_EXPERIMENT", "replications_job_name", "validation_schedule"]
