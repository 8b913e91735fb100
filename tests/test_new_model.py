"""``simlab new-model NAME`` writes a plug-in package whose own tests pass and whose experiment file
sweeps as generated (by import path, nothing installed): a SimPy model (a process per customer, a
resource, named streams) with every metric's unit declared, and an experiment whose answer answers
its question ("how few servers keep the mean wait under 5 minutes?": the fewest servers shown to);
bad names and existing folders are refused without writing anything."""

import subprocess
import sys

import duckdb
from click.testing import CliRunner

from engine import registry
from simlab_pipelines.cli import main


def test_the_generated_package_tests_and_sweeps(lab, monkeypatch):
    import dagster as dg

    from simlab_pipelines.sweep import sweep

    where = lab / "models"
    result = CliRunner().invoke(main, ["new-model", "desk_gen", "--directory", str(where)])
    assert result.exit_code == 0, result.output
    root = where / "desk_gen"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "desk_gen/__init__.py", "desk_gen/model.py",
        "tests/test_model.py", "desk_gen_sweep.yaml"}
    assert 'desk_gen = "desk_gen.model:MODEL"' in (root / "pyproject.toml").read_text()
    source = (root / "desk_gen" / "model.py").read_text()
    for piece in ("import simpy", "simpy.Resource(", "env.process(", 'streams["arrivals"]',
                  'streams["service"]'):
        assert piece in source, piece

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(root)], cwd=root, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:]

    try:
        with dg.instance_for_test() as instance:
            report = sweep(root / "desk_gen_sweep.yaml", instance, workers=1)
        from desk_gen.model import MODEL  # importable now: the experiment's folder is on the path

        assert set(MODEL.units) == set(MODEL.metrics) and MODEL.series
        # simlab report from the folder holding the package (as the README says): the recorded
        # spec's import path is found next to its experiment file, one folder down.
        registry.refresh()
        for name in ("desk_gen.model", "desk_gen"):
            sys.modules.pop(name, None)
        monkeypatch.chdir(where)
        written = CliRunner().invoke(main, ["report", "desk_gen_sweep"])
        assert written.exit_code == 0, written.output
        assert (lab / "data" / "desk_gen_sweep.html").is_file()
    finally:
        registry.refresh()
        for name in ("desk_gen.model", "desk_gen"):
            sys.modules.pop(name, None)
    assert report.missing == 30 and report.still_missing == 0
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        [(model, code_version)] = con.execute(
            "SELECT DISTINCT model, code_version FROM replications").fetchall()
        [(answer, recommended)] = con.execute(
            "SELECT answer, recommended FROM answers WHERE experiment = 'desk_gen_sweep'"
        ).fetchall()
        [(waits_two,)] = con.execute(
            "SELECT ci_high FROM summary WHERE experiment = 'desk_gen_sweep' AND "
            "config_key = 'servers-2' AND metric = 'mean_wait'").fetchall()
    assert (model, code_version) == ("desk_gen", "model-desk_gen-1")
    # The question: how few servers keep the mean wait under 5 minutes? With 0.8 customers a
    # minute needing 2 minutes each, 2 servers are 80 % busy and wait about 2 min (M/G/2), well
    # under 5: the fewest of 2, 3, 4 servers that do, as the answer says in the file's words.
    assert waits_two < 5 and recommended == "servers-2"
    assert answer.startswith("Recommendation:") and "mean wait" in answer and " min" in answer


def test_bad_names_and_existing_folders_are_refused(tmp_path):
    runner = CliRunner()
    for name, fragment in [("Clinic", "must match"), ("mmck", "built-in"),
                           ("engine", "shadow")]:
        result = runner.invoke(main, ["new-model", name, "--directory", str(tmp_path)])
        assert result.exit_code == 2 and fragment in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "desk").mkdir()
    (tmp_path / "desk" / "mine.txt").write_text("keep me")
    result = runner.invoke(main, ["new-model", "desk", "--directory", str(tmp_path)])
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert [p.name for p in (tmp_path / "desk").iterdir()] == ["mine.txt"]
