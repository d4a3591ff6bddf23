//! Detects a kernel lockup: kernel code that runs on the one virtual CPU without ever sleeping
//! or yielding (an endless loop in a filesystem on a corrupt image, say). Nothing inside the
//! kernel can notice it (there is no preemption and no timer interrupt while the CPU is
//! held), and every request behind it would wait forever, so a host thread samples the CPU:
//! owned, and not handed to anyone since the previous sample, for longer than the limit,
//! means stuck.
//!
//! Waiting for I/O is not a lockup: a task that waits for the disk gives up the CPU. The limit
//! is counted in consecutive samples, not in wall-clock time, so a process that was stopped
//! (SIGSTOP, a debugger) and resumed does not look stuck because of the pause.

use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::bindings as b;
use super::kernel;

/// Samples per limit: the CPU must look stuck at this many consecutive samples, spaced
/// `limit / (SAMPLES - 1)` apart.
const SAMPLES: u32 = 5;

/// One look at the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Some thread runs kernel code now.
    pub owned: bool,
    /// How many times the CPU changed hands since boot.
    pub grants: u64,
}

/// Samples the kernel's CPU; `None` if the kernel is not running.
pub fn sample() -> Option<Sample> {
    if !kernel::is_running() {
        return None;
    }
    let mut grants: u64 = 0;
    // SAFETY: the kernel is running; lkl_cpu_progress only writes one unsigned long through
    // the pointer, which points at a live local.
    let owned = unsafe { b::lkl_cpu_progress(&mut grants) };
    Some(Sample {
        owned: owned != 0,
        grants,
    })
}

/// A running watchdog; dropping it stops the thread.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a thread that calls `on_stuck(limit)` (once) when the kernel's CPU has been held
/// without a hand-over for `limit`.
///
/// # Errors
///
/// If the thread cannot be started.
pub fn start<F>(limit: Duration, on_stuck: F) -> io::Result<Watchdog>
where
    F: FnOnce(Duration) + Send + 'static,
{
    start_with(limit, sample, on_stuck)
}

fn start_with<S, F>(limit: Duration, mut sampler: S, on_stuck: F) -> io::Result<Watchdog>
where
    S: FnMut() -> Option<Sample> + Send + 'static,
    F: FnOnce(Duration) + Send + 'static,
{
    let interval = (limit / (SAMPLES - 1)).max(Duration::from_millis(10));
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop_seen = stop.clone();
    let thread = std::thread::Builder::new()
        .name("lklfuse-watchdog".to_owned())
        .spawn(move || {
            let mut detector = Detector::default();
            let (stopped, wake) = &*stop_seen;
            let mut guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                let (g, _) = wake
                    .wait_timeout_while(guard, interval, |stopped| !*stopped)
                    .unwrap_or_else(PoisonError::into_inner);
                guard = g;
                if *guard {
                    return;
                }
                if detector.observe(sampler()) {
                    drop(guard);
                    on_stuck(limit);
                    return;
                }
            }
        })?;
    Ok(Watchdog {
        stop,
        thread: Some(thread),
    })
}

/// Counts consecutive samples that show the CPU owned with the same hand-over count.
#[derive(Debug, Default)]
struct Detector {
    stuck_at: Option<u64>,
    streak: u32,
}

impl Detector {
    /// Takes one sample; true once the CPU looks stuck for [`SAMPLES`] samples in a row.
    fn observe(&mut self, sample: Option<Sample>) -> bool {
        match sample {
            Some(Sample {
                owned: true,
                grants,
            }) if self.stuck_at == Some(grants) => self.streak += 1,
            Some(Sample {
                owned: true,
                grants,
            }) => {
                self.stuck_at = Some(grants);
                self.streak = 1;
            }
            _ => {
                self.stuck_at = None;
                self.streak = 0;
            }
        }
        self.streak >= SAMPLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn owned(grants: u64) -> Option<Sample> {
        Some(Sample {
            owned: true,
            grants,
        })
    }

    #[test]
    fn a_cpu_held_without_hand_over_is_stuck_after_enough_samples() {
        let mut d = Detector::default();
        for _ in 1..SAMPLES {
            assert!(!d.observe(owned(7)));
        }
        assert!(d.observe(owned(7)));
    }

    #[test]
    fn hand_overs_and_idle_samples_reset_the_streak() {
        let mut d = Detector::default();
        for round in 0..20 {
            // Busy but changing hands: a loaded kernel, not a stuck one.
            assert!(!d.observe(owned(round)));
        }
        for _ in 1..SAMPLES {
            assert!(!d.observe(owned(100)));
        }
        assert!(!d.observe(Some(Sample {
            owned: false,
            grants: 100
        })));
        for _ in 1..SAMPLES {
            assert!(!d.observe(owned(100)));
        }
        // The kernel halted.
        assert!(!d.observe(None));
        assert!(!d.observe(owned(100)));
    }

    #[test]
    fn the_thread_reports_a_stuck_cpu_once() {
        let (tx, rx) = mpsc::channel();
        let _watchdog = start_with(
            Duration::from_millis(80),
            || owned(3),
            move |limit| {
                let _ = tx.send(limit);
            },
        )
        .expect("start");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(Duration::from_millis(80))
        );
        // FnOnce: no second report, and the sender is gone with the thread.
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_progressing_kernel_is_never_reported_and_drop_stops_the_thread() {
        let (tx, rx) = mpsc::channel::<Duration>();
        let mut grants = 0;
        let watchdog = start_with(
            Duration::from_millis(40),
            move || {
                grants += 1;
                owned(grants)
            },
            move |limit| {
                let _ = tx.send(limit);
            },
        )
        .expect("start");
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(400)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        drop(watchdog);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(100)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
