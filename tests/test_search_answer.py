"""The search's sentences and charts: the answer in the user's terms (units on every number, the
recommendation with each limit, runners-up and what they miss, how it was found and the
guarantee; the breaking point with its interval), and SVG charts that draw what they are given.

The inputs are real results of the procedures (a replayed clean-up and threshold search on the
synthetic generators of test_cleanup.py and test_threshold.py, fixed seeds); the assertions are
about wording and structure that hold for any seed, not about seeded numbers.
"""

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from test_cleanup import COST, _run
from test_threshold import LIMIT, _search

from simlab_pipelines.analysis.constraints import FEASIBLE, INFEASIBLE, UNDECIDED, Limit
from simlab_pipelines.analysis.search_answer import search_text, threshold_text
from simlab_pipelines.analysis.search_plots import (
    configurations_chart,
    convergence_chart,
    important_factors,
    threshold_chart,
)
from simlab_pipelines.analysis.threshold import BEYOND, UNCLEAR, WITHIN

CONFIGS = {k: {"pool": 4 + i, "timeout": 2.0} for i, k in enumerate(COST)}
UNITS = {"cost": "$", "latency": "s"}
SVG = "{http://www.w3.org/2000/svg}"


def test_the_search_answer_names_the_recommendation_its_limits_and_the_runners_up():
    state, have = _run(1)
    text = search_text(state, metric="cost", configurations=CONFIGS, units=UNITS, evaluated=8,
                       space_size=4096, simulations=sum(have.values()), search_simulations=80)
    plain, statistics = text.split("\n\n")
    pool = CONFIGS[state.recommended]["pool"]
    assert plain.startswith(f"Cheapest configuration that meets the service level: pool {pool}, "
                            f"timeout 2 ({state.recommended}) — $")
    assert re.search(r"latency 0\.\d+ ± 0\.\d+ s \(limit: at most 0\.2 s, met with 95 % "
                     r"confidence\)", plain)
    assert "Runners-up: " in plain
    runners = plain[plain.index("Runners-up: "):]
    shown = sorted((k for k in state.candidates if k != state.recommended),
                   key=state.means.get)[:3]
    for key in shown:  # the runners-up by their settings, best first
        assert f"pool {CONFIGS[key]['pool']}, timeout 2 — $" in runners
    assert statistics.startswith(f"Found by evaluating 8 configurations of 4,096 (0.2 %) with "
                                 f"{sum(have.values()):,} simulations (80 in the search, ")
    assert (f"A selection among the {len(state.candidates)} best (Clark & Yang's two-stage "
            "procedure with common random numbers") in statistics
    assert "within $2 of the cheapest feasible configuration among them with probability ≥ 0.95" \
        in statistics
    assert f"Bonferroni over the {len(state.candidates)} candidates" in statistics
    # the guarantee is about the candidates only: the others were screened on the first stage
    assert statistics.endswith("Configurations the search never proposed, or left out of the "
                               "clean-up after their first 10 replications, are not covered by "
                               "these statements.")


def test_a_runner_up_that_misses_a_limit_says_which():
    for seed in range(40):  # a seed where the trap (infeasible in truth) is a candidate
        state, have = _run(seed)
        if "trap" in state.candidates and state.final.overall["trap"] != FEASIBLE:
            break
    else:
        pytest.fail("the trap was never a candidate")
    text = search_text(state, metric="cost", configurations=CONFIGS, units=UNITS, evaluated=8,
                       simulations=sum(have.values()))
    clause = re.search(r"pool 9, timeout 2 — \$[\d.]+ ± [\d.]+, but ([^;.]+)", text)
    assert clause is not None, text
    assert (clause.group(1).startswith("misses latency (0.2")
            or clause.group(1) == "is too close to the latency limit to tell")


