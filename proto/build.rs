//! Compiles the `.proto` files with protox (a pure-Rust protoc), so the build needs no
//! system `protoc`, and writes the descriptor set for gRPC server reflection: Arbiter's
//! own `arbiter.v1` and SpiceDB's `authzed.api.v1` (with the `google.rpc.Status` it uses).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "arbiter/v1/arbiter.proto",
        "google/rpc/status.proto",
        "authzed/api/v1/core.proto",
        "authzed/api/v1/permission_service.proto",
        "authzed/api/v1/schema_service.proto",
        "authzed/api/v1/watch_service.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("arbiter_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
