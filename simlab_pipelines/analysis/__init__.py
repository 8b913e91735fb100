"""Statistical analysis of simulation experiments: pure functions over numpy, scipy and polars.

Called by the summary asset and the ``simlab sweep`` CLI; nothing here imports Dagster.

- ``intervals``: t confidence intervals, the ``summary`` table (``summarise``).
- ``comparisons``: paired (CRN) and unpaired differences to a baseline: the ``comparisons`` table.
- ``sequential``: how many replications each configuration needs for a relative precision.
- ``warmup``: MSER-5 warm-up suggestion from the engine's time series.
- ``stationarity``: the steady-state trend test on the same series (a queue that never stops
  growing).
- ``selection``: Rinott / Bonferroni-CRN two-stage selection of the best, subset selection,
  and the recommendation (the cheapest configuration within the indifference zone of the best).
- ``answer``: the plain-sentence answer (``words``: configurations and metrics as said;
  ``units``: numbers with their units; ``caveats``: what the answer cannot speak for);
  ``plots``/``report``: the figures, the HTML report.
- ``experiment``: ``analyse_experiment``, all of the above for one experiment in one call.

The names below are loaded on first use (PEP 562): scipy and matplotlib take ~0.3-0.5 s to
import, and processes that never analyse (a sweep's start, a run of simulations, the sensors,
the code server) import this package only through modules that use it in a few functions.
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simlab_pipelines.analysis.answer import answer, format_estimate
    from simlab_pipelines.analysis.comparisons import COMPARISON_COLUMNS, compare, crn_effect
    from simlab_pipelines.analysis.experiment import (
        SUMMARY_TABLE_COLUMNS,
        ExperimentAnalysis,
        analyse_experiment,
    )
    from simlab_pipelines.analysis.frames import (
        OBSERVATION_COLUMNS,
        aligned_samples,
        check_observations,
        samples,
    )
    from simlab_pipelines.analysis.intervals import (
        SUMMARY_COLUMNS,
        Interval,
        summarise,
        t_interval,
    )
    from simlab_pipelines.analysis.plots import ci_plot, differences_plot, markdown_table
    from simlab_pipelines.analysis.report import render_report, write_report
    from simlab_pipelines.analysis.selection import (
        Subset,
        TwoStageSelection,
        rinott_h,
        select_best,
        subset_selection,
        two_stage_selection,
    )
    from simlab_pipelines.analysis.sequential import ReplicationPlan, is_finished, next_round
    from simlab_pipelines.analysis.warmup import WarmupSuggestion, mser_truncation, suggest_warmup

# Public name -> the submodule that defines it.
_SOURCES = {
    "COMPARISON_COLUMNS": "comparisons",
    "OBSERVATION_COLUMNS": "frames",
    "SUMMARY_COLUMNS": "intervals",
    "SUMMARY_TABLE_COLUMNS": "experiment",
    "ExperimentAnalysis": "experiment",
    "Interval": "intervals",
    "ReplicationPlan": "sequential",
    "Subset": "selection",
    "TwoStageSelection": "selection",
    "WarmupSuggestion": "warmup",
    "aligned_samples": "frames",
    "analyse_experiment": "experiment",
    "answer": "answer",
    "check_observations": "frames",
    "ci_plot": "plots",
    "compare": "comparisons",
    "crn_effect": "comparisons",
    "differences_plot": "plots",
    "format_estimate": "answer",
    "is_finished": "sequential",
    "markdown_table": "plots",
    "mser_truncation": "warmup",
    "next_round": "sequential",
    "render_report": "report",
    "rinott_h": "selection",
    "samples": "frames",
    "select_best": "selection",
    "subset_selection": "selection",
    "suggest_warmup": "warmup",
    "summarise": "intervals",
    "t_interval": "intervals",
    "two_stage_selection": "selection",
    "write_report": "report",
}
_SUBMODULES = frozenset({"answer", "caveats", "comparisons", "experiment", "frames", "intervals",
                         "plots", "report", "selection", "sensitivity", "sequential",
                         "stationarity", "svg", "units", "warmup", "words"})

__all__ = [
    "COMPARISON_COLUMNS",
    "OBSERVATION_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUMMARY_TABLE_COLUMNS",
    "ExperimentAnalysis",
    "Interval",
    "ReplicationPlan",
    "Subset",
    "TwoStageSelection",
    "WarmupSuggestion",
    "aligned_samples",
    "analyse_experiment",
    "answer",
    "check_observations",
    "ci_plot",
    "compare",
    "crn_effect",
    "differences_plot",
    "format_estimate",
    "is_finished",
    "markdown_table",
    "mser_truncation",
    "next_round",
    "render_report",
    "rinott_h",
    "samples",
    "select_best",
    "subset_selection",
    "suggest_warmup",
    "summarise",
    "t_interval",
    "two_stage_selection",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first access, then cache the name here."""
    source = _SOURCES.get(name)
    if source is None:
        if name in _SUBMODULES:  # ``analysis.plots`` etc., as after an eager import
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{source}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type: the import system binds every imported submodule on its
    package, and the submodule ``answer`` must not hide the function ``answer`` named here."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _SOURCES.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
