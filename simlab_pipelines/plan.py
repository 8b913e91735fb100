"""How many replications each configuration of an experiment wants, and which partitions are missing.

Without ``precision`` (and without an indifference zone) every configuration wants the file's
``replications``. With them, replications are added in rounds (``analysis.sequential``; the second
stage of the two-stage selection), and the rounds are *replayed from the data* every time:

1. round 0 asks for ``replications`` (the pilot, which is also the selection's first stage);
2. once replications ``0 .. t-1`` of a configuration all exist, the sequential procedure run on
   exactly those ``t`` values gives the next round's total ``t'``; the replay stops at the first
   round whose replications are not all there yet (those are the missing ones) or when ``t' = t``.

Each round is a pure function of the previous rounds' values, and replication r always has the same
random streams, so the sweep, the Dagster sensor and any re-run all arrive at the same totals: the
result does not depend on who ran what when, nor on the order in which runs finished.

The partition space is ``configurations x 0 .. max_replications - 1``; partitions beyond a
configuration's target are never run.

A search (``search:`` in the file) has no configurations at load: they are the optimiser's
proposals, replayed from the results round by round in the same way (``simlab_pipelines/search.py``).
:func:`configurations` is the one place that maps an experiment to its configurations now, for
every caller that needs a key's parameters.
"""

import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from simlab_pipelines.experiments import Configuration, ExperimentSpec
from simlab_pipelines.partitions import blocks, round_blocks

# The procedures are imported where they run: they load scipy (~0.3 s), which the processes that
# only read targets of fixed-size experiments (a sweep's start, a run, a sensor) never need.
if TYPE_CHECKING:
    from simlab_pipelines.analysis.sequential import ReplicationPlan

# The sequential procedure's pilot: Law's minimum of 10 replications, or all of a smaller round.
PILOT = 10
# Target status: FIXED (no sequential procedure), RUNNING (the current round's replications are
# not all there yet), else the status of the last plan (met, more, max_reached, undefined).
FIXED, RUNNING = "fixed", "running"


@dataclass(frozen=True)
class Target:
    """What one configuration wants now."""

    config_key: str
    replications: int                  # replications 0 .. replications-1 are wanted
    status: str                        # fixed | running | met | more | max_reached | undefined
    rounds: int                        # rounds of the sequential procedure completed
    plan: "ReplicationPlan | None"     # the last completed round's plan (precision metric)
    selection_required: int | None     # the two-stage selection's total, when there is one
    # Where each round ended, ascending, the last being ``replications`` (empty: the file's
    # replications, then ``replications``): with blocks each round starts its own.
    totals: tuple[int, ...] = ()


def is_search(spec: ExperimentSpec) -> bool:
    """Whether the experiment's configurations are a search's proposals."""
    return spec.search_space is not None


def is_sequential(spec: ExperimentSpec) -> bool:
    """Whether the experiment's partitions grow with its results (dynamic partitions): it may add
    replications beyond its file's ``replications``, or configurations (a search)."""
    return is_search(spec) or spec.max_replications > spec.replications


def configurations(spec: ExperimentSpec, observations: pl.DataFrame | None = None
                   ) -> list[Configuration]:
    """The experiment's configurations now: the file's, or a search's proposals replayed from
    ``observations`` (the long format of ``analysis.frames``, current results only, any
    experiments; None: none yet, so a search's first round)."""
    if not is_search(spec):
        return spec.configurations_list()
    from simlab_pipelines import search  # Optuna is imported by a replay, not by this module

    return search.configurations(spec, observations)


def uses_results(spec: ExperimentSpec) -> bool:
    """Whether the targets depend on results (a precision target or a second stage)."""
    return spec.precision is not None or is_sequential(spec)


def _values(observations: pl.DataFrame, metric: str) -> dict[str, dict[int, float]]:
    """config_key -> replication -> value of ``metric`` (NaN kept: an undefined value was run)."""
    rows = observations.filter(pl.col("metric") == metric).select("config_key", "replication",
                                                                    "value")
    out: dict[str, dict[int, float]] = {}
    for key, replication, value in rows.iter_rows():
        out.setdefault(key, {})[int(replication)] = math.nan if value is None else float(value)
    return out


def _complete(values: Mapping[int, float], n: int) -> bool:
    return all(r in values for r in range(n))


