"""``simlab``: run experiments on the local Dagster instance and query their results.

    simlab sweep experiments/restaurant_staffing.yaml [--workers N] [--batch-size N]
    simlab query "SELECT * FROM summary LIMIT 5"
"""

import json
import os
import sys
from pathlib import Path

import click

from simlab_pipelines import settings


def _instance():
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.PROJECT_ROOT / "dagster_home"
        os.environ["DAGSTER_HOME"] = str(home)
        click.echo(f"DAGSTER_HOME not set: using {home}", err=True)
    return dg.DagsterInstance.get()


def _table(columns: list[str], rows: list[tuple], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)
                        for v in row))
    Console().print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """simlab: simulation experiments as Dagster partitioned assets, results in DuckDB."""


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Pool workers per run [default: the CPUs this process may use].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Partitions per Dagster run [default: the file's max_partitions_per_run, "
                   f"else SIMLAB_MAX_PARTITIONS_PER_RUN or {settings.DEFAULT_MAX_PARTITIONS_PER_RUN}].")
def sweep(path: Path, workers: int | None, batch_size: int | None) -> None:
    """Run the missing partitions of the experiment in PATH, then summarise it.

    Runs go through the local Dagster instance (DAGSTER_HOME), so they appear in the UI. A second
    call with nothing missing does nothing and says so.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from simlab_pipelines.experiments import ExperimentError, load_experiment
    from simlab_pipelines.sweep import sweep as run_sweep

    try:
        spec = load_experiment(path)
    except ExperimentError as exc:
        raise click.UsageError(str(exc)) from None
    instance = _instance()
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task(f"{spec.name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = run_sweep(path, instance, workers=workers, batch_size=batch_size,
                           progress=progress)
    if not report.missing:
        click.echo(f"{spec.name}: nothing to do, all {report.total} partitions are materialised.")
    else:
        click.echo(f"{spec.name}: ran {report.missing} of {report.total} partitions in "
                   f"{len(report.runs)} run(s).")
    _print_summary(spec)
    if report.failed_runs:
        click.echo(f"{len(report.failed_runs)} run(s) failed: {', '.join(report.failed_runs)} "
                   "(see `dagster dev` for their logs)", err=True)
        sys.exit(1)


def _print_summary(spec) -> None:
    from simlab_pipelines.summary import query

    metrics = [spec.precision.metric] if spec.precision else []
    if spec.objective and spec.objective.metric not in metrics:
        metrics.append(spec.objective.metric)
    try:
        columns, rows = query(
            "SELECT config_key, metric, n, mean, ci_low, ci_high FROM summary "
            "WHERE experiment = ? " + ("AND metric IN (SELECT unnest(?)) " if metrics else "")
            + "ORDER BY metric, config_key",
            settings.duckdb_path(), [spec.name, metrics] if metrics else [spec.name])
    except FileNotFoundError as exc:
        click.echo(str(exc), err=True)
        return
    _table(columns, rows, title=f"{spec.name}: mean and {spec.confidence:.0%} confidence interval")


@main.command()
@click.argument("sql")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DuckDB file [default: SIMLAB_DUCKDB_PATH or data/simlab.duckdb].")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON objects, one a line.")
def query(sql: str, db: Path | None, as_json: bool) -> None:
    """Run SQL read-only against the DuckDB file and print a table.

    Tables: experiments, configurations, replications, observations, summary.
    """
    import duckdb

    from simlab_pipelines.summary import query as run_query

    try:
        columns, rows = run_query(sql, db or settings.duckdb_path())
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except duckdb.Error as exc:
        raise click.ClickException(f"query failed: {exc}") from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    else:
        _table(columns, rows)
