//! File operations through a real `lklfuse` mount, done by ordinary host
//! programs (coreutils, util-linux, attr, acl, python3): ext4 in depth, then
//! XFS, btrfs, vfat and exFAT more briefly, then read-only images. Every
//! writable image is checked by its own fsck after unmounting and mounted
//! again to see that everything written is there.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fuse::{
    self, fsck_clean, fuse_test, lstat, make_fs, py, py_as, q, run_as, sh, sh_as, sh_ok, sha,
    subdir, write_random, Daemon, Spawned,
};
use common::images::{self, Fs};

const FILE: &str = "fuse_ops";
const LIMIT: Duration = Duration::from_secs(300);

#[track_caller]
fn start(img: &Path, mnt: &Path, opts: &[&str]) -> Daemon {
    Daemon::start(img, mnt, opts).unwrap_or_else(|e| panic!("mount {}: {e}", img.display()))
}

/// A new ext4 image in `dir` mounted on `dir/mnt` with `opts`: the image, the mount point,
/// the daemon and the mount point as a string for shell lines.
#[track_caller]
fn mount_fresh_ext4(dir: &Path, opts: &[&str]) -> (PathBuf, PathBuf, Daemon, String) {
    let img = dir.join("ext4.img");
    make_fs(Fs::Ext4, &img, dir);
    let mnt = subdir(dir, "mnt", 0o755, None);
    let d = start(&img, &mnt, opts);
    let m = fuse::path_str(&mnt).to_string();
    (img, mnt, d, m)
}

