//! Kernel error numbers.
//!
//! Every syscall into the in-process kernel returns a `long`: non-negative on success, `-errno`
//! on failure. [`Errno::from_ret`] is the one place that turns such a return into a `Result`.
//!
//! The kernel uses the asm-generic errno numbering. On the hosts we build for (x86_64, aarch64,
//! riscv64, ...) the host's numbering is the same, so a kernel [`Errno`] can be handed to FUSE or
//! to `std::io::Error` unchanged; [`Errno::to_host`] is the single conversion point and the unit
//! test `kernel_errno_table_matches_host` checks every number against the `libc` crate.

#![allow(clippy::unnecessary_cast)] // bindgen's integer type for macros depends on its options

use std::fmt;
use std::io;
use std::num::NonZeroI32;

use super::bindings as b;

/// Largest value the kernel ever returns as `-errno` (`MAX_ERRNO` in `include/linux/err.h`).
pub const MAX_ERRNO: i32 = 4095;

/// A kernel error number: always in `1..=4095`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(NonZeroI32);

/// Builds a named constant from a bindgen errno value at compile time.
const fn errno_const(v: i32) -> Errno {
    match NonZeroI32::new(v) {
        Some(n) => Errno(n),
        None => panic!("errno constant is zero"),
    }
}

macro_rules! named_errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = errno_const(b::$name as i32);
            )*

            /// The symbolic name, for the errors this module names.
            pub fn name(self) -> Option<&'static str> {
                $(
                    if self == Self::$name {
                        return Some(stringify!($name));
                    }
                )*
                None
            }
        }
    };
}

named_errnos!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    ENOTBLK,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    ETXTBSY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    EPIPE,
    ERANGE,
    EDEADLK,
    ENAMETOOLONG,
    ENOLCK,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENODATA,
    EOVERFLOW,
    EBADFD,
    EILSEQ,
    EOPNOTSUPP,
    ESHUTDOWN,
    ETIMEDOUT,
    ESTALE,
    EUCLEAN,
    EDQUOT,
    ENOMEDIUM,
    ECANCELED,
);

impl Errno {
    /// `ENOTSUP`: the same number as `EOPNOTSUPP` on Linux.
    pub const ENOTSUP: Errno = Errno::EOPNOTSUPP;
    /// `EWOULDBLOCK`: the same number as `EAGAIN` on Linux.
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;

    /// Turns a raw syscall return into a `Result`: `>= 0` is `Ok`, `-e` is `Err(e)`.
    ///
    /// A negative value outside `-4095..=-1` cannot be an errno and becomes `EIO`.
    pub fn from_ret(ret: i64) -> Result<i64, Errno> {
        if ret >= 0 {
            Ok(ret)
        } else if ret >= -i64::from(MAX_ERRNO) {
            Err(Errno::from_raw(-ret as i32))
        } else {
            Err(Errno::EIO)
        }
    }

    /// Wraps a positive error number; anything outside `1..=4095` becomes `EIO`.
    pub fn from_raw(e: i32) -> Errno {
        if (1..=MAX_ERRNO).contains(&e) {
            NonZeroI32::new(e).map_or(Errno::EIO, Errno)
        } else {
            Errno::EIO
        }
    }

    /// The positive kernel error number.
    pub fn raw(self) -> i32 {
        self.0.get()
    }

    /// The same error as a host errno (identical numbering, see the module docs).
    pub fn to_host(self) -> i32 {
        self.0.get()
    }

    /// Converts a host errno (e.g. from `std::io::Error`) to the kernel's numbering.
    pub fn from_host(e: i32) -> Errno {
        Errno::from_raw(e)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        io::Error::from_raw_os_error(self.to_host()).fmt(f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e.to_host())
    }
}

