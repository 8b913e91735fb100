"""Helpers shared by tests that sweep a lab (a temporary project with experiments and data)."""

from pathlib import Path

import duckdb
import polars as pl
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
