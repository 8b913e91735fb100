"""Command-line simulators as models: any executable, one process per simulation.

An experiment declares one as its ``model`` (see ``parse_declaration``)::

    model:
      name: mm1_c
      command: ["./sims/mm1", "--rate", "{arrival_rate}", "--seed", "{seed}", "--until", "{horizon}"]
      version: "1"
      parameters:
        arrival_rate: {type: float, minimum: 0, exclusive_minimum: true}
      metrics: [mean_wait, utilisation]
      timeout: 60

``command`` is an argv list, never run through a shell. Placeholders ``{<parameter>}``,
``{replication}``, ``{horizon}``, ``{warmup}``, ``{seed_entropy}`` and ``{seed}`` (one integer in
[0, 2^63) derived from the simulation's seed sequence, for simulators that take a single seed) are
replaced in every argument (``{{`` and ``}}`` are literal braces); the same values are in the
environment as ``SIMLAB_<NAME>``, with ``TRACEPARENT`` when there is a trace to join. The working
directory is the experiment file's directory; the process gets its own process group (session). A
simulator is judged by its own exit: when it exits, or at its timeout, its whole group is killed
(a child still holding stdout neither delays its result nor outlives it). Nor does anything it
started outlive the process that ran it, however that process ends (``_guard_token``). Its output is read as it
comes, keeping only what the contract needs: the last non-empty line of stdout and the last 2 KB of
stderr.

Success is exit status 0 with, as the last non-empty line of stdout, one JSON object: flat
``{"metric": number, ...}`` or the engine's record (``{"metrics": {...}, "events": n, ...}``) with
every declared metric. Anything else raises ``CommandFailed`` with the exit code and the last 2 KB
of stderr.
"""

import atexit
import contextlib
import functools
import json
import math
import multiprocessing.util
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.models.base import KINDS, Model, ModelRun
from engine.parameters import Parameter, ParameterError
from engine.randomness import Streams

NAME = re.compile(r"[a-z][a-z0-9_]*")
METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What every command can use besides its parameters (parameters may not take these names).
PLACEHOLDERS = ("replication", "horizon", "warmup", "seed_entropy", "seed")
KEYS = ("name", "command", "version", "parameters", "metrics", "timeout", "description",
        "default_horizon", "default_warmup")
PARAMETER_KEYS = ("type", "default", "minimum", "maximum", "exclusive_minimum", "help", "unit")
METRIC_KEYS = ("unit", "better", "kind", "description")  # a metric declared as a mapping
BETTER = ("lower", "higher")
STDERR_TAIL_BYTES = 2048
# A simulator's output is read as it comes and only what the contract needs is kept: the last
# non-empty line of stdout (at most RESULT_LINE_LIMIT bytes) and the last 2 KB of stderr.
RESULT_LINE_LIMIT = 1 << 20
READ_CHUNK = 1 << 16
# After the simulator exits (its group killed), output still in the pipes is read this long at
# most: a descendant that left the group could hold them open for good.
EXIT_DRAIN_SECONDS = 1.0
EXIT_POLL_SECONDS = 0.05  # where no pidfd tells of the exit
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

Loc = tuple[str | int, ...]


class DeclarationError(ValueError):
    """A command model's declaration that cannot be used: ``errors`` is ``[(field path, reason)]``
    with paths relative to the declaration (``("parameters", "rate", "type")``)."""

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, loc)) or 'model'}: {reason}"
                                   for loc, reason in errors))


