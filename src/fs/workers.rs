//! What FUSE workers do between requests: busy polling, and parking the workers a serial
//! stream of requests does not need.
//!
//! Busy polling. A worker that has answered a request sleeps in `read(/dev/fuse)` until the
//! next one. Waking it costs the caller a cross-CPU wake-up, which on virtual machines is
//! tens of microseconds: several times what serving a `getattr` takes. Callers such as
//! `tar`, `cp` or `find` send their next request right after the answer, so one worker
//! instead keeps checking the device for a short window after answering; a request that
//! arrives meanwhile is read at once, and nobody has to be woken. The window costs CPU only
//! while requests keep coming: a window that ends with no request makes the next ones rarer
//! (skip 2, 4, ... up to [`MAX_SKIP`] answers), and only one worker polls at a time. A
//! forget has no answer but polls too: the host sends one right after answering an unlink,
//! just before the caller's next request. The other wake-up of each request, the caller's,
//! is what [`super::idle_poll`] and [`super::handoff`] make cheaper.
//!
//! Whether a polling worker yields its CPU at each check depends on that idle polling. Without
//! it (one CPU, or `idle_poll=0`) the caller is often woken on the worker's CPU, and the
//! yield lets it run at once instead of waiting for the window to end. With it, the caller is
//! woken on another CPU (a CPU running only an idle-poll spinner counts as idle), and a yield
//! would hand the worker's CPU to that CPU's spinner: the scheduler (EEVDF) pushes a yielding
//! task's deadline back by a whole time slice per yield, so after a few hundred checks even a
//! `SCHED_IDLE` task comes first, and the worker sat out up to the spinner's 50 µs between
//! two checks (traced: 31 µs before a waiting `getattr` was read). Not yielding there took
//! small-file create from 143-167 to 119-124 µs per file, read from 52-56 to 45-48 and
//! unlink from 30-38 to 26-28 (5,000 files, alternating runs).
//!
//! Parking. Every worker sleeping in `read(/dev/fuse)` is woken by a new request, in turn,
//! even when the polling worker takes it: with several workers a serial caller paid for a
//! wake-up per request anyway. So a worker that answers while another one already waits for
//! requests parks here instead, and only one worker waits on the device. More are let back
//! when they can help: the kernel here has one CPU, so a second request only makes progress
//! beside the first while the first waits, and what requests wait for is the disk. Each time
//! the kernel submits disk requests while every unparked worker is busy, one parked worker
//! goes back to the device. A parked worker on stand-by also checks every
//! [`STANDBY_CHECK`] whether all unparked workers have been busy since its last check (a
//! request waiting for something else than the disk), and whether the session has ended;
//! while no request is served it checks less and less often, down to every [`IDLE_CHECK`].
//! The session's end is normally seen at once: a worker thread leaves the session's loop
//! only then, and its exit releases every parked worker.
//! No request here waits for another request (locks stay on the host, FIFOs are host
//! pipes), so a parked worker is never needed to finish one.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::handoff;
use super::idle_poll::IdlePoll;

/// Most answers skipped after windows that saw no request.
const MAX_SKIP: u32 = 64;

/// How often a parked worker on stand-by checks for stuck workers and the session's end.
const STANDBY_CHECK: Duration = Duration::from_millis(20);

/// The longest stand-by check interval, reached while the mount is idle.
const IDLE_CHECK: Duration = Duration::from_millis(320);

thread_local! {
    /// The host request of the last forget this thread served (see [`Workers::after_forget`]).
    static LAST_FORGET: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Set on a worker thread's first request: the thread's exit ends parking.
    static CLOSE_ON_EXIT: RefCell<Option<CloseOnExit>> = const { RefCell::new(None) };
    /// Whether this thread serves a stream of reads that no other worker can help with (see
    /// [`in_order_reads`]).
    static IN_ORDER_READS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread, until the guard is dropped, as serving reads that are served one at
/// a time (a file's large reads, see `KernelFs::read_in_stream`). Its disk requests then
/// wake no parked worker (see [`Workers::io_submitted`]): another worker could not serve
/// the next of those reads any sooner, and waking one for each 1 MiB read made a
/// sequential read of a 512 MiB file slower (median of 8 alternating runs: 1.47 -> 1.56
/// GB/s with the host's caches dropped, 2.06 -> 2.13 GB/s with the image cached). Parked
/// workers still come back for other requests at the stand-by's next check.
pub(crate) fn in_order_reads() -> InOrderReads {
    IN_ORDER_READS.with(|flag| flag.set(true));
    InOrderReads(())
}

/// See [`in_order_reads`].
pub(crate) struct InOrderReads(());

impl Drop for InOrderReads {
    fn drop(&mut self) {
        IN_ORDER_READS.with(|flag| flag.set(false));
    }
}

struct CloseOnExit(Weak<Workers>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        if let Some(workers) = self.0.upgrade() {
            workers.close();
        }
    }
}

