"""Benchmark: the CPU of a run's own process, as the daemon or a Kubernetes run pod runs it.

(``run_process_cpu.py`` measures the other way runs execute: in ``simlab sweep``'s process.)

One run of the replications job of ``linear`` (``--configs`` configurations x
``--replications`` replications, one partition each) executed in process
(``job.execute_in_process``) on a fresh SQLite instance and data directory, after its spec run;
the run's process CPU is measured around the run alone (the pool workers, other processes, are
not in it): what Dagster's events and simlab's bookkeeping cost a partition in the process that
loads ``simlab_pipelines.definitions``. Each measurement is a fresh ``python``; with ``--compare
TREE`` the same run of another source tree's simlab alternates with this one's.

    .venv/bin/python benchmarks/run_pod_cpu.py --repeats 3
    git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python benchmarks/run_pod_cpu.py --repeats 3 --compare /tmp/before
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from sweep_throughput import command_environment

ROOT = Path(__file__).resolve().parent.parent
NAME = "run_pod_cpu"

RUN = """
import json, sys, time

def main():
    import dagster as dg
    from simlab_pipelines.definitions import defs
    instance = dg.DagsterInstance.get()
    assert defs.get_job_def(sys.argv[1] + "_spec").execute_in_process(instance=instance).success
    job = defs.get_job_def(sys.argv[1] + "_replications")
    cpu, wall = time.process_time(), time.perf_counter()
    result = job.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": sys.argv[2],
        "dagster/asset_partition_range_end": sys.argv[3]})
    assert result.success
    print(json.dumps({"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}))

if __name__ == "__main__":  # the pool's workers import this module again
    main()
"""


def experiment(directory: Path, configs: int, replications: int) -> tuple[str, str]:
    """The experiment file; the first and last partition keys of its replications."""
    x1 = [float(i) for i in range(configs)]
    spec = {"name": NAME, "model": "linear", "seed": 11, "replications": replications,
            "parameters": {"noise_sd": 1.0, "b2": 0.5, "x2": 0.0}, "factors": {"x1": x1},
            "baseline": {"x1": 0.0}, "objective": {"metric": "y", "direction": "minimize"}}
    (directory / f"{NAME}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return f"x1-{x1[0]}|0", f"x1-{x1[-1]}|{replications - 1}"


def measure(tree: Path, configs: int, replications: int) -> dict[str, float]:
    scratch = Path(tempfile.mkdtemp(prefix="simlab-run-pod-cpu-"))
    try:
        home, data, exp = scratch / "home", scratch / "data", scratch / "experiments"
        for d in (home, data, exp):
            d.mkdir()
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        first, last = experiment(exp, configs, replications)
        env = {k: v for k, v in command_environment().items() if not k.startswith("SIMLAB_")}
        env.update({"DAGSTER_HOME": str(home), "SIMLAB_DATA_DIR": str(data),
                    "SIMLAB_EXPERIMENTS_DIR": str(exp), "PYTHONPATH": str(tree)})
        script = scratch / "run.py"
        script.write_text(RUN)
        out = subprocess.run([sys.executable, str(script), NAME, first, last], env=env,
                             cwd=scratch, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=20)
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", type=Path, default=None, help="another source tree")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" /
                        "run_pod_cpu.json")
    args = parser.parse_args()
    trees = {"this": ROOT, **({"compared": args.compare.resolve()} if args.compare else {})}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for repeat in range(args.repeats):
        for name, tree in trees.items():
            runs[name].append(measure(tree, args.configs, args.replications))
            print(f"repeat {repeat + 1}, {name}: {runs[name][-1]['cpu_s']:.2f} CPU-s, "
                  f"{runs[name][-1]['wall_s']:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    partitions = args.configs * args.replications
    result = {"partitions": partitions, "runs": runs, "medians": {
        name: {key: statistics.median(r[key] for r in found) for key in ("cpu_s", "wall_s")}
        for name, found in runs.items()}}
    for name, median in result["medians"].items():
        print(f"{name}: median {median['cpu_s']:.2f} CPU-s "
              f"({1000 * median['cpu_s'] / partitions:.2f} ms a partition), {median['wall_s']:.2f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
