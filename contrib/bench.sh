#!/usr/bin/env bash
# Side-by-side benchmark: the same freshly made image mounted natively (loop, when root),
# through fuse2fs (ext4, when installed) and through lklfuse (single-threaded -s, the
# default, -o writeback_cache and -o no_default_permissions), measured in one run. Prints
# absolute numbers and ratios against native, then each lklfuse variant against the
# project's speed goals.
#
#   contrib/bench.sh [--fs ext4|xfs|btrfs|...] [--size-mib 2048] [--rounds 3] [--quick]
#
# The sequential, small-file and source-tree phases run in --rounds rounds (variants taken
# in turn within each round, on a fresh image each time) and the table shows each one's
# median: on a virtual machine single runs swing by 2x. Mount time and fio run in the first
# round only. --quick shrinks every phase and runs one round unless told otherwise (a smoke run, numbers not
# meaningful). Exits non-zero if any run fails. Not a test: timings depend on the machine;
# run it on a quiet one.
set -euo pipefail
cd "$(dirname "$0")/.."

fs=ext4
size_mib=2048
quick=0
rounds=
while [ $# -gt 0 ]; do
  case "$1" in
    --fs) fs=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

case "$rounds" in
  ''|*[!0-9]*|0) [ -z "$rounds" ] || { echo "bench: --rounds needs a positive number" >&2; exit 2; } ;;
esac

bash contrib/deps.sh --bench >&2
for tool in fio python3 "mkfs.$fs"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install fio python3 and the mkfs for $fs)" >&2; exit 1; }
done
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bin lklfuse >&2
lklfuse="$PWD/target/release/lklfuse"

if [ "$quick" = 1 ]; then
  seq_mib=64; files=1000; fio_secs=3; mount_runs=3; rounds=${rounds:-1}
else
  seq_mib=512; files=10000; fio_secs=15; mount_runs=10; rounds=${rounds:-3}
fi

work=$(mktemp -d /tmp/lklfuse-bench.XXXXXX)
image="$work/bench.img"
mnt="$work/mnt"
mkdir -p "$mnt"
results="$work/results"
: > "$results"
# The raw "variant metric value" lines outlive the run, to check a surprising cell later.
raw_results="$PWD/target/bench-results-$(date +%Y%m%d-%H%M%S).txt"
cleanup() {
  fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  mkdir -p "$(dirname "$raw_results")"
  cp "$results" "$raw_results" 2>/dev/null && echo "bench: raw results in $raw_results" >&2
  rm -rf "$work"
}
trap cleanup EXIT

mkfs_image() {
  rm -f "$image"
  truncate -s "${size_mib}M" "$image"
  case "$fs" in
    # No lazy inode-table init: a kernel thread zeroing tables in the background would be
    # measured too (and differently in each variant).
    ext4|ext3|ext2) "mkfs.$fs" -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$image" ;;
    xfs|btrfs) "mkfs.$fs" -q -f "$image" ;;
    vfat) mkfs.vfat "$image" >/dev/null ;;
    *) "mkfs.$fs" "$image" >/dev/null ;;
  esac
  # Written back now, not by the host during the next variant's timed phases.
  sync
}

drop_host_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

# Variants: name, mount command, unmount command.
variants=()
if [ "$(id -u)" -eq 0 ]; then variants+=(native); fi
if [ "$fs" = ext4 ] && command -v fuse2fs >/dev/null; then variants+=(fuse2fs); fi
variants+=(lklfuse-s lklfuse lklfuse-wb lklfuse-nodp)

daemon_pid=""
do_mount() {
  case "$1" in
    native) mount -o loop -t "$fs" "$image" "$mnt" ;;
    fuse2fs) fuse2fs -o fakeroot "$image" "$mnt" >/dev/null ;;
    lklfuse-s) "$lklfuse" -s -o "type=$fs" "$image" "$mnt" ;;
    lklfuse) "$lklfuse" -o "type=$fs" "$image" "$mnt" ;;
    lklfuse-wb) "$lklfuse" -o "type=$fs,writeback_cache" "$image" "$mnt" ;;
    lklfuse-nodp) "$lklfuse" -o "type=$fs,no_default_permissions" "$image" "$mnt" ;;
  esac
  daemon_pid=$(pgrep -n -f "(lklfuse|fuse2fs).*$image" || true)
}

do_unmount() {
  case "$1" in
    native) umount "$mnt" ;;
    *) fusermount3 -u "$mnt"
       # The daemon exits once the image is consistent; wait for that.
       for _ in $(seq 1 300); do
         [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null || break
         sleep 0.1
       done ;;
  esac
}

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.6f}')" "$1" "$2"; }
record() { echo "$1 $2 $3" >> "$results"; }   # variant metric value

