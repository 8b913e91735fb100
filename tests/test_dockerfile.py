"""Checks of the Dockerfile and .dockerignore without a Docker engine.

The Dockerfile is parsed into instructions (line continuations joined, comments dropped, ARG
defaults substituted into FROM) and checked for the properties the deployment relies on: a pinned,
multi-stage build from uv.lock, a numeric non-root user, DAGSTER_HOME, and nothing secret or
stateful copied in. Then its facts are checked against the project, where a mismatch would break
the image: the build stage copies what hatchling needs to build simlab; the image's uv is the
Makefile's and its Python the one the lock allows and the tests run; the user is the chart's and
owns the directories the pods write; every SIMLAB_* default is read by the code; every module the
code imports is installed without the dev group (closure of uv.lock); and the image's CMD and the
chart's code server command really serve simlab_pipelines.definitions (started here, in this venv,
with the image's ENV), pass the chart's readiness probe and report DAGSTER_CURRENT_IMAGE, the image
run pods get. The .dockerignore is evaluated with Docker's own rules (a pattern matches a path or
any parent directory; the last matching pattern wins; ``!`` re-includes).

The image is built and run for real in tests/test_container.py (scripts/build-image, podman).
"""

import ast
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SECRET_NAME = re.compile(
    r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)"
)
SECRET_PATH = re.compile(
    r"(?i)(^|/)(\.env(\..*)?|.*\.pem|.*\.key|id_rsa.*|\.aws|\.kube|kubeconfig|\.git|\.venv|data|dagster_home)(/|$)"
)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword, argument text, 1-based line, build stage index."""

    keyword: str
    value: str
    line: int
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, continuation lines joined and comments removed."""
    instructions: list[Instruction] = []
    stage = -1
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        joined = " ".join(part for part in buffer if part)
        buffer = []
        keyword, _, value = joined.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, value.strip(), start, stage))
    assert not buffer, "Dockerfile ends inside a line continuation"
    return instructions


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the only ones FROM may use)."""
    args: dict[str, str] = {}
    for instruction in instructions:
        if instruction.stage >= 0:
            break
        if instruction.keyword == "ARG" and "=" in instruction.value:
            name, _, default = instruction.value.partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def substitute(text: str, args: dict[str, str]) -> str:
    """Expand ${NAME} and $NAME from ``args``."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _froms(instructions: list[Instruction]) -> list[tuple[str, str | None, Instruction]]:
    """(image, stage alias, instruction) for every FROM, ARG defaults substituted."""
    args = global_args(instructions)
    result = []
    for instruction in instructions:
        if instruction.keyword != "FROM":
            continue
        words = [w for w in substitute(instruction.value, args).split() if not w.startswith("--")]
        alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
        result.append((words[0], alias, instruction))
    return result


def test_build_is_multi_stage_and_runtime_copies_the_venv_from_the_build_stage(instructions):
    froms = _froms(instructions)
    assert len(froms) >= 2, "Dockerfile: expected a build stage and a runtime stage"
    aliases = {alias for _, alias, _ in froms if alias}
    final_stage = froms[-1][2].stage
    copies_from = [
        i
        for i in instructions
        if i.stage == final_stage and i.keyword == "COPY" and "--from=" in i.value
    ]
    assert copies_from, "Dockerfile: the runtime stage copies nothing from an earlier stage"
    for copy in copies_from:
        source_stage = re.search(r"--from=(\S+)", copy.value).group(1)
        assert source_stage in aliases, f"Dockerfile:{copy.line}: --from={source_stage} is no stage"
    assert any(".venv" in c.value for c in copies_from), (
        "Dockerfile: the runtime stage must take the virtual environment from the build stage"
    )


