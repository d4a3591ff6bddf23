//! The daemon's life: every way to unmount (fusermount3 -u, umount,
//! SIGTERM, SIGINT, SIGHUP) ends with exit status 0, the image synced (fsck
//! clean, every byte there on the next mount) and its lock released; a
//! SIGTERM in the middle of heavy writes keeps every fsynced byte;
//! background start reports success only with the mount live; refused
//! starts (in use, lock file, bad arguments) say so in one line.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fuse::{
    self, assert_one_line_error, fsck_clean, fuse_test, image_unlocked, lstat, make_fs, run_binary,
    sha, subdir, write_random, Daemon, Spawned,
};
use common::images::{self, Fs};

const FILE: &str = "fuse_lifecycle";
const LIMIT: Duration = Duration::from_secs(240);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn start(img: &Path, mnt: &Path) -> Daemon {
    Daemon::start(img, mnt, &["type=ext4"])
        .unwrap_or_else(|e| panic!("mount {}: {e}", img.display()))
}

/// Writes a mix of fsynced and unsynced data; what each file must hold.
fn write_mix(mnt: &Path, dir: &Path) -> BTreeMap<String, String> {
    let mut expected = BTreeMap::new();
    // fsynced, then appended to without fsync.
    let mut synced = images::random_bytes(51, 4 << 20);
    {
        let mut f = fs::File::create(mnt.join("synced.bin")).expect("create synced.bin");
        f.write_all(&synced).expect("write synced.bin");
        f.sync_all().expect("fsync synced.bin");
        let tail = images::random_bytes(52, 100_000);
        f.write_all(&tail).expect("append to synced.bin");
        synced.extend_from_slice(&tail);
    }
    expected.insert("synced.bin".into(), images::hex(&images::sha256(&synced)));
    // Never fsynced: cp, plain writes, a rename, a chmod.
    let src = dir.join("unsynced-src.bin");
    let h = write_random(&src, 53, (3 << 20) + 1);
    fuse::sh_ok(&format!(
        "cp {} {}/unsynced.bin",
        fuse::q(&src),
        fuse::q(mnt)
    ));
    expected.insert("unsynced.bin".into(), h);
    fs::create_dir(mnt.join("small")).expect("mkdir small");
    for i in 0..50 {
        let data = format!("small file {i}\n").repeat(i + 1);
        fs::write(mnt.join(format!("small/f{i:02}")), &data).expect("write small file");
        expected.insert(
            format!("small/f{i:02}"),
            images::hex(&images::sha256(data.as_bytes())),
        );
    }
    fs::write(mnt.join("orig.txt"), b"renamed\n").expect("write orig.txt");
    fs::rename(mnt.join("orig.txt"), mnt.join("renamed.txt")).expect("rename");
    expected.insert(
        "renamed.txt".into(),
        images::hex(&images::sha256(b"renamed\n")),
    );
    fs::set_permissions(mnt.join("small/f00"), fs::Permissions::from_mode(0o600)).expect("chmod");
    expected
}

#[track_caller]
fn verify_mix(mnt: &Path, expected: &BTreeMap<String, String>, what: &str) {
    for (rel, h) in expected {
        let p = mnt.join(rel);
        assert!(p.exists(), "{what}: {rel} is missing");
        assert_eq!(&sha(&p), h, "{what}: content of {rel}");
    }
    assert!(!mnt.join("orig.txt").exists(), "{what}: orig.txt came back");
    assert_eq!(
        lstat(&mnt.join("small/f00")).mode() & 0o777,
        0o600,
        "{what}: mode of small/f00"
    );
}

#[derive(Clone, Copy, Debug)]
enum Way {
    Fusermount,
    Umount,
    Signal(i32),
}

impl std::fmt::Display for Way {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Way::Fusermount => write!(f, "fusermount3 -u"),
            Way::Umount => write!(f, "umount"),
            Way::Signal(libc::SIGTERM) => write!(f, "SIGTERM"),
            Way::Signal(libc::SIGINT) => write!(f, "SIGINT"),
            Way::Signal(libc::SIGHUP) => write!(f, "SIGHUP"),
            Way::Signal(n) => write!(f, "signal {n}"),
        }
    }
}

fn unmount_way(name: &'static str, way: Way) {
    fuse_test(FILE, name, LIMIT, move |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let mut d = start(&img, &mnt);
        let expected = write_mix(&mnt, &dir);
        let result = match way {
            Way::Fusermount => d.unmount_fusermount(),
            Way::Umount => d.unmount_umount(),
            Way::Signal(sig) => d.stop_with_signal(sig),
        };
        if let Err(e) = result {
            panic!("{way}: {e}");
        }
        assert!(
            image_unlocked(&img),
            "{way}: the image is still locked after the exit"
        );
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt);
        verify_mix(&mnt, &expected, &format!("after {way} and a remount"));
        d.stop();
    });
}

