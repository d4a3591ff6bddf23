//! Shared code of `cptofs`, `cpfromfs` and `fs2tar`: the image options all three take,
//! logging, the error type and exit codes, the progress bar and Ctrl-C handling.
//!
//! ```text
//! parse (clap) ─► logging ─► check sources ─► Image::open (attach, boot, mount)
//!   ─► copy_in / copy_out / tar::write   (Interrupt::check between chunks and entries)
//!   ─► Image::close (unmount inside the kernel, flush) ─► exit 0 / 1 / 2 (usage) / 128+signal
//! ```
//!
//! The image is closed on every path, errors and Ctrl-C included, so it is left consistent.

pub mod cli;
pub mod copy_in;
pub mod copy_out;
pub mod host;
pub mod tar;

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::daemon::describe_io_error;
use crate::image::{self, Image, OpenOptions};

/// The options every tool takes to find and mount the image.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageArgs {
    /// The disk image.
    #[arg(short = 'i', long = "image", value_name = "IMAGE")]
    pub image: PathBuf,
    /// Filesystem type (ext4, xfs, btrfs, vfat, exfat, ...); detected when omitted.
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub fstype: Option<String>,
    /// Partition number (1-based, MBR or GPT); the whole image when omitted.
    #[arg(short = 'P', long = "partition", value_name = "PART")]
    pub partition: Option<u32>,
    /// Filesystem mount options, comma separated.
    #[arg(short = 'o', long = "options", value_name = "OPTS", default_value = "")]
    pub options: String,
    /// Kernel memory in MiB.
    #[arg(short = 'm', long = "memory", value_name = "MB", default_value_t = 64)]
    pub memory_mib: u32,
    /// Show the kernel's messages on stderr.
    #[arg(short = 'p', long = "print-kernel")]
    pub print_kernel: bool,
    /// No progress bar and only errors.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// List what is copied (-vv: debug messages).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Makes a kernel panic or a crash signal end `program` with one line and exit status 3
/// (instead of an abort and a core dump).
pub fn arm_fatal(program: &'static str) {
    if let Err(e) = crate::daemon::fatal::arm_program(program) {
        tracing::warn!("cannot install crash handlers: {e}");
    }
    crate::lkl::set_panic_hook(Box::new(|msg| crate::daemon::fatal::kernel_panicked(msg)));
}

impl ImageArgs {
    /// Opens and mounts the image.
    pub fn open(&self, read_only: bool) -> Result<Image, Error> {
        let options = OpenOptions {
            read_only,
            partition: self.partition,
            fstype: self.fstype.clone(),
            memory_mib: self.memory_mib,
            mount_data: self.options.clone(),
        };
        Ok(Image::open(&self.image, &options)?)
    }

    /// Installs the stderr logger: errors only with `-q`, warnings by default, more with
    /// `-v`; the kernel's console at info with `-p`. `RUST_LOG` replaces all of it.
    pub fn init_logging(&self) {
        let ours = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0 | 1) => "warn",
            (false, _) => "debug",
        };
        // The kernel's own warnings are mostly boot chatter; errors always show.
        let kernel = if self.print_kernel { "info" } else { "error" };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| format!("{ours},kernel={kernel}").into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal())
            .without_time()
            .with_target(false)
            .try_init();
    }

    /// Whether to draw a progress bar: stderr is a terminal and not `-q`.
    pub fn show_progress(&self) -> bool {
        !self.quiet && io::stderr().is_terminal()
    }
}

