"""A restaurant: add a table or hire a waiter?

Parties arrive (Poisson), wait for a free table and leave if none frees up within their patience.
Seated, a waiter takes the order, the kitchen (``cooks``) prepares it, a waiter serves it, the party
eats, a waiter brings the bill, the party leaves and a waiter clears the table before it is free
again. Times are in minutes. Each party's demands (order, cooking, eating, ... times and patience)
are drawn when it arrives, each from its own stream, so with common random numbers party n brings
the same demands to every configuration.

Besides means it reports each day's exact percentiles of the waits for a table (parties seated)
and of the times in the restaurant (parties served), and the fraction of seated parties who
waited longer than ``wait_threshold`` minutes.
"""

from collections.abc import Mapping
from typing import Any

import simpy

from engine.models.base import Model, ModelRun
from engine.parameters import Parameter
from engine.randomness import Streams
from engine.statistics import (
    Counter,
    Sample,
    Tally,
    TimeAverage,
    percentile_help,
    percentile_metrics,
)


def _rate(name: str, help: str, default: float, unit: str = "min") -> Parameter:
    return Parameter(name, float, help, default=default, minimum=0.0, exclusive_minimum=True,
                     maximum=1e6, unit=unit)


PARAMETERS = (
    Parameter("tables", int, "number of tables", default=10, minimum=1, maximum=10_000),
    Parameter("waiters", int, "number of waiters", default=3, minimum=1, maximum=10_000),
    Parameter("cooks", int, "number of cooks (orders prepared at once)", default=3, minimum=1,
              maximum=10_000),
    _rate("arrival_rate", "parties arriving per minute", 0.2, unit="parties/min"),
    _rate("patience", "mean time a party waits for a table before leaving (minutes)", 15.0),
    _rate("order_time", "mean time for a waiter to take an order (minutes)", 3.0),
    _rate("cook_time", "mean time to prepare an order (minutes)", 12.0),
    _rate("serve_time", "mean time for a waiter to bring the food (minutes)", 2.0),
    _rate("eat_time", "mean time a party eats (minutes)", 30.0),
    _rate("bill_time", "mean time for a waiter to bring the bill and take payment (minutes)", 3.0),
    _rate("clear_time", "mean time for a waiter to clear and reset a table (minutes)", 4.0),
    Parameter("wait_threshold", float, "a wait for a table longer than this (minutes) misses the "
              "service level (fraction_wait_over)", default=5.0, minimum=0.0, maximum=1e6,
              unit="min"),
)

METRICS = {  # what each is, then in brackets how it is measured (the answer says the first part)
    "mean_wait_for_table": "mean wait for a table (of parties seated in the window, minutes)",
    "mean_order_to_serve": "mean time from order to food (minutes)",
    "mean_time_in_restaurant": "mean time in the restaurant (from arrival to leaving, of "
                               "parties served; minutes)",
    "parties_served": "parties served (paid and left in the window)",
    "parties_lost": "parties lost (left without a table in the window)",
    "loss_probability": "parties lost (fraction of the parties arriving in the window)",
    "table_utilisation": "tables occupied (time-average fraction, clearing included)",
    "waiter_utilisation": "waiters busy (time-average fraction)",
    "cook_utilisation": "cooks busy (time-average fraction)",
    **{f"wait_for_table_{k}": v for k, v in percentile_help(
        "the waits for a table of parties seated in the window (minutes)").items()},
    **{f"time_in_restaurant_{k}": v for k, v in percentile_help(
        "the times from arrival to leaving of parties served in the window (minutes)").items()},
    "fraction_wait_over": "parties waiting longer than wait_threshold for a table (fraction of "
                          "the parties seated in the window)",
}

_MINUTES = [m for m in METRICS if m.startswith(("mean_", "wait_for_table_", "time_in_"))]
UNITS = {**dict.fromkeys(_MINUTES, "min"), "parties_served": "parties", "parties_lost": "parties",
         "loss_probability": "fraction", "table_utilisation": "fraction",
         "waiter_utilisation": "fraction", "cook_utilisation": "fraction",
         "fraction_wait_over": "fraction"}
BETTER = {**dict.fromkeys(_MINUTES, "lower"), "parties_served": "higher", "parties_lost": "lower",
          "loss_probability": "lower", "fraction_wait_over": "lower"}

SERIES = {"parties_in_restaurant": "batch means of the parties present over time, warm-up included"}

# Eating and cooking are less variable than exponential: gamma with this shape.
_SHAPE = 4.0


