//! `arbiter-admin`: the admin server (DESIGN §12). It owns the platform's tables in the
//! Postgres schema `arbiter_admin` and feeds every change that grants access into the
//! PDP's relationship graph in the same transaction (`arbiter_write`), so a PDP replica
//! never disagrees with the tables. What a caller may do is itself a PDP Check on the
//! platform schema. The PDP's code does not depend on this crate; the `arbiter` binary
//! dispatches `arbiter admin` here.
//!
//! Map: [`cli`] (flags) -> [`server`] (process: listen, ready line, drain) ->
//! [`http`] (router, request context, metrics) -> [`api`] (one module per resource) over
//! [`db`] (a transaction as the RLS role, with its [`feed`] and [`audit`] record),
//! [`auth`] (callers and their authorization through [`pdp`]), [`problem`] (errors).
//! Background work: [`jobs`] (one instance at a time) runs [`alerting`] (alert rules
//! over the audit trail, sent by [`webhook`]) and the retention sweep.

pub mod alerting;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod db;
pub mod feed;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod page;
pub mod pdp;
pub mod problem;
pub mod ratelimit;
pub mod rbac;
pub mod secrets;
pub mod server;
pub mod webhook;

pub use cli::{AdminArgs, AdminCommand, ServeArgs};

/// The PDP's revision token for `revision` (its format: `r` and the decimal revision).
pub fn token(revision: u64) -> String {
    format!("r{revision}")
}
