"""Benchmark: 600 simulations of ~24 ms (12 configurations x 50 replications) through
``simlab sweep`` against their floor: where a sweep's fixed cost still shows.

- floor: the same 600 simulations (parameters, seeds, replications, horizon, warm-up, common
  random numbers) through a plain ``multiprocessing.Pool`` over ``engine.simulate`` in this
  process (``sweep_throughput.run_floor``: pool start-up included, nothing written).
- simlab: ``simlab sweep FILE --workers 2`` as a subprocess on a fresh instance and data
  directory (``sweep_throughput.run_simlab``), from process start to exit; DuckDB is checked to
  hold the 600 replications with metrics bit-identical to the floor's.

``mmck`` with lambda = 0.9, mu = 0.5, servers 1..12, capacity 40, an objective; the horizon is
calibrated to ``--target-ms`` of CPU per simulation (a middle configuration) unless given. Runs
alternate (floor, simlab, ...) after a small discarded warm-up; medians, their ratio and the
sweep's breakdown (time before the first and after the last simulation, pool idle) are printed
and written to ``benchmarks/results/medium_sweep.json``. Target: simlab <= 1.3x the floor.
``--compare TREE`` also sweeps with another checkout's code (``PYTHONPATH=TREE``, e.g. ``git
archive`` of the commit before a change) in every repeat, interleaved: a before/after in one run.

    .venv/bin/python benchmarks/medium_sweep.py --repeats 3
    .venv/bin/python benchmarks/medium_sweep.py --repeats 5 --compare /tmp/before
"""

import json
import os
import statistics
import tempfile
from pathlib import Path

import yaml
from sweep_throughput import (
    BASE,
    EXPERIMENT,
    become_subreaper,
    calibrate_horizon,
    comparison_parser,
    jobs,
    load,
    run_floor,
    run_simlab,
)

from simlab_pipelines.experiments import load_experiment

NAME = EXPERIMENT  # the name sweep_throughput's checks of the DuckDB file look for


def write_experiment(directory: Path, configurations: int, replications: int,
                     horizon: float) -> Path:
    spec = {"name": NAME, "model": "mmck", "seed": 2024, "replications": replications,
            "horizon": horizon, "warmup": horizon / 10, "parameters": {**BASE, "capacity": 40},
            "factors": {"servers": list(range(1, configurations + 1))},
            "objective": {"metric": "mean_time_in_system", "direction": "minimize"}}
    path = directory / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = comparison_parser(__doc__, repeats=3)
    parser.add_argument("--configurations", type=int, default=12)
    parser.add_argument("--replications", type=int, default=50)
    parser.add_argument("--target-ms", type=float, default=24.0)
    parser.add_argument("--horizon", type=float, default=None)
    args = parser.parse_args()
    become_subreaper()
    directory = Path(tempfile.mkdtemp(prefix="simlab-medium-"))
    horizon = args.horizon or calibrate_horizon(args.target_ms)
    path = write_experiment(directory, args.configurations, args.replications, horizon)
    work = jobs(load_experiment(path))
    (directory / "warm").mkdir()
    small = write_experiment(directory / "warm", 2, 4, horizon)
    warm = run_floor(jobs(load_experiment(small)), args.workers)  # discarded
    run_simlab(small, args.workers, check=warm.metrics, expected=len(warm.metrics))
    floors, sweeps, details, loads = [], [], [], [load()]
    compared: list[float] = []
    for i in range(args.repeats):
        floor = run_floor(work, args.workers)
        seconds, detail = run_simlab(path, args.workers, check=floor.metrics, expected=len(work))
        if args.compare is not None:
            before, before_detail = run_simlab(
                path, args.workers, extra_env={"PYTHONPATH": str(args.compare.resolve())},
                check=floor.metrics, expected=len(work))
            compared.append(before)
            print(f"repeat {i + 1}: compared tree {before:.2f} s, ratio "
                  f"{before / floor.seconds:.2f}; before the first simulation "
                  f"{before_detail.get('before_first_simulation', 0):.2f} s", flush=True)
        floors.append(floor.seconds)
        sweeps.append(seconds)
        details.append({**detail, "floor_cpu_seconds": floor.cpu,
                        "mean_simulation_ms": 1000 * floor.simulated / len(work)})
        loads.append(load())
        print(f"repeat {i + 1}: floor {floor.seconds:.2f} s ({floor.cpu:.1f} CPU-s), simlab "
              f"{seconds:.2f} s ({detail['cpu_seconds']:.1f} CPU-s), ratio "
              f"{seconds / floor.seconds:.2f}; before the first simulation "
              f"{detail.get('before_first_simulation', 0):.2f} s, after the last "
              f"{detail.get('after_last_simulation', 0):.2f} s, pool idle "
              f"{detail.get('pool_idle', 0):.2f} s (load {loads[-1]})", flush=True)
    result = {"simulations": len(work), "horizon": horizon, "workers": args.workers,
              "floor_seconds": floors, "simlab_seconds": sweeps,
              "floor_median": statistics.median(floors),
              "simlab_median": statistics.median(sweeps),
              "ratio_of_medians": statistics.median(sweeps) / statistics.median(floors),
              "details": details, "loads": loads, "nproc": len(os.sched_getaffinity(0))}
    if compared:
        result.update({"compared_tree": str(args.compare), "compared_seconds": compared,
                       "compared_median": statistics.median(compared),
                       "compared_ratio_of_medians":
                           statistics.median(compared) / statistics.median(floors)})
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "medium_sweep.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
