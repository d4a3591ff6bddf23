//! Builds Linux 6.12 with the `lklrs` arch port (`kernel/`) into one relocatable object,
//! links it into the crate, and generates Rust bindings from its uapi headers.
//!
//! The kernel build is cached outside `OUT_DIR` by a hash of everything that goes into it
//! (see `build/cache.rs`), because a cold build takes minutes: a cache hit runs no make at
//! all. On a miss, a persistent build tree keeps rebuilds after edits to `kernel/` incremental.
//!
//! Knobs (all optional):
//! - `LKLFUSE_LINUX_SOURCE`: a Linux source `.tar.xz` or unpacked tree
//!   (default `/usr/src/linux-source-6.12.tar.xz`, from Debian's `linux-source-6.12`);
//! - `LKLFUSE_CACHE_DIR`: the cache (default `$XDG_CACHE_HOME/lklfuse-rs`, else
//!   `$HOME/.cache/lklfuse-rs`).

#[path = "build/bindings.rs"]
mod bindings;
#[path = "build/cache.rs"]
mod cache;
#[path = "build/kbuild.rs"]
mod kbuild;
#[path = "build/kconfig.rs"]
mod kconfig;
#[path = "build/link.rs"]
mod link;
#[path = "build/source.rs"]
mod source;
#[path = "build/tools.rs"]
mod tools;
#[path = "build/util.rs"]
mod util;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cache::{Artifact, ArtifactStore, CacheLock};
use kbuild::BuildTree;
use kconfig::Fragment;
use source::KernelSource;
use util::{run_captured, utf8, Error, InputHasher, Result};

/// Bump when a change to this script changes what ends up in a kernel artifact, so that
/// cached artifacts built the old way are not reused.
const BUILD_RS_VERSION: &str = "1";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let manifest_dir = PathBuf::from(required_env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(required_env("OUT_DIR")?);
    let kernel_dir = manifest_dir.join("kernel");
    let bindings_header = manifest_dir.join("src").join("lkl").join("bindings.h");
    declare_rerun_triggers();
    refuse_cross_compilation()?;

    let source = KernelSource::locate()?;
    println!("cargo:rerun-if-changed={}", utf8(&source.watched_file())?);
    tools::require(tools::ALWAYS)?;

    let cache_root = cache::root()?;
    // Held until the end: builds started together (debug, release, test) wait here for the
    // first one's kernel, then hit the cache; pruning never races a reader.
    let _lock = CacheLock::acquire(&cache_root)?;
    let hash = input_hash(&source, &kernel_dir)?;
    let store = ArtifactStore::new(&cache_root);
    let artifact = match store.lookup(&hash)? {
        Some(artifact) => {
            eprintln!("lklfuse: kernel cache hit {}", artifact.dir().display());
            artifact
        }
        None => build_kernel(&store, &hash, &cache_root, &source, &kernel_dir)?,
    };
    // Deleting or pruning the artifact must rerun this script: the crate embeds its paths.
    println!("cargo:rerun-if-changed={}", utf8(&artifact.stamp())?);

    link::kernel_object(&artifact.object(), &out_dir)?;
    bindings::generate(&bindings_header, &artifact, &out_dir.join("bindings.rs"))?;
    bindings::write_build_info(&artifact, &out_dir.join("build_info.rs"))
}

fn required_env(name: &str) -> Result<String> {
    env::var(name)
        .map_err(|_| Error::new(format!("cargo did not set {name} (run this through cargo)")))
}

fn declare_rerun_triggers() {
    for path in ["kernel", "src/lkl/bindings.h", "build.rs", "build"] {
        println!("cargo:rerun-if-changed={path}");
    }
    for name in [
        source::SOURCE_ENV,
        cache::CACHE_ENV,
        "XDG_CACHE_HOME",
        "HOME",
        "LIBCLANG_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={name}");
    }
}

/// The kernel is compiled by the host's gcc for the host; a cross build would link an object
/// of the wrong architecture.
fn refuse_cross_compilation() -> Result<()> {
    let (target, host) = (required_env("TARGET")?, required_env("HOST")?);
    if target != host {
        return Err(Error::new(format!(
            "cross-compiling (host {host}, target {target}) is not supported: the kernel is built with the host gcc"
        )));
    }
    Ok(())
}

/// Everything a kernel artifact depends on: the source, every file under `kernel/`, this
/// script's version and the compiler.
fn input_hash(source: &KernelSource, kernel_dir: &Path) -> Result<String> {
    let gcc_version = run_captured(Command::new("gcc").arg("--version"))?.stdout;
    let mut hasher = InputHasher::new();
    hasher.field(BUILD_RS_VERSION).field(source.identity()?);
    hasher.tree(kernel_dir)?;
    hasher.field(gcc_version);
    Ok(hasher.hex())
}

fn build_kernel(
    store: &ArtifactStore,
    hash: &str,
    cache_root: &Path,
    source: &KernelSource,
    kernel_dir: &Path,
) -> Result<Artifact> {
    tools::require(tools::KERNEL_BUILD)?;
    let fragment = Fragment::load(&kernel_dir.join("config"))?;
    let started = Instant::now();
    eprintln!("lklfuse: kernel cache miss {hash}");
    let tree = BuildTree::open(cache_root, source, kernel_dir)?;
    eprintln!(
        "lklfuse: building in {} (a cold build takes ~6 min; log: {})",
        tree.root().display(),
        tree.log().display()
    );
    tree.sync_arch(kernel_dir)?;
    tree.configure(kernel_dir, &fragment)?;
    tree.build_object()?;
    // Kbuild's own syncconfig may have rewritten .config during the build; check what we ship.
    fragment.verify(&tree.config())?;

    let staging = store.staging_dir(hash)?;
    tree.install_headers(&staging)?;
    util::copy(&tree.object(), &staging.join("lklrs.o"))?;
    util::copy(&tree.config(), &staging.join("config"))?;
    let artifact = store.commit(hash, &staging)?;
    store.prune()?;
    eprintln!(
        "lklfuse: kernel built in {:.0?}: {}",
        started.elapsed(),
        artifact.dir().display()
    );
    Ok(artifact)
}
