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
"""

import contextlib
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from dagster import __version__ as dagster_version
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import SingletonThreadPool

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
