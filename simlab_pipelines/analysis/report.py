"""A self-contained HTML report of an experiment: the answer, tables and plots (inlined PNG).

The file has no external references (images are ``data:image/png;base64`` URIs, the style is
inline), so it can be mailed, archived or served as is. It is written atomically: to a temporary
file in the same directory, flushed to disk, then renamed over the target, so a reader never sees
a half-written report and a failure leaves the previous one in place.
"""

import base64
import html
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from simlab_pipelines.analysis.plots import ci_plot, differences_plot, format_cell
from simlab_pipelines.analysis.selection import Subset, TwoStageSelection
from simlab_pipelines.analysis.sequential import ReplicationPlan
from simlab_pipelines.analysis.warmup import WarmupSuggestion

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
p.answer{font-size:1.15rem;background:#eef5fb;border-left:4px solid #1f6fb4;padding:.8rem 1rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4} td.text{text-align:left}
img{max-width:100%;display:block;margin:1rem 0}
p.warning{color:#8a4b00;background:#fff6e5;padding:.5rem 1rem}
"""


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(frame: pl.DataFrame, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """An HTML table of ``frame`` (cells escaped; floats to ``digits`` significant digits)."""
    columns = list(columns) if columns is not None else frame.columns
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in frame.select(columns).iter_rows():
        cells = "".join(
            f'<td{"" if isinstance(v, int | float) and not isinstance(v, bool) else " class=text"}>'
            f"{html.escape(format_cell(v, digits))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_report(*, title: str, answer: str, summary: pl.DataFrame | None = None,
                  comparisons: pl.DataFrame | None = None,
                  selection: Subset | TwoStageSelection | None = None,
                  warmup: Sequence[WarmupSuggestion] = (),
                  plans: Sequence[ReplicationPlan] = (), metrics: Sequence[str] | None = None,
                  highlight: str | None = None, notes: Sequence[str] = ()) -> str:
    """The report as an HTML string (see ``write_report`` for the arguments)."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{esc(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
           f"<h1>{esc(title)}</h1>", f'<p class="answer">{esc(answer)}</p>']
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
    for metric in metrics:
        out.append(f"<h2>{esc(metric)}</h2>")
        if summary is not None and summary.filter(pl.col("metric") == metric).height:
            rows = summary.filter(pl.col("metric") == metric)
            out.append(_image(ci_plot(summary, metric, highlight=highlight),
                              f"{metric}: confidence interval per configuration"))
            out.append(html_table(rows, [c for c in ("experiment", "config_key", "n", "mean",
                                                      "stddev", "ci_low", "ci_high", "half_width",
                                                      "relative_half_width") if c in rows.columns]))
        if comparisons is not None and comparisons.filter(pl.col("metric") == metric).height:
            rows = comparisons.filter(pl.col("metric") == metric)
            out.append(_image(differences_plot(comparisons, metric),
                              f"{metric}: differences to the baseline"))
            out.append(html_table(rows, [c for c in ("config_key", "baseline_key", "n",
                                                      "mean_difference", "ci_low", "ci_high",
                                                      "paired", "half_width") if c in rows.columns]))

    if selection is not None:
        out.append("<h2>Selection of the best</h2>")
        if isinstance(selection, Subset):
            out.append(f"<p>Best sample mean: <b>{esc(selection.best)}</b>. Configurations that "
                       f"cannot be ruled out at {selection.confidence * 100:g}% "
                       f"({'paired' if selection.paired else 'independent'} screening): "
                       f"{esc(', '.join(selection.keep))}.</p>")
        else:
            required = ", ".join(f"{k}: {v}" for k, v in selection.required.items())
            chosen = esc(selection.best) if selection.best else "pending (more replications needed)"
            out.append(f"<p>{esc(selection.procedure)} procedure, constant "
                       f"{selection.constant:.4g}, n0 = {selection.n0}, indifference zone "
                       f"{selection.indifference_zone:g}, P* = {selection.pstar:g}. Required "
                       f"replications: {esc(required)}. Selected: <b>{chosen}</b>.</p>")
    if warmup:
        out.append("<h2>Warm-up (MSER-5)</h2><table><thead><tr><th>series interval</th>"
                   "<th>replications</th><th>suggested warm-up</th><th>mean per replication</th>"
                   "<th>experiment warm-up</th></tr></thead><tbody>")
        for s in warmup:
            out.append(f"<tr><td>{s.series_interval:g}</td><td>{s.replications}</td>"
                       f"<td>{s.suggested_warmup:g}</td><td>{s.mean_replication_warmup:g}</td>"
                       f"<td>{'' if s.experiment_warmup is None else f'{s.experiment_warmup:g}'}"
                       "</td></tr>")
        out.append("</tbody></table>")
    if plans:
        out.append("<h2>Replications (sequential precision)</h2><table><thead><tr>"
                   "<th>configuration</th><th>replications</th><th>mean</th>"
                   "<th>relative half-width</th><th>status</th></tr></thead><tbody>")
        for p in plans:
            out.append(f"<tr><td class=text>{esc(p.config_key)}</td><td>{p.target}</td>"
                       f"<td>{format_cell(p.mean)}</td><td>{format_cell(p.relative_half_width)}</td>"
                       f"<td class=text>{esc(p.status)}</td></tr>")
        out.append("</tbody></table>")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out += [f"<footer><p>Generated by simlab on {stamp}.</p></footer>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def write_report(path: str | os.PathLike[str], *, title: str, answer: str,
                 summary: pl.DataFrame | None = None, comparisons: pl.DataFrame | None = None,
                 selection: Subset | TwoStageSelection | None = None,
                 warmup: Sequence[WarmupSuggestion] = (), plans: Sequence[ReplicationPlan] = (),
                 metrics: Sequence[str] | None = None, highlight: str | None = None,
                 notes: Sequence[str] = ()) -> Path:
    """Write the self-contained HTML report to ``path`` atomically and return the path.

    ``summary``: ``intervals.summarise`` frame (a CI plot and table per metric); ``comparisons``:
    ``comparisons.compare`` frame (a differences plot and table per metric); ``selection``: a
    subset or two-stage selection; ``warmup``: MSER-5 suggestions (their warnings are shown at the
    top); ``plans``: the last sequential-replication plans; ``metrics``: which metrics to show
    (default all); ``highlight``: a config_key drawn in colour; ``notes``: extra warnings.
    """
    text = render_report(title=title, answer=answer, summary=summary, comparisons=comparisons,
                         selection=selection, warmup=warmup, plans=plans, metrics=metrics,
                         highlight=highlight, notes=notes)
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
