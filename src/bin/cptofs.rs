//! `cptofs -i IMAGE [options] SRC... DST`: copy host files and trees into a disk image with
//! the Linux kernel's own filesystem code running in this process.

use std::process::ExitCode;

use clap::Parser;
use lklfuse::tools::cli::CptofsCli as Cli;
use lklfuse::tools::{self, copy_in, Error, Interrupt, Progress};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.image.init_logging();
    tools::arm_fatal("cptofs");
    tools::finish("cptofs", run(&cli))
}

fn run(cli: &Cli) -> Result<(), Error> {
    let (dst, sources) = cli
        .paths
        .split_last()
        .ok_or_else(|| Error::Invalid("missing destination".into()))?;
    copy_in::check_sources(sources)?;
    let interrupt = Interrupt::install()?;
    let image = cli.image.open(false)?;
    let options = copy_in::Options {
        archive: cli.archive,
        selinux: cli.selinux.clone(),
    };
    let mut progress = Progress::new(cli.image.show_progress(), cli.image.verbose > 0);
    tools::with_image(image, |image| {
        copy_in::copy(image, sources, dst, &options, &mut progress, &interrupt)
    })
}
