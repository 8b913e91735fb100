"""A search run in this process, without Dagster (tests, benchmarks): the decisions of
``simlab sweep`` (``plan``, the summary's responses) on simulations made here.

Kept out of ``search.py`` so that imports run one way: ``plan`` and the summary use ``search``,
and this driver uses all three.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from simlab_pipelines import plan
from simlab_pipelines.experiments import Configuration, ExperimentSpec
from simlab_pipelines.experiments.keys import canonical_json
from simlab_pipelines.search import Progress, Replay, progress
from simlab_pipelines.summary import observations as long_format


@dataclass(frozen=True)
class LocalSearch:
    """What ``run_locally`` ran and where the search stands."""

    progress: Progress
    observations: pl.DataFrame  # long format, responses included
    targets: dict[str, Any]     # plan.Target per configuration
    simulations: int
    partitions: tuple[str, ...] = ()  # every partition key run, in order (a block once)

    @property
    def replay(self) -> Replay:
        return self.progress.replay


Simulation = Callable[[Configuration, int], Mapping[str, float]]


def run_locally(spec: ExperimentSpec, simulate: Simulation | None = None) -> LocalSearch:
    """Run ``spec``'s search to its end in this process: the decisions are ``simlab sweep``'s
    (``plan.replication_targets`` and ``plan.wanted_partitions`` on the observations so far, the
    responses evaluated as the summary does), the simulations ``simulate(configuration,
    replication) -> metrics`` (default: ``engine.simulate`` with the spec's seed, horizon,
    warm-up and common random numbers, as a pool worker runs them)."""
    simulate = simulate or _engine_simulation(spec)
    metrics: dict[tuple[str, int], Mapping[str, float]] = {}
    params: dict[str, dict[str, Any]] = {}
    ran: dict[str, None] = {}
    while True:
        wide = pl.DataFrame(
            {"experiment": [spec.name] * len(metrics),
             "config_key": [k for k, _ in metrics], "replication": [r for _, r in metrics],
             "params": [canonical_json(params[k]) for k, _ in metrics],
             "metrics": [dict(m) for m in metrics.values()]},
            schema_overrides={"replication": pl.Int64})
        obs = long_format(wide, spec)
        targets = plan.replication_targets(spec, obs)
        partitions = [k for k in plan.wanted_partitions(spec, targets) if k not in ran]
        todo = [pair for k in partitions for pair in _replications(k) if pair not in metrics]
        if not todo:
            return LocalSearch(progress(spec, obs), obs, targets, len(metrics), tuple(ran))
        ran.update(dict.fromkeys(partitions))
        configs = {c.key: c for c in plan.configurations(spec, obs)}
        for key, replication in todo:
            params[key] = configs[key].params
            metrics[(key, replication)] = simulate(configs[key], replication)


def _engine_simulation(spec: ExperimentSpec) -> Simulation:
    import engine

    def run(config: Configuration, replication: int) -> Mapping[str, float]:
        return engine.simulate(spec.resolved_model, config.params, replication=replication,
                               seed=spec.seed, horizon=spec.resolved_horizon,
                               warmup=spec.resolved_warmup,
                               common_random_numbers=spec.common_random_numbers).metrics

    return run


def _replications(key: str) -> list[tuple[str, int]]:
    """(config_key, replication) of each replication a partition key covers: ``key|r``, or a
    block ``key|first-last`` of several replications."""
    config_key, _, replications = str(key).rpartition("|")
    first, _, last = replications.partition("-")
    return [(config_key, r) for r in range(int(first), int(last or first) + 1)]
