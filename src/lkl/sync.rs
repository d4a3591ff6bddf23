//! The semaphores and mutexes the kernel asks the host for.
//!
//! Both are built on `std::sync::Mutex` + `Condvar` because the kernel needs operations a
//! `MutexGuard` cannot express: a semaphore is downed and upped by different threads (that is
//! how the kernel hands its single CPU from one host thread to the next), and the kernel's
//! mutex is locked and unlocked by two separate calls. Both count their sleepers so the
//! uncontended paths never make a futex wake-up syscall.
//!
//! Nothing here panics: the inner `std` mutexes are never held across code that can panic,
//! so poisoning is impossible in practice and is ignored if it happens anyway.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct SemState {
    count: u64,
    sleepers: u32,
}

/// A counting semaphore; `up` and `down` may come from different threads.
#[derive(Debug, Default)]
pub(crate) struct Semaphore {
    state: Mutex<SemState>,
    cv: Condvar,
}

impl Semaphore {
    /// A semaphore holding `count` units.
    pub(crate) fn new(count: u64) -> Semaphore {
        Semaphore {
            state: Mutex::new(SemState { count, sleepers: 0 }),
            cv: Condvar::new(),
        }
    }

    /// Adds a unit, waking one sleeper.
    pub(crate) fn up(&self) {
        let mut st = lock(&self.state);
        st.count += 1;
        let wake = st.sleepers > 0;
        drop(st);
        if wake {
            self.cv.notify_one();
        }
    }

    /// Waits for a unit and takes it.
    pub(crate) fn down(&self) {
        let mut st = lock(&self.state);
        while st.count == 0 {
            st.sleepers += 1;
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.sleepers -= 1;
        }
        st.count -= 1;
    }

    /// Takes a unit if one is there.
    #[cfg(test)]
    pub(crate) fn try_down(&self) -> bool {
        let mut st = lock(&self.state);
        if st.count == 0 {
            return false;
        }
        st.count -= 1;
        true
    }
}

#[derive(Debug, Default)]
struct MutexState {
    locked: bool,
    sleepers: u32,
}

/// A non-recursive lock with separate `lock` and `unlock` calls.
#[derive(Debug, Default)]
pub(crate) struct HostMutex {
    state: Mutex<MutexState>,
    cv: Condvar,
}

impl HostMutex {
    /// An unlocked mutex.
    pub(crate) fn new() -> HostMutex {
        HostMutex::default()
    }

    /// Waits until the mutex is free and takes it.
    pub(crate) fn lock(&self) {
        let mut st = lock(&self.state);
        while st.locked {
            st.sleepers += 1;
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.sleepers -= 1;
        }
        st.locked = true;
    }

    /// Releases the mutex. Unlocking an unlocked mutex is a kernel bug; it is logged.
    pub(crate) fn unlock(&self) {
        let mut st = lock(&self.state);
        if !st.locked {
            tracing::error!("kernel unlocked a host mutex that was not locked");
        }
        st.locked = false;
        let wake = st.sleepers > 0;
        drop(st);
        if wake {
            self.cv.notify_one();
        }
    }

    /// Whether the mutex is held.
    #[cfg(test)]
    pub(crate) fn is_locked(&self) -> bool {
        lock(&self.state).locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn semaphore_counts() {
        let s = Semaphore::new(2);
        s.down();
        s.down();
        assert!(!s.try_down());
        s.up();
        assert!(s.try_down());
    }

    #[test]
    fn semaphore_up_and_down_from_different_threads() {
        // Ping-pong like the kernel's CPU hand-off: each side waits on its own semaphore and
        // posts the other's.
        let ping = Arc::new(Semaphore::new(0));
        let pong = Arc::new(Semaphore::new(0));
        let rounds = 10_000;
        let t = {
            let (ping, pong) = (ping.clone(), pong.clone());
            thread::spawn(move || {
                for _ in 0..rounds {
                    ping.down();
                    pong.up();
                }
            })
        };
        for _ in 0..rounds {
            ping.up();
            pong.down();
        }
        t.join().expect("ping-pong thread");
        assert!(!ping.try_down() && !pong.try_down());
    }

    #[test]
    fn semaphore_many_producers_and_consumers() {
        let s = Arc::new(Semaphore::new(0));
        let taken = Arc::new(AtomicU64::new(0));
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let (s, taken) = (s.clone(), taken.clone());
                thread::spawn(move || {
                    for _ in 0..1000 {
                        s.down();
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || (0..1000).for_each(|_| s.up()))
            })
            .collect();
        for t in producers.into_iter().chain(consumers) {
            t.join().expect("worker");
        }
        assert_eq!(taken.load(Ordering::Relaxed), 4000);
        assert!(!s.try_down());
    }

    #[test]
    fn mutex_excludes_and_can_be_unlocked_by_a_later_call() {
        let m = Arc::new(HostMutex::new());
        let counter = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (m, counter) = (m.clone(), counter.clone());
                thread::spawn(move || {
                    for _ in 0..2000 {
                        m.lock();
                        // A non-atomic read-modify-write: lost updates would show a bug.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        m.unlock();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker");
        }
        assert_eq!(counter.load(Ordering::Relaxed), 8000);
        assert!(!m.is_locked());
    }

    #[test]
    fn mutex_blocks_until_unlocked() {
        let m = Arc::new(HostMutex::new());
        m.lock();
        let t = {
            let m = m.clone();
            thread::spawn(move || {
                m.lock();
                m.unlock();
            })
        };
        thread::sleep(Duration::from_millis(20));
        assert!(!t.is_finished());
        m.unlock();
        t.join().expect("waiter");
    }
}
