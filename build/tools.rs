//! Up-front checks for the host tools the build needs, so that a missing one is reported as
//! "install package X" instead of a confusing failure minutes into a kernel build.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{find_program, Error, Result};

/// A program looked up in `PATH`, and the Debian package that provides it.
pub struct Tool {
    program: &'static str,
    package: &'static str,
}

const fn tool(program: &'static str, package: &'static str) -> Tool {
    Tool { program, package }
}

/// Needed on every run: the compiler's version is part of the cache key, and `ar` wraps the
/// kernel object for rustc.
pub const ALWAYS: &[Tool] = &[tool("gcc", "build-essential"), tool("ar", "binutils")];

/// Needed only when the kernel has to be (re)built.
pub const KERNEL_BUILD: &[Tool] = &[
    tool("make", "build-essential"),
    tool("gcc", "build-essential"),
    tool("flex", "flex"),
    tool("bison", "bison"),
    tool("bc", "bc"),
    tool("perl", "perl"),
    tool("tar", "tar"),
    tool("xz", "xz-utils"),
    tool("patch", "patch"),
    // headers_install copies the uapi headers with rsync.
    tool("rsync", "rsync"),
    tool("ld", "binutils"),
    tool("ar", "binutils"),
    tool("nm", "binutils"),
    tool("objcopy", "binutils"),
];

/// Fails with one line per missing program and a single install command for all of them.
pub fn require(tools: &[Tool]) -> Result<()> {
    let missing: Vec<&Tool> = tools
        .iter()
        .filter(|t| find_program(t.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|t| {
            format!(
                "  {}: not found in PATH (Debian package {})",
                t.program, t.package
            )
        })
        .collect();
    let mut packages: Vec<&str> = Vec::new();
    for package in missing.iter().map(|t| t.package) {
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    Err(Error::new(format!(
        "tools needed by the build are missing:\n{}\ninstall them with 'sudo apt-get install {}'",
        lines.join("\n"),
        packages.join(" ")
    )))
}

/// bindgen loads libclang at run time and panics if it cannot; look for it first, in the
/// places clang-sys searches, so the failure names the package instead.
pub fn require_libclang() -> Result<()> {
    if libclang_search_dirs()
        .iter()
        .any(|dir| contains_libclang(dir))
    {
        return Ok(());
    }
    Err(Error::new(
        "libclang (needed by bindgen) not found: install it with 'sudo apt-get install libclang-dev' \
         or set LIBCLANG_PATH to the directory holding libclang.so",
    ))
}

fn libclang_search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(path) = env::var_os("LIBCLANG_PATH") {
        let path = PathBuf::from(path);
        // clang-sys accepts either the directory or the library file itself.
        if path.is_file() {
            return vec![path.parent().map(Path::to_path_buf).unwrap_or_default()];
        }
        dirs.push(path);
    }
    if let Some(libdir) = llvm_config_libdir() {
        dirs.push(libdir);
    }
    for parent in [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/local/lib64",
    ] {
        dirs.push(PathBuf::from(parent));
        // Debian's /usr/lib/llvm-N/lib and multiarch /usr/lib/x86_64-linux-gnu.
        if let Ok(entries) = fs::read_dir(parent) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("llvm") {
                    dirs.push(entry.path().join("lib"));
                } else if name.contains("-linux-") {
                    dirs.push(entry.path());
                }
            }
        }
    }
    dirs
}

fn llvm_config_libdir() -> Option<PathBuf> {
    let output = Command::new("llvm-config").arg("--libdir").output().ok()?;
    let libdir = String::from_utf8(output.stdout).ok()?;
    output
        .status
        .success()
        .then(|| PathBuf::from(libdir.trim()))
}

/// `libclang.so`, `libclang.so.1`, `libclang-14.so`, … but not `libclang-cpp.so`.
fn contains_libclang(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("libclang")) else {
            return false;
        };
        let Some((version, _)) = rest.split_once(".so") else {
            return false;
        };
        version.is_empty()
            || version
                .strip_prefix('-')
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    })
}
