//! `completions SHELL` and `manpage`: shell completion scripts and the
//! man page, both generated from the clap definition ([`super::Cli`]), so
//! they always list the commands and options this binary has. The `.deb`
//! ships their output (see `.ci/run`).

use std::io::Write;

use clap::CommandFactory;

use super::{CompletionsArgs, Outcome};

/// The binary's name as the shell and `man` know it.
const BIN: &str = "spatialgen-sync";

pub fn completions(args: CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut super::Cli::command(), BIN, &mut out);
    out.flush()?;
    Ok(Outcome::Success)
}

pub fn manpage() -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(super::Cli::command()).render(&mut out)?;
    out.flush()?;
    Ok(Outcome::Success)
}
