//! The command line: `lklfuse [-f] [-d] [-s] [-o OPTION[,OPTION...]]... IMAGE MOUNTPOINT`.
//!
//! Flags and positionals may come in any order, so both spellings work:
//! `lklfuse -o type=ext4 disk.img /mnt` (what people type) and
//! `lklfuse disk.img /mnt -o rw,nosuid,nodev,type=ext4` (what `mount.fuse3` runs for an
//! `/etc/fstab` line `disk.img /mnt fuse.lklfuse type=ext4 0 0`).
//!
//! `-o` lists follow the original C lklfuse: they are split on commas that are not escaped
//! with a backslash, and a backslash makes the next character literal everywhere (`\\` is a
//! backslash). So `opts=discard\,commit\=30` is one option whose value is `discard,commit=30`.
//! Because that escaping does not survive `/etc/fstab` and `mount.fuse3` (which runs the
//! daemon through `sh -c`), filesystem options can also be given one at a time as
//! `lkl.NAME[=VALUE]`.
//!
//! Parsing never exits the process: help, version and every error come back as values.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

/// Kernel memory when `mb=` is not given, in MiB (the original's default).
pub const DEFAULT_MEMORY_MIB: u32 = 64;

/// Smallest accepted `mb=`: below this the kernel does not finish booting with the
/// filesystems we build in.
pub const MIN_MEMORY_MIB: u32 = 16;

/// Largest accepted `mb=` (64 GiB): a guard against typos such as a byte count.
pub const MAX_MEMORY_MIB: u32 = 65536;

/// FUSE worker threads when neither `-s` nor `threads=` is given.
///
/// The in-process kernel is uniprocessor and runs one syscall at a time, so extra workers
/// do not add CPU throughput however many host CPUs there are; they help by letting one
/// request wait for block I/O (or a slow `fsync`) while others proceed. A few workers capture
/// that; more only add contention on the kernel lock. A fixed number also keeps behaviour
/// the same on every machine.
pub const DEFAULT_THREADS: usize = 4;

/// `watchdog=` default, in seconds: far beyond any honest stretch of kernel code without a
/// sleep (those last milliseconds), short enough that a locked-up mount does not hang a
/// desktop for long.
pub const DEFAULT_WATCHDOG_SECS: u32 = 60;

/// `busy_poll=` default, in microseconds: longer than a caller such as `tar` or `find` takes
/// between an answer and its next request on a busy two-CPU machine, and short enough that
/// a window which sees no request wastes little (see `fs::workers`).
pub const DEFAULT_BUSY_POLL_US: u32 = 50;

/// `idle_poll=` default, in microseconds: longer than the pauses of a caller that reads or
/// writes each file between requests (`cp`, `tar`), so its CPU stays awake for a whole tree;
/// the CPUs idle again this soon after the last request (see `fs::idle_poll`).
pub const DEFAULT_IDLE_POLL_US: u32 = 2000;

/// Largest accepted `threads=`/`max_threads=`: each worker is a host thread plus a kernel
/// task, and hundreds of them only queue on the kernel lock.
pub const MAX_THREADS: usize = 256;

/// The FUSE subtype when `subtype=` is not given: `findmnt` shows `fuse.lklfuse`.
pub const DEFAULT_SUBTYPE: &str = "lklfuse";

/// A command-line mistake, described in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    message: String,
}

impl UsageError {
    fn new(message: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
        }
    }

    /// The one-line description, without a program-name prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
// Built once per process and matched right away: boxing `Config` would only add noise for
// callers.
#[allow(clippy::large_enum_variant)]
pub enum Invocation {
    /// Mount and serve.
    Run(Config),
    /// `-h`/`--help`: print this text to stdout and exit 0.
    Help(String),
    /// `-V`/`--version`: print this text (`lklfuse X.Y.Z`) to stdout and exit 0; the binary
    /// may append the kernel version.
    Version(String),
}

/// Everything the daemon needs to know, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The disk image or block device, as given. Canonicalize it before
    /// [`daemonize`](super::background::daemonize), which changes the directory to `/`.
    pub image: PathBuf,
    /// Where to mount, as given. `/dev/fd/N` means an already-mounted `/dev/fuse` descriptor
    /// handed over by `mount.fuse3 -o drop_privileges`; see [`Config::preopened_fuse_fd`].
    pub mountpoint: PathBuf,
    /// `type=`: the kernel filesystem type; `None` asks for detection.
    pub fstype: Option<String>,
    /// `ro`/`rw` (last one wins; default `rw`): open the image read-only and mount it so.
    pub read_only: bool,
    /// `mb=`: kernel memory in MiB.
    pub memory_mib: u32,
    /// `part=N`: the partition to mount; `None` (also for `part=0`) is the whole disk.
    pub partition: Option<u32>,
    /// Generic VFS flags for the in-kernel mount.
    pub mount_flags: MountFlags,
    /// Filesystem-specific options for the in-kernel mount (`opts=` and `lkl.NAME`), comma
    /// separated, in command-line order.
    pub mount_data: String,
    /// `lock=FILE`: hold an exclusive lock on this file while mounted.
    pub lock_file: Option<PathBuf>,
    /// `log=FILE`: append log messages to this file instead of stderr.
    pub log_file: Option<PathBuf>,
    /// How the host sees the FUSE mount.
    pub fuse: FuseOptions,
    /// FUSE worker threads: `-s` gives 1, else `threads=N`/`max_threads=N`, else
    /// [`DEFAULT_THREADS`].
    pub threads: usize,
    /// `watchdog=SECS`: kernel code running this long without yielding is a lockup that ends
    /// the daemon (see `lkl::watchdog`); 0 turns the watchdog off.
    pub watchdog_secs: u32,
    /// `busy_poll=USECS`: how long a worker watches for the next request after answering
    /// one before it sleeps (see `fs::workers`); 0 turns this off.
    pub busy_poll_us: u32,
    /// `idle_poll=USECS`: keep the CPUs from idling until this long after the last request
    /// (see `fs::idle_poll`); 0 turns this off.
    pub idle_poll_us: u32,
    /// `writeback_cache` / `no_writeback_cache` (default): whether the host may cache writes
    /// and send them in large batches (see `KernelFs::writeback_cache`).
    pub writeback_cache: bool,
    /// `-f` or `-d`: stay in the foreground.
    pub foreground: bool,
    /// `-d` (or `-o debug`): debug logging; implies `foreground`.
    pub debug: bool,
}

