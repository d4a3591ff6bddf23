//! lklfuse-rs: the Linux kernel's own filesystem code, running inside this
//! process, served to the host through FUSE.
//!
//! ```text
//!  host program ──► lkl::sys (typed syscalls) ──► lkl_syscall ──► Linux 6.12 (kernel/arch/lklrs)
//!                                                                   │  host services
//!  lkl::host_ops  ◄─────────────────────────────────────────────────┘  (threads, time, memory)
//! ```
//!
//! `lkl` is the only module that talks to the kernel object; all FFI lives there.
//! `virtio` holds the device models the kernel drives through MMIO (virtio-blk serving image
//! files); its only `unsafe` code turns checked kernel addresses into host memory access.

pub mod daemon;
pub mod fs;
pub mod image;
pub mod lkl;
pub mod tools;
pub mod virtio;

/// Where the kernel this crate links was built (from build.rs).
pub mod build_info {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}
