//! Busy polling of the FUSE device between requests.
//!
//! A worker that has answered a request sleeps in `read(/dev/fuse)` until the next one.
//! Waking it costs the caller a cross-CPU wake-up, which on virtual machines is tens of
//! microseconds: several times what serving a `getattr` takes. Callers such as `tar`, `cp`
//! or `find` send their next request right after the answer, so one worker instead keeps
//! checking the device for a short window after answering; a request that arrives
//! meanwhile is read at once, and nobody has to be woken.
//!
//! The window costs CPU only while requests keep coming: the first window that ends with
//! no request makes the next ones rarer (skip 2, 4, ... up to [`MAX_SKIP`] answers), and
//! only one worker polls at a time. Each check yields the host CPU, so a caller that shares
//! the worker's CPU runs at once.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Most answers skipped after windows that saw no request.
const MAX_SKIP: u32 = 64;

/// Shared by all workers: the device to watch and the back-off state.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// The FUSE device, or -1 until the session has one.
    device: AtomicI32,
    /// Set while one worker polls.
    polling: AtomicBool,
    /// Consecutive windows that ended without a request.
    misses: AtomicU32,
    /// Answers left before the next window.
    skip: AtomicU32,
}

impl BusyPoll {
    /// Polls for up to `window` after each answer; a zero window turns polling off.
    pub fn new(window: Duration) -> BusyPoll {
        BusyPoll {
            window,
            device: AtomicI32::new(-1),
            polling: AtomicBool::new(false),
            misses: AtomicU32::new(0),
            skip: AtomicU32::new(0),
        }
    }

    /// Names the FUSE device once the session has opened it. The descriptor must stay open
    /// while requests are served (the session owns it and outlives every request).
    pub fn watch(&self, device: BorrowedFd<'_>) {
        self.device.store(device.as_raw_fd(), Ordering::Release);
    }

    /// After an answer: returns once a request is waiting or the window has passed.
    pub fn after_answer(&self) {
        let device = self.device.load(Ordering::Acquire);
        if self.window.is_zero() || device < 0 {
            return;
        }
        if self.polling.swap(true, Ordering::Acquire) {
            return;
        }
        let skipping = self
            .skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !skipping {
            if request_within(device, self.window) {
                self.misses.store(0, Ordering::Relaxed);
            } else {
                let misses = self.misses.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                let skip = 1u32.checked_shl(misses).unwrap_or(MAX_SKIP).min(MAX_SKIP);
                self.skip.store(skip, Ordering::Relaxed);
            }
        }
        self.polling.store(false, Ordering::Release);
    }
}

/// Whether `device` becomes readable within `window`, checking without sleeping.
fn request_within(device: RawFd, window: Duration) -> bool {
    let deadline = Instant::now() + window;
    loop {
        let mut poll = libc::pollfd {
            fd: device,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` is one valid pollfd for the duration of the call; a zero timeout
        // never sleeps. A descriptor closed meanwhile only yields POLLNVAL or an error.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        if ready != 0 {
            // A request, or an error the worker's next read will report.
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Held while a request is served; its drop (after the answer) polls the device.
pub(crate) struct Serving<'a>(pub(crate) &'a BusyPoll);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.after_answer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn returns_at_once_when_something_is_waiting() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        tx.write_all(b"x").unwrap();
        let poll = BusyPoll::new(Duration::from_secs(5));
        poll.watch(rx.as_fd());
        let start = Instant::now();
        poll.after_answer();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(poll.misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn empty_windows_make_polling_rarer_and_a_hit_resets() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let poll = BusyPoll::new(Duration::from_micros(200));
        poll.watch(rx.as_fd());
        poll.after_answer();
        assert_eq!(poll.misses.load(Ordering::Relaxed), 1);
        assert_eq!(poll.skip.load(Ordering::Relaxed), 2);
        // The next two answers skip the window even though nothing arrives.
        poll.after_answer();
        poll.after_answer();
        assert_eq!(poll.misses.load(Ordering::Relaxed), 1);
        poll.after_answer();
        assert_eq!(poll.misses.load(Ordering::Relaxed), 2);
        assert_eq!(poll.skip.load(Ordering::Relaxed), 4);
        for _ in 0..4 {
            poll.after_answer();
        }
        tx.write_all(b"x").unwrap();
        poll.after_answer();
        assert_eq!(poll.misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn skips_grow_to_a_limit() {
        let (_tx, rx) = UnixStream::pair().unwrap();
        let poll = BusyPoll::new(Duration::from_micros(1));
        poll.watch(rx.as_fd());
        poll.misses.store(40, Ordering::Relaxed);
        poll.after_answer();
        assert_eq!(poll.skip.load(Ordering::Relaxed), MAX_SKIP);
    }

    #[test]
    fn off_without_a_window_or_a_device() {
        let poll = BusyPoll::new(Duration::from_secs(5));
        let start = Instant::now();
        poll.after_answer();
        let (_tx, rx) = UnixStream::pair().unwrap();
        let off = BusyPoll::new(Duration::ZERO);
        off.watch(rx.as_fd());
        off.after_answer();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(poll.misses.load(Ordering::Relaxed), 0);
        assert_eq!(off.misses.load(Ordering::Relaxed), 0);
    }
}
