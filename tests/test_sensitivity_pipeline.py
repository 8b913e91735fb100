"""An experiment with a design is swept like any other (its partitions materialised, then its
summary), and its DuckDB file holds the sensitivity and metamodel tables, the answer names the
factors that matter, and the summary's metadata carries the plots."""

import textwrap

import dagster as dg
import duckdb

from simlab_pipelines.assets import design_metadata, replications_key, summary_key
from simlab_pipelines.experiments import load_experiment
from simlab_pipelines.partitions import range_tags
from simlab_pipelines.report import write_experiment_report
from simlab_pipelines.resources import SimlabStorage

DESIGNED = textwrap.dedent("""\
    name: designed
    question: Which of x1 and x3 drives y?
    model: linear
    seed: 3
    replications: 2
    common_random_numbers: false
    parameters: {b1: 3.0, b3: 0.1, noise_sd: 0.1}
    design:
      method: latin_hypercube
      points: 6
      seed: 4
      metrics: [y]
      factors:
        x1: {min: -1.0, max: 1.0}
        x3: {min: 1.0, max: 10.0, scale: log}
    """)


def test_a_designed_experiment_sweeps_and_stores_its_sensitivity(lab, materialize):
    path = lab / "experiments" / "designed.yaml"
    path.write_text(DESIGNED)
    spec = load_experiment(path)
    storage = SimlabStorage(results_uri=str(lab / "data" / "results"),
                            duckdb_path=str(lab / "data" / "simlab.duckdb"), workers=1)
    with dg.instance_for_test() as instance:
        for config in spec.configurations_list():
            assert materialize(spec, storage, instance, [replications_key(spec.name)],
                               tags=range_tags(config.key, 0, spec.replications - 1)).success
        result = materialize(spec, storage, instance, [summary_key(spec.name)])
        assert result.success
        metadata = instance.fetch_materializations(summary_key(spec.name), limit=1
                                                   ).records[0].asset_materialization.metadata
    with duckdb.connect(storage.duckdb_path, read_only=True) as con:
        configurations = con.execute("SELECT count(*) FROM configurations WHERE experiment = "
                                     "'designed'").fetchone()[0]
        rows = {(s, f): (v, lo, hi) for f, s, v, lo, hi in con.execute(
            "SELECT factor, statistic, value, ci_low, ci_high FROM sensitivity "
            "WHERE experiment = 'designed' AND metric = 'y'").fetchall()}
        fit = con.execute("SELECT points, observations, parameters, pure_error_df, r_squared "
                          "FROM metamodel WHERE experiment = 'designed'").fetchone()
        answer = con.execute("SELECT answer FROM answers WHERE experiment = 'designed'"
                             ).fetchone()[0]
        compared = con.execute("SELECT count(*) FROM comparisons WHERE experiment = 'designed'"
                               ).fetchone()[0]
    assert configurations == 6
    assert compared == 0  # design points sample the factor space: they are not alternatives
    _, low, high = rows[("coefficient", "x1")]
    assert low < 3.0 < high  # x1 is coded as itself: its coefficient is b1
    assert rows[("variance_share", "x1")][0] > rows[("variance_share", "x3")][0]
    assert {s for s, _ in rows} == {"coefficient", "variance_share", "SRC"}
    assert ("coefficient", "x1:x3") not in rows
    assert fit[:4] == (6, 12, 3, 6) and fit[4] > 0.9  # 6 points: main effects only
    assert answer.startswith("x1 explains") and "of the variance of y" in answer
    assert "x1 explains" in metadata["answer"].value
    for key in ("sensitivity", "tornado_plot", "main_effects_plot"):
        assert key in metadata, key
    # The HTML report, rebuilt from the DuckDB file, says it too, with the plots.
    page = write_experiment_report("designed", lab / "data" / "simlab.duckdb").read_text()
    assert "Which factors matter: y" in page and "x1 explains" in page
    assert page.count("data:image/png;base64,") >= 3  # tornado, main effects, fit
    assert page.count("data:image/svg+xml;base64,") >= 1  # the means
    # The spec asset shows the design and what generated it.
    design = design_metadata(spec)["design"].data
    assert design["method"] == "latin_hypercube" and design["configurations"] == 6
    assert design["generator"]["name"] == "scipy.stats.qmc"
