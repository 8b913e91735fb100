"""Configuration keys: derived from a configuration's values, never from its position."""

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_KEY_LENGTH = 64
KEY_HASH_DIGITS = 10  # hex digits of blake2b in a shortened key: 40 bits

_KEY_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_NOT_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def canonical_json(value: Any) -> str:
    """Stable JSON (sorted keys, no spaces): what hashes and duplicate checks compare."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        # repr is the shortest string that round-trips; '+' (1e+20) is not a key character.
        return repr(value).replace("+", "")
    if isinstance(value, str):
        return value
    return canonical_json(value)


def config_key(varying: Mapping[str, Any]) -> str:
    """The key of a configuration, from the values that distinguish it (never its position).

    Parameter names sorted, ``name-value`` joined by ``_``: ``tables-8_waiters-3``; floats in their
    shortest round-tripping form (``arrival_rate-0.25``), None as ``none``; no varying values:
    ``base``. Keys use only ``[A-Za-z0-9_.-]`` (valid Dagster partition keys). A key longer than
    64 characters becomes a readable prefix, ``_`` and 10 hex digits of blake2b over the canonical
    JSON of ``varying``.

    Uniqueness: for the validated values of a spec (ints, floats, None) the readable form is
    injective: names contain no ``-``, values contain no ``_``, and int/float/None print
    differently and round-trip. Two distinct configurations can therefore only share a key through
    a 40-bit hash collision between shortened keys, which ExperimentSpec rejects at load.
    """
    if not varying:
        return "base"
    readable = "_".join(f"{name}-{_format_value(varying[name])}" for name in sorted(varying))
    if len(readable) <= MAX_KEY_LENGTH and _KEY_CHARS.fullmatch(readable):
        return readable
    digest = hashlib.blake2b(canonical_json(dict(varying)).encode("utf-8"),
                             digest_size=KEY_HASH_DIGITS // 2).hexdigest()
    prefix = _NOT_KEY_CHARS.sub("", readable)[: MAX_KEY_LENGTH - KEY_HASH_DIGITS - 1]
    prefix = prefix.rstrip("_.-")
    return f"{prefix}_{digest}" if prefix else digest


@dataclass(frozen=True)
class Configuration:
    """One resolved configuration of an experiment."""

    key: str
    params: dict[str, Any]  # every model parameter, defaults filled (as model.validate returns)
    varying: dict[str, Any]  # what distinguishes it: factor values or the explicit entry
