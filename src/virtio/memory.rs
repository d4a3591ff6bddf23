//! Kernel memory as the device sees it: the one place where a kernel address becomes a host
//! pointer.
//!
//! The kernel's RAM is one host mapping used 1:1 (kernel "physical" = kernel virtual = host
//! address, see `kernel/README.md`), so a virtio descriptor's `addr` is a host pointer. Nothing
//! outside this file turns one into memory access: [`KernelMemory`] checks every `(addr, len)`
//! against the RAM range first and hands out a [`KernelSlice`], a checked range that can only
//! be copied to and from, filled, or read/written by the host file syscalls.
//!
//! No Rust reference (`&[u8]`, `&mut [u8]`) to kernel memory is ever created: the kernel runs
//! on other host threads and may touch the same bytes (a buggy driver could even hand out
//! overlapping buffers), so all access goes through raw pointers, the way rust-vmm's volatile
//! slices do. Ring indices are accessed as atomics.
//!
//! Invariant behind every `unsafe` block here: a `KernelMemory` covers a range that is mapped
//! readable and writable for the rest of the process and that no Rust reference points into.
//! For the kernel's RAM this is guaranteed by `lkl::kernel_ram` (the block is never unmapped,
//! even after halt, and only the kernel and the device models use it); for tests, by leaking a
//! fresh allocation (`KernelMemory::test_arena`).

#![allow(unsafe_code)] // the checked address → pointer translation lives here and only here

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

/// Why an address range cannot be accessed.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// The range is not (entirely) inside kernel RAM, or its end overflows.
    #[error("kernel address range {addr:#x}+{len:#x} is outside kernel RAM")]
    OutOfRange {
        /// Start address given by the kernel.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// An atomic ring field is not naturally aligned.
    #[error("kernel address {0:#x} is misaligned")]
    Misaligned(u64),
}

/// A range of host addresses that is kernel RAM (or a test arena), see the module invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelMemory {
    start: usize,
    end: usize,
}

impl KernelMemory {
    /// The running kernel's RAM; `None` before boot.
    pub fn kernel() -> Option<KernelMemory> {
        crate::lkl::kernel_ram().map(|r| KernelMemory {
            start: r.start,
            end: r.end,
        })
    }

    /// A fresh zeroed, page-aligned block of `size` bytes that lives until the process exits,
    /// standing in for kernel RAM in unit tests.
    #[cfg(test)]
    pub(crate) fn test_arena(size: usize) -> KernelMemory {
        let layout =
            std::alloc::Layout::from_size_align(size.max(4096), 4096).expect("arena layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!p.is_null(), "test arena allocation failed");
        // The block is never freed and never referenced: the module invariant holds.
        KernelMemory {
            start: p as usize,
            end: p as usize + layout.size(),
        }
    }

    /// The host address range covered.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// The host address of `addr..addr + len` after checking it lies inside this memory.
    fn check(&self, addr: u64, len: u64) -> Result<usize, MemoryError> {
        let err = MemoryError::OutOfRange { addr, len };
        let start = usize::try_from(addr).map_err(|_| err)?;
        let len_usize = usize::try_from(len).map_err(|_| err)?;
        let end = start.checked_add(len_usize).ok_or(err)?;
        if start < self.start || end > self.end {
            return Err(err);
        }
        Ok(start)
    }

    /// A checked slice of `len` bytes at kernel address `addr`.
    pub fn slice(&self, addr: u64, len: u64) -> Result<KernelSlice, MemoryError> {
        let start = self.check(addr, len)?;
        Ok(KernelSlice {
            addr: start,
            len: len as usize, // fits: checked above
        })
    }

    /// Copies `buf.len()` bytes from kernel address `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.slice(addr, buf.len() as u64)?.copy_to(buf);
        Ok(())
    }

