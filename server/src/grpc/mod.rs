//! The gRPC side: `arbiter.v1` services over one shared engine. Cheap reads (Check,
//! CheckBulk) run on the async workers; anything that waits on the disk or walks much
//! of the graph (writes, lookups, reads) runs on the blocking pool.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arbiter_engine::{ChangesAfter, Engine, LoggedCommit, Precondition, RelationshipFilter, RelationshipUpdate};
use arbiter_proto::arbiter::v1 as pb;
use arbiter_schema::Relationship;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::convert::{self, status};
use crate::metrics::Metrics;
use crate::postgres::replica::Replica;

pub mod authzed;
pub mod permission;
pub mod relationship;
pub mod schema;

/// The most relationships one import commit gathers from a client stream's messages.
pub const IMPORT_GROUP: usize = 1 << 21;

/// The same through a Postgres replica, where a commit is one `arbiter_write` call
/// whose JSON argument must stay well below Postgres' 255 MB limit for a `jsonb` value.
pub const REPLICA_IMPORT_GROUP: usize = 25_000;

/// An import commit in flight: how many relationships, and its revision or error.
type ImportCommit<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, Result<u64, Status>)> + Send + 'a>>;

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
    /// Import streams (both APIs) that may run at once; more are refused with
    /// RESOURCE_EXHAUSTED. Each buffers at most `IMPORT_GROUP` relationships (25,000 on a
    /// replica) while its previous commit runs.
    pub max_concurrent_imports: usize,
    /// How long a send to a streaming client (Export, Watch) may wait for it to read
    /// before the stream is ended with RESOURCE_EXHAUSTED: a stalled client must not pin
    /// a thread or an old revision.
    pub stream_send_timeout: std::time::Duration,
    /// The most results one page holds: a larger limit on a lookup or read is refused
    /// (0 streams everything, a page at a time); AuthZEN searches page at most this.
    pub max_page_size: usize,
    /// Lookups, reads and exports (on every API) that run at once; more wait their turn
    /// (within the request timeout) instead of each holding a walk's memory at once.
    pub max_heavy_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 << 20,
            max_updates_per_write: 1000,
            max_bulk_checks: 1000,
            max_import_batch: 10_000,
            max_concurrent_imports: 4,
            stream_send_timeout: std::time::Duration::from_secs(30),
            max_page_size: 1000,
            max_heavy_calls: 4,
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
    /// With `--postgres`: the replica that orders writes through Postgres and waits for
    /// the revisions reads ask for. `None` on the embedded store.
    pub replica: Option<Arc<Replica>>,
    /// With `--decision-log`: where sampled decisions go.
    pub decisions: std::sync::OnceLock<crate::decisions::DecisionLog>,
    /// One permit per running import stream (`Limits::max_concurrent_imports`).
    imports: tokio::sync::Semaphore,
    /// One permit per running lookup, read or export (`Limits::max_heavy_calls`).
    heavy: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    pub fn new(
        engine: Arc<Engine>,
        limits: Limits,
        metrics: Metrics,
        stop: tokio::sync::watch::Receiver<bool>,
        replica: Option<Arc<Replica>>,
    ) -> Arc<Self> {
        let (commits, _) = broadcast::channel(4096);
        let tx = commits.clone();
        engine.subscribe(Box::new(move |c: &LoggedCommit| {
            // Nobody watching: no copy of the commit (a bulk import's is large).
            if tx.receiver_count() > 0 {
                let _ = tx.send(Arc::new(c.clone()));
            }
        }));
        Arc::new(Shared {
            engine,
            imports: tokio::sync::Semaphore::new(limits.max_concurrent_imports),
            heavy: Arc::new(tokio::sync::Semaphore::new(limits.max_heavy_calls.max(1))),
            limits,
            metrics,
            commits,
            ready: AtomicBool::new(false),
            stop,
            replica,
            decisions: std::sync::OnceLock::new(),
        })
    }

    /// A turn for a lookup, read or export: waits while `--max-heavy-calls` of them run
    /// (the request timeout bounds the wait). Hold it until the call's last result is sent.
    pub async fn heavy_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.heavy.clone().acquire_owned().await.map_err(|_| Status::unavailable("the server is shutting down"))
    }

    /// A request's page limit (0: none), refused above `--max-page-size`.
    pub fn page_limit(&self, limit: u32, field: &str) -> Result<Option<usize>, Status> {
        let max = self.limits.max_page_size;
        match limit as usize {
            0 => Ok(None),
            n if n > max => Err(Status::invalid_argument(format!(
                "`{field}` is {n}, above the server's page size of {max} (`--max-page-size`): ask for at most {max} and follow the cursor, or 0 to stream every result"
            ))),
            n => Ok(Some(n)),
        }
    }

    /// Before a read: on a replica, waits (bounded) until the revision the request's
    /// consistency asks for has been applied here. Nothing to wait for on the embedded
    /// store, where every committed revision is already applied.
    pub async fn fresh(&self, c: Option<&pb::Consistency>) -> Result<(), Status> {
        let Some(replica) = &self.replica else { return Ok(()) };
        match convert::consistency(c)? {
            arbiter_engine::Consistency::MinimizeLatency => Ok(()),
            arbiter_engine::Consistency::FullyConsistent => replica.wait_for_head().await.map(|_| ()),
            arbiter_engine::Consistency::AtLeastAsFresh(r) | arbiter_engine::Consistency::AtExactSnapshot(r) => {
                replica.wait_for(r).await
            }
        }
    }

    /// One atomic relationship write.
    pub async fn write(&self, updates: Vec<RelationshipUpdate>, preconditions: Vec<Precondition>) -> Result<u64, Status> {
        match &self.replica {
            Some(replica) => replica.write(updates, preconditions).await,
            None => {
                let engine = self.engine.clone();
                blocking(move || engine.write_with_preconditions(&updates, &preconditions).map_err(status)).await
            }
        }
    }

    /// Deletes by filter: (how many, revision).
    pub async fn delete(
        &self,
        filter: RelationshipFilter,
        preconditions: Vec<Precondition>,
        limit: Option<usize>,
    ) -> Result<(usize, u64), Status> {
        match &self.replica {
            Some(replica) => replica.delete(filter, preconditions, limit).await,
            None => {
                let engine = self.engine.clone();
                blocking(move || engine.delete_matching(&filter, &preconditions, limit).map_err(status)).await
            }
        }
    }

    /// Imports (touches) a batch at one revision.
    pub async fn import(&self, relationships: Vec<Relationship>) -> Result<u64, Status> {
        match &self.replica {
            Some(replica) => replica.import(relationships).await,
            None => {
                let engine = self.engine.clone();
                blocking(move || engine.import(relationships).map_err(status)).await
            }
        }
    }

    /// Imports a client stream of batches, with at most one commit in flight: while one
    /// commit runs, the messages that arrive are converted and gathered, and the next
    /// commit takes all of them at once (up to [`IMPORT_GROUP`] relationships, or
    /// [`REPLICA_IMPORT_GROUP`] on a replica; past that the stream waits). A fast client therefore gets a few large commits (one sync
    /// each, and large enough for the engine to merge them straight into its indexes)
    /// instead of one per message. `convert` turns the n-th message into relationships,
    /// refusing a bad one; on any error the commit in flight is finished first, so the
    /// error says exactly how many relationships were imported before it. Returns the
    /// count and the revision of the last commit (the current one for an empty stream).
    pub async fn import_stream<M, S, C>(&self, mut stream: S, mut convert: C) -> Result<(u64, u64), Status>
    where
        S: tokio_stream::Stream<Item = Result<M, Status>> + Unpin,
        C: FnMut(M, usize) -> Result<Vec<Relationship>, Status>,
    {
        use tokio_stream::StreamExt;
        let _running = self.imports.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} import streams are running, the limit (`--max-concurrent-imports`); retry when one has ended",
                self.limits.max_concurrent_imports
            ))
        })?;
        let mut imported = 0u64;
        let mut revision = self.engine.revision();
        let mut pending: Vec<Relationship> = Vec::new();
        let mut in_flight: Option<ImportCommit<'_>> = None;
        let mut message = 0usize;
        let mut ended = false;
        let group = if self.replica.is_some() { REPLICA_IMPORT_GROUP } else { IMPORT_GROUP };
        let after = |s: Status, imported: u64| {
            Status::new(s.code(), format!("{} (after {imported} relationships were imported)", s.message()))
        };
        loop {
            if in_flight.is_none() && !pending.is_empty() {
                let batch = std::mem::take(&mut pending);
                let n = batch.len() as u64;
                in_flight = Some(Box::pin(async move { (n, self.import(batch).await) }));
            }
            if ended && in_flight.is_none() {
                return Ok((imported, revision));
            }
            let read = !ended && pending.len() < group;
            tokio::select! {
                (n, result) = async {
                    match in_flight.as_mut() {
                        Some(commit) => commit.await,
                        None => std::future::pending().await,
                    }
                }, if in_flight.is_some() => {
                    in_flight = None;
                    revision = result.map_err(|s| after(s, imported))?;
                    imported += n;
                }
                next = stream.next(), if read => {
                    let converted = match next {
                        None => {
                            ended = true;
                            continue;
                        }
                        Some(m) => m.and_then(|m| convert(m, message)),
                    };
                    message += 1;
                    match converted {
                        Ok(rels) => pending.extend(rels),
                        Err(e) => {
                            // The commit in flight lands (or fails) before the error is told.
                            if let Some(commit) = in_flight.take() {
                                let (n, result) = commit.await;
                                result.map_err(|s| after(s, imported))?;
                                imported += n;
                            }
                            return Err(after(e, imported));
                        }
                    }
                }
            }
        }
    }

    /// Replaces the application's Cedar policies, keeping the platform's
    /// ([`crate::platform`]), the attribute definitions and the labels.
    pub async fn write_policies(&self, policies: Vec<arbiter_engine::PolicyText>) -> Result<u64, Status> {
        self.edit_policy_model(move |mut model| {
            model.policies =
                crate::platform::application_policies(&model.policies, policies).map_err(Status::invalid_argument)?;
            Ok(model)
        })
        .await
    }

    /// Replaces the policy model with `edit` of the one in force, read where the write
    /// is serialised (a replica reads it after catching up with Postgres' head), so two
    /// writers never lose each other's parts.
    pub async fn edit_policy_model<F>(&self, edit: F) -> Result<u64, Status>
    where
        F: FnOnce(arbiter_engine::PolicyModel) -> Result<arbiter_engine::PolicyModel, Status> + Send + 'static,
    {
        match &self.replica {
            Some(replica) => replica.edit_policy_model(edit).await,
            None => {
                let engine = self.engine.clone();
                blocking(move || {
                    let model = edit(engine.policy_model())?;
                    engine.write_policy_model(model).map_err(status)
                })
                .await
            }
        }
    }

    /// Replaces the attribute definitions and security labels, keeping the policies.
    pub async fn write_attribute_schema(
        &self,
        declarations: arbiter_engine::AttributeDecls,
        labels: std::collections::BTreeMap<String, arbiter_engine::LabelDef>,
    ) -> Result<u64, Status> {
        self.edit_policy_model(move |mut model| {
            model.declarations = declarations;
            model.labels = labels;
            Ok(model)
        })
        .await
    }

    /// Writes objects' attribute values and labels.
    pub async fn write_attributes(&self, updates: Vec<arbiter_engine::AttributeUpdate>) -> Result<u64, Status> {
        match &self.replica {
            Some(replica) => replica.write_attributes(updates).await,
            None => {
                let engine = self.engine.clone();
                blocking(move || engine.write_attributes(updates).map_err(status)).await
            }
        }
    }

    /// Replaces the application's part of the schema, keeping the platform's
    /// ([`crate::platform`]).
    pub async fn write_schema(&self, text: String) -> Result<u64, Status> {
        match &self.replica {
            Some(replica) => replica.write_schema(text).await,
            None => {
                let engine = self.engine.clone();
                blocking(move || {
                    let current = engine.current().plan.as_ref().map(|p| p.text.clone());
                    let text = crate::platform::application_schema(current.as_deref(), &text)
                        .map_err(Status::invalid_argument)?;
                    engine.write_schema(&text).map_err(status)
                })
                .await
            }
        }
    }
}

