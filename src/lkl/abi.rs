//! Pure translations of every value that crosses the kernel/host boundary.
//!
//! The in-process kernel speaks the asm-generic 64-bit Linux ABI whatever the host CPU is. Most
//! numbers happen to equal the host's on x86_64, but nothing here relies on that: each flag word
//! goes through one explicit mapping function, and each struct through one conversion, each
//! with a unit test (the C lklfuse once swapped `atime` and `mtime` in exactly this kind of
//! code). Nothing in this module calls the kernel.
//!
//! Contents:
//! - constants the uapi headers do not give bindgen reliably ([`AT_FDCWD`], [`UTIME_NOW`], ...);
//! - [`Timestamp`] and [`SetTime`] (`__kernel_timespec`, `statx_timestamp`, `libc::timespec`);
//! - [`Statx`] (`struct statx`), [`StatFs`] (`struct statfs`, `libc::statvfs`), [`Flock`];
//! - [`linux_dirent64`] and the [`dirents`] parser for `getdents64` buffers;
//! - flag mappings host → kernel: `*_to_kernel` functions;
//! - [`NewUtsname`] (`struct new_utsname`) and device-number encoding.

#![allow(clippy::unnecessary_cast)] // bindgen's integer type for macros depends on its options

use std::ffi::CStr;
use std::mem::offset_of;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::bindings as b;
use super::errno::Errno;
use super::sys::zeroed;

/// `AT_FDCWD` (`include/uapi/linux/fcntl.h`). Defined here because bindgen may drop negative
/// macros, depending on its options.
pub const AT_FDCWD: i32 = -100;

/// `UTIME_NOW` for `utimensat` (`include/linux/stat.h`, not exported as uapi).
pub const UTIME_NOW: i64 = (1 << 30) - 1;
/// `UTIME_OMIT` for `utimensat` (`include/linux/stat.h`, not exported as uapi).
pub const UTIME_OMIT: i64 = (1 << 30) - 2;

/// `CLOCK_REALTIME` (`include/uapi/linux/time.h`, which `bindings.h` does not include).
pub const CLOCK_REALTIME: i32 = 0;
/// `CLOCK_MONOTONIC` (`include/uapi/linux/time.h`).
pub const CLOCK_MONOTONIC: i32 = 1;

/// `d_type` values of [`linux_dirent64`] (`include/linux/fs_types.h`, not uapi).
pub mod dt {
    /// Unknown type; the caller must `statx`.
    pub const UNKNOWN: u8 = 0;
    /// Named pipe.
    pub const FIFO: u8 = 1;
    /// Character device.
    pub const CHR: u8 = 2;
    /// Directory.
    pub const DIR: u8 = 4;
    /// Block device.
    pub const BLK: u8 = 6;
    /// Regular file.
    pub const REG: u8 = 8;
    /// Symbolic link.
    pub const LNK: u8 = 10;
    /// Unix socket.
    pub const SOCK: u8 = 12;
    /// Whiteout (overlayfs).
    pub const WHT: u8 = 14;
}

/// `f_flags` bits of `struct statfs` (`include/linux/statfs.h`, not uapi).
pub mod st {
    /// Mounted read-only.
    pub const RDONLY: u64 = 0x0001;
    /// Ignores suid/sgid bits.
    pub const NOSUID: u64 = 0x0002;
    /// Disallows access to device files.
    pub const NODEV: u64 = 0x0004;
    /// Disallows program execution.
    pub const NOEXEC: u64 = 0x0008;
    /// Writes are synced at once.
    pub const SYNCHRONOUS: u64 = 0x0010;
    /// `f_flags` is valid (set by every kernel since 2.6.36; not a mount flag).
    pub const VALID: u64 = 0x0020;
    /// Mandatory locking.
    pub const MANDLOCK: u64 = 0x0040;
    /// Does not update access times.
    pub const NOATIME: u64 = 0x0400;
    /// Does not update directory access times.
    pub const NODIRATIME: u64 = 0x0800;
    /// Updates atime relative to mtime/ctime.
    pub const RELATIME: u64 = 0x1000;
    /// Does not follow symlinks.
    pub const NOSYMFOLLOW: u64 = 0x2000;
}

// ---------------------------------------------------------------------------------------------
// Time

/// A point in time as the kernel stores it: seconds since the epoch (may be negative) and
/// nanoseconds, always normalised to `0..1_000_000_000`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub sec: i64,
    /// Nanoseconds within the second.
    pub nsec: u32,
}

const NSEC_PER_SEC: u32 = 1_000_000_000;

impl Timestamp {
    /// Builds a timestamp, rejecting `nsec >= 10^9` with `EINVAL` (as the kernel does).
    pub fn new(sec: i64, nsec: i64) -> Result<Timestamp, Errno> {
        if (0..i64::from(NSEC_PER_SEC)).contains(&nsec) {
            Ok(Timestamp {
                sec,
                nsec: nsec as u32,
            })
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// Converts from `SystemTime`, saturating at the `i64` seconds range.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: d.subsec_nanos(),
            },
            Err(before) => {
                let d = before.duration();
                let mut sec = i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s);
                let mut nsec = d.subsec_nanos();
                if nsec > 0 {
                    sec = sec.saturating_sub(1);
                    nsec = NSEC_PER_SEC - nsec;
                }
                Timestamp { sec, nsec }
            }
        }
    }

    /// Converts to `SystemTime`; values the host cannot represent saturate to the epoch.
    pub fn to_system_time(self) -> SystemTime {
        let nsec = Duration::from_nanos(u64::from(self.nsec));
        let t = if self.sec >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(self.sec as u64))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(self.sec.unsigned_abs()))
        };
        t.and_then(|t| t.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
    }

    /// Converts from the kernel's `struct __kernel_timespec`.
    pub fn from_kernel(ts: &b::__kernel_timespec) -> Result<Timestamp, Errno> {
        Timestamp::new(ts.tv_sec as i64, ts.tv_nsec as i64)
    }

    /// Converts to the kernel's `struct __kernel_timespec`.
    pub fn to_kernel(self) -> b::__kernel_timespec {
        let mut ts: b::__kernel_timespec = zeroed();
        ts.tv_sec = self.sec as _;
        ts.tv_nsec = i64::from(self.nsec) as _;
        ts
    }

    /// Converts from a `statx` timestamp.
    pub fn from_statx(ts: &b::statx_timestamp) -> Timestamp {
        Timestamp {
            sec: ts.tv_sec as i64,
            nsec: (ts.tv_nsec as u32).min(NSEC_PER_SEC - 1),
        }
    }

    /// Converts to a `statx` timestamp.
    pub fn to_statx(self) -> b::statx_timestamp {
        let mut ts: b::statx_timestamp = zeroed();
        ts.tv_sec = self.sec as _;
        ts.tv_nsec = self.nsec as _;
        ts
    }

    /// Converts from the host's `struct timespec`.
    pub fn from_libc(ts: &libc::timespec) -> Result<Timestamp, Errno> {
        Timestamp::new(ts.tv_sec as i64, ts.tv_nsec as i64)
    }

    /// Converts to the host's `struct timespec`.
    pub fn to_libc(self) -> libc::timespec {
        let mut ts: libc::timespec = zeroed();
        ts.tv_sec = self.sec as _;
        ts.tv_nsec = self.nsec as _;
        ts
    }

    fn to_libc_statx(self) -> libc::statx_timestamp {
        let mut ts: libc::statx_timestamp = zeroed();
        ts.tv_sec = self.sec;
        ts.tv_nsec = self.nsec;
        ts
    }

    fn from_libc_statx(ts: &libc::statx_timestamp) -> Timestamp {
        Timestamp {
            sec: ts.tv_sec,
            nsec: ts.tv_nsec.min(NSEC_PER_SEC - 1),
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        Timestamp::from_system_time(t)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> SystemTime {
        t.to_system_time()
    }
}

/// One of the two times given to `utimensat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// Leave this time unchanged (`UTIME_OMIT`).
    Omit,
    /// Set it to the kernel's current time (`UTIME_NOW`).
    Now,
    /// Set it to this time.
    At(Timestamp),
}

impl SetTime {
    /// Converts to the kernel's `struct __kernel_timespec`.
    pub fn to_kernel(self) -> b::__kernel_timespec {
        match self {
            SetTime::Omit => special_kernel_timespec(UTIME_OMIT),
            SetTime::Now => special_kernel_timespec(UTIME_NOW),
            SetTime::At(t) => t.to_kernel(),
        }
    }

    /// Converts from the kernel's `struct __kernel_timespec`.
    pub fn from_kernel(ts: &b::__kernel_timespec) -> Result<SetTime, Errno> {
        match ts.tv_nsec as i64 {
            UTIME_OMIT => Ok(SetTime::Omit),
            UTIME_NOW => Ok(SetTime::Now),
            _ => Timestamp::from_kernel(ts).map(SetTime::At),
        }
    }

    /// Converts from the host's `struct timespec`, recognising the host's `UTIME_*` values.
    pub fn from_libc(ts: &libc::timespec) -> Result<SetTime, Errno> {
        match ts.tv_nsec as i64 {
            n if n == libc::UTIME_OMIT as i64 => Ok(SetTime::Omit),
            n if n == libc::UTIME_NOW as i64 => Ok(SetTime::Now),
            _ => Timestamp::from_libc(ts).map(SetTime::At),
        }
    }

