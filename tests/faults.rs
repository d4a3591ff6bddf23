//! Faults under a live `lklfuse` mount: the host disk holding the image
//! fills up, the image file is truncated, the disk starts failing every
//! read and write, the daemon is killed with SIGKILL in the middle of
//! fsynced writes, SIGTERM arrives in the middle of unsynced writes.
//!
//! What must hold every time: callers get errors (never a hang: every step
//! has a time limit), the daemon does not crash (no signal, no panic text),
//! the unmount completes (the daemon may exit 1 with its one-line "not
//! unmounted cleanly" report when the final sync failed), and whatever the
//! filesystem promised before the fault (fsync returned 0, close returned 0
//! before a SIGTERM) is on the image afterwards, which its checker passes.
//!
//! The host kernel here has no device-mapper, nbd or fault injection, so
//! the failing disk is a loop device over a file served by a small FUSE
//! filesystem inside this test process ([`FaultyDisk`]) that can be
//! switched to answer every read and write with EIO: the same EIO a
//! `dm-error` table gives, through a real host block device.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fuse::{
    self, command, fsck_clean, fuse_test, path_str, run_limited, subdir, Daemon, Out, Spawned,
};
use common::images::{self, Fs, HostMount};

const FILE: &str = "faults";
/// Watchdog of every test: generous, the machine is shared.
const LIMIT: Duration = Duration::from_secs(420);
/// Limit of one scripted phase (writers, probers) through a faulty mount.
const STEP_LIMIT: Duration = Duration::from_secs(180);
/// Limit of one unmount command.
const UNMOUNT_LIMIT: Duration = Duration::from_secs(60);

/// Text that means the daemon crashed instead of reporting an error.
const CRASH_MARKS: &[&str] = &[
    "panicked",
    "RUST_BACKTRACE",
    "stack backtrace",
    "fatal kernel error",
    "Kernel panic",
    "BUG:",
    "Oops",
];

// ---------------------------------------------------------------------------------------------
// Helpers

fn start(img: &Path, mnt: &Path, fs: Fs) -> Daemon {
    let t = format!("type={}", fs.fstype());
    Daemon::start(img, mnt, &[&t]).unwrap_or_else(|e| panic!("mount {}: {e}", img.display()))
}

/// Runs a host command that must succeed within `limit`; its stdout.
#[track_caller]
fn host(program: &str, args: &[&str], limit: Duration) -> String {
    let out = run_limited(&mut command(program, args), limit).unwrap_or_else(|e| panic!("{e}"));
    out.expect_ok()
}

/// `python3 -c script args...` within `limit` (killed, and the test failed, when it hangs).
#[track_caller]
fn python(what: &str, script: &str, args: &[&str], limit: Duration) -> Out {
    let mut a = vec!["-c", script];
    a.extend_from_slice(args);
    run_limited(&mut command(fuse::python(), &a), limit)
        .unwrap_or_else(|e| panic!("{what} hangs (a caller blocked in the mount?): {e}"))
}

/// Asserts that the daemon ended by itself after faults: no signal, no
/// crash text, status 0, or 1 with the one-line "not unmounted cleanly"
/// report. Returns the exit code.
#[track_caller]
fn assert_survived(case: &str, status: ExitStatus, log: &str) -> i32 {
    assert!(
        status.signal().is_none(),
        "{case}: the daemon died of signal {:?} instead of exiting; its output:\n{log}",
        status.signal()
    );
    for mark in CRASH_MARKS {
        assert!(
            !log.contains(mark),
            "{case}: crash text {mark:?} in the daemon's output:\n{log}"
        );
    }
    let code = status.code().expect("an exit code when there is no signal");
    // The final report is the one line the binary prints itself; everything
    // else in the foreground log is a tracing record (INFO/WARN/ERROR ...).
    let reports: Vec<&str> = log.lines().filter(|l| l.starts_with("lklfuse: ")).collect();
    match code {
        0 => assert!(
            reports.is_empty(),
            "{case}: exit 0 but an error report: {reports:?}"
        ),
        1 => assert!(
            reports.len() == 1 && reports[0].contains("not unmounted cleanly"),
            "{case}: exit 1 must come with exactly one 'not unmounted cleanly' line, got \
             {reports:?}; output:\n{log}"
        ),
        other => panic!("{case}: exit status {other}; output:\n{log}"),
    }
    code
}

/// Writes that failed on the image mean the filesystem may have lost data it wrote back on
/// its own: the daemon must not call that a clean unmount.
#[track_caller]
fn assert_unclean_after_failed_writes(
    case: &str,
    seen: &BTreeMap<(String, String), usize>,
    code: i32,
) {
    let failed_writes = seen.keys().any(|(op, _)| op == "write" || op == "mkdir");
    if failed_writes {
        assert_eq!(
            code, 1,
            "{case}: writes failed ({seen:?}), yet the daemon reported a clean unmount"
        );
    }
}

