"""The run's process pool: a worker that dies breaks only the batch it was in."""

import os
import signal
import threading
import time

import pytest

from simlab_pipelines import batch


def _task(tmp_path, replication: int, horizon: float) -> batch.Task:
    return batch.Task(
        experiment="pool", config_key="servers-2", replication=replication,
        partition_key=f"servers-2|{replication}", model="mmck",
        params={"servers": 2, "arrival_rate": 1.0, "service_rate": 1.0}, seed=3,
        horizon=horizon, warmup=0.0, common_random_numbers=True, series_interval=None,
        inputs_hash="h", code_version="test", run_id="run", results_uri=str(tmp_path),
        traceparent=None)


def test_a_dead_worker_fails_the_batch_and_the_next_batch_gets_a_new_pool(tmp_path):
    batch.shutdown_pools()
    slow = [_task(tmp_path, r, 200_000.0) for r in range(4)]  # seconds each

    def kill_a_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pool = next((p for (n, _), p in batch._POOLS.items() if n == 2), None)
            processes = list(getattr(pool, "_processes", {}) or {})
            if processes:
                time.sleep(0.5)  # let them start simulating
                os.kill(processes[0], signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    with pytest.raises(batch.WorkerDied, match="a pool worker died"):
        list(batch.execute(slow, 2))
    killer.join()
    assert not batch._POOLS
    quick = [_task(tmp_path, r, 50.0) for r in range(4)]
    outcomes = list(batch.execute(quick, 2))
    assert sorted(o.task.replication for o in outcomes) == [0, 1, 2, 3]
    assert all(o.error is None for o in outcomes)
    batch.shutdown_pools()
