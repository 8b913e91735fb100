"""The Observatory's "done when", end to end: ``simlab sweep`` of 200 simulations over 2 pool
workers, exporting over OTLP/HTTP to a local receiver, delivers one ``simlab.simulation`` span per
simulation (seed and parameters on it), and every trace/span id in DuckDB's ``replications`` table
is a delivered span; the sweep is one connected trace (sweep -> batch -> simulation).

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
from pathlib import Path

import duckdb
import pytest
from otlp_receiver import otlp_receiver

import engine
from simlab_pipelines import telemetry
from simlab_pipelines.experiments import load_experiment

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
"""
SIMULATIONS = 200
BATCH_SIZE = 50
SECRET = "s3cr3t-e2e-value"  # in the sweep's environment and headers; must never be on a span


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run the sweep once for the module; returns (spec, spans received, request headers, db)."""
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
               SIMLAB_EXPERIMENTS_DIR=str(experiments), SIMLAB_API_TOKEN=SECRET)
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
    return load_experiment(path), spans, headers, data / "simlab.duckdb"


def test_one_span_per_simulation_with_its_seed_and_parameters(sweep):
    spec, spans, _, _ = sweep
    simulations = [s for s in spans if s.name == telemetry.SIMULATION_SPAN_NAME]
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


def test_every_id_in_duckdb_is_a_delivered_span_of_that_simulation(sweep):
    spec, spans, _, db = sweep
    delivered = {(s.trace_id, s.span_id): s for s in spans
                 if s.name == telemetry.SIMULATION_SPAN_NAME}
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT config_key, replication, seed_entropy, spawn_key, dagster_run_id, "
            "partition_key, trace_id, span_id FROM replications WHERE experiment = ?",
            [spec.name]).fetchall()
    assert len(rows) == SIMULATIONS
    for config_key, replication, entropy, spawn_key, run_id, partition, trace_id, span_id in rows:
        span = delivered.get((trace_id, span_id))
        assert span is not None, f"{partition}: trace {trace_id} span {span_id} never delivered"
        a = span.attributes
        assert (a["simlab.config_key"], a["simlab.replication"]) == (config_key, replication)
        assert a["simlab.seed.entropy"] == entropy
        assert a["simlab.seed.spawn_key"] == ",".join(map(str, spawn_key))
        assert (a["dagster.run_id"], a["dagster.partition_key"]) == (run_id, partition)


def test_the_sweep_is_one_connected_tree(sweep):
    _, spans, _, _ = sweep
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


def test_resource_and_headers_come_from_otel_variables_and_nothing_leaks(sweep):
    _, spans, headers, _ = sweep
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
