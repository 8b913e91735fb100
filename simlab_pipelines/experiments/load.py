"""Reading experiment files: YAML with line numbers, validation errors by field path, a directory
of files where a bad one never stops the others."""

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simlab_pipelines.experiments.constraints import Constraint
from simlab_pipelines.experiments.designs import Design, DesignFactor
from simlab_pipelines.experiments.errors import ExperimentError, Loc, SpecErrors, format_path
from simlab_pipelines.experiments.search import Budget, Search, SearchFactor
from simlab_pipelines.experiments.spec import ExperimentSpec, Objective, Precision

EXPERIMENTS_DIR_ENV = "SIMLAB_EXPERIMENTS_DIR"
# Hostile or mistaken input (docs/reliability.md): an experiment file is a page of settings, so a
# file above MAX_FILE_BYTES is refused before parsing, and a document whose aliases add more than
# MAX_EXPANDED_NODES values to what is written out (a "billion laughs" bomb: 422 bytes, 10^9
# values) is refused before anything walks or validates the expansion. Values written out are
# bounded by the file's size; how many configurations and simulations they make is checked by
# name when the file is resolved (resolve.py, experiments/scale.py).
MAX_FILE_BYTES = 1_000_000
MAX_EXPANDED_NODES = 100_000

# Specs already validated in this process, by file and content: a sweep reads its file about four
# times per Dagster run (each run and step reconstructs its job from the file), and validating
# thousands of configurations takes seconds. Keyed by the bytes, so an edited file is read anew;
# built-in and command models only (all they depend on is the engine and the file).
_LOADED: "OrderedDict[tuple[str, bytes], ExperimentSpec]" = OrderedDict()
_LOADED_MAX = 32
_LOADED_LOCK = threading.Lock()


class _Rejected(Exception):
    """A document refused before validation; the message is the reason."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~50x faster to parse
    """SafeLoader that also reads ``1e-3`` and ``2.5e6`` as floats (YAML 1.2; 1.1 needs a dot and
    a signed exponent, so pyyaml would hand the engine the string '1e-3')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(text: str) -> tuple[Any, dict[str, int], list[tuple[str, str]]]:
    """Parse ``text``: (data, line of each field path, duplicate-key errors).

    Raises yaml.YAMLError on a syntax error and _Rejected for a recursive alias or an expansion
    beyond MAX_EXPANDED_NODES.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        lines: dict[str, int] = {}
        duplicates: list[tuple[str, str]] = []
        _walk(node, (), lines, duplicates, {}, set(), _Tally())
        return loader.construct_document(node), lines, duplicates
    finally:
        loader.dispose()


class _Tally:
    """Values of the whole document: as written (each node once) and as expanded (aliases
    counted as often as they are used)."""

    def __init__(self) -> None:
        self.written = self.expanded = 0

    def alias(self, size: int, node: yaml.Node) -> None:
        self.expanded += size
        if self.expanded - self.written > MAX_EXPANDED_NODES:
            raise _Rejected(f"the aliases (*name) from line {node.start_mark.line + 1} on expand "
                            f"to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?); write "
                            "the values out, or alias less")


def _walk(node: yaml.Node, loc: Loc, lines: dict[str, int], duplicates: list[tuple[str, str]],
          sizes: dict[int, int], active: set[int], tally: _Tally) -> int:
    """Record the line of each field path and duplicate keys; return how many values ``node``
    expands to (aliases counted as often as they are used).

    Each node is walked once (an alias of a walked node adds its known size: linear in the
    document's nodes, whatever the aliases); its fields' lines are those of its first use. Only
    what aliases add is limited (``tally``): a long list written out is no bomb.
    """
    if id(node) in sizes:
        tally.alias(sizes[id(node)], node)
        return sizes[id(node)]
    if id(node) in active:
        raise _Rejected(f"recursive alias at line {node.start_mark.line + 1} (a value that "
                        "contains itself)")
    active.add(id(node))
    tally.written += 1
    tally.expanded += 1
    size = 1
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                key, line = key_node.value, key_node.start_mark.line + 1
                path = format_path((*loc, key))
                if key in first:
                    duplicates.append((path, f"duplicate key {key!r} at line {line} (first "
                                       f"given at line {first[key]})"))
                else:
                    first[key] = line
                    lines.setdefault(path, line)
                child = (*loc, key)
            else:  # a merge (<<) or a complex key: counted, no field path
                child = loc
            size += _walk(key_node, child, lines, duplicates, sizes, active, tally)
            size += _walk(value_node, child, lines, duplicates, sizes, active, tally)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault(format_path((*loc, i)), item.start_mark.line + 1)
            size += _walk(item, (*loc, i), lines, duplicates, sizes, active, tally)
    active.discard(id(node))
    sizes[id(node)] = size
    return size


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    reason = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is not None:
        reason += f" at line {mark.line + 1}, column {mark.column + 1}"
    return reason


def _allowed_keys(parent: Loc) -> list[str] | None:
    if parent == ():
        return list(ExperimentSpec.model_fields)
    if parent == ("precision",):
        return list(Precision.model_fields)
    if parent == ("objective",):
        return list(Objective.model_fields)
    if parent == ("design",):
        return list(Design.model_fields)
    if len(parent) == 3 and parent[:2] == ("design", "factors"):
        return list(DesignFactor.model_fields)
    if parent == ("search",):
        return list(Search.model_fields)
    if parent == ("search", "budget"):
        return list(Budget.model_fields)
    if len(parent) == 3 and parent[:2] == ("search", "factors"):
        return list(SearchFactor.model_fields)
    if len(parent) == 2 and parent[0] == "constraints":
        return list(Constraint.model_fields)
    return None


def _validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (field path, reason), with our semantic errors unpacked."""
    out: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, SpecErrors):
            out.extend((format_path(where), reason) for where, reason in cause.errors)
            continue
        kind = error["type"]
        if error["loc"] and error["loc"][-1] == "[key]":
            # A mapping key that is not a string (YAML reads `true:` or `3:` as bool/int). The
            # key is the last part of ``loc``, in pydantic's rendering (True shows as 1): name the
            # mapping instead, and the key as written.
            out.append((format_path(loc[:-1]), f"key {error['input']!r} must be a string "
                        "(quote it in the YAML)"))
            continue
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            reason = f"unknown key {loc[-1]!r}"
            if allowed:
                reason += f" (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            reason = "required field is missing"
        elif kind == "value_error" and cause is not None:
            reason = str(cause)
        else:
            msg = error["msg"]
            reason = f"{msg[:1].lower()}{msg[1:]} (got {error['input']!r})"
        out.append((format_path(loc), reason))
    return out


