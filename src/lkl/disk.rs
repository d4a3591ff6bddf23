//! Disks: image files attached to the kernel as virtio-blk devices before
//! boot, and mounted inside the kernel afterwards.
//!
//! ```text
//! disk::attach(image)  ──►  virtio-mmio device i on the command line
//! lkl::boot()               kernel probes it: /sys/devices/virtio-mmio-cmdline/virtio-mmio.i/virtio*/block/vdX
//! disk.mount(opts)     ──►  /dev/vdX[N] node, type detection, mount on /mnt/vdX[N]
//! ```
//!
//! Every virtio-mmio device is expected to come through [`attach`], so the
//! n-th attached disk is the kernel's virtio-mmio device n.
//!
//! Read-only is enforced below the filesystem: a read-only disk is a
//! read-only virtio device, and a read-only mount of a writable disk first
//! makes the kernel's block device read-only. A journal that needs
//! replaying is then left alone (with a warning) instead of being replayed.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::abi::kernel_dev_encode;
use super::bindings as b;
use super::{probe, sys, Errno, CWD};
use crate::virtio::block::{BlockDevice, BlockError};

/// Failures of [`attach`].
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image could not be opened or served.
    #[error("{}: {source}", path.display())]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: BlockError,
    },
    /// The virtio device could not be registered (after boot, or too many).
    #[error("{}: cannot attach the disk: {source}", path.display())]
    Register {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: super::MmioError,
    },
}

/// Failures of [`Disk::mount`] and [`detect_fstype`].
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The kernel has no block device for this disk or partition.
    #[error("{what}: no such disk or partition in the kernel")]
    NoDevice {
        /// `vda`, `vda2`, or the disk index.
        what: String,
    },
    /// No known superblock was found.
    #[error("{device}: unknown or unsupported filesystem")]
    UnknownFilesystem {
        /// The kernel block device.
        device: String,
    },
    /// A kernel call failed.
    #[error("{action} {target}: {errno}")]
    Kernel {
        /// What was being done.
        action: &'static str,
        /// On what.
        target: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The unmount went through, but the image failed requests while it was mounted
    /// read-write: the filesystem may have lost data it wrote back on its own (some, like
    /// XFS, shut down without failing the final flush), or gone read-only after failing to
    /// read its metadata.
    #[error(
        "{reads} reads and {writes} writes on the image failed while it was mounted (see the \
         log); check it with the filesystem's fsck"
    )]
    FailedIo {
        /// Failed read requests.
        reads: u64,
        /// Failed write, flush, discard and write-zeroes requests.
        writes: u64,
    },
}

fn kernel_err<'a>(action: &'static str, target: &'a str) -> impl FnOnce(Errno) -> MountError + 'a {
    move |errno| MountError::Kernel {
        action,
        target: target.to_string(),
        errno,
    }
}

/// Number of disks attached so far: the next one's virtio-mmio index.
static ATTACHED: AtomicUsize = AtomicUsize::new(0);

/// An image attached to the kernel.
#[derive(Clone)]
pub struct Disk {
    index: usize,
    path: PathBuf,
    read_only: bool,
    device: Arc<BlockDevice>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("index", &self.index)
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Attaches `image` as the next virtio-blk disk. Must be called before
/// [`super::boot`]. A writable attach of an image that can only be opened
/// read-only falls back to a read-only disk, with a warning.
pub fn attach(image: &Path, read_only: bool) -> Result<Disk, DiskError> {
    let open_err = |source| DiskError::Open {
        path: image.to_path_buf(),
        source,
    };
    let (device, read_only) = match BlockDevice::open(image, read_only) {
        Ok(device) => (device, read_only),
        Err(BlockError::ImageReadOnly { .. }) if !read_only => {
            tracing::warn!(
                "{}: image is read-only; attaching it read-only",
                image.display()
            );
            (BlockDevice::open(image, true).map_err(open_err)?, true)
        }
        Err(e) => return Err(open_err(e)),
    };
    device.register().map_err(|source| DiskError::Register {
        path: image.to_path_buf(),
        source,
    })?;
    let index = ATTACHED.fetch_add(1, Ordering::SeqCst);
    Ok(Disk {
        index,
        path: image.to_path_buf(),
        read_only,
        device,
    })
}

/// How to mount a disk (see [`Disk::mount`]).
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Partition number (1-based, MBR or GPT), or the whole disk.
    pub partition: Option<u32>,
    /// Kernel filesystem type; `None` detects it.
    pub fstype: Option<String>,
    /// Mount read-only.
    pub read_only: bool,
    /// Further kernel `MS_*` flags (`MS_NOSUID`, `MS_NODEV`, ...).
    pub flags: u64,
    /// Filesystem-specific options, comma separated.
    pub data: String,
}

