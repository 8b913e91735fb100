"""Users' own Python models (DESIGN.md, "Your own models (plug-ins): the contract"): found by entry
point (the example package ``simlab-webpool``, installed by the project's dev group) and by import
reference from the experiment file's directory; swept through ``simlab sweep``, ``dagster asset
materialize`` and ``dg.materialize`` with results bit-identical to the model's ``run`` on the
contract's streams; a bumped plug-in version re-runs its partitions and nothing else; a broken
plug-in rejects its experiments only, with the reason.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from lab import result_rows as _rows
from lab import storage as _storage
from lab import write_module

import engine
from engine import registry
from engine.cli import main as engine_cli
from simlab_pipelines.experiments import load_experiment, load_experiments

BIN = Path(sys.executable).parent
CLINIC = textwrap.dedent('''
    """A one-doctor clinic: a plug-in model kept next to its experiment file."""
    from engine import Model, ModelRun, Parameter

    VERSION = "1"


    def run(params, streams, warmup, horizon, series_interval=None):
        arrivals, service = streams["arrivals"], streams["service"].rng  # .rng: any distribution
        t = busy_until = wait = 0.0
        patients = 0
        while True:
            t += arrivals.exponential(1.0 / params["rate"])
            if t > warmup + horizon:
                break
            start = max(t, busy_until)
            busy_until = start + service.lognormal(params["log_mean"], 0.5)
            if t > warmup:
                patients += 1
                wait += start - t
        return ModelRun({"mean_wait": wait / patients if patients else 0.0,
                         "patients": float(patients)}, 2 * patients)


    MODEL = Model(
        name="clinic", description="One doctor, lognormal consultations.",
        parameters=(Parameter("rate", float, "patients per hour", default=1.0, minimum=0.0,
                              exclusive_minimum=True),
                    Parameter("log_mean", float, "mean of the log consultation time",
                              default=-0.7)),
        metrics={"mean_wait": "mean wait (h)", "patients": "patients seen"},
        run=run, default_horizon=40.0, default_warmup=4.0, version=VERSION)
''')


@pytest.fixture
def fresh_registry():
    """Forget imported plug-ins before and after (each test writes its own modules)."""
    def forget():
        registry.refresh()
        for name in [n for n in sys.modules if n.startswith(("clinic_", "broken_"))]:
            del sys.modules[name]

    forget()
    yield
    forget()


def _clinic(directory: Path, module: str, version: str = "1") -> None:
    write_module(directory / f"{module}.py",
                 CLINIC.replace('VERSION = "1"', f'VERSION = "{version}"'))


def _experiment(directory: Path, name: str, model: str, **extra) -> Path:
    data = {"name": name, "model": model, "seed": 11, "replications": 2, **extra}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path




def _assert_bit_identical(rows: pl.DataFrame, model: engine.Model, seed: int, horizon: float,
                          warmup: float) -> None:
    """Every stored result is the model's run on Streams(seed, (replication,))."""
    assert rows.height > 0
    for row in rows.iter_rows(named=True):
        params = model.validate(json.loads(row["params"]))
        direct = model.run(params, engine.Streams(seed, (row["replication"],)), warmup, horizon,
                           None)
        # repr: bit-identical floats, NaN (a metric with nothing to average) included
        assert repr(row["metrics"]) == repr({k: float(v) for k, v in direct.metrics.items()})
        assert row["model"] == model.name and row["seed_entropy"] == seed


def _env(lab: Path) -> dict[str, str]:
    return {**os.environ, "SIMLAB_DATA_DIR": str(lab / "data"),
            "DAGSTER_HOME": str(lab / "dagster_home"),
            "SIMLAB_EXPERIMENTS_DIR": str(lab / "experiments")}


# --- finding models -----------------------------------------------------------------------------

