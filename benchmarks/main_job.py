"""Benchmark: the README's main job, ``simlab sweep experiments/restaurant_staffing.yaml``, against
the floor of the very simulations it ran.

- simlab: the whole command as a subprocess on a fresh local instance (a copy of
  ``dagster_home/dagster.yaml``, SQLite) and a fresh data directory, from process start to exit:
  start-up, spec run, the rounds of the sequential procedure (replication runs), summary run
  (DuckDB, analysis, plots), table printed.
- floor: the simulations that sweep ran, read back from its DuckDB ``replications`` table (model,
  parameters, replication, seed, horizon, warm-up; the file's common random numbers), run by a
  fresh ``python`` process through a spawn ``multiprocessing.Pool(2)`` over ``engine.simulate``:
  interpreter start-up and imports included, nothing written, metrics returned to the parent.

Checked every time: the floor's metrics are bit-identical to the ones in DuckDB's
``observations`` (so both ran the same simulations). Runs alternate (simlab, floor, simlab, ...)
after a discarded warm-up of each; medians of wall seconds and their ratio are reported and
written to ``benchmarks/results/main_job.json``. Target: simlab <= 2x the floor.

    .venv/bin/python benchmarks/main_job.py --repeats 3
    .venv/bin/python benchmarks/main_job.py --repeats 3 --compare /tmp/before  # a before/after
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from sweep_throughput import (
    _cpu,
    become_subreaper,
    command_environment,
    comparison_parser,
    load,
    run_simlab,
)

from simlab_pipelines.experiments import load_experiment

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT_FILE = ROOT / "experiments" / "restaurant_staffing.yaml"

FLOOR = r'''
import json, sys, time
from multiprocessing import get_context

import engine


def run(job):
    key, replication, model, params, seed, horizon, warmup, crn = job
    result = engine.simulate(model, params, replication=replication, seed=seed, horizon=horizon,
                             warmup=warmup, common_random_numbers=crn)
    return key, replication, result.metrics


if __name__ == "__main__":
    jobs = json.load(open(sys.argv[1]))
    with get_context("spawn").Pool(2) as pool:
        out = pool.map(run, jobs, chunksize=4)
    json.dump([[k, r, m] for k, r, m in out], open(sys.argv[2], "w"))
'''


def simulations(db: Path, experiment: str, crn: bool) -> dict[str, Any]:
    """The simulations the sweep ran (as floor jobs) and their metrics, from its DuckDB file."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT config_key, replication, model, params, seed_entropy, horizon, warmup "
            "FROM replications WHERE experiment = ? ORDER BY config_key, replication",
            [experiment]).fetchall()
        observed = con.execute(
            "SELECT config_key, replication, metric, value FROM observations "
            "WHERE experiment = ?", [experiment]).fetchall()
    finally:
        con.close()
    jobs = [[k, r, model, json.loads(params), seed, horizon, warmup, crn]
            for k, r, model, params, seed, horizon, warmup in rows]
    return {"jobs": jobs, "observed": observed}


def run_floor(jobs: list, observed: list) -> tuple[float, float]:
    """Wall and CPU seconds of the floor process over ``jobs`` (its pool workers included);
    raises unless its metrics match."""
    with tempfile.TemporaryDirectory(prefix="simlab-main-floor-") as tmp:
        script, jobs_file, out = Path(tmp, "floor.py"), Path(tmp, "jobs.json"), Path(tmp, "o.json")
        script.write_text(FLOOR)
        jobs_file.write_text(json.dumps(jobs))
        cpu = _cpu(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, str(script), str(jobs_file), str(out)], check=True,
                       cwd=ROOT, env=command_environment())
        seconds = time.perf_counter() - start
        cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu
        metrics = {(k, r): m for k, r, m in json.loads(out.read_text())}
    for key, replication, metric, value in observed:
        theirs = metrics.get((key, replication), {}).get(metric)
        if theirs is None:
            continue  # a response or derived value the engine does not return
        if value != theirs and not (value != value and theirs != theirs):
            raise RuntimeError(f"{key}|{replication} {metric}: simlab {value!r} != floor {theirs!r}")
    return seconds, cpu


def main() -> None:
    parser = comparison_parser(__doc__, repeats=3)
    parser.add_argument("--file", type=Path, default=EXPERIMENT_FILE)
    args = parser.parse_args()
    become_subreaper()
    spec = load_experiment(args.file)
    seen: dict[str, Any] = {}

    def inspect(db: Path) -> int:
        seen.update(simulations(db, spec.name, spec.common_random_numbers))
        return len(seen["jobs"])

    variants = {"simlab": None}
    if args.compare is not None:
        variants["compared"] = {"PYTHONPATH": str(args.compare.resolve())}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    details: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    floor, floor_cpu = [], []
    for extra in variants.values():  # warm-up, discarded
        run_simlab(args.file, args.workers, inspect=inspect, extra_env=extra)
    run_floor(seen["jobs"][:40], [])
    for i in range(args.repeats):
        before = load()
        for name, extra in variants.items():
            seconds, detail = run_simlab(args.file, args.workers, inspect=inspect,
                                         extra_env=extra)
            runs[name].append(seconds)
            details[name].append(detail)
        seconds, cpu = run_floor(seen["jobs"], seen["observed"])
        floor.append(seconds)
        floor_cpu.append(cpu)
        print(f"repeat {i + 1}: floor {floor[-1]:.2f} s ({cpu:.1f} CPU-s), " + ", ".join(
            f"{name} {runs[name][-1]:.2f} s ({details[name][-1]['cpu_seconds']:.1f} CPU-s, "
            f"ratio {runs[name][-1] / floor[-1]:.2f})" for name in variants)
            + f"; {len(seen['jobs'])} simulations (load {before} -> {load()})", flush=True)
        for name in variants:
            print(f"    {name} breakdown: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in details[name][-1].items()), flush=True)
    simlab = runs["simlab"]
    result = {"simlab_seconds": simlab, "floor_seconds": floor, "floor_cpu_seconds": floor_cpu,
              "median_simlab": statistics.median(simlab), "median_floor": statistics.median(floor),
              "ratio_of_medians": statistics.median(simlab) / statistics.median(floor),
              "ratios": [s / f for s, f in zip(simlab, floor, strict=True)],
              "simulations": len(seen["jobs"]), "details": details["simlab"],
              "nproc": len(os.sched_getaffinity(0))}
    if args.compare is not None:
        result.update({"compared_tree": str(args.compare), "compared_seconds": runs["compared"],
                       "compared_details": details["compared"],
                       "median_compared": statistics.median(runs["compared"]),
                       "compared_ratio_of_medians": statistics.median(runs["compared"])
                       / statistics.median(floor)})
    print(f"median simlab {result['median_simlab']:.2f} s, floor {result['median_floor']:.2f} s: "
          f"{result['ratio_of_medians']:.2f}x (target <= 2x)"
          + (f"; compared tree {result['median_compared']:.2f} s: "
             f"{result['compared_ratio_of_medians']:.2f}x" if args.compare else ""))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "main_job.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
