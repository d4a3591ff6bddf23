//! Emulated device memory (MMIO) the kernel reaches through the `iomem_access` host op.
//!
//! A device registers a region before boot and gets a fixed fake "physical" address. The
//! kernel learns the address from its command line (`virtio_mmio.device=<size>@0x<base>:<irq>`
//! for virtio devices), `ioremap`s it and then reads and writes device registers; each access
//! comes back here and is dispatched to the device's [`MmioDevice`] methods.
//!
//! Addresses: region `i` starts at `MMIO_BASE + i * MMIO_STRIDE`. They are far above any
//! address the host can give the kernel as RAM (user space ends below `1 << 47`), so they
//! cannot collide with real memory; the kernel never dereferences them, it only passes them
//! back through `iomem_access`.
//!
//! Lifecycle: registration happens before boot; [`kernel::boot`](super::kernel::boot) freezes
//! the registry, after which lookups take no lock and registration fails with
//! [`MmioError::AlreadyBooted`].

#![allow(clippy::unnecessary_cast)] // C integer types differ between targets and bindgen options

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::bindings as b;
use super::errno::Errno;

/// Address of the first region.
pub const MMIO_BASE: u64 = 0x7f00_0000_0000_0000;
/// Distance between region bases, and so the largest region size.
pub const MMIO_STRIDE: u64 = 0x1_0000_0000;
/// Most regions the registry holds.
pub const MAX_REGIONS: usize = 256;

/// A device model behind an MMIO region. Called from whichever host thread runs kernel code;
/// accesses are 1, 2, 4 or 8 bytes in the kernel's (native) byte order.
pub trait MmioDevice: Send + Sync {
    /// Fills `data` with the register contents at `offset` into the region.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Writes `data` to the register at `offset` into the region.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Where a registered device lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRegion {
    /// Fake physical base address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
    /// Interrupt line, for virtio-mmio devices.
    pub irq: Option<u32>,
}

/// Why a region could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MmioError {
    /// The kernel has booted; devices must be registered before.
    #[error("MMIO devices must be registered before the kernel boots")]
    AlreadyBooted,
    /// All region slots are taken.
    #[error("no free MMIO region (at most {MAX_REGIONS})")]
    TooManyRegions,
    /// All device interrupt lines are taken.
    #[error("no free interrupt line for a virtio-mmio device")]
    NoFreeIrq,
    /// The size is zero or larger than [`MMIO_STRIDE`].
    #[error("invalid MMIO region size {0:#x}")]
    BadSize(u64),
}

struct Region {
    info: MmioRegion,
    device: Arc<dyn MmioDevice>,
}

/// A set of MMIO regions.
#[derive(Default)]
pub(crate) struct MmioRegistry {
    regions: Vec<Region>,
    irqs_used: u32,
}

impl MmioRegistry {
    /// Adds a region of `size` bytes; virtio-mmio regions also get an interrupt line.
    pub(crate) fn register(
        &mut self,
        size: u64,
        device: Arc<dyn MmioDevice>,
        virtio: bool,
    ) -> Result<MmioRegion, MmioError> {
        if size == 0 || size > MMIO_STRIDE {
            return Err(MmioError::BadSize(size));
        }
        if self.regions.len() >= MAX_REGIONS {
            return Err(MmioError::TooManyRegions);
        }
        let irq = if virtio {
            let irq = b::LKL_FIRST_DEVICE_IRQ as u32 + self.irqs_used;
            if irq >= b::LKL_NR_IRQS as u32 {
                return Err(MmioError::NoFreeIrq);
            }
            self.irqs_used += 1;
            Some(irq)
        } else {
            None
        };
        let info = MmioRegion {
            base: MMIO_BASE + self.regions.len() as u64 * MMIO_STRIDE,
            size,
            irq,
        };
        self.regions.push(Region { info, device });
        Ok(info)
    }

