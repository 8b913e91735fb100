"""The image, built from the Dockerfile (scripts/build-image: podman, a base made from Debian's
packages) and run in real containers the way the Helm chart runs it.

Every container gets the chart's container security settings (its user and group, no
capabilities, no privilege escalation, a read-only root filesystem if the chart asks for one) and
its mounts (the experiments read-only, the data volume writable), read from helm/simlab/values.yaml.
Checked: the user and what it may write; `simlab-engine run --json` prints the contract's record,
bit-identical to the host's; `simlab sweep` in the container gives the DuckDB rows of the same
sweep on the host; the code server (the chart's command, `dagster api grpc`) answers the chart's
readiness probe run in its container and reports the image; a run created on the host's
PostgreSQL instance through that code server is executed by `dagster api execute_run` with
exactly the arguments dagster-k8s gives a run pod, with a two-worker pool: it succeeds, its
spans reach an OTLP receiver on the host, and the container exits by itself.

The first build takes minutes (network); later runs reuse the image while the Dockerfile and the
build context are unchanged. Skipped only where podman cannot be installed (not root, no
apt-get): scripts/build-image exits 3 and says why.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
import yaml
from otlp_receiver import otlp_receiver
from test_dockerfile import _entrypoint, _free_port
from test_postgres_instance import _postgres_home, pg_database  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
PODMAN = ROOT / "scripts" / "podman"
FIXTURES = ROOT / "tests" / "fixtures"
VALUES = yaml.safe_load((ROOT / "helm" / "simlab" / "values.yaml").read_text())
DAGSTER = VALUES["dagster"]
LAUNCHER = DAGSTER["runLauncher"]["config"]["k8sRunLauncher"]
(DEPLOYMENT,) = DAGSTER["dagster-user-deployments"]["deployments"]
EXPERIMENTS_PATH = VALUES["experiments"]["mountPath"]
DATA_PATH = VALUES["storage"]["mountPath"]
RUN_POD_TIMEOUT = 300  # seconds for the whole run; a pool that outlives its run hangs past it
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image() -> str:
    """The image's reference (built, or found cached, by scripts/build-image)."""
    result = subprocess.run([str(ROOT / "scripts" / "build-image")], capture_output=True,
                            text=True, timeout=3600)
    if result.returncode == 3:
        pytest.skip(f"podman cannot be used here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, f"scripts/build-image failed:\n{result.stderr[-4000:]}"
    return result.stdout.split()[-1]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(PODMAN), *args], capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args[:3])}...: {result.stderr[-3000:]}"
    return result


def chart_flags(security: dict, mounts: list[dict], volumes: dict[str, Path]) -> list[str]:
    """`podman run` options for a container with the chart's ``securityContext`` and
    ``volumeMounts`` (each volume name bound to a host directory of ``volumes``)."""
    uid = security["runAsUser"]
    flags = ["--user", f"{uid}:{security.get('runAsGroup', uid)}"]
    if security.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # no tmpfs the pod would not have
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for capability in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", capability]
    for mount in mounts:
        mode = "ro" if mount.get("readOnly") else "rw"
        flags += ["--volume", f"{volumes[mount['name']]}:{mount['mountPath']}:{mode}"]
    return flags


def chart_volumes(tmp_path: Path, experiments: list[Path]) -> dict[str, Path]:
    """Host directories for the chart's two volumes: the experiments ConfigMap (files readable
    by all, like a ConfigMap's) and the data volume (owned by the pod's user, as fsGroup gives)."""
    config_map, data = tmp_path / "configmap", tmp_path / "volume"
    config_map.mkdir(parents=True)
    data.mkdir()
    for path in experiments:
        shutil.copy(path, config_map / path.name)
        (config_map / path.name).chmod(0o644)
    config_map.chmod(0o755)
    uid = LAUNCHER["securityContext"]["runAsUser"]
    os.chown(data, uid, LAUNCHER["securityContext"].get("runAsGroup", uid))
    return {"simlab-experiments": config_map, "simlab-data": data}


def run_pod_flags(tmp_path: Path, experiments: list[Path]) -> tuple[list[str], dict[str, Path]]:
    volumes = chart_volumes(tmp_path, experiments)
    flags = chart_flags(LAUNCHER["securityContext"], LAUNCHER["volumeMounts"], volumes)
    env = ["--env", f"SIMLAB_EXPERIMENTS_DIR={EXPERIMENTS_PATH}",
           "--env", f"SIMLAB_DATA_DIR={DATA_PATH}"]
    return [*flags, *env], volumes


