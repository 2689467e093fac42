//! `arbiter-proto`: generated gRPC types for `proto/arbiter/v1` and `authzed.api.v1`.
//!
//! Empty until the server issue adds the `.proto` files and the tonic/prost build; it
//! exists now so the workspace has its final shape and the layering rule (only `server`
//! and `loadtest` depend on it) holds from the start.
