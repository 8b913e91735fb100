"""A web service in front of a database connection pool, with client timeouts and retries.

Requests arrive as a Poisson process. Each needs one connection of a pool of ``pool_size`` to run
its database work (exponential, mean ``service_time``); requests queue first come, first served for
a connection. A client waits ``timeout`` seconds for an answer; then it gives up on that attempt
and, after an exponential back-off, retries, up to ``max_retries`` times. The server does not know
that a client gave up: unless ``cancel_abandoned`` is 1, an abandoned attempt keeps its place in
the queue and still uses a connection when its turn comes (wasted work). The database has
``db_cores`` cores: a query that starts while more connections than cores are busy runs
proportionally slower. For ``slowdown_duration`` seconds from ``slowdown_start`` every query is
``slowdown_factor`` times slower (a bad deploy, a vacuum, a noisy neighbour).

The question: how big should the pool be, and when do retries turn a short slowdown into a storm
that outlives it (a metastable failure)? ``final_success_rate`` says whether the service recovered.

With ``timeout`` 0 (clients wait forever), no slowdown and ``db_cores`` 0 (no contention) this is
an M/M/c queue with c = ``pool_size``, arrival rate ``arrival_rate`` and service rate
1 / ``service_time``: the tests check ``mean_wait`` against Erlang C.

Randomness (simlab's contract): new requests' inter-arrival times come from stream ``arrivals``,
their database work from ``service`` (drawn at arrival, so with common random numbers request n
brings the same work to every pool size), retries' work from ``retry_service`` and back-offs from
``backoff``.
"""

from collections.abc import Mapping
from typing import Any

import simpy

from engine import Model, ModelRun, Parameter, Streams
from engine.statistics import Sample, TimeAverage

PARAMETERS = (
    Parameter("arrival_rate", float, "new requests per second (Poisson)", default=50.0,
              minimum=0.0, exclusive_minimum=True, maximum=1e6, unit="requests/s"),
    Parameter("service_time", float, "mean database time of one attempt (s, exponential)",
              default=0.05, minimum=0.0, exclusive_minimum=True, maximum=1e4, unit="s"),
    Parameter("pool_size", int, "connections in the pool", default=8, minimum=1, maximum=10_000),
    Parameter("db_cores", int, "database cores: queries slow down when more connections than "
              "this are busy; 0: no contention", default=0, minimum=0, maximum=10_000),
    Parameter("timeout", float, "client timeout of one attempt (s); 0: clients wait forever",
              default=1.0, minimum=0.0, maximum=1e6, unit="s"),
    Parameter("max_retries", int, "retries after a timeout before the client gives up",
              default=2, minimum=0, maximum=100),
    Parameter("backoff", float, "mean delay before a retry (s, exponential)", default=0.2,
              minimum=0.0, maximum=1e6, unit="s"),
    Parameter("cancel_abandoned", int, "1: the server drops a queued attempt whose client gave "
              "up; 0: it runs it anyway", default=0, minimum=0, maximum=1),
    Parameter("slowdown_factor", float, "queries are this many times slower during the slowdown",
              default=1.0, minimum=1.0, maximum=1e4),
    Parameter("slowdown_start", float, "when the slowdown starts (s)", default=60.0, minimum=0.0,
              maximum=1e9, unit="s"),
    Parameter("slowdown_duration", float, "how long the slowdown lasts (s); 0: none",
              default=0.0, minimum=0.0, maximum=1e9, unit="s"),
)

METRICS = {  # what each is, then in brackets how it is measured (the answer uses the first part)
    "success_rate": "requests answered (the share of the requests resolved in the window that "
                    "got an answer)",
    "final_success_rate": "requests answered at the end (the success rate of the requests that "
                          "arrived in the last third of the window: did the service recover "
                          "after the slowdown?)",
    "goodput": "requests answered per second (in the window)",
    "mean_latency": "time to answer a request (mean over answered requests, from their first "
                    "attempt)",
    "latency_p99": "time within which 99 % of the answered requests are answered (the 99th "
                   "percentile of their latency, from their first attempt)",
    "attempts_per_request": "attempts per request (attempts started per new request in the "
                            "window: retry amplification)",
    "mean_wait": "wait for a connection (mean over attempts that got one in the window)",
    "pool_utilisation": "connections busy (the time-average share of the pool)",
    "wasted_fraction": "database time wasted on abandoned attempts (the share of the "
                       "connections' busy time)",
}
# Every metric says its unit and which way is better (the answer and the report use them): a
# busier pool is worse here, since at a given goodput the busy time beyond it is wasted work.
UNITS = {"success_rate": "fraction", "final_success_rate": "fraction", "goodput": "requests/s",
         "mean_latency": "s", "latency_p99": "s", "attempts_per_request": "attempts",
         "mean_wait": "s",
         "pool_utilisation": "fraction", "wasted_fraction": "fraction"}
BETTER = {"success_rate": "higher", "final_success_rate": "higher", "goodput": "higher",
          "mean_latency": "lower", "latency_p99": "lower", "attempts_per_request": "lower",
          "mean_wait": "lower",
          "pool_utilisation": "lower", "wasted_fraction": "lower"}
# Recorded when an experiment sets series_interval: the steady-state check's trend test reads it
# (a retry storm shows as attempts piling up for the rest of the run).
SERIES = {"database_backlog": "batch means of the attempts queued for or holding a "
                                "connection, from time 0"}


class _Attempt:
    """One try of a request: its work, and whether its client is still waiting for it."""

    __slots__ = ("abandoned", "created", "demand", "done", "request")

    def __init__(self, env: simpy.Environment, demand: float) -> None:
        self.done = env.event()
        self.demand = demand
        self.created = env.now
        self.abandoned = False
        self.request: simpy.Resource | None = None