    /// Dispatches one access of `data.len()` bytes at `addr`; `EFAULT` if no region holds all
    /// of it, `EINVAL` for a size other than 1, 2, 4 or 8.
    pub(crate) fn access(&self, addr: u64, data: &mut [u8], write: bool) -> Result<(), Errno> {
        if !matches!(data.len(), 1 | 2 | 4 | 8) {
            return Err(Errno::EINVAL);
        }
        let rel = addr.checked_sub(MMIO_BASE).ok_or(Errno::EFAULT)?;
        let index = usize::try_from(rel / MMIO_STRIDE).map_err(|_| Errno::EFAULT)?;
        let offset = rel % MMIO_STRIDE;
        let region = self.regions.get(index).ok_or(Errno::EFAULT)?;
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFAULT)?;
        if end > region.info.size {
            return Err(Errno::EFAULT);
        }
        if write {
            region.device.write(offset, data);
        } else {
            region.device.read(offset, data);
        }
        Ok(())
    }

    /// The `virtio_mmio.device=` arguments for every virtio region, space separated.
    pub(crate) fn virtio_cmdline(&self) -> String {
        let mut out = String::new();
        for r in &self.regions {
            if let Some(irq) = r.info.irq {
                if !out.is_empty() {
                    out.push(' ');
                }
                let _ = write!(
                    out,
                    "virtio_mmio.device={}@{:#x}:{}",
                    r.info.size, r.info.base, irq
                );
            }
        }
        out
    }
}

static PENDING: Mutex<Option<MmioRegistry>> = Mutex::new(None);
static FROZEN: OnceLock<MmioRegistry> = OnceLock::new();

fn register_global(
    size: u64,
    device: Arc<dyn MmioDevice>,
    virtio: bool,
) -> Result<MmioRegion, MmioError> {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    if FROZEN.get().is_some() {
        return Err(MmioError::AlreadyBooted);
    }
    pending
        .get_or_insert_with(MmioRegistry::default)
        .register(size, device, virtio)
}

/// Registers a plain MMIO region of `size` bytes for `device`. Must be called before boot.
pub fn register_mmio(size: u64, device: Arc<dyn MmioDevice>) -> Result<MmioRegion, MmioError> {
    register_global(size, device, false)
}

/// Registers a virtio-mmio device: a region of `size` bytes (0x200 covers the virtio-mmio
/// register file plus a small config space) and an interrupt line, announced to the kernel on
/// its command line. Must be called before boot; the device should raise its interrupt with
/// [`trigger_irq`](super::kernel::trigger_irq).
pub fn register_virtio_mmio(
    size: u64,
    device: Arc<dyn MmioDevice>,
) -> Result<MmioRegion, MmioError> {
    register_global(size, device, true)
}

/// Freezes the registry for boot and returns it (idempotent).
pub(crate) fn freeze() -> &'static MmioRegistry {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    FROZEN.get_or_init(|| pending.take().unwrap_or_default())
}

