"""Faults of users' own models, as they happen in life, then the ordinary command works.

- A plug-in, a command-line simulator or a response named like a column of the results' long
  tables (``value``, ``metric``, ``replication``, ``experiment``, ``config_key``) is refused at
  load with its field path (it used to run every simulation and then crash every summary with a
  polars DuplicateError); renamed, the same `simlab sweep` works.
- A command simulator that exits 0 with its JSON line but leaves a child holding its stdout is
  judged by its own exit: its result lands at once (it was reported timed out after the full
  timeout, and thrown away) and the child is killed with its group.
- A simulator printing hundreds of megabytes costs bounded memory: only the last line of stdout
  and the last 2 KB of stderr are kept (all of it was held, ~4 times over, per pool worker).
"""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from click.testing import CliRunner
from lab import write_module
from test_command_model import _alive

from engine import command, registry
from simlab_pipelines import summary
from simlab_pipelines.cli import main
from simlab_pipelines.experiments.models import RESERVED_NAMES

PLUGIN = textwrap.dedent('''
    """A plug-in whose second metric is called METRIC."""
    from engine import Model, ModelRun, Parameter


    def run(params, streams, warmup, horizon, series_interval=None):
        x = streams["a"].uniform()
        return ModelRun({"mean_x": x, "METRIC": 2 * x}, 1)


    MODEL = Model(name="named", description="two uniforms",
                  parameters=(Parameter("rate", float, "unused", default=1.0),),
                  metrics={"mean_x": "a uniform", "METRIC": "twice it"}, run=run,
                  default_horizon=1.0, default_warmup=0.0, version="1")
''')


def _write(directory: Path, name: str, data: dict) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "seed": 5, "replications": 2, **data},
                                   sort_keys=False))
    return path


def _sweep(path: Path):
    return CliRunner().invoke(main, ["sweep", str(path), "--workers", "1"])


def _metrics(lab: Path, experiment: str) -> set[str]:
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        return {m for (m,) in con.execute("SELECT DISTINCT metric FROM summary WHERE "
                                          "experiment = ?", [experiment]).fetchall()}


def test_the_reserved_names_are_the_long_tables_columns():
    assert set(RESERVED_NAMES) == set(summary.OBSERVATION_SCHEMA) | set(summary.KEYS)


@pytest.mark.parametrize("kind", ["plug-in", "command", "response"])
def test_a_metric_named_like_a_column_is_refused_at_load_then_renamed_it_sweeps(lab, kind):
    experiments = lab / "experiments"
    name = f"named_{kind.replace('-', '_')}"
    module = f"{name}_model"

    def experiment(metric: str) -> Path:
        if kind == "plug-in":
            sys.modules.pop(module, None)
            registry.refresh()
            write_module(experiments / f"{module}.py", PLUGIN.replace("METRIC", metric))
            return _write(experiments, name, {"model": f"{module}:MODEL"})
        if kind == "command":
            (experiments / "sim.py").write_text(
                f"import json; print(json.dumps({{'mean_x': 1.5, {metric!r}: 3.0}}))\n")
            return _write(experiments, name, {"horizon": 1.0, "model": {
                "name": "sim", "command": [sys.executable, "sim.py"],
                "metrics": ["mean_x", metric]}})
        return _write(experiments, name, {
            "model": "mmck", "horizon": 50.0, "parameters": {"servers": 1, "arrival_rate": 0.5},
            "responses": {metric: "2 * mean_wait"}})

    field = {"plug-in": "model", "command": "model.metrics[1]",
             "response": "responses.metric"}[kind]
    for reserved in RESERVED_NAMES:
        if kind == "response" and reserved != "metric":
            continue  # one is enough there: the same check
        result = _sweep(experiment(reserved))
        assert result.exit_code == 2, result.output  # a usage error, before anything ran
        assert f"{field}: " in result.output and repr(reserved) in result.output
        assert "column of the results' tables" in result.output
        assert "Traceback" not in result.output
    assert not (lab / "data" / "simlab.duckdb").exists()  # nothing ran

    result = _sweep(experiment("doubled"))
    assert result.exit_code == 0, result.output
    first = "mean_wait" if kind == "response" else "mean_x"
    assert {first, "doubled"} <= _metrics(lab, name)


