//! virtio-blk end to end: image files served by `lklfuse::virtio::BlockDevice` to the
//! in-process kernel's `virtio_blk` driver. One kernel for this process, booted after three
//! devices are registered:
//!
//! - `vblk-ext4`: a fresh ext4 image (mkfs.ext4 at test time), mounted in the kernel;
//! - `vblk-raw`: a 64 MiB image with a known pattern, used as a raw block device;
//! - `vblk-ro`: a small read-only image;
//! - `vblk-huge`: a sparse 3 TiB image, for sector numbers past 2^32 (2 TiB).
//!
//! The kernel names the disks vda, vdb, ... in probe order; the tests find each by its
//! serial number (the image's file name, served through `VIRTIO_BLK_T_GET_ID`).

mod common;

use std::ffi::{CStr, CString};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{kernel, mkdir_p, mount_proc_and_sys, read_file, with_watchdog};
use lklfuse::lkl::abi::kernel_dev_encode;
use lklfuse::lkl::{self, bindings as b, sys, Errno, KernelFd};
use lklfuse::virtio::BlockDevice;

const MIB: usize = 1 << 20;
const RAW_SIZE: usize = 64 * MIB;
const HUGE_SIZE: u64 = 3 << 40;

struct Disk {
    image: PathBuf,
    dev: Arc<BlockDevice>,
}

struct Fixture {
    ext4: Disk,
    raw: Disk,
    ro: Disk,
    huge: Disk,
    /// Serialises tests that mount or rewrite disks.
    lock: Mutex<()>,
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = (i as u32 / 4)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed);
            (x >> (8 * (i % 4))) as u8
        })
        .collect()
}

/// This process's image directory; directories of earlier runs that are gone are removed
/// (the fixture lives in a static, so nothing runs at exit).
fn image_dir() -> PathBuf {
    const PREFIX: &str = "lklfuse-virtio-blk-test-";
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("image directory");
    dir
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = image_dir();
        let ext4 = dir.join("vblk-ext4");
        std::fs::File::create(&ext4)
            .and_then(|f| f.set_len(64 * MIB as u64))
            .expect("create ext4 image");
        let status = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&ext4)
            .status()
            .expect("run mkfs.ext4");
        assert!(status.success(), "mkfs.ext4 failed: {status}");

        let raw = dir.join("vblk-raw");
        std::fs::write(&raw, pattern(RAW_SIZE, 1)).expect("create raw image");
        let ro = dir.join("vblk-ro");
        std::fs::write(&ro, pattern(4 * MIB, 2)).expect("create ro image");
        let huge = dir.join("vblk-huge");
        std::fs::File::create(&huge)
            .and_then(|f| f.set_len(HUGE_SIZE))
            .expect("create sparse 3 TiB image");

        let open = |image: PathBuf, read_only: bool| {
            let dev = BlockDevice::open(&image, read_only).expect("open image");
            let region = dev.register().expect("register virtio-blk");
            assert!(region.irq.is_some());
            Disk { image, dev }
        };
        let fixture = Fixture {
            ext4: open(ext4, false),
            raw: open(raw, false),
            ro: open(ro, true),
            huge: open(huge, false),
            lock: Mutex::new(()),
        };
        kernel();
        mount_proc_and_sys();
        mkdir_p(c"/dev");
        mkdir_p(c"/mnt");
        fixture
    })
}

fn cstring(s: String) -> CString {
    CString::new(s).expect("no NUL")
}

