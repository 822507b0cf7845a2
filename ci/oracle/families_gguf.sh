#!/usr/bin/env bash
# Regenerates tests/fixtures/families/gguf/: llama.cpp's own conversions (f32, f16) of issue 16's
# family fixtures, and families-golden.json with llama.cpp's greedy ids for each file (see
# llamacpp_golden.py). Not run by CI: the outputs are committed.
#
#   LLAMA_CPP_SRC    llama.cpp's sources (the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp)
#   LLAMA_CPP_BIN    its build's bin/ (needs llama-server)
#   CONVERT_PYTHON   a Python with torch, transformers, numpy, sentencepiece (gguf-py comes from
#                    LLAMA_CPP_SRC)
#
# tiny-qwen3moe-dense0 is left out: llama.cpp's converter cannot map the dense layer of a
# qwen3moe model. tiny-phi3 is converted with --model-name tiny-longrope: llama.cpp gives any
# model whose general.name contains "phi3" the Phi-3 vocabulary's special-token attributes and
# stops when "<unk>" or "<|endoftext|>" is missing, which the fixture's 512-token vocabulary lacks.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fixtures="$root/tests/fixtures/families"
out="$fixtures/gguf"
: "${LLAMA_CPP_SRC:?set LLAMA_CPP_SRC}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}"
py="${CONVERT_PYTHON:-python3}"
mkdir -p "$out"

files=()
for name in tiny-qwen3 tiny-mixtral tiny-gemma2 tiny-gemma2-hub tiny-phi3 tiny-gemma3 tiny-gemma3-hub tiny-qwen3moe; do
    extra=()
    [[ $name == tiny-phi3 ]] && extra=(--model-name tiny-longrope)
    for t in f32 f16; do
        "$py" "$root/ci/oracle/gguf_convert.py" "$LLAMA_CPP_SRC" "$fixtures/$name" \
            --outtype "$t" --outfile "$out/$name-$t.gguf" "${extra[@]}" >/dev/null 2>&1
        files+=("$out/$name-$t.gguf")
    done
done

PYTHONPATH="$LLAMA_CPP_SRC/gguf-py" "$py" "$root/ci/oracle/llamacpp_golden.py" \
    "$LLAMA_CPP_BIN/llama-server" "$out/families-golden.json" "$fixtures" "${files[@]}"
ls -l "$out"
