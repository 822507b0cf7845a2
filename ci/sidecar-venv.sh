#!/usr/bin/env bash
# Creates, or reuses when its pins are unchanged, the Gaudi sidecar's Python environment.
#
# The venv lives outside the clone (torch from PyPI is ~3 GB) so CI can cache it:
#   HALO_SIDECAR_VENV   where to put it (default: ~/.cache/halo/sidecar-venv)
#   HALO_SIDECAR_BASE_PYTHON   the interpreter to build it from (default: python3, >= 3.10)
# Prints the venv's python path on its last line; `export HALO_SIDECAR_PYTHON=$(... | tail -1)`
# is optional because halo-gaudi looks in the default location.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req="$root/crates/halo-gaudi/sidecar/requirements.txt"
venv="${HALO_SIDECAR_VENV:-$HOME/.cache/halo/sidecar-venv}"
base="${HALO_SIDECAR_BASE_PYTHON:-python3}"
stamp="$venv/.halo-pins"

want=$({ cat "$req"; "$base" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -c 'import torch, grpc, grpc_tools, safetensors, numpy, pytest' 2>/dev/null; then
    echo "sidecar venv up to date: $venv" >&2
    echo "$venv/bin/python"
    exit 0
fi

echo "building the sidecar venv in $venv (pins changed or venv missing)" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$base" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-input -r "$req"
"$venv/bin/python" -c 'import torch, grpc, grpc_tools, safetensors, numpy, pytest; print("torch", torch.__version__)' >&2
# Written last: an interrupted build is rebuilt from scratch next time.
echo "$want" > "$stamp"
echo "$venv/bin/python"
