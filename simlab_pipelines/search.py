"""A search's rounds, replayed from the results: which configurations the optimiser has proposed.

A search experiment has no configuration list at load. Its configurations are what the search
proposed so far, and the proposals are *replayed* from the results every time they are needed
(as ``plan.py`` replays sequential rounds):

    round 0: ask the seeded optimiser for ``batch`` proposals -> configurations C0
    round k: once every configuration of rounds < k has its R first-stage results, tell the
             optimiser each one's first-stage means (objective; constraints for the samplers
             that take them) and ask the next batch -> Ck
    ...      until budget.configurations or budget.simulations is spent, the space is
             exhausted, or the optimiser only proposes configurations already evaluated
    then:    the clean-up's replications of its candidates (``progress``: S2's
             ``analysis.cleanup.clean_up``), or, for ``method: threshold``, the breaking-point
             search's rounds (``analysis.threshold.threshold_round``) replayed the same way

The optimiser is rebuilt from its seed on every replay (Optuna's ask-and-tell with in-memory
storage), and it is told exactly the values of the result files, in round order, so the same file
and the same results give the same proposals, whoever replays them: ``simlab sweep``, the
sensors, a run process that needs a key's parameters, the summary. A sweep killed mid-search
resumes where it stopped and re-simulates nothing. The result files of a round carry no record
of the round: their values are all the replay needs.

- A proposal equal to a configuration already proposed (same key) is not run again: its trial is
  told that configuration's values (at once for an earlier round's, with the round for its own),
  and the round asks again, so that each round brings ``batch`` new configurations (at most
  ASKS_PER_PROPOSAL asks per configuration wanted).
- A proposal the model rejects (a cross-parameter rule, e.g. M/M/c/K's capacity >= servers) is
  told as a failed trial and not run; as is a configuration whose objective is undefined (NaN).
- Floats are rounded to 6 significant digits before they become parameters, so keys stay short.
- Samplers that take constraints (tpe, gp) get each constraint's first-stage mean as a
  normalised violation (``<= 0``: met); cmaes is told a penalised objective for a configuration
  that misses a constraint (the worst objective told so far plus the violation), so it does not
  converge on an infeasible optimum; random ignores the values. Feasibility with confidence is
  the clean-up's (``analysis/constraints.py``), not the optimiser's.

Replication r of every configuration has the same random streams (common random numbers), so the
comparisons between proposals are paired. The replay is cached in the process by the spec's hash
and the first-stage values it used, and remembers the optimiser's state (a deep copy of the study)
before a round that waits for its results: the next replay in the process continues from there
when the values it was told are unchanged, so a sweep's round costs the new round's asks, not
all of them again. A run needs no replay for a readable key (``configuration_of_key``).
"""

import itertools
import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from engine.parameters import ParameterError
from simlab_pipelines.experiments import Configuration, ExperimentSpec, config_key
from simlab_pipelines.experiments.search import SearchSpace, SpaceFactor

# Why a search stopped proposing (Replay.stopped).
BUDGET_CONFIGURATIONS = "budget.configurations"
BUDGET_SIMULATIONS = "budget.simulations"
SPACE_EXHAUSTED = "space exhausted"
NOTHING_NEW = "no new proposals"
# A round asks again for proposals that repeat an earlier configuration (told its values at once)
# or that the model rejects, up to this many times its size: each round gets its new
# configurations, rather than many rounds a few each.
ASKS_PER_PROPOSAL = 4
# Rounds without a new configuration before the search gives up (the optimiser has converged, or
# keeps proposing configurations the model rejects).
MAX_FRUITLESS_ROUNDS = 3
# A constraint whose first-stage mean is undefined is told as violated by this much.
UNDEFINED_VIOLATION = 1.0


@dataclass(frozen=True)
class Proposal:
    """One trial of the optimiser: what it proposed and what became of it."""

    round: int
    trial: int
    config_key: str | None      # None when the model rejected the values
    varying: dict[str, Any]
    status: str                 # new | duplicate | invalid
    reason: str | None = None   # why the model rejected it


@dataclass(frozen=True)
class FirstStage:
    """A configuration's first-stage means (replications 0 .. R-1)."""

    objective: float
    constraints: tuple[float, ...]  # each constraint metric's mean, in the file's order


