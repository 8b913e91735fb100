"""Reproducible and comparable randomness: bit-identical reruns across processes, common random
numbers across configurations, distinct replications, and stream ids that do not depend on
Python's salted hash()."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.randomness import Stream

VENV_BIN = Path(sys.executable).parent
MMCK = {"servers": 2, "capacity": 8, "arrival_rate": 1.7, "service_rate": 1.0}


def _env(hash_seed: str) -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": hash_seed}


def _cli_json(args: list[str], hash_seed: str) -> dict:
    done = subprocess.run([str(VENV_BIN / "simlab-engine"), *args, "--json"], capture_output=True,
                          text=True, env=_env(hash_seed), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("model", "args", "params"), [
    ("mmck", ["--servers", "2", "--capacity", "8", "--arrival-rate", "1.7", "--service-rate", "1"],
     MMCK),
    ("restaurant", ["--tables", "6", "--waiters", "2"], {"tables": 6, "waiters": 2}),
])
def test_same_inputs_bit_identical_in_separate_processes(model, args, params):
    argv = ["run", model, *args, "--seed", "987654321", "--replication", "3", "--horizon", "300",
            "--warmup", "30"]
    first, second = _cli_json(argv, "1"), _cli_json(argv, "2")
    here = engine.simulate(model, params, replication=3, seed=987654321, horizon=300, warmup=30)
    # JSON floats round-trip exactly (repr), so == is bit-for-bit equality.
    assert first["metrics"] == second["metrics"] == here.metrics
    assert first["events"] == second["events"] == here.events
    assert first["seed"] == second["seed"] == {"entropy": 987654321, "spawn_key": [3]}
    first.pop("wall_seconds"), second.pop("wall_seconds")  # the only field allowed to differ
    assert first == second


def test_stream_ids_are_stable_across_processes():
    code = ("import json; from engine.randomness import stream_id, config_hash; "
            "print(json.dumps({'ids': [stream_id(n) for n in ('arrivals', 'service', 'eat')], "
            "'config': config_hash('mmck', {'servers': 2, 'capacity': None}), "
            "'salted': hash('arrivals')}))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      env=_env(seed), timeout=60, check=True).stdout)
            for seed in ("1", "2")]
    assert runs[0]["salted"] != runs[1]["salted"]  # the salt really differed between the two
    from engine.randomness import config_hash, stream_id
    assert runs[0]["ids"] == runs[1]["ids"] == [stream_id(n) for n in ("arrivals", "service", "eat")]
    assert runs[0]["config"] == runs[1]["config"] == config_hash("mmck", {"servers": 2,
                                                                          "capacity": None})
    assert len(set(runs[0]["ids"])) == 3


@pytest.fixture
def draws(monkeypatch) -> list[tuple[str, str, float]]:
    """Every variate drawn, in order, as (stream name, kind, value); the engine is not changed."""
    record: list[tuple[str, str, float]] = []
    for kind in ("exponential", "uniform", "gamma"):
        original = getattr(Stream, kind)

        def wrapped(self, *args, _original=original, _kind=kind):
            value = _original(self, *args)
            record.append((self.name, _kind, value))
            return value

        monkeypatch.setattr(Stream, kind, wrapped)
    return record


def _draws_of(draws: list, model: str, params: dict, **kwargs) -> tuple[list, dict]:
    draws.clear()
    result = engine.simulate(model, params, seed=2024, horizon=500, warmup=50, **kwargs)
    return list(draws), result.metrics


@pytest.mark.parametrize(("model", "config_a", "config_b"), [
    ("mmck", {**MMCK, "servers": 1, "capacity": 3}, {**MMCK, "servers": 2, "capacity": 3}),
    ("mmck", {**MMCK, "servers": 2, "capacity": None}, {**MMCK, "servers": 3, "capacity": None}),
    ("restaurant", {"tables": 6, "waiters": 2}, {"tables": 9, "waiters": 3}),
])
def test_common_random_numbers_across_configurations(draws, model, config_a, config_b):
    seen_a, metrics_a = _draws_of(draws, model, config_a, replication=5)
    seen_b, metrics_b = _draws_of(draws, model, config_b, replication=5)
    assert metrics_a != metrics_b  # the configurations really behave differently ...
    assert {name for name, _, _ in seen_a} >= {"arrivals"}
    assert len(seen_a) > 100
    assert seen_a == seen_b  # ... yet see the same arrivals and demands, in the same order


def test_mmck_arrival_times_and_demands_match_across_servers(draws):
    seen = {}
    for servers in (1, 2):
        recorded, _ = _draws_of(draws, "mmck", {**MMCK, "servers": servers, "capacity": 4},
                                replication=0)
        times, t = [], 0.0
        for name, _, value in recorded:
            if name == "arrivals":
                t += value
                times.append(t)
        demands = [value for name, _, value in recorded if name == "service"]
        seen[servers] = (times, demands)
    assert seen[1] == seen[2]
    times, demands = seen[1]
    assert len(demands) >= len(times) - 1  # a demand for every arrival, blocked or not


def test_replications_differ(draws):
    seen_0, metrics_0 = _draws_of(draws, "mmck", MMCK, replication=0)
    seen_1, metrics_1 = _draws_of(draws, "mmck", MMCK, replication=1)
    arrivals_0 = [v for name, _, v in seen_0 if name == "arrivals"]
    arrivals_1 = [v for name, _, v in seen_1 if name == "arrivals"]
    assert not set(arrivals_0) & set(arrivals_1)
    assert metrics_0 != metrics_1


def test_without_crn_configurations_get_their_own_streams(draws):
    a = {**MMCK, "servers": 1}
    b = {**MMCK, "servers": 2}
    seen_a, _ = _draws_of(draws, "mmck", a, replication=0, common_random_numbers=False)
    seen_b, _ = _draws_of(draws, "mmck", b, replication=0, common_random_numbers=False)
    for stream in ("arrivals", "service"):
        values_a = {v for name, _, v in seen_a if name == stream}
        values_b = {v for name, _, v in seen_b if name == stream}
        assert values_a and values_b and not values_a & values_b, stream
    # Still reproducible, and the key says why the streams differ.
    again, _ = _draws_of(draws, "mmck", a, replication=0, common_random_numbers=False)
    assert again == seen_a
    key_a = engine.simulate("mmck", a, replication=0, seed=1, horizon=1, warmup=0,
                            common_random_numbers=False).seed.spawn_key
    key_b = engine.simulate("mmck", b, replication=0, seed=1, horizon=1, warmup=0,
                            common_random_numbers=False).seed.spawn_key
    assert key_a[0] == key_b[0] == 0 and key_a != key_b


def test_order_and_series_recording_do_not_change_results():
    def run(params, **kwargs):
        return engine.simulate("mmck", params, replication=2, seed=7, horizon=400, warmup=40,
                               **kwargs).metrics
    first = run(MMCK)
    run({**MMCK, "servers": 3})  # something else in between, in the same process
    assert run(MMCK) == first
    assert run(MMCK, series_interval=25.0) == first


@pytest.mark.parametrize("crn", [True, False])
def test_streams_are_exactly_the_design_seed_sequences(draws, crn):
    # DESIGN.md, "Randomness": stream `name` of replication r is
    # SeedSequence(entropy=seed, spawn_key=(r, [config_hash,] stream_id(name))); rebuilt here with
    # numpy alone, the first variates of each stream must be the ones the model drew.
    import numpy as np

    from engine.randomness import config_hash, stream_id

    params = engine.get_model("mmck").validate(MMCK)
    seed, replication = 2**70 + 12345, 7
    engine.simulate("mmck", params, replication=replication, seed=seed, horizon=500, warmup=0,
                    common_random_numbers=crn)
    prefix = (replication,) if crn else (replication, config_hash("mmck", params))
    means = {"arrivals": 1 / params["arrival_rate"], "service": 1 / params["service_rate"]}
    for name, mean in means.items():
        seen = [value for stream, _, value in draws if stream == name][:600]  # past one block
        sequence = np.random.SeedSequence(entropy=seed, spawn_key=(*prefix, stream_id(name)))
        generator = np.random.Generator(np.random.PCG64(sequence))
        expected = [mean * float(v) for v in generator.standard_exponential(len(seen))]
        assert len(seen) == 600 and seen == expected, name


def test_restaurant_streams_are_the_design_seed_sequences(draws):
    import numpy as np

    from engine.randomness import stream_id

    params = engine.get_model("restaurant").validate({})
    engine.simulate("restaurant", params, replication=4, seed=99, horizon=3000, warmup=0)

    def generator(name):
        sequence = np.random.SeedSequence(entropy=99, spawn_key=(4, stream_id(name)))
        return np.random.Generator(np.random.PCG64(sequence))

    def gamma(mean):
        def draw(g, n):
            # A stream buffers one block of exponentials when it is created, gamma streams too,
            # so their gamma variates start after that block. Changing this changes results:
            # bump engine/version.py if you do.
            g.standard_exponential(512)
            return [g.gamma(4.0, mean / 4.0) for _ in range(n)]
        return draw

    for name, kind, draw in [
        ("arrivals", "exponential",
         lambda g, n: (1.0 / params["arrival_rate"]) * g.standard_exponential(n)),
        ("patience", "exponential", lambda g, n: params["patience"] * g.standard_exponential(n)),
        ("cook", "gamma", gamma(params["cook_time"])),
        ("eat", "gamma", gamma(params["eat_time"])),
    ]:
        seen = [value for stream, k, value in draws if stream == name and k == kind]
        assert len(seen) > 512, name  # more than one buffered block
        assert seen == [float(v) for v in draw(generator(name), len(seen))], name
