"""NaN in results: one rule, held everywhere (issue 21, item 5).

A metric that is NaN in a replication (a mean wait with nobody served) is *undefined in that
replication*: it is stored (DuckDB ``observations``), counted per configuration and metric (the
``undefined`` column of ``summary``), said in the summary's notes (UI and HTML report), and left out
of every statistic. It never makes a configuration disappear (one whose values are all NaN keeps
its summary rows, n = 0) nor the summary fail (an experiment whose values are all NaN still gets
one; before, its summary failed with "no observations" on every sweep). Through `simlab sweep` of
a plug-in, then the next `simlab sweep` has nothing to do.
"""

import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import yaml
from lab import sweep

from simlab_pipelines.assets import summary_key

UNDEFINED = textwrap.dedent('''
    """A plug-in whose mean wait is undefined (NaN) in every replication of x = 3, in
    replication 1 of x = 2, and everywhere with all_undefined = 1."""
    import math
    from engine import Model, ModelRun, Parameter


    def run(params, streams, warmup, horizon, series_interval=None):
        replication = streams.spawn_key[0]
        undefined = (params["x"] == 3 or (params["x"], replication) == (2, 1)
                     or params["all_undefined"] == 1)
        wait = math.nan if undefined else streams["wait"].uniform() * params["x"]
        return ModelRun({"mean_wait": wait, "served": float(replication)}, 1)


    MODEL = Model(name="undefined_wait", description="a wait that is sometimes undefined",
                  parameters=(Parameter("x", int, "a factor", default=1),
                              Parameter("all_undefined", int, "1: always NaN", default=0)),
                  metrics={"mean_wait": "mean wait", "served": "parties served"}, run=run,
                  default_horizon=1.0, default_warmup=0.0, version="1")
''')


def _experiment(lab: Path, name: str, **extra) -> Path:
    experiments = lab / "experiments"
    (experiments / "undefined_wait.py").write_text(UNDEFINED)
    path = experiments / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "model": "undefined_wait:MODEL", "seed": 4, "replications": 4,
        "factors": {"x": [1, 2, 3]}, "baseline": {"x": 1},
        "objective": {"metric": "mean_wait", "direction": "minimize"}, **extra}))
    return path


def _rows(lab: Path, sql: str, *parameters) -> list[tuple]:
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        return con.execute(sql, list(parameters)).fetchall()


def _notes(name: str) -> str:
    event = dg.DagsterInstance.get().get_latest_materialization_event(summary_key(name))
    return event.asset_materialization.metadata["notes"].value


def test_undefined_values_are_stored_counted_and_said_and_never_hide_a_configuration(lab):
    path = _experiment(lab, "sometimes")
    out = sweep(path, "--workers", "1")
    assert "sometimes: ran 12 partitions in 1 run(s); 12 wanted in all." in out
    # stored as they came: 4 + 1 NaN waits
    assert _rows(lab, "SELECT config_key, count(*) FILTER (isnan(value)) FROM observations "
                      "WHERE metric = 'mean_wait' GROUP BY 1 ORDER BY 1") == \
        [("x-1", 0), ("x-2", 1), ("x-3", 4)]
    # counted, every configuration kept (x-3 used to vanish from the summary and the answer)
    assert _rows(lab, "SELECT config_key, n, undefined, isnan(mean) FROM summary WHERE "
                      "metric = 'mean_wait' ORDER BY 1") == \
        [("x-1", 4, 0, False), ("x-2", 3, 1, False), ("x-3", 0, 4, True)]
    assert _rows(lab, "SELECT DISTINCT n, undefined FROM summary WHERE metric = 'served'") == \
        [(4, 0)]
    # left out of the statistics: x-2's interval is over its 3 values
    (mean,) = _rows(lab, "SELECT avg(value) FROM observations WHERE config_key = 'x-2' AND "
                         "metric = 'mean_wait' AND NOT isnan(value)")[0]
    assert _rows(lab, "SELECT mean FROM summary WHERE config_key = 'x-2' AND "
                      "metric = 'mean_wait'")[0][0] == mean
    assert not _rows(lab, "SELECT * FROM comparisons WHERE config_key = 'x-3' AND "
                          "metric = 'mean_wait'")
    # said, in the UI's notes and the report
    note = ("mean_wait was undefined (NaN) in some replications (x-2 1 of 4, x-3 4 of 4); its "
            "intervals are over the replications with a value; x-3 never had one, so no "
            "comparison or selection includes it on mean_wait")
    assert note in _notes("sometimes")
    report = (lab / "data" / "sometimes.html").read_text()
    assert "x-3 never had one" in report
    assert "nothing to do" in sweep(path, "--workers", "1")


def test_an_experiment_whose_values_are_all_undefined_still_gets_a_summary(lab):
    path = _experiment(lab, "never", parameters={"all_undefined": 1})
    out = sweep(path, "--workers", "1")  # its summary failed: "no observations", every sweep
    assert "never: ran 12 partitions in 1 run(s); 12 wanted in all." in out
    assert _rows(lab, "SELECT config_key, n, undefined FROM summary WHERE metric = "
                      "'mean_wait' ORDER BY 1") == [("x-1", 0, 4), ("x-2", 0, 4), ("x-3", 0, 4)]
    assert "x-1, x-2, x-3 never had one" in _notes("never")
    # The next sweep finds it summarised, by itself.
    assert "nothing to do, all 12 partitions are materialised and summarised" in \
        sweep(path, "--workers", "1")


def test_a_configuration_never_defined_gets_no_more_replications_than_its_pilot(lab):
    # It got replications 4 at a time up to max_replications (here 40: 9 rounds for nothing).
    path = _experiment(lab, "precise", precision={
        "metric": "mean_wait", "relative_half_width": 0.5, "max_replications": 40})
    sweep(path, "--workers", "1")
    precision = dict((key, (replications, status)) for key, replications, status in _rows(
        lab, "SELECT config_key, replications, status FROM precision WHERE experiment = ?",
        "precise"))
    assert precision["x-3"] == (4, "undefined")
    assert all(precision[key][0] > 4 for key in ("x-1", "x-2"))  # the others grow as needed
    assert _rows(lab, "SELECT count(*) FROM replications WHERE config_key = 'x-3'") == [(4,)]
