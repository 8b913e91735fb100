"""Benchmark: a sweep through `simlab sweep` against the floor and against process-per-simulation.

The sweep: ``mmck`` (M/M/c/K, lambda = 0.9, mu = 0.5), servers 1..10 x capacity 20..60 = 50
configurations x 100 replications = 5,000 simulations, the horizon calibrated so that one
simulation takes about ``--target-ms`` of CPU (warm-up = horizon / 10 on top, as in the file),
and an objective (minimise ``mean_time_in_system``), so the summary step also ranks the
configurations, as for a user's experiment.

- floor: the same simulations (same parameters, seed, replication, horizon, warm-up, common random
  numbers) through a plain ``multiprocessing.Pool`` over ``engine.simulate``; nothing is written,
  the metrics come back to the parent. Pool start-up is included.
- floor+write (``--floor-writes``): the floor plus what a simlab worker writes per simulation, one
  Parquet file through simlab's own ``ResultStore`` (no Dagster, no tracing, no summary). It tells
  how much of simlab's overhead is the writing.
- simlab: ``simlab sweep`` on a fresh local instance (a copy of ``dagster_home/dagster.yaml``,
  SQLite) and a fresh data directory, as a subprocess: the whole command, from process start to
  exit (Dagster runs, event log, summary build, table printed), no OTLP endpoint.
- process-per-simulation: ``simlab-engine run ... --json``, one process per simulation, as many at
  once as workers (the pod-per-run pattern in miniature); measured on a sample spread evenly over
  the sweep (every k-th simulation) and scaled to the full sweep, since 5,000 interpreter start-ups
  take a long time.

Checks, not just timings: simlab's DuckDB holds exactly configurations x replications rows, and
its metrics are bit-identical to the floor's (so both ran the same simulations); the sampled
process-per-simulation outputs are identical too. The simlab run's wall time is also broken down
from the Dagster run records (start-up, spec run, replication runs, gaps, summary run, exit).

Runs alternate (floor, [floor+write,] simlab, floor, ...), after one small discarded warm-up of
each; the medians (wall and CPU seconds, CPU of all descendants included) are reported and
written to ``benchmarks/results/sweep_throughput.json`` (after every repeat).

    .venv/bin/python benchmarks/sweep_throughput.py --configs 50 --replications 100 \\
        --horizon 1710 --repeats 3

(the command of BENCHMARKS.md; without ``--horizon`` it is calibrated to ``--target-ms``, and
``--floor-writes`` adds the floor+write variant).

``--help`` lists the options.
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

import engine
from simlab_pipelines.experiments import ExperimentSpec, load_experiment
from simlab_pipelines.settings import usable_cpus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE = {"arrival_rate": 0.9, "service_rate": 0.5}
EXPERIMENT = "sweep_benchmark"

Job = tuple[str, int, str, dict[str, Any], int, float, float, bool]
Metrics = dict[tuple[str, int], dict[str, float]]
Done = tuple[str, int, dict[str, float], float, int, float]  # ..., wall, worker pid, its CPU so far


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def comparison_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """A sweep benchmark's command line: its docstring as help, and the options they share
    (``--repeats``, ``--workers``, ``--output``, ``--compare TREE``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(doc.splitlines()[1:]))
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--compare", type=Path, default=None, metavar="TREE",
                        help="also sweep with this source tree's simlab (e.g. `git archive` of "
                             "an earlier commit) in every repeat, interleaved: a before/after "
                             "in one run")
    return parser


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER), so their CPU time is counted.

    ``simlab sweep``'s fork server and pool workers may outlive it by a moment; adopted and reaped
    here, their CPU time lands in this process's RUSAGE_CHILDREN instead of being lost.
    """
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children() -> set[int]:
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry))
    return found


def reap(known: set[int], timeout: float = 30.0) -> int:
    """Wait for the children not in ``known`` (adopted orphans) to exit; return how many remain."""
    deadline = time.monotonic() + timeout
    while True:
        left = _children() - known
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        left = _children() - known
        if not left or time.monotonic() > deadline:
            return len(left)
        time.sleep(0.05)


def calibrate_horizon(target_ms: float) -> float:
    """The horizon at which one mmck simulation (a middle configuration) takes ~``target_ms`` CPU."""
    params = {**BASE, "servers": 3, "capacity": 40}
    horizon = 2_000.0
    for _ in range(3):
        start = time.process_time()
        for r in range(5):
            engine.simulate("mmck", params, replication=r, seed=1, horizon=horizon,
                            warmup=horizon / 10)
        per_run = (time.process_time() - start) / 5
        horizon *= target_ms / 1000 / per_run
    return round(horizon, -1)


def write_experiment(directory: Path, configs: int, replications: int, horizon: float,
                     name: str = EXPERIMENT) -> Path:
    """The benchmark's experiment file: ``configs`` (a multiple of 10) x ``replications``."""
    if configs % 10:
        raise ValueError(f"--configs {configs}: must be a multiple of 10 (servers 1..10 x capacities)")
    spec = {
        "name": name, "model": "mmck", "seed": 12345,
        "replications": replications, "horizon": horizon, "warmup": horizon / 10,
        "parameters": BASE,
        "factors": {"servers": list(range(1, 11)),
                    "capacity": [20 + 10 * i for i in range(configs // 10)]},
        # As a user's experiment has one; without it `simlab sweep` (at 06eb637) exits 1 on a
        # fresh DuckDB file: the CLI reads an `answers` table that is only built with an objective.
        "objective": {"metric": "mean_time_in_system", "direction": "minimize"},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def jobs(spec: ExperimentSpec) -> list[Job]:
    """Every simulation of the sweep, with exactly the inputs simlab's tasks get."""
    return [(c.key, r, spec.model, c.params, spec.seed, spec.resolved_horizon,
             spec.resolved_warmup, spec.common_random_numbers)
            for c in spec.configurations_list() for r in range(spec.replications)]


def _simulate(job: Job) -> Done:
    key, replication, model, params, seed, horizon, warmup, crn = job
    result = engine.simulate(model, params, replication=replication, seed=seed, horizon=horizon,
                             warmup=warmup, common_random_numbers=crn)
    return (key, replication, result.metrics, result.wall_seconds, os.getpid(),
            _cpu(resource.RUSAGE_SELF))


def _simulate_and_write(job_and_uri: tuple[Job, str]) -> Done:
    from simlab_pipelines.batch import _store
    from simlab_pipelines.storage import replication_row

    job, uri = job_and_uri
    key, replication, model, params, seed, horizon, warmup, crn = job
    started_at = datetime.now(UTC)
    result = engine.simulate(model, params, replication=replication, seed=seed, horizon=horizon,
                             warmup=warmup, common_random_numbers=crn)
    _store(uri).write(replication_row(
        experiment=EXPERIMENT, config_key=key, partition_key=f"{key}|{replication}",
        result=result.to_dict(), code_version="bench", run_id="bench", trace_id="0" * 32,
        span_id="0" * 16, started_at=started_at, inputs_hash="bench"))
    return (key, replication, result.metrics, result.wall_seconds, os.getpid(),
            _cpu(resource.RUSAGE_SELF))


@dataclass
class FloorRun:
    seconds: float  # wall, pool start-up included
    metrics: Metrics  # by (config_key, replication)
    simulated: float  # the simulations' own wall seconds, summed
    cpu: float  # CPU seconds: the workers' (from their start) and this process's during the run


def run_floor(work: list[Job], workers: int, write: bool = False) -> FloorRun:
    """The floor: ``work`` over a plain multiprocessing pool (writing Parquet if ``write``)."""
    scratch = Path(tempfile.mkdtemp(prefix="simlab-bench-floor-"))
    function, items = ((_simulate_and_write, [(j, str(scratch)) for j in work]) if write
                       else (_simulate, work))
    metrics: Metrics = {}
    simulated = 0.0
    worker_cpu: dict[int, float] = {}
    try:
        own = _cpu(resource.RUSAGE_SELF)
        start = time.perf_counter()
        with multiprocessing.get_context("forkserver").Pool(workers) as pool:
            for key, replication, values, wall, pid, cpu in pool.imap_unordered(
                    function, items, chunksize=4):
                metrics[(key, replication)] = values
                simulated += wall
                worker_cpu[pid] = max(cpu, worker_cpu.get(pid, 0.0))
        seconds = time.perf_counter() - start
        return FloorRun(seconds, metrics, simulated,
                        sum(worker_cpu.values()) + _cpu(resource.RUSAGE_SELF) - own)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _simulations(db: Path) -> list[tuple[float, float]]:
    """Every simulation's (start, end), epoch seconds, from the DuckDB file (any experiment)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return [(a, b) for a, b in con.execute(
            "SELECT epoch(started_at), epoch(started_at) + wall_seconds FROM replications "
            "ORDER BY 1").fetchall()]
    finally:
        con.close()


def pool_occupancy(intervals: list[tuple[float, float]], workers: int) -> dict[str, float]:
    """Over the simulating span (first start to last end): seconds with no simulation running,
    and with fewer than ``workers`` running (a worker idle), from the simulations' intervals."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    idle = underused = 0.0
    running, previous = 0, events[0][0] if events else 0.0
    for time_, step in events:
        if running == 0:
            idle += time_ - previous
        if running < workers:
            underused += time_ - previous
        running, previous = running + step, time_
    return {"pool_idle": idle, "pool_not_full": underused}


def _breakdown(home: Path, started: float, ended: float, db: Path | None = None,
               workers: int = 2) -> dict[str, Any]:
    """Where the command's wall time went, from the Dagster run records of the instance and,
    given the DuckDB file, from when the simulations ran (replication runs overlap in a sweep:
    the next starts once the previous one has queued its simulations, so the pool's own
    timeline says more than the runs' durations)."""
    import dagster as dg

    # simlab's event log resolves its relative base_dir against DAGSTER_HOME, so set it meanwhile.
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            records = sorted(instance.get_run_records(), key=lambda r: r.start_time or 0)
            runs = [(r.dagster_run.job_name, r.start_time, r.end_time) for r in records]
        finally:
            instance.dispose()
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous
    spans = {"spec": 0.0, "replications": 0.0, "summary": 0.0}
    count = 0
    for job, start, end in runs:
        kind = job.rsplit("_", 1)[-1]
        spans[kind] = spans.get(kind, 0.0) + (end - start)
        count += kind == "replications"
    replication = [(s, e) for job, s, e in runs if job.endswith("_replications")]
    detail: dict[str, Any] = {
        "command_seconds": ended - started,
        "before_first_run": runs[0][1] - started,
        "spec_run": spans["spec"],
        "replication_run_count": count,
        # first replication run's start to the last one's end (runs overlap inside it)
        "replication_phase": (max(e for _, e in replication) - min(s for s, _ in replication)
                              if replication else 0.0),
        "summary_run": spans["summary"],
        "after_last_run": ended - runs[-1][2],
    }
    if db is not None and db.exists():
        intervals = _simulations(db)
        if intervals:
            first, last = intervals[0][0], max(b for _, b in intervals)
            detail["before_first_simulation"] = first - started
            detail["simulating_span"] = last - first
            detail["after_last_simulation"] = ended - last
            detail.update(pool_occupancy(intervals, workers))
    return detail


def check_database(db: Path, expected: int,
                   floor: dict[tuple[str, int], dict[str, float]] | None) -> int:
    """Raise unless the DuckDB file has ``expected`` distinct replications whose metrics equal the
    floor's; return the number of metric values compared."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (config_key, replication)) FROM replications "
            "WHERE experiment = ?", [EXPERIMENT]).fetchone()
        values = con.execute("SELECT config_key, replication, metric, value FROM observations "
                             "WHERE experiment = ?", [EXPERIMENT]).fetchall()
    finally:
        con.close()
    if rows != expected or distinct != expected:
        raise RuntimeError(f"{db}: {rows} replication rows ({distinct} distinct), expected {expected}")
    if floor is None:
        return 0
    for key, replication, metric, value in values:
        theirs = floor[(key, replication)][metric]
        if value != theirs and not (value != value and theirs != theirs):  # NaN == NaN here
            raise RuntimeError(f"{key}|{replication} {metric}: simlab {value!r} != floor {theirs!r}")
    return len(values)


def command_environment() -> dict[str, str]:
    """This process's environment for a measured command, as on a user's machine: no OTEL_*
    variables, and Python writing its bytecode caches (a PYTHONDONTWRITEBYTECODE inherited from
    a tool's shell made every simlab module compile again in every process, ~0.4 CPU-s)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("OTEL_") and k != "PYTHONDONTWRITEBYTECODE"}


def run_simlab(path: Path, workers: int, extra_env: dict[str, str] | None = None,
               check: dict[tuple[str, int], dict[str, float]] | None = None,
               expected: int | None = None,
               inspect: Callable[[Path], Any] | None = None,
               instance_yaml: Path | None = None) -> tuple[float, dict[str, Any]]:
    """Wall seconds of ``simlab sweep`` on a fresh instance, and its breakdown (with ``cpu_seconds``:
    the command's and all its descendants', when this process is a subreaper).

    With ``expected``, the DuckDB file is checked (and its metrics against ``check``);
    ``inspect(db_path)``'s answer, if given, goes into the breakdown as ``inspected``.
    ``instance_yaml`` replaces ``dagster_home/dagster.yaml`` (to try an instance setting).
    """
    scratch = Path(tempfile.mkdtemp(prefix="simlab-bench-"))
    try:
        home = scratch / "home"
        home.mkdir()
        shutil.copy(instance_yaml or ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        env = command_environment()
        env.update({"DAGSTER_HOME": str(home), "SIMLAB_DATA_DIR": str(scratch / "data")})
        for name in ("SIMLAB_RESULTS_URI", "SIMLAB_DUCKDB_PATH", "SIMLAB_MAX_PARTITIONS_PER_RUN",
                     "SIMLAB_WORKERS"):
            env.pop(name, None)
        env.update(extra_env or {})
        log = scratch / "sweep.log"
        known = _children()
        cpu_before = _cpu(resource.RUSAGE_CHILDREN)
        with open(log, "wb") as out:
            started = time.time()
            start = time.perf_counter()
            code = subprocess.run([str(BIN / "simlab"), "sweep", str(path), "--workers",
                                   str(workers)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  cwd=scratch).returncode
            wall = time.perf_counter() - start
            ended = started + wall
        unreaped = reap(known)
        cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu_before
        if code != 0:
            raise RuntimeError(f"simlab sweep exited {code}:\n{log.read_text()[-3000:]}")
        detail = _breakdown(home, started, ended, scratch / "data" / "simlab.duckdb", workers)
        detail["cpu_seconds"] = cpu
        if unreaped:
            detail["descendants_not_reaped"] = unreaped
        if expected is not None:
            detail["metric_values_checked"] = check_database(scratch / "data" / "simlab.duckdb",
                                                             expected, check)
        if inspect is not None:
            detail["inspected"] = inspect(scratch / "data" / "simlab.duckdb")
        return wall, detail
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_process_per_simulation(work: list[Job], workers: int, sample: int, floor: Metrics
                               ) -> tuple[float, int, float]:
    """Wall seconds, count and CPU seconds of an evenly spread sample of ``sample`` simulations,
    one process each."""
    stride = max(1, len(work) // sample)
    picked = work[::stride][:sample]

    def one(job: Job) -> None:
        key, replication, model, params, seed, horizon, warmup, crn = job
        args = [str(BIN / "simlab-engine"), "run", model, "--seed", str(seed),
                "--replication", str(replication), "--horizon", repr(horizon),
                "--warmup", repr(warmup), "--json"] + ([] if crn else ["--no-crn"])
        for name, value in params.items():
            if value is not None:
                args += ["--" + name.replace("_", "-"), str(value)]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        got = json.loads(out)["metrics"]
        if got != floor[(key, replication)]:
            raise RuntimeError(f"{key}|{replication}: simlab-engine run gave other metrics")

    cpu_before = _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, picked))
    return (time.perf_counter() - start, len(picked),
            _cpu(resource.RUSAGE_CHILDREN) - cpu_before)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b)


def sweep_arguments(doc: str) -> argparse.ArgumentParser:
    """The options this benchmark shares with tracing_overhead.py (the same sweep)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(doc.splitlines()[1:]))
    parser.add_argument("--configs", type=int, default=50, help="configurations (multiple of 10)")
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--target-ms", type=float, default=50.0,
                        help="CPU milliseconds per simulation the horizon is calibrated to")
    parser.add_argument("--horizon", type=float, default=None,
                        help="use this horizon instead of calibrating one (warm-up: a tenth)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each")
    parser.add_argument("--workers", type=int, default=usable_cpus())
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    return parser


def main() -> None:
    parser = sweep_arguments(__doc__)
    parser.add_argument("--floor-writes", action="store_true",
                        help="also time the floor writing simlab's Parquet file per simulation")
    parser.add_argument("--process-sample", type=int, default=200,
                        help="simulations run one process each (0 skips it)")
    args = parser.parse_args()
    subreaper = become_subreaper()

    workdir = Path(tempfile.mkdtemp(prefix="simlab-bench-exp-"))
    horizon = args.horizon or calibrate_horizon(args.target_ms)
    path = write_experiment(workdir, args.configs, args.replications, horizon)
    spec = load_experiment(path)
    work = jobs(spec)
    total = len(work)
    print(f"{total} simulations (horizon {horizon}, warm-up {spec.resolved_warmup}), "
          f"{args.workers} workers, {args.repeats} repeats; load {load()}", flush=True)

    # Warm-up (discarded): page cache, bytecode, first forkserver, on a small experiment.
    (workdir / "warm").mkdir()
    small_path = write_experiment(workdir / "warm", 10, 4, horizon)
    warm = run_floor(jobs(load_experiment(small_path)), args.workers)
    run_simlab(small_path, args.workers, check=warm.metrics, expected=len(warm.metrics))

    floors: list[FloorRun] = []
    writes: list[FloorRun] = []
    simlab: list[float] = []
    details: list[dict[str, Any]] = []
    loads: list[str] = []
    result: dict[str, Any] = {
        "simulations": total, "configurations": args.configs, "replications": args.replications,
        "horizon": horizon, "warmup": spec.resolved_warmup, "workers": args.workers,
        "cpu_of_descendants_counted": subreaper,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    for i in range(args.repeats):
        loads.append(load())
        floors.append(run_floor(work, args.workers))
        line = f"  repeat {i + 1}: floor {floors[-1].seconds:.1f} s ({floors[-1].cpu:.0f} CPU-s)"
        if args.floor_writes:
            writes.append(run_floor(work, args.workers, write=True))
            line += f", floor+write {writes[-1].seconds:.1f} s ({writes[-1].cpu:.0f} CPU-s)"
        seconds, detail = run_simlab(path, args.workers, check=floors[-1].metrics, expected=total)
        simlab.append(seconds)
        details.append(detail)
        loads.append(load())
        print(f"{line}, simlab {seconds:.1f} s ({detail['cpu_seconds']:.0f} CPU-s) "
              f"(load {loads[-2]} -> {loads[-1]})", flush=True)
        print("    simlab breakdown: " + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in detail.items()),
            flush=True)
        floor_s = [f.seconds for f in floors]
        floor_cpu = [f.cpu for f in floors]
        simlab_cpu = [d["cpu_seconds"] for d in details]
        result.update({
            "mean_simulation_ms": 1000 * statistics.median(f.simulated for f in floors) / total,
            "floor_seconds": floor_s, "simlab_seconds": simlab,
            "floor_cpu_seconds": floor_cpu, "simlab_cpu_seconds": simlab_cpu,
            "floor_median": statistics.median(floor_s), "simlab_median": statistics.median(simlab),
            "simlab_over_floor": _median_ratio(simlab, floor_s),
            "simlab_over_floor_cpu": _median_ratio(simlab_cpu, floor_cpu),
            "per_repeat_simlab_over_floor": [b / a for a, b in zip(floor_s, simlab, strict=True)],
            "simlab_breakdown": details, "load_average_before_after": loads,
        })
        if writes:
            write_s = [f.seconds for f in writes]
            result.update({"floor_write_seconds": write_s,
                           "floor_write_cpu_seconds": [f.cpu for f in writes],
                           "floor_write_median": statistics.median(write_s),
                           "floor_write_over_floor_cpu": _median_ratio(
                               [f.cpu for f in writes], floor_cpu)})
        # Written after every repeat, so a long run that breaks late keeps what it measured.
        (args.output / "sweep_throughput.json").write_text(json.dumps(result, indent=2))
    if args.process_sample:
        sample_wall, sample_n, sample_cpu = run_process_per_simulation(
            work, args.workers, args.process_sample, floors[-1].metrics)
        per_process = sample_wall / sample_n * total
        result["process_per_simulation_sample"] = {"simulations": sample_n, "seconds": sample_wall,
                                                   "cpu_seconds": sample_cpu}
        result["process_per_simulation_estimate"] = per_process
        result["process_over_simlab"] = per_process / result["simlab_median"]
        result["process_over_floor"] = per_process / result["floor_median"]
    result["load_average_end"] = load()
    (args.output / "sweep_throughput.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "simlab_breakdown"}, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
