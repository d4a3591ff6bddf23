//! virtio-blk (virtio 1.2 §5.2): an image file served to the kernel as `/dev/vdX`.
//!
//! - [`request`] parses a descriptor chain into a [`request::Request`] (no I/O);
//! - [`execute`] runs it against a [`backend::DiskBackend`] and maps the outcome to the status
//!   byte in one place ([`execute::status`]);
//! - [`backend::RawFile`] is the image: positioned reads/writes, `fdatasync`, `fallocate`;
//! - this module holds the device: features and config space, and the path of a request
//!   from `QueueNotify` to the used ring.
//!
//! Request path: the kernel writes `QueueNotify` (on its CPU); `Block::queue_notify` pops
//! the available chains and queues one job per chain on the worker pool. A worker parses
//! and executes the request, writes the status byte, pushes the chain onto the used ring
//! (one mutex), and raises the interrupt unless the driver suppressed it. Several requests
//! are in flight at once; completions may reach the used ring in any order.
//!
//! One shortcut: a small read whose data the host has in its page cache is copied at once
//! by `queue_notify` itself (`preadv2` with `RWF_NOWAIT`, which never waits for a disk) and
//! completed before it returns, with the interrupt run on the same thread. Handing it to a
//! worker and back would cost two thread wake-ups, far more than the copy; a random 4 KiB
//! read through the mount got about 2.5 times faster. Anything else, including a read the
//! host would have to fetch, still goes to a worker.
//!
//! Durability: `VIRTIO_BLK_F_FLUSH` is offered, so Linux treats the disk as having a volatile
//! write cache and sends flushes; a flush is `fdatasync` on the image, which covers every
//! write completed before it. A write is completed only after `pwrite` returned. Every
//! 16 MiB written, the host is also asked to start writing the image back (write-behind,
//! see `backend::WRITE_BEHIND`), so that a flush after a large write finds little left.
//!
//! Reset (status 0) stops taking requests, waits for those in flight, then forgets the queue.
//!
//! Locks: `active` (notify side) and the used-ring mutex are never held together by a worker,
//! and none is held while raising the interrupt (whose handler reads our registers).

pub mod backend;
pub mod execute;
pub mod request;
mod worker;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use self::backend::{DiskBackend, RawFile};
use self::execute::{Context, RequestError, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR};
use self::request::{Limits, Malformed, Request, RequestType, SECTOR_SIZE};
use self::worker::WorkerPool;
use super::features::{bit, VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC};
use super::memory::KernelMemory;
use super::mmio::{ActivateError, MmioTransport, VirtioDevice, MMIO_REGION_SIZE};
use super::queue::{self, AvailItem, AvailRing, ChainError, QueueConfig, UsedRing};
use super::{Interrupt, KernelIrq};
use crate::lkl::{self, MmioDevice, MmioError, MmioRegion};

/// virtio device id of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;

/// Block feature bits (virtio 1.2 §5.2.3).
pub mod features {
    /// `size_max` is valid.
    pub const VIRTIO_BLK_F_SIZE_MAX: u32 = 1;
    /// `seg_max` is valid.
    pub const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
    /// The device is read-only.
    pub const VIRTIO_BLK_F_RO: u32 = 5;
    /// `blk_size` is valid.
    pub const VIRTIO_BLK_F_BLK_SIZE: u32 = 6;
    /// Flush requests are supported (and the device has a write cache).
    pub const VIRTIO_BLK_F_FLUSH: u32 = 9;
    /// Discard requests are supported.
    pub const VIRTIO_BLK_F_DISCARD: u32 = 13;
    /// Write-zeroes requests are supported.
    pub const VIRTIO_BLK_F_WRITE_ZEROES: u32 = 14;
}
use self::features::*;

/// Entries of the one request queue (`QueueNumMax`).
pub const QUEUE_SIZE: u16 = 256;
/// Most data segments per request: the queue size minus header and status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest data segment in bytes.
pub const SIZE_MAX: u32 = 1 << 20;
/// Logical block size.
pub const BLK_SIZE: u32 = 512;
/// Longest discard / write-zeroes range, in sectors (2 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Most ranges per discard / write-zeroes request.
pub const MAX_DISCARD_SEG: u32 = 32;
/// Discard granularity in sectors (4 KiB, the usual host file system block).
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;
/// Worker threads per device.
pub const WORKERS: usize = 4;
/// Largest read served on the notifying thread when the host has it cached (see
/// `QueueShared::serve_cached`): random and metadata reads, not long sequential ones,
/// whose copies the workers overlap.
const INLINE_READ_MAX: u64 = 128 << 10;
/// Size of `struct virtio_blk_config` up to and including the write-zeroes fields.
const CONFIG_SIZE: usize = 60;

