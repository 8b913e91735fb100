"""Named random streams over numpy's SeedSequence: reproducible and comparable across configurations.

Every random source in a model draws from its own stream, keyed by
``SeedSequence(entropy=seed, spawn_key=(replication, [config_hash,] stream_id(name)))``. With common
random numbers (the default) the configuration is not part of the key, so replication r of every
configuration sees the same arrivals and the same service demands.

Public API for models (``engine.Streams``): ``streams["arrivals"]`` is a ``Stream`` with
``exponential(mean)``, ``uniform()``, ``gamma(shape, mean)`` and ``.rng``, its
``numpy.random.Generator`` (PCG64 on the stream's SeedSequence), for every other distribution.
A stream used only through ``.rng`` is exactly ``Generator(PCG64(SeedSequence(...)))`` of its key.
The helpers draw from ``.rng`` in blocks: the first use of any helper buffers 512 standard
exponentials (``uniform`` then buffers 512 uniforms at a time), so mixing helpers and direct
``.rng`` calls on one stream is reproducible but harder to rebuild: give each random source its own
stream.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

# Draws are made in blocks: far cheaper than one numpy call per variate, and the values are the same
# as drawing one at a time (numpy generates vector draws element by element from the same state).
_BLOCK = 512


def stable_hash(text: str) -> int:
    """A 32-bit hash of ``text`` that is the same in every process (unlike Python's salted hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "big")


def stream_id(name: str) -> int:
    """The stable integer identifying a named stream inside a spawn key."""
    return stable_hash(f"stream:{name}")


def config_hash(model: str, params: Mapping[str, Any]) -> int:
    """A stable hash of a configuration, used in the key only when CRN is turned off."""
    canonical = json.dumps({"model": model, "params": dict(params)}, sort_keys=True, default=str)
    return stable_hash(f"config:{canonical}")


class Stream:
    """One named stream: a PCG64 generator that hands out variates from buffered blocks."""

    __slots__ = ("_exp", "_exp_i", "_rng", "_uni", "_uni_i", "name")

    def __init__(self, name: str, seed_sequence: np.random.SeedSequence) -> None:
        self.name = name
        self._rng = np.random.Generator(np.random.PCG64(seed_sequence))
        # The exponential block is drawn on the first use of any helper (not at creation), so a
        # stream used only through .rng starts at its seed sequence; for helper-only streams the
        # values are the same as drawing the block at creation (engine results are unchanged).
        self._exp = None
        self._exp_i = _BLOCK
        self._uni = None
        self._uni_i = 0

    def _first_block(self) -> None:
        if self._exp is None:
            self._exp = self._rng.standard_exponential(_BLOCK)
            self._exp_i = 0

    @property
    def rng(self) -> np.random.Generator:
        """The stream's numpy Generator, for distributions beyond the helpers below."""
        return self._rng

    def exponential(self, mean: float) -> float:
        """An exponential variate with the given mean."""
        i = self._exp_i
        if i == _BLOCK:
            self._exp = self._rng.standard_exponential(_BLOCK)
            i = 0
        self._exp_i = i + 1
        return mean * float(self._exp[i])

    def uniform(self) -> float:
        """A uniform variate on [0, 1)."""
        if self._exp is None:
            self._first_block()
        if self._uni is None or self._uni_i == _BLOCK:
            self._uni = self._rng.random(_BLOCK)
            self._uni_i = 0
        value = float(self._uni[self._uni_i])
        self._uni_i += 1
        return value

    def gamma(self, shape: float, mean: float) -> float:
        """A gamma variate with the given shape and mean (less variable than exponential for shape > 1)."""
        if self._exp is None:
            self._first_block()
        return float(self._rng.gamma(shape, mean / shape))


class Streams:
    """The named streams of one simulation; a stream is created on first use.

    ``seed`` is the root entropy and ``spawn_key`` the simulation's key (``(replication,)``, or
    ``(replication, config_hash)`` without common random numbers); stream ``name`` is
    ``SeedSequence(entropy=seed, spawn_key=(*spawn_key, stream_id(name)))``.
    """

    def __init__(self, seed: int, spawn_key: tuple[int, ...]) -> None:
        self.seed = seed
        self.spawn_key = spawn_key
        self._streams: dict[str, Stream] = {}

    def __getitem__(self, name: str) -> Stream:
        stream = self._streams.get(name)
        if stream is None:
            ss = np.random.SeedSequence(entropy=self.seed, spawn_key=(*self.spawn_key, stream_id(name)))
            stream = self._streams[name] = Stream(name, ss)
        return stream
