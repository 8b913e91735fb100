"""Pictures of an experiment: confidence intervals per configuration, differences to the baseline
(SVG, ``svg.py``), and for designed experiments which factors matter (matplotlib).

Every plot is returned as bytes (SVG text or PNG), so that callers can inline them in HTML
(``img_tag``), store them, or attach them to Dagster metadata (``data_uri``). matplotlib figures
use its object-oriented API on the Agg canvas (no pyplot, no global backend switch, safe in worker
processes and threads).
"""

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence

import polars as pl

from simlab_pipelines.analysis import svg

_PAIRED, _UNPAIRED, _POINT = "#1f6fb4", "#b0b0b0", "#222222"
# Colours of highlighted configurations, by role (the report's legend uses the same ones).
ROLE_COLOURS = {"recommended": "#1a7f37", "today's setting": "#1f6fb4", "best sample mean": "#b35900",
                "highlighted": _PAIRED}


def axis_label(metric: str, unit: str | None) -> str:
    """``metric (unit)``; a fraction is drawn as it is stored (0 to 1)."""
    return f"{metric} ({unit})" if unit else metric


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
            highlight: str | None = None, title: str | None = None, unit: str | None = None,
            highlights: Mapping[str, str] | None = None) -> bytes:
    """Each configuration's mean of ``metric`` with its confidence interval (SVG bytes).

    ``summary``: the frame of ``intervals.summarise``. ``highlight``: a config_key drawn in colour
    (e.g. the selected best or the baseline); ``highlights``: config_key -> role (a key of
    ``ROLE_COLOURS``: "recommended", "today's setting", "best sample mean"), drawn in the role's colour
    with a legend. ``unit``: shown on the axis.
    """
    roles = dict(highlights or {})
    if highlight is not None and highlight not in roles:
        roles[highlight] = "highlighted"
    rows = _select(summary, metric, experiment, "summary").sort("config_key")
    chart_rows = []
    for key, mean, half in rows.select("config_key", "mean", "half_width").iter_rows():
        role = roles.get(key)
        colour = ROLE_COLOURS.get(role, _PAIRED) if role else _POINT
        chart_rows.append(svg.Row(key, [svg.Mark(_number(mean), _number(half), colour)]))
    shown = dict.fromkeys(roles[k] for k in rows["config_key"].to_list()
                          if roles.get(k) not in (None, "highlighted"))
    confidence = rows["confidence"][0] * 100
    return svg.interval_chart(
        chart_rows, title=title or metric,
        x_label=f"{axis_label(metric, unit)}: mean, {confidence:g}% confidence interval",
        legend=[(role, ROLE_COLOURS[role]) for role in shown])


def differences_plot(comparisons: pl.DataFrame, metric: str, *, experiment: str | None = None,
                     title: str | None = None, unit: str | None = None) -> bytes:
    """Differences to the baseline with paired (CRN) and unpaired intervals side by side (SVG).

    ``comparisons``: the frame of ``comparisons.compare``. Each configuration gets a paired
    interval (blue) and, just below it, the unpaired Welch interval (grey): the gap between the
    two is the variance reduction bought by common random numbers.
    """
    rows = _select(comparisons, metric, experiment, "comparisons")
    marks: dict[tuple[str, str], list[svg.Mark]] = {}
    drawn = set()
    for config, base, paired, mean, high in rows.select(
            "config_key", "baseline_key", "paired", "mean_difference", "ci_high").iter_rows():
        mean = _number(mean)
        marks.setdefault((config, base), []).append(svg.Mark(
            mean, _number(high) - mean, _PAIRED if paired else _UNPAIRED,
            offset=-0.18 if paired else 0.18))
        drawn.add(bool(paired))
    chart_rows = [svg.Row(f"{config} − {base}", marks[config, base])
                  for config, base in sorted(marks, key=lambda pair: (pair[1], pair[0]))]
    legend = [(label, colour) for paired, label, colour in (
        (True, "paired (CRN)", _PAIRED), (False, "unpaired (Welch)", _UNPAIRED)) if paired in drawn]
    confidence = rows["confidence"][0] * 100
    return svg.interval_chart(
        chart_rows, title=title or f"{metric}: difference to the baseline",
        x_label=f"difference in {axis_label(metric, unit)} ({confidence:g}% confidence interval)",
        legend=legend, reference=0.0)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def data_uri(image: bytes) -> str:
    """A ``data:`` URI of a plot: SVG (the interval charts) or PNG (matplotlib's)."""
    mime = "image/svg+xml" if image.lstrip().startswith(b"<svg") else "image/png"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def img_tag(image: bytes, alt: str) -> str:
    """An HTML ``<img>`` showing ``image`` inline (the report has no external references)."""
    return f'<img alt="{html.escape(alt)}" src="{data_uri(image)}">'


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


# ---------------------------------------------------------------------------------------------
# Designed experiments: which factors matter (analysis.sensitivity)

_SENSITIVITY_BARS = {"saltelli": ("S1", "ST"), "morris": ("mu_star",),
                     "regression": ("variance_share",)}
_BAR_LABELS = {"S1": "first order (S1)", "ST": "total (ST)", "mu_star": "μ* (mean |effect|)",
               "variance_share": "share of variance (metamodel)"}


