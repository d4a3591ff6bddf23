//! The tools' failures: one clear line on stderr, a non-zero exit, and an image that is
//! still consistent (fsck clean) after running out of space.

mod common;

use std::path::Path;
use std::time::Duration;

use common::images::{blank_image, build, cmd, fsck, run, work_dir, Fs};
use common::tools::{args, run_tool, Outcome};

const CPTOFS: &str = env!("CARGO_BIN_EXE_cptofs");
const CPFROMFS: &str = env!("CARGO_BIN_EXE_cpfromfs");
const FS2TAR: &str = env!("CARGO_BIN_EXE_fs2tar");
const LIMIT: Duration = Duration::from_secs(60);

fn tool(program: &str, list: &[&dyn AsRef<std::ffi::OsStr>]) -> Outcome {
    let a = args(list);
    run_tool(program, &a.iter().collect::<Vec<_>>(), LIMIT)
}

fn assert_one_line_failure(o: &Outcome, prefix: &str, needle: &str) {
    assert_ne!(o.code, 0, "should fail: {}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", o.stderr);
    assert!(lines[0].starts_with(prefix), "{:?}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

fn ext4_image(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("disk.img");
    build(Fs::Ext4, None, &img, dir).unwrap_or_else(|e| panic!("{e}"));
    img
}

#[test]
fn missing_image() {
    let dir = work_dir("tools-errors-missing-image");
    let f = dir.join("f");
    std::fs::write(&f, b"x").expect("write");
    let o = tool(CPTOFS, &[&"-i", &dir.join("nope.img"), &f, &"/"]);
    assert_one_line_failure(&o, "cptofs: ", "nope.img: no such file or directory");
    assert_eq!(o.code, 1);
    let o = tool(
        FS2TAR,
        &[&"-i", &dir.join("nope.img"), &"-f", &dir.join("x.tar")],
    );
    assert_one_line_failure(&o, "fs2tar: ", "no such file or directory");
}

#[test]
fn wrong_type() {
    let dir = work_dir("tools-errors-wrong-type");
    let img = ext4_image(&dir);
    let o = tool(
        CPFROMFS,
        &[&"-i", &img, &"-t", &"xfs", &"/", &dir.join("out")],
    );
    // disk.rs first warns that "the XFS log needs recovery" (it retries a read-only XFS
    // mount that failed with EINVAL with norecovery): the error itself is the last line.
    assert_ne!(o.code, 0);
    let last = o.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("cpfromfs: ") && last.contains("cannot mount the filesystem"),
        "{}",
        o.stderr
    );
    let o = tool(
        CPFROMFS,
        &[&"-i", &img, &"-t", &"nosuchfs", &"/", &dir.join("out")],
    );
    assert_one_line_failure(&o, "cpfromfs: ", "unknown or unsupported filesystem");
    let blank = dir.join("blank.img");
    blank_image(&blank, 8 << 20).expect("blank");
    let o = tool(FS2TAR, &[&"-i", &blank, &"-f", &dir.join("x.tar")]);
    assert_one_line_failure(&o, "fs2tar: ", "unknown or unsupported filesystem");
}

#[test]
fn destination_problems() {
    let dir = work_dir("tools-errors-destination");
    let img = ext4_image(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::write(&a, b"a").expect("write");
    std::fs::write(&b, b"b").expect("write");
    assert_eq!(tool(CPTOFS, &[&"-i", &img, &a, &"/file"]).code, 0);
    // Several sources into an existing file.
    let o = tool(CPTOFS, &[&"-i", &img, &a, &b, &"/file"]);
    assert_one_line_failure(&o, "cptofs: ", "/file: not a directory");
    // Several sources into a missing directory.
    let o = tool(CPTOFS, &[&"-i", &img, &a, &b, &"/nodir"]);
    assert_one_line_failure(&o, "cptofs: ", "/nodir: no such directory");
    // One source onto an existing file: not overwritten.
    let o = tool(CPTOFS, &[&"-i", &img, &b, &"/file"]);
    assert_one_line_failure(&o, "cptofs: ", "destination exists");
    // cpfromfs: several sources into a host file.
    let o = tool(CPFROMFS, &[&"-i", &img, &"/file", &"/lost+found", &a]);
    assert_one_line_failure(&o, "cpfromfs: ", "not a directory");
    fsck(Fs::Ext4, &img).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn missing_source() {
    let dir = work_dir("tools-errors-missing-source");
    let img = ext4_image(&dir);
    let o = tool(CPTOFS, &[&"-i", &img, &dir.join("nope"), &"/"]);
    assert_one_line_failure(&o, "cptofs: ", "nope: no such file or directory");
    let o = tool(CPFROMFS, &[&"-i", &img, &"/nope", &dir.join("out")]);
    assert_one_line_failure(&o, "cpfromfs: ", "/nope in ");
    assert!(
        o.stderr.contains("no such file or directory"),
        "{}",
        o.stderr
    );
    let o = tool(
        FS2TAR,
        &[&"-i", &img, &"-C", &"/nope", &"-f", &dir.join("x.tar")],
    );
    assert_one_line_failure(&o, "fs2tar: ", "/nope in ");
}

#[test]
fn out_of_space_is_clear_and_leaves_the_image_consistent() {
    let dir = work_dir("tools-errors-enospc");
    let img = dir.join("small.img");
    blank_image(&img, 16 << 20).expect("blank");
    run(&mut cmd(
        "mkfs.ext4",
        &["-q", "-F", img.to_str().expect("utf-8")],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let src = dir.join("src");
    std::fs::create_dir(&src).expect("mkdir");
    for i in 0..3 {
        std::fs::write(
            src.join(format!("f{i}")),
            common::images::random_bytes(i, 8 << 20),
        )
        .expect("write");
    }
    let o = tool(CPTOFS, &[&"-i", &img, &src, &"/"]);
    assert_one_line_failure(&o, "cptofs: ", "no space left in ");
    assert!(
        o.stderr.contains("small.img while copying "),
        "{}",
        o.stderr
    );
    fsck(Fs::Ext4, &img).unwrap_or_else(|e| panic!("fsck after ENOSPC: {e}"));
}
