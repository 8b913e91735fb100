"""The analysis in the pipeline: sequential rounds, comparisons, warm-up, the answer, the report.

Everything runs for real: `simlab sweep` on a SQLite Dagster instance, the sequential sensor with
build_sensor_context, a real DuckDB file. The statistics themselves are tested against known truth
in tests/test_analysis_*.py; here the tests check that the pipeline applies them to the right data
and that every path (sweep, sensor, report) agrees.
"""

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from simlab_pipelines import partitions, plan
from simlab_pipelines.analysis import next_round, t_interval
from simlab_pipelines.analysis.answer import one_line_lists
from simlab_pipelines.assets import summary_key
from simlab_pipelines.cli import main
from simlab_pipelines.definitions import load_definitions
from simlab_pipelines.experiments import load_experiment

SEQUENTIAL = Path(__file__).parent / "fixtures" / "sequential" / "tiny_sequential.yaml"


@pytest.fixture
def sequential(lab):
    path = lab / "experiments" / "tiny_sequential.yaml"
    shutil.copy(SEQUENTIAL, path)
    return path


def _sweep(path, *args):
    result = CliRunner().invoke(main, ["sweep", str(path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _query(db, sql, params=()):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def _values(db, config_key, metric):
    rows = _query(db, "SELECT value FROM observations WHERE config_key = ? AND metric = ? "
                      "ORDER BY replication", [config_key, metric])
    return np.array([v for (v,) in rows])


def _counts(db):
    return dict(_query(db, "SELECT config_key, count(*) FROM replications GROUP BY 1"))


def test_sweep_adds_replications_until_the_precision_target_is_met(lab, sequential):
    # In blocks of 3 replications: the rounds' lines count replications, not partitions.
    sequential.write_text(sequential.read_text() + "replications_per_partition: 3\n")
    spec = load_experiment(sequential)
    precision = spec.precision
    output = _sweep(sequential, "--workers", "2")
    db = lab / "data" / "simlab.duckdb"
    counts = _counts(db)
    table = {row[0]: row[1:] for row in _query(
        db, "SELECT config_key, replications, status, rounds FROM precision")}
    assert set(counts) == set(table) == {"servers-1", "servers-2"}
    assert max(counts.values()) > spec.replications, "the target must need more than the pilot"
    assert "rounds of the sequential procedure" in output
    added = [int(m.group(1)) for m in re.finditer(
        r"of the sequential procedure: (\d+) more replications for", output)]
    assert added and sum(added) == sum(counts.values()) - spec.replications * len(counts), output
    for key, (replications, status, rounds) in table.items():
        # every replication wanted is in DuckDB, and no other
        assert counts[key] == replications
        assert sorted(r for (r,) in _query(db, "SELECT replication FROM replications WHERE "
                                               "config_key = ?", [key])) == list(range(replications))
        values = _values(db, key, precision.metric)
        interval = t_interval(values, precision.confidence)
        if status == "met":
            assert interval.relative_half_width <= precision.relative_half_width
        else:
            assert status == "max_reached" and replications == precision.max_replications
        # the stopping decision is the sequential procedure's own on exactly these values: it asks
        # for nothing more, and it asked for more on the first round's values
        plan = next_round({key: values}, target=precision.relative_half_width,
                          max_replications=precision.max_replications,
                          confidence=precision.confidence,
                          min_replications=spec.replications)[key]
        assert plan.additional == 0
        assert (rounds > 1) == (replications > spec.replications)
    checks = _check_lines(output)
    assert checks["precision_reached"] == all(s == "met" for _, s, _ in table.values())
    assert "nothing to do" in _sweep(sequential)
    assert _counts(db) == counts


def _check_lines(output):
    return {line.split()[1].rstrip(":"): line.endswith("passed")
            for line in output.splitlines() if line.startswith("check ")}


@pytest.mark.slow
def test_the_sensor_runs_the_same_rounds_as_the_sweep(lab, sequential, monkeypatch):
    """Rounds are replayed from the data: the sensor, run by run, ends where the sweep ends."""
    spec = load_experiment(sequential)
    _sweep(sequential, "--workers", "1")
    by_sweep = _counts(lab / "data" / "simlab.duckdb")

    other = lab / "by_sensor"
    (other / "home").mkdir(parents=True)
    shutil.copy(lab / "dagster_home" / "dagster.yaml", other / "home")
    monkeypatch.setenv("SIMLAB_DATA_DIR", str(other / "data"))
    monkeypatch.setenv("SIMLAB_WORKERS", "1")
    defs = load_definitions(sequential.parent)
    sensor = defs.resolve_sensor_def("sequential_replications")
    job = defs.resolve_job_def(f"{spec.name}_replications")
    with dg.instance_for_test() as instance:
        # nothing has run: the sensor waits for the pilot (the file sensor or a sweep starts it)
        first = sensor(dg.build_sensor_context(instance=instance))
        assert not first.run_requests
        # the pilot's partitions, as the spec adds them (the replications are dynamic)
        partitions.add_keys(instance, spec.name, plan.wanted_partitions(spec, {}))
        for key in spec.config_keys():  # the pilot, as the experiment_files sensor requests it
            tags = {"dagster/asset_partition_range_start": f"{key}|0",
                    "dagster/asset_partition_range_end": f"{key}|{spec.replications - 1}"}
            assert job.execute_in_process(instance=instance, tags=tags).success
        cursor, rounds = None, 0
        while True:
            result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
            cursor = result.cursor
            if not result.run_requests:
                break
            # until something lands, the same round is not requested again
            again = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
            assert not again.run_requests
            rounds += 1
            for request in result.dynamic_partitions_requests:  # what the daemon does first
                instance.add_dynamic_partitions(request.partitions_def_name,
                                                request.partition_keys)
            for request in result.run_requests:
                assert request.job_name == job.name
                assert job.execute_in_process(instance=instance, tags=request.tags).success
            assert rounds < 20
        assert "no more replications needed" in result.skip_reason.skip_message
        materialized = instance.get_materialized_partitions(
            dg.AssetKey([spec.name, "replications"]))
        # the partitions Dagster offers are exactly those materialised: the UI shows it complete
        offered = instance.get_dynamic_partitions(partitions.dynamic_name(spec.name))
        assert sorted(offered) == sorted(materialized)
    by_sensor = {}
    for key in materialized:
        config, _ = key.split("|")
        by_sensor[config] = by_sensor.get(config, 0) + 1
    assert rounds >= 1
    assert by_sensor == by_sweep


def test_summary_tables_answer_plots_and_report(lab):
    path = lab / "experiments" / "tiny_mmck.yaml"
    spec = load_experiment(path)
    output = _sweep(path, "--workers", "2")
    db = lab / "data" / "simlab.duckdb"

    # the answer ends the sweep's output, and is the one stored in DuckDB
    ((answer, best, kept),) = _query(db, "SELECT answer, best, not_ruled_out FROM answers")
    assert output.rstrip().endswith(answer)
    assert answer.startswith("Recommendation: servers 1 → 2 (2 servers). Against today's setting "
                             "(1 server) it lowers mean wait before service")
    assert "paired over 6 replications" in answer and "servers-2 (servers 1 → 2)" in answer
    assert best in json.loads(kept)

    # comparisons: a paired and an unpaired row per metric; the paired one is the paired-t
    # interval of the per-replication differences, computed here from the observations
    rows = _query(db, "SELECT metric, paired, n, mean_difference, ci_low, ci_high, confidence "
                      "FROM comparisons WHERE config_key = 'servers-2' AND "
                      "baseline_key = 'servers-1'")
    metrics = {m for (m,) in _query(db, "SELECT DISTINCT metric FROM observations")}
    assert {(m, p) for m, p, *_ in rows} == {(m, p) for m in metrics for p in (True, False)}
    paired = {m: rest for m, p, *rest in rows if p}
    diff = _values(db, "servers-2", "mean_wait") - _values(db, "servers-1", "mean_wait")
    expected = t_interval(diff, spec.confidence)
    n, mean, low, high, confidence = paired["mean_wait"]
    assert n == 6 and confidence == spec.confidence
    assert (mean, low, high) == pytest.approx((expected.mean, expected.ci_low, expected.ci_high))

    # the summary's metadata in the UI: the answer, tables (with a schema) and two PNG plots
    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(summary_key(spec.name))
    metadata = event.asset_materialization.metadata
    assert metadata["answer"].value == one_line_lists(answer)  # the UI shows no line breaks
    # the trade-offs: the recommended configuration first, numbers with their intervals
    tradeoffs = [r.data for r in metadata["tradeoffs"].records]
    assert tradeoffs[0]["configuration"] == "servers-2" and tradeoffs[0]["role"] == "recommended"
    assert " ± " in tradeoffs[0]["mean wait (time units)"]
    # headed by names (the UI does not wrap headers), each described in the table's schema
    schema = {c.name: c.description for c in metadata["tradeoffs"].schema.columns}
    assert schema["mean wait (time units)"] == "mean wait before service"
    assert metadata["unit"].value == "time units"
    for name in ("intervals_plot", "differences_plot"):
        text = metadata[name].value
        assert text.startswith("![") and "data:image/svg+xml;base64," in text
        image = base64.b64decode(text.split("base64,", 1)[1].rstrip(")"))
        assert image.startswith(b"<svg")
    summary = metadata["summary"]
    assert isinstance(summary, dg.TableMetadataValue)
    assert [r.data["config_key"] for r in summary.records] == ["servers-1", "servers-2"]
    assert [c.name for c in summary.schema.columns][:3] == ["config_key", "n", "mean"]
    assert {c.name: c.type for c in summary.schema.columns}["mean"] == "float"
    assert "half_width_ratio" in [c.name for c in metadata["crn_effect"].schema.columns]
    assert metadata["comparisons"].records
    assert metadata["beyond_plan"].value == 0
    # the HTML report, written by the summary step, is linked from its metadata
    assert Path(metadata["report"].value) == lab / "data" / f"{spec.name}.html"

    # the report: a self-contained HTML file next to the DuckDB file
    result = CliRunner().invoke(main, ["report", spec.name])
    assert result.exit_code == 0, result.output
    report = lab / "data" / f"{spec.name}.html"
    parser = _Html()
    parser.feed(report.read_text())
    # the recommendation first, the statistics further down
    first, statistics = answer.split("\n\n")
    lines = [line.removeprefix("- ") for line in first.split("\n")]  # its lists are <li>s
    places = [parser.text.index(line) for line in [*lines, statistics]]
    assert places == sorted(places)
    assert parser.images and all(src.startswith("data:image/svg+xml;base64,") for src in parser.images)
    assert not parser.external
    missing = CliRunner().invoke(main, ["report", "nope"])
    assert missing.exit_code == 1 and "no experiment 'nope'" in missing.output


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.external, self.parts = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("href", "src"):
            if attrs.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[name])

    def handle_data(self, data):
        self.parts.append(data)

    @property
    def text(self):
        return "".join(self.parts)


def test_warmup_diagnosis_and_its_check(lab, sequential):
    spec = load_experiment(sequential)
    output = _sweep(sequential, "--workers", "1")
    db = lab / "data" / "simlab.duckdb"
    rows = _query(db, "SELECT config_key, series, series_interval, replications, truncation, "
                      "suggested_warmup, experiment_warmup, shorter, biased OR at_boundary, "
                      "warning FROM warmup")
    counts = _counts(db)
    assert {r[0] for r in rows} == set(counts)
    for key, series, interval, replications, truncation, suggested, warmup, shorter, flagged, \
            warning in rows:
        assert series == "number_in_system" and interval == spec.series_interval
        assert replications == counts[key]
        assert truncation % 5 == 0 and suggested == truncation * interval  # MSER-5: whole batches
        assert warmup == spec.warmup and shorter == (warmup < suggested)
        assert (warning is not None) == flagged
        if warning:
            assert f"warning: {warning}" in output
    # the series stored are the engine's batch means from time 0, one per interval
    points = _query(db, "SELECT count(*) FROM series WHERE config_key = 'servers-1' AND "
                        "replication = 0")[0][0]
    assert points == int((spec.warmup + spec.horizon) // spec.series_interval)
    checks = _check_lines(output)
    assert checks["warmup_long_enough"] == (not any(r[8] for r in rows))


def test_an_experiment_without_objective_or_baseline(lab):
    path = lab / "experiments" / "tiny_mmck.yaml"
    text = path.read_text()
    text = text.replace("baseline: {servers: 1}\n", "")
    text = text[:text.index("objective:")]
    path.write_text(text)
    spec = load_experiment(path)
    assert spec.objective is None and spec.baseline is None
    output = _sweep(path, "--workers", "1")
    db = lab / "data" / "simlab.duckdb"
    assert _query(db, "SELECT count(*) FROM answers") == [(0,)]
    # nothing says which is best: every pair is compared, and no answer is printed
    pairs = _query(db, "SELECT DISTINCT config_key, baseline_key FROM comparisons")
    assert pairs == [("servers-2", "servers-1")]
    assert "Against" not in output and "HTML report" in output
