"""The breaking point of one factor: the interval covers the true root at its nominal rate, the
edge cases say what happened, and the search on the real mmck model brackets the closed form.

Coverage is measured on a fast synthetic generator with a known root (a smooth increasing mean
plus normal noise, independent at each point, and with a 0.9-correlated shared term as common
random numbers give), 150 seeded searches each: the count of intervals covering the root must
not fall below the 0.1 % quantile of Binomial(150, 0.95) (a true coverage of 0.95 fails this 1
run in 1,000; the Bonferroni construction is conservative, so the coverage is usually higher).
The noise (sd 0.6 against a slope of 3 at the root) is large enough that decisions near the root
are hard: without the Bonferroni correction (each test at 1 - confidence) the coverage drops to
~83-87 % and the test fails, as it must (with sd 0.4 it passed even then).

The real-model check: the arrival rate at which the mean wait of an M/M/1 queue (service rate 1)
passes 1 time unit is 0.5 (``engine.theory.mmc``: Wq = lambda / (mu (mu - lambda))). The
per-replication estimator is the mean wait of the customers served in the window, whose
expectation differs from the closed form by the start-up bias (the queue starts empty; the
warm-up of 100 is 8.5 relaxation times 1 / (mu (1 - sqrt(rho))^2) = 11.7, so what remains is
below 0.001 in the wait) and the ratio bias (O(1/n) with ~200 customers a replication: about
0.005 in the wait). Both are below 0.01 in the wait, i.e. 0.0025 in the arrival rate (the slope
dWq/dlambda is 4 there), 40 times below the tolerance 0.1: the closed form is the estimator's
expectation to well within the tolerance. Three seeded searches (independent streams, as the
coverage argument needs); each covers with probability >= 0.95, so all three cover with
probability >= 0.85 under the claim (the assertion allows one miss: a false failure needs two
misses, probability <= 3 x 0.05^2 < 0.01).
"""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from engine import simulate, theory
from simlab_pipelines.analysis.threshold import (
    BEYOND_THROUGHOUT,
    FOUND,
    NOT_MONOTONE,
    SIMULATION_BUDGET,
    UNCLEAR,
    UNCLEAR_END,
    WIDE,
    WITHIN_THROUGHOUT,
    decision_budget,
    threshold_round,
)
from simlab_pipelines.experiments import load_experiment, parse_experiment

EXAMPLES = Path(__file__).resolve().parent.parent / "experiments"

LOW, HIGH, LIMIT = 0.2, 1.95, 2.0


def _mean(x: float) -> float:
    return 0.5 + 1.5 * (x - 0.2) ** 2  # increasing on [0.2, 1.95]


ROOT = 0.2 + math.sqrt((LIMIT - 0.5) / 1.5)  # 1.2


