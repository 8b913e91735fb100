"""The partitions an experiment offers: a static grid of exactly the file's replications, or a
dynamic set grown by rounds; batches that are contiguous ranges of that set; results beyond the plan."""

import dagster as dg
import pytest

from simlab_pipelines import partitions, plan
from simlab_pipelines.assets import experiment_assets, replications_key
from simlab_pipelines.experiments import parse_experiment

BASE = {"name": "p", "model": "mmck", "seed": 1, "replications": 3, "horizon": 10,
        "parameters": {"arrival_rate": 0.5, "service_rate": 1.0},
        "factors": {"servers": [1, 2]}}


def _replications(spec) -> dg.AssetsDefinition:
    return next(a for a in experiment_assets(spec) if a.key == replications_key(spec.name))


def test_a_fixed_experiment_is_a_grid_of_exactly_its_replications():
    spec = parse_experiment(BASE)
    keys = _replications(spec).partitions_def.get_partition_keys()
    assert sorted(keys) == sorted(f"servers-{c}|{r}" for c in (1, 2) for r in range(3))


def test_a_sequential_experiment_offers_only_the_keys_added_so_far():
    spec = parse_experiment({**BASE, "precision": {"metric": "mean_wait",
                                                   "relative_half_width": 0.1,
                                                   "max_replications": 50}})
    definition = _replications(spec).partitions_def
    assert isinstance(definition, dg.DynamicPartitionsDefinition)
    with dg.instance_for_test() as instance:
        assert definition.get_partition_keys(dynamic_partitions_store=instance) == []
        wanted = plan.wanted_partitions(spec, {})
        order = partitions.add_keys(instance, spec.name, wanted)
        assert order == wanted == ["servers-1|0", "servers-1|1", "servers-1|2", "servers-2|0",
                                   "servers-2|1", "servers-2|2"]
        # adding again changes nothing; a round's keys go after, in the order given
        partitions.add_keys(instance, spec.name, [*wanted, "servers-2|3", "servers-2|4"])
        assert definition.get_partition_keys(dynamic_partitions_store=instance)[-2:] == [
            "servers-2|3", "servers-2|4"]
        requests, after = partitions.add_request(instance, spec.name, ["servers-1|3"])
        assert [r.partition_keys for r in requests] == [["servers-1|3"]]
        assert after[-1] == "servers-1|3"


def _ranges(parts):
    return [(b.start, b.end, len(b)) for b in parts]


def test_batches_are_contiguous_in_the_dynamic_order():
    # servers-1|2 failed in round 0; round 1 added servers-1|3.. after servers-2's keys: one
    # range servers-1|2..servers-1|4 would also cover servers-2|0..2, so it is split
    order = ["servers-1|0", "servers-1|1", "servers-1|2", "servers-2|0", "servers-2|1",
             "servers-2|2", "servers-1|3", "servers-1|4"]
    missing = ["servers-1|2", "servers-1|3", "servers-1|4"]
    assert _ranges(partitions.batches(missing, 10)) == [("servers-1|2", "servers-1|4", 3)]
    assert _ranges(partitions.batches(missing, 10, order)) == [
        ("servers-1|2", "servers-1|2", 1), ("servers-1|3", "servers-1|4", 2)]
    assert [len(b) for b in partitions.batches(missing, 1, order)] == [1, 1, 1]
    # a stretch of the set crosses configurations: one run for a whole round
    assert _ranges(partitions.batches(order[2:5], 10, order)) == [
        ("servers-1|2", "servers-2|1", 3)]


def test_grid_batches_are_rectangles_of_adjacent_configurations():
    grid = ["a", "b", "c", "d", "e"]
    keys = [f"{c}|{r}" for c in grid for r in range(100)]
    assert _ranges(partitions.batches(keys, 500, configurations=grid)) == [("a|0", "e|99", 500)]
    assert _ranges(partitions.batches(keys, 250, configurations=grid)) == [
        ("a|0", "b|99", 200), ("c|0", "d|99", 200), ("e|0", "e|99", 100)]
    # c complete: a range a..d would run it again, so a..b and d..e
    holes = [k for k in keys if not k.startswith("c|")]
    parts = partitions.batches(holes, 500, configurations=grid)
    assert _ranges(parts) == [("a|0", "b|99", 200), ("d|0", "e|99", 200)]
    assert parts[0].tags() == {"dagster/asset_partition_range_start": "a|0",
                               "dagster/asset_partition_range_end": "b|99",
                               "simlab/partitions": "a|0..b|99"}
    # different replications missing: separate rectangles; more than `size`: split by replication
    ragged = ["a|0", "a|1", "b|0", "b|1", "b|2"]
    assert _ranges(partitions.batches(ragged, 500, configurations=grid)) == [
        ("a|0", "a|1", 2), ("b|0", "b|2", 3)]
    assert _ranges(partitions.batches(keys[:100], 40, configurations=grid)) == [
        ("a|0", "a|39", 40), ("a|40", "a|79", 40), ("a|80", "a|99", 20)]
    # without the grid's order no configurations are merged
    assert len(partitions.batches(keys, 500)) == 5
    with pytest.raises(ValueError, match="not in the grid"):
        partitions.batches(["z|0"], 10, configurations=grid)


def test_a_grid_rectangle_is_exactly_the_range_dagster_runs():
    spec = parse_experiment({**BASE, "factors": {"servers": [1, 2, 3]}}, "p.yaml")
    definition = _replications(spec).partitions_def
    grid = [c.key for c in spec.configurations_list()]
    keys = [f"{c}|{r}" for c in grid for r in range(3)]
    for part in partitions.batches(keys[3:], 6, configurations=grid):
        covered = definition.get_partition_keys_in_range(
            dg.PartitionKeyRange(part.start, part.end))
        assert sorted(str(k) for k in covered) == sorted(part.keys)


def test_keys_and_results_beyond_the_plan():
    assert partitions.split_key("tables-8_waiters-2|17") == ("tables-8_waiters-2", 17)
    for bad in ("tables-8", "x|", "|3", "x|a"):
        with pytest.raises(ValueError, match="<config_key>\\|<replication>"):
            partitions.split_key(bad)
    present = {("a", 0), ("a", 1), ("a", 5), ("b", 0), ("gone", 9)}
    assert partitions.beyond_plan({"a": 2, "b": 1}, present) == ["a|5"]