/// Checks in one batch (CheckBulk, CheckBulkPermissions, AuthZEN evaluations) that run on
/// the async worker that received them (100 checks take well under a millisecond without
/// Cedar); a larger batch runs on the blocking pool, so that a few big batches cannot
/// stall every other call, health checks among them.
pub const INLINE_BATCH: usize = 100;

/// Runs `f`, a batch of `items` checks, inline when it is small, else on the blocking pool.
pub async fn batch<T: Send + 'static>(items: usize, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    if items <= INLINE_BATCH {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| convert::server_fault(tonic::Code::Internal, "a worker failed", &e))
}

/// Runs blocking engine work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| convert::server_fault(tonic::Code::Internal, "a worker failed", &e))?
}

pub fn too_many(what: &str, n: usize, limit: usize, flag: &str) -> Status {
    Status::invalid_argument(format!(
        "{n} {what} in one request, more than the limit of {limit} (`--{flag}`)"
    ))
}

/// A streamed response: results as a blocking producer makes them.
pub type Streamed<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Results a producer sends into a stream before it waits for the client to read.
const STREAM_BUFFER: usize = 256;

/// Runs `produce` on the blocking pool in a heavy call's turn ([`Shared::heavy_turn`]),
/// streaming what it emits as it goes: memory for what the client has not read yet, not
/// for the whole result. An error before the first result is the call's status; a
/// later one ends the stream. A client that stops reading ends it after
/// `--stream-send-timeout` (the producer's thread and snapshot are let go).
pub async fn produce_stream<T: Send + 'static>(
    shared: &Arc<Shared>,
    produce: impl FnOnce(&mut Emitter<T>) -> Result<(), Status> + Send + 'static,
) -> Result<Streamed<T>, Status> {
    use tokio_stream::StreamExt as _;
    let turn = shared.heavy_turn().await?;
    let (tx, mut rx) = stream_channel(STREAM_BUFFER);
    let mut out = Emitter { tx, runtime: tokio::runtime::Handle::current(), timeout: shared.limits.stream_send_timeout, open: true };
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        if let Err(e) = produce(&mut out) {
            out.fail(e);
        }
    });
    match rx.recv().await {
        None => Ok(Box::pin(tokio_stream::empty())),
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => Ok(Box::pin(tokio_stream::once(Ok(first)).chain(tokio_stream::wrappers::ReceiverStream::new(rx)))),
    }
}

