"""One DuckDB file holds every experiment: rebuilding one keeps the others' rows, whatever
columns each has (a column all null in one experiment, a column only another model has)."""

from types import SimpleNamespace

import duckdb
import polars as pl

from simlab_pipelines.summary import write_database


def _build(db, experiment: str, frame: pl.DataFrame) -> None:
    write_database(SimpleNamespace(name=experiment), SimpleNamespace(tables={"answers": frame}),
                   db)


def test_other_experiments_rows_survive_differing_columns(tmp_path):
    db = tmp_path / "simlab.duckdb"
    # 'with_baseline' has a baseline key and a column of its own.
    _build(db, "with_baseline", pl.DataFrame({"experiment": ["with_baseline"],
                                              "baseline_key": ["tables-8"],
                                              "sensitivity": [0.5]}))
    # 'no_baseline': its baseline_key is all null (polars: Null dtype), no 'sensitivity' column.
    _build(db, "no_baseline", pl.DataFrame({"experiment": ["no_baseline"],
                                            "baseline_key": [None]}))
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT experiment, baseline_key, sensitivity FROM answers "
                           "ORDER BY experiment").fetchall()
    assert rows == [("no_baseline", None, None), ("with_baseline", "tables-8", 0.5)]
    # And back: rebuilding the first keeps the second's row.
    _build(db, "with_baseline", pl.DataFrame({"experiment": ["with_baseline"],
                                              "baseline_key": ["tables-9"],
                                              "sensitivity": [0.25]}))
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT experiment, baseline_key, sensitivity FROM answers "
                           "ORDER BY experiment").fetchall()
    assert rows == [("no_baseline", None, None), ("with_baseline", "tables-9", 0.25)]
