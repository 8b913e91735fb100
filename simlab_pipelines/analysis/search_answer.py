"""The answer of an experiment with constraints, of a search and of a breaking-point search, in
the user's terms: plain words first (what to choose, what it costs, which limits it meets, with
units on every number), the statistics in a second paragraph (how it was found, the guarantee).

The numbers come from the frames and results of ``analysis.constraints``, ``analysis.cleanup`` and
``analysis.threshold``; formatting reuses ``analysis.answer`` (``format_quantity``: a value with
its half-width rounded to the precision the half-width supports, a ``fraction`` as a percentage,
a currency before the number).
"""

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from simlab_pipelines.analysis.answer import (
    describe_configuration,
    format_quantity,
    format_value,
    humanise,
)
from simlab_pipelines.analysis.constraints import (
    FEASIBLE,
    INFEASIBLE,
    UNDECIDED,
    ConstraintStatus,
    Feasibility,
    Limit,
    closest_to_feasible,
)


def percent(confidence: float) -> str:
    """``95 %`` for 0.95."""
    return f"{confidence * 100:g} %"


def limit_text(limit: Limit, unit: str | None) -> str:
    """``at most 0.2 s``, ``at least 99 %``, ``between 1 and 2 s``."""
    def number(value: float) -> str:
        return format_quantity(value, 0.0, unit)

    if limit.min is not None and limit.max is not None:
        return f"between {number(limit.min)} and {number(limit.max)}"
    if limit.max is not None:
        return f"at most {number(limit.max)}"
    return f"at least {number(limit.min)}"


def _estimate(summary: pl.DataFrame | None, key: str, metric: str,
              fallback: ConstraintStatus | None = None) -> tuple[float, float]:
    """(mean, two-sided half-width at the file's confidence) from the summary table."""
    if summary is not None:
        rows = summary.filter((pl.col("config_key") == key) & (pl.col("metric") == metric))
        if rows.height:
            half = rows["half_width"][0]
            return float(rows["mean"][0]), (math.nan if half is None else float(half))
    if fallback is not None:
        return fallback.mean, math.nan
    return math.nan, math.nan


def constraint_clause(status: ConstraintStatus, unit: str | None,
                      summary: pl.DataFrame | None = None) -> str:
    """``p99 latency 0.18 ± 0.01 s (limit: at most 0.2 s, met)``."""
    mean, half = _estimate(summary, status.config_key, status.limit.metric, status)
    word = {FEASIBLE: "met", INFEASIBLE: "missed", UNDECIDED: "too close to tell"}[status.status]
    return (f"{humanise(status.limit.metric)} {format_quantity(mean, half, unit)} "
            f"(limit: {limit_text(status.limit, unit)}, {word})")


def miss_clause(status: ConstraintStatus, unit: str | None,
                summary: pl.DataFrame | None = None) -> str:
    """``p99 latency by 0.03 s (0.23 ± 0.01 s against at most 0.2 s)``."""
    mean, half = _estimate(summary, status.config_key, status.limit.metric, status)
    if not half > 0:  # no interval: round to 3 significant digits of the mean
        half = abs(mean) * 1e-3 if mean else math.nan
    return (f"{humanise(status.limit.metric)} by {format_value(status.miss, half, unit)} "
            f"({format_quantity(mean, half, unit)} against {limit_text(status.limit, unit)})")


def _label(key: str, configurations: Mapping[str, Mapping[str, Any]] | None) -> str:
    config = (configurations or {}).get(key)
    return f"{describe_configuration(config)} ({key})" if config else key


def _confidence_words(result: Feasibility) -> str:
    levels = sorted({s.limit.confidence for s in next(iter(result.statuses.values()), ())})
    which = " / ".join(percent(c) for c in levels) or "the file's"
    together = (f", simultaneously for the {result.simultaneous} configurations"
                if result.simultaneous > 1 else "")
    return f"each limit is shown with one-sided {which} confidence{together}"


