#!/usr/bin/env bash
# Regenerates tests/fixtures/gguf/: llama.cpp's own conversions of the shared reference models,
# the files ../shared/models/gguf/llamacpp-golden.json describes (llama.cpp's greedy ids and
# margins for each). Not run by CI: the outputs are committed (a few MB).
#
#   LLAMA_CPP_SRC    llama.cpp's sources (the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp)
#   LLAMA_CPP_BIN    its build's bin/ (cmake -DGGML_NATIVE=ON; needs llama-quantize)
#   CONVERT_PYTHON   a Python with torch, transformers, numpy, sentencepiece and gguf-py
#
# Conversions as the README of ../shared/models/gguf records them: f32/f16/q8_0 by
# convert_hf_to_gguf.py (pre-tokenizer forced to "gpt-2", see gguf_convert.py), Q4_K_M and Q6_K
# by llama-quantize from the f16 file.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
shared="${HALO_SHARED_DIR:-$root/../shared}"
out="$root/tests/fixtures/gguf"
: "${LLAMA_CPP_SRC:?set LLAMA_CPP_SRC}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}"
py="${CONVERT_PYTHON:-python3}"
mkdir -p "$out"

convert() { # model outtype file
    "$py" "$root/ci/oracle/gguf_convert.py" "$LLAMA_CPP_SRC" "$shared/models/$1" \
        --outtype "$2" --outfile "$out/$3" >/dev/null
}

convert tiny-mha f32 tiny-mha-f32.gguf
convert tiny-mha f16 tiny-mha-f16.gguf
convert tiny-mha q8_0 tiny-mha-q8_0.gguf
convert kq-shared f16 kq-shared-f16.gguf
convert kq-shared q8_0 kq-shared-q8_0.gguf
"$LLAMA_CPP_BIN/llama-quantize" "$out/kq-shared-f16.gguf" "$out/kq-shared-Q4_K_M.gguf" Q4_K_M >/dev/null 2>&1
"$LLAMA_CPP_BIN/llama-quantize" "$out/kq-shared-f16.gguf" "$out/kq-shared-Q6_K.gguf" Q6_K >/dev/null 2>&1

# Every tensor's type must be what llama.cpp's golden run saw.
"$py" - "$out" "$shared/models/gguf/llamacpp-golden.json" <<'EOF'
import json, sys
from pathlib import Path
from gguf import GGUFReader
out, golden = Path(sys.argv[1]), json.load(open(sys.argv[2]))
for name, entry in golden.items():
    types = {t.name: t.tensor_type.name for t in GGUFReader(out / name).tensors}
    assert types == entry["tensor_types"], (name, types)
print(f"{len(golden)} files match llamacpp-golden.json's tensor types")
EOF
ls -l "$out"
