"""The search (issue 20): the file's ``search`` validated by field path, the rounds replayed from
the results (same file + same results = same proposals, whatever order the results came in),
duplicates not run again, the budgets, and the search run through Dagster: the sequential
sensor's next round, and a real ``simlab sweep`` killed with kill -9 between rounds and mid-round
that resumes without simulating again anything it had recorded, and ends with the proposals of
an uninterrupted search.
"""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from simlab_pipelines import plan, search, search_local
from simlab_pipelines.experiments import ExperimentError, load_experiment, parse_experiment

FIXTURE = Path(__file__).parent / "fixtures" / "experiments" / "search_mmck.yaml"
SIMLAB = str(Path(sys.executable).with_name("simlab"))
TIMEOUT = 240  # a hang fails the test; a loaded 2-CPU machine is slow, never this slow


def _data() -> dict:
    return yaml.safe_load(FIXTURE.read_text())


def _errors(data: dict) -> dict[str, str]:
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(data)
    return dict(caught.value.errors)


def _with(**search) -> dict:
    data = _data()
    data["search"] = {**data["search"], **search}
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"method": "simplex"}, "search.method", "'tpe'"),
    ({"budget": {"configurations": 0}}, "search.budget.configurations", "greater than or equal"),
    ({"budget": {}}, "search.budget", "configurations, simulations or both"),
    ({"budget": None}, "search.budget", "required for method 'tpe'"),
    ({"batch": 20}, "search.batch", "more than the budget of 12"),
    ({"budget": {"simulations": 3}}, "search.budget.simulations", "less than one"),
    ({"factors": {"servers": {}}}, "search.factors.servers", "min and max"),
    ({"factors": {"servers": {"min": 1}}}, "search.factors.servers.max", "required"),
    ({"factors": {"servers": {"min": 1.5, "max": 4}}}, "search.factors.servers.min",
     "is an integer"),
    ({"factors": {"servers": {"min": 0, "max": 4}}}, "search.factors.servers.min", ">= 1"),
    ({"factors": {"servers": {"min": 4, "max": 2}}}, "search.factors.servers.max",
     "greater than min"),
    ({"factors": {"servers": {"min": 1, "max": 4, "values": [1]}}}, "search.factors.servers",
     "not both"),
    ({"factors": {"servers": {"values": [1, 2, 2]}}}, "search.factors.servers.values[2]",
     "duplicate"),
    ({"factors": {"tables": {"min": 1, "max": 4}}}, "search.factors.tables",
     "unknown parameter"),
    ({"factors": {"arrival_rate": {"min": 1, "max": 4}}}, "search.factors.arrival_rate",
     "both as fixed"),
    ({"method": "grid", "factors": {"wait_threshold": {"min": 0.5, "max": 2.0}}},
     "search.factors.wait_threshold", "method grid needs a finite set"),
    ({"factors": {"wait_threshold": {"min": 0.0, "max": 2.0, "scale": "log"}}},
     "search.factors.wait_threshold.min", "log scale"),
    ({"factor": "servers"}, "search.factor", "only for method threshold"),
    ({"method": "threshold", "factors": None}, "search.metric", "required for method threshold"),
    ({"max_replications": 3}, "search.max_replications", ">= search.replications"),
    ({"max_replications": 5}, "search.max_replications", "fewer than 2 fresh"),
    ({"seed": 2**40}, "search.seed", "less than or equal"),
    ({"bogus": 1}, "search.bogus", "unknown key"),
])
def test_each_bad_field_is_rejected_by_its_path(change, path, words):
    errors = _errors(_with(**change))
    assert path in errors, errors
    assert words in errors[path]


def test_a_default_batch_beyond_the_budget_says_it_is_the_default():
    data = _with(budget={"configurations": 6})
    del data["search"]["batch"]  # the default, 8
    assert "(the default: set batch)" in _errors(data)["search.batch"]
    assert "default" not in _errors(_with(batch=20))["search.batch"]


def test_a_search_excludes_other_ways_of_giving_configurations():
    for field, value in (("factors", {"servers": [1, 2]}),
                         ("configurations", [{"servers": 1}]),
                         ("design", {"method": "sobol", "points": 8,
                                     "factors": {"servers": {"min": 1, "max": 4}}})):
        errors = _errors({**_data(), field: value})
        assert "search" in errors and "only one of them" in errors["search"]
    assert "replications" in _errors({**_data(), "replications": 5})  # search.replications is 4
    assert "baseline" in _errors({**_data(), "baseline": {"servers": 1}})
    assert "objective.indifference_zone" in _errors(
        {**_data(), "objective": {"metric": "cost", "direction": "minimize"}})
    no_objective = _data()
    del no_objective["objective"]
    assert "objective" in _errors(no_objective)
    assert "responses.cost" in _errors({**_data(), "responses": {"cost": "servers + nothing"}})


