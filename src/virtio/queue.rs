//! Split virtqueues (virtio 1.2 §2.7), device side: walking available descriptor chains and
//! returning them through the used ring.
//!
//! A queue is configured through the transport ([`QueueConfig`]) and, once the driver sets
//! `DRIVER_OK`, split into its two halves:
//! - [`AvailRing`] pops chains the driver made available; it is used only from `QueueNotify`
//!   (on the thread that runs kernel code);
//! - [`UsedRing`] hands chains back; the block workers share it behind a mutex.
//!
//! Ordering with the driver, which runs on another host thread: the driver fills descriptors
//! and the avail entry, then publishes `avail->idx` after a write barrier, so the device loads
//! `avail->idx` with `Acquire` before reading either. The device writes the used element, then
//! stores `used->idx` with `Release`. Before deciding whether to interrupt it issues a full
//! fence and reads `avail->flags`; the driver clears `VRING_AVAIL_F_NO_INTERRUPT`, issues a
//! full barrier and re-reads `used->idx`, so one of the two always sees the other's write and
//! no completion is left without an interrupt.
//!
//! Chains are flattened (indirect tables resolved) and limited to the queue size, which also
//! stops descriptor loops. Nothing a driver writes into the rings can make this code access
//! memory outside kernel RAM or panic: it only produces errors.

use std::sync::atomic::{fence, Ordering};

use super::memory::{KernelMemory, MemoryError};

/// More descriptors follow (`next` is valid).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// The buffer is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// The buffer is a table of descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Driver → device: do not interrupt when a buffer is used (a hint).
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Size of a descriptor in the table.
const DESC_SIZE: u64 = 16;

/// One descriptor: `le64 addr; le32 len; le16 flags; le16 next`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Kernel address of the buffer.
    pub addr: u64,
    /// Buffer length in bytes.
    pub len: u32,
    /// `VIRTQ_DESC_F_*`.
    pub flags: u16,
    /// Index of the next descriptor if `flags` has `NEXT`.
    pub next: u16,
}

impl Descriptor {
    /// Decodes the 16-byte little-endian table entry.
    pub fn from_bytes(b: [u8; 16]) -> Descriptor {
        Descriptor {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// Encodes the table entry (for drivers, i.e. tests).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }

    /// Whether the device may write the buffer.
    pub fn is_write_only(&self) -> bool {
        self.flags & VIRTQ_DESC_F_WRITE != 0
    }

    fn has_next(&self) -> bool {
        self.flags & VIRTQ_DESC_F_NEXT != 0
    }

    fn is_indirect(&self) -> bool {
        self.flags & VIRTQ_DESC_F_INDIRECT != 0
    }
}

/// A queue's registers, as the driver programs them through the transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most entries the device supports (`QueueNumMax`).
    pub max_size: u16,
    /// Entries the driver chose (`QueueNum`).
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Driver area (available ring) address.
    pub avail_ring: u64,
    /// Device area (used ring) address.
    pub used_ring: u64,
}

impl QueueConfig {
    /// A queue in its reset state offering `max_size` entries.
    pub fn new(max_size: u16) -> QueueConfig {
        QueueConfig {
            max_size,
            size: max_size,
            ..QueueConfig::default()
        }
    }

    /// Back to the reset state.
    pub fn reset(&mut self) {
        *self = QueueConfig::new(self.max_size);
    }
}

/// Why a queue cannot be activated.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// The driver did not set `QueueReady`.
    #[error("queue is not ready")]
    NotReady,
    /// Zero, above the maximum, or not a power of two.
    #[error("invalid queue size {0}")]
    BadSize(u16),
    /// A ring is misaligned (descriptors 16, avail 2, used 4 bytes).
    #[error("misaligned {0} at {1:#x}")]
    Misaligned(&'static str, u64),
    /// A ring is not inside kernel memory.
    #[error("{0} ring: {1}")]
    Memory(&'static str, MemoryError),
}

/// Why an available chain cannot be used. The head index is valid, so the chain can still be
/// returned to the driver.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A `next` index beyond the table.
    #[error("descriptor index {0} out of range")]
    BadIndex(u16),
    /// More descriptors than the queue size: a loop, or an oversized chain.
    #[error("descriptor chain longer than {0} (loop?)")]
    TooLong(u16),
    /// An indirect descriptor without `VIRTIO_RING_F_INDIRECT_DESC`, inside an indirect
    /// table, with `NEXT` set, or with a length that is zero or not a multiple of 16.
    #[error("invalid indirect descriptor")]
    BadIndirect,
    /// A descriptor (table) outside kernel memory.
    #[error("descriptor table: {0}")]
    Memory(MemoryError),
}

/// A chain popped from the available ring, indirect tables resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorChain {
    /// Head index: what goes back into the used ring.
    pub head: u16,
    /// The descriptors in chain order (the buffers are not checked yet).
    pub descriptors: Vec<Descriptor>,
}

