"""t intervals: nominal coverage on a known distribution, the summary table, zero-mean conventions."""

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from simlab_pipelines.analysis import OBSERVATION_COLUMNS, summarise, t_interval
from simlab_pipelines.analysis.intervals import relative_half_width


def test_t_interval_covers_the_true_mean_at_the_nominal_rate():
    # 2,000 independent samples of size 10 from N(3, 2^2). The number of intervals covering 3 is
    # Binomial(2000, 0.95) for a correct interval: mean 1900, sd 9.75. The band is ±3.29 sd, a
    # two-sided 0.1% false-alarm rate; it fails an interval that is too narrow (z instead of t
    # quantile: ~92.1% coverage, 1842) or too wide (99% quantile: 1980).
    rng = np.random.default_rng(20251123)
    samples = rng.normal(3.0, 2.0, size=(2000, 10))
    covered = sum(t_interval(row).ci_low <= 3.0 <= t_interval(row).ci_high for row in samples)
    sd = math.sqrt(2000 * 0.95 * 0.05)
    assert abs(covered - 1900) <= 3.29 * sd, covered


def test_t_interval_matches_scipy():
    x = np.array([2.1, 3.4, 1.9, 5.0, 4.2, 3.3])
    got = t_interval(x, confidence=0.9)
    low, high = stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert got.n == 6
    assert got.ci_low == pytest.approx(low) and got.ci_high == pytest.approx(high)
    assert got.half_width == pytest.approx((high - low) / 2)
    assert got.relative_half_width == pytest.approx(got.half_width / x.mean())


def test_undefined_values_and_tiny_samples():
    assert t_interval([1.0, math.nan, 3.0]).n == 2
    one = t_interval([4.0])
    assert one.mean == 4.0 and math.isnan(one.half_width)
    assert t_interval([]).n == 0


def test_relative_half_width_when_the_mean_is_zero():
    assert relative_half_width(0.0, 0.0) == 0.0          # constant output: nothing to learn
    assert relative_half_width(1.0, 0.0) == math.inf     # undefined: never meets a target
    assert relative_half_width(1.0, 1e-13) == math.inf   # zero up to rounding
    assert relative_half_width(0.5, -2.0) == 0.25
    assert t_interval([0.0, 0.0, 0.0]).relative_half_width == 0.0
    assert t_interval([-1.0, 1.0, 0.0]).relative_half_width == math.inf


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1, "x", True])
def test_bad_confidence_is_rejected(confidence):
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=confidence)


def test_summarise_agrees_with_t_interval_per_group():
    rng = np.random.default_rng(7)
    rows = [("e", key, r, metric, float(rng.normal(10 if key == "a" else 20, 3)))
            for key in ("a", "b") for metric in ("m1", "m2") for r in range(12)]
    rows.append(("e", "b", 12, "m1", math.nan))  # undefined in one replication: counted apart
    frame = pl.DataFrame(rows, schema=OBSERVATION_COLUMNS, orient="row")
    summary = summarise(frame, confidence=0.9)
    assert summary.columns == ["experiment", "config_key", "metric", "n", "mean", "stddev",
                               "ci_low", "ci_high", "half_width", "confidence",
                               "relative_half_width", "undefined"]
    assert summary.height == 4
    assert summary.filter(pl.col("undefined") > 0).select("config_key", "metric",
                                                          "undefined").rows() == [("b", "m1", 1)]
    for row in summary.iter_rows(named=True):
        values = frame.filter((pl.col("config_key") == row["config_key"])
                              & (pl.col("metric") == row["metric"]))["value"].to_numpy()
        want = t_interval(values, 0.9)
        assert row["n"] == want.n == 12
        assert row["ci_low"] == pytest.approx(want.ci_low)
        assert row["ci_high"] == pytest.approx(want.ci_high)
        assert row["relative_half_width"] == pytest.approx(want.relative_half_width)


def test_summarise_names_missing_columns_and_duplicates():
    with pytest.raises(ValueError, match=r"missing column.*replication"):
        summarise(pl.DataFrame({"experiment": ["e"], "config_key": ["a"], "metric": ["m"],
                                "value": [1.0]}))
    dup = pl.DataFrame([("e", "a", 0, "m", 1.0), ("e", "a", 0, "m", 2.0)],
                       schema=OBSERVATION_COLUMNS, orient="row")
    with pytest.raises(ValueError, match=r"duplicate observation.*replication=0"):
        summarise(dup)
