"""What the summary has already read: the rows of an experiment's replication files, kept with
each file's identity, so a build or a sequential round reads only the files that are new or changed.

The manifest is one Parquet file per experiment, ``<results>/<experiment>/.simlab-manifest.parquet``
(beside the configuration directories, which the listing of result files skips: it is not a
directory). It holds every row read so far plus four columns naming the file it came from: its
stem (``7``, or ``0-9`` for a block of replications, storage.py), size, modification time (ns)
and inode. A replication file is written to a temporary name and
renamed over the old one, so a re-run, a repaired file or one written by another process always
gets a new inode: a row is reused only while its file is the very file it was read from. Rows of
files that are gone are dropped; files that fail to read are left to ``read`` (the summary moves
corrupt ones aside and counts them missing) and are not remembered.

The runs feed it too, so that the first summary of a sweep does not read back every file the runs
have just written: a run's step already holds the rows its workers wrote, with each file's identity
(``batch.Outcome``), and ``record_run`` leaves them as a fragment,
``<results>/<experiment>/.simlab-runs/<run_id>-<unique>.parquet`` (same columns as the manifest,
written to a temporary name and renamed, so a reader never sees half of one). A reader trusts a
fragment's row exactly as a manifest row: only while the file is the one it describes. One reader
at a time folds the fragments into the manifest (an exclusive ``flock`` on
``.simlab-manifest.lock``, never waited for: a reader that does not get it uses the manifest and
fragments as they are and writes nothing) and deletes exactly the fragments it read, after the new
manifest is in place; fragments written meanwhile stay for the next reader. Fragments are listed
before the result files, so every file a listed fragment describes is in that listing.

Only for results on a local disk: an object store's listing does not give a cheap identity of this
kind, so there every build reads every file, as before, and runs leave no fragments. A manifest or
fragment that cannot be read (written by another version, damaged) is ignored (the files are read
instead); one that cannot be written (read-only results) costs only the speed.
"""

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import polars as pl

from simlab_pipelines.storage import ResultStore, file_identity, rows_frame

log = logging.getLogger("simlab.manifest")

MANIFEST_NAME = ".simlab-manifest.parquet"
LOCK_NAME = ".simlab-manifest.lock"
RUNS_DIR = ".simlab-runs"  # hidden: the listing of result files skips it
# Bump when the rows' meaning changes (columns of the replication files): old manifests are ignored.
MANIFEST_VERSION = 3  # 2: rows name their file (``_file``): a block file holds several;
# 3: rows hold ``double_horizon`` (the steady-state check's run at twice the horizon)
# A temporary file this old was left by a killed writer (a live one renames it within moments).
STALE_TEMPORARY_SECONDS = 3600
_IDENTITY = ["_file_size", "_file_mtime_ns", "_file_inode"]
_KEYS = ["config_key", "replication"]  # a row
_FILE = ["config_key", "_file"]  # a file: its configuration's directory and stem

Key = tuple[str, str]  # a file: (config_key, stem)


class Recorded(Protocol):
    """What ``record_run`` needs of a run's outcome (``batch.Outcome``)."""

    path: str | None
    identity: tuple[int, int, int] | None

    @property
    def all_rows(self) -> Sequence[dict[str, Any]]: ...


def _stem(path: str) -> str:
    return os.path.basename(path)[: -len(".parquet")]


def manifest_path(root: str, experiment: str) -> str:
    return os.path.join(root, experiment, MANIFEST_NAME)


def runs_directory(root: str, experiment: str) -> str:
    """Where runs leave their fragments."""
    return os.path.join(root, experiment, RUNS_DIR)


