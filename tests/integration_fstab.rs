//! /etc/fstab entries through util-linux `mount -T FSTAB` and `umount`, which run
//! `mount.fuse3`, which runs `lklfuse SOURCE MOUNTPOINT -o OPTIONS` from PATH: as root
//! and as an ordinary user (`user`); filesystem options in both syntaxes (`lkl.NAME` and
//! escaped `opts=`) reach the in-process kernel; an unknown one is refused clearly.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fuse::{
    self, command, command_as, daemon_pid, fsck_clean, fuse_mounted, fuse_test, lazy_unmount,
    make_ext4_owned, make_fs, mounts_at, path_str, q, run, sh_as, subdir, Out, BIN, EXIT_LIMIT,
};
use common::images::Fs;

const FILE: &str = "integration_fstab";
const LIMIT: Duration = Duration::from_secs(120);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A directory holding `lklfuse` (a link to the binary under test), for the front of PATH.
fn bin_dir(dir: &Path) -> PathBuf {
    let bin = subdir(dir, "bin", 0o755, None);
    std::os::unix::fs::symlink(BIN, bin.join("lklfuse")).expect("symlink lklfuse");
    bin
}

/// Whatever a failed test leaves at `mnt` goes: lazy unmount, then the daemon is killed.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        lazy_unmount(&self.0);
        if let Some(pid) = daemon_pid(&self.0) {
            // SAFETY: kill has no memory-safety preconditions; pid serves our mount.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// `mount`/`umount` with `args`, as `user` (None: root), lklfuse first in PATH.
fn mount_cmd(program: &str, args: &[&str], bin: &Path, user: Option<(u32, u32)>) -> Out {
    let mut cmd = match user {
        None => command(program, args),
        Some((uid, gid)) => command_as(uid, gid, &[], program, args),
    };
    cmd.env("PATH", format!("{}:{PATH}", path_str(bin)));
    run(&mut cmd)
}

/// Waits until no lklfuse serves `mnt` any more (it syncs the image before exiting).
#[track_caller]
fn wait_daemon_gone(mnt: &Path) {
    let deadline = Instant::now() + EXIT_LIMIT;
    while daemon_pid(mnt).is_some() {
        assert!(
            Instant::now() < deadline,
            "lklfuse for {} still running after umount",
            mnt.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fstab_as_root_passes_fs_options() {
    fuse_test(FILE, "root", LIMIT, |dir| {
        let bin = bin_dir(&dir);
        let img = dir.join("vfat.img");
        make_fs(Fs::Vfat, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let bad_mnt = subdir(&dir, "bad", 0o755, None);
        let _guards = (MountGuard(mnt.clone()), MountGuard(bad_mnt.clone()));
        // uid/gid through the escaped opts= form, umask through lkl.: all must reach vfat.
        let fstab = dir.join("fstab");
        fs::write(
            &fstab,
            format!(
                "{img} {mnt} fuse.lklfuse rw,nosuid,nodev,type=vfat,opts=uid\\=2002\\,gid\\=2003,lkl.umask=027,x-gvfs-show,noauto 0 0\n\
                 {img} {bad} fuse.lklfuse type=vfat,lkl.bogus_option,noauto 0 0\n",
                img = path_str(&img),
                mnt = path_str(&mnt),
                bad = path_str(&bad_mnt),
            ),
        )
        .expect("write fstab");

        // As root, mount(8) drops PATH before running mount.fuse3, whose shell then uses its
        // default PATH (/usr/local/sbin first): lklfuse must be installed there, which a
        // private mount namespace with our bin directory on /usr/local/sbin stands in for.
        // Everything that needs the mount runs inside that namespace.
        let m = q(&mnt);
        let script = format!(
            "set -e\n\
             mount --bind {bin} /usr/local/sbin\n\
             timeout 60 mount -T {fstab} {m}\n\
             grep -F ' - fuse.lklfuse {img} ' /proc/self/mountinfo >/dev/null\n\
             stat -c '%u %g %a' {m}\n\
             echo hello > {m}/hello.txt\n\
             timeout 60 umount {m}\n",
            bin = q(&bin),
            fstab = q(&fstab),
            img = path_str(&img),
        );
        let out = run(&mut command(
            "unshare",
            &["--mount", "--propagation", "private", "sh", "-c", &script],
        ));
        assert!(out.ok(), "mount/use/umount as root: {}", out.describe());
        // uid/gid/umask reached vfat: the root directory shows them.
        assert_eq!(out.stdout.trim(), "2002 2003 750", "{}", out.describe());
        wait_daemon_gone(&mnt);
        fsck_clean(Fs::Vfat, &img);
        let listing = run(&mut command("mdir", &["-b", "-i", path_str(&img), "::/"])).expect_ok();
        assert!(listing.to_uppercase().contains("HELLO.TXT"), "{listing}");

        // An option the filesystem does not know: refused, named, nothing mounted.
        let script = format!(
            "mount --bind {bin} /usr/local/sbin && exec timeout 60 mount -T {fstab} {bad}",
            bin = q(&bin),
            fstab = q(&fstab),
            bad = q(&bad_mnt),
        );
        let out = run(&mut command(
            "unshare",
            &["--mount", "--propagation", "private", "sh", "-c", &script],
        ));
        assert!(!out.ok(), "mount with lkl.bogus_option succeeded");
        assert!(
            out.stderr.contains("bogus_option") || out.stderr.contains("Invalid argument"),
            "the error should say what is wrong: {}",
            out.describe()
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.describe());
        assert!(!fuse_mounted(&bad_mnt));
    });
}

#[test]
fn fstab_user_entry_mounts_as_the_user() {
    fuse_test(FILE, "user", LIMIT, |dir| {
        let (uid, gid) = (2001, 2001);
        let bin = bin_dir(&dir);
        let img = dir.join("ext4.img");
        make_ext4_owned(&img, 64, uid, gid);
        fuse::chown(&img, uid, gid);
        let mnt = subdir(&dir, "mnt", 0o755, Some((uid, gid)));
        let _guard = MountGuard(mnt.clone());
        let fstab = dir.join("fstab");
        fs::write(
            &fstab,
            format!(
                "{} {} fuse.lklfuse type=ext4,user,noauto,lkl.commit=30,lkl.errors=remount-ro,x-gvfs-show 0 0\n",
                path_str(&img),
                path_str(&mnt)
            ),
        )
        .expect("write fstab");

        let user = Some((uid, gid));
        let out = mount_cmd(
            "mount",
            &["-T", path_str(&fstab), path_str(&mnt)],
            &bin,
            user,
        );
        assert!(out.ok(), "mount as the user: {}", out.describe());
        let info = mounts_at(&mnt).pop().expect("mounted");
        assert_eq!(info.fstype, "fuse.lklfuse");
        assert!(
            info.super_options.contains(&format!("user_id={uid}")),
            "{info:?}"
        );
        let m = q(&mnt);
        sh_as(
            uid,
            gid,
            &[],
            &format!("printf 'from fstab\\n' > {m}/note && cat {m}/note"),
        )
        .expect_ok();

        let out = mount_cmd("umount", &[path_str(&mnt)], &bin, user);
        assert!(out.ok(), "umount as the user: {}", out.describe());
        wait_daemon_gone(&mnt);
        assert!(!fuse_mounted(&mnt));
        fsck_clean(Fs::Ext4, &img);
        let note = run(&mut command(
            "debugfs",
            &["-R", "cat /note", path_str(&img)],
        ))
        .expect_ok();
        assert_eq!(note, "from fstab\n");
    });
}
