"""A configuration whose every simulation failed is named in the answer, the HTML report and the
summary's metadata in the UI, which say that the answer is about the rest (issue 21, item 8).

As it happens in life: a model that raises for one configuration (here mmck with 2 servers, in
this process: one worker), the replication runs of both configurations (one fails), then the
summary; before, the report showed a clean one-configuration experiment.
"""

import dataclasses

import dagster as dg
import duckdb

import engine
from simlab_pipelines.assets import replications_key, summary_key
from simlab_pipelines.partitions import range_tags
from simlab_pipelines.report import write_experiment_report

GONE = ("No results for servers 1 → 2 (2 servers), all 6 replications (failed or not run): "
        "this answer is about the other configurations.")


def test_a_configuration_that_failed_everywhere_is_named_everywhere(tiny, materialize,
                                                                    monkeypatch):
    spec, storage = tiny
    model = engine.MODELS["mmck"]

    def run(params, streams, warmup, horizon, series_interval=None):
        if params["servers"] == 2:
            raise RuntimeError("planted failure: two servers")
        return model.run(params, streams, warmup, horizon, series_interval)

    monkeypatch.setitem(engine.MODELS, "mmck", dataclasses.replace(model, run=run))
    with dg.instance_for_test() as instance:
        for config in spec.configurations_list():
            materialize(spec, storage, instance, [replications_key(spec.name)],
                        tags=range_tags(config.key, 0, spec.replications - 1))
        result = materialize(spec, storage, instance, [summary_key(spec.name)])
        assert result.success
        event = instance.get_latest_materialization_event(summary_key(spec.name))
        metadata = event.asset_materialization.metadata
        checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
                  for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    # the answer (DuckDB and the UI)
    with duckdb.connect(storage.duckdb_path, read_only=True) as con:
        (answer,) = con.execute("SELECT answer FROM answers").fetchone()
    assert answer.startswith(GONE)
    assert metadata["answer"].value.startswith(GONE)
    # the UI's tables: the configuration has a row saying so
    missing = metadata["missing_by_configuration"].value.records
    assert [r.data for r in missing] == [{"configuration": "servers-2", "missing": 6,
                                          "wanted": 6, "in the answer": "no"}]
    rows = {r.data["configuration"]: r.data for r in metadata["tradeoffs"].value.records}
    assert rows["servers-2"]["role"] == "no results"
    assert rows["servers-2"]["missing"] == "all 6 replications"
    # the check says which configuration
    check = checks["no_missing_replications"]
    assert not check.passed
    assert check.metadata["missing_by_configuration"].value == {"servers-2": 6}
    # the HTML report, rebuilt from DuckDB
    html = write_experiment_report(spec.name, storage.duckdb_path).read_text(encoding="utf-8")
    assert GONE in html
    table = html[html.index('id="trade-offs"'):html.index("Each cell")]
    assert '<tr class="no-results"><td class=text>servers-2<' in table
