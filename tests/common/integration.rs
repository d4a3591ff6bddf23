//! Support for the system-integration tests (`tests/integration_*.rs`): reading the
//! shipped unit files and running their Exec lines as systemd would, a fake
//! `NOTIFY_SOCKET`, and a guard for a process started from a unit line.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::fuse::{self, command, command_as, lazy_unmount, path_str, BIN};

/// The source tree.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A unit file: `(section, key) -> values` in file order.
pub struct Unit {
    pub entries: Vec<(String, String, String)>,
}

impl Unit {
    #[track_caller]
    pub fn load(path: &Path) -> Unit {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
            entries.push((section.clone(), key.trim().into(), value.trim().into()));
        }
        Unit { entries }
    }

    pub fn all(&self, section: &str, key: &str) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.clone())
            .collect()
    }

    #[track_caller]
    pub fn one(&self, section: &str, key: &str) -> String {
        let all = self.all(section, key);
        assert_eq!(all.len(), 1, "[{section}] {key}= should appear once");
        all[0].clone()
    }
}

/// One Exec line made ready to run: systemd's `-` prefix (failure ignored) and the words.
#[derive(Debug, Clone)]
pub struct ExecLine {
    pub ignore_failure: bool,
    pub argv: Vec<String>,
}

/// Expands an Exec line as systemd does for the features our units use: `%x` specifiers
/// from `specifiers`, `${VAR}` (one word) and `$VAR` (split on blanks) from `env`, and the
/// `-` prefix. Words are separated by blanks (our units quote nothing).
#[track_caller]
pub fn expand(line: &str, specifiers: &[(char, &str)], env: &BTreeMap<String, String>) -> ExecLine {
    let (ignore_failure, line) = match line.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    assert!(
        !line.contains('"') && !line.contains('\''),
        "quoting in Exec lines is not handled here: {line}"
    );
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        if let Some(var) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            argv.push(env.get(var).cloned().unwrap_or_default());
            continue;
        }
        if let Some(var) = word.strip_prefix('$') {
            if let Some(v) = env.get(var) {
                argv.extend(v.split_whitespace().map(String::from));
            }
            continue;
        }
        let mut out = String::new();
        let mut chars = word.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let spec = chars.next().expect("% at the end of a word");
            if spec == '%' {
                out.push('%');
                continue;
            }
            let value = specifiers
                .iter()
                .find(|(s, _)| *s == spec)
                .unwrap_or_else(|| panic!("specifier %{spec} in {line:?} not provided"))
                .1;
            out.push_str(value);
        }
        argv.push(out);
    }
    ExecLine {
        ignore_failure,
        argv,
    }
}

/// `KEY=VALUE` lines of an environment file.
pub fn read_env_file(path: &Path, env: &mut BTreeMap<String, String>) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            env.insert(k.trim().into(), v.trim().into());
        }
    }
}

/// `systemd-escape ARGS...`, trimmed.
#[track_caller]
pub fn systemd_escape(args: &[&str]) -> String {
    fuse::run(&mut command("systemd-escape", args))
        .expect_ok()
        .trim()
        .to_string()
}

/// A datagram socket standing in for systemd's notification socket, usable by every user.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: UnixDatagram,
    /// Every message received so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    #[track_caller]
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let _ = fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod socket");
        NotifySocket {
            path,
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `limit`) for a datagram holding the line `want`.
    pub fn wait_for(&mut self, want: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        if self.seen.iter().any(|m| m.lines().any(|l| l == want)) {
            return Ok(());
        }
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no {want} within {limit:?}; received: {:?}",
                    self.seen
                ));
            }
            self.socket
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .expect("set timeout");
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                self.seen.push(msg);
                if hit {
                    return Ok(());
                }
            }
        }
    }
}

/// A long-running process started from a unit's ExecStart, its output in `log`. Dropping
/// it kills its process group and lazily unmounts `mnt`.
pub struct UnitProcess {
    child: Child,
    exited: Option<ExitStatus>,
    pub log: PathBuf,
    pub mnt: PathBuf,
}

impl UnitProcess {
    /// Runs `argv` (as `user` when given) with the extra `env`, stdin from /dev/null.
    #[track_caller]
    pub fn spawn(
        argv: &[String],
        user: Option<(u32, u32)>,
        env: &[(&str, &str)],
        log: &Path,
        mnt: &Path,
    ) -> UnitProcess {
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let mut cmd = match user {
            None => command(&argv[0], &args),
            Some((uid, gid)) => command_as(uid, gid, &[], &argv[0], &args),
        };
        let out = fs::File::create(log).expect("create log");
        let err = out.try_clone().expect("dup log");
        cmd.envs(env.iter().copied())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        UnitProcess {
            child,
            exited: None,
            log: log.to_path_buf(),
            mnt: mnt.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the process (what systemd's KillMode=mixed does first).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// The exit status, waiting at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not exit within {limit:?}; output:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for UnitProcess {
    fn drop(&mut self) {
        if self.exited.is_none() && self.child.try_wait().ok().flatten().is_none() {
            lazy_unmount(&self.mnt);
            if self.wait(Duration::from_secs(10)).is_err() {
                kill_group(self.child.id());
                let _ = self.child.wait();
            }
        }
        lazy_unmount(&self.mnt);
    }
}

/// Runs a short Exec line (ExecStartPre/ExecStopPost, installed paths mapped to the tree)
/// to completion; panics when it fails and its failure is not ignored.
#[track_caller]
pub fn run_exec(line: &ExecLine, user: Option<(u32, u32)>, env: &[(&str, &str)]) -> fuse::Out {
    let program = installed_to_built(&line.argv[0]);
    let args: Vec<&str> = line.argv[1..].iter().map(String::as_str).collect();
    let mut cmd = match user {
        None => command(&program, &args),
        Some((uid, gid)) => command_as(uid, gid, &[], &program, &args),
    };
    cmd.envs(env.iter().copied());
    let out = fuse::run(&mut cmd);
    assert!(
        out.ok() || line.ignore_failure,
        "{:?} failed: {}",
        line.argv,
        out.describe()
    );
    out
}

/// The lklfuse binary under test where a unit names the installed one.
pub fn installed_to_built(word: &str) -> String {
    word.replace("/usr/bin/lklfuse", BIN).replace(
        "/usr/lib/lklfuse/lklfuse-usb-mount",
        path_str(&repo().join("udev/lklfuse-usb-mount")),
    )
}

fn kill_group(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions; the group is one we started.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}
