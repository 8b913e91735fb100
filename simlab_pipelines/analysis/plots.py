"""Pictures of an experiment: confidence intervals per configuration, differences to the baseline.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, no global
backend switch, safe in worker processes and threads) and returned as PNG bytes, so that callers
can inline them in HTML, store them, or attach them to Dagster metadata.
"""

import io
import math
from collections.abc import Sequence

import polars as pl

_PAIRED, _UNPAIRED, _POINT = "#1f6fb4", "#b0b0b0", "#222222"


def Figure(**kwargs):  # named as matplotlib's class, imported when a plot is drawn
    """A matplotlib Figure; matplotlib (~1 s of imports) loads with the first plot, not with
    every process that imports the analysis (a sweep's start, a run pod, the sensors)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _height(rows: int) -> float:
    return min(2.0 + 0.35 * rows, 30.0)


def _select(frame: pl.DataFrame, metric: str, experiment: str | None, argument: str) -> pl.DataFrame:
    rows = frame.filter(pl.col("metric") == metric)
    if experiment is not None:
        rows = rows.filter(pl.col("experiment") == experiment)
    if rows.height == 0:
        raise ValueError(f"{argument}: no rows for metric {metric!r}"
                         + (f" in experiment {experiment!r}" if experiment else ""))
    return rows


def ci_plot(summary: pl.DataFrame, metric: str, *, experiment: str | None = None,
            highlight: str | None = None, title: str | None = None) -> bytes:
    """Each configuration's mean of ``metric`` with its confidence interval (PNG bytes).

    ``summary``: the frame of ``intervals.summarise``. ``highlight``: a config_key drawn in colour
    (e.g. the selected best or the baseline).
    """
    rows = _select(summary, metric, experiment, "summary").sort("config_key", descending=True)
    keys = rows["config_key"].to_list()
    means = rows["mean"].to_list()
    halves = [0.0 if h is None or math.isnan(h) else h for h in rows["half_width"].to_list()]
    figure = Figure(figsize=(7.0, _height(len(keys))))
    axes = figure.add_subplot()
    for y, (key, mean, half) in enumerate(zip(keys, means, halves, strict=True)):
        colour = _PAIRED if key == highlight else _POINT
        axes.errorbar(mean, y, xerr=half, fmt="o", color=colour, capsize=4)
    axes.set_yticks(range(len(keys)), keys)
    confidence = rows["confidence"][0] * 100
    axes.set_xlabel(f"{metric} (mean, {confidence:g}% confidence interval)")
    axes.set_title(title or metric)
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def differences_plot(comparisons: pl.DataFrame, metric: str, *, experiment: str | None = None,
                     title: str | None = None) -> bytes:
    """Differences to the baseline with paired (CRN) and unpaired intervals side by side (PNG).

    ``comparisons``: the frame of ``comparisons.compare``. Each configuration gets a paired
    interval (blue) and, just below it, the unpaired Welch interval (grey): the gap between the
    two is the variance reduction bought by common random numbers.
    """
    rows = _select(comparisons, metric, experiment, "comparisons")
    pairs = rows.select("config_key", "baseline_key").unique().sort(
        "baseline_key", "config_key", descending=True)
    labels = [f"{c} − {b}" for c, b in pairs.iter_rows()]
    figure = Figure(figsize=(7.5, _height(len(labels))))
    axes = figure.add_subplot()
    drawn = set()
    for y, (config, base) in enumerate(pairs.iter_rows()):
        for paired, offset, colour in ((True, 0.15, _PAIRED), (False, -0.15, _UNPAIRED)):
            match = rows.filter((pl.col("config_key") == config) & (pl.col("baseline_key") == base)
                                & (pl.col("paired") == paired))
            if match.height == 0:
                continue
            row = match.row(0, named=True)
            half = row["ci_high"] - row["mean_difference"]
            label = ("paired (CRN)" if paired else "unpaired (Welch)") if paired not in drawn else None
            drawn.add(paired)
            axes.errorbar(row["mean_difference"], y + offset,
                          xerr=0.0 if math.isnan(half) else half, fmt="o", color=colour,
                          capsize=4, label=label)
    axes.axvline(0.0, color="#aa3333", linewidth=1)
    axes.set_yticks(range(len(labels)), labels)
    confidence = rows["confidence"][0] * 100
    axes.set_xlabel(f"difference in {metric} ({confidence:g}% confidence interval)")
    axes.set_title(title or f"{metric}: difference to the baseline")
    axes.grid(axis="x", alpha=0.3)
    if drawn:
        axes.legend(loc="best", fontsize="small")
    return _png(figure)


def markdown_table(frame: pl.DataFrame, columns: Sequence[str] | None = None,
                   digits: int = 4) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (floats to ``digits`` significant digits)."""
    columns = list(columns) if columns is not None else frame.columns
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"markdown_table: no column(s) {', '.join(missing)}")
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if frame.schema[c].is_numeric() else "---"
                               for c in columns) + " |"]
    for row in frame.select(columns).iter_rows():
        lines.append("| " + " | ".join(format_cell(v, digits).replace("|", "\\|") for v in row)
                     + " |")
    return "\n".join(lines) + "\n"


def format_cell(value: object, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
