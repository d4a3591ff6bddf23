//! `fs2tar`: a tree inside the image as a pax (POSIX.1-2001) tar stream.
//!
//! Each entry is a ustar header preceded, when needed, by a pax extended header with:
//! `mtime`/`atime`/`ctime` with nanoseconds, `uid`/`gid` beyond the ustar range, `path` and
//! `linkpath` too long for ustar, and every extended attribute as `SCHILY.xattr.NAME` (ACLs
//! are the `system.posix_acl_*` attributes, in the kernel's binary form, as GNU tar's
//! `--xattrs` stores them). Names are `./` and `relative/path` (`tar -C DIR .` writes `./relative/path`; readers treat both alike).
//!
//! Hard links: the first name carries the data, later ones are link entries. Sparse files
//! are streamed with their holes as zeros (read from nothing, not from the kernel), in
//! chunks: memory stays bounded whatever the size, but the archive is not sparse (the GNU
//! sparse format is not written).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{Error, Interrupt, Progress, CHUNK};
use crate::image::{File, FileType, Image, Metadata, Timestamp};

/// Writes the tree below `subdir` of the image to `out` as a tar archive.
pub fn write<W: Write>(
    image: &Image,
    subdir: &Path,
    out: W,
    progress: &mut Progress,
    interrupt: &Interrupt,
) -> Result<(), Error> {
    let root = image.metadata(subdir)?;
    if !root.is_dir() {
        return Err(Error::Invalid(format!(
            "{} in {}: not a directory",
            subdir.display(),
            image.image_path().display()
        )));
    }
    if progress.wants_totals() {
        let (bytes, files) = super::copy_out::image_totals(image, subdir);
        progress.set_totals(bytes, files);
    }
    let mut writer = Writer {
        image,
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        progress,
        interrupt,
    };
    writer.entry(subdir, Path::new("."))?;
    writer.builder.finish().map_err(|e| writer.out_err(e))?;
    writer
        .builder
        .get_mut()
        .flush()
        .map_err(|e| writer.out_err(e))?;
    writer.progress.finish();
    Ok(())
}

struct Writer<'a, 'p, W: Write> {
    image: &'a Image,
    builder: tar::Builder<W>,
    /// Inode → archive name of the first link seen.
    links: HashMap<u64, PathBuf>,
    progress: &'p mut Progress,
    interrupt: &'a Interrupt,
}

impl<W: Write> Writer<'_, '_, W> {
    fn out_err(&self, e: io::Error) -> Error {
        if let Err(interrupted) = self.interrupt.check() {
            return interrupted;
        }
        Error::Host {
            path: PathBuf::from("tar output"),
            source: e,
        }
    }

