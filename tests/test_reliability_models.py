"""Faults of users' own models, as they happen in life, then the ordinary command works.

- A plug-in, a command-line simulator or a response named like a column of the results' long
  tables (``value``, ``metric``, ``replication``, ``experiment``, ``config_key``) is refused at
  load with its field path (it used to run every simulation and then crash every summary with a
  polars DuplicateError); renamed, the same `simlab sweep` works.
"""

import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
import yaml
from click.testing import CliRunner

from engine import registry
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
            (experiments / f"{module}.py").write_text(PLUGIN.replace("METRIC", metric))
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
