#!/usr/bin/env bash
# halo bench: library unit tests (metric definitions on hand-made timelines, workload hashing,
# SSE parsing), the OpenAI target against an in-test SSE server, and the end-to-end run against
# a real `halo serve` on the tiny model. Called from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt -p halo-bench -- --check
cargo clippy -p halo-bench --no-deps --all-targets -- -D warnings
cargo test -p halo-bench
cargo test --test bench_e2e
