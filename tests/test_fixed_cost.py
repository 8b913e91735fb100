"""A sweep's fixed cost (issue 24): the pool's fork server starts before the command's heavy
imports and preloads what a worker's first result file needs; the summary step writes its HTML report from the analysis it has just made; a report
without a design or a search loads neither scipy.stats nor the search."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

START = """
import json, sys
from multiprocessing import forkserver
from simlab_pipelines import cli
cli._start_pool_server(int(sys.argv[1]))
pid = forkserver._forkserver._forkserver_pid
heavy = sorted(m for m in ("dagster", "polars", "duckdb", "engine") if m in sys.modules)
print(json.dumps({"server": pid, "heavy": heavy}))
"""

# A pool worker is forked from the fork server, which imported pool_server.PRELOAD: its first
# result file (a real simulation, written as a worker writes it) must import nothing heavy.
WORKER = """
import importlib, json, sys
from simlab_pipelines import pool_server
for name in pool_server.PRELOAD:
    importlib.import_module(name)
before = set(sys.modules)
from simlab_pipelines import batch
task = batch.Task(experiment="w", config_key="servers-1", replication=0,
                  partition_key="servers-1|0", model="mmck",
                  params={"servers": 1, "arrival_rate": 0.5, "service_rate": 1.0},
                  seed=7, horizon=50.0, warmup=5.0, common_random_numbers=True,
                  series_interval=None, inputs_hash="h", code_version="c", run_id="r",
                  results_uri=sys.argv[1], traceparent=None)
outcome = batch.run_task(task)
assert outcome.error is None, outcome.error
packages = {m.split(".")[0] for m in before}
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} - packages)))
"""

REPORT = """
import json, sys
import simlab_pipelines.report
print(json.dumps(sorted(m for m in ("scipy.stats", "simlab_pipelines.search", "optuna", "SALib")
                        if m in sys.modules)))
