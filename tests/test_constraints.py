"""Constraints: the schema by field path, each configuration's status with its stated error rate,
the recommendation among the feasible configurations only, and the DuckDB ``constraints`` table.

Error rates are checked on a known-mean normal generator (where the one-sided t bounds are exact):
a configuration whose true mean violates a limit by a hair is declared feasible at the nominal
rate ``(1 - c) / m`` (c the confidence, m the configurations covered at once), a feasible one
with two constraints at their limits is declared infeasible at most at the Bonferroni rate
``2 (1 - c)``. Each observed rate is compared with a two-sided 99.9 % binomial interval around its
nominal rate (fixed seeds), so a wrong quantile or a missing correction fails, and chance alone
fails 1 run in 1,000.
"""

import math
import re
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from scipy import special, stats

from simlab_pipelines.analysis.constraints import (
    FEASIBLE,
    INFEASIBLE,
    UNDECIDED,
    Limit,
    closest_to_feasible,
    feasibility,
    status_of,
)
from simlab_pipelines.analysis.experiment import analyse_experiment
from simlab_pipelines.analysis.selection import recommend
from simlab_pipelines.assets import summary_key
from simlab_pipelines.cli import main
from simlab_pipelines.experiments import ExperimentError, load_experiment, parse_experiment

TINY = Path(__file__).parent / "fixtures" / "experiments" / "tiny_mmck.yaml"


def _tiny(**changes) -> dict:
    data = yaml.safe_load(TINY.read_text())
    data.update(changes)
    return data


# --- schema -------------------------------------------------------------------------------------

@pytest.mark.parametrize("constraints, where, reason", [
    ([{"metric": "nope", "max": 1}], "constraints[0].metric", "unknown metric or response 'nope'"),
    ([{"metric": "mean_wait"}], "constraints[0]", "neither min nor max"),
    ([{"metric": "mean_wait", "max": 1, "confidence": 1.0}], "constraints[0].confidence",
     "less than 1"),
    ([{"metric": "mean_wait", "max": 1, "confidence": 0}], "constraints[0].confidence",
     "greater than 0"),
    ([{"metric": "mean_wait", "min": 2, "max": 1}], "constraints[0].min", "above max"),
    ([{"metric": "mean_wait", "max": 1}, {"metric": "mean_wait", "min": 0.1}],
     "constraints[1].metric", "already constrained"),
    ([{"metric": "mean_wait", "max": 1, "limit": 2}], "constraints[0].limit",
     "unknown key 'limit' (allowed: metric, min, max, confidence)"),
])
def test_bad_constraints_are_rejected_by_file_and_field(tmp_path, constraints, where, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_tiny(constraints=constraints)))
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    message = str(caught.value)
    assert "bad.yaml" in message and f"{where}: " in message and reason in message, message


def test_constraints_may_name_responses_and_leave_other_files_hash_alone():
    plain = parse_experiment(_tiny())
    assert parse_experiment(_tiny(constraints=[])).spec_hash() == plain.spec_hash()
    spec = parse_experiment(_tiny(responses={"cost": "10 * servers"},
                                  constraints=[{"metric": "cost", "max": 15},
                                               {"metric": "blocking_probability", "min": 0,
                                                "max": 0.1, "confidence": 0.99}]))
    assert spec.spec_hash() != plain.spec_hash()
    assert [c.metric for c in spec.constraints] == ["cost", "blocking_probability"]
    assert spec.constraints[0].resolved_confidence(spec.confidence) == 0.95
    assert spec.constraints[1].resolved_confidence(spec.confidence) == 0.99


# --- statuses and their error rates -------------------------------------------------------------

def _rate(count: int, trials: int, nominal: float) -> None:
    """``count / trials`` is inside the two-sided 99.9 % binomial interval around ``nominal``."""
    low, high = stats.binom.ppf([0.0005, 0.9995], trials, nominal)
    assert low <= count <= high, (count / trials, nominal, trials)


def test_status_follows_the_one_sided_bounds():
    values = np.array([1.0, 1.2, 0.8, 1.1, 0.9, 1.0])
    n, mean, sd = 6, values.mean(), values.std(ddof=1)
    t = special.stdtrit(n - 1, 0.95)
    upper, lower = mean + t * sd / math.sqrt(n), mean - t * sd / math.sqrt(n)
    assert status_of(values, Limit("x", None, upper + 1e-9, 0.95)).status == FEASIBLE
    assert status_of(values, Limit("x", None, upper - 1e-9, 0.95)).status == UNDECIDED
    assert status_of(values, Limit("x", None, lower - 1e-9, 0.95)).status == INFEASIBLE
    assert status_of(values, Limit("x", lower - 1e-9, None, 0.95)).status == FEASIBLE
    assert status_of(values, Limit("x", upper + 1e-9, None, 0.95)).status == INFEASIBLE
    band = status_of(values, Limit("x", lower - 1e-9, upper + 1e-9, 0.95))
    assert band.status == FEASIBLE and band.miss == 0.0
    assert status_of(values[:1], Limit("x", None, 5.0, 0.95)).status == UNDECIDED
    missed = status_of(values, Limit("x", None, 0.5, 0.95))
    assert missed.miss == pytest.approx(mean - 0.5)
    assert missed.relative_miss == pytest.approx((mean - 0.5) / 0.5)


