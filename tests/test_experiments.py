"""Experiment files: validation errors name file, field and reason; keys, hashes and baselines."""

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

import engine
from simlab_pipelines.experiments import (
    Configuration,
    ExperimentError,
    ExperimentSpec,
    config_key,
    experiments_dir,
    load_experiment,
    load_experiments,
    parse_experiment,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "experiments"
FIXTURES = ROOT / "tests" / "fixtures"
BAD = FIXTURES / "bad_experiments"
KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")

# file -> (field path, a fragment of the reason). Every file in BAD must be listed here.
BAD_FILES = {
    "unknown_top_level_key.yaml": ("replicatons", "unknown key 'replicatons' (allowed: name,"),
    "unknown_nested_key.yaml": ("precision.confidance", "unknown key 'confidance'"),
    "wrong_type_string_for_int.yaml": ("replications", "valid integer (got '3')"),
    "wrong_type_float_for_int.yaml": ("replications", "valid integer (got 3.5)"),
    "wrong_type_bool_for_int.yaml": ("seed", "valid integer (got True)"),
    "missing_required_field.yaml": ("model", "required field is missing"),
    "out_of_bounds_horizon.yaml": ("horizon", "greater than 0 (got 0)"),
    "invalid_name_Pattern.yaml": ("name", "should match pattern '^[a-z][a-z0-9_]*$'"),
    "name_differs_from_file.yaml": (
        "name", "name 'something_else' must match the file name 'name_differs_from_file'"),
    "unknown_model.yaml": ("model", "unknown model 'mm1' (known: ishigami, linear, mmck, restaurant"),
    "unknown_parameter_in_parameters.yaml": (
        "parameters.arival_rate", "unknown parameter 'arival_rate' for model 'mmck'"),
    "unknown_parameter_in_factors.yaml": (
        "factors.queue_size", "unknown parameter 'queue_size' for model 'mmck'"),
    "unknown_parameter_in_configurations.yaml": (
        "configurations[1].severs", "unknown parameter 'severs' for model 'mmck'"),
    "unknown_parameter_in_baseline.yaml": ("baseline.server", "unknown parameter 'server'"),
    "out_of_bounds_factor_value.yaml": ("factors.tables[1]", "parameter 'tables' = 0 must be >= 1"),
    "out_of_bounds_fixed_parameter.yaml": (
        "parameters.arrival_rate", "parameter 'arrival_rate' = -1.0 must be > 0"),
    "wrong_type_parameter_value.yaml": (
        "configurations[2].servers", "parameter 'servers' must be int, got 'two'"),
    "float_for_int_parameter.yaml": (
        "factors.servers[1]", "parameter 'servers' must be an integer, got 2.5"),
    "capacity_below_servers.yaml": (
        "configurations[1].capacity", "parameter 'capacity' = 2 must be >= servers (3)"),
    "fixed_and_factor.yaml": ("factors.servers", "given both as fixed (parameters.servers) and as a factor"),
    "duplicate_configurations.yaml": (
        "configurations[2]", "resolves to the same parameters as configurations[0]"),
    "empty_factor.yaml": ("factors.servers", "factor 'servers' has no values"),
    "duplicate_factor_value.yaml": (
        "factors.arrival_rate[2]", "duplicate value 1 in factor 'arrival_rate' (same as factors.arrival_rate[1])"),
    "factors_and_configurations.yaml": ("configurations", "either factors (a full factorial) or configurations"),
    "baseline_matches_nothing.yaml": ("baseline", '{"servers":3} matches no configuration'),
    "baseline_ambiguous.yaml": ("baseline", "matches 2 configurations (capacity-5_servers-1, capacity-10_servers-1)"),
    "precision_unknown_metric.yaml": ("precision.metric", "unknown metric 'mean_wait_time' for model 'mmck'"),
    "precision_max_below_replications.yaml": (
        "precision.max_replications", "3 must be >= replications (4)"),
    "objective_unknown_metric.yaml": ("objective.metric", "unknown metric 'wait' for model 'mmck'"),
    "objective_bad_direction.yaml": ("objective.direction", "'minimize' or 'maximize' (got 'minimise')"),
    # libyaml says "did not find expected ...", pyyaml's own parser "expected ...".
    "yaml_syntax_error.yaml": ("", "expected ',' or ']'"),
    "not_a_mapping.yaml": ("", "expected a mapping of experiment fields (name: ..., model: ...), got a list"),
    "empty_file.yaml": ("", "got an empty document"),
    "a_number.yaml": ("", "got an int"),
    "duplicate_yaml_key.yaml": ("seed", "duplicate key 'seed' at line 6 (first given at line 3)"),
    "not_utf8.yaml": ("", "cannot read the file: not UTF-8 text"),
    "non_string_key.yaml": ("factors", "key True must be a string (quote it in the YAML)"),
    "empty_configurations.yaml": ("configurations", "list should have at least 1 item"),
    "factor_not_a_list.yaml": ("factors.servers", "input should be a valid list (got 3)"),
    "infinite_horizon.yaml": ("horizon", "input should be a finite number (got inf)"),
    "check_theory_wrong_model.yaml": (
        "check_theory", "closed forms exist for model 'mmck' only, not 'restaurant'"),
}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_every_bad_file_has_an_expectation():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(BAD_FILES)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_rejected_with_file_field_and_reason(name):
    field, fragment = BAD_FILES[name]
    path = BAD / name
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    err = info.value
    assert err.path == path
    # Each file holds exactly one mistake, so exactly one error is reported.
    assert len(err.errors) == 1, err.errors
    got_field, reason = err.errors[0]
    assert got_field == field
    assert fragment in reason
    prefix = f"{path}: {field}: " if field else f"{path}: "
    assert str(err).startswith(prefix + reason)


def test_error_message_reads_file_field_reason_and_line():
    path = BAD / "out_of_bounds_factor_value.yaml"
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value) == f"{path}: factors.tables[1]: parameter 'tables' = 0 must be >= 1 (line 6)"
    assert info.value.lines["factors.tables[1]"] == 6