/// A filesystem mounted inside the kernel.
#[derive(Debug)]
pub struct Mount {
    path: CString,
    device: CString,
    fstype: &'static str,
    read_only: bool,
    /// See [`Mount::names_stable`].
    names_fold_case: bool,
    /// The disk's device, whose failed requests decide whether the session was clean.
    disk: Arc<BlockDevice>,
}

impl Disk {
    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `hook` whenever the kernel submits requests to this disk that it does not
    /// complete at once (see
    /// [`BlockDevice::on_submit`](crate::virtio::block::BlockDevice::on_submit)).
    pub fn on_submit(&self, hook: crate::virtio::block::SubmitHook) {
        self.device.on_submit(hook);
    }

    /// Whether the disk itself is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The image size in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.device.capacity_bytes()
    }

    /// The kernel's name for the disk, e.g. `vda`.
    pub fn kernel_name(&self) -> Result<String, MountError> {
        let base = format!(
            "/sys/devices/virtio-mmio-cmdline/virtio-mmio.{}",
            self.index
        );
        let no_device = || MountError::NoDevice {
            what: format!("disk {} ({})", self.index, self.path.display()),
        };
        let virtio = list_dir(&base)
            .map_err(|_| no_device())?
            .into_iter()
            .find(|name| name.starts_with("virtio"))
            .ok_or_else(no_device)?;
        list_dir(&format!("{base}/{virtio}/block"))
            .map_err(|_| no_device())?
            .into_iter()
            .next()
            .ok_or_else(no_device)
    }

    /// Makes `/dev/<name>` inside the kernel for the disk or one of its partitions and
    /// returns its path, for raw block access (the kernel must be booted).
    pub fn device_node(&self, partition: Option<u32>) -> Result<CString, MountError> {
        ensure_sysfs()?;
        let disk = self.kernel_name()?;
        let name = match partition {
            None => disk.clone(),
            Some(n) => format!("{disk}{n}"),
        };
        let sysfs = match partition {
            None => format!("/sys/block/{disk}/dev"),
            Some(_) => format!("/sys/block/{disk}/{name}/dev"),
        };
        let dev = read_small(&sysfs).map_err(|_| MountError::NoDevice { what: name.clone() })?;
        let (major, minor) = parse_dev(&dev).ok_or_else(|| MountError::NoDevice {
            what: format!("{name} (bad dev {dev:?})"),
        })?;
        let node = cstring(&format!("/dev/{name}"));
        match sys::mknodat(
            CWD,
            &node,
            b::S_IFBLK | 0o600,
            kernel_dev_encode(major, minor),
        ) {
            Ok(()) | Err(Errno::EEXIST) => Ok(node),
            Err(e) => Err(kernel_err("mknod", &name)(e)),
        }
    }

    /// Mounts the disk (or a partition of it) inside the kernel on
    /// `/mnt/<name>`.
    pub fn mount(&self, opts: &MountOptions) -> Result<Mount, MountError> {
        ensure_sysfs()?;
        let device = self.device_node(opts.partition)?;
        let device_name = device.to_string_lossy().into_owned();
        let superblocks = read_superblocks(&device)?;
        let fstype: &'static str = match &opts.fstype {
            Some(t) => known_type(t).ok_or_else(|| MountError::UnknownFilesystem {
                device: format!("{device_name} (type {t})"),
            })?,
            None => probe::detect(&superblocks).ok_or_else(|| MountError::UnknownFilesystem {
                device: device_name.clone(),
            })?,
        };

        let read_only = opts.read_only || self.read_only;
        prepare_block_device(&device, read_only)?;
        let mut flags = opts.flags;
        let mut data = opts.data.clone();
        if read_only {
            flags |= u64::from(b::MS_RDONLY);
            if matches!(fstype, "ext3" | "ext4") && probe::ext_needs_recovery(&superblocks) {
                tracing::warn!(
                    "{}: the journal needs recovery; mounting read-only without replaying it \
                     (recent changes may be missing)",
                    self.path.display()
                );
                append_option(&mut data, "noload");
            }
            if fstype == "btrfs" && probe::btrfs_has_log_tree(&superblocks) {
                tracing::warn!(
                    "{}: the btrfs log tree needs replaying; mounting read-only without it \
                     (recent fsync'ed changes may be missing)",
                    self.path.display()
                );
                append_option(&mut data, "rescue=nologreplay");
            }
        }

        let path = cstring(&format!("/mnt/{}", device_name.trim_start_matches("/dev/")));
        mkdir_p(c"/mnt")?;
        mkdir_p(&path)?;
        let fstype_c = cstring(fstype);
        let mounted = mount_retrying_enomem(&device, &path, &fstype_c, flags, &data);
        match mounted {
            Ok(()) => {}
            // XFS refuses a dirty log on a read-only device: skip recovery (only for a real XFS
            // superblock; anything else asked to mount as xfs just fails).
            Err(Errno::EROFS | Errno::EINVAL)
                if read_only && fstype == "xfs" && probe::detect(&superblocks) == Some("xfs") =>
            {
                tracing::warn!(
                    "{}: the XFS log needs recovery; mounting read-only without it \
                     (recent changes may be missing)",
                    self.path.display()
                );
                append_option(&mut data, "norecovery");
                mount_retrying_enomem(&device, &path, &fstype_c, flags, &data)
                    .map_err(kernel_err("mount", &device_name))?;
            }
            Err(e) => return Err(kernel_err("mount", &device_name)(e)),
        }
        // What the kernel made of it: some types are read-only whatever was asked (squashfs,
        // ISO 9660, EROFS), others turn so on features they cannot write.
        let read_only = read_only
            || sys::statfs(&path).is_ok_and(|st| st.flags & crate::lkl::abi::st::RDONLY != 0);
        Ok(Mount {
            path,
            device,
            fstype,
            read_only,
            names_fold_case: probe::names_fold_case(fstype, &superblocks),
            disk: self.device.clone(),
        })
    }
}

