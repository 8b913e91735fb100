# syntax=docker/dockerfile:1
# simlab: one image for the Dagster code server (user deployment) and the run pods (K8sRunLauncher).
#
# Build:  docker build -t simlab:dev .
# Run:    docker run --rm simlab:dev simlab-engine models
# Without a registry (podman, a base made from Debian packages): scripts/build-image.
#
# Base image: the exact Python patch release on Debian bookworm, pinned by digest too. The digest
# below is the one public Dockerfiles pin for python:3.11.16-slim-bookworm; it could not be checked
# against the registry from the machine this file was written on (no registry access there). Check
# it, or refresh it, with:
#   docker buildx imagetools inspect python:3.11.16-slim-bookworm
# and override it without editing this file with --build-arg PYTHON_IMAGE=... (scripts/build-image
# passes a bookworm base made with debootstrap, laid out like this image: Python 3.11 as
# /usr/local/bin/python3, pip, CA certificates).
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# ---------------------------------------------------------------------------------------------
# Build stage: a virtual environment made from uv.lock, nothing else (the project comes next).
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# Where pip and uv find packages and which CA bundle they trust, for machines behind a mirror or
# a TLS-inspecting proxy (scripts/build-image passes the host's), and uv's cache: by default a
# build cache mount (below), kept by the builder between builds and never in the image;
# scripts/build-image points it at the host's own uv cache. Unset by default; only the build
# stages see them, and they are not shipped.
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT PIP_CERT \
    SSL_CERT_FILE UV_DEFAULT_INDEX UV_INDEX UV_INDEX_URL UV_EXTRA_INDEX_URL UV_FIND_LINKS \
    UV_INSECURE_HOST UV_HTTP_TIMEOUT UV_CONFIG_FILE UV_CACHE_DIR

# The same uv as the Makefile (installed from PyPI, so no other image needs pinning).
ARG UV_VERSION=0.13.9
RUN python -m pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

# uv: use the image's interpreter, copy files into the venv (no links into the cache, which is
# not in the image), compile bytecode once here instead of at every pod start.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/simlab/.venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file changes, and then downloads
# only the wheels the cache does not hold yet.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# ---------------------------------------------------------------------------------------------
# Project stage: simlab itself, installed (not editable) into that venv; its own files (what its
# wheel's RECORD lists, with their bytecode) are then set apart in /opt/simlab/project, so the
# runtime stage copies the dependencies (~1.2 GB, cached while uv.lock is unchanged) and the
# project (well under 1 MB) as separate layers: a code change rebuilds only the small one.
# ---------------------------------------------------------------------------------------------
FROM build AS project
# The same settings (an ARG does not carry over into a stage built FROM another).
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT PIP_CERT \
    SSL_CERT_FILE UV_DEFAULT_INDEX UV_INDEX UV_INDEX_URL UV_EXTRA_INDEX_URL UV_FIND_LINKS \
    UV_INSECURE_HOST UV_HTTP_TIMEOUT UV_CONFIG_FILE UV_CACHE_DIR
COPY README.md ./
COPY engine ./engine
COPY simlab_pipelines ./simlab_pipelines
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
 && /opt/simlab/.venv/bin/python -c 'import importlib.metadata as md, pathlib, shutil; \
venv, out = pathlib.Path("/opt/simlab/.venv"), pathlib.Path("/opt/simlab/project"); \
dist = md.distribution("simlab"); \
files = {pathlib.Path(dist.locate_file(f)).resolve() for f in dist.files}; \
files |= {c for f in list(files) if f.suffix == ".py" for c in (f.parent / "__pycache__").glob(f.stem + ".*.pyc")}; \
[(out / f.relative_to(venv)).parent.mkdir(parents=True, exist_ok=True) or shutil.copy2(f, out / f.relative_to(venv)) for f in files]; \
print(f"simlab: {len(files)} files set apart in {out}")'

# ---------------------------------------------------------------------------------------------
# Runtime stage: the venv, the experiment examples, a non-root user; no build tools, no secrets.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed numeric UID/GID (10001, also in the chart's securityContext) so Kubernetes can check
# runAsNonRoot and fsGroup can give the user its volumes.
RUN groupadd --system --gid 10001 simlab \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /opt/simlab --shell /usr/sbin/nologin simlab \
 && mkdir -p /opt/dagster/dagster_home /var/lib/simlab \
 && chown -R 10001:10001 /opt/dagster/dagster_home /var/lib/simlab

COPY --from=build /opt/simlab/.venv /opt/simlab/.venv

# matplotlib is imported whenever the definitions load (code server, every run pod) and wants a
# writable config/cache directory; the user's home is not writable, so it would warn and rebuild
# its font cache in a temporary directory in every pod. Build the cache once, owned by the user.
ENV MPLCONFIGDIR=/opt/simlab/.cache/matplotlib
RUN mkdir -p "$MPLCONFIGDIR" \
 && /opt/simlab/.venv/bin/python -c "import matplotlib.font_manager" \
 && chown -R 10001:10001 /opt/simlab/.cache

# The project's own files, into the venv (after the layers that do not depend on them).
COPY --from=project /opt/simlab/project/ /opt/simlab/.venv/

# Example experiment definitions; on Kubernetes the chart mounts its ConfigMap instead.
COPY --chown=10001:10001 experiments /opt/simlab/experiments

# DAGSTER_HOME is where the Helm chart mounts the instance dagster.yaml (same path as its default
# global.dagsterHome); it is empty in the image: no instance state is ever baked in.
ENV PATH=/opt/simlab/.venv/bin:$PATH \
    VIRTUAL_ENV=/opt/simlab/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    SIMLAB_EXPERIMENTS_DIR=/opt/simlab/experiments \
    SIMLAB_DATA_DIR=/var/lib/simlab

WORKDIR /opt/simlab
USER 10001:10001

EXPOSE 3030
# The code server; the chart's user deployment and the run launcher pass their own commands.
CMD ["dagster", "code-server", "start", "-m", "simlab_pipelines.definitions", "-h", "0.0.0.0", "-p", "3030"]