/// The workers of one session.
#[derive(Debug)]
pub struct Workers {
    /// This value's own `Arc`, for [`CLOSE_ON_EXIT`].
    me: Weak<Workers>,
    busy_poll: BusyPoll,
    /// Spinners keeping the CPUs awake during bursts of requests (see [`super::idle_poll`]).
    idle_poll: Option<IdlePoll>,
    readers: Mutex<Readers>,
    wake: Condvar,
    /// Copies of `Readers::parked` and `Readers::waiting` for the submit hook's quick check.
    parked: AtomicUsize,
    waiting: AtomicUsize,
}

#[derive(Debug, Default)]
struct Readers {
    /// Workers in the session's loop: waiting on the device, polling it, or on their way.
    waiting: usize,
    /// Workers serving a request.
    busy: usize,
    parked: usize,
    /// Parked workers told to go back to the device and not gone yet.
    released: usize,
    /// One parked worker does the timed checks.
    standby: bool,
    /// Requests started so far: whether busy workers make progress.
    started: u64,
    /// The stand-by's next check interval (zero before the first).
    check: Duration,
    /// The session has ended: nobody parks any more.
    closed: bool,
}

impl Workers {
    /// `threads` workers (all waiting on the device at first), busy polling for up to
    /// `busy_poll` after each answer, and keeping CPUs awake while requests come less than
    /// `idle_poll` apart (zero: off).
    pub fn new(threads: usize, busy_poll: Duration, idle_poll: Duration) -> Arc<Workers> {
        let idle_poll = IdlePoll::start(idle_poll);
        Arc::new_cyclic(|me| Workers {
            me: me.clone(),
            busy_poll: BusyPoll::new(busy_poll, idle_poll.is_none()),
            idle_poll,
            readers: Mutex::new(Readers {
                waiting: threads,
                ..Readers::default()
            }),
            wake: Condvar::new(),
            parked: AtomicUsize::new(0),
            waiting: AtomicUsize::new(threads),
        })
    }

    /// The session has ended: parked workers go back (to find the device closed) and no
    /// worker parks any more.
    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Names the FUSE device once the session has opened it (see [`BusyPoll::watch`]).
    pub fn watch(&self, device: BorrowedFd<'_>) {
        self.busy_poll.watch(device);
    }

    /// The kernel submitted disk requests: if every unparked worker is busy, one of them
    /// is about to wait for the disk, so a parked worker goes back to the device. Not for
    /// requests of a worker serving reads in order (see [`in_order_reads`]). Called on the
    /// thread that submitted them.
    pub fn io_submitted(&self) {
        if self.parked.load(Ordering::Relaxed) == 0
            || self.waiting.load(Ordering::Relaxed) > 0
            || IN_ORDER_READS.with(std::cell::Cell::get)
        {
            return;
        }
        let mut r = self.lock();
        if r.waiting == 0 && r.parked > r.released {
            r.released += 1;
            self.wake.notify_one();
        }
    }

    /// After a forget (which has no answer) from host request `request`: polls the device
    /// like after an answer, once per request. A batch of forgets calls this for each of its
    /// nodes; the rest of the batch waits at most one window. Forgets neither park the worker
    /// nor count as busy: they never wait for the disk.
    pub(crate) fn after_forget(&self, request: u64) {
        let first = LAST_FORGET.with(|last| last.replace(request) != request);
        if first {
            self.busy_poll.after_answer();
        }
    }

