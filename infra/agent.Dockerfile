# syntax=docker/dockerfile:1
# Agent images for the per-run ECS tasks (the worker's `ecs` executor; infra/outpost.yaml,
# parameters DeployAgentTasks and AgentImage): one image per agent, tagged `{AgentImage}:{agent}`,
# which the task definition `{Name}-agent-{agent}` runs (container `agent`).
#
# Build from the repository root, one target per agent, for the tasks' architecture
# (WorkerArchitecture, ARM64 by default):
#   docker buildx build --platform linux/arm64 -f infra/agent.Dockerfile --target claude -t $AgentImage:claude --push .
#   (targets: claude, codex, gemini, aider, grok; always name one, the default is only the last)
#
# Every image is `base` (the outpost-worker binary, whose `agent-run` command is the entrypoint,
# git, bubblewrap, the unprivileged user `outpost`, uid 10001) plus one agent CLI at the release
# the built-in entries are verified with (the pins of scripts/agent-clis; override with
# --build-arg, e.g. CLAUDE_CODE_VERSION). Nothing secret is baked in: the run's spec comes
# through a presigned URL (OUTPOST_RUN_SPEC_URL), the tenant's keys through the task's `secrets`
# (OUTPOST_SECRET_{NAME}, injected by ECS at start), and the task has no AWS role at all.
# The task definition sets initProcessEnabled, so an init forwards SIGTERM and reaps orphans.

# The pins of scripts/agent-clis (keep them equal).
ARG CLAUDE_CODE_VERSION=2.1.332
ARG CODEX_VERSION=0.171.0
ARG GEMINI_CLI_VERSION=0.61.0
ARG GROK_CLI_VERSION=0.0.34
ARG AIDER_VERSION=0.86.2
ARG NODE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------- the binaries (as worker.Dockerfile)
FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p outpost-worker -p outpost-confine \
    && install -m 0755 target/release/outpost-worker target/release/outpost-confine /usr/local/bin/

# Node.js 20 for the npm-distributed CLIs, taken from the official image (same Debian release).
FROM ${NODE_IMAGE} AS node

# ---------------------------------------------------------------- base: what every agent image has
FROM debian:bookworm-slim AS base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 outpost \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/outpost --shell /usr/sbin/nologin outpost
# outpost-confine applies Landlock to the agent (unprivileged; Fargate refuses user namespaces,
# so bubblewrap serves only where a runtime allows them).
COPY --from=build /usr/local/bin/outpost-worker /usr/local/bin/outpost-confine /usr/local/bin/
WORKDIR /home/outpost
ENV HOME=/home/outpost
USER 10001
ENTRYPOINT ["/usr/local/bin/outpost-worker", "agent-run"]

# ---------------------------------------------------------------- base + Node.js (root only while installing)
FROM base AS node-base
USER root
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && node --version && npm --version
USER 10001

# ---------------------------------------------------------------- one stage per agent CLI
FROM node-base AS claude
ARG CLAUDE_CODE_VERSION
USER root
RUN npm install -g --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
    && npm cache clean --force && rm -rf /root/.npm \
    && command -v claude >/dev/null
USER 10001

FROM node-base AS codex
ARG CODEX_VERSION
USER root
RUN npm install -g --no-audit --no-fund --loglevel=error "@openai/codex@${CODEX_VERSION}" \
    && npm cache clean --force && rm -rf /root/.npm \
    && command -v codex >/dev/null
USER 10001

FROM node-base AS gemini
ARG GEMINI_CLI_VERSION
USER root
RUN npm install -g --no-audit --no-fund --loglevel=error "@google/gemini-cli@${GEMINI_CLI_VERSION}" \
    && npm cache clean --force && rm -rf /root/.npm \
    && command -v gemini >/dev/null
USER 10001

FROM node-base AS grok
ARG GROK_CLI_VERSION
USER root
RUN npm install -g --no-audit --no-fund --loglevel=error "@vibe-kit/grok-cli@${GROK_CLI_VERSION}" \
    && npm cache clean --force && rm -rf /root/.npm \
    && command -v grok >/dev/null
USER 10001

# Aider in a venv of the system Python (Debian's python3 is externally managed, PEP 668), as
# scripts/agent-clis installs it.
FROM base AS aider
ARG AIDER_VERSION
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/aider \
    && /opt/aider/bin/pip install --no-cache-dir --disable-pip-version-check "aider-chat==${AIDER_VERSION}" \
    && ln -s /opt/aider/bin/aider /usr/local/bin/aider \
    && command -v aider >/dev/null
USER 10001
