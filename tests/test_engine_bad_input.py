"""Invalid input is rejected before simulating, naming the parameter, the value and the bound —
through ``engine.simulate`` (ParameterError) and through ``simlab-engine`` (exit 2, the option on
stderr, nothing on stdout). A failing simulation exits 1 with its error on stderr.

The cases are generated from the models' own parameter declarations, so a new bound is tested too.
"""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import engine
from engine.cli import main
from engine.models import MODELS
from engine.models.base import ModelRun
from engine.parameters import Parameter

RUN = {"replication": 0, "seed": 1, "horizon": 10.0, "warmup": 1.0}
CLI_RUN = ["--seed", "1", "--replication", "0", "--horizon", "10", "--warmup", "1"]


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def bound_cases() -> list[Any]:
    """(model, parameter, bad value, text the message must contain besides name and value)."""
    cases = []
    for model in MODELS.values():
        for p in model.parameters:
            def case(value: Any, bound: str | None, tag: str, p: Parameter = p,
                     model: str = model.name) -> Any:
                return pytest.param(model, p.name, value, bound, id=f"{model}-{p.name}-{tag}")

            if p.minimum is not None:
                if p.exclusive_minimum:
                    case_value = p.type(p.minimum)
                    cases.append(case(case_value, f"> {p.minimum}", "equal-exclusive-min"))
                below = p.minimum - 1 if p.type is int else p.minimum - 0.5
                op = ">" if p.exclusive_minimum else ">="
                cases.append(case(p.type(below), f"{op} {p.minimum}", "below-min"))
            if p.maximum is not None:
                above = p.maximum + 1 if p.type is int else p.maximum * 2
                cases.append(case(p.type(above), f"<= {p.maximum}", "above-max"))
            cases.append(case("3", None, "string"))
            cases.append(case(True, None, "bool"))
            cases.append(case([1], None, "list"))
            cases.append(case(math.nan, None, "nan"))
            cases.append(case(math.inf, None, "inf"))
            cases.append(case(-math.inf, None, "-inf"))
            if p.type is int:
                cases.append(case(2.5, None, "non-integer"))
            else:
                cases.append(case(10**400, f"<= {p.maximum}", "int-beyond-float"))
            if not p.optional:
                cases.append(case(None, "required", "missing"))
    return cases


@pytest.mark.parametrize(("model", "name", "value", "bound"), bound_cases())
def test_simulate_rejects_bad_parameter(model, name, value, bound):
    with pytest.raises(engine.ParameterError) as caught:
        engine.simulate(model, {name: value}, **RUN)
    message = str(caught.value)
    assert caught.value.name == name
    assert f"'{name}'" in message
    if value is not None:
        assert repr(value) in message, message
    if bound is not None:
        assert bound in message, message


def test_capacity_below_servers():
    with pytest.raises(engine.ParameterError) as caught:
        engine.simulate("mmck", {"servers": 4, "capacity": 3}, **RUN)
    assert caught.value.name == "capacity"
    assert "= 3" in str(caught.value) and ">= servers (4)" in str(caught.value)
    # The bound is K >= c, so K = c (pure loss) is allowed.
    engine.simulate("mmck", {"servers": 4, "capacity": 4}, **RUN)


@pytest.mark.parametrize("model", list(MODELS))
def test_unknown_parameter(model):
    with pytest.raises(engine.ParameterError) as caught:
        engine.simulate(model, {"speed": 1.0}, **RUN)
    assert caught.value.name == "speed"
    assert "unknown parameter 'speed'" in str(caught.value)


@pytest.mark.parametrize(("field", "value", "bound"), [
    ("seed", -1, ">= 0"), ("seed", 2**128, "<= 340282366920938463463374607431768211455"),
    ("seed", 1.5, "integer"), ("replication", -1, ">= 0"), ("replication", 2**31, "<= 2147483647"),
    ("horizon", 0.0, "> 0.0"), ("horizon", -5.0, "> 0.0"), ("horizon", math.nan, "finite"),
    ("warmup", -1.0, ">= 0.0"), ("warmup", math.inf, "finite"), ("series_interval", 0.0, "> 0.0"),
])
def test_simulate_rejects_bad_run_settings(field, value, bound):
    kwargs = {**RUN, field: value}
    with pytest.raises(engine.ParameterError) as caught:
        engine.simulate("mmck", {}, **kwargs)
    assert caught.value.name == field
    assert f"'{field}'" in str(caught.value) and bound in str(caught.value)