/// The errno name python3 sees for each line of `calls` (python expressions
/// using `m`, the mount point), or "OK".
fn errnos(mnt: &Path, calls: &[&str]) -> Vec<String> {
    let mut code = String::from(fuse::PY_ERRNO_PRELUDE);
    for c in calls {
        code.push_str(&format!("print(t(lambda: {c}))\n"));
    }
    let out = py(&code, &[fuse::path_str(mnt)]).expect_ok();
    out.lines().map(str::to_string).collect()
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// (f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree) of a mounted fs.
fn statvfs(mnt: &Path) -> [u64; 6] {
    let out = py(
        "import os, sys\ns = os.statvfs(sys.argv[1])\n\
         print(s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree)",
        &[fuse::path_str(mnt)],
    )
    .expect_ok();
    let v: Vec<u64> = out
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    [v[0], v[1], v[2], v[3], v[4], v[5]]
}

/// statfs numbers consistent with an image of `image_size` bytes.
#[track_caller]
fn check_statfs(mnt: &Path, image_size: u64, what: &str) -> [u64; 6] {
    let s = statvfs(mnt);
    let [frsize, blocks, bfree, bavail, _, _] = s;
    let total = frsize * blocks;
    assert!(
        total <= image_size && total >= image_size / 10 * 7,
        "{what}: statfs total {total} bytes ({blocks} × {frsize}) for a {image_size}-byte image"
    );
    assert!(
        bavail <= bfree && bfree <= blocks,
        "{what}: statfs bavail {bavail} ≤ bfree {bfree} ≤ blocks {blocks} does not hold"
    );
    // df (coreutils) agrees.
    let df = sh_ok(&format!("df -B1 --output=size {}", q(mnt)));
    let df_size: u64 = df
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: df output {df:?}"));
    assert_eq!(df_size, total, "{what}: df size vs statvfs");
    s
}

fn stat_line(p: &Path) -> (i64, i64, u32, u32, u32) {
    let md = lstat(p);
    (
        md.mtime(),
        md.mtime_nsec(),
        md.mode() & 0o7777,
        md.uid(),
        md.gid(),
    )
}

// ---------------------------------------------------------------------------------------------
// ext4 in depth

#[test]
fn ext4_files_links_times_and_errors() {
    fuse_test(FILE, "ext4_files", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4"]);

        // The mount table: fstype fuse.lklfuse, source the image.
        let fm = sh_ok(&format!(
            "findmnt -n -o FSTYPE,SOURCE --mountpoint {}",
            q(&mnt)
        ));
        let fm: Vec<&str> = fm.split_whitespace().collect();
        assert_eq!(
            fm,
            vec!["fuse.lklfuse", fuse::path_str(&img)],
            "findmnt FSTYPE,SOURCE"
        );
        let before = check_statfs(&mnt, Fs::Ext4.image_size(), "fresh ext4");

        // cp of a multi-MiB file in and out.
        let src = dir.join("src-5M.bin");
        let h5 = write_random(&src, 1, (5 << 20) + 17);
        sh_ok(&format!("cp {} {}/big.bin", q(&src), q(&mnt)));
        sh_ok(&format!("cp {}/big.bin {}/out.bin", q(&mnt), q(&dir)));
        assert_eq!(sha(&dir.join("out.bin")), h5, "cp in then out: content");

        // mv -T (file into a directory under a new name; directory onto an empty one).
        sh_ok(&format!(
            "cd {} && mkdir d1 dA dB && mv -T big.bin d1/moved.bin && echo x > dA/x && mv -T dA dB",
            q(&mnt)
        ));
        assert!(!mnt.join("big.bin").exists(), "mv -T: source still there");
        assert_eq!(sha(&mnt.join("d1/moved.bin")), h5, "mv -T: content");
        assert!(!mnt.join("dA").exists(), "mv -T dA dB: dA still there");
        assert_eq!(
            read(&mnt.join("dB/x")),
            b"x\n",
            "mv -T dA dB: content of dB/x"
        );

        // Hard link.
        sh_ok(&format!("cd {} && ln d1/moved.bin hard.bin", q(&mnt)));
        let (a, b) = (
            lstat(&mnt.join("d1/moved.bin")),
            lstat(&mnt.join("hard.bin")),
        );
        assert_eq!((a.nlink(), b.nlink()), (2, 2), "ln: link counts");
        assert_eq!(a.ino(), b.ino(), "ln: both names show one inode");

        // Symlink.
        sh_ok(&format!("cd {} && ln -s d1/moved.bin sym", q(&mnt)));
        let target = sh_ok(&format!("readlink {}/sym", q(&mnt)));
        assert_eq!(target.trim(), "d1/moved.bin", "readlink");
        assert!(
            lstat(&mnt.join("sym")).file_type().is_symlink(),
            "sym is a symlink"
        );
        assert_eq!(sha(&mnt.join("sym")), h5, "reading through the symlink");

        // mkdir/rmdir, unlink.
        sh_ok(&format!("cd {} && mkdir -p x/y/z && rmdir x/y/z", q(&mnt)));
        assert!(
            mnt.join("x/y").is_dir() && !mnt.join("x/y/z").exists(),
            "mkdir -p / rmdir"
        );
        sh_ok(&format!("rm {}/hard.bin", q(&mnt)));
        assert!(!mnt.join("hard.bin").exists(), "unlink: still there");
        assert_eq!(
            lstat(&mnt.join("d1/moved.bin")).nlink(),
            1,
            "unlink: link count back to 1"
        );

        // Nanosecond timestamps.
        let t = mnt.join("times.txt");
        fs::write(&t, b"times\n").expect("write times.txt");
        let out = fuse::run(
            fuse::command(
                "touch",
                &["-d", "2001-02-03 04:05:06.123456789", fuse::path_str(&t)],
            )
            .env("TZ", "UTC"),
        );
        assert!(out.ok(), "touch -d: {}", out.describe());
        let md = lstat(&t);
        assert_eq!(
            (md.mtime(), md.mtime_nsec(), md.atime(), md.atime_nsec()),
            (981_173_106, 123_456_789, 981_173_106, 123_456_789),
            "touch -d '2001-02-03 04:05:06.123456789' UTC: mtime and atime (s, ns)"
        );

        // chmod/chown as root.
        sh_ok(&format!(
            "cd {} && chmod 0640 times.txt && chown 1234:5678 times.txt",
            q(&mnt)
        ));
        let md = lstat(&t);
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid()),
            (0o640, 1234, 5678),
            "chmod 0640 / chown 1234:5678"
        );

        // truncate: grow (zeros) and shrink.
        let tr = mnt.join("trunc.bin");
        let data = images::random_bytes(2, 100_000);
        fs::write(&tr, &data).expect("write trunc.bin");
        sh_ok(&format!("truncate -s 10M {}", q(&tr)));
        let grown = read(&tr);
        assert_eq!(grown.len(), 10 << 20, "truncate -s 10M: size");
        assert_eq!(&grown[..100_000], &data[..], "truncate grow: old data kept");
        assert!(
            grown[100_000..].iter().all(|&b| b == 0),
            "truncate grow: zeros"
        );
        sh_ok(&format!("truncate -s 1000 {}", q(&tr)));
        assert_eq!(read(&tr), &data[..1000], "truncate -s 1000: content");

        // Large sequential I/O with 4 MiB requests.
        let big = dir.join("src-32M.bin");
        let h32 = write_random(&big, 3, 32 << 20);
        let free_before = statvfs(&mnt)[2];
        sh_ok(&format!(
            "dd if={} of={}/dd.bin bs=4M conv=fsync status=none && dd if={}/dd.bin of={}/dd-out.bin bs=4M status=none",
            q(&big),
            q(&mnt),
            q(&mnt),
            q(&dir)
        ));
        assert_eq!(sha(&dir.join("dd-out.bin")), h32, "dd bs=4M in and out");
        let after = check_statfs(&mnt, Fs::Ext4.image_size(), "after writing 32 MiB");
        let used = (free_before - after[2]) * after[0];
        assert!(
            used >= 30 << 20,
            "statfs: writing 32 MiB used only {used} bytes (free blocks {free_before} → {}, fresh {})",
            after[2],
            before[2]
        );

        // 1000 directory entries.
        py(
            "import os, sys\nd = sys.argv[1]\nos.mkdir(d)\n\
             for i in range(1000):\n    os.close(os.open('%s/f-%04d' % (d, i), os.O_CREAT | os.O_WRONLY, 0o644))",
            &[&format!("{}/many", fuse::path_str(&mnt))],
        )
        .expect_ok();
        let expected: BTreeSet<String> = (0..1000).map(|i| format!("f-{i:04}")).collect();
        assert_eq!(
            names(&mnt.join("many")),
            expected,
            "readdir of 1000 entries"
        );
        let ls = sh_ok(&format!("ls -f {}/many | grep -c '^f-'", q(&mnt)));
        assert_eq!(ls.trim(), "1000", "ls -f of 1000 entries");

        // errno pass-through.
        let got = errnos(
            &mnt,
            &[
                "os.open(m + '/nope', os.O_RDONLY)",
                "os.mkdir(m + '/d1')",
                "os.rmdir(m + '/d1')",
                "os.open(m + '/d1', os.O_WRONLY)",
                "os.open(m + '/d1/moved.bin/x', os.O_RDONLY)",
                "os.rmdir(m + '/d1/moved.bin')",
                "os.unlink(m + '/d1')",
                "os.rename(m + '/x', m + '/x/y/inside')",
                // isatty (TCGETS) is refused; lsattr's FS_IOC_GETFLAGS is served.
                "__import__('fcntl').ioctl(os.open(m + '/d1/moved.bin', 0), 0x5401, bytes(60))",
                "__import__('fcntl').ioctl(os.open(m + '/d1/moved.bin', 0), 0x80086601, bytes(8))",
            ],
        );
        assert_eq!(
            got,
            [
                "ENOENT",
                "EEXIST",
                "ENOTEMPTY",
                "EISDIR",
                "ENOTDIR",
                "ENOTDIR",
                "EISDIR",
                "EINVAL",
                "ENOTTY",
                "OK"
            ],
            "errno seen by python3 for: open missing, mkdir existing, rmdir non-empty, \
             open dir for writing, open below a file, rmdir a file, unlink a dir, \
             rename a dir below itself, two ioctls"
        );

        // copy_file_range.
        let out = py(
            "import os, sys\n\
             s = os.open(sys.argv[1], os.O_RDONLY)\n\
             d = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n\
             n = os.fstat(s).st_size\noff = 0\n\
             while off < n:\n    k = os.copy_file_range(s, d, n - off)\n    if k == 0: break\n    off += k\n\
             os.fsync(d)\nprint(off)",
            &[
                &format!("{}/d1/moved.bin", fuse::path_str(&mnt)),
                &format!("{}/cfr.bin", fuse::path_str(&mnt)),
            ],
        )
        .expect_ok();
        assert_eq!(
            out.trim(),
            ((5u64 << 20) + 17).to_string(),
            "copy_file_range: bytes copied"
        );
        assert_eq!(sha(&mnt.join("cfr.bin")), h5, "copy_file_range: content");

        let times = stat_line(&t);
        d.stop();
        fsck_clean(Fs::Ext4, &img);

        // Everything is there after a remount.
        let d = start(&img, &mnt, &["type=ext4"]);
        assert_eq!(sha(&mnt.join("d1/moved.bin")), h5, "remount: d1/moved.bin");
        assert_eq!(sha(&mnt.join("cfr.bin")), h5, "remount: cfr.bin");
        assert_eq!(sha(&mnt.join("dd.bin")), h32, "remount: dd.bin");
        assert_eq!(read(&mnt.join("dB/x")), b"x\n", "remount: dB/x");
        assert_eq!(read(&tr), &data[..1000], "remount: trunc.bin");
        assert_eq!(
            fs::read_link(mnt.join("sym")).expect("readlink after remount"),
            Path::new("d1/moved.bin"),
            "remount: symlink target"
        );
        assert!(!mnt.join("hard.bin").exists() && !mnt.join("x/y/z").exists());
        assert_eq!(
            stat_line(&t),
            times,
            "remount: times.txt times, mode and owner"
        );
        assert_eq!(
            names(&mnt.join("many")),
            expected,
            "remount: readdir of 1000"
        );
        d.stop();
        fsck_clean(Fs::Ext4, &img);
    });
}