/// Something the available ring produced.
#[derive(Debug, PartialEq, Eq)]
pub enum AvailItem {
    /// A well-formed chain.
    Chain(DescriptorChain),
    /// A chain with a valid head that cannot be walked; return it with length 0.
    Malformed(u16, ChainError),
}

/// Why the available ring itself is unusable (the device should stop using the queue).
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// `avail->idx` moved more than the queue size ahead of the device.
    #[error("available index jumped from {next} to {idx}")]
    IndexJump {
        /// Next index the device expected to consume.
        next: u16,
        /// Index the driver published.
        idx: u16,
    },
    /// A head index beyond the table: the chain cannot even be returned.
    #[error("head descriptor index {0} out of range")]
    BadHead(u16),
    /// The ring could not be read.
    #[error("available ring: {0}")]
    Memory(MemoryError),
}

/// The driver-to-device half of an active queue.
#[derive(Debug)]
pub struct AvailRing {
    mem: KernelMemory,
    size: u16,
    desc_table: u64,
    avail: u64,
    indirect: bool,
    next_avail: u16,
}

/// The device-to-driver half of an active queue.
#[derive(Debug)]
pub struct UsedRing {
    mem: KernelMemory,
    size: u16,
    used: u64,
    avail_flags: u64,
    next_used: u16,
}

/// Checks the configuration against `mem` and splits the queue into its halves.
/// `indirect`: whether `VIRTIO_RING_F_INDIRECT_DESC` was negotiated.
pub fn activate(
    mem: KernelMemory,
    cfg: &QueueConfig,
    indirect: bool,
) -> Result<(AvailRing, UsedRing), QueueError> {
    if !cfg.ready {
        return Err(QueueError::NotReady);
    }
    let size = cfg.size;
    if size == 0 || size > cfg.max_size || !size.is_power_of_two() {
        return Err(QueueError::BadSize(size));
    }
    let n = u64::from(size);
    for (what, addr, align, len) in [
        ("descriptor table", cfg.desc_table, 16, DESC_SIZE * n),
        ("available", cfg.avail_ring, 2, 6 + 2 * n),
        ("used", cfg.used_ring, 4, 6 + 8 * n),
    ] {
        if addr % align != 0 {
            return Err(QueueError::Misaligned(what, addr));
        }
        mem.slice(addr, len)
            .map_err(|e| QueueError::Memory(what, e))?;
    }
    let avail = AvailRing {
        mem,
        size,
        desc_table: cfg.desc_table,
        avail: cfg.avail_ring,
        indirect,
        next_avail: 0,
    };
    let used = UsedRing {
        mem,
        size,
        used: cfg.used_ring,
        avail_flags: cfg.avail_ring,
        next_used: 0,
    };
    Ok((avail, used))
}

