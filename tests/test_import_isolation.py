"""Processes that do not analyse stay light: a sweep's start, the code location (which every run
process and the sensors load) and a run of simulations import neither scipy, pandas, SALib nor
matplotlib (together ~0.5 s of start-up); the analysis package loads its names on first use."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import simlab_pipelines.analysis as analysis

PROJECT = Path(__file__).resolve().parent.parent

HEAVY = ("scipy", "pandas", "SALib", "matplotlib")

# The repository's experiments directory: it includes a designed (nolh) and a sequential one.
START = """
import json, sys
import simlab_pipelines.cli, simlab_pipelines.sweep, simlab_pipelines.sensors
import simlab_pipelines.definitions as definitions
assert definitions.defs.resolve_asset_graph().get_all_asset_keys()
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""

# One partition of the tiny experiment's replications, simulated and recorded in this process.
RUN = """
import json, sys
import dagster as dg
from simlab_pipelines.assets import experiment_assets, replications_key
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.resources import SimlabStorage
spec = load_experiment(sys.argv[1])
storage = SimlabStorage(results_uri=sys.argv[2], duckdb_path=sys.argv[3], workers=1)
with dg.DagsterInstance.get() as instance:
    result = dg.materialize(experiment_assets(spec), instance=instance,
                            resources={"simlab": storage}, partition_key="servers-2|0",
                            selection=[replications_key(spec.name)])
    assert result.success
    assert instance.get_materialized_partitions(replications_key(spec.name)) == {"servers-2|0"}
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _loaded(code: str, *args: str, env: dict | None = None) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=PROJECT, env=env, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_sweep_start_and_code_location_load_no_analysis_libraries(monkeypatch):
    for var in ("SIMLAB_EXPERIMENTS_DIR", "SIMLAB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    loaded = _loaded(START)
    assert "simlab_pipelines.experiments.designs" in loaded and "dagster" in loaded
    assert _heavy(loaded) == []


def test_a_run_of_simulations_loads_no_analysis_libraries(lab):
    data = lab / "data"
    loaded = _loaded(RUN, str(lab / "experiments" / "tiny_mmck.yaml"), str(data / "results"),
                     str(data / "simlab.duckdb"))
    assert "engine.models.mmck" in loaded  # it really simulated
    assert _heavy(loaded) == []


def test_the_check_above_sees_the_analysis_libraries():
    # The same probe on a process that analyses: scipy is found (the probe is not blind).
    code = ("import json, sys; import simlab_pipelines.analysis as a; a.t_interval; "
            "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    assert "scipy" in _loaded(code)


@pytest.mark.parametrize("name", analysis.__all__)
def test_every_public_name_is_its_submodule_object(name):
    value = getattr(analysis, name)
    source = sys.modules[f"simlab_pipelines.analysis.{analysis._SOURCES[name]}"]
    assert value is getattr(source, name)
    assert name in dir(analysis)


def test_a_submodule_import_does_not_hide_a_name():
    # The import system binds simlab_pipelines.analysis.answer (the module) on the package: the
    # package still gives the function ``answer``, and submodules stay reachable as attributes.
    import simlab_pipelines.analysis.answer  # noqa: F401
    from simlab_pipelines.analysis import answer

    assert callable(answer) and answer.__module__ == "simlab_pipelines.analysis.answer"
    assert analysis.plots.__name__ == "simlab_pipelines.analysis.plots"
    with pytest.raises(AttributeError, match="no_such_name"):
        analysis.no_such_name  # noqa: B018
