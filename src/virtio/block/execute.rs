//! Executing parsed virtio-blk requests against a [`DiskBackend`], and the one place where
//! errors become status bytes ([`status`]).

use std::io;

use super::backend::DiskBackend;
use super::request::{
    ParseError, Range, Request, RequestType, SECTOR_SIZE, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};

/// Request completed.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Request type (or flag) not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of the `GET_ID` answer.
pub const VIRTIO_BLK_ID_BYTES: usize = 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The chain is not a valid request.
    #[error("malformed request: {0}")]
    Malformed(#[from] ParseError),
    /// A request type this device does not implement, or whose feature was not negotiated.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// Flags this device does not know, or `UNMAP` on a discard.
    #[error("unsupported flags {0:#x}")]
    UnsupportedFlags(u32),
    /// A write, discard or write-zeroes on a read-only device.
    #[error("the device is read-only")]
    ReadOnly,
    /// The range is not inside the disk (or its byte offset overflows).
    #[error("sectors {sector}+{bytes} bytes are beyond the capacity")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Length in bytes.
        bytes: u64,
    },
    /// A discard or write-zeroes range larger than advertised.
    #[error("range of {0} sectors exceeds the advertised maximum")]
    RangeTooLong(u32),
    /// The host file failed.
    #[error("image I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// The status byte for a request's outcome.
pub fn status(result: &Result<u32, RequestError>) -> u8 {
    match result {
        Ok(_) => VIRTIO_BLK_S_OK,
        Err(RequestError::Unsupported(_) | RequestError::UnsupportedFlags(_)) => {
            VIRTIO_BLK_S_UNSUPP
        }
        Err(
            RequestError::Malformed(_)
            | RequestError::ReadOnly
            | RequestError::OutOfRange { .. }
            | RequestError::RangeTooLong(_)
            | RequestError::Io(_),
        ) => VIRTIO_BLK_S_IOERR,
    }
}

/// What a request may use, fixed when the device starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// Refuse anything that changes the disk.
    pub read_only: bool,
    /// `VIRTIO_BLK_F_FLUSH` negotiated.
    pub flush: bool,
    /// `VIRTIO_BLK_F_DISCARD` negotiated.
    pub discard: bool,
    /// `VIRTIO_BLK_F_WRITE_ZEROES` negotiated.
    pub write_zeroes: bool,
    /// Longest discard / write-zeroes range, in sectors.
    pub max_range_sectors: u32,
    /// Answer to `GET_ID`, NUL-padded.
    pub serial: [u8; VIRTIO_BLK_ID_BYTES],
}

/// The byte offset of `bytes` bytes at `sector`, if that is inside a disk of `size` bytes.
pub fn byte_range(sector: u64, bytes: u64, size: u64) -> Result<u64, RequestError> {
    sector
        .checked_mul(SECTOR_SIZE)
        .and_then(|offset| {
            let end = offset.checked_add(bytes)?;
            (end <= size).then_some(offset)
        })
        .ok_or(RequestError::OutOfRange { sector, bytes })
}

fn check_ranges(
    ranges: &[Range],
    ctx: &Context,
    size: u64,
    allowed_flags: u32,
) -> Result<Vec<(u64, u64, u32)>, RequestError> {
    ranges
        .iter()
        .map(|r| {
            if r.flags & !allowed_flags != 0 {
                return Err(RequestError::UnsupportedFlags(r.flags));
            }
            if r.num_sectors > ctx.max_range_sectors {
                return Err(RequestError::RangeTooLong(r.num_sectors));
            }
            let bytes = u64::from(r.num_sectors) * SECTOR_SIZE;
            Ok((byte_range(r.sector, bytes, size)?, bytes, r.flags))
        })
        .collect()
}

/// Runs a read of at most `max_bytes` at once if the host has its data cached (see
/// [`DiskBackend::read_cached`]); returns the bytes written to the driver, or `None` when the
/// request must go through [`execute`] (another type, larger, out of range, not cached).
pub fn execute_cached(req: &Request, disk: &dyn DiskBackend, max_bytes: u64) -> Option<u32> {
    if !matches!(req.kind, RequestType::In) {
        return None;
    }
    let len = req.data_len();
    if len > max_bytes {
        return None;
    }
    let offset = byte_range(req.sector, len, disk.size()).ok()?;
    disk.read_cached(offset, &req.data)
        .then(|| u32::try_from(len).unwrap_or(u32::MAX))
}

