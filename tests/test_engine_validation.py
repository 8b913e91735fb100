"""The mmck model converges to queueing theory: simulated means fall inside confidence intervals.

Each replication's metric (a time or customer average over its observation window) is one
observation; replications are i.i.d., so a Student t interval over the replication means is valid.
Confidence: Bonferroni over every interval in this file, family-wise 99% — a correct engine fails
this file with probability at most 1% for a given set of seeds (the seeds are fixed, so the outcome
is reproducible). Metrics that are exactly zero by construction (the queue of a pure loss system,
blocking with infinite room) are checked exactly, not with intervals.

The case ``issue_example`` is the acceptance command of the engine issue; its replication 0 is
also run through ``simlab-engine`` to show the CLI prints that same record.

Cost: ~27 s of CPU, spread over a process pool of 2.
"""

import json
import math
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from scipy import stats

import engine
from engine.theory import expected_metrics

pytestmark = pytest.mark.slow

REPLICATIONS = 20
ISSUE_PARAMS = {"servers": 3, "capacity": 10, "arrival_rate": 0.2, "service_rate": 0.1}
ISSUE_COMMAND = ["run", "mmck", "--servers", "3", "--capacity", "10", "--arrival-rate", "0.2",
                 "--service-rate", "0.1", "--seed", "1", "--replication", "0", "--horizon",
                 "20000", "--warmup", "1000", "--json"]
FAMILY_CONFIDENCE = 0.99

# name: (params, seed, warm-up, horizon); horizons give ~25,000 customers per replication, warm-ups
# are many relaxation times of the queue (the system starts empty).
CASES = {
    "light": ({"servers": 2, "capacity": 5, "arrival_rate": 0.8, "service_rate": 1.0},
              11, 200.0, 30_000.0),          # rho = 0.4, blocking ~0.9%
    "heavy": ({"servers": 3, "capacity": 20, "arrival_rate": 2.7, "service_rate": 1.0},
              12, 500.0, 10_000.0),          # rho = 0.9, blocking ~1.6%
    "pure_loss": ({"servers": 5, "capacity": 5, "arrival_rate": 4.0, "service_rate": 1.0},
                  13, 50.0, 6_000.0),        # K = c: Erlang B ~0.20
    "infinite": ({"servers": 2, "capacity": None, "arrival_rate": 1.5, "service_rate": 1.0},
                 14, 300.0, 16_000.0),       # M/M/2, rho = 0.75
    # The issue's acceptance command (seed 1, horizon 20,000, warm-up 1,000), over replications.
    "issue_example": (ISSUE_PARAMS, 1, 1_000.0, 20_000.0),  # rho = 0.67, blocking ~0.9%
}

CHECKED = ("mean_number_in_system", "mean_queue_length", "mean_time_in_system", "mean_wait",
           "server_utilisation", "blocking_probability", "throughput")
# Zero in every replication by construction, so no interval: checked for equality instead.
EXACT_ZERO = {"pure_loss": ("mean_queue_length", "mean_wait"), "infinite": ("blocking_probability",)}

N_INTERVALS = sum(len(CHECKED) - len(EXACT_ZERO.get(name, ())) for name in CASES)
ALPHA = (1 - FAMILY_CONFIDENCE) / N_INTERVALS  # Bonferroni: per-interval false-alarm rate


@pytest.fixture(scope="module")
def replications() -> dict[str, list[dict[str, float]]]:
    """Every case's replications, run on 2 processes (spawned: no forked threads or locks)."""
    jobs = {(name, r): (params, seed, warmup, horizon)
            for name, (params, seed, warmup, horizon) in CASES.items()
            for r in range(REPLICATIONS)}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {key: pool.submit(engine.simulate, "mmck", params, replication=key[1],
                                    seed=seed, warmup=warmup, horizon=horizon)
                   for key, (params, seed, warmup, horizon) in jobs.items()}
        results = {key: future.result() for key, future in futures.items()}
    return {name: [results[name, r].metrics for r in range(REPLICATIONS)] for name in CASES}


def t_interval(values: list[float], alpha: float) -> tuple[float, float]:
    """The two-sided 1 - alpha Student t interval for the mean of i.i.d. ``values``."""
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


@pytest.mark.parametrize("case", list(CASES))
def test_simulated_means_agree_with_theory(case, replications):
    runs = replications[case]
    expected = expected_metrics(CASES[case][0])
    zero = EXACT_ZERO.get(case, ())
    misses = []
    for metric in CHECKED:
        values = [run[metric] for run in runs]
        if metric in zero:
            assert expected[metric] == 0.0
            assert all(abs(v) < 1e-9 for v in values), (metric, values)
            continue
        low, high = t_interval(values, ALPHA)
        assert high - low > 0, f"{metric}: no variation over replications"
        if not low <= expected[metric] <= high:
            misses.append(f"{metric}: theory {expected[metric]:.6g} outside [{low:.6g}, {high:.6g}]")
    assert not misses, f"{case} ({1 - ALPHA:.5f} t intervals): " + "; ".join(misses)


def test_intervals_are_tight_enough_to_mean_something(replications):
    # Power check: at the heavy load the intervals must be narrow enough that a 5% bias in L or W
    # (e.g. an estimator counting the wrong customers) would be caught.
    for metric in ("mean_number_in_system", "mean_time_in_system"):
        low, high = t_interval([run[metric] for run in replications["heavy"]], ALPHA)
        assert (high - low) / 2 < 0.05 * expected_metrics(CASES["heavy"][0])[metric]


def test_issue_command_prints_the_record_of_replication_0(replications):
    exe = Path(sys.executable).parent / "simlab-engine"
    done = subprocess.run([str(exe), *ISSUE_COMMAND], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # exactly one JSON document on stdout
    assert record["params"] == {**ISSUE_PARAMS, "wait_threshold": 1.0}  # defaults filled in
    assert record["seed"] == {"entropy": 1, "spawn_key": [0]}
    assert (record["horizon"], record["warmup"]) == (20_000.0, 1_000.0)
    # the replication whose metrics, with 19 others, agree with theory above
    assert record["metrics"] == replications["issue_example"][0]