/// Where a [`produce_stream`] producer sends its results.
#[derive(Debug)]
pub struct Emitter<T> {
    tx: Sender<T>,
    runtime: tokio::runtime::Handle,
    timeout: std::time::Duration,
    open: bool,
}

impl<T> Emitter<T> {
    /// Sends one result; false once the stream is over (the client went away or
    /// stalled): the producer should stop.
    pub fn send(&mut self, item: T) -> bool {
        if self.open {
            self.open = self.runtime.block_on(self.tx.send(Ok(item), self.timeout));
        }
        self.open
    }

    fn fail(&mut self, e: Status) {
        if self.open {
            self.open = self.runtime.block_on(self.tx.send(Err(e), self.timeout));
        }
    }
}

/// A streaming response's channel with one slot kept for the error that ends a stalled
/// stream: `capacity` messages, then the reserved slot.
pub fn stream_channel<T>(capacity: usize) -> (Sender<T>, mpsc::Receiver<Result<T, Status>>) {
    let (tx, rx) = mpsc::channel(capacity + 1);
    let closing = tx.clone().try_reserve_owned().ok();
    (Sender { tx, closing }, rx)
}

/// The sending side of [`stream_channel`].
#[derive(Debug)]
pub struct Sender<T> {
    pub tx: mpsc::Sender<Result<T, Status>>,
    closing: Option<mpsc::OwnedPermit<Result<T, Status>>>,
}

