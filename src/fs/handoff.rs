//! Answering requests from the caller's CPU.
//!
//! A FUSE caller sleeps until its answer is written to the device, and the write wakes it.
//! When the worker that writes runs on another CPU than the caller slept on, the wake-up
//! is a cross-CPU one: on these virtual machines the waker's reschedule interrupt traps to
//! the hypervisor (traced: 7 µs in `try_to_wake_up`) and arrives 4-5 µs later, against 3 µs
//! for a wake-up on the waker's own CPU. Busy-polling workers (see [`super::workers`]) keep
//! their own CPU, so a serial caller sleeps on the other one, and nearly every answer paid
//! that price.
//!
//! While requests come in bursts, each CPU the caller may sleep on runs one of the
//! [`super::idle_poll`] spinners, and a spinner runs only while its CPU has nothing else to
//! do. So a worker hands a small answer to the spinner of another CPU instead of writing it
//! itself: that spinner writes it, and the caller is woken on the CPU it slept on, where it
//! preempts the spinner (`SCHED_IDLE`) at once. Measured on two CPUs, per request: an
//! `ioctl` the daemon refuses at once went from 22 to 10 µs, a one-byte write from 13-21 to
//! 8.3 µs; per small file, create from 121 to 78-82 µs, `stat` from 20 to 12.
//!
//! Which CPU: the spinner must be running (it counts the time in a heartbeat), and among
//! several the one that came back to its CPU last, since a CPU goes back to its spinner
//! when its task sleeps, and the caller has just gone to sleep. With two CPUs that is simply
//! the other one. A wrong guess costs what writing the answer did before: the chosen spinner
//! wakes the caller across CPUs instead of the worker.
//!
//! A spinner that does not take the answer within [`TAKE_WAIT`] (its CPU got busy) gets it
//! taken back, and the worker writes it itself. Once taken, the worker goes back to its
//! requests at once: the caller woken by the write preempts the spinner, often before the
//! write's system call has even returned to it, and waiting for the spinner to come back
//! would keep the worker from the caller's next request. So the worker reports the answer
//! as written; fuser only logs a failed answer anyway (the caller was interrupted, or the
//! session ended), and the spinner logs it the same way. The spinner writes through its own
//! duplicate of the worker's device, so the descriptor cannot be closed, or its number
//! reused, under it. Each mailbox has [`SLOTS`] slots: the next answer can be posted while
//! the spinner has not yet come back to mark the last one done.
//!
//! How answers get here: fuser writes each answer with one `writev(2)` on its session's
//! device, from the thread that served the request, and offers no other way in (its
//! sender is private to it). The daemon's binary defines `writev`
//! (see `src/bin/lklfuse.rs`), which the program's own calls resolve to, and passes every
//! call to [`writev`]. On a thread that serves requests, a call on the device it reads, with
//! an answer that fits a slot, is handed off; everything else is passed to the system call
//! unchanged.
//!
//! The one cost: a spinner runs at `SCHED_IDLE`, so if a busy task takes its CPU between
//! taking an answer and writing it, the answer waits until that CPU is free again.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The largest answer handed off: a 8 KiB read and its header. Larger answers take longer to
/// copy than the wake-up saves, and come from requests that take longer anyway.
pub const SLOT_BYTES: usize = 8 * 1024 + 64;

/// Answers a mailbox holds at once.
pub const SLOTS: usize = 2;

/// How long a worker waits for a spinner to take its answer before writing it itself.
pub const TAKE_WAIT: Duration = Duration::from_micros(3);

/// A spinner whose heartbeat is older than this, in microseconds, is off its CPU.
const FRESH_US: u64 = 5;

/// A heartbeat gap longer than this, in microseconds, means the spinner was off its CPU.
const RESUME_GAP_US: u64 = 3;

/// A spinner off its CPU for longer than this, in microseconds, is not waited for: a serial
/// caller runs for less between two requests, so its CPU is busy with something else (other
/// callers, say), and waiting [`TAKE_WAIT`] for the spinner would only delay the worker.
const OFF_CPU_LIMIT_US: u64 = 100;

/// Size of a FUSE answer's header (`fuse_out_header`: length, error, request).
const OUT_HEADER_BYTES: usize = 16;

/// The device numbers of `/dev/fuse` (misc major 10, minor 229).
const FUSE_DEVICE: (u32, u32) = (10, 229);

