"""Benchmark: simlab's own CPU per partition in the run process (the Dagster bookkeeping).

A sweep (``simlab.sweep.sweep``) runs in this process on a fresh local instance (a copy of
``dagster_home/dagster.yaml``, SQLite) and a fresh data directory, over an ``mmck`` experiment of
``--configs`` configurations x ``--replications`` replications with a short horizon, so that the
simulations (done in 2 pool workers, other processes) are cheap and the run process's work is
what is left: creating runs and their planned events, submitting tasks, building metadata,
writing the materialization events, ending runs. CPU time of this process only
(``time.process_time``) over the whole sweep, less the spec and summary runs (``sweep._run``,
which executes them, is wrapped), divided by the partitions: **the per-partition run-process
CPU** (target <= 3 ms). The replication runs overlap (two in flight), so they are not timed one
by one; what is left besides them (finding the missing partitions, a round's plan) is counted in,
which overstates the runs' share slightly. The spec and summary runs are reported apart.

``--profile FILE`` runs the sweep under cProfile instead (another fresh instance) and prints the
top entries by cumulative and by own time; cProfile inflates Python-heavy code 2-3x, so read the
shares and call counts, not the seconds. ``--repeats`` gives a median.

    .venv/bin/python benchmarks/run_process_cpu.py --configs 20 --replications 100 --repeats 3
    .venv/bin/python benchmarks/run_process_cpu.py --configs 20 --replications 100 \\
        --profile /tmp/sweep.prof
"""

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_experiment(directory: Path, configs: int, replications: int, horizon: float) -> Path:
    servers = list(range(1, 11))
    capacities = [20 + 10 * i for i in range(max(1, configs // len(servers)))]
    spec = {"name": "cpu_benchmark", "model": "mmck", "seed": 7, "replications": replications,
            "horizon": horizon, "warmup": horizon / 10,
            "parameters": {"arrival_rate": 0.9, "service_rate": 0.5},
            "factors": {"servers": servers[:min(configs, 10)], "capacity": capacities},
            # As a user's experiment has one (without it every pair is compared and plotted).
            "objective": {"metric": "mean_time_in_system", "direction": "minimize"}}
    path = directory / "cpu_benchmark.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_sweep(path: Path, workers: int, profile: Path | None = None,
              batch_size: int | None = None) -> dict[str, Any]:
    """Sweep ``path`` on a fresh instance in this process; CPU seconds of this process by run kind."""
    import dagster as dg

    from simlab_pipelines import batch, sweep

    scratch = Path(tempfile.mkdtemp(prefix="simlab-cpu-bench-"))
    home = scratch / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "SIMLAB_DATA_DIR")}
    os.environ.update({"DAGSTER_HOME": str(home), "SIMLAB_DATA_DIR": str(scratch / "data")})
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    original = sweep._run

    def timed(run_path, job_name, instance, tags):
        kind = job_name.rsplit("_", 1)[-1]
        c, w = time.process_time(), time.perf_counter()
        try:
            return original(run_path, job_name, instance, tags)
        finally:
            cpu[kind] = cpu.get(kind, 0.0) + time.process_time() - c
            wall[kind] = wall.get(kind, 0.0) + time.perf_counter() - w

    sweep._run = timed
    # simlab sweep executes each run in a thread of its own: each execute_job call is profiled
    # in the thread that makes it, and the profiles are added up.
    profiles: list[cProfile.Profile] = []
    original_execute = dg.execute_job

    def profiled_execute(*a, **k):
        profiler = cProfile.Profile()
        profiles.append(profiler)
        profiler.enable()
        try:
            return original_execute(*a, **k)
        finally:
            profiler.disable()

    if profile:
        dg.execute_job = profiled_execute
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            c, w = time.process_time(), time.perf_counter()
            report = sweep.sweep(path, instance, workers=workers, batch_size=batch_size)
            total_cpu, total_wall = time.process_time() - c, time.perf_counter() - w
        batch.shutdown_pools()
        cpu["replications"] = total_cpu - sum(cpu.values())
        wall["replications"] = total_wall - sum(wall.values())
    finally:
        sweep._run = original
        dg.execute_job = original_execute
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(scratch, ignore_errors=True)
    if report.failed_runs:
        raise RuntimeError(f"sweep failed: runs {report.failed_runs}")
    if profile and profiles:
        stats = pstats.Stats(profiles[0])
        for more in profiles[1:]:
            stats.add(more)
        stats.dump_stats(str(profile))
    return {"partitions": report.missing, "runs": len(report.runs), "cpu": cpu, "wall": wall,
            "total_cpu": total_cpu, "total_wall": total_wall}


def print_profile(profile: Path, top: int) -> None:
    stats = pstats.Stats(str(profile), stream=sys.stdout)
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        print(f"--- top {top} by {order}")
        stats.sort_stats(order).print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--configs", type=int, default=20)
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--horizon", type=float, default=20.0,
                        help="simulated time per simulation (short: cheap simulations)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="partitions per run (default: simlab's)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="profile one sweep with cProfile into this file and print its top")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="simlab-cpu-exp-"))
    try:
        path = write_experiment(work, args.configs, args.replications, args.horizon)
        # Warm-up (discarded): imports, definitions, the first fork server.
        (work / "warm").mkdir()
        one_sweep(write_experiment(work / "warm", 10, 4, args.horizon), args.workers)
        if args.profile:
            result = one_sweep(path, args.workers, args.profile, args.batch_size)
            print(json.dumps(result))
            print_profile(args.profile, args.top)
            return
        per_partition = []
        results = []
        for i in range(args.repeats):
            result = one_sweep(path, args.workers, batch_size=args.batch_size)
            results.append(result)
            per = result["cpu"].get("replications", 0.0) / result["partitions"] * 1000
            per_partition.append(per)
            print(f"repeat {i + 1}: {result['partitions']} partitions in {result['runs']} runs: "
                  f"replication runs {result['cpu'].get('replications', 0):.2f} CPU-s "
                  f"({per:.2f} ms a partition), wall {result['wall'].get('replications', 0):.2f}"
                  f" s; spec {result['cpu'].get('spec', 0):.2f}, summary "
                  f"{result['cpu'].get('summary', 0):.2f} CPU-s; whole sweep "
                  f"{result['total_cpu']:.2f} CPU-s, {result['total_wall']:.2f} s; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
        median = statistics.median(per_partition)
        print(f"median run-process CPU per partition: {median:.2f} ms ({args.repeats} repeats)")
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "run_process_cpu.json").write_text(json.dumps(
            {"per_partition_ms": per_partition, "median_ms": median, "runs": results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
