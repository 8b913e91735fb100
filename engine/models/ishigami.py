"""The Ishigami–Homma function: an analytic test case whose Sobol indices are known in closed form.

    y = sin(x1) + a sin²(x2) + b x3⁴ sin(x1)  (+ optional noise),  x1, x2, x3 in [-π, π]

For independent uniform inputs (Ishigami & Homma 1990; Saltelli et al. 2008, "Global Sensitivity
Analysis: The Primer", §4.9) the variance and the indices are closed forms of ``a`` and ``b``
(``sobol_indices``); with a = 7, b = 0.1: S1 = (0.314, 0.442, 0), ST = (0.558, 0.442, 0.244),
S13 = 0.244 the only interaction. It is to sensitivity analysis what M/M/c is to queueing: the
check that a sampler and an estimator are right.

``noise_sd`` adds Gaussian noise from the stream ``noise`` (one draw per simulation), so that
replications differ and the analysis has to separate simulation noise from the design's effects.
No time passes: ``horizon`` and ``warmup`` are accepted and ignored.
"""

import math
from collections.abc import Mapping
from typing import Any

from engine.models.base import Model, ModelRun
from engine.parameters import Parameter
from engine.randomness import Streams

_PI = math.pi

PARAMETERS = (
    Parameter("x1", float, "first input, uniform on [-π, π] in the classic setting", default=0.0,
              minimum=-_PI, maximum=_PI),
    Parameter("x2", float, "second input, uniform on [-π, π]", default=0.0, minimum=-_PI,
              maximum=_PI),
    Parameter("x3", float, "third input, uniform on [-π, π] (acts only with x1)", default=0.0,
              minimum=-_PI, maximum=_PI),
    Parameter("a", float, "weight of sin²(x2)", default=7.0, minimum=-1e6, maximum=1e6),
    Parameter("b", float, "weight of x3⁴ sin(x1)", default=0.1, minimum=-1e6, maximum=1e6),
    Parameter("noise_sd", float, "standard deviation of additive Gaussian noise (stream 'noise')",
              default=0.0, minimum=0.0, maximum=1e6),
)

METRICS = {"y": "sin(x1) + a sin²(x2) + b x3⁴ sin(x1), plus noise when noise_sd > 0"}


def ishigami(x1: float, x2: float, x3: float, a: float = 7.0, b: float = 0.1) -> float:
    """The noise-free function value."""
    return math.sin(x1) + a * math.sin(x2) ** 2 + b * x3**4 * math.sin(x1)


def sobol_indices(a: float = 7.0, b: float = 0.1) -> dict[str, dict[str, float]]:
    """Closed-form first-order (S1), total (ST) and second-order (S2) indices for uniform inputs
    on [-π, π]: ``{"S1": {"x1": ..}, "ST": {..}, "S2": {"x1:x3": .., ..}}``."""
    v1 = 0.5 * (1 + b * _PI**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * _PI**8 * (1 / 18 - 1 / 50)
    variance = v1 + v2 + v13
    return {
        "S1": {"x1": v1 / variance, "x2": v2 / variance, "x3": 0.0},
        "ST": {"x1": (v1 + v13) / variance, "x2": v2 / variance, "x3": v13 / variance},
        "S2": {"x1:x2": 0.0, "x1:x3": v13 / variance, "x2:x3": 0.0},
    }


def run(params: Mapping[str, Any], streams: Streams, warmup: float, horizon: float,
        series_interval: float | None = None) -> ModelRun:
    """Evaluate the function once (plus noise from its own stream)."""
    y = ishigami(params["x1"], params["x2"], params["x3"], params["a"], params["b"])
    if params["noise_sd"] > 0:
        y += float(streams["noise"].rng.normal(0.0, params["noise_sd"]))
    return ModelRun({"y": y}, 1)


MODEL = Model(
    name="ishigami",
    description="Ishigami–Homma function (analytic, known Sobol indices), optional Gaussian noise.",
    parameters=PARAMETERS,
    metrics=METRICS,
    run=run,
    default_horizon=1.0,
    default_warmup=0.0,
)
