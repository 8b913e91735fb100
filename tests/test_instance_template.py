"""A new DAGSTER_HOME gets copies of a template's databases (instance.from_template): the same
schema and alembic stamps Dagster makes itself, no shared identity, and never over an instance
that already has its databases or one whose storage is not SQLite inside DAGSTER_HOME."""

import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from simlab_pipelines.instance import from_template, open_instance

PROJECT = Path(__file__).resolve().parent.parent
DATABASES = ("history/runs.db", "schedules/schedules.db", "history/runs/index.db")


def _home(root: Path, name: str, config: str | None = None) -> Path:
    home = root / name
    home.mkdir()
    if config is None:
        shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(config)
    return home


def _schema(path: Path) -> tuple[list, list]:
    con = sqlite3.connect(path)
    try:
        tables = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        return tables, con.execute("SELECT * FROM alembic_version").fetchall()
    finally:
        con.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SIMLAB_INSTANCE_TEMPLATE", raising=False)
    return tmp_path / "cache"


def test_a_new_instance_is_a_copy_of_what_dagster_makes(tmp_path, cache, monkeypatch):
    # Dagster's own creation, for comparison.
    own = _home(tmp_path, "own")
    monkeypatch.setenv("DAGSTER_HOME", str(own))
    monkeypatch.setenv("SIMLAB_INSTANCE_TEMPLATE", "0")
    open_instance().dispose()
    assert not cache.exists()
    monkeypatch.delenv("SIMLAB_INSTANCE_TEMPLATE")

    ids = []
    for name in ("first", "second"):  # the first makes the template, the second copies it
        home = _home(tmp_path, name)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        instance = open_instance()
        try:
            for database in DATABASES:
                assert _schema(home / database) == _schema(own / database), database
            # A working instance: a run recorded and read back; its own identity.
            run = instance.create_run_for_job(dg.GraphDefinition("g").to_job(), run_id=None)
            assert [r.run_id for r in instance.get_runs()] == [run.run_id]
            ids.append(instance.run_storage.get_run_storage_id())
        finally:
            instance.dispose()
    assert ids[0] != ids[1]
    assert len(list(cache.glob("instance-template-*"))) == 1
    assert not list(cache.glob(".tmp-*"))  # nothing half-made left behind


def test_an_existing_instance_is_never_touched(tmp_path, cache, monkeypatch):
    home = _home(tmp_path, "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SIMLAB_INSTANCE_TEMPLATE", "0")
    instance = open_instance()
    instance.create_run_for_job(dg.GraphDefinition("g").to_job())
    instance.dispose()
    before = {d: (home / d).stat().st_ino for d in DATABASES}
    monkeypatch.delenv("SIMLAB_INSTANCE_TEMPLATE")
    assert from_template(home) is False
    assert not cache.exists()  # no template made for an instance that needs none
    assert {d: (home / d).stat().st_ino for d in DATABASES} == before
    with open_instance() as instance:
        assert len(instance.get_runs()) == 1


def test_no_template_for_storage_outside_the_home(tmp_path, cache, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    config = (f"run_storage:\n  module: dagster._core.storage.runs\n  class: SqliteRunStorage\n"
              f"  config:\n    base_dir: {elsewhere}\n")
    home = _home(tmp_path, "home", config)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert from_template(home) is False
    assert not cache.exists() and not elsewhere.exists()  # nothing was made to find out
    with open_instance() as instance:  # Dagster's own way
        assert instance.get_runs() == []
    assert (elsewhere / "runs.db").exists()
