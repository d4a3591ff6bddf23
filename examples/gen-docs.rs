//! Generates the man pages and shell completions from the clap definitions:
//!
//! ```text
//! cargo run --example gen-docs [OUTDIR]     (OUTDIR defaults to the source tree)
//! ```
//!
//! writes `OUTDIR/man/NAME.SECTION` and `OUTDIR/completions/NAME.{bash,zsh,fish}` for every
//! entry of [`PAGES`]. The files in the tree are committed; `tests/integration_docs.rs`
//! checks that they equal what this program writes now, so after changing a command line or
//! a text here, run it and commit the result.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// One program: its clap definition, man section and hand-written sections.
pub struct Page {
    /// The program name (file names and completions use it).
    pub name: &'static str,
    /// The man section: "1" for user commands, "8" for the daemon.
    pub section: &'static str,
    /// The clap definition users see.
    pub command: fn() -> clap::Command,
    /// roff for the sections after OPTIONS (each starting with `.SH`).
    pub extra: fn() -> String,
}

/// Every documented program. To add one, give it a `pub fn command() -> clap::Command`
/// and add one line here, e.g.:
///
/// ```text
/// Page { name: "cptofs", section: "1", command: lklfuse::tools::cptofs::command, extra: no_extra },
/// Page { name: "cpfromfs", section: "1", command: lklfuse::tools::cpfromfs::command, extra: no_extra },
/// Page { name: "fs2tar", section: "1", command: lklfuse::tools::fs2tar::command, extra: no_extra },
/// ```
pub const PAGES: &[Page] = &[
    Page {
        name: "lklfuse",
        section: "8",
        command: lklfuse_command,
        extra: lklfuse_extra,
    },
    Page {
        name: "cptofs",
        section: "1",
        command: cptofs_command,
        extra: cptofs_extra,
    },
    Page {
        name: "cpfromfs",
        section: "1",
        command: cpfromfs_command,
        extra: cpfromfs_extra,
    },
    Page {
        name: "fs2tar",
        section: "1",
        command: fs2tar_command,
        extra: fs2tar_extra,
    },
];

/// Writes every page and completion below `out`; the paths written, relative to `out`.
///
/// # Errors
///
/// If a directory or file cannot be written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for page in PAGES {
        for (rel, data) in render(page)? {
            let path = out.join(&rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, data)?;
            written.push(rel);
        }
    }
    Ok(written)
}

/// The files for one page: relative path and contents.
pub fn render(page: &Page) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    let command = (page.command)();

    let man = clap_mangen::Man::new(command.clone())
        .section(page.section)
        .manual("lklfuse")
        .source(format!("lklfuse {}", env!("CARGO_PKG_VERSION")));
    let mut roff = Vec::new();
    man.render_title(&mut roff)?;
    man.render_name_section(&mut roff)?;
    // clap_mangen's synopsis ignores override_usage and shows no option values: use the
    // usage line `--help` prints.
    let usage = command.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
    let rest = usage.strip_prefix(page.name).unwrap_or(usage).trim();
    roff.extend_from_slice(
        format!(".SH SYNOPSIS\n\\fB{}\\fR {}\n", page.name, esc(rest)).as_bytes(),
    );
    man.render_description_section(&mut roff)?;
    man.render_options_section(&mut roff)?;
    roff.extend_from_slice((page.extra)().as_bytes());
    man.render_version_section(&mut roff)?;
    files.push((
        PathBuf::from(format!("man/{}.{}", page.name, page.section)),
        roff,
    ));

    for (shell, file) in [
        (Shell::Bash, format!("{}.bash", page.name)),
        (Shell::Zsh, format!("{}.zsh", page.name)),
        (Shell::Fish, format!("{}.fish", page.name)),
    ] {
        let mut cmd = command.clone();
        let mut data = Vec::new();
        clap_complete::generate(shell, &mut cmd, page.name, &mut data);
        files.push((PathBuf::from("completions").join(file), data));
    }
    Ok(files)
}

/// For pages without hand-written sections.
#[allow(dead_code)]
pub fn no_extra() -> String {
    String::new()
}

fn lklfuse_command() -> clap::Command {
    lklfuse::daemon::options::command()
        .mut_arg("image", |a| a.value_hint(clap::ValueHint::FilePath))
        .mut_arg("mountpoint", |a| a.value_hint(clap::ValueHint::DirPath))
}

