//! A small pool of named host threads that run block requests off the kernel's CPU.
//!
//! Jobs are boxed closures taken from one FIFO; submitting never blocks (the number of jobs is
//! bounded by the queue size anyway). Dropping the pool lets queued jobs finish, then joins the
//! threads.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

/// Worker threads, named `lklfuse-blk-{n}` (numbered across all pools of the process).
pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .finish()
    }
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

impl WorkerPool {
    /// Starts `threads` workers.
    pub fn new(threads: usize) -> io::Result<WorkerPool> {
        let shared = Arc::new(Shared::default());
        let mut pool = WorkerPool {
            shared,
            threads: Vec::with_capacity(threads),
        };
        for _ in 0..threads {
            let n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            let shared = pool.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("lklfuse-blk-{n}"))
                .spawn(move || run(&shared))?;
            pool.threads.push(handle); // on error, Drop stops the ones already started
        }
        Ok(pool)
    }

    /// Queues `job` for the next free worker.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let mut jobs = self
            .shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        jobs.queue.push_back(Box::new(job));
        drop(jobs);
        self.shared.ready.notify_one();
    }
}

fn run(shared: &Shared) {
    loop {
        let mut jobs = shared.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let job = loop {
            if let Some(job) = jobs.queue.pop_front() {
                break job;
            }
            if jobs.closed {
                return;
            }
            jobs = shared
                .ready
                .wait(jobs)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(jobs);
        job();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a block worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_parallel_on_named_threads() {
        let pool = WorkerPool::new(3).expect("pool");
        let (tx, rx) = mpsc::channel();
        let barrier = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..3 {
            let tx = tx.clone();
            let barrier = barrier.clone();
            pool.submit(move || {
                barrier.wait(); // deadlocks unless three run at once
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).expect("send");
            });
        }
        for _ in 0..3 {
            let name = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("job ran");
            assert!(name.is_some_and(|n| n.starts_with("lklfuse-blk-")));
        }
        drop(pool);
    }

    #[test]
    fn drop_finishes_queued_jobs() {
        let pool = WorkerPool::new(1).expect("pool");
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let c = count.clone();
            pool.submit(move || {
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
        drop(pool);
        assert_eq!(count.load(Ordering::SeqCst), 50);
    }
}
