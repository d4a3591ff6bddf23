//! When the daemon cannot go on (a kernel panic, a crash signal in kernel or daemon code) it
//! shuts down cleanly: one line saying why, the FUSE mount removed (callers get an error, not a
//! hang), exit status 3. As root and as an unprivileged user (whose only way to unmount is
//! the setuid fusermount3).

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fuse::{self, fsck_clean, fuse_mounted, fuse_test, make_ext4_owned, subdir, Daemon};
use common::images::{self, Fs};
use lklfuse::daemon::fatal::{self, EXIT_FATAL};
use lklfuse::fs::KernelFs;
use lklfuse::lkl::{self, bindings as b, disk, sys, BootOptions};

const FILE: &str = "fatal";
/// The unprivileged test user lklfuse-a and its group.
const USER_A: (u32, u32) = (2001, 2001);
const LIMIT: Duration = Duration::from_secs(120);
/// How long the mount may take to disappear after the daemon's fatal exit.
const GONE_LIMIT: Duration = Duration::from_secs(10);

fn wait_unmounted(mnt: &Path) -> Result<(), String> {
    let deadline = Instant::now() + GONE_LIMIT;
    while fuse_mounted(mnt) {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} is still mounted {GONE_LIMIT:?} after the fatal exit",
                mnt.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A process (as `user`, or root) holding a file open on the mount; once told, it reads the
/// file again and prints the outcome ("ok" or the errno name).
struct Holder {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
}

const HOLDER: &str = r#"
import errno, os, sys
f = os.open(sys.argv[1], os.O_RDONLY)
print("ready", flush=True)
sys.stdin.readline()
try:
    # The read may be served from the host's page cache (kept across opens), which is
    # right; fsync always needs the daemon.
    os.pread(f, 4096, 0)
    os.fsync(f)
    print("ok", flush=True)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"#;

impl Holder {
    fn start(file: &Path, user: Option<(u32, u32)>) -> Holder {
        let path = file.to_str().expect("utf-8 path");
        let mut cmd = match user {
            None => fuse::command(fuse::python(), &["-c", HOLDER, path]),
            Some((uid, gid)) => {
                fuse::command_as(uid, gid, &[], fuse::python(), &["-c", HOLDER, path])
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the holder");
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = images::line_channel(child.stdout.take().expect("piped stdout"));
        let holder = Holder {
            child,
            stdin,
            lines,
        };
        assert_eq!(
            holder.next_line().as_deref(),
            Some("ready"),
            "holder did not open {path}"
        );
        holder
    }

    fn next_line(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(20)).ok()
    }

    /// Reads again and syncs; what it got.
    fn read_again(mut self) -> String {
        self.stdin.write_all(b"go\n").expect("tell the holder");
        let outcome = self
            .next_line()
            .unwrap_or_else(|| "no answer within 20 s (hung)".to_string());
        let _ = self.child.kill();
        let _ = self.child.wait();
        outcome
    }
}

/// Mounts as `user` (or root), sends `signal`, checks the fatal shutdown.
fn crash_signal_case(dir: PathBuf, signal: i32, user: Option<(u32, u32)>) {
    let owner = user.unwrap_or((0, 0));
    let work = subdir(&dir, "work", 0o755, Some(owner));
    let img = work.join("disk.img");
    make_ext4_owned(&img, 64, owner.0, owner.1);
    std::os::unix::fs::chown(&img, Some(owner.0), Some(owner.1)).expect("chown image");
    let mnt = subdir(&work, "mnt", 0o755, Some(owner));
    let mut daemon = match user {
        None => Daemon::start(&img, &mnt, &["type=ext4"]),
        Some((uid, gid)) => Daemon::start_as(uid, gid, &img, &mnt, &["type=ext4"]),
    }
    .unwrap_or_else(|e| panic!("mount: {e}"));
    let data = mnt.join("data");
    // Without allow_other only the daemon's user may use the mount.
    let script = format!("echo written before the crash > {}", fuse::q(&data));
    let wrote = match user {
        None => fuse::sh(&script),
        Some((uid, gid)) => fuse::sh_as(uid, gid, &[], &script),
    };
    assert!(wrote.ok(), "write through the mount: {}", wrote.describe());
    let holder = Holder::start(&data, user);

    daemon.signal(signal);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("foreground daemon: exit status");
    let log = daemon.log_text();
    assert_eq!(
        status.code(),
        Some(EXIT_FATAL),
        "after signal {signal}: {status} (signal {:?}), expected exit {EXIT_FATAL}; log:\n{log}",
        status.signal()
    );
    assert!(
        log.contains("lklfuse: fatal: SIG") && log.contains("removing the mount"),
        "no fatal line in the log:\n{log}"
    );
    assert!(
        !log.contains("panicked at"),
        "a Rust panic in the log:\n{log}"
    );
    wait_unmounted(&mnt).unwrap_or_else(|e| panic!("{e}\nlog:\n{log}"));
    let outcome = holder.read_again();
    assert!(
        outcome == "ENOTCONN" || outcome == "EIO" || outcome == "ECONNABORTED",
        "a process with a file open on the dead mount got {outcome:?}, expected an error"
    );
    // The journal replays: fsck clean after the abrupt end.
    fsck_clean(Fs::Ext4, &img);
}

#[test]
fn sigsegv_as_root_removes_the_mount() {
    fuse_test(FILE, "sigsegv_root", LIMIT, |dir| {
        crash_signal_case(dir, libc::SIGSEGV, None)
    });
}

#[test]
fn sigbus_as_user_removes_the_mount() {
    fuse_test(FILE, "sigbus_user", LIMIT, |dir| {
        crash_signal_case(dir, libc::SIGBUS, Some(USER_A))
    });
}

/// The kernel panics (here: out of memory with `vm.panic_on_oom` set; `BUG()` and every other
/// `panic()` take the same path to the host): the FUSE mount served by this process goes away
/// and the process exits with [`EXIT_FATAL`].
#[test]
fn kernel_panic_removes_the_mount() {
    fuse_test(FILE, "kernel_panic", LIMIT, |dir| {
        let img = dir.join("disk.img");
        make_ext4_owned(&img, 64, 0, 0);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let mut child = images::child_command("child_process", "panicking-daemon")
            .env("LKLFUSE_TEST_IMAGE", &img)
            .env("LKLFUSE_TEST_MNT", &mnt)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn the child daemon");
        let rx = images::line_channel(child.stdout.take().expect("piped"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut output = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if images::child_lines(&line).iter().any(|m| m == "ready") => break,
                Ok(line) => output.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("the child daemon did not get ready:\n{}", output.join("\n"));
                }
            }
        }
        assert!(
            fuse_mounted(&mnt),
            "the child reported ready without a mount"
        );
        let data = mnt.join("data");
        std::fs::write(&data, b"before the panic").expect("write through the mount");
        let holder = Holder::start(&data, None);

        child
            .stdin
            .take()
            .expect("piped")
            .write_all(b"panic\n")
            .expect("tell the child");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("the child did not exit within 30 s of the kernel panic");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        assert_eq!(
            status.code(),
            Some(EXIT_FATAL),
            "child ended with {status}; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("lklfuse: fatal: kernel panic: "),
            "no fatal line on stderr:\n{stderr}"
        );
        wait_unmounted(&mnt).unwrap_or_else(|e| panic!("{e}\nstderr:\n{stderr}"));
        let outcome = holder.read_again();
        assert!(
            outcome == "ENOTCONN" || outcome == "EIO" || outcome == "ECONNABORTED",
            "a process with a file open on the dead mount got {outcome:?}"
        );
        fsck_clean(Fs::Ext4, &img);
    });
}

/// The copy tools end the same way (one line, exit 3), here fs2tar stuck writing to a pipe
/// nobody reads.
#[test]
fn tool_crash_is_one_line() {
    fuse_test(FILE, "tool_crash", LIMIT, |dir| {
        let img = dir.join("disk.img");
        make_ext4_owned(&img, 64, 0, 0);
        let big = dir.join("big.bin");
        std::fs::write(&big, images::random_bytes(7, 8 << 20)).expect("write the source");
        let out = fuse::run(&mut fuse::command(
            env!("CARGO_BIN_EXE_cptofs"),
            &["-q", "-i", fuse::path_str(&img), fuse::path_str(&big), "/"],
        ));
        assert!(out.ok(), "cptofs: {}", out.describe());
        let mut child = fuse::command(
            env!("CARGO_BIN_EXE_fs2tar"),
            &["-q", "-i", fuse::path_str(&img)],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fs2tar");
        // The pipe (64 KiB) fills long before 8 MiB are archived: fs2tar blocks in write.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            child.try_wait().expect("wait").is_none(),
            "fs2tar ended early"
        );
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGSEGV) }, 0);
        let output = child.wait_with_output().expect("wait for fs2tar");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(EXIT_FATAL),
            "fs2tar ended with {}; stderr:\n{stderr}",
            output.status
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines,
            ["fs2tar: fatal: SIGSEGV (invalid memory access); exiting (check the image with its fsck)"],
            "expected exactly one line on stderr"
        );
        fsck_clean(Fs::Ext4, &img);
    });
}

