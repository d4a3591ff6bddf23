//! Every filesystem through our kernel, against images made by Debian's own
//! tools (see tests/common/images.rs).
//!
//! For each filesystem: the image is made at test time from a host directory
//! (files small and multi-MiB, nested directories, symlinks, hard links,
//! xattrs, permission bits, a 64 MiB sparse file, a time past 2038, as far as
//! the filesystem and its tool keep them), attached as a disk, and mounted
//! through our kernel with the type left to autodetection. Everything read
//! must equal what was put in. For writable filesystems a second tree is then
//! written through our kernel and the original tree changed (append, rename,
//! remove); after unmount the image must pass the filesystem's own checker
//! and read back equal through a host-side reference (the host kernel on a
//! loop device, a FUSE driver, or mtools) and through our kernel again.
//!
//! One kernel per process and disks before boot: [`setup`] builds every
//! image, attaches them all and boots once; each test mounts its own disk.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::images::{self, Fs, Reference};
use lklfuse::lkl::abi::FileHandle;
use lklfuse::lkl::disk::{self, Disk, MountOptions};
use lklfuse::lkl::{self, bindings as b, sys, Errno};

const SPARSE: u64 = 64 << 20;
const SOURCE_SEED: u64 = 1;
const WRITE_SEED: u64 = 1000;

/// Every image of this file: key, filesystem, populated by the host tool.
const CASES: &[(&str, Fs, bool)] = &[
    ("ext2", Fs::Ext2, true),
    ("ext3", Fs::Ext3, true),
    ("ext4", Fs::Ext4, true),
    ("xfs", Fs::Xfs, true),
    ("btrfs", Fs::Btrfs, true),
    ("vfat", Fs::Vfat, true),
    ("exfat", Fs::Exfat, true),
    ("ntfs3", Fs::Ntfs, true),
    ("f2fs", Fs::F2fs, true),
    ("udf-genisoimage", Fs::Udf, true),
    ("udf-mkudffs", Fs::Udf, false),
    ("hfsplus", Fs::Hfsplus, false),
    ("iso9660", Fs::Iso9660, true),
    ("squashfs-gzip", Fs::Squashfs("gzip"), true),
    ("squashfs-xz", Fs::Squashfs("xz"), true),
    ("squashfs-lzo", Fs::Squashfs("lzo"), true),
    ("squashfs-lz4", Fs::Squashfs("lz4"), true),
    ("squashfs-zstd", Fs::Squashfs("zstd"), true),
    ("erofs", Fs::Erofs, true),
    ("erofs-lz4", Fs::ErofsLz4, true),
];

struct Case {
    fs: Fs,
    /// The host directory the image was made from (None: made empty).
    src: Option<PathBuf>,
    image: PathBuf,
    disk: Result<Disk, String>,
}

struct Setup {
    dir: PathBuf,
    cases: BTreeMap<&'static str, Case>,
}

impl Setup {
    fn case(&self, key: &str) -> (&Case, &Disk) {
        let case = &self.cases[key];
        match &case.disk {
            Ok(d) => (case, d),
            Err(e) => panic!("{key}: no disk: {e}"),
        }
    }
}

/// key, filesystem, source directory, image, how building went.
type Built = (
    &'static str,
    Fs,
    Option<PathBuf>,
    PathBuf,
    Result<(), String>,
);

/// Builds all images (in parallel), attaches them, boots the kernel.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        images::init_logging();
        let start = Instant::now();
        let dir = images::work_dir("filesystems");
        let built: Vec<Built> = std::thread::scope(|scope| {
            let handles: Vec<_> = CASES
                .iter()
                .map(|&(key, fs, populated)| {
                    let dir = dir.clone();
                    scope.spawn(move || {
                        let image = dir.join(format!("{key}.img"));
                        let src = populated.then(|| dir.join(format!("src-{key}")));
                        let result = (|| {
                            if let Some(src) = &src {
                                let spec = fs.source_caps().tree(SOURCE_SEED, SPARSE);
                                images::populate_host(src, &images::tree_ops(&spec))
                                    .map_err(|e| format!("populate {}: {e}", src.display()))?;
                            }
                            images::build(fs, src.as_deref(), &image, &dir)
                        })();
                        (key, fs, src, image, result)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("image builder panicked"))
                .collect()
        });
        let mut cases = BTreeMap::new();
        for (key, fs, src, image, result) in built {
            let disk = result
                .and_then(|()| disk::attach(&image, false).map_err(|e| format!("attach: {e}")));
            cases.insert(
                key,
                Case {
                    fs,
                    src,
                    image,
                    disk,
                },
            );
        }
        println!("images built and attached in {:?}", start.elapsed());
        common::kernel();
        Setup { dir, cases }
    })
}

