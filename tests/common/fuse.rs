//! Harness for the FUSE tests: the real `lklfuse` binary mounting real
//! images, used through the host's FUSE mount by ordinary programs (cp, dd,
//! python3, setfacl...) run as root or as other users (`setpriv`).
//!
//! Nothing here may hang or leave a mount behind:
//! - every external command runs with a time limit ([`run_limited`]), in its
//!   own process group, killed (the whole group) when the limit passes;
//! - every test body runs under [`fuse_test`]'s watchdog, which on timeout
//!   kills every daemon this process started, lazily unmounts their mount
//!   points and aborts;
//! - [`Daemon`]'s `Drop` unmounts (`fusermount3 -u -z`) and kills what is
//!   still there, so a failing assertion leaves nothing mounted.
//!
//! Users 2001, 2002, 2003 and group 3000 are created when missing
//! ([`ensure_test_users`]): fusermount3 needs a passwd entry.
//!
//! Test directories live below `$TMPDIR/lklfuse-fuse-tests/<file>/<test>`
//! (world-traversable: daemons and commands also run as uid 2001/2002),
//! removed when the test passes; a failed test's stay for inspection until
//! the next run, which first unmounts whatever a killed run left there.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once};
use std::time::{Duration, Instant};

use super::images::{self, Fs};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lklfuse");

/// How long a mount may take to appear (kernel boot, mount, FUSE init).
pub const MOUNT_LIMIT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit once asked to (sync included).
pub const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// Default limit for one external command.
pub const CMD_LIMIT: Duration = Duration::from_secs(120);

/// A PATH that works for every user (root's python3 is a pyenv shim below
/// /root, which other users cannot read).
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------
// Preconditions

/// The FUSE tests need root (CI runs as root): other users' processes are
/// started with setpriv, images are chowned, host tools need it.
pub fn require_root() {
    assert!(
        images::is_root(),
        "the FUSE tests run as root (setpriv to other users, fusermount3 -u of any mount); \
         CI runs them as root"
    );
}

/// `/dev/fuse` is 0600 on this machine: unprivileged daemons need 0666
/// (the usual mode). Idempotent.
pub fn prepare_dev_fuse() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let md = fs::metadata("/dev/fuse").expect("/dev/fuse exists (modprobe fuse)");
        if md.mode() & 0o666 != 0o666 {
            fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666))
                .expect("chmod 0666 /dev/fuse");
        }
    });
}

/// Users and groups the tests run things as: fusermount3 refuses to mount
/// for a uid without a passwd entry ("could not determine username"), so
/// the test users are created (once, idempotently) as system accounts
/// without home or shell: uid/gid 2001 `lklfuse-a`, 2002 `lklfuse-b`, 2003
/// `lklfuse-c`, and group 3000 `lklfuse-g`.
pub fn ensure_test_users() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let exists = |db: &str, key: &str| {
            run_limited(&mut command("getent", &[db, key]), Duration::from_secs(10))
                .map(|o| o.ok())
                .unwrap_or(false)
        };
        for (id, name) in [
            (2001, "lklfuse-a"),
            (2002, "lklfuse-b"),
            (2003, "lklfuse-c"),
        ] {
            let id_s = id.to_string();
            if !exists("group", &id_s) {
                let out = run(&mut command("groupadd", &["-g", &id_s, name]));
                assert!(out.ok(), "groupadd {name}: {}", out.describe());
            }
            if !exists("passwd", &id_s) {
                let out = run(&mut command(
                    "useradd",
                    &[
                        "-u",
                        &id_s,
                        "-g",
                        &id_s,
                        "-M",
                        "-N",
                        "-d",
                        "/nonexistent",
                        "-s",
                        "/usr/sbin/nologin",
                        name,
                    ],
                ));
                assert!(out.ok(), "useradd {name}: {}", out.describe());
            }
        }
        if !exists("group", "3000") {
            let out = run(&mut command("groupadd", &["-g", "3000", "lklfuse-g"]));
            assert!(out.ok(), "groupadd lklfuse-g: {}", out.describe());
        }
    });
}

/// python3 from the system (readable by every user).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Seconds the stress tests run (env `LKLFUSE_STRESS_SECS`, default 60).
pub fn stress_secs() -> u64 {
    std::env::var("LKLFUSE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

// ---------------------------------------------------------------------------------------------
// Live daemons, for the watchdog's emergency cleanup

/// (pid, mount point) of every daemon this process started and has not yet
/// seen exit.
static LIVE: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

fn register(pid: u32, mnt: &Path) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, mnt.to_path_buf()));
}

