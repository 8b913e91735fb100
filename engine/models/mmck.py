"""M/M/c/K: Poisson arrivals, c exponential servers, room for K customers in the system.

Customers who find K in the system are blocked and lost. ``capacity`` absent means K = infinity
(M/M/c). Service demands are drawn at arrival, from their own stream, so that with common random
numbers customer n brings the same work to every configuration.

Besides means it reports each replication's exact percentiles of the waits and of the times in
system (over the customers observed in the window), and the fraction of waits longer than the
parameter ``wait_threshold``: the tails a service level is judged by.
"""

from collections.abc import Mapping
from typing import Any

import simpy

from engine.models.base import Model, ModelRun
from engine.parameters import Parameter, ParameterError
from engine.randomness import Streams
from engine.statistics import (
    Counter,
    Sample,
    TimeAverage,
    percentile_help,
    percentile_metrics,
)

PARAMETERS = (
    Parameter("servers", int, "number of servers (c)", default=1, minimum=1, maximum=10_000),
    Parameter("capacity", int, "room in the system, queue plus service (K >= c); absent: infinite",
              default=None, minimum=1, maximum=10_000_000, optional=True),
    Parameter("arrival_rate", float, "Poisson arrival rate (lambda, customers per time unit)",
              default=1.0, minimum=0.0, exclusive_minimum=True, maximum=1e9,
              unit="per time unit"),
    Parameter("service_rate", float, "service rate of one server (mu, customers per time unit)",
              default=1.5, minimum=0.0, exclusive_minimum=True, maximum=1e9,
              unit="per time unit"),
    Parameter("wait_threshold", float, "a wait longer than this misses the service level "
              "(fraction_wait_over)", default=1.0, minimum=0.0, maximum=1e12,
              unit="time units"),
)

METRICS = {  # what each is, then in brackets how it is measured (the answer says the first part)
    "mean_number_in_system": "mean number of customers in the system (time average, L)",
    "mean_queue_length": "mean number of customers waiting (time average, Lq)",
    "mean_time_in_system": "mean time in the system (sojourn of customers departing in the "
                           "window, W)",
    "mean_wait": "mean wait before service (of customers starting service in the window, Wq)",
    "server_utilisation": "servers busy (time-average fraction)",
    "blocking_probability": "arrivals turned away (fraction of arrivals in the window that "
                            "found the system full)",
    "throughput": "customers served per time unit (departures in the window)",
    "customers_served": "customers served (departures in the window)",
    **{f"wait_{k}": v for k, v in percentile_help(
        "the waits before service of customers starting service in the window").items()},
    **{f"time_in_system_{k}": v for k, v in percentile_help(
        "the sojourn times of customers departing in the window").items()},
    "fraction_wait_over": "customers waiting longer than wait_threshold (fraction of those "
                          "starting service in the window)",
}

_TIME = [m for m in METRICS if "time" in m or "wait" in m]
UNITS = {"mean_number_in_system": "customers", "mean_queue_length": "customers",
         **dict.fromkeys(_TIME, "time units"), "server_utilisation": "fraction",
         "blocking_probability": "fraction", "throughput": "customers per time unit",
         "customers_served": "customers", "fraction_wait_over": "fraction"}
BETTER = {**dict.fromkeys(_TIME, "lower"), "mean_number_in_system": "lower",
          "mean_queue_length": "lower", "blocking_probability": "lower",
          "fraction_wait_over": "lower", "throughput": "higher", "customers_served": "higher"}

SERIES = {"number_in_system": "batch means of the number in system over time, warm-up included"}


def _check(params: Mapping[str, Any]) -> None:
    if params["capacity"] is not None and params["capacity"] < params["servers"]:
        raise ParameterError(
            "capacity",
            f"parameter 'capacity' = {params['capacity']} must be >= servers ({params['servers']})",
        )


def run(params: Mapping[str, Any], streams: Streams, warmup: float, horizon: float,
        series_interval: float | None = None) -> ModelRun:
    """Simulate the queue once over [0, warmup + horizon]."""
    end = warmup + horizon
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=params["servers"])
    capacity = params["capacity"]
    mean_interarrival = 1.0 / params["arrival_rate"]
    mean_service = 1.0 / params["service_rate"]
    arrivals, services = streams["arrivals"], streams["service"]

    in_system = TimeAverage(warmup, end, series_interval)
    busy = TimeAverage(warmup, end)
    wait, sojourn = Sample(warmup, end), Sample(warmup, end)
    arrived, blocked, departed = Counter(warmup, end), Counter(warmup, end), Counter(warmup, end)
    events = 0

    def customer(arrival_time: float, demand: float):
        nonlocal events
        with servers.request() as request:
            yield request
            now = env.now
            wait.record(now, now - arrival_time)
            busy.add(now, 1)
            yield env.timeout(demand)
        now = env.now
        busy.add(now, -1)
        in_system.add(now, -1)
        sojourn.record(now, now - arrival_time)
        departed.hit(now)
        events += 2  # service start and departure

    def source():
        nonlocal events
        while True:
            yield env.timeout(arrivals.exponential(mean_interarrival))
            now = env.now
            demand = services.exponential(mean_service)  # drawn for every arrival, blocked or not
            events += 1
            arrived.hit(now)
            if capacity is not None and in_system.value >= capacity:
                blocked.hit(now)
                continue
            in_system.add(now, 1)
            env.process(customer(now, demand))

    env.process(source())
    env.run(until=end)

    c = params["servers"]
    mean_l, mean_busy = in_system.mean(), busy.mean()
    metrics = {
        "mean_number_in_system": mean_l,
        "mean_queue_length": mean_l - mean_busy,
        "mean_time_in_system": sojourn.mean(),
        "mean_wait": wait.mean(),
        "server_utilisation": mean_busy / c,
        "blocking_probability": blocked.count / arrived.count if arrived.count else 0.0,
        "throughput": departed.count / horizon,
        "customers_served": float(departed.count),
        **percentile_metrics("wait", wait),
        **percentile_metrics("time_in_system", sojourn),
        "fraction_wait_over": wait.fraction_over(params["wait_threshold"]),
    }
    series = {"number_in_system": in_system.batches} if series_interval else None
    return ModelRun(metrics, events, series)


MODEL = Model(
    name="mmck",
    description="M/M/c/K queue: Poisson arrivals, c exponential servers, capacity K (blocking).",
    parameters=PARAMETERS,
    metrics=METRICS,
    series=SERIES,
    run=run,
    default_horizon=10_000.0,
    default_warmup=1_000.0,
    check=_check,
    units=UNITS,
    better=BETTER,
    kinds={"customers_served": "total"},  # a count over the run; the other metrics are levels
)
