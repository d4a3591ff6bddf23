//! Keeping CPUs awake while requests come in bursts.
//!
//! Every FUSE request wakes a task on each side: the caller's request wakes a worker (unless
//! one is busy polling, see [`super::workers`]) and the answer wakes the caller. A CPU with
//! nothing to run halts, and on a virtual machine waking a task on a halted CPU costs a trip
//! through the hypervisor, which has to find the virtual CPU a host CPU again: measured here
//! at 25 µs to over 100 µs per wake-up depending on the host's load, against 3-12 µs of work
//! for most requests. A caller such as `tar` or `cp -r` sleeps in each request, so its CPU
//! halts every time.
//!
//! So while requests keep coming less than a window apart, one thread per CPU (up to
//! [`MAX_CPUS`]) spins instead of letting its CPU halt. The threads run at `SCHED_IDLE`:
//! the scheduler counts a CPU that runs only such tasks as idle, so callers and workers are
//! still woken where they slept, and they preempt the spinner at once. The wake-ups stay;
//! only the hypervisor's part of them goes. After a window without a request the threads
//! sleep until the next one, so an idle mount costs nothing. What it does cost is CPU time
//! during bursts, taken only from the idle task; a thread that cannot be made `SCHED_IDLE`
//! does not spin at all. Under a CPU quota (cgroup `cpu.max`) that time counts against the
//! quota, and the spinners count as running in the load average: `idle_poll=0` turns this
//! off.
//!
//! A spinner also writes answers for workers on other CPUs (see [`super::handoff`]): it runs
//! only while its CPU is otherwise idle, which is where a caller waiting for its answer
//! sleeps.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::handoff::Mailboxes;

/// The most CPUs kept awake, the first ones the daemon may run on. Each costs a CPU's worth
/// of spinning during bursts; a caller on a later CPU still gains on the workers' side.
pub const MAX_CPUS: usize = 8;

/// Spin iterations, each also checking the mailbox, between looks at the clock (the
/// heartbeat, the window's end): about a microsecond.
const SPINS_PER_CHECK: u32 = 16;

/// How often a spinner yields, in microseconds. The scheduler should never pick a
/// `SCHED_IDLE` task over a runnable normal one, but if it does (a task that yielded in its
/// own polling loop, not one just woken, which preempts at once), it gets the CPU back this
/// soon. Yielding much more often costs: each yield is a system call, and requests measured
/// 20-40% slower when spinners yielded every 3 µs.
const YIELD_EVERY_US: u64 = 50;

/// Spinner threads need little stack.
const STACK_SIZE: usize = 64 * 1024;

/// Keeps up to [`MAX_CPUS`] CPUs from idling while [`IdlePoll::request`] is called at least
/// once per window. Dropping it stops the threads.
#[derive(Debug)]
pub struct IdlePoll {
    shared: Arc<Shared>,
    cpus: Vec<usize>,
}

#[derive(Debug)]
struct Shared {
    /// The window, in the same microseconds as `last_request_us`.
    window_us: u64,
    origin: Instant,
    /// When the last request came, in microseconds since `origin`.
    last_request_us: AtomicU64,
    /// Spinners asleep, or on their way to sleep: a request must wake them.
    sleeping: AtomicUsize,
    /// Spinners spinning now (for tests).
    spinning: AtomicUsize,
    closed: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// One per spinner, in the order of `IdlePoll::cpus`'s candidates.
    mailboxes: Arc<Mailboxes>,
}

impl IdlePoll {
    /// Starts one spinner per CPU the daemon may run on (up to [`MAX_CPUS`]), asleep until
    /// the first request. None when `window` is zero or there is a single CPU: the caller
    /// and the worker then share it, and nothing is halted while either runs.
    pub fn start(window: Duration) -> Option<IdlePoll> {
        if window.is_zero() {
            return None;
        }
        let cpus: Vec<usize> = allowed_cpus().into_iter().take(MAX_CPUS).collect();
        if cpus.len() < 2 {
            return None;
        }
        let origin = Instant::now();
        let shared = Arc::new(Shared {
            window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
            origin,
            last_request_us: AtomicU64::new(0),
            sleeping: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            mailboxes: Arc::new(Mailboxes::new(&cpus, origin)),
        });
        let mut started = Vec::with_capacity(cpus.len());
        for (index, &cpu) in cpus.iter().enumerate() {
            let spinner = shared.clone();
            // Not joined: a spinner leaves within one spin batch of `closed`, but a
            // SCHED_IDLE thread on a CPU that stays busy may wait long for that batch.
            let spawned = std::thread::Builder::new()
                .name(format!("idle-poll-{cpu}"))
                .stack_size(STACK_SIZE)
                .spawn(move || spinner.run_on(cpu, index));
            match spawned {
                Ok(_) => started.push(cpu),
                Err(e) => tracing::warn!("idle polling: cannot start a thread for CPU {cpu}: {e}"),
            }
        }
        Some(IdlePoll {
            shared,
            cpus: started,
        })
    }

