#!/usr/bin/env bash
# Long soak of one lklfuse mount: 16 concurrent clients with mixed file operations,
# the daemon's memory, host descriptors and statistics (SIGUSR1) watched throughout
# (tests/soak.rs). Needs root, like the other FUSE tests.
#
# Usage: contrib/soak.sh [--secs N]     (default 600 s; the CI run uses 60)
# Exit status: 0 when the soak passed, non-zero otherwise. The test's numbers (RSS samples,
# fd counts, statistics before/after drop_caches) are printed (--nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

secs=600
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) [ $# -ge 2 ] || { echo "soak.sh: --secs needs a value" >&2; exit 2; }
                secs="$2"; shift 2 ;;
        --secs=*) secs="${1#--secs=}"; shift ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument: $1 (usage: contrib/soak.sh [--secs N])" >&2; exit 2 ;;
    esac
done
case "$secs" in
    ''|*[!0-9]*) echo "soak.sh: --secs wants a whole number of seconds, not '$secs'" >&2; exit 2 ;;
esac

start=$(date +%s)
LKLFUSE_SOAK_SECS="$secs" cargo test --release --test soak -- --nocapture --test-threads=1
echo "soak of $secs s passed in $(( $(date +%s) - start )) s"