def test_several_errors_are_reported_together(tmp_path):
    path = write(tmp_path, "many.yaml", """\
        name: many
        model: restaurant
        seed: 1
        replications: 4
        parameters: {tables: 0, cooks: 1.5, bogus: 1}
        factors:
          waiters: [1, 1, -2]
        """)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    fields = [field for field, _ in info.value.errors]
    assert fields == ["parameters.tables", "parameters.cooks", "parameters.bogus",
                      "factors.waiters[1]", "factors.waiters[2]"]
    assert len(str(info.value).splitlines()) == 5


def test_cross_parameter_error_in_a_factorial_names_the_combination(tmp_path):
    path = write(tmp_path, "cross.yaml", """\
        name: cross
        model: mmck
        seed: 1
        replications: 4
        factors:
          servers: [1, 4]
          capacity: [2, 8]
        """)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert info.value.errors == [
        ("factors.capacity[0]", "parameter 'capacity' = 2 must be >= servers (4) "
                                "(in configuration capacity-2_servers-4)")]


@pytest.mark.parametrize("make", [lambda d: d / "missing.yaml",
                                  lambda d: (d / "dir.yaml").mkdir() or d / "dir.yaml"])
def test_unreadable_file_is_an_experiment_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert info.value.errors[0][0] == ""
    assert str(info.value).startswith(f"{path}: cannot read the file: ")


def test_restaurant_example():
    spec = load_experiment(EXAMPLES / "restaurant_staffing.yaml")
    model = engine.get_model("restaurant")
    assert spec.source == EXAMPLES / "restaurant_staffing.yaml"
    assert spec.question == "Should we add a table or hire a waiter?"
    assert spec.config_keys() == ["tables-8_waiters-2", "tables-8_waiters-3",
                                  "tables-9_waiters-2", "tables-9_waiters-3"]
    assert spec.baseline_key == "tables-8_waiters-2"
    assert spec.replications == 100
    assert (spec.resolved_horizon, spec.resolved_warmup) == (480.0, 0.0)  # a terminating day
    # judged by a response (profit, with a cost response for the cheapest of equal options)
    assert spec.objective is not None and spec.objective.metric in spec.parsed_responses
    assert "cost" in spec.parsed_responses and spec.units()["profit_per_day"] == "$/day"
    assert spec.precision is not None and spec.precision.metric in model.metrics
    assert spec.max_replications == spec.precision.max_replications >= spec.replications
    for config in spec.configurations_list():
        assert config.params == model.validate(config.params)  # full, valid, defaults filled
        assert config.params["arrival_rate"] == 0.15
        assert set(config.varying) == {"tables", "waiters"}