impl Config {
    /// The `/dev/fuse` descriptor `N` when the mountpoint is `/dev/fd/N`: `mount.fuse3`'s
    /// `drop_privileges` mounts itself and passes the open descriptor this way, so the daemon
    /// must serve that descriptor instead of mounting.
    pub fn preopened_fuse_fd(&self) -> Option<RawFd> {
        let number = self.mountpoint.to_str()?.strip_prefix("/dev/fd/")?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse().ok()
    }
}

/// Linux `MS_*` mount flags (include/uapi/linux/mount.h).
mod ms {
    pub const NOSUID: u64 = 2;
    pub const NODEV: u64 = 4;
    pub const NOEXEC: u64 = 8;
    pub const SYNCHRONOUS: u64 = 16;
    pub const DIRSYNC: u64 = 128;
    pub const NOATIME: u64 = 1024;
    pub const NODIRATIME: u64 = 2048;
    pub const RELATIME: u64 = 1 << 21;
    pub const STRICTATIME: u64 = 1 << 24;
    pub const LAZYTIME: u64 = 1 << 25;
}

/// Generic VFS flags for the in-kernel mount. All default to off (the kernel's defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    /// Ignore set-user-id and set-group-id bits.
    pub nosuid: bool,
    /// Do not open device files.
    pub nodev: bool,
    /// Do not execute programs.
    pub noexec: bool,
    /// Never update access times.
    pub noatime: bool,
    /// Never update directory access times.
    pub nodiratime: bool,
    /// Update access times relative to modification times.
    pub relatime: bool,
    /// Always update access times.
    pub strictatime: bool,
    /// Keep timestamp updates in memory only.
    pub lazytime: bool,
    /// Write synchronously.
    pub sync: bool,
    /// Make directory changes synchronously.
    pub dirsync: bool,
}

impl MountFlags {
    /// The `MS_*` bits for `mount(2)` inside the kernel. `MS_RDONLY` is not included:
    /// read-only is [`Config::read_only`], which also decides how the image is opened.
    pub fn to_ms_flags(&self) -> u64 {
        [
            (self.nosuid, ms::NOSUID),
            (self.nodev, ms::NODEV),
            (self.noexec, ms::NOEXEC),
            (self.sync, ms::SYNCHRONOUS),
            (self.dirsync, ms::DIRSYNC),
            (self.noatime, ms::NOATIME),
            (self.nodiratime, ms::NODIRATIME),
            (self.relatime, ms::RELATIME),
            (self.strictatime, ms::STRICTATIME),
            (self.lazytime, ms::LAZYTIME),
        ]
        .into_iter()
        .filter(|&(set, _)| set)
        .fold(0, |flags, (_, bit)| flags | bit)
    }
}

/// How the host sees the FUSE mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseOptions {
    /// `allow_other`: every user may use the mount (needs `user_allow_other` in
    /// `/etc/fuse.conf` for non-root users).
    pub allow_other: bool,
    /// `allow_root`: the owner and root may use the mount.
    pub allow_root: bool,
    /// `default_permissions` (the default; `no_default_permissions` turns it off): the host
    /// kernel checks permissions itself, ACLs included, before calling us, and then opens
    /// files without asking (see `KernelFs::host_checks_permissions`).
    pub default_permissions: bool,
    /// `fsname=`: the mount's source in `/proc/self/mountinfo`; default: the image as given.
    pub fsname: String,
    /// `subtype=`: the mount shows as `fuse.SUBTYPE`; default [`DEFAULT_SUBTYPE`].
    pub subtype: String,
    /// `auto_unmount`: `fusermount3` unmounts when the daemon dies.
    pub auto_unmount: bool,
    /// Set-user-id bits are ignored on the host mount. On by default, as libfuse and
    /// fusermount do: the image is untrusted. `suid` turns it off.
    pub nosuid: bool,
    /// Device files cannot be opened through the host mount. On by default (see `nosuid`);
    /// `dev` turns it off.
    pub nodev: bool,
    /// Programs cannot be run from the host mount.
    pub noexec: bool,
    /// The host does not update access times.
    pub noatime: bool,
    /// Writes through the host mount are synchronous.
    pub sync: bool,
    /// Directory changes through the host mount are synchronous.
    pub dirsync: bool,
    /// The host mount is read-only.
    pub read_only: bool,
}

impl FuseOptions {
    fn new(fsname: String) -> Self {
        FuseOptions {
            allow_other: false,
            allow_root: false,
            default_permissions: true,
            fsname,
            subtype: DEFAULT_SUBTYPE.to_owned(),
            auto_unmount: false,
            nosuid: true,
            nodev: true,
            noexec: false,
            noatime: false,
            sync: false,
            dirsync: false,
            read_only: false,
        }
    }

    /// The options to give `fuser` when mounting.
    ///
    /// `allow_other`/`allow_root` are not in this list: fuser 0.18 takes them as
    /// [`FuseOptions::session_acl`] and adds `allow_other` itself (it enforces the root-only
    /// part of `allow_root` in the daemon).
    ///
    /// `fsname` has `\` and `,` escaped with a backslash: fuser joins options with commas for
    /// `fusermount3`, which splits on unescaped commas and removes the escapes.
    pub fn mount_options(&self) -> Vec<fuser::MountOption> {
        use fuser::MountOption;
        let mut options = vec![
            MountOption::FSName(escape_option_value(&self.fsname)),
            MountOption::Subtype(self.subtype.clone()),
            // fuser drops `Subtype` when it mounts with mount(2) itself (as root) instead of
            // through fusermount3; the kernel's own `subtype=` option keeps `fuse.lklfuse`.
            MountOption::CUSTOM(format!("subtype={}", self.subtype)),
        ];
        if self.read_only {
            options.push(MountOption::RO);
        }
        // fuser mounts nosuid,nodev unless told otherwise, so the "off" side must be explicit.
        options.push(if self.nosuid {
            MountOption::NoSuid
        } else {
            MountOption::Suid
        });
        options.push(if self.nodev {
            MountOption::NoDev
        } else {
            MountOption::Dev
        });
        let flags = [
            (self.noexec, MountOption::NoExec),
            (self.noatime, MountOption::NoAtime),
            (self.sync, MountOption::Sync),
            (self.dirsync, MountOption::DirSync),
            (self.default_permissions, MountOption::DefaultPermissions),
            (self.auto_unmount, MountOption::AutoUnmount),
        ];
        options.extend(flags.into_iter().filter(|(set, _)| *set).map(|(_, o)| o));
        options
    }

