//! A library API for programs: open a disk image with the kernel's own filesystem code and
//! work on the files inside it with calls shaped like `std::fs`.
//!
//! ```no_run
//! use lklfuse::image::{Image, OpenOptions};
//! use std::io::Read;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = Image::open("disk.img", &OpenOptions::read_only())?;
//! for entry in image.read_dir("/etc")? {
//!     let entry = entry?;
//!     let meta = image.symlink_metadata(entry.path())?;
//!     println!("{:o} {:>10} {}", meta.mode(), meta.len(), entry.path().display());
//! }
//! let mut text = String::new();
//! image.open_file("/etc/hostname")?.read_to_string(&mut text)?;
//! image.close()?; // unmount inside the kernel and flush the image file
//! # Ok(())
//! # }
//! ```
//!
//! ```text
//! Image::open ─► disk::attach (virtio-blk) ─► lkl::boot ─► mount inside the kernel (/mnt/vdX)
//!   calls on image paths ─► typed syscalls relative to the mount's root
//! Image::close / drop ─► unmount inside the kernel ─► flush (fdatasync of the image) ─► halt
//! ```
//!
//! # One image per process
//!
//! The kernel runs inside this process and boots at most once ([`crate::lkl::boot`]), and
//! disks can only be attached before it boots. So a process opens **one** image, once: a
//! second [`Image::open`] (even after [`Image::close`]) fails with [`Error::Kernel`]. A
//! program that needs several images runs one process per image.
//!
//! # Paths
//!
//! Paths name files inside the image; `/etc` and `etc` are the same file, and `..` never
//! leaves the image's root. Calls that follow symlinks (`metadata`, `open_file`, `read_dir`)
//! resolve them inside the image too (an absolute target starts at the image's root). The
//! `symlink_*`/"no follow" calls act on a final symlink itself; symlinks in the middle of a
//! path given to those are followed by the kernel from *its* root, so give them paths
//! without symlinked directories (as tools walking a tree naturally do).
//!
//! Owners are numeric (the image's uids and gids, not the host's names); times carry
//! nanoseconds where the filesystem keeps them.

mod error;
mod file;

use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

pub use self::error::{describe, Error};
pub use self::file::{File, FileOptions};
pub use crate::lkl::abi::{FileType, SetTime, Timestamp};
pub use crate::lkl::Errno;

use crate::lkl::abi::{self, Statx};
use crate::lkl::bindings as b;
use crate::lkl::{self, disk, sys, BootOptions, KernelFd};

/// How to open an image (see [`Image::open`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Mount read-only (the image file is then never written).
    pub read_only: bool,
    /// Partition number (1-based, MBR or GPT); `None` for a filesystem on the whole image.
    pub partition: Option<u32>,
    /// Kernel filesystem type (`ext4`, `xfs`, `vfat`, ...); `None` detects it.
    pub fstype: Option<String>,
    /// RAM for the kernel, in MiB (default 64).
    pub memory_mib: u32,
    /// Filesystem mount options, comma separated (e.g. `"noatime"` is not one of these: use
    /// filesystem-specific options such as `"errors=remount-ro"`).
    pub mount_data: String,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            read_only: false,
            partition: None,
            fstype: None,
            memory_mib: BootOptions::default().memory_mib,
            mount_data: String::new(),
        }
    }
}

impl OpenOptions {
    /// Read-only, everything else default.
    pub fn read_only() -> OpenOptions {
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        }
    }

    /// Read-write, everything else default.
    pub fn read_write() -> OpenOptions {
        OpenOptions::default()
    }
}

/// What [`Image::mknod`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A named pipe.
    Fifo,
    /// A character device with this host `dev_t`.
    CharDevice(u64),
    /// A block device with this host `dev_t`.
    BlockDevice(u64),
    /// A Unix socket node.
    Socket,
}