/// Why a block device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image cannot be opened (or is a directory).
    #[error("failed to open {}: {source}", path.display())]
    OpenImage {
        /// The image.
        path: PathBuf,
        /// What open said.
        #[source]
        source: io::Error,
    },
    /// Read-write was asked, but the image can only be opened read-only. Callers may retry
    /// with `read_only = true` after warning the user.
    #[error("{} can only be opened read-only: {source}", path.display())]
    ImageReadOnly {
        /// The image.
        path: PathBuf,
        /// Why the read-write open failed.
        #[source]
        source: io::Error,
    },
    /// Another process holds a conflicting lock on the image: it has it attached read-write
    /// (or, for a read-write attach, at all). Sharing it would corrupt it or show garbage.
    #[error(
        "{}: image is in use by another process (locked {}); unmount it there first",
        path.display(),
        if *read_only { "for writing" } else { "for reading or writing" }
    )]
    InUse {
        /// The image.
        path: PathBuf,
        /// Whether the refused attach was read-only.
        read_only: bool,
    },
    /// The image size cannot be determined.
    #[error("failed to get the size of {}: {source}", path.display())]
    ImageSize {
        /// The image.
        path: PathBuf,
        /// What seek said.
        #[source]
        source: io::Error,
    },
}

/// A virtio-blk device serving an image file to the in-process kernel.
///
/// Create it with [`open`](Self::open), [`register`](Self::register) it before the kernel
/// boots; the kernel's `virtio_blk` driver then finds it as `/dev/vdX` (X in registration
/// order) and drives it through the MMIO registers this type implements.
pub struct BlockDevice {
    transport: MmioTransport,
    block: Arc<Block>,
    region: OnceLock<MmioRegion>,
    path: PathBuf,
}

impl std::fmt::Debug for BlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockDevice")
            .field("path", &self.path)
            .field("capacity", &self.block.disk.size())
            .field("read_only", &self.block.read_only)
            .field("region", &self.region.get())
            .finish_non_exhaustive()
    }
}

impl BlockDevice {
    /// Runs `hook` on the submitting thread each time the kernel hands the device requests
    /// it does not complete at once, that is, when some kernel task is about to wait for
    /// the image. Only the first hook set counts. It must be quick and must not call into
    /// the kernel.
    pub fn on_submit(&self, hook: SubmitHook) {
        let _ = self.block.on_submit.set(hook);
    }

    /// Read requests and write/flush/discard requests the image failed since attaching. A
    /// failed write means the filesystem inside may have lost data it was told was safe
    /// (the kernel reports it to the caller, but filesystems also write on their own).
    pub fn failed_requests(&self) -> (u64, u64) {
        (
            self.block.failures.reads.load(Ordering::Relaxed),
            self.block.failures.writes.load(Ordering::Relaxed),
        )
    }