def record_run(store: ResultStore | str, experiment: str, run_id: str,
               outcomes: Iterable[Recorded]) -> str | None:
    """Leave the rows a run wrote, with their files' identities, for the next summary to use
    instead of reading those files back; returns the fragment's path (None: nothing to record,
    results in an object store, or the fragment could not be written, which only costs speed)."""
    if isinstance(store, ResultStore):
        if not store.is_local:
            return None
        store = store.root
    recorded = [(row, _stem(o.path), o.identity) for o in outcomes
                if o.path is not None and o.identity is not None for row in o.all_rows]
    if not recorded:
        return None
    directory = runs_directory(store, experiment)
    # Unique even when a step is retried within the same run: no fragment replaces another.
    name = f"{re.sub(r'[^A-Za-z0-9_-]', '_', run_id)}-{uuid.uuid4().hex[:12]}.parquet"
    try:
        frame = rows_frame([row for row, _, _ in recorded]).with_columns(
            pl.Series("_file", [stem for _, stem, _ in recorded], dtype=pl.String),
            *(pl.Series(column, [i[n] for _, _, i in recorded], dtype=pl.Int64)
              for n, column in enumerate(_IDENTITY)))
        os.makedirs(directory, exist_ok=True)
        return _write(frame, directory, name, ".tmp-run-")
    except Exception as exc:  # a cache: never the run's failure
        log.warning(f"run fragment {os.path.join(directory, name)} not written ({exc}); the next "
                    "summary reads those result files instead")
        return None


def _write(frame: pl.DataFrame, directory: str, name: str, prefix: str) -> str:
    """``frame`` (with the manifest version) to ``directory/name``, atomically; raises OSError."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".parquet")
    try:
        with os.fdopen(fd, "wb") as handle:
            frame.with_columns(pl.lit(MANIFEST_VERSION).alias("_manifest_version")
                               ).write_parquet(handle)
        target = os.path.join(directory, name)
        os.replace(tmp, target)
        return target
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _identities(paths: Sequence[str]) -> list[tuple[int, int, int] | None]:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            out.append(file_identity(os.stat(path)))
        except FileNotFoundError:  # removed since it was listed
            out.append(None)
    return out


def _valid(frame: pl.DataFrame) -> pl.DataFrame | None:
    """A manifest or fragment's rows without the version column; None if of another version."""
    if "_manifest_version" not in frame.columns or frame.is_empty() or \
            frame["_manifest_version"].n_unique() != 1 or \
            frame["_manifest_version"][0] != MANIFEST_VERSION or \
            not set(_IDENTITY + _KEYS + _FILE) <= set(frame.columns):
        return None
    return frame.drop("_manifest_version").with_columns(
        pl.col("replication").cast(pl.Int64), *(pl.col(c).cast(pl.Int64) for c in _IDENTITY))


def _load(path: str, columns: Sequence[str] | None = None) -> pl.DataFrame | None:
    """The manifest's rows (only ``columns``, with the keys and identities, if given)."""
    try:
        if columns is not None:
            have = pl.read_parquet_schema(path)
            columns = [c for c in dict.fromkeys([*_KEYS, *_FILE, *_IDENTITY, *columns,
                                                 "_manifest_version"]) if c in have]
        frame = pl.read_parquet(path, columns=columns)
    except FileNotFoundError:
        return None
    except Exception as exc:  # damaged or foreign: rebuilt from the files
        log.warning(f"summary manifest {path} unreadable ({exc}); reading every result file")
        return None
    return _valid(frame)


