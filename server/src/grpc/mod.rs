//! The gRPC side: `arbiter.v1` services over one shared engine. Cheap reads (Check,
//! CheckBulk) run on the async workers; anything that waits on the disk or walks much
//! of the graph (writes, lookups, reads) runs on the blocking pool.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arbiter_engine::{Engine, LoggedCommit};
use tokio::sync::broadcast;
use tonic::Status;

use crate::metrics::Metrics;

pub mod permission;
pub mod relationship;
pub mod schema;

/// Request size limits (DESIGN §8: an oversized request is refused, naming the limit).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Updates plus preconditions in one WriteRelationships.
    pub max_updates_per_write: usize,
    /// Items in one CheckBulk.
    pub max_bulk_checks: usize,
    /// Relationships in one ImportRelationships message.
    pub max_import_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 << 20,
            max_updates_per_write: 1000,
            max_bulk_checks: 1000,
            max_import_batch: 10_000,
        }
    }
}

/// What every service shares.
#[derive(Debug)]
pub struct Shared {
    pub engine: Arc<Engine>,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Every published commit, for Watch.
    pub commits: broadcast::Sender<Arc<LoggedCommit>>,
    /// Set once the graph is loaded.
    pub ready: AtomicBool,
    /// Turns true when the server begins to shut down (ends open Watch streams).
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    pub fn new(
        engine: Arc<Engine>,
        limits: Limits,
        metrics: Metrics,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (commits, _) = broadcast::channel(4096);
        let tx = commits.clone();
        engine.subscribe(Box::new(move |c: &LoggedCommit| {
            // No receiver is fine: nobody is watching.
            let _ = tx.send(Arc::new(c.clone()));
        }));
        Arc::new(Shared {
            engine,
            limits,
            metrics,
            commits,
            ready: AtomicBool::new(false),
            stop,
        })
    }
}

/// Runs blocking engine work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("a worker failed: {e}")))?
}

pub fn too_many(what: &str, n: usize, limit: usize, flag: &str) -> Status {
    Status::invalid_argument(format!(
        "{n} {what} in one request, more than the limit of {limit} (`--{flag}`)"
    ))
}