fn cptofs_command() -> clap::Command {
    use clap::CommandFactory;
    lklfuse::tools::cli::CptofsCli::command()
}

fn cpfromfs_command() -> clap::Command {
    use clap::CommandFactory;
    lklfuse::tools::cli::CpfromfsCli::command()
}

fn fs2tar_command() -> clap::Command {
    use clap::CommandFactory;
    lklfuse::tools::cli::Fs2tarCli::command()
}

/// Sections every tool page shares: how the image is reached, exit status, see also.
fn tool_common(s: &mut String, see_also: &str) {
    sh(s, "HOW IT WORKS");
    para(
        s,
        "The image is read and written by the Linux kernel's own filesystem code, compiled \
         into this program and running inside its process: no root, no loop device, no \
         mount. The filesystem type is detected from the superblock when -t is not given. \
         An image used read-write by another process (for example a running lklfuse) is \
         refused. Interrupting the program (Ctrl-C, SIGTERM) stops the copy and unmounts \
         the image cleanly.",
    );
    sh(s, "EXIT STATUS");
    para(
        s,
        "0 on success, 1 on an error (one line on standard error, naming the path), 2 for \
         a usage error, 3 if the kernel inside the program panicked or the program crashed \
         (one line saying so; check the image with its fsck), 130 or 143 when interrupted by \
         SIGINT or SIGTERM.",
    );
    sh(s, "SEE ALSO");
    para(s, see_also);
}

fn cptofs_extra() -> String {
    let mut s = String::new();
    tool_common(&mut s, "cpfromfs(1), fs2tar(1), lklfuse(8)");
    sh(&mut s, "EXAMPLES");
    para(
        &mut s,
        "Copy a directory tree into an ext4 image, keeping owners, modes, times, xattrs and ACLs:",
    );
    example(&mut s, "$ cptofs -i disk.img -a ~/project /srv");
    para(
        &mut s,
        "Copy two files into the first partition of a disk image:",
    );
    example(
        &mut s,
        "$ cptofs -i disk.img -P 1 notes.txt todo.txt /home/me",
    );
    s
}

fn cpfromfs_extra() -> String {
    let mut s = String::new();
    tool_common(&mut s, "cptofs(1), fs2tar(1), lklfuse(8)");
    sh(&mut s, "EXAMPLES");
    para(
        &mut s,
        "Copy /etc out of an XFS image into the current directory:",
    );
    example(&mut s, "$ cpfromfs -i root.img -t xfs /etc .");
    s
}

fn fs2tar_extra() -> String {
    let mut s = String::new();
    tool_common(&mut s, "cptofs(1), cpfromfs(1), lklfuse(8), tar(1)");
    sh(&mut s, "FORMAT");
    para(
        &mut s,
        "A pax archive: owners, modes, nanosecond times, xattrs and ACLs (SCHILY.xattr \
         records), hard links, symbolic links, devices and fifos. Files with holes use GNU \
         tar's PAX sparse format 1.0, which GNU tar extracts sparse. Memory use does not \
         grow with file sizes.",
    );
    sh(&mut s, "EXAMPLES");
    para(
        &mut s,
        "Archive a whole image, then only /home, compressed:",
    );
    example(
        &mut s,
        "$ fs2tar -i disk.img -f disk.tar\n$ fs2tar -i disk.img -C /home | zstd > home.tar.zst",
    );
    s
}

/// Escapes text for roff: backslashes, hyphens (so they stay ASCII hyphens in UTF-8
/// output) and control characters at line starts.
fn esc(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        for c in line.chars() {
            match c {
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                _ => out.push(c),
            }
        }
    }
    out
}

/// A section heading.
fn sh(out: &mut String, title: &str) {
    let _ = writeln!(out, ".SH \"{title}\"");
}

/// A paragraph of running text.
fn para(out: &mut String, text: &str) {
    let _ = writeln!(out, ".PP\n{}", esc(text));
}

/// A literal block (commands, file contents).
fn example(out: &mut String, text: &str) {
    let _ = writeln!(out, ".PP\n.RS 4\n.nf\n{}\n.fi\n.RE", esc(text));
}

