"""A sweep's start-up: the pool's fork server starts before the command's heavy imports, so that
its own start-up (a new interpreter importing the engine) overlaps the sweep's (issue 24)."""

import json
import subprocess
import sys

CHECK = """
import json, sys
from multiprocessing import forkserver
from simlab_pipelines import cli
cli._start_pool_server(int(sys.argv[1]))
pid = forkserver._forkserver._forkserver_pid
heavy = sorted(m for m in ("dagster", "polars", "duckdb", "engine") if m in sys.modules)
print(json.dumps({"server": pid, "heavy": heavy}))
"""


def _start(workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHECK, str(workers)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out)


def test_the_fork_server_starts_before_the_heavy_imports():
    started = _start(2)
    assert started["server"] is not None
    assert started["heavy"] == []  # nothing of Dagster, polars, DuckDB or the engine yet


def test_no_fork_server_for_a_sweep_without_a_pool():
    assert _start(1)["server"] is None
