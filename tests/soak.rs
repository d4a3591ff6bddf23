//! Soak: one ext4 `lklfuse` mount (default threads) under 16 concurrent clients for
//! `LKLFUSE_SOAK_SECS` seconds (default 60; `contrib/soak.sh` runs 600).
//!
//! Each client is a thread of this process working mostly in its own directory, with an
//! in-memory model of that directory (names, kinds, contents, modes, times, xattrs, link
//! counts) checked after every operation that reads something back and as a whole
//! periodically; all clients also race in one shared directory, where only ENOENT, EEXIST
//! and ENOTEMPTY are acceptable outcomes. Any other error, any mismatch, or a client without
//! progress for 30 s (a hang) fails the test.
//!
//! Meanwhile the daemon is watched from the outside: its resident memory (VmRSS) and its
//! number of host descriptors (/proc/PID/fd) every ~2 s, and its statistics line (SIGUSR1:
//! `stats: nodes=N open_files=M cached_fds=K kernel_free_kib=F`). At the end memory and
//! descriptors must be flat, and once the host forgets its inodes (`drop_caches`) the daemon
//! must hold no open files and only a few nodes. Then a clean unmount, exit 0, e2fsck clean,
//! and every model verified again after a remount.
//!
//! A second, shorter test aims at one thing the soak met: xattrs of many files read while
//! the daemon's cache of kernel descriptors churns.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fuse::{self, fsck_clean, fuse_test, make_ext4_owned, subdir, Daemon};
use common::images::{self, Fs, Rng};

const FILE: &str = "soak";

/// Concurrent clients.
const CLIENTS: usize = 16;
/// A client that completes no operation for this long hangs.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// How often the daemon's memory and descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// SIGUSR1 every this many samples.
const STATS_EVERY_SAMPLES: usize = 5;
/// Allowed growth of the daemon's RSS from the first third of the run to the last: the
/// in-process kernel's memory is a fixed arena (64 MiB by default) whose pages are touched
/// as its page cache grows (RSS rises by about 30 MiB over the first minute of this load,
/// then levels off); what grows beyond that plus allocator noise is a leak.
const RSS_MARGIN_KIB: u64 = 24 * 1024;
/// Allowed drift of the daemon's host descriptor count.
const FD_MARGIN: usize = 4;
/// Nodes the daemon may still know once the host forgot everything it could.
const NODES_AFTER_FORGET: usize = 64;

/// Per client: files at most, bytes per file at most, directories at most.
const MAX_FILES: usize = 24;
const MAX_FILE: usize = 256 * 1024;
const MAX_DIRS: usize = 6;

fn soak_secs() -> u64 {
    std::env::var("LKLFUSE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

// ---------------------------------------------------------------------------------------------
// The daemon seen from outside

/// One `stats:` line of the daemon's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stats {
    nodes: usize,
    open_files: usize,
    cached_fds: usize,
    kernel_free_kib: u64,
}

/// Parses `... stats: nodes=N open_files=M cached_fds=K kernel_free_kib=F`.
fn parse_stats(line: &str) -> Option<Stats> {
    let rest = &line[line.find("stats: ")? + "stats: ".len()..];
    let mut fields = HashMap::new();
    for word in rest.split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            fields.insert(k, v.trim_end_matches(',').parse::<u64>().ok()?);
        }
    }
    Some(Stats {
        nodes: usize::try_from(*fields.get("nodes")?).ok()?,
        open_files: usize::try_from(*fields.get("open_files")?).ok()?,
        cached_fds: usize::try_from(*fields.get("cached_fds")?).ok()?,
        kernel_free_kib: *fields.get("kernel_free_kib")?,
    })
}

#[test]
fn stats_line_format() {
    let line = "2025-01-01T00:00:00Z  INFO lklfuse: stats: nodes=12 open_files=0 cached_fds=3 \
                kernel_free_kib=40960";
    assert_eq!(
        parse_stats(line),
        Some(Stats {
            nodes: 12,
            open_files: 0,
            cached_fds: 3,
            kernel_free_kib: 40960
        })
    );
    assert_eq!(parse_stats("stats: nodes=1 open_files=2"), None);
}

/// The `stats:` lines in the daemon's output so far.
fn stats_lines(log: &str) -> Vec<(String, Option<Stats>)> {
    log.lines()
        .filter(|l| l.contains("stats: "))
        .map(|l| (l.to_string(), parse_stats(l)))
        .collect()
}

/// Whether `pid` catches SIGUSR1 (bit 9 of SigCgt): without a handler the signal's default
/// action would kill the daemon, so the test checks before it sends one.
fn catches_sigusr1(pid: u32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGUSR1 - 1)) != 0)
}