#[test]
fn ext4_fallocate_sparse_files_and_seek() {
    fuse_test(FILE, "ext4_sparse", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4"]);
        const MIB: u64 = 1 << 20;

        // fallocate -l: allocated, size set.
        let al = mnt.join("alloc");
        sh_ok(&format!("fallocate -l 8M {}", q(&al)));
        let md = lstat(&al);
        assert_eq!(md.len(), 8 * MIB, "fallocate -l 8M: size");
        assert!(
            md.blocks() * 512 >= 8 * MIB,
            "fallocate -l 8M: {} blocks",
            md.blocks()
        );
        assert!(
            read(&al).iter().all(|&b| b == 0),
            "fallocate -l: reads zeros"
        );

        // fallocate -p: punch a hole, blocks drop, zeros inside.
        let data = images::random_bytes(4, 8 << 20);
        let punch = mnt.join("punch.bin");
        fs::write(&punch, &data).expect("write punch.bin");
        sh_ok(&format!("sync {}", q(&punch)));
        let before = lstat(&punch).blocks();
        sh_ok(&format!("fallocate -p -o 1M -l 4M {}", q(&punch)));
        sh_ok(&format!("sync {}", q(&punch)));
        let after = lstat(&punch).blocks();
        assert!(
            after * 512 + 4 * MIB <= before * 512 + 256 * 1024,
            "fallocate -p of 4 MiB: st_blocks {before} → {after}"
        );
        assert_eq!(lstat(&punch).len(), 8 * MIB, "fallocate -p keeps the size");
        let mut expect_punch = data.clone();
        expect_punch[MIB as usize..5 * MIB as usize].fill(0);
        assert!(
            read(&punch) == expect_punch,
            "fallocate -p: content (zeros in the hole only)"
        );

        // fallocate -z: zero a range.
        let zdata = images::random_bytes(5, 4 << 20);
        let zero = mnt.join("zero.bin");
        fs::write(&zero, &zdata).expect("write zero.bin");
        sh_ok(&format!("fallocate -z -o 512K -l 1M {}", q(&zero)));
        let mut expect_zero = zdata.clone();
        expect_zero[512 * 1024..512 * 1024 + MIB as usize].fill(0);
        assert_eq!(lstat(&zero).len(), 4 * MIB, "fallocate -z keeps the size");
        assert!(read(&zero) == expect_zero, "fallocate -z: content");

        // cp --sparse=always keeps holes; SEEK_DATA/SEEK_HOLE show them.
        let host_sparse = dir.join("sparse-src.img");
        {
            let f = fs::File::create(&host_sparse).expect("create sparse source");
            f.set_len(64 * MIB).expect("set_len");
            f.write_all_at(&images::random_bytes(6, 65536), 0)
                .expect("write");
            f.write_all_at(&images::random_bytes(7, 65536), 40 * MIB)
                .expect("write");
        }
        let hs = sha(&host_sparse);
        let sp = mnt.join("sparse.img");
        sh_ok(&format!(
            "cp --sparse=always {} {}",
            q(&host_sparse),
            q(&sp)
        ));
        sh_ok(&format!("sync {}", q(&sp)));
        assert_eq!(sha(&sp), hs, "cp --sparse=always: content");
        let blocks = lstat(&sp).blocks();
        assert!(
            blocks * 512 <= MIB,
            "cp --sparse=always of a 64 MiB file with 128 KiB of data: {blocks} blocks"
        );
        let seek = "import os, sys, errno\nfd = os.open(sys.argv[1], os.O_RDONLY)\n\
                    def s(off, how):\n    try:\n        return str(os.lseek(fd, off, how))\n    \
                    except OSError as e:\n        return errno.errorcode[e.errno]\n\
                    print(s(0, os.SEEK_DATA), s(0, os.SEEK_HOLE), s(1 << 20, os.SEEK_DATA), \
                    s(40 << 20, os.SEEK_HOLE), s((41 << 20), os.SEEK_DATA), s(1 << 20, os.SEEK_HOLE))";
        let out = py(seek, &[fuse::path_str(&sp)]).expect_ok();
        let v: Vec<&str> = out.split_whitespace().collect();
        let expected = [
            "0".to_string(),
            "65536".to_string(),
            (40 * MIB).to_string(),
            (40 * MIB + 65536).to_string(),
            "ENXIO".to_string(),
            MIB.to_string(),
        ];
        assert_eq!(
            v, expected,
            "SEEK_DATA 0, SEEK_HOLE 0, SEEK_DATA 1M, SEEK_HOLE 40M, SEEK_DATA 41M, SEEK_HOLE 1M \
             on a 64 MiB file with data at [0, 64K) and [40M, 40M+64K)"
        );

        d.stop();
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt, &["type=ext4"]);
        assert!(read(&punch) == expect_punch, "remount: punched file");
        assert!(read(&zero) == expect_zero, "remount: zeroed file");
        assert_eq!(sha(&sp), hs, "remount: sparse file");
        assert!(
            lstat(&sp).blocks() * 512 <= MIB,
            "remount: sparse file still sparse"
        );
        assert!(
            lstat(&al).blocks() * 512 >= 8 * MIB,
            "remount: fallocated blocks"
        );
        d.stop();
    });
}

