//! Users: a daemon run by an ordinary user (fusermount3 is setuid), and a
//! root daemon with `allow_other` serving several users, each request run
//! inside the kernel with the caller's uid, gid and supplementary groups.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fuse::{
    self, chown, fsck_clean, fuse_test, lstat, make_ext4_owned, make_fs, py_as, run, run_as, sh_as,
    sha, subdir, write_random, Daemon,
};
use common::images::Fs;

const FILE: &str = "fuse_users";
const LIMIT: Duration = Duration::from_secs(240);

const A: u32 = 2001;
const B: u32 = 2002;
const GROUP: u32 = 3000;

/// `debugfs -R "stat PATH"`: (uid, gid) of a file in an ext4 image, read
/// by e2fsprogs without mounting anything.
fn debugfs_owner(img: &Path, path: &str) -> (u32, u32) {
    let out = run(&mut fuse::command(
        "debugfs",
        &["-R", &format!("stat {path}"), fuse::path_str(img)],
    ))
    .expect_ok();
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |key: &str| -> u32 {
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("debugfs stat {path}: no {key} in {out}"));
        words[i + 1]
            .parse()
            .unwrap_or_else(|_| panic!("debugfs stat {path}: {key} {}", words[i + 1]))
    };
    (after("User:"), after("Group:"))
}

/// A fresh ext4 in `dir` mounted by a root daemon with `allow_other`, and a world-writable
/// directory `shared` in it: the daemon, the image, the mount point and that directory.
fn shared_mount(dir: &Path) -> (Daemon, PathBuf, PathBuf, PathBuf) {
    let img = dir.join("shared.img");
    make_fs(Fs::Ext4, &img, dir);
    let mnt = subdir(dir, "mnt", 0o755, None);
    let d =
        Daemon::start(&img, &mnt, &["type=ext4", "allow_other"]).unwrap_or_else(|e| panic!("{e}"));
    let shared = mnt.join("shared");
    fs::create_dir(&shared).expect("mkdir shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    (d, img, mnt, shared)
}

#[test]
fn unprivileged_daemon() {
    fuse_test(FILE, "unprivileged", LIMIT, |dir| {
        let img = dir.join("user.img");
        make_ext4_owned(&img, 128, A, A);
        chown(&img, A, A);
        fs::set_permissions(&img, fs::Permissions::from_mode(0o600)).expect("chmod image");
        let mnt = subdir(&dir, "mnt", 0o755, Some((A, A)));
        let src = dir.join("src.bin");
        let h = write_random(&src, 31, (2 << 20) + 99);
        fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).expect("chmod src");

        let mut d = Daemon::start_as(A, A, &img, &mnt, &[])
            .unwrap_or_else(|e| panic!("daemon as uid {A}: {e}"));
        let info = fuse::mounts_at(&mnt);
        let info = info.last().expect("mounted");
        assert!(
            info.super_options.contains(&format!("user_id={A}")),
            "the FUSE mount belongs to uid {A}: {info:?}"
        );
        let m = fuse::path_str(&mnt).to_string();
        let out = sh_as(
            A,
            A,
            &[],
            &format!(
                "set -e; cd {m}; echo hello > hello.txt; mkdir sub; cp {} sub/data.bin; \
                 sha256sum sub/data.bin; cat hello.txt; stat -c %u:%g:%a hello.txt sub",
                fuse::path_str(&src)
            ),
        );
        assert!(out.ok(), "uid {A} writes and reads: {}", out.describe());
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(
            lines.len() == 4 && lines[0].starts_with(&h) && lines[1] == "hello",
            "uid {A}: sha256sum and cat: {}",
            out.describe()
        );
        assert_eq!(
            &lines[2..],
            [&format!("{A}:{A}:644"), &format!("{A}:{A}:755")],
            "owner and mode of what uid {A} made"
        );
        // Another user cannot enter the mount (no allow_other).
        let out = run_as(B, B, &[], "ls", &[&m]);
        assert!(
            !out.ok(),
            "uid {B} lists a mount without allow_other: {}",
            out.describe()
        );

        d.unmount_fusermount()
            .unwrap_or_else(|e| panic!("fusermount3 -u by uid {A}: {e}"));
        fsck_clean(Fs::Ext4, &img);
        assert_eq!(
            debugfs_owner(&img, "/hello.txt"),
            (A, A),
            "debugfs: hello.txt owner"
        );
        assert_eq!(
            debugfs_owner(&img, "/sub/data.bin"),
            (A, A),
            "debugfs: data.bin owner"
        );

        // Root mounts it again: the same owners and content.
        let d = Daemon::start(&img, &mnt, &[]).unwrap_or_else(|e| panic!("remount: {e}"));
        let md = lstat(&mnt.join("sub/data.bin"));
        assert_eq!((md.uid(), md.gid()), (A, A), "remount as root: owner");
        assert_eq!(
            sha(&mnt.join("sub/data.bin")),
            h,
            "remount as root: content"
        );
        d.stop();
    });
}

/// A python3 script run as some user: reads each path given, printing
/// "OK:<content>" or the errno name per line.
const READ_EACH: &str = "import sys, errno\nfor p in sys.argv[1:]:\n    try:\n        \
                         print('OK:' + open(p).read().strip())\n    except OSError as e:\n        \
                         print(errno.errorcode[e.errno])";