/// An image mounted inside the in-process kernel. See the module documentation.
///
/// Files and directory listings borrow the image, so it cannot be closed while they are
/// open. Dropping it unmounts too, logging (not returning) any error: call
/// [`Image::close`] to see them.
#[derive(Debug)]
pub struct Image {
    image: PathBuf,
    kernel: lkl::Kernel,
    _disk: disk::Disk,
    mount: Option<disk::Mount>,
    /// The mount's root directory: every call resolves relative to it.
    root: Option<KernelFd>,
    /// The mount point as bytes, for the calls that only take whole paths (xattrs).
    mount_path: Vec<u8>,
}

impl Image {
    /// Attaches `image`, boots the kernel and mounts the filesystem. See the module
    /// documentation for why this works once per process.
    pub fn open(image: impl AsRef<Path>, options: &OpenOptions) -> Result<Image, Error> {
        let image = image.as_ref().to_path_buf();
        let kernel_err = |message: String| Error::Kernel {
            image: image.clone(),
            message,
        };
        if lkl::is_running() {
            return Err(kernel_err(
                "the kernel was already booted in this process (one image per process)".into(),
            ));
        }
        let disk = disk::attach(&image, options.read_only).map_err(|e| match e {
            disk::DiskError::Open { source, .. } => open_error(&image, &source),
            other => kernel_err(other.to_string()),
        })?;
        let kernel = lkl::boot(&BootOptions {
            memory_mib: options.memory_mib,
            ..BootOptions::default()
        })
        .map_err(|e| kernel_err(e.to_string()))?;
        let mount_options = disk::MountOptions {
            partition: options.partition,
            fstype: options.fstype.clone(),
            read_only: options.read_only,
            flags: 0,
            data: options.mount_data.clone(),
        };
        let mounted = disk.mount(&mount_options).and_then(|mount| {
            let flags = (b::O_PATH | b::O_DIRECTORY | b::O_CLOEXEC) as i32;
            match sys::openat(lkl::CWD, mount.path(), flags, 0) {
                Ok(root) => Ok((mount, root)),
                Err(errno) => {
                    let _ = mount.unmount();
                    Err(disk::MountError::Kernel {
                        action: "open",
                        target: "the mount's root".into(),
                        errno,
                    })
                }
            }
        });
        let (mount, root) = match mounted {
            Ok(m) => m,
            Err(e) => {
                let _ = kernel.halt();
                let errno = match &e {
                    disk::MountError::Kernel { errno, .. } => Some(*errno),
                    _ => None,
                };
                return Err(Error::Mount {
                    image,
                    message: mount_message(&e),
                    errno,
                });
            }
        };
        tracing::debug!(
            "{} mounted ({}{})",
            image.display(),
            mount.fstype(),
            if mount.read_only() { ", read-only" } else { "" }
        );
        Ok(Image {
            mount_path: mount.path().to_bytes().to_vec(),
            image,
            kernel,
            _disk: disk,
            mount: Some(mount),
            root: Some(root),
        })
    }

    /// The image file.
    pub fn image_path(&self) -> &Path {
        &self.image
    }

