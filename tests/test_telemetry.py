"""Tracing: span names, attribute hygiene, parentage, errors, ids, real OTLP export from pools,
and the JSON log lines of pool workers."""

import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from opentelemetry import trace as opentelemetry_trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from otlp_receiver import otlp_receiver

import engine
from simlab_pipelines import logs, telemetry

MMCK = {"servers": 2, "arrival_rate": 1.0, "service_rate": 0.8}
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


def _clear_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def fresh_tracing(monkeypatch):
    """No OTEL_* settings; tracing rebuilt from scratch before and shut down after the test."""
    _clear_otel_env(monkeypatch)
    telemetry.shutdown_tracing()
    yield
    telemetry.shutdown_tracing()


@pytest.fixture
def spans(fresh_tracing):
    """An in-memory exporter on a provider configured with no endpoint."""
    telemetry.configure_tracing()
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _attributes(replication: int = 3, **overrides):
    args = dict(experiment="restaurant-staffing", config_key="servers-2", replication=replication,
                seed_entropy=12345, spawn_key=engine.spawn_key("mmck", MMCK, replication),
                model="mmck", params=MMCK, run_id="run-1", partition_key=f"servers-2|{replication}")
    args.update(overrides)
    return telemetry.simulation_attributes(**args)


def test_simulation_attributes_are_allow_listed_and_bounded(monkeypatch):
    monkeypatch.setenv("SIMLAB_API_TOKEN", "s3cr3t-token-value")
    params = dict(MMCK, capacity=None, not_a_parameter=7, Servers=3, arrival_rate="x" * 10_000)
    attributes = _attributes(params=params, seed_entropy=2**100, spawn_key=(3, 1234))
    allowed = telemetry.SIMULATION_ATTRIBUTE_NAMES
    assert all(k in allowed or k.startswith("simlab.param.") for k in attributes)
    assert {k for k in attributes if k.startswith("simlab.param.")} == {
        "simlab.param.servers", "simlab.param.arrival_rate", "simlab.param.service_rate"}
    assert attributes["simlab.param.arrival_rate"] == "x" * telemetry.MAX_PARAM_CHARS
    assert attributes["simlab.seed.entropy"] == str(2**100)  # beyond int64: a string
    assert attributes["simlab.seed.spawn_key"] == "3,1234"
    assert attributes["simlab.replication"] == 3
    assert "s3cr3t" not in json.dumps(attributes)
    assert _attributes(run_id=None)["simlab.seed.entropy"] == 12345
    assert "dagster.run_id" not in _attributes(run_id=None)


def test_simulation_spans_are_children_of_the_batch_span(spans, monkeypatch):
    monkeypatch.setenv("SIMLAB_API_TOKEN", "s3cr3t-token-value")
    infos = []
    batch_attributes = {"simlab.experiment": "e", "simlab.partitions": 3, "secret": "s3cr3t"}
    with telemetry.batch_span("simlab.batch", batch_attributes) as batch:
        for replication in range(3):
            attributes = dict(_attributes(replication), **{"simlab.extra": "s3cr3t"})
            with telemetry.simulation_span(attributes) as info:
                result = engine.simulate("mmck", MMCK, replication=replication, seed=12345,
                                         horizon=5, warmup=1)
                info.warmup_end(result.warmup)
                info.run_end(result.warmup + result.horizon, result.events)
            infos.append(info)
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["simlab.simulation"] * 3 + ["simlab.batch"]
    batch_span = finished[-1]
    assert (f"{batch_span.context.trace_id:032x}", f"{batch_span.context.span_id:016x}") == (
        batch.trace_id, batch.span_id)
    assert batch_span.parent is None
    assert dict(batch_span.attributes) == {"simlab.experiment": "e", "simlab.partitions": 3}
    for span, info in zip(finished[:3], infos, strict=True):
        assert f"{span.context.trace_id:032x}" == info.trace_id == batch.trace_id
        assert f"{span.context.span_id:016x}" == info.span_id
        assert span.parent.span_id == batch_span.context.span_id
        assert [e.name for e in span.events] == ["simlab.warmup_end", "simlab.run_end"]
        assert span.events[1].attributes["simlab.events"] > 0
        assert span.attributes["simlab.seed.entropy"] == 12345
        assert span.attributes["simlab.param.servers"] == 2
        assert "simlab.extra" not in span.attributes
        assert span.status.status_code is StatusCode.UNSET
    assert len({info.span_id for info in infos}) == 3
    everything = json.dumps([dict(s.attributes) for s in finished])
    assert "s3cr3t" not in everything


