//! Desktop file managers: an lklfuse mount made by an ordinary user in their home
//! directory appears in GIO (the I/O layer of GNOME Files and other GTK file managers),
//! and a GIO client lists and copies through it.
//!
//! The user (uid 2001, `lklfuse-a`) mounts a labelled ext4 image (`mkfs.ext4 -L DEMO`) on
//! `$HOME/DEMO`, with a temporary `$HOME` of their own; then, as that user:
//! - `gio mount -li` lists the mount, named after its directory (GIO names a plain unix
//!   mount by its path's last component: `DEMO`); with `$HOME` elsewhere it is not listed
//!   (GIO's path rule: `g_unix_mount_guess_should_display` shows mounts below `$HOME`,
//!   `/media/` and `/run/media/$USER/` only);
//! - `gio info -f` gives the filesystem's real size and free space (equal to `df`'s),
//!   free space drops after a copy in, and the unix mount line says `fuse.lklfuse` with the
//!   image as source;
//! - `gio list` shows every entry with the right type (directory, regular, symlink) and
//!   the inode number `lstat` gives, equal to the directory entry's `d_ino`, whose
//!   `d_type` is right too; the numbers are the same in a second listing after the host
//!   kernel dropped its dentry and inode caches;
//! - `gio copy` copies a file out of the mount and a new file into it (hashes compared,
//!   the new file read back from the image with debugfs after unmounting);
//! - `gio info` shows the owner of files (two different users).
//!
//! GIO runs with its local backends pinned (`GIO_USE_VFS=local`,
//! `GIO_USE_VOLUME_MONITOR=unix`): no gvfs daemons and no session bus are involved, the
//! result does not depend on whether gvfs is installed. Needs `gio` (libglib2.0-bin).
//! A file-manager screenshot is not attempted (no file manager or X server in CI).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::fuse::{
    self, chown, command, command_as, fsck_clean, fuse_test, mounts_at, path_str, py_as,
    run_limited, sha, subdir, write_random, Daemon, Out,
};
use common::images::{self, Fs};

const FILE: &str = "integration_gio";
/// The whole test (mount, a dozen GIO commands, unmount, fsck) takes a few seconds.
const LIMIT: Duration = Duration::from_secs(30);
/// One GIO command.
const GIO_LIMIT: Duration = Duration::from_secs(10);

const A: u32 = 2001;
const A_NAME: &str = "lklfuse-a";
const B: u32 = 2002;
const B_NAME: &str = "lklfuse-b";
const LABEL: &str = "DEMO";

/// `gio ARGS...` as user A with `home` as `$HOME`, GIO's local backends only.
fn gio(home: &Path, args: &[&str]) -> Out {
    let mut cmd: Command = command_as(A, A, &[], "gio", args);
    cmd.env("HOME", home)
        .env("GIO_USE_VFS", "local")
        .env("GIO_USE_VOLUME_MONITOR", "unix")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    run_limited(&mut cmd, GIO_LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`gio`]; panics unless it succeeds; stdout.
#[track_caller]
fn gio_ok(home: &Path, args: &[&str]) -> String {
    gio(home, args).expect_ok()
}

/// The `key: value` attribute lines of `gio info` output.
fn info_attrs(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(k, _)| k.contains("::"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
fn attr<'a>(attrs: &'a BTreeMap<String, String>, key: &str, what: &str) -> &'a str {
    attrs
        .get(key)
        .unwrap_or_else(|| panic!("{what}: no {key} in {attrs:?}"))
}

#[track_caller]
fn attr_u64(attrs: &BTreeMap<String, String>, key: &str, what: &str) -> u64 {
    let v = attr(attrs, key, what);
    v.parse()
        .unwrap_or_else(|_| panic!("{what}: {key} = {v:?} is not a number"))
}

/// The name of the mount at `mnt` in `gio mount -li` output, when listed.
fn listed_mount(out: &str, mnt: &Path) -> Option<String> {
    let uri = format!("file://{}", path_str(mnt));
    out.lines().find_map(|l| {
        let rest = l.strip_prefix("Mount(")?;
        let (_, rest) = rest.split_once("): ")?;
        let (name, target) = rest.rsplit_once(" -> ")?;
        (target == uri).then(|| name.to_string())
    })
}

/// One directory entry as GIO lists it: type and inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GioEntry {
    kind: String,
    ino: u64,
}