#[test]
fn ext4_xattrs_and_acls() {
    fuse_test(FILE, "ext4_xattrs", LIMIT, |dir| {
        // allow_other: the ACL is checked for other users' requests.
        let (img, mnt, d, m) = mount_fresh_ext4(&dir, &["type=ext4", "allow_other"]);

        sh_ok(&format!(
            "cd {} && echo data > x.txt && ln -s x.txt lnk && mkdir xd",
            q(&mnt)
        ));
        sh_ok(&format!(
            "cd {} && setfattr -n user.color -v blue x.txt && setfattr -n user.d -v on-dir xd",
            q(&mnt)
        ));
        let v = sh_ok(&format!("getfattr --only-values -n user.color {m}/x.txt"));
        assert_eq!(v, "blue", "getfattr user.color");
        let dump = sh_ok(&format!("getfattr -d {m}/x.txt"));
        assert!(dump.contains("user.color=\"blue\""), "getfattr -d: {dump}");
        // A 3000-byte binary value, listxattr, removal.
        let out = py(
            "import os, sys\np = sys.argv[1] + '/x.txt'\nv = bytes(range(256)) * 11 + b'end'\n\
             os.setxattr(p, 'user.big', v)\nassert os.getxattr(p, 'user.big') == v, 'value'\n\
             print(sorted(os.listxattr(p)))\nos.removexattr(p, 'user.big')\n\
             try:\n    os.getxattr(p, 'user.big')\n    print('still there')\n\
             except OSError as e:\n    print(e.errno == 61 and 'ENODATA' or e.errno)",
            &[&m],
        )
        .expect_ok();
        assert_eq!(
            out, "['user.big', 'user.color']\nENODATA\n",
            "setxattr/getxattr/listxattr/removexattr of a 3000-byte value"
        );
        // user.* on a symlink: the kernel says EPERM.
        let out = sh(&format!("setfattr -h -n user.s -v 1 {m}/lnk"));
        assert!(
            !out.ok() && out.stderr.contains("Operation not permitted"),
            "setfattr -h user.* on a symlink: expected EPERM: {}",
            out.describe()
        );

        // ACL: 2002 may read a root 0600 file, 2003 may not.
        sh_ok(&format!(
            "cd {} && echo secret > acl.txt && chmod 0600 acl.txt && setfacl -m u:2002:r acl.txt",
            q(&mnt)
        ));
        let acl = sh_ok(&format!("getfacl -n -p --omit-header {m}/acl.txt"));
        assert!(
            acl.contains("user:2002:r--") && acl.contains("mask::r--"),
            "getfacl: {acl}"
        );
        let out = run_as(2002, 2002, &[], "cat", &[&format!("{m}/acl.txt")]);
        assert!(
            out.ok() && out.stdout == "secret\n",
            "uid 2002 (in the ACL) reads: {}",
            out.describe()
        );
        let out = py_as(
            2003,
            2003,
            &[],
            "import sys, errno\ntry:\n    open(sys.argv[1]).read()\n    print('read')\n\
             except OSError as e:\n    print(errno.errorcode[e.errno])",
            &[&format!("{m}/acl.txt")],
        );
        assert_eq!(
            out.stdout.trim(),
            "EACCES",
            "uid 2003 (not in the ACL): {}",
            out.describe()
        );
        // A default ACL on a directory is inherited.
        sh_ok(&format!(
            "cd {} && setfacl -d -m u:2003:rw xd && echo n > xd/new && getfacl -n -p --omit-header xd/new",
            q(&mnt)
        ));
        let acl_new = sh_ok(&format!("getfacl -n -p --omit-header {m}/xd/new"));
        assert!(
            acl_new.contains("user:2003:rw-"),
            "inherited default ACL: {acl_new}"
        );

        d.stop();
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt, &["type=ext4", "allow_other"]);
        let v = sh_ok(&format!("getfattr --only-values -n user.color {m}/x.txt"));
        assert_eq!(v, "blue", "remount: user.color");
        let v = sh_ok(&format!("getfattr --only-values -n user.d {m}/xd"));
        assert_eq!(v, "on-dir", "remount: user.d on a directory");
        let acl = sh_ok(&format!("getfacl -n -p --omit-header {m}/acl.txt"));
        assert!(acl.contains("user:2002:r--"), "remount: getfacl {acl}");
        let out = run_as(2002, 2002, &[], "cat", &[&format!("{m}/acl.txt")]);
        assert!(out.ok(), "remount: uid 2002 reads: {}", out.describe());
        let out = run_as(2003, 2003, &[], "cat", &[&format!("{m}/acl.txt")]);
        assert!(
            !out.ok(),
            "remount: uid 2003 must not read: {}",
            out.describe()
        );
        d.stop();
    });
}

/// The flag letters `lsattr -d` shows for `path` (dashes removed).
#[track_caller]
fn lsattr(path: &str) -> String {
    let out = sh_ok(&format!("lsattr -d {}", q(Path::new(path))));
    let flags = out.split_whitespace().next().unwrap_or_default();
    flags.replace('-', "")
}