def test_every_base_image_is_pinned_to_a_patch_version_and_a_digest(instructions):
    froms = _froms(instructions)
    stage_aliases = {alias for _, alias, _ in froms if alias}
    for image, _, instruction in froms:
        if image in stage_aliases:
            continue
        assert "@sha256:" in image and re.search(r"@sha256:[0-9a-f]{64}$", image), (
            f"Dockerfile:{instruction.line}: FROM {image} is not pinned by digest"
        )
        tag = image.split("@")[0].rpartition(":")[2]
        assert re.match(r"^\d+\.\d+\.\d+-", tag) or re.match(r"^\d+\.\d+\.\d+$", tag), (
            f"Dockerfile:{instruction.line}: FROM {image}: tag {tag!r} is not an exact "
            "MAJOR.MINOR.PATCH version"
        )
        assert "latest" not in tag


def test_final_user_is_numeric_and_not_root(instructions):
    final_stage = max(i.stage for i in instructions)
    users = [i for i in instructions if i.keyword == "USER" and i.stage == final_stage]
    assert users, "Dockerfile: the runtime stage sets no USER, so it would run as root"
    user = users[-1]
    uid, _, gid = user.value.partition(":")
    assert uid.isdigit(), f"Dockerfile:{user.line}: USER {user.value}: use a numeric UID"
    assert int(uid) != 0, f"Dockerfile:{user.line}: USER {user.value} is root"
    if gid:
        assert gid.isdigit() and int(gid) != 0, (
            f"Dockerfile:{user.line}: GID must be numeric, non-0"
        )


def test_dependencies_come_from_the_lock_file_before_the_project(instructions):
    runs = [i for i in instructions if i.keyword == "RUN"]
    syncs = [i for i in runs if "uv sync" in i.value]
    assert syncs, "Dockerfile: no `uv sync`"
    for sync in syncs:
        assert "--frozen" in sync.value, f"Dockerfile:{sync.line}: uv sync without --frozen"
        assert "--no-dev" in sync.value, f"Dockerfile:{sync.line}: uv sync would install dev tools"
    first = syncs[0]
    assert "--no-install-project" in first.value, (
        f"Dockerfile:{first.line}: the first uv sync should install only the locked dependencies"
    )
    copies_before = [
        i
        for i in instructions
        if i.keyword == "COPY" and i.line < first.line and i.stage == first.stage
    ]
    copied = " ".join(c.value for c in copies_before)
    assert "uv.lock" in copied and "pyproject.toml" in copied
    assert "engine" not in copied and "simlab_pipelines" not in copied, (
        "Dockerfile: source code copied before the dependency layer defeats the layer cache"
    )
    assert any(re.search(r"uv==\d+\.\d+\.\d+", i.value) or "UV_VERSION" in i.value for i in runs)
    assert re.search(r"ARG UV_VERSION=\d+\.\d+\.\d+", DOCKERFILE.read_text()), "uv version unpinned"


def test_nothing_secret_or_stateful_is_added_or_declared(instructions):
    assert not [i for i in instructions if i.keyword == "ADD"], (
        "Dockerfile: use COPY; ADD can fetch URLs and unpack archives"
    )
    for copy in (i for i in instructions if i.keyword == "COPY"):
        words = [w for w in copy.value.split() if not w.startswith("--")]
        for source in words[:-1]:
            if "--from=" in copy.value:
                continue  # from a build stage, not the context
            assert not SECRET_PATH.search(source), (
                f"Dockerfile:{copy.line}: COPY {source} would bake local state or secrets in"
            )
            assert source not in {".", "./"}, f"Dockerfile:{copy.line}: COPY of the whole context"
    for declared in (i for i in instructions if i.keyword in {"ENV", "ARG"}):
        names = re.findall(r"(\w+)=", declared.value) or [declared.value.split("=")[0]]
        for name in names:
            assert not SECRET_NAME.search(name), (
                f"Dockerfile:{declared.line}: {declared.keyword} {name} looks like a secret"
            )


def test_dagster_home_is_set_in_the_runtime_stage(instructions):
    final_stage = max(i.stage for i in instructions)
    envs = " ".join(i.value for i in instructions if i.keyword == "ENV" and i.stage == final_stage)
    match = re.search(r"DAGSTER_HOME=(\S+)", envs)
    assert match, "Dockerfile: the runtime stage does not set DAGSTER_HOME"
    assert match.group(1).startswith("/"), "DAGSTER_HOME must be an absolute path"


