"""Errors of experiment files: every problem as (field path, reason), with line numbers."""

from collections.abc import Mapping
from pathlib import Path

Loc = tuple[str | int, ...]


class ExperimentError(Exception):
    """An experiment file (or mapping) that cannot be used, with every problem found.

    ``path`` is the file (None for a mapping given directly), ``errors`` a list of
    ``(field path, reason)``; the field path is "" for problems of the whole file. ``lines`` maps a
    field path to its 1-based line in the file, when known.
    """

    def __init__(self, path: Path | str | None, errors: list[tuple[str, str]],
                 lines: Mapping[str, int] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.errors = list(errors)
        self.lines = dict(lines or {})
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "<experiment>"
        out = []
        for field, reason in self.errors:
            line = self.lines.get(field)
            suffix = f" (line {line})" if line else ""
            out.append(f"{where}: {field}: {reason}{suffix}" if field else f"{where}: {reason}{suffix}")
        return "\n".join(out)

    def __reduce__(self):  # picklable across processes despite the custom __init__
        return (type(self), (self.path, self.errors, self.lines))


class SpecErrors(ValueError):
    """Raised inside the spec's validator; the loader unpacks ``errors`` into ExperimentError."""

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{format_path(loc)}: {reason}" for loc, reason in errors))


def format_path(loc: Loc) -> str:
    """``('factors', 'tables', 1)`` -> ``factors.tables[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
