"""What a model declares: its parameters, metrics, default run length, version and a run function.

This is the public model API (``engine.Model``, ``engine.ModelRun``): built-in models and users'
plug-ins (see ``engine.registry``) are the same kind of object.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.parameters import Parameter, ParameterError, validate_params
from engine.randomness import Streams


class ModelRun(NamedTuple):
    """What a model's run function returns."""

    metrics: dict[str, float]
    events: int
    series: dict[str, list[float]] | None = None  # batch means over time, when asked for


BETTER = ("lower", "higher")

# run(params, streams, warmup, horizon, series_interval) -> ModelRun
RunFunction = Callable[[Mapping[str, Any], Streams, float, float, float | None], ModelRun]


@dataclass(frozen=True)
class Model:
    """A simulation model: typed, bounded parameters and a function that simulates it once.

    ``run(params, streams, warmup, horizon, series_interval) -> ModelRun``: ``params`` are the
    validated values (defaults filled in), ``streams["name"]`` a named random stream (see
    ``engine.Streams``), statistics cover ``(warmup, warmup + horizon]``. ``version`` is the
    model's own version: results of a plug-in go stale when it changes (bump it whenever the
    model's behaviour or a metric's meaning changes).
    """

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    metrics: Mapping[str, str]  # metric name -> help
    run: RunFunction
    default_horizon: float
    default_warmup: float
    series: Mapping[str, str] = field(default_factory=dict)  # time series recorded when asked
    check: Callable[[Mapping[str, Any]], None] | None = None  # constraints across parameters
    version: str = "1"
    # Optional, per metric: its unit ("min", "parties"; "fraction" is shown as a percentage) and
    # which way is better ("lower" or "higher"; absent: neither, e.g. a utilisation).
    units: Mapping[str, str] = field(default_factory=dict)
    better: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attribute in ("units", "better"):
            unknown = sorted(set(getattr(self, attribute)) - set(self.metrics))
            if unknown:
                raise ValueError(f"model {self.name!r}: {attribute} names unknown metric(s) "
                                 f"{', '.join(unknown)}")
        wrong = {k: v for k, v in self.better.items() if v not in BETTER}
        if wrong:
            raise ValueError(f"model {self.name!r}: better must be 'lower' or 'higher', got "
                             + ", ".join(f"{k}={v!r}" for k, v in sorted(wrong.items())))

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters with defaults filled in, or ParameterError naming the parameter at fault."""
        values = validate_params(self.parameters, params)
        if self.check is not None:
            self.check(values)
        return values

    def describe(self) -> dict[str, Any]:
        """The model as listed by ``simlab-engine models --json``."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [p.describe() for p in self.parameters],
            "metrics": [{"name": k, "help": v, "unit": self.units.get(k),
                         "better": self.better.get(k)} for k, v in self.metrics.items()],
            "series": [{"name": k, "help": v} for k, v in self.series.items()],
            "default_horizon": self.default_horizon,
            "default_warmup": self.default_warmup,
            "version": self.version,
        }


__all__ = ["Model", "ModelRun", "Parameter", "ParameterError"]
