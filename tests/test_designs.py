"""Designs (simlab_pipelines/experiments/designs.py): each method's points have the property it
promises, integer factors keep the balance, duplicates merge, and bad fields are rejected by path."""

import itertools
import textwrap

import numpy as np
import pytest

from simlab_pipelines.experiments import ExperimentError, designs, load_experiment, parse_experiment
from simlab_pipelines.experiments.designs import (
    NOLH_PERMUTATIONS,
    fractional_factorial_matrix,
    fractional_runs,
    nolh_columns,
    nolh_matrix,
)


def linear_spec(design: dict, **extra) -> object:
    return parse_experiment({"name": "d", "model": "linear", "seed": 1, "replications": 2,
                             "design": design, **extra})


def unit_factors(k: int) -> dict:
    return {f"x{j + 1}": {"min": 0.0, "max": 1.0} for j in range(k)}


def test_latin_hypercube_has_one_point_per_stratum_per_factor():
    spec = linear_spec({"method": "latin_hypercube", "points": 40, "seed": 5,
                        "factors": unit_factors(3)})
    points = spec.design_points
    for j in range(3):
        strata = np.floor(points.unit[:, j] * 40).astype(int)
        assert sorted(strata) == list(range(40))
    # The values keep the strata (rounded to 6 significant digits only).
    values = points.configuration_matrix()
    for j in range(3):
        assert sorted(np.floor(values[:, j] * 40).astype(int)) == list(range(40))


def test_integer_factor_keeps_the_latin_hypercube_balance():
    # 5 integers over 40 strata: 8 points each, whatever the seed.
    spec = parse_experiment({"name": "d", "model": "mmck", "seed": 1, "replications": 2,
                             "design": {"method": "latin_hypercube", "points": 40, "seed": 9,
                                        "factors": {"servers": {"min": 2, "max": 6},
                                                    "arrival_rate": {"min": 0.5, "max": 1.5}}}})
    servers = [c.params["servers"] for c in spec.configurations_list()]
    assert {s: servers.count(s) for s in set(servers)} == {2: 8, 3: 8, 4: 8, 5: 8, 6: 8}
    assert spec.design_points.factors[0].type == "int"  # from the model parameter


@pytest.mark.parametrize("m", [4, 6])
def test_sobol_first_power_of_two_points_are_balanced(m):
    spec = linear_spec({"method": "sobol", "points": 2**m, "seed": 3, "factors": unit_factors(3)})
    unit = spec.design_points.unit
    for j in range(3):
        assert np.bincount(np.floor(unit[:, j] * 2**m).astype(int), minlength=2**m).tolist() \
            == [1] * 2**m
    # and every 2-D elementary box of volume 2^-m with t = 0 for the first two coordinates
    boxes = np.floor(unit[:, 0] * 2).astype(int) * 2 ** (m - 1) \
        + np.floor(unit[:, 1] * 2 ** (m - 1)).astype(int)
    assert sorted(boxes) == list(range(2**m))


def test_halton_coordinates_are_stratified_in_their_bases():
    spec = linear_spec({"method": "halton", "points": 27, "seed": 4, "factors": unit_factors(3)})
    unit = spec.design_points.unit
    for j, n in ((0, 16), (1, 27), (2, 25)):  # bases 2, 3, 5
        assert np.bincount(np.floor(unit[:n, j] * n).astype(int), minlength=n).tolist() == [1] * n


@pytest.mark.parametrize("q", sorted(NOLH_PERMUTATIONS))
def test_nolh_is_a_latin_hypercube_within_the_published_orthogonality_bound(q):
    # Cioppa & Lucas (2007): nearly orthogonal = every |pairwise correlation| <= 0.03 and the
    # correlation matrix's condition number <= 1.13.
    k = nolh_columns(q)
    design = nolh_matrix(2 * q + 1, k)
    for j in range(k):
        assert sorted(design[:, j]) == list(range(-q, q + 1))
    corr = np.corrcoef(design.T)
    assert np.abs(corr - np.eye(k)).max() <= 0.03
    assert np.linalg.cond(corr) <= 1.13


