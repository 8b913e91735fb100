"""Partition keys of an experiment: ``<config_key>|<replication>``, or ``<config_key>|<first>-<last>``
for a block of replications, and the partitions Dagster offers.

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

**Blocks.** Past Dagster's recommended 100,000 partitions per asset, a partition holds a block of
consecutive replications of one configuration (``replications_per_partition``, spec.block_size:
``auto`` picks the smallest block that keeps the partitions within it). A block's key reads
``<config_key>|<first>-<last>`` (both included; a block of one keeps the single key), its results
are one file with a row per replication (storage.py), and every replication keeps its own seed,
spawn key, span and row: results do not depend on the block size. On the grid a configuration's
blocks are ``0 .. b-1``, ``b .. 2b-1``, ... (the last one shorter); a sequential experiment's rounds
each start new blocks where the previous round ended (:func:`blocks`), so no two keys overlap.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from simlab_pipelines.storage import parse_stem, stem

CONFIG = "config"
REPLICATION = "replication"
# Dynamic keys added per call: Dagster's add_dynamic_partitions checks all the keys of one call in a
# single ``IN (...)`` query, one SQL variable a key (a SQLite built with the upstream default of
# 32,766 variables fails at ~33,000), and its docs recommend at most 25,000 a sensor request.
ADD_CHUNK = 25_000


def dynamic_name(experiment: str) -> str:
    """The name of an experiment's dynamic partition set in the instance."""
    return f"{experiment}__replications"


def blocks(start: int, stop: int, block: int) -> list[tuple[int, int]]:
    """Replications ``start`` .. ``stop - 1`` in blocks of ``block`` from ``start``: (first, last)."""
    size = max(1, block)
    return [(first, min(first + size, stop) - 1) for first in range(start, stop, size)]


def round_blocks(totals: Sequence[int], block: int) -> list[tuple[int, int]]:
    """The blocks of replications ``0 .. totals[-1] - 1`` when each round ends at its total
    (``totals`` ascending): every round starts its own blocks, so the keys of earlier rounds
    stay as they were when the next round adds replications."""
    out: list[tuple[int, int]] = []
    start = 0
    for total in totals:
        if total > start:
            out += blocks(start, total, block)
            start = total
    return out


def grid_labels(replications: int, block: int) -> list[str]:
    """The replication dimension of the grid: ``0`` .. ``R-1``, or the blocks' ``first-last``."""
    return [stem(first, last) for first, last in blocks(0, replications, block)]


def partitions_def(experiment: str, config_keys: list[str], replications: int,
                   sequential: bool, block: int = 1) -> dg.PartitionsDefinition:
    """The static grid of a fixed experiment (replications in blocks of ``block``), or the
    dynamic key set of a sequential one."""
    if sequential:
        return dg.DynamicPartitionsDefinition(name=dynamic_name(experiment))
    return dg.MultiPartitionsDefinition(
        {
            CONFIG: dg.StaticPartitionsDefinition(config_keys),
            REPLICATION: dg.StaticPartitionsDefinition(grid_labels(replications, block)),
        }
    )


def partition_key(config_key: str, first: int, last: int | None = None) -> str:
    """The key of replication ``first`` of ``config_key``, or of its block ``first`` .. ``last``."""
    return f"{config_key}|{stem(first, first if last is None else last)}"


def split_block(key: str) -> tuple[str, int, int]:
    """(config_key, first, last replication) of a partition key (a string or a
    MultiPartitionKey); first == last for a key of one replication."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        config_key, replications = dims[CONFIG], dims[REPLICATION]
    else:
        config_key, sep, replications = str(key).rpartition("|")
        if not sep:
            config_key = ""
    span = parse_stem(replications)
    if not config_key or span is None:
        raise ValueError(f"partition key {str(key)!r} is not <config_key>|<replication> or "
                         "<config_key>|<first>-<last> (e.g. 'servers-2|0', 'servers-2|0-9')")
    return config_key, span[0], span[1]


def split_key(key: str) -> tuple[str, int]:
    """(config_key, replication) of a partition key of one replication."""
    config_key, first, last = split_block(key)
    if first != last:
        raise ValueError(f"partition key {str(key)!r} is a block of replications {first} to "
                         f"{last}, not <config_key>|<replication>")
    return config_key, first


def new_keys(instance: dg.DagsterInstance, experiment: str, wanted: Sequence[str]
             ) -> tuple[list[str], list[str]]:
    """(``wanted`` keys not yet in the experiment's dynamic set, the set's order once they are
    added). Added in the order given (configuration, then replication), so a batch of
    consecutive replications is a contiguous range of the set."""
    existing = list(instance.get_dynamic_partitions(dynamic_name(experiment)))
    have = set(existing)
    new = [key for key in dict.fromkeys(wanted) if key not in have]
    return new, existing + new


def _chunks_of(keys: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), ADD_CHUNK):
        yield list(keys[start:start + ADD_CHUNK])


def add_keys(instance: dg.DagsterInstance, experiment: str, wanted: Sequence[str]) -> list[str]:
    """Add the ``wanted`` keys missing from the experiment's dynamic set, at most ADD_CHUNK a
    call, in order; returns the set's order."""
    new, order = new_keys(instance, experiment, wanted)
    for chunk in _chunks_of(new):
        instance.add_dynamic_partitions(dynamic_name(experiment), chunk)
    return order


