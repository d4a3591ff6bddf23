//! Support for the cptofs/cpfromfs/fs2tar tests: running the binaries with a time limit,
//! a host tree with every kind of entry, and a full-metadata manifest of a host tree.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lklfuse::lkl::abi::Timestamp;
use lklfuse::tools::host;

use super::images::{hex, is_root, random_bytes, run, Sha256};

/// The outcome of a tool run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Maximum resident set size of the child, in KiB (from `wait4`'s rusage via
    /// /usr/bin/time when asked).
    pub max_rss_kib: Option<u64>,
}

/// Runs `program args...`, killing it and failing the test after `limit`.
pub fn run_tool(program: &str, args: &[&OsString], limit: Duration) -> Outcome {
    run_tool_measured(program, args, limit, false)
}

/// As [`run_tool`]; with `measure`, under `/usr/bin/time -f %M` to get the max RSS.
pub fn run_tool_measured(
    program: &str,
    args: &[&OsString],
    limit: Duration,
    measure: bool,
) -> Outcome {
    // One name per call: tests run on parallel threads of one process, and a shared name
    // let one run delete another's report before it was read.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let rss_file = std::env::temp_dir().join(format!(
        "lklfuse-rss-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut cmd = if measure {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    // Drain both pipes on threads so a chatty child cannot block.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().expect("stdout reader");
    let stderr = err_t.join().expect("stderr reader");
    let max_rss_kib = measure
        .then(|| fs::read_to_string(&rss_file).ok())
        .flatten()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()));
    if measure {
        let _ = fs::remove_file(&rss_file);
    }
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
        max_rss_kib,
    }
}

/// Arguments as `OsString`s.
pub fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// What a filesystem can hold, for building and comparing trees.
#[derive(Clone, Copy, Debug)]
pub struct Kinds {
    /// Symlinks, hard links, fifos, devices, owners, modes, xattrs, ACLs.
    pub unix: bool,
    /// Nanosecond times (else even seconds).
    pub ns_times: bool,
}

/// Builds a tree with every kind of entry `kinds` allows under `root`.
pub fn make_tree(root: &Path, kinds: Kinds) {
    let w = |p: &str, data: &[u8]| fs::write(root.join(p), data).expect("write");
    fs::create_dir_all(root.join("dir/sub/deeper")).expect("mkdir");
    fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    w("small.txt", b"hello, image\n");
    w("empty", b"");
    w("dir/big.bin", &random_bytes(7, 3 << 20 | 1234));
    w("dir/sub/deeper/leaf", &random_bytes(8, 5000));
    for i in 0..40 {
        w(
            &format!("dir/sub/f{i:02}"),
            &random_bytes(100 + i, i as usize * 97),
        );
    }
    // Sparse: data at 1 MiB and at the end of 24 MiB.
    let sparse = fs::File::create(root.join("sparse")).expect("create sparse");
    sparse
        .write_all_at(&random_bytes(9, 4096), 1 << 20)
        .expect("write");
    sparse
        .write_all_at(&random_bytes(10, 100), (24 << 20) - 100)
        .expect("write");
    drop(sparse);
    if kinds.unix {
        std::os::unix::fs::symlink("small.txt", root.join("link-rel")).expect("symlink");
        std::os::unix::fs::symlink("/nonexistent/target", root.join("dir/dangling"))
            .expect("symlink");
        std::os::unix::fs::symlink("../../small.txt", root.join("dir/sub/up")).expect("symlink");
        fs::hard_link(root.join("small.txt"), root.join("dir/hard1")).expect("link");
        fs::hard_link(root.join("small.txt"), root.join("dir/sub/hard2")).expect("link");
        host::mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0).expect("mkfifo");
        if is_root() {
            host::mknod(
                &root.join("null-dev"),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3),
            )
            .expect("mknod");
            host::mknod(
                &root.join("blk-dev"),
                libc::S_IFBLK | 0o600,
                libc::makedev(7, 200),
            )
            .expect("mknod");
            std::os::unix::fs::lchown(root.join("dir/sub/deeper/leaf"), Some(1234), Some(5678))
                .expect("chown");
            std::os::unix::fs::lchown(root.join("link-rel"), Some(42), Some(43)).expect("lchown");
        }
        host::set_xattr(
            &root.join("small.txt"),
            std::ffi::OsStr::new("user.greeting"),
            b"hi",
        )
        .expect("xattr");
        host::set_xattr(
            &root.join("dir"),
            std::ffi::OsStr::new("user.bin"),
            &[0, 1, 2, 255],
        )
        .expect("xattr");
        run(Command::new("setfacl").args([
            "-m",
            "u:1001:rw,g:1002:r",
            root.join("dir/big.bin").to_str().expect("utf-8"),
        ]))
        .expect("setfacl");
        run(Command::new("setfacl").args([
            "-d",
            "-m",
            "u:1001:rwx",
            root.join("dir/sub").to_str().expect("utf-8"),
        ]))
        .expect("setfacl -d");
        for (p, mode) in [
            ("dir/sub/f01", 0o4755),
            ("dir/sub/f02", 0o2750),
            ("dir/sub/f03", 0o400),
            ("empty-dir", 0o1777),
            ("dir/sub/deeper", 0o711),
        ] {
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
    // Times last (children change their directory's mtime); directories deepest first.
    let mut paths = Vec::new();
    collect(root, "", &mut paths);
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for (i, rel) in paths.iter().enumerate() {
        let sec = 1_500_000_000 + 2 * 7_919 * i as i64;
        let nsec = if kinds.ns_times {
            (123_456_789 * (i as i64 + 1)) % 1_000_000_000
        } else {
            0
        };
        let t = Timestamp::new(sec, nsec).expect("valid time");
        host::set_times(&root.join(rel), t, t).expect("utimensat");
    }
}