/// `fusermount3 -u` (bounded), then the daemon must exit by itself within
/// the exit limit and [`assert_survived`]. Returns the exit code.
#[track_caller]
fn unmount_after_faults(d: &mut Daemon, case: &str) -> i32 {
    let m = path_str(&d.mnt).to_string();
    let out = run_limited(&mut command("fusermount3", &["-u", &m]), UNMOUNT_LIMIT)
        .unwrap_or_else(|e| panic!("{case}: fusermount3 -u: {e}"));
    assert!(out.ok(), "{case}: fusermount3 -u: {}", out.describe());
    let status = d
        .wait_exit(fuse::EXIT_LIMIT)
        .unwrap_or_else(|e| panic!("{case}: after fusermount3 -u: {e}"))
        .expect("a foreground daemon has an exit status");
    assert!(!d.is_mounted(), "{case}: still mounted after the exit");
    let log = d.log_text();
    let code = assert_survived(case, status, &log);
    let final_line = log.lines().rev().find(|l| !l.trim().is_empty());
    eprintln!("{case}: daemon exit {code}; last line: {final_line:?}");
    code
}

/// Whether the daemon process is still alive and its mount still there.
#[track_caller]
fn assert_daemon_alive(d: &Daemon, case: &str) {
    let pid = d.pid().expect("pid");
    assert!(
        fuse::process_alive(pid) && d.is_mounted(),
        "{case}: the daemon died under the fault (alive {}, mounted {}); output:\n{}",
        fuse::process_alive(pid),
        d.is_mounted(),
        d.log_text()
    );
}

/// Counts the lines `err OP ERRNO ...` a script printed: (op, errno) -> count.
fn errnos(out: &str) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && f[0] == "err" {
            *seen
                .entry((f[1].to_string(), f[2].to_string()))
                .or_insert(0) += 1;
        }
    }
    seen
}

/// A seed for the random crash points: from the clock, or `LKLFUSE_FAULT_SEED`
/// to repeat a run. Printed, so a failure can be reproduced.
fn seed(test: &str) -> u64 {
    let s = std::env::var("LKLFUSE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {s} (LKLFUSE_FAULT_SEED={s} repeats it)");
    s
}

/// One file a writer reported as safe: fsynced (or closed before a SIGTERM).
#[derive(Clone, Debug)]
struct Logged {
    rel: String,
    len: u64,
    sha: String,
}