def _search(seed: int, *, mean=_mean, correlation: float = 0.0, sd: float = 0.4,
            low: float = LOW, high: float = HIGH, limit: float = LIMIT, tolerance: float = 0.05,
            integer: bool = False, increasing: bool = True, replications: int = 10,
            max_replications: int = 160, simulations: int | None = None):
    """Replay the search round by round on the synthetic generator."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0.0, 1.0, max_replications)
    data: dict[float, np.ndarray] = {}
    points: dict[float, np.ndarray] = {}
    for _ in range(100):
        plan = threshold_round(points, low=low, high=high, limit=limit, tolerance=tolerance,
                               replications=replications, max_replications=max_replications,
                               confidence=0.95, integer=integer, increasing=increasing,
                               simulations=simulations)
        if plan.done:
            return plan
        for x, n in plan.wanted.items():
            if x not in data:
                own = rng.normal(0.0, 1.0, max_replications)
                data[x] = mean(x) + sd * (math.sqrt(correlation) * common
                                          + math.sqrt(1 - correlation) * own)
            points[x] = data[x][:n]
    raise AssertionError("the search did not finish in 100 rounds")


def _covers(result, root: float) -> bool:
    low = -math.inf if result.ci_low is None else result.ci_low
    high = math.inf if result.ci_high is None else result.ci_high
    return low <= root <= high


@pytest.mark.parametrize("correlation", [0.0, 0.9], ids=["independent", "crn-like"])
def test_the_interval_covers_the_root_at_its_nominal_rate(correlation):
    trials = 150
    plans = [_search(seed, correlation=correlation, sd=0.6) for seed in range(trials)]
    covered = sum(_covers(p.result, ROOT) for p in plans)
    assert covered >= stats.binom.ppf(0.001, trials, 0.95), covered / trials
    assert all(p.result.status in (FOUND, WIDE) for p in plans)
    # it narrows down: the intervals are near the tolerance, far below the range
    assert np.median([p.result.ci_high - p.result.ci_low for p in plans]) < 0.2
    assert all(p.result.ci_low <= p.result.estimate <= p.result.ci_high for p in plans)
    # never more values than the coverage argument (and the partition plan) counts on
    assert max(len(p.points) for p in plans) <= plans[0].decisions


def test_a_simulation_budget_stops_the_search_with_an_interval_that_still_covers():
    """budget.simulations: no round starts that would pass it (round 0 excepted), and the
    bracket it stops with is still an interval at the confidence (every decision made stands):
    coverage over 100 seeded searches at the 0.1 % binomial bound, as above. The example's file
    with a budget of 300 runs at most 300 simulations through the replay."""
    trials = 100
    plans = [_search(seed, sd=0.6, simulations=200) for seed in range(trials)]
    assert max(p.result.simulations for p in plans) <= 200
    assert any(p.result.status == SIMULATION_BUDGET for p in plans)
    assert all("budget.simulations (200)" in " ".join(p.result.notes) for p in plans
               if p.result.status == SIMULATION_BUDGET)
    covered = sum(_covers(p.result, ROOT) for p in plans)
    assert covered >= stats.binom.ppf(0.001, trials, 0.95), covered / trials

    from simlab_pipelines import search_local

    data = yaml.safe_load((EXAMPLES / "mmck_breaking_point.yaml").read_text())
    data["search"]["budget"] = {"simulations": 300}
    spec = parse_experiment(data)
    rng = np.random.default_rng(5)

    def stand_in(config, replication):
        rate = config.params["arrival_rate"]
        return {m: 0.0 for m in spec.resolved_model.metrics} | {
            "wait_p95": 2.0 * rate / 1.03 + rng.normal(0.0, 0.5)}

    done = search_local.run_locally(spec, stand_in)
    assert done.progress.done and done.simulations <= 300


def test_the_first_round_asks_for_both_ends_and_the_middle():
    plan = threshold_round({}, low=0.2, high=1.95, limit=2.0, tolerance=0.02, replications=20,
                           max_replications=200)
    assert plan.wanted == {0.2: 20, 1.075: 20, 1.95: 20} and not plan.done
    assert plan.beta == pytest.approx(0.05 / (plan.decisions * len(plan.looks)))
    assert plan.looks == (20, 40, 80, 160, 200)


def test_a_point_not_yet_clear_gets_more_replications_before_anything_else():
    rng = np.random.default_rng(1)
    points = {0.2: 0.5 + rng.normal(0, 0.01, 10), 1.075: 2.0 + rng.normal(0, 0.4, 10),
              1.95: 5.0 + rng.normal(0, 0.01, 10)}
    plan = threshold_round(points, low=0.2, high=1.95, limit=2.0, tolerance=0.02,
                           replications=10, max_replications=80)
    assert plan.wanted == {1.075: 20} and plan.bracket == (0.2, 1.95)


def test_the_limit_already_passed_at_min():
    plan = _search(2, mean=lambda x: 3.0 + x)
    assert plan.result.status == BEYOND_THROUGHOUT
    assert (plan.result.estimate, plan.result.ci_low, plan.result.ci_high) == (None, None, LOW)


def test_the_limit_never_passed_up_to_max():
    plan = _search(2, mean=lambda x: 0.5 + 0.1 * x)
    assert plan.result.status == WITHIN_THROUGHOUT
    assert (plan.result.estimate, plan.result.ci_low, plan.result.ci_high) == (None, HIGH, None)


def test_a_mean_at_the_limit_within_noise_gives_a_wider_interval_and_says_why():
    """The mean sits exactly at the limit from 1.0 to 1.4: no number of replications can tell
    on which side those points are; the interval still covers the breaking point (1.4)."""
    def plateau(x: float) -> float:
        return 1.0 + x if x < 1.0 else (LIMIT if x <= 1.4 else LIMIT + (x - 1.4))

    plan = _search(4, mean=plateau, max_replications=80)
    result = plan.result
    assert result.status == WIDE
    assert result.ci_low <= 1.4 <= result.ci_high and result.ci_high - result.ci_low > 0.05
    assert any(p.status == UNCLEAR and p.n == 80 for p in plan.points)
    assert "stayed within noise of the limit after 80 replications" in result.notes[0]
    # the values as a person writes them: 3 significant digits, not the plan's 6
    said = result.notes[0].removeprefix("the metric at ").split(" stayed")[0].split(", ")
    assert all(len(x.replace(".", "").lstrip("0")) <= 3 for x in said), said


def test_an_end_within_noise_of_the_limit_leaves_that_side_open():
    plan = _search(6, mean=lambda x: LIMIT + max(0.0, x - 1.0), max_replications=40)
    assert plan.result.status == UNCLEAR_END and plan.result.ci_low is None
    assert plan.result.ci_high is not None and plan.result.ci_high > 1.0


def test_a_falling_metric_and_an_integer_factor():
    """Servers (1..40) against a wait that falls with them: the smallest count within the limit
    (the mean wait 10 / servers within 1.05: 10 servers), found exactly."""
    plan = _search(8, mean=lambda c: 10.0 / c, sd=0.05, low=1, high=40, limit=1.05,
                   tolerance=1, integer=True, increasing=False)
    result = plan.result
    assert result.status == FOUND and (result.ci_low, result.ci_high, result.estimate) == (
        10, 10, 10)
    assert all(isinstance(p.x, int) for p in plan.points)


def test_a_metric_that_falls_when_it_was_declared_rising_gives_no_breaking_point():
    """A wait that falls with the servers, searched with the default direction (increasing):
    beyond the limit at 1 server, within it at 40. That is no breaking point "beyond the range"
    (the metric is not within the limit throughout): the search stops and says so."""
    result = _search(8, mean=lambda c: 10.0 / c, sd=0.05, low=1, high=40, limit=1.05,
                     tolerance=1, integer=True).result
    assert result.status == NOT_MONOTONE
    assert (result.estimate, result.ci_low, result.ci_high) == (None, None, None)


def test_an_integer_factors_estimate_is_one_of_its_values():
    """With a tolerance of several steps the interval spans several integers; the estimate is
    the integer the interpolation points to (the smallest within the limit for a falling
    metric: 10 / c <= 1.05 from c = 10), never a fraction of a server."""
    result = _search(8, mean=lambda c: 10.0 / c, sd=0.05, low=1, high=40, limit=1.05,
                     tolerance=4, integer=True, increasing=False).result
    assert result.status == FOUND and result.ci_high - result.ci_low > 1
    assert isinstance(result.estimate, int) and result.ci_low <= result.estimate <= result.ci_high
    rising = _search(8, mean=lambda c: c / 10.0, sd=0.05, low=1, high=40, limit=1.05,
                     tolerance=4, integer=True).result
    assert isinstance(rising.estimate, int) and rising.ci_low <= rising.estimate <= rising.ci_high


def test_the_example_plans_its_partitions_from_the_procedures_bound():
    """The breaking-point example's spec counts at most D values (not a search's 10,000), so its
    replications are not grouped into blocks."""
    spec = load_experiment(EXAMPLES / "mmck_breaking_point.yaml")
    threshold = spec.search_space.threshold
    assert threshold.max_points == decision_budget(threshold.min, threshold.max,
                                                   threshold.tolerance, threshold.integer) == 15
    assert spec.block_size == 1


def test_the_same_results_give_the_same_plan():
    first = _search(9)
    again = _search(9)
    assert first.result == again.result and first.points == again.points


def test_the_real_mmck_search_brackets_the_closed_form_root():
    mu, limit = 1.0, 1.0
    root = 0.5
    assert theory.mmc(1, root, mu).Wq == pytest.approx(limit)
    misses = 0
    for seed in (1, 2, 3):
        points: dict[float, list[float]] = {}
        for _ in range(40):
            plan = threshold_round(points, low=0.1, high=0.9, limit=limit, tolerance=0.1,
                                   replications=10, max_replications=80, confidence=0.95)
            if plan.done:
                break
            for x, n in plan.wanted.items():
                have = points.setdefault(x, [])
                have += [simulate("mmck", {"servers": 1, "arrival_rate": x, "service_rate": mu},
                                  replication=r, seed=seed, horizon=400, warmup=100,
                                  common_random_numbers=False).metrics["mean_wait"]
                         for r in range(len(have), n)]
        assert plan.done and plan.result.status in (FOUND, WIDE)
        assert plan.result.ci_high - plan.result.ci_low < 0.4
        misses += not _covers(plan.result, root)
    assert misses <= 1
