//! Cost of one system call into the library kernel: from one thread, and from two threads
//! taking turns (the CPU changes hands on every call).
//!
//!   cargo run --release --example syscall-cost

use std::time::Instant;

use lklfuse::lkl::{self, sys, BootOptions, CWD};

fn per_call(n: u32, f: impl Fn()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let _kernel = lkl::boot(&BootOptions::default()).expect("boot");
    let n = 200_000;
    let getpid = || {
        sys::getpid().expect("getpid");
    };
    let stat = || {
        sys::statx(CWD, c"/", 0, 0x7ff).expect("statx");
    };
    println!("getpid, one thread: {:.2} us", per_call(n, getpid));
    println!("statx /, one thread: {:.2} us", per_call(n, stat));
    for threads in [2, 4] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..n / threads {
                        sys::statx(CWD, c"/", 0, 0x7ff).expect("statx");
                    }
                });
            }
        });
        println!(
            "statx /, {threads} threads at once: {:.2} us per call",
            start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    }
}