    /// A request has come: spin (again) until a window passes without another one.
    pub fn request(&self) {
        let shared = &self.shared;
        shared
            .last_request_us
            .store(shared.now_us(), Ordering::SeqCst);
        // Pairs with the spinner's SeqCst increment and re-check in `sleep`: either it sees
        // this request, or this sees it asleep and wakes it.
        if shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _lock = shared.lock();
            shared.wake.notify_all();
        }
    }

    /// The CPUs with a spinner.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The spinners' mailboxes, for workers to hand answers to.
    pub fn mailboxes(&self) -> &Arc<Mailboxes> {
        &self.shared.mailboxes
    }

    /// How many spinners spin right now.
    pub fn spinning(&self) -> usize {
        self.shared.spinning.load(Ordering::Relaxed)
    }
}

impl Drop for IdlePoll {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _lock = self.shared.lock();
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the last request is more than a window old.
    fn quiet(&self) -> bool {
        let last = self.last_request_us.load(Ordering::SeqCst);
        self.now_us().saturating_sub(last) > self.window_us
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// A spinner's life: on `cpu` at the lowest priority, or not at all. It is the
    /// `index`-th of the CPUs it was started for, and delivers that mailbox's answers.
    fn run_on(&self, cpu: usize, index: usize) {
        let Some(mailbox) = self.mailboxes.get(index) else {
            return;
        };
        if let Err(e) = lowest_priority_on(cpu) {
            tracing::debug!("idle polling: CPU {cpu} stays idle: {e}");
            return;
        }
        while !self.closed() {
            if self.quiet() {
                self.sleep();
                continue;
            }
            self.spinning.fetch_add(1, Ordering::Relaxed);
            let mut last_yield = self.now_us();
            let mut last_beat = last_yield;
            while !self.closed() && !self.quiet() {
                for _ in 0..SPINS_PER_CHECK {
                    if mailbox.deliver() {
                        // The caller just woken preempted this spinner: beat at once
                        // when back, so that the next answer finds it running.
                        break;
                    }
                    std::hint::spin_loop();
                }
                let now = self.now_us();
                mailbox.heartbeat(now, last_beat);
                last_beat = now;
                if now.saturating_sub(last_yield) >= YIELD_EVERY_US {
                    // No answers while off the CPU: a spinner that yields has something to
                    // yield to, and the next heartbeat shows it is back.
                    mailbox.stopped();
                    last_yield = now;
                    std::thread::yield_now();
                }
            }
            mailbox.stopped();
            self.spinning.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sleeps until a request comes or the poller is dropped.
    fn sleep(&self) {
        let mut lock = self.lock();
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        while !self.closed() && self.quiet() {
            lock = self.wake.wait(lock).unwrap_or_else(PoisonError::into_inner);
        }
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The CPUs this process may run on, in order.
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Vec::new();
    }
    let bits = std::mem::size_of_val(&set) * 8;
    // SAFETY: CPU_ISSET reads bit `cpu` of `set`, and every `cpu` is below its size in bits.
    (0..bits)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Moves the calling thread to `cpu` alone, at `SCHED_IDLE`.
fn lowest_priority_on(cpu: usize) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from `allowed_cpus`, below the set's size in bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::eventually;

    #[test]
    fn off_without_a_window() {
        assert!(IdlePoll::start(Duration::ZERO).is_none());
    }

    #[test]
    fn spinners_spin_after_a_request_and_sleep_after_a_quiet_window() {
        if allowed_cpus().len() < 2 {
            eprintln!("NOTE: one CPU: idle polling stays off");
            assert!(IdlePoll::start(Duration::from_millis(1)).is_none());
            return;
        }
        let poll = IdlePoll::start(Duration::from_millis(200)).expect("two CPUs or more");
        assert_eq!(poll.cpus().len(), allowed_cpus().len().min(MAX_CPUS));
        assert!(eventually(
            || poll.shared.sleeping.load(Ordering::SeqCst) == poll.cpus().len()
        ));
        assert_eq!(poll.spinning(), 0, "nothing spins before the first request");
        poll.request();
        assert!(eventually(|| poll.spinning() == poll.cpus().len()));
        // Requests more often than the window keep them spinning.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(5));
            poll.request();
            assert_eq!(poll.spinning(), poll.cpus().len());
        }
        assert!(eventually(|| poll.spinning() == 0));
        assert!(eventually(
            || poll.shared.sleeping.load(Ordering::SeqCst) == poll.cpus().len()
        ));
        // And a request after the quiet time wakes them again.
        poll.request();
        assert!(eventually(|| poll.spinning() == poll.cpus().len()));
    }

    #[test]
    fn dropping_the_poller_ends_its_threads() {
        let Some(poll) = IdlePoll::start(Duration::from_secs(60)) else {
            return;
        };
        let shared = poll.shared.clone();
        poll.request();
        assert!(eventually(|| shared.spinning.load(Ordering::Relaxed) > 0));
        drop(poll);
        // The spinners held the only other references.
        assert!(eventually(|| Arc::strong_count(&shared) == 1));
    }

    #[test]
    fn spinners_run_at_the_lowest_priority() {
        let handle = std::thread::spawn(|| {
            lowest_priority_on(allowed_cpus()[0]).expect("SCHED_IDLE needs no privilege");
            // SAFETY: plain query of the calling thread's policy.
            unsafe { libc::sched_getscheduler(0) }
        });
        assert_eq!(handle.join().unwrap(), libc::SCHED_IDLE);
    }
}