/// A tagged paragraph: `tag` in bold, `text` indented below it.
fn item(out: &mut String, tag: &str, text: &str) {
    let _ = writeln!(out, ".TP\n\\fB{}\\fR\n{}", esc(tag), esc(text));
}

fn lklfuse_extra() -> String {
    let mut s = String::new();

    sh(&mut s, "MOUNT OPTIONS");
    para(
        &mut s,
        "Options given with -o, separated by commas. A backslash makes the next character \
         literal, so opts= can carry commas and equals signs. Unknown options are refused \
         with an error, except the fstab-only ones listed last.",
    );
    for (option, meaning) in lklfuse::daemon::options::mount_option_help() {
        item(&mut s, option, meaning);
    }

    sh(&mut s, "FILESYSTEM OPTIONS");
    para(
        &mut s,
        "Options for the filesystem itself (what mount -o would pass to the kernel's \
         filesystem, such as ext4's commit=30 or vfat's uid=1000) go to the in-process \
         kernel. Give each one as lkl.NAME or lkl.NAME=VALUE; this form needs no escaping and \
         so also works in /etc/fstab. The older opts= form takes the whole list, with its \
         commas and equals signs escaped: opts=commit\\=30\\,discard. Both forms may be \
         mixed; the kernel gets them in command-line order. An option the filesystem does \
         not know makes the mount fail, and lklfuse reports the kernel's error.",
    );
    example(
        &mut s,
        "lklfuse -o type=ext4,lkl.commit=30,lkl.errors=remount-ro disk.img /mnt\n\
         lklfuse -o type=vfat,lkl.uid=1000,lkl.gid=1000 stick.img /mnt",
    );

    sh(&mut s, "FSTAB");
    para(
        &mut s,
        "mount(8) runs mount.fuse3(8) for entries of type fuse.lklfuse, which runs \
         lklfuse SOURCE MOUNTPOINT -o OPTIONS through /bin/sh, so lklfuse must be in the \
         PATH of the mount command (install it in /usr/bin or /usr/local/bin). \
         mount.fuse3 removes user, users, noauto, auto, nofail and _netdev, and adds dev \
         and suid unless nodev or nosuid are given; lklfuse accepts and ignores the other \
         fstab-only options (defaults, comment=, x-*). With user (or users), an ordinary user \
         may mount and unmount the entry with plain mount MOUNTPOINT and umount MOUNTPOINT; \
         the user needs read (and, for rw, write) access to the image. x-gvfs-show makes \
         GNOME file managers list a mount outside /media, /run/media/USER and the home \
         directory.",
    );
    example(
        &mut s,
        "# /etc/fstab\n\
         /home/u/disk.img  /home/u/mnt  fuse.lklfuse  type=ext4,user,noauto,x-gvfs-show,lkl.commit=30  0 0\n\
         /srv/backup.img   /srv/backup  fuse.lklfuse  type=xfs,allow_other,default_permissions,nofail  0 0\n\
         \n\
         $ mount /home/u/mnt\n\
         $ umount /home/u/mnt",
    );
    para(
        &mut s,
        "allow_other lets other users use the mount; for mounts made by ordinary users it \
         needs user_allow_other in /etc/fuse.conf. Each request runs as its caller, so every \
         user gets the permissions a native mount gives: the kernel inside the daemon checks \
         them, and so does the host kernel unless no_default_permissions is given.",
    );

    sh(&mut s, "SYSTEMD");
    para(
        &mut s,
        "The user unit lklfuse@.service mounts one image for its user. Its instance is the \
         image path escaped with systemd-escape --path; the mount point is \
         ~/lklfuse/INSTANCE, created on start and removed on stop. lklfuse runs in the \
         foreground and tells systemd when the mount is ready (Type=notify). systemctl stop \
         sends SIGTERM: lklfuse unmounts, writes everything to the image and flushes it, and \
         stop returns only then. Extra options go in LKLFUSE_OPTIONS, set in \
         ~/.config/lklfuse/INSTANCE.conf.",
    );
    example(
        &mut s,
        "$ i=$(systemd-escape --path ~/disk.img)\n\
         $ mkdir -p ~/.config/lklfuse\n\
         $ echo LKLFUSE_OPTIONS=type=ext4,lkl.discard > ~/.config/lklfuse/$i.conf\n\
         $ systemctl --user start lklfuse@$i.service\n\
         $ ls ~/lklfuse/$i\n\
         $ systemctl --user stop lklfuse@$i.service",
    );
    para(
        &mut s,
        "For ~/disk.img of user u the instance is home-u-disk.img. A system mount unit \
         works as for any FUSE filesystem: Type=fuse.lklfuse, What= the image, Where= the \
         mount point, Options= the -o list; an example is installed as mnt-disk.mount in the \
         documentation directory. Running lklfuse under systemd without -f needs \
         NotifyAccess=all, because the notification then comes from the background process.",
    );

    sh(&mut s, "USB STICKS");
    para(
        &mut s,
        "The udev rules 61-lklfuse-usb.rules and the system unit lklfuse-usb@.service \
         mount filesystems on USB storage through lklfuse for the user of the active \
         session on seat0, on /run/media/USER/LABEL, where file managers list them. udisks \
         is told to ignore those devices (UDISKS_IGNORE=1) so that they are not mounted \
         twice. This is opt-in: the rules do nothing until the administrator creates \
         /etc/lklfuse/usb-automount. Unmount with fusermount3 -u or by removing the stick; \
         file managers offer no Eject for these mounts.",
    );
    example(
        &mut s,
        "# mkdir -p /etc/lklfuse && touch /etc/lklfuse/usb-automount\n\
         # udevadm trigger --subsystem-match=block --action=change",
    );

    sh(&mut s, "EXIT STATUS");
    item(
        &mut s,
        "0",
        "Mounted (without -f: the mount is live); with -f: unmounted cleanly.",
    );
    item(
        &mut s,
        "1",
        "The image, kernel, mount or FUSE failed; the error is on stderr (or in the log= file).",
    );
    item(&mut s, "2", "The command line is wrong.");
    item(
        &mut s,
        "3",
        "The kernel inside lklfuse panicked or the process crashed while serving; the mount \
         was removed and the reason written to stderr, the log= file or, in the background \
         without log=, syslog.",
    );

    sh(&mut s, "ENVIRONMENT");
    item(
        &mut s,
        "NOTIFY_SOCKET",
        "set by systemd for Type=notify units: lklfuse sends READY=1 when the mount is live \
         and STOPPING=1 when it starts to unmount.",
    );
    item(
        &mut s,
        "RUST_LOG",
        "log filter (e.g. debug) for the messages lklfuse writes in the foreground or to log=.",
    );

    sh(&mut s, "FILES");
    item(
        &mut s,
        "/dev/fuse",
        "the FUSE device; must be usable by the user.",
    );
    item(
        &mut s,
        "/etc/fuse.conf",
        "user_allow_other lets ordinary users use allow_other.",
    );
    item(
        &mut s,
        "/usr/lib/systemd/user/lklfuse@.service",
        "the user unit (see SYSTEMD).",
    );
    item(
        &mut s,
        "/usr/lib/udev/rules.d/61-lklfuse-usb.rules, /usr/lib/systemd/system/lklfuse-usb@.service",
        "USB automounting (see USB STICKS).",
    );
    item(
        &mut s,
        "/etc/lklfuse/usb-automount",
        "if present, USB automounting is on.",
    );

    sh(&mut s, "EXAMPLES");
    para(&mut s, "Mount an ext4 image, use it and unmount it:");
    example(
        &mut s,
        "$ mkdir mnt\n\
         $ lklfuse -o type=ext4 disk.img mnt\n\
         $ cp -r ~/photos mnt/\n\
         $ fusermount3 -u mnt",
    );
    para(
        &mut s,
        "Mount the second partition of a disk image read-only:",
    );
    example(&mut s, "$ lklfuse -o ro,part=2 disk.img mnt");
    para(
        &mut s,
        "Stay in the foreground with debug messages, logging to a file:",
    );
    example(&mut s, "$ lklfuse -d -o log=/tmp/lklfuse.log disk.img mnt");

    sh(&mut s, "SEE ALSO");
    para(
        &mut s,
        "fusermount3(1), mount.fuse3(8), mount(8), fstab(5), systemd.mount(5), \
         systemd.service(5), systemd-escape(1), udev(7)",
    );
    s
}

fn main() -> io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for rel in generate(&out)? {
        println!("{}", out.join(rel).display());
    }
    Ok(())
}