def test_the_installed_example_is_found_by_entry_point():
    from webpool.model import MODEL

    entry = registry.entry_point_models()["web_pool"]
    assert entry.origin == "package" and entry.model is MODEL and entry.error is None
    assert entry.source.startswith("simlab-webpool ") and "webpool.model:MODEL" in entry.source
    listed = json.loads(CliRunner().invoke(engine_cli, ["models", "--json"]).stdout)["models"]
    origins = {m["name"]: m["origin"] for m in listed}
    assert origins["mmck"] == "built-in" and origins["web_pool"] == "package"
    # simlab-engine run takes it like a built-in, with the same record as engine.simulate.
    result = CliRunner().invoke(engine_cli, ["run", "web_pool", "--pool-size", "4", "--seed", "3",
                                             "--replication", "1", "--horizon", "20", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    direct = engine.simulate("web_pool", {"pool_size": 4}, replication=1, seed=3, horizon=20)
    assert record["metrics"] == direct.metrics and record["model"] == "web_pool"


def test_a_path_model_runs_from_the_engine_cli(tmp_path, fresh_registry):
    _clinic(tmp_path, "clinic_cli")
    runner = CliRunner()
    listed = runner.invoke(engine_cli, ["models", "--path", str(tmp_path), "clinic_cli:MODEL"])
    assert "clinic [path: clinic_cli:MODEL, version 1]" in listed.stdout
    result = runner.invoke(engine_cli, ["run", "--path", str(tmp_path), "clinic_cli:MODEL",
                                        "--rate", "2", "--seed", "5", "--replication", "0",
                                        "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    model = registry.load_reference("clinic_cli:MODEL", tmp_path)
    direct = model.run(model.validate({"rate": 2.0}), engine.Streams(5, (0,)), 4.0, 40.0, None)
    assert record["metrics"] == direct.metrics and record["model"] == "clinic"
    bad = runner.invoke(engine_cli, ["run", "--path", str(tmp_path), "clinic_nope:MODEL"])
    assert bad.exit_code == 2 and "cannot be imported" in bad.stderr


# --- sweeping them ------------------------------------------------------------------------------

def test_path_model_in_pool_workers_is_bit_identical(lab, materialize, fresh_registry):
    import dagster as dg

    from simlab_pipelines.assets import replications_key, summary_key

    experiments = lab / "experiments"
    _clinic(experiments, "clinic_pool")
    spec = load_experiment(_experiment(experiments, "clinic_pool", "clinic_pool:MODEL",
                                       factors={"rate": [1.0, 1.5]}))
    assert spec.model_name == "clinic" and spec.code_version == "model-clinic-1"
    storage = _storage(lab, workers=2)  # forkserver workers import the module themselves
    with dg.instance_for_test() as instance:
        for key in spec.config_keys():
            assert materialize(spec, storage, instance, [replications_key(spec.name)], tags={
                "dagster/asset_partition_range_start": f"{key}|0",
                "dagster/asset_partition_range_end": f"{key}|1"}).success
        assert materialize(spec, storage, instance, [summary_key(spec.name)]).success
    rows = _rows(lab, "clinic_pool")
    assert rows.height == 4 and set(rows["code_version"]) == {"model-clinic-1"}
    _assert_bit_identical(rows, spec.resolved_model, 11, 40.0, 4.0)


def test_entry_point_model_through_simlab_sweep(lab):
    from webpool.model import MODEL

    path = _experiment(lab / "experiments", "webpool_tiny", "web_pool", horizon=8.0, warmup=1.0,
                       parameters={"slowdown_factor": 3.0, "slowdown_start": 2.0,
                                   "slowdown_duration": 2.0},
                       factors={"pool_size": [2, 4]})
    done = subprocess.run([str(BIN / "simlab"), "sweep", str(path), "--workers", "2"],
                          env=_env(lab), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nanobind" not in done.stderr  # no object left for the interpreter's exit to report
    rows = _rows(lab, "webpool_tiny")
    assert rows.height == 4 and set(rows["code_version"]) == {f"model-web_pool-{MODEL.version}"}
    _assert_bit_identical(rows, MODEL, 11, 8.0, 1.0)


def test_path_model_through_dagster_asset_materialize(lab, fresh_registry):
    experiments = lab / "experiments"
    _clinic(experiments, "clinic_cli_run")
    _experiment(experiments, "clinic_dagster", "clinic_cli_run:MODEL")
    done = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m",
                           "simlab_pipelines.definitions", "--select",
                           "clinic_dagster/replications", "--partition", "base|1"],
                          env=_env(lab), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nanobind" not in done.stderr  # the definitions' frozen objects freed at exit
    rows = _rows(lab, "clinic_dagster")
    assert rows["partition_key"].to_list() == ["base|1"]
    _assert_bit_identical(rows, registry.load_reference("clinic_cli_run:MODEL", experiments),
                          11, 40.0, 4.0)


# --- staleness ----------------------------------------------------------------------------------

def test_a_bumped_plug_in_version_reruns_its_partitions_only(lab, fresh_registry, monkeypatch):
    import dagster as dg

    from simlab_pipelines.sweep import sweep

    experiments = lab / "experiments"
    _clinic(experiments, "clinic_stale")
    plugin = _experiment(experiments, "clinic_stale", "clinic_stale:MODEL")
    builtin = experiments / "tiny_mmck.yaml"
    with dg.instance_for_test() as instance:
        first = {p: sweep(p, instance).missing for p in (plugin, builtin)}
        assert first[plugin] == 2 and first[builtin] > 0

        # A new engine version (a built-in changed) leaves the plug-in's results current ...
        before = load_experiment(plugin)
        hashes = {c.key: before.inputs_hash(c) for c in before.configurations_list()}
        with monkeypatch.context() as patch:  # (lab's settings stay)
            patch.setattr(engine, "ENGINE_VERSION", "999.0")
            after = load_experiment(plugin)
            assert {c.key: after.inputs_hash(c) for c in after.configurations_list()} == hashes
            assert after.code_version == before.code_version
            assert load_experiment(builtin).code_version == "engine-999.0"

        # ... and bumping the plug-in's version re-runs its partitions, and nothing else.
        registry.refresh()
        del sys.modules["clinic_stale"]
        _clinic(experiments, "clinic_stale", version="2.0")
        bumped = load_experiment(plugin)
        assert bumped.code_version == "model-clinic-2.0"
        assert sweep(plugin, instance).missing == 2
        assert sweep(builtin, instance).missing == 0
    assert set(_rows(lab, "clinic_stale")["code_version"]) == {"model-clinic-2.0"}


# --- broken plug-ins ----------------------------------------------------------------------------

BROKEN = {
    "broken_import": ("raise ImportError('no module named clinic_utils')\n",
                      "cannot be imported", "ImportError: no module named clinic_utils"),
    "broken_type": ("MODEL = {'name': 'x'}\n", "is a dict, not an engine.Model", None),
    "broken_int": ("MODEL = 3\n", "is an int, not an engine.Model", None),
    "broken_declaration": (CLINIC.replace('name="clinic"', 'name="Clinic Two"'),
                           "bad model declaration", "must match [a-z][a-z0-9_]*"),
    "broken_shadow": (CLINIC.replace('name="clinic"', 'name="mmck"'),
                      "the name of a built-in model", None),
}


def test_a_broken_plug_in_rejects_only_its_experiments(lab, fresh_registry, monkeypatch):
    import dagster as dg

    from simlab_pipelines.build import build_definitions

    experiments = lab / "experiments"
    _clinic(experiments, "clinic_good")
    _experiment(experiments, "good_plugin", "clinic_good:MODEL")
    for module, (source, _, _) in BROKEN.items():
        (experiments / f"{module}.py").write_text(source)
        _experiment(experiments, f"uses_{module}", f"{module}:MODEL")
    # Broken entry points: one that cannot import, one that takes a built-in's name.
    points = [importlib.metadata.EntryPoint("ghost", "no_such_package.model:MODEL",
                                            registry.ENTRY_POINT_GROUP),
              importlib.metadata.EntryPoint("restaurant", "webpool.model:MODEL",
                                            registry.ENTRY_POINT_GROUP)]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: points if kw.get("group") == registry.ENTRY_POINT_GROUP
                        else real(**kw))
    registry.refresh()
    _experiment(experiments, "uses_ghost", "ghost")
    _experiment(experiments, "uses_shadowing_entry_point", "restaurant")

    specs, errors = load_experiments(experiments)
    assert sorted(s.name for s in specs) == ["good_plugin", "tiny_mmck",
                                             "uses_shadowing_entry_point"]  # the real restaurant
    by_file = {e.path.stem: e for e in errors}
    assert sorted(by_file) == sorted([f"uses_{m}" for m in BROKEN] + ["uses_ghost"])
    for module, (_, fragment, detail) in BROKEN.items():
        [(field, reason)] = by_file[f"uses_{module}"].errors
        assert field == "model" and fragment in reason and f"{module}:MODEL" in reason, reason
        assert detail is None or detail in reason, reason
    [(field, reason)] = by_file["uses_ghost"].errors
    assert field == "model" and "entry point 'ghost'" in reason and "no_such_package" in reason
    shadow = registry.entry_point_models()["restaurant"]
    assert shadow.model is None and "takes the name of the built-in model" in shadow.error

    # Where users look: the UI's rejected-file assets carry the reasons; the others load.
    defs = build_definitions(specs, errors, experiments)
    described = {s.key.path[-1]: s.description or "" for s in defs.resolve_all_asset_specs()
                 if s.key.path[0] == "rejected_experiments"}
    assert "ImportError: no module named clinic_utils" in described["uses_broken_import"]
    assert "no_such_package" in described["uses_ghost"]
    assert defs.resolve_assets_def(dg.AssetKey(["good_plugin", "replications"])) is not None


def test_a_model_broken_in_a_worker_fails_only_its_partition(lab, fresh_registry):
    # The worker imports the model itself: if it cannot, that partition fails with the reason.
    from simlab_pipelines import batch

    experiments = lab / "experiments"
    _clinic(experiments, "clinic_gone")
    spec = load_experiment(_experiment(experiments, "clinic_gone", "clinic_gone:MODEL"))
    (experiments / "clinic_gone.py").unlink()
    registry.refresh()
    del sys.modules["clinic_gone"]
    config = spec.configurations_list()[0]
    task = batch.Task(
        experiment=spec.name, config_key=config.key, replication=0, partition_key="base|0",
        model=spec.model_name, params=config.params, seed=spec.seed,
        horizon=spec.resolved_horizon, warmup=spec.resolved_warmup, common_random_numbers=True,
        series_interval=None, inputs_hash=spec.inputs_hash(config),
        code_version=spec.code_version, run_id="r", results_uri=str(lab / "data" / "results"),
        traceparent=None, model_ref=spec.model_ref)
    outcome = batch.run_task(task)
    assert outcome.row is None and "ModelError" in outcome.error
    assert "clinic_gone:MODEL" in outcome.error and "cannot be imported" in outcome.error
