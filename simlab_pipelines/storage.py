"""Replication results: one Parquet file per partition, on a local disk or in an object store.

Layout: ``<results>/<experiment>/<config_key>/<replication>.parquet`` for a partition of one
replication, ``<results>/<experiment>/<config_key>/<first>-<last>.parquet`` for a block of
replications (a row each; a block whose replications partly failed holds the others). A file's
name without ``.parquet`` is its *stem*, the part of its partition key after ``|``. Local files are
written to a temporary name in the same directory and renamed, so a killed run never leaves a half
file; an object-store PUT is atomic by itself. A re-run overwrites with identical content.
"""

import array
import functools
import io
import itertools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("simlab.storage")

# A corrupt result file is renamed to ``<replication>.parquet.corrupt``: out of every reader's way
# (no longer ``*.parquet``), so its partition counts as missing and runs again, but kept for a look.
QUARANTINE_SUFFIX = ".corrupt"
# What a file must hold to be read as a replication (older files may lack later columns).
REQUIRED_COLUMNS = ("experiment", "config_key", "replication", "metrics")

# The columns of every replication file (metrics is a struct of the model's metrics).
SCHEMA_COLUMNS = (
    "experiment", "config_key", "replication", "model", "params", "inputs_hash", "seed_entropy",
    "spawn_key",
    "horizon", "warmup", "engine_version", "code_version", "dagster_run_id", "partition_key",
    "trace_id", "span_id", "started_at", "wall_seconds", "events", "metrics", "series",
    "double_horizon",
)


def replication_row(*, experiment: str, config_key: str, partition_key: str, result: Mapping,
                    code_version: str, run_id: str, trace_id: str, span_id: str,
                    started_at: datetime, inputs_hash: str,
                    double_horizon: str | None = None) -> dict[str, Any]:
    """The row stored for one simulation (``result`` is ``SimulationResult.to_dict()``;
    ``double_horizon``: the JSON of its run at twice the horizon, batch.doubled_run)."""
    return {
        "experiment": experiment,
        "config_key": config_key,
        "replication": int(result["replication"]),
        "model": result["model"],
        "params": json.dumps(result["params"], sort_keys=True),
        "inputs_hash": inputs_hash,  # ExperimentSpec.inputs_hash: a file from other inputs is stale
        "seed_entropy": int(result["seed"]["entropy"]),
        "spawn_key": [int(k) for k in result["seed"]["spawn_key"]],
        "horizon": float(result["horizon"]),
        "warmup": float(result["warmup"]),
        "engine_version": result["engine_version"],
        "code_version": code_version,
        "dagster_run_id": run_id,
        "partition_key": partition_key,
        "trace_id": trace_id,
        "span_id": span_id,
        "started_at": started_at,
        "wall_seconds": float(result["wall_seconds"]),
        "events": int(result["events"]),
        "metrics": {k: float(v) for k, v in result["metrics"].items()},
        # The time series (batch means from time 0), when recorded: JSON, so that every file has
        # the same schema whether or not the experiment records series.
        "series": json.dumps(result["series"], sort_keys=True) if result.get("series") else None,
        # The same replication at twice the horizon, for the steady-state check of a model that
        # records no series (a sample's replications only): {"horizon", "metrics" or "error"}.
        "double_horizon": double_horizon,
    }


# What tells one local file from another at the same path: (size, mtime in ns, inode). Every write
# is a new file renamed into place, so a re-written result always has a new identity.
FileIdentity = tuple[int, int, int]


def file_identity(st: os.stat_result) -> FileIdentity:
    return st.st_size, st.st_mtime_ns, st.st_ino


def stem(first: int, last: int) -> str:
    """The file stem (and partition key suffix) of replications ``first`` .. ``last``."""
    return str(first) if first == last else f"{first}-{last}"


_STEM = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")


def parse_stem(name: str) -> tuple[int, int] | None:
    """(first, last) replication of a stem (``"7"`` or ``"0-9"``), None if it is none."""
    found = _STEM.match(name)
    if found is None:
        return None
    first = int(found.group(1))
    last = int(found.group(2)) if found.group(2) is not None else first
    return (first, last) if last >= first else None


_MADE: set[str] = set()  # directories this process made or found (one makedirs each)
_TEMPORARY = itertools.count()
_TOKEN = uuid.uuid4().hex[:12]