    /// Marks a worker busy with a request until the returned guard is dropped.
    pub(crate) fn serving(&self) -> Serving<'_> {
        CLOSE_ON_EXIT.with(|exit| {
            let mut exit = exit.borrow_mut();
            if exit.is_none() {
                *exit = Some(CloseOnExit(self.me.clone()));
                if let Some(idle_poll) = &self.idle_poll {
                    handoff::serve_through(idle_poll.mailboxes());
                }
            }
        });
        if let Some(idle_poll) = &self.idle_poll {
            idle_poll.request();
        }
        let mut r = self.lock();
        r.waiting = r.waiting.saturating_sub(1);
        r.busy += 1;
        r.started += 1;
        self.publish(&r);
        Serving(self)
    }

    fn lock(&self) -> MutexGuard<'_, Readers> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, r: &Readers) {
        self.parked.store(r.parked, Ordering::Relaxed);
        self.waiting.store(r.waiting, Ordering::Relaxed);
    }

    /// After an answer: back to the device (polling it first), or park while another
    /// worker waits there.
    fn after_answer(&self) {
        let mut r = self.lock();
        r.busy = r.busy.saturating_sub(1);
        // Requests queued on the device mean the worker waiting there has company to serve.
        if r.waiting > 0 && !r.closed && !self.busy_poll.request_waiting() {
            r = self.park(r);
        }
        r.waiting += 1;
        self.publish(&r);
        drop(r);
        self.busy_poll.after_answer();
    }

    /// Waits until released, stuck workers are found, or the session ends.
    fn park<'a>(&'a self, mut r: MutexGuard<'a, Readers>) -> MutexGuard<'a, Readers> {
        r.parked += 1;
        self.publish(&r);
        loop {
            if r.released > 0 {
                r.released -= 1;
                break;
            }
            if r.closed {
                break;
            }
            if r.standby {
                r = self.wake.wait(r).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            r.standby = true;
            let started = r.started;
            let check = r.check.max(STANDBY_CHECK);
            let (guard, wait) = self
                .wake
                .wait_timeout(r, check)
                .unwrap_or_else(PoisonError::into_inner);
            r = guard;
            r.standby = false;
            // Someone else may take the stand-by role while this worker decides.
            if r.parked > 1 {
                self.wake.notify_one();
            }
            if wait.timed_out() {
                if self.busy_poll.device_closed() {
                    r.closed = true;
                    self.wake.notify_all();
                    break;
                }
                let stuck = r.waiting == 0 && r.busy > 0 && r.started == started;
                if stuck {
                    break;
                }
                let idle = r.busy == 0 && r.started == started;
                r.check = if idle {
                    (check * 2).min(IDLE_CHECK)
                } else {
                    STANDBY_CHECK
                };
            }
        }
        r.parked -= 1;
        r
    }
}

/// Shared by all workers: the device to watch and the back-off state.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// The FUSE device, or -1 until the session has one.
    device: AtomicI32,
    /// Whether each check yields the CPU (see the module's comment).
    yields: bool,
    /// Set while one worker polls.
    polling: AtomicBool,
    /// Consecutive windows that ended without a request.
    misses: AtomicU32,
    /// Answers left before the next window.
    skip: AtomicU32,
}

