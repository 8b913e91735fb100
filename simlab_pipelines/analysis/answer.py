"""The answer in plain sentences: first the recommendation (what to change, by the objective, with
its evidence and trade-offs, in the file's units), then the statistics (the differences to the
baseline with their intervals, the procedure that picked the best).

Everything in the sentences comes from the data (configuration keys, metric names, parameter
values when given); nothing is specific to a model. Numbers are rounded to the precision their
half-width supports: the half-width to one significant digit (two when it starts with 1 or 2), the
estimate to the same decimal place, e.g. ``6.1 ± 0.8`` or ``1.24 ± 0.15``.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from simlab_pipelines.analysis.selection import Recommendation, Subset, TwoStageSelection


def format_estimate(value: float, half_width: float) -> tuple[str, str]:
    """``(value, half_width)`` as strings rounded to the precision the half-width supports."""
    if math.isnan(value):
        return "n/a", "n/a"
    if not (half_width > 0 and math.isfinite(half_width)):
        return f"{value:.4g}", ("0" if half_width == 0 else "n/a")
    exponent = math.floor(math.log10(half_width))
    leading = half_width / 10**exponent
    digits = 2 if leading < 3 else 1
    decimals = max(0, digits - 1 - exponent)
    if round(half_width, decimals) >= 10 ** (exponent + 1):
        # Rounding went up a decade (0.96 -> 1): the new leading digit is 1, so keep two digits.
        decimals = max(0, 1 - (exponent + 1))
    return f"{round(value, decimals):.{decimals}f}", f"{round(half_width, decimals):.{decimals}f}"


def describe_change(config: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """The parameters that differ from the baseline, e.g. ``waiters 3→4``."""
    changed = [f"{name} {baseline.get(name)}→{value}" for name, value in config.items()
               if baseline.get(name) != value]
    changed += [f"without {name}" for name in baseline if name not in config]
    return ", ".join(changed)


def answer(comparisons: pl.DataFrame, metric: str, *, minimize: bool = True,
           question: str | None = None, experiment: str | None = None,
           baseline: str | None = None, selection: Subset | TwoStageSelection | None = None,
           configurations: Mapping[str, Mapping[str, Any]] | None = None, unit: str = "",
           max_items: int = 3, reference: str = "the baseline") -> str:
    """One or two plain sentences answering the experiment's question on ``metric``.

    ``comparisons``: the frame of ``comparisons.compare`` (paired rows are used when present,
    else the unpaired ones). ``minimize``: whether lower is better (sets the order and the word
    for the best). ``question``: the experiment's description, put first. ``baseline``: which
    baseline's rows to use when the frame holds several (default: the most frequent).
    ``selection``: a subset or two-stage selection on the same metric, for the "best" sentence.
    ``configurations``: config_key -> parameters, to say what each configuration changes.
    ``unit``: appended to the numbers (e.g. " min"). At most ``max_items`` configurations are
    named; the rest are counted. ``reference`` names what the differences are taken against
    (e.g. "the best configuration" when the experiment has no baseline).
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
        parts.append(_clause(row, metric, unit, configurations, baseline, first=(i == 0)))
    rest = rows.height - len(parts)
    confidence = f"{rows['confidence'][0] * 100:g}%"
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
    value, hw = format_estimate(abs(diff), half)
    target = metric if first else "it"
    currency = unit.strip() if unit.strip() in CURRENCIES else ""
    if currency:  # $56 ± 6, not 56 ± 6 $
        unit = ""
    if row["ci_low"] > 0:
        verb = "raises"
    elif row["ci_high"] < 0:
        verb = "lowers"
    else:
        signed, hw = format_estimate(diff, half)
        if signed != "n/a" and float(signed) == 0.0:
            signed = signed.lstrip("-")  # no "-0.0"
        elif diff > 0:
            signed = "+" + signed
        if currency:
            signed = signed[0] + currency + signed[1:] if signed[0] in "+-" else currency + signed
        return f"{label} does not change {target} significantly ({signed} ± {hw}{unit})"
    return f"{label} {verb} {target} by {currency}{value} ± {hw}{unit}"


def best_sentence(selection: Subset | TwoStageSelection | None, metric: str,
                  minimize: bool) -> str | None:
    """The sentence naming the best configuration (None without a selection)."""
    if selection is None:
        return None
    direction = "lower" if minimize else "higher"
    if isinstance(selection, Subset):
        others = [k for k in selection.keep if k != selection.best]
        tail = (f"cannot be ruled out at {selection.confidence * 100:g}%: {', '.join(others)}"
                if others else f"every other configuration is ruled out at "
                               f"{selection.confidence * 100:g}%")
        return f"Best on {metric} ({direction} is better): {selection.best} ({tail})."
    if selection.best is None:
        return (f"Selecting the best on {metric} needs more replications "
                f"({selection.procedure}, P(correct) ≥ {selection.pstar:g}).")
    return (f"The {selection.procedure} two-stage selection picks {selection.best}; it is right "
            f"with probability ≥ {selection.pstar:g} whenever the best is at least "
            f"{selection.indifference_zone:g} better on {metric} than the others.")


