//! Boot the in-process Linux kernel and show what it is: version, boot
//! time, the filesystems it can mount, its memory; then halt it.
//!
//! `cargo run --release --example kernel-info`

use std::process::ExitCode;

use lklfuse::lkl::abi::NewUtsname;
use lklfuse::lkl::{self, bindings as b, sys, BootOptions, Errno};

fn read_file(path: &std::ffi::CStr) -> Result<String, Errno> {
    let fd = sys::openat(lkl::CWD, path, b::O_RDONLY as i32, 0)?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sys::read(&fd, &mut buf)?;
        if n == 0 {
            return Ok(String::from_utf8_lossy(&data).into_owned());
        }
        data.extend_from_slice(&buf[..n]);
    }
}

fn show() -> Result<(), Box<dyn std::error::Error>> {
    let kernel = lkl::boot(&BootOptions::default())?;
    let uts = sys::uname()?;
    println!(
        "kernel:      {} {} ({}), running inside process {}",
        NewUtsname::field(&uts.sysname),
        NewUtsname::field(&uts.release),
        NewUtsname::field(&uts.machine),
        std::process::id()
    );
    println!(
        "boot time:   {:.2} ms",
        kernel.boot_time().as_secs_f64() * 1e3
    );

    sys::mkdirat(lkl::CWD, c"/proc", 0o555)?;
    sys::mount(Some(c"proc"), c"/proc", Some(c"proc"), 0, None)?;
    let filesystems: Vec<String> = read_file(c"/proc/filesystems")?
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_string())
        .collect();
    println!("filesystems: {}", filesystems.join(" "));
    if let Some(total) = read_file(c"/proc/meminfo")?
        .lines()
        .find(|l| l.starts_with("MemTotal"))
    {
        println!(
            "memory:      {}",
            total.trim_start_matches("MemTotal:").trim()
        );
    }
    kernel.halt()?;
    println!("halted");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match show() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernel-info: {e}");
            ExitCode::FAILURE
        }
    }
}
