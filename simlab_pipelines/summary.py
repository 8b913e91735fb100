"""The DuckDB file: every replication with its inputs and seed, long-format observations, and
t-based confidence intervals per configuration and metric.

The file is rebuilt into a new file and swapped in with an atomic rename, so a reader never sees a
half-built database and never blocks the writer (it keeps reading the file it opened). Other
experiments' rows are carried over from the previous file. An exclusive lock file serialises
builders, whatever launched them.

When the results live in an object store (``SIMLAB_RESULTS_URI=s3://...``), the finished file is
also published there as ``<results>/_summary/simlab.duckdb`` (``_summary`` cannot be an experiment
name), for readers outside the cluster. DuckDB cannot write to S3 without its httpfs extension, so
the file is always built locally and uploaded whole, while the lock is held: uploads happen in the
order of the swaps, so the object is the newest database, with every experiment in it.
"""

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from scipy import stats

from simlab_pipelines.experiments import ExperimentSpec
from simlab_pipelines.storage import ResultStore

KEYS = ["experiment", "config_key", "replication"]
# Tables rebuilt per experiment, in creation order; each has an ``experiment`` column.
TABLES = ("experiments", "configurations", "replications", "observations", "summary")
# Where the database is published in an object store, relative to the results root.
PUBLISHED_DATABASE = "_summary/simlab.duckdb"


@dataclass(frozen=True)
class Summary:
    """What a build produced for one experiment."""

    experiment: str
    expected: int  # configurations x replications in the definition
    replications: pl.DataFrame  # one row per replication found (metrics struct included)
    observations: pl.DataFrame
    summary: pl.DataFrame
    extra_tables: Mapping[str, pl.DataFrame]  # e.g. comparisons, added by the analysis step

    @property
    def missing(self) -> int:
        return self.expected - self.replications.height


def read_replications(spec: ExperimentSpec, store: ResultStore) -> pl.DataFrame:
    """The replication rows of the partitions defined in ``spec`` that have a file."""
    defined = {(c.key, r) for c in spec.configurations_list() for r in range(spec.replications)}
    present = sorted(store.existing(spec.name) & defined)
    if not present:
        return pl.DataFrame()
    files = store.files(spec.name, present)
    options = _polars_storage_options(store)
    # One-row files: reading them one after another beats splitting each across threads.
    frame = pl.read_parquet(files, parallel="none", storage_options=options or None)
    return frame.sort(["config_key", "replication"])


