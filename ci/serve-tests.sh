#!/usr/bin/env bash
# The worker server: unit tests, lint, and the end-to-end tests of `halo serve` (real binary,
# tiny-mha model, a few server processes in all).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p halo-proto -p halo-server
cargo clippy -p halo-proto -p halo-server --all-targets --no-deps -- -D warnings
cargo test --test serve_api --test serve_scenarios
