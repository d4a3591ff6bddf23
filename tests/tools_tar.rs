//! fs2tar: an ext4 image's archive against GNU tar's archive (`--sparse`) of a host loop
//! mount of the same image, entry by entry; streaming to stdout; a 2 GiB sparse file through
//! cptofs and fs2tar with bounded memory; and sparse files in GNU's PAX sparse format 1.0,
//! extracted sparse by GNU tar.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::images::{
    build, cmd, fsck, hex, is_root, random_bytes, run, work_dir, Fs, HostMount, Sha256,
};
use common::tools::{args, differences, make_tree, manifest, run_tool, run_tool_measured, Kinds};
use lklfuse::lkl::abi::Timestamp;
use lklfuse::tools::host;

const CPTOFS: &str = env!("CARGO_BIN_EXE_cptofs");
const FS2TAR: &str = env!("CARGO_BIN_EXE_fs2tar");
const LIMIT: Duration = Duration::from_secs(90);

#[derive(Debug, PartialEq, Eq)]
struct TarEntry {
    kind: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    sha: String,
    link: String,
    xattrs: BTreeMap<String, Vec<u8>>,
    device: (u32, u32),
    /// The PAX 1.0 sparse map (empty for ordinary entries).
    sparse: Vec<(u64, u64)>,
}

/// Reads the PAX 1.0 sparse map at the start of an entry's data, with its NUL padding to a
/// 512-byte block, checking the format strictly.
fn read_sparse_map(r: &mut impl Read) -> Vec<(u64, u64)> {
    let mut numbers: Vec<u64> = Vec::new();
    let mut want = None;
    let mut digits = String::new();
    let mut block = [0u8; 512];
    loop {
        r.read_exact(&mut block).expect("sparse map block");
        for &b in block.iter() {
            if want.is_some_and(|w| numbers.len() == w) {
                assert_eq!(b, 0, "NUL padding after the map");
            } else if b == b'\n' {
                numbers.push(digits.parse().expect("decimal map number"));
                digits.clear();
                if numbers.len() == 1 {
                    want = Some(1 + 2 * numbers[0] as usize);
                }
            } else {
                assert!(b.is_ascii_digit(), "map byte {b:#x}");
                digits.push(char::from(b));
            }
        }
        if want.is_some_and(|w| numbers.len() == w) {
            break;
        }
    }
    numbers[1..].chunks(2).map(|c| (c[0], c[1])).collect()
}

/// SHA-256 of a sparse entry's file: its data regions read from `r` (after the map), zeros
/// elsewhere, `realsize` bytes. Checks that the data ends with the last region.
fn sparse_sha(r: &mut impl Read, map: &[(u64, u64)], realsize: u64) -> String {
    let mut sha = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let hash_zeros = |sha: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64);
            sha.update(&zeros[..k as usize]);
            n -= k;
        }
    };
    for &(off, len) in map {
        assert!(off >= pos, "map in order: {map:?}");
        hash_zeros(&mut sha, off - pos);
        let mut left = len;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..k]).expect("region data");
            sha.update(&buf[..k]);
            left -= k as u64;
        }
        pos = off + len;
    }
    assert!(pos <= realsize, "map within the size: {map:?} {realsize}");
    hash_zeros(&mut sha, realsize - pos);
    assert_eq!(
        r.read(&mut buf).expect("read"),
        0,
        "data after the last region"
    );
    hex(&sha.finish())
}

/// The pax records of an entry, by key.
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> BTreeMap<String, Vec<u8>> {
    let mut pax = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions().expect("pax") {
        for ext in exts {
            let ext = ext.expect("pax record");
            pax.insert(
                ext.key().expect("utf-8 key").to_string(),
                ext.value_bytes().to_vec(),
            );
        }
    }
    pax
}

