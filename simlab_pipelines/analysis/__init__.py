"""Statistical analysis of simulation experiments: pure functions over numpy, scipy and polars.

Called by the summary asset and the ``simlab sweep`` CLI; nothing here imports Dagster.

- ``intervals``: t confidence intervals, the ``summary`` table (``summarise``).
- ``comparisons``: paired (CRN) and unpaired differences to a baseline: the ``comparisons`` table.
- ``sequential``: how many replications each configuration needs for a relative precision.
- ``warmup``: MSER-5 warm-up suggestion from the engine's time series.
- ``selection``: Rinott / Bonferroni-CRN two-stage selection of the best, subset selection,
  and the recommendation (the cheapest configuration within the indifference zone of the best).
- ``answer``: the plain-sentence answer; ``plots``/``report``: PNG figures, the HTML report.
- ``experiment``: ``analyse_experiment``, all of the above for one experiment in one call.
"""

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
from simlab_pipelines.analysis.intervals import SUMMARY_COLUMNS, Interval, summarise, t_interval
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
