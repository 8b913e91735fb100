"""Structured logs: one JSON object a line, carrying the trace and simulation they belong to.

Every line has ``timestamp`` (ISO 8601, UTC, milliseconds, ``Z``), ``level``, ``logger``,
``message``, ``trace_id`` and ``span_id`` (of the current span, null outside one), and, when
known, ``experiment``, ``config_key``, ``replication``, ``run_id``, ``partition_key``. Those come,
weakest first, from the current simlab span's attributes (inside a ``simlab.simulation`` span all
five are known without any call here), from ``log_context(...)``, and from a call's ``extra=``.
Other ``extra=`` keys are included as given; an exception is one string field ``exception`` (the
formatted traceback).

Two ways in, so that both kinds of log line of a pipeline process are JSON:

- ``configure_logging()``: every Python ``logging`` record of the process (simlab's loggers, the
  OpenTelemetry exporter's, other libraries') goes through one JSON handler on the root logger.
  Pool workers call it themselves (``telemetry.pool_initializer``).
- ``dagster_logger()``: a Dagster logger definition to register as the ``console`` logger of the
  jobs (``Definitions(loggers={"console": dagster_logger()})``). Dagster sends ``context.log``
  lines and its own run events (step started, materialization, failure...) to a job's loggers, not
  to Python's root logger; this one prints them as the same JSON, with ``run_id``, ``job_name``,
  ``step_key``, ``dagster_event`` and, from the run's tags, ``experiment`` (``simlab/experiment``)
  and ``partition_key``/``config_key``/``replication`` (single-partition runs).

Two formats (``SIMLAB_LOG_FORMAT``, or ``configure_logging(fmt=...)``): ``json`` (the default)
and ``text``, for a person at a terminal: ``level: message`` lines, and a job's run lines not
printed at all (they are in the run's event log, which the UI shows; ``simlab sweep`` prints its
own account of what failed). ``simlab sweep`` is ``text`` unless given ``--log-format json``.

Only the stdlib and the OpenTelemetry *API* are imported at module level (Dagster only inside
``dagster_logger``): importing this module is cheap, pool workers included.
"""

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

__all__ = ["CONTEXT_FIELDS", "FORMATS", "JsonFormatter", "configure_logging", "dagster_logger",
           "log_context", "log_format", "run_logger_config"]

FORMATS = ("json", "text")
FORMAT_VARIABLE = "SIMLAB_LOG_FORMAT"

CONTEXT_FIELDS = ("experiment", "config_key", "replication", "run_id", "partition_key")

_context: ContextVar[dict[str, Any] | None] = ContextVar("simlab_log_context", default=None)

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName",
}
# Keys extra= may not override (trace_id, span_id and the context fields it may).
_PROTECTED_KEYS = frozenset({"timestamp", "level", "logger", "message", "exception", "stack"})
# What Dagster puts on the records it hands to a job's loggers (dagster._core.log_manager):
# replaced by the plain fields below, never dumped (they hold whole events and run tags).
_DAGSTER_META = "dagster_meta"
_DAGSTER_KEYS = frozenset({_DAGSTER_META, "dagster_event", "dagster_event_batch_metadata"})
# Span attribute -> log field, for lines logged inside a simlab span.
_SPAN_FIELDS = (("simlab.experiment", "experiment"), ("simlab.config_key", "config_key"),
                ("simlab.replication", "replication"), ("dagster.run_id", "run_id"),
                ("dagster.partition_key", "partition_key"))
# Run tag -> log field, for Dagster's lines.
_TAG_FIELDS = (("simlab/experiment", "experiment"), ("dagster/partition", "partition_key"),
               ("dagster/partition/config", "config_key"),
               ("dagster/partition/replication", "replication"))


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


def _span_fields(span: trace.Span) -> dict[str, Any]:
    """The context fields among a recording SDK span's attributes (none for other spans)."""
    attributes = getattr(span, "attributes", None)  # the API's spans have none; SDK spans do
    if not attributes:
        return {}
    return {field: attributes[name] for name, field in _SPAN_FIELDS if name in attributes}


