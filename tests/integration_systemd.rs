//! The shipped systemd units and udev rules, for real: every unit passes
//! `systemd-analyze verify`; the user unit's and the USB unit's Exec lines run as
//! written (specifiers and environment expanded as systemd does) with a fake
//! NOTIFY_SOCKET: READY=1 with the mount live, SIGTERM (systemd's stop) gives
//! STOPPING=1, exit 0, a clean image and a removed mount point; the udev rules
//! parse and match only USB filesystems, only when enabled.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fuse::{
    self, command, fsck_clean, fuse_mounted, fuse_test, mounts_at, path_str, q, run, sh_as, subdir,
    EXIT_LIMIT, MOUNT_LIMIT,
};
use common::images::Fs;
use common::integration::{
    expand, installed_to_built, read_env_file, repo, run_exec, systemd_escape, NotifySocket, Unit,
    UnitProcess,
};

const FILE: &str = "integration_systemd";
const LIMIT: Duration = Duration::from_secs(120);
const USER: (u32, u32) = (2001, 2001);

/// `systemd-analyze verify` of `unit` (copied to `dir` under `name`, with the installed
/// paths pointing at the built ones), with lklfuse(8) findable for Documentation=.
fn verify(dir: &Path, unit: &str, name: &str, user: bool) {
    let text = fs::read_to_string(repo().join("systemd").join(unit)).expect("read unit");
    let copy = dir.join(name);
    fs::write(&copy, installed_to_built(&text)).expect("write unit copy");
    let man = subdir(dir, "man/man8", 0o755, None);
    fs::copy(repo().join("man/lklfuse.8"), man.join("lklfuse.8")).expect("copy man page");
    let runtime = subdir(dir, "runtime", 0o700, None);
    let mut args = vec!["verify"];
    if user {
        args.push("--user");
    }
    args.push(path_str(&copy));
    let mut cmd = command("systemd-analyze", &args);
    cmd.env("MANPATH", path_str(&dir.join("man")))
        .env("XDG_RUNTIME_DIR", path_str(&runtime));
    let out = run(&mut cmd);
    assert!(
        out.ok() && out.stderr.trim().is_empty() && out.stdout.trim().is_empty(),
        "{unit} does not verify cleanly: {}",
        out.describe()
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    fuse_test(FILE, "verify", LIMIT, |dir| {
        verify(
            &dir,
            "lklfuse@.service",
            "lklfuse@home-u-disk.img.service",
            true,
        );
        verify(
            &dir,
            "lklfuse-usb@.service",
            "lklfuse-usb@sdb1.service",
            false,
        );
        verify(&dir, "mnt-disk.mount", "mnt-disk.mount", false);
        // The example's name must match its Where= (systemd refuses it otherwise).
        let unit = Unit::load(&repo().join("systemd/mnt-disk.mount"));
        let name = systemd_escape(&["--path", "--suffix=mount", &unit.one("Mount", "Where")]);
        assert_eq!(name, "mnt-disk.mount");
        assert_eq!(unit.one("Mount", "Type"), "fuse.lklfuse");
        for u in ["lklfuse@.service", "lklfuse-usb@.service", "mnt-disk.mount"] {
            let unit = Unit::load(&repo().join("systemd").join(u));
            assert_eq!(unit.one("Unit", "Documentation"), "man:lklfuse(8)", "{u}");
        }
    });
}

/// Environment= and EnvironmentFile= of a unit, as systemd reads them.
fn unit_env(unit: &Unit, specs: &[(char, &str)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in unit.all("Service", "Environment") {
        let (k, v) = e.split_once('=').expect("KEY=VALUE");
        env.insert(k.to_string(), v.to_string());
    }
    for f in unit.all("Service", "EnvironmentFile") {
        let line = expand(&f, specs, &env);
        read_env_file(Path::new(&line.argv[0]), &mut env);
    }
    env
}

#[test]
fn user_unit_runs_as_written() {
    fuse_test(FILE, "user_unit", LIMIT, |dir| {
        let (uid, gid) = USER;
        let home = subdir(&dir, "home", 0o755, Some(USER));
        let img = home.join("disk.img");
        fuse::make_ext4_owned(&img, 64, uid, gid);
        fuse::chown(&img, uid, gid);

        let instance = systemd_escape(&["--path", path_str(&img)]);
        let f = systemd_escape(&["--unescape", "--path", &instance]);
        assert_eq!(Path::new(&f), img, "%f must give back the image path");
        let unescaped = systemd_escape(&["--unescape", &instance]);
        let config = home.join(".config");
        let conf_dir = subdir(&home, ".config/lklfuse", 0o755, Some(USER));
        fs::write(
            conf_dir.join(format!("{instance}.conf")),
            "LKLFUSE_OPTIONS=type=ext4,lkl.commit=30,lkl.errors=remount-ro\n",
        )
        .expect("write conf");

        let unit = Unit::load(&repo().join("systemd/lklfuse@.service"));
        assert_eq!(unit.one("Service", "Type"), "notify");
        assert_eq!(unit.one("Service", "KillMode"), "mixed");
        let runtime = subdir(&dir, "run", 0o700, Some(USER));
        let specs: Vec<(char, &str)> = vec![
            ('i', &instance),
            ('I', &unescaped),
            ('f', &f),
            ('h', path_str(&home)),
            ('E', path_str(&config)),
            ('t', path_str(&runtime)),
        ];
        let env = unit_env(&unit, &specs);
        assert_eq!(
            env.get("LKLFUSE_OPTIONS").map(String::as_str),
            Some("type=ext4,lkl.commit=30,lkl.errors=remount-ro"),
            "EnvironmentFile= must override Environment="
        );
        for pre in unit.all("Service", "ExecStartPre") {
            run_exec(&expand(&pre, &specs, &env), Some(USER), &[]);
        }
        let mnt = home.join("lklfuse").join(&instance);
        assert!(mnt.is_dir(), "ExecStartPre must create {}", mnt.display());

        let mut start = expand(&unit.one("Service", "ExecStart"), &specs, &env);
        assert_eq!(start.argv[0], "/usr/bin/lklfuse");
        assert!(
            start.argv.contains(&"-f".to_string()),
            "Type=notify needs -f"
        );
        start.argv[0] = installed_to_built(&start.argv[0]);
        let mut notify = NotifySocket::bind(&dir);
        let sock = path_str(&notify.path).to_string();
        let mut daemon = UnitProcess::spawn(
            &start.argv,
            Some(USER),
            &[("NOTIFY_SOCKET", &sock)],
            &dir.join("daemon.log"),
            &mnt,
        );
        if let Err(e) = notify.wait_for("READY=1", MOUNT_LIMIT) {
            panic!("{e}; daemon output:\n{}", daemon.log_text());
        }
        assert!(fuse_mounted(&mnt), "READY=1 but nothing mounted");
        let info = mounts_at(&mnt).pop().expect("mount");
        assert_eq!(info.fstype, "fuse.lklfuse");
        assert_eq!(Path::new(&info.source), img);
        let m = q(&mnt);
        let written = sh_as(
            uid,
            gid,
            &[],
            &format!(
                "head -c 3000000 /dev/urandom > {m}/data && sha256sum < {m}/data | cut -d' ' -f1"
            ),
        )
        .expect_ok();

        // systemctl stop: SIGTERM to the main process, then wait for it.
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait(EXIT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
        notify
            .wait_for("STOPPING=1", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!fuse_mounted(&mnt), "exited but still mounted");
        for post in unit.all("Service", "ExecStopPost") {
            run_exec(&expand(&post, &specs, &env), Some(USER), &[]);
        }
        assert!(!mnt.exists(), "ExecStopPost must remove the mount point");

        // Everything is on disk: the checker is happy and the file is there.
        fsck_clean(Fs::Ext4, &img);
        let out = dir.join("data.out");
        run(&mut command(
            "debugfs",
            &[
                "-R",
                &format!("dump /data {}", path_str(&out)),
                path_str(&img),
            ],
        ))
        .expect_ok();
        assert_eq!(fuse::sha(&out), written.trim());
    });
}

/// A loop device for `img`, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(img: &Path) -> Loop {
        let dev = run(&mut command("losetup", &["-f", "--show", path_str(img)])).expect_ok();
        Loop(dev.trim().to_string())
    }

    fn name(&self) -> &str {
        self.0.trim_start_matches("/dev/")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = fuse::run_limited(
            &mut command("losetup", &["-d", &self.0]),
            Duration::from_secs(10),
        );
    }
}

/// An ext4 image labelled `label` whose root belongs to the test user.
fn labelled_ext4(img: &Path, label: &str) {
    common::images::blank_image(img, 64 << 20).unwrap_or_else(|e| panic!("{e}"));
    run(&mut command(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            label,
            "-E",
            "root_owner=2001:2001",
            path_str(img),
        ],
    ))
    .expect_ok();
}

