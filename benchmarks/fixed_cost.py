"""Benchmark: a sweep's fixed cost, ``simlab sweep`` of 4 tiny simulations against the reference.

- reference: one ``python -c`` that imports dagster, duckdb, polars and the engine and runs the
  same 4 simulations (``engine.simulate``, same parameters, seeds and replications): what any
  tool built on these libraries pays at least.
- warm: ``simlab sweep`` (2 workers) on an instance that has been used before (its databases
  exist, the spec is current: no spec run) with an empty data directory, so the 4 simulations,
  their runs and the summary all happen again.
- fresh: ``simlab sweep`` on a new DAGSTER_HOME (a copy of ``dagster_home/dagster.yaml``) and
  data directory; simlab's instance template is in the benchmark's SIMLAB_CACHE_DIR (made by
  the discarded warm-up, as on any machine after its first sweep).

Each from process start to exit, CPU time of the command and all its descendants included
(this process adopts orphans: Linux subreaper). Also measured for each sweep, from its own
output and DuckDB file: when the answer was printed (its last line on stdout, PYTHONUNBUFFERED
as at a terminal) after the last simulation ended (``after_last_simulation``: target < 1 s),
after the last result file was written (``after_last_recorded``: a sweep's head start,
``simlab_pipelines/ahead.py``, simulates a fresh experiment's first round before its runs exist,
so its simulations can end before the start-up does; the run records them later) and the other
parts of the sweep's timeline. Runs interleave (reference, warm, fresh, ...) after a
discarded warm-up of each; medians and ratios to the reference's median are printed and
written to ``benchmarks/results/fixed_cost.json``. Targets: warm <= 1.5x, fresh <= 2x.

    .venv/bin/python benchmarks/fixed_cost.py --repeats 5
    git archive <commit> | tar -x -C /tmp/before   # then, a before/after in the same run:
    .venv/bin/python benchmarks/fixed_cost.py --repeats 5 --compare /tmp/before
"""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from sweep_throughput import (
    _children,
    _cpu,
    _simulations,
    become_subreaper,
    command_environment,
    comparison_parser,
    load,
    reap,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NAME = "fixed_cost"
PARAMETERS = {"arrival_rate": 0.8, "service_rate": 1.0, "capacity": 10}
EXPERIMENT = {
    "name": NAME, "description": "Four tiny simulations: a sweep's fixed cost.", "model": "mmck",
    "seed": 7, "replications": 2, "horizon": 200, "warmup": 20, "parameters": PARAMETERS,
    "factors": {"servers": [1, 2]}, "baseline": {"servers": 1},
    "objective": {"metric": "mean_wait", "direction": "minimize"},
}
REFERENCE = f"""
import dagster, duckdb, polars, engine
for servers in (1, 2):
    for replication in range(2):
        engine.simulate("mmck", {{**{PARAMETERS!r}, "servers": servers}},
                        replication=replication, seed=7, horizon=200, warmup=20)
"""


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``argv``; wall and CPU seconds (descendants included) and when each stdout line came."""
    known = _children()
    cpu_before = _cpu(resource.RUSAGE_CHILDREN)
    lines: list[tuple[float, str]] = []
    started = time.time()
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    errors: list[str] = []

    def read_stdout() -> None:
        for line in process.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    # Read in threads: the pipes stay open while descendants (the fork server) linger after
    # the command has exited, and the command's wall time ends with its own exit (a shell's
    # prompt comes back then); the descendants' CPU is still counted (reap).
    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: errors.append(process.stderr.read()),
                                daemon=True)]
    for reader in readers:
        reader.start()
    code = process.wait()
    wall = time.perf_counter() - start
    reap(known)
    for reader in readers:
        reader.join()
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}:\n{errors[0][-3000:]}")
    return {"wall": wall, "cpu": _cpu(resource.RUSAGE_CHILDREN) - cpu_before,
            "started": started, "lines": lines}


def _environment(home: Path, data: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in command_environment().items() if not k.startswith("SIMLAB_")}
    env.update({"DAGSTER_HOME": str(home), "SIMLAB_DATA_DIR": str(data),
                "SIMLAB_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"})
    return env


def _new_home(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", path / "dagster.yaml")
    return path


def run_reference(scratch: Path) -> dict[str, Any]:
    return _timed([sys.executable, "-c", REFERENCE], command_environment(), scratch)


def run_sweep(experiment: Path, home: Path, data: Path, cache: Path,
              workers: int, tree: Path | None = None) -> dict[str, Any]:
    """One ``simlab sweep`` (``data`` emptied first) with its timeline; ``tree``: the simlab
    source tree to run instead of this one (an earlier commit, for a before/after)."""
    shutil.rmtree(data, ignore_errors=True)
    env = _environment(home, data, cache)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    run = _timed([str(BIN / "simlab"), "sweep", str(experiment), "--workers", str(workers)],
                 env, experiment.parent)
    intervals = _simulations(data / "simlab.duckdb")
    if len(intervals) != 4:
        raise RuntimeError(f"{len(intervals)} simulations in DuckDB, expected 4")
    answered = run["lines"][-1][0]
    first, last = intervals[0][0], max(end for _, end in intervals)
    recorded = max(f.stat().st_mtime for f in (data / "results").rglob("*.parquet"))
    run.update({
        "before_first_simulation": first - run["started"],
        "simulating": last - first,
        "after_last_simulation": answered - last,  # the answer printed (target < 1 s)
        "after_last_recorded": answered - recorded,
        "after_answer": run["started"] + run["wall"] - answered,  # exit
    })
    del run["lines"]
    return run


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in runs[0] if isinstance(runs[0][k], float) and k != "started"]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main() -> None:
    parser = comparison_parser(__doc__, repeats=5)
    args = parser.parse_args()
    become_subreaper()
    scratch = Path(tempfile.mkdtemp(prefix="simlab-fixed-cost-"))
    experiment = scratch / f"{NAME}.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    cache = scratch / "cache"
    results: dict[str, list[dict[str, Any]]] = {"reference": [], "warm": [], "fresh": []}
    trees: dict[str, Path | None] = {"": None}
    if args.compare is not None:
        results.update({"warm (compared)": [], "fresh (compared)": []})
        trees[" (compared)"] = args.compare.resolve()
    homes = {suffix: _new_home(scratch / f"warm-home{i}") for i, suffix in enumerate(trees)}
    loads = [load()]
    try:
        # Discarded: page cache and bytecode, the template, the warm instance's first use.
        run_reference(scratch)
        for suffix, tree in trees.items():
            run_sweep(experiment, homes[suffix], scratch / "data", cache, args.workers, tree)
            run_sweep(experiment, _new_home(scratch / "fresh-home"), scratch / "data", cache,
                      args.workers, tree)
        for i in range(args.repeats):
            results["reference"].append(run_reference(scratch))
            for suffix, tree in trees.items():
                results["warm" + suffix].append(run_sweep(
                    experiment, homes[suffix], scratch / "data", cache, args.workers, tree))
                results["fresh" + suffix].append(run_sweep(
                    experiment, _new_home(scratch / "fresh-home"), scratch / "data", cache,
                    args.workers, tree))
            loads.append(load())
            print(f"repeat {i + 1}: " + ", ".join(
                f"{kind} {runs[-1]['wall']:.2f} s ({runs[-1]['cpu']:.2f} CPU-s)"
                for kind, runs in results.items())
                + f"; answer after the last simulation: warm "
                  f"{results['warm'][-1]['after_last_simulation']:.2f} s, fresh "
                  f"{results['fresh'][-1]['after_last_simulation']:.2f} s; after the last "
                  f"result written: warm {results['warm'][-1]['after_last_recorded']:.2f} s, "
                  f"fresh {results['fresh'][-1]['after_last_recorded']:.2f} s (load {loads[-1]})",
                flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {kind: _summary(runs) for kind, runs in results.items()}
    reference = medians["reference"]["wall"]
    result = {
        "medians": medians, "runs": results, "loads": loads,
        "warm_over_reference": medians["warm"]["wall"] / reference,
        "fresh_over_reference": medians["fresh"]["wall"] / reference,
        "warm_over_reference_cpu": medians["warm"]["cpu"] / medians["reference"]["cpu"],
        "fresh_over_reference_cpu": medians["fresh"]["cpu"] / medians["reference"]["cpu"],
        "nproc": len(os.sched_getaffinity(0)),
        "compared_tree": str(args.compare) if args.compare else None,
    }
    if args.compare is not None:
        result.update({f"{kind}_compared_over_reference": medians[f"{kind} (compared)"]["wall"]
                       / reference for kind in ("warm", "fresh")})
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "fixed_cost.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