fn opts(fstype: Option<&str>, read_only: bool, fs: Fs) -> MountOptions {
    MountOptions {
        partition: None,
        fstype: fstype.map(Into::into),
        read_only,
        flags: 0,
        data: fs.mount_data().into(),
    }
}

fn mount_point(m: &disk::Mount) -> String {
    m.path().to_str().expect("UTF-8 mount point").to_string()
}

fn manifest(root: &Path) -> images::Manifest {
    images::manifest_host(root).unwrap_or_else(|e| panic!("{e}"))
}

fn kernel_manifest(root: &str) -> images::Manifest {
    images::manifest_kernel(root).unwrap_or_else(|e| panic!("{e}"))
}

/// A read-only mount refuses to create files.
fn assert_refuses_writes(mp: &str) {
    let path = images::cstring(&format!("{mp}/must-not-exist"));
    let flags = (lklfuse::lkl::bindings::O_CREAT | lklfuse::lkl::bindings::O_WRONLY) as i32;
    match sys::openat(lklfuse::lkl::CWD, &path, flags, 0o644) {
        Err(Errno::EROFS) => {}
        other => panic!("creating a file on a read-only mount: {other:?}, expected EROFS"),
    }
}

/// Mount with autodetection, compare with the source directory.
fn check_host_made_content(key: &str, case: &Case, disk: &Disk, read_only: bool) -> disk::Mount {
    let fs = case.fs;
    let detected = disk::detect_fstype(disk, None).unwrap_or_else(|e| panic!("{key}: detect: {e}"));
    assert_eq!(detected, fs.fstype(), "{key}: detected type");
    let m = disk
        .mount(&opts(None, read_only, fs))
        .unwrap_or_else(|e| panic!("{key}: mount (autodetect): {e}"));
    assert_eq!(m.fstype(), fs.fstype(), "{key}: mounted type");
    if let Some(src) = &case.src {
        images::assert_same(
            &format!("{key}: host-made image read through our kernel"),
            &manifest(src),
            &kernel_manifest(&mount_point(&m)),
            &fs.source_caps(),
            images::FS_EXTRAS,
        );
    }
    m
}

fn read_only_case(key: &str) {
    let s = setup();
    let (case, disk) = s.case(key);
    let key = key.to_string();
    common::with_watchdog(&key.clone(), Duration::from_secs(120), move || {
        let m = check_host_made_content(&key, case, disk, true);
        assert_refuses_writes(&mount_point(&m));
        m.unmount()
            .unwrap_or_else(|e| panic!("{key}: unmount: {e}"));
    });
}

/// The trees a writable case expects: the source changed by the mutations,
/// and the tree written through the kernel, built on the host the same way.
fn expected_trees(s: &Setup, key: &str, fs: Fs, has_src: bool) -> (Option<PathBuf>, PathBuf) {
    let base = s.dir.join(format!("expect-{key}"));
    let orig = has_src.then(|| {
        let dir = base.join("orig");
        let spec = fs.source_caps().tree(SOURCE_SEED, SPARSE);
        let mut ops = images::tree_ops(&spec);
        ops.extend(images::mutation_ops(SOURCE_SEED));
        images::populate_host(&dir, &ops).expect("populate expected tree");
        dir
    });
    let written = base.join("written");
    let spec = fs.write_caps().tree(WRITE_SEED, SPARSE);
    images::populate_host(&written, &images::tree_ops(&spec)).expect("populate expected tree");
    (orig, written)
}

