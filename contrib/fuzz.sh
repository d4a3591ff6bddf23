#!/usr/bin/env bash
# Long mode of the hostile-image fuzzer (tests/fuzz_images.rs): every
# filesystem's image damaged in metadata, mounted through lklfuse, walked,
# written, unmounted; the daemon must refuse cleanly or survive, never crash,
# hang, panic or leave a mount (see the header of tests/fuzz_images.rs).
#
# Usage: contrib/fuzz.sh [--cases N] [--seed S] [--fs ext4,vfat,...] [--only CASE]
#                        [--threads T] [--verbose]
#   --cases N    cases per filesystem (default 1000, about 20 min for all of
#                them on 2 cores; the test suite runs 50)
#   --seed S     seed base (default 1); same seed + case = same mutation
#   --fs LIST    comma-separated filesystems (test names): ext2 ext3 ext4 xfs
#                btrfs vfat exfat ntfs3 iso9660 udf squashfs erofs f2fs hfsplus
#                (default: all)
#   --only CASE  replay one case (the line printed with a failure says which)
#   --threads T  filesystems fuzzed in parallel (default 4)
#   --verbose    one line per case: mutation, outcome, errnos
#
# Needs root (FUSE mounts, loop mounts for building images) and the tools of
# contrib/deps.sh. Runs in release mode with --nocapture so that the
# per-filesystem summaries (outcome counts, errnos seen and the first case that
# saw each) are printed. Exits non-zero when any case failed; failing images
# and daemon logs stay in $TMPDIR/lklfuse-fuse-tests/fuzz_images/<fs>/, images
# that made the daemon stop on a fatal kernel error in
# target/tmp/lklfuse-fuzz-findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

cases=1000
seed=1
fslist=""
only=""
threads=4
verbose=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) cases="${2:?--cases needs a number}"; shift 2 ;;
        --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
        --fs) fslist="${2:?--fs needs a list}"; shift 2 ;;
        --only) only="${2:?--only needs a case number}"; shift 2 ;;
        --threads) threads="${2:?--threads needs a number}"; shift 2 ;;
        --verbose) verbose=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "fuzz.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
done
for n in "$cases" "$seed" "$threads" ${only:+"$only"}; do
    case "$n" in ''|*[!0-9]*) echo "fuzz.sh: not a number: $n" >&2; exit 2 ;; esac
done

known=" ext2 ext3 ext4 xfs btrfs vfat exfat ntfs3 iso9660 udf squashfs erofs f2fs hfsplus "
filters=()
if [ -n "$fslist" ]; then
    IFS=, read -r -a filters <<< "$fslist"
    for f in "${filters[@]}"; do
        # An unknown name would match no test and "pass" having run nothing.
        case "$known" in *" $f "*) ;; *) echo "fuzz.sh: unknown filesystem: $f (known:$known)" >&2; exit 2 ;; esac
    done
fi

export LKLFUSE_FUZZ_CASES="$cases" LKLFUSE_FUZZ_SEED="$seed" LKLFUSE_FUZZ_VERBOSE="$verbose"
if [ -n "$only" ]; then
    export LKLFUSE_FUZZ_ONLY="$only"
else
    unset LKLFUSE_FUZZ_ONLY
fi

start=$(date +%s)
status=0
cargo test --release --test fuzz_images -- --exact --nocapture --test-threads="$threads" \
    "${filters[@]}" || status=$?
echo "fuzz.sh: cases=$cases seed=$seed fs=${fslist:-all}${only:+ only=$only}:" \
    "$([ "$status" = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s"
exit "$status"