def test_the_selection_claim_names_its_proviso_and_is_not_made_when_cut():
    """The selection's probability covers the cheapest feasible candidate only when that one is
    itself shown to meet the limits (one within noise of a limit is never recommended), and
    nothing at all once the second stage was cut at max_replications."""
    for seed in range(40):  # a seed where a candidate stays too close to the limit to tell
        state, have = _run(seed)
        if UNDECIDED in state.final.overall.values():
            break
    else:
        pytest.fail("no candidate was ever undecided")
    undecided = sum(s == UNDECIDED for s in state.final.overall.values())
    statistics = search_text(state, metric="cost", configurations=CONFIGS, units=UNITS,
                             evaluated=8, simulations=sum(have.values())).split("\n\n")[1]
    assert ("with probability ≥ 0.95, provided that configuration is itself shown to meet "
            "every limit") in statistics, statistics
    assert f"{undecided} of the {len(state.candidates)} candidates " in statistics, statistics
    cut = _run(1, max_replications=24)[0]
    assert cut.capped and cut.recommended is not None
    statistics = search_text(cut, metric="cost", configurations=CONFIGS, units=UNITS,
                             evaluated=8, simulations=100).split("\n\n")[1]
    assert "probability ≥" not in statistics and "does not hold" in statistics, statistics


def test_nothing_feasible_says_so_and_how_far_the_closest_is():
    state, have = _run(3, limits=[Limit("latency", None, 0.05, 0.95)])
    text = search_text(state, metric="cost", configurations=CONFIGS, units=UNITS, evaluated=8,
                       simulations=sum(have.values()))
    assert text.startswith("No configuration the search evaluated is shown to meet every "
                           "service level (latency at most 0.05 s), so none is recommended. "
                           "Closest to meeting them: pool 11, timeout 2 (dear), which misses "
                           "latency by 0.0")
    assert "s against at most 0.05 s)." in text


def test_the_breaking_point_in_words():
    plan = _search(1)
    result = plan.result.named("arrival_rate", "wait_p95")
    text = threshold_text(result, units={"wait_p95": "s"}, factor_unit="requests per second",
                          points=len(plan.points))
    plain, how = text.split("\n\n")
    match = re.fullmatch(r"Wait p95 stays within 2 s up to arrival rate ([\d.]+) requests a "
                         r"second \(([\d.]+)–([\d.]+), 95 %\)\.", plain)
    assert match, plain
    low, estimate, high = (float(match.group(i)) for i in (2, 1, 3))
    assert low <= estimate <= high
    assert low == pytest.approx(result.ci_low, abs=0.01)
    assert how.startswith(f"Found by bisection on one-sided intervals with "
                          f"{result.simulations:,} simulations at {len(plan.points)} values of "
                          "arrival rate; the interval covers the breaking point with "
                          "probability ≥ 0.95")
    beyond = _search(2, mean=lambda x: 3.0 + x).result.named("arrival_rate", "wait_p95")
    assert threshold_text(beyond, units={"wait_p95": "s"}).startswith(
        "Wait p95 is already beyond 2 s at arrival rate 0.2")
    within = _search(2, mean=lambda x: 0.5 + 0.1 * x).result.named("arrival_rate", "wait_p95")
    assert "stays within 2 s up to arrival rate 1.95, the highest value searched" in \
        threshold_text(within, units={"wait_p95": "s"})
    servers = _search(8, mean=lambda c: 10.0 / c, sd=0.05, low=1, high=40, limit=1.05,
                      tolerance=1, integer=True, increasing=False).result
    assert threshold_text(servers.named("servers", "mean_wait"), units={"mean_wait": "min"}
                          ).startswith("Mean wait stays within 1.05 min from servers 10 (95 %).")


