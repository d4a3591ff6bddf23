//! Where log messages go: `log=FILE` if given, else stderr.
//!
//! Everything goes to one place: lklfuse's own events, the kernel console (events with
//! target `kernel`) and fuser's `log` records. The level is `info` (with the kernel's
//! boot chatter held back to warnings) or `debug` with `-d`; `RUST_LOG` replaces both
//! (e.g. `RUST_LOG=info` shows kernel messages too, `RUST_LOG=fuser=trace` every request).
//!
//! Lines on stderr carry no timestamp (journald and terminals add their own); lines in a log
//! file do. Once a background daemon reports ready its stderr is `/dev/null`, so without
//! `log=FILE` (or `-f`) nothing is seen from then on: that is the expected way to run
//! quietly.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tracing::Subscriber;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::error::Error;

/// Filter directives without `-d`: lklfuse at info, fuser at errors, the kernel's console at
/// warnings (its info level is the whole boot log).
// fuser warns about its own second unmount attempt after every clean unmount.
const DEFAULT_DIRECTIVES: &str = "info,kernel=warn,fuser=error";

/// Filter directives with `-d`.
const DEBUG_DIRECTIVES: &str = "debug";

/// An open `log=FILE`, shared with the logger. Give [`AsFd::as_fd`] to
/// [`Readiness::ready_with_stderr`](super::background::Readiness::ready_with_stderr) so that
/// panics and anything else written to stderr land in the file too.
#[derive(Debug, Clone)]
pub struct LogFile {
    file: Arc<File>,
}

impl AsFd for LogFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Installs the process-wide logger. Call it once, after
/// [`daemonize`](super::background::daemonize) (it may start no threads, but the choice of
/// output belongs to the daemon).
///
/// `stderr_is_available`: false when nobody reads stderr; then, without a log file, no logger
/// is installed and events cost nothing.
///
/// Returns the opened log file, if any.
///
/// # Errors
///
/// [`Error::Io`] if the log file cannot be opened (it is created with mode 0644 and appended
/// to) or a logger is already installed.
pub fn init(
    debug: bool,
    log_file: Option<&Path>,
    stderr_is_available: bool,
) -> Result<Option<LogFile>, Error> {
    let filter = filter_from_env(debug);
    match log_file {
        Some(path) => {
            let file = open_log_file(path)?;
            install(file_subscriber(Arc::clone(&file.file), filter))?;
            Ok(Some(file))
        }
        None if stderr_is_available => {
            install(stderr_subscriber(filter))?;
            Ok(None)
        }
        None => Ok(None),
    }
}

fn default_directives(debug: bool) -> &'static str {
    if debug {
        DEBUG_DIRECTIVES
    } else {
        DEFAULT_DIRECTIVES
    }
}

/// `RUST_LOG` if set and not empty, else the default for `debug`.
fn filter_from_env(debug: bool) -> EnvFilter {
    let directives = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|directives| !directives.trim().is_empty())
        .unwrap_or_else(|| default_directives(debug).to_owned());
    EnvFilter::builder().parse_lossy(directives)
}

fn open_log_file(path: &Path) -> Result<LogFile, Error> {
    let file = File::options()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|error| Error::io(format!("opening log file {}", path.display()), error))?;
    Ok(LogFile {
        file: Arc::new(file),
    })
}

/// One line per event, appended with a single write (fmt formats the whole line first), so
/// lines from different threads do not interleave.
fn file_subscriber(file: Arc<File>, filter: EnvFilter) -> impl Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(file)
        .with_ansi(false)
        .finish()
}

fn stderr_subscriber(filter: EnvFilter) -> impl Subscriber + Send + Sync {
    let colour = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(colour)
        .without_time()
        .finish()
}

fn install(subscriber: impl Subscriber + Send + Sync) -> Result<(), Error> {
    subscriber
        .try_init()
        .map_err(|error| Error::io("installing the logger", io::Error::other(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_levels() {
        assert_eq!(default_directives(false), "info,kernel=warn,fuser=error");
        assert_eq!(default_directives(true), "debug");
    }

    #[test]
    fn log_file_gets_one_plain_line_per_event() {
        let dir = std::env::temp_dir().join(format!("lklfuse-test-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lklfuse.log");
        std::fs::write(&path, "earlier line\n").unwrap();

        let log_file = open_log_file(&path).unwrap();
        let filter = EnvFilter::builder().parse_lossy(DEFAULT_DIRECTIVES);
        let subscriber = file_subscriber(Arc::clone(&log_file.file), filter);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(mountpoint = "/mnt", "mounted");
            tracing::debug!("hidden debug message");
            tracing::info!(target: "kernel", "hidden kernel boot line");
            tracing::warn!(target: "kernel", "EXT4-fs warning");
        });

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "earlier line");
        assert!(lines[1].contains("INFO") && lines[1].contains("mounted"));
        assert!(lines[1].contains("mountpoint=\"/mnt\""), "{}", lines[1]);
        assert!(lines[2].contains("WARN") && lines[2].contains("kernel: EXT4-fs warning"));
        assert!(!text.contains('\u{1b}'), "ANSI codes in the log file");
        assert!(log_file.as_fd().try_clone_to_owned().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_directives_show_debug_and_kernel_info() {
        let dir =
            std::env::temp_dir().join(format!("lklfuse-test-debuglog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("debug.log");
        let log_file = open_log_file(&path).unwrap();
        let filter = EnvFilter::builder().parse_lossy(DEBUG_DIRECTIVES);
        tracing::subscriber::with_default(file_subscriber(log_file.file, filter), || {
            tracing::debug!("a debug message");
            tracing::info!(target: "kernel", "a kernel boot line");
            tracing::trace!("a trace message");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("a debug message"), "{text}");
        assert!(text.contains("a kernel boot line"), "{text}");
        assert!(!text.contains("a trace message"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unopenable_log_file_is_an_io_error() {
        let error = open_log_file(Path::new("/nonexistent-lklfuse-dir/x.log"))
            .expect_err("opened a log file in a missing directory");
        assert_eq!(
            error.to_string(),
            "opening log file /nonexistent-lklfuse-dir/x.log: no such file or directory"
        );
    }
}