    /// The filesystem type that was mounted (`ext4`, `vfat`, ...).
    pub fn fstype(&self) -> &'static str {
        self.mount.as_ref().map_or("", |m| m.fstype())
    }

    /// Whether the filesystem is mounted read-only (asked for, or the image file is not
    /// writable).
    pub fn is_read_only(&self) -> bool {
        self.mount.as_ref().is_some_and(|m| m.read_only())
    }

    // -----------------------------------------------------------------------------------
    // Paths

    /// The image path as shown in errors, and the path relative to the root that the
    /// kernel resolves (`.` for the root).
    fn resolve(&self, path: &Path) -> Result<(PathBuf, CString), Error> {
        let shown = normalize(path);
        let rel = shown.strip_prefix("/").unwrap_or(&shown);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = sys::path_to_cstring(rel).map_err(|errno| self.err(&shown, errno))?;
        Ok((shown, c))
    }

    /// The whole kernel path (mount point + relative path), for xattr calls.
    fn kernel_path(&self, rel: &CStr) -> CString {
        let mut bytes = self.mount_path.clone();
        bytes.push(b'/');
        bytes.extend_from_slice(rel.to_bytes());
        // Both parts came from CStrs: no interior NUL.
        CString::new(bytes).unwrap_or_default()
    }

    fn root(&self) -> &KernelFd {
        // Only `close` (which consumes self) and `drop` take it.
        self.root.as_ref().expect("image root is open until close")
    }

    fn err(&self, path: &Path, errno: Errno) -> Error {
        Error::Path {
            path: path.to_path_buf(),
            image: self.image.clone(),
            errno,
        }
    }

    fn at<T>(
        &self,
        path: &Path,
        f: impl FnOnce(&KernelFd, &CStr) -> Result<T, Errno>,
    ) -> Result<T, Error> {
        let (shown, rel) = self.resolve(path)?;
        f(self.root(), &rel).map_err(|errno| self.err(&shown, errno))
    }

    /// Opens `path` with symlinks resolved inside the image.
    fn open_in_root(
        &self,
        path: &Path,
        flags: u32,
        mode: u32,
    ) -> Result<(PathBuf, KernelFd), Error> {
        let (shown, rel) = self.resolve(path)?;
        // openat2 insists on a zero mode unless it creates.
        let mode = if flags & b::O_CREAT != 0 { mode } else { 0 };
        let how = b::open_how {
            flags: u64::from(flags | b::O_CLOEXEC),
            mode: u64::from(mode),
            resolve: u64::from(b::RESOLVE_IN_ROOT),
        };
        let fd = sys::openat2(self.root(), &rel, &how).map_err(|errno| self.err(&shown, errno))?;
        Ok((shown, fd))
    }

    // -----------------------------------------------------------------------------------
    // Metadata

    /// Attributes of `path`, following symlinks.
    pub fn metadata(&self, path: impl AsRef<Path>) -> Result<Metadata, Error> {
        let (shown, fd) = self.open_in_root(path.as_ref(), b::O_PATH, 0)?;
        statx(&fd, c"", b::AT_EMPTY_PATH as i32).map_err(|errno| self.err(&shown, errno))
    }

    /// Attributes of `path` itself (a symlink is not followed).
    pub fn symlink_metadata(&self, path: impl AsRef<Path>) -> Result<Metadata, Error> {
        self.at(path.as_ref(), |root, rel| {
            statx(root, rel, b::AT_SYMLINK_NOFOLLOW as i32)
        })
    }

    /// Whether `path` exists (without following a final symlink).
    pub fn exists(&self, path: impl AsRef<Path>) -> Result<bool, Error> {
        match self.symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The target of the symlink `path`.
    pub fn read_link(&self, path: impl AsRef<Path>) -> Result<PathBuf, Error> {
        self.at(path.as_ref(), |root, rel| {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = sys::readlinkat(root, rel, &mut buf)?;
                if n < buf.len() {
                    buf.truncate(n);
                    return Ok(PathBuf::from(OsString::from_vec(buf)));
                }
                buf.resize(buf.len() * 2, 0);
            }
        })
    }

    /// Space usage of the filesystem.
    pub fn statfs(&self) -> Result<abi::StatFs, Error> {
        sys::fstatfs(self.root()).map_err(|errno| self.err(Path::new("/"), errno))
    }

    // -----------------------------------------------------------------------------------
    // Extended attributes (of the path itself: a final symlink is not followed)

    /// Names of the extended attributes of `path` (ACLs are `system.posix_acl_access` and
    /// `system.posix_acl_default`).
    pub fn xattrs(&self, path: impl AsRef<Path>) -> Result<Vec<OsString>, Error> {
        self.at(path.as_ref(), |_, rel| {
            let full = self.kernel_path(rel);
            let buf = grow(|buf| sys::llistxattr(&full, buf))?;
            Ok(buf
                .split(|&c| c == 0)
                .filter(|n| !n.is_empty())
                .map(|n| OsStr::from_bytes(n).to_os_string())
                .collect())
        })
    }

    /// The value of attribute `name` of `path`; `None` if it has none by that name.
    pub fn get_xattr(
        &self,
        path: impl AsRef<Path>,
        name: impl AsRef<OsStr>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let name = name_cstring(name.as_ref());
        self.at(path.as_ref(), |_, rel| {
            let full = self.kernel_path(rel);
            let name = name?;
            match grow(|buf| sys::lgetxattr(&full, &name, buf)) {
                Ok(v) => Ok(Some(v)),
                Err(Errno::ENODATA) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Sets attribute `name` of `path` (created or replaced).
    pub fn set_xattr(
        &self,
        path: impl AsRef<Path>,
        name: impl AsRef<OsStr>,
        value: &[u8],
    ) -> Result<(), Error> {
        let name = name_cstring(name.as_ref());
        self.at(path.as_ref(), |_, rel| {
            sys::lsetxattr(&self.kernel_path(rel), &name?, value, 0)
        })
    }

    /// Removes attribute `name` of `path`.
    pub fn remove_xattr(
        &self,
        path: impl AsRef<Path>,
        name: impl AsRef<OsStr>,
    ) -> Result<(), Error> {
        let name = name_cstring(name.as_ref());
        self.at(path.as_ref(), |_, rel| {
            sys::lremovexattr(&self.kernel_path(rel), &name?)
        })
    }

    // -----------------------------------------------------------------------------------
    // Directories

    /// The entries of directory `path` (without `.` and `..`), read lazily.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Result<ReadDir<'_>, Error> {
        let (shown, fd) = self.open_in_root(path.as_ref(), b::O_RDONLY | b::O_DIRECTORY, 0)?;
        Ok(ReadDir {
            image: self,
            fd,
            dir: shown,
            pending: VecDeque::new(),
            buf: vec![0u8; 32 * 1024],
            done: false,
        })
    }

    /// Creates directory `path` with permission bits `mode` (less the umask, 022).
    pub fn create_dir(&self, path: impl AsRef<Path>, mode: u32) -> Result<(), Error> {
        self.at(path.as_ref(), |root, rel| sys::mkdirat(root, rel, mode))
    }

    /// Creates `path` and every missing parent (mode 0755); an existing directory is fine.
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = normalize(path.as_ref());
        let mut partial = PathBuf::from("/");
        for component in path.components().skip(1) {
            partial.push(component);
            match self.create_dir(&partial, 0o755) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(Errno::EEXIST) => {
                    if !self.metadata(&partial)?.is_dir() {
                        return Err(self.err(&partial, Errno::ENOTDIR));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes the empty directory `path`.
    pub fn remove_dir(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.at(path.as_ref(), |root, rel| {
            sys::unlinkat(root, rel, b::AT_REMOVEDIR as i32)
        })
    }

    /// Removes `path` and, if it is a directory, everything below it (symlinks are removed,
    /// never followed).
    pub fn remove_dir_all(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = normalize(path.as_ref());
        if !self.symlink_metadata(&path)?.is_dir() {
            return self.remove_file(&path);
        }
        let children: Vec<PathBuf> = self
            .read_dir(&path)?
            .map(|e| e.map(|e| e.path().to_path_buf()))
            .collect::<Result<_, _>>()?;
        for child in children {
            self.remove_dir_all(child)?;
        }
        self.remove_dir(&path)
    }

    // -----------------------------------------------------------------------------------
    // Names

    /// Removes the non-directory `path` (a symlink itself, not its target).
    pub fn remove_file(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.at(path.as_ref(), |root, rel| sys::unlinkat(root, rel, 0))
    }

    /// Renames `from` to `to`, replacing `to` if it exists (as `rename(2)`).
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<(), Error> {
        let (to_shown, to_rel) = self.resolve(to.as_ref())?;
        self.at(from.as_ref(), |root, rel| {
            sys::renameat2(root, rel, root, &to_rel, 0)
        })
        .map_err(|e| self.second_path(e, &to_shown))
    }

    /// Creates the symlink `link` pointing to `target` (stored as given).
    pub fn symlink(&self, target: impl AsRef<Path>, link: impl AsRef<Path>) -> Result<(), Error> {
        let target = sys::path_to_cstring(target.as_ref());
        self.at(link.as_ref(), |root, rel| {
            sys::symlinkat(&target?, root, rel)
        })
    }

    /// Makes `link` another name of `existing` (not following a symlink `existing`).
    pub fn hard_link(
        &self,
        existing: impl AsRef<Path>,
        link: impl AsRef<Path>,
    ) -> Result<(), Error> {
        let (link_shown, link_rel) = self.resolve(link.as_ref())?;
        self.at(existing.as_ref(), |root, rel| {
            sys::linkat(root, rel, root, &link_rel, 0)
        })
        .map_err(|e| self.second_path(e, &link_shown))
    }

    /// Creates a fifo, device node or socket node with permission bits `mode`.
    pub fn mknod(&self, path: impl AsRef<Path>, kind: NodeKind, mode: u32) -> Result<(), Error> {
        let (ifmt, dev) = match kind {
            NodeKind::Fifo => (b::S_IFIFO, 0),
            NodeKind::Socket => (b::S_IFSOCK, 0),
            NodeKind::CharDevice(d) => (b::S_IFCHR, d),
            NodeKind::BlockDevice(d) => (b::S_IFBLK, d),
        };
        self.at(path.as_ref(), |root, rel| {
            let dev = abi::host_dev_to_kernel(dev)?;
            sys::mknodat(root, rel, ifmt | (mode & 0o7777), dev)
        })
    }

    // -----------------------------------------------------------------------------------
    // Attributes

    /// Sets the permission bits (including setuid, setgid, sticky) of `path`, following
    /// symlinks (symlinks have no permissions of their own on Linux).
    pub fn set_permissions(&self, path: impl AsRef<Path>, mode: u32) -> Result<(), Error> {
        self.at(path.as_ref(), |root, rel| {
            sys::fchmodat(root, rel, mode & 0o7777)
        })
    }

    /// Sets the owner and/or group of `path` itself (a symlink is not followed; `None`
    /// leaves that one unchanged), like `lchown`.
    pub fn set_owner(
        &self,
        path: impl AsRef<Path>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), Error> {
        self.at(path.as_ref(), |root, rel| {
            sys::fchownat(
                root,
                rel,
                uid.unwrap_or(u32::MAX),
                gid.unwrap_or(u32::MAX),
                b::AT_SYMLINK_NOFOLLOW as i32,
            )
        })
    }

    /// Sets the access and modification times of `path` itself (a symlink is not followed).
    pub fn set_times(
        &self,
        path: impl AsRef<Path>,
        atime: SetTime,
        mtime: SetTime,
    ) -> Result<(), Error> {
        let times = abi::utimens_to_kernel(atime, mtime);
        self.at(path.as_ref(), |root, rel| {
            sys::utimensat(root, Some(rel), Some(&times), b::AT_SYMLINK_NOFOLLOW as i32)
        })
    }

    // -----------------------------------------------------------------------------------
    // Files

    /// Opens the file `path` for reading.
    pub fn open_file(&self, path: impl AsRef<Path>) -> Result<File<'_>, Error> {
        self.open_file_with(path, &FileOptions::new().read(true))
    }

    /// Creates (or truncates) the file `path` for writing, mode 0644.
    pub fn create_file(&self, path: impl AsRef<Path>) -> Result<File<'_>, Error> {
        self.open_file_with(
            path,
            &FileOptions::new().write(true).create(true).truncate(true),
        )
    }

    /// Opens the file `path` as `options` say.
    pub fn open_file_with(
        &self,
        path: impl AsRef<Path>,
        options: &FileOptions,
    ) -> Result<File<'_>, Error> {
        let (shown, fd) = self.open_in_root(path.as_ref(), options.flags(), options.mode)?;
        Ok(File::new(self, shown, fd))
    }

    // -----------------------------------------------------------------------------------
    // Lifetime

    /// Writes everything changed so far to the image file (`syncfs` and a device flush).
    pub fn sync(&self) -> Result<(), Error> {
        sys::syncfs(self.root()).map_err(|errno| self.err(Path::new("/"), errno))
    }

    /// Unmounts inside the kernel, flushes the image file and stops the kernel. After an
    /// error the image may miss recent changes (a journaling filesystem stays consistent).
    pub fn close(mut self) -> Result<(), Error> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        let Some(mount) = self.mount.take() else {
            return Ok(());
        };
        // The root descriptor pins the mount: let it go first.
        drop(self.root.take());
        let unmounted = mount.unmount().map_err(|e| Error::Close {
            image: self.image.clone(),
            message: e.to_string(),
        });
        if let Err(e) = self.kernel.halt() {
            tracing::warn!("{}: kernel halt: {e}", self.image.display());
        }
        unmounted
    }

    fn second_path(&self, e: Error, second: &Path) -> Error {
        // Name both paths: "a in img" alone would be misleading if `b` is the problem.
        match e {
            Error::Path { path, image, errno } => Error::Path {
                path: PathBuf::from(format!("{} -> {}", path.display(), second.display())),
                image,
                errno,
            },
            other => other,
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            tracing::error!("{e}");
        }
    }
}

/// Lexically resolves `.` and `..` (clamped at the root) into an absolute image path.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

fn name_cstring(name: &OsStr) -> Result<CString, Errno> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Calls a size-probing syscall (`*xattr`) with a growing buffer until the answer fits.
fn grow(mut call: impl FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 1024];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::ERANGE) if buf.len() < 1 << 21 => {
                // Ask for the size; it may grow again before the next call.
                let need = call(&mut [])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

fn statx(fd: impl lkl::AsKernelFd, rel: &CStr, flags: i32) -> Result<Metadata, Errno> {
    let mask = b::STATX_BASIC_STATS | b::STATX_BTIME;
    sys::statx(fd, rel, flags, mask).map(|st| Metadata { st })
}

fn open_error(image: &Path, e: &crate::virtio::block::BlockError) -> Error {
    use crate::virtio::block::BlockError;
    let (message, errno) = match e {
        BlockError::OpenImage { source, .. } => (
            crate::daemon::describe_io_error(source),
            source.raw_os_error().map(Errno::from_host),
        ),
        other => {
            // Texts of the block layer start with the image path; ours adds it.
            let text = other.to_string();
            let prefix = format!("{}: ", image.display());
            (
                text.strip_prefix(&prefix).unwrap_or(&text).to_string(),
                None,
            )
        }
    };
    Error::Open {
        image: image.to_path_buf(),
        message,
        errno,
    }
}

fn mount_message(e: &disk::MountError) -> String {
    match e {
        disk::MountError::Kernel { action, errno, .. } => format!("{action}: {}", describe(*errno)),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata

/// The attributes of a file inside the image (from `statx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    st: Statx,
}

impl Metadata {
    /// The inode type.
    pub fn file_type(&self) -> FileType {
        self.st.file_type()
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }

    /// Whether it is a symlink (only from [`Image::symlink_metadata`]).
    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    /// Type and permission bits in the host's `st_mode` form.
    pub fn mode(&self) -> u32 {
        self.file_type().to_host_mode() | self.permissions()
    }

    /// Permission bits, including setuid, setgid and sticky.
    pub fn permissions(&self) -> u32 {
        u32::from(self.st.perm())
    }

    /// Owner (numeric, as stored in the image).
    pub fn uid(&self) -> u32 {
        self.st.uid
    }

    /// Group (numeric, as stored in the image).
    pub fn gid(&self) -> u32 {
        self.st.gid
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.st.size
    }

    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.st.size == 0
    }

    /// Allocated space in 512-byte blocks (less than `len / 512` for a sparse file).
    pub fn blocks(&self) -> u64 {
        self.st.blocks
    }

    /// Number of hard links.
    pub fn nlink(&self) -> u32 {
        self.st.nlink
    }

    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.st.ino
    }

    /// Device number of a device node (host `dev_t` form).
    pub fn rdev(&self) -> u64 {
        self.st.rdev()
    }

    /// Last access.
    pub fn accessed(&self) -> Timestamp {
        self.st.atime
    }

    /// Last modification.
    pub fn modified(&self) -> Timestamp {
        self.st.mtime
    }

    /// Last status change.
    pub fn changed(&self) -> Timestamp {
        self.st.ctime
    }

    /// Creation, if the filesystem records it.
    pub fn created(&self) -> Option<Timestamp> {
        (self.st.mask & b::STATX_BTIME != 0).then_some(self.st.btime)
    }

    /// Last modification as a `SystemTime`.
    pub fn modified_system_time(&self) -> SystemTime {
        self.st.mtime.to_system_time()
    }

    /// Everything `statx` said.
    pub fn statx(&self) -> &Statx {
        &self.st
    }
}

