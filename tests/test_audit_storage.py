"""Replication files are written atomically: a write that dies before its rename leaves no file
under the final name and no temporary behind, a killed writer's temporary is never read as a
result, and a re-write replaces the file whole."""

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import polars as pl
import pytest

import engine
from simlab_pipelines.storage import ResultStore, replication_row


def _row(replication: int = 0, run_id: str = "run-a") -> dict:
    result = engine.simulate("mmck", {"servers": 2}, replication=replication, seed=5, horizon=50,
                             warmup=5)
    return replication_row(experiment="exp", config_key="servers-2",
                           partition_key=f"servers-2|{replication}", result=result.to_dict(),
                           code_version="engine-x", run_id=run_id, trace_id="0" * 32,
                           span_id="0" * 16, started_at=datetime.now(UTC), inputs_hash="inputs")


def test_a_write_that_fails_before_the_rename_leaves_nothing(tmp_path, monkeypatch):
    store = ResultStore(str(tmp_path))
    final = store.path("exp", "servers-2", 0)

    def broken_replace(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="before the rename"):
        store.write(_row())
    assert not os.path.exists(final)
    assert os.listdir(os.path.dirname(final)) == []  # the temporary file was removed


def test_a_rewrite_replaces_the_file_whole(tmp_path):
    store = ResultStore(str(tmp_path))
    first = store.write(_row(run_id="run-a"))
    inode = os.stat(first).st_ino
    second = store.write(_row(run_id="run-b"))
    assert first == second
    frame = pl.read_parquet(second)
    assert frame.height == 1 and frame["dagster_run_id"][0] == "run-b"
    assert os.stat(second).st_ino != inode  # a new file renamed over the old, not rewritten in place
    assert [p for p in os.listdir(os.path.dirname(second)) if p.startswith(".tmp-")] == []


def test_a_killed_writer_leaves_a_temporary_that_is_never_read(tmp_path):
    # A child writes a temporary the way ResultStore does and is killed before renaming it.
    directory = tmp_path / "exp" / "servers-2"
    directory.mkdir(parents=True)
    code = ("import os, sys, tempfile, time; fd, p = tempfile.mkstemp(dir=sys.argv[1], "
            "prefix='.tmp-', suffix='.parquet'); os.write(fd, b'PAR1 half a file'); "
            "print(p, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE,
                             text=True)
    leftover = child.stdout.readline().strip()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert os.path.exists(leftover)
    store = ResultStore(str(tmp_path))
    store.write(_row(replication=1))
    assert store.existing("exp") == {("servers-2", 1)}  # the temporary is not a replication