#[test]
fn ext4_file_attributes_through_lsattr_and_chattr() {
    fuse_test(FILE, "ext4_chattr", LIMIT, |dir| {
        let (img, mnt, d, m) = mount_fresh_ext4(&dir, &["type=ext4", "allow_other"]);
        sh_ok(&format!(
            "cd {} && echo one > log.txt && echo keep > kept.txt && mkdir sealed open && \
             chmod 0777 open && chown 2002:2002 open",
            q(&mnt)
        ));
        // ext4 gives new files "e" (extents); nothing else is set yet.
        assert_eq!(lsattr(&format!("{m}/log.txt")), "e", "fresh file");

        // Append-only: appending works, overwriting and removing do not.
        sh_ok(&format!("chattr +a {m}/log.txt {m}/kept.txt"));
        assert_eq!(lsattr(&format!("{m}/log.txt")), "ae", "after chattr +a");
        sh_ok(&format!("echo two >> {m}/log.txt"));
        let out = sh(&format!("echo three > {m}/log.txt"));
        assert!(
            !out.ok() && out.stderr.contains("Operation not permitted"),
            "overwriting an append-only file: {}",
            out.describe()
        );
        assert!(!sh(&format!("rm -f {m}/log.txt")).ok(), "removing it");
        assert_eq!(read(&mnt.join("log.txt")), b"one\ntwo\n");
        sh_ok(&format!(
            "chattr -a {m}/log.txt && echo three > {m}/log.txt"
        ));
        assert_eq!(read(&mnt.join("log.txt")), b"three\n");

        // Immutable directory: nothing may be created in it until the flag goes.
        sh_ok(&format!("chattr +i {m}/sealed"));
        assert_eq!(
            lsattr(&format!("{m}/sealed")),
            "ie",
            "directory after chattr +i"
        );
        let out = sh(&format!("touch {m}/sealed/new"));
        assert!(
            !out.ok(),
            "creating in an immutable directory: {}",
            out.describe()
        );
        sh_ok(&format!("chattr -i {m}/sealed && touch {m}/sealed/new"));

        // The extended form (FS_IOC_FSGETXATTR): the project id.
        let out = sh_ok(&format!("lsattr -p -d {m}/kept.txt"));
        assert!(out.trim_start().starts_with('0'), "lsattr -p: {out}");

        // As the caller: an owner may set "no dump" on their own file; only root may make
        // a file immutable, and others may not touch the owner's flags.
        let own = format!("{m}/open/mine");
        let out = sh_as(
            2002,
            2002,
            &[],
            &format!("echo x > {own} && chattr +d {own}"),
        );
        assert!(
            out.ok(),
            "uid 2002 sets +d on its own file: {}",
            out.describe()
        );
        assert_eq!(lsattr(&own), "de", "after the owner's chattr +d");
        let out = sh_as(2002, 2002, &[], &format!("chattr +i {own}"));
        assert!(!out.ok(), "uid 2002 sets +i: {}", out.describe());
        let out = sh_as(2003, 2003, &[], &format!("chattr -d {own}"));
        assert!(
            !out.ok(),
            "uid 2003 clears uid 2002's flag: {}",
            out.describe()
        );
        assert_eq!(lsattr(&own), "de", "flags after the refused changes");
        d.stop();
        fsck_clean(Fs::Ext4, &img);

        // The flags are in the image: remounted, and read-only refuses changes.
        let d = start(&img, &mnt, &["type=ext4", "ro"]);
        assert_eq!(lsattr(&format!("{m}/kept.txt")), "ae", "remount: kept.txt");
        assert_eq!(
            lsattr(&format!("{m}/open/mine")),
            "de",
            "remount: open/mine"
        );
        let out = sh(&format!("chattr -a {m}/kept.txt"));
        assert!(
            !out.ok() && out.stderr.contains("Read-only file system"),
            "chattr on a read-only mount: {}",
            out.describe()
        );
        d.stop();
    });
}

/// A python3 process that takes a lock on `path` with `how` (python
/// statement on file object `f`), prints "locked" and holds it until its
/// stdin closes.
fn lock_holder(path: &Path, how: &str) -> Spawned {
    let code = format!(
        "import fcntl, sys\nf = open(sys.argv[1], 'r+')\n{how}\nprint('locked', flush=True)\n\
         sys.stdin.read()\nprint('released', flush=True)"
    );
    Spawned::new(fuse::command(
        fuse::python(),
        &["-c", &code, fuse::path_str(path)],
    ))
}

#[test]
fn ext4_flock_and_posix_locks() {
    fuse_test(FILE, "ext4_locks", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4"]);
        let lf = mnt.join("lockfile");
        fs::write(&lf, b"lock me\n").expect("write lockfile");
        let l = fuse::path_str(&lf).to_string();

        // flock(1): a second process cannot take it while the first holds it.
        let mut holder = lock_holder(&lf, "fcntl.flock(f, fcntl.LOCK_EX)");
        assert_eq!(holder.expect_line(Duration::from_secs(30)), "locked");
        let out = sh(&format!("flock -n -x {l} true"));
        assert_eq!(
            out.code(),
            Some(1),
            "flock -n while held: {}",
            out.describe()
        );
        let out = sh(&format!("flock -n -s {l} true"));
        assert_eq!(
            out.code(),
            Some(1),
            "flock -n -s while held: {}",
            out.describe()
        );
        let (status, _, err) = holder
            .finish(Duration::from_secs(30))
            .expect("holder exits");
        assert!(status.success(), "flock holder: {status} {err}");
        let out = sh(&format!("flock -n -x {l} true"));
        assert!(out.ok(), "flock -n after release: {}", out.describe());

        // POSIX record locks (fcntl/lockf).
        let try_lockf = "import fcntl, sys, errno\nf = open(sys.argv[1], 'r+')\n\
                         try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('OK')\n\
                         except OSError as e:\n    print(errno.errorcode[e.errno])";
        let mut holder = lock_holder(&lf, "fcntl.lockf(f, fcntl.LOCK_EX)");
        assert_eq!(holder.expect_line(Duration::from_secs(30)), "locked");
        let out = py(try_lockf, &[&l]).expect_ok();
        assert!(
            matches!(out.trim(), "EAGAIN" | "EACCES"),
            "lockf LOCK_NB while another process holds it: {out:?}"
        );
        // Record locks on disjoint ranges do not conflict.
        let holder_range = "import fcntl, sys, errno, os\nf = open(sys.argv[1], 'r+')\n\
                            try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 100)\n    print('OK')\n\
                            except OSError as e:\n    print(errno.errorcode[e.errno])";
        // Waits for [0, 10) while the whole-file lock is held.
        let mut ranged = lock_holder(&lf, "fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)");
        let (status, _, err) = holder
            .finish(Duration::from_secs(30))
            .expect("holder exits");
        assert!(status.success(), "lockf holder: {status} {err}");
        // Now the ranged holder gets [0, 10); [100, 101) stays free.
        assert_eq!(ranged.expect_line(Duration::from_secs(30)), "locked");
        let out = py(holder_range, &[&l]).expect_ok();
        assert_eq!(
            out.trim(),
            "OK",
            "lockf of a range another process does not hold"
        );
        let out = py(try_lockf, &[&l]).expect_ok();
        assert!(
            matches!(out.trim(), "EAGAIN" | "EACCES"),
            "whole-file lockf overlapping another process's range lock: {out:?}"
        );
        ranged
            .finish(Duration::from_secs(30))
            .expect("ranged holder exits");
        let out = py(try_lockf, &[&l]).expect_ok();
        assert_eq!(out.trim(), "OK", "lockf after every holder is gone");

        d.stop();
        fsck_clean(Fs::Ext4, &img);
    });
}

fn mmap_pattern(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for i in (0..n).step_by(4096) {
        let s = format!("{i:016}");
        v[i..i + 16].copy_from_slice(s.as_bytes());
    }
    v
}

