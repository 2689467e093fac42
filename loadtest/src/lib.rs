//! `arbiter-loadtest`: a seeded dataset generator (`gen`), an open-loop load
//! generator (`run`, `max`) for Arbiter's gRPC API, and a crash-durability harness
//! (`crash`).
//!
//! The pure parts are separate from the network: [`dataset`] writes files only,
//! [`schedule`] is the open-loop core (due times, pacing, latency recording) generic over
//! "send one request", and [`workload`] is the only module of `run`/`max` that knows
//! gRPC. In `crash`, [`crash::ledger`] (what was acknowledged, and the check of a state
//! read back against it) is pure; the processes and the gRPC clients are around it.

pub mod admin;
pub mod args;
pub mod cli;
pub mod crash;
pub mod dataset;
pub mod digest;
pub mod plot;
pub mod report;
pub mod rng;
pub mod schedule;
pub mod workload;