# The Arrow types polars gives a replication row (``rows_frame(...).to_arrow()``), so that files
# written through pyarrow read back exactly as before; ``metrics`` is a struct of the model's.
_TYPES = {
    "replication": pa.int64(), "seed_entropy": pa.int64(), "spawn_key": pa.large_list(pa.int64()),
    "horizon": pa.float64(), "warmup": pa.float64(), "started_at": pa.timestamp("us", tz="UTC"),
    "wall_seconds": pa.float64(), "events": pa.int64(),
}


@functools.lru_cache(maxsize=64)
def _arrow_schema(columns: tuple[str, ...], metrics: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(c, pa.struct([(m, pa.float64()) for m in metrics]) if c == "metrics"
                       else _TYPES.get(c, pa.large_string())) for c in columns])


def _arrow_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table | None:
    """``rows`` as an Arrow table of the schema kept per model, or None when they are not all
    replication rows of one shape (then polars infers their types)."""
    columns = tuple(rows[0]) if rows else ()
    metrics = tuple(rows[0]["metrics"]) if rows and isinstance(rows[0].get("metrics"),
                                                                Mapping) else None
    if set(columns) != set(SCHEMA_COLUMNS) or metrics is None or not all(
            tuple(row) == columns and tuple(row["metrics"]) == metrics for row in rows):
        return None
    schema = _arrow_schema(columns, metrics)
    try:
        return pa.Table.from_arrays([_arrow_column([row[c] for row in rows], schema.field(c).type)
                                     for c in columns], schema=schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):  # another type: polars'
        return None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


_INT64, _FLOAT64, _STRING = pa.int64(), pa.float64(), pa.large_string()