def test_mmck_validation_example_covers_the_closed_form_cases():
    spec = load_experiment(EXAMPLES / "mmck_validation.yaml")
    params = [c.params for c in spec.configurations_list()]
    rho = [p["arrival_rate"] / (p["servers"] * p["service_rate"]) for p in params]
    assert any(r < 0.5 for r in rho)  # light load
    assert any(r >= 0.85 and p["capacity"] is not None for r, p in zip(rho, params, strict=True))
    assert any(p["capacity"] == p["servers"] for p in params)  # pure loss (Erlang B)
    assert any(p["capacity"] is None for p in params)  # M/M/c
    assert 30 <= spec.replications <= 50
    assert "arrival_rate-2.1_capacity-none_servers-3" in spec.config_keys()


def test_example_directory_and_tiny_fixture_load_cleanly():
    specs, errors = load_experiments(EXAMPLES)
    assert errors == []
    assert {s.name for s in specs} >= {"restaurant_staffing", "mmck_validation"}
    tiny = load_experiment(FIXTURES / "experiments" / "tiny_mmck.yaml")
    assert len(tiny.configurations_list()) == 2
    assert tiny.replication_keys() == [str(r) for r in range(6)]
    assert tiny.baseline_key == "servers-1"


def test_config_key_format():
    assert config_key({}) == "base"
    assert config_key({"waiters": 3, "tables": 8}) == "tables-8_waiters-3"
    assert config_key({"arrival_rate": 0.25}) == "arrival_rate-0.25"
    assert config_key({"arrival_rate": 0.1 + 0.2}) == "arrival_rate-0.30000000000000004"
    assert config_key({"capacity": None, "servers": 2}) == "capacity-none_servers-2"
    assert config_key({"x": 1e20, "y": 1e-7, "z": -0.5}) == "x-1e20_y-1e-07_z--0.5"
    # int and float print differently, so they never share a key
    assert config_key({"x": 1}) != config_key({"x": 1.0})


def test_long_keys_are_shortened_with_a_stable_hash_and_stay_unique():
    base = {f"parameter_with_a_long_name_{i}": 0.125 * i for i in range(6)}
    key = config_key(base)
    assert len(key) <= 64 and KEY_RE.fullmatch(key)
    assert re.fullmatch(r".+_[0-9a-f]{10}", key)
    assert key.startswith("parameter_with_a_long_name_0-0.0_parameter")
    assert config_key(dict(reversed(list(base.items())))) == key  # order of the mapping is irrelevant
    variants = {config_key({**base, "parameter_with_a_long_name_5": v}) for v in range(200)}
    assert len(variants) == 200


def test_spec_with_long_keys_has_unique_valid_partition_keys(tmp_path):
    path = write(tmp_path, "wide.yaml", """\
        name: wide
        model: restaurant
        seed: 3
        replications: 2
        factors:
          arrival_rate: [0.1, 0.125]
          patience: [10.5, 12.25]
          order_time: [2.5, 3.75]
          cook_time: [11.0, 12.5]
          eat_time: [29.5, 30.25]
        """)
    spec = load_experiment(path)
    keys = spec.config_keys()
    assert len(keys) == 32 == len(set(keys))
    assert all(len(k) <= 64 and KEY_RE.fullmatch(k) for k in keys)
    assert all(re.search(r"_[0-9a-f]{10}$", k) for k in keys)
    import dagster as dg  # the keys must be acceptable to Dagster as they are

    partitions = dg.MultiPartitionsDefinition({
        "config": dg.StaticPartitionsDefinition(keys),
        "replication": dg.StaticPartitionsDefinition(spec.replication_keys()),
    })
    assert len(partitions.get_partition_keys()) == 64


def test_config_keys_are_stable_across_processes():
    code = ("import json; from simlab_pipelines.experiments import load_experiment as L; "
            f"print(json.dumps([L(p).config_keys() for p in {[str(p) for p in sorted(EXAMPLES.glob('*.yaml'))]!r}]))")
    here = [load_experiment(p).config_keys() for p in sorted(EXAMPLES.glob("*.yaml"))]
    for hash_seed in ("1", "4242"):  # Python's salted hash() must play no part
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=ROOT, env=env).stdout
        assert json.loads(out) == here


