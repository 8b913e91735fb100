"""Where simlab keeps things, and how much of the machine it may use (environment-driven defaults).

SIMLAB_DATA_DIR (default `data/` in the project) holds results and the DuckDB file, unless
SIMLAB_RESULTS_URI (a local path or s3://bucket/prefix) and SIMLAB_DUCKDB_PATH say otherwise.
"""

import math
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAX_PARTITIONS_PER_RUN = 100


def data_dir() -> Path:
    return Path(os.environ.get("SIMLAB_DATA_DIR") or PROJECT_ROOT / "data")


def results_uri() -> str:
    return os.environ.get("SIMLAB_RESULTS_URI") or str(data_dir() / "results")


def duckdb_path() -> Path:
    return Path(os.environ.get("SIMLAB_DUCKDB_PATH") or data_dir() / "simlab.duckdb")


def _positive_int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be a positive integer") from None
    if value < 1:
        raise ValueError(f"environment variable {name}={raw!r} must be a positive integer")
    return value


def max_partitions_per_run() -> int:
    """Partitions per Dagster run of a backfill (SIMLAB_MAX_PARTITIONS_PER_RUN)."""
    return _positive_int_env("SIMLAB_MAX_PARTITIONS_PER_RUN", DEFAULT_MAX_PARTITIONS_PER_RUN)


def _cgroup_cpu_limit() -> float | None:
    """The CPU quota of this process's cgroup (v2 cpu.max or v1 cfs quota), if any."""
    candidates = [("/sys/fs/cgroup/cpu.max", None)]
    candidates.append(("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            text = Path(quota_file).read_text().split()
            if period_file is None:  # v2: "max 100000" or "200000 100000"
                if text[0] != "max":
                    return int(text[0]) / int(text[1])
            else:
                quota = int(text[0])
                if quota > 0:
                    return quota / int(Path(period_file).read_text())
        except (OSError, ValueError, IndexError):
            continue
    return None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (not the host's count)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def workers() -> int:
    """Pool workers for one run: SIMLAB_WORKERS, else the usable CPUs."""
    return _positive_int_env("SIMLAB_WORKERS", usable_cpus())
