"""Offline checks of the simlab umbrella chart (helm/simlab).

Rendering uses helm-python-sdk, which embeds Helm's own Go engine (Helm SDK v4) as a shared
library: the same template functions, value coalescing and values.schema.json validation as
`helm template`, with no helm binary. Only our own templates render: the subcharts (dagster,
opentelemetry-collector, tempo, grafana) live in chart repositories this machine cannot reach, so
charts/ is empty. Their values are checked instead against key paths read from the upstream charts
(UPSTREAM_KEYS below), and every manifest we render is validated with kubernetes-validate --strict.

The chart's files/experiments is a symlink to the repository's experiments/. While that directory
does not exist yet, the chart is rendered from a temporary copy with one stand-in experiment and
the test comparing the ConfigMap with experiments/ is skipped.
"""

import copy
import json
import re
import shutil
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "simlab"
EXPERIMENTS = ROOT / "experiments"
# Kubernetes version whose OpenAPI schemas validate the manifests (kubernetes-validate ships
# 1.25-1.37; the subcharts need >= 1.25, our Chart.yaml says >= 1.29).
KUBE_VERSION = "1.33.0"
RELEASE, NAMESPACE = "simlab", "simlab"
ENVIRONMENTS = {
    "defaults": [],
    "local": ["values-local.yaml"],
    "production": ["values-production.yaml"],
}
STAND_IN_EXPERIMENT = "name: stand_in\nmodel: mmck\nseed: 1\nreplications: 2\n"


# --- rendering -------------------------------------------------------------------------------


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of successive -f files: maps merge recursively, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values_file(name: str) -> dict[str, Any]:
    """A values file as Helm parses it (YAML anchors resolved by Helm's own parser)."""
    return helm.values_from_yaml((CHART / name).read_text())


def env_values(environment: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ENVIRONMENTS[environment]:
        values = merge_values(values, load_values_file(name))
    return merge_values(values, extra or {})


@pytest.fixture(scope="module")
def chart_dir(tmp_path_factory) -> Path:
    """The chart directory to load: the real one, or a copy with a stand-in experiment."""
    if EXPERIMENTS.is_dir():
        return CHART
    copy_dir = tmp_path_factory.mktemp("chart") / "simlab"
    shutil.copytree(CHART, copy_dir, symlinks=True)
    link = copy_dir / "files" / "experiments"
    link.unlink()
    link.mkdir()
    (link / "stand_in.yaml").write_text(STAND_IN_EXPERIMENT)
    return copy_dir


@pytest.fixture(scope="module")
def chart(chart_dir):
    with helm.Chart.load(chart_dir) as loaded:
        yield loaded


def render(chart, values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rendered manifests per template file (NOTES.txt left out), parsed into objects."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: dict[str, list[dict[str, Any]]] = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        manifests[path] = [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests


def objects(manifests: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for docs in manifests.values() for doc in docs]


def find(manifests, kind: str, name: str) -> dict[str, Any]:
    for doc in objects(manifests):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(
        f"no {kind}/{name} rendered; got {[o['metadata']['name'] for o in objects(manifests)]}"
    )


@pytest.fixture(scope="module", params=sorted(ENVIRONMENTS))
def environment(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def merged(chart, environment) -> dict[str, Any]:
    """The values an install with this environment's files would use (chart defaults coalesced)."""
    return chart.merge_values(env_values(environment))


@pytest.fixture(scope="module")
def rendered(chart, environment):
    return render(chart, env_values(environment))


# --- Chart.yaml ------------------------------------------------------------------------------


def test_dependencies_are_pinned_switchable_and_from_the_expected_repositories():
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert metadata["apiVersion"] == "v2"
    expected = {
        "dagster": "https://dagster-io.github.io/helm",
        "opentelemetry-collector": "https://open-telemetry.github.io/opentelemetry-helm-charts",
        "tempo": "https://grafana-community.github.io/helm-charts",
        "grafana": "https://grafana-community.github.io/helm-charts",
    }
    dependencies = {d["name"]: d for d in metadata["dependencies"]}
    assert set(dependencies) == set(expected)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, dependency in dependencies.items():
        assert dependency["repository"] == expected[name]
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(dependency["version"])), (
            f"Chart.yaml: {name} version {dependency['version']!r} is not an exact version"
        )
        assert dependency["condition"] == f"{name}.enabled"
        assert defaults[name]["enabled"] is True, f"values.yaml: {name}.enabled should default on"


def test_dagster_chart_version_is_the_locked_dagster_version():
    # The dagster chart is released with the same version number as the Python package.
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    chart_version = next(d["version"] for d in metadata["dependencies"] if d["name"] == "dagster")
    assert chart_version == installed_version("dagster")


def test_every_dependency_can_be_switched_off(chart):
    disabled = {
        name: {"enabled": False}
        for name in ["dagster", "opentelemetry-collector", "tempo", "grafana"]
    }
    manifests = render(chart, disabled)
    kinds = sorted(o["kind"] for o in objects(manifests))
    # Only the storage and the two ConfigMaps the pods would use remain.
    assert kinds == ["ConfigMap", "ConfigMap", "PersistentVolumeClaim"]


def test_helm_lint_finds_no_errors(chart_dir, environment):
    report = helm.lint(chart_dir, env_values(environment), kube_version=f"v{KUBE_VERSION}")
    problems = [
        m
        for m in report["messages"]
        if m["severity"] >= 2 and "missing these dependencies" not in m["error"]
    ]
    assert report["errors"] == [] and problems == [], report


# --- values.schema.json ----------------------------------------------------------------------


def test_schema_is_draft_07_and_every_values_file_passes(chart, merged):
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(merged)
    chart.validate_schema(merged)  # Helm's own validator agrees


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"simulation": {"maxPartitionsPerRun": 0}}, "maxPartitionsPerRun"),
        ({"storage": {"objectStore": {"resultsUri": "http://bucket/x"}}}, "resultsUri"),
        ({"storage": {"objectStore": {"accessKeyId": "AKIA..."}}}, "accessKeyId"),
        ({"telemetry": {"otlpProtocol": "thrift"}}, "otlpProtocol"),
        ({"experiments": {"extra": {"Bad Name.yml": "x: 1"}}}, "Bad Name.yml"),
        ({"resourceNames": {"envConfigMap": "Not_A_Name"}}, "envConfigMap"),
        ({"grafanaPassword": "hunter2"}, "grafanaPassword"),
        ({"simulation": {"workers": 0}}, "workers"),
        ({"storage": {"objectStore": {"enabled": True, "resultsUri": ""}}}, "resultsUri"),
        ({"storage": {"persistence": {"accessModes": ["ReadWriteSometimes"]}}}, "accessModes"),
        ({"storage": {"persistence": {"size": "lots"}}}, "size"),
        ({"telemetry": {"tracesSampler": "sometimes"}}, "tracesSampler"),
    ],
)
def test_schema_rejects_bad_values(chart, override, complaint):
    with pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(merge_values(env_values("local"), override))
    assert complaint in str(raised.value)


