//! Security of the mount and the tools against other users and hostile images, beyond
//! tests/fuse_users.rs (which covers an unprivileged daemon and a basic allow_other smoke):
//!
//! - allow_other, with a root daemon and with an unprivileged one: another user's denied
//!   operations fail with exactly the errno a native ext4 mount of a copy of the same image
//!   gives (the native mount is the reference), groups and named-user ACLs grant and revoke
//!   access, new files get the creator's ids or a setgid directory's group;
//! - set-user-id programs and device nodes in the image are inert by default (nosuid,nodev)
//!   and honoured only when root asks (`-o suid,dev`);
//! - a hostile image (absolute and climbing symlinks, loops, odd names, a directory entry
//!   whose name contains slashes) never makes the daemon touch a host path other than its
//!   image, /dev/fuse and procfs, and never makes cpfromfs or fs2tar write outside their
//!   destination;
//! - a root daemon keeps only CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH, in every thread; an
//!   unprivileged one has no capabilities.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::fuse::{
    self, assert_one_line_error, chown, command, fsck_clean, fuse_test, make_ext4_owned, path_str,
    py, py_as, run, run_as, run_binary, subdir, Daemon, Spawned,
};
use common::images::{Fs, HostMount};

const FILE: &str = "security";
const LIMIT: Duration = Duration::from_secs(240);

const A: u32 = 2001;
const B: u32 = 2002;
const GROUP: u32 = 3000;

const CPFROMFS: &str = env!("CARGO_BIN_EXE_cpfromfs");
const FS2TAR: &str = env!("CARGO_BIN_EXE_fs2tar");

/// fusermount3 lets a user mount with allow_other only with `user_allow_other` in
/// /etc/fuse.conf. Added once when missing (and left in place: other runs need it too),
/// written to a temporary file and renamed so no reader ever sees half a file.
fn ensure_user_allow_other() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let path = Path::new("/etc/fuse.conf");
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.trim() == "user_allow_other") {
            return;
        }
        let mut new = text.clone();
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str("user_allow_other\n");
        let tmp = path.with_extension(format!("conf.lklfuse-{}", std::process::id()));
        fs::write(&tmp, new).expect("write /etc/fuse.conf.tmp");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod fuse.conf");
        fs::rename(&tmp, path).expect("replace /etc/fuse.conf");
    });
}

/// `cp --sparse=always`: the native reference gets a byte copy of the image.
fn copy_image(from: &Path, to: &Path) {
    run(&mut command(
        "cp",
        &["--sparse=always", path_str(from), path_str(to)],
    ))
    .expect_ok();
}