impl<T> Sender<T> {
    /// Sends `item`, waiting at most `timeout` for the client to make room; false when the
    /// stream is over (the client went away, or stalled: it then finds, after what it
    /// has not read, RESOURCE_EXHAUSTED saying so).
    pub async fn send(&mut self, item: Result<T, Status>, timeout: std::time::Duration) -> bool {
        match tokio::time::timeout(timeout, self.tx.send(item)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                if let Some(closing) = self.closing.take() {
                    closing.send(Err(Status::resource_exhausted(format!(
                        "the client did not read for {timeout:?} (`--stream-send-timeout`), so the stream was ended; resume from the last token or position received"
                    ))));
                }
                false
            }
        }
    }
}

/// Watch's engine room, for both APIs: sends `response(commit)` for every commit after
/// `after` (those it maps to `None` are skipped but passed), first from the changelog,
/// then from the live feed, falling back to the changelog whenever the feed lags. Ends
/// when the client goes away, the changelog no longer reaches `after`, or the server
/// shuts down (`resume` says how to resume).
pub async fn follow_commits<T: Send + 'static>(
    shared: Arc<Shared>,
    mut after: u64,
    mut live: broadcast::Receiver<Arc<LoggedCommit>>,
    mut tx: Sender<T>,
    resume: &'static str,
    mut response: impl FnMut(&LoggedCommit) -> Option<T> + Send,
) {
    shared.metrics.watchers.inc();
    let _guard = Watching(&shared);
    let mut stop = shared.stop.clone();
    let timeout = shared.limits.stream_send_timeout;
    'replay: loop {
        // Catch up from the changelog.
        loop {
            let engine = shared.engine.clone();
            let from = after;
            let batch = blocking(move || engine.changes_after(from, WATCH_REPLAY_CHUNK).map_err(convert::status)).await;
            let commits = match batch {
                Ok(ChangesAfter::Commits(c)) => c,
                Ok(ChangesAfter::TooOld { oldest }) => {
                    let _ = tx
                        .send(
                            Err(Status::failed_precondition(format!(
                                "the watch fell behind: revision {after} left the changelog (oldest is {oldest})"
                            ))),
                            timeout,
                        )
                        .await;
                    return;
                }
                Err(s) => {
                    let _ = tx.send(Err(s), timeout).await;
                    return;
                }
            };
            if commits.is_empty() {
                break;
            }
            for c in &commits {
                if let Some(msg) = response(c) {
                    if !tx.send(Ok(msg), timeout).await {
                        return;
                    }
                }
                after = c.revision;
            }
        }
        // Then follow the live feed.
        loop {
            tokio::select! {
                _ = tx.tx.closed() => return,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    let _ = tx.send(Err(Status::unavailable(format!("the server is shutting down; {resume}"))), timeout).await;
                    return;
                }
                msg = live.recv() => match msg {
                    Ok(c) if c.revision <= after => continue,
                    Ok(c) if c.revision == after + 1 => {
                        if let Some(msg) = response(&c) {
                            if !tx.send(Ok(msg), timeout).await {
                                return;
                            }
                        }
                        after = c.revision;
                    }
                    // A gap (should not happen) or a lag: the changelog has what was missed.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue 'replay,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Counts open Watch streams.
struct Watching<'a>(&'a Shared);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.metrics.watchers.dec();
    }
}

/// Commits read from the changelog at a time while a Watch catches up.
const WATCH_REPLAY_CHUNK: usize = 256;

