//! One-shot timers for the kernel's clock event device, all served by one host thread.
//!
//! POSIX `SIGEV_THREAD` timers can start a thread per expiry; here a single thread
//! (`lkl-timer`) sleeps on a condition variable until the earliest deadline in an ordered
//! deadline queue, then runs that timer's callback (which calls `lkl_trigger_irq`). The
//! queue is a `BTreeMap` keyed by (deadline, sequence) rather than a binary heap so that
//! re-arming or cancelling removes the old entry at once instead of leaving stale entries.
//!
//! Accuracy: `Condvar::wait_timeout` sleeps on a futex with a relative `CLOCK_MONOTONIC`
//! timeout, so an idle host fires within the kernel's timer slack (~50 µs) of the deadline.
//! Deadlines use `Instant` (also `CLOCK_MONOTONIC`), the clock behind the `monotonic_ns` op.
//!
//! Callbacks run without the service lock held, so a callback may arm, cancel or free timers.
//! Freeing a timer does not wait for a callback that is already running (as with POSIX
//! `timer_delete`); the kernel only frees its clock event timer when shutting it down.
//!
//! Lock order: only the one `state` mutex.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// What a timer runs when it fires.
pub(crate) type Callback = Arc<dyn Fn() + Send + Sync>;

/// Identifies a timer of a [`TimerService`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerId(u64);

struct Slot {
    callback: Callback,
    /// The queue key while armed.
    armed: Option<(Instant, u64)>,
}

#[derive(Default)]
struct State {
    timers: HashMap<u64, Slot>,
    queue: BTreeMap<(Instant, u64), u64>,
    next_id: u64,
    next_seq: u64,
    shutdown: bool,
    thread_started: bool,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A set of one-shot timers and the thread that fires them.
pub(crate) struct TimerService {
    inner: Arc<Inner>,
    name: &'static str,
}

impl TimerService {
    /// A service whose thread (started on the first `alloc`) is named `name`.
    pub(crate) fn new(name: &'static str) -> TimerService {
        TimerService {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                cv: Condvar::new(),
            }),
            name,
        }
    }

    /// Creates a disarmed timer. `None` only if the timer thread cannot be started.
    pub(crate) fn alloc(&self, callback: Callback) -> Option<TimerId> {
        let mut st = self.inner.lock();
        if !st.thread_started {
            let inner = self.inner.clone();
            let spawned = thread::Builder::new()
                .name(self.name.to_owned())
                .spawn(move || run(&inner));
            if let Err(e) = spawned {
                tracing::error!("cannot start the {} thread: {e}", self.name);
                return None;
            }
            st.thread_started = true;
        }
        st.next_id += 1;
        let id = st.next_id;
        st.timers.insert(
            id,
            Slot {
                callback,
                armed: None,
            },
        );
        Some(TimerId(id))
    }

    /// (Re)arms `timer` to fire once, `delta` from now. A delta too large for the clock
    /// leaves the timer disarmed (it would never fire anyway).
    pub(crate) fn set_oneshot(&self, timer: TimerId, delta: Duration) {
        let deadline = Instant::now().checked_add(delta);
        let mut st = self.inner.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let State { timers, queue, .. } = &mut *st;
        let Some(slot) = timers.get_mut(&timer.0) else {
            tracing::error!(?timer, "kernel armed an unknown timer");
            return;
        };
        if let Some(old) = slot.armed.take() {
            queue.remove(&old);
        }
        let Some(deadline) = deadline else {
            return;
        };
        slot.armed = Some((deadline, seq));
        queue.insert((deadline, seq), timer.0);
        let earliest = queue.first_key_value().map(|(k, _)| *k) == Some((deadline, seq));
        drop(st);
        if earliest {
            self.inner.cv.notify_one();
        }
    }

    /// Disarms `timer` (no effect if it is not armed).
    pub(crate) fn cancel(&self, timer: TimerId) {
        let mut st = self.inner.lock();
        let State { timers, queue, .. } = &mut *st;
        if let Some(key) = timers.get_mut(&timer.0).and_then(|s| s.armed.take()) {
            queue.remove(&key);
        }
    }

    /// Disarms and forgets `timer`.
    pub(crate) fn free(&self, timer: TimerId) {
        let mut st = self.inner.lock();
        let State { timers, queue, .. } = &mut *st;
        match timers.remove(&timer.0) {
            Some(slot) => {
                if let Some(key) = slot.armed {
                    queue.remove(&key);
                }
            }
            None => tracing::error!(?timer, "kernel freed an unknown timer"),
        }
    }
}

impl Drop for TimerService {
    fn drop(&mut self) {
        self.inner.lock().shutdown = true;
        self.inner.cv.notify_one();
    }
}

