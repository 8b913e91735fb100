"""The answer of an experiment with constraints, of a search and of a breaking-point search, in
the user's terms: plain words first (what to choose, what it costs, which limits it meets, with
units on every number), the statistics in a second paragraph (how it was found, the guarantee).

The numbers come from the frames and results of ``analysis.constraints``, ``analysis.cleanup`` and
``analysis.threshold``; they are written as the rest of the answer writes them
(``analysis.units``: a value with its half-width rounded to the precision the half-width supports,
a ``fraction`` as a percentage, a currency before the number, ``$/day`` as "a day"), and
configurations and metrics are named as it names them (``analysis.words.Words``: "24 tables,
4 waiters", a metric by its description when the file gives one).
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from simlab_pipelines.analysis.cleanup import CleanUp
from simlab_pipelines.analysis.constraints import (
    FEASIBLE,
    INFEASIBLE,
    UNDECIDED,
    ConstraintStatus,
    Feasibility,
    Limit,
    closest_to_feasible,
)
from simlab_pipelines.analysis.intervals import t_quantile
from simlab_pipelines.analysis.threshold import (
    BEYOND,
    BEYOND_THROUGHOUT,
    NOT_MONOTONE,
    WITHIN,
    WITHIN_THROUGHOUT,
    BreakingPoint,
)
from simlab_pipelines.analysis.units import (
    format_estimate,
    format_setting,
    parse_unit,
    setting_digits,
)
from simlab_pipelines.analysis.units import format_quantity as _format_quantity
from simlab_pipelines.analysis.units import format_value as _format_value
from simlab_pipelines.analysis.words import Words


def _settled(value: float, half_width: float) -> float:
    """The half-width, or 0 when it is rounding noise (a value constant across replications up
    to floating-point error: ``1e-15`` would otherwise print 16 decimals)."""
    if math.isfinite(half_width) and math.isfinite(value) and \
            half_width <= 1e-9 * max(abs(value), 1e-300):
        return 0.0
    return half_width


def format_quantity(value: float, half_width: float, unit: str | None = None) -> str:
    """``units.format_quantity`` with rounding noise in the half-width ignored."""
    return _format_quantity(value, _settled(value, half_width), unit)


def format_value(value: float, half_width: float, unit: str | None = None) -> str:
    """``units.format_value`` with rounding noise in the half-width ignored."""
    return _format_value(value, _settled(value, half_width), unit)


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
                      summary: pl.DataFrame | None = None, name: str | None = None) -> str:
    """``p99 latency 0.18 ± 0.01 s (limit: at most 0.2 s, met)`` (``name``: the metric's)."""
    mean, half = _estimate(summary, status.config_key, status.limit.metric, status)
    word = {FEASIBLE: "met", INFEASIBLE: "missed", UNDECIDED: "too close to tell"}[status.status]
    name = name or Words().name(status.limit.metric)
    return (f"{name} {format_quantity(mean, half, unit)} "
            f"(limit: {limit_text(status.limit, unit)}, {word})")


def miss_clause(status: ConstraintStatus, unit: str | None,
                summary: pl.DataFrame | None = None, name: str | None = None) -> str:
    """``p99 latency by 0.03 s (0.23 ± 0.01 s against at most 0.2 s)``."""
    mean, half = _estimate(summary, status.config_key, status.limit.metric, status)
    if not half > 0:  # no interval: round to 3 significant digits of the mean
        half = abs(mean) * 1e-3 if mean else math.nan
    name = name or Words().name(status.limit.metric)
    return (f"{name} by {format_value(status.miss, half, unit)} "
            f"({format_quantity(mean, half, unit)} against {limit_text(status.limit, unit)})")


def _words(units: Mapping[str, str] | None, descriptions: Mapping[str, str] | None,
           configurations: Mapping[str, Mapping[str, Any]] | None,
           parameter_units: Mapping[str, str] | None = None) -> Words:
    return Words(dict(configurations or {}), None, dict(units or {}), dict(descriptions or {}),
                 dict(parameter_units or {}))


def _label(key: str, words: Words) -> str:
    """``24 tables, 4 waiters (tables-24_waiters-4)``: the setting, and the key to look it up."""
    setting = words.setting(key)
    return f"{setting} ({key})" if setting != key else key


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
                     objective_metric: str | None = None, max_items: int = 3,
                     descriptions: Mapping[str, str] | None = None,
                     parameter_units: Mapping[str, str] | None = None) -> str:
    """What the constraints say about an experiment's configurations: how many meet them, the
    recommended one's values against each limit, the better-looking ones that miss a limit (and
    which), and when none meets them all, the one closest to meeting them and by how much each
    limit is missed. ``descriptions``: metric -> how the answer names it; ``parameter_units``:
    parameter -> unit, for the settings' values."""
    words = _words(units, descriptions, configurations, parameter_units)
    overall = result.overall
    total = len(overall)
    counts = {s: sum(1 for v in overall.values() if v == s) for s in (FEASIBLE, INFEASIBLE,
                                                                       UNDECIDED)}
    sentences = []
    if recommended is not None and recommended in result.statuses:
        clauses = "; ".join(constraint_clause(s, words.unit(s.limit.metric), summary,
                                              words.name(s.limit.metric))
                            for s in result.statuses[recommended])
        sentences.append(f"It meets every constraint: {clauses}.")
    elif counts[FEASIBLE] == 0:
        closest = closest_to_feasible(result, objective, minimize)
        limits_said = "; ".join(f"{words.name(lim.metric)} "
                                f"{limit_text(lim, words.unit(lim.metric))}"
                                for lim in result.limits)
        sentences.append(f"No configuration is shown to meet every constraint ({limits_said}), "
                         "so none is recommended.")
        if closest is not None:
            missed = result.missed(closest)
            parts = [miss_clause(s, words.unit(s.limit.metric), summary,
                                 words.name(s.limit.metric)) for s in missed if s.miss > 0]
            close = [words.name(s.limit.metric) for s in missed if not s.miss > 0]
            text = f"Closest to meeting them: {_label(closest, words)}"
            if parts:
                text += ", which misses " + "; ".join(parts)
            if close:
                text += (", and is within noise of the limit on " + ", ".join(close))
            sentences.append(text + ".")
    counted = (f"All {total} configurations are shown to meet every constraint"
               if counts[FEASIBLE] == total > 1 else
               f"Only the {counts[FEASIBLE]} of {total} configurations shown to meet every "
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
                                             objective_metric, words, max_items))
    return " ".join(s for s in sentences if s)


