"""The summary's manifest: a build or a round reads only the result files that are new or changed,
and never serves a row of a file that changed, vanished or went bad. The runs' fragments: the rows
a run wrote serve the next read without reading those files back, under the same rule, and a
fragment is never lost to a concurrent merge."""

import fcntl
import os
from datetime import UTC, datetime

import dagster as dg
import pytest
from test_s3_results import PREFIX, s3  # noqa: F401  (the moto S3 fixture)

from simlab_pipelines import manifest, summary
from simlab_pipelines.assets import replications_key
from simlab_pipelines.batch import Outcome
from simlab_pipelines.manifest import MANIFEST_NAME, record_run, runs_directory
from simlab_pipelines.partitions import range_tags
from simlab_pipelines.storage import ResultStore, replication_row

BUCKET = "simlab-test-manifest"


def _write(spec, store, config, replication: int, value: float) -> Outcome:
    """Write one result file; the outcome a pool worker would report for it."""
    result = {"model": spec.model, "params": config.params, "replication": replication,
              "seed": {"entropy": spec.seed, "spawn_key": [replication]},
              "horizon": spec.horizon, "warmup": spec.warmup, "engine_version": "test",
              "wall_seconds": 0.01, "events": 10, "metrics": {"mean_wait": value}}
    row = replication_row(
        experiment=spec.name, config_key=config.key, partition_key=f"{config.key}|{replication}",
        result=result, code_version="test", run_id="run", trace_id="0" * 32, span_id="0" * 16,
        started_at=datetime.now(UTC), inputs_hash=spec.inputs_hash(config))
    path, identity = store.write_identified(row)
    return Outcome(None, row, path, identity=identity)


@pytest.fixture
def reads(monkeypatch):
    """The keys the summary reads from result files, one list per read."""
    calls: list[list] = []
    original = summary._read_files

    def read_files(experiment, keys, store):
        calls.append(list(keys))
        return original(experiment, keys, store)

    monkeypatch.setattr(summary, "_read_files", read_files)
    return calls


@pytest.fixture
def counted(tiny, reads):
    """The tiny experiment with 2 x 3 result files; ``reads`` lists the keys read from files."""
    spec, storage = tiny
    store = storage.store()
    configs = spec.configurations_list()
    for config in configs:
        for r in range(3):
            _write(spec, store, config, r, float(r))
    return spec, store, configs, reads


@pytest.fixture
def recorded(tiny, reads):
    """The tiny experiment with 2 x 3 result files and the fragment of the run that wrote them."""
    spec, storage = tiny
    store = storage.store()
    configs = spec.configurations_list()
    outcomes = [_write(spec, store, config, r, float(r)) for config in configs for r in range(3)]
    fragment = record_run(store, spec.name, "run-1", outcomes)
    assert fragment is not None and os.path.exists(fragment)
    return spec, store, configs, reads, fragment


def _fragments(store, spec) -> list[str]:
    directory = runs_directory(store.root, spec.name)
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _values(frame) -> dict[tuple[str, int], float]:
    return {(k, r): m["mean_wait"] for k, r, m in
            frame.select("config_key", "replication", "metrics").iter_rows()}


def test_a_second_read_reads_no_file_and_gives_the_same_rows(counted):
    spec, store, _, reads = counted
    first = summary.read_all_replications(spec, store)
    assert len(reads[0]) == 6
    assert os.path.exists(os.path.join(store.root, spec.name, MANIFEST_NAME))
    second = summary.read_all_replications(spec, store)
    assert len(reads) == 1  # nothing read from the files
    assert second.equals(first)
    assert set(first.columns) == set(second.columns) and "_file_size" not in first.columns