/// The timer thread: sleep until the earliest deadline, fire, repeat.
fn run(inner: &Inner) {
    let mut st = inner.lock();
    loop {
        if st.shutdown {
            return;
        }
        let Some((&key, &id)) = st.queue.first_key_value() else {
            st = inner.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let now = Instant::now();
        if key.0 > now {
            st = inner
                .cv
                .wait_timeout(st, key.0 - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            continue;
        }
        st.queue.remove(&key);
        let Some(slot) = st.timers.get_mut(&id) else {
            continue;
        };
        slot.armed = None;
        let callback = slot.callback.clone();
        drop(st);
        callback();
        st = inner.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A timer whose callback reports the instant it ran.
    fn reporting_timer(svc: &TimerService) -> (TimerId, mpsc::Receiver<Instant>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let id = svc
            .alloc(Arc::new(move || {
                let _ = tx
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .send(Instant::now());
            }))
            .expect("timer thread starts");
        (id, rx)
    }

    #[test]
    fn fires_once_on_time() {
        let svc = TimerService::new("test-timer");
        let (t, rx) = reporting_timer(&svc);
        for delay_ms in [1u64, 5, 20] {
            let delay = Duration::from_millis(delay_ms);
            // The host scheduler may preempt the timer thread on a busy machine; accuracy
            // means at least one of a few tries is on time (and none is early).
            let mut lateness = Vec::new();
            for _ in 0..5 {
                let start = Instant::now();
                svc.set_oneshot(t, delay);
                let fired = rx
                    .recv_timeout(Duration::from_secs(2))
                    .expect("timer fired");
                assert!(fired >= start + delay, "{delay_ms} ms timer fired early");
                lateness.push(fired.duration_since(start + delay));
                if lateness.last() < Some(&Duration::from_millis(5)) {
                    break;
                }
            }
            assert!(
                lateness.iter().any(|l| *l < Duration::from_millis(5)),
                "{delay_ms} ms timer late every time: {lateness:?}"
            );
        }
        // One-shot: nothing more.
        assert!(rx.recv_timeout(Duration::from_millis(30)).is_err());
    }

    #[test]
    fn rearm_replaces_the_deadline() {
        let svc = TimerService::new("test-timer");
        let (t, rx) = reporting_timer(&svc);
        let start = Instant::now();
        svc.set_oneshot(t, Duration::from_millis(300));
        svc.set_oneshot(t, Duration::from_millis(10));
        let fired = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("timer fired");
        assert!(fired.duration_since(start) < Duration::from_millis(250));
        // The 300 ms arming was replaced, not kept.
        assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
        // Re-arming later still works.
        svc.set_oneshot(t, Duration::from_millis(500));
        svc.set_oneshot(t, Duration::from_millis(5));
        assert!(rx.recv_timeout(Duration::from_secs(2)).is_ok());
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn cancel_and_free_disarm() {
        let svc = TimerService::new("test-timer");
        let (a, rx_a) = reporting_timer(&svc);
        let (b, rx_b) = reporting_timer(&svc);
        svc.set_oneshot(a, Duration::from_millis(100));
        svc.set_oneshot(b, Duration::from_millis(100));
        svc.cancel(a);
        svc.free(b);
        assert!(rx_a.recv_timeout(Duration::from_millis(150)).is_err());
        assert!(rx_b.recv_timeout(Duration::from_millis(1)).is_err());
        svc.set_oneshot(a, Duration::from_millis(1));
        assert!(rx_a.recv_timeout(Duration::from_secs(2)).is_ok());
        // Unknown timers are logged, not fatal.
        svc.set_oneshot(b, Duration::from_millis(1));
        svc.free(b);
    }

    #[test]
    fn many_timers_fire_in_deadline_order() {
        let svc = TimerService::new("test-timer");
        let (tx, rx) = mpsc::channel();
        let tx = Arc::new(Mutex::new(tx));
        let timers: Vec<_> = (0..8u64)
            .map(|i| {
                let tx = tx.clone();
                let id = svc
                    .alloc(Arc::new(move || {
                        let _ = tx.lock().unwrap_or_else(PoisonError::into_inner).send(i);
                    }))
                    .expect("alloc");
                (i, id)
            })
            .collect();
        // Deadlines 5 ms apart from one base, armed latest first.
        let base = Instant::now() + Duration::from_millis(20);
        for &(i, id) in timers.iter().rev() {
            let deadline = base + Duration::from_millis(5 * i);
            svc.set_oneshot(id, deadline.saturating_duration_since(Instant::now()));
        }
        let order: Vec<u64> = (0..8)
            .map(|_| rx.recv_timeout(Duration::from_secs(2)).expect("fired"))
            .collect();
        assert_eq!(order, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn callback_may_rearm_its_own_timer() {
        let svc = Arc::new(TimerService::new("test-timer"));
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let id_cell: Arc<Mutex<Option<TimerId>>> = Arc::new(Mutex::new(None));
        let cb = {
            let (svc, count, id_cell) = (Arc::downgrade(&svc), count.clone(), id_cell.clone());
            Arc::new(move || {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let id = *id_cell.lock().unwrap_or_else(PoisonError::into_inner);
                if let (Some(svc), Some(id)) = (svc.upgrade(), id) {
                    if n < 3 {
                        svc.set_oneshot(id, Duration::from_millis(1));
                    }
                }
                let _ = tx.lock().unwrap_or_else(PoisonError::into_inner).send(n);
            })
        };
        let id = svc.alloc(cb).expect("alloc");
        *id_cell.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
        svc.set_oneshot(id, Duration::from_millis(1));
        let got: Vec<u32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(2)).expect("fired"))
            .collect();
        assert_eq!(got, [1, 2, 3]);
    }

    #[test]
    fn huge_delta_never_fires() {
        let svc = TimerService::new("test-timer");
        let (t, rx) = reporting_timer(&svc);
        svc.set_oneshot(t, Duration::from_nanos(u64::MAX));
        svc.set_oneshot(t, Duration::MAX);
        assert!(rx.recv_timeout(Duration::from_millis(20)).is_err());
    }
}