    /// Who may use the mount, in fuser 0.18's terms.
    pub fn session_acl(&self) -> fuser::SessionACL {
        if self.allow_other {
            fuser::SessionACL::All
        } else if self.allow_root {
            fuser::SessionACL::RootAndOwner
        } else {
            fuser::SessionACL::Owner
        }
    }
}

/// Escapes `\` and `,` so a value survives a comma-separated option list.
fn escape_option_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c == ',' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

const USAGE: &str = "lklfuse [-f] [-d] [-s] [-o OPTION[,OPTION...]]... IMAGE MOUNTPOINT";

/// The flags clap parses; `-o` lists are interpreted afterwards by [`OptionParser`].
#[derive(Debug, Parser)]
#[command(
    name = "lklfuse",
    about = "Mount a disk image with the Linux kernel's own filesystem code, through FUSE.",
    override_usage = USAGE,
    disable_help_flag = true,
    disable_version_flag = true,
    color = clap::ColorChoice::Never
)]
struct CommandLine {
    /// Disk image or block device
    #[arg(value_name = "IMAGE")]
    image: Option<PathBuf>,

    /// Directory to mount on (or /dev/fd/N from mount.fuse3 -o drop_privileges)
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: Option<PathBuf>,

    /// Mount options, comma separated (listed below); may be repeated
    #[arg(short = 'o', value_name = "OPTIONS", action = ArgAction::Append)]
    options: Vec<OsString>,

    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,

    /// Debug: stay in the foreground and log debug messages
    #[arg(short = 'd')]
    debug: bool,

    /// Serve FUSE requests on a single thread
    #[arg(short = 's')]
    single_threaded: bool,

    /// Print help
    #[arg(short = 'h', long = "help")]
    help: bool,

    /// Print version
    #[arg(short = 'V', long = "version")]
    version: bool,
}

/// One line of help per `-o` option.
const OPTION_HELP: &[(&str, &str)] = &[
    (
        "type=FSTYPE",
        "filesystem type (ext4, xfs, btrfs, vfat, ...); detected if not given",
    ),
    (
        "ro, rw",
        "open and mount the image read-only / read-write (default rw)",
    ),
    (
        "mb=N",
        "memory for the in-process kernel in MiB (16-65536, default 64)",
    ),
    (
        "part=N",
        "mount partition N of the image (default 0: the whole image)",
    ),
    (
        "opts=A\\,B\\=C",
        "filesystem options, separated by \\, with = written \\=",
    ),
    (
        "lkl.NAME[=VALUE]",
        "one filesystem option, fstab friendly (e.g. lkl.discard,lkl.commit=30)",
    ),
    (
        "lock=FILE",
        "hold an exclusive lock on FILE while mounted; fail if it is held",
    ),
    (
        "log=FILE",
        "append log and kernel messages to FILE instead of stderr",
    ),
    (
        "threads=N",
        "FUSE worker threads (default 4, -s means 1); also max_threads=N",
    ),
    (
        "watchdog=SECS",
        "end the daemon (exit 3, mount removed) if kernel code runs SECS seconds without \
         yielding, a lockup (default 60; 0: off)",
    ),
    (
        "busy_poll=USECS",
        "after answering, watch for the next request this long before sleeping: saves the \
         wake-up between requests of one caller, costs CPU only while requests keep coming \
         (default 50; 0: off)",
    ),
    (
        "idle_poll=USECS",
        "keep every CPU (up to 8) from idling, with a lowest-priority thread, until USECS \
         after the last request: waking callers and workers on a CPU that halted is slow, \
         above all in virtual machines. These threads also write small answers from the \
         CPU the caller waits on, which wakes it faster. Costs CPU time otherwise idle, \
         during bursts only (default 2000; 0: off)",
    ),
    (
        "writeback_cache, no_writeback_cache",
        "let the host cache writes and send them in batches: much faster small writes, but \
         a full disk or a too large file is reported by fsync and close, no longer by \
         write (default: no_writeback_cache)",
    ),
    (
        "nosuid, suid",
        "ignore / honour set-user-id bits (host mount default: nosuid)",
    ),
    (
        "nodev, dev",
        "refuse / allow device files (host mount default: nodev)",
    ),
    ("noexec, exec", "refuse / allow running programs"),
    ("noatime, atime", "do not update / update access times"),
    (
        "nodiratime, diratime",
        "do not update / update directory access times",
    ),
    (
        "relatime, norelatime",
        "update access times only when older than modification times",
    ),
    ("strictatime", "always update access times"),
    (
        "lazytime, nolazytime",
        "keep timestamp updates in memory only / write them",
    ),
    ("sync, async", "write synchronously / asynchronously"),
    ("dirsync", "make directory changes synchronously"),
    ("allow_other", "let every user use the mount"),
    ("allow_root", "let the owner and root use the mount"),
    (
        "default_permissions, no_default_permissions",
        "let the host kernel check permissions too, ACLs included, so that files open \
         without a request (the default: cached small files read as fast as on a native \
         mount) / leave every check to the kernel here (each open a request, but one \
         request fewer per file created or removed)",
    ),
    (
        "fsname=NAME",
        "mount source shown by findmnt/df (default: IMAGE)",
    ),
    (
        "subtype=NAME",
        "mount type shown as fuse.NAME (default: lklfuse)",
    ),
    (
        "auto_unmount",
        "unmount when lklfuse dies (needs allow_other or allow_root)",
    ),
    ("debug", "same as -d"),
    (
        "user, users, nouser, auto, noauto, nofail, _netdev, defaults, x-*, X-*, comment=*",
        "fstab options; accepted and ignored",
    ),
    (
        "nonempty, clone_fd, use_ino, max_idle_threads=N",
        "libfuse options; accepted and ignored",
    ),
];

