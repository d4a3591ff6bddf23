//! `fs2tar`: a tree inside the image as a pax (POSIX.1-2001) tar stream.
//!
//! Each entry is a ustar header preceded, when needed, by a pax extended header with:
//! `mtime`/`atime`/`ctime` with nanoseconds, `uid`/`gid` beyond the ustar range, `path` and
//! `linkpath` too long for ustar, and every extended attribute as `SCHILY.xattr.NAME` (ACLs
//! are the `system.posix_acl_*` attributes, in the kernel's binary form, as GNU tar's
//! `--xattrs` stores them). Names are `./` and `relative/path` (`tar -C DIR .` writes `./relative/path`; readers treat both alike).
//!
//! Hard links: the first name carries the data, later ones are link entries.
//!
//! Sparse files (fewer blocks allocated than the size holds, and a hole found with
//! `SEEK_DATA`/`SEEK_HOLE`) are written as GNU tar writes them with `--sparse`: the
//! **PAX sparse format 1.0** (GNU tar manual, "Sparse Formats"). The pax header carries
//! `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name=<real name>` and
//! `GNU.sparse.realsize=<size>` (and no `path`); the ustar name is
//! `<dir>/GNUSparseFile.0/<base>` cut to 100 bytes (GNU tar puts its process id where the
//! `0` is; a constant keeps archives reproducible), so that readers without sparse support
//! extract the condensed data aside instead of over the real name. The entry's data is the
//! map in decimal, one number a line (the number of regions, then offset and length of
//! each), NUL-padded to a 512-byte block, followed by the data regions back to back. The
//! map ends with a `(size, 0)` region, as from GNU tar (the same map, region for region),
//! which makes an extracted file that ends in a hole full size. The map is found in a first pass and kept as `(offset,
//! length)` pairs (16 bytes a region); its text and the data are streamed in chunks, so
//! memory stays bounded whatever the size. Files without holes are ordinary entries.

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
                let size = meta.len();
                let file = self.image.open_file(path)?;
                // Fewer blocks than the size needs is the cheap hint; the map decides.
                let map = if meta.blocks().saturating_mul(512) < size {
                    data_map(&file, size, self.interrupt)?
                } else {
                    None
                };
                match map {
                    Some(map) => {
                        set_sparse(&mut header, &mut pax, name, size);
                        self.append_sparse(header, pax, &file, map, name)
                    }
                    None => {
                        header.set_size(size);
                        self.append_file(header, pax, &file, size, name)
                    }
                }
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

    /// A file with holes in the PAX sparse format 1.0 (the header is ready but for its size).
    fn append_sparse(
        &mut self,
        mut header: Header,
        pax: Vec<(String, Vec<u8>)>,
        file: &File<'_>,
        map: Vec<(u64, u64)>,
        name: &Path,
    ) -> Result<(), Error> {
        let map_len = map_text_len(&map);
        let data_len: u64 = map.iter().map(|&(_, len)| len).sum();
        header.set_size(map_len.next_multiple_of(BLOCK) + data_len);
        self.write_pax(&pax)?;
        header.set_cksum();
        let mut data = PaxSparseReader {
            file,
            text: format!("{}\n", map.len()).into_bytes(),
            text_pos: 0,
            rendered: 0,
            padding: map_len.next_multiple_of(BLOCK) - map_len,
            map,
            region: 0,
            region_pos: 0,
            done: 0,
            shrank: false,
            error: None,
            interrupt: self.interrupt,
            progress: &*self.progress,
        };
        let written = self.builder.append(&header, &mut data);
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

/// A symlink's target goes in byte for byte (`set_link_name` would normalise `/` to `//` and
/// drop `.` components; a link's target is data, not a path of the archive).
fn set_link(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, target: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_os_str().as_bytes();
    if bytes.len() <= 100 && header.set_link_name_literal(bytes).is_ok() {
        return;
    }
    pax.push(("linkpath".into(), bytes.to_vec()));
    let _ = header.set_link_name("pax-long-link");
}

/// The tar block size.
const BLOCK: u64 = 512;

/// The data regions of a file as GNU tar's sparse map: `(offset, length)` in order, and a
/// last `(size, 0)` (as GNU tar writes it; its extraction truncates the file there, which
/// gives a file ending in a hole its size). `None` when the file turns out to have no hole.
fn data_map(
    file: &File<'_>,
    size: u64,
    interrupt: &Interrupt,
) -> Result<Option<Vec<(u64, u64)>>, Error> {
    let mut map = Vec::new();
    let mut pos = 0;
    while pos < size {
        if map.len() % 4096 == 0 {
            interrupt.check()?;
        }
        let start = match file.seek_data(pos)? {
            Some(start) if start < size => start.max(pos),
            _ => break,
        };
        let end = file.seek_hole(start)?.min(size);
        if end <= start {
            // No progress possible (a racing truncate): the rest counts as data.
            map.push((start, size - start));
            break;
        }
        map.push((start, end - start));
        pos = end;
    }
    if map.as_slice() == [(0, size)] {
        return Ok(None);
    }
    // GNU tar ends every map so (its scan stops at the failing SEEK_DATA at the end).
    map.push((size, 0));
    Ok(Some(map))
}

/// Decimal digits of `n`.
fn digits(n: u64) -> u64 {
    u64::from(n.checked_ilog10().unwrap_or(0)) + 1
}

/// Bytes of the sparse map's text, before its padding to a block.
fn map_text_len(map: &[(u64, u64)]) -> u64 {
    let entries: u64 = map
        .iter()
        .map(|&(off, len)| digits(off) + digits(len) + 2)
        .sum();
    digits(map.len() as u64) + 1 + entries
}

/// Sets up a header for the PAX sparse format 1.0: the `GNU.sparse.*` records first (as
/// GNU tar orders them), no `path` record (the real name is `GNU.sparse.name`), and GNU
/// tar's `%d/GNUSparseFile.%p/%f` as the ustar name, with 0 for `%p`, cut to 100 bytes.
fn set_sparse(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, name: &Path, size: u64) {
    use std::os::unix::ffi::OsStrExt;
    pax.retain(|(key, _)| key != "path");
    let records = [
        ("GNU.sparse.major", b"1".to_vec()),
        ("GNU.sparse.minor", b"0".to_vec()),
        ("GNU.sparse.name", name.as_os_str().as_bytes().to_vec()),
        ("GNU.sparse.realsize", size.to_string().into_bytes()),
    ];
    pax.splice(0..0, records.map(|(k, v)| (k.to_string(), v)));
    let dir = name
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut stored = dir.as_os_str().as_bytes().to_vec();
    stored.extend_from_slice(b"/GNUSparseFile.0/");
    stored.extend_from_slice(name.file_name().unwrap_or_default().as_bytes());
    stored.truncate(100);
    let field = &mut header.as_old_mut().name;
    field.fill(0);
    field[..stored.len()].copy_from_slice(&stored);
    if let Some(ustar) = header.as_ustar_mut() {
        ustar.prefix.fill(0);
    }
}

/// The data of a PAX 1.0 sparse entry: the map's text, made a few regions at a time, its
/// NUL padding, then the data regions read through the kernel in chunks. Always exactly
/// the size in the header (a region that shrank meanwhile is padded with zeros).
struct PaxSparseReader<'a, 'i> {
    file: &'a File<'i>,
    map: Vec<(u64, u64)>,
    /// Map text made but not handed out yet, from `text_pos`.
    text: Vec<u8>,
    text_pos: usize,
    /// Regions whose text is made.
    rendered: usize,
    /// NULs left to end the map's last block.
    padding: u64,
    /// The region being read, and how far into it.
    region: usize,
    region_pos: u64,
    /// File offset reached, holes included (for the progress bar, which counts sizes).
    done: u64,
    shrank: bool,
    /// The real error behind an `io::Error` handed to the tar builder.
    error: Option<Error>,
    interrupt: &'a Interrupt,
    progress: &'a Progress,
}

impl PaxSparseReader<'_, '_> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.text_pos == self.text.len() && self.rendered < self.map.len() {
            use std::fmt::Write as _;
            let mut text = String::new();
            let end = (self.rendered + 4096).min(self.map.len());
            for &(off, len) in &self.map[self.rendered..end] {
                let _ = write!(text, "{off}\n{len}\n");
            }
            self.rendered = end;
            self.text = text.into_bytes();
            self.text_pos = 0;
        }
        if self.text_pos < self.text.len() {
            let n = (self.text.len() - self.text_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.text[self.text_pos..self.text_pos + n]);
            self.text_pos += n;
            return Ok(n);
        }
        if self.padding > 0 {
            let n = usize::try_from(self.padding)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            buf[..n].fill(0);
            self.padding -= n as u64;
            return Ok(n);
        }
        self.interrupt.check()?;
        while let Some(&(off, len)) = self.map.get(self.region) {
            if self.region_pos == 0 && off > self.done {
                // The hole before this region.
                self.progress.bytes(off - self.done);
                self.done = off;
            }
            if self.region_pos >= len {
                self.region += 1;
                self.region_pos = 0;
                continue;
            }
            let want = usize::try_from(len - self.region_pos)
                .unwrap_or(CHUNK)
                .min(buf.len())
                .min(CHUNK);
            let at = off + self.region_pos;
            let n = if self.shrank {
                0
            } else {
                self.file.read_at(&mut buf[..want], at)?
            };
            let n = if n == 0 {
                if !self.shrank {
                    tracing::warn!("{}: file shrank while archived", self.file.path().display());
                    self.shrank = true;
                }
                buf[..want].fill(0);
                want
            } else {
                n
            };
            self.region_pos += n as u64;
            self.done = at + n as u64;
            self.progress.bytes(n as u64);
            return Ok(n);
        }
        Ok(0)
    }
}

