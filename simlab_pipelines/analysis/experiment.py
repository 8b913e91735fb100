"""One call for the summary step: every table, the selection and the answer of an experiment.

This is the glue the Dagster summary asset and the ``simlab sweep`` CLI are meant to call; each
piece is also usable on its own (see the package docstring).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from simlab_pipelines.analysis.answer import (
    TODAY,
    Words,
    best_sentence,
    comparison_text,
    missing_text,
    recommendation_text,
    statistics_lead,
    undefined_text,
    unstable_text,
)
from simlab_pipelines.analysis.answer import answer as answer_sentence
from simlab_pipelines.analysis.comparisons import COMPARISON_COLUMNS, compare
from simlab_pipelines.analysis.constraints import Feasibility, Limit, frame_feasibility
from simlab_pipelines.analysis.frames import aligned_samples, check_observations, defined, samples
from simlab_pipelines.analysis.intervals import summarise
from simlab_pipelines.analysis.selection import (
    Recommendation,
    Subset,
    TwoStageSelection,
    recommend,
    subset_selection,
    two_stage_selection,
)
from simlab_pipelines.analysis.units import format_difference

# The DuckDB ``summary`` table of DESIGN.md, and how many replications left the metric undefined
# (``summarise`` adds relative_half_width).
SUMMARY_TABLE_COLUMNS = ("experiment", "config_key", "metric", "n", "mean", "stddev", "ci_low",
                         "ci_high", "half_width", "confidence", "undefined")


@dataclass(frozen=True)
class ExperimentAnalysis:
    """Everything the summary step stores or shows for one experiment."""

    experiment: str
    summary: pl.DataFrame            # intervals.summarise (relative_half_width; n = 0: no value)
    comparisons: pl.DataFrame        # comparisons.compare (with stddev, half_width)
    subset: Subset | None            # configurations that cannot be ruled out on the objective
    selection: TwoStageSelection | None  # indifference-zone selection, when a zone is given
    answer: str | None               # the plain sentences (None without an objective metric)
    recommendation: Recommendation | None = None  # what to act on (with an objective)
    feasibility: Feasibility | None = None  # with constraints: each configuration's status

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
                       n0: int | None = None, units: Mapping[str, str] | None = None,
                       cost_metric: str | None = None,
                       tradeoffs: Sequence[str] = (),
                       compare_pairs: bool = True,
                       constraints: Sequence[Limit] = (),
                       descriptions: Mapping[str, str] | None = None,
                       missing: Mapping[str, tuple[int, int]] | None = None,
                       unstable: Mapping[str, str] | None = None,
                       precision: str | None = None,
                       parameter_units: Mapping[str, str] | None = None) -> ExperimentAnalysis:
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
    ``compare_pairs=False``: no comparisons at all when there is neither a baseline nor an
    objective (a design's points sample the factor space: they are not alternatives).

    The answer's first paragraph is the recommendation (``selection.recommend``): among the
    configurations within the indifference zone of the best (without a zone: those subset
    selection keeps; all, when none differs significantly from the baseline), the cheapest by
    ``cost_metric`` (a metric or response, lower is cheaper), else the one changing the fewest
    parameters from the baseline; with its evidence and its ``tradeoffs`` (other metrics or
    responses, against the baseline). ``units``: metric -> unit, shown with the numbers
    (``unit`` is the objective's, for callers that give only that one).

    ``constraints``: each configuration's status on each (``analysis.constraints``, Bonferroni
    over the configurations observed), and the recommendation is chosen among the feasible ones
    only (none when no configuration is shown feasible: the answer says which comes closest).

    ``descriptions``: metric -> what it is in words (the answer names metrics by them);
    ``missing``: config_key -> (replications missing, wanted), said in the answer (a
    configuration with none is not in it); ``unstable``: config_key -> what keeps growing over
    its run, said in the answer. Without an objective but with a baseline, the answer says what
    differs significantly from the baseline on the ``tradeoffs`` (``answer.comparison_text``).
    ``precision``: how the number of replications was chosen, in words, for the analysts'
    paragraph. ``parameter_units``: parameter -> unit, for the settings' values in the answer.
    """
    units = dict(units or {})
    if objective_metric is not None and unit and objective_metric not in units:
        units[objective_metric] = unit.strip()
    everything = check_observations(observations, keep_undefined=True).filter(
        pl.col("experiment") == experiment)
    if everything.height == 0:
        raise ValueError(f"experiment {experiment!r}: no observations")
    # NaN: undefined in that replication (frames' rule): counted in the summary table (a
    # configuration with no value at all keeps its rows, n = 0), left out of everything else.
    table = summarise(everything, confidence)
    summary = table.filter(pl.col("n") > 0)
    frame = everything.filter(defined())
    observed = set(frame["config_key"].unique().to_list())
    feasibility = (frame_feasibility(frame, constraints, keys=sorted(observed))
                   if constraints else None)
    pending = baseline is not None and baseline not in observed
    subset = selection = text = None
    if objective_metric is not None and objective_metric in summary["metric"]:
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
    reference, against = TODAY, baseline
    if against is None and subset is not None:
        reference, against = "the best configuration", subset.best
    if pending or (against is None and not all_pairs and not compare_pairs):
        comparisons = compare(frame.head(0), None, all_pairs=True)
    elif all_pairs or against is None:
        comparisons = compare(frame, against, all_pairs=True, confidence=confidence)
    else:
        comparisons = compare(frame, against, confidence=confidence)
    parameter_units = dict(parameter_units or {})
    words = Words(configurations or {}, baseline, units, descriptions or {}, parameter_units)
    said = [objective_metric] if objective_metric is not None else []
    caveats = [c for c in (unstable_text(unstable or {}, words,
                                         _run_dependent(summary, objective_metric, unstable)),
                           missing_text(missing or {}, words),
                           undefined_text(table, [*said, *tradeoffs], words)) if c]
    recommendation = None
    if objective_metric is not None and against is not None and not pending:
        rows = comparisons.filter((pl.col("metric") == objective_metric)
                                  & (pl.col("baseline_key") == against))
        if rows.height:
            recommendation, nothing = _recommend(
                summary, rows, objective_metric, minimize=minimize,
                indifference_zone=indifference_zone, subset=subset, baseline=baseline,
                configurations=configurations, cost_metric=cost_metric,
                feasible=feasibility.feasible if feasibility is not None else None)
            versus = (compare(frame, recommendation.choice, confidence=confidence,
                              metrics=[objective_metric, *tradeoffs])
                      if recommendation is not None else None)
            analysed, versus_key, versus_words = rows, against, reference
            if (feasibility is not None and baseline is None and versus is not None
                    and recommendation.choice != against):
                # The best sample mean is not shown feasible: the analysts' differences are
                # against the recommendation (the best of the feasible), not against it.
                analysed = versus.filter((pl.col("metric") == objective_metric)
                                         & (pl.col("baseline_key") == recommendation.choice))
                versus_key, versus_words = recommendation.choice, "the recommendation"
            text = _statistics(summary, analysed, objective_metric, minimize=minimize,
                               against=versus_key, reference=versus_words, subset=subset,
                               selection=selection, recommendation=recommendation,
                               configurations=configurations, units=units,
                               precision=precision)
            if recommendation is not None:
                first = recommendation_text(
                    recommendation, metric=objective_metric, summary=summary,
                    comparisons=comparisons, baseline=baseline, configurations=configurations,
                    units=units, tradeoffs=tradeoffs, nothing_significant=nothing,
                    cost_metric=cost_metric, descriptions=descriptions, versus_choice=versus,
                    caveats=caveats, unstable=set(unstable or {}),
                    parameter_units=parameter_units)
                text = first + "\n\n" + text
            elif caveats:
                text = " ".join(caveats) + "\n\n" + text
            if feasibility is not None:
                text = _with_constraints(text, feasibility, recommendation, summary, units,
                                         configurations, objective_metric, minimize,
                                         descriptions, parameter_units)
    elif objective_metric is None and baseline is not None and comparisons.height:
        metrics = list(tradeoffs) or sorted(set(comparisons["metric"].to_list()))[:4]
        first = comparison_text(comparisons, metrics, baseline=baseline,
                                configurations=configurations, units=units,
                                descriptions=descriptions, caveats=caveats,
                                unstable=set(unstable or {}), parameter_units=parameter_units)
        if first:
            text = first + "\n\n" + _statistics_lead(summary, comparisons, metrics[0],
                                                      confidence, precision)
    if text is None and caveats:  # e.g. today's setting has no results: no comparison at all
        text = " ".join(caveats)
        if pending:
            text += f" Nothing is compared with {TODAY} until it has results."
    return ExperimentAnalysis(experiment, table, comparisons, subset, selection, text,
                              recommendation, feasibility)


