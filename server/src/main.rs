//! `arbiter`: the policy decision point and its command-line tools.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