/// Runs `req`; returns how many bytes were written into the driver's buffers (not counting
/// the status byte).
pub fn execute(req: &Request, disk: &dyn DiskBackend, ctx: &Context) -> Result<u32, RequestError> {
    let size = disk.size();
    match &req.kind {
        RequestType::In => {
            let len = req.data_len();
            let offset = byte_range(req.sector, len, size)?;
            disk.read(offset, &req.data)?;
            // Parsing bounded the request to the queue's buffers; it still fits u32 unless a
            // driver sent more than 4 GiB, which then reports a truncated length.
            Ok(u32::try_from(len).unwrap_or(u32::MAX))
        }
        RequestType::Out => {
            if ctx.read_only {
                return Err(RequestError::ReadOnly);
            }
            let offset = byte_range(req.sector, req.data_len(), size)?;
            disk.write(offset, &req.data)?;
            Ok(0)
        }
        RequestType::Flush => {
            if !ctx.flush {
                return Err(RequestError::Unsupported(super::request::types::FLUSH));
            }
            if !ctx.read_only {
                disk.flush()?;
            }
            Ok(0)
        }
        RequestType::GetId => {
            let mut written = 0;
            for buf in &req.data {
                written += buf.copy_from(&ctx.serial[written..]);
            }
            Ok(written as u32) // ≤ 20
        }
        RequestType::Discard(ranges) => {
            if !ctx.discard {
                return Err(RequestError::Unsupported(super::request::types::DISCARD));
            }
            if ctx.read_only {
                return Err(RequestError::ReadOnly);
            }
            // The UNMAP flag is reserved for discard: UNSUPP if set.
            for (offset, bytes, _) in check_ranges(ranges, ctx, size, 0)? {
                disk.discard(offset, bytes)?;
            }
            Ok(0)
        }
        RequestType::WriteZeroes(ranges) => {
            if !ctx.write_zeroes {
                return Err(RequestError::Unsupported(
                    super::request::types::WRITE_ZEROES,
                ));
            }
            if ctx.read_only {
                return Err(RequestError::ReadOnly);
            }
            let checked = check_ranges(ranges, ctx, size, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)?;
            for (offset, bytes, flags) in checked {
                let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
                disk.write_zeroes(offset, bytes, unmap)?;
            }
            Ok(0)
        }
        RequestType::Unsupported(t) => Err(RequestError::Unsupported(*t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sector_math_is_64_bit_and_checked() {
        const TIB: u64 = 1 << 40;
        let size = 3 * TIB;
        // 2 TiB + 1 sector: beyond the 32-bit sector boundary.
        let sector = (2 * TIB) / 512 + 1;
        assert_eq!(byte_range(sector, 4096, size).ok(), Some(2 * TIB + 512));
        assert_eq!(byte_range(size / 512 - 1, 512, size).ok(), Some(size - 512));
        assert!(byte_range(size / 512 - 1, 1024, size).is_err());
        assert!(byte_range(size / 512, 0, size).is_ok());
        assert!(byte_range(u64::MAX / 512 + 1, 0, u64::MAX).is_err());
        assert!(byte_range(u64::MAX / 512, 512, u64::MAX).is_err());
    }

    #[test]
    fn status_mapping() {
        assert_eq!(status(&Ok(5)), VIRTIO_BLK_S_OK);
        assert_eq!(
            status(&Err(RequestError::Unsupported(42))),
            VIRTIO_BLK_S_UNSUPP
        );
        assert_eq!(
            status(&Err(RequestError::UnsupportedFlags(2))),
            VIRTIO_BLK_S_UNSUPP
        );
        assert_eq!(status(&Err(RequestError::ReadOnly)), VIRTIO_BLK_S_IOERR);
        assert_eq!(
            status(&Err(RequestError::Malformed(ParseError::NoStatus))),
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(
            status(&Err(RequestError::Io(io::ErrorKind::UnexpectedEof.into()))),
            VIRTIO_BLK_S_IOERR
        );
    }
}