def test_simulate_rejects_unknown_model():
    with pytest.raises(KeyError, match=r"unknown model 'bank'.*mmck"):
        engine.simulate("bank", {}, **RUN)


# --- the CLI -----------------------------------------------------------------------------------

def invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def assert_usage_error(result, option: str, *fragments: str, usage: bool = True) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    assert "Error:" in result.stderr
    assert ("Usage:" in result.stderr) == usage, result.stderr
    assert option in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def cli_cases() -> list[Any]:
    """(model, option, text value, fragments stderr must contain)."""
    cases = []
    for model in MODELS.values():
        for p in model.parameters:
            def case(text: str, tag: str, *fragments: str, p: Parameter = p,
                     model: str = model.name) -> Any:
                return pytest.param(model, _option(p.name), text, fragments,
                                    id=f"{model}-{p.name}-{tag}")

            if p.minimum is not None:
                if p.exclusive_minimum:
                    cases.append(case(str(p.minimum), "equal-exclusive-min", f"> {p.minimum}"))
                below = p.minimum - 1 if p.type is int else p.minimum - 0.5
                cases.append(case(str(below), "below-min", str(below), str(p.minimum)))
            if p.maximum is not None:
                above = p.maximum + 1 if p.type is int else p.maximum * 2
                cases.append(case(str(above), "above-max", str(above), f"<= {p.maximum}"))
            cases.append(case("lots", "non-numeric", "'lots'"))
            cases.append(case("true", "bool", "'true'"))
            cases.append(case("nan", "nan", "nan"))
            cases.append(case("inf", "inf", "inf"))
            cases.append(case("", "empty"))
            if p.type is int:
                cases.append(case("2.5", "non-integer", "'2.5'"))
    return cases


@pytest.mark.parametrize(("model", "option", "text", "fragments"), cli_cases())
def test_cli_rejects_bad_parameter(model, option, text, fragments):
    # --opt=VALUE so that a negative value cannot be mistaken for an option.
    assert_usage_error(invoke(["run", model, f"{option}={text}", *CLI_RUN]), option, *fragments)


def test_cli_capacity_below_servers():
    result = invoke(["run", "mmck", "--servers", "3", "--capacity", "2", *CLI_RUN])
    assert_usage_error(result, "--capacity", "= 2", ">= servers (3)")


@pytest.mark.parametrize(("args", "option", "fragments"), [
    (["run", "bank", *CLI_RUN], "'bank'", ("No such command",)),
    (["run", "mmck", "--replication", "0"], "--seed", ("Missing option",)),
    (["run", "mmck", "--seed", "1"], "--replication", ("Missing option",)),
    (["run", "mmck", "--seed", "-1", "--replication", "0"], "--seed", ("-1",)),
    (["run", "mmck", "--seed", "1", "--replication", "-3"], "--replication", ("-3",)),
    (["run", "mmck", "--seed", "x", "--replication", "0"], "--seed", ("'x'",)),
    (["run", "mmck", "--seed", str(2**128), "--replication", "0"], "--seed", (str(2**128),)),
    (["run", "mmck", "--arrival-rate", "fast", *CLI_RUN], "--arrival-rate", ("'fast'",)),
    (["run", "mmck", "--speed", "3", *CLI_RUN], "--speed", ("No such option",)),
    (["run", "mmck", "--seed", "1", "--replication", "0", "--horizon", "-5"], "--horizon",
     ("-5.0", "> 0.0")),
    (["run", "mmck", "--seed", "1", "--replication", "0", "--horizon", "0"], "--horizon",
     ("> 0.0",)),
    (["run", "mmck", "--seed", "1", "--replication", "0", "--warmup", "-1"], "--warmup",
     ("-1.0", ">= 0.0")),
    (["run", "mmck", "--seed", "1", "--replication", "0", "--warmup", "soon"], "--warmup",
     ("'soon'",)),
    (["run", "mmck", "--seed", "1", "--replication", "0", "--series-interval", "0"],
     "--series-interval", ("> 0.0",)),
    (["run", "mmck", "--seed", "1", "--replication", "0", "extra"], "extra", ("unexpected",)),
    (["nosuch"], "'nosuch'", ("No such command",)),
])
def test_cli_misuse(args, option, fragments):
    assert_usage_error(invoke(args), option, *fragments)