@dataclass(frozen=True)
class Replay:
    """The search as the results stand."""

    configurations: tuple[Configuration, ...]  # in order of first proposal
    round_of: dict[str, int]                   # config_key -> the round that proposed it
    proposals: tuple[Proposal, ...]
    rounds: int                                # rounds asked so far
    pending: int | None                        # the round waiting for first-stage results
    stopped: str | None                        # why the search stopped (None: still going)
    first_stage: dict[str, FirstStage] = field(default_factory=dict)  # complete configurations
    method: str = ""

    @property
    def finished(self) -> bool:
        """The search has stopped and every proposal has its first stage: the clean-up's turn."""
        return self.stopped is not None and self.pending is None


def file_constraints(spec: ExperimentSpec) -> list[Any]:
    """The file's constraints (``{metric, min?, max?}``), if the spec has any."""
    return list(getattr(spec, "constraints", None) or [])


def first_stage(spec: ExperimentSpec, observations: pl.DataFrame | None
                ) -> dict[str, FirstStage]:
    """Each configuration's first-stage means, for the configurations whose objective has all
    of replications 0 .. R-1 (NaN kept: an undefined value was run)."""
    space = spec.search_space
    if observations is None or observations.is_empty() or space is None:
        return {}
    objective = spec.objective.metric if spec.objective is not None else space.threshold.metric
    metrics = [objective, *(c.metric for c in file_constraints(spec))]
    rows = observations
    if "experiment" in rows.columns:
        rows = rows.filter(pl.col("experiment") == spec.name)
    rows = rows.filter(pl.col("metric").is_in(metrics)
                       & (pl.col("replication") < space.replications))
    values: dict[str, dict[str, dict[int, float]]] = {}
    for key, replication, metric, value in rows.select(
            "config_key", "replication", "metric", "value").iter_rows():
        values.setdefault(key, {}).setdefault(metric, {})[int(replication)] = (
            math.nan if value is None else float(value))
    out = {}
    wanted = range(space.replications)
    for key, by_metric in values.items():
        got = by_metric.get(objective, {})
        if not all(r in got for r in wanted):
            continue
        means = []
        for metric in metrics:
            series = by_metric.get(metric, {})
            means.append(float(np.mean([series.get(r, math.nan) for r in wanted])))
        out[key] = FirstStage(means[0], tuple(means[1:]))
    return out


def configuration_of_key(spec: ExperimentSpec, key: str) -> Configuration | None:
    """The configuration a readable key names (``pool_size-4_timeout-1.5``), without replaying
    the search: what a run needs of its keys, cheaply. None when the key is shortened (a hash),
    does not name exactly the search's factors, or names values outside its space; the caller
    then asks the replay."""
    names = sorted(spec.search_space.names)
    found = re.fullmatch("_".join(f"{re.escape(n)}-([^_]+)" for n in names), key)
    if found is None:
        return None
    varying = {name: _parse_value(text) for name, text in zip(names, found.groups(), strict=True)}
    if config_key(varying) != key or not all(
            _in_space(spec.search_space, name, value) for name, value in varying.items()):
        return None
    try:
        return configuration(spec, varying)
    except ParameterError:
        return None


def _parse_value(text: str) -> Any:
    if text == "none":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _in_space(space: SearchSpace, name: str, value: Any) -> bool:
    if space.threshold is not None:
        t = space.threshold
        return isinstance(value, int | float) and t.min <= value <= t.max
    factor = next(f for f in space.factors if f.name == name)
    if factor.kind == "values":
        return any(value == v and type(value) is type(v) for v in factor.values)
    if factor.kind == "int" and not isinstance(value, int):
        return False
    return isinstance(value, int | float) and factor.min <= value <= factor.max


def configuration(spec: ExperimentSpec, varying: Mapping[str, Any]) -> Configuration:
    """The configuration of proposed values (ParameterError when the model rejects them)."""
    params = spec.resolved_model.validate({**spec.parameters, **varying})
    return Configuration(config_key(varying), params, dict(varying))


# ---------------------------------------------------------------------------------------------
# Proposers: the optimiser behind one method, asked and told in rounds


