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


def test_batches_are_contiguous_in_the_dynamic_order():
    # servers-1|2 failed in round 0; round 1 added servers-1|3.. after servers-2's keys: one
    # range servers-1|2..servers-1|4 would also cover servers-2|0..2, so it is split
    order = ["servers-1|0", "servers-1|1", "servers-1|2", "servers-2|0", "servers-2|1",
             "servers-2|2", "servers-1|3", "servers-1|4"]
    missing = ["servers-1|2", "servers-1|3", "servers-1|4"]
    assert partitions.batches(missing, 10) == [("servers-1", 2, 4)]  # the grid: one range
    assert partitions.batches(missing, 10, order) == [("servers-1", 2, 2), ("servers-1", 3, 4)]
    assert partitions.batches(missing, 1, order) == [("servers-1", 2, 2), ("servers-1", 3, 3),
                                                     ("servers-1", 4, 4)]


def test_keys_and_results_beyond_the_plan():
    assert partitions.split_key("tables-8_waiters-2|17") == ("tables-8_waiters-2", 17)
    for bad in ("tables-8", "x|", "|3", "x|a"):
        with pytest.raises(ValueError, match="<config_key>\\|<replication>"):
            partitions.split_key(bad)
    present = {("a", 0), ("a", 1), ("a", 5), ("b", 0), ("gone", 9)}
    assert partitions.beyond_plan({"a": 2, "b": 1}, present) == ["a|5"]
