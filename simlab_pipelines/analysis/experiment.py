"""One call for the summary step: every table, the selection and the answer of an experiment.

This is the glue the Dagster summary asset and the ``simlab sweep`` CLI are meant to call; each
piece is also usable on its own (see the package docstring).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from simlab_pipelines.analysis.answer import answer as answer_sentence
from simlab_pipelines.analysis.answer import best_sentence
from simlab_pipelines.analysis.comparisons import COMPARISON_COLUMNS, compare
from simlab_pipelines.analysis.frames import aligned_samples, check_observations, samples
from simlab_pipelines.analysis.intervals import summarise
from simlab_pipelines.analysis.selection import (
    Subset,
    TwoStageSelection,
    subset_selection,
    two_stage_selection,
)

# The DuckDB ``summary`` table of DESIGN.md (``summarise`` adds relative_half_width).
SUMMARY_TABLE_COLUMNS = ("experiment", "config_key", "metric", "n", "mean", "stddev", "ci_low",
                         "ci_high", "half_width", "confidence")


@dataclass(frozen=True)
class ExperimentAnalysis:
    """Everything the summary step stores or shows for one experiment."""

    experiment: str
    summary: pl.DataFrame            # intervals.summarise (with relative_half_width)
    comparisons: pl.DataFrame        # comparisons.compare (with stddev, half_width)
    subset: Subset | None            # configurations that cannot be ruled out on the objective
    selection: TwoStageSelection | None  # indifference-zone selection, when a zone is given
    answer: str | None               # the plain sentences (None without an objective metric)

    def tables(self) -> dict[str, pl.DataFrame]:
        """The DuckDB tables with exactly their contract columns: ``summary`` and ``comparisons``."""
        return {"summary": self.summary.select(SUMMARY_TABLE_COLUMNS),
                "comparisons": self.comparisons.select(COMPARISON_COLUMNS)}


def analyse_experiment(observations: pl.DataFrame, *, experiment: str, baseline: str | None,
                       confidence: float = 0.95, objective_metric: str | None = None,
                       minimize: bool = True, indifference_zone: float | None = None,
                       common_random_numbers: bool = True, question: str | None = None,
                       configurations: Mapping[str, Mapping[str, Any]] | None = None,
                       all_pairs: bool = False, unit: str = "",
                       n0: int | None = None) -> ExperimentAnalysis:
    """Summary, comparisons, selection and answer for ``experiment``'s observations.

    ``baseline``: the baseline config_key; without one the comparisons (and the answer) are
    against the best configuration on the objective, and without an objective either every pair
    is compared. ``objective_metric`` and ``minimize``: what "best"
    means (no selection or answer without it). ``indifference_zone``: also run the two-stage
    selection (its ``required`` says how many replications each configuration needs; ``best``
    is set once they exist). ``common_random_numbers``: whether the experiment used CRN, which
    chooses the paired procedures for selection. ``configurations``: config_key -> parameters,
    so that the answer can say what each configuration changes. ``n0``: the first stage of the
    two-stage selection (default: the fewest replications any configuration has). A baseline
    without observations yet gives no comparisons and no answer (rather than an error).
    """
    frame = check_observations(observations).filter(pl.col("experiment") == experiment)
    if frame.height == 0:
        raise ValueError(f"experiment {experiment!r}: no observations")
    summary = summarise(frame, confidence)
    observed = set(frame["config_key"].unique().to_list())
    pending = baseline is not None and baseline not in observed
    subset = selection = text = None
    if objective_metric is not None:
        if common_random_numbers:
            _, data = aligned_samples(frame, objective_metric)
        else:
            data = samples(frame, objective_metric)
        if len(data) >= 2 and all(len(v) >= 2 for v in data.values()):
            subset = subset_selection(data, confidence=confidence, minimize=minimize,
                                      common_random_numbers=common_random_numbers)
            if indifference_zone is not None:
                shortest = min(len(v) for v in data.values())
                selection = two_stage_selection(data, indifference_zone=indifference_zone,
                                                pstar=confidence, minimize=minimize,
                                                common_random_numbers=common_random_numbers,
                                                n0=min(n0, shortest) if n0 else None)
    # Against the baseline; without one, against the best on the objective; else every pair.
    reference, against = "the baseline", baseline
    if against is None and subset is not None:
        reference, against = "the best configuration", subset.best
    if pending:
        comparisons = compare(frame.head(0), None, all_pairs=True)
    elif all_pairs or against is None:
        comparisons = compare(frame, against, all_pairs=True, confidence=confidence)
    else:
        comparisons = compare(frame, against, confidence=confidence)
    if objective_metric is not None and against is not None and not pending:
        rows = comparisons.filter((pl.col("metric") == objective_metric)
                                  & (pl.col("baseline_key") == against))
        if rows.height:
            text = answer_sentence(rows, objective_metric, minimize=minimize,
                                   question=question, baseline=against, selection=subset,
                                   configurations=configurations, unit=unit,
                                   reference=reference)
            if selection is not None and selection.best:  # the two-stage guarantee too
                text += " " + best_sentence(selection, objective_metric, minimize)
    return ExperimentAnalysis(experiment, summary, comparisons, subset, selection, text)
