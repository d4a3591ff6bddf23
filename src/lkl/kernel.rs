//! Booting and halting the in-process kernel.
//!
//! There is one kernel per process and it boots at most once: its global state cannot be reset,
//! so a second [`boot`], even after [`Kernel::halt`], fails with [`BootError::AlreadyBooted`].
//! Boot after any `fork` (kernel threads do not survive one), and register MMIO devices
//! (`mmio::register_*`) before booting: boot freezes the device registry and announces the
//! virtio devices on the kernel command line.
//!
//! States: not booted → booting → running → halted. [`is_running`] is true only while
//! running; syscall wrappers refuse to enter the kernel in any other state.

#![allow(clippy::unnecessary_cast)] // C integer types differ between targets and bindgen options

use std::ffi::CString;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use super::abi::{Timestamp, CLOCK_REALTIME};
use super::bindings as b;
use super::errno::Errno;
use super::host_ops::HOST_OPS;
use super::{mmio, sys};

const NOT_BOOTED: u8 = 0;
const BOOTING: u8 = 1;
const RUNNING: u8 = 2;
const HALTED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(NOT_BOOTED);
static BOOT_TIME: OnceLock<Duration> = OnceLock::new();

/// Arguments always given to the kernel: a fixed loops-per-jiffy so boot skips delay-loop
/// calibration, and a console level that passes only warnings and worse (the `print` op
/// turns those into `tracing` events).
pub const BASE_CMDLINE: &str = "loglevel=4";

/// How to boot the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// RAM given to the kernel, in MiB (reserved lazily from the host). Default 64.
    pub memory_mib: u32,
    /// Extra kernel command-line arguments, appended to [`BASE_CMDLINE`]. Default empty.
    pub cmdline: String,
}

impl Default for BootOptions {
    fn default() -> BootOptions {
        BootOptions {
            memory_mib: 64,
            cmdline: String::new(),
        }
    }
}

/// Why the kernel could not boot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootError {
    /// This process already booted a kernel (perhaps halted since); there can be only one.
    #[error("the kernel was already booted in this process")]
    AlreadyBooted,
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    InvalidCmdline,
    /// Zero memory requested.
    #[error("kernel memory size must be at least 1 MiB")]
    InvalidMemory,
    /// `lkl_start_kernel` failed.
    #[error("kernel failed to start: {0}")]
    Start(Errno),
}

/// A handle on the running kernel. Copies are interchangeable; halting through any of them
/// halts the kernel for all.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    _private: (),
}

