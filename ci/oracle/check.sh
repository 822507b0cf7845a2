#!/usr/bin/env bash
# CI step: re-checks the committed reference fixtures against transformers (tests/fixtures/models
# and tests/fixtures/families:
# every golden reproduces from the files on disk, and each fixture exercises the feature it is
# named for). Needs the pinned reference venv; builds it, or reuses it when the pins are unchanged.
#   HALO_REF_VENV         where the venv lives (default: ~/.cache/halo/ref-venv; torch is large)
#   HALO_REF_PYTHON       use this interpreter instead of building a venv (e.g. an existing one)
#   HALO_REF_BASE_PYTHON  the interpreter to build the venv from (default: python3)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
req="$root/ci/oracle/requirements.txt"

if [[ -n "${HALO_REF_PYTHON:-}" ]]; then
    py="$HALO_REF_PYTHON"
else
    venv="${HALO_REF_VENV:-$HOME/.cache/halo/ref-venv}"
    base="${HALO_REF_BASE_PYTHON:-python3}"
    stamp="$venv/.halo-pins"
    want=$({ cat "$req"; "$base" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
    if ! [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        || ! "$venv/bin/python" -c 'import torch, transformers, tokenizers, safetensors' 2>/dev/null; then
        echo "building the reference venv in $venv" >&2
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "$base" -m venv "$venv"
        # the CPU wheel is all the oracle needs
        "$venv/bin/python" -m pip install --quiet --no-input \
            --extra-index-url https://download.pytorch.org/whl/cpu -r "$req"
        echo "$want" > "$stamp"
    fi
    py="$venv/bin/python"
fi

"$py" "$root/ci/oracle/check_fixtures.py" "$root/tests/fixtures/models"
# issue 16's families (Qwen3, Mixtral, Gemma 2/3, Phi-3, Qwen3-MoE), with their feature checks
"$py" "$root/ci/oracle/check_fixtures.py" "$root/tests/fixtures/families"