def _run_dependent(summary: pl.DataFrame, metric: str | None,
                   unstable: Mapping[str, str] | None) -> str | None:
    """``metric``, unless it is the same in every replication of the unstable configurations (a
    cost of their parameters alone, which no run length changes): the unstable sentence then
    speaks of their results, not of it."""
    if metric is None or not unstable:
        return metric
    spread = summary.filter((pl.col("metric") == metric)
                            & pl.col("config_key").is_in(list(unstable)))["stddev"]
    return None if spread.len() and bool((spread.fill_null(0.0) == 0.0).all()) else metric


def _statistics_lead(summary: pl.DataFrame, comparisons: pl.DataFrame, metric: str,
                     confidence: float, precision: str | None = None) -> str:
    counts = summary.filter(pl.col("metric") == metric)["n"].to_list()
    paired = bool(comparisons.filter(pl.col("metric") == metric)["paired"].any())
    return statistics_lead(confidence=confidence, paired=paired, counts=counts,
                           precision=precision)


def _statistics(summary: pl.DataFrame, rows: pl.DataFrame, metric: str, *, minimize: bool,
                against: str, reference: str, subset: Subset | None,
                selection: TwoStageSelection | None, recommendation: Recommendation | None,
                configurations: Mapping[str, Mapping[str, Any]] | None,
                units: Mapping[str, str], precision: str | None = None) -> str:
    """The answer's second paragraph, for analysts: intervals and pairing, the differences
    against the reference, the screening and the two-stage selection with their constants."""
    unit = units.get(metric)
    chosen = recommendation.choice if recommendation else None
    parts = [_statistics_lead(summary, rows, metric, float(rows["confidence"][0]), precision),
             answer_sentence(rows, metric, minimize=minimize, baseline=against,
                             configurations=configurations, unit=unit or "",
                             reference=reference)]
    if subset is not None:
        parts.append(best_sentence(subset, metric, minimize, recommended=chosen, unit=unit,
                                   reason=_why_chosen(recommendation, subset.best, unit)))
    if selection is not None and selection.best:  # the two-stage guarantee too
        parts.append(best_sentence(selection, metric, minimize, unit=unit, recommended=chosen,
                                   reason=_why_chosen(recommendation, selection.best, unit)))
    return " ".join(p for p in parts if p)