fn help_text() -> String {
    let mut help = CommandLine::command().render_help().to_string();
    help.push_str("\nMount options (-o):\n");
    for (option, meaning) in OPTION_HELP {
        if option.len() > 22 {
            help.push_str(&format!("  {option}\n  {:22}  {meaning}\n", ""));
        } else {
            help.push_str(&format!("  {option:22}  {meaning}\n"));
        }
    }
    help.push_str(
        "\nIn /etc/fstab:  IMAGE  MOUNTPOINT  fuse.lklfuse  type=ext4,noauto,user,lkl.discard  0 0\n",
    );
    help
}

/// The command line as users see it, for man pages and shell completions (`cargo run
/// --example gen-docs`). Parsing does not use it: [`parse_args`] builds its own.
pub fn command() -> clap::Command {
    // Both positionals are required; parse_args checks that itself to word the error.
    CommandLine::command()
        .version(env!("CARGO_PKG_VERSION"))
        .long_about(LONG_ABOUT)
        .mut_arg("image", |a| a.required(true))
        .mut_arg("mountpoint", |a| a.required(true))
}

/// The `-o` options with one line of help each, as `lklfuse --help` lists them.
pub fn mount_option_help() -> &'static [(&'static str, &'static str)] {
    OPTION_HELP
}

/// The man page's DESCRIPTION.
const LONG_ABOUT: &str = "\
lklfuse mounts a disk image or block device through FUSE. The filesystem code that reads \
and writes the image is the Linux kernel's own, built into lklfuse and running inside the \
process as an ordinary user program: no root privileges, kernel modules or loop devices are \
needed, and a corrupt or hostile image can harm only the lklfuse process, never the host \
kernel.

The image is opened read-write unless ro is given or the file is not writable. The \
filesystem type is detected when type= is not given. Without -f or -d, lklfuse goes to the \
background once the mount is ready; it returns 0 only when the mount is live, and otherwise \
reports the error and returns non-zero.

The mount ends with fusermount3 -u MOUNTPOINT (or umount as root), or when lklfuse gets \
SIGTERM, SIGINT or SIGHUP. Either way lklfuse unmounts the filesystem inside its kernel, \
which writes every cached change to the image, flushes the image to stable storage and \
exits 0. Under systemd (NOTIFY_SOCKET set) it reports READY=1 once the mount is live and \
STOPPING=1 when it begins to unmount. SIGUSR1 writes one statistics line to the log (nodes \
and open files held for the host, the kernel's free memory).

If the kernel inside lklfuse panics (a BUG in a filesystem, say, on a corrupt image) or the \
process gets a crash signal, lklfuse says so in one line, removes the mount (processes using \
it get an error instead of hanging) and exits with status 3. Started as root, lklfuse keeps \
only the capabilities to mount and unmount (CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH) once the \
image is open, and sets no_new_privs.";

fn version_text() -> String {
    format!("lklfuse {}", env!("CARGO_PKG_VERSION"))
}

/// Parses a command line; `args` starts with the program name, as `std::env::args_os()`.
///
/// # Errors
///
/// A [`UsageError`] for unknown flags or `-o` options, bad values, missing arguments and
/// conflicting options.
pub fn parse_args<I, T>(args: I) -> Result<Invocation, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = CommandLine::command()
        .try_get_matches_from(args)
        .map_err(clap_error)?;
    let line = CommandLine::from_arg_matches(&matches).map_err(clap_error)?;
    if line.help {
        return Ok(Invocation::Help(help_text()));
    }
    if line.version {
        return Ok(Invocation::Version(version_text()));
    }
    let (image, mountpoint) = match (line.image, line.mountpoint) {
        (Some(image), Some(mountpoint)) => (image, mountpoint),
        (None, _) => {
            return Err(UsageError::new(format!(
                "missing IMAGE and MOUNTPOINT (usage: {USAGE})"
            )))
        }
        (Some(_), None) => {
            return Err(UsageError::new(format!(
                "missing MOUNTPOINT (usage: {USAGE})"
            )))
        }
    };

    let mut parser = OptionParser::new(&image);
    for list in &line.options {
        for option in split_option_list(list.as_bytes())? {
            parser.apply(&option)?;
        }
    }
    let mut config = parser.finish(image, mountpoint)?;
    if line.debug {
        config.debug = true;
    }
    config.foreground |= line.foreground || config.debug;
    if line.single_threaded {
        config.threads = 1;
    }
    Ok(Invocation::Run(config))
}

/// Turns a clap error into one line: clap's first line, without its `error: ` prefix.
fn clap_error(error: clap::Error) -> UsageError {
    let rendered = error.render().to_string();
    let first_line = rendered
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("invalid command line");
    let message = first_line.strip_prefix("error: ").unwrap_or(first_line);
    UsageError::new(format!("{message} (see lklfuse --help)"))
}

/// One item of a `-o` list with its escapes resolved: `name` or `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawOption {
    name: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl RawOption {
    /// The option as the user wrote it (escapes resolved), for messages.
    fn display(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.name).into_owned();
        if let Some(value) = &self.value {
            text.push('=');
            text.push_str(&String::from_utf8_lossy(value));
        }
        text
    }
}

/// Splits a `-o` list on unescaped commas, and each item on its first unescaped `=`.
/// A backslash makes the next byte literal. Empty items are skipped, as `mount.fuse3` does.
fn split_option_list(list: &[u8]) -> Result<Vec<RawOption>, UsageError> {
    let mut options = Vec::new();
    let mut name = Vec::new();
    let mut value: Option<Vec<u8>> = None;
    let mut bytes = list.iter().copied();
    while let Some(byte) = bytes.next() {
        let literal = match byte {
            b'\\' => bytes.next().ok_or_else(|| {
                UsageError::new(format!(
                    "-o list '{}' ends with a lone backslash",
                    String::from_utf8_lossy(list)
                ))
            })?,
            b',' => {
                if !name.is_empty() || value.is_some() {
                    options.push(RawOption {
                        name: std::mem::take(&mut name),
                        value: value.take(),
                    });
                }
                continue;
            }
            b'=' if value.is_none() => {
                value = Some(Vec::new());
                continue;
            }
            other => other,
        };
        match &mut value {
            Some(value) => value.push(literal),
            None => name.push(literal),
        }
    }
    if !name.is_empty() || value.is_some() {
        options.push(RawOption { name, value });
    }
    Ok(options)
}

/// fstab and `mount.fuse3` options that mean nothing to lklfuse (`defaults` is a no-op in
/// libmount too).
const IGNORED_OPTIONS: &[&str] = &[
    "user", "nouser", "users", "auto", "noauto", "nofail", "_netdev", "defaults",
];

