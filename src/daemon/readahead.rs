//! The host's read-ahead window for the FUSE mount.
//!
//! The host gives every FUSE mount a read-ahead window of 128 KiB and the protocol can only
//! shrink it (`max_readahead` in the INIT reply is capped by the mount's current window).
//! A sequential read then arrives as one 128 KiB READ at a time, each a round trip through
//! the daemon: about a quarter of the speed a window as large as the largest READ gives.
//! The window is the `read_ahead_kb` file of the mount's backing device in sysfs, which only
//! root may write; a daemon started by root widens it, others leave it (the user may write
//! it as root: `/sys/class/bdi/$(mountpoint -d MNT)/read_ahead_kb`).

use std::path::Path;

/// Sets the host's read-ahead window of the FUSE mount at `mountpoint` to `bytes`.
/// Reads `/proc/self/mountinfo` rather than stat(2)ing the mount point, which would wait
/// for the daemon's own (not yet running) request loop.
pub fn widen(mountpoint: &Path, bytes: u32) -> std::io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let device = fuse_mount_device(&mountinfo, mountpoint).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no FUSE mount there in /proc/self/mountinfo",
        )
    })?;
    std::fs::write(
        format!("/sys/class/bdi/{device}/read_ahead_kb"),
        (bytes / 1024).to_string(),
    )
}

/// The `major:minor` of the last FUSE mount on `mountpoint` in a mountinfo text.
fn fuse_mount_device<'a>(mountinfo: &'a str, mountpoint: &Path) -> Option<&'a str> {
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(separator + 1)?;
        let is_fuse = *fstype == "fuse" || fstype.starts_with("fuse.");
        let here = unescape(fields.get(4)?) == wanted;
        (is_fuse && here).then_some(*fields.get(2)?)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and tab, newline, backslash).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:39 / /tmp/my\\040mnt rw,nosuid,nodev,relatime shared:50 - fuse.lklfuse disk.img rw,user_id=0,group_id=0
91 22 0:40 / /tmp/other rw,relatime shared:51 - tmpfs tmpfs rw
92 22 0:41 / /tmp/other rw,nosuid,nodev,relatime shared:52 - fuse disk.img rw,user_id=0,group_id=0
93 22 0:42 / /tmp/plain rw,relatime shared:53 - ext4 /dev/loop0 rw
";

    #[test]
    fn finds_the_fuse_mount_with_an_escaped_name() {
        assert_eq!(
            fuse_mount_device(MOUNTINFO, Path::new("/tmp/my mnt")),
            Some("0:39")
        );
    }

    #[test]
    fn takes_the_fuse_mount_stacked_on_top() {
        assert_eq!(
            fuse_mount_device(MOUNTINFO, Path::new("/tmp/other")),
            Some("0:41")
        );
    }

    #[test]
    fn ignores_other_filesystems_and_paths() {
        assert_eq!(fuse_mount_device(MOUNTINFO, Path::new("/tmp/plain")), None);
        assert_eq!(fuse_mount_device(MOUNTINFO, Path::new("/tmp/my")), None);
        assert_eq!(fuse_mount_device("garbage\n\n- -", Path::new("/")), None);
    }

    #[test]
    fn unescapes_octal_and_keeps_stray_backslashes() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), b"a b\tc\\d");
        assert_eq!(unescape("x\\9y\\04"), b"x\\9y\\04");
    }
}
