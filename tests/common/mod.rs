//! Shared test support. One kernel per process: every test in a test file
//! shares the kernel booted by [`kernel`]; each file in tests/ is its own
//! process (cargo runs them one after another), so each gets a fresh kernel.
#![allow(dead_code)]

pub mod fuse;
pub mod images;
pub mod integration;
pub mod tools;

use std::ffi::CStr;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use lklfuse::lkl::{self, bindings as b, sys, BootOptions, Errno, Kernel};

/// The process's kernel, booted on first use.
pub fn kernel() -> Kernel {
    kernel_with("")
}

/// The process's kernel, booted on first use with `cmdline` added to the kernel command
/// line. There is one kernel per process, so a test binary uses one command line.
pub fn kernel_with(cmdline: &str) -> Kernel {
    static KERNEL: OnceLock<(String, Kernel)> = OnceLock::new();
    let (booted_with, kernel) = KERNEL.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let options = BootOptions {
            cmdline: cmdline.to_owned(),
            ..BootOptions::default()
        };
        (
            cmdline.to_owned(),
            lkl::boot(&options).expect("kernel boots"),
        )
    });
    assert_eq!(
        booted_with, cmdline,
        "one kernel command line per test binary"
    );
    *kernel
}

/// Runs `work` on its own thread and aborts the whole test process if it
/// does not finish within `limit`: a hang in the kernel must fail the test,
/// not stall CI.
pub fn with_watchdog<T: Send + 'static>(
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
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked before sending: re-raise its panic here.
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("watchdog: {name} did not finish within {limit:?}: the kernel hangs");
            std::process::abort();
        }
    }
}

/// Creates `dir` inside the kernel; an existing directory is fine.
pub fn mkdir_p(dir: &CStr) {
    match sys::mkdirat(lkl::CWD, dir, 0o755) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => panic!("mkdir {dir:?}: {e}"),
    }
}

/// Mounts procfs and sysfs inside the kernel once per process.
pub fn mount_proc_and_sys() {
    static MOUNTED: OnceLock<()> = OnceLock::new();
    MOUNTED.get_or_init(|| {
        kernel();
        // EBUSY: the disk code mounted it already.
        mkdir_p(c"/proc");
        match sys::mount(Some(c"proc"), c"/proc", Some(c"proc"), 0, None) {
            Ok(()) | Err(lkl::Errno::EBUSY) => {}
            Err(e) => panic!("mount proc: {e}"),
        }
        mkdir_p(c"/sys");
        match sys::mount(Some(c"sysfs"), c"/sys", Some(c"sysfs"), 0, None) {
            Ok(()) | Err(lkl::Errno::EBUSY) => {}
            Err(e) => panic!("mount sysfs: {e}"),
        }
    });
}

/// Reads a whole (small) file from inside the kernel.
pub fn read_file(path: &CStr) -> Vec<u8> {
    let fd = sys::openat(lkl::CWD, path, b::O_RDONLY as i32, 0)
        .unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sys::read(&fd, &mut buf).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
        if n == 0 {
            return data;
        }
        data.extend_from_slice(&buf[..n]);
    }
}
