"""Two `simlab sweep` processes at once on one PostgreSQL-backed Dagster instance (dagster-postgres,
configured by examples/dagster_home_postgres/dagster.yaml as it is), with the results in an
S3-compatible store (moto's server, started here) and one DuckDB file: the production layout.
Checked: every partition materialised exactly once, every run a success, the two sweeps' runs
overlapping in time, exactly one object per partition plus the published database, both
experiments' rows in the final DuckDB file.

Each test gets a fresh database on the server (SIMLAB_TEST_POSTGRES_URL, default the local trust-auth
server as user postgres), dropped afterwards; the test is skipped only when no server answers.
"""

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import dagster as dg
import duckdb
import psycopg2
import pytest
from moto.server import ThreadedMotoServer

from simlab_pipelines.assets import replications_key, summary_key
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.partitions import partition_key
from simlab_pipelines.summary import PUBLISHED_DATABASE
from simlab_pipelines.sweep import ensure_pool

PROJECT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT / "tests" / "fixtures"
EXAMPLE = PROJECT / "examples" / "dagster_home_postgres" / "dagster.yaml"
SERVER_URL = os.environ.get("SIMLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
BUCKET, PREFIX = "simlab-pg-test", "lab/results"

# `simlab sweep`, held at a barrier once its imports are done, so the two sweeps really overlap.
BARRIER_SWEEP = """
import pathlib, sys, time
import simlab_pipelines.sweep  # noqa: F401  (the slow imports, before the barrier)
from simlab_pipelines.cli import main
ready, go = map(pathlib.Path, sys.argv[1:3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
main(sys.argv[3:], prog_name="simlab")
"""


def _admin_connection():
    """A connection to a maintenance database of the server (postgres, else test)."""
    errors = []
    for database in ("postgres", "test"):
        try:
            return psycopg2.connect(f"{SERVER_URL}/{database}", connect_timeout=3)
        except psycopg2.OperationalError as exc:
            errors.append(f"{database}: {str(exc).strip()}")
    pytest.skip(f"no PostgreSQL server reachable at {SERVER_URL} ({'; '.join(errors)})")


@pytest.fixture
def pg_database():
    """A new, empty database for this test; dropped (connections closed) afterwards."""
    admin = _admin_connection()
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    name = f"simlab_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _postgres_home(home, database: str) -> dict[str, str]:
    """A DAGSTER_HOME holding the example PostgreSQL dagster.yaml, unchanged; returns the
    DAGSTER_PG_* variables it reads its connection from."""
    home.mkdir()
    shutil.copy(EXAMPLE, home / "dagster.yaml")
    url = urlsplit(SERVER_URL)
    # Trust authentication never asks for the password; Dagster still wants the variable.
    return {"DAGSTER_PG_HOST": url.hostname or "127.0.0.1", "DAGSTER_PG_PORT": str(url.port or 5432),
            "DAGSTER_PG_DB": database, "DAGSTER_PG_USER": url.username or "postgres",
            "DAGSTER_PG_PASSWORD": url.password or "unused"}


@contextlib.contextmanager
def _s3_store(tmp_path):
    """A local S3 server (moto) with an empty bucket; yields (client, AWS_* environment)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    requests_log = logging.getLogger("werkzeug")  # one line per request otherwise
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           # No shared config or credentials files: only the fake keys above.
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client, env
    finally:
        server.stop()
        requests_log.setLevel(level)


@pytest.mark.slow
def test_two_concurrent_sweeps_on_a_postgres_instance_with_results_in_s3(tmp_path, pg_database,
                                                                          monkeypatch):
    with _s3_store(tmp_path) as (s3, aws_env):
        _two_concurrent_sweeps(tmp_path, pg_database, monkeypatch, s3, aws_env)


def _two_concurrent_sweeps(tmp_path, pg_database, monkeypatch, s3, aws_env):
    home, data, experiments = tmp_path / "home", tmp_path / "data", tmp_path / "experiments"
    pg_env = _postgres_home(home, pg_database)
    experiments.mkdir()
    source = (FIXTURES / "experiments" / "tiny_mmck.yaml").read_text()
    paths = {"tiny_mmck": experiments / "tiny_mmck.yaml",
             "tiny_mmck_b": experiments / "tiny_mmck_b.yaml"}
    paths["tiny_mmck"].write_text(source)
    paths["tiny_mmck_b"].write_text(source.replace("name: tiny_mmck", "name: tiny_mmck_b")
                                    .replace("seed: 7", "seed: 8"))
    specs = {name: load_experiment(path) for name, path in paths.items()}

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIMLAB_", "OTEL_EXPORTER_OTLP", "DAGSTER_"))}
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(DAGSTER_HOME=str(home), SIMLAB_DATA_DIR=str(data),
               SIMLAB_EXPERIMENTS_DIR=str(experiments), SIMLAB_RESULTS_URI=f"s3://{BUCKET}/{PREFIX}",
               **pg_env, **aws_env)
    go = tmp_path / "go"
    sweeps = {}
    for name, path in paths.items():
        # One configuration per run -> 2 replication runs per sweep; one worker: no process pool.
        sweeps[name] = subprocess.Popen(
            [sys.executable, "-c", BARRIER_SWEEP, str(tmp_path / f"ready-{name}"), str(go),
             "sweep", str(path), "--batch-size", "6", "--workers", "1"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{name}").exists() for name in paths):
        assert all(p.poll() is None for p in sweeps.values()), "a sweep exited before the barrier"
        assert time.monotonic() < deadline, "the sweeps did not get ready"
        time.sleep(0.02)
    go.touch()
    for process in sweeps.values():
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output

    for var, value in pg_env.items():  # read by the instance's storage config
        monkeypatch.setenv(var, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        records = instance.get_run_records()
        assert records and {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
        by_experiment = {name: [r for r in records if r.dagster_run.tags.get("simlab/experiment")
                                == name] for name in paths}
        assert sum(len(v) for v in by_experiment.values()) == len(records)

        # The two sweeps' runs ran at the same time, writing the same instance.
        first, second = (sorted((r.start_time, r.end_time) for r in v)
                         for v in by_experiment.values())
        assert any(a_start < b_end and b_start < a_end
                   for a_start, a_end in first for b_start, b_end in second)

        for name, spec in specs.items():
            keys = {partition_key(c.key, r) for c in spec.configurations_list()
                    for r in range(spec.replications)}
            events = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=replications_key(name)), limit=1000).records
            assert Counter(e.partition_key for e in events) == Counter(keys)
            assert instance.get_materialized_partitions(replications_key(name)) == keys
            summaries = instance.fetch_materializations(summary_key(name), limit=10).records
            assert len(summaries) == 1
            run_ids = {r.dagster_run.run_id for r in by_experiment[name]}
            # 12 partitions in batches of 6 (--batch-size): two replication runs per sweep.
            assert len({e.run_id for e in events}) == 2
            assert {e.run_id for e in events} <= run_ids

    # Both summaries wrote the one DuckDB file, one after the other: neither lost the other's rows.
    with duckdb.connect(str(data / "simlab.duckdb"), read_only=True) as con:
        counts = con.execute("SELECT experiment, count(*), count(DISTINCT partition_key) "
                             "FROM replications GROUP BY ALL ORDER BY ALL").fetchall()
        summary = con.execute("SELECT experiment, min(n), max(n) FROM summary "
                              "GROUP BY ALL ORDER BY ALL").fetchall()
        replication_runs = dict(con.execute(
            "SELECT experiment, list(DISTINCT dagster_run_id) FROM replications "
            "GROUP BY ALL").fetchall())
    assert counts == [("tiny_mmck", 12, 12), ("tiny_mmck_b", 12, 12)]
    assert summary == [("tiny_mmck", 6, 6), ("tiny_mmck_b", 6, 6)]
    for name, runs in replication_runs.items():
        assert set(runs) <= {r.dagster_run.run_id for r in by_experiment[name]}
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]

    # Exactly one object per partition and the published database; no results on the volume.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    objects = {o["Key"] for page in pages for o in page.get("Contents", [])}
    expected = {f"{PREFIX}/{name}/{c.key}/{r}.parquet" for name, spec in specs.items()
                for c in spec.configurations_list() for r in range(spec.replications)}
    assert objects == expected | {f"{PREFIX}/{PUBLISHED_DATABASE}"}
    assert not (data / "results").exists()


def test_ensure_pool_survives_concurrent_callers_where_dagster_does_not(tmp_path, pg_database,
                                                                       monkeypatch):
    """Four instances at a barrier create a pool's default limit at once: through ensure_pool all
    succeed; through Dagster's own call (what a run's first claim does) some fail, which shows the
    race really happened here (dagster-io/dagster#33552)."""
    for var, value in _postgres_home(tmp_path / "home", pg_database).items():
        monkeypatch.setenv(var, value)
    instances = [dg.DagsterInstance.from_config(str(tmp_path / "home")) for _ in range(4)]

    def race(call) -> list[str]:
        barrier, errors = threading.Barrier(len(instances)), []

        def one(instance):
            barrier.wait()
            try:
                call(instance)
            except Exception as exc:  # collected, and asserted on below
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

        threads = [threading.Thread(target=one, args=(i,)) for i in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return errors

    try:
        assert race(lambda i: ensure_pool(i, "simlab_duckdb")) == []
        dagster_errors = race(lambda i: i.event_log_storage.initialize_concurrency_limit_to_default(
            "another_pool"))
        limits = {p.name: p.limit for p in instances[0].event_log_storage.get_pool_limits()}
    finally:
        for instance in instances:
            instance.dispose()
    assert limits == {"simlab_duckdb": 1, "another_pool": 1}  # default_limit of dagster.yaml
    assert dagster_errors, ("Dagster's own initialisation no longer fails under this race: if "
                            "dagster-io/dagster#33552 is fixed, sweep.ensure_pool can go")
    assert all("InFailedSqlTransaction" in e for e in dagster_errors), dagster_errors
