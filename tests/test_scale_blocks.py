"""Replication blocks (issue 23): a partition holds replications r0..r1 of one configuration, yet
every replication keeps its own seed, spawn key, row, span and trace id, so results are bit-identical
whatever the block size; a replication that fails inside a block fails only that block, keeps the
block's other rows, and a re-run simulates only the failed one."""

import dataclasses
import signal

import dagster as dg
import polars as pl
import pytest
import yaml
from lab import observations, sweep
from test_reliability_runs import slow  # noqa: F401  (the fixture: ~1 s simulations)
from test_s3_results import s3  # noqa: F401  (the moto S3 fixture)

import engine
from simlab_pipelines import plan
from simlab_pipelines.experiments import load_experiment

EXPERIMENT = {"name": "blocks", "model": "linear", "seed": 2026, "replications": 20,
              "parameters": {"noise_sd": 1.0, "b2": 0.5},
              "factors": {"x1": [0.0, 1.0, 2.0], "x2": [1.0, 3.0]}}


def _write(lab, **fields):
    path = lab / "experiments" / "blocks.yaml"
    path.write_text(yaml.safe_dump({**EXPERIMENT, **fields}))
    return path


def test_observations_are_bit_identical_across_block_sizes(lab, monkeypatch):
    """Blocks of 1, 7 and 100 (one block per configuration): the same 120 observations, bit for
    bit, with one seed, spawn key and distinct trace id per replication; 7 makes the blocks
    0-6, 7-13, 14-19, one file each."""
    found, files = {}, {1: [f"{r}.parquet" for r in range(20)],
                        7: ["0-6.parquet", "14-19.parquet", "7-13.parquet"],
                        100: ["0-19.parquet"]}
    for block in (1, 7, 100):
        data, home = lab / f"data-{block}", lab / f"dagster_home-{block}"  # a fresh lab each
        home.mkdir()
        (home / "dagster.yaml").write_text((lab / "dagster_home" / "dagster.yaml").read_text())
        monkeypatch.setenv("SIMLAB_DATA_DIR", str(data))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        path = _write(lab, replications_per_partition=block)
        assert load_experiment(path).block_size == block
        partitions = 6 * len(files[block])
        out = sweep(path, "--workers", "2")
        assert f"ran {partitions} partitions" in out
        # the check counts the replications in DuckDB against those wanted, not the partitions
        assert "check no_missing_replications: passed" in out, out
        found[block] = observations(data / "simlab.duckdb")
        names = sorted(p.name for p in (data / "results" / "blocks" / "x1-0.0_x2-1.0").glob(
            "*.parquet"))
        assert names == sorted(files[block])
        rows = pl.concat([pl.read_parquet(f) for f in sorted(
            (data / "results" / "blocks").glob("[!.]*/*.parquet"))])
        # every replication its own row, seed stream (spawn key) and span, in the sweep's trace
        assert rows.height == 120 and rows["span_id"].n_unique() == 120
        assert rows["trace_id"].null_count() == 0
        assert sorted(set(rows["spawn_key"].list.first().to_list())) == list(range(20))
        assert set(rows["seed_entropy"].to_list()) == {2026}
    assert len(found[1]) == 120 and found[1] == found[7] == found[100]


def test_a_failed_replication_fails_its_block_only_and_a_rerun_runs_only_it(lab, monkeypatch):
    model = engine.MODELS["linear"]
    calls: list[int] = []

    def run(params, streams, warmup, horizon, series_interval=None):
        calls.append(streams.spawn_key[0])
        if streams.spawn_key[0] == 9 and params["x1"] == 1.0:
            raise RuntimeError("planted failure in replication 9")
        return model.run(params, streams, warmup, horizon, series_interval)

    monkeypatch.setitem(engine.MODELS, "linear", dataclasses.replace(model, run=run))
    path = _write(lab, replications_per_partition=7)
    output = sweep_allowing_failure(path)
    assert "blocks" in output
    spec = load_experiment(path)
    with dg.DagsterInstance.get() as instance:
        from simlab_pipelines.assets import replications_key
        done = instance.get_materialized_partitions(replications_key(spec.name))
    wanted = plan.wanted_partitions(spec, {})
    assert set(wanted) - done == {"x1-1.0_x2-1.0|7-13", "x1-1.0_x2-3.0|7-13"}
    # the failed blocks' files hold their 6 other rows
    kept = pl.read_parquet(lab / "data" / "results" / "blocks" / "x1-1.0_x2-1.0" / "7-13.parquet")
    assert sorted(kept["replication"].to_list()) == [7, 8, 10, 11, 12, 13]
    # fixed: the next sweep simulates exactly the two failed replications
    monkeypatch.setitem(engine.MODELS, "linear", dataclasses.replace(model, run=lambda *a, **k: (
        calls.append(a[1].spawn_key[0]), model.run(*a, **k))[1]))
    calls.clear()
    sweep(path, "--workers", "1")
    assert sorted(calls) == [9, 9]
    rows = observations(lab / "data" / "simlab.duckdb")
    assert len(rows) == 120


