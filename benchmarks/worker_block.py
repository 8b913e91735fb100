"""Benchmark: what a pool worker spends on one partition of short simulations, in process.

``batch.run_task`` (what a pool worker runs for a partition: each replication's simulation in its
span, its row, the block's Parquet file and content hash) on blocks of ``linear`` simulations
(one Gaussian draw each), one after another in this process, after a warm-up: CPU time a block
and a simulation (``time.process_time``), median of ``--repeats``. No pool: the pickling of tasks
and outcomes and the run process's work are not in it (``scale.py`` measures the whole sweep).
Tracing as configured by OTEL_* (none set: nothing exported, as a sweep without a collector).
``--profile`` prints cProfile's top entries (cProfile inflates Python-heavy code: read shares).

    .venv/bin/python benchmarks/worker_block.py --blocks 1 10 100
    .venv/bin/python benchmarks/worker_block.py --blocks 10 --profile
"""

import argparse
import cProfile
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simlab_pipelines import batch  # noqa: E402

# A batch span's traceparent, as a run hands its tasks.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def tasks(count: int, block: int, root: str) -> list[batch.Task]:
    """``count`` partitions of ``block`` replications over 70 configurations of ``linear``."""
    found = []
    for index in range(count):
        x1, x2 = float(index % 10), float(index % 7)
        first = index * block
        config_key = f"x1-{x1}_x2-{x2}"
        found.append(batch.Task(
            experiment="worker_block", config_key=config_key, replication=first,
            partition_key=f"{config_key}|{first}" + (f"-{first + block - 1}" if block > 1 else ""),
            model="linear", params={"x1": x1, "x2": x2, "noise_sd": 1.0, "b2": 0.5}, seed=11,
            horizon=1.0, warmup=0.0, common_random_numbers=True, series_interval=None,
            inputs_hash="0" * 16, code_version="benchmark", run_id="benchmark",
            results_uri=root, traceparent=TRACEPARENT,
            last_replication=first + block - 1 if block > 1 else None))
    return found


def measure(block: int, simulations: int) -> float:
    """CPU seconds a block, over ``simulations`` simulations after a warm-up."""
    root = tempfile.mkdtemp(prefix="simlab-worker-block-")
    try:
        count = max(1, simulations // block)
        for task in tasks(max(1, 200 // block), block, root + "/warm"):
            batch.run_task(task)
        todo = tasks(count, block, root + "/measured")
        start = time.process_time()
        for task in todo:
            outcome = batch.run_task(task)
            if outcome.error is not None:
                raise RuntimeError(outcome.error)
        return (time.process_time() - start) / count
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    results = []
    for block in args.blocks:
        seconds = statistics.median(measure(block, args.simulations)
                                    for _ in range(args.repeats))
        results.append({"block": block, "cpu_ms_a_block": seconds * 1e3,
                        "cpu_ms_a_simulation": seconds / block * 1e3})
        print(f"blocks of {block}: {seconds * 1e3:.3f} ms of CPU a block, "
              f"{seconds / block * 1e3:.4f} ms a simulation", flush=True)
        if args.profile:
            profile = cProfile.Profile()
            root = tempfile.mkdtemp(prefix="simlab-worker-block-")
            todo = tasks(max(1, args.simulations // block), block, root)
            profile.enable()
            for task in todo:
                batch.run_task(task)
            profile.disable()
            shutil.rmtree(root, ignore_errors=True)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / "worker_block.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