    /// Opens `path` (a regular file or a host block device) as a disk. Read-only opens use
    /// `O_RDONLY`; every open is close-on-exec. A read-write open that the host refuses
    /// (`EACCES`, `EPERM`, `EROFS`) while a read-only one works fails with
    /// [`BlockError::ImageReadOnly`].
    pub fn open(path: &Path, read_only: bool) -> Result<Arc<BlockDevice>, BlockError> {
        let file = open_image(path, read_only)?;
        let size = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::ImageSize {
                path: path.to_owned(),
                source,
            })?;
        if size % SECTOR_SIZE != 0 {
            tracing::warn!(
                "{}: the last {} bytes are not a whole sector and are not visible to the kernel",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        let capacity = size - size % SECTOR_SIZE;
        let disk = Arc::new(RawFile::new(file, capacity));
        let block = Arc::new(Block::new(disk, read_only, serial_for(path))?);
        Ok(Arc::new(BlockDevice {
            transport: MmioTransport::new(block.clone()),
            block,
            region: OnceLock::new(),
            path: path.to_owned(),
        }))
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the disk in bytes (the image size rounded down to whole sectors).
    pub fn capacity_bytes(&self) -> u64 {
        self.block.disk.size()
    }

    /// Whether the device is read-only.
    pub fn read_only(&self) -> bool {
        self.block.read_only
    }

    /// The serial number the kernel reads with `GET_ID` (`/sys/block/vdX/serial`): the
    /// image's file name, cut to 20 bytes.
    pub fn serial(&self) -> String {
        let s = &self.block.serial;
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    }

    /// Registers the device with the kernel (before boot): it appears on the kernel command
    /// line and its completions raise the interrupt line it was given. Registering again
    /// returns the same region.
    pub fn register(self: &Arc<Self>) -> Result<MmioRegion, MmioError> {
        if let Some(region) = self.region.get() {
            return Ok(*region);
        }
        let region = lkl::register_virtio_mmio(MMIO_REGION_SIZE, self.clone())?;
        if let Some(irq) = region.irq {
            self.transport
                .interrupt()
                .set_sink(Arc::new(KernelIrq(irq)));
        }
        let _ = self.region.set(region);
        Ok(region)
    }

    /// Where the device was registered.
    pub fn region(&self) -> Option<MmioRegion> {
        self.region.get().copied()
    }

    /// `fdatasync` on the image: every write the kernel saw completed is durable afterwards.
    pub fn flush(&self) -> io::Result<()> {
        if self.block.read_only {
            return Ok(());
        }
        self.block.disk.flush()
    }

    /// The register file (unit tests drive it directly).
    #[cfg(test)]
    pub(crate) fn transport(&self) -> &MmioTransport {
        &self.transport
    }

    /// Sends completions to `sink` instead of a kernel interrupt (unit tests).
    #[cfg(test)]
    pub(crate) fn set_interrupt_sink(&self, sink: Arc<dyn super::InterruptSink>) -> bool {
        self.transport.interrupt().set_sink(sink)
    }
}

impl MmioDevice for BlockDevice {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.transport.write(offset, data);
    }
}

fn open_image(path: &Path, read_only: bool) -> Result<File, BlockError> {
    let open_err = |source| BlockError::OpenImage {
        path: path.to_owned(),
        source,
    };
    let file = match OpenOptions::new().read(true).write(!read_only).open(path) {
        Ok(file) => file,
        Err(e)
            if !read_only
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS)
                )
                && OpenOptions::new().read(true).open(path).is_ok() =>
        {
            return Err(BlockError::ImageReadOnly {
                path: path.to_owned(),
                source: e,
            });
        }
        Err(e) => return Err(open_err(e)),
    };
    let meta = file.metadata().map_err(open_err)?;
    if meta.is_dir() {
        return Err(open_err(io::Error::from_raw_os_error(libc::EISDIR)));
    }
    // Like QEMU: one writer and no readers, or any number of readers. The lock lives as
    // long as the open file, so it goes away with the device (or the process).
    let locked = if read_only {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match locked {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(BlockError::InUse {
                path: path.to_owned(),
                read_only,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
    }
    Ok(file)
}

/// The image's file name, cut to 20 bytes and NUL-padded.
fn serial_for(path: &Path) -> [u8; VIRTIO_BLK_ID_BYTES] {
    let mut serial = [0u8; VIRTIO_BLK_ID_BYTES];
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or(b"");
    let n = name.len().min(VIRTIO_BLK_ID_BYTES);
    serial[..n].copy_from_slice(&name[..n]);
    serial
}

/// Requests the image failed (host I/O errors, ranges beyond a truncated image...).
#[derive(Default)]
struct Failures {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Failures {
    fn count(&self, kind: &RequestType) {
        let counter = match kind {
            RequestType::In | RequestType::GetId => &self.reads,
            _ => &self.writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests between `QueueNotify` and their used-ring entry.
#[derive(Default)]
struct Inflight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Inflight {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(&self) {
        *self.lock() += 1;
    }

    fn finish(&self) {
        let mut n = self.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self) {
        let mut n = self.lock();
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The device half of virtio-blk (see [`VirtioDevice`]).
struct Block {
    disk: Arc<RawFile>,
    read_only: bool,
    offered: u64,
    config: [u8; CONFIG_SIZE],
    serial: [u8; VIRTIO_BLK_ID_BYTES],
    active: Mutex<Option<ActiveQueue>>,
    inflight: Arc<Inflight>,
    failures: Arc<Failures>,
    /// Started when the driver activates the device, not when the image is attached: the
    /// daemon drops host privileges in between, and threads keep those they were born with.
    pool: OnceLock<WorkerPool>,
    /// Told whenever the kernel submits requests (see [`BlockDevice::on_submit`]).
    on_submit: OnceLock<SubmitHook>,
}

/// What [`BlockDevice::on_submit`] runs.
pub type SubmitHook = Box<dyn Fn() + Send + Sync>;

/// The queue of a started device, notify side.
struct ActiveQueue {
    avail: AvailRing,
    shared: Arc<QueueShared>,
    /// The available ring was found corrupt: ignore it until reset.
    broken: bool,
}

/// What a worker needs to run and complete a request.
struct QueueShared {
    /// Counts requests the image failed (for the end-of-session verdict).
    failures: Arc<Failures>,
    used: Mutex<UsedRing>,
    interrupt: Arc<Interrupt>,
    mem: KernelMemory,
    disk: Arc<RawFile>,
    ctx: Context,
    limits: Limits,
    inflight: Arc<Inflight>,
}

impl Block {
    fn new(
        disk: Arc<RawFile>,
        read_only: bool,
        serial: [u8; VIRTIO_BLK_ID_BYTES],
    ) -> Result<Block, BlockError> {
        let mut offered = bit(VIRTIO_F_VERSION_1)
            | bit(VIRTIO_RING_F_INDIRECT_DESC)
            | bit(VIRTIO_BLK_F_SIZE_MAX)
            | bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_BLK_F_BLK_SIZE);
        offered |= if read_only {
            bit(VIRTIO_BLK_F_RO)
        } else {
            bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES)
        };
        Ok(Block {
            config: config_space(disk.size() / SECTOR_SIZE),
            disk,
            read_only,
            offered,
            serial,
            active: Mutex::new(None),
            inflight: Arc::new(Inflight::default()),
            failures: Arc::new(Failures::default()),
            pool: OnceLock::new(),
            on_submit: OnceLock::new(),
        })
    }

    fn active(&self) -> MutexGuard<'_, Option<ActiveQueue>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `struct virtio_blk_config` (little-endian, packed) up to `write_zeroes_may_unmap`.
fn config_space(capacity_sectors: u64) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    let mut put =
        |offset: usize, bytes: &[u8]| c[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, &capacity_sectors.to_le_bytes()); // capacity
    put(8, &SIZE_MAX.to_le_bytes()); // size_max
    put(12, &SEG_MAX.to_le_bytes()); // seg_max
                                     // 16: geometry (not offered), 24: topology (not offered)
    put(20, &BLK_SIZE.to_le_bytes()); // blk_size
                                      // 32: writeback (no CONFIG_WCE), 33: unused
    put(34, &1u16.to_le_bytes()); // num_queues
    put(36, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_discard_sectors
    put(40, &MAX_DISCARD_SEG.to_le_bytes()); // max_discard_seg
    put(44, &DISCARD_SECTOR_ALIGNMENT.to_le_bytes()); // discard_sector_alignment
    put(48, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &MAX_DISCARD_SEG.to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn device_features(&self) -> u64 {
        self.offered
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn activate(
        &self,
        features: u64,
        mem: KernelMemory,
        queues: &[QueueConfig],
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        let has = |f: u32| features & bit(f) != 0;
        if self.pool.get().is_none() {
            let pool = WorkerPool::new(WORKERS).map_err(ActivateError::StartWorkers)?;
            let _ = self.pool.set(pool);
        }
        let config = queues.first().copied().unwrap_or_default();
        let (avail, used) = queue::activate(mem, &config, has(VIRTIO_RING_F_INDIRECT_DESC))
            .map_err(|e| ActivateError::Queue(0, e))?;
        let shared = Arc::new(QueueShared {
            used: Mutex::new(used),
            interrupt,
            mem,
            disk: self.disk.clone(),
            ctx: Context {
                read_only: self.read_only,
                flush: has(VIRTIO_BLK_F_FLUSH),
                discard: has(VIRTIO_BLK_F_DISCARD),
                write_zeroes: has(VIRTIO_BLK_F_WRITE_ZEROES),
                max_range_sectors: MAX_DISCARD_SECTORS,
                serial: self.serial,
            },
            limits: Limits {
                max_segments: SEG_MAX as usize,
                max_ranges: MAX_DISCARD_SEG as usize,
            },
            inflight: self.inflight.clone(),
            failures: self.failures.clone(),
        });
        tracing::debug!(
            features = format_args!("{features:#x}"),
            queue_size = config.size,
            "virtio-blk started"
        );
        *self.active() = Some(ActiveQueue {
            avail,
            shared,
            broken: false,
        });
        Ok(())
    }

    fn queue_notify(&self, queue: u32) {
        if queue != 0 {
            tracing::warn!(queue, "virtio-blk notified for a queue it does not have");
            return;
        }
        let mut active = self.active();
        let Some(q) = active.as_mut().filter(|q| !q.broken) else {
            return;
        };
        let shared = q.shared.clone();
        let mut queued = false;
        let mut done = Vec::new();
        loop {
            match q.avail.pop() {
                Ok(None) => break,
                Ok(Some(item)) => {
                    let (head, parsed) = shared.parse(item);
                    if let Parsed::Request(req) = &parsed {
                        if let Some(len) = shared.serve_cached(req) {
                            done.push((head, len));
                            continue;
                        }
                    }
                    queued = true;
                    self.inflight.start();
                    let shared = shared.clone();
                    match self.pool.get() {
                        Some(pool) => pool.submit(move || shared.serve(head, parsed)),
                        // Not reached: queues are notified only after activation.
                        None => shared.serve(head, parsed),
                    }
                }
                Err(e) => {
                    tracing::error!("virtio-blk: available ring unusable until reset: {e}");
                    q.broken = true;
                    break;
                }
            }
        }
        drop(active);
        // The interrupt for reads served here runs on this thread, at once if the kernel
        // has interrupts enabled: the submitting task finds its data before it would wait.
        shared.complete(&done);
        if queued {
            if let Some(hook) = self.on_submit.get() {
                hook();
            }
        }
    }

    fn reset(&self) {
        let old = self.active().take();
        self.inflight.wait_idle();
        drop(old);
        tracing::debug!("virtio-blk reset");
    }
}

/// A popped chain, parsed (no I/O yet).
enum Parsed {
    Request(Request),
    /// Not a valid request; the status byte, if usable, reports an error.
    Malformed(Malformed),
    /// The chain itself cannot be walked: it goes back with length 0.
    Unwalkable(ChainError),
}

impl QueueShared {
    /// Parses a popped chain; returns its head with the outcome.
    fn parse(&self, item: AvailItem) -> (u16, Parsed) {
        match item {
            AvailItem::Chain(chain) => {
                let parsed = match Request::parse(&chain.descriptors, &self.mem, self.limits) {
                    Ok(req) => Parsed::Request(req),
                    Err(malformed) => Parsed::Malformed(malformed),
                };
                (chain.head, parsed)
            }
            AvailItem::Malformed(head, e) => (head, Parsed::Unwalkable(e)),
        }
    }

    /// Runs one parsed chain to completion (on a worker).
    fn serve(&self, head: u16, parsed: Parsed) {
        let len = self.process(head, parsed);
        self.complete(&[(head, len)]);
        self.inflight.finish();
    }

    /// Serves a small read at once, on the notifying thread, when the host has its data
    /// cached: no hand-over to a worker and back, which costs two thread wake-ups, far more
    /// than the copy. Returns the used length, or `None` if the request must go to a worker.
    fn serve_cached(&self, req: &Request) -> Option<u32> {
        let len = execute::execute_cached(req, &*self.disk, INLINE_READ_MAX)?;
        req.status.copy_from(&[execute::status(&Ok(len))]);
        Some(len.saturating_add(1))
    }

    /// Executes a parsed chain; returns the used length (bytes written to the driver).
    fn process(&self, head: u16, parsed: Parsed) -> u32 {
        let req = match parsed {
            Parsed::Request(req) => req,
            Parsed::Malformed(Malformed {
                status: Some(status),
                error,
            }) => {
                tracing::warn!("virtio-blk: malformed request (chain {head}): {error}");
                status.copy_from(&[VIRTIO_BLK_S_IOERR]);
                return 1;
            }
            Parsed::Malformed(Malformed {
                status: None,
                error,
            }) => {
                tracing::warn!(
                    "virtio-blk: request without a usable status byte (chain {head}): {error}"
                );
                return 0;
            }
            Parsed::Unwalkable(e) => {
                tracing::warn!("virtio-blk: returning unusable descriptor chain {head}: {e}");
                return 0;
            }
        };
        let result = execute::execute(&req, &*self.disk, &self.ctx);
        match &result {
            Ok(_) => {}
            Err(e @ (RequestError::Unsupported(_) | RequestError::ReadOnly)) => {
                tracing::debug!("virtio-blk request refused: {e}")
            }
            Err(e) => {
                self.failures.count(&req.kind);
                tracing::warn!("virtio-blk request failed: {e}")
            }
        }
        req.status.copy_from(&[execute::status(&result)]);
        result.unwrap_or(0).saturating_add(1)
    }

    /// Hands each `(head, used length)` back to the driver, then interrupts it once unless
    /// it asked not to be.
    fn complete(&self, done: &[(u16, u32)]) {
        if done.is_empty() {
            return;
        }
        let notify = {
            let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
            let mut pushed = true;
            for &(head, len) in done {
                if let Err(e) = used.push(head, len) {
                    tracing::error!("virtio-blk: used ring unusable: {e}");
                    pushed = false;
                    break;
                }
            }
            pushed && used.needs_interrupt()
        };
        if notify {
            self.interrupt.signal_used();
        }
    }
}

#[cfg(test)]
mod tests;
