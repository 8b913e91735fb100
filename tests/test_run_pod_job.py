"""The run pod a Dagster run gets on Kubernetes, built offline by dagster-k8s itself.

The dagster chart turns `dagster.runLauncher.config.k8sRunLauncher` (our values) into the
`run_launcher` block of the instance's dagster.yaml (templates/helpers/instance/_run-launcher.tpl
upstream, transcribed in `run_launcher_config` below for the keys the chart emits). From that block
this test does what K8sRunLauncher.launch_run does, with the library's own code: validate the
config against K8sRunLauncher's config schema, construct the launcher (against a throw-away
kubeconfig, no cluster), build the run's container context, its DagsterK8sJobConfig and the Job
with construct_dagster_k8s_job. The Job is validated with kubernetes-validate --strict and its
image, security context, resources, labels, volumes and environment (the ConfigMap our chart
renders, resolved through envFrom) are checked.

The rest of the instance dagster.yaml the chart would render from our values (storage, queue,
concurrency, retries, monitoring) is checked against Dagster's instance schema, as is the example
examples/dagster_home_postgres/dagster.yaml.
"""

import copy
import shutil
import uuid
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import helm_python as helm
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._cli.api import ExecuteRunArgs
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.config import dagster_instance_config
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_job_name_from_run_id
from dagster_postgres import PostgresRunStorage

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "simlab"
KUBE_VERSION = "1.33.0"
RELEASE, NAMESPACE = "simlab", "simlab"
# The dagster chart's defaults for values we do not set (its values.yaml): global.dagsterHome and
# the names its helpers derive from the release ("<release>-dagster" is dagster.fullname).
DAGSTER_HOME = "/opt/dagster/dagster_home"
DAGSTER_FULLNAME = f"{RELEASE}-dagster"
ENVIRONMENTS = {"local": ["values-local.yaml"], "production": ["values-production.yaml"]}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    """The chart (a copy with a stand-in experiment while experiments/ does not exist)."""
    chart_dir = CHART
    if not (ROOT / "experiments").is_dir():
        chart_dir = tmp_path_factory.mktemp("chart") / "simlab"
        shutil.copytree(CHART, chart_dir, symlinks=True)
        link = chart_dir / "files" / "experiments"
        link.unlink()
        link.mkdir()
        (link / "stand_in.yaml").write_text("name: stand_in\nmodel: mmck\n")
    with helm.Chart.load(chart_dir) as loaded:
        yield loaded