def _better_but_missing(result: Feasibility, recommended: str, objective: Mapping[str, float],
                        minimize: bool, metric: str | None, words: Words,
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
        sure = [words.name(s.limit.metric) for s in missed if s.status == INFEASIBLE]
        unsure = [words.name(s.limit.metric) for s in missed if s.status != INFEASIBLE]
        # an undecided one is not said to miss: its mean is within noise of the limit
        said = ([f"misses {', '.join(sure)}"] if sure else []) + (
            [f"may miss {', '.join(unsure)} (too close to the limit to tell)"] if unsure else [])
        parts.append(f"{words.setting(key)} {' and '.join(said)}")
    more = len(better) - len(parts)
    name = words.name(metric) if metric else "the objective"
    return (f"Better on {name} but not shown to meet every constraint: " + "; ".join(parts)
            + (f"; and {more} more" if more else "") + ".")


def _half_width(status: ConstraintStatus, confidence: float) -> float:
    """The two-sided half-width at ``confidence`` of a constraint's mean (NaN below 2 values;
    with Stein's statistic, on its degrees of freedom)."""
    df = status.df if status.df is not None else status.n - 1
    if status.n < 2 or df < 1 or not math.isfinite(status.stddev):
        return math.nan
    return float(t_quantile(confidence, df)) * status.stddev / math.sqrt(status.n)


def _limit_clause(status: ConstraintStatus, words: Words, confidence: float) -> str:
    """``p99 latency 0.18 ± 0.01 s (limit 0.2 s, met with 95 % confidence)``."""
    unit = words.unit(status.limit.metric)
    value = format_quantity(status.mean, _half_width(status, confidence), unit)
    bound = limit_text(status.limit, unit)
    word = {FEASIBLE: f"met with {percent(status.limit.confidence)} confidence",
            INFEASIBLE: "missed", UNDECIDED: "too close to tell"}[status.status]
    return f"{words.name(status.limit.metric)} {value} (limit: {bound}, {word})"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _best_words(name: str, minimize: bool, unit: str | None, constraints: int) -> str:
    """``Cheapest configuration that meets both service levels`` and the like."""
    if parse_unit(unit).before and minimize:  # a currency: the least is the cheapest
        head = "Cheapest configuration"
    else:
        head = f"{'Lowest' if minimize else 'Highest'} {name}"
    if constraints == 0:
        return head + " found"
    levels = {1: "the service level", 2: "both service levels"}.get(
        constraints, f"all {constraints} service levels")
    return f"{head} that meets {levels}"


def search_text(result: CleanUp, *, metric: str,
                configurations: Mapping[str, Mapping[str, Any]],
                units: Mapping[str, str] | None = None, evaluated: int,
                space_size: int | None = None, simulations: int,
                search_simulations: int | None = None, max_items: int = 3,
                descriptions: Mapping[str, str] | None = None,
                parameter_units: Mapping[str, str] | None = None) -> str:
    """The answer of a search, once its clean-up is done (``analysis.cleanup.CleanUp``).

    First paragraph, in the user's terms: the recommended configuration, its objective and each
    constraint against its limit, with units; the runners-up among the candidates and which
    constraint each misses (or that nothing is feasible, the closest and by how much). Second
    paragraph: how it was found (configurations evaluated of the space, simulations) and the
    guarantee of the clean-up's selection. ``configurations``: config_key -> the factors'
    values; ``evaluated``: configurations the search evaluated; ``space_size``: how many it
    could have (None: a continuous factor); ``simulations``: all of them, clean-up included;
    ``search_simulations``: the search rounds' share; ``descriptions``: metric -> its name in
    the answer; ``parameter_units``: parameter -> unit, for the settings' values.
    """
    words = _words(units, descriptions, configurations, parameter_units)
    unit = words.unit(metric)
    confidence = result.confidence
    limits = result.screening.limits
    final = result.final
    sentences: list[str] = []
    if result.recommended is not None:
        key = result.recommended
        interval = result.intervals.get(key)
        value = (format_quantity(interval.mean, interval.half_width, unit) if interval
                 else format_quantity(result.means.get(key, math.nan), math.nan, unit))
        parts = [f"{_best_words(words.name(metric), result.minimize, unit, len(limits))}: "
                 f"{_label(key, words)} — {value}"]
        parts += [_limit_clause(st, words, confidence)
                  for st in (final.statuses[key] if final else ())]
        sentences.append("; ".join(parts) + ".")
        runners = _runners_up(result, words, metric, max_items)
        if runners:
            sentences.append(runners)
    else:
        sentences.append(_nothing_feasible(result, words))
    plain = " ".join(sentences)
    return plain + "\n\n" + _search_statistics(result, metric, unit, evaluated, space_size,
                                                 simulations, search_simulations)


def _runners_up(result: CleanUp, words: Words, metric: str, max_items: int) -> str | None:
    sign = 1.0 if result.minimize else -1.0
    others = sorted((k for k in result.candidates if k != result.recommended
                     and math.isfinite(result.means.get(k, math.nan))),
                    key=lambda k: (sign * result.means[k], k))
    if not others:
        return None
    unit = words.unit(metric)
    parts = []
    for key in others[:max_items]:
        interval = result.intervals.get(key)
        value = (format_quantity(interval.mean, interval.half_width, unit) if interval
                 else format_quantity(result.means[key], math.nan, unit))
        missed = result.final.missed(key) if result.final else []
        if not missed:
            tail = "meets every limit" if result.screening.limits else ""
        else:
            tail = "but " + "; ".join(
                (f"misses {words.name(st.limit.metric)} ("
                 f"{format_quantity(st.mean, _half_width(st, result.confidence), words.unit(st.limit.metric))}"
                 f", limit: {limit_text(st.limit, words.unit(st.limit.metric))})")
                if st.status == INFEASIBLE else
                f"is too close to the {words.name(st.limit.metric)} limit to tell"
                for st in missed)
        parts.append(f"{words.setting(key)} — {value}" + (f", {tail}" if tail else ""))
    more = len(others) - len(parts)
    return ("Runners-up: " + "; ".join(parts) + (f"; and {more} more" if more else "") + ".")


def _nothing_feasible(result: CleanUp, words: Words) -> str:
    limits = result.screening.limits
    said = "; ".join(f"{words.name(lim.metric)} {limit_text(lim, words.unit(lim.metric))}"
                     for lim in limits)
    text = (f"No configuration the search evaluated is shown to meet every service level "
            f"({said}), so none is recommended.")
    key = result.closest
    if key is None:
        return text
    source = result.final if result.final is not None and key in result.final.statuses \
        else result.screening
    missed = source.missed(key)
    parts = [f"{words.name(st.limit.metric)} by "
             f"{format_value(st.miss, _half_width(st, result.confidence), words.unit(st.limit.metric))}"
             f" ({format_quantity(st.mean, _half_width(st, result.confidence), words.unit(st.limit.metric))}"
             f" against {limit_text(st.limit, words.unit(st.limit.metric))})"
             for st in missed if st.miss > 0]
    close = [words.name(st.limit.metric) for st in missed if not st.miss > 0]
    text += f" Closest to meeting them: {_label(key, words)}"
    if parts:
        text += ", which misses " + "; ".join(parts)
    if close:
        text += ", and is too close to the limit on " + ", ".join(close) + " to tell"
    return text + "."


def _search_statistics(result: CleanUp, metric: str, unit: str | None, evaluated: int,
                       space_size: int | None, simulations: int,
                       search_simulations: int | None) -> str:
    of = ""
    if space_size:
        of = f" of {space_size:,} ({100 * evaluated / space_size:.2g} %)"
    split = ""
    if search_simulations is not None and search_simulations < simulations:
        split = (f" ({search_simulations:,} in the search, "
                 f"{simulations - search_simulations:,} in the clean-up)")
    sentences = [f"Found by evaluating {_count(evaluated, 'configuration')}{of} with "
                 f"{_count(simulations, 'simulation')}{split}."]
    k = len(result.candidates)
    zone = (format_quantity(result.indifference_zone, 0.0, unit)
            if result.indifference_zone is not None else None)
    best = "cheapest" if (parse_unit(unit).before and result.minimize) else "best"
    if result.recommended is not None and result.selection is not None and zone:
        procedure = ("Clark & Yang's two-stage procedure with common random numbers"
                     if result.selection.procedure == "bonferroni-crn"
                     else "Rinott's two-stage procedure")
        said = (f"A selection among the {k} best ({procedure}, on "
                f"{_count(result.n0, 'fresh replication')} each and then up to "
                f"{max(result.targets.values()) - result.first_stage:,})")
        if result.capped:  # the guarantee needs the full second stage: no probability claimed
            sentences.append(said + " picked it.")
        else:
            # Only a candidate shown feasible can be recommended, so the selection's probability
            # covers the best feasible candidate only when it is shown feasible too.
            proviso = ""
            if result.screening.limits:
                proviso = ", provided that configuration is itself shown to meet every limit"
                unsure = sum(s == UNDECIDED for s in (result.final.overall.values()
                                                      if result.final else ()))
                if unsure:
                    proviso += (f" ({unsure} of the {k} candidates "
                                f"{'is' if unsure == 1 else 'are'} too close to a limit to tell)")
            sentences.append(
                f"{said} says it is within {zone} of the {best} feasible configuration among "
                f"them with probability ≥ {result.confidence:g}{proviso}.")
    elif result.recommended is not None and result.indifference_zone is None and k > 1:
        sentences.append(f"It has the best mean of the {k} best on "
                         f"{_count(result.n0, 'fresh replication')}; without an "
                         "objective.indifference_zone there is no selection, so no probability "
                         "of a correct selection is claimed.")
    elif result.recommended is not None and k == 1:
        sentences.append("It was the only candidate left after the search's first stage, "
                         f"checked again on {_count(result.n0, 'fresh replication')}.")
    if result.final is not None and result.screening.limits:
        levels = " / ".join(sorted({percent(lim.confidence) for lim in result.screening.limits}))
        most = max((len(v) for v in result.looks.values()), default=1)
        looks = f" and up to {most} looks at each" if most > 1 else ""
        sentences.append(
            f"Each limit is judged by one-sided bounds at {levels} confidence, Bonferroni over the "
            f"{_count(k, 'candidate')}{looks}, on replications the search did not choose them by "
            f"(Boesel, Nelson & Kim 2003's clean-up).")
    if result.capped:
        sentences.append("The second stage was cut at the file's max_replications, so the "
                         "selection's guarantee does not hold; raise search.max_replications.")
    sentences.append(f"Configurations the search never proposed, or left out of the clean-up "
                     f"after their first {_count(result.first_stage, 'replication')}, are not "
                     "covered by these statements.")
    return " ".join(sentences)


def threshold_text(result: BreakingPoint, *, units: Mapping[str, str] | None = None,
                   factor_unit: str | None = None, points: int | None = None,
                   descriptions: Mapping[str, str] | None = None,
                   common_random_numbers: bool = False,
                   decisions: Sequence[Any] = ()) -> str:
    """The breaking point in plain words, then how it was found:
    ``p95 wait stays within 2 s up to arrival rate 1.62 (1.60–1.64, 95 %).``
    (``descriptions``: metric -> its name in the answer; ``common_random_numbers``: the
    experiment's, for which the coverage argument of ``analysis/threshold.py`` is not proven;
    ``decisions``: the plan's points, to say where a metric moves against its direction.)"""
    words = _words(units, descriptions, None)
    unit = words.unit(result.metric)
    metric = (words.name(result.metric) if result.metric else "") or "the metric"
    factor = Words().name(result.factor) or "the factor"
    limit = format_quantity(result.limit, 0.0, unit)
    level = percent(result.confidence)
    parts = parse_unit(factor_unit)
    suffix = parts.after + parts.per  # " min", " parties a minute"

    def searched(value: float, *beside: float) -> str:
        """A value searched, with its unit, to 3 significant digits (the plan's values are
        rounded to 6): more when a value said beside it would read the same."""
        return format_setting(value, factor_unit, setting_digits([value, *beside]))

    def number(value: float, half: float) -> str:
        if isinstance(value, int):  # an integer factor: its values as they are
            return f"{value:,}"
        return format_estimate(value, half)[0]

    def at(value: float, half: float) -> str:
        return number(value, half) + suffix

    def end(value: float, half: float, up: bool) -> str:
        """An end of the interval, rounded outwards: what is printed still contains the
        interval the coverage is about (1.075 is 1.08 as an upper end, not 1.07)."""
        text = number(value, half)
        if isinstance(value, int) or text == "n/a":
            return text
        decimals = len(text.partition(".")[2])
        scaled = value * 10**decimals
        rounded = (math.ceil(scaled - 1e-9) if up else math.floor(scaled + 1e-9)) / 10**decimals
        return f"{rounded:.{decimals}f}"

    width = ((result.ci_high - result.ci_low) / 2
             if result.ci_low is not None and result.ci_high is not None else math.nan)
    half = width if width > 0 else result.tolerance / 2
    up, towards = ("up to", "beyond") if result.increasing else ("from", "below")
    if result.status == NOT_MONOTONE:
        grows, other = ("grow", "decreasing") if result.increasing else ("fall", "increasing")
        beyond = [p.x for p in decisions if p.status == BEYOND]
        within = [p.x for p in decisions if p.status == WITHIN]
        where = (f": it is beyond {limit} at {factor} {searched(min(beyond), max(within))} but "
                 f"within it at {searched(max(within), min(beyond))}"
                 if result.increasing and beyond and within else
                 f": it is beyond {limit} at {factor} {searched(max(beyond), min(within))} but "
                 f"within it at {searched(min(within), max(beyond))}" if beyond and within
                 else "")
        plain = (f"{metric.capitalize()} does not {grows} with {factor} here{where}, so no "
                 f"breaking point can be given (if it {'falls' if result.increasing else 'grows'}"
                 f" as {factor} grows, set search.direction: {other}).")
    elif result.status == BEYOND_THROUGHOUT:
        end = result.low if result.increasing else result.high
        plain = (f"{metric.capitalize()} is already beyond {limit} at {factor} "
                 f"{searched(end)}, the {'lowest' if result.increasing else 'highest'} value "
                 f"searched ({level} confidence): the breaking point is outside the range.")
    elif result.status == WITHIN_THROUGHOUT:
        end = result.high if result.increasing else result.low
        plain = (f"{metric.capitalize()} stays within {limit} {up} {factor} "
                 f"{searched(end)}, the {'highest' if result.increasing else 'lowest'} value "
                 f"searched ({level} confidence): the breaking point is {towards} the range.")
    elif result.ci_low is None and result.ci_high is None:
        # every value searched within noise of the limit: no end of the interval is known
        plain = (f"{metric.capitalize()} could not be told apart from {limit} anywhere from "
                 f"{factor} {searched(result.low, result.high)} to "
                 f"{searched(result.high, result.low)}, so no breaking point can "
                 "be given: more replications (search.max_replications) or a wider range "
                 "would tell.")
    elif result.estimate is None or result.ci_low is None or result.ci_high is None:
        known = result.ci_high if result.ci_low is None else result.ci_low
        side = "at most" if result.ci_low is None else "at least"
        plain = (f"{metric.capitalize()} stays within {limit} {up} a breaking point of "
                 f"{factor} {side} {end(known, half, result.ci_low is None)}{suffix} "
                 f"({level} confidence); the other side "
                 "could not be pinned down.")
    else:
        low, high = end(result.ci_low, half, False), end(result.ci_high, half, True)
        span = f"{low}–{high}, " if low != high else ""
        plain = (f"{metric.capitalize()} stays within {limit} {up} {factor} "
                 f"{at(result.estimate, half)} ({span}{level}).")
    why = ("(each decision's error bounded and added up over every decision the search could "
           "make, Bonferroni)")
    covers = (f"the interval covers the breaking point with probability ≥ {result.confidence:g} "
              f"{why}." if not common_random_numbers else
              f"with independent streams at each value the interval would cover the breaking "
              f"point with probability ≥ {result.confidence:g} {why}; this experiment uses "
              "common random numbers, which that argument does not cover (set "
              "common_random_numbers: false for the guarantee).")
    how = [f"Found by bisection on one-sided intervals with "
           f"{_count(result.simulations, 'simulation')}"
           + (f" at {_count(points, 'value')} of {factor}" if points else "") + "; " + covers]
    how += [note[:1].upper() + note[1:] + "." for note in result.notes]
    return plain + "\n\n" + " ".join(how)


def constraints_section(result: Feasibility, *, units: Mapping[str, str] | None = None,
                        configurations: Mapping[str, Mapping[str, Any]] | None = None,
                        recommended: str | None = None,
                        descriptions: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The report's section on the constraints: (heading, HTML) with one row per configuration
    (recommended first, then feasible, undecided, infeasible) and one column per constraint
    (the mean with the one-sided bound it was judged by, and the status)."""
    import html

    from simlab_pipelines.analysis.report import html_table

    words = _words(units, descriptions, configurations)
    order = {FEASIBLE: 1, UNDECIDED: 2, INFEASIBLE: 3}
    overall = result.overall
    keys = sorted(result.statuses, key=lambda k: (k != recommended, order[overall[k]], k))
    columns: dict[str, list[str]] = {"configuration": [_label(k, words) for k in keys],
                                     "status": [overall[k] for k in keys]}
    for i, limit in enumerate(result.limits):
        unit = words.unit(limit.metric)
        name = f"{words.name(limit.metric)} ({limit_text(limit, unit)})"
        cells = []
        for key in keys:
            st = result.statuses[key][i]
            bound = st.ci_high if limit.max is not None else st.ci_low
            cells.append(f"{format_quantity(st.mean, math.nan, unit)} "
                         f"(bound {format_quantity(bound, math.nan, unit)}): {st.status}")
        columns[name] = cells
    levels = " / ".join(sorted({percent(lim.confidence) for lim in result.limits}))
    text = (f"<p>{html.escape(f'Each limit is judged by a one-sided bound at {levels} confidence')}"
            + (html.escape(f", simultaneously for the {result.simultaneous} configurations "
                           "(Bonferroni)") if result.simultaneous > 1 else "")
            + html.escape(": feasible when the bound is within the limit, infeasible when the "
                          "opposite bound is beyond it, undecided otherwise. Only feasible "
                          "configurations are recommended.") + "</p>")
    return "Constraints", text + html_table(pl.DataFrame(columns), drop_constant=False)


__all__ = ["constraint_clause", "constraints_section", "constraints_text", "limit_text",
           "miss_clause", "percent", "search_text", "threshold_text"]
