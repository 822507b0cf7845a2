# syntax=docker/dockerfile:1.7
# halo CPU worker. Build from the repository root:
#   docker build -f deploy/docker/cpu.Dockerfile -t REGISTRY/halo:cpu .
# Models are never baked in: mount the model directory (read-only) and pass --model.
#   docker run --rm -p 50051:50051 -p 9090:9090 -v /srv/models:/models:ro REGISTRY/halo:cpu \
#     --model /models/MODEL
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# g++ for esaxx-rs (the tokenizers crate's suffix array); protoc is vendored by halo-proto.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin halo \
    && install -D -m 0755 target/release/halo /out/halo \
    && mkdir -p /out/licenses \
    && { cp LICENSE* NOTICE* /out/licenses/ 2>/dev/null \
         || grep -m 1 '^license' Cargo.toml > /out/licenses/LICENSE; }

FROM debian:${DEBIAN_RELEASE}-slim
# tini is PID 1: it forwards SIGTERM to halo (which drains) even while the model loads, and
# reaps children.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 halo \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin halo
COPY --from=build /out/halo /usr/local/bin/halo
COPY --from=build /out/licenses/ /usr/share/doc/halo/
LABEL org.opencontainers.image.title="halo (cpu)" \
      org.opencontainers.image.description="halo LLM inference worker, CPU backend" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
# gRPC worker API (+ grpc.health.v1) and Prometheus metrics.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/halo", "serve", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9090"]
CMD ["--model", "/models/model"]
