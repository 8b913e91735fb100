"""simlab engine: runs ONE discrete-event simulation for given parameters, replication and seed.

Headless and orchestration-free: nothing here imports Dagster or OpenTelemetry exporters.

The model API is public: ``Model``, ``ModelRun``, ``Parameter`` and ``Streams`` are what a user's
own model (a plug-in, see ``engine.registry``) is written with.
"""

from engine.models import MODELS
from engine.models.base import Model, ModelRun
from engine.parameters import Parameter, ParameterError
from engine.randomness import Stream, Streams
from engine.registry import ModelError, get_model, list_models
from engine.simulate import Seed, Simulation, SimulationResult, prepare, simulate, spawn_key
from engine.version import ENGINE_VERSION

__all__ = [
    "ENGINE_VERSION",
    "MODELS",
    "Model",
    "ModelError",
    "ModelRun",
    "Parameter",
    "ParameterError",
    "Seed",
    "Simulation",
    "SimulationResult",
    "Stream",
    "Streams",
    "get_model",
    "list_models",
    "prepare",
    "simulate",
    "spawn_key",
]
