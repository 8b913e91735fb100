"""Experiment definitions: load, validate and resolve ``experiments/<name>.yaml``.

An experiment names a model, the parameters fixed for every configuration, and either a full
factorial (``factors``) or an explicit list (``configurations``) of the values that vary. Loading
checks everything the engine would later reject (unknown keys at any level, strict types, unknown
models, parameters and metrics, bounds, duplicates, the baseline) and reports every problem with
the file, the field path and the reason, e.g.::

    experiments/bad.yaml: factors.tables[1]: parameter 'tables' = 0 must be >= 1 (line 9)

Each resolved configuration gets a key derived from its values (``tables-8_waiters-3``), never
from its position, so adding or reordering configurations never renames results.

One module per concern: ``errors`` (problems by field path), ``keys`` (configuration keys),
``spec`` (the schema), ``resolve`` (checks against the model, configurations, baseline), ``load``
(YAML with line numbers, directories of files). No Dagster here: the assets import this package,
not the other way round.
"""

from simlab_pipelines.experiments.errors import ExperimentError, format_path
from simlab_pipelines.experiments.keys import Configuration, config_key
from simlab_pipelines.experiments.load import (
    EXPERIMENTS_DIR_ENV,
    experiments_dir,
    load_experiment,
    load_experiments,
    parse_experiment,
)
from simlab_pipelines.experiments.spec import ExperimentSpec, Objective, Precision

__all__ = [
    "EXPERIMENTS_DIR_ENV",
    "Configuration",
    "ExperimentError",
    "ExperimentSpec",
    "Objective",
    "Precision",
    "config_key",
    "experiments_dir",
    "format_path",
    "load_experiment",
    "load_experiments",
    "parse_experiment",
]
