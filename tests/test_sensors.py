"""The experiment-file and sequential sensors, evaluated with build_sensor_context on a test
instance: the spec first, exactly the missing partitions, dynamic partitions for sequential rounds,
rejected files as failed checks once per change."""

import json

import dagster as dg

from simlab_pipelines.definitions import load_definitions
from simlab_pipelines.experiments import load_experiment


def _evaluate(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("experiment_files")
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def _covered(defs, request, name="tiny_mmck") -> list[str]:
    """The partitions a run request's range covers (on the grid: configurations x replications)."""
    definition = defs.resolve_assets_def(dg.AssetKey([name, "replications"])).partitions_def
    return [str(k) for k in definition.get_partition_keys_in_range(dg.PartitionKeyRange(
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"]))]


def _materialize_spec(defs, instance, name="tiny_mmck"):
    assert defs.resolve_job_def(f"{name}_spec").execute_in_process(instance=instance).success


def test_new_file_requests_exactly_the_missing_partitions(lab):
    experiments = lab / "experiments"
    spec = load_experiment(experiments / "tiny_mmck.yaml")
    defs = load_definitions(experiments)
    with dg.instance_for_test() as instance:
        # two partitions are already materialised (with their files): the sensor must not ask for
        # them again; a third is materialised but its file is gone: it is asked for again
        job = defs.resolve_job_def("tiny_mmck_replications")
        for key in ("servers-1|0", "servers-1|1", "servers-2|5"):
            assert job.execute_in_process(instance=instance, partition_key=key).success
        lost = lab / "data" / "results" / spec.name / "servers-2" / "5.parquet"
        lost.unlink()
        # the spec (lineage root) is not materialised: it comes first, the partitions next tick
        first = _evaluate(defs, instance)
        assert [r.job_name for r in first.run_requests] == ["tiny_mmck_spec"]
        assert json.loads(first.cursor) == {}
        _materialize_spec(defs, instance)
        result = _evaluate(defs, instance, first.cursor)
        requested = []
        for request in result.run_requests:
            requested += _covered(defs, request)
            assert request.job_name == "tiny_mmck_replications"
        expected = {f"servers-{c}|{r}" for c in (1, 2) for r in range(6)} - {"servers-1|0",
                                                                                "servers-1|1"}
        assert sorted(requested) == sorted(expected)
        # the same file on the next tick: nothing new
        again = _evaluate(defs, instance, result.cursor)
        assert not again.run_requests
        assert json.loads(result.cursor) == {spec.name: spec.spec_hash()}


def test_changed_file_asks_for_a_reload_and_bad_files_are_reported(lab):
    experiments = lab / "experiments"
    defs = load_definitions(experiments)
    path = experiments / "tiny_mmck.yaml"
    path.write_text(path.read_text().replace("replications: 6", "replications: 8"))
    (experiments / "broken.yaml").write_text("name: broken\nmodel: nosuchmodel\n")
    with dg.instance_for_test() as instance:
        result = _evaluate(defs, instance)
        assert not result.run_requests
        assert "reload the code location" in result.skip_reason.skip_message
        assert "broken.yaml" in result.skip_reason.skip_message
        # after the reload, the 16 partitions of the new definition are requested
        reloaded = load_definitions(experiments)
        _materialize_spec(reloaded, instance)
        result = _evaluate(reloaded, instance, result.cursor)
        covered = [key for r in result.run_requests for key in _covered(reloaded, r)]
        assert len(covered) == len(set(covered)) == 16


def test_one_bad_file_does_not_take_the_others_down(lab):
    experiments = lab / "experiments"
    (experiments / "broken.yaml").write_text("name: broken\nmodel: mmck\nseed: 1\n"
                                            "replications: 3\nbogus: 1\n")
    defs = load_definitions(experiments)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"tiny_mmck/spec", "tiny_mmck/replications", "tiny_mmck/summary"} <= keys
    assert not any(k.startswith("broken/") for k in keys)
    assert "rejected_experiments/broken" in keys
    assert "broken.yaml" in defs.metadata["rejected_experiment_files"].value
    assert "bogus" in defs.metadata["rejected_experiment_files"].value


def test_bad_files_whose_names_clean_up_alike_do_not_collide(lab):
    experiments = lab / "experiments"
    for name in ("broken.yaml", "broken.yml", "a-b.yaml", "a_b.yaml"):
        (experiments / name).write_text("name: x\nmodel: nosuchmodel\n")
    defs = load_definitions(experiments)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
            if k.path[0] == "rejected_experiments"}
    assert len(keys) == 4
    assert {"rejected_experiments/broken", "rejected_experiments/broken_yml"} <= keys
    assert "tiny_mmck/replications" in {
        k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_a_rejected_file_fails_its_check_once_per_change(lab):
    experiments = lab / "experiments"
    broken = experiments / "broken.yaml"
    broken.write_text("name: broken\nmodel: nosuchmodel\n")
    defs = load_definitions(experiments)
    key = dg.AssetKey(["rejected_experiments", "broken"])
    check = defs.resolve_asset_graph().get_check_keys_for_assets({key})
    assert [c.name for c in check] == ["valid_experiment_file"]
    with dg.instance_for_test() as instance:
        first = _evaluate(defs, instance)
        (evaluation,) = first.asset_events
        assert (evaluation.asset_key, evaluation.check_name) == (key, "valid_experiment_file")
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert {"field": "seed", "reason": "required field is missing"} in [
            r.data for r in evaluation.metadata["errors"].records]
        # the same file on the next tick: not reported (nor logged) again
        again = _evaluate(defs, instance, first.cursor)
        assert not again.asset_events
        # a change of the file is a new rejection
        broken.write_text("name: broken\nmodel: othermodel\n")
        changed = _evaluate(defs, instance, again.cursor)
        assert [e.check_name for e in changed.asset_events] == ["valid_experiment_file"]