/// Name → entry. Hard-link entries are resolved to the content of their target, so that
/// which of the names carries the data (readdir order) does not matter.
fn parse(archive: &[u8]) -> BTreeMap<String, TarEntry> {
    let mut out = BTreeMap::new();
    let mut links = Vec::new();
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let pax = pax_records(&mut entry);
        let sparse = pax.get("GNU.sparse.major").map(|v| v.as_slice()) == Some(b"1");
        let name = if sparse {
            String::from_utf8_lossy(&pax["GNU.sparse.name"]).into_owned()
        } else {
            entry.path().expect("path").to_string_lossy().into_owned()
        };
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let name = if name.is_empty() {
            ".".to_string()
        } else {
            name
        };
        let mut xattrs = BTreeMap::new();
        for (key, value) in &pax {
            // Only user.* attributes: GNU tar puts ACLs into SCHILY.acl.* text records
            // (with --acls), fs2tar keeps them as the binary xattrs.
            if let Some(xname) = key.strip_prefix("SCHILY.xattr.user.") {
                xattrs.insert(format!("user.{xname}"), value.clone());
            }
        }
        let h = entry.header();
        let kind = format!("{:?}", h.entry_type());
        let link = h
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().trim_start_matches("./").to_string())
            .unwrap_or_default();
        let device = (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        );
        let mut e = TarEntry {
            kind,
            mode: h.mode().expect("mode") & 0o7777,
            uid: h.uid().expect("uid"),
            gid: h.gid().expect("gid"),
            mtime: h.mtime().expect("mtime"),
            size: h.size().expect("size"),
            sha: String::new(),
            link,
            xattrs,
            device,
            sparse: Vec::new(),
        };
        if sparse {
            assert_eq!(pax["GNU.sparse.minor"], b"0", "{name}");
            let realsize = String::from_utf8_lossy(&pax["GNU.sparse.realsize"])
                .parse()
                .expect("realsize");
            e.sparse = read_sparse_map(&mut entry);
            e.sha = sparse_sha(&mut entry, &e.sparse, realsize);
            e.size = realsize;
        } else {
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = entry.read(&mut buf).expect("data");
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
            }
            e.sha = hex(&sha.finish());
        }
        if e.kind == "Link" {
            links.push(name.clone());
        }
        out.insert(name, e);
    }
    for name in links {
        let target = out[&name].link.clone();
        let (size, sha) = (out[&target].size, out[&target].sha.clone());
        // GNU tar puts xattrs on the data entry only; fs2tar repeats them on links.
        let xattrs = out[&target].xattrs.clone();
        let e = out.get_mut(&name).expect("link entry");
        e.kind = "Regular".into();
        e.size = size;
        e.sha = sha;
        e.xattrs = xattrs;
        e.link.clear();
    }
    out
}

