"""Selection of the best: Rinott's h against published values and independent computations, the
probability of correct selection in the least favourable configuration, and subset selection."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from simlab_pipelines.analysis.selection import (
    rinott_h,
    select_best,
    subset_selection,
    two_stage_selection,
)

# For k = 2 Rinott's h equals Dudewicz & Dalal's h1: both are the P* quantile of T1 - T2, two
# independent t(n0 - 1) variables. Published (3 decimals) in the table of h1 in Law (2015),
# Simulation Modeling and Analysis, 5th ed., §10.4 (from Dudewicz & Dalal 1975).
PUBLISHED_K2 = {(20, 0.90): 1.896, (20, 0.95): 2.453, (40, 0.90): 1.852, (40, 0.95): 2.386}


@pytest.mark.parametrize(("n0", "pstar"), list(PUBLISHED_K2))
def test_rinott_h_for_two_systems_matches_the_published_table(n0, pstar):
    assert rinott_h(2, n0, pstar) == pytest.approx(PUBLISHED_K2[(n0, pstar)], abs=6e-4)


def test_rinott_h_for_two_systems_by_an_independent_integral():
    # P(T1 - T2 <= h) = ∫ F_t(s + h) f_t(s) ds, by adaptive quadrature on the t densities.
    for n0, pstar in [(10, 0.95), (5, 0.9), (50, 0.99)]:
        h, nu = rinott_h(2, n0, pstar), n0 - 1
        p = integrate.quad(lambda s, h=h, nu=nu: stats.t.cdf(s + h, nu) * stats.t.pdf(s, nu),
                           -np.inf, np.inf, epsabs=1e-12)[0]
        assert p == pytest.approx(pstar, abs=1e-7)


@pytest.mark.parametrize(("k", "n0", "pstar"), [(5, 20, 0.95), (10, 10, 0.9)])
def test_rinott_h_by_monte_carlo(k, n0, pstar):
    # Rinott's defining probability P(Z_i sqrt(ν (1/X_i + 1/Y)) <= h for i < k), Z_i ~ N(0,1),
    # X_i, Y ~ chi2(ν) all independent, at the computed h: 200,000 draws give a standard error of
    # ~0.0005-0.0007; the tolerance of 4.5 standard errors is a two-sided false-alarm rate < 1e-5.
    h, nu = rinott_h(k, n0, pstar), n0 - 1
    rng = np.random.default_rng(k * 1000 + n0)
    draws = 200_000
    z = rng.standard_normal((draws, k - 1))
    x = rng.chisquare(nu, (draws, k - 1))
    y = rng.chisquare(nu, (draws, 1))
    p = np.mean(np.all(z * np.sqrt(nu * (1 / x + 1 / y)) <= h, axis=1))
    assert abs(p - pstar) <= 4.5 * math.sqrt(pstar * (1 - pstar) / draws), (h, p)


def test_rinott_h_tends_to_the_known_variance_constant():
    # n0 -> infinity: S_i = sigma_i, and h solves Φ(h / sqrt 2)^(k-1) = P*.
    for k in (2, 4, 10):
        want = math.sqrt(2) * stats.norm.ppf(0.95 ** (1 / (k - 1)))
        assert rinott_h(k, 20_000, 0.95) == pytest.approx(want, rel=2e-4)
    assert rinott_h(3, 10, 0.95) < rinott_h(4, 10, 0.95)      # more systems, larger h
    assert rinott_h(4, 10, 0.95) > rinott_h(4, 30, 0.95)      # more first stage, smaller h


def run_two_stage(rng, means, sigmas, delta, pstar, n0, crn=False, common_sd=0.0, minimize=False):
    """Draw the first stage, ask for N_i, draw the rest, select. Returns the selected index."""
    k = len(means)
    size = 4000
    shared = rng.normal(0.0, common_sd, size) if crn else np.zeros(size)
    streams = {str(i): means[i] + shared + rng.normal(0.0, sigmas[i], size) for i in range(k)}
    first = {key: s[:n0] for key, s in streams.items()}
    plan = two_stage_selection(first, indifference_zone=delta, pstar=pstar, n0=n0,
                               minimize=minimize, common_random_numbers=crn)
    assert not plan.complete or all(n == n0 for n in plan.required.values())
    full = {key: s[: plan.required[key]] for key, s in streams.items()}
    final = two_stage_selection(full, indifference_zone=delta, pstar=pstar, n0=n0,
                                minimize=minimize, common_random_numbers=crn)
    assert final.complete and final.required == plan.required
    return int(final.best)


@pytest.mark.parametrize("crn", [False, True])
def test_probability_of_correct_selection_in_the_least_favourable_configuration(crn):
    # Slippage configuration: the best is exactly delta better than all the others, the hardest
    # case inside the indifference zone. P(correct) >= 0.95 is guaranteed (both procedures are
    # conservative), so over 400 trials the count of correct selections is at least
    # 0.95·400 - 3.09·sqrt(400·0.95·0.05) = 366.5 except with probability <= 0.1% (one-sided).
    rng = np.random.default_rng(31 if crn else 30)
    means, sigmas = [1.0, 0.0, 0.0, 0.0], [2.0, 1.0, 3.0, 1.5]
    correct = sum(run_two_stage(rng, means, sigmas, 1.0, 0.95, 10, crn=crn, common_sd=3.0) == 0
                  for _ in range(400))
    assert correct >= 367, correct


def test_a_clear_winner_is_selected_when_minimising_and_maximising():
    rng = np.random.default_rng(5)
    means, sigmas = [5.0, 8.0, 12.0], [1.0, 1.0, 1.0]
    assert run_two_stage(rng, means, sigmas, 1.0, 0.95, 10, minimize=True) == 0
    assert run_two_stage(rng, means, sigmas, 1.0, 0.95, 10) == 2
    assert run_two_stage(rng, means, sigmas, 1.0, 0.95, 10, crn=True, common_sd=5.0) == 2
    assert select_best({"a": 1.0, "b": 1.0, "c": 0.5}) == "a"  # ties broken by key
    assert select_best({"a": 1.0, "b": 1.0, "c": 0.5}, minimize=True) == "c"


@pytest.mark.parametrize("crn", [False, True])
def test_subset_contains_the_best_with_the_stated_probability(crn):
    # Five configurations, the best only 0.05 sigma ahead of the next: the subset must still
    # contain it with probability >= 95% (any means). 400 trials: at least 367 contain it, except
    # with probability <= 0.1% (one-sided binomial bound as above).
    rng = np.random.default_rng(41 if crn else 40)
    means = [0.0, 0.1, 0.2, 0.3, 0.35]
    hits = 0
    for _ in range(400):
        shared = rng.normal(0.0, 2.0, 20) if crn else 0.0
        data = {str(i): m + shared + rng.normal(0.0, 1.0, 20) for i, m in enumerate(means)}
        subset = subset_selection(data, confidence=0.95, common_random_numbers=crn)
        hits += "4" in subset.keep
    assert hits >= 367, hits


def test_subset_rules_out_clearly_worse_configurations():
    rng = np.random.default_rng(6)
    data = {"slow": rng.normal(10.0, 1.0, 30), "fast": rng.normal(5.0, 1.0, 30),
            "fast-too": rng.normal(5.05, 1.0, 30)}
    subset = subset_selection(data, minimize=True)
    assert set(subset.keep) == {"fast", "fast-too"} and subset.best == subset.keep[0]
    assert subset_selection(data).keep == ("slow",)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="k = 1"):
        rinott_h(1, 10, 0.95)
    with pytest.raises(ValueError, match="pstar"):
        rinott_h(4, 10, 0.2)
    with pytest.raises(ValueError, match="indifference_zone"):
        two_stage_selection({"a": [1.0, 2.0], "b": [2.0, 3.0]}, indifference_zone=0.0)
    with pytest.raises(ValueError, match="n0 = 5"):
        two_stage_selection({"a": [1.0, 2.0], "b": [2.0, 3.0]}, indifference_zone=1.0, n0=5)
    with pytest.raises(ValueError, match="same replications"):
        subset_selection({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0]}, common_random_numbers=True)
