//! Starting in the background without lying about the result.
//!
//! The original lklfuse daemonized before booting the kernel and mounting, so a bad `type=`
//! or a corrupt image still returned 0 to the shell and the mount silently never appeared.
//! Here the original process waits until the daemon reports:
//!
//! ```text
//!  lklfuse (parent)                     daemon (child)
//!  ────────────────                     ──────────────
//!  daemonize(): pipe, fork ───────────► setsid, chdir("/")
//!  read the pipe ...                    open image, boot kernel, mount, FUSE mount
//!    "R"            ◄────────────────── Readiness::ready()      → exit 0
//!    "F" code msg   ◄────────────────── Readiness::failed_with() → print msg, exit code
//!    EOF            ◄────────────────── (crash, killed)         → print why, exit 1
//! ```
//!
//! Kernel threads do not survive `fork`, so [`daemonize`] must run before anything starts a
//! thread; it checks that and refuses otherwise. Because the daemon's working directory
//! becomes `/`, canonicalize every path from the command line (image, mountpoint, `lock=`,
//! `log=`) before calling it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::error::EXIT_FAILURE;

/// What the parent prints when the daemon dies without reporting.
const VANISHED_MESSAGE: &str = "lklfuse: the daemon exited before the mount was ready";

/// Report tag: the mount is live.
const TAG_READY: u8 = b'R';
/// Report tag: start-up failed; an exit status byte and a message follow.
const TAG_FAILED: u8 = b'F';

/// Which side of the fork this process is on.
#[derive(Debug)]
pub enum Role {
    /// The original process, after the daemon has reported (or died), with the exit status
    /// the user should see: 0 if the daemon mounted, else the failure's. Any message has
    /// already been printed; end the process with [`exit_parent`].
    Parent(i32),
    /// The daemon. Start up, then call [`Readiness::ready`] or [`Readiness::failed`].
    Child(Readiness),
}

/// Ends the parent with `exit_code`, using `_exit`: nothing the parent built before the fork
/// is torn down or flushed, since the daemon owns it now (stderr is unbuffered, so nothing
/// printed is lost).
pub fn exit_parent(exit_code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; skipping destructors and atexit handlers is the
    // point.
    unsafe { libc::_exit(exit_code) }
}

/// The result of [`fork_with_report_pipe`], with the daemon's pid for tests to reap it.
#[derive(Debug)]
enum Forked {
    Parent {
        exit_code: i32,
        #[cfg_attr(not(test), allow(dead_code))]
        daemon_pid: libc::pid_t,
    },
    Child(Readiness),
}

/// Forks the daemon and waits in the parent until it reports.
///
/// In the parent, returns [`Role::Parent`] once the daemon called [`Readiness::ready`] (exit
/// status 0), [`Readiness::failed_with`] (its message is printed to stderr), or died (a
/// message saying so is printed; exit status 1). In the child, returns [`Role::Child`] after
/// `setsid()` and `chdir("/")`.
///
/// # Errors
///
/// If other threads are running (they would vanish in the child, possibly holding locks),
/// or if the pipe or the fork cannot be made. Nothing has been forked in that case.
pub fn daemonize() -> io::Result<Role> {
    ensure_single_threaded()?;
    // SAFETY: this is the only thread, so the child cannot inherit a lock held by a thread
    // that does not exist on its side of the fork.
    Ok(match unsafe { fork_with_report_pipe() }? {
        Forked::Parent { exit_code, .. } => Role::Parent(exit_code),
        Forked::Child(readiness) => Role::Child(readiness),
    })
}

/// Refuses unless this process runs exactly one thread.
fn ensure_single_threaded() -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot count this process's threads in /proc/self/task: {error}"),
            )
        })?
        .count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "cannot start in the background: {threads} threads are already running \
             (threads do not survive fork)"
        )));
    }
    Ok(())
}

/// Makes the report pipe and forks.
///
/// # Safety
///
/// If other threads run, the child may only call async-signal-safe functions until it
/// exits: anything a vanished thread had locked (the allocator, stdio) stays locked.
unsafe fn fork_with_report_pipe() -> io::Result<Forked> {
    let (read_end, write_end) = report_pipe()?;
    // SAFETY: fork itself has no preconditions; what the child may do afterwards is this
    // function's own safety contract, passed on to the caller.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read_end);
            let readiness = Readiness {
                pipe: Some(File::from(write_end)),
            };
            if detach().is_err() {
                readiness.failed("lklfuse: cannot detach the daemon from the terminal");
                // SAFETY: `_exit` has no preconditions; the child owns nothing worth
                // tearing down yet.
                unsafe { libc::_exit(EXIT_FAILURE) };
            }
            Ok(Forked::Child(readiness))
        }
        daemon_pid => {
            drop(write_end);
            let exit_code = wait_for_report(File::from(read_end), daemon_pid);
            Ok(Forked::Parent {
                exit_code,
                daemon_pid,
            })
        }
    }
}

