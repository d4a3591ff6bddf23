//! What the host may cache, and that what it caches is never stale:
//! - names, misses and attributes cached for a minute on case-sensitive filesystems (the
//!   host's mount is the only way to change the image), dropped by every change made
//!   through the mount;
//! - file pages kept from one open to the next;
//! - the optional writeback cache (`-o writeback_cache`): appends, write-only files,
//!   "touch" by a user who may write but does not own, and fsync'ed data surviving a
//!   SIGKILL of the daemon.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::fuse::{self, fsck_clean, fuse_test, make_fs, py, py_as, subdir, Daemon};
use common::images::{self, Fs};

const FILE: &str = "caching";
const LIMIT: Duration = Duration::from_secs(240);
const USER_A: (u32, u32) = (2001, 2001);
const USER_B: (u32, u32) = (2002, 2002);

#[track_caller]
fn start(img: &Path, mnt: &Path, opts: &[&str]) -> Daemon {
    Daemon::start(img, mnt, opts).unwrap_or_else(|e| panic!("mount {}: {e}", img.display()))
}

/// Runs python `code` (with `m`, the mount point, and the helper `t(f)` giving the errno
/// name or "OK") as root or as `user`; its printed lines.
fn outcomes(mnt: &Path, user: Option<(u32, u32)>, code: &str) -> Vec<String> {
    let code = format!("{}{code}", fuse::PY_ERRNO_PRELUDE);
    let out = match user {
        None => py(&code, &[fuse::path_str(mnt)]),
        Some((uid, gid)) => py_as(uid, gid, &[], &code, &[fuse::path_str(mnt)]),
    };
    out.expect_ok().lines().map(str::to_string).collect()
}

#[test]
fn cached_names_misses_and_pages_follow_every_change() {
    fuse_test(FILE, "names", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4"]);
        // Each creation kind after a cached miss of the same name; each removal kind after
        // a cached hit. Every line must see the change at once, not after a minute.
        let got = outcomes(
            &mnt,
            None,
            r#"
def miss_then(name, make):
    p = os.path.join(m, name)
    before = t(lambda: os.lstat(p))
    make(p)
    print(name, before, t(lambda: os.lstat(p)))
miss_then("file", lambda p: open(p, "w").close())
miss_then("dir", os.mkdir)
miss_then("link", lambda p: os.symlink("file", p))
miss_then("hard", lambda p: os.link(os.path.join(m, "file"), p))
miss_then("fifo", os.mkfifo)
open(os.path.join(m, "src"), "w").close()
miss_then("renamed", lambda p: os.rename(os.path.join(m, "src"), p))
print("src after rename", t(lambda: os.lstat(os.path.join(m, "src"))))
print("nlink", os.lstat(os.path.join(m, "file")).st_nlink)
os.unlink(os.path.join(m, "hard"))
print("nlink after unlink", os.lstat(os.path.join(m, "file")).st_nlink)
os.rmdir(os.path.join(m, "dir"))
print("dir after rmdir", t(lambda: os.lstat(os.path.join(m, "dir"))))
os.rename(os.path.join(m, "renamed"), os.path.join(m, "file"))
print("file replaced, nlink", os.lstat(os.path.join(m, "file")).st_nlink)
"#,
        );
        assert_eq!(
            got,
            [
                "file ENOENT OK",
                "dir ENOENT OK",
                "link ENOENT OK",
                "hard ENOENT OK",
                "fifo ENOENT OK",
                "renamed ENOENT OK",
                "src after rename ENOENT",
                "nlink 2",
                "nlink after unlink 1",
                "dir after rmdir ENOENT",
                "file replaced, nlink 1",
            ]
        );

        // Pages kept across opens: every way of changing the data shows in the next read.
        let p = mnt.join("pages");
        fs::write(&p, b"first version").expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"first version");
        fs::write(&p, b"second").expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"second");
        let f = fs::OpenOptions::new().write(true).open(&p).expect("open");
        f.write_all_at(b"X", 1).expect("pwrite");
        drop(f);
        assert_eq!(fs::read(&p).expect("read"), b"sXcond");
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open")
            .set_len(2)
            .expect("truncate");
        assert_eq!(fs::read(&p).expect("read"), b"sX");
        let got = outcomes(
            &mnt,
            None,
            r#"
import mmap
p = os.path.join(m, "pages")
with open(p, "r+b") as f:
    mm = mmap.mmap(f.fileno(), 2)
    mm[0:2] = b"MM"
    mm.flush()
    mm.close()
with open(p, "rb") as f:
    print(f.read().decode())
"#,
        );
        assert_eq!(got, ["MM"]);
        drop(d);

        // Everything is on the image: read it back through a fresh mount.
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt, &["type=ext4", "ro"]);
        assert_eq!(fs::read(mnt.join("pages")).expect("read"), b"MM");
        assert!(mnt.join("link").symlink_metadata().is_ok());
        drop(d);
    });
}

