//! Read-only safety and exclusive use.
//!
//! - A read-only mount never changes a byte of the image (size, mtime and
//!   SHA-256 of the image file before and after), for every filesystem, also
//!   when the filesystem asks for a journal/log replay on mount: ext4 with a
//!   journal that needs recovery, XFS with a dirty log, btrfs with a log
//!   tree, f2fs with fsync data to roll forward. Those images are made by a
//!   child process (this test binary again) that writes through our kernel,
//!   fsyncs and is killed with SIGKILL while mounted.
//! - A read-only disk (attach(read_only)) is mounted read-only whatever the
//!   mount asks.
//! - An image file that can only be opened read-only falls back to a
//!   read-only disk (a child process running as `nobody` when we are root,
//!   since root may write any file).
//! - A disk attached read-write is locked: a second process cannot attach it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::images::{self, Fingerprint, Fs};
use lklfuse::lkl::bindings as b;
use lklfuse::lkl::disk::{self, Disk, MountOptions};
use lklfuse::lkl::{self, sys, Errno};

const SPARSE: u64 = 8 << 20;

/// Populated images mounted read-only.
const READ_ONLY_CASES: &[(&str, Fs)] = &[
    ("ext2", Fs::Ext2),
    ("ext3", Fs::Ext3),
    ("ext4", Fs::Ext4),
    ("xfs", Fs::Xfs),
    ("btrfs", Fs::Btrfs),
    ("vfat", Fs::Vfat),
    ("exfat", Fs::Exfat),
    ("ntfs3", Fs::Ntfs),
    ("f2fs", Fs::F2fs),
    ("udf", Fs::Udf),
    ("iso9660", Fs::Iso9660),
    ("squashfs", Fs::Squashfs("xz")),
    ("erofs", Fs::Erofs),
    // Empty: no Debian tool fills an HFS+ image (see images::make_hfsplus).
    ("hfsplus", Fs::Hfsplus),
];

/// Images left by a process killed while it had them mounted read-write.
const DIRTY_CASES: &[(&str, Fs)] = &[
    ("dirty-ext4", Fs::Ext4),
    ("dirty-xfs", Fs::Xfs),
    ("dirty-btrfs", Fs::Btrfs),
    ("dirty-f2fs", Fs::F2fs),
];

struct Case {
    fs: Fs,
    src: Option<PathBuf>,
    image: PathBuf,
    before: Result<Fingerprint, String>,
    disk: Result<Disk, String>,
}

struct Setup {
    dir: PathBuf,
    cases: BTreeMap<String, Case>,
}

impl Setup {
    fn case(&self, key: &str) -> (&Case, &Disk) {
        let case = &self.cases[key];
        match (&case.disk, &case.before) {
            (Ok(d), Ok(_)) => (case, d),
            (Err(e), _) | (_, Err(e)) => panic!("{key}: no disk: {e}"),
        }
    }
}

