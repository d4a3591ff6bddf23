//! Crash safety: a process writing through our kernel is killed with SIGKILL
//! in the middle of writes, after some fsyncs. Afterwards the image passes
//! the filesystem's checker (after the journal/log replay) and every file
//! whose fsync had returned is intact.
//!
//! The writer is this test binary again (the ignored `child_process` test,
//! selected by an environment variable): it attaches the image, boots its
//! own kernel, writes files, fsyncs every third one (and its directory),
//! tells the parent, and goes on writing until it is killed.
//!
//! Checked for each image, in this order:
//! 1. before our kernel touches it again, the host replays a copy (e2fsck -fp
//!    for ext4; a loop mount for xfs and btrfs when root) and the copy passes
//!    the checker, with every fsynced file intact as the host reads it;
//! 2. our kernel mounts the crashed image read-write (its own replay), every
//!    fsynced file is intact, and after unmount the image passes the checker.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::images::{self, cmd, run, Fs, HostMount};
use lklfuse::lkl::bindings as b;
use lklfuse::lkl::disk::{self, Disk, MountOptions};
use lklfuse::lkl::{self, sys, AsKernelFd};

const CASES: &[(&str, Fs)] = &[
    ("ext4", Fs::Ext4),
    ("xfs", Fs::Xfs),
    ("btrfs", Fs::Btrfs),
    ("f2fs", Fs::F2fs),
];

/// How many fsynced files the parent waits for before it kills the writer.
const SYNCED_BEFORE_KILL: usize = 12;
/// How long the writer goes on after that before the kill.
const KILL_DELAY_MS: u64 = 40;

#[derive(Clone, Debug)]
struct Synced {
    name: String,
    size: u64,
    sha256: String,
}

struct Case {
    fs: Fs,
    image: PathBuf,
    synced: Vec<Synced>,
    /// What the host-side replay and check said (step 1).
    host: Result<String, String>,
    disk: Result<Disk, String>,
}

fn setup() -> &'static BTreeMap<&'static str, Case> {
    static SETUP: OnceLock<BTreeMap<&'static str, Case>> = OnceLock::new();
    SETUP.get_or_init(|| {
        images::init_logging();
        let dir = images::work_dir("crash");
        let crashed: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = CASES
                .iter()
                .map(|&(key, fs)| {
                    let dir = dir.clone();
                    scope.spawn(move || {
                        let image = dir.join(format!("{key}.img"));
                        let synced = crash(fs, &image, &dir);
                        let host = match &synced {
                            Ok(synced) => host_replay_and_check(fs, &image, &dir, synced),
                            Err(e) => Err(e.clone()),
                        };
                        (key, fs, image, synced, host)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("crash runner panicked"))
                .collect()
        });
        let mut cases = BTreeMap::new();
        for (key, fs, image, synced, host) in crashed {
            let disk = synced
                .clone()
                .and_then(|_| disk::attach(&image, false).map_err(|e| format!("attach: {e}")));
            cases.insert(
                key,
                Case {
                    fs,
                    image,
                    synced: synced.unwrap_or_default(),
                    host,
                    disk,
                },
            );
        }
        common::kernel();
        cases
    })
}

/// Runs the writer on a fresh image and kills it after
/// [`SYNCED_BEFORE_KILL`] fsynced files; the files it reported.
fn crash(fs: Fs, image: &Path, dir: &Path) -> Result<Vec<Synced>, String> {
    images::build(fs, None, image, dir)?;
    let mut child = images::child_command("child_process", "crash-writer")
        .env("LKLFUSE_TEST_IMAGE", image)
        .env("LKLFUSE_TEST_FSTYPE", fs.fstype())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn the writer: {e}"))?;
    let rx = images::line_channel(child.stdout.take().expect("piped"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut synced = Vec::new();
    let mut output = Vec::new();
    let mut take = |line: String, synced: &mut Vec<Synced>| -> Result<(), String> {
        for msg in images::child_lines(&line) {
            let f: Vec<&str> = msg.split_whitespace().collect();
            if let ["synced", name, size, sha] = f[..] {
                synced.push(Synced {
                    name: name.to_string(),
                    size: size.parse().map_err(|_| format!("bad line {msg}"))?,
                    sha256: sha.to_string(),
                });
            }
        }
        output.push(line);
        Ok(())
    };
    while synced.len() < SYNCED_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        take(line, &mut synced)?;
    }
    // Let it write (and fsync) on for a moment, then SIGKILL: in the middle
    // of writes, possibly of an fsync.
    std::thread::sleep(Duration::from_millis(KILL_DELAY_MS));
    let _ = child.kill();
    let status = child.wait().map_err(|e| e.to_string())?;
    // Every line printed before the kill was printed after its fsync returned.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        take(line, &mut synced)?;
    }
    if synced.len() < SYNCED_BEFORE_KILL || status.signal() != Some(libc::SIGKILL) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(format!(
            "the writer reported {} fsynced files and ended with {status}, expected {} and \
             SIGKILL:\n{}\n{err}",
            synced.len(),
            SYNCED_BEFORE_KILL,
            output.join("\n")
        ));
    }
    Ok(synced)
}

