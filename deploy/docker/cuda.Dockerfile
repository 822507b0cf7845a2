# syntax=docker/dockerfile:1.7
# halo CUDA worker. Build from the repository root:
#   docker build -f deploy/docker/cuda.Dockerfile -t REGISTRY/halo:cuda .
# halo loads CUDA at run time (cudarc, dynamic loading) and compiles its kernels with NVRTC for
# the GPU it finds, so the build needs no CUDA toolkit. The runtime base carries libnvrtc.so.13
# and libcublas.so.13; the node needs an NVIDIA driver >= 580 (CUDA 13) and the NVIDIA
# container toolkit. Models come from a volume: --model /models/MODEL.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

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
         || grep -m 1 '^license' Cargo.toml > /out/licenses/LICENSE; }

# Ubuntu 24.04's glibc (2.39) runs a binary linked against bookworm's (2.36).
FROM ${CUDA_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 halo \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin halo
COPY --from=build /out/halo /usr/local/bin/halo
COPY --from=build /out/licenses/ /usr/share/doc/halo/
LABEL org.opencontainers.image.title="halo (cuda)" \
      org.opencontainers.image.description="halo LLM inference worker, CUDA backend" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/halo", "serve", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9090"]
CMD ["--model", "/models/model", "--device", "cuda"]
