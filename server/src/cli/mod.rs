//! Command-line entry: parses arguments and dispatches to one module per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod validate;

#[derive(Debug, Parser)]
#[command(name = "arbiter", version, about = "Arbiter: a Zanzibar-style policy decision point")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run validation files (SpiceDB's YAML format): load each into a fresh engine and
    /// check its assertions and expected relations.
    Validate {
        /// Files, or directories whose `*.yaml` files are all run.
        #[arg(required = true, value_name = "FILE_OR_DIR")]
        paths: Vec<PathBuf>,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => validate::run(&paths),
    }
}
