"""Benchmark: a million simulations on one machine (issue 23), side by side with its floor.

For each size (``--sizes``, simulations; ``--configs`` configurations of the ``linear`` model, the
replications making up the size), on a fresh local instance (a copy of
``dagster_home/dagster.yaml``, SQLite) and data directory:

- **sweep**: ``simlab sweep FILE --workers N`` as a subprocess: wall time, CPU time of it and every
  descendant (this process is a subreaper, so the fork server and pool workers are counted), and
  the partitions (``replications_per_partition: auto``: blocks past 100,000 partitions);
- **floor**: the very simulations in a plain ``multiprocessing`` pool of N workers writing one
  Parquet file per 100 simulations (their rows as simlab stores them), metrics compared with
  DuckDB's bit for bit; **beyond the floor** = (sweep - floor) / simulations;
- **disk**: everything simlab keeps (``du`` of the data directory and of DAGSTER_HOME: instance,
  result files, manifest, DuckDB), per simulation;
- **nothing to do**: ``simlab sweep`` again: wall time and peak RSS (``wait4``) of the command;
- **summary**: the summary run's wall time (from the instance) and a summary rebuilt in a fresh
  process (``--rebuild``: its wall time and peak RSS);
- **UI** (``--ui``): ``dagster-webserver`` on the instance; the GraphQL queries of the catalog
  (every asset's partition counts) and of the replications asset's partitions page (its keys and
  statuses), each timed twice (first view, then again).

The experiment has a baseline and an objective, as a user's would (without them every pair of
configurations is compared, which grows with the square of the configurations). Results go to
``benchmarks/results/scale.json``. Sizes up to 100,000 run on a shared machine; the 1,000,000
point needs a quiet one (~10 minutes).

    .venv/bin/python benchmarks/scale.py --sizes 10000 100000 --ui
    .venv/bin/python benchmarks/scale.py --sizes 1000000 --ui --rebuild
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # lab.py: the server helpers the tests use
from sweep_throughput import become_subreaper, command_environment, reap  # noqa: E402

NAME = "scale_linear"
FLOOR_FILE_ROWS = 100


def experiment(directory: Path, configs: int, replications: int, block: int | None = None
               ) -> Path:
    """``configs`` configurations (x1 0..9 x x2 0..configs/10-1) of ``linear`` with noise;
    ``block`` forces ``replications_per_partition`` (default auto)."""
    spec = {"name": NAME, "model": "linear", "seed": 11, "replications": replications,
            **({"replications_per_partition": block} if block else {}),
            "parameters": {"noise_sd": 1.0, "b2": 0.5},
            "factors": {"x1": [float(i) for i in range(10)],
                        "x2": [float(i) for i in range(max(1, configs // 10))]},
            "baseline": {"x1": 0.0, "x2": 0.0},
            "objective": {"metric": "y", "direction": "minimize"}}
    path = directory / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``command``; its wall time, CPU (with adopted descendants) and own peak RSS."""
    known = {p for p in _children()}
    cpu = _cpu_children()
    start = time.perf_counter()
    with open(log, "ab") as out, tempfile.NamedTemporaryFile("r") as peak:
        process = subprocess.Popen([sys.executable, "-c", _LAUNCHER, peak.name, *command],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
        status = process.wait()
        wall = time.perf_counter() - start
        peak_kb = int(peak.read() or 0)
    reap(known)
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} exited {status}: {log.read_text()[-3000:]}")
    return {"wall_s": wall, "cpu_s": _cpu_children() - cpu, "peak_rss_mb": peak_kb / 1024}


# A child's ru_maxrss includes the high-water mark of the image it replaced at exec (Linux keeps
# it across exec): a command started straight from this benchmark, which holds the million values
# it checked, would report the benchmark's own peak (646 MB for a 320 MB sweep at 1M). So a
# command starts from this small launcher, which reports its child's peak alone.
_LAUNCHER = ("import os, sys\n"
             "pid = os.fork()\n"
             "if pid == 0:\n"
             "    os.execvp(sys.argv[2], sys.argv[2:])\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
             "sys.exit(min(255, abs(os.waitstatus_to_exitcode(status))))\n")



def _children() -> set[int]:
    from sweep_throughput import _children as children

    return children()


