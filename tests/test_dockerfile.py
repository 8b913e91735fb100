"""Static checks of the Dockerfile and .dockerignore (no Docker engine needed).

The Dockerfile is parsed into instructions (line continuations joined, comments dropped, ARG
defaults substituted into FROM) and checked for the properties the deployment relies on: a pinned,
multi-stage build from uv.lock, a numeric non-root user, DAGSTER_HOME, and nothing secret or
stateful copied in. The .dockerignore is evaluated with Docker's own rules (a pattern matches a
path or any parent directory; the last matching pattern wins; ``!`` re-includes).

A real ``docker build`` runs only when an engine answers and SIMLAB_TEST_DOCKER_BUILD=1, because
it downloads the base image and the locked wheels (minutes, network).
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

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


def _docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
def test_image_builds_and_runs_as_non_root():
    if os.environ.get("SIMLAB_TEST_DOCKER_BUILD") != "1":
        pytest.skip(
            "docker build takes minutes and network; set SIMLAB_TEST_DOCKER_BUILD=1 to run it"
        )
    if not _docker_engine_available():
        pytest.skip("no Docker engine answers `docker info` on this machine")
    tag = "simlab:test-build"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    uid = subprocess.run(
        ["docker", "run", "--rm", tag, "id", "-u"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert uid == "10001"
    subprocess.run(["docker", "run", "--rm", tag, "simlab-engine", "models"], check=True)