/// The writer's side.
fn crash_writer() {
    let image = PathBuf::from(std::env::var("LKLFUSE_TEST_IMAGE").expect("image"));
    let fstype = std::env::var("LKLFUSE_TEST_FSTYPE").expect("fstype");
    let disk = disk::attach(&image, false).expect("attach");
    common::kernel();
    let m = disk
        .mount(&MountOptions {
            fstype: Some(fstype),
            ..Default::default()
        })
        .expect("mount rw");
    let mp = m.path().to_str().expect("UTF-8").to_string();
    let dir = format!("{mp}/crash");
    sys::mkdirat(lkl::CWD, &images::cstring(&dir), 0o755).expect("mkdir");
    let open_dir = |path: &str| {
        sys::openat(
            lkl::CWD,
            &images::cstring(path),
            (b::O_RDONLY | b::O_DIRECTORY) as i32,
            0,
        )
        .expect("open dir")
    };
    // Borrowed: an owned KernelFd passed by value is closed before the call.
    let root_fd = open_dir(&mp);
    sys::fsync(root_fd.as_kernel_fd()).expect("fsync mount point");
    let dir_fd = open_dir(&dir);
    let create = (b::O_CREAT | b::O_WRONLY | b::O_TRUNC) as i32;
    let bulk = sys::openat(
        lkl::CWD,
        &images::cstring(&format!("{dir}/bulk")),
        create,
        0o644,
    )
    .expect("create bulk");
    let mut rng = images::Rng::new(42);
    let chunk = images::random_bytes(43, 256 << 10);
    for i in 0..100_000u64 {
        let name = format!("f{i:05}");
        let size = 1000 + rng.below(300_000) as usize;
        let data = images::random_bytes(1000 + i, size);
        let fd = sys::openat(
            lkl::CWD,
            &images::cstring(&format!("{dir}/{name}")),
            create,
            0o644,
        )
        .expect("create");
        let mut done = 0;
        while done < data.len() {
            done += sys::write(&fd, &data[done..]).expect("write");
        }
        if i % 3 == 0 {
            sys::fsync(&fd).expect("fsync file");
            sys::fsync(&dir_fd).expect("fsync dir");
            images::tell_parent(&format!(
                "synced {name} {size} {}",
                images::hex(&images::sha256(&data))
            ));
        }
        drop(fd);
        // Unsynced overwrites in flight when the kill comes.
        let offset = (i * chunk.len() as u64) % (32 << 20);
        sys::pwrite64(&bulk, &chunk, offset as i64).expect("pwrite bulk");
    }
    panic!("the writer was not killed");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test paths")
}

/// A sparse copy of the crashed image for the host to replay.
fn copy_of(image: &Path, what: &str) -> Result<PathBuf, String> {
    let copy = image.with_extension(format!("{what}.img"));
    run(&mut cmd("cp", &["--sparse=always", s(image), s(&copy)]))?;
    Ok(copy)
}

fn verify_on_host(root: &Path, synced: &[Synced]) -> Result<(), String> {
    for f in synced {
        let p = root.join("crash").join(&f.name);
        let (size, sha) =
            images::sha256_host_file(&p).map_err(|e| format!("host: {}: {e}", f.name))?;
        if size != f.size || images::hex(&sha) != f.sha256 {
            return Err(format!(
                "host: fsynced file {} is {size} bytes, sha256 {}; expected {} bytes, {}",
                f.name,
                images::hex(&sha),
                f.size,
                f.sha256
            ));
        }
    }
    Ok(())
}

