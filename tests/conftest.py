"""Shared fixtures: an isolated data directory, Dagster home and experiments directory per test."""

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A private simlab: SIMLAB_DATA_DIR, DAGSTER_HOME (the project's dagster.yaml) and an
    experiments directory holding a copy of the tiny experiment."""
    data, home, experiments = tmp_path / "data", tmp_path / "dagster_home", tmp_path / "experiments"
    for d in (data, home, experiments):
        d.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    shutil.copy(FIXTURES / "experiments" / "tiny_mmck.yaml", experiments / "tiny_mmck.yaml")
    for var in ("SIMLAB_RESULTS_URI", "SIMLAB_DUCKDB_PATH", "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "SIMLAB_WORKERS",
                "SIMLAB_MAX_PARTITIONS_PER_RUN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SIMLAB_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SIMLAB_EXPERIMENTS_DIR", str(experiments))
    return tmp_path


@pytest.fixture
def tiny(lab):
    """The tiny experiment's spec and a storage resource in the lab (one worker: in-process)."""
    from simlab_pipelines.experiments import load_experiment
    from simlab_pipelines.resources import SimlabStorage

    spec = load_experiment(lab / "experiments" / "tiny_mmck.yaml")
    storage = SimlabStorage(results_uri=str(lab / "data" / "results"),
                            duckdb_path=str(lab / "data" / "simlab.duckdb"), workers=1)
    return spec, storage


@pytest.fixture
def materialize():
    """``materialize(spec, storage, instance, selection, **kwargs)``: dg.materialize of the
    experiment's assets and checks (errors reported in the result, not raised)."""
    import dagster as dg

    from simlab_pipelines.assets import experiment_assets
    from simlab_pipelines.checks import experiment_checks

    def run(spec, storage, instance, selection, **kwargs):
        return dg.materialize(experiment_assets(spec) + experiment_checks(spec), instance=instance,
                              resources={"simlab": storage}, selection=selection,
                              raise_on_error=False, **kwargs)

    return run


@pytest.fixture
def planted_failure(monkeypatch):
    """mmck raises in replication 2 (in this process: run with one worker)."""
    import dataclasses

    import engine

    model = engine.MODELS["mmck"]

    def run(params, streams, warmup, horizon, series_interval=None):
        if streams.spawn_key[0] == 2:
            raise RuntimeError("planted failure in replication 2")
        return model.run(params, streams, warmup, horizon, series_interval)

    monkeypatch.setitem(engine.MODELS, "mmck", dataclasses.replace(model, run=run))
