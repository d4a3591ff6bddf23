//! Halting the kernel while other threads sit idle inside it, then leaving
//! the process: this file is its own process, so halt is final here.

mod common;

use std::time::Duration;

use common::{kernel, with_watchdog};
use lklfuse::lkl::{self, sys, Errno};

#[test]
fn halt_with_threads_blocked_in_the_kernel() {
    let k = kernel();
    with_watchdog("halt", Duration::from_secs(60), move || {
        let (rx, _tx) = sys::pipe2(0).expect("pipe");
        let rx = std::sync::Arc::new(rx);
        let blocked: Vec<_> = (0..3)
            .map(|_| {
                let rx = std::sync::Arc::clone(&rx);
                std::thread::spawn(move || {
                    let mut byte = [0u8; 1];
                    // Never returns: nobody writes, and the kernel is halted.
                    let _ = sys::read(&*rx, &mut byte);
                })
            })
            .collect();
        // A thread that used the kernel and went away, and one idle outside it.
        std::thread::spawn(|| sys::getpid().expect("getpid"))
            .join()
            .expect("short-lived");
        sys::getpid().expect("getpid");
        std::thread::sleep(Duration::from_millis(50));

        k.halt().expect("halt");
        assert!(!lkl::is_running());
        assert_eq!(sys::getpid().unwrap_err(), Errno::ESHUTDOWN);
        k.halt().expect("a second halt is a no-op");
        assert!(blocked.iter().all(|t| !t.is_finished()));
        // The blocked threads stay parked; the process exits normally.
    });
}