fn read_write_case(key: &str) {
    let s = setup();
    let (case, disk) = s.case(key);
    let key = key.to_string();
    common::with_watchdog(&key.clone(), Duration::from_secs(240), move || {
        let fs = case.fs;
        let source_caps = fs.source_caps();
        let write_caps = fs.write_caps();
        let reference_caps = fs.reference_caps();

        // 1. What the host tool put in, through our kernel (autodetected).
        let m = check_host_made_content(&key, case, disk, false);
        assert!(!m.read_only(), "{key}: mounted read-only");
        let mp = mount_point(&m);

        // 2. Write through our kernel: a new tree, and changes to the old one.
        let spec = write_caps.tree(WRITE_SEED, SPARSE);
        images::populate_kernel(&format!("{mp}/written"), &images::tree_ops(&spec), &spec)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        if case.src.is_some() {
            images::populate_kernel(&mp, &images::mutation_ops(SOURCE_SEED), &spec)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        check_statx_by_handle(&key, &mp);
        let (expect_orig, expect_written) = expected_trees(s, &key, fs, case.src.is_some());
        let check_kernel = |mp: &str, when: &str| {
            images::assert_same(
                &format!("{key}: tree written through our kernel, {when}"),
                &manifest(&expect_written),
                &kernel_manifest(&format!("{mp}/written")),
                &write_caps,
                &[],
            );
            if let Some(orig) = &expect_orig {
                images::assert_same(
                    &format!("{key}: changed host-made tree, {when}"),
                    &manifest(orig),
                    &kernel_manifest(mp),
                    &source_caps,
                    images::FS_EXTRAS,
                );
            }
        };
        check_kernel(&mp, "before unmount");
        m.unmount()
            .unwrap_or_else(|e| panic!("{key}: unmount: {e}"));

        // 3. The filesystem's own checker.
        match images::fsck(fs, &case.image) {
            Ok(out) => println!("{key}: checker:\n{}", last_lines(&out, 4)),
            Err(e) => panic!("{key}: the image fails its checker after our writes:\n{e}"),
        }

        // 4. A host-side reference reads the same.
        match images::host_reference(fs, &case.image, &s.dir)
            .unwrap_or_else(|e| panic!("{key}: host reference: {e}"))
        {
            Reference::Unavailable(why) => {
                println!("NOTE {key}: no host-side read-back: {why}");
            }
            reference => {
                let root = reference.root().expect("has a root");
                images::assert_same(
                    &format!("{key}: tree written through our kernel, read by the host reference"),
                    &manifest(&expect_written),
                    &manifest(&root.join("written")),
                    &reference_caps,
                    &[],
                );
                if let Some(orig) = &expect_orig {
                    images::assert_same(
                        &format!("{key}: changed host-made tree, read by the host reference"),
                        &manifest(orig),
                        &manifest(root),
                        &source_caps.and(&reference_caps),
                        images::FS_EXTRAS,
                    );
                }
                if matches!(fs, Fs::Ext2 | Fs::Ext3 | Fs::Ext4) {
                    check_with_debugfs(&key, &case.image, &expect_written);
                }
            }
        }

        // 5. And our kernel, from the disk this time.
        let m = disk
            .mount(&opts(Some(fs.fstype()), true, fs))
            .unwrap_or_else(|e| panic!("{key}: remount: {e}"));
        check_kernel(&mount_point(&m), "after remounting");
        m.unmount()
            .unwrap_or_else(|e| panic!("{key}: unmount: {e}"));
    });
}

/// `statx_by_handle` (this kernel's own call) answers what `statx` answers, is refused like
/// `open_by_handle_at` to a task acting with an unprivileged caller's filesystem ids, and says
/// `ESTALE` once the inode is gone. The file it makes is gone again afterwards.
fn check_statx_by_handle(key: &str, mp: &str) {
    let path = CString::new(format!("{mp}/by-handle")).expect("no NUL in the path");
    let flags = (b::O_CREAT | b::O_WRONLY | b::O_EXCL) as i32;
    let fd = sys::openat(lkl::CWD, &path, flags, 0o640).expect("create");
    sys::write(&fd, b"twelve bytes").expect("write");
    sys::fsync(&fd).expect("fsync");
    drop(fd);
    let handle = match sys::name_to_handle_at(lkl::CWD, &path, 0) {
        Ok((handle, _)) => handle,
        Err(Errno::EOPNOTSUPP) => {
            println!("NOTE {key}: no file handles, statx_by_handle not checked");
            sys::unlinkat(lkl::CWD, &path, 0).expect("unlink");
            return;
        }
        Err(e) => panic!("{key}: name_to_handle_at: {e}"),
    };
    let root = CString::new(mp).expect("no NUL in the path");
    let root = sys::openat(lkl::CWD, &root, b::O_RDONLY as i32, 0).expect("open root");

    let mask = b::STATX_BASIC_STATS | b::STATX_BTIME;
    let nofollow = b::AT_SYMLINK_NOFOLLOW as i32;
    let mut direct = sys::statx(lkl::CWD, &path, nofollow, mask).expect("statx");
    // A handle names an inode, not a place in the mount tree: no mount id.
    direct.mask &= !b::STATX_MNT_ID;
    direct.mnt_id = 0;
    let by_handle = sys::statx_by_handle(&root, &handle, mask);
    assert_eq!(by_handle, Ok(direct), "{key}: statx_by_handle");
    assert_eq!(direct.size, 12, "{key}");

    // A worker acting for uid 1000 has no CAP_DAC_READ_SEARCH in its effective set.
    let (opened, stat) = std::thread::scope(|s| {
        s.spawn(|| {
            sys::setfsuid(1000).expect("setfsuid");
            let path_flags = (b::O_PATH | b::O_CLOEXEC) as i32;
            let opened = sys::open_by_handle_at(&root, &handle, path_flags).map(drop);
            (opened, sys::statx_by_handle(&root, &handle, mask))
        })
        .join()
        .expect("worker thread")
    });
    assert_eq!(
        opened,
        Err(Errno::EPERM),
        "{key}: open_by_handle_at as uid 1000"
    );
    assert_eq!(
        stat,
        Err(Errno::EPERM),
        "{key}: statx_by_handle as uid 1000"
    );

    let empty = FileHandle {
        handle_type: handle.handle_type,
        bytes: Box::new([]),
    };
    assert_eq!(
        sys::statx_by_handle(&root, &empty, mask),
        Err(Errno::EINVAL),
        "{key}: an empty handle"
    );
    sys::unlinkat(lkl::CWD, &path, 0).expect("unlink");
    assert_eq!(
        sys::statx_by_handle(&root, &handle, mask),
        Err(Errno::ESTALE),
        "{key}: statx_by_handle after unlink"
    );
}

/// `debugfs -R cat` reads a file of the image without any kernel.
fn check_with_debugfs(key: &str, image: &Path, expect_written: &Path) {
    let out = std::process::Command::new("debugfs")
        .args(["-R", "cat /written/big-3MiB.bin"])
        .arg(image)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("run debugfs");
    let want = std::fs::read(expect_written.join("big-3MiB.bin")).expect("read expected");
    assert!(
        out.stdout == want,
        "{key}: debugfs reads {} bytes of /written/big-3MiB.bin (sha256 {}), expected {} (sha256 {})",
        out.stdout.len(),
        images::hex(&images::sha256(&out.stdout)),
        want.len(),
        images::hex(&images::sha256(&want)),
    );
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn ext2() {
    read_write_case("ext2");
}

#[test]
fn ext3() {
    read_write_case("ext3");
}

#[test]
fn ext4() {
    read_write_case("ext4");
}

#[test]
fn xfs() {
    read_write_case("xfs");
}

#[test]
fn btrfs() {
    read_write_case("btrfs");
}

#[test]
fn vfat() {
    read_write_case("vfat");
}

#[test]
fn exfat() {
    read_write_case("exfat");
}

#[test]
fn ntfs3() {
    read_write_case("ntfs3");
}

#[test]
fn f2fs() {
    read_write_case("f2fs");
}

/// UDF as `genisoimage -udf` makes it (read-only media: an ISO 9660/UDF bridge).
#[test]
fn udf_genisoimage() {
    read_only_case("udf-genisoimage");
}

/// UDF from `mkudffs`, written through our kernel. No populating tool in
/// Debian 12 (wrudf is interactive), so the host-made part is the empty fs.
#[test]
fn udf_mkudffs() {
    read_write_case("udf-mkudffs");
}

#[test]
fn iso9660() {
    read_only_case("iso9660");
}

#[test]
fn squashfs_gzip() {
    read_only_case("squashfs-gzip");
}

#[test]
fn squashfs_xz() {
    read_only_case("squashfs-xz");
}

#[test]
fn squashfs_lzo() {
    read_only_case("squashfs-lzo");
}

#[test]
fn squashfs_lz4() {
    read_only_case("squashfs-lz4");
}

#[test]
fn squashfs_zstd() {
    read_only_case("squashfs-zstd");
}

#[test]
fn erofs() {
    read_only_case("erofs");
}

#[test]
fn erofs_lz4() {
    read_only_case("erofs-lz4");
}

/// HFS+: Debian 12 has no mkfs.hfsplus (hfsprogs was removed) and no
/// working checker, so the empty volume comes from `images::make_hfsplus`
/// (TN1150) and everything is checked through our kernel only: written,
/// unmounted, mounted again, read back equal.
#[test]
fn hfsplus() {
    read_write_case("hfsplus");
}

/// Autodetection names every filesystem, all in one place.
#[test]
fn autodetection_names_every_filesystem() {
    let s = setup();
    let mut wrong = Vec::new();
    for (key, case) in &s.cases {
        let Ok(disk) = &case.disk else {
            wrong.push(format!("{key}: no disk"));
            continue;
        };
        match disk::detect_fstype(disk, None) {
            Ok(t) if t == case.fs.fstype() => {}
            Ok(t) => wrong.push(format!(
                "{key}: detected {t}, expected {}",
                case.fs.fstype()
            )),
            Err(e) => wrong.push(format!("{key}: {e}")),
        }
    }
    assert!(wrong.is_empty(), "autodetection:\n  {}", wrong.join("\n  "));
}

/// The SHA-256 used for every comparison is the real one.
#[test]
fn sha256_known_answers() {
    assert_eq!(
        images::hex(&images::sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        images::hex(&images::sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let mut h = images::Sha256::new();
    for chunk in vec![b'a'; 1_000_000].chunks(777) {
        h.update(chunk);
    }
    assert_eq!(
        images::hex(&h.finish()),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}
