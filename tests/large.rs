//! Large cases through a real `lklfuse` mount: a directory with a million
//! entries (`LKLFUSE_LARGE_DIR_ENTRIES`, default 1,000,000), files that
//! cross the 4 GiB boundary (ext4, XFS, exFAT; vfat must refuse with
//! EFBIG), and a sparse 3 TiB XFS image with data past 2 TiB.
//!
//! Times and the daemon's peak memory are printed for the record; the
//! assertions on them are generous bounds (the machine is shared), the
//! assertions on content are exact.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::fuse::{
    self, command, fsck_clean, fuse_test, make_fs, path_str, run_limited, subdir, Daemon,
};
use common::images::{self, Fs, HostMount};

const FILE: &str = "large";
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn start(img: &Path, mnt: &Path, opts: &[&str]) -> Daemon {
    Daemon::start(img, mnt, opts).unwrap_or_else(|e| panic!("mount {}: {e}", img.display()))
}

/// Runs a host command that must succeed within `limit`; its stdout.
#[track_caller]
fn host(program: &str, args: &[&str], limit: Duration) -> String {
    run_limited(&mut command(program, args), limit)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect_ok()
}

/// `python3 -c script args...`, which must succeed within `limit`; its stdout.
#[track_caller]
fn python(what: &str, script: &str, args: &[&str], limit: Duration) -> String {
    let mut a = vec!["-c", script];
    a.extend_from_slice(args);
    let out = run_limited(&mut command(fuse::python(), &a), limit)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.ok(), "{what}: {}", out.describe());
    out.stdout
}

/// Bytes free for an unprivileged user on the filesystem holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let c = images::cstring(path_str(p));
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs {}", p.display());
    st.f_bavail * st.f_frsize
}

/// Fails (with the numbers) unless the test directory's filesystem has `need` bytes free.
#[track_caller]
fn require_free(dir: &Path, need: u64, what: &str) -> u64 {
    let free = free_bytes(dir);
    eprintln!(
        "{what}: {:.1} GiB free on the filesystem of {}",
        free as f64 / GIB as f64,
        dir.display()
    );
    assert!(
        free >= need,
        "{what} needs {:.1} GiB free below {}, there are {:.1} GiB",
        need as f64 / GIB as f64,
        dir.display(),
        free as f64 / GIB as f64
    );
    free
}

/// The daemon's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

// ---------------------------------------------------------------------------------------------
// 5. A directory with a million entries

