//! Parsing virtio-blk requests (virtio 1.2 §5.2.6) out of descriptor chains. No I/O here.
//!
//! A request is a device-readable part followed by a device-writable part:
//!
//! ```text
//!  readable:  le32 type | le32 reserved | le64 sector | [data (OUT), or discard/write-zeroes ranges]
//!  writable:  [data (IN, GET_ID)] | u8 status
//! ```
//!
//! `VIRTIO_F_VERSION_1` implies `ANY_LAYOUT`: the split into descriptors is arbitrary (the
//! header may span descriptors, data and status may share one), so both parts are treated as
//! byte streams. The status byte is the last writable byte; it is located (and checked)
//! first, so that every later error can still be reported to the driver through it.

use super::super::memory::{KernelMemory, KernelSlice, MemoryError};
use super::super::queue::Descriptor;

/// Request types (`VIRTIO_BLK_T_*`).
pub mod types {
    #![allow(missing_docs)]
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const GET_ID: u32 = 8;
    pub const DISCARD: u32 = 11;
    pub const WRITE_ZEROES: u32 = 13;
}

/// Sector size of the request protocol, whatever the block size.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request header.
pub const HEADER_SIZE: usize = 16;
/// Size of one discard / write-zeroes range: `le64 sector; le32 num_sectors; le32 flags`.
pub const RANGE_SIZE: usize = 16;
/// Write-zeroes flag: the device may deallocate the range.
pub const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestType {
    /// Read `data` (device-writable) from `sector`.
    In,
    /// Write `data` (device-readable) at `sector`.
    Out,
    /// Make completed writes durable.
    Flush,
    /// Write the device's serial into `data`.
    GetId,
    /// Deallocate the ranges.
    Discard(Vec<Range>),
    /// Zero the ranges.
    WriteZeroes(Vec<Range>),
    /// A type this device does not know.
    Unsupported(u32),
}

/// One discard / write-zeroes segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// `VIRTIO_BLK_WRITE_ZEROES_FLAG_*`.
    pub flags: u32,
}

/// A parsed request; the buffers are checked kernel memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub kind: RequestType,
    /// Header sector (meaningful for `In` and `Out`).
    pub sector: u64,
    /// Data buffers in order: device-writable for `In`/`GetId`, device-readable for `Out`.
    pub data: Vec<KernelSlice>,
    /// The status byte.
    pub status: KernelSlice,
}

impl Request {
    /// Total length of the data buffers.
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|s| s.len() as u64).sum()
    }
}

/// Why a chain is not a valid request.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// No device-writable byte at the end of the chain for the status.
    #[error("no status byte")]
    NoStatus,
    /// A buffer outside kernel memory.
    #[error("{0}")]
    Memory(#[from] MemoryError),
    /// A device-readable buffer after a device-writable one.
    #[error("readable descriptor after a writable one")]
    ReadableAfterWritable,
    /// Fewer than 16 readable bytes.
    #[error("header too short ({0} bytes)")]
    HeaderTooShort(u64),
    /// Data in the direction the request type does not use.
    #[error("data buffer in the wrong direction for request type {0}")]
    WrongDirection(u32),
    /// Data length not a multiple of the sector size (IN/OUT), or of the range size.
    #[error("bad data length {0}")]
    BadLength(u64),
    /// More data segments or ranges than the device advertised.
    #[error("too many segments ({0})")]
    TooManySegments(usize),
}

/// A chain that is not a valid request, and where to report that, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The status byte, if the chain has a usable one.
    pub status: Option<KernelSlice>,
    /// What is wrong.
    pub error: ParseError,
}

/// Device limits the parser enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most data segments in an IN/OUT request (`seg_max`).
    pub max_segments: usize,
    /// Most ranges in a discard or write-zeroes request.
    pub max_ranges: usize,
}

