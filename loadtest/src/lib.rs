//! `arbiter-loadtest`: a seeded dataset generator (`gen`) and an open-loop load
//! generator (`run`, `max`) for Arbiter's gRPC API.
//!
//! The pure parts are separate from the network: [`dataset`] writes files only,
//! [`schedule`] is the open-loop core (due times, pacing, latency recording) generic over
//! "send one request", and [`workload`] is the only module that knows gRPC.

pub mod args;
pub mod cli;
pub mod dataset;
pub mod digest;
pub mod plot;
pub mod report;
pub mod rng;
pub mod schedule;
pub mod workload;
