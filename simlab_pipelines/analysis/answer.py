"""The answer in the reader's words: a first paragraph a manager can act on, a second for analysts.

The first paragraph (``recommendation_text``) says what to do and what it changes, against the
configuration the user runs today, which is always called "today's setting (8 tables, 2 waiters)"
(the file's ``baseline``): the decision; its effect on the objective, in units; why, when it is not
the best sample mean ("pool 4 has the highest sample mean, but pool 8 is as good within 1 point and
changes one setting less"); its other effects; then one line per alternative with what it costs or
gains against the recommendation. Metrics and responses are named by their description (the
file's ``responses.<name>.description``, the model's metric help), every number carries its unit
(``units.py``: ``$56 ± 6 a day``, ``81 points``, ``56.9 min``).

The second paragraph (``answer``, ``best_sentence``, ``statistics_lead``) holds the statistics:
intervals, pairing, replications, the selection procedures and their constants.

``comparison_text`` answers without an objective (what differs significantly from today's
setting). How configurations and metrics are said is ``words.py``; the sentences on what the
answer cannot speak for (missing, unstable, undefined) are ``caveats.py``; numbers with units are
``units.py`` (their names are importable from here too). Everything comes from the data and the
file; nothing is specific to a model.
"""

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import polars as pl

from simlab_pipelines.analysis.caveats import (
    NO_STEADY_STATE,
    missing_text,
    undefined_text,
    unstable_text,
)
from simlab_pipelines.analysis.selection import Recommendation, Subset, TwoStageSelection
from simlab_pipelines.analysis.units import (
    CURRENCIES,
    change_words,
    format_difference,
    format_estimate,
    format_quantity,
    format_value,
    parse_unit,
    unit_suffix,
)
from simlab_pipelines.analysis.words import (
    TODAY,
    Words,
    capital,
    describe_change,
    describe_configuration,
    humanise,
    setting_words,
)

# Re-exported: callers (the search's answer, the report) import these from here.
__all__ = ["CURRENCIES", "NO_STEADY_STATE", "TODAY", "Words", "answer", "best_sentence",
           "comparison_text", "describe_change", "describe_configuration", "format_difference",
           "format_estimate", "format_quantity", "format_value", "humanise", "missing_text",
           "one_line_lists", "parse_unit", "recommendation_text", "setting_words",
           "statistics_lead", "undefined_text", "unit_suffix", "unstable_text"]

# ---------------------------------------------------------------------------- frames


def _estimate(summary: pl.DataFrame, key: str, metric: str) -> tuple[float, float] | None:
    rows = summary.filter((pl.col("config_key") == key) & (pl.col("metric") == metric))
    if rows.height == 0 or rows["mean"][0] is None or math.isnan(rows["mean"][0]):
        return None  # no row, or no replication with a value (NaN: undefined everywhere)
    half = rows["half_width"][0]
    return rows["mean"][0], (float("nan") if half is None else half)


def _difference(comparisons: pl.DataFrame | None, key: str, reference: str,
                metric: str) -> dict[str, Any] | None:
    """``key - reference`` on ``metric`` (paired when there is a paired row), whichever way the
    frame holds the pair; keys mean_difference, ci_low, ci_high, n, paired, confidence, and
    mean_key, mean_reference: each side's mean over the same replications (None when the frame
    does not hold them, e.g. the DuckDB table)."""
    if comparisons is None or comparisons.height == 0:
        return None
    for config, base, sign in ((key, reference, 1.0), (reference, key, -1.0)):
        rows = comparisons.filter((pl.col("config_key") == config)
                                  & (pl.col("baseline_key") == base)
                                  & (pl.col("metric") == metric)).sort("paired", descending=True)
        if rows.height and rows["mean_difference"][0] is not None:
            row = rows.row(0, named=True)
            low, high = sorted((sign * row["ci_low"], sign * row["ci_high"]))
            means = (row.get("mean_config"), row.get("mean_baseline"))
            mine, theirs = means if sign > 0 else means[::-1]
            return row | {"mean_difference": sign * row["mean_difference"], "ci_low": low,
                          "ci_high": high, "mean_key": mine, "mean_reference": theirs}
    return None


