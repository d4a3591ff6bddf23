#!/usr/bin/env bash
# The main job: build, boot the in-process Linux kernel and show what it has.
# Installs missing build dependencies first (sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo run --release --example kernel-info
