//! `cptofs`: host files and trees into the image.
//!
//! Each entry is created with restrictive permissions, filled, then given its metadata:
//! xattrs (ACLs included) first, then owner (which may clear setuid bits), then mode, then
//! times — a directory's times last of all, after its children changed its mtime.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{host, unsupported, DstKind, Error, Interrupt, Progress, Warned, CHUNK};
use crate::image::{self, FileOptions, Image, NodeKind, SetTime, Timestamp};
use crate::lkl::Errno;

/// What to keep and add.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep owners, modes, times, xattrs and ACLs (`-a`).
    pub archive: bool,
    /// SELinux context to set on every entry copied in (`-s`).
    pub selinux: Option<String>,
}

/// Copies `sources` (host paths) to `dst` (inside the image) with `cp` semantics.
pub fn copy(
    image: &Image,
    sources: &[PathBuf],
    dst: &Path,
    options: &Options,
    progress: &mut Progress,
    interrupt: &Interrupt,
) -> Result<(), Error> {
    let kind = match image.metadata(dst) {
        Ok(m) if m.is_dir() => DstKind::Dir,
        Ok(_) => DstKind::Other,
        Err(e) if e.errno() == Some(Errno::ENOENT) => DstKind::Missing,
        Err(e) => return Err(e.into()),
    };
    let targets = super::destinations(sources, dst, kind)?;
    if progress.wants_totals() {
        let (bytes, files) = sources
            .iter()
            .fold((0, 0), |(b, f), s| add(totals(s), (b, f)));
        progress.set_totals(bytes, files);
    }
    let mut copier = Copier {
        image,
        options,
        progress,
        interrupt,
        links: HashMap::new(),
        warned: Warned::default(),
        buf: vec![0u8; CHUNK],
    };
    for (src, target) in sources.iter().zip(&targets) {
        copier.entry(src, target)?;
    }
    copier.progress.finish();
    Ok(())
}

/// Checks that every source exists before the image is touched.
pub fn check_sources(sources: &[PathBuf]) -> Result<(), Error> {
    for src in sources {
        fs::symlink_metadata(src).map_err(Error::host(src))?;
    }
    Ok(())
}

fn add(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0 + b.0, a.1 + b.1)
}

/// Bytes and entries below `path` (for the progress bar; errors count as nothing).
fn totals(path: &Path) -> (u64, u64) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if !meta.is_dir() {
        return (if meta.is_file() { meta.len() } else { 0 }, 1);
    }
    let children = fs::read_dir(path).into_iter().flatten().flatten();
    children.fold((0, 1), |acc, child| add(acc, totals(&child.path())))
}

struct Copier<'a, 'p> {
    image: &'a Image,
    options: &'a Options,
    progress: &'p mut Progress,
    interrupt: &'a Interrupt,
    /// (dev, ino) of multiply-linked sources → their first copy in the image.
    links: HashMap<(u64, u64), PathBuf>,
    warned: Warned,
    buf: Vec<u8>,
}

