"""The answer of an experiment with ``check_theory``: does the simulator agree with queueing
theory? It leads with yes or no, then one line per configuration (simulated against the closed
form), from the same comparison the ``agrees_with_theory`` check judges.

The observations are built symmetric around the closed-form values (mean exactly the theory):
nothing here is random, so no confidence level is involved."""

from pathlib import Path

import polars as pl

from simlab_pipelines.analysis.theory import compare_with_theory, expected_values, theory_text
from simlab_pipelines.analysis.words import Words
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.summary import analyse

EXAMPLE = Path(__file__).resolve().parent.parent / "experiments" / "mmck_validation.yaml"


def _observations(spec, off: tuple[str, str] | None = None, replications: int = 10):
    """Every metric with a closed form at its theory ± a spread (mean exactly the theory), the
    metric ``off`` (config_key, metric) 50 % too high."""
    rows = []
    for config in spec.configurations_list():
        truth, _ = expected_values(config.params)
        for metric, value in truth.items():
            spread = 0.01 * abs(value) + 1e-3
            for r in range(replications):
                shifted = value * 1.5 if (config.key, metric) == off else value
                rows.append((spec.name, config.key, r, metric,
                             shifted + (spread if r % 2 else -spread)))
    return pl.DataFrame(rows, schema=["experiment", "config_key", "replication", "metric",
                                      "value"], orient="row")


def test_the_validation_example_answers_its_question_first():
    spec = load_experiment(EXAMPLE)
    assert spec.check_theory and spec.question.startswith("Does the simulator agree")
    answer = analyse(spec, _observations(spec), pl.DataFrame()).answer
    first, _, analysts = answer.partition("\n\n")
    lines = first.splitlines()
    assert lines[0].startswith("Yes: the simulator agrees with queueing theory"), answer
    # one line per configuration, each simulated against the closed form
    configs = spec.configurations_list()
    assert len(lines) == 1 + len(configs)
    for line in lines[1:]:
        assert line.startswith("- ") and "within their intervals" in line
        assert " simulated, " in line and " in theory" in line and "OUTSIDE" not in line
    # four different queues: nothing is compared against a "today's setting"
    assert spec.baseline_key is None and "today's setting" not in answer
    assert "→" not in answer
    assert analysts.startswith("Statistics: t intervals over 10 replications")


def test_a_value_off_its_closed_form_answers_no_and_names_it():
    spec = load_experiment(EXAMPLE)
    config = spec.configurations_list()[1]
    obs = _observations(spec, off=(config.key, "mean_wait"))
    analysis = analyse(spec, obs, pl.DataFrame())
    lines = analysis.answer.split("\n\n")[0].splitlines()
    assert lines[0].startswith("No: 1 of the "), lines[0]
    [line] = [line for line in lines if "OUTSIDE" in line]
    words = Words({c.key: c.varying for c in spec.configurations_list()},
                  parameter_units=spec.parameter_units())
    assert line.startswith(f"- {words.setting(config.key)}: 1 of ")
    assert "mean wait before service" in line and "(OUTSIDE its interval)" in line
    # the same comparison the check judges
    summary = analysis.statistics.summary.select("config_key", "metric", "n", "mean", "stddev")
    comparison = compare_with_theory(summary.iter_rows(),
                                     {c.key: c.params for c in spec.configurations_list()},
                                     spec.resolved_horizon)
    assert comparison.failures == [f"{config.key}/mean_wait"]


def test_a_configuration_without_steady_state_is_said_not_compared():
    comparison = compare_with_theory(
        [("servers-2", "mean_wait", 5, 0.5, 0.01)],
        {"servers-1": {"servers": 1, "capacity": None, "arrival_rate": 1.2, "service_rate": 1.0},
         "servers-2": {"servers": 2, "capacity": None, "arrival_rate": 1.2, "service_rate": 1.0}},
        100.0)
    text = theory_text(comparison, Words({"servers-1": {"servers": 1},
                                          "servers-2": {"servers": 2}}))
    assert comparison.unstable == ["servers-1"]
    assert "- 1 server: not compared (no steady state" in text
    assert theory_text(compare_with_theory([], {}, 1.0), Words()) is None
