"""The code location: every valid experiment file in SIMLAB_EXPERIMENTS_DIR (default
`experiments/`) becomes its spec, replications and summary assets, with jobs, checks, the file
sensor, the nightly validation schedule and the automation that refreshes summaries.

    dagster dev -m simlab_pipelines.definitions
    dagster asset materialize -m simlab_pipelines.definitions \
        --select restaurant_staffing/replications --partition 'tables-8_waiters-3|0'
"""

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