/// `gio list -h -n -a standard::type,unix::inode DIR` (hidden files too, symlinks not
/// followed): name -> entry.
#[track_caller]
fn gio_list(home: &Path, dir: &Path) -> BTreeMap<String, GioEntry> {
    let out = gio_ok(
        home,
        &[
            "list",
            "-h",
            "-n",
            "-a",
            "standard::type,unix::inode",
            path_str(dir),
        ],
    );
    out.lines()
        .map(|l| {
            // NAME \t SIZE \t (TYPE) \t attr=value attr=value
            let f: Vec<&str> = l.split('\t').collect();
            assert!(f.len() >= 4, "gio list line {l:?}");
            let kind = f[2].trim_matches(|c| c == '(' || c == ')').to_string();
            let ino = f[3]
                .split(' ')
                .find_map(|a| a.strip_prefix("unix::inode="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no unix::inode in gio list line {l:?}"));
            (f[0].to_string(), GioEntry { kind, ino })
        })
        .collect()
}

/// What the kernel says about one entry, read as user A: `d_type` and `d_ino` from
/// readdir(3), the type and `st_ino` from lstat(2).
#[derive(Debug, Clone)]
struct HostEntry {
    d_type: String,
    d_ino: u64,
    kind: String,
    ino: u64,
}

/// readdir(3) through ctypes: Python's os.scandir hides a missing d_type (it lstats).
const READDIR_PY: &str = r#"
import ctypes, os, stat, sys
class Dirent(ctypes.Structure):
    _fields_ = [("ino", ctypes.c_uint64), ("off", ctypes.c_int64),
                ("reclen", ctypes.c_ushort), ("type", ctypes.c_ubyte),
                ("name", ctypes.c_char * 256)]
libc = ctypes.CDLL(None, use_errno=True)
libc.opendir.restype = ctypes.c_void_p
libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.closedir.argtypes = [ctypes.c_void_p]
DT = {0: "unknown", 4: "directory", 8: "regular", 10: "symlink"}
d = sys.argv[1]
h = libc.opendir(os.fsencode(d))
if not h:
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e), d)
while True:
    e = libc.readdir(h)
    if not e:
        break
    name = e.contents.name.decode()
    if name in (".", ".."):
        continue
    st = os.lstat(os.path.join(d, name))
    m = st.st_mode
    kind = ("directory" if stat.S_ISDIR(m) else "regular" if stat.S_ISREG(m)
            else "symlink" if stat.S_ISLNK(m) else "special")
    print(name, DT.get(e.contents.type, str(e.contents.type)), e.contents.ino, kind,
          st.st_ino, sep="\t")
libc.closedir(h)
"#;

#[track_caller]
fn host_list(dir: &Path) -> BTreeMap<String, HostEntry> {
    let out = py_as(A, A, &[], READDIR_PY, &[path_str(dir)]).expect_ok();
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "readdir line {l:?}");
            let num = |s: &str| -> u64 { s.parse().expect("number") };
            (
                f[0].to_string(),
                HostEntry {
                    d_type: f[1].into(),
                    d_ino: num(f[2]),
                    kind: f[3].into(),
                    ino: num(f[4]),
                },
            )
        })
        .collect()
}

/// Checks a GIO listing of `dir` against readdir + lstat; `expect`: name -> type.
#[track_caller]
fn check_listing(home: &Path, dir: &Path, expect: &[(&str, &str)]) -> BTreeMap<String, GioEntry> {
    let g = gio_list(home, dir);
    let h = host_list(dir);
    let names = |m: Vec<&String>| m.into_iter().cloned().collect::<Vec<_>>();
    let mut want: Vec<String> = expect.iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(
        names(h.keys().collect()),
        want,
        "readdir of {}",
        dir.display()
    );
    assert_eq!(
        names(g.keys().collect()),
        want,
        "gio list of {}",
        dir.display()
    );
    for (name, kind) in expect {
        let (ge, he) = (&g[*name], &h[*name]);
        let what = format!("{}/{name}", dir.display());
        assert_eq!(he.kind, *kind, "{what}: lstat type");
        assert_eq!(he.d_type, *kind, "{what}: readdir d_type (lstat: {he:?})");
        assert_eq!(he.d_ino, he.ino, "{what}: readdir d_ino vs lstat st_ino");
        assert_eq!(ge.kind, *kind, "{what}: GIO standard::type");
        assert_eq!(ge.ino, he.ino, "{what}: GIO unix::inode vs lstat st_ino");
    }
    g
}

/// `df -B1 --output=size,avail MNT` as user A: (size, available) in bytes.
#[track_caller]
fn df(mnt: &Path) -> (u64, u64) {
    let out = fuse::run_as(
        A,
        A,
        &[],
        "df",
        &["-B1", "--output=size,avail", path_str(mnt)],
    )
    .expect_ok();
    let v: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("df output {out:?}"))
        .split_whitespace()
        .map(|w| w.parse().expect("df number"))
        .collect();
    assert_eq!(v.len(), 2, "df output {out:?}");
    (v[0], v[1])
}

