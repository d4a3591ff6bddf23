//! Hostile images: every filesystem mounted from images whose metadata was
//! damaged on purpose, through the real `lklfuse` binary.
//!
//! Per filesystem (one test each, so they run in parallel), one small
//! populated image is made once (a few directories, small and medium files,
//! a symlink and an xattr where the filesystem keeps them). Every byte of
//! file content is [`PATTERN`], so that a 512-byte sector which is neither
//! all zero nor all pattern is metadata: mutations go there. Each case copies
//! the pristine image, applies one mutation chosen by an RNG seeded from the
//! filesystem's name, the seed base and the case index (bit flips in a
//! superblock-like region, a 1/2/4/8-byte field set to 0, all ones or random,
//! random bytes over a fragment, or a zeroed block; half the time the
//! checksums this file knows how to compute are made right again, so that the
//! damage reaches the parsers behind the verifiers), and then:
//!
//! - `lklfuse -f -o type=FS[,ro]` must mount or exit within the mount limit;
//!   exiting, it must fail with a non-zero status, one error line (log
//!   records of the damaged filesystem aside), no Rust panic text, not by a
//!   signal, and leave no mount;
//! - mounted, a walker in a child process (python3; a stuck FUSE call must
//!   not wedge this process) lists every directory, lstat()s every entry,
//!   reads every file (capped), reads symlinks and xattrs, and on writable
//!   filesystems creates, writes, fsyncs, renames, truncates and removes;
//!   every OSError is allowed and counted by errno, but the walker must end
//!   within its bound (otherwise: a hang);
//! - unmounted, the daemon must exit within the exit limit, not by a signal,
//!   with 0 or non-zero plus a log line, no panic text, and no mount left;
//!   it must not stop by itself during the walk, except that a fatal kernel
//!   error (BUG, panic, crash signal inside the daemon) that makes it log
//!   "fatal", remove its mount and exit 3 is allowed (the product's designed
//!   last resort), but counted and listed with its reproduction, the image
//!   kept in target/tmp/lklfuse-fuzz-findings. Kernel WARN/BUG reports in the
//!   daemon's output are listed too.
//!
//! Before the cases, the unmutated image must mount, walk without errors and
//! unmount cleanly: a harness that checks nothing fails.
//!
//! Environment: `LKLFUSE_FUZZ_CASES` (default 50 per filesystem),
//! `LKLFUSE_FUZZ_SEED` (seed base, default 1), `LKLFUSE_FUZZ_ONLY=N` (run only
//! case N: the replay of a reported failure; its image is kept in
//! target/tmp/lklfuse-fuzz-findings), `LKLFUSE_FUZZ_VERBOSE=1` (one line per
//! case). `contrib/fuzz.sh` is the long mode. The pristine image and every
//! failing case's image (as mutated, before the mount) and daemon log stay in
//! the test directory when the test fails (see `fuse::fuse_test`; the next run
//! removes them). Images are rebuilt from fixed UUIDs and times where the
//! tools allow, but some tools (mkfs.btrfs, ntfs-3g, mkudffs...) stamp the
//! current time or random identifiers, so a replay mutates the same places of
//! an image that may differ in such bytes: the kept image is the exact
//! reproduction (`lklfuse -f -o type=FS IMAGE MNT`).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::fuse::{self, command, fuse_mounted, fuse_test, lazy_unmount, path_str, Daemon};
use common::images::{self, Fs, Op, Rng};

const FILE: &str = "fuzz_images";
/// Every byte of every file's content.
const PATTERN: u8 = 0xA5;
/// Granularity of the data/metadata classification.
const SECTOR: u64 = 512;
/// How long the walker may take before it counts as hung. Its own soft
/// budget ([`WALK_SOFT_SECS`]) ends a slow but progressing walk well before.
const WALK_LIMIT: Duration = Duration::from_secs(60);
const WALK_SOFT_SECS: u32 = 15;
/// After this many hangs a filesystem stops early: each costs minutes.
const MAX_HANGS: usize = 3;
/// How long a dying daemon's detaching child may take to remove the mount.
const MOUNT_GONE_LIMIT: Duration = Duration::from_secs(5);
/// Fixed identities so that rebuilt images lay out the same way.
const UUID: &str = "6c6b6c66-7573-6500-0000-00000000f022";
const EPOCH: &str = "1600000000";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The pristine image

/// Whether the filesystem (and the tool that fills it) keeps symlinks / user xattrs.
fn keeps(fs: Fs) -> (bool, bool) {
    // ntfs-3g makes Interix symlinks, which ntfs3 shows as regular files.
    let symlinks = !matches!(fs, Fs::Vfat | Fs::Exfat | Fs::Ntfs);
    let xattrs = matches!(
        fs,
        Fs::Ext2
            | Fs::Ext3
            | Fs::Ext4
            | Fs::Xfs
            | Fs::Btrfs
            | Fs::Squashfs(_)
            | Fs::Erofs
            | Fs::Hfsplus
    );
    (symlinks, xattrs)
}

/// The tree: content all [`PATTERN`]; sizes both block-aligned (their
/// blocks read as pure pattern) and not (tails, inline data).
fn tree(fs: Fs) -> Vec<Op> {
    let (symlinks, xattrs) = keeps(fs);
    let file = |path: &str, len: usize| Op::File {
        path: path.into(),
        data: vec![PATTERN; len],
        mode: 0o644,
    };
    let dir = |path: &str| Op::Dir {
        path: path.into(),
        mode: 0o755,
    };
    let mut ops = vec![
        dir("d1"),
        dir("d1/d2"),
        dir("d1/d2/d3"),
        dir("many"),
        file("small.txt", 300),
        file("medium.bin", 64 << 10),
        file("big.bin", 1 << 20),
        file("d1/tail.bin", 5000),
        file("d1/d2/d3/deep.bin", 12 << 10),
    ];
    // Enough entries (with long names) that the directory spans several blocks.
    for i in 0..70 {
        ops.push(file(
            &format!("many/entry-with-a-longer-name-{i:03}"),
            (i * 37) % 700,
        ));
    }
    if symlinks {
        ops.push(Op::Symlink {
            path: "link-dir".into(),
            target: "d1/d2".into(),
        });
        ops.push(Op::Symlink {
            path: "d1/link-long".into(),
            target: "x/".repeat(90) + "end",
        });
    }
    if xattrs {
        ops.push(Op::Xattr {
            path: "small.txt".into(),
            name: "user.fuzz".into(),
            value: b"fuzz xattr value".to_vec(),
        });
        ops.push(Op::Xattr {
            path: "d1".into(),
            name: "user.fuzz-dir".into(),
            value: vec![0x5A; 100],
        });
    }
    ops
}

/// Runs a build command (time-limited); Err with its output on failure.
fn build_cmd(program: &str, args: &[&str]) -> Result<(), String> {
    let mut c = command(program, args);
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .env("E2FSPROGS_FAKE_TIME", EPOCH)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC");
    let out = fuse::run_limited(&mut c, fuse::CMD_LIMIT)?;
    if out.ok() {
        Ok(())
    } else {
        Err(out.describe())
    }
}

/// Fills an (empty, mountable) image through lklfuse itself: Debian 12 has
/// no tool that fills HFS+, and a UDF made by mkudffs is writable.
fn populate_through_lklfuse(fs: Fs, img: &Path, dir: &Path, ops: &[Op]) -> Result<(), String> {
    let mnt = dir.join("mnt-build");
    fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let d = Daemon::start(img, &mnt, &[&format!("type={}", fs.fstype())])?;
    images::populate_host(&mnt, ops).map_err(|e| format!("populate through lklfuse: {e}"))?;
    d.stop();
    Ok(())
}

