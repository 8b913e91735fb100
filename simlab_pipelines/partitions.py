"""Partition keys of an experiment: ``<config_key>|<replication>``, and the partitions Dagster offers.

The partitions an experiment's replications asset has are exactly the ones it wants, so that the
UI shows a finished experiment as complete and "missing" means missing:

- an experiment with a fixed number of replications (no sequential procedure) is a static grid:
  dimensions ``config`` x ``replication`` (``0 .. replications-1``); Dagster orders the dimensions
  alphabetically, so a key reads ``<config_key>|<replication>``. Nothing in the instance is needed,
  and the UI shows the grid.
- an experiment whose rounds add replications (``precision``, a selection's second stage) wants a
  different number per configuration, which no grid can be: its partitions are one dynamic set of
  ``<config_key>|<replication>`` keys in the instance (:func:`dynamic_name`), grown as the file and
  the rounds need them (the code location's load and the spec add the file's replications; the
  ``experiment_files`` and ``sequential_replications`` sensors and ``simlab sweep`` add each
  round's) — never up to ``max_replications`` at once.

Keys derive from parameter values and replication numbers, never positions: adding configurations
or replications to a file adds keys and changes none.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

CONFIG = "config"
REPLICATION = "replication"


def dynamic_name(experiment: str) -> str:
    """The name of an experiment's dynamic partition set in the instance."""
    return f"{experiment}__replications"


def partitions_def(experiment: str, config_keys: list[str], replications: int,
                   sequential: bool) -> dg.PartitionsDefinition:
    """The static grid of a fixed experiment, or the dynamic key set of a sequential one."""
    if sequential:
        return dg.DynamicPartitionsDefinition(name=dynamic_name(experiment))
    return dg.MultiPartitionsDefinition(
        {
            CONFIG: dg.StaticPartitionsDefinition(config_keys),
            REPLICATION: dg.StaticPartitionsDefinition([str(r) for r in range(replications)]),
        }
    )


def partition_key(config_key: str, replication: int) -> str:
    return f"{config_key}|{replication}"


def split_key(key: str) -> tuple[str, int]:
    """(config_key, replication) of a partition key (a string or a MultiPartitionKey)."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims[CONFIG], int(dims[REPLICATION])
    config_key, sep, replication = str(key).rpartition("|")
    if not sep or not config_key or not replication.isdigit():
        raise ValueError(f"partition key {str(key)!r} is not <config_key>|<replication> "
                         "(e.g. 'servers-2|0')")
    return config_key, int(replication)


def new_keys(instance: dg.DagsterInstance, experiment: str, wanted: Sequence[str]
             ) -> tuple[list[str], list[str]]:
    """(``wanted`` keys not yet in the experiment's dynamic set, the set's order once they are
    added). Added in the order given (configuration, then replication), so a batch of
    consecutive replications is a contiguous range of the set."""
    existing = list(instance.get_dynamic_partitions(dynamic_name(experiment)))
    have = set(existing)
    new = [key for key in dict.fromkeys(wanted) if key not in have]
    return new, existing + new


def add_keys(instance: dg.DagsterInstance, experiment: str, wanted: Sequence[str]) -> list[str]:
    """Add the ``wanted`` keys missing from the experiment's dynamic set; returns the set's order."""
    new, order = new_keys(instance, experiment, wanted)
    if new:
        instance.add_dynamic_partitions(dynamic_name(experiment), new)
    return order


def add_request(instance: dg.DagsterInstance, experiment: str, wanted: Sequence[str]
                ) -> tuple[list[dg.AddDynamicPartitionsRequest], list[str]]:
    """What a sensor returns to add the missing ``wanted`` keys, and the set's order after it."""
    new, order = new_keys(instance, experiment, wanted)
    requests = [dg.AddDynamicPartitionsRequest(dynamic_name(experiment), new)] if new else []
    return requests, order


def batches(keys: Iterable[str], size: int,
            order: Sequence[str] | None = None) -> list[tuple[str, int, int]]:
    """Group partition keys into runs: (config_key, first, last) ranges of at most ``size``.

    A run covers a partition range: of one configuration on the grid, so a batch holds consecutive
    replications of one configuration. With ``order`` (a dynamic set's keys, in the set's order), a
    batch is also contiguous in that order, so its range holds exactly its keys.
    """
    position = {key: i for i, key in enumerate(order)} if order is not None else None
    by_config: dict[str, list[int]] = defaultdict(list)
    for key in keys:
        config_key, replication = split_key(key)
        by_config[config_key].append(replication)
    ranges = []
    for config_key, reps in by_config.items():
        reps.sort()
        start = prev = reps[0]
        for r in [*reps[1:], None]:
            if (r is not None and r == prev + 1 and r - start < size
                    and _adjacent(position, config_key, prev, r)):
                prev = r
                continue
            ranges.append((config_key, start, prev))
            if r is not None:
                start = prev = r
    return ranges


def _adjacent(position: Mapping[str, int] | None, config_key: str, a: int, b: int) -> bool:
    if position is None:
        return True
    pa = position.get(partition_key(config_key, a))
    pb = position.get(partition_key(config_key, b))
    return pa is not None and pb == pa + 1


def range_tags(config_key: str, first: int, last: int) -> dict[str, str]:
    """Run tags that make a run cover the partitions ``config_key|first`` .. ``config_key|last``,
    and show the range in the UI's runs list (which folds Dagster's own tags away)."""
    return {
        "dagster/asset_partition_range_start": partition_key(config_key, first),
        "dagster/asset_partition_range_end": partition_key(config_key, last),
        "simlab/partitions": f"{config_key}|{first}..{last}",
    }


def beyond_plan(targets: Mapping[str, int], present: Iterable[tuple[str, int]]) -> list[str]:
    """Keys of results the plan does not want: replication ``r >= targets[config]`` of a
    configuration of the file (e.g. launched by hand from the UI), in key order."""
    extra = sorted((c, r) for c, r in present if c in targets and r >= targets[c])
    return [partition_key(c, r) for c, r in extra]