def test_config_keys_do_not_depend_on_order_in_the_file(tmp_path):
    a = load_experiment(write(tmp_path, "a.yaml", """\
        name: a
        model: restaurant
        seed: 1
        replications: 2
        factors: {tables: [8, 9, 10], waiters: [2, 3]}
        """))
    b = load_experiment(write(tmp_path, "b.yaml", """\
        name: b
        model: restaurant
        seed: 1
        replications: 2
        factors: {waiters: [3, 2], tables: [10, 8, 9]}
        """))
    c = load_experiment(write(tmp_path, "c.yaml", """\
        name: c
        model: restaurant
        seed: 1
        replications: 2
        configurations:
          - {waiters: 3, tables: 10}
          - {tables: 8, waiters: 2}
          - {tables: 9, waiters: 3}
        """))
    by_key = {x.key: x.params for x in a.configurations_list()}
    assert {x.key: x.params for x in b.configurations_list()} == by_key
    assert {x.key: x.params for x in c.configurations_list()}.items() <= by_key.items()
    # the order itself follows the file: first factor slowest, explicit list as written
    assert a.config_keys()[:2] == ["tables-8_waiters-2", "tables-8_waiters-3"]
    assert b.config_keys()[:2] == ["tables-10_waiters-3", "tables-8_waiters-3"]
    assert c.config_keys() == ["tables-10_waiters-3", "tables-8_waiters-2", "tables-9_waiters-3"]


SPEC_TEXT = """\
name: same
description: hash me
model: mmck
seed: 11
replications: 5
horizon: 100
parameters: {service_rate: 2, arrival_rate: 1.0}
factors:
  servers: [1, 2]
baseline: {servers: 1}
objective: {metric: mean_wait, direction: minimize}
"""

REORDERED_TEXT = """\
objective: {direction: minimize, metric: mean_wait}
baseline: {servers: 1}
factors:
  servers: [1, 2]
parameters: {arrival_rate: 1, service_rate: 2.0}
horizon: 100.0
replications: 5
seed: 11
model: mmck
common_random_numbers: true
description: hash me
name: same
"""


def test_spec_hash_ignores_key_order_source_and_number_spelling(tmp_path):
    (tmp_path / "x").mkdir()
    first = load_experiment(write(tmp_path, "same.yaml", SPEC_TEXT))
    second = load_experiment(write(tmp_path / "x", "same.yaml", REORDERED_TEXT))
    assert first.source != second.source
    assert re.fullmatch(r"[0-9a-f]{64}", first.spec_hash())
    assert first.spec_hash() == second.spec_hash()
    assert hash(first) == hash(second)


@pytest.mark.parametrize("old,new", [("seed: 11", "seed: 12"), ("servers: [1, 2]", "servers: [1, 3]"),
                                     ("horizon: 100", "horizon: 101"),
                                     ("arrival_rate: 1.0", "arrival_rate: 1.5"),
                                     ("direction: minimize", "direction: maximize")])
def test_spec_hash_changes_with_any_value(tmp_path, old, new):
    assert old in SPEC_TEXT
    base = load_experiment(write(tmp_path, "same.yaml", SPEC_TEXT)).spec_hash()
    (tmp_path / "x").mkdir()
    changed = load_experiment(write(tmp_path / "x", "same.yaml", SPEC_TEXT.replace(old, new)))
    assert changed.spec_hash() != base