/// Makes the small pristine image (sizes as small as each mkfs allows).
fn build_pristine(fs: Fs, dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("src");
    let ops = tree(fs);
    images::populate_host(&src, &ops).map_err(|e| format!("populate {}: {e}", src.display()))?;
    let img = dir.join("pristine.img");
    let i = path_str(&img);
    let s = path_str(&src);
    let mib = |n: u64| images::blank_image(&img, n << 20);
    match fs {
        Fs::Ext2 | Fs::Ext3 | Fs::Ext4 => {
            mib(32)?;
            let e = format!("lazy_itable_init=0,lazy_journal_init=0,hash_seed={UUID}");
            build_cmd(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-t",
                    fs.fstype(),
                    "-b",
                    "4096",
                    "-U",
                    UUID,
                    "-E",
                    &e,
                    "-d",
                    s,
                    i,
                ],
            )?;
        }
        Fs::Xfs => {
            mib(320)?; // mkfs.xfs refuses less than 300 MB
            build_cmd("mkfs.xfs", &["-q", "-f", "-m", &format!("uuid={UUID}"), i])?;
            // As images::build: no Debian tool fills XFS from a directory; the host's XFS does.
            let m = images::HostMount::kernel(&img, &dir.join("mnt-build"), "xfs", "")?;
            build_cmd(
                "cp",
                &["-a", &format!("{s}/."), &format!("{}/", path_str(&m.dir))],
            )?;
        }
        Fs::Btrfs => {
            mib(128)?; // mkfs.btrfs's minimum with the default profiles
                       // Metadata `single`, not the default DUP: with two copies a damaged
                       // tree block is silently read from the other one, hiding the parsers.
            build_cmd(
                "mkfs.btrfs",
                &["-q", "-f", "-m", "single", "-U", UUID, "--rootdir", s, i],
            )?;
        }
        Fs::Vfat => {
            mib(64)?;
            build_cmd("mkfs.vfat", &["-F", "32", "-i", "6c6b6c66", i])?;
            let mut args = vec!["-s", "-m", "-i", i];
            let entries: Vec<String> = fs::read_dir(&src)
                .map_err(|e| e.to_string())?
                .map(|e| e.map(|e| path_str(&e.path()).to_string()))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            args.extend(entries.iter().map(String::as_str));
            args.push("::/");
            build_cmd("mcopy", &args)?;
        }
        Fs::Exfat => {
            mib(32)?;
            build_cmd("mkfs.exfat", &[i])?;
            let m = images::HostMount::exfat_fuse(&img, &dir.join("mnt-build"), false)?;
            build_cmd(
                "cp",
                &["-R", &format!("{s}/."), &format!("{}/", path_str(&m.dir))],
            )?;
        }
        Fs::Ntfs => {
            mib(32)?;
            build_cmd("mkfs.ntfs", &["-q", "-F", "-f", i])?;
            let m = images::HostMount::ntfs_3g(&img, &dir.join("mnt-build"), false)?;
            build_cmd(
                "cp",
                &[
                    "-R",
                    "-P",
                    &format!("{s}/."),
                    &format!("{}/", path_str(&m.dir)),
                ],
            )?;
        }
        Fs::Iso9660 => {
            build_cmd(
                "xorriso",
                &["-as", "mkisofs", "-quiet", "-R", "-J", "-o", i, s],
            )?;
        }
        Fs::Udf => {
            mib(32)?;
            // 2 KiB blocks: a UDF symlink must fit one block (as images::build).
            build_cmd("mkudffs", &["--media-type=hd", "--blocksize=2048", i])?;
            populate_through_lklfuse(fs, &img, dir, &ops)?;
        }
        Fs::Squashfs(comp) => {
            build_cmd(
                "mksquashfs",
                &[s, i, "-noappend", "-quiet", "-no-progress", "-comp", comp],
            )?;
        }
        Fs::Erofs | Fs::ErofsLz4 => {
            build_cmd("mkfs.erofs", &["--quiet", "-U", UUID, "-T", EPOCH, i, s])?;
        }
        Fs::F2fs => {
            mib(64)?; // mkfs.f2fs refuses 48 MiB
            build_cmd(
                "mkfs.f2fs",
                &["-q", "-f", "-O", "extra_attr,inode_checksum,sb_checksum", i],
            )?;
            build_cmd("sload.f2fs", &["-f", s, "-P", i])?;
        }
        Fs::Hfsplus => {
            images::make_hfsplus(&img, 32 << 20)?;
            populate_through_lklfuse(fs, &img, dir, &ops)?;
        }
    }
    Ok(img)
}

// ---------------------------------------------------------------------------------------------
// Byte access

fn read_at(f: &fs::File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) | Err(_) => break, // past the end: zeros
            Ok(n) => got += n,
        }
    }
    buf
}

fn write_at(f: &fs::File, off: u64, data: &[u8]) {
    f.write_all_at(data, off)
        .unwrap_or_else(|e| panic!("write {} bytes at {off}: {e}", data.len()));
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_be_bytes([b[at], b[at + 1]]))
}
fn be32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_be_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// Copies a sparse image keeping its holes (a plain copy would write out
/// hundreds of MiB of zeros per case).
fn sparse_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    let from = fs::File::open(src)?;
    let size = from.metadata()?.len();
    let to = fs::File::create(dst)?;
    to.set_len(size)?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in data_extents(&from, size) {
        let mut at = start;
        while at < end {
            let k = ((end - at) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..k], at)?;
            to.write_all_at(&buf[..k], at)?;
            at += k as u64;
        }
    }
    Ok(())
}

/// The file's data extents (SEEK_DATA/SEEK_HOLE); holes read as zeros.
fn data_extents(f: &fs::File, size: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, pos as i64, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            size
        } else {
            (hole as u64).min(size)
        };
        out.push((data as u64, hole));
        pos = hole;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Checksums (so that some mutations get past the first verifier)

const fn crc_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

const CRC32C: [u32; 256] = crc_table(0x82F6_3B78);
const CRC32: [u32; 256] = crc_table(0xEDB8_8320);