python3 - "$work/src" "$seq_mib" <<'EOF'
import os, sys
os.makedirs(os.path.dirname(sys.argv[1]) or ".", exist_ok=True)
with open(sys.argv[1], "wb") as f:
    block = os.urandom(1 << 20)
    for i in range(int(sys.argv[2])):
        f.write(block[i % 97:] + block[:i % 97])
EOF

# The source tree, as one archive: extracting it then reads nothing but this file.
tar -C /usr -cf "$work/tree.tar" include 2>/dev/null

# Reads a file into the host's page cache. The sequential read phase drops every cache, so
# without this the next write would read its source from the same disk it writes to, and
# measure that disk's read/write mix (single rounds of every variant swung 2x with it).
warm() { cat "$@" > /dev/null; }

small_files() {  # phase timings for N small files in 100 directories
  python3 - "$mnt/small" "$files" <<'EOF'
import os, subprocess, sys, time
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
dirs = [os.path.join(root, f"d{i:03}") for i in range(100)]
for d in dirs:
    os.mkdir(d)
names = [os.path.join(dirs[i % 100], f"f{i:06}") for i in range(n)]
data = b"x" * 4096
t = time.monotonic()
for p in names:
    with open(p, "wb") as f:
        f.write(data)
t1 = time.monotonic()
for p in names:
    os.stat(p)
t2 = time.monotonic()
# The tree walks people type: names only (find reads directories and needs no stat on
# ext4), then all that ls -l shows, which also asks two extended attributes of each file.
subprocess.run(["find", root], stdout=subprocess.DEVNULL, check=True)
tf = time.monotonic()
subprocess.run(["ls", "-lR", root], stdout=subprocess.DEVNULL, check=True)
tl = time.monotonic()
for p in names:
    with open(p, "rb") as f:
        f.read()
t3 = time.monotonic()
# cat itself: unlike Python's open(), it asks no isatty() ioctl of each file.
subprocess.run(["xargs", "-0", "cat"], input="\0".join(names).encode(),
               stdout=subprocess.DEVNULL, check=True)
t4 = time.monotonic()
for p in names:
    os.unlink(p)
t5 = time.monotonic()
print(f"{t1 - t:.6f} {t2 - t1:.6f} {tf - t2:.6f} {tl - tf:.6f} {t3 - tl:.6f} {t4 - t3:.6f} "
      f"{t5 - t4:.6f}")
EOF
}

fio_run() {  # name rw jobs direct
  fio --name="$1" --directory="$mnt" --filename=fio.dat --size=256M --bs=4k --rw="$2" \
      --numjobs="$3" --direct="$4" --ioengine=psync --time_based --runtime="$fio_secs" \
      --group_reporting --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' -v rw="$2" '{ if (rw == "randread") print $8; else print $49 }'
}

