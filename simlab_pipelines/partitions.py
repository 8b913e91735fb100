"""Partition keys of an experiment: configuration x replication.

Dimensions are named ``config`` and ``replication``; Dagster orders them alphabetically, so a key
reads ``<config_key>|<replication>``. Keys derive from parameter values and replication numbers,
never positions: adding configurations or replications to a file adds keys and changes none.
"""

from collections import defaultdict
from collections.abc import Iterable

import dagster as dg

CONFIG = "config"
REPLICATION = "replication"


def partitions_def(config_keys: list[str], replications: int) -> dg.MultiPartitionsDefinition:
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
    config_key, replication = str(key).split("|")
    return config_key, int(replication)


def batches(keys: Iterable[str], size: int) -> list[tuple[str, int, int]]:
    """Group partition keys into runs: (config_key, first, last) ranges of at most ``size``.

    A Dagster partition range on a 2-D partitioning keeps the configuration fixed, so a batch holds
    consecutive replications of one configuration.
    """
    by_config: dict[str, list[int]] = defaultdict(list)
    for key in keys:
        config_key, replication = split_key(key)
        by_config[config_key].append(replication)
    ranges = []
    for config_key, reps in by_config.items():
        reps.sort()
        start = prev = reps[0]
        for r in [*reps[1:], None]:
            if r is not None and r == prev + 1 and r - start < size:
                prev = r
                continue
            ranges.append((config_key, start, prev))
            if r is not None:
                start = prev = r
    return ranges


def range_tags(config_key: str, first: int, last: int) -> dict[str, str]:
    """Run tags that make a run cover the partitions ``config_key|first`` .. ``config_key|last``."""
    return {
        "dagster/asset_partition_range_start": partition_key(config_key, first),
        "dagster/asset_partition_range_end": partition_key(config_key, last),
    }