def tornado_plot(sensitivity: pl.DataFrame, metric: str, *, experiment: str | None = None,
                 title: str | None = None) -> bytes:
    """The factors (and interactions) of ``metric``, largest first, each with its interval (PNG).

    ``sensitivity``: the ``sensitivity`` table. Bars: S1 and ST for a Saltelli design, μ* for
    Morris, each term's share of the variance for a metamodel.
    """
    rows = _select(sensitivity, metric, experiment, "sensitivity")
    statistics = _SENSITIVITY_BARS.get(rows["method"][0], ("variance_share",))
    rows = rows.filter(pl.col("statistic").is_in(statistics))
    order = (rows.filter(pl.col("statistic") == statistics[-1])
             .sort("value", descending=False)["factor"].to_list())
    figure = Figure(figsize=(7.0, _height(len(order))))
    axes = figure.add_subplot()
    height = 0.8 / len(statistics)
    for s, (statistic, colour) in enumerate(zip(statistics, (_POINT, _PAIRED), strict=False)):
        for y, factor in enumerate(order):
            match = rows.filter((pl.col("statistic") == statistic) & (pl.col("factor") == factor))
            if match.height == 0:
                continue
            row = match.row(0, named=True)
            low, high = row["ci_low"], row["ci_high"]
            error = ([[max(row["value"] - low, 0.0)], [max(high - row["value"], 0.0)]]
                     if math.isfinite(low) and math.isfinite(high) else None)
            axes.barh(y + (s - (len(statistics) - 1) / 2) * height, row["value"], height=height,
                      color=colour, xerr=error, capsize=3, alpha=0.85,
                      label=_BAR_LABELS.get(statistic, statistic) if y == 0 else None)
    axes.set_yticks(range(len(order)), order)
    axes.axvline(0.0, color="#888888", linewidth=0.8)
    confidence = rows["confidence"][0] * 100 if rows.height else 95
    axes.set_xlabel(f"sensitivity of {metric} ({confidence:g}% intervals)")
    axes.set_title(title or f"{metric}: which factors matter")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def main_effects_plot(summary: pl.DataFrame, configurations: dict[str, dict[str, float]],
                      factors: Sequence[str], metric: str, *, log_scale: Sequence[str] = (),
                      bins: int = 6) -> bytes:
    """One panel per factor: each configuration's mean of ``metric`` against the factor's value
    (points), and the mean in each of ``bins`` equal-count bins of the factor (the line): the
    factor's main effect averaged over the others, as the design spreads them (PNG)."""
    rows = _select(summary, metric, None, "summary")
    means = dict(zip(rows["config_key"].to_list(), rows["mean"].to_list(), strict=True))
    keys = [k for k in configurations if k in means and means[k] is not None]
    columns = min(len(factors), 3)
    lines = math.ceil(len(factors) / columns)
    figure = Figure(figsize=(3.2 * columns, 2.8 * lines))
    for i, factor in enumerate(factors):
        axes = figure.add_subplot(lines, columns, i + 1)
        pairs = sorted((configurations[k][factor], means[k]) for k in keys)
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        axes.plot(xs, ys, "o", color=_UNPAIRED, markersize=3)
        size = max(1, math.ceil(len(pairs) / bins))
        groups = [pairs[j:j + size] for j in range(0, len(pairs), size)]
        axes.plot([sum(p[0] for p in g) / len(g) for g in groups],
                  [sum(p[1] for p in g) / len(g) for g in groups], "-", color=_PAIRED,
                  linewidth=2)
        if factor in log_scale:
            axes.set_xscale("log")
        axes.set_xlabel(factor)
        if i % columns == 0:
            axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
    figure.suptitle(f"{metric}: main effects")
    figure.tight_layout()
    return _png(figure)


def metamodel_fit_plot(fitted: pl.DataFrame, metric: str, *, r_squared: float | None = None,
                       lack_of_fit_p: float | None = None) -> bytes:
    """Each configuration's mean of ``metric`` against the metamodel's prediction, with the
    diagonal: points off it are what the main-effects + interactions metamodel misses (PNG)."""
    rows = _select(fitted, metric, None, "fitted")
    figure = Figure(figsize=(5.0, 5.0))
    axes = figure.add_subplot()
    axes.plot(rows["fitted"].to_list(), rows["mean"].to_list(), "o", color=_PAIRED,
              markersize=4)
    low = min(rows["fitted"].min(), rows["mean"].min())
    high = max(rows["fitted"].max(), rows["mean"].max())
    axes.plot([low, high], [low, high], "-", color="#aa3333", linewidth=1)
    axes.set_xlabel(f"{metric}: metamodel prediction")
    axes.set_ylabel(f"{metric}: mean over replications")
    details = []
    if r_squared is not None and math.isfinite(r_squared):
        details.append(f"R² = {r_squared:.3f}")
    if lack_of_fit_p is not None and math.isfinite(lack_of_fit_p):
        details.append(f"lack of fit p = {lack_of_fit_p:.2g}")
    axes.set_title(f"{metric}: metamodel fit" + (f" ({', '.join(details)})" if details else ""))
    axes.grid(alpha=0.3)
    return _png(figure)