def test_new_changed_and_removed_files_are_picked_up(counted):
    spec, store, configs, reads = counted
    summary.read_all_replications(spec, store)
    _write(spec, store, configs[0], 1, 41.0)   # changed (same size: a new file all the same)
    _write(spec, store, configs[1], 3, 3.0)    # new
    os.unlink(store.path(spec.name, configs[1].key, 0))  # removed
    frame = summary.read_all_replications(spec, store)
    assert sorted(reads[1]) == [(configs[0].key, "1"), (configs[1].key, "3")]  # (key, stem)
    values = _values(frame)
    assert values[(configs[0].key, 1)] == 41.0
    assert values[(configs[1].key, 3)] == 3.0
    assert (configs[1].key, 0) not in values
    assert len(values) == 6
    # and the manifest now holds exactly that: the next read reads nothing
    assert _values(summary.read_all_replications(spec, store)) == values
    assert len(reads) == 2


def test_a_file_that_went_bad_is_missing_not_served_from_the_manifest(counted):
    spec, store, configs, reads = counted
    summary.read_all_replications(spec, store)
    path = store.path(spec.name, configs[0].key, 2)
    with open(path + ".tmp", "wb") as handle:
        handle.write(b"not parquet at all")
    os.replace(path + ".tmp", path)
    frame = summary.read_all_replications(spec, store)
    assert reads[-1] == [(configs[0].key, "2")]  # its new identity made it be read again
    assert (configs[0].key, 2) not in _values(frame)
    assert len(_values(frame)) == 5


def test_a_damaged_manifest_is_rebuilt_from_the_files(counted):
    spec, store, _, reads = counted
    first = summary.read_all_replications(spec, store)
    with open(os.path.join(store.root, spec.name, MANIFEST_NAME), "wb") as handle:
        handle.write(b"garbage")
    again = summary.read_all_replications(spec, store)
    assert len(reads[-1]) == 6 and again.equals(first)
    assert summary.read_all_replications(spec, store).equals(first)
    assert len(reads) == 2


def test_a_runs_rows_serve_the_next_read_without_reading_its_files(tiny, materialize, reads):
    spec, storage = tiny
    storage = storage.model_copy(update={"workers": 2})  # the pool: identities cross processes
    store = storage.store()
    with dg.instance_for_test() as instance:
        for config in spec.configurations_list():
            assert materialize(spec, storage, instance, [replications_key(spec.name)],
                               tags=range_tags(config.key, 0, spec.replications - 1)).success
    assert len(_fragments(store, spec)) == 2  # one per run
    from_runs = summary.read_all_replications(spec, store)
    assert reads == [] and from_runs.height == 2 * spec.replications
    assert _fragments(store, spec) == []  # folded into the manifest
    assert summary.read_all_replications(spec, store).equals(from_runs) and reads == []
    os.unlink(os.path.join(store.root, spec.name, MANIFEST_NAME))
    from_files = summary.read_all_replications(spec, store)
    assert len(reads) == 1 and len(reads[0]) == 2 * spec.replications
    assert from_runs.equals(from_files)  # the very rows, types and order of the files


def test_a_fragment_row_is_trusted_only_while_its_file_is_unchanged(recorded):
    spec, store, configs, reads, fragment = recorded
    _write(spec, store, configs[0], 1, 41.0)  # replaced after the run (same size, new file)
    os.unlink(store.path(spec.name, configs[1].key, 2))  # removed
    values = _values(summary.read_all_replications(spec, store))
    assert reads == [[(configs[0].key, "1")]]
    assert values[(configs[0].key, 1)] == 41.0
    assert (configs[1].key, 2) not in values and len(values) == 5
    assert values[(configs[1].key, 1)] == 1.0  # from the fragment
    assert not os.path.exists(fragment)
    assert _values(summary.read_all_replications(spec, store)) == values and len(reads) == 1