@pytest.fixture(scope="module", params=sorted(ENVIRONMENTS))
def environment(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def values(chart, environment) -> dict[str, Any]:
    """Our chart's values for this environment, coalesced by Helm."""
    overrides: dict[str, Any] = {}
    for name in ENVIRONMENTS[environment]:
        overrides = _merge(overrides, helm.values_from_yaml((CHART / name).read_text()))
    return chart.merge_values(overrides)


@pytest.fixture(scope="module")
def config_maps(chart, values) -> dict[str, dict[str, str]]:
    """The ConfigMaps our chart renders, by name (the run pod loads one with envFrom)."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    found = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "ConfigMap":
                found[doc["metadata"]["name"]] = doc.get("data") or {}
    return found


# --- what the dagster chart writes into dagster.yaml ----------------------------------------


def _names(entries: list[dict[str, Any]] | None) -> list[str]:
    return [entry["name"] for entry in entries or [] if "name" in entry]


def run_launcher_config(values: dict[str, Any]) -> dict[str, Any]:
    """The K8sRunLauncher config block the dagster chart renders from our values."""
    dagster = values["dagster"]
    launcher = dagster["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": launcher.get("loadInclusterConfig", True),
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": DAGSTER_FULLNAME,
        "dagster_home": dagster.get("global", {}).get("dagsterHome", DAGSTER_HOME),
        "instance_config_map": f"{DAGSTER_FULLNAME}-instance",
        "postgres_password_secret": dagster["global"]["postgresqlSecretName"],
    }
    if "image" in launcher:
        config["job_image"] = f"{launcher['image']['repository']}:{launcher['image']['tag']}"
    optional = {
        "env_config_maps": _names(launcher.get("envConfigMaps")),
        "env_secrets": _names(launcher.get("envSecrets")),
        "env_vars": launcher.get("envVars"),
        "volume_mounts": launcher.get("volumeMounts"),
        "volumes": launcher.get("volumes"),
        "labels": launcher.get("labels"),
        "resources": launcher.get("resources"),
        "scheduler_name": launcher.get("schedulerName"),
        "security_context": launcher.get("securityContext"),
    }
    config.update({key: value for key, value in optional.items() if value})
    if launcher.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    run_k8s = launcher.get("runK8sConfig") or {}
    snake = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    if run_k8s:
        config["run_k8s_config"] = {snake[key]: value for key, value in run_k8s.items() if value}
    return config


def instance_yaml(values: dict[str, Any]) -> dict[str, Any]:
    """The dagster.yaml of the chart's instance ConfigMap (templates/configmap-instance.yaml)."""
    dagster = values["dagster"]
    postgresql = dagster["postgresql"]
    host = f"{RELEASE}-postgresql" if postgresql["enabled"] else postgresql["postgresqlHost"]
    postgres_db = {
        "username": postgresql["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": host,
        "db_name": postgresql["postgresqlDatabase"],
        "port": postgresql.get("service", {}).get("port", 5432),
        "params": postgresql.get("postgresqlParams") or {},
    }
    if postgresql.get("postgresqlScheme"):
        postgres_db["scheme"] = postgresql["postgresqlScheme"]

    def storage(module: str, cls: str) -> dict[str, Any]:
        return {"module": module, "class": cls, "config": {"postgres_db": postgres_db}}

    daemon = dagster["dagsterDaemon"]
    queued = {
        k: v
        for k, v in daemon["runCoordinator"]["config"]["queuedRunCoordinator"].items()
        if v not in (None, False, 0, "", [], {})  # sprig's `compact`
    }
    # templates/helpers/instance/_run-coordinator.tpl after dagster-io/dagster#33225: with
    # concurrency.enabled, max_concurrent_runs and tag_concurrency_limits are written only when
    # set explicitly (before the fix an unset maxConcurrentRuns became -1, which Dagster refuses
    # next to a `concurrency` block: the daemon did not start).
    concurrency_enabled = bool((dagster.get("concurrency") or {}).get("enabled"))
    coordinator: dict[str, Any] = {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
    }
    if queued:
        config: dict[str, Any] = {}
        if not concurrency_enabled or "maxConcurrentRuns" in queued:
            config["max_concurrent_runs"] = queued.get("maxConcurrentRuns", -1)
        if queued.get("tagConcurrencyLimits"):
            config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
        for key, name in [
            ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
            ("dequeueUseThreads", "dequeue_use_threads"),
            ("dequeueNumWorkers", "dequeue_num_workers"),
        ]:
            if queued.get(key):
                config[name] = queued[key]
        coordinator["config"] = config
    document: dict[str, Any] = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": storage("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": run_launcher_config(values),
        },
        "run_storage": storage("dagster_postgres.run_storage", "PostgresRunStorage"),
        "event_log_storage": storage("dagster_postgres.event_log", "PostgresEventLogStorage"),
        "run_coordinator": coordinator,
        "telemetry": {"enabled": False},
    }
    monitoring = daemon["runMonitoring"]
    if monitoring.get("enabled"):
        # configmap-instance.yaml@835892b: cancel timeout and resume attempts when set; free slots
        # always (unset, it would render null).
        document["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring.get("freeSlotsAfterRunEndSeconds"),
        }
        for key, name in [("cancelTimeoutSeconds", "cancel_timeout_seconds"),
                          ("maxResumeRunAttempts", "max_resume_run_attempts")]:
            if monitoring.get(key) is not None:
                document["run_monitoring"][name] = monitoring[key]
    retries = daemon["runRetries"]
    if retries.get("enabled"):
        document["run_retries"] = {"enabled": True, "max_retries": retries["maxRetries"]}
    concurrency = dagster.get("concurrency") or {}
    if concurrency.get("enabled"):
        block: dict[str, Any] = {}
        if concurrency.get("pools", {}).get("defaultLimit") is not None:
            block["pools"] = {"default_limit": concurrency["pools"]["defaultLimit"]}
        runs = concurrency.get("runs") or {}
        if runs:
            block["runs"] = {}
            if runs.get("maxConcurrentRuns") is not None:
                block["runs"]["max_concurrent_runs"] = runs["maxConcurrentRuns"]
            if runs.get("tagConcurrencyLimits"):
                block["runs"]["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
        document["concurrency"] = block
    return document


def test_the_instance_dagster_yaml_from_our_values_is_accepted_by_dagster(
    values, tmp_path, monkeypatch
):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "offline")  # what the pods get from the Secret
    document = instance_yaml(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(document))
    config, _ = dagster_instance_config(str(tmp_path))  # raises DagsterInvalidConfigError
    for name, klass in [
        ("run_launcher", K8sRunLauncher),
        ("run_coordinator", QueuedRunCoordinator),
        ("run_storage", PostgresRunStorage),
    ]:
        result = process_config(klass.config_type(), config[name].get("config") or {})
        assert result.success, f"{name}: {[e.message for e in result.errors]}"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    # dagster-postgres's URL must name psycopg2: SQLAlchemy 2.1 maps postgresql:// to psycopg 3
    assert config["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_run_limits_under_the_coordinator_would_be_refused(values, tmp_path):
    # Why the limits live in dagster.concurrency.runs: Dagster 1.13 refuses them under
    # run_coordinator as soon as the instance has a `concurrency` block (which the pool needs).
    moved = copy.deepcopy(values)
    moved["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] = {
        "maxConcurrentRuns": 4
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(moved)))
    with pytest.raises(Exception, match="incompatible with the `concurrency > runs` config"):
        dagster_instance_config(str(tmp_path))


