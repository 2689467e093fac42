//! `arbiter-loadtest`: the dataset and load generator. Not built yet (it needs the gRPC
//! server); until then it says so and exits with status 2.

fn main() -> std::process::ExitCode {
    eprintln!("arbiter-loadtest: not implemented yet; it arrives with the load-test issue");
    std::process::ExitCode::from(2)
}