// ---------------------------------------------------------------------------------------------
// Directory listings

/// One entry of [`Image::read_dir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    path: PathBuf,
    ino: u64,
    file_type: FileType,
}

impl DirEntry {
    /// The entry's full path inside the image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry's name.
    pub fn file_name(&self) -> &OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The type the directory records ([`FileType::Unknown`] on some filesystems: ask
    /// [`Image::symlink_metadata`] then).
    pub fn file_type(&self) -> FileType {
        self.file_type
    }
}

/// Iterator over a directory's entries; see [`Image::read_dir`].
#[derive(Debug)]
pub struct ReadDir<'a> {
    image: &'a Image,
    fd: KernelFd,
    dir: PathBuf,
    pending: VecDeque<DirEntry>,
    buf: Vec<u8>,
    done: bool,
}

impl ReadDir<'_> {
    fn fill(&mut self) -> Result<(), Error> {
        let n = sys::getdents64(&self.fd, &mut self.buf)
            .map_err(|errno| self.image.err(&self.dir, errno))?;
        if n == 0 {
            self.done = true;
            return Ok(());
        }
        for dirent in abi::dirents(&self.buf[..n]) {
            let dirent = dirent.map_err(|errno| self.image.err(&self.dir, errno))?;
            let name = dirent.name.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            self.pending.push_back(DirEntry {
                path: self.dir.join(OsStr::from_bytes(name)),
                ino: dirent.ino,
                file_type: dirent.file_type(),
            });
        }
        Ok(())
    }
}

