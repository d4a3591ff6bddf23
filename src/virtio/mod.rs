//! virtio devices, host side, for the in-process kernel's `virtio_mmio` driver.
//!
//! ```text
//!  kernel virtio_blk ──► virtio_mmio ──iomem_access──► lkl::mmio registry
//!                                                          │ MmioDevice::read/write
//!                                    block::BlockDevice ◄──┘
//!                                      ├─ mmio::MmioTransport   register file, status machine (no I/O)
//!                                      │    └─ VirtioDevice      device-specific half (block::Block)
//!                                      ├─ queue                  split rings over KernelMemory
//!                                      └─ workers (lklfuse-blk-N) parse → execute → used ring → irq
//! ```
//!
//! | module | role |
//! |---|---|
//! | [`memory`] | [`KernelMemory`]: kernel address + length → checked host access; the only `unsafe` |
//! | [`mmio`] | virtio-mmio version 2 register file and device status state machine |
//! | [`queue`] | split virtqueue: descriptor chains in, used elements out |
//! | [`block`] | virtio-blk: request parsing, execution against the image, the worker pool |
//!
//! Threads: register accesses arrive on whichever host thread runs kernel code, with the
//! kernel's CPU held, so they only move state and hand work to the block workers; workers do
//! the file I/O and raise the interrupt through an [`InterruptSink`] (the kernel's
//! `lkl::trigger_irq`, or a test's capture). No lock of this module is held while calling into
//! the kernel.

#![deny(unsafe_code)] // memory.rs opts out, with a SAFETY comment on every block

pub mod block;
pub mod memory;
pub mod mmio;
pub mod queue;

#[cfg(test)]
mod mock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

pub use block::{BlockDevice, BlockError};
pub use memory::{KernelMemory, KernelSlice, MemoryError};

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Transport-independent feature bits (virtio 1.2 §6).
pub mod features {
    /// Indirect descriptor tables.
    pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
    /// `used_event`/`avail_event` notification suppression (not offered here).
    pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
    /// Compliance with virtio 1.0 and later (required by virtio-mmio version 2).
    pub const VIRTIO_F_VERSION_1: u32 = 32;

    /// The mask for feature bit `bit`.
    pub const fn bit(bit: u32) -> u64 {
        1 << bit
    }
}

/// `InterruptStatus` bit: a used ring was updated.
pub const VIRTIO_MMIO_INT_VRING: u32 = 1;
/// `InterruptStatus` bit: the configuration space changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 2;

/// Where a device's interrupt goes. Called from worker threads, never with a device lock held;
/// it may run kernel interrupt handlers that read and write the device's registers.
pub trait InterruptSink: Send + Sync {
    /// Raises the interrupt.
    fn raise(&self);
}

/// The in-process kernel's interrupt line `irq`.
#[derive(Clone, Copy, Debug)]
pub struct KernelIrq(pub u32);

impl InterruptSink for KernelIrq {
    fn raise(&self) {
        if let Err(e) = crate::lkl::trigger_irq(self.0) {
            // ESHUTDOWN after halt: nobody is listening any more.
            tracing::debug!(irq = self.0, "interrupt not delivered: {e}");
        }
    }
}

/// A device's `InterruptStatus` register and the line it raises.
#[derive(Default)]
pub struct Interrupt {
    status: AtomicU32,
    sink: OnceLock<Arc<dyn InterruptSink>>,
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("status", &self.status.load(Ordering::Relaxed))
            .field("has_sink", &self.sink.get().is_some())
            .finish()
    }
}

impl Interrupt {
    /// Connects the line; `false` if it already was.
    pub fn set_sink(&self, sink: Arc<dyn InterruptSink>) -> bool {
        self.sink.set(sink).is_ok()
    }

    /// Sets the `VRING` status bit, then raises the line. The used ring must already be
    /// published, so the handler that reads the status finds the new entries.
    pub fn signal_used(&self) {
        self.status
            .fetch_or(VIRTIO_MMIO_INT_VRING, Ordering::AcqRel);
        match self.sink.get() {
            Some(sink) => sink.raise(),
            None => tracing::debug!("virtio interrupt with no line connected"),
        }
    }

    /// The `InterruptStatus` register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// `InterruptACK`: clears the given bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Clears every bit (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::Release);
    }
}
