"""Failed partitions grouped by reason: what a run records when simulations fail (the step
failure's ``failure_reasons`` metadata) and what ``simlab sweep`` prints at its end, one row per
reason: the first failed partition, the first line of the reason, how many partitions.

The first line of a reason names what went wrong, not the partition (a command's own line, with
its seed, comes after: ``engine.command.CommandFailed``), so a thousand partitions failing for one
reason are one row.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A run records at most this many reasons (the rest are counted under the last row).
MAX_REASONS = 20
# A process id in a reason (a dead pool worker's: batch._death) differs for every partition.
_PID = re.compile(r" \(pid \d+\)")


@dataclass(frozen=True)
class FailureGroup:
    """Partitions that failed for one reason."""

    reason: str          # the first line of the error
    partitions: int      # how many
    first: str           # the first of them (a partition key)

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "partitions": self.partitions, "first": self.first}


def first_line(error: str) -> str:
    """The first non-empty line of ``error``, at most 300 characters."""
    line = next((part.strip() for part in error.splitlines() if part.strip()), "")
    return line if len(line) <= 300 else line[:299] + "…"


def group_failures(failures: Iterable[tuple[str, str]]) -> list[FailureGroup]:
    """(partition key, error) pairs grouped by the error's first line, in order of first
    appearance; reasons beyond MAX_REASONS are counted as one row."""
    counts: dict[str, list[Any]] = {}
    for key, error in failures:
        # without the pid, eight partitions whose workers died the same way are one row
        reason = _PID.sub("", first_line(error)) or "unknown reason"
        if reason not in counts and len(counts) >= MAX_REASONS:
            reason = "other reasons (see the run's logs)"
        entry = counts.setdefault(reason, [0, key])
        entry[0] += 1
    return [FailureGroup(reason, n, first) for reason, (n, first) in counts.items()]


def merge_groups(groups: Iterable[FailureGroup]) -> list[FailureGroup]:
    """Groups of several runs as one list: one row per reason, counts added."""
    merged: dict[str, FailureGroup] = {}
    for group in groups:
        seen = merged.get(group.reason)
        merged[group.reason] = group if seen is None else FailureGroup(
            group.reason, seen.partitions + group.partitions, seen.first)
    return sorted(merged.values(), key=lambda g: -g.partitions)


def groups_from_metadata(value: Sequence[Mapping[str, Any]] | None) -> list[FailureGroup]:
    """The groups a run's step failure recorded (its ``failure_reasons`` metadata)."""
    return [FailureGroup(str(g["reason"]), int(g["partitions"]), str(g["first"]))
            for g in value or []]