def _polars_storage_options(store: ResultStore) -> dict[str, str] | None:
    if store.is_local:
        return None
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["aws_endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            options["aws_allow_http"] = "true"
    for var, key in (("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
                     ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                     ("AWS_REGION", "aws_region"), ("AWS_DEFAULT_REGION", "aws_region")):
        if os.environ.get(var) and key not in options:
            options[key] = os.environ[var]
    return options


def observations(replications: pl.DataFrame) -> pl.DataFrame:
    """Long format: one row per (experiment, config_key, replication, metric)."""
    if replications.is_empty():
        return pl.DataFrame(schema={"experiment": pl.String, "config_key": pl.String,
                                    "replication": pl.Int64, "metric": pl.String,
                                    "value": pl.Float64})
    wide = replications.select(*KEYS, pl.col("metrics").struct.unnest())
    return wide.unpivot(index=KEYS, variable_name="metric", value_name="value").sort(
        ["config_key", "metric", "replication"])


def t_summary(obs: pl.DataFrame, confidence: float) -> pl.DataFrame:
    """Mean, standard deviation and the t confidence interval per configuration and metric."""
    grouped = obs.group_by(["experiment", "config_key", "metric"], maintain_order=True).agg(
        n=pl.col("value").count(),
        mean=pl.col("value").mean(),
        stddev=pl.col("value").std(ddof=1),
    )
    n = grouped["n"].to_numpy()
    with np.errstate(invalid="ignore"):
        quantile = np.where(n > 1, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), np.nan)
    half = pl.Series("half_width", quantile / np.sqrt(np.maximum(n, 1))) * grouped["stddev"]
    return grouped.with_columns(
        ci_low=pl.col("mean") - half,
        ci_high=pl.col("mean") + half,
        half_width=half,
        confidence=pl.lit(confidence),
    ).sort(["config_key", "metric"])


def summarise(spec: ExperimentSpec, store: ResultStore) -> Summary:
    """Read an experiment's replication files and compute its tables (nothing written)."""
    reps = read_replications(spec, store)
    obs = observations(reps)
    return Summary(
        experiment=spec.name,
        expected=len(spec.configurations_list()) * spec.replications,
        replications=reps,
        observations=obs,
        summary=t_summary(obs, spec.confidence),
        extra_tables={},
    )


def _spec_tables(spec: ExperimentSpec) -> dict[str, pl.DataFrame]:
    configs = spec.configurations_list()
    experiments = pl.DataFrame([{
        "experiment": spec.name, "model": spec.model, "description": spec.description,
        "question": spec.question, "spec_hash": spec.spec_hash(),
        "spec": spec.model_dump_json(), "seed": spec.seed, "replications": spec.replications,
        "configurations": len(configs), "baseline_key": spec.baseline_key,
        "horizon": spec.resolved_horizon, "warmup": spec.resolved_warmup,
        "common_random_numbers": spec.common_random_numbers, "confidence": spec.confidence,
    }])
    configurations = pl.DataFrame([{
        "experiment": spec.name, "config_key": c.key, "params": json.dumps(c.params, sort_keys=True),
        "varying": json.dumps(c.varying, sort_keys=True),
        "is_baseline": c.key == spec.baseline_key,
    } for c in configs])
    return {"experiments": experiments, "configurations": configurations}


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_database(spec: ExperimentSpec, result: Summary, db_path: Path,
                   publish_to: ResultStore | None = None) -> str | None:
    """Rebuild ``db_path`` with ``result`` replacing the experiment's rows, then swap it in.

    With ``publish_to`` an object store, the new file is uploaded to its ``PUBLISHED_DATABASE``;
    returns that URI (None when nothing was published).
    """
    db_path = Path(db_path)
    tables = _spec_tables(spec)
    tables["replications"] = result.replications.drop("metrics", strict=False)
    tables["observations"] = result.observations
    tables["summary"] = result.summary
    tables.update(result.extra_tables)
    with _exclusive(db_path):
        fd, tmp = tempfile.mkstemp(dir=db_path.parent, prefix=f".{db_path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)  # DuckDB must create the file itself
        try:
            con = duckdb.connect(tmp)
            try:
                for name, frame in tables.items():
                    if frame.width == 0:
                        continue
                    con.register("frame", frame)
                    con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
                    con.unregister("frame")
                if db_path.exists():
                    _carry_over(con, db_path, spec.name, set(tables))
                con.execute("CHECKPOINT")
            finally:
                con.close()
            os.replace(tmp, db_path)
        except BaseException:
            for leftover in (tmp, tmp + ".wal"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            raise
        if publish_to is not None and not publish_to.is_local:
            # Still under the lock: a later build cannot be overwritten by this older file.
            return publish_to.publish(db_path, PUBLISHED_DATABASE)
    return None


def _carry_over(con: duckdb.DuckDBPyConnection, old: Path, experiment: str,
                built: set[str]) -> None:
    """Copy every other experiment's rows from the previous file into the new one."""
    con.execute(f"ATTACH '{old}' AS old (READ_ONLY)")
    try:
        old_tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'old'").fetchall()]
        for name in old_tables:
            has_experiment = con.execute(
                "SELECT count(*) FROM duckdb_columns() WHERE database_name = 'old' "
                "AND table_name = ? AND column_name = 'experiment'", [name]).fetchone()[0]
            if not has_experiment:
                continue
            if name in built:
                con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM old."{name}" '
                            "WHERE experiment <> ?", [experiment])
            else:
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM old."{name}" '
                            "WHERE experiment <> ?", [experiment])
    finally:
        con.execute("DETACH old")


def query(sql: str, db_path: Path, parameters: list | None = None) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` read-only against the DuckDB file; return column names and rows."""
    if not Path(db_path).exists():
        raise FileNotFoundError(f"no DuckDB file at {db_path}: run a sweep first "
                                "(or set SIMLAB_DUCKDB_PATH)")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        cursor = con.execute(sql, parameters) if parameters else con.execute(sql)
        columns = [d[0] for d in cursor.description] if cursor.description else []
        return columns, cursor.fetchall()
    finally:
        con.close()
