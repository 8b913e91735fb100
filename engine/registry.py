"""Where models come from: the built-ins, installed plug-in packages, and import references.

A model is found, in this order, as

- a built-in (``engine.models.MODELS``: mmck, restaurant, ...);
- an entry point of an installed package, group ``simlab.models``::

      [project.entry-points."simlab.models"]
      clinic = "clinic_sim.model:MODEL"

  (the entry point's name must be the model's ``name``);
- an import reference ``"package.module:ATTRIBUTE"`` (``ATTRIBUTE`` may be dotted), imported with
  an optional directory put first on ``sys.path`` (an experiment file's own directory).

A plug-in may not take a built-in's name. A plug-in that cannot be used (import error, not a
``Model``, a bad declaration, a name clash) raises ``ModelError`` with the reason when it is asked
for, and is listed as broken by ``list_models``: it never hides the other models.

``ModelRef`` is the picklable form a pool worker resolves (``resolve``, cached per process): a
name or reference, the directory to import from, or a command-line simulator's declaration.

A plug-in's import is bounded in time (``SIMLAB_PLUGIN_IMPORT_TIMEOUT``, default 30 s): it runs in
a helper thread, and one that has not finished by then (a sleep, a network call, an ``input()`` at
import time) makes that plug-in unusable, with the reason, like an import that raises; the rest
goes on (the code location that loads every experiment file among them). The thread is left to
itself (a daemon thread; its module stays half-imported, so the plug-in is refused at once until
it finishes). A thread costs ~1 ms a plug-in; importing in a child process first cost ~1 s of
wall time and 0.25 s of CPU per plug-in in every process that loads it (each run's and each
pool worker's). A hang is noted in the temporary directory (named after the module's files, their
sizes and times), so the other processes that load the experiments (each run's, the code
server's) refuse it at once instead of waiting the timeout each, until its files change or
``HUNG_NOTE_SECONDS`` pass. A plug-in that installs signal handlers at import time cannot be
imported from a thread: do that in its ``run``.
"""

import functools
import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.models import MODELS
from engine.models.base import Model
from engine.parameters import Parameter, ParameterError