def test_the_breaking_points_interval_is_rounded_outwards():
    """The printed interval must still contain the computed one (which has the coverage):
    1.075 at two decimals is 1.08 as an upper end, not 1.07; a lower end rounds down."""
    import dataclasses

    result = dataclasses.replace(_search(1).result.named("arrival_rate", "wait_p95"),
                                 estimate=1.0304, ci_low=0.992968, ci_high=1.075)
    plain = threshold_text(result, units={"wait_p95": "s"}).split("\n\n")[0]
    assert "(0.99–1.08, 95 %)" in plain, plain
    result = dataclasses.replace(result, ci_low=1.0051, ci_high=1.0749)
    assert "(1.00–1.08, 95 %)" in threshold_text(result, units={"wait_p95": "s"}), result
    open_above = dataclasses.replace(result, estimate=None, ci_low=1.0051, ci_high=None)
    assert "at least 1.005 " in threshold_text(open_above, units={"wait_p95": "s"})


def test_a_metric_against_its_declared_direction_is_said_not_called_within_throughout():
    plan = _search(8, mean=lambda c: 10.0 / c, sd=0.05, low=1, high=40, limit=1.05,
                   tolerance=1, integer=True)
    plain = threshold_text(plan.result.named("servers", "mean_wait"), units={"mean_wait": "min"},
                           decisions=plan.points).split("\n\n")[0]
    assert plain == ("Mean wait does not grow with servers here: it is beyond 1.05 min at "
                     "servers 1 but within it at 40, so no breaking point can be given (if it "
                     "falls as servers grows, set search.direction: decreasing)."), plain


def test_a_metric_within_noise_of_the_limit_everywhere_is_said_not_crashed_on():
    """Every value searched stays unclear (the mean sits at the limit across the range): no
    end of the interval is known, and the answer says so."""
    plan = _search(3, mean=lambda x: LIMIT, max_replications=40)
    assert plan.result.ci_low is None and plan.result.ci_high is None
    plain = threshold_text(plan.result.named("arrival_rate", "wait_p95"),
                           units={"wait_p95": "s"}).split("\n\n")[0]
    assert plain.startswith("Wait p95 could not be told apart from 2 s anywhere from arrival "
                            "rate 0.2 to 1.95"), plain


def test_a_breaking_point_with_common_random_numbers_claims_no_proven_coverage():
    """The coverage argument needs independent streams at each value (analysis/threshold.py):
    the answer of a breaking-point search with common random numbers (the file's default) says
    so instead of claiming the probability, from the summary's tables as from the function."""
    from simlab_pipelines import search_local
    from simlab_pipelines.experiments import parse_experiment
    from simlab_pipelines.search_tables import summarise_search

    result = _search(1).result.named("arrival_rate", "wait_p95")
    crn = threshold_text(result, units={"wait_p95": "s"}, common_random_numbers=True)
    assert "covers the breaking point with probability" not in crn
    assert "common random numbers, which that argument does not cover" in crn
    for common in (True, False):
        spec = parse_experiment({
            "name": "knee", "model": "mmck", "seed": 5, "common_random_numbers": common,
            "parameters": {"servers": 1, "service_rate": 1.0},
            "search": {"method": "threshold", "factor": "arrival_rate", "min": 0.1, "max": 0.9,
                       "metric": "mean_wait", "limit": 1.0, "tolerance": 0.2,
                       "replications": 5, "max_replications": 20}})
        rng = np.random.default_rng(3)

        def simulate(config, replication, spec=spec, rng=rng):
            rate = config.params["arrival_rate"]
            return {m: 0.0 for m in spec.resolved_model.metrics} | {
                "mean_wait": rate / (1 - rate) + rng.normal(0, 0.1)}

        done = search_local.run_locally(spec, simulate)
        answer = summarise_search(spec, done.progress, done.observations).answer
        assert ("the interval covers the breaking point with probability ≥ 0.95" in answer) \
            is not common, answer