impl Iterator for ReadDir<'_> {
    type Item = Result<DirEntry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pending.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.pending.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_image() {
        assert_eq!(normalize(Path::new("etc/passwd")), Path::new("/etc/passwd"));
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(normalize(Path::new("../../x")), Path::new("/x"));
        assert_eq!(normalize(Path::new("")), Path::new("/"));
    }

    #[test]
    fn options_default_to_64_mib_read_write() {
        let o = OpenOptions::default();
        assert!(!o.read_only);
        assert_eq!(o.memory_mib, 64);
        assert!(OpenOptions::read_only().read_only);
    }

    #[test]
    fn missing_image_is_an_open_error() {
        let e = Image::open("/nonexistent/disk.img", &OpenOptions::read_only())
            .expect_err("no such image");
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        assert!(e.to_string().starts_with("/nonexistent/disk.img: "), "{e}");
    }

    #[test]
    fn grow_retries_with_the_size_asked_for() {
        let value = vec![7u8; 3000];
        let got = grow(|buf| {
            if buf.is_empty() {
                Ok(value.len())
            } else if buf.len() < value.len() {
                Err(Errno::ERANGE)
            } else {
                buf[..value.len()].copy_from_slice(&value);
                Ok(value.len())
            }
        });
        assert_eq!(got, Ok(value));
    }
}