    /// Converts to the host's `struct timespec`, using the host's `UTIME_*` values.
    pub fn to_libc(self) -> libc::timespec {
        match self {
            SetTime::Omit | SetTime::Now => {
                let mut ts: libc::timespec = zeroed();
                ts.tv_nsec = if self == SetTime::Omit {
                    libc::UTIME_OMIT as _
                } else {
                    libc::UTIME_NOW as _
                };
                ts
            }
            SetTime::At(t) => t.to_libc(),
        }
    }
}

impl From<SystemTime> for SetTime {
    fn from(t: SystemTime) -> SetTime {
        SetTime::At(Timestamp::from_system_time(t))
    }
}

fn special_kernel_timespec(nsec: i64) -> b::__kernel_timespec {
    let mut ts: b::__kernel_timespec = zeroed();
    ts.tv_nsec = nsec as _;
    ts
}

/// The `times[2]` argument of `utimensat`: access time first, then modification time.
pub fn utimens_to_kernel(atime: SetTime, mtime: SetTime) -> [b::__kernel_timespec; 2] {
    [atime.to_kernel(), mtime.to_kernel()]
}

// ---------------------------------------------------------------------------------------------
// File types and device numbers

/// The type of an inode, from `st_mode` or `d_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    RegularFile,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    NamedPipe,
    /// Unix socket.
    Socket,
    /// Anything else (`DT_UNKNOWN`, whiteouts, garbage).
    Unknown,
}

impl FileType {
    /// From the kernel's `st_mode`/`stx_mode` (`S_IFMT` bits).
    pub fn from_mode(mode: u32) -> FileType {
        match mode & b::S_IFMT as u32 {
            m if m == b::S_IFREG as u32 => FileType::RegularFile,
            m if m == b::S_IFDIR as u32 => FileType::Directory,
            m if m == b::S_IFLNK as u32 => FileType::Symlink,
            m if m == b::S_IFCHR as u32 => FileType::CharDevice,
            m if m == b::S_IFBLK as u32 => FileType::BlockDevice,
            m if m == b::S_IFIFO as u32 => FileType::NamedPipe,
            m if m == b::S_IFSOCK as u32 => FileType::Socket,
            _ => FileType::Unknown,
        }
    }

    /// From a kernel `d_type` (see [`dt`]).
    pub fn from_dirent_type(d_type: u8) -> FileType {
        match d_type {
            dt::REG => FileType::RegularFile,
            dt::DIR => FileType::Directory,
            dt::LNK => FileType::Symlink,
            dt::CHR => FileType::CharDevice,
            dt::BLK => FileType::BlockDevice,
            dt::FIFO => FileType::NamedPipe,
            dt::SOCK => FileType::Socket,
            _ => FileType::Unknown,
        }
    }

    /// The host's `S_IF*` value (`0` for [`FileType::Unknown`]).
    pub fn to_host_mode(self) -> u32 {
        match self {
            FileType::RegularFile => libc::S_IFREG,
            FileType::Directory => libc::S_IFDIR,
            FileType::Symlink => libc::S_IFLNK,
            FileType::CharDevice => libc::S_IFCHR,
            FileType::BlockDevice => libc::S_IFBLK,
            FileType::NamedPipe => libc::S_IFIFO,
            FileType::Socket => libc::S_IFSOCK,
            FileType::Unknown => 0,
        }
    }
}

/// Splits a host `dev_t` and encodes it the way `mknodat` takes it (`new_encode_dev`: 12-bit
/// major, 20-bit minor). `EOVERFLOW` if the number does not fit the kernel's `dev_t`.
pub fn host_dev_to_kernel(dev: u64) -> Result<u32, Errno> {
    let (major, minor) = (
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t),
    );
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(Errno::EOVERFLOW);
    }
    Ok(kernel_dev_encode(major, minor))
}

/// `new_encode_dev(MKDEV(major, minor))`: the 32-bit form `mknodat` takes.
pub fn kernel_dev_encode(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The host `dev_t` for a kernel major/minor pair (as in `stx_rdev_major`/`stx_rdev_minor`).
pub fn host_dev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor) as u64
}

// ---------------------------------------------------------------------------------------------
// statx

/// The result of `statx`, in Rust types. Field meanings are those of `struct statx`; only the
/// fields named in [`Statx::mask`] are valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statx {
    /// `STATX_*` bits of the valid fields.
    pub mask: u32,
    /// Preferred I/O block size.
    pub blksize: u32,
    /// `STATX_ATTR_*` bits.
    pub attributes: u64,
    /// Hard link count.
    pub nlink: u32,
    /// Owner (kernel uid).
    pub uid: u32,
    /// Group (kernel gid).
    pub gid: u32,
    /// Type and permission bits.
    pub mode: u16,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// `STATX_ATTR_*` bits the filesystem supports.
    pub attributes_mask: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Creation.
    pub btime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// Last modification.
    pub mtime: Timestamp,
    /// Device number (if a device node): major.
    pub rdev_major: u32,
    /// Device number (if a device node): minor.
    pub rdev_minor: u32,
    /// Containing device: major.
    pub dev_major: u32,
    /// Containing device: minor.
    pub dev_minor: u32,
    /// Mount id.
    pub mnt_id: u64,
    /// Direct I/O memory alignment.
    pub dio_mem_align: u32,
    /// Direct I/O offset alignment.
    pub dio_offset_align: u32,
    /// Subvolume id (btrfs, bcachefs).
    pub subvol: u64,
}

impl Statx {
    /// Converts from the kernel's `struct statx`.
    pub fn from_kernel(k: &b::statx) -> Statx {
        Statx {
            mask: k.stx_mask as u32,
            blksize: k.stx_blksize as u32,
            attributes: k.stx_attributes as u64,
            nlink: k.stx_nlink as u32,
            uid: k.stx_uid as u32,
            gid: k.stx_gid as u32,
            mode: k.stx_mode as u16,
            ino: k.stx_ino as u64,
            size: k.stx_size as u64,
            blocks: k.stx_blocks as u64,
            attributes_mask: k.stx_attributes_mask as u64,
            atime: Timestamp::from_statx(&k.stx_atime),
            btime: Timestamp::from_statx(&k.stx_btime),
            ctime: Timestamp::from_statx(&k.stx_ctime),
            mtime: Timestamp::from_statx(&k.stx_mtime),
            rdev_major: k.stx_rdev_major as u32,
            rdev_minor: k.stx_rdev_minor as u32,
            dev_major: k.stx_dev_major as u32,
            dev_minor: k.stx_dev_minor as u32,
            mnt_id: k.stx_mnt_id as u64,
            dio_mem_align: k.stx_dio_mem_align as u32,
            dio_offset_align: k.stx_dio_offset_align as u32,
            subvol: k.stx_subvol as u64,
        }
    }

    /// Converts to the kernel's `struct statx` (spare fields zero).
    pub fn to_kernel(&self) -> b::statx {
        let mut k: b::statx = zeroed();
        k.stx_mask = self.mask as _;
        k.stx_blksize = self.blksize as _;
        k.stx_attributes = self.attributes as _;
        k.stx_nlink = self.nlink as _;
        k.stx_uid = self.uid as _;
        k.stx_gid = self.gid as _;
        k.stx_mode = self.mode as _;
        k.stx_ino = self.ino as _;
        k.stx_size = self.size as _;
        k.stx_blocks = self.blocks as _;
        k.stx_attributes_mask = self.attributes_mask as _;
        k.stx_atime = self.atime.to_statx();
        k.stx_btime = self.btime.to_statx();
        k.stx_ctime = self.ctime.to_statx();
        k.stx_mtime = self.mtime.to_statx();
        k.stx_rdev_major = self.rdev_major as _;
        k.stx_rdev_minor = self.rdev_minor as _;
        k.stx_dev_major = self.dev_major as _;
        k.stx_dev_minor = self.dev_minor as _;
        k.stx_mnt_id = self.mnt_id as _;
        k.stx_dio_mem_align = self.dio_mem_align as _;
        k.stx_dio_offset_align = self.dio_offset_align as _;
        k.stx_subvol = self.subvol as _;
        k
    }

    /// Converts to the host's `struct statx` (fields this kernel does not report are zero).
    pub fn to_libc(&self) -> libc::statx {
        let mut h: libc::statx = zeroed();
        h.stx_mask = self.mask;
        h.stx_blksize = self.blksize;
        h.stx_attributes = self.attributes;
        h.stx_nlink = self.nlink;
        h.stx_uid = self.uid;
        h.stx_gid = self.gid;
        h.stx_mode = self.mode;
        h.stx_ino = self.ino;
        h.stx_size = self.size;
        h.stx_blocks = self.blocks;
        h.stx_attributes_mask = self.attributes_mask;
        h.stx_atime = self.atime.to_libc_statx();
        h.stx_btime = self.btime.to_libc_statx();
        h.stx_ctime = self.ctime.to_libc_statx();
        h.stx_mtime = self.mtime.to_libc_statx();
        h.stx_rdev_major = self.rdev_major;
        h.stx_rdev_minor = self.rdev_minor;
        h.stx_dev_major = self.dev_major;
        h.stx_dev_minor = self.dev_minor;
        h.stx_mnt_id = self.mnt_id;
        h.stx_dio_mem_align = self.dio_mem_align;
        h.stx_dio_offset_align = self.dio_offset_align;
        h.stx_subvol = self.subvol;
        h
    }

