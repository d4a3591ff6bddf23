//! The safe Rust face of the in-process Linux kernel, and the only place that talks to it.
//!
//! Every FFI item and nearly every `unsafe` block of the crate lives in this module:
//!
//! | module | role |
//! |---|---|
//! | [`bindings`] | bindgen output for the uapi headers and the `lkl_*` entry points |
//! | `host_ops` | the `extern "C"` host services the kernel calls (threads, time, memory, ...) |
//! | [`kernel`] | [`boot`] / [`Kernel::halt`]: one kernel per process |
//! | [`sys`] | safe syscall wrappers named after the syscall, all through `sys::syscall6` |
//! | [`fd`] | [`KernelFd`]: descriptors in the kernel's fd table, not the host's |
//! | [`abi`] | pure kernel ↔ host translations of structs and flag words |
//! | [`errno`] | [`Errno`]: kernel error numbers |
//! | [`mmio`] | emulated device memory for virtio-mmio devices |
//! | [`disk`] | image files as virtio-blk disks, mounted inside the kernel |
//! | [`probe`] | filesystem type detection from superblock magics (read-only) |
//!
//! Two worlds, two vocabularies: "kernel" is the Linux running in this process, "host" the
//! real OS. Values valid in one world only carry it in their type ([`KernelFd`] is not an
//! `OwnedFd`), and flag words cross through the `abi::*_to_kernel` functions.
//!
//! Lock order inside this module: the timer service, console buffer, thread registry and MMIO
//! registry each have one private lock, never held while calling into the kernel or into one
//! another.

#![allow(unsafe_code)]

pub mod abi;
pub mod bindings;
mod console;
pub mod disk;
pub mod errno;
pub mod fd;
mod host_ops;
pub mod kernel;
pub mod mmio;
pub mod probe;
mod sync;
pub mod sys;
mod timer;
pub mod watchdog;

pub use errno::Errno;
pub use fd::{AsKernelFd, BorrowedKernelFd, KernelFd, CWD};
pub use host_ops::{kernel_ram, set_panic_hook};
pub use kernel::{boot, is_running, sync_clock, trigger_irq, BootError, BootOptions, Kernel};
pub use mmio::{register_mmio, register_virtio_mmio, MmioDevice, MmioError, MmioRegion};
