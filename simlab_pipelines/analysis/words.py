"""How an experiment's configurations and metrics are said: ``8 tables, 2 waiters``, ``tables 8 →
9``, "today's setting (8 tables, 2 waiters)", a metric by its description (``Words``); a
parameter's value with its unit and the digits it needs (``timeout 1.15 s``, ``patience 15 min``:
``units.format_setting``).

The answer (``answer.py``), its caveats (``caveats.py``) and the search's sentences use them, so a
configuration reads the same everywhere.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from simlab_pipelines.analysis.units import SETTING_DIGITS, format_setting, setting_digits

TODAY = "today's setting"  # the one name of the baseline in every sentence


def humanise(name: str) -> str:
    """A metric's name as words: ``mean_time_in_restaurant`` -> ``mean time in restaurant``."""
    return name.replace("_", " ")


def describe_configuration(config: Mapping[str, Any]) -> str:
    """``tables 8, waiters 2``: a configuration by its varying values."""
    return ", ".join(f"{name} {value}" for name, value in config.items())


def _value_words(value: Any, unit: str | None = None, digits: int = SETTING_DIGITS) -> str:
    """A parameter's value as said: with its unit and ``digits`` significant digits; ``not set``
    for an absent one (None)."""
    return format_setting(value, unit, digits)


def _count_word(name: str, value: Any, unit: str | None = None,
                digits: int = SETTING_DIGITS) -> str:
    """``8 tables``, ``1 doctor`` for a whole number of a plural one-word parameter without a
    unit; else ``pool size 8``, ``timeout 1.15 s``."""
    if (unit is None and isinstance(value, int) and not isinstance(value, bool)
            and re.fullmatch(r"[a-z]+[^s]s", name)):
        return f"{value} {name[:-1] if value == 1 else name}"
    return f"{humanise(name)} {_value_words(value, unit, digits)}"


def setting_words(config: Mapping[str, Any], units: Mapping[str, str] | None = None,
                  digits: Mapping[str, int] | None = None) -> str:
    """``8 tables, 2 waiters``, ``pool size 8, timeout 1.15 s``: a configuration in words
    (``units``: parameter -> unit; ``digits``: parameter -> significant digits)."""
    units, digits = units or {}, digits or {}
    return ", ".join(_count_word(name, value, units.get(name), digits.get(name, SETTING_DIGITS))
                     for name, value in config.items())


def describe_change(config: Mapping[str, Any], baseline: Mapping[str, Any],
                    units: Mapping[str, str] | None = None,
                    digits: Mapping[str, int] | None = None) -> str:
    """The parameters that differ from the baseline, e.g. ``waiters 2 → 3``, ``timeout 1 s →
    2.5 s``."""
    units, digits = units or {}, digits or {}

    def said(name: str, value: Any) -> str:
        return _value_words(value, units.get(name), digits.get(name, SETTING_DIGITS))

    changed = [f"{humanise(name)} {said(name, baseline.get(name))} → {said(name, value)}"
               for name, value in config.items() if baseline.get(name) != value]
    changed += [f"without {humanise(name)}" for name in baseline if name not in config]
    return ", ".join(changed)


@dataclass(frozen=True)
class Words:
    """How an experiment's configurations, metrics and units are said."""

    configurations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline: str | None = None
    units: Mapping[str, str] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    parameter_units: Mapping[str, str] = field(default_factory=dict)  # parameter -> unit

    @cached_property
    def digits(self) -> dict[str, int]:
        """Significant digits per parameter: enough that no two configurations' values of it
        read the same (3 at least)."""
        values: dict[str, list[Any]] = {}
        for config in self.configurations.values():
            for name, value in config.items():
                values.setdefault(name, []).append(value)
        return {name: setting_digits(found) for name, found in values.items()}

    def name(self, metric: str) -> str:
        """The metric's description, else its name in words."""
        return self.descriptions.get(metric) or humanise(metric)

    def unit(self, metric: str) -> str | None:
        return self.units.get(metric)

    def setting(self, key: str) -> str:
        """``8 tables, 3 waiters`` (the key itself when its parameters are unknown)."""
        config = self.configurations.get(key)
        return setting_words(config, self.parameter_units, self.digits) if config else key

    def today(self) -> str:
        """``today's setting (8 tables, 2 waiters)``."""
        if self.baseline is None:
            return TODAY
        return f"{TODAY} ({self.setting(self.baseline)})"

    def label(self, key: str) -> str:
        """``waiters 2 → 3 (8 tables, 3 waiters)`` against today's setting; ``today's setting
        (...)`` for the baseline; the setting alone without a baseline."""
        if key == self.baseline:
            return self.today()
        base = self.configurations.get(self.baseline) if self.baseline else None
        config = self.configurations.get(key)
        if base and config:
            change = describe_change(config, base, self.parameter_units, self.digits)
            if change:
                return f"{change} ({self.setting(key)})"
        return self.setting(key)


def capital(sentence: str) -> str:
    """``pool size 4 has ...`` -> ``Pool size 4 has ...`` (a sentence may start with a setting)."""
    return sentence[:1].upper() + sentence[1:]


def joined(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