    /// Converts from the host's `struct statx`.
    pub fn from_libc(h: &libc::statx) -> Statx {
        Statx {
            mask: h.stx_mask,
            blksize: h.stx_blksize,
            attributes: h.stx_attributes,
            nlink: h.stx_nlink,
            uid: h.stx_uid,
            gid: h.stx_gid,
            mode: h.stx_mode,
            ino: h.stx_ino,
            size: h.stx_size,
            blocks: h.stx_blocks,
            attributes_mask: h.stx_attributes_mask,
            atime: Timestamp::from_libc_statx(&h.stx_atime),
            btime: Timestamp::from_libc_statx(&h.stx_btime),
            ctime: Timestamp::from_libc_statx(&h.stx_ctime),
            mtime: Timestamp::from_libc_statx(&h.stx_mtime),
            rdev_major: h.stx_rdev_major,
            rdev_minor: h.stx_rdev_minor,
            dev_major: h.stx_dev_major,
            dev_minor: h.stx_dev_minor,
            mnt_id: h.stx_mnt_id,
            dio_mem_align: h.stx_dio_mem_align,
            dio_offset_align: h.stx_dio_offset_align,
            subvol: h.stx_subvol,
        }
    }

    /// The inode type.
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(u32::from(self.mode))
    }

    /// Permission bits, including suid/sgid/sticky.
    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }

    /// The device number of a device node, as a host `dev_t`.
    pub fn rdev(&self) -> u64 {
        host_dev(self.rdev_major, self.rdev_minor)
    }
}

// ---------------------------------------------------------------------------------------------
// statfs

/// The result of `statfs`/`fstatfs`, in Rust types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    /// Filesystem magic number.
    pub fs_type: u64,
    /// Optimal transfer block size.
    pub block_size: u64,
    /// Total data blocks, in `fragment_size` units.
    pub blocks: u64,
    /// Free blocks.
    pub blocks_free: u64,
    /// Free blocks available to unprivileged users.
    pub blocks_avail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
    /// Filesystem id.
    pub fsid: [i32; 2],
    /// Maximum file name length.
    pub name_max: u64,
    /// Fragment size.
    pub fragment_size: u64,
    /// Mount flags: [`st`] bits.
    pub flags: u64,
}

/// Kernel `ST_*` ↔ host `ST_*`, for `statvfs.f_flag`. `ST_VALID` is not a mount flag and is
/// dropped, as glibc does.
fn st_table() -> [(u64, u64); 10] {
    [
        (st::RDONLY, libc::ST_RDONLY as u64),
        (st::NOSUID, libc::ST_NOSUID as u64),
        (st::NODEV, libc::ST_NODEV as u64),
        (st::NOEXEC, libc::ST_NOEXEC as u64),
        (st::SYNCHRONOUS, libc::ST_SYNCHRONOUS as u64),
        (st::MANDLOCK, libc::ST_MANDLOCK as u64),
        (st::NOATIME, libc::ST_NOATIME as u64),
        (st::NODIRATIME, libc::ST_NODIRATIME as u64),
        (st::RELATIME, libc::ST_RELATIME as u64),
        // glibc >= 2.34 ST_NOSYMFOLLOW; not in the libc crate.
        (st::NOSYMFOLLOW, 0x2000),
    ]
}

impl StatFs {
    /// Converts from the kernel's `struct statfs`.
    pub fn from_kernel(k: &b::statfs) -> StatFs {
        StatFs {
            fs_type: k.f_type as u64,
            block_size: k.f_bsize as u64,
            blocks: k.f_blocks as u64,
            blocks_free: k.f_bfree as u64,
            blocks_avail: k.f_bavail as u64,
            files: k.f_files as u64,
            files_free: k.f_ffree as u64,
            fsid: [k.f_fsid.val[0] as i32, k.f_fsid.val[1] as i32],
            name_max: k.f_namelen as u64,
            fragment_size: k.f_frsize as u64,
            flags: k.f_flags as u64,
        }
    }

    /// Converts to the kernel's `struct statfs` (spare fields zero).
    pub fn to_kernel(&self) -> b::statfs {
        let mut k: b::statfs = zeroed();
        k.f_type = self.fs_type as _;
        k.f_bsize = self.block_size as _;
        k.f_blocks = self.blocks as _;
        k.f_bfree = self.blocks_free as _;
        k.f_bavail = self.blocks_avail as _;
        k.f_files = self.files as _;
        k.f_ffree = self.files_free as _;
        k.f_fsid.val = [self.fsid[0] as _, self.fsid[1] as _];
        k.f_namelen = self.name_max as _;
        k.f_frsize = self.fragment_size as _;
        k.f_flags = self.flags as _;
        k
    }

    /// The `ST_*` mount flags in the host's numbering.
    pub fn host_mount_flags(&self) -> u64 {
        st_table()
            .iter()
            .filter(|(kernel, _)| self.flags & kernel != 0)
            .fold(0, |acc, (_, host)| acc | host)
    }

    /// Converts to the host's `struct statvfs` (as glibc's `statvfs` derives it from `statfs`).
    pub fn to_statvfs(&self) -> libc::statvfs {
        let mut v: libc::statvfs = zeroed();
        v.f_bsize = self.block_size as _;
        // Before ST_VALID existed f_frsize could be 0; glibc falls back to f_bsize.
        let frsize = if self.fragment_size != 0 {
            self.fragment_size
        } else {
            self.block_size
        };
        v.f_frsize = frsize as _;
        v.f_blocks = self.blocks as _;
        v.f_bfree = self.blocks_free as _;
        v.f_bavail = self.blocks_avail as _;
        v.f_files = self.files as _;
        v.f_ffree = self.files_free as _;
        v.f_favail = self.files_free as _;
        v.f_fsid = (u64::from(self.fsid[0] as u32) | (u64::from(self.fsid[1] as u32) << 32)) as _;
        v.f_flag = self.host_mount_flags() as _;
        v.f_namemax = self.name_max as _;
        v
    }
}

// ---------------------------------------------------------------------------------------------
// getdents64

/// The kernel's `struct linux_dirent64` (`include/linux/dirent.h`, not uapi): one record of a
/// `getdents64` buffer. Records are `d_reclen` bytes long and 8-byte aligned; `d_name` is
/// NUL-terminated and padded.
#[repr(C)]
#[derive(Debug)]
pub struct linux_dirent64 {
    /// Inode number.
    pub d_ino: u64,
    /// Opaque position of the *next* record, for `lseek`.
    pub d_off: i64,
    /// Length of this record.
    pub d_reclen: u16,
    /// [`dt`] value.
    pub d_type: u8,
    /// Start of the name.
    pub d_name: [u8; 0],
}

const DIRENT_INO: usize = offset_of!(linux_dirent64, d_ino);
const DIRENT_OFF: usize = offset_of!(linux_dirent64, d_off);
const DIRENT_RECLEN: usize = offset_of!(linux_dirent64, d_reclen);
const DIRENT_TYPE: usize = offset_of!(linux_dirent64, d_type);
const DIRENT_NAME: usize = offset_of!(linux_dirent64, d_name);

/// One directory entry borrowed from a `getdents64` buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dirent<'a> {
    /// Inode number.
    pub ino: u64,
    /// Position of the next entry (pass to `lseek` to resume after this one).
    pub off: i64,
    /// [`dt`] value.
    pub d_type: u8,
    /// The name, without the NUL.
    pub name: &'a CStr,
}

impl Dirent<'_> {
    /// The entry's type (may be [`FileType::Unknown`]).
    pub fn file_type(&self) -> FileType {
        FileType::from_dirent_type(self.d_type)
    }
}

/// Iterator over the records of a `getdents64` buffer; see [`dirents`].
#[derive(Clone, Debug)]
pub struct DirentIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Parses the first `len` bytes that `getdents64` filled in. A malformed record yields one
/// `Err(EIO)` and ends the iteration.
pub fn dirents(buf: &[u8]) -> DirentIter<'_> {
    DirentIter { buf, pos: 0 }
}

fn ne_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

impl<'a> DirentIter<'a> {
    fn parse(&self) -> Option<(Dirent<'a>, usize)> {
        let rest = self.buf.get(self.pos..)?;
        let reclen = usize::from(ne_u16(rest, DIRENT_RECLEN)?);
        if reclen <= DIRENT_NAME {
            return None;
        }
        let rec = rest.get(..reclen)?;
        let name = CStr::from_bytes_until_nul(rec.get(DIRENT_NAME..)?).ok()?;
        let dirent = Dirent {
            ino: ne_u64(rec, DIRENT_INO)?,
            off: ne_u64(rec, DIRENT_OFF)? as i64,
            d_type: *rec.get(DIRENT_TYPE)?,
            name,
        };
        Some((dirent, reclen))
    }
}

