#!/usr/bin/env bash
# GPU checks for the CUDA backend (run on a machine with an NVIDIA GPU and CUDA 13 libraries):
# builds halo-cuda, compiles every kernel through the system NVRTC, and runs the ignored GPU
# tests (tiny-mha golden greedy ids in f32, alone and batched; bf16 generation), then the benchmark
# (ci/gpu-bench.sh: roofline ratio and throughput against transformers), whose table comes last.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
export HALO_REQUIRE_NVRTC=1
cargo test -p halo-cuda --release 2>&1 | tail -5
cargo test -p halo-cuda --release --test cuda_gpu -- --ignored --nocapture 2>&1 | tee /tmp/halo-gpu-tests.log | tail -20
echo
echo "| check | result |"
echo "| --- | --- |"
grep -E "^test " /tmp/halo-gpu-tests.log | sed -E 's/^test ([^ ]+) \.\.\. (.*)$/| \1 | \2 |/'
echo
# The benchmark prints its own table last.
bash ci/gpu-bench.sh