/// A close-on-exec pipe, so programs the daemon runs (fusermount3) do not hold its write
/// end open and delay the parent's end-of-file.
fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Leaves the terminal's session (no SIGHUP when it closes) and the caller's directory (so
/// the daemon does not keep a filesystem busy).
fn detach() -> io::Result<()> {
    // SAFETY: setsid has no preconditions; it fails only for a process-group leader, which
    // a freshly forked child is not.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")
}

/// What the daemon told the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Ready,
    Failed {
        exit_code: i32,
        message: String,
    },
    /// End of file without a report: the daemon died.
    Vanished,
}

/// Clamps an exit status to what a report byte can carry; 0 is not a failure, so it
/// becomes 1.
fn failure_code_byte(exit_code: i32) -> u8 {
    match u8::try_from(exit_code) {
        Ok(0) | Err(_) => EXIT_FAILURE as u8,
        Ok(code) => code,
    }
}

/// The header of a failure report; the message bytes follow it.
fn encode_failure_header(exit_code: i32) -> [u8; 2] {
    [TAG_FAILED, failure_code_byte(exit_code)]
}

fn decode_report(bytes: &[u8]) -> Report {
    match bytes {
        [] => Report::Vanished,
        [TAG_READY] => Report::Ready,
        [TAG_FAILED, code, message @ ..] => Report::Failed {
            exit_code: i32::from(*code),
            message: String::from_utf8_lossy(message).into_owned(),
        },
        _ => Report::Failed {
            exit_code: EXIT_FAILURE,
            message: "lklfuse: the daemon sent an unreadable start-up report".to_owned(),
        },
    }
}

/// Waits for the report, prints what the user must see, and returns the exit status.
fn wait_for_report(mut pipe: File, daemon_pid: libc::pid_t) -> i32 {
    let mut bytes = Vec::new();
    if let Err(error) = pipe.read_to_end(&mut bytes) {
        eprintln!("lklfuse: cannot read the daemon's start-up report: {error}");
        return EXIT_FAILURE;
    }
    match decode_report(&bytes) {
        Report::Ready => 0,
        Report::Failed { exit_code, message } => {
            let message = message.trim_end();
            if !message.is_empty() {
                eprintln!("{message}");
            }
            exit_code
        }
        Report::Vanished => {
            eprintln!("{VANISHED_MESSAGE}{}", reap_and_describe(daemon_pid));
            EXIT_FAILURE
        }
    }
}

/// Collects a dead daemon's status: " (killed by signal 11)", " (exit status 3)", or "".
fn reap_and_describe(daemon_pid: libc::pid_t) -> String {
    let mut status = 0;
    // SAFETY: `status` is a valid int to write; the pid is our own child, whose report pipe
    // just closed, so it has exited or is exiting and the wait is short.
    let reaped = unsafe { libc::waitpid(daemon_pid, &mut status, 0) };
    if reaped != daemon_pid {
        return String::new();
    }
    if libc::WIFSIGNALED(status) {
        format!(" (killed by signal {})", libc::WTERMSIG(status))
    } else if libc::WIFEXITED(status) {
        format!(" (exit status {})", libc::WEXITSTATUS(status))
    } else {
        String::new()
    }
}

/// The daemon's duty to tell the waiting parent how start-up went.
///
/// Dropping it unused counts as a failure (the parent prints that the daemon exited before
/// the mount was ready), so an early return or a panic never leaves the parent waiting or
/// claiming success. In the foreground ([`Readiness::foreground`]) there is no parent:
/// `ready` does nothing and `failed` prints to stderr.
#[derive(Debug)]
pub struct Readiness {
    /// The report pipe's write end; `None` in the foreground or once reported.
    pipe: Option<File>,
}

impl Readiness {
    /// A `Readiness` for `-f`: nobody waits, so reports go nowhere (failures to stderr).
    pub fn foreground() -> Self {
        Readiness { pipe: None }
    }

    /// Whether a parent process is waiting for the report.
    pub fn is_background(&self) -> bool {
        self.pipe.is_some()
    }

    /// Reports that the filesystem is mounted: the parent exits 0.
    ///
    /// In the background, first points stdin, stdout and stderr at `/dev/null`: the terminal
    /// belongs to the shell again once the parent exits. Use
    /// [`Readiness::ready_with_stderr`] to keep stderr in a log file.
    pub fn ready(self) {
        self.report_ready(None);
    }

    /// As [`Readiness::ready`], but stderr goes to `stderr_target` (the `log=` file, see
    /// [`LogFile`](super::logging::LogFile)) so panics and stray output land there.
    pub fn ready_with_stderr(self, stderr_target: BorrowedFd<'_>) {
        self.report_ready(Some(stderr_target));
    }

    fn report_ready(mut self, stderr_target: Option<BorrowedFd<'_>>) {
        let Some(mut pipe) = self.pipe.take() else {
            return;
        };
        // The mount is live either way; output reaching the terminal is no reason to fail it.
        if let Err(error) = redirect_stdio(stderr_target) {
            tracing::warn!("cannot redirect the daemon's output to /dev/null: {error}");
        }
        // If the parent is gone (killed while waiting) there is nobody to tell.
        let _ = pipe.write_all(&[TAG_READY]);
    }

