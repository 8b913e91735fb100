"""A faster SQLite event log for the local Dagster instance (configured in dagster_home/dagster.yaml).

Dagster's SqliteEventLogStorage builds a new SQLAlchemy engine for every statement; with several
statements per asset event that costs ~30 ms an event on a small machine, i.e. longer than a short
simulation. simlab writes one materialization per partition, so this subclass keeps one engine, with
one open connection per thread, per database file (per process, bounded in number), and runs SQLite
in WAL mode (as Dagster does) with ``synchronous=NORMAL``:
a commit no longer waits for fsync, and a crash of the machine (not of a process) may lose the last
few events, never corrupt the file. A new run's database file is a copy of an empty, initialised
one (made once per Dagster version) instead of being created and stamped through alembic each time
(~0.1-0.2 s of CPU a run). Everything else is Dagster's own code. Production uses
PostgreSQL (dagster-postgres), where none of this applies.

``open_instance`` opens the instance of DAGSTER_HOME for a ``simlab`` command holding a lock
(``instance.lock``, see ``lock_directory``): on a new DAGSTER_HOME, Dagster creates the SQLite
databases, their tables and their alembic stamp when the instance is first opened, with no lock of
its own, and two commands started at once corrupted the schema (``alembic_version`` with two heads;
every later command failed). With the lock, one process creates it and the others open it after.

``ThreadedComputeLogManager`` captures a run's stdout and stderr exactly as Dagster's
LocalComputeLogManager does (file descriptors redirected to the same files, same log keys, same
complete-artifact), but copies the files back to the terminal with one thread of the run process
instead of a ``tail -F`` and a Python watcher process per stream, torn down without sleeps.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import dagster as dg
import sqlalchemy as sa
from dagster import __version__ as dagster_version
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file
from sqlalchemy.pool import SingletonThreadPool


def lock_directory(root: str | Path) -> Path:
    """Where simlab's locks for the instance in ``root`` (DAGSTER_HOME) live: ``root/locks``;
    where that cannot be written (a read-only ConfigMap in a pod, no such directory yet), a
    directory of the temporary directory named after ``root``."""
    root = Path(root)
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    candidates = ([root / "locks"] if root.is_dir() else []) + [
        Path(tempfile.gettempdir()) / f"simlab-locks-{digest}"]
    for directory in candidates:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    raise OSError(f"no writable directory for simlab's locks under {root} or the temporary "
                  "directory")


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (waiting for it); the kernel releases it when
    the process dies, however it dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_instance(*, capture_logs: bool = True) -> dg.DagsterInstance:
    """``DagsterInstance.get()`` (the instance of DAGSTER_HOME), opened holding the instance lock
    so that processes starting together on a new DAGSTER_HOME create its storage one at a time
    (the module's docstring). Dagster builds every storage, and creates its schema, when the
    instance is constructed: the lock covers all of it."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.get()  # Dagster's own error says what is missing
    with exclusive(lock_directory(home) / "instance.lock"):
        from_template(Path(home))
        if capture_logs:
            return dg.DagsterInstance.get()
        # As DagsterInstance.get(), without the run's stdout/stderr capture (simlab sweep's
        # runs overlap in its threads: sweep._overlapping), so that the sweep needs no second
        # instance (its own storages: ~0.1 CPU-s to open).
        from dagster._core.instance.ref import InstanceRef

        ref = InstanceRef.from_dir(home)
        return dg.DagsterInstance.from_ref(ref._replace(compute_logs_data=ConfigurableClassData(
            "dagster._core.storage.noop_compute_log_manager", "NoOpComputeLogManager", "{}\n")))


# --- a new instance from a template ---------------------------------------------------------
# Dagster creates a new instance's three SQLite databases (runs, schedules, the event log's index)
# through alembic: ~0.35 s of CPU and, with SQLite's fsync per commit, 1-2 s of wall time on a
# small machine, on every new DAGSTER_HOME. They are the same empty databases every time (no
# identity: the run storage's id is created on first use), so they are made once per Dagster
# version and instance file, by Dagster itself, in a cache directory, and a new DAGSTER_HOME gets
# copies.
_SQLITE_STORAGES = {"run": {"SqliteRunStorage", "FastSqliteRunStorage"},
                    "schedule": {"SqliteScheduleStorage"},
                    "event": {"SqliteEventLogStorage", "FastSqliteEventLogStorage"}}
_NOT_COPIED = {"dagster.yaml", "dagster.yml", "locks"}


def cache_dir() -> Path:
    """Where simlab keeps what it can rebuild (instance templates): SIMLAB_CACHE_DIR, else
    ``$XDG_CACHE_HOME/simlab``, else ``~/.cache/simlab``."""
    explicit = os.environ.get("SIMLAB_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simlab"


def _sqlite_inside(home: Path) -> bool:
    """Whether the instance in ``home`` keeps runs, schedules and events in Dagster's SQLite
    storages under ``home`` (the only instances a template is made for)."""
    from dagster._core.instance.ref import InstanceRef
    from dagster_shared.yaml_utils import load_run_config_yaml

    ref = InstanceRef.from_dir(str(home))
    if ref.custom_instance_class_data is not None:
        return False
    storages = {"run": ref.run_storage_data, "schedule": ref.schedule_storage_data,
                "event": ref.event_storage_data}
    for kind, data in storages.items():
        if data.class_name not in _SQLITE_STORAGES[kind]:
            return False
        base = (load_run_config_yaml(data.config_yaml) or {}).get("base_dir")
        if not isinstance(base, str):
            return False
        resolved = (home / base).resolve()
        if resolved != home.resolve() and home.resolve() not in resolved.parents:
            return False
    return True


def _template(home: Path) -> Path | None:
    """The template of the instance in ``home`` (made now if missing), or None when there is
    none to be had (not SQLite inside ``home``, no writable cache)."""
    config = next((home / name for name in ("dagster.yaml", "dagster.yml")
                   if (home / name).exists()), None)
    text = config.read_bytes() if config is not None else b""
    key = hashlib.sha256(dagster_version.encode() + b"\0" + text).hexdigest()[:16]
    template = cache_dir() / f"instance-template-{key}"
    if template.is_dir():
        return template
    if not _sqlite_inside(home):
        return None
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(dir=template.parent, prefix=".tmp-instance-"))
    except OSError:
        return None
    try:
        # an empty file where the home has none: Dagster's defaults, without its warning
        (build / (config.name if config is not None else "dagster.yaml")).write_bytes(text)
        _initialise(build)
        for name in _NOT_COPIED:  # what the template is made from, not what it holds
            path = build / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        if any(p.name.endswith(("-wal", "-shm", "-journal")) for p in build.rglob("*")):
            return None  # a database not closed cleanly: never copy it
        try:
            os.rename(build, template)
        except OSError:  # another process made it meanwhile
            return template if template.is_dir() else None
        return template
    except Exception:  # no template: Dagster creates the databases as usual
        return None
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _initialise(directory: Path) -> None:
    """Let Dagster create the instance of ``directory`` (its databases and alembic stamps), and
    our event log its run-database template; then close every database (WAL checkpointed).
    DAGSTER_HOME points at ``directory`` meanwhile: relative base_dirs resolve against it."""
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(directory)
    try:
        instance = dg.DagsterInstance.from_config(str(directory))
        try:
            storage = instance.event_log_storage
            if isinstance(storage, FastSqliteEventLogStorage):
                storage._template()
        finally:
            instance.dispose()
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous


def from_template(home: Path) -> bool:
    """Give a new instance in ``home`` copies of its template's databases (made once per
    Dagster version and instance file); False when ``home`` already has any of them, or there is
    no template (then Dagster creates them as usual). Call it holding the instance lock."""
    if not home.is_dir() or os.environ.get("SIMLAB_INSTANCE_TEMPLATE", "1") == "0":
        return False
    if (home / "history" / "runs.db").exists():  # Dagster's layout, there already: no template
        return False  # to make (were the cache emptied) for an instance that needs none
    try:
        template = _template(home)
    except Exception:  # a template is an optimisation, never a reason to fail
        return False
    if template is None:
        return False
    files = [p.relative_to(template) for p in sorted(template.rglob("*")) if p.is_file()]
    if not files or any((home / f).exists() for f in files):
        return False
    try:
        for relative in files:  # each complete or absent: Dagster creates what is absent
            target = home / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-template-")
            os.close(fd)
            try:
                shutil.copyfile(template / relative, tmp)
                os.link(tmp, target)  # never over a file another process just made
            finally:
                os.unlink(tmp)
    except OSError:
        return False
    return True


_MAX_ENGINES = 32  # one per run's database file; old runs' engines are dropped
# Not "*.db": Dagster lists run ids (and wipes) by globbing the base directory for "*.db".
_TEMPLATE = f".run-shard-template-{dagster_version}.sqlite"


def _tune(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class FastSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage with cached engines; ``base_dir`` may be relative to DAGSTER_HOME."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, sa.engine.Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        if not os.path.isabs(base_dir) and os.environ.get("DAGSTER_HOME"):
            base_dir = os.path.join(os.environ["DAGSTER_HOME"], base_dir)
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "FastSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> sa.engine.Engine:
        if self._engines_pid != os.getpid():  # a forked child must not share engines
            self._engines, self._engines_pid = OrderedDict(), os.getpid()
        engine = self._engines.get(shard)
        if engine is None:
            # One open connection per thread: closing the last connection of a WAL database
            # checkpoints it, which would happen after every statement with NullPool.
            engine = sa.create_engine(self.conn_string_for_shard(shard),
                                      poolclass=SingletonThreadPool,
                                      connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            sa.event.listen(engine, "connect", _tune)
            self._engines[shard] = engine
            if len(self._engines) > _MAX_ENGINES:
                _, old = self._engines.popitem(last=False)
                old.dispose()
        else:
            self._engines.move_to_end(shard)
        return engine

    def dispose(self) -> None:
        """Close this process's engines too (the last connection to a WAL database checkpoints
        it), then Dagster's own clean-up."""
        if self._engines_pid == os.getpid():
            while self._engines:
                _, engine = self._engines.popitem()
                engine.dispose()
        super().dispose()

    def _template(self) -> str:
        """An empty run database, initialised (tables, WAL, alembic stamp) by Dagster's own
        ``_initdb`` once per Dagster version and directory; created atomically."""
        path = os.path.join(self._base_dir, _TEMPLATE)
        if not os.path.exists(path):
            fd, tmp = tempfile.mkstemp(dir=self._base_dir, prefix=".tmp-template-",
                                       suffix=".sqlite")
            os.close(fd)
            os.unlink(tmp)  # SQLite creates it
            try:
                engine = sa.create_engine(f"sqlite:///{tmp}", poolclass=sa.pool.NullPool)
                try:
                    self._initdb(engine)
                finally:
                    engine.dispose()  # the last connection closed: WAL checkpointed into the file
                for suffix in ("-wal", "-shm"):
                    if os.path.exists(tmp + suffix):
                        raise RuntimeError(f"{tmp}: WAL not checkpointed")
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return path

    def _create_from_template(self, shard: str) -> bool:
        """Create a run's database as a copy of the template; False if it exists already or
        cannot be made so (then Dagster initialises it as usual)."""
        target = self.path_for_shard(shard)
        if shard == INDEX_SHARD_NAME or os.path.exists(target):
            return False
        try:
            template = self._template()
            fd, tmp = tempfile.mkstemp(dir=self._base_dir, prefix=".tmp-shard-", suffix=".sqlite")
            os.close(fd)
            try:
                shutil.copyfile(template, tmp)
                os.link(tmp, target)  # never over a database another process just created
            finally:
                os.unlink(tmp)
        except (OSError, sa.exc.SQLAlchemyError, RuntimeError):
            return False
        return True

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.engine.Connection]:
        with self._db_lock:
            if shard not in self._initialized_dbs and self._create_from_template(shard):
                self._initialized_dbs.add(shard)
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store a run's batch of asset events with one multi-row insert per database file.

        The same rows as ``store_event`` one by one (run shard, index shard, tags); the asset table
        row, which each event overwrites, is updated once per asset and event type, with the last
        event, as dagster-postgres does. Other batches take Dagster's one-by-one path.
        """
        if not events or len({e.run_id for e in events}) != 1 or not all(
            e.is_dagster_event and e.dagster_event_type in ASSET_EVENTS for e in events
        ):
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(e) for e in events]
        insert = SqlEventLogStorageTable.insert()
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(insert, rows)  # executemany: one compiled statement for the batch
        with self.index_transaction() as conn:
            returning = insert.returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True)
            ids = [row[0] for row in conn.execute(returning, rows).fetchall()]
            self._store_asset_event_tags(conn, list(events), ids)
            last: dict[tuple, tuple[EventLogEntry, int]] = {}
            for event, event_id in zip(events, ids, strict=True):
                last[(event.dagster_event.asset_key, event.dagster_event_type)] = (event, event_id)
            for event, event_id in last.values():
                self._store_asset_event(conn, event, event_id)


class FastSqliteRunStorage(SqliteRunStorage):
    """Dagster's SqliteRunStorage with one SQLAlchemy engine per process instead of one per
    statement, so its compiled statements are cached (Dagster compiled every query again), and
    with its schema checks remembered once they pass: ``has_run_stats_index_cols`` ran
    ``PRAGMA table_info`` on every run event and run query. A run lookup fell from ~4 to ~1 ms
    of CPU; a sweep makes dozens. Still a new SQLite connection per statement (``NullPool``,
    as Dagster's), so nested connections behave as before. ``base_dir`` may be relative to
    DAGSTER_HOME."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(conn_string, inst_data)
        self._cached_engine: sa.engine.Engine | None = None
        self._cached_engine_pid = 0
        self._passed: set[str] = set()  # schema checks that passed (they cannot un-pass)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "FastSqliteRunStorage":
        base_dir = config_value["base_dir"]
        if not os.path.isabs(base_dir) and os.environ.get("DAGSTER_HOME"):
            base_dir = os.path.join(os.environ["DAGSTER_HOME"], base_dir)
        return cls.from_local(base_dir, inst_data)

    def _engine(self) -> sa.engine.Engine:
        if self._cached_engine is None or self._cached_engine_pid != os.getpid():
            self._cached_engine = sa.create_engine(self._conn_string, poolclass=sa.pool.NullPool)
            self._cached_engine_pid = os.getpid()  # a forked child makes its own
        return self._cached_engine

    @contextmanager
    def connect(self) -> Iterator[sa.engine.Connection]:
        with self._engine().connect() as conn, conn.begin():
            yield conn

    def _remembered(self, name: str, check) -> bool:
        if name in self._passed:
            return True
        passed = check()
        if passed:
            self._passed.add(name)
        return passed

    def has_run_stats_index_cols(self) -> bool:
        return self._remembered("run_stats_index_cols", super().has_run_stats_index_cols)

    def has_built_index(self, migration_name: str) -> bool:
        return self._remembered(f"index:{migration_name}",
                                lambda: super(FastSqliteRunStorage, self).has_built_index(
                                    migration_name))

    def has_bulk_actions_selector_cols(self) -> bool:
        return self._remembered("bulk_actions_selector_cols",
                                super().has_bulk_actions_selector_cols)

    def has_backfill_id_column(self) -> bool:
        return self._remembered("backfill_id_column", super().has_backfill_id_column)

    def dispose(self) -> None:
        if self._cached_engine is not None and self._cached_engine_pid == os.getpid():
            self._cached_engine.dispose()
        self._cached_engine = None
        super().dispose()


# How often the mirror looks for new output: a read() that finds nothing costs microseconds, and
# a terminal sees output this late at most. Joining the mirror waits at most _MIRROR_JOIN seconds
# (only a terminal that stopped reading makes it wait at all).
_MIRROR_POLL = 0.05
_MIRROR_JOIN = 5.0
_CHUNK = 1 << 16


def _fileno(stream: TextIO) -> int | None:
    """The stream's file descriptor, or None (a test runner's stand-in stream has none)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    return fd if isinstance(fd, int) else None


class _Mirror:
    """Copies what is appended to files to file descriptors, from one daemon thread.

    The thread owns the descriptors it reads and writes, and closes them when it ends: a target
    that blocks (a terminal nobody reads) can hold the thread, never the process (``close``
    stops waiting after ``_MIRROR_JOIN`` seconds, and a daemon thread does not delay exit).
    """

    def __init__(self, pairs: Sequence[tuple[str, int]]):
        self._pairs: list[tuple[int, int]] = []
        try:
            for path, target in pairs:
                self._pairs.append((os.open(path, os.O_RDONLY), target))
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="simlab-compute-log-mirror",
                                            daemon=True)
            self._thread.start()
        except BaseException:  # no thread to own the descriptors: close them here
            for source, _ in self._pairs:
                os.close(source)
            for _, target in pairs:
                os.close(target)
            raise

    def _copy(self) -> None:
        for i, (source, target) in enumerate(self._pairs):
            while chunk := os.read(source, _CHUNK):
                if target < 0:
                    continue  # the target failed: keep reading, so the file is not re-sent
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(target, view):]
                except OSError:  # the terminal went away: the file still has everything
                    os.close(target)
                    self._pairs[i] = (source, target := -1)

    def _run(self) -> None:
        try:
            while not self._stop.wait(_MIRROR_POLL):
                self._copy()
            self._copy()  # what was written until the descriptors were restored
        finally:
            for source, target in self._pairs:
                os.close(source)
                if target >= 0:
                    os.close(target)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(_MIRROR_JOIN)


class _Capture:
    """One capture's redirection: its streams, their log files' descriptors, the mirror's
    targets (copies of the descriptors as they were before any capture)."""

    def __init__(self, streams: Sequence[tuple[TextIO, int, str]]):
        self.streams = list(streams)
        self.logs: dict[int, int] = {}
        self.targets: list[tuple[str, int]] = []


class _Redirects:
    """The process's file descriptors 1 and 2 while captures overlap (runs in threads of one
    process, as ``simlab sweep`` executes them): each points at the newest open capture's file,
    and at what it was before the first capture once none is open, whatever the order in which
    captures end. (Restoring each capture's own saved descriptor, as Dagster does, leaves the
    process writing into a finished run's file when an older capture ends first.)"""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: list[_Capture] = []
        self._original: dict[int, int] = {}  # fd -> a copy of it before the first capture
        self._pid = os.getpid()

    def start(self, streams: Sequence[tuple[TextIO, int, str]]) -> _Capture:
        capture = _Capture(streams)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's captures are not ours
                self._open, self._original, self._pid = [], {}, os.getpid()
            try:
                for stream, fd, path in capture.streams:
                    stream.flush()
                    if fd not in self._original:
                        self._original[fd] = os.dup(fd)  # not inheritable: children see the file
                    capture.logs[fd] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                               0o666)
                    capture.targets.append((path, os.dup(self._original[fd])))
                for fd, log in capture.logs.items():
                    os.dup2(log, fd)
                self._open.append(capture)
            except BaseException:
                self._release(capture)
                for _, target in capture.targets:
                    os.close(target)
                raise
        return capture

    def end(self, capture: _Capture) -> None:
        with self._lock:
            for stream, _, _ in capture.streams:
                with contextlib.suppress(ValueError, OSError):  # a closed stream: nothing to flush
                    stream.flush()
            if capture in self._open:
                self._open.remove(capture)
            self._release(capture)

    def _release(self, capture: _Capture) -> None:
        """Point each of the capture's descriptors at the newest open capture's file, else at
        the original; close the capture's log files (its targets belong to its mirror)."""
        for fd in capture.logs:
            newer = [c.logs[fd] for c in self._open if fd in c.logs]
            if newer:
                os.dup2(newer[-1], fd)
            elif fd in self._original:
                os.dup2(self._original[fd], fd)
        for log in capture.logs.values():
            os.close(log)
        capture.logs.clear()
        for fd in [fd for fd in self._original
                   if not any(fd in c.logs for c in self._open)]:
            os.close(self._original.pop(fd))


_REDIRECTS = _Redirects()


class ThreadedComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager whose capture mirrors to the terminal with a thread, not processes.

    Dagster's capture starts ``tail -F`` and a Python ``watch_orphans`` interpreter for each of
    stdout and stderr (four processes a run, two of them Python start-ups) and stops them with
    SIGTERM and waits: ~20-40 ms of wall time and more of CPU per run. Here the process's file
    descriptors 1 and 2 are pointed at the same files in append mode, and a thread copies what
    they receive to the original descriptors. Captures that overlap in one process (runs in
    threads) share the descriptors: the newest open capture's files receive the output
    (``_Redirects``), and the original descriptors are back once all have ended. A child started meanwhile (a subprocess, a
    forkserver pool's server) inherits the file, never a pipe: it can never block on it, and
    whatever it writes after the capture stays in the file. ``base_dir`` may be relative to
    DAGSTER_HOME; reading, subscriptions and the UI are LocalComputeLogManager's.
    """

    def __init__(self, base_dir: str, polling_timeout: float | None = None,
                 inst_data: ConfigurableClassData | None = None):
        if not os.path.isabs(base_dir) and os.environ.get("DAGSTER_HOME"):
            base_dir = os.path.join(os.environ["DAGSTER_HOME"], base_dir)
        super().__init__(base_dir, polling_timeout, inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "ThreadedComputeLogManager":
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        if os.name == "nt":  # no file descriptor redirection there: Dagster's own way
            with super().capture_logs(log_key) as context:
                yield context
            return
        paths = [self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[io_type])
                 for io_type in (ComputeIOType.STDOUT, ComputeIOType.STDERR)]
        for path in paths:
            ensure_file(path)
        streams = [(stream, fd, path) for stream, path in zip((sys.stdout, sys.stderr), paths,
                                                              strict=True)
                   if (fd := _fileno(stream)) is not None]  # none: nothing to redirect (Dagster)
        capture = _REDIRECTS.start(streams)
        try:
            mirror = _Mirror(capture.targets)
        except BaseException:
            _REDIRECTS.end(capture)
            raise
        try:
            yield CapturedLogContext(log_key)
        finally:
            _REDIRECTS.end(capture)
            mirror.close()
        # Left on the file system so that readers know the capture is complete (as Dagster).
        touch_file(self.complete_artifact_path(log_key))