ENTRY_POINT_GROUP = "simlab.models"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
# package.module:ATTRIBUTE, the entry-point object-reference syntax (no extras).
REFERENCE_PATTERN = re.compile(
    r"(?P<module>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r":(?P<attribute>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")

Origin = Literal["built-in", "package", "path", "command"]
IMPORT_TIMEOUT_VARIABLE = "SIMLAB_PLUGIN_IMPORT_TIMEOUT"
DEFAULT_IMPORT_TIMEOUT = 30.0


class ModelError(KeyError):
    """A model that is unknown or cannot be used; the message says which and why.

    A KeyError (what ``get_model`` always raised for an unknown name), printed without quotes.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self):  # picklable across processes despite the custom __init__
        return (type(self), (self.name, self.reason))


@dataclass(frozen=True)
class ModelEntry:
    """One model as listed: where it comes from, and the model or why it cannot be used."""

    name: str
    origin: Origin
    source: str  # "engine", "<distribution> <version>: <module:attr>", or the reference
    model: Model | None
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        """The entry as listed by ``simlab-engine models --json``."""
        out: dict[str, Any] = {"name": self.name, "origin": self.origin, "source": self.source}
        if self.model is not None:
            out.update(self.model.describe())
        else:
            out["error"] = self.error
        return out


def is_reference(text: str) -> bool:
    """Whether ``text`` is a ``package.module:ATTRIBUTE`` import reference."""
    return REFERENCE_PATTERN.fullmatch(text) is not None


def check_model(model: Any, where: str) -> Model:
    """``model`` if it is a usable ``engine.Model``, else ModelError saying what is wrong.

    ``where`` names what was loaded (an entry point or a reference), for the message.
    """
    if not isinstance(model, Model):
        kind = type(model).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"  # "an int", "a dict"
        raise ModelError(where, f"{where} is {article} {kind}, not an engine.Model")
    problems: list[str] = []
    if not isinstance(model.name, str) or not NAME_PATTERN.fullmatch(model.name):
        problems.append(f"name {model.name!r} must match [a-z][a-z0-9_]*")
    if not isinstance(model.version, str) or not model.version.strip():
        problems.append(f"version must be a non-empty string, got {model.version!r}")
    if not callable(model.run):
        problems.append("run is not callable")
    if not isinstance(model.metrics, Mapping) or not model.metrics:
        problems.append("metrics must be a non-empty mapping of metric name to help text")
    elif bad := [m for m in model.metrics if not isinstance(m, str) or not NAME_PATTERN.fullmatch(m)]:
        problems.append(f"metric names must match [a-z][a-z0-9_]*: {bad!r}")
    seen: set[str] = set()
    for parameter in model.parameters if isinstance(model.parameters, tuple | list) else ():
        if not isinstance(parameter, Parameter):
            problems.append(f"parameters must be engine.Parameter, got {parameter!r}")
            continue
        if not NAME_PATTERN.fullmatch(parameter.name) or parameter.name in seen:
            problems.append(f"parameter name {parameter.name!r} is invalid or repeated")
        seen.add(parameter.name)
        if parameter.type not in (int, float):
            problems.append(f"parameter {parameter.name!r}: type must be int or float")
            continue
        if parameter.default is not None or parameter.optional:
            try:
                parameter.validate(parameter.default)
            except ParameterError as exc:
                problems.append(f"default of parameter {parameter.name!r}: {exc}")
    if not isinstance(model.parameters, tuple | list):
        problems.append("parameters must be a tuple of engine.Parameter")
    for field in ("default_horizon", "default_warmup"):
        value = getattr(model, field)
        if (not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)
                or value < 0 or (field == "default_horizon" and value == 0)):
            problems.append(f"{field} must be a finite number "
                            f"{'> 0' if field == 'default_horizon' else '>= 0'}, got {value!r}")
    if problems:
        raise ModelError(where, f"{where}: bad model declaration: " + "; ".join(problems))
    return model


def import_timeout() -> float:
    """Seconds a plug-in's import may take (``SIMLAB_PLUGIN_IMPORT_TIMEOUT``, default 30)."""
    text = os.environ.get(IMPORT_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_IMPORT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ModelError(IMPORT_TIMEOUT_VARIABLE, f"{IMPORT_TIMEOUT_VARIABLE}={text!r}: must be a "
                                                  "number of seconds > 0")
    return value


# Imports that did not finish in time, by top-level module, with how long they were given: the
# thread still holds that module's import lock, so importing it again would hang as long;
# refused at once while it is alive.
_HUNG: dict[str, tuple[threading.Thread, float]] = {}
_BLOCKING = "a plug-in must not block at import time (a sleep, a network call, input())"
# Other processes (each run's, each code server's) learn of a hang from a note in the temporary
# directory, so they do not wait the timeout again: valid while the module's files are unchanged,
# for at most this long (a hang that came from outside, a network down, is tried again later).
HUNG_NOTE_SECONDS = 600.0
_NOTES = "simlab-plugin-imports"


def _module_files(top: str) -> list[Path] | None:
    """The files of top-level module ``top`` as the import would find them (a package: its
    ``.py`` files, at most 1,000), without importing it; None when it cannot be told."""
    try:
        spec = importlib.machinery.PathFinder.find_spec(top, sys.path)
    except (ImportError, ValueError, OSError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        files = [f for place in spec.submodule_search_locations for f in Path(place).rglob("*.py")]
        return sorted(files)[:1000] if files else None
    return [Path(spec.origin)] if spec.origin and Path(spec.origin).is_file() else None


def _note_path(top: str) -> Path | None:
    """Where the note on an import of ``top`` lives: named after its files and their sizes and
    modification times, so an edited plug-in is tried again at once."""
    files = _module_files(top)
    if not files:
        return None
    digest = hashlib.sha256(top.encode())
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            return None
        digest.update(f"\0{file}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return Path(tempfile.gettempdir()) / _NOTES / f"{digest.hexdigest()[:24]}.json"


def _noted_hang(note: Path | None) -> dict[str, Any] | None:
    """A recent note that this module's import hung, if there is one."""
    if note is None:
        return None
    try:
        noted = json.loads(note.read_text())
        if time.time() - float(noted["at"]) < HUNG_NOTE_SECONDS:
            return noted
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _note_hang(note: Path | None, timeout: float) -> None:
    """Leave the note (atomically: a reader sees all of it or none)."""
    if note is None:
        return
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=note.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump({"at": time.time(), "timeout": timeout, "pid": os.getpid()}, out)
        os.replace(tmp, note)
    except OSError:
        pass  # only an optimisation: the next process waits the timeout again


def _bounded_import(module: str, where: str, load):
    """``load()`` (an import) in a daemon thread; ModelError for ``where`` if it does not finish
    within ``import_timeout()`` seconds, or if it did not in another process lately (a note in
    the temporary directory, while its files are unchanged). Its exception, if it raises, is
    re-raised here."""
    top = module.split(".")[0]
    stuck, given = _HUNG.get(top, (None, 0.0))
    if stuck is not None and stuck.is_alive():
        raise ModelError(where, f"{where} cannot be imported: the import of {top!r} did not "
                                f"finish within {given:g} s ({IMPORT_TIMEOUT_VARIABLE}), nor "
                                f"since; {_BLOCKING}")
    timeout = import_timeout()
    note = _note_path(top)
    noted = _noted_hang(note)
    if noted is not None:
        when = time.strftime("%H:%M:%S", time.localtime(float(noted["at"])))
        raise ModelError(where, f"{where} cannot be imported: the import of {top!r} did not "
                                f"finish within {float(noted['timeout']):g} s "
                                f"({IMPORT_TIMEOUT_VARIABLE}) in process {noted.get('pid')} at "
                                f"{when}; not tried again until its files change or "
                                f"{HUNG_NOTE_SECONDS / 60:g} minutes pass; {_BLOCKING}")
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = load()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"simlab-import-{top}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _HUNG[top] = (thread, timeout)
        _note_hang(note, timeout)
        raise ModelError(where, f"{where} cannot be imported: the import of {top!r} did not "
                                f"finish within {timeout:g} s ({IMPORT_TIMEOUT_VARIABLE}); "
                                f"{_BLOCKING}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _import_reference(reference: str, directory: str | Path | None) -> Any:
    match = REFERENCE_PATTERN.fullmatch(reference)
    if match is None:
        raise ModelError(reference, f"model reference {reference!r} must read "
                                    "'package.module:ATTRIBUTE'")
    if directory is not None:
        folder = str(Path(directory).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    where = f"model {reference!r}" + (f" (from {directory})" if directory is not None else "")
    before = set(sys.modules)
    try:
        target: Any = _bounded_import(match["module"], where,
                                      lambda: importlib.import_module(match["module"]))
        for part in match["attribute"].split("."):
            target = getattr(target, part)
    except ModelError:
        raise
    except Exception as exc:
        # Forget what the failed import left behind (e.g. a namespace package standing in for
        # the real one), so that importing again from another directory can succeed.
        for name in set(sys.modules) - before:
            del sys.modules[name]
        where = f" (from {directory})" if directory is not None else ""
        raise ModelError(reference, f"model {reference!r} cannot be imported{where}: "
                                    f"{_failure(exc)}") from exc
    return target


def _failure(exc: BaseException) -> str:
    """An exception as one line, with where it was raised when that is the user's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{at}"


@functools.lru_cache(maxsize=256)
def _load_reference(reference: str, directory: str | None) -> Model:
    model = check_model(_import_reference(reference, directory), f"model {reference!r}")
    if model.name in MODELS:
        raise ModelError(reference, f"model {reference!r} is named {model.name!r}, the name of "
                                    "a built-in model: a plug-in may not take it")
    return model


def load_reference(reference: str, directory: str | Path | None = None) -> Model:
    """The model an import reference points at (``directory`` importable first); cached."""
    return _load_reference(reference, str(Path(directory).resolve()) if directory else None)


@functools.lru_cache(maxsize=1)
def entry_point_models() -> dict[str, ModelEntry]:
    """The models of installed packages (group ``simlab.models``), broken ones included."""
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, []).append(point)
    entries: dict[str, ModelEntry] = {}
    for name, points in sorted(found.items()):
        point = points[0]
        dist = getattr(point, "dist", None)
        source = (f"{dist.name} {dist.version}: {point.value}" if dist is not None
                  else point.value)
        where = f"entry point {name!r} ({source})"
        try:
            if len(points) > 1:
                others = ", ".join(p.value for p in points)
                raise ModelError(name, f"model {name!r} is declared by several entry points "
                                       f"({others}): uninstall all but one")
            if name in MODELS:
                raise ModelError(name, f"{where} takes the name of the built-in model {name!r}: "
                                       "a plug-in may not; rename it")
            try:
                loaded = _bounded_import(point.module, where, point.load)
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(name, f"{where} cannot be imported: {_failure(exc)}") from exc
            model = check_model(loaded, where)
            if model.name != name:
                raise ModelError(name, f"{where} loads a model named {model.name!r}: the entry "
                                       "point's name must be the model's name")
            entries[name] = ModelEntry(name, "package", source, model)
        except ModelError as exc:
            entries[name] = ModelEntry(name, "package", source, None, exc.reason)
    return entries


def refresh() -> None:
    """Forget what was discovered and imported (after installing a package, in tests)."""
    entry_point_models.cache_clear()
    _load_reference.cache_clear()
    _command.cache_clear()


def list_models() -> list[ModelEntry]:
    """Every model the engine can find by name: built-ins, then installed plug-ins (broken ones
    with their error)."""
    builtins = [ModelEntry(name, "built-in", "engine", model) for name, model in MODELS.items()]
    return builtins + list(entry_point_models().values())


def get_model(name: str, directory: str | Path | None = None) -> Model:
    """The model called ``name`` (built-in or installed plug-in), or the one an import reference
    ``package.module:ATTRIBUTE`` points at (``directory`` importable first).

    Raises ModelError (a KeyError) for an unknown name, with the known ones, or for a plug-in that
    cannot be used, with the reason.
    """
    if name in MODELS:
        return MODELS[name]
    if ":" in name:
        return load_reference(name, directory)
    entry = entry_point_models().get(name)
    if entry is None:
        known = sorted(MODELS) + sorted(entry_point_models())
        raise ModelError(name, f"unknown model {name!r} (known: {', '.join(known)}); your own "
                               "model: 'package.module:ATTRIBUTE' or an installed plug-in")
    if entry.model is None:
        raise ModelError(name, entry.error or f"model {name!r} cannot be used")
    return entry.model


@dataclass(frozen=True)
class ModelRef:
    """How a pool worker finds a simulation's model (picklable, hashable).

    ``reference`` is a model name or ``package.module:ATTRIBUTE``; ``directory`` is put first on
    ``sys.path`` for a reference, and is a command's working directory; ``command`` is a
    command-line simulator's declaration as canonical JSON (see ``engine.command``).
    """

    reference: str
    directory: str | None = None
    command: str | None = None

    @classmethod
    def for_command(cls, declaration: Mapping[str, Any], directory: str | Path | None) -> "ModelRef":
        """The reference of a command-line simulator declared by ``declaration``."""
        return cls(str(declaration["name"]),
                   str(Path(directory).resolve()) if directory is not None else None,
                   json.dumps(dict(declaration), sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=64)
def _command(declaration: str, directory: str | None) -> Model:
    from engine.command import command_model  # the subprocess machinery only when needed

    return command_model(json.loads(declaration), directory)


def resolve(ref: ModelRef) -> Model:
    """The model ``ref`` designates (a worker imports or builds a plug-in once per process)."""
    if ref.command is not None:
        return _command(ref.command, ref.directory)
    return get_model(ref.reference, ref.directory)


__all__ = [
    "DEFAULT_IMPORT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "IMPORT_TIMEOUT_VARIABLE",
    "ModelEntry",
    "ModelError",
    "ModelRef",
    "check_model",
    "entry_point_models",
    "get_model",
    "import_timeout",
    "is_reference",
    "list_models",
    "load_reference",
    "refresh",
    "resolve",
]