fn read_text(path: &str) -> String {
    String::from_utf8(read_file(&cstring(path.to_owned())))
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// The kernel's name for the disk of `disk` (vda, vdb, ...), found by serial, and a device
/// node for it under /dev.
fn node_for(disk: &Disk) -> (String, CString) {
    let serial = disk.dev.serial();
    for name in ["vda", "vdb", "vdc", "vdd", "vde"] {
        let Ok(fd) = sys::openat(
            lkl::CWD,
            &cstring(format!("/sys/block/{name}/serial")),
            b::O_RDONLY as i32,
            0,
        ) else {
            continue;
        };
        drop(fd);
        if read_text(&format!("/sys/block/{name}/serial")) != serial {
            continue;
        }
        let dev = read_text(&format!("/sys/block/{name}/dev"));
        let (major, minor) = dev.split_once(':').expect("major:minor");
        let (major, minor): (u32, u32) =
            (major.parse().expect("major"), minor.parse().expect("minor"));
        let node = cstring(format!("/dev/{name}"));
        match sys::mknodat(
            lkl::CWD,
            &node,
            b::S_IFBLK | 0o600,
            kernel_dev_encode(major, minor),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => panic!("mknod {name}: {e}"),
        }
        return (name.to_owned(), node);
    }
    panic!("no /sys/block/vdX with serial {serial}");
}

fn open(path: &CStr, flags: u32) -> KernelFd {
    sys::openat(lkl::CWD, path, flags as i32, 0o644)
        .unwrap_or_else(|e| panic!("open {path:?}: {e}"))
}

fn write_all(fd: &KernelFd, data: &[u8], mut offset: i64) {
    let mut done = 0;
    while done < data.len() {
        let n = sys::pwrite64(fd, &data[done..], offset).expect("pwrite64");
        assert!(n > 0);
        done += n;
        offset += n as i64;
    }
}

fn read_exact(fd: &KernelFd, buf: &mut [u8], mut offset: i64) {
    let mut done = 0;
    while done < buf.len() {
        let n = sys::pread64(fd, &mut buf[done..], offset).expect("pread64");
        assert!(n > 0, "unexpected end of device at {offset}");
        done += n;
        offset += n as i64;
    }
}

fn host_read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .expect("open image")
        .read_exact_at(&mut buf, offset)
        .expect("read image");
    buf
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

#[test]
fn sysfs_shows_the_devices() {
    with_watchdog("sysfs", Duration::from_secs(60), || {
        let f = fixture();
        let (ext4, _) = node_for(&f.ext4);
        let (ro, _) = node_for(&f.ro);
        assert_eq!(
            read_text(&format!("/sys/block/{ext4}/size")),
            (64 * MIB / 512).to_string()
        );
        assert_eq!(read_text(&format!("/sys/block/{ext4}/ro")), "0");
        assert_eq!(read_text(&format!("/sys/block/{ro}/ro")), "1");
        // FLUSH offered: the kernel sees a volatile write cache and sends flushes.
        assert_eq!(
            read_text(&format!("/sys/block/{ext4}/queue/write_cache")),
            "write back"
        );
        assert_ne!(
            read_text(&format!("/sys/block/{ext4}/queue/discard_max_bytes")),
            "0"
        );
        assert_ne!(
            read_text(&format!("/sys/block/{ext4}/queue/write_zeroes_max_bytes")),
            "0"
        );
        assert_eq!(
            read_text(&format!("/sys/block/{ext4}/queue/max_segments")),
            "254"
        );
    });
}

#[test]
fn ext4_file_round_trip_checked_on_the_host() {
    with_watchdog("ext4", Duration::from_secs(120), || {
        let f = fixture();
        let _guard = f.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_, node) = node_for(&f.ext4);
        mkdir_p(c"/mnt/ext4");
        sys::mount(
            Some(&node),
            c"/mnt/ext4",
            Some(c"ext4"),
            0,
            Some(c"discard"),
        )
        .expect("mount ext4 from virtio-blk");

        let data = pattern(5 * MIB + 123, 7);
        let fd = open(c"/mnt/ext4/file", b::O_CREAT | b::O_WRONLY | b::O_TRUNC);
        write_all(&fd, &data, 0);
        sys::fsync(&fd).expect("fsync");
        drop(fd);
        assert_eq!(read_file(c"/mnt/ext4/file"), data);
        sys::umount2(c"/mnt/ext4", 0).expect("umount");

        // Read back in a fresh mount (nothing cached from the first one).
        sys::mount(
            Some(&node),
            c"/mnt/ext4",
            Some(c"ext4"),
            0,
            Some(c"discard"),
        )
        .expect("remount");
        assert_eq!(read_file(c"/mnt/ext4/file"), data);
        sys::umount2(c"/mnt/ext4", 0).expect("umount");

        // The host sees a clean file system holding the file.
        let fsck = Command::new("e2fsck")
            .arg("-fn")
            .arg(&f.ext4.image)
            .output()
            .expect("run e2fsck");
        assert!(
            fsck.status.success(),
            "e2fsck: {}\n{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let cat = Command::new("debugfs")
            .args(["-R", "cat /file"])
            .arg(&f.ext4.image)
            .output()
            .expect("run debugfs");
        assert!(cat.status.success());
        assert!(
            cat.stdout == data,
            "debugfs read {} bytes",
            cat.stdout.len()
        );

        // Deleting with -o discard punches the file's blocks out of the host image.
        let before = std::fs::metadata(&f.ext4.image).expect("stat").blocks() * 512;
        sys::mount(
            Some(&node),
            c"/mnt/ext4",
            Some(c"ext4"),
            0,
            Some(c"discard"),
        )
        .expect("remount");
        sys::unlinkat(lkl::CWD, c"/mnt/ext4/file", 0).expect("unlink");
        let dir = open(c"/mnt/ext4", b::O_RDONLY | b::O_DIRECTORY);
        sys::syncfs(&dir).expect("syncfs");
        drop(dir);
        sys::umount2(c"/mnt/ext4", 0).expect("umount");
        let after = std::fs::metadata(&f.ext4.image).expect("stat").blocks() * 512;
        eprintln!("ext4 image allocation: {before} -> {after} bytes after delete + discard");
        assert!(
            before - after >= 4 * MIB as u64,
            "discard freed only {} bytes",
            before - after
        );
        let fsck = Command::new("e2fsck")
            .arg("-fn")
            .arg(&f.ext4.image)
            .status()
            .expect("run e2fsck");
        assert!(fsck.success());
    });
}

#[test]
fn raw_block_io_matches_the_image() {
    with_watchdog("raw", Duration::from_secs(120), || {
        let f = fixture();
        let _guard = f.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_, node) = node_for(&f.raw);
        let image = &f.raw.image;

        let fd = open(&node, b::O_RDWR);
        for (offset, len) in [(0, 4096), (MIB + 512, 8192), (RAW_SIZE - 4096, 4096)] {
            let mut buf = vec![0u8; len];
            read_exact(&fd, &mut buf, offset as i64);
            assert!(
                buf == host_read(image, offset as u64, len),
                "read at {offset}"
            );
        }
        // Past the end: EOF.
        let mut buf = [0u8; 512];
        assert_eq!(sys::pread64(&fd, &mut buf, RAW_SIZE as i64), Ok(0));

        // A write lands in the image once fsync returns.
        let data = pattern(12 * 1024, 9);
        let offset = 5 * MIB + 3 * 512;
        write_all(&fd, &data, offset as i64);
        sys::fsync(&fd).expect("fsync");
        assert!(host_read(image, offset as u64, data.len()) == data);
        drop(fd);

        // Sequential throughput, 1 MiB per call: write (with fsync), then read after
        // reopening (the last close drops the block device's page cache).
        let data = pattern(RAW_SIZE, 11);
        let fd = open(&node, b::O_RDWR);
        let start = Instant::now();
        for (i, chunk) in data.chunks(MIB).enumerate() {
            write_all(&fd, chunk, (i * MIB) as i64);
        }
        sys::fsync(&fd).expect("fsync");
        let write_time = start.elapsed();
        drop(fd);
        assert!(host_read(image, 0, RAW_SIZE) == data, "image after write");

        let fd = open(&node, b::O_RDONLY);
        let mut back = vec![0u8; RAW_SIZE];
        let start = Instant::now();
        for (i, chunk) in back.chunks_mut(MIB).enumerate() {
            read_exact(&fd, chunk, (i * MIB) as i64);
        }
        let read_time = start.elapsed();
        drop(fd);
        assert!(back == data, "read back");
        eprintln!(
            "raw /dev/vdX, {} MiB, 1 MiB calls: write+fsync {:.0} MB/s, read {:.0} MB/s",
            RAW_SIZE / MIB,
            mb_per_s(RAW_SIZE, write_time),
            mb_per_s(RAW_SIZE, read_time)
        );
    });
}