TINY = FIXTURES / "experiments" / "tiny_mmck.yaml"


def test_runs_as_the_charts_user_and_writes_only_where_it_should(image, tmp_path):
    flags, volumes = run_pod_flags(tmp_path, [TINY])
    probe = (
        'id -u; id -g; for p in "$SIMLAB_DATA_DIR" "$SIMLAB_EXPERIMENTS_DIR" "$DAGSTER_HOME" '
        '"$MPLCONFIGDIR" /opt/simlab/.venv /opt/simlab/.venv/lib /; do '
        'if touch "$p/.probe" 2>/dev/null; then echo "rw $p"; else echo "ro $p"; fi; done'
    )
    out = podman("run", "--rm", *flags, image, "sh", "-c", probe).stdout.splitlines()
    security = LAUNCHER["securityContext"]
    assert out[:2] == [str(security["runAsUser"]), str(security["runAsGroup"])]
    access = dict(reversed(line.split(" ", 1)) for line in out[2:])
    # The mounts as the chart makes them.
    assert access[DATA_PATH] == "rw" and access[EXPERIMENTS_PATH] == "ro"
    # The code cannot be changed by the process running it.
    assert access["/opt/simlab/.venv"] == access["/opt/simlab/.venv/lib"] == "ro"
    if security.get("readOnlyRootFilesystem"):
        assert access["/"] == "ro"
    else:  # the image's own writable directories (DAGSTER_HOME, matplotlib's cache)
        assert access["/opt/dagster/dagster_home"] == access["/opt/simlab/.cache/matplotlib"] == "rw"
        assert access["/"] == "ro", "the user must not own the root directory"
    written = volumes["simlab-data"] / ".probe"
    assert (written.stat().st_uid, written.stat().st_gid) == (10001, 10001)


def test_engine_cli_prints_the_contracts_record_identical_to_the_hosts(image):
    import engine

    args = ["--servers", "2", "--arrival-rate", "1.5", "--service-rate", "1", "--seed", "11",
            "--replication", "3", "--horizon", "500", "--warmup", "50", "--json"]
    result = podman("run", "--rm", image, "simlab-engine", "run", "mmck", *args)
    (line,) = result.stdout.splitlines()  # exactly one JSON object
    record = json.loads(line)
    assert set(record) == {"model", "params", "replication", "seed", "horizon", "warmup",
                           "metrics", "events", "wall_seconds", "engine_version"}
    host = engine.simulate("mmck", {"servers": 2, "arrival_rate": 1.5, "service_rate": 1.0},
                           replication=3, seed=11, horizon=500, warmup=50).to_dict()
    assert record["seed"] == json.loads(json.dumps(host["seed"]))
    assert (record["events"], record["engine_version"]) == (host["events"], host["engine_version"])
    assert {k: v.hex() for k, v in record["metrics"].items()} == {
        k: float(v).hex() for k, v in host["metrics"].items()}


def _rows(database: Path) -> dict[str, list[tuple]]:
    """The sweep's results in a DuckDB file, floats as hex (bit-exact, NaN-safe)."""
    def exact(row: tuple) -> tuple:
        return tuple(v.hex() if isinstance(v, float) else v for v in row)

    with duckdb.connect(str(database), read_only=True) as connection:
        return {
            "observations": [exact(r) for r in connection.execute(
                "SELECT experiment, config_key, replication, metric, value FROM observations "
                "ORDER BY ALL").fetchall()],
            "replications": [exact(r) for r in connection.execute(
                "SELECT experiment, config_key, replication, model, params, seed_entropy, "
                "spawn_key, horizon, warmup, engine_version FROM replications "
                "ORDER BY ALL").fetchall()],
        }


