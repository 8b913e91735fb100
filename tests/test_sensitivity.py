"""Sensitivity analysis (simlab_pipelines/analysis/sensitivity.py) against closed forms: Sobol'
indices of the Ishigami function, Morris effects on its grid, coefficients of a linear response.

Statistical checks use fixed seeds and 99% intervals per index (Bonferroni over the indices of a
test gives a family-wise level of at least 94%); the Saltelli interval check missed none of 120
intervals over 20 design seeds when it was written.
"""

import itertools
import math

import numpy as np
import polars as pl
import pytest

import engine
from engine.models.ishigami import ishigami, sobol_indices
from simlab_pipelines.analysis.sensitivity import (
    analyse_design,
    elementary_effects,
    metamodel_terms,
    sensitivity_sentence,
)
from simlab_pipelines.experiments import parse_experiment

PI = math.pi
CONFIDENCE = 0.99
COLUMNS = ["experiment", "config_key", "replication", "metric", "value"]


def spec_for(model: str, design: dict, **fields):
    return parse_experiment({"name": "t", "model": model, "seed": 5, "replications": 2,
                             "design": design, **fields})


def ishigami_design(method: str, points: int, seed: int = 1, **extra) -> dict:
    return {"method": method, "points": points, "seed": seed,
            "factors": {n: {"min": -PI, "max": PI} for n in ("x1", "x2", "x3")}, **extra}


def ishigami_observations(spec, replications: int, noise_sd: float, seed: int) -> pl.DataFrame:
    """The function at every configuration plus independent Gaussian noise per replication."""
    rng = np.random.default_rng(seed)
    rows = []
    for config in spec.configurations_list():
        clean = ishigami(config.params["x1"], config.params["x2"], config.params["x3"])
        rows += [("t", config.key, r, "y", clean + noise_sd * rng.standard_normal())
                 for r in range(replications)]
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


def simulated_observations(spec) -> pl.DataFrame:
    """Every configuration x replication through the engine (analytic models: microseconds)."""
    rows = []
    for config in spec.configurations_list():
        for r in range(spec.replications):
            record = engine.simulate(spec.model, config.params, replication=r, seed=spec.seed,
                                     common_random_numbers=spec.common_random_numbers)
            rows += [("t", config.key, r, metric, value)
                     for metric, value in record.metrics.items()]
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


def table_of(result) -> dict[tuple[str, str], dict]:
    return {(r["statistic"], r["factor"]): r for r in result.table.iter_rows(named=True)}


def test_sobol_indices_of_ishigami_cover_the_closed_forms():
    spec = spec_for("ishigami", ishigami_design("saltelli", 256, seed=3))
    observations = ishigami_observations(spec, replications=2, noise_sd=1.0, seed=3)
    result = analyse_design(observations, spec.design_points, spec.config_keys(),
                            experiment="t", confidence=CONFIDENCE, seed=3)
    rows = table_of(result)
    truth = sobol_indices()
    for statistic in ("S1", "ST"):
        for factor, value in truth[statistic].items():
            row = rows[(statistic, factor)]
            assert row["ci_low"] <= value <= row["ci_high"], (statistic, factor, row)
            assert row["ci_high"] - row["ci_low"] < 0.6  # informative, not just wide
    interaction = rows[("S2", "x1:x3")]
    assert interaction["ci_low"] <= truth["S2"]["x1:x3"] <= interaction["ci_high"]
    assert {r["confidence"] for r in rows.values()} == {CONFIDENCE}
    # The answer names x2 and x1 as the main drivers and the x1:x3 interaction.
    sentence = sensitivity_sentence(result.table, "y")
    assert sentence.index("x2 explains") < sentence.index("x1 ")
    assert "x1:x3" in sentence


def test_intervals_widen_with_simulation_noise():
    spec = spec_for("ishigami", ishigami_design("saltelli", 64, seed=4, second_order=False))
    widths = {}
    for noise in (0.0, 4.0):
        observations = ishigami_observations(spec, replications=3, noise_sd=noise, seed=4)
        result = analyse_design(observations, spec.design_points, spec.config_keys(),
                                experiment="t", seed=4)
        widths[noise] = (result.table["ci_high"] - result.table["ci_low"]).to_numpy()
    assert (widths[4.0] > widths[0.0]).all()