/// Sends SIGUSR1 and waits (at most 10 s) for the new statistics line.
fn request_stats(d: &Daemon) -> Result<Stats, String> {
    let before = stats_lines(&d.log_text()).len();
    d.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = stats_lines(&d.log_text());
        if lines.len() > before {
            let (line, parsed) = &lines[before];
            return parsed.ok_or_else(|| format!("unparsable statistics line: {line:?}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no `stats:` line within 10 s of SIGUSR1; daemon output tail:\n{}",
                tail(&d.log_text(), 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Host descriptors open in `pid`.
fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: usize,
}

// ---------------------------------------------------------------------------------------------
// A client and its model

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A name of inode `n` (several names: hard links).
    File(u64),
    Dir,
    Link(String),
}

#[derive(Debug, Clone)]
struct Ino {
    data: Vec<u8>,
    mode: u32,
    xattr: Option<Vec<u8>>,
    /// Set by utimensat, forgotten by the next data change.
    mtime: Option<(i64, i64)>,
}

/// What one client's directory must hold: relative path → node ("d3/f12" or "f7").
struct Model {
    names: BTreeMap<String, Node>,
    inodes: HashMap<u64, Ino>,
}

impl Model {
    fn nlink(&self, ino: u64) -> u64 {
        self.names
            .values()
            .filter(|n| **n == Node::File(ino))
            .count() as u64
    }

    fn dirs(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, n)| **n == Node::Dir)
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn files(&self) -> Vec<(String, u64)> {
        self.names
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(i) => Some((p.clone(), *i)),
                _ => None,
            })
            .collect()
    }

    fn children(&self, dir: &str) -> BTreeSet<String> {
        self.names
            .keys()
            .filter_map(|p| match p.rsplit_once('/') {
                Some((parent, name)) if parent == dir => Some(name.to_string()),
                None if dir.is_empty() => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Removes name `p`; its inode goes with its last name.
    fn remove(&mut self, p: &str) {
        if let Some(Node::File(i)) = self.names.remove(p) {
            if self.nlink(i) == 0 {
                self.inodes.remove(&i);
            }
        }
    }
}

/// Shared between a client thread and the monitor.
struct Progress {
    ops: AtomicU64,
    /// Milliseconds since the start at the last completed operation.
    last_ms: AtomicU64,
}

struct Client {
    id: usize,
    root: PathBuf,
    shared: PathBuf,
    rng: Rng,
    model: Model,
    next_ino: u64,
    next_name: u64,
    /// Operations done in the shared directory and how many of them lost a race.
    shared_ops: u64,
    shared_races: u64,
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            // The names of the errors a file operation may plausibly meet; others by number.
            let name = match n {
                libc::ENOENT => "ENOENT",
                libc::EEXIST => "EEXIST",
                libc::ENOTEMPTY => "ENOTEMPTY",
                libc::EIO => "EIO",
                libc::ENOTCONN => "ENOTCONN",
                libc::ENOSPC => "ENOSPC",
                libc::EACCES => "EACCES",
                libc::EPERM => "EPERM",
                libc::EINVAL => "EINVAL",
                libc::ENOTDIR => "ENOTDIR",
                libc::EISDIR => "EISDIR",
                libc::ENODATA => "ENODATA",
                _ => "",
            };
            format!("{name}({n}) {e}")
        }
        None => e.to_string(),
    }
}

fn cpath(p: &Path) -> std::ffi::CString {
    images::cstring(fuse::path_str(p))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) -> io::Result<()> {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: `c` is a NUL-terminated path and `ts` two valid timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) })
}