class _Grid:
    """Every combination of the finite factors, first factor slowest (a factorial's order)."""

    def __init__(self, space: SearchSpace) -> None:
        self._levels = [f.grid() for f in space.factors]
        self._names = space.names
        self._size = math.prod(len(levels) for levels in self._levels)
        self._count = 0

    def ask(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        out = []
        while len(out) < n and self._count < self._size:
            index, combo = self._count, []
            for levels in reversed(self._levels):  # the last factor fastest
                index, digit = divmod(index, len(levels))
                combo.append(levels[digit])
            out.append((self._count, dict(zip(self._names, reversed(combo), strict=True))))
            self._count += 1
        return out

    def tell(self, trial: int, stage: FirstStage | None) -> None:
        """The grid needs no values."""


class _Optuna:
    """An Optuna study in memory, asked for ``n`` trials at a time (ask-and-tell)."""

    def __init__(self, spec: ExperimentSpec, space: SearchSpace) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.minimize = spec.objective.direction == "minimize"
        self.limits = [_limit(c) for c in file_constraints(spec)]
        self._trials: dict[int, Any] = {}
        self._told: list[float] = []  # objectives told so far (cmaes' penalty)
        constrained = bool(self.limits) and space.method in ("tpe", "gp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constraints_func, GPSampler: "experimental"
            self.study = optuna.create_study(
                sampler=_sampler(optuna, space, constrained),
                direction="minimize" if self.minimize else "maximize")
        self.penalise = bool(self.limits) and space.method == "cmaes"
        self.distributions = {f.name: _distribution(optuna, f) for f in space.factors}

    def ask(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(n):
                trial = self.study.ask(self.distributions)
                self._trials[trial.number] = trial
                out.append((trial.number, {f.name: _value(self.space, f, trial.params[f.name])
                                           for f in self.space.factors}))
        return out

    def tell(self, number: int, stage: FirstStage | None) -> None:
        trial = self._trials.pop(number)
        from optuna.trial import TrialState

        failed = TrialState.FAIL
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if stage is None or not math.isfinite(stage.objective):
                self.study.tell(trial, state=failed)
                return
            violations = [_violation(limit, mean)
                          for limit, mean in zip(self.limits, stage.constraints, strict=True)]
            value = stage.objective
            self._told.append(value)
            if self.penalise and any(v > 0 for v in violations):
                value = self._penalised(violations)
            trial.set_user_attr("constraints", violations)
            self.study.tell(trial, value)

    def _penalised(self, violations: Sequence[float]) -> float:
        """Worse than every objective told so far, by the total normalised violation."""
        worst = max(self._told) if self.minimize else min(self._told)
        excess = sum(v for v in violations if v > 0) * (abs(worst) + 1.0)
        return worst + excess if self.minimize else worst - excess


def _sampler(optuna: Any, space: SearchSpace, constrained: bool) -> Any:
    samplers = optuna.samplers
    constraints = _constraints_func if constrained else None
    if space.method == "tpe":
        return samplers.TPESampler(seed=space.seed, constant_liar=True,
                                   constraints_func=constraints)
    if space.method == "gp":
        return samplers.GPSampler(seed=space.seed, constraints_func=constraints)
    if space.method == "cmaes":
        # One generation per round; CMA-ES with margin keeps integer factors from collapsing.
        discrete = any(f.kind != "float" for f in space.factors)
        return samplers.CmaEsSampler(seed=space.seed, popsize=space.batch if space.batch > 1
                                     else None, with_margin=discrete,
                                     independent_sampler=samplers.RandomSampler(seed=space.seed))
    return samplers.RandomSampler(seed=space.seed)


def _constraints_func(trial: Any) -> list[float]:
    return list(trial.user_attrs.get("constraints", ()))


def _distribution(optuna: Any, factor: SpaceFactor) -> Any:
    d = optuna.distributions
    if factor.kind == "int":
        return d.IntDistribution(int(factor.min), int(factor.max), log=factor.log)
    if factor.kind == "float":
        return d.FloatDistribution(float(factor.min), float(factor.max), log=factor.log)
    if factor.ordered:  # numbers: an index, so that the optimiser sees their order
        return d.IntDistribution(0, len(factor.values) - 1)
    return d.CategoricalDistribution(list(factor.values))


def _value(space: SearchSpace, factor: SpaceFactor, raw: Any) -> Any:
    if factor.kind == "values":
        return factor.values[int(raw)] if factor.ordered else raw
    value = space.round_value(factor, raw)
    return min(max(value, factor.min), factor.max)


def _limit(constraint: Any) -> tuple[float | None, float | None]:
    return (getattr(constraint, "min", None), getattr(constraint, "max", None))


def _violation(limit: tuple[float | None, float | None], mean: float) -> float:
    """How far ``mean`` is beyond its bound(s), relative to the bound (``<= 0``: within)."""
    if not math.isfinite(mean):
        return UNDEFINED_VIOLATION
    low, high = limit
    out = -math.inf
    if high is not None:
        out = max(out, (mean - high) / (abs(high) or 1.0))
    if low is not None:
        out = max(out, (low - mean) / (abs(low) or 1.0))
    return out if math.isfinite(out) else 0.0


# ---------------------------------------------------------------------------------------------
# The replay


_CACHE: "OrderedDict[tuple, Replay]" = OrderedDict()
_CACHE_SIZE = 16
_LOCK = threading.Lock()


def replay(spec: ExperimentSpec, observations: pl.DataFrame | None = None) -> Replay:
    """The search's configurations and rounds as ``observations`` (the long format of
    ``analysis.frames``: experiment, config_key, replication, metric, value; any experiments;
    current results only) stand."""
    space = spec.search_space
    if space is None:
        raise ValueError(f"experiment {spec.name!r} has no search")
    stages = first_stage(spec, observations)
    key = (spec.spec_hash(), tuple(sorted((k, s.objective, s.constraints)
                                          for k, s in stages.items())))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    found = _replay(spec, space, stages)
    with _LOCK:
        _CACHE[key] = found
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return found


@dataclass
class _State:
    """The replay after its completed rounds: where the next replay may continue from."""

    number: int                          # the next round
    proposer: Any
    evaluated: dict[str, Configuration]
    round_of: dict[str, int]
    proposals: list[Proposal]
    fruitless: int
    used: dict[str, FirstStage]          # the values told so far

    def copy(self) -> "_State":
        import copy

        return _State(self.number, copy.deepcopy(self.proposer), dict(self.evaluated),
                      dict(self.round_of), list(self.proposals), self.fruitless,
                      dict(self.used))


# The latest completed state of each search (by spec hash): a sweep's next round, or a sensor's,
# asks only the new round's proposals instead of replaying every round again.
_STATES: "OrderedDict[str, _State]" = OrderedDict()


def _resume(spec_hash: str, stages: Mapping[str, FirstStage]) -> "_State | None":
    """The remembered state, if the values it was told are among ``stages`` unchanged."""
    with _LOCK:
        state = _STATES.get(spec_hash)
    if state is None or any(stages.get(k) != v for k, v in state.used.items()):
        return None
    return state.copy()


def _remember(spec_hash: str, state: _State) -> None:
    with _LOCK:
        _STATES[spec_hash] = state
        _STATES.move_to_end(spec_hash)
        while len(_STATES) > _CACHE_SIZE:
            _STATES.popitem(last=False)


def _replay(spec: ExperimentSpec, space: SearchSpace, stages: Mapping[str, FirstStage]
            ) -> Replay:
    digest = spec.spec_hash()
    state = _resume(digest, stages) or _State(
        0, _Grid(space) if space.method == "grid" else _Optuna(spec, space), {}, {}, [], 0, {})
    proposer, evaluated, round_of, proposals = (state.proposer, state.evaluated, state.round_of,
                                                state.proposals)
    pending, stopped, fruitless = None, None, state.fruitless
    size = space.size
    for number in itertools.count(state.number):
        asks, why = _round_size(space, len(evaluated))
        if size is not None and len(evaluated) >= size:
            asks, why = 0, SPACE_EXHAUSTED
        if asks <= 0:
            stopped = why
            break
        if not stages.keys() - evaluated.keys():
            # Nothing told yet that this round could use: it will wait for its results, and the
            # next replay (once they are in) continues from here instead of from round 0.
            _remember(digest, _State(number, proposer, evaluated, round_of, proposals,
                                     fruitless, {k: stages[k] for k in evaluated}).copy())
        new, held, exhausted = _ask_round(spec, proposer, number, asks, evaluated, round_of,
                                          proposals, stages)
        if not new and exhausted:
            stopped = SPACE_EXHAUSTED
            break
        if any(k not in stages for k in new):
            pending = number
            break
        for trial, key in held:
            proposer.tell(trial, stages.get(key) if key is not None else None)
        fruitless = 0 if new else fruitless + 1
        if fruitless >= MAX_FRUITLESS_ROUNDS:
            stopped = NOTHING_NEW
            break
        if exhausted:
            stopped = SPACE_EXHAUSTED
            break
    rounds = (pending + 1) if pending is not None else number
    return Replay(tuple(evaluated.values()), round_of, tuple(proposals), rounds, pending, stopped,
                  {k: stages[k] for k in evaluated if k in stages}, space.method)


def _ask_round(spec: ExperimentSpec, proposer: Any, number: int, wanted: int,
               evaluated: dict[str, Configuration], round_of: dict[str, int],
               proposals: list[Proposal], stages: Mapping[str, FirstStage]
               ) -> tuple[list[str], list[tuple[int, str | None]], bool]:
    """Ask for round ``number``'s ``wanted`` new configurations: a proposal that repeats an
    earlier round's configuration is told its values at once, one the model rejects is told
    failed, and both are asked again (at most ASKS_PER_PROPOSAL times ``wanted`` asks in all).
    Returns the new configurations' keys, the trials told at the round's end (the new ones, and
    repeats of them), and whether the optimiser ran out of proposals."""
    new: list[str] = []
    held: list[tuple[int, str | None]] = []
    asked_in_all, exhausted = 0, False
    while len(new) < wanted and asked_in_all < ASKS_PER_PROPOSAL * wanted:
        asked = proposer.ask(wanted - len(new))
        if not asked:
            exhausted = True
            break
        asked_in_all += len(asked)
        for trial, varying in asked:
            proposal = _propose(spec, number, trial, varying, evaluated)
            proposals.append(proposal)
            key = proposal.config_key
            if proposal.status == "new":
                evaluated[key] = configuration(spec, varying)
                round_of[key] = number
                new.append(key)
                held.append((trial, key))
            elif proposal.status == "invalid":
                proposer.tell(trial, None)
            elif round_of[key] < number:  # an earlier round's: its values are known
                proposer.tell(trial, stages.get(key))
            else:  # this round's: told with it
                held.append((trial, key))
    return new, held, exhausted


def _round_size(space: SearchSpace, evaluated: int) -> tuple[int, str | None]:
    """How many proposals the next round asks for, and which budget limits it."""
    asks, why = space.batch, None
    if space.budget_configurations is not None:
        left = space.budget_configurations - evaluated
        if left < asks:
            asks, why = left, BUDGET_CONFIGURATIONS
    if space.budget_simulations is not None:
        left = (space.budget_simulations - evaluated * space.replications) // space.replications
        if left < asks:
            asks, why = left, BUDGET_SIMULATIONS
    return asks, why


def _propose(spec: ExperimentSpec, number: int, trial: int, varying: dict[str, Any],
             evaluated: Mapping[str, Configuration]) -> Proposal:
    try:
        found = configuration(spec, varying)
    except ParameterError as exc:
        return Proposal(number, trial, None, varying, "invalid", str(exc))
    status = "duplicate" if found.key in evaluated else "new"
    return Proposal(number, trial, found.key, varying, status)


def configurations(spec: ExperimentSpec, observations: pl.DataFrame | None = None
                   ) -> list[Configuration]:
    """The configurations the search has proposed so far (first proposal first)."""
    return [Configuration(c.key, dict(c.params), dict(c.varying))
            for c in progress(spec, observations).replay.configurations]


# ---------------------------------------------------------------------------------------------
# Where a search stands: its rounds, then the clean-up (or a threshold search's points)


@dataclass(frozen=True)
class Progress:
    """What ``plan.replication_targets`` and the summary need of a search."""

    replay: Replay
    targets: dict[str, int]           # config_key -> total replications wanted now
    cleanup: Any = None               # analysis.cleanup.CleanUp, once the rounds are over
    threshold: Any = None             # analysis.threshold.ThresholdPlan (method threshold)
    # config_key -> the total each round asked for, ascending (the last: ``targets``): a
    # configuration's replications are cut into partitions round by round, so a later replay
    # keeps the keys of the earlier rounds (plan.target_blocks)
    totals: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Nothing more to simulate: the rounds are over and the clean-up (or the breaking
        point) is decided."""
        if self.threshold is not None:
            return bool(self.threshold.done)
        return self.replay.finished and (self.cleanup is None or self.cleanup.done)


_PROGRESS: "OrderedDict[tuple, Progress]" = OrderedDict()


def progress(spec: ExperimentSpec, observations: pl.DataFrame | None = None) -> Progress:
    """Where the search stands as ``observations`` (long format, current results only) stand:
    a pure function of the file and the results, cached in the process by both."""
    space = spec.search_space
    if space is None:
        raise ValueError(f"experiment {spec.name!r} has no search")
    arrays = replication_values(spec, observations)
    key = ("progress", spec.spec_hash(), _fingerprint(arrays))
    with _LOCK:
        if key in _PROGRESS:
            _PROGRESS.move_to_end(key)
            return _PROGRESS[key]
    if space.threshold is not None:
        found = _threshold_progress(spec, space, arrays)
    else:
        found = _optimiser_progress(spec, space, observations, arrays)
    with _LOCK:
        _PROGRESS[key] = found
        while len(_PROGRESS) > _CACHE_SIZE:
            _PROGRESS.popitem(last=False)
    return found


def _metrics(spec: ExperimentSpec) -> list[str]:
    """The metrics a search decides on: its objective (or threshold metric) and constraints."""
    space = spec.search_space
    first = space.threshold.metric if space.threshold is not None else spec.objective.metric
    return list(dict.fromkeys([first, *(c.metric for c in file_constraints(spec))]))


def replication_values(spec: ExperimentSpec, observations: pl.DataFrame | None
            ) -> dict[str, dict[str, np.ndarray]]:
    """config_key -> metric -> values over replications 0 .. n-1, where n is where the first
    replication without a value of the decision's metric is (a round that has not all landed
    yet is not looked past: ``clean_up`` and ``threshold_round`` want values in order, none
    skipped). NaN stays: an undefined value was run."""
    if observations is None or observations.is_empty():
        return {}
    metrics = _metrics(spec)
    rows = observations
    if "experiment" in rows.columns:
        rows = rows.filter(pl.col("experiment") == spec.name)
    rows = rows.filter(pl.col("metric").is_in(metrics)).select(
        "config_key", "metric", "replication", "value")
    out: dict[str, dict[str, np.ndarray]] = {}
    for (key, metric), group in rows.group_by("config_key", "metric"):
        reps = group["replication"].to_numpy().astype(np.int64)
        values = np.full(int(reps.max()) + 1, np.nan)
        present = np.zeros(values.size, dtype=bool)
        values[reps] = group["value"].fill_null(np.nan).to_numpy()
        present[reps] = True
        out.setdefault(key, {})[metric] = (values, present)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for key, by_metric in out.items():
        values, present = by_metric.get(metrics[0], (np.empty(0), np.zeros(0, dtype=bool)))
        n = int(np.argmin(present)) if not present.all() else present.size
        arrays[key] = {m: _head(by_metric.get(m), n) for m in metrics}
    return arrays


def _head(found: tuple[np.ndarray, np.ndarray] | None, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    if found is not None:
        values = found[0][:n]
        out[:values.size] = values
    return out


def _fingerprint(arrays: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        for metric in sorted(arrays[key]):
            digest.update(metric.encode())
            digest.update(np.ascontiguousarray(arrays[key][metric]).tobytes())
    return digest.hexdigest()


def _optimiser_progress(spec: ExperimentSpec, space: SearchSpace,
                        observations: pl.DataFrame | None,
                        arrays: Mapping[str, Mapping[str, np.ndarray]]) -> Progress:
    found = replay(spec, observations)
    targets = {c.key: space.replications for c in found.configurations}
    totals = {key: [total] for key, total in targets.items()}
    if not found.finished or not found.configurations:
        return Progress(found, targets, totals=_frozen(totals))
    from simlab_pipelines.analysis.cleanup import clean_up
    from simlab_pipelines.analysis.constraints import limits

    objective = spec.objective
    bounds = limits(file_constraints(spec), spec.confidence)
    values = {c.key: arrays[c.key] for c in found.configurations}
    have = dict(targets)
    # The clean-up's stages replayed one by one, each on the values its round had, to know
    # the total every round asked for (the last call is the clean-up as the results stand).
    while True:
        cleanup = clean_up(
            {key: {m: v[:have[key]] for m, v in by_metric.items()}
             for key, by_metric in values.items()},
            objective=objective.metric, minimize=objective.direction == "minimize",
            indifference_zone=objective.indifference_zone, limits=bounds,
            confidence=spec.confidence, first_stage=space.replications,
            max_replications=space.max_replications,
            common_random_numbers=spec.common_random_numbers)
        grown = {key: int(total) for key, total in cleanup.targets.items()
                 if int(total) > have[key]}
        for key, total in grown.items():
            totals[key].append(total)
        if cleanup.done or not grown or any(
                _available(values[key]) < total for key, total in grown.items()):
            break
        have.update(grown)
    for key, total in cleanup.targets.items():
        targets[key] = max(targets[key], int(total))
    return Progress(found, targets, cleanup=cleanup, totals=_frozen(totals))


def _available(by_metric: Mapping[str, np.ndarray]) -> int:
    return min((v.size for v in by_metric.values()), default=0)


def _frozen(totals: Mapping[Any, list[int]]) -> dict[Any, tuple[int, ...]]:
    return {key: tuple(sorted(set(values))) for key, values in totals.items()}


def _threshold_progress(spec: ExperimentSpec, space: SearchSpace,
                        arrays: Mapping[str, Mapping[str, np.ndarray]]) -> Progress:
    """The breaking-point search's rounds, replayed: each round's plan (``threshold_round``) from
    the values the previous rounds asked for, until a round's values are not all in."""
    from simlab_pipelines.analysis.threshold import threshold_round

    threshold = space.threshold
    metric = threshold.metric
    values: dict[Any, np.ndarray] = {}
    configs: dict[Any, Configuration] = {}
    requested: dict[Any, int] = {}
    round_of: dict[str, int] = {}
    history: dict[Any, list[int]] = {}
    number, pending = 0, None
    while True:
        step = threshold_round(
            {x: values[x][:n] for x, n in requested.items() if x in values},
            low=threshold.min, high=threshold.max, limit=threshold.limit,
            tolerance=threshold.tolerance, replications=space.replications,
            max_replications=space.max_replications, confidence=spec.confidence,
            integer=threshold.integer, increasing=threshold.increasing,
            simulations=space.budget_simulations)
        if step.done:
            break
        for x in step.wanted:
            x = int(x) if threshold.integer else float(x)
            if x not in configs:
                configs[x] = configuration(spec, {threshold.factor: x})
                values[x] = arrays.get(configs[x].key, {}).get(metric, np.empty(0))
            round_of.setdefault(configs[x].key, number)
        asked = {(int(x) if threshold.integer else float(x)): int(n)
                 for x, n in step.wanted.items()}
        for x, n in asked.items():
            if n > requested.get(x, 0):
                history.setdefault(x, []).append(n)
        requested.update({x: max(n, requested.get(x, 0)) for x, n in asked.items()})
        if any(values[x].size < n for x, n in asked.items()):
            pending = number
            break
        number += 1
    order = sorted(requested, key=lambda x: (round_of[configs[x].key], x))
    found = Replay(tuple(configs[x] for x in order), round_of, (), number + 1
                   if pending is not None else number, pending,
                   None if pending is not None else "breaking point found", {}, space.method)
    targets = {configs[x].key: requested[x] for x in order}
    totals = _frozen({configs[x].key: history[x] for x in order})
    return Progress(found, targets, threshold=step, totals=totals)