fn unregister(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| *p != pid);
}

/// Kills every registered daemon and lazily unmounts its mount point.
fn emergency_cleanup() {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (pid, mnt) in live {
        eprintln!(
            "watchdog: killing daemon {pid} and unmounting {}",
            mnt.display()
        );
        // SAFETY: kill has no memory-safety preconditions; pid is a daemon we started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        lazy_unmount(&mnt);
    }
}

/// Runs `work` on its own thread; if it does not finish within `limit`,
/// kills every daemon, unmounts, and aborts the test process (a hang must
/// fail the test, never stall CI, and must not leave mounts behind).
pub fn watchdog<T: Send + 'static>(
    name: &str,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result = work();
            let _ = done_tx.send(());
            result
        })
        .expect("spawn test worker");
    match done_rx.recv_timeout(limit) {
        Ok(()) => worker.join().expect("test worker panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("watchdog: {name} did not finish within {limit:?}: something hangs");
            emergency_cleanup();
            std::process::abort();
        }
    }
}

/// The common frame of a FUSE test: root, /dev/fuse usable, test users, a
/// fresh test directory (removed when the test passes), the body under a
/// watchdog of `limit`.
pub fn fuse_test<T: Send + 'static>(
    file: &str,
    test: &str,
    limit: Duration,
    body: impl FnOnce(PathBuf) -> T + Send + 'static,
) -> T {
    require_root();
    prepare_dev_fuse();
    ensure_test_users();
    let dir = test_dir(file, test);
    let start = Instant::now();
    let work = dir.clone();
    let result = watchdog(test, limit, move || body(work));
    eprintln!("{test}: {:.1} s", start.elapsed().as_secs_f64());
    // Passed: the images go (a failed test's stay for inspection until the next run).
    images::unmount_below(&dir);
    let _ = fs::remove_dir_all(&dir);
    result
}

// ---------------------------------------------------------------------------------------------
// Directories

/// A fresh, world-traversable directory `$TMPDIR/lklfuse-fuse-tests/<file>/<test>`.
pub fn test_dir(file: &str, test: &str) -> PathBuf {
    let base = std::env::temp_dir().join("lklfuse-fuse-tests");
    let dir = base.join(file).join(test);
    images::unmount_below(&dir);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    for d in [&base, &base.join(file), &dir] {
        let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
    }
    dir
}

/// `dir/name`, created (empty) with `mode`, owned by `owner` when given.
pub fn subdir(dir: &Path, name: &str, mode: u32, owner: Option<(u32, u32)>) -> PathBuf {
    let d = dir.join(name);
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    fs::set_permissions(&d, fs::Permissions::from_mode(mode)).expect("chmod");
    if let Some((uid, gid)) = owner {
        chown(&d, uid, gid);
    }
    d
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Commands with time limits

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// For assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout:\n{}--- stderr:\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }

    /// Panics with everything unless the command succeeded; its stdout.
    #[track_caller]
    pub fn expect_ok(self) -> String {
        assert!(self.ok(), "command failed: {}", self.describe());
        self.stdout
    }
}

pub fn describe_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains('\n') || a.len() > 200 {
            s.push_str("<script>");
        } else {
            s.push_str(&a);
        }
    }
    s
}

