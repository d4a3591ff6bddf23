//! The kernel console, turned into `tracing` events with target `"kernel"`.
//!
//! The kernel registers an *extended* console, so each printk record arrives as
//! `"<prefix>,<seq>,<usec>,<flags>;<message>\n"` with `prefix = facility * 8 + level`, possibly
//! followed by dictionary lines that start with a space (`" SUBSYSTEM=virtio"`). A record may
//! be split over several `print` calls; [`LineBuffer`] reassembles lines.
//!
//! Levels: 0-3 (emerg..err) → `error!`, 4 (warning) → `warn!`, 5-6 (notice, info) → `info!`,
//! 7 (debug) → `debug!`; dictionary lines → `trace!`; anything unparsable → `info!` verbatim.

use std::sync::{Mutex, PoisonError};

/// Longest line kept waiting for its `'\n'`; longer output is emitted in pieces.
const MAX_LINE: usize = 16 * 1024;

/// Splits a byte stream into lines.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Appends `bytes`, calling `emit` with each completed line (without its `'\n'`).
    pub(crate) fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(pos) = bytes.iter().position(|&c| c == b'\n') {
            if self.pending.is_empty() {
                emit(&bytes[..pos]);
            } else {
                self.pending.extend_from_slice(&bytes[..pos]);
                emit(&self.pending);
                self.pending.clear();
            }
            bytes = &bytes[pos + 1..];
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= MAX_LINE {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// One parsed console record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// Syslog level, 0 (emerg) to 7 (debug).
    pub(crate) level: u8,
    /// Syslog facility (0 = kernel).
    pub(crate) facility: u32,
    /// Record sequence number.
    pub(crate) seq: u64,
    /// Kernel time of the record in microseconds.
    pub(crate) usec: u64,
    /// The message text (escaped by the kernel: non-printable bytes appear as `\xNN`).
    pub(crate) message: &'a str,
}

/// Parses `"<prefix>,<seq>,<usec>,<flags>[,more];<message>"`.
pub(crate) fn parse_record(line: &str) -> Option<Record<'_>> {
    let (header, message) = line.split_once(';')?;
    let mut fields = header.split(',');
    let prefix: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    let _flags = fields.next()?;
    Some(Record {
        level: (prefix & 7) as u8,
        facility: prefix >> 3,
        seq,
        usec,
        message,
    })
}

/// The `tracing` level for a syslog level.
pub(crate) fn tracing_level(level: u8) -> tracing::Level {
    match level {
        0..=3 => tracing::Level::ERROR,
        4 => tracing::Level::WARN,
        5 | 6 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
}

/// The kernel announces every power-off at emergency level ("reboot: Power
/// down"); for a library kernel that is the normal end of `halt`, not an error.
const ROUTINE_EMERGENCIES: &[&str] = &["reboot: Power down"];

/// The `tracing` level for a record, after demoting routine emergencies.
pub(crate) fn effective_level(r: &Record<'_>) -> tracing::Level {
    if ROUTINE_EMERGENCIES.contains(&r.message) {
        return tracing::Level::INFO;
    }
    tracing_level(r.level)
}

/// Emits one console line as a `tracing` event.
pub(crate) fn emit_line(line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    if line.is_empty() {
        return;
    }
    if let Some(dict) = line.strip_prefix(' ') {
        tracing::trace!(target: "kernel", "{dict}");
        return;
    }
    let Some(r) = parse_record(&line) else {
        tracing::info!(target: "kernel", "{line}");
        return;
    };
    let time = format!("{}.{:06}", r.usec / 1_000_000, r.usec % 1_000_000);
    match effective_level(&r) {
        tracing::Level::ERROR => {
            tracing::error!(target: "kernel", seq = r.seq, %time, "{}", r.message)
        }
        tracing::Level::WARN => {
            tracing::warn!(target: "kernel", seq = r.seq, %time, "{}", r.message)
        }
        tracing::Level::INFO => {
            tracing::info!(target: "kernel", seq = r.seq, %time, "{}", r.message)
        }
        _ => tracing::debug!(target: "kernel", seq = r.seq, %time, "{}", r.message),
    }
}

static CONSOLE: Mutex<LineBuffer> = Mutex::new(LineBuffer {
    pending: Vec::new(),
});

/// Feeds console output from the kernel's `print` op.
pub(crate) fn write(bytes: &[u8]) {
    let mut lines = Vec::new();
    {
        let mut console = CONSOLE.lock().unwrap_or_else(PoisonError::into_inner);
        console.push(bytes, |line| lines.push(line.to_vec()));
    }
    // Emit outside the lock: a subscriber is free to take its time.
    for line in lines {
        emit_line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<String> {
        let mut buf = LineBuffer::default();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.push(chunk, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        out
    }

    #[test]
    fn lines_are_reassembled_across_calls() {
        assert_eq!(
            collect(&[b"6,1,0", b",-;hel", b"lo\n4,2,5,-;wa", b"rn\n"]),
            ["6,1,0,-;hello", "4,2,5,-;warn"]
        );
        assert_eq!(collect(&[b"a\nb\n\nc"]), ["a", "b", ""]);
        assert_eq!(collect(&[b"no newline yet"]), Vec::<String>::new());
    }

    #[test]
    fn overlong_lines_are_flushed() {
        let long = vec![b'x'; MAX_LINE + 10];
        let out = collect(&[&long]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE + 10);
    }

    #[test]
    fn records_parse() {
        assert_eq!(
            parse_record("6,338,1234567,-;Linux version 6.12"),
            Some(Record {
                level: 6,
                facility: 0,
                seq: 338,
                usec: 1_234_567,
                message: "Linux version 6.12",
            })
        );
        // facility 1 (user), level 3; extra header fields and ';' in the message are fine.
        let r = parse_record("11,5,9,c,caller=T1;a;b").expect("parses");
        assert_eq!((r.facility, r.level, r.message), (1, 3, "a;b"));
        assert_eq!(parse_record("plain text"), None);
        assert_eq!(parse_record("x,1,2,-;msg"), None);
        assert_eq!(parse_record("6,1,2;msg"), None);
    }

    #[test]
    fn levels_map_to_tracing() {
        use tracing::Level;
        let want = [
            Level::ERROR,
            Level::ERROR,
            Level::ERROR,
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::INFO,
            Level::DEBUG,
        ];
        for (level, want) in want.into_iter().enumerate() {
            assert_eq!(tracing_level(level as u8), want, "level {level}");
        }
    }

    #[test]
    fn power_off_is_routine() {
        let r = parse_record("0,40,59028,-;reboot: Power down").expect("parses");
        assert_eq!(effective_level(&r), tracing::Level::INFO);
        let r = parse_record("0,41,59028,-;Kernel panic - not syncing").expect("parses");
        assert_eq!(effective_level(&r), tracing::Level::ERROR);
    }

    #[test]
    fn emitting_never_panics() {
        for line in [
            &b"0,1,2,-;emerg"[..],
            b"4,1,2,-;warn",
            b"7,1,2,-;debug",
            b" SUBSYSTEM=virtio",
            b"garbage \xff",
            b"",
        ] {
            emit_line(line);
        }
        write(b"6,1,2,-;split ");
        write(b"record\n");
    }
}