    fn entry(&mut self, path: &Path, name: &Path) -> Result<(), Error> {
        self.interrupt.check()?;
        let meta = self.image.symlink_metadata(path)?;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut header = Header::new_ustar();
        header.set_mode(meta.permissions());
        set_owner(&mut header, &mut pax, &meta);
        set_times(&mut header, &mut pax, &meta);
        header.set_size(0);
        let names = self.image.xattrs(path)?;
        for xattr in names.into_iter().filter(|n| !super::is_alias_xattr(n)) {
            if let Some(value) = self.image.get_xattr(path, &xattr)? {
                pax.push((format!("SCHILY.xattr.{}", xattr.to_string_lossy()), value));
            }
        }
        let archive_name = if meta.is_dir() {
            // A trailing slash marks directories, as GNU tar writes them.
            let mut s = name.as_os_str().to_os_string();
            s.push("/");
            PathBuf::from(s)
        } else {
            name.to_path_buf()
        };
        set_name(&mut header, &mut pax, &archive_name, "path");

        if !meta.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&meta.ino()).cloned() {
                header.set_entry_type(EntryType::Link);
                set_link(&mut header, &mut pax, &first);
                return self.append(header, pax, io::empty(), name);
            }
            self.links.insert(meta.ino(), name.to_path_buf());
        }
        match meta.file_type() {
            FileType::Directory => {
                header.set_entry_type(EntryType::Directory);
                self.append(header, pax, io::empty(), name)?;
                let mut children: Vec<PathBuf> = self
                    .image
                    .read_dir(path)?
                    .map(|e| e.map(|e| e.path().to_path_buf()))
                    .collect::<Result<_, _>>()?;
                children.sort();
                for child in children {
                    // tar drops a leading "./"; link targets must match the stored names.
                    let child_name = if name == Path::new(".") {
                        PathBuf::from(child.file_name().unwrap_or_default())
                    } else {
                        name.join(child.file_name().unwrap_or_default())
                    };
                    self.entry(&child, &child_name)?;
                }
                Ok(())
            }
            FileType::RegularFile => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(meta.len());
                let file = self.image.open_file(path)?;
                self.append_file(header, pax, &file, meta.len(), name)
            }
            FileType::Symlink => {
                header.set_entry_type(EntryType::Symlink);
                let target = self.image.read_link(path)?;
                set_link(&mut header, &mut pax, &target);
                self.append(header, pax, io::empty(), name)
            }
            FileType::CharDevice | FileType::BlockDevice => {
                header.set_entry_type(if meta.file_type() == FileType::CharDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                let st = meta.statx();
                header
                    .set_device_major(st.rdev_major)
                    .and_then(|()| header.set_device_minor(st.rdev_minor))
                    .map_err(|e| self.out_err(e))?;
                self.append(header, pax, io::empty(), name)
            }
            FileType::NamedPipe => {
                header.set_entry_type(EntryType::Fifo);
                self.append(header, pax, io::empty(), name)
            }
            FileType::Socket | FileType::Unknown => {
                // tar has no socket entries; GNU tar skips them too.
                tracing::warn!("{}: socket or unknown type skipped", path.display());
                Ok(())
            }
        }
    }

    fn append(
        &mut self,
        mut header: Header,
        pax: Vec<(String, Vec<u8>)>,
        data: impl Read,
        name: &Path,
    ) -> Result<(), Error> {
        self.write_pax(&pax)?;
        header.set_cksum();
        self.builder
            .append(&header, data)
            .map_err(|e| self.out_err(e))?;
        self.progress.entry(name);
        Ok(())
    }

    fn append_file(
        &mut self,
        mut header: Header,
        pax: Vec<(String, Vec<u8>)>,
        file: &File<'_>,
        size: u64,
        name: &Path,
    ) -> Result<(), Error> {
        self.write_pax(&pax)?;
        header.set_cksum();
        let mut data = SparseReader {
            file,
            pos: 0,
            size,
            region_end: 0,
            in_hole: false,
            error: None,
            interrupt: self.interrupt,
            progress: &*self.progress,
        };
        let written = self.builder.append(&header, &mut data);
        // An image or interrupt error inside the reader is the real cause.
        if let Some(e) = data.error.take() {
            return Err(e);
        }
        written.map_err(|e| self.out_err(e))?;
        self.progress.entry(name);
        Ok(())
    }

    fn write_pax(&mut self, pax: &[(String, Vec<u8>)]) -> Result<(), Error> {
        if pax.is_empty() {
            return Ok(());
        }
        let records = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        self.builder
            .append_pax_extensions(records)
            .map_err(|e| self.out_err(e))
    }
}

/// Largest value of an 8-byte octal ustar field (uid, gid).
const USTAR_ID_MAX: u32 = 0o7777777;

fn set_owner(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, meta: &Metadata) {
    for (key, id) in [("uid", meta.uid()), ("gid", meta.gid())] {
        let fits = id <= USTAR_ID_MAX;
        let stored = if fits { id } else { 0 };
        if key == "uid" {
            header.set_uid(u64::from(stored));
        } else {
            header.set_gid(u64::from(stored));
        }
        if !fits {
            pax.push((key.into(), id.to_string().into_bytes()));
        }
    }
}

fn pax_time(t: Timestamp) -> Vec<u8> {
    let mut s = if t.sec < 0 && t.nsec > 0 {
        // pax times are decimal: -1.25 is 1.25 s before the epoch.
        let whole = -(t.sec + 1);
        format!("-{whole}.{:09}", 1_000_000_000 - t.nsec)
    } else {
        format!("{}.{:09}", t.sec, t.nsec)
    };
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s.into_bytes()
}