def _dagster_fields(meta: Mapping[str, Any], line: dict[str, Any]) -> None:
    """Replace Dagster's composed message with its own parts, as separate fields."""
    tags = meta.get("job_tags") or {}
    for tag, field in _TAG_FIELDS:
        value = tags.get(tag)
        if value:
            line[field] = int(value) if field == "replication" and value.isdigit() else value
    if meta.get("orig_message") is not None:
        line["message"] = str(meta["orig_message"])
    for key in ("run_id", "job_name", "step_key"):
        if meta.get(key):
            line[key] = meta[key]
    event = meta.get("dagster_event")
    if event is not None:
        line["dagster_event"] = getattr(event, "event_type_value", None)
        error = getattr(getattr(event, "event_specific_data", None), "error", None)
        if error is not None:  # a step failure: Dagster appends it to the composed message
            line["exception"] = (getattr(event.event_specific_data, "error_display_string", None)
                                 or error.to_string())


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
        span = trace.get_current_span()
        ctx = span.get_span_context()
        if ctx.is_valid:
            line["trace_id"] = trace.format_trace_id(ctx.trace_id)
            line["span_id"] = trace.format_span_id(ctx.span_id)
            line.update(_span_fields(span))
        meta = record.__dict__.get(_DAGSTER_META)
        if isinstance(meta, Mapping):
            _dagster_fields(meta, line)
        line.update(_context.get() or {})
        for key, value in record.__dict__.items():
            if (key not in _RECORD_ATTRIBUTES and key not in _PROTECTED_KEYS
                    and key not in _DAGSTER_KEYS and not key.startswith("_")):
                line[key] = value  # extra= wins over log_context, and may set trace_id too
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``level: message`` (and the exception's last line), for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text += f" ({type(error).__name__}: {error})"
        return text


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs (its class marks it as ours, whichever format)."""


def _not_printed_below_root(record: logging.LogRecord) -> bool:
    """False for a record a handler below the root has handled already (e.g. the ``dagster``
    logger's own console handler in Dagster's CLI processes), so no line is printed twice."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    root = logging.getLogger()
    while logger is not None and logger is not root:
        # A NullHandler prints nothing (libraries add one to their loggers, as logging advises).
        if any(type(h) is not logging.NullHandler for h in logger.handlers):
            return False
        if not logger.propagate:
            break
        logger = logger.parent
    return True


def _export_errors_once(record: logging.LogRecord) -> bool:
    """In text format, the first OpenTelemetry export error of this process, reworded, and no
    later one: with the collector down the exporter logs a line every few seconds in every
    process, which buried the sweep's own lines. JSON lines are all kept."""
    if (_FORMAT["current"] != "text" or not record.name.startswith("opentelemetry")
            or "export" not in record.getMessage().lower()):
        return True
    if _EXPORT_ERRORS["said"]:
        return False
    _EXPORT_ERRORS["said"] = True
    record.msg = (f"traces are not exported ({record.getMessage()[:300]}); later export errors "
                  "of this process are not shown, and results are unaffected")
    record.args = ()
    return True


_EXPORT_ERRORS = {"said": False}  # this process has printed its export error


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"log level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def log_format(value: str | None = None) -> str:
    """``value``, else ``SIMLAB_LOG_FORMAT``, else ``json``; ValueError naming it if unknown."""
    chosen = (value or os.environ.get(FORMAT_VARIABLE) or "json").lower()
    if chosen not in FORMATS:
        source = "log format" if value else FORMAT_VARIABLE
        raise ValueError(f"{source} {chosen!r}: expected one of {', '.join(FORMATS)}")
    return chosen


def configure_logging(level: int | str = "INFO", stream: TextIO | None = None,
                      fmt: str | None = None) -> None:
    """Make every log line of the process a JSON object (on ``stream``, default stderr), or a
    ``level: message`` line with ``fmt="text"`` (default: ``log_format()``).

    Installs one handler on the root logger (so the ``simlab`` hierarchy and libraries are
    covered) and removes plain ``StreamHandler``s there (e.g. from ``logging.basicConfig``), which
    would print the same lines as text; other handlers (files, pytest's capture) are kept. A
    record that a logger below the root has its own handler for (Dagster's ``dagster`` logger in
    its CLI processes) is left to that handler: it is not printed twice. Python warnings
    (``warnings.warn``) become log records too (logger ``py.warnings``), so they print as JSON.
    Idempotent: a second call only updates the level, the stream and the format (and removes
    plain ``StreamHandler``s added since).
    """
    chosen = log_format(fmt)
    root = logging.getLogger()
    root.setLevel(_level(level))
    logging.captureWarnings(True)
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    ours = [h for h in root.handlers if isinstance(h, _JsonHandler)]
    if ours:
        handler = ours[0]
        if stream is not None:
            handler.setStream(stream)
    else:
        handler = _JsonHandler(stream if stream is not None else sys.stderr)
        handler.addFilter(_not_printed_below_root)
        handler.addFilter(_export_errors_once)
        root.addHandler(handler)
    handler.setFormatter(TextFormatter() if chosen == "text" else JsonFormatter())
    _FORMAT["current"] = chosen


# The format configure_logging chose last in this process: what run_logger_config follows.
_FORMAT = {"current": "json"}


def run_logger_config(level: str = "WARNING") -> dict[str, Any]:
    """Run config for a job's ``console`` logger (``dagster_logger``) in this process: its lines
    at ``level`` as JSON on stderr, or, after ``configure_logging(fmt="text")``, not printed
    (they stay in the run's event log)."""
    output = "stderr" if _FORMAT["current"] == "json" else "none"
    return {"loggers": {"console": {"config": {"log_level": level, "output": output}}}}


def dagster_logger() -> Any:
    """A Dagster ``LoggerDefinition`` printing a job's log lines as JSON on stderr.

    Register it as the jobs' ``console`` logger; it takes the same config as Dagster's default
    console logger (``log_level``, default INFO; ``name``, default ``dagster``), so run configs
    written for that one (``loggers: {console: {config: {log_level: WARNING}}}``) keep working,
    and ``output``: ``stderr`` (default) or ``none`` (the lines stay in the run's event log only).
    """
    import dagster as dg

    @dg.logger(
        {"log_level": dg.Field(str, is_required=False, default_value="INFO",
                               description="The logger's threshold."),
         "name": dg.Field(str, is_required=False, default_value="dagster",
                          description="The logger's name (the `logger` field of each line)."),
         "output": dg.Field(str, is_required=False, default_value="stderr",
                            description="stderr, or none: only the run's event log has them.")},
        description="simlab's JSON console logger: one object a line, with trace and span ids.",
    )
    def simlab_json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
        config = init_context.logger_config
        # A Logger made directly is outside logging's hierarchy: nothing propagates to the root
        # logger, so a line is printed once even when configure_logging() is active too.
        logger = logging.Logger(config["name"], _level(config["log_level"]))
        if config["output"] == "none":  # a handler that drops them: no "last resort" printing
            logger.addHandler(logging.NullHandler())
            return logger
        if config["output"] != "stderr":
            raise ValueError(f"loggers.console.config.output {config['output']!r}: expected "
                             "stderr or none")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        return logger

    return simlab_json_console_logger