def test_cli_option_without_value():
    # click reports this one without the usage lines; still exit 2, the option named on stderr.
    result = invoke(["run", "mmck", "--seed", "1", "--replication", "0", "--servers"])
    assert_usage_error(result, "--servers", "requires an argument", usage=False)


def test_cli_run_without_arguments_shows_help_on_stderr():
    result = invoke(["run", "mmck"])
    assert result.exit_code == 2
    assert result.stdout == "" and "--arrival-rate" in result.stderr


def _broken(model_name: str, run):
    return dataclasses.replace(MODELS[model_name], run=run)


def test_failed_simulation_exits_1(monkeypatch):
    def explode(params, streams, warmup, horizon, series_interval=None):
        raise RuntimeError("the kitchen caught fire")

    monkeypatch.setitem(MODELS, "mmck", _broken("mmck", explode))
    result = invoke(["run", "mmck", *CLI_RUN, "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "RuntimeError" in result.stderr and "the kitchen caught fire" in result.stderr
    assert "Usage:" not in result.stderr  # not a usage error


def test_infinite_metric_is_a_failed_simulation(monkeypatch):
    real = MODELS["mmck"]

    def infinite(params, streams, warmup, horizon, series_interval=None):
        outcome = real.run(params, streams, warmup, horizon, series_interval)
        return ModelRun({**outcome.metrics, "mean_wait": math.inf}, outcome.events)

    monkeypatch.setitem(MODELS, "mmck", _broken("mmck", infinite))
    result = invoke(["run", "mmck", *CLI_RUN, "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "mean_wait" in result.stderr


def test_successful_run_prints_exactly_one_json_object():
    result = invoke(["run", "mmck", "--servers", "2", *CLI_RUN, "--json"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    record = json.loads(result.stdout)
    assert set(record) == {"model", "params", "replication", "seed", "horizon", "warmup",
                           "metrics", "events", "wall_seconds", "engine_version"}
    assert set(record["metrics"]) == set(MODELS["mmck"].metrics)


def test_models_json_lists_both_models():
    exe = Path(sys.executable).parent / "simlab-engine"
    done = subprocess.run([str(exe), "models", "--json"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert listing["engine_version"] == engine.ENGINE_VERSION
    described = {m["name"]: m for m in listing["models"]}
    assert set(MODELS) <= set(described) and {"mmck", "restaurant"} <= set(described)
    # Anything else is an installed plug-in (the example package the dev group installs).
    assert all(m["origin"] == "package" for n, m in described.items() if n not in MODELS)
    for name, model in MODELS.items():
        entry = described[name]
        assert [p["name"] for p in entry["parameters"]] == [p.name for p in model.parameters]
        for p, listed in zip(model.parameters, entry["parameters"], strict=True):
            assert listed["type"] == p.type.__name__
            assert listed["default"] == p.default
            assert (listed["minimum"], listed["maximum"]) == (p.minimum, p.maximum)
            assert listed["exclusive_minimum"] == p.exclusive_minimum and listed["help"]
        assert [m["name"] for m in entry["metrics"]] == list(model.metrics)


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["models", "--help"], ["run", "--help"],
                                  *[["run", name, "--help"] for name in MODELS]])
def test_help_everywhere_exits_0_on_stdout(args):
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ") and result.stderr == ""
    if args[0] == "run" and len(args) == 3:  # a model's help lists every parameter option
        for p in MODELS[args[1]].parameters:
            assert _option(p.name) in result.stdout


def test_version_is_the_engine_version():
    result = invoke(["--version"])
    assert result.exit_code == 0 and engine.ENGINE_VERSION in result.stdout


@pytest.mark.parametrize(("args", "option"), [(["models", "extra"], "extra"),
                                              (["models", "--jsn"], "--jsn")])
def test_models_misuse(args, option):
    assert_usage_error(invoke(args), option)
