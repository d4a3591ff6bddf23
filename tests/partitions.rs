//! Partitioned disks: an MBR image (sfdisk) and a GPT image (sgdisk), each
//! holding several filesystems. `partition: Some(n)` must mount the n-th
//! partition (the kernel's own partition parsers find them), autodetection
//! must name each one, and writes through a partition must stay inside it.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::images::{self, cmd, run, Fs};
use lklfuse::lkl::disk::{self, Disk, MountError, MountOptions};

const MIB: u64 = 1 << 20;

/// One partition: its filesystem and where it lies (bytes).
#[derive(Clone, Copy, Debug)]
struct Part {
    fs: Fs,
    start: u64,
    len: u64,
}

struct Image {
    path: PathBuf,
    parts: Vec<Part>,
    disk: Result<Disk, String>,
}

struct Setup {
    dir: PathBuf,
    mbr: Image,
    gpt: Image,
    /// A copy of the MBR disk that the write test changes.
    mbr_write: Image,
}

fn marker(label: &str, n: usize, fs: Fs) -> String {
    format!("{label} partition {n} holds {}\n", fs.fstype())
}

/// A small filesystem image holding `marker` (and a few more files).
fn part_image(dir: &Path, name: &str, fs: Fs, size: u64, marker: &str) -> Result<PathBuf, String> {
    let src = dir.join(format!("src-{name}"));
    fs::create_dir_all(src.join("sub")).map_err(|e| e.to_string())?;
    fs::write(src.join("marker"), marker).map_err(|e| e.to_string())?;
    fs::write(src.join("sub/data.bin"), images::random_bytes(7, 200_000))
        .map_err(|e| e.to_string())?;
    let img = dir.join(format!("{name}.fs"));
    match fs {
        Fs::Ext4 => {
            images::blank_image(&img, size)?;
            run(&mut cmd(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-d",
                    s(&src),
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                    s(&img),
                ],
            ))?;
        }
        Fs::Vfat => {
            images::blank_image(&img, size)?;
            run(&mut cmd("mkfs.vfat", &[s(&img)]))?;
            let mut c = cmd("mcopy", &["-s", "-m", "-i", s(&img)]);
            c.arg(src.join("marker")).arg(src.join("sub")).arg("::/");
            c.env("MTOOLS_SKIP_CHECK", "1");
            run(&mut c)?;
        }
        Fs::Squashfs(comp) => {
            run(&mut cmd(
                "mksquashfs",
                &[
                    s(&src),
                    s(&img),
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                    "-comp",
                    comp,
                ],
            ))?;
        }
        other => return Err(format!("no partition builder for {other:?}")),
    }
    Ok(img)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test paths")
}

/// `(start, size)` in sectors of each partition, from `sfdisk -d`.
fn partition_table(img: &Path) -> Result<Vec<(u64, u64)>, String> {
    let dump = run(&mut cmd("sfdisk", &["-d", s(img)]))?;
    let field = |line: &str, name: &str| -> Option<u64> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Ok(dump
        .lines()
        .filter(|l| l.contains("start="))
        .filter_map(|l| Some((field(l, "start")?, field(l, "size")?)))
        .collect())
}

/// Writes each filesystem image into its partition.
fn fill_partitions(disk: &Path, parts: &[(Fs, PathBuf)]) -> Result<Vec<Part>, String> {
    let table = partition_table(disk)?;
    if table.len() != parts.len() {
        return Err(format!(
            "{}: {} partitions, expected {}",
            disk.display(),
            table.len(),
            parts.len()
        ));
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for ((fs, fs_img), (start, size)) in parts.iter().zip(table) {
        let data = fs::read(fs_img).map_err(|e| e.to_string())?;
        let (start, len) = (start * 512, size * 512);
        if data.len() as u64 > len {
            return Err(format!("{} does not fit its partition", fs_img.display()));
        }
        f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
        f.write_all(&data).map_err(|e| e.to_string())?;
        out.push(Part {
            fs: *fs,
            start,
            len,
        });
    }
    f.sync_all().map_err(|e| e.to_string())?;
    Ok(out)
}

fn build_mbr(dir: &Path, name: &str) -> Result<(PathBuf, Vec<Part>), String> {
    let img = dir.join(format!("{name}.img"));
    images::blank_image(&img, 80 * MIB)?;
    let mut c = cmd("sfdisk", &["-q", s(&img)]);
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("sfdisk: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"label: dos\nstart=2048, size=32MiB, type=83\nsize=32MiB, type=c\n")
        .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("sfdisk failed: {status}"));
    }
    let p1 = part_image(
        dir,
        &format!("{name}-p1"),
        Fs::Ext4,
        32 * MIB,
        &marker("mbr", 1, Fs::Ext4),
    )?;
    let p2 = part_image(
        dir,
        &format!("{name}-p2"),
        Fs::Vfat,
        32 * MIB,
        &marker("mbr", 2, Fs::Vfat),
    )?;
    let parts = fill_partitions(&img, &[(Fs::Ext4, p1), (Fs::Vfat, p2)])?;
    Ok((img, parts))
}

