//! The daemon's failures, each with the exit status it ends the process with.
//!
//! Messages are one line, start in lower case and name the object; the binary prints them
//! as `lklfuse: {error}`. Exit status 2 is a usage error (as clap and mount helpers use it),
//! 1 any other failure, 0 a clean unmount.

use std::io;
use std::path::PathBuf;

use super::options::UsageError;

/// Exit status for command-line mistakes.
pub const EXIT_USAGE: i32 = 2;

/// Exit status for every other failure.
pub const EXIT_FAILURE: i32 = 1;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong.
    #[error(transparent)]
    Usage(#[from] UsageError),

    /// The image is missing, unreadable or in use.
    #[error("{}: {message}", path.display())]
    Image {
        /// The image as the user named it.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The kernel refused to mount the filesystem (wrong type, corrupt, unsupported feature).
    #[error("cannot mount the filesystem: {0}")]
    Mount(String),

    /// The filesystem could not be unmounted cleanly inside the kernel at the end (for
    /// example the image's disk filled up or failed): some data may not be in the image.
    #[error("the image was not unmounted cleanly: {0}")]
    Unmount(String),

    /// The FUSE mount failed (mountpoint missing or not a directory, no `/dev/fuse`,
    /// `allow_other` not permitted).
    #[error("cannot mount with FUSE: {0}")]
    Fuse(String),

    /// The in-process kernel failed to boot or hit a fatal error.
    #[error("kernel failure: {0}")]
    Kernel(String),

    /// `lock=FILE` could not be taken.
    #[error("lock file {}: {message}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why it could not be locked.
        message: String,
    },

    /// Some other host I/O failed.
    #[error("{what}: {}", describe_io_error(source))]
    Io {
        /// What was being done, e.g. "opening log file /var/log/x".
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The process exit status for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Image { .. }
            | Error::Mount(_)
            | Error::Unmount(_)
            | Error::Fuse(_)
            | Error::Kernel(_)
            | Error::Lock { .. }
            | Error::Io { .. } => EXIT_FAILURE,
        }
    }

    /// An [`Error::Image`] from the I/O error of opening or reading it.
    pub fn image(path: impl Into<PathBuf>, error: &io::Error) -> Self {
        Error::Image {
            path: path.into(),
            message: describe_io_error(error),
        }
    }

    /// An [`Error::Io`] for `what` (a phrase such as "creating log file /x").
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// An I/O error as a short lower-case phrase: "no such file or directory" rather than
/// "No such file or directory (os error 2)".
pub fn describe_io_error(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(index) if text.ends_with(')') => &text[..index],
        _ => &text,
    };
    lowercase_first(text)
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        // Leave acronyms such as "FUSE" alone; lower only a capitalised word.
        Some(first)
            if first.is_uppercase() && !chars.clone().next().is_some_and(char::is_uppercase) =>
        {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::options::parse_args;

    #[test]
    fn exit_codes() {
        let usage = match parse_args(["lklfuse"]) {
            Err(error) => Error::from(error),
            Ok(other) => panic!("expected a usage error, got {other:?}"),
        };
        assert_eq!(usage.exit_code(), 2);
        assert_eq!(Error::Mount("x".into()).exit_code(), 1);
        assert_eq!(Error::Fuse("x".into()).exit_code(), 1);
        assert_eq!(Error::Kernel("x".into()).exit_code(), 1);
        assert_eq!(
            Error::io("x", io::Error::from(io::ErrorKind::Other)).exit_code(),
            1
        );
    }

    #[test]
    fn messages_are_one_line_and_name_the_object() {
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            Error::image("disk.img", &missing).to_string(),
            "disk.img: no such file or directory"
        );
        assert_eq!(
            Error::Lock {
                path: "/run/x.lock".into(),
                message: "held by another process".into()
            }
            .to_string(),
            "lock file /run/x.lock: held by another process"
        );
        assert_eq!(
            Error::io(
                "opening log file /x",
                io::Error::from_raw_os_error(libc::EACCES)
            )
            .to_string(),
            "opening log file /x: permission denied"
        );
        assert_eq!(
            Error::Mount("ext4 on disk.img: invalid argument".into()).to_string(),
            "cannot mount the filesystem: ext4 on disk.img: invalid argument"
        );
    }

    #[test]
    fn io_error_descriptions() {
        assert_eq!(
            describe_io_error(&io::Error::other("FUSE is not available")),
            "FUSE is not available"
        );
        assert_eq!(
            describe_io_error(&io::Error::from_raw_os_error(libc::ENOTDIR)),
            "not a directory"
        );
    }
}