/// Why a tool failed; each has its exit status ([`Error::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening the image or a call inside it failed.
    #[error(transparent)]
    Image(#[from] image::Error),

    /// A host file failed.
    #[error("{}: {}", path.display(), describe_io_error(source))]
    Host {
        /// The host path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },

    /// The filesystem inside the image is full.
    #[error("no space left in {} while copying {}", image.display(), what.display())]
    NoSpace {
        /// The image file.
        image: PathBuf,
        /// The source being copied.
        what: PathBuf,
    },

    /// A mistake in what was asked (destination not a directory, exists, ...).
    #[error("{0}")]
    Invalid(String),

    /// SIGINT or SIGTERM arrived; the copy stopped and the image was unmounted.
    #[error("interrupted by {}; the image was unmounted cleanly", signal_name(*.0))]
    Interrupted(i32),
}

impl Error {
    /// 128 + the signal after an interruption (130 for SIGINT, 143 for SIGTERM), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted(signal) => u8::try_from(128 + signal).unwrap_or(1),
            _ => 1,
        }
    }

    /// A host error on `path`.
    pub fn host(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Host {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("a signal")
}

/// Runs a tool's body and turns its outcome into the exit status, printing
/// `tool: error` on failure.
pub fn finish(tool: &str, outcome: Result<(), Error>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{tool}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `work` on the open image and closes it whatever happened, so that an error or an
/// interruption still leaves the image unmounted cleanly. The work's error wins over a
/// close error (which is then logged).
pub fn with_image(
    image: Image,
    work: impl FnOnce(&Image) -> Result<(), Error>,
) -> Result<(), Error> {
    let outcome = work(&image);
    let closed = image.close();
    match (outcome, closed) {
        (Err(e), Err(close)) => {
            tracing::error!("{close}");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), closed) => Ok(closed?),
    }
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C

/// Set by SIGINT/SIGTERM to the signal number; checked between chunks and entries.
#[derive(Clone, Debug)]
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs handlers for SIGINT and SIGTERM that only record the signal (so a second
    /// Ctrl-C cannot cut the unmount short either).
    pub fn install() -> Result<Interrupt, Error> {
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_usize(sig, signal.clone(), sig as usize).map_err(|e| {
                Error::Invalid(format!(
                    "cannot install signal handlers: {}",
                    describe_io_error(&e)
                ))
            })?;
        }
        Ok(Interrupt { signal })
    }

    /// A flag nothing sets (tests, library use).
    pub fn none() -> Interrupt {
        Interrupt {
            signal: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `Err(Interrupted)` once a signal has arrived.
    pub fn check(&self) -> Result<(), Error> {
        match self.signal.load(Ordering::Relaxed) {
            0 => Ok(()),
            sig => Err(Error::Interrupted(i32::try_from(sig).unwrap_or(2))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Progress

/// Bytes and files done, drawn as a bar on a terminal; `-v` lists each entry.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    files: u64,
    total_files: u64,
    verbose: bool,
}

impl Progress {
    /// A bar on stderr if `show`, nothing otherwise; totals come later ([`Progress::set_totals`]).
    pub fn new(show: bool, verbose: bool) -> Progress {
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            files: 0,
            total_files: 0,
            verbose,
        }
    }

    /// Whether a bar is drawn (then totals are worth computing).
    pub fn wants_totals(&self) -> bool {
        self.bar.is_some()
    }

    /// The amount of work, for the rate and ETA.
    pub fn set_totals(&mut self, bytes: u64, files: u64) {
        self.total_files = files;
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
        }
        self.update_message();
    }

    /// `n` more bytes copied.
    pub fn bytes(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// One more entry done; listed with `-v`.
    pub fn entry(&mut self, what: &Path) {
        self.files += 1;
        if self.verbose {
            match &self.bar {
                Some(bar) => bar.println(what.display().to_string()),
                None => eprintln!("{}", what.display()),
            }
        }
        self.update_message();
    }

    fn update_message(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}/{} files", self.files, self.total_files));
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Size of the chunks copied between checks of the interrupt flag.
pub const CHUNK: usize = 1 << 20;

/// Remembers which unsupported kinds of metadata were already reported, so that copying
/// thousands of files into FAT says "owners not kept" once.
#[derive(Debug, Default)]
pub struct Warned {
    kinds: std::collections::HashSet<&'static str>,
}

impl Warned {
    /// Warns about `kind` the first time only.
    pub fn once(&mut self, kind: &'static str, detail: impl std::fmt::Display) {
        if self.kinds.insert(kind) {
            tracing::warn!("{kind} not kept: {detail}");
        }
    }
}

/// Attributes that are another filesystem's internal spelling of something copied anyway:
/// XFS lists its ACLs to root also as `trusted.SGI_ACL_*`, next to the `system.posix_acl_*`
/// names that every filesystem understands.
pub fn is_alias_xattr(name: &std::ffi::OsStr) -> bool {
    matches!(
        name.as_encoded_bytes(),
        b"trusted.SGI_ACL_FILE" | b"trusted.SGI_ACL_DEFAULT"
    )
}

/// Whether an error number means "this filesystem cannot store that" (rather than a real
/// failure): FAT refuses owners, xattrs and odd modes with these.
pub fn unsupported(errno: Option<crate::lkl::Errno>) -> bool {
    use crate::lkl::Errno;
    matches!(
        errno,
        Some(Errno::EOPNOTSUPP | Errno::EPERM | Errno::ENOSYS | Errno::EINVAL)
    )
}

// ---------------------------------------------------------------------------------------------
// Destinations

/// What the destination named on the command line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DstKind {
    /// It does not exist.
    Missing,
    /// An existing directory (or a symlink to one).
    Dir,
    /// Something else that exists.
    Other,
}

/// Where each source goes, with `cp` semantics: into an existing directory under its own
/// name; with a single source, a missing destination is the new name. A source without a
/// name (`/`, `.`) merges into the destination directory itself.
pub fn destinations(sources: &[PathBuf], dst: &Path, kind: DstKind) -> Result<Vec<PathBuf>, Error> {
    match kind {
        DstKind::Dir => Ok(sources
            .iter()
            .map(|src| match src.file_name() {
                Some(name) => dst.join(name),
                None => dst.to_path_buf(),
            })
            .collect()),
        DstKind::Missing if sources.len() == 1 => Ok(vec![dst.to_path_buf()]),
        DstKind::Missing => Err(Error::Invalid(format!(
            "{}: no such directory (several sources need an existing directory)",
            dst.display()
        ))),
        DstKind::Other if sources.len() == 1 => Err(Error::Invalid(format!(
            "{}: destination exists (not overwritten)",
            dst.display()
        ))),
        DstKind::Other => Err(Error::Invalid(format!(
            "{}: not a directory",
            dst.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Interrupted(2).exit_code(), 130);
        assert_eq!(Error::Interrupted(15).exit_code(), 143);
        assert_eq!(Error::Invalid("x".into()).exit_code(), 1);
    }

    #[test]
    fn messages_are_one_line() {
        let e = Error::NoSpace {
            image: "disk.img".into(),
            what: "src/big".into(),
        };
        assert_eq!(
            e.to_string(),
            "no space left in disk.img while copying src/big"
        );
        let e = Error::Host {
            path: "/x".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(e.to_string(), "/x: no such file or directory");
    }

    #[test]
    fn cp_like_destinations() {
        let one = vec![PathBuf::from("a/file")];
        let two = vec![PathBuf::from("a/file"), PathBuf::from("b/")];
        let dst = Path::new("/d");
        assert_eq!(
            destinations(&two, dst, DstKind::Dir).expect("into dir"),
            vec![PathBuf::from("/d/file"), PathBuf::from("/d/b")]
        );
        assert_eq!(
            destinations(&one, dst, DstKind::Missing).expect("new name"),
            vec![PathBuf::from("/d")]
        );
        assert_eq!(
            destinations(&[PathBuf::from("/")], dst, DstKind::Dir).expect("merge"),
            vec![PathBuf::from("/d")]
        );
        assert!(destinations(&two, dst, DstKind::Missing).is_err());
        assert!(destinations(&one, dst, DstKind::Other).is_err());
        let e = destinations(&two, dst, DstKind::Other).expect_err("not a dir");
        assert_eq!(e.to_string(), "/d: not a directory");
    }

    #[test]
    fn interrupt_flag() {
        let i = Interrupt::none();
        assert!(i.check().is_ok());
        i.signal.store(15, Ordering::Relaxed);
        assert!(matches!(i.check(), Err(Error::Interrupted(15))));
    }
}