impl<'a> Iterator for DirentIter<'a> {
    type Item = Result<Dirent<'a>, Errno>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        match self.parse() {
            Some((dirent, reclen)) => {
                self.pos += reclen;
                Some(Ok(dirent))
            }
            None => {
                tracing::warn!(pos = self.pos, "malformed getdents64 record");
                self.pos = self.buf.len();
                Some(Err(Errno::EIO))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flag words

/// Maps each set bit of `value` through `table` (host bits, kernel bits); returns the mapped
/// word and the bits no entry knew.
fn map_bits(value: u64, table: &[(u64, u64)]) -> (u64, u64) {
    table
        .iter()
        .fold((0, value), |(mapped, left), &(from, to)| {
            if from != 0 && value & from == from {
                (mapped | to, left & !from)
            } else {
                (mapped, left)
            }
        })
}

/// The host's `O_LARGEFILE` as the host kernel sets it in FUSE open flags (glibc defines it as
/// 0 on 64-bit hosts, but the host kernel still reports the bit).
#[cfg(target_arch = "aarch64")]
const HOST_O_LARGEFILE: i32 = 0o400000;
#[cfg(not(target_arch = "aarch64"))]
const HOST_O_LARGEFILE: i32 = 0o100000;

/// The kernel's `FASYNC` (`O_ASYNC`), asm-generic `00020000`. Defined here because the
/// bindings only export `O_*` names.
const KERNEL_FASYNC: u32 = 0o20000;

/// `(host, kernel)` pairs for every `O_*` bit except the access mode.
fn open_table() -> [(u64, u64); 17] {
    let h = |v: i32| v as u32 as u64;
    let k = |v: u32| v as u64;
    [
        (h(libc::O_CREAT), k(b::O_CREAT as u32)),
        (h(libc::O_EXCL), k(b::O_EXCL as u32)),
        (h(libc::O_NOCTTY), k(b::O_NOCTTY as u32)),
        (h(libc::O_TRUNC), k(b::O_TRUNC as u32)),
        (h(libc::O_APPEND), k(b::O_APPEND as u32)),
        (h(libc::O_NONBLOCK), k(b::O_NONBLOCK as u32)),
        (h(libc::O_DSYNC), k(b::O_DSYNC as u32)),
        (h(libc::O_ASYNC), k(KERNEL_FASYNC)),
        (h(libc::O_DIRECT), k(b::O_DIRECT as u32)),
        (h(HOST_O_LARGEFILE), k(b::O_LARGEFILE as u32)),
        (h(libc::O_DIRECTORY), k(b::O_DIRECTORY as u32)),
        (h(libc::O_NOFOLLOW), k(b::O_NOFOLLOW as u32)),
        (h(libc::O_NOATIME), k(b::O_NOATIME as u32)),
        (h(libc::O_CLOEXEC), k(b::O_CLOEXEC as u32)),
        // O_SYNC is __O_SYNC | O_DSYNC; map the extra bit alone.
        (
            h(libc::O_SYNC & !libc::O_DSYNC),
            k(b::O_SYNC as u32 & !(b::O_DSYNC as u32)),
        ),
        (h(libc::O_PATH), k(b::O_PATH as u32)),
        // O_TMPFILE is __O_TMPFILE | O_DIRECTORY; map the extra bit alone.
        (
            h(libc::O_TMPFILE & !libc::O_DIRECTORY),
            k(b::O_TMPFILE as u32 & !(b::O_DIRECTORY as u32)),
        ),
    ]
}

fn accmode_table() -> [(i32, i32); 4] {
    [
        (libc::O_RDONLY, b::O_RDONLY as i32),
        (libc::O_WRONLY, b::O_WRONLY as i32),
        (libc::O_RDWR, b::O_RDWR as i32),
        // "3" (both bits): open for ioctl only; passed through.
        (libc::O_ACCMODE, b::O_ACCMODE as i32),
    ]
}

/// Host `open(2)` flags → kernel `O_*` flags.
///
/// Bits the kernel ABI has no name for are dropped, not rejected: FUSE passes the host
/// kernel's `f_flags`, which may carry internal bits such as `__FMODE_EXEC` (`0x20`).
pub fn open_flags_to_kernel(host: i32) -> i32 {
    let acc = accmode_table()
        .iter()
        .find(|(h, _)| *h == host & libc::O_ACCMODE)
        .map_or(0, |(_, k)| *k);
    let (mapped, _dropped) = map_bits(host as u32 as u64, &open_table());
    acc | mapped as u32 as i32
}

/// Kernel `O_*` flags (e.g. from `F_GETFL`) → host `open(2)` flags. Unknown bits are dropped.
pub fn open_flags_from_kernel(kernel: i32) -> i32 {
    let acc = accmode_table()
        .iter()
        .find(|(_, k)| *k == kernel & b::O_ACCMODE as i32)
        .map_or(0, |(h, _)| *h);
    let reversed = open_table().map(|(h, k)| (k, h));
    let (mapped, _dropped) = map_bits(kernel as u32 as u64, &reversed);
    acc | mapped as u32 as i32
}

fn strict(value: u64, table: &[(u64, u64)], unknown: Errno) -> Result<u64, Errno> {
    match map_bits(value, table) {
        (mapped, 0) => Ok(mapped),
        (_, left) => {
            tracing::debug!(bits = format_args!("{left:#x}"), "unknown flag bits");
            Err(unknown)
        }
    }
}

/// Host `AT_*` flags → kernel `AT_*` flags; `EINVAL` for unknown bits.
pub fn at_flags_to_kernel(host: i32) -> Result<i32, Errno> {
    let h = |v: i32| v as u32 as u64;
    let k = |v: u32| v as u64;
    let table = [
        (
            h(libc::AT_SYMLINK_NOFOLLOW),
            k(b::AT_SYMLINK_NOFOLLOW as u32),
        ),
        // AT_REMOVEDIR and AT_EACCESS share this bit in both ABIs.
        (h(libc::AT_REMOVEDIR), k(b::AT_REMOVEDIR as u32)),
        (h(libc::AT_SYMLINK_FOLLOW), k(b::AT_SYMLINK_FOLLOW as u32)),
        (h(libc::AT_NO_AUTOMOUNT), k(b::AT_NO_AUTOMOUNT as u32)),
        (h(libc::AT_EMPTY_PATH), k(b::AT_EMPTY_PATH as u32)),
        (
            h(libc::AT_STATX_FORCE_SYNC),
            k(b::AT_STATX_FORCE_SYNC as u32),
        ),
        (h(libc::AT_STATX_DONT_SYNC), k(b::AT_STATX_DONT_SYNC as u32)),
        (h(libc::AT_RECURSIVE), k(b::AT_RECURSIVE as u32)),
    ];
    strict(host as u32 as u64, &table, Errno::EINVAL).map(|v| v as u32 as i32)
}

/// Host `RENAME_*` flags → kernel `RENAME_*` flags; `EINVAL` for unknown bits.
pub fn rename_flags_to_kernel(host: u32) -> Result<u32, Errno> {
    let table = [
        (libc::RENAME_NOREPLACE as u64, b::RENAME_NOREPLACE as u64),
        (libc::RENAME_EXCHANGE as u64, b::RENAME_EXCHANGE as u64),
        (libc::RENAME_WHITEOUT as u64, b::RENAME_WHITEOUT as u64),
    ];
    strict(u64::from(host), &table, Errno::EINVAL).map(|v| v as u32)
}

/// Host `fallocate` mode → kernel `FALLOC_FL_*`; `EOPNOTSUPP` for unknown bits (as the kernel
/// answers for modes it does not know).
pub fn fallocate_mode_to_kernel(host: i32) -> Result<i32, Errno> {
    let h = |v: i32| v as u32 as u64;
    let k = |v: u32| v as u64;
    let table = [
        (
            h(libc::FALLOC_FL_KEEP_SIZE),
            k(b::FALLOC_FL_KEEP_SIZE as u32),
        ),
        (
            h(libc::FALLOC_FL_PUNCH_HOLE),
            k(b::FALLOC_FL_PUNCH_HOLE as u32),
        ),
        // Not in the libc crate; 0x04 in glibc's <linux/falloc.h>.
        (h(0x04), k(b::FALLOC_FL_NO_HIDE_STALE as u32)),
        (
            h(libc::FALLOC_FL_COLLAPSE_RANGE),
            k(b::FALLOC_FL_COLLAPSE_RANGE as u32),
        ),
        (
            h(libc::FALLOC_FL_ZERO_RANGE),
            k(b::FALLOC_FL_ZERO_RANGE as u32),
        ),
        (
            h(libc::FALLOC_FL_INSERT_RANGE),
            k(b::FALLOC_FL_INSERT_RANGE as u32),
        ),
        (
            h(libc::FALLOC_FL_UNSHARE_RANGE),
            k(b::FALLOC_FL_UNSHARE_RANGE as u32),
        ),
    ];
    strict(host as u32 as u64, &table, Errno::EOPNOTSUPP).map(|v| v as u32 as i32)
}

/// Host `XATTR_*` flags → kernel `XATTR_*`; `EINVAL` for unknown bits.
pub fn xattr_flags_to_kernel(host: i32) -> Result<i32, Errno> {
    let table = [
        (libc::XATTR_CREATE as u64, b::XATTR_CREATE as u64),
        (libc::XATTR_REPLACE as u64, b::XATTR_REPLACE as u64),
    ];
    strict(host as u32 as u64, &table, Errno::EINVAL).map(|v| v as u32 as i32)
}

/// `struct fsxattr` (`FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR`): fixed-width fields only, so
/// the host's and the kernel's layouts are the same 28 bytes and the argument crosses as is.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pub pad: [u8; 8],
}

/// `_IOC(dir, ty, nr, size)` of the kernel's asm-generic `ioctl.h` (2 direction bits, 14
/// size bits, 8 type bits, 8 number bits).
const fn kernel_ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}
const KERNEL_IOC_WRITE: u32 = 1;
const KERNEL_IOC_READ: u32 = 2;