#[test]
fn unmount_with_fusermount() {
    unmount_way("fusermount", Way::Fusermount);
}

#[test]
fn unmount_with_umount() {
    unmount_way("umount", Way::Umount);
}

#[test]
fn unmount_with_sigterm() {
    unmount_way("sigterm", Way::Signal(libc::SIGTERM));
}

#[test]
fn unmount_with_sigint() {
    unmount_way("sigint", Way::Signal(libc::SIGINT));
}

#[test]
fn unmount_with_sighup() {
    unmount_way("sighup", Way::Signal(libc::SIGHUP));
}

/// Streams 1 MiB chunks of random data to argv[1] (and the same to argv[2]
/// on the host), fsyncing every 4 MiB and printing the total after each
/// fsync; stops at 160 MiB or at the first error. Paced to at most about
/// 50 MiB/s (a short sleep per MiB) so that it is still writing, with a
/// file open and unsynced data, when the signal comes, whatever the speed
/// of the machine.
const WRITER: &str = "import os, sys\n\
    import time\n\
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n\
    rf = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n\
    total = 0\n\
    try:\n    \
        while total < (160 << 20):\n        \
            data = os.urandom(1 << 20)\n        \
            os.write(rf, data)\n        \
            v = memoryview(data)\n        \
            while v:\n            \
                v = v[os.write(fd, v):]\n        \
            total += 1 << 20\n        \
            time.sleep(0.02)\n        \
            if (total >> 20) % 4 == 0:\n            \
                os.fsync(fd)\n            \
                print(total, flush=True)\n    \
        print('done', flush=True)\n\
    except OSError as e:\n    \
        print('error', e.errno, flush=True)\n";

#[test]
fn sigterm_during_heavy_writes_keeps_fsynced_data() {
    fuse_test(FILE, "sigterm_writes", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let mut d = start(&img, &mnt);
        let target = mnt.join("stream.bin");
        let reference = dir.join("stream-reference.bin");
        let mut w = Spawned::new(fuse::command(
            fuse::python(),
            &[
                "-c",
                WRITER,
                fuse::path_str(&target),
                fuse::path_str(&reference),
            ],
        ));
        // Let it write and fsync at least 24 MiB (or 20 s), then SIGTERM mid-stream.
        let t0 = Instant::now();
        let mut synced: u64 = 0;
        while synced < 24 << 20 && t0.elapsed() < Duration::from_secs(20) {
            let line = w.expect_line(Duration::from_secs(30));
            synced = line
                .parse()
                .unwrap_or_else(|_| panic!("writer said {line:?} before the signal"));
        }
        assert!(synced > 0, "the writer fsynced nothing in 20 s");
        d.signal(libc::SIGTERM);
        let exit = d.expect_clean_exit("SIGTERM during writes");
        let writer_end = w.finish(Duration::from_secs(30));
        eprintln!(
            "fsynced before SIGTERM: {synced} bytes; writer afterwards: {:?}; its lines: {:?}",
            writer_end.as_ref().map(|(s, _, e)| (s.code(), e.clone())),
            w.seen.iter().rev().take(3).collect::<Vec<_>>()
        );
        if let Err(e) = exit {
            panic!("{e}");
        }
        assert!(
            image_unlocked(&img),
            "the image is still locked after the exit"
        );
        fsck_clean(Fs::Ext4, &img);

        let d = start(&img, &mnt);
        let len = lstat(&target).len();
        assert!(
            len >= synced,
            "stream.bin has {len} bytes after the remount, {synced} were fsynced"
        );
        let prefix = |p: &Path| {
            let data = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            images::hex(&images::sha256(&data[..synced as usize]))
        };
        assert_eq!(
            prefix(&target),
            prefix(&reference),
            "the first {synced} (fsynced) bytes of stream.bin"
        );
        d.stop();
    });
}

