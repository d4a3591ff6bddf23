//! `cpfromfs -i IMAGE [options] SRC... DST`: copy files and trees out of a disk image with
//! the Linux kernel's own filesystem code running in this process.

use std::process::ExitCode;

use clap::Parser;
use lklfuse::tools::cli::CpfromfsCli as Cli;
use lklfuse::tools::{self, copy_out, Error, Interrupt, Progress};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.image.init_logging();
    tools::arm_fatal("cpfromfs");
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
