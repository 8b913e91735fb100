"""A linear response with known coefficients: the check that regression metamodels recover them.

    y = b0 + b1 x1 + b2 x2 + b3 x3 + b12 x1 x2  (+ Gaussian noise of sd ``noise_sd``)

Inputs and coefficients are parameters, so a design varies the x's and the truth is in the file.
The noise comes from the stream ``noise`` (one draw per simulation). No time passes: ``horizon``
and ``warmup`` are accepted and ignored.
"""

from collections.abc import Mapping
from typing import Any

from engine.models.base import Model, ModelRun
from engine.parameters import Parameter
from engine.randomness import Streams

_BOUND = 1e6

PARAMETERS = (
    Parameter("x1", float, "first input", default=0.0, minimum=-_BOUND, maximum=_BOUND),
    Parameter("x2", float, "second input", default=0.0, minimum=-_BOUND, maximum=_BOUND),
    Parameter("x3", float, "third input", default=0.0, minimum=-_BOUND, maximum=_BOUND),
    Parameter("b0", float, "intercept", default=0.0, minimum=-_BOUND, maximum=_BOUND),
    Parameter("b1", float, "coefficient of x1", default=1.0, minimum=-_BOUND, maximum=_BOUND),
    Parameter("b2", float, "coefficient of x2", default=0.0, minimum=-_BOUND, maximum=_BOUND),
    Parameter("b3", float, "coefficient of x3", default=0.0, minimum=-_BOUND, maximum=_BOUND),
    Parameter("b12", float, "coefficient of the interaction x1·x2", default=0.0, minimum=-_BOUND,
              maximum=_BOUND),
    Parameter("noise_sd", float, "standard deviation of additive Gaussian noise (stream 'noise')",
              default=0.0, minimum=0.0, maximum=_BOUND),
)

METRICS = {"y": "b0 + b1 x1 + b2 x2 + b3 x3 + b12 x1 x2, plus noise when noise_sd > 0"}


def run(params: Mapping[str, Any], streams: Streams, warmup: float, horizon: float,
        series_interval: float | None = None) -> ModelRun:
    """Evaluate the response once (plus noise from its own stream)."""
    p = params
    y = (p["b0"] + p["b1"] * p["x1"] + p["b2"] * p["x2"] + p["b3"] * p["x3"]
         + p["b12"] * p["x1"] * p["x2"])
    if p["noise_sd"] > 0:
        y += float(streams["noise"].rng.normal(0.0, p["noise_sd"]))
    return ModelRun({"y": y}, 1)


MODEL = Model(
    name="linear",
    description="Linear response with an x1·x2 interaction (analytic), optional Gaussian noise.",
    parameters=PARAMETERS,
    metrics=METRICS,
    run=run,
    default_horizon=1.0,
    default_warmup=0.0,
)