CURRENCIES = frozenset({"$", "€", "£", "¥"})  # units written before the number


def humanise(name: str) -> str:
    """A metric's name as words: ``mean_time_in_restaurant`` -> ``mean time in restaurant``."""
    return name.replace("_", " ")


def format_quantity(value: float, half_width: float, unit: str | None = None) -> str:
    """``value ± half_width unit``, rounded to what the half-width supports; a ``fraction`` is
    shown as a percentage (``0.17 ± 0.01`` -> ``17 ± 1 %``)."""
    scale = 100.0 if unit == "fraction" else 1.0
    text, half = format_estimate(value * scale, half_width * scale)
    if unit in CURRENCIES:  # $1,020 ± 15, not 1020 ± 15 $
        sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
        text = f"{sign}{unit}{digits}"
        return text if half in ("0", "n/a") else f"{text} ± {half}"
    suffix = unit_suffix(unit)
    if half in ("0", "n/a"):
        return f"{text}{suffix}"
    return f"{text} ± {half}{suffix}"


def format_value(value: float, half_width: float, unit: str | None = None,
                 with_unit: bool = True) -> str:
    """``value`` with its unit, rounded to the precision ``half_width`` supports (no ±);
    ``with_unit=False`` leaves out a unit written after the number (not a currency before it)."""
    scale = 100.0 if unit == "fraction" else 1.0
    text, _ = format_estimate(value * scale, half_width * scale)
    if unit in CURRENCIES:
        return f"-{unit}{text[1:]}" if text.startswith("-") else f"{unit}{text}"
    return text + (unit_suffix(unit) if with_unit else "")


def unit_suffix(unit: str | None) -> str:
    """`` min`` for "min", `` %`` for a fraction shown as a percentage, "" without a unit."""
    if not unit:
        return ""
    return " %" if unit == "fraction" else f" {unit}"


def describe_configuration(config: Mapping[str, Any]) -> str:
    """``tables 8, waiters 2``: a configuration by its varying values."""
    return ", ".join(f"{name} {value}" for name, value in config.items())


def _estimate(summary: pl.DataFrame, key: str, metric: str) -> tuple[float, float] | None:
    rows = summary.filter((pl.col("config_key") == key) & (pl.col("metric") == metric))
    if rows.height == 0:
        return None
    half = rows["half_width"][0]
    return rows["mean"][0], (float("nan") if half is None else half)


def _paired_row(comparisons: pl.DataFrame, key: str, reference: str,
                metric: str) -> dict[str, Any] | None:
    rows = comparisons.filter((pl.col("config_key") == key) & (pl.col("baseline_key") == reference)
                              & (pl.col("metric") == metric)).sort("paired", descending=True)
    return rows.row(0, named=True) if rows.height else None


def recommendation_text(rec: Recommendation, *, metric: str, summary: pl.DataFrame,
                        comparisons: pl.DataFrame, baseline: str | None,
                        configurations: Mapping[str, Mapping[str, Any]] | None = None,
                        units: Mapping[str, str] | None = None,
                        tradeoffs: Sequence[str] = (), nothing_significant: bool = False,
                        max_items: int = 3, cost_metric: str | None = None) -> str:
    """The first paragraph of the answer: the decision, its evidence, the equivalent
    alternatives and the trade-offs on the other responses, in the file's names and units.

    ``rec``: ``selection.recommend`` on ``metric``; ``summary``/``comparisons``: the experiment's
    frames (comparisons against ``baseline``, or against the best without one);
    ``configurations``: config_key -> varying parameters; ``tradeoffs``: the other responses to
    report for the recommended configuration against the baseline; ``nothing_significant``: no
    configuration differs significantly from the baseline on ``metric``.
    """
    units = units or {}
    configurations = configurations or {}
    unit = units.get(metric)
    name = humanise(metric)
    direction = "lower" if rec.minimize else "higher"
    choice = rec.choice

    def label(key: str) -> str:
        if baseline and key in configurations and baseline in configurations and key != baseline:
            change = describe_change(configurations[key], configurations[baseline])
            if change:
                return f"{change} ({key})"
        elif not baseline and configurations.get(key):
            return f"{describe_configuration(configurations[key])} ({key})"
        return key

    current = (f"the current configuration ({describe_configuration(configurations[baseline])})"
               if baseline and configurations.get(baseline) else f"the baseline {baseline}")
    zone = (format_quantity(rec.indifference_zone, 0.0, unit)
            if rec.indifference_zone is not None else None)
    sentences = []
    if nothing_significant and baseline:
        if choice == baseline:
            sentences.append(f"Keep {current}: no configuration tested changes {name} "
                             f"significantly.")
        else:
            sentences.append(f"Recommendation: {label(choice)}. No configuration tested changes "
                             f"{name} significantly, and this one is the cheapest.")
    elif choice == baseline:
        why = (f"no change improves {name} by more than the indifference zone of {zone}" if zone
               else f"no change is significantly better on {name}")
        sentences.append(f"Keep {current}: {why} ({direction} is better).")
    else:
        sentences.append(f"Recommendation: {label(choice)}, by {name} ({direction} is better).")
    sentences.append(_evidence(rec, metric, summary, comparisons, baseline, unit, label))
    sentences.append(_equivalents(rec, metric, unit, zone, label, max_items,
                                  units.get(cost_metric) if cost_metric else None))
    reference = baseline if baseline and baseline != choice else None
    if reference is None and rec.best != choice:
        reference = rec.best
    if reference is not None:
        parts = []
        for other in tradeoffs:
            if other == metric:
                continue
            mine, theirs = _estimate(summary, choice, other), _estimate(summary, reference, other)
            if mine is None or theirs is None:
                continue
            parts.append(f"{humanise(other)} {format_quantity(*mine, units.get(other))} instead "
                         f"of {format_quantity(*theirs, units.get(other))}")
        if parts:
            against = current if reference == baseline else label(reference)
            sentences.append(f"Against {against}: " + "; ".join(parts) + ".")
    return " ".join(s for s in sentences if s)