def _why_chosen(recommendation: Recommendation | None, best: str,
                unit: str | None) -> str | None:
    """Why the recommendation is not ``best`` (a selection's pick), for the analysts' paragraph:
    it is the best of the feasible, or within the indifference zone of ``best``, or among those
    no different from today's setting."""
    if recommendation is None or recommendation.choice == best:
        return None
    rec, means = recommendation, recommendation.means
    if rec.feasible is not None and best not in rec.feasible:
        return "is the best of the configurations shown to meet every constraint"
    zone = rec.indifference_zone
    if zone is not None and best in means and abs(means[rec.choice] - means[best]) <= zone:
        return (f"is within the indifference zone of {format_difference(zone, 0.0, unit)} of it "
                f"(a smaller difference is not worth acting on) and preferred for "
                f"{'its cost' if rec.reason == 'cost' else 'changing fewer settings'}")
    return "is preferred among the configurations that cannot be told apart from it"


def _with_constraints(text: str, feasibility: Feasibility, recommendation: Recommendation | None,
                      summary: pl.DataFrame, units: Mapping[str, str],
                      configurations: Mapping[str, Mapping[str, Any]] | None,
                      metric: str, minimize: bool,
                      descriptions: Mapping[str, str] | None = None,
                      parameter_units: Mapping[str, str] | None = None) -> str:
    """The answer with what the constraints say: after the recommendation's paragraph, or first
    when nothing is feasible (so nothing is recommended)."""
    from simlab_pipelines.analysis.search_answer import constraints_text

    means = {k: m for k, m in summary.filter(pl.col("metric") == metric)
             .select("config_key", "mean").iter_rows() if m is not None}
    said = constraints_text(feasibility, recommended=recommendation.choice if recommendation
                            else None, summary=summary, units=units,
                            configurations=configurations, objective=means, minimize=minimize,
                            objective_metric=metric, descriptions=descriptions,
                            parameter_units=parameter_units)
    if recommendation is None:
        return said + "\n\n" + text
    first, _, rest = text.partition("\n\n")
    # on the recommendation's own line, before its effects' and the options' lines (after the
    # last of them it read as if about that line's configuration)
    line, newline, lines = first.partition("\n")
    return line + " " + said + newline + lines + ("\n\n" + rest if rest else "")


def _recommend(summary: pl.DataFrame, rows: pl.DataFrame, metric: str, *, minimize: bool,
               indifference_zone: float | None, subset: Subset | None, baseline: str | None,
               configurations: Mapping[str, Mapping[str, Any]] | None,
               cost_metric: str | None,
               feasible: Sequence[str] | None = None) -> tuple[Recommendation | None, bool]:
    """The recommendation on ``metric`` and whether nothing differs significantly from the
    baseline (``rows``: the comparisons on ``metric`` against the baseline or the best); with
    ``feasible`` (constraints) only those can be recommended, and none when it is empty."""
    means = {k: m for k, m in summary.filter(pl.col("metric") == metric)
             .select("config_key", "mean").iter_rows() if m is not None}
    if len(means) < 2 or (feasible is not None and not set(feasible) & set(means)):
        return None, False
    cost = None
    if cost_metric is not None:
        cost = dict(summary.filter(pl.col("metric") == cost_metric)
                    .select("config_key", "mean").iter_rows())
    changes = None
    if baseline is not None and configurations and baseline in configurations:
        base = configurations[baseline]
        changes = {k: sum(1 for n, v in c.items() if base.get(n) != v)
                   + sum(1 for n in base if n not in c) for k, c in configurations.items()}
    nothing = False
    if baseline is not None:
        paired = bool(rows["paired"].any())
        against = rows.filter((pl.col("paired") == paired) & (pl.col("baseline_key") == baseline))
        nothing = against.height > 0 and bool(
            ((against["ci_low"] <= 0) & (against["ci_high"] >= 0)).all())
    rec = recommend(means, minimize=minimize, indifference_zone=indifference_zone,
                    keep=subset.keep if subset else None, cost=cost, changes=changes,
                    all_equivalent=nothing, feasible=feasible)
    return rec, nothing