/// key, filesystem, source directory, image, attach read-only, how building went.
type Built = (
    String,
    Fs,
    Option<PathBuf>,
    PathBuf,
    bool,
    Result<(), String>,
);

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        images::init_logging();
        let dir = images::work_dir("readonly");
        let mut made: Vec<Built> = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for &(key, fs) in READ_ONLY_CASES {
                let dir = dir.clone();
                handles.push(scope.spawn(move || {
                    let src = dir.join(format!("src-{key}"));
                    let image = dir.join(format!("{key}.img"));
                    if fs == Fs::Hfsplus {
                        let result = images::build(fs, None, &image, &dir);
                        return (key.to_string(), fs, None, image, false, result);
                    }
                    let result = (|| {
                        let spec = fs.source_caps().tree(1, SPARSE);
                        images::populate_host(&src, &images::tree_ops(&spec))
                            .map_err(|e| e.to_string())?;
                        images::build(fs, Some(&src), &image, &dir)
                    })();
                    (key.to_string(), fs, Some(src), image, false, result)
                }));
            }
            for &(key, fs) in DIRTY_CASES {
                let dir = dir.clone();
                handles.push(scope.spawn(move || {
                    let image = dir.join(format!("{key}.img"));
                    let result = make_dirty(fs, &image, &dir);
                    (key.to_string(), fs, None, image, false, result)
                }));
            }
            // A read-only disk, and a disk the lock test holds.
            for (key, fs, ro) in [("ro-disk", Fs::Ext4, true), ("locked", Fs::Ext4, false)] {
                let dir = dir.clone();
                handles.push(scope.spawn(move || {
                    let image = dir.join(format!("{key}.img"));
                    let result = images::build(fs, None, &image, &dir);
                    (key.to_string(), fs, None, image, ro, result)
                }));
            }
            handles
                .into_iter()
                .map(|h| h.join().expect("builder panicked"))
                .collect()
        });
        // A read-only image file for the fallback test (used by a child process).
        let ro_file = dir.join("ro-file.img");
        let built = images::build(Fs::Ext4, None, &ro_file, &dir).and_then(|()| {
            std::fs::set_permissions(&ro_file, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| e.to_string())
        });
        made.push(("ro-file".into(), Fs::Ext4, None, ro_file, true, built));

        let mut cases = BTreeMap::new();
        for (key, fs, src, image, read_only, result) in made {
            let before = result.clone().and_then(|()| images::fingerprint(&image));
            // The ro-file image is for a child process only: not attached here.
            let disk = result.and_then(|()| {
                if key == "ro-file" {
                    Err("used by a child process".to_string())
                } else {
                    disk::attach(&image, read_only).map_err(|e| format!("attach: {e}"))
                }
            });
            cases.insert(
                key,
                Case {
                    fs,
                    src,
                    image,
                    before,
                    disk,
                },
            );
        }
        common::kernel();
        Setup { dir, cases }
    })
}

fn opts(read_only: bool) -> MountOptions {
    MountOptions {
        partition: None,
        fstype: None,
        read_only,
        flags: 0,
        data: String::new(),
    }
}

fn mount_point(m: &disk::Mount) -> String {
    m.path().to_str().expect("UTF-8").to_string()
}

/// Creating, changing metadata and setting xattrs all fail with EROFS.
fn assert_refuses_writes(key: &str, mp: &str) {
    let create = images::cstring(&format!("{mp}/must-not-exist"));
    let flags = (b::O_CREAT | b::O_WRONLY) as i32;
    match sys::openat(lkl::CWD, &create, flags, 0o644) {
        Err(Errno::EROFS) => {}
        other => panic!("{key}: create on a read-only mount: {other:?}, expected EROFS"),
    }
    match sys::mkdirat(lkl::CWD, &create, 0o755) {
        Err(Errno::EROFS) => {}
        other => panic!("{key}: mkdir on a read-only mount: {other:?}, expected EROFS"),
    }
    let root = images::cstring(mp);
    match sys::fchmodat(lkl::CWD, &root, 0o700) {
        Err(Errno::EROFS) => {}
        other => panic!("{key}: chmod on a read-only mount: {other:?}, expected EROFS"),
    }
}

/// Mounts read-only (autodetected), reads everything, tries to write,
/// unmounts: the image file is unchanged.
fn read_only_case(key: &str) {
    let s = setup();
    let (case, disk) = s.case(key);
    let key = key.to_string();
    common::with_watchdog(&key.clone(), Duration::from_secs(120), move || {
        let m = disk
            .mount(&opts(true))
            .unwrap_or_else(|e| panic!("{key}: read-only mount: {e}"));
        assert_eq!(m.fstype(), case.fs.fstype(), "{key}: type");
        assert!(m.read_only(), "{key}: not read-only");
        let mp = mount_point(&m);
        let got = images::manifest_kernel(&mp).unwrap_or_else(|e| panic!("{key}: {e}"));
        if let Some(src) = &case.src {
            let want = images::manifest_host(src).expect("source manifest");
            images::assert_same(&key, &want, &got, &case.fs.source_caps(), images::FS_EXTRAS);
        }
        assert_refuses_writes(&key, &mp);
        m.unmount()
            .unwrap_or_else(|e| panic!("{key}: unmount: {e}"));
        assert_unchanged(&key, case);
    });
}

#[track_caller]
fn assert_unchanged(key: &str, case: &Case) {
    let before = case.before.as_ref().expect("fingerprint before");
    let after = images::fingerprint(&case.image).expect("fingerprint after");
    assert_eq!(
        &after, before,
        "{key}: a read-only mount changed the image file"
    );
}

