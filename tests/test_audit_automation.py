"""The summary refreshes itself when replications land: its automation condition, evaluated tick
by tick with dg.evaluate_automation_conditions on a test instance."""

import dagster as dg

from simlab_pipelines import assets
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.resources import SimlabStorage


def test_summary_is_requested_once_after_replications_land(lab):
    spec = load_experiment(lab / "experiments" / "tiny_mmck.yaml")
    storage = SimlabStorage(results_uri=str(lab / "data" / "results"),
                            duckdb_path=str(lab / "data" / "simlab.duckdb"), workers=1)
    experiment = assets.experiment_assets(spec)
    defs = dg.Definitions(assets=experiment, resources={"simlab": storage})
    summary = assets.summary_key(spec.name)

    def requested(result) -> set[dg.AssetKey]:
        return {r.key for r in result.results if r.true_subset.size > 0}

    with dg.instance_for_test() as instance:
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert summary not in requested(tick)  # nothing landed yet

        assert dg.materialize(experiment, instance=instance, resources={"simlab": storage},
                              selection=[assets.replications_key(spec.name)],
                              partition_key="servers-1|0").success
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert summary in requested(tick)

        # the summary is built; the next tick has nothing new to react to
        assert dg.materialize(experiment, instance=instance, resources={"simlab": storage},
                              selection=[summary]).success
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert summary not in requested(tick)
