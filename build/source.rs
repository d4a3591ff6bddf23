//! Where the pristine Linux source comes from: Debian's linux-source tarball by default, or
//! any tarball or unpacked tree named by `LKLFUSE_LINUX_SOURCE`. The source is never modified;
//! it is unpacked or copied into a build tree in the cache.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use crate::util::{run_captured, Context, Error, Result};

pub const SOURCE_ENV: &str = "LKLFUSE_LINUX_SOURCE";
const DEFAULT_SOURCE: &str = "/usr/src/linux-source-6.12.tar.xz";
const DEBIAN_PACKAGE: &str = "linux-source-6.12";

pub enum KernelSource {
    /// A `.tar.xz` with a single top-level directory, as Debian ships it.
    Tarball(PathBuf),
    /// An already unpacked tree with a top-level `Makefile`.
    Tree(PathBuf),
}

impl KernelSource {
    /// Resolves `LKLFUSE_LINUX_SOURCE` (an empty value counts as unset) or the Debian default.
    pub fn locate() -> Result<Self> {
        let path = env::var_os(SOURCE_ENV)
            .filter(|value| !value.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SOURCE), PathBuf::from);
        let not_found = || {
            Error::new(format!(
                "Linux source not found at {}: install it with 'sudo apt-get install {DEBIAN_PACKAGE}' \
                 or set {SOURCE_ENV}",
                path.display()
            ))
        };
        let metadata = fs::metadata(&path).map_err(|_| not_found())?;
        let path = path.canonicalize().map_err(|_| not_found())?;
        if metadata.is_dir() {
            if !path.join("Makefile").is_file() {
                return Err(Error::new(format!(
                    "{SOURCE_ENV}={} is a directory without a top-level Makefile; \
                     point it at an unpacked Linux tree or a .tar.xz",
                    path.display()
                )));
            }
            Ok(Self::Tree(path))
        } else {
            Ok(Self::Tarball(path))
        }
    }

    /// The file whose change means "a different source": cargo watches it.
    pub fn watched_file(&self) -> PathBuf {
        match self {
            Self::Tarball(path) => path.clone(),
            Self::Tree(path) => path.join("Makefile"),
        }
    }

    /// Cheap identity of the source: its location plus size and mtime, so an upgraded
    /// linux-source package (same path, new file) yields a new kernel build.
    pub fn identity(&self) -> Result<String> {
        let watched = self.watched_file();
        let metadata = fs::metadata(&watched)
            .with_context(|| format!("failed to inspect {}", watched.display()))?;
        let mtime = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let kind = match self {
            Self::Tarball(_) => "tarball",
            Self::Tree(_) => "tree",
        };
        Ok(format!(
            "{kind} {} size={} mtime={}.{:09}",
            watched.display(),
            metadata.len(),
            mtime.as_secs(),
            mtime.subsec_nanos()
        ))
    }

    /// Fills the empty directory `dest` with the source tree.
    pub fn unpack_into(&self, dest: &Path) -> Result<()> {
        let mut command = match self {
            Self::Tarball(tarball) => {
                let mut tar = Command::new("tar");
                tar.arg("-xJf")
                    .arg(tarball)
                    .arg("--strip-components=1")
                    .arg("-C")
                    .arg(dest);
                tar
            }
            Self::Tree(tree) => {
                // `dir/.` copies the contents, including dot files, into the existing `dest`.
                let mut cp = Command::new("cp");
                cp.arg("-a").arg(tree.join(".")).arg(dest);
                cp
            }
        };
        run_captured(&mut command).map(drop)
    }
}