def parse_experiment(data: Mapping[str, Any], source: Path | str | None = None) -> ExperimentSpec:
    """Validate an experiment given as a mapping (e.g. parsed YAML); raises ExperimentError."""
    return _parse(data, Path(source) if source is not None else None, {})


def _parse(data: Any, source: Path | None, lines: dict[str, int],
           extra: list[tuple[str, str]] | None = None) -> ExperimentSpec:
    if not isinstance(data, Mapping):
        name = type(data).__name__
        kind = ("an empty document" if data is None
                else f"{'an' if name[:1] in 'aeiou' else 'a'} {name}")  # "an int", "a list"
        raise ExperimentError(source, [("", f"expected a mapping of experiment fields "
                                        f"(name: ..., model: ...), got {kind}")])
    errors = list(extra or [])
    try:
        spec = ExperimentSpec.model_validate(
            dict(data), context={"directory": source.parent if source is not None else None})
    except ValidationError as exc:
        raise ExperimentError(source, errors + _validation_errors(exc), lines) from None
    if errors:
        raise ExperimentError(source, errors, lines)
    spec._source = source
    return spec


def load_experiment(path: Path | str) -> ExperimentSpec:
    """Load and validate one experiment file; raises ExperimentError naming every problem."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # never more: a huge file is refused unread
    except OSError as exc:
        raise ExperimentError(path, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ExperimentError(path, [("", f"the file is larger than {MAX_FILE_BYTES:,} bytes, the "
                                      "limit for an experiment file (a page of settings; long "
                                      "lists of configurations belong in a design)")])
    key = (str(path.resolve()), hashlib.sha256(raw).digest())
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    spec = _load(path, raw)
    model = getattr(spec, "_model", None)
    if model is not None and model.origin not in ("built-in", "command"):
        return spec  # a plug-in's code may change without the file (registry.refresh())
    with _LOADED_LOCK:
        _LOADED[key] = spec
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    return spec


def _load(path: Path, raw: bytes) -> ExperimentSpec:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentError(path, [("", f"cannot read the file: not UTF-8 text "
                                      f"({exc.reason} at byte {exc.start})")]) from None
    try:
        data, lines, duplicates = _read_yaml(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(path, [("", _yaml_reason(exc))]) from None
    except _Rejected as exc:
        raise ExperimentError(path, [("", f"refused: {exc}")]) from None
    except RecursionError:
        raise ExperimentError(path, [("", "refused: values nested too deeply")]) from None
    if duplicates:  # pyyaml would silently keep the last value
        raise ExperimentError(path, duplicates)
    extra: list[tuple[str, str]] = []
    if isinstance(data, Mapping) and isinstance(data.get("name"), str) and data["name"] != path.stem:
        extra.append(("name", f"name {data['name']!r} must match the file name {path.stem!r} "
                      f"(rename the file or the experiment)"))
    return _parse(data, path, lines, extra)


def load_experiments(directory: Path | str | None = None,
                     ) -> tuple[list[ExperimentSpec], list[ExperimentError]]:
    """Every ``*.yaml``/``*.yml`` in ``directory`` (default ``experiments_dir()``), sorted by name.

    Returns the valid specs and one error per bad file; a bad file never stops the others. A
    second file with an already used experiment name is an error. Hidden files are skipped
    (editors' temporary files).
    """
    directory = Path(directory) if directory is not None else experiments_dir()
    if not directory.is_dir():
        reason = "not a directory" if directory.exists() else "no such directory"
        return [], [ExperimentError(directory, [("", f"cannot list experiments: {reason} "
                                                 f"(set {EXPERIMENTS_DIR_ENV})")])]
    files = sorted((p for p in directory.iterdir()
                    if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")),
                   key=lambda p: p.name)
    specs: list[ExperimentSpec] = []
    errors: list[ExperimentError] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            spec = load_experiment(path)
        except ExperimentError as exc:
            errors.append(exc)
            continue
        if spec.name in seen:
            errors.append(ExperimentError(path, [("name", f"experiment {spec.name!r} is already "
                                                  f"defined in {seen[spec.name]}")]))
            continue
        seen[spec.name] = path
        specs.append(spec)
    return specs, errors


def experiments_dir() -> Path:
    """Where experiment files live: ``$SIMLAB_EXPERIMENTS_DIR``, else ``experiments/`` in the
    project (the parent of this package), else ``./experiments`` if that exists."""
    env = os.environ.get(EXPERIMENTS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    project = Path(__file__).resolve().parents[2] / "experiments"
    if project.is_dir():
        return project
    cwd = Path.cwd() / "experiments"
    return cwd if cwd.is_dir() else project