impl From<io::Error> for Errno {
    /// Uses the OS error number if there is one, else `EIO`.
    fn from(e: io::Error) -> Errno {
        e.raw_os_error().map_or(Errno::EIO, Errno::from_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_ret_splits_success_and_error() {
        assert_eq!(Errno::from_ret(0), Ok(0));
        assert_eq!(Errno::from_ret(42), Ok(42));
        assert_eq!(Errno::from_ret(i64::MAX), Ok(i64::MAX));
        assert_eq!(Errno::from_ret(-2), Err(Errno::ENOENT));
        assert_eq!(Errno::from_ret(-4095).map_err(Errno::raw), Err(4095));
        assert_eq!(Errno::from_ret(-4096), Err(Errno::EIO));
        assert_eq!(Errno::from_ret(i64::MIN), Err(Errno::EIO));
    }

    #[test]
    fn from_raw_rejects_out_of_range() {
        assert_eq!(Errno::from_raw(0), Errno::EIO);
        assert_eq!(Errno::from_raw(-5), Errno::EIO);
        assert_eq!(Errno::from_raw(4096), Errno::EIO);
        assert_eq!(Errno::from_raw(13), Errno::EACCES);
    }

    #[test]
    fn io_error_round_trip() {
        let e: io::Error = Errno::ENOENT.into();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(Errno::from(e), Errno::ENOENT);
        assert_eq!(Errno::from(io::Error::other("no errno")), Errno::EIO);
        assert_eq!(
            Errno::ENOENT.to_string(),
            io::Error::from_raw_os_error(libc::ENOENT).to_string()
        );
        assert_eq!(format!("{:?}", Errno::ENOSPC), "ENOSPC");
        assert_eq!(format!("{:?}", Errno::from_raw(133)), "Errno(133)");
    }

    #[test]
    fn kernel_errno_table_matches_host() {
        macro_rules! check {
            ($($name:ident),* $(,)?) => {
                $(
                    assert_eq!(
                        Errno::from_raw(b::$name as i32).to_host(),
                        libc::$name,
                        concat!("kernel and host disagree on ", stringify!($name)),
                    );
                )*
            };
        }
        // Every E* constant in the kernel's uapi asm-generic/errno-base.h and errno.h.
        check!(
            EPERM,
            ENOENT,
            ESRCH,
            EINTR,
            EIO,
            ENXIO,
            E2BIG,
            ENOEXEC,
            EBADF,
            ECHILD,
            EAGAIN,
            ENOMEM,
            EACCES,
            EFAULT,
            ENOTBLK,
            EBUSY,
            EEXIST,
            EXDEV,
            ENODEV,
            ENOTDIR,
            EISDIR,
            EINVAL,
            ENFILE,
            EMFILE,
            ENOTTY,
            ETXTBSY,
            EFBIG,
            ENOSPC,
            ESPIPE,
            EROFS,
            EMLINK,
            EPIPE,
            EDOM,
            ERANGE,
            EDEADLK,
            ENAMETOOLONG,
            ENOLCK,
            ENOSYS,
            ENOTEMPTY,
            ELOOP,
            EWOULDBLOCK,
            ENOMSG,
            EIDRM,
            ECHRNG,
            EL2NSYNC,
            EL3HLT,
            EL3RST,
            ELNRNG,
            EUNATCH,
            ENOCSI,
            EL2HLT,
            EBADE,
            EBADR,
            EXFULL,
            ENOANO,
            EBADRQC,
            EBADSLT,
            EDEADLOCK,
            EBFONT,
            ENOSTR,
            ENODATA,
            ETIME,
            ENOSR,
            ENONET,
            ENOPKG,
            EREMOTE,
            ENOLINK,
            EADV,
            ESRMNT,
            ECOMM,
            EPROTO,
            EMULTIHOP,
            EDOTDOT,
            EBADMSG,
            EOVERFLOW,
            ENOTUNIQ,
            EBADFD,
            EREMCHG,
            ELIBACC,
            ELIBBAD,
            ELIBSCN,
            ELIBMAX,
            ELIBEXEC,
            EILSEQ,
            ERESTART,
            ESTRPIPE,
            EUSERS,
            ENOTSOCK,
            EDESTADDRREQ,
            EMSGSIZE,
            EPROTOTYPE,
            ENOPROTOOPT,
            EPROTONOSUPPORT,
            ESOCKTNOSUPPORT,
            EOPNOTSUPP,
            EPFNOSUPPORT,
            EAFNOSUPPORT,
            EADDRINUSE,
            EADDRNOTAVAIL,
            ENETDOWN,
            ENETUNREACH,
            ENETRESET,
            ECONNABORTED,
            ECONNRESET,
            ENOBUFS,
            EISCONN,
            ENOTCONN,
            ESHUTDOWN,
            ETOOMANYREFS,
            ETIMEDOUT,
            ECONNREFUSED,
            EHOSTDOWN,
            EHOSTUNREACH,
            EALREADY,
            EINPROGRESS,
            ESTALE,
            EUCLEAN,
            ENOTNAM,
            ENAVAIL,
            EISNAM,
            EREMOTEIO,
            EDQUOT,
            ENOMEDIUM,
            EMEDIUMTYPE,
            ECANCELED,
            ENOKEY,
            EKEYEXPIRED,
            EKEYREVOKED,
            EKEYREJECTED,
            EOWNERDEAD,
            ENOTRECOVERABLE,
            ERFKILL,
            EHWPOISON,
        );
        assert_eq!(Errno::ENOTSUP.to_host(), libc::ENOTSUP);
    }
}
