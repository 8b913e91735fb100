"""How users' models reach run pods on Kubernetes, checked offline: an image built FROM simlab's
(examples/Dockerfile) with the plug-in package and the simulator binary installed, selected by the
code server's image in the chart (run pods inherit it); the schema checks that image's name and
the install stops when the run launcher would give run pods another image."""

import copy
from typing import Any

import helm_python as helm
import pytest
from test_dockerfile import global_args, parse_dockerfile, substitute
from test_helm_chart import (  # noqa: F401  (chart_dir, chart: fixtures)
    ROOT,
    chart,
    chart_dir,
    env_values,
    merge_values,
    render,
)

EXAMPLES = ROOT / "examples"
USER_IMAGE = {"repository": "registry.example.com:5000/team/simlab-models", "tag": "1.2.0",
              "pullPolicy": "IfNotPresent"}


def _with_code_server_image(loaded, image: dict[str, Any], launcher: dict[str, Any] | None = None
                            ) -> dict[str, Any]:
    """The local values with the code server's image replaced (a list: given whole, as Helm
    merges lists by replacing them)."""
    values = env_values("local")
    merged = loaded.merge_values(values)
    deployments = copy.deepcopy(merged["dagster"]["dagster-user-deployments"]["deployments"])
    deployments[0]["image"] = image
    override: dict[str, Any] = {"dagster": {"dagster-user-deployments": {
        "deployments": deployments}}}
    if launcher:
        override["dagster"]["runLauncher"] = {"config": {"k8sRunLauncher": launcher}}
    return merge_values(values, override)


def test_a_models_image_is_selected_by_the_code_server_image(chart):  # noqa: F811
    values = _with_code_server_image(chart, USER_IMAGE)
    chart.validate_schema(values)
    assert render(chart, values)  # our templates render with it
    merged = chart.merge_values(values)
    assert merged["dagster"]["dagster-user-deployments"]["deployments"][0]["image"] == USER_IMAGE
    # No image of their own: run pods get DAGSTER_CURRENT_IMAGE, the code server's.
    assert "image" not in merged["dagster"]["runLauncher"]["config"]["k8sRunLauncher"]
    # The same image named for the run launcher too is consistent, so accepted.
    same = _with_code_server_image(chart, USER_IMAGE, {"image": "registry.example.com:5000/team/"
                                                                "simlab-models:1.2.0"})
    assert render(chart, same)


@pytest.mark.parametrize(("image", "complaint"), [
    ({"repository": "", "tag": "1"}, "repository"),
    ({"repository": "team/simlab models", "tag": "1"}, "repository"),
    ({"repository": "team/simlab-models", "tag": ""}, "tag"),
    ({"repository": "team/simlab-models"}, "tag"),
    ({"repository": "team/simlab-models", "tag": "1", "pullPolicy": "Sometimes"}, "pullPolicy"),
])
def test_the_schema_rejects_a_bad_image(chart, image, complaint):  # noqa: F811
    with pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(_with_code_server_image(chart, image))
    assert complaint in str(raised.value)


def test_run_pods_may_not_get_another_image_than_the_code_server(chart):  # noqa: F811
    values = _with_code_server_image(chart, USER_IMAGE, {"image": "simlab:dev"})
    with pytest.raises(helm.HelmError) as raised:
        render(chart, values)
    message = str(raised.value)
    assert "dagster.runLauncher.config.k8sRunLauncher.image (simlab:dev)" in message
    assert "registry.example.com:5000/team/simlab-models:1.2.0" in message


def test_the_example_models_image_extends_simlabs():
    instructions = parse_dockerfile((EXAMPLES / "Dockerfile").read_text())
    args = global_args(instructions)
    froms = [substitute(i.value, args) for i in instructions if i.keyword == "FROM"]
    # The compiler stage uses simlab's own pinned base; the final stage is simlab's image.
    main = global_args(parse_dockerfile((ROOT / "Dockerfile").read_text()))
    assert froms[0].split()[0] == main["PYTHON_IMAGE"] and "@sha256:" in froms[0]
    assert froms[-1] == args["SIMLAB_IMAGE"] == "simlab:dev"
    final = [i for i in instructions if i.stage == len(froms) - 1]
    runs = " ".join(i.value for i in final if i.keyword == "RUN")
    assert "--python /opt/simlab/.venv/bin/python install" in runs  # into simlab's venv
    assert [i.value for i in final if i.keyword == "USER"][-1] == "10001"  # the chart's user
    copies = [i.value.split() for i in instructions if i.keyword == "COPY"]
    for parts in copies:
        sources = [p for p in parts[:-1] if not p.startswith("--")]
        if not any(p.startswith("--from") for p in parts):
            assert all((EXAMPLES / s).exists() for s in sources), parts
    assert ["--from=simulator", "/src/mm1", "/usr/local/bin/mm1"] in copies  # on PATH