def test_failure_sets_error_status_and_records_the_exception(spans):
    with pytest.raises(engine.ParameterError), telemetry.simulation_span(_attributes()):
        engine.simulate("mmck", {"servers": -1}, replication=0, seed=1)
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert "ParameterError" in span.status.description
    (event,) = span.events
    assert event.name == "exception"
    assert "servers" in event.attributes["exception.message"]
    assert "Traceback" in event.attributes["exception.stacktrace"]



def _ping(depth: int) -> None:
    if depth == 0:
        raise ValueError("v" * 100_000)
    _pong(depth - 1)


def _pong(depth: int) -> None:  # alternating frames: Python does not fold them into one line
    _ping(depth)


def test_the_exception_event_is_bounded(spans):
    with pytest.raises(ValueError), telemetry.simulation_span(_attributes()):
        _ping(200)  # a deep stack and a huge message
    (span,) = spans.get_finished_spans()
    (event,) = span.events
    message, stack = event.attributes["exception.message"], event.attributes["exception.stacktrace"]
    assert message == "v" * telemetry.MAX_EXCEPTION_MESSAGE_CHARS
    assert len(stack) <= telemetry.MAX_STACKTRACE_CHARS
    assert stack.startswith("Traceback") and "\n...\n" in stack
    lines = stack.splitlines()
    assert lines[-1].startswith("ValueError: vvv") and len(lines[-1]) < 1200
    assert 'raise ValueError("v" * 100_000)' in lines[-2]  # the innermost frame is kept
    assert event.attributes["exception.type"] == "ValueError"
    assert len(span.status.description) <= telemetry.MAX_VALUE_CHARS

def test_without_endpoint_nothing_is_exported_but_ids_are_valid(fresh_tracing):
    telemetry.configure_tracing()
    assert telemetry.exporter_protocol() is None
    # No span processor at all: finished spans go nowhere and cost nothing more.
    assert telemetry.tracer_provider()._active_span_processor._span_processors == ()
    with telemetry.simulation_span(_attributes()) as info:
        traceparent = telemetry.current_traceparent()
    assert HEX32.fullmatch(info.trace_id) and int(info.trace_id, 16) != 0
    assert HEX16.fullmatch(info.span_id) and int(info.span_id, 16) != 0
    assert traceparent.split("-")[1:3] == [info.trace_id, info.span_id]
    assert telemetry.current_traceparent() is None  # outside any span