/// Builds the full command line from the options and the virtio devices' arguments.
pub(crate) fn command_line(opts: &BootOptions, virtio: &str) -> String {
    [BASE_CMDLINE, opts.cmdline.trim(), virtio]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Boots the kernel; returns once every initcall has run.
pub fn boot(opts: &BootOptions) -> Result<Kernel, BootError> {
    if opts.memory_mib == 0 {
        return Err(BootError::InvalidMemory);
    }
    if opts.cmdline.contains('\0') {
        return Err(BootError::InvalidCmdline);
    }
    if STATE
        .compare_exchange(NOT_BOOTED, BOOTING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(BootError::AlreadyBooted);
    }
    let registry = mmio::freeze();
    let cmdline = command_line(opts, &registry.virtio_cmdline());
    let Ok(c_cmdline) = CString::new(cmdline.as_str()) else {
        STATE.store(NOT_BOOTED, Ordering::Release);
        return Err(BootError::InvalidCmdline);
    };
    let mem_size = u64::from(opts.memory_mib) << 20;
    tracing::debug!(memory_mib = opts.memory_mib, %cmdline, "booting the kernel");

    let start = Instant::now();
    // SAFETY: HOST_OPS is a complete table that lives for the whole process; the command
    // line is NUL-terminated and only read during the call; STATE guarantees this is the
    // process's only call.
    let ret = unsafe { b::lkl_start_kernel(&HOST_OPS, mem_size as _, c_cmdline.as_ptr()) };
    let elapsed = start.elapsed();
    if ret < 0 {
        // A failed boot leaves kernel state behind; it cannot be retried.
        STATE.store(HALTED, Ordering::Release);
        let e = Errno::from_raw(-(ret as i32));
        tracing::error!("kernel failed to start: {e}");
        return Err(BootError::Start(e));
    }
    let _ = BOOT_TIME.set(elapsed);
    STATE.store(RUNNING, Ordering::Release);
    tracing::info!("kernel booted in {elapsed:?}");
    Ok(Kernel { _private: () })
}

/// Whether the kernel has booted and not halted.
pub fn is_running() -> bool {
    STATE.load(Ordering::Acquire) == RUNNING
}

/// Sets the kernel's `CLOCK_REALTIME` to the host's current wall-clock time. The kernel reads
/// the host clock once at boot; call this after the host clock was stepped.
pub fn sync_clock() -> Result<(), Errno> {
    sys::clock_settime(CLOCK_REALTIME, Timestamp::from(SystemTime::now()))
}

/// Raises interrupt `irq` (from any host thread, e.g. a device completing a request).
/// `ESHUTDOWN` unless the kernel is booting or running; `EINVAL` for a line outside the
/// kernel's range.
pub fn trigger_irq(irq: u32) -> Result<(), Errno> {
    if irq >= b::LKL_NR_IRQS as u32 {
        return Err(Errno::EINVAL);
    }
    // Booting counts: virtio devices probed by initcalls complete their first requests (the
    // partition scan) before boot returns, and boot waits for them.
    if !matches!(STATE.load(Ordering::Acquire), BOOTING | RUNNING) {
        return Err(Errno::ESHUTDOWN);
    }
    // SAFETY: the kernel was started and lkl_trigger_irq may be called from any thread at any
    // time once its CPU exists; a device only completes (and interrupts) requests the running
    // kernel sent, i.e. after that. After halt the kernel answers -ESHUTDOWN itself. `irq` is
    // in range.
    let ret = unsafe { b::lkl_trigger_irq(irq as _) };
    Errno::from_ret(i64::from(ret)).map(|_| ())
}

impl Kernel {
    /// Powers the kernel off for good. Sync and unmount first: halting does neither. Calls
    /// after the first return `Ok(())` without doing anything.
    pub fn halt(self) -> Result<(), Errno> {
        if STATE
            .compare_exchange(RUNNING, HALTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(());
        }
        // SAFETY: the kernel was running and this is the only call of lkl_halt (the state
        // change above happens once); syscalls racing with it fail with ESHUTDOWN.
        let ret = unsafe { b::lkl_halt() };
        Errno::from_ret(i64::from(ret))?;
        tracing::info!("kernel halted");
        Ok(())
    }

    /// How long `lkl_start_kernel` took.
    pub fn boot_time(&self) -> Duration {
        BOOT_TIME.get().copied().unwrap_or_default()
    }

    /// Whether this kernel is still running.
    pub fn is_running(&self) -> bool {
        is_running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options() {
        let o = BootOptions::default();
        assert_eq!((o.memory_mib, o.cmdline.as_str()), (64, ""));
    }

    #[test]
    fn command_line_assembly() {
        let mut o = BootOptions::default();
        assert_eq!(command_line(&o, ""), "loglevel=4");
        o.cmdline = " quiet  ".into();
        assert_eq!(
            command_line(&o, "virtio_mmio.device=512@0x7f00000000000000:2"),
            "loglevel=4 quiet virtio_mmio.device=512@0x7f00000000000000:2"
        );
    }

    #[test]
    fn bad_options_are_rejected_before_boot() {
        // Checked before the state changes, so this does not use up the one boot.
        let o = BootOptions {
            memory_mib: 0,
            ..BootOptions::default()
        };
        assert_eq!(boot(&o).map(|_| ()), Err(BootError::InvalidMemory));
        let o = BootOptions {
            cmdline: "a\0b".into(),
            ..BootOptions::default()
        };
        assert_eq!(boot(&o).map(|_| ()), Err(BootError::InvalidCmdline));
        assert!(!is_running());
    }

    #[test]
    fn irq_needs_a_running_kernel() {
        assert_eq!(trigger_irq(2), Err(Errno::ESHUTDOWN));
        assert_eq!(trigger_irq(b::LKL_NR_IRQS as u32), Err(Errno::EINVAL));
    }

    #[test]
    fn halting_an_unbooted_kernel_is_a_no_op() {
        let k = Kernel { _private: () };
        assert_eq!(k.boot_time(), Duration::ZERO);
        assert_eq!(k.halt(), Ok(()));
    }
}
