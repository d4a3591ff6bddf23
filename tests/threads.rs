//! Many host threads in one kernel: each gets its own task, calls overlap
//! safely, and a thread blocked inside the kernel does not stall the others.
//!
//! This kernel is booted with `lkl_cpu_spin_ns=0`: threads waiting for the CPU
//! always sleep, never poll. Every other test binary runs the default, where
//! one waiter polls first, so both ways of waiting are exercised under load.

mod common;

use std::ffi::CString;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::with_watchdog;
use lklfuse::lkl::{self, bindings as b, sys, Errno};

/// The kernel of this test binary (see the module documentation).
fn kernel() {
    common::kernel_with("lkl_cpu_spin_ns=0");
}

const THREADS: usize = 8;
const SYSCALLS_PER_THREAD: usize = 10_000;

/// Totals one worker reports, checked against what it should have done.
#[derive(Default)]
struct Totals {
    syscalls: usize,
    bytes_written: usize,
    bytes_read: usize,
}

/// One worker: create/write/read/stat/rename/unlink in a private directory,
/// verifying every result, until it has made SYSCALLS_PER_THREAD calls.
fn mixed_syscalls(id: usize) -> Totals {
    let dir = CString::new(format!("/stress{id}")).unwrap();
    common::mkdir_p(&dir);
    let mut totals = Totals::default();
    let mut round = 0usize;
    while totals.syscalls < SYSCALLS_PER_THREAD {
        let file = CString::new(format!("/stress{id}/f{}", round % 5)).unwrap();
        let moved = CString::new(format!("/stress{id}/moved")).unwrap();
        let payload = format!("thread {id} round {round}");

        let flags = (b::O_CREAT | b::O_RDWR | b::O_TRUNC) as i32;
        let fd = sys::openat(lkl::CWD, &file, flags, 0o644).expect("create");
        totals.bytes_written += sys::write(&fd, payload.as_bytes()).expect("write");
        let mut back = [0u8; 64];
        let n = sys::pread64(&fd, &mut back, 0).expect("pread");
        assert_eq!(
            &back[..n],
            payload.as_bytes(),
            "thread {id} read back other data"
        );
        totals.bytes_read += n;
        sys::close(fd).expect("close");

        let st = sys::statx(lkl::CWD, &file, 0, b::STATX_BASIC_STATS).expect("statx");
        assert_eq!(st.size, payload.len() as u64);
        sys::renameat2(lkl::CWD, &file, lkl::CWD, &moved, 0).expect("rename");
        sys::unlinkat(lkl::CWD, &moved, 0).expect("unlink");
        totals.syscalls += 7;
        round += 1;
    }
    assert_eq!(
        sys::statx(
            lkl::CWD,
            &CString::new(format!("/stress{id}/moved")).unwrap(),
            0,
            0
        )
        .unwrap_err(),
        Errno::ENOENT
    );
    sys::unlinkat(lkl::CWD, &dir, b::AT_REMOVEDIR as i32).expect("rmdir (empty)");
    totals.syscalls += 2;
    totals
}

#[test]
fn eight_threads_of_mixed_syscalls() {
    kernel();
    let totals = with_watchdog("stress", Duration::from_secs(240), || {
        let workers: Vec<_> = (0..THREADS)
            .map(|id| std::thread::spawn(move || mixed_syscalls(id)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    assert_eq!(totals.len(), THREADS);
    for t in &totals {
        assert!(t.syscalls >= SYSCALLS_PER_THREAD);
        assert_eq!(t.bytes_written, t.bytes_read);
    }
}

#[test]
fn a_blocked_thread_does_not_stall_the_others() {
    kernel();
    with_watchdog("blocked", Duration::from_secs(120), || {
        let (rx, tx) = sys::pipe2(0).expect("pipe");
        let rx = Arc::new(rx);
        let started = Arc::new(Barrier::new(2));

        let reader = {
            let (rx, started) = (Arc::clone(&rx), Arc::clone(&started));
            std::thread::spawn(move || {
                started.wait();
                let mut byte = [0u8; 1];
                // Blocks inside the kernel until the others are done.
                let n = sys::read(&*rx, &mut byte).expect("read from pipe");
                (n, byte[0])
            })
        };
        started.wait();
        std::thread::sleep(Duration::from_millis(20));

        let others: Vec<_> = (0..7)
            .map(|id| {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        sys::getpid().expect("getpid");
                    }
                    sys::nanosleep(Duration::from_millis(5)).expect("sleep");
                    id
                })
            })
            .collect();
        for other in others {
            other.join().expect("other thread");
        }
        assert!(!reader.is_finished(), "the reader should still be blocked");

        sys::write(&tx, b"!").expect("wake the reader");
        assert_eq!(reader.join().expect("reader"), (1, b'!'));
    });
}
