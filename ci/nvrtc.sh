#!/usr/bin/env bash
# Compiles every CUDA kernel under NVRTC for sm_80 and sm_90, without a GPU. Installs a pinned
# NVRTC from PyPI into .venv-nvrtc (gitignored) and points cudarc's dynamic loader at it.
# nvidia-cuda-nvrtc 13.0.88 ships libnvrtc.so.13, which cudarc's cuda-13000 feature looks for.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-nvrtc
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "nvidia-cuda-nvrtc==13.0.88"
LIB="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
test -e "$LIB/libnvrtc.so.13" || { echo "libnvrtc.so.13 not found under $LIB" >&2; exit 1; }
export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export HALO_REQUIRE_NVRTC=1
cargo test -p halo-cuda --test nvrtc_compile
