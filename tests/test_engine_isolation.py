"""The engine is headless and orchestration-free: importing and running it (API, CLI, theory,
demo) in a fresh interpreter loads nothing from Dagster, OpenTelemetry or simlab_pipelines."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
FORBIDDEN = ("dagster", "opentelemetry", "simlab_pipelines")

CODE = """
import json, sys
import engine, engine.cli, engine.demo, engine.theory
engine.simulate("mmck", {"servers": 2}, replication=0, seed=1, horizon=50, warmup=5)
engine.simulate("restaurant", {}, replication=0, seed=1, horizon=50, warmup=5)
engine.theory.mmck(2, 5, 1.0, 1.0)
try:
    engine.cli.main(["models", "--json"], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def test_fresh_interpreter_loads_no_orchestration_module():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert "engine.models.mmck" in loaded and "simpy" in loaded  # it really ran the engine
    leaked = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert leaked == []


def test_engine_sources_import_nothing_from_orchestration():
    # Also catches imports on paths the run above does not take.
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
