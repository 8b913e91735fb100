"""simlab engine: runs ONE discrete-event simulation for given parameters, replication and seed.

Headless and orchestration-free: nothing here imports Dagster or OpenTelemetry exporters.
"""

from engine.models import MODELS, get_model
from engine.parameters import ParameterError
from engine.simulate import Seed, SimulationResult, simulate, spawn_key
from engine.version import ENGINE_VERSION

__all__ = [
    "ENGINE_VERSION",
    "MODELS",
    "ParameterError",
    "Seed",
    "SimulationResult",
    "get_model",
    "simulate",
    "spawn_key",
]