impl BusyPoll {
    /// Polls for up to `window` after each answer, yielding the CPU at each check if
    /// `yields`; a zero window turns polling off.
    pub fn new(window: Duration, yields: bool) -> BusyPoll {
        BusyPoll {
            window,
            yields,
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

    /// The FUSE device, once the session has named it.
    fn device(&self) -> Option<RawFd> {
        Some(self.device.load(Ordering::Acquire)).filter(|fd| *fd >= 0)
    }

    /// Whether a request waits on the device now.
    fn request_waiting(&self) -> bool {
        self.device().is_some_and(|device| poll_now(device) != 0)
    }

    /// Whether the session is over: the device reports an error (unmounted, aborted).
    fn device_closed(&self) -> bool {
        self.device().is_some_and(|device| {
            poll_now(device) & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
        })
    }

    /// After an answer: returns once a request is waiting or the window has passed.
    pub fn after_answer(&self) {
        let Some(device) = self.device().filter(|_| !self.window.is_zero()) else {
            return;
        };
        if self.polling.swap(true, Ordering::Acquire) {
            return;
        }
        let skipping = self
            .skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !skipping {
            if request_within(device, self.window, self.yields) {
                self.misses.store(0, Ordering::Relaxed);
            } else {
                let misses = self
                    .misses
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                let skip = 1u32.checked_shl(misses).unwrap_or(MAX_SKIP).min(MAX_SKIP);
                self.skip.store(skip, Ordering::Relaxed);
            }
        }
        self.polling.store(false, Ordering::Release);
    }
}

/// What `device` reports for POLLIN right now, without sleeping: 0 if nothing, POLLERR
/// if poll(2) itself failed.
fn poll_now(device: RawFd) -> libc::c_short {
    let mut poll = libc::pollfd {
        fd: device,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `poll` is one valid pollfd for the duration of the call; a zero timeout never
    // sleeps. A descriptor closed meanwhile only yields POLLNVAL or an error.
    match unsafe { libc::poll(&mut poll, 1, 0) } {
        n if n < 0 => libc::POLLERR,
        _ => poll.revents,
    }
}

/// Whether `device` becomes readable within `window`, checking without sleeping, and
/// yielding the CPU between checks if `yields`.
fn request_within(device: RawFd, window: Duration, yields: bool) -> bool {
    let deadline = Instant::now() + window;
    loop {
        if poll_now(device) != 0 {
            // A request, or an error the worker's next read will report.
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        if yields {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Held while a request is served; its drop (after the answer) parks or polls the device.
pub(crate) struct Serving<'a>(&'a Workers);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.after_answer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::eventually;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// Two workers, both waiting on `rx` at first.
    fn two_workers(rx: &UnixStream) -> Arc<Workers> {
        let workers = Workers::new(2, Duration::ZERO, Duration::ZERO);
        workers.watch(rx.as_fd());
        workers
    }

    /// Serves one request on another thread; the flag is set once its guard's drop returns.
    fn serve_in_thread<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        workers: &'s Workers,
    ) -> (std::thread::ScopedJoinHandle<'s, ()>, Arc<AtomicBool>) {
        let back = Arc::new(AtomicBool::new(false));
        let flag = back.clone();
        let handle = scope.spawn(move || {
            drop(workers.serving());
            flag.store(true, Ordering::SeqCst);
        });
        (handle, back)
    }

    #[test]
    fn a_worker_parks_while_another_waits_and_disk_io_brings_it_back() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let workers = two_workers(&rx);
        std::thread::scope(|scope| {
            let (handle, back) = serve_in_thread(scope, &workers);
            assert!(eventually(|| workers.parked.load(Ordering::SeqCst) == 1));
            // The other worker is still waiting on the device: disk I/O changes nothing.
            workers.io_submitted();
            std::thread::sleep(Duration::from_millis(5));
            assert!(!back.load(Ordering::SeqCst));
            // It takes a request, which waits for the disk: the parked worker comes back,
            // unless that request is one of reads served in order, which it cannot help with.
            let other = workers.serving();
            let in_order = in_order_reads();
            workers.io_submitted();
            std::thread::sleep(Duration::from_millis(5));
            assert!(!back.load(Ordering::SeqCst));
            drop(in_order);
            workers.io_submitted();
            handle.join().unwrap();
            assert!(back.load(Ordering::SeqCst));
            // With a request queued the last answer goes back too, rather than parking.
            tx.write_all(b"x").unwrap();
            drop(other);
        });
        assert_eq!(workers.parked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_parked_worker_comes_back_when_busy_workers_make_no_progress() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let workers = two_workers(&rx);
        std::thread::scope(|scope| {
            let (handle, _) = serve_in_thread(scope, &workers);
            assert!(eventually(|| workers.parked.load(Ordering::SeqCst) == 1));
            let stuck = workers.serving();
            let start = Instant::now();
            handle.join().unwrap();
            assert!(start.elapsed() >= STANDBY_CHECK / 2);
            tx.write_all(b"x").unwrap();
            drop(stuck);
        });
    }

    #[test]
    fn parked_workers_leave_when_the_session_ends_and_queued_requests_keep_them() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let workers = two_workers(&rx);
        std::thread::scope(|scope| {
            let (handle, _) = serve_in_thread(scope, &workers);
            assert!(eventually(|| workers.parked.load(Ordering::SeqCst) == 1));
            drop(tx);
            handle.join().unwrap();
        });
        // A worker thread leaving the session's loop releases parked workers at once.
        let (mut tx3, rx3) = UnixStream::pair().unwrap();
        let workers = two_workers(&rx3);
        std::thread::scope(|scope| {
            let (handle, _) = serve_in_thread(scope, &workers);
            assert!(eventually(|| workers.parked.load(Ordering::SeqCst) == 1));
            let start = Instant::now();
            tx3.write_all(b"x").unwrap();
            scope.spawn(|| drop(workers.serving())).join().unwrap();
            handle.join().unwrap();
            assert!(start.elapsed() < IDLE_CHECK);
        });
        // Something queued: the answering worker goes back instead of parking.
        let (tx2, rx2) = UnixStream::pair().unwrap();
        tx = tx2;
        tx.write_all(b"x").unwrap();
        let workers = two_workers(&rx2);
        drop(workers.serving());
        assert_eq!(workers.parked.load(Ordering::SeqCst), 0);
        assert_eq!(workers.waiting.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_forget_polls_once_per_host_request_and_never_parks() {
        let (_tx, rx) = UnixStream::pair().unwrap();
        let workers = Workers::new(2, Duration::from_micros(200), Duration::ZERO);
        workers.watch(rx.as_fd());
        // The first node of forget request 7 polls a window that sees nothing (a miss);
        // the batch's other nodes do not poll again.
        workers.after_forget(7);
        assert_eq!(workers.busy_poll.misses.load(Ordering::Relaxed), 1);
        workers.after_forget(7);
        workers.after_forget(7);
        assert_eq!(workers.busy_poll.skip.load(Ordering::Relaxed), 2);
        // The next request polls (here: skips, after the miss).
        workers.after_forget(8);
        assert_eq!(workers.busy_poll.skip.load(Ordering::Relaxed), 1);
        assert_eq!(workers.parked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn returns_at_once_when_something_is_waiting() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        tx.write_all(b"x").unwrap();
        let poll = BusyPoll::new(Duration::from_secs(5), true);
        poll.watch(rx.as_fd());
        let start = Instant::now();
        poll.after_answer();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(poll.misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn empty_windows_make_polling_rarer_and_a_hit_resets() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let poll = BusyPoll::new(Duration::from_micros(200), true);
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
    fn a_poll_that_never_yields_still_sees_requests_and_ends_with_its_window() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let poll = BusyPoll::new(Duration::from_micros(200), false);
        poll.watch(rx.as_fd());
        let start = Instant::now();
        poll.after_answer();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(poll.misses.load(Ordering::Relaxed), 1);
        poll.skip.store(0, Ordering::Relaxed);
        tx.write_all(b"x").unwrap();
        poll.after_answer();
        assert_eq!(poll.misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn polling_workers_yield_their_cpu_only_without_idle_polling() {
        let window = Duration::from_micros(50);
        let alone = Workers::new(2, window, Duration::ZERO);
        assert!(alone.busy_poll.yields);
        let spun = Workers::new(2, window, Duration::from_millis(2));
        let cpus = crate::fs::idle_poll::allowed_cpus().len();
        assert_eq!(spun.idle_poll.is_some(), cpus >= 2);
        assert_eq!(spun.busy_poll.yields, cpus < 2);
    }

    #[test]
    fn skips_grow_to_a_limit() {
        let (_tx, rx) = UnixStream::pair().unwrap();
        let poll = BusyPoll::new(Duration::from_micros(1), true);
        poll.watch(rx.as_fd());
        poll.misses.store(40, Ordering::Relaxed);
        poll.after_answer();
        assert_eq!(poll.skip.load(Ordering::Relaxed), MAX_SKIP);
    }

    #[test]
    fn off_without_a_window_or_a_device() {
        let poll = BusyPoll::new(Duration::from_secs(5), true);
        let start = Instant::now();
        poll.after_answer();
        let (_tx, rx) = UnixStream::pair().unwrap();
        let off = BusyPoll::new(Duration::ZERO, true);
        off.watch(rx.as_fd());
        off.after_answer();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(poll.misses.load(Ordering::Relaxed), 0);
        assert_eq!(off.misses.load(Ordering::Relaxed), 0);
    }
}