    /// Copies `buf` to kernel address `addr`.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), MemoryError> {
        self.slice(addr, buf.len() as u64)?.copy_from(buf);
        Ok(())
    }

    /// The 16-bit ring field at `addr` as an atomic (little-endian value, host order atomics:
    /// only little-endian hosts are supported, as the kernel build is).
    fn atomic_u16(&self, addr: u64) -> Result<&AtomicU16, MemoryError> {
        let p = self.check(addr, 2)?;
        if p % std::mem::align_of::<AtomicU16>() != 0 {
            return Err(MemoryError::Misaligned(addr));
        }
        // SAFETY: `p` is aligned and inside memory that stays mapped for the process (module
        // invariant), so it is valid for the returned lifetime. The kernel accesses ring
        // indices with single aligned 16-bit loads and stores (READ_ONCE/WRITE_ONCE-style) on
        // other host threads; on the supported hosts those are atomic, so treating the field
        // as an AtomicU16 does not race in practice.
        Ok(unsafe { AtomicU16::from_ptr(p as *mut u16) })
    }

    /// Loads a little-endian u16 ring field with `order`.
    pub fn load_u16(&self, addr: u64, order: Ordering) -> Result<u16, MemoryError> {
        Ok(u16::from_le(self.atomic_u16(addr)?.load(order)))
    }

    /// Stores a little-endian u16 ring field with `order`.
    pub fn store_u16(&self, addr: u64, value: u16, order: Ordering) -> Result<(), MemoryError> {
        self.atomic_u16(addr)?.store(value.to_le(), order);
        Ok(())
    }
}

/// A checked range of kernel memory, valid for the rest of the process (only [`KernelMemory`]
/// makes them). Copy it freely; it is just an address and a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSlice {
    addr: usize,
    len: usize,
}

impl KernelSlice {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The kernel (= host) address of the first byte.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// The part `offset..offset + len` of this slice, if it is inside.
    pub fn sub(&self, offset: usize, len: usize) -> Option<KernelSlice> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then_some(KernelSlice {
            addr: self.addr + offset,
            len,
        })
    }

    /// The part from `offset` to the end.
    pub fn skip(&self, offset: usize) -> Option<KernelSlice> {
        self.sub(offset, self.len.checked_sub(offset)?)
    }

    /// Copies the first `dst.len()` bytes (at most [`len`](Self::len)) into `dst`.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len);
        // SAFETY: `addr..addr + n` is checked kernel memory (module invariant); `dst` is a
        // distinct Rust buffer valid for `n` bytes. `copy` tolerates overlap anyway.
        unsafe { std::ptr::copy(self.addr as *const u8, dst.as_mut_ptr(), n) };
        n
    }

    /// Copies `src` (at most [`len`](Self::len) bytes of it) to the start of the slice.
    pub fn copy_from(&self, src: &[u8]) -> usize {
        let n = src.len().min(self.len);
        // SAFETY: as in `copy_to`, with the roles swapped.
        unsafe { std::ptr::copy(src.as_ptr(), self.addr as *mut u8, n) };
        n
    }

    /// Sets every byte to `byte`.
    pub fn fill(&self, byte: u8) {
        // SAFETY: the whole slice is checked kernel memory (module invariant).
        unsafe { std::ptr::write_bytes(self.addr as *mut u8, byte, self.len) };
    }

    /// One `pread` from `file` at `offset` into the slice; returns the bytes read.
    pub fn read_from(&self, file: &File, offset: u64) -> io::Result<usize> {
        let offset = file_offset(offset)?;
        // SAFETY: the destination is checked, writable kernel memory of `len` bytes (module
        // invariant); pread writes at most that many bytes there.
        let n = unsafe { libc::pread(file.as_raw_fd(), self.addr as *mut _, self.len, offset) };
        io_result(n)
    }

    /// One `pwrite` of the slice to `file` at `offset`; returns the bytes written.
    pub fn write_to(&self, file: &File, offset: u64) -> io::Result<usize> {
        let offset = file_offset(offset)?;
        // SAFETY: the source is checked, readable kernel memory of `len` bytes.
        let n = unsafe { libc::pwrite(file.as_raw_fd(), self.addr as *const _, self.len, offset) };
        io_result(n)
    }

    /// One `preadv` from `file` at `offset` into `slices` (at most `IOV_MAX` of them are used);
    /// returns the bytes read.
    pub fn read_vectored_from(
        slices: &[KernelSlice],
        file: &File,
        offset: u64,
    ) -> io::Result<usize> {
        Self::preadv2(slices, file, offset, 0)
    }

    /// Like [`KernelSlice::read_vectored_from`] with `RWF_NOWAIT`: reads only what the host
    /// can hand over without waiting for its disk (its page cache). Returns the bytes read
    /// (fewer than asked when only part is cached), or `EAGAIN` when none is.
    pub fn read_vectored_cached(
        slices: &[KernelSlice],
        file: &File,
        offset: u64,
    ) -> io::Result<usize> {
        Self::preadv2(slices, file, offset, libc::RWF_NOWAIT)
    }

    fn preadv2(
        slices: &[KernelSlice],
        file: &File,
        offset: u64,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let offset = file_offset(offset)?;
        let iov = iovecs(slices);
        // SAFETY: each iovec is a checked, writable kernel-memory slice (module invariant);
        // the kernel writes only inside them.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset,
                flags,
            )
        };
        io_result(n)
    }

    /// One `pwritev` of `slices` (at most `IOV_MAX` of them) to `file` at `offset`; returns the
    /// bytes written.
    pub fn write_vectored_to(
        slices: &[KernelSlice],
        file: &File,
        offset: u64,
    ) -> io::Result<usize> {
        let offset = file_offset(offset)?;
        let iov = iovecs(slices);
        // SAFETY: each iovec is a checked, readable kernel-memory slice.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset,
            )
        };
        io_result(n)
    }
}

