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

/// jemalloc instead of the C library's allocator: a graph compaction allocates and frees
/// arrays of hundreds of megabytes, which glibc maps fresh from the kernel each time (a
/// page fault per 4 KiB page, a third of a compaction's time), where jemalloc reuses
/// freed memory; and the request path's many small allocations (protobuf strings, HTTP/2
/// frames) are cheaper in its per-thread caches.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