#[test]
fn fs2tar_matches_gnu_tar_of_a_loop_mount() {
    if !is_root() {
        eprintln!("SKIPPED: a host loop mount needs root (CI runs as root)");
        return;
    }
    let start = Instant::now();
    let dir = work_dir("tools-tar-gnu");
    let src = dir.join("src");
    std::fs::create_dir(&src).expect("mkdir");
    make_tree(
        &src,
        Kinds {
            unix: true,
            ns_times: true,
        },
    );
    let img = dir.join("disk.img");
    build(Fs::Ext4, None, &img, &dir).unwrap_or_else(|e| panic!("{e}"));
    let to = run_tool(
        CPTOFS,
        &args(&[&"-a", &"-i", &img, &src, &"/"])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(to.code, 0, "cptofs: {}", to.stderr);

    let ours = dir.join("ours.tar");
    let out = run_tool(
        FS2TAR,
        &args(&[&"-i", &img, &"-f", &ours])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(out.code, 0, "fs2tar: {}", out.stderr);

    let reference = dir.join("gnu.tar");
    {
        let mnt = HostMount::kernel(&img, &dir.join("mnt"), "ext4", "ro")
            .unwrap_or_else(|e| panic!("{e}"));
        run(&mut cmd(
            "tar",
            &[
                "--format=posix",
                "--sparse",
                "--xattrs",
                "--xattrs-include=user.*",
                "-C",
                mnt.dir.to_str().expect("utf-8"),
                "-cf",
                reference.to_str().expect("utf-8"),
                ".",
            ],
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let ours = parse(&std::fs::read(&ours).expect("read ours"));
    let gnu = parse(&std::fs::read(&reference).expect("read gnu"));
    let mut diffs = Vec::new();
    for (name, g) in &gnu {
        match ours.get(name) {
            None => diffs.push(format!("{name}: missing from fs2tar")),
            Some(o) if o != g => diffs.push(format!("{name}:\n  gnu   {g:?}\n  ours  {o:?}")),
            Some(_) => {}
        }
    }
    for name in ours.keys() {
        if !gnu.contains_key(name) {
            diffs.push(format!("{name}: only in fs2tar"));
        }
    }
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert!(gnu.len() > 50, "the tree has {} entries", gnu.len());
    // GNU tar found the holes of the tree's sparse file as fs2tar did (same map).
    assert!(
        ours["src/sparse"].sparse.len() > 1,
        "{:?}",
        ours["src/sparse"]
    );
    eprintln!(
        "fs2tar == GNU tar ({} entries) in {:?}",
        gnu.len(),
        start.elapsed()
    );
}

#[test]
fn fs2tar_streams_to_stdout_with_ns_times_and_acls() {
    let dir = work_dir("tools-tar-stdout");
    let src = dir.join("src");
    std::fs::create_dir(&src).expect("mkdir");
    make_tree(
        &src,
        Kinds {
            unix: true,
            ns_times: true,
        },
    );
    let img = dir.join("disk.img");
    build(Fs::Ext4, None, &img, &dir).unwrap_or_else(|e| panic!("{e}"));
    let to = run_tool(
        CPTOFS,
        &args(&[&"-a", &"-i", &img, &src, &"/"])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(to.code, 0, "cptofs: {}", to.stderr);
    let out = run_tool(
        FS2TAR,
        &args(&[&"-i", &img, &"-C", &"/src/dir"])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(out.code, 0, "fs2tar: {}", out.stderr);
    let mut ar = tar::Archive::new(out.stdout.as_slice());
    let mut seen = BTreeMap::new();
    for entry in ar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut pax = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().expect("pax") {
            for ext in exts {
                let ext = ext.expect("record");
                pax.insert(
                    ext.key().expect("key").to_string(),
                    ext.value_bytes().to_vec(),
                );
            }
        }
        seen.insert(name, pax);
    }
    let big = &seen["big.bin"];
    assert!(
        big.contains_key("SCHILY.xattr.system.posix_acl_access"),
        "{big:?}"
    );
    let mtime = String::from_utf8_lossy(&big["mtime"]).into_owned();
    assert!(mtime.contains('.'), "nanoseconds kept: {mtime}");
    let host = std::fs::symlink_metadata(src.join("dir/big.bin")).expect("stat");
    use std::os::unix::fs::MetadataExt;
    let want = format!("{}.{:09}", host.mtime(), host.mtime_nsec());
    assert_eq!(mtime, want.trim_end_matches('0'));
    assert!(seen.contains_key("sub/hard2"), "{:?}", seen.keys());
}

#[test]
fn two_gib_sparse_file_with_bounded_memory() {
    let start = Instant::now();
    let dir = work_dir("tools-tar-sparse");
    let src = dir.join("huge");
    let f = std::fs::File::create(&src).expect("create");
    f.write_all_at(b"start", 0).expect("write");
    f.write_all_at(b"middle", 1 << 30).expect("write");
    f.set_len(2 << 30).expect("extend");
    drop(f);
    let img = dir.join("disk.img");
    build(Fs::Ext4, None, &img, &dir).unwrap_or_else(|e| panic!("{e}"));

    let to = run_tool_measured(
        CPTOFS,
        &args(&[&"-i", &img, &src, &"/huge"])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
        true,
    );
    assert_eq!(to.code, 0, "cptofs: {}", to.stderr);
    fsck(Fs::Ext4, &img).unwrap_or_else(|e| panic!("{e}"));
    let tar_out = dir.join("out.tar");
    let out = run_tool_measured(
        FS2TAR,
        &args(&[&"-i", &img, &"-f", &tar_out])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
        true,
    );
    assert_eq!(out.code, 0, "fs2tar: {}", out.stderr);
    let limit_kib = 200 * 1024;
    for (tool, o) in [("cptofs", &to), ("fs2tar", &out)] {
        let rss = o.max_rss_kib.expect("/usr/bin/time reports max RSS");
        eprintln!("{tool}: max RSS {} MiB", rss / 1024);
        assert!(rss < limit_kib, "{tool}: max RSS {rss} KiB");
    }
    // The archive is sparse: the map and the two data blocks, not 2 GiB of zeros.
    let archive_len = std::fs::metadata(&tar_out).expect("stat tar").len();
    assert!(archive_len < 1 << 20, "archive of {archive_len} bytes");
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_out).expect("open tar"));
    let mut found = false;
    for entry in ar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let pax = pax_records(&mut entry);
        if pax.get("GNU.sparse.name").map(|v| v.as_slice()) != Some(b"huge") {
            continue;
        }
        assert_eq!(
            entry.path().expect("path").to_string_lossy(),
            "./GNUSparseFile.0/huge"
        );
        assert_eq!(
            pax["GNU.sparse.realsize"],
            (2u64 << 30).to_string().as_bytes()
        );
        let map = read_sparse_map(&mut entry);
        assert_eq!(map, [(0, 4096), (1 << 30, 4096), (2 << 30, 0)]);
        let mut block = vec![0u8; 4096];
        entry.read_exact(&mut block).expect("read");
        assert_eq!(&block[..5], b"start");
        entry.read_exact(&mut block).expect("read");
        assert_eq!(&block[..6], b"middle");
        assert_eq!(entry.read(&mut block).expect("read"), 0);
        found = true;
    }
    assert!(found, "huge is in the archive");
    let _ = std::fs::remove_file(&tar_out);
    eprintln!(
        "2 GiB sparse file through cptofs and fs2tar in {:?}",
        start.elapsed()
    );
}

/// Entries with holes in GNU's PAX sparse format 1.0: GNU tar lists them under their real
/// names and extracts them sparse, with their content and metadata; the records and the map
/// read back with the `tar` crate; a file without holes stays an ordinary entry.
#[test]
fn sparse_files_in_pax_format_1_0_extract_sparse_with_gnu_tar() {
    use std::os::unix::fs::PermissionsExt;
    let start = Instant::now();
    let dir = work_dir("tools-tar-pax-sparse");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    // 1 GiB: data at 0, at 300 MiB and in the last 4 KiB.
    let big = src.join("big");
    let f = std::fs::File::create(&big).expect("create");
    f.write_all_at(&random_bytes(1, 64 << 10), 0)
        .expect("write");
    f.write_all_at(&random_bytes(2, 64 << 10), 300 << 20)
        .expect("write");
    f.write_all_at(&random_bytes(3, 4096), (1 << 30) - 4096)
        .expect("write");
    drop(f);
    // Ends in a hole (the closing (size, 0) region sets the size), below a directory.
    let f = std::fs::File::create(src.join("sub/tail-hole")).expect("create");
    f.write_all_at(&random_bytes(4, 8192), 1 << 20)
        .expect("write");
    f.set_len(16 << 20).expect("extend");
    drop(f);
    // Only a hole.
    std::fs::File::create(src.join("all-hole"))
        .and_then(|f| f.set_len(5 << 20))
        .expect("create");
    std::fs::write(src.join("dense"), random_bytes(5, (2 << 20) + 77)).expect("write");
    // Metadata a sparse entry must keep too.
    host::set_xattr(&big, std::ffi::OsStr::new("user.note"), b"sparse").expect("xattr");
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    if is_root() {
        std::os::unix::fs::lchown(&big, Some(1234), Some(5678)).expect("chown");
    }
    for (i, name) in ["big", "sub/tail-hole", "all-hole", "dense"]
        .iter()
        .enumerate()
    {
        let t = Timestamp::new(1_600_000_000 + i as i64, 123_456_789).expect("time");
        host::set_times(&src.join(name), t, t).expect("utimensat");
    }
    let img = dir.join("disk.img");
    build(Fs::Ext4, None, &img, &dir).unwrap_or_else(|e| panic!("{e}"));
    let to = run_tool(
        CPTOFS,
        &args(&[&"-a", &"-i", &img, &src, &"/"])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(to.code, 0, "cptofs: {}", to.stderr);
    let tar_out = dir.join("out.tar");
    let t0 = Instant::now();
    let out = run_tool(
        FS2TAR,
        &args(&[&"-i", &img, &"-C", &"/src", &"-f", &tar_out])
            .iter()
            .collect::<Vec<_>>(),
        LIMIT,
    );
    assert_eq!(out.code, 0, "fs2tar: {}", out.stderr);
    let fs2tar_time = t0.elapsed();
    let archive_len = std::fs::metadata(&tar_out).expect("stat tar").len();
    assert!(archive_len < 4 << 20, "archive of {archive_len} bytes");

    // The records, ustar names and maps, read with the tar crate.
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_out).expect("open tar"));
    let mut seen = BTreeMap::new();
    for entry in ar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let pax = pax_records(&mut entry);
        let stored = entry.path().expect("path").to_string_lossy().into_owned();
        let Some(name) = pax.get("GNU.sparse.name") else {
            assert!(!stored.contains("GNUSparseFile"), "{stored}: {pax:?}");
            if stored == "dense" {
                assert_eq!(entry.header().size().expect("size"), (2 << 20) + 77);
            }
            continue;
        };
        let name = String::from_utf8(name.clone()).expect("utf-8");
        assert!(!pax.contains_key("path"), "{name}: {pax:?}");
        assert_eq!(pax["GNU.sparse.major"], b"1", "{name}");
        assert_eq!(pax["GNU.sparse.minor"], b"0", "{name}");
        assert!(
            pax.contains_key("mtime") && pax.contains_key("ctime"),
            "{pax:?}"
        );
        let realsize: u64 = String::from_utf8_lossy(&pax["GNU.sparse.realsize"])
            .parse()
            .expect("realsize");
        let map = read_sparse_map(&mut entry);
        let data: u64 = map.iter().map(|r| r.1).sum();
        let map_blocks = entry.header().size().expect("size") - data;
        assert!(
            map_blocks > 0 && map_blocks.is_multiple_of(512),
            "{name}: {map_blocks}"
        );
        let sha = sparse_sha(&mut entry, &map, realsize);
        seen.insert(name, (stored, realsize, map, sha, pax));
    }
    let names: Vec<&String> = seen.keys().collect();
    assert_eq!(names, ["all-hole", "big", "sub/tail-hole"]);
    let (stored, size, map, _, pax) = &seen["big"];
    assert_eq!(stored, "./GNUSparseFile.0/big");
    assert_eq!(*size, 1 << 30);
    assert_eq!(
        *map,
        [
            (0, 64 << 10),
            (300 << 20, 64 << 10),
            ((1 << 30) - 4096, 4096),
            (1 << 30, 0)
        ]
    );
    assert_eq!(pax["SCHILY.xattr.user.note"], b"sparse");
    assert_eq!(
        String::from_utf8_lossy(&pax["mtime"]),
        "1600000000.123456789"
    );
    let (stored, size, map, _, _) = &seen["sub/tail-hole"];
    assert_eq!(stored, "sub/GNUSparseFile.0/tail-hole");
    assert_eq!(*size, 16 << 20);
    assert_eq!(*map, [(1 << 20, 8192), (16 << 20, 0)]);
    let (_, size, map, _, _) = &seen["all-hole"];
    assert_eq!(*size, 5 << 20);
    assert_eq!(*map, [(5 << 20, 0)]);

    // GNU tar lists the real names and sizes, and extracts the files sparse.
    let listing = cmd("tar", &["-tvf", tar_out.to_str().expect("utf-8")])
        .output()
        .expect("tar -tvf");
    assert!(listing.status.success(), "tar -tvf: {listing:?}");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(!listing.contains("GNUSparseFile"), "{listing}");
    for (size, name) in [
        ("1073741824", "big"),
        ("16777216", "sub/tail-hole"),
        ("5242880", "all-hole"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" {name}")) && l.contains(&format!(" {size} "))),
            "{name} ({size}) in:\n{listing}"
        );
    }
    let extracted = dir.join("extracted");
    std::fs::create_dir(&extracted).expect("mkdir");
    run(&mut cmd(
        "tar",
        &[
            "--xattrs",
            "--xattrs-include=user.*",
            "-C",
            extracted.to_str().expect("utf-8"),
            "-xf",
            tar_out.to_str().expect("utf-8"),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let expected = manifest(&src);
    let actual = manifest(&extracted);
    let diffs = differences(&expected, &actual, is_root(), true);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    for name in ["big", "sub/tail-hole", "all-hole"] {
        let allocated = actual[name].allocated;
        assert!(allocated < 16 << 20, "{name}: {allocated} bytes allocated");
    }
    for name in ["big", "sub/tail-hole", "all-hole"] {
        assert_eq!(actual[name].sha, seen[name].3, "{name}: tar crate view");
    }
    eprintln!(
        "PAX 1.0 sparse: fs2tar {fs2tar_time:?}, archive {archive_len} bytes, whole test {:?}",
        start.elapsed()
    );
}