def run(params: Mapping[str, Any], streams: Streams, warmup: float, horizon: float,
        series_interval: float | None = None) -> ModelRun:
    """Simulate one day over [0, warmup + horizon]."""
    end = warmup + horizon
    env = simpy.Environment()
    tables = simpy.Resource(env, capacity=params["tables"])
    waiters = simpy.Resource(env, capacity=params["waiters"])
    cooks = simpy.Resource(env, capacity=params["cooks"])

    present = TimeAverage(warmup, end, series_interval)
    tables_busy, waiters_busy, cooks_busy = (TimeAverage(warmup, end) for _ in range(3))
    wait_table, in_restaurant = Sample(warmup, end), Sample(warmup, end)
    order_to_serve = Tally(warmup, end)
    arrived, served, lost = (Counter(warmup, end) for _ in range(3))
    events = 0

    def waiter_task(duration: float):
        """A waiter does one task of ``duration`` minutes."""
        nonlocal events
        with waiters.request() as request:
            yield request
            waiters_busy.add(env.now, 1)
            yield env.timeout(duration)
            waiters_busy.add(env.now, -1)
        events += 2

    def party(arrival: float, demand: dict[str, float]):
        nonlocal events
        table = tables.request()
        yield table | env.timeout(demand["patience"])
        # ``triggered``, not membership in the condition's value: a table granted at the very
        # instant patience runs out is taken, not leaked.
        if not table.triggered:
            table.cancel()
            lost.hit(env.now)
            present.add(env.now, -1)
            events += 1
            return
        tables_busy.add(env.now, 1)
        wait_table.record(env.now, env.now - arrival)
        yield env.process(waiter_task(demand["order"]))
        ordered = env.now
        with cooks.request() as cook:
            yield cook
            cooks_busy.add(env.now, 1)
            yield env.timeout(demand["cook"])
            cooks_busy.add(env.now, -1)
        yield env.process(waiter_task(demand["serve"]))
        order_to_serve.record(env.now, env.now - ordered)
        yield env.timeout(demand["eat"])
        yield env.process(waiter_task(demand["bill"]))
        in_restaurant.record(env.now, env.now - arrival)
        served.hit(env.now)
        present.add(env.now, -1)
        yield env.process(waiter_task(demand["clear"]))
        tables.release(table)
        tables_busy.add(env.now, -1)
        events += 5

    def source():
        nonlocal events
        mean_interarrival = 1.0 / params["arrival_rate"]
        arrivals = streams["arrivals"]
        draws = {
            "patience": lambda: streams["patience"].exponential(params["patience"]),
            "order": lambda: streams["order"].exponential(params["order_time"]),
            "cook": lambda: streams["cook"].gamma(_SHAPE, params["cook_time"]),
            "serve": lambda: streams["serve"].exponential(params["serve_time"]),
            "eat": lambda: streams["eat"].gamma(_SHAPE, params["eat_time"]),
            "bill": lambda: streams["bill"].exponential(params["bill_time"]),
            "clear": lambda: streams["clear"].exponential(params["clear_time"]),
        }
        while True:
            yield env.timeout(arrivals.exponential(mean_interarrival))
            demand = {name: draw() for name, draw in draws.items()}
            events += 1
            arrived.hit(env.now)
            present.add(env.now, 1)
            env.process(party(env.now, demand))

    env.process(source())
    env.run(until=end)

    metrics = {
        "mean_wait_for_table": wait_table.mean(),
        "mean_order_to_serve": order_to_serve.mean(),
        "mean_time_in_restaurant": in_restaurant.mean(),
        "parties_served": float(served.count),
        "parties_lost": float(lost.count),
        "loss_probability": lost.count / arrived.count if arrived.count else 0.0,
        "table_utilisation": tables_busy.mean() / params["tables"],
        "waiter_utilisation": waiters_busy.mean() / params["waiters"],
        "cook_utilisation": cooks_busy.mean() / params["cooks"],
        **percentile_metrics("wait_for_table", wait_table),
        **percentile_metrics("time_in_restaurant", in_restaurant),
        "fraction_wait_over": wait_table.fraction_over(params["wait_threshold"]),
    }
    series = {"parties_in_restaurant": present.batches} if series_interval else None
    return ModelRun(metrics, events, series)


MODEL = Model(
    name="restaurant",
    description="Restaurant: tables, waiters and cooks serve parties who may leave if kept waiting.",
    parameters=PARAMETERS,
    metrics=METRICS,
    series=SERIES,
    run=run,
    default_horizon=480.0,
    default_warmup=60.0,
    units=UNITS,
    better=BETTER,
    kinds={"parties_served": "total", "parties_lost": "total"},  # counts over the day
)