/// Parses `REL LEN SHA256` lines (other lines are ignored).
fn parse_logged(text: &str) -> Vec<Logged> {
    let is_sha = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [rel, len, sha] if is_sha(sha) => Some(Logged {
                    rel: rel.to_string(),
                    len: len.parse().ok()?,
                    sha: sha.to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Every logged file below `root` has exactly its logged length and hash;
/// the list of those that do not.
fn check_logged(root: &Path, files: &[Logged]) -> Vec<String> {
    let mut bad = Vec::new();
    for f in files {
        match images::sha256_host_file(&root.join(&f.rel)) {
            Ok((len, h)) if len == f.len && images::hex(&h) == f.sha => {}
            Ok((len, h)) => bad.push(format!(
                "{}: {len} bytes sha256 {}, expected {} bytes {}",
                f.rel,
                images::hex(&h),
                f.len,
                f.sha
            )),
            Err(e) => bad.push(format!("{}: {e}", f.rel)),
        }
    }
    bad
}

/// The problems e2fsck repaired beyond the journal replay (each question
/// it answered "yes" to, with the line that states the problem). The
/// superblock's free counts are not journaled (ext4 recomputes them at
/// mount), and clearing orphans is part of recovery (the kernel does it at
/// mount too, without asking): neither is damage.
fn e2fsck_repairs(out: &str) -> Vec<String> {
    let lines: Vec<&str> = out.lines().collect();
    let mut repairs = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !(l.contains("? yes") || l.contains("FIXED")) {
            continue;
        }
        // "Problem (details).\nFix? yes": the problem is on the line before.
        let problem = lines[..i]
            .iter()
            .rev()
            .find(|p| !p.trim().is_empty())
            .copied()
            .unwrap_or("");
        let what = format!("{problem} / {l}");
        if !what.contains("Free blocks count wrong") && !what.contains("Free inodes count wrong") {
            repairs.push(what);
        }
    }
    repairs
}

/// The host replays the journal or log of `img` in place and the checker
/// must then pass. ext4: `e2fsck -fy` may replay and nothing else, then
/// `e2fsck -fn` is clean; XFS: a host mount replays the log, then
/// `xfs_repair -n` is clean. What they said, for the report.
#[track_caller]
fn host_replay_then_fsck(fs: Fs, img: &Path, scratch: &Path, case: &str) -> String {
    let i = path_str(img);
    match fs {
        Fs::Ext4 => {
            let out = run_limited(
                &mut command("e2fsck", &["-f", "-y", i]),
                Duration::from_secs(120),
            )
            .unwrap_or_else(|e| panic!("{case}: {e}"));
            let text = format!("{}{}", out.stdout, out.stderr);
            let code = out.code().unwrap_or(-1);
            assert!(
                code == 0 || code == 1,
                "{case}: e2fsck -fy exit {code} (4 and up: damage):\n{text}"
            );
            let repairs = e2fsck_repairs(&text);
            assert!(
                repairs.is_empty(),
                "{case}: e2fsck -fy did more than replay the journal: {repairs:?}\n{text}"
            );
            fsck_clean(fs, img);
            let replayed = text.contains("recovering journal");
            format!("e2fsck -fy exit {code} (journal replayed: {replayed}, no repairs), then e2fsck -fn clean")
        }
        Fs::Xfs => {
            let dirty = images::fsck(fs, img).is_err();
            {
                let _m = HostMount::kernel(img, &scratch.join("host-replay"), "xfs", "")
                    .unwrap_or_else(|e| panic!("{case}: host mount (log replay): {e}"));
            }
            fsck_clean(fs, img);
            format!("xfs_repair -n before replay clean: {}; host mount replayed the log; xfs_repair -n clean", !dirty)
        }
        other => panic!("no host replay for {}", other.id()),
    }
}

/// A tmpfs of its own at `dir`, unmounted (lazily) when dropped, even when
/// the test failed: a small disk to fill.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let o = format!("size={size_mib}m,mode=0755");
        host(
            "mount",
            &["-t", "tmpfs", "-o", &o, "lklfuse-faults", path_str(dir)],
            Duration::from_secs(30),
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn resize(&self, size_mib: u64) {
        let o = format!("remount,size={size_mib}m");
        host(
            "mount",
            &["-o", &o, path_str(&self.dir)],
            Duration::from_secs(30),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_limited(
            &mut command("umount", &["-l", path_str(&self.dir)]),
            Duration::from_secs(30),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The host disk fills up

/// Phase 1 writes 8 files of 1 MiB, each fsynced with its directory, and
/// prints `REL LEN SHA` for each after the fsyncs returned (the disk has
/// room then: any error there fails the script). Phase 2 writes 4 MiB files
/// (write, fsync, close) until 6 files have failed, printing `err OP ERRNO`
/// for every failed call, then tries metadata operations and a read.
const FILL: &str = r#"
import errno, hashlib, os, sys
mnt = sys.argv[1]
def ename(e): return errno.errorcode.get(e.errno, str(e.errno))
def out(*a): print(*a, flush=True)
def fsync_dir(p):
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    try: os.fsync(fd)
    finally: os.close(fd)
def write_all(fd, data):
    v = memoryview(data)
    while v: v = v[os.write(fd, v):]
os.mkdir(f'{mnt}/pre'); fsync_dir(mnt)
for i in range(8):
    data = os.urandom(1 << 20)
    fd = os.open(f'{mnt}/pre/p{i}', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    write_all(fd, data); os.fsync(fd); os.close(fd)
    fsync_dir(f'{mnt}/pre')
    out(f'pre/p{i}', len(data), hashlib.sha256(data).hexdigest())
os.mkdir(f'{mnt}/fill')
failed = ok = i = 0
while failed < 6 and i < 200:
    p = f'{mnt}/fill/f{i:04}'; i += 1
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        out('err', 'open', ename(e)); failed += 1; continue
    bad = False
    for op, f in (('write', lambda: write_all(fd, os.urandom(4 << 20))), ('fsync', lambda: os.fsync(fd))):
        try: f()
        except OSError as e:
            out('err', op, ename(e)); bad = True; break
    try: os.close(fd)
    except OSError as e:
        out('err', 'close', ename(e)); bad = True
    failed += bad; ok += not bad
out('filled', ok, i)
def create():
    fd = os.open(f'{mnt}/after-file', os.O_WRONLY | os.O_CREAT, 0o644)
    try: os.write(fd, b'x' * 100000); os.fsync(fd)
    finally: os.close(fd)
for op, f in (('mkdir', lambda: os.mkdir(f'{mnt}/after-dir')), ('create', create),
              ('rename', lambda: os.rename(f'{mnt}/fill/f0000', f'{mnt}/fill/renamed')),
              ('listdir', lambda: os.listdir(f'{mnt}/fill')),
              ('read', lambda: open(f'{mnt}/pre/p0', 'rb').read())):
    try: f(); out('ok', op)
    except OSError as e: out('err', op, ename(e))
out('done')
"#;

fn disk_full(name: &'static str, fs: Fs) {
    fuse_test(FILE, name, LIMIT, move |dir| {
        // XFS zeroes its log (at least 64 MiB) at mkfs: its disk is bigger.
        let (tmpfs_mib, image_mib) = match fs {
            Fs::Xfs => (100, 512),
            _ => (64, 512),
        };
        let small = Tmpfs::mount(&dir.join("small-disk"), tmpfs_mib);
        let img = small.dir.join("disk.img");
        images::blank_image(&img, image_mib << 20).unwrap_or_else(|e| panic!("{e}"));
        match fs {
            // Lazy init off: the inode tables and journal (about 25 MiB) fit, so
            // the kernel has no background zeroing that would fill the disk itself.
            Fs::Ext4 => host(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-b",
                    "4096",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                    path_str(&img),
                ],
                Duration::from_secs(60),
            ),
            Fs::Xfs => host(
                "mkfs.xfs",
                &["-q", "-f", path_str(&img)],
                Duration::from_secs(60),
            ),
            other => panic!("no disk-full case for {}", other.id()),
        };
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let mut d = start(&img, &mnt, fs);

        let t0 = Instant::now();
        let out = python(
            "the disk-filling writer",
            FILL,
            &[path_str(&mnt)],
            STEP_LIMIT,
        );
        let fill_secs = t0.elapsed().as_secs_f64();
        assert!(
            out.ok() && out.stdout.contains("\ndone"),
            "{name}: the writer did not finish (phase 1 must succeed): {}",
            out.describe()
        );
        let synced = parse_logged(&out.stdout);
        assert_eq!(
            synced.len(),
            8,
            "{name}: fsynced files before the disk filled"
        );
        let seen = errnos(&out.stdout);
        let filled = out
            .stdout
            .lines()
            .find(|l| l.starts_with("filled "))
            .unwrap_or("filled ?");
        eprintln!(
            "{name}: {filled} (ok files, attempts) in {fill_secs:.1} s; errors seen: {seen:?}; \
             after the fill: {:?}",
            out.stdout
                .lines()
                .skip_while(|l| !l.starts_with("filled"))
                .collect::<Vec<_>>()
        );
        assert!(
            !seen.is_empty(),
            "{name}: no call failed although the {tmpfs_mib} MiB host disk is full: {}",
            out.stdout
        );
        // ENOSPC or EIO; EROFS once the filesystem turned itself read-only
        // after the failed journal/log write (its errors=remount-ro answer).
        for (op, e) in seen.keys() {
            assert!(
                ["ENOSPC", "EIO", "EROFS"].contains(&e.as_str()),
                "{name}: {op} failed with {e}, expected ENOSPC, EIO or EROFS: {}",
                out.stdout
            );
        }
        assert_daemon_alive(&d, name);
        let code = unmount_after_faults(&mut d, name);
        let log = d.log_text();
        drop(d);
        let kernel_said: Vec<&str> = log
            .lines()
            .filter(|l| {
                [
                    "Shutting down filesystem",
                    "Aborting journal",
                    "EXT4-fs error",
                    "remounting",
                ]
                .iter()
                .any(|m| l.contains(m))
            })
            .take(4)
            .collect();
        eprintln!("{name}: the kernel said {kernel_said:?}");

        // Room again: the host replays and checks, then a fresh mount reads
        // back what was fsynced before the disk filled.
        small.resize(1024);
        // Before any replay: exit 0 says "unmounted cleanly", which is only
        // true if the image needs no journal/log replay (checked last).
        let as_left = images::fsck(fs, &img);
        let fsck = host_replay_then_fsck(fs, &img, &dir, name);
        eprintln!("{name}: daemon exit {code}; {fsck}");
        let d = start(&img, &mnt, fs);
        let bad = check_logged(&mnt, &synced);
        assert!(
            bad.is_empty(),
            "{name}: data fsynced before the disk filled is damaged:\n  {}",
            bad.join("\n  ")
        );
        fs::read_dir(mnt.join("fill"))
            .expect("list fill/ after the remount")
            .count();
        d.stop();
        fsck_clean(fs, &img);
        if let (0, Err(e)) = (code, &as_left) {
            let head: Vec<&str> = e.lines().take(25).collect();
            panic!(
                "{name}: the daemon exited 0 ('unmounted cleanly') but the image it left needed \
                 a journal/log replay (the kernel had said {kernel_said:?}); the checker on the \
                 image as left (first lines):\n{}",
                head.join("\n")
            );
        }
    });
}

#[test]
fn host_disk_full_ext4() {
    disk_full("disk_full_ext4", Fs::Ext4);
}

#[test]
fn host_disk_full_xfs() {
    disk_full("disk_full_xfs", Fs::Xfs);
}

// ---------------------------------------------------------------------------------------------
// 2. The image goes away under the mount

/// Walks the mount (stat of everything), reads every file of the manifest
/// (`REL SHA256` lines) and compares, then writes: `read ok|WRONG REL` or
/// `err OP ERRNO [REL]` per step, `done` at the end. A read that succeeds
/// with wrong bytes (e.g. zeros where the image was cut) is `WRONG`.
const PROBE: &str = r#"
import errno, hashlib, os, sys
mnt, manifest = sys.argv[1], sys.argv[2]
def ename(e): return errno.errorcode.get(e.errno, str(e.errno))
def out(*a): print(*a, flush=True)
for root, dirs, files in os.walk(mnt, onerror=lambda e: out('err', 'walk', ename(e))):
    for f in files:
        try: os.stat(os.path.join(root, f))
        except OSError as e: out('err', 'stat', ename(e), f)
for line in open(manifest):
    rel, want = line.split()
    try:
        h = hashlib.sha256()
        with open(os.path.join(mnt, rel), 'rb') as f:
            while True:
                b = f.read(1 << 20)
                if not b: break
                h.update(b)
        out('read', 'ok' if h.hexdigest() == want else 'WRONG', rel)
    except OSError as e:
        out('err', 'read', ename(e), rel)
def write():
    fd = os.open(f'{mnt}/written-after-fault', os.O_WRONLY | os.O_CREAT, 0o644)
    try: os.write(fd, os.urandom(1 << 20)); os.fsync(fd)
    finally: os.close(fd)
for op, f in (('write', write), ('mkdir', lambda: os.mkdir(f'{mnt}/dir-after-fault'))):
    try: f(); out('ok', op)
    except OSError as e: out('err', op, ename(e))
out('done')
"#;

/// A host directory with `dirs` x `files` random files of `size` bytes, and
/// its manifest (`REL SHA256` lines) written to `manifest`.
fn populate_src(src: &Path, manifest: &Path, dirs: usize, files: usize, size: usize) {
    let mut lines = String::new();
    for d in 0..dirs {
        fs::create_dir_all(src.join(format!("d{d}"))).expect("mkdir src");
        for f in 0..files {
            let rel = format!("d{d}/f{f}");
            let h = fuse::write_random(&src.join(&rel), 2 * (d * 100 + f) as u64, size);
            lines.push_str(&format!("{rel} {h}\n"));
        }
    }
    fs::write(manifest, lines).expect("write manifest");
}

/// Runs [`PROBE`] and checks its verdict: finished in time, no read that
/// returned wrong data, at least one error. The errors seen.
#[track_caller]
fn probe(case: &str, mnt: &Path, manifest: &Path) -> BTreeMap<(String, String), usize> {
    let t0 = Instant::now();
    let out = python(
        "the prober",
        PROBE,
        &[path_str(mnt), path_str(manifest)],
        STEP_LIMIT,
    );
    let wrong: Vec<&str> = out.stdout.lines().filter(|l| l.contains("WRONG")).collect();
    let ok_reads = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("read ok"))
        .count();
    let seen = errnos(&out.stdout);
    eprintln!(
        "{case}: probe took {:.1} s; {ok_reads} reads intact; errors {seen:?}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        out.ok() && out.stdout.contains("\ndone"),
        "{case}: the prober did not finish: {}",
        out.describe()
    );
    assert!(
        wrong.is_empty(),
        "{case}: reads returned wrong data without an error (silent corruption): {wrong:?}"
    );
    assert!(
        seen.keys().any(|(op, _)| op == "read"),
        "{case}: no read failed although the data is gone: {}",
        out.stdout
    );
    seen
}

fn truncated(name: &'static str, keep: fn(u64) -> u64) {
    fuse_test(FILE, name, LIMIT, move |dir| {
        // 96 MiB of file data in a 256 MiB image: more than a quarter of the
        // image, so some of it lies past any cut at 1/4 or below.
        let src = dir.join("src");
        let manifest = dir.join("manifest");
        populate_src(&src, &manifest, 6, 4, 4 << 20);
        let img = dir.join("ext4.img");
        images::build(Fs::Ext4, Some(&src), &img, &dir).unwrap_or_else(|e| panic!("{e}"));
        let size = fs::metadata(&img).expect("stat image").len();
        let mnt = subdir(&dir, "mnt", 0o755, None);
        // A fresh daemon: nothing is cached yet but what the mount read.
        let mut d = start(&img, &mnt, Fs::Ext4);
        let cut = keep(size);
        fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .and_then(|f| f.set_len(cut))
            .unwrap_or_else(|e| panic!("truncate the image to {cut}: {e}"));
        eprintln!("{name}: image cut from {size} to {cut} bytes under the mount");
        let seen = probe(name, &mnt, &manifest);
        assert_daemon_alive(&d, name);
        let code = unmount_after_faults(&mut d, name);
        assert_unclean_after_failed_writes(name, &seen, code);
    });
}

#[test]
fn image_truncated_to_a_quarter_under_the_mount() {
    truncated("truncated_quarter", |size| size / 4);
}

#[test]
fn image_truncated_to_zero_under_the_mount() {
    truncated("truncated_zero", |_| 0);
}

// --- A disk that fails every request -------------------------------------------------------

/// A FUSE filesystem with one file, `disk.img`, backed by a host file: its
/// reads and writes pass through (direct I/O: no host page cache in
/// between) until `failing` is set, then every read, write and fsync
/// answers EIO, as a disk behind `dm-error` does.
struct FaultyDisk {
    file: fs::File,
    size: u64,
    failing: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
}

const FAULTY_ROOT: u64 = 1;
const FAULTY_DISK: u64 = 2;
const FAULTY_TTL: Duration = Duration::from_secs(1);

impl FaultyDisk {
    fn attr(&self, ino: u64) -> fuser::FileAttr {
        let (kind, perm, size, nlink) = if ino == FAULTY_ROOT {
            (fuser::FileType::Directory, 0o755, 0, 2)
        } else {
            (fuser::FileType::RegularFile, 0o600, self.size, 1)
        };
        fuser::FileAttr {
            ino: fuser::INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn fail(&self) -> bool {
        let failing = self.failing.load(Ordering::SeqCst);
        if failing {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        failing
    }
}

impl fuser::Filesystem for FaultyDisk {
    fn lookup(
        &self,
        _req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &OsStr,
        reply: fuser::ReplyEntry,
    ) {
        if parent.0 == FAULTY_ROOT && name == "disk.img" {
            reply.entry(&FAULTY_TTL, &self.attr(FAULTY_DISK), fuser::Generation(0));
        } else {
            reply.error(fuser::Errno::ENOENT);
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        match ino.0 {
            FAULTY_ROOT | FAULTY_DISK => reply.attr(&FAULTY_TTL, &self.attr(ino.0)),
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn open(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _flags: fuser::OpenFlags,
        reply: fuser::ReplyOpen,
    ) {
        reply.opened(fuser::FileHandle(0), fuser::FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        if self.fail() {
            return reply.error(fuser::Errno::EIO);
        }
        let len = (size as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        match self.file.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(_) => reply.error(fuser::Errno::EIO),
        }
    }

    fn write(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        if self.fail() || offset + data.len() as u64 > self.size {
            return reply.error(fuser::Errno::EIO);
        }
        match self.file.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(_) => reply.error(fuser::Errno::EIO),
        }
    }

    fn flush(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        _datasync: bool,
        reply: fuser::ReplyEmpty,
    ) {
        if self.fail() {
            return reply.error(fuser::Errno::EIO);
        }
        match self.file.sync_data() {
            Ok(()) => reply.ok(),
            Err(_) => reply.error(fuser::Errno::EIO),
        }
    }
}

/// The [`FaultyDisk`] mounted at `dir`; dropping it unmounts (lazily: the
/// loop device may still hold the file for a moment).
struct FaultyMount {
    dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
    failing: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
}

impl FaultyMount {
    fn mount(backing: &Path, dir: &Path) -> FaultyMount {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(backing)
            .unwrap_or_else(|e| panic!("open {}: {e}", backing.display()));
        let size = file.metadata().expect("stat backing file").len();
        let failing = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let disk = FaultyDisk {
            file,
            size,
            failing: failing.clone(),
            failed: failed.clone(),
        };
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("lklfuse-faulty-disk".into())];
        let session = fuser::Session::new(disk, dir, &config)
            .and_then(fuser::Session::spawn)
            .unwrap_or_else(|e| panic!("mount the faulty disk at {}: {e}", dir.display()));
        FaultyMount {
            dir: dir.to_path_buf(),
            session: Some(session),
            failing,
            failed,
        }
    }

    fn disk(&self) -> PathBuf {
        self.dir.join("disk.img")
    }
}

impl Drop for FaultyMount {
    fn drop(&mut self) {
        let _ = run_limited(
            &mut command("umount", &["-l", path_str(&self.dir)]),
            Duration::from_secs(30),
        );
        // The session thread ends when the kernel lets go of the connection;
        // it is not joined (that waits for the loop device to let go).
        drop(self.session.take());
    }
}

/// A loop device over a file, detached when dropped unless [`Loop::detach`]
/// already asked for it (then it must not be touched again: the number may
/// already belong to someone else's loop device).
struct Loop {
    dev: String,
    detached: bool,
}

impl Loop {
    fn attach(file: &Path) -> Loop {
        let dev = host(
            "losetup",
            &["-f", "--show", path_str(file)],
            Duration::from_secs(30),
        )
        .trim()
        .to_string();
        Loop {
            dev,
            detached: false,
        }
    }

    /// `losetup -d` while the device is open: the kernel frees it at the
    /// last close (autoclear), so a crashed test cannot leak it.
    fn detach(&mut self) {
        host("losetup", &["-d", &self.dev], Duration::from_secs(30));
        self.detached = true;
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if !self.detached {
            let _ = run_limited(
                &mut command("losetup", &["-d", &self.dev]),
                Duration::from_secs(30),
            );
        }
    }
}

#[test]
fn disk_failing_every_request_under_the_mount() {
    fuse_test(FILE, "failing_disk", LIMIT, |dir| {
        let src = dir.join("src");
        let manifest = dir.join("manifest");
        populate_src(&src, &manifest, 4, 4, 1 << 20);
        let img = dir.join("ext4.img");
        images::build(Fs::Ext4, Some(&src), &img, &dir).unwrap_or_else(|e| panic!("{e}"));
        let faulty = FaultyMount::mount(&img, &dir.join("faulty"));
        let mut lo = Loop::attach(&faulty.disk());
        let mnt = subdir(&dir, "mnt", 0o755, None);
        // A host block device as IMAGE.
        let dev = PathBuf::from(&lo.dev);
        let mut d = start(&dev, &mnt, Fs::Ext4);
        lo.detach();
        // Healthy first: the whole stack works.
        let first = fs::read_to_string(&manifest).expect("read manifest");
        let (rel0, sha0) = first
            .lines()
            .next()
            .and_then(|l| l.split_once(' '))
            .expect("a manifest line");
        assert_eq!(
            fuse::sha(&mnt.join(rel0)),
            sha0,
            "{rel0} through lklfuse on {}",
            lo.dev
        );
        // Now every request fails; the host's cache of the loop device goes
        // too, so that what the daemon reads really reaches the disk.
        faulty.failing.store(true, Ordering::SeqCst);
        host(
            "blockdev",
            &["--flushbufs", &lo.dev],
            Duration::from_secs(30),
        );
        let seen = probe("failing_disk", &mnt, &manifest);
        assert!(
            faulty.failed.load(Ordering::Relaxed) > 0,
            "no request reached the failing disk"
        );
        assert!(
            seen.keys().all(|(_, e)| e != "ENOTCONN"),
            "ENOTCONN: the FUSE connection broke: {seen:?}"
        );
        assert_daemon_alive(&d, "failing_disk");
        let code = unmount_after_faults(&mut d, "failing_disk");
        assert_unclean_after_failed_writes("failing_disk", &seen, code);
        eprintln!(
            "failing_disk: {} requests answered EIO by the disk",
            faulty.failed.load(Ordering::Relaxed)
        );
        drop(d);
        drop(faulty);
    });
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL in the middle of fsynced writes

/// Writer `wid`: files of random size (up to 768 KiB) in `w<wid>/`, each
/// created, written, and (3 of 4) fsynced with its directory, after which
/// (and only then) `REL LEN SHA` is appended to the host-side log; prints
/// `synced` for each, `done` at its byte budget, `error ERRNO` at the first
/// failure.
const SYNC_WRITER: &str = r#"
import hashlib, os, random, sys
mnt, wid, log, seed, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
r = random.Random(seed * 100 + wid)
def fsync_dir(p):
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    try: os.fsync(fd)
    finally: os.close(fd)
lf = open(log, 'a')
try:
    os.mkdir(f'{mnt}/w{wid}'); fsync_dir(mnt)
    dfd = os.open(f'{mnt}/w{wid}', os.O_RDONLY | os.O_DIRECTORY)
    i = total = 0
    while total < budget:
        size = r.randrange(1, 768 << 10)
        data = r.randbytes(size)
        rel = f'w{wid}/f{i:05}'
        fd = os.open(f'{mnt}/{rel}', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        v = memoryview(data)
        while v: v = v[os.write(fd, v):]
        if i % 4 != 3:
            os.fsync(fd); os.fsync(dfd)
            lf.write(f'{rel} {size} {hashlib.sha256(data).hexdigest()}\n'); lf.flush()
            print('synced', rel, flush=True)
        os.close(fd)
        i += 1; total += size
    print('done', flush=True)
except OSError as e:
    print('error', e.errno, flush=True)
"#;

const WRITERS: usize = 4;

/// Starts the writers; their host-side logs.
fn start_writers(
    script: &str,
    mnt: &Path,
    dir: &Path,
    seed: u64,
    budget: u64,
) -> (Vec<Spawned>, Vec<PathBuf>) {
    let mut writers = Vec::new();
    let mut logs = Vec::new();
    for w in 0..WRITERS {
        let log = dir.join(format!("writer{w}.log"));
        fs::write(&log, "").expect("create writer log");
        let (s, b) = (seed.to_string(), budget.to_string());
        let wid = w.to_string();
        writers.push(Spawned::new(command(
            fuse::python(),
            &["-c", script, path_str(mnt), &wid, path_str(&log), &s, &b],
        )));
        logs.push(log);
    }
    (writers, logs)
}

fn read_logs(logs: &[PathBuf]) -> Vec<Logged> {
    logs.iter()
        .flat_map(|l| parse_logged(&fs::read_to_string(l).expect("read writer log")))
        .collect()
}

/// Makes an empty 2 GiB image (room for every writer's budget).
fn make_2g(fs: Fs, img: &Path) {
    images::blank_image(img, 2 << 30).unwrap_or_else(|e| panic!("{e}"));
    let i = path_str(img);
    match fs {
        Fs::Ext4 => host(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                i,
            ],
            Duration::from_secs(60),
        ),
        Fs::Xfs => host("mkfs.xfs", &["-q", "-f", i], Duration::from_secs(60)),
        other => panic!("no 2 GiB image of {}", other.id()),
    };
}

fn sigkill_case(name: &'static str, fs: Fs) {
    fuse_test(FILE, name, LIMIT, move |dir| {
        let seed = seed(name);
        let mut rng = images::Rng::new(seed);
        let img = dir.join(format!("{}.img", fs.id()));
        make_2g(fs, &img);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let mut d = start(&img, &mnt, fs);
        let (mut writers, logs) = start_writers(SYNC_WRITER, &mnt, &dir, seed, 400 << 20);
        // Every writer has fsynced at least once, then a random point 1-4 s on.
        for w in writers.iter_mut() {
            let l = w.expect_line(Duration::from_secs(60));
            assert!(l.starts_with("synced"), "{name}: writer said {l:?} first");
        }
        let delay = Duration::from_millis(1000 + rng.below(3000));
        std::thread::sleep(delay);
        d.signal(libc::SIGKILL);
        let status = d
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{name}: SIGKILL: {e}"))
            .expect("foreground");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{name}: {status}");
        fuse::lazy_unmount(&mnt);
        let mut ends = Vec::new();
        for w in writers.iter_mut() {
            w.finish(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{name}: a writer hangs on the dead mount: {e}"));
            ends.push(w.seen.last().cloned().unwrap_or_default());
        }
        let synced = read_logs(&logs);
        eprintln!(
            "{name}: SIGKILL {:.1} s after the first fsyncs; {} files fsynced before it; \
             writers ended with {ends:?}",
            delay.as_secs_f64(),
            synced.len()
        );
        // A writer that reached its budget before the kill is fine (a fast
        // machine); at least one must have been cut off mid-stream.
        assert!(
            ends.iter().any(|e| e.starts_with("error")),
            "{name}: no writer was still writing when the daemon was killed: {ends:?}"
        );

        // The host's replay, on a copy.
        let copy = dir.join("host-copy.img");
        host(
            "cp",
            &["--sparse=always", path_str(&img), path_str(&copy)],
            Duration::from_secs(120),
        );
        let fsck = host_replay_then_fsck(fs, &copy, &dir, name);
        {
            let m = HostMount::kernel(&copy, &dir.join("host-view"), fs.fstype(), "ro")
                .unwrap_or_else(|e| panic!("{name}: host mount: {e}"));
            let bad = check_logged(&m.dir, &synced);
            assert!(
                bad.is_empty(),
                "{name}: fsynced files damaged after the host's replay:\n  {}",
                bad.join("\n  ")
            );
        }
        eprintln!("{name}: host: {fsck}; every fsynced file intact");

        // Our kernel's replay, through a fresh lklfuse mount.
        let d = start(&img, &mnt, fs);
        let bad = check_logged(&mnt, &synced);
        assert!(
            bad.is_empty(),
            "{name}: fsynced files damaged after lklfuse's replay:\n  {}",
            bad.join("\n  ")
        );
        d.stop();
        fsck_clean(fs, &img);
    });
}

#[test]
fn sigkill_during_fsynced_writes_ext4() {
    sigkill_case("sigkill_ext4", Fs::Ext4);
}

#[test]
fn sigkill_during_fsynced_writes_xfs() {
    sigkill_case("sigkill_xfs", Fs::Xfs);
}

// ---------------------------------------------------------------------------------------------
// 4. SIGTERM in the middle of unsynced writes

/// Writer `wid`: files of random size (up to 2 MiB) in `w<wid>/`, written
/// and closed without fsync; after close() returned 0 (and only then)
/// `REL LEN SHA` is appended to the host-side log. `done` at the byte
/// budget, `error ERRNO` at the first failure.
const CLOSE_WRITER: &str = r#"
import hashlib, os, random, sys
mnt, wid, log, seed, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
r = random.Random(seed * 100 + wid)
lf = open(log, 'a')
try:
    os.mkdir(f'{mnt}/w{wid}')
    print('ready', flush=True)
    i = total = 0
    while total < budget:
        size = r.randrange(1, 2 << 20)
        data = r.randbytes(size)
        rel = f'w{wid}/f{i:05}'
        fd = os.open(f'{mnt}/{rel}', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        v = memoryview(data)
        while v: v = v[os.write(fd, v):]
        os.close(fd)
        lf.write(f'{rel} {size} {hashlib.sha256(data).hexdigest()}\n'); lf.flush()
        i += 1; total += size
    print('done', flush=True)
except OSError as e:
    print('error', e.errno, flush=True)
"#;

#[test]
fn sigterm_during_unsynced_writes_keeps_closed_files() {
    fuse_test(FILE, "sigterm_closed", LIMIT, |dir| {
        let name = "sigterm_closed";
        let seed = seed(name);
        let mut rng = images::Rng::new(seed);
        let img = dir.join("ext4.img");
        make_2g(Fs::Ext4, &img);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let mut d = start(&img, &mnt, Fs::Ext4);
        let (mut writers, logs) = start_writers(CLOSE_WRITER, &mnt, &dir, seed, 400 << 20);
        for w in writers.iter_mut() {
            let l = w.expect_line(Duration::from_secs(60));
            assert_eq!(l, "ready", "{name}: writer's first line");
        }
        // Wait (bounded) until the writers closed a few files, then a random point on.
        let deadline = Instant::now() + Duration::from_secs(60);
        while read_logs(&logs).len() < 8 {
            assert!(
                Instant::now() < deadline,
                "{name}: the writers closed fewer than 8 files in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
        // Everything logged now was closed before the signal is sent.
        let before = read_logs(&logs);
        d.signal(libc::SIGTERM);
        let exit = d.expect_clean_exit("SIGTERM during unsynced writes");
        let mut ends = Vec::new();
        for w in writers.iter_mut() {
            w.finish(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{name}: a writer hangs after SIGTERM: {e}"));
            ends.push(w.seen.last().cloned().unwrap_or_default());
        }
        if let Err(e) = exit {
            panic!("{name}: {e}");
        }
        let before_names: std::collections::BTreeSet<&str> =
            before.iter().map(|f| f.rel.as_str()).collect();
        let after: Vec<Logged> = read_logs(&logs)
            .into_iter()
            .filter(|f| !before_names.contains(f.rel.as_str()))
            .collect();
        eprintln!(
            "{name}: {} files closed before SIGTERM, {} after it; writers ended with {ends:?}",
            before.len(),
            after.len()
        );
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt, Fs::Ext4);
        let bad = check_logged(&mnt, &before);
        assert!(
            bad.is_empty(),
            "{name}: files closed before SIGTERM are missing or damaged:\n  {}",
            bad.join("\n  ")
        );
        // Closed after the signal (the daemon detaches lazily and serves open
        // files to the end): close() returned 0, so they must be there too.
        let bad = check_logged(&mnt, &after);
        assert!(
            bad.is_empty(),
            "{name}: files whose close() returned 0 after SIGTERM are missing or damaged:\n  {}",
            bad.join("\n  ")
        );
        d.stop();
    });
}
