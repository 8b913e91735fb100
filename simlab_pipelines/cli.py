"""``simlab``: run experiments on the local Dagster instance, query and report their results.

    simlab sweep experiments/restaurant_staffing.yaml [--workers N] [--batch-size N]
                 [--log-format text|json]
    simlab query "SELECT * FROM summary LIMIT 5"
    simlab report restaurant_staffing
    simlab new-model clinic [--directory DIR]
"""

import atexit
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from simlab_pipelines import settings


def _instance(capture_logs: bool = True):
    """The instance of DAGSTER_HOME, opened under the instance lock (two commands on a new
    DAGSTER_HOME must not create its schema at once); a damaged one is named, not a traceback.
    ``capture_logs=False``: without capturing runs' stdout/stderr (``open_instance``)."""
    from alembic.util.exc import CommandError

    from simlab_pipelines.instance import open_instance

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.PROJECT_ROOT / "dagster_home"
        os.environ["DAGSTER_HOME"] = str(home)
        click.echo(f"DAGSTER_HOME not set: using {home}", err=True)
    try:
        return open_instance(capture_logs=capture_logs)
    except CommandError as exc:  # e.g. "Version table 'alembic_version' has more than one head"
        raise click.ClickException(
            f"the Dagster instance in {os.environ['DAGSTER_HOME']} is damaged ({exc}); "
            "docs/reliability.md, 'A damaged instance', says how to start it afresh") from None


def _table(columns: list[str], rows: list[tuple], title: str | None = None,
           err: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not str: rich reads str as markup ("[the new policy]" vanished, "[/x]" raised).
    table = Table(title=Text(title) if title is not None else None, show_lines=False,
                  min_width=len(title) if title else None)  # a title on one line
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v))
                        for v in row))
    # Wide enough off a terminal (pipes, CI logs) that keys and metric names are not folded.
    stream = sys.stderr if err else sys.stdout
    Console(file=stream, width=None if stream.isatty() else 200).print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """simlab: simulation experiments as Dagster partitioned assets, results in DuckDB."""
    from simlab_pipelines import logs

    # Lines for a person (SIMLAB_LOG_FORMAT=json: JSON); INFO would echo Dagster's storage.
    try:
        logs.configure_logging("WARNING", fmt=logs.log_format(
            os.environ.get(logs.FORMAT_VARIABLE) or "text"))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Pool workers per run [default: the CPUs this process may use].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Partitions per Dagster run [default: the file's max_partitions_per_run, "
                   f"else SIMLAB_MAX_PARTITIONS_PER_RUN or {settings.DEFAULT_MAX_PARTITIONS_PER_RUN}].")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="text: the sweep's own lines, failures in one table at the end; json: also "
                   "every run's log lines (errors, warnings) as JSON objects on stderr "
                   "[default: SIMLAB_LOG_FORMAT, else text]. Either way they are in each "
                   "run's event log (the UI).")
def sweep(path: Path, workers: int | None, batch_size: int | None,
          log_format: str | None) -> None:
    """Run the missing partitions of the experiment in PATH, then summarise it.

    Runs go through the local Dagster instance (DAGSTER_HOME), so they appear in the UI. A second
    call with nothing missing does nothing and says so. An experiment with no results yet starts
    its first simulations while the sweep starts up, and a precision target's next round as soon
    as the one before is in; its runs record them (SIMLAB_HEAD_START=0: not before their run).
    """
    from simlab_pipelines import logs

    chosen = log_format or logs.log_format(os.environ.get(logs.FORMAT_VARIABLE) or "text")
    logs.configure_logging("WARNING", fmt=chosen)
    # The pool workers this sweep starts log in its format too (they read the variable); set
    # for the sweep only, so that a process calling this command keeps its own.
    previous = os.environ.get(logs.FORMAT_VARIABLE)
    os.environ[logs.FORMAT_VARIABLE] = chosen
    try:
        with _collector_paused():
            _sweep_command(path, workers, batch_size)
    finally:
        if "simlab_pipelines.ahead" in sys.modules:
            sys.modules["simlab_pipelines.ahead"].stop()
        if previous is None:
            os.environ.pop(logs.FORMAT_VARIABLE, None)
        else:
            os.environ[logs.FORMAT_VARIABLE] = previous


