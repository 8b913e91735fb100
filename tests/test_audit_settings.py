"""The process pool is sized to the CPUs a run may use: its affinity mask, capped by the CPU
quota of its cgroup or any ancestor (v1 and v2), not the host's CPU count; SIMLAB_WORKERS and the
run's tag override it. Cgroup trees are faked under tmp_path."""

import os
from pathlib import Path

import pytest

from simlab_pipelines import settings
from simlab_pipelines.resources import SimlabStorage


def _tree(root: Path, files: dict[str, str], proc: str) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc_file = root.parent / "proc_self_cgroup"
    proc_file.write_text(proc)
    return proc_file


@pytest.mark.parametrize(("files", "proc", "limit"), [
    # v2, the process in a nested cgroup: a parent's quota limits it, the tightest one counts
    ({"kubepods/pod1/ctr/cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "150000 100000\n",
      "kubepods/cpu.max": "400000 100000\n"}, "0::/kubepods/pod1/ctr\n", 1.5),
    # v2 inside a container with its own cgroup namespace: "/" is the container's cgroup
    ({"cpu.max": "200000 100000\n"}, "0::/\n", 2.0),
    # v2, no quota anywhere
    ({"a/cpu.max": "max 100000\n"}, "0::/a\n", None),
    # v1 (hybrid: a v2 line too), quota on the process's cgroup under the joint mount
    ({"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "300000\n",
      "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n",
      "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/docker/x\n0::/\n", 3.0),
    # v1 whose mount is the container's own cgroup: the host path is absent, the root counts
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"},
     "3:cpu:/docker/elsewhere\n", 0.5),
    # nothing readable
    ({}, "garbage line\n", None),
])
def test_cgroup_quota(tmp_path, files, proc, limit):
    root = tmp_path / "cgroup"
    root.mkdir()
    proc_file = _tree(root, files, proc)
    assert settings._cgroup_cpu_limit(root, proc_file) == limit


def test_usable_cpus_is_the_affinity_mask_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})  # 3 of the host's CPUs
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(settings, "_cgroup_cpu_limit", lambda: None)
    assert settings.usable_cpus() == 3
    monkeypatch.setattr(settings, "_cgroup_cpu_limit", lambda: 2.5)
    assert settings.usable_cpus() == 2  # a fractional quota rounds down: no throttled worker
    monkeypatch.setattr(settings, "_cgroup_cpu_limit", lambda: 0.5)
    assert settings.usable_cpus() == 1  # never zero


def test_real_machine_reading_does_not_exceed_the_affinity_mask():
    assert 1 <= settings.usable_cpus() <= len(os.sched_getaffinity(0))


def test_workers_env_overrides_and_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setattr(settings, "usable_cpus", lambda: 3)
    monkeypatch.delenv("SIMLAB_WORKERS", raising=False)
    assert settings.workers() == 3
    monkeypatch.setenv("SIMLAB_WORKERS", "7")
    assert settings.workers() == 7
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("SIMLAB_WORKERS", bad)
        with pytest.raises(ValueError, match=f"SIMLAB_WORKERS={bad!r} must be a positive integer"):
            settings.workers()


def test_pool_size_prefers_the_run_tag_then_the_resource_then_the_cpus(monkeypatch):
    monkeypatch.setattr(settings, "usable_cpus", lambda: 3)
    monkeypatch.delenv("SIMLAB_WORKERS", raising=False)
    auto = SimlabStorage(results_uri="r", duckdb_path="d")
    assert auto.pool_size() == 3 and auto.pool_size({}) == 3
    assert auto.pool_size({"simlab/workers": "5"}) == 5
    fixed = SimlabStorage(results_uri="r", duckdb_path="d", workers=2)
    assert fixed.pool_size() == 2 and fixed.pool_size({"simlab/workers": "1"}) == 1
    for bad in ("0", "many"):
        with pytest.raises(ValueError, match=f"run tag simlab/workers={bad!r} must be a positive"):
            auto.pool_size({"simlab/workers": bad})