impl Mount {
    /// The mount point inside the kernel.
    pub fn path(&self) -> &CStr {
        &self.path
    }

    /// The filesystem type mounted.
    pub fn fstype(&self) -> &'static str {
        self.fstype
    }

    /// Whether the filesystem has work to do when a descriptor is closed (a `flush` file
    /// operation). Of the types served here only f2fs has one.
    pub fn acts_on_close(&self) -> bool {
        self.fstype == "f2fs"
    }

    /// Whether each name reaches its file under exactly one spelling for as long as the
    /// mount lasts: no case folding, or nothing can change because it is read-only.
    pub fn names_stable(&self) -> bool {
        self.read_only || !self.names_fold_case
    }

    /// Whether it is mounted read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Unmounts, then flushes the block device so that everything is in
    /// the image file (virtio FLUSH → fdatasync). A read-write mount during which the image
    /// failed requests ends in [`MountError::FailedIo`]; on a read-only one failed reads lose
    /// nothing and are only logged.
    pub fn unmount(self) -> Result<(), MountError> {
        let target = self.path.to_string_lossy().into_owned();
        let mut attempts = 0;
        loop {
            match sys::umount2(&self.path, 0) {
                Ok(()) => break,
                // Deferred fputs of just-closed files can hold it a moment.
                Err(Errno::EBUSY) if attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(kernel_err("unmount", &target)(e)),
            }
        }
        let dev = sys::openat(CWD, &self.device, b::O_RDONLY as i32, 0)
            .map_err(kernel_err("open", &target))?;
        sys::fsync(&dev).map_err(kernel_err("flush", &target))?;
        match self.disk.failed_requests() {
            (0, 0) => Ok(()),
            (reads, writes) if self.read_only => {
                tracing::warn!(
                    "{reads} reads and {writes} writes on the image failed while it was mounted"
                );
                Ok(())
            }
            (reads, writes) => Err(MountError::FailedIo { reads, writes }),
        }
    }
}