/// Step 1: the host replays a copy; the copy must then be clean and hold
/// every fsynced file. Returns a summary.
fn host_replay_and_check(
    fs: Fs,
    image: &Path,
    dir: &Path,
    synced: &[Synced],
) -> Result<String, String> {
    let mut notes = Vec::new();
    match fs {
        Fs::Ext4 => {
            let copy = copy_of(image, "e2fsck")?;
            // -p (preen, what boot does) replays the journal and fixes only
            // what is safe unattended, e.g. the superblock's free counts,
            // which ext4 does not journal; exit code 4 or more means damage
            // that needs a human. The second pass must then find nothing.
            let (code, out) = images::run_status(&mut cmd("e2fsck", &["-f", "-p", s(&copy)]))?;
            if code > 1 {
                return Err(format!("e2fsck -fp exit code {code}:\n{out}"));
            }
            images::fsck(fs, &copy).map_err(|e| format!("after e2fsck's replay: {e}"))?;
            notes.push(format!("e2fsck -fp (exit {code}) then e2fsck -fn: clean"));
            if images::is_root() {
                let m = HostMount::kernel(&copy, &dir.join("host-ext4"), "ext4", "ro")?;
                verify_on_host(&m.dir, synced)?;
                notes.push("host ext4: every fsynced file intact".into());
            }
        }
        Fs::Xfs | Fs::Btrfs => {
            if fs == Fs::Btrfs {
                // COW: consistent even before the log tree is replayed.
                images::fsck(fs, image).map_err(|e| format!("before replay: {e}"))?;
                notes.push("btrfs check before replay: clean".into());
            }
            if images::is_root() {
                let copy = copy_of(image, "host")?;
                let t = fs.fstype();
                {
                    let m = HostMount::kernel(&copy, &dir.join(format!("host-{t}")), t, "")?;
                    verify_on_host(&m.dir, synced)?;
                }
                images::fsck(fs, &copy).map_err(|e| format!("after the host's replay: {e}"))?;
                notes.push(format!(
                    "host {t} replay: every fsynced file intact, checker clean"
                ));
            } else {
                notes.push("no host replay: a loop mount needs root".into());
            }
        }
        _ => notes.push(format!(
            "no host replay for {}: the host kernel has no driver",
            fs.fstype()
        )),
    }
    Ok(notes.join("; "))
}

fn crash_case(key: &str) {
    let case = &setup()[key];
    let disk = case
        .disk
        .as_ref()
        .unwrap_or_else(|e| panic!("{key}: no crashed image: {e}"));
    let key = key.to_string();
    common::with_watchdog(&key.clone(), Duration::from_secs(180), move || {
        match &case.host {
            Ok(notes) => println!("{key}: {notes}"),
            Err(e) => panic!("{key}: host-side replay and check: {e}"),
        }
        // Step 2: our kernel replays.
        let m = disk
            .mount(&MountOptions::default())
            .unwrap_or_else(|e| panic!("{key}: mount after the crash: {e}"));
        assert_eq!(m.fstype(), case.fs.fstype());
        let dir = format!("{}/crash", m.path().to_str().expect("UTF-8"));
        let mut bad = Vec::new();
        for f in &case.synced {
            match images::kernel_sha256(&format!("{dir}/{}", f.name)) {
                Ok((size, sha)) if size == f.size && images::hex(&sha) == f.sha256 => {}
                Ok((size, sha)) => bad.push(format!(
                    "{}: {size} bytes, sha256 {}; fsynced {} bytes, {}",
                    f.name,
                    images::hex(&sha),
                    f.size,
                    f.sha256
                )),
                Err(e) => bad.push(e),
            }
        }
        let present = images::kernel_list_dir(&dir).map(|n| n.len()).unwrap_or(0);
        println!(
            "{key}: {} fsynced files checked; {present} names in the directory after the crash",
            case.synced.len()
        );
        m.unmount()
            .unwrap_or_else(|e| panic!("{key}: unmount: {e}"));
        assert!(
            bad.is_empty(),
            "{key}: fsynced files lost or damaged:\n  {}",
            bad.join("\n  ")
        );
        match images::fsck(case.fs, &case.image) {
            Ok(_) => println!("{key}: checker clean after our replay"),
            Err(e) => panic!("{key}: after our kernel's replay: {e}"),
        }
    });
}

#[test]
fn ext4_survives_sigkill() {
    crash_case("ext4");
}

#[test]
fn xfs_survives_sigkill() {
    crash_case("xfs");
}

#[test]
fn btrfs_survives_sigkill() {
    crash_case("btrfs");
}

#[test]
fn f2fs_survives_sigkill() {
    crash_case("f2fs");
}

/// Not a test: the body of the writer process (selected by
/// LKLFUSE_TEST_CHILD). Does nothing when run directly.
#[test]
#[ignore = "helper run as a child process by the other tests of this file"]
fn child_process() {
    match images::child_role().as_deref() {
        Some("crash-writer") => crash_writer(),
        Some(other) => panic!("unknown child role {other}"),
        None => println!("helper for child processes: nothing to do when run directly"),
    }
}
