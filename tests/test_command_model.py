"""Command-line simulators as models (DESIGN.md, "Your own models (plug-ins): the contract"):
argv placeholders and SIMLAB_* variables, the derived 63-bit {seed}, TRACEPARENT of the simulation
span, the experiment's directory as working directory, JSON metrics from the last line of stdout;
``simlab-engine run ... --json`` driven as a command gives the in-process results; the C simulator
sweeps; every failure mode fails only its own partitions, with the exit code and stderr tail in the
error, the span and the metadata.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from lab import result_rows as _rows
from lab import storage as _storage
from test_telemetry import fresh_tracing, spans  # noqa: F401  (fixtures)

import engine
from engine import command
from simlab_pipelines.experiments import ExperimentError, load_experiment, parse_experiment

PROJECT = Path(__file__).resolve().parent.parent
EXAMPLE_C = PROJECT / "examples" / "c_simulator"
ENGINE_CLI = str(Path(sys.executable).parent / "simlab-engine")


def _write(directory: Path, name: str, data: dict) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **data}, sort_keys=False))
    return path




def _materialize_all(materialize, spec, storage, instance):
    from simlab_pipelines.assets import replications_key

    result = None
    for key in spec.config_keys():  # one run per configuration (a run holds one config's range)
        result = materialize(spec, storage, instance, [replications_key(spec.name)], tags={
                                 "dagster/asset_partition_range_start": f"{key}|0",
                                 "dagster/asset_partition_range_end":
                                     f"{key}|{spec.replications - 1}"})
    return result


# --- the declaration ----------------------------------------------------------------------------

BASE = {"name": "sim", "command": ["./sim", "{rate}"], "version": "1",
        "parameters": {"rate": {"type": "float", "minimum": 0, "exclusive_minimum": True}},
        "metrics": ["mean_wait"]}


@pytest.mark.parametrize(("change", "field", "fragment"), [
    ({"command": ["./sim", "{speed}"]}, "model.command[1]", "unknown placeholder {speed}"),
    ({"command": ["./sim", "{rate"]}, "model.command[1]", "lone brace"),
    ({"command": "./sim {rate}"}, "model.command", "list of strings"),
    ({"name": "mmck"}, "model.name", "built-in"),
    ({"metrics": []}, "model.metrics", "non-empty list"),
    ({"timeout": 0}, "model.timeout", "> 0"),
    ({"parameters": {"seed": {"type": "int"}}}, "model.parameters.seed", "placeholder"),
    ({"parameters": {"rate": {"type": "float", "default": -1, "minimum": 0}}},
     "model.parameters.rate.default", ">= 0"),
    ({"parameters": {"rate": {"type": "str"}}}, "model.parameters.rate.type", "'int' or 'float'"),
    ({"shell": True}, "model.shell", "unknown key 'shell'"),
    ({"metrics": {"mean_wait": {"better": "smaller"}}}, "model.metrics.mean_wait.better",
     "'lower' or 'higher', got 'smaller'"),
    ({"metrics": {"mean_wait": {"units": "min"}}}, "model.metrics.mean_wait.units",
     "unknown key 'units' (allowed: unit, better, kind, description)"),
    ({"metrics": {"mean_wait": {"unit": 5}}}, "model.metrics.mean_wait.unit",
     "non-empty string"),
    ({"metrics": {"mean_wait": "min"}}, "model.metrics.mean_wait", "expected a mapping"),
    ({"metrics": {"mean wait": {}}}, "model.metrics.mean wait", "must match"),
    ({"metrics": {}}, "model.metrics", "or a mapping of name to {unit, better, kind, description}"),
    ({"metrics": {"value": {"unit": "s"}}}, "model.metrics.value", "a column of the results'"),
    ({"parameters": {"rate": {"type": "float", "unit": ""}}}, "model.parameters.rate.unit",
     "unit must be a non-empty string"),
])
def test_a_bad_declaration_names_its_field(change, field, fragment):
    with pytest.raises(ExperimentError) as info:
        parse_experiment({"name": "e", "model": {**BASE, **change}, "seed": 1,
                          "replications": 2, "horizon": 10})
    assert any(f == field and fragment in reason for f, reason in info.value.errors), \
        info.value.errors


def test_a_commands_metrics_may_declare_units_better_and_descriptions():
    declared = {**BASE, "metrics": {
        "mean_wait": {"unit": "min", "better": "lower", "description": "mean wait for a server"},
        "utilisation": {"unit": "fraction"},
        "served": None}}
    spec = parse_experiment({"name": "e", "model": declared, "seed": 1, "replications": 2,
                             "horizon": 10, "parameters": {"rate": 1.0}})
    from simlab_pipelines.experiments.responses import descriptions

    assert spec.units() == {"mean_wait": "min", "utilisation": "fraction"}
    assert spec.better() == {"mean_wait": "lower"}
    assert descriptions(spec)["mean_wait"] == "mean wait for a server"
    model = spec.resolved_model
    assert list(model.metrics) == ["mean_wait", "utilisation", "served"]
    assert model.metrics["served"] == "(reported by ./sim)"
    assert "served" not in descriptions(spec)  # the answers call it "served", not the command
    # how a metric is read is not what is simulated: the results stay current
    listed = parse_experiment({"name": "e", "model": {**BASE, "metrics": list(declared["metrics"])},
                               "seed": 1, "replications": 2, "horizon": 10,
                               "parameters": {"rate": 1.0}})
    assert listed.simulation_hash() == spec.simulation_hash()
    # a parameter's unit likewise: read, not simulated
    timed = {**declared, "parameters": {"rate": {**BASE["parameters"]["rate"],
                                                 "unit": "requests/s"}}}
    with_unit = parse_experiment({"name": "e", "model": timed, "seed": 1, "replications": 2,
                                  "horizon": 10, "parameters": {"rate": 1.0}})
    assert with_unit.parameter_units() == {"rate": "requests/s"}
    assert with_unit.resolved_model.parameters[0].describe()["unit"] == "requests/s"


def test_a_command_without_default_horizon_needs_the_experiments():
    with pytest.raises(ExperimentError) as info:
        parse_experiment({"name": "e", "model": BASE, "seed": 1, "replications": 2})
    assert ("horizon", "required: model 'sim' declares no default_horizon") in info.value.errors


def test_output_parsing():
    metrics = ("a", "b")
    assert command.parse_output(b'log line\n{"a": 1, "b": 2.5, "c": "x"}\n\n', metrics) == \
        ({"a": 1.0, "b": 2.5}, 0)
    record = {"metrics": {"a": 1, "b": 2}, "events": 7, "model": "m"}
    assert command.parse_output(json.dumps(record).encode(), metrics) == ({"a": 1.0, "b": 2.0}, 7)
    for bad, fragment in [(b"", "no output"), (b'{"a": 1}\nnot json', "not JSON"),
                          (b"[1, 2]", "not an object"), (b'{"a": 1}', "missing"),
                          (b'{"a": 1, "b": "2"}', "non-numeric"), (b'{"a": 1, "b": true}',
                                                                  "non-numeric")]:
        with pytest.raises(ValueError, match=fragment):
            command.parse_output(bad, metrics)


# --- running it ---------------------------------------------------------------------------------

PROBE = textwrap.dedent('''
    """Writes what it was given to calls/<replication>.json (in its working directory)."""
    import json, os, sys
    os.makedirs("calls", exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.startswith("SIMLAB_") or k == "TRACEPARENT"}
    with open(f"calls/{os.environ['SIMLAB_REPLICATION']}.json", "w") as f:
        json.dump({"argv": sys.argv[1:], "env": env, "cwd": os.getcwd()}, f)
    print("starting")
    print(json.dumps({"result": float(sys.argv[1]) * 2, "ignored": "extra"}))
''')


def test_placeholders_environment_traceparent_and_working_directory(lab, materialize, spans):  # noqa: F811
    import dagster as dg

    experiments = lab / "experiments"
    (experiments / "probe.py").write_text(PROBE)
    path = _write(experiments, "probe_cmd", {
        "model": {"name": "probe", "command": [sys.executable, "probe.py", "{rate}", "{seed}",
                                               "{seed_entropy}", "{replication}", "{horizon}",
                                               "{warmup}", "{{literal}}"],
                  "version": "1", "metrics": ["result"],
                  "parameters": {"rate": {"type": "float", "minimum": 0}}},
        "seed": 2**62 + 5, "replications": 2, "horizon": 2.5, "warmup": 0.5,
        "parameters": {"rate": 0.25}})
    spec = load_experiment(path)
    with dg.instance_for_test() as instance:
        assert _materialize_all(materialize, spec, _storage(lab), instance).success
    rows = _rows(lab, "probe_cmd").sort("replication")
    simulation_spans = {s.context.span_id: s for s in spans.get_finished_spans()
                        if s.name == "simlab.simulation"}
    for row in rows.iter_rows(named=True):
        r = row["replication"]
        call = json.loads((experiments / "calls" / f"{r}.json").read_text())
        sequence = np.random.SeedSequence(entropy=2**62 + 5, spawn_key=(r,))
        derived = int(sequence.generate_state(1, np.uint64)[0]) >> 1
        assert 0 <= derived < 2**63
        assert call["argv"] == ["0.25", str(derived), str(2**62 + 5), str(r), "2.5", "0.5",
                                "{literal}"]
        assert call["env"]["SIMLAB_SEED"] == str(derived)
        assert call["env"]["SIMLAB_RATE"] == "0.25"
        assert call["env"]["SIMLAB_REPLICATION"] == str(r)
        assert Path(call["cwd"]) == experiments.resolve()
        # TRACEPARENT is the simulation span's own context: the simulator joins its trace.
        assert call["env"]["TRACEPARENT"].split("-")[:3] == ["00", row["trace_id"], row["span_id"]]
        assert int(row["span_id"], 16) in simulation_spans
        assert row["metrics"]["result"] == 0.5 and row["code_version"] == "model-probe-1"


def test_driving_simlab_engine_run_gives_the_in_process_results(lab, materialize):
    import dagster as dg

    metrics = list(engine.get_model("mmck").metrics)
    path = _write(lab / "experiments", "mmck_cli", {
        "model": {"name": "mmck_cli", "version": "1", "metrics": metrics,
                  "command": [ENGINE_CLI, "run", "mmck", "--servers", "{servers}",
                              "--arrival-rate", "{arrival_rate}", "--seed", "{seed_entropy}",
                              "--replication", "{replication}", "--horizon", "{horizon}",
                              "--warmup", "{warmup}", "--json"],
                  "parameters": {"servers": {"type": "int", "minimum": 1},
                                 "arrival_rate": {"type": "float", "minimum": 0}}},
        "seed": 77, "replications": 2, "horizon": 200.0, "warmup": 20.0,
        "parameters": {"arrival_rate": 0.9}, "factors": {"servers": [1, 2]}})
    spec = load_experiment(path)
    with dg.instance_for_test() as instance:
        assert _materialize_all(materialize, spec, _storage(lab, workers=2), instance).success
    rows = _rows(lab, "mmck_cli")
    assert rows.height == 4
    for row in rows.iter_rows(named=True):
        params = json.loads(row["params"])
        direct = engine.simulate("mmck", params, replication=row["replication"], seed=77,
                                 horizon=200.0, warmup=20.0)
        assert row["metrics"] == direct.metrics  # bit-identical, through argv and JSON
        assert row["events"] == direct.events


@pytest.fixture(scope="module")
def mm1_binary(tmp_path_factory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) on this machine")
    out = tmp_path_factory.mktemp("c") / "mm1"
    subprocess.run(["cc", "-O2", "-o", str(out), str(EXAMPLE_C / "mm1.c"), "-lm"], check=True)
    return out


def test_the_c_simulator_sweeps(lab, mm1_binary):
    import dagster as dg

    from simlab_pipelines.sweep import sweep

    experiments = lab / "experiments"
    shutil.copy(mm1_binary, experiments / "mm1")
    data = yaml.safe_load((EXAMPLE_C / "mm1_c.yaml").read_text())
    data.update(replications=4, horizon=5000.0, warmup=500.0, factors={"arrival_rate": [0.5, 0.8]})
    path = experiments / "mm1_c.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with dg.instance_for_test() as instance:
        report = sweep(path, instance, workers=2)
    assert report.missing == 8 and report.still_missing == 0
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        got = dict(con.execute(
            "SELECT config_key, avg(value) FROM observations WHERE experiment = 'mm1_c' "
            "AND metric = 'utilisation' GROUP BY 1").fetchall())
        models = con.execute("SELECT DISTINCT model, code_version FROM replications").fetchall()
    assert models == [("mm1_c", "model-mm1_c-1")]
    # Utilisation is lambda / mu; 4 x 5,000 time units pin it to within a few percent.
    assert got["arrival_rate-0.5"] == pytest.approx(0.5, abs=0.05)
    assert got["arrival_rate-0.8"] == pytest.approx(0.8, abs=0.06)


FLAKY = textwrap.dedent('''
    """One behaviour per mode: 0 fine, 1 exit 3, 2 hang (with a child), 3 no JSON, 4 missing
    metric, 5 non-numeric metric."""
    import os, subprocess, sys, time
    mode = int(sys.argv[1])
    sys.stderr.write("x" * 3000 + f"\\nmode {mode} stderr end\\n")
    sys.stderr.flush()
    if mode == 1:
        sys.exit(3)
    if mode == 2:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(f"child-{os.environ['SIMLAB_REPLICATION']}.pid", "w") as f:
            f.write(str(child.pid))
        time.sleep(60)
    print({0: '{"result": 1.5}', 3: "done, no JSON", 4: '{"other": 1}',
           5: '{"result": "fast"}'}[mode])
''')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) counts as dead.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


@pytest.mark.slow
def test_every_failure_mode_fails_only_its_partitions(lab, materialize, spans):  # noqa: F811
    import dagster as dg

    from simlab_pipelines.assets import replications_key

    experiments = lab / "experiments"
    (experiments / "flaky.py").write_text(FLAKY)
    path = _write(experiments, "flaky_cmd", {
        "model": {"name": "flaky", "command": [sys.executable, "flaky.py", "{mode}"],
                  "version": "1", "metrics": ["result"], "timeout": 1.5,
                  "parameters": {"mode": {"type": "int", "minimum": 0, "maximum": 5}}},
        "seed": 3, "replications": 2, "horizon": 1.0, "factors": {"mode": [0, 1, 2, 3, 4, 5]}})
    spec = load_experiment(path)
    reasons: dict[str, str] = {}
    started = time.monotonic()
    with dg.instance_for_test() as instance:
        for key in spec.config_keys():
            result = materialize(spec, _storage(lab), instance, [replications_key("flaky_cmd")],
                                 tags={
                                     "dagster/asset_partition_range_start": f"{key}|0",
                                     "dagster/asset_partition_range_end": f"{key}|1"})
            assert result.success == (key == "mode-0"), key
            if key == "mode-0":
                continue
            failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
            data = failure.step_failure_data.user_failure_data
            errors = data.metadata["errors"].value
            assert sorted(errors) == [f"{key}|0", f"{key}|1"]  # both, and nothing else
            reasons[key] = errors[f"{key}|0"]
        materialized = instance.get_materialized_partitions(replications_key("flaky_cmd"))
    assert time.monotonic() - started < 60  # the hanging ones were killed at their timeout
    assert materialized == {"mode-0|0", "mode-0|1"}
    assert "exited with status 3" in reasons["mode-1"]
    assert "timed out after 1.5 s" in reasons["mode-2"]
    # What went wrong first (one line for every partition failing so), then the command line.
    first, command_line = reasons["mode-2"].splitlines()[:2]
    assert first == "CommandFailed: timed out after 1.5 s; its process group was killed"
    assert command_line.startswith("command: ") and "exit code" not in reasons["mode-2"]
    assert "not JSON" in reasons["mode-3"] and "exit code 0" in reasons["mode-3"]
    assert "missing from the output: result" in reasons["mode-4"]
    assert "non-numeric metric(s): result='fast'" in reasons["mode-5"]
    for key, reason in reasons.items():
        # The stderr tail: its last 2 KB (the end kept, the beginning cut).
        tail = reason.split("stderr (last 2048 bytes):\n", 1)[1]
        assert tail.endswith(f"mode {key[-1]} stderr end\n") and len(tail) == 2048, key
    # The timed-out simulator's whole process group was killed: its child too.
    for r in (0, 1):
        pid = int((experiments / f"child-{r}.pid").read_text())
        assert not _alive(pid), pid
    # The failed spans carry the exit code and the stderr tail.
    events = [e for s in spans.get_finished_spans() if s.name == "simlab.simulation"
              for e in s.events if e.name == "simlab.command_failed"]
    assert len(events) == 10
    codes = sorted(e.attributes["simlab.command.exit_code"] for e in events)
    assert codes == [-1, -1, 0, 0, 0, 0, 0, 0, 3, 3]
    assert all(e.attributes["simlab.command.stderr_tail"].endswith("stderr end\n")
               for e in events)

