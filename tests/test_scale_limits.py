"""Limits that say what they mean (issues 21.4 and 23.5): more simulations than the machine can
plan are refused at load with the numbers; a long list written out is not called an alias bomb;
the auto block rule at Dagster's recommended 100,000 partitions per asset."""

import pytest

from simlab_pipelines.experiments import ExperimentError, load_experiment, parse_experiment, scale

HUGE = {"name": "huge", "model": "linear", "seed": 1, "replications": 100_000,
        "factors": {"x1": [float(i) for i in range(100)], "x2": [float(i) for i in range(100)]}}


def test_more_simulations_than_the_machine_plans_are_refused_with_the_numbers(monkeypatch):
    monkeypatch.setenv(scale.MAX_SIMULATIONS_ENV, "50_000_000")
    with pytest.raises(ExperimentError) as refused:
        parse_experiment(HUGE)
    assert ("replications: 10,000 configurations x 100,000 replications = 1,000,000,000 "
            "simulations, more than the 50,000,000 this machine can plan "
            "(SIMLAB_MAX_SIMULATIONS=50,000,000)") in str(refused.value)
    # within the limit it loads; a precision target is judged by its maximum
    assert parse_experiment({**HUGE, "replications": 5_000}).replications == 5_000
    with pytest.raises(ExperimentError, match=r"precision.max_replications: 10,000 configurations "
                                              r"x 100,000 replications"):
        parse_experiment({**HUGE, "replications": 10, "precision": {
            "metric": "y", "relative_half_width": 0.1, "max_replications": 100_000}})


def test_without_the_variable_the_limit_is_the_machines_memory(monkeypatch):
    monkeypatch.delenv(scale.MAX_SIMULATIONS_ENV, raising=False)
    monkeypatch.setattr(scale, "usable_memory", lambda: 4 * 2**30)
    limit, why = scale.max_simulations()
    assert limit == 4 * 2**30 * scale.MEMORY_SHARE // scale.SUMMARY_BYTES_PER_SIMULATION
    assert "4.0 GiB" in why and scale.MAX_SIMULATIONS_ENV in why
    monkeypatch.setenv(scale.MAX_SIMULATIONS_ENV, "many")
    with pytest.raises(ValueError, match="SIMLAB_MAX_SIMULATIONS='many' must be a positive"):
        scale.max_simulations()


