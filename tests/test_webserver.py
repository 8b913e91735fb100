"""The Dagster UI (dagster-webserver on the code location) shows every experiment, its partitions
and a bad file's error: queried through the webserver's own GraphQL API."""

import json
import sys
import urllib.request
from pathlib import Path

import pytest
from lab import dagster_server, free_port

BIN = Path(sys.executable).parent


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                     data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def webserver(lab):
    (lab / "experiments" / "broken.yaml").write_text("name: broken\nmodel: mmck\nbogus: 1\n")
    port, log = free_port(), lab / "webserver.log"
    with dagster_server([str(BIN / "dagster-webserver"), "-m", "simlab_pipelines.definitions",
                         "-h", "127.0.0.1", "-p", str(port)], port, log, timeout=90):
        yield port, log


def test_ui_shows_experiments_partitions_and_rejected_files(webserver):
    port, log = webserver
    data = _graphql(port, """{
      assetNodes { assetKey { path } groupName description isPartitioned
        partitionKeysByDimension { name partitionKeys }
        metadataEntries { label ... on JsonMetadataEntry { jsonString } } }
    }""")["data"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"tiny_mmck/spec", "tiny_mmck/replications", "tiny_mmck/summary"} <= set(nodes)
    replications = nodes["tiny_mmck/replications"]
    assert replications["groupName"] == "tiny_mmck" and replications["isPartitioned"]
    dims = {d["name"]: d["partitionKeys"] for d in replications["partitionKeysByDimension"]}
    assert dims == {"config": ["servers-1", "servers-2"],
                    "replication": [str(r) for r in range(6)]}
    # the bad file is in the asset catalog, its errors as the description
    rejected = nodes["rejected_experiments/broken"]
    assert "broken.yaml" in rejected["description"] and "bogus" in rejected["description"]
    errors = {e["label"]: e.get("jsonString") for e in rejected["metadataEntries"]}
    assert "unknown key 'bogus'" in errors["errors"]  # field path and reason, as JSON
    # ... and in the code location's load log, with the file, the field and the reason
    loaded = log.read_text()
    assert "experiment file rejected:" in loaded and "broken.yaml: bogus: unknown key" in loaded


def test_ui_shows_the_summary_answer_and_plots_and_partition_metadata(webserver, lab):
    from click.testing import CliRunner

    from simlab_pipelines.cli import main

    port, _ = webserver
    result = CliRunner().invoke(main, ["sweep", str(lab / "experiments" / "tiny_mmck.yaml"),
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    data = _graphql(port, """{
      summary: assetNodes(assetKeys: [{path: ["tiny_mmck", "summary"]}]) {
        assetMaterializations(limit: 1) { metadataEntries { label
          ... on MarkdownMetadataEntry { mdStr } ... on TextMetadataEntry { text } } } }
      partition: assetNodes(assetKeys: [{path: ["tiny_mmck", "replications"]}]) {
        assetMaterializations(partitions: ["servers-2|3"]) { partition metadataEntries { label
          ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text }
          ... on FloatMetadataEntry { floatValue } } } }
    }""")["data"]
    (summary,) = data["summary"][0]["assetMaterializations"]
    entries = {e["label"]: e.get("mdStr") or e.get("text") for e in summary["metadataEntries"]}
    assert entries["answer"].startswith("Recommendation: servers 1 → 2")
    for plot in ("intervals_plot", "differences_plot"):
        assert entries[plot].startswith("![") and "(data:image/svg+xml;base64," in entries[plot]
    (partition,) = data["partition"][0]["assetMaterializations"]
    assert partition["partition"] == "servers-2|3"
    labels = {e["label"]: e for e in partition["metadataEntries"]}
    assert labels["seed_entropy"]["intValue"] == 7
    assert {"spawn_key", "params", "wall_seconds", "trace_id", "mean_wait"} <= set(labels)
