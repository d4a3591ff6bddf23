//! The library API's error type: every failure names the image and, where there is one, the
//! path inside it that failed.

use std::io;
use std::path::{Path, PathBuf};

use crate::lkl::Errno;

/// Why an [`Image`](super::Image) call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image file could not be opened (missing, unreadable, locked by another user).
    #[error("{}: {message}", image.display())]
    Open {
        /// The image file.
        image: PathBuf,
        /// What is wrong with it.
        message: String,
        /// The host error number, when there is one.
        errno: Option<Errno>,
    },

    /// The kernel could not mount the filesystem (unknown or wrong type, corrupt, no such
    /// partition, unsupported feature).
    #[error("{}: cannot mount the filesystem: {message}", image.display())]
    Mount {
        /// The image file.
        image: PathBuf,
        /// The kernel's reason.
        message: String,
        /// The kernel's error number, when there is one.
        errno: Option<Errno>,
    },

    /// The in-process kernel could not boot, e.g. because this process already booted one
    /// (see the module documentation: one [`Image::open`](super::Image::open) per process).
    #[error("{}: kernel failure: {message}", image.display())]
    Kernel {
        /// The image file.
        image: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// A call on a path inside the image failed.
    #[error("{} in {}: {}", path.display(), image.display(), describe(*errno))]
    Path {
        /// The path inside the image.
        path: PathBuf,
        /// The image file.
        image: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },

    /// Unmounting or flushing the image at [`close`](super::Image::close) failed; recent
    /// changes may be missing from the image file.
    #[error("{}: cannot unmount cleanly: {message}", image.display())]
    Close {
        /// The image file.
        image: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// The kernel's (or host's) error number behind this error, if any.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Path { errno, .. } => Some(*errno),
            Error::Open { errno, .. } | Error::Mount { errno, .. } => *errno,
            Error::Kernel { .. } | Error::Close { .. } => None,
        }
    }

    /// The path inside the image that failed, for [`Error::Path`].
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Path { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Whether the filesystem ran out of space (or quota).
    pub fn is_no_space(&self) -> bool {
        matches!(self.errno(), Some(Errno::ENOSPC | Errno::EDQUOT))
    }
}

impl From<Error> for io::Error {
    /// Keeps the error number (so `raw_os_error` works) only when there is no better text;
    /// otherwise wraps the whole message.
    fn from(e: Error) -> io::Error {
        let kind = e
            .errno()
            .map_or(io::ErrorKind::Other, |n| io::Error::from(n).kind());
        io::Error::new(kind, e)
    }
}

/// An error number as a short lower-case phrase ("no such file or directory").
pub fn describe(errno: Errno) -> String {
    crate::daemon::describe_io_error(&io::Error::from(errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_errors_name_path_and_image() {
        let e = Error::Path {
            path: "/etc/passwd".into(),
            image: "disk.img".into(),
            errno: Errno::ENOENT,
        };
        assert_eq!(
            e.to_string(),
            "/etc/passwd in disk.img: no such file or directory"
        );
        assert_eq!(e.errno(), Some(Errno::ENOENT));
        assert_eq!(e.path(), Some(Path::new("/etc/passwd")));
        assert!(!e.is_no_space());
    }

    #[test]
    fn no_space_is_recognised() {
        let e = Error::Path {
            path: "/big".into(),
            image: "disk.img".into(),
            errno: Errno::ENOSPC,
        };
        assert!(e.is_no_space());
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::StorageFull);
    }
}
