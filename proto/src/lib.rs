//! `arbiter-proto`: generated gRPC types and services for `proto/arbiter/v1`. Only the
//! server and the load generator depend on it; engine types never derive prost.

#![allow(missing_debug_implementations, reason = "generated code")]
#![allow(clippy::all, reason = "generated code")]

pub mod arbiter {
    pub mod v1 {
        tonic::include_proto!("arbiter.v1");
    }
}

/// The encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/arbiter_descriptor.bin"));
