"""A self-contained HTML report of an experiment: the answer, tables and plots (inlined PNG).

For the person who asked, in this order: the recommendation (the answer's first paragraph), a
one-screen trade-off table (configurations x headline responses, mean ± half-width in units,
highlighted rows explained in a legend), a table of contents, then the statistics (the answer's
second paragraph, a section per metric with its plots and tables, the selection, warm-up and
replications). A column that would repeat one value on every row is left out of a table and
said once above it.

The file has no external references (images are ``data:`` URIs, SVG charts and a designed
experiment's PNG plots; the style is inline), so it can be mailed, archived or served as is. It is
written atomically: to a temporary file in the same directory, flushed to disk, then renamed over
the target, so a reader never sees a half-written report and a failure leaves the previous one in place.
"""

import html
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from simlab_pipelines.analysis.answer import TODAY, humanise
from simlab_pipelines.analysis.plots import ci_plot, differences_plot, format_cell, img_tag
from simlab_pipelines.analysis.selection import Recommendation, Subset, TwoStageSelection
from simlab_pipelines.analysis.sequential import ReplicationPlan
from simlab_pipelines.analysis.units import format_quantity, parse_unit
from simlab_pipelines.analysis.warmup import WarmupSuggestion

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
div.answer{font-size:1.15rem;background:#eef5fb;border-left:4px solid #1f6fb4;padding:.3rem 1rem}
div.answer ul{margin-top:-.6rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4} td.text{text-align:left}
img{max-width:100%;display:block;margin:1rem 0}
p.warning{color:#8a4b00;background:#fff6e5;padding:.5rem 1rem}
p.constant{color:#555;font-size:.85rem;margin:.5rem 0 -.5rem}
nav ol{columns:2;font-size:.9rem}
tr.recommended td{background:#e6f4ea} tr.today-s-setting td{background:#e8f0fa}
tr.no-results td{color:#8a4b00}
tr.best-sample-mean td{background:#fdf0e0}
span.swatch{display:inline-block;width:.9rem;height:.9rem;margin:0 .3rem 0 1rem;
vertical-align:middle;border:1px solid #999}
"""
# Row colours of highlighted configurations (the plots use plots.ROLE_COLOURS for the same roles).
_ROLE_BACKGROUND = {"recommended": "#e6f4ea", TODAY: "#e8f0fa", "best sample mean": "#fdf0e0"}


def html_table(frame: pl.DataFrame, columns: Sequence[str] | None = None, digits: int = 4,
               drop_constant: bool = True) -> str:
    """An HTML table of ``frame`` (cells escaped; floats to ``digits`` significant digits).

    With ``drop_constant``, a column holding one value on every row (of two rows or more) is left
    out and said once above the table (``n = 100; confidence = 0.95``).
    """
    columns = list(columns) if columns is not None else frame.columns
    said = ""
    if drop_constant and frame.height > 1:
        constant = [c for c in columns if frame[c].n_unique() == 1]
        if constant and len(constant) < len(columns):
            said = ('<p class="constant">' + html.escape("; ".join(
                f"{c} = {format_cell(frame[c][0], digits)}" for c in constant)) + "</p>")
            columns = [c for c in columns if c not in constant]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in frame.select(columns).iter_rows():
        cells = "".join(
            f'<td{"" if isinstance(v, int | float) and not isinstance(v, bool) else " class=text"}>'
            f"{html.escape(format_cell(v, digits))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"{said}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-") or "section"


def tradeoff_table(summary: pl.DataFrame, metrics: Sequence[str], *,
                   configurations: Mapping[str, Mapping[str, Any]] | None = None,
                   units: Mapping[str, str] | None = None,
                   roles: Mapping[str, str] | None = None,
                   descriptions: Mapping[str, str] | None = None,
                   missing: Mapping[str, tuple[int, int]] | None = None) -> str:
    """``tradeoff_records`` as HTML: rows of ``roles`` (config_key -> "recommended", TODAY,
    "best sample mean") first and highlighted, with a legend."""
    esc = html.escape
    roles = roles or {}
    records = tradeoff_records(summary, metrics, configurations=configurations, units=units,
                               roles=roles, descriptions=descriptions, missing=missing)
    columns = [c for c in (records[0] if records else {}) if c not in ("configuration", "role")]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for record in records:
        attr = f' class="{_slug(record["role"])}"' if record["role"] else ""
        values = "".join(f"<td>{esc(record[c])}</td>" for c in columns)
        body.append(f"<tr{attr}><td class=text>{esc(record['configuration'])}</td>{values}</tr>")
    legend = "".join(f'<span class="swatch" style="background:{_ROLE_BACKGROUND[r]}"></span>'
                     f"{esc(r)}" for r in dict.fromkeys(roles.values()) if r in _ROLE_BACKGROUND)
    table = (f"<table><thead><tr><th>configuration</th>{head}</tr></thead>"
             f"<tbody>{''.join(body)}</tbody></table>")
    rows = summary.filter(pl.col("metric").is_in(list(metrics)))
    confidence = rows["confidence"][0] * 100 if rows.height else 95.0
    note = f'<p class="constant">{esc(TRADEOFF_FOOTNOTE.format(confidence=confidence))}</p>'
    return table + (f"<p>Legend:{legend}</p>" if legend else "") + note


def tradeoff_records(summary: pl.DataFrame, metrics: Sequence[str], *,
                     configurations: Mapping[str, Mapping[str, Any]] | None = None,
                     units: Mapping[str, str] | None = None,
                     roles: Mapping[str, str] | None = None,
                     descriptions: Mapping[str, str] | None = None,
                     missing: Mapping[str, tuple[int, int]] | None = None
                     ) -> list[dict[str, Any]]:
    """The trade-off table as plain rows (for the UI): configuration, its role, the parameters
    that vary, then ``metric (unit)``: ``mean ± half-width`` per metric. A column is headed by
    the metric's description when it is short (``descriptions``), else by its name.
    ``missing``: config_key -> (replications missing, wanted): a configuration without any
    result gets a row saying so (role "no results"), one with some a ``missing`` column."""
    units, roles, configurations = units or {}, roles or {}, configurations or {}
    missing = {k: v for k, v in (missing or {}).items() if v[0] > 0}
    descriptions = descriptions or {}
    rows = summary.filter(pl.col("metric").is_in(list(metrics)))
    order = {"recommended": 0, TODAY: 1, "best sample mean": 2}
    present = set(rows["config_key"].to_list())
    roles = {**roles, **{k: "no results" for k in missing if k not in present}}
    keys = sorted(present | set(roles) & set(missing),
                  key=lambda k: (order.get(roles.get(k), 3), k))
    params = [p for p in dict.fromkeys(p for k in keys for p in configurations.get(k, {}))
              if len({repr(configurations.get(k, {}).get(p)) for k in keys}) > 1]
    cells = {(k, m): (mean, half) for k, m, mean, half in
             rows.select("config_key", "metric", "mean", "half_width").iter_rows()}
    # NaN replications (undefined in them): counted beside the cell, "undefined" without any value
    undefined = ({(k, m): (u, n) for k, m, u, n in rows.filter(pl.col("undefined") > 0)
                  .select("config_key", "metric", "undefined", "n").iter_rows()}
                 if "undefined" in rows.columns else {})
    shown = [m for m in metrics if any((k, m) in cells for k in keys)]
    out = []
    for key in keys:
        record: dict[str, Any] = {"configuration": key, "role": roles.get(key, "")}
        config = configurations.get(key, {})
        # an absent value (M/M/c/K's capacity None: infinite) as the answer says it, not "None"
        record |= {p: "not set" if p in config and config[p] is None else str(config.get(p, ""))
                   for p in params}
        for m in shown:
            mean, half = cells.get((key, m), (None, None))
            words = descriptions.get(m)
            header = words if words and len(words) <= 40 else humanise(m)
            cell = _cell(mean, half, units.get(m))
            if (key, m) in undefined:
                lost, n = undefined[(key, m)]
                cell = "undefined" if n == 0 else f"{cell} ({lost} of {lost + n} undefined)"
            record[header + _header_unit(units.get(m))] = cell
        if missing:
            lost, wanted = missing.get(key, (0, 0))
            record["missing"] = (f"all {wanted} replications" if lost and lost >= wanted else
                                 f"{lost} of {wanted}" if lost else "")
        out.append(record)
    return out


def tradeoff_schema(metrics: Sequence[str], units: Mapping[str, str] | None = None,
                    descriptions: Mapping[str, str] | None = None) -> dict[str, str]:
    """For a trade-off table headed by names (``tradeoff_records`` without ``descriptions``,
    as the UI shows it: its tables do not wrap their headers): each column's description."""
    units, descriptions = units or {}, descriptions or {}
    return {humanise(m) + _header_unit(units.get(m)): descriptions[m]
            for m in metrics if descriptions.get(m)}


TRADEOFF_FOOTNOTE = (
    "Each cell: a configuration's mean over its replications ± the half-width of its "
    "{confidence:g} % confidence interval. The answer's differences have a narrower ±: they are "
    "paired, each replication of one configuration compared with the same replication of the "
    "other, which drew the same random numbers, so the noise they share cancels; the ± here is "
    "that of each mean on its own (unpaired).")


def highlight_roles(baseline: str | None, recommendation: Recommendation | None,
                    best: str | None) -> dict[str, str]:
    """The configurations a reader should find at once: recommended, current, best sample mean
    (a configuration keeps its first role)."""
    roles: dict[str, str] = {}
    if recommendation is not None:
        roles[recommendation.choice] = "recommended"
        best = recommendation.best
    if baseline is not None:
        roles.setdefault(baseline, TODAY)
    if best is not None:
        roles.setdefault(best, "best sample mean")
    return roles


def _in_cell(unit: str | None) -> bool:
    """Percentages and currencies (with their "a day") are written in the cells; other units
    in the column's header."""
    parts = parse_unit(unit)
    return parts.percent or bool(parts.before)


def _header_unit(unit: str | None) -> str:
    return f" ({unit})" if unit and not _in_cell(unit) else ""


def _cell(mean: float | None, half: float | None, unit: str | None) -> str:
    if mean is None:
        return ""
    half = float("nan") if half is None else half
    return format_quantity(mean, half, unit if _in_cell(unit) else None)


def _answer_html(first: str) -> list[str]:
    """The answer's first paragraph in one box: its sentences as paragraphs, its "- " lines
    (the effects, the options) as lists."""
    blocks: list[tuple[str, list[str]]] = []  # ("p" | "ul", lines)
    for line in first.split("\n"):
        kind = "ul" if line.startswith("- ") else "p"
        if blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(line[2:] if kind == "ul" else line)
        else:
            blocks.append((kind, [line[2:] if kind == "ul" else line]))
    inner = "".join(
        "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in lines) + "</ul>" if kind == "ul"
        else f"<p>{html.escape(' '.join(lines))}</p>" for kind, lines in blocks)
    return [f'<div class="answer">{inner}</div>']


def render_report(*, title: str, answer: str, summary: pl.DataFrame | None = None,
                  comparisons: pl.DataFrame | None = None,
                  selection: Subset | TwoStageSelection | None = None,
                  warmup: Sequence[WarmupSuggestion] = (),
                  plans: Sequence[ReplicationPlan] = (), metrics: Sequence[str] | None = None,
                  highlight: str | None = None, notes: Sequence[str] = (),
                  headline: Sequence[str] = (), units: Mapping[str, str] | None = None,
                  configurations: Mapping[str, Mapping[str, Any]] | None = None,
                  roles: Mapping[str, str] | None = None,
                  sections_before: Sequence[tuple[str, str]] = (),
                  descriptions: Mapping[str, str] | None = None,
                  missing: Mapping[str, tuple[int, int]] | None = None,
                  footer: str | None = None) -> str:
    """The report as an HTML string (see ``write_report`` for the arguments)."""
    esc = html.escape
    units = units or {}
    first, _, rest = answer.partition("\n\n")
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{esc(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
           f"<h1>{esc(title)}</h1>", *_answer_html(first)]
    for note in notes:
        out.append(f'<p class="warning">{esc(note)}</p>')
    for suggestion in warmup:
        if suggestion.warning:
            out.append(f'<p class="warning">{esc(suggestion.warning)}</p>')

    if metrics is None:
        found: list[str] = []
        for frame in (summary, comparisons):
            if frame is not None:
                found += [m for m in frame["metric"].unique().sort().to_list() if m not in found]
        metrics = found
    sections: list[tuple[str, str]] = []  # (anchor, heading) for the table of contents
    body: list[str] = []

    def section(heading: str) -> None:
        anchor = _slug(heading)
        sections.append((anchor, heading))
        body.append(f'<h2 id="{anchor}">{esc(heading)}</h2>')

    roles = dict(roles or {})
    if highlight is not None and highlight not in roles:
        roles[highlight] = "highlighted"
    if summary is not None and headline:
        table = tradeoff_table(summary, headline, configurations=configurations, units=units,
                               roles=roles, descriptions=descriptions, missing=missing)
        out.append('<h2 id="trade-offs">Trade-offs</h2>' + table)
    if rest:
        section("Statistics")
        body.append(f"<p>{esc(rest)}</p>")
    for heading, fragment in sections_before:
        section(heading)
        body.append(fragment)
    plot_roles = {k: r for k, r in roles.items()}
    for metric in metrics:
        unit = units.get(metric)
        section(metric + (f" ({unit})" if unit else ""))
        if summary is not None and summary.filter(pl.col("metric") == metric).height:
            rows = summary.filter(pl.col("metric") == metric)
            body.append(img_tag(ci_plot(summary, metric, highlights=plot_roles, unit=unit),
                               f"{metric}: confidence interval per configuration"))
            body.append(html_table(rows, [c for c in ("experiment", "config_key", "n", "mean",
                                                       "stddev", "ci_low", "ci_high", "half_width",
                                                       "relative_half_width", "confidence")
                                          if c in rows.columns]))
        if comparisons is not None and comparisons.filter(pl.col("metric") == metric).height:
            rows = comparisons.filter(pl.col("metric") == metric)
            body.append(img_tag(differences_plot(comparisons, metric, unit=unit),
                               f"{metric}: differences to the baseline"))
            body.append(html_table(rows, [c for c in ("config_key", "baseline_key", "n",
                                                       "mean_difference", "ci_low", "ci_high",
                                                       "paired", "half_width") if c in rows.columns]))

    if selection is not None:
        section("Selection of the best")
        if isinstance(selection, Subset):
            body.append(f"<p>Best sample mean: <b>{esc(selection.best)}</b>. Configurations that "
                        f"cannot be ruled out at {selection.confidence * 100:g}% "
                        f"({'paired' if selection.paired else 'independent'} screening): "
                        f"{esc(', '.join(selection.keep))}.</p>")
        else:
            required = ", ".join(f"{k}: {v}" for k, v in selection.required.items())
            chosen = esc(selection.best) if selection.best else "pending (more replications needed)"
            body.append(f"<p>{esc(selection.procedure)} procedure, constant "
                        f"{selection.constant:.4g}, n0 = {selection.n0}, indifference zone "
                        f"{selection.indifference_zone:g}, P* = {selection.pstar:g}. Required "
                        f"replications: {esc(required)}. Selected: <b>{chosen}</b>.</p>")
    if warmup:
        section("Warm-up (MSER-5)")
        body.append("<table><thead><tr><th>series interval</th>"
                    "<th>replications</th><th>suggested warm-up</th><th>mean per replication</th>"
                    "<th>experiment warm-up</th></tr></thead><tbody>")
        for s in warmup:
            body.append(f"<tr><td>{s.series_interval:g}</td><td>{s.replications}</td>"
                        f"<td>{s.suggested_warmup:g}</td><td>{s.mean_replication_warmup:g}</td>"
                        f"<td>{'' if s.experiment_warmup is None else f'{s.experiment_warmup:g}'}"
                        "</td></tr>")
        body.append("</tbody></table>")
    if plans:
        section("Replications (sequential precision)")
        body.append("<table><thead><tr>"
                    "<th>configuration</th><th>replications</th><th>mean</th>"
                    "<th>relative half-width</th><th>status</th></tr></thead><tbody>")
        for p in plans:
            body.append(f"<tr><td class=text>{esc(p.config_key)}</td><td>{p.target}</td>"
                        f"<td>{format_cell(p.mean)}</td>"
                        f"<td>{format_cell(p.relative_half_width)}</td>"
                        f"<td class=text>{esc(p.status)}</td></tr>")
        body.append("</tbody></table>")
    if sections:
        out.append("<nav><h2>Contents</h2><ol>" + "".join(
            f'<li><a href="#{a}">{esc(h)}</a></li>' for a, h in sections) + "</ol></nav>")
    out += body
    if footer is None:
        footer = f"Generated by simlab on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}."
    out += [f"<footer><p>{esc(footer)}</p></footer>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def write_report(path: str | os.PathLike[str], *, title: str, answer: str,
                 summary: pl.DataFrame | None = None, comparisons: pl.DataFrame | None = None,
                 selection: Subset | TwoStageSelection | None = None,
                 warmup: Sequence[WarmupSuggestion] = (), plans: Sequence[ReplicationPlan] = (),
                 metrics: Sequence[str] | None = None, highlight: str | None = None,
                 notes: Sequence[str] = (), headline: Sequence[str] = (),
                 units: Mapping[str, str] | None = None,
                 configurations: Mapping[str, Mapping[str, Any]] | None = None,
                 roles: Mapping[str, str] | None = None,
                 sections_before: Sequence[tuple[str, str]] = (),
                 descriptions: Mapping[str, str] | None = None,
                 missing: Mapping[str, tuple[int, int]] | None = None,
                 footer: str | None = None) -> Path:
    """Write the self-contained HTML report to ``path`` atomically and return the path.

    ``answer``: its first paragraph is shown first, the rest under "Statistics". ``summary``:
    ``intervals.summarise`` frame (a CI plot and table per metric); ``comparisons``:
    ``comparisons.compare`` frame (a differences plot and table per metric); ``selection``: a
    subset or two-stage selection; ``warmup``: MSER-5 suggestions (their warnings are shown at the
    top); ``plans``: the last sequential-replication plans; ``metrics``: which metrics to show
    (default all); ``highlight``: a config_key drawn in colour; ``notes``: extra warnings;
    ``headline``: the metrics and responses of the trade-off table (none: no table); ``units``:
    metric -> unit; ``configurations``: config_key -> varying parameters (the table's first
    columns); ``roles``: config_key -> "recommended", "today's setting" or "best sample mean", highlighted
    in the table and the plots and explained in a legend. ``sections_before``: (heading, HTML)
    sections shown before the metrics' (e.g. which factors matter, ``sensitivity.py``).
    ``descriptions``: metric -> words (the trade-off table's headers when short); ``missing``:
    config_key -> (replications missing, wanted), shown in the trade-off table. ``footer``: the
    last line (default: when it was generated); the same inputs then give the same file.
    """
    text = render_report(title=title, answer=answer, summary=summary, comparisons=comparisons,
                         selection=selection, warmup=warmup, plans=plans, metrics=metrics,
                         highlight=highlight, notes=notes, headline=headline, units=units,
                         configurations=configurations, roles=roles,
                         sections_before=sections_before, descriptions=descriptions,
                         missing=missing, footer=footer)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it private; a report is meant to be read
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