/// `gio info -f MNT`: (filesystem::size, filesystem::free), checked against `df`.
#[track_caller]
fn fs_space(home: &Path, mnt: &Path) -> (u64, u64) {
    let out = gio_ok(home, &["info", "-f", path_str(mnt)]);
    let a = info_attrs(&out);
    let what = "gio info -f";
    let (size, free) = (
        attr_u64(&a, "filesystem::size", what),
        attr_u64(&a, "filesystem::free", what),
    );
    // GIO: size = f_frsize * f_blocks, free = f_frsize * f_bavail, as df computes them.
    assert_eq!((size, free), df(mnt), "gio info -f vs df:\n{out}");
    assert!(
        attr(&a, "filesystem::type", what).starts_with("fuse"),
        "GIO's filesystem::type (from the statfs magic):\n{out}"
    );
    (size, free)
}

#[test]
fn gio_sees_lists_and_copies() {
    fuse_test(FILE, "gio", LIMIT, |dir| {
        assert!(
            images::have_tool("gio"),
            "`gio` is missing: install libglib2.0-bin (contrib/deps.sh)"
        );

        // The image: a labelled ext4 with files of two users, directories and symlinks.
        let src = subdir(&dir, "src", 0o755, Some((A, A)));
        let big_sha = write_random(&src.join("big.bin"), 7, (256 << 10) + 13);
        fs::write(src.join("notes.txt"), "hello\n").expect("write");
        fs::write(src.join("other.txt"), "b's\n").expect("write");
        subdir(&src, "dir", 0o755, Some((A, A)));
        fs::write(src.join("dir/nested.txt"), "nested\n").expect("write");
        subdir(&src, "empty", 0o755, Some((A, A)));
        symlink("notes.txt", src.join("link")).expect("symlink");
        symlink("dir", src.join("dirlink")).expect("symlink");
        for f in ["big.bin", "notes.txt", "dir/nested.txt"] {
            chown(&src.join(f), A, A);
        }
        chown(&src.join("other.txt"), B, B);
        for l in ["link", "dirlink"] {
            lchown(src.join(l), Some(A), Some(A)).expect("lchown");
        }
        let img = dir.join("demo.img");
        images::blank_image(&img, 64 << 20).unwrap_or_else(|e| panic!("{e}"));
        fuse::run(&mut command(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                LABEL,
                "-E",
                &format!("root_owner={A}:{A}"),
                "-d",
                path_str(&src),
                path_str(&img),
            ],
        ))
        .expect_ok();
        chown(&img, A, A);
        fs::set_permissions(&img, fs::Permissions::from_mode(0o600)).expect("chmod image");

        // User A's home (GIO shows FUSE mounts below $HOME), the mount point named after
        // the label, and a file to upload.
        let home = subdir(&dir, "home", 0o700, Some((A, A)));
        let mnt = subdir(&home, LABEL, 0o755, Some((A, A)));
        let upload = dir.join("upload.bin");
        let upload_sha = write_random(&upload, 8, (1 << 20) + 5);
        fs::set_permissions(&upload, fs::Permissions::from_mode(0o644)).expect("chmod");

        let d = Daemon::start_as(A, A, &img, &mnt, &[])
            .unwrap_or_else(|e| panic!("lklfuse as uid {A}: {e}"));
        let info = mounts_at(&mnt);
        let top = info.last().expect("mounted");
        assert_eq!(top.fstype, "fuse.lklfuse", "mountinfo: {info:?}");
        assert_eq!(top.source, path_str(&img), "mountinfo source: {info:?}");

        // The volume monitor lists it below $HOME, and not when $HOME is elsewhere.
        let mounts = gio_ok(&home, &["mount", "-li"]);
        eprintln!("gio mount -li:\n{mounts}");
        let name = listed_mount(&mounts, &mnt).unwrap_or_else(|| {
            panic!(
                "gio mount -li does not list {} (HOME={}):\n{mounts}",
                mnt.display(),
                home.display()
            )
        });
        assert_eq!(name, LABEL, "GIO's name for the mount:\n{mounts}");
        assert!(
            mounts.contains("can_unmount=1"),
            "GIO offers no unmount:\n{mounts}"
        );
        let elsewhere = dir.join("elsewhere");
        let hidden = gio_ok(&elsewhere, &["mount", "-li"]);
        assert_eq!(
            listed_mount(&hidden, &mnt),
            None,
            "with HOME={} GIO should not show {} (path rule):\n{hidden}",
            elsewhere.display(),
            mnt.display()
        );

        // Filesystem info: real statfs numbers (df's), the mount's identity.
        let (size, free) = fs_space(&home, &mnt);
        eprintln!("gio info -f: size {size}, free {free}");
        assert!(
            size > (32 << 20) && size <= (64 << 20),
            "filesystem::size {size} for a 64 MiB ext4"
        );
        assert!(free > (16 << 20) && free < size, "filesystem::free {free}");
        let root_info = gio_ok(&home, &["info", "-a", "unix::inode", path_str(&mnt)]);
        let unix_mount = root_info
            .lines()
            .find_map(|l| l.strip_prefix("unix mount: "))
            .unwrap_or_else(|| panic!("gio info shows no unix mount:\n{root_info}"));
        let words: Vec<&str> = unix_mount.split(' ').collect();
        assert!(
            words.len() >= 3
                && words[0] == path_str(&img)
                && words[1] == path_str(&mnt)
                && words[2] == "fuse.lklfuse",
            "gio info's unix mount line: {unix_mount:?}"
        );
        let root_ino = attr_u64(&info_attrs(&root_info), "unix::inode", "gio info MNT");
        let root_st = py_as(
            A,
            A,
            &[],
            "import os,sys; print(os.lstat(sys.argv[1]).st_ino)",
            &[path_str(&mnt)],
        )
        .expect_ok();
        assert_eq!(
            root_ino.to_string(),
            root_st.trim(),
            "root inode: GIO vs lstat"
        );

        // Listings: every entry, right type, lstat's inode number.
        let top_expect = [
            ("lost+found", "directory"),
            ("big.bin", "regular"),
            ("notes.txt", "regular"),
            ("other.txt", "regular"),
            ("dir", "directory"),
            ("empty", "directory"),
            ("link", "symlink"),
            ("dirlink", "symlink"),
        ];
        let first = check_listing(&home, &mnt, &top_expect);
        let nested_expect = [("nested.txt", "regular")];
        let first_nested = check_listing(&home, &mnt.join("dir"), &nested_expect);
        eprintln!("gio list: {first:?} {first_nested:?}");

        // Owners.
        for (f, uid, user) in [("big.bin", A, A_NAME), ("other.txt", B, B_NAME)] {
            let p = mnt.join(f);
            let out = gio_ok(
                &home,
                &["info", "-a", "owner::user,unix::uid", path_str(&p)],
            );
            let a = info_attrs(&out);
            assert_eq!(attr(&a, "owner::user", f), user, "{f}:\n{out}");
            assert_eq!(attr_u64(&a, "unix::uid", f), uid as u64, "{f}:\n{out}");
        }

        // Copies out of and into the mount.
        let out_copy = home.join("big-copy.bin");
        gio_ok(
            &home,
            &["copy", path_str(&mnt.join("big.bin")), path_str(&out_copy)],
        );
        assert_eq!(sha(&out_copy), big_sha, "gio copy out of the mount");
        let new = mnt.join("new.bin");
        gio_ok(&home, &["copy", path_str(&upload), path_str(&new)]);
        let in_sha = fuse::run_as(A, A, &[], "sha256sum", &[path_str(&new)]).expect_ok();
        assert_eq!(
            in_sha.split_whitespace().next(),
            Some(upload_sha.as_str()),
            "gio copy into the mount, read back"
        );
        let new_info = gio_ok(&home, &["info", "-a", "owner::user", path_str(&new)]);
        assert_eq!(
            attr(&info_attrs(&new_info), "owner::user", "new.bin"),
            A_NAME,
            "owner of the copied-in file:\n{new_info}"
        );
        let (size2, free2) = fs_space(&home, &mnt);
        assert_eq!(size2, size, "filesystem::size changed");
        assert!(
            free2 + (1 << 20) <= free,
            "filesystem::free did not drop by the 1 MiB copied in: {free} -> {free2}"
        );

        // The same inode numbers once the host kernel forgot its dentries and inodes
        // (FUSE FORGETs them, the next lookups start afresh). Containers may refuse
        // drop_caches: then the second listing still goes through new lookups of
        // uncached attributes.
        let _ = fs::write("/proc/sys/vm/drop_caches", "2");
        let mut top_expect2 = top_expect.to_vec();
        top_expect2.push(("new.bin", "regular"));
        let second = check_listing(&home, &mnt, &top_expect2);
        let second_nested = check_listing(&home, &mnt.join("dir"), &nested_expect);
        for (name, e) in &first {
            assert_eq!(&second[name], e, "{name}: listed again");
        }
        assert_eq!(second_nested, first_nested, "dir/ listed again");

        // Unmount; the image is clean and holds the copied-in file.
        d.stop();
        fsck_clean(Fs::Ext4, &img);
        let dumped = dir.join("new-dumped.bin");
        fuse::run(&mut command(
            "debugfs",
            &[
                "-R",
                &format!("dump /new.bin {}", path_str(&dumped)),
                path_str(&img),
            ],
        ))
        .expect_ok();
        assert_eq!(sha(&dumped), upload_sha, "new.bin in the image (debugfs)");
    });
}
