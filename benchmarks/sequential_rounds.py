"""Benchmark: a precision target's rounds, where the pool would wait at every round boundary.

A sequential experiment runs in rounds: each is planned from the results of the rounds before
it, and between two rounds the sweep records the last one (files, rows, Dagster events), plans
the next and creates its run. Without a head start for later rounds, the pool waits meanwhile.

On this 2-CPU machine a CPU-bound simulation hides that wait: the sweep's own process needs a
CPU for that bookkeeping, and two busy workers already fill both. On a machine with a core to
spare for the sweep (most workstations with ``--workers`` below the core count, a run pod with
its own CPU request), the wait is idle pool. This benchmark stands in for that machine: its
model, a plug-in written to a scratch directory, waits ``--wait-ms`` (sleeping, leaving its CPU
free) and then draws its metric from a stream, so what separates the sweep's wall time from the
pool's own work is the sweep's critical path, not CPU contention.

- simlab: ``simlab sweep FILE --workers 2`` on a fresh instance and data directory
  (``sweep_throughput.run_simlab``), from process start to exit;
- the pool's own work: the sum of the simulations' ``wall_seconds`` (DuckDB) over the workers;
- beyond it: the sweep's wall time less the pool's own work (start-up, round boundaries, the
  summary), and the pool's idle time within the simulating span.

``--compare TREE`` also sweeps with another checkout's code (``PYTHONPATH=TREE``, e.g. ``git
archive`` of the commit before a change) in every repeat, interleaved: a before/after in one run.
Medians are printed and written to ``benchmarks/results/sequential_rounds.json``.

    .venv/bin/python benchmarks/sequential_rounds.py --repeats 4 --compare /tmp/before
"""

import json
import statistics
import tempfile
from pathlib import Path

import duckdb
import yaml
from sweep_throughput import become_subreaper, comparison_parser, load, run_simlab

NAME = "sequential_rounds"

MODEL = '''"""A simulation that waits (sleeps) and then draws its metric: the benchmark's stand-in."""
import time

from engine import Model, ModelRun, Parameter


def run(params, streams, warmup, horizon, series_interval=None):
    time.sleep(params["wait_ms"] / 1000)
    draws = [streams["draws"].exponential(params["mean"]) for _ in range(int(horizon))]
    return ModelRun({"draw_mean": sum(draws) / len(draws)}, events=len(draws))


MODEL = Model(
    name="waiting_draws",
    description="waits, then averages exponential draws",
    parameters=(Parameter("mean", float, "mean of a draw", default=1.0, minimum=0.001,
                          maximum=1e6),
                Parameter("wait_ms", float, "how long a simulation waits (ms)", default=30.0,
                          minimum=0.0, maximum=1e6)),
    metrics={"draw_mean": "the mean of the draws"},
    units={"draw_mean": "1"},
    better={"draw_mean": "lower"},
    run=run,
    default_horizon=20.0,
    default_warmup=0.0,
    version="1",
)
'''


def write_experiment(directory: Path, wait_ms: float, configurations: int) -> Path:
    (directory / "waiting_draws.py").write_text(MODEL)
    spec = {"name": NAME, "model": "waiting_draws:MODEL", "seed": 11, "replications": 10,
            "horizon": 20.0, "warmup": 0.0,
            "parameters": {"wait_ms": wait_ms},
            "factors": {"mean": [float(m) for m in range(1, configurations + 1)]},
            "precision": {"metric": "draw_mean", "relative_half_width": 0.03,
                          "max_replications": 300}}
    path = directory / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _simulated(db: Path) -> dict[str, float]:
    with duckdb.connect(str(db), read_only=True) as con:
        count, seconds = con.execute(
            "SELECT count(*), sum(wall_seconds) FROM replications").fetchone()
        rounds = con.execute("SELECT count(DISTINCT dagster_run_id) FROM replications").fetchone()
    return {"simulations": count, "simulation_seconds": seconds, "runs": rounds[0]}


def _measure(path: Path, workers: int, env: dict[str, str] | None) -> dict[str, float]:
    seconds, detail = run_simlab(path, workers, extra_env=env, inspect=_simulated)
    work = detail["inspected"]["simulation_seconds"] / workers
    return {"seconds": seconds, "pool_work": work, "beyond": seconds - work,
            "pool_idle": detail.get("pool_idle", 0.0), "cpu_seconds": detail["cpu_seconds"],
            **detail["inspected"]}


def main() -> None:
    parser = comparison_parser(__doc__, repeats=3)
    parser.add_argument("--wait-ms", type=float, default=30.0)
    parser.add_argument("--configurations", type=int, default=4)
    args = parser.parse_args()
    become_subreaper()
    directory = Path(tempfile.mkdtemp(prefix="simlab-rounds-"))
    path = write_experiment(directory, args.wait_ms, args.configurations)
    variants = {"simlab": None}
    if args.compare is not None:
        # The plug-in is found next to the experiment file, whichever tree runs the sweep.
        variants["compared"] = {"PYTHONPATH": str(args.compare.resolve())}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for i in range(args.repeats):
        for name, env in variants.items():
            measured = _measure(path, args.workers, env)
            results[name].append(measured)
            print(f"repeat {i + 1} {name}: {measured['seconds']:.2f} s, "
                  f"{measured['simulations']} simulations, pool work "
                  f"{measured['pool_work']:.2f} s, beyond it {measured['beyond']:.2f} s, "
                  f"pool idle {measured['pool_idle']:.2f} s ({measured['cpu_seconds']:.1f} "
                  f"CPU-s; load {load()})", flush=True)
    summary = {name: {key: statistics.median(m[key] for m in runs)
                      for key in ("seconds", "pool_work", "beyond", "pool_idle")}
               for name, runs in results.items()}
    if args.compare is not None:
        faster = sum(a["seconds"] < b["seconds"]
                     for a, b in zip(results["simlab"], results["compared"], strict=True))
        summary["simlab_over_compared"] = (summary["simlab"]["seconds"]
                                           / summary["compared"]["seconds"])
        summary["faster_in"] = f"{faster} of {args.repeats}"
    print(json.dumps(summary, indent=2))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "sequential_rounds.json").write_text(json.dumps(
        {"wait_ms": args.wait_ms, "workers": args.workers, "summary": summary,
         "runs": results, "compared_tree": str(args.compare) if args.compare else None},
        indent=2))


if __name__ == "__main__":
    main()