/// `mount(2)`, retried once after dropping clean caches if the kernel is out of memory.
///
/// Without an MMU every multi-page allocation must be physically contiguous, and some
/// filesystems want large ones at mount time (squashfs with zstd: a ~0.5 MiB workspace).
/// When the page cache has filled and fragmented RAM those fail although most memory is
/// only clean cache; dropping it lets the buddy allocator merge free blocks again.
fn mount_retrying_enomem(
    device: &CStr,
    path: &CStr,
    fstype: &CStr,
    flags: u64,
    data: &str,
) -> Result<(), Errno> {
    let data_c = cstring(data);
    let data_arg = (!data.is_empty()).then_some(data_c.as_c_str());
    match sys::mount(Some(device), path, Some(fstype), flags, data_arg) {
        Err(Errno::ENOMEM) => {
            tracing::debug!("mount of {device:?}: out of memory; dropping caches and retrying");
            drop_caches()?;
            sys::mount(Some(device), path, Some(fstype), flags, data_arg)
        }
        other => other,
    }
}

/// Writes back dirty data, then frees clean page cache, dentries and inodes.
pub fn drop_caches() -> Result<(), Errno> {
    sys::sync()?;
    ensure_procfs()?;
    let fd = sys::openat(CWD, c"/proc/sys/vm/drop_caches", b::O_WRONLY as i32, 0)?;
    sys::write(&fd, b"3")?;
    Ok(())
}

/// The kernel's memory figures from its `/proc/meminfo`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryInfo {
    /// All memory the kernel manages.
    pub total_kib: u64,
    /// Memory not used at all.
    pub free_kib: u64,
    /// Memory available for new work without swapping (free + reclaimable caches).
    pub available_kib: u64,
}

/// How much of its memory the kernel uses (for statistics).
pub fn memory_info() -> Result<MemoryInfo, Errno> {
    ensure_procfs()?;
    let fd = sys::openat(
        CWD,
        c"/proc/meminfo",
        (b::O_RDONLY | b::O_CLOEXEC) as i32,
        0,
    )?;
    let mut text = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        let n = sys::read(&fd, &mut buf)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    Ok(parse_meminfo(&String::from_utf8_lossy(&text)))
}

fn parse_meminfo(text: &str) -> MemoryInfo {
    let mut info = MemoryInfo::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match name {
            "MemTotal:" => info.total_kib = value,
            "MemFree:" => info.free_kib = value,
            "MemAvailable:" => info.available_kib = value,
            _ => {}
        }
    }
    info
}

/// The filesystem on a disk or partition, detected from its superblocks.
pub fn detect_fstype(disk: &Disk, partition: Option<u32>) -> Result<&'static str, MountError> {
    ensure_sysfs()?;
    let device = disk.device_node(partition)?;
    let superblocks = read_superblocks(&device)?;
    probe::detect(&superblocks).ok_or_else(|| MountError::UnknownFilesystem {
        device: device.to_string_lossy().into_owned(),
    })
}

/// Types `mount` accepts by name; `ext2`/`ext3` go to the ext4 driver.
fn known_type(name: &str) -> Option<&'static str> {
    const TYPES: &[&str] = &[
        "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "msdos", "exfat", "ntfs3", "iso9660",
        "udf", "squashfs", "erofs", "f2fs", "hfsplus",
    ];
    match name {
        "ntfs" => Some("ntfs3"),
        "fat" => Some("vfat"),
        "iso" => Some("iso9660"),
        other => TYPES.iter().copied().find(|t| *t == other),
    }
}

fn append_option(data: &mut String, option: &str) {
    if !data.is_empty() {
        data.push(',');
    }
    data.push_str(option);
}

