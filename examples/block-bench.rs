//! Block-level benchmark: sequential write (then fsync) and read of a raw disk inside the
//! in-process kernel, against the same I/O done on the image file directly by the host.
//! Both use 1 MiB calls through the page cache; before every read the caches that would
//! serve it (the host's for the image file, the kernel's for the disk) are dropped, so the
//! data comes from the image file's storage both times. Prints MB/s and the ratio
//! kernel/host per phase (goal ≥ 0.9), as medians over several runs.
//!
//! `cargo run --release --example block-bench [-- [--size-mib N] [--runs N] [--dir DIR] [--memory-mib N]]`

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lklfuse::lkl::{self, bindings as b, disk, sys, BootOptions, KernelFd};

const MIB: usize = 1 << 20;
const GOAL: f64 = 0.9;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    size_mib: usize,
    runs: usize,
    dir: PathBuf,
    memory_mib: u32,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        size_mib: 512,
        runs: 3,
        dir: std::env::temp_dir(),
        memory_mib: BootOptions::default().memory_mib,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size-mib" => args.size_mib = value()?.parse()?,
            "--runs" => args.runs = value()?.parse::<usize>()?.max(1),
            "--dir" => args.dir = PathBuf::from(value()?),
            "--memory-mib" => args.memory_mib = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: block-bench [--size-mib N] [--runs N] [--dir DIR] [--memory-mib N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if args.size_mib == 0 {
        return Err("--size-mib must be at least 1".into());
    }
    Ok(args)
}

/// Deterministic, incompressible-looking data; `seed` makes each run's data differ.
fn fill(buf: &mut [u8], chunk: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ chunk as u64;
    for word in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
}

fn checksum(buf: &[u8]) -> u64 {
    buf.chunks_exact(8).fold(0u64, |acc, w| {
        acc.rotate_left(5) ^ u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))
    })
}

/// Drops the host's cached pages of the image (clean after the fsync that ended each
/// write phase), so the next read goes to the storage under it.
fn drop_host_cache(image: &File) -> Result<()> {
    // SAFETY: a valid descriptor; posix_fadvise only affects caching.
    let rc = unsafe { libc::posix_fadvise(image.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise: {}", std::io::Error::from_raw_os_error(rc)).into());
    }
    Ok(())
}

struct Phase {
    write: Duration,
    read: Duration,
}

fn host_run(image: &File, chunks: usize, seed: u64) -> Result<Phase> {
    let mut buf = vec![0u8; MIB];
    let mut sums = Vec::with_capacity(chunks);
    let start = Instant::now();
    for i in 0..chunks {
        fill(&mut buf, i, seed);
        sums.push(checksum(&buf));
        image.write_all_at(&buf, (i * MIB) as u64)?;
    }
    image.sync_data()?;
    let write = start.elapsed();
    drop_host_cache(image)?;
    let start = Instant::now();
    for (i, sum) in sums.iter().enumerate() {
        image.read_exact_at(&mut buf, (i * MIB) as u64)?;
        if checksum(&buf) != *sum {
            return Err(format!("host read back wrong data at MiB {i}").into());
        }
    }
    Ok(Phase {
        write,
        read: start.elapsed(),
    })
}

fn kernel_run(node: &std::ffi::CStr, image: &File, chunks: usize, seed: u64) -> Result<Phase> {
    let open =
        |flags: u32| -> Result<KernelFd> { Ok(sys::openat(lkl::CWD, node, flags as i32, 0)?) };
    let mut buf = vec![0u8; MIB];
    let mut sums = Vec::with_capacity(chunks);
    let fd = open(b::O_RDWR)?;
    let start = Instant::now();
    for i in 0..chunks {
        fill(&mut buf, i, seed);
        sums.push(checksum(&buf));
        let mut done = 0;
        while done < MIB {
            done += sys::pwrite64(&fd, &buf[done..], (i * MIB + done) as i64)?;
        }
    }
    sys::fsync(&fd)?;
    let write = start.elapsed();
    drop(fd);
    // The last close of the disk dropped the kernel's cache of it; drop the host's too.
    disk::drop_caches()?;
    drop_host_cache(image)?;
    let fd = open(b::O_RDONLY)?;
    let start = Instant::now();
    for (i, sum) in sums.iter().enumerate() {
        let mut done = 0;
        while done < MIB {
            let n = sys::pread64(&fd, &mut buf[done..], (i * MIB + done) as i64)?;
            if n == 0 {
                return Err("the kernel's disk ended early".into());
            }
            done += n;
        }
        if checksum(&buf) != *sum {
            return Err(format!("kernel read back wrong data at MiB {i}").into());
        }
    }
    Ok(Phase {
        write,
        read: start.elapsed(),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let chunks = args.size_mib;
    let path = args
        .dir
        .join(format!("lklfuse-block-bench-{}.img", std::process::id()));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(path.clone());

    // Fully allocated first, so that every timed write is an overwrite on both sides.
    let image = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    host_run(&image, chunks, 0)?;

    let disk = disk::attach(&path, false)?;
    let kernel = lkl::boot(&BootOptions {
        memory_mib: args.memory_mib,
        ..BootOptions::default()
    })?;
    let node = disk.device_node(None)?;

    let (mut hw, mut hr, mut kw, mut kr) = (vec![], vec![], vec![], vec![]);
    for run in 0..args.runs as u64 {
        let h = host_run(&image, chunks, 2 * run + 1)?;
        let k = kernel_run(&node, &image, chunks, 2 * run + 2)?;
        hw.push(h.write);
        hr.push(h.read);
        kw.push(k.write);
        kr.push(k.read);
    }
    kernel.halt()?;

    let rate = |d: Duration| (chunks * MIB) as f64 / 1e6 / d.as_secs_f64();
    println!(
        "sequential {} MiB in 1 MiB calls, median of {} runs, kernel RAM {} MiB, image in {}",
        args.size_mib,
        args.runs,
        args.memory_mib,
        args.dir.display()
    );
    println!(
        "{:<22} {:>12} {:>14} {:>7}  goal",
        "phase", "host MB/s", "kernel MB/s", "ratio"
    );
    for (name, host, kern) in [
        ("write + fsync", median(hw), median(kw)),
        ("read (caches dropped)", median(hr), median(kr)),
    ] {
        let ratio = rate(kern) / rate(host);
        println!(
            "{name:<22} {:>12.0} {:>14.0} {ratio:>7.2}  {}",
            rate(host),
            rate(kern),
            if ratio >= GOAL {
                "met (>= 0.9)"
            } else {
                "MISSED (< 0.9)"
            }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("block-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