    /// Reports a start-up failure with exit status 1; see [`Readiness::failed_with`].
    pub fn failed(self, message: &str) {
        self.failed_with(EXIT_FAILURE, message);
    }

    /// Reports a start-up failure: the parent prints `message` (one line, already formatted,
    /// e.g. `"lklfuse: disk.img: no such file or directory"`) and exits with `exit_code`
    /// (1..=255; anything else becomes 1). In the foreground, prints `message` to stderr.
    ///
    /// The parent returns the shell prompt as soon as it reads this, so call it last, after
    /// tearing down, just before the daemon exits.
    pub fn failed_with(mut self, exit_code: i32, message: &str) {
        match self.pipe.take() {
            Some(mut pipe) => send_failure(&mut pipe, exit_code, message),
            None => eprintln!("{message}"),
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            send_failure(&mut pipe, EXIT_FAILURE, VANISHED_MESSAGE);
        }
    }
}

/// Writes a failure report; allocation-free, so it is usable in a freshly forked child.
fn send_failure(pipe: &mut File, exit_code: i32, message: &str) {
    // A parent that is gone has nobody to print for; nothing to do about write errors.
    let _ = pipe
        .write_all(&encode_failure_header(exit_code))
        .and_then(|()| pipe.write_all(message.as_bytes()));
}

/// Points stdin and stdout at `/dev/null`, and stderr at `stderr_target` or `/dev/null`.
fn redirect_stdio(stderr_target: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    let stderr_source = stderr_target.map_or(null.as_raw_fd(), |fd| fd.as_raw_fd());
    for (source, target) in [
        (null.as_raw_fd(), libc::STDIN_FILENO),
        (null.as_raw_fd(), libc::STDOUT_FILENO),
        (stderr_source, libc::STDERR_FILENO),
    ] {
        // SAFETY: both descriptors are open (`null` and `stderr_target` are borrowed for the
        // whole call). Descriptors 0-2 are owned by no Rust object (std's stdio refers to
        // them by number), so replacing them breaks no ownership.
        if unsafe { libc::dup2(source, target) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_encoding() {
        assert_eq!(decode_report(&[]), Report::Vanished);
        assert_eq!(decode_report(b"R"), Report::Ready);
        let mut failure = encode_failure_header(3).to_vec();
        failure.extend_from_slice(b"lklfuse: disk.img: no such file or directory");
        assert_eq!(
            decode_report(&failure),
            Report::Failed {
                exit_code: 3,
                message: "lklfuse: disk.img: no such file or directory".to_owned()
            }
        );
        assert_eq!(encode_failure_header(0), [TAG_FAILED, 1]);
        assert_eq!(encode_failure_header(-5), [TAG_FAILED, 1]);
        assert_eq!(encode_failure_header(300), [TAG_FAILED, 1]);
        assert_eq!(encode_failure_header(2), [TAG_FAILED, 2]);
        assert!(matches!(
            decode_report(b"Rxyz"),
            Report::Failed { exit_code: 1, .. }
        ));
    }

    #[test]
    fn refuses_to_fork_with_threads_running() {
        // The test harness runs this test on its own thread, next to the main thread.
        let error = daemonize().expect_err("daemonize forked in a multi-threaded process");
        assert!(error.to_string().contains("threads"), "{error}");
    }

    #[test]
    fn foreground_readiness_reports_nothing() {
        let readiness = Readiness::foreground();
        assert!(!readiness.is_background());
        readiness.ready();
        Readiness::foreground().failed("lklfuse: (test) foreground failure message");
    }

    /// Forks; the child runs `child` and exits. Returns the parent's exit status once the
    /// child is reaped.
    fn fork_and_report(child: fn(Readiness)) -> i32 {
        // SAFETY: the child only runs `child`, which is limited to the allocation-free
        // report functions, then `_exit`s.
        match unsafe { fork_with_report_pipe() }.expect("fork") {
            Forked::Parent {
                exit_code,
                daemon_pid,
            } => {
                assert!(daemon_pid > 0);
                let mut status = 0;
                // SAFETY: `status` is a valid int; reaping our own child (already reaped if
                // it vanished, then this fails with ECHILD, which is fine).
                unsafe { libc::waitpid(daemon_pid, &mut status, 0) };
                exit_code
            }
            Forked::Child(readiness) => {
                child(readiness);
                // SAFETY: `_exit` has no preconditions; the child must not return into the
                // test harness.
                unsafe { libc::_exit(0) }
            }
        }
    }

    // One test for all forks: a concurrently forked sibling would inherit the other's pipe
    // and delay its end-of-file.
    #[test]
    fn parent_exit_status_follows_the_child_report() {
        assert_eq!(fork_and_report(Readiness::ready), 0);
        assert_eq!(
            fork_and_report(|readiness| {
                readiness.failed_with(3, "lklfuse: (test) expected failure message");
            }),
            3
        );
        assert_eq!(fork_and_report(drop), 1);
        // Skipping Drop just closes the report pipe, as when the daemon crashes.
        assert_eq!(fork_and_report(std::mem::forget), 1);
    }
}
