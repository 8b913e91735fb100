"""The answer in the reader's words (issue 22, items 1 and 4; issue 21, items 8 and 9).

The sentences are pinned by their structure, never by seeded numbers: who is named (today's
setting, the recommendation, the alternatives) and how (by setting and description, never by
config key or "baseline" in the first paragraph), that every number carries its unit, that the
recommendation is never called ruled out, and that the statistics sit in the second paragraph.
Observations are constructed with known means and a common per-replication term (common random
numbers), with differences many standard errors away from every decision boundary, so the
outcomes hold for any seed.
"""

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simlab_pipelines.analysis import analyse_experiment
from simlab_pipelines.analysis.answer import describe_change, setting_words
from simlab_pipelines.analysis.units import format_difference, format_quantity, format_value

RESTAURANT = {"tables-8_waiters-2": {"tables": 8, "waiters": 2},
              "tables-8_waiters-3": {"tables": 8, "waiters": 3},
              "tables-9_waiters-2": {"tables": 9, "waiters": 2},
              "tables-9_waiters-3": {"tables": 9, "waiters": 3}}
TODAY = "tables-8_waiters-2"
UNITS = {"profit": "$/day", "cost": "$/day", "visit": "min", "slow": "fraction"}
DESCRIPTIONS = {"profit": "profit", "cost": "staff and tables cost",
                "visit": "time a party spends in the restaurant",
                "slow": "parties waiting over 5 min for a table"}
# (mean, common-term sd, own sd) per metric: the restaurant's story in round numbers
MEANS = {"profit": {TODAY: 1020.0, "tables-8_waiters-3": 964.0, "tables-9_waiters-2": 1075.0,
                    "tables-9_waiters-3": 1036.0},
         "cost": {TODAY: 480.0, "tables-8_waiters-3": 620.0, "tables-9_waiters-2": 505.0,
                  "tables-9_waiters-3": 645.0},
         "visit": {TODAY: 56.2, "tables-8_waiters-3": 52.6, "tables-9_waiters-2": 56.9,
                   "tables-9_waiters-3": 52.5},
         "slow": {TODAY: 0.198, "tables-8_waiters-3": 0.162, "tables-9_waiters-2": 0.153,
                  "tables-9_waiters-3": 0.116}}
SPREAD = {"profit": (60.0, 10.0), "cost": (0.0, 0.0), "visit": (2.0, 0.3), "slow": (0.05, 0.01)}


def _observations(means, spread, n=60, seed=3, experiment="exp") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for metric, by_config in means.items():
        shared, own = spread[metric]
        common = rng.normal(0.0, shared, n)
        for key, mean in by_config.items():
            values = mean + common + rng.normal(0.0, own, n)
            rows += [(experiment, key, r, metric, float(v)) for r, v in enumerate(values)]
    return pl.DataFrame(rows, schema=["experiment", "config_key", "replication", "metric",
                                      "value"], orient="row")


def _restaurant(observations=None, **kwargs):
    observations = _observations(MEANS, SPREAD) if observations is None else observations
    options = {"experiment": "exp", "baseline": TODAY, "objective_metric": "profit",
               "minimize": False, "indifference_zone": 25.0, "configurations": RESTAURANT,
               "units": UNITS, "descriptions": DESCRIPTIONS, "tradeoffs": ["cost", "visit", "slow"],
               "cost_metric": "cost"}
    return analyse_experiment(observations, **(options | kwargs))


# A number a reader sees, with what may stand around it: a currency before, a unit after.
NUMBER = re.compile(r"(?<![\w.])(\$?)([+-]?\d[\d,]*(?:\.\d+)?)(?![\d.,]\d)")
UNIT_AFTER = re.compile(r"\s*(?:± [\d,.]+\s*)?(min|%|points?|a day|time units|s\b|instead of|"
                        r"replications|of \d+ replications)")


