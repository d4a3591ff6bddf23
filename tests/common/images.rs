//! Test images made at test time with Debian's own tools, and the means to
//! compare what a filesystem holds, seen through our kernel or on the host,
//! with what was put in.
//!
//! ```text
//! tree_ops(spec) ──► populate_host(dir)   ──► build(fs, dir, image)  (mkfs.*, mksquashfs, ...)
//!                └─► populate_kernel(path)    (files written through our kernel)
//! manifest_host(dir) / manifest_kernel(path) ──► assert_same(expected, actual, caps)
//! ```
//!
//! A manifest records, for every path below a root: the type, the size and
//! SHA-256 of regular files, symlink targets, permission bits, owner, the
//! inode number and link count (hard links), the modification time and the
//! `user.*` extended attributes. [`Caps`] says which of these a filesystem
//! (and the tool that made or reads it) keeps, so that only those are compared.
//!
//! Host-side references (loop mounts, FUSE mounts) need root; CI runs as root.
//! Where a reference needs root and we are not, or where Debian 12 has no tool
//! at all, the functions say so in an `Err`/[`Reference::Unavailable`] text
//! that the tests print: nothing is skipped silently.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lklfuse::lkl::abi::{self, SetTime, Timestamp};
use lklfuse::lkl::{self, bindings as b, sys, Errno};

// ---------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4); small and dependency-free.

const K256: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Incremental SHA-256.
#[derive(Clone)]
pub struct Sha256 {
    h: [u32; 8],
    buf: [u8; 64],
    buf_len: usize,
    total: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Sha256 {
        Sha256 {
            h: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            buf: [0; 64],
            buf_len: 0,
            total: 0,
        }
    }