@pytest.mark.parametrize("during", ["listing the files", "saving the manifest"])
def test_a_fragment_written_during_a_merge_is_kept_for_the_next(recorded, monkeypatch, during):
    spec, store, configs, reads, fragment = recorded
    late: list[str] = []

    def another_run() -> None:
        if not late:
            late.append(record_run(store, spec.name, "run-2",
                                   [_write(spec, store, configs[0], 4, 4.0)]))

    if during == "listing the files":
        files = store.listing

        def listing(experiment):
            another_run()
            return files(experiment)

        monkeypatch.setattr(store, "listing", listing)
    else:
        save = manifest._save

        def saving(path, frame):
            another_run()
            return save(path, frame)

        monkeypatch.setattr(manifest, "_save", saving)
    summary.read_all_replications(spec, store)
    assert not os.path.exists(fragment)
    assert os.path.exists(late[0])  # not listed when the merge began: left alone
    reads.clear()
    values = _values(summary.read_all_replications(spec, store))
    assert reads == []  # the late run's file came from its fragment
    assert values[(configs[0].key, 4)] == 4.0 and len(values) == 7
    assert _fragments(store, spec) == []


def test_a_reader_without_the_merge_lock_uses_fragments_but_writes_nothing(recorded):
    spec, store, _, reads, fragment = recorded
    lock = os.open(os.path.join(store.root, spec.name, manifest.LOCK_NAME),
                   os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another reader is merging
        first = summary.read_all_replications(spec, store)
        assert reads == [] and first.height == 6
        assert os.path.exists(fragment)
        assert not os.path.exists(os.path.join(store.root, spec.name, MANIFEST_NAME))
    finally:
        os.close(lock)
    assert summary.read_all_replications(spec, store).equals(first)
    assert not os.path.exists(fragment) and reads == []


def test_a_damaged_fragment_is_skipped_and_a_half_written_one_never_read(counted):
    spec, store, _, reads = counted
    directory = runs_directory(store.root, spec.name)
    os.makedirs(directory)
    for name in ("run-x-1.parquet", ".tmp-run-abc.parquet"):
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(b"PAR1 cut short")
    first = summary.read_all_replications(spec, store)
    assert len(reads[0]) == 6 and first.height == 6  # every file read instead
    assert _fragments(store, spec) == [".tmp-run-abc.parquet"]  # a writer's, still in progress


def test_results_in_s3_leave_no_fragment_and_are_read_every_time(tiny, s3, reads):  # noqa: F811
    spec, _ = tiny
    # A bucket of its own: moto keeps objects for the whole process, and test_s3_results lists
    # every object of its bucket.
    s3.create_bucket(Bucket=BUCKET)
    store = ResultStore(f"s3://{BUCKET}/{PREFIX}")
    config = spec.configurations_list()[0]
    outcomes = [_write(spec, store, config, r, float(r)) for r in range(2)]
    assert [o.identity for o in outcomes] == [None, None]
    assert record_run(store, spec.name, "run-1", outcomes) is None
    for _ in range(2):
        assert summary.read_all_replications(spec, store).height == 2
    assert [len(keys) for keys in reads] == [2, 2]
    names = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert names == {f"{PREFIX}/{spec.name}/{config.key}/{r}.parquet" for r in range(2)}


def test_planning_trusts_the_runs_rows_without_a_stat_and_reads_only_what_they_lack(recorded):
    """manifest.landed (what a sweep plans from): the fragment's rows stand for their files, a
    file two writes disagree about is looked at, and a file nobody recorded is read once."""
    spec, store, configs, reads, _ = recorded
    listing = store.listing(spec.name)

    def landed():
        return summary.landed_rows(spec, store, ["inputs_hash", "metrics"])

    assert landed().height == 6 and reads == []  # from the fragment alone
    # A second run rewrote one file with another value: the file decides between the two rows.
    record_run(store, spec.name, "run-2", [_write(spec, store, configs[0], 1, 41.0)])
    values = _values(landed())
    assert values[(configs[0].key, 1)] == 41.0 and reads == []
    # A file written without a run's rows (by hand): read once, then remembered.
    _write(spec, store, configs[1], 3, 3.0)
    assert _values(landed())[(configs[1].key, 3)] == 3.0
    assert reads == [[(configs[1].key, "3")]]
    assert _values(landed())[(configs[1].key, 3)] == 3.0 and len(reads) == 1
    assert listing.height == 6 and store.listing(spec.name).height == 7
