"""`dagster asset materialize` on one partition of an experiment, in its own process, with the
project's dagster.yaml: the entry point documented in simlab_pipelines/definitions.py."""

import os
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest

from simlab_pipelines.assets import replications_key


def _materialize(lab, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    return subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize",
         "-m", "simlab_pipelines.definitions", *args],
        env=env, cwd=lab, capture_output=True, text=True, timeout=120,
    )


def test_materialize_one_partition_from_the_dagster_cli(lab):
    # A bad file next to the good one: reported in the load log, the good one still runs.
    (lab / "experiments" / "broken.yaml").write_text(
        "name: broken\nmodel: mmck\nseed: 1\nreplications: 3\nfactors: {servers: [1, 0]}\n")
    done = _materialize(lab, "--select", "tiny_mmck/replications", "--partition", "servers-2|3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("experiment file rejected: " f"{lab / 'experiments' / 'broken.yaml'}: "
            "factors.servers[1]: parameter 'servers' = 0 must be >= 1") in done.stderr

    # Exactly that partition's file, holding that partition's row, written by the recorded run
    # (which also leaves its rows for the summary's manifest, in a hidden directory).
    results = lab / "data" / "results"
    files = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()
                   and not p.relative_to(results).parts[1].startswith("."))
    assert files == ["tiny_mmck/servers-2/3.parquet"]
    assert len(list((results / "tiny_mmck" / ".simlab-runs").glob("*.parquet"))) == 1
    row = pl.read_parquet(results / files[0]).row(0, named=True)
    assert (row["config_key"], row["replication"], row["partition_key"]) == ("servers-2", 3,
                                                                             "servers-2|3")
    instance = dg.DagsterInstance.get()
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags.get("dagster/partition") == "servers-2|3"
    assert row["dagster_run_id"] == run.run_id
    assert instance.get_materialized_partitions(replications_key("tiny_mmck")) == {"servers-2|3"}


def test_an_unknown_partition_is_refused_and_nothing_runs(lab):
    done = _materialize(lab, "--select", "tiny_mmck/replications", "--partition", "servers-9|0")
    assert done.returncode != 0
    assert "servers-9|0" in done.stdout + done.stderr
    assert not (lab / "data" / "results").exists()
    assert not dg.DagsterInstance.get().get_runs()


@pytest.mark.slow
def test_a_sequential_experiment_partition_after_its_spec(lab):
    """The README's two steps: a sequential experiment's partitions are dynamic, so on a fresh
    instance they exist once its spec is materialised (the file's replications, not more)."""
    import shutil
    from pathlib import Path

    from simlab_pipelines.partitions import dynamic_name

    shutil.copy(Path(__file__).parent / "fixtures" / "sequential" / "tiny_sequential.yaml",
                lab / "experiments")
    args = ["--select", "tiny_sequential/replications", "--partition", "servers-2|4"]
    refused = _materialize(lab, *args)
    assert refused.returncode != 0 and "servers-2|4" in refused.stdout + refused.stderr
    spec = _materialize(lab, "--select", "tiny_sequential/spec")
    assert spec.returncode == 0, spec.stdout + spec.stderr
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions(dynamic_name("tiny_sequential")) == [
        f"servers-{c}|{r}" for c in (1, 2) for r in range(5)]  # replications: 5, max 40
    done = _materialize(lab, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert instance.get_materialized_partitions(replications_key("tiny_sequential")) == {
        "servers-2|4"}
