//! The virtio-mmio (version 2) register file, device side (virtio 1.2 §4.2.2).
//!
//! [`MmioTransport`] keeps the transport state (feature words, queue registers, device
//! status, interrupt status) and forwards the device-specific parts to a [`VirtioDevice`]:
//! config space reads, activation when the driver sets `DRIVER_OK`, queue notifications and
//! reset. It does no I/O itself, and every access returns quickly, except a reset with
//! requests in flight (the device drains them first).
//!
//! Rules enforced, with a warning for each violation (the write is ignored):
//! - registers below the config space take aligned 32-bit accesses only;
//! - driver features are written only between `DRIVER` and `FEATURES_OK`;
//! - queue registers are written only before `DRIVER_OK`;
//! - status bits are only ever added, except by writing 0 (reset);
//! - `FEATURES_OK` sticks only if the driver accepted a subset of the offered features that
//!   includes `VIRTIO_F_VERSION_1` (the driver reads the status back to find out).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::features::{bit, VIRTIO_F_VERSION_1};
use super::memory::KernelMemory;
use super::queue::QueueConfig;
use super::status::{DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FEATURES_OK};
use super::Interrupt;
use crate::lkl::MmioDevice;

/// `MagicValue`: the ASCII sequence "virt", read as a little-endian u32.
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
/// `Version`: the modern (virtio 1.x) register layout.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` of our devices: "lkrs" in little-endian ASCII.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"lkrs");
/// Size of the MMIO region: registers up to 0x100, then the config space.
pub const MMIO_REGION_SIZE: u64 = 0x200;

/// Register offsets.
pub mod reg {
    #![allow(missing_docs)]
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Why a device could not start when the driver set `DRIVER_OK`.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The kernel's RAM is unknown (the kernel has not booted?).
    #[error("kernel memory is unknown")]
    NoMemory,
    /// A queue's configuration is unusable.
    #[error("queue {0}: {1}")]
    Queue(usize, super::queue::QueueError),
    /// The device's host threads could not be started.
    #[error("cannot start the device's worker threads: {0}")]
    StartWorkers(#[source] std::io::Error),
}

/// The device-specific half of a virtio device.
pub trait VirtioDevice: Send + Sync {
    /// virtio device id (2 for block).
    fn device_id(&self) -> u32;
    /// Features offered to the driver.
    fn device_features(&self) -> u64;
    /// `QueueNumMax` of each queue; their number is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Reads `data.len()` bytes of config space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes config space (read-only by default: ignored with a warning).
    fn write_config(&self, offset: u64, data: &[u8]) {
        tracing::warn!(
            offset,
            len = data.len(),
            "ignoring virtio config space write"
        );
    }
    /// Starts the device: the driver set `DRIVER_OK` after negotiating `features` and
    /// configuring `queues`; completions are signalled on `interrupt`.
    fn activate(
        &self,
        features: u64,
        memory: KernelMemory,
        queues: &[QueueConfig],
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError>;
    /// The driver wrote `QueueNotify` for `queue` on an active device. Must not block.
    fn queue_notify(&self, queue: u32);
    /// Stops the device: stop taking requests, wait for those in flight, forget the queues.
    fn reset(&self);
}

#[derive(Debug)]
struct Registers {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    status: u32,
    active: bool,
}

impl Registers {
    fn new(max_sizes: &[u16]) -> Registers {
        Registers {
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: max_sizes.iter().map(|&m| QueueConfig::new(m)).collect(),
            status: 0,
            active: false,
        }
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        let sel = usize::try_from(self.queue_sel).ok()?;
        self.queues.get_mut(sel)
    }
}

/// A virtio-mmio register file in front of a [`VirtioDevice`].
pub struct MmioTransport {
    device: Arc<dyn VirtioDevice>,
    interrupt: Arc<Interrupt>,
    /// Memory override (tests); otherwise the kernel's RAM at activation.
    memory: OnceLock<KernelMemory>,
    regs: Mutex<Registers>,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_id", &self.device.device_id())
            .field("regs", &self.regs)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// A transport in the reset state.
    pub fn new(device: Arc<dyn VirtioDevice>) -> MmioTransport {
        let regs = Registers::new(&device.queue_max_sizes());
        MmioTransport {
            device,
            interrupt: Arc::new(Interrupt::default()),
            memory: OnceLock::new(),
            regs: Mutex::new(regs),
        }
    }