# --- every rendered manifest is valid Kubernetes -------------------------------------------


def test_every_manifest_is_valid_kubernetes(rendered, environment):
    docs = objects(rendered)
    assert docs, f"{environment}: nothing rendered"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(
                f"{environment}: {doc['kind']}/{doc['metadata']['name']}: {error.message}"
            ) from None
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("ConfigMap", "simlab-env"),
        ("ConfigMap", "simlab-experiments"),
        ("ConfigMap", "simlab-grafana-datasource-tempo"),
        ("ConfigMap", "simlab-grafana-dashboard"),
        ("PersistentVolumeClaim", "simlab-data"),
        ("NetworkPolicy", "simlab-code-server"),
        ("NetworkPolicy", "simlab-otel-collector"),
        ("NetworkPolicy", "simlab-tempo"),
    ]:
        assert expected in kinds, f"{environment}: {expected} not rendered"


def test_the_validator_rejects_a_broken_manifest():
    # Guards the check above: strict mode must refuse unknown fields.
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


# --- NetworkPolicies -------------------------------------------------------------------------


def _pod_labels(chart_name: str, subchart_values: dict[str, Any]) -> dict[str, str]:
    # Selector labels of the tempo, grafana and opentelemetry-collector charts (their
    # _helpers.tpl: tempo@9ae015c, opentelemetry-collector@2839077; grafana's are built the same
    # way): name = nameOverride or the chart's name, instance = the release.
    return {
        "app.kubernetes.io/name": subchart_values.get("nameOverride") or chart_name,
        "app.kubernetes.io/instance": RELEASE,
    }


