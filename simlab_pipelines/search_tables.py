"""A search's part of the summary: the DuckDB ``search`` and ``breaking_point`` tables, its answer
and recommendation, and its charts, from where the search stands (``search.progress``).

- ``search``: one row per evaluated configuration and stage: ``first`` (the search's own
  replications 0 .. R-1, with the screening statuses the clean-up chose its candidates by) and,
  for the clean-up's candidates, ``second`` (the fresh replications R .. N-1 that the
  recommendation rests on, with the final statuses). Columns: experiment, round, config_key,
  one column per factor, proposed_by, n, objective_mean, objective_half_width (two-sided t at the
  file's confidence), ``<constraint metric>_mean/_half_width/_status`` per constraint, stage; a
  threshold search has ``decision`` (within / beyond / unclear / pending) instead of statuses.
- ``breaking_point``: the threshold search's answer once it is decided.

The statistics are ``analysis.cleanup``'s, ``analysis.constraints``' and ``analysis.threshold``'s;
the sentences ``analysis.search_answer``'s; the charts ``analysis.search_plots``'. This module
only arranges them.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from simlab_pipelines.experiments import ExperimentSpec
from simlab_pipelines.search import Progress, file_constraints, replication_values

FIRST, SECOND = "first", "second"
CLEANUP = "clean-up"
# Table columns the factors' columns must not take (a factor named like one gets "factor_").
_FIXED_COLUMNS = {"experiment", "round", "config_key", "proposed_by", "n", "objective_mean",
                  "objective_half_width", "stage", "decision"}


@dataclass(frozen=True)
class SearchSummary:
    """What the summary stores and shows of a search."""

    tables: dict[str, pl.DataFrame]
    answer: str | None = None
    recommended: str | None = None
    charts: dict[str, bytes] = field(default_factory=dict)  # name -> SVG
    statuses: dict[str, str] = field(default_factory=dict)  # config_key -> screening status


def _column(name: str) -> str:
    return f"factor_{name}" if name in _FIXED_COLUMNS else name


def _interval(values: np.ndarray, confidence: float) -> tuple[int, float, float]:
    from simlab_pipelines.analysis.intervals import t_interval

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0, math.nan, math.nan
    found = t_interval(finite, confidence)
    return found.n, found.mean, found.half_width


def summarise_search(spec: ExperimentSpec, progress: Progress, observations: pl.DataFrame,
                     summary: pl.DataFrame | None = None) -> SearchSummary:
    """The ``search`` (and ``breaking_point``) tables, answer, recommendation and charts."""
    arrays = replication_values(spec, observations)
    if progress.threshold is not None:
        return _threshold(spec, progress, arrays)
    return _optimiser(spec, progress, arrays, summary)


def _in_progress(spec: ExperimentSpec, progress: Progress,
                 arrays: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """What a summary built before the search is over says (the answer comes at its end)."""
    replay = progress.replay
    simulations = sum(next(iter(v.values())).size for k, v in arrays.items()
                      if k in replay.round_of and v)
    if spec.search_space.threshold is not None:
        what = "the breaking point is decided"
    elif replay.finished:
        what = "the clean-up has checked its candidates again"
    else:
        what = "the search's rounds are over and its candidates are checked again"
    return (f"Search in progress: {len(replay.configurations)} configurations proposed in "
            f"{replay.rounds} round(s), {simulations:,} simulations so far. The answer comes once "
            f"{what}.")


def _factor_values(spec: ExperimentSpec, progress: Progress) -> dict[str, dict[str, Any]]:
    return {c.key: dict(c.varying) for c in progress.replay.configurations}


def _screening(spec: ExperimentSpec, progress: Progress,
               arrays: Mapping[str, Mapping[str, np.ndarray]]) -> Any:
    """Every evaluated configuration on its first stage (the clean-up's screening; before the
    clean-up, computed the same way on the configurations complete so far)."""
    if progress.cleanup is not None:
        return progress.cleanup.screening
    from simlab_pipelines.analysis.constraints import feasibility, limits

    first = {key: {m: v[:spec.replications] for m, v in arrays[key].items()}
             for key in progress.replay.first_stage if key in arrays}
    return feasibility(first, limits(file_constraints(spec), spec.confidence), simultaneous=1)


def _optimiser(spec: ExperimentSpec, progress: Progress,
               arrays: Mapping[str, Mapping[str, np.ndarray]],
               summary: pl.DataFrame | None) -> SearchSummary:
    space, replay, cleanup = spec.search_space, progress.replay, progress.cleanup
    metric, confidence, R = spec.objective.metric, spec.confidence, space.replications
    factors = _factor_values(spec, progress)
    screening = _screening(spec, progress, arrays)
    statuses = screening.overall if screening is not None else {}
    final = cleanup.final if cleanup is not None else None
    rows = []
    for config in replay.configurations:
        key = config.key
        values = arrays.get(key, {})
        objective = np.asarray(values.get(metric, np.empty(0)))
        base = {"experiment": spec.name, "round": replay.round_of.get(key),
                "config_key": key, **{_column(f): factors[key].get(f) for f in space.names}}
        first = _row(base, objective[:R], values, R, confidence, screening, key, space.method,
                     FIRST, spec)
        rows.append(first)
        if cleanup is not None and key in cleanup.candidates:
            total = cleanup.targets.get(key, objective.size)
            fresh = {m: np.asarray(v)[R:total] for m, v in values.items()}
            rows.append(_row(base, fresh.get(metric, np.empty(0)), fresh, None, confidence,
                             final, key, CLEANUP, SECOND, spec))
    table = pl.DataFrame(rows, schema_overrides=_schema(spec), infer_schema_length=None) \
        if rows else pl.DataFrame(schema=_schema(spec))
    answer, recommended = _in_progress(spec, progress, arrays), None
    if cleanup is not None and cleanup.done:
        from simlab_pipelines.analysis.search_answer import search_text
        from simlab_pipelines.experiments.responses import descriptions

        recommended = cleanup.recommended
        simulations = sum(np.asarray(v.get(metric, np.empty(0))).size
                          for k, v in arrays.items() if k in factors)
        answer = search_text(cleanup, metric=metric, configurations=factors,
                             units=spec.units(), evaluated=len(factors),
                             space_size=space.size, simulations=simulations,
                             search_simulations=len(factors) * R,
                             descriptions=descriptions(spec),  # the file's words, as a grid's
                             parameter_units=spec.parameter_units())
    charts = _optimiser_charts(spec, progress, arrays, statuses, factors, recommended)
    return SearchSummary({"search": table}, answer, recommended, charts, dict(statuses))


def _row(base: dict[str, Any], objective: np.ndarray, values: Mapping[str, np.ndarray],
         head: int | None, confidence: float, feasibility: Any, key: str, proposed_by: str,
         stage: str, spec: ExperimentSpec) -> dict[str, Any]:
    n, mean, half = _interval(np.asarray(objective, dtype=float), confidence)
    row = {**base, "proposed_by": proposed_by, "n": n, "objective_mean": mean,
           "objective_half_width": half}
    found = {s.limit.metric: s for s in (feasibility.statuses.get(key, ()) if feasibility
                                         is not None else ())}
    for c in file_constraints(spec):
        series = np.asarray(values.get(c.metric, np.empty(0)), dtype=float)
        _, c_mean, c_half = _interval(series[:head] if head is not None else series, confidence)
        status = found.get(c.metric)
        row[f"{c.metric}_mean"] = c_mean
        row[f"{c.metric}_half_width"] = c_half
        row[f"{c.metric}_status"] = status.status if status is not None else None
    row["stage"] = stage
    return row


def _schema(spec: ExperimentSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"experiment": pl.String, "round": pl.Int64, "config_key": pl.String,
                              "proposed_by": pl.String, "n": pl.Int64,
                              "objective_mean": pl.Float64, "objective_half_width": pl.Float64}
    for c in file_constraints(spec):
        schema |= {f"{c.metric}_mean": pl.Float64, f"{c.metric}_half_width": pl.Float64,
                   f"{c.metric}_status": pl.String}
    schema["stage"] = pl.String
    return schema


def important_factors(factors: Mapping[str, Mapping[str, Any]], means: Mapping[str, float],
                      names: Sequence[str], count: int = 2) -> list[str]:
    """The ``count`` factors whose values rank most closely with the objective's first-stage
    means (|Spearman's rho| over the evaluated configurations; a factor with one value last)."""
    keys = [k for k in factors if math.isfinite(means.get(k, math.nan))]

    def rho(name: str) -> float:
        xs = [factors[k].get(name) for k in keys]
        if len(keys) < 3 or any(not isinstance(x, int | float) for x in xs) or len(set(xs)) < 2:
            return -1.0
        a = np.argsort(np.argsort(np.asarray(xs, dtype=float)))
        b = np.argsort(np.argsort(np.asarray([means[k] for k in keys], dtype=float)))
        value = np.corrcoef(a, b)[0, 1]
        return float(abs(value)) if np.isfinite(value) else 0.0

    return sorted(names, key=lambda n: -rho(n))[:count]


def _optimiser_charts(spec: ExperimentSpec, progress: Progress,
                      arrays: Mapping[str, Mapping[str, np.ndarray]], statuses: Mapping[str, str],
                      factors: Mapping[str, Mapping[str, Any]], recommended: str | None
                      ) -> dict[str, bytes]:
    from simlab_pipelines.analysis.search_plots import configurations_chart, convergence_chart

    metric, R = spec.objective.metric, spec.replications
    means = {k: float(np.mean(arrays[k][metric][:R])) for k in progress.replay.first_stage
             if k in arrays}
    if not means:
        return {}
    points = [(progress.replay.round_of[k], means[k], statuses.get(k, "undecided"))
              for k in means]
    charts = {"convergence_plot": convergence_chart(
        points, metric=metric, unit=spec.units().get(metric),
        minimize=spec.objective.direction == "minimize")}
    names = important_factors(factors, means, spec.search_space.names)
    charts["configurations_plot"] = configurations_chart(
        {k: factors[k] for k in means}, statuses, x_factor=names[0],
        y_factor=names[1] if len(names) > 1 else None, recommended=recommended)
    return charts


def _threshold(spec: ExperimentSpec, progress: Progress,
               arrays: Mapping[str, Mapping[str, np.ndarray]]) -> SearchSummary:
    threshold, plan = spec.search_space.threshold, progress.threshold
    by_x = {float(p.x): p for p in plan.points}
    rows = []
    for config in progress.replay.configurations:
        key, x = config.key, config.varying[threshold.factor]
        values = np.asarray(arrays.get(key, {}).get(threshold.metric, np.empty(0)), dtype=float)
        values = values[:progress.targets.get(key, values.size)]
        n, mean, half = _interval(values, spec.confidence)
        point = by_x.get(float(x))
        rows.append({"experiment": spec.name, "round": progress.replay.round_of.get(key),
                     "config_key": key, _column(threshold.factor): x,
                     "proposed_by": "threshold", "n": n, "objective_mean": mean,
                     "objective_half_width": half,
                     "decision": point.status if point is not None else "pending",
                     "stage": FIRST})
    schema = {"experiment": pl.String, "round": pl.Int64, "config_key": pl.String,
              "proposed_by": pl.String, "n": pl.Int64, "objective_mean": pl.Float64,
              "objective_half_width": pl.Float64, "decision": pl.String, "stage": pl.String}
    tables = {"search": pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)
              if rows else pl.DataFrame(schema=schema)}
    answer, charts = _in_progress(spec, progress, arrays), {}
    result = plan.result.named(threshold.factor, threshold.metric) if plan.result else None
    if result is not None:
        from simlab_pipelines.analysis.search_answer import threshold_text

        tables["breaking_point"] = pl.DataFrame([{
            "experiment": spec.name, "factor": threshold.factor, "metric": threshold.metric,
            "limit": threshold.limit, "estimate": result.estimate, "ci_low": result.ci_low,
            "ci_high": result.ci_high, "confidence": result.confidence,
            "simulations": result.simulations, "status": result.status,
            "notes": " ".join(result.notes) or None}], schema={
            "experiment": pl.String, "factor": pl.String, "metric": pl.String,
            "limit": pl.Float64, "estimate": pl.Float64, "ci_low": pl.Float64,
            "ci_high": pl.Float64, "confidence": pl.Float64, "simulations": pl.Int64,
            "status": pl.String, "notes": pl.String})
        units = spec.units()
        factor_unit = spec.parameter_units().get(threshold.factor) or units.get(threshold.factor)
        answer = threshold_text(result, units=units, factor_unit=factor_unit,
                                points=len(plan.points),
                                common_random_numbers=spec.common_random_numbers,
                                decisions=plan.points)
    if plan.points:
        from simlab_pipelines.analysis.search_plots import threshold_chart

        charts["threshold_plot"] = threshold_chart(
            plan.points, result, factor=threshold.factor, metric=threshold.metric,
            limit=threshold.limit, unit=spec.units().get(threshold.metric))
    return SearchSummary(tables, answer, None, charts)


def report_sections(searched: SearchSummary | None) -> list[tuple[str, str]]:
    """(heading, HTML) sections of the HTML report: the search's charts and its table."""
    if searched is None:
        return []
    from simlab_pipelines.analysis.plots import img_tag
    from simlab_pipelines.analysis.report import html_table

    table = searched.tables["search"].drop("experiment")
    heading = "Breaking point" if "breaking_point" in searched.tables else "Search"
    parts = [img_tag(svg, name.replace("_", " ")) for name, svg in searched.charts.items()]
    parts.append(html_table(table, drop_constant=False))
    return [(heading, "\n".join(parts))]