fn read_in_thread(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Kills a child's whole process group (it was started as a group leader).
fn kill_group(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions; the group is one we started.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

/// Runs `cmd` (stdin from /dev/null, its own process group) for at most
/// `limit`; Err when it cannot be started or times out (the group is killed).
pub fn run_limited(cmd: &mut Command, limit: Duration) -> Result<Out, String> {
    let what = describe_cmd(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{what}`: {e}"))?;
    let out_rx = read_in_thread(child.stdout.take().expect("piped"));
    let err_rx = read_in_thread(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait for `{what}`: {e}")),
        }
    };
    let Some(status) = status else {
        kill_group(child.id());
        let _ = child.wait();
        let text = |rx: mpsc::Receiver<Vec<u8>>| {
            rx.recv_timeout(Duration::from_secs(2))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        return Err(format!(
            "`{what}` did not finish within {limit:?} (killed)\n--- stdout:\n{}--- stderr:\n{}",
            text(out_rx),
            text(err_rx)
        ));
    };
    // Background grandchildren may keep the pipes open: wait a little only.
    let text = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(10))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| "<output still held open by a child process>".into())
    };
    Ok(Out {
        status,
        stdout: text(out_rx),
        stderr: text(err_rx),
        what,
    })
}

/// [`run_limited`] with [`CMD_LIMIT`]; panics when the command cannot run or hangs.
#[track_caller]
pub fn run(cmd: &mut Command) -> Out {
    run_limited(cmd, CMD_LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// A command with a PATH and HOME every user can use, run from `/`.
pub fn command(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .env("PATH", SAFE_PATH)
        .env("HOME", "/tmp")
        .env("LC_ALL", "C")
        .current_dir("/");
    c
}

/// `program args...` run as `uid:gid` with exactly the supplementary
/// `groups` (none when empty), through setpriv.
pub fn command_as(uid: u32, gid: u32, groups: &[u32], program: &str, args: &[&str]) -> Command {
    let mut c = command("setpriv", &[]);
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        c.arg(format!("--groups={}", g.join(",")));
    }
    c.arg("--").arg(program).args(args);
    c
}

/// Runs `program args...` as `uid:gid` (+ `groups`); panics only if it cannot run or hangs.
#[track_caller]
pub fn run_as(uid: u32, gid: u32, groups: &[u32], program: &str, args: &[&str]) -> Out {
    run(&mut command_as(uid, gid, groups, program, args))
}

/// `sh -c script` as root.
#[track_caller]
pub fn sh(script: &str) -> Out {
    run(&mut command("sh", &["-c", script]))
}

/// `sh -c script` as root; panics unless it succeeds; stdout.
#[track_caller]
pub fn sh_ok(script: &str) -> String {
    sh(script).expect_ok()
}

/// `sh -c script` as a user.
#[track_caller]
pub fn sh_as(uid: u32, gid: u32, groups: &[u32], script: &str) -> Out {
    run_as(uid, gid, groups, "sh", &["-c", script])
}

/// The start of python scripts that report errnos: `m` is the first argument (the mount
/// point, or a file), and `t(f)` calls `f` and gives "OK" or the errno's name.
pub const PY_ERRNO_PRELUDE: &str = "import os, sys, errno\nm = sys.argv[1]\n\
     def t(f):\n    try:\n        f()\n        return 'OK'\n    except OSError as e:\n        \
     return errno.errorcode.get(e.errno, str(e.errno))\n";

/// `python3 -c code args...` as root.
#[track_caller]
pub fn py(code: &str, args: &[&str]) -> Out {
    let mut a = vec!["-c", code];
    a.extend_from_slice(args);
    run(&mut command(python(), &a))
}

/// `python3 -c code args...` as a user.
#[track_caller]
pub fn py_as(uid: u32, gid: u32, groups: &[u32], code: &str, args: &[&str]) -> Out {
    let mut a = vec!["-c", code];
    a.extend_from_slice(args);
    run_as(uid, gid, groups, python(), &a)
}

/// Shell quoting for paths put into `sh -c` scripts.
pub fn q(p: &Path) -> String {
    format!("'{}'", path_str(p).replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------------------------
// Mount table

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountInfo {
    /// `major:minor` of the mounted device (for a FUSE mount, its sysfs `bdi` name).
    pub device: String,
    pub mount_point: PathBuf,
    pub mount_options: String,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount in this process's namespace.
pub fn mounts() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountInfo {
                device: l.get(2)?.to_string(),
                mount_point: PathBuf::from(unescape(l.get(4)?)),
                mount_options: l.get(5)?.to_string(),
                fstype: r.first()?.to_string(),
                source: unescape(r.get(1)?),
                super_options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The mounts at exactly `mnt` (the last one is on top).
pub fn mounts_at(mnt: &Path) -> Vec<MountInfo> {
    mounts()
        .into_iter()
        .filter(|m| m.mount_point == mnt)
        .collect()
}

/// Whether a FUSE mount sits at `mnt`.
pub fn fuse_mounted(mnt: &Path) -> bool {
    mounts_at(mnt).iter().any(|m| m.fstype.starts_with("fuse"))
}

/// `fusermount3 -u -z`, then (root) `umount -l`, until nothing FUSE is at `mnt`.
pub fn lazy_unmount(mnt: &Path) {
    for _ in 0..3 {
        if !fuse_mounted(mnt) {
            return;
        }
        let m = path_str(mnt);
        let _ = run_limited(
            &mut command("fusermount3", &["-u", "-z", m]),
            Duration::from_secs(10),
        );
        if fuse_mounted(mnt) && images::is_root() {
            let _ = run_limited(&mut command("umount", &["-l", m]), Duration::from_secs(10));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

static DAEMON_SEQ: AtomicUsize = AtomicUsize::new(0);

/// The arguments `[-o a,b,c]` for `opts` (none when empty).
pub fn o(opts: &[&str]) -> Vec<String> {
    if opts.is_empty() {
        Vec::new()
    } else {
        vec!["-o".into(), opts.join(",")]
    }
}

/// A running `lklfuse` and its mount. Dropping it unmounts (lazily) and
/// kills whatever is left.
pub struct Daemon {
    /// The daemon itself when it runs in the foreground (`-f`).
    child: Option<Child>,
    /// Its pid (also for background daemons, found by their command line).
    pid: Option<u32>,
    /// Whether we saw it exit.
    exited: bool,
    pub mnt: PathBuf,
    pub image: PathBuf,
    /// Its stdout and stderr (foreground), or the starting command's (background).
    pub log: PathBuf,
    /// The user it runs as (None: root).
    pub user: Option<(u32, u32)>,
}

fn log_path(mnt: &Path) -> PathBuf {
    let n = DAEMON_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = mnt
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mnt".into());
    mnt.parent()
        .unwrap_or(Path::new("/tmp"))
        .join(format!("daemon-{name}-{n}.log"))
}

fn read_log(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_else(|e| format!("<no log {}: {e}>", log.display()))
}

impl Daemon {
    /// `lklfuse -f [-o opts] IMAGE MNT` as root; returns once the mount is live.
    pub fn start(image: &Path, mnt: &Path, opts: &[&str]) -> Result<Daemon, String> {
        Daemon::start_full(image, mnt, opts, None)
    }

    /// As [`Daemon::start`], run as `uid:gid` (no supplementary groups).
    pub fn start_as(
        uid: u32,
        gid: u32,
        image: &Path,
        mnt: &Path,
        opts: &[&str],
    ) -> Result<Daemon, String> {
        Daemon::start_full(image, mnt, opts, Some((uid, gid)))
    }

    fn start_full(
        image: &Path,
        mnt: &Path,
        opts: &[&str],
        user: Option<(u32, u32)>,
    ) -> Result<Daemon, String> {
        let mut args = vec!["-f".to_string()];
        args.extend(o(opts));
        args.push(path_str(image).into());
        args.push(path_str(mnt).into());
        Daemon::spawn_foreground(image, mnt, &args, user)
    }

    /// Runs the binary with exactly `args` (which must keep it in the
    /// foreground) and waits until the mount is live.
    pub fn spawn_foreground(
        image: &Path,
        mnt: &Path,
        args: &[String],
        user: Option<(u32, u32)>,
    ) -> Result<Daemon, String> {
        prepare_dev_fuse();
        let log = log_path(mnt);
        let logf = fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let logf2 = logf.try_clone().map_err(|e| e.to_string())?;
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = match user {
            None => command(BIN, &a),
            Some((uid, gid)) => command_as(uid, gid, &[], BIN, &a),
        };
        cmd.env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(logf2)
            .process_group(0);
        let what = describe_cmd(&cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run `{what}`: {e}"))?;
        let pid = child.id();
        register(pid, mnt);
        let mut d = Daemon {
            child: Some(child),
            pid: Some(pid),
            exited: false,
            mnt: mnt.to_path_buf(),
            image: image.to_path_buf(),
            log,
            user,
        };
        let deadline = Instant::now() + MOUNT_LIMIT;
        loop {
            if fuse_mounted(mnt) {
                return Ok(d);
            }
            let child = d.child.as_mut().expect("foreground");
            if let Ok(Some(status)) = child.try_wait() {
                d.exited = true;
                unregister(pid);
                return Err(format!(
                    "`{what}` exited with {status} before mounting; its output:\n{}",
                    read_log(&d.log)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "`{what}`: no mount at {} after {MOUNT_LIMIT:?}; its output so far:\n{}",
                    mnt.display(),
                    read_log(&d.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `lklfuse [-o opts] IMAGE MNT` without `-f`, as root: the command
    /// must return 0 with the mount live. Err: its exit status and output,
    /// or the mount missing on return.
    pub fn background(image: &Path, mnt: &Path, opts: &[&str]) -> Result<Daemon, String> {
        let mut args = o(opts);
        args.push(path_str(image).into());
        args.push(path_str(mnt).into());
        Daemon::background_args(image, mnt, &args, None)
    }

    /// Runs the binary with exactly `args` (background mode), as `user`.
    pub fn background_args(
        image: &Path,
        mnt: &Path,
        args: &[String],
        user: Option<(u32, u32)>,
    ) -> Result<Daemon, String> {
        let r = run_binary(mnt, args, user, MOUNT_LIMIT)?;
        let mounted = fuse_mounted(mnt);
        let pid = daemon_pid(mnt);
        if let Some(pid) = pid {
            register(pid, mnt);
        }
        let d = Daemon {
            child: None,
            pid,
            exited: false,
            mnt: mnt.to_path_buf(),
            image: image.to_path_buf(),
            log: r.log.clone(),
            user,
        };
        if !r.out.ok() {
            return Err(format!(
                "background start failed: {}{}",
                r.out.describe(),
                if mounted {
                    "\n(and a mount was left)"
                } else {
                    ""
                }
            ));
        }
        if !mounted {
            return Err(format!(
                "background start returned 0 but nothing is mounted at {} on return: {}",
                mnt.display(),
                r.out.describe()
            ));
        }
        Ok(d)
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The daemon's output so far.
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    pub fn is_mounted(&self) -> bool {
        fuse_mounted(&self.mnt)
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid.expect("daemon pid known");
        // SAFETY: kill has no memory-safety preconditions; pid is our daemon.
        let r = unsafe { libc::kill(pid as i32, sig) };
        assert_eq!(
            r,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits (at most `limit`) for the daemon to exit. Foreground: its exit
    /// status; background: None (not our child), once the process is gone.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<Option<ExitStatus>, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        self.exited = true;
                        unregister(child.id());
                        return Ok(Some(status));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("wait: {e}")),
                }
            } else if let Some(pid) = self.pid {
                if !process_alive(pid) {
                    self.exited = true;
                    unregister(pid);
                    return Ok(None);
                }
            } else {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "daemon did not exit within {limit:?}; mounted: {}; its output:\n{}",
                    self.is_mounted(),
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit and checks it: status 0 (foreground), mount gone.
    pub fn expect_clean_exit(&mut self, how: &str) -> Result<(), String> {
        let status = self.wait_exit(EXIT_LIMIT)?;
        if let Some(status) = status {
            if status.code() != Some(0) {
                return Err(format!(
                    "after {how}: daemon exited with {status} (expected 0); its output:\n{}",
                    self.log_text()
                ));
            }
        }
        if self.is_mounted() {
            return Err(format!(
                "after {how}: the daemon exited but {} is still mounted",
                self.mnt.display()
            ));
        }
        Ok(())
    }

    /// `fusermount3 -u MNT` (as the daemon's user), then the daemon must exit 0.
    pub fn unmount_fusermount(&mut self) -> Result<(), String> {
        let m = path_str(&self.mnt).to_string();
        let user = self.user;
        let out = retry_busy(|| match user {
            None => run(&mut command("fusermount3", &["-u", &m])),
            Some((uid, gid)) => run_as(uid, gid, &[], "fusermount3", &["-u", &m]),
        });
        if !out.ok() {
            return Err(format!("fusermount3 -u: {}", out.describe()));
        }
        self.expect_clean_exit("fusermount3 -u")
    }

    /// `umount MNT` as root, then the daemon must exit 0.
    pub fn unmount_umount(&mut self) -> Result<(), String> {
        let out = retry_busy(|| run(&mut command("umount", &[path_str(&self.mnt)])));
        if !out.ok() {
            return Err(format!("umount: {}", out.describe()));
        }
        self.expect_clean_exit("umount")
    }

    /// Sends `sig`; the daemon must unmount and exit 0.
    pub fn stop_with_signal(&mut self, sig: i32) -> Result<(), String> {
        self.signal(sig);
        self.expect_clean_exit(&format!("signal {sig}"))
    }

    /// The usual end of a test: `fusermount3 -u`, exit 0; panics otherwise.
    #[track_caller]
    pub fn stop(mut self) {
        if let Err(e) = self.unmount_fusermount() {
            panic!("unmount {}: {e}", self.mnt.display());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited && !fuse_mounted(&self.mnt) {
            return;
        }
        lazy_unmount(&self.mnt);
        if !self.exited && self.wait_exit(Duration::from_secs(10)).is_err() {
            if let Some(pid) = self.pid {
                eprintln!("daemon {pid} still running after unmount: killing it");
                // SAFETY: kill has no memory-safety preconditions; pid is our daemon.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = self.wait_exit(Duration::from_secs(10));
        }
        if let Some(pid) = self.pid {
            unregister(pid);
        }
    }
}

/// Runs an unmount command again while it fails with EBUSY, for up to 5 s:
/// another test thread's fork may hold a copy of a (close-on-exec)
/// descriptor in the mount for a moment until its exec.
fn retry_busy(mut unmount: impl FnMut() -> Out) -> Out {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = unmount();
        let busy = out.stderr.contains("busy");
        if out.ok() || !busy || Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The pid of the lklfuse process serving `mnt` (found by its command line:
/// test mount points are unique paths).
pub fn daemon_pid(mnt: &Path) -> Option<u32> {
    let m = path_str(mnt).as_bytes();
    let exe_name = Path::new(BIN).file_name()?.to_string_lossy().into_owned();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&c| c == 0).collect();
        let is_lklfuse = args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).ends_with(&exe_name));
        if is_lklfuse && args.contains(&m) && process_alive(pid) {
            return Some(pid);
        }
    }
    None
}

/// What one run of the binary did (stdout and stderr kept apart).
pub struct BinRun {
    pub out: Out,
    pub log: PathBuf,
}

/// Runs the binary with `args` (as `user`) for at most `limit`, its stdout
/// and stderr going to files (a daemonized child keeping them open must not
/// stall us). Err when it does not return in time (the process is killed,
/// anything mounted at `mnt` unmounted).
pub fn run_binary(
    mnt: &Path,
    args: &[String],
    user: Option<(u32, u32)>,
    limit: Duration,
) -> Result<BinRun, String> {
    prepare_dev_fuse();
    let log = log_path(mnt);
    let out_path = log.with_extension("stdout");
    let err_path = log.with_extension("stderr");
    let outf = fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let errf = fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = match user {
        None => command(BIN, &a),
        Some((uid, gid)) => command_as(uid, gid, &[], BIN, &a),
    };
    cmd.env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(outf)
        .stderr(errf)
        .process_group(0);
    let what = describe_cmd(&cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{what}`: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                lazy_unmount(mnt);
                return Err(format!(
                    "`{what}` did not return within {limit:?} (killed)\n--- stdout:\n{}--- stderr:\n{}",
                    read_log(&out_path),
                    read_log(&err_path)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("wait for `{what}`: {e}")),
        }
    };
    let stdout = read_log(&out_path);
    let stderr = read_log(&err_path);
    let _ = fs::write(&log, format!("--- stdout:\n{stdout}--- stderr:\n{stderr}"));
    Ok(BinRun {
        out: Out {
            status,
            stdout,
            stderr,
            what,
        },
        log,
    })
}

/// Asserts the shape of a refused start: non-zero exit, exactly one
/// non-empty line on stderr (in the foreground, info log records aside),
/// no panic text, nothing mounted at `mnt`.
#[track_caller]
pub fn assert_one_line_error(case: &str, out: &Out, mnt: &Path) {
    let mounted = fuse_mounted(mnt);
    if mounted {
        lazy_unmount(mnt);
    }
    assert!(
        !out.ok(),
        "{case}: expected a non-zero exit: {}",
        out.describe()
    );
    assert!(
        out.status.signal().is_none(),
        "{case}: killed by a signal instead of exiting: {}",
        out.describe()
    );
    // In the foreground (-f) the daemon logs at info level to stderr by
    // design (src/daemon/logging.rs): those records are not error lines.
    let foreground = out.what.split(' ').any(|a| a == "-f" || a == "-d");
    let is_log_record = |l: &str| {
        let t = l.trim_start();
        ["INFO ", "DEBUG ", "TRACE "]
            .iter()
            .any(|p| t.starts_with(p))
    };
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !(foreground && is_log_record(l)))
        .collect();
    assert!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "{case}: expected exactly one line on stderr{}, got {}: {}",
        if foreground {
            " (besides info log records)"
        } else {
            ""
        },
        lines.len(),
        out.describe()
    );
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !out.stderr.contains(bad) && !out.stdout.contains(bad),
            "{case}: panic text ({bad:?}) in the output: {}",
            out.describe()
        );
    }
    assert!(
        !mounted,
        "{case}: the refused start left a mount at {}: {}",
        mnt.display(),
        out.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Images

/// An empty filesystem of type `fs` at `img` (see [`images::build`]: 256 MiB
/// sparse, XFS 320 MiB).
#[track_caller]
pub fn make_fs(fs: Fs, img: &Path, scratch: &Path) {
    images::build(fs, None, img, scratch)
        .unwrap_or_else(|e| panic!("make {} at {}: {e}", fs.id(), img.display()));
}

/// An empty ext4 of `size_mib` whose root directory belongs to `uid:gid`.
#[track_caller]
pub fn make_ext4_owned(img: &Path, size_mib: u64, uid: u32, gid: u32) {
    images::blank_image(img, size_mib << 20).unwrap_or_else(|e| panic!("{e}"));
    let owner = format!("root_owner={uid}:{gid},lazy_itable_init=0,lazy_journal_init=0");
    run(&mut command(
        "mkfs.ext4",
        &["-q", "-F", "-b", "4096", "-E", &owner, path_str(img)],
    ))
    .expect_ok();
}

/// The filesystem's checker must pass; panics with its output otherwise.
#[track_caller]
pub fn fsck_clean(fs: Fs, img: &Path) {
    if let Err(e) = images::fsck(fs, img) {
        panic!("fsck of {} ({}) is not clean:\n{e}", img.display(), fs.id());
    }
}

/// Whether the image's lock is free: an exclusive non-blocking flock works.
pub fn image_unlocked(img: &Path) -> bool {
    run(&mut command("flock", &["-n", "-x", path_str(img), "true"])).ok()
}

// ---------------------------------------------------------------------------------------------
// Files

/// SHA-256 (hex) of a file.
#[track_caller]
pub fn sha(p: &Path) -> String {
    let (_, h) =
        images::sha256_host_file(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    images::hex(&h)
}

/// Writes `len` reproducible random bytes (from `seed`) to `p`; their SHA-256.
#[track_caller]
pub fn write_random(p: &Path, seed: u64, len: usize) -> String {
    let data = images::random_bytes(seed, len);
    fs::write(p, &data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    images::hex(&images::sha256(&data))
}

/// `stat` of a path (following nothing).
#[track_caller]
pub fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// Long-running helper processes (lock holders, streaming writers)

/// A child process talking line by line on stdout; stdin stays open until
/// [`Spawned::close_stdin`]. Dropping it kills its process group.
pub struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<mpsc::Receiver<Vec<u8>>>,
    pub what: String,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Spawned {
    #[track_caller]
    pub fn new(mut cmd: Command) -> Spawned {
        let what = describe_cmd(&cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
        let lines = images::line_channel(child.stdout.take().expect("piped"));
        let stderr = Some(read_in_thread(child.stderr.take().expect("piped")));
        Spawned {
            child,
            lines,
            stderr,
            what,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line, waiting at most `limit`; None at end of output or timeout.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(limit).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The next line, which must come within `limit`.
    #[track_caller]
    pub fn expect_line(&mut self, limit: Duration) -> String {
        match self.next_line(limit) {
            Some(l) => l,
            None => {
                let status = self.child.try_wait();
                let stderr = self.stderr_now();
                panic!(
                    "`{}`: no output line within {limit:?} (status {status:?}); stderr so far: {stderr}",
                    self.what
                )
            }
        }
    }

    fn stderr_now(&mut self) -> String {
        if self.child.try_wait().ok().flatten().is_none() {
            return "<still running>".into();
        }
        match self.stderr.take() {
            Some(rx) => rx
                .recv_timeout(Duration::from_secs(2))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Closes its stdin (the usual "now finish" signal).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Waits for the exit (at most `limit`, then kills it); its status, the
    /// remaining stdout lines (also appended to `seen`) and stderr.
    pub fn finish(&mut self, limit: Duration) -> Result<(ExitStatus, Vec<String>, String), String> {
        self.close_stdin();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() >= deadline {
                kill_group(self.child.id());
                let _ = self.child.wait();
                return Err(format!(
                    "`{}` did not exit within {limit:?} (killed)",
                    self.what
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = Vec::new();
        while let Some(l) = self.next_line(Duration::from_secs(2)) {
            rest.push(l);
        }
        let err = self.stderr_now();
        Ok((status, rest, err))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}