/// Bytes of a stream of slices, skipping `skip` at the front and `drop` at the back.
fn substream(slices: &[KernelSlice], skip: u64, drop: u64) -> Vec<KernelSlice> {
    let total: u64 = slices.iter().map(|s| s.len() as u64).sum();
    let mut start = skip;
    let mut remaining = total.saturating_sub(skip).saturating_sub(drop);
    let mut out = Vec::new();
    for s in slices {
        if remaining == 0 {
            break;
        }
        let len = s.len() as u64;
        if start >= len {
            start -= len;
            continue;
        }
        let take = (len - start).min(remaining);
        // In range by construction: start < len and take ≤ len - start.
        if let Some(part) = s.sub(start as usize, take as usize) {
            out.push(part);
        }
        remaining -= take;
        start = 0;
    }
    out
}

/// Copies the first `buf.len()` bytes of a stream; the stream must be long enough.
fn read_stream(slices: &[KernelSlice], buf: &mut [u8]) {
    let mut done = 0;
    for s in slices {
        if done == buf.len() {
            break;
        }
        done += s.copy_to(&mut buf[done..]);
    }
}

fn stream_len(slices: &[KernelSlice]) -> u64 {
    slices.iter().map(|s| s.len() as u64).sum()
}

impl Request {
    /// Parses the chain's buffers (in chain order) against `mem`.
    pub fn parse(
        descriptors: &[Descriptor],
        mem: &KernelMemory,
        limits: Limits,
    ) -> Result<Request, Malformed> {
        // The status byte first: the last byte of the last descriptor, which must be writable.
        let last = descriptors
            .iter()
            .rev()
            .find(|d| d.len > 0)
            .filter(|d| d.is_write_only())
            .ok_or(Malformed {
                status: None,
                error: ParseError::NoStatus,
            })?;
        let no_status = |error| Malformed {
            status: None,
            error,
        };
        let last = mem
            .slice(last.addr, u64::from(last.len))
            .map_err(|e| no_status(ParseError::Memory(e)))?;
        let status = last
            .skip(last.len() - 1) // len > 0
            .ok_or(no_status(ParseError::NoStatus))?;
        let fail = |error| Malformed {
            status: Some(status),
            error,
        };

        let mut readable = Vec::new();
        let mut writable = Vec::new();
        for d in descriptors.iter().filter(|d| d.len > 0) {
            let s = mem
                .slice(d.addr, u64::from(d.len))
                .map_err(|e| fail(e.into()))?;
            if d.is_write_only() {
                writable.push(s);
            } else if writable.is_empty() {
                readable.push(s);
            } else {
                return Err(fail(ParseError::ReadableAfterWritable));
            }
        }

        let readable_len = stream_len(&readable);
        if readable_len < HEADER_SIZE as u64 {
            return Err(fail(ParseError::HeaderTooShort(readable_len)));
        }
        let mut header = [0u8; HEADER_SIZE];
        read_stream(&readable, &mut header);
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        let payload_in = substream(&readable, HEADER_SIZE as u64, 0);
        let payload_out = substream(&writable, 0, 1);
        let only = |wanted: Vec<KernelSlice>, other: &[KernelSlice]| {
            if other.is_empty() {
                Ok(wanted)
            } else {
                Err(fail(ParseError::WrongDirection(kind)))
            }
        };

        let (kind, data) = match kind {
            types::IN | types::OUT => {
                let data = if kind == types::IN {
                    only(payload_out, &payload_in)?
                } else {
                    only(payload_in, &payload_out)?
                };
                let len = stream_len(&data);
                if !len.is_multiple_of(SECTOR_SIZE) {
                    return Err(fail(ParseError::BadLength(len)));
                }
                if data.len() > limits.max_segments {
                    return Err(fail(ParseError::TooManySegments(data.len())));
                }
                let kind = if kind == types::IN {
                    RequestType::In
                } else {
                    RequestType::Out
                };
                (kind, data)
            }
            types::FLUSH => (RequestType::Flush, Vec::new()),
            types::GET_ID => (RequestType::GetId, only(payload_out, &payload_in)?),
            types::DISCARD | types::WRITE_ZEROES => {
                let data = only(payload_in, &payload_out)?;
                let len = stream_len(&data);
                if len == 0 || !len.is_multiple_of(RANGE_SIZE as u64) {
                    return Err(fail(ParseError::BadLength(len)));
                }
                let count = (len / RANGE_SIZE as u64) as usize;
                if count > limits.max_ranges {
                    return Err(fail(ParseError::TooManySegments(count)));
                }
                let mut raw = vec![0u8; len as usize]; // ≤ max_ranges * 16
                read_stream(&data, &mut raw);
                let ranges = raw
                    .chunks_exact(RANGE_SIZE)
                    .map(|c| Range {
                        sector: u64::from_le_bytes([
                            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                        ]),
                        num_sectors: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
                        flags: u32::from_le_bytes([c[12], c[13], c[14], c[15]]),
                    })
                    .collect();
                let kind = if kind == types::DISCARD {
                    RequestType::Discard(ranges)
                } else {
                    RequestType::WriteZeroes(ranges)
                };
                (kind, Vec::new())
            }
            other => (RequestType::Unsupported(other), Vec::new()),
        };
        Ok(Request {
            kind,
            sector,
            data,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};

    const LIMITS: Limits = Limits {
        max_segments: 4,
        max_ranges: 2,
    };

    struct Arena {
        mem: KernelMemory,
        next: u64,
    }

    impl Arena {
        fn new() -> Arena {
            let mem = KernelMemory::test_arena(1 << 16);
            let next = mem.range().start as u64;
            Arena { mem, next }
        }

        /// A descriptor over fresh memory holding `bytes`.
        fn buf(&mut self, bytes: &[u8], write: bool) -> Descriptor {
            let addr = self.next;
            self.next += bytes.len().max(1) as u64;
            self.mem.write(addr, bytes).expect("arena write");
            Descriptor {
                addr,
                len: bytes.len() as u32,
                flags: VIRTQ_DESC_F_NEXT | if write { VIRTQ_DESC_F_WRITE } else { 0 },
                next: 0,
            }
        }
    }

    fn header(kind: u32, sector: u64) -> Vec<u8> {
        let mut h = kind.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&sector.to_le_bytes());
        h
    }

    #[test]
    fn read_request() {
        let mut a = Arena::new();
        let chain = [
            a.buf(&header(types::IN, 1 << 40), false),
            a.buf(&[0; 512], true),
            a.buf(&[0; 1024], true),
            a.buf(&[0xff], true),
        ];
        let r = Request::parse(&chain, &a.mem, LIMITS).expect("valid");
        assert_eq!(r.kind, RequestType::In);
        assert_eq!(r.sector, 1 << 40);
        assert_eq!(r.data.len(), 2);
        assert_eq!(r.data_len(), 1536);
        assert_eq!(r.status.addr(), chain[3].addr);
    }

    #[test]
    fn any_layout_header_split_and_status_merged() {
        let mut a = Arena::new();
        let h = header(types::OUT, 7);
        let mut data_and_header_tail = h[10..].to_vec();
        data_and_header_tail.extend_from_slice(&[0x5a; 512]);
        let chain = [
            a.buf(&h[..10], false),
            a.buf(&data_and_header_tail, false),
            a.buf(&[0xff], true),
        ];
        let r = Request::parse(&chain, &a.mem, LIMITS).expect("valid");
        assert_eq!(
            (r.kind.clone(), r.sector, r.data_len()),
            (RequestType::Out, 7, 512)
        );
        assert_eq!(r.data[0].addr(), chain[1].addr + 6);

        // Read data and status in one writable buffer.
        let chain = [a.buf(&header(types::IN, 0), false), a.buf(&[0; 513], true)];
        let r = Request::parse(&chain, &a.mem, LIMITS).expect("valid");
        assert_eq!(r.data_len(), 512);
        assert_eq!(r.status.addr(), chain[1].addr + 512);
    }

    #[test]
    fn discard_ranges_and_other_types() {
        let mut a = Arena::new();
        let mut ranges = Vec::new();
        for (s, n, f) in [(8u64, 16u32, 0u32), (1 << 33, 8, 1)] {
            ranges.extend_from_slice(&s.to_le_bytes());
            ranges.extend_from_slice(&n.to_le_bytes());
            ranges.extend_from_slice(&f.to_le_bytes());
        }
        let chain = [
            a.buf(&header(types::WRITE_ZEROES, 0), false),
            a.buf(&ranges, false),
            a.buf(&[0xff], true),
        ];
        let r = Request::parse(&chain, &a.mem, LIMITS).expect("valid");
        assert_eq!(
            r.kind,
            RequestType::WriteZeroes(vec![
                Range {
                    sector: 8,
                    num_sectors: 16,
                    flags: 0
                },
                Range {
                    sector: 1 << 33,
                    num_sectors: 8,
                    flags: 1
                },
            ])
        );
        let chain = [a.buf(&header(types::FLUSH, 0), false), a.buf(&[0], true)];
        assert_eq!(
            Request::parse(&chain, &a.mem, LIMITS).map(|r| r.kind),
            Ok(RequestType::Flush)
        );
        let chain = [
            a.buf(&header(types::GET_ID, 0), false),
            a.buf(&[0; 20], true),
            a.buf(&[0], true),
        ];
        let r = Request::parse(&chain, &a.mem, LIMITS).expect("get id");
        assert_eq!((r.data_len(), r.kind), (20, RequestType::GetId));
        let chain = [a.buf(&header(99, 0), false), a.buf(&[0], true)];
        assert_eq!(
            Request::parse(&chain, &a.mem, LIMITS).map(|r| r.kind),
            Ok(RequestType::Unsupported(99))
        );
    }

    #[test]
    fn malformed_requests() {
        let mut a = Arena::new();
        let err = |chain: &[Descriptor], a: &Arena| {
            Request::parse(chain, &a.mem, LIMITS).expect_err("malformed")
        };
        // No writable byte at the end.
        let chain = [a.buf(&header(types::IN, 0), false)];
        assert_eq!(
            err(&chain, &a),
            Malformed {
                status: None,
                error: ParseError::NoStatus
            }
        );
        // Status outside memory: cannot report.
        let h = a.buf(&header(types::IN, 0), false);
        let bad_status = Descriptor {
            addr: 0x10,
            len: 1,
            flags: VIRTQ_DESC_F_WRITE,
            next: 0,
        };
        let m = err(&[h, bad_status], &a);
        assert!(m.status.is_none() && matches!(m.error, ParseError::Memory(_)));
        // A wrapping status descriptor.
        let wrap = Descriptor {
            addr: u64::MAX,
            len: 2,
            flags: VIRTQ_DESC_F_WRITE,
            next: 0,
        };
        assert!(err(&[h, wrap], &a).status.is_none());

        // From here on, the status is usable.
        let st = a.buf(&[0xff], true);
        let data_out = Descriptor {
            addr: 0x1000,
            len: 512,
            flags: VIRTQ_DESC_F_WRITE,
            next: 0,
        };
        let m = err(&[h, data_out, st], &a);
        assert_eq!(m.status.map(|s| s.addr()), Some(st.addr));
        assert!(matches!(m.error, ParseError::Memory(_)));

        let short = a.buf(&header(types::IN, 0)[..12], false);
        assert_eq!(err(&[short, st], &a).error, ParseError::HeaderTooShort(12));

        let w = a.buf(&[0; 512], true);
        let r = a.buf(&[0; 512], false);
        assert_eq!(
            err(&[h, w, r, st], &a).error,
            ParseError::ReadableAfterWritable
        );
        // OUT with writable data, IN with readable data.
        let out = a.buf(&header(types::OUT, 0), false);
        assert_eq!(err(&[out, w, st], &a).error, ParseError::WrongDirection(1));
        assert_eq!(err(&[h, r, st], &a).error, ParseError::WrongDirection(0));
        // Not whole sectors.
        let odd = a.buf(&[0; 100], true);
        assert_eq!(err(&[h, odd, st], &a).error, ParseError::BadLength(100));
        // Too many segments.
        let chain = [h, w, w, w, w, w, st];
        assert_eq!(err(&chain, &a).error, ParseError::TooManySegments(5));
        // Discard with a partial range, and too many ranges.
        let disc = a.buf(&header(types::DISCARD, 0), false);
        let part = a.buf(&[0; 20], false);
        assert_eq!(err(&[disc, part, st], &a).error, ParseError::BadLength(20));
        let three = a.buf(&[0; 48], false);
        assert_eq!(
            err(&[disc, three, st], &a).error,
            ParseError::TooManySegments(3)
        );
        assert_eq!(err(&[disc, st], &a).error, ParseError::BadLength(0));
    }
}
