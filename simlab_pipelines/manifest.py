"""What the summary has already read: the rows of an experiment's replication files, kept with
each file's identity, so a build or a sequential round reads only the files that are new or changed.

The manifest is one Parquet file per experiment, ``<results>/<experiment>/.simlab-manifest.parquet``
(beside the configuration directories, which the listing of result files skips: it is not a
directory). It holds every row read so far plus three columns naming the file it came from:
its size, modification time (ns) and inode. A replication file is written to a temporary name and
renamed over the old one, so a re-run, a repaired file or one written by another process always
gets a new inode: a row is reused only while its file is the very file it was read from. Rows of
files that are gone are dropped; files that fail to read are left to ``read`` (the summary moves
corrupt ones aside and counts them missing) and are not remembered.

Only for results on a local disk: an object store's listing does not give a cheap identity of this
kind, so there every build reads every file, as before. A manifest that cannot be read (written by
another version, damaged) is ignored and rebuilt; one that cannot be written (read-only results)
costs only the speed.
"""

import logging
import os
import tempfile
from collections.abc import Callable, Sequence

import polars as pl

log = logging.getLogger("simlab.manifest")

MANIFEST_NAME = ".simlab-manifest.parquet"
# Bump when the rows' meaning changes (columns of the replication files): old manifests are ignored.
MANIFEST_VERSION = 1
_IDENTITY = ["_file_size", "_file_mtime_ns", "_file_inode"]
_KEYS = ["config_key", "replication"]

Key = tuple[str, int]


def manifest_path(root: str, experiment: str) -> str:
    return os.path.join(root, experiment, MANIFEST_NAME)


def _identities(paths: Sequence[str]) -> list[tuple[int, int, int] | None]:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:  # removed since it was listed
            out.append(None)
            continue
        out.append((st.st_size, st.st_mtime_ns, st.st_ino))
    return out


def _load(path: str) -> pl.DataFrame | None:
    try:
        frame = pl.read_parquet(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # damaged or foreign: rebuilt from the files
        log.warning(f"summary manifest {path} unreadable ({exc}); reading every result file")
        return None
    if "_manifest_version" not in frame.columns or frame.is_empty() or \
            frame["_manifest_version"][0] != MANIFEST_VERSION or \
            not set(_IDENTITY + _KEYS) <= set(frame.columns):
        return None
    return frame.drop("_manifest_version")


def _save(path: str, frame: pl.DataFrame) -> None:
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-manifest-", suffix=".parquet")
    except OSError as exc:
        log.debug(f"summary manifest not written in {directory}: {exc}")
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            frame.with_columns(pl.lit(MANIFEST_VERSION).alias("_manifest_version")
                               ).write_parquet(handle)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug(f"summary manifest {path} not written: {exc}")
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_with_manifest(root: str, experiment: str, present: Sequence[Key],
                       path_of: Callable[[Key], str],
                       read: Callable[[list[Key]], pl.DataFrame]) -> pl.DataFrame:
    """The rows of the files ``present`` (sorted keys): from the manifest where a file is the one
    it was read from, else through ``read(keys)`` (the files' rows; fewer if some are corrupt or
    gone); the manifest is then brought up to date. Row order: as ``read`` and the manifest give."""
    identities = _identities([path_of(key) for key in present])
    current = pl.DataFrame(
        {"config_key": [k[0] for k in present], "replication": [k[1] for k in present],
         "_file_size": [i[0] if i else None for i in identities],
         "_file_mtime_ns": [i[1] if i else None for i in identities],
         "_file_inode": [i[2] if i else None for i in identities]},
        schema={"config_key": pl.String, "replication": pl.Int64, "_file_size": pl.Int64,
                "_file_mtime_ns": pl.Int64, "_file_inode": pl.Int64},
    ).drop_nulls("_file_size")
    path = manifest_path(root, experiment)
    cached = _load(path)
    if cached is not None:
        cached = cached.with_columns(pl.col("replication").cast(pl.Int64),
                                     *(pl.col(c).cast(pl.Int64) for c in _IDENTITY))
        hits = cached.join(current, on=_KEYS + _IDENTITY, how="semi")
    else:
        hits = pl.DataFrame()
    wanted = current.join(hits.select(_KEYS), on=_KEYS, how="anti") if hits.height else current
    fresh_keys = list(zip(wanted["config_key"], wanted["replication"], strict=True))
    fresh = read(fresh_keys) if fresh_keys else pl.DataFrame()
    if fresh.height:
        # The identity taken before reading: if the file changed meanwhile, the next read sees
        # another identity and reads it again (never the other way round).
        fresh = fresh.join(wanted, on=_KEYS, how="inner")
    parts = [f for f in (hits, fresh) if f.height]
    if not parts:
        return pl.DataFrame()
    try:
        rows = pl.concat(parts, how="diagonal_relaxed")
    except pl.exceptions.PolarsError:  # remembered rows of another shape (older files): re-read
        rows = read(list(present))
        rows = rows.join(current, on=_KEYS, how="inner") if rows.height else rows
        if not rows.height:
            return rows
    if fresh.height or cached is None or cached.height != hits.height:
        _save(path, rows)
    return rows.drop(_IDENTITY)
