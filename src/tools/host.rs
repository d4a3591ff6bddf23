//! The few host calls the copy tools need that `std` does not offer: extended attributes,
//! device and fifo nodes, times of a symlink itself, and `SEEK_DATA`/`SEEK_HOLE`.
//!
//! These act on the *host* (the real OS), not on the in-process kernel, so they do not
//! belong in `lkl::sys`. Each is one plain libc call on a NUL-terminated path or an owned
//! descriptor, with its buffer length passed alongside.

#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::lkl::abi::Timestamp;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Turns a `-1`/`errno` return into an `io::Error`.
fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Retries a size-probing call with a buffer big enough for the current value.
fn grow(mut call: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 21 => {
                let need = call(&mut [])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `llistxattr(2)`: the attribute names of `path` itself.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<OsString>> {
    let p = c_path(path)?;
    let buf = grow(|buf| {
        // SAFETY: `p` is NUL-terminated; `buf` is writable for the length passed (a null
        // pointer with length 0 only asks for the size).
        check(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
    })?;
    Ok(buf
        .split(|&c| c == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsStr::from_bytes(n).to_os_string())
        .collect())
}

/// `lgetxattr(2)`: one attribute of `path` itself; `None` if it has gone meanwhile.
pub fn get_xattr(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let p = c_path(path)?;
    let n = c_name(name)?;
    let got = grow(|buf| {
        // SAFETY: `p` and `n` are NUL-terminated; `buf` is writable for the length passed.
        check(unsafe {
            libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })
    });
    match got {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `lsetxattr(2)`: sets an attribute of `path` itself.
pub fn set_xattr(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let p = c_path(path)?;
    let n = c_name(name)?;
    // SAFETY: `p` and `n` are NUL-terminated; `value` is readable for the length passed.
    let ret = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(ret as isize).map(|_| ())
}

/// `mknod(2)`: a fifo, socket or device node (`mode` includes the `S_IF*` type).
pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let p = c_path(path)?;
    // SAFETY: `p` is NUL-terminated; no other pointers.
    let ret = unsafe { libc::mknod(p.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) };
    check(ret as isize).map(|_| ())
}

/// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`: access and modification times of `path`
/// itself, with nanoseconds.
pub fn set_times(path: &Path, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let p = c_path(path)?;
    let times = [atime.to_libc(), mtime.to_libc()];
    // SAFETY: `p` is NUL-terminated; `times` is a readable array of two timespecs.
    let ret = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret as isize).map(|_| ())
}

/// `lseek(SEEK_DATA)`: the first data at or after `offset`; `None` if only a hole follows.
pub fn seek_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: no pointer arguments; `file` owns the descriptor for the call.
    let ret = unsafe { libc::lseek(file.as_raw_fd(), offset, libc::SEEK_DATA) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(ret as u64))
}

/// `lseek(SEEK_HOLE)`: the first hole at or after `offset` (the end of file counts).
pub fn seek_hole(file: &File, offset: u64) -> io::Result<u64> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: no pointer arguments; `file` owns the descriptor for the call.
    let ret = unsafe { libc::lseek(file.as_raw_fd(), offset, libc::SEEK_HOLE) };
    check(ret as isize).map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_regions_of_a_host_file() {
        let dir = std::env::temp_dir().join(format!("lklfuse-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sparse");
        let file = File::create(&path).expect("create");
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"x", 1 << 20).expect("write");
        file.set_len(4 << 20).expect("extend");
        // tmpfs and most disk filesystems report the leading hole; some report none.
        let data = seek_data(&file, 0).expect("seek data").expect("has data");
        assert!(data <= 1 << 20);
        assert!(seek_hole(&file, 1 << 20).expect("seek hole") > 1 << 20);
        assert_eq!(seek_data(&file, (4 << 20) - 1).ok().flatten(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
