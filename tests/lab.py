"""Helpers shared by tests that sweep a lab (a temporary project with experiments and data)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from simlab_pipelines.cli import main
from simlab_pipelines.resources import SimlabStorage


def sweep(path, *args) -> str:
    """``simlab sweep PATH ARGS`` in-process; its output (it must succeed)."""
    result = CliRunner().invoke(main, ["sweep", str(path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def observations(db) -> list[tuple]:
    """Every (config_key, replication, metric, value) of the DuckDB file, sorted."""
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT config_key, replication, metric, value FROM observations "
                           "ORDER BY ALL").fetchall()


def storage(lab: Path, workers: int = 1) -> SimlabStorage:
    """The storage resource of the lab's data directory."""
    return SimlabStorage(results_uri=str(lab / "data" / "results"),
                         duckdb_path=str(lab / "data" / "simlab.duckdb"), workers=workers)


def result_rows(lab: Path, experiment: str) -> pl.DataFrame:
    """Every replication file of ``experiment`` in the lab, as one frame (empty without any)."""
    # Not the runs' rows for the summary's manifest (.simlab-runs/): pathlib's glob matches
    # hidden directories.
    files = sorted(f for f in (lab / "data" / "results" / experiment).glob("*/*.parquet")
                   if not f.parent.name.startswith("."))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(port: int) -> bool:
    """Whether a Dagster webserver answers on ``port``."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
        return True
    except OSError:
        return False


@contextmanager
def dagster_server(command: list[str], port: int, log: Path, timeout: float
                   ) -> Iterator[subprocess.Popen]:
    """A Dagster server (``dagster dev``, ``dagster-webserver``) serving ``port``, yielded once it
    answers. Its output goes to ``log`` (a file, not a pipe: a full pipe would stall it); it runs
    in its own session, so that its whole process group is ended after (it may ignore SIGTERM
    otherwise)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=os.environ.copy(), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not answers(port):
            if process.poll() is not None:
                pytest.fail(f"{Path(command[0]).name} exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{Path(command[0]).name} did not answer within {timeout:.0f} s")
            time.sleep(0.5)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def run_pod_run(lab: Path, **tags: str):
    """A replications run of the lab's tiny experiment (servers-2|0..5 on 2 workers, and
    ``tags``) created as a launcher creates one for a run pod: (instance, code origin, run); a
    run pod executes it with ``dagster api execute_run``."""
    import dagster as dg
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

    from simlab_pipelines.partitions import range_tags
    from simlab_pipelines.sweep import experiment_job

    job = experiment_job(str(lab / "experiments" / "tiny_mmck.yaml"), "tiny_mmck_replications")
    instance = dg.DagsterInstance.get()
    origin = JobPythonOrigin(job.name, RepositoryPythonOrigin(
        sys.executable, ModuleCodePointer("simlab_pipelines.definitions", "defs",
                                          working_directory=str(lab))))
    run = instance.create_run_for_job(
        job_def=job, run_config={}, job_code_origin=origin,
        tags={**range_tags("servers-2", 0, 5), "simlab/workers": "2", **tags})
    return instance, origin, run


def write_module(path: Path, source: str) -> None:
    """Write a Python module a test imports, rewrites and imports again: its cached bytecode
    goes first, since Python trusts a .pyc whose source has the same size and mtime second
    (a rewrite within the second of the same length would import the old code)."""
    for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        cached.unlink()
    path.write_text(source)