def _paired(row: Mapping[str, Any] | None, mine: tuple[float, float] | None,
            theirs: tuple[float, float] | None
            ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """The two means to quote beside ``row``'s difference: over the same replications as the
    difference (a configuration with more replications than the other has a different mean
    over all of its own), rounded as the summary's would be."""
    if row is None or row.get("mean_key") is None or row.get("mean_reference") is None:
        return mine, theirs
    nan = float("nan")
    return ((row["mean_key"], mine[1] if mine else nan),
            (row["mean_reference"], theirs[1] if theirs else nan))


def _instead(mine: tuple[float, float], theirs: tuple[float, float], unit: str | None) -> str:
    """``$1,075 instead of $1,020 a day``: both rounded alike (to the wider half-width), the
    unit once (a percentage's twice)."""
    half = max((h for _, h in (mine, theirs) if h == h), default=float("nan"))
    first = format_value(mine[0], half, unit, with_unit=parse_unit(unit).percent)
    return f"{first} instead of {format_value(theirs[0], half, unit)}"


def _significant(row: Mapping[str, Any]) -> bool:
    return row["ci_low"] > 0 or row["ci_high"] < 0


def _half(row: Mapping[str, Any]) -> float:
    return (row["ci_high"] - row["ci_low"]) / 2


# ---------------------------------------------------------------------------- paragraph 1


def _effect(words: Words, metric: str, row: Mapping[str, Any] | None,
            mine: tuple[float, float] | None, theirs: tuple[float, float] | None) -> str | None:
    """``- parties lost 4.3 ± 1.1 points lower (16.5 % instead of 20.8 %)``, the means over the
    replications the difference is paired over."""
    unit = words.unit(metric)
    mine, theirs = _paired(row, mine, theirs)
    means = f" ({_instead(mine, theirs, unit)})" if mine and theirs else ""
    if row is None:
        return f"- {words.name(metric)}{means}" if means else None
    if not _significant(row):
        return f"- {words.name(metric)}: no significant change{means}"
    diff = row["mean_difference"]
    return (f"- {words.name(metric)} {format_difference(diff, _half(row), unit)} "
            f"{change_words(unit, diff > 0)}{means}")


def _why_not_best(rec: Recommendation, words: Words, metric: str, zone: str | None,
                  nothing_significant: bool, cost_unit: str | None) -> str | None:
    """One sentence: why the recommendation is not the configuration with the best mean."""
    if rec.choice == rec.best:
        return None
    extreme = "lowest" if rec.minimize else "highest"
    if zone:
        equal = f"is as good within {zone}"
    elif nothing_significant:
        equal = f"is as good (no configuration differs significantly from {TODAY})"
    else:
        equal = "is as good on the evidence (the screening cannot tell them apart)"
    if rec.reason == "cost" and rec.cost is not None:
        saving = rec.cost[rec.best] - rec.cost[rec.choice]
        why = f"costs {format_difference(saving, 0.0, cost_unit)} less"
    elif rec.reason == "fewest changes" and rec.changes is not None:
        fewer = rec.changes[rec.best] - rec.changes[rec.choice]
        why = ("changes nothing" if rec.changes[rec.choice] == 0 else
               "changes one setting less" if fewer == 1 else f"changes {fewer} settings less")
    else:
        why = "comes first among the equally good"
    return capital(f"{words.setting(rec.best)} has the {extreme} sample mean of "
                    f"{words.name(metric)}, but {words.setting(rec.choice)} {equal} and {why}.")


def _alternative_line(words: Words, key: str, choice: str, metric: str,
                      others: Sequence[str], summary: pl.DataFrame,
                      versus: pl.DataFrame | None) -> str:
    """``- waiters 2 → 3 (8 tables, 3 waiters): profit per day $112 ± 9 a day lower; time ...``"""
    parts = []
    for name in [metric, *others]:
        unit = words.unit(name)
        row = _difference(versus, key, choice, name)
        if row is None:
            if name == metric:  # no paired row: the means, without a claim
                mine, theirs = _estimate(summary, key, name), _estimate(summary, choice, name)
                if mine and theirs:
                    parts.append(f"{words.name(name)} {_instead(mine, theirs, unit)}")
            continue
        diff = row["mean_difference"]
        if _significant(row):
            parts.append(f"{words.name(name)} {format_difference(diff, _half(row), unit)} "
                         f"{change_words(unit, diff > 0)}")
        elif name == metric:
            parts.append(f"{words.name(name)} about the same "
                         f"({format_difference(diff, _half(row), unit, signed=True)})")
    if len(parts) == 1 and others:
        parts.append("no other significant difference")
    return f"- {words.setting(key)}: " + "; ".join(parts)


def recommendation_text(rec: Recommendation, *, metric: str, summary: pl.DataFrame,
                        comparisons: pl.DataFrame, baseline: str | None,
                        configurations: Mapping[str, Mapping[str, Any]] | None = None,
                        units: Mapping[str, str] | None = None,
                        tradeoffs: Sequence[str] = (), nothing_significant: bool = False,
                        max_items: int = 4, cost_metric: str | None = None,
                        descriptions: Mapping[str, str] | None = None,
                        versus_choice: pl.DataFrame | None = None,
                        caveats: Sequence[str] = (), unstable: Collection[str] = (),
                        parameter_units: Mapping[str, str] | None = None) -> str:
    """The first paragraph of the answer (see the module docstring).

    ``rec``: ``selection.recommend`` on ``metric``; ``summary``/``comparisons``: the experiment's
    frames (comparisons against ``baseline``, or against the best without one);
    ``configurations``: config_key -> varying parameters; ``tradeoffs``: the other responses
    reported; ``nothing_significant``: no configuration differs significantly from the baseline
    on ``metric``; ``descriptions``: metric -> words; ``versus_choice``: comparisons of every
    configuration against the recommendation (``comparisons.compare(frame, rec.choice)``), for
    the alternatives' lines; ``caveats``: sentences placed before those lines (unstable or
    missing configurations). At most ``max_items`` alternatives get a line; one in
    ``unstable`` (no steady state) gets no numbers, which only measure the run's length.
    ``parameter_units``: parameter -> unit, for the settings' values.
    """
    words = Words(configurations or {}, baseline, units or {}, descriptions or {},
                  parameter_units or {})
    unit, name, choice = words.unit(metric), words.name(metric), rec.choice
    zone = (format_difference(rec.indifference_zone, 0.0, unit)
            if rec.indifference_zone is not None else None)
    others = [m for m in dict.fromkeys(tradeoffs) if m != metric]
    sentences = []
    if baseline and choice == baseline:
        # when another has the best mean, the sentence after the evidence says why not it
        extreme = "lowest" if rec.minimize else "highest"
        why = (f": no configuration tested changes {name} significantly" if nothing_significant
               else f": it has the {extreme} mean {name}" if rec.best == choice else "")
        sentences.append(f"Recommendation: keep {words.today()}{why}.")
    elif baseline:
        change = words.label(choice)
        sentences.append(f"Recommendation: {change}.")
    else:
        sentences.append(f"Recommendation: {words.setting(choice)}.")
    sentences.append(_evidence(rec, words, metric, summary, comparisons))
    sentences.append(_why_not_best(rec, words, metric, zone, nothing_significant,
                                   units.get(cost_metric) if (units and cost_metric) else None))
    effects: list[str | None] = []
    if baseline and choice != baseline:
        effects = [_effect(words, m, _difference(comparisons, choice, baseline, m),
                           _estimate(summary, choice, m), _estimate(summary, baseline, m))
                   for m in others]
        effects = [e for e in effects if e]
    text = " ".join(s for s in sentences if s)
    if effects:  # one line each, like the options below
        text += f"\nIts other effects against {TODAY}:\n" + "\n".join(effects)
    if caveats:
        text += "\n" + " ".join(caveats)
    alternatives = [k for k in _by_objective(summary, metric, rec.minimize)
                    if k not in (choice, baseline)]
    if alternatives:
        shown = alternatives[:max_items]
        lines = [f"- {words.setting(k)}: {NO_STEADY_STATE}" if k in unstable else
                 _alternative_line(words, k, choice, metric, others, summary, versus_choice)
                 for k in shown]
        if rec.feasible is not None:  # with constraints: say which options miss one
            lines = [line + "; not shown to meet every constraint"
                     if k not in rec.feasible and k not in unstable else line
                     for k, line in zip(shown, lines, strict=False)]
        rest = len(alternatives) - len(shown)
        if rest:
            lines.append(f"- {rest} more in the trade-off table")
        text += "\nThe other options, against the recommendation:\n" + "\n".join(lines)
    return text


def _by_objective(summary: pl.DataFrame, metric: str, minimize: bool) -> list[str]:
    rows = summary.filter((pl.col("metric") == metric) & pl.col("mean").is_not_null()
                          & pl.col("mean").is_not_nan())
    return rows.sort(["mean", "config_key"], descending=[not minimize, False])[
        "config_key"].to_list()


def _evidence(rec: Recommendation, words: Words, metric: str, summary: pl.DataFrame,
              comparisons: pl.DataFrame) -> str | None:
    """The recommendation's effect on the objective, against today's setting (without a
    baseline: its mean, and its difference to the best sample mean)."""
    choice, name, unit, baseline = rec.choice, words.name(metric), words.unit(metric), \
        words.baseline
    mine = _estimate(summary, choice, metric)
    if baseline is None or baseline == choice:
        if mine is None:
            return None
        text = f"Its mean {name} is {format_quantity(*mine, unit)}"
        row = _difference(comparisons, choice, rec.best, metric) if rec.best != choice else None
        if row is not None:
            text += (f", {format_difference(row['mean_difference'], _half(row), unit)} "
                     f"{change_words(unit, row['mean_difference'] > 0)} than that of "
                     f"{words.setting(rec.best)}")
        return text + "."
    row = _difference(comparisons, choice, baseline, metric)
    # the means over the replications the difference is paired over
    mine, theirs = _paired(row, mine, _estimate(summary, baseline, metric))
    means = _instead(mine, theirs, unit) if mine and theirs else ""
    if row is None:
        return f"Against {words.today()}: {name} {means}." if means else None
    diff = row["mean_difference"]
    if not _significant(row):
        signed = format_difference(diff, _half(row), unit, signed=True)
        return (f"Against {words.today()} it does not change {name} significantly "
                f"({signed}{'; ' + means if means else ''}).")
    verb = "raises" if diff > 0 else "lowers"
    sure = f" ({row['confidence'] * 100:g} % confidence)"  # what the ± means, said once
    return (f"Against {words.today()} it {verb} {name} by "
            f"{format_difference(diff, _half(row), unit)}{sure}"
            f"{': ' + means if means else ''}.")


def comparison_text(comparisons: pl.DataFrame, metrics: Sequence[str], *, baseline: str,
                    configurations: Mapping[str, Mapping[str, Any]] | None = None,
                    units: Mapping[str, str] | None = None,
                    descriptions: Mapping[str, str] | None = None, max_items: int = 6,
                    caveats: Sequence[str] = (), unstable: Collection[str] = (),
                    parameter_units: Mapping[str, str] | None = None) -> str | None:
    """Without an objective: what differs significantly from today's setting, by how much, in
    units, one line per configuration (paired rows when present; none for a configuration in
    ``unstable``, whose numbers measure the run's length). None without comparisons."""
    words = Words(configurations or {}, baseline, units or {}, descriptions or {},
                  parameter_units or {})
    rows = comparisons.filter((pl.col("baseline_key") == baseline)
                              & pl.col("metric").is_in(list(metrics)))
    if rows.height == 0:
        return None
    keys = sorted(set(rows["config_key"].to_list()),
                  key=lambda k: list(configurations or {}).index(k)
                  if k in (configurations or {}) else len(configurations or {}))
    lines, same = [], []
    for key in keys:
        if key in unstable:
            lines.append(f"- {words.label(key)}: {NO_STEADY_STATE}")
            continue
        parts = []
        for metric in metrics:
            row = _difference(rows, key, baseline, metric)
            if row is not None and _significant(row):
                unit = words.unit(metric)
                parts.append(f"{words.name(metric)} "
                             f"{format_difference(row['mean_difference'], _half(row), unit)} "
                             f"{change_words(unit, row['mean_difference'] > 0)}")
        if parts:
            lines.append(f"- {words.label(key)}: " + "; ".join(parts))
        else:
            same.append(words.label(key))
    shown = lines[:max_items]
    if len(lines) > max_items:
        shown.append(f"- {len(lines) - max_items} more in the comparisons table")
    named = ", ".join(words.name(m) for m in metrics)
    head = (f"Against {words.today()}, on {named}:" if shown else
            f"No configuration differs significantly from {words.today()} on {named}.")
    text = " ".join([head, *caveats]) if not shown else head
    if shown:
        text += "\n" + "\n".join(shown)
        if same:
            text += (f"\nNo significant difference: {', '.join(same[:max_items])}"
                     + (f" and {len(same) - max_items} more" if len(same) > max_items else "")
                     + ".")
        if caveats:
            text += "\n" + " ".join(caveats)
    return text


# ---------------------------------------------------------------------------- paragraph 2


def statistics_lead(*, confidence: float, paired: bool, counts: Sequence[int],
                    precision: str | None = None) -> str:
    """``Statistics: 95 % t intervals over 142–176 replications a configuration; differences
    paired over common random numbers (...)``."""
    low, high = (min(counts), max(counts)) if counts else (0, 0)
    n = f"{low}" if low == high else f"{low}–{high}"
    how = ("differences paired over common random numbers (replication r of every "
           "configuration draws the same random streams)" if paired else
           "differences by Welch's unpaired interval")
    text = f"Statistics: {confidence * 100:g} % t intervals over {n} replications a configuration"
    if precision:
        text += f" ({precision})"
    return f"{text}; {how}."


def answer(comparisons: pl.DataFrame, metric: str, *, minimize: bool = True,
           question: str | None = None, experiment: str | None = None,
           baseline: str | None = None, selection: Subset | TwoStageSelection | None = None,
           configurations: Mapping[str, Mapping[str, Any]] | None = None, unit: str = "",
           max_items: int = 3, reference: str = TODAY) -> str:
    """The differences on ``metric`` against ``reference``, for analysts (config keys, the
    metric's name, intervals with units).

    ``comparisons``: the frame of ``comparisons.compare`` (paired rows are used when present,
    else the unpaired ones). ``minimize``: whether lower is better (sets the order).
    ``question``: put first. ``baseline``: which baseline's rows to use when the frame holds
    several (default: the most frequent). ``selection``: a subset or two-stage selection on the
    same metric, for the "best" sentence. ``configurations``: config_key -> parameters, to say
    what each configuration changes. ``unit``: the metric's unit (" min" and "min" alike; see
    ``units.py``). At most ``max_items`` configurations are named; the rest are counted.
    """
    rows = comparisons.filter(pl.col("metric") == metric)
    if experiment is not None:
        rows = rows.filter(pl.col("experiment") == experiment)
    if rows.height == 0:
        raise ValueError(f"comparisons: no rows for metric {metric!r}"
                         + (f" in experiment {experiment!r}" if experiment else ""))
    if baseline is None:
        baseline = rows["baseline_key"].mode().sort()[0]
    rows = rows.filter(pl.col("baseline_key") == baseline)
    if rows.height == 0:
        raise ValueError(f"comparisons: no rows against baseline {baseline!r} for metric {metric!r}")
    paired = bool(rows["paired"].any())
    rows = rows.filter(pl.col("paired") == paired)
    # Most improvement first: the most negative difference when lower is better.
    rows = rows.sort("mean_difference", descending=not minimize)
    parts = []
    for i, row in enumerate(rows.iter_rows(named=True)):
        if i == max_items:
            break
        parts.append(_clause(row, metric, unit.strip(), configurations, baseline, first=(i == 0)))
    rest = rows.height - len(parts)
    confidence = f"{rows['confidence'][0] * 100:g} %"
    low, high = rows["n"].min(), rows["n"].max()
    count = f"{low}" if low == high else f"{low}–{high}"
    noun = "replication" if high == 1 else "replications"
    how = f"paired over {count} {noun}" if paired else f"Welch, {count} {noun} each"
    sentence = f"Against {reference} {baseline} ({confidence} CI, {how}), " + "; ".join(parts)
    if rest:
        sentence += f"; {rest} other configuration{'s' if rest > 1 else ''} not shown"
    sentence += "."
    sentences = [question.strip().rstrip(".?!") + "?" if question else None, sentence,
                 best_sentence(selection, metric, minimize)]
    return " ".join(s for s in sentences if s)


def _clause(row: Mapping[str, Any], metric: str, unit: str,
            configurations: Mapping[str, Mapping[str, Any]] | None, baseline: str,
            first: bool) -> str:
    key = row["config_key"]
    label = key
    if configurations and key in configurations and baseline in configurations:
        change = describe_change(configurations[key], configurations[baseline])
        if change:
            label = f"{key} ({change})"
    diff, half = row["mean_difference"], row["ci_high"] - row["mean_difference"]
    target = metric if first else "it"
    if row["ci_low"] > 0 or row["ci_high"] < 0:
        verb = "raises" if row["ci_low"] > 0 else "lowers"
        return f"{label} {verb} {target} by {format_difference(diff, half, unit or None)}"
    signed = format_difference(diff, half, unit or None, signed=True)
    return f"{label} does not change {target} significantly ({signed})"


def best_sentence(selection: Subset | TwoStageSelection | None, metric: str,
                  minimize: bool, *, recommended: str | None = None,
                  zone: str | None = None, unit: str | None = None,
                  reason: str | None = None) -> str | None:
    """The selection procedure's sentence (None without a selection). When ``recommended`` is
    not what the selection keeps or picks, ``reason`` says why it is recommended all the same
    (default: within the indifference zone ``zone``, words with a unit): the recommendation is
    never called ruled out."""
    if selection is None:
        return None
    direction = "lower" if minimize else "higher"
    if isinstance(selection, Subset):
        level = f"{selection.confidence * 100:g} %"
        how = "paired screening" if selection.paired else "screening"
        kept = ", ".join(selection.keep)
        text = (f"Subset selection ({how} at {level}, {direction} {metric} is better) keeps "
                f"{kept} as possibly the best")
        if recommended is not None and recommended not in selection.keep:
            why = reason or (f"is within the indifference zone of {zone} of it: a smaller "
                             "difference is not worth acting on" if zone else
                             "is preferred among configurations no different from today's "
                             "setting")
            text += f"; the recommendation, {recommended}, {why}"
        return text + "."
    zone_text = format_difference(selection.indifference_zone, 0.0, unit)
    if selection.best is None:
        return (f"Selecting the best on {metric} needs more replications "
                f"({selection.procedure}, P(correct) ≥ {selection.pstar:g}).")
    text = (f"The {selection.procedure} two-stage selection (n0 = {selection.n0}, critical "
            f"constant {selection.constant:.3g}) picks {selection.best}; it is right with "
            f"probability ≥ {selection.pstar:g} whenever the best is at least {zone_text} better "
            f"on {metric} than the others")
    if recommended is not None and recommended != selection.best:
        why = reason or ("is within that indifference zone of it and preferred for its cost or "
                         "fewer changes")
        text += f"; the recommendation, {recommended}, {why}"
    return text + "."


def one_line_lists(text: str) -> str:
    """``text`` for a place that shows no line breaks (the Dagster UI's text metadata): each
    paragraph's "- " lines become "• " items on its line; paragraphs stay apart."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.split("\n")
        joined = lines[0]
        for line in lines[1:]:
            joined += f" • {line[2:]}" if line.startswith("- ") else f" {line}"
        paragraphs.append(joined)
    return "\n\n".join(paragraphs)