def test_dequeue_settings_may_sit_next_to_the_concurrency_block(values, tmp_path, monkeypatch):
    # Threaded dequeueing (faster submission with many runs) is compatible with the pool config.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "offline")
    threaded = copy.deepcopy(values)
    threaded["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] = {
        "dequeueUseThreads": True,
        "dequeueNumWorkers": 4,
    }
    document = instance_yaml(threaded)
    assert "max_concurrent_runs" not in document["run_coordinator"]["config"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(document))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_coordinator"]["config"]["dequeue_use_threads"] is True


# --- the run pod's Job --------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory) -> Path:
    """A kubeconfig naming an unreachable API server: the launcher parses it, never calls it."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "offline",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "offline", "user": {"token": "offline"}}],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "user": "offline"}}
                ],
            }
        )
    )
    return path


def code_server_image(values: dict[str, Any]) -> str:
    """The image the code server runs and reports as DAGSTER_CURRENT_IMAGE (repository:tag)."""
    (deployment,) = values["dagster"]["dagster-user-deployments"]["deployments"]
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


@pytest.fixture(scope="module")
def job(values, kubeconfig) -> dict[str, Any]:
    """The run pod's Job, as K8sRunLauncher.launch_run would create it, serialised for the API."""
    config = run_launcher_config(values)
    config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    processed = process_config(K8sRunLauncher.config_type(), config)
    assert processed.success, [error.message for error in processed.errors]
    launcher = K8sRunLauncher(
        **processed.value, k8s_client_batch_api=MagicMock(), k8s_client_core_api=MagicMock()
    )
    origin = JobPythonOrigin(
        "__ASSET_JOB",
        RepositoryPythonOrigin(
            executable_path="/opt/simlab/.venv/bin/python",
            code_pointer=ModuleCodePointer(
                "simlab_pipelines.definitions", "defs", working_directory=None
            ),
            container_image=code_server_image(values),
            container_context=None,  # includeConfigInLaunchedRuns is off: the launcher decides
        ),
    )
    run = DagsterRun(
        job_name="__ASSET_JOB",
        run_id=str(uuid.UUID(int=5000)),
        tags={"dagster/backfill": "sweep", "simlab/experiment": "restaurant_staffing"},
        job_code_origin=origin,
    )
    # The steps of K8sRunLauncher.launch_run / _launch_k8s_job_with_args, public functions only.
    context = launcher.get_container_context_for_run(run)
    job_config = context.get_k8s_job_config(
        job_image=origin.repository_origin.container_image, run_launcher=launcher
    )
    assert isinstance(job_config, DagsterK8sJobConfig)
    assert job_config.job_image == code_server_image(values)
    assert (
        job_config.postgres_password_secret == values["dagster"]["global"]["postgresqlSecretName"]
    )
    job_name = get_job_name_from_run_id(run.run_id)
    v1_job = construct_dagster_k8s_job(
        job_config=job_config,
        args=ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=None
        ).get_command_args(),
        job_name=job_name,
        pod_name=job_name,
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": origin.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": origin.job_name}],
    )
    assert context.namespace == NAMESPACE
    return kubernetes.client.ApiClient().sanitize_for_serialization(v1_job)


def test_job_is_valid_kubernetes(job):
    try:
        kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise AssertionError(f"run pod Job: {error.message}") from None
    assert job["spec"]["backoffLimit"] == 0, (
        "Dagster retries runs; Kubernetes must not restart pods"
    )
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _container(job) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_job_runs_the_code_server_image_and_dagster_execute_run(job, values):
    container = _container(job)
    assert container["image"] == code_server_image(values)
    assert (
        container["imagePullPolicy"]
        == values["dagster"]["runLauncher"]["config"]["k8sRunLauncher"]["imagePullPolicy"]
    )
    # `<the code server's python> -m dagster api execute_run <run>`: the venv path of the image.
    python, *rest = container["args"]
    assert python == "/opt/simlab/.venv/bin/python"
    assert (
        "COPY --from=build /opt/simlab/.venv /opt/simlab/.venv" in (ROOT / "Dockerfile").read_text()
    )
    assert rest[:4] == ["-m", "dagster", "api", "execute_run"]


