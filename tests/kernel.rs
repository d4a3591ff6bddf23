//! The in-process kernel: boot, files on tmpfs, configured filesystems,
//! clocks and timers. All tests here share this process's kernel.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::{kernel, mount_proc_and_sys, read_file};
use lklfuse::lkl::abi::{NewUtsname, Timestamp, CLOCK_REALTIME};
use lklfuse::lkl::{self, bindings as b, sys, Errno};

#[test]
fn boots_linux_6_12_quickly() {
    let k = kernel();
    let uts = sys::uname().expect("uname");
    assert_eq!(NewUtsname::field(&uts.sysname), "Linux");
    assert!(
        NewUtsname::field(&uts.release).starts_with("6.12."),
        "release {}",
        NewUtsname::field(&uts.release)
    );
    // The 20 ms goal is measured by `cargo run --release --example boot-time`;
    // here only guard against regressions of an order of magnitude.
    assert!(
        k.boot_time() < Duration::from_millis(500),
        "boot took {:?}",
        k.boot_time()
    );
}

#[test]
fn file_round_trip_on_tmpfs() {
    kernel();
    common::mkdir_p(c"/tmpfs-rt");
    sys::mount(
        Some(c"tmpfs"),
        c"/tmpfs-rt",
        Some(c"tmpfs"),
        0,
        Some(c"size=16m"),
    )
    .expect("mount tmpfs");

    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let flags = (b::O_CREAT | b::O_RDWR | b::O_TRUNC) as i32;
    let fd = sys::openat(lkl::CWD, c"/tmpfs-rt/file", flags, 0o640).expect("create");
    let mut written = 0;
    while written < data.len() {
        written += sys::write(&fd, &data[written..]).expect("write");
    }
    sys::fsync(&fd).expect("fsync");
    drop(fd);

    let st = sys::statx(lkl::CWD, c"/tmpfs-rt/file", 0, b::STATX_BASIC_STATS).expect("statx");
    assert_eq!(st.size, data.len() as u64);
    assert_eq!(st.mode & 0o7777, 0o640);
    assert_eq!(read_file(c"/tmpfs-rt/file"), data);

    sys::renameat2(lkl::CWD, c"/tmpfs-rt/file", lkl::CWD, c"/tmpfs-rt/moved", 0).expect("rename");
    assert_eq!(
        sys::statx(lkl::CWD, c"/tmpfs-rt/file", 0, b::STATX_BASIC_STATS).unwrap_err(),
        Errno::ENOENT
    );
    sys::unlinkat(lkl::CWD, c"/tmpfs-rt/moved", 0).expect("unlink");
    sys::umount2(c"/tmpfs-rt", 0).expect("umount");
}

/// A descriptor handed to a wrapper by value stays open until the syscall has run
/// (it is closed when the wrapper returns), so the call sees it and succeeds.
#[test]
fn owned_descriptor_passed_by_value_is_used_then_closed() {
    kernel();
    common::mkdir_p(c"/by-value");
    let flags = (b::O_CREAT | b::O_RDWR) as i32;
    let fd = sys::openat(lkl::CWD, c"/by-value/file", flags, 0o600).expect("create");
    assert_eq!(sys::write(fd, b"kept open"), Ok(9));
    assert_eq!(read_file(c"/by-value/file"), b"kept open");
}

/// Filesystems the kernel must have (kernel/config); tmpfs is the ramfs-based
/// "tiny shmem" of no-MMU kernels, registered under the name tmpfs.
const FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "msdos", "exfat", "ntfs3", "iso9660", "udf",
    "squashfs", "erofs", "f2fs", "hfsplus", "tmpfs", "proc", "sysfs",
];

#[test]
fn every_configured_filesystem_is_registered() {
    mount_proc_and_sys();
    let list = String::from_utf8(read_file(c"/proc/filesystems")).expect("utf-8");
    let registered: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for fs in FILESYSTEMS {
        assert!(
            registered.contains(fs),
            "{fs} missing from /proc/filesystems: {registered:?}"
        );
    }
}

/// Options that are not filesystems, checked in the configuration the
/// running kernel was built from (build.rs verified it against kernel/config).
const OPTIONS: &[&str] = &[
    "CONFIG_FS_POSIX_ACL",
    "CONFIG_EXT4_FS_POSIX_ACL",
    "CONFIG_EXT4_FS_SECURITY",
    "CONFIG_XFS_POSIX_ACL",
    "CONFIG_BTRFS_FS_POSIX_ACL",
    "CONFIG_NTFS3_FS_POSIX_ACL",
    "CONFIG_F2FS_FS_XATTR",
    "CONFIG_F2FS_FS_POSIX_ACL",
    "CONFIG_F2FS_FS_SECURITY",
    "CONFIG_EROFS_FS_XATTR",
    "CONFIG_EROFS_FS_POSIX_ACL",
    "CONFIG_SQUASHFS_XATTR",
    "CONFIG_JOLIET",
    "CONFIG_ZISOFS",
    "CONFIG_SQUASHFS_ZLIB",
    "CONFIG_SQUASHFS_XZ",
    "CONFIG_SQUASHFS_LZO",
    "CONFIG_SQUASHFS_LZ4",
    "CONFIG_SQUASHFS_ZSTD",
    "CONFIG_MSDOS_PARTITION",
    "CONFIG_EFI_PARTITION",
    "CONFIG_VIRTIO_MMIO",
    "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
    "CONFIG_VIRTIO_BLK",
    "CONFIG_FILE_LOCKING",
    "CONFIG_NLS_UTF8",
    "CONFIG_NLS_CODEPAGE_437",
];