def test_sampled_out_spans_keep_valid_ids(fresh_tracing, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    telemetry.configure_tracing()
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.simulation_span(_attributes()) as info:
        pass
    assert exporter.get_finished_spans() == ()
    assert HEX32.fullmatch(info.trace_id) and int(info.trace_id, 16) != 0


def test_sdk_disabled_gives_no_ids(fresh_tracing, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # must stay unused
    telemetry.configure_tracing()
    assert telemetry.exporter_protocol() is None
    with telemetry.simulation_span(_attributes()) as info:
        assert telemetry.current_traceparent() is None
    assert (info.trace_id, info.span_id) == (None, None)


def test_traceparent_crosses_a_boundary(spans):
    with telemetry.batch_span("simlab.run", {"dagster.run_id": "r"}) as run:
        traceparent = telemetry.current_traceparent()
    assert re.fullmatch(rf"00-{run.trace_id}-{run.span_id}-[0-9a-f]{{2}}", traceparent)
    with telemetry.attach_traceparent(traceparent), telemetry.simulation_span(_attributes()) as child:
        pass
    with telemetry.attach_traceparent("00-garbage"), telemetry.simulation_span(_attributes()) as orphan:
        pass
    with telemetry.attach_traceparent(None), telemetry.simulation_span(_attributes()):
        pass
    finished = {s.context.span_id: s for s in spans.get_finished_spans()}
    assert child.trace_id == run.trace_id
    assert finished[int(child.span_id, 16)].parent.span_id == int(run.span_id, 16)
    assert orphan.trace_id != run.trace_id
    assert finished[int(orphan.span_id, 16)].parent is None


def test_summary_links_are_bounded_and_spread(spans):
    links = [(f"{t:032x}", f"{t:016x}") for t in range(1, 301)] + [(None, None), ("zz", "1")]
    with telemetry.summary_span(links, attributes={"simlab.experiment": "e"}) as summary:
        pass
    (span,) = spans.get_finished_spans()
    assert span.name == "simlab.summary" and summary.span_id == f"{span.context.span_id:016x}"
    assert len(span.links) == telemetry.MAX_LINKS == 128
    assert span.attributes["simlab.links.total"] == 300
    assert span.attributes["simlab.links.dropped"] == 300 - 128
    linked = [link.context.span_id for link in span.links]
    assert linked[0] == 1 and linked[-1] > 290  # spread over all of them, not the first 128
    with telemetry.summary_span(links[:5], max_links=10):
        pass
    assert len(spans.get_finished_spans()[-1].links) == 5


def test_batch_span_rejects_unknown_names(spans):
    with pytest.raises(ValueError, match=r"simlab\.batch"), telemetry.batch_span("batch", {}):
        pass


def test_unsupported_protocol_is_rejected(fresh_tracing, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        telemetry.configure_tracing()


def _simulate_task(replication: int) -> tuple[str, str]:
    """One pool task: a small simulation inside its span (module level, so spawn can import it)."""
    with telemetry.simulation_span(_attributes(replication)) as info:
        result = engine.simulate("mmck", MMCK, replication=replication, seed=12345, horizon=2,
                                 warmup=0)
        info.run_end(result.horizon, result.events)
    return info.trace_id, info.span_id


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_pool_workers_export_every_span_over_otlp_http(fresh_tracing, monkeypatch, start_method):
    tasks = 200
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "simlab-test")
        if start_method == "spawn":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")  # the receiver inflates
        telemetry.configure_tracing()
        assert telemetry.exporter_protocol() == "http/protobuf"
        context = multiprocessing.get_context(start_method)
        options = {}
        if start_method == "fork":
            # The minimal form: the OTEL_* environment is inherited by a forked worker.
            initargs = (telemetry.current_traceparent(),)
        else:
            # Recycled workers must flush too (they exit like at shutdown).
            options = {"max_tasks_per_child": 120} if start_method == "forkserver" else {}
        with telemetry.batch_span("simlab.batch", {"simlab.experiment": "e"}) as batch:
            if start_method != "fork":
                initargs = telemetry.worker_initargs()
            with ProcessPoolExecutor(2, mp_context=context, initializer=telemetry.pool_initializer,
                                     initargs=initargs, **options) as pool:
                ids = list(pool.map(_simulate_task, range(tasks)))
        telemetry.shutdown_tracing()
        # Workers flushed before exiting and the parent flushed on shutdown: all is there now.
        received = receiver.spans("simlab.simulation")
        batches = receiver.spans("simlab.batch")
        encodings = set(receiver.encodings)
    assert encodings == ({"gzip"} if start_method == "spawn" else {"identity"})
    counts = Counter(span.span_id for span in received)
    assert len(received) == tasks and set(counts.values()) == {1}
    assert set(counts) == {span_id for _, span_id in ids}
    assert {trace_id for trace_id, _ in ids} == {batch.trace_id}
    assert [(b.trace_id, b.span_id) for b in batches] == [(batch.trace_id, batch.span_id)]
    replications = set()
    for span in received:
        assert span.trace_id == batch.trace_id and span.parent_span_id == batch.span_id
        assert span.attributes["simlab.seed.entropy"] == 12345
        assert span.attributes["simlab.seed.spawn_key"] == str(span.attributes["simlab.replication"])
        assert span.attributes["simlab.param.servers"] == 2
        assert [name for name, _ in span.events] == ["simlab.run_end"]
        assert span.resource["service.name"] == "simlab-test"
        assert span.resource["service.version"] == engine.ENGINE_VERSION
        replications.add(span.attributes["simlab.replication"])
    assert replications == set(range(tasks))


def _logging_task(replication: int) -> tuple[str, str]:
    """A pool task that logs a warning inside its simulation span (module level, for spawn)."""
    with telemetry.simulation_span(_attributes(replication)) as info:
        logging.getLogger("simlab.worker").warning("from worker %d", replication)
    return info.trace_id, info.span_id


def test_pool_workers_log_json_lines(fresh_tracing, capfd):
    context = multiprocessing.get_context("spawn")  # a fresh worker: no handlers of ours
    with ProcessPoolExecutor(1, mp_context=context, initializer=telemetry.pool_initializer,
                             initargs=(None,)) as pool:
        ids = list(pool.map(_logging_task, [1, 2]))
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["from worker 1", "from worker 2"]
    for line, (trace_id, span_id), replication in zip(lines, ids, [1, 2], strict=True):
        assert (line["trace_id"], line["span_id"], line["level"]) == (trace_id, span_id,
                                                                      "WARNING")
        assert line["experiment"] == "restaurant-staffing" and line["replication"] == replication
        assert line["logger"] == "simlab.worker"


_GRPC_SCRIPT = textwrap.dedent("""
    import json, os
    from concurrent import futures
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = []

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    received.extend((s.name, s.trace_id.hex()) for s in ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
    from simlab_pipelines import telemetry
    telemetry.configure_tracing()
    protocol = telemetry.exporter_protocol()
    with telemetry.batch_span("simlab.run", {}) as run:
        pass
    telemetry.shutdown_tracing()
    server.stop(None)
    print(json.dumps({"protocol": protocol, "trace_id": run.trace_id, "received": received}))
""")


def test_grpc_protocol_exports_over_grpc():
    # In a child process: grpc's threads in the test process would make later fork()s unsafe.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", _GRPC_SCRIPT], capture_output=True, text=True,
                          timeout=60, env=env, cwd=Path(__file__).parent.parent, check=False)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["protocol"] == "grpc"
    assert outcome["received"] == [["simlab.run", outcome["trace_id"]]]


# A process that makes spans and exits without calling shutdown_tracing: its atexit flushes them.
# OTEL_BSP_SCHEDULE_DELAY=10 (ms) starts an export at once, so with no collector an export is
# retrying when the process exits (the case that waited out the exporter's timeout).
_EXIT_SCRIPT = textwrap.dedent("""
    import json, time
    from simlab_pipelines import telemetry
    telemetry.configure_tracing()
    ids = []
    for _ in range(3):
        with telemetry.batch_span("simlab.run", {}) as run:
            ids.append(run.span_id)
    time.sleep(0.5)
    print(json.dumps({"protocol": telemetry.exporter_protocol(), "spans": ids}))
""")


def _exit_with_spans(endpoint: str, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="10",
               OTEL_EXPORTER_OTLP_TIMEOUT="120")
    done = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).parent.parent, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_process_exits_without_waiting_for_a_missing_collector():
    """With the exporter's timeout at 120 s, the exit used to wait ~30 s (the processor's join)
    for an export retrying against nothing; now the collector is tried once (refused at once),
    the retry is cut short and the process exits: far within the 20 s allowed here."""
    with otlp_receiver() as receiver:
        endpoint = receiver.endpoint
    # the receiver is closed: nothing listens at its address any more
    outcome = _exit_with_spans(endpoint, timeout=20)
    assert outcome["protocol"] == "http/protobuf" and len(outcome["spans"]) == 3