def test_load_experiments_returns_valid_specs_and_errors(tmp_path):
    for name in ("restaurant_staffing.yaml", "mmck_validation.yaml"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    (tmp_path / "unknown_model.yaml").write_text((BAD / "unknown_model.yaml").read_text())
    write(tmp_path, "dup.yaml", "name: dup\nmodel: mmck\nseed: 1\nreplications: 2\n")
    write(tmp_path, "dup.yml", "name: dup\nmodel: mmck\nseed: 2\nreplications: 2\n")
    write(tmp_path, ".editor_swap.yaml", "{{{ not yaml")  # hidden: skipped
    write(tmp_path, "notes.txt", "not an experiment")
    specs, errors = load_experiments(tmp_path)
    assert [s.name for s in specs] == ["dup", "mmck_validation", "restaurant_staffing"]
    assert specs[0].seed == 1  # the first file in name order wins
    assert [(e.path.name, e.errors[0][0]) for e in errors] == [("dup.yml", "name"),
                                                                 ("unknown_model.yaml", "model")]
    assert "experiment 'dup' is already defined in" in errors[0].errors[0][1]


def test_every_bad_file_in_one_directory_leaves_the_good_ones_loaded(tmp_path):
    # The whole collection of bad fixtures next to the two examples: each bad file is one error
    # naming that file (and only it), and both examples still load.
    for path in BAD.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    for name in ("restaurant_staffing.yaml", "mmck_validation.yaml"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    specs, errors = load_experiments(tmp_path)
    assert [s.name for s in specs] == ["mmck_validation", "restaurant_staffing"]
    assert sorted(e.path.name for e in errors) == sorted(BAD_FILES)
    for error in errors:
        field, fragment = BAD_FILES[error.path.name]
        assert (field, True) in [(f, fragment in reason) for f, reason in error.errors], error
        assert all(line.startswith(f"{error.path}: ") for line in str(error).splitlines())


def test_load_experiments_on_a_missing_directory_reports_it(tmp_path):
    specs, errors = load_experiments(tmp_path / "nope")
    assert specs == [] and len(errors) == 1
    assert "no such directory" in str(errors[0])


def test_experiments_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMLAB_EXPERIMENTS_DIR", raising=False)
    assert experiments_dir() == EXAMPLES
    monkeypatch.setenv("SIMLAB_EXPERIMENTS_DIR", str(tmp_path))
    assert experiments_dir() == tmp_path


def test_baseline_resolution(tmp_path):
    mixed = load_experiment(write(tmp_path, "mixed.yaml", """\
        name: mixed
        model: mmck
        seed: 1
        replications: 2
        parameters: {arrival_rate: 0.5}
        configurations:
          - {servers: 2}
          - {servers: 2, capacity: 4}
          - {servers: 3, service_rate: 1}
        baseline: {servers: 2, capacity: null, arrival_rate: 0.5}
        """))
    # capacity is not in the first entry: it is matched on the resolved (default) value
    assert mixed.baseline_key == "servers-2"
    typed = load_experiment(write(tmp_path, "typed.yaml", """\
        name: typed
        model: mmck
        seed: 1
        replications: 2
        factors: {service_rate: [1, 2.5]}
        baseline: {service_rate: 1.0}
        """))
    assert typed.config_keys() == ["service_rate-1.0", "service_rate-2.5"]
    assert typed.baseline_key == "service_rate-1.0"
    single = load_experiment(write(tmp_path, "single.yaml", """\
        name: single
        model: mmck
        seed: 1
        replications: 2
        baseline: {}
        """))
    assert single.config_keys() == ["base"] and single.baseline_key == "base"
    assert load_experiment(FIXTURES / "experiments" / "tiny_mmck.yaml").baseline_key == "servers-1"
    none = parse_experiment({"name": "n", "model": "mmck", "seed": 1, "replications": 2})
    assert none.baseline_key is None and none.objective is None and none.precision is None


def test_yaml_1_2_exponent_floats_are_numbers(tmp_path):
    spec = load_experiment(write(tmp_path, "exp.yaml", """\
        name: exp
        model: mmck
        seed: 1
        replications: 2
        parameters: {arrival_rate: 5e-1, service_rate: 1E0}
        """))
    assert spec.configurations_list()[0].params["arrival_rate"] == 0.5


def test_spec_objects_are_frozen_strict_and_picklable_errors():
    spec = parse_experiment({"name": "p", "model": "mmck", "seed": 1, "replications": 2})
    with pytest.raises(pydantic.ValidationError):
        spec.seed = 2  # type: ignore[misc]
    # configurations_list hands out copies: callers cannot corrupt the spec
    spec.configurations_list()[0].params["servers"] = 99
    assert spec.configurations_list()[0].params["servers"] == 1
    assert isinstance(spec.configurations_list()[0], Configuration)
    with pytest.raises(pydantic.ValidationError):
        ExperimentSpec(name="p", model="mmck", seed=1, replications=2, parameters={"servers": 0})
    with pytest.raises(ExperimentError) as info:
        parse_experiment({"name": "p", "model": "mmck", "seed": "1", "replications": 2})
    assert str(info.value) == "<experiment>: seed: input should be a valid integer (got '1')"
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.path, copy.errors, str(copy)) == (info.value.path, info.value.errors, str(info.value))


def test_the_rejected_files_group_name_is_reserved(tmp_path):
    path = write(tmp_path, "rejected_experiments.yaml", """\
        name: rejected_experiments
        model: mmck
        seed: 1
        replications: 2
        """)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert info.value.errors == [("name", "name 'rejected_experiments' is reserved (the UI's "
                                  "group of rejected files); choose another")]