    fn block(h: &mut [u32; 8], block: &[u8]) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K256[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 64 {
                return;
            }
            let block = self.buf;
            Self::block(&mut self.h, &block);
            self.buf_len = 0;
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            Self::block(&mut self.h, block);
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        let mut pad = vec![0x80u8];
        let len_after = (self.buf_len + 1) % 64;
        let zeros = if len_after <= 56 {
            56 - len_after
        } else {
            120 - len_after
        };
        pad.extend(std::iter::repeat_n(0u8, zeros));
        pad.extend_from_slice(&bits.to_be_bytes());
        let total = self.total;
        self.update(&pad);
        self.total = total;
        debug_assert_eq!(self.buf_len, 0);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Deterministic pseudo-random content

/// xorshift64*: reproducible "random" file content from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: every seed gets its own stream (a plain `| 1` made seeds
        // 2k and 2k+1 identical), and the state is never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

// ---------------------------------------------------------------------------------------------
// Tree descriptions: one list of operations, executed on the host or through our kernel

/// What a test tree contains.
#[derive(Clone, Copy, Debug)]
pub struct TreeSpec {
    pub symlinks: bool,
    pub hardlinks: bool,
    pub xattrs: bool,
    /// Set permission bits explicitly (chmod). Off where chmod would fail (FAT).
    pub modes: bool,
    pub unicode: bool,
    /// Date one file after 2038 (else it gets an ordinary time).
    pub y2038: bool,
    /// Size of the sparse file (data at the start, the middle and the end).
    pub sparse_size: u64,
    /// Varies all content.
    pub seed: u64,
}

/// One step of building a tree. Paths are relative to the tree's root.
#[derive(Clone, Debug)]
pub enum Op {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Sparse {
        path: String,
        size: u64,
        chunks: Vec<(u64, Vec<u8>)>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        existing: String,
    },
    Xattr {
        path: String,
        name: String,
        value: Vec<u8>,
    },
    /// Sets atime and mtime (whole, even seconds: FAT keeps 2-second mtimes).
    Mtime {
        path: String,
        sec: i64,
    },
    Append {
        path: String,
        data: Vec<u8>,
    },
    Rename {
        from: String,
        to: String,
    },
    Remove {
        path: String,
    },
}

/// An even number of seconds in 2020, different per file.
fn mtime_for(i: usize) -> i64 {
    1_600_000_000 + 2 * 3_601 * i as i64
}

/// The standard test tree: small and multi-MiB random files, an empty file,
/// nested directories, a directory with many entries, permission bits,
/// symlinks, hard links, xattrs, a large sparse file and a time past 2038.
pub fn tree_ops(spec: &TreeSpec) -> Vec<Op> {
    let s = spec.seed;
    let mut ops = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let dir = |ops: &mut Vec<Op>, path: &str, mode: u32| {
        ops.push(Op::Dir {
            path: path.into(),
            mode,
        })
    };
    let file = |ops: &mut Vec<Op>, files: &mut Vec<String>, path: &str, data: Vec<u8>, mode| {
        files.push(path.to_string());
        ops.push(Op::File {
            path: path.into(),
            data,
            mode,
        });
    };

    dir(&mut ops, "docs", 0o755);
    file(
        &mut ops,
        &mut files,
        "docs/small.txt",
        format!("hello, lklfuse (seed {s})\n").into_bytes(),
        0o644,
    );
    file(&mut ops, &mut files, "docs/empty", Vec::new(), 0o644);
    file(
        &mut ops,
        &mut files,
        "docs/random-4097.bin",
        random_bytes(s + 1, 4097),
        0o644,
    );
    file(
        &mut ops,
        &mut files,
        "big-3MiB.bin",
        random_bytes(s + 2, 3 * 1024 * 1024 + 123),
        0o644,
    );
    dir(&mut ops, "a", 0o755);
    dir(&mut ops, "a/b", 0o750);
    dir(&mut ops, "a/b/c", 0o700);
    file(
        &mut ops,
        &mut files,
        "a/b/c/deep.bin",
        random_bytes(s + 3, 100_000),
        0o600,
    );
    dir(&mut ops, "many", 0o755);
    let mut rng = Rng::new(s + 4);
    for i in 0..60 {
        let len = rng.below(3000) as usize;
        file(
            &mut ops,
            &mut files,
            &format!("many/file-{i:03}"),
            random_bytes(s + 100 + i, len),
            0o644,
        );
    }
    dir(&mut ops, "modes", 0o755);
    file(
        &mut ops,
        &mut files,
        "modes/exec.sh",
        b"#!/bin/sh\necho hi\n".to_vec(),
        0o755,
    );
    file(
        &mut ops,
        &mut files,
        "modes/private",
        b"p\n".to_vec(),
        0o600,
    );
    file(
        &mut ops,
        &mut files,
        "modes/readonly",
        b"r\n".to_vec(),
        0o444,
    );
    file(&mut ops, &mut files, "modes/group", b"g\n".to_vec(), 0o640);
    dir(&mut ops, "modes/dir-0711", 0o711);
    file(
        &mut ops,
        &mut files,
        "docs/after-2038.txt",
        b"y2038\n".to_vec(),
        0o644,
    );
    if spec.unicode {
        file(
            &mut ops,
            &mut files,
            "docs/ünïcødé-名前.txt",
            "unicode ✓\n".as_bytes().to_vec(),
            0o644,
        );
    }
    let size = spec.sparse_size;
    if size > 0 {
        files.push("sparse.img".into());
        ops.push(Op::Sparse {
            path: "sparse.img".into(),
            size,
            chunks: vec![
                (0, random_bytes(s + 5, 65536)),
                (size / 2, random_bytes(s + 6, 65536)),
                (size - 4096, random_bytes(s + 7, 4096)),
            ],
            mode: 0o644,
        });
    }
    dir(&mut ops, "links", 0o755);
    if spec.symlinks {
        for (path, target) in [
            ("links/to-small", "../docs/small.txt".to_string()),
            ("links/to-dir", "../a/b".to_string()),
            ("links/dangling", "/nonexistent/target".to_string()),
            ("links/long", "x/".repeat(100) + "end"),
        ] {
            ops.push(Op::Symlink {
                path: path.into(),
                target,
            });
        }
    }
    if spec.hardlinks {
        for (path, existing) in [
            ("links/hard-big.bin", "big-3MiB.bin"),
            ("a/hard-small.txt", "docs/small.txt"),
        ] {
            ops.push(Op::Hardlink {
                path: path.into(),
                existing: existing.into(),
            });
        }
    }
    if spec.xattrs {
        for (path, name, value) in [
            ("docs/small.txt", "user.comment", b"hello xattr".to_vec()),
            (
                "docs/random-4097.bin",
                "user.blob",
                random_bytes(s + 8, 200),
            ),
            ("a", "user.on-a-dir", b"directory attribute".to_vec()),
            ("docs/empty", "user.empty-value", Vec::new()),
        ] {
            ops.push(Op::Xattr {
                path: path.into(),
                name: name.into(),
                value,
            });
        }
    }
    for (i, path) in files.iter().enumerate() {
        let sec = if path == "docs/after-2038.txt" && spec.y2038 {
            2_200_000_000 // 2039-09-18
        } else {
            mtime_for(i)
        };
        ops.push(Op::Mtime {
            path: path.clone(),
            sec,
        });
    }
    ops
}

/// Changes made to an existing tree: append (and re-date), rename, remove.
pub fn mutation_ops(seed: u64) -> Vec<Op> {
    vec![
        Op::Append {
            path: "docs/random-4097.bin".into(),
            data: random_bytes(seed + 9, 10_000),
        },
        Op::Mtime {
            path: "docs/random-4097.bin".into(),
            sec: 1_700_000_000,
        },
        Op::Rename {
            from: "many/file-001".into(),
            to: "many/renamed-001".into(),
        },
        Op::Remove {
            path: "many/file-002".into(),
        },
    ]
}

fn join(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

fn path_c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths")
}

pub fn cstring(s: &str) -> CString {
    CString::new(s).expect("no NUL in test paths")
}

/// Builds the tree under `root` on the host (which must keep xattrs: ext4, xfs, tmpfs...).
pub fn populate_host(root: &Path, ops: &[Op]) -> io::Result<()> {
    fs::create_dir_all(root)?;
    for op in ops {
        match op {
            Op::Dir { path, mode } => {
                let p = join(root, path);
                fs::create_dir_all(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
            }
            Op::File { path, data, mode } => {
                let p = join(root, path);
                fs::write(&p, data)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
            }
            Op::Sparse {
                path,
                size,
                chunks,
                mode,
            } => {
                let p = join(root, path);
                let f = fs::File::create(&p)?;
                f.set_len(*size)?;
                for (offset, data) in chunks {
                    f.write_all_at(data, *offset)?;
                }
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
            }
            Op::Symlink { path, target } => {
                std::os::unix::fs::symlink(target, join(root, path))?;
            }
            Op::Hardlink { path, existing } => {
                fs::hard_link(join(root, existing), join(root, path))?;
            }
            Op::Xattr { path, name, value } => {
                let p = path_c(&join(root, path));
                let n = cstring(name);
                // SAFETY: both strings are NUL-terminated; value is readable for its length.
                let r = unsafe {
                    libc::lsetxattr(
                        p.as_ptr(),
                        n.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        0,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Op::Mtime { path, sec } => {
                let p = path_c(&join(root, path));
                let ts = libc::timespec {
                    tv_sec: *sec,
                    tv_nsec: 0,
                };
                let times = [ts, ts];
                // SAFETY: `p` is NUL-terminated; `times` is an array of two timespecs.
                let r = unsafe {
                    libc::utimensat(
                        libc::AT_FDCWD,
                        p.as_ptr(),
                        times.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Op::Append { path, data } => {
                let mut f = fs::OpenOptions::new().append(true).open(join(root, path))?;
                f.write_all(data)?;
            }
            Op::Rename { from, to } => fs::rename(join(root, from), join(root, to))?,
            Op::Remove { path } => fs::remove_file(join(root, path))?,
        }
    }
    Ok(())
}

fn kernel_write_all(fd: &lkl::KernelFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        let n = sys::write(fd, data)?;
        data = &data[n..];
    }
    Ok(())
}

fn kernel_pwrite_all(fd: &lkl::KernelFd, mut data: &[u8], mut offset: u64) -> Result<(), Errno> {
    while !data.is_empty() {
        let n = sys::pwrite64(fd, data, offset as i64)?;
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Builds the tree under `root` (a kernel path) through our kernel's system calls.
/// `chmod` only when `spec.modes`.
pub fn populate_kernel(root: &str, ops: &[Op], spec: &TreeSpec) -> Result<(), String> {
    let k = |rel: &str| cstring(&format!("{root}/{rel}"));
    let ctx = |what: &str, rel: &str| {
        let what = what.to_string();
        let rel = rel.to_string();
        move |e: Errno| format!("{what} {root}/{rel} through the kernel: {e}")
    };
    match sys::mkdirat(lkl::CWD, &cstring(root), 0o755) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("mkdir {root}: {e}")),
    }
    let chmod = |rel: &str, mode: u32| -> Result<(), String> {
        if spec.modes {
            sys::fchmodat(lkl::CWD, &k(rel), mode).map_err(ctx("chmod", rel))?;
        }
        Ok(())
    };
    let create = (b::O_CREAT | b::O_WRONLY | b::O_TRUNC) as i32;
    for op in ops {
        match op {
            Op::Dir { path, mode } => {
                sys::mkdirat(lkl::CWD, &k(path), 0o755).map_err(ctx("mkdir", path))?;
                chmod(path, *mode)?;
            }
            Op::File { path, data, mode } => {
                let fd =
                    sys::openat(lkl::CWD, &k(path), create, 0o644).map_err(ctx("create", path))?;
                kernel_write_all(&fd, data).map_err(ctx("write", path))?;
                sys::close(fd).map_err(ctx("close", path))?;
                chmod(path, *mode)?;
            }
            Op::Sparse {
                path,
                size,
                chunks,
                mode,
            } => {
                let fd =
                    sys::openat(lkl::CWD, &k(path), create, 0o644).map_err(ctx("create", path))?;
                sys::ftruncate(&fd, *size as i64).map_err(ctx("truncate", path))?;
                for (offset, data) in chunks {
                    kernel_pwrite_all(&fd, data, *offset).map_err(ctx("pwrite", path))?;
                }
                sys::close(fd).map_err(ctx("close", path))?;
                chmod(path, *mode)?;
            }
            Op::Symlink { path, target } => {
                sys::symlinkat(&cstring(target), lkl::CWD, &k(path))
                    .map_err(ctx("symlink", path))?;
            }
            Op::Hardlink { path, existing } => {
                sys::linkat(lkl::CWD, &k(existing), lkl::CWD, &k(path), 0)
                    .map_err(ctx("link", path))?;
            }
            Op::Xattr { path, name, value } => {
                sys::lsetxattr(&k(path), &cstring(name), value, 0)
                    .map_err(ctx("setxattr", path))?;
            }
            Op::Mtime { path, sec } => {
                let t = SetTime::At(Timestamp { sec: *sec, nsec: 0 });
                let times = abi::utimens_to_kernel(t, t);
                sys::utimensat(
                    lkl::CWD,
                    Some(&k(path)),
                    Some(&times),
                    b::AT_SYMLINK_NOFOLLOW as i32,
                )
                .map_err(ctx("utimensat", path))?;
            }
            Op::Append { path, data } => {
                let fd = sys::openat(lkl::CWD, &k(path), (b::O_WRONLY | b::O_APPEND) as i32, 0)
                    .map_err(ctx("open", path))?;
                kernel_write_all(&fd, data).map_err(ctx("append", path))?;
                sys::close(fd).map_err(ctx("close", path))?;
            }
            Op::Rename { from, to } => {
                sys::renameat2(lkl::CWD, &k(from), lkl::CWD, &k(to), 0)
                    .map_err(ctx("rename", from))?;
            }
            Op::Remove { path } => {
                sys::unlinkat(lkl::CWD, &k(path), 0).map_err(ctx("unlink", path))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Manifests

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, sha256: [u8; 32] },
    Dir,
    Symlink(Vec<u8>),
    Other(u32),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub nlink: u64,
    pub mtime: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Relative path → entry; the root itself is not included.
pub type Manifest = BTreeMap<String, Entry>;

fn split_xattr_names(buf: &[u8]) -> Vec<String> {
    buf.split(|&c| c == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with("user."))
        .collect()
}

fn host_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let pc = path_c(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: `pc` is NUL-terminated; `buf` is writable for its length.
    let n = unsafe { libc::llistxattr(pc.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in split_xattr_names(&buf[..n as usize]) {
        let nc = cstring(&name);
        let mut val = vec![0u8; 65536];
        // SAFETY: as above.
        let n = unsafe {
            libc::lgetxattr(pc.as_ptr(), nc.as_ptr(), val.as_mut_ptr().cast(), val.len())
        };
        if n >= 0 {
            val.truncate(n as usize);
            out.insert(name, val);
        }
    }
    out
}

pub fn sha256_host_file(p: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((total, h.finish()));
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
}

/// Everything below `root` on the host.
pub fn manifest_host(root: &Path) -> Result<Manifest, String> {
    fn walk(root: &Path, rel: &str, m: &mut Manifest) -> Result<(), String> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| format!("read_dir {}: {e}", dir.display()))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
        names.sort();
        for name in names {
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let p = root.join(&child);
            let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let ft = md.file_type();
            let kind = if ft.is_file() {
                let (size, sha256) =
                    sha256_host_file(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
                if size != md.len() {
                    return Err(format!(
                        "{}: read {size} bytes, size {}",
                        p.display(),
                        md.len()
                    ));
                }
                Kind::File { size, sha256 }
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                Kind::Symlink(t.as_os_str().as_bytes().to_vec())
            } else {
                Kind::Other(md.mode() & libc::S_IFMT)
            };
            let is_dir = kind == Kind::Dir;
            m.insert(
                child.clone(),
                Entry {
                    kind,
                    perm: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    ino: md.ino(),
                    nlink: md.nlink(),
                    mtime: md.mtime(),
                    xattrs: host_xattrs(&p),
                },
            );
            if is_dir {
                walk(root, &child, m)?;
            }
        }
        Ok(())
    }
    let mut m = BTreeMap::new();
    walk(root, "", &mut m)?;
    Ok(m)
}

/// Names in a kernel directory, without `.` and `..`.
pub fn kernel_list_dir(path: &str) -> Result<Vec<String>, String> {
    let fd = sys::openat(
        lkl::CWD,
        &cstring(path),
        (b::O_RDONLY | b::O_DIRECTORY) as i32,
        0,
    )
    .map_err(|e| format!("open dir {path} through the kernel: {e}"))?;
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32768];
    loop {
        let n = sys::getdents64(&fd, &mut buf).map_err(|e| format!("getdents {path}: {e}"))?;
        if n == 0 {
            break;
        }
        for entry in abi::dirents(&buf[..n]) {
            let entry = entry.map_err(|e| format!("getdents {path}: bad record: {e}"))?;
            let name = entry.name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Size and SHA-256 of a file read through the kernel.
pub fn kernel_sha256(path: &str) -> Result<(u64, [u8; 32]), String> {
    let fd = sys::openat(lkl::CWD, &cstring(path), b::O_RDONLY as i32, 0)
        .map_err(|e| format!("open {path} through the kernel: {e}"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = sys::read(&fd, &mut buf).map_err(|e| format!("read {path}: {e}"))?;
        if n == 0 {
            return Ok((total, h.finish()));
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
}

fn kernel_xattrs(path: &CStr) -> Result<BTreeMap<String, Vec<u8>>, String> {
    // Ask for the size first, as real programs do: a large buffer makes the
    // kernel allocate as much, contiguously (no vmalloc without an MMU).
    let size = match sys::llistxattr(path, &mut []) {
        Ok(n) => n,
        // hfsplus (6.12) answers ENODATA for an inode without attributes
        // once its attributes tree exists, where others answer 0.
        Err(Errno::EOPNOTSUPP | Errno::ENODATA) => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("listxattr {path:?} (size): {e}")),
    };
    let mut buf = vec![0u8; size];
    let n = sys::llistxattr(path, &mut buf).map_err(|e| format!("listxattr {path:?}: {e}"))?;
    let mut out = BTreeMap::new();
    for name in split_xattr_names(&buf[..n]) {
        let name_c = cstring(&name);
        let size = sys::lgetxattr(path, &name_c, &mut [])
            .map_err(|e| format!("getxattr {path:?} {name} (size): {e}"))?;
        let mut val = vec![0u8; size];
        let n = sys::lgetxattr(path, &name_c, &mut val)
            .map_err(|e| format!("getxattr {path:?} {name}: {e}"))?;
        val.truncate(n);
        out.insert(name, val);
    }
    Ok(out)
}

/// Everything below `root` (a kernel path), read through our kernel.
pub fn manifest_kernel(root: &str) -> Result<Manifest, String> {
    fn walk(root: &str, rel: &str, m: &mut Manifest) -> Result<(), String> {
        let dir = if rel.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{rel}")
        };
        for name in kernel_list_dir(&dir)? {
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let full = format!("{root}/{child}");
            let fc = cstring(&full);
            let st = sys::statx(
                lkl::CWD,
                &fc,
                b::AT_SYMLINK_NOFOLLOW as i32,
                b::STATX_BASIC_STATS,
            )
            .map_err(|e| format!("statx {full}: {e}"))?;
            let mode = u32::from(st.mode);
            let kind = match mode & b::S_IFMT {
                b::S_IFREG => {
                    let (size, sha256) = kernel_sha256(&full)?;
                    if size != st.size {
                        return Err(format!("{full}: read {size} bytes, size {}", st.size));
                    }
                    Kind::File { size, sha256 }
                }
                b::S_IFDIR => Kind::Dir,
                b::S_IFLNK => {
                    let mut buf = vec![0u8; 4096];
                    let n = sys::readlinkat(lkl::CWD, &fc, &mut buf)
                        .map_err(|e| format!("readlink {full}: {e}"))?;
                    buf.truncate(n);
                    Kind::Symlink(buf)
                }
                other => Kind::Other(other),
            };
            let is_dir = kind == Kind::Dir;
            m.insert(
                child.clone(),
                Entry {
                    kind,
                    perm: mode & 0o7777,
                    uid: st.uid,
                    gid: st.gid,
                    ino: st.ino,
                    nlink: u64::from(st.nlink),
                    mtime: st.mtime.sec,
                    xattrs: kernel_xattrs(&fc)?,
                },
            );
            if is_dir {
                walk(root, &child, m)?;
            }
        }
        Ok(())
    }
    let mut m = BTreeMap::new();
    walk(root, "", &mut m)?;
    Ok(m)
}

/// What a filesystem (with the tool that made or reads it) keeps, hence what
/// [`compare`] looks at. Names, types, sizes and content are always compared.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Symlinks (their targets are compared only when set).
    pub symlinks: bool,
    /// Hard links share one inode (same number, link count).
    pub hardlinks: bool,
    /// `user.*` extended attributes.
    pub xattrs: bool,
    /// Permission bits.
    pub modes: bool,
    /// uid and gid.
    pub owner: bool,
    /// Modification time of regular files (whole seconds).
    pub mtime: bool,
    /// Non-ASCII names.
    pub unicode: bool,
    /// Times after 2038 (64-bit or unsigned 32-bit seconds).
    pub y2038: bool,
}

impl Caps {
    pub const ALL: Caps = Caps {
        symlinks: true,
        hardlinks: true,
        xattrs: true,
        modes: true,
        owner: true,
        mtime: true,
        unicode: true,
        y2038: true,
    };

    /// What both keep.
    pub fn and(&self, other: &Caps) -> Caps {
        Caps {
            symlinks: self.symlinks && other.symlinks,
            hardlinks: self.hardlinks && other.hardlinks,
            xattrs: self.xattrs && other.xattrs,
            modes: self.modes && other.modes,
            owner: self.owner && other.owner,
            mtime: self.mtime && other.mtime,
            unicode: self.unicode && other.unicode,
            y2038: self.y2038 && other.y2038,
        }
    }

    /// The tree a filesystem with these capabilities can hold.
    pub fn tree(&self, seed: u64, sparse_size: u64) -> TreeSpec {
        TreeSpec {
            symlinks: self.symlinks,
            hardlinks: self.hardlinks,
            xattrs: self.xattrs,
            modes: self.modes,
            unicode: self.unicode,
            y2038: self.y2038,
            sparse_size,
            seed,
        }
    }
}

/// The differences between two manifests, as readable lines. `ignore` are
/// names that `actual` may have in addition (lost+found...), at any depth.
pub fn compare(
    expected: &Manifest,
    actual: &Manifest,
    caps: &Caps,
    ignore: &[&str],
) -> Vec<String> {
    let mut diffs = Vec::new();
    let ignored = |path: &str| {
        path.split('/')
            .next()
            .is_some_and(|top| ignore.contains(&top))
    };
    for (path, e) in expected {
        let Some(a) = actual.get(path) else {
            diffs.push(format!("{path}: missing"));
            continue;
        };
        match (&e.kind, &a.kind) {
            (
                Kind::File {
                    size: s1,
                    sha256: h1,
                },
                Kind::File {
                    size: s2,
                    sha256: h2,
                },
            ) => {
                if s1 != s2 {
                    diffs.push(format!("{path}: size {s2}, expected {s1}"));
                } else if h1 != h2 {
                    diffs.push(format!("{path}: sha256 {}, expected {}", hex(h2), hex(h1)));
                }
            }
            (Kind::Symlink(t1), Kind::Symlink(t2)) => {
                if caps.symlinks && t1 != t2 {
                    diffs.push(format!(
                        "{path}: symlink to {:?}, expected {:?}",
                        String::from_utf8_lossy(t2),
                        String::from_utf8_lossy(t1)
                    ));
                }
            }
            (k1, k2) if k1 == k2 => {}
            (k1, k2) => {
                let short = |k: &Kind| match k {
                    Kind::File { .. } => "file".to_string(),
                    Kind::Dir => "directory".to_string(),
                    Kind::Symlink(_) => "symlink".to_string(),
                    Kind::Other(m) => format!("type {m:o}"),
                };
                diffs.push(format!("{path}: a {}, expected a {}", short(k2), short(k1)));
                continue;
            }
        }
        let is_link = matches!(e.kind, Kind::Symlink(_));
        if caps.modes && !is_link && e.perm != a.perm {
            diffs.push(format!("{path}: mode {:o}, expected {:o}", a.perm, e.perm));
        }
        if caps.owner && (e.uid, e.gid) != (a.uid, a.gid) {
            diffs.push(format!(
                "{path}: owner {}:{}, expected {}:{}",
                a.uid, a.gid, e.uid, e.gid
            ));
        }
        if caps.mtime && matches!(e.kind, Kind::File { .. }) && e.mtime != a.mtime {
            diffs.push(format!("{path}: mtime {}, expected {}", a.mtime, e.mtime));
        }
        if caps.xattrs && e.xattrs != a.xattrs {
            diffs.push(format!(
                "{path}: xattrs {:?}, expected {:?}",
                a.xattrs.keys().collect::<Vec<_>>(),
                e.xattrs.keys().collect::<Vec<_>>()
            ));
        }
    }
    for path in actual.keys() {
        if !expected.contains_key(path) && !ignored(path) {
            diffs.push(format!("{path}: unexpected entry"));
        }
    }
    if caps.hardlinks {
        // Same inode on one side <=> same inode on the other, with equal link counts.
        let mut map: HashMap<u64, u64> = HashMap::new();
        let mut back: HashMap<u64, u64> = HashMap::new();
        for (path, e) in expected {
            let Some(a) = actual.get(path) else { continue };
            if !matches!(e.kind, Kind::File { .. }) {
                continue;
            }
            if *map.entry(e.ino).or_insert(a.ino) != a.ino
                || *back.entry(a.ino).or_insert(e.ino) != e.ino
            {
                diffs.push(format!(
                    "{path}: hard link structure differs (inode {})",
                    a.ino
                ));
            }
            if e.nlink != a.nlink {
                diffs.push(format!("{path}: {} links, expected {}", a.nlink, e.nlink));
            }
        }
    }
    diffs
}

/// Panics with every difference listed.
#[track_caller]
pub fn assert_same(
    what: &str,
    expected: &Manifest,
    actual: &Manifest,
    caps: &Caps,
    ignore: &[&str],
) {
    let diffs = compare(expected, actual, caps, ignore);
    assert!(
        diffs.is_empty(),
        "{what}: {} difference(s) in {} expected entries:\n  {}",
        diffs.len(),
        expected.len(),
        diffs.join("\n  ")
    );
    assert!(!expected.is_empty(), "{what}: nothing was compared");
}

/// Names at the top of a filesystem that are not part of the test tree.
pub const FS_EXTRAS: &[&str] = &["lost+found", "written"];

// ---------------------------------------------------------------------------------------------
// Host commands

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .chain(["/sbin".into(), "/usr/sbin".into()])
                .any(|d| d.join(name).is_file())
        })
        .unwrap_or(false)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// Runs a command, returning its exit code and output (stdout then stderr).
pub fn run_status(cmd: &mut Command) -> Result<(i32, String), String> {
    cmd.stdin(Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e} (run contrib/deps.sh)", describe(cmd)))?;
    Ok((out.status.code().unwrap_or(-1), output_text(&out)))
}

/// Runs a command that must succeed; its output, or an error with all of it.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let what = describe(cmd);
    let (code, text) = run_status(cmd)?;
    if code == 0 {
        Ok(text)
    } else {
        Err(format!("`{what}` failed with exit code {code}:\n{text}"))
    }
}

pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A fresh (sparse) image file of `size` bytes.
pub fn blank_image(img: &Path, size: u64) -> Result<(), String> {
    let f = fs::File::create(img).map_err(|e| format!("create {}: {e}", img.display()))?;
    f.set_len(size)
        .map_err(|e| format!("truncate {}: {e}", img.display()))
}

// ---------------------------------------------------------------------------------------------
// Host mounts (root only): the host kernel's drivers and FUSE drivers as references

/// A host mount, unmounted (and its loop device freed) on drop.
pub struct HostMount {
    pub dir: PathBuf,
    loopdev: Option<String>,
}

impl HostMount {
    /// `mount -t fstype -o loop,<opts> img dir`.
    pub fn kernel(img: &Path, dir: &Path, fstype: &str, opts: &str) -> Result<HostMount, String> {
        need_root("a host loop mount")?;
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let o = if opts.is_empty() {
            "loop".to_string()
        } else {
            format!("loop,{opts}")
        };
        run(&mut cmd("mount", &["-t", fstype, "-o", &o, p(img), p(dir)]))?;
        Ok(HostMount {
            dir: dir.to_path_buf(),
            loopdev: None,
        })
    }

    /// exFAT through exfat-fuse on a loop device (it refuses regular files as root).
    pub fn exfat_fuse(img: &Path, dir: &Path, read_only: bool) -> Result<HostMount, String> {
        need_root("an exfat-fuse mount of a loop device")?;
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut args = vec!["-f", "--show"];
        if read_only {
            args.push("-r");
        }
        args.push(p(img));
        let dev = run(&mut cmd("losetup", &args))?.trim().to_string();
        let mut mount_args = vec![dev.as_str(), p(dir)];
        if read_only {
            mount_args.extend(["-o", "ro"]);
        }
        if let Err(e) = run(&mut cmd("mount.exfat-fuse", &mount_args)) {
            let _ = run(&mut cmd("losetup", &["-d", &dev]));
            return Err(e);
        }
        Ok(HostMount {
            dir: dir.to_path_buf(),
            loopdev: Some(dev),
        })
    }

    /// NTFS through ntfs-3g (FUSE).
    pub fn ntfs_3g(img: &Path, dir: &Path, read_only: bool) -> Result<HostMount, String> {
        need_root("an ntfs-3g mount")?;
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let opts = if read_only { "ro" } else { "rw" };
        run(&mut cmd("ntfs-3g", &["-o", opts, p(img), p(dir)]))?;
        Ok(HostMount {
            dir: dir.to_path_buf(),
            loopdev: None,
        })
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = Command::new("sync").status();
        for attempt in 0..50 {
            match run(&mut cmd("umount", &[p(&self.dir)])) {
                Ok(_) => break,
                Err(e) if attempt == 49 => eprintln!("warning: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        if let Some(dev) = &self.loopdev {
            // FUSE daemons let go of the device a moment after umount returns.
            for attempt in 0..50 {
                match run(&mut cmd("losetup", &["-d", dev])) {
                    Ok(_) => break,
                    Err(e) if attempt == 49 => eprintln!("warning: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }
}

fn need_root(what: &str) -> Result<(), String> {
    if is_root() {
        Ok(())
    } else {
        Err(format!("{what} needs root (CI runs as root)"))
    }
}

/// Unmounts (lazily) whatever a previous, killed run left mounted below `dir`.
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = run(&mut cmd("umount", &["-l", m]));
    }
}

/// A fresh working directory for one test file, below cargo's target/tmp.
/// Images stay there after the run for inspection; the next run removes them.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lklfuse-{name}"));
    unmount_below(&dir);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    // Readable by a child test process running as `nobody` (readonly.rs).
    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
    let _ = fs::set_permissions(
        dir.parent().expect("has parent"),
        fs::Permissions::from_mode(0o755),
    );
    dir
}

// ---------------------------------------------------------------------------------------------
// Filesystems

/// Every filesystem the tests make, with the tool that makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fs {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
    Exfat,
    Ntfs,
    Iso9660,
    /// UDF: populated read-only images come from `genisoimage -udf` (an
    /// ISO 9660/UDF bridge); empty writable ones from `mkudffs`.
    Udf,
    /// Compressor: gzip, xz, lzo, lz4 or zstd.
    Squashfs(&'static str),
    Erofs,
    ErofsLz4,
    F2fs,
    Hfsplus,
}

impl Fs {
    /// A short unique name (test and file names).
    pub fn id(&self) -> String {
        match self {
            Fs::Squashfs(c) => format!("squashfs-{c}"),
            Fs::ErofsLz4 => "erofs-lz4".into(),
            other => other.fstype().into(),
        }
    }

    /// The kernel's type name, which autodetection must report.
    pub fn fstype(&self) -> &'static str {
        match self {
            Fs::Ext2 => "ext2",
            Fs::Ext3 => "ext3",
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
            Fs::Vfat => "vfat",
            Fs::Exfat => "exfat",
            Fs::Ntfs => "ntfs3",
            Fs::Iso9660 => "iso9660",
            Fs::Udf => "udf",
            Fs::Squashfs(_) => "squashfs",
            Fs::Erofs | Fs::ErofsLz4 => "erofs",
            Fs::F2fs => "f2fs",
            Fs::Hfsplus => "hfsplus",
        }
    }

    /// Whether our kernel writes it.
    pub fn writable(&self) -> bool {
        !matches!(
            self,
            Fs::Iso9660 | Fs::Squashfs(_) | Fs::Erofs | Fs::ErofsLz4
        )
    }

    /// Image file size (sparse).
    pub fn image_size(&self) -> u64 {
        match self {
            Fs::Xfs => 320 << 20, // mkfs.xfs refuses less than 300 MB
            _ => 256 << 20,
        }
    }

    /// What the host tool that populates an image keeps (see [`build`]), and
    /// so what reading it through our kernel must show.
    pub fn source_caps(&self) -> Caps {
        let none = Caps {
            symlinks: false,
            hardlinks: false,
            xattrs: false,
            modes: false,
            owner: false,
            mtime: true,
            unicode: true,
            y2038: true,
        };
        match self {
            // e2fsprogs 1.47.0's `mkfs -d` stores only the low 32 bits of times.
            Fs::Ext2 | Fs::Ext3 | Fs::Ext4 => Caps {
                y2038: false,
                ..Caps::ALL
            },
            Fs::Xfs | Fs::Btrfs => Caps::ALL,
            Fs::Squashfs(_) | Fs::Erofs | Fs::ErofsLz4 => Caps::ALL,
            // sload.f2fs copies no xattrs and makes no hard links.
            Fs::F2fs => Caps {
                xattrs: false,
                hardlinks: false,
                ..Caps::ALL
            },
            // mtools: names (8.3 + long), content, mtime; UTF-8 names depend on
            // the locale, so ASCII only.
            Fs::Vfat => Caps {
                unicode: false,
                ..none
            },
            Fs::Exfat => none,
            // ntfs-3g stores user.* as named streams, which ntfs3 does not show
            // as xattrs; modes are not kept without a user mapping; its
            // symlinks are Interix symlinks (system files holding "IntxLNK"),
            // which ntfs3 shows as regular files: no symlinks in the source.
            Fs::Ntfs => Caps {
                hardlinks: true,
                ..none
            },
            // Rock Ridge keeps modes, owners, symlinks; isofs numbers inodes
            // by position, so hard links are two inodes.
            Fs::Iso9660 => Caps {
                hardlinks: false,
                xattrs: false,
                ..Caps::ALL
            },
            // genisoimage's UDF side: files, directories and times. After
            // 2038 it writes a bogus timezone (-1440 minutes) with the local
            // time, so the file reads a day late: no such time in the source.
            Fs::Udf => Caps {
                unicode: false,
                y2038: false,
                ..none
            },
            Fs::Hfsplus => none,
        }
    }

    /// What a tree written through our kernel can hold on this filesystem,
    /// and what the host reference ([`host_reference`]) shows of it.
    pub fn write_caps(&self) -> Caps {
        let none = Caps {
            symlinks: false,
            hardlinks: false,
            xattrs: false,
            modes: false,
            owner: false,
            mtime: true,
            unicode: true,
            y2038: true,
        };
        match self {
            Fs::Vfat => Caps {
                unicode: false,
                ..none
            },
            Fs::Exfat => none,
            Fs::Ntfs => Caps {
                symlinks: true,
                hardlinks: true,
                ..none
            },
            Fs::Udf => Caps {
                symlinks: true,
                hardlinks: true,
                modes: true,
                owner: true,
                xattrs: false,
                ..Caps::ALL
            },
            Fs::Hfsplus => Caps {
                symlinks: true,
                hardlinks: true,
                xattrs: true,
                modes: true,
                owner: true,
                ..Caps::ALL
            },
            _ => Caps::ALL,
        }
    }

    /// What the host reference ([`host_reference`]) shows of a tree written
    /// through our kernel.
    pub fn reference_caps(&self) -> Caps {
        match self {
            // ntfs-3g 2022.10 reads ntfs3's relative symlinks, but shows its
            // absolute and long ones as "unsupported reparse tag 0xa000000c":
            // their targets are checked through our kernel only.
            Fs::Ntfs => Caps {
                symlinks: false,
                ..self.write_caps()
            },
            _ => self.write_caps(),
        }
    }

    /// Filesystem options for mounting through our kernel.
    pub fn mount_data(&self) -> &'static str {
        match self {
            // The kernel's default iocharset for FAT is iso8859-1.
            Fs::Vfat => "utf8",
            _ => "",
        }
    }
}

/// Makes an image of `fs` at `img`, populated from `src` when given (with the
/// tool listed in [`Fs::source_caps`]), empty otherwise. `scratch` is a
/// directory for mount points.
pub fn build(fs: Fs, src: Option<&Path>, img: &Path, scratch: &Path) -> Result<(), String> {
    let _ = fs::remove_file(img);
    let size = fs.image_size();
    let i = p(img);
    let mnt = scratch.join(format!("mnt-build-{}", fs.id()));
    match fs {
        Fs::Ext2 | Fs::Ext3 | Fs::Ext4 => {
            blank_image(img, size)?;
            let mut args = vec![
                "-q",
                "-F",
                "-t",
                fs.fstype(),
                "-b",
                "4096",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
            ];
            if let Some(src) = src {
                args.extend(["-d", p(src)]);
            }
            args.push(i);
            run(&mut cmd("mkfs.ext4", &args))?;
        }
        Fs::Xfs => {
            blank_image(img, size)?;
            run(&mut cmd("mkfs.xfs", &["-q", "-f", i]))?;
            if let Some(src) = src {
                // No Debian tool fills XFS from a directory with hard links and
                // xattrs (the protofile has neither): the host's XFS does it.
                let m = HostMount::kernel(img, &mnt, "xfs", "")?;
                run(&mut cmd(
                    "cp",
                    &["-a", &format!("{}/.", p(src)), &format!("{}/", p(&m.dir))],
                ))?;
            }
        }
        Fs::Btrfs => {
            blank_image(img, size)?;
            let mut args = vec!["-q", "-f"];
            if let Some(src) = src {
                args.extend(["--rootdir", p(src)]);
            }
            args.push(i);
            run(&mut cmd("mkfs.btrfs", &args))?;
        }
        Fs::Vfat => {
            blank_image(img, size)?;
            run(&mut cmd("mkfs.vfat", &["-F", "32", i]))?;
            if let Some(src) = src {
                let mut c = cmd("mcopy", &["-s", "-m", "-i", i]);
                for entry in fs::read_dir(src).map_err(|e| e.to_string())? {
                    c.arg(entry.map_err(|e| e.to_string())?.path());
                }
                c.arg("::/");
                c.env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC");
                run(&mut c)?;
            }
        }
        Fs::Exfat => {
            blank_image(img, size)?;
            run(&mut cmd("mkfs.exfat", &[i]))?;
            if let Some(src) = src {
                let m = HostMount::exfat_fuse(img, &mnt, false)?;
                run(&mut cmd(
                    "cp",
                    &[
                        "-R",
                        "--preserve=timestamps",
                        &format!("{}/.", p(src)),
                        &format!("{}/", p(&m.dir)),
                    ],
                ))?;
            }
        }
        Fs::Ntfs => {
            blank_image(img, size)?;
            run(&mut cmd("mkfs.ntfs", &["-q", "-F", "-f", i]))?;
            if let Some(src) = src {
                let m = HostMount::ntfs_3g(img, &mnt, false)?;
                run(&mut cmd(
                    "cp",
                    &[
                        "-R",
                        "-P",
                        "--preserve=timestamps,links",
                        &format!("{}/.", p(src)),
                        &format!("{}/", p(&m.dir)),
                    ],
                ))?;
            }
        }
        Fs::Iso9660 => {
            let src = src.ok_or("an ISO 9660 image needs content")?;
            run(&mut cmd(
                "xorriso",
                &["-as", "mkisofs", "-quiet", "-R", "-J", "-o", i, p(src)],
            ))?;
        }
        Fs::Udf => match src {
            Some(src) => {
                run(&mut cmd(
                    "genisoimage",
                    &["-quiet", "-udf", "-R", "-o", i, p(src)],
                ))?;
            }
            None => {
                blank_image(img, size)?;
                run(&mut cmd(
                    "mkudffs",
                    // 2 KiB blocks: a UDF symlink must fit one block.
                    &["--media-type=hd", "--blocksize=2048", i],
                ))?;
            }
        },
        Fs::Squashfs(comp) => {
            let src = src.ok_or("a squashfs image needs content")?;
            run(&mut cmd(
                "mksquashfs",
                &[
                    p(src),
                    i,
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                    "-comp",
                    comp,
                ],
            ))?;
        }
        Fs::Erofs | Fs::ErofsLz4 => {
            let src = src.ok_or("an EROFS image needs content")?;
            let mut args = vec!["--quiet", "--preserve-mtime"];
            if fs == Fs::ErofsLz4 {
                // Physical clusters up to 64 KiB: big files take the multi-page input path
                // of the decompressor, small ones the single-page one.
                args.extend(["-zlz4hc", "-C65536"]);
            }
            args.extend([i, p(src)]);
            run(&mut cmd("mkfs.erofs", &args))?;
        }
        Fs::F2fs => {
            blank_image(img, size)?;
            run(&mut cmd(
                "mkfs.f2fs",
                &["-q", "-f", "-O", "extra_attr,inode_checksum,sb_checksum", i],
            ))?;
            if let Some(src) = src {
                run(&mut cmd("sload.f2fs", &["-f", p(src), "-P", i]))?;
            }
        }
        Fs::Hfsplus => {
            if src.is_some() {
                return Err("Debian 12 has no tool that fills an HFS+ image".into());
            }
            make_hfsplus(img, size)?;
        }
    }
    Ok(())
}

/// Writes an empty HFS+ volume (Apple TN1150): Debian 12 has no
/// mkfs.hfsplus (hfsprogs was removed), so this is the smallest formatter
/// that does: volume headers, allocation bitmap, an empty extents B-tree and
/// a catalog B-tree holding the root folder and its thread. 4 KiB blocks,
/// case-folding keys (plain HFS+, not HFSX); `hpfsck` accepts it.
pub fn make_hfsplus(img: &Path, size: u64) -> Result<(), String> {
    const BLOCK: u32 = 4096;
    const NODE: usize = 4096;
    const HFS_EPOCH_OFFSET: u64 = 2_082_844_800; // 1904 -> 1970
    let total_blocks = (size / u64::from(BLOCK)) as u32;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let date = (now + HFS_EPOCH_OFFSET) as u32;
    let be16 = |b: &mut [u8], at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    let be32 = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let be64 = |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());

    // Layout in blocks: 0 = boot blocks + volume header, then the files.
    let bitmap_blocks = total_blocks.div_ceil(8).div_ceil(BLOCK);
    let alloc_start = 1;
    let ext_start = alloc_start + bitmap_blocks;
    let ext_blocks = 4;
    let cat_start = ext_start + ext_blocks;
    let cat_blocks = 256;
    let first_free = cat_start + cat_blocks;
    let used = first_free + 1; // + the last block (alternate volume header)

    let volume_name: Vec<u16> = "lklfuse".encode_utf16().collect();

    // A B-tree header node.
    let header_node = |depth: u16,
                       root: u32,
                       leaf_records: u32,
                       leaf: u32,
                       max_key: u16,
                       total_nodes: u32,
                       used_nodes: u32,
                       key_type: u8,
                       attributes: u32| {
        let mut n = vec![0u8; NODE];
        n[8] = 1; // kind: header
        be16(&mut n, 10, 3); // records: header, user data, map
        let h = 14;
        be16(&mut n, h, depth);
        be32(&mut n, h + 2, root);
        be32(&mut n, h + 6, leaf_records);
        be32(&mut n, h + 10, leaf);
        be32(&mut n, h + 14, leaf);
        be16(&mut n, h + 18, NODE as u16);
        be16(&mut n, h + 20, max_key);
        be32(&mut n, h + 22, total_nodes);
        be32(&mut n, h + 26, total_nodes - used_nodes);
        be32(&mut n, h + 32, BLOCK); // clump size
        n[h + 36] = 0; // btree type
        n[h + 37] = key_type;
        be32(&mut n, h + 38, attributes);
        // Map record: one bit per node, MSB first.
        let map = 14 + 106 + 128;
        for i in 0..used_nodes as usize {
            n[map + i / 8] |= 0x80 >> (i % 8);
        }
        // Record offsets from the end: header, user data, map, free space.
        let offsets = [14u16, 120, 248, (NODE - 8) as u16];
        for (i, off) in offsets.iter().enumerate() {
            be16(&mut n, NODE - 2 * (i + 1), *off);
        }
        n
    };
    const BIG_KEYS: u32 = 2;
    const VARIABLE_INDEX_KEYS: u32 = 4;
    let ext_nodes = ext_blocks * BLOCK / NODE as u32;
    let cat_nodes = cat_blocks * BLOCK / NODE as u32;
    let ext_header = header_node(0, 0, 0, 0, 10, ext_nodes, 1, 0, BIG_KEYS);
    let cat_header = header_node(
        1,
        1,
        2,
        1,
        516,
        cat_nodes,
        2,
        0xCF, // case folding (HFS+)
        BIG_KEYS | VARIABLE_INDEX_KEYS,
    );

    // The catalog leaf: root folder (key: parent 1, volume name), then its
    // thread (key: parent 2 = the root's CNID, empty name).
    let mut leaf = vec![0u8; NODE];
    leaf[8] = 0xFF; // kind: leaf (-1)
    leaf[9] = 1; // height
    be16(&mut leaf, 10, 2);
    let mut rec = Vec::new();
    // Folder record key.
    let key_len = 6 + 2 * volume_name.len() as u16;
    let mut key = vec![0u8; 2 + key_len as usize];
    be16(&mut key, 0, key_len);
    be32(&mut key, 2, 1);
    be16(&mut key, 6, volume_name.len() as u16);
    for (i, c) in volume_name.iter().enumerate() {
        be16(&mut key, 8 + 2 * i, *c);
    }
    let mut folder = vec![0u8; 88];
    be16(&mut folder, 0, 1); // kHFSPlusFolderRecord
    be32(&mut folder, 8, 2); // folderID: the root
    for at in [12, 16, 20, 24] {
        be32(&mut folder, at, date);
    }
    be16(&mut folder, 42, 0o040755); // BSD info: owner 0, group 0, mode
    let rec0 = 14;
    rec.extend_from_slice(&key);
    rec.extend_from_slice(&folder);
    let rec1 = rec0 + rec.len();
    // Thread record: key (parent 2, empty name), then type 3, parent 1, name.
    let mut thread_key = vec![0u8; 8];
    be16(&mut thread_key, 0, 6);
    be32(&mut thread_key, 2, 2);
    let mut thread = vec![0u8; 10 + 2 * volume_name.len()];
    be16(&mut thread, 0, 3); // kHFSPlusFolderThreadRecord
    be32(&mut thread, 4, 1);
    be16(&mut thread, 8, volume_name.len() as u16);
    for (i, c) in volume_name.iter().enumerate() {
        be16(&mut thread, 10 + 2 * i, *c);
    }
    rec.extend_from_slice(&thread_key);
    rec.extend_from_slice(&thread);
    let free = rec0 + rec.len();
    leaf[rec0..free].copy_from_slice(&rec);
    for (i, off) in [rec0, rec1, free].iter().enumerate() {
        be16(&mut leaf, NODE - 2 * (i + 1), *off as u16);
    }

    // Allocation bitmap.
    let mut bitmap = vec![0u8; (bitmap_blocks * BLOCK) as usize];
    let mut mark = |block: u32| bitmap[(block / 8) as usize] |= 0x80 >> (block % 8);
    for b in 0..first_free {
        mark(b);
    }
    mark(total_blocks - 1);

    // Volume header.
    let mut vh = vec![0u8; 512];
    vh[0..2].copy_from_slice(b"H+");
    be16(&mut vh, 2, 4);
    be32(&mut vh, 4, 1 << 8); // cleanly unmounted
    vh[8..12].copy_from_slice(b"10.0");
    for at in [16, 20, 28] {
        be32(&mut vh, at, date);
    }
    be32(&mut vh, 40, BLOCK);
    be32(&mut vh, 44, total_blocks);
    be32(&mut vh, 48, total_blocks - used);
    be32(&mut vh, 52, first_free);
    be32(&mut vh, 56, BLOCK);
    be32(&mut vh, 60, BLOCK);
    be32(&mut vh, 64, 16); // next catalog ID
    be64(&mut vh, 72, 1); // encodings: MacRoman
    let mut fork = |at: usize, start: u32, blocks: u32| {
        be64(&mut vh, at, u64::from(blocks) * u64::from(BLOCK));
        be32(&mut vh, at + 8, BLOCK);
        be32(&mut vh, at + 12, blocks);
        be32(&mut vh, at + 16, start);
        be32(&mut vh, at + 20, blocks);
    };
    fork(112, alloc_start, bitmap_blocks);
    fork(192, ext_start, ext_blocks);
    fork(272, cat_start, cat_blocks);

    blank_image(img, size)?;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(img)
        .map_err(|e| e.to_string())?;
    let b = |block: u32| u64::from(block) * u64::from(BLOCK);
    let writes: [(u64, &[u8]); 6] = [
        (1024, &vh),
        (size - 1024, &vh),
        (b(alloc_start), &bitmap),
        (b(ext_start), &ext_header),
        (b(cat_start), &cat_header),
        (b(cat_start) + NODE as u64, &leaf),
    ];
    for (at, data) in writes {
        f.write_all_at(data, at)
            .map_err(|e| format!("write {}: {e}", img.display()))?;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// Runs the filesystem's own checker on an image; the checker's output.
pub fn fsck(fs: Fs, img: &Path) -> Result<String, String> {
    let i = p(img);
    match fs {
        Fs::Ext2 | Fs::Ext3 | Fs::Ext4 => run(&mut cmd("e2fsck", &["-f", "-n", i])),
        Fs::Xfs => run(&mut cmd("xfs_repair", &["-n", "-f", i])),
        Fs::Btrfs => run(&mut cmd("btrfs", &["check", "--readonly", i])),
        Fs::Vfat => run(&mut cmd("fsck.vfat", &["-n", i])),
        Fs::Exfat => run(&mut cmd("fsck.exfat", &["-n", i])),
        Fs::Ntfs => run(&mut cmd("ntfsfix", &["-n", i])),
        Fs::F2fs => {
            let out = run(&mut cmd("fsck.f2fs", &["-f", "--dry-run", i]))?;
            if out.contains("[Fail]") || out.contains("[FIX]") {
                Err(format!("fsck.f2fs found problems:\n{out}"))
            } else {
                Ok(out)
            }
        }
        // udftools 2.3 has no checker; udfinfo parses every descriptor and
        // fails on a damaged one.
        Fs::Udf => run(&mut cmd("udfinfo", &[i])),
        // Debian 12 has no fsck.hfsplus (hfsprogs), and hpfsck (libhfsp 1.0.4,
        // package hfsplus) cannot size an image file or a loop device: it
        // expects 0 blocks and looks for the backup header at the wrong
        // place, even on a volume Linux mounts cleanly.
        Fs::Hfsplus => Ok(
            "NOTE: no working HFS+ checker on Debian 12 (no fsck.hfsplus; \
                           hpfsck cannot size image files)"
                .into(),
        ),
        Fs::Iso9660 | Fs::Squashfs(_) | Fs::Erofs | Fs::ErofsLz4 => {
            Err(format!("{} is read-only: no checker", fs.id()))
        }
    }
}

/// A host-side view of an image's files, independent of our kernel.
pub enum Reference {
    Mounted(HostMount),
    Extracted(PathBuf),
    Unavailable(String),
}

impl Reference {
    pub fn root(&self) -> Option<&Path> {
        match self {
            Reference::Mounted(m) => Some(&m.dir),
            Reference::Extracted(d) => Some(d),
            Reference::Unavailable(_) => None,
        }
    }
}

/// Opens the image with a host-side reference implementation (read-only):
/// the host kernel's driver on a loop device, a FUSE driver, or mtools.
pub fn host_reference(fs: Fs, img: &Path, scratch: &Path) -> Result<Reference, String> {
    let dir = scratch.join(format!("ref-{}", fs.id()));
    let unavailable = |why: String| Ok(Reference::Unavailable(why));
    let host_has = |name: &str| {
        fs::read_to_string("/proc/filesystems")
            .map(|f| f.lines().any(|l| l.split_whitespace().last() == Some(name)))
            .unwrap_or(false)
    };
    match fs {
        Fs::Ext2 | Fs::Ext3 | Fs::Ext4 | Fs::Xfs | Fs::Btrfs => {
            let t = match fs {
                Fs::Xfs => "xfs",
                Fs::Btrfs => "btrfs",
                _ => "ext4",
            };
            if !is_root() {
                return unavailable(format!("a loop mount of {t} needs root"));
            }
            if !host_has(t) {
                return unavailable(format!("the host kernel has no {t}"));
            }
            let opts = if fs == Fs::Xfs { "ro,norecovery" } else { "ro" };
            Ok(Reference::Mounted(HostMount::kernel(img, &dir, t, opts)?))
        }
        Fs::Vfat => {
            fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let mut c = cmd("mcopy", &["-s", "-m", "-n", "-i", p(img), "::/*", p(&dir)]);
            c.env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC");
            run(&mut c)?;
            Ok(Reference::Extracted(dir))
        }
        Fs::Exfat => {
            if !is_root() {
                return unavailable("exfat-fuse on a loop device needs root".into());
            }
            Ok(Reference::Mounted(HostMount::exfat_fuse(img, &dir, true)?))
        }
        Fs::Ntfs => {
            if !is_root() {
                return unavailable("ntfs-3g needs root here".into());
            }
            Ok(Reference::Mounted(HostMount::ntfs_3g(img, &dir, true)?))
        }
        Fs::F2fs => unavailable(
            "no host reader for f2fs: the host kernel has no f2fs and f2fs-tools has no \
             extractor (fsck.f2fs is the only host check)"
                .into(),
        ),
        Fs::Udf => {
            if is_root() && host_has("udf") {
                Ok(Reference::Mounted(HostMount::kernel(
                    img, &dir, "udf", "ro",
                )?))
            } else {
                unavailable(
                    "no host reader for UDF: the host kernel has no udf and udftools has no \
                     extractor (udfinfo is the only host check)"
                        .into(),
                )
            }
        }
        Fs::Hfsplus => unavailable(
            "no HFS+ host reader: the host kernel has no hfsplus, and libhfsp 1.0.4 \
             (hpmount/hpls) rejects a volume once Linux has written it (\"This is not a HFS+ \
             volume\")"
                .into(),
        ),
        Fs::Iso9660 | Fs::Squashfs(_) | Fs::Erofs | Fs::ErofsLz4 => {
            unavailable(format!("{} is made on the host from a directory", fs.id()))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Whole-image fingerprints (read-only checks)

/// Size, modification time and SHA-256 of an image file. Holes are hashed
/// as the zeros they read as, but skipped quickly with SEEK_DATA/SEEK_HOLE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i128,
    pub sha256: String,
}

pub fn fingerprint(img: &Path) -> Result<Fingerprint, String> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(img).map_err(|e| format!("open {}: {e}", img.display()))?;
    let md = f.metadata().map_err(|e| e.to_string())?;
    let size = md.len();
    let fd = f.as_raw_fd();
    let mut h = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let hash_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    while pos < size {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, pos as i64, libc::SEEK_DATA) };
        let data = if data < 0 { size } else { data as u64 };
        hash_zeros(&mut h, data - pos);
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as i64, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            size
        } else {
            (hole as u64).min(size)
        };
        let mut at = data;
        while at < hole {
            let k = ((hole - at) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..k], at)
                .map_err(|e| format!("read {}: {e}", img.display()))?;
            h.update(&buf[..k]);
            at += k as u64;
        }
        pos = hole;
    }
    Ok(Fingerprint {
        size,
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        sha256: hex(&h.finish()),
    })
}

// ---------------------------------------------------------------------------------------------
// Child processes: the test binary run again with one ignored test selected

/// Environment variable naming the role of a child test process.
pub const CHILD_ENV: &str = "LKLFUSE_TEST_CHILD";
/// Lines a child prints for its parent start with this.
pub const CHILD_TAG: &str = "@@child ";

/// The role this process was started for, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A command running this test binary's ignored test `test` alone, as `role`.
pub fn child_command(test: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut c = Command::new(exe);
    c.args([
        "--ignored",
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, role)
    .stdin(Stdio::null());
    c
}

/// The lines a child writes to `out`, read on a thread of their own so that the caller can
/// wait for them with a timeout (a child that hangs must fail the test, not stall it).
pub fn line_channel(out: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Prints a line for the parent (flushed at once: the child may be killed).
pub fn tell_parent(msg: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{CHILD_TAG}{msg}");
    let _ = out.flush();
}

/// The tagged lines of a child's output, without the tag.
pub fn child_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            l.find(CHILD_TAG)
                .map(|i| l[i + CHILD_TAG.len()..].to_string())
        })
        .collect()
}

/// Routes `tracing` output (the kernel's messages with RUST_LOG=kernel=info)
/// to the test output. Idempotent.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