def test_network_policies_select_the_pods_they_protect_and_admit_their_clients(rendered, merged):
    code_server = find(rendered, "NetworkPolicy", "simlab-code-server")["spec"]
    (deployment,) = merged["dagster"]["dagster-user-deployments"]["deployments"]
    selector = code_server["podSelector"]["matchLabels"]
    assert selector.items() <= deployment["labels"].items(), "the code server pods carry the label"
    (rule,) = code_server["ingress"]
    assert [p["port"] for p in rule["ports"]] == [deployment["port"]]
    assert rule["from"] == [{"podSelector": {}}], "webserver, daemon and run pods of the namespace"

    collector = find(rendered, "NetworkPolicy", "simlab-otel-collector")["spec"]
    assert collector["podSelector"]["matchLabels"] == _pod_labels(
        "opentelemetry-collector", merged["opentelemetry-collector"]
    )
    receivers = merged["opentelemetry-collector"]["alternateConfig"]["receivers"]["otlp"]
    ports = {int(p["endpoint"].rsplit(":", 1)[1]) for p in receivers["protocols"].values()}
    assert {p["port"] for rule in collector["ingress"] for p in rule["ports"]} == ports

    tempo = find(rendered, "NetworkPolicy", "simlab-tempo")["spec"]
    assert tempo["podSelector"]["matchLabels"] == _pod_labels("tempo", merged["tempo"])
    sources = {
        frozenset(rule["from"][0]["podSelector"]["matchLabels"].items()): {
            p["port"] for p in rule["ports"]
        }
        for rule in tempo["ingress"]
    }
    collector_pods = frozenset(
        _pod_labels("opentelemetry-collector", merged["opentelemetry-collector"]).items()
    )
    grafana_pods = frozenset(_pod_labels("grafana", merged["grafana"]).items())
    assert sources == {collector_pods: {4317, 4318}, grafana_pods: {3200}}


# --- the environment ConfigMap -------------------------------------------------------------


