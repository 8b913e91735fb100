"""Responses: expressions over a replication's metrics and parameters, evaluated per replication.

One real sweep (`simlab sweep` on a SQLite Dagster instance, a real DuckDB file) shows the
responses stored in ``observations`` equal the expression recomputed independently, in SQL, from
the stored metrics and the configurations' parameters, and that a response can be the objective.
The rest checks the expression language: what is rejected at load (by field, with the reason)
and that nothing in an expression can run code.
"""

from pathlib import Path

import duckdb
import pytest
import yaml
from click.testing import CliRunner

from simlab_pipelines.cli import main
from simlab_pipelines.experiments import ExperimentError, load_experiment, parse_experiment
from simlab_pipelines.experiments.responses import ExpressionError, parse_response

TINY = Path(__file__).parent / "fixtures" / "experiments" / "tiny_mmck.yaml"
RESPONSES = {
    # a server costs 10 per time unit, a waiting customer 4
    "cost": {"expression": "10 * servers + 4 * mean_queue_length", "unit": "$ per time unit",
             "better": "lower"},
    "tail_ratio": "wait_p90 / max(mean_wait, 0.01) if servers > 1 else -abs(wait_p90)",
    "lost_share_pct": "100 * blocking_probability ** 1",
}


def _tiny(**changes) -> dict:
    data = yaml.safe_load(TINY.read_text())
    data.update(changes)
    return data


def test_responses_in_duckdb_equal_the_expression_over_the_stored_metrics(lab):
    path = lab / "experiments" / "tiny_mmck.yaml"
    objective = {"metric": "cost", "direction": "minimize"}
    path.write_text(yaml.safe_dump(_tiny(responses=RESPONSES, objective=objective)))
    result = CliRunner().invoke(main, ["sweep", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        rows = con.execute("""
            WITH m AS (PIVOT (SELECT config_key, replication, metric, value FROM observations
                              WHERE experiment = 'tiny_mmck') ON metric USING first(value)),
                 c AS (SELECT config_key, CAST(json_extract(params, '$.servers') AS DOUBLE)
                              AS servers FROM configurations WHERE experiment = 'tiny_mmck')
            SELECT m.config_key, m.replication, m.cost, 10 * c.servers + 4 * m.mean_queue_length,
                   m.tail_ratio,
                   CASE WHEN c.servers > 1 THEN m.wait_p90 / greatest(m.mean_wait, 0.01)
                        ELSE -abs(m.wait_p90) END,
                   m.lost_share_pct, 100 * m.blocking_probability
            FROM m JOIN c USING (config_key) ORDER BY 1, 2""").fetchall()
        summary = dict(con.execute("SELECT config_key, mean FROM summary WHERE metric = 'cost'")
                       .fetchall())
        answer = con.execute("SELECT metric, best, answer, recommended FROM answers").fetchone()
        described = {r[0]: r[1:] for r in con.execute(
            "SELECT metric, kind, unit, better, definition FROM metrics").fetchall()}
    assert len(rows) == 12  # 2 configurations x 6 replications, every response present
    for key, replication, *pairs in rows:
        for stored, recomputed in zip(pairs[::2], pairs[1::2], strict=True):
            assert stored == pytest.approx(recomputed, rel=1e-12, abs=1e-12), (key, replication)
    # Responses are analysed like metrics: intervals, and the objective's best and answer.
    assert set(summary) == {"servers-1", "servers-2"}
    assert answer[0] == "cost" and answer[1] == min(summary, key=summary.get)
    assert " per time unit" in answer[2] and "$" in answer[2] and answer[3] in summary
    # units, directions and definitions, of the model's metrics and of the responses
    assert described["cost"] == ("response", "$ per time unit", "lower",
                                 RESPONSES["cost"]["expression"])
    assert described["wait_p90"][:3] == ("metric", "time units", "lower")


def test_a_response_can_drive_the_precision_target():
    spec = parse_experiment(_tiny(responses=RESPONSES, precision={
        "metric": "tail_ratio", "relative_half_width": 0.1, "max_replications": 20}))
    assert list(spec.parsed_responses) == list(RESPONSES)
    assert spec.units()["cost"] == "$ per time unit" and spec.better()["cost"] == "lower"
    assert spec.units()["mean_wait"] == "time units"  # the model's own units are kept


@pytest.mark.parametrize(("expression", "reason"), [
    ("servers +", "not a valid expression"),
    ("no_such_metric * 2", "unknown name(s) no_such_metric"),
    ("mean_wait / (servers - 1)", "division by zero in configuration servers-1"),
    ("log(servers - 1)", "cannot be evaluated in configuration servers-1"),
    ("10.0 ** 400 * mean_wait", "overflows a float"),
    ("'text'", "only numbers"),
    ("mean_wait.real", "attribute access"),
    ("(lambda: 1)()", "is not allowed"),
    ("lambda: 1", "lambda"),
    ("__import__('os').system('true')", "calling \"__import__('os').system\" is not allowed"),
    ("open('/etc/passwd')", "calling 'open' is not allowed"),
    ("[c for c in ()]", "comprehensions"),
    ("(x := 1)", "assignment"),
    ("min(mean_wait)", "at least 2 arguments"),
    ("sqrt(x=mean_wait)", "no keyword arguments"),
    ("__builtins__", "is not allowed"),
    ("mean_wait % 2", "operator Mod is not allowed"),
])
def test_bad_expressions_are_rejected_naming_the_field(tmp_path, expression, reason):
    path = tmp_path / "tiny_mmck.yaml"
    path.write_text(yaml.safe_dump(_tiny(responses={"score": expression})))
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    assert len(caught.value.errors) == 1
    field, message = caught.value.errors[0]
    assert field == "responses.score" and reason in message, message
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(("name", "reason"), [
    ("mean_wait", "already a metric"), ("servers", "already a parameter"),
    ("Score", "must match"),
])
def test_response_names_must_be_new_names(name, reason):
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(_tiny(responses={name: "2 * mean_wait"}))
    assert caught.value.errors[0][0] == f"responses.{name}" and reason in str(caught.value)


def test_unknown_objective_names_metrics_and_responses():
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(_tiny(responses=RESPONSES,
                               objective={"metric": "profit", "direction": "maximize"}))
    field, message = caught.value.errors[0]
    assert field == "objective.metric" and "cost" in message and "mean_wait" in message


def test_a_branch_not_taken_may_divide_by_zero():
    spec = parse_experiment(_tiny(responses={"r": "mean_wait / (servers - 1) if servers > 1 else 0"}))
    assert "r" in spec.parsed_responses


def test_nothing_in_an_expression_runs_code(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    calls = []
    monkeypatch.setattr("builtins.eval", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("builtins.exec", lambda *a, **k: calls.append(a))
    for attempt in (f"__import__('pathlib').Path({str(marker)!r}).touch()",
                    f"open({str(marker)!r}, 'w')",
                    "().__class__.__bases__[0].__subclasses__()",
                    "getattr(mean_wait, 'real')", "globals()", "breakpoint()"):
        with pytest.raises(ExpressionError):
            parse_response("r", attempt)
    assert not marker.exists() and not calls
    # A valid expression is evaluated by walking its whitelisted tree, not by eval.
    response = parse_response("r", "max(a, b) ** 2 - (1 if a < b <= 3 else 0) + sqrt(4) "
                                    "+ (not a) + (a and b) + exp(0) + log(1)")
    assert response.evaluate({"a": 1.0, "b": 2.0}) == 4.0 - 1 + 2 + 0 + 1 + 1 + 0
    assert not calls