/// Entries in the big directory: `LKLFUSE_LARGE_DIR_ENTRIES` (a reduced CI
/// size), default 1,000,000.
fn dir_entries() -> usize {
    std::env::var("LKLFUSE_LARGE_DIR_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// Creates `e0000000` ... empty regular files in argv[1] with one mknod(2)
/// each (the fastest way to make distinct inodes from a script).
const CREATE: &str = r#"
import os, sys
os.chdir(sys.argv[1])
for i in range(int(sys.argv[2])):
    os.mknod('e%07d' % i, 0o100644)
"#;

/// Lists argv[1] with os.scandir and compares with the expected names
/// (`e%07d` for 0..n, minus argv[3] (comma list), plus argv[4]): prints
/// `count unique missing extra seconds` and up to 5 missing/extra names.
const LIST: &str = r#"
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
removed = set(filter(None, sys.argv[3].split(',')))
added = set(filter(None, sys.argv[4].split(',')))
t = time.monotonic()
names = []
with os.scandir(d) as it:
    for e in it:
        names.append(e.name)
secs = time.monotonic() - t
got = set(names)
want = {'e%07d' % i for i in range(n)} - removed | added
missing, extra = sorted(want - got), sorted(got - want)
print(len(names), len(got), len(missing), len(extra), f'{secs:.3f}')
print('missing', missing[:5]); print('extra', extra[:5])
"#;

/// stats argv[3] random entries (seed argv[2]) of the `e%07d` names below
/// argv[1]: each must be an empty regular file. Prints `ok seconds`.
const STAT_SAMPLE: &str = r#"
import os, random, stat, sys, time
d, seed, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = time.monotonic()
ok = 0
for i in random.Random(seed).sample(range(n), min(k, n)):
    st = os.stat(os.path.join(d, 'e%07d' % i))
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0, (i, st)
    ok += 1
print(ok, f'{time.monotonic() - t:.3f}')
"#;

/// Runs [`LIST`]; (count, unique, missing, extra, seconds, wall seconds).
#[track_caller]
fn list_big(dir: &Path, n: usize, removed: &[String], added: &[String]) -> (usize, f64, f64) {
    let t0 = Instant::now();
    let out = python(
        "os.scandir of the big directory",
        LIST,
        &[
            path_str(dir),
            &n.to_string(),
            &removed.join(","),
            &added.join(","),
        ],
        // Also the bound on the listing time: 10 minutes.
        Duration::from_secs(600),
    );
    let wall = t0.elapsed().as_secs_f64();
    let first = out.lines().next().unwrap_or("");
    let f: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(f.len(), 5, "lister said {out}");
    let num = |i: usize| -> usize { f[i].parse().expect("a count") };
    let (count, unique, missing, extra) = (num(0), num(1), num(2), num(3));
    let want = n - removed.len() + added.len();
    assert!(
        count == want && unique == want && missing == 0 && extra == 0,
        "listing {}: {count} names, {unique} distinct, {missing} missing, {extra} unexpected; \
         expected {want} exactly once each:\n{out}",
        dir.display()
    );
    (count, f[4].parse().expect("seconds"), wall)
}

#[test]
fn directory_with_a_million_entries() {
    fuse_test(FILE, "million", Duration::from_secs(1200), |dir| {
        let n = dir_entries();
        let img = dir.join("ext4.img");
        // One inode per entry plus room; about 4 KiB of image per entry so
        // that mkfs accepts the inode count. Lazy init: nothing is zeroed
        // (the image stays sparse, mkfs takes no time).
        let size = (n as u64 * 4096).max(512 * MIB);
        images::blank_image(&img, size).unwrap_or_else(|e| panic!("{e}"));
        host(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-N",
                &(n + 16_384).to_string(),
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                path_str(&img),
            ],
            Duration::from_secs(120),
        );
        // Filled natively (the host's ext4 on a loop device): through FUSE it
        // would take many minutes; what is tested is reading it back.
        let t0 = Instant::now();
        {
            let m = HostMount::kernel(&img, &dir.join("native"), "ext4", "noinit_itable")
                .unwrap_or_else(|e| panic!("{e}"));
            let big = m.dir.join("big");
            fs::create_dir(&big).expect("mkdir big");
            python(
                "creating the entries natively",
                CREATE,
                &[path_str(&big), &n.to_string()],
                Duration::from_secs(900),
            );
        }
        let create_secs = t0.elapsed().as_secs_f64();

        let mnt = subdir(&dir, "mnt", 0o755, None);
        // noinit_itable: no background zeroing of the inode tables in the
        // daemon's kernel while it is being measured.
        let d = start(&img, &mnt, &["type=ext4", "lkl.noinit_itable"]);
        let pid = d.pid().expect("daemon pid");
        let big = mnt.join("big");
        let (count, list_secs, list_wall) = list_big(&big, n, &[], &[]);

        let t1 = Instant::now();
        let out = python(
            "stat of a random sample",
            STAT_SAMPLE,
            &[path_str(&big), "42", "1000", &n.to_string()],
            Duration::from_secs(300),
        );
        let stat_secs = t1.elapsed().as_secs_f64();
        let sampled: usize = out
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("sample count");
        assert_eq!(sampled, 1000.min(n), "stat sample: {out}");

        // A few changes in the big directory, then the listing again.
        let mut rng = images::Rng::new(7);
        let mut removed: Vec<String> = Vec::new();
        while removed.len() < 5.min(n) {
            let name = format!("e{:07}", rng.below(n as u64));
            if !removed.contains(&name) {
                removed.push(name);
            }
        }
        let added: Vec<String> = (0..5).map(|i| format!("new-{i}")).collect();
        for a in &added {
            fs::write(big.join(a), a.as_bytes()).expect("create an entry in the big directory");
        }
        for r in &removed {
            fs::remove_file(big.join(r)).expect("unlink an entry of the big directory");
        }
        for a in &added {
            assert_eq!(fs::read(big.join(a)).expect("read new entry"), a.as_bytes());
        }
        for r in &removed {
            assert!(!big.join(r).exists(), "{r} still there after unlink");
        }
        let (count2, list2_secs, _) = list_big(&big, n, &removed, &added);
        let rss_kib = peak_rss_kib(pid);
        eprintln!(
            "million: {n} entries; native creation {create_secs:.1} s; os.scandir of {count} \
             names {list_secs:.1} s (child wall {list_wall:.1} s); 1000 stats {stat_secs:.2} s; \
             listing after 5 creates + 5 unlinks: {count2} names {list2_secs:.1} s; daemon peak \
             RSS {:.1} MiB",
            rss_kib as f64 / 1024.0
        );
        assert!(
            rss_kib < 512 * 1024,
            "the daemon's peak RSS is {:.1} MiB listing {n} entries (bound 512 MiB)",
            rss_kib as f64 / 1024.0
        );
        d.stop();
        fsck_clean(Fs::Ext4, &img);
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Files across the 4 GiB boundary

/// Reads `len` bytes at `off` of `p`.
#[track_caller]
fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)
        .unwrap_or_else(|e| panic!("read {len} bytes at {off} of {}: {e}", p.display()));
    buf
}

/// The big file's expected pieces: (offset, data).
fn pieces(fs: Fs) -> Vec<(u64, Vec<u8>)> {
    let mut p = vec![(4 * GIB - MIB, images::random_bytes(40, 2 << 20))];
    // exFAT has no holes: data at 5 GiB would mean writing 5 GiB of zeros.
    if fs != Fs::Exfat {
        p.push((5 * GIB, images::random_bytes(42, 1 << 20)));
    }
    p
}

#[track_caller]
fn check_big(fs: Fs, p: &Path, what: &str) {
    let pieces = pieces(fs);
    let (last_off, last) = pieces.last().expect("pieces");
    let want_len = last_off + last.len() as u64;
    let md = fs::metadata(p).unwrap_or_else(|e| panic!("{what}: stat: {e}"));
    assert_eq!(md.len(), want_len, "{what}: size");
    for (off, data) in &pieces {
        assert!(
            read_at(p, *off, data.len()) == *data,
            "{what}: the {} bytes at {off} differ",
            data.len()
        );
    }
    // Before the first piece: zeros (a hole, or exFAT's zero fill); between
    // the pieces too.
    let zero_at = [2 * GIB, 4 * GIB + 512 * MIB];
    for off in zero_at.iter().filter(|&&o| o + MIB <= want_len) {
        assert!(
            read_at(p, *off, MIB as usize).iter().all(|&b| b == 0),
            "{what}: not zeros at {off}"
        );
    }
    if fs != Fs::Exfat {
        assert!(
            md.blocks() * 512 < 64 * MIB,
            "{what}: the sparse file takes {} bytes",
            md.blocks() * 512
        );
    }
}

fn big_file(name: &'static str, fs: Fs) {
    fuse_test(FILE, name, Duration::from_secs(600), move |dir| {
        let img = dir.join(format!("{}.img", fs.id()));
        if fs == Fs::Exfat {
            // Writing at 4 GiB - 1 MiB zero-fills everything before it: 4 GiB
            // really written to the image.
            require_free(&dir, 6 * GIB, name);
            images::blank_image(&img, 4600 * MIB).unwrap_or_else(|e| panic!("{e}"));
            host("mkfs.exfat", &[path_str(&img)], Duration::from_secs(60));
        } else {
            make_fs(fs, &img, &dir);
        }
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let t = format!("type={}", fs.fstype());
        let d = start(&img, &mnt, &[&t]);
        let p = mnt.join("big.bin");
        let t0 = Instant::now();
        {
            let f = fs::File::create(&p).expect("create big.bin");
            for (off, data) in pieces(fs) {
                f.write_all_at(&data, off)
                    .unwrap_or_else(|e| panic!("{name}: write {} at {off}: {e}", data.len()));
            }
            f.sync_all().expect("fsync big.bin");
        }
        let write_secs = t0.elapsed().as_secs_f64();
        check_big(fs, &p, &format!("{name}, through the mount"));
        d.stop();
        fsck_clean(fs, &img);
        let d = start(&img, &mnt, &[&t]);
        check_big(fs, &p, &format!("{name}, after a remount"));
        d.stop();
        fsck_clean(fs, &img);
        eprintln!("{name}: writes took {write_secs:.1} s; checker clean");
    });
}

#[test]
fn file_over_4gib_ext4() {
    big_file("over_4gib_ext4", Fs::Ext4);
}

#[test]
fn file_over_4gib_xfs() {
    big_file("over_4gib_xfs", Fs::Xfs);
}

#[test]
fn file_over_4gib_exfat() {
    big_file("over_4gib_exfat", Fs::Exfat);
}

#[test]
fn vfat_refuses_4gib_with_efbig() {
    fuse_test(FILE, "vfat_4gib", Duration::from_secs(300), |dir| {
        let img = dir.join("vfat.img");
        make_fs(Fs::Vfat, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=vfat"]);
        let p = mnt.join("big.bin");
        let data = images::random_bytes(6, MIB as usize);
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .expect("create big.bin");
        f.write_all_at(&data, 0).expect("write 1 MiB at 0");
        // FAT's limit is 4 GiB - 1 bytes: nothing may go at or past it.
        // (Writing just below it would zero-fill 4 GiB first: FAT has no holes.)
        let mut errors = BTreeMap::new();
        for (what, r) in [
            ("pwrite 1 byte at 4 GiB - 1", f.write_at(b"x", 4 * GIB - 1)),
            ("pwrite 1 MiB at 5 GiB", f.write_at(&data, 5 * GIB)),
            ("ftruncate to 4 GiB", f.set_len(4 * GIB).map(|_| 0)),
            ("ftruncate to 5 GiB", f.set_len(5 * GIB).map(|_| 0)),
        ] {
            let e = match r {
                Ok(n) => panic!("vfat: {what} succeeded ({n}); FAT cannot hold it"),
                Err(e) => e,
            };
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EFBIG),
                "vfat: {what}: expected EFBIG, got {e}"
            );
            errors.insert(what, "EFBIG");
        }
        f.sync_all().expect("fsync big.bin");
        drop(f);
        assert_eq!(
            fs::metadata(&p).expect("stat").len(),
            MIB,
            "size after the refusals"
        );
        d.stop();
        fsck_clean(Fs::Vfat, &img);
        let d = start(&img, &mnt, &["type=vfat"]);
        assert!(
            fs::read(&p).expect("read big.bin") == data,
            "vfat: content after the refusals and a remount"
        );
        d.stop();
        fsck_clean(Fs::Vfat, &img);
        eprintln!("vfat_4gib: {errors:?}; fsck.vfat clean");
    });
}

// ---------------------------------------------------------------------------------------------
// 7. A sparse image over 2 TiB, with data past 2 TiB

/// lseek(SEEK_DATA or SEEK_HOLE) on a sparse host file; None at ENXIO (no more data).
fn seek(f: &fs::File, from: u64, whence: i32) -> Option<u64> {
    // SAFETY: lseek on a descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), from as libc::off_t, whence) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "lseek: {e}");
        None
    } else {
        Some(r as u64)
    }
}

