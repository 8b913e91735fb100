"""Paired (CRN) and unpaired differences to a baseline; CRN narrows the paired interval on mmck."""

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

import engine
from simlab_pipelines.analysis import COMPARISON_COLUMNS, OBSERVATION_COLUMNS, compare, crn_effect


def frame(values: dict[str, dict[int, float]], metric: str = "m",
          experiment: str = "e") -> pl.DataFrame:
    rows = [(experiment, key, r, metric, v) for key, by_rep in values.items()
            for r, v in by_rep.items()]
    return pl.DataFrame(rows, schema=OBSERVATION_COLUMNS, orient="row")


def test_paired_and_welch_intervals_match_scipy_on_common_replications():
    rng = np.random.default_rng(3)
    common = rng.normal(0, 2, 25)
    base = {r: 10 + common[r] + rng.normal(0, 0.5) for r in range(25)}
    config = {r: 12 + common[r] + rng.normal(0, 0.5) for r in range(25) if r != 7}
    config[40] = 99.0  # a replication the baseline lacks: not paired, so not used at all
    out = compare(frame({"base": base, "new": config}), "base", confidence=0.9)
    assert out.columns == [*COMPARISON_COLUMNS, "stddev", "half_width", "mean_config",
                           "mean_baseline"]
    reps = [r for r in range(25) if r != 7]
    x, y = np.array([config[r] for r in reps]), np.array([base[r] for r in reps])
    paired = out.filter(pl.col("paired")).row(0, named=True)
    welch = out.filter(~pl.col("paired")).row(0, named=True)
    want_p = stats.ttest_rel(x, y).confidence_interval(0.9)
    want_w = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.9)
    assert paired["n"] == welch["n"] == 24
    assert (paired["config_key"], paired["baseline_key"]) == ("new", "base")
    assert paired["mean_difference"] == pytest.approx((x - y).mean())
    # each side's mean over the same replications as the difference (not over all of its own)
    assert (paired["mean_config"], paired["mean_baseline"]) == pytest.approx((x.mean(), y.mean()))
    assert paired["mean_config"] - paired["mean_baseline"] == pytest.approx(
        paired["mean_difference"])
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx(tuple(want_p))
    assert (welch["ci_low"], welch["ci_high"]) == pytest.approx(tuple(want_w))
    assert paired["confidence"] == 0.9
    # The common component cancels only in the paired interval.
    assert paired["half_width"] < 0.5 * welch["half_width"]


def test_all_pairs_and_baseline_orientation():
    data = {key: {r: float(i * 10 + r % 3) for r in range(6)}
            for i, key in enumerate(["a", "b", "c"])}
    out = compare(frame(data), "b", all_pairs=True)
    pairs = set(out.select("config_key", "baseline_key").iter_rows())
    assert pairs == {("a", "b"), ("c", "b"), ("c", "a")}
    row = out.filter((pl.col("config_key") == "a") & pl.col("paired")).row(0, named=True)
    assert row["mean_difference"] == pytest.approx(-10.0)
    assert row["half_width"] == 0.0  # identical noise in both: a zero-width paired interval
    per_experiment = compare(frame(data, experiment="x"), {"x": "c"})
    assert set(per_experiment["baseline_key"]) == {"c"}


def test_baseline_errors_name_the_problem():
    data = frame({"a": {0: 1.0, 1: 2.0}, "b": {0: 1.5, 1: 2.5}})
    with pytest.raises(ValueError, match="no baseline"):
        compare(data)
    with pytest.raises(ValueError, match="baseline 'zz' has no observations"):
        compare(data, "zz")


def mmck_frame(crn: bool) -> pl.DataFrame:
    rows = []
    for servers in (2, 3):
        for r in range(30):
            result = engine.simulate("mmck", {"servers": servers, "arrival_rate": 1.0,
                                              "service_rate": 1.0}, replication=r, seed=4242,
                                     horizon=200.0, warmup=20.0, common_random_numbers=crn)
            rows.append(("q", f"servers-{servers}", r, "mean_number_in_system",
                         result.metrics["mean_number_in_system"]))
    return pl.DataFrame(rows, schema=OBSERVATION_COLUMNS, orient="row")


def test_crn_makes_the_paired_interval_narrower_and_independent_streams_do_not():
    # Two M/M/c queues (lambda = 1, mu = 1) with 2 and 3 servers. With CRN, replication r of both
    # sees the same arrivals and service demands, so L differs only by the extra queueing of the
    # 2-server system and the paired half-width is about half the unpaired one. Without CRN the
    # outputs are independent; both intervals then estimate the same variance and the ratio is ~1.
    # Over 30 seeds (30 replications each) the ratio was 0.54 ± 0.06 (sd) with CRN and
    # 1.03 ± 0.05 without: the threshold 0.8 is more than 4 sd from both, so either assertion
    # fails by chance with probability well below 1e-4.
    with_crn = crn_effect(compare(mmck_frame(True), "servers-2")).row(0, named=True)
    without = crn_effect(compare(mmck_frame(False), "servers-2")).row(0, named=True)
    assert with_crn["n"] == without["n"] == 30
    assert with_crn["half_width_ratio"] < 0.8, with_crn
    assert without["half_width_ratio"] > 0.8, without
    assert not math.isnan(with_crn["unpaired_half_width"])
