# syntax=docker/dockerfile:1
# Worker image for the ECS Fargate service (infra/outpost.yaml, parameter WorkerImage).
#
# Build from the repository root, for the task's architecture (WorkerArchitecture, ARM64 by default):
#   docker buildx build --platform linux/arm64 -f infra/worker.Dockerfile -t outpost-worker:TAG .
#
# The agents' own CLIs (claude, codex, gemini, aider, ...) are not in this image: add the ones your
# tenants use in a derived image (FROM outpost-worker:TAG), readable by every user, at the
# releases the built-in entries are verified with (pinned in scripts/agent-clis).
#
# The worker runs as root inside the container so that it can give every run's agent a uid of its
# own (the default SETUID/SETGID capabilities suffice; docs/SECURITY.md): agents never run as
# root or as the worker. Fargate refuses user namespaces, so runs there are `standard` (uid,
# Landlock, limits); on an ECS EC2 host whose runtime allows them, bubblewrap makes them `strict`.

FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p outpost-worker -p outpost-confine \
    && install -m 0755 target/release/outpost-worker target/release/outpost-confine /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates openssh-client tini bubblewrap iptables \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -m 0711 /var/lib/outpost/work
COPY --from=build /usr/local/bin/outpost-worker /usr/local/bin/outpost-confine /usr/local/bin/
WORKDIR /var/lib/outpost
ENV OUTPOST_BACKEND=aws \
    OUTPOST_WORK_DIR=/var/lib/outpost/work
# tini forwards ECS's SIGTERM to the worker (which drains) and reaps the agents' orphans.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/outpost-worker"]
