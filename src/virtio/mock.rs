//! A mock virtio-mmio *driver* for unit tests (after rust-vmm virtio-queue's `mock.rs`): it
//! owns a test arena standing in for kernel RAM, lays out a split queue in it, negotiates
//! features through the [`MmioDevice`] registers exactly like Linux's `virtio_mmio`, and posts
//! descriptor chains and collects used entries like `virtio_ring`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::memory::KernelMemory;
use super::mmio::reg;
use super::queue::{Descriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use super::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use super::InterruptSink;
use crate::lkl::MmioDevice;

/// Counts interrupts; tests wait on it.
#[derive(Default)]
pub(crate) struct IrqCounter {
    count: Mutex<u64>,
    raised: Condvar,
}

impl IrqCounter {
    pub(crate) fn count(&self) -> u64 {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl InterruptSink for IrqCounter {
    fn raise(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.raised.notify_all();
    }
}

/// One buffer of a chain: address, length, device-writable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buf {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// The driver side of one queue of one device.
pub(crate) struct MockDriver<'a> {
    dev: &'a dyn MmioDevice,
    pub mem: KernelMemory,
    pub size: u16,
    pub features: u64,
    desc: u64,
    avail: u64,
    used: u64,
    heap: u64,
    heap_end: u64,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    avail_idx: u16,
    last_used: u16,
}

pub(crate) fn rd(dev: &dyn MmioDevice, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read(offset, &mut b);
    u32::from_le_bytes(b)
}

pub(crate) fn wr(dev: &dyn MmioDevice, offset: u64, v: u32) {
    dev.write(offset, &v.to_le_bytes());
}

/// Reads `T`-sized little-endian config fields.
pub(crate) fn config(dev: &dyn MmioDevice, offset: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    dev.read(reg::CONFIG + offset, &mut b[..len]);
    u64::from_le_bytes(b)
}

impl<'a> MockDriver<'a> {
    /// Resets `dev` and brings it up like Linux does, accepting the offered features that
    /// `accept` keeps. `mem` must be the device's memory; the first 64 KiB hold the rings.
    pub(crate) fn new(
        dev: &'a dyn MmioDevice,
        mem: KernelMemory,
        accept: impl Fn(u64) -> u64,
    ) -> Result<MockDriver<'a>, u32> {
        assert_eq!(rd(dev, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(dev, reg::VERSION), 2);
        wr(dev, reg::STATUS, 0);
        wr(dev, reg::STATUS, ACKNOWLEDGE);
        wr(dev, reg::STATUS, ACKNOWLEDGE | DRIVER);
        wr(dev, reg::DEVICE_FEATURES_SEL, 1);
        let mut offered = u64::from(rd(dev, reg::DEVICE_FEATURES)) << 32;
        wr(dev, reg::DEVICE_FEATURES_SEL, 0);
        offered |= u64::from(rd(dev, reg::DEVICE_FEATURES));
        let features = accept(offered);
        wr(dev, reg::DRIVER_FEATURES_SEL, 1);
        wr(dev, reg::DRIVER_FEATURES, (features >> 32) as u32);
        wr(dev, reg::DRIVER_FEATURES_SEL, 0);
        wr(dev, reg::DRIVER_FEATURES, features as u32);
        wr(dev, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        let status = rd(dev, reg::STATUS);
        if status & FEATURES_OK == 0 {
            return Err(status);
        }

        wr(dev, reg::QUEUE_SEL, 0);
        assert_eq!(rd(dev, reg::QUEUE_READY), 0, "queue already in use");
        let size = rd(dev, reg::QUEUE_NUM_MAX) as u16;
        assert!(size > 0);
        let base = mem.range().start as u64;
        let (desc, avail, used) = (base, base + 0x4000, base + 0x8000);
        // Fresh rings: zero them (a second bring-up reuses the arena).
        mem.slice(base, 0x10000).expect("ring area").fill(0);
        wr(dev, reg::QUEUE_NUM, u32::from(size));
        for (lo, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_AVAIL_LOW, avail),
            (reg::QUEUE_USED_LOW, used),
        ] {
            wr(dev, lo, addr as u32);
            wr(dev, lo + 4, (addr >> 32) as u32);
        }
        wr(dev, reg::QUEUE_READY, 1);
        wr(
            dev,
            reg::STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        let status = rd(dev, reg::STATUS);
        if status & DRIVER_OK == 0 || status & super::status::DEVICE_NEEDS_RESET != 0 {
            return Err(status);
        }
        Ok(MockDriver {
            dev,
            mem,
            size,
            features,
            desc,
            avail,
            used,
            heap: base + 0x10000,
            heap_end: mem.range().end as u64,
            free: (0..size).rev().collect(),
            chains: HashMap::new(),
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Allocates `len` bytes of driver memory (8-byte aligned), filled with `fill`.
    pub(crate) fn alloc(&mut self, len: usize, fill: u8) -> u64 {
        let addr = self.heap;
        self.heap = (self.heap + len as u64 + 7) & !7;
        assert!(self.heap <= self.heap_end, "mock arena exhausted");
        self.mem.slice(addr, len as u64).expect("heap").fill(fill);
        addr
    }

    /// Allocates a buffer holding `bytes`.
    pub(crate) fn alloc_bytes(&mut self, bytes: &[u8]) -> u64 {
        let addr = self.alloc(bytes.len(), 0);
        self.mem.write(addr, bytes).expect("heap write");
        addr
    }

    /// Frees all driver memory (buffers must no longer be in flight).
    pub(crate) fn reset_heap(&mut self) {
        self.heap = self.mem.range().start as u64 + 0x10000;
    }

    /// Writes descriptor `index` of the table directly.
    pub(crate) fn write_desc(&self, index: u16, d: Descriptor) {
        self.mem
            .write(self.desc + 16 * u64::from(index), &d.to_bytes())
            .expect("descriptor table");
    }

    /// Makes `head` available (without a kick).
    pub(crate) fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write(self.avail + 4 + 2 * slot, &head.to_le_bytes())
            .expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .store_u16(self.avail + 2, self.avail_idx, Ordering::Release)
            .expect("avail idx");
    }

    /// Posts a chain of direct descriptors; returns its head.
    pub(crate) fn add_chain(&mut self, bufs: &[Buf]) -> u16 {
        assert!(bufs.len() <= self.free.len(), "queue full");
        let ids: Vec<u16> = (0..bufs.len())
            .map(|_| self.free.pop().expect("free descriptor"))
            .collect();
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            self.write_desc(
                ids[i],
                Descriptor {
                    addr: b.addr,
                    len: b.len,
                    flags: if b.write { VIRTQ_DESC_F_WRITE } else { 0 }
                        | if last { 0 } else { VIRTQ_DESC_F_NEXT },
                    next: if last { 0 } else { ids[i + 1] },
                },
            );
        }
        let head = ids[0];
        self.chains.insert(head, ids);
        self.publish(head);
        head
    }

    /// Posts a chain through one indirect table; returns its head.
    pub(crate) fn add_indirect(&mut self, bufs: &[Buf]) -> u16 {
        let table = self.alloc(16 * bufs.len(), 0);
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let d = Descriptor {
                addr: b.addr,
                len: b.len,
                flags: if b.write { VIRTQ_DESC_F_WRITE } else { 0 }
                    | if last { 0 } else { VIRTQ_DESC_F_NEXT },
                next: if last { 0 } else { i as u16 + 1 },
            };
            self.mem
                .write(table + 16 * i as u64, &d.to_bytes())
                .expect("indirect table");
        }
        let head = self.free.pop().expect("free descriptor");
        self.write_desc(
            head,
            Descriptor {
                addr: table,
                len: 16 * bufs.len() as u32,
                flags: VIRTQ_DESC_F_INDIRECT,
                next: 0,
            },
        );
        self.chains.insert(head, vec![head]);
        self.publish(head);
        head
    }

    /// Takes descriptors `ids` off the free list for a hand-written chain headed by `ids[0]`.
    pub(crate) fn claim(&mut self, ids: &[u16]) {
        self.free.retain(|i| !ids.contains(i));
        self.chains.insert(ids[0], ids.to_vec());
    }

    /// `QueueNotify`.
    pub(crate) fn kick(&self) {
        wr(self.dev, reg::QUEUE_NOTIFY, 0);
    }

    /// Waits until `n` more chains are used; returns `(head, len)` of each and acknowledges
    /// the interrupt.
    pub(crate) fn wait_used(&mut self, n: usize) -> Vec<(u16, u32)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let idx = self
                .mem
                .load_u16(self.used + 2, Ordering::Acquire)
                .expect("used idx");
            if usize::from(idx.wrapping_sub(self.last_used)) >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "device did not complete {n} chains"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let status = rd(self.dev, reg::INTERRUPT_STATUS);
        wr(self.dev, reg::INTERRUPT_ACK, status);
        (0..n)
            .map(|_| {
                let slot = u64::from(self.last_used % self.size);
                let mut e = [0u8; 8];
                self.mem
                    .read(self.used + 4 + 8 * slot, &mut e)
                    .expect("used elem");
                self.last_used = self.last_used.wrapping_add(1);
                let head = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as u16;
                let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                if let Some(ids) = self.chains.remove(&head) {
                    self.free.extend(ids);
                }
                (head, len)
            })
            .collect()
    }

    /// Used entries published so far that `wait_used` has not consumed.
    pub(crate) fn pending_used(&self) -> u16 {
        self.mem
            .load_u16(self.used + 2, Ordering::Acquire)
            .expect("used idx")
            .wrapping_sub(self.last_used)
    }

    /// Sets or clears `VRING_AVAIL_F_NO_INTERRUPT`.
    pub(crate) fn suppress_interrupts(&self, on: bool) {
        self.mem
            .store_u16(self.avail, u16::from(on), Ordering::SeqCst)
            .expect("avail flags");
    }
}
