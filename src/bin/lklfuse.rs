//! `lklfuse IMAGE MOUNTPOINT [-o OPTIONS]`: mount a disk image through FUSE with the Linux
//! kernel's own filesystem code running in this process.
//!
//! ```text
//! parse ─► check paths ─► fork (unless -f) ─► log, lock ─► attach image ─► boot ─► mount
//!   inside the kernel ─► FUSE mount ─► "ready" (parent exits 0, READY=1) ─► serve
//!   ... fusermount3 -u / umount / SIGTERM|INT|HUP ─► FUSE gone ─► release files ─►
//!   unmount inside the kernel (sync) ─► FLUSH (image fdatasync) ─► halt ─► exit 0
//! ```

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lklfuse::daemon::{self, background, notify, signals, Config, Error, Invocation};
use lklfuse::fs::{KernelFs, StatsProbe};
use lklfuse::lkl::{self, disk, BootOptions};

fn main() -> ExitCode {
    let invocation = match daemon::parse_args(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => return fail(&Error::from(e)),
    };
    match invocation {
        Invocation::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Version(text) => {
            println!(
                "{} (Linux {})",
                text.trim_end(),
                lklfuse::build_info::KERNEL_RELEASE
            );
            ExitCode::SUCCESS
        }
        Invocation::Run(config) => match start(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("lklfuse: {e}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

/// Checks what can be checked before forking, so that plain mistakes are reported by the
/// command itself, then goes to the background unless told not to.
fn start(mut config: Config) -> Result<(), Error> {
    let as_given = config.image.clone();
    config.image = canonical(&config.image).map_err(|e| Error::image(&config.image, &e))?;
    // findmnt and file managers show fsname: the full path is more useful than "../x.img".
    if Path::new(&config.fuse.fsname) == as_given {
        config.fuse.fsname = config.image.display().to_string();
    }
    if config.preopened_fuse_fd().is_none() {
        let mountpoint = config.mountpoint.clone();
        let meta = std::fs::metadata(&mountpoint).map_err(|e| {
            Error::Fuse(format!(
                "{}: {}",
                mountpoint.display(),
                daemon::describe_io_error(&e)
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::Fuse(format!(
                "{}: not a directory",
                mountpoint.display()
            )));
        }
        config.mountpoint = canonical(&mountpoint).map_err(|e| {
            Error::Fuse(format!(
                "{}: {}",
                mountpoint.display(),
                daemon::describe_io_error(&e)
            ))
        })?;
    }
    if let Some(lock) = &config.lock_file {
        config.lock_file = Some(absolute(lock));
    }
    if let Some(log) = &config.log_file {
        config.log_file = Some(absolute(log));
    }

    if config.foreground {
        let _log = daemon::logging::init(config.debug, config.log_file.as_deref(), true)?;
        return serve(&config, None, None);
    }
    match background::daemonize().map_err(|e| Error::io("starting in the background", e))? {
        background::Role::Parent(code) => daemon::exit_parent(code),
        background::Role::Child(readiness) => {
            let log = match daemon::logging::init(false, config.log_file.as_deref(), false) {
                Ok(guard) => guard,
                Err(e) => {
                    readiness.failed(&format!("lklfuse: {e}"));
                    return Ok(());
                }
            };
            let log_fd = log.as_ref().map(|l| l.as_fd());
            match serve(&config, Some(readiness), log_fd) {
                Ok(()) => Ok(()),
                // Already reported to the parent (before ready) or logged (after).
                Err(e) => std::process::exit(e.exit_code()),
            }
        }
    }
}

fn canonical(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Mounts, serves until unmounted, and tears everything down in order.
fn serve(
    config: &Config,
    mut readiness: Option<background::Readiness>,
    log_fd: Option<BorrowedFd<'_>>,
) -> Result<(), Error> {
    let report = |readiness: &mut Option<background::Readiness>, e: Error| -> Error {
        if let Some(r) = readiness.take() {
            r.failed_with(e.exit_code(), &format!("lklfuse: {e}"));
        }
        e
    };
    let mounted = match mount(config) {
        Ok(m) => m,
        Err(e) => return Err(report(&mut readiness, e)),
    };
    let Mounted {
        _lock,
        kernel,
        disk: _disk,
        mount,
        mut session,
        stats,
    } = mounted;

    // Stop requests unmount the FUSE side; the session loop then returns.
    let unmounter = Arc::new(Mutex::new(session.unmount_callable()));
    let on_signal = unmounter.clone();
    let mountpoint = config.mountpoint.clone();
    let _signals = signals::on_stop_signals(move |signal| {
        tracing::info!("signal {signal}: unmounting");
        let _ = notify::notify("STOPPING=1");
        let unmounted = match on_signal.lock() {
            Ok(mut u) => u.unmount(),
            Err(_) => Err(std::io::Error::other("unmounter poisoned")),
        };
        if let Err(e) = unmounted {
            // Busy (a shell sits in it): detach now; the session ends when it is let go.
            tracing::warn!("FUSE unmount after signal {signal}: {e}; detaching it lazily");
            if let Err(e) = daemon::unmount::detach(&mountpoint) {
                tracing::error!("lazy unmount of {}: {e}", mountpoint.display());
            }
        }
    })
    .map_err(|e| report(&mut readiness, Error::io("installing signal handlers", e)))?;

    // A kernel panic or a crash must not leave a dead mount point behind.
    let stderr_is_read = config.foreground || log_fd.is_some();
    daemon::fatal::arm(&config.mountpoint, stderr_is_read)
        .map_err(|e| report(&mut readiness, Error::io("installing crash handlers", e)))?;
    lkl::set_panic_hook(Box::new(|msg| daemon::fatal::kernel_panicked(msg)));
    let _watchdog = match config.watchdog_secs {
        0 => None,
        secs => Some(
            lkl::watchdog::start(Duration::from_secs(u64::from(secs)), |limit| {
                daemon::fatal::kernel_stuck(limit)
            })
            .map_err(|e| report(&mut readiness, Error::io("starting the watchdog", e)))?,
        ),
    };

    let _stats = signals::on_stats_signal(move || log_stats(&stats))
        .map_err(|e| report(&mut readiness, Error::io("installing signal handlers", e)))?;

    tracing::info!(
        "{} mounted on {} ({}{})",
        config.image.display(),
        config.mountpoint.display(),
        mount.fstype(),
        if mount.read_only() { ", read-only" } else { "" }
    );
    if let Some(r) = readiness.take() {
        match log_fd {
            Some(fd) => r.ready_with_stderr(fd),
            None => r.ready(),
        }
    }
    let _ = notify::notify("READY=1");

    let served = session.run();
    if let Err(e) = &served {
        tracing::error!("FUSE session ended with an error: {e}");
    }
    let _ = notify::notify("STOPPING=1");

    // The session dropped the filesystem: every kernel descriptor it held is closed.
    let unmounted = mount.unmount().map_err(|e| Error::Unmount(e.to_string()));
    if let Err(e) = kernel.halt() {
        tracing::error!("kernel halt: {e}");
    }
    unmounted?;
    tracing::info!("{} unmounted cleanly", config.image.display());
    Ok(())
}

/// One `stats:` line (SIGUSR1): what the daemon holds for the host, the kernel's memory, and
/// how many answers idle-poll threads wrote for the workers (see `lklfuse::fs::handoff`).
fn log_stats(stats: &StatsProbe) {
    let Some(fs) = stats.read() else {
        return;
    };
    let memory = disk::memory_info().unwrap_or_default();
    let (handed_off, written_by_workers) = lklfuse::fs::handoff::counts();
    tracing::info!(
        "stats: nodes={} open_files={} cached_fds={} kernel_free_kib={} kernel_available_kib={} kernel_total_kib={} answers_handed_off={} answers_by_workers={}",
        fs.nodes,
        fs.open_files,
        fs.cached_fds,
        memory.free_kib,
        memory.available_kib,
        memory.total_kib,
        handed_off,
        written_by_workers
    );
}

struct Mounted {
    _lock: Option<daemon::lockfile::LockFile>,
    kernel: lkl::Kernel,
    disk: disk::Disk,
    mount: disk::Mount,
    session: fuser::Session<KernelFs>,
    stats: StatsProbe,
}

fn mount(config: &Config) -> Result<Mounted, Error> {
    if !daemon::privileges::is_root() {
        // fusermount3 mounts nosuid,nodev for every user but root, whatever was asked.
        let ignored: Vec<&str> = [(!config.fuse.nosuid, "suid"), (!config.fuse.nodev, "dev")]
            .into_iter()
            .filter_map(|(asked, name)| asked.then_some(name))
            .collect();
        if !ignored.is_empty() {
            tracing::warn!(
                "option {} needs root: fusermount3 mounts nosuid,nodev for other users",
                ignored.join(",")
            );
        }
    }
    let lock = config
        .lock_file
        .as_deref()
        .map(daemon::lockfile::acquire)
        .transpose()?;
    let image_err = |message: String| Error::Image {
        path: config.image.clone(),
        message,
    };
    let disk = disk::attach(&config.image, config.read_only).map_err(|e| match e {
        disk::DiskError::Open { source, .. } => {
            image_err(strip_path(&source.to_string(), &config.image))
        }
        other => Error::Kernel(other.to_string()),
    })?;
    // Before the kernel boots: its threads inherit the reduced capabilities.
    daemon::privileges::drop_unneeded().map_err(|e| Error::io("dropping privileges", e))?;
    let kernel = lkl::boot(&BootOptions {
        memory_mib: config.memory_mib,
        ..BootOptions::default()
    })
    .map_err(|e| Error::Kernel(e.to_string()))?;
    let options = disk::MountOptions {
        partition: config.partition,
        fstype: config.fstype.clone(),
        read_only: config.read_only,
        flags: config.mount_flags.to_ms_flags(),
        data: config.mount_data.clone(),
    };
    let mount = disk
        .mount(&options)
        .map_err(|e| Error::Mount(e.to_string()))?;
    let read_only = mount.read_only();
    let fs = KernelFs::new(mount.path(), read_only)
        .map_err(|e| Error::Kernel(format!("serving the mount: {e}")))?
        .shared_with_other_users(config.fuse.allow_other)
        .host_honours_setuid(!config.fuse.nosuid)
        .host_checks_permissions(config.fuse.default_permissions)
        .names_stable(mount.names_stable())
        .acts_on_close(mount.acts_on_close())
        .writeback_cache(config.writeback_cache)
        .workers(
            config.threads,
            Duration::from_micros(config.busy_poll_us.into()),
            Duration::from_micros(config.idle_poll_us.into()),
        );
    let stats = fs.stats_probe();
    let workers = fs.workers_handle();
    {
        let workers = workers.clone();
        disk.on_submit(Box::new(move || workers.io_submitted()));
    }

    let mut fuse = config.fuse.clone();
    // A read-only disk (image file not writable) makes a read-only FUSE mount too.
    fuse.read_only |= read_only;
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = fuse.mount_options();
    fuse_config.acl = fuse.session_acl();
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.clone_fd = true;
    let session = match config.preopened_fuse_fd() {
        Some(fd) => daemon::unmount::take_fuse_fd(fd)
            .and_then(|owned| fuser::Session::from_fd(fs, owned, fuse_config.acl, fuse_config)),
        None => fuser::Session::new(fs, &config.mountpoint, &fuse_config),
    }
    .map_err(|e| {
        Error::Fuse(format!(
            "{}: {}",
            config.mountpoint.display(),
            daemon::describe_io_error(&e)
        ))
    })?;
    workers.watch(session.as_fd());
    if config.preopened_fuse_fd().is_none() {
        // One READ per largest request instead of per 128 KiB when reading sequentially.
        if let Err(e) = daemon::readahead::widen(&config.mountpoint, lklfuse::fs::MAX_IO) {
            tracing::debug!("host read-ahead of the mount left at its default: {e}");
        }
    }
    Ok(Mounted {
        _lock: lock,
        kernel,
        disk,
        mount,
        session,
        stats,
    })
}

/// Error texts from the image layer start with the image path; the daemon error adds it.
fn strip_path(text: &str, image: &Path) -> String {
    let prefix = format!("{}: ", image.display());
    text.strip_prefix(&prefix).unwrap_or(text).to_string()
}

/// Every `writev(2)` of this program, fuser's answers to FUSE requests among them, comes
/// here: answers may be written from the caller's CPU instead (see `lklfuse::fs::handoff`),
/// everything else goes to the system call unchanged.
///
/// # Safety
/// As for `writev(2)`: `iov` points to `iovcnt` valid iovecs describing readable memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(
    fd: libc::c_int,
    iov: *const libc::iovec,
    iovcnt: libc::c_int,
) -> libc::ssize_t {
    // SAFETY: the caller's guarantees are those `handoff::writev` needs.
    unsafe { lklfuse::fs::handoff::writev(fd, iov, iovcnt) }
}