def constraints_text(result: Feasibility, *, recommended: str | None,
                     summary: pl.DataFrame | None = None,
                     units: Mapping[str, str] | None = None,
                     configurations: Mapping[str, Mapping[str, Any]] | None = None,
                     objective: Mapping[str, float] | None = None, minimize: bool = True,
                     objective_metric: str | None = None, max_items: int = 3) -> str:
    """What the constraints say about an experiment's configurations: how many meet them, the
    recommended one's values against each limit, the better-looking ones that miss a limit (and
    which), and when none meets them all, the one closest to meeting them and by how much each
    limit is missed."""
    units = dict(units or {})
    overall = result.overall
    total = len(overall)
    counts = {s: sum(1 for v in overall.values() if v == s) for s in (FEASIBLE, INFEASIBLE,
                                                                       UNDECIDED)}
    sentences = []
    if recommended is not None and recommended in result.statuses:
        clauses = "; ".join(constraint_clause(s, units.get(s.limit.metric), summary)
                            for s in result.statuses[recommended])
        sentences.append(f"It meets every constraint: {clauses}.")
    elif counts[FEASIBLE] == 0:
        closest = closest_to_feasible(result, objective, minimize)
        limits_said = "; ".join(f"{humanise(lim.metric)} "
                                f"{limit_text(lim, units.get(lim.metric))}"
                                for lim in result.limits)
        sentences.append(f"No configuration is shown to meet every constraint ({limits_said}), "
                         "so none is recommended.")
        if closest is not None:
            missed = result.missed(closest)
            parts = [miss_clause(s, units.get(s.limit.metric), summary)
                     for s in missed if s.miss > 0]
            close = [humanise(s.limit.metric) for s in missed if not s.miss > 0]
            text = f"Closest to meeting them: {_label(closest, configurations)}"
            if parts:
                text += ", which misses " + "; ".join(parts)
            if close:
                text += (", and is within noise of the limit on " + ", ".join(close))
            sentences.append(text + ".")
    counted = (f"Only the {counts[FEASIBLE]} of {total} configurations shown to meet every "
               "constraint were considered" if recommended is not None else
               f"{counts[FEASIBLE]} of {total} configurations are shown to meet every constraint")
    rest = []
    if counts[INFEASIBLE]:
        verb = "misses" if counts[INFEASIBLE] == 1 else "miss"
        rest.append(f"{counts[INFEASIBLE]} {verb} at least one")
    if counts[UNDECIDED]:
        rest.append(f"{counts[UNDECIDED]} {'is' if counts[UNDECIDED] == 1 else 'are'} too close "
                    "to a limit to tell")
    sentences.append(counted + (" (" + ", ".join(rest) + ")" if rest else "")
                     + f"; {_confidence_words(result)}.")
    if objective and recommended is not None:
        sentences.append(_better_but_missing(result, recommended, objective, minimize,
                                             objective_metric, units, configurations, max_items))
    return " ".join(s for s in sentences if s)


def _better_but_missing(result: Feasibility, recommended: str, objective: Mapping[str, float],
                        minimize: bool, metric: str | None, units: Mapping[str, str],
                        configurations: Mapping[str, Mapping[str, Any]] | None,
                        max_items: int) -> str | None:
    """The configurations with a better objective mean than the recommendation that miss (or may
    miss) a constraint, and which."""
    sign = 1.0 if minimize else -1.0
    mine = objective.get(recommended, math.nan)
    better = sorted((k for k, v in objective.items()
                     if k != recommended and k in result.statuses and math.isfinite(v)
                     and sign * (v - mine) < 0 and result.overall[k] != FEASIBLE),
                    key=lambda k: (sign * objective[k], k))
    if not better:
        return None
    parts = []
    for key in better[:max_items]:
        missed = result.missed(key)
        words = ", ".join(humanise(s.limit.metric) + ("" if s.status == INFEASIBLE
                                                      else " (too close to tell)")
                          for s in missed)
        parts.append(f"{_label(key, configurations)} misses {words}")
    more = len(better) - len(parts)
    name = humanise(metric) if metric else "the objective"
    return (f"Better on {name} but not shown to meet every constraint: " + "; ".join(parts)
            + (f"; and {more} more" if more else "") + ".")


def first_words(result: Feasibility) -> str:
    """The phrase that says the recommendation is among the feasible configurations."""
    return (f"Among the {len(result.feasible)} configurations that meet every constraint, "
            if len(result.feasible) != 1 else "The only configuration that meets every "
            "constraint: ")


__all__ = ["constraint_clause", "constraints_text", "first_words", "limit_text", "miss_clause",
           "percent"]