/// The inode-attribute ioctls served through FUSE: `lsattr`/`chattr` (`FS_IOC_GETFLAGS`,
/// `FS_IOC_SETFLAGS`) and their extended form (`FS_IOC_FSGETXATTR`, `FS_IOC_FSSETXATTR`,
/// used by `lsattr -p`, `chattr -p` and `xfs_io`). The host sends these itself for the
/// caller's ioctl (its `fileattr_get`/`fileattr_set`), with an argument of exactly
/// [`FileAttrIoctl::arg_size`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAttrIoctl {
    GetFlags,
    SetFlags,
    GetXattr,
    SetXattr,
}

impl FileAttrIoctl {
    /// The request for a host ioctl command, or None for every other command.
    pub fn from_host(cmd: u32) -> Option<FileAttrIoctl> {
        const GET_FLAGS: u32 = libc::FS_IOC_GETFLAGS as u32;
        const SET_FLAGS: u32 = libc::FS_IOC_SETFLAGS as u32;
        const GET_XATTR: u32 = libc::_IOR::<FsXattr>(b'X' as u32, 31) as u32;
        const SET_XATTR: u32 = libc::_IOW::<FsXattr>(b'X' as u32, 32) as u32;
        match cmd {
            GET_FLAGS => Some(FileAttrIoctl::GetFlags),
            SET_FLAGS => Some(FileAttrIoctl::SetFlags),
            GET_XATTR => Some(FileAttrIoctl::GetXattr),
            SET_XATTR => Some(FileAttrIoctl::SetXattr),
            _ => None,
        }
    }

    /// The kernel's command number. The flags commands are declared with a `long` argument,
    /// but both kernels read and write an `int` through it.
    pub fn kernel_cmd(self) -> u32 {
        let long = std::mem::size_of::<i64>();
        let fsxattr = std::mem::size_of::<FsXattr>();
        match self {
            FileAttrIoctl::GetFlags => kernel_ioc(KERNEL_IOC_READ, b'f', 1, long),
            FileAttrIoctl::SetFlags => kernel_ioc(KERNEL_IOC_WRITE, b'f', 2, long),
            FileAttrIoctl::GetXattr => kernel_ioc(KERNEL_IOC_READ, b'X', 31, fsxattr),
            FileAttrIoctl::SetXattr => kernel_ioc(KERNEL_IOC_WRITE, b'X', 32, fsxattr),
        }
    }

    /// Bytes the argument points at: an `int` of `FS_*_FL` flags, or a `struct fsxattr`.
    pub fn arg_size(self) -> usize {
        match self {
            FileAttrIoctl::GetFlags | FileAttrIoctl::SetFlags => std::mem::size_of::<i32>(),
            FileAttrIoctl::GetXattr | FileAttrIoctl::SetXattr => std::mem::size_of::<FsXattr>(),
        }
    }

    /// Whether the kernel writes the argument (a get) rather than reads it (a set).
    pub fn returns_arg(self) -> bool {
        matches!(self, FileAttrIoctl::GetFlags | FileAttrIoctl::GetXattr)
    }
}

/// Host `MS_*` mount flags → kernel `MS_*`; `EINVAL` for unknown bits.
pub fn mount_flags_to_kernel(host: u64) -> Result<u64, Errno> {
    let h = |v: libc::c_ulong| v as u64;
    let k = |v: u32| v as u64;
    let table = [
        (h(libc::MS_RDONLY), k(b::MS_RDONLY as u32)),
        (h(libc::MS_NOSUID), k(b::MS_NOSUID as u32)),
        (h(libc::MS_NODEV), k(b::MS_NODEV as u32)),
        (h(libc::MS_NOEXEC), k(b::MS_NOEXEC as u32)),
        (h(libc::MS_SYNCHRONOUS), k(b::MS_SYNCHRONOUS as u32)),
        (h(libc::MS_REMOUNT), k(b::MS_REMOUNT as u32)),
        (h(libc::MS_MANDLOCK), k(b::MS_MANDLOCK as u32)),
        (h(libc::MS_DIRSYNC), k(b::MS_DIRSYNC as u32)),
        (h(libc::MS_NOSYMFOLLOW), k(b::MS_NOSYMFOLLOW as u32)),
        (h(libc::MS_NOATIME), k(b::MS_NOATIME as u32)),
        (h(libc::MS_NODIRATIME), k(b::MS_NODIRATIME as u32)),
        (h(libc::MS_BIND), k(b::MS_BIND as u32)),
        (h(libc::MS_MOVE), k(b::MS_MOVE as u32)),
        (h(libc::MS_REC), k(b::MS_REC as u32)),
        (h(libc::MS_SILENT), k(b::MS_SILENT as u32)),
        (h(libc::MS_POSIXACL), k(b::MS_POSIXACL as u32)),
        (h(libc::MS_UNBINDABLE), k(b::MS_UNBINDABLE as u32)),
        (h(libc::MS_PRIVATE), k(b::MS_PRIVATE as u32)),
        (h(libc::MS_SLAVE), k(b::MS_SLAVE as u32)),
        (h(libc::MS_SHARED), k(b::MS_SHARED as u32)),
        (h(libc::MS_RELATIME), k(b::MS_RELATIME as u32)),
        (h(libc::MS_I_VERSION), k(b::MS_I_VERSION as u32)),
        (h(libc::MS_STRICTATIME), k(b::MS_STRICTATIME as u32)),
        (h(libc::MS_LAZYTIME), k(b::MS_LAZYTIME as u32)),
    ];
    strict(host, &table, Errno::EINVAL)
}

// ---------------------------------------------------------------------------------------------
// Record locks

/// The type of a record lock (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockType {
    /// Shared lock.
    Read,
    /// Exclusive lock.
    Write,
    /// No lock / release.
    Unlock,
}

impl LockType {
    fn table() -> [(LockType, i16, i16); 3] {
        [
            (LockType::Read, libc::F_RDLCK as i16, b::F_RDLCK as i16),
            (LockType::Write, libc::F_WRLCK as i16, b::F_WRLCK as i16),
            (LockType::Unlock, libc::F_UNLCK as i16, b::F_UNLCK as i16),
        ]
    }

    /// From the host's `F_*LCK`; `EINVAL` otherwise.
    pub fn from_host(v: i32) -> Result<LockType, Errno> {
        LockType::table()
            .into_iter()
            .find(|(_, h, _)| i32::from(*h) == v)
            .map(|(t, _, _)| t)
            .ok_or(Errno::EINVAL)
    }

    /// The host's `F_*LCK`.
    pub fn to_host(self) -> i32 {
        LockType::table()
            .into_iter()
            .find(|(t, _, _)| *t == self)
            .map_or(libc::F_UNLCK, |(_, h, _)| i32::from(h))
    }

    fn from_kernel(v: i16) -> Result<LockType, Errno> {
        LockType::table()
            .into_iter()
            .find(|(_, _, k)| *k == v)
            .map(|(t, _, _)| t)
            .ok_or(Errno::EINVAL)
    }

    fn to_kernel(self) -> i16 {
        LockType::table()
            .into_iter()
            .find(|(t, _, _)| *t == self)
            .map_or(b::F_UNLCK as i16, |(_, _, k)| k)
    }
}

fn whence_table() -> [(i16, i16); 3] {
    [
        (libc::SEEK_SET as i16, b::SEEK_SET as i16),
        (libc::SEEK_CUR as i16, b::SEEK_CUR as i16),
        (libc::SEEK_END as i16, b::SEEK_END as i16),
    ]
}

/// A POSIX record lock (`struct flock`), in Rust types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flock {
    /// Lock type.
    pub lock_type: LockType,
    /// Base of `start`: `SEEK_SET`, `SEEK_CUR` or `SEEK_END` (the same values in both ABIs;
    /// mapped anyway).
    pub whence: i16,
    /// First byte, relative to `whence`.
    pub start: i64,
    /// Length in bytes; `0` means "to end of file and beyond".
    pub len: i64,
    /// Owner pid (reported by `F_GETLK`; `-1` for OFD locks), in the kernel's pid space.
    pub pid: i32,
}

impl Flock {
    /// A `SEEK_SET` lock over `start..=end`, as FUSE describes locks (`end == u64::MAX` or
    /// `i64::MAX` means "to EOF").
    pub fn range(lock_type: LockType, start: u64, end: u64, pid: i32) -> Result<Flock, Errno> {
        let start = i64::try_from(start).map_err(|_| Errno::EINVAL)?;
        let len = if end >= i64::MAX as u64 {
            0
        } else {
            let end = end as i64;
            if end < start {
                return Err(Errno::EINVAL);
            }
            end - start + 1
        };
        Ok(Flock {
            lock_type,
            whence: libc::SEEK_SET as i16,
            start,
            len,
            pid,
        })
    }

    /// The last byte covered, FUSE style (`i64::MAX` for "to EOF"); meaningful for
    /// `SEEK_SET` locks.
    pub fn end(&self) -> u64 {
        if self.len == 0 {
            i64::MAX as u64
        } else {
            (self.start + self.len - 1) as u64
        }
    }