#[test]
fn writeback_cache_keeps_every_byte_and_every_permission() {
    fuse_test(FILE, "writeback", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let opts = ["type=ext4", "writeback_cache", "allow_other"];
        let mut d = start(&img, &mnt, &opts);
        let shared = mnt.join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fuse::chown(&shared, USER_A.0, USER_A.1);

        // Appends land after what is there, also across opens (the host positions them).
        let got = outcomes(
            &mnt,
            Some(USER_A),
            r#"
p = os.path.join(m, "shared", "log")
for word in (b"one ", b"two ", b"three"):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, word)
    os.close(fd)
print(open(p, "rb").read().decode())
# A file its owner may write but not read: opened write-only, never read by the host.
w = os.path.join(m, "shared", "write-only")
fd = os.open(w, os.O_WRONLY | os.O_CREAT, 0o644)
os.close(fd)
os.chmod(w, 0o200)
fd = os.open(w, os.O_WRONLY)
os.pwrite(fd, b"abc", 0)
os.pwrite(fd, b"Z", 1)
os.fsync(fd)
os.close(fd)
print("read own write-only file", t(lambda: open(w, "rb")))
# Group/other-writable and read-only files of user A, for user B's touch below.
for name, mode in (("writable", 0o666), ("readonly", 0o644)):
    q = os.path.join(m, "shared", name)
    open(q, "w").close()
    os.chmod(q, mode)
    os.utime(q, (1000000000, 1000000000))
"#,
        );
        assert_eq!(got, ["one two three", "read own write-only file EACCES"]);
        assert_eq!(
            fs::read(shared.join("write-only")).expect("read as root"),
            b"aZc"
        );

        // "touch" (times set to now) needs write access, explicit times need ownership:
        // the native answers, although the host sends "now" as an explicit time.
        let got = outcomes(
            &mnt,
            Some(USER_B),
            r#"
s = os.path.join(m, "shared")
print("touch writable", t(lambda: os.utime(os.path.join(s, "writable"))))
print("touch read-only", t(lambda: os.utime(os.path.join(s, "readonly"))))
print("explicit time on writable", t(lambda: os.utime(os.path.join(s, "writable"), (5, 5))))
"#,
        );
        assert_eq!(
            got,
            [
                "touch writable OK",
                "touch read-only EACCES",
                "explicit time on writable EPERM",
            ]
        );
        let touched = fs::metadata(shared.join("writable")).expect("stat");
        assert!(
            touched.modified().expect("mtime")
                > std::time::UNIX_EPOCH + Duration::from_secs(1 << 30),
            "touch did not move the modification time"
        );

        // Random writes into the cache, fsync'ed, then the daemon is killed: all there.
        let data = images::random_bytes(7, 8 << 20);
        let mut expected = vec![0u8; 8 << 20];
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(mnt.join("random"))
            .expect("create");
        let mut rng = images::Rng::new(11);
        for _ in 0..2000 {
            let len = 1 + (rng.next_u64() % 20_000) as usize;
            let at = (rng.next_u64() % (expected.len() - len) as u64) as usize;
            f.write_all_at(&data[at..at + len], at as u64)
                .expect("pwrite");
            expected[at..at + len].copy_from_slice(&data[at..at + len]);
        }
        f.set_len(expected.len() as u64).expect("extend");
        f.sync_all().expect("fsync");
        drop(f);
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(d);
        fuse::lazy_unmount(&mnt);

        // Read-write: the journal must be replayed (read-only mounts skip that).
        let d = start(&img, &mnt, &["type=ext4"]);
        let back = fs::read(mnt.join("random")).expect("read back");
        assert!(back == expected, "fsync'ed data differs after SIGKILL");
        assert_eq!(
            fs::read_to_string(mnt.join("shared/log")).expect("read log"),
            "one two three"
        );
        drop(d);
        fsck_clean(Fs::Ext4, &img);
    });
}

/// The host's read-ahead window of the mount (sysfs `read_ahead_kb` of its device). The
/// device comes from mountinfo: root may not stat another user's FUSE mount.
fn host_read_ahead_kib(mnt: &Path) -> u32 {
    let device = fuse::mounts_at(mnt)
        .pop()
        .expect("the mount in mountinfo")
        .device;
    let text = fs::read_to_string(format!("/sys/class/bdi/{device}/read_ahead_kb"))
        .expect("read_ahead_kb of the mount");
    text.trim().parse().expect("a number")
}

