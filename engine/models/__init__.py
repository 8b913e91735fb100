"""The model registry: every model the engine can run, by name."""

from engine.models.base import Model
from engine.models.mmck import MODEL as MMCK
from engine.models.restaurant import MODEL as RESTAURANT

MODELS: dict[str, Model] = {m.name: m for m in (MMCK, RESTAURANT)}


def get_model(name: str) -> Model:
    """The model called ``name``, or KeyError listing the known models."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}' (known: {', '.join(sorted(MODELS))})") from None
