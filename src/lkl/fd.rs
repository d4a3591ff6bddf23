//! File descriptors of the in-process kernel.
//!
//! A kernel fd is a number in the *kernel's* fd table, shared by every host thread that makes
//! syscalls into it. It means nothing to the host OS, so it is deliberately a different type
//! from `std::os::fd::OwnedFd`: passing one where the other is expected does not compile.
//!
//! - [`KernelFd`] owns its descriptor and closes it (through the kernel's `close`) on drop.
//! - [`BorrowedKernelFd`] is a `Copy` borrow, tied to the lifetime of its owner.
//! - [`AsKernelFd`] is what the [`sys`] wrappers accept.

use std::fmt;
use std::marker::PhantomData;

use super::abi::AT_FDCWD;
use super::sys;

/// An owned kernel file descriptor; closed with the kernel's `close` when dropped.
///
/// Close errors on drop are logged at debug level and otherwise ignored; call
/// [`sys::close`] to see them.
pub struct KernelFd {
    fd: i32,
}

impl KernelFd {
    /// Takes ownership of a raw kernel descriptor.
    ///
    /// # Safety
    /// `fd` must be an open kernel descriptor that nothing else owns or will close.
    pub unsafe fn from_raw(fd: i32) -> KernelFd {
        KernelFd { fd }
    }

    /// The raw number, still owned by `self`.
    pub fn as_raw(&self) -> i32 {
        self.fd
    }

    /// Gives up ownership without closing.
    pub fn into_raw(self) -> i32 {
        let fd = self.fd;
        std::mem::forget(self);
        fd
    }
}

impl Drop for KernelFd {
    fn drop(&mut self) {
        if let Err(e) = sys::close_raw(self.fd) {
            tracing::debug!(fd = self.fd, "closing kernel fd failed: {e}");
        }
    }
}

impl fmt::Debug for KernelFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KernelFd").field(&self.fd).finish()
    }
}

/// A borrowed kernel file descriptor, valid for `'a`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BorrowedKernelFd<'a> {
    fd: i32,
    _owner: PhantomData<&'a KernelFd>,
}

/// The kernel's "current working directory" pseudo-descriptor (`AT_FDCWD`) for `*at` calls.
pub const CWD: BorrowedKernelFd<'static> = BorrowedKernelFd {
    fd: AT_FDCWD,
    _owner: PhantomData,
};

impl BorrowedKernelFd<'_> {
    /// Borrows a raw kernel descriptor.
    ///
    /// # Safety
    /// `fd` must stay open for the chosen lifetime (or be `AT_FDCWD`).
    pub unsafe fn borrow_raw(fd: i32) -> Self {
        BorrowedKernelFd {
            fd,
            _owner: PhantomData,
        }
    }

    /// The raw number.
    pub fn as_raw(&self) -> i32 {
        self.fd
    }
}

impl fmt::Debug for BorrowedKernelFd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fd == AT_FDCWD {
            f.write_str("BorrowedKernelFd(AT_FDCWD)")
        } else {
            f.debug_tuple("BorrowedKernelFd").field(&self.fd).finish()
        }
    }
}

/// Anything that can lend a kernel file descriptor.
pub trait AsKernelFd {
    /// Borrows the descriptor.
    fn as_kernel_fd(&self) -> BorrowedKernelFd<'_>;
}

impl AsKernelFd for KernelFd {
    fn as_kernel_fd(&self) -> BorrowedKernelFd<'_> {
        BorrowedKernelFd {
            fd: self.fd,
            _owner: PhantomData,
        }
    }
}

impl AsKernelFd for BorrowedKernelFd<'_> {
    fn as_kernel_fd(&self) -> BorrowedKernelFd<'_> {
        *self
    }
}

impl<T: AsKernelFd + ?Sized> AsKernelFd for &T {
    fn as_kernel_fd(&self) -> BorrowedKernelFd<'_> {
        (**self).as_kernel_fd()
    }
}

impl<T: AsKernelFd + ?Sized> AsKernelFd for std::sync::Arc<T> {
    fn as_kernel_fd(&self) -> BorrowedKernelFd<'_> {
        (**self).as_kernel_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_is_at_fdcwd() {
        assert_eq!(CWD.as_raw(), -100);
        assert_eq!(format!("{CWD:?}"), "BorrowedKernelFd(AT_FDCWD)");
    }

    #[test]
    fn into_raw_does_not_close() {
        // SAFETY: 12345 is not a real descriptor, and into_raw gives it straight back
        // without dropping, so close is never attempted.
        let fd = unsafe { KernelFd::from_raw(12345) };
        assert_eq!(fd.as_kernel_fd().as_raw(), 12345);
        assert_eq!(fd.into_raw(), 12345);
    }
}
