//! `arbiter`: the policy decision point and its command-line tools.

mod auth;
mod authzen;
mod cli;
mod convert;
mod decisions;
mod grpc;
mod http;
mod metrics;
mod platform;
mod postgres;
mod serve;
mod token;

/// jemalloc instead of the C library's allocator: an import allocates and frees small
/// blocks by the million (protobuf strings, the graph delta's entries), and glibc's
/// malloc and free were 15% of a 10M import's time; with jemalloc the whole C library is
/// 7% (BENCHMARKS, session 8).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