def test_gp_is_rejected_without_torch_and_the_optimiser_is_in_the_hash(monkeypatch):
    monkeypatch.setattr("simlab_pipelines.experiments.search.torch_available", lambda: False)
    assert "torch" in _errors(_with(method="gp"))["search.method"].lower()
    spec = parse_experiment(_data())
    assert spec.replications == 4 and spec.max_replications == 8
    assert spec.search_space.optimiser["name"] == "optuna"
    assert parse_experiment(_with(method="random")).spec_hash() != spec.spec_hash()
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0.0-other")
    assert parse_experiment(_data()).spec_hash() != spec.spec_hash()


def _observations(spec, done: search_local.LocalSearch, keys=None, shuffle_seed=None):
    obs = done.observations
    if keys is not None:
        obs = obs.filter(pl.col("config_key").is_in(list(keys)))
    if shuffle_seed is not None:
        obs = obs.sample(fraction=1.0, shuffle=True, seed=shuffle_seed)
    # a replay from scratch, as another process would do it (the run's own continued from
    # the state its previous round left: the same proposals either way)
    search._CACHE.clear()
    search._PROGRESS.clear()
    search._STATES.clear()
    return obs


@pytest.fixture(scope="module")
def finished():
    """The fixture's search run to its end in this process, as simlab sweep decides it."""
    spec = load_experiment(FIXTURE)
    return spec, search_local.run_locally(spec)


def test_same_results_give_the_same_proposals_whoever_replays_them(finished):
    spec, done = finished
    found = done.replay
    assert found.finished and found.stopped == search.BUDGET_CONFIGURATIONS
    keys = [c.key for c in found.configurations]
    assert len(keys) == 12 == len(set(keys))
    # then the clean-up's replications of its candidates, and nothing else
    assert done.progress.done and done.progress.cleanup.stage in ("done", "none")
    assert done.simulations == 12 * 4 + done.progress.cleanup.simulations(
        {k: t.replications for k, t in done.targets.items()})
    # shuffled rows, and again from scratch: the same proposals, trial by trial
    again = search.replay(spec, _observations(spec, done, shuffle_seed=3))
    assert again.proposals == found.proposals and again.configurations == found.configurations
    # results of the first rounds only (a sweep killed between rounds): those rounds' proposals,
    # and the next round asked again exactly as before
    for k in range(1, found.rounds):
        earlier = [key for key in keys if found.round_of[key] < k]
        partial = search.replay(spec, _observations(spec, done, earlier))
        assert partial.pending == k
        assert [c.key for c in partial.configurations] == [
            key for key in keys if found.round_of[key] <= k]
        assert [p for p in partial.proposals] == [p for p in found.proposals if p.round <= k]
    # a round with one result missing (a sweep killed mid-round) waits for it
    last = [key for key in keys if found.round_of[key] == found.rounds - 1]
    missing = _observations(spec, done).filter(~((pl.col("config_key") == last[0])
                                                 & (pl.col("replication") == 2)))
    waiting = search.replay(spec, missing)
    assert waiting.pending == found.rounds - 1 and not waiting.finished
    targets = plan.replication_targets(spec, missing)
    present = set(zip(missing["config_key"], missing["replication"], strict=True))
    assert plan.missing_partitions(spec, targets, {f"{k}|{r}" for k, r in present},
                                   present) == [f"{last[0]}|2"]


def _first_stage(done: search_local.LocalSearch) -> int:
    """Simulations of the search rounds (the clean-up's come after)."""
    return done.simulations - done.progress.cleanup.simulations(
        {k: t.replications for k, t in done.targets.items()})


@pytest.mark.parametrize("method", ["cmaes", "random", "grid"])
def test_every_method_replays_to_the_same_proposals(method):
    data = _data()
    data["constraints"] = [{"metric": "mean_wait", "max": 0.5}]  # cmaes: the penalty's path
    data["search"].update(method=method, budget={"configurations": 8})
    spec = parse_experiment(data)
    done = search_local.run_locally(spec)
    assert len(done.replay.configurations) == 8 and done.progress.done
    again = search.replay(spec, _observations(spec, done, shuffle_seed=1))
    assert again.proposals == done.replay.proposals
    if method == "grid":  # factorial order, first factor slowest
        assert [c.varying for c in again.configurations][:2] == [
            {"servers": 1, "capacity": 4}, {"servers": 1, "capacity": 8}]