def exact_morris_mu_star(levels: int = 4) -> dict[str, float]:
    """μ* of the Ishigami function on the Morris grid: every grid point, every upward step."""
    grid = [i / (levels - 1) for i in range(levels)]
    delta = levels / (2 * (levels - 1))
    out = {}
    for j, name in enumerate(("x1", "x2", "x3")):
        effects = []
        for x in itertools.product(grid, repeat=3):
            if x[j] + delta > 1 + 1e-9:
                continue
            moved = list(x)
            moved[j] += delta
            value = [-PI + 2 * PI * u for u in x]
            after = [-PI + 2 * PI * u for u in moved]
            effects.append(abs(ishigami(*after) - ishigami(*value)) / delta)
        out[name] = float(np.mean(effects))
    return out


def test_morris_ranks_the_ishigami_factors():
    spec = spec_for("ishigami", ishigami_design("morris", 60, seed=2, levels=4))
    observations = simulated_observations(spec)
    result = analyse_design(observations, spec.design_points, spec.config_keys(),
                            experiment="t", confidence=CONFIDENCE, seed=2)
    rows = table_of(result)
    exact = exact_morris_mu_star()
    for factor, value in exact.items():
        row = rows[("mu_star", factor)]
        # (x2's effect is the same at every grid point: its interval is a point, up to the 6
        # significant digits the design keeps)
        assert row["ci_low"] - 1e-4 <= value <= row["ci_high"] + 1e-4, (factor, row, value)
    ranking = sorted(exact, key=lambda f: -rows[("mu_star", f)]["value"])
    assert ranking[2] == "x3" and set(ranking[:2]) == {"x1", "x2"}  # x3 acts only with x1
    # The same numbers as SALib's own analysis of these trajectories.
    from SALib.analyze import morris

    y_rows = (observations.group_by("config_key").agg(pl.col("value").mean())
              .to_dict(as_series=False))
    mean = dict(zip(y_rows["config_key"], y_rows["value"], strict=True))
    keys = spec.config_keys()
    y = np.array([mean[keys[c]] for c in spec.design_points.row_config])
    problem = {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [[0, 1]] * 3}
    salib = morris.analyze(problem, spec.design_points.unit, y, num_levels=4, seed=1)
    for j, factor in enumerate(("x1", "x2", "x3")):
        assert rows[("mu_star", factor)]["value"] == pytest.approx(salib["mu_star"][j])
        assert rows[("sigma", factor)]["value"] == pytest.approx(salib["sigma"][j])
    effects = elementary_effects(y[:, None], spec.design_points)
    assert effects.shape == (60, 3, 1)
    assert "x2" in sensitivity_sentence(result.table, "y")


def test_regression_recovers_the_coefficients_of_a_linear_response():
    truth = {"b0": 1.0, "b1": 3.0, "b2": -2.0, "b3": 0.5, "b12": 1.0}
    design = {"method": "latin_hypercube", "points": 32, "seed": 6, "factors": {
        "x1": {"min": -1.0, "max": 1.0}, "x2": {"min": -1.0, "max": 1.0},
        "x3": {"min": 1.0, "max": 3.0}}}  # coded x3 = x3 - 2: same slope
    spec = spec_for("linear", design, parameters={**truth, "noise_sd": 0.5}, replications=4,
                    common_random_numbers=False)
    result = analyse_design(simulated_observations(spec), spec.design_points,
                            spec.config_keys(), experiment="t", confidence=CONFIDENCE, seed=6)
    rows = table_of(result)
    expected = {"x1": 3.0, "x2": -2.0, "x3": 0.5, "x1:x2": 1.0, "x1:x3": 0.0, "x2:x3": 0.0}
    for term, value in expected.items():
        row = rows[("coefficient", term)]
        assert row["ci_low"] <= value <= row["ci_high"], (term, row)
        if ":" not in term:  # interactions vary less over the design: wider intervals
            assert row["ci_high"] - row["ci_low"] < 1.0
    # Variance shares: b²/3 per main effect, b12²/9 for the interaction, of their sum.
    parts = {"x1": 9 / 3, "x2": 4 / 3, "x3": 0.25 / 3, "x1:x2": 1 / 9}
    total = sum(parts.values())
    for term, part in parts.items():
        row = rows[("variance_share", term)]
        assert row["ci_low"] <= part / total <= row["ci_high"], (term, row)
    fit = result.metamodel.row(0, named=True)
    assert fit["r_squared"] > 0.95 and fit["pure_error_df"] == 32 * 3
    assert fit["lack_of_fit_p_value"] > 0.01  # the metamodel is the truth
    sentence = sensitivity_sentence(result.table, "y", metamodel=result.metamodel)
    assert sentence.startswith("x1 explains") and sentence.index("x2 ") < sentence.index("x3 ")
    assert "no evidence of lack of fit" in sentence
    # the factors not listed are named
    assert "(x3 less)" in sensitivity_sentence(result.table, "y", max_factors=2)


