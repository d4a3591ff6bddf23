//! The command lines of `cptofs`, `cpfromfs` and `fs2tar`, here rather than in the
//! binaries so that `examples/gen-docs.rs` can render their man pages and completions.

use std::path::PathBuf;

use clap::Parser;

use super::ImageArgs;

/// Copy files and directories into a filesystem image (no root, no mount).
#[derive(Parser, Debug)]
#[command(
    name = "cptofs",
    version,
    override_usage = "cptofs -i IMAGE [OPTIONS] SRC... DST"
)]
pub struct CptofsCli {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Keep owners, modes, times, xattrs and ACLs.
    #[arg(short = 'a', long = "archive")]
    pub archive: bool,
    /// SELinux context to set on everything copied in.
    #[arg(short = 's', long = "selinux", value_name = "CONTEXT")]
    pub selinux: Option<String>,
    /// Host files or directories, then the destination inside the image.
    #[arg(value_name = "PATH", num_args = 2.., required = true)]
    pub paths: Vec<PathBuf>,
}

/// Copy files and directories out of a filesystem image (no root, no mount).
#[derive(Parser, Debug)]
#[command(
    name = "cpfromfs",
    version,
    override_usage = "cpfromfs -i IMAGE [OPTIONS] SRC... DST"
)]
pub struct CpfromfsCli {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Keep owners, modes, times, xattrs and ACLs.
    #[arg(short = 'a', long = "archive")]
    pub archive: bool,
    /// Accepted for symmetry with cptofs; labels are copied as xattrs with -a.
    #[arg(short = 's', long = "selinux", value_name = "CONTEXT", hide = true)]
    pub selinux: Option<String>,
    /// Paths inside the image, then the host destination.
    #[arg(value_name = "PATH", num_args = 2.., required = true)]
    pub paths: Vec<PathBuf>,
}

/// Write the files of a filesystem image as a tar archive (pax format).
#[derive(Parser, Debug)]
#[command(name = "fs2tar", version)]
pub struct Fs2tarCli {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Archive only this directory inside the image.
    #[arg(
        short = 'C',
        long = "directory",
        value_name = "SUBDIR",
        default_value = "/"
    )]
    pub subdir: PathBuf,
    /// Output file; `-` (the default) is standard output.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "OUT.tar",
        default_value = "-"
    )]
    pub output: PathBuf,
}