def test_a_long_list_written_out_is_no_alias_bomb(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("name: long\nmodel: linear\nseed: 1\nreplications: 2\nfactors:\n  x1: ["
                    + ", ".join(str(i) for i in range(100_000)) + "]\n")
    with pytest.raises(ExperimentError) as refused:
        load_experiment(path)
    message = str(refused.value)
    assert "alias" not in message
    assert "factors: the factorial has 100000 configurations, more than 10000" in message


def test_auto_blocks_keep_the_partitions_within_dagsters_recommendation():
    assert scale.auto_block(100, 1_000) == 1            # 100,000 partitions: the boundary
    assert scale.auto_block(100, 1_001) == 2            # one more replication: blocks of 2
    assert scale.partitions(100, 1_001, 2) == 50_100
    assert scale.auto_block(100, 10_000) == 10          # 1M simulations: 100,000 partitions
    assert scale.auto_block(7, 100_000) == 8            # 7 x 12,500 = 87,500 partitions
    assert scale.partitions(7, 100_000, 7) > 100_000    # one less is over the recommendation
    assert scale.partitions_warning(100, 10_000, 1).startswith(
        "1,000,000 partitions (100 configurations x 10,000 replications in blocks of 1): "
        "Dagster recommends at most 100,000")
    assert scale.partitions_warning(100, 10_000, 10) is None


def test_finding_the_missing_partitions_costs_what_is_wanted_not_the_space(lab, monkeypatch):
    """1,000 configurations that may grow to 100,000 replications each (a space of 10^8
    simulations) but want 2 each so far: finding what is missing builds the 2,000 wanted
    replications' partitions (blocks of 1,000 under auto: 1,000 of them), not the space (the
    space of 10,000 x 100,000 took 5 GB in 25 s)."""
    import tracemalloc

    import dagster as dg

    from simlab_pipelines import sensors

    monkeypatch.setenv(scale.MAX_SIMULATIONS_ENV, "100_000_000")
    spec = parse_experiment({**HUGE, "replications": 2, "factors": {
        "x1": [float(i) for i in range(100)], "x2": [float(i) for i in range(10)]},
        "precision": {"metric": "y", "relative_half_width": 0.1, "max_replications": 100_000}})
    assert spec.block_size == 1_000
    with dg.instance_for_test() as instance:
        tracemalloc.start()
        try:
            targets, missing = sensors.missing_partitions(instance, spec)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(targets) == 1_000 and len(missing) == 1_000
    assert missing[0] == "x1-0.0_x2-0.0|0-1"
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB of Python objects"


def test_more_partitions_than_dagster_recommends_is_warned_about_once(caplog):
    import logging

    from simlab_pipelines.build import build_definitions

    forced = parse_experiment({**HUGE, "name": "forced", "replications": 1_001,
                               "factors": {"x1": [float(i) for i in range(100)]},
                               "replications_per_partition": 1})
    auto = parse_experiment({**HUGE, "name": "auto", "replications": 1_001,
                             "factors": {"x1": [float(i) for i in range(100)]}})
    with caplog.at_level(logging.WARNING, logger="simlab.definitions"):
        build_definitions([forced, auto])
        build_definitions([forced, auto])
    warnings = [r.getMessage() for r in caplog.records if "Dagster recommends" in r.getMessage()]
    assert warnings == [
        "forced: 100,100 partitions (100 configurations x 1,001 replications in blocks of 1): "
        "Dagster recommends at most 100,000 partitions per asset (its UI and daemon slow down "
        "past it); replications_per_partition: auto keeps them within it"]
    assert auto.block_size == 2 and auto.partitions_warning() is None


def test_a_warning_the_sweep_announced_is_not_logged_again_by_its_definitions(caplog):
    # `simlab sweep` prints the warning, then builds the definitions in its own process: the
    # warning was shown twice.
    import logging

    from simlab_pipelines.build import build_definitions, give_partitions_warning

    forced = parse_experiment({**HUGE, "name": "announced", "replications": 1_001,
                               "factors": {"x1": [float(i) for i in range(100)]},
                               "replications_per_partition": 1})
    assert forced.partitions_warning().startswith("announced: 100,100 partitions")
    # Each sweep announces it, the second one in a process too.
    assert give_partitions_warning(forced) == forced.partitions_warning()
    assert give_partitions_warning(forced) == forced.partitions_warning()
    with caplog.at_level(logging.WARNING, logger="simlab.definitions"):
        build_definitions([forced])
    assert not [r for r in caplog.records if "Dagster recommends" in r.getMessage()]


def test_nothing_to_do_is_told_by_the_summary_and_a_removed_file_still_runs_again(lab,
                                                                                 monkeypatch):
    """After a complete sweep, the next one plans from DuckDB's counts without reading a result
    row; a result file removed since changes its directory, so the one after reads the rows
    and runs exactly that partition."""
    import os
    import time

    from lab import sweep

    from simlab_pipelines import manifest, storage, summary

    monkeypatch.setattr(storage, "_SETTLED_NS", 0)  # no margin for coarse timestamps here
    path = lab / "experiments" / "tiny_mmck.yaml"
    assert "ran 12 partitions" in sweep(path, "--workers", "1")
    time.sleep(0.05)  # directories' mtimes strictly before the next sweep's checks
    reads: list[str] = []
    original = manifest.landed
    monkeypatch.setattr(summary, "landed", lambda *a, **k: reads.append("rows") or original(
        *a, **k))
    assert "nothing to do" in sweep(path, "--workers", "1")
    assert reads == []  # planned from the counts in DuckDB
    os.unlink(lab / "data" / "results" / "tiny_mmck" / "servers-2" / "4.parquet")
    assert "ran 1 partition in 1 run(s)" in sweep(path, "--workers", "1")
    assert reads  # the rows were read: the directory changed


def test_the_projects_experiments_keep_one_replication_a_partition():
    """Blocks change nothing at a restaurant's size: auto stays 1, keys and files as before."""
    from pathlib import Path

    from simlab_pipelines import plan

    root = Path(__file__).resolve().parent.parent / "experiments"
    for name in ("restaurant_staffing", "mmck_validation", "mmck_capacity_screening"):
        spec = load_experiment(root / f"{name}.yaml")
        assert spec.block_size == 1, name
        keys = plan.wanted_partitions(spec, {})
        assert keys[:2] == [f"{spec.config_keys()[0]}|0", f"{spec.config_keys()[0]}|1"]
