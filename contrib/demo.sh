#!/usr/bin/env bash
# The main job: build lklfuse, make a small ext4 image, mount it as an ordinary user,
# show it, write to it, unmount, and check the image with e2fsck.
# Installs missing build dependencies first (sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --bin lklfuse
lklfuse="$PWD/target/release/lklfuse"

work=$(mktemp -d /tmp/lklfuse-demo.XXXXXX)
chmod 755 "$work"
image="$work/demo.img"
mnt="$work/mnt"
mkdir -p "$work/content/docs" "$mnt"
echo "Hello from an ext4 image, read by Linux $("$lklfuse" -V | sed 's/.*Linux //; s/)//') running inside lklfuse" \
  > "$work/content/hello.txt"
printf 'line %s\n' $(seq 1 100) > "$work/content/docs/lines.txt"
ln -s hello.txt "$work/content/link-to-hello"

# As root, mount as the unprivileged user "nobody" (our user); otherwise as yourself.
run_as=()
if [ "$(id -u)" -eq 0 ]; then
  user=nobody
  uid=$(id -u "$user")
  gid=$(id -g "$user")
  # /dev/fuse is 0600 on some machines; an ordinary user needs to open it.
  chmod 0666 /dev/fuse
  run_as=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --)
  echo "running as root: the mount is done by the unprivileged user '$user' (uid $uid)"
else
  uid=$(id -u)
  gid=$(id -g)
fi

mkfs.ext4 -q -F -L demo -E root_owner="$uid:$gid" -d "$work/content" "$image" 32M
chown -R "$uid:$gid" "$image" "$mnt"

cleanup() { "${run_as[@]}" fusermount3 -u -z "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "\$ lklfuse -o type=ext4 $image $mnt"
"${run_as[@]}" "$lklfuse" -o type=ext4 "$image" "$mnt"
echo "\$ findmnt $mnt"
findmnt "$mnt"
# Only the user who mounted can see inside (no allow_other), so look as that user.
echo "\$ ls -la $mnt"
"${run_as[@]}" ls -la "$mnt"
echo "\$ cat $mnt/hello.txt $mnt/link-to-hello"
"${run_as[@]}" cat "$mnt/hello.txt" "$mnt/link-to-hello"
echo "\$ echo written through lklfuse > $mnt/new.txt"
"${run_as[@]}" sh -c "echo written through lklfuse > '$mnt/new.txt'"
echo "\$ df -h $mnt"
"${run_as[@]}" df -h "$mnt"
echo "\$ fusermount3 -u $mnt"
"${run_as[@]}" fusermount3 -u "$mnt"
# The daemon exits once the image is consistent; wait for it.
for _ in $(seq 1 100); do
  pgrep -f "lklfuse.*$image" >/dev/null || break
  sleep 0.1
done
echo "\$ e2fsck -fn $image"
e2fsck -fn "$image"
echo "\$ debugfs -R 'cat /new.txt' $image"
debugfs -R 'cat /new.txt' "$image" 2>/dev/null