"""


def _python(code: str, *args: str):
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    return json.loads(out)


def test_the_fork_server_starts_before_the_heavy_imports():
    started = _python(START, "2")
    assert started["server"] is not None
    assert started["heavy"] == []  # nothing of Dagster, polars, DuckDB or the engine yet


def test_no_fork_server_for_a_sweep_without_a_pool():
    assert _python(START, "1")["server"] is None


def test_a_pool_worker_first_result_file_needs_nothing_beyond_the_preload(tmp_path):
    """Nothing a worker's first file needs is left to import then (pyarrow, for one, imports
    pandas at its first conversion of Python values, ~0.4 CPU-s: storage builds its Arrow
    arrays from buffers)."""
    assert _python(WORKER, str(tmp_path)) == []  # no package it had not loaded yet


def test_the_report_module_loads_no_statistics_it_may_not_need():
    assert _python(REPORT) == []


def test_the_summary_writes_the_report_simlab_report_would(tiny, materialize, tmp_path):
    """Written from the summary's own analysis (not read back from DuckDB and analysed again),
    the report is the very file ``simlab report`` builds from the DuckDB file."""
    import dagster as dg

    from simlab_pipelines.assets import replications_key, summary_key
    from simlab_pipelines.partitions import range_tags
    from simlab_pipelines.report import write_experiment_report

    spec, storage = tiny
    with dg.instance_for_test() as instance:
        for config in spec.configurations_list():
            assert materialize(spec, storage, instance, [replications_key(spec.name)],
                               tags=range_tags(config.key, 0, spec.replications - 1)).success
        assert materialize(spec, storage, instance, [summary_key(spec.name)]).success
        event = instance.get_latest_materialization_event(summary_key(spec.name))
        written = Path(event.asset_materialization.metadata["report"].path)
    rebuilt = write_experiment_report(spec.name, Path(storage.duckdb_path), tmp_path / "r.html")
    assert written.read_text() == rebuilt.read_text()


def test_the_next_round_starts_while_the_last_run_writes_its_events(lab, monkeypatch):
    """A sequential sweep plans its next round as soon as a round's simulations are in (from
    their result files) and starts it while the round's last run is still recording them: here
    that bookkeeping is made to last a second, and every round's run starts before the
    previous one ends. The rounds are the ones the results call for, and all of them land."""
    import shutil
    import time

    import dagster as dg

    import simlab_pipelines.assets as assets
    from simlab_pipelines.sweep import sweep

    path = lab / "experiments" / "tiny_sequential.yaml"
    shutil.copy(Path(__file__).parent / "fixtures" / "sequential" / "tiny_sequential.yaml", path)
    recording = assets.add_partition_metadata

    def slow(*args, **kwargs):  # runs after the step's outcomes are in (batch.simulated)
        time.sleep(1.0)
        return recording(*args, **kwargs)

    monkeypatch.setattr(assets, "add_partition_metadata", slow)
    with dg.DagsterInstance.get() as instance:
        report = sweep(path, instance, workers=2)
        records = sorted(instance.get_run_records(dg.RunsFilter(
            job_name="tiny_sequential_replications")), key=lambda r: r.start_time)
    assert len(report.rounds) >= 2 and len(records) == len(report.rounds)  # one run a round
    assert not report.failed_runs and report.still_missing == 0
    assert report.landed == report.missing == sum(report.rounds) == report.total
    for previous, following in itertools.pairwise(records):
        assert following.start_time < previous.end_time


def test_simlab_sweep_opens_one_instance_for_all_its_overlapping_runs(lab, monkeypatch):
    """simlab sweep opens the instance once, without capturing the runs' output, and its
    overlapping runs share it (a second instance cost ~0.1 CPU-s to open); four runs of three
    partitions, two at a time, all land."""
    import dagster as dg
    from dagster._core.instance import factory

    from tests.lab import sweep

    opened = []
    create = factory.create_instance_from_ref  # every way of opening an instance ends here

    def counted(ref, *args, **kwargs):
        opened.append(ref)
        return create(ref, *args, **kwargs)

    monkeypatch.setattr(factory, "create_instance_from_ref", counted)
    output = sweep(lab / "experiments" / "tiny_mmck.yaml", "--workers", "2", "--batch-size", "3")
    assert "ran 12 partitions in 4 run(s)" in output
    assert len(opened) == 1
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name="tiny_mmck_replications"))
    assert len(records) == 4 and all(r.dagster_run.is_success for r in records)


def test_the_sweeps_start_up_runs_without_collections_and_hands_its_objects_back(lab,
                                                                                  monkeypatch):
    """simlab sweep pauses the garbage collector for its imports and the instance, then freezes
    what they made out of later collections (on while the runs go); afterwards the collector is
    on and nothing is frozen, also when the sweep fails (a process running many commands must
    not keep their garbage)."""
    import gc

    from click.testing import CliRunner

    import simlab_pipelines.sweep as sweep_module
    from simlab_pipelines.cli import main

    seen = {}

    def spy(*args, **kwargs):
        seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
        raise RuntimeError("stop here")

    monkeypatch.setattr(sweep_module, "sweep", spy)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    result = CliRunner().invoke(main, ["sweep", str(lab / "experiments" / "tiny_mmck.yaml")])
    assert isinstance(result.exception, RuntimeError), result.output
    assert seen["enabled"] and seen["frozen"] > 10_000  # Dagster's, polars', the instance's...
    assert gc.isenabled() and gc.get_freeze_count() == 0
    bad = lab / "experiments" / "bad.yaml"
    bad.write_text("name: bad\n")  # refused before the instance is opened
    result = CliRunner().invoke(main, ["sweep", str(bad)])
    assert result.exit_code == 2, result.output
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_process_that_loads_the_definitions_freezes_them_out_of_full_collections(lab):
    """A run's process (the daemon's, a Kubernetes run pod's, `dagster asset materialize`)
    loads the definitions once: they and Dagster are frozen out of the collector's walks."""
    frozen = _python("import gc, json; import simlab_pipelines.definitions; "
                     "print(json.dumps([gc.isenabled(), gc.get_freeze_count()]))")
    assert frozen[0] and frozen[1] > 100_000