fn build_gpt(dir: &Path) -> Result<(PathBuf, Vec<Part>), String> {
    let img = dir.join("gpt.img");
    images::blank_image(&img, 100 * MIB)?;
    run(&mut cmd(
        "sgdisk",
        &[
            "-n",
            "1:2048:+32M",
            "-t",
            "1:0700",
            "-c",
            "1:fat",
            "-n",
            "2:0:+32M",
            "-t",
            "2:8300",
            "-c",
            "2:ext4",
            "-n",
            "3:0:+16M",
            "-t",
            "3:8300",
            "-c",
            "3:squash",
            s(&img),
        ],
    ))?;
    let squash = Fs::Squashfs("zstd");
    let p1 = part_image(
        dir,
        "gpt-p1",
        Fs::Vfat,
        32 * MIB,
        &marker("gpt", 1, Fs::Vfat),
    )?;
    let p2 = part_image(
        dir,
        "gpt-p2",
        Fs::Ext4,
        32 * MIB,
        &marker("gpt", 2, Fs::Ext4),
    )?;
    let p3 = part_image(dir, "gpt-p3", squash, 16 * MIB, &marker("gpt", 3, squash))?;
    let parts = fill_partitions(&img, &[(Fs::Vfat, p1), (Fs::Ext4, p2), (squash, p3)])?;
    Ok((img, parts))
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        images::init_logging();
        let dir = images::work_dir("partitions");
        let attach = |built: Result<(PathBuf, Vec<Part>), String>| match built {
            Ok((path, parts)) => Image {
                disk: disk::attach(&path, false).map_err(|e| format!("attach: {e}")),
                path,
                parts,
            },
            Err(e) => Image {
                path: PathBuf::new(),
                parts: Vec::new(),
                disk: Err(e),
            },
        };
        let mbr = attach(build_mbr(&dir, "mbr"));
        let gpt = attach(build_gpt(&dir));
        let mbr_write = attach(build_mbr(&dir, "mbr-write"));
        common::kernel();
        Setup {
            dir,
            mbr,
            gpt,
            mbr_write,
        }
    })
}

impl Image {
    fn disk(&self) -> &Disk {
        self.disk
            .as_ref()
            .unwrap_or_else(|e| panic!("no disk: {e}"))
    }
}

fn opts(partition: Option<u32>, read_only: bool) -> MountOptions {
    MountOptions {
        partition,
        fstype: None,
        read_only,
        flags: 0,
        data: String::new(),
    }
}

/// Partition `n` of `image` is detected and mounted as its filesystem, and
/// holds its own marker.
fn check_partition(label: &'static str, image: &'static Image, n: u32) {
    common::with_watchdog(
        &format!("{label}-{n}"),
        Duration::from_secs(60),
        move || {
            let disk = image.disk();
            let part = image.parts[n as usize - 1];
            let want = part.fs.fstype();
            let detected = disk::detect_fstype(disk, Some(n))
                .unwrap_or_else(|e| panic!("{label} partition {n}: detect: {e}"));
            assert_eq!(detected, want, "{label} partition {n}: detected type");
            let m = disk
                .mount(&opts(Some(n), true))
                .unwrap_or_else(|e| panic!("{label} partition {n}: mount: {e}"));
            assert_eq!(m.fstype(), want, "{label} partition {n}: mounted type");
            let mp = m.path().to_str().expect("UTF-8").to_string();
            let got = common::read_file(&images::cstring(&format!("{mp}/marker")));
            assert_eq!(
                String::from_utf8_lossy(&got),
                marker(label, n as usize, part.fs),
                "{label} partition {n}: wrong marker: the wrong partition is mounted"
            );
            let (size, sha) =
                images::kernel_sha256(&format!("{mp}/sub/data.bin")).expect("read data");
            let want_data = images::random_bytes(7, 200_000);
            assert_eq!(
                (size, sha),
                (200_000, images::sha256(&want_data)),
                "{label} partition {n}: data"
            );
            m.unmount().expect("unmount");
        },
    );
}

#[test]
fn mbr_partition_1_is_ext4() {
    check_partition("mbr", &setup().mbr, 1);
}

#[test]
fn mbr_partition_2_is_vfat() {
    check_partition("mbr", &setup().mbr, 2);
}

#[test]
fn gpt_partition_1_is_vfat() {
    check_partition("gpt", &setup().gpt, 1);
}

#[test]
fn gpt_partition_2_is_ext4() {
    check_partition("gpt", &setup().gpt, 2);
}

#[test]
fn gpt_partition_3_is_squashfs() {
    check_partition("gpt", &setup().gpt, 3);
}