#[test]
fn usb_unit_mounts_for_the_seat_user() {
    fuse_test(FILE, "usb_unit", LIMIT, |dir| {
        let (uid, gid) = USER;
        let img = dir.join("stick.img");
        labelled_ext4(&img, "My Stick");
        let dev = Loop::attach(&img);
        let kname = dev.name().to_string();

        let unit = Unit::load(&repo().join("systemd/lklfuse-usb@.service"));
        assert_eq!(unit.one("Service", "Type"), "notify");
        let specs: Vec<(char, &str)> = vec![('i', &kname), ('I', &kname)];
        let env = BTreeMap::new();
        let runtime = subdir(&dir, "run", 0o755, None);
        let media = dir.join("media");
        let mut start = expand(&unit.one("Service", "ExecStart"), &specs, &env);
        assert_eq!(start.argv[1], dev.0);
        start.argv[0] = installed_to_built(&start.argv[0]);
        let mut notify = NotifySocket::bind(&dir);
        let vars: Vec<(&str, String)> = vec![
            ("NOTIFY_SOCKET", path_str(&notify.path).to_string()),
            // No logind seat here: name the user as on a seatless system.
            ("LKLFUSE_USB_USER", "lklfuse-a".to_string()),
            ("LKLFUSE_MEDIA_DIR", path_str(&media).to_string()),
            ("LKLFUSE", fuse::BIN.to_string()),
            ("RUNTIME_DIRECTORY", path_str(&runtime).to_string()),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mnt = media.join("lklfuse-a").join("My Stick");
        let mut daemon = UnitProcess::spawn(&start.argv, None, &vars, &dir.join("usb.log"), &mnt);
        if let Err(e) = notify.wait_for("READY=1", MOUNT_LIMIT) {
            panic!("{e}; output:\n{}", daemon.log_text());
        }
        let info = mounts_at(&mnt)
            .pop()
            .unwrap_or_else(|| panic!("nothing at {}: {}", mnt.display(), daemon.log_text()));
        assert_eq!(info.fstype, "fuse.lklfuse");
        assert_eq!(info.source, dev.0, "fsname= is the device");
        assert!(
            info.super_options.contains(&format!("user_id={uid}")),
            "the mount must belong to the seat's user: {info:?}"
        );
        let m = q(&mnt);
        sh_as(uid, gid, &[], &format!("echo hello > {m}/f && cat {m}/f")).expect_ok();

        daemon.signal(libc::SIGTERM);
        let status = daemon.wait(EXIT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
        notify
            .wait_for("STOPPING=1", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        for post in unit.all("Service", "ExecStopPost") {
            run_exec(&expand(&post, &specs, &env), None, &vars);
        }
        assert!(!mnt.exists(), "cleanup must remove {}", mnt.display());
        drop(dev);
        fsck_clean(Fs::Ext4, &img);
    });
}

/// The properties `udevadm test` computes for `dev` with our rules (enable file
/// `enable`) and, when `usb`, a rule before them claiming the device is on USB. Runs in
/// a private mount namespace so that nothing of the host's udev state changes.
fn udev_properties(dir: &Path, dev: &str, enable: &Path, usb: bool) -> (String, String) {
    let rules = fs::read_to_string(repo().join("udev/61-lklfuse-usb.rules")).expect("rules");
    assert!(rules.contains("/etc/lklfuse/usb-automount"));
    let rules = rules.replace("/etc/lklfuse/usb-automount", path_str(enable));
    let staged = dir.join(format!("rules-{usb}"));
    fs::create_dir_all(&staged).expect("mkdir");
    fs::write(staged.join("61-lklfuse-usb.rules"), rules).expect("write rules");
    if usb {
        fs::write(
            staged.join("00-lklfuse-test-usb.rules"),
            "SUBSYSTEM==\"block\", ENV{ID_BUS}=\"usb\"\n",
        )
        .expect("write rules");
    }
    let script = format!(
        "set -e\n\
         for d in /dev/disk /dev/block /run/udev; do\n\
           if [ -d $d ]; then mount -t tmpfs tmpfs $d; fi\n\
         done\n\
         mount -t tmpfs tmpfs /etc/udev/rules.d\n\
         cp {staged}/*.rules /etc/udev/rules.d/\n\
         exec timeout 30 udevadm test --action=add /sys/class/block/{dev}\n",
        staged = q(&staged),
    );
    let out = run(&mut command(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    ));
    assert!(out.ok(), "udevadm test: {}", out.describe());
    (out.stdout, out.stderr)
}

#[test]
fn udev_rules_parse_and_match_only_enabled_usb() {
    fuse_test(FILE, "udev", LIMIT, |dir| {
        let text = fs::read_to_string(repo().join("udev/61-lklfuse-usb.rules")).expect("rules");
        // Lint: every rule line is KEY op "VALUE" pairs with keys udev knows.
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            for pair in line.split(", ") {
                let (key, value) = pair
                    .split_once(['=', '!', '+'])
                    .unwrap_or_else(|| panic!("no operator in {pair:?}"));
                let key = key.split('{').next().unwrap_or(key);
                assert!(
                    ["SUBSYSTEM", "ACTION", "TEST", "ENV", "TAG", "GOTO", "LABEL"].contains(&key),
                    "unexpected key {key} in {line:?}"
                );
                let value = value.trim_start_matches(['=', '+', '!']);
                assert!(
                    value.starts_with('"') && value.ends_with('"') && value.len() >= 2,
                    "unquoted value in {pair:?}"
                );
            }
        }

        let img = dir.join("stick.img");
        labelled_ext4(&img, "STICK");
        let dev = Loop::attach(&img);
        let enable = dir.join("usb-automount");
        let wants = format!("SYSTEMD_WANTS=lklfuse-usb@{}.service", dev.name());

        // Off until enabled.
        let (props, log) = udev_properties(&dir, dev.name(), &enable, true);
        assert!(
            log.contains("61-lklfuse-usb.rules"),
            "udevadm did not read our rules:\n{log}"
        );
        assert!(
            !props.contains("UDISKS_IGNORE") && !props.contains(&wants),
            "rules act while disabled:\n{props}"
        );
        for line in log.lines().chain(props.lines()) {
            assert!(
                !line.contains("61-lklfuse-usb.rules:"),
                "udev complains about our rules: {line}"
            );
        }

        fs::write(&enable, "").expect("enable");
        let (props, _) = udev_properties(&dir, dev.name(), &enable, true);
        assert!(props.contains("UDISKS_IGNORE=1"), "{props}");
        assert!(props.contains(&wants), "{props}");
        assert!(props.contains("ID_FS_TYPE=ext4"), "{props}");

        // Not on USB: left alone even when enabled.
        let (props, _) = udev_properties(&dir, dev.name(), &enable, false);
        assert!(
            !props.contains("UDISKS_IGNORE") && !props.contains(&wants),
            "{props}"
        );
    });
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let scripts: Vec<PathBuf> = vec![
        repo().join("udev/lklfuse-usb-mount"),
        repo().join("contrib/install.sh"),
    ];
    let mut args = vec!["-x"];
    args.extend(scripts.iter().map(|p| path_str(p)));
    let out = run(&mut command("shellcheck", &args));
    assert!(out.ok(), "{}", out.describe());
}
