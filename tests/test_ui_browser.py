"""The Dagster UI as a user meets it: headless Chromium (Selenium) against a real `dagster dev`
(webserver and daemon) on a fresh instance, after a small sequential sweep.

It opens the asset catalog, the replications' partitions (complete: nothing "missing" once the
rounds are done), one partition's metadata (seed and trace id), the summary's metadata (the answer,
the tables) and its checks, the automation page, a rejected file's asset (a failed check) and the
runs list (the partition range shown, the traceparent tag hidden). Two partitions' files are
removed before the UI starts, so the daemon's `experiment_files` sensor runs them again, with two
pool workers: no process of that run may outlive it. Screenshots go to tests/artifacts/ui/.

Skipped only where Chromium and its driver are not installed (scripts/install-test-deps installs
Debian's `chromium` and `chromium-driver`, as root, on the Makefile's test path).
"""

import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from lab import dagster_server, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="Chromium or its driver is not installed (scripts/install-test-deps installs "
               "Debian's chromium and chromium-driver when run as root)"),
    pytest.mark.slow,
    # a sweep, `dagster dev`, a daemon run and eight pages: ~2 min alone, 7 on a crowded machine
    pytest.mark.timeout(900),
]

BIN = Path(sys.executable).parent
ACTIVE = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
ARTIFACTS = Path(__file__).parent / "artifacts" / "ui"
EXPERIMENT = """\
name: ui_sequential
question: Does a second server shorten the queue?
model: mmck
seed: 3
replications: 4
horizon: 60
warmup: 5
parameters: {arrival_rate: 0.8, service_rate: 1.0, capacity: 10}
factors:
  servers: [1, 2]
baseline: {servers: 1}
objective: {metric: mean_number_in_system, direction: minimize}
precision: {metric: mean_number_in_system, relative_half_width: 0.01, max_replications: 8}
"""


@pytest.fixture
def swept(lab, monkeypatch):
    """A sequential experiment swept to the end (two rounds), a rejected file beside it, and two
    partitions whose files are gone (the daemon's sensor runs them again)."""
    from simlab_pipelines.cli import main

    monkeypatch.setenv("SIMLAB_WORKERS", "2")
    experiments = lab / "experiments"
    (experiments / "tiny_mmck.yaml").unlink()
    path = experiments / "ui_sequential.yaml"
    path.write_text(EXPERIMENT)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["sweep", str(path)], catch_exceptions=False)
    print(f"sweep: {time.monotonic() - started:.0f} s")
    assert result.exit_code == 0, result.output
    assert "rounds of the sequential procedure" in result.output
    (experiments / "broken.yaml").write_text("name: broken\nmodel: mmck\nbogus: 1\n")
    for replication in (0, 1):
        (lab / "data" / "results" / "ui_sequential" / "servers-2" / f"{replication}.parquet").unlink()
    return lab


@pytest.fixture
def dagster_dev(swept):
    """`dagster dev` (webserver, daemon, code server) on the lab's instance: its port."""
    port, started = free_port(), time.monotonic()
    with dagster_server([str(BIN / "dagster"), "dev", "-m", "simlab_pipelines.definitions",
                         "-h", "127.0.0.1", "-p", str(port)], port,
                        swept / "dagster_dev.log", timeout=180) as process:
        # Dagster's newsletter dialog on a new instance: seen, as a user's first "Skip" records
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql", data=b'{"query": "mutation { setNuxSeen }"}',
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()
        print(f"dagster dev up: {time.monotonic() - started:.0f} s")
        yield port, process


