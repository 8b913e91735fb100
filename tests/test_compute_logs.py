"""The instance's compute log manager (simlab_pipelines.instance.ThreadedComputeLogManager).

A run process like the one `dagster api execute_run` starts (a fresh interpreter that executes a
run in-process and exits) runs twice on a temporary DAGSTER_HOME with the project's dagster.yaml:
what the step prints, and what a subprocess and a forkserver pool worker started by the step write
to file descriptors 1 and 2, are in the run's stdout/stderr files as the instance's compute log
manager returns them (the UI's stdout/stderr), and are copied once to the process's own stdout and
stderr. Capturing leaves no thread or child process behind, and a pool started while the
descriptors pointed at the log files (simlab keeps its pools across runs) does not stop the
process from exiting.
"""

import io
import json
import subprocess
import sys
import textwrap

import dagster as dg

from simlab_pipelines.instance import ThreadedComputeLogManager

JOB = textwrap.dedent('''
    """A job whose step writes through Python, a subprocess and a forkserver pool worker."""
    import multiprocessing
    import subprocess
    import sys

    import dagster as dg

    POOLS = []  # kept across runs, as simlab keeps its pools


    def worker_writes(tag):
        print(f"worker-out-{tag}", flush=True)
        return tag


    @dg.op(config_schema={"tag": str, "pool": bool})
    def speak(context):
        tag = context.op_config["tag"]
        print(f"print-out-{tag}")
        sys.stderr.write(f"python-err-{tag}\\n")
        subprocess.run(["sh", "-c", f"echo child-out-{tag}; echo child-err-{tag} >&2"], check=True)
        if context.op_config["pool"]:
            POOLS.append(multiprocessing.get_context("forkserver").Pool(1))
            assert POOLS[-1].apply(worker_writes, (tag,)) == tag


    @dg.job(executor_def=dg.in_process_executor)
    def speaking():
        speak()
''')

# The run process: one run without a pool (threads and children compared around it), then one
# that starts a pool it never closes; the run ids go to a file, not to the captured streams.
RUN_PROCESS = textwrap.dedent('''
    import json, os, sys, threading
    import dagster as dg
    from speaking_job import speaking

    def children():
        own = str(os.getpid())
        found = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == own:
                        found.add(int(pid))
            except OSError:
                pass
        return found

    def run(tag, pool):
        config = {"ops": {"speak": {"config": {"tag": tag, "pool": pool}}}}
        with dg.DagsterInstance.get() as instance:
            assert type(instance.compute_log_manager).__name__ == "ThreadedComputeLogManager"
            result = dg.execute_job(dg.reconstructable(speaking), instance=instance,
                                    run_config=config)
            assert result.success
            return result.run_id

    threads, kids = sorted(t.name for t in threading.enumerate()), children()
    ids = [run("first", False)]
    after = {"threads": sorted(t.name for t in threading.enumerate()) == threads,
             "children": sorted(children() - kids)}
    ids.append(run("second", True))
    with open(sys.argv[1], "w") as f:
        json.dump({"run_ids": ids, **after}, f)
''')


def _log_data(instance: dg.DagsterInstance, run_id: str):
    manager = instance.compute_log_manager
    [key] = manager.get_log_keys_for_log_key_prefix(
        [run_id, "compute_logs"], dg._core.storage.compute_log_manager.ComputeIOType.STDOUT)
    assert manager.is_capture_complete(key)
    data = manager.get_log_data(key)
    return data.stdout.decode(), data.stderr.decode()


def test_a_run_process_captures_mirrors_and_exits(lab):
    (lab / "speaking_job.py").write_text(JOB)
    report = lab / "report.json"
    done = subprocess.run([sys.executable, "-c", RUN_PROCESS, str(report)], cwd=lab,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(report.read_text())
    assert found["threads"] and found["children"] == []  # no mirror thread, no tail process

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.compute_log_manager, ThreadedComputeLogManager)
        for run_id, tag in zip(found["run_ids"], ["first", "second"], strict=True):
            stdout, stderr = _log_data(instance, run_id)
            for line in (f"print-out-{tag}", f"child-out-{tag}"):
                assert line in stdout.splitlines()
                assert done.stdout.splitlines().count(line) == 1  # mirrored once
            for line in (f"python-err-{tag}", f"child-err-{tag}"):
                assert line in stderr.splitlines()
                assert done.stderr.splitlines().count(line) == 1
            assert "STEP_SUCCESS" in stderr  # Dagster's own console log of the step
            assert f"err-{tag}" not in stdout and f"out-{tag}" not in stderr
        # The pool worker inherited the log file as its stdout: its line is in the file.
        assert "worker-out-second" in _log_data(instance, found["run_ids"][1])[0]
    # The captures began in the manager's directory: $DAGSTER_HOME/storage, Dagster's default.
    assert (lab / "dagster_home" / "storage" / found["run_ids"][0] / "compute_logs").is_dir()


def test_streams_without_a_file_descriptor_are_left_alone(tmp_path, monkeypatch):
    # A test runner's stand-in streams: nothing is redirected, the files exist and are empty,
    # and the capture still completes.
    manager = ThreadedComputeLogManager(str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    key = ["run", "compute_logs", "abcdefgh"]
    with manager.capture_logs(key):
        print("to the stand-in")
    assert out.getvalue() == "to the stand-in\n"
    data = manager.get_log_data(key)
    assert (data.stdout, data.stderr) == (b"", b"")
    assert manager.is_capture_complete(key)


def test_relative_base_dir_is_under_dagster_home(lab):
    manager = ThreadedComputeLogManager("storage")
    path = manager.get_captured_local_path(["r", "compute_logs", "k"], "out")
    assert path == str((lab / "dagster_home" / "storage" / "r" / "compute_logs" / "k.out").resolve())


def test_overlapping_captures_end_in_any_order(tmp_path, monkeypatch):
    # Runs in threads of one process (simlab sweep) overlap: the older capture ends first. The
    # output goes to the newest open capture's file, then back to the original descriptor
    # (Dagster's redirect would leave it pointing at the first run's file).
    manager = ThreadedComputeLogManager(str(tmp_path / "logs"))
    original = {name: open(tmp_path / name, "w", buffering=1)  # noqa: SIM115
                for name in ("stdout", "stderr")}
    monkeypatch.setattr(sys, "stdout", original["stdout"])
    monkeypatch.setattr(sys, "stderr", original["stderr"])
    first, second = ["r1", "compute_logs", "aaaaaaaa"], ["r2", "compute_logs", "bbbbbbbb"]
    a, b = manager.capture_logs(first), manager.capture_logs(second)
    a.__enter__()
    print("during first")
    b.__enter__()
    print("during both")
    a.__exit__(None, None, None)
    print("during second")
    sys.stderr.write("error during second\n")
    b.__exit__(None, None, None)
    print("after both")
    for stream in original.values():
        stream.close()
    assert manager.get_log_data(first).stdout == b"during first\n"
    assert manager.get_log_data(second).stdout == b"during both\nduring second\n"
    assert manager.get_log_data(second).stderr == b"error during second\n"
    # Everything reached the original descriptors once (two mirrors: in either order), and
    # they are the originals again.
    mirrored = (tmp_path / "stdout").read_text().splitlines()
    assert sorted(mirrored) == sorted(["during first", "during both", "during second",
                                       "after both"])
    assert mirrored[-1] == "after both"
    assert (tmp_path / "stderr").read_text() == "error during second\n"
    assert manager.is_capture_complete(first) and manager.is_capture_complete(second)