impl AvailRing {
    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Pops the next available chain; `Ok(None)` when the ring is empty.
    pub fn pop(&mut self) -> Result<Option<AvailItem>, RingError> {
        let idx = self
            .mem
            .load_u16(self.avail + 2, Ordering::Acquire)
            .map_err(RingError::Memory)?;
        let pending = idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(RingError::IndexJump {
                next: self.next_avail,
                idx,
            });
        }
        let slot = u64::from(self.next_avail % self.size);
        let mut raw = [0u8; 2];
        self.mem
            .read(self.avail + 4 + 2 * slot, &mut raw)
            .map_err(RingError::Memory)?;
        let head = u16::from_le_bytes(raw);
        if head >= self.size {
            return Err(RingError::BadHead(head));
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(match self.walk(head) {
            Ok(descriptors) => AvailItem::Chain(DescriptorChain { head, descriptors }),
            Err(e) => AvailItem::Malformed(head, e),
        }))
    }

    fn read_desc(&self, table: u64, index: u16) -> Result<Descriptor, ChainError> {
        let mut raw = [0u8; 16];
        self.mem
            .read(table + DESC_SIZE * u64::from(index), &mut raw)
            .map_err(ChainError::Memory)?;
        Ok(Descriptor::from_bytes(raw))
    }

    /// Follows the chain starting at `head`, expanding an indirect table.
    fn walk(&self, head: u16) -> Result<Vec<Descriptor>, ChainError> {
        let limit = usize::from(self.size);
        let mut out = Vec::new();
        let mut index = head;
        loop {
            let d = self.read_desc(self.desc_table, index)?;
            if d.is_indirect() {
                if !self.indirect || d.has_next() {
                    return Err(ChainError::BadIndirect);
                }
                self.walk_indirect(&d, &mut out)?;
            } else {
                out.push(d);
            }
            if out.len() > limit {
                return Err(ChainError::TooLong(self.size));
            }
            if !d.has_next() {
                return Ok(out);
            }
            if d.next >= self.size {
                return Err(ChainError::BadIndex(d.next));
            }
            index = d.next;
        }
    }

    fn walk_indirect(
        &self,
        table: &Descriptor,
        out: &mut Vec<Descriptor>,
    ) -> Result<(), ChainError> {
        let len = u64::from(table.len);
        if len == 0 || len % DESC_SIZE != 0 {
            return Err(ChainError::BadIndirect);
        }
        let entries = len / DESC_SIZE;
        if entries > u64::from(self.size) {
            return Err(ChainError::TooLong(self.size));
        }
        // Check the whole table once; entries are read one by one below.
        self.mem
            .slice(table.addr, len)
            .map_err(ChainError::Memory)?;
        let entries = entries as u16; // ≤ size
        let mut index = 0u16;
        let mut seen = 0u16;
        loop {
            let d = self.read_desc(table.addr, index)?;
            if d.is_indirect() {
                return Err(ChainError::BadIndirect);
            }
            out.push(d);
            seen += 1;
            if !d.has_next() {
                return Ok(());
            }
            if seen >= entries {
                return Err(ChainError::TooLong(self.size));
            }
            if d.next >= entries {
                return Err(ChainError::BadIndex(d.next));
            }
            index = d.next;
        }
    }
}

impl UsedRing {
    /// Publishes `head` as used with `len` bytes written by the device.
    pub fn push(&mut self, head: u16, len: u32) -> Result<(), MemoryError> {
        let slot = u64::from(self.next_used % self.size);
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        self.mem.write(self.used + 4 + 8 * slot, &elem)?;
        self.next_used = self.next_used.wrapping_add(1);
        self.mem
            .store_u16(self.used + 2, self.next_used, Ordering::Release)
    }

