"""The code location: every valid experiment file in SIMLAB_EXPERIMENTS_DIR (default
`experiments/`) becomes its spec, replications and summary assets, with jobs, checks, the file
sensor, the nightly validation schedule and the automation that refreshes summaries.

    dagster dev -m simlab_pipelines.definitions
    dagster asset materialize -m simlab_pipelines.definitions \
        --select mmck_validation/replications --partition 'arrival_rate-0.5_capacity-10_servers-2|0'

A sequential experiment's partitions are dynamic (``partitions.py``): on a fresh instance they exist
once its spec is materialised (``--select restaurant_staffing/spec``) or a sensor or sweep saw it.
Loading this module writes nothing to the instance: every process that runs a run imports it.
"""

import atexit
import gc
from pathlib import Path

import dagster as dg

from simlab_pipelines.build import build_definitions
from simlab_pipelines.experiments import experiments_dir, load_experiments


def load_definitions(directory: Path | None = None) -> dg.Definitions:
    """Definitions for every experiment file in ``directory`` (default: the experiments dir)."""
    directory = Path(directory) if directory else experiments_dir()
    specs, errors = load_experiments(directory)
    return build_definitions(specs, errors, directory)


defs = load_definitions()
# What a process has loaded by now (Dagster, the definitions) lives as long as it: frozen out of
# the garbage collector's full collections, which in a run of thousands of partitions walked it
# again and again (a run's process: ~10 % less CPU at 4,000 partitions, BENCHMARKS.md). Handed
# back at exit, so that the interpreter's last collection frees them as it did (DuckDB's bindings
# report objects still alive then as leaks).
gc.freeze()
atexit.register(gc.unfreeze)