impl Copier<'_, '_> {
    /// Maps an image error while copying `src`: a full filesystem becomes the one clear
    /// message, anything else keeps the image path that failed.
    fn fail(&self, src: &Path) -> impl Fn(image::Error) -> Error + '_ {
        let src = src.to_path_buf();
        move |e| {
            if e.is_no_space() {
                Error::NoSpace {
                    image: self.image.image_path().to_path_buf(),
                    what: src.clone(),
                }
            } else {
                Error::Image(e)
            }
        }
    }

    fn entry(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        self.interrupt.check()?;
        let meta = fs::symlink_metadata(src).map_err(Error::host(src))?;
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                self.image.hard_link(first, dst).map_err(self.fail(src))?;
                self.progress.entry(dst);
                return Ok(());
            }
            self.links.insert(key, dst.to_path_buf());
        }
        let perm = meta.mode() & 0o7777;
        if ft.is_dir() {
            self.dir(src, dst)?;
        } else if ft.is_file() {
            self.file(src, dst, &meta)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(Error::host(src))?;
            self.image.symlink(&target, dst).map_err(self.fail(src))?;
        } else {
            let kind = if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_char_device() {
                NodeKind::CharDevice(meta.rdev())
            } else if ft.is_block_device() {
                NodeKind::BlockDevice(meta.rdev())
            } else {
                NodeKind::Socket
            };
            self.image
                .mknod(dst, kind, perm & 0o777)
                .map_err(self.fail(src))?;
        }
        self.metadata(src, dst, &meta)?;
        self.progress.entry(dst);
        Ok(())
    }

    fn dir(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        match self.image.create_dir(dst, 0o700) {
            Ok(()) => {}
            // Merging into an existing directory, as cp does.
            Err(e)
                if e.errno() == Some(Errno::EEXIST)
                    && self.image.metadata(dst).is_ok_and(|m| m.is_dir()) => {}
            Err(e) => return Err(self.fail(src)(e)),
        }
        let mut names: Vec<OsString> = fs::read_dir(src)
            .map_err(Error::host(src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(Error::host(src))?;
        // A stable order: hard links resolve the same way on every run.
        names.sort();
        for name in names {
            self.entry(&src.join(&name), &dst.join(&name))?;
        }
        Ok(())
    }

    fn file(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        let input = fs::File::open(src).map_err(Error::host(src))?;
        let output = self
            .image
            .open_file_with(
                dst,
                &FileOptions::new().write(true).create_new(true).mode(0o600),
            )
            .map_err(self.fail(src))?;
        let size = meta.len();
        // Only a file with fewer blocks than its size can have holes worth looking for.
        let sparse = meta.blocks() * 512 < size;
        let mut pos = 0;
        while pos < size {
            let (start, end) = if sparse {
                match host::seek_data(&input, pos).map_err(Error::host(src))? {
                    None => break,
                    Some(start) => (
                        start,
                        host::seek_hole(&input, start).map_err(Error::host(src))?,
                    ),
                }
            } else {
                (pos, size)
            };
            let mut at = start;
            while at < end {
                self.interrupt.check()?;
                let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
                let n = input
                    .read_at(&mut self.buf[..want], at)
                    .map_err(Error::host(src))?;
                if n == 0 {
                    break; // the source shrank meanwhile
                }
                output
                    .write_all_at(&self.buf[..n], at)
                    .map_err(self.fail(src))?;
                self.progress.bytes(n as u64);
                at += n as u64;
            }
            pos = end.max(start + 1);
        }
        // Trailing holes: the size is set, the blocks stay unallocated.
        output.set_len(size).map_err(self.fail(src))?;
        Ok(())
    }

    fn metadata(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        let is_symlink = meta.file_type().is_symlink();
        if self.options.archive {
            self.xattrs(src, dst)?;
            match self
                .image
                .set_owner(dst, Some(meta.uid()), Some(meta.gid()))
            {
                Ok(()) => {}
                Err(e) if unsupported(e.errno()) => self.warned.once("owners", e),
                Err(e) => return Err(self.fail(src)(e)),
            }
        }
        if !is_symlink {
            let mode = if self.options.archive {
                meta.mode() & 0o7777
            } else {
                // As cp without -p: the source's permissions less the usual umask.
                meta.mode() & 0o777 & !0o022
            };
            match self.image.set_permissions(dst, mode) {
                Ok(()) => {}
                Err(e) if unsupported(e.errno()) => self.warned.once("modes", e),
                Err(e) => return Err(self.fail(src)(e)),
            }
        }
        if let Some(context) = &self.options.selinux {
            match self
                .image
                .set_xattr(dst, "security.selinux", context.as_bytes())
            {
                Ok(()) => {}
                Err(e) if unsupported(e.errno()) => self.warned.once("SELinux labels", e),
                Err(e) => return Err(self.fail(src)(e)),
            }
        }
        if self.options.archive {
            let atime = Timestamp::new(meta.atime(), meta.atime_nsec()).unwrap_or_default();
            let mtime = Timestamp::new(meta.mtime(), meta.mtime_nsec()).unwrap_or_default();
            match self
                .image
                .set_times(dst, SetTime::At(atime), SetTime::At(mtime))
            {
                Ok(()) => {}
                Err(e) if unsupported(e.errno()) => self.warned.once("times", e),
                Err(e) => return Err(self.fail(src)(e)),
            }
        }
        Ok(())
    }

    fn xattrs(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        let names = match host::list_xattrs(src) {
            Ok(names) => names,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(Error::host(src)(e)),
        };
        for name in names.into_iter().filter(|n| !super::is_alias_xattr(n)) {
            let Some(value) = host::get_xattr(src, &name).map_err(Error::host(src))? else {
                continue;
            };
            match self.image.set_xattr(dst, &name, &value) {
                Ok(()) => {}
                Err(e) if e.is_no_space() => return Err(self.fail(src)(e)),
                Err(e) if unsupported(e.errno()) => self.warned.once("extended attributes", e),
                Err(e) => return Err(self.fail(src)(e)),
            }
        }
        Ok(())
    }
}
