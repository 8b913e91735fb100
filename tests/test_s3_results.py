"""`simlab sweep` with SIMLAB_RESULTS_URI=s3://...: replication Parquet objects and the published
DuckDB summary in an S3-compatible store (moto's server, started here on 127.0.0.1; fake keys).

The first sweep, whose pool workers write the objects, runs as a subprocess, like a user or a run
pod would: pool workers are forked from a forkserver that keeps the environment of the moment it
started, so in this test process they could have been started by another test without the
endpoint set here. The reruns run in-process with one worker (no pool), to save start-up time.
"""

import io
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import polars as pl
import pytest
from click.testing import CliRunner
from moto.server import ThreadedMotoServer

from simlab_pipelines.assets import replications_key
from simlab_pipelines.cli import main
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.summary import PUBLISHED_DATABASE

BUCKET = "simlab-test"
PREFIX = "lab/results"


@pytest.fixture
def s3(lab, monkeypatch):
    """A local S3 server with an empty bucket, and AWS_* pointing at it (never real credentials)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    requests_log = logging.getLogger("werkzeug")  # one line per request otherwise
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    host, port = server.get_host_and_port()
    # moto keeps its buckets in the process, not in the server: another test's objects in this
    # pytest worker would still be there
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset",
                                                  method="POST"), timeout=30).close()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL_S3", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # No shared config or credentials files: nothing but the variables above is used.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(lab / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(lab / "no-aws-credentials"))
    monkeypatch.setenv("SIMLAB_RESULTS_URI", f"s3://{BUCKET}/{PREFIX}/")  # trailing / on purpose
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()
    requests_log.setLevel(level)


def _objects(client) -> dict[str, tuple[str, object]]:
    """Key -> (ETag, LastModified) of every object in the bucket."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"]: (o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", [])}


def _sweep_process(lab, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "simlab"), "sweep",
         str(lab / "experiments" / "tiny_mmck.yaml"), *args],
        env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _sweep(lab, *args: str) -> str:
    result = CliRunner().invoke(main, ["sweep", str(lab / "experiments" / "tiny_mmck.yaml"), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _table(db, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_sweep_writes_results_and_summary_to_s3_and_a_rerun_does_nothing(lab, s3):
    spec = load_experiment(lab / "experiments" / "tiny_mmck.yaml")
    configs = [c.key for c in spec.configurations_list()]
    parquet = {f"{PREFIX}/{spec.name}/{c}/{r}.parquet": (c, r)
               for c in configs for r in range(spec.replications)}
    published = f"{PREFIX}/{PUBLISHED_DATABASE}"

    _sweep_process(lab, "--batch-size", "6", "--workers", "2")
    objects = _objects(s3)
    # Exactly the layout, and nothing else: no temporary or stray objects, no local fallback.
    assert set(objects) == set(parquet) | {published}
    assert not (lab / "data" / "results").exists()

    # Each object holds its own partition's row.
    key, (config_key, replication) = sorted(parquet.items())[-1]
    row = pl.read_parquet(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
    assert row.height == 1
    assert row.row(0, named=True)["partition_key"] == f"{config_key}|{replication}"

    # The local DuckDB file was built from the objects: every partition once, 6 per configuration.
    db = lab / "data" / "simlab.duckdb"
    rows, distinct = _table(db, "SELECT count(*), count(DISTINCT partition_key) "
                                "FROM replications")[0]
    assert rows == distinct == len(configs) * spec.replications
    assert _table(db, "SELECT DISTINCT n FROM summary") == [(spec.replications,)]
    assert {r[0] for r in _table(db, "SELECT config_key FROM summary")} == set(configs)

    # The published object is that same database.
    copy = lab / "published.duckdb"
    s3.download_file(BUCKET, published, str(copy))
    query = "SELECT * FROM {} ORDER BY ALL"
    for table in ("replications", "observations", "summary"):
        assert _table(copy, query.format(table)) == _table(db, query.format(table))

    # The UI links each partition to its object.
    instance = dg.DagsterInstance.get()
    [event] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=replications_key(spec.name),
                              asset_partitions=["servers-2|5"]), limit=10).records
    path = event.asset_materialization.metadata["path"].value
    assert path == f"s3://{BUCKET}/{PREFIX}/{spec.name}/servers-2/5.parquet"
    runs = len(instance.get_runs())

    # 12 partitions in batches of 6: two replication runs, each partition materialised once.
    events = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=replications_key(spec.name)), limit=100).records
    assert sorted(e.partition_key for e in events) == sorted(f"{c}|{r}" for c, r in parquet.values())
    assert len({e.run_id for e in events}) == 2

    # A rerun with everything in place launches no run and writes nothing, not even the summary.
    _sweep(lab, "--workers", "1")
    assert _objects(s3) == objects
    assert len(instance.get_runs()) == runs

    # A lost object is found missing in the listing, and only it is run again (one run).
    lost = f"{PREFIX}/{spec.name}/servers-1/2.parquet"
    s3.delete_object(Bucket=BUCKET, Key=lost)
    _sweep(lab, "--workers", "1")
    after = _objects(s3)
    assert set(after) == set(parquet) | {published}
    assert {k for k in parquet if after[k] != objects[k]} == {lost}  # only it was rewritten
    first_runs = {e.run_id for e in events}
    rerun = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=replications_key(spec.name)), limit=100).records
    assert [e.partition_key for e in rerun if e.run_id not in first_runs] == ["servers-1|2"]
    assert _table(db, "SELECT count(*) FROM replications") == [(12,)]


def test_a_corrupt_object_is_moved_aside_and_counts_as_missing(lab, s3):
    from datetime import UTC, datetime

    import engine
    from simlab_pipelines.storage import ResultStore, replication_row
    from simlab_pipelines.summary import read_all_replications

    spec = load_experiment(lab / "experiments" / "tiny_mmck.yaml")
    prefix = f"{PREFIX}-corrupt"  # moto's objects outlive a server: not the other test's results
    store = ResultStore(f"s3://{BUCKET}/{prefix}")
    for replication in (0, 1):
        result = engine.simulate("mmck", {"servers": 1}, replication=replication, seed=1,
                                 horizon=20, warmup=2)
        store.write(replication_row(
            experiment=spec.name, config_key="servers-1", partition_key=f"servers-1|{replication}",
            result=result.to_dict(), code_version="c", run_id="r", trace_id="0" * 32,
            span_id="0" * 16, started_at=datetime.now(UTC), inputs_hash="h"))
    key = f"{prefix}/{spec.name}/servers-1/1.parquet"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"PAR1 cut short")
    assert read_all_replications(spec, store)["replication"].to_list() == [0]
    names = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert key not in names and key + ".corrupt" in names
    assert store.existing(spec.name) == {("servers-1", 0)}