    /// The device's interrupt status and line.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// Uses `memory` instead of the kernel's RAM (unit tests); `false` if already set.
    pub fn set_memory(&self, memory: KernelMemory) -> bool {
        self.memory.set(memory).is_ok()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.lock().status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registers> {
        self.regs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let mut r = self.lock();
        match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match r.device_features_sel {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => r.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => r.selected_queue().map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => r.status,
            // No shared memory regions: a length of all ones says so.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::QUEUE_RESET => 0,
            // The config space never changes.
            reg::CONFIG_GENERATION => 0,
            _ => {
                tracing::warn!(
                    offset,
                    "virtio-mmio read of a write-only or unknown register"
                );
                0
            }
        }
    }

    fn write_register(&self, offset: u64, value: u32) {
        let mut r = self.lock();
        match offset {
            reg::DEVICE_FEATURES_SEL => r.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => r.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                if r.status & (DRIVER | FEATURES_OK) != DRIVER {
                    tracing::warn!(status = r.status, "driver features written out of order");
                    return;
                }
                match r.driver_features_sel {
                    0 => r.driver_features = (r.driver_features & !0xffff_ffff) | u64::from(value),
                    1 => {
                        r.driver_features =
                            (r.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    sel if value != 0 => {
                        tracing::warn!(sel, value, "driver accepted features beyond bit 63")
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => r.queue_sel = value,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_AVAIL_LOW
            | reg::QUEUE_AVAIL_HIGH
            | reg::QUEUE_USED_LOW
            | reg::QUEUE_USED_HIGH => {
                let status = r.status;
                let Some(q) = r.selected_queue() else {
                    tracing::warn!(offset, "virtio-mmio write to a queue that does not exist");
                    return;
                };
                if offset == reg::QUEUE_READY && value == 0 && status & DRIVER_OK == 0 {
                    q.ready = false; // allowed at any time before DRIVER_OK, even after reset
                    return;
                }
                if status & (FEATURES_OK | DRIVER_OK) != FEATURES_OK {
                    tracing::warn!(offset, status, "queue register written out of order");
                    return;
                }
                write_queue_register(q, offset, value);
            }
            reg::QUEUE_NOTIFY => {
                let active = r.active;
                drop(r);
                if active {
                    self.device.queue_notify(value);
                } else {
                    tracing::warn!(queue = value, "queue notified before DRIVER_OK");
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(&mut r, value),
            reg::SHM_SEL | reg::QUEUE_RESET => {}
            _ => tracing::warn!(
                offset,
                value,
                "virtio-mmio write to a read-only or unknown register"
            ),
        }
    }

    fn write_status(&self, r: &mut Registers, value: u32) {
        if value == 0 {
            // Reset: the device drains its requests before the state is forgotten.
            if r.active {
                self.device.reset();
            }
            *r = Registers::new(&self.device.queue_max_sizes());
            self.interrupt.clear();
            return;
        }
        if r.status & !value != 0 {
            tracing::warn!(
                old = r.status,
                new = value,
                "driver cleared device status bits"
            );
            return;
        }
        let mut value = value;
        let added = value & !r.status;
        if added & FEATURES_OK != 0 {
            let offered = self.device.device_features();
            let unknown = r.driver_features & !offered;
            if unknown != 0 || r.driver_features & bit(VIRTIO_F_VERSION_1) == 0 {
                tracing::warn!(
                    accepted = r.driver_features,
                    offered,
                    "refusing the driver's feature set"
                );
                value &= !FEATURES_OK;
            }
        }
        if added & DRIVER_OK != 0 {
            if value & FEATURES_OK == 0 {
                tracing::warn!("DRIVER_OK without FEATURES_OK");
                return;
            }
            let memory = self.memory.get().copied().or_else(KernelMemory::kernel);
            let result = match memory {
                Some(memory) => self.device.activate(
                    r.driver_features,
                    memory,
                    &r.queues,
                    self.interrupt.clone(),
                ),
                None => Err(ActivateError::NoMemory),
            };
            match result {
                Ok(()) => r.active = true,
                Err(e) => {
                    tracing::error!(
                        "virtio device {} failed to start: {e}",
                        self.device.device_id()
                    );
                    value |= DEVICE_NEEDS_RESET;
                }
            }
        }
        r.status = value;
    }
}

fn write_queue_register(q: &mut QueueConfig, offset: u64, value: u32) {
    let low = |a: &mut u64| *a = (*a & !0xffff_ffff) | u64::from(value);
    let high = |a: &mut u64| *a = (*a & 0xffff_ffff) | (u64::from(value) << 32);
    match offset {
        reg::QUEUE_NUM => match u16::try_from(value) {
            Ok(n) if n != 0 && n <= q.max_size => q.size = n,
            _ => tracing::warn!(value, max = q.max_size, "invalid queue size"),
        },
        reg::QUEUE_READY => q.ready = value == 1,
        reg::QUEUE_DESC_LOW => low(&mut q.desc_table),
        reg::QUEUE_DESC_HIGH => high(&mut q.desc_table),
        reg::QUEUE_AVAIL_LOW => low(&mut q.avail_ring),
        reg::QUEUE_AVAIL_HIGH => high(&mut q.avail_ring),
        reg::QUEUE_USED_LOW => low(&mut q.used_ring),
        reg::QUEUE_USED_HIGH => high(&mut q.used_ring),
        _ => unreachable!("not a queue register: {offset:#x}"),
    }
}

impl MmioDevice for MmioTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-mmio register read not 32-bit"
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-mmio register write not 32-bit"
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            tracing::warn!(offset, "misaligned virtio-mmio register write");
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::status::{ACKNOWLEDGE, FAILED};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Records what the transport asks of it.
    #[derive(Default)]
    struct Recorder {
        activations: Mutex<Vec<(u64, Vec<QueueConfig>)>>,
        notifies: Mutex<Vec<u32>>,
        resets: AtomicU32,
        refuse: bool,
    }

    impl VirtioDevice for Recorder {
        fn device_id(&self) -> u32 {
            42
        }
        fn device_features(&self) -> u64 {
            bit(VIRTIO_F_VERSION_1) | 0b101
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16, 8]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as usize + i) as u8;
            }
        }
        fn activate(
            &self,
            features: u64,
            _memory: KernelMemory,
            queues: &[QueueConfig],
            _interrupt: Arc<Interrupt>,
        ) -> Result<(), ActivateError> {
            if self.refuse {
                return Err(ActivateError::Queue(
                    0,
                    crate::virtio::queue::QueueError::NotReady,
                ));
            }
            self.activations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((features, queues.to_vec()));
            Ok(())
        }
        fn queue_notify(&self, queue: u32) {
            self.notifies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(queue);
        }
        fn reset(&self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn rd(t: &MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &MmioTransport, offset: u64, v: u32) {
        t.write(offset, &v.to_le_bytes());
    }

    fn transport() -> (Arc<Recorder>, MmioTransport) {
        let dev = Arc::new(Recorder::default());
        let t = MmioTransport::new(dev.clone());
        t.set_memory(KernelMemory::test_arena(4096));
        (dev, t)
    }

    #[test]
    fn identity_registers() {
        let (_, t) = transport();
        assert_eq!(rd(&t, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(&rd(&t, reg::MAGIC_VALUE).to_le_bytes(), b"virt");
        assert_eq!(rd(&t, reg::VERSION), 2);
        assert_eq!(rd(&t, reg::DEVICE_ID), 42);
        assert_eq!(rd(&t, reg::VENDOR_ID), VENDOR_ID);
        assert_eq!(rd(&t, reg::CONFIG_GENERATION), 0);
        assert_eq!(rd(&t, reg::SHM_LEN_LOW), u32::MAX);
        // Narrow register reads are refused; config space takes any width.
        let mut two = [0xffu8; 2];
        t.read(reg::MAGIC_VALUE, &mut two);
        assert_eq!(two, [0, 0]);
        let mut cfg = [0u8; 8];
        t.read(reg::CONFIG + 3, &mut cfg);
        assert_eq!(cfg, [3, 4, 5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn feature_negotiation() {
        let (dev, t) = transport();
        wr(&t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(&t, reg::DEVICE_FEATURES), 0b101);
        wr(&t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&t, reg::DEVICE_FEATURES), 1);
        wr(&t, reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(rd(&t, reg::DEVICE_FEATURES), 0);

        // Before DRIVER, feature writes are ignored.
        wr(&t, reg::DRIVER_FEATURES, 0b1);
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        // Without VERSION_1, FEATURES_OK does not stick.
        wr(&t, reg::DRIVER_FEATURES_SEL, 0);
        wr(&t, reg::DRIVER_FEATURES, 0b100);
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(&t, reg::STATUS), ACKNOWLEDGE | DRIVER);
        // A feature that was not offered: refused too.
        wr(&t, reg::DRIVER_FEATURES_SEL, 1);
        wr(&t, reg::DRIVER_FEATURES, 1);
        wr(&t, reg::DRIVER_FEATURES_SEL, 0);
        wr(&t, reg::DRIVER_FEATURES, 0b110);
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(&t, reg::STATUS) & FEATURES_OK, 0);
        // A proper subset with VERSION_1.
        wr(&t, reg::DRIVER_FEATURES, 0b100);
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(&t, reg::STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
        // Now frozen.
        wr(&t, reg::DRIVER_FEATURES, 0b101);
        // Queue setup.
        wr(&t, reg::QUEUE_SEL, 1);
        assert_eq!(rd(&t, reg::QUEUE_NUM_MAX), 8);
        assert_eq!(rd(&t, reg::QUEUE_READY), 0);
        wr(&t, reg::QUEUE_NUM, 9); // too big: ignored
        wr(&t, reg::QUEUE_NUM, 4);
        wr(&t, reg::QUEUE_DESC_LOW, 0x1000);
        wr(&t, reg::QUEUE_DESC_HIGH, 0x7);
        wr(&t, reg::QUEUE_AVAIL_LOW, 0x2000);
        wr(&t, reg::QUEUE_USED_LOW, 0x3000);
        wr(&t, reg::QUEUE_USED_HIGH, 0x1);
        wr(&t, reg::QUEUE_READY, 1);
        assert_eq!(rd(&t, reg::QUEUE_READY), 1);
        wr(&t, reg::QUEUE_SEL, 5);
        assert_eq!(rd(&t, reg::QUEUE_NUM_MAX), 0);
        wr(&t, reg::QUEUE_NOTIFY, 0); // before DRIVER_OK: dropped
        wr(
            &t,
            reg::STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert_eq!(rd(&t, reg::STATUS) & DRIVER_OK, DRIVER_OK);

        let acts = dev.activations.lock().expect("lock").clone();
        assert_eq!(acts.len(), 1);
        assert_eq!(acts[0].0, bit(VIRTIO_F_VERSION_1) | 0b100);
        let q = acts[0].1[1];
        assert_eq!(
            (q.size, q.ready, q.desc_table, q.avail_ring, q.used_ring),
            (4, true, 0x7_0000_1000, 0x2000, 0x1_0000_3000)
        );
        assert!(!acts[0].1[0].ready);

        // Active: queue registers are frozen, notifications pass.
        wr(&t, reg::QUEUE_SEL, 1);
        wr(&t, reg::QUEUE_NUM, 2);
        wr(&t, reg::QUEUE_NOTIFY, 1);
        assert_eq!(*dev.notifies.lock().expect("lock"), [1]);
        // Clearing bits is not allowed; FAILED may be added.
        wr(&t, reg::STATUS, ACKNOWLEDGE);
        assert_eq!(rd(&t, reg::STATUS) & DRIVER_OK, DRIVER_OK);
        wr(&t, reg::STATUS, rd(&t, reg::STATUS) | FAILED);
        assert_eq!(rd(&t, reg::STATUS) & FAILED, FAILED);
    }

    #[test]
    fn interrupt_status_and_reset() {
        let (dev, t) = transport();
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        wr(&t, reg::DRIVER_FEATURES_SEL, 1);
        wr(&t, reg::DRIVER_FEATURES, 1);
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        wr(&t, reg::QUEUE_READY, 1);
        wr(
            &t,
            reg::STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        t.interrupt().signal_used();
        assert_eq!(rd(&t, reg::INTERRUPT_STATUS), 1);
        wr(&t, reg::INTERRUPT_ACK, 1);
        assert_eq!(rd(&t, reg::INTERRUPT_STATUS), 0);
        t.interrupt().signal_used();

        wr(&t, reg::STATUS, 0);
        assert_eq!(dev.resets.load(Ordering::SeqCst), 1);
        assert_eq!(rd(&t, reg::STATUS), 0);
        assert_eq!(rd(&t, reg::INTERRUPT_STATUS), 0);
        assert_eq!(rd(&t, reg::QUEUE_READY), 0);
        // Linux's del_vqs after reset: QueueReady=0 is accepted quietly.
        wr(&t, reg::QUEUE_READY, 0);
        assert_eq!(rd(&t, reg::QUEUE_READY), 0);
        // A second reset of an inactive device does not reach the device.
        wr(&t, reg::STATUS, 0);
        assert_eq!(dev.resets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failed_activation_needs_reset() {
        let dev = Arc::new(Recorder {
            refuse: true,
            ..Recorder::default()
        });
        let t = MmioTransport::new(dev.clone());
        t.set_memory(KernelMemory::test_arena(4096));
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        wr(&t, reg::DRIVER_FEATURES_SEL, 1);
        wr(&t, reg::DRIVER_FEATURES, 1);
        wr(&t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        wr(
            &t,
            reg::STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert_eq!(rd(&t, reg::STATUS) & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
        // Not active: notifications are dropped, reset does not reach the device.
        wr(&t, reg::QUEUE_NOTIFY, 0);
        assert!(dev.notifies.lock().expect("lock").is_empty());
        wr(&t, reg::STATUS, 0);
        assert_eq!(dev.resets.load(Ordering::SeqCst), 0);
        assert_eq!(rd(&t, reg::STATUS), 0);
    }
}
