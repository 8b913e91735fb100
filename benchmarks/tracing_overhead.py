"""Benchmark: what tracing costs a sweep, exporting over OTLP/HTTP vs with no endpoint set.

The sweep of ``sweep_throughput.py`` (mmck, servers 1..10 x capacity 20.., 100 replications, the
horizon calibrated to ~``--target-ms`` CPU per simulation) through the whole ``simlab sweep``
command on a fresh local instance each time, run two ways, interleaved (off, on, off, on, ...):

- off: no ``OTEL_*`` variable set (spans and ids are still made and recorded, nothing exported);
- on: ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a local receiver, protocol ``http/protobuf``
  (the SDK's ``BatchSpanProcessor`` defaults). The receiver is a small HTTP server on 127.0.0.1
  in a thread of this benchmark process: it accepts ``POST /v1/traces``, decodes the protobuf
  ``ExportTraceServiceRequest`` (opentelemetry-proto) and counts the spans by name. Its decoding
  runs on the same 2 cores as the sweep, so it is counted against tracing (a pessimistic set-up).

Each exporting run is checked: the receiver got exactly one ``simlab.simulation`` span per
simulation, and their (trace id, span id) pairs are exactly those in DuckDB's ``replications``
table. Medians are reported and written to ``benchmarks/results/tracing_overhead.json``.

    .venv/bin/python benchmarks/tracing_overhead.py --configs 50 --replications 100 \\
        --target-ms 50 --repeats 3

``--help`` lists the options.
"""

import gzip
import json
import shutil
import statistics
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sweep_throughput import (
    EXPERIMENT,
    become_subreaper,
    calibrate_horizon,
    load,
    run_simlab,
    sweep_arguments,
    write_experiment,
)

from simlab_pipelines.experiments import load_experiment

SIMULATION_SPAN = "simlab.simulation"
MAX_BODY_BYTES = 64 * 1024 * 1024


class Receiver:
    """What the receiver got: spans by name, the simulation spans' ids, requests."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.names: Counter[str] = Counter()
        self.simulation_ids: list[tuple[str, str]] = []
        self.requests = 0
        self.rejected = 0
        self.cpu_seconds = 0.0  # CPU the handler threads spent on requests (time.thread_time)

    def add(self, request: ExportTraceServiceRequest) -> None:
        names: Counter[str] = Counter()
        ids = []
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    names[span.name] += 1
                    if span.name == SIMULATION_SPAN:
                        ids.append((span.trace_id.hex(), span.span_id.hex()))
        with self.lock:
            self.requests += 1
            self.names.update(names)
            self.simulation_ids.extend(ids)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            start = time.thread_time()
            try:
                self._post()
            finally:
                with receiver.lock:
                    receiver.cpu_seconds += time.thread_time() - start

        def _post(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.path.rstrip("/") != "/v1/traces" or length > MAX_BODY_BYTES:
                receiver.rejected += 1
                self.close_connection = True
                self._reply(404 if length <= MAX_BODY_BYTES else 413)
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
            receiver.add(request)
            self._reply(200, ExportTraceServiceResponse().SerializeToString())

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the benchmark's output

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP trace receiver on an ephemeral 127.0.0.1 port for the ``with`` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host, port = server.server_address[:2]
    receiver = Receiver(f"http://{host}:{port}")
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def database_ids(db: Path) -> list[tuple[str, str]]:
    """(trace_id, span_id) of every replication of the benchmark experiment in DuckDB."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return [tuple(row) for row in con.execute(
            "SELECT trace_id, span_id FROM replications WHERE experiment = ?",
            [EXPERIMENT]).fetchall()]
    finally:
        con.close()