/// libfuse options that old command lines carry and that change nothing here: fuser always
/// mounts over non-empty directories, clones the device per worker and reports the kernel's
/// inode numbers.
const IGNORED_LIBFUSE_FLAGS: &[&str] = &["nonempty", "clone_fd", "use_ino"];

/// Accumulates `-o` options into a [`Config`].
struct OptionParser {
    fstype: Option<String>,
    read_only: bool,
    memory_mib: u32,
    partition: u32,
    mount_flags: MountFlags,
    mount_data: Vec<String>,
    lock_file: Option<PathBuf>,
    log_file: Option<PathBuf>,
    fuse: FuseOptions,
    threads: usize,
    watchdog_secs: u32,
    busy_poll_us: u32,
    idle_poll_us: u32,
    writeback_cache: bool,
    debug: bool,
}

impl OptionParser {
    fn new(image: &std::path::Path) -> Self {
        OptionParser {
            fstype: None,
            read_only: false,
            memory_mib: DEFAULT_MEMORY_MIB,
            partition: 0,
            mount_flags: MountFlags::default(),
            mount_data: Vec::new(),
            lock_file: None,
            log_file: None,
            fuse: FuseOptions::new(image.to_string_lossy().into_owned()),
            threads: DEFAULT_THREADS,
            watchdog_secs: DEFAULT_WATCHDOG_SECS,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            idle_poll_us: DEFAULT_IDLE_POLL_US,
            writeback_cache: false,
            debug: false,
        }
    }

    fn apply(&mut self, option: &RawOption) -> Result<(), UsageError> {
        let unknown = || {
            UsageError::new(format!(
                "unknown option '{}' (see lklfuse --help)",
                option.display()
            ))
        };
        let name = std::str::from_utf8(&option.name).map_err(|_| unknown())?;
        let value = option.value.as_deref();

        if let Some(fs_option) = name.strip_prefix("lkl.") {
            if fs_option.is_empty() {
                return Err(UsageError::new(
                    "option 'lkl.' needs a filesystem option name, e.g. lkl.discard",
                ));
            }
            let mut fs_option = fs_option.to_owned();
            if let Some(value) = value {
                fs_option.push('=');
                fs_option.push_str(text(name, value)?);
            }
            self.add_fs_option(&fs_option);
            return Ok(());
        }
        if name.starts_with("x-") || name.starts_with("X-") || name == "comment" {
            return Ok(());
        }

        match (name, value) {
            ("type", Some(value)) => self.fstype = Some(non_empty(name, text(name, value)?)?),
            ("mb", Some(value)) => {
                self.memory_mib = number(name, value, MIN_MEMORY_MIB..=MAX_MEMORY_MIB)?
            }
            ("part", Some(value)) => self.partition = number(name, value, 0..=u32::MAX)?,
            ("opts", Some(value)) => {
                for fs_option in text(name, value)?.split(',').filter(|o| !o.is_empty()) {
                    self.add_fs_option(fs_option);
                }
            }
            ("lock", Some(value)) => self.lock_file = Some(path(name, value)?),
            ("log", Some(value)) => self.log_file = Some(path(name, value)?),
            ("watchdog", Some(value)) => self.watchdog_secs = number(name, value, 0..=86_400)?,
            ("busy_poll", Some(value)) => self.busy_poll_us = number(name, value, 0..=100_000)?,
            ("idle_poll", Some(value)) => self.idle_poll_us = number(name, value, 0..=1_000_000)?,
            ("threads" | "max_threads", Some(value)) => {
                self.threads = number(name, value, 1..=MAX_THREADS)?
            }
            ("fsname", Some(value)) => self.fuse.fsname = non_empty(name, text(name, value)?)?,
            ("subtype", Some(value)) => self.fuse.subtype = non_empty(name, text(name, value)?)?,
            ("max_idle_threads", Some(value)) => {
                number::<usize>(name, value, 0..=usize::MAX)?;
            }
            (
                "type" | "mb" | "part" | "opts" | "lock" | "log" | "threads" | "max_threads"
                | "watchdog" | "busy_poll" | "idle_poll" | "fsname" | "subtype"
                | "max_idle_threads",
                None,
            ) => {
                return Err(UsageError::new(format!(
                    "option '{name}' needs a value ({name}=...)"
                )))
            }
            (_, None) => {
                if !self.apply_flag(name) {
                    return Err(unknown());
                }
            }
            (_, Some(_)) => {
                if Self::is_flag(name) {
                    return Err(UsageError::new(format!("option '{name}' takes no value")));
                }
                return Err(unknown());
            }
        }
        Ok(())
    }

    /// Whether `name` is a value-less option (tried on a throwaway parser).
    fn is_flag(name: &str) -> bool {
        OptionParser::new(std::path::Path::new("")).apply_flag(name)
    }

    /// Applies a value-less option; false if `name` is not one.
    fn apply_flag(&mut self, name: &str) -> bool {
        if self.apply_vfs_flag(name) {
            return true;
        }
        let fuse = &mut self.fuse;
        match name {
            "allow_other" => fuse.allow_other = true,
            "allow_root" => fuse.allow_root = true,
            "default_permissions" | "no_default_permissions" => {
                fuse.default_permissions = name == "default_permissions"
            }
            "auto_unmount" => fuse.auto_unmount = true,
            "debug" => self.debug = true,
            "writeback_cache" | "no_writeback_cache" => {
                self.writeback_cache = name == "writeback_cache"
            }
            _ => return IGNORED_OPTIONS.contains(&name) || IGNORED_LIBFUSE_FLAGS.contains(&name),
        }
        true
    }