impl Read for PaxSparseReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill(buf).map_err(|e| {
            let text = e.to_string();
            self.error = Some(e);
            io::Error::other(text)
        })
    }
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
    fn sparse_map_text_length() {
        let map = [(0, 5), (300, 4096), (10_000, 0)];
        let text = "3\n0\n5\n300\n4096\n10000\n0\n";
        assert_eq!(map_text_len(&map), text.len() as u64);
        assert_eq!(map_text_len(&[]), 2);
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(u64::MAX), 20);
    }

    #[test]
    fn sparse_entries_are_named_as_gnu_tar_names_them() {
        for (name, stored) in [
            ("dir/sub/file", "dir/sub/GNUSparseFile.0/file"),
            ("top", "./GNUSparseFile.0/top"),
        ] {
            let mut header = Header::new_ustar();
            let mut pax = vec![("mtime".to_string(), b"1".to_vec())];
            set_name(&mut header, &mut pax, Path::new(name), "path");
            set_sparse(&mut header, &mut pax, Path::new(name), 1 << 30);
            assert_eq!(header.path_bytes().as_ref(), stored.as_bytes());
            let keys: Vec<&str> = pax.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "GNU.sparse.major",
                    "GNU.sparse.minor",
                    "GNU.sparse.name",
                    "GNU.sparse.realsize",
                    "mtime"
                ]
            );
            assert_eq!(pax[2].1, name.as_bytes());
            assert_eq!(pax[3].1, b"1073741824");
        }
        // A long name: no `path` record, the ustar name cut to 100 bytes.
        let long = PathBuf::from(format!("{}/{}", "d".repeat(90), "f".repeat(90)));
        let mut header = Header::new_ustar();
        let mut pax = Vec::new();
        set_name(&mut header, &mut pax, &long, "path");
        set_sparse(&mut header, &mut pax, &long, 7);
        assert!(pax.iter().all(|(k, _)| k != "path"), "{pax:?}");
        let stored = header.path_bytes();
        assert_eq!(stored.len(), 100);
        let full = format!("{}/GNUSparseFile.0/{}", "d".repeat(90), "f".repeat(90));
        assert_eq!(stored.as_ref(), &full.as_bytes()[..100]);
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
