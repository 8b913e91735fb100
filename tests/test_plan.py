"""plan.py: replication targets replayed from the data, round by round.

Synthetic observations with a known spread make the sequential procedure's totals computable in
advance; the tests check that the replay follows them, ignores extra replications, waits for gaps,
and adds the two-stage selection's second stage.
"""

import numpy as np
import polars as pl

from simlab_pipelines import plan
from simlab_pipelines.analysis import next_round, two_stage_selection
from simlab_pipelines.experiments import parse_experiment


def _spec(**extra):
    data = {"name": "planned", "model": "mmck", "seed": 1, "replications": 10,
            "parameters": {"capacity": 10, "service_rate": 1.0, "arrival_rate": 0.8},
            "factors": {"servers": [1, 2]}}
    data.update(extra)
    return parse_experiment(data)


PRECISION = {"metric": "mean_wait", "relative_half_width": 0.05, "confidence": 0.95,
             "max_replications": 300}


def _observations(values: dict[str, np.ndarray], metric="mean_wait"):
    rows = [(key, r, metric, float(v)) for key, xs in values.items() for r, v in enumerate(xs)]
    return pl.DataFrame(rows, schema=["config_key", "replication", "metric", "value"],
                        orient="row").with_columns(pl.lit("planned").alias("experiment"))


def _replay(values, spec):
    """The rounds by hand: next_round on the first t values, until it asks for nothing more."""
    p = spec.precision
    t = spec.replications
    while True:
        step = next_round({"k": values[:t]}, target=p.relative_half_width,
                          max_replications=p.max_replications, confidence=p.confidence,
                          min_replications=spec.replications)["k"]
        if step.target == t:
            return t, step.status
        t = step.target


def test_targets_follow_the_rounds_and_ignore_extra_replications():
    spec = _spec(precision=PRECISION)
    rng = np.random.default_rng(5)
    # coefficient of variation 0.1 vs 0.4: the second needs ~16x the replications of the first
    values = {"servers-1": rng.normal(10.0, 1.0, 300), "servers-2": rng.normal(10.0, 4.0, 300)}
    targets = plan.replication_targets(spec, _observations(values))
    for key, xs in values.items():
        total, status = _replay(xs, spec)
        assert targets[key].replications == total and targets[key].status == status
    assert targets["servers-1"].replications < targets["servers-2"].replications
    # required replications for a 5% relative half-width: about (1.96 * cv / 0.05)^2
    assert 10 <= targets["servers-1"].replications <= 40
    assert 150 <= targets["servers-2"].replications <= 300


def test_a_round_waits_for_its_replications():
    spec = _spec(precision=PRECISION)
    rng = np.random.default_rng(6)
    values = {"servers-1": rng.normal(10.0, 4.0, 300), "servers-2": rng.normal(10.0, 4.0, 300)}
    full = plan.replication_targets(spec, _observations(values))
    # only the pilot so far, with a gap in servers-2: servers-1 gets its second round, servers-2
    # waits for replication 3 before anything is decided
    pilot = {"servers-1": values["servers-1"][:10], "servers-2": values["servers-2"][:10]}
    obs = _observations(pilot).filter(~((pl.col("config_key") == "servers-2")
                                        & (pl.col("replication") == 3)))
    early = plan.replication_targets(spec, obs)
    assert early["servers-2"].replications == 10 and early["servers-2"].status == plan.RUNNING
    assert early["servers-1"].status == plan.RUNNING
    assert 10 < early["servers-1"].replications <= full["servers-1"].replications
    wanted = plan.wanted_partitions(spec, early)
    missing = plan.missing_partitions(spec, early, set(), {("servers-2", r) for r in range(10)})
    assert "servers-2|3" in missing and "servers-2|4" in missing
    assert len(wanted) == early["servers-1"].replications + 10


def test_without_precision_the_file_decides():
    spec = _spec()
    targets = plan.replication_targets(spec, _observations({"servers-1": np.ones(3)}))
    assert {t.replications for t in targets.values()} == {10}
    assert {t.status for t in targets.values()} == {plan.FIXED}
    assert not plan.uses_results(spec)


def test_the_selection_second_stage_is_added():
    # A precision target the pilot already meets, and an indifference zone small against the
    # spread: the Bonferroni (CRN) two-stage procedure asks for more than the pilot.
    spec = _spec(precision={**PRECISION, "relative_half_width": 0.5},
                 objective={"metric": "mean_wait", "direction": "minimize",
                            "indifference_zone": 0.5})
    rng = np.random.default_rng(8)
    common = rng.normal(0.0, 2.0, 300)  # shared noise: CRN
    values = {"servers-1": 10.0 + common + rng.normal(0, 1.0, 300),
              "servers-2": 9.0 + common + rng.normal(0, 1.0, 300)}
    targets = plan.replication_targets(spec, _observations(values))
    first = {k: v[:10] for k, v in values.items()}
    required = two_stage_selection(first, indifference_zone=0.5, pstar=spec.confidence,
                                   minimize=True, common_random_numbers=True).required
    for key in values:
        assert targets[key].selection_required == required[key] > 10
        assert targets[key].replications == max(required[key], _replay(values[key], spec)[0])
