"""OpenTelemetry tracing for simlab: one span per simulation, linked to its run and batch.

Configuration comes only from the standard ``OTEL_*`` environment variables:

- ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``: where to export. With
  neither set, a real SDK ``TracerProvider`` is installed with *no* span processor: trace and span
  ids are still generated (and recorded in the results), nothing is exported, nothing is queued,
  and a simulation's span is not even built (``simulation_span``: its ids only, as the SDK would
  draw them; a processor added later, a test's, gets real spans again).
- ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` (the
  default, as the OTLP exporter specification recommends) or ``grpc``. ``http/json`` is not
  implemented by the Python SDK and is rejected.
- ``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``, ``..._COMPRESSION``, ``..._CERTIFICATE``,
  ``..._INSECURE``: read by the OTLP exporters themselves.
- ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` override the resource (the
  ``service_name`` argument is only a default); ``service.version`` defaults to the engine version.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``), read
  by the SDK. A span that is sampled out still has valid ids.
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default) or ``none``.
- ``OTEL_SDK_DISABLED=true``: no SDK spans at all; ``SpanInfo`` ids are then ``None``.
- ``OTEL_BSP_*``: the batch span processor's queue size, batch size and delay.

Pool workers: pass ``initializer=pool_initializer, initargs=worker_initargs()`` to a
``ProcessPoolExecutor``. Each worker gets its own provider and exporter (never the parent's, which a
fork would copy together with its HTTP connections and threads), runs every task under the
parent's span, and flushes its spans when it exits (multiprocessing workers leave through
``os._exit``, so ``atexit`` does not run there: a ``multiprocessing.util.Finalize`` does the flush).

Attribute hygiene: spans carry only the allow-listed attribute names below, with scalar values of
bounded size; nothing is ever read from the environment into an attribute. A failure's exception
event (type, message, stack trace) is bounded too (MAX_EXCEPTION_MESSAGE_CHARS,
MAX_STACKTRACE_CHARS).

Caveats:
- Call ``shutdown_tracing()`` in the parent at the end of a run, after the pool has shut down
  (``ProcessPoolExecutor.shutdown(wait=True)`` waits for the workers' flush).
- A worker's parent is fixed when the pool starts: use one pool per batch span, or pass a
  traceparent with each task and wrap it in ``attach_traceparent`` (the current span wins).
- A worker that is killed (SIGKILL, OOM, a broken pool) loses the spans still in its queue.
- With the collector unreachable, the exporter retries each batch for up to its timeout
  (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default) in its background thread. At exit
  (``shutdown_tracing``: a worker's finalizer, the main process's ``atexit``) the collector's
  address is tried first (a TCP connection, at most ``_PROBE_TIMEOUT`` seconds): when nothing
  answers, the export in progress is cut short and the queued spans are dropped, so a process
  without its collector exits within a second or two instead of waiting out every retry; when
  it answers, every queued span is flushed as before.
- The global OpenTelemetry provider is set once per process (an API rule): simlab's own spans
  always go through ``tracer()``, which follows reconfiguration; third-party ones may not.
- ``fork`` works (a child builds its own provider), but forking a process that runs exporter
  threads is deprecated from Python 3.12: prefer ``forkserver``/``spawn`` with
  ``worker_initargs()``.
"""

import atexit
import functools
import logging
import multiprocessing
import multiprocessing.util
import numbers
import os
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.version import ENGINE_VERSION

__all__ = [
    "BATCH_ATTRIBUTE_NAMES",
    "BATCH_SPAN_NAMES",
    "MAX_EXCEPTION_MESSAGE_CHARS",
    "MAX_LINKS",
    "MAX_STACKTRACE_CHARS",
    "SIMULATION_ATTRIBUTE_NAMES",
    "SIMULATION_SPAN_NAME",
    "SpanInfo",
    "attach_traceparent",
    "batch_span",
    "configure_tracing",
    "current_traceparent",
    "exporter_protocol",
    "parent_context",
    "pool_initializer",
    "shutdown_tracing",
    "simulation_attributes",
    "simulation_span",
    "summary_span",
    "tracer",
    "tracer_provider",
    "worker_initargs",
]