/// Most iovecs one `preadv`/`pwritev` takes (Linux `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

fn iovecs(slices: &[KernelSlice]) -> Vec<libc::iovec> {
    slices
        .iter()
        .take(IOV_MAX)
        .map(|s| libc::iovec {
            iov_base: s.addr as *mut libc::c_void,
            iov_len: s.len,
        })
        .collect()
}

fn file_offset(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

fn io_result(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let mem = KernelMemory::test_arena(8192);
        let base = mem.range().start as u64;
        assert!(mem.slice(base, 8192).is_ok());
        assert!(mem.slice(base + 8191, 1).is_ok());
        assert!(mem.slice(base + 8192, 0).is_ok());
        for (addr, len) in [
            (base + 8192, 1),
            (base - 1, 1),
            (base + 1, 8192),
            (0, 16),
            (u64::MAX, 2),
            (base, u64::MAX),
        ] {
            assert_eq!(
                mem.slice(addr, len),
                Err(MemoryError::OutOfRange { addr, len }),
                "{addr:#x}+{len:#x}"
            );
        }
        assert_eq!(
            mem.load_u16(base + 1, Ordering::Relaxed),
            Err(MemoryError::Misaligned(base + 1))
        );
        assert!(mem.load_u16(base + 8191, Ordering::Relaxed).is_err());
    }

    #[test]
    fn copies_and_atomics() {
        let mem = KernelMemory::test_arena(4096);
        let base = mem.range().start as u64;
        mem.write(base + 10, b"hello").expect("write");
        let mut out = [0u8; 5];
        mem.read(base + 10, &mut out).expect("read");
        assert_eq!(&out, b"hello");
        mem.store_u16(base + 100, 0xbeef, Ordering::Release)
            .expect("store");
        assert_eq!(mem.load_u16(base + 100, Ordering::Acquire), Ok(0xbeef));
        let mut raw = [0u8; 2];
        mem.read(base + 100, &mut raw).expect("read raw");
        assert_eq!(raw, [0xef, 0xbe], "ring fields are little-endian");

        let s = mem.slice(base + 200, 16).expect("slice");
        s.fill(0xaa);
        let sub = s.sub(4, 4).expect("sub");
        assert_eq!(sub.addr(), base + 204);
        sub.copy_from(&[1, 2, 3, 4, 5]);
        let mut all = [0u8; 16];
        assert_eq!(s.copy_to(&mut all), 16);
        assert_eq!(all[3..9], [0xaa, 1, 2, 3, 4, 0xaa]);
        assert!(s.sub(10, 7).is_none());
        assert_eq!(s.skip(16).map(|s| s.len()), Some(0));
        assert!(s.skip(17).is_none());
    }

    #[test]
    fn file_io_into_kernel_memory() {
        let path = std::env::temp_dir().join(format!("lklfuse-mem-{}", std::process::id()));
        std::fs::write(&path, b"0123456789abcdef").expect("write file");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let mem = KernelMemory::test_arena(4096);
        let base = mem.range().start as u64;
        let a = mem.slice(base, 4).expect("a");
        let b = mem.slice(base + 100, 6).expect("b");
        let n = KernelSlice::read_vectored_from(&[a, b], &file, 2).expect("preadv");
        assert_eq!(n, 10);
        let mut out = [0u8; 6];
        b.copy_to(&mut out);
        assert_eq!(&out, b"6789ab");
        assert_eq!(a.write_to(&file, 12).expect("pwrite"), 4);
        assert_eq!(a.read_from(&file, 14).expect("pread"), 2);
        assert_eq!(std::fs::read(&path).expect("read"), b"0123456789ab2345");
        std::fs::remove_file(&path).expect("cleanup");
    }
}