def test_a_run_reads_its_configurations_from_their_keys(finished):
    spec, done = finished
    for config in done.replay.configurations:
        assert search.configuration_of_key(spec, config.key) == config
    for key in ("capacity-4_servers-99", "capacity-5_servers-3", "servers-3", "abc_0123456789",
                "capacity-4_servers-3.0", "capacity-4_servers-3_x-1"):
        assert search.configuration_of_key(spec, key) is None, key


def test_duplicates_are_told_not_run_and_the_budgets_hold():
    data = _data()
    data["search"].update(method="random", batch=4, budget={"configurations": 40},
                          factors={"servers": {"min": 1, "max": 3},
                                   "capacity": {"values": [4, 8]}})
    spec = parse_experiment(data)
    assert spec.search_space.budget_configurations == 6  # the space runs out first
    done = search_local.run_locally(spec)
    found = done.replay
    keys = [c.key for c in found.configurations]
    assert sorted(keys) == sorted(f"capacity-{c}_servers-{s}" for s in (1, 2, 3) for c in (4, 8))
    assert any(p.status == "duplicate" for p in found.proposals)
    # each configuration's first stage once, however often it was proposed
    assert _first_stage(done) == 6 * 4
    assert found.stopped in (search.BUDGET_CONFIGURATIONS, search.SPACE_EXHAUSTED)

    data["search"].update(budget={"simulations": 30}, factors={"servers": {"min": 1, "max": 8},
                                                               "capacity": {"min": 8, "max": 40}})
    spec = parse_experiment(data)
    done = search_local.run_locally(spec)
    # 30 simulations of first stages of 4: 7 configurations (rounds of 4, then 3)
    assert len(done.replay.configurations) == 7 and _first_stage(done) == 28
    assert done.replay.stopped == search.BUDGET_SIMULATIONS
    assert [len([p for p in done.replay.proposals if p.round == k]) for k in range(2)] == [4, 3]


def test_proposals_the_model_rejects_are_told_failed_and_not_run():
    data = _data()  # mmck wants capacity >= servers: half this space is invalid
    data["search"].update(method="grid", batch=5, budget=None,
                          factors={"servers": {"values": [2, 6]}, "capacity": {"values": [4, 8]}})
    spec = parse_experiment(data)
    done = search_local.run_locally(spec)
    found = done.replay
    assert [p.status for p in found.proposals] == ["new", "new", "invalid", "new"]
    assert "capacity" in found.proposals[2].reason
    assert [c.key for c in found.configurations] == [
        "capacity-4_servers-2", "capacity-8_servers-2", "capacity-8_servers-6"]
    assert found.finished and _first_stage(done) == 3 * 4


def test_the_sequential_sensor_drives_the_search_round_by_round(lab, monkeypatch):
    """The daemon's path: the sensor replays the rounds from the result files and requests each
    next one; the runs find their keys' parameters by the same replay."""
    from simlab_pipelines import partitions
    from simlab_pipelines.definitions import load_definitions

    directory = lab / "search"
    directory.mkdir()
    (directory / FIXTURE.name).write_text(FIXTURE.read_text())
    monkeypatch.setenv("SIMLAB_WORKERS", "1")
    spec = load_experiment(directory / FIXTURE.name)
    defs = load_definitions(directory)
    sensor = defs.resolve_sensor_def("sequential_replications")
    job = defs.resolve_job_def(f"{spec.name}_replications")
    instance = dg.DagsterInstance.get()
    first = plan.wanted_partitions(spec, {})
    assert 0 < len(first) <= 4 * 4  # the first round, before any result: batch x replications
    partitions.add_keys(instance, spec.name, first)
    assert job.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": first[0],
        "dagster/asset_partition_range_end": first[-1]}).success
    cursor, rounds = None, [set(first)]
    while True:
        result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
        cursor = result.cursor
        if not result.run_requests:
            break
        added = set()
        for request in result.dynamic_partitions_requests:  # what the daemon does first
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
            added |= set(request.partition_keys)
        rounds.append(added)
        for request in result.run_requests:
            assert job.execute_in_process(instance=instance, tags=request.tags).success
        assert len(rounds) < 10
    done = search_local.run_locally(spec)
    local = done.replay
    # the search's rounds, then the clean-up's, exactly as decided in this process
    assert [_replications(r) for r in rounds[:local.rounds]] == [
        {(key, r) for key, k in local.round_of.items() if k == n for r in range(4)}
        for n in range(local.rounds)]
    assert set().union(*rounds) == set(plan.wanted_partitions(spec, done.targets))