class _Window:
    """The statistics of the observation window (warmup, end]."""

    def __init__(self, warmup: float, end: float) -> None:
        self.warmup, self.end = warmup, end
        self.final_start = end - (end - warmup) / 3.0
        self.arrived = self.attempts = self.succeeded = self.failed = 0
        self.final_succeeded = self.final_resolved = 0
        self.latency = self.wait = self.busy = self.wasted = 0.0
        self.waits = 0
        self.latencies = Sample(warmup, end)  # of the answered requests, for the percentile

    def inside(self, t: float) -> bool:
        return self.warmup < t <= self.end

    def overlap(self, start: float, stop: float) -> float:
        return max(0.0, min(stop, self.end) - max(start, self.warmup))

    def resolved(self, arrived: float, now: float, success: bool) -> None:
        if self.inside(now):
            if success:
                self.succeeded += 1
                self.latency += now - arrived
                self.latencies.record(now, now - arrived)
            else:
                self.failed += 1
        if arrived > self.final_start:
            self.final_resolved += 1
            self.final_succeeded += success


def run(params: Mapping[str, Any], streams: Streams, warmup: float, horizon: float,
        series_interval: float | None = None) -> ModelRun:
    """Simulate the service for ``warmup + horizon`` seconds."""
    env = simpy.Environment()
    pool = simpy.Resource(env, capacity=params["pool_size"])
    window = _Window(warmup, warmup + horizon)
    arrivals, service = streams["arrivals"], streams["service"]
    retry_service, backoff = streams["retry_service"], streams["backoff"]
    mean_gap, mean_work = 1.0 / params["arrival_rate"], params["service_time"]
    timeout, retries, cancel = params["timeout"], params["max_retries"], params["cancel_abandoned"]
    cores = params["db_cores"]
    slow_from = params["slowdown_start"]
    slow_until = slow_from + params["slowdown_duration"]
    in_service: dict[_Attempt, float] = {}  # attempt -> when it got its connection
    events = [0]  # arrivals, connections taken and released
    # The attempts in the database layer over time, only when asked (it costs a little per event).
    in_system = TimeAverage(warmup, window.end, series_interval) if series_interval else None

    def database(attempt: _Attempt):
        attempt.request = request = pool.request()
        if in_system is not None:
            in_system.add(env.now, 1)
        yield request
        start = env.now
        events[0] += 2
        if window.inside(start):
            window.wait += start - attempt.created
            window.waits += 1
        factor = params["slowdown_factor"] if slow_from <= start < slow_until else 1.0
        if cores and pool.count > cores:
            factor *= pool.count / cores
        in_service[attempt] = start
        yield env.timeout(attempt.demand * factor)
        del in_service[attempt]
        pool.release(request)
        if in_system is not None:
            in_system.add(env.now, -1)
        used = window.overlap(start, env.now)
        window.busy += used
        if attempt.abandoned:
            window.wasted += used
        elif not attempt.done.triggered:
            attempt.done.succeed(True)

    def client(demand: float):
        arrived = env.now
        tries = 0
        while True:
            attempt = _Attempt(env, demand)
            tries += 1
            if window.inside(env.now):
                window.attempts += 1
            env.process(database(attempt))
            if timeout > 0:
                # The client's timer settles the same event as the answer, whichever comes first
                # (cheaper than waiting for either of two events).
                env.timeout(timeout).callbacks.append(
                    lambda _, done=attempt.done: done.triggered or done.succeed(False))
            if (yield attempt.done):
                window.resolved(arrived, env.now, True)
                return
            attempt.abandoned = True
            if cancel and not attempt.request.triggered:
                attempt.request.cancel()  # still queued: leave the queue
                if in_system is not None:
                    in_system.add(env.now, -1)
            if tries > retries:
                window.resolved(arrived, env.now, False)
                return
            if params["backoff"] > 0:
                yield env.timeout(backoff.exponential(params["backoff"]))
            demand = retry_service.exponential(mean_work)

    def source():
        while True:
            yield env.timeout(arrivals.exponential(mean_gap))
            events[0] += 1
            if window.inside(env.now):
                window.arrived += 1
            # The work is drawn at arrival: request n brings the same work to every configuration.
            env.process(client(service.exponential(mean_work)))

    env.process(source())
    env.run(until=window.end)
    for start in in_service.values():  # connections still busy at the end
        window.busy += window.overlap(start, window.end)

    resolved = window.succeeded + window.failed
    nan = float("nan")
    metrics = {
        "success_rate": window.succeeded / resolved if resolved else nan,
        "final_success_rate": (window.final_succeeded / window.final_resolved
                               if window.final_resolved else nan),
        "goodput": window.succeeded / horizon,
        "mean_latency": window.latency / window.succeeded if window.succeeded else nan,
        "latency_p99": window.latencies.quantiles([0.99])[0],
        "attempts_per_request": window.attempts / window.arrived if window.arrived else nan,
        "mean_wait": window.wait / window.waits if window.waits else nan,
        "pool_utilisation": window.busy / (horizon * params["pool_size"]),
        "wasted_fraction": window.wasted / window.busy if window.busy else 0.0,
    }
    series = None
    if in_system is not None:
        in_system.mean()  # closes the last batch at the end of the run
        series = {"database_backlog": in_system.batches}
    return ModelRun(metrics, events[0], series)


MODEL = Model(
    name="web_pool",
    description="Web service before a DB connection pool: client timeouts, retries, a slowdown.",
    parameters=PARAMETERS,
    metrics=METRICS,
    run=run,
    default_horizon=300.0,
    default_warmup=30.0,
    version="2",  # 2: latency_p99
    series=SERIES,
    units=UNITS,
    better=BETTER,
)