fn collect(root: &Path, rel: &str, out: &mut Vec<String>) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for e in fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name().into_string().expect("utf-8 names");
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        out.push(child.clone());
        if e.file_type().expect("type").is_dir() {
            collect(root, &child, out);
        }
    }
}

/// Everything about one entry that a copy must keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub kind: String,
    pub size: u64,
    pub sha: String,
    pub link: String,
    pub rdev: u64,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the first path with the same inode (hard links), else its own path.
    pub inode_group: String,
    /// Allocated bytes (to check sparseness).
    pub allocated: u64,
}

/// Relative path → item, for everything below `root`.
pub fn manifest(root: &Path) -> BTreeMap<String, Item> {
    let mut paths = Vec::new();
    collect(root, "", &mut paths);
    paths.sort();
    let mut first_of_inode: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for rel in paths {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chr"
        } else if ft.is_block_device() {
            "blk"
        } else {
            "other"
        };
        let sha = if ft.is_file() {
            let mut h = Sha256::new();
            let mut f = fs::File::open(&p).expect("open");
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            hex(&h.finish())
        } else {
            String::new()
        };
        let link = if ft.is_symlink() {
            fs::read_link(&p)
                .expect("readlink")
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let mut xattrs = BTreeMap::new();
        for name in host::list_xattrs(&p).unwrap_or_default() {
            if let Ok(Some(v)) = host::get_xattr(&p, &name) {
                xattrs.insert(name.to_string_lossy().into_owned(), v);
            }
        }
        let inode_group = if !ft.is_dir() && m.nlink() > 1 {
            first_of_inode.entry(m.ino()).or_insert(rel.clone()).clone()
        } else {
            rel.clone()
        };
        out.insert(
            rel,
            Item {
                kind: kind.into(),
                size: if ft.is_file() { m.len() } else { 0 },
                sha,
                link,
                rdev: m.rdev(),
                perm: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                xattrs,
                inode_group,
                allocated: m.blocks() * 512,
            },
        );
    }
    out
}

/// Differences between two manifests, comparing everything (`unix`) or only what FAT-like
/// filesystems keep: names, types, sizes, content and mtime seconds.
pub fn differences(
    expected: &BTreeMap<String, Item>,
    actual: &BTreeMap<String, Item>,
    unix: bool,
    ns_times: bool,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, e) in expected {
        let Some(a) = actual.get(path) else {
            diffs.push(format!("{path}: missing"));
            continue;
        };
        let mut check = |what: &str, ok: bool, ev: String, av: String| {
            if !ok {
                diffs.push(format!("{path}: {what}: expected {ev}, got {av}"));
            }
        };
        check("kind", e.kind == a.kind, e.kind.clone(), a.kind.clone());
        check(
            "size",
            e.size == a.size,
            e.size.to_string(),
            a.size.to_string(),
        );
        check("content", e.sha == a.sha, e.sha.clone(), a.sha.clone());
        // Directory mtimes on FAT are not kept by every driver; files' are.
        if unix || e.kind == "file" {
            let (em, am) = if ns_times {
                (e.mtime, a.mtime)
            } else {
                ((e.mtime.0, 0), (a.mtime.0, 0))
            };
            check("mtime", em == am, format!("{em:?}"), format!("{am:?}"));
        }
        if unix {
            check("link", e.link == a.link, e.link.clone(), a.link.clone());
            check(
                "rdev",
                e.rdev == a.rdev,
                e.rdev.to_string(),
                a.rdev.to_string(),
            );
            check(
                "perm",
                e.perm == a.perm,
                format!("{:o}", e.perm),
                format!("{:o}", a.perm),
            );
            check(
                "owner",
                (e.uid, e.gid) == (a.uid, a.gid),
                format!("{}:{}", e.uid, e.gid),
                format!("{}:{}", a.uid, a.gid),
            );
            check(
                "xattrs",
                e.xattrs == a.xattrs,
                format!("{:?}", e.xattrs),
                format!("{:?}", a.xattrs),
            );
            check(
                "hard link group",
                e.inode_group == a.inode_group,
                e.inode_group.clone(),
                a.inode_group.clone(),
            );
        }
    }
    for path in actual.keys() {
        if !expected.contains_key(path) {
            diffs.push(format!("{path}: unexpected"));
        }
    }
    diffs
}
