# syntax=docker/dockerfile:1.7
# halo Gaudi worker. Build from the repository root:
#   docker build -f deploy/docker/gaudi.Dockerfile -t REGISTRY/halo:gaudi .
# The runtime is Habana's PyTorch image (SynapseAI, habana_frameworks and its own torch build);
# halo starts the PyTorch sidecar (crates/halo-gaudi/sidecar) in that image's Python. Only the
# sidecar's non-torch requirements are added. Match GAUDI_IMAGE to the node's driver release.
# Models come from a volume: --model /models/MODEL.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG GAUDI_IMAGE=vault.habana.ai/gaudi-docker/1.22.0/ubuntu24.04/habanalabs/pytorch-installer-2.7.1:latest

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
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
         || grep -m 1 '^license' Cargo.toml > /out/licenses/LICENSE; } \
    && grep -v -E '^(torch|pytest)==' crates/halo-gaudi/sidecar/requirements.txt \
       > /out/sidecar-requirements.txt

# Ubuntu 24.04's glibc (2.39) runs a binary linked against bookworm's (2.36).
FROM ${GAUDI_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=build /out/sidecar-requirements.txt /tmp/sidecar-requirements.txt
# numpy stays the one the Habana torch build was made with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && grep -v '^numpy==' /tmp/sidecar-requirements.txt > /tmp/req.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -r /tmp/req.txt \
    && rm -f /tmp/req.txt /tmp/sidecar-requirements.txt \
    && groupadd --system --gid 10001 halo \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/halo \
       --shell /usr/sbin/nologin halo
COPY --from=build /out/halo /usr/local/bin/halo
COPY --from=build /out/licenses/ /usr/share/doc/halo/
COPY crates/halo-gaudi/sidecar/halo_sidecar /opt/halo/sidecar/halo_sidecar
LABEL org.opencontainers.image.title="halo (gaudi)" \
      org.opencontainers.image.description="halo LLM inference worker, Intel Gaudi backend (PyTorch sidecar)" \
      org.opencontainers.image.licenses="Apache-2.0"
# The sidecar runs in the Habana stack's Python on HPU; its socket lives in a private directory
# under /tmp; Habana's logs go to /tmp too so the root filesystem can stay read-only.
ENV HALO_SIDECAR_PYTHON=/usr/bin/python3 \
    HALO_SIDECAR_DIR=/opt/halo/sidecar \
    HALO_SIDECAR_DEVICE=hpu \
    HABANA_LOGS=/tmp/habana_logs \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/halo", "serve", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9090"]
CMD ["--model", "/models/model", "--device", "gaudi"]