    /// Applies a generic VFS flag to both the kernel mount and the FUSE mount; false if
    /// `name` is not one. Later flags override earlier opposing ones.
    fn apply_vfs_flag(&mut self, name: &str) -> bool {
        let kernel = &mut self.mount_flags;
        let fuse = &mut self.fuse;
        match name {
            "ro" | "rw" => {
                self.read_only = name == "ro";
                fuse.read_only = self.read_only;
            }
            "nosuid" | "suid" => {
                kernel.nosuid = name == "nosuid";
                fuse.nosuid = kernel.nosuid;
            }
            "nodev" | "dev" => {
                kernel.nodev = name == "nodev";
                fuse.nodev = kernel.nodev;
            }
            "noexec" | "exec" => {
                kernel.noexec = name == "noexec";
                fuse.noexec = kernel.noexec;
            }
            // The access-time modes exclude each other, as in the kernel's do_mount.
            "noatime" => {
                kernel.noatime = true;
                kernel.relatime = false;
                kernel.strictatime = false;
                fuse.noatime = true;
            }
            "atime" => {
                kernel.noatime = false;
                fuse.noatime = false;
            }
            "relatime" => {
                kernel.relatime = true;
                kernel.noatime = false;
                kernel.strictatime = false;
                fuse.noatime = false;
            }
            "norelatime" => kernel.relatime = false,
            "strictatime" => {
                kernel.strictatime = true;
                kernel.noatime = false;
                kernel.relatime = false;
                fuse.noatime = false;
            }
            "nodiratime" | "diratime" => kernel.nodiratime = name == "nodiratime",
            "lazytime" | "nolazytime" => kernel.lazytime = name == "lazytime",
            "sync" | "async" => {
                kernel.sync = name == "sync";
                fuse.sync = kernel.sync;
            }
            "dirsync" => {
                kernel.dirsync = true;
                fuse.dirsync = true;
            }
            _ => return false,
        }
        true
    }

    /// Adds one filesystem option from `opts=` or `lkl.`; generic VFS flags among them
    /// become flags, since filesystems reject them as mount data.
    fn add_fs_option(&mut self, fs_option: &str) {
        if !self.apply_vfs_flag(fs_option) {
            self.mount_data.push(fs_option.to_owned());
        }
    }

    fn finish(self, image: PathBuf, mountpoint: PathBuf) -> Result<Config, UsageError> {
        if self.fuse.allow_other && self.fuse.allow_root {
            return Err(UsageError::new(
                "options 'allow_other' and 'allow_root' exclude each other",
            ));
        }
        // fuser refuses auto_unmount for owner-only mounts; say so before anything starts.
        if self.fuse.auto_unmount && !self.fuse.allow_other && !self.fuse.allow_root {
            return Err(UsageError::new(
                "option 'auto_unmount' needs 'allow_other' or 'allow_root'",
            ));
        }
        Ok(Config {
            image,
            mountpoint,
            fstype: self.fstype,
            read_only: self.read_only,
            memory_mib: self.memory_mib,
            partition: (self.partition != 0).then_some(self.partition),
            mount_flags: self.mount_flags,
            mount_data: self.mount_data.join(","),
            lock_file: self.lock_file,
            log_file: self.log_file,
            fuse: self.fuse,
            threads: self.threads,
            watchdog_secs: self.watchdog_secs,
            busy_poll_us: self.busy_poll_us,
            idle_poll_us: self.idle_poll_us,
            writeback_cache: self.writeback_cache,
            foreground: self.debug,
            debug: self.debug,
        })
    }
}

fn text<'a>(name: &str, value: &'a [u8]) -> Result<&'a str, UsageError> {
    std::str::from_utf8(value).map_err(|_| {
        UsageError::new(format!(
            "invalid value for {name}: '{}' (not UTF-8)",
            String::from_utf8_lossy(value)
        ))
    })
}

fn non_empty(name: &str, value: &str) -> Result<String, UsageError> {
    if value.is_empty() {
        return Err(UsageError::new(format!("empty value for {name}")));
    }
    Ok(value.to_owned())
}

fn path(name: &str, value: &[u8]) -> Result<PathBuf, UsageError> {
    if value.is_empty() {
        return Err(UsageError::new(format!("empty value for {name}")));
    }
    Ok(PathBuf::from(OsStr::from_bytes(value)))
}

