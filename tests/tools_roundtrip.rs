//! cptofs -a of a host tree with every kind of entry into empty ext4, xfs, btrfs, vfat and
//! exfat images, cpfromfs -a back, and the two trees compared (what each filesystem can
//! hold), the image checked by its own fsck.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::images::{build, fsck, work_dir, Fs};
use common::tools::{args, differences, make_tree, manifest, run_tool, Kinds};

const CPTOFS: &str = env!("CARGO_BIN_EXE_cptofs");
const CPFROMFS: &str = env!("CARGO_BIN_EXE_cpfromfs");
const LIMIT: Duration = Duration::from_secs(60);

fn round_trip(fs: Fs, kinds: Kinds) {
    let start = Instant::now();
    let dir = work_dir(&format!("tools-roundtrip-{}", fs.id()));
    let src = dir.join("src");
    std::fs::create_dir(&src).expect("mkdir src");
    make_tree(&src, kinds);
    let img = dir.join("disk.img");
    build(fs, None, &img, &dir).unwrap_or_else(|e| panic!("{e}"));

    let to = run_tool(
        CPTOFS,
        &args(&[&"-a", &"-i", &img, &src, &"/"])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(to.code, 0, "cptofs into {}: {}", fs.id(), to.stderr);
    fsck(fs, &img).unwrap_or_else(|e| panic!("fsck after cptofs: {e}"));

    let back = dir.join("back");
    let from = run_tool(
        CPFROMFS,
        &args(&[&"-a", &"-i", &img, &"/src", &back])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(from.code, 0, "cpfromfs from {}: {}", fs.id(), from.stderr);

    let expected = manifest(&src);
    let actual = manifest(&back);
    let diffs = differences(&expected, &actual, kinds.unix, kinds.ns_times);
    assert!(
        diffs.is_empty(),
        "{}: differences:\n{}",
        fs.id(),
        diffs.join("\n")
    );
    // The sparse file came back sparse (holes were not written as zeros). FAT and exFAT
    // cannot store holes: there it is only compared by content.
    let sparse = &actual["sparse"];
    assert!(
        !kinds.unix || sparse.allocated < 1 << 20,
        "{}: sparse file has {} bytes allocated",
        fs.id(),
        sparse.allocated
    );
    eprintln!("{}: round trip ok in {:?}", fs.id(), start.elapsed());
}

const UNIX: Kinds = Kinds {
    unix: true,
    ns_times: true,
};

#[test]
fn round_trip_ext4() {
    round_trip(Fs::Ext4, UNIX);
}

#[test]
fn round_trip_xfs() {
    round_trip(Fs::Xfs, UNIX);
}

#[test]
fn round_trip_btrfs() {
    round_trip(Fs::Btrfs, UNIX);
}

#[test]
fn round_trip_vfat() {
    round_trip(
        Fs::Vfat,
        Kinds {
            unix: false,
            ns_times: false,
        },
    );
}

#[test]
fn round_trip_exfat() {
    round_trip(
        Fs::Exfat,
        Kinds {
            unix: false,
            ns_times: false,
        },
    );
}

#[test]
fn missing_parent_in_image_is_reported() {
    // Not a round trip, but the same binaries: a one-source copy into a missing directory.
    let dir = work_dir("tools-roundtrip-missing-parent");
    let img = dir.join("disk.img");
    build(Fs::Ext4, None, &img, &dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("f");
    std::fs::write(&file, b"x").expect("write");
    let out = run_tool(
        CPTOFS,
        &args(&[&"-i", &img, &file, &Path::new("/no/such/dir/f")])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("/no/such/dir/f in "), "{}", out.stderr);
    assert!(
        out.stderr.contains("no such file or directory"),
        "{}",
        out.stderr
    );
}