@pytest.mark.parametrize("confidence, simultaneous, n", [(0.95, 1, 10), (0.9, 4, 5)])
def test_a_violating_configuration_is_declared_feasible_at_the_nominal_rate(
        confidence, simultaneous, n):
    trials = 4000
    rng = np.random.default_rng(20261203 + n)
    limit = Limit("latency", None, 1.0, confidence)
    data = 1.0 + 1e-9 + rng.normal(0.0, 0.3, (trials, n))  # violates the limit by a hair
    wrong = sum(status_of(row, limit, simultaneous=simultaneous).status == FEASIBLE
                for row in data)
    _rate(wrong, trials, (1 - confidence) / simultaneous)


def test_a_feasible_configuration_at_two_limits_is_wrongly_rejected_at_most_bonferroni():
    """Both constraints exactly at their limits (the worst case for a feasible configuration):
    independent outputs make the rate 1 - c^2, just under the Bonferroni bound 2 (1 - c)."""
    trials, n, c = 4000, 8, 0.95
    rng = np.random.default_rng(7)
    wait, success = Limit("wait", None, 2.0, c), Limit("success", 0.99, None, c)
    rejected = 0
    for _ in range(trials):
        values = {"a": {"wait": 2.0 + rng.normal(0, 0.5, n),
                        "success": 0.99 + rng.normal(0, 0.002, n)}}
        rejected += feasibility(values, [wait, success]).overall["a"] == INFEASIBLE
    _rate(rejected, trials, 1 - c**2)
    assert 1 - c**2 <= 2 * (1 - c)


# --- the recommendation -------------------------------------------------------------------------

