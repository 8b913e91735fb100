"""What `simlab sweep` prints when things fail, driven through the real CLI on a real instance: no
JSON log lines unless asked (`--log-format json`), one line per failed run and one table of the
failed partitions by reason (a timeout reads "timed out after 3 s", never "exit code None"), each
reason once; no summary run when nothing landed; a progress bar that counts what landed; a re-run
that says why results are stale; the report's path when the summary step wrote it."""

import json
import os
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from simlab_pipelines.cli import main
from simlab_pipelines.failures import first_line, group_failures, merge_groups

# A command-line simulator with three behaviours, chosen by the factor `mode`: 0 succeeds,
# 1 exits with status 3 (saying why on stderr), 2 hangs until its 3 s timeout (long enough
# that a loaded machine never times out the others).
SCRIPT = ("case {mode} in 1) echo 'the simulator broke' >&2; exit 3;; 2) exec sleep 30;; esac; "
          "echo '{{\"y\": {mode}}}'")


def _experiment(lab: Path, name: str, modes: list[int], version: str = "1", **more) -> Path:
    path = lab / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "seed": 5, "replications": 2, "horizon": 1, "warmup": 0,
        "model": {"name": "modes", "command": ["sh", "-c", SCRIPT], "version": version,
                  "parameters": {"mode": {"type": "int", "minimum": 0, "maximum": 2}},
                  "metrics": ["y"], "timeout": 3},
        "factors": {"mode": modes}, **more}))
    return path


def _sweep(path: Path, *options: str):
    return CliRunner().invoke(main, ["sweep", str(path), "--workers", "1", *options])


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_failures_read_as_one_line_per_run_and_one_table_by_reason(lab, monkeypatch):
    monkeypatch.delenv("SIMLAB_LOG_FORMAT", raising=False)  # restored after the test
    limit = {"responses": {"double": "2 * y"}, "objective": {"metric": "double", "direction": "minimize"},
             "constraints": [{"metric": "y", "max": 1}]}
    path = _experiment(lab, "modes", [0, 1, 2], **limit)
    result = _sweep(path)
    assert result.exit_code == 1, result.output + result.stderr
    out, err = result.stdout, result.stderr
    assert _json_lines(out) == [] and _json_lines(err) == []  # a person's terminal: no JSON
    assert "SIMLAB_LOG_FORMAT" not in os.environ  # set for its pool workers, then restored
    assert "exit code None" not in out + err and "Traceback" not in err
    # What landed, counted: 2 of 6 (mode 0), then the summary of those (its report's path).
    assert "2 of the 6 partitions run landed" in out, err
    report = re.search(r"HTML report: (\S+)", out)
    assert report and Path(report.group(1)).is_file() and "simlab report" not in out
    assert "constraint y <= 1: mean, 95% CI" in out  # what decides feasibility, shown too
    # One line per failed run, then the table: each reason once, with how many partitions.
    runs = [line for line in err.splitlines() if line.startswith("run ")]
    assert len(runs) == 1 and runs[0].endswith("failed: 4 of 6 simulations failed (the other "
                                               "partitions are kept)")
    rows = {cells[1]: cells for cells in _table_rows(err)}
    assert set(rows) == {"CommandFailed: timed out after 3 s; its process group was killed",
                         "CommandFailed: exited with status 3"}
    assert all(cells[2] == "2" and cells[0].startswith(("mode-1|", "mode-2|"))
               for cells in rows.values())
    assert err.count("timed out after 3 s") == 1 and err.count("exited with status 3") == 1

    # The simulator changes: a re-run says why its results run again; with --log-format json the
    # runs' error lines come as JSON on stderr too (and the table still ends the output).
    _experiment(lab, "modes", [0, 1, 2], version="2", **limit)
    again = _sweep(path, "--log-format", "json")
    assert again.exit_code == 1, again.output
    assert "modes: model version 1 → 2: 2 results are stale; they run again." in again.stdout
    lines = _json_lines(again.stderr)
    assert lines and all({"timestamp", "level", "message", "trace_id"} <= set(line)
                         for line in lines)
    assert any("timed out after 3 s" in line["message"] for line in lines)
    assert len(_table_rows(again.stderr)) == 2