def add_request(instance: dg.DagsterInstance, experiment: str, wanted: Sequence[str]
                ) -> tuple[list[dg.AddDynamicPartitionsRequest], list[str]]:
    """What a sensor returns to add the missing ``wanted`` keys (one request per ADD_CHUNK keys:
    the daemon adds each request's keys in one call), and the set's order after it."""
    new, order = new_keys(instance, experiment, wanted)
    requests = [dg.AddDynamicPartitionsRequest(dynamic_name(experiment), chunk)
                for chunk in _chunks_of(new)]
    return requests, order


@dataclass(frozen=True)
class Batch:
    """The partitions of one run: a range of partition keys, ``keys`` in the range's order."""

    keys: tuple[str, ...]

    @property
    def start(self) -> str:
        return self.keys[0]

    @property
    def end(self) -> str:
        return self.keys[-1]

    def tags(self) -> dict[str, str]:
        """Run tags that make a run cover exactly these partitions, and show them in the UI."""
        first, last = split_block(self.start), split_block(self.end)
        label = (f"{first[0]}|{first[1]}..{last[2]}" if first[0] == last[0]
                 else f"{self.start}..{self.end}")
        return {"dagster/asset_partition_range_start": self.start,
                "dagster/asset_partition_range_end": self.end, "simlab/partitions": label}

    def __len__(self) -> int:
        return len(self.keys)


def batches(keys: Iterable[str], size: int, order: Sequence[str] | None = None,
            configurations: Sequence[str] | None = None) -> list[Batch]:
    """Group partition keys into runs of at most ``size`` partitions, each one partition range.

    On the grid (``order`` None) a range is a rectangle, the product of a range of configurations
    (``configurations``: the grid's order; without it each configuration gets its own runs) and
    a range of replications: adjacent configurations missing the same replications share a run (50 x 100
    in runs of 500 is 10 runs, not 50), and a configuration missing more than ``size`` is split
    by replications. With ``order`` (a sequential experiment's dynamic set, in the set's order) a
    batch is a contiguous stretch of the set, across configurations, holding exactly its keys.
    """
    size = max(1, size)
    if order is not None:
        return _dynamic_batches(set(keys), size, order)
    by_config: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key in keys:
        config_key, first, last = split_block(key)
        by_config[config_key].append((first, last))
    # Without the grid's order no two configurations are known to be adjacent: one run each.
    merge = configurations is not None
    grid = list(configurations) if merge else list(by_config)
    unknown = set(by_config) - set(grid)
    if unknown:
        raise ValueError(f"partition keys of configuration(s) {sorted(unknown)[:3]} not in the "
                         "grid")
    out: list[Batch] = []
    # Consecutive configurations of the grid, each missing exactly the replications `span` (a
    # configuration missing nothing, or several stretches, ends the group: adjacency holds).
    group: list[str] = []
    span: tuple[tuple[int, int], ...] = ()
    for config_key in grid:
        chunks = _chunks(sorted(by_config.get(config_key, ())), size)
        if (merge and group and chunks == [span]
                and (len(group) + 1) * len(span) <= size):
            group.append(config_key)
            continue
        if group:
            out.append(_rectangle(group, span))
            group = []
        if len(chunks) == 1:
            group, span = [config_key], chunks[0]
        else:
            out += [_rectangle([config_key], chunk) for chunk in chunks]
    if group:
        out.append(_rectangle(group, span))
    return out


def _chunks(spans: list[tuple[int, int]], size: int) -> list[tuple[tuple[int, int], ...]]:
    """Contiguous stretches of ``spans`` (sorted (first, last) of each partition: a block's, or
    one replication's), each at most ``size`` partitions long."""
    out: list[list[tuple[int, int]]] = []
    for span in spans:
        if out and span[0] == out[-1][-1][1] + 1 and len(out[-1]) < size:
            out[-1].append(span)
        else:
            out.append([span])
    return [tuple(chunk) for chunk in out]


def _rectangle(configs: list[str], span: tuple[tuple[int, int], ...]) -> Batch:
    # Dagster orders a multi-partition range's keys by dimension name: config, then replication.
    return Batch(tuple(partition_key(c, first, last) for c in configs for first, last in span))


def _dynamic_batches(missing: set[str], size: int, order: Sequence[str]) -> list[Batch]:
    out: list[Batch] = []
    current: list[str] = []
    for key in [*order, None]:
        if key is not None and key in missing and len(current) < size:
            current.append(key)
            continue
        if current:
            out.append(Batch(tuple(current)))
        current = [key] if key is not None and key in missing else []
    return out


def range_tags(config_key: str, first: int, last: int) -> dict[str, str]:
    """Run tags that make a run cover the partitions ``config_key|first`` .. ``config_key|last``
    (of one replication each), and show the range in the UI's runs list (which folds Dagster's
    own tags away)."""
    return Batch((partition_key(config_key, first), partition_key(config_key, last))).tags()


def beyond_plan(targets: Mapping[str, int], present: Iterable[tuple[str, int]]) -> list[str]:
    """Keys of results the plan does not want: replication ``r >= targets[config]`` of a
    configuration of the file (e.g. launched by hand from the UI), in key order."""
    extra = sorted((c, r) for c, r in present if c in targets and r >= targets[c])
    return [partition_key(c, r) for c, r in extra]