def unitless_numbers(text: str, settings: list[str]) -> list[str]:
    """Numbers in ``text`` without a currency before or a unit after; the words naming a
    configuration (``8 tables``, ``tables 8 → 9``) are left out first."""
    for words in sorted(settings, key=len, reverse=True):
        text = text.replace(words, "")
    bare = []
    for match in NUMBER.finditer(text):
        if match.group(1) or UNIT_AFTER.match(text, match.end()):
            continue
        before = text[max(0, match.start() - 2):match.start()]
        if before.endswith("± "):  # the half-width of a number already judged
            continue
        bare.append(match.group(2))
    return bare


def _settings() -> list[str]:
    words = [setting_words(c) for c in RESTAURANT.values()]
    words += [describe_change(c, RESTAURANT[TODAY]) for c in RESTAURANT.values()]
    return [w for w in words if w] + ["over 5 min"]


@pytest.mark.parametrize(("value", "half", "unit", "text"), [
    (1075.3, 18.2, "$/day", "$1,075 ± 18 a day"),
    (0.1652, 0.0091, "fraction", "16.5 ± 0.9 %"),
    (56.93, 0.52, "min", "56.9 ± 0.5 min"),
    (12.0, 0.0, "requests per hour", "12 requests an hour"),
])
def test_quantities_are_written_with_their_units(value, half, unit, text):
    assert format_quantity(value, half, unit) == text


def test_differences_of_fractions_are_points_and_signs_are_explicit():
    assert format_difference(0.8129, 0.003, "fraction") == "81.29 ± 0.30 points"
    assert format_difference(-56.2, 6.1, "$/day", signed=True) == "-$56 ± 6 a day"
    assert format_difference(25.0, 0.0, "$/day", signed=True) == "+$25 a day"
    assert format_value(1019.7, 16.0, "$/day", with_unit=False) == "$1,020"


def test_configurations_in_words():
    assert setting_words({"tables": 8, "waiters": 2}) == "8 tables, 2 waiters"
    assert setting_words({"doctors": 1, "pool_size": 8}) == "1 doctor, pool size 8"
    assert setting_words({"class": 2}) == "class 2"  # not a plural count
    assert setting_words({"capacity": None}) == "capacity not set"  # e.g. an infinite room
    assert describe_change({"tables": 9, "waiters": 2}, {"tables": 8, "waiters": 2}) \
        == "tables 8 → 9"


def test_the_restaurant_answer_reads_in_the_readers_words():
    result = _restaurant()
    first, statistics = result.answer.split("\n\n")
    sentences, *lines = first.split("\n")
    effects = lines[:lines.index("The other options, against the recommendation:")]
    lines = lines[len(effects):]
    assert result.recommendation.choice == "tables-9_waiters-2"
    # the decision first, then its effect on the objective against today's setting, per day
    assert sentences.startswith("Recommendation: tables 8 → 9 (9 tables, 2 waiters). Against "
                                "today's setting (8 tables, 2 waiters) it raises profit by $")
    assert re.search(r"raises profit by \$\d+ ± \d+ a day \(95 % confidence\): \$1,0\d\d instead of \$1,0\d\d a "
                     r"day\.", sentences)
    # one name for today's configuration: no "baseline", no "current", no config keys
    for word in ("baseline", "current", "tables-8_waiters-2", "tables-9_waiters-2", "_"):
        assert word not in first
    # its other effects, one line per response, by its description (with its threshold)
    assert effects[0] == "Its other effects against today's setting:"
    assert [e.split(" ")[1] for e in effects[1:]] == ["staff", "time", "parties"]
    assert re.fullmatch(r"- parties waiting over 5 min for a table [\d.]+ ± [\d.]+ points lower "
                        r"\([\d.]+ % instead of [\d.]+ %\)", effects[3])
    assert re.fullmatch(r"- staff and tables cost \$25 a day higher \(\$505 instead of \$480 a "
                        r"day\)", effects[1])
    # every number carries its unit
    assert unitless_numbers(first, _settings()) == []
    # one line per alternative (not today's setting, not the recommendation), against it
    assert lines[0] == "The other options, against the recommendation:"
    assert [line.split(":")[0] for line in lines[1:]] == ["- 9 tables, 3 waiters",
                                                         "- 8 tables, 3 waiters"]
    # the third waiter: visits shorter, but less profit than the table
    waiter = lines[2]
    assert re.search(r"profit \$\d+ ± \d+ a day lower", waiter)
    assert re.search(r"time a party spends in the restaurant [\d.]+ ± [\d.]+ min shorter", waiter)
    # the statistics for analysts: procedures, constants, n, the zone in its unit
    assert statistics.startswith("Statistics: 95 % t intervals over 60 replications a "
                                 "configuration; differences paired over common random numbers")
    assert "n0 = 60" in statistics and "at least $25 a day better on profit" in statistics
    assert "ruled out" not in result.answer