#[test]
fn ro_ext2() {
    read_only_case("ext2");
}

#[test]
fn ro_ext3() {
    read_only_case("ext3");
}

#[test]
fn ro_ext4() {
    read_only_case("ext4");
}

#[test]
fn ro_xfs() {
    read_only_case("xfs");
}

#[test]
fn ro_btrfs() {
    read_only_case("btrfs");
}

#[test]
fn ro_vfat() {
    read_only_case("vfat");
}

#[test]
fn ro_exfat() {
    read_only_case("exfat");
}

#[test]
fn ro_ntfs3() {
    read_only_case("ntfs3");
}

#[test]
fn ro_f2fs() {
    read_only_case("f2fs");
}

#[test]
fn ro_udf() {
    read_only_case("udf");
}

#[test]
fn ro_iso9660() {
    read_only_case("iso9660");
}

#[test]
fn ro_squashfs() {
    read_only_case("squashfs");
}

#[test]
fn ro_erofs() {
    read_only_case("erofs");
}

#[test]
fn ro_hfsplus() {
    read_only_case("hfsplus");
}

// ---------------------------------------------------------------------------------------------
// Images that want a replay on mount

/// Makes an image that a killed process left mounted read-write: the child
/// writes and fsyncs through our kernel, reports, and is SIGKILLed.
fn make_dirty(fs: Fs, image: &Path, dir: &Path) -> Result<(), String> {
    images::build(fs, None, image, dir)?;
    let mut child = images::child_command("child_process", "dirty-writer")
        .env("LKLFUSE_TEST_IMAGE", image)
        .env("LKLFUSE_TEST_FSTYPE", fs.fstype())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn child: {e}"))?;
    let rx = images::line_channel(child.stdout.take().expect("piped"));
    let mut seen = Vec::new();
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let is_ready = images::child_lines(&line).iter().any(|l| l == "ready");
                seen.push(line);
                if is_ready {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let status = child.wait().map_err(|e| e.to_string())?;
    if !ready {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(format!(
            "the dirty-writer child did not get ready ({status}):\n{}\n{err}",
            seen.join("\n")
        ));
    }
    Ok(())
}

/// The child's side: mount, write, fsync, say "ready", wait to be killed.
fn dirty_writer() {
    let image = PathBuf::from(std::env::var("LKLFUSE_TEST_IMAGE").expect("image"));
    let fstype = std::env::var("LKLFUSE_TEST_FSTYPE").expect("fstype");
    let disk = disk::attach(&image, false).expect("attach");
    common::kernel();
    let m = disk
        .mount(&MountOptions {
            fstype: Some(fstype),
            ..opts(false)
        })
        .expect("mount rw");
    let mp = mount_point(&m);
    let spec = Fs::Ext4.write_caps().tree(5, 1 << 20);
    let mut ops = images::tree_ops(&spec);
    ops.retain(|op| !matches!(op, images::Op::Xattr { .. } | images::Op::Symlink { .. }));
    images::populate_kernel(&format!("{mp}/dirty"), &ops, &spec).expect("write");
    // Commit all that, then change files and fsync them: the changes are
    // durable in the journal (ext4), the log (xfs), a log tree (btrfs; a
    // file first fsynced in the transaction that made it is committed
    // instead) or as fsync data to roll forward (f2fs), not checkpointed.
    sys::sync().expect("sync");
    for path in ["dirty/big-3MiB.bin", "dirty/docs/small.txt"] {
        let fd = sys::openat(
            lkl::CWD,
            &images::cstring(&format!("{mp}/{path}")),
            (b::O_WRONLY | b::O_APPEND) as i32,
            0,
        )
        .expect("open");
        sys::write(&fd, b"appended, then fsynced").expect("append");
        sys::fsync(&fd).expect("fsync");
    }
    let fd = sys::openat(
        lkl::CWD,
        &images::cstring(&format!("{mp}/after-sync")),
        (b::O_CREAT | b::O_WRONLY) as i32,
        0o644,
    )
    .expect("create");
    sys::write(&fd, b"unsynced").expect("write");
    images::tell_parent("ready");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether the image really wants a replay (so that the test means something).
fn describe_dirty(fs: Fs, image: &Path) -> String {
    match fs {
        Fs::Ext4 => {
            let sb = std::fs::read(image).map(|d| d[1024 + 0x60..1024 + 0x64].to_vec());
            let incompat = sb
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            assert!(
                incompat & 0x4 != 0,
                "the ext4 image does not need recovery (incompat {incompat:#x}): the test is void"
            );
            "ext4 superblock has needs_recovery".into()
        }
        Fs::Btrfs => {
            let out = images::run(&mut images::cmd(
                "btrfs",
                &[
                    "inspect-internal",
                    "dump-super",
                    image.to_str().expect("UTF-8"),
                ],
            ))
            .unwrap_or_default();
            let log_root = out
                .lines()
                .find(|l| l.starts_with("log_root\t") || l.starts_with("log_root "))
                .unwrap_or("log_root ?")
                .to_string();
            assert!(
                log_root.split_whitespace().nth(1).is_none_or(|v| v != "0"),
                "the btrfs image has no log tree ({log_root}): the test is void"
            );
            log_root
        }
        Fs::Xfs => {
            let (code, out) = images::run_status(&mut images::cmd(
                "xfs_repair",
                &["-n", "-f", image.to_str().expect("UTF-8")],
            ))
            .unwrap_or((-1, String::new()));
            let dirty = out.contains("valuable metadata changes in a log");
            assert!(
                dirty,
                "the XFS log is clean (xfs_repair -n: {code}): the test is void"
            );
            "xfs_repair -n: the log needs replaying".into()
        }
        _ => "fsync data to roll forward".into(),
    }
}

fn dirty_case(key: &str) {
    let s = setup();
    let (case, disk) = s.case(key);
    let key = key.to_string();
    common::with_watchdog(&key.clone(), Duration::from_secs(120), move || {
        println!("{key}: {}", describe_dirty(case.fs, &case.image));
        let m = disk.mount(&opts(true)).unwrap_or_else(|e| {
            panic!("{key}: a read-only mount of an image that needs a replay must work: {e}")
        });
        assert_eq!(m.fstype(), case.fs.fstype());
        assert!(m.read_only());
        let mp = mount_point(&m);
        let names = images::kernel_list_dir(&mp).unwrap_or_else(|e| panic!("{key}: {e}"));
        println!("{key}: read-only mount without replay shows {names:?}");
        assert_refuses_writes(&key, &mp);
        m.unmount()
            .unwrap_or_else(|e| panic!("{key}: unmount: {e}"));
        assert_unchanged(&key, case);
        // Nothing was replayed: the image still wants it.
        describe_dirty(case.fs, &case.image);
    });
}

#[test]
fn ro_ext4_journal_needs_recovery() {
    dirty_case("dirty-ext4");
}

#[test]
fn ro_xfs_log_needs_recovery() {
    dirty_case("dirty-xfs");
}

#[test]
fn ro_btrfs_log_tree_needs_replay() {
    dirty_case("dirty-btrfs");
}

#[test]
fn ro_f2fs_fsync_data_to_roll_forward() {
    dirty_case("dirty-f2fs");
}

// ---------------------------------------------------------------------------------------------
// Read-only disks and image files

/// A disk attached read-only is mounted read-only even when a read-write
/// mount is asked for.
#[test]
fn read_only_disk_mounts_read_only() {
    let s = setup();
    let (case, disk) = s.case("ro-disk");
    common::with_watchdog("ro-disk", Duration::from_secs(60), move || {
        assert!(disk.read_only());
        let m = disk.mount(&opts(false)).expect("mount of a read-only disk");
        assert!(m.read_only(), "a read-only disk was mounted read-write");
        assert_refuses_writes("ro-disk", &mount_point(&m));
        m.unmount().expect("unmount");
        assert_unchanged("ro-disk", case);
    });
}

/// An image file we may only read: attach(read-write) falls back to a
/// read-only disk, with a warning. Run in a child process as `nobody` when we
/// are root (root may write any file whatever its mode).
#[test]
fn read_only_image_file_falls_back_to_read_only() {
    let s = setup();
    let case = &s.cases["ro-file"];
    let before = case.before.as_ref().expect("image built");
    let mut c = images::child_command("child_process", "ro-file");
    c.env("LKLFUSE_TEST_IMAGE", &case.image);
    if images::is_root() {
        println!("running the child as nobody (65534): root may write a 0444 file");
        c.uid(65534).gid(65534);
    }
    let out = c.output().expect("spawn child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = images::child_lines(&text);
    assert!(
        out.status.success() && lines.iter().any(|l| l == "ok"),
        "child ({}):\n{text}",
        out.status
    );
    println!("child: {}", lines.join("\n       "));
    assert_eq!(
        &images::fingerprint(&case.image).expect("fingerprint"),
        before
    );
    let _ = &s.dir;
}

fn ro_file_child() {
    let image = PathBuf::from(std::env::var("LKLFUSE_TEST_IMAGE").expect("image"));
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if std::fs::OpenOptions::new().write(true).open(&image).is_ok() {
        panic!(
            "uid {euid} can open {} for writing: the test is void",
            image.display()
        );
    }
    let disk =
        disk::attach(&image, false).expect("attach(read-write) of a read-only file must fall back");
    assert!(
        disk.read_only(),
        "the disk of a read-only file is not read-only"
    );
    common::kernel();
    let m = disk.mount(&opts(false)).expect("mount");
    assert!(m.read_only(), "mounted read-write on a read-only disk");
    assert_refuses_writes("ro-file", &mount_point(&m));
    m.unmount().expect("unmount");
    images::tell_parent(&format!(
        "uid {euid}: attached read-only, mounted read-only"
    ));
    images::tell_parent("ok");
}

// ---------------------------------------------------------------------------------------------
// Exclusive use

/// While this process has the image attached (and mounted) read-write,
/// another process cannot attach it read-write: a clear error, no corruption.
#[test]
fn second_process_cannot_attach_a_disk_in_use() {
    let s = setup();
    let (case, disk) = s.case("locked");
    let m = disk.mount(&opts(false)).expect("mount rw");
    let out = images::child_command("child_process", "second-attach")
        .env("LKLFUSE_TEST_IMAGE", &case.image)
        .output()
        .expect("spawn child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = images::child_lines(&text);
    m.unmount().expect("unmount");
    println!("child: {}", lines.join("\n       "));
    let refused = lines.iter().find_map(|l| l.strip_prefix("refused: "));
    let Some(message) = refused else {
        panic!(
            "a second process attached an image in use read-write ({}):\n{text}",
            out.status
        );
    };
    let lower = message.to_lowercase();
    assert!(
        ["lock", "in use", "busy", "another"]
            .iter()
            .any(|w| lower.contains(w)),
        "the refusal does not say the image is in use: {message}"
    );
    assert!(
        message.contains(case.image.to_str().expect("UTF-8")),
        "the refusal does not name the image: {message}"
    );
    // A reader would see the writer's half-done changes: refused as well.
    let ro = lines
        .iter()
        .find_map(|l| l.strip_prefix("read-only attach while in use elsewhere: "))
        .unwrap_or_else(|| panic!("the child did not try a read-only attach:\n{text}"));
    assert!(
        ro.contains("in use"),
        "a read-only attach of an image attached read-write elsewhere was not refused: {ro}"
    );
}

fn second_attach_child() {
    let image = PathBuf::from(std::env::var("LKLFUSE_TEST_IMAGE").expect("image"));
    match disk::attach(&image, false) {
        Ok(_) => images::tell_parent("attached read-write: NOT refused"),
        Err(e) => images::tell_parent(&format!("refused: {e}")),
    }
    match disk::attach(&image, true) {
        Ok(_) => images::tell_parent("read-only attach while in use elsewhere: allowed"),
        Err(e) => images::tell_parent(&format!("read-only attach while in use elsewhere: {e}")),
    }
}

/// Not a test: the body of the child processes above (selected by
/// LKLFUSE_TEST_CHILD). Does nothing when run directly.
#[test]
#[ignore = "helper run as a child process by the other tests of this file"]
fn child_process() {
    match images::child_role().as_deref() {
        Some("dirty-writer") => dirty_writer(),
        Some("ro-file") => ro_file_child(),
        Some("second-attach") => second_attach_child(),
        Some(other) => panic!("unknown child role {other}"),
        None => println!("helper for child processes: nothing to do when run directly"),
    }
}