/// The child: serves an ext4 image over FUSE with the daemon's fatal handling armed, then,
/// when told, exhausts its kernel's memory with panic_on_oom set.
fn panicking_daemon() {
    let image = PathBuf::from(std::env::var("LKLFUSE_TEST_IMAGE").expect("image"));
    let mnt = PathBuf::from(std::env::var("LKLFUSE_TEST_MNT").expect("mount point"));
    let disk = disk::attach(&image, false).expect("attach");
    let _kernel = lkl::boot(&BootOptions::default()).expect("boot");
    let mount = disk
        .mount(&disk::MountOptions {
            fstype: Some("ext4".into()),
            ..Default::default()
        })
        .expect("mount");
    let fs = KernelFs::new(mount.path(), false).expect("serve");
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("lklfuse-fatal-test".into())];
    let session = fuser::Session::new(fs, &mnt, &config).expect("FUSE mount");
    std::thread::spawn(move || session.run());
    fatal::arm(&mnt, true).expect("arm");
    lkl::set_panic_hook(Box::new(|msg| fatal::kernel_panicked(msg)));
    images::tell_parent("ready");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("read the order");
    // Fill a RAM filesystem until the kernel runs out of memory; with panic_on_oom set the
    // kernel's OOM path panics (as it would with no task to kill).
    disk::ensure_procfs().expect("procfs");
    let _ = sys::mkdirat(lkl::CWD, c"/filler", 0o755);
    sys::mount(Some(c"ramfs"), c"/filler", Some(c"ramfs"), 0, None).expect("mount ramfs");
    let file = sys::openat(
        lkl::CWD,
        c"/filler/data",
        (b::O_WRONLY | b::O_CREAT) as i32,
        0o600,
    )
    .expect("create the filler");
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut written = 0usize;
    let outcome = loop {
        match sys::write(&file, &chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
    };
    eprintln!("the filler stopped after {written} bytes with {outcome}: no kernel panic");
    std::process::exit(1);
}

/// Not a test: the body of the child daemon (selected by LKLFUSE_TEST_CHILD).
#[test]
#[ignore = "helper run as a child process by the other tests of this file"]
fn child_process() {
    match images::child_role().as_deref() {
        Some("panicking-daemon") => panicking_daemon(),
        Some(other) => panic!("unknown child role {other}"),
        None => println!("helper for child processes: nothing to do when run directly"),
    }
}
