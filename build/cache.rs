//! The kernel cache shared by every build of every checkout: finished artifacts keyed by input
//! hash, plus the persistent build trees that make rebuilds incremental.
//!
//! ```text
//! <cache>/lock                      exclusive flock while any build script uses the cache
//! <cache>/kernel/<hash>/            lklrs.o, include/, config, last-used, complete (written last)
//! <cache>/build/<srcid>-<patches>/  linux/ (patched source + arch overlay), obj/, make.log
//! ```
//!
//! It lives outside `OUT_DIR` on purpose: a cold kernel build takes minutes, and debug,
//! release, test and fresh-clone builds should all pay for it once.

use std::env;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::util::{self, Context, Error, Result};

pub const CACHE_ENV: &str = "LKLFUSE_CACHE_DIR";

/// Finished artifacts kept; older ones are deleted (each is about 20 MB).
const KEEP_ARTIFACTS: usize = 3;

/// The cache directory, created and made absolute (Kbuild's `O=` wants an absolute path).
pub fn root() -> Result<PathBuf> {
    let root = configured_root()?;
    util::create_dir_all(&root)?;
    let root = root
        .canonicalize()
        .with_context(|| format!("failed to resolve {}", root.display()))?;
    // Kbuild refuses such paths with an obscure message; say what to do instead.
    if root
        .to_string_lossy()
        .contains(|c: char| c.is_whitespace() || c == ':')
    {
        return Err(Error::new(format!(
            "the kernel cache path {} contains a space or colon, which Kbuild cannot handle; \
             set {CACHE_ENV} to another directory",
            root.display()
        )));
    }
    Ok(root)
}

fn configured_root() -> Result<PathBuf> {
    let non_empty = |name| {
        env::var_os(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = non_empty(CACHE_ENV) {
        return Ok(dir);
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Ok(dir.join("lklfuse-rs"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(home.join(".cache").join("lklfuse-rs"));
    }
    Err(Error::new(format!(
        "no place for the kernel cache: set {CACHE_ENV}, XDG_CACHE_HOME or HOME"
    )))
}

/// Exclusive ownership of the cache; released when dropped (or when the process dies, which
/// is why this is a flock and not a lock file that could go stale).
pub struct CacheLock {
    _file: File,
}

impl CacheLock {
    pub fn acquire(root: &Path) -> Result<Self> {
        let path = root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("failed to open {}", path.display()))?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB).with_context(|| lock_failed(&path))? {
            eprintln!(
                "lklfuse: waiting for another build to release {}",
                path.display()
            );
            flock(&file, libc::LOCK_EX).with_context(|| lock_failed(&path))?;
        }
        Ok(Self { _file: file })
    }
}

fn lock_failed(path: &Path) -> String {
    format!("failed to lock {}", path.display())
}

/// Returns false if a non-blocking request found the lock taken.
fn flock(file: &File, operation: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: the descriptor belongs to `file`, which is open for the whole call; flock
        // takes no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(error),
        }
    }
}

/// One finished kernel build.
pub struct Artifact {
    dir: PathBuf,
}

impl Artifact {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn object(&self) -> PathBuf {
        self.dir.join("lklrs.o")
    }

    /// The installed uapi headers (`include/linux`, `include/asm`, …).
    pub fn include_dir(&self) -> PathBuf {
        self.dir.join("include")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// Written last and never changed, so cargo can watch it: if the artifact is pruned or
    /// deleted, the build script runs again instead of leaving dangling paths behind.
    pub fn stamp(&self) -> PathBuf {
        self.dir.join("complete")
    }

    fn last_used(&self) -> PathBuf {
        self.dir.join("last-used")
    }
}

/// `<cache>/kernel`: artifacts by input hash.
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("kernel"),
        }
    }

    /// The artifact for `hash` if a build of it completed; marks it as used.
    pub fn lookup(&self, hash: &str) -> Result<Option<Artifact>> {
        let artifact = Artifact {
            dir: self.dir.join(hash),
        };
        if !artifact.stamp().is_file() {
            return Ok(None);
        }
        // A separate file, so that the stamp cargo watches keeps its mtime.
        util::touch(&artifact.last_used())?;
        Ok(Some(artifact))
    }

    /// An empty staging directory for `hash`, to be filled and then passed to `commit`.
    pub fn staging_dir(&self, hash: &str) -> Result<PathBuf> {
        let staging = self.dir.join(format!(".tmp-{hash}"));
        util::remove_dir_all(&staging)?;
        util::create_dir_all(&staging)?;
        Ok(staging)
    }

    /// Stamps the staged artifact and renames it into place, so that a reader (holding the
    /// lock or not) sees either no artifact or a complete one.
    pub fn commit(&self, hash: &str, staging: &Path) -> Result<Artifact> {
        let artifact = Artifact {
            dir: self.dir.join(hash),
        };
        util::touch(&staging.join("last-used"))?;
        write_stamp(&staging.join("complete"), hash)?;
        util::remove_dir_all(&artifact.dir)?;
        fs::rename(staging, &artifact.dir)
            .with_context(|| format!("failed to move {} into place", staging.display()))?;
        Ok(artifact)
    }

    /// Deletes all but the most recently used artifacts, and staging directories that a killed
    /// build left behind (safe: the caller holds the cache lock).
    pub fn prune(&self) -> Result<()> {
        let mut complete = Vec::new();
        for dir in subdirectories(&self.dir)? {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(".tmp-") || !dir.join("complete").is_file() {
                util::remove_dir_all(&dir)?;
            } else {
                complete.push(dir);
            }
        }
        remove_least_recently_used(complete, KEEP_ARTIFACTS, |dir| dir.join("last-used"))
    }
}

/// Only the stamp's existence means anything. Dating it to the epoch keeps cargo's mtime
/// check on it quiet: otherwise a stamp written during the build script's own run looks
/// "changed" to cargo and costs one more run and a recompile of the crate.
fn write_stamp(path: &Path, hash: &str) -> Result<()> {
    util::write(path, format!("{hash}\n"))?;
    File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(UNIX_EPOCH))
        .with_context(|| format!("failed to date {}", path.display()))
}

/// Keeps the `keep` directories whose `marker` is newest and deletes the rest.
pub fn remove_least_recently_used(
    mut dirs: Vec<PathBuf>,
    keep: usize,
    marker: impl Fn(&Path) -> PathBuf,
) -> Result<()> {
    dirs.sort_by_key(|dir| std::cmp::Reverse(util::modified_or_epoch(&marker(dir))));
    for dir in dirs.iter().skip(keep) {
        eprintln!("lklfuse: pruning old kernel cache entry {}", dir.display());
        util::remove_dir_all(dir)?;
    }
    Ok(())
}

/// The directories directly inside `dir` (none if it does not exist yet).
pub fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::new(format!("failed to list {}: {e}", dir.display()))),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}