/// Image offsets at or past `from` whose 4 KiB block is one of `blocks`
/// (block content -> name), found by reading only the image's data
/// extents (SEEK_DATA/SEEK_HOLE), at most 256 MiB of them.
fn find_blocks(img: &Path, from: u64, blocks: &HashMap<Vec<u8>, String>) -> Vec<(u64, String)> {
    let f = fs::File::open(img).unwrap_or_else(|e| panic!("open {}: {e}", img.display()));
    let mut found = Vec::new();
    let mut budget = 256 * MIB;
    let mut pos = from;
    let mut buf = vec![0u8; MIB as usize];
    while let Some(start) = seek(&f, pos, libc::SEEK_DATA) {
        let end = seek(&f, start, libc::SEEK_HOLE).expect("a hole at the end of the file");
        let mut off = start & !4095;
        while off < end && budget > 0 {
            let want = buf.len().min((end - off) as usize);
            let n = f.read_at(&mut buf[..want], off).expect("read the image");
            if n == 0 {
                break;
            }
            for (i, block) in buf[..n].chunks_exact(4096).enumerate() {
                if let Some(name) = blocks.get(block) {
                    found.push((off + i as u64 * 4096, name.clone()));
                }
            }
            off += n as u64;
            budget = budget.saturating_sub(n as u64);
        }
        pos = end;
    }
    found
}

