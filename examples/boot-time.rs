//! Boot-time benchmark: the time from `boot()` until the first system call
//! has returned, as the median of several runs. One kernel per process, so
//! each run is a fresh child process.
//!
//! `cargo run --release --example boot-time [-- RUNS]`

use std::process::{Command, ExitCode};
use std::time::Instant;

use lklfuse::lkl::{self, sys, BootOptions};

const CHILD_ENV: &str = "LKLFUSE_BOOT_TIME_CHILD";

/// One measurement, printed in microseconds for the parent to collect.
fn child() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let kernel = lkl::boot(&BootOptions::default())?;
    sys::getpid()?;
    let micros = start.elapsed().as_micros();
    println!("{micros}");
    kernel.halt()?;
    Ok(())
}

fn parent(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let out = Command::new(&exe).env(CHILD_ENV, "1").output()?;
        if !out.status.success() {
            return Err(format!("run failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        samples.push(String::from_utf8(out.stdout)?.trim().parse::<u64>()?);
    }
    samples.sort_unstable();
    let ms = |us: u64| us as f64 / 1e3;
    println!(
        "boot to first syscall over {runs} runs: median {:.2} ms (min {:.2}, max {:.2}); goal <= 20 ms",
        ms(samples[runs / 2]),
        ms(samples[0]),
        ms(samples[runs - 1])
    );
    Ok(())
}

fn main() -> ExitCode {
    let result = if std::env::var_os(CHILD_ENV).is_some() {
        child()
    } else {
        let runs = std::env::args()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(11);
        parent(runs.max(1))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot-time: {e}");
            ExitCode::FAILURE
        }
    }
}
