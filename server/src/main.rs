//! `arbiter`: the policy decision point and its command-line tools.

mod auth;
mod authzen;
mod cli;
mod convert;
mod decisions;
mod grpc;
mod http;
mod metrics;
mod postgres;
mod serve;
mod token;

fn main() -> std::process::ExitCode {
    cli::run()
}