#[test]
fn ext4_mmap_and_renameat2() {
    fuse_test(FILE, "ext4_mmap", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4"]);
        let m = fuse::path_str(&mnt).to_string();

        // Shared writable mappings, one msync'ed, one only unmapped.
        let mm = "import mmap, os, sys\nn = 1 << 20\n\
                  for p, sync in ((sys.argv[1], True), (sys.argv[2], False)):\n    \
                  fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)\n    os.ftruncate(fd, n)\n    \
                  m = mmap.mmap(fd, n, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n    \
                  for i in range(0, n, 4096):\n        m[i:i + 16] = b'%016d' % i\n    \
                  if sync:\n        m.flush()\n    m.close()\n    os.close(fd)";
        py(
            mm,
            &[&format!("{m}/mmap-synced"), &format!("{m}/mmap-unsynced")],
        )
        .expect_ok();
        let pattern = mmap_pattern(1 << 20);
        assert!(
            read(&mnt.join("mmap-synced")) == pattern,
            "mmap (msync) read back"
        );
        assert!(
            read(&mnt.join("mmap-unsynced")) == pattern,
            "mmap (no msync) read back"
        );

        // renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE.
        fs::write(mnt.join("a"), b"A").expect("write a");
        fs::write(mnt.join("b"), b"B").expect("write b");
        fs::create_dir(mnt.join("dir")).expect("mkdir dir");
        let r2 = "import ctypes, os, sys, errno\n\
                  libc = ctypes.CDLL(None, use_errno=True)\n\
                  nr = {'x86_64': 316, 'aarch64': 276}[os.uname().machine]\n\
                  def r2(a, b, flags):\n    \
                  r = libc.syscall(ctypes.c_long(nr), ctypes.c_long(-100), (m + a).encode(), \
                  ctypes.c_long(-100), (m + b).encode(), ctypes.c_uint(flags))\n    \
                  return 'OK' if r == 0 else errno.errorcode[ctypes.get_errno()]\n\
                  m = sys.argv[1] + '/'\n\
                  print(r2('a', 'b', 1), r2('a', 'c', 1), r2('c', 'b', 2), r2('c', 'nope', 2), \
                  r2('b', 'dir', 2))";
        let out = py(r2, &[&m]).expect_ok();
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["EEXIST", "OK", "OK", "ENOENT", "OK"],
            "renameat2: NOREPLACE onto existing, NOREPLACE to new, EXCHANGE, \
             EXCHANGE with a missing target, EXCHANGE file and directory"
        );
        // a → c (NOREPLACE), c ⇄ b, b ⇄ dir: c = "B", dir = "A" (a file), b a directory.
        assert!(!mnt.join("a").exists(), "NOREPLACE rename: a still there");
        assert_eq!(read(&mnt.join("c")), b"B", "after EXCHANGE c ⇄ b: c");
        assert_eq!(
            read(&mnt.join("dir")),
            b"A",
            "after EXCHANGE b ⇄ dir: dir is the file"
        );
        assert!(
            mnt.join("b").is_dir(),
            "after EXCHANGE b ⇄ dir: b is the directory"
        );

        d.stop();
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt, &["type=ext4"]);
        assert!(
            read(&mnt.join("mmap-synced")) == pattern,
            "remount: mmap (msync)"
        );
        assert!(
            read(&mnt.join("mmap-unsynced")) == pattern,
            "remount: mmap (no msync)"
        );
        assert_eq!(read(&mnt.join("c")), b"B", "remount: c");
        assert_eq!(read(&mnt.join("dir")), b"A", "remount: dir");
        assert!(mnt.join("b").is_dir(), "remount: b");
        d.stop();
    });
}

/// With `default_permissions` the host opens regular files without asking the daemon (it
/// checks permissions itself): reads and writes then name only the file. A file must stay readable and writable through
/// descriptors opened before its name went (removed, or replaced by a rename), also with
/// more such files than the daemon keeps its own descriptors for; `O_TRUNC` must still
/// truncate on the image; and opening must still be refused where the caller may not.
#[test]
fn ext4_open_files_outlive_their_names() {
    fuse_test(FILE, "ext4_open_files", LIMIT, |dir| {
        // default_permissions: the host checks permissions and opens files without asking.
        let opts = ["type=ext4", "allow_other", "default_permissions"];
        let (img, mnt, d, m) = mount_fresh_ext4(&dir, &opts);
        let code = "import os, resource, sys\n\
                    m = sys.argv[1]\nn = 1100\n\
                    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
                    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))\n\
                    os.mkdir(m + '/many')\n\
                    fds = []\n\
                    for i in range(n):\n    \
                        p = m + '/many/f%d' % i\n    \
                        with open(p, 'wb') as f:\n        f.write(b'old %d\\n' % i)\n    \
                        fds.append(os.open(p, os.O_RDWR))\n\
                    for i in range(n):\n    \
                        os.unlink(m + '/many/f%d' % i)\n\
                    for i, fd in enumerate(fds):\n    \
                        assert os.pread(fd, 100, 0) == b'old %d\\n' % i, ('read', i)\n    \
                        os.pwrite(fd, b'new %d\\n' % i, 0)\n\
                    for i, fd in enumerate(fds):\n    \
                        assert os.pread(fd, 100, 0) == b'new %d\\n' % i, ('reread', i)\n    \
                        assert os.fstat(fd).st_nlink == 0, ('nlink', i)\n    \
                        os.close(fd)\n\
                    print(len(os.listdir(m + '/many')))\n\
                    with open(m + '/kept', 'w') as f:\n    f.write('kept')\n\
                    with open(m + '/new', 'w') as f:\n    f.write('replacement')\n\
                    fd = os.open(m + '/kept', os.O_RDONLY)\n\
                    os.rename(m + '/new', m + '/kept')\n\
                    print(os.pread(fd, 100, 0).decode(), open(m + '/kept').read())\n\
                    os.close(fd)\n\
                    with open(m + '/t', 'w') as f:\n    f.write('hello world')\n\
                    with open(m + '/t', 'w') as f:\n    f.write('hi')\n\
                    print(open(m + '/t').read())\n";
        let out = py(code, &[&m]).expect_ok();
        assert_eq!(
            out, "0\nkept replacement\nhi\n",
            "removed files read and written through open descriptors, a file replaced by \
             rename, O_TRUNC"
        );
        // Opening is refused by mode: 2003 may neither read a 0600 file nor write a 0644 one.
        sh_ok(&format!(
            "cd {} && echo s > private && chmod 0600 private && echo p > public",
            q(&mnt)
        ));
        let out = py_as(
            2003,
            2003,
            &[],
            "import sys, errno\nm = sys.argv[1]\n\
             for p, how in (('private', 'r'), ('public', 'a'), ('public', 'r')):\n    \
             try:\n        open(m + '/' + p, how).close()\n        print('OK')\n    \
             except OSError as e:\n        print(errno.errorcode[e.errno])",
            &[&m],
        )
        .expect_ok();
        assert_eq!(
            out, "EACCES\nEACCES\nOK\n",
            "uid 2003 opens a 0600 file to read, a 0644 file to append, and to read"
        );
        d.stop();
        fsck_clean(Fs::Ext4, &img);
        let d = start(&img, &mnt, &["type=ext4"]);
        assert_eq!(read(&mnt.join("kept")), b"replacement", "remount: kept");
        assert_eq!(read(&mnt.join("t")), b"hi", "remount: truncated file");
        assert!(
            names(&mnt.join("many")).is_empty(),
            "remount: many/ is empty"
        );
        d.stop();
    });
}