/// Most parts of one answer (fuser uses two or three).
const MAX_PARTS: usize = 8;

/// A slot's state is a ticket (bumped by every worker that fills the slot) and a phase, so
/// that a worker taking its answer back cannot take a later answer posted in the same slot.
const PHASE_BITS: u32 = 8;
const EMPTY: u64 = 0;
const FILLING: u64 = 1;
const POSTED: u64 = 2;
const SENDING: u64 = 3;

fn phase(state: u64) -> u64 {
    state & ((1 << PHASE_BITS) - 1)
}

fn with_phase(state: u64, phase: u64) -> u64 {
    (state & !((1 << PHASE_BITS) - 1)) | phase
}

/// Answers written by spinners and by workers themselves since the start (all sessions).
static HANDED_OFF: AtomicU64 = AtomicU64::new(0);
static WRITTEN_BY_WORKERS: AtomicU64 = AtomicU64::new(0);

/// How many answers spinners wrote, and how many the serving workers wrote themselves
/// (answers larger than a slot, or with no spinner free to take them).
pub fn counts() -> (u64, u64) {
    (
        HANDED_OFF.load(Ordering::Relaxed),
        WRITTEN_BY_WORKERS.load(Ordering::Relaxed),
    )
}

/// One answer on its way.
#[repr(align(128))]
struct Slot {
    state: AtomicU64,
    len: AtomicUsize,
    /// The device to write to: set by the worker holding FILLING, taken by the spinner
    /// holding SENDING.
    device: UnsafeCell<Option<Arc<OwnedFd>>>,
    /// Written by the worker holding FILLING, read by the spinner holding SENDING.
    answer: UnsafeCell<[u8; SLOT_BYTES]>,
}

