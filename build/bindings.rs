//! Rust declarations generated from the kernel's installed uapi headers, and the cache paths
//! the crate may want at run time (tests read the kernel's final .config).

use std::path::Path;

use crate::cache::Artifact;
use crate::tools;
use crate::util::{self, utf8, Context, Error, Result};

/// Constants the host side uses: syscall numbers, errno values and the flag words of the
/// syscalls `lkl::sys` wraps. (bindgen anchors each pattern as `^(…)$`.)
const UAPI_CONSTANTS: &str = "__NR_.*|E[A-Z0-9]+|O_.*|AT_.*|S_I.*|STATX_.*|RENAME_.*|FALLOC_FL_.*\
                              |XATTR_.*|MS_.*|MNT_.*|LKL_.*|SEEK_.*|F_.*|LOCK_.*|UMOUNT_.*|RESOLVE_.*\
                              |LINUX_REBOOT_.*|PATH_MAX|NAME_MAX";

/// Structs that cross the syscall boundary.
const UAPI_TYPES: &str = "statx|statx_timestamp|statfs|statfs64|__kernel_timespec|__kernel_fsid_t\
                          |open_how|flock|flock64|file_handle";

/// Runs bindgen over `header` against the kernel's uapi headers only (no host libc headers).
pub fn generate(header: &Path, artifact: &Artifact, out_file: &Path) -> Result<()> {
    tools::require_libclang()?;
    let include = format!("-I{}", utf8(&artifact.include_dir())?);
    let bindings = bindgen::Builder::default()
        .header(utf8(header)?)
        .clang_args(["-nostdinc", include.as_str()])
        .allowlist_function("lkl_.*")
        .allowlist_type("lkl_.*")
        .allowlist_var("lkl_.*")
        .allowlist_var(UAPI_CONSTANTS)
        .allowlist_type(UAPI_CONSTANTS)
        .allowlist_type(UAPI_TYPES)
        .derive_default(true)
        .layout_tests(true)
        .generate()
        .map_err(|e| Error::new(format!("bindgen failed on {}: {e}", header.display())))?;
    bindings
        .write_to_file(out_file)
        .with_context(|| format!("failed to write {}", out_file.display()))
}

/// Writes `build_info.rs`, for `include!` from the crate.
pub fn write_build_info(artifact: &Artifact, out_file: &Path) -> Result<()> {
    let cache_dir = utf8(artifact.dir())?;
    let config = artifact.config();
    let release = kernel_release(&util::read(&config)?);
    let config = utf8(&config)?;
    let text = format!(
        "/// The cached kernel build this crate links: `lklrs.o`, `include/` (uapi headers), `config`.\n\
         pub const KERNEL_CACHE_DIR: &str = {cache_dir:?};\n\
         /// The final kernel `.config`, e.g. for tests that check which filesystems are built in.\n\
         pub const KERNEL_CONFIG_PATH: &str = {config:?};\n\
         /// The kernel's release, e.g. `6.12.117`.\n\
         pub const KERNEL_RELEASE: &str = {release:?};\n"
    );
    util::write(out_file, text)
}

/// The release from the `.config` header line `# Linux/lklrs 6.12.117 Kernel Configuration`.
fn kernel_release(config: &[u8]) -> String {
    String::from_utf8_lossy(config)
        .lines()
        .take(5)
        .find_map(|line| {
            let rest = line.strip_prefix("# Linux/")?;
            let mut words = rest.split_whitespace();
            words.next()?;
            words.next().map(str::to_string)
        })
        .unwrap_or_else(|| "6.12".to_string())
}
