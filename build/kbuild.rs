//! The persistent kernel build tree and the Kbuild steps run in it.
//!
//! A tree is keyed by the source identity and the patch set, so editing `kernel/arch/lklrs` or
//! `kernel/config` reuses it and make rebuilds only what changed (seconds), while a new source
//! or patch set starts from a fresh tree (a cold build, about six minutes on two cores).

use std::collections::BTreeSet;
use std::fs;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use crate::cache;
use crate::kconfig::Fragment;
use crate::source::KernelSource;
use crate::util::{
    self, assignment, run_captured, run_logged, Context, Error, InputHasher, Result,
};

pub const ARCH: &str = "lklrs";

/// The make goal. Not `lklrs.o`: Kbuild treats any `%.o` goal as "compile this one file"
/// and would ignore the arch Makefile's rule, so the arch makes `all` depend on it instead.
const MAKE_GOAL: &str = "all";

/// Build trees kept (each is about 2 GB); the one in use is always the newest.
const KEEP_BUILD_TREES: usize = 2;

/// Written once the source is unpacked and patched; without it the tree is redone.
const PREPARED_MARKER: &str = ".lklfuse-prepared";

/// Records which `kernel/config` (and arch Kconfig) the object dir was configured from.
const CONFIG_HASH_FILE: &str = ".lklfuse-config-hash";

pub struct BuildTree {
    root: PathBuf,
    linux: PathBuf,
    obj: PathBuf,
    log: PathBuf,
}