# --- what the build and the pods rely on, checked against the project --------------------


FIRST_PARTY = ("engine", "simlab_pipelines")


def _copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in instruction.value.split() if not w.startswith("--")]
    return [w.removeprefix("./").rstrip("/") for w in words[:-1]]


def runtime_env(instructions: list[Instruction]) -> dict[str, str]:
    """The ENV of the final stage (KEY=VALUE pairs, $VAR expanded from earlier ones)."""
    final_stage = max(i.stage for i in instructions)
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.stage == final_stage and instruction.keyword == "ENV":
            for name, value in shlex_pairs(instruction.value):
                env[name] = substitute(value, env)
    return env


def shlex_pairs(text: str) -> list[tuple[str, str]]:
    """ENV's KEY=VALUE pairs (quoted values unquoted)."""
    return [tuple(word.split("=", 1)) for word in shlex.split(text) if "=" in word]


def _stage_and_parents(instructions: list[Instruction], stage: int) -> set[int]:
    """A stage and the stages it is built FROM (``FROM build AS project``), transitively."""
    froms = _froms(instructions)
    by_alias = {alias: i.stage for _, alias, i in froms if alias}
    found = set()
    while stage is not None and stage not in found:
        found.add(stage)
        image = next(image for image, _, i in froms if i.stage == stage)
        stage = by_alias.get(image)
    return found


def test_build_stage_copies_what_the_project_build_needs(instructions):
    # `uv sync` without --no-install-project builds simlab's wheel with hatchling: every package
    # pyproject.toml names, and the readme it declares, must be in the build context by then.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    needed = ["pyproject.toml", "uv.lock", pyproject["project"]["readme"], *packages]
    project_sync = next(
        i
        for i in instructions
        if i.keyword == "RUN" and "uv sync" in i.value and "--no-install-project" not in i.value
    )
    stages = _stage_and_parents(instructions, project_sync.stage)
    copied = {
        source
        for i in instructions
        if i.keyword == "COPY" and i.stage in stages and i.line < project_sync.line
        for source in _copy_sources(i)
    }
    missing = [path for path in needed if path not in copied]
    assert not missing, f"Dockerfile:{project_sync.line}: the project build needs {missing} copied"
    for package in packages:
        assert (ROOT / package / "__init__.py").is_file(), f"pyproject.toml: no package {package}"


def test_the_image_uses_the_uv_that_wrote_the_lock():
    # A uv older than the lock's writer may not read it; the Makefile's uv made uv.lock.
    makefile = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    dockerfile = re.search(r"^ARG UV_VERSION=(\S+)", DOCKERFILE.read_text(), re.M)
    assert makefile and dockerfile, "UV_VERSION not found in Makefile or Dockerfile"
    assert dockerfile.group(1) == makefile.group(1), "Dockerfile and Makefile pin different uv"


def test_base_image_python_is_the_one_the_tests_run_and_the_lock_allows(instructions):
    image = next(image for image, _, i in _froms(instructions) if "@sha256:" in image)
    version = re.match(r"python:(\d+)\.(\d+)\.(\d+)", image.split("/")[-1])
    assert version, f"Dockerfile: base image {image} is not a python:X.Y.Z image"
    major, minor, patch = map(int, version.groups())
    requires = tomllib.loads((ROOT / "uv.lock").read_text())["requires-python"]
    assert SpecifierSet(requires).contains(f"{major}.{minor}.{patch}"), (image, requires)
    # The suite (and so every check here) runs on the image's Python minor version.
    assert sys.version_info[:2] == (major, minor), (
        f"tests run on Python {sys.version_info[:2]}, the image has {major}.{minor}"
    )