def _start_pool_server(workers: int | None) -> int:
    """Start the pool's fork server now, before the sweep's heavy imports, when the sweep will
    use a pool: its start-up overlaps this process's (``pool_server``). The pool's workers (0
    for a bad SIMLAB_WORKERS: reported later, where the sweep reads it)."""
    try:
        workers = workers or settings.workers()
    except ValueError:
        return 0
    if workers > 1:
        from simlab_pipelines import pool_server

        pool_server.start()
    return workers


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The garbage collector paused for a command's start-up, until ``_start_up_done``.

    Importing Dagster, SQLAlchemy, polars and the rest makes ~400,000 objects that live as long
    as the command; while they are being made, each full collection walks all of them again, and
    so did every later one. Paused during the start-up and then frozen out of the collections
    (``gc.freeze``), they cost a 4-simulation sweep ~0.35 s less and a sweep of 100,000
    partitions a fifth less CPU (BENCHMARKS.md). What the command makes afterwards is collected
    as usual; at the end the frozen objects are handed back (a process that runs many commands,
    e.g. the tests, must not keep their garbage)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _start_up_done() -> None:
    gc.freeze()
    gc.enable()


def _sweep_command(path: Path, workers: int | None, batch_size: int | None) -> None:
    pool_workers = _start_pool_server(workers)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from simlab_pipelines.experiments import ExperimentError, load_experiment

    try:
        spec = load_experiment(path)
    except ExperimentError as exc:
        raise click.UsageError(str(exc)) from None
    if pool_workers > 1:  # its first simulations start now, before Dagster is imported (ahead.py)
        from simlab_pipelines import ahead

        ahead.start(spec, pool_workers)
    from simlab_pipelines.sweep import SweepInterrupted, request_stop
    from simlab_pipelines.sweep import sweep as run_sweep
    # The sweep's runs execute in its threads and print to its terminal: no capture, one instance.
    instance = _instance(capture_logs=False)
    _start_up_done()
    _print_stale(spec)
    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), transient=False)
    task = bar.add_task(f"{spec.name}", total=None)

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:  # shown from the first batch on: nothing to do shows no bar
            bar.start()
        bar.update(task, completed=done, total=total)

    def announce(line: str) -> None:
        bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

    # Ctrl-C, and SIGTERM (a pod evicted, a service stopped), cancel the run in progress and stop.
    previous = {signum: signal.signal(signum, lambda signum, _frame: request_stop(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = run_sweep(path, instance, workers=workers, batch_size=batch_size,
                           progress=progress, announce=announce)
    except SweepInterrupted as stop:
        if bar.live.is_started:
            bar.stop()
        _print_interrupted(spec.name, path, stop)
        if stop.forced:  # the run's thread is stuck in Dagster; nothing else is left to do
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + stop.signum)
        sys.exit(128 + stop.signum)
    finally:
        if bar.live.is_started:
            bar.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _print_counts(spec.name, report, "search" if spec.search is not None
                  else "sequential procedure")
    if report.beyond:  # as the summary's notes say: reported, not used
        from simlab_pipelines.assets import beyond_plan_note

        click.echo(f"note: {beyond_plan_note(report.beyond)}")
    # Not when the summary failed (the file holds an older one) or nothing landed to summarise.
    if report.summary_run not in report.failed_runs and (report.summary_run or not report.missing):
        # No summary run (nothing to do): the last summary's failed checks must not vanish.
        checks = (report.checks if report.summary_run
                  else {f"{name} (last summary)": False
                        for name, passed in _last_checks(instance, spec).items() if not passed})
        _print_outcome(spec, checks, instance)
    if report.failed_runs:
        _print_failures(report, path)
        sys.exit(1)


def _last_checks(instance, spec) -> dict[str, bool]:
    """The summary's checks as last evaluated (the instance's latest evaluation of each): passed?
    Checks never evaluated, or whose run ended before them, are left out."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus as Status,
    )

    from simlab_pipelines.checks import experiment_checks

    keys = [key for definition in experiment_checks(spec) for key in definition.check_keys]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return {key.name: record.status == Status.SUCCEEDED for key, record in records.items()
            if record.status in (Status.SUCCEEDED, Status.FAILED)}


def _print_stale(spec) -> None:
    """Why partitions that have results run again: what changed, and for how many."""
    from simlab_pipelines.resources import default_storage
    from simlab_pipelines.staleness import stale_reasons

    try:
        reasons = stale_reasons(spec, default_storage().store())
    except Exception as exc:  # an explanation must never stop the sweep
        click.echo(f"{spec.name}: could not tell which results are stale: {exc}", err=True)
        return
    for reason in reasons:
        click.echo(f"{spec.name}: {reason}; they run again.")


def _print_failures(report, path: Path) -> None:
    """One line per failed run, one table of the failed partitions by reason, what to do."""
    from simlab_pipelines.failures import first_line, merge_groups
    from simlab_pipelines.query import lock_conflict

    for run_id in report.failed_runs:
        reason = report.failures.get(run_id, "unknown (see the run's logs)")
        # "N of M simulations failed ...:" heads the partitions' reasons, which the table has.
        shown = first_line(reason)[:-1] if first_line(reason).endswith(":") else reason
        click.echo(f"run {run_id} failed: {lock_conflict(reason) or shown}", err=True)
    groups = merge_groups(report.failed_partitions)
    if groups:
        _table(["first partition", "reason", "partitions"],
               [(g.first, g.reason, g.partitions) for g in groups],
               title=f"{report.experiment}: failed partitions by reason", err=True)
    click.echo(f"{len(report.failed_runs)} run(s) failed (their logs: `dagster dev`, or "
               f"--log-format json); `simlab sweep {path}` runs what is missing again.", err=True)


def _print_counts(name: str, report, rounds_of: str = "sequential procedure") -> None:
    """What landed (materialised, with its file), not what was tried; ``rounds_of``: what the
    rounds belong to (a search, or the sequential procedure)."""
    if report.still_missing and not report.missing:
        click.echo(f"{name}: {report.still_missing} of {report.total} wanted partitions are "
                   "missing and none ran.")
    elif not report.missing and not report.summary_run:
        click.echo(f"{name}: nothing to do, all {report.total} partitions are materialised "
                   "and summarised.")
    elif not report.missing:
        rebuilt = ("summary rebuilt" if report.summary_run not in report.failed_runs
                   else "the summary could not be rebuilt (below)")
        click.echo(f"{name}: all {report.total} partitions are materialised; {rebuilt}.")
    else:
        rounds = (f" over {len(report.rounds)} rounds of the {rounds_of} "
                  f"({' + '.join(map(str, report.rounds))})" if len(report.rounds) > 1 else "")
        noun = "partition" if report.missing == 1 else "partitions"
        if report.landed == report.missing:
            click.echo(f"{name}: ran {report.missing} {noun} in {len(report.runs)} run(s)"
                       f"{rounds}; {report.total} wanted in all.")
        else:
            click.echo(f"{name}: {report.landed} of the {report.missing} {noun} run landed "
                       f"({len(report.runs)} run(s){rounds}); {report.still_missing} of "
                       f"{report.total} wanted are still missing.")


def _print_interrupted(name: str, path: Path, stop) -> None:
    report = stop.report
    canceled = f"run(s) {', '.join(stop.canceled)} canceled; " if stop.canceled else ""
    click.echo(f"{name}: stopped by {signal.Signals(stop.signum).name}: {canceled}"
               f"{report.landed} partition(s) landed, {report.still_missing} of {report.total} "
               f"wanted are missing; `simlab sweep {path}` runs the rest.", err=True)


Rows = Callable[[str, list], tuple[list[str], list[tuple]]]


@contextmanager
def _summary_reader() -> Iterator[Rows]:
    """One read-only connection to the DuckDB file for all of a sweep's closing tables (opening
    one takes ~25 ms, and there are up to six); ``rows(sql, parameters)`` gives the columns and
    rows of a query, none when there is no file yet or not that table."""
    import duckdb

    from simlab_pipelines.query import fetch, read_only

    try:
        con = read_only(settings.duckdb_path())
    except FileNotFoundError:
        yield lambda sql, parameters: ([], [])
        return

    def rows(sql: str, parameters: list) -> tuple[list[str], list[tuple]]:
        try:
            return fetch(con, sql, parameters)
        except duckdb.CatalogException:  # not that table
            return [], []

    try:
        yield rows
    finally:
        con.close()


def _report_path(instance, name: str) -> str | None:
    """The HTML report the summary step wrote last (its ``report`` metadata), if it exists."""
    from simlab_pipelines.assets import summary_key

    record = instance.get_latest_materialization_event(summary_key(name))
    entry = (record.asset_materialization.metadata.get("report")
             if record is not None and record.asset_materialization is not None else None)
    path = getattr(entry, "path", None) if entry is not None else None
    return path if path and Path(path).exists() else None


SEARCH_ROWS = 10  # the best configurations a search's closing table shows


def _print_search_best(spec, read: Rows) -> bool:
    """A search's best configurations by objective, the clean-up's (fresh replications) first,
    each with its constraints' statuses (the summary of every proposal is in DuckDB); False
    when there is no search table yet."""
    objective = spec.objective
    statuses = "".join(f', "{c.metric}_status" AS "{c.metric}"' for c in spec.constraints)
    order = "ASC" if objective.direction == "minimize" else "DESC"
    columns, found = read(
        # a constant objective (a cost of the parameters alone) has a rounding-noise half-width
        "SELECT config_key, stage, n, objective_mean AS mean, CASE WHEN objective_half_width "
        "<= 1e-9 * abs(objective_mean) THEN 0.0 ELSE objective_half_width END AS "
        f"half_width{statuses} FROM search WHERE experiment = ? "
        "QUALIFY row_number() OVER (PARTITION BY config_key ORDER BY stage DESC) = 1 "
        f"ORDER BY stage = 'second' DESC, objective_mean {order} NULLS LAST, config_key",
        [spec.name])
    if not found:
        return False
    shown = found[:SEARCH_ROWS]
    _table(columns, shown, title=f"{spec.name}: the best {len(shown)} of {len(found)} "
                                 f"configurations by {objective.metric} ({objective.direction}),"
                                 " the clean-up's first (fresh replications)")
    return True


MAX_TABLE_ROWS = 20  # more configurations than this: the closing tables show FIRST_ROWS of them


FIRST_ROWS = 10


def _first_rows(spec, metric: str, rows: list[tuple]) -> tuple[list[tuple], str]:
    """The headline table's rows a terminal shows (config_key first, mean third): all of them up
    to MAX_TABLE_ROWS, else the FIRST_ROWS best by the objective (in key order without one), and
    words for the title saying which."""
    if len(rows) <= MAX_TABLE_ROWS:
        return rows, ""
    objective = spec.objective
    if objective is not None and objective.metric == metric:
        sign = 1.0 if objective.direction == "minimize" else -1.0
        rows = sorted(rows, key=lambda row: (row[2] is None, sign * (row[2] or 0.0), row[0]))
        return rows[:FIRST_ROWS], f"the best {FIRST_ROWS} of {len(rows)}"
    return rows[:FIRST_ROWS], f"the first {FIRST_ROWS} of {len(rows)}"


def _print_outcome(spec, checks: dict[str, bool], instance=None) -> None:
    """The summary of the headline metric, precision, warnings, checks, and last the answer."""
    from simlab_pipelines.query import DatabaseLocked

    try:
        with _summary_reader() as rows:
            _print_tables(spec, checks, instance, rows)
    except DatabaseLocked as exc:  # opened by another process since the summary wrote it
        click.echo(f"the summary is written but cannot be shown: {exc}", err=True)


def _print_tables(spec, checks: dict[str, bool], instance, read: Rows) -> None:
    from simlab_pipelines.analysis.headline import headline_metric

    metric = headline_metric(spec)
    columns, rows = read(
        "SELECT config_key, n, mean, ci_low, ci_high, relative_half_width FROM summary "
        "WHERE experiment = ? AND metric = ? ORDER BY config_key", [spec.name, metric])
    if not rows:
        click.echo(f"no summary for {spec.name} in {settings.duckdb_path()}", err=True)
        return
    rows, more = _first_rows(spec, metric, rows)
    shown = {row[0]: i for i, row in enumerate(rows)}  # the other tables: the same, in order

    def same(found: list[tuple]) -> list[tuple]:
        return sorted((row for row in found if row[0] in shown), key=lambda row: shown[row[0]])

    # a search: its best candidates as it judged them, not every proposal by name
    if not (spec.search is not None and spec.search.method != "threshold" and spec.objective
            and _print_search_best(spec, read)):
        _table(columns, rows, title=f"{spec.name}: {metric}, mean and {spec.confidence:.0%} "
                                    "confidence interval" + (more and f", {more}"))
        if more:  # a terminal's worth, and the way to the rest
            click.echo(f"(the rest: simlab query \"SELECT config_key, n, mean, ci_low, ci_high "
                       f"FROM summary WHERE experiment = '{spec.name}' AND metric = '{metric}' "
                       "ORDER BY mean\")")
    if spec.search is None:  # what decides feasibility, beside the objective (often a cost)
        for constraint in spec.constraints:
            if constraint.metric != metric:
                columns, found = read(
                    "SELECT config_key, n, mean, ci_low, ci_high FROM summary WHERE "
                    "experiment = ? AND metric = ? ORDER BY config_key",
                    [spec.name, constraint.metric])
                _table(columns, same(found), title=f"constraint {constraint.describe()}: mean, "
                                                   f"{spec.confidence:.0%} CI")
    if spec.precision is not None:
        columns, found = read(
            "SELECT config_key, replications, rounds, status, relative_half_width, "
            "target_relative_half_width FROM precision WHERE experiment = ? ORDER BY config_key",
            [spec.name])
        _table(columns, same(found), title=f"sequential replications on {spec.precision.metric}")
    _, warnings = read("SELECT warning FROM warmup WHERE experiment = ? AND warning IS NOT NULL "
                        "ORDER BY config_key, series", [spec.name])
    for (warning,) in warnings:
        click.echo(f"warning: {warning}")
    for name, passed in sorted(checks.items()):
        click.echo(f"check {name}: {'passed' if passed else 'FAILED'}")
    _, answers = read("SELECT answer FROM answers WHERE experiment = ?", [spec.name])
    written = _report_path(instance, spec.name) if instance is not None else None
    report = written or f"simlab report {spec.name}"  # the summary step writes it: its path
    click.echo(f"\nAll tables: simlab query \"SELECT * FROM summary WHERE experiment = "
               f"'{spec.name}'\"; HTML report: {report}")
    if answers and answers[0][0]:
        click.echo(f"\n{answers[0][0]}")


@main.command()
@click.argument("name")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DuckDB file [default: SIMLAB_DUCKDB_PATH or data/simlab.duckdb].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the report [default: NAME.html next to the DuckDB file].")
def report(name: str, db: Path | None, output: Path | None) -> None:
    """Write a self-contained HTML report (answer, tables, plots) of experiment NAME."""
    import duckdb

    from simlab_pipelines.experiments import ExperimentError
    from simlab_pipelines.query import lock_conflict
    from simlab_pipelines.report import write_experiment_report

    db = db or settings.duckdb_path()
    try:
        path = write_experiment_report(name, db, output)
    except (FileNotFoundError, KeyError) as exc:
        raise click.ClickException(exc.args[0] if exc.args else str(exc)) from None
    except duckdb.IOException as exc:  # the file held open by another writer: say by whom
        held = lock_conflict(str(exc))
        if held is None:
            raise
        raise click.ClickException(held) from None
    except ExperimentError as exc:  # e.g. its model cannot be imported here
        raise click.ClickException(f"{exc} (run simlab report where the experiment's model "
                                   "can be imported)") from None
    click.echo(f"{name}: report written to {path}")


@main.command("new-model")
@click.argument("name")
@click.option("--directory", "-d", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Where to create the NAME/ folder.")
def new_model(name: str, directory: Path) -> None:
    """Write a ready-to-edit plug-in package NAME/: its model, tests, entry point and an
    experiment file that sweeps as generated (simlab sweep NAME/NAME_sweep.yaml)."""
    from simlab_pipelines.new_model import NewModelError, write_package

    try:
        written = write_package(name, directory)
    except NewModelError as exc:
        raise click.BadParameter(str(exc), param_hint="'NAME'") from None
    root = directory / name
    click.echo(f"{name}: plug-in package written to {root}/")
    for path in written:
        click.echo(f"  {path.relative_to(directory)}")
    click.echo(f"next: edit {root / name / 'model.py'}, then simlab sweep "
               f"{root / f'{name}_sweep.yaml'}")


@main.command()
@click.argument("sql")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DuckDB file [default: SIMLAB_DUCKDB_PATH or data/simlab.duckdb].")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON objects, one a line.")
@click.option("--timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              metavar="SECONDS",
              help="Stop the query after this many seconds (all its statements); 0: no limit.")
@click.option("--memory-limit", default="25%", show_default=True, metavar="SIZE",
              help="DuckDB's memory limit for the query, e.g. 2GB or 50% (of the machine's "
                   "memory); larger sorts and joins spill to disk.")
def query(sql: str, db: Path | None, as_json: bool, timeout: float, memory_limit: str) -> None:
    """Run SQL read-only against the DuckDB file and print a table.

    Tables: experiments, configurations, metrics, replications, observations, series, summary,
    comparisons, precision, warmup, steady_state, sensitivity, metamodel, constraints, search,
    breaking_point, answers (each has an experiment column; some exist only once an experiment
    needs them: docs/observatory.md). Several statements (separated by ';') print one table
    each, in order. The query runs under a time and a memory limit (--timeout, --memory-limit).
    """
    from simlab_pipelines.query import (  # DuckDB only: fast
        BadLimit,
        Limits,
        QueryFailed,
        query_statements,
    )

    limits = Limits(timeout=timeout or None, memory_limit=memory_limit)
    try:
        results = query_statements(sql, db or settings.duckdb_path(), limits)
    except BadLimit as exc:
        raise click.BadParameter(str(exc), param_hint="'--memory-limit'") from None
    except (FileNotFoundError, QueryFailed) as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(f"SQL: {exc}; e.g. simlab query \"SELECT * FROM summary\"") from None
    except KeyboardInterrupt:  # Ctrl-C: DuckDB was stopped; no traceback, the shell's code
        click.echo("simlab query: interrupted", err=True)
        sys.exit(130)
    shown = [r for r in results if r.columns]  # SET and the like return no rows
    try:
        for result in shown:
            if as_json:
                for row in result.rows:
                    click.echo(json.dumps(dict(zip(result.columns, row, strict=True)), default=str))
            else:
                if len(shown) > 1:  # which statement each table answers
                    click.echo(f"-- {result.statement}")
                _table(result.columns, result.rows)
    except KeyboardInterrupt:
        sys.exit(130)


def run() -> None:
    """The ``simlab`` console script: ``main``, then a prompt exit.

    Tearing down the interpreter (thousands of Dagster, SQLAlchemy, polars and DuckDB objects)
    took ~0.4 s after every command had finished its work, a tenth of a short sweep. Everything
    that must happen at exit still does, in order: other threads are joined and the exit
    handlers run (the tracer provider exports its last spans, the pools are gone already);
    only the teardown of the modules is skipped."""
    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        click.echo(code, err=True)
        code = 1
    code = 0 if code is None else code
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
