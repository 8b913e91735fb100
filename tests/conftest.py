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
