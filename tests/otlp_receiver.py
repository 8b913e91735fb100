"""A real OTLP/HTTP trace receiver for tests: decodes what exporters send and keeps the spans.

``with otlp_receiver() as receiver:`` serves ``POST /v1/traces`` (protobuf, gzip/deflate or
plain) on 127.0.0.1 at an ephemeral port; ``receiver.endpoint`` is the base URL to put in
``OTEL_EXPORTER_OTLP_ENDPOINT``; ``receiver.spans()`` returns the decoded spans received so far and
``receiver.headers`` the request headers of each accepted request (names lowercased, e.g. to check
``OTEL_EXPORTER_OTLP_HEADERS``). Bounded: request bodies over MAX_BODY_BYTES are refused, at most
MAX_SPANS spans and MAX_REQUESTS requests' headers are kept, and the server stops by itself after
``lifetime`` seconds (or at the end of the ``with`` block).
"""

import gzip
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_SPANS = 100_000
MAX_REQUESTS = 10_000


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it (ids as lowercase hex, "" for no parent)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: str  # "UNSET", "OK" or "ERROR"
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str]]
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterator[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _decode(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        attributes=_attributes(span.attributes),
        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
        events=[(e.name, _attributes(e.attributes)) for e in span.events],
        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        resource=resource,
    )


class Receiver:
    """The running receiver: its endpoint and what it got."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        self.rejected = 0
        self.encodings: Counter[str] = Counter()  # Content-Encoding of accepted requests
        self.headers: list[dict[str, str]] = []  # of accepted requests, names lowercased
        host, port = server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"

    def _add(self, request: ExportTraceServiceRequest, encoding: str,
             headers: dict[str, str]) -> None:
        decoded = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                decoded.extend(_decode(span, resource) for span in scope_spans.spans)
        with self._lock:
            self.requests += 1
            self.encodings[encoding or "identity"] += 1
            if len(self.headers) < MAX_REQUESTS:
                self.headers.append(headers)
            self._spans.extend(decoded[: MAX_SPANS - len(self._spans)])

    def spans(self, name: str | None = None) -> list[ReceivedSpan]:
        """The spans received so far (only those called ``name`` if given)."""
        with self._lock:
            return [s for s in self._spans if name is None or s.name == name]

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool],
                 timeout: float = 10.0) -> bool:
        """Poll until ``predicate(spans)`` holds; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.spans()):
                return True
            time.sleep(0.02)
        return predicate(self.spans())


def _handler(receiver_ref: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            receiver = receiver_ref[0]
            length = int(self.headers.get("Content-Length") or 0)
            if self.path.rstrip("/") != "/v1/traces":
                self.rfile.read(length)
                receiver.rejected += 1
                self._reply(404)
                return
            if length > MAX_BODY_BYTES:
                receiver.rejected += 1
                self.close_connection = True
                self._reply(413)
                return
            body = self.rfile.read(length)
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
            except Exception:
                receiver.rejected += 1
                self._reply(400)
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver._add(request, encoding, headers)
            self._reply(200, ExportTraceServiceResponse().SerializeToString())

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


@contextmanager
def otlp_receiver(lifetime: float = 120.0) -> Iterator[Receiver]:
    """Run a receiver for the ``with`` block (and at most ``lifetime`` seconds)."""
    receiver_ref: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver_ref))
    server.daemon_threads = True
    receiver = Receiver(server)
    receiver_ref.append(receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="otlp-receiver", daemon=True)
    thread.start()
    timer = threading.Timer(lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield receiver
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)