fn read_superblocks(device: &CStr) -> Result<Vec<u8>, MountError> {
    let name = device.to_string_lossy();
    let fd = sys::openat(CWD, device, b::O_RDONLY as i32, 0).map_err(kernel_err("open", &name))?;
    let mut buf = vec![0u8; probe::PROBE_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        let n = sys::pread64(&fd, &mut buf[filled..], filled as i64)
            .map_err(kernel_err("read", &name))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Read-ahead window of the disk, in bytes. Each block request crosses to a host thread and
/// back, so fewer, larger ones read faster: the kernel's default (128 KiB) made a sequential
/// read wait for a request every 128 KiB.
const READ_AHEAD_BYTES: u64 = 1 << 20;

/// Sets the block device up before a filesystem (and its files' read-ahead state) is set
/// up on it: `BLKRASET` to read ahead [`READ_AHEAD_BYTES`], and for a read-only mount
/// `BLKROSET`, after which the device refuses writes.
fn prepare_block_device(device: &CStr, read_only: bool) -> Result<(), MountError> {
    let name = device.to_string_lossy();
    let fd = sys::openat(CWD, device, b::O_RDONLY as i32, 0).map_err(kernel_err("open", &name))?;
    if read_only {
        sys::ioctl_blkroset(&fd, true).map_err(kernel_err("set read-only", &name))?;
    }
    sys::ioctl_blkraset(&fd, READ_AHEAD_BYTES / 512).map_err(kernel_err("set read-ahead", &name))
}

fn ensure_sysfs() -> Result<(), MountError> {
    static MOUNTED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    mount_once(&MOUNTED, c"sysfs", c"/sys").map_err(kernel_err("mount", "/sys"))
}

/// Mounts the kernel's procfs on `/proc` unless done already (for `/proc/sys` and the
/// `/proc/self/fd` paths the FUSE layer reopens inodes through).
pub fn ensure_procfs() -> Result<(), Errno> {
    static MOUNTED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    mount_once(&MOUNTED, c"proc", c"/proc")
}

/// Mounts the pseudo filesystem `fstype` on `dir` once per process; `EBUSY` means someone
/// else (a test, say) mounted it already, which is as good.
fn mount_once(mounted: &std::sync::Mutex<bool>, fstype: &CStr, dir: &CStr) -> Result<(), Errno> {
    let mut mounted = mounted.lock().unwrap_or_else(|e| e.into_inner());
    if !*mounted {
        match sys::mkdirat(CWD, dir, 0o755) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        match sys::mount(Some(fstype), dir, Some(fstype), 0, None) {
            Ok(()) | Err(Errno::EBUSY) => *mounted = true,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn mkdir_p(dir: &CStr) -> Result<(), MountError> {
    match sys::mkdirat(CWD, dir, 0o755) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(kernel_err("mkdir", &dir.to_string_lossy())(e)),
    }
}

/// Paths built here never contain NUL (they come from sysfs names and our
/// own format strings); a NUL would be a bug, not user input.
fn cstring(s: &str) -> CString {
    CString::new(s).expect("kernel paths built here contain no NUL")
}

fn read_small(path: &str) -> Result<String, Errno> {
    let fd = sys::openat(CWD, &cstring(path), b::O_RDONLY as i32, 0)?;
    let mut buf = [0u8; 256];
    let n = sys::read(&fd, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

fn list_dir(path: &str) -> Result<Vec<String>, Errno> {
    let fd = sys::openat(
        CWD,
        &cstring(path),
        (b::O_RDONLY | b::O_DIRECTORY) as i32,
        0,
    )?;
    let mut names = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = sys::getdents64(&fd, &mut buf)?;
        if n == 0 {
            return Ok(names);
        }
        for entry in super::abi::dirents(&buf[..n]) {
            let name = entry?.name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
    }
}

/// "254:1" → (254, 1).
fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_parsed() {
        let info = parse_meminfo(
            "MemTotal:          65536 kB\nMemFree:           40000 kB\nMemAvailable:      50000 kB\nBuffers: x kB\n",
        );
        assert_eq!(
            info,
            MemoryInfo {
                total_kib: 65536,
                free_kib: 40000,
                available_kib: 50000
            }
        );
    }

    #[test]
    fn dev_numbers_parse() {
        assert_eq!(parse_dev("254:0\n"), Some((254, 0)));
        assert_eq!(parse_dev("8:17"), Some((8, 17)));
        assert_eq!(parse_dev("254"), None);
        assert_eq!(parse_dev("a:b"), None);
    }

    #[test]
    fn type_names() {
        assert_eq!(known_type("ext4"), Some("ext4"));
        assert_eq!(known_type("ntfs"), Some("ntfs3"));
        assert_eq!(known_type("zfs"), None);
    }

    #[test]
    fn options_append() {
        let mut data = String::new();
        append_option(&mut data, "noload");
        assert_eq!(data, "noload");
        append_option(&mut data, "norecovery");
        assert_eq!(data, "noload,norecovery");
    }
}