def sweep_allowing_failure(path) -> str:
    from click.testing import CliRunner

    from simlab_pipelines.cli import main

    result = CliRunner().invoke(main, ["sweep", str(path), "--workers", "1"],
                                catch_exceptions=False)
    return result.output


@pytest.mark.parametrize("replications, block", [(1_000, 1), (1_001, 2)])
def test_auto_blocks_at_the_boundary(lab, replications, block):
    spec = load_experiment(_write(lab, replications=replications,
                                  factors={"x1": [float(i) for i in range(100)]}))
    assert spec.block_size == block
    keys = plan.wanted_partitions(spec, {})
    assert len(keys) == 100 * -(-replications // block) <= 100_000
    assert keys[0] == ("x1-0.0|0" if block == 1 else "x1-0.0|0-1")
    assert keys[-1] == ("x1-99.0|999" if block == 1 else "x1-99.0|1000")


@pytest.mark.slow
def test_kill_9_mid_block_then_the_next_sweep_resumes_exactly(lab, slow):  # noqa: F811
    """Blocks of 3 (one per configuration, one per run): kill -9 of the sweep's process group
    while the second block simulates (~3 s of simulations); the next sweep runs what is missing
    and the results are the engine's, bit for bit, each replication once."""
    from test_reliability_runs import (
        _assert_clean,
        _assert_exact,
        _finish,
        _interrupt,
        _session_processes,
        _start,
        _wait_for,
    )

    spec = yaml.safe_load(slow.read_text())
    spec["factors"]["arrival_rate"] = [0.7]  # 2 configurations: 2 blocks, 2 runs
    slow.write_text(yaml.safe_dump({**spec, "replications_per_partition": 3}))
    assert load_experiment(slow).block_size == 3
    instance = dg.DagsterInstance.get()
    sweep_process = _start(slow, "--batch-size", "1", name="killed")
    _interrupt(instance, sweep_process, 1, signal.SIGKILL)
    _finish(sweep_process)
    _wait_for(lambda: not _session_processes(sweep_process.pid), "the killed processes to go", 30)
    code, out, err = _finish(_start(slow, "--batch-size", "1", name="resumed"))
    assert code == 0, out + err
    _assert_clean(instance)
    _assert_exact(lab, slow)  # 6 rows, every value the engine's


def test_blocks_in_an_object_store_one_object_each_and_a_rerun_does_nothing(lab, s3):  # noqa: F811
    """Results in S3 (moto): the tiny experiment's 2 x 6 replications in blocks of 3 are 4
    objects of 3 rows, the DuckDB rows are every replication once, and a second sweep runs
    nothing and writes no object."""
    from test_s3_results import PREFIX, _objects

    path = lab / "experiments" / "tiny_mmck.yaml"
    path.write_text(path.read_text() + "replications_per_partition: 3\n")
    assert "ran 4 partitions" in sweep(path, "--workers", "1")  # the fork server of an earlier
    # test in this process keeps its environment, without the S3 endpoint: in-process here
    objects = {k: v for k, v in _objects(s3).items() if k.endswith(".parquet")}
    assert sorted(objects) == sorted(f"{PREFIX}/tiny_mmck/servers-{c}/{b}.parquet"
                                     for c in (1, 2) for b in ("0-2", "3-5"))
    rows = observations(lab / "data" / "simlab.duckdb")
    assert sorted({(c, r) for c, r, _, _ in rows}) == [
        (f"servers-{c}", r) for c in (1, 2) for r in range(6)]
    assert "nothing to do" in sweep(path, "--workers", "1")
    assert {k: v for k, v in _objects(s3).items() if k.endswith(".parquet")} == objects