/// Reflected CRC without the final inversion (the kernel's `crc32c()`/`crc32_le()`).
fn crc_raw(table: &[u32; 256], mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The kernel's `crc_itu_t` (CRC-CCITT, MSB first), used by UDF.
fn crc_itu_t(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A checksummed structure whose checksum can be recomputed after a mutation.
#[derive(Clone, Debug)]
enum Csum {
    /// crc32c over `[start, start+len)` with the 4 bytes at `field` taken as
    /// zero; stored little-endian, inverted (`std`: xfs, btrfs) or raw (ext4, erofs).
    Crc32c {
        start: u64,
        len: u64,
        field: u64,
        std: bool,
    },
    /// f2fs: crc32 seeded with the magic over `[start, start+len)`, raw, at `start+len`.
    F2fs { start: u64, len: u64 },
    /// exFAT boot region: sectors 0..11, checksum sector 11.
    Exfat { sector: u64 },
    /// A UDF descriptor tag at `start` (tag checksum and descriptor CRC).
    UdfTag { start: u64 },
    /// ext4 group descriptor `group` (metadata_csum), 16 bits at +0x1E.
    Ext4Gd {
        sb: u64,
        desc: u64,
        group: u32,
        size: u64,
    },
    /// ext4 inode number `ino` at `at` (metadata_csum): 16 bits at +0x7C and,
    /// when the inode's extra part holds it, 16 more at +0x82.
    Ext4Inode {
        sb: u64,
        at: u64,
        ino: u32,
        size: u64,
    },
}

/// ext4's `s_csum_seed`: from the superblock's UUID unless it stores one.
fn ext4_csum_seed(f: &fs::File, sb: u64) -> u32 {
    let s = read_at(f, sb, 1024);
    if le32(&s, 0x60) & 0x2000 != 0 {
        le32(&s, 0x270) as u32
    } else {
        crc_raw(&CRC32C, !0, &s[0x68..0x78])
    }
}

impl Csum {
    fn name(&self) -> String {
        match self {
            Csum::Crc32c { start, .. } => format!("crc32c@{start:#x}"),
            Csum::F2fs { start, .. } => format!("f2fs-crc@{start:#x}"),
            Csum::Exfat { .. } => "exfat-boot-csum".into(),
            Csum::UdfTag { start } => format!("udf-tag@{start:#x}"),
            Csum::Ext4Gd { group, .. } => format!("ext4-gd{group}"),
            Csum::Ext4Inode { ino, .. } => format!("ext4-inode{ino}"),
        }
    }

    /// (offset, bytes) the checksum should hold for the image's current content.
    fn compute(&self, f: &fs::File) -> (u64, Vec<u8>) {
        match *self {
            Csum::Crc32c {
                start,
                len,
                field,
                std,
            } => {
                let mut b = read_at(f, start, len as usize);
                if field >= start && field + 4 <= start + len {
                    let at = (field - start) as usize;
                    b[at..at + 4].fill(0);
                }
                let raw = crc_raw(&CRC32C, !0, &b);
                let v = if std { !raw } else { raw };
                (field, v.to_le_bytes().to_vec())
            }
            Csum::F2fs { start, len } => {
                let b = read_at(f, start, len as usize);
                let v = crc_raw(&CRC32, 0xF2F5_2010, &b);
                (start + len, v.to_le_bytes().to_vec())
            }
            Csum::Exfat { sector } => {
                let b = read_at(f, 0, (11 * sector) as usize);
                let mut c: u32 = 0;
                for (i, &x) in b.iter().enumerate() {
                    if i == 106 || i == 107 || i == 112 {
                        continue;
                    }
                    c = (if c & 1 != 0 { 0x8000_0000u32 } else { 0 })
                        .wrapping_add(c >> 1)
                        .wrapping_add(u32::from(x));
                }
                let one = c.to_le_bytes();
                (11 * sector, one.repeat((sector / 4) as usize))
            }
            Csum::UdfTag { start } => {
                let tag = read_at(f, start, 16);
                let crc_len = le16(&tag, 10) as usize;
                let body = read_at(f, start + 16, crc_len.min(1 << 16));
                let crc = crc_itu_t(0, &body);
                let mut t = tag.clone();
                t[8..10].copy_from_slice(&crc.to_le_bytes());
                let sum = t
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 4)
                    .fold(0u8, |s, (_, &x)| s.wrapping_add(x));
                t[4] = sum;
                (start, t)
            }
            Csum::Ext4Gd {
                sb,
                desc,
                group,
                size,
            } => {
                let seed = ext4_csum_seed(f, sb);
                let d = read_at(f, desc, size as usize);
                let mut c = crc_raw(&CRC32C, seed, &group.to_le_bytes());
                c = crc_raw(&CRC32C, c, &d[..0x1E]);
                c = crc_raw(&CRC32C, c, &[0, 0]);
                if size > 0x20 {
                    c = crc_raw(&CRC32C, c, &d[0x20..]);
                }
                (desc + 0x1E, ((c & 0xFFFF) as u16).to_le_bytes().to_vec())
            }
            Csum::Ext4Inode { sb, at, ino, size } => {
                // ext4_inode_csum(): seeded with the inode number and generation,
                // over the whole on-disk inode with the checksum fields as zero.
                let mut raw = read_at(f, at, size as usize);
                let hi = size > 128 && 128 + le16(&raw, 0x80) >= 0x84;
                let mut c = crc_raw(&CRC32C, ext4_csum_seed(f, sb), &ino.to_le_bytes());
                c = crc_raw(&CRC32C, c, &raw[0x64..0x68]);
                raw[0x7C..0x7E].fill(0);
                if hi {
                    raw[0x82..0x84].fill(0);
                }
                c = crc_raw(&CRC32C, c, &raw);
                let mut out = read_at(f, at + 0x7C, 8);
                out[0..2].copy_from_slice(&((c & 0xFFFF) as u16).to_le_bytes());
                if hi {
                    out[6..8].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
                }
                (at + 0x7C, out)
            }
        }
    }

    /// Whether the pristine image holds exactly what [`Csum::compute`] gives
    /// (checks the layout guesses and the CRC code: only verified ones are used).
    fn verifies(&self, f: &fs::File) -> bool {
        let (at, want) = self.compute(f);
        read_at(f, at, want.len()) == want
    }

    /// Rewrites the checksum; whether it changed.
    fn fix(&self, f: &fs::File) -> bool {
        let (at, want) = self.compute(f);
        if read_at(f, at, want.len()) == want {
            return false;
        }
        write_at(f, at, &want);
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Where the metadata is

/// A superblock-like region; `mirror`: where its backup copy starts.
#[derive(Clone, Debug)]
struct Region {
    what: &'static str,
    start: u64,
    len: u64,
    mirror: Option<u64>,
}

struct Layout {
    size: u64,
    regions: Vec<Region>,
    /// Offsets of the 512-byte sectors that are neither zero nor pattern.
    meta: Vec<u64>,
    /// Checksums verified on the pristine image.
    csums: Vec<Csum>,
    /// Checksum sites that did not verify (reported once: layout guesses).
    unverified: Vec<String>,
}

fn region(what: &'static str, start: u64, len: u64) -> Region {
    Region {
        what,
        start,
        len,
        mirror: None,
    }
}

fn layout(fs: Fs, img: &Path) -> Layout {
    let f = fs::File::open(img).unwrap_or_else(|e| panic!("open {}: {e}", img.display()));
    let size = f.metadata().expect("stat pristine image").len();
    // Classify sectors. Content repeated over and over (a freshly formatted
    // log: XFS stamps every log sector alike, NTFS fills $LogFile with 0xFF)
    // counts a few times only, so that mutations go where the variety is.
    let mut meta = Vec::new();
    let mut seen: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in data_extents(&f, size) {
        let mut at = start & !(SECTOR - 1);
        while at < end {
            let k = ((end - at) as usize).min(buf.len());
            let chunk = &mut buf[..k];
            f.read_exact_at(chunk, at).expect("read pristine image");
            for (i, sec) in chunk.chunks(SECTOR as usize).enumerate() {
                let zero = sec.iter().all(|&b| b == 0);
                let pattern = sec.iter().all(|&b| b == PATTERN);
                if !zero && !pattern {
                    let n = seen.entry(fnv1a(sec)).or_insert(0);
                    *n += 1;
                    if *n <= 4 {
                        meta.push(at + i as u64 * SECTOR);
                    }
                }
            }
            at += k as u64;
        }
    }
    let head = read_at(&f, 0, 8192);
    if fs == Fs::Xfs {
        // The internal log of a clean filesystem is read only to find its
        // head and tail: its first block stays a target, the rest would only
        // dilute the mutations (every sector there differs by its stamp).
        let bs = be32(&head, 4);
        let agblklog = u32::from(head[124].min(40));
        let logstart = u64::from_be_bytes(head[48..56].try_into().expect("8 bytes"));
        let (agno, agbno) = (logstart >> agblklog, logstart & ((1 << agblklog) - 1));
        let start = (agno * be32(&head, 84) + agbno) * bs + bs;
        let end = start - bs + be32(&head, 96) * bs;
        meta.retain(|&m| m < start || m >= end);
    }
    let mut regions = Vec::new();
    // Checksums that must verify on the pristine image (else: reported) and
    // candidates probed at every plausible place (kept where they verify).
    let mut csums = Vec::new();
    let mut probes = Vec::new();
    // The block-aligned starts of metadata sectors, for the probes.
    let blocks_of = |bs: u64| {
        let mut v: Vec<u64> = meta.iter().map(|&m| m & !(bs - 1)).collect();
        v.dedup();
        v
    };
    match fs {
        Fs::Ext2 | Fs::Ext3 | Fs::Ext4 => {
            let sb = &head[1024..2048];
            let bs = 1024u64 << le32(sb, 24).min(6);
            let first = le32(sb, 20);
            let bpg = le32(sb, 32).max(1);
            let incompat = le32(sb, 0x60);
            let mut blocks = le32(sb, 4);
            let desc = if incompat & 0x80 != 0 {
                blocks |= le32(sb, 0x150) << 32;
                le16(sb, 0xFE).max(32)
            } else {
                32
            };
            let groups = (blocks - first).div_ceil(bpg);
            let gdt = (first + 1) * bs;
            regions.push(region("superblock", 1024, 1024));
            regions.push(region("group descriptors", gdt, groups * desc));
            if le32(sb, 0x64) & 0x400 != 0 {
                let ipg = le32(sb, 0x28);
                let isz = le16(sb, 0x58).max(128);
                for g in 0..groups.min(64) {
                    let at = gdt + g * desc;
                    csums.push(Csum::Ext4Gd {
                        sb: 1024,
                        desc: at,
                        group: g as u32,
                        size: desc,
                    });
                    // Every inode in use (not all zero) in the group's inode table.
                    let d = read_at(&f, at, desc as usize);
                    let mut table = le32(&d, 8);
                    if desc >= 64 {
                        table |= le32(&d, 0x28) << 32;
                    }
                    let bytes = read_at(&f, table * bs, (ipg * isz) as usize);
                    for (i, inode) in bytes.chunks(isz as usize).enumerate() {
                        if inode.iter().any(|&b| b != 0) {
                            probes.push(Csum::Ext4Inode {
                                sb: 1024,
                                at: table * bs + i as u64 * isz,
                                ino: (g * ipg) as u32 + i as u32 + 1,
                                size: isz,
                            });
                        }
                    }
                }
                // After the descriptors: the seed may come from the superblock's UUID.
                csums.push(Csum::Crc32c {
                    start: 1024,
                    len: 0x3FC,
                    field: 1024 + 0x3FC,
                    std: false,
                });
            }
        }
        Fs::Xfs => {
            let bs = be32(&head, 4);
            let agblocks = be32(&head, 84);
            let agcount = be32(&head, 88).min(64);
            let sect = be16(&head, 102).max(512);
            for ag in 0..agcount {
                let at = ag * agblocks * bs;
                regions.push(region("AG headers (sb, agf, agi, agfl)", at, 4 * sect));
                // Offsets of sb_crc, agf_crc, agi_crc, agfl_crc (xfs_format.h).
                for (k, off) in [(0, 224), (1, 216), (2, 312), (3, 32)] {
                    csums.push(Csum::Crc32c {
                        start: at + k * sect,
                        len: sect,
                        field: at + k * sect + off,
                        std: true,
                    });
                }
            }
            // v5 inodes (di_crc at 100) and blocks: directory blocks (crc at 4),
            // dir/attr leaves and nodes (12), short and long btree blocks (52, 64).
            let isz = be16(&head, 104).clamp(256, 2048);
            for at in blocks_of(isz) {
                probes.push(Csum::Crc32c {
                    start: at,
                    len: isz,
                    field: at + 100,
                    std: true,
                });
            }
            let dirblk = bs << head[192].min(6);
            for (len, off) in [
                (bs, 4),
                (bs, 12),
                (bs, 52),
                (bs, 64),
                (dirblk, 4),
                (dirblk, 12),
            ] {
                for at in blocks_of(len) {
                    probes.push(Csum::Crc32c {
                        start: at,
                        len,
                        field: at + off,
                        std: true,
                    });
                }
            }
        }
        Fs::Btrfs => {
            regions.push(region("superblock", 65536, 4096));
            // Tree blocks: crc32c of everything after the 32-byte checksum field.
            let nodesize = le32(&read_at(&f, 65536, 0x100), 0x94).clamp(4096, 65536);
            for at in blocks_of(nodesize) {
                probes.push(Csum::Crc32c {
                    start: at + 0x20,
                    len: nodesize - 0x20,
                    field: at,
                    std: true,
                });
            }
            csums.push(Csum::Crc32c {
                start: 65536 + 0x20,
                len: 4096 - 0x20,
                field: 65536,
                std: true,
            });
        }
        Fs::Vfat => {
            let bps = le16(&head, 11).max(512);
            regions.push(region("boot sector", 0, 512));
            regions.push(region("FSInfo", le16(&head, 48) * bps, 512));
            regions.push(region("FAT start", le16(&head, 14) * bps, 512));
        }
        Fs::Exfat => {
            let sector = 1u64 << head[108].clamp(9, 12);
            let cluster = sector << head[109].min(16);
            let heap = le32(&head, 88) * sector;
            let root = heap + le32(&head, 96).saturating_sub(2) * cluster;
            regions.push(region("boot sector", 0, 512));
            regions.push(region("FAT start", le32(&head, 80) * sector, 512));
            regions.push(region("root directory", root, 512));
            csums.push(Csum::Exfat { sector });
        }
        Fs::Ntfs => {
            let bps = le16(&head, 0x0B).max(512);
            let spc = match head[0x0D] {
                s if s > 0x80 => 1u64 << (256 - u64::from(s)).min(20),
                s => u64::from(s).max(1),
            };
            let mft = le64(&head, 0x30).saturating_mul(bps * spc);
            let backup = (le64(&head, 0x28).saturating_mul(bps)).min(size - 512);
            regions.push(Region {
                mirror: Some(backup),
                ..region("boot sector", 0, 512)
            });
            regions.push(region("MFT start", mft, 4096));
        }
        Fs::Iso9660 => regions.push(region("volume descriptors", 32768, 3 * 2048)),
        Fs::Udf => {
            let anchor = 256 * 2048;
            let a = read_at(&f, anchor, 32);
            let (vds_len, vds) = (le32(&a, 16).min(32 * 2048), le32(&a, 20) * 2048);
            regions.push(region("volume recognition", 32768, 3 * 2048));
            regions.push(region("anchor", anchor, 512));
            regions.push(region("volume descriptor sequence", vds, vds_len));
            csums.push(Csum::UdfTag { start: anchor });
            for blk in 0..vds_len / 2048 {
                csums.push(Csum::UdfTag {
                    start: vds + blk * 2048,
                });
            }
        }
        Fs::Squashfs(_) => regions.push(region("superblock", 0, 96)),
        Fs::Erofs | Fs::ErofsLz4 => {
            regions.push(region("superblock", 1024, 128));
            let blksz = 1u64 << head[1024 + 12].clamp(9, 16);
            if le32(&head, 1024 + 8) & 1 != 0 {
                csums.push(Csum::Crc32c {
                    start: 1024,
                    len: blksz - 1024,
                    field: 1024 + 4,
                    std: false,
                });
            }
        }
        Fs::F2fs => {
            let cp = le32(&head, 1024 + 76) * 4096;
            regions.push(Region {
                mirror: Some(4096 + 1024),
                ..region("superblock", 1024, 3072)
            });
            regions.push(region("checkpoint", cp, 4096));
            let off = le32(&head, 1024 + 32);
            if off > 0 && off + 4 <= 3072 {
                for sb in [1024, 4096 + 1024] {
                    csums.push(Csum::F2fs {
                        start: sb,
                        len: off,
                    });
                }
            }
        }
        Fs::Hfsplus => regions.push(Region {
            mirror: Some(size - 1024),
            ..region("volume header", 1024, 512)
        }),
    }
    for r in &mut regions {
        r.len = r.len.min(size.saturating_sub(r.start)).max(1);
        r.start = r.start.min(size - 1);
    }
    // Probed sites first: a superblock checksum may cover seeds they use.
    let mut verified: Vec<Csum> = probes.into_iter().filter(|c| c.verifies(&f)).collect();
    let (csums, bad): (Vec<Csum>, Vec<Csum>) = csums.into_iter().partition(|c| c.verifies(&f));
    verified.extend(csums);
    let csums = verified;
    if meta.is_empty() {
        meta = regions.iter().map(|r| r.start & !(SECTOR - 1)).collect();
    }
    Layout {
        size,
        regions,
        meta,
        csums,
        unverified: bad.iter().map(Csum::name).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Applies one mutation chosen by `rng`; what was done, for the reproduction line.
fn mutate(rng: &mut Rng, lay: &Layout, img: &Path) -> String {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap_or_else(|e| panic!("open {}: {e}", img.display()));
    let pick_meta = |rng: &mut Rng| lay.meta[rng.below(lay.meta.len() as u64) as usize];
    let mut what = String::new();
    match rng.below(20) {
        // Superblock-like region: flip 1-8 bits (sometimes in the backup copy too).
        0..=6 => {
            let r = &lay.regions[rng.below(lay.regions.len() as u64) as usize];
            let n = 1 + rng.below(8);
            let both = r.mirror.is_some() && rng.below(2) == 0;
            let _ = write!(what, "flip {n} bit(s) in the {} at", r.what);
            for _ in 0..n {
                let off = r.start + rng.below(r.len);
                let bit = rng.below(8) as u8;
                let mut targets = vec![off];
                if both {
                    targets.push(r.mirror.expect("checked") + (off - r.start));
                }
                for at in targets {
                    if at < lay.size {
                        let mut b = read_at(&f, at, 1);
                        b[0] ^= 1 << bit;
                        write_at(&f, at, &b);
                    }
                }
                let _ = write!(what, " {off:#x}.{bit}");
            }
            if both {
                what.push_str(" (and the backup copy)");
            }
        }
        // A 1/2/4/8-byte field in a metadata sector: 0, all ones or random.
        7..=11 => {
            let width = 1u64 << rng.below(4);
            let off = (pick_meta(rng) + rng.below(SECTOR / width) * width).min(lay.size - width);
            let old = read_at(&f, off, width as usize);
            let new = match rng.below(3) {
                0 => vec![0u8; width as usize],
                1 => vec![0xFFu8; width as usize],
                _ => images::random_bytes(rng.next_u64(), width as usize),
            };
            write_at(&f, off, &new);
            let _ = write!(
                what,
                "set the {width}-byte field at {off:#x} from {} to {}",
                images::hex(&old),
                images::hex(&new)
            );
        }
        // Random bytes over a fragment starting in a metadata sector.
        12..=15 => {
            let off = pick_meta(rng) + rng.below(SECTOR);
            let len = (1 + rng.below(128)).min(lay.size.saturating_sub(off));
            let seed = rng.next_u64();
            write_at(&f, off, &images::random_bytes(seed, len as usize));
            let _ = write!(
                what,
                "overwrite {len} bytes at {off:#x} with random bytes (seed {seed:#x})"
            );
        }
        // Zero the 4 KiB block holding a metadata sector.
        _ => {
            let off = pick_meta(rng) & !4095;
            let len = 4096.min(lay.size - off);
            write_at(&f, off, &vec![0u8; len as usize]);
            let _ = write!(what, "zero the {len} bytes at {off:#x}");
        }
    }
    // Half the time, recompute the checksums we know how to: the damage then
    // reaches the parsers instead of stopping at the first verifier.
    if !lay.csums.is_empty() && rng.below(2) == 0 {
        let fixed: Vec<String> = lay
            .csums
            .iter()
            .filter(|c| c.fix(&f))
            .map(Csum::name)
            .collect();
        if !fixed.is_empty() {
            let shown = fixed.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
            let more = fixed.len().saturating_sub(6);
            let _ = write!(what, "; checksums recomputed: {shown}");
            if more > 0 {
                let _ = write!(what, " and {more} more");
            }
        }
    }
    f.sync_all().expect("sync the mutated image");
    what
}

// ---------------------------------------------------------------------------------------------
// The walker (a child process)

const WALKER: &str = r#"
import errno, os, stat, sys, time
root = os.fsencode(sys.argv[1])
writable = sys.argv[2] == "1"
soft = float(sys.argv[3])
MAX_ENTRIES, MAX_DIR, MAX_DEPTH = 3000, 2000, 16
READ_CAP, TOTAL_CAP = 8 << 20, 64 << 20
start = time.monotonic()
errs = {}
st = dict(entries=0, dirs=0, files=0, bytes=0, links=0, xattrs=0, writes_ok=0, budget=0)

def note(e):
    n = errno.errorcode.get(e.errno, "errno%s" % e.errno) if e.errno else type(e).__name__
    errs[n] = errs.get(n, 0) + 1

def val(f, *a, **k):
    try:
        return f(*a, **k)
    except OSError as e:
        note(e)
    return None

def ok(f, *a, **k):
    try:
        f(*a, **k)
        return 1
    except OSError as e:
        note(e)
    return 0

def over():
    if time.monotonic() - start > soft or st["entries"] >= MAX_ENTRIES or st["bytes"] >= TOTAL_CAP:
        st["budget"] = 1
        return True
    return False

def xattrs(p):
    names = val(os.listxattr, p, follow_symlinks=False)
    for n in (names or [])[:64]:
        if val(os.getxattr, p, n, follow_symlinks=False) is not None:
            st["xattrs"] += 1

def read(p):
    fd = val(os.open, p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if fd is None:
        return
    try:
        got = 0
        while got < READ_CAP and not over():
            b = os.read(fd, 1 << 20)
            if not b:
                break
            got += len(b)
            st["bytes"] += len(b)
    except OSError as e:
        note(e)
    finally:
        ok(os.close, fd)

dirs = []
def walk(d, depth, seen):
    names = []
    try:
        with os.scandir(d) as it:
            while len(names) < MAX_DIR:
                try:
                    e = next(it)
                except StopIteration:
                    break
                names.append(e.name)
    except OSError as e:
        note(e)
    for name in names:
        if over():
            return
        p = d + b"/" + name
        st["entries"] += 1
        s = val(os.lstat, p)
        if s is None:
            continue
        xattrs(p)
        if stat.S_ISDIR(s.st_mode):
            st["dirs"] += 1
            key = (s.st_dev, s.st_ino)
            if depth < MAX_DEPTH and key not in seen:
                seen.add(key)
                dirs.append(p)
                walk(p, depth + 1, seen)
        elif stat.S_ISREG(s.st_mode):
            st["files"] += 1
            read(p)
        elif stat.S_ISLNK(s.st_mode):
            if val(os.readlink, p) is not None:
                st["links"] += 1

def writes(base):
    w = base + b"/.fuzz-w"
    f, g = w + b"/f", w + b"/g"
    n = ok(os.mkdir, w)
    fd = val(os.open, f, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    if fd is not None:
        n += 1 + ok(os.write, fd, b"\xa5" * 65536) + ok(os.fsync, fd) + ok(os.close, fd)
    n += ok(os.rename, f, g) + ok(os.truncate, g, 1000) + ok(os.unlink, g) + ok(os.rmdir, w)
    st["writes_ok"] += n

val(os.statvfs, root)
r = val(os.lstat, root)
xattrs(root)
walk(root, 0, {(r.st_dev, r.st_ino)} if r else set())
if writable:
    for base in [root] + dirs[:2]:
        if over():
            break
        writes(base)
for k, v in sorted(errs.items()):
    print("E", k, v)
for k, v in st.items():
    print("S", k, v)
print("DONE")
"#;

#[derive(Default)]
struct Walk {
    errnos: BTreeMap<String, u64>,
    stats: BTreeMap<String, u64>,
}

fn parse_walk(stdout: &str) -> Option<Walk> {
    let mut w = Walk::default();
    let mut done = false;
    for line in stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["E", k, v] => {
                w.errnos.insert(k.into(), v.parse().ok()?);
            }
            ["S", k, v] => {
                w.stats.insert(k.into(), v.parse().ok()?);
            }
            ["DONE"] => done = true,
            _ => {}
        }
    }
    done.then_some(w)
}

// ---------------------------------------------------------------------------------------------
// One case

enum Outcome {
    Refused,
    Clean,
    /// Non-zero exit with a log line after unmount (e.g. an unclean unmount).
    Unclean(i32),
    /// The daemon's fatal-error exit (3, "fatal" logged, mount removed).
    Fatal(String),
}

const PANIC_TEXT: &[&str] = &["panicked at", "RUST_BACKTRACE", "stack backtrace"];

fn is_log_record(line: &str) -> bool {
    let t = line.trim_start();
    ["INFO ", "DEBUG ", "TRACE ", "WARN ", "ERROR "]
        .iter()
        .any(|p| t.starts_with(p))
}

/// The last `n` lines of a log, for failure messages.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n    ")
}

/// The daemon's own fatal-error line ("lklfuse: fatal: ..."), else any line saying "fatal".
fn fatal_line(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("fatal:"))
        .or_else(|| {
            log.lines()
                .find(|l| l.to_ascii_lowercase().contains("fatal"))
        })
        .map(|l| l.trim().to_string())
}

/// The first line of a kernel WARN/BUG/oops report in a daemon's output.
fn kernel_splat(log: &str) -> Option<String> {
    const MARKS: &[&str] = &[
        "WARNING: CPU",
        "WARNING: at",
        "BUG:",
        "kernel BUG",
        "Oops",
        "Call Trace",
        "UBSAN",
        "general protection",
    ];
    log.lines()
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_string())
}

/// Whether the mount at `mnt` goes away within [`MOUNT_GONE_LIMIT`].
fn mount_gone(mnt: &Path) -> bool {
    let deadline = Instant::now() + MOUNT_GONE_LIMIT;
    loop {
        if !fuse_mounted(mnt) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon's threads and where they wait, for hang reports.
fn daemon_state(pid: Option<u32>) -> String {
    let Some(pid) = pid else {
        return "pid unknown".into();
    };
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("pid {pid} gone");
    };
    // Grouped by (state, wait channel): dozens of kernel threads mostly idle alike.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks.flatten() {
        let p = t.path();
        let stat = fs::read_to_string(p.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.chars().next().unwrap_or('?'))
            .unwrap_or('?');
        let comm = fs::read_to_string(p.join("comm")).unwrap_or_default();
        let wchan = fs::read_to_string(p.join("wchan")).unwrap_or_default();
        groups
            .entry(format!("{state}:{}", wchan.trim()))
            .or_default()
            .push(comm.trim().to_string());
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(k, names)| {
            let shown = names.iter().take(6).cloned().collect::<Vec<_>>().join(",");
            format!("{k} x{} ({shown})", names.len())
        })
        .collect();
    format!("pid {pid} threads by state:wchan: {}", parts.join("; "))
}

/// Parses the status out of `Daemon::start`'s "exited with STATUS before
/// mounting" message (its ExitStatus' Display): (code, signal).
fn parse_early_exit(msg: &str) -> Option<(Option<i32>, Option<i32>)> {
    let rest = &msg[msg.find(" exited with ")? + " exited with ".len()..];
    let status = &rest[..rest.find(" before mounting")?];
    if let Some(c) = status.strip_prefix("exit status: ") {
        return Some((c.trim().parse().ok(), None));
    }
    let s = status.strip_prefix("signal: ")?;
    let n = s.split_whitespace().next()?.parse().ok()?;
    Some((None, Some(n)))
}

/// Checks a start that did not mount.
fn check_refused(err: &str, mnt: &Path) -> Result<Outcome, String> {
    if err.contains("no mount at") {
        return Err(format!(
            "hang: neither mounted nor exited within the mount limit: {err}"
        ));
    }
    let Some((code, signal)) = parse_early_exit(err) else {
        return Err(format!(
            "could not start or unrecognised start error: {err}"
        ));
    };
    let log = err.split_once("its output:\n").map_or("", |(_, l)| l);
    if let Some(sig) = signal {
        return Err(format!(
            "refused start killed by signal {sig}:\n    {}",
            tail(log, 30)
        ));
    }
    if let Some(p) = PANIC_TEXT.iter().find(|p| log.contains(*p)) {
        return Err(format!(
            "panic text {p:?} in the output:\n    {}",
            tail(log, 30)
        ));
    }
    if fuse_mounted(mnt) {
        lazy_unmount(mnt);
        return Err(format!(
            "refused start left a mount:\n    {}",
            tail(log, 20)
        ));
    }
    match code {
        Some(0) | None => Err(format!(
            "exited {code:?} without mounting:\n    {}",
            tail(log, 20)
        )),
        Some(3) if fatal_line(log).is_some() => Ok(Outcome::Fatal(
            fatal_line(log).unwrap_or_default() + " (before mounting)",
        )),
        Some(_) => {
            let lines: Vec<&str> = log.lines().filter(|l| !is_log_record(l)).collect();
            if lines.len() == 1 && !lines[0].trim().is_empty() {
                Ok(Outcome::Refused)
            } else {
                Err(format!(
                    "refused start: expected one error line besides log records, got {}:\n    {}",
                    lines.len(),
                    tail(log, 20)
                ))
            }
        }
    }
}

/// Checks how a daemon ended (it has exited with `status`); `asked`: whether
/// it was unmounted (else it stopped by itself, which only a fatal error may do).
fn check_exit(status: ExitStatus, d: &Daemon, asked: bool) -> Result<Outcome, String> {
    let log = d.log_text();
    if let Some(sig) = status.signal() {
        return Err(format!(
            "daemon killed by signal {sig}:\n    {}",
            tail(&log, 30)
        ));
    }
    if let Some(p) = PANIC_TEXT.iter().find(|p| log.contains(*p)) {
        return Err(format!(
            "panic text {p:?} in the daemon's output:\n    {}",
            tail(&log, 30)
        ));
    }
    if !mount_gone(&d.mnt) {
        lazy_unmount(&d.mnt);
        return Err(format!(
            "the daemon exited ({status}) but its mount stayed:\n    {}",
            tail(&log, 20)
        ));
    }
    match status.code() {
        Some(3) if fatal_line(&log).is_some() => {
            Ok(Outcome::Fatal(fatal_line(&log).unwrap_or_default()))
        }
        Some(c) if !asked => Err(format!(
            "the daemon stopped by itself during the walk (exit {c}), not as a fatal error:\n    {}",
            tail(&log, 20)
        )),
        Some(0) => Ok(Outcome::Clean),
        Some(c) => {
            let said = log
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("INFO "));
            if said {
                Ok(Outcome::Unclean(c))
            } else {
                Err(format!(
                    "exit {c} without saying why:\n    {}",
                    tail(&log, 20)
                ))
            }
        }
        None => Err(format!("no exit code: {status}")),
    }
}

/// Ends a hung case: SIGKILL the daemon, unmount; the report.
fn kill_hung(mut d: Daemon, what: String) -> String {
    let state = daemon_state(d.pid());
    if let Some(pid) = d.pid() {
        // SAFETY: kill has no memory-safety preconditions; pid is our daemon.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = d.wait_exit(Duration::from_secs(10));
    lazy_unmount(&d.mnt);
    format!(
        "hang: {what}\n    daemon: {state}\n    {}",
        tail(&d.log_text(), 30)
    )
}

/// Mounts, walks, unmounts one image.
/// `walk`: what the walker saw, if it ran; `log`: the daemon's output.
fn run_case(
    fs: Fs,
    img: &Path,
    mnt: &Path,
    walk: &mut Option<Walk>,
    log: &mut String,
) -> Result<Outcome, String> {
    let ty = format!("type={}", fs.fstype());
    // A kernel lockup on a damaged image ends the daemon (exit 3, mount removed) well
    // before the walker counts as hung.
    let mut opts = vec![ty.as_str(), "watchdog=20"];
    if !fs.writable() {
        opts.push("ro");
    }
    let mut d = match Daemon::start(img, mnt, &opts) {
        Ok(d) => d,
        Err(e) => {
            log.clone_from(&e);
            return check_refused(&e, mnt);
        }
    };
    let rw = if fs.writable() { "1" } else { "0" };
    let soft = WALK_SOFT_SECS.to_string();
    let mut c = command(fuse::python(), &["-c", WALKER, path_str(mnt), rw, &soft]);
    let out = match fuse::run_limited(&mut c, WALK_LIMIT) {
        Ok(out) => out,
        Err(e) => return Err(kill_hung(d, format!("walker: {e}"))),
    };
    match parse_walk(&out.stdout) {
        Some(w) => *walk = Some(w),
        None => {
            // Not a product failure as such, but nothing was checked: report it.
            let _ = kill_hung(d, String::new());
            return Err(format!("the walker failed: {}", out.describe()));
        }
    }
    // The daemon may have ended itself during the walk (fatal error).
    if let Ok(Some(status)) = d.wait_exit(Duration::ZERO) {
        *log = d.log_text();
        return check_exit(status, &d, false);
    }
    let m = path_str(mnt);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = fuse::run_limited(
            &mut command("fusermount3", &["-u", m]),
            Duration::from_secs(30),
        );
        let busy = matches!(&r, Ok(o) if !o.ok() && o.stderr.contains("busy"));
        if !busy || Instant::now() >= deadline {
            if !matches!(&r, Ok(o) if o.ok()) && fuse_mounted(mnt) {
                lazy_unmount(mnt);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match d.wait_exit(fuse::EXIT_LIMIT) {
        Ok(Some(status)) => {
            *log = d.log_text();
            check_exit(status, &d, true)
        }
        Ok(None) => Err("daemon status unknown".into()),
        Err(e) => Err(kill_hung(d, format!("after unmount: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// One filesystem

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

fn case_seed(name: &str, base: u64, case: u64) -> u64 {
    // The name's hash, mixed with the seed base and the case index.
    fnv1a(name.as_bytes())
        ^ base.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (case + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

#[derive(Default)]
struct Tally {
    cases: u64,
    refused: u64,
    mounted: u64,
    clean: u64,
    unclean: u64,
    fatal: Vec<String>,
    /// Cases whose kernel printed a warning or BUG splat.
    splats: Vec<String>,
    /// errno name -> (count, first case that saw it): the case to replay.
    errnos: BTreeMap<String, (u64, u64)>,
    walked: BTreeMap<String, u64>,
    failures: Vec<String>,
    hangs: usize,
}

/// Copies a case's image where it outlives the test directory; the path.
fn keep_finding(findings: &Path, img: &Path, name: &str, base: u64, case: u64) -> String {
    let kept = findings.join(format!("{name}-seed{base}-case{case}.img"));
    match fs::create_dir_all(findings).and_then(|()| sparse_copy(img, &kept)) {
        Ok(()) => kept.display().to_string(),
        Err(e) => format!("(could not keep a copy at {}: {e})", kept.display()),
    }
}

/// The unmutated image must mount, walk without errors (every file read
/// whole, every write step done) and unmount cleanly: otherwise the harness
/// would be checking nothing.
fn baseline(name: &str, fs: Fs, pristine: &Path, dir: &Path, mnt: &Path) {
    let img = dir.join("baseline.img");
    sparse_copy(pristine, &img).expect("copy the pristine image");
    let mut walk = None;
    let mut log = String::new();
    let outcome = run_case(fs, &img, mnt, &mut walk, &mut log);
    assert!(
        matches!(outcome, Ok(Outcome::Clean)),
        "{name}: the pristine image does not mount, walk and unmount cleanly: {}",
        match &outcome {
            Ok(Outcome::Refused) => "refused".to_string(),
            Ok(Outcome::Unclean(c)) => format!("unclean exit {c}"),
            Ok(Outcome::Fatal(l)) => l.clone(),
            Ok(Outcome::Clean) => String::new(),
            Err(e) => e.clone(),
        }
    );
    let w = walk.expect("a clean outcome comes with a walk");
    let stat = |k: &str| w.stats.get(k).copied().unwrap_or(0);
    // Not EOPNOTSUPP/ENODATA: xattrs where a filesystem has none (hfsplus
    // answers ENODATA for an inode without attributes, see images.rs).
    let unexpected: Vec<_> = w
        .errnos
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "EOPNOTSUPP" | "ENOTSUP" | "ENODATA"))
        .collect();
    let (files, bytes) = tree(fs).iter().fold((0, 0), |(n, b), op| match op {
        Op::File { data, .. } => (n + 1, b + data.len() as u64),
        _ => (n, b),
    });
    let writes = if fs.writable() { 3 * 9 } else { 0 };
    assert!(
        unexpected.is_empty()
            && stat("files") == files
            && stat("bytes") == bytes
            && stat("writes_ok") == writes
            && stat("budget") == 0,
        "{name}: walking the pristine image: errnos {unexpected:?}, stats {:?}; expected \
         {files} files, {bytes} bytes, {writes} write steps",
        w.stats
    );
    let _ = fs::remove_file(&img);
}

fn fuzz(name: &'static str, fs: Fs) {
    let cases = env_u64("LKLFUSE_FUZZ_CASES").unwrap_or(50);
    let base = env_u64("LKLFUSE_FUZZ_SEED").unwrap_or(1);
    let only = env_u64("LKLFUSE_FUZZ_ONLY");
    // One line per case (the mutation, the outcome, the walker's errnos).
    let verbose = env_u64("LKLFUSE_FUZZ_VERBOSE").unwrap_or(0) != 0 || only.is_some();
    // Generous: normal cases take about a second; hangs stop the run after MAX_HANGS.
    let limit = Duration::from_secs(900 + 20 * if only.is_some() { 1 } else { cases });
    fuse_test(FILE, name, limit, move |dir| {
        let start = Instant::now();
        let pristine = build_pristine(fs, &dir)
            .unwrap_or_else(|e| panic!("{name}: building the pristine image: {e}"));
        let lay = layout(fs, &pristine);
        eprintln!(
            "{name}: pristine image {} ({} MiB, {} metadata sectors, checksums known: {}{}) in {:.1} s",
            pristine.display(),
            lay.size >> 20,
            lay.meta.len(),
            lay.csums.len(),
            if lay.unverified.is_empty() {
                String::new()
            } else {
                format!(", not matching: {}", lay.unverified.join(" "))
            },
            start.elapsed().as_secs_f64()
        );
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt).expect("create the mount point");
        baseline(name, fs, &pristine, &dir, &mnt);
        let findings = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lklfuse-fuzz-findings");
        let mut t = Tally::default();
        let list: Vec<u64> = match only {
            Some(n) => vec![n],
            None => (0..cases).collect(),
        };
        for case in list {
            if t.hangs >= MAX_HANGS {
                t.failures.push(format!(
                    "{name}: stopped before case {case}: {MAX_HANGS} hangs already"
                ));
                break;
            }
            let mut rng = Rng::new(case_seed(name, base, case));
            let img = dir.join(format!("case-{case:04}.img"));
            sparse_copy(&pristine, &img).expect("copy the pristine image");
            let what = mutate(&mut rng, &lay, &img);
            let repro = format!(
                "{name} seed {base} case {case}: {what}\n    replay: LKLFUSE_FUZZ_SEED={base} \
                 LKLFUSE_FUZZ_ONLY={case} contrib/fuzz.sh --fs {name}\n    image (as mutated, \
                 before the mount): {}",
                img.display()
            );
            // The daemon runs on a scratch copy: the kept image must be the one
            // that made it fail, not what the mount then wrote over it.
            let scratch = dir.join("scratch.img");
            sparse_copy(&img, &scratch).expect("copy the mutated image");
            let mut walk = None;
            let mut log = String::new();
            let outcome = run_case(fs, &scratch, &mnt, &mut walk, &mut log);
            if let Some(line) = kernel_splat(&log) {
                // Allowed (the kernel's own reaction to a damaged image), but listed.
                t.splats.push(format!("{repro}\n    {line}"));
            }
            let _ = fs::remove_file(&scratch);
            t.cases += 1;
            if verbose {
                let errs = walk
                    .as_ref()
                    .map_or("-".to_string(), |w| format!("{:?}", w.errnos));
                let how = match &outcome {
                    Ok(Outcome::Refused) => "refused".to_string(),
                    Ok(Outcome::Clean) => "clean".to_string(),
                    Ok(Outcome::Unclean(c)) => format!("unclean exit {c}"),
                    Ok(Outcome::Fatal(l)) => format!("fatal: {l}"),
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!("{name} case {case}: {what} -> {how}; walker errnos {errs}");
            }
            if let Some(w) = walk {
                t.mounted += 1;
                for (k, v) in w.errnos {
                    t.errnos.entry(k).or_insert((0, case)).0 += v;
                }
                for (k, v) in w.stats {
                    *t.walked.entry(k).or_default() += v;
                }
            }
            let keep = match outcome {
                Ok(Outcome::Refused) => {
                    t.refused += 1;
                    false
                }
                Ok(Outcome::Clean) => {
                    t.clean += 1;
                    false
                }
                Ok(Outcome::Unclean(_)) => {
                    t.unclean += 1;
                    false
                }
                Ok(Outcome::Fatal(line)) => {
                    // Allowed, but a kernel BUG/crash on a damaged image is worth a
                    // look: the image outlives the test directory.
                    let kept = keep_finding(&findings, &img, name, base, case);
                    t.fatal
                        .push(format!("{repro}\n    {line}\n    kept: {kept}"));
                    false
                }
                Err(e) => {
                    if e.starts_with("hang") {
                        t.hangs += 1;
                    }
                    t.failures.push(format!("{repro}\n    {e}"));
                    true
                }
            };
            if only.is_some() {
                // A replay is for looking at: its image outlives the test directory.
                let kept = keep_finding(&findings, &img, name, base, case);
                eprintln!("{name} case {case}: image kept: {kept}");
            }
            if !keep {
                let _ = fs::remove_file(&img);
            }
        }
        let errnos: Vec<String> = t
            .errnos
            .iter()
            .map(|(k, (n, first))| format!("{k}x{n} (first: case {first})"))
            .collect();
        let walked: Vec<String> = t.walked.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!(
            "FUZZ SUMMARY {name} (seed {base}): {} cases in {:.0} s: mount refused {}, mounted {} \
             (then clean exit {}, unclean exit {}), fatal-kernel-exit {}, kernel warnings {}, failures {}\n  \
             errnos seen: {}\n  walked: {}",
            t.cases,
            start.elapsed().as_secs_f64(),
            t.refused,
            t.mounted,
            t.clean,
            t.unclean,
            t.fatal.len(),
            t.splats.len(),
            t.failures.len(),
            if errnos.is_empty() {
                "none".into()
            } else {
                errnos.join(" ")
            },
            walked.join(" ")
        );
        for f in &t.fatal {
            eprintln!("  fatal-kernel-exit (allowed): {f}");
        }
        for f in t.splats.iter().take(20) {
            eprintln!("  kernel warning (allowed): {f}");
        }
        assert!(
            t.failures.is_empty(),
            "{name}: {} of {} cases failed (pristine image and failing images kept in {}):\n{}",
            t.failures.len(),
            t.cases,
            dir.display(),
            t.failures
                .iter()
                .map(|f| format!("- {f}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    });
}

macro_rules! fuzz_tests {
    ($($name:ident => $fs:expr,)*) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name), $fs);
            }
        )*
    };
}

fuzz_tests! {
    ext2 => Fs::Ext2,
    ext3 => Fs::Ext3,
    ext4 => Fs::Ext4,
    xfs => Fs::Xfs,
    btrfs => Fs::Btrfs,
    vfat => Fs::Vfat,
    exfat => Fs::Exfat,
    ntfs3 => Fs::Ntfs,
    iso9660 => Fs::Iso9660,
    udf => Fs::Udf,
    squashfs => Fs::Squashfs("xz"),
    erofs => Fs::Erofs,
    f2fs => Fs::F2fs,
    hfsplus => Fs::Hfsplus,
}
