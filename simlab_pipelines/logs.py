"""Structured logs: one JSON object a line, carrying the trace and simulation they belong to.

Every line has ``timestamp`` (ISO 8601, UTC, milliseconds, ``Z``), ``level``, ``logger``,
``message``, ``trace_id`` and ``span_id`` (of the current span, null outside one), and, when
known, ``experiment``, ``config_key``, ``replication``, ``run_id``, ``partition_key``: from
``log_context(...)`` or a call's ``extra=``. Other ``extra=`` keys are included as given; an
exception is one string field ``exception`` (the formatted traceback).

Only the stdlib and the OpenTelemetry *API* are used: importing this module is cheap.
"""

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "configure_logging", "log_context"]

CONTEXT_FIELDS = ("experiment", "config_key", "replication", "run_id", "partition_key")

_context: ContextVar[dict[str, Any] | None] = ContextVar("simlab_log_context", default=None)

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName",
}
# Keys extra= may not override (trace_id, span_id and the context fields it may).
_PROTECTED_KEYS = frozenset({"timestamp", "level", "logger", "message", "exception", "stack"})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (names from CONTEXT_FIELDS) to every log line emitted inside the block.

    Nested blocks add to (and may override) the outer fields; None values are ignored.
    """
    unknown = sorted(set(fields) - set(CONTEXT_FIELDS))
    if unknown:
        raise TypeError(f"log_context: unknown field(s) {', '.join(unknown)}; "
                        f"expected some of {', '.join(CONTEXT_FIELDS)}")
    merged = dict(_context.get() or {})
    merged.update({k: v for k, v in fields.items() if v is not None})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        line: dict[str, Any] = {
            "timestamp": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": None,
            "span_id": None,
        }
        # The handler formats in the thread that logged, so the current span is the caller's.
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            line["trace_id"] = trace.format_trace_id(ctx.trace_id)
            line["span_id"] = trace.format_span_id(ctx.span_id)
        line.update(_context.get() or {})
        for key, value in record.__dict__.items():
            if (key not in _RECORD_ATTRIBUTES and key not in _PROTECTED_KEYS
                    and not key.startswith("_")):
                line[key] = value  # extra= wins over log_context, and may set trace_id too
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs (its class marks it as ours)."""


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"configure_logging level={level!r}: expected DEBUG, INFO, WARNING, "
                         f"ERROR or CRITICAL")
    return value


def configure_logging(level: int | str = "INFO", stream: TextIO | None = None) -> None:
    """Make every log line of the process a JSON object (on ``stream``, default stderr).

    Installs one handler on the root logger (so the ``simlab`` hierarchy and libraries are
    covered) and removes plain ``StreamHandler``s there (e.g. from ``logging.basicConfig``), which
    would print the same lines as text; other handlers (files, pytest's capture) are kept.
    Idempotent: a second call only updates the level and the stream (and removes plain
    ``StreamHandler``s added since).
    """
    root = logging.getLogger()
    root.setLevel(_level(level))
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    ours = [h for h in root.handlers if isinstance(h, _JsonHandler)]
    if ours:
        if stream is not None:
            ours[0].setStream(stream)
        return
    handler = _JsonHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
