//! The disk behind a virtio-blk device: a host file (or block device) accessed with positioned
//! I/O, so any number of workers can use it at once without a shared file offset.
//!
//! Whole-transfer semantics: [`DiskBackend::read`] and [`DiskBackend::write`] loop until every
//! byte moved (short transfers continue, `EINTR` retries); end of file before that is an error
//! (`UnexpectedEof`), never silent zero-fill, because the capacity promised those bytes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::super::memory::KernelSlice;

/// Block storage a virtio-blk device serves. Offsets and lengths are in bytes and already
/// checked against [`size`](DiskBackend::size).
pub trait DiskBackend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `bufs` from `offset` on.
    fn read(&self, offset: u64, bufs: &[KernelSlice]) -> io::Result<()>;
    /// Writes `bufs` at `offset`.
    fn write(&self, offset: u64, bufs: &[KernelSlice]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;

    /// Reads all of `bufs` at `offset` only if that needs no wait for a disk (the data is
    /// in the host's page cache): true when done, false when the read must take the
    /// ordinary way, [`DiskBackend::read`], which also reports any error.
    fn read_cached(&self, _offset: u64, _bufs: &[KernelSlice]) -> bool {
        false
    }
    /// Deallocates a range (advisory: may do nothing).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Zeroes a range; `may_unmap` allows deallocating it.
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()>;
}

/// A raw image: the file's bytes are the disk's bytes.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    /// Whether `FALLOC_FL_PUNCH_HOLE` still looks supported.
    punch_hole: AtomicBool,
    /// Whether `FALLOC_FL_ZERO_RANGE` still looks supported.
    zero_range: AtomicBool,
    /// Whether the host still takes `RWF_NOWAIT` reads (see [`DiskBackend::read_cached`]).
    nowait_reads: AtomicBool,
    /// Bytes written since the host was last told to start writing the image back (see
    /// [`WRITE_BEHIND`]).
    written_since_kick: AtomicU64,
    /// Whether `sync_file_range` still looks supported.
    write_behind: AtomicBool,
}

/// Every this many bytes written, the host is told to start writing the image's dirty pages
/// to its disk (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: it submits the writes and does
/// not wait for them to finish; on a disk whose queue is full it waits to submit). Left to
/// itself the host keeps them until an fsync (or a 30 s expiry, or dirty memory passing
/// 10%), so the fsync after a large write waited for all of it, after the write had already
/// taken its time through the kernel here: the two now overlap. A native mount pays that
/// whole write-back at the fsync.
const WRITE_BEHIND: u64 = 16 << 20;

/// Zeroes written when the file system can neither punch holes nor zero ranges.
const ZERO_CHUNK: usize = 1 << 20;

impl RawFile {
    /// Wraps an open image of `size` bytes.
    pub fn new(file: File, size: u64) -> RawFile {
        RawFile {
            file,
            size,
            punch_hole: AtomicBool::new(true),
            zero_range: AtomicBool::new(true),
            nowait_reads: AtomicBool::new(true),
            written_since_kick: AtomicU64::new(0),
            write_behind: AtomicBool::new(true),
        }
    }

    /// Counts `len` bytes written, and every [`WRITE_BEHIND`] bytes asks the host to start
    /// writing dirty pages back.
    fn written(&self, len: u64) {
        let before = self.written_since_kick.fetch_add(len, Ordering::Relaxed);
        if before + len < WRITE_BEHIND || before >= WRITE_BEHIND {
            // Below the mark, or another writer crossed it and kicks.
            return;
        }
        self.written_since_kick.store(0, Ordering::Relaxed);
        if !self.write_behind.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = start_write_back(&self.file) {
            // Only a hint: the flush still writes everything back.
            tracing::debug!("image refuses sync_file_range: {e}");
            self.write_behind.store(false, Ordering::Relaxed);
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `op` over the vector until all of it moved; `op` returns how much it moved from
    /// the front of the slices it is given at the given offset.
    fn whole(
        &self,
        mut offset: u64,
        bufs: &[KernelSlice],
        op: impl Fn(&[KernelSlice], &File, u64) -> io::Result<usize>,
    ) -> io::Result<()> {
        let mut bufs: Vec<KernelSlice> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
        let mut first = 0;
        while first < bufs.len() {
            let n = match op(&bufs[first..], &self.file, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            offset += n as u64;
            let mut n = n;
            while n > 0 && first < bufs.len() {
                let len = bufs[first].len();
                if n >= len {
                    n -= len;
                    first += 1;
                } else {
                    bufs[first] = bufs[first].skip(n).unwrap_or(bufs[first]); // n < len
                    n = 0;
                }
            }
        }
        Ok(())
    }

    pub(super) fn write_zeroes_by_writing(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    /// `fallocate(mode | KEEP_SIZE)`; `Ok(false)` if the file system does not support `mode`
    /// (and remembers that in `supported`).
    fn try_fallocate(
        &self,
        mode: libc::c_int,
        supported: &AtomicBool,
        offset: u64,
        len: u64,
    ) -> io::Result<bool> {
        if !supported.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match fallocate(&self.file, mode | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                tracing::debug!(mode, "image file system refuses fallocate mode: {e}");
                supported.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, bufs: &[KernelSlice]) -> io::Result<()> {
        self.whole(offset, bufs, KernelSlice::read_vectored_from)
    }

    fn write(&self, offset: u64, bufs: &[KernelSlice]) -> io::Result<()> {
        self.whole(offset, bufs, KernelSlice::write_vectored_to)?;
        self.written(bufs.iter().map(|b| b.len() as u64).sum());
        Ok(())
    }

    fn read_cached(&self, offset: u64, bufs: &[KernelSlice]) -> bool {
        if !self.nowait_reads.load(Ordering::Relaxed) {
            return false;
        }
        let wanted: usize = bufs.iter().map(KernelSlice::len).sum();
        match KernelSlice::read_vectored_cached(bufs, &self.file, offset) {
            Ok(n) => n == wanted,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                tracing::debug!("image refuses reads that do not wait: {e}");
                self.nowait_reads.store(false, Ordering::Relaxed);
                false
            }
            // EAGAIN (not cached) and real errors alike: the ordinary read retries and reports.
            Err(_) => false,
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        // Discard is a hint: a file system without hole punching keeps the data.
        self.try_fallocate(libc::FALLOC_FL_PUNCH_HOLE, &self.punch_hole, offset, len)
            .map(|_| ())
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        if may_unmap
            && self.try_fallocate(libc::FALLOC_FL_PUNCH_HOLE, &self.punch_hole, offset, len)?
        {
            return Ok(());
        }
        if self.try_fallocate(libc::FALLOC_FL_ZERO_RANGE, &self.zero_range, offset, len)? {
            return Ok(());
        }
        self.write_zeroes_by_writing(offset, len)
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` over the whole file: starts write-back of its
/// dirty pages without waiting for it.
#[allow(unsafe_code)] // one plain syscall on an owned descriptor, no memory involved
fn start_write_back(file: &File) -> io::Result<()> {
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the call's
    // duration because `file` is borrowed.
    let ret = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fallocate(2)`, which std does not wrap.
#[allow(unsafe_code)] // one plain syscall on an owned descriptor, no memory involved
fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let too_big = || io::Error::from_raw_os_error(libc::EFBIG);
    let offset = libc::off_t::try_from(offset).map_err(|_| too_big())?;
    let len = libc::off_t::try_from(len).map_err(|_| too_big())?;
    loop {
        // SAFETY: fallocate reads no memory of ours; the descriptor is open for the call's
        // duration because `file` is borrowed.
        let ret = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
        if ret == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
