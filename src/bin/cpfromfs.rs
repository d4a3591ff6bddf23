//! `cpfromfs -i IMAGE [options] SRC... DST`: copy files and trees out of a disk image with
//! the Linux kernel's own filesystem code running in this process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lklfuse::tools::{self, copy_out, Error, ImageArgs, Interrupt, Progress};

/// Copy files and directories out of a filesystem image (no root, no mount).
#[derive(Parser, Debug)]
#[command(
    name = "cpfromfs",
    version,
    override_usage = "cpfromfs -i IMAGE [OPTIONS] SRC... DST"
)]
struct Cli {
    #[command(flatten)]
    image: ImageArgs,
    /// Keep owners, modes, times, xattrs and ACLs.
    #[arg(short = 'a', long = "archive")]
    archive: bool,
    /// Accepted for symmetry with cptofs; labels are copied as xattrs with -a.
    #[arg(short = 's', long = "selinux", value_name = "CONTEXT", hide = true)]
    selinux: Option<String>,
    /// Paths inside the image, then the host destination.
    #[arg(value_name = "PATH", num_args = 2.., required = true)]
    paths: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.image.init_logging();
    tools::finish("cpfromfs", run(&cli))
}

fn run(cli: &Cli) -> Result<(), Error> {
    let (dst, sources) = cli
        .paths
        .split_last()
        .ok_or_else(|| Error::Invalid("missing destination".into()))?;
    if cli.selinux.is_some() {
        tracing::warn!("-s only applies to cptofs; ignored");
    }
    let interrupt = Interrupt::install()?;
    let image = cli.image.open(true)?;
    let options = copy_out::Options {
        archive: cli.archive,
    };
    let mut progress = Progress::new(cli.image.show_progress(), cli.image.verbose > 0);
    tools::with_image(image, |image| {
        copy_out::copy(image, sources, dst, &options, &mut progress, &interrupt)
    })
}