def _table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich table in ``text`` (cells stripped)."""
    return [[cell.strip() for cell in line.strip("│").split("│")]
            for line in text.splitlines() if line.startswith("│")]


def test_nothing_landed_means_no_summary_run_and_a_bar_at_zero(lab, monkeypatch):
    from simlab_pipelines.sweep import sweep

    path = _experiment(lab, "broken", [1])
    seen: list[tuple[int, int]] = []
    with dg.DagsterInstance.get() as instance:
        report = sweep(path, instance, workers=1, progress=lambda done, total: seen.append(
            (done, total)))
        summaries = instance.get_runs(filters=dg.RunsFilter(job_name="broken_summary"))
    assert report.landed == 0 and report.missing == 2 and report.failed_runs
    assert seen[-1] == (0, 2)  # the bar counts what landed, not what was tried
    assert report.summary_run is None and summaries == []
    assert [(g.reason, g.partitions) for g in merge_groups(report.failed_partitions)] == [
        ("CommandFailed: exited with status 3", 2)]


def test_failures_group_by_the_first_line_of_their_reason():
    groups = group_failures([("a|0", "E: one\ndetail 0"), ("a|1", "\n E: two"),
                             ("b|0", "E: one\ndetail 1"), ("b|1", "")])
    assert [(g.reason, g.partitions, g.first) for g in groups] == [
        ("E: one", 2, "a|0"), ("E: two", 1, "a|1"), ("unknown reason", 1, "b|1")]
    many = group_failures((f"k|{i}", f"reason {i}") for i in range(30))
    assert len(many) == 21 and many[-1].partitions == 10  # the rest counted, not listed
    merged = merge_groups([*groups, *group_failures([("c|0", "E: two")])])
    assert [(g.reason, g.partitions) for g in merged][:2] == [("E: one", 2), ("E: two", 2)]
    assert first_line("x" * 400).endswith("…") and len(first_line("x" * 400)) == 300
    died = group_failures((f"m|{i}", f"WorkerDied: its pool worker (pid {100 + i}) was killed by "
                                     "signal 11 (SIGSEGV) while simulating this partition")
                          for i in range(3))
    assert [(g.reason, g.partitions) for g in died] == [
        ("WorkerDied: its pool worker was killed by signal 11 (SIGSEGV) while simulating this "
         "partition", 3)]


def test_many_configurations_close_with_the_best_ten_by_the_objective():
    from simlab_pipelines.cli import _first_rows
    from simlab_pipelines.experiments import parse_experiment

    spec = parse_experiment({"name": "many", "model": "mmck", "seed": 1, "replications": 2,
                             "factors": {"servers": list(range(1, 26))},
                             "objective": {"metric": "mean_wait", "direction": "minimize"}})
    rows = [(f"servers-{s}", 2, 1.0 / s, 0.0, 1.0, 0.1) for s in range(1, 26)]
    shown, words = _first_rows(spec, "mean_wait", rows)
    assert [row[0] for row in shown] == [f"servers-{s}" for s in range(25, 15, -1)]
    assert words == "the best 10 of 25"
    assert _first_rows(spec, "mean_wait", rows[:20]) == (rows[:20], "")  # a screen's worth: all


def test_a_malformed_command_is_refused_once_before_anything_runs(lab):
    path = _experiment(lab, "malformed", [0])
    path.write_text(path.read_text().replace("- sh\n", "- sh {mode\n", 1))
    result = _sweep(path)
    assert result.exit_code == 2
    reason = "model.command[0]: 'sh {mode': a lone brace"
    assert result.output.count(reason) == 1, result.output
    assert not (lab / "data" / "results").exists()  # nothing ran


def test_a_stale_result_is_explained_by_what_changed():
    from engine import ENGINE_VERSION
    from simlab_pipelines.experiments import load_experiment
    from simlab_pipelines.staleness import _changes

    spec = load_experiment(Path(__file__).parent / "fixtures" / "experiments" / "tiny_mmck.yaml")
    config = spec.configurations_list()[0]
    recorded = {"code_version": spec.code_version, "model": "mmck", "seed_entropy": 7,
                "horizon": 200.0, "warmup": 20.0, "params": json.dumps(config.params)}
    assert _changes(recorded, spec, config.params).startswith("other inputs")
    older = {**recorded, "code_version": "engine-0.0.1", "seed_entropy": 8, "warmup": 10.0,
             "params": json.dumps({**config.params, "arrival_rate": 0.7})}
    assert _changes(older, spec, config.params) == (
        f"engine version 0.0.1 → {ENGINE_VERSION}, seed 8 → 7, warm-up 10 → 20, "
        "arrival_rate 0.7 → 0.8")


def test_a_rerun_with_nothing_to_do_still_shows_the_last_summarys_failed_checks(lab):
    # y = the replication's number (0, 1): a 1 % interval cannot be reached in 2 replications,
    # so precision_reached fails on the summary whatever the seed.
    path = lab / "experiments" / "imprecise.yaml"
    path.write_text(yaml.safe_dump({
        "name": "imprecise", "seed": 5, "replications": 2, "horizon": 1, "warmup": 0,
        "model": {"name": "counter", "command": ["sh", "-c", "echo '{{\"y\": {replication}}}'"],
                  "metrics": ["y"], "parameters": {"k": {"type": "int", "minimum": 0}}},
        "factors": {"k": [0]},
        "precision": {"metric": "y", "relative_half_width": 0.01, "max_replications": 2}}))
    first = _sweep(path)
    assert first.exit_code == 0, first.output
    assert "check precision_reached: FAILED" in first.output
    assert "check no_missing_replications: passed" in first.output
    again = _sweep(path)
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output
    checks = [line for line in again.output.splitlines() if line.startswith("check ")]
    assert checks == ["check precision_reached (last summary): FAILED"], again.output


def test_the_closing_tables_share_one_read_only_connection(tmp_path, monkeypatch):
    """The closing tables read through one connection: rows of a table, nothing for a missing
    table or file, and a file another process writes named rather than a traceback."""
    import subprocess
    import sys

    import duckdb

    from simlab_pipelines import cli

    path = tmp_path / "simlab.duckdb"
    monkeypatch.setenv("SIMLAB_DUCKDB_PATH", str(path))
    with cli._summary_reader() as rows:  # no file yet
        assert rows("SELECT answer FROM answers WHERE experiment = ?", ["x"]) == ([], [])
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE answers AS SELECT 'x' AS experiment, 'Buy two.' AS answer")
    with cli._summary_reader() as rows:
        assert rows("SELECT answer FROM answers WHERE experiment = ?", ["x"]) == (
            ["answer"], [("Buy two.",)])
        assert rows("SELECT * FROM warmup WHERE experiment = ?", ["x"]) == ([], [])
        with pytest.raises(duckdb.InvalidInputException):  # read-only: no writes through it
            rows("DELETE FROM answers WHERE experiment = ?", ["x"])
    writer = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('open', flush=True); time.sleep(60)", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with CliRunner().isolation() as (_out, err, _):
            cli._print_outcome(None, {})
            said = err.getvalue().decode()
        assert "the summary is written but cannot be shown" in said
        assert f"PID {writer.pid}" in said
    finally:
        writer.kill()
        writer.wait()