def _evidence(rec: Recommendation, metric: str, summary: pl.DataFrame, comparisons: pl.DataFrame,
              baseline: str | None, unit: str | None, label: Any) -> str | None:
    choice, name = rec.choice, humanise(metric)
    reference = baseline if baseline and baseline != choice else None
    if reference is None and rec.best != choice:
        reference = rec.best
    if reference is None:
        own = _estimate(summary, choice, metric)
        return f"Its mean {name} is {format_quantity(*own, unit)}." if own else None
    row = _paired_row(comparisons, choice, reference, metric)
    flipped = row is None
    if flipped:  # the frame may hold the pair the other way round
        row = _paired_row(comparisons, reference, choice, metric)
        if row is None:
            return None
    sign = -1.0 if flipped else 1.0
    diff = sign * row["mean_difference"]
    low, high = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    half = high - diff
    how = (f"{row['confidence'] * 100:g}% CI, "
           + (f"paired over {row['n']} replications" if row["paired"] else
              f"Welch, {row['n']} replications each"))
    against = "it" if reference == baseline else f"the best sample mean, {label(reference)}"
    mine, theirs = _estimate(summary, choice, metric), _estimate(summary, reference, metric)
    means = ""
    if mine and theirs:
        means = (f"{format_value(*theirs, unit, with_unit=False)} → "
                 f"{format_value(*mine, unit)}; ")
    if (low > 0 or high < 0) and reference != baseline:
        side = "higher" if diff > 0 else "lower"
        return (f"Its {name} is {format_quantity(abs(diff), half, unit)} {side} than that of "
                f"{against} ({means}{how}).")
    if low > 0 or high < 0:
        verb = "raises" if diff > 0 else "lowers"
        return (f"Against the baseline it {verb} {name} by "
                f"{format_quantity(abs(diff), half, unit)} ({means}{how}).")
    if reference == baseline:
        return (f"Against the baseline it does not change {name} significantly "
                f"({format_quantity(diff, half, unit)}; {how}).")
    return (f"It differs from {against} by {format_quantity(diff, half, unit)} on {name}, not "
            f"significantly ({how}).")


def _equivalents(rec: Recommendation, metric: str, unit: str | None, zone: str | None,
                 label: Any, max_items: int, cost_unit: str | None = None) -> str | None:
    others = [k for k in rec.equivalent if k != rec.choice]
    if not others:
        return None
    shown = others[:max_items]
    rest = len(others) - len(shown)
    names = ", ".join(label(k) for k in shown) + (f" and {rest} more" if rest else "")
    verb = "is" if len(others) == 1 else "are"
    where = (f"within the indifference zone ({zone}) of the best on {humanise(metric)}" if zone
             else "as good on the evidence")
    if rec.reason == "cost" and rec.cost is not None:
        costs = ", ".join(format_quantity(rec.cost[k], 0.0, cost_unit) for k in shown)
        return (f"{names} {verb} {where} but cost{'s' if len(others) == 1 else ''} more "
                f"({costs} against {format_quantity(rec.cost[rec.choice], 0.0, cost_unit)}).")
    if rec.reason == "fewest changes" and rec.changes is not None:
        counts = ", ".join(str(rec.changes[k]) for k in shown)
        mine = rec.changes[rec.choice]
        return (f"{names} {verb} {where} but change{'s' if len(others) == 1 else ''} more "
                f"({counts} parameters instead of {mine}).")
    return f"{names} {verb} also {where}."