def _du(*paths: Path) -> int:
    """Bytes on disk (allocated blocks) under ``paths``."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_blocks * 512
            continue
        for directory, _, files in os.walk(path):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def _floor_chunk(args: tuple) -> tuple[int, float]:
    """One floor task: 100 simulations, one Parquet file; (count, CPU seconds)."""
    import engine
    from simlab_pipelines.storage import ResultStore, replication_row

    jobs, root = args
    start = time.process_time()
    rows = []
    for key, params, replication, seed in jobs:
        result = engine.simulate("linear", params, replication=replication, seed=seed)
        rows.append(replication_row(
            experiment=NAME, config_key=key, partition_key=f"{key}|{replication}",
            result=result.to_dict(), code_version="floor", run_id="floor", trace_id="0" * 32,
            span_id="0" * 16, started_at=datetime.now(UTC), inputs_hash="floor"))
    ResultStore(root).write_rows(rows, f"{jobs[0][2]}-{jobs[-1][2]}")
    return len(rows), time.process_time() - start


def run_floor(path: Path, workers: int) -> dict:
    from simlab_pipelines.experiments import load_experiment

    spec = load_experiment(path)
    jobs = [(c.key, c.params, r, spec.seed) for c in spec.configurations_list()
            for r in range(spec.replications)]
    scratch = Path(tempfile.mkdtemp(prefix="simlab-scale-floor-"))
    chunks = [(jobs[i:i + FLOOR_FILE_ROWS], str(scratch))
              for i in range(0, len(jobs), FLOOR_FILE_ROWS)]
    try:
        start, cpu = time.perf_counter(), time.process_time()
        worker_cpu = 0.0
        with multiprocessing.get_context("forkserver").Pool(workers) as pool:
            for _, seconds in pool.imap_unordered(_floor_chunk, chunks, chunksize=4):
                worker_cpu += seconds
        return {"wall_s": time.perf_counter() - start,
                "cpu_s": worker_cpu + time.process_time() - cpu,
                "files": len(chunks), "disk_bytes": _du(scratch), "root": str(scratch)}
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def check_identical(db: Path, floor_root: str, simulations: int) -> int:
    """DuckDB's observations against the floor's rows: every value, bit for bit."""
    import duckdb
    import polars as pl

    with duckdb.connect(str(db), read_only=True) as con:
        ours = pl.DataFrame(con.execute(
            "SELECT config_key, replication, value FROM observations WHERE experiment = ? AND "
            "metric = 'y'", [NAME]).fetchall(), orient="row",
            schema={"config_key": pl.String, "replication": pl.Int64, "value": pl.Float64})
    files = sorted(Path(floor_root, NAME).glob("*/*.parquet"))
    theirs = pl.concat([pl.read_parquet(f, columns=["config_key", "replication", "metrics"])
                        for f in files]).select("config_key", "replication",
                                                pl.col("metrics").struct.field("y").alias("floor"))
    joined = ours.join(theirs, on=["config_key", "replication"], how="full", coalesce=True)
    if joined.height != simulations or ours.height != simulations:
        raise RuntimeError(f"{ours.height} observations in DuckDB, {theirs.height} in the floor, "
                           f"{joined.height} joined; {simulations} expected")
    differ = joined.filter(pl.col("value") != pl.col("floor")).height
    if differ:
        raise RuntimeError(f"{differ} values differ from the floor's")
    return joined.height


def summary_run_seconds(home: Path) -> float | None:
    import dagster as dg

    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)  # the instance file's storage is relative to it
    try:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_run_records(filters=dg.RunsFilter(job_name=f"{NAME}_summary"),
                                            limit=1)
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved
    if not runs or runs[0].start_time is None or runs[0].end_time is None:
        return None
    return runs[0].end_time - runs[0].start_time


def _graphql(port: int, query: str) -> tuple[float, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                     data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=1800) as response:
        data = json.loads(response.read())
    if data.get("errors"):
        raise RuntimeError(f"GraphQL errors: {data['errors'][:2]}")
    return time.perf_counter() - start, data["data"]


CATALOG = """{ assetNodes { assetKey { path } groupName isPartitioned
  partitionStats { numMaterialized numPartitions numFailed numMaterializing } } }"""
PARTITIONS = ("{ assetNodeOrError(assetKey: {path: [\"" + NAME + "\", \"replications\"]}) {"
              """ ... on AssetNode {
  partitionKeysByDimension { name partitionKeys }
  assetPartitionStatuses {
    ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
    ... on MultiPartitionStatuses { primaryDimensionName ranges { primaryDimStartKey
      primaryDimEndKey } } } } } }""")


def ui_timings(env: dict[str, str], log: Path) -> dict:
    """First and second timings of the catalog's and the partitions page's queries."""
    from lab import answers, free_port

    port = free_port()
    with open(log, "ab") as out:
        server = subprocess.Popen([str(BIN / "dagster-webserver"), "-m",
                                   "simlab_pipelines.definitions", "-h", "127.0.0.1", "-p",
                                   str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        start = time.perf_counter()
        while not answers(port):
            if server.poll() is not None or time.perf_counter() - start > 600:
                raise RuntimeError(f"dagster-webserver did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        found: dict = {"server_start_s": time.perf_counter() - start}
        for name, query in (("catalog", CATALOG), ("partitions", PARTITIONS)):
            first, data = _graphql(port, query)
            second, _ = _graphql(port, query)
            found[name] = {"first_s": first, "second_s": second}
            if name == "catalog":
                stats = {"/".join(n["assetKey"]["path"]): n["partitionStats"]
                         for n in data["assetNodes"]}
                found["replications_partition_stats"] = stats.get(f"{NAME}/replications")
        return found
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)


def rebuild_summary(env: dict[str, str], path: Path, log: Path) -> dict:
    """The summary rebuilt in a fresh process (imports done before timing): wall and peak RSS."""
    # VmHWM, not ru_maxrss: the latter includes this benchmark's own peak (see _LAUNCHER).
    code = ("import sys, time\n"
            "from simlab_pipelines.experiments import load_experiment\n"
            "from simlab_pipelines.assets import build_experiment_summary\n"
            "from simlab_pipelines.resources import default_storage\n"
            "import simlab_pipelines.analysis.experiment\n"
            "def peak():\n"
            "    line = next(x for x in open('/proc/self/status') if x.startswith('VmHWM'))\n"
            "    return int(line.split()[1])\n"
            "spec = load_experiment(sys.argv[1]); before = peak()\n"
            "start = time.perf_counter(); build_experiment_summary(spec, default_storage())\n"
            "print('SUMMARY', time.perf_counter() - start, before / 1024, peak() / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                         text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("SUMMARY"))
    _, seconds, before, peak = line.split()
    with open(log, "a") as handle:
        handle.write(out.stdout + out.stderr)
    return {"wall_s": float(seconds), "rss_before_mb": float(before), "peak_rss_mb": float(peak)}


def one_size(size: int, configs: int, workers: int, ui: bool, rebuild: bool,
             block: int | None = None, keep: bool = False) -> dict:
    replications = size // configs
    scratch = Path(tempfile.mkdtemp(prefix=f"simlab-scale-{size}-"))
    try:
        home, data, exp = scratch / "home", scratch / "data", scratch / "experiments"
        for d in (home, data, exp):
            d.mkdir()
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        path = experiment(exp, configs, replications, block)
        env = {k: v for k, v in command_environment().items() if not k.startswith("SIMLAB_")}
        env.update({"DAGSTER_HOME": str(home), "SIMLAB_DATA_DIR": str(data),
                    "SIMLAB_EXPERIMENTS_DIR": str(exp),
                    # this tree's simlab (a copy of another tree measures that one)
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
        log = scratch / "log.txt"
        from simlab_pipelines.experiments import load_experiment

        spec = load_experiment(path)
        simulations = configs * replications
        partitions = configs * -(-replications // spec.block_size)
        print(f"{size:,}: {configs} x {replications:,}, blocks of {spec.block_size} "
              f"({partitions:,} partitions); load {os.getloadavg()[0]:.1f}", flush=True)
        sweep = _run([str(BIN / "simlab"), "sweep", str(path), "--workers", str(workers)], env,
                     log)
        print(f"  sweep {sweep['wall_s']:.1f} s, {sweep['cpu_s']:.1f} CPU-s", flush=True)
        floor = run_floor(path, workers)
        print(f"  floor {floor['wall_s']:.1f} s, {floor['cpu_s']:.1f} CPU-s", flush=True)
        try:
            checked = check_identical(data / "simlab.duckdb", floor["root"], simulations)
        finally:
            shutil.rmtree(floor.pop("root"), ignore_errors=True)
        disk = {"instance": _du(home), "results": _du(data / "results"),
                "duckdb": _du(data / "simlab.duckdb")}
        idle = [_run([str(BIN / "simlab"), "sweep", str(path), "--workers", str(workers)], env,
                     log) for _ in range(2)]
        found = {
            "size": size, "configs": configs, "replications": replications,
            "block": spec.block_size, "partitions": partitions, "workers": workers,
            "load_before": os.getloadavg()[0], "values_checked": checked,
            "sweep": sweep, "floor": floor,
            "beyond_floor_ms_per_simulation": (sweep["wall_s"] - floor["wall_s"]) / simulations
            * 1e3,
            "cpu_ms_per_simulation": sweep["cpu_s"] / simulations * 1e3,
            "floor_cpu_ms_per_simulation": floor["cpu_s"] / simulations * 1e3,
            "disk_bytes": disk, "disk_bytes_per_simulation": sum(disk.values()) / simulations,
            "nothing_to_do": idle, "summary_run_s": summary_run_seconds(home),
        }
        if rebuild:
            found["summary_rebuild"] = rebuild_summary(env, path, log)
        if ui:
            found["ui"] = ui_timings(env, log)
        print(json.dumps(found, indent=1), flush=True)
        return found
    finally:
        if keep:
            print(f"kept: {scratch} (DAGSTER_HOME home/, SIMLAB_DATA_DIR data/)", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--configs", type=int, default=100, help="a multiple of 10")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block", type=int, default=None,
                        help="replications_per_partition (default: auto)")
    parser.add_argument("--ui", action="store_true", help="time the UI's GraphQL queries")
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild the summary in a fresh process (time, peak memory)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each size's instance and data (to profile a sweep on them)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.configs % 10:
        parser.error("--configs must be a multiple of 10")
    subreaper = become_subreaper()
    results = [one_size(size, args.configs, args.workers, args.ui, args.rebuild, args.block,
                        args.keep) for size in args.sizes]
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / "scale.json"
    out.write_text(json.dumps({"descendants_counted": subreaper, "results": results}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
