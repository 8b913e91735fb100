"""``engine.simulate``: run one simulation and return its typed record."""

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.limits import SimulationTimeout, run_with_time_limit
from engine.models.base import Model
from engine.parameters import Parameter, ParameterError
from engine.randomness import Streams, config_hash
from engine.registry import get_model
from engine.version import ENGINE_VERSION

_SEED = Parameter("seed", int, "root entropy of the random streams", minimum=0, maximum=2**128 - 1)
_REPLICATION = Parameter("replication", int, "replication number", minimum=0, maximum=2**31 - 1)
_HORIZON = Parameter("horizon", float, "simulated time observed after the warm-up", minimum=0.0,
                     exclusive_minimum=True, maximum=1e12)
_WARMUP = Parameter("warmup", float, "simulated time discarded before observing", minimum=0.0,
                    maximum=1e12)
_TIMEOUT = Parameter("timeout_seconds", float, "wall-time limit of the simulation", minimum=0.0,
                     exclusive_minimum=True, optional=True)
_SERIES = Parameter("series_interval", float, "width of the batches of the recorded time series",
                    minimum=0.0, exclusive_minimum=True, maximum=1e12, optional=True)


@dataclass(frozen=True)
class Seed:
    """Where a simulation's randomness comes from: SeedSequence entropy and spawn-key prefix."""

    entropy: int
    spawn_key: tuple[int, ...]


@dataclass(frozen=True)
class SimulationResult:
    """The record of one simulation (the ``simlab-engine run --json`` object)."""

    model: str
    params: dict[str, Any]
    replication: int
    seed: Seed
    horizon: float
    warmup: float
    metrics: dict[str, float]
    events: int
    wall_seconds: float
    engine_version: str
    series: dict[str, list[float]] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``series`` appears only when it was recorded."""
        record = asdict(self)
        record["seed"]["spawn_key"] = list(self.seed.spawn_key)
        if self.series is None:
            del record["series"]
        return record


def spawn_key(model: str, params: Mapping[str, Any], replication: int,
              common_random_numbers: bool = True) -> tuple[int, ...]:
    """The spawn-key prefix of a simulation's streams (each stream appends its own id)."""
    if common_random_numbers:
        return (replication,)
    return (replication, config_hash(model, params))


@dataclass(frozen=True)
class Simulation:
    """A model with its parameters and settings checked once (``prepare``): ``run`` any
    replication of it. A block of replications of one configuration validates once."""

    spec: Model
    params: dict[str, Any]
    seed: int
    horizon: float
    warmup: float
    common_random_numbers: bool
    series_interval: float | None
    timeout_seconds: float | None

    def run(self, replication: int) -> SimulationResult:
        """Simulate replication ``replication`` and return its record."""
        spec, values = self.spec, self.params
        replication = _REPLICATION.validate(replication)
        key = spawn_key(spec.name, values, replication, self.common_random_numbers)
        started = time.perf_counter()
        # Past timeout_seconds of wall time the run is stopped: SimulationTimeout (engine.limits).
        outcome = run_with_time_limit(
            lambda: spec.run(values, Streams(self.seed, key), self.warmup, self.horizon,
                             self.series_interval),
            self.timeout_seconds, what=f"simulation of model {spec.name!r}")
        wall = time.perf_counter() - started
        metrics = {name: float(outcome.metrics[name]) for name in spec.metrics}
        bad = [name for name, value in metrics.items() if math.isinf(value)]
        if bad:
            raise ArithmeticError(f"model '{spec.name}' produced infinite metrics: "
                                  f"{', '.join(bad)}")
        return SimulationResult(
            model=spec.name,
            params=values,
            replication=replication,
            seed=Seed(self.seed, key),
            horizon=self.horizon,
            warmup=self.warmup,
            metrics=metrics,
            events=int(outcome.events),
            wall_seconds=wall,
            engine_version=ENGINE_VERSION,
            series=outcome.series,
        )


def prepare(model: "str | Model", params: Mapping[str, Any], *, seed: int,
            horizon: float | None = None, warmup: float | None = None,
            common_random_numbers: bool = True, series_interval: float | None = None,
            timeout_seconds: float | None = None) -> Simulation:
    """``model`` (a name, a ``package.module:ATTR`` reference or an ``engine.Model``) with
    ``params`` and the settings checked: ``.run(replication)`` simulates one replication.

    Raises KeyError for an unknown model and ParameterError for an invalid value.
    """
    spec = model if isinstance(model, Model) else get_model(model)
    return Simulation(
        spec=spec,
        params=spec.validate(params),
        seed=_SEED.validate(seed),
        horizon=_HORIZON.validate(spec.default_horizon if horizon is None else horizon),
        warmup=_WARMUP.validate(spec.default_warmup if warmup is None else warmup),
        common_random_numbers=common_random_numbers,
        series_interval=_SERIES.validate(series_interval),
        timeout_seconds=_TIMEOUT.validate(timeout_seconds),
    )


def simulate(model: "str | Model", params: Mapping[str, Any], *, replication: int, seed: int,
             horizon: float | None = None, warmup: float | None = None,
             common_random_numbers: bool = True,
             series_interval: float | None = None,
             timeout_seconds: float | None = None) -> SimulationResult:
    """Run one simulation of ``model`` (a name, a ``package.module:ATTR`` reference or an
    ``engine.Model``) and return its record.

    Raises KeyError for an unknown model and ParameterError for an invalid value; any other
    exception comes from the simulation itself.
    """
    return prepare(model, params, seed=seed, horizon=horizon, warmup=warmup,
                   common_random_numbers=common_random_numbers,
                   series_interval=series_interval,
                   timeout_seconds=timeout_seconds).run(replication)


__all__ = ["ParameterError", "Seed", "Simulation", "SimulationResult", "SimulationTimeout",
           "prepare", "simulate", "spawn_key"]