/// The kernel's `iomem_access`: dispatches to the frozen registry (`EFAULT` before boot).
pub(crate) fn iomem_access(addr: u64, data: &mut [u8], write: bool) -> Result<(), Errno> {
    match FROZEN.get() {
        Some(registry) => registry.access(addr, data, write),
        None => Err(Errno::EFAULT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 bytes of little registers, plus a log of writes.
    struct FakeDevice {
        regs: Mutex<[u8; 64]>,
        writes: Mutex<Vec<(u64, Vec<u8>)>>,
    }

    impl Default for FakeDevice {
        fn default() -> FakeDevice {
            FakeDevice {
                regs: Mutex::new([0; 64]),
                writes: Mutex::new(Vec::new()),
            }
        }
    }

    impl MmioDevice for FakeDevice {
        fn read(&self, offset: u64, data: &mut [u8]) {
            let regs = self.regs.lock().unwrap_or_else(PoisonError::into_inner);
            let o = offset as usize;
            data.copy_from_slice(&regs[o..o + data.len()]);
        }

        fn write(&self, offset: u64, data: &[u8]) {
            let mut regs = self.regs.lock().unwrap_or_else(PoisonError::into_inner);
            let o = offset as usize;
            regs[o..o + data.len()].copy_from_slice(data);
            self.writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((offset, data.to_vec()));
        }
    }

    #[test]
    fn registry_dispatches_by_address() {
        let mut reg = MmioRegistry::default();
        let a = Arc::new(FakeDevice::default());
        let b = Arc::new(FakeDevice::default());
        let ra = reg.register(64, a.clone(), true).expect("first region");
        let rb = reg.register(64, b.clone(), false).expect("second region");
        assert_eq!(ra.base, MMIO_BASE);
        assert_eq!(rb.base, MMIO_BASE + MMIO_STRIDE);
        assert_eq!(ra.irq, Some(b::LKL_FIRST_DEVICE_IRQ as u32));
        assert_eq!(rb.irq, None);

        let mut v = 0x1234_5678u32.to_ne_bytes();
        reg.access(ra.base + 8, &mut v, true).expect("write a");
        let mut out = [0u8; 4];
        reg.access(ra.base + 8, &mut out, false).expect("read a");
        assert_eq!(u32::from_ne_bytes(out), 0x1234_5678);
        // b is untouched.
        reg.access(rb.base + 8, &mut out, false).expect("read b");
        assert_eq!(out, [0; 4]);
        let mut byte = [0xaa];
        reg.access(rb.base + 63, &mut byte, true)
            .expect("last byte of b");
        let mut q = [0u8; 8];
        reg.access(rb.base + 56, &mut q, false).expect("read b");
        assert_eq!(q[7], 0xaa);
        assert_eq!(
            *a.writes.lock().unwrap_or_else(PoisonError::into_inner),
            [(8, 0x1234_5678u32.to_ne_bytes().to_vec())]
        );
    }

    #[test]
    fn registry_rejects_bad_accesses() {
        let mut reg = MmioRegistry::default();
        let r = reg
            .register(64, Arc::new(FakeDevice::default()), true)
            .expect("region");
        let mut four = [0u8; 4];
        assert_eq!(reg.access(0x1000, &mut four, false), Err(Errno::EFAULT));
        assert_eq!(
            reg.access(r.base + 62, &mut four, false),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            reg.access(r.base + 64, &mut [0u8; 1], false),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            reg.access(r.base + MMIO_STRIDE, &mut four, false),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            reg.access(u64::MAX - 1, &mut four, false),
            Err(Errno::EFAULT)
        );
        assert_eq!(reg.access(r.base, &mut [0u8; 3], false), Err(Errno::EINVAL));
        assert_eq!(reg.access(r.base, &mut [], false), Err(Errno::EINVAL));
    }

    #[test]
    fn registry_limits() {
        let mut reg = MmioRegistry::default();
        let dev: Arc<dyn MmioDevice> = Arc::new(FakeDevice::default());
        assert_eq!(
            reg.register(0, dev.clone(), false),
            Err(MmioError::BadSize(0))
        );
        assert_eq!(
            reg.register(MMIO_STRIDE + 1, dev.clone(), false),
            Err(MmioError::BadSize(MMIO_STRIDE + 1))
        );
        let irqs = (b::LKL_NR_IRQS - b::LKL_FIRST_DEVICE_IRQ) as usize;
        for _ in 0..irqs {
            reg.register(0x200, dev.clone(), true).expect("irq left");
        }
        assert_eq!(
            reg.register(0x200, dev.clone(), true),
            Err(MmioError::NoFreeIrq)
        );
        while reg.regions.len() < MAX_REGIONS {
            reg.register(0x200, dev.clone(), false).expect("slot left");
        }
        assert_eq!(
            reg.register(0x200, dev, false),
            Err(MmioError::TooManyRegions)
        );
    }

    #[test]
    fn virtio_cmdline_lists_virtio_regions() {
        let mut reg = MmioRegistry::default();
        let dev: Arc<dyn MmioDevice> = Arc::new(FakeDevice::default());
        assert_eq!(reg.virtio_cmdline(), "");
        reg.register(0x200, dev.clone(), true).expect("virtio");
        reg.register(0x100, dev.clone(), false).expect("plain");
        reg.register(0x200, dev, true).expect("virtio");
        assert_eq!(
            reg.virtio_cmdline(),
            "virtio_mmio.device=512@0x7f00000000000000:2 \
             virtio_mmio.device=512@0x7f00000200000000:3"
        );
    }

    #[test]
    fn unfrozen_global_registry_faults() {
        // No unit test boots, so the global registry is never frozen here.
        assert_eq!(
            iomem_access(MMIO_BASE, &mut [0u8; 4], false),
            Err(Errno::EFAULT)
        );
    }
}