LEAVES_A_CHILD = textwrap.dedent('''
    """Prints its result, leaves a child holding stdout (and stderr), exits 0."""
    import os, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(f"child-{os.environ['SIMLAB_REPLICATION']}.pid", "w") as f:
        f.write(str(child.pid))
    print('{"mean_x": %s}' % (1.5 + int(os.environ["SIMLAB_REPLICATION"])))
''')


def test_a_simulator_is_judged_by_its_own_exit_not_by_a_child_holding_stdout(lab):
    experiments = lab / "experiments"
    (experiments / "leaves_a_child.py").write_text(LEAVES_A_CHILD)
    path = _write(experiments, "child_holds_stdout", {"horizon": 1.0, "model": {
        "name": "leaves_a_child", "command": [sys.executable, "leaves_a_child.py"],
        "metrics": ["mean_x"], "timeout": 120}})
    started = time.monotonic()
    result = _sweep(path)
    assert result.exit_code == 0, result.output
    # Not the timeout (120 s): a simulation is done when its simulator exits.
    assert time.monotonic() - started < 60
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        assert con.execute("SELECT replication, value FROM observations ORDER BY 1").fetchall() \
            == [(0, 1.5), (1, 2.5)]
    for replication in (0, 1):  # its group was ended with it
        pid = int((experiments / f"child-{replication}.pid").read_text())
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), pid


LOUD = textwrap.dedent('''
    """300 MB of log lines on stdout, 100 MB on stderr, then its result."""
    import sys
    block = (b"progress " + b"x" * 90 + b"\\n") * 10_000  # 1 MB
    for _ in range(300):
        sys.stdout.buffer.write(block)
    for _ in range(100):
        sys.stderr.buffer.write(block)
    sys.stderr.buffer.write(b"the end of stderr\\n")
    sys.stdout.buffer.write(b\'{"mean_x": 2.5}\\n\\n\')
''')

MEASURE = textwrap.dedent('''
    """Runs the loud simulator once, as a pool worker would; prints the result and peak RSS."""
    import json, resource, sys
    import engine
    from engine import command
    declaration = command.parse_declaration(
        {"name": "loud", "command": [sys.executable, "loud.py"], "metrics": ["mean_x"]})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = command.run_command(declaration, ".", {}, engine.Streams(1, (0,)), 0.0, 1.0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"metrics": run.metrics, "grew_kib": after - before}))
''')


def test_a_loud_simulator_costs_bounded_memory(tmp_path):
    (tmp_path / "loud.py").write_text(LOUD)
    (tmp_path / "measure.py").write_text(MEASURE)
    done = subprocess.run([sys.executable, "measure.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["metrics"] == {"mean_x": 2.5}
    # 400 MB went through the pipes; holding it (as bytes, then text, then lines) took >1 GB.
    assert measured["grew_kib"] < 32 * 1024, measured


def test_what_is_kept_of_the_output():
    line = command.LastLine(limit=10)
    for chunk in [b"a\nbb", b"b\n  \n", b"{\"x\": 1}", b"\n\n"]:
        line.feed(chunk)
    line.finish()
    assert line.line == b'{"x": 1}' and not line.too_long
    line = command.LastLine(limit=10)
    line.feed(b"ok\n" + b"y" * 11)  # the last line is too long to be a result
    line.finish()
    assert line.line is None and line.too_long
    with pytest.raises(ValueError, match="longer than 1,048,576 bytes"):
        command.parse_output(b"x" * (2 << 20), ("x",))
    tail = command.Tail(4)
    for chunk in [b"abc", b"defgh", b"i"]:
        tail.feed(chunk)
    assert tail.text() == "fghi"
