#!/usr/bin/env bash
# Every test of the project, as CI runs it (.ci/run calls this; so can you):
#   1. the Gaudi sidecar's pinned Python env (cached in ~/.cache/halo/sidecar-venv) and pytest;
#   2. every CUDA kernel compiled by NVRTC for sm_80 and sm_90 (pinned NVRTC from PyPI, no GPU);
#   3. cargo test over the whole workspace (unit, property, golden, end-to-end and scenario tests),
#      every test binary even after one fails (--no-fail-fast), so one failure hides no other;
#   4. formatting and clippy with warnings as errors, and the fuzz targets (their own workspace,
#      run with nightly) checked on stable so an API change cannot leave one unbuildable.
# (Also the pinned `openai` Python client's venv, which tests/serve_http_openai.rs drives.)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [ ! -d ../shared/models/tiny-mha ] && [ -z "${HALO_SHARED_DIR:-}" ]; then
  echo "ci/test.sh: ../shared (the reference models) must sit beside the clone, or set HALO_SHARED_DIR" >&2
  exit 2
fi

# The TLS test makes its certificates with the openssl command.
if ! command -v openssl >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq openssl) >&2
fi

HALO_DEPLOY_PYTHON=$(bash ci/deploy-check.sh | tail -n 1); export HALO_DEPLOY_PYTHON  # deploy/: lint, render, validate

echo "== sidecar environment (first run: pip downloads torch with its CUDA wheels, ~5.5 GB in ~/.cache/halo)" >&2
HALO_SIDECAR_PYTHON=$(bash ci/sidecar-venv.sh | tail -n 1)
export HALO_SIDECAR_PYTHON
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

echo "== sidecar pytest" >&2
(cd crates/halo-gaudi/sidecar && "$HALO_SIDECAR_PYTHON" -m pytest -q -p no:cacheprovider tests)

echo "== openai client environment (pinned, ~/.cache/halo/openai-venv; tests/serve_http_openai.rs)" >&2
HALO_OPENAI_PYTHON=$(bash ci/openai-venv.sh | tail -n 1)
export HALO_OPENAI_PYTHON

echo "== CUDA kernels under NVRTC" >&2
bash ci/nvrtc.sh

# From here every step runs even when an earlier one fails; the script fails if any did.
failed=()
echo "== cargo test --workspace" >&2
cargo test --workspace --all-targets --no-fail-fast || failed+=("cargo test")

echo "== fmt and clippy" >&2
cargo fmt --all -- --check || failed+=("cargo fmt")
cargo clippy --workspace --all-targets -- -D warnings || failed+=("cargo clippy")

echo "== fuzz targets build" >&2
cargo fmt --manifest-path fuzz/Cargo.toml -- --check || failed+=("fuzz fmt")
cargo check --manifest-path fuzz/Cargo.toml --bins || failed+=("fuzz targets check")

if ((${#failed[@]})); then
  echo "ci/test.sh: failed: ${failed[*]}" >&2
  exit 1
fi
