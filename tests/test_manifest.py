"""The summary's manifest: a build or a round reads only the result files that are new or changed,
and never serves a row of a file that changed, vanished or went bad."""

import os
from datetime import UTC, datetime

import pytest

from simlab_pipelines import summary
from simlab_pipelines.manifest import MANIFEST_NAME
from simlab_pipelines.storage import replication_row


def _write(spec, store, config, replication: int, value: float) -> None:
    result = {"model": spec.model, "params": config.params, "replication": replication,
              "seed": {"entropy": spec.seed, "spawn_key": [replication]},
              "horizon": spec.horizon, "warmup": spec.warmup, "engine_version": "test",
              "wall_seconds": 0.01, "events": 10, "metrics": {"mean_wait": value}}
    store.write(replication_row(
        experiment=spec.name, config_key=config.key, partition_key=f"{config.key}|{replication}",
        result=result, code_version="test", run_id="run", trace_id="0" * 32, span_id="0" * 16,
        started_at=datetime.now(UTC), inputs_hash=spec.inputs_hash(config)))


@pytest.fixture
def counted(tiny, monkeypatch):
    """The tiny experiment with 2 x 3 result files; ``reads`` lists the keys read from files."""
    spec, storage = tiny
    store = storage.store()
    configs = spec.configurations_list()
    for config in configs:
        for r in range(3):
            _write(spec, store, config, r, float(r))
    reads: list[list] = []
    original = summary._read_files

    def read_files(experiment, keys, store):
        reads.append(list(keys))
        return original(experiment, keys, store)

    monkeypatch.setattr(summary, "_read_files", read_files)
    return spec, store, configs, reads


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
    assert sorted(reads[1]) == [(configs[0].key, 1), (configs[1].key, 3)]
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
    assert reads[-1] == [(configs[0].key, 2)]  # its new identity made it be read again
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