def _arrow_column(values: list, kind: pa.DataType) -> pa.Array:
    """``values`` as an Arrow array of type ``kind``, assembled from buffers.

    ``pa.array`` (and ``from_pydict``, ``scalar``) first asks whether the values are pandas
    objects, which imports pandas (~0.4 CPU-s) in every process that writes or collects rows,
    the sweep's own included; buffers ask nothing. Raises ValueError or TypeError for values it
    does not take (then the rows go through polars)."""
    count = len(values)
    if kind == _STRING:
        if not all(v is None or type(v) is str for v in values):
            raise TypeError("string column with other values")
        encoded = [b"" if v is None else v.encode() for v in values]
        valid = None
        if None in values:
            valid = pa.py_buffer(np.packbits(np.array([v is not None for v in values]),
                                             bitorder="little").tobytes())
        offsets = array.array("q", itertools.accumulate((len(b) for b in encoded), initial=0))
        return pa.Array.from_buffers(kind, count, [valid, pa.py_buffer(offsets),
                                                   pa.py_buffer(b"".join(encoded))])
    if kind == _FLOAT64:
        if not all(isinstance(v, float | int) and type(v) is not bool for v in values):
            raise TypeError("float64 column with other values")
        return _buffers(kind, array.array("d", values))
    if kind == _INT64:
        if not all(isinstance(v, int) and type(v) is not bool for v in values):
            raise TypeError("int64 column with other values")
        return _buffers(kind, array.array("q", values))  # OverflowError beyond int64
    if pa.types.is_struct(kind):
        return pa.StructArray.from_arrays(
            [_arrow_column([row[f.name] for row in values], f.type) for f in kind],
            fields=list(kind))
    if pa.types.is_large_list(kind):
        offsets = array.array("q", itertools.accumulate((len(v) for v in values), initial=0))
        return pa.LargeListArray.from_arrays(_buffers(_INT64, offsets),
                                             _arrow_column([x for v in values for x in v],
                                                           kind.value_type))
    if pa.types.is_timestamp(kind):
        if not all(isinstance(v, datetime) and v.tzinfo is not None for v in values):
            raise ValueError("timestamps must be timezone-aware datetimes")
        return _buffers(kind, array.array("q", ((v - _EPOCH) // _MICROSECOND for v in values)))
    raise TypeError(f"no buffers for Arrow type {kind}")


def _buffers(kind: pa.DataType, data: array.array) -> pa.Array:
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def encode_rows(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The Parquet bytes of a partition's rows. Built with pyarrow from a schema kept per model
    (0.5 ms a one-row file against polars' 0.7 ms), without statistics, dictionaries or the
    Arrow schema (polars reads the same types from Parquet's own): a file of one replication is
    2.7 KB (8.1 KB before), a block of 10 of ``linear`` 3.2 KB (snappy), so either takes one
    4 KiB block on disk. Rows of another shape go through polars."""
    buffer = io.BytesIO()
    table = _arrow_table(rows)
    if table is not None:
        pq.write_table(table, buffer, compression="none" if len(rows) == 1 else "snappy",
                       use_dictionary=False, write_statistics=False, store_schema=False)
    else:
        rows_frame(rows).write_parquet(buffer)
    return buffer.getvalue()


def rows_frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Replication rows as the frame their files hold (and read back as, column types included);
    through Arrow with the schema kept per model (6x faster than inferring from dicts)."""
    table = _arrow_table(rows)
    if table is not None:
        return pl.from_arrow(table)
    return pl.DataFrame([dict(row) for row in rows], schema_overrides={"series": pl.String,
                                                                  "double_horizon": pl.String},
                        infer_schema_length=None)


def storage_options() -> dict[str, Any]:
    """Object-store options from the standard AWS_* variables (S3-compatible servers included)."""
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def process_umask() -> int:
    """This process's umask, read without changing it where Linux allows (``os.umask`` reads it
    only by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc (macOS): the usual read-by-setting
    os.umask(mask)
    return mask


def _local_listing(root: str) -> Iterator[tuple[str, str]]:
    """(directory, file name) below ``root``, one level deep: os.scandir, without the stat per
    file that fsspec's glob makes (a third of a 5,000-partition summary's time). Hidden
    directories (the summary's ``.simlab-runs``) are not configurations: skipped."""
    try:
        directories = [e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    except FileNotFoundError:
        return
    for directory in directories:
        try:
            with os.scandir(directory.path) as entries:
                names = [entry.name for entry in entries]
        except FileNotFoundError:  # removed while listing
            continue
        for name in names:
            yield directory.name, name


LISTING_SCHEMA = {"config_key": pl.String, "file": pl.String, "first": pl.Int64,
                  "last": pl.Int64}


# The last listings of a few experiments: configuration directory -> (its mtime, its files).
_LISTINGS: dict[str, dict[str, tuple[int, pl.DataFrame]]] = {}
_LISTINGS_KEPT = 8
_SETTLED_NS = 2_000_000_000


def _parse_listing(names: pl.DataFrame) -> pl.DataFrame:
    """(config_key, name) of directory entries -> the result files among them (LISTING_SCHEMA)."""
    parts = (pl.col("name").str.strip_suffix(".parquet")
             .str.extract_groups(r"^([0-9]+)(?:-([0-9]+))?$"))
    return (names.filter(pl.col("name").str.ends_with(".parquet"))
            .with_columns(parts.alias("_parts"))
            .select("config_key",
                    pl.col("name").str.strip_suffix(".parquet").alias("file"),
                    pl.col("_parts").struct.field("1").cast(pl.Int64).alias("first"),
                    pl.col("_parts").struct.field("2").cast(pl.Int64).alias("last"))
            .filter(pl.col("first").is_not_null())  # skips temporary files
            .with_columns(pl.coalesce("last", "first").alias("last"))
            .filter(pl.col("last") >= pl.col("first")))


class CorruptResultFile(ValueError):
    """A replication file that cannot be read as one (truncated, garbage, not a replication)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def parse_replication(data: bytes, path: str) -> pl.DataFrame:
    """The rows in a replication file's bytes (one, or a block's); raises CorruptResultFile
    naming ``path``."""
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except (Exception, pl.exceptions.PanicException) as exc:  # polars may panic on bad bytes
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptResultFile(path, f"not a readable Parquet file ({len(data)} bytes: "
                                      f"{reason})") from None
    absent = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if absent or frame.height < 1:
        raise CorruptResultFile(path, f"not a replication file ({frame.height} rows, columns "
                                      f"{', '.join(frame.columns) or 'none'})")
    return frame


class ResultStore:
    """The replication files under one root: a local directory or ``s3://bucket/prefix``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **(storage_options() if "://" in uri else {}))
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.protocol = protocols[0]
        self.is_local = "file" in protocols

    def path(self, experiment: str, config_key: str, replication: int | str) -> str:
        return f"{self.root}/{experiment}/{config_key}/{replication}.parquet"

    def url(self, experiment: str, config_key: str, replication: int | str) -> str:
        """The full URI of a replication file (shown in the UI)."""
        path = self.path(experiment, config_key, replication)
        return path if self.is_local else f"{self.protocol}://{path}"

    def write(self, row: Mapping[str, Any]) -> str:
        """Write one replication's row atomically; return its path."""
        return self.write_identified(row)[0]

    def write_identified(self, row: Mapping[str, Any]) -> tuple[str, FileIdentity | None]:
        """Write one replication's row atomically; return its path and, on a local disk, the
        identity of the file written (None in an object store), as ``file_identity`` reads it:
        taken from the open file before the rename, so it is this file's even if another
        writer replaces it a moment later (a rename keeps size, mtime and inode)."""
        return self.write_rows([row], str(row["replication"]))

    def write_rows(self, rows: Sequence[Mapping[str, Any]], name: str
                   ) -> tuple[str, FileIdentity | None]:
        """Write the rows of one partition (one replication, or a block's) atomically to the
        file ``name`` (its stem) of their configuration; as ``write_identified``."""
        data = encode_rows(rows)
        path = self.path(rows[0]["experiment"], rows[0]["config_key"], name)
        if self.is_local:
            directory = os.path.dirname(path)
            if directory not in _MADE:
                os.makedirs(directory, exist_ok=True)
                _MADE.add(directory)
            # A name of this process's own (a token drawn once per process tree, the pid and a
            # counter: no other writer, on this host or another sharing the disk, holds it),
            # created with the ordinary mode (the umask applies, as open() makes files): no
            # random name to draw and no chmod, a file at a time.
            tmp = os.path.join(directory,
                               f".tmp-{_TOKEN}-{os.getpid()}-{next(_TEMPORARY)}.parquet")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:  # the directory was removed since: make it again
                _MADE.discard(directory)
                os.makedirs(directory, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    identity = file_identity(os.fstat(fd))
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            return path, identity
        self.fs.pipe_file(path, data)
        return path, None

    def existing(self, experiment: str) -> set[tuple[str, int]]:
        """(config_key, replication) of every replication the files of ``experiment`` are for
        (a block file's every replication, though some may have failed: ``listing`` names files)."""
        if self.is_local:
            names = _local_listing(os.path.join(self.root, experiment))
        else:
            self.fs.invalidate_cache()
            names = (path.rsplit("/", 2)[-2:]
                     for path in self.fs.glob(f"{self.root}/{experiment}/*/*.parquet"))
        found: set[tuple[str, int]] = set()
        for config_key, name in names:
            span = parse_stem(name[: -len(".parquet")]) if name.endswith(".parquet") else None
            if span is not None:  # skips temporary files
                found.update((config_key, r) for r in range(span[0], span[1] + 1))
        return found

    def listing(self, experiment: str) -> pl.DataFrame:
        """The result files of ``experiment`` as a frame: config_key, file (the stem), first and
        last replication; sorted, without a Python object per file (a million files). On a local
        disk a configuration's directory is listed again only when its modification time
        changed (a file written, renamed in or removed changes it): a sweep looks at its results
        more than once (the staleness note, each round), and re-lists only what runs wrote."""
        if not self.is_local:
            self.fs.invalidate_cache()
            pairs = [path.rsplit("/", 2)[-2:]
                     for path in self.fs.glob(f"{self.root}/{experiment}/*/*.parquet")]
            return _parse_listing(pl.DataFrame(
                {"config_key": [p[0] for p in pairs], "name": [p[1] for p in pairs]},
                schema={"config_key": pl.String, "name": pl.String}))
        root = os.path.join(self.root, experiment)
        known = _LISTINGS.pop(root, {})
        seen: dict[str, tuple[int, pl.DataFrame]] = {}
        try:
            directories = [e for e in os.scandir(root)
                           if e.is_dir() and not e.name.startswith(".")]
        except FileNotFoundError:
            directories = []
        # A directory changed in the last seconds is listed again whatever its mtime says: a
        # file system with coarse timestamps (some network ones) could give a change made just
        # after the last listing the same mtime.
        settled = time.time_ns() - _SETTLED_NS
        changed: dict[str, tuple[int, list[str]]] = {}  # listed again: (mtime, names)
        for entry in directories:
            try:
                mtime = entry.stat().st_mtime_ns
                cached = known.get(entry.name)
                if cached is None or cached[0] != mtime or mtime > settled:
                    with os.scandir(entry.path) as files:
                        changed[entry.name] = (mtime, [f.name for f in files])
                    continue
            except FileNotFoundError:  # removed while listing
                continue
            seen[entry.name] = cached
        if changed:  # parsed in one go: a few polars calls in all, not a few per directory
            parsed = _parse_listing(pl.DataFrame(
                {"config_key": [key for key, (_, names) in changed.items() for _ in names],
                 "name": [name for _, names in changed.values() for name in names]},
                schema={"config_key": pl.String, "name": pl.String}))
            by_key = parsed.partition_by("config_key", as_dict=True, maintain_order=True)
            for key, (mtime, _) in changed.items():
                seen[key] = (mtime, by_key.get((key,), parsed.clear()))
        _LISTINGS[root] = seen
        while len(_LISTINGS) > _LISTINGS_KEPT:
            _LISTINGS.pop(next(iter(_LISTINGS)))
        frames = [frame for _, frame in seen.values() if frame.height]
        if not frames:
            return pl.DataFrame(schema=LISTING_SCHEMA)
        return pl.concat(frames).sort("config_key", "first")

    def unchanged_since(self, experiment: str, when: float, config_keys: Iterable[str]) -> bool:
        """Whether no result file of ``experiment`` was written, renamed or removed after
        ``when`` (a timestamp, seconds), judged by its configurations' directories' modification
        times (every write renames a file into one), each of ``config_keys`` having its
        directory; False when that cannot be told (an object store, a directory missing)."""
        if not self.is_local:
            return False
        root = os.path.join(self.root, experiment)
        limit = int(when * 1e9)
        try:
            found = {e.name: e.stat().st_mtime_ns for e in os.scandir(root)
                     if e.is_dir() and not e.name.startswith(".")}
        except FileNotFoundError:
            return False
        # A whole-second mtime may come from a file system with coarse timestamps, where a
        # change just after ``when`` can read as before it: such a directory needs a margin.
        return all(key in found for key in config_keys) and all(
            mtime < (limit - _SETTLED_NS if mtime % 1_000_000_000 == 0 else limit)
            for mtime in found.values())

    def read(self, experiment: str, config_key: str, replication: int | str
             ) -> pl.DataFrame | None:
        """One replication file's rows (``replication``: its number or stem); None when the
        file is gone. Raises CorruptResultFile when
        it is there but unreadable; an error reading the bytes (network, permissions) propagates:
        the file is not known to be bad."""
        path = self.path(experiment, config_key, replication)
        try:
            if self.is_local:
                with open(path, "rb") as handle:
                    data = handle.read()
            else:
                data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        return parse_replication(data, self.url(experiment, config_key, replication))

    def quarantine(self, experiment: str, config_key: str, replication: int | str) -> str | None:
        """Move a corrupt replication file aside to ``<name>.corrupt`` (replacing an older one
        of the same partition); return where it went, None if it was gone already."""
        path = self.path(experiment, config_key, replication)
        target = path + QUARANTINE_SUFFIX
        try:
            if self.is_local:
                os.replace(path, target)
            else:
                self.fs.mv(path, target)
        except FileNotFoundError:  # another reader moved it first, or a user deleted it
            return None
        return target if self.is_local else f"{self.protocol}://{target}"

    def files(self, experiment: str, keys: Iterable[tuple[str, int | str]]) -> list[str]:
        """Full URIs of the given replication files, for readers such as polars."""
        return [self.url(experiment, c, r) for c, r in keys]

    def publish(self, local_path: str | os.PathLike, name: str) -> str:
        """Copy a finished local file to ``<root>/<name>`` in the object store; return its URI.

        One object write: a single PUT, or a multipart upload that S3 only makes visible when it
        completes, so a reader gets the previous object or the new one, never a mix. Not for local
        stores (their files are already where readers look).
        """
        if self.is_local:
            raise ValueError(f"publish({name!r}): {self.uri} is a local directory, not an object store")
        path = f"{self.root}/{name}"
        self.fs.put_file(os.fspath(local_path), path)
        return f"{self.protocol}://{path}"
