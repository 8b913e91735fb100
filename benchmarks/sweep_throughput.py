"""Benchmark: a sweep through `simlab sweep` against the floor and against process-per-simulation.

- floor: the same simulations through a plain ``multiprocessing.Pool`` over ``engine.simulate``;
- simlab: ``simlab sweep`` on a fresh local instance (SQLite), whole command, summary included;
- process-per-simulation: ``simlab-engine run ... --json``, one process per simulation, as many at
  once as workers (the pod-per-run pattern in miniature); measured on a sample and scaled to the
  full sweep, because 5,000 process start-ups take most of an hour.

Runs alternate (floor, simlab, floor, simlab, ...) and the medians are reported.

    .venv/bin/python benchmarks/sweep_throughput.py --configs 50 --replications 100 --target-ms 50
"""

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

import engine
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.settings import usable_cpus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE = {"arrival_rate": 0.9, "service_rate": 0.5}


def calibrate_horizon(target_ms: float) -> float:
    """The horizon at which one mmck simulation takes about ``target_ms`` of CPU."""
    params = {**BASE, "servers": 3, "capacity": 40}
    horizon = 2_000.0
    for _ in range(3):
        start = time.process_time()
        for r in range(5):
            engine.simulate("mmck", params, replication=r, seed=1, horizon=horizon, warmup=0)
        per_run = (time.process_time() - start) / 5
        horizon *= target_ms / 1000 / per_run
    return round(horizon, -1)


def write_experiment(directory: Path, configs: int, replications: int, horizon: float) -> Path:
    servers = list(range(1, 11))
    capacities = [20 + 10 * i for i in range(max(1, configs // len(servers)))]
    spec = {
        "name": "sweep_benchmark", "model": "mmck", "seed": 12345,
        "replications": replications, "horizon": horizon, "warmup": horizon / 10,
        "parameters": BASE, "factors": {"servers": servers, "capacity": capacities},
    }
    path = directory / "sweep_benchmark.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _simulate(job):
    model, params, replication, seed, horizon, warmup = job
    return engine.simulate(model, params, replication=replication, seed=seed, horizon=horizon,
                           warmup=warmup).metrics


def jobs(path: Path) -> list[tuple]:
    spec = load_experiment(path)
    return [("mmck", c.params, r, spec.seed, spec.horizon, spec.warmup)
            for c in spec.configurations_list() for r in range(spec.replications)]


def run_floor(path: Path, workers: int) -> float:
    work = jobs(path)
    start = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for _ in pool.imap_unordered(_simulate, work, chunksize=4):
            pass
    return time.perf_counter() - start


def run_simlab(path: Path, workers: int) -> float:
    scratch = Path(tempfile.mkdtemp(prefix="simlab-bench-"))
    try:
        (scratch / "home").mkdir()
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", scratch / "home")
        env = {**os.environ, "DAGSTER_HOME": str(scratch / "home"),
               "SIMLAB_DATA_DIR": str(scratch / "data")}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        start = time.perf_counter()
        subprocess.run([str(BIN / "simlab"), "sweep", str(path), "--workers", str(workers)],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_process_per_simulation(path: Path, workers: int, sample: int) -> tuple[float, int]:
    work = jobs(path)[:sample]

    def one(job):
        model, params, replication, seed, horizon, warmup = job
        args = [str(BIN / "simlab-engine"), "run", model, "--seed", str(seed),
                "--replication", str(replication), "--horizon", str(horizon),
                "--warmup", str(warmup), "--json"]
        for name, value in params.items():
            if value is not None:
                args += ["--" + name.replace("_", "-"), str(value)]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, work))
    return time.perf_counter() - start, len(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=50)
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--target-ms", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=usable_cpus())
    parser.add_argument("--process-sample", type=int, default=200)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="simlab-bench-exp-"))
    horizon = calibrate_horizon(args.target_ms)
    path = write_experiment(workdir, args.configs, args.replications, horizon)
    total = len(jobs(path))
    print(f"{total} simulations (horizon {horizon}, ~{args.target_ms} ms each), "
          f"{args.workers} workers, {args.repeats} repeats", flush=True)
    floor, simlab = [], []
    for i in range(args.repeats):
        floor.append(run_floor(path, args.workers))
        simlab.append(run_simlab(path, args.workers))
        print(f"  repeat {i + 1}: floor {floor[-1]:.1f} s, simlab {simlab[-1]:.1f} s", flush=True)
    sample_wall, sample_n = run_process_per_simulation(path, args.workers, args.process_sample)
    per_process = sample_wall / sample_n * total
    result = {
        "simulations": total, "horizon": horizon, "workers": args.workers,
        "floor_seconds": floor, "simlab_seconds": simlab,
        "floor_median": statistics.median(floor), "simlab_median": statistics.median(simlab),
        "process_per_simulation_sample": {"simulations": sample_n, "seconds": sample_wall},
        "process_per_simulation_estimate": per_process,
    }
    result["simlab_over_floor"] = result["simlab_median"] / result["floor_median"]
    result["process_over_simlab"] = per_process / result["simlab_median"]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "sweep_throughput.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