def test_runtime_user_is_the_chart_user_and_owns_the_writable_paths(instructions):
    final_stage = max(i.stage for i in instructions)
    user = [i for i in instructions if i.keyword == "USER" and i.stage == final_stage][-1]
    uid, _, gid = user.value.partition(":")
    values = yaml.safe_load((ROOT / "helm" / "simlab" / "values.yaml").read_text())["dagster"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    container = launcher["securityContext"]
    pod = launcher["runK8sConfig"]["podSpecConfig"]["securityContext"]
    assert (int(uid), int(gid or uid)) == (container["runAsUser"], container["runAsGroup"])
    assert pod["fsGroup"] == int(gid or uid)
    # Directories the processes write to (the instance dir, the data dir, matplotlib's cache)
    # are created in the image and handed to that user.
    env = runtime_env(instructions)
    runs = " ".join(i.value for i in instructions if i.keyword == "RUN" and i.stage == final_stage)
    chowned = re.findall(rf"chown -R {uid}:{gid or uid} ([^&]+)", runs)
    owned = {Path(path) for group in chowned for path in group.split()}
    for name in ("DAGSTER_HOME", "SIMLAB_DATA_DIR", "MPLCONFIGDIR"):
        path = Path(env[name])
        assert any(path == o or o in path.parents for o in owned), (
            f"Dockerfile: {name}={path} is not chowned to {uid}:{gid or uid}"
        )


def test_every_simlab_setting_in_the_image_is_read_by_the_code(instructions):
    # A misspelt or retired SIMLAB_* variable would be silently ignored.
    sources = "\n".join(
        path.read_text() for package in FIRST_PARTY for path in (ROOT / package).rglob("*.py")
    )
    settings = [name for name in runtime_env(instructions) if name.startswith("SIMLAB_")]
    assert settings, "Dockerfile: no SIMLAB_* defaults"
    unread = [name for name in settings if f'"{name}"' not in sources]
    assert not unread, f"Dockerfile sets {unread}, which nothing reads"


def _locked_runtime_distributions() -> set[str]:
    """Names of the packages `uv sync --frozen --no-dev` installs: the closure of the project's
    dependencies in uv.lock, with extras (markers ignored: a superset, never too small)."""
    packages = {p["name"]: p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    wanted, seen = [("simlab", None)], set()
    while wanted:
        name, extra = wanted.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        package = packages[name]
        deps = package.get("dependencies", []) if extra is None else []
        if extra is not None:
            deps = package.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            wanted.append((dep["name"], None))
            wanted.extend((dep["name"], e) for e in dep.get("extra", []))
    return {name for name, _ in seen}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _providers(module: str, top_level: dict[str, list[str]]) -> set[str]:
    """Distributions whose files hold ``module`` (a dotted name), found without importing it."""
    candidates = top_level.get(module.split(".")[0], [])
    if len(candidates) <= 1:
        return {_normalise(c) for c in candidates}
    # A namespace package shared by several distributions (opentelemetry): the one holding the
    # module's file, or its package directory. Nothing found: an attribute, not a module.
    parts = module.split(".")
    wanted = {"/".join(parts) + ".py", "/".join(parts) + "/__init__.py"}
    prefix = "/".join(parts) + "/"
    found = set()
    for name in candidates:
        files = importlib.metadata.distribution(name).files or []
        if any(str(f) in wanted or str(f).startswith(prefix) for f in files):
            found.add(_normalise(name))
    return found


def test_runtime_imports_are_installed_without_the_dev_group():
    # The image has no dev group (--no-dev): a module imported by engine/ or simlab_pipelines/
    # that only a dev tool brings in (moto, pytest, opentelemetry-proto...) works in the tests and
    # fails in every pod. Each imported module is traced to the distribution whose files hold it.
    top_level = importlib.metadata.packages_distributions()
    runtime = {_normalise(name) for name in _locked_runtime_distributions()}
    imported: dict[str, str] = {}
    for package in FIRST_PARTY:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # `from pkg import name` may name a submodule (checked if it is one).
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        imported.setdefault(name, str(path.relative_to(ROOT)))
    assert imported, "no third-party imports found"
    problems = []
    for module, where in sorted(imported.items()):
        if module.split(".")[0] not in top_level:
            problems.append(f"{where}: {module}: no installed distribution provides it")
            continue
        outside = _providers(module, top_level) - runtime
        if outside:
            problems.append(
                f"{where}: {module} comes from {sorted(outside)}, not a runtime dependency"
            )
    assert not problems, "\n".join(problems)


def test_the_lock_closure_helper_sees_the_dev_group_apart():
    # Guards the helper above: dev tools are outside the runtime closure, a deep runtime dep inside.
    runtime = {_normalise(name) for name in _locked_runtime_distributions()}
    assert {"dagster", "dagster-postgres", "psycopg2-binary", "s3fs", "grpcio"} <= runtime
    assert not {"pytest", "moto", "ruff", "helm-python-sdk", "kubernetes-validate"} & runtime


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entrypoint(kind: str, instructions: list[Instruction], port: int) -> list[str]:
    """The code server command of the image (its CMD) or of the chart's user deployment."""
    if kind == "image-cmd":
        (cmd,) = [i for i in instructions if i.keyword == "CMD"]
        args = json.loads(cmd.value)  # exec form: no shell, signals reach dagster
    else:
        # dagster-user-deployments templates/deployment-user.yaml: with dagsterApiGrpcArgs the
        # container runs `dagster api grpc -h 0.0.0.0 -p <port> <dagsterApiGrpcArgs...>`.
        values = yaml.safe_load((ROOT / "helm" / "simlab" / "values.yaml").read_text())
        (deployment,) = values["dagster"]["dagster-user-deployments"]["deployments"]
        args = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"])]
        args += deployment["dagsterApiGrpcArgs"]
    # Same command, reachable only from here, on a free port.
    for flag, value in (("-h", "127.0.0.1"), ("-p", str(port))):
        args[args.index(flag) + 1] = value
    return args


# The chart's command ("chart-user-deployment") runs in the built image in
# tests/test_container.py; the image's CMD, used by `docker run` only, is checked here.
@pytest.mark.parametrize("kind", ["image-cmd"])
def test_the_code_server_entrypoints_serve_the_simlab_definitions(kind, instructions, tmp_path):
    """The image's CMD starts (in this venv, with the image's ENV, paths moved to a temporary
    directory), passes the chart's readiness probe (`dagster api grpc-health-check`) and serves
    simlab_pipelines.definitions, reporting the image named by DAGSTER_CURRENT_IMAGE, which is
    the image every run pod gets."""
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._grpc.types import ListRepositoriesResponse
    from dagster._serdes import deserialize_value

    image_env = runtime_env(instructions)
    moved = {
        "DAGSTER_HOME": tmp_path / "dagster_home",
        "SIMLAB_DATA_DIR": tmp_path / "data",
        "MPLCONFIGDIR": tmp_path / "matplotlib",
        "SIMLAB_EXPERIMENTS_DIR": ROOT / "experiments",  # the image copies experiments/ there
    }
    for path in moved.values():
        path.mkdir(exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIMLAB_", "DAGSTER_", "OTEL_"))
    }
    env.update({k: v for k, v in image_env.items() if k not in ("PATH", "VIRTUAL_ENV")})
    env.update({k: str(v) for k, v in moved.items()})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env["OTEL_SDK_DISABLED"] = "true"
    env["DAGSTER_CURRENT_IMAGE"] = "registry.example/simlab:test"  # what the chart sets
    port = _free_port()
    args = _entrypoint(kind, instructions, port)
    assert args[0] == "dagster" and shutil.which("dagster", path=env["PATH"])
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"{args} exited:\n{log.read_text()}"
            if _listening(port):
                try:
                    response = deserialize_value(
                        client.list_repositories(), ListRepositoriesResponse
                    )
                    break
                except Exception:  # still loading the definitions
                    pass
            assert time.monotonic() < deadline, f"{args} never served:\n{log.read_text()}"
            time.sleep(0.5)
        # The chart's readiness probe, as the kubelet runs it.
        probe = ["dagster", "api", "grpc-health-check", "-p", str(port)]
        assert subprocess.run(probe, env=env, capture_output=True).returncode == 0
        pointers = list((response.repository_code_pointer_dict or {}).values())
        assert [getattr(p, "module", None) for p in pointers] == ["simlab_pipelines.definitions"]
        assert response.container_image == "registry.example/simlab:test"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- .dockerignore -------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (filepath.Match plus `**`) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                out = out[:-2] + "(?:.*/)?"
                i += 1
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(f"^{out}$")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per non-comment line of a .dockerignore."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's decision for ``path``: the last rule matching it or a parent directory wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules(DOCKERIGNORE.read_text())


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        "data/results/exp/cfg/0.parquet",
        "data/simlab.duckdb",
        "dagster_home/dagster.yaml",
        "dagster_home/storage/run.db",
        "dagster_home/history/runs.db",
        ".tools/bin/uv",
        ".env",
        "simlab_pipelines/.env",
        "engine/__pycache__/core.cpython-311.pyc",
        "helm/simlab/values.yaml",
        "tests/test_smoke.py",
        "deploy.pem",
        "benchmarks/results/run.json",
    ],
)
def test_dockerignore_keeps_state_and_secrets_out(path, ignore_rules):
    assert is_excluded(path, ignore_rules), f".dockerignore lets {path} into the build context"


