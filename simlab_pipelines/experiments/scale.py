"""How big an experiment may be, and how its replications are grouped into partitions.

Two sizes matter, and each is checked by name when a file is resolved, before anything runs:

- **simulations** (configurations x the most replications any configuration may get): every one
  is a row the summary holds in memory, a result row on disk and a span. The most this machine can
  plan is three quarters of its memory divided by what one simulation costs the summary at its
  peak (``SUMMARY_BYTES_PER_SIMULATION``, measured: BENCHMARKS.md "Scale");
  ``SIMLAB_MAX_SIMULATIONS`` sets another limit (a bigger machine runs the summary).
- **partitions** (what Dagster tracks: one per configuration x block of replications): Dagster
  recommends at most ``DAGSTER_RECOMMENDED_PARTITIONS`` per asset (its UI builds every key for
  most pages). ``replications_per_partition`` groups replications into blocks (``auto``: 1 while
  the partitions stay within the recommendation, else the smallest block that keeps them there);
  a file that forces a smaller block is warned about, not refused.
"""

import math
import os
from pathlib import Path

# Dagster's docstrings (partitions/definition/multi.py, static.py, dynamic.py): "We recommended
# limiting partition counts for each asset to 100,000 partitions or fewer."
DAGSTER_RECOMMENDED_PARTITIONS = 100_000
# Peak memory the summary adds per simulation of a one-metric model with a baseline (the rows
# read through the manifest, the long observations, the analysis, the DuckDB insert): 3.6 KB
# measured at 100,000 simulations (BENCHMARKS.md "Scale"), rounded up. An experiment compared
# all pairs (no baseline, no objective) costs more: its comparisons grow with the pairs.
SUMMARY_BYTES_PER_SIMULATION = 4_000
# The share of the machine's memory the summary may plan on (the rest: the instance, a UI).
MEMORY_SHARE = 0.75
MAX_SIMULATIONS_ENV = "SIMLAB_MAX_SIMULATIONS"


def usable_memory() -> int:
    """Bytes of memory this process may use: its cgroup's limit, else the machine's RAM."""
    for limit in (Path("/sys/fs/cgroup/memory.max"),
                  Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # cgroup v1 writes "no limit" as ~2^63
            return int(text)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def max_simulations() -> tuple[int, str]:
    """The most simulations one experiment may plan here, and where that number comes from."""
    raw = os.environ.get(MAX_SIMULATIONS_ENV, "").strip()
    if raw:
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"environment variable {MAX_SIMULATIONS_ENV}={raw!r} must be a "
                             "positive integer") from None
        if value < 1:
            raise ValueError(f"environment variable {MAX_SIMULATIONS_ENV}={raw!r} must be a "
                             "positive integer")
        return value, f"{MAX_SIMULATIONS_ENV}={value:,}"
    memory = usable_memory()
    value = int(memory * MEMORY_SHARE // SUMMARY_BYTES_PER_SIMULATION)
    return value, (f"{MEMORY_SHARE:.0%} of this machine's {memory / 2**30:.1f} GiB at "
                   f"~{SUMMARY_BYTES_PER_SIMULATION:,} bytes per simulation in the summary; "
                   f"{MAX_SIMULATIONS_ENV} sets another limit")


def simulations_error(configurations: int, replications: int) -> str | None:
    """Why ``configurations`` x ``replications`` is more than this machine can plan, or None."""
    total = configurations * replications
    limit, why = max_simulations()
    if total <= limit:
        return None
    return (f"{configurations:,} configurations x {replications:,} replications = {total:,} "
            f"simulations, more than the {limit:,} this machine can plan ({why}): fewer "
            "configurations (a design), fewer replications (a precision target stops early), or "
            "a bigger machine")


def auto_block(configurations: int, replications: int) -> int:
    """Replications per partition under ``auto``: 1 while the partitions stay within Dagster's
    recommendation, else the smallest block that keeps them there."""
    if configurations * replications <= DAGSTER_RECOMMENDED_PARTITIONS:
        return 1
    per_configuration = max(1, DAGSTER_RECOMMENDED_PARTITIONS // max(1, configurations))
    return math.ceil(replications / per_configuration)


def partitions(configurations: int, replications: int, block: int) -> int:
    """Partitions of ``configurations`` x ``replications`` in blocks of ``block``."""
    return configurations * math.ceil(replications / max(1, block))


def partitions_warning(configurations: int, replications: int, block: int) -> str | None:
    """A warning when a forced block leaves more partitions than Dagster recommends."""
    count = partitions(configurations, replications, block)
    if count <= DAGSTER_RECOMMENDED_PARTITIONS:
        return None
    return (f"{count:,} partitions ({configurations:,} configurations x {replications:,} "
            f"replications in blocks of {block:,}): Dagster recommends at most "
            f"{DAGSTER_RECOMMENDED_PARTITIONS:,} partitions per asset (its UI and daemon slow "
            "down past it); replications_per_partition: auto keeps them within it")
