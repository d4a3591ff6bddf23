//! Last-resort shutdown when the daemon cannot go on: a kernel panic (`BUG()`, `panic()`) or a
//! crash signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE) in the kernel code or in the daemon.
//!
//! A FUSE mount whose daemon died stays behind as a dead directory ("Transport endpoint is not
//! connected") that file managers and shells trip over, so before exiting the daemon starts a
//! child process that detaches the mount (`umount2(MNT_DETACH)` as root, `fusermount3 -u -z`
//! otherwise), writes one line saying why, and exits with [`EXIT_FATAL`]. It does not wait for
//! the child: a lazy unmount may ask this very daemon to answer `FUSE_DESTROY`, which it can
//! no longer do; once it has exited, the host kernel aborts the connection and the unmount
//! completes. Callers blocked on the mount get `ENOTCONN` instead of hanging.
//!
//! Everything a signal handler needs is prepared by [`arm`] (strings, the syslog socket), so
//! the handler itself only makes async-signal-safe system calls.

use std::ffi::{c_char, c_int, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Exit status after a fatal error inside the daemon (kernel panic, crash signal).
pub const EXIT_FATAL: i32 = 3;

/// The signals that mean the process's memory or code is no longer trustworthy.
const CRASH_SIGNALS: [c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

/// What to do on a fatal error, prepared while the daemon is healthy.
struct Plan {
    /// The program, for messages.
    program: &'static str,
    /// How the child process removes the mount.
    detach: Detach,
    /// The mount point to remove (none for the copy tools).
    mountpoint: Option<CString>,
    /// A datagram socket connected to `/dev/log`, when nobody reads stderr.
    syslog: Option<c_int>,
}

enum Detach {
    /// Root: detach it directly.
    Umount,
    /// Not root: the setuid helper `fusermount3` (its path).
    Fusermount(CString),
}

static PLAN: OnceLock<Plan> = OnceLock::new();
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Prepares the shutdown for the mount at `mountpoint` and installs the crash-signal
/// handlers. `stderr_is_read`: false for a background daemon without `log=FILE`, whose
/// fatal message then goes to syslog.
///
/// # Errors
///
/// If the mount point has a NUL byte or a handler cannot be installed.
pub fn arm(mountpoint: &Path, stderr_is_read: bool) -> std::io::Result<()> {
    let invalid = |_| std::io::Error::from_raw_os_error(libc::EINVAL);
    let mountpoint = CString::new(mountpoint.as_os_str().as_bytes()).map_err(invalid)?;
    // SAFETY: geteuid has no preconditions.
    let detach = if unsafe { libc::geteuid() } == 0 {
        Detach::Umount
    } else {
        let helper = find_fusermount();
        Detach::Fusermount(CString::new(helper.as_os_str().as_bytes()).map_err(invalid)?)
    };
    let syslog = if stderr_is_read {
        None
    } else {
        connect_syslog()
    };
    // A second arm (not done by lklfuse) keeps the first plan.
    let _ = PLAN.set(Plan {
        program: "lklfuse",
        detach,
        mountpoint: Some(mountpoint),
        syslog,
    });
    install_handlers()
}

/// The same for a program that mounts nothing on the host (cptofs, cpfromfs, fs2tar): a
/// kernel panic or crash signal ends it with one line and [`EXIT_FATAL`] instead of an abort
/// with a core dump.
///
/// # Errors
///
/// If a handler cannot be installed.
pub fn arm_program(program: &'static str) -> std::io::Result<()> {
    let _ = PLAN.set(Plan {
        program,
        detach: Detach::Umount,
        mountpoint: None,
        syslog: None,
    });
    install_handlers()
}

fn install_handlers() -> std::io::Result<()> {
    for signal in CRASH_SIGNALS {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler only makes
        // async-signal-safe calls (see `on_crash_signal`); SA_RESETHAND makes a crash inside
        // the handler itself end the process the default way instead of looping.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_crash_signal as extern "C" fn(c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Shuts down after a kernel panic (not in signal context): logs `reason`, removes the mount,
/// exits with [`EXIT_FATAL`].
pub fn kernel_panicked(reason: &str) -> ! {
    shut_down_logged(&format!("kernel panic: {}", reason.trim_end()))
}

/// Shuts down after the watchdog found the kernel locked up for `limit` (not in signal
/// context): logs it, removes the mount, exits with [`EXIT_FATAL`].
pub fn kernel_stuck(limit: std::time::Duration) -> ! {
    shut_down_logged(&format!(
        "kernel locked up: kernel code ran {} s without yielding (a filesystem bug on this \
         image?)",
        limit.as_secs()
    ))
}

/// [`shut_down`] from ordinary code: the daemon's log file gets the line too (the copy tools
/// log to stderr, which gets it anyway); stderr or syslog get it directly because the logger
/// may have no output.
fn shut_down_logged(what: &str) -> ! {
    if PLAN.get().is_some_and(|plan| plan.mountpoint.is_some()) {
        tracing::error!("fatal: {what}; removing the mount and exiting");
    }
    shut_down(what.as_bytes())
}

extern "C" fn on_crash_signal(signal: c_int) {
    let what: &[u8] = match signal {
        libc::SIGSEGV => b"SIGSEGV (invalid memory access)",
        libc::SIGBUS => b"SIGBUS (bus error)",
        libc::SIGILL => b"SIGILL (illegal instruction)",
        libc::SIGFPE => b"SIGFPE (arithmetic fault)",
        _ => b"a crash signal",
    };
    shut_down(what)
}

/// The common end: one message, the detaching child, `_exit`. Async-signal-safe.
fn shut_down(what: &[u8]) -> ! {
    if ENTERED.swap(true, Ordering::SeqCst) {
        // Another thread is already shutting down; it will end the process.
        loop {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
        }
    }
    let Some(plan) = PLAN.get() else {
        write_parts(2, &[b"fatal: ", what, b"\n"]);
        // SAFETY: _exit ends the process without running anything else.
        unsafe { libc::_exit(EXIT_FATAL) }
    };
    let program = plan.program.as_bytes();
    let (removing, mountpoint, tail): (&[u8], &[u8], &[u8]) = match &plan.mountpoint {
        Some(mnt) => (
            b"; removing the mount at ",
            mnt.as_bytes(),
            b" and exiting\n",
        ),
        None => (b"; exiting (check the image with its fsck)", b"", b"\n"),
    };
    let parts: [&[u8]; 7] = [program, b": fatal: ", what, removing, mountpoint, tail, b""];
    write_parts(2, &parts);
    if let Some(socket) = plan.syslog {
        // <10>: facility user, severity critical.
        let mut syslog_parts: [&[u8]; 7] = [b"<10>"; 7];
        syslog_parts[1..].copy_from_slice(&parts[..6]);
        write_parts(socket, &syslog_parts);
    }
    if let Some(mountpoint) = &plan.mountpoint {
        spawn_detach(&plan.detach, mountpoint);
    }
    // SAFETY: _exit ends the process without running destructors or atexit handlers, which
    // could touch state the crash left inconsistent.
    unsafe { libc::_exit(EXIT_FATAL) }
}

/// Starts a child that detaches the mount; does not wait for it (see the module comment).
fn spawn_detach(detach: &Detach, mountpoint: &CString) {
    // Built before forking: the child must not allocate (another thread may have held the
    // allocator's lock when the parent crashed).
    let helper = match detach {
        Detach::Umount => None,
        Detach::Fusermount(path) => Some(path),
    };
    let argv: [*const c_char; 5] = match helper {
        Some(path) => [
            path.as_ptr(),
            c"-u".as_ptr(),
            c"-z".as_ptr(),
            mountpoint.as_ptr(),
            std::ptr::null(),
        ],
        None => [std::ptr::null(); 5],
    };
    let envp: [*const c_char; 2] = [
        c"PATH=/usr/bin:/bin:/usr/sbin:/sbin".as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: a raw clone with only SIGCHLD is fork without glibc's atfork handlers (which
    // take locks a crashed thread may hold). The child only makes system calls on memory
    // prepared above and ends with execve or _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if pid == 0 {
        // SAFETY: see above; every pointer refers to a NUL-terminated string or is null.
        unsafe {
            match helper {
                None => {
                    libc::umount2(mountpoint.as_ptr(), libc::MNT_DETACH);
                }
                Some(path) => {
                    libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                }
            }
            libc::_exit(0);
        }
    }
}

/// Writes each part in turn to `fd`, ignoring errors (there is nobody left to tell).
fn write_parts(fd: c_int, parts: &[&[u8]]) {
    // One writev so the line is not interleaved with another thread's output.
    let mut iov: [libc::iovec; 8] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 8];
    let count = parts.len().min(iov.len());
    for (slot, part) in iov.iter_mut().zip(parts) {
        slot.iov_base = part.as_ptr() as *mut libc::c_void;
        slot.iov_len = part.len();
    }
    // SAFETY: each iovec points at a live byte slice of the given length.
    unsafe { libc::writev(fd, iov.as_ptr(), count as c_int) };
}

/// `fusermount3` on PATH, or where Debian installs it.
fn find_fusermount() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("fusermount3"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/bin/fusermount3"))
}

/// A datagram socket connected to the local syslog, if there is one.
fn connect_syslog() -> Option<c_int> {
    let socket = std::os::unix::net::UnixDatagram::unbound().ok()?;
    socket.connect("/dev/log").ok()?;
    // Kept open for the life of the process: the crash handler writes to it.
    Some(std::os::fd::IntoRawFd::into_raw_fd(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_path_is_absolute() {
        assert!(find_fusermount().is_absolute());
    }
}