def _fragment_paths(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return sorted(e.path for e in entries
                          if e.name.endswith(".parquet") and not e.name.startswith("."))
    except FileNotFoundError:  # no run has left one
        return []


def _load_fragments(paths: list[str], columns: Sequence[str] | None = None
                    ) -> list[pl.DataFrame]:
    """The usable fragments among ``paths`` (oldest name first is not implied: any order);
    only ``columns`` (with the keys and identities) if given."""
    if not paths:
        return []
    if columns is not None:
        columns = list(dict.fromkeys([*_KEYS, *_FILE, *_IDENTITY, *columns,
                                      "_manifest_version"]))
    try:  # one call for all: they are written by the same code
        frames = [pl.read_parquet(paths, parallel="none", columns=columns)]
    except (Exception, pl.exceptions.PanicException):  # vanished, damaged or of another shape
        frames = []
        for path in paths:
            try:
                frames.append(pl.read_parquet(path, columns=columns))
            except FileNotFoundError:
                continue
            except (Exception, pl.exceptions.PanicException) as exc:
                log.warning(f"run fragment {path} unreadable ({exc}); its result files are read "
                            "instead")
    valid = [_valid(frame) for frame in frames]
    return [frame for frame in valid if frame is not None]


@contextlib.contextmanager
def _merge_lock(directory: str) -> Iterator[bool]:
    """Whether this reader may write the manifest and remove fragments: it holds the lock. Never
    waits: a reader that does not get it (another is merging; read-only results) writes nothing."""
    try:  # read-only is enough for flock: another user's lock file serves as well
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True  # closing the descriptor releases the lock
    finally:
        os.close(fd)


def _remove_stale_temporaries(directories: Iterable[str]) -> None:
    """Temporary files of writers that were killed before their rename (called by the merger)."""
    limit = time.time() - STALE_TEMPORARY_SECONDS
    for directory in directories:
        with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith((".tmp-manifest-", ".tmp-run-")) and entry.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < limit:
                            os.unlink(entry.path)


def _save(path: str, frame: pl.DataFrame) -> bool:
    directory = os.path.dirname(path)
    try:
        _write(frame, directory, os.path.basename(path), ".tmp-manifest-")
    except OSError as exc:
        log.debug(f"summary manifest {path} not written: {exc}")
        return False
    return True


def _remembered(cached: pl.DataFrame | None, fragments: list[pl.DataFrame]) -> pl.DataFrame | None:
    """The manifest's rows, then the fragments' (later ones win for the same file)."""
    own = [cached] if cached is not None else []
    # Rows of another shape (a manifest of older files) do not go together: the newest that do.
    for parts in (own + fragments, fragments, own):
        if parts:
            with contextlib.suppress(pl.exceptions.PolarsError):
                return pl.concat(parts, how="diagonal_relaxed")
    return None


def _files_frame(keys: Sequence[Key], identities: Sequence[tuple[int, int, int] | None]
                 ) -> pl.DataFrame:
    """Files (config_key, stem) with their identities; files gone meanwhile left out."""
    return pl.DataFrame(
        {"config_key": [k[0] for k in keys], "_file": [k[1] for k in keys],
         **{column: [i[n] if i else None for i in identities]
            for n, column in enumerate(_IDENTITY)}},
        schema={"config_key": pl.String, "_file": pl.String,
                **dict.fromkeys(_IDENTITY, pl.Int64)},
    ).drop_nulls("_file_size")


def read_with_manifest(root: str, experiment: str, list_present: Callable[[], Sequence[Key]],
                       path_of: Callable[[Key], str],
                       read: Callable[[list[Key]], pl.DataFrame]) -> pl.DataFrame:
    """The rows of the files ``list_present()`` lists ((config_key, stem), sorted): from the
    manifest or a run's fragment where a file is the one they describe, else through
    ``read(files)`` (the files' rows, each with its ``_file`` stem; fewer if some are corrupt or
    gone); the manifest is then brought up to date and the fragments folded in are removed.
    Row order: as ``read``, the manifest and the fragments give. A replication found in two files
    (a block run again with another block size, a file kept from before) has a row from each."""
    directory = os.path.join(root, experiment)
    with _merge_lock(directory) as merger:
        # Before the files: a fragment is renamed in after its files, so they are listed below.
        fragment_paths = _fragment_paths(os.path.join(directory, RUNS_DIR))
        present = list_present()
        if not present:
            return pl.DataFrame()
        current = _files_frame(present, _identities([path_of(key) for key in present]))
        path = manifest_path(root, experiment)
        cached = _load(path)
        fragments = _load_fragments(fragment_paths)
        remembered = _remembered(cached, fragments)
        if remembered is not None:
            hits = remembered.join(current, on=_FILE + _IDENTITY, how="semi")
            if fragments:  # a file both in the manifest and a fragment (or two): once
                hits = hits.unique(subset=_KEYS + _FILE, keep="last", maintain_order=True)
        else:
            hits = pl.DataFrame()
        wanted = current.join(hits.select(_FILE).unique(), on=_FILE, how="anti") if hits.height \
            else current
        fresh_keys = list(zip(wanted["config_key"], wanted["_file"], strict=True))
        fresh = read(fresh_keys) if fresh_keys else pl.DataFrame()
        if fresh.height:
            # The identity taken before reading: if the file changed meanwhile, the next read
            # sees another identity and reads it again (never the other way round).
            fresh = fresh.join(wanted, on=_FILE, how="inner")
        parts = [f for f in (hits, fresh) if f.height]
        if not parts:
            return pl.DataFrame()
        try:
            rows = pl.concat(parts, how="diagonal_relaxed")
        except pl.exceptions.PolarsError:  # remembered rows of another shape (older files): re-read
            rows = read(list(present))
            rows = rows.join(current, on=_FILE, how="inner") if rows.height else rows
            if not rows.height:
                return rows
        if merger and (fresh.height or cached is None or cached.height != hits.height
                       or fragment_paths):
            # Fragments go only once the manifest holds what they held; those written since
            # they were listed are not among them.
            if _save(path, rows):
                for fragment in fragment_paths:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(fragment)
            _remove_stale_temporaries([directory, os.path.join(directory, RUNS_DIR)])
        return rows.drop([*_IDENTITY, "_file"])


def _remember(directory: str, rows: pl.DataFrame, files: pl.DataFrame) -> None:
    """Leave ``rows`` (read from ``files``, with the identities they had before the read) as a
    fragment, as a run does: a cache, so a failure only costs speed."""
    try:
        frame = rows.join(files, on=_FILE, how="inner")
        if frame.height:
            os.makedirs(os.path.join(directory, RUNS_DIR), exist_ok=True)
            _write(frame, os.path.join(directory, RUNS_DIR),
                   f"read-{uuid.uuid4().hex[:12]}.parquet", ".tmp-run-")
    except Exception as exc:
        log.debug(f"rows read for planning not remembered ({exc})")


def landed(root: str, experiment: str, listed: pl.DataFrame, columns: Sequence[str],
           path_of: Callable[[Key], str],
           read: Callable[[list[Key]], pl.DataFrame]) -> pl.DataFrame:
    """``columns`` of the rows of the files ``listed`` (a frame with config_key and file, the
    stem: ``ResultStore.listing``), for planning: what the manifest and the runs' fragments say
    of a listed file is taken as it is, without a ``stat`` of every file (a million of them take
    seconds); only a file named by rows of two writes (e.g. a re-run with new inputs) is looked
    at, and files they do not know are read (``read(files)``: rows with ``_file``). Every
    result is written by a run, which leaves a fragment, so what they hold is what landed; a
    file changed behind simlab's back is caught by the next summary, which checks every file's
    identity (``read_with_manifest``). The rows of files it had to read are left as a fragment
    (with those files' identities), so the next look reads them no more; nothing is removed. As
    there, a replication found in two files has a row from each.
    """
    directory = os.path.join(root, experiment)
    files = listed.select(pl.col("config_key").cast(pl.String),
                          pl.col("file").cast(pl.String).alias("_file"))
    known = _remembered(_load(manifest_path(root, experiment), columns), _load_fragments(
        _fragment_paths(os.path.join(directory, RUNS_DIR)), columns))
    if known is not None and known.height:
        known = known.join(files, on=_FILE, how="semi")  # files since gone are left out
        twice = known.unique(subset=_FILE + _IDENTITY).group_by(_FILE).len().filter(
            pl.col("len") > 1).select(_FILE)
        if twice.height:  # rows of two writes name the file: the file decides
            keys = list(zip(twice["config_key"], twice["_file"], strict=True))
            current = _files_frame(keys, _identities([path_of(key) for key in keys]))
            chosen = known.join(current, on=_FILE + _IDENTITY, how="semi")
            known = pl.concat([known.join(twice, on=_FILE, how="anti"), chosen],
                              how="diagonal_relaxed")
        unknown = files.join(known.select(_FILE).unique(), on=_FILE, how="anti")
    else:
        known, unknown = None, files
    parts = [known] if known is not None and known.height else []
    if unknown.height:
        keys = list(zip(unknown["config_key"], unknown["_file"], strict=True))
        # Identities before the read, as read_with_manifest takes them: a file changed meanwhile
        # is read again next time, never trusted with rows it no longer holds.
        identities = _files_frame(keys, _identities([path_of(key) for key in keys]))
        fresh = read(keys)
        if fresh.height:
            parts.append(fresh)
            _remember(directory, fresh, identities)
    if not parts:
        return pl.DataFrame()
    wanted = list(dict.fromkeys([*_KEYS, *columns]))
    return pl.concat([part.select([c for c in wanted if c in part.columns]) for part in parts],
                     how="diagonal_relaxed")