/// The whole disk of a partitioned image is no filesystem: a clear error,
/// not a guess (an MBR has the 0x55AA signature FAT has too).
#[test]
fn whole_partitioned_disk_is_unknown_filesystem() {
    let s = setup();
    for (label, image) in [("mbr", &s.mbr), ("gpt", &s.gpt)] {
        let disk = image.disk();
        match disk::detect_fstype(disk, None) {
            Err(MountError::UnknownFilesystem { .. }) => {}
            other => {
                panic!("{label} whole disk: detect gave {other:?}, expected UnknownFilesystem")
            }
        }
        let err = disk
            .mount(&opts(None, true))
            .expect_err("mounting a partition table");
        assert!(
            err.to_string()
                .contains("unknown or unsupported filesystem"),
            "{label} whole disk: unclear error: {err}"
        );
    }
}

#[test]
fn missing_partition_is_reported() {
    let s = setup();
    let err = s
        .mbr
        .disk()
        .mount(&opts(Some(5), true))
        .expect_err("partition 5 does not exist");
    assert!(
        matches!(err, MountError::NoDevice { .. }),
        "partition 5: {err:?}"
    );
    println!("partition 5 of the MBR disk: {err}");
}

fn hash_range(path: &Path, start: u64, len: u64) -> [u8; 32] {
    let f = fs::File::open(path).expect("open image");
    let mut h = images::Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = start;
    while at < start + len {
        let k = ((start + len - at) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..k], at).expect("read image");
        h.update(&buf[..k]);
        at += k as u64;
    }
    h.finish()
}

/// The bytes outside `part`: what precedes it and what follows it.
fn outside(path: &Path, part: Part) -> ([u8; 32], [u8; 32]) {
    let size = fs::metadata(path).expect("stat").len();
    let end = part.start + part.len;
    (
        hash_range(path, 0, part.start),
        hash_range(path, end, size - end),
    )
}

/// Copies a partition out of the image for the host tools.
fn extract(image: &Path, part: Part, to: &Path) {
    let f = fs::File::open(image).expect("open image");
    let mut data = vec![0u8; part.len as usize];
    f.read_exact_at(&mut data, part.start)
        .expect("read partition");
    fs::write(to, data).expect("write partition copy");
}

/// Writes through partitions 1 (ext4) and 2 (vfat) of an MBR disk: only the
/// partition's own bytes change, and each partition then passes its checker
/// and holds the files (debugfs, mtools: no kernel involved).
#[test]
fn writes_stay_inside_their_partition() {
    let s = setup();
    common::with_watchdog("partition-writes", Duration::from_secs(120), move || {
        let image = &s.mbr_write;
        let disk = image.disk();
        let data = images::random_bytes(99, 1_000_000);
        for n in [1u32, 2] {
            let part = image.parts[n as usize - 1];
            let before = outside(&image.path, part);
            let m = disk.mount(&opts(Some(n), false)).expect("mount rw");
            let mp = m.path().to_str().expect("UTF-8").to_string();
            let spec = images::TreeSpec {
                symlinks: false,
                hardlinks: false,
                xattrs: false,
                modes: false,
                unicode: false,
                y2038: false,
                sparse_size: 0,
                seed: 0,
            };
            images::populate_kernel(
                &mp,
                &[images::Op::File {
                    path: "written.bin".into(),
                    data: data.clone(),
                    mode: 0o644,
                }],
                &spec,
            )
            .expect("write through the partition");
            m.unmount().expect("unmount");
            assert!(
                outside(&image.path, part) == before,
                "writing partition {n} changed bytes outside it"
            );

            let copy = s.dir.join(format!("mbr-write-p{n}.copy"));
            extract(&image.path, part, &copy);
            let fs = part.fs;
            images::fsck(fs, &copy).unwrap_or_else(|e| panic!("partition {n}: {e}"));
            let read_back = match fs {
                Fs::Ext4 => {
                    std::process::Command::new("debugfs")
                        .args(["-R", "cat /written.bin"])
                        .arg(&copy)
                        .stderr(std::process::Stdio::null())
                        .output()
                        .expect("debugfs")
                        .stdout
                }
                _ => {
                    let out = s.dir.join(format!("mbr-write-p{n}.written.bin"));
                    let mut c = cmd("mcopy", &["-n", "-i"]);
                    c.arg(&copy).arg("::/written.bin").arg(&out);
                    c.env("MTOOLS_SKIP_CHECK", "1");
                    run(&mut c).expect("mcopy");
                    fs::read(&out).expect("read mcopy output")
                }
            };
            assert!(
                read_back == data,
                "partition {n} ({}): the host tools read {} bytes, sha256 {}, expected {}",
                fs.fstype(),
                read_back.len(),
                images::hex(&images::sha256(&read_back)),
                images::hex(&images::sha256(&data))
            );
        }
    });
}
