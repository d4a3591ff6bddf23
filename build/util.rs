//! Helpers shared by the build script's modules: one error type, stable input hashing,
//! running commands with useful failure messages, and small file-system chores.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// How many lines of a failed make's log are shown; enough to reach the first compiler error
/// of a parallel build in most cases.
const LOG_TAIL_LINES: usize = 60;

/// A build failure, already phrased for the person running cargo; `main` prints it once.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Prefixes a lower-level error with what we were trying to do.
pub trait Context<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

/// SHA-256 over length-prefixed fields, so that ("ab", "c") and ("a", "bc") hash differently.
pub struct InputHasher(Sha256);

impl InputHasher {
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    pub fn field(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        let bytes = bytes.as_ref();
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Hashes every file under `root` by relative path and content.
    pub fn tree(&mut self, root: &Path) -> Result<&mut Self> {
        for relative in files_under(root)? {
            let path = root.join(&relative);
            let content = read(&path)?;
            self.field(relative.as_os_str().as_bytes()).field(content);
        }
        Ok(self)
    }

    pub fn hex(&self) -> String {
        let digest = self.0.clone().finalize();
        digest
            .iter()
            .fold(String::with_capacity(64), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}"); // writing to a String cannot fail
                hex
            })
    }

    /// A shorter name for directory names, where 64 bits are plenty to avoid collisions.
    pub fn short_hex(&self) -> String {
        self.hex()[..16].to_owned()
    }
}

/// Every regular file under `root`, relative to it and sorted, so hashes do not depend on
/// directory iteration order. A missing `root` has no files.
pub fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if root.exists() {
        collect_files(root, Path::new(""), &mut files)?;
    }
    files.sort();
    Ok(files)
}

fn collect_files(root: &Path, relative: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(relative);
    let entries =
        fs::read_dir(&dir).with_context(|| format!("failed to list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        let relative = relative.join(entry.file_name());
        // Follow symlinks: what matters to the kernel build is the content they lead to.
        let path = root.join(&relative);
        let metadata =
            fs::metadata(&path).with_context(|| format!("failed to inspect {}", path.display()))?;
        if metadata.is_dir() {
            collect_files(root, &relative, files)?;
        } else if metadata.is_file() {
            files.push(relative);
        }
    }
    Ok(())
}

/// The command line as a person would type it, for error messages.
pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Runs a short command, returning its output; a failure carries the command and its stderr.
pub fn run_captured(command: &mut Command) -> Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `{}`", describe(command)))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        return Err(Error(format!(
            "`{}` failed ({}):\n{}{}",
            describe(command),
            output.status,
            stdout,
            stderr.trim_end()
        )));
    }
    Ok(output)
}

/// Runs a long command with stdout and stderr appended to `log`; on failure the error shows
/// the command, its exit status and the tail of the log.
pub fn run_logged(command: &mut Command, log: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("failed to open {}", log.display()))?;
    writeln!(file, "$ {}", describe(command))
        .with_context(|| format!("failed to write {}", log.display()))?;
    let stderr = file
        .try_clone()
        .with_context(|| format!("failed to open {}", log.display()))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .status()
        .with_context(|| format!("failed to run `{}`", describe(command)))?;
    if status.success() {
        return Ok(());
    }
    Err(Error(format!(
        "`{}` failed ({status}); last {LOG_TAIL_LINES} lines of {}:\n{}",
        describe(command),
        log.display(),
        tail(log, LOG_TAIL_LINES)
    )))
}

fn tail(log: &Path, lines: usize) -> String {
    match fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

pub fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("failed to create {}", path.display()))
}

/// Removes a directory tree if it exists.
pub fn remove_dir_all(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(Error(format!("failed to remove {}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("failed to read {}", path.display()))
}

pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
}

pub fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<()> {
    fs::write(path, content).with_context(|| format!("failed to write {}", path.display()))
}

pub fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("failed to copy {} to {}", from.display(), to.display()))
}

/// Creates `path` or moves its modification time to now; used as a "last used" mark that
/// decides which cache entries survive pruning.
pub fn touch(path: &Path) -> Result<()> {
    File::create(path)
        .and_then(|file| file.set_modified(SystemTime::now()))
        .with_context(|| format!("failed to touch {}", path.display()))
}

/// Modification time of `path`, or the epoch if it is missing (so it sorts as oldest).
pub fn modified_or_epoch(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Looks a program up in `PATH` the way the shell would.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A path as UTF-8, for places (generated Rust, Make variables) that need text.
pub fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error(format!("path is not valid UTF-8: {}", path.display())))
}

/// `name=value` as one command-line argument, without forcing `value` through UTF-8.
pub fn assignment(name: &str, value: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(name);
    arg.push("=");
    arg.push(OsStr::new(value));
    arg
}
