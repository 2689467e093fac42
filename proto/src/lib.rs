//! `arbiter-proto`: generated gRPC types and services for `proto/arbiter/v1` and for
//! SpiceDB's `authzed.api.v1` (served beside it for drop-in compatibility). Only the
//! server and the load generator depend on it; engine types never derive prost.

#![allow(missing_debug_implementations, reason = "generated code")]
#![allow(clippy::all, reason = "generated code")]

pub mod arbiter {
    pub mod v1 {
        tonic::include_proto!("arbiter.v1");
    }
}

/// SpiceDB's API, written from its public reference (see `proto/authzed`).
pub mod authzed {
    pub mod api {
        pub mod v1 {
            tonic::include_proto!("authzed.api.v1");
        }
    }
}

/// `google.rpc.Status`, which `authzed.api.v1` uses for CheckBulkPermissions errors.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/arbiter_descriptor.bin"));