def test_a_process_exits_with_its_spans_delivered_when_the_collector_is_there():
    with otlp_receiver() as receiver:
        outcome = _exit_with_spans(receiver.endpoint, timeout=60)
        received = receiver.spans("simlab.run")
    assert sorted(span.span_id for span in received) == sorted(outcome["spans"])


def test_the_collector_address_comes_from_the_otel_endpoint(monkeypatch):
    _clear_otel_env(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318/")
    assert telemetry._collector_address("http/protobuf") == ("collector.example", 4318)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector.example")
    assert telemetry._collector_address("grpc") == ("collector.example", 4317)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector.example/v1/traces")
    assert telemetry._collector_address("http/protobuf") == ("collector.example", 443)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://host:notaport")
    assert telemetry._collector_address("http/protobuf") is None  # unclear: the old behaviour


def test_an_unrecorded_simulation_span_has_the_ids_and_flags_an_sdk_span_would(fresh_tracing,
                                                                               monkeypatch):
    # Nothing exports and no processor: no SDK span is built, yet the ids, the sampler's flags
    # and the current span (a command's TRACEPARENT, a log line's fields) are as with one.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    telemetry.configure_tracing()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    built = []

    def attributes():
        built.append(True)
        return _attributes()

    with telemetry.attach_traceparent(parent), telemetry.simulation_span(attributes) as info:
        traceparent = telemetry.current_traceparent()
        assert built == []  # not built until something asks
        assert logs._span_fields(opentelemetry_trace.get_current_span())["replication"] == 3
    assert info.trace_id == "0af7651916cd43dd8448eb211c80319c"  # the parent's trace
    assert HEX16.fullmatch(info.span_id) and info.span_id != "b7ad6b7169203331"
    assert traceparent == f"00-{info.trace_id}-{info.span_id}-00"  # always_off: not sampled
    with telemetry.simulation_span(_attributes()) as root:
        pass
    assert HEX32.fullmatch(root.trace_id) and root.trace_id != info.trace_id  # a new trace