/// Listings (READDIRPLUS) hand the host each entry's attributes; for nodes it already knows
/// the daemon checks cheaply that a name still leads to the same inode. After renames over
/// existing names, hard links, removals whose inode numbers get reused and size changes,
/// with more files than the daemon keeps descriptors for, every listed entry must show the
/// attributes of the file now behind its name.
#[test]
fn ext4_listings_follow_renames_links_and_reused_inode_numbers() {
    fuse_test(FILE, "ext4_listings", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["type=ext4"]);
        let check = r#"
import os, sys
m = sys.argv[1] + "/many"
os.mkdir(m)
N = 1200  # more files than the daemon keeps kernel descriptors for (1024)
def write(name, size):
    with open(f"{m}/{name}", "wb") as f:
        f.write(b"x" * size)
def listing():
    out = {}
    for e in os.scandir(m):
        st = e.stat(follow_symlinks=False)
        assert st.st_ino == e.inode(), (e.name, st.st_ino, e.inode())
        out[e.name] = (st.st_ino, st.st_size, st.st_nlink)
    return out
def expect(got, want, what):
    bad = {n: (got.get(n), w) for n, w in want.items() if got.get(n) != w}
    extra = set(got) - set(want)
    assert not bad and not extra, (what, list(bad.items())[:5], sorted(extra)[:5])
for i in range(N):
    write(f"f{i}", i + 1)
first = listing()
want = {f"f{i}": (first[f"f{i}"][0], i + 1, 1) for i in range(N)}
expect(first, want, "first listing")
expect(listing(), want, "second listing")
os.replace(f"{m}/f1", f"{m}/f0")
want["f0"] = want.pop("f1")
os.link(f"{m}/f2", f"{m}/h2")
want["f2"] = want["h2"] = (want["f2"][0], 3, 2)
for i in range(3, 11):
    os.unlink(f"{m}/f{i}")
    del want[f"f{i}"]
for k in range(8):
    write(f"n{k}", 5000 + k)
with open(f"{m}/f11", "ab") as f:
    f.write(b"y" * 9987)
want["f11"] = (want["f11"][0], 9999, 1)
after = listing()
for k in range(8):
    want[f"n{k}"] = (after[f"n{k}"][0], 5000 + k, 1)
expect(after, want, "after the changes")
expect(listing(), want, "listed again")
for n, (ino, size, _) in want.items():
    st = os.stat(f"{m}/{n}")
    assert (st.st_ino, st.st_size) == (ino, size), (n, st.st_ino, st.st_size, ino, size)
print(len(want))
"#;
        let out = py(check, &[fuse::path_str(&mnt)]).expect_ok();
        assert_eq!(out.trim(), "1200", "files listed at the end");
        d.stop();
        fsck_clean(Fs::Ext4, &img);
    });
}

// ---------------------------------------------------------------------------------------------
// Other writable filesystems, mounted with type autodetection