def test_a_recommendation_that_is_not_the_best_sample_mean_says_why():
    # webpool's situation: pool 4 best by a hair, pool 8 as good within 1 point and one change
    configs = {"pool-8_retries-3": {"pool": 8, "retries": 3},
               "pool-8_retries-0": {"pool": 8, "retries": 0},
               "pool-4_retries-0": {"pool": 4, "retries": 0}}
    means = {"success": {"pool-8_retries-3": 0.134, "pool-8_retries-0": 0.947,
                         "pool-4_retries-0": 0.950}}
    result = analyse_experiment(
        _observations(means, {"success": (0.02, 0.001)}), experiment="exp",
        baseline="pool-8_retries-3", objective_metric="success", minimize=False,
        indifference_zone=0.01, configurations=configs, units={"success": "fraction"},
        descriptions={"success": "requests answered"})
    rec = result.recommendation
    assert (rec.best, rec.choice) == ("pool-4_retries-0", "pool-8_retries-0")
    first, statistics = result.answer.split("\n\n")
    assert first.startswith("Recommendation: retries 3 → 0 (pool 8, 0 retries). Against today's "
                            "setting (pool 8, 3 retries) it raises requests answered by ")
    assert re.search(r"by [\d.]+ ± [\d.]+ points \(95 % confidence\): [\d.]+ % instead of [\d.]+ %\.", first)
    assert ("Pool 4, 0 retries has the highest sample mean of requests answered, but pool 8, "
            "0 retries is as good within 1 point and changes one setting less.") in first
    assert "ruled out" not in result.answer
    assert "the recommendation, pool-8_retries-0, is within the indifference zone" in statistics


def test_without_an_objective_the_answer_is_what_differs_from_today():
    obs = _observations({m: MEANS[m] for m in ("visit", "slow")},
                        {m: SPREAD[m] for m in ("visit", "slow")})
    result = analyse_experiment(obs, experiment="exp", baseline=TODAY,
                                configurations=RESTAURANT, units=UNITS,
                                descriptions=DESCRIPTIONS, tradeoffs=["visit", "slow"])
    assert result.recommendation is None
    first, statistics = result.answer.split("\n\n")
    head, *lines = first.split("\n")
    assert head == ("Against today's setting (8 tables, 2 waiters), on time a party spends in "
                    "the restaurant, parties waiting over 5 min for a table:")
    waiter = next(line for line in lines if line.startswith("- waiters 2 → 3 (8 tables, 3 "))
    assert re.search(r"time a party spends in the restaurant [\d.]+ ± [\d.]+ min shorter", waiter)
    assert unitless_numbers(first, _settings()) == []
    assert statistics.startswith("Statistics: 95 % t intervals over 60 replications")
    # a configuration without a steady state gets no numbers here either
    unstable = analyse_experiment(obs, experiment="exp", baseline=TODAY,
                                  configurations=RESTAURANT, units=UNITS, tradeoffs=["visit"],
                                  unstable={"tables-8_waiters-3": GROWS})
    assert ("\n- waiters 2 → 3 (8 tables, 3 waiters): no steady state, so its numbers depend "
            "only on how long you simulate\n") in unstable.answer