class CommandFailed(RuntimeError):
    """A simulator run that did not produce its metrics: why, its exit code (None when it was
    killed on timeout or never started), the command line and the last 2 KB of its stderr.

    Its text reads what went wrong on the first line (the same for every partition failing for
    that reason, so failures group by it), then the command line, then the stderr tail."""

    def __init__(self, message: str, exit_code: int | None = None, stderr_tail: str = "",
                 command: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.command = command

    def __str__(self) -> str:
        text = self.message
        if self.command:
            text += f"\ncommand: {self.command}"
        if self.stderr_tail:
            text += f"\nstderr (last {STDERR_TAIL_BYTES} bytes):\n{self.stderr_tail}"
        return text

    def __reduce__(self):  # picklable across processes despite the custom __init__
        return (type(self), (self.message, self.exit_code, self.stderr_tail, self.command))


@dataclass(frozen=True)
class Declaration:
    """A validated command-line simulator declaration."""

    name: str
    command: tuple[str, ...]
    version: str
    parameters: tuple[Parameter, ...]
    metrics: tuple[str, ...]
    timeout: float | None
    description: str
    default_horizon: float | None
    default_warmup: float
    # with ``metrics`` as a mapping: metric -> unit, which way is better, what it is in words
    units: Mapping[str, str] = field(default_factory=dict)
    better: Mapping[str, str] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The declaration


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parameter(name: Any, spec: Any, errors: list[tuple[Loc, str]]) -> Parameter | None:
    loc: Loc = ("parameters", str(name))
    if not isinstance(name, str) or not NAME.fullmatch(name):
        errors.append((loc, f"parameter name {name!r} must match [a-z][a-z0-9_]*"))
        return None
    if name in PLACEHOLDERS:
        errors.append((loc, f"{name!r} is a placeholder every command gets "
                            f"({', '.join(PLACEHOLDERS)}); name the parameter otherwise"))
        return None
    if not isinstance(spec, Mapping):
        errors.append((loc, "expected a mapping like {type: float, minimum: 0, default: 1}"))
        return None
    before = len(errors)
    for key in spec:
        if key not in PARAMETER_KEYS:
            errors.append(((*loc, str(key)), f"unknown key {key!r} (allowed: "
                                             f"{', '.join(PARAMETER_KEYS)})"))
    kind = {"int": int, "float": float}.get(spec.get("type"))  # type: ignore[arg-type]
    if kind is None:
        errors.append(((*loc, "type"), f"type must be 'int' or 'float', got {spec.get('type')!r}"))
    for key in ("minimum", "maximum"):
        if key in spec and not _number(spec[key]):
            errors.append(((*loc, key), f"{key} must be a finite number, got {spec[key]!r}"))
    if not isinstance(spec.get("exclusive_minimum", False), bool):
        errors.append(((*loc, "exclusive_minimum"), "exclusive_minimum must be true or false"))
    if not isinstance(spec.get("help", ""), str):
        errors.append(((*loc, "help"), "help must be a string"))
    if "unit" in spec and (not isinstance(spec["unit"], str) or not spec["unit"].strip()):
        errors.append(((*loc, "unit"), f"unit must be a non-empty string (e.g. min, s, "
                                       f"requests/s), got {spec['unit']!r}"))
    if len(errors) > before or kind is None:
        return None
    parameter = Parameter(name, kind, spec.get("help", ""), default=spec.get("default"),
                          minimum=spec.get("minimum"), maximum=spec.get("maximum"),
                          exclusive_minimum=spec.get("exclusive_minimum", False),
                          unit=spec["unit"].strip() if spec.get("unit") else None)
    if parameter.default is not None:
        try:
            parameter = Parameter(**{**parameter.__dict__,
                                     "default": parameter.validate(parameter.default)})
        except ParameterError as exc:
            errors.append(((*loc, "default"), str(exc)))
            return None
    return parameter


_METRICS_WHAT = ("metrics must be a non-empty list of names ([A-Za-z_][A-Za-z0-9_]*), or a "
                 "mapping of name to {unit, better, kind, description}")


def _metrics(raw: Any, errors: list[tuple[Loc, str]]
             ) -> tuple[tuple[str, ...] | None, dict[str, dict[str, str]]]:
    """The declared metric names, and per metric its unit, better and description (a mapping
    ``{mean_wait: {unit: min, better: lower, description: ...}}``; a list declares names only)."""
    if isinstance(raw, list):
        if not raw or not all(isinstance(m, str) and METRIC_NAME.fullmatch(m) for m in raw):
            errors.append((("metrics",), _METRICS_WHAT))
            return None, {}
        if len(set(raw)) != len(raw):
            errors.append((("metrics",), "a metric is listed twice"))
        return tuple(raw), {}
    if not isinstance(raw, Mapping) or not raw:
        errors.append((("metrics",), _METRICS_WHAT))
        return None, {}
    names, details = [], {}
    for name, spec in raw.items():
        loc: Loc = ("metrics", str(name))
        if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
            errors.append((loc, f"metric name {name!r} must match [A-Za-z_][A-Za-z0-9_]*"))
            continue
        names.append(name)
        spec = {} if spec is None else spec  # `mean_wait:` alone: a name, nothing more
        if not isinstance(spec, Mapping):
            errors.append((loc, "expected a mapping like {unit: min, better: lower, "
                                "description: mean wait for a server}, or nothing"))
            continue
        for key, value in spec.items():
            if key not in METRIC_KEYS:
                errors.append(((*loc, str(key)), f"unknown key {key!r} (allowed: "
                                                 f"{', '.join(METRIC_KEYS)})"))
            elif key == "better" and value not in BETTER:
                errors.append(((*loc, key), f"better must be 'lower' or 'higher', got {value!r}"))
            elif key == "kind" and value not in KINDS:
                errors.append(((*loc, key), f"kind must be 'level' (a mean, rate or share: the "
                                            f"same in a longer run) or 'total' (a count or sum "
                                            f"over the run), got {value!r}"))
            elif not isinstance(value, str) or not value.strip():
                errors.append(((*loc, str(key)), f"{key} must be a non-empty string, got "
                                                 f"{value!r}"))
        details[name] = {k: v.strip() for k, v in spec.items()
                         if k in METRIC_KEYS and isinstance(v, str) and v.strip()}
    return tuple(names), details


def _placeholders(argument: str) -> Iterator[str | None]:
    """The placeholder names in ``argument``; None for a lone brace."""
    for match in _TOKEN.finditer(argument):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        yield match.group(1) if token.startswith("{") and token.endswith("}") and len(token) > 1 \
            else None


def parse_declaration(data: Any, builtin_names: frozenset[str] | set[str] = frozenset()
                      ) -> Declaration:
    """Validate a command model's declaration (the experiment's ``model`` mapping).

    Raises DeclarationError with every problem found, each with its field path.
    """
    if not isinstance(data, Mapping):
        raise DeclarationError([((), "expected a mapping with name, command, version, "
                                     "parameters, metrics (and timeout)")])
    errors: list[tuple[Loc, str]] = []
    for key in data:
        if key not in KEYS:
            errors.append(((str(key),), f"unknown key {key!r} (allowed: {', '.join(KEYS)})"))
    for key in ("name", "command", "metrics"):
        if key not in data:
            errors.append(((key,), "required field is missing"))
    name = data.get("name")
    if "name" in data:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            errors.append((("name",), f"name {name!r} must match [a-z][a-z0-9_]*"))
        elif name in builtin_names:
            errors.append((("name",), f"{name!r} is a built-in model's name: a command model may "
                                      "not take it"))
    command = data.get("command")
    if "command" in data:
        if (not isinstance(command, list) or not command
                or not all(isinstance(a, str) for a in command)):
            errors.append((("command",), "command must be a non-empty list of strings (an argv, "
                                         "never run through a shell)"))
            command = None
        elif not command[0]:
            errors.append((("command", 0), "the program is empty"))
    version = data.get("version", "1")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.strip():
        errors.append((("version",), f"version must be a non-empty string, got {version!r}"))
    raw_parameters = data.get("parameters") or {}
    parameters: list[Parameter] = []
    if not isinstance(raw_parameters, Mapping):
        errors.append((("parameters",), "parameters must be a mapping of name to declaration"))
    else:
        for pname, pspec in raw_parameters.items():
            parameter = _parameter(pname, pspec, errors)
            if parameter is not None:
                parameters.append(parameter)
    metrics, details = _metrics(data["metrics"], errors) if "metrics" in data else (None, {})
    timeout = data.get("timeout")
    if timeout is not None and (not _number(timeout) or timeout <= 0):
        errors.append((("timeout",), f"timeout must be a number of seconds > 0, got {timeout!r}"))
    for key, minimum in (("default_horizon", "> 0"), ("default_warmup", ">= 0")):
        value = data.get(key)
        if value is not None and (not _number(value) or value < 0
                                  or (key == "default_horizon" and value == 0)):
            errors.append(((key,), f"{key} must be a finite number {minimum}, got {value!r}"))
    if not isinstance(data.get("description", ""), str):
        errors.append((("description",), "description must be a string"))
    if isinstance(command, list):
        known = set(PLACEHOLDERS) | {p.name for p in parameters}
        if isinstance(raw_parameters, Mapping):
            known |= {str(p) for p in raw_parameters}  # reported above if bad, not twice
        for i, argument in enumerate(command):
            if not isinstance(argument, str):
                continue
            for field in _placeholders(argument):
                if field is None:
                    errors.append((("command", i), f"{argument!r}: a lone brace (write {{{{ or "
                                                   "}} for a literal one)"))
                elif field not in known:
                    errors.append((("command", i), f"unknown placeholder {{{field}}} (known: "
                                                   f"{', '.join(sorted(known))})"))
    if errors:
        raise DeclarationError(errors)
    return Declaration(
        name=name, command=tuple(command), version=version, parameters=tuple(parameters),
        metrics=tuple(metrics), timeout=float(timeout) if timeout is not None else None,
        description=data.get("description", "") or f"command-line simulator {command[0]}",
        default_horizon=(float(data["default_horizon"]) if data.get("default_horizon") is not None
                         else None),
        default_warmup=float(data.get("default_warmup") or 0.0),
        units={m: d["unit"] for m, d in details.items() if "unit" in d},
        better={m: d["better"] for m, d in details.items() if "better" in d},
        kinds={m: d["kind"] for m, d in details.items() if "kind" in d},
        descriptions={m: d["description"] for m, d in details.items() if "description" in d},
    )


def command_model(data: Mapping[str, Any] | Declaration, directory: str | Path | None = None
                  ) -> Model:
    """The ``engine.Model`` running the declared simulator in ``directory`` (default: the current
    directory). Raises DeclarationError for a bad declaration."""
    from engine.models import MODELS

    declaration = (data if isinstance(data, Declaration)
                   else parse_declaration(data, frozenset(MODELS)))
    cwd = str(Path(directory).resolve()) if directory is not None else None
    return Model(
        name=declaration.name,
        description=declaration.description,
        parameters=declaration.parameters,
        # an undescribed metric's help is only a bracket, which the answers' words leave out
        # (experiments.responses.descriptions): they name it by its name, not by the command
        metrics={m: declaration.descriptions.get(m) or f"(reported by {declaration.command[0]})"
                 for m in declaration.metrics},
        units=dict(declaration.units),
        better=dict(declaration.better),
        kinds=dict(declaration.kinds),
        run=functools.partial(run_command, declaration, cwd),
        # No default run length: an experiment gives its horizon (NaN is rejected when run).
        default_horizon=(declaration.default_horizon if declaration.default_horizon is not None
                         else math.nan),
        default_warmup=declaration.default_warmup,
        version=declaration.version,
    )


# ---------------------------------------------------------------------------------------------
# Running it


@dataclass(frozen=True)
class Execution:
    """What the caller knows about the current simulation: the W3C traceparent of its span and
    the default timeout (seconds) for commands that declare none."""

    traceparent: str | None = None
    timeout: float | None = None


_EXECUTION: ContextVar[Execution | None] = ContextVar("simlab_command_execution", default=None)


@contextlib.contextmanager
def execution(*, traceparent: str | None = None, timeout: float | None = None) -> Iterator[None]:
    """Run commands inside with this traceparent (``TRACEPARENT``) and default timeout."""
    token = _EXECUTION.set(Execution(traceparent, timeout))
    try:
        yield
    finally:
        _EXECUTION.reset(token)


def derived_seed(entropy: int, spawn_key: tuple[int, ...]) -> int:
    """``{seed}``: one integer in [0, 2^63) from the simulation's seed sequence."""
    state = np.random.SeedSequence(entropy=entropy, spawn_key=spawn_key).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # the shortest string that reads back as the same float
    return str(value)


def placeholder_values(params: Mapping[str, Any], streams: Streams, warmup: float,
                       horizon: float) -> dict[str, str]:
    """Every placeholder's text for one simulation."""
    values = {name: _text(value) for name, value in params.items()}
    values.update(replication=str(streams.spawn_key[0]), horizon=_text(float(horizon)),
                  warmup=_text(float(warmup)), seed_entropy=str(streams.seed),
                  seed=str(derived_seed(streams.seed, tuple(streams.spawn_key))))
    return values


def _substitute(argument: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return _TOKEN.sub(replace, argument)


def _kill_group(process: subprocess.Popen) -> None:
    # The simulator leads its own session: its process group id is its pid (kept by the kernel
    # while the leader is unreaped or any member lives, so this never reaches another group).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Nothing a simulator started outlives the process that started it
#
# Simulators run in their own sessions (so that their whole group can be killed), out of reach of
# a signal to the sweep's process group; a pool worker killed by a sweep's Ctrl-C or SIGTERM, or
# by kill -9 of the whole group, cannot end them itself. So the first simulator a process starts
# also starts its guardian: a small Python process in a session of its own whose stdin is a pipe
# only that process holds. When the process is gone, however it ended, the pipe reaches end of
# file, and the guardian kills every process marked with the process's token (the environment
# variable GUARD_VARIABLE, which simulators and their children inherit) and its process group.

GUARD_VARIABLE = "SIMLAB__GUARD"  # no parameter's SIMLAB_<NAME> can read so (names start a-z)
_GUARD_CODE = r"""
import os, signal, sys, time
marker = sys.argv[1].encode()  # NAME=token
spared = int(sys.argv[2])
def sweep():
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/" + entry + "/environ", "rb") as f:
                marked = marker in f.read().split(b"\0")
            if marked:
                group = os.getpgid(int(entry))
                if group != spared:
                    os.killpg(group, signal.SIGKILL)
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            pass
while True:
    try:
        request = os.read(0, 64)
        break
    except InterruptedError:
        continue
sweep()
if not request:  # the process is gone (not a normal exit): it may have been starting one more
    time.sleep(0.5)  # (forked, not yet exec'd with the marker)
    sweep()
"""
_GUARD: dict[int, tuple[str, subprocess.Popen]] = {}  # by pid: a forked child gets its own
_GUARD_LOCK = threading.Lock()
_RELEASED_AT_EXIT: set[int] = set()  # the processes that release their guardian at exit
_RUNNING: set[subprocess.Popen] = set()  # this process's simulators not yet reaped


def _guard_token() -> str | None:
    """The token that marks this process's simulators; starts its guardian on first use. None
    where there is no /proc to find marked processes in."""
    with _GUARD_LOCK:
        current = _GUARD.get(os.getpid())
        if current is not None and current[1].poll() is None:
            return current[0]
        if not os.path.isdir("/proc/self"):
            return None
        token = uuid.uuid4().hex
        try:
            guardian = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARD_CODE, f"{GUARD_VARIABLE}={token}",
                 str(os.getpgrp())],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        except OSError:
            return None
        if os.getpid() not in _RELEASED_AT_EXIT:
            _RELEASED_AT_EXIT.add(os.getpid())
            atexit.register(_release_guardian)  # the main process of a sweep or a run
            # a pool worker ends with os._exit: multiprocessing runs its finalizers, not atexit's
            multiprocessing.util.Finalize(None, _release_guardian, exitpriority=0)
        _GUARD.clear()
        _GUARD[os.getpid()] = (token, guardian)
        return token


def _release_guardian() -> None:
    """At a normal exit: the guardian checks once, ends, and is reaped (not left a zombie)."""
    current = _GUARD.pop(os.getpid(), None)
    if current is not None:
        with contextlib.suppress(OSError):
            current[1].stdin.write(b"exit")  # type: ignore[union-attr]
            current[1].stdin.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            current[1].wait(timeout=1)


def end_simulators() -> None:
    """Kill the process group of every simulator this process is running now (any thread; safe
    in a signal handler): a sweep's Ctrl-C when it simulates in-process."""
    for process in list(_RUNNING):
        _kill_group(process)


class LastLine:
    """The last non-empty line of a stream fed in chunks, in memory bounded by ``limit`` bytes:
    a simulator's result line, however much it printed before (lines end with ``\\n``)."""

    def __init__(self, limit: int = RESULT_LINE_LIMIT) -> None:
        self.limit = limit
        self.line: bytes | None = None  # the last complete non-empty line so far
        self.too_long = False  # ... unless that line was longer than ``limit``
        self._current = bytearray()
        self._current_too_long = False

    def feed(self, chunk: bytes) -> None:
        first = chunk.find(b"\n")
        if first < 0:
            self._add(chunk)
            return
        self._add(chunk[:first])
        self._end()
        last = chunk.rfind(b"\n")
        # Whole lines between the first and the last newline: only the last non-empty one counts
        # (rstrip drops trailing blank lines, so what follows the last newline left is not blank).
        middle = chunk[first + 1:last].rstrip()
        if middle:
            self._keep(middle[middle.rfind(b"\n") + 1:])
        self._add(chunk[last + 1:])

    def finish(self) -> None:
        """The stream ended: its unterminated last line counts too."""
        if self._current or self._current_too_long:
            self._end()

    def _add(self, piece: bytes) -> None:
        if self._current_too_long or not piece:
            return
        if len(self._current) + len(piece) > self.limit:
            self._current_too_long = True
            self._current = bytearray()
        else:
            self._current += piece

    def _end(self) -> None:
        if self._current_too_long:
            self.line, self.too_long = None, True
        elif self._current.strip():
            self._keep(bytes(self._current))
        self._current = bytearray()
        self._current_too_long = False

    def _keep(self, line: bytes) -> None:
        if len(line) > self.limit:
            self.line, self.too_long = None, True
        else:
            self.line, self.too_long = bytes(line), False


class Tail:
    """The last ``size`` bytes of a stream fed in chunks."""

    def __init__(self, size: int = STDERR_TAIL_BYTES) -> None:
        self.size = size
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.data += chunk[-self.size:]
        if len(self.data) > self.size:
            del self.data[:-self.size]

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


def _tail(data: bytes) -> str:
    tail = Tail()
    tail.feed(data)
    return tail.text()


def _parse_line(line: LastLine, metrics: tuple[str, ...]) -> tuple[dict[str, float], int]:
    if line.too_long:
        raise ValueError(f"the last line of stdout is longer than {line.limit:,} bytes: expected "
                         "a JSON object of metrics")
    if line.line is None:
        raise ValueError("no output on stdout: expected a JSON object of metrics as the last line")
    last = line.line.decode("utf-8", errors="replace").strip()
    try:
        record = json.loads(last)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the last line of stdout is not JSON ({exc.msg}): {last[:200]!r}") from None
    if not isinstance(record, dict):
        raise ValueError(f"the last line of stdout is JSON but not an object: {last[:200]!r}")
    values = record["metrics"] if isinstance(record.get("metrics"), dict) else record
    missing = [m for m in metrics if m not in values]
    if missing:
        raise ValueError(f"metric(s) missing from the output: {', '.join(missing)} "
                         f"(got: {', '.join(sorted(map(str, values)))[:300]})")
    bad = {m: values[m] for m in metrics
           if not isinstance(values[m], int | float) or isinstance(values[m], bool)}
    if bad:
        raise ValueError("non-numeric metric(s): " + ", ".join(f"{k}={v!r}"[:100]
                                                               for k, v in bad.items()))
    events = record.get("events", 0)
    events = int(events) if isinstance(events, int | float) and not isinstance(events, bool) \
        and math.isfinite(events) else 0
    return {m: float(values[m]) for m in metrics}, events


def parse_output(stdout: bytes, metrics: tuple[str, ...]) -> tuple[dict[str, float], int]:
    """The declared metrics (and events) from the last non-empty line of ``stdout``; ValueError
    saying what is wrong otherwise."""
    line = LastLine()
    line.feed(stdout)
    line.finish()
    return _parse_line(line, metrics)


def _exited(process: subprocess.Popen) -> bool:
    """Whether the simulator has exited, without reaping it (its pid, hence its process group's
    id, stays taken until ``wait``)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere
        return True


def _pidfd(pid: int) -> int | None:
    """A descriptor readable once ``pid`` exits (Linux 5.3+); None elsewhere (then polled)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _reap(process: subprocess.Popen) -> None:
    """Kill the simulator's group (it has exited, or must), then reap it."""
    _RUNNING.discard(process)  # before its pid is freed: end_simulators must not reach a reused one
    _kill_group(process)
    process.wait()


def _collect(process: subprocess.Popen, timeout: float | None) -> tuple[LastLine, Tail, bool]:
    """Read the simulator's stdout (its last non-empty line) and stderr (its last 2 KB) until it
    exits or its timeout passes (then its group is killed: True). A simulator is judged by its
    own exit: its process group is killed then, so a child still holding stdout neither delays
    the result nor outlives it; output in flight is read for at most EXIT_DRAIN_SECONDS more."""
    out, err = LastLine(), Tail()
    sinks: dict[int, LastLine | Tail] = {process.stdout.fileno(): out,  # type: ignore[union-attr]
                                         process.stderr.fileno(): err}  # type: ignore[union-attr]
    deadline = None if timeout is None else time.monotonic() + timeout
    ended_at: float | None = None
    timed_out = False
    pidfd = _pidfd(process.pid)
    with selectors.DefaultSelector() as selector:
        for fd in sinks:
            selector.register(fd, selectors.EVENT_READ)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while sinks or ended_at is None:
                now = time.monotonic()
                if ended_at is None and _exited(process):
                    _reap(process)
                    ended_at = now
                elif ended_at is None and deadline is not None and now >= deadline:
                    _reap(process)
                    ended_at, timed_out = now, True
                if ended_at is not None:
                    wait: float | None = ended_at + EXIT_DRAIN_SECONDS - now
                    if wait <= 0:  # type: ignore[operator]
                        break  # a descendant outside its group still holds a pipe
                else:
                    wait = None if deadline is None else deadline - now
                    if pidfd is None:
                        wait = EXIT_POLL_SECONDS if wait is None else min(wait, EXIT_POLL_SECONDS)
                for key, _ in selector.select(wait):
                    if key.fd == pidfd:
                        selector.unregister(pidfd)  # exited: noticed at the top of the loop
                        continue
                    chunk = os.read(key.fd, READ_CHUNK)
                    if chunk:
                        sinks[key.fd].feed(chunk)
                    else:
                        selector.unregister(key.fd)
                        del sinks[key.fd]
        finally:
            if pidfd is not None:
                os.close(pidfd)
    out.finish()
    return out, err, timed_out


def run_command(declaration: Declaration, cwd: str | None, params: Mapping[str, Any],
                streams: Streams, warmup: float, horizon: float,
                series_interval: float | None = None) -> ModelRun:
    """Run the simulator once (a model's run function); CommandFailed on any failure."""
    values = placeholder_values(params, streams, warmup, horizon)
    argv = [_substitute(argument, values) for argument in declaration.command]
    context = _EXECUTION.get() or Execution()
    env = dict(os.environ)
    env.update({f"SIMLAB_{name.upper()}": value for name, value in values.items()})
    if context.traceparent:
        env["TRACEPARENT"] = context.traceparent
    token = _guard_token()
    if token is not None:
        env[GUARD_VARIABLE] = token
    timeout = declaration.timeout if declaration.timeout is not None else context.timeout
    shown = " ".join(argv)[:500]
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
    except OSError as exc:
        raise CommandFailed(f"cannot be started in {cwd or os.getcwd()}: "
                            f"{exc.strerror or exc}", command=shown) from None
    _RUNNING.add(process)
    try:
        with process.stdout, process.stderr:  # type: ignore[union-attr]
            out, err, timed_out = _collect(process, timeout)
    finally:
        if process.returncode is None:  # interrupted here: nothing it started may outlive it
            _reap(process)
    if timed_out:
        raise CommandFailed(f"timed out after {timeout:g} s; its process group was killed", None,
                            err.text(), command=shown)
    if process.returncode != 0:
        how = (f"killed by signal {-process.returncode}" if process.returncode < 0
               else f"exited with status {process.returncode}")
        raise CommandFailed(how, process.returncode, err.text(), command=shown)
    try:
        metrics, events = _parse_line(out, declaration.metrics)
    except ValueError as exc:
        raise CommandFailed(f"{exc} (exit code 0)", 0, err.text(), command=shown) from None
    return ModelRun(metrics, events)


__all__ = [
    "CommandFailed",
    "Declaration",
    "DeclarationError",
    "LastLine",
    "Tail",
    "command_model",
    "derived_seed",
    "end_simulators",
    "execution",
    "parse_declaration",
    "parse_output",
    "placeholder_values",
    "run_command",
]
