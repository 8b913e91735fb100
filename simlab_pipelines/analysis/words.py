"""How an experiment's configurations and metrics are said: ``8 tables, 2 waiters``, ``tables 8 →
9``, "today's setting (8 tables, 2 waiters)", a metric by its description (``Words``).

The answer (``answer.py``), its caveats (``caveats.py``) and the search's sentences use them, so a
configuration reads the same everywhere.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TODAY = "today's setting"  # the one name of the baseline in every sentence


def humanise(name: str) -> str:
    """A metric's name as words: ``mean_time_in_restaurant`` -> ``mean time in restaurant``."""
    return name.replace("_", " ")


def describe_configuration(config: Mapping[str, Any]) -> str:
    """``tables 8, waiters 2``: a configuration by its varying values."""
    return ", ".join(f"{name} {value}" for name, value in config.items())


def _value_words(value: Any) -> str:
    """A parameter's value as said: ``not set`` for an absent one (None)."""
    return "not set" if value is None else str(value)


def _count_word(name: str, value: Any) -> str:
    """``8 tables``, ``1 doctor`` for a whole number of a plural one-word parameter; else
    ``pool size 8``."""
    if (isinstance(value, int) and not isinstance(value, bool)
            and re.fullmatch(r"[a-z]+[^s]s", name)):
        return f"{value} {name[:-1] if value == 1 else name}"
    return f"{humanise(name)} {_value_words(value)}"


def setting_words(config: Mapping[str, Any]) -> str:
    """``8 tables, 2 waiters``, ``pool size 8, max retries 3``: a configuration in words."""
    return ", ".join(_count_word(name, value) for name, value in config.items())


def describe_change(config: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """The parameters that differ from the baseline, e.g. ``waiters 2 → 3``."""
    changed = [f"{humanise(name)} {_value_words(baseline.get(name))} → {_value_words(value)}"
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

    def name(self, metric: str) -> str:
        """The metric's description, else its name in words."""
        return self.descriptions.get(metric) or humanise(metric)

    def unit(self, metric: str) -> str | None:
        return self.units.get(metric)

    def setting(self, key: str) -> str:
        """``8 tables, 3 waiters`` (the key itself when its parameters are unknown)."""
        config = self.configurations.get(key)
        return setting_words(config) if config else key

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
            change = describe_change(config, base)
            if change:
                return f"{change} ({self.setting(key)})"
        return self.setting(key)


def capital(sentence: str) -> str:
    """``pool size 4 has ...`` -> ``Pool size 4 has ...`` (a sentence may start with a setting)."""
    return sentence[:1].upper() + sentence[1:]


def joined(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