def test_configurations_without_results_are_named_and_the_answer_is_about_the_rest():
    obs = _observations(MEANS, SPREAD).filter(pl.col("config_key") != "tables-9_waiters-3")
    obs = obs.filter((pl.col("config_key") != "tables-8_waiters-3")
                     | (pl.col("replication") < 50))
    result = _restaurant(observations=obs, missing={"tables-9_waiters-3": (60, 60),
                                                    "tables-8_waiters-3": (10, 60)})
    first = result.answer.split("\n\n")[0]
    assert ("No results for tables 8 → 9, waiters 2 → 3 (9 tables, 3 waiters), all 60 "
            "replications (failed or not run): this answer is about the other configurations."
            ) in first
    assert ("Replications missing (failed or not run) for waiters 2 → 3 (8 tables, 3 waiters), "
            "10 of 60: their numbers are from the others.") in first
    # before the alternatives' lines, which name only configurations with results
    assert first.index("No results for") < first.index("The other options")
    assert "- 9 tables, 3 waiters" not in first


GROWS = "the number in system keeps growing over the run, without bound"  # stationarity.growing


def test_an_unstable_configuration_gets_a_warning_and_no_numbers():
    result = _restaurant(unstable={"tables-8_waiters-3": GROWS})
    first = result.answer.split("\n\n")[0]
    assert ("8 tables, 3 waiters: demand exceeds capacity: the number in system keeps growing "
            "over the run, without bound, so its profit depends only on how long you simulate."
            ) in first
    assert "\n- 8 tables, 3 waiters: no steady state, so its numbers depend only on how long you " \
           "simulate\n" in first + "\n"


def test_an_unstable_configurations_cost_of_parameters_is_not_said_to_depend_on_the_run():
    result = _restaurant(objective_metric="cost", minimize=True,
                         unstable={"tables-8_waiters-3": GROWS})
    first = result.answer.split("\n\n")[0]
    assert ("8 tables, 3 waiters: demand exceeds capacity: the number in system keeps growing "
            "over the run, without bound, so its results depend only on how long you "
            "simulate.") in first
    assert "cost depends only on" not in first


def test_with_constraints_the_options_say_which_miss_one_and_no_zone_is_claimed():
    from simlab_pipelines.analysis.constraints import Limit

    configs = {f"pool-{p}": {"pool": p} for p in (4, 8, 12)}
    means = {"cost": {"pool-4": 70.0, "pool-8": 84.0, "pool-12": 96.0},
             "latency": {"pool-4": 0.26, "pool-8": 0.17, "pool-12": 0.12}}
    obs = _observations(means, {"cost": (2.0, 0.3), "latency": (0.005, 0.002)}, n=30)
    result = analyse_experiment(obs, experiment="exp", baseline=None, objective_metric="cost",
                                minimize=True, indifference_zone=2.0, configurations=configs,
                                units={"cost": "$", "latency": "s"},
                                constraints=[Limit("latency", None, 0.2, 0.95)])
    first, statistics = result.answer.split("\n\n")
    assert result.recommendation.choice == "pool-8"
    # what the constraints say comes before the options' lines, which mark the infeasible
    assert first.index("meets every constraint") < first.index("The other options")
    assert "- pool 4: cost $" in first and "lower; not shown to meet every constraint\n" in first
    # pool 4 is $14 cheaper: the recommendation is not "within the zone" of it
    assert "pool-8, is the best of the configurations shown to meet every constraint" in statistics
    assert "indifference zone of $2 of it" not in statistics
    # the analysts' differences are against the recommendation, not the infeasible pool 4
    assert "Against the recommendation pool-8 (95 % CI, paired over 30 replications)" in statistics
    assert "Against the best configuration" not in statistics
    assert "pool-4 (pool 8 → 4) lowers cost by $" in statistics


def test_the_constraints_sentence_is_on_the_recommendations_line_not_under_a_list():
    from simlab_pipelines.analysis.constraints import Limit

    # every configuration waits far below the limit: all feasible, today's setting changes
    result = _restaurant(constraints=[Limit("slow", None, 0.5, 0.95)])
    first = result.answer.split("\n\n")[0]
    lines = first.split("\n")
    assert lines[0].startswith("Recommendation: tables 8 → 9")
    assert "It meets every constraint: parties waiting over 5 min for a table" in lines[0]
    assert "Its other effects against today's setting:" in first  # a list follows it
    assert not [line for line in lines[1:] if "constraint:" in line or "shown to" in line]
    assert "All 4 configurations are shown to meet every constraint;" in lines[0]  # not "Only"