def _wait(predicate: Callable[[], object], seconds: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"waited {seconds:.0f} s for {what}")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="simlab-chromium-")
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                     "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm
                     "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """The UI at one address: its visible text, waited for, and a screenshot of it."""

    def __init__(self, driver, port: int):
        self.driver, self.base = driver, f"http://127.0.0.1:{port}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def open(self, path: str, name: str, *expected: str, seconds: float = 90) -> str:
        started = time.monotonic()
        self.driver.get(self.base + path)

        def shown() -> str | None:
            text = self.driver.find_element("tag name", "body").text
            return text if all(e in text for e in expected) else None

        try:
            text = _wait(shown, seconds, f"{path} to show {expected}")
        finally:
            self.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
            print(f"{name}: {time.monotonic() - started:.1f} s")
        return text


def _run_processes(instance, run_id: str) -> dict[int, str]:
    """The processes of a run: the ones that wrote its events (each event records its pid) or
    whose command line names it, and their descendants."""
    writers = {record.dagster_event.pid for record in instance.all_logs(run_id)
               if record.dagster_event is not None and record.dagster_event.pid}
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = {pid for pid, cmd in commands.items() if run_id.encode() in cmd or pid in writers}
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return {pid: commands[pid].decode(errors="replace")[:120] for pid in found}
        found |= more


def _alive(pid: int, command: str) -> bool:
    try:
        now = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return now.decode(errors="replace")[:120] == command  # not a reused pid


def test_the_ui_as_a_user_meets_it(dagster_dev, browser, lab):
    import dagster as dg

    from simlab_pipelines.assets import summary_key

    port, _ = dagster_dev
    page = Page(browser, port)
    db = lab / "data" / "simlab.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        (answer,) = con.execute("SELECT answer FROM answers").fetchone()
        wanted = con.execute("SELECT sum(replications) FROM precision").fetchone()[0]
        (trace_id,) = con.execute("SELECT trace_id FROM replications WHERE config_key = "
                                  "'servers-1' AND replication = 3").fetchone()
    assert wanted > 2 * 4, "the rounds must have added replications"

    # the daemon's sensor runs the two partitions whose files are gone, with two workers, and the
    # automation rebuilds the summary: every process of those runs (the run worker, its pool) must
    # be gone once they have ended
    instance = dg.DagsterInstance.get()
    processes: dict[int, str] = {}

    def follow() -> list:
        active = instance.get_runs(dg.RunsFilter(
            statuses=[dg.DagsterRunStatus[status] for status in ACTIVE]))
        for run in active:
            processes.update(_run_processes(instance, run.run_id))
        return active

    def sensor_run():
        follow()
        return next(iter(instance.get_runs(dg.RunsFilter(
            job_name="ui_sequential_replications",
            tags={"simlab/partitions": "servers-2|0..1"}))), None)

    # Polled often: a run of two partitions lives about a second.
    run = _wait(sensor_run, 150, "the sensor's run of the lost partitions", interval=0.02)
    _wait(lambda: not follow() and instance.get_run_by_id(run.run_id).is_finished, 180,
          f"run {run.run_id} to end", interval=0.02)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    ended = instance.get_run_record_by_id(run.run_id).end_time
    _wait(lambda: not follow() and instance.get_latest_materialization_event(
        summary_key("ui_sequential")).timestamp > ended, 180, "the automation's summary")
    assert processes, "no process of a run was ever seen"
    left = lambda: {p: c for p, c in processes.items() if _alive(p, c)}  # noqa: E731
    deadline = time.monotonic() + 20
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left(), f"processes outlived their runs: {left()}"
    print(f"the runs and their {len(processes)} processes ended")

    # the catalog: the experiment's assets and the rejected file
    text = page.open("/assets", "catalog", "ui_sequential", "rejected_experiments")

    # partitions: exactly those the rounds wanted, all materialised, none "missing"
    text = page.open("/assets/ui_sequential/replications?view=partitions", "partitions",
                     f"Materialized ({wanted})", "Missing (0)")
    assert f"{wanted} Partitions" in text

    # one partition: its seed and its trace id
    text = page.open("/assets/ui_sequential/replications?view=partitions&partition=servers-1%7C3",
                     "partition", "seed_entropy", trace_id)
    assert "spawn_key" in text and "mean_number_in_system" in text

    # automation: the sensors and the automation condition
    page.open("/automation", "automation", "experiment_files", "sequential_replications",
              "summary_automation")

    # the rejected file: its check failed (red), with the reasons
    text = page.open("/assets/rejected_experiments/broken?view=checks", "rejected",
                     "valid_experiment_file", "Failed", "bogus")

    # runs: the partition range in the row, the traceparent hidden
    text = page.open("/runs", "runs", "simlab/partitions: servers-2|0..1")
    assert "traceparent" not in text

    # the summary: the answer first, the intervals as a table, the HTML report linked
    text = page.open("/assets/ui_sequential/summary", "summary", answer[:60], "relative_half_width")
    assert "ui_sequential.html" in text and "servers-2" in text
    text = page.open("/assets/ui_sequential/summary?view=checks", "summary_checks",
                     "no_missing_replications", "precision_reached", "Succeeded")