def test_nolh_in_an_experiment_maps_levels_to_the_ranges():
    spec = linear_spec({"method": "nolh", "points": 17, "factors": {
        "x1": {"min": -2.0, "max": 2.0}, "x2": {"min": 1.0, "max": 100.0, "scale": "log"}}})
    values = spec.design_points.configuration_matrix()
    assert len(values) == 17
    assert values[:, 0].min() == -2.0 and values[:, 0].max() == 2.0 and 0.0 in values[:, 0]
    assert np.log10(values[:, 1]) == pytest.approx(np.linspace(0, 2, 17)[
        np.argsort(np.argsort(values[:, 1]))], abs=1e-5)
    coded = spec.design_points.configuration_matrix(coded=True)
    assert abs(np.corrcoef(coded.T)[0, 1]) <= 0.03


@pytest.mark.parametrize(("k", "resolution"), [(3, 3), (7, 3), (5, 4), (8, 4), (6, 4)])
def test_fractional_factorial_is_balanced_orthogonal_and_of_its_resolution(k, resolution):
    runs = fractional_runs(k, resolution)
    x, generators = fractional_factorial_matrix(k, runs, resolution)
    assert x.shape == (runs, k) and set(np.unique(x)) == {-1.0, 1.0}
    assert np.array_equal(x.T @ x, runs * np.eye(k))  # balanced (diagonal) and orthogonal
    assert len(generators) == k - int(np.log2(runs))
    aliased_with_pairs = [
        (j, a, b) for j in range(k) for a, b in itertools.combinations(range(k), 2)
        if j not in (a, b) and abs(x[:, j] @ (x[:, a] * x[:, b])) > 0]
    if resolution == 4:
        assert aliased_with_pairs == []  # no main effect aliased with a two-factor interaction
    if resolution == 3 and runs < 2**k:
        assert aliased_with_pairs  # the price of the smaller design


def test_fractional_factorial_in_an_experiment_uses_the_ends_of_the_ranges():
    spec = parse_experiment({"name": "d", "model": "mmck", "seed": 1, "replications": 2,
                             "design": {"method": "fractional_factorial", "factors": {
                                 "servers": {"min": 1, "max": 3},
                                 "capacity": {"min": 5, "max": 9},
                                 "arrival_rate": {"min": 0.5, "max": 1.0},
                                 "service_rate": {"min": 1.0, "max": 2.0}}}})
    configs = spec.configurations_list()
    assert len(configs) == 8  # 2^(4-1), resolution IV
    assert {c.params["servers"] for c in configs} == {1, 3}
    assert {c.params["capacity"] for c in configs} == {5, 9}
    assert spec.design_points.generators == ("service_rate = servers·capacity·arrival_rate",)


def test_saltelli_and_morris_rows_keep_their_order_and_merge_duplicates():
    saltelli = linear_spec({"method": "saltelli", "points": 8, "seed": 2,
                            "factors": unit_factors(3)}).design_points
    assert saltelli.rows == 8 * (2 * 3 + 2)
    morris_spec = linear_spec({"method": "morris", "points": 10, "seed": 2,
                               "factors": unit_factors(3)})
    morris = morris_spec.design_points
    assert morris.rows == 10 * 4 and len(morris.configurations) < morris.rows  # grid: repeats
    assert len(morris_spec.configurations_list()) == len(morris.configurations)
    values = morris.unit  # the grid values are the factor values on [0, 1]
    for row, config in enumerate(morris.row_config):
        assert [morris.configurations[config][f"x{j + 1}"] for j in range(3)] \
            == pytest.approx(values[row].tolist(), rel=1e-5)
    # One factor moves per step of a trajectory.
    steps = np.diff(values.reshape(10, 4, 3), axis=1)
    assert ((np.abs(steps) > 0).sum(axis=2) == 1).all()


def test_designs_are_deterministic_and_seeded():
    design = {"method": "latin_hypercube", "points": 8, "seed": 1, "factors": unit_factors(2)}
    first, again = linear_spec(design), linear_spec(design)
    assert first.config_keys() == again.config_keys()
    other = linear_spec({**design, "seed": 2})
    assert other.config_keys() != first.config_keys()
    assert other.spec_hash() != first.spec_hash()


