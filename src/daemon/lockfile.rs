//! `lock=FILE`: refuse to mount a filesystem that another lklfuse already serves.
//!
//! Two kernels writing one image corrupt it. The lock is an exclusive `flock` on FILE, taken
//! without waiting; it belongs to the open file description, so it survives `fork` (taking it
//! before or after [`daemonize`](super::background::daemonize) both work) and the kernel
//! releases it when the daemon exits, however it exits. The file is created if missing and
//! never removed: removing it would let a third instance lock a new file while the second
//! still holds the old one.

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::{describe_io_error, Error};

/// A held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    /// Keeps the locked open file description alive.
    _file: File,
}

impl LockFile {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `path` if missing (mode 0644) and takes an exclusive lock on it without waiting.
///
/// # Errors
///
/// [`Error::Lock`] if another process (or another open of the file) holds the lock, or the
/// file cannot be opened or locked.
pub fn acquire(path: &Path) -> Result<LockFile, Error> {
    let lock_error = |message: String| Error::Lock {
        path: path.to_owned(),
        message,
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|error| lock_error(describe_io_error(&error)))?;
    match file.try_lock() {
        Ok(()) => Ok(LockFile {
            path: path.to_owned(),
            _file: file,
        }),
        Err(TryLockError::WouldBlock) => Err(lock_error(
            "held by another process (is the filesystem already mounted?)".to_owned(),
        )),
        Err(TryLockError::Error(error)) => Err(lock_error(describe_io_error(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("lklfuse-test-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("image.lock");

        let first = acquire(&path).expect("first lock");
        assert_eq!(first.path(), path);
        let error = acquire(&path).expect_err("second lock succeeded");
        assert!(matches!(error, Error::Lock { .. }));
        assert_eq!(error.exit_code(), 1);
        let message = error.to_string();
        assert!(message.contains("image.lock"), "{message}");
        assert!(message.contains("held by another process"), "{message}");

        drop(first);
        // Other tests of this process spawn children: one forked just now holds a copy of
        // the descriptor (and so the lock) until it execs, which closes it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let again = loop {
            match acquire(&path) {
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                result => break result.expect("lock after release"),
            }
        };
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unopenable_path_is_a_lock_error() {
        let error = acquire(Path::new("/nonexistent-lklfuse-dir/x.lock"))
            .expect_err("locked a file in a missing directory");
        assert!(matches!(error, Error::Lock { .. }));
        assert!(
            error.to_string().contains("no such file or directory"),
            "{error}"
        );
    }
}