#[test]
fn a_root_daemon_reads_ahead_one_whole_request_and_a_user_daemon_starts_quietly() {
    fuse_test(FILE, "readahead", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4"]);
        // 1 MiB, the largest READ the daemon accepts, instead of the host's 128 KiB.
        assert_eq!(host_read_ahead_kib(&mnt), 1024);
        // A sequential read through the wide window returns every byte.
        let data: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
        fs::write(mnt.join("big"), &data).unwrap();
        d.stop();
        let d = start(&img, &mnt, &["type=ext4,ro"]);
        assert_eq!(fs::read(mnt.join("big")).unwrap(), data);
        d.stop();

        // A user cannot write sysfs: the window stays, with nothing printed about it.
        fuse::prepare_dev_fuse();
        fuse::ensure_test_users();
        fuse::chown(&img, USER_A.0, USER_A.1);
        fuse::chown(&mnt, USER_A.0, USER_A.1);
        let d = Daemon::start_as(USER_A.0, USER_A.1, &img, &mnt, &["type=ext4"])
            .unwrap_or_else(|e| panic!("mount as a user: {e}"));
        assert_eq!(host_read_ahead_kib(&mnt), 128);
        let log = d.log_text();
        assert!(!log.contains("read-ahead"), "unexpected log: {log}");
        d.stop();
        fsck_clean(Fs::Ext4, &img);
    });
}

/// User plus system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// From the daemon's `stats:` line (asked for with SIGUSR1): answers written by idle-poll
/// threads, and answers the workers wrote themselves although they could have been.
fn answer_counts(d: &Daemon) -> (u64, u64) {
    let before = d.log_text().matches("stats: ").count();
    d.signal(libc::SIGUSR1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = d.log_text();
        if let Some(line) = log.lines().filter(|l| l.contains("stats: ")).nth(before) {
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
                    .parse()
                    .unwrap()
            };
            return (field("answers_handed_off"), field("answers_by_workers"));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stats line in {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon's threads named `idle-poll-*`, with their scheduling policies.
fn idle_pollers(pid: u32) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("daemon tasks") {
        let task = task.expect("task entry").path();
        let Ok(comm) = fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if !comm.starts_with("idle-poll-") {
            continue;
        }
        let stat = fs::read_to_string(task.join("stat")).expect("task stat");
        // Field 41 is the policy; fields after the command name start at field 3.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let policy = rest
            .split(' ')
            .nth(41 - 3)
            .expect("policy")
            .parse()
            .unwrap();
        found.push((comm.trim().to_owned(), policy));
    }
    found
}

#[test]
fn polling_stops_when_requests_stop() {
    fuse_test(FILE, "busy_poll", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4,busy_poll=2000,idle_poll=2000"]);
        let pid = d.pid().expect("daemon pid");
        // A CPU-keeping thread per CPU (up to 8) when there are several, at SCHED_IDLE only.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pollers = idle_pollers(pid);
        let expected = if cpus > 1 { cpus.min(8) } else { 0 };
        assert_eq!(pollers.len(), expected, "{pollers:?} with {cpus} CPUs");
        assert!(
            pollers
                .iter()
                .all(|(_, policy)| *policy == libc::SCHED_IDLE),
            "{pollers:?}"
        );
        // A stream of requests with 2 ms windows: workers poll between them, and the
        // pollers keep the CPUs awake...
        let got = outcomes(
            &mnt,
            None,
            r#"
for i in range(2000):
    p = os.path.join(m, f"f{i % 50}")
    open(p, "w").close()
    os.stat(p)
print("done")
"#,
        );
        assert_eq!(got, ["done"]);
        // With several CPUs, the pollers wrote answers for the workers (from the CPU the
        // caller slept on, see `fs::handoff`).
        let (handed_off, by_workers) = answer_counts(&d);
        if cpus > 1 {
            assert!(
                handed_off > 0,
                "{handed_off} answers handed off, {by_workers} not"
            );
        } else {
            assert_eq!(handed_off, 0);
        }
        // ...and once they stop, nobody spins: well under 10% of a CPU while idle.
        let before = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(3));
        let idle = cpu_ticks(pid) - before;
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
        assert!(
            idle * 10 < 3 * hz,
            "{idle} ticks of CPU in 3 s idle (HZ {hz})"
        );
        d.stop();

        // idle_poll=0 starts none, and the workers write every answer themselves.
        let d = start(&img, &mnt, &["type=ext4,idle_poll=0"]);
        let pollers = idle_pollers(d.pid().expect("daemon pid"));
        assert!(pollers.is_empty(), "{pollers:?}");
        let got = outcomes(&mnt, None, "os.stat(m)\nprint('done')");
        assert_eq!(got, ["done"]);
        assert_eq!(answer_counts(&d).0, 0);
        d.stop();
    });
}
