"""The built-in models, by name. Finding a model by any name (plug-ins too) is
``engine.registry.get_model``: the registry knows the models, the models not the registry."""

from engine.models.base import Model
from engine.models.ishigami import MODEL as ISHIGAMI
from engine.models.linear import MODEL as LINEAR
from engine.models.mmck import MODEL as MMCK
from engine.models.restaurant import MODEL as RESTAURANT

MODELS: dict[str, Model] = {m.name: m for m in (MMCK, RESTAURANT, ISHIGAMI, LINEAR)}