#[test]
fn kernel_was_built_with_the_required_options() {
    let config = std::fs::read_to_string(lklfuse::build_info::KERNEL_CONFIG_PATH)
        .expect("read the cached kernel .config");
    for option in OPTIONS {
        assert!(
            config.lines().any(|l| l == format!("{option}=y")),
            "{option} is not =y"
        );
    }
    for absent in [
        "CONFIG_MODULES=y",
        "CONFIG_NET=y",
        "CONFIG_RAID6_PQ_BENCHMARK=y",
    ] {
        assert!(!config.lines().any(|l| l == absent), "{absent} must be off");
    }
}

#[test]
fn virtio_mmio_and_virtio_blk_drivers_are_live() {
    mount_proc_and_sys();
    for dir in [
        c"/sys/bus/platform/drivers/virtio-mmio",
        c"/sys/bus/virtio/drivers/virtio_blk",
    ] {
        let st = sys::statx(lkl::CWD, dir, 0, b::STATX_BASIC_STATS)
            .unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        assert_eq!(u32::from(st.mode) & b::S_IFMT, b::S_IFDIR, "{dir:?}");
    }
}

#[test]
fn file_locks_work() {
    kernel();
    let flags = (b::O_CREAT | b::O_RDWR) as i32;
    let a = sys::openat(lkl::CWD, c"/lockfile", flags, 0o600).expect("open a");
    let b2 = sys::openat(lkl::CWD, c"/lockfile", flags, 0o600).expect("open b");
    sys::flock(&a, b::LOCK_EX as i32).expect("flock a");
    assert_eq!(
        sys::flock(&b2, (b::LOCK_EX | b::LOCK_NB) as i32).unwrap_err(),
        Errno::EWOULDBLOCK
    );
    sys::flock(&a, b::LOCK_UN as i32).expect("unlock a");
    sys::flock(&b2, (b::LOCK_EX | b::LOCK_NB) as i32).expect("flock b after unlock");
}

#[test]
fn kernel_clock_follows_the_host() {
    kernel();
    // The call may wait for the kernel's CPU (other tests here use it): the kernel's answer
    // must fall between the host's times before and after it. Read only at boot, the wall
    // clock lagged 2 ms here (12 ms under load): it advanced in jiffies until the host
    // clock drove timekeeping (kernel/time.c reads it again then).
    let tolerance = Duration::from_millis(1);
    let before = SystemTime::now();
    let inside = sys::clock_gettime(CLOCK_REALTIME)
        .expect("clock_gettime")
        .to_system_time();
    let after = SystemTime::now();
    assert!(
        inside + tolerance >= before && inside <= after + tolerance,
        "kernel clock {inside:?} outside the host's {before:?} .. {after:?}"
    );

    // Setting it works too (and leaves it on host time).
    sys::clock_settime(
        CLOCK_REALTIME,
        Timestamp::from_system_time(SystemTime::now()),
    )
    .expect("clock_settime");
}

#[test]
fn timers_fire_on_time() {
    kernel();
    for _ in 0..3 {
        let start = Instant::now();
        sys::nanosleep(Duration::from_millis(50)).expect("nanosleep");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took <= Duration::from_millis(70),
            "a 50 ms sleep took {took:?}"
        );
    }
}

/// What the lockup watchdog samples: the CPU is free between calls, and every call from a
/// new thread hands it over at least once.
#[test]
fn watchdog_samples_show_a_free_cpu_and_hand_overs() {
    kernel();
    let before = lkl::watchdog::sample().expect("the kernel runs");
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| sys::getpid().expect("getpid")))
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // Other tests of this file may be running kernel code right now: sample until idle.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = lkl::watchdog::sample().expect("the kernel runs");
        if !s.owned || Instant::now() >= deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!after.owned, "the CPU stays owned with nothing running");
    assert!(
        after.grants >= before.grants + 4,
        "4 threads called in but the CPU changed hands {} times",
        after.grants - before.grants
    );
}

/// A system call that wakes no other task takes the CPU, switches to the caller's task and
/// lets the CPU go, with the task left current. Two threads taking turns need two hand-overs
/// per call; a switch to the idle task at the end of a call costs two more (and two host
/// thread wake-ups): the scheduler's delayed dequeue, which keeps a task that just blocked
/// counted as runnable, caused that after nearly every call.
#[test]
fn calls_taking_turns_do_not_switch_to_the_idle_task() {
    kernel();
    const CALLS: u64 = 2000;
    // Other tests of this file may call in meanwhile and add hand-overs: keep the best try.
    let fewest = (0..5)
        .map(|_| {
            let (to_other, from_main) = mpsc::channel::<bool>();
            let (to_main, from_other) = mpsc::channel::<()>();
            let other = std::thread::spawn(move || {
                while from_main.recv().expect("main thread") {
                    sys::getpid().expect("getpid");
                    to_main.send(()).expect("main thread");
                }
            });
            sys::getpid().expect("getpid");
            to_other.send(true).expect("other thread");
            from_other.recv().expect("other thread");
            let before = lkl::watchdog::sample().expect("the kernel runs");
            for _ in 0..CALLS / 2 {
                sys::getpid().expect("getpid");
                to_other.send(true).expect("other thread");
                from_other.recv().expect("other thread");
            }
            let after = lkl::watchdog::sample().expect("the kernel runs");
            to_other.send(false).expect("other thread");
            other.join().expect("other thread");
            after.grants - before.grants
        })
        .min()
        .expect("five tries");
    assert!(
        fewest < CALLS * 5 / 2,
        "{CALLS} calls from two threads taking turns changed the CPU's owner {fewest} times"
    );
}
