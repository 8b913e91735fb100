"""The built-in models, by name (plug-ins: ``engine.registry``)."""

from engine.models.base import Model
from engine.models.ishigami import MODEL as ISHIGAMI
from engine.models.linear import MODEL as LINEAR
from engine.models.mmck import MODEL as MMCK
from engine.models.restaurant import MODEL as RESTAURANT

MODELS: dict[str, Model] = {m.name: m for m in (MMCK, RESTAURANT, ISHIGAMI, LINEAR)}


def get_model(name: str) -> Model:
    """The model called ``name``: a built-in, an installed plug-in or a ``package.module:ATTR``
    reference (see ``engine.registry``); KeyError (``ModelError``) saying why not otherwise."""
    if name in MODELS:
        return MODELS[name]
    from engine.registry import get_model as find  # the registry imports this module

    return find(name)