#[test]
fn read_only_disk() {
    with_watchdog("ro", Duration::from_secs(60), || {
        let f = fixture();
        let (_, node) = node_for(&f.ro);
        assert!(f.ro.dev.read_only());
        // VIRTIO_BLK_F_RO made the kernel's disk read-only: writes stop at the block layer.
        let fd = open(&node, b::O_RDWR);
        assert_eq!(sys::pwrite64(&fd, &[0u8; 512], 0), Err(Errno::EPERM));
        drop(fd);
        let fd = open(&node, b::O_RDONLY);
        let mut buf = vec![0u8; 4 * MIB];
        read_exact(&fd, &mut buf, 0);
        assert!(buf == pattern(4 * MIB, 2));
    });
}

/// Sector numbers past 2^32: the kernel sees the full 3 TiB, and data written just past
/// 2 TiB and at the very end lands at exactly those offsets of the image, which stays sparse.
#[test]
fn sparse_image_larger_than_2_tib() {
    with_watchdog("huge", Duration::from_secs(60), || {
        let f = fixture();
        let (name, node) = node_for(&f.huge);
        let sectors: u64 = read_text(&format!("/sys/block/{name}/size"))
            .parse()
            .expect("sector count");
        assert_eq!(sectors * 512, HUGE_SIZE, "disk size seen by the kernel");

        let fd = open(&node, b::O_RDWR);
        let past_2tib = (2u64 << 40) + 12_345 * 512;
        let last = HUGE_SIZE - 64 * 1024;
        let a = pattern(64 * 1024, 21);
        let z = pattern(64 * 1024, 22);
        write_all(&fd, &a, past_2tib as i64);
        write_all(&fd, &z, last as i64);
        sys::fsync(&fd).expect("fsync");
        assert!(
            host_read(&f.huge.image, past_2tib, a.len()) == a,
            "data past 2 TiB"
        );
        assert!(
            host_read(&f.huge.image, last, z.len()) == z,
            "data at the end"
        );
        // The same bytes 2 TiB lower were not touched (no 32-bit sector wrap-around).
        assert!(host_read(&f.huge.image, past_2tib - (2u64 << 40), a.len()) != a);

        let mut back = vec![0u8; a.len()];
        read_exact(&fd, &mut back, past_2tib as i64);
        assert!(back == a, "read back past 2 TiB");
        let mut buf = [0u8; 512];
        assert_eq!(
            sys::pread64(&fd, &mut buf, HUGE_SIZE as i64),
            Ok(0),
            "EOF at 3 TiB"
        );
        drop(fd);

        let allocated = std::fs::metadata(&f.huge.image).expect("stat").blocks() * 512;
        assert!(
            allocated < 16 * MIB as u64,
            "image no longer sparse: {allocated} bytes"
        );
    });
}
