"""The answer in plain sentences: the differences to the baseline with their intervals, and the best.

Everything in the sentences comes from the data (configuration keys, metric names, parameter
values when given); nothing is specific to a model. Numbers are rounded to the precision their
half-width supports: the half-width to one significant digit (two when it starts with 1 or 2), the
estimate to the same decimal place, e.g. ``6.1 ± 0.8`` or ``1.24 ± 0.15``.
"""

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from simlab_pipelines.analysis.selection import Subset, TwoStageSelection


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
        return f"{label} does not change {target} significantly ({signed} ± {hw}{unit})"
    return f"{label} {verb} {target} by {value} ± {hw}{unit}"


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