def test_spec_hash_includes_the_generator_version(monkeypatch):
    design = {"method": "sobol", "points": 8, "seed": 1, "factors": unit_factors(2)}
    before = linear_spec(design)
    real = designs.generator_version
    monkeypatch.setattr(designs, "generator_version",
                        lambda method: {**real(method), "version": "0.0.0-other"})
    after = linear_spec(design)
    assert after.config_keys() == before.config_keys()
    assert after.spec_hash() != before.spec_hash()


@pytest.mark.parametrize(("design", "path", "reason"), [
    ({"method": "sobol", "points": 12}, "design.points", "not a power of 2"),
    ({"method": "latin_hypercube"}, "design.points", "required field is missing"),
    ({"method": "nolh", "points": 21}, "design.points", "17, 33, 65 points"),
    ({"method": "latin_hypercube", "points": 8, "levels": 4}, "design.levels",
     "morris only"),
    ({"method": "morris", "points": 8, "levels": 5}, "design.levels", "even"),
    ({"method": "fractional_factorial", "points": 2}, "design.points", "at least 4"),
    ({"method": "saltelli", "points": 8, "resolution": 4}, "design.resolution",
     "fractional_factorial only"),
    ({"method": "lhs", "points": 8}, "design.method", "latin_hypercube"),
    ({"method": "sobol", "points": 8, "seed": -1}, "design.seed", "greater than or equal"),
])
def test_bad_design_fields_are_rejected_by_path(design, path, reason):
    with pytest.raises(ExperimentError) as caught:
        linear_spec({"factors": unit_factors(2), **design})
    assert any(field == path and reason in why for field, why in caught.value.errors), \
        caught.value.errors


@pytest.mark.parametrize(("factor", "path", "reason"), [
    ({"min": 1.0, "max": 1.0}, "design.factors.servers.max", "greater than min"),
    ({"min": 1.5, "max": 4}, "design.factors.servers.min", "not an integer"),
    ({"min": 1, "max": 4, "type": "float"}, "design.factors.servers.type", "use type: int"),
    ({"min": 0, "max": 4}, "design.factors.servers.min", "must be >= 1"),
    ({"min": 1, "max": 4, "step": 1}, "design.factors.servers.step", "unknown key"),
])
def test_bad_factor_fields_are_rejected_by_path(factor, path, reason):
    with pytest.raises(ExperimentError) as caught:
        parse_experiment({"name": "d", "model": "mmck", "seed": 1, "replications": 2,
                          "design": {"method": "latin_hypercube", "points": 8,
                                     "factors": {"servers": factor}}})
    assert any(field == path and reason in why for field, why in caught.value.errors), \
        caught.value.errors


def test_every_problem_of_a_design_file_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        name: bad
        model: mmck
        seed: 1
        replications: 2
        parameters: {service_rate: 1.0}
        design:
          method: latin_hypercube
          points: 8
          factors:
            arrival_rate: {min: -1.0, max: 0.5, scale: log}
            service_rate: {min: 1.0, max: 2.0}
            tables: {min: 1, max: 4}
        """))
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    text = str(caught.value)
    assert "design.factors.arrival_rate.min: parameter 'arrival_rate' = -1.0 must be > 0.0 " \
           "(line 10)" in text
    assert "design.factors.arrival_rate.min: a log scale needs min > 0" in text
    assert "design.factors.service_rate: parameter 'service_rate' is given both as fixed" in text
    assert "design.factors.tables: unknown parameter 'tables'" in text and "(line 12)" in text


def test_design_excludes_factors_and_configurations():
    with pytest.raises(ExperimentError, match="give either factors"):
        linear_spec({"method": "sobol", "points": 8, "factors": unit_factors(1)},
                    factors={"x2": [0.0, 1.0]})


def test_specs_with_the_same_design_are_equal():
    design = {"method": "morris", "points": 4, "seed": 1, "factors": unit_factors(2)}
    assert linear_spec(design) == linear_spec(design)
    assert linear_spec(design) != linear_spec({**design, "seed": 2})