def _observations(latency: dict[str, float], cost: dict[str, float], n: int = 30,
                  seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    common = rng.normal(0.0, 1.0, n)  # as common random numbers: a shared per-replication term
    rows = []
    for key in cost:
        c = cost[key] + 2.0 * common + rng.normal(0, 0.3, n)
        lat = latency[key] + rng.normal(0, 0.01, n)
        rows += [("e", key, r, "cost", float(v)) for r, v in enumerate(c)]
        rows += [("e", key, r, "latency_p99", float(v)) for r, v in enumerate(lat)]
    return pl.DataFrame(rows, schema=["experiment", "config_key", "replication", "metric",
                                      "value"], orient="row")


CONFIGS = {"pool-4": {"pool": 4}, "pool-8": {"pool": 8}, "pool-12": {"pool": 12}}
COST = {"pool-4": 70.0, "pool-8": 84.0, "pool-12": 96.0}
LATENCY = {"pool-4": 0.26, "pool-8": 0.17, "pool-12": 0.12}  # standard errors ~0.002 s


def test_the_recommendation_is_the_best_among_the_feasible():
    result = analyse_experiment(
        _observations(LATENCY, COST), experiment="e", baseline=None, objective_metric="cost",
        minimize=True, indifference_zone=2.0, configurations=CONFIGS,
        units={"cost": "$", "latency_p99": "s"}, constraints=[Limit("latency_p99", None, 0.2,
                                                                   0.95)])
    assert result.subset.best == "pool-4"  # the cheapest overall misses the latency limit
    assert result.recommendation.choice == "pool-8"
    assert result.recommendation.feasible == ("pool-12", "pool-8")
    assert result.feasibility.overall == {"pool-4": INFEASIBLE, "pool-8": FEASIBLE,
                                          "pool-12": FEASIBLE}
    first = result.answer.split("\n\n")[0]
    assert first.startswith("Recommendation: pool 8.")
    assert "It meets every constraint: latency p99 0.17" in first
    assert "(limit: at most 0.2 s, met)" in first
    assert "Only the 2 of 3 configurations shown to meet every constraint were considered" in first
    assert "simultaneously for the 3 configurations" in first
    assert "pool 4 misses latency p99" in first


def test_a_better_configuration_too_close_to_a_limit_is_not_said_to_miss_it():
    latency = {**LATENCY, "pool-4": 0.2}  # its mean on the limit: undecided, not infeasible
    result = analyse_experiment(
        _observations(latency, COST), experiment="e", baseline=None, objective_metric="cost",
        minimize=True, indifference_zone=2.0, configurations=CONFIGS,
        units={"cost": "$", "latency_p99": "s"}, constraints=[Limit("latency_p99", None, 0.2,
                                                                   0.95)])
    assert result.feasibility.overall["pool-4"] == UNDECIDED
    first = result.answer.split("\n\n")[0]
    assert "pool 4 may miss latency p99 (too close to the limit to tell)" in first
    assert "pool 4 misses" not in first


def test_nothing_feasible_names_the_closest_and_by_how_much():
    result = analyse_experiment(
        _observations(LATENCY, COST), experiment="e", baseline=None, objective_metric="cost",
        minimize=True, indifference_zone=2.0, configurations=CONFIGS,
        units={"cost": "$", "latency_p99": "s"},
        constraints=[Limit("latency_p99", None, 0.1, 0.95)])
    assert result.recommendation is None
    first = result.answer.split("\n\n")[0]
    assert first.startswith("No configuration is shown to meet every constraint (latency p99 "
                            "at most 0.1 s), so none is recommended.")
    assert "Closest to meeting them: pool 12 (pool-12), which misses latency p99 by 0.02" in first
    assert closest_to_feasible(result.feasibility) == "pool-12"


def test_recommend_considers_only_the_feasible():
    means = {"a": 1.0, "b": 2.0, "c": 2.5}
    rec = recommend(means, minimize=True, indifference_zone=1.0, feasible=["b", "c"])
    assert (rec.choice, rec.best, rec.equivalent, rec.feasible) == ("b", "b", ("b", "c"),
                                                                    ("b", "c"))
    with pytest.raises(ValueError, match="no configuration is feasible"):
        recommend(means, minimize=True, feasible=[])


# --- the pipeline -------------------------------------------------------------------------------

def test_a_sweep_stores_each_configurations_status_and_recommends_a_feasible_one(lab):
    """The tiny experiment (servers 1 or 2 at load 0.8) with a limit on the mean wait that one
    server misses by far (its wait is ~4 time units, two servers' ~0.2)."""
    path = lab / "experiments" / "tiny_mmck.yaml"
    constraints = [{"metric": "mean_wait", "max": 1.0},
                   {"metric": "server_utilisation", "min": 0.1, "confidence": 0.99}]
    path.write_text(yaml.safe_dump(_tiny(constraints=constraints)))
    result = CliRunner().invoke(main, ["sweep", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT config_key, metric, n, mean, ci_low, ci_high, confidence, "
                             "level, simultaneous, status FROM constraints ORDER BY 1, 2"
                             ).fetchall()
        values = con.execute("SELECT config_key, metric, list(value ORDER BY replication) FROM "
                             "observations WHERE metric IN ('mean_wait', 'server_utilisation') "
                             "GROUP BY ALL").fetchall()
        recommended, answer = con.execute("SELECT recommended, answer FROM answers").fetchone()
    observed = {(k, m): np.array(v) for k, m, v in values}
    assert len(stored) == 4
    for key, metric, n, mean, low, high, confidence, level, simultaneous, status in stored:
        limit = Limit(metric, 0.1 if metric == "server_utilisation" else None,
                      1.0 if metric == "mean_wait" else None, confidence)
        again = status_of(observed[key, metric], limit, simultaneous=2)
        assert (n, simultaneous, status) == (again.n, 2, again.status)
        assert (mean, low, high, level) == pytest.approx((again.mean, again.ci_low,
                                                          again.ci_high, again.level))
    statuses = {(k, m): s for k, m, *_, s in stored}
    assert statuses["servers-1", "mean_wait"] == INFEASIBLE
    assert statuses["servers-2", "mean_wait"] == FEASIBLE
    assert recommended == "servers-2"
    assert "It meets every constraint: mean wait" in answer
    # the summary's metadata in the UI has the same statuses
    with dg.DagsterInstance.get() as instance:
        metadata = instance.get_latest_materialization_event(
            summary_key("tiny_mmck")).asset_materialization.metadata
    assert {(r.data["config_key"], r.data["metric"]): r.data["status"]
            for r in metadata["constraints"].records} == statuses
    # the report has a section with every configuration's status on every constraint
    report = lab / "report.html"
    result = CliRunner().invoke(main, ["report", "tiny_mmck", "-o", str(report)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page = report.read_text()
    section = page[page.index('<h2 id="constraints">Constraints</h2>'):]
    rows = re.findall(r"<tr><td class=text>([^<]*)</td><td class=text>([^<]*)</td>", section)
    assert rows[:2] == [("2 servers (servers-2)", "feasible"),
                        ("1 server (servers-1)", "infeasible")]
    assert "mean wait (at most 1 time units)" in section


def test_steins_statistic_keeps_its_level_when_the_first_values_chose_how_many():
    """A two-stage procedure takes N = 40 S^2 values (at least 10, S the first 10 values'
    standard deviation), and the constraint is judged on all N: with the standard deviation of
    the first 10 only (Stein 1945, ``variance_from``) a mean a hair beyond the limit is declared
    feasible at the nominal 5 %, within a 99.9 % binomial interval over 20,000 trials (fixed
    seed); the standard deviation of all N would be at ~5.7 %, outside it."""
    trials, n0 = 20_000, 10
    rng = np.random.default_rng(11)
    limit = Limit("x", None, 0.0, 0.95)
    wrong = 0
    for _ in range(trials):
        x = 1e-9 + rng.normal(0.0, 1.0, 400)
        total = int(min(400, max(n0, math.ceil(40 * x[:n0].var(ddof=1)))))
        status = status_of(x[:total], limit, variance_from=n0)
        assert status.df == n0 - 1 and status.n == total
        wrong += status.status == FEASIBLE
    _rate(wrong, trials, 0.05)
