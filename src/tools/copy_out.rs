//! `cpfromfs`: files and trees from the image to the host, in the same order of steps as
//! [`copy_in`](super::copy_in): create, fill (data extents only), xattrs, owner, mode, times.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{host, DstKind, Error, Interrupt, Progress, Warned, CHUNK};
use crate::image::{FileType, Image, Metadata};
use crate::lkl::Errno;

/// What to keep.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep owners, modes, times, xattrs and ACLs (`-a`).
    pub archive: bool,
}

/// Copies `sources` (inside the image) to `dst` (on the host) with `cp` semantics.
pub fn copy(
    image: &Image,
    sources: &[PathBuf],
    dst: &Path,
    options: &Options,
    progress: &mut Progress,
    interrupt: &Interrupt,
) -> Result<(), Error> {
    for src in sources {
        image.symlink_metadata(src)?;
    }
    let kind = match fs::metadata(dst) {
        Ok(m) if m.is_dir() => DstKind::Dir,
        Ok(_) => DstKind::Other,
        Err(e) if e.kind() == io::ErrorKind::NotFound => DstKind::Missing,
        Err(e) => return Err(Error::host(dst)(e)),
    };
    let targets = super::destinations(sources, dst, kind)?;
    if progress.wants_totals() {
        let (mut bytes, mut files) = (0, 0);
        for src in sources {
            let (b, f) = image_totals(image, src);
            bytes += b;
            files += f;
        }
        progress.set_totals(bytes, files);
    }
    let mut copier = Copier {
        image,
        archive: options.archive,
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

/// Bytes and entries below `path` inside the image (for the progress bar).
pub fn image_totals(image: &Image, path: &Path) -> (u64, u64) {
    let Ok(meta) = image.symlink_metadata(path) else {
        return (0, 0);
    };
    if !meta.is_dir() {
        return (if meta.is_file() { meta.len() } else { 0 }, 1);
    }
    let Ok(entries) = image.read_dir(path) else {
        return (0, 1);
    };
    entries.flatten().fold((0, 1), |(b, f), e| {
        let (cb, cf) = image_totals(image, e.path());
        (b + cb, f + cf)
    })
}

struct Copier<'a, 'p> {
    image: &'a Image,
    archive: bool,
    progress: &'p mut Progress,
    interrupt: &'a Interrupt,
    /// Inode numbers of multiply-linked sources → their first copy on the host.
    links: HashMap<u64, PathBuf>,
    warned: Warned,
    buf: Vec<u8>,
}

impl Copier<'_, '_> {
    fn entry(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        self.interrupt.check()?;
        let meta = self.image.symlink_metadata(src)?;
        if !meta.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&meta.ino()) {
                fs::hard_link(first, dst).map_err(Error::host(dst))?;
                self.progress.entry(dst);
                return Ok(());
            }
            self.links.insert(meta.ino(), dst.to_path_buf());
        }
        match meta.file_type() {
            FileType::Directory => self.dir(src, dst)?,
            FileType::RegularFile => self.file(src, dst, &meta)?,
            FileType::Symlink => {
                let target = self.image.read_link(src)?;
                std::os::unix::fs::symlink(target, dst).map_err(Error::host(dst))?;
            }
            other => {
                let mode = other.to_host_mode() | (meta.permissions() & 0o777);
                host::mknod(dst, mode, meta.rdev()).map_err(Error::host(dst))?;
            }
        }
        self.metadata(src, dst, &meta)?;
        self.progress.entry(dst);
        Ok(())
    }

    fn dir(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        match fs::DirBuilder::new().mode(0o700).create(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(Error::host(dst)(e)),
        }
        let mut children: Vec<PathBuf> = self
            .image
            .read_dir(src)?
            .map(|e| e.map(|e| e.path().to_path_buf()))
            .collect::<Result<_, _>>()?;
        children.sort();
        for child in children {
            let name = child.file_name().unwrap_or_default().to_os_string();
            self.entry(&child, &dst.join(name))?;
        }
        Ok(())
    }

    fn file(&mut self, src: &Path, dst: &Path, meta: &Metadata) -> Result<(), Error> {
        let input = self.image.open_file(src)?;
        let output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(Error::host(dst))?;
        let size = meta.len();
        let sparse = meta.blocks() * 512 < size;
        let mut pos = 0;
        while pos < size {
            let (start, end) = if sparse {
                match input.seek_data(pos)? {
                    None => break,
                    Some(start) => (start, input.seek_hole(start)?),
                }
            } else {
                (pos, size)
            };
            let mut at = start;
            while at < end {
                self.interrupt.check()?;
                let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
                let n = input.read_at(&mut self.buf[..want], at)?;
                if n == 0 {
                    break;
                }
                output
                    .write_all_at(&self.buf[..n], at)
                    .map_err(Error::host(dst))?;
                self.progress.bytes(n as u64);
                at += n as u64;
            }
            pos = end.max(start + 1);
        }
        output.set_len(size).map_err(Error::host(dst))?;
        Ok(())
    }

    fn metadata(&mut self, src: &Path, dst: &Path, meta: &Metadata) -> Result<(), Error> {
        let is_symlink = meta.is_symlink();
        if self.archive {
            let names = self.image.xattrs(src)?;
            for name in names.into_iter().filter(|n| !super::is_alias_xattr(n)) {
                let Some(value) = self.image.get_xattr(src, &name)? else {
                    continue;
                };
                match host::set_xattr(dst, &name, &value) {
                    Ok(()) => {}
                    Err(e) if host_unsupported(&e) => {
                        self.warned.once("extended attributes", describe(&e))
                    }
                    Err(e) => return Err(Error::host(dst)(e)),
                }
            }
            match std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())) {
                Ok(()) => {}
                Err(e) if host_unsupported(&e) => self.warned.once("owners", describe(&e)),
                Err(e) => return Err(Error::host(dst)(e)),
            }
        }
        if !is_symlink {
            let mode = if self.archive {
                meta.permissions()
            } else {
                meta.permissions() & 0o777 & !0o022
            };
            fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(Error::host(dst))?;
        }
        if self.archive {
            host::set_times(dst, meta.accessed(), meta.modified()).map_err(Error::host(dst))?;
        }
        Ok(())
    }
}

fn host_unsupported(e: &io::Error) -> bool {
    let errno = e.raw_os_error().map(Errno::from_host);
    super::unsupported(errno)
}

fn describe(e: &io::Error) -> String {
    crate::daemon::describe_io_error(e)
}
