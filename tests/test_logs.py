"""Structured logs: one JSON object a line, with the current span's ids and the simulation context."""

import io
import json
import logging
import os
import warnings
from datetime import datetime

import dagster as dg
import pytest

from simlab_pipelines import logs, telemetry
from simlab_pipelines.logs import CONTEXT_FIELDS, configure_logging, log_context

ATTRIBUTES = dict(experiment="exp", config_key="servers-2", replication=4, seed_entropy=1,
                  spawn_key=(4,), model="mmck", params={"servers": 2})


@pytest.fixture
def output(monkeypatch):
    """JSON logging into a buffer; the root logger is restored afterwards."""
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    telemetry.shutdown_tracing()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    yield buffer
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    logging.captureWarnings(False)
    telemetry.shutdown_tracing()


def _lines(buffer: io.StringIO) -> list[dict]:
    text = buffer.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_lines_carry_trace_ids_and_context(output):
    log = logging.getLogger("simlab.test")
    log.info("before any span")
    with telemetry.simulation_span(telemetry.simulation_attributes(**ATTRIBUTES)) as info, \
            log_context(experiment="exp", config_key="servers-2", replication=4):
        log.info("simulating %s", "mmck")
    log.debug("not shown at INFO")
    before, inside = _lines(output)
    assert before["trace_id"] is None and before["span_id"] is None
    assert "experiment" not in before
    assert inside["message"] == "simulating mmck"
    assert inside["level"] == "INFO" and inside["logger"] == "simlab.test"
    assert (inside["trace_id"], inside["span_id"]) == (info.trace_id, info.span_id)
    assert (inside["experiment"], inside["config_key"], inside["replication"]) == (
        "exp", "servers-2", 4)
    assert inside["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(inside["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset().total_seconds() == 0


def test_exceptions_extra_and_nesting(output):
    log = logging.getLogger("simlab.test")
    with log_context(experiment="outer"):
        with log_context(replication=7, config_key=None):
            try:
                raise RuntimeError("boom\nsecond line")
            except RuntimeError:
                log.exception("failed", extra={"wall_seconds": 1.5, "level": "forged"})
        log.warning("after")
    failed, after = _lines(output)  # one line each, despite the multi-line traceback
    assert failed["level"] == "ERROR"  # extra= cannot forge the fixed fields
    assert failed["wall_seconds"] == 1.5
    assert (failed["experiment"], failed["replication"]) == ("outer", 7)
    assert "config_key" not in failed
    assert "Traceback" in failed["exception"] and "RuntimeError: boom" in failed["exception"]
    assert after["experiment"] == "outer" and "replication" not in after
    with pytest.raises(TypeError, match="seed"), log_context(seed=1):
        pass


def test_configure_logging_is_idempotent_and_replaces_plain_stream_handlers(output):
    root = logging.getLogger()
    text_handler = logging.StreamHandler(io.StringIO())
    root.addHandler(text_handler)
    configure_logging("WARNING")
    configure_logging("INFO", stream=output)
    logging.getLogger("other.library").info("once")
    # pytest records warnings by replacing warnings.showwarning around each test phase, which
    # undoes captureWarnings: switch it on again inside the test, then hand back to pytest.
    logging.captureWarnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure_logging("INFO", stream=output)
        warnings.warn("a library warning", UserWarning, stacklevel=1)
    logging.captureWarnings(False)
    once, warning = _lines(output)
    assert once["message"] == "once"
    assert warning["logger"] == "py.warnings" and "a library warning" in warning["message"]
    assert text_handler not in root.handlers
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD")


def test_a_logger_with_its_own_handler_is_not_printed_twice(output):
    own = logging.getLogger("servicelike")  # e.g. Dagster's "dagster" logger in its CLI
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    own.addHandler(handler)
    try:
        own.warning("printed by its own handler")
        logging.getLogger("servicelike.child").warning("child too")
        logging.getLogger("simlab.x").warning("json")
        library = logging.getLogger("library.with.nullhandler")
        library.addHandler(logging.NullHandler())  # what libraries do: still printed as JSON
        library.warning("library line")
    finally:
        own.removeHandler(handler)
    own.warning("now through the root")
    assert [line["message"] for line in _lines(output)] == ["json", "library line",
                                                            "now through the root"]
    assert text.getvalue().splitlines() == ["printed by its own handler", "child too"]


def test_a_line_inside_a_simulation_span_knows_its_simulation_without_log_context(output):
    attributes = telemetry.simulation_attributes(**ATTRIBUTES, run_id="run-9",
                                                 partition_key="servers-2|4")
    with telemetry.simulation_span(attributes) as info:
        logging.getLogger("opentelemetry.exporter.test").warning("export failed")
        with log_context(replication=5):  # an explicit context wins over the span's
            logging.getLogger("simlab.test").info("inner")
    line, inner = _lines(output)
    assert (line["trace_id"], line["span_id"]) == (info.trace_id, info.span_id)
    assert {k: line[k] for k in CONTEXT_FIELDS} == {
        "experiment": "exp", "config_key": "servers-2", "replication": 4, "run_id": "run-9",
        "partition_key": "servers-2|4"}
    assert inner["replication"] == 5 and inner["config_key"] == "servers-2"


@dg.asset(partitions_def=dg.MultiPartitionsDefinition({
    "config": dg.StaticPartitionsDefinition(["servers-2"]),
    "replication": dg.StaticPartitionsDefinition(["0", "1"])}))
def logged_asset(context: dg.AssetExecutionContext) -> None:
    with telemetry.batch_span("simlab.batch", {"simlab.experiment": "exp"}) as batch:
        context.log.info(f"inside {batch.span_id}")
    context.log.debug("below the configured level")
    raise RuntimeError("simulated failure")


def test_dagster_job_lines_are_json_with_run_and_span(output, capsys):
    job = dg.define_asset_job("logged_job", selection=[logged_asset])
    defs = dg.Definitions(assets=[logged_asset], jobs=[job],
                          loggers={"console": logs.dagster_logger()})
    capsys.readouterr()
    result = defs.resolve_job_def("logged_job").execute_in_process(
        partition_key=dg.MultiPartitionKey({"config": "servers-2", "replication": "1"}),
        tags={"simlab/experiment": "exp"}, raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    assert not result.success
    text = capsys.readouterr().err
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert lines and all(line["logger"] == "dagster" for line in lines)
    assert all(line["run_id"] == result.run_id and line["job_name"] == "logged_job"
               for line in lines)
    (inside,) = [line for line in lines if line["message"].startswith("inside ")]
    assert inside["message"] == f"inside {inside['span_id']}"  # the original, not Dagster's
    assert inside["trace_id"] and inside["level"] == "INFO"
    assert inside["step_key"] == "logged_asset"
    assert (inside["experiment"], inside["partition_key"], inside["config_key"],
            inside["replication"]) == ("exp", "servers-2|1", "servers-2", 1)
    assert not any("below the configured level" in line["message"] for line in lines)
    # Dagster's own events: the step's and the run's failure (STEP_START and the like are DEBUG,
    # below the configured INFO; the run's is PIPELINE_FAILURE, Dagster's legacy value).
    assert {line.get("dagster_event") for line in lines} == {None, "STEP_FAILURE",
                                                             "PIPELINE_FAILURE"}
    (failure,) = [line for line in lines if line.get("dagster_event") == "STEP_FAILURE"]
    assert failure["level"] == "ERROR" and "RuntimeError: simulated failure" in failure["exception"]
    assert failure["message"] == 'Execution of step "logged_asset" failed.'
    assert failure["trace_id"] is None  # logged after the span ended


def test_text_format_for_a_person_and_run_lines_kept_off_the_terminal(output, monkeypatch):
    monkeypatch.delenv(logs.FORMAT_VARIABLE, raising=False)
    configure_logging("INFO", stream=output, fmt="text")
    try:
        logging.getLogger("simlab.x").warning("disk nearly full")
        try:
            raise OSError("no space")
        except OSError:
            logging.getLogger("simlab.x").exception("write failed")
        # A sweep's runs in text format: their console logger prints nothing (the run's event
        # log has the lines); in JSON format it prints them on stderr.
        assert logs.run_logger_config()["loggers"]["console"]["config"]["output"] == "none"
    finally:
        configure_logging("INFO", stream=output)  # JSON again, for the tests after this one
    assert logs.run_logger_config()["loggers"]["console"]["config"]["output"] == "stderr"
    assert output.getvalue().splitlines() == [
        "warning: disk nearly full", "error: write failed (OSError: no space)"]
    monkeypatch.setenv(logs.FORMAT_VARIABLE, "yaml")
    with pytest.raises(ValueError, match="SIMLAB_LOG_FORMAT 'yaml'"):
        logs.log_format()
    assert logs.log_format("TEXT") == "text"


def test_at_a_terminal_a_collector_down_is_said_once(output, monkeypatch):
    monkeypatch.setitem(logs._EXPORT_ERRORS, "said", False)
    exporter = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    configure_logging("INFO", stream=output, fmt="text")
    try:
        for delay in (0.8, 1.2, 2.4):
            exporter.warning("Transient error %s encountered while exporting spans batch, "
                             "retrying in %ss.", "Connection refused", delay)
        logging.getLogger("opentelemetry.sdk.trace.export").error("Failed to export spans batch")
        logging.getLogger("simlab.x").warning("disk nearly full")
    finally:
        configure_logging("INFO", stream=output)  # JSON again: every export error is a line
    exporter.warning("Transient error encountered while exporting spans batch")
    lines = output.getvalue().splitlines()
    assert lines[0].startswith("warning: traces are not exported (Transient error Connection "
                               "refused encountered while exporting spans batch, retrying in "
                               "0.8s.); later export errors of this process are not shown")
    assert lines[1] == "warning: disk nearly full"
    assert json.loads(lines[2])["logger"] == exporter.name and len(lines) == 3


@dg.asset
def shouting_asset(context: dg.AssetExecutionContext) -> None:
    context.log.error("a simulation failed")


def test_a_run_console_logger_with_output_none_prints_nothing(capsys):
    job = dg.define_asset_job("shouting_job", selection=[shouting_asset])
    defs = dg.Definitions(assets=[shouting_asset], jobs=[job],
                          loggers={"console": logs.dagster_logger()})
    capsys.readouterr()
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("shouting_job").execute_in_process(
            instance=instance,
            run_config={"loggers": {"console": {"config": {"output": "none"}}}})
        kept = [r.event_log_entry.user_message for r in instance.get_records_for_run(
            result.run_id).records]
    assert result.success
    assert "a simulation failed" not in capsys.readouterr().err
    assert "a simulation failed" in kept  # in the run's event log
