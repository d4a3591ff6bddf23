#!/usr/bin/env bash
# Install what building and testing lklfuse-rs needs on Debian 12 / Ubuntu.
# Idempotent: installs only missing packages; uses sudo when not root.
#
#   contrib/deps.sh [--bench]    (--bench: also what contrib/bench.sh measures against)
set -euo pipefail

packages=(
  linux-source-6.12            # the kernel we compile into the process
  build-essential bc flex bison libelf-dev libssl-dev xz-utils rsync perl patch
  libclang-dev clang           # bindgen
  fuse3 libfuse3-dev pkg-config
  e2fsprogs
  # filesystem tools the tests use to make and check reference images
  xfsprogs btrfs-progs dosfstools mtools exfatprogs ntfs-3g xorriso genisoimage
  udftools squashfs-tools erofs-utils f2fs-tools fdisk gdisk attr acl exfat-fuse
  # system-integration tests: units, udev rules, man pages, scripts
  systemd udev man-db groff-base shellcheck
  libglib2.0-bin               # `gio`: the desktop file-manager test (integration_gio)
  python3 util-linux passwd    # test scripts (renameat2, mmap), setpriv, useradd
  time                         # /usr/bin/time: max RSS of the tools in tests
)
case "${1:-}" in
  --bench) packages+=(fio fuse2fs) ;;  # the benchmark's load and its FUSE reference
  '') ;;
  *) echo "deps: unknown argument $1 (only --bench)" >&2; exit 2 ;;
esac

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "cargo is in ~/.cargo/bin: add it to PATH" >&2
  else
    echo "error: cargo not found: install Rust with https://rustup.rs" >&2
    exit 1
  fi
fi
