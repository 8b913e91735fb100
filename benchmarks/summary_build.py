"""Benchmark: building the DuckDB summary from N replication files (5,000 and 50,000 by default).

Synthetic replication files with the real schema are written once (the simulations themselves are
not what is measured), then ``summarise`` + ``write_database`` is timed, median of several runs,
three ways:

- cold: the summary's manifest (``simlab_pipelines.manifest``) removed first, so every file is
  read, as the first build of an experiment does;
- warm: the manifest of the previous build in place and 1% new files since (the summary after a
  round): only those are read;
- round: what a round of the sequential procedure costs before its runs, ``current_results``
  (listing, manifest, targets) after 1% new files, warm; and the same with the manifest removed.

The cost should grow linearly: the ratio of the per-partition times is reported.

    .venv/bin/python benchmarks/summary_build.py --sizes 5000 50000 --repeats 3
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

import engine
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.manifest import manifest_path
from simlab_pipelines.storage import ResultStore, replication_row
from simlab_pipelines.summary import current_results, summarise, write_database

ROOT = Path(__file__).resolve().parent.parent


def make_experiment(directory: Path, partitions: int) -> Path:
    configs = 50
    spec = {"name": f"summary_bench_{partitions}", "model": "mmck", "seed": 1,
            "replications": partitions // configs, "horizon": 1000, "warmup": 100,
            "parameters": {"arrival_rate": 0.9, "service_rate": 0.5},
            "factors": {"servers": list(range(1, 11)), "capacity": [20, 30, 40, 50, 60]}}
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write_results(spec, store: ResultStore, replications: range | None = None) -> None:
    rng = np.random.default_rng(1 + (replications.start if replications else 0))
    metrics = list(engine.get_model(spec.model).metrics)
    now = datetime.now(UTC)
    for config in spec.configurations_list():
        for r in replications or range(spec.replications):
            result = {"model": spec.model, "params": config.params, "replication": r,
                      "seed": {"entropy": spec.seed, "spawn_key": [r]}, "horizon": spec.horizon,
                      "warmup": spec.warmup, "engine_version": engine.ENGINE_VERSION,
                      "wall_seconds": 0.05, "events": 10_000,
                      "metrics": dict(zip(metrics, rng.random(len(metrics)), strict=True))}
            store.write(replication_row(
                experiment=spec.name, config_key=config.key, partition_key=f"{config.key}|{r}",
                result=result, code_version="bench", run_id="bench", trace_id="0" * 32,
                span_id="0" * 16, started_at=now, inputs_hash=spec.inputs_hash(config)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="simlab-summary-bench-"))
    results = {}
    try:
        for size in args.sizes:
            spec = load_experiment(make_experiment(work, size))
            store = ResultStore(str(work / "results"))
            extra = max(1, spec.replications // 100)  # 1% more files per repeat
            next_replication = spec.replications - extra * args.repeats
            write_results(spec, store, range(next_replication))
            manifest = manifest_path(store.root, spec.name)
            cold, warm, rounds, rounds_cold = [], [], [], []
            for _ in range(args.repeats):
                if os.path.exists(manifest):
                    os.unlink(manifest)
                start = time.perf_counter()
                write_database(spec, summarise(spec, store), work / "simlab.duckdb")
                cold.append(time.perf_counter() - start)
                more = range(next_replication, next_replication + extra)
                write_results(spec, store, more)
                next_replication += extra
                start = time.perf_counter()
                current_results(spec, store)
                rounds.append(time.perf_counter() - start)
                start = time.perf_counter()
                write_database(spec, summarise(spec, store), work / "simlab.duckdb")
                warm.append(time.perf_counter() - start)
                os.unlink(manifest)
                start = time.perf_counter()
                current_results(spec, store)
                rounds_cold.append(time.perf_counter() - start)
            times = cold
            results[size] = {"seconds": times, "median": statistics.median(times),
                             "per_partition_ms": statistics.median(times) / size * 1000,
                             "warm_seconds": warm, "warm_median": statistics.median(warm),
                             "round_seconds": rounds, "round_median": statistics.median(rounds),
                             "round_cold_seconds": rounds_cold,
                             "round_cold_median": statistics.median(rounds_cold)}
            print(f"{size} partitions: cold build median {results[size]['median']:.2f} s "
                  f"({results[size]['per_partition_ms']:.3f} ms a partition) {times}; "
                  f"warm build (+1% files) median {results[size]['warm_median']:.2f} s {warm}; "
                  f"round (+1% files) {results[size]['round_median']:.3f} s {rounds}, without "
                  f"manifest {results[size]['round_cold_median']:.3f} s; load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
        sizes = sorted(results)
        if len(sizes) > 1:
            growth = results[sizes[-1]]["per_partition_ms"] / results[sizes[0]]["per_partition_ms"]
            print(f"per-partition cost ratio {sizes[-1]} vs {sizes[0]}: {growth:.2f} (1.0 = linear)")
            results["per_partition_ratio"] = growth
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "summary_build.json").write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