fn number<T>(name: &str, value: &[u8], range: std::ops::RangeInclusive<T>) -> Result<T, UsageError>
where
    T: FromStr + PartialOrd + std::fmt::Display,
{
    let invalid = || {
        UsageError::new(format!(
            "invalid value for {name}: '{}' (expected a number from {} to {})",
            String::from_utf8_lossy(value),
            range.start(),
            range.end()
        ))
    };
    let number: T = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(invalid)?;
    if !range.contains(&number) {
        return Err(invalid());
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuser::MountOption;

    fn run(args: &[&str]) -> Config {
        match parse_args(args.iter().copied()) {
            Ok(Invocation::Run(config)) => config,
            other => panic!("expected a run configuration for {args:?}, got {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        match parse_args(args.iter().copied()) {
            Err(error) => error.to_string(),
            Ok(other) => panic!("expected a usage error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let config = run(&["lklfuse", "disk.img", "/mnt/x"]);
        assert_eq!(config.image, PathBuf::from("disk.img"));
        assert_eq!(config.mountpoint, PathBuf::from("/mnt/x"));
        assert_eq!(config.fstype, None);
        assert!(!config.read_only);
        assert_eq!(config.memory_mib, 64);
        assert_eq!(config.partition, None);
        assert_eq!(config.mount_flags, MountFlags::default());
        assert_eq!(config.mount_data, "");
        assert_eq!(config.lock_file, None);
        assert_eq!(config.log_file, None);
        assert_eq!(config.threads, DEFAULT_THREADS);
        assert_eq!(config.watchdog_secs, DEFAULT_WATCHDOG_SECS);
        assert_eq!(config.busy_poll_us, DEFAULT_BUSY_POLL_US);
        assert_eq!(config.idle_poll_us, DEFAULT_IDLE_POLL_US);
        assert!(!config.writeback_cache);
        assert!(!config.foreground);
        assert!(!config.debug);
        assert_eq!(config.fuse.fsname, "disk.img");
        assert_eq!(config.fuse.subtype, "lklfuse");
        assert!(config.fuse.nosuid && config.fuse.nodev);
        assert!(!config.fuse.allow_other && !config.fuse.allow_root);
        assert!(config.fuse.default_permissions);
        assert_eq!(config.fuse.session_acl(), fuser::SessionACL::Owner);
        assert_eq!(config.preopened_fuse_fd(), None);
    }

    #[test]
    fn options_before_and_after_positionals() {
        let before = run(&["lklfuse", "-o", "type=ext4", "img", "mnt"]);
        let after = run(&["lklfuse", "img", "mnt", "-o", "type=ext4"]);
        let attached = run(&["lklfuse", "img", "-otype=ext4", "mnt"]);
        assert_eq!(before.fstype.as_deref(), Some("ext4"));
        assert_eq!(before, after);
        assert_eq!(before, attached);
    }

    #[test]
    fn mount_fuse3_argument_order() {
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            "rw,nosuid,nodev,type=ext4,user,noauto,x-gvfs-show",
        ]);
        assert_eq!(config.fstype.as_deref(), Some("ext4"));
        assert!(!config.read_only);
        assert!(config.mount_flags.nosuid && config.mount_flags.nodev);
        assert!(config.fuse.nosuid && config.fuse.nodev);
        assert_eq!(config.mount_data, "");
    }

    #[test]
    fn mount_fuse3_dev_suid_reach_the_host_mount() {
        let config = run(&["lklfuse", "img", "mnt", "-o", "type=ext4,dev,suid"]);
        assert!(!config.fuse.nosuid && !config.fuse.nodev);
        let options = config.fuse.mount_options();
        assert!(options.contains(&MountOption::Suid));
        assert!(options.contains(&MountOption::Dev));
    }

    #[test]
    fn opts_escapes_become_mount_data() {
        let config = run(&[
            "lklfuse",
            "-o",
            r"type=ext4,opts=discard\,max_batch_time\=10",
            "img",
            "mnt",
        ]);
        assert_eq!(config.fstype.as_deref(), Some("ext4"));
        assert_eq!(config.mount_data, "discard,max_batch_time=10");
    }

    #[test]
    fn backslash_escapes_any_character() {
        let options = split_option_list(br"a\\b,c\,d=e\=f,,g=").unwrap();
        assert_eq!(
            options,
            vec![
                RawOption {
                    name: br"a\b".to_vec(),
                    value: None
                },
                RawOption {
                    name: b"c,d".to_vec(),
                    value: Some(b"e=f".to_vec())
                },
                RawOption {
                    name: b"g".to_vec(),
                    value: Some(Vec::new())
                },
            ]
        );
        assert!(split_option_list(br"ro\").is_err());
    }

    #[test]
    fn lkl_prefix_appends_mount_data_in_order() {
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            r"type=ext4,lkl.discard,opts=nobarrier\,errors\=remount-ro",
            "-o",
            "lkl.commit=30",
        ]);
        assert_eq!(
            config.mount_data,
            "discard,nobarrier,errors=remount-ro,commit=30"
        );
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "lkl."]).contains("lkl."));
    }

    #[test]
    fn vfs_flags_in_fs_options_become_flags() {
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            r"opts=noatime\,discard,lkl.ro",
        ]);
        assert_eq!(config.mount_data, "discard");
        assert!(config.mount_flags.noatime);
        assert!(config.read_only && config.fuse.read_only);
    }

    #[test]
    fn ignored_options() {
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            "user,nouser,users,auto,noauto,nofail,_netdev,defaults,x-gvfs-show,\
             x-systemd.automount,X-mount.mkdir,comment=hello,nonempty,clone_fd,use_ino,\
             max_idle_threads=10",
        ]);
        assert_eq!(config, run(&["lklfuse", "img", "mnt"]));
    }

    #[test]
    fn unknown_option_is_named() {
        assert_eq!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "ro,foo"]),
            "unknown option 'foo' (see lklfuse --help)"
        );
        assert_eq!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "foo=bar"]),
            "unknown option 'foo=bar' (see lklfuse --help)"
        );
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "ro=1"]).contains("takes no value"));
    }

    #[test]
    fn bad_values() {
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "mb=abc"])
            .starts_with("invalid value for mb: 'abc'"));
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "mb=8"])
            .starts_with("invalid value for mb: '8'"));
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "mb=65537"])
            .starts_with("invalid value for mb"));
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "part=-1"])
            .starts_with("invalid value for part"));
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "threads=0"])
            .starts_with("invalid value for threads"));
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "watchdog=-5"])
            .starts_with("invalid value for watchdog"));
        assert_eq!(
            run(&["lklfuse", "img", "mnt", "-o", "watchdog=0"]).watchdog_secs,
            0
        );
        assert_eq!(
            run(&["lklfuse", "img", "mnt", "-o", "busy_poll=0"]).busy_poll_us,
            0
        );
        assert!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "busy_poll=1s"])
                .starts_with("invalid value for busy_poll")
        );
        assert!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "busy_poll"]).contains("needs a value")
        );
        assert_eq!(
            run(&["lklfuse", "img", "mnt", "-o", "idle_poll=0"]).idle_poll_us,
            0
        );
        assert!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "idle_poll=2000000"])
                .starts_with("invalid value for idle_poll")
        );
        assert!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "idle_poll"]).contains("needs a value")
        );
        assert!(run(&["lklfuse", "img", "mnt", "-o", "writeback_cache"]).writeback_cache);
        assert!(
            !run(&[
                "lklfuse",
                "img",
                "mnt",
                "-o",
                "writeback_cache,no_writeback_cache"
            ])
            .writeback_cache
        );
        assert_eq!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "type="]),
            "empty value for type"
        );
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "type"]).contains("needs a value"));
        assert!(usage_error(&["lklfuse", "img", "mnt", "-o", "lock="]).contains("lock"));
    }

    #[test]
    fn numbers_and_paths() {
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            "mb=128,part=2,lock=/run/x.lock,log=/var/log/x.log,threads=3",
        ]);
        assert_eq!(config.memory_mib, 128);
        assert_eq!(config.partition, Some(2));
        assert_eq!(config.lock_file, Some(PathBuf::from("/run/x.lock")));
        assert_eq!(config.log_file, Some(PathBuf::from("/var/log/x.log")));
        assert_eq!(config.threads, 3);
        assert_eq!(
            run(&["lklfuse", "img", "mnt", "-o", "part=0"]).partition,
            None
        );
        assert_eq!(
            run(&["lklfuse", "img", "mnt", "-o", "max_threads=7"]).threads,
            7
        );
    }

    #[test]
    fn last_one_wins() {
        let config = run(&["lklfuse", "img", "mnt", "-o", "ro,nosuid", "-o", "rw,suid"]);
        assert!(!config.read_only && !config.fuse.read_only);
        assert!(!config.mount_flags.nosuid && !config.fuse.nosuid);
        let config = run(&["lklfuse", "img", "mnt", "-o", "noatime,relatime"]);
        assert!(!config.mount_flags.noatime && config.mount_flags.relatime);
        assert!(!config.fuse.noatime);
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            "relatime,strictatime,sync,async",
        ]);
        assert!(config.mount_flags.strictatime && !config.mount_flags.relatime);
        assert!(!config.mount_flags.sync && !config.fuse.sync);
    }

    #[test]
    fn fuse_options_and_acl() {
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            "allow_other,default_permissions,fsname=/dev/sdb1,subtype=lkl.ext4,auto_unmount",
        ]);
        assert!(config.fuse.allow_other && config.fuse.default_permissions);
        assert_eq!(config.fuse.session_acl(), fuser::SessionACL::All);
        let off = |opts: &str| {
            !run(&["lklfuse", "img", "mnt", "-o", opts])
                .fuse
                .default_permissions
        };
        assert!(off("no_default_permissions"));
        assert!(!off("no_default_permissions,default_permissions"));
        assert_eq!(config.fuse.fsname, "/dev/sdb1");
        assert_eq!(config.fuse.subtype, "lkl.ext4");
        let config = run(&["lklfuse", "img", "mnt", "-o", "allow_root"]);
        assert_eq!(config.fuse.session_acl(), fuser::SessionACL::RootAndOwner);
    }

    #[test]
    fn allow_other_and_allow_root_conflict() {
        assert!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "allow_other,allow_root"])
                .contains("exclude each other")
        );
        assert!(
            usage_error(&["lklfuse", "img", "mnt", "-o", "auto_unmount"]).contains("auto_unmount")
        );
    }

    #[test]
    fn single_threaded_and_debug_flags() {
        let config = run(&["lklfuse", "-s", "img", "mnt", "-o", "threads=8"]);
        assert_eq!(config.threads, 1);
        let config = run(&["lklfuse", "img", "mnt", "-d"]);
        assert!(config.foreground && config.debug);
        let config = run(&["lklfuse", "-f", "img", "mnt"]);
        assert!(config.foreground && !config.debug);
        let config = run(&["lklfuse", "-fs", "img", "mnt", "-o", "debug"]);
        assert!(config.foreground && config.debug);
        assert_eq!(config.threads, 1);
    }

    #[test]
    fn help_and_version() {
        let Ok(Invocation::Help(help)) = parse_args(["lklfuse", "--help"]) else {
            panic!("--help did not return help");
        };
        assert!(help.contains("Usage: lklfuse"));
        for (option, _) in OPTION_HELP {
            assert!(help.contains(option), "help lacks {option}");
        }
        assert!(!help.contains('\u{1b}'), "help contains escape codes");
        assert!(matches!(
            parse_args(["lklfuse", "-h", "img", "mnt"]),
            Ok(Invocation::Help(_))
        ));
        assert_eq!(
            parse_args(["lklfuse", "-V"]),
            Ok(Invocation::Version(format!(
                "lklfuse {}",
                env!("CARGO_PKG_VERSION")
            )))
        );
    }

    #[test]
    fn clap_errors_are_one_line() {
        for args in [
            &["lklfuse", "--bogus", "img", "mnt"][..],
            &["lklfuse", "img", "mnt", "extra"],
            &["lklfuse", "img", "mnt", "-o"],
            &["lklfuse"],
            &["lklfuse", "img"],
        ] {
            let message = usage_error(args);
            assert!(!message.contains('\n'), "{args:?}: {message:?}");
            assert!(!message.contains('\u{1b}'), "{args:?}: {message:?}");
            assert!(!message.starts_with("error:"), "{args:?}: {message:?}");
        }
        assert!(usage_error(&["lklfuse", "img"]).starts_with("missing MOUNTPOINT"));
    }

    #[test]
    fn ms_flag_values() {
        let all = MountFlags {
            nosuid: true,
            nodev: true,
            noexec: true,
            noatime: true,
            nodiratime: true,
            relatime: true,
            strictatime: true,
            lazytime: true,
            sync: true,
            dirsync: true,
        };
        assert_eq!(
            all.to_ms_flags(),
            2 | 4 | 8 | 16 | 128 | 1024 | 2048 | (1 << 21) | (1 << 24) | (1 << 25)
        );
        assert_eq!(MountFlags::default().to_ms_flags(), 0);
        let config = run(&["lklfuse", "img", "mnt", "-o", "nosuid,noatime,lazytime"]);
        assert_eq!(config.mount_flags.to_ms_flags(), 2 | 1024 | (1 << 25));
    }

    #[test]
    fn fuse_mount_options_content() {
        let config = run(&["lklfuse", "a,b.img", "mnt"]);
        assert_eq!(
            config.fuse.mount_options(),
            vec![
                MountOption::FSName(r"a\,b.img".to_owned()),
                MountOption::Subtype("lklfuse".to_owned()),
                MountOption::CUSTOM("subtype=lklfuse".to_owned()),
                MountOption::NoSuid,
                MountOption::NoDev,
                MountOption::DefaultPermissions,
            ]
        );
        let config = run(&["lklfuse", "img", "mnt", "-o", "no_default_permissions"]);
        assert!(!config
            .fuse
            .mount_options()
            .contains(&MountOption::DefaultPermissions));
        let config = run(&[
            "lklfuse",
            "img",
            "mnt",
            "-o",
            "ro,noexec,noatime,sync,dirsync,default_permissions,allow_other,auto_unmount",
        ]);
        assert_eq!(
            config.fuse.mount_options(),
            vec![
                MountOption::FSName("img".to_owned()),
                MountOption::Subtype("lklfuse".to_owned()),
                MountOption::CUSTOM("subtype=lklfuse".to_owned()),
                MountOption::RO,
                MountOption::NoSuid,
                MountOption::NoDev,
                MountOption::NoExec,
                MountOption::NoAtime,
                MountOption::Sync,
                MountOption::DirSync,
                MountOption::DefaultPermissions,
                MountOption::AutoUnmount,
            ]
        );
    }

    #[test]
    fn dev_fd_mountpoint() {
        let config = run(&["lklfuse", "img", "/dev/fd/5", "-o", "type=ext4"]);
        assert_eq!(config.mountpoint, PathBuf::from("/dev/fd/5"));
        assert_eq!(config.preopened_fuse_fd(), Some(5));
        assert_eq!(
            run(&["lklfuse", "img", "/dev/fd/x"]).preopened_fuse_fd(),
            None
        );
    }
}
