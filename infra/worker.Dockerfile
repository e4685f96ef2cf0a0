# syntax=docker/dockerfile:1
# Worker image for the ECS Fargate service (infra/outpost.yaml, parameter WorkerImage).
#
# Build from the repository root, for the task's architecture (WorkerArchitecture, ARM64 by default):
#   docker buildx build --platform linux/arm64 -f infra/worker.Dockerfile -t outpost-worker:TAG .
#
# The agents' own CLIs (claude, codex, gemini, aider, ...) are not in this image: add the ones your
# tenants use in a derived image (FROM outpost-worker:TAG), installed for the `outpost` user, at
# the releases the built-in entries are verified with (pinned in scripts/agent-clis). The worker
# runs as that user, so agents do too; a worker run as root would run them as `nobody`.

FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p outpost-worker \
    && install -m 0755 target/release/outpost-worker /usr/local/bin/outpost-worker

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates openssh-client tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 outpost \
    && useradd --uid 10001 --gid outpost --create-home --home-dir /home/outpost --shell /usr/sbin/nologin outpost \
    && install -d -o outpost -g outpost /home/outpost/work
COPY --from=build /usr/local/bin/outpost-worker /usr/local/bin/outpost-worker
USER 10001:10001
WORKDIR /home/outpost
ENV OUTPOST_BACKEND=aws \
    OUTPOST_WORK_DIR=/home/outpost/work
# tini forwards ECS's SIGTERM to the worker (which drains) and reaps the agents' orphans.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/outpost-worker"]