def test_job_runs_as_non_root(job):
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001, "the data volume must be writable"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def _quantity(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    for suffix, factor in units.items():
        if str(text).endswith(suffix):
            return float(str(text)[: -len(suffix)]) * factor
    return float(text)


def test_job_resources_give_whole_cpus_and_memory_per_worker(job, config_maps):
    resources = _container(job)["resources"]
    cpu = _quantity(resources["limits"]["cpu"])
    # The pool gets one worker per CPU of the limit (the cgroup quota): a whole number, requested
    # in full (Guaranteed QoS) so the workers are not throttled.
    assert cpu >= 1 and cpu == int(cpu)
    assert resources["requests"] == resources["limits"]
    workers = int(config_maps["simlab-env"].get("SIMLAB_WORKERS", cpu))
    assert _quantity(resources["limits"]["memory"]) / workers >= 256 * 2**20, "< 256 MiB per worker"


def test_job_labels_name_the_component_and_the_run(job):
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["simlab.dev/component"] == "run-worker"
    assert labels["app.kubernetes.io/part-of"] == "simlab"
    assert labels["app.kubernetes.io/component"] == "run_worker"
    assert labels["dagster/run-id"] == str(uuid.UUID(int=5000))
    assert job["metadata"]["labels"]["simlab.dev/component"] == "run-worker"


def _environment(job, config_maps) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps (ours, rendered) then env entries."""
    container = _container(job)
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in config_maps, (
                f"run pod loads ConfigMap {name}, which the chart does not make"
            )
            environment.update(config_maps[name])
        else:
            environment[f"<secret {source['secretRef']['name']}>"] = "envFrom"
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = f"<secret {ref['name']}/{ref['key']}>"
        else:
            environment[entry["name"]] = entry["value"]
    return environment


def test_job_environment_carries_otel_and_simlab_settings(job, values, config_maps, environment):
    env = _environment(job, config_maps)
    collector = values["opentelemetry-collector"]["fullnameOverride"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{collector}:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_SERVICE_NAME"] == "simlab"
    assert "OTEL_RESOURCE_ATTRIBUTES" in env and "OTEL_TRACES_SAMPLER" in env
    assert env["DAGSTER_HOME"] == DAGSTER_HOME
    assert env["DAGSTER_PG_PASSWORD"] == "<secret simlab-postgresql/postgresql-password>"
    assert env["SIMLAB_MAX_PARTITIONS_PER_RUN"] == str(values["simulation"]["maxPartitionsPerRun"])
    if environment == "production":
        assert env["SIMLAB_RESULTS_URI"].startswith("s3://")
        assert "<secret simlab-object-store>" in env, "S3 keys come from the object-store Secret"
    else:
        assert env["SIMLAB_RESULTS_URI"].startswith(env["SIMLAB_DATA_DIR"])


def test_job_mounts_the_experiments_and_the_data_volume_where_the_env_points(job, config_maps):
    env = _environment(job, config_maps)
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _container(job)["volumeMounts"]}
    experiments = mounts[env["SIMLAB_EXPERIMENTS_DIR"]]
    assert experiments["readOnly"] is True
    assert volumes[experiments["name"]]["configMap"]["name"] in config_maps
    data = mounts[env["SIMLAB_DATA_DIR"]]
    assert volumes[data["name"]]["persistentVolumeClaim"]["claimName"] == "simlab-data"


def test_image_dagster_home_matches_the_chart(values):
    # The Dockerfile's DAGSTER_HOME must be where the dagster chart mounts the instance config.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"DAGSTER_HOME={DAGSTER_HOME}" in dockerfile
    assert values["dagster"].get("global", {}).get("dagsterHome", DAGSTER_HOME) == DAGSTER_HOME


# --- the example PostgreSQL instance ------------------------------------------------------

EXAMPLE = ROOT / "examples" / "dagster_home_postgres"


def test_example_postgres_instance_is_valid_and_reads_the_connection_from_the_environment(
    monkeypatch,
):
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": "test",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "not-a-real-password",
    }.items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(EXAMPLE))
    postgres_db = config["storage"]["postgres"]["postgres_db"]
    assert {
        key: postgres_db[key] for key in ["hostname", "port", "db_name", "username", "password"]
    } == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
    }
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_retries"]["enabled"] is True
    assert config["concurrency"]["pools"]["default_limit"] == 1
    # The storage class accepts the block (env sources resolved from the environment above).
    result = process_config(PostgresRunStorage.config_type(), {"postgres_db": postgres_db})
    assert result.success, [e.message for e in result.errors]
    assert result.value["postgres_db"]["hostname"] == "127.0.0.1"
    assert "not-a-real-password" not in (EXAMPLE / "dagster.yaml").read_text()