def test_dockerignore_lets_in_everything_the_dockerfile_copies(instructions, ignore_rules):
    needed = ["pyproject.toml", "uv.lock", "README.md", "engine/models/mmck.py"]
    needed += ["simlab_pipelines/definitions.py", "experiments/restaurant_staffing.yaml"]
    for copy in (i for i in instructions if i.keyword == "COPY" and "--from=" not in i.value):
        words = [w for w in copy.value.split() if not w.startswith("--")]
        needed.extend(words[:-1])
    for path in needed:
        assert not is_excluded(path.rstrip("/"), ignore_rules), (
            f".dockerignore excludes {path}, which the Dockerfile needs"
        )


def test_the_dockerignore_matcher_follows_docker_semantics():
    # Guards the helper itself: negation order and parent-directory matching.
    rules = dockerignore_rules("*\n!src/\nsrc/secret.txt\n**/*.log")
    assert is_excluded("other.txt", rules)
    assert not is_excluded("src/app.py", rules)
    assert is_excluded("src/secret.txt", rules)
    assert is_excluded("src/deep/debug.log", rules)


# --- build arguments -----------------------------------------------------------------------


def _declared_args(instructions: list[Instruction], stage: int) -> set[str]:
    """Names a stage declares with ARG (several per instruction allowed, defaults dropped)."""
    names = set()
    for i in instructions:
        if i.keyword == "ARG" and i.stage == stage:
            names.update(word.split("=", 1)[0] for word in i.value.split())
    return names


