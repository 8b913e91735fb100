"""Where simlab keeps things, and how much of the machine it may use (environment-driven defaults).

SIMLAB_DATA_DIR (default `data/` in the project) holds results and the DuckDB file, unless
SIMLAB_RESULTS_URI (a local path or s3://bucket/prefix) and SIMLAB_DUCKDB_PATH say otherwise.
"""

import math
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAX_PARTITIONS_PER_RUN = 500


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


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def _ancestors(base: Path, relative: str) -> list[Path]:
    """``base/relative`` and each of its parents up to ``base`` itself, innermost first."""
    parts = [part for part in relative.strip().strip("/").split("/") if part]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _quota_v2(directory: Path) -> float | None:
    text = (directory / "cpu.max").read_text().split()  # "max 100000" or "150000 100000"
    return None if text[0] == "max" else int(text[0]) / int(text[1])


def _quota_v1(directory: Path) -> float | None:
    quota = int((directory / "cpu.cfs_quota_us").read_text())  # -1: no limit
    return quota / int((directory / "cpu.cfs_period_us").read_text()) if quota > 0 else None


def _cgroup_cpu_limit(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors, if any.

    The process's cgroup comes from /proc/self/cgroup (v2 ``0::/path``, v1 ``N:cpu,...:/path``);
    a quota anywhere above it limits it too, so every ancestor counts. The mount roots are read as
    well: inside a container with its own cgroup namespace (or a v1 mount of its own cgroup) the
    path in /proc/self/cgroup does not exist under the mount, and the root is the container's.
    """
    root = CGROUP_ROOT if root is None else root
    proc_cgroup = PROC_SELF_CGROUP if proc_cgroup is None else proc_cgroup
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    v2: list[Path] = []
    v1: list[Path] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if hierarchy == "0" and controllers == "":
            v2 += _ancestors(root, path)
        elif "cpu" in controllers.split(","):
            for mount in dict.fromkeys((root / controllers, root / "cpu", root / "cpu,cpuacct")):
                v1 += _ancestors(mount, path)
    v2.append(root)
    v1 += [root / "cpu", root / "cpu,cpuacct"]
    limits = []
    for read, directories in ((_quota_v2, v2), (_quota_v1, v1)):
        for directory in dict.fromkeys(directories):
            try:
                limit = read(directory)
            except (OSError, ValueError, IndexError, ZeroDivisionError):
                continue
            if limit is not None and limit > 0:
                limits.append(limit)
    return min(limits) if limits else None


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