    /// Whether the driver wants an interrupt for what was just pushed. Call after `push`.
    pub fn needs_interrupt(&self) -> bool {
        // Pairs with the driver's barrier between clearing NO_INTERRUPT and re-reading
        // used->idx (see the module comment).
        fence(Ordering::SeqCst);
        match self.mem.load_u16(self.avail_flags, Ordering::Relaxed) {
            Ok(flags) => flags & VRING_AVAIL_F_NO_INTERRUPT == 0,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u16 = 8;

    struct Rings {
        mem: KernelMemory,
        cfg: QueueConfig,
        base: u64,
    }

    impl Rings {
        fn new() -> Rings {
            let mem = KernelMemory::test_arena(64 * 1024);
            let base = mem.range().start as u64;
            let cfg = QueueConfig {
                max_size: SIZE,
                size: SIZE,
                ready: true,
                desc_table: base,
                avail_ring: base + 0x1000,
                used_ring: base + 0x2000,
            };
            Rings { mem, cfg, base }
        }

        fn desc(&self, table: u64, i: u16, d: Descriptor) {
            self.mem
                .write(table + 16 * u64::from(i), &d.to_bytes())
                .expect("desc");
        }

        fn make_avail(&self, heads: &[u16]) {
            let idx = self
                .mem
                .load_u16(self.cfg.avail_ring + 2, Ordering::Relaxed)
                .expect("idx");
            for (i, h) in heads.iter().enumerate() {
                let slot = (idx as usize + i) % SIZE as usize;
                self.mem
                    .write(self.cfg.avail_ring + 4 + 2 * slot as u64, &h.to_le_bytes())
                    .expect("ring");
            }
            self.mem
                .store_u16(
                    self.cfg.avail_ring + 2,
                    idx.wrapping_add(heads.len() as u16),
                    Ordering::Release,
                )
                .expect("idx");
        }
    }

    fn d(addr: u64, len: u32, flags: u16, next: u16) -> Descriptor {
        Descriptor {
            addr,
            len,
            flags,
            next,
        }
    }

    #[test]
    fn activation_checks() {
        let r = Rings::new();
        assert!(activate(r.mem, &r.cfg, false).is_ok());
        let mut c = r.cfg;
        c.ready = false;
        assert_eq!(activate(r.mem, &c, false).err(), Some(QueueError::NotReady));
        for size in [0, 3, 16] {
            let mut c = r.cfg;
            c.size = size;
            assert_eq!(
                activate(r.mem, &c, false).err(),
                Some(QueueError::BadSize(size))
            );
        }
        let mut c = r.cfg;
        c.used_ring += 2;
        assert!(matches!(
            activate(r.mem, &c, false),
            Err(QueueError::Misaligned("used", _))
        ));
        let mut c = r.cfg;
        c.desc_table = 0x10;
        assert!(matches!(
            activate(r.mem, &c, false),
            Err(QueueError::Memory("descriptor table", _))
        ));
        let mut c = r.cfg;
        c.used_ring = r.mem.range().end as u64 - 16;
        assert!(matches!(
            activate(r.mem, &c, false),
            Err(QueueError::Memory("used", _))
        ));
    }

    #[test]
    fn chains_direct_and_indirect() {
        let r = Rings::new();
        let buf = r.base + 0x4000;
        r.desc(r.cfg.desc_table, 0, d(buf, 16, VIRTQ_DESC_F_NEXT, 5));
        r.desc(r.cfg.desc_table, 5, d(buf + 16, 512, VIRTQ_DESC_F_WRITE, 0));
        // Head 2: an indirect table of three.
        let table = r.base + 0x3000;
        r.desc(r.cfg.desc_table, 2, d(table, 48, VIRTQ_DESC_F_INDIRECT, 0));
        r.desc(table, 0, d(buf, 16, VIRTQ_DESC_F_NEXT, 2));
        r.desc(table, 2, d(buf + 16, 8, VIRTQ_DESC_F_NEXT | 2, 1));
        r.desc(table, 1, d(buf + 24, 1, VIRTQ_DESC_F_WRITE, 0));
        r.make_avail(&[0, 2]);

        let (mut avail, mut used) = activate(r.mem, &r.cfg, true).expect("activate");
        let Ok(Some(AvailItem::Chain(c))) = avail.pop() else {
            panic!("first chain")
        };
        assert_eq!(c.head, 0);
        assert_eq!(c.descriptors.len(), 2);
        assert!(c.descriptors[1].is_write_only());
        let Ok(Some(AvailItem::Chain(c))) = avail.pop() else {
            panic!("indirect chain")
        };
        assert_eq!(c.head, 2);
        assert_eq!(
            c.descriptors.iter().map(|d| d.len).collect::<Vec<_>>(),
            [16, 8, 1]
        );
        assert_eq!(avail.pop(), Ok(None));

        used.push(2, 9).expect("push");
        used.push(0, 513).expect("push");
        assert_eq!(
            r.mem.load_u16(r.cfg.used_ring + 2, Ordering::Acquire),
            Ok(2)
        );
        let mut elem = [0u8; 8];
        r.mem.read(r.cfg.used_ring + 4, &mut elem).expect("elem");
        assert_eq!(elem, [2, 0, 0, 0, 9, 0, 0, 0]);
        assert!(used.needs_interrupt());
        r.mem
            .store_u16(
                r.cfg.avail_ring,
                VRING_AVAIL_F_NO_INTERRUPT,
                Ordering::Relaxed,
            )
            .expect("flags");
        assert!(!used.needs_interrupt());
    }

    #[test]
    fn malformed_chains_are_reported_not_followed() {
        let r = Rings::new();
        let buf = r.base + 0x4000;
        // 0 → 1 → 0: a loop.
        r.desc(r.cfg.desc_table, 0, d(buf, 16, VIRTQ_DESC_F_NEXT, 1));
        r.desc(r.cfg.desc_table, 1, d(buf, 16, VIRTQ_DESC_F_NEXT, 0));
        // 2 → 9: out of the table.
        r.desc(r.cfg.desc_table, 2, d(buf, 16, VIRTQ_DESC_F_NEXT, 9));
        // 3: indirect without the feature (and later with NEXT).
        r.desc(r.cfg.desc_table, 3, d(buf, 32, VIRTQ_DESC_F_INDIRECT, 0));
        // 4: indirect table outside memory.
        r.desc(r.cfg.desc_table, 4, d(0x1000, 32, VIRTQ_DESC_F_INDIRECT, 0));
        // 6: indirect table with a loop 0 → 1 → 0.
        let table = r.base + 0x3000;
        r.desc(r.cfg.desc_table, 6, d(table, 32, VIRTQ_DESC_F_INDIRECT, 0));
        r.desc(table, 0, d(buf, 1, VIRTQ_DESC_F_NEXT, 1));
        r.desc(table, 1, d(buf, 1, VIRTQ_DESC_F_NEXT, 0));
        r.make_avail(&[0, 2, 3]);

        let (mut avail, _) = activate(r.mem, &r.cfg, false).expect("activate");
        assert_eq!(
            avail.pop(),
            Ok(Some(AvailItem::Malformed(0, ChainError::TooLong(SIZE))))
        );
        assert_eq!(
            avail.pop(),
            Ok(Some(AvailItem::Malformed(2, ChainError::BadIndex(9))))
        );
        assert_eq!(
            avail.pop(),
            Ok(Some(AvailItem::Malformed(3, ChainError::BadIndirect)))
        );

        let (mut avail, _) = activate(r.mem, &r.cfg, true).expect("activate");
        avail.next_avail = 3;
        r.make_avail(&[4, 6]);
        assert!(matches!(
            avail.pop(),
            Ok(Some(AvailItem::Malformed(4, ChainError::Memory(_))))
        ));
        assert_eq!(
            avail.pop(),
            Ok(Some(AvailItem::Malformed(6, ChainError::TooLong(SIZE))))
        );

        // A head beyond the table, then an index jump: ring errors.
        r.make_avail(&[200]);
        assert_eq!(avail.pop(), Err(RingError::BadHead(200)));
        r.mem
            .store_u16(r.cfg.avail_ring + 2, 100, Ordering::Release)
            .expect("idx");
        assert!(matches!(avail.pop(), Err(RingError::IndexJump { .. })));
    }

    #[test]
    fn indices_wrap_around() {
        let r = Rings::new();
        let buf = r.base + 0x4000;
        r.desc(r.cfg.desc_table, 1, d(buf, 4, 0, 0));
        let (mut avail, mut used) = activate(r.mem, &r.cfg, false).expect("activate");
        avail.next_avail = u16::MAX - 2;
        used.next_used = u16::MAX - 2;
        r.mem
            .store_u16(r.cfg.avail_ring + 2, u16::MAX - 2, Ordering::Release)
            .expect("idx");
        for _ in 0..6 {
            r.make_avail(&[1]);
            assert!(matches!(avail.pop(), Ok(Some(AvailItem::Chain(_)))));
            assert_eq!(avail.pop(), Ok(None));
            used.push(1, 4).expect("push");
        }
        assert_eq!(
            r.mem.load_u16(r.cfg.used_ring + 2, Ordering::Acquire),
            Ok(3)
        );
    }
}