_log = logging.getLogger("simlab.telemetry")

SIMULATION_SPAN_NAME = "simlab.simulation"
BATCH_SPAN_NAMES = frozenset({"simlab.run", "simlab.batch", "simlab.sweep", "simlab.summary"})

# The only attribute names a simulation span may carry (plus ``simlab.param.<name>``).
SIMULATION_ATTRIBUTE_NAMES = frozenset({
    "simlab.experiment", "simlab.config_key", "simlab.replication", "simlab.seed.entropy",
    "simlab.seed.spawn_key", "simlab.model", "simlab.engine_version", "dagster.run_id",
    "dagster.partition_key", "simlab.simulated_ahead",
})
# The only attribute names a run/batch/sweep/summary span may carry.
BATCH_ATTRIBUTE_NAMES = frozenset({
    "simlab.experiment", "simlab.model", "simlab.config_key", "simlab.engine_version",
    "simlab.code_version", "dagster.run_id", "dagster.job_name", "dagster.partition_key",
    "simlab.partitions", "simlab.workers", "simlab.links.total",
    "simlab.links.dropped",
})
_PARAM_PREFIX = "simlab.param."
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_PARAMS = 32  # more parameters than any model has; bounds the attribute count of a span
MAX_PARAM_CHARS = 64  # a string parameter value is cut to this many characters
MAX_VALUE_CHARS = 256  # any other string value (keys, ids, names) is cut to this many
# A failure's exception event: the message is cut, the stack trace keeps its end (the innermost
# frames and the error), so a huge message or a deep recursion cannot bloat the span.
MAX_EXCEPTION_MESSAGE_CHARS = 1024
MAX_STACKTRACE_CHARS = 8192
MAX_SPAWN_KEY_LENGTH = 16  # spawn keys are (replication, [config_hash]); 16 is generous
# Span links of a summary span. 128 is also the SDK's default OTEL_SPAN_LINK_COUNT_LIMIT, beyond
# which it silently drops links; every link adds ~40 bytes to the span, and trace UIs list links
# one by one, so thousands of them (one per simulation) would make the span unreadable and, in
# big sweeps, larger than a backend accepts. The summary's full lineage lives in DuckDB anyway.
MAX_LINKS = 128
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SUPPORTED_PROTOCOLS = ("http/protobuf", "grpc")
# The flush of a worker runs in multiprocessing's first finalizer pass (priorities >= 0).
_FLUSH_EXIT_PRIORITY = 0
_FLUSH_TIMEOUT_MILLIS = 30_000
# At exit: how long the collector may take to accept a TCP connection before its spans are given
# up (a refused connection is immediate; a host that drops packets costs this much).
_PROBE_TIMEOUT = 1.0

_propagator = TraceContextTextMapPropagator()


class _State:
    """This process's tracing set-up; re-made in a child process (the pid tells them apart)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None  # the process that built `provider`
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer | None = None
        self.protocol: str | None = None
        self.exporter: _Exporter | None = None
        self.finalizer_pid: int | None = None
        self.atexit_pid: int | None = None
        self.worker_parent: otel_context.Context | None = None
        self.warned_keys: set[str] = set()

    def reinit_after_fork(self) -> None:
        # A lock held by another thread at fork time would stay locked forever in the child.
        self.lock = threading.Lock()


_state = _State()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_state.reinit_after_fork)


def _env(*names: str) -> str | None:
    """The first non-empty value among the environment variables ``names``."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _resource(service_name: str) -> Resource:
    """Our defaults, overridden by OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME."""
    defaults = Resource.create({SERVICE_NAME: service_name, SERVICE_VERSION: ENGINE_VERSION})
    return defaults.merge(OTELResourceDetector().detect())


