"""The Observatory's "done when", end to end: ``simlab sweep`` of 200 simulations over 2 pool
workers, exporting over OTLP/HTTP to a local receiver, delivers one ``simlab.simulation`` span per
simulation (seed and parameters on it), and every trace/span id in DuckDB's ``replications`` table
is a delivered span; the sweep is one connected trace (sweep -> batch -> simulation). And a run
executed as its own process the way a run pod does (``dagster api execute_run``) joins the trace
named by its ``simlab/traceparent`` tag and flushes every span before it exits; a simulation that
fails in a run is an error span with its exception.

The sweep runs as its own process, as a user runs it: a fresh process has no tracer provider, pool
or fork server left over from other tests, and the spans must survive that process's exit. The
batch span processor's schedule delay is set far beyond the sweep's length, so spans reach the
receiver only through the flushes at exit (pool workers' and the sweep process's), not by a
periodic export that would hide a missing flush.
"""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster._cli.api import ExecuteRunArgs
from lab import run_pod_run
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from otlp_receiver import ReceivedSpan, otlp_receiver

import engine
from simlab_pipelines import telemetry
from simlab_pipelines.assets import TRACEPARENT_TAG, experiment_assets, replications_key
from simlab_pipelines.experiments import ExperimentSpec, load_experiment
from simlab_pipelines.partitions import range_tags

PROJECT = Path(__file__).resolve().parent.parent
SIMLAB = Path(sys.executable).parent / "simlab"
# 2 configurations x 100 replications, each a few simulated time units (milliseconds of CPU).
# Without common random numbers the spawn key is (replication, config hash): two parts to check.
EXPERIMENT = """\
name: observatory_e2e
description: End-to-end tracing test.
model: mmck
seed: 4242
replications: 100
horizon: 4
warmup: 1
common_random_numbers: false
parameters: {arrival_rate: 0.8, service_rate: 1.0, capacity: 10}
factors:
  servers: [1, 2]
objective: {metric: mean_wait, direction: minimize}
"""
SIMULATIONS = 200
BATCH_SIZE = 50
SECRET = "s3cr3t-e2e-value"  # in the sweep's environment and headers; must never be on a span
TRACE_URL = "https://grafana.example/explore?trace={trace_id}"


