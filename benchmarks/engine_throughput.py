"""Engine throughput: simulated customers per CPU-second of ``engine.simulate('mmck', ...)`` against
a minimal hand-written SimPy M/M/c loop, measured in the same process, interleaved.

The minimal loop has an arrival process, a ``simpy.Resource`` and exponential service times from a
numpy Generator, and no statistics beyond a departure count. It comes in two flavours:

- ``naive``: one ``Generator.exponential`` call per variate (what such a loop usually looks like);
- ``buffered``: variates taken from pre-drawn blocks of 512, as the engine does — so the ratio to
  it is the price of the engine's bookkeeping alone (statistics, validation, named streams).

Each measurement is CPU time (``time.process_time``) of one whole simulation; runs are interleaved
(engine, naive, buffered, engine, ...) so that drifts in machine load hit all three alike; the
figure is the median of ``--runs`` runs each. Target: engine >= 0.8x the minimal loop.

    .venv/bin/python benchmarks/engine_throughput.py [--runs 7] [--customers 100000] [--json]
"""

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import simpy

import engine

SERVERS, ARRIVAL_RATE, SERVICE_RATE = 2, 1.8, 1.0  # M/M/2 at rho = 0.9: queues form
_BLOCK = 512


def minimal_loop(horizon: float, seed: int, buffered: bool) -> int:
    """The smallest SimPy M/M/c we would write by hand; returns the customers served."""
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=SERVERS)
    rng = np.random.default_rng(seed)
    served = 0
    if buffered:
        def blocks(scale: float):
            while True:
                yield from (scale * rng.standard_exponential(_BLOCK)).tolist()
        interarrival = blocks(1.0 / ARRIVAL_RATE).__next__
        service = blocks(1.0 / SERVICE_RATE).__next__
    else:
        def interarrival() -> float:
            return rng.exponential(1.0 / ARRIVAL_RATE)

        def service() -> float:
            return rng.exponential(1.0 / SERVICE_RATE)

    def customer():
        nonlocal served
        with servers.request() as request:
            yield request
            yield env.timeout(service())
        served += 1

    def source():
        while True:
            yield env.timeout(interarrival())
            env.process(customer())

    env.process(source())
    env.run(until=horizon)
    return served


def engine_run(horizon: float, seed: int) -> int:
    """One engine simulation of the same queue (no warm-up, so every customer counts)."""
    params = {"servers": SERVERS, "arrival_rate": ARRIVAL_RATE, "service_rate": SERVICE_RATE}
    result = engine.simulate("mmck", params, replication=seed, seed=12345, horizon=horizon,
                             warmup=0.0)
    return int(result.metrics["customers_served"])


def _timed(run: Callable[[], int]) -> float:
    """Customers served per CPU-second of one run."""
    started = time.process_time()
    customers = run()
    return customers / (time.process_time() - started)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each (median reported)")
    parser.add_argument("--customers", type=int, default=100_000,
                        help="customers per run (about; sets the horizon)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    horizon = args.customers / ARRIVAL_RATE

    # One untimed round first: imports, allocator and caches warm.
    engine_run(horizon / 20, 0)
    minimal_loop(horizon / 20, 0, False)
    minimal_loop(horizon / 20, 0, True)
    rates: dict[str, list[float]] = {"engine": [], "naive": [], "buffered": []}
    for i in range(args.runs):
        rates["engine"].append(_timed(lambda i=i: engine_run(horizon, i)))
        rates["naive"].append(_timed(lambda i=i: minimal_loop(horizon, i, False)))
        rates["buffered"].append(_timed(lambda i=i: minimal_loop(horizon, i, True)))
    median = {name: statistics.median(values) for name, values in rates.items()}
    report = {
        "customers_per_run": args.customers,
        "runs": args.runs,
        "median_customers_per_cpu_second": {k: round(v) for k, v in median.items()},
        "ratio_engine_to_naive_loop": round(median["engine"] / median["naive"], 3),
        "ratio_engine_to_buffered_loop": round(median["engine"] / median["buffered"], 3),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu_model(),
                    "python": platform.python_version(), "simpy": simpy.__version__,
                    "numpy": np.__version__, "engine": engine.ENGINE_VERSION},
        "all_runs": {k: [round(v) for v in values] for k, values in rates.items()},
    }
    if args.json:
        print(json.dumps(report))
        return
    for name in ("engine", "naive", "buffered"):
        print(f"{name:9} median {median[name]:>10,.0f} customers/CPU-s  "
              f"runs {', '.join(f'{v:,.0f}' for v in rates[name])}")
    print(f"engine / naive loop    = {report['ratio_engine_to_naive_loop']:.3f}x")
    print(f"engine / buffered loop = {report['ratio_engine_to_buffered_loop']:.3f}x")
    print(f"machine: {report['machine']}")


if __name__ == "__main__":
    main()
