"""Differences between configurations, paired over replications (common random numbers) and not.

With common random numbers (CRN), replication r of every configuration sees the same random
streams, so the outputs of two configurations in replication r are positively correlated and the
paired-t interval on the per-replication differences ``D_r = X_r - Y_r`` is narrower than an
interval that ignores the pairing (Law 2015, *Simulation Modeling and Analysis*, §10.2.1 (paired-t)
and §11.2 (CRN); Nelson 2013, *Foundations and Methods of Stochastic Simulation*, §8.4).

For every (configuration, baseline, metric) two rows are produced, on the same replications (the
replication numbers present, with a defined value, for both):

- ``paired = True``: the paired-t interval ``mean(D) ± t_{n-1} · s_D / sqrt(n)``;
- ``paired = False``: Welch's interval ``mean(X) - mean(Y) ± t_ν · sqrt((s_X² + s_Y²) / n)`` with
  the Welch–Satterthwaite degrees of freedom ν (Law 2015, §10.2.2), i.e. what the same data would
  give if the two configurations had been simulated with independent streams.

Using the same replications for both makes the ratio of the two half-widths a direct measure of
the variance reduction from CRN. ``stddev`` is the standard deviation of one replication's
difference: ``s_D`` (paired) and ``sqrt(s_X² + s_Y²)`` (unpaired); ``n`` is the number of common
replications (per configuration).
"""

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import polars as pl

from simlab_pipelines.analysis.frames import check_observations
from simlab_pipelines.analysis.intervals import check_confidence, t_quantile

COMPARISON_COLUMNS = ("experiment", "config_key", "baseline_key", "metric", "n", "mean_difference",
                      "ci_low", "ci_high", "paired", "confidence")
# mean_config, mean_baseline: each side's mean over the same (paired) replications as the
# difference, so that words beside a difference quote means that match it.
EXTRA_COLUMNS = ("stddev", "half_width", "mean_config", "mean_baseline")


def compare(observations: pl.DataFrame, baseline: str | Mapping[str, str] | None = None, *,
            all_pairs: bool = False, confidence: float = 0.95,
            metrics: Sequence[str] | None = None) -> pl.DataFrame:
    """Paired and unpaired differences ``config - baseline`` for every metric.

    ``baseline``: the baseline configuration key (used for every experiment in the frame) or a
    mapping experiment -> baseline key. With ``all_pairs=True`` every pair of configurations of an
    experiment is compared; a pair that contains the baseline (if given) is oriented against it,
    other pairs as ``config_key`` = the later key in sorted order, ``baseline_key`` = the earlier.
    ``metrics`` restricts the metrics compared.

    Returns a polars DataFrame with the ``comparisons`` columns (experiment, config_key,
    baseline_key, metric, n, mean_difference, ci_low, ci_high, paired, confidence) plus stddev,
    half_width, and mean_config and mean_baseline (each side's mean over the same replications),
    sorted by experiment, baseline_key, config_key, metric, paired (paired first).
    Raises ValueError when the baseline is missing or unknown.
    """
    confidence = check_confidence(confidence)
    frame = check_observations(observations)
    if metrics is not None:
        frame = frame.filter(pl.col("metric").is_in(list(metrics)))
    pairs = _pairs(frame, baseline, all_pairs)
    if pairs.height == 0:
        return _empty()

    left = frame.join(pairs, on=["experiment", "config_key"], how="inner")
    right = frame.select(
        "experiment", pl.col("config_key").alias("baseline_key"), "replication", "metric",
        pl.col("value").alias("base_value"))
    matched = left.join(right, on=["experiment", "baseline_key", "replication", "metric"],
                        how="inner")
    stats = (
        matched.with_columns((pl.col("value") - pl.col("base_value")).alias("diff"))
        .group_by("experiment", "config_key", "baseline_key", "metric")
        .agg(
            pl.len().alias("n"),
            pl.col("diff").mean().alias("mean_difference"),
            pl.col("value").mean().alias("mean_config"),
            pl.col("base_value").mean().alias("mean_baseline"),
            pl.col("diff").var(ddof=1).alias("var_diff"),
            pl.col("value").var(ddof=1).alias("var_config"),
            pl.col("base_value").var(ddof=1).alias("var_base"),
        )
    )
    if stats.height == 0:
        return _empty()

    n = stats["n"].to_numpy().astype(float)
    mean = stats["mean_difference"].to_numpy()
    var_d = stats["var_diff"].fill_null(np.nan).to_numpy()
    var_x = stats["var_config"].fill_null(np.nan).to_numpy()
    var_y = stats["var_base"].fill_null(np.nan).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        # Paired-t on the differences.
        sd_paired = np.sqrt(np.maximum(var_d, 0.0))
        half_paired = t_quantile(confidence, n - 1) * sd_paired / np.sqrt(n)
        # Welch on the same replications: equal n, so ν = (n-1)(vx+vy)² / (vx²+vy²).
        total = var_x + var_y
        sd_unpaired = np.sqrt(total)
        df_welch = np.where(total > 0, (n - 1) * total**2 / (var_x**2 + var_y**2), 2 * (n - 1))
        half_unpaired = t_quantile(confidence, df_welch) * sd_unpaired / np.sqrt(n)
        # A zero spread gives a zero-width interval even where t is undefined (n - 1 = 0 is not).
        half_paired = np.where((sd_paired == 0) & (n >= 2), 0.0, half_paired)
        half_unpaired = np.where((sd_unpaired == 0) & (n >= 2), 0.0, half_unpaired)

    keys = stats.select("experiment", "config_key", "baseline_key", "metric", "n",
                        "mean_difference", "mean_config", "mean_baseline")
    rows = []
    for paired, sd, half in ((True, sd_paired, half_paired), (False, sd_unpaired, half_unpaired)):
        rows.append(keys.with_columns(
            pl.Series("ci_low", mean - half),
            pl.Series("ci_high", mean + half),
            pl.lit(paired).alias("paired"),
            pl.lit(confidence).alias("confidence"),
            pl.Series("stddev", sd),
            pl.Series("half_width", half),
        ))
    result = pl.concat(rows).with_columns(pl.col("n").cast(pl.Int64))
    return result.select(*COMPARISON_COLUMNS, *EXTRA_COLUMNS).sort(
        "experiment", "baseline_key", "config_key", "metric", pl.col("paired").not_())