def _svg(data: bytes) -> ET.Element:
    root = ET.fromstring(data.decode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return root


def _titles(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter(f"{SVG}title")]


def test_the_threshold_chart_draws_every_point_the_limit_and_the_interval():
    plan = _search(1)
    root = _svg(threshold_chart(plan.points, plan.result, factor="arrival_rate",
                                metric="wait_p95", limit=2.0, unit="s"))
    titles = _titles(root)
    assert len(titles) == len(plan.points)
    for point, title in zip(plan.points, titles, strict=True):
        assert title.startswith(f"arrival_rate {point.x:g}: {point.status}, {point.n} "
                                "replications, mean ")
    assert any(line.get("stroke-dasharray") for line in root.iter(f"{SVG}line"))  # the limit
    band = [r for r in root.iter(f"{SVG}rect") if r.get("fill") == "#ddf4ff"]
    assert len(band) == 1 and float(band[0].get("width")) > 0
    text = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "wait p95 (s)" in text and "breaking point (95 %)" in text
    assert {p.status for p in plan.points} <= {WITHIN, BEYOND, UNCLEAR}


def test_a_value_far_beyond_the_limit_is_drawn_at_the_edge():
    """A metric that explodes near saturation (one value 10 times the others) leaves the limit
    in view: that value is a triangle at the top edge, the rest keep their scale."""
    plan = _search(3, mean=lambda x: 0.5 + 1.5 * (x - 0.2) ** 2 + (40.0 if x > 1.9 else 0.0))
    root = _svg(threshold_chart(plan.points, plan.result, factor="arrival_rate",
                                metric="wait_p95", limit=2.0))
    edge = [p for p in root.iter(f"{SVG}path") if p.get("d", "").endswith("Z")]
    assert len(edge) == 1  # the value at max, 40 above the rest
    ticks = [float(t.text) for t in root.iter(f"{SVG}text")
             if t.text and re.fullmatch(r"-?[\d.]+", t.text) and t.get("text-anchor") == "end"]
    assert max(ticks) < 10


def test_the_configurations_chart_marks_each_status_and_the_recommendation():
    rng = np.random.default_rng(0)
    configs = {f"k{i}": {"pool": int(rng.integers(1, 64)), "retries": ["none", "one", "two"][i % 3],
                         "timeout": float(rng.uniform(0.1, 10))} for i in range(30)}
    statuses = {k: (FEASIBLE if c["pool"] > 20 else INFEASIBLE if c["pool"] < 10 else UNDECIDED)
                for k, c in configs.items()}
    objective = {k: 50 + c["pool"] + rng.normal(0, 1) for k, c in configs.items()}
    order = important_factors(configs, objective, ["timeout", "retries", "pool"])
    assert order[0] == "pool"
    root = _svg(configurations_chart(configs, statuses, x_factor=order[0], y_factor="retries",
                                     recommended="k3"))
    titles = _titles(root)
    assert sorted(titles) == sorted(f"{k}: {s}" for k, s in statuses.items())
    ring = [c for c in root.iter(f"{SVG}circle") if c.get("r") == "9"]
    assert len(ring) == 1
    labels = {t.text for t in root.iter(f"{SVG}text")}
    assert {"none", "one", "two", "pool", "retries"} <= labels  # categories as tick labels


def test_the_convergence_chart_steps_down_with_the_best_feasible_mean():
    points = [(0, 90.0, FEASIBLE), (0, 80.0, INFEASIBLE), (1, 85.0, FEASIBLE),
              (1, 95.0, UNDECIDED), (2, 88.0, FEASIBLE), (3, 70.0, FEASIBLE)]
    root = _svg(convergence_chart(points, metric="cost", unit="$"))
    path = [p for p in root.iter(f"{SVG}path") if p.get("stroke") == "#1f6fb4"]
    assert len(path) == 1
    heights = [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.]+)H", path[0].get("d"))]
    assert len(heights) == 4  # one step per round
    assert heights[0] < heights[1] == heights[2] < heights[3]  # lower cost is lower on the page


def test_a_value_constant_up_to_rounding_prints_as_the_value():
    """A cost that is the same in every replication but for floating-point error (its
    half-width ~1e-15) reads as the value, not with sixteen decimals."""
    from simlab_pipelines.analysis.search_answer import format_quantity

    assert format_quantity(15.1999999999999975, 1.3e-15, "$/h") == "$15.2 an hour"
    assert format_quantity(15.2, 0.13, "$/h") == "$15.20 ± 0.13 an hour"
