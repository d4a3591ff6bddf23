#!/usr/bin/env bash
# Run every test: installs missing build dependencies first (sudo when not root).
# Each tests/*.rs file is its own process with its own in-process kernel;
# tests inside one file share that kernel (one kernel per process).
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

start=$(date +%s)
cargo build --release --all-targets
cargo test --release -- --test-threads=4
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
echo "all tests passed in $(( $(date +%s) - start )) s"
