#!/usr/bin/env bash
# Regenerates tests/fixtures/gguf-bf16/: llama.cpp's own BF16 conversions of the shared tiny-mha
# model and of the tiny-bf16 fixture (a bf16 checkpoint, so its conversion is lossless), and
# bf16-golden.json with llama.cpp's greedy ids and margins for each (see llamacpp_golden.py).
# llama.cpp rounds activations to bf16 before they meet BF16 weights; these are the reference
# for halo's `--activation-dtype bf16`. Not run by CI: the outputs are committed (~1.4 MB).
#
#   LLAMA_CPP_SRC    llama.cpp's sources (the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp)
#   LLAMA_CPP_BIN    its build's bin/ (needs llama-server)
#   CONVERT_PYTHON   a Python with torch, transformers, numpy, sentencepiece (gguf-py comes from
#                    LLAMA_CPP_SRC)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
shared="${HALO_SHARED_DIR:-$root/../shared}"
out="$root/tests/fixtures/gguf-bf16"
: "${LLAMA_CPP_SRC:?set LLAMA_CPP_SRC}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}"
py="${CONVERT_PYTHON:-python3}"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

record() { # fixtures-dir name
    "$py" "$root/ci/oracle/gguf_convert.py" "$LLAMA_CPP_SRC" "$1/$2" \
        --outtype bf16 --outfile "$out/$2-bf16.gguf" >/dev/null 2>&1
    PYTHONPATH="$LLAMA_CPP_SRC/gguf-py" "$py" "$root/ci/oracle/llamacpp_golden.py" \
        "$LLAMA_CPP_BIN/llama-server" "$tmp/$2.json" "$1" "$out/$2-bf16.gguf"
}
record "$shared/models" tiny-mha
record "$root/tests/fixtures/models" tiny-bf16
"$py" -c 'import json, sys; print(json.dumps({k: v for f in sys.argv[1:] for k, v in json.load(open(f)).items()}, indent=1))' \
    "$tmp"/*.json > "$out/bf16-golden.json"
ls -l "$out"
