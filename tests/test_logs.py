"""Structured logs: one JSON object a line, with the current span's ids and the simulation context."""

import io
import json
import logging
import os
from datetime import datetime

import pytest

from simlab_pipelines import telemetry
from simlab_pipelines.logs import configure_logging, log_context

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
    assert [line["message"] for line in _lines(output)] == ["once"]
    assert text_handler not in root.handlers
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD")