for round in $(seq 1 "$rounds"); do for v in "${variants[@]}"; do
  echo "== $v (round $round of $rounds)" >&2
  mkfs_image
  if [ "$round" = 1 ]; then
    # exec → mount ready
    samples=()
    for _ in $(seq 1 "$mount_runs"); do
      t0=$(now); do_mount "$v"; t1=$(now)
      samples+=("$(elapsed "$t0" "$t1")")
      do_unmount "$v"
    done
    record "$v" mount_ready_s "$(printf '%s\n' "${samples[@]}" | sort -n | sed -n "$(( (${#samples[@]} + 1) / 2 ))p")"
  fi

  # sequential write + fsync, then read with every cache dropped (remount)
  do_mount "$v"
  warm "$work/src"
  t0=$(now); dd if="$work/src" of="$mnt/seq" bs=1M conv=fsync status=none; t1=$(now)
  record "$v" seq_write_MBps "$(python3 -c "print(f'{$seq_mib*1.048576/($t1-$t0):.1f}')")"
  do_unmount "$v"; drop_host_caches; do_mount "$v"
  t0=$(now); dd if="$mnt/seq" of=/dev/null bs=1M status=none; t1=$(now)
  record "$v" seq_read_MBps "$(python3 -c "print(f'{$seq_mib*1.048576/($t1-$t0):.1f}')")"
  rm -f "$mnt/seq"

  # 4 KiB random I/O
  if [ "$round" = 1 ]; then
    for direct in 0 1; do
      for jobs in 1 4; do
        record "$v" "randread_${jobs}j_d${direct}_iops" "$(fio_run rr randread "$jobs" "$direct")"
        record "$v" "randwrite_${jobs}j_d${direct}_iops" "$(fio_run rw randwrite "$jobs" "$direct")"
      done
    done
    rm -f "$mnt"/fio.dat*
  fi

  # small files
  read -r c s f l r k u < <(small_files)
  record "$v" small_create_s "$c"; record "$v" small_stat_s "$s"
  record "$v" small_find_s "$f"; record "$v" small_ls_lR_s "$l"
  record "$v" small_read_s "$r"; record "$v" small_cat_s "$k"
  record "$v" small_unlink_s "$u"
  rm -rf "$mnt/small"

  # untar, du, rm -rf of a source tree
  warm "$work/tree.tar"
  t0=$(now); tar -C "$mnt" -xf "$work/tree.tar"; t1=$(now)
  du -s "$mnt/include" >/dev/null; t2=$(now)
  rm -rf "$mnt/include"; t3=$(now)
  record "$v" untar_s "$(elapsed "$t0" "$t1")"; record "$v" du_s "$(elapsed "$t1" "$t2")"
  record "$v" rm_rf_s "$(elapsed "$t2" "$t3")"

  if [ -n "$daemon_pid" ] && [ -r "/proc/$daemon_pid/status" ]; then
    record "$v" peak_rss_MiB "$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$daemon_pid/status")"
  fi
  do_unmount "$v"
done; done

echo
echo "lklfuse-rs benchmark: $fs, ${size_mib} MiB image, $(nproc) cores, median of $rounds rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" "${variants[@]}" <<'EOF'
import sys
import statistics
samples, variants = {}, sys.argv[2:]
for line in open(sys.argv[1]):
    v, metric, value = line.split()
    samples.setdefault(metric, {}).setdefault(v, []).append(float(value) if value else float("nan"))
rows = {m: {v: statistics.median(x) for v, x in vals.items()} for m, vals in samples.items()}
base = "native" if "native" in variants else None
higher_better = lambda m: m.endswith("MBps") or m.endswith("iops")
head = f"{'metric':<26}" + "".join(f"{v:>14}" for v in variants)
if base:
    head += "".join(f"{v + '/nat':>16}" for v in variants if v != base)
print(head)
for metric, vals in rows.items():
    line = f"{metric:<26}" + "".join(f"{vals.get(v, float('nan')):>14.3f}" for v in variants)
    if base and base in vals:
        for v in variants:
            if v == base or v not in vals:
                continue
            a, b = vals[v], vals[base]
            ratio = (a / b if higher_better(metric) else b / a) if a and b else float("nan")
            line += f"{ratio:>16.2f}"
    print(line)
if base:
    print("ratios: > 1 means faster than native (times are inverted so that higher is better)")

# The project's speed goals, checked for each lklfuse variant that has the numbers.
def speedup(metric, v, ref):  # how many times faster v is than ref (times inverted)
    vals = rows.get(metric, {})
    a, b = vals.get(v), vals.get(ref)
    if not a or not b:
        return None
    return a / b if higher_better(metric) else b / a

goals = [("mount ready <= 50 ms", lambda v: rows.get("mount_ready_s", {}).get(v), lambda x: x * 1000 <= 50, "{:.0f} ms", 1000)]
for m in ("seq_read_MBps", "seq_write_MBps"):
    goals.append((f"{m} >= 0.8x native", lambda v, m=m: speedup(m, v, "native"), lambda x: x >= 0.8, "{:.2f}x", 1))
goals.append(("randread_4j_d0 >= 0.5x native", lambda v: speedup("randread_4j_d0_iops", v, "native"), lambda x: x >= 0.5, "{:.2f}x", 1))
goals.append(("randread_4j_d0 >= 1.6x own 1 job", lambda v: (rows.get("randread_4j_d0_iops", {}).get(v) or 0) / (rows.get("randread_1j_d0_iops", {}).get(v) or float("nan")), lambda x: x >= 1.6, "{:.2f}x", 1))
for m in ("small_create_s", "small_stat_s", "small_find_s", "small_ls_lR_s", "small_unlink_s", "untar_s", "du_s", "rm_rf_s"):
    goals.append((f"{m[:-2]} >= 3x fuse2fs", lambda v, m=m: speedup(m, v, "fuse2fs"), lambda x: x >= 3, "{:.2f}x", 1))
goals.append(("cat >= 0.8x native", lambda v: speedup("small_cat_s", v, "native"), lambda x: x >= 0.8, "{:.2f}x", 1))
goals.append(("peak RSS <= 96 MiB", lambda v: rows.get("peak_rss_MiB", {}).get(v), lambda x: x <= 96, "{:.0f} MiB", 1))
ours = [v for v in variants if v.startswith("lklfuse")]
print()
print(f"{'goal':<34}" + "".join(f"{v:>16}" for v in ours))
for name, value, met, fmt, scale in goals:
    cells = []
    for v in ours:
        x = value(v)
        if x is None or x != x:
            cells.append(f"{'-':>16}")
        else:
            cells.append(f"{(fmt.format(x * scale) + (' ok' if met(x) else ' MISS')):>16}")
    print(f"{name:<34}" + "".join(cells))
EOF