def _selection_required(spec: ExperimentSpec, observations: pl.DataFrame,
                        present: Mapping[str, Mapping[int, float]]) -> dict[str, int] | None:
    """The two-stage selection's totals, from the first stage (replications 0 .. R-1) only."""
    objective, first = spec.objective, spec.replications
    if objective is None or objective.indifference_zone is None:
        return None
    keys = spec.config_keys()
    if len(keys) < 2 or not all(_complete(present.get(k, {}), first) for k in keys):
        return None
    stage = observations.filter((pl.col("metric") == objective.metric)
                                & (pl.col("replication") < first)
                                & pl.col("config_key").is_in(keys))
    from simlab_pipelines.analysis.frames import aligned_samples, samples
    from simlab_pipelines.analysis.selection import two_stage_selection
    try:
        if spec.common_random_numbers:
            _, data = aligned_samples(stage, objective.metric)
        else:
            data = samples(stage, objective.metric)
        selection = two_stage_selection(
            data, indifference_zone=objective.indifference_zone, pstar=spec.confidence,
            minimize=objective.direction == "minimize",
            common_random_numbers=spec.common_random_numbers)
    except ValueError:  # too few defined values in the first stage: no second stage
        return None
    return {k: min(n, spec.max_replications) for k, n in selection.required.items()}


def replication_targets(spec: ExperimentSpec, observations: pl.DataFrame) -> dict[str, Target]:
    """Each configuration's target, replayed from ``observations`` (the long format of
    ``analysis.frames``, any experiments).

    ``observations`` may hold replications beyond the targets (they are ignored) and must hold
    every metric the procedures use (``precision.metric``, ``objective.metric``).
    """
    observations = observations.filter(pl.col("experiment") == spec.name)
    if is_search(spec):
        return _search_targets(spec, observations)
    precision = spec.precision
    metric = precision.metric if precision is not None else (
        spec.objective.metric if spec.objective is not None else None)
    present = _values(observations, metric) if metric is not None else {}
    required = _selection_required(spec, observations, present) if is_sequential(spec) else None
    targets = {}
    for key in spec.config_keys():
        values = present.get(key, {})
        total, status, rounds, plan = spec.replications, FIXED, 0, None
        totals = [total]
        if precision is not None:
            status = RUNNING
            while _complete(values, total):
                # Imported with the first results: a sweep's start plans without scipy.
                from simlab_pipelines.analysis.sequential import next_round

                plan = next_round(
                    {key: np.array([values[r] for r in range(total)])},
                    target=precision.relative_half_width,
                    max_replications=precision.max_replications,
                    confidence=precision.confidence, min_replications=min(PILOT, total))[key]
                rounds += 1
                status = plan.status
                if plan.target == total:
                    break
                total, status = plan.target, RUNNING
                totals.append(total)
        extra = required.get(key) if required else None
        if extra is not None and extra > total:
            total = extra
            totals.append(total)
            status = RUNNING if not _complete(values, total) else status
        targets[key] = Target(key, total, status, rounds, plan, extra, tuple(totals))
    return targets


def _search_targets(spec: ExperimentSpec, observations: pl.DataFrame) -> dict[str, Target]:
    """A search's configurations so far, each with its first stage, and the clean-up's (or the
    breaking-point search's) replications beyond it."""
    from simlab_pipelines import search

    found = search.progress(spec, observations)
    status = "done" if found.done else RUNNING
    return {c.key: Target(c.key, found.targets[c.key], status, found.replay.round_of.get(c.key, 0),
                          None, found.targets[c.key] if found.targets[c.key] > spec.replications
                          else None, found.totals.get(c.key, ()))
            for c in found.replay.configurations}


def _wanted_keys(spec: ExperimentSpec, targets: Mapping[str, Target]) -> list[str]:
    return spec.config_keys() if not is_search(spec) else (
        list(targets) or [c.key for c in configurations(spec)])


def target_blocks(spec: ExperimentSpec, target: Target | None) -> list[tuple[int, int]]:
    """The partitions of one configuration's wanted replications, as (first, last) blocks of
    ``spec.block_size``: on the grid from 0, with rounds from each round's start
    (partitions.round_blocks)."""
    total = target.replications if target is not None else spec.replications
    if not is_sequential(spec):
        return blocks(0, total, spec.block_size)
    totals = (target.totals if target is not None and target.totals
              else (spec.replications, total))
    return round_blocks([t for t in totals if t <= total] + [total], spec.block_size)


