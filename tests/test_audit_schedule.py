"""The nightly schedule re-runs every partition of the validation experiment, in batched runs of
its replications job, evaluated with build_schedule_context on a test instance."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from simlab_pipelines.definitions import load_definitions
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.schedules import VALIDATION_EXPERIMENT

EXAMPLES = Path(__file__).resolve().parent.parent / "experiments"


def _covered(request: dg.RunRequest) -> list[str]:
    start = request.tags["dagster/asset_partition_range_start"]
    end = request.tags["dagster/asset_partition_range_end"]
    (config, first), (config_end, last) = start.split("|"), end.split("|")
    assert config == config_end  # a range keeps one configuration
    return [f"{config}|{r}" for r in range(int(first), int(last) + 1)]


def test_nightly_validation_requests_every_partition_once_per_night(monkeypatch):
    monkeypatch.setenv("SIMLAB_MAX_PARTITIONS_PER_RUN", "15")
    spec = load_experiment(EXAMPLES / f"{VALIDATION_EXPERIMENT}.yaml")
    defs = load_definitions(EXAMPLES)
    schedule = defs.resolve_schedule_def("nightly_validation")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # turned on in the UI
    assert schedule.job_name == f"{VALIDATION_EXPERIMENT}_replications"

    with dg.instance_for_test() as instance:
        nights = {}
        for day in (1, 2):
            # As a context manager: the context sets the instance's state storage for the
            # process, and left open it outlives the instance (later definition loads fail).
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(
                    2026, 3, day, 3, tzinfo=UTC)) as context:
                requests = list(schedule.evaluate_tick(context).run_requests)
            nights[day] = requests
            covered = [key for r in requests for key in _covered(r)]
            expected = [f"{c.key}|{r}" for c in spec.configurations_list()
                        for r in range(spec.replications)]
            assert sorted(covered) == sorted(expected)  # every partition, none twice
            assert all(len(_covered(r)) <= 15 for r in requests)  # batched as configured
            assert all(r.tags["simlab/experiment"] == VALIDATION_EXPERIMENT for r in requests)
            assert len({r.run_key for r in requests}) == len(requests)
        # run keys differ between nights, so the second night is not deduplicated away
        assert not {r.run_key for r in nights[1]} & {r.run_key for r in nights[2]}


def test_no_schedule_without_the_validation_experiment(tmp_path):
    (tmp_path / "restaurant_staffing.yaml").write_text(
        (EXAMPLES / "restaurant_staffing.yaml").read_text())
    defs = load_definitions(tmp_path)
    assert not list(defs.schedules or [])
