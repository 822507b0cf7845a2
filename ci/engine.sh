#!/usr/bin/env bash
# halo-engine: lint and test the engine crate (scheduler, block manager, detokenizer, engine
# thread, CPU golden tests on tiny-mha), and check the scheduler bench builds.
# Needs ../shared beside the checkout (or HALO_SHARED_DIR) for tiny-mha.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt -p halo-engine -- --check
cargo clippy -p halo-engine --all-targets -- -D warnings
cargo test -p halo-engine
cargo bench --bench scheduler --no-run
