"""The run's process pool: a worker that dies fails only the partition it was running; the others
land in the same batch, and the next batch gets a new pool."""

import os
import signal
import socket
import subprocess
import threading
import time

from simlab_pipelines import batch


def _task(tmp_path, replication: int, horizon: float) -> batch.Task:
    return batch.Task(
        experiment="pool", config_key="servers-2", replication=replication,
        partition_key=f"servers-2|{replication}", model="mmck",
        params={"servers": 2, "arrival_rate": 1.0, "service_rate": 1.0}, seed=3,
        horizon=horizon, warmup=0.0, common_random_numbers=True, series_interval=None,
        inputs_hash="h", code_version="test", run_id="run", results_uri=str(tmp_path),
        traceparent=None)


def test_a_killed_worker_fails_only_its_partition_and_the_next_batch_gets_a_new_pool(
        tmp_path, monkeypatch):
    batch.shutdown_pools()
    boards: list[batch.Board] = []

    class Recorded(batch.Board):
        def __init__(self, size: int) -> None:
            super().__init__(size)
            boards.append(self)

    monkeypatch.setattr(batch, "Board", Recorded)
    slow = [_task(tmp_path, r, 50_000.0) for r in range(4)]  # ~0.5 s each
    killed: list[int] = []

    def kill_a_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [pid for pid in boards[0].marks if pid > 0] if boards else []
            if running:  # a worker simulating a partition, as its board says
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    outcomes = list(batch.execute(slow, 2))
    killer.join()
    assert sorted(o.task.replication for o in outcomes) == [0, 1, 2, 3]  # each exactly once
    failed = [o for o in outcomes if o.error is not None]
    assert len(failed) == 1, [o.error for o in failed]
    assert failed[0].error == (f"WorkerDied: its pool worker (pid {killed[0]}) was killed by "
                               "signal 9 (SIGKILL) (out of memory?) while simulating this "
                               "partition")
    assert not batch._POOLS  # the broken pool was dropped, its replacement shut with the batch
    quick = [_task(tmp_path, r, 50.0) for r in range(4)]
    outcomes = list(batch.execute(quick, 2))
    assert sorted(o.task.replication for o in outcomes) == [0, 1, 2, 3]
    assert all(o.error is None for o in outcomes)
    batch.shutdown_pools()


def test_a_killed_run_process_board_is_removed_by_the_next_batch_of_this_host(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(batch.tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no live process has (a run process killed with its board)
    host = socket.gethostname()
    left = tmp_path / f"simlab-board-{dead.pid}_0f_{host}"
    elsewhere = tmp_path / f"simlab-board-{dead.pid}_0f_{host}-other"  # another host's
    alive = tmp_path / f"simlab-board-{os.getpid()}_0f_{host}"
    for path in (left, elsewhere, alive):
        path.write_bytes(b"\0" * 8)
    board = batch.Board(2)
    assert not left.exists() and elsewhere.exists() and alive.exists()
    board.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([elsewhere.name, alive.name])
