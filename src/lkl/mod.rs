//! The safe Rust face of the in-process Linux kernel.
