//! The `lklfuse` daemon's plumbing: command line, lifecycle (background start that reports
//! failure, systemd notification, signals), lock and log files, and the daemon's error type.
//!
//! Lifecycle, in the order the binary drives it:
//!
//! ```text
//!  parse_args ──► Help/Version: print, exit 0          UsageError: print, exit 2
//!      │ Run(config)
//!      ▼
//!  canonicalize image, mountpoint, lock=, log=   (the daemon runs in "/")
//!      │
//!      ├── -f/-d: Readiness::foreground()
//!      └── else:  daemonize() ──► parent: waits for the report, prints it, exit_parent(0 or N)
//!                     │ child: Readiness        (no thread may exist before this point)
//!                     ▼
//!  logging::init ─► lockfile::acquire ─► boot kernel ─► mount in kernel ─► FUSE mount
//!      │   any failure: tear down, readiness.failed_with(error.exit_code(), "lklfuse: {error}")
//!      ▼
//!  readiness.ready() ─► notify("READY=1") ─► signals::on_stop_signals(unmount)
//!      ▼
//!  serve until unmounted or stopped ─► notify("STOPPING=1") ─► unmount in kernel, halt ─► exit 0
//! ```
//!
//! Exit status: 0 clean unmount, 1 failure, 2 usage error ([`Error::exit_code`]).

pub mod background;
pub mod error;
pub mod fatal;
pub mod lockfile;
pub mod logging;
pub mod notify;
pub mod options;
pub mod privileges;
pub mod readahead;
pub mod signals;
pub mod unmount;

pub use background::{daemonize, exit_parent, Readiness, Role};
pub use error::{describe_io_error, Error};
pub use lockfile::LockFile;
pub use logging::LogFile;
pub use notify::notify;
pub use options::{parse_args, Config, FuseOptions, Invocation, MountFlags, UsageError};
pub use signals::{on_stop_signals, SignalThread};