/// Waits (bounded) until nobody holds the image's lock.
#[track_caller]
fn wait_unlocked(img: &Path, what: &str) {
    let deadline = Instant::now() + fuse::EXIT_LIMIT;
    while !image_unlocked(img) {
        assert!(
            Instant::now() < deadline,
            "{what}: the image is still locked {:?} after the unmount",
            fuse::EXIT_LIMIT
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn background_mode_returns_when_live() {
    fuse_test(FILE, "background", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);

        // `lklfuse -o type=ext4 IMAGE MNT`: live on return.
        let mut d = Daemon::background(&img, &mnt, &["type=ext4"])
            .unwrap_or_else(|e| panic!("background start: {e}"));
        assert!(
            d.pid().is_some(),
            "no lklfuse process serving {} found",
            mnt.display()
        );
        fs::write(mnt.join("bg.txt"), b"background\n").expect("write through the mount");
        d.unmount_fusermount()
            .unwrap_or_else(|e| panic!("unmount: {e}"));
        wait_unlocked(&img, "background daemon");
        fsck_clean(Fs::Ext4, &img);

        // mount.fuse3's order: `lklfuse IMAGE MNT -o OPTIONS`.
        let i = fuse::path_str(&img).to_string();
        let m = fuse::path_str(&mnt).to_string();
        let mut d =
            Daemon::background_args(&img, &mnt, &args(&[&i, &m, "-o", "rw,type=ext4"]), None)
                .unwrap_or_else(|e| panic!("background start, options last: {e}"));
        assert_eq!(
            fs::read(mnt.join("bg.txt")).expect("read bg.txt"),
            b"background\n",
            "bg.txt after a remount"
        );
        d.unmount_fusermount()
            .unwrap_or_else(|e| panic!("unmount: {e}"));
        wait_unlocked(&img, "background daemon (options last)");

        // A wrong type: non-zero, one line, nothing mounted.
        let r = run_binary(
            &mnt,
            &args(&["-o", "type=xfs", &i, &m]),
            None,
            fuse::MOUNT_LIMIT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_one_line_error("background start with type=xfs on ext4", &r.out, &mnt);
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            fuse::daemon_pid(&mnt).is_none(),
            "a daemon process is left after a refused start"
        );
        assert!(
            image_unlocked(&img),
            "the image is locked after a refused start"
        );
    });
}

#[test]
fn second_read_write_mount_is_refused() {
    fuse_test(FILE, "in_use", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt1 = subdir(&dir, "mnt1", 0o755, None);
        let mnt2 = subdir(&dir, "mnt2", 0o755, None);
        let d = start(&img, &mnt1);
        fs::write(mnt1.join("a.txt"), b"first\n").expect("write a.txt");
        let i = fuse::path_str(&img).to_string();
        let m2 = fuse::path_str(&mnt2).to_string();
        for (mode, a) in [
            ("background", args(&["-o", "type=ext4", &i, &m2])),
            ("foreground", args(&["-f", "-o", "type=ext4", &i, &m2])),
        ] {
            let r =
                run_binary(&mnt2, &a, None, fuse::MOUNT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
            let case = format!("second read-write mount ({mode})");
            assert_one_line_error(&case, &r.out, &mnt2);
            assert!(
                r.out.stderr.to_lowercase().contains("in use"),
                "{case}: the message should say the image is in use: {}",
                r.out.describe()
            );
        }
        // The first mount is unaffected.
        assert!(d.is_mounted(), "the first mount went away");
        assert_eq!(
            fs::read(mnt1.join("a.txt")).expect("read a.txt"),
            b"first\n"
        );
        fs::write(mnt1.join("b.txt"), b"still writable\n").expect("write b.txt");
        d.stop();
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt2);
        assert_eq!(
            fs::read(mnt2.join("b.txt")).expect("read b.txt"),
            b"still writable\n"
        );
        d.stop();
    });
}