/// Lines `key<TAB>value` printed by the probe scripts, in order.
fn table(out: &fuse::Out, what: &str) -> Vec<(String, String)> {
    assert!(out.ok(), "{what}: {}", out.describe());
    out.stdout
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("{what}: bad line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 3. allow_other: another user's permissions, against a native mount

/// Run as A (umask 0, in group 3000) on the mount's root: the tree other users probe.
const POPULATE: &str = r#"
import os, sys
os.umask(0)
t = os.path.join(sys.argv[1], 't')
os.mkdir(t, 0o755)
def mk(n, mode, gid=-1):
    p = os.path.join(t, n)
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    os.write(fd, n.encode())
    os.close(fd)
    if gid != -1:
        os.chown(p, -1, gid)
for d, mode in (('dir755', 0o755), ('dir700', 0o700), ('sticky', 0o1777), ('setgid', 0o777),
                ('shared', 0o777)):
    os.mkdir(os.path.join(t, d))
    os.chmod(os.path.join(t, d), mode)
mk('private', 0o600)
mk('public', 0o644)
mk('group', 0o640, 3000)
mk('acl', 0o640)
mk('dir755/inside', 0o644)
mk('dir700/secret', 0o644)
mk('sticky/a-file', 0o666)
os.setxattr(os.path.join(t, 'public'), 'user.a', b'a-value')
os.chown(os.path.join(t, 'setgid'), -1, 3000)
os.chmod(os.path.join(t, 'setgid'), 0o2777)
print('done')
"#;

/// Run as B against `<root>/t`: one `name<TAB>OK|ERRNO` line per operation (phase `deny`),
/// or the ids and modes of what B creates (phase `create`), or one read (phases `group`,
/// `acl`). Every path is used fresh (no descriptor kept), so each line is one request.
const PROBE: &str = r#"
import os, sys, errno, struct
t = os.path.join(sys.argv[1], 't')
phase = sys.argv[2]
P = lambda n: os.path.join(t, n)
def r(name, f):
    try:
        f()
        print(name + '\tOK')
    except OSError as e:
        print(name + '\t' + errno.errorcode.get(e.errno, str(e.errno)))
def rd(p):
    with open(p, 'rb') as f:
        f.read()
def opn(p, flags):
    os.close(os.open(p, flags, 0o644))
U = 0xffffffff
ACL = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', *e) for e in
    ((1, 6, U), (2, 6, 2002), (4, 4, U), (0x10, 6, U), (0x20, 4, U)))
W = os.O_WRONLY
NEW = os.O_CREAT | os.O_EXCL | os.O_WRONLY
if phase == 'deny':
    r('read 0600 file', lambda: rd(P('private')))
    r('open 0644 file for writing', lambda: opn(P('public'), W))
    r('open 0644 file for appending', lambda: opn(P('public'), W | os.O_APPEND))
    r('open 0644 file O_NOATIME', lambda: opn(P('public'), os.O_RDONLY | os.O_NOATIME))
    r('create in 0755 dir', lambda: opn(P('dir755/b-new'), NEW))
    r('mkdir in 0755 dir', lambda: os.mkdir(P('dir755/b-dir')))
    r('mkfifo in 0755 dir', lambda: os.mkfifo(P('dir755/b-fifo')))
    r('symlink in 0755 dir', lambda: os.symlink('x', P('dir755/b-link')))
    r('unlink in 0755 dir', lambda: os.unlink(P('dir755/inside')))
    r('rename out of 0755 dir', lambda: os.rename(P('dir755/inside'), P('shared/stolen')))
    r('hard link to 0600 file', lambda: os.link(P('private'), P('shared/b-hl')))
    r('stat in 0700 dir', lambda: os.stat(P('dir700/secret')))
    r('read in 0700 dir', lambda: rd(P('dir700/secret')))
    r('list 0700 dir', lambda: os.listdir(P('dir700')))
    r('rmdir 0700 dir', lambda: os.rmdir(P('dir700')))
    r('unlink in sticky dir', lambda: os.unlink(P('sticky/a-file')))
    r('rename in sticky dir', lambda: os.rename(P('sticky/a-file'), P('sticky/b-name')))
    r('write 0666 file in sticky dir', lambda: opn(P('sticky/a-file'), W))
    r('create in sticky dir', lambda: opn(P('sticky/b-file'), NEW))
    r('chmod', lambda: os.chmod(P('public'), 0o666))
    r('chown to b', lambda: os.chown(P('public'), 2002, -1))
    r('chgrp', lambda: os.chown(P('public'), -1, 2002))
    r('utime explicit', lambda: os.utime(P('public'), (1, 1)))
    r('utime now', lambda: os.utime(P('public'), None))
    r('truncate', lambda: os.truncate(P('public'), 0))
    r('setxattr user.*', lambda: os.setxattr(P('public'), 'user.b', b'x'))
    r('removexattr user.*', lambda: os.removexattr(P('public'), 'user.a'))
    r('getxattr user.*', lambda: os.getxattr(P('public'), 'user.a'))
    r('set access ACL', lambda: os.setxattr(P('public'), 'system.posix_acl_access', ACL))
    r('set default ACL', lambda: os.setxattr(P('dir755'), 'system.posix_acl_default', ACL))
    r('chmod sticky dir', lambda: os.chmod(P('sticky'), 0o777))
    r('read 0640 file, not in group', lambda: rd(P('group')))
    r('read 0640 file, no ACL entry', lambda: rd(P('acl')))
    r('create own file', lambda: opn(P('shared/own'), NEW))
    r('utime explicit, own file', lambda: os.utime(P('shared/own'), (1, 1)))
    r('setxattr trusted.*, own file', lambda: os.setxattr(P('shared/own'), 'trusted.x', b'x'))
elif phase == 'create':
    os.umask(0o022)
    for d in ('shared', 'setgid'):
        opn(P(d + '/b-file'), NEW)
        os.mkdir(P(d + '/b-dir'))
        for n in ('b-file', 'b-dir'):
            st = os.lstat(P(d + '/' + n))
            print('%s/%s\t%d:%d:%o' % (d, n, st.st_uid, st.st_gid, st.st_mode & 0o7777))
elif phase == 'group':
    r('read 0640 file, in group', lambda: rd(P('group')))
elif phase == 'acl':
    r('read 0640 file, named-user ACL', lambda: rd(P('acl')))
"#;

/// Run as root: A reads `dir700/secret`, and B, right after (within the 1 s entry and
/// attribute timeouts of the mount), stats and reads the same path. On a native mount B is
/// refused (it cannot search dir700); a FUSE mount without `default_permissions` answers a
/// cached path from the host's dentry cache without asking the daemon.
const CACHED_TRAVERSAL: &str = r#"
import os, sys, errno
t = os.path.join(sys.argv[1], 't')
def as_user(uid, f):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            f()
            os._exit(0)
        except OSError as e:
            os._exit(e.errno)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 'OK' if code == 0 else errno.errorcode.get(code, str(code))
def rd(p):
    with open(p, 'rb') as f:
        f.read()
p = os.path.join(t, 'dir700/secret')
print('owner reads dir700/secret\t' + as_user(2001, lambda: rd(p)))
print('stat in 0700 dir, just used by its owner\t' + as_user(2002, lambda: os.stat(p)))
print('owner reads dir700/secret again\t' + as_user(2001, lambda: rd(p)))
print('read in 0700 dir, just used by its owner\t' + as_user(2002, lambda: rd(p)))
"#;

/// What a native ext4 mount answers (asserted on the reference too, so that a wrong setup
/// cannot make both sides agree on nonsense).
const EXPECTED: &[(&str, &str)] = &[
    ("read 0600 file", "EACCES"),
    ("open 0644 file for writing", "EACCES"),
    ("open 0644 file for appending", "EACCES"),
    ("open 0644 file O_NOATIME", "EPERM"),
    ("create in 0755 dir", "EACCES"),
    ("mkdir in 0755 dir", "EACCES"),
    ("mkfifo in 0755 dir", "EACCES"),
    ("symlink in 0755 dir", "EACCES"),
    ("unlink in 0755 dir", "EACCES"),
    ("rename out of 0755 dir", "EACCES"),
    ("hard link to 0600 file", "EPERM"),
    ("stat in 0700 dir", "EACCES"),
    ("read in 0700 dir", "EACCES"),
    ("list 0700 dir", "EACCES"),
    ("rmdir 0700 dir", "EACCES"),
    ("unlink in sticky dir", "EPERM"),
    ("rename in sticky dir", "EPERM"),
    ("write 0666 file in sticky dir", "OK"),
    ("create in sticky dir", "OK"),
    ("chmod", "EPERM"),
    ("chown to b", "EPERM"),
    ("chgrp", "EPERM"),
    ("utime explicit", "EPERM"),
    ("utime now", "EACCES"),
    ("truncate", "EACCES"),
    ("setxattr user.*", "EACCES"),
    ("removexattr user.*", "EACCES"),
    ("getxattr user.*", "OK"),
    ("set access ACL", "EPERM"),
    ("set default ACL", "EPERM"),
    ("chmod sticky dir", "EPERM"),
    ("read 0640 file, not in group", "EACCES"),
    ("read 0640 file, no ACL entry", "EACCES"),
    ("create own file", "OK"),
    ("utime explicit, own file", "OK"),
    ("setxattr trusted.*, own file", "EPERM"),
];

/// Runs `probe` until it prints `want` (at most 5 s; each try a fresh process, so nothing
/// is cached in the caller): permission changes made by another user take effect through
/// the mount's 1 s attribute timeout at the latest. Returns what it printed last.
fn poll_probe(probe: impl Fn() -> String, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = probe();
        if got == want || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who checks permissions on the mount: the host kernel as well as the kernel inside the
/// daemon (the default, `default_permissions`), or the kernel inside alone
/// (`no_default_permissions`). Every allow_other case runs with one or both.
#[derive(Clone, Copy, Debug)]
enum Checks {
    HostToo,
    DaemonOnly,
}

/// A populated image served with allow_other by a daemon run as `user` (None: root), and
/// the native reference: the same image (a byte copy) mounted by the host's ext4.
struct Shared {
    img: PathBuf,
    daemon: Daemon,
    native: HostMount,
    /// The lklfuse mount point and the native one.
    m: String,
    n: String,
    who: String,
}

fn allow_other_setup(dir: &Path, user: Option<(u32, u32)>, checks: Checks) -> Shared {
    let img = dir.join("users.img");
    // The image's root belongs to A: A populates it through the mount in both cases.
    make_ext4_owned(&img, 64, A, A);
    if user.is_some() {
        ensure_user_allow_other();
        chown(&img, A, A);
        fs::set_permissions(&img, fs::Permissions::from_mode(0o600)).expect("chmod image");
    }
    let mnt = subdir(dir, "mnt", 0o755, user);
    let opts = match checks {
        Checks::HostToo => ["type=ext4", "allow_other", "default_permissions"],
        Checks::DaemonOnly => ["type=ext4", "allow_other", "no_default_permissions"],
    };
    let start = || {
        match user {
            None => Daemon::start(&img, &mnt, &opts),
            Some((u, g)) => Daemon::start_as(u, g, &img, &mnt, &opts),
        }
        .unwrap_or_else(|e| panic!("daemon ({user:?}) with allow_other: {e}"))
    };
    let m = path_str(&mnt).to_string();

    let d = start();
    let out = py_as(A, A, &[GROUP], POPULATE, &[&m]);
    assert!(out.ok(), "uid {A} populates the mount: {}", out.describe());
    d.stop();
    fsck_clean(Fs::Ext4, &img);

    let ref_img = dir.join("reference.img");
    copy_image(&img, &ref_img);
    let native = HostMount::kernel(&ref_img, &dir.join("native"), "ext4", "")
        .unwrap_or_else(|e| panic!("native mount of the reference: {e}"));
    let n = path_str(&native.dir).to_string();
    // A fresh daemon: nothing of the population left in the host's caches.
    let daemon = start();
    let who = match user {
        None => format!("root daemon, {checks:?}"),
        Some((u, _)) => format!("daemon uid {u}, {checks:?}"),
    };
    Shared {
        img,
        daemon,
        native,
        m,
        n,
        who,
    }
}

/// Prints the table and asserts the lklfuse column equals the native one.
fn assert_same_as_native(who: &str, rows: &[(String, String, String)]) {
    eprintln!("errno table ({who}): operation | lklfuse | native");
    for (k, f, r) in rows {
        eprintln!("  {k:<45} | {f:<10} | {r}");
    }
    let differ: Vec<String> = rows
        .iter()
        .filter(|(_, f, r)| f != r)
        .map(|(k, f, r)| format!("{k}: lklfuse {f}, native {r}"))
        .collect();
    assert!(
        differ.is_empty(),
        "{who}: another user's operations through the allow_other mount differ from a native \
         mount of the same image:\n{}",
        differ.join("\n")
    );
}

/// The allow_other test for a daemon run as `user` (None: root).
fn allow_other_case(dir: &Path, user: Option<(u32, u32)>, checks: Checks) {
    let Shared {
        img,
        daemon: d,
        native,
        m,
        n,
        who,
    } = allow_other_setup(dir, user, checks);
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let both = |phase: &str, groups: &[u32], rows: &mut Vec<(String, String, String)>| {
        let f = table(&py_as(B, B, groups, PROBE, &[&m, phase]), phase);
        let r = table(&py_as(B, B, groups, PROBE, &[&n, phase]), phase);
        assert_eq!(
            f.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            r.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "{phase}: the probe ran different steps"
        );
        for ((k, fv), (_, rv)) in f.into_iter().zip(r) {
            rows.push((k, fv, rv));
        }
    };
    both("deny", &[], &mut rows);
    both("group", &[GROUP], &mut rows);
    both("create", &[], &mut rows);

    // Named-user ACL: granted, then revoked, by the owner (through each mount).
    let acl_path = |root: &str| format!("{root}/t/acl");
    for root in [&m, &n] {
        let out = run_as(
            A,
            A,
            &[],
            "setfacl",
            &["-m", "u:lklfuse-b:r", &acl_path(root)],
        );
        assert!(out.ok(), "setfacl -m as {A} on {root}: {}", out.describe());
    }
    let read_acl = |root: &str| -> String {
        let t = table(&py_as(B, B, &[], PROBE, &[root, "acl"]), "acl");
        t.first().map(|(_, v)| v.clone()).unwrap_or_default()
    };
    rows.push((
        "read 0640 file, named-user ACL".into(),
        poll_probe(|| read_acl(&m), "OK"),
        read_acl(&n),
    ));
    let getfacl = |root: &str| {
        run(&mut command("getfacl", &["-cp", &acl_path(root)]))
            .expect_ok()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join(",")
    };
    rows.push(("getfacl after grant".into(), getfacl(&m), getfacl(&n)));
    for root in [&m, &n] {
        let out = run_as(
            A,
            A,
            &[],
            "setfacl",
            &["-x", "u:lklfuse-b", &acl_path(root)],
        );
        assert!(out.ok(), "setfacl -x as {A} on {root}: {}", out.describe());
    }
    rows.push((
        "read 0640 file, ACL entry removed".into(),
        poll_probe(|| read_acl(&m), "EACCES"),
        read_acl(&n),
    ));

    // The reference itself must say what ext4 says: else the setup is wrong.
    let reference: BTreeMap<&str, &str> = rows
        .iter()
        .map(|(k, _, r)| (k.as_str(), r.as_str()))
        .collect();
    let mut expected: Vec<(&str, String)> =
        EXPECTED.iter().map(|(k, v)| (*k, v.to_string())).collect();
    expected.extend([
        ("read 0640 file, in group", "OK".to_string()),
        ("read 0640 file, named-user ACL", "OK".into()),
        ("read 0640 file, ACL entry removed", "EACCES".into()),
        ("shared/b-file", format!("{B}:{B}:644")),
        ("shared/b-dir", format!("{B}:{B}:755")),
        ("setgid/b-file", format!("{B}:{GROUP}:644")),
        ("setgid/b-dir", format!("{B}:{GROUP}:2755")),
    ]);
    for (k, v) in &expected {
        assert_eq!(
            reference.get(k).copied(),
            Some(v.as_str()),
            "native reference for {k:?}: the test's setup or expectation is wrong"
        );
    }
    assert_same_as_native(&who, &rows);
    d.stop();
    drop(native);
    fsck_clean(Fs::Ext4, &img);
}

#[test]
fn allow_other_root_daemon_matches_native_errnos() {
    fuse_test(FILE, "allow_other_root", LIMIT, |dir| {
        allow_other_case(&dir, None, Checks::HostToo)
    });
}

#[test]
fn allow_other_unprivileged_daemon_matches_native_errnos() {
    fuse_test(FILE, "allow_other_user", LIMIT, |dir| {
        // The daemon's own checks alone: nothing on the host stands in for them.
        allow_other_case(&dir, Some((A, A)), Checks::DaemonOnly)
    });
}

/// Search permission on a directory must hold for every access, also right after its owner
/// used a path below it (the host caches that path's dentry and attributes), whoever
/// checks permissions.
#[test]
fn allow_other_cached_path_keeps_search_permission() {
    fuse_test(FILE, "allow_other_cached", LIMIT, |dir| {
        for checks in [Checks::DaemonOnly, Checks::HostToo] {
            cached_path_case(&dir.join(format!("{checks:?}")), checks);
        }
    });
}

fn cached_path_case(dir: &Path, checks: Checks) {
    fs::create_dir_all(dir).expect("case directory");
    let Shared {
        img,
        daemon: d,
        native,
        m,
        n,
        who,
    } = allow_other_setup(dir, None, checks);
    let cached = |root: &str| table(&py(CACHED_TRAVERSAL, &[root]), "cached traversal");
    let rows: Vec<(String, String, String)> = cached(&m)
        .into_iter()
        .zip(cached(&n))
        .map(|((k, f), (_, r))| (k, f, r))
        .collect();
    for (k, _, r) in &rows {
        let want = if k.starts_with("owner") {
            "OK"
        } else {
            "EACCES"
        };
        assert_eq!(r, want, "native reference for {k:?}");
    }
    assert_same_as_native(&who, &rows);
    d.stop();
    drop(native);
    fsck_clean(Fs::Ext4, &img);
}

// ---------------------------------------------------------------------------------------------
// 4. setuid programs and device nodes

/// An ext4 image made by the host: a set-user-id root copy of `id`, a set-group-id (root)
/// copy, and character devices 1:3 (null) and 1:1 (mem), mode 0666.
fn make_suid_image(img: &Path, dir: &Path) {
    make_ext4_owned(img, 64, 0, 0);
    let host = HostMount::kernel(img, &dir.join("build"), "ext4", "")
        .unwrap_or_else(|e| panic!("native mount to build the image: {e}"));
    let r = path_str(&host.dir);
    fuse::sh_ok(&format!(
        "set -e; cd {r}; cp /usr/bin/id suid-id; chown 0:0 suid-id; chmod 4755 suid-id; \
         cp /usr/bin/id sgid-id; chown 0:0 sgid-id; chmod 2755 sgid-id; \
         mknod null c 1 3; mknod mem c 1 1; chmod 0666 null mem; chmod 0755 ."
    ));
    drop(host);
}

/// `findmnt -n -o OPTIONS` of the mount point, as a set of words.
fn findmnt_options(mnt: &Path) -> BTreeSet<String> {
    run(&mut command(
        "findmnt",
        &["-n", "-o", "OPTIONS", "--mountpoint", path_str(mnt)],
    ))
    .expect_ok()
    .trim()
    .split(',')
    .map(str::to_string)
    .collect()
}

/// Opens each device (read+write, then writes to and reads from it) as `uid`.
const OPEN_DEVICES: &str = r#"
import os, sys, errno
for p in sys.argv[1:]:
    try:
        fd = os.open(p, os.O_RDWR)
        os.write(fd, b'x')
        data = os.read(fd, 10)
        os.close(fd)
        print('OK:%d' % len(data))
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

struct SuidView {
    options: BTreeSet<String>,
    euid: String,
    egid: String,
    devices: Vec<String>,
}

/// What user `uid` sees on the mount: the mount options, the effective ids the set-id
/// programs run with, and what opening the devices does.
fn suid_view(mnt: &Path, uid: u32) -> SuidView {
    let run_id = |prog: &str, flag: &str| {
        let out = run_as(uid, uid, &[], path_str(&mnt.join(prog)), &[flag]);
        assert!(out.ok(), "{prog} {flag} as {uid}: {}", out.describe());
        out.stdout.trim().to_string()
    };
    let null = mnt.join("null");
    let mem = mnt.join("mem");
    let out = py_as(
        uid,
        uid,
        &[],
        OPEN_DEVICES,
        &[path_str(&null), path_str(&mem)],
    );
    assert!(out.ok(), "open devices as {uid}: {}", out.describe());
    SuidView {
        options: findmnt_options(mnt),
        euid: run_id("suid-id", "-u"),
        egid: run_id("sgid-id", "-g"),
        devices: out.stdout.lines().map(str::to_string).collect(),
    }
}

#[test]
fn setuid_and_devices_inert_unless_root_asks() {
    fuse_test(FILE, "suid_dev", LIMIT, |dir| {
        let img = dir.join("suid.img");
        make_suid_image(&img, &dir);
        let mnt = subdir(&dir, "mnt", 0o755, None);

        // Root, defaults (allow_other only so that another user can run the programs).
        let d = Daemon::start(&img, &mnt, &["type=ext4", "allow_other"])
            .unwrap_or_else(|e| panic!("{e}"));
        let v = suid_view(&mnt, A);
        eprintln!(
            "root, defaults: findmnt {:?}; suid-id -u {}; sgid-id -g {}; null, mem: {:?}",
            v.options, v.euid, v.egid, v.devices
        );
        assert!(
            v.options.contains("nosuid") && v.options.contains("nodev"),
            "root daemon, default options: findmnt shows {:?}, expected nosuid and nodev",
            v.options
        );
        assert_eq!(
            v.euid,
            A.to_string(),
            "set-user-id root program as {A} under nosuid"
        );
        assert_eq!(
            v.egid,
            A.to_string(),
            "set-group-id root program as {A} under nosuid"
        );
        assert_eq!(
            v.devices,
            ["EACCES", "EACCES"],
            "opening 1:3 and 1:1 (mode 0666) as {A} under nodev"
        );
        d.stop();

        // Root, asked for suid,dev: the image's bits and devices work as on a native mount
        // of a copy of the image (the reference: the host's own ext4, suid and dev).
        let ref_img = dir.join("reference.img");
        copy_image(&img, &ref_img);
        let native = HostMount::kernel(&ref_img, &dir.join("native"), "ext4", "suid,dev")
            .unwrap_or_else(|e| panic!("native mount of the reference: {e}"));
        let r = suid_view(&native.dir, A);
        drop(native);
        eprintln!(
            "native ext4, suid,dev: suid-id -u {}; sgid-id -g {}; null, mem: {:?}",
            r.euid, r.egid, r.devices
        );
        assert_eq!(
            (r.euid.as_str(), r.egid.as_str()),
            ("0", "0"),
            "native reference: the set-id programs"
        );
        let d = Daemon::start(&img, &mnt, &["type=ext4", "allow_other", "suid", "dev"])
            .unwrap_or_else(|e| panic!("{e}"));
        let v = suid_view(&mnt, A);
        eprintln!(
            "root, -o suid,dev: findmnt {:?}; suid-id -u {}; sgid-id -g {}; null, mem: {:?}",
            v.options, v.euid, v.egid, v.devices
        );
        assert!(
            !v.options.contains("nosuid") && !v.options.contains("nodev"),
            "root daemon with -o suid,dev: findmnt shows {:?}",
            v.options
        );
        assert_eq!(v.euid, "0", "set-user-id root program as {A} with -o suid");
        assert_eq!(v.egid, "0", "set-group-id root program as {A} with -o suid");
        // 1:3 is the host's /dev/null (writes vanish, reads see EOF); 1:1 (/dev/mem) is
        // whatever the host's driver says to an unprivileged opener, as natively.
        assert_eq!(v.devices[0], "OK:0", "opening 1:3 as {A} with -o dev");
        assert_eq!(
            v.devices, r.devices,
            "opening 1:3 and 1:1 as {A} with -o dev, against the native mount"
        );
        d.stop();
        fsck_clean(Fs::Ext4, &img);

        // An unprivileged daemon asking for suid,dev: refused, or mounted nosuid,nodev.
        ensure_user_allow_other();
        let uimg = dir.join("user-suid.img");
        copy_image(&img, &uimg);
        chown(&uimg, A, A);
        let umnt = subdir(&dir, "umnt", 0o755, Some((A, A)));
        let args: Vec<String> = [
            "-f",
            "-o",
            "type=ext4,allow_other,suid,dev",
            path_str(&uimg),
            path_str(&umnt),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match Daemon::spawn_foreground(&uimg, &umnt, &args, Some((A, A))) {
            Ok(d) => {
                let v = suid_view(&umnt, B);
                eprintln!(
                    "uid {A}, -o suid,dev: mounted; findmnt {:?}; suid-id -u {}; sgid-id -g {}; \
                     null, mem: {:?}; daemon output: {}",
                    v.options,
                    v.euid,
                    v.egid,
                    v.devices,
                    d.log_text().trim()
                );
                assert!(
                    v.options.contains("nosuid") && v.options.contains("nodev"),
                    "unprivileged daemon with -o suid,dev: findmnt shows {:?}",
                    v.options
                );
                assert_eq!(v.euid, B.to_string(), "suid program as {B}");
                assert_eq!(v.egid, B.to_string(), "sgid program as {B}");
                assert_eq!(v.devices, ["EACCES", "EACCES"], "devices as {B}");
                let log = d.log_text();
                assert!(
                    log.contains("option suid,dev needs root"),
                    "no warning that suid,dev were not honoured:\n{log}"
                );
                d.stop();
            }
            Err(e) => {
                // Refused: it must say so in one line. Run it again to see exactly what it
                // printed (the foreground start above kept its output in the log).
                eprintln!("uid {A}, -o suid,dev: refused: {e}");
                let r = run_binary(&umnt, &args, Some((A, A)), Duration::from_secs(60))
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_one_line_error("unprivileged -o suid,dev", &r.out, &umnt);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 5. A hostile image: no escape to host paths

/// The name of an entry in `evil/` before the image is patched: each `#` becomes `/`, so
/// the directory entry's name is `../../canary/pwned` (a name no kernel would create).
const SLASHED_PLACEHOLDER: &[u8] = b"..#..#canary#pwned";
const SLASHED: &[u8] = b"../../canary/pwned";

/// Symlinks in the hostile image: name → target.
const LINKS: &[(&str, &str)] = &[
    ("shadow", "/etc/shadow"),
    ("root-home", "/root"),
    ("slash", "/"),
    ("untidy", "x/./y//z/"),
    ("dev-fuse", "/dev/fuse"),
    ("proc-root", "/proc/self/root/etc/passwd"),
    ("passwd-up", "../../../../etc/passwd"),
    ("deep/a/b/up", "../../../../../../../../../etc/passwd"),
    ("loop1", "loop2"),
    ("loop2", "loop1"),
    ("self", "self"),
];

/// Regular files with odd names: name → content.
const ODD_FILES: &[(&str, &str)] = &[
    ("name\nwith newline", "newline"),
    ("back\\slash\\name", "backslash"),
    ("etc/passwd", "not the host passwd"),
    ("etc/shadow", "not the host shadow"),
    ("...", "three dots"),
    ("-rf", "dash"),
    ("canary/pwned", "inside the image"),
];

/// Builds a hostile image natively. `slashed`: only `evil/` (with `ok` and the placeholder,
/// then patched into a name with slashes: ext4 without metadata checksums, so the patched
/// directory block is still accepted) and `canary/pwned`, which that name would reach if
/// it were resolved; else the symlinks and odd names.
fn make_hostile_image(img: &Path, dir: &Path, slashed: bool) {
    fuse::make_ext4_owned(img, 64, 0, 0);
    if slashed {
        run(&mut command(
            "tune2fs",
            &["-O", "^metadata_csum", path_str(img)],
        ))
        .expect_ok();
    }
    {
        let build = dir.join(if slashed { "build-slashed" } else { "build" });
        let host = HostMount::kernel(img, &build, "ext4", "")
            .unwrap_or_else(|e| panic!("native mount to build the image: {e}"));
        let r = &host.dir;
        if slashed {
            fs::create_dir_all(r.join("evil")).expect("mkdir evil");
            fs::create_dir_all(r.join("canary")).expect("mkdir canary");
            fs::write(r.join("canary/pwned"), "inside the image").expect("write canary");
            fs::write(r.join("evil/ok"), "ok").expect("write evil/ok");
            let name = std::str::from_utf8(SLASHED_PLACEHOLDER).expect("ASCII");
            fs::write(r.join("evil").join(name), "escaped").expect("write placeholder");
        } else {
            for d in ["deep/a/b", "etc", "canary"] {
                fs::create_dir_all(r.join(d)).expect("mkdir in image");
            }
            for (name, content) in ODD_FILES {
                fs::write(r.join(name), content).expect("write odd file");
            }
            for (name, target) in LINKS {
                std::os::unix::fs::symlink(target, r.join(name)).expect("symlink in image");
            }
        }
        fuse::sh_ok(&format!("chmod -R a+rX {}", fuse::q(r)));
    }
    if !slashed {
        return;
    }
    // Patch every copy of the placeholder (the directory block, maybe the journal's copy).
    let bytes = fs::read(img).expect("read image");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(img)
        .expect("open image to patch");
    let mut patched = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..]
        .windows(SLASHED_PLACEHOLDER.len())
        .position(|w| w == SLASHED_PLACEHOLDER)
    {
        let at = i + at;
        std::os::unix::fs::FileExt::write_all_at(&f, SLASHED, at as u64).expect("patch image");
        patched += 1;
        i = at + SLASHED.len();
    }
    assert!(patched >= 1, "the placeholder name is not in the image");
}

/// Run as A: walks the mount (no symlink followed by the walk), printing one line per
/// entry: kind, relative name (repr), and for symlinks the target and what opening through
/// it does (the host kernel follows it, not the daemon), for files their content.
const WALK: &str = r#"
import os, sys, errno
root = sys.argv[1]
def e(x):
    return errno.errorcode.get(x.errno, str(x.errno))
def walk(d):
    try:
        names = sorted(os.listdir(d))
    except OSError as x:
        print('LISTERR\t%r\t%s' % (os.path.relpath(d, root), e(x)))
        return
    for n in names:
        p = os.path.join(d, n)
        rel = os.path.relpath(p, root)
        try:
            st = os.lstat(p)
        except OSError as x:
            print('STATERR\t%r\t%s' % (rel, e(x)))
            continue
        if os.path.islink(p):
            try:
                os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
                follow = 'OK'
            except OSError as x:
                follow = e(x)
            print('LINK\t%r\t%r\t%s' % (rel, os.readlink(p), follow))
        elif os.path.isdir(p):
            print('DIR\t%r' % rel)
            walk(p)
        else:
            try:
                with open(p, 'rb') as f:
                    data = f.read()
                print('FILE\t%r\t%r' % (rel, data.decode()))
            except OSError as x:
                print('FILEERR\t%r\t%s' % (rel, e(x)))
walk(root)
"#;

/// The syscalls that take a path: their first string argument is one.
const PATH_SYSCALLS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "stat",
    "lstat",
    "newfstatat",
    "fstatat64",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "execve",
    "execveat",
    "chdir",
    "chroot",
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "truncate",
    "mknod",
    "mknodat",
    "getxattr",
    "lgetxattr",
    "setxattr",
    "lsetxattr",
    "listxattr",
    "llistxattr",
    "removexattr",
    "lremovexattr",
    "statfs",
    "mount",
    "umount2",
    "name_to_handle_at",
    "inotify_add_watch",
    "fanotify_mark",
    "swapon",
    "quotactl",
    "acct",
    "pivot_root",
    "uselib",
    "mount_setattr",
    "open_tree",
    "move_mount",
    "fsconfig",
];

/// The first C string (strace's quoting) in `args`, unescaped.
fn first_string(args: &str) -> Option<String> {
    let start = args.find('"')? + 1;
    let mut out = String::new();
    let mut chars = args[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// (syscall, path) of every path-taking call in an `strace -f -o` log.
fn traced_paths(log: &str) -> (Vec<(String, String)>, BTreeMap<String, usize>) {
    let mut paths = Vec::new();
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        // "PID name(args) = r", "PID name(args <unfinished ...>", "PID <... name resumed>".
        let rest = line
            .split_once(' ')
            .map(|(_, r)| r.trim_start())
            .unwrap_or(line);
        if rest.starts_with("<...") || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        *counts.entry(name.to_string()).or_insert(0) += 1;
        if PATH_SYSCALLS.contains(&name) {
            if let Some(p) = first_string(args) {
                paths.push((name.to_string(), p));
            }
        }
    }
    (paths, counts)
}

/// Host paths the daemon may touch while serving: its image, /dev/fuse, and per-process
/// procfs files (a caller's groups in /proc/PID/status, its own threads).
fn allowed_path(p: &str, img: &Path) -> bool {
    if p.is_empty() || p == path_str(img) || p == "/dev/fuse" {
        // "": an fd-relative call (AT_EMPTY_PATH) on a descriptor the daemon has.
        return true;
    }
    let Some(rest) = p.strip_prefix("/proc/") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let pid_like = |s: &str| s == "self" || s == "thread-self" || s.parse::<u32>().is_ok();
    let leaf_ok = |s: &str| matches!(s, "status" | "stat" | "statm" | "fd" | "task");
    match parts.as_slice() {
        [pid, leaf] => pid_like(pid) && leaf_ok(leaf),
        [pid, "task", tid, leaf] => pid_like(pid) && tid.parse::<u32>().is_ok() && leaf_ok(leaf),
        _ => false,
    }
}

/// Whether every thread of `pid` is traced.
fn all_threads_traced(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut n = 0;
    for t in tasks.flatten() {
        let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let tracer = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .map(|v| v.trim() != "0")
            .unwrap_or(false);
        if !tracer {
            return false;
        }
        n += 1;
    }
    n > 0
}

/// Names, kinds, sizes, modes and mtimes of everything below `dir` (nothing followed).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, u64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read canary").flatten() {
            let md = fs::symlink_metadata(e.path()).expect("lstat canary");
            if md.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), (md.mode(), md.len(), md.mtime()));
        }
    }
    out.insert(dir.to_path_buf(), {
        let md = fs::symlink_metadata(dir).expect("lstat canary dir");
        (md.mode(), md.len(), md.mtime())
    });
    out
}

/// Lists an archive's members (python's tarfile), one `repr(name)<TAB>type<TAB>repr(link)`
/// line each, as far as it can be read.
const TAR_LIST: &str =
    "import sys, tarfile\ntry:\n    for m in tarfile.open(sys.argv[1]):\n        \
                        print(repr(m.name) + '\\t' + m.type.decode() + '\\t' + repr(m.linkname))\n\
                        except Exception as e:\n    print('ERROR\\t' + repr(e))";

/// Asserts no member of the listing leaves the archive's directory (absolute or `..`).
fn assert_members_stay_inside(listing: &str, what: &str) {
    for l in listing.lines().filter(|l| !l.starts_with("ERROR")) {
        let name = l.split('\t').next().unwrap_or_default();
        let bare = name.trim_matches('\'').trim_matches('"');
        assert!(
            !bare.starts_with('/') && !bare.split('/').any(|c| c == ".."),
            "{what}: member {name} leaves the archive's directory"
        );
    }
}

/// Runs cpfromfs -a and fs2tar on `img` into `dest/out` and `dest/out.tar`, next to
/// `dest/canary`; asserts the canary, /etc/passwd and /etc/shadow untouched and nothing
/// else created in `dest`. Returns both runs.
fn tools_into(img: &Path, dest: &Path, sources: &[&str]) -> (fuse::Out, fuse::Out) {
    let canary = subdir(dest, "canary", 0o755, None);
    fs::write(canary.join("keep"), "canary").expect("write canary");
    let watched = ["/etc/passwd", "/etc/shadow"].map(|p| (p, fs::metadata(p).ok()));
    let before = snapshot(&canary);
    let out_dir = dest.join("out");
    let mut args = vec!["-q", "-a", "-i", path_str(img)];
    if sources.len() > 1 {
        fs::create_dir(&out_dir).expect("mkdir out");
    }
    args.extend_from_slice(sources);
    args.push(path_str(&out_dir));
    let cp = run(&mut command(CPFROMFS, &args));
    let tar = dest.join("out.tar");
    let t = run(&mut command(
        FS2TAR,
        &["-q", "-i", path_str(img), "-f", path_str(&tar)],
    ));
    assert_eq!(
        snapshot(&canary),
        before,
        "cpfromfs or fs2tar changed the canary directory next to the destination"
    );
    let top: BTreeSet<String> = fs::read_dir(dest)
        .expect("list dest")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let allowed: BTreeSet<String> = ["canary", "out", "out.tar"].map(String::from).into();
    assert!(
        top.is_subset(&allowed),
        "cpfromfs/fs2tar created something next to their destination: {top:?}"
    );
    for (p, md) in &watched {
        let now = fs::metadata(p).ok();
        assert_eq!(
            now.as_ref().map(|m| (m.len(), m.mtime(), m.ino())),
            md.as_ref().map(|m| (m.len(), m.mtime(), m.ino())),
            "{p} changed"
        );
    }
    (cp, t)
}

#[test]
fn hostile_image_never_reaches_host_paths() {
    fuse_test(FILE, "no_escape", LIMIT, |dir| {
        let img = dir.join("hostile.img");
        make_hostile_image(&img, &dir, false);
        let slashed = dir.join("slashed.img");
        make_hostile_image(&slashed, &dir, true);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        let d = Daemon::start(&img, &mnt, &["type=ext4", "ro", "allow_other"])
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = d.pid().expect("daemon pid");

        // Trace the serving daemon (every thread) while A walks the whole mount.
        let trace = dir.join("daemon.strace");
        let pid_s = pid.to_string();
        let mut strace = Spawned::new(command(
            "strace",
            &[
                "-f",
                "-qq",
                "-e",
                "trace=%file,%desc",
                "-o",
                path_str(&trace),
                "-p",
                &pid_s,
            ],
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !all_threads_traced(pid) {
            assert!(
                Instant::now() < deadline,
                "strace did not attach to every thread of {pid} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = py_as(A, A, &[], WALK, &[path_str(&mnt)]);
        assert!(out.ok(), "walk as {A}: {}", out.describe());
        // SIGINT: strace detaches from every thread and exits.
        // SAFETY: kill has no memory-safety preconditions; strace is our child.
        unsafe { libc::kill(strace.pid() as i32, libc::SIGINT) };
        let (status, _, err) = strace
            .finish(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            fuse::process_alive(pid),
            "the daemon died under strace ({status}): {err}\n{}",
            d.log_text()
        );

        let walk: Vec<&str> = out.stdout.lines().collect();
        eprintln!("walk as {A}:\n  {}", walk.join("\n  "));
        for (name, target) in LINKS {
            let want = format!("LINK\t{name:?}\t{target:?}\t").replace('"', "'");
            assert!(
                walk.iter().any(|l| l.starts_with(&want)),
                "symlink {name} -> {target} not listed as such: {want:?}"
            );
        }
        for (name, content) in ODD_FILES {
            // Python's repr of these strings is Rust's Debug with single quotes.
            let want = format!("FILE\t{name:?}\t{content:?}").replace('"', "'");
            assert!(
                walk.contains(&want.as_str()),
                "file {name:?} not listed with its content: {want:?}"
            );
        }
        for l in ["loop1", "loop2", "self"] {
            assert!(
                walk.iter()
                    .any(|w| w.starts_with(&format!("LINK\t'{l}'")) && w.ends_with("ELOOP")),
                "opening through {l} must end in ELOOP"
            );
        }

        let log = fs::read_to_string(&trace).expect("strace log");
        let (paths, counts) = traced_paths(&log);
        let distinct: BTreeSet<String> = paths.iter().map(|(c, p)| format!("{c} {p:?}")).collect();
        eprintln!(
            "daemon syscalls while serving the walk: {counts:?}\nhost paths it named: \
             {distinct:?}"
        );
        assert!(
            counts
                .keys()
                .any(|k| k == "read" || k == "readv" || k.starts_with("pread")),
            "the trace saw no reads at all (strace attached to nothing?): {counts:?}"
        );
        let bad: Vec<&(String, String)> = paths
            .iter()
            .filter(|(_, p)| !allowed_path(p, &img))
            .collect();
        assert!(
            bad.is_empty(),
            "the daemon named host paths other than its image, /dev/fuse and procfs: {bad:?}"
        );
        d.stop();

        // cpfromfs -a and fs2tar: nothing outside the destination, symlinks stay symlinks.
        let dest = subdir(&dir, "dest", 0o755, None);
        let (cp, t) = tools_into(&img, &dest, &["/"]);
        assert!(cp.ok(), "cpfromfs -a: {}", cp.describe());
        assert!(t.ok(), "fs2tar: {}", t.describe());
        let out_dir = dest.join("out");
        for (name, target) in LINKS {
            let p = out_dir.join(name);
            let md = fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("cpfromfs: {}: {e}", p.display()));
            assert!(
                md.file_type().is_symlink(),
                "cpfromfs: {name} is not a symlink"
            );
            assert_eq!(
                fs::read_link(&p).expect("readlink").to_string_lossy(),
                *target,
                "cpfromfs: {name}'s target"
            );
        }
        for (name, content) in ODD_FILES {
            let p = out_dir.join(name);
            let md = fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("cpfromfs: {}: {e}", p.display()));
            assert!(md.is_file(), "cpfromfs: {name:?} is not a regular file");
            assert_eq!(
                fs::read_to_string(&p).expect("read copied file"),
                *content,
                "cpfromfs: {name:?}"
            );
        }
        let listing = py(TAR_LIST, &[path_str(&dest.join("out.tar"))]).expect_ok();
        assert!(!listing.contains("ERROR"), "fs2tar's archive: {listing}");
        assert_members_stay_inside(&listing, "fs2tar");
        // (Their targets, byte for byte: fs2tar_keeps_symlink_targets_verbatim.)
        // The entry whose name has slashes: never resolved, never written anywhere.
        let smnt = subdir(&dir, "smnt", 0o755, None);
        let d =
            Daemon::start(&slashed, &smnt, &["type=ext4", "ro"]).unwrap_or_else(|e| panic!("{e}"));
        let listed = fs::read_dir(smnt.join("evil")).map(|rd| {
            rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()
        });
        eprintln!("slashed name: listing evil/ through the mount: {listed:?}");
        match &listed {
            Ok(Ok(names)) => assert!(
                !names.iter().any(|n| n.contains('/')),
                "a name with a slash reached the host: {names:?}"
            ),
            Ok(Err(e)) | Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::EIO),
                "listing a directory with a corrupt name: {e}"
            ),
        }
        d.stop();
        let sdest = subdir(&dir, "sdest", 0o755, None);
        let (cp, t) = tools_into(&slashed, &sdest, &["/"]);
        eprintln!(
            "slashed name: cpfromfs -a exit {:?}: {}; fs2tar exit {:?}: {}",
            cp.code(),
            cp.stderr.trim(),
            t.code(),
            t.stderr.trim()
        );
        assert!(
            !sdest.join("out/canary/pwned").exists()
                || fs::read_to_string(sdest.join("out/canary/pwned"))
                    .ok()
                    .as_deref()
                    == Some("inside the image"),
            "cpfromfs wrote the slashed entry's content over canary/pwned"
        );
        if sdest.join("out.tar").exists() {
            let listing = py(TAR_LIST, &[path_str(&sdest.join("out.tar"))]).expect_ok();
            eprintln!("slashed name: fs2tar's archive: {listing:?}");
            assert_members_stay_inside(&listing, "fs2tar (slashed name)");
        }
    });
}

/// fs2tar stores each symlink of the hostile image as a symlink with exactly its target
/// (`/`, `x/./y//z/` included: a target is a string, not a path to tidy up).
#[test]
fn fs2tar_keeps_symlink_targets_verbatim() {
    fuse_test(FILE, "tar_links", LIMIT, |dir| {
        let img = dir.join("hostile.img");
        make_hostile_image(&img, &dir, false);
        let tar = dir.join("out.tar");
        let t = run(&mut command(
            FS2TAR,
            &["-q", "-i", path_str(&img), "-f", path_str(&tar)],
        ));
        assert!(t.ok(), "fs2tar: {}", t.describe());
        let listing = py(TAR_LIST, &[path_str(&tar)]).expect_ok();
        let members: Vec<String> = listing
            .lines()
            .map(|l| {
                l.trim_start_matches('\'')
                    .trim_start_matches("./")
                    .to_string()
            })
            .collect();
        let mut tar_links = Vec::new();
        for (name, target) in LINKS {
            let want = format!("{name:?}\t2\t{target:?}").replace('"', "'");
            let want = want.trim_start_matches('\'');
            if !members.iter().any(|m| m == want) {
                let got: Vec<&String> = members
                    .iter()
                    .filter(|m| m.starts_with(&format!("{name}'")))
                    .collect();
                tar_links.push(format!("{name} -> {target:?}: archive has {got:?}"));
            }
        }
        assert!(
            tar_links.is_empty(),
            "fs2tar: symlinks missing, not symlinks, or with changed targets:\n{}",
            tar_links.join("\n")
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Capabilities

/// Capability sets and ids of every thread of `pid`: (tid, field → value).
fn thread_status(pid: u32) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .expect("daemon tasks")
        .flatten()
    {
        let Ok(status) = fs::read_to_string(t.path().join("status")) else {
            continue; // a thread that just ended
        };
        let fields = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| {
                k.starts_with("Cap") || matches!(*k, "Uid" | "Gid" | "NoNewPrivs" | "Name")
            })
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        out.push((t.file_name().to_string_lossy().into_owned(), fields));
    }
    out
}

fn cap_mask(fields: &BTreeMap<String, String>, key: &str) -> u64 {
    let v = fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in status"));
    u64::from_str_radix(v, 16).unwrap_or_else(|_| panic!("{key}: {v}"))
}

const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SETUID: u32 = 7;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// Every thread of a root daemon: uid 0, only CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH
/// effective and permitted, nothing else in the bounding set, none inheritable or ambient.
fn assert_root_daemon_caps(pid: u32, what: &str) {
    let kept = (1u64 << CAP_SYS_ADMIN) | (1u64 << CAP_DAC_READ_SEARCH);
    let threads = thread_status(pid);
    assert!(
        threads.len() > 1,
        "{what}: only {} thread(s)",
        threads.len()
    );
    let mut problems = Vec::new();
    for (tid, f) in &threads {
        let name = f.get("Name").cloned().unwrap_or_default();
        let (eff, prm, bnd) = (
            cap_mask(f, "CapEff"),
            cap_mask(f, "CapPrm"),
            cap_mask(f, "CapBnd"),
        );
        let (inh, amb) = (cap_mask(f, "CapInh"), cap_mask(f, "CapAmb"));
        if eff != kept || prm != kept || bnd & !kept != 0 || inh != 0 || amb != 0 {
            problems.push(format!(
                "thread {tid} ({name}): CapEff {eff:016x} CapPrm {prm:016x} CapBnd {bnd:016x} \
                 CapInh {inh:x} CapAmb {amb:x}"
            ));
        }
        for (cap, cname) in [
            (CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"),
            (CAP_CHOWN, "CAP_CHOWN"),
            (CAP_SETUID, "CAP_SETUID"),
            (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        ] {
            if eff & (1 << cap) != 0 {
                problems.push(format!("thread {tid} ({name}) has {cname}"));
            }
        }
        let uid = f.get("Uid").cloned().unwrap_or_default();
        if uid.split_whitespace().any(|u| u != "0") {
            problems.push(format!(
                "thread {tid} ({name}): Uid {uid} (expected root's)"
            ));
        }
    }
    eprintln!(
        "{what}: {} threads, e.g. {:?}",
        threads.len(),
        threads.first().map(|(_, f)| f)
    );
    assert!(
        problems.is_empty(),
        "{what}: capabilities beyond CAP_SYS_ADMIN + CAP_DAC_READ_SEARCH:\n{}",
        problems.join("\n")
    );
}

/// Makes the daemon start all its FUSE worker threads: parallel requests.
fn exercise(mnt: &Path, uid: Option<u32>) {
    let script = "import os, sys, threading\nd = sys.argv[1]\n\
                  def w(i):\n    p = os.path.join(d, 'f%d' % i)\n    \
                  open(p, 'w').write('x' * 100000)\n    open(p).read()\n    os.stat(p)\n\
                  ts = [threading.Thread(target=w, args=(i,)) for i in range(8)]\n\
                  [t.start() for t in ts]\n[t.join() for t in ts]\nprint('ok')";
    let m = path_str(mnt);
    let out = match uid {
        None => py(script, &[m]),
        Some(u) => py_as(u, u, &[], script, &[m]),
    };
    assert!(out.ok(), "work through the mount: {}", out.describe());
}

#[test]
fn root_daemon_keeps_only_mount_capabilities() {
    fuse_test(FILE, "caps_root", LIMIT, |dir| {
        let img = dir.join("caps.img");
        make_ext4_owned(&img, 64, 0, 0);
        let mnt = subdir(&dir, "mnt", 0o755, None);

        // Foreground.
        let mut d = Daemon::start(&img, &mnt, &["type=ext4"]).unwrap_or_else(|e| panic!("{e}"));
        let pid = d.pid().expect("daemon pid");
        exercise(&mnt, None);
        // Inside the image root is still root: chown works (the in-process kernel's
        // capabilities, not the host's).
        let f = mnt.join("f0");
        fs::write(&f, "owned").expect("write as root");
        chown(&f, B, GROUP);
        let md = fuse::lstat(&f);
        assert_eq!(
            (md.uid(), md.gid()),
            (B, GROUP),
            "root's chown through the mount"
        );
        assert_root_daemon_caps(pid, "root daemon (-f)");
        let nnp: Vec<String> = thread_status(pid)
            .iter()
            .filter(|(_, f)| f.get("NoNewPrivs").map(String::as_str) != Some("1"))
            .map(|(t, _)| t.clone())
            .collect();
        assert!(nnp.is_empty(), "threads without no_new_privs: {nnp:?}");
        // The kept capabilities suffice to unmount on a signal.
        d.stop_with_signal(libc::SIGTERM)
            .unwrap_or_else(|e| panic!("SIGTERM: {e}"));

        // Background (daemonized child).
        let d = Daemon::background(&img, &mnt, &["type=ext4"]).unwrap_or_else(|e| panic!("{e}"));
        let pid = d.pid().expect("background daemon pid");
        exercise(&mnt, None);
        assert_root_daemon_caps(pid, "root daemon (background)");
        d.stop();
        fsck_clean(Fs::Ext4, &img);
    });
}

#[test]
fn unprivileged_daemon_has_no_capabilities() {
    fuse_test(FILE, "caps_user", LIMIT, |dir| {
        let img = dir.join("caps-user.img");
        make_ext4_owned(&img, 64, A, A);
        chown(&img, A, A);
        let mnt = subdir(&dir, "mnt", 0o755, Some((A, A)));
        let d =
            Daemon::start_as(A, A, &img, &mnt, &["type=ext4"]).unwrap_or_else(|e| panic!("{e}"));
        let pid = d.pid().expect("daemon pid");
        exercise(&mnt, Some(A));
        let threads = thread_status(pid);
        assert!(threads.len() > 1, "only {} thread(s)", threads.len());
        let mut problems = Vec::new();
        for (tid, f) in &threads {
            // The bounding set stays full: an unprivileged process cannot shrink it, and it
            // grants nothing by itself.
            for key in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
                if cap_mask(f, key) != 0 {
                    problems.push(format!("thread {tid}: {key} {}", f[key]));
                }
            }
            let uid = f.get("Uid").cloned().unwrap_or_default();
            if uid.split_whitespace().any(|u| u != A.to_string()) {
                problems.push(format!("thread {tid}: Uid {uid}"));
            }
        }
        eprintln!(
            "daemon uid {A}: {} threads, e.g. {:?}",
            threads.len(),
            threads.first().map(|(_, f)| f)
        );
        assert!(
            problems.is_empty(),
            "unprivileged daemon: {}",
            problems.join("\n")
        );
        d.stop();
        fsck_clean(Fs::Ext4, &img);
    });
}

/// A write by a user without CAP_FSETID clears the set-user-id and set-group-id bits, as on
/// a native mount, both when the host mount ignores them (nosuid: the kernel inside the
/// daemon clears them, the host learns it when its attributes expire) and when it honours
/// them (suid: the host clears them before writing).
#[test]
fn writes_by_other_users_clear_setuid_bits() {
    fuse_test(FILE, "killpriv", LIMIT, |dir| {
        let img = dir.join("killpriv.img");
        make_ext4_owned(&img, 64, 0, 0);
        let mnt = subdir(&dir, "mnt", 0o755, None);
        for opts in [
            &["type=ext4", "allow_other"][..],
            &["type=ext4", "allow_other", "suid"],
        ] {
            let d = Daemon::start(&img, &mnt, opts).unwrap_or_else(|e| panic!("{e}"));
            let f = mnt.join(format!("prog-{}", opts.len()));
            fs::write(&f, b"#!/bin/sh\n").expect("create");
            chown(&f, A, A);
            fs::set_permissions(&f, fs::Permissions::from_mode(0o6775)).expect("chmod");
            let out = fuse::sh_as(A, A, &[], &format!("echo more >> {}", fuse::q(&f)));
            assert!(out.ok(), "{opts:?}: append as {A}: {}", out.describe());
            let deadline = Instant::now() + Duration::from_secs(5);
            let mode = loop {
                let mode = fs::metadata(&f).expect("stat").mode() & 0o7777;
                if mode & 0o6000 == 0 || Instant::now() >= deadline {
                    break mode;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert_eq!(mode, 0o775, "{opts:?}: mode after a write by the owner");
            d.stop();
        }
        fsck_clean(Fs::Ext4, &img);
    });
}
