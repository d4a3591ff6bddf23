//! Open files inside an image: `Read`/`Write`/`Seek` through the kernel's file position, plus
//! positioned I/O and hole-aware seeking for sparse files.

use std::io;
use std::path::{Path, PathBuf};

use super::{Error, Image, Metadata};
use crate::lkl::bindings as b;
use crate::lkl::{sys, Errno, KernelFd};

/// How to open a file (see [`Image::open_file_with`]); like `std::fs::OpenOptions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    no_follow: bool,
    /// Permission bits of a created file (less the umask, 022). Default 0644.
    pub mode: u32,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions::new()
    }
}

impl FileOptions {
    /// Nothing set; mode 0644.
    pub fn new() -> FileOptions {
        FileOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            no_follow: false,
            mode: 0o644,
        }
    }

    /// Open for reading.
    pub fn read(mut self, on: bool) -> Self {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(mut self, on: bool) -> Self {
        self.write = on;
        self
    }

    /// Write at the end.
    pub fn append(mut self, on: bool) -> Self {
        self.append = on;
        self
    }

    /// Truncate to 0 bytes.
    pub fn truncate(mut self, on: bool) -> Self {
        self.truncate = on;
        self
    }

    /// Create if missing.
    pub fn create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// Create, failing with `EEXIST` if the name exists (even as a dangling symlink).
    pub fn create_new(mut self, on: bool) -> Self {
        self.create_new = on;
        self
    }

    /// Fail with `ELOOP` if the final component is a symlink.
    pub fn no_follow(mut self, on: bool) -> Self {
        self.no_follow = on;
        self
    }

    /// Permission bits for a created file.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    pub(super) fn flags(&self) -> u32 {
        let mut flags = match (self.read, self.write || self.append) {
            (_, false) => b::O_RDONLY,
            (false, true) => b::O_WRONLY,
            (true, true) => b::O_RDWR,
        };
        if self.append {
            flags |= b::O_APPEND;
        }
        if self.truncate {
            flags |= b::O_TRUNC;
        }
        if self.create || self.create_new {
            flags |= b::O_CREAT;
        }
        if self.create_new {
            flags |= b::O_EXCL;
        }
        if self.no_follow {
            flags |= b::O_NOFOLLOW;
        }
        flags
    }
}

/// An open file inside an image. Closed when dropped.
#[derive(Debug)]
pub struct File<'a> {
    image: &'a Image,
    path: PathBuf,
    fd: KernelFd,
}

impl<'a> File<'a> {
    pub(super) fn new(image: &'a Image, path: PathBuf, fd: KernelFd) -> File<'a> {
        File { image, path, fd }
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, errno: Errno) -> Error {
        self.image.err(&self.path, errno)
    }

    fn offset_arg(&self, offset: u64) -> Result<i64, Error> {
        // Offsets come from callers; the kernel's loff_t is signed.
        i64::try_from(offset).map_err(|_| self.err(Errno::EFBIG))
    }

    /// Its attributes.
    pub fn metadata(&self) -> Result<Metadata, Error> {
        super::statx(&self.fd, c"", b::AT_EMPTY_PATH as i32).map_err(|e| self.err(e))
    }

    /// Reads at `offset` without moving the file position; 0 at the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Error> {
        sys::pread64(&self.fd, buf, self.offset_arg(offset)?).map_err(|e| self.err(e))
    }

    /// Writes at `offset` without moving the file position.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize, Error> {
        sys::pwrite64(&self.fd, buf, self.offset_arg(offset)?).map_err(|e| self.err(e))
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> Result<(), Error> {
        while !buf.is_empty() {
            match self.write_at(buf, offset)? {
                0 => return Err(self.err(Errno::EIO)),
                n => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    /// Truncates or extends (with a hole) to `size` bytes.
    pub fn set_len(&self, size: u64) -> Result<(), Error> {
        sys::ftruncate(&self.fd, self.offset_arg(size)?).map_err(|e| self.err(e))
    }

    /// Writes the file's data and attributes to the image (`fsync`).
    pub fn sync_all(&self) -> Result<(), Error> {
        sys::fsync(&self.fd).map_err(|e| self.err(e))
    }

    /// Writes the file's data to the image (`fdatasync`).
    pub fn sync_data(&self) -> Result<(), Error> {
        sys::fdatasync(&self.fd).map_err(|e| self.err(e))
    }

    /// The start of the first data at or after `offset`, or `None` if only a hole follows.
    /// Moves the file position there.
    pub fn seek_data(&self, offset: u64) -> Result<Option<u64>, Error> {
        match sys::lseek(&self.fd, self.offset_arg(offset)?, b::SEEK_DATA) {
            Ok(pos) => Ok(Some(pos as u64)),
            Err(Errno::ENXIO) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The start of the first hole at or after `offset` (the end of the file counts as one).
    /// Moves the file position there.
    pub fn seek_hole(&self, offset: u64) -> Result<u64, Error> {
        sys::lseek(&self.fd, self.offset_arg(offset)?, b::SEEK_HOLE)
            .map(|pos| pos as u64)
            .map_err(|e| self.err(e))
    }
}

impl io::Read for File<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(sys::read(&self.fd, buf)?)
    }
}

impl io::Write for File<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(sys::write(&self.fd, buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Writes go straight to the kernel's page cache; nothing is buffered here.
        Ok(())
    }
}

impl io::Seek for File<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let (offset, whence) = match pos {
            io::SeekFrom::Start(n) => (
                i64::try_from(n).map_err(|_| io::Error::from(Errno::EINVAL))?,
                b::SEEK_SET,
            ),
            io::SeekFrom::End(n) => (n, b::SEEK_END),
            io::SeekFrom::Current(n) => (n, b::SEEK_CUR),
        };
        Ok(sys::lseek(&self.fd, offset, whence)? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_flags() {
        assert_eq!(FileOptions::new().read(true).flags(), b::O_RDONLY);
        assert_eq!(
            FileOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .flags(),
            b::O_WRONLY | b::O_CREAT | b::O_TRUNC
        );
        assert_eq!(
            FileOptions::new().read(true).append(true).flags(),
            b::O_RDWR | b::O_APPEND
        );
        assert_eq!(
            FileOptions::new().write(true).create_new(true).flags(),
            b::O_WRONLY | b::O_CREAT | b::O_EXCL
        );
    }
}