def test_env_configmap_points_pods_at_the_collector_and_the_storage(rendered, merged, environment):
    data = find(rendered, "ConfigMap", merged["resourceNames"]["envConfigMap"])["data"]
    collector = merged["opentelemetry-collector"]["fullnameOverride"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{collector}:4317"
    assert data["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert data["OTEL_SERVICE_NAME"] == "simlab"
    attributes = dict(pair.split("=", 1) for pair in data["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes["k8s.namespace.name"] == NAMESPACE
    assert attributes["deployment.environment.name"] == merged["environment"]
    assert data["SIMLAB_EXPERIMENTS_DIR"] == merged["experiments"]["mountPath"]
    assert data["SIMLAB_DATA_DIR"] == merged["storage"]["mountPath"]
    assert data["SIMLAB_DUCKDB_PATH"].startswith(merged["storage"]["mountPath"] + "/")
    assert int(data["SIMLAB_MAX_PARTITIONS_PER_RUN"]) == merged["simulation"]["maxPartitionsPerRun"]
    # production plans up to 10 million simulations; elsewhere the pod's memory decides
    assert data.get("SIMLAB_MAX_SIMULATIONS") == (
        "10000000" if environment == "production" else None)
    if environment == "production":
        assert data["SIMLAB_RESULTS_URI"].startswith("s3://")
        assert data["AWS_REGION"] == merged["storage"]["objectStore"]["region"]
    else:
        assert data["SIMLAB_RESULTS_URI"] == merged["storage"]["mountPath"] + "/results"
        assert not [key for key in data if key.startswith("AWS_")]
    # Only settings here: credentials come from Secrets.
    assert not [key for key in data if re.search(r"(?i)secret|password|token|access_key", key)]
    assert "SIMLAB_WORKERS" not in data, "workers follow the run pod's CPU limit by default"
    # Every SIMLAB_* setting is one the code reads (a misspelt one would be silently ignored).
    sources = "\n".join(p.read_text() for p in (ROOT / "simlab_pipelines").rglob("*.py"))
    assert not [key for key in data if key.startswith("SIMLAB_") and f'"{key}"' not in sources]


def test_env_configmap_honours_overrides(chart):
    values = env_values(
        "local",
        {
            "simulation": {"workers": 3},
            "telemetry": {
                "otlpEndpoint": "http://gateway.observability:4318",
                "otlpProtocol": "http/protobuf",
                "resourceAttributes": {"team": "ops"},
            },
            "storage": {
                "objectStore": {
                    "enabled": True,
                    "resultsUri": "s3://bucket/p",
                    "endpointUrl": "http://minio:9000",
                    "region": "us-east-1",
                }
            },
        },
    )
    data = find(render(chart, values), "ConfigMap", "simlab-env")["data"]
    assert data["SIMLAB_WORKERS"] == "3"
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://gateway.observability:4318"
    assert data["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert "team=ops" in data["OTEL_RESOURCE_ATTRIBUTES"].split(",")
    assert data["SIMLAB_RESULTS_URI"] == "s3://bucket/p"
    assert data["AWS_ENDPOINT_URL"] == "http://minio:9000"


# --- experiments -----------------------------------------------------------------------------


def test_experiments_configmap_holds_the_repository_experiments(chart):
    if not EXPERIMENTS.is_dir():
        pytest.skip(
            "experiments/ does not exist yet in this checkout (files/experiments links to it)"
        )
    data = find(render(chart, {}), "ConfigMap", "simlab-experiments")["data"] or {}
    expected = {p.name: p.read_text() for p in sorted(EXPERIMENTS.glob("*.yaml"))}
    assert data == expected


def test_experiments_configmap_adds_extra_files_and_refuses_bad_names(chart, chart_dir):
    shipped = {p.name for p in (chart_dir / "files" / "experiments").glob("*.yaml")}
    extra = {"my_sweep.yaml": "name: my_sweep\nmodel: mmck\n"}
    data = find(
        render(chart, {"experiments": {"extra": extra}}), "ConfigMap", "simlab-experiments"
    )["data"]
    assert set(data) == shipped | {"my_sweep.yaml"}
    assert data["my_sweep.yaml"] == extra["my_sweep.yaml"]  # byte for byte
    clash = next(iter(shipped))
    with pytest.raises(helm.HelmError, match=re.escape(clash)):
        render(chart, {"experiments": {"extra": {clash: "name: x\n"}}})


def test_experiments_symlink_points_at_the_repository_directory():
    link = CHART / "files" / "experiments"
    assert link.is_symlink()
    assert (link.parent / link.readlink()).resolve() == EXPERIMENTS.resolve()


# --- Grafana ----------------------------------------------------------------------------------


def test_tempo_datasource_is_labelled_for_the_sidecar_and_points_at_tempo(rendered, merged):
    configmap = find(rendered, "ConfigMap", "simlab-grafana-datasource-tempo")
    sidecar = merged["grafana"]["sidecar"]["datasources"]
    assert sidecar["enabled"] is True
    assert configmap["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["label"] == "grafana_datasource"
    (document,) = configmap["data"].values()
    (datasource,) = yaml.safe_load(document)["datasources"]
    assert datasource["type"] == "tempo"
    assert datasource["uid"] == merged["grafanaIntegration"]["datasource"]["uid"]
    assert datasource["url"] == f"http://{merged['tempo']['fullnameOverride']}:3200"


def test_dashboard_is_labelled_and_queries_tempo_with_traceql_metrics(rendered, merged):
    configmap = find(rendered, "ConfigMap", "simlab-grafana-dashboard")
    sidecar = merged["grafana"]["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True and sidecar["label"] == "grafana_dashboard"
    assert configmap["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    dashboard = json.loads(configmap["data"]["simlab.json"])
    uid = merged["grafanaIntegration"]["datasource"]["uid"]
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if target["datasource"]["type"] == "tempo":
                assert target["datasource"]["uid"] == uid, (
                    f"panel {panel['title']!r}: wrong datasource"
                )
                queries[panel["title"]] = queries.get(panel["title"], "") + target["query"]
    text = "\n".join(queries.values())
    assert "${DS_TEMPO_UID}" not in configmap["data"]["simlab.json"]
    assert "quantile_over_time(duration" in text and "by (span.simlab.config_key)" in text
    assert "status = error" in text and "| rate()" in text
    assert "{ } | rate() by (resource.service.name)" in text  # spans per second
    assert len(dashboard["panels"]) >= 3


def test_grafana_admin_comes_from_a_secret_and_anonymous_access_is_off(merged):
    grafana = merged["grafana"]
    assert grafana["admin"]["existingSecret"]
    assert "adminPassword" not in load_values_file("values.yaml")["grafana"]
    assert grafana["grafana.ini"]["auth.anonymous"]["enabled"] is False


# --- storage ----------------------------------------------------------------------------------


def test_claim_is_made_unless_an_existing_one_is_named(chart, rendered, merged, environment):
    claim = find(rendered, "PersistentVolumeClaim", merged["resourceNames"]["dataClaim"])
    assert claim["spec"]["accessModes"] == merged["storage"]["persistence"]["accessModes"]
    if environment == "production":
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "run pods span nodes"
    values = env_values(environment, {"storage": {"persistence": {"existingClaim": "simlab-data"}}})
    assert not [o for o in objects(render(chart, values)) if o["kind"] == "PersistentVolumeClaim"]


# --- the chart refuses inconsistent values ------------------------------------------------


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        (
            {"dagster": {"runLauncher": {"config": {"k8sRunLauncher": {"envConfigMaps": []}}}}},
            "dagster.runLauncher.config.k8sRunLauncher.envConfigMaps must include {name: simlab-env}",
        ),
        (
            {"dagster": {"runLauncher": {"config": {"k8sRunLauncher": {"volumeMounts": []}}}}},
            "mount the ConfigMap simlab-experiments",
        ),
        (
            {
                "storage": {
                    "objectStore": {
                        "enabled": True,
                        "resultsUri": "s3://bucket/p",
                        "credentialsSecret": "simlab-object-store",
                    }
                }
            },
            "envSecrets must include {name: simlab-object-store}",
        ),
        (
            {"storage": {"persistence": {"enabled": False}, "objectStore": {"enabled": False}}},
            "results need somewhere to go",
        ),
        (
            {"tempo": {"fullnameOverride": "traces"}},
            "exporters.otlp_grpc/tempo.endpoint must be traces:4317",
        ),
    ],
)
def test_inconsistent_values_stop_the_install(chart, override, complaint):
    with pytest.raises(helm.HelmError) as raised:
        render(chart, env_values("local", override))
    assert complaint in str(raised.value)


# --- nothing secret in values files -------------------------------------------------------

CREDENTIAL_KEY = re.compile(
    r"(?i)(password|passwd|secret|token|apikey|api_key|accesskey|secretkey)"
)
# Keys that name a Secret (or a key inside one), never a credential.
SECRET_REFERENCE_KEYS = {
    "existingSecret",
    "postgresqlSecretName",
    "credentialsSecret",
    "passwordKey",
    "userKey",
    "generatePostgresqlPasswordSecret",
}


def _leaves(value: Any, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


@pytest.mark.parametrize("name", ["values.yaml", "values-local.yaml", "values-production.yaml"])
def test_values_files_hold_no_credentials(name):
    for path, value in _leaves(load_values_file(name)):
        last = path.rsplit(".", 1)[-1]
        if CREDENTIAL_KEY.search(last) and last not in SECRET_REFERENCE_KEYS:
            assert value in (None, "", [], {}), f"{name}: {path} holds a literal credential"
        assert not re.search(r"AKIA[0-9A-Z]{16}", str(value)), f"{name}: {path}: an AWS key id"


# --- the collector pipeline ----------------------------------------------------------------


def test_collector_pipeline_scrubs_samples_and_exports_to_tempo(merged):
    collector = merged["opentelemetry-collector"]
    config = collector["alternateConfig"]
    assert collector["config"] == config, "config and alternateConfig must stay the same document"
    assert collector["image"]["repository"].endswith("opentelemetry-collector-contrib")
    receivers = config["receivers"]["otlp"]["protocols"]
    assert set(receivers) == {"grpc", "http"}
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"][0] == "memory_limiter"
    assert pipeline["processors"][-1] == "batch"
    scrub = pipeline["processors"].index("transform/scrub")
    assert scrub < pipeline["processors"].index("tail_sampling")
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    (exporter,) = pipeline["exporters"]
    assert exporter.startswith("otlp")
    assert (
        config["exporters"][exporter]["endpoint"] == f"{merged['tempo']['fullnameOverride']}:4317"
    )
    assert collector["replicaCount"] == 1, (
        "tail sampling needs all spans of a trace in one collector"
    )


def _scrub_patterns(merged) -> list[re.Pattern[str]]:
    statements = merged["opentelemetry-collector"]["alternateConfig"]["processors"][
        "transform/scrub"
    ]
    patterns = []
    for group in statements["trace_statements"]:
        for statement in group["statements"]:
            match = re.fullmatch(r'delete_matching_keys\(attributes, "(.*)"\)', statement)
            assert match, f"unexpected scrub statement {statement!r}"
            patterns.append(re.compile(match.group(1)))
    assert {g["context"] for g in statements["trace_statements"]} >= {"resource", "span"}
    return patterns


@pytest.mark.parametrize(
    "key",
    [
        "db.password",
        "aws_secret_access_key",
        "AWS_ACCESS_KEY_ID",
        "http.request.header.authorization",
        "api_key",
        "x-api-key",
        "github.token",
        "client_secret",
        "PGPASSWORD",
        "private_key",
    ],
)
def test_scrub_regex_removes_secret_like_attributes(merged, key):
    # OTTL matches with Go's RE2; these patterns use only syntax RE2 and Python share.
    assert all(p.fullmatch(key) for p in _scrub_patterns(merged)), key


@pytest.mark.parametrize(
    "key",
    [
        "simlab.seed.entropy",
        "simlab.seed.spawn_key",
        "simlab.config_key",
        "simlab.param.arrival_rate",
        "dagster.run_id",
        "dagster.partition_key",
        "service.name",
        "k8s.pod.name",
    ],
)
def test_scrub_regex_keeps_simlab_attributes(merged, key):
    assert not any(p.fullmatch(key) for p in _scrub_patterns(merged)), key


# --- Dagster settings ---------------------------------------------------------------------


def test_dagster_runs_queue_retry_and_are_monitored(merged, environment):
    daemon = merged["dagster"]["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    # Run limits must sit in `concurrency.runs`: with a `concurrency` block (needed for the pool)
    # Dagster rejects them under run_coordinator (test_run_pod_job checks the instance config).
    queued = coordinator["config"]["queuedRunCoordinator"]
    for key in ("maxConcurrentRuns", "tagConcurrencyLimits", "blockOpConcurrencyLimitedRuns"):
        assert queued.get(key) in (None, []), (
            f"dagsterDaemon.runCoordinator...{key}: use concurrency"
        )
    concurrency = merged["dagster"]["concurrency"]
    assert concurrency["enabled"] is True
    assert concurrency["pools"] == {"defaultLimit": 1}, "simlab_duckdb: one DuckDB writer"
    runs = concurrency["runs"]
    assert runs["maxConcurrentRuns"] >= 1
    limits = {limit["key"]: limit for limit in runs["tagConcurrencyLimits"]}
    assert set(limits) == {"dagster/backfill", "simlab/experiment"}
    for limit in limits.values():
        assert limit["value"] == {"applyLimitPerUniqueValue": True}
        assert 1 <= limit["limit"] <= runs["maxConcurrentRuns"]
    assert daemon["runRetries"]["enabled"] and daemon["runRetries"]["maxRetries"] >= 1
    assert daemon["runMonitoring"]["enabled"]
    if environment == "production":
        local = load_values_file("values-local.yaml")["dagster"]["concurrency"]["runs"]
        assert runs["maxConcurrentRuns"] > local["maxConcurrentRuns"]


def test_code_server_serves_the_simlab_definitions_as_non_root(merged):
    (deployment,) = merged["dagster"]["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "simlab_pipelines.definitions"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert deployment["securityContext"]["runAsUser"] == 10001
    assert deployment["securityContext"]["allowPrivilegeEscalation"] is False


def test_postgresql_password_always_comes_from_a_secret(merged, environment):
    dagster = merged["dagster"]
    assert dagster["generatePostgresqlPasswordSecret"] is False
    assert dagster["global"]["postgresqlSecretName"] == "simlab-postgresql"
    postgresql = dagster["postgresql"]
    if environment == "production":
        assert postgresql["enabled"] is False and postgresql["postgresqlHost"]
    else:
        assert postgresql["enabled"] is True
        assert postgresql["existingSecret"] == dagster["global"]["postgresqlSecretName"]


# --- subchart values use keys the subcharts have ------------------------------------------
#
# Key paths read from the upstream charts with the search tool (nothing vendored; the versions the
# search index holds, which may be a little older or newer than the pins in Chart.yaml):
#   dagster-io/dagster helm/dagster/schema/schema/charts/dagster/subschema/{daemon.py (the newest
#     copy also has runRetries.retryOnAssetOrOpFailure and backfills.*), run_launcher.py@969d726,
#     webserver.py@288c611, postgresql.py@3f2daa0, concurrency.py@7dade76};
#     dagster-user-deployments/values.schema.json@b8d7b25 (a deployment has no replicaCount: its
#     Deployment template hard-codes `replicas: 1`, deployment-user.yaml@36f72b1);
#     templates/configmap-instance.yaml@835892b (runMonitoring keys), helpers/instance/
#     _run-launcher.tpl@a07d616, _run-coordinator.tpl (the copy after dagster-io/dagster#33225).
#   open-telemetry/opentelemetry-helm-charts charts/opentelemetry-collector/values.schema.json@2bd24b4
#     (top-level additionalProperties: false; has enabled, alternateConfig, image.{registry,
#     repository,tag,digest,pullPolicy}, command.name, ports.*.enabled); chart 0.156.2 exists (tag
#     opentelemetry-collector-0.156.2 is linked from public docs; 0.156.0 ships collector 0.152.0,
#     after the otlp -> otlp_grpc exporter rename of 0.144).
#   grafana-community/helm-charts charts/tempo/values.yaml@d1e8f02 (Tempo 3: tempo.liveStore,
#     tempo.retention, persistence.*) and README.md (chart 3.1.1 fixes retention enforcement);
#     charts/grafana/Chart.yaml@12e12d9 (version 11.1.7) and values.yaml@309f281 (admin.existingSecret/
#     userKey/passwordKey, sidecar.{dashboards,datasources}.{enabled,label,labelValue}).
# `x.*` accepts any key below x (free-form maps: resources, labels, config...); `[]` is a list item.
UPSTREAM_KEYS = {
    "dagster": [
        "enabled",
        "global.postgresqlSecretName",
        "global.dagsterHome",
        "generatePostgresqlPasswordSecret",
        "imagePullSecrets.*",
        "serviceAccount.create",
        "serviceAccount.name",
        "serviceAccount.annotations.*",
        "dagsterWebserver.replicaCount",
        "dagsterWebserver.resources.*",
        "dagsterWebserver.nodeSelector.*",
        "dagsterWebserver.tolerations.*",
        "dagsterDaemon.enabled",
        "dagsterDaemon.resources.*",
        "dagsterDaemon.runCoordinator.enabled",
        "dagsterDaemon.runCoordinator.type",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueIntervalSeconds",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueUseThreads",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueNumWorkers",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].key",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].value",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].value.applyLimitPerUniqueValue",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].limit",
        "dagsterDaemon.runRetries.enabled",
        "dagsterDaemon.runRetries.maxRetries",
        "dagsterDaemon.runRetries.retryOnAssetOrOpFailure",
        # runMonitoring is a free dict in the schema; these are the keys configmap-instance.yaml reads.
        "dagsterDaemon.runMonitoring.enabled",
        "dagsterDaemon.runMonitoring.startTimeoutSeconds",
        "dagsterDaemon.runMonitoring.cancelTimeoutSeconds",
        "dagsterDaemon.runMonitoring.maxResumeRunAttempts",
        "dagsterDaemon.runMonitoring.pollIntervalSeconds",
        "dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSeconds",
        # subschema/compute_log_manager.py (ComputeLogManagerType)
        "computeLogManager.type",
        # subschema/concurrency.py, templates/helpers/instance/_concurrency.tpl
        "concurrency.enabled",
        "concurrency.pools.defaultLimit",
        "concurrency.pools.granularity",
        "concurrency.runs.maxConcurrentRuns",
        "concurrency.runs.tagConcurrencyLimits[].key",
        "concurrency.runs.tagConcurrencyLimits[].value.applyLimitPerUniqueValue",
        "concurrency.runs.tagConcurrencyLimits[].limit",
        "dagster-user-deployments.enabled",
        "dagster-user-deployments.enableSubchart",
        "dagster-user-deployments.deployments[].name",
        "dagster-user-deployments.deployments[].image.repository",
        "dagster-user-deployments.deployments[].image.tag",
        "dagster-user-deployments.deployments[].image.pullPolicy",
        "dagster-user-deployments.deployments[].dagsterApiGrpcArgs.*",
        "dagster-user-deployments.deployments[].codeServerArgs.*",
        "dagster-user-deployments.deployments[].port",
        "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled",
        "dagster-user-deployments.deployments[].envConfigMaps[].name",
        "dagster-user-deployments.deployments[].envSecrets.*",
        "dagster-user-deployments.deployments[].env.*",
        "dagster-user-deployments.deployments[].labels.*",
        "dagster-user-deployments.deployments[].annotations.*",
        "dagster-user-deployments.deployments[].podSecurityContext.*",
        "dagster-user-deployments.deployments[].securityContext.*",
        "dagster-user-deployments.deployments[].resources.*",
        "dagster-user-deployments.deployments[].volumes.*",
        "dagster-user-deployments.deployments[].volumeMounts.*",
        "dagster-user-deployments.deployments[].nodeSelector.*",
        "dagster-user-deployments.deployments[].tolerations.*",
        "dagster-user-deployments.deployments[].affinity.*",
        "runLauncher.type",
        "runLauncher.config.k8sRunLauncher.imagePullPolicy",
        "runLauncher.config.k8sRunLauncher.jobNamespace",
        "runLauncher.config.k8sRunLauncher.envConfigMaps[].name",
        "runLauncher.config.k8sRunLauncher.envSecrets.*",
        "runLauncher.config.k8sRunLauncher.envVars.*",
        "runLauncher.config.k8sRunLauncher.volumes.*",
        "runLauncher.config.k8sRunLauncher.volumeMounts.*",
        "runLauncher.config.k8sRunLauncher.labels.*",
        "runLauncher.config.k8sRunLauncher.resources.*",
        "runLauncher.config.k8sRunLauncher.securityContext.*",
        "runLauncher.config.k8sRunLauncher.failPodOnRunFailure",
        "runLauncher.config.k8sRunLauncher.schedulerName",
        "runLauncher.config.k8sRunLauncher.runK8sConfig.containerConfig.*",
        "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig.*",
        "runLauncher.config.k8sRunLauncher.runK8sConfig.podTemplateSpecMetadata.*",
        "runLauncher.config.k8sRunLauncher.runK8sConfig.jobSpecConfig.*",
        "runLauncher.config.k8sRunLauncher.runK8sConfig.jobMetadata.*",
        "postgresql.enabled",
        "postgresql.postgresqlHost",
        "postgresql.postgresqlUsername",
        "postgresql.postgresqlDatabase",
        "postgresql.postgresqlParams.*",
        "postgresql.postgresqlScheme",
        "postgresql.service.port",
        # Passed through to the bundled bitnami postgresql 8.1.0 subchart (its password Secret).
        "postgresql.existingSecret",
    ],
    "opentelemetry-collector": [
        "enabled",
        "fullnameOverride",
        "nameOverride",
        "mode",
        "replicaCount",
        "image.repository",
        "image.tag",
        "image.digest",
        "image.pullPolicy",
        "image.registry",
        "command.name",
        "command.extraArgs.*",
        "resources.limits.cpu",
        "resources.limits.memory",
        "resources.requests.cpu",
        "resources.requests.memory",
        "ports.*.enabled",
        "ports.*.containerPort",
        "ports.*.servicePort",
        "ports.*.protocol",
        "config.*",
        "alternateConfig.*",
        "podSecurityContext.*",
        "securityContext.*",
        "nodeSelector.*",
        "tolerations.*",
        "affinity.*",
        "podLabels.*",
        "podAnnotations.*",
        "extraEnvs.*",
        "extraEnvsFrom.*",
        "presets.kubernetesAttributes.enabled",
    ],
    "tempo": [
        "enabled",
        "fullnameOverride",
        "nameOverride",
        "replicas",
        "tempo.reportingEnabled",
        "tempo.retention",
        "tempo.resources.*",
        "tempo.storage.*",
        "tempo.receivers.*",
        "tempo.metricsGenerator.*",
        "tempo.overrides.*",
        "tempo.querier.*",
        "tempo.queryFrontend.*",
        "tempo.liveStore.*",
        "tempo.server.*",
        "tempo.securityContext.*",
        "tempo.extraEnv.*",
        "tempo.extraEnvFrom.*",
        "persistence.enabled",
        "persistence.size",
        "persistence.storageClassName",
        "persistence.accessModes.*",
        "securityContext.*",
        "serviceAccount.*",
        "nodeSelector.*",
        "tolerations.*",
    ],
    "grafana": [
        "enabled",
        "fullnameOverride",
        "replicas",
        "admin.existingSecret",
        "admin.userKey",
        "admin.passwordKey",
        "grafana.ini.*",
        "sidecar.datasources.enabled",
        "sidecar.datasources.label",
        "sidecar.datasources.labelValue",
        "sidecar.datasources.searchNamespace",
        "sidecar.dashboards.enabled",
        "sidecar.dashboards.label",
        "sidecar.dashboards.labelValue",
        "sidecar.dashboards.searchNamespace",
        "sidecar.dashboards.folder",
        "sidecar.dashboards.provider.*",
        "persistence.enabled",
        "persistence.size",
        "persistence.storageClassName",
        "resources.*",
        "testFramework.enabled",
        "service.*",
        "ingress.*",
        "nodeSelector.*",
        "tolerations.*",
    ],
}


def _key_regex(pattern: str) -> re.Pattern[str]:
    escaped = re.escape(pattern).replace(r"\.\*", r"(\..*|\[\].*)?").replace(r"\*", r"[^.\[]+")
    return re.compile(f"^{escaped}$")


KNOWN = {
    chart_name: [_key_regex(p) for p in patterns] for chart_name, patterns in UPSTREAM_KEYS.items()
}


def key_paths(value: Any, path: str = ""):
    """Leaf key paths of a values tree; list items are written `[]`."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from key_paths(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        for item in value:
            yield from key_paths(item, f"{path}[]")
    else:
        yield path


@pytest.mark.parametrize("subchart", sorted(UPSTREAM_KEYS))
def test_subchart_values_use_keys_the_subchart_has(subchart, environment):
    ours = merge_values(load_values_file("values.yaml"), env_values(environment))
    unknown = [p for p in key_paths(ours[subchart]) if not any(r.match(p) for r in KNOWN[subchart])]
    assert not unknown, f"{environment}: {subchart} keys not in the upstream chart: {unknown}"


def test_the_key_matcher_catches_a_typo():
    known = KNOWN["dagster"]
    assert any(r.match("dagsterDaemon.runRetries.maxRetries") for r in known)
    assert not any(r.match("dagsterDeamon.runRetries.maxRetries") for r in known)
    assert not any(r.match("runLauncher.config.k8sRunLauncher.resource.limits") for r in known)
    assert any(
        r.match("dagster-user-deployments.deployments[].labels.simlab.dev/component") for r in known
    )