#[test]
fn bad_starts_fail_with_one_line() {
    fuse_test(FILE, "errors", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let i = fuse::path_str(&img).to_string();
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let m = fuse::path_str(&mnt).to_string();
        let missing_img = dir.join("no-such.img");
        let missing_mnt = dir.join("no-such-dir");
        // An image only root can read, and a mount point uid 2001 owns.
        let private = dir.join("private.img");
        make_fs(Fs::Ext4, &private, &dir);
        fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
        let user_mnt = subdir(&dir, "user-mnt", 0o755, Some((2001, 2001)));

        struct Case {
            name: &'static str,
            args: Vec<String>,
            mnt: PathBuf,
            user: Option<(u32, u32)>,
            mentions: Option<String>,
        }
        let cases = [
            Case {
                name: "wrong type",
                args: args(&["-o", "type=xfs", &i, &m]),
                mnt: mnt.clone(),
                user: None,
                mentions: None,
            },
            Case {
                name: "missing image",
                args: args(&[fuse::path_str(&missing_img), &m]),
                mnt: mnt.clone(),
                user: None,
                mentions: Some("no-such.img".into()),
            },
            Case {
                name: "unreadable image (uid 2001, root's 0600 image)",
                args: args(&[fuse::path_str(&private), fuse::path_str(&user_mnt)]),
                mnt: user_mnt.clone(),
                user: Some((2001, 2001)),
                mentions: Some("private.img".into()),
            },
            Case {
                name: "missing mount point",
                args: args(&[&i, fuse::path_str(&missing_mnt)]),
                mnt: missing_mnt.clone(),
                user: None,
                mentions: Some("no-such-dir".into()),
            },
            Case {
                name: "unknown option",
                args: args(&["-o", "bogus_option_xyz", &i, &m]),
                mnt: mnt.clone(),
                user: None,
                mentions: Some("bogus_option_xyz".into()),
            },
        ];
        for c in &cases {
            for fg in [false, true] {
                let mut a = c.args.clone();
                if fg {
                    a.insert(0, "-f".into());
                }
                let case = format!("{} ({})", c.name, if fg { "-f" } else { "background" });
                let r = run_binary(&c.mnt, &a, c.user, fuse::MOUNT_LIMIT)
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_one_line_error(&case, &r.out, &c.mnt);
                if let Some(word) = &c.mentions {
                    assert!(
                        r.out.stderr.contains(word.as_str()),
                        "{case}: the message should mention {word:?}: {}",
                        r.out.describe()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
                assert!(
                    fuse::daemon_pid(&c.mnt).is_none(),
                    "{case}: a daemon process is left behind"
                );
            }
        }
        assert!(
            image_unlocked(&img),
            "the image is locked after refused starts"
        );
        assert_eq!(
            lstat(&private).mode() & 0o777,
            0o600,
            "the private image's mode changed"
        );
    });
}

#[test]
fn lock_file_keeps_a_second_instance_out() {
    fuse_test(FILE, "lock_file", LIMIT, |dir| {
        let img1 = dir.join("one.img");
        let img2 = dir.join("two.img");
        make_fs(Fs::Ext4, &img1, &dir);
        make_fs(Fs::Ext4, &img2, &dir);
        let mnt1 = subdir(&dir, "mnt1", 0o755, None);
        let mnt2 = subdir(&dir, "mnt2", 0o755, None);
        let lock = dir.join("lklfuse.lock");
        let lock_opt = format!("lock={}", fuse::path_str(&lock));
        let d1 = Daemon::start(&img1, &mnt1, &["type=ext4", &lock_opt])
            .unwrap_or_else(|e| panic!("first instance: {e}"));
        let r = run_binary(
            &mnt2,
            &args(&[
                "-o",
                &format!("type=ext4,{lock_opt}"),
                fuse::path_str(&img2),
                fuse::path_str(&mnt2),
            ]),
            None,
            fuse::MOUNT_LIMIT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_one_line_error("second instance with the same lock file", &r.out, &mnt2);
        assert!(d1.is_mounted(), "the first instance's mount went away");
        fs::write(mnt1.join("x"), b"x").expect("the first mount still works");
        d1.stop();
        // Released: now the second image mounts with that lock file.
        let d2 = Daemon::start(&img2, &mnt2, &["type=ext4", &lock_opt])
            .unwrap_or_else(|e| panic!("after the first instance exited: {e}"));
        d2.stop();
        fsck_clean(Fs::Ext4, &img1);
    });
}

#[test]
fn version_and_help() {
    fuse_test(FILE, "version_help", Duration::from_secs(60), |dir| {
        let mnt = dir.join("unused");
        let v = run_binary(&mnt, &args(&["-V"]), None, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(v.out.ok(), "-V: {}", v.out.describe());
        let text = format!("{}{}", v.out.stdout, v.out.stderr);
        assert!(
            text.to_lowercase().contains("lklfuse") && text.contains(env!("CARGO_PKG_VERSION")),
            "-V should name the program and its version {}: {}",
            env!("CARGO_PKG_VERSION"),
            v.out.describe()
        );
        let h = run_binary(&mnt, &args(&["-h"]), None, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(h.out.ok(), "-h: {}", h.out.describe());
        let text = format!("{}{}", h.out.stdout, h.out.stderr);
        let lower = text.to_lowercase();
        assert!(
            lower.contains("usage") && text.contains("-o") && text.contains("type="),
            "-h should show the usage and the -o options (type=...): {}",
            h.out.describe()
        );
        assert!(!fuse::fuse_mounted(&mnt));
    });
}
