//! Host-side unmounting of the FUSE mount point when a stop is requested.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Detaches the mount at `path` now (`umount2(MNT_DETACH)`, root only); it goes away for
/// good, and the FUSE session ends, once the last process using it lets go. Used when a plain
/// unmount answers `EBUSY` because some process has a file or its directory there.
pub fn detach(path: &Path) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes ownership of the `/dev/fuse` descriptor `mount.fuse3 -o drop_privileges` passed as
/// the `/dev/fd/N` mount point, after checking that it is an open descriptor.
pub fn take_fuse_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and was handed to this process to own; nothing else in
    // the daemon refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
