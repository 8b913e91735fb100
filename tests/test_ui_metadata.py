"""What the UI shows of an experiment: typed tables with rounded numbers, the spec's
configurations, results beyond the plan reported (not used), the traceparent tag hidden."""

import dagster as dg
from dagster._core.storage.tags import TagType, get_tag_type

from simlab_pipelines import metadata as ui
from simlab_pipelines.assets import TRACEPARENT_TAG, replications_key, spec_key, summary_key
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.partitions import range_tags


def test_tables_are_typed_and_rounded():
    value = ui.records_table([{"config_key": "servers-1", "n": 6, "mean": 1.23456789,
                               "ok": True, "nan": float("nan")}])
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("config_key", "string"), ("n", "int"), ("mean", "float"), ("ok", "bool"),
        ("nan", "float")]
    assert value.records[0].data == {"config_key": "servers-1", "n": 6, "mean": 1.235,
                                     "ok": True, "nan": None}
    assert ui.rounded(123456.789) == 123500.0 and ui.rounded(0.000123456, 3) == 0.000123
    # the UI hides the traceparent tag (Dagster's hidden prefix) from the runs list
    assert get_tag_type(TRACEPARENT_TAG) == TagType.HIDDEN


def test_results_beyond_the_plan_are_reported_not_used(tiny, materialize, lab):
    spec, storage = tiny
    text = (lab / "experiments" / "tiny_mmck.yaml").read_text()
    (lab / "fewer").mkdir()
    (lab / "fewer" / "tiny_mmck.yaml").write_text(text.replace("replications: 6",
                                                              "replications: 5"))
    fewer = load_experiment(lab / "fewer" / "tiny_mmck.yaml")
    with dg.instance_for_test() as instance:
        assert materialize(spec, storage, instance, [spec_key(spec.name)]).success
        configurations = instance.get_latest_materialization_event(
            spec_key(spec.name)).asset_materialization.metadata["configurations"]
        assert [r.data for r in configurations.records] == [
            {"config_key": "servers-1", "baseline": True, "servers": 1},
            {"config_key": "servers-2", "baseline": False, "servers": 2}]
        for config in spec.configurations_list():
            assert materialize(spec, storage, instance, [replications_key(spec.name)],
                               tags=range_tags(config.key, 0, spec.replications - 1)).success
        # the file now wants 5 replications: the two results of replication 5 are beyond it
        assert fewer.simulation_hash() == spec.simulation_hash()
        result = materialize(fewer, storage, instance, [summary_key(spec.name)])
        assert result.success
        metadata = instance.get_latest_materialization_event(
            summary_key(spec.name)).asset_materialization.metadata
    assert next(iter(metadata)) == "answer"  # the UI lists metadata in this order
    assert metadata["beyond_plan"].value == 2 and metadata["missing"].value == 0
    assert metadata["replications"].value == 10  # the analysis used the plan's 2 x 5
    assert metadata["beyond_plan_keys"].value == ["servers-1|5", "servers-2|5"]
    assert "servers-1|5" in metadata["notes"].value
    assert metadata["answer"].value.endswith(
        "(Not used: 2 replication(s) beyond the plan, see notes.)")
    assert {r.data["config_key"]: r.data["n"] for r in metadata["summary"].records} == {
        "servers-1": 5, "servers-2": 5}