def test_lack_of_fit_is_detected_when_the_metamodel_is_wrong():
    spec = spec_for("ishigami", ishigami_design("latin_hypercube", 40, seed=8),
                    parameters={"noise_sd": 0.5}, common_random_numbers=False, replications=3)
    result = analyse_design(simulated_observations(spec), spec.design_points,
                            spec.config_keys(), experiment="t", seed=8)
    fit = result.metamodel.row(0, named=True)
    assert fit["lack_of_fit_p_value"] < 0.01  # sin² is no polynomial of degree 2
    assert "misses some of the response" in sensitivity_sentence(result.table, "y",
                                                                 metamodel=result.metamodel)


def test_fractional_factorial_metamodel_leaves_out_aliased_interactions():
    design = {"method": "fractional_factorial", "points": 16, "factors": {
        "x1": {"min": -1.0, "max": 1.0}, "x2": {"min": -1.0, "max": 1.0},
        "x3": {"min": -1.0, "max": 1.0}, "b0": {"min": 0.0, "max": 2.0}}}
    spec = spec_for("linear", design, parameters={"b1": 2.0, "b2": 1.0})
    terms = metamodel_terms(spec.design_points)
    assert len(spec.design_points.configurations) == 16  # resolution IV, 2^(4-0): full
    assert terms.aliased == ["x2:x3", "x2:b0", "x3:b0"]  # 16 points: 8 parameters at most
    resolution_iv = metamodel_terms(spec_for("linear", {**design, "points": 8}).design_points)
    assert resolution_iv.names == ["x1", "x2", "x3", "b0"]  # 8 points: main effects only
    result = analyse_design(simulated_observations(spec), spec.design_points,
                            spec.config_keys(), experiment="t", seed=1)
    rows = table_of(result)
    assert rows[("coefficient", "x1")]["value"] == pytest.approx(2.0)
    assert rows[("coefficient", "b0")]["value"] == pytest.approx(1.0)
    fit = result.metamodel.row(0, named=True)
    assert fit["aliased"] == ", ".join(terms.aliased)
    assert fit["lack_of_fit_df"] == 16 - 8 and fit["lack_of_fit_p_value"] > 0.01


def test_metrics_without_values_or_variation_are_noted_not_analysed():
    spec = spec_for("linear", {"method": "halton", "points": 8, "seed": 1,
                               "factors": {"x1": {"min": 0.0, "max": 1.0}}})
    observations = simulated_observations(spec)
    constant = observations.with_columns(pl.lit("c").alias("metric"), pl.lit(1.0).alias("value"))
    partial = observations.with_columns(pl.lit("p").alias("metric")).filter(
        pl.col("config_key") != spec.config_keys()[0])
    result = analyse_design(pl.concat([observations, constant, partial]), spec.design_points,
                            spec.config_keys(), experiment="t", seed=1)
    assert set(result.table["metric"].unique()) == {"y"}
    assert any(n.startswith("c: constant") for n in result.notes)
    assert any(n.startswith("p: not analysed") for n in result.notes)
    with pytest.raises(ValueError, match="keys"):
        analyse_design(observations, spec.design_points, spec.config_keys()[1:], experiment="t")
