"""Benchmark: building the DuckDB summary from N replication files (5,000, 20,000 and 50,000 by
default), and a round of the sequential procedure on them.

Synthetic replication files with the real schema are written once (the simulations themselves are
not what is measured), in runs of at most 100 partitions (one configuration's consecutive
replications, as a backfill splits them), each run leaving its fragment as the replications step
does (``manifest.record_run``). Then ``summarise`` + ``write_database`` is timed, median of several
runs, four ways:

- cold: no manifest (``simlab_pipelines.manifest``) and no fragments, so every file is read: a first
  build of results written by something else (or an older simlab), or after the manifest is lost;
- sweep: no manifest, the fragments as the runs left them: the first build of a sweep;
- warm: the manifest of the previous build in place and 1% new files since (a run's, with its
  fragment), the summary after a round;
- round: what a round of the sequential procedure costs before its runs, ``current_results``
  (listing, manifest and fragments, observations, targets) of the experiment with a precision
  target, after 1% new files; and the same with manifest and fragments removed ("cold round").

The cost should grow linearly: the ratio of the per-partition times is reported. The run-process
time of writing the fragments is reported per partition too. The analysis (scipy) is imported
before timing: the summary loads it on first use, a cost of the process, not of a build.

    .venv/bin/python benchmarks/summary_build.py --sizes 5000 20000 50000 --repeats 2
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
from simlab_pipelines.analysis import analyse_experiment  # noqa: F401  (see below)
from simlab_pipelines.batch import Outcome
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.manifest import manifest_path, record_run, runs_directory
from simlab_pipelines.storage import ResultStore, replication_row
from simlab_pipelines.summary import current_results, summarise, write_database

ROOT = Path(__file__).resolve().parent.parent
RUN_SIZE = 100  # partitions per run: SIMLAB_MAX_PARTITIONS_PER_RUN's default


def make_experiment(directory: Path, partitions: int, sequential: bool = False) -> Path:
    """50 configurations; ``sequential``: the same experiment (same name, same results) with a
    precision target no configuration reaches, so that every round replays the procedure."""
    configs = 50
    spec = {"name": f"summary_bench_{partitions}", "model": "mmck", "seed": 1,
            "replications": partitions // configs, "horizon": 1000, "warmup": 100,
            "parameters": {"arrival_rate": 0.9, "service_rate": 0.5},
            "factors": {"servers": list(range(1, 11)), "capacity": [20, 30, 40, 50, 60]}}
    if sequential:
        spec["precision"] = {"metric": "mean_wait", "relative_half_width": 1e-6,
                             "max_replications": 2 * spec["replications"]}
    # The name must match the file's: the sequential one lives in a directory of its own.
    directory = directory / "sequential" if sequential else directory
    directory.mkdir(exist_ok=True)
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write_results(spec, store: ResultStore, replications: range) -> float:
    """Write the files of ``replications`` of every configuration, in runs of RUN_SIZE that
    leave their fragments; returns the seconds spent writing fragments."""
    rng = np.random.default_rng(1 + replications.start)
    metrics = list(engine.get_model(spec.model).metrics)
    now = datetime.now(UTC)
    recording = 0.0
    for config in spec.configurations_list():
        for start in range(replications.start, replications.stop, RUN_SIZE):
            outcomes = []
            for r in range(start, min(start + RUN_SIZE, replications.stop)):
                result = {"model": spec.model, "params": config.params, "replication": r,
                          "seed": {"entropy": spec.seed, "spawn_key": [r]},
                          "horizon": spec.horizon, "warmup": spec.warmup,
                          "engine_version": engine.ENGINE_VERSION, "wall_seconds": 0.05,
                          "events": 10_000,
                          "metrics": dict(zip(metrics, rng.random(len(metrics)), strict=True))}
                row = replication_row(
                    experiment=spec.name, config_key=config.key,
                    partition_key=f"{config.key}|{r}", result=result, code_version="bench",
                    run_id="bench", trace_id="0" * 32, span_id="0" * 16, started_at=now,
                    inputs_hash=spec.inputs_hash(config))
                path, identity = store.write_identified(row)
                outcomes.append(Outcome(None, row, path, identity=identity))
            begin = time.process_time()
            record_run(store, spec.name, f"bench-{config.key}-{start}", outcomes)
            recording += time.process_time() - begin
    return recording


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="simlab-summary-bench-"))
    results = {}
    try:
        for size in args.sizes:
            spec = load_experiment(make_experiment(work, size))
            sequential = load_experiment(make_experiment(work, size, sequential=True))
            store = ResultStore(str(work / "results"))
            db = work / "simlab.duckdb"
            extra = max(1, spec.replications // 100)  # 1% more files per repeat
            next_replication = spec.replications - extra * args.repeats
            recording = write_results(spec, store, range(next_replication))
            manifest = manifest_path(store.root, spec.name)
            fragments = Path(runs_directory(store.root, spec.name))
            kept = work / "fragments"  # every fragment the runs left, for each sweep build
            shutil.copytree(fragments, kept)

            def build(spec=spec, db=db, store=store):
                write_database(spec, summarise(spec, store), db)

            times: dict[str, list[float]] = {k: [] for k in
                                             ("cold", "sweep", "warm", "round", "round_cold")}
            for _ in range(args.repeats):
                if os.path.exists(manifest):
                    os.unlink(manifest)
                shutil.rmtree(fragments, ignore_errors=True)
                times["cold"].append(_timed(build))
                os.unlink(manifest)
                shutil.copytree(kept, fragments, dirs_exist_ok=True)
                times["sweep"].append(_timed(build))
                more = range(next_replication, next_replication + extra)
                recording += write_results(spec, store, more)
                next_replication += extra
                shutil.copytree(fragments, kept, dirs_exist_ok=True)
                times["round"].append(_timed(lambda s=sequential, st=store:
                                             current_results(s, st)))
                times["warm"].append(_timed(build))
                os.unlink(manifest)
                times["round_cold"].append(_timed(lambda s=sequential, st=store:
                                                  current_results(s, st)))
            shutil.rmtree(kept)
            medians = {k: statistics.median(v) for k, v in times.items()}
            results[size] = {**{f"{k}_seconds": v for k, v in times.items()},
                             **{f"{k}_median": m for k, m in medians.items()},
                             "per_partition_ms": {k: m / size * 1000 for k, m in medians.items()},
                             "fragment_ms_per_partition": recording / next_replication
                             / len(spec.configurations_list()) * 1000}
            print(f"{size} partitions: cold build {medians['cold']:.2f} s "
                  f"({medians['cold'] / size * 1000:.3f} ms a partition); sweep build (runs' "
                  f"fragments) {medians['sweep']:.2f} s; warm build (+1% files) "
                  f"{medians['warm']:.2f} s; round (+1% files) {medians['round']:.3f} s, "
                  f"without manifest {medians['round_cold']:.3f} s; fragments "
                  f"{results[size]['fragment_ms_per_partition']:.3f} ms of run-process CPU a "
                  f"partition; load {os.getloadavg()[0]:.1f}", flush=True)
            shutil.rmtree(work / "results")
        sizes = sorted(results)
        if len(sizes) > 1:
            ratios = {k: results[sizes[-1]]["per_partition_ms"][k]
                      / results[sizes[0]]["per_partition_ms"][k]
                      for k in results[sizes[0]]["per_partition_ms"]}
            print(f"per-partition cost ratio {sizes[-1]} vs {sizes[0]} (1.0 = linear): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
            results["per_partition_ratio"] = ratios
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "summary_build.json").write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