fn exercise(fs_: Fs) {
    let id = fs_.id();
    fuse_test(FILE, &format!("{id}_basic"), LIMIT, move |dir| {
        let img = dir.join(format!("{id}.img"));
        make_fs(fs_, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let caps = fs_.write_caps();
        let d = start(&img, &mnt, &[]);
        let m = fuse::path_str(&mnt).to_string();
        let what = |s: &str| format!("{id}: {s}");

        let src = dir.join("src.bin");
        let h = write_random(&src, 11, (3 << 20) + 5);
        sh_ok(&format!("cp {} {m}/file.bin", q(&src)));
        assert_eq!(
            sha(&mnt.join("file.bin")),
            h,
            "{}",
            what("cp in, read back")
        );
        sh_ok(&format!(
            "cd {m} && mkdir -p d/e && rmdir d/e && mv file.bin d/moved.bin"
        ));
        assert!(!mnt.join("d/e").exists(), "{}", what("rmdir"));
        assert_eq!(sha(&mnt.join("d/moved.bin")), h, "{}", what("rename"));
        // 200 files, half removed.
        py(
            "import os, sys\nd = sys.argv[1]\nos.mkdir(d)\n\
             for i in range(200):\n    f = os.open('%s/n%03d' % (d, i), os.O_CREAT | os.O_WRONLY, 0o644)\n    \
             os.write(f, b'%d' % i)\n    os.close(f)\n\
             for i in range(0, 200, 2):\n    os.unlink('%s/n%03d' % (d, i))",
            &[&format!("{m}/set")],
        )
        .expect_ok();
        let expected: BTreeSet<String> = (1..200).step_by(2).map(|i| format!("n{i:03}")).collect();
        assert_eq!(
            names(&mnt.join("set")),
            expected,
            "{}",
            what("create 200, unlink 100")
        );
        assert_eq!(
            read(&mnt.join("set/n199")),
            b"199",
            "{}",
            what("small file")
        );
        let tr = mnt.join("d/moved.bin");
        sh_ok(&format!(
            "cp {m}/d/moved.bin {m}/t.bin && truncate -s 4097 {m}/t.bin"
        ));
        let t_expected = images::random_bytes(11, (3 << 20) + 5)[..4097].to_vec();
        assert_eq!(read(&mnt.join("t.bin")), t_expected, "{}", what("truncate"));
        check_statfs(&mnt, fs_.image_size(), &id);
        if caps.symlinks {
            sh_ok(&format!("cd {m} && ln -s d/moved.bin sym"));
            assert_eq!(sha(&mnt.join("sym")), h, "{}", what("symlink"));
        }
        if caps.hardlinks {
            sh_ok(&format!("cd {m} && ln d/moved.bin hard"));
            assert_eq!(lstat(&tr).nlink(), 2, "{}", what("hard link count"));
        }
        if caps.xattrs {
            sh_ok(&format!("setfattr -n user.k -v v {m}/t.bin"));
            let v = sh_ok(&format!("getfattr --only-values -n user.k {m}/t.bin"));
            assert_eq!(v, "v", "{}", what("xattr"));
        }
        if caps.owner {
            sh_ok(&format!(
                "chown 1001:1002 {m}/t.bin && chmod 0604 {m}/t.bin"
            ));
        }
        d.stop();
        fsck_clean(fs_, &img);

        let d = start(&img, &mnt, &[]);
        assert_eq!(
            sha(&mnt.join("d/moved.bin")),
            h,
            "{}",
            what("remount: content")
        );
        assert_eq!(
            names(&mnt.join("set")),
            expected,
            "{}",
            what("remount: listing")
        );
        assert_eq!(
            read(&mnt.join("t.bin")),
            t_expected,
            "{}",
            what("remount: truncated")
        );
        if caps.symlinks {
            assert_eq!(
                fs::read_link(mnt.join("sym")).expect("readlink"),
                Path::new("d/moved.bin"),
                "{}",
                what("remount: symlink")
            );
        }
        if caps.hardlinks {
            assert_eq!(lstat(&tr).nlink(), 2, "{}", what("remount: link count"));
        }
        if caps.xattrs {
            let v = sh_ok(&format!("getfattr --only-values -n user.k {m}/t.bin"));
            assert_eq!(v, "v", "{}", what("remount: xattr"));
        }
        if caps.owner {
            let md = lstat(&mnt.join("t.bin"));
            assert_eq!(
                (md.uid(), md.gid(), md.mode() & 0o7777),
                (1001, 1002, 0o604),
                "{}",
                what("remount: owner and mode")
            );
        }
        d.stop();
    });
}

#[test]
fn xfs_basic_operations() {
    exercise(Fs::Xfs);
}

#[test]
fn btrfs_basic_operations() {
    exercise(Fs::Btrfs);
}

#[test]
fn vfat_basic_operations() {
    exercise(Fs::Vfat);
}

/// With `default_permissions` the host checks permissions itself and asks the daemon for
/// POSIX ACLs to do so. A filesystem without ACLs (vfat) must not turn that question into a
/// failed open for users other than the owner.
#[test]
fn vfat_other_users_open_files() {
    fuse_test(FILE, "vfat_other_users", LIMIT, |dir| {
        let img = dir.join("vfat.img");
        make_fs(Fs::Vfat, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = start(&img, &mnt, &["allow_other", "default_permissions"]);
        fs::write(mnt.join("shared.txt"), b"for all\n").expect("write shared.txt");
        let path = format!("{}/shared.txt", fuse::path_str(&mnt));
        let out = run_as(2002, 2002, &[], "cat", &[&path]);
        assert!(
            out.ok() && out.stdout == "for all\n",
            "uid 2002 reads a vfat file (mode 0755, owned by root): {}",
            out.describe()
        );
        d.stop();
    });
}

#[test]
fn exfat_basic_operations() {
    exercise(Fs::Exfat);
}

// ---------------------------------------------------------------------------------------------
// Read-only images

/// Writes through a read-only mount fail with EROFS.
#[track_caller]
fn assert_erofs(mnt: &Path, existing_file: &str, what: &str) {
    let got = errnos(
        mnt,
        &[
            "os.open(m + '/new-file', os.O_CREAT | os.O_WRONLY, 0o644)",
            "os.mkdir(m + '/new-dir')",
            &format!("os.unlink(m + '/{existing_file}')"),
            &format!("os.open(m + '/{existing_file}', os.O_WRONLY)"),
            &format!("os.chmod(m + '/{existing_file}', 0o600)"),
        ],
    );
    assert_eq!(
        got, ["EROFS"; 5],
        "{what}: create, mkdir, unlink, open for writing, chmod on a read-only mount"
    );
}

fn read_only_image(fs_: Fs, opts: &'static [&'static str]) {
    let id = fs_.id();
    fuse_test(FILE, &format!("ro_{id}"), LIMIT, move |dir| {
        let src = dir.join("src");
        let caps = fs_.source_caps();
        let spec = caps.tree(21, 8 << 20);
        images::populate_host(&src, &images::tree_ops(&spec)).expect("populate source tree");
        let img = dir.join(format!("{id}.img"));
        images::build(fs_, Some(&src), &img, &dir).unwrap_or_else(|e| panic!("build {id}: {e}"));
        let before = images::fingerprint(&img).expect("fingerprint");
        let mnt = subdir(&dir, "mnt", 0o755, None);

        let d = start(&img, &mnt, opts);
        let expected = images::manifest_host(&src).expect("manifest of the source");
        let actual = images::manifest_host(&mnt).expect("manifest through the mount");
        images::assert_same(
            &format!("{id} through lklfuse"),
            &expected,
            &actual,
            &caps,
            images::FS_EXTRAS,
        );
        assert_erofs(&mnt, "docs/small.txt", &id);
        d.stop();
        let after = images::fingerprint(&img).expect("fingerprint");
        assert_eq!(
            after, before,
            "{id}: the image changed (size, mtime, sha256)"
        );
    });
}

/// squashfs, type autodetected, no `ro` given: read-only by nature.
#[test]
fn read_only_squashfs_autodetected() {
    read_only_image(Fs::Squashfs("xz"), &[]);
}

/// ISO 9660 (Rock Ridge), type autodetected, `-o ro`.
#[test]
fn read_only_iso9660_autodetected() {
    read_only_image(Fs::Iso9660, &["ro"]);
}

/// A writable filesystem mounted `-o ro` is not changed by a byte.
#[test]
fn read_only_ext4_mount_leaves_image_unchanged() {
    read_only_image(Fs::Ext4, &["ro", "type=ext4"]);
}

/// The mount shows the filesystem's root directory (its mode, its
/// entries), not the directory it is mounted on.
#[test]
fn mount_root_is_the_filesystem_root() {
    fuse_test(FILE, "root", LIMIT, |dir| {
        let img = dir.join("ext4.img");
        make_fs(Fs::Ext4, &img, &dir);
        let mnt = subdir(&dir, "mnt", 0o700, None);
        let d = start(&img, &mnt, &["type=ext4"]);
        let md = fs::metadata(&mnt).expect("stat mount root");
        // mkfs.ext4 makes a 0755 root with lost+found: the mount shows that,
        // not the 0700 directory below it.
        assert_eq!(
            md.permissions().mode() & 0o7777,
            0o755,
            "mode of the mounted root"
        );
        assert!(mnt.join("lost+found").is_dir(), "lost+found at the root");
        d.stop();
    });
}