def _replications(keys) -> set[tuple[str, int]]:
    """(config_key, replication) of partition keys: ``key|r``, or blocks ``key|first-last``."""
    out = set()
    for key in keys:
        config, _, span = key.rpartition("|")
        first, _, last = span.partition("-")
        out |= {(config, r) for r in range(int(first), int(last or first) + 1)}
    return out


def _files(results: Path) -> dict[str, tuple[int, int]]:
    return {f"{p.parent.name}|{p.stem}": (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in results.glob("*/*.parquet") if not p.parent.name.startswith(".")}


def _start(path: Path, lab: Path, name: str) -> subprocess.Popen:
    out = open(lab / f"{name}.log", "w")  # noqa: SIM115 (the process owns it)
    return subprocess.Popen([SIMLAB, "sweep", str(path), "--workers", "2", "--batch-size", "6"],
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(process: subprocess.Popen, results: Path, condition) -> dict:
    """kill -9 of the sweep's process group as soon as ``condition()``; the files then."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert process.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for results"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    return _files(results)


@pytest.mark.slow
def test_a_killed_search_sweep_resumes_and_simulates_nothing_again(lab):
    data = _data()
    data["horizon"] = 600  # ~0.1 s a simulation: long enough to be caught between rounds
    path = lab / "experiments" / "search_mmck.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_experiment(path)
    results = lab / "data" / "results" / spec.name
    instance = dg.DagsterInstance.get()
    key = dg.AssetKey([spec.name, "replications"])

    def recorded() -> set[str]:
        return set(instance.get_materialized_partitions(key))

    done = search_local.run_locally(spec)  # the uninterrupted search's decisions
    uninterrupted = done.replay
    first_round = 4 * sum(1 for k in uninterrupted.round_of.values() if k == 0)
    # kill -9 once the first round is recorded (between rounds, or as the next one starts),
    # then once more of the next round is recorded (in the middle of it)
    before_first = _kill_when(_start(path, lab, "first"), results,
                              lambda: len(_replications(recorded())) >= first_round)
    kept_first = {k: v for k, v in before_first.items() if k in recorded()}
    before_second = _kill_when(_start(path, lab, "second"), results,
                               lambda: len(_replications(recorded())) > first_round)
    kept_second = {k: v for k, v in before_second.items() if k in recorded()}
    final = subprocess.run([SIMLAB, "sweep", str(path), "--workers", "2"], capture_output=True,
                           text=True, timeout=TIMEOUT)
    assert final.returncode == 0, final.stdout + final.stderr
    after = _files(results)
    # what a killed sweep had recorded was not simulated again: the very same files
    assert len(kept_first) >= 4 and len(kept_second) > len(kept_first)
    assert {k: after[k] for k in kept_first} == kept_first
    assert {k: after[k] for k in kept_second} == kept_second
    # no partition materialised twice, and the search ended where an uninterrupted one does
    events = instance.fetch_materializations(key, limit=10_000).records
    partitions = [e.partition_key for e in events]
    assert len(partitions) == len(set(partitions))
    expected = set(plan.wanted_partitions(spec, done.targets))
    assert set(after) == expected == set(partitions)
    with duckdb.connect(str(lab / "data" / "simlab.duckdb"), read_only=True) as con:
        keys = [r[0] for r in con.execute("SELECT config_key FROM configurations WHERE "
                                          "experiment = ?", [spec.name]).fetchall()]
        stages = dict(con.execute("SELECT stage, count(*) FROM search WHERE experiment = ? "
                                  "GROUP BY stage", [spec.name]).fetchall())
        (recommended, procedure), = con.execute(
            "SELECT recommended, selection_procedure FROM answers WHERE experiment = ?",
            [spec.name]).fetchall()
    assert sorted(keys) == sorted(c.key for c in uninterrupted.configurations)
    # the search table: every configuration's first stage, and the clean-up's candidates again
    cleanup = done.progress.cleanup
    assert stages == {"first": len(keys), "second": len(cleanup.candidates)}
    assert procedure == "clean-up" and recommended == cleanup.recommended
    # the sweep closes with the search's best, the clean-up's candidates first, each with its
    # constraints' statuses (not every proposal's summary by key), and counts rounds as a search's
    closing = final.stdout.split(f"{spec.name}: the best ", 1)[1]
    listed = [("second" in row, row) for row in closing.splitlines() if row.startswith("│")]
    assert [second for second, _ in listed] == sorted((s for s, _ in listed), reverse=True)
    assert any(second and recommended in row for second, row in listed), final.stdout
    assert "of the sequential procedure" not in final.stdout


def test_the_search_answer_names_metrics_by_their_descriptions():
    from simlab_pipelines.search_tables import summarise_search

    data = _data()
    data["constraints"] = [{"metric": "mean_wait", "max": 10.0}]
    spec = parse_experiment(data)
    done = search_local.run_locally(spec)
    answer = summarise_search(spec, done.progress, done.observations).answer
    # the model's words for mean_wait, as a grid's answer says them (not "mean wait")
    assert "; mean wait before service " in answer and "; mean wait " not in answer.replace(
        "; mean wait before", ""), answer


def test_a_breaking_point_search_runs_and_is_tabled():
    """M/M/1 (service rate 1): mean wait lambda / (1 - lambda) passes 1 at lambda = 0.5."""
    from simlab_pipelines.search_tables import summarise_search

    spec = parse_experiment(_knee())
    done = search_local.run_locally(spec)
    plan_ = done.progress.threshold
    assert done.progress.done and plan_.result is not None
    xs = [c.varying["arrival_rate"] for c in done.replay.configurations]
    assert {0.1, 0.5, 0.9} <= set(xs) and len(xs) == len(set(xs))
    assert done.simulations == sum(t.replications for t in done.targets.values())
    tables = summarise_search(spec, done.progress, done.observations)
    point = tables.tables["breaking_point"].row(0, named=True)
    assert point["factor"] == "arrival_rate" and point["metric"] == "mean_wait"
    assert point["simulations"] == done.simulations
    low = point["ci_low"] if point["ci_low"] is not None else 0.1
    high = point["ci_high"] if point["ci_high"] is not None else 0.9
    assert low <= point["estimate"] <= high
    assert tables.tables["search"].height == len(xs) and "threshold_plot" in tables.charts
    assert "arrival rate" in tables.answer


def test_configurations_of_a_search_are_not_fixed_at_load():
    spec = parse_experiment(copy.deepcopy(_data()))
    assert spec.configurations_list() == [] and plan.is_sequential(spec)
    first = plan.configurations(spec)
    assert 1 <= len(first) <= 4 and all(c.params["arrival_rate"] == 1.5 for c in first)


def _knee() -> dict:
    """M/M/1 (service rate 1): mean wait lambda / (1 - lambda) passes 1 at lambda = 0.5."""
    return {"name": "knee", "model": "mmck", "seed": 5, "horizon": 300, "warmup": 30,
            "common_random_numbers": False, "parameters": {"servers": 1, "service_rate": 1.0},
            "search": {"method": "threshold", "factor": "arrival_rate", "min": 0.1, "max": 0.9,
                       "metric": "mean_wait", "limit": 1.0, "tolerance": 0.1,
                       "replications": 5, "max_replications": 20}}


def _cleaned_up() -> dict:
    data = _data()
    data["search"] = {**data["search"], "max_replications": 40}  # a second stage, and looks
    return data


@pytest.mark.parametrize("data", [_knee, _cleaned_up], ids=["threshold", "clean-up"])
def test_blocks_keep_each_rounds_keys_so_nothing_is_simulated_twice(data):
    """Replications in blocks of 3: every round's blocks start where the previous round's
    totals ended, and a later replay cuts the earlier rounds' replications as they were cut,
    so the partitions run are exactly the ones wanted at the end, each replication in one."""
    spec = parse_experiment({**data(), "replications_per_partition": 3})
    done = search_local.run_locally(spec)
    assert done.progress.done
    assert set(done.partitions) == set(plan.wanted_partitions(spec, done.targets))
    covered = [pair for key in done.partitions for pair in search_local._replications(key)]
    assert len(covered) == len(set(covered)) == done.simulations
    assert any(t.replications > spec.search_space.replications + 3
               for t in done.targets.values())  # rounds past the first stage were cut too


def test_a_breaking_point_search_has_independent_streams_unless_the_file_asks_for_crn():
    """Its interval's coverage argument needs independent replications at each value."""
    knee = {k: v for k, v in _knee().items() if k != "common_random_numbers"}
    assert parse_experiment(knee).common_random_numbers is False
    assert parse_experiment({**knee, "common_random_numbers": True}).common_random_numbers
    assert parse_experiment(_data()).common_random_numbers  # an optimiser's search: CRN