def test_a_sweep_in_the_container_gives_the_rows_of_the_same_sweep_on_the_host(image, lab):
    # The container's DAGSTER_HOME and SIMLAB_DATA_DIR both live on the mounted data volume.
    flags, volumes = run_pod_flags(lab / "container", [TINY])
    volume = volumes["simlab-data"]
    (volume / "dagster_home").mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", volume / "dagster_home" / "dagster.yaml")
    (volume / "data").mkdir()
    for path in (volume / "dagster_home", volume / "data"):
        os.chown(path, 10001, 10001)
    container = subprocess.Popen(
        [str(PODMAN), "run", "--rm", *flags,
         "--env", f"DAGSTER_HOME={DATA_PATH}/dagster_home",
         "--env", f"SIMLAB_DATA_DIR={DATA_PATH}/data",
         image, "simlab", "sweep", f"{EXPERIMENTS_PATH}/{TINY.name}", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The same sweep on the host, meanwhile (the lab fixture set its environment).
    simlab = Path(sys.executable).parent / "simlab"
    host = subprocess.run([str(simlab), "sweep", str(lab / "experiments" / TINY.name),
                           "--workers", "1"], capture_output=True, text=True, timeout=300)
    out, _ = container.communicate(timeout=300)
    assert container.returncode == 0, f"sweep in the container failed:\n{out[-3000:]}"
    assert host.returncode == 0, f"sweep on the host failed:\n{host.stderr[-3000:]}"
    inside = _rows(volume / "data" / "simlab.duckdb")
    outside = _rows(lab / "data" / "simlab.duckdb")
    assert len(inside["replications"]) == 12  # 2 configurations x 6 replications
    assert inside == outside


def _wait_healthy(name: str, port: int, timeout: float = 180) -> None:
    """The chart's readiness probe (`dagster api grpc-health-check`), run in the container as
    the kubelet runs an exec probe, until it passes."""
    deadline = time.monotonic() + timeout
    while True:
        state = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() != "true":
            logs = podman("logs", name, check=False)
            raise AssertionError(f"code server container exited:\n{logs.stdout}{logs.stderr}")
        probe = podman("exec", name, "dagster", "api", "grpc-health-check", "-p", str(port),
                       check=False)
        if probe.returncode == 0:
            return
        assert time.monotonic() < deadline, f"no healthy code server in {timeout} s"
        time.sleep(1)


def _start_code_server(image: str, args: list[str], flags: list[str], env: dict[str, str],
                       port: int) -> str:
    name = f"simlab-test-code-server-{uuid.uuid4().hex[:8]}"
    env_flags = [f"--env={k}={v}" for k, v in env.items()]
    # Host networking: the host creates runs through it, the probe reaches it on 127.0.0.1.
    podman("run", "--detach", "--rm", "--name", name, "--network", "host", *flags, *env_flags,
           image, *args)
    try:
        _wait_healthy(name, port)
    except BaseException:
        podman("rm", "--force", "--time", "0", name, check=False)
        raise
    return name


def test_the_run_pod_command_executes_a_postgres_run_and_the_container_exits(
        image, tmp_path, pg_database, monkeypatch):  # noqa: F811 (the fixture imported above)
    """A run created on the PostgreSQL instance through the code server in a container (the
    chart's command), executed by `dagster api execute_run` in another container with the
    arguments K8sRunLauncher.launch_run builds (instance ref included), with two pool workers."""
    import dagster as dg
    from dagster._cli.api import ExecuteRunArgs
    from dagster._cli.job import _create_run
    from dagster._cli.workspace.cli_target import (
        get_code_location_from_workspace,
        get_remote_job_from_remote_repo,
        get_remote_repository_from_code_location,
        get_workspace_from_cli_opts,
    )
    from dagster._core.instance.ref import InstanceRef
    from dagster_shared.cli import WorkspaceOpts

    from simlab_pipelines.assets import replications_key
    from simlab_pipelines.partitions import partition_key, range_tags
    from simlab_pipelines.sensors import NO_RETRY_TAGS, replications_job_name

    home = tmp_path / "home"
    pg_env = _postgres_home(home, pg_database)  # examples/dagster_home_postgres/dagster.yaml
    for key, value in {**pg_env, "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    spec_name = "tiny_mmck"
    job_name = replications_job_name(spec_name)
    image_ref = image
    port = _free_port()

    # The code server: the chart's user deployment command, its env (simlab-env, the instance
    # home, the image it reports), its security context and mounts.
    server_args = _entrypoint("chart-user-deployment", [], port)
    server_volumes = chart_volumes(tmp_path / "server", [TINY])
    server_flags = chart_flags(DEPLOYMENT["securityContext"], DEPLOYMENT["volumeMounts"],
                               server_volumes)
    server = _start_code_server(
        image, server_args, server_flags,
        {"SIMLAB_EXPERIMENTS_DIR": EXPERIMENTS_PATH, "SIMLAB_DATA_DIR": DATA_PATH,
         "DAGSTER_CURRENT_IMAGE": image_ref}, port)
    try:
        # The daemon's part: create the run from the code location (its origin is the code
        # server's: the image's Python, the image), then build the run pod's arguments.
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        with get_workspace_from_cli_opts(
                instance, version="", workspace_opts=WorkspaceOpts(grpc_host="127.0.0.1",
                                                                   grpc_port=port)) as workspace:
            location = get_code_location_from_workspace(workspace, None)
            repository = get_remote_repository_from_code_location(location, None)
            remote_job = get_remote_job_from_remote_repo(repository, job_name)
            run = _create_run(instance=instance, code_location=location, remote_repo=repository,
                              remote_job=remote_job, run_config={},
                              tags={**range_tags("servers-2", 0, 5), **NO_RETRY_TAGS},
                              op_selection=None, run_id=None)
        # In the cluster the daemon's DAGSTER_HOME is the pod's (the chart's dagsterHome): its
        # instance ref names that directory and the dagster.yaml the chart renders.
        dagster_home = DAGSTER.get("global", {}).get("dagsterHome", "/opt/dagster/dagster_home")
        ref = InstanceRef.from_dir(dagster_home, config_dir=str(home))
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=ref,
            set_exit_code_on_failure=LAUNCHER.get("failPodOnRunFailure") or None,
        ).get_command_args()
        # The code server serves the definitions module and reports the image (run pods use it).
        origin = run.job_code_origin.repository_origin
        assert origin.container_image == image_ref
        assert getattr(origin.code_pointer, "module", None) == "simlab_pipelines.definitions"
        # `dagster api execute_run <args>` (or `<python> -m dagster ...` if the code server
        # reported its interpreter): whatever it is, it must resolve in the image.
        entry = args[: args.index("execute_run") - 1]
        assert entry in (["dagster"], ["/opt/simlab/.venv/bin/python", "-m", "dagster"]), args

        flags, _ = run_pod_flags(tmp_path / "pod", [TINY])
        with otlp_receiver(lifetime=RUN_POD_TIMEOUT + 60) as receiver:
            pod_env = {**pg_env, "DAGSTER_HOME": dagster_home, "SIMLAB_WORKERS": "2",
                       "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                       "OTEL_SERVICE_NAME": "simlab", "DAGSTER_RUN_JOB_NAME": job_name}
            name = f"simlab-test-run-{run.run_id[:8]}"
            command = [str(PODMAN), "run", "--rm", "--name", name, "--network", "host", *flags,
                       *[f"--env={k}={v}" for k, v in pod_env.items()], image, *args]
            try:
                pod = subprocess.run(command, capture_output=True, text=True,
                                     timeout=RUN_POD_TIMEOUT)
            except subprocess.TimeoutExpired:
                podman("rm", "--force", "--time", "0", name, check=False)
                pytest.fail(f"the run pod's container did not exit within {RUN_POD_TIMEOUT} s: "
                            "a process (the run's worker pool?) outlived the run")
            assert pod.returncode == 0, f"run pod exited {pod.returncode}:\n{pod.stderr[-4000:]}"
            finished = instance.get_run_by_id(run.run_id)
            assert finished.status == dg.DagsterRunStatus.SUCCESS, pod.stderr[-4000:]
            wanted = {partition_key("servers-2", r) for r in range(6)}
            # Sent before the exit; the receiver's threads may still be decoding the last one.
            deadline = time.monotonic() + 5
            while True:
                simulations = [s for s in receiver.spans() if s.name == "simlab.simulation"
                               and s.attributes.get("dagster.run_id") == run.run_id]
                if {s.attributes.get("dagster.partition_key") for s in simulations} == wanted \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        assert {s.attributes.get("dagster.partition_key") for s in simulations} == wanted
        assert all(s.status != "ERROR" for s in simulations)
        materialized = instance.get_materialized_partitions(replications_key(spec_name))
        assert wanted <= set(materialized)
        instance.dispose()
    finally:
        podman("rm", "--force", "--time", "0", server, check=False)
