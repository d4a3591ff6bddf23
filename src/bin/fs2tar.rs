//! `fs2tar -i IMAGE [options] [-C SUBDIR] [-f OUT.tar|-]`: a filesystem image (or a subtree)
//! as a pax tar stream, read with the Linux kernel's own filesystem code in this process.
//! Files with holes are written in GNU tar's PAX sparse format 1.0 (as `tar --sparse`
//! writes them), which GNU tar extracts sparse; readers without it get the condensed data
//! under `GNUSparseFile.0/` next to where the file belongs.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use lklfuse::tools::cli::Fs2tarCli as Cli;
use lklfuse::tools::{self, Error, Interrupt, Progress};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.image.init_logging();
    tools::arm_fatal("fs2tar");
    tools::finish("fs2tar", run(&cli))
}

fn run(cli: &Cli) -> Result<(), Error> {
    let to_stdout = cli.output.as_os_str() == "-";
    if to_stdout && io::stdout().is_terminal() {
        return Err(Error::Invalid(
            "refusing to write a tar archive to a terminal (use -f FILE or a pipe)".into(),
        ));
    }
    let interrupt = Interrupt::install()?;
    let image = cli.image.open(true)?;
    let mut progress = Progress::new(cli.image.show_progress(), cli.image.verbose > 0);
    tools::with_image(image, |image| {
        let out: Box<dyn Write> = if to_stdout {
            Box::new(io::stdout().lock())
        } else {
            Box::new(File::create(&cli.output).map_err(Error::host(&cli.output))?)
        };
        let out = BufWriter::with_capacity(1 << 20, out);
        tools::tar::write(image, &cli.subdir, out, &mut progress, &interrupt)
    })
}
