"""Read-only SQL against the DuckDB file (``simlab query`` and simlab's own lookups).

Imports DuckDB only, so that ``simlab query`` starts fast. The connection is read-only with
external access off: a query can neither change the database nor write or attach other files.
Statements are run one by one (each result is returned), in a helper thread so that Ctrl-C stops
DuckDB at once.

``simlab query`` runs under limits (``Limits``): a time limit (then DuckDB is interrupted) and a
memory limit (DuckDB's own default is 80 % of the machine's memory, beside a sweep), with flags to
change them.

A file another process holds open for writing (a DuckDB shell, a notebook) cannot be opened at all
meanwhile: ``DatabaseLocked`` says so in one line naming that process (DuckDB's lock error names
its PID).
"""

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

T = TypeVar("T")


class QueryFailed(Exception):
    """A statement of a query failed; the message says which one and DuckDB's reason."""


class DatabaseLocked(QueryFailed, duckdb.IOException):
    """The DuckDB file is held open for writing by another process (named in the message).

    Also a ``duckdb.IOException``, what DuckDB raised before, so its callers' handling holds."""


# DuckDB 1.x/2.x: 'Could not set lock on file "<path>": Conflicting lock is held in <program>
# (PID <pid>) [by user <user>]. See also ...'
_LOCK_CONFLICT = re.compile(r'Could not set lock on file "(?P<path>[^"]*)": Conflicting lock is '
                            r"held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def lock_conflict(message: str) -> str | None:
    """One line naming the process that holds a DuckDB file, from DuckDB's lock error in
    ``message``; None when ``message`` is not such an error."""
    match = _LOCK_CONFLICT.search(message)
    if match is None:
        return None
    pid, holder = match["pid"], match["program"]
    try:  # its command line says more than the interpreter's path ("python3.11")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        command = " ".join(" ".join(part.decode(errors="replace").split()) for part in argv)
        if command:
            holder = command if len(command) <= 120 else command[:117] + "..."
    except OSError:
        pass
    return (f"{match['path']} is open for writing in another process (PID {pid}: {holder}); "
            "DuckDB lets no other process open the file meanwhile: close that connection (a "
            "DuckDB shell, a notebook, a script), then run the command again")


# simlab query's default limits: a query of the results is seconds; a quarter of the memory
# leaves the rest to a sweep running beside it (DuckDB spills larger sorts and joins to disk).
DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY_LIMIT = "25%"


@dataclass(frozen=True)
class Limits:
    """What one ``simlab query`` may use: ``timeout`` seconds of wall time for all its
    statements (None: no limit) and DuckDB's ``memory_limit`` ("2GB", "25%" of the memory)."""

    timeout: float | None = DEFAULT_TIMEOUT
    memory_limit: str = DEFAULT_MEMORY_LIMIT


class QueryTimeout(QueryFailed):
    """The query ran past its time limit and was stopped."""


class BadLimit(ValueError):
    """A limit DuckDB does not accept (the message says which and why)."""


def read_only(db_path: Path, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the DuckDB file (the query commands' and the sweep's tables)."""
    if not Path(db_path).exists():
        raise FileNotFoundError(f"no DuckDB file at {db_path}: run a sweep first "
                                "(or set SIMLAB_DUCKDB_PATH)")
    # read_only stops writes to the file; no external access stops COPY ... TO and ATTACH from
    # writing other files (a query is a reader's tool, not a way to write to disk).
    config: dict[str, str | bool] = {"enable_external_access": False}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    try:
        return duckdb.connect(str(db_path), read_only=True, config=config)
    except (duckdb.ParserException, duckdb.InvalidInputException) as exc:
        if memory_limit is None:
            raise
        raise BadLimit(f"{memory_limit!r} is not a size DuckDB accepts (e.g. 2GB, 500MiB, 25%): "
                       f"{exc}") from None
    except duckdb.IOException as exc:
        held = lock_conflict(str(exc))
        if held is None:
            raise
        raise DatabaseLocked(held) from None


def fetch(con: duckdb.DuckDBPyConnection, sql: str, parameters: list | None = None
          ) -> tuple[list[str], list[tuple]]:
    """Run one statement ``sql`` on ``con``; return column names and rows."""
    cursor = con.execute(sql, parameters) if parameters else con.execute(sql)
    if cursor is None or not cursor.description:  # no statement, or one without rows
        return [], []
    return [d[0] for d in cursor.description], cursor.fetchall()


def query(sql: str, db_path: Path, parameters: list | None = None) -> tuple[list[str], list[tuple]]:
    """Run one statement ``sql`` read-only against the DuckDB file; return column names and rows."""
    con = read_only(db_path)
    try:
        return fetch(con, sql, parameters)
    finally:
        con.close()


@dataclass(frozen=True)
class StatementResult:
    """One statement of a query and what it returned (no columns: it returns no rows)."""

    statement: str
    columns: list[str]
    rows: list[tuple]


def query_statements(sql: str, db_path: Path, limits: Limits | None = None
                     ) -> list[StatementResult]:
    """Run every statement of ``sql`` read-only, in order, within ``limits`` (default
    ``Limits()``), and return each one's result.

    Raises ValueError when ``sql`` holds no statement (BadLimit when the memory limit is not
    a size), QueryFailed naming the statement that failed (QueryTimeout past the time limit), and
    KeyboardInterrupt on Ctrl-C (DuckDB is interrupted first, so it stops at once instead of
    finishing the query).
    """
    limits = limits or Limits()
    con = read_only(db_path, limits.memory_limit)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryFailed(f"query failed: {exc}") from None
        if not statements:
            raise ValueError("no SQL statement given (the query is empty or only comments)")

        def run() -> list[StatementResult]:
            results = []
            for i, statement in enumerate(statements, 1):
                text = statement.query.strip().rstrip(";").strip()
                try:
                    cursor = con.execute(statement)
                    columns = [d[0] for d in cursor.description] if cursor.description else []
                    results.append(StatementResult(text, columns,
                                                   cursor.fetchall() if columns else []))
                except duckdb.Error as exc:
                    where = f" (statement {i} of {len(statements)}: {text})" \
                        if len(statements) > 1 else ""
                    reason = str(exc)
                    if isinstance(exc, duckdb.OutOfMemoryException):  # the first line says it
                        reason = (f"out of memory under the query's memory limit of "
                                  f"{limits.memory_limit} (--memory-limit raises it): "
                                  f"{reason.splitlines()[0]}")
                    raise QueryFailed(f"query failed{where}: {reason}") from None
            return results

        return _interruptible(con, run, limits.timeout)
    finally:
        con.close()


def _interruptible(con: duckdb.DuckDBPyConnection, work: Callable[[], T],
                   timeout: float | None = None) -> T:
    """``work()`` in a helper thread, so that Ctrl-C reaches this (main) thread at once: DuckDB
    holds the main thread in C and would notice the signal only much later, if at all. Past
    ``timeout`` seconds DuckDB is interrupted and QueryTimeout raised."""
    done, out = threading.Event(), {}
    deadline = None if timeout is None else time.monotonic() + timeout

    def target() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="simlab-query", daemon=True).start()
    try:
        while not done.wait(0.1):
            if deadline is not None and time.monotonic() > deadline:
                con.interrupt()
                done.wait(10)
                raise QueryTimeout(f"query stopped after {timeout:g} s, its time limit "
                                   "(--timeout SECONDS changes it; 0: no limit)")
    except KeyboardInterrupt:
        con.interrupt()
        done.wait(10)
        raise
    if "error" in out:
        raise out["error"]
    return out["value"]