#[test]
fn sparse_xfs_image_over_2tib() {
    fuse_test(FILE, "over_2tib", Duration::from_secs(600), |dir| {
        require_free(&dir, 2 * GIB, "over_2tib");
        let img = dir.join("xfs-3t.img");
        let size = 3u64 << 40;
        images::blank_image(&img, size).unwrap_or_else(|e| panic!("{e}"));
        // A 64 MiB log: the default for 3 TiB (1.5 GiB) is zeroed at mkfs.
        // Four allocation groups of 768 GiB: the fourth starts at 2.25 TiB.
        host(
            "mkfs.xfs",
            &[
                "-q",
                "-f",
                "-d",
                "agcount=4",
                "-l",
                "size=64m",
                path_str(&img),
            ],
            Duration::from_secs(120),
        );
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=xfs"]);
        // XFS puts each new top-level directory in the next allocation group
        // (inode64 rotor) and a file's blocks near its inode: 8 directories
        // cover all four groups twice.
        let mut expected = BTreeMap::new();
        // Each file's first 4 KiB block (random, so unique), to find it in the image.
        let mut firsts = HashMap::new();
        for g in 0..8u64 {
            let sub = mnt.join(format!("d{g}"));
            fs::create_dir(&sub).expect("mkdir");
            for f in 0..4u64 {
                let rel = format!("d{g}/f{f}");
                let seed = 1000 + 2 * (g * 10 + f);
                let h = fuse::write_random(&mnt.join(&rel), seed, 256 << 10);
                firsts.insert(images::random_bytes(seed, 4096), rel.clone());
                expected.insert(rel, h);
            }
        }
        d.stop();
        // mkfs already wrote the fourth group's headers past 2 TiB: what
        // counts is file data found there.
        let high = find_blocks(&img, 2 << 40, &firsts);
        eprintln!(
            "over_2tib: file data past 2 TiB: {:?}",
            high.iter()
                .map(|(o, n)| format!("{n} at {:.4} TiB", *o as f64 / (1u64 << 40) as f64))
                .collect::<Vec<_>>()
        );
        assert!(
            !high.is_empty(),
            "no file's data lies past 2 TiB in the image: the test did not reach the high sectors"
        );
        let d = start(&img, &mnt, &["type=xfs"]);
        for (rel, h) in &expected {
            assert_eq!(&fuse::sha(&mnt.join(rel)), h, "{rel} after a remount");
        }
        d.stop();
        fsck_clean(Fs::Xfs, &img);
        let used = fs::metadata(&img).expect("stat image").blocks() * 512;
        eprintln!(
            "over_2tib: image of {} bytes uses {:.1} MiB on the host",
            size,
            used as f64 / MIB as f64
        );
        assert!(
            used < 300 * MIB,
            "the 3 TiB image is no longer sparse: {used} bytes used"
        );
    });
}
