//! Safe, typed wrappers around the kernel's system calls.
//!
//! Each wrapper is named exactly after the syscall it makes and goes through [`syscall6`], the
//! single caller of `lkl_syscall`. Conventions:
//!
//! - Paths are `&CStr` ([`path_to_cstring`] converts a `&Path`); buffers are byte slices whose
//!   length is passed to the kernel, so the kernel never touches memory outside them.
//! - Descriptors are anything [`AsKernelFd`]; use [`CWD`](super::fd::CWD) for `AT_FDCWD`.
//! - Flag arguments are in the **kernel's** numbering: take them from `bindings` or map host
//!   values through the `abi::*_to_kernel` functions first.
//! - Every call fails with `ESHUTDOWN` while the kernel is not running (before boot, after halt).
//!
//! Concurrency: any host thread may call any wrapper; the kernel gives each thread its own task
//! on its first call (shared fd table, cwd and umask; per-thread credentials) and serializes
//! execution on its single CPU.

#![allow(clippy::unnecessary_cast)] // bindgen's integer type for macros depends on its options

use std::ffi::{CStr, CString};
use std::io::{IoSlice, IoSliceMut};
use std::os::raw::c_long;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use super::abi::{FileAttrIoctl, FileHandle, Flock, NewUtsname, StatFs, Statx, Timestamp};
use super::bindings as b;
use super::errno::Errno;
use super::fd::{AsKernelFd, KernelFd};
use super::kernel;

/// Plain-data types for which all-zero bytes are a valid value.
///
/// # Safety
/// Implement only for `repr(C)` structs of integers and arrays of integers (no references, no
/// `NonNull`, no enums).
pub(crate) unsafe trait Zeroable: Sized {}

