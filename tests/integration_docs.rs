//! The committed man pages and shell completions are what `cargo run --example gen-docs`
//! writes now; the man pages render without warnings; `contrib/install.sh` puts every
//! file where Debian expects it.

mod common;

#[allow(dead_code)]
#[path = "../examples/gen-docs.rs"]
mod gen_docs;

use std::fs;
use std::path::Path;

use common::fuse::{command, path_str, run, BIN};
use common::integration::repo;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lklfuse-integration-docs-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[test]
fn generated_docs_are_current() {
    let out = temp_dir("gen");
    let written = gen_docs::generate(&out).expect("generate");
    assert!(written.iter().any(|p| p == Path::new("man/lklfuse.8")));
    for rel in &written {
        let fresh = fs::read(out.join(rel)).expect("read generated");
        let committed = fs::read(repo().join(rel)).unwrap_or_default();
        assert!(
            fresh == committed,
            "{} is not current: run `cargo run --example gen-docs` and commit the result",
            rel.display()
        );
    }
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn man_pages_render_without_warnings() {
    for entry in fs::read_dir(repo().join("man")).expect("man/") {
        let page = entry.expect("entry").path();
        let p = path_str(&page);
        let mut cmd = command("man", &["-l", p]);
        cmd.env("MANWIDTH", "80").env("MAN_KEEP_STDERR", "1");
        let out = run(&mut cmd);
        assert!(
            out.ok() && out.stderr.trim().is_empty(),
            "man -l {p}: {}",
            out.describe()
        );
        assert!(out.stdout.contains("NAME") && out.stdout.contains("SEE ALSO"));
        let out = run(&mut command("groff", &["-man", "-Tutf8", "-ww", "-z", p]));
        assert!(
            out.ok() && out.stderr.trim().is_empty(),
            "groff -ww {p}: {}",
            out.describe()
        );
    }
    // Every -o option of the daemon is documented.
    let page = fs::read_to_string(repo().join("man/lklfuse.8")).expect("lklfuse.8");
    for (option, _) in lklfuse::daemon::options::mount_option_help() {
        let first = option.split([',', '=', '[']).next().unwrap_or(option);
        assert!(page.contains(first), "lklfuse.8 lacks {option}");
    }
}

#[test]
fn install_script_places_everything() {
    let dest = temp_dir("install");
    // The binaries are built already (this test runs from them): no cargo run here.
    let out = run(command(
        path_str(&repo().join("contrib/install.sh")),
        &[
            "--prefix",
            "/usr",
            "--destdir",
            path_str(&dest),
            "--no-build",
        ],
    )
    .env("CARGO_TARGET_DIR", path_str(bin_target())));
    assert!(out.ok(), "install.sh: {}", out.describe());
    for rel in [
        "usr/bin/lklfuse",
        "usr/share/man/man8/lklfuse.8",
        "usr/share/bash-completion/completions/lklfuse",
        "usr/share/zsh/vendor-completions/_lklfuse",
        "usr/share/fish/vendor_completions.d/lklfuse.fish",
        "usr/lib/systemd/user/lklfuse@.service",
        "usr/lib/systemd/system/lklfuse-usb@.service",
        "usr/lib/udev/rules.d/61-lklfuse-usb.rules",
        "usr/lib/lklfuse/lklfuse-usb-mount",
        "usr/share/doc/lklfuse/examples/mnt-disk.mount",
    ] {
        assert!(dest.join(rel).is_file(), "install.sh did not install {rel}");
    }
    let unit = fs::read_to_string(dest.join("usr/lib/systemd/user/lklfuse@.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/lklfuse -f"));

    // Another prefix: the units name the binaries there.
    let dest2 = temp_dir("install-local");
    let out = run(command(
        path_str(&repo().join("contrib/install.sh")),
        &[
            "--prefix",
            "/usr/local",
            "--destdir",
            path_str(&dest2),
            "--no-build",
        ],
    )
    .env("CARGO_TARGET_DIR", path_str(bin_target())));
    assert!(out.ok(), "install.sh: {}", out.describe());
    let unit = fs::read_to_string(dest2.join("usr/local/lib/systemd/system/lklfuse-usb@.service"))
        .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/lib/lklfuse/lklfuse-usb-mount /dev/%I"));
    let helper = fs::read_to_string(dest2.join("usr/local/lib/lklfuse/lklfuse-usb-mount")).unwrap();
    assert!(helper.contains("${LKLFUSE:-/usr/local/bin/lklfuse}"));
    let _ = fs::remove_dir_all(&dest);
    let _ = fs::remove_dir_all(&dest2);
}

/// The target directory holding `release/lklfuse` (the binary under test).
fn bin_target() -> &'static Path {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("BIN is TARGET/PROFILE/lklfuse")
}
