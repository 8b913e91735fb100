# syntax=docker/dockerfile:1
# simlab: one image for the Dagster code server (user deployment) and the run pods (K8sRunLauncher).
#
# Build:  docker build -t simlab:dev .
# Run:    docker run --rm simlab:dev simlab-engine models
#
# Base image: the exact Python patch release on Debian bookworm, pinned by digest too. The digest
# below is the one public Dockerfiles pin for python:3.11.16-slim-bookworm; it could not be checked
# against the registry from the machine this file was written on (no registry access there). Check
# it, or refresh it, with:
#   docker buildx imagetools inspect python:3.11.16-slim-bookworm
# and override it without editing this file with --build-arg PYTHON_IMAGE=...
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# ---------------------------------------------------------------------------------------------
# Build stage: a virtual environment made from uv.lock, nothing else.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# The same uv as the Makefile (installed from PyPI, so no other image needs pinning).
ARG UV_VERSION=0.13.9
RUN python -m pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

# uv: use the image's interpreter, copy files into the venv (no hard links across layers),
# compile bytecode once here instead of at every pod start.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/simlab/.venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed (not editable) into the same venv.
COPY README.md ./
COPY engine ./engine
COPY simlab_pipelines ./simlab_pipelines
RUN uv sync --frozen --no-dev --no-editable

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