    /// Converts from the kernel's `struct flock`.
    pub fn from_kernel(k: &b::flock) -> Result<Flock, Errno> {
        let whence = whence_table()
            .into_iter()
            .find(|(_, kw)| *kw == k.l_whence as i16)
            .ok_or(Errno::EINVAL)?
            .0;
        Ok(Flock {
            lock_type: LockType::from_kernel(k.l_type as i16)?,
            whence,
            start: k.l_start as i64,
            len: k.l_len as i64,
            pid: k.l_pid as i32,
        })
    }

    /// Converts to the kernel's `struct flock`; `EINVAL` for an unknown `whence`.
    pub fn to_kernel(&self) -> Result<b::flock, Errno> {
        let whence = whence_table()
            .into_iter()
            .find(|(hw, _)| *hw == self.whence)
            .ok_or(Errno::EINVAL)?
            .1;
        let mut k: b::flock = zeroed();
        k.l_type = self.lock_type.to_kernel() as _;
        k.l_whence = whence as _;
        k.l_start = self.start as _;
        k.l_len = self.len as _;
        k.l_pid = self.pid as _;
        Ok(k)
    }

    /// Converts from the host's `struct flock`.
    pub fn from_libc(h: &libc::flock) -> Result<Flock, Errno> {
        Ok(Flock {
            lock_type: LockType::from_host(i32::from(h.l_type))?,
            whence: h.l_whence,
            start: h.l_start,
            len: h.l_len,
            pid: h.l_pid,
        })
    }

    /// Converts to the host's `struct flock`.
    pub fn to_libc(&self) -> libc::flock {
        let mut h: libc::flock = zeroed();
        h.l_type = self.lock_type.to_host() as _;
        h.l_whence = self.whence;
        h.l_start = self.start;
        h.l_len = self.len;
        h.l_pid = self.pid;
        h
    }
}

// ---------------------------------------------------------------------------------------------
// uname

/// Length of each [`NewUtsname`] field (`__NEW_UTS_LEN + 1`).
pub const UTS_FIELD_LEN: usize = 65;

/// The kernel's `struct new_utsname` (`include/uapi/linux/utsname.h`), filled by `uname`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewUtsname {
    /// "Linux".
    pub sysname: [u8; UTS_FIELD_LEN],
    /// Host name of the kernel's UTS namespace.
    pub nodename: [u8; UTS_FIELD_LEN],
    /// Kernel release, e.g. "6.12.117".
    pub release: [u8; UTS_FIELD_LEN],
    /// Build version string.
    pub version: [u8; UTS_FIELD_LEN],
    /// Architecture name.
    pub machine: [u8; UTS_FIELD_LEN],
    /// NIS domain name.
    pub domainname: [u8; UTS_FIELD_LEN],
}

impl Default for NewUtsname {
    fn default() -> NewUtsname {
        NewUtsname {
            sysname: [0; UTS_FIELD_LEN],
            nodename: [0; UTS_FIELD_LEN],
            release: [0; UTS_FIELD_LEN],
            version: [0; UTS_FIELD_LEN],
            machine: [0; UTS_FIELD_LEN],
            domainname: [0; UTS_FIELD_LEN],
        }
    }
}

impl NewUtsname {
    /// A field up to its NUL (the whole field if the kernel left none).
    pub fn field(f: &[u8; UTS_FIELD_LEN]) -> &str {
        let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
        std::str::from_utf8(&f[..end]).unwrap_or("")
    }
}

// ---------------------------------------------------------------------------------------------
// File handles (name_to_handle_at / open_by_handle_at)

/// Largest handle the kernel hands out (`MAX_HANDLE_SZ`).
pub const MAX_HANDLE_SZ: usize = 128;

/// A filesystem's persistent name for an inode (`struct file_handle`): reopening it does not
/// need the inode to stay in memory, unlike an open descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileHandle {
    /// Filesystem-specific handle type.
    pub handle_type: i32,
    /// The opaque handle bytes.
    pub bytes: Box<[u8]>,
}

/// Size of `struct file_handle`'s header: `handle_bytes` (u32) and `handle_type` (int).
const FILE_HANDLE_HEADER: usize = 8;

impl FileHandle {
    /// A zeroed `struct file_handle` buffer with room for the largest handle, as
    /// `name_to_handle_at` wants it (`handle_bytes` = capacity).
    pub fn kernel_buffer() -> Vec<u8> {
        let mut buf = vec![0u8; FILE_HANDLE_HEADER + MAX_HANDLE_SZ];
        buf[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
        buf
    }

    /// Parses a `struct file_handle` the kernel filled in.
    pub fn from_kernel(buf: &[u8]) -> Result<FileHandle, Errno> {
        let header = buf.get(..FILE_HANDLE_HEADER).ok_or(Errno::EIO)?;
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let handle_type = i32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
        let bytes = buf
            .get(FILE_HANDLE_HEADER..FILE_HANDLE_HEADER + len)
            .filter(|_| len <= MAX_HANDLE_SZ)
            .ok_or(Errno::EIO)?;
        Ok(FileHandle {
            handle_type,
            bytes: bytes.into(),
        })
    }

    /// The `struct file_handle` to pass to `open_by_handle_at`.
    pub fn to_kernel(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(FILE_HANDLE_HEADER + self.bytes.len());
        buf.extend_from_slice(&(self.bytes.len() as u32).to_ne_bytes());
        buf.extend_from_slice(&self.handle_type.to_ne_bytes());
        buf.extend_from_slice(&self.bytes);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_attribute_ioctls_map_the_hosts_numbers_to_the_kernels() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        // The numbers of include/uapi/linux/fs.h on a 64-bit kernel, spelled out.
        let expected = [
            (FileAttrIoctl::GetFlags, 0x8008_6601, 4, true),
            (FileAttrIoctl::SetFlags, 0x4008_6602, 4, false),
            (FileAttrIoctl::GetXattr, 0x801c_581f, 28, true),
            (FileAttrIoctl::SetXattr, 0x401c_5820, 28, false),
        ];
        for (request, kernel, size, returns) in expected {
            assert_eq!(request.kernel_cmd(), kernel, "{request:?}");
            assert_eq!(request.arg_size(), size, "{request:?}");
            assert_eq!(request.returns_arg(), returns, "{request:?}");
            // x86_64 and aarch64 hosts share the generic encoding: the round trip is exact.
            assert_eq!(FileAttrIoctl::from_host(kernel), Some(request));
        }
        assert_eq!(
            FileAttrIoctl::from_host(libc::FS_IOC_GETFLAGS as u32),
            Some(FileAttrIoctl::GetFlags)
        );
        // isatty's TCGETS and the 32-bit flags commands are not among them.
        assert_eq!(FileAttrIoctl::from_host(libc::TCGETS as u32), None);
        assert_eq!(
            FileAttrIoctl::from_host(libc::FS_IOC32_GETFLAGS as u32),
            None
        );
    }

    #[test]
    fn file_handle_round_trip() {
        let h = FileHandle {
            handle_type: 0x81,
            bytes: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].into(),
        };
        let buf = h.to_kernel();
        assert_eq!(buf.len(), 8 + 12);
        assert_eq!(&buf[..4], &12u32.to_ne_bytes());
        assert_eq!(FileHandle::from_kernel(&buf), Ok(h));
        let empty = FileHandle::kernel_buffer();
        assert_eq!(&empty[..4], &(MAX_HANDLE_SZ as u32).to_ne_bytes());
        let mut bad = buf.clone();
        bad[..4].copy_from_slice(&200u32.to_ne_bytes());
        assert_eq!(FileHandle::from_kernel(&bad), Err(Errno::EIO));
        assert_eq!(FileHandle::from_kernel(&buf[..5]), Err(Errno::EIO));
    }

    #[test]
    fn timestamp_system_time_round_trip() {
        for (sec, nsec) in [
            (0, 0),
            (1, 1),
            (1_700_000_000, 999_999_999),
            (-1, 0),
            (-1, 500_000_000),
            (-86_400 * 365, 1),
        ] {
            let t = Timestamp { sec, nsec };
            let st = t.to_system_time();
            assert_eq!(Timestamp::from_system_time(st), t, "{sec}.{nsec}");
        }
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(
            Timestamp::from_system_time(before),
            Timestamp {
                sec: -2,
                nsec: 750_000_000
            }
        );
        let now = SystemTime::now();
        assert_eq!(Timestamp::from(now).to_system_time(), now);
    }

    #[test]
    fn timestamp_kernel_and_libc_round_trip() {
        let t = Timestamp {
            sec: -5,
            nsec: 123_456_789,
        };
        let k = t.to_kernel();
        assert_eq!((k.tv_sec, k.tv_nsec), (-5, 123_456_789));
        assert_eq!(Timestamp::from_kernel(&k), Ok(t));
        let l = t.to_libc();
        assert_eq!((l.tv_sec, l.tv_nsec), (-5, 123_456_789));
        assert_eq!(Timestamp::from_libc(&l), Ok(t));
        assert_eq!(Timestamp::from_statx(&t.to_statx()), t);
        let mut bad = k;
        bad.tv_nsec = 1_000_000_000;
        assert_eq!(Timestamp::from_kernel(&bad), Err(Errno::EINVAL));
        bad.tv_nsec = -1;
        assert_eq!(Timestamp::from_kernel(&bad), Err(Errno::EINVAL));
    }

