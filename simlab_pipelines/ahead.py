"""A sweep's head start: its first simulations run while ``simlab sweep`` is still starting up.

Before its first run can simulate, a sweep imports Dagster, opens the instance, records the
experiment's spec and creates the run: 1.5-2.5 s in which the pool's workers, started first
(``pool_server``), would wait. When nothing of the experiment has landed yet, its first round is
known from the file alone: replications 0 .. ``replications``-1 of every configuration (a
precision target's pilot, a selection's first stage). ``start`` hands those simulations to the
workers at once, replication by replication, two a worker at a time (``batch.run_ahead``).

A precision target's later rounds follow the same way: once a round is in, the next is planned
from its results (and those before it) with the sweep's own plan (``plan.replication_targets``,
a pure function of those values), and goes ahead while the runs still record the round before
and the sweep plans it again from the files. Its runs take it over: a run that catches up with
the head start simulates those not yet handed to the pool itself and tells the head start their
results. The first run that needs a simulation the head start did not guess stops it, and at
most ``MAX_AHEAD`` results wait in memory for their run.

Nothing is written ahead. The results wait in this process until the run holding their
partitions takes them over (``batch.execute``); the run then writes each file, span and row with
its own run id, as if its worker had simulated it then. Only the row's ``started_at`` (earlier
than the run) and the span's ``simlab.simulated_ahead`` attribute tell. A simulation is taken
over only by a task equal in everything its result depends on (``batch._simulation``); any other,
and one still unclaimed when the sweep ends, is dropped.

No head start for a search (its optimiser proposes the configurations), replication blocks (past
100,000 partitions), a command-line simulator (its span travels with it), results in an object
store, an experiment with results already (what it lacks is then known only from the instance
and the result files), or one worker. ``SIMLAB_HEAD_START=0`` turns it off.

Dagster is not imported here: ``simlab sweep`` starts the head start before it imports Dagster
(the next round's plan imports it, later, in the head start's thread).
"""

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from simlab_pipelines import batch, settings
from simlab_pipelines.experiments import ExperimentSpec

VARIABLE = "SIMLAB_HEAD_START"
# At most this many simulations ahead (kept in memory until taken over): a sweep that waits
# for another sweep's lock does not simulate its whole first round meanwhile.
MAX_AHEAD = 1000
_STARTED = [False]  # by this command (``stop`` ends it)


def enabled() -> bool:
    return os.environ.get(VARIABLE, "").strip().lower() not in ("0", "false", "no", "off")


def tasks(spec: ExperimentSpec, results_uri: str) -> list[batch.Task]:
    """The simulations a sweep of ``spec`` can start before it has a plan (see the module's
    docstring), replication by replication, at most ``MAX_AHEAD``; none when not eligible."""
    if (not enabled() or spec.search_space is not None or spec.block_size != 1
            or spec.model_ref.command or "://" in results_uri
            or _has_results(Path(results_uri) / spec.name)):
        return []
    configurations = spec.configurations_list()
    first_round = (("", c.key, r, r) for r in range(spec.replications) for c in configurations)
    partitions = list(itertools.islice(first_round, MAX_AHEAD))
    return batch.spec_tasks(spec, partitions, {c.key: c for c in configurations}, run_id="",
                            results_uri=results_uri, traceparent=None)


def _has_results(root: Path) -> bool:
    """Whether the experiment's result directory holds a configuration's directory (any files)."""
    try:
        with os.scandir(root) as entries:
            return any(e.is_dir() and not e.name.startswith(".") for e in entries)
    except FileNotFoundError:
        return False


def start(spec: ExperimentSpec, workers: int) -> None:
    """Start the head start of a sweep of ``spec`` on a pool of ``workers``, if it has one."""
    if workers > 1:
        results_uri = settings.results_uri()
        early = tasks(spec, results_uri)
        _STARTED[0] = bool(early)
        # A precision target's rounds follow from the results (no search has a head start);
        # only a whole first round tells the next one.
        rounds = spec.precision is not None and len(early) == spec.replications * len(
            spec.configurations_list())
        batch.run_ahead(early, workers, _next_round(spec, results_uri) if rounds else None,
                        hold=MAX_AHEAD)


def _next_round(spec: ExperimentSpec, results_uri: str
                ) -> Callable[[batch.Results], list[batch.Task]]:
    """The rounds after the first of a sequential experiment, each from the results of the rounds
    before it, as the sweep will plan it (``plan.replication_targets``: a pure function of
    those results), at most ``MAX_AHEAD`` a round; none once a round is not whole."""
    configurations = {c.key: c for c in spec.configurations_list()}
    cut = [False]

    def after(results: batch.Results) -> list[batch.Task]:
        # Imported here: they import Dagster, which the sweep imports meanwhile (and scipy).
        from simlab_pipelines.plan import replication_targets
        from simlab_pipelines.summary import observations

        if cut[0]:
            return []
        frame = pl.DataFrame({
            "experiment": [spec.name] * len(results),
            "config_key": [task.config_key for task, _ in results],
            "replication": [task.replication for task, _ in results],
            "metrics": [metrics for _, metrics in results]})
        targets = replication_targets(spec, observations(frame, spec))
        have = {key: 0 for key in configurations}
        for task, _ in results:
            have[task.config_key] += 1  # (replications 0 .. have-1: whole rounds)
        following = ((("", key, r, r) for r in range(have[key], target.replications))
                     for key, target in targets.items())
        partitions = sorted(itertools.chain.from_iterable(following), key=lambda p: p[2])
        cut[0] = len(partitions) > MAX_AHEAD
        return batch.spec_tasks(spec, partitions[:MAX_AHEAD], configurations, run_id="",
                                results_uri=results_uri, traceparent=None)

    return after


def stop() -> None:
    """End it, however the command ends: what no run took over is dropped. A pool still there
    (the command failed or was interrupted before its runs) is stopped at once: a long
    simulation started ahead must not hold a Ctrl-C or an error for its whole length."""
    if _STARTED[0]:
        _STARTED[0] = False
        batch.stop_pools()