def test_every_stage_that_downloads_packages_declares_the_index_and_ca_settings(instructions):
    # An ARG does not carry over into a stage built FROM another: a stage running pip or uv
    # without them cannot reach PyPI behind a TLS-inspecting proxy (the project stage once
    # failed that way). The shipped stage declares none of them.
    stages = {i.stage for i in instructions if i.keyword == "RUN"
              and re.search(r"\buv sync\b|pip install", i.value)}
    network = {name for stage in stages for name in _declared_args(instructions, stage)
               if name.startswith(("PIP_", "UV_", "SSL_")) and name != "UV_VERSION"}
    assert {"SSL_CERT_FILE", "PIP_CERT", "UV_CACHE_DIR"} <= network
    for stage in stages:
        missing = network - _declared_args(instructions, stage)
        assert not missing, f"Dockerfile: build stage {stage} does not declare {sorted(missing)}"
    final_stage = max(i.stage for i in instructions)
    assert final_stage not in stages
    assert not network & _declared_args(instructions, final_stage)
    # scripts/build-image passes only declared names (an undeclared one would be ignored).
    script = (ROOT / "scripts" / "build-image").read_text()
    passed = set(re.findall(r'"((?:UV|PIP|SSL)_[A-Z_]+)"', script))
    passed |= {"PIP_" + key.upper().replace("-", "_") for key in
               re.findall(r'"(index-url|extra-index-url|find-links|trusted-host|default-timeout)"',
                          script)}
    assert passed - {"UV_NO_CACHE"} <= network, sorted(passed - network)