fn set_times(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, meta: &Metadata) {
    let mtime = meta.modified();
    // ustar holds 11 octal digits of non-negative seconds; pax carries the exact value.
    header.set_mtime(u64::try_from(mtime.sec).unwrap_or(0).min(0o77777777777));
    pax.push(("mtime".into(), pax_time(mtime)));
    pax.push(("atime".into(), pax_time(meta.accessed())));
    pax.push(("ctime".into(), pax_time(meta.changed())));
}

fn set_name(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, name: &Path, key: &str) {
    if name.as_os_str().len() <= 100 && header.set_path(name).is_ok() {
        return;
    }
    // ustar cannot hold it: readers take the pax record; the header keeps a placeholder.
    use std::os::unix::ffi::OsStrExt;
    pax.push((key.into(), name.as_os_str().as_bytes().to_vec()));
    let _ = header.set_path("pax-long-name");
}

fn set_link(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, target: &Path) {
    if target.as_os_str().len() <= 100 && header.set_link_name(target).is_ok() {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    pax.push(("linkpath".into(), target.as_os_str().as_bytes().to_vec()));
    let _ = header.set_link_name("pax-long-link");
}

/// Reads a file inside the image for the archive: data regions through the kernel, holes
/// as zeros made here, always exactly `size` bytes (a file that shrank meanwhile is padded).
struct SparseReader<'a, 'i> {
    file: &'a File<'i>,
    pos: u64,
    size: u64,
    /// End of the current data or hole region.
    region_end: u64,
    in_hole: bool,
    /// The real error behind an `io::Error` handed to the tar builder.
    error: Option<Error>,
    interrupt: &'a Interrupt,
    progress: &'a Progress,
}

impl SparseReader<'_, '_> {
    fn next_region(&mut self) -> Result<(), Error> {
        match self.file.seek_data(self.pos)? {
            None => {
                self.in_hole = true;
                self.region_end = self.size;
            }
            Some(start) if start > self.pos => {
                self.in_hole = true;
                self.region_end = start.min(self.size);
            }
            Some(_) => {
                self.in_hole = false;
                self.region_end = self.file.seek_hole(self.pos)?.min(self.size);
            }
        }
        if self.region_end <= self.pos {
            // No progress possible (a racing truncate): treat the rest as data.
            self.in_hole = false;
            self.region_end = self.size;
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        self.interrupt.check()?;
        if self.pos >= self.region_end {
            self.next_region()?;
        }
        let want = usize::try_from(self.region_end - self.pos)
            .unwrap_or(CHUNK)
            .min(buf.len())
            .min(CHUNK);
        let n = if self.in_hole {
            buf[..want].fill(0);
            want
        } else {
            match self.file.read_at(&mut buf[..want], self.pos)? {
                0 => {
                    // The file shrank: pad with zeros so the archive stays well-formed.
                    tracing::warn!("{}: file shrank while archived", self.file.path().display());
                    self.in_hole = true;
                    self.region_end = self.size;
                    buf[..want].fill(0);
                    want
                }
                n => n,
            }
        };
        self.pos += n as u64;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

impl Read for SparseReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill(buf).map_err(|e| {
            let text = e.to_string();
            self.error = Some(e);
            io::Error::other(text)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_are_decimal_seconds() {
        assert_eq!(pax_time(Timestamp { sec: 5, nsec: 0 }), b"5");
        assert_eq!(
            pax_time(Timestamp {
                sec: 1_600_000_000,
                nsec: 123_456_789
            }),
            b"1600000000.123456789"
        );
        assert_eq!(
            pax_time(Timestamp {
                sec: 7,
                nsec: 500_000_000
            }),
            b"7.5"
        );
        assert_eq!(
            pax_time(Timestamp {
                sec: -2,
                nsec: 750_000_000
            }),
            b"-1.25"
        );
    }

    #[test]
    fn long_names_go_to_pax() {
        let mut header = Header::new_ustar();
        let mut pax = Vec::new();
        let long = PathBuf::from(format!("./{}", "x".repeat(300)));
        set_name(&mut header, &mut pax, &long, "path");
        assert_eq!(pax.len(), 1);
        assert_eq!(pax[0].0, "path");
        let mut pax = Vec::new();
        set_name(&mut header, &mut pax, Path::new("./short"), "path");
        assert!(pax.is_empty());
    }
}