// SAFETY: `device` and `answer` are only accessed by the one thread the state gives them
// to: the worker that moved the slot to FILLING, until it stores POSTED (Release) or EMPTY,
// then the spinner that moved it from POSTED to SENDING (Acquire), until it stores EMPTY
// (Release). A worker taking its answer back moves POSTED to FILLING again first.
unsafe impl Sync for Slot {}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: AtomicU64::new(EMPTY),
            len: AtomicUsize::new(0),
            device: UnsafeCell::new(None),
            answer: UnsafeCell::new([0; SLOT_BYTES]),
        }
    }

    /// The spinner's side: writes the answer posted here, if any; whether there was one.
    fn deliver(&self) -> bool {
        let state = self.state.load(Ordering::Relaxed);
        if phase(state) != POSTED
            || self
                .state
                .compare_exchange(
                    state,
                    with_phase(state, SENDING),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        let len = self.len.load(Ordering::Relaxed);
        // SAFETY: SENDING gives this thread `device` and `answer` (see `unsafe impl Sync`).
        let device = unsafe { (*self.device.get()).take() };
        if let Some(device) = device {
            // SAFETY: `answer` holds `len` bytes (at most SLOT_BYTES, checked when posted);
            // `device` is an open descriptor this slot holds a reference to.
            let written = unsafe { libc::write(device.as_raw_fd(), self.answer.get().cast(), len) };
            if written < 0 {
                tracing::debug!(
                    "answer to a FUSE request not written: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        self.state
            .store(with_phase(state, EMPTY), Ordering::Release);
        true
    }

    /// The worker's side: has a spinner write `parts` (one answer, at most SLOT_BYTES) to
    /// `device`. Whether it was taken; if not, nothing was written.
    fn send(&self, device: &Arc<OwnedFd>, parts: &[&[u8]]) -> bool {
        let Some(posted) = self.post(device, parts) else {
            return false;
        };
        let since = Instant::now();
        while self.state.load(Ordering::Acquire) == posted {
            if since.elapsed() >= TAKE_WAIT && self.take_back(posted) {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }

    /// Posts `parts` for `device` if the slot is free: the state that marks it posted.
    fn post(&self, device: &Arc<OwnedFd>, parts: &[&[u8]]) -> Option<u64> {
        let state = self.state.load(Ordering::Relaxed);
        if phase(state) != EMPTY {
            return None;
        }
        let filling = with_phase(state.wrapping_add(1 << PHASE_BITS), FILLING);
        self.state
            .compare_exchange(state, filling, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: FILLING gives this thread `device` and `answer` (see `unsafe impl Sync`).
        let answer = unsafe { &mut *self.answer.get() };
        let mut at = 0;
        for part in parts {
            answer[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        // SAFETY: as above.
        unsafe { *self.device.get() = Some(device.clone()) };
        self.len.store(at, Ordering::Relaxed);
        let posted = with_phase(filling, POSTED);
        self.state.store(posted, Ordering::Release);
        Some(posted)
    }

    /// Takes back the answer posted as `posted` if no spinner has taken it; whether it did.
    /// The ticket in `posted` keeps it from taking a later answer posted in this slot.
    fn take_back(&self, posted: u64) -> bool {
        let filling = with_phase(posted, FILLING);
        if self
            .state
            .compare_exchange(posted, filling, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SAFETY: FILLING again: this thread has `device` back.
        unsafe { *self.device.get() = None };
        self.state
            .store(with_phase(filling, EMPTY), Ordering::Release);
        true
    }
}

/// One spinner's mailbox.
#[repr(align(128))]
pub struct Mailbox {
    /// The spinner's CPU.
    cpu: usize,
    /// Written by the spinner only, on a line of their own: workers read them to choose.
    beat: Heartbeat,
    slots: [Slot; SLOTS],
}

#[repr(align(128))]
#[derive(Default)]
struct Heartbeat {
    /// When the spinner last checked in, in microseconds of the [`Mailboxes`] clock; zero
    /// while it does not spin.
    last_us: AtomicU64,
    /// When it last came back to its CPU after being off it.
    resumed_us: AtomicU64,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    fn new(cpu: usize) -> Mailbox {
        Mailbox {
            cpu,
            beat: Heartbeat::default(),
            slots: std::array::from_fn(|_| Slot::new()),
        }
    }

    /// The spinner's side: writes the answers posted here; whether there were any.
    pub fn deliver(&self) -> bool {
        let mut delivered = false;
        for slot in &self.slots {
            delivered |= slot.deliver();
        }
        delivered
    }

    /// The spinner's side: it is on its CPU at `now_us`; `previous_us` was its last check.
    pub fn heartbeat(&self, now_us: u64, previous_us: u64) {
        if now_us.saturating_sub(previous_us) > RESUME_GAP_US {
            self.beat.resumed_us.store(now_us, Ordering::Relaxed);
        }
        self.beat.last_us.store(now_us, Ordering::Relaxed);
    }

    /// The spinner's side: it stops spinning (sleeps, yields or ends).
    pub fn stopped(&self) {
        self.beat.last_us.store(0, Ordering::Relaxed);
    }

    /// Whether the spinner spins, and was on its CPU less than OFF_CPU_LIMIT_US ago.
    fn spinning_at(&self, now_us: u64) -> bool {
        let last = self.beat.last_us.load(Ordering::Relaxed);
        last != 0 && now_us.saturating_sub(last) <= OFF_CPU_LIMIT_US
    }

    fn running_at(&self, now_us: u64) -> bool {
        let last = self.beat.last_us.load(Ordering::Relaxed);
        last != 0 && now_us.saturating_sub(last) <= FRESH_US
    }

    /// The worker's side: whether a free slot took `parts` (one answer) for `device`.
    fn send(&self, device: &Arc<OwnedFd>, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        len <= SLOT_BYTES && self.slots.iter().any(|slot| slot.send(device, parts))
    }
}

/// The mailboxes of one set of spinners, one per CPU, on one clock.
#[derive(Debug)]
pub struct Mailboxes {
    origin: Instant,
    boxes: Vec<Mailbox>,
}

impl Mailboxes {
    /// A mailbox for each of `cpus`, timed from `origin` (the spinners' clock).
    pub fn new(cpus: &[usize], origin: Instant) -> Mailboxes {
        Mailboxes {
            origin,
            boxes: cpus.iter().map(|&cpu| Mailbox::new(cpu)).collect(),
        }
    }

    /// The mailbox of the `index`-th CPU given to [`Mailboxes::new`].
    pub fn get(&self, index: usize) -> Option<&Mailbox> {
        self.boxes.get(index)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The mailbox to hand an answer to at `now_us`, from a worker on `own_cpu`: that of a
    /// spinner on another CPU, one running now if any, and among those the one that came
    /// back to its CPU last. A spinner off its CPU right now may be about to come back (its
    /// CPU's task, the caller, has just gone to sleep), unless it has been off for long.
    fn choose(&self, own_cpu: usize, now: u64) -> Option<&Mailbox> {
        self.boxes
            .iter()
            .filter(|m| m.cpu != own_cpu && m.spinning_at(now))
            .max_by_key(|m| (m.running_at(now), m.beat.resumed_us.load(Ordering::Relaxed)))
    }

    /// Whether another CPU's spinner took `parts` (one answer) for `device`.
    fn send(&self, own_cpu: usize, device: &Arc<OwnedFd>, parts: &[&[u8]]) -> bool {
        self.choose(own_cpu, self.now_us())
            .is_some_and(|mailbox| mailbox.send(device, parts))
    }
}

/// What a thread that serves requests knows for [`writev`].
struct Route {
    mailboxes: Weak<Mailboxes>,
    /// The FUSE device this thread answers on and a duplicate of it for the spinners, once
    /// one of its writes showed it.
    device: Option<(RawFd, Arc<OwnedFd>)>,
}

thread_local! {
    static ROUTE: RefCell<Option<Route>> = const { RefCell::new(None) };
    /// Set while answering a request nobody waits for (see [`nobody_waits`]).
    static NOBODY_WAITS: Cell<bool> = const { Cell::new(false) };
}

/// While the returned guard lives, answers of this thread are written by the thread itself:
/// they answer requests the caller does not wait for (`release`), so the caller may well be
/// running, its CPU's spinner off it, and waiting for that spinner would only delay the
/// worker's next request.
pub fn nobody_waits() -> NobodyWaits {
    NOBODY_WAITS.with(|flag| flag.set(true));
    NobodyWaits(())
}

/// See [`nobody_waits`].
#[must_use = "answers go through spinners again once this is dropped"]
pub struct NobodyWaits(());

impl Drop for NobodyWaits {
    fn drop(&mut self) {
        NOBODY_WAITS.with(|flag| flag.set(false));
    }
}

/// Marks the calling thread as one that serves requests, its answers to go through
/// `mailboxes` (once per thread; later calls change nothing).
pub fn serve_through(mailboxes: &Arc<Mailboxes>) {
    ROUTE.with(|route| {
        let mut route = route.borrow_mut();
        if route.is_none() {
            *route = Some(Route {
                mailboxes: Arc::downgrade(mailboxes),
                device: None,
            });
        }
    });
}

/// `writev(2)`, but a FUSE answer written by a thread that serves requests is written by a
/// spinner on another CPU when one takes it (see the module's comment).
///
/// # Safety
/// The same as for `writev(2)`: `iov` points to `iovcnt` valid `iovec`s, each describing
/// readable memory.
pub unsafe fn writev(fd: RawFd, iov: *const libc::iovec, iovcnt: libc::c_int) -> isize {
    // SAFETY: the caller vouches for `iov` and `iovcnt`.
    if let Some(written) = unsafe { hand_off(fd, iov, iovcnt) } {
        return written;
    }
    // SAFETY: as above; the arguments are passed to the system call unchanged.
    unsafe { libc::syscall(libc::SYS_writev, fd, iov, iovcnt) as isize }
}

/// If this thread serves requests, `fd` is its device, `iov` holds one answer and a spinner
/// took it: the answer's length.
///
/// # Safety
/// As for [`writev`].
unsafe fn hand_off(fd: RawFd, iov: *const libc::iovec, iovcnt: libc::c_int) -> Option<isize> {
    if NOBODY_WAITS.try_with(Cell::get).unwrap_or(true) {
        return None;
    }
    let count = usize::try_from(iovcnt)
        .ok()
        .filter(|&n| n > 0 && n <= MAX_PARTS)?;
    // SAFETY: the caller vouches for `count` iovecs at `iov`.
    let iovecs = unsafe { std::slice::from_raw_parts(iov, count) };
    let mut parts = [&[][..]; MAX_PARTS];
    for (part, v) in parts.iter_mut().zip(iovecs) {
        // SAFETY: each iovec describes readable memory, alive for this call.
        *part = unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) };
    }
    let parts = &parts[..count];
    if !is_answer(parts) {
        return None;
    }
    let (mailboxes, device) = ROUTE
        .try_with(|route| {
            let mut route = route.borrow_mut();
            let route = route.as_mut()?;
            Some((route.mailboxes.upgrade()?, route.device_of(fd)?))
        })
        .ok()??;
    // SAFETY: sched_getcpu has no arguments and no preconditions.
    let own_cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(usize::MAX);
    if !mailboxes.send(own_cpu, &device, parts) {
        WRITTEN_BY_WORKERS.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    HANDED_OFF.fetch_add(1, Ordering::Relaxed);
    parts.iter().map(|p| p.len()).sum::<usize>().try_into().ok()
}

impl Route {
    /// The duplicate of `fd` for spinners, if `fd` is the FUSE device this thread answers
    /// on (found out, and duplicated, on its first answer).
    fn device_of(&mut self, fd: RawFd) -> Option<Arc<OwnedFd>> {
        match &self.device {
            Some((known, device)) => (*known == fd).then(|| device.clone()),
            None => {
                if !is_fuse_device(fd) {
                    return None;
                }
                // SAFETY: F_DUPFD_CLOEXEC on an open descriptor has no memory effects.
                let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if copy < 0 {
                    return None;
                }
                // SAFETY: `copy` was just opened and is owned by nobody else.
                let device = Arc::new(unsafe { OwnedFd::from_raw_fd(copy) });
                self.device = Some((fd, device.clone()));
                Some(device)
            }
        }
    }
}

/// Whether `parts` hold one FUSE answer: a header whose length is the total and whose
/// request is not zero (zero marks notifications, whose result the sender acts on). Its size
/// is not checked here.
fn is_answer(parts: &[&[u8]]) -> bool {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let Some(header) = parts.first().and_then(|p| p.get(..OUT_HEADER_BYTES)) else {
        return false;
    };
    let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
    let unique = u64::from_ne_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    usize::try_from(len).is_ok_and(|len| len == total) && unique != 0
}

/// Whether `fd` is a FUSE device.
fn is_fuse_device(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable stat; a bad `fd` only makes fstat fail.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && (libc::major(st.st_rdev), libc::minor(st.st_rdev)) == FUSE_DEVICE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::AtomicBool;

    /// A pipe: the read end, and the write end as a device to answer on.
    fn pipe() -> (std::fs::File, Arc<OwnedFd>) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                Arc::new(OwnedFd::from_raw_fd(fds[1])),
            )
        }
    }

    /// A FUSE answer: header for request `unique`, then `body`.
    fn answer(unique: u64, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(OUT_HEADER_BYTES + body.len()).unwrap();
        let mut bytes = len.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&0i32.to_ne_bytes());
        bytes.extend_from_slice(&unique.to_ne_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    /// Runs a spinner for mailbox 0 (heartbeat and delivery) until `stop` is set.
    fn spinner<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        mailboxes: &'s Mailboxes,
        stop: &'s AtomicBool,
    ) {
        scope.spawn(move || {
            let mailbox = mailboxes.get(0).unwrap();
            let mut last = mailboxes.now_us();
            while !stop.load(Ordering::Relaxed) {
                mailbox.deliver();
                let now = mailboxes.now_us();
                mailbox.heartbeat(now, last);
                last = now;
            }
            mailbox.stopped();
        });
    }

    /// Sends until the spinner takes it: a busy test machine may keep it off its CPU.
    fn send_until_taken(mailboxes: &Mailboxes, device: &Arc<OwnedFd>, parts: &[&[u8]]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if mailboxes.send(usize::MAX, device, parts) {
                return true;
            }
        }
        false
    }

    /// No slot kept `device`, and nothing more reached the pipe.
    fn assert_nothing_more_written(mut read_end: std::fs::File, device: Arc<OwnedFd>) {
        assert_eq!(Arc::strong_count(&device), 1);
        drop(device);
        let mut rest = Vec::new();
        read_end.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{} bytes more", rest.len());
    }

    fn eventually_running(mailboxes: &Mailboxes) -> bool {
        crate::fs::eventually(|| mailboxes.get(0).unwrap().running_at(mailboxes.now_us()))
    }

    #[test]
    fn a_running_spinner_writes_each_answer_whole_and_in_order() {
        let mailboxes = Mailboxes::new(&[7], Instant::now());
        let (mut read_end, device) = pipe();
        let stop = AtomicBool::new(false);
        let answers: Vec<Vec<u8>> = (1..=50u8)
            .map(|n| answer(u64::from(n), &vec![n; 4096]))
            .collect();
        std::thread::scope(|scope| {
            spinner(scope, &mailboxes, &stop);
            assert!(eventually_running(&mailboxes));
            for bytes in &answers {
                // Split like fuser splits an answer: header, then the data.
                let parts = [&bytes[..OUT_HEADER_BYTES], &bytes[OUT_HEADER_BYTES..]];
                assert!(send_until_taken(&mailboxes, &device, &parts));
                let mut got = vec![0; bytes.len()];
                read_end.read_exact(&mut got).unwrap();
                assert_eq!(&got, bytes);
            }
            stop.store(true, Ordering::Relaxed);
        });
        // The spinner held the device only while writing.
        assert_eq!(Arc::strong_count(&device), 1);
        let slots = &mailboxes.get(0).unwrap().slots;
        assert!(slots
            .iter()
            .all(|s| phase(s.state.load(Ordering::Relaxed)) == EMPTY));
    }

    #[test]
    fn no_spinner_spinning_or_only_one_on_the_senders_cpu_means_the_worker_writes() {
        let mailboxes = Mailboxes::new(&[3], Instant::now());
        let (_read_end, device) = pipe();
        let bytes = answer(1, b"x");
        // Never started: no heartbeat.
        assert!(!mailboxes.send(0, &device, &[&bytes]));
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            spinner(scope, &mailboxes, &stop);
            assert!(eventually_running(&mailboxes));
            // The sender runs on CPU 3 itself: the caller is not asleep there.
            assert!(mailboxes.choose(3, mailboxes.now_us()).is_none());
            assert!(!mailboxes.send(3, &device, &[&bytes]));
            stop.store(true, Ordering::Relaxed);
        });
        assert!(mailboxes.choose(0, mailboxes.now_us()).is_none());
    }

    #[test]
    fn an_answer_not_taken_in_time_is_taken_back_unwritten() {
        let mailboxes = Mailboxes::new(&[5], Instant::now());
        let mailbox = mailboxes.get(0).unwrap();
        let (read_end, device) = pipe();
        let bytes = answer(9, b"late");
        // Nobody delivers.
        let posted = Instant::now();
        assert!(!mailbox.send(&device, &[&bytes]));
        assert!(posted.elapsed() >= TAKE_WAIT);
        for slot in &mailbox.slots {
            assert_eq!(phase(slot.state.load(Ordering::Relaxed)), EMPTY);
        }
        assert_nothing_more_written(read_end, device);
    }

    #[test]
    fn taking_back_an_answer_already_sent_leaves_the_next_one_in_the_slot() {
        let slot = Slot::new();
        let (mut read_end, device) = pipe();
        let (first, second) = (answer(1, b"first"), answer(2, b"second"));
        let posted_first = slot.post(&device, &[&first]).unwrap();
        assert!(slot.deliver());
        // The first worker looks again only after a second one used the slot.
        let posted_second = slot.post(&device, &[&second]).unwrap();
        assert_ne!(posted_first, posted_second, "each fill has its own ticket");
        assert!(!slot.take_back(posted_first));
        assert_eq!(slot.state.load(Ordering::Relaxed), posted_second);
        assert!(slot.deliver());
        let mut got = vec![0; first.len() + second.len()];
        read_end.read_exact(&mut got).unwrap();
        assert_eq!(got, [first, second].concat());
        // Taken back before a spinner came: never written.
        let third = answer(3, b"third");
        let posted_third = slot.post(&device, &[&third]).unwrap();
        assert!(slot.take_back(posted_third));
        assert!(!slot.deliver());
        assert_nothing_more_written(read_end, device);
    }

    #[test]
    fn a_full_mailbox_refuses_more_answers() {
        let mailbox = Mailbox::new(1);
        let (_read_end, device) = pipe();
        // Both slots are being written by a spinner that lost its CPU.
        for slot in &mailbox.slots {
            slot.state
                .store(with_phase(1 << PHASE_BITS, SENDING), Ordering::Relaxed);
        }
        let started = Instant::now();
        assert!(!mailbox.send(&device, &[&answer(3, b"x")]));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once"
        );
    }

    #[test]
    fn the_spinner_back_on_its_cpu_last_is_chosen() {
        let mailboxes = Mailboxes::new(&[0, 1, 2], Instant::now());
        // Keep the clock past the gap, then check in: 2 came back later than 1.
        std::thread::sleep(Duration::from_millis(2));
        let now = mailboxes.now_us();
        mailboxes.get(1).unwrap().heartbeat(now - 1, 0);
        mailboxes.get(2).unwrap().heartbeat(now, 0);
        mailboxes.get(0).unwrap().heartbeat(now, now - 1);
        mailboxes.get(1).unwrap().heartbeat(now, now - 1);
        assert_eq!(mailboxes.choose(9, now).map(|m| m.cpu), Some(2));
        // Not the sender's own CPU, even if it came back last.
        assert_eq!(mailboxes.choose(2, now).map(|m| m.cpu), Some(1));
        // Not a spinner that stopped.
        mailboxes.get(1).unwrap().stopped();
        assert_eq!(mailboxes.choose(2, now).map(|m| m.cpu), Some(0));
        // One off its CPU for longer than FRESH_US still spins: it may be about to come
        // back, but one running now comes first.
        let later = now + FRESH_US + 1;
        mailboxes.get(0).unwrap().heartbeat(later, later - 1);
        assert_eq!(mailboxes.choose(0, later).map(|m| m.cpu), Some(2));
        assert_eq!(mailboxes.choose(9, later).map(|m| m.cpu), Some(0));
        // Off its CPU for longer than OFF_CPU_LIMIT_US: that CPU is busy, not waited for.
        assert!(mailboxes.choose(0, now + OFF_CPU_LIMIT_US + 1).is_none());
    }

    #[test]
    fn only_whole_answers_that_fit_a_slot_are_handed_off() {
        let bytes = answer(5, b"data");
        assert!(is_answer(&[&bytes]));
        assert!(is_answer(&[&bytes[..16], &bytes[16..]]));
        // A notification (request 0), a short write, a header only.
        assert!(!is_answer(&[&answer(0, b"data")]));
        assert!(!is_answer(&[&bytes[..bytes.len() - 1]]));
        assert!(!is_answer(&[&bytes[..8]]));
        // An answer larger than a slot is one, but no mailbox takes it.
        let large = answer(5, &vec![0; SLOT_BYTES]);
        assert!(is_answer(&[&large]));
        let mailbox = Mailbox::new(1);
        let (_read_end, device) = pipe();
        assert!(!mailbox.send(&device, &[&large]));
        assert_eq!(Arc::strong_count(&device), 1);
    }

    #[test]
    fn only_the_fuse_device_counts_as_one() {
        let (read_end, _device) = pipe();
        assert!(!is_fuse_device(read_end.as_raw_fd()));
        assert!(!is_fuse_device(-1));
        if let Ok(device) = std::fs::File::open("/dev/fuse") {
            assert!(is_fuse_device(device.as_raw_fd()));
        }
    }

    #[test]
    fn writes_of_threads_that_serve_no_requests_pass_through() {
        let (mut read_end, device) = pipe();
        let bytes = answer(3, b"plain");
        let iov = libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        };
        // SAFETY: one iovec describing `bytes`, alive for the call.
        let written = unsafe { writev(device.as_raw_fd(), &iov, 1) };
        assert_eq!(written, isize::try_from(bytes.len()).unwrap());
        let mut got = vec![0; bytes.len()];
        read_end.read_exact(&mut got).unwrap();
        assert_eq!(got, bytes);
    }

    #[test]
    fn a_serving_thread_hands_off_only_answers_on_a_fuse_device() {
        // Mailboxes with a spinner, but the thread writes to a pipe: passed through.
        let mailboxes = Arc::new(Mailboxes::new(&[usize::MAX - 1], Instant::now()));
        let (mut read_end, device) = pipe();
        let stop = AtomicBool::new(false);
        let bytes = answer(4, b"to a pipe");
        std::thread::scope(|scope| {
            spinner(scope, &mailboxes, &stop);
            assert!(eventually_running(&mailboxes));
            let result = scope
                .spawn(|| {
                    serve_through(&mailboxes);
                    let iov = libc::iovec {
                        iov_base: bytes.as_ptr().cast_mut().cast(),
                        iov_len: bytes.len(),
                    };
                    // SAFETY: one iovec describing `bytes`, alive for the call.
                    let written = unsafe { writev(device.as_raw_fd(), &iov, 1) };
                    let route = ROUTE.with(|r| r.borrow().as_ref().map(|r| r.device.is_some()));
                    (written, route)
                })
                .join()
                .unwrap();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(result, (isize::try_from(bytes.len()).unwrap(), Some(false)));
        });
        let mut got = vec![0; bytes.len()];
        read_end.read_exact(&mut got).unwrap();
        assert_eq!(got, bytes);
    }
}