    #[test]
    fn set_time_special_values() {
        assert_eq!(SetTime::Now.to_kernel().tv_nsec, (1 << 30) - 1);
        assert_eq!(SetTime::Omit.to_kernel().tv_nsec, (1 << 30) - 2);
        assert_eq!(UTIME_NOW, libc::UTIME_NOW as i64);
        assert_eq!(UTIME_OMIT, libc::UTIME_OMIT as i64);
        let at = SetTime::At(Timestamp { sec: 42, nsec: 7 });
        for s in [SetTime::Now, SetTime::Omit, at] {
            assert_eq!(SetTime::from_kernel(&s.to_kernel()), Ok(s));
            assert_eq!(SetTime::from_libc(&s.to_libc()), Ok(s));
        }
        let host_now = SetTime::Now.to_libc();
        assert_eq!(host_now.tv_nsec, libc::UTIME_NOW);
    }

    #[test]
    fn utimens_keeps_atime_then_mtime() {
        let a = SetTime::At(Timestamp { sec: 1, nsec: 0 });
        let m = SetTime::At(Timestamp { sec: 2, nsec: 0 });
        let ts = utimens_to_kernel(a, m);
        assert_eq!((ts[0].tv_sec, ts[1].tv_sec), (1, 2));
        let ts = utimens_to_kernel(SetTime::Omit, SetTime::Now);
        assert_eq!((ts[0].tv_nsec, ts[1].tv_nsec), (UTIME_OMIT, UTIME_NOW));
    }

    fn sample_statx() -> Statx {
        Statx {
            mask: b::STATX_BASIC_STATS as u32 | b::STATX_BTIME as u32,
            blksize: 4096,
            attributes: b::STATX_ATTR_IMMUTABLE as u64,
            nlink: 3,
            uid: 1000,
            gid: 100,
            mode: (b::S_IFCHR as u16) | 0o4755,
            ino: 0x1234_5678_9abc,
            size: 1 << 40,
            blocks: 77,
            attributes_mask: 0xffff,
            atime: Timestamp { sec: 1, nsec: 2 },
            btime: Timestamp { sec: 3, nsec: 4 },
            ctime: Timestamp { sec: 5, nsec: 6 },
            mtime: Timestamp {
                sec: -7,
                nsec: 999_999_999,
            },
            rdev_major: 259,
            rdev_minor: 70_000,
            dev_major: 8,
            dev_minor: 1,
            mnt_id: 99,
            dio_mem_align: 512,
            dio_offset_align: 4096,
            subvol: 256,
        }
    }

    #[test]
    fn statx_round_trips() {
        let s = sample_statx();
        let k = s.to_kernel();
        assert_eq!(k.stx_atime.tv_sec, 1);
        assert_eq!(k.stx_mtime.tv_sec, -7);
        assert_eq!(Statx::from_kernel(&k), s);
        let h = s.to_libc();
        assert_eq!(h.stx_mode, s.mode);
        assert_eq!((h.stx_atime.tv_sec, h.stx_atime.tv_nsec), (1, 2));
        assert_eq!((h.stx_ctime.tv_sec, h.stx_ctime.tv_nsec), (5, 6));
        assert_eq!(h.stx_mtime.tv_sec, -7);
        assert_eq!(Statx::from_libc(&h), s);
        assert_eq!(s.file_type(), FileType::CharDevice);
        assert_eq!(s.perm(), 0o4755);
        assert_eq!(libc::major(s.rdev()), 259);
        assert_eq!(libc::minor(s.rdev()), 70_000);
    }

    #[test]
    fn statx_constants_match_host() {
        assert_eq!(b::STATX_BASIC_STATS as u32, libc::STATX_BASIC_STATS);
        assert_eq!(b::STATX_BTIME as u32, libc::STATX_BTIME);
        assert_eq!(b::STATX_MNT_ID as u32, libc::STATX_MNT_ID);
        assert_eq!(b::S_IFMT as u32, libc::S_IFMT);
        for (mode, ft) in [
            (libc::S_IFREG, FileType::RegularFile),
            (libc::S_IFDIR, FileType::Directory),
            (libc::S_IFLNK, FileType::Symlink),
            (libc::S_IFCHR, FileType::CharDevice),
            (libc::S_IFBLK, FileType::BlockDevice),
            (libc::S_IFIFO, FileType::NamedPipe),
            (libc::S_IFSOCK, FileType::Socket),
        ] {
            assert_eq!(FileType::from_mode(mode | 0o644), ft);
            assert_eq!(ft.to_host_mode(), mode);
        }
        assert_eq!(FileType::from_mode(0), FileType::Unknown);
    }

    #[test]
    fn statfs_round_trip_and_statvfs() {
        let s = StatFs {
            fs_type: 0xef53,
            block_size: 4096,
            blocks: 1000,
            blocks_free: 500,
            blocks_avail: 400,
            files: 256,
            files_free: 200,
            fsid: [0x1234_5678, -1],
            name_max: 255,
            fragment_size: 1024,
            flags: st::VALID | st::RDONLY | st::NOATIME | st::RELATIME,
        };
        assert_eq!(StatFs::from_kernel(&s.to_kernel()), s);
        let v = s.to_statvfs();
        assert_eq!(v.f_bsize, 4096);
        assert_eq!(v.f_frsize, 1024);
        assert_eq!(v.f_blocks, 1000);
        assert_eq!(v.f_bfree, 500);
        assert_eq!(v.f_bavail, 400);
        assert_eq!(v.f_files, 256);
        assert_eq!(v.f_ffree, 200);
        assert_eq!(v.f_favail, 200);
        assert_eq!(v.f_namemax, 255);
        assert_eq!(v.f_fsid, 0xffff_ffff_1234_5678);
        assert_eq!(
            v.f_flag,
            libc::ST_RDONLY | libc::ST_NOATIME | libc::ST_RELATIME
        );
        let no_frsize = StatFs {
            fragment_size: 0,
            ..s
        };
        assert_eq!(no_frsize.to_statvfs().f_frsize, 4096);
    }

    /// Appends one record the way the kernel's `filldir64` lays it out.
    fn push_dirent(buf: &mut Vec<u8>, ino: u64, off: i64, d_type: u8, name: &[u8]) {
        let reclen = (DIRENT_NAME + name.len() + 1).next_multiple_of(8);
        let start = buf.len();
        buf.resize(start + reclen, 0);
        let rec = &mut buf[start..];
        rec[DIRENT_INO..DIRENT_INO + 8].copy_from_slice(&ino.to_ne_bytes());
        rec[DIRENT_OFF..DIRENT_OFF + 8].copy_from_slice(&off.to_ne_bytes());
        rec[DIRENT_RECLEN..DIRENT_RECLEN + 2].copy_from_slice(&(reclen as u16).to_ne_bytes());
        rec[DIRENT_TYPE] = d_type;
        rec[DIRENT_NAME..DIRENT_NAME + name.len()].copy_from_slice(name);
    }

    #[test]
    fn dirent_layout_matches_kernel() {
        assert_eq!(
            (
                DIRENT_INO,
                DIRENT_OFF,
                DIRENT_RECLEN,
                DIRENT_TYPE,
                DIRENT_NAME
            ),
            (0, 8, 16, 18, 19)
        );
    }