def run_exporting(path: Path, workers: int, total: int) -> tuple[float, dict[str, Any]]:
    """One sweep exporting to a fresh receiver; raises unless every simulation span arrived."""
    with otlp_receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        seconds, detail = run_simlab(path, workers, extra_env=env, expected=total,
                                     inspect=database_ids)
        # The sweep process and its pool workers flush before they exit, and the receiver counts
        # a request before it answers it: everything has arrived once the command has returned.
        with receiver.lock:
            ids = list(receiver.simulation_ids)
            names = dict(receiver.names)
            requests, rejected = receiver.requests, receiver.rejected
            receiver_cpu = receiver.cpu_seconds
    in_db = detail.pop("inspected")
    if len(ids) != total or len(set(ids)) != total:
        raise RuntimeError(f"receiver got {len(ids)} {SIMULATION_SPAN} spans "
                           f"({len(set(ids))} distinct), expected {total}")
    if set(ids) != set(in_db):
        raise RuntimeError(f"{len(set(ids) ^ set(in_db))} simulation spans differ between the "
                           "receiver and DuckDB's replications table")
    detail.update({"spans_by_name": names, "requests": requests, "rejected": rejected,
                   "receiver_cpu_seconds": receiver_cpu,
                   "simulation_spans_match_duckdb": True})
    return seconds, detail


def main() -> None:
    args = sweep_arguments(__doc__).parse_args()
    subreaper = become_subreaper()

    workdir = Path(tempfile.mkdtemp(prefix="simlab-bench-tracing-"))
    horizon = args.horizon or calibrate_horizon(args.target_ms)
    path = write_experiment(workdir, args.configs, args.replications, horizon)
    spec = load_experiment(path)
    total = len(spec.configurations_list()) * spec.replications
    print(f"{total} simulations (horizon {horizon}, warm-up {spec.resolved_warmup}), "
          f"{args.workers} workers, {args.repeats} repeats; load {load()}", flush=True)

    # Warm-up (discarded), both ways, on a small experiment.
    (workdir / "warm").mkdir()
    small = write_experiment(workdir / "warm", 10, 4, horizon)
    run_simlab(small, args.workers, expected=40)
    run_exporting(small, args.workers, 40)

    off: list[float] = []
    on: list[float] = []
    details: list[dict[str, Any]] = []
    loads: list[str] = []
    for i in range(args.repeats):
        loads.append(load())
        seconds, detail = run_simlab(path, args.workers, expected=total)
        off.append(seconds)
        loads.append(load())
        seconds, exporting = run_exporting(path, args.workers, total)
        on.append(seconds)
        details.append({"off": detail, "on": exporting})
        loads.append(load())
        print(f"  repeat {i + 1}: no endpoint {off[-1]:.1f} s ({detail['cpu_seconds']:.0f} CPU-s), "
              f"exporting {on[-1]:.1f} s ({exporting['cpu_seconds']:.0f} CPU-s); "
              f"receiver: {exporting['spans_by_name']} in {exporting['requests']} requests, "
              f"all {total} {SIMULATION_SPAN} spans match DuckDB (load {' -> '.join(loads[-3:])})",
              flush=True)
    off_cpu = [d["off"]["cpu_seconds"] for d in details]
    on_cpu = [d["on"]["cpu_seconds"] for d in details]
    result: dict[str, Any] = {
        "simulations": total, "horizon": horizon, "warmup": spec.resolved_warmup,
        "workers": args.workers, "off_seconds": off, "on_seconds": on,
        "off_median": statistics.median(off), "on_median": statistics.median(on),
        "cpu_of_descendants_counted": subreaper, "off_cpu_seconds": off_cpu,
        "on_cpu_seconds": on_cpu,
        "on_over_off_cpu": statistics.median(on_cpu) / statistics.median(off_cpu),
        "per_repeat_on_over_off": [b / a for a, b in zip(off, on, strict=True)],
        "runs": details, "load_average": loads, "load_average_end": load(),
    }
    result["on_over_off"] = result["on_median"] / result["off_median"]
    result["tracing_share_of_wall"] = (result["on_median"] - result["off_median"]) / result["on_median"]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "tracing_overhead.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
