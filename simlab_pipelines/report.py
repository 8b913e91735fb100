"""``simlab report NAME``: the experiment's HTML report, rebuilt from the DuckDB file alone.

The definition is read back from the ``experiments`` table and the analysis is the summary step's
own (``summary.analyse``) on the stored observations and series, so the report says exactly what
the summary said, even when the experiment file has changed or moved since.
"""

import json
from pathlib import Path

import duckdb
import polars as pl

from simlab_pipelines.analysis import write_report
from simlab_pipelines.analysis.headline import headline_metric
from simlab_pipelines.analysis.report import highlight_roles as report_roles
from simlab_pipelines.experiments import (
    ExperimentError,
    ExperimentSpec,
    experiments_dir,
    parse_experiment,
)
from simlab_pipelines.experiments.responses import descriptions, headline_responses
from simlab_pipelines.summary import Analysis, analyse


def write_experiment_report(name: str, db_path: Path, output: Path | None = None) -> Path:
    """Write ``<db dir>/<name>.html`` (or ``output``) for experiment ``name``; return its path.

    Raises FileNotFoundError without a DuckDB file and KeyError for an unknown experiment.
    """
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"no DuckDB file at {db_path}: run a sweep first "
                                "(or set SIMLAB_DUCKDB_PATH)")
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute("SELECT spec FROM experiments WHERE experiment = ?", [name]).fetchall()
        row = rows[0] if rows else None
        if row is None:
            known = [r[0] for r in con.execute(
                "SELECT experiment FROM experiments ORDER BY 1").fetchall()]
            raise KeyError(f"no experiment {name!r} in {db_path} "
                           f"(experiments: {', '.join(known) or 'none'})")
        obs = con.sql("SELECT experiment, config_key, replication, metric, value "
                      "FROM observations WHERE experiment = ?", params=[name]).pl()
        series = con.sql("SELECT * FROM series WHERE experiment = ?", params=[name]).pl()
    spec = _recorded_spec(json.loads(row[0]), name)
    return write_analysis_report(spec, analyse(spec, obs, series),
                                 Path(output) if output else report_path(name, db_path))


def report_path(name: str, db_path: Path) -> Path:
    """Where an experiment's report goes by default: ``<db dir>/<name>.html``."""
    return Path(db_path).parent / f"{name}.html"


def write_analysis_report(spec: ExperimentSpec, result: Analysis, target: Path) -> Path:
    """Write the report of ``result`` (``summary.analyse`` of ``spec``'s results) to ``target``.

    The summary step passes the analysis it has just made and written (rather than have
    ``write_experiment_report`` read it back and redo it: ~0.4 s of a small sweep)."""
    stats = result.statistics
    metric = headline_metric(spec)
    metrics = [metric, *sorted(m for m in stats.summary["metric"].unique() if m != metric)]
    selection = stats.selection if stats.selection is not None and stats.selection.best \
        else stats.subset
    plans = [t.plan for t in result.targets.values() if t.plan is not None]
    title = f"{spec.name}: {spec.question}" if spec.question else spec.name
    answer = result.answer or spec.description or f"{spec.name}: no objective declared."
    headline = ([spec.objective.metric] if spec.objective else []) + headline_responses(spec)
    factors = _factor_sections(spec, result, metric) + _search_sections(result)
    return write_report(target, title=title, answer=answer, summary=stats.summary,
                        comparisons=stats.comparisons, selection=selection,
                        warmup=[w.suggestion for w in result.warmup], plans=plans,
                        metrics=metrics, notes=[n for n in result.notes if not any(
                            n == w.suggestion.warning for w in result.warmup)],
                        headline=headline, units=spec.units(),
                        configurations={c.key: c.varying for c in result.configurations},
                        roles=report_roles(spec.baseline_key, stats.recommendation,
                                           stats.subset.best if stats.subset else None),
                        sections_before=factors + _constraints(
                            stats, spec, {c.key: c.varying for c in result.configurations})
                        + _steady_state(result.trends),
                        descriptions=descriptions(spec), missing=result.missing)


def _factor_sections(spec: ExperimentSpec, result: Analysis, metric: str
                     ) -> list[tuple[str, str]]:
    """With a design: which factors matter. Imported here: the sensitivity module loads
    scipy.stats (~0.3 s), which a report without a design never needs."""
    if result.sensitivity is None:
        return []
    from simlab_pipelines.analysis.sensitivity import report_sections

    return report_sections(result.sensitivity, spec.design_points, result.statistics.summary,
                           {c.key: c.varying for c in result.configurations},
                           spec.design.metrics or [metric])


def _search_sections(result: Analysis) -> list[tuple[str, str]]:
    """With a search: its charts and table (the search module is loaded only then)."""
    if result.search is None:
        return []
    from simlab_pipelines.search_tables import report_sections

    return report_sections(result.search)


def _steady_state(trends) -> list[tuple[str, str]]:
    """The trend test's table (with recorded series): which configurations keep growing."""
    if not trends:
        return []
    from simlab_pipelines.analysis.report import html_table
    from simlab_pipelines.analysis.stationarity import ALPHA, MIN_GROWTH

    frame = pl.DataFrame([{"configuration": t.config_key, "series": t.series,
                           "third quarter": t.third_quarter_mean,
                           "last quarter": t.last_quarter_mean,
                           "growth": t.relative_growth, "p-value": t.p_value,
                           "steady state": "no: keeps growing" if t.growing else "yes"}
                          for t in trends])
    intro = (f"<p>Each recorded series' mean over the last quarter of the run against the third "
             f"(one-sided paired t over replications): a configuration keeps growing, and has "
             f"no steady state, when p &lt; {ALPHA:g} and the growth is at least "
             f"{MIN_GROWTH:.0%}.</p>")
    return [("Steady state (trend test)", intro + html_table(frame, drop_constant=False))]


def _constraints(stats, spec, configurations: dict) -> list[tuple[str, str]]:
    """The constraints' section (with ``constraints``): each configuration's status on each."""
    if stats.feasibility is None:
        return []
    from simlab_pipelines.analysis.search_answer import constraints_section

    recommended = stats.recommendation.choice if stats.recommendation else None
    return [constraints_section(stats.feasibility, units=spec.units(),
                                configurations=configurations, recommended=recommended)]


def _recorded_spec(data: dict, name: str):
    """The spec recorded in DuckDB. A model imported from its experiment file's directory
    ("package.module:ATTRIBUTE") needs that directory, which is not recorded: it is looked for
    where the file usually is (the experiments directory, here, or one folder down)."""
    try:
        return parse_experiment(data)
    except ExperimentError as first:
        candidates = [experiments_dir() / f"{name}.yaml", Path.cwd() / f"{name}.yaml",
                      *sorted(Path.cwd().glob(f"*/{name}.yaml"))]
        for path in candidates:
            if path.is_file():
                try:
                    return parse_experiment(data, source=path)
                except ExperimentError:
                    continue
        raise first
