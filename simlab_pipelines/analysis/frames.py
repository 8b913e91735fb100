"""The long-format observations every analysis function reads, and helpers to take them apart.

Observations are a polars DataFrame with one row per (experiment, configuration, replication,
metric): columns ``experiment``, ``config_key``, ``replication``, ``metric``, ``value`` (the DuckDB
``observations`` table).

NaN (or a missing value) means the metric was undefined in that replication (e.g. a mean wait with
nobody served). The rule everywhere: such a value is stored, counted per configuration and metric
(``undefined`` in the summary table, see ``intervals.summarise``) and left out of every statistic;
a configuration whose values are all undefined keeps its summary rows (n = 0), and an experiment
whose values are all undefined still gets a summary.
"""

from collections.abc import Mapping

import numpy as np
import polars as pl

OBSERVATION_COLUMNS = ("experiment", "config_key", "replication", "metric", "value")


def check_observations(observations: pl.DataFrame, argument: str = "observations", *,
                       keep_undefined: bool = False) -> pl.DataFrame:
    """Validate the long format and return it with undefined values dropped (kept, as NaN, with
    ``keep_undefined``).

    Raises ValueError naming the argument and the missing columns, or the first duplicated
    (experiment, config_key, replication, metric).
    """
    if not isinstance(observations, pl.DataFrame):
        raise TypeError(f"{argument}: expected a polars DataFrame, got {type(observations).__name__}")
    missing = [c for c in OBSERVATION_COLUMNS if c not in observations.columns]
    if missing:
        raise ValueError(f"{argument}: missing column(s) {', '.join(missing)}; "
                         f"expected {', '.join(OBSERVATION_COLUMNS)}")
    frame = observations.select(
        pl.col("experiment").cast(pl.String),
        pl.col("config_key").cast(pl.String),
        pl.col("replication").cast(pl.Int64),
        pl.col("metric").cast(pl.String),
        pl.col("value").cast(pl.Float64),
    )
    keys = ["experiment", "config_key", "replication", "metric"]
    duplicated = frame.filter(pl.struct(keys).is_duplicated())
    if duplicated.height:
        row = duplicated.row(0, named=True)
        raise ValueError(
            f"{argument}: duplicate observation for experiment={row['experiment']!r}, "
            f"config_key={row['config_key']!r}, replication={row['replication']}, "
            f"metric={row['metric']!r}")
    if keep_undefined:
        return frame.with_columns(pl.col("value").fill_null(float("nan")))
    return frame.filter(defined())


def defined() -> pl.Expr:
    """Whether an observation's value is defined (neither NaN nor missing)."""
    return pl.col("value").is_not_null() & pl.col("value").is_not_nan()


def samples(observations: pl.DataFrame, metric: str, *,
            experiment: str | None = None) -> dict[str, np.ndarray]:
    """Each configuration's values of ``metric``, in replication order (undefined values dropped).

    ``experiment`` may be omitted when the frame holds a single experiment.
    """
    frame = _one_metric(observations, metric, experiment)
    return {key: group.sort("replication")["value"].to_numpy()
            for (key,), group in sorted(frame.group_by("config_key"), key=lambda g: g[0])}


def aligned_samples(observations: pl.DataFrame, metric: str, *,
                    experiment: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The replications every configuration has a value for, and the values on exactly those.

    This is what paired (common-random-numbers) procedures need: row i of every array comes from
    the same replication number, hence the same random streams.
    """
    frame = _one_metric(observations, metric, experiment)
    wide = frame.pivot(on="config_key", index="replication", values="value").drop_nulls()
    wide = wide.sort("replication")
    keys = sorted(c for c in wide.columns if c != "replication")
    return wide["replication"].to_numpy(), {k: wide[k].to_numpy() for k in keys}


def _one_metric(observations: pl.DataFrame, metric: str, experiment: str | None) -> pl.DataFrame:
    frame = check_observations(observations)
    experiments = frame["experiment"].unique().to_list()
    if experiment is None:
        if len(experiments) > 1:
            raise ValueError(f"observations hold several experiments ({', '.join(sorted(experiments))}): "
                             "pass experiment=")
    else:
        frame = frame.filter(pl.col("experiment") == experiment)
        if frame.height == 0:
            raise ValueError(f"experiment {experiment!r}: no observations")
    frame = frame.filter(pl.col("metric") == metric)
    if frame.height == 0:
        raise ValueError(f"metric {metric!r}: no observations")
    return frame


def as_arrays(data: Mapping[str, object], argument: str) -> dict[str, np.ndarray]:
    """Per-configuration samples as float arrays with NaNs dropped; rejects an empty mapping."""
    if not data:
        raise ValueError(f"{argument}: no configurations")
    out = {}
    for key, values in data.items():
        array = np.asarray(values, dtype=float).ravel()
        out[str(key)] = array[~np.isnan(array)]
    return out