    #[test]
    fn dirents_parse() {
        let mut buf = Vec::new();
        push_dirent(&mut buf, 2, 1, dt::DIR, b".");
        push_dirent(&mut buf, 2, 2, dt::DIR, b"..");
        push_dirent(&mut buf, 12, 3, dt::REG, b"hello.txt");
        let long = [b'x'; 255];
        push_dirent(&mut buf, u64::MAX, i64::MAX, dt::LNK, &long);
        let v: Vec<_> = dirents(&buf)
            .collect::<Result<_, _>>()
            .expect("valid buffer");
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].name.to_bytes(), b".");
        assert_eq!(v[1].name.to_bytes(), b"..");
        assert_eq!((v[2].ino, v[2].off), (12, 3));
        assert_eq!(v[2].name.to_bytes(), b"hello.txt");
        assert_eq!(v[2].file_type(), FileType::RegularFile);
        assert_eq!(v[3].name.to_bytes(), &long[..]);
        assert_eq!((v[3].ino, v[3].off), (u64::MAX, i64::MAX));
        assert_eq!(v[3].file_type(), FileType::Symlink);
        assert_eq!(dirents(&[]).count(), 0);
    }

    #[test]
    fn dirents_reject_malformed() {
        let mut buf = Vec::new();
        push_dirent(&mut buf, 5, 1, dt::REG, b"ok");
        let good = buf.len();
        push_dirent(&mut buf, 6, 2, dt::REG, b"cut");
        // Truncated record.
        let r: Vec<_> = dirents(&buf[..buf.len() - 1]).collect();
        assert_eq!(r.len(), 2);
        assert!(r[0].is_ok());
        assert_eq!(r[1], Err(Errno::EIO));
        // Zero reclen would loop forever if accepted.
        let mut zero = buf.clone();
        zero[good + DIRENT_RECLEN] = 0;
        zero[good + DIRENT_RECLEN + 1] = 0;
        assert_eq!(dirents(&zero).filter(Result::is_err).count(), 1);
        // Name without NUL.
        let mut nonul = buf.clone();
        let end = nonul.len();
        nonul[good + DIRENT_NAME..end].fill(b'a');
        assert_eq!(dirents(&nonul).last(), Some(Err(Errno::EIO)));
    }

    #[test]
    fn open_flags_map_each_bit() {
        let pairs = [
            (libc::O_RDONLY, b::O_RDONLY as i32),
            (libc::O_WRONLY, b::O_WRONLY as i32),
            (libc::O_RDWR, b::O_RDWR as i32),
            (libc::O_CREAT, b::O_CREAT as i32),
            (libc::O_EXCL, b::O_EXCL as i32),
            (libc::O_NOCTTY, b::O_NOCTTY as i32),
            (libc::O_TRUNC, b::O_TRUNC as i32),
            (libc::O_APPEND, b::O_APPEND as i32),
            (libc::O_NONBLOCK, b::O_NONBLOCK as i32),
            (libc::O_DSYNC, b::O_DSYNC as i32),
            (libc::O_ASYNC, KERNEL_FASYNC as i32),
            (libc::O_DIRECT, b::O_DIRECT as i32),
            (HOST_O_LARGEFILE, b::O_LARGEFILE as i32),
            (libc::O_DIRECTORY, b::O_DIRECTORY as i32),
            (libc::O_NOFOLLOW, b::O_NOFOLLOW as i32),
            (libc::O_NOATIME, b::O_NOATIME as i32),
            (libc::O_CLOEXEC, b::O_CLOEXEC as i32),
            (libc::O_SYNC, b::O_SYNC as i32),
            (libc::O_PATH, b::O_PATH as i32),
            (libc::O_TMPFILE, b::O_TMPFILE as i32),
        ];
        let mut all_host = 0;
        let mut all_kernel = 0;
        for (h, k) in pairs {
            assert_eq!(open_flags_to_kernel(h), k, "host {h:#o}");
            assert_eq!(open_flags_from_kernel(k), h, "kernel {k:#o}");
            if h & libc::O_ACCMODE == 0 {
                all_host |= h;
                all_kernel |= k;
            }
        }
        all_host |= libc::O_RDWR;
        all_kernel |= b::O_RDWR as i32;
        assert_eq!(open_flags_to_kernel(all_host), all_kernel);
        assert_eq!(open_flags_from_kernel(all_kernel), all_host);
        // __FMODE_EXEC from FUSE is dropped.
        assert_eq!(
            open_flags_to_kernel(0x20 | libc::O_RDONLY),
            b::O_RDONLY as i32
        );
        assert_eq!(open_flags_to_kernel(3), 3);
    }

    #[test]
    fn strict_flag_maps() {
        for (h, k) in [
            (libc::AT_SYMLINK_NOFOLLOW, b::AT_SYMLINK_NOFOLLOW as i32),
            (libc::AT_REMOVEDIR, b::AT_REMOVEDIR as i32),
            (libc::AT_EACCESS, b::AT_EACCESS as i32),
            (libc::AT_SYMLINK_FOLLOW, b::AT_SYMLINK_FOLLOW as i32),
            (libc::AT_NO_AUTOMOUNT, b::AT_NO_AUTOMOUNT as i32),
            (libc::AT_EMPTY_PATH, b::AT_EMPTY_PATH as i32),
            (libc::AT_STATX_FORCE_SYNC, b::AT_STATX_FORCE_SYNC as i32),
            (libc::AT_STATX_DONT_SYNC, b::AT_STATX_DONT_SYNC as i32),
            (libc::AT_RECURSIVE, b::AT_RECURSIVE as i32),
        ] {
            assert_eq!(at_flags_to_kernel(h), Ok(k));
        }
        assert_eq!(
            at_flags_to_kernel(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW),
            Ok(b::AT_EMPTY_PATH as i32 | b::AT_SYMLINK_NOFOLLOW as i32)
        );
        assert_eq!(at_flags_to_kernel(0x1), Err(Errno::EINVAL));
        assert_eq!(AT_FDCWD, libc::AT_FDCWD);

        assert_eq!(rename_flags_to_kernel(0), Ok(0));
        assert_eq!(
            rename_flags_to_kernel(libc::RENAME_NOREPLACE as u32),
            Ok(b::RENAME_NOREPLACE as u32)
        );
        assert_eq!(
            rename_flags_to_kernel(libc::RENAME_EXCHANGE as u32),
            Ok(b::RENAME_EXCHANGE as u32)
        );
        assert_eq!(
            rename_flags_to_kernel(libc::RENAME_WHITEOUT as u32),
            Ok(b::RENAME_WHITEOUT as u32)
        );
        assert_eq!(rename_flags_to_kernel(8), Err(Errno::EINVAL));

        for (h, k) in [
            (libc::FALLOC_FL_KEEP_SIZE, b::FALLOC_FL_KEEP_SIZE as i32),
            (libc::FALLOC_FL_PUNCH_HOLE, b::FALLOC_FL_PUNCH_HOLE as i32),
            (0x04, b::FALLOC_FL_NO_HIDE_STALE as i32),
            (
                libc::FALLOC_FL_COLLAPSE_RANGE,
                b::FALLOC_FL_COLLAPSE_RANGE as i32,
            ),
            (libc::FALLOC_FL_ZERO_RANGE, b::FALLOC_FL_ZERO_RANGE as i32),
            (
                libc::FALLOC_FL_INSERT_RANGE,
                b::FALLOC_FL_INSERT_RANGE as i32,
            ),
            (
                libc::FALLOC_FL_UNSHARE_RANGE,
                b::FALLOC_FL_UNSHARE_RANGE as i32,
            ),
        ] {
            assert_eq!(fallocate_mode_to_kernel(h), Ok(k));
        }
        assert_eq!(fallocate_mode_to_kernel(0), Ok(0));
        assert_eq!(fallocate_mode_to_kernel(0x100), Err(Errno::EOPNOTSUPP));

        assert_eq!(xattr_flags_to_kernel(0), Ok(0));
        assert_eq!(
            xattr_flags_to_kernel(libc::XATTR_CREATE),
            Ok(b::XATTR_CREATE as i32)
        );
        assert_eq!(
            xattr_flags_to_kernel(libc::XATTR_REPLACE),
            Ok(b::XATTR_REPLACE as i32)
        );
        assert_eq!(xattr_flags_to_kernel(4), Err(Errno::EINVAL));

        assert_eq!(
            mount_flags_to_kernel(libc::MS_RDONLY | libc::MS_NOATIME | libc::MS_LAZYTIME),
            Ok(b::MS_RDONLY as u64 | b::MS_NOATIME as u64 | b::MS_LAZYTIME as u64)
        );
        assert_eq!(mount_flags_to_kernel(1 << 40), Err(Errno::EINVAL));
    }

    #[test]
    fn flock_round_trips() {
        let f = Flock {
            lock_type: LockType::Write,
            whence: libc::SEEK_CUR as i16,
            start: 10,
            len: 20,
            pid: 42,
        };
        let k = f.to_kernel().expect("valid lock");
        assert_eq!(k.l_type as i32, b::F_WRLCK as i32);
        assert_eq!((k.l_start, k.l_len, k.l_pid), (10, 20, 42));
        assert_eq!(Flock::from_kernel(&k), Ok(f));
        let h = f.to_libc();
        assert_eq!(i32::from(h.l_type), libc::F_WRLCK);
        assert_eq!(Flock::from_libc(&h), Ok(f));
        for t in [LockType::Read, LockType::Write, LockType::Unlock] {
            assert_eq!(LockType::from_host(t.to_host()), Ok(t));
        }
        assert_eq!(LockType::from_host(99), Err(Errno::EINVAL));
        let bad = Flock { whence: 7, ..f };
        assert!(bad.to_kernel().is_err());

        let r = Flock::range(LockType::Read, 100, 199, 1).expect("valid range");
        assert_eq!((r.start, r.len, r.end()), (100, 100, 199));
        let eof = Flock::range(LockType::Read, 5, u64::MAX, 1).expect("valid range");
        assert_eq!((eof.len, eof.end()), (0, i64::MAX as u64));
        assert_eq!(
            Flock::range(LockType::Read, 5, i64::MAX as u64, 1).map(|f| f.len),
            Ok(0)
        );
        assert!(Flock::range(LockType::Read, 10, 5, 1).is_err());
    }

    #[test]
    fn dev_encoding() {
        assert_eq!(kernel_dev_encode(8, 1), 0x801);
        assert_eq!(
            kernel_dev_encode(259, 0x12345),
            0x45 | (259 << 8) | (0x123 << 20)
        );
        let host = libc::makedev(8, 17) as u64;
        assert_eq!(host_dev_to_kernel(host), Ok(kernel_dev_encode(8, 17)));
        // For numbers that fit, glibc's dev_t encoding equals the kernel's 32-bit one.
        let host = libc::makedev(200, 0x54321) as u64;
        assert_eq!(host_dev_to_kernel(host), Ok(host as u32));
        assert_eq!(
            host_dev_to_kernel(libc::makedev(5000, 0) as u64),
            Err(Errno::EOVERFLOW)
        );
        assert_eq!(host_dev(8, 1), libc::makedev(8, 1) as u64);
    }

    #[test]
    fn utsname_layout() {
        assert_eq!(std::mem::size_of::<NewUtsname>(), 6 * 65);
        let mut u = NewUtsname::default();
        u.release[..5].copy_from_slice(b"6.12\0");
        assert_eq!(NewUtsname::field(&u.release), "6.12");
        assert_eq!(NewUtsname::field(&[b'a'; UTS_FIELD_LEN]).len(), 65);
    }
}