def crn_effect(comparisons: pl.DataFrame) -> pl.DataFrame:
    """Paired beside unpaired half-width per (experiment, config_key, baseline_key, metric).

    Columns: experiment, config_key, baseline_key, metric, n, paired_half_width,
    unpaired_half_width, half_width_ratio (paired / unpaired: below 1 means CRN helped; its square
    estimates the variance ratio).
    """
    keys = ["experiment", "config_key", "baseline_key", "metric", "n"]
    paired = comparisons.filter(pl.col("paired")).select(
        *keys, pl.col("half_width").alias("paired_half_width"))
    unpaired = comparisons.filter(~pl.col("paired")).select(
        *keys, pl.col("half_width").alias("unpaired_half_width"))
    return paired.join(unpaired, on=keys, how="inner").with_columns(
        (pl.col("paired_half_width") / pl.col("unpaired_half_width")).alias("half_width_ratio")
    ).sort(keys)


def _pairs(frame: pl.DataFrame, baseline: str | Mapping[str, str] | None,
           all_pairs: bool) -> pl.DataFrame:
    """The (experiment, config_key, baseline_key) pairs to compare."""
    rows: list[tuple[str, str, str]] = []
    configs = frame.group_by("experiment").agg(pl.col("config_key").unique().sort())
    for experiment, keys in configs.iter_rows():
        base = _baseline_of(experiment, baseline, keys, required=not all_pairs)
        if all_pairs:
            for a, b in combinations(keys, 2):
                rows.append((experiment, a, b) if b == base else (experiment, b, a))
        else:
            rows.extend((experiment, key, base) for key in keys if key != base)
    return pl.DataFrame(rows, schema=["experiment", "config_key", "baseline_key"], orient="row")


def _baseline_of(experiment: str, baseline: str | Mapping[str, str] | None, keys: list[str],
                 required: bool) -> str | None:
    base = baseline.get(experiment) if isinstance(baseline, Mapping) else baseline
    if base is None:
        if required:
            raise ValueError(f"experiment {experiment!r}: no baseline configuration given "
                             "(pass baseline= a config_key, or all_pairs=True)")
        return None
    if base not in keys:
        raise ValueError(f"experiment {experiment!r}: baseline {base!r} has no observations "
                         f"(configurations: {', '.join(keys)})")
    return base


def _empty() -> pl.DataFrame:
    schema = {"experiment": pl.String, "config_key": pl.String, "baseline_key": pl.String,
              "metric": pl.String, "n": pl.Int64, "mean_difference": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "paired": pl.Boolean,
              "confidence": pl.Float64, "stddev": pl.Float64, "half_width": pl.Float64,
              "mean_config": pl.Float64, "mean_baseline": pl.Float64}
    return pl.DataFrame(schema=schema)