class _Exporter(SpanExporter):
    """The OTLP exporter, which ``shutdown_tracing`` can cut short: ``drop()`` interrupts the
    retries of the export in progress (the exporter's own shutdown does) and fails every later
    batch at once, without a log line each."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.dropping = False
        self._closed = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.dropping:
            return SpanExportResult.FAILURE
        return self.inner.export(spans)

    def drop(self) -> None:
        self.dropping = True
        self.shutdown()

    def shutdown(self) -> None:
        with self._lock:  # once: a second call would log "already shutdown"
            if self._closed:
                return
            self._closed = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _collector_address(protocol: str) -> tuple[str, int] | None:
    """(host, port) of the collector the exporter sends to, from OTEL_*; None if unclear."""
    endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint is None:
        return None
    try:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        port = parts.port or (443 if parts.scheme == "https" else
                              4317 if protocol == "grpc" else 80)
    except ValueError:  # a malformed port
        return None
    return (parts.hostname, port) if parts.hostname else None


def _collector_answers(protocol: str) -> bool:
    """Whether the collector accepts a TCP connection within _PROBE_TIMEOUT seconds (True when
    its address is unclear: then the exporter's own timeouts decide, as before)."""
    address = _collector_address(protocol)
    if address is None:
        return True
    try:
        with socket.create_connection(address, timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _make_exporter(protocol: str) -> Any:
    """The OTLP span exporter for ``protocol``; it reads endpoint, headers, TLS... from OTEL_*."""
    # Imported here: the grpc stack is heavy and most processes export over HTTP or not at all.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def _build_provider(service_name: str) -> tuple[TracerProvider, str | None, _Exporter | None]:
    """A new SDK provider from the OTEL_* environment, the protocol it exports with and its
    exporter."""
    exporter_kind = (_env("OTEL_TRACES_EXPORTER") or "otlp").lower()
    if exporter_kind not in ("otlp", "none"):
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={exporter_kind!r}: simlab supports 'otlp' (the default) or 'none'"
        )
    protocol = (_env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").lower()
    if protocol not in _SUPPORTED_PROTOCOLS:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: supported protocols are "
            f"{', '.join(_SUPPORTED_PROTOCOLS)} (http/json is not implemented by the Python SDK)"
        )
    # The provider reads OTEL_TRACES_SAMPLER(_ARG), OTEL_SDK_DISABLED and OTEL_SPAN_*_LIMIT itself.
    # Not its own atexit shutdown: shutdown_tracing's, which does not wait for a missing collector.
    provider = TracerProvider(resource=_resource(service_name), shutdown_on_exit=False)
    endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    disabled = _env("OTEL_SDK_DISABLED") == "true"
    if endpoint is None or exporter_kind == "none" or disabled:
        return provider, None, None
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = _Exporter(_make_exporter(protocol))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, protocol, exporter


def configure_tracing(service_name: str = "simlab") -> None:
    """Set up tracing for this process from the OTEL_* environment; later calls do nothing.

    "Per process": a forked child does not reuse its parent's provider (its exporter's
    connections and thread belong to the parent); its first call builds its own. After
    ``shutdown_tracing()`` a new call builds a new provider (several runs in one process).
    Raises ValueError for an unsupported OTEL_EXPORTER_OTLP_PROTOCOL or OTEL_TRACES_EXPORTER.
    """
    pid = os.getpid()
    with _state.lock:
        if _state.pid == pid and _state.provider is not None:
            return
        provider, protocol, exporter = _build_provider(service_name)
        _state.provider, _state.protocol, _state.pid = provider, protocol, pid
        _state.exporter = exporter
        _state.tracer = provider.get_tracer("simlab", ENGINE_VERSION)
        _state.worker_parent = None
        # Make it the global provider too (for any third-party instrumentation), but only if
        # nobody set one: the API allows setting it once per process.
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        # A multiprocessing child leaves through os._exit: atexit (where the SDK flushes) never
        # runs, multiprocessing's finalizers do. The main process relies on the SDK's atexit.
        if multiprocessing.parent_process() is not None and _state.finalizer_pid != pid:
            multiprocessing.util.Finalize(None, shutdown_tracing, exitpriority=_FLUSH_EXIT_PRIORITY)
            _state.finalizer_pid = pid
        elif multiprocessing.parent_process() is None and _state.atexit_pid != pid:
            atexit.register(shutdown_tracing)  # in place of the provider's own (see above)
            _state.atexit_pid = pid
    _log.debug("tracing configured: service %s, export %s", service_name, protocol or "off")


def shutdown_tracing() -> None:
    """Export every finished span still queued and stop the exporter; safe to call twice.

    Call it at the end of a run (the parent process); pool workers do it by themselves at exit,
    and the main process at its exit. Spans started afterwards go to a new provider (made on
    first use). When the collector does not accept a connection, the queued spans are dropped
    rather than retried for the exporter's whole timeout (``_collector_answers``).
    """
    with _state.lock:
        mine = _state.pid == os.getpid()
        provider = _state.provider if mine else None
        exporter, protocol = (_state.exporter, _state.protocol) if mine else (None, None)
        _state.provider = _state.tracer = _state.protocol = _state.pid = None
        _state.exporter = _state.worker_parent = None
    if provider is None:
        return
    if exporter is not None and not _collector_answers(protocol or ""):
        address = _collector_address(protocol or "")
        _log.info("traces are not exported: no trace collector answers at %s; this process's "
                  "queued spans are dropped (results are unaffected)",
                  f"{address[0]}:{address[1]}" if address else "its endpoint")
        exporter.drop()
    else:
        provider.force_flush(_FLUSH_TIMEOUT_MILLIS)
    provider.shutdown()


def tracer_provider() -> TracerProvider:
    """This process's SDK provider (configured on first use), e.g. to add a test exporter."""
    if _state.pid != os.getpid() or _state.provider is None:
        configure_tracing()
    provider = _state.provider
    assert provider is not None  # configure_tracing just made it
    return provider


def tracer() -> trace.Tracer:
    """The simlab tracer of this process (configured on first use)."""
    if _state.pid != os.getpid() or _state.tracer is None:
        configure_tracing()
    assert _state.tracer is not None
    return _state.tracer


def exporter_protocol() -> str | None:
    """The OTLP protocol this process exports with, or None when nothing is exported."""
    if _state.pid != os.getpid():
        return None
    return _state.protocol


# --- context propagation ---------------------------------------------------------------------

_EXTRACTED: dict[str, otel_context.Context] = {}  # a worker sees its run's few traceparents


def _extract(traceparent: str | None) -> otel_context.Context | None:
    """A context whose current span is the remote parent ``traceparent``; None if absent/invalid."""
    if not traceparent:
        return None
    ctx = _EXTRACTED.get(traceparent)
    if ctx is not None:  # contexts are immutable: one parse serves every simulation of a run
        return ctx
    ctx = _propagator.extract({"traceparent": traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        _log.warning("ignoring malformed traceparent %r", traceparent[:MAX_VALUE_CHARS])
        return None
    if len(_EXTRACTED) >= 64:
        _EXTRACTED.clear()
    _EXTRACTED[traceparent] = ctx
    return ctx


def parent_context() -> otel_context.Context | None:
    """The context new simlab spans start under: the current one if it holds a span, else a pool
    worker's remembered parent (set by ``pool_initializer``), else None (a new trace)."""
    if trace.get_current_span().get_span_context().is_valid:
        return None  # None means "the current context" to the SDK
    if _state.pid == os.getpid():
        return _state.worker_parent
    return None


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (or of a worker's parent), None if none."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=parent_context())
    return carrier.get("traceparent")


@contextmanager
def attach_traceparent(traceparent: str | None) -> Iterator[None]:
    """Make the remote span ``traceparent`` the parent of spans started inside the block.

    None or a malformed value changes nothing (a warning is logged for a malformed one).
    """
    ctx = _extract(traceparent)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def worker_initargs(service_name: str = "simlab") -> tuple[str | None, str, dict[str, str]]:
    """``initargs`` for ``pool_initializer``: the current traceparent and the OTEL_* settings.

    The settings are passed explicitly because a ``forkserver`` worker inherits the environment
    of the fork server, which may have been started long before (and with other OTEL_* values).
    """
    otel_environ = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    return current_traceparent(), service_name, otel_environ


def pool_initializer(traceparent: str | None, service_name: str = "simlab",
                     otel_environ: Mapping[str, str] | None = None) -> None:
    """``ProcessPoolExecutor(initializer=...)``: trace this worker's tasks under ``traceparent``.

    Configures tracing in the worker (its own provider and exporter), attaches the parent for the
    worker's whole life (tasks run in the thread that ran the initializer) and remembers it for
    ``parent_context()``, and registers the flush that runs when the worker exits normally (pool
    shutdown, ``max_tasks_per_child``). ``otel_environ``, when given, replaces the worker's OTEL_*
    environment first. A worker that starts without logging handlers (``spawn``, ``forkserver``)
    logs JSON lines on stderr (``logs.configure_logging``), e.g. the exporter's warnings; a forked
    one keeps the handlers it inherited.
    """
    if not logging.getLogger().handlers:
        from simlab_pipelines.logs import configure_logging

        configure_logging("INFO")
    if otel_environ is not None:
        for name in [k for k in os.environ if k.startswith("OTEL_")]:
            del os.environ[name]
        os.environ.update(otel_environ)
    configure_tracing(service_name)
    parent = _extract(traceparent)
    with _state.lock:
        _state.worker_parent = parent
    if parent is not None:
        otel_context.attach(parent)  # never detached: the worker lives under this parent
    if _state.finalizer_pid != os.getpid():
        # Not a multiprocessing child (e.g. called directly): still flush at exit.
        multiprocessing.util.Finalize(None, shutdown_tracing, exitpriority=_FLUSH_EXIT_PRIORITY)
        _state.finalizer_pid = os.getpid()


# --- attribute hygiene -----------------------------------------------------------------------

def _text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters and encodable as UTF-8 (a lone surrogate would make
    the exporter fail the whole batch)."""
    value = value[:limit]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _scalar(value: Any, limit: int) -> bool | int | float | str | None:
    """An attribute value from ``value``: bool, int64, float or bounded str; None to drop it."""
    kind = type(value)  # exact-type fast path: ABC isinstance checks dominate the span's cost
    if kind is float or kind is bool:
        return value
    if kind is int and _INT64_MIN <= value <= _INT64_MAX:
        return value
    if kind is str and len(value) <= limit and value.isascii():
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        number = int(value)
        # OTLP integers are int64; a bigger one would fail the encoding of the whole batch.
        return number if _INT64_MIN <= number <= _INT64_MAX else _text(str(number), limit)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return _text(value, limit)
    return None


def _spawn_key_text(spawn_key: Sequence[int] | str) -> str:
    """A spawn key as "0" or "3,1234"."""
    if isinstance(spawn_key, str):
        return _text(spawn_key, MAX_VALUE_CHARS)
    return ",".join(str(int(part)) for part in tuple(spawn_key)[:MAX_SPAWN_KEY_LENGTH])


@functools.lru_cache(maxsize=64)  # models are fixed for the life of the process
def _declared_params(model: str) -> frozenset[str] | None:
    """The parameter names ``model`` declares, or None if the engine does not know it."""
    from engine.registry import get_model

    try:
        return frozenset(p.name for p in get_model(model).parameters)
    except KeyError:
        return None


def simulation_attributes(*, experiment: str, config_key: str, replication: int,
                          seed_entropy: int, spawn_key: Sequence[int] | str, model: str,
                          params: Mapping[str, Any], engine_version: str = ENGINE_VERSION,
                          run_id: str | None = None, partition_key: str | None = None,
                          simulated_ahead: bool = False) -> dict[str, Any]:
    """The attributes of a ``simlab.simulation`` span: allow-listed names, bounded values.

    A parameter becomes ``simlab.param.<name>`` only if its name matches ``[a-z][a-z0-9_]*``, the
    model declares it (when the engine knows the model) and its value is a bool, number or string
    (strings cut to MAX_PARAM_CHARS); at most MAX_PARAMS of them, by name. None values (e.g. an
    infinite capacity) are left out. Seeds beyond int64 become strings. ``simulated_ahead``: the
    simulation ran during the sweep's start-up, before its run existed (``simlab.simulated_ahead``
    true; the span then records it, not the simulating).
    """
    raw: dict[str, Any] = {
        "simlab.experiment": experiment,
        "simlab.config_key": config_key,
        "simlab.replication": replication,
        "simlab.seed.entropy": seed_entropy,
        "simlab.seed.spawn_key": _spawn_key_text(spawn_key),
        "simlab.model": model,
        "simlab.engine_version": engine_version,
        "dagster.run_id": run_id,
        "dagster.partition_key": partition_key,
        "simlab.simulated_ahead": True if simulated_ahead else None,
    }
    attributes = {k: v for k, v in ((k, _scalar(v, MAX_VALUE_CHARS)) for k, v in raw.items())
                  if v is not None}
    declared = _declared_params(model)
    kept = 0
    for name in sorted(params):
        if kept == MAX_PARAMS:
            break
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
            continue
        if declared is not None and name not in declared:
            continue
        value = _scalar(params[name], MAX_PARAM_CHARS)
        if value is not None:
            attributes[_PARAM_PREFIX + name] = value
            kept += 1
    return attributes


def _clean(attributes: Mapping[str, Any] | None, allowed: frozenset[str]) -> dict[str, Any]:
    """Only the allowed names (and bounded ``simlab.param.*``), with bounded scalar values."""
    clean: dict[str, Any] = {}
    params = 0
    for key, value in (attributes or {}).items():
        if key in allowed:
            scalar = _scalar(value, MAX_VALUE_CHARS)
        elif (isinstance(key, str) and key.startswith(_PARAM_PREFIX) and params < MAX_PARAMS
              and _PARAM_NAME.fullmatch(key[len(_PARAM_PREFIX):])):
            scalar = _scalar(value, MAX_PARAM_CHARS)
            params += scalar is not None
        else:
            scalar = None
            if key not in _state.warned_keys and len(_state.warned_keys) < 100:
                _state.warned_keys.add(key)
                _log.warning("span attribute %r is not allow-listed: dropped", str(key)[:100])
        if scalar is not None:
            clean[key] = scalar
    return clean


# --- spans -----------------------------------------------------------------------------------

class SpanInfo:
    """The ids of a simlab span (lowercase hex; None only when OTEL_SDK_DISABLED=true) and its
    simulation-time events."""

    __slots__ = ("span", "span_id", "trace_id")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        ctx = span.get_span_context()
        self.trace_id: str | None = trace.format_trace_id(ctx.trace_id) if ctx.is_valid else None
        self.span_id: str | None = trace.format_span_id(ctx.span_id) if ctx.is_valid else None

    def warmup_end(self, sim_time: float) -> None:
        """Record the end of the warm-up at simulated time ``sim_time``."""
        self.span.add_event("simlab.warmup_end", {"simlab.sim_time": float(sim_time)})

    def run_end(self, sim_time: float, events: int) -> None:
        """Record the end of the run at ``sim_time`` after ``events`` simulation events."""
        self.span.add_event("simlab.run_end",
                            {"simlab.sim_time": float(sim_time), "simlab.events": int(events)})

    def __repr__(self) -> str:
        return f"SpanInfo(trace_id={self.trace_id!r}, span_id={self.span_id!r})"


def _exception_attributes(exc: BaseException) -> dict[str, str]:
    """The bounded message and stack trace of the ``exception`` event of a failed span."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the original failure
        message = f"<unprintable {type(exc).__name__}>"
    stack = "".join(traceback.format_exception(exc))
    if len(stack) > MAX_STACKTRACE_CHARS:
        # Too long: this exception's own frames, the innermost kept, then its (cut) error line;
        # chained causes are left out.
        error = traceback.TracebackException.from_exception(exc)
        head, last = "Traceback (most recent call last):\n", "".join(error.format_exception_only())
        last = _text(last, MAX_EXCEPTION_MESSAGE_CHARS + 100).rstrip("\n") + "\n"
        frames = "".join(error.stack.format())
        room = max(0, MAX_STACKTRACE_CHARS - len(head) - len(last) - 4)
        if len(frames) > room:
            frames = "...\n" + frames[len(frames) - room:]
        stack = head + frames + last
    return {"exception.message": _text(message, MAX_EXCEPTION_MESSAGE_CHARS),
            "exception.stacktrace": _text(stack, MAX_STACKTRACE_CHARS)}


@contextmanager
def _span(name: str, attributes: dict[str, Any],
          links: Sequence[Link] = ()) -> Iterator[SpanInfo]:
    """Start ``name`` as the current span; on an exception record it, set ERROR and re-raise."""
    with tracer().start_as_current_span(
        name, context=parent_context(), attributes=attributes, links=links,
        record_exception=False, set_status_on_exception=False,
    ) as span:
        try:
            yield SpanInfo(span)
        except Exception as exc:
            span.record_exception(exc, attributes=_exception_attributes(exc))
            span.set_status(Status(StatusCode.ERROR,
                                   _text(f"{type(exc).__name__}: {exc}", MAX_VALUE_CHARS)))
            raise


@contextmanager
def simulation_span(attributes: Mapping[str, Any] | Callable[[], Mapping[str, Any]]
                    ) -> Iterator[SpanInfo]:
    """A ``simlab.simulation`` span around one simulation, child of the current span (or of the
    pool worker's parent). ``attributes`` should come from ``simulation_attributes`` (or be a
    function returning them, called only when the span is recorded); names outside the
    allow-list are dropped anyway.

    When no span processor would see it (no exporter, none added), the span is not built: its
    ids are drawn as the SDK would draw them (the parent's trace id, a new span id, the sampler's
    flags) and it is the current span inside, so results and a command's TRACEPARENT carry the
    same ids, at a fraction of the cost (an SDK span with its attributes and events was ~40 % of
    a worker's time for a short model)."""
    build = attributes if callable(attributes) else lambda: attributes
    provider = tracer_provider()
    if not _recorded(provider):
        with _unrecorded_span(provider, build) as info:
            yield info
        return
    with _span(SIMULATION_SPAN_NAME, _clean(build(), SIMULATION_ATTRIBUTE_NAMES)) as info:
        yield info


def _recorded(provider: TracerProvider) -> bool:
    """Whether a span started now would reach a span processor (an exporter, a test's), or the
    SDK is disabled (then the SDK's own no-op spans give no ids): True when unsure."""
    processors = getattr(getattr(provider, "_active_span_processor", None),
                         "_span_processors", None)
    return processors is None or bool(processors) or isinstance(_state.tracer, trace.NoOpTracer)


class _UnrecordedSpan(trace.NonRecordingSpan):
    """A span nothing records, whose attributes are built only when asked (by a log line
    inside it: ``logs`` takes a line's experiment, replication... from them)."""

    def __init__(self, context: SpanContext, build: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__(context)
        self._build = build
        self._built: dict[str, Any] | None = None

    @property
    def attributes(self) -> dict[str, Any]:
        if self._built is None:
            self._built = _clean(self._build(), SIMULATION_ATTRIBUTE_NAMES)
        return self._built


@contextmanager
def _unrecorded_span(provider: TracerProvider, build: Callable[[], Mapping[str, Any]]
                     ) -> Iterator[SpanInfo]:
    """The current span for the block, with the ids and flags the SDK would give it, and no
    SDK span behind it (nothing would see one)."""
    context = parent_context()
    parent = trace.get_current_span(context).get_span_context()
    ids = provider.id_generator
    trace_id = parent.trace_id if parent.is_valid else ids.generate_trace_id()
    sampling = provider.sampler.should_sample(context, trace_id, SIMULATION_SPAN_NAME)
    flags = TraceFlags.SAMPLED if sampling.decision.is_sampled() else TraceFlags.DEFAULT
    if parent.trace_flags.random_trace_id if parent.is_valid else ids.is_trace_id_random():
        flags |= TraceFlags.RANDOM_TRACE_ID
    span = _UnrecordedSpan(SpanContext(
        trace_id, ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(flags),
        trace_state=sampling.trace_state), build)
    token = otel_context.attach(trace.set_span_in_context(span, context))
    try:
        yield SpanInfo(span)
    finally:
        otel_context.detach(token)


def _links(pairs: Sequence[tuple[str | None, str | None]], max_links: int
           ) -> tuple[list[Link], int]:
    """Up to ``max_links`` links, evenly spread over the valid pairs; and how many were valid."""
    contexts = []
    for trace_hex, span_hex in pairs:
        try:
            trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue  # e.g. None from a run with OTEL_SDK_DISABLED
        if len(trace_hex) != 32 or len(span_hex) != 16 or not trace_id or not span_id:
            continue
        contexts.append(SpanContext(trace_id, span_id, is_remote=True,
                                    trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    total = len(contexts)
    if total > max_links:
        # Evenly spread rather than the first ones, so every configuration tends to be represented.
        contexts = [contexts[i * total // max_links] for i in range(max_links)]
    return [Link(c) for c in contexts], total


@contextmanager
def batch_span(name: str, attributes: Mapping[str, Any] | None = None, *,
               links: Sequence[tuple[str | None, str | None]] = (),
               max_links: int = MAX_LINKS) -> Iterator[SpanInfo]:
    """A run- or batch-level span (``name`` in BATCH_SPAN_NAMES), the current span inside.

    ``links`` are (trace_id_hex, span_id_hex) pairs of related spans (e.g. the simulations a
    summary reads); at most ``max_links`` are kept (see MAX_LINKS), evenly spread, and the span
    records ``simlab.links.total``/``simlab.links.dropped``. Invalid pairs are skipped.
    """
    if name not in BATCH_SPAN_NAMES:
        raise ValueError(f"batch_span name {name!r}: expected one of {sorted(BATCH_SPAN_NAMES)}")
    if max_links < 0:
        raise ValueError(f"batch_span max_links={max_links}: must be >= 0")
    clean = _clean(attributes, BATCH_ATTRIBUTE_NAMES)
    span_links: list[Link] = []
    if links:
        span_links, total = _links(links, max_links)
        clean["simlab.links.total"] = total
        clean["simlab.links.dropped"] = total - len(span_links)
    with _span(name, clean, span_links) as info:
        yield info


@contextmanager
def summary_span(links: Sequence[tuple[str | None, str | None]], max_links: int = MAX_LINKS,
                 attributes: Mapping[str, Any] | None = None) -> Iterator[SpanInfo]:
    """The ``simlab.summary`` span, linked to (at most ``max_links`` of) the simulations it reads."""
    with batch_span("simlab.summary", attributes, links=links, max_links=max_links) as info:
        yield info
