#!/usr/bin/env bash
# The official `openai` Python client in a pinned venv (tests/http/requirements.txt), built in
# ~/.cache/halo/openai-venv and reused while the pins and the base Python are unchanged (a few
# seconds warm, well under a minute cold: pip downloads ~5 MB from PyPI).
# Prints the venv's python on its last line:
#   HALO_OPENAI_PYTHON=$(bash ci/openai-venv.sh | tail -n 1)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req="$root/tests/http/requirements.txt"
venv="${HALO_OPENAI_VENV:-$HOME/.cache/halo/openai-venv}"
base="${HALO_OPENAI_BASE_PYTHON:-python3}"
stamp="$venv/.halo-pins"
imports='import openai'

want=$({ cat "$req"; "$base" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$venv/bin/python" -c "$imports" 2>/dev/null; then
  :
else
  echo "building the openai venv in $venv (pins changed or venv missing)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$base" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check -r "$req" >&2
  "$venv/bin/python" -c "$imports"
  # Written last: an interrupted build is rebuilt from scratch next time.
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
