"""An experiment's ``model:``: which model it is, where it comes from, and what its results'
staleness depends on.

``model`` is one of

- a built-in's name (``mmck``) or an installed plug-in's (entry point group ``simlab.models``);
- an import reference ``package.module:ATTRIBUTE``, imported with the experiment file's own
  directory first on ``sys.path``;
- a mapping declaring a command-line simulator (``engine.command``), run in the experiment file's
  directory.

A model that cannot be used (unknown, broken plug-in, bad declaration) is an error at ``model``
(or ``model.<field>``) that rejects this experiment only.

Staleness: a built-in's results depend on the engine's version (``engine-<ENGINE_VERSION>``); a
plug-in's on its own ``version`` only (``model-<name>-<version>``), so changing a built-in never
marks a plug-in's results stale, and bumping a plug-in's version re-runs its experiments only.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engine
from engine import command, registry
from engine.models.base import Model
from simlab_pipelines.experiments.errors import Loc, SpecErrors

# What a command declaration may change without making its results stale.
_NOT_INPUTS = ("timeout", "description")
# The columns of the long-format tables beside a metric's name (observations: experiment,
# config_key, replication, metric, value; summary.KEYS and summary.OBSERVATION_SCHEMA): a metric
# or response so named collides with them when the replications are unpivoted (a polars
# DuplicateError in every summary), so it is refused at load.
RESERVED_NAMES = ("experiment", "config_key", "replication", "metric", "value")


@dataclass(frozen=True)
class ExperimentModel:
    """The resolved model of an experiment."""

    model: Model
    ref: registry.ModelRef  # how a pool worker finds it
    origin: registry.Origin  # built-in, package, path or command

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def builtin(self) -> bool:
        return self.origin == "built-in"

    @property
    def code_version(self) -> str:
        """The Dagster code version of the results: the engine's for a built-in, the model's own
        version for a plug-in."""
        if self.builtin:
            return f"engine-{engine.ENGINE_VERSION}"
        return f"model-{self.model.name}-{self.model.version}"

    def version_inputs(self) -> dict[str, str]:
        """The versions in a result's inputs hash (the key ``engine`` for a built-in, as before
        plug-ins existed, so built-in results keep their hashes)."""
        if self.builtin:
            return {"engine": engine.ENGINE_VERSION}
        return {"model": self.model.name, "model_version": self.model.version}


def identity(value: str | Mapping[str, Any]) -> Any:
    """What of ``model:`` a simulation depends on (for the simulation hash): the name or
    reference, or a command's declaration without its timeout and description, its metrics by
    name only (a unit, a direction or a description changes no result)."""
    if isinstance(value, Mapping):
        out = {k: v for k, v in value.items() if k not in _NOT_INPUTS}
        if isinstance(out.get("metrics"), Mapping):
            out["metrics"] = list(out["metrics"])
        return out
    return value


def resolve_model(value: Any, directory: Path | None) -> ExperimentModel:
    """The experiment's model; SpecErrors at ``model`` (or ``model.<field>``) saying why not.

    ``directory`` is the experiment file's directory (None for a mapping given directly: the
    current directory).
    """
    folder = (directory or Path.cwd()).resolve()
    if isinstance(value, Mapping):
        try:
            declaration = command.parse_declaration(value, frozenset(engine.MODELS))
        except command.DeclarationError as exc:
            raise SpecErrors([(("model", *loc), reason) for loc, reason in exc.errors]) from None
        ref = registry.ModelRef.for_command(value, folder)
        _check_metric_names(declaration.metrics, ("model", "metrics"),
                            by_name=isinstance(value.get("metrics"), Mapping))
        return ExperimentModel(command.command_model(declaration, folder), ref, "command")
    if not isinstance(value, str):
        raise SpecErrors([(("model",), _WHAT)])
    if value in engine.MODELS:
        return ExperimentModel(engine.MODELS[value], registry.ModelRef(value), "built-in")
    reference = registry.is_reference(value)
    try:
        model = registry.get_model(value, folder if reference else None)
    except registry.ModelError as exc:
        raise SpecErrors([(("model",), exc.reason)]) from None
    _check_metric_names(tuple(model.metrics), ("model",), f"model {value!r}")
    if reference:
        return ExperimentModel(model, registry.ModelRef(value, str(folder)), "path")
    return ExperimentModel(model, registry.ModelRef(value), "package")


def _check_metric_names(metrics: tuple[str, ...], loc: Loc, declared_by: str | None = None,
                        by_name: bool = False) -> None:
    """SpecErrors for metrics named like a column of the long-format tables: at
    ``model.metrics[i]`` for a command's list (``model.metrics.<name>`` for its mapping,
    ``by_name``), at ``model`` for a plug-in (``declared_by``)."""
    errors: list[tuple[Loc, str]] = []
    for i, metric in enumerate(metrics):
        if metric in RESERVED_NAMES:
            where = (*loc, metric if by_name else i) if declared_by is None else loc
            by = f"{declared_by} declares a metric" if declared_by else "metric"
            errors.append((where, f"{by} named {metric!r}, a column of the results' tables "
                                  f"({', '.join(RESERVED_NAMES)}); rename the metric"))
    if errors:
        raise SpecErrors(errors)


_WHAT = ("model must be a model's name, 'package.module:ATTRIBUTE', or a mapping declaring a "
         "command-line simulator (name, command, version, parameters, metrics, timeout)")


def check_model_field(value: Any) -> Any:
    """The ``model`` field's type check (the rest is ``resolve_model``'s)."""
    if isinstance(value, str) or (isinstance(value, Mapping)
                                  and all(isinstance(k, str) for k in value)):
        return dict(value) if isinstance(value, Mapping) else value
    raise ValueError(_WHAT)


def check_run_length(horizon: float | None, model: Model) -> list[tuple[Loc, str]]:
    """A model without a default horizon (a command that declares none) needs the experiment's."""
    if horizon is None and math.isnan(model.default_horizon):  # NaN: none declared
        return [(("horizon",), f"required: model {model.name!r} declares no default_horizon")]
    return []


__all__ = ["RESERVED_NAMES", "ExperimentModel", "check_model_field", "check_run_length", "identity",
           "resolve_model"]
