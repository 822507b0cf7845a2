#!/usr/bin/env bash
# Regenerates tests/fixtures/gguf-q4_0/: llama.cpp's own Q4_0 quantization of the kq-shared f16
# conversion (tests/fixtures/gguf/kq-shared-f16.gguf; llama-quantize's defaults, so the
# classifier is Q6_K and every other matrix, the token embeddings included, Q4_0), and
# q4_0-golden.json with llama.cpp's greedy ids and margins for it (see llamacpp_golden.py).
# Not run by CI: the outputs are committed (~1.1 MB).
#
#   LLAMA_CPP_SRC    llama.cpp's sources (the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp)
#   LLAMA_CPP_BIN    its build's bin/ (needs llama-quantize and llama-server)
#   CONVERT_PYTHON   a Python with numpy (gguf-py comes from LLAMA_CPP_SRC)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
shared="${HALO_SHARED_DIR:-$root/../shared}"
out="$root/tests/fixtures/gguf-q4_0"
: "${LLAMA_CPP_SRC:?set LLAMA_CPP_SRC}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}"
py="${CONVERT_PYTHON:-python3}"
mkdir -p "$out"
"$LLAMA_CPP_BIN/llama-quantize" "$root/tests/fixtures/gguf/kq-shared-f16.gguf" \
    "$out/kq-shared-Q4_0.gguf" Q4_0 >/dev/null 2>&1
PYTHONPATH="$LLAMA_CPP_SRC/gguf-py" "$py" "$root/ci/oracle/llamacpp_golden.py" \
    "$LLAMA_CPP_BIN/llama-server" "$out/q4_0-golden.json" "$shared/models" "$out/kq-shared-Q4_0.gguf"
ls -l "$out"
