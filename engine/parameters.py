"""Typed, bounded model parameters, checked before anything is simulated."""

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class ParameterError(ValueError):
    """A parameter value is missing, of the wrong type, or outside its bounds.

    ``name`` is the parameter (or option) at fault, so callers can point at it.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Parameter:
    """One model parameter: its type, default, bounds, a help text and its unit.

    ``unit`` is how a person reads its values (``min``, ``s``, ``parties/min``, ``$``; see
    ``simlab_pipelines/analysis/units.py``): answers print ``patience 15 min``. It changes no
    result."""

    name: str
    type: type  # int or float
    help: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    optional: bool = False  # None is a valid value (e.g. infinite capacity)
    unit: str | None = None  # e.g. "min", "requests/s"; None: a count or a pure number

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to the parameter's type, or raise ParameterError."""
        if value is None:
            if self.optional:
                return None
            raise ParameterError(self.name, f"parameter '{self.name}' is required")
        # numbers.Real admits numpy scalars (np.int64, np.float64), which callers often pass.
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise ParameterError(
                self.name, f"parameter '{self.name}' must be {self.type.__name__}, got {value!r}"
            )
        if self.type is int:
            if not isinstance(value, numbers.Integral) and not float(value).is_integer():
                raise ParameterError(
                    self.name, f"parameter '{self.name}' must be an integer, got {value!r}"
                )
            value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:  # an int beyond float range, e.g. 10**400
                raise ParameterError(
                    self.name, f"parameter '{self.name}' = {value!r} must be <= {self.maximum}"
                    if self.maximum is not None else f"parameter '{self.name}' is too large"
                ) from None
            if not math.isfinite(value):
                raise ParameterError(
                    self.name, f"parameter '{self.name}' must be finite, got {value!r}"
                )
        if self.minimum is not None:
            if self.exclusive_minimum and value <= self.minimum:
                raise ParameterError(
                    self.name, f"parameter '{self.name}' = {value!r} must be > {self.minimum}"
                )
            if not self.exclusive_minimum and value < self.minimum:
                raise ParameterError(
                    self.name, f"parameter '{self.name}' = {value!r} must be >= {self.minimum}"
                )
        if self.maximum is not None and value > self.maximum:
            raise ParameterError(
                self.name, f"parameter '{self.name}' = {value!r} must be <= {self.maximum}"
            )
        return value

    def describe(self) -> dict[str, Any]:
        """The parameter as listed by ``simlab-engine models --json``."""
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "exclusive_minimum": self.exclusive_minimum,
            "optional": self.optional,
            "help": self.help,
            "unit": self.unit,
        }


def validate_params(
    parameters: tuple[Parameter, ...], values: Mapping[str, Any]
) -> dict[str, Any]:
    """Check ``values`` against ``parameters``; unknown names are errors, missing ones take defaults."""
    known = {p.name: p for p in parameters}
    for name in values:
        if name not in known:
            raise ParameterError(
                name, f"unknown parameter '{name}' (known: {', '.join(sorted(known))})"
            )
    return {p.name: p.validate(values.get(p.name, p.default)) for p in parameters}