fn set_xattr(p: &Path, value: &[u8]) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: NUL-terminated path and name; `value` is valid for its length.
    check(unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.soak".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

fn get_xattr(p: &Path) -> io::Result<Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated path and name; `buf` is writable for its length.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"user.soak".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

impl Client {
    fn new(id: usize, mnt: &Path) -> Client {
        Client {
            id,
            root: mnt.join(format!("c{id:02}")),
            shared: mnt.join("shared"),
            rng: Rng::new(0x50a6_0000 + id as u64),
            model: Model {
                names: BTreeMap::new(),
                inodes: HashMap::new(),
            },
            next_ino: 1,
            next_name: 1,
            shared_ops: 0,
            shared_races: 0,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn fail(&self, op: &str, rel: &str, e: impl std::fmt::Display) -> String {
        format!("client {} {op} {}: {e}", self.id, self.p(rel).display())
    }

    fn io(&self, op: &str, rel: &str) -> impl Fn(io::Error) -> String + '_ {
        let (op, rel) = (op.to_string(), rel.to_string());
        move |e| self.fail(&op, &rel, errno_name(&e))
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            Some(v[self.rng.below(v.len() as u64) as usize].clone())
        }
    }

    /// A fresh name in the top directory or in one of the subdirectories.
    fn new_name(&mut self, prefix: &str) -> String {
        let n = self.next_name;
        self.next_name += 1;
        let dirs = self.model.dirs();
        match self.rng.below(3) {
            0 => match self.pick(&dirs) {
                Some(d) => format!("{d}/{prefix}{n}"),
                None => format!("{prefix}{n}"),
            },
            _ => format!("{prefix}{n}"),
        }
    }

    fn random_data(&mut self, max: usize) -> Vec<u8> {
        let len = match self.rng.below(8) {
            0 => 0,
            1 => self.rng.below(max as u64 + 1) as usize,
            _ => self.rng.below(16 * 1024) as usize,
        };
        let mut v = vec![0u8; len];
        self.rng.fill(&mut v);
        v
    }

    fn run(&mut self, stop: &AtomicBool, progress: &Progress, t0: Instant) -> Result<(), String> {
        fs::create_dir(&self.root).map_err(self.io("mkdir", ""))?;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            self.step(i)?;
            i += 1;
            progress.ops.store(i, Ordering::Relaxed);
            progress
                .last_ms
                .store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        self.verify_all()
    }

    fn step(&mut self, i: u64) -> Result<(), String> {
        if i % 60 == 59 {
            return self.verify_all();
        }
        let files = self.model.files().len();
        match self.rng.below(100) {
            0..=9 if files < MAX_FILES => self.create(),
            0..=9 => self.unlink(),
            10..=17 => self.write(),
            18..=25 => self.read(),
            26..=30 => self.append(),
            31..=34 => self.truncate(),
            35..=40 => self.rename(),
            41..=45 => self.unlink(),
            46..=48 if self.model.dirs().len() < MAX_DIRS => self.mkdir(),
            46..=48 => self.rmdir(),
            49..=51 => self.rmdir(),
            52..=54 => self.readdir(),
            55..=59 => self.stat(),
            60..=62 => self.chmod(),
            63..=65 => self.utimes(),
            66..=69 => self.xattr(),
            70..=72 => self.symlink(),
            73..=75 if files < MAX_FILES => self.hard_link(),
            73..=75 => self.unlink(),
            76..=78 => self.fsync(),
            _ => self.shared_op(),
        }
    }

    // --- private directory ---------------------------------------------------------------

    fn create(&mut self) -> Result<(), String> {
        let rel = self.new_name("f");
        let data = self.random_data(MAX_FILE);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(self.p(&rel))
            .map_err(self.io("create", &rel))?;
        f.write_all(&data).map_err(self.io("write new", &rel))?;
        if self.rng.below(4) == 0 {
            f.sync_all().map_err(self.io("fsync new", &rel))?;
        }
        drop(f);
        let ino = self.next_ino;
        self.next_ino += 1;
        self.model.inodes.insert(
            ino,
            Ino {
                data,
                mode: 0o644,
                xattr: None,
                mtime: None,
            },
        );
        self.model.names.insert(rel, Node::File(ino));
        Ok(())
    }

    fn write(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        let cur = self.model.inodes[&ino].data.len();
        let off = self.rng.below((cur + 4096).min(MAX_FILE) as u64) as usize;
        let mut buf = vec![0u8; 1 + self.rng.below(32 * 1024) as usize];
        self.rng.fill(&mut buf);
        buf.truncate(MAX_FILE.saturating_sub(off).max(1));
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.p(&rel))
            .map_err(self.io("open rw", &rel))?;
        f.write_all_at(&buf, off as u64)
            .map_err(self.io("pwrite", &rel))?;
        let mut back = vec![0u8; buf.len()];
        f.read_exact_at(&mut back, off as u64)
            .map_err(self.io("pread back", &rel))?;
        if back != buf {
            return Err(self.fail("read back", &rel, format!("differs at {off}+{}", buf.len())));
        }
        let m = self.model.inodes.get_mut(&ino).expect("modelled inode");
        if m.data.len() < off + buf.len() {
            m.data.resize(off + buf.len(), 0);
        }
        m.data[off..off + buf.len()].copy_from_slice(&buf);
        m.mtime = None;
        Ok(())
    }

    fn read(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        self.verify_file(&rel, ino)
    }

    fn append(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        let room = MAX_FILE.saturating_sub(self.model.inodes[&ino].data.len());
        let data = self.random_data(room.min(64 * 1024));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.p(&rel))
            .map_err(self.io("open append", &rel))?;
        f.write_all(&data).map_err(self.io("append", &rel))?;
        drop(f);
        let m = self.model.inodes.get_mut(&ino).expect("modelled inode");
        m.data.extend_from_slice(&data);
        if !data.is_empty() {
            m.mtime = None;
        }
        Ok(())
    }

    fn truncate(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        let cur = self.model.inodes[&ino].data.len();
        let len = self.rng.below((cur + 16 * 1024).min(MAX_FILE) as u64 + 1) as usize;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(self.p(&rel))
            .map_err(self.io("open for truncate", &rel))?;
        f.set_len(len as u64).map_err(self.io("ftruncate", &rel))?;
        drop(f);
        let m = self.model.inodes.get_mut(&ino).expect("modelled inode");
        m.data.resize(len, 0);
        m.mtime = None;
        Ok(())
    }

    fn rename(&mut self) -> Result<(), String> {
        // Now and then a directory (with what it holds), else a file or symlink.
        if self.rng.below(6) == 0 {
            let dirs = self.model.dirs();
            if let Some(from) = self.pick(&dirs) {
                let to = format!("d{}", self.next_name);
                self.next_name += 1;
                fs::rename(self.p(&from), self.p(&to)).map_err(self.io("rename dir", &from))?;
                let moved: Vec<(String, Node)> = self
                    .model
                    .names
                    .iter()
                    .filter(|(p, _)| **p == from || p.starts_with(&format!("{from}/")))
                    .map(|(p, n)| (p.clone(), n.clone()))
                    .collect();
                for (p, n) in moved {
                    self.model.names.remove(&p);
                    let np = format!("{to}{}", &p[from.len()..]);
                    self.model.names.insert(np, n);
                }
                return Ok(());
            }
        }
        let movable: Vec<String> = self
            .model
            .names
            .iter()
            .filter(|(_, n)| **n != Node::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        let Some(from) = self.pick(&movable) else {
            return self.create();
        };
        // A fresh name, or over another file or symlink.
        let to = match self.rng.below(3) {
            0 => self.pick(&movable).unwrap_or_else(|| from.clone()),
            _ => self.new_name("r"),
        };
        if to == from {
            return Ok(());
        }
        fs::rename(self.p(&from), self.p(&to)).map_err(self.io("rename", &from))?;
        let node = self.model.names[&from].clone();
        // rename(2) between two names of the same inode does nothing.
        if self.model.names.get(&to) == Some(&node) && matches!(node, Node::File(_)) {
            return Ok(());
        }
        self.model.names.remove(&from);
        self.model.remove(&to);
        self.model.names.insert(to, node);
        Ok(())
    }

    fn unlink(&mut self) -> Result<(), String> {
        let gone: Vec<String> = self
            .model
            .names
            .iter()
            .filter(|(_, n)| **n != Node::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        let Some(rel) = self.pick(&gone) else {
            return Ok(());
        };
        fs::remove_file(self.p(&rel)).map_err(self.io("unlink", &rel))?;
        self.model.remove(&rel);
        Ok(())
    }

    fn mkdir(&mut self) -> Result<(), String> {
        let rel = format!("d{}", self.next_name);
        self.next_name += 1;
        fs::create_dir(self.p(&rel)).map_err(self.io("mkdir", &rel))?;
        self.model.names.insert(rel, Node::Dir);
        Ok(())
    }

    /// Removes an empty subdirectory, or checks that a non-empty one is refused with
    /// ENOTEMPTY exactly.
    fn rmdir(&mut self) -> Result<(), String> {
        let dirs = self.model.dirs();
        let Some(rel) = self.pick(&dirs) else {
            return self.mkdir();
        };
        let r = fs::remove_dir(self.p(&rel));
        if self.model.children(&rel).is_empty() {
            r.map_err(self.io("rmdir", &rel))?;
            self.model.names.remove(&rel);
            return Ok(());
        }
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
            Err(e) => Err(self.fail("rmdir non-empty", &rel, errno_name(&e))),
            Ok(()) => Err(self.fail("rmdir non-empty", &rel, "succeeded")),
        }
    }

    fn readdir(&mut self) -> Result<(), String> {
        let mut dirs = self.model.dirs();
        dirs.push(String::new());
        let rel = self.pick(&dirs).expect("the top directory at least");
        self.verify_listing(&rel)
    }

    fn stat(&mut self) -> Result<(), String> {
        let names: Vec<String> = self.model.names.keys().cloned().collect();
        let Some(rel) = self.pick(&names) else {
            return Ok(());
        };
        self.verify_meta(&rel)
    }

    fn chmod(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        let modes = [0o600, 0o640, 0o644, 0o664, 0o700, 0o755, 0o400];
        let mode = modes[self.rng.below(modes.len() as u64) as usize];
        fs::set_permissions(self.p(&rel), fs::Permissions::from_mode(mode))
            .map_err(self.io("chmod", &rel))?;
        self.model
            .inodes
            .get_mut(&ino)
            .expect("modelled inode")
            .mode = mode;
        self.verify_meta(&rel)
    }

    fn utimes(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        let sec = 1_000_000_000 + self.rng.below(700_000_000) as i64;
        let nsec = self.rng.below(1_000_000_000) as i64;
        set_mtime(&self.p(&rel), sec, nsec).map_err(self.io("utimensat", &rel))?;
        self.model
            .inodes
            .get_mut(&ino)
            .expect("modelled inode")
            .mtime = Some((sec, nsec));
        self.verify_meta(&rel)
    }

    fn xattr(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        let mut value = vec![0u8; 1 + self.rng.below(200) as usize];
        self.rng.fill(&mut value);
        set_xattr(&self.p(&rel), &value).map_err(self.io("setxattr", &rel))?;
        let back = get_xattr(&self.p(&rel)).map_err(self.io("getxattr", &rel))?;
        if back != value {
            return Err(self.fail("getxattr", &rel, "value differs from what was set"));
        }
        self.model
            .inodes
            .get_mut(&ino)
            .expect("modelled inode")
            .xattr = Some(value);
        Ok(())
    }

    fn symlink(&mut self) -> Result<(), String> {
        let rel = self.new_name("l");
        let target = format!("target-{}/../x{}", self.rng.below(1000), self.next_name);
        std::os::unix::fs::symlink(&target, self.p(&rel)).map_err(self.io("symlink", &rel))?;
        let back = fs::read_link(self.p(&rel)).map_err(self.io("readlink", &rel))?;
        if back != Path::new(&target) {
            return Err(self.fail("readlink", &rel, format!("{back:?} != {target:?}")));
        }
        self.model.names.insert(rel, Node::Link(target));
        Ok(())
    }

    fn hard_link(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, ino)) = self.pick(&files) else {
            return self.create();
        };
        let to = self.new_name("h");
        fs::hard_link(self.p(&rel), self.p(&to)).map_err(self.io("link", &rel))?;
        self.model.names.insert(to.clone(), Node::File(ino));
        self.verify_meta(&to)
    }

    fn fsync(&mut self) -> Result<(), String> {
        let files = self.model.files();
        let Some((rel, _)) = self.pick(&files) else {
            return self.create();
        };
        let f = fs::OpenOptions::new()
            .write(true)
            .open(self.p(&rel))
            .map_err(self.io("open for fsync", &rel))?;
        f.sync_all().map_err(self.io("fsync", &rel))?;
        let d = fs::File::open(&self.root).map_err(self.io("open dir", ""))?;
        d.sync_all().map_err(self.io("fsync dir", ""))
    }

    // --- checks --------------------------------------------------------------------------

    fn verify_file(&self, rel: &str, ino: u64) -> Result<(), String> {
        let data = fs::read(self.p(rel)).map_err(self.io("read", rel))?;
        let want = &self.model.inodes[&ino].data;
        if &data != want {
            let at = data
                .iter()
                .zip(want.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(data.len().min(want.len()));
            return Err(self.fail(
                "read",
                rel,
                format!(
                    "content differs from the model: {} bytes read, {} expected, first \
                     difference at {at}",
                    data.len(),
                    want.len()
                ),
            ));
        }
        Ok(())
    }

    fn verify_meta(&self, rel: &str) -> Result<(), String> {
        let md = fs::symlink_metadata(self.p(rel)).map_err(self.io("lstat", rel))?;
        let node = &self.model.names[rel];
        let ok_kind = match node {
            Node::File(_) => md.is_file(),
            Node::Dir => md.is_dir(),
            Node::Link(_) => md.file_type().is_symlink(),
        };
        if !ok_kind {
            return Err(self.fail(
                "lstat",
                rel,
                format!("kind {:?}, model {node:?}", md.file_type()),
            ));
        }
        match node {
            Node::File(ino) => {
                let m = &self.model.inodes[ino];
                let got = (md.len(), md.mode() & 0o7777, md.nlink());
                let want = (m.data.len() as u64, m.mode, self.model.nlink(*ino));
                if got != want {
                    return Err(self.fail(
                        "lstat",
                        rel,
                        format!("(size, mode, nlink) {got:?}, model {want:?}"),
                    ));
                }
                if let Some(t) = m.mtime {
                    if (md.mtime(), md.mtime_nsec()) != t {
                        return Err(self.fail(
                            "lstat",
                            rel,
                            format!(
                                "mtime {}.{:09}, set {}.{:09}",
                                md.mtime(),
                                md.mtime_nsec(),
                                t.0,
                                t.1
                            ),
                        ));
                    }
                }
            }
            Node::Link(target) => {
                if md.len() != target.len() as u64 {
                    return Err(self.fail("lstat", rel, format!("symlink size {}", md.len())));
                }
            }
            Node::Dir => {}
        }
        Ok(())
    }

    fn verify_listing(&self, dir: &str) -> Result<(), String> {
        let mut got = BTreeSet::new();
        for e in fs::read_dir(self.p(dir)).map_err(self.io("opendir", dir))? {
            let e = e.map_err(self.io("readdir", dir))?;
            got.insert(e.file_name().to_string_lossy().into_owned());
        }
        let want = self.model.children(dir);
        if got != want {
            let extra: Vec<_> = got.difference(&want).collect();
            let missing: Vec<_> = want.difference(&got).collect();
            return Err(self.fail(
                "readdir",
                dir,
                format!("listing differs from the model: extra {extra:?}, missing {missing:?}"),
            ));
        }
        Ok(())
    }

    /// The whole directory against the model: listings, kinds, metadata, contents, xattrs,
    /// symlink targets.
    fn verify_all(&self) -> Result<(), String> {
        self.verify_listing("")?;
        for d in self.model.dirs() {
            self.verify_listing(&d)?;
        }
        for (rel, node) in &self.model.names {
            self.verify_meta(rel)?;
            match node {
                Node::File(ino) => {
                    self.verify_file(rel, *ino)?;
                    let got = match get_xattr(&self.p(rel)) {
                        Ok(v) => Some(v),
                        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => None,
                        Err(e) => return Err(self.fail("getxattr", rel, errno_name(&e))),
                    };
                    let want = &self.model.inodes[ino].xattr;
                    if &got != want {
                        let show = |v: &Option<Vec<u8>>| match v {
                            None => "none (ENODATA)".to_string(),
                            Some(v) => format!("{} bytes {:02x?}", v.len(), &v[..v.len().min(8)]),
                        };
                        return Err(self.fail(
                            "getxattr",
                            rel,
                            format!("user.soak is {}, the model says {}", show(&got), show(want)),
                        ));
                    }
                }
                Node::Link(target) => {
                    let back = fs::read_link(self.p(rel)).map_err(self.io("readlink", rel))?;
                    if back != Path::new(target) {
                        return Err(self.fail("readlink", rel, format!("{back:?} != {target:?}")));
                    }
                }
                Node::Dir => {}
            }
        }
        Ok(())
    }

    // --- the shared directory: races allowed -------------------------------------------

    /// One operation on names every client uses: files sf0..sf7, directories sd0..sd3 (with
    /// an entry `x` inside), never the same name for both kinds, so that a lost race can
    /// only be ENOENT, EEXIST or ENOTEMPTY.
    fn shared_op(&mut self) -> Result<(), String> {
        let f = |c: &mut Client| c.shared.join(format!("sf{}", c.rng.below(8)));
        let d = |c: &mut Client| c.shared.join(format!("sd{}", c.rng.below(4)));
        let op = self.rng.below(12);
        let (what, target, r): (&str, PathBuf, io::Result<()>) = match op {
            0 => {
                let p = f(self);
                let r = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .and_then(|mut fh| fh.write_all(&[self.id as u8; 100]));
                ("create", p, r)
            }
            1 => {
                let p = f(self);
                let r = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&p)
                    .and_then(|mut fh| fh.write_all(&[self.id as u8; 1000]));
                ("rewrite", p, r)
            }
            2 => {
                let p = f(self);
                let r = fs::read(&p).map(|_| ());
                ("read", p, r)
            }
            3 => {
                let p = f(self);
                let r = fs::remove_file(&p);
                ("unlink", p, r)
            }
            4 => {
                let (a, b) = (f(self), f(self));
                let r = if a == b { Ok(()) } else { fs::rename(&a, &b) };
                ("rename", a, r)
            }
            5 => {
                let (a, b) = (f(self), f(self));
                let r = if a == b {
                    Ok(())
                } else {
                    fs::hard_link(&a, &b)
                };
                ("link", a, r)
            }
            6 => {
                let p = d(self);
                let r = fs::create_dir(&p);
                ("mkdir", p, r)
            }
            7 => {
                let p = d(self);
                let r = fs::remove_dir(&p);
                ("rmdir", p, r)
            }
            8 => {
                let p = d(self).join("x");
                let r = fs::write(&p, b"x");
                ("create in dir", p, r)
            }
            9 => {
                let p = d(self).join("x");
                let r = fs::remove_file(&p);
                ("unlink in dir", p, r)
            }
            10 => {
                let (a, b) = (d(self), d(self));
                let r = if a == b { Ok(()) } else { fs::rename(&a, &b) };
                ("rename dir", a, r)
            }
            _ => {
                let p = self.shared.clone();
                let r = (|| {
                    for e in fs::read_dir(&p)? {
                        let e = e?;
                        match fs::symlink_metadata(e.path()) {
                            Ok(_) => {}
                            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                            Err(err) => return Err(err),
                        }
                    }
                    Ok(())
                })();
                ("list+stat", p, r)
            }
        };
        self.shared_ops += 1;
        match r {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EEXIST) | Some(libc::ENOTEMPTY)
                ) =>
            {
                self.shared_races += 1;
                Ok(())
            }
            Err(e) => Err(format!(
                "client {} shared {what} {}: {} (only ENOENT/EEXIST/ENOTEMPTY may come from races)",
                self.id,
                target.display(),
                errno_name(&e)
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The test

/// Writes "2" to /proc/sys/vm/drop_caches: the host frees unused dentries and inodes, which
/// for a FUSE mount sends FORGET for each inode it drops.
fn drop_host_caches() {
    fs::write("/proc/sys/vm/drop_caches", b"2\n").expect("echo 2 > /proc/sys/vm/drop_caches");
}

fn thirds(samples: &[Sample]) -> (&[Sample], &[Sample]) {
    let n = samples.len() / 3;
    (&samples[..n], &samples[samples.len() - n..])
}

#[test]
fn soak_mixed_clients() {
    let secs = soak_secs();
    let limit = Duration::from_secs(secs + 300);
    fuse_test(FILE, "soak", limit, move |dir| {
        let img = dir.join("soak.img");
        // 512 MiB: 16 clients × at most 24 files × 256 KiB, with room for the journal.
        make_ext4_owned(&img, 512, 0, 0);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = Daemon::start(&img, &mnt, &["type=ext4"]).unwrap_or_else(|e| panic!("{e}"));
        let pid = d.pid().expect("foreground daemon pid");
        fs::create_dir(mnt.join("shared")).expect("mkdir shared");

        // Without a SIGUSR1 handler the signal would kill the daemon: the statistics part
        // then fails at the end, the rest of the soak still runs.
        let has_stats = catches_sigusr1(pid);
        let mut problems: Vec<String> = Vec::new();
        if !has_stats {
            problems.push(format!(
                "the daemon (pid {pid}) does not catch SIGUSR1: no statistics line"
            ));
        }
        let fds_start = fd_count(pid).expect("daemon fds");
        let stats_start = if has_stats {
            Some(request_stats(&d).unwrap_or_else(|e| panic!("{e}")))
        } else {
            None
        };
        eprintln!("start: {fds_start} host fds, stats {stats_start:?}");

        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Vec<Arc<Progress>> = (0..CLIENTS)
            .map(|_| {
                Arc::new(Progress {
                    ops: AtomicU64::new(0),
                    last_ms: AtomicU64::new(0),
                })
            })
            .collect();
        let handles: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (mnt, stop, progress) = (mnt.clone(), stop.clone(), progress[id].clone());
                std::thread::Builder::new()
                    .name(format!("soak-client-{id}"))
                    .spawn(move || {
                        let mut c = Client::new(id, &mnt);
                        let r = c.run(&stop, &progress, t0);
                        if r.is_err() {
                            // The others stop too: the first error is the interesting one.
                            stop.store(true, Ordering::Relaxed);
                        }
                        r.map(|()| c)
                    })
                    .expect("spawn client")
            })
            .collect();

        // Watch until the time is up, a client fails, or one hangs.
        let mut samples: Vec<Sample> = Vec::new();
        let mut stats_during: Vec<Stats> = Vec::new();
        let mut hang: Option<String> = None;
        let deadline = t0 + Duration::from_secs(secs);
        let mut next_sample = t0;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_sample {
                next_sample += SAMPLE_EVERY;
                let s = Sample {
                    at_s: t0.elapsed().as_secs_f64(),
                    rss_kib: rss_kib(pid).unwrap_or_else(|| {
                        panic!("daemon {pid} gone; its output:\n{}", d.log_text())
                    }),
                    fds: fd_count(pid).expect("daemon fds"),
                };
                samples.push(s);
                if has_stats && samples.len().is_multiple_of(STATS_EVERY_SAMPLES) {
                    match request_stats(&d) {
                        Ok(st) => stats_during.push(st),
                        Err(e) => problems.push(format!("during the soak: {e}")),
                    }
                }
                let now_ms = t0.elapsed().as_millis() as u64;
                for (id, p) in progress.iter().enumerate() {
                    let idle = now_ms.saturating_sub(p.last_ms.load(Ordering::Relaxed));
                    if idle > HANG_LIMIT.as_millis() as u64 && !handles[id].is_finished() {
                        hang.get_or_insert_with(|| {
                            format!(
                                "client {id} completed no operation for {:.0} s (after {} ops)",
                                idle as f64 / 1000.0,
                                p.ops.load(Ordering::Relaxed)
                            )
                        });
                    }
                }
                if hang.is_some() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = &hang {
            // The blocked requests only return once the FUSE connection is gone.
            eprintln!("{h}: killing the daemon to release the clients");
            d.signal(libc::SIGKILL);
        }
        // Every client finishes its current operation and a last full verification.
        let join_deadline = Instant::now() + Duration::from_secs(120);
        while handles.iter().any(|h| !h.is_finished()) && Instant::now() < join_deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if handles.iter().any(|h| !h.is_finished()) {
            d.signal(libc::SIGKILL);
            panic!("clients still blocked 120 s after the stop (daemon killed)");
        }
        let results: Vec<Result<Client, String>> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect();
        // Printed first: also useful when the run failed.
        let line: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.0}s:{}MiB/{}fd", s.at_s, s.rss_kib / 1024, s.fds))
            .collect();
        eprintln!("samples: {}", line.join(" "));
        eprintln!("stats during the run: {stats_during:?}");
        assert!(hang.is_none(), "hang: {}", hang.unwrap_or_default());
        let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            errors.is_empty(),
            "client errors: {errors:#?}\ndaemon output tail:\n{}",
            tail(&d.log_text(), 40)
        );
        let clients: Vec<Client> = results.into_iter().map(|r| r.expect("checked")).collect();
        let total_ops: u64 = progress.iter().map(|p| p.ops.load(Ordering::Relaxed)).sum();
        let shared_ops: u64 = clients.iter().map(|c| c.shared_ops).sum();
        let races: u64 = clients.iter().map(|c| c.shared_races).sum();
        eprintln!(
            "{secs} s, {CLIENTS} clients: {total_ops} operations ({:.0}/s), {shared_ops} in the \
             shared directory of which {races} lost a race",
            total_ops as f64 / t0.elapsed().as_secs_f64()
        );
        for (id, p) in progress.iter().enumerate() {
            assert!(
                p.ops.load(Ordering::Relaxed) >= 10,
                "client {id} made almost no progress: {} operations",
                p.ops.load(Ordering::Relaxed)
            );
        }

        // Memory and descriptors over the run.
        assert!(samples.len() >= 6, "too few samples: {samples:?}");
        let (first, last) = thirds(&samples);
        let max_rss = |s: &[Sample]| s.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let max_fds = |s: &[Sample]| s.iter().map(|s| s.fds).max().unwrap_or(0);
        eprintln!(
            "RSS max first third {} KiB, last third {} KiB (margin {RSS_MARGIN_KIB} KiB); fds max \
             first third {}, last third {}",
            max_rss(first),
            max_rss(last),
            max_fds(first),
            max_fds(last)
        );
        if max_rss(last) > max_rss(first) + RSS_MARGIN_KIB {
            problems.push(format!(
                "daemon RSS grew: max {} KiB in the last third vs {} KiB in the first (margin \
                 {RSS_MARGIN_KIB} KiB)",
                max_rss(last),
                max_rss(first)
            ));
        }
        if max_fds(last) > max_fds(first) + FD_MARGIN {
            problems.push(format!(
                "daemon host fds grew: max {} in the last third vs {} in the first",
                max_fds(last),
                max_fds(first)
            ));
        }

        // The host forgets what it can; the daemon must let go of it too.
        if has_stats {
            let before = request_stats(&d).unwrap_or_else(|e| panic!("{e}"));
            let forget_deadline = Instant::now() + Duration::from_secs(30);
            let after = loop {
                drop_host_caches();
                let st = request_stats(&d).unwrap_or_else(|e| panic!("{e}"));
                if (st.open_files == 0 && st.nodes <= NODES_AFTER_FORGET)
                    || Instant::now() >= forget_deadline
                {
                    break st;
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            eprintln!("stats before drop_caches: {before:?}; after: {after:?}");
            if after.open_files != 0 || after.nodes > NODES_AFTER_FORGET {
                problems.push(format!(
                    "after the clients stopped and drop_caches: {after:?} (expected open_files=0 \
                     and nodes <= {NODES_AFTER_FORGET}); before: {before:?}"
                ));
            }
        } else {
            drop_host_caches();
        }
        let fds_end = fd_count(pid).expect("daemon fds");
        eprintln!("host fds: {fds_start} at the start, {fds_end} at the end");
        if fds_end > fds_start + FD_MARGIN || fds_end + FD_MARGIN < fds_start {
            problems.push(format!(
                "daemon host fds: {fds_start} at the start, {fds_end} at the end"
            ));
        }

        d.stop();
        fsck_clean(Fs::Ext4, &img);
        // Everything the models say is on the image.
        let d = Daemon::start(&img, &mnt, &["type=ext4"]).unwrap_or_else(|e| panic!("{e}"));
        for c in &clients {
            c.verify_all()
                .unwrap_or_else(|e| panic!("after a remount: {e}"));
        }
        d.stop();
        assert!(
            problems.is_empty(),
            "soak problems:\n{}",
            problems.join("\n")
        );
    });
}

/// Files for the xattr churn test: more than the daemon's 1024 cached kernel descriptors, so
/// that looking files up keeps evicting other files' descriptors.
const CHURN_FILES: usize = 3000;
const CHURN_THREADS: usize = 8;
const CHURN_SECS: u64 = 20;

/// Every file's xattr value names the file; eight threads read random files' values while the
/// daemon's descriptor cache churns. The soak met `getxattr` failing with ENOENT on a file it
/// had just read: the value must always be there and always the file's own (an xattr request
/// served from a descriptor closed by the cache meanwhile could reach another file).
#[test]
fn xattrs_stay_with_their_file_under_fd_cache_churn() {
    fuse_test(
        FILE,
        "xattr_churn",
        Duration::from_secs(CHURN_SECS + 240),
        |dir| {
            let img = dir.join("churn.img");
            make_ext4_owned(&img, 256, 0, 0);
            let mnt = subdir(&dir, "mnt", 0o755, None);
            let d = Daemon::start(&img, &mnt, &["type=ext4"]).unwrap_or_else(|e| panic!("{e}"));
            let files = mnt.join("x");
            fs::create_dir(&files).expect("mkdir x");
            let path = |i: usize| files.join(format!("f{i}"));
            for i in 0..CHURN_FILES {
                fs::write(path(i), b"").expect("create churn file");
                set_xattr(&path(i), format!("v{i}").as_bytes()).expect("setxattr churn file");
            }
            let stop = Instant::now() + Duration::from_secs(CHURN_SECS);
            let (reads, errors) = std::thread::scope(|s| {
                let workers: Vec<_> = (0..CHURN_THREADS)
                    .map(|t| {
                        let path = &path;
                        s.spawn(move || {
                            let mut rng = Rng::new(0xc4u64 << 8 | t as u64);
                            let (mut reads, mut errors) = (0u64, Vec::new());
                            while Instant::now() < stop && errors.len() < 10 {
                                let i = rng.below(CHURN_FILES as u64) as usize;
                                match get_xattr(&path(i)) {
                                    Ok(v) if v == format!("v{i}").as_bytes() => {}
                                    Ok(v) => errors.push(format!(
                                        "f{i}: user.soak is {:?}",
                                        String::from_utf8_lossy(&v)
                                    )),
                                    Err(e) => errors.push(format!("f{i}: {}", errno_name(&e))),
                                }
                                reads += 1;
                            }
                            (reads, errors)
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("churn worker panicked"))
                    .fold((0, Vec::new()), |(n, mut all), (r, e)| {
                        all.extend(e);
                        (n + r, all)
                    })
            });
            eprintln!(
                "{reads} getxattr calls on {CHURN_FILES} files by {CHURN_THREADS} threads, {} \
                 wrong",
                errors.len()
            );
            assert!(
                errors.is_empty(),
                "getxattr under descriptor-cache churn ({} of {reads} wrong), e.g.:\n{}",
                errors.len(),
                errors[..errors.len().min(10)].join("\n")
            );
            d.stop();
            fsck_clean(Fs::Ext4, &img);
        },
    );
}
