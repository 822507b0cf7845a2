#!/usr/bin/env bash
# The Gaudi sidecar's tests, on torch CPU: pytest (sampler, bucketing, config, the model against
# every golden fixture) and halo-gaudi's Rust tests (the device over a real sidecar: golden ids,
# mixed batches, SIGKILL/SIGSTOP recovery, lying sidecars, reply-validation proptests, the
# sampler mirror). Exits non-zero on any failure.
#
# Builds or reuses the pinned venv first (ci/sidecar-venv.sh; cache $HALO_SIDECAR_VENV, default
# ~/.cache/halo/sidecar-venv, between CI runs).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=$("$root/ci/sidecar-venv.sh" | tail -n 1)
export HALO_SIDECAR_PYTHON="$python"
# Two cores in CI: one torch thread per process keeps parallel test binaries from thrashing.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

echo "== sidecar pytest" >&2
(cd "$root/crates/halo-gaudi/sidecar" && "$python" -m pytest -q -p no:cacheprovider tests)

echo "== halo-gaudi cargo tests" >&2
cd "$root"
cargo test -p halo-gaudi
