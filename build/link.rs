//! Hands the kernel object to rustc as a static library.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::{run_captured, utf8, Result};

const LIBRARY: &str = "lklrs_kernel";

/// Wraps `object` in `OUT_DIR/liblklrs_kernel.a` and tells cargo to link all of it.
pub fn kernel_object(object: &Path, out_dir: &Path) -> Result<()> {
    let archive = out_dir.join(format!("lib{LIBRARY}.a"));
    // `ar crs` adds to an existing archive; start from nothing so no stale member survives.
    let _ = fs::remove_file(&archive);
    run_captured(Command::new("ar").arg("crs").arg(&archive).arg(object))?;
    println!("cargo:rustc-link-search=native={}", utf8(out_dir)?);
    // Whole-archive: the Rust side reaches the kernel only through a few entry points, and the
    // linker must not drop the object (or parts of it) because nothing seemed to need them yet.
    println!("cargo:rustc-link-lib=static:+whole-archive={LIBRARY}");
    // The kernel object carries no .note.GNU-stack; without this the linker would make the
    // whole process's stack executable.
    println!("cargo:rustc-link-arg=-Wl,-z,noexecstack");
    Ok(())
}
