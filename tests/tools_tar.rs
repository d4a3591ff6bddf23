//! fs2tar: an ext4 image's archive against GNU tar's archive of a host loop mount of the
//! same image, entry by entry; streaming to stdout; and a 2 GiB sparse file through cptofs
//! and fs2tar with bounded memory.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::images::{build, cmd, fsck, hex, is_root, run, work_dir, Fs, HostMount, Sha256};
use common::tools::{args, make_tree, run_tool, run_tool_measured, Kinds};

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
}

/// Name → entry. Hard-link entries are resolved to the content of their target, so that
/// which of the names carries the data (readdir order) does not matter.
fn parse(archive: &[u8]) -> BTreeMap<String, TarEntry> {
    let mut out = BTreeMap::new();
    let mut links = Vec::new();
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
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
        if let Some(exts) = entry.pax_extensions().expect("pax") {
            for ext in exts {
                let ext = ext.expect("pax record");
                let key = ext.key().expect("utf-8 key");
                // Only user.* attributes: GNU tar puts ACLs into SCHILY.acl.* text records
                // (with --acls), fs2tar keeps them as the binary xattrs.
                if let Some(xname) = key.strip_prefix("SCHILY.xattr.user.") {
                    xattrs.insert(format!("user.{xname}"), ext.value_bytes().to_vec());
                }
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
        };
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
    // The archive holds the whole file (holes as zeros): check the two data spots.
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_out).expect("open tar"));
    let mut found = false;
    for entry in ar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == "huge" {
            assert_eq!(entry.header().size().expect("size"), 2 << 30);
            let mut head = [0u8; 5];
            entry.read_exact(&mut head).expect("read");
            assert_eq!(&head, b"start");
            let mut skip = std::io::Read::take(&mut entry, (1 << 30) - 5);
            std::io::copy(&mut skip, &mut std::io::sink()).expect("skip");
            let mut mid = [0u8; 6];
            entry.read_exact(&mut mid).expect("read");
            assert_eq!(&mid, b"middle");
            found = true;
        }
    }
    assert!(found, "huge is in the archive");
    let _ = std::fs::remove_file(&tar_out);
    eprintln!(
        "2 GiB sparse file through cptofs and fs2tar in {:?}",
        start.elapsed()
    );
}
