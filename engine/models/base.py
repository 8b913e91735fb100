"""What a model declares: its parameters, metrics, default run length, version and a run function.

This is the public model API (``engine.Model``, ``engine.ModelRun``): built-in models and users'
plug-ins (see ``engine.registry``) are the same kind of object.
"""

import re
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
# What a metric measures over a run: a *level* (a mean, a rate, a share, a percentile: the same
# for a longer run of a system in steady state) or a *total* (a count or a sum: twice as much in
# a run twice as long, however stable the system). The horizon-doubling steady-state check tests
# levels only.
KINDS = ("level", "total")
_RATE_UNIT = re.compile(r"/|\bper\b|%|^fraction$|^share$|^percent", re.IGNORECASE)
_LEVEL_WORDS = r"mean|average|avg|rate|fraction|share|probability|p\d+|percentile|utili[sz]ation"
_LEVEL_NAME = re.compile(rf"^({_LEVEL_WORDS})(_|$)|_({_LEVEL_WORDS})$", re.IGNORECASE)


def metric_kind(name: str, unit: str | None = None, declared: str | None = None) -> str | None:
    """A metric's kind (``KINDS``): the declared one, else a level when its unit is a rate or a
    share (``$/day``, ``per hour``, ``fraction``, ``%``) or its name begins or ends with a word
    saying it is a mean, a share, a percentile or a rate (``mean_wait``, ``fraction_lost``,
    ``wait_p95``, ``arrival_rate``, ``blocking_probability``, ``utilisation``); None (unknown:
    not tested) otherwise, e.g. ``customers`` or ``max_queue``."""
    if declared is not None:
        return declared
    if (unit and _RATE_UNIT.search(unit.strip())) or _LEVEL_NAME.search(name):
        return "level"
    return None

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
    # Optional, per metric: "level" or "total" (``KINDS``; absent: ``metric_kind`` infers it).
    kinds: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attribute in ("units", "better", "kinds"):
            unknown = sorted(set(getattr(self, attribute)) - set(self.metrics))
            if unknown:
                raise ValueError(f"model {self.name!r}: {attribute} names unknown metric(s) "
                                 f"{', '.join(unknown)}")
        wrong = {k: v for k, v in self.better.items() if v not in BETTER}
        if wrong:
            raise ValueError(f"model {self.name!r}: better must be 'lower' or 'higher', got "
                             + ", ".join(f"{k}={v!r}" for k, v in sorted(wrong.items())))
        wrong = {k: v for k, v in self.kinds.items() if v not in KINDS}
        if wrong:
            raise ValueError(f"model {self.name!r}: kind must be 'level' or 'total', got "
                             + ", ".join(f"{k}={v!r}" for k, v in sorted(wrong.items())))

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters with defaults filled in, or ParameterError naming the parameter at fault."""
        values = validate_params(self.parameters, params)
        if self.check is not None:
            self.check(values)
        return values

    def kind(self, metric: str) -> str | None:
        """``metric``'s kind, declared or inferred (``metric_kind``)."""
        return metric_kind(metric, self.units.get(metric), self.kinds.get(metric))

    def describe(self) -> dict[str, Any]:
        """The model as listed by ``simlab-engine models --json``."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [p.describe() for p in self.parameters],
            "metrics": [{"name": k, "help": v, "unit": self.units.get(k),
                         "better": self.better.get(k), "kind": self.kind(k)}
                        for k, v in self.metrics.items()],
            "series": [{"name": k, "help": v} for k, v in self.series.items()],
            "default_horizon": self.default_horizon,
            "default_warmup": self.default_warmup,
            "version": self.version,
        }


__all__ = ["KINDS", "Model", "ModelRun", "Parameter", "ParameterError", "metric_kind"]