#[test]
fn allow_other_enforces_each_callers_credentials() {
    fuse_test(FILE, "allow_other", LIMIT, |dir| {
        let (d, img, mnt, shared) = shared_mount(&dir);
        let s = fuse::path_str(&shared).to_string();
        let p = |n: &str| format!("{s}/{n}");

        // A (in group 3000) makes a private, a public and a group-readable file.
        let out = py_as(
            A,
            A,
            &[GROUP],
            "import os, sys\nos.umask(0)\nd = sys.argv[1]\n\
             for name, mode in (('a-private', 0o600), ('a-public', 0o644), ('a-group', 0o640)):\n    \
             fd = os.open(d + '/' + name, os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode)\n    \
             os.write(fd, name.encode())\n    os.close(fd)\n\
             os.chown(d + '/a-group', -1, 3000)\nprint('done')",
            &[&s],
        );
        assert!(out.ok(), "uid {A} creates its files: {}", out.describe());

        let files = [p("a-private"), p("a-public"), p("a-group")];
        let args: Vec<&str> = files.iter().map(String::as_str).collect();
        let out = py_as(B, B, &[], READ_EACH, &args);
        assert_eq!(
            out.stdout.lines().collect::<Vec<_>>(),
            ["EACCES", "OK:a-public", "EACCES"],
            "uid {B} without group {GROUP} reads a-private (0600), a-public (0644), \
             a-group (0640, group {GROUP}): {}",
            out.describe()
        );
        let out = py_as(B, B, &[GROUP], READ_EACH, &args);
        assert_eq!(
            out.stdout.lines().collect::<Vec<_>>(),
            ["EACCES", "OK:a-public", "OK:a-group"],
            "uid {B} with supplementary group {GROUP}: {}",
            out.describe()
        );
        // B may not write or chmod A's files.
        let out = py_as(
            B,
            B,
            &[GROUP],
            &format!(
                "{}print(t(lambda: open(m, 'a')), t(lambda: os.chmod(m, 0o666)), \
                 t(lambda: os.chown(m, 2002, -1)))",
                fuse::PY_ERRNO_PRELUDE
            ),
            &[&p("a-public")],
        );
        assert_eq!(
            out.stdout.split_whitespace().collect::<Vec<_>>(),
            ["EACCES", "EPERM", "EPERM"],
            "uid {B}: open A's 0644 file for writing, chmod it, chown it: {}",
            out.describe()
        );

        // What B makes belongs to B (also with a supplementary group).
        let out = sh_as(
            B,
            B,
            &[GROUP],
            &format!("echo b > {} && mkdir {}", p("b-file"), p("b-dir")),
        );
        assert!(out.ok(), "uid {B} creates: {}", out.describe());
        let owner = |n: &str| {
            let md = lstat(&shared.join(n));
            (md.uid(), md.gid(), md.mode() & 0o777)
        };
        let uid_gid = |n: &str| {
            let (u, g, _) = owner(n);
            (u, g)
        };
        assert_eq!(uid_gid("b-file"), (B, B), "b-file owner");
        assert_eq!(uid_gid("b-dir"), (B, B), "b-dir owner");
        assert_eq!(owner("a-private"), (A, A, 0o600), "a-private");
        assert_eq!(owner("a-public"), (A, A, 0o644), "a-public");
        assert_eq!(owner("a-group"), (A, GROUP, 0o640), "a-group");
        // Root (no allow_root needed with allow_other) reads everything.
        let out = run(&mut fuse::command(
            fuse::python(),
            &["-c", READ_EACH, args[0]],
        ));
        assert_eq!(out.stdout.trim(), "OK:a-private", "root reads a 0600 file");

        d.stop();
        fsck_clean(Fs::Ext4, &img);
        let d = Daemon::start(&img, &mnt, &["type=ext4"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(uid_gid("b-file"), (B, B), "remount: b-file owner");
        assert_eq!(owner("a-group"), (A, GROUP, 0o640), "remount: a-group");
        d.stop();
    });
}

/// More files than the daemon keeps descriptors for ([`FD_CACHE_MAX`]): the host asks for the
/// attributes of nodes whose descriptors have left the cache, and gets them by handle, also
/// for an unprivileged caller.
#[test]
fn stat_beyond_the_descriptor_cache() {
    use lklfuse::fs::inode::FD_CACHE_MAX;
    fuse_test(FILE, "stat_many", LIMIT, |dir| {
        let (d, img, _mnt, shared) = shared_mount(&dir);
        let s = fuse::path_str(&shared).to_string();
        let files = (FD_CACHE_MAX + 300).to_string();

        // Writing invalidates the host's cached attributes, so every stat below is a GETATTR;
        // by then the first files' descriptors were pushed out by the later ones.
        let out = py_as(
            A,
            A,
            &[],
            "import os, sys\nd, n = sys.argv[1], int(sys.argv[2])\n\
             for i in range(n):\n    \
             with open(f'{d}/f{i}', 'w') as f: f.write('x' * (i % 97 + 1))\n\
             def seen(i):\n    \
             st = os.stat(f'{d}/f{i}')\n    \
             return (st.st_size, st.st_uid, st.st_mode & 0o777)\n\
             bad = [i for i in range(n) if seen(i) != (i % 97 + 1, 2001, 0o644)]\n\
             print(len(bad), bad[:5])",
            &[&s, &files],
        );
        assert!(out.ok(), "uid {A} writes and stats: {}", out.describe());
        assert_eq!(out.stdout.trim(), "0 []", "files with wrong attributes");

        // Another user sees a change made after the first stat (the host asks again once
        // the change invalidated its copy).
        let first = shared.join("f0");
        fs::write(&first, "grown to a longer size").expect("rewrite f0");
        let out = py_as(
            B,
            B,
            &[],
            "import os, sys\nst = os.stat(sys.argv[1])\nprint(st.st_size, st.st_uid)",
            &[fuse::path_str(&first)],
        );
        assert_eq!(
            out.stdout.trim(),
            "22 2001",
            "uid {B} stats f0: {}",
            out.describe()
        );
        drop(d);
        fsck_clean(Fs::Ext4, &img);
    });
}