def test_undefined_values_are_said_in_the_answer_and_the_trade_off_table():
    from simlab_pipelines.analysis.report import tradeoff_records

    obs = _observations(MEANS, SPREAD).with_columns(
        pl.when(((pl.col("config_key") == "tables-9_waiters-3") & (pl.col("metric") == "visit")
                 & (pl.col("replication") < 5))
                | ((pl.col("config_key") == "tables-8_waiters-3") & (pl.col("metric") == "slow")))
        .then(float("nan")).otherwise(pl.col("value")).alias("value"))
    result = _restaurant(observations=obs)
    first = result.answer.split("\n\n")[0]
    assert ("Time a party spends in the restaurant is undefined (no value) in 5 of 60 "
            "replications of 9 tables, 3 waiters: its numbers are from the replications with a "
            "value.") in first
    assert ("Parties waiting over 5 min for a table is undefined (no value) in every replication "
            "of 8 tables, 3 waiters: 8 tables, 3 waiters is not compared on it.") in first
    rows = {r["configuration"]: r for r in tradeoff_records(
        result.summary, ["visit", "slow"], units=UNITS, descriptions=DESCRIPTIONS)}
    assert rows["tables-8_waiters-3"]["parties waiting over 5 min for a table"] == "undefined"
    assert rows["tables-9_waiters-3"]["time a party spends in the restaurant (min)"].endswith(
        " (5 of 60 undefined)")


def test_an_absent_parameter_value_reads_not_set_in_the_trade_off_table():
    from simlab_pipelines.analysis.report import tradeoff_records

    configurations = {key: {**c, "capacity": None if c["tables"] == 9 else 10}
                      for key, c in RESTAURANT.items()}
    rows = {r["configuration"]: r for r in tradeoff_records(
        _restaurant().summary, ["visit"], configurations=configurations, units=UNITS)}
    assert rows["tables-9_waiters-2"]["capacity"] == "not set"
    assert rows[TODAY]["capacity"] == "10"


def test_without_results_for_today_nothing_is_compared_and_the_analysts_read_the_rule():
    obs = _observations(MEANS, SPREAD).filter(pl.col("config_key") != TODAY)
    result = _restaurant(observations=obs, missing={TODAY: (60, 60)})
    assert result.recommendation is None
    assert result.answer == ("No results for today's setting (8 tables, 2 waiters), all 60 "
                             "replications (failed or not run): this answer is about the other "
                             "configurations. Nothing is compared with today's setting until it "
                             "has results.")
    rule = "added in rounds until every 95 % interval of profit was within 1 % of its mean"
    statistics = _restaurant(precision=rule).answer.split("\n\n")[1]
    assert statistics.startswith("Statistics: 95 % t intervals over 60 replications a "
                                 f"configuration ({rule});")


def test_every_kind_of_answer_keeps_its_units_and_never_contradicts_itself():
    """64 combinations of baseline, indifference zone, cost, direction, a configuration
    without results and undefined values: no number without its unit in the first paragraph,
    no 'None', 'nan' or 'ruled out' anywhere."""
    import itertools

    from simlab_pipelines.analysis.answer import describe_change

    for baseline, zone, cost, minimize, gone, undefined in itertools.product(
            [TODAY, None], [25.0, None], ["cost", None], [False, True],
            [None, "tables-8_waiters-3"], [False, True]):
        obs = _observations(MEANS, SPREAD, n=20)
        if gone:
            obs = obs.filter(pl.col("config_key") != gone)
        if undefined:
            obs = obs.with_columns(pl.when((pl.col("metric") == "visit") & (pl.col("replication")
                                                                             < 3))
                                   .then(float("nan")).otherwise(pl.col("value")).alias("value"))
        result = _restaurant(observations=obs, baseline=baseline, indifference_zone=zone,
                             cost_metric=cost, minimize=minimize,
                             missing={gone: (20, 20)} if gone else None)
        case = (baseline, zone, cost, minimize, gone, undefined)
        first = result.answer.split("\n\n")[0]
        settings = [setting_words(c) for c in RESTAURANT.values()] + ["over 5 min"]
        settings += [describe_change(c, RESTAURANT[TODAY]) for c in RESTAURANT.values()
                     if baseline]
        assert unitless_numbers(first, [s for s in settings if s]) == [], case
        for word in ("None", "nan", "ruled out"):
            assert word not in result.answer, case