@dataclass(frozen=True)
class Sweep:
    """What the sweep left: its experiment, the spans and request headers the receiver got, the
    DuckDB file and the Dagster home."""

    spec: ExperimentSpec
    spans: list[ReceivedSpan]
    headers: list[dict[str, str]]
    db: Path
    home: Path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run the sweep once for the module."""
    root = tmp_path_factory.mktemp("observatory")
    data, home, experiments = root / "data", root / "dagster_home", root / "experiments"
    for directory in (data, home, experiments):
        directory.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    path = experiments / "observatory_e2e.yaml"
    path.write_text(EXPERIMENT)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "SIMLAB_")) and k != "DAGSTER_HOME"}
    env.update(SIMLAB_DATA_DIR=str(data), DAGSTER_HOME=str(home),
               SIMLAB_EXPERIMENTS_DIR=str(experiments), SIMLAB_API_TOKEN=SECRET,
               SIMLAB_TRACE_URL_TEMPLATE=TRACE_URL)
    with otlp_receiver() as receiver:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_HEADERS=f"x-simlab-test={SECRET}",
            OTEL_SERVICE_NAME="simlab-e2e",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=e2e",
            OTEL_BSP_SCHEDULE_DELAY="600000",  # only the flushes at exit export (see above)
        )
        done = subprocess.run(
            [str(SIMLAB), "sweep", str(path), "--workers", "2", "--batch-size", str(BATCH_SIZE)],
            env=env, cwd=root, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        # Everything was flushed before the sweep process exited: nothing more is coming.
        spans, headers = receiver.spans(), list(receiver.headers)
    return Sweep(load_experiment(path), spans, headers, data / "simlab.duckdb", home)


def test_one_span_per_simulation_with_its_seed_and_parameters(sweep):
    spec = sweep.spec
    simulations = [s for s in sweep.spans if s.name == telemetry.SIMULATION_SPAN_NAME]
    assert len(simulations) == SIMULATIONS
    assert len({s.span_id for s in simulations}) == SIMULATIONS
    configs = {c.key: c.params for c in spec.configurations_list()}
    seen = Counter()
    for span in simulations:
        a = span.attributes
        config_key, replication = a["simlab.config_key"], a["simlab.replication"]
        seen[config_key, replication] += 1
        params = configs[config_key]
        assert a["simlab.experiment"] == spec.name and a["simlab.model"] == "mmck"
        assert a["simlab.seed.entropy"] == spec.seed
        key = engine.spawn_key("mmck", params, replication, common_random_numbers=False)
        assert len(key) == 2 and a["simlab.seed.spawn_key"] == ",".join(map(str, key))
        assert {k.removeprefix("simlab.param."): v for k, v in a.items()
                if k.startswith("simlab.param.")} == params
        assert a["dagster.partition_key"] == f"{config_key}|{replication}"
        assert a["simlab.engine_version"] == engine.ENGINE_VERSION
        assert span.status == "UNSET"
        assert [name for name, _ in span.events] == ["simlab.warmup_end", "simlab.run_end"]
    expected = {(c, r) for c in configs for r in range(spec.replications)}
    assert set(seen) == expected and set(seen.values()) == {1}
    # A fresh experiment: the sweep simulated some while it started up (its head start, ahead.py),
    # recorded like the others, in their run's trace, and marked.
    assert any(s.attributes.get("simlab.simulated_ahead") is True for s in simulations)


def test_every_id_in_duckdb_is_a_delivered_span_of_that_simulation(sweep):
    delivered = {(s.trace_id, s.span_id): s for s in sweep.spans
                 if s.name == telemetry.SIMULATION_SPAN_NAME}
    with duckdb.connect(str(sweep.db), read_only=True) as con:
        rows = con.execute(
            "SELECT config_key, replication, seed_entropy, spawn_key, dagster_run_id, "
            "partition_key, trace_id, span_id FROM replications WHERE experiment = ?",
            [sweep.spec.name]).fetchall()
    assert len(rows) == SIMULATIONS
    for config_key, replication, entropy, spawn_key, run_id, partition, trace_id, span_id in rows:
        span = delivered.get((trace_id, span_id))
        assert span is not None, f"{partition}: trace {trace_id} span {span_id} never delivered"
        a = span.attributes
        assert (a["simlab.config_key"], a["simlab.replication"]) == (config_key, replication)
        assert a["simlab.seed.entropy"] == entropy
        assert a["simlab.seed.spawn_key"] == ",".join(map(str, spawn_key))
        assert (a["dagster.run_id"], a["dagster.partition_key"]) == (run_id, partition)



def test_partition_metadata_in_dagster_names_the_span_and_links_the_trace(sweep, monkeypatch):
    delivered = {s.attributes["dagster.partition_key"]: s for s in sweep.spans
                 if s.name == telemetry.SIMULATION_SPAN_NAME}
    monkeypatch.setenv("DAGSTER_HOME", str(sweep.home))  # dagster.yaml's paths are relative to it
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(replications_key(sweep.spec.name),
                                                  limit=10 * SIMULATIONS).records
    latest = {}
    for record in records:  # newest first
        latest.setdefault(record.partition_key, record.asset_materialization.metadata)
    assert set(latest) == set(delivered)
    for partition, metadata in latest.items():
        span = delivered[partition]
        assert (metadata["trace_id"].value, metadata["span_id"].value) == (span.trace_id,
                                                                          span.span_id)
        assert metadata["trace"].value == TRACE_URL.replace("{trace_id}", span.trace_id)

def test_the_sweep_is_one_connected_tree(sweep):
    spans = sweep.spans
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)  # no span delivered twice
    assert len({s.trace_id for s in spans}) == 1
    (root,) = [s for s in spans if not s.parent_span_id]
    assert root.name == "simlab.sweep"
    assert root.attributes["simlab.partitions"] == SIMULATIONS
    for span in spans:
        if span is not root:
            assert span.parent_span_id in by_id, f"{span.name} {span.span_id}: parent missing"
    batches = [s for s in spans if s.name == "simlab.batch"]
    assert len(batches) == SIMULATIONS // BATCH_SIZE
    assert all(b.parent_span_id == root.span_id for b in batches)
    assert sum(b.attributes["simlab.partitions"] for b in batches) == SIMULATIONS
    # Each simulation hangs under the batch span of the run that recorded it.
    runs = {b.span_id: b.attributes["dagster.run_id"] for b in batches}
    for span in spans:
        if span.name == telemetry.SIMULATION_SPAN_NAME:
            assert runs[span.parent_span_id] == span.attributes["dagster.run_id"]
    (summary,) = [s for s in spans if s.name == "simlab.summary"]
    assert summary.parent_span_id == root.span_id
    assert Counter(s.name for s in spans) == {
        "simlab.sweep": 1, "simlab.batch": len(batches), "simlab.simulation": SIMULATIONS,
        "simlab.summary": 1}


def test_the_summary_span_links_to_the_simulations_it_aggregates(sweep):
    spans = sweep.spans
    simulations = {(s.trace_id, s.span_id) for s in spans
                   if s.name == telemetry.SIMULATION_SPAN_NAME}
    (summary,) = [s for s in spans if s.name == "simlab.summary"]
    assert len(summary.links) == min(SIMULATIONS, telemetry.MAX_LINKS)
    assert set(summary.links) <= simulations
    assert summary.attributes["simlab.links.total"] == SIMULATIONS
    assert summary.attributes["simlab.links.dropped"] == SIMULATIONS - len(summary.links)


def test_resource_and_headers_come_from_otel_variables_and_nothing_leaks(sweep):
    spans, headers = sweep.spans, sweep.headers
    # Every process (the sweep and both pool workers) exported with the same settings.
    assert len({s.resource["service.instance.id"] for s in spans}) >= 3
    for span in spans:
        assert span.resource["service.name"] == "simlab-e2e"
        assert span.resource["deployment.environment.name"] == "e2e"
        assert span.resource["service.version"] == engine.ENGINE_VERSION
    assert headers and all(h.get("x-simlab-test") == SECRET for h in headers)
    attributes = [(s.attributes, s.events) for s in spans]
    assert SECRET not in json.dumps(attributes, default=str)
    assert SECRET not in json.dumps([s.resource for s in spans])


def test_a_run_process_joins_the_trace_of_its_tag_and_flushes_before_exit(lab):
    """What a run pod does: ``dagster api execute_run`` of a run created with the parent's tag."""
    parent_trace, parent_span = "ab" * 16, "cd" * 8  # the sweep (or sensor) that launched it
    instance, origin, run = run_pod_run(
        lab, **{TRACEPARENT_TAG: f"00-{parent_trace}-{parent_span}-01"})
    command = ExecuteRunArgs(job_origin=origin, run_id=run.run_id,
                             instance_ref=instance.get_ref()).get_command_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with otlp_receiver() as receiver:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_BSP_SCHEDULE_DELAY="600000")  # only the flushes at exit export
        done = subprocess.run(command, env=env, cwd=lab, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        spans = receiver.spans()
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    (batch,) = [s for s in spans if s.name == "simlab.batch"]
    assert (batch.trace_id, batch.parent_span_id) == (parent_trace, parent_span)
    assert batch.attributes["dagster.run_id"] == run.run_id
    simulations = [s for s in spans if s.name == telemetry.SIMULATION_SPAN_NAME]
    assert len(simulations) == len(spans) - 1 == 6
    assert all(s.trace_id == parent_trace and s.parent_span_id == batch.span_id
               for s in simulations)
    files = sorted((lab / "data" / "results" / "tiny_mmck" / "servers-2").glob("*.parquet"))
    rows = pl.concat([pl.read_parquet(f, columns=["trace_id", "span_id"]) for f in files])
    assert set(rows.iter_rows()) == {(s.trace_id, s.span_id) for s in simulations}


@pytest.fixture
def finished_spans(monkeypatch):
    """This process's tracing with no OTEL_* settings and an in-memory exporter."""
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    telemetry.shutdown_tracing()  # a provider left by an earlier test would miss the exporter
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    telemetry.shutdown_tracing()


def test_a_failed_simulation_in_a_run_is_an_error_span_with_its_exception(
        tiny, finished_spans, planted_failure):
    spec, storage = tiny
    with dg.instance_for_test() as instance:
        result = dg.materialize(experiment_assets(spec), instance=instance,
                                resources={"simlab": storage},
                                selection=[replications_key(spec.name)],
                                tags=range_tags("servers-1", 0, 5), raise_on_error=False)
    assert not result.success
    spans = finished_spans.get_finished_spans()
    (batch,) = [s for s in spans if s.name == "simlab.batch"]
    simulations = {s.attributes["simlab.replication"]: s for s in spans
                   if s.name == telemetry.SIMULATION_SPAN_NAME}
    assert sorted(simulations) == list(range(6))
    assert all(s.parent.span_id == batch.context.span_id for s in simulations.values())
    failed = simulations.pop(2)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "RuntimeError: planted failure in replication 2"
    (event,) = [e for e in failed.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"
    assert "planted failure" in event.attributes["exception.message"]
    assert all(s.status.status_code is StatusCode.UNSET for s in simulations.values())


def test_sweeps_in_one_process_follow_the_current_otel_settings(lab, monkeypatch):
    """A process that sweeps twice, the second time with an endpoint (a notebook, a test run):
    the second sweep's pool workers must export to it."""
    from simlab_pipelines import batch
    from simlab_pipelines.sweep import sweep as run_sweep

    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    experiments = lab / "experiments"
    first = experiments / "tiny_mmck.yaml"
    second = experiments / "tiny_mmck_again.yaml"
    second.write_text(first.read_text().replace("name: tiny_mmck", "name: tiny_mmck_again"))
    instance = dg.DagsterInstance.get()
    telemetry.shutdown_tracing()
    try:
        run_sweep(first, instance, workers=2)  # starts (or reuses) a pool with no endpoint
        with otlp_receiver() as receiver:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
            telemetry.shutdown_tracing()
            run_sweep(second, instance, workers=2)
            batch.shutdown_pools()  # the workers flush as they exit
            telemetry.shutdown_tracing()
            simulations = receiver.spans(telemetry.SIMULATION_SPAN_NAME)
    finally:
        batch.shutdown_pools()
        telemetry.shutdown_tracing()
    assert len(simulations) == 12
    assert {s.attributes["simlab.experiment"] for s in simulations} == {"tiny_mmck_again"}