def wanted_blocks(spec: ExperimentSpec, targets: Mapping[str, Target]
                  ) -> Iterator[tuple[str, int, int]]:
    """(config_key, first, last) of every partition wanted now, in configuration then
    replication order (a search's: in order of proposal; without targets, its first round's)."""
    for key in _wanted_keys(spec, targets):
        for first, last in target_blocks(spec, targets.get(key)):
            yield key, first, last


def wanted_partitions(spec: ExperimentSpec, targets: Mapping[str, Target]) -> list[str]:
    """Partition keys wanted now, in configuration then replication order (a search's: in
    order of proposal; without targets, its first round's)."""
    return wanted_frame(spec, targets)["key"].to_list()


_KEY = pl.concat_str("config_key", pl.lit("|"), pl.col("first").cast(pl.String),
                     pl.when(pl.col("last") > pl.col("first"))
                     .then(pl.lit("-") + pl.col("last").cast(pl.String)).otherwise(pl.lit("")))


def wanted_frame(spec: ExperimentSpec, targets: Mapping[str, Target]) -> pl.DataFrame:
    """``wanted_blocks`` as a frame (config_key, first, last, key), built without a Python
    object per partition where the grid allows (every configuration the same blocks)."""
    schema = {"config_key": pl.String, "first": pl.Int64, "last": pl.Int64}
    keys = _wanted_keys(spec, targets)
    totals = {targets[k].replications if k in targets else spec.replications for k in keys}
    if not is_sequential(spec) and len(totals) == 1:
        spans = blocks(0, totals.pop(), spec.block_size)
        frame = pl.DataFrame({"config_key": keys}, schema={"config_key": pl.String}).join(
            pl.DataFrame(spans, orient="row", schema={"first": pl.Int64, "last": pl.Int64}),
            how="cross")
    else:
        frame = pl.DataFrame(list(wanted_blocks(spec, targets)), orient="row", schema=schema)
    return frame.with_columns(_KEY.alias("key"))


def wanted_replications(spec: ExperimentSpec, targets: Mapping[str, Target]
                        ) -> list[tuple[str, int]]:
    """(config_key, replication) of every replication wanted now, in the same order."""
    return [(key, r) for key, first, last in wanted_blocks(spec, targets)
            for r in range(first, last + 1)]


def wanted_count(spec: ExperimentSpec, targets: Mapping[str, Target]) -> int:
    """How many partitions are wanted now (without building their keys)."""
    return sum(len(target_blocks(spec, targets.get(key)))
               for key in _wanted_keys(spec, targets))


_PRESENT = {"config_key": pl.String, "replication": pl.Int64}


def missing_partitions(spec: ExperimentSpec, targets: Mapping[str, Target],
                       materialized: Collection[str],
                       on_disk: pl.DataFrame | Collection[tuple[str, int]]) -> list[str]:
    """Wanted partitions not materialised (in the instance), or with a replication without a
    current result (``on_disk``: a frame of config_key and replication, or such pairs; gone, or
    made from other inputs). Counted per partition in polars: a million results cost no
    Python object each, and memory goes with what exists and what is missing, not with the
    experiment's whole space."""
    wanted = wanted_frame(spec, targets)
    if wanted.is_empty():
        return []
    present = on_disk if isinstance(on_disk, pl.DataFrame) else pl.DataFrame(
        list(on_disk), orient="row", schema=_PRESENT)
    wanted = wanted.with_row_index("_partition")
    landed = (present.select(pl.col("config_key").cast(pl.String),
                             pl.col("replication").cast(pl.Int64)).unique()
              .sort("replication")
              .join_asof(wanted.sort("first"), left_on="replication", right_on="first",
                         by="config_key", strategy="backward", check_sortedness=False)
              .filter(pl.col("replication") <= pl.col("last"))
              .group_by("_partition").len("_found"))
    done = pl.Series("done", list(materialized), dtype=pl.String)
    return (wanted.join(landed, on="_partition", how="left").sort("_partition")
            .filter((pl.col("_found").fill_null(0) < pl.col("last") - pl.col("first") + 1)
                    | ~pl.col("key").is_in(done))
            ["key"].to_list())


def unmaterialized(spec: ExperimentSpec, targets: Mapping[str, Target],
                   materialized: Collection[str]) -> list[str]:
    """Wanted partitions not materialised, in order (when every result is known to be there)."""
    done = pl.Series("done", list(materialized), dtype=pl.String)
    return wanted_frame(spec, targets).filter(~pl.col("key").is_in(done))["key"].to_list()