impl BuildTree {
    /// Opens the tree for this source and the patches in `kernel/patches`, unpacking and
    /// patching it first if that has not completed before.
    pub fn open(cache_root: &Path, source: &KernelSource, kernel_dir: &Path) -> Result<Self> {
        let patches = patch_files(kernel_dir)?;
        let source_id = InputHasher::new().field(source.identity()?).short_hex();
        let patch_set_id = patch_set_id(&patches)?;
        let trees = cache_root.join("build");
        let root = trees.join(format!("{source_id}-{patch_set_id}"));
        let tree = Self {
            linux: root.join("linux"),
            obj: root.join("obj"),
            log: root.join("make.log"),
            root,
        };
        if !tree.root.join(PREPARED_MARKER).is_file() {
            tree.prepare(source, &patches)?;
        }
        util::touch(&tree.root.join("last-used"))?;
        cache::remove_least_recently_used(
            cache::subdirectories(&trees)?,
            KEEP_BUILD_TREES,
            |dir| dir.join("last-used"),
        )?;
        // One log per build-script run, so its tail is about this run.
        util::write(&tree.log, "")?;
        Ok(tree)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Unpacks the pristine source and applies the patches. Starts over from nothing, since
    /// an interrupted earlier attempt may have left a half-unpacked or half-patched tree.
    fn prepare(&self, source: &KernelSource, patches: &[PathBuf]) -> Result<()> {
        eprintln!(
            "lklfuse: unpacking the Linux source into {}",
            self.linux.display()
        );
        util::remove_dir_all(&self.linux)?;
        util::remove_dir_all(&self.obj)?;
        util::create_dir_all(&self.linux)?;
        source.unpack_into(&self.linux)?;
        for patch in patches {
            apply_patch(&self.linux, patch)?;
        }
        util::write(&self.root.join(PREPARED_MARKER), "")
    }

    /// Mirrors `kernel/arch/lklrs` into `linux/arch/lklrs`, writing only files whose content
    /// changed: untouched files keep their mtime, so make does not rebuild what they feed.
    pub fn sync_arch(&self, kernel_dir: &Path) -> Result<()> {
        let from = kernel_dir.join("arch").join(ARCH);
        let to = self.linux.join("arch").join(ARCH);
        if !from.is_dir() {
            return Err(Error::new(format!(
                "the arch port {} is missing",
                from.display()
            )));
        }
        let wanted: BTreeSet<PathBuf> = util::files_under(&from)?.into_iter().collect();
        for relative in &wanted {
            copy_if_changed(&from.join(relative), &to.join(relative))?;
        }
        for relative in util::files_under(&to)? {
            if !wanted.contains(&relative) {
                let stale = to.join(&relative);
                fs::remove_file(&stale)
                    .with_context(|| format!("failed to remove {}", stale.display()))?;
            }
        }
        remove_empty_dirs(&to)
    }

    /// Runs `allnoconfig` with `kernel/config` as the fragment when that fragment or the arch
    /// Kconfig changed, then checks every requested setting stuck.
    pub fn configure(&self, kernel_dir: &Path, fragment: &Fragment) -> Result<()> {
        let wanted_hash = config_inputs_hash(kernel_dir)?;
        let hash_file = self.obj.join(CONFIG_HASH_FILE);
        let configured_hash = fs::read_to_string(&hash_file).unwrap_or_default();
        if self.config().is_file() && configured_hash == wanted_hash {
            return Ok(());
        }
        eprintln!(
            "lklfuse: configuring the kernel from {}",
            fragment.path().display()
        );
        util::create_dir_all(&self.obj)?;
        let mut make = self.make();
        make.arg(assignment("KCONFIG_ALLCONFIG", fragment.path()))
            .arg("allnoconfig");
        run_logged(&mut make, &self.log)?;
        fragment.verify(&self.config())?;
        util::write(&hash_file, wanted_hash)
    }

    /// Compiles the kernel into `obj/lklrs.o`.
    pub fn build_object(&self) -> Result<()> {
        let jobs = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let mut make = self.make();
        make.arg(format!("-j{jobs}")).arg(MAKE_GOAL);
        run_logged(&mut make, &self.log)?;
        if !self.object().is_file() {
            return Err(Error::new(format!(
                "`{}` succeeded but produced no {}; arch/{ARCH}/Makefile must make `{MAKE_GOAL}` build lklrs.o",
                util::describe(&make),
                self.object().display()
            )));
        }
        Ok(())
    }

    /// Installs the sanitised uapi headers as `<dest>/include/{linux,asm,asm-generic,…}`.
    pub fn install_headers(&self, dest: &Path) -> Result<()> {
        let mut make = self.make();
        make.arg(assignment("INSTALL_HDR_PATH", dest))
            .arg("headers_install");
        run_logged(&mut make, &self.log)
    }

    pub fn object(&self) -> PathBuf {
        self.obj.join("lklrs.o")
    }

    pub fn config(&self) -> PathBuf {
        self.obj.join(".config")
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    fn make(&self) -> Command {
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(&self.linux)
            .arg(format!("ARCH={ARCH}"))
            .arg(assignment("O", &self.obj))
            // Cargo's jobserver would throttle the kernel build to its own job slots, and a
            // MAKELEVEL would make Kbuild think it runs as a sub-make.
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL");
        make
    }
}

/// `kernel/patches/*.patch` in name order (the order they are applied in).
fn patch_files(kernel_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = kernel_dir.join("patches");
    let patches = util::files_under(&dir)?
        .into_iter()
        .filter(|p| {
            p.parent() == Some(Path::new("")) && p.extension().is_some_and(|e| e == "patch")
        })
        .map(|p| dir.join(p))
        .collect();
    Ok(patches)
}

/// Names the patch set by the patches' names and contents (application order included).
fn patch_set_id(patches: &[PathBuf]) -> Result<String> {
    let mut hasher = InputHasher::new();
    for patch in patches {
        hasher.field(patch.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.field(util::read(patch)?);
    }
    Ok(hasher.short_hex())
}

fn apply_patch(linux: &Path, patch: &Path) -> Result<()> {
    eprintln!("lklfuse: applying {}", patch.display());
    let mut command = Command::new("patch");
    command
        .args(["-p1", "--forward", "--batch", "-d"])
        .arg(linux)
        .arg("-i")
        .arg(patch);
    run_captured(&mut command)
        .map(drop)
        .map_err(|e| Error::new(format!("{} does not apply: {e}", patch.display())))
}

/// What the configuration depends on besides the source: the fragment and the arch's Kconfig
/// files (a changed `select` or default needs a fresh `allnoconfig`, not Kbuild's syncconfig).
fn config_inputs_hash(kernel_dir: &Path) -> Result<String> {
    let fragment = kernel_dir.join("config");
    let mut hasher = InputHasher::new();
    hasher.field(util::read(&fragment)?);
    let arch = kernel_dir.join("arch").join(ARCH);
    for relative in util::files_under(&arch)? {
        let is_kconfig = relative
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("Kconfig"));
        if is_kconfig {
            let path = arch.join(&relative);
            hasher.field(relative.as_os_str().as_encoded_bytes());
            hasher.field(util::read(&path)?);
        }
    }
    Ok(hasher.hex())
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let new = util::read(from)?;
    if fs::read(to).is_ok_and(|old| old == new) {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        util::create_dir_all(parent)?;
    }
    // fs::copy also carries the permission bits, for scripts the arch Makefile runs directly.
    util::copy(from, to)
}

/// Removes directories left empty by deleted overlay files; keeps `dir` itself.
fn remove_empty_dirs(dir: &Path) -> Result<()> {
    for sub in cache::subdirectories(dir)? {
        remove_empty_dirs(&sub)?;
        let is_empty = fs::read_dir(&sub).is_ok_and(|mut entries| entries.next().is_none());
        if is_empty {
            fs::remove_dir(&sub).with_context(|| format!("failed to remove {}", sub.display()))?;
        }
    }
    Ok(())
}