def test_the_means_beside_a_difference_are_over_the_replications_it_is_paired_over():
    # The recommendation has 40 replications, today's setting 60, and today's last 20 are 30
    # points slower to seat and $300 less profitable: over all of its own replications today's
    # means differ from its means over the 40 paired ones. The bracket must quote the latter.
    obs = _observations(MEANS, SPREAD)
    choice = "tables-9_waiters-2"
    late = (pl.col("config_key") == TODAY) & (pl.col("replication") >= 40)
    obs = obs.filter((pl.col("config_key") != choice) | (pl.col("replication") < 40)).with_columns(
        pl.when(late & (pl.col("metric") == "slow")).then(pl.col("value") + 0.3)
        .when(late & (pl.col("metric") == "profit")).then(pl.col("value") - 300.0)
        .otherwise(pl.col("value")).alias("value"))
    result = _restaurant(obs)
    assert result.recommendation.choice == choice
    first = result.answer.split("\n\n")[0]
    slow = re.search(r"- parties waiting over 5 min for a table ([\d.]+) ± [\d.]+ points lower "
                     r"\(([\d.]+) % instead of ([\d.]+) %\)", first)
    assert slow, first
    difference, mine, theirs = map(float, slow.groups())
    assert abs((theirs - mine) - difference) < 0.5, slow.group(0)  # rounding only, not 10 points
    profit = re.search(r"raises profit by \$(\d+) ± \d+ a day \(95 % confidence\): \$([\d,]+) "
                       r"instead of \$([\d,]+) a day", first)
    assert profit, first
    difference, mine, theirs = (float(g.replace(",", "")) for g in profit.groups())
    assert abs((mine - theirs) - difference) <= 2, profit.group(0)


def test_parameter_values_are_said_with_their_unit_and_the_digits_they_need():
    from simlab_pipelines.analysis.units import format_setting, setting_digits
    from simlab_pipelines.analysis.words import Words
    from simlab_pipelines.experiments import load_experiment
    from simlab_pipelines.experiments.responses import descriptions

    assert format_setting(1.14501, "s") == "1.15 s"  # a search's proposal, rounded to 6 digits
    assert format_setting(0.3, "parties/min") == "0.3 parties a minute"
    assert format_setting(15.0, "min") == "15 min" and format_setting(1.0, "time units") == \
        "1 time unit"
    assert format_setting(8) == "8" and format_setting(None, "min") == "not set"
    # 3 significant digits unless two values shown together would then read the same
    assert setting_digits([1.14501, 2.0]) == 3
    assert setting_digits([1.14501, 1.14523]) == 5
    proposals = {"a": {"pool": 8, "timeout": 1.14501}, "b": {"pool": 8, "timeout": 1.14523},
                 "c": {"pool": 9, "timeout": 2.0}}
    words = Words(proposals, "c", parameter_units={"timeout": "s"})
    assert words.setting("a") == "pool 8, timeout 1.145 s"  # and b: 1.1452 s
    assert words.setting("a") != words.setting("b")
    assert words.label("a") == "pool 9 → 8, timeout 2 s → 1.145 s (pool 8, timeout 1.145 s)"
    assert Words({"x": {"timeout": 1.02031}}).setting("x") == "timeout 1.02"
    # the built-in models declare their parameters' units; a description naming one says it
    spec = load_experiment(Path(__file__).resolve().parent.parent / "experiments"
                           / "restaurant_staffing.yaml")
    assert spec.parameter_units()["patience"] == "min"
    assert "longer than the wait threshold (5 min)" in descriptions(spec)["fraction_wait_over"]
