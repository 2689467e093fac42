//! `arbiter-loadtest`: see `arbiter-loadtest --help` and the crate's README.

fn main() -> std::process::ExitCode {
    arbiter_loadtest::cli::main()
}
