#!/usr/bin/env bash
# Build lklfuse in release mode and install it where Debian expects things:
#
#   contrib/install.sh [--prefix /usr/local] [--destdir DIR] [--no-build]
#
#   PREFIX/bin/                          lklfuse (and cptofs, cpfromfs, fs2tar when built)
#   PREFIX/share/man/man{1,8}/           man pages
#   PREFIX/lib/systemd/user/             lklfuse@.service
#   PREFIX/lib/systemd/system/           lklfuse-usb@.service     (started only by the rules)
#   PREFIX/lib/udev/rules.d/             61-lklfuse-usb.rules     (OPT-IN: inert until
#                                        /etc/lklfuse/usb-automount exists)
#   PREFIX/lib/lklfuse/                  lklfuse-usb-mount        (the USB unit's helper)
#   PREFIX/share/doc/lklfuse/examples/   mnt-disk.mount           (example mount unit)
#   bash/zsh/fish completions            in their vendor directories below PREFIX/share
#
# /etc/fstab entries of type fuse.lklfuse need no extra file: mount(8) runs mount.fuse3,
# which runs `lklfuse` from PATH (so PREFIX/bin must be in root's and users' PATH).
# Paths in the units and the helper are rewritten to PREFIX. udev reads rules only from
# /usr/lib/udev/rules.d and /etc/udev/rules.d; with another PREFIX, link the rules file
# into /etc/udev/rules.d to use it. Run `systemctl daemon-reload` and
# `systemctl --user daemon-reload` afterwards.
set -euo pipefail

prefix=/usr/local
destdir=""
build=true
while [ $# -gt 0 ]; do
	case $1 in
	--prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
	--prefix=*) prefix=${1#--prefix=}; shift ;;
	--destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
	--destdir=*) destdir=${1#--destdir=}; shift ;;
	--no-build) build=false; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done
case $prefix in
/*) ;;
*) echo "install.sh: --prefix must be absolute: $prefix" >&2; exit 2 ;;
esac
prefix=${prefix%/}

src=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$src/target}
if $build; then
	(cd "$src" && cargo build --release --bins)
fi

root="$destdir$prefix"
bindir="$prefix/bin"
libdir="$prefix/lib/lklfuse"

# install SOURCE DEST MODE, rewriting /usr/bin/lklfuse and /usr/lib/lklfuse to PREFIX.
put() {
	local from=$1 to=$2 mode=$3
	mkdir -p "$(dirname "$to")"
	sed -e "s#/usr/bin/lklfuse#$bindir/lklfuse#g" -e "s#/usr/lib/lklfuse/#$libdir/#g" \
		"$from" >"$to.tmp"
	chmod "$mode" "$to.tmp"
	mv "$to.tmp" "$to"
	echo "$to"
}

mkdir -p "$root/bin"
for bin in lklfuse cptofs cpfromfs fs2tar; do
	if [ -x "$target/release/$bin" ]; then
		install -m 0755 "$target/release/$bin" "$root/bin/$bin"
		echo "$root/bin/$bin"
	fi
done

for page in "$src"/man/*.[1-8]; do
	[ -e "$page" ] || continue
	section=${page##*.}
	install -D -m 0644 "$page" "$root/share/man/man$section/$(basename "$page")"
	echo "$root/share/man/man$section/$(basename "$page")"
done

for comp in "$src"/completions/*.bash; do
	[ -e "$comp" ] || continue
	name=$(basename "$comp" .bash)
	install -D -m 0644 "$comp" "$root/share/bash-completion/completions/$name"
	install -D -m 0644 "$src/completions/$name.zsh" "$root/share/zsh/vendor-completions/_$name"
	install -D -m 0644 "$src/completions/$name.fish" "$root/share/fish/vendor_completions.d/$name.fish"
	printf '%s\n' "$root/share/bash-completion/completions/$name" \
		"$root/share/zsh/vendor-completions/_$name" \
		"$root/share/fish/vendor_completions.d/$name.fish"
done

put "$src/systemd/lklfuse@.service" "$root/lib/systemd/user/lklfuse@.service" 0644
put "$src/systemd/lklfuse-usb@.service" "$root/lib/systemd/system/lklfuse-usb@.service" 0644
put "$src/udev/61-lklfuse-usb.rules" "$root/lib/udev/rules.d/61-lklfuse-usb.rules" 0644
put "$src/udev/lklfuse-usb-mount" "$root/lib/lklfuse/lklfuse-usb-mount" 0755
put "$src/systemd/mnt-disk.mount" "$root/share/doc/lklfuse/examples/mnt-disk.mount" 0644