// SAFETY: bindgen's `struct statx`: integers, integer arrays and `statx_timestamp`s.
unsafe impl Zeroable for b::statx {}
// SAFETY: integers only.
unsafe impl Zeroable for b::statx_timestamp {}
// SAFETY: integers, an integer array and `__kernel_fsid_t` (an integer array).
unsafe impl Zeroable for b::statfs {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for b::flock {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for b::open_how {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for b::__kernel_timespec {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for libc::statx {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for libc::statx_timestamp {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for libc::statvfs {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for libc::flock {}
// SAFETY: integers only (plus private integer padding in the libc structs).
unsafe impl Zeroable for libc::timespec {}

/// An all-zero value of a plain-data struct.
pub(crate) fn zeroed<T: Zeroable>() -> T {
    // SAFETY: `Zeroable` promises that all-zero bytes are a valid `T`.
    unsafe { std::mem::zeroed() }
}

/// Makes one raw system call: `nr` with six arguments. Returns the kernel's raw result
/// (`-errno` on failure), or `-ESHUTDOWN` if the kernel is not running.
///
/// # Safety
/// Every argument the syscall interprets as a pointer must point to memory valid for the
/// access the syscall makes (read or write, and length), for the duration of the call; every
/// fd argument must not be one that a live [`KernelFd`] owns if the call closes it.
pub unsafe fn syscall6(nr: i64, args: [i64; 6]) -> i64 {
    if !kernel::is_running() {
        return -i64::from(Errno::ESHUTDOWN.raw());
    }
    let args: [c_long; 6] = args.map(|a| a as c_long);
    // SAFETY: the kernel is running, `args` holds exactly the six longs lkl_syscall reads, and
    // the caller guarantees the pointers among them.
    unsafe { b::lkl_syscall(nr as c_long, args.as_ptr()) as i64 }
}

/// Converts a path to the NUL-terminated form syscalls take; `EINVAL` on an interior NUL.
pub fn path_to_cstring(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn nr(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(-1)
}

/// Borrows: the descriptor (possibly an owned [`KernelFd`] passed by value) must
/// stay open until the syscall returns, so it is dropped by the caller after it.
fn fdarg(fd: &impl AsKernelFd) -> i64 {
    i64::from(fd.as_kernel_fd().as_raw())
}

fn cstr(s: &CStr) -> i64 {
    s.as_ptr() as usize as i64
}

fn opt_cstr(s: Option<&CStr>) -> i64 {
    s.map_or(0, cstr)
}

fn ptr<T>(p: *const T) -> i64 {
    p as usize as i64
}

fn mut_ptr<T>(p: *mut T) -> i64 {
    p as usize as i64
}

fn len(n: usize) -> i64 {
    n as i64
}

fn to_usize(r: i64) -> Result<usize, Errno> {
    Errno::from_ret(r).map(|n| n as usize)
}

fn to_unit(r: i64) -> Result<(), Errno> {
    Errno::from_ret(r).map(|_| ())
}

fn to_fd(r: i64) -> Result<KernelFd, Errno> {
    let fd = Errno::from_ret(r)?;
    let fd = i32::try_from(fd).map_err(|_| Errno::EIO)?;
    // SAFETY: the syscall just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { KernelFd::from_raw(fd) })
}

/// Closes a raw descriptor (used by `KernelFd`'s `Drop`).
pub(crate) fn close_raw(fd: i32) -> Result<(), Errno> {
    // SAFETY: no pointer arguments; the caller owns `fd` and gives it up.
    to_unit(unsafe { syscall6(nr(b::__NR_close), [i64::from(fd), 0, 0, 0, 0, 0]) })
}

// ---------------------------------------------------------------------------------------------
// Opening and closing

/// `openat(2)`: opens `path` relative to `dirfd` with kernel `O_*` `flags`.
pub fn openat(
    dirfd: impl AsKernelFd,
    path: &CStr,
    flags: i32,
    mode: u32,
) -> Result<KernelFd, Errno> {
    refuse_direct_io(i64::from(flags))?;
    let args = [
        fdarg(&dirfd),
        cstr(path),
        i64::from(flags),
        i64::from(mode),
        0,
        0,
    ];
    // SAFETY: `path` is NUL-terminated and outlives the call.
    to_fd(unsafe { syscall6(nr(b::__NR_openat), args) })
}

/// `openat2(2)`: opens `path` with the extended `open_how` (kernel `O_*`/`RESOLVE_*` values).
pub fn openat2(dirfd: impl AsKernelFd, path: &CStr, how: &b::open_how) -> Result<KernelFd, Errno> {
    refuse_direct_io(how.flags as i64)?;
    let size = len(std::mem::size_of::<b::open_how>());
    let args = [fdarg(&dirfd), cstr(path), ptr(how), size, 0, 0];
    // SAFETY: `path` is NUL-terminated; `how` is a readable `open_how` of the size passed.
    to_fd(unsafe { syscall6(nr(b::__NR_openat2), args) })
}

/// `close(2)`: closes `fd`, reporting the error that dropping it would only log.
pub fn close(fd: KernelFd) -> Result<(), Errno> {
    close_raw(fd.into_raw())
}

/// `dup(2)`: a new descriptor for the same open file.
pub fn dup(fd: impl AsKernelFd) -> Result<KernelFd, Errno> {
    // SAFETY: no pointer arguments.
    to_fd(unsafe { syscall6(nr(b::__NR_dup), [fdarg(&fd), 0, 0, 0, 0, 0]) })
}

/// `pipe2(2)`: a pipe inside the kernel, as (read end, write end).
pub fn pipe2(flags: i32) -> Result<(KernelFd, KernelFd), Errno> {
    let mut fds = [-1i32; 2];
    let args = [mut_ptr(fds.as_mut_ptr()), i64::from(flags), 0, 0, 0, 0];
    // SAFETY: `fds` is a writable `int[2]`.
    to_unit(unsafe { syscall6(nr(b::__NR_pipe2), args) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are new and owned by nobody else.
    Ok(unsafe { (KernelFd::from_raw(fds[0]), KernelFd::from_raw(fds[1])) })
}

// ---------------------------------------------------------------------------------------------
// Data

/// `read(2)`: reads into `buf`; returns the byte count (0 at end of file).
pub fn read(fd: impl AsKernelFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let args = [
        fdarg(&fd),
        mut_ptr(buf.as_mut_ptr()),
        len(buf.len()),
        0,
        0,
        0,
    ];
    // SAFETY: `buf` is writable for the length passed.
    to_usize(unsafe { syscall6(nr(b::__NR_read), args) })
}

/// `write(2)`: writes from `buf`; returns the byte count.
pub fn write(fd: impl AsKernelFd, buf: &[u8]) -> Result<usize, Errno> {
    let args = [fdarg(&fd), ptr(buf.as_ptr()), len(buf.len()), 0, 0, 0];
    // SAFETY: `buf` is readable for the length passed.
    to_usize(unsafe { syscall6(nr(b::__NR_write), args) })
}

/// `pread64(2)`: reads into `buf` at `offset` without moving the file position.
pub fn pread64(fd: impl AsKernelFd, buf: &mut [u8], offset: i64) -> Result<usize, Errno> {
    let args = [
        fdarg(&fd),
        mut_ptr(buf.as_mut_ptr()),
        len(buf.len()),
        offset,
        0,
        0,
    ];
    // SAFETY: `buf` is writable for the length passed.
    to_usize(unsafe { syscall6(nr(b::__NR_pread64), args) })
}

/// `pwrite64(2)`: writes `buf` at `offset` without moving the file position.
pub fn pwrite64(fd: impl AsKernelFd, buf: &[u8], offset: i64) -> Result<usize, Errno> {
    let args = [fdarg(&fd), ptr(buf.as_ptr()), len(buf.len()), offset, 0, 0];
    // SAFETY: `buf` is readable for the length passed.
    to_usize(unsafe { syscall6(nr(b::__NR_pwrite64), args) })
}

/// `readv(2)`: scatter read into `bufs`.
pub fn readv(fd: impl AsKernelFd, bufs: &mut [IoSliceMut<'_>]) -> Result<usize, Errno> {
    let args = [
        fdarg(&fd),
        mut_ptr(bufs.as_mut_ptr()),
        len(bufs.len()),
        0,
        0,
        0,
    ];
    // SAFETY: `IoSliceMut` is ABI-compatible with `struct iovec` (std guarantees it on Unix,
    // and the kernel's iovec is the same pointer + size_t pair); each one describes a writable
    // buffer borrowed for the call.
    to_usize(unsafe { syscall6(nr(b::__NR_readv), args) })
}

/// `writev(2)`: gather write from `bufs`.
pub fn writev(fd: impl AsKernelFd, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
    let args = [fdarg(&fd), ptr(bufs.as_ptr()), len(bufs.len()), 0, 0, 0];
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`; each one describes a readable
    // buffer borrowed for the call.
    to_usize(unsafe { syscall6(nr(b::__NR_writev), args) })
}

/// `lseek(2)`: moves the file position (`SEEK_SET`, `SEEK_CUR`, `SEEK_END`, `SEEK_DATA`,
/// `SEEK_HOLE`); returns the new position.
pub fn lseek(fd: impl AsKernelFd, offset: i64, whence: u32) -> Result<i64, Errno> {
    // SAFETY: no pointer arguments.
    Errno::from_ret(unsafe {
        syscall6(
            nr(b::__NR_lseek),
            [fdarg(&fd), offset, i64::from(whence), 0, 0, 0],
        )
    })
}

/// `copy_file_range(2)`: copies up to `len` bytes between files inside the kernel.
pub fn copy_file_range(
    fd_in: impl AsKernelFd,
    off_in: Option<&mut i64>,
    fd_out: impl AsKernelFd,
    off_out: Option<&mut i64>,
    count: usize,
    flags: u32,
) -> Result<usize, Errno> {
    let off_in = off_in.map_or(0, |o| mut_ptr(o as *mut i64));
    let off_out = off_out.map_or(0, |o| mut_ptr(o as *mut i64));
    let args = [
        fdarg(&fd_in),
        off_in,
        fdarg(&fd_out),
        off_out,
        len(count),
        i64::from(flags),
    ];
    // SAFETY: the offsets are null or exclusive borrows of `loff_t`s the kernel updates.
    to_usize(unsafe { syscall6(nr(b::__NR_copy_file_range), args) })
}

/// `getdents64(2)`: fills `buf` with directory records; parse them with
/// [`abi::dirents`](super::abi::dirents). Returns the bytes used (0 at end of directory).
pub fn getdents64(fd: impl AsKernelFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let args = [
        fdarg(&fd),
        mut_ptr(buf.as_mut_ptr()),
        len(buf.len()),
        0,
        0,
        0,
    ];
    // SAFETY: `buf` is writable for the length passed.
    to_usize(unsafe { syscall6(nr(b::__NR_getdents64), args) })
}

// ---------------------------------------------------------------------------------------------
// Metadata

/// `statx(2)`: the attributes in `mask` (kernel `STATX_*`) of `path` relative to `dirfd`
/// (`AT_EMPTY_PATH` with `c""` stats `dirfd` itself).
pub fn statx(dirfd: impl AsKernelFd, path: &CStr, flags: i32, mask: u32) -> Result<Statx, Errno> {
    let mut st: b::statx = zeroed();
    let args = [
        fdarg(&dirfd),
        cstr(path),
        i64::from(flags),
        i64::from(mask),
        mut_ptr(&mut st),
        0,
    ];
    // SAFETY: `path` is NUL-terminated; `st` is a writable `struct statx`.
    to_unit(unsafe { syscall6(nr(b::__NR_statx), args) })?;
    Ok(Statx::from_kernel(&st))
}

/// `statfs(2)`: statistics of the filesystem containing `path`.
pub fn statfs(path: &CStr) -> Result<StatFs, Errno> {
    let mut st: b::statfs = zeroed();
    let args = [cstr(path), mut_ptr(&mut st), 0, 0, 0, 0];
    // SAFETY: `path` is NUL-terminated; `st` is a writable `struct statfs`.
    to_unit(unsafe { syscall6(nr(b::__NR_statfs), args) })?;
    Ok(StatFs::from_kernel(&st))
}

/// `fstatfs(2)`: statistics of the filesystem containing `fd`.
pub fn fstatfs(fd: impl AsKernelFd) -> Result<StatFs, Errno> {
    let mut st: b::statfs = zeroed();
    let args = [fdarg(&fd), mut_ptr(&mut st), 0, 0, 0, 0];
    // SAFETY: `st` is a writable `struct statfs`.
    to_unit(unsafe { syscall6(nr(b::__NR_fstatfs), args) })?;
    Ok(StatFs::from_kernel(&st))
}

/// `readlinkat(2)`: reads a symlink's target into `buf` (not NUL-terminated); returns its
/// length, which equals `buf.len()` if it may have been truncated.
pub fn readlinkat(dirfd: impl AsKernelFd, path: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    let args = [
        fdarg(&dirfd),
        cstr(path),
        mut_ptr(buf.as_mut_ptr()),
        len(buf.len()),
        0,
        0,
    ];
    // SAFETY: `path` is NUL-terminated; `buf` is writable for the length passed.
    to_usize(unsafe { syscall6(nr(b::__NR_readlinkat), args) })
}

/// `fchmodat(2)` (the syscall, which has no flags): changes permission bits.
pub fn fchmodat(dirfd: impl AsKernelFd, path: &CStr, mode: u32) -> Result<(), Errno> {
    let args = [fdarg(&dirfd), cstr(path), i64::from(mode), 0, 0, 0];
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_fchmodat), args) })
}

/// `fchmodat2(2)`: `fchmodat` with `AT_SYMLINK_NOFOLLOW`/`AT_EMPTY_PATH` flags.
pub fn fchmodat2(dirfd: impl AsKernelFd, path: &CStr, mode: u32, flags: i32) -> Result<(), Errno> {
    let args = [
        fdarg(&dirfd),
        cstr(path),
        i64::from(mode),
        i64::from(flags),
        0,
        0,
    ];
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_fchmodat2), args) })
}

/// `fchownat(2)`: changes owner and group (`u32::MAX` leaves one unchanged).
pub fn fchownat(
    dirfd: impl AsKernelFd,
    path: &CStr,
    uid: u32,
    gid: u32,
    flags: i32,
) -> Result<(), Errno> {
    let args = [
        fdarg(&dirfd),
        cstr(path),
        i64::from(uid),
        i64::from(gid),
        i64::from(flags),
        0,
    ];
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_fchownat), args) })
}

/// `utimensat(2)`: sets access and modification times (see
/// [`abi::utimens_to_kernel`](super::abi::utimens_to_kernel)); `times = None` sets both to now,
/// `path = None` acts on `dirfd` itself.
pub fn utimensat(
    dirfd: impl AsKernelFd,
    path: Option<&CStr>,
    times: Option<&[b::__kernel_timespec; 2]>,
    flags: i32,
) -> Result<(), Errno> {
    let times = times.map_or(0, |t| ptr(t.as_ptr()));
    let args = [fdarg(&dirfd), opt_cstr(path), times, i64::from(flags), 0, 0];
    // SAFETY: `path` is null or NUL-terminated; `times` is null or a readable array of two
    // `__kernel_timespec`.
    to_unit(unsafe { syscall6(nr(b::__NR_utimensat), args) })
}

/// `faccessat2(2)`: checks `mode` (`R_OK`...) access with the calling thread's credentials.
pub fn faccessat2(dirfd: impl AsKernelFd, path: &CStr, mode: i32, flags: i32) -> Result<(), Errno> {
    let args = [
        fdarg(&dirfd),
        cstr(path),
        i64::from(mode),
        i64::from(flags),
        0,
        0,
    ];
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_faccessat2), args) })
}

// ---------------------------------------------------------------------------------------------
// Namespace operations

/// `mkdirat(2)`: creates a directory.
pub fn mkdirat(dirfd: impl AsKernelFd, path: &CStr, mode: u32) -> Result<(), Errno> {
    let args = [fdarg(&dirfd), cstr(path), i64::from(mode), 0, 0, 0];
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_mkdirat), args) })
}

/// `mknodat(2)`: creates a node; `dev` is in the kernel's 32-bit encoding
/// ([`abi::host_dev_to_kernel`](super::abi::host_dev_to_kernel)).
pub fn mknodat(dirfd: impl AsKernelFd, path: &CStr, mode: u32, dev: u32) -> Result<(), Errno> {
    let args = [
        fdarg(&dirfd),
        cstr(path),
        i64::from(mode),
        i64::from(dev),
        0,
        0,
    ];
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_mknodat), args) })
}

/// `unlinkat(2)`: removes a name (a directory with `AT_REMOVEDIR`).
pub fn unlinkat(dirfd: impl AsKernelFd, path: &CStr, flags: i32) -> Result<(), Errno> {
    let args = [fdarg(&dirfd), cstr(path), i64::from(flags), 0, 0, 0];
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_unlinkat), args) })
}

/// `renameat2(2)`: renames with kernel `RENAME_*` flags.
pub fn renameat2(
    olddirfd: impl AsKernelFd,
    oldpath: &CStr,
    newdirfd: impl AsKernelFd,
    newpath: &CStr,
    flags: u32,
) -> Result<(), Errno> {
    let args = [
        fdarg(&olddirfd),
        cstr(oldpath),
        fdarg(&newdirfd),
        cstr(newpath),
        i64::from(flags),
        0,
    ];
    // SAFETY: both paths are NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_renameat2), args) })
}

/// `linkat(2)`: creates a hard link (`AT_EMPTY_PATH` links an fd).
pub fn linkat(
    olddirfd: impl AsKernelFd,
    oldpath: &CStr,
    newdirfd: impl AsKernelFd,
    newpath: &CStr,
    flags: i32,
) -> Result<(), Errno> {
    let args = [
        fdarg(&olddirfd),
        cstr(oldpath),
        fdarg(&newdirfd),
        cstr(newpath),
        i64::from(flags),
        0,
    ];
    // SAFETY: both paths are NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_linkat), args) })
}

/// `symlinkat(2)`: creates `linkpath` pointing at `target`.
pub fn symlinkat(target: &CStr, newdirfd: impl AsKernelFd, linkpath: &CStr) -> Result<(), Errno> {
    let args = [cstr(target), fdarg(&newdirfd), cstr(linkpath), 0, 0, 0];
    // SAFETY: both strings are NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_symlinkat), args) })
}

/// `chdir(2)`: changes the kernel-wide working directory (shared by all host threads).
pub fn chdir(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_chdir), [cstr(path), 0, 0, 0, 0, 0]) })
}

/// `fchdir(2)`: changes the working directory to `fd`.
pub fn fchdir(fd: impl AsKernelFd) -> Result<(), Errno> {
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_fchdir), [fdarg(&fd), 0, 0, 0, 0, 0]) })
}

/// `umask(2)`: sets the kernel-wide file creation mask; returns the previous one.
pub fn umask(mask: u32) -> Result<u32, Errno> {
    // SAFETY: no pointer arguments.
    Errno::from_ret(unsafe { syscall6(nr(b::__NR_umask), [i64::from(mask), 0, 0, 0, 0, 0]) })
        .map(|m| m as u32)
}

// ---------------------------------------------------------------------------------------------
// Size, space and durability

/// `ftruncate(2)`: sets the size of an open file.
pub fn ftruncate(fd: impl AsKernelFd, length: i64) -> Result<(), Errno> {
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_ftruncate), [fdarg(&fd), length, 0, 0, 0, 0]) })
}

/// `truncate(2)`: sets the size of the file at `path`.
pub fn truncate(path: &CStr, length: i64) -> Result<(), Errno> {
    // SAFETY: `path` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_truncate), [cstr(path), length, 0, 0, 0, 0]) })
}

/// `fallocate(2)`: allocates or manipulates space with a kernel `FALLOC_FL_*` mode.
pub fn fallocate(fd: impl AsKernelFd, mode: i32, offset: i64, length: i64) -> Result<(), Errno> {
    let args = [fdarg(&fd), i64::from(mode), offset, length, 0, 0];
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_fallocate), args) })
}

/// `fsync(2)`: flushes a file's data and metadata to the disk.
pub fn fsync(fd: impl AsKernelFd) -> Result<(), Errno> {
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_fsync), [fdarg(&fd), 0, 0, 0, 0, 0]) })
}

/// `fdatasync(2)`: flushes a file's data (and the metadata needed to read it).
pub fn fdatasync(fd: impl AsKernelFd) -> Result<(), Errno> {
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_fdatasync), [fdarg(&fd), 0, 0, 0, 0, 0]) })
}

/// `syncfs(2)`: flushes the filesystem containing `fd`.
pub fn syncfs(fd: impl AsKernelFd) -> Result<(), Errno> {
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_syncfs), [fdarg(&fd), 0, 0, 0, 0, 0]) })
}

/// `sync(2)`: flushes every filesystem.
pub fn sync() -> Result<(), Errno> {
    // SAFETY: no arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_sync), [0; 6]) })
}

// ---------------------------------------------------------------------------------------------
// Extended attributes

fn setxattr_common(
    nr_: i64,
    target: i64,
    name: &CStr,
    value: &[u8],
    flags: i32,
) -> Result<(), Errno> {
    let args = [
        target,
        cstr(name),
        ptr(value.as_ptr()),
        len(value.len()),
        i64::from(flags),
        0,
    ];
    // SAFETY: `target` is a NUL-terminated path or an fd (checked by the callers' types);
    // `name` is NUL-terminated; `value` is readable for the length passed.
    to_unit(unsafe { syscall6(nr_, args) })
}

fn getxattr_common(nr_: i64, target: i64, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    let args = [
        target,
        cstr(name),
        mut_ptr(buf.as_mut_ptr()),
        len(buf.len()),
        0,
        0,
    ];
    // SAFETY: as in `setxattr_common`; `buf` is writable for the length passed.
    to_usize(unsafe { syscall6(nr_, args) })
}

fn listxattr_common(nr_: i64, target: i64, buf: &mut [u8]) -> Result<usize, Errno> {
    let args = [target, mut_ptr(buf.as_mut_ptr()), len(buf.len()), 0, 0, 0];
    // SAFETY: `target` as in `setxattr_common`; `buf` is writable for the length passed.
    to_usize(unsafe { syscall6(nr_, args) })
}

fn removexattr_common(nr_: i64, target: i64, name: &CStr) -> Result<(), Errno> {
    // SAFETY: `target` as in `setxattr_common`; `name` is NUL-terminated.
    to_unit(unsafe { syscall6(nr_, [target, cstr(name), 0, 0, 0, 0]) })
}

/// `setxattr(2)`: sets an attribute of `path`, following symlinks (kernel `XATTR_*` flags).
pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> Result<(), Errno> {
    setxattr_common(nr(b::__NR_setxattr), cstr(path), name, value, flags)
}

/// `lsetxattr(2)`: sets an attribute of `path` itself (no symlink following).
pub fn lsetxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> Result<(), Errno> {
    setxattr_common(nr(b::__NR_lsetxattr), cstr(path), name, value, flags)
}

/// `fsetxattr(2)`: sets an attribute of an open file.
pub fn fsetxattr(fd: impl AsKernelFd, name: &CStr, value: &[u8], flags: i32) -> Result<(), Errno> {
    setxattr_common(nr(b::__NR_fsetxattr), fdarg(&fd), name, value, flags)
}

/// `getxattr(2)`: reads an attribute into `buf` (an empty `buf` asks for the size).
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    getxattr_common(nr(b::__NR_getxattr), cstr(path), name, buf)
}

/// `lgetxattr(2)`: `getxattr` without following symlinks.
pub fn lgetxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    getxattr_common(nr(b::__NR_lgetxattr), cstr(path), name, buf)
}

/// `fgetxattr(2)`: reads an attribute of an open file.
pub fn fgetxattr(fd: impl AsKernelFd, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    getxattr_common(nr(b::__NR_fgetxattr), fdarg(&fd), name, buf)
}

/// `listxattr(2)`: NUL-separated attribute names into `buf` (an empty `buf` asks for the size).
pub fn listxattr(path: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    listxattr_common(nr(b::__NR_listxattr), cstr(path), buf)
}

/// `llistxattr(2)`: `listxattr` without following symlinks.
pub fn llistxattr(path: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    listxattr_common(nr(b::__NR_llistxattr), cstr(path), buf)
}

/// `flistxattr(2)`: lists the attributes of an open file.
pub fn flistxattr(fd: impl AsKernelFd, buf: &mut [u8]) -> Result<usize, Errno> {
    listxattr_common(nr(b::__NR_flistxattr), fdarg(&fd), buf)
}

/// `removexattr(2)`: removes an attribute, following symlinks.
pub fn removexattr(path: &CStr, name: &CStr) -> Result<(), Errno> {
    removexattr_common(nr(b::__NR_removexattr), cstr(path), name)
}

/// `lremovexattr(2)`: removes an attribute without following symlinks.
pub fn lremovexattr(path: &CStr, name: &CStr) -> Result<(), Errno> {
    removexattr_common(nr(b::__NR_lremovexattr), cstr(path), name)
}

/// `fremovexattr(2)`: removes an attribute of an open file.
pub fn fremovexattr(fd: impl AsKernelFd, name: &CStr) -> Result<(), Errno> {
    removexattr_common(nr(b::__NR_fremovexattr), fdarg(&fd), name)
}

// ---------------------------------------------------------------------------------------------
// Mounts

/// Size of the buffer `mount` copies its data argument from (`copy_mount_options` always
/// copies a whole page, so a shorter string would be over-read).
const MOUNT_DATA_LEN: usize = 4096;

/// `mount(2)`: mounts `source` on `target` with kernel `MS_*` flags. `data` (filesystem
/// options) is copied into a page-sized buffer first; `EINVAL` if it does not fit.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: u64,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    let page = match data {
        Some(d) => {
            let bytes = d.to_bytes_with_nul();
            if bytes.len() > MOUNT_DATA_LEN {
                return Err(Errno::EINVAL);
            }
            let mut page = vec![0u8; MOUNT_DATA_LEN];
            page[..bytes.len()].copy_from_slice(bytes);
            Some(page)
        }
        None => None,
    };
    let data = page.as_ref().map_or(0, |p| ptr(p.as_ptr()));
    let args = [
        opt_cstr(source),
        cstr(target),
        opt_cstr(fstype),
        flags as i64,
        data,
        0,
    ];
    // SAFETY: the strings are null or NUL-terminated; `data` is null or a readable buffer of a
    // full page, which is what the kernel copies.
    to_unit(unsafe { syscall6(nr(b::__NR_mount), args) })
}

/// `umount2(2)`: unmounts `target` (`MNT_DETACH`, `MNT_FORCE`... flags).
pub fn umount2(target: &CStr, flags: i32) -> Result<(), Errno> {
    let args = [cstr(target), i64::from(flags), 0, 0, 0, 0];
    // SAFETY: `target` is NUL-terminated.
    to_unit(unsafe { syscall6(nr(b::__NR_umount2), args) })
}

// ---------------------------------------------------------------------------------------------
// Credentials (per calling host thread: each has its own kernel task)

/// `setfsuid(2)`: sets the calling thread's filesystem uid; returns the previous one (the call
/// itself never reports failure: compare with a second call if it matters).
pub fn setfsuid(uid: u32) -> Result<u32, Errno> {
    // SAFETY: no pointer arguments.
    Errno::from_ret(unsafe { syscall6(nr(b::__NR_setfsuid), [i64::from(uid), 0, 0, 0, 0, 0]) })
        .map(|v| v as u32)
}

/// `setfsgid(2)`: sets the calling thread's filesystem gid; returns the previous one.
pub fn setfsgid(gid: u32) -> Result<u32, Errno> {
    // SAFETY: no pointer arguments.
    Errno::from_ret(unsafe { syscall6(nr(b::__NR_setfsgid), [i64::from(gid), 0, 0, 0, 0, 0]) })
        .map(|v| v as u32)
}

/// `setgroups(2)`: sets the calling thread's supplementary groups.
pub fn setgroups(groups: &[u32]) -> Result<(), Errno> {
    let args = [len(groups.len()), ptr(groups.as_ptr()), 0, 0, 0, 0];
    // SAFETY: `groups` is a readable array of `gid_t` of the length passed.
    to_unit(unsafe { syscall6(nr(b::__NR_setgroups), args) })
}

/// `getuid(2)`: the calling thread's real uid in the kernel.
pub fn getuid() -> Result<u32, Errno> {
    // SAFETY: no arguments.
    Errno::from_ret(unsafe { syscall6(nr(b::__NR_getuid), [0; 6]) }).map(|v| v as u32)
}

/// `getgid(2)`: the calling thread's real gid in the kernel.
pub fn getgid() -> Result<u32, Errno> {
    // SAFETY: no arguments.
    Errno::from_ret(unsafe { syscall6(nr(b::__NR_getgid), [0; 6]) }).map(|v| v as u32)
}

/// `getpid(2)`: the kernel's pid for the caller's task group (1 for every host thread).
pub fn getpid() -> Result<i32, Errno> {
    // SAFETY: no arguments.
    Errno::from_ret(unsafe { syscall6(nr(b::__NR_getpid), [0; 6]) }).map(|v| v as i32)
}

// ---------------------------------------------------------------------------------------------
// Locks

/// `flock(2)`: BSD whole-file lock (`LOCK_SH`, `LOCK_EX`, `LOCK_UN`, `| LOCK_NB`).
pub fn flock(fd: impl AsKernelFd, operation: i32) -> Result<(), Errno> {
    let args = [fdarg(&fd), i64::from(operation), 0, 0, 0, 0];
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_flock), args) })
}

/// The record-lock commands of `fcntl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockCmd {
    /// `F_GETLK`: report a conflicting process-associated lock.
    GetLk,
    /// `F_SETLK`: take or release a process-associated lock, failing on conflict.
    SetLk,
    /// `F_SETLKW`: like `SetLk` but wait.
    SetLkW,
    /// `F_OFD_GETLK`: report a conflicting open-file-description lock.
    OfdGetLk,
    /// `F_OFD_SETLK`: take or release an OFD lock, failing on conflict.
    OfdSetLk,
    /// `F_OFD_SETLKW`: like `OfdSetLk` but wait.
    OfdSetLkW,
}

impl LockCmd {
    fn to_kernel(self) -> i64 {
        (match self {
            LockCmd::GetLk => b::F_GETLK,
            LockCmd::SetLk => b::F_SETLK,
            LockCmd::SetLkW => b::F_SETLKW,
            LockCmd::OfdGetLk => b::F_OFD_GETLK,
            LockCmd::OfdSetLk => b::F_OFD_SETLK,
            LockCmd::OfdSetLkW => b::F_OFD_SETLKW,
        }) as i64
    }
}

/// `fcntl(F_GETFL)`: the kernel `O_*` status flags of an open file.
pub fn fcntl_getfl(fd: impl AsKernelFd) -> Result<i32, Errno> {
    let args = [fdarg(&fd), b::F_GETFL as i64, 0, 0, 0, 0];
    // SAFETY: F_GETFL takes no pointer.
    Errno::from_ret(unsafe { syscall6(nr(b::__NR_fcntl), args) }).map(|v| v as i32)
}

/// `fcntl(F_SETFL)`: sets the kernel `O_*` status flags (`O_APPEND`, `O_NONBLOCK`, ...).
pub fn fcntl_setfl(fd: impl AsKernelFd, flags: i32) -> Result<(), Errno> {
    refuse_direct_io(i64::from(flags))?;
    let args = [fdarg(&fd), b::F_SETFL as i64, i64::from(flags), 0, 0, 0];
    // SAFETY: F_SETFL takes an integer, no pointer.
    to_unit(unsafe { syscall6(nr(b::__NR_fcntl), args) })
}

/// `fcntl(F_DUPFD_CLOEXEC)`: duplicates `fd` to the lowest free number `>= min`.
pub fn fcntl_dupfd_cloexec(fd: impl AsKernelFd, min: i32) -> Result<KernelFd, Errno> {
    let args = [
        fdarg(&fd),
        b::F_DUPFD_CLOEXEC as i64,
        i64::from(min),
        0,
        0,
        0,
    ];
    // SAFETY: F_DUPFD_CLOEXEC takes an integer, no pointer.
    to_fd(unsafe { syscall6(nr(b::__NR_fcntl), args) })
}

/// `fcntl(F_*LK*)`: record locks. Returns the lock as the kernel left it (for the `GetLk`
/// commands: the conflicting lock, or `lock_type == Unlock` if none).
pub fn fcntl_lock(fd: impl AsKernelFd, cmd: LockCmd, lock: &Flock) -> Result<Flock, Errno> {
    let mut k = lock.to_kernel()?;
    let args = [fdarg(&fd), cmd.to_kernel(), mut_ptr(&mut k), 0, 0, 0];
    // SAFETY: the lock commands take a pointer to a `struct flock`, readable and writable.
    to_unit(unsafe { syscall6(nr(b::__NR_fcntl), args) })?;
    Flock::from_kernel(&k)
}

// ---------------------------------------------------------------------------------------------
// Time and system

/// `clock_gettime(2)`: reads one of the kernel's clocks.
pub fn clock_gettime(clock: i32) -> Result<Timestamp, Errno> {
    let mut ts: b::__kernel_timespec = zeroed();
    let args = [i64::from(clock), mut_ptr(&mut ts), 0, 0, 0, 0];
    // SAFETY: `ts` is a writable `__kernel_timespec`.
    to_unit(unsafe { syscall6(nr(b::__NR_clock_gettime), args) })?;
    Timestamp::from_kernel(&ts)
}

/// `clock_settime(2)`: sets one of the kernel's clocks (only `CLOCK_REALTIME` is settable).
pub fn clock_settime(clock: i32, time: Timestamp) -> Result<(), Errno> {
    let ts = time.to_kernel();
    let args = [i64::from(clock), ptr(&ts), 0, 0, 0, 0];
    // SAFETY: `ts` is a readable `__kernel_timespec`.
    to_unit(unsafe { syscall6(nr(b::__NR_clock_settime), args) })
}

/// `nanosleep(2)`: sleeps inside the kernel (the calling thread's task blocks, letting others
/// run). `EINVAL` if `d` has more seconds than `i64` holds.
pub fn nanosleep(d: Duration) -> Result<(), Errno> {
    let sec = i64::try_from(d.as_secs()).map_err(|_| Errno::EINVAL)?;
    let ts = Timestamp::new(sec, i64::from(d.subsec_nanos()))?.to_kernel();
    let args = [ptr(&ts), 0, 0, 0, 0, 0];
    // SAFETY: `ts` is a readable `__kernel_timespec`; the remainder pointer is null.
    to_unit(unsafe { syscall6(nr(b::__NR_nanosleep), args) })
}

/// `uname(2)`: the kernel's identification strings.
pub fn uname() -> Result<NewUtsname, Errno> {
    let mut u = NewUtsname::default();
    let args = [mut_ptr(&mut u), 0, 0, 0, 0, 0];
    // SAFETY: `u` is a writable `struct new_utsname` (same layout: six `char[65]`).
    to_unit(unsafe { syscall6(nr(b::__NR_uname), args) })?;
    Ok(u)
}

/// `ioctl(BLKROSET)`: makes a kernel block device read-only (or writable
/// again), below any filesystem on it.
pub fn ioctl_blkroset(fd: impl AsKernelFd, read_only: bool) -> Result<(), Errno> {
    /// `_IO(0x12, 93)` from `include/uapi/linux/fs.h`.
    const BLKROSET: i64 = 0x125D;
    let flag: i32 = read_only.into();
    let args = [fdarg(&fd), BLKROSET, ptr(&flag), 0, 0, 0];
    // SAFETY: BLKROSET reads one int through the pointer, which points at
    // `flag` for the duration of the call.
    to_unit(unsafe { syscall6(nr(b::__NR_ioctl), args) })
}

/// An inode-attribute ioctl (`lsattr`/`chattr`) on `fd`: `arg` is the argument, written by
/// the kernel for a get and read by it for a set; `EINVAL` unless it is exactly the size the
/// command takes.
pub fn ioctl_file_attr(
    fd: impl AsKernelFd,
    request: FileAttrIoctl,
    arg: &mut [u8],
) -> Result<(), Errno> {
    if arg.len() != request.arg_size() {
        return Err(Errno::EINVAL);
    }
    let args = [
        fdarg(&fd),
        i64::from(request.kernel_cmd()),
        mut_ptr(arg.as_mut_ptr()),
        0,
        0,
        0,
    ];
    // SAFETY: each of these commands reads or writes exactly `arg_size()` bytes through the
    // pointer, and `arg` is that long and writable for the duration of the call.
    to_unit(unsafe { syscall6(nr(b::__NR_ioctl), args) })
}

/// `BLKRASET`: the block device's read-ahead window, in 512-byte sectors.
pub fn ioctl_blkraset(fd: impl AsKernelFd, sectors: u64) -> Result<(), Errno> {
    /// `_IO(0x12, 98)` from `include/uapi/linux/fs.h`.
    const BLKRASET: i64 = 0x1262;
    let sectors = i64::try_from(sectors).map_err(|_| Errno::EINVAL)?;
    let args = [fdarg(&fd), BLKRASET, sectors, 0, 0, 0];
    // SAFETY: BLKRASET takes its argument by value; no memory is passed.
    to_unit(unsafe { syscall6(nr(b::__NR_ioctl), args) })
}

/// `O_DIRECT` makes the kernel pin the caller's pages (`get_user_pages`),
/// which a no-MMU library kernel cannot do for host memory: it would fault
/// inside the kernel and take the process down. Refuse it up front.
fn refuse_direct_io(flags: i64) -> Result<(), Errno> {
    if flags & i64::from(b::O_DIRECT) != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// `name_to_handle_at(2)`: the persistent handle of `path` (relative to `dirfd`; with
/// `AT_EMPTY_PATH` and an empty path, of `dirfd` itself) and its mount id. `EOPNOTSUPP` when
/// the filesystem cannot export handles.
pub fn name_to_handle_at(
    dirfd: impl AsKernelFd,
    path: &CStr,
    flags: i32,
) -> Result<(FileHandle, i32), Errno> {
    let mut buf = FileHandle::kernel_buffer();
    let mut mount_id: i32 = 0;
    let args = [
        fdarg(&dirfd),
        cstr(path),
        mut_ptr(buf.as_mut_ptr()),
        mut_ptr(&mut mount_id),
        i64::from(flags),
        0,
    ];
    // SAFETY: `path` is NUL-terminated; `buf` is a `struct file_handle` whose `handle_bytes`
    // says how much room follows the header; `mount_id` is a writable int.
    to_unit(unsafe { syscall6(nr(b::__NR_name_to_handle_at), args) })?;
    Ok((FileHandle::from_kernel(&buf)?, mount_id))
}

/// `open_by_handle_at(2)`: opens the inode `handle` names on the filesystem of `mount_fd`.
/// Needs `CAP_DAC_READ_SEARCH`; `ESTALE` once the inode is gone.
pub fn open_by_handle_at(
    mount_fd: impl AsKernelFd,
    handle: &FileHandle,
    flags: i32,
) -> Result<KernelFd, Errno> {
    refuse_direct_io(i64::from(flags))?;
    let buf = handle.to_kernel();
    let args = [
        fdarg(&mount_fd),
        ptr(buf.as_ptr()),
        i64::from(flags),
        0,
        0,
        0,
    ];
    // SAFETY: `buf` is a complete, readable `struct file_handle`.
    to_fd(unsafe { syscall6(nr(b::__NR_open_by_handle_at), args) })
}

/// `statx` of the inode `handle` names on the filesystem of `mount_fd`, without opening it:
/// this kernel's own call (`kernel/arch/lklrs/kernel/fhandle.c`), which replaces
/// `open_by_handle_at` + `statx` + `close`. Needs `CAP_DAC_READ_SEARCH`, like
/// `open_by_handle_at`. The answer is `statx`'s without the mount id (`STATX_MNT_ID`).
/// `ESTALE` once the inode is gone.
pub fn statx_by_handle(
    mount_fd: impl AsKernelFd,
    handle: &FileHandle,
    mask: u32,
) -> Result<Statx, Errno> {
    let buf = handle.to_kernel();
    let mut st: b::statx = zeroed();
    let args = [
        fdarg(&mount_fd),
        ptr(buf.as_ptr()),
        i64::from(b::AT_STATX_SYNC_AS_STAT),
        i64::from(mask),
        mut_ptr(&mut st),
        0,
    ];
    // SAFETY: `buf` is a complete, readable `struct file_handle`; `st` is a writable
    // `struct statx`.
    to_unit(unsafe { syscall6(nr(b::__NR_lklrs_statx_handle), args) })?;
    Ok(Statx::from_kernel(&st))
}

/// `prlimit64(2)` on the calling process: sets resource `resource` (`RLIMIT_*`) to
/// `soft`/`hard` and returns the previous (soft, hard).
pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> Result<(u64, u64), Errno> {
    let new = [soft, hard];
    let mut old = [0u64; 2];
    let args = [
        0,
        i64::from(resource),
        ptr(new.as_ptr()),
        mut_ptr(old.as_mut_ptr()),
        0,
        0,
    ];
    // SAFETY: `new` and `old` are `struct rlimit64` (two u64), readable and writable.
    to_unit(unsafe { syscall6(nr(b::__NR_prlimit64), args) })?;
    Ok((old[0], old[1]))
}

/// `setresuid(2)` for the calling kernel task only (every host thread is its own task).
pub fn setresuid(ruid: u32, euid: u32, suid: u32) -> Result<(), Errno> {
    let args = [i64::from(ruid), i64::from(euid), i64::from(suid), 0, 0, 0];
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_setresuid), args) })
}

/// `setresgid(2)` for the calling kernel task only.
pub fn setresgid(rgid: u32, egid: u32, sgid: u32) -> Result<(), Errno> {
    let args = [i64::from(rgid), i64::from(egid), i64::from(sgid), 0, 0, 0];
    // SAFETY: no pointer arguments.
    to_unit(unsafe { syscall6(nr(b::__NR_setresgid), args) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lkl::fd::CWD;

    #[test]
    fn direct_io_is_refused_before_the_kernel_sees_it() {
        let flags = (b::O_RDONLY | b::O_DIRECT) as i32;
        assert_eq!(openat(CWD, c"/x", flags, 0).unwrap_err(), Errno::EINVAL);
    }

    #[test]
    fn path_conversion() {
        let c = path_to_cstring(Path::new("/a/b")).expect("no NUL");
        assert_eq!(c.as_bytes(), b"/a/b");
        let bad = std::ffi::OsStr::from_bytes(b"a\0b");
        assert_eq!(path_to_cstring(Path::new(bad)), Err(Errno::EINVAL));
    }

    #[test]
    fn calls_fail_cleanly_without_a_kernel() {
        // No unit test boots the kernel, so every wrapper must refuse instead of calling in.
        assert!(!kernel::is_running());
        assert_eq!(getpid(), Err(Errno::ESHUTDOWN));
        assert_eq!(
            openat(CWD, c"/", b::O_RDONLY as i32, 0).map(|_| ()),
            Err(Errno::ESHUTDOWN)
        );
        assert_eq!(sync(), Err(Errno::ESHUTDOWN));
    }

    #[test]
    fn mount_data_must_fit_a_page() {
        let long = CString::new(vec![b'a'; MOUNT_DATA_LEN]).expect("no NUL");
        assert_eq!(
            mount(None, c"/mnt", Some(c"ext4"), 0, Some(&long)),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn zeroed_is_zero() {
        let s: b::statx = zeroed();
        assert_eq!(s.stx_ino, 0);
        let t: libc::timespec = zeroed();
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 0));
    }
}
