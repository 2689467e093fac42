//! A replica of Postgres: a RocksDB snapshot plus the hot graph, kept current by
//! replaying the changelog (on NOTIFY, and by polling as a fallback). Writes go to
//! Postgres, never only to the snapshot: a write locks the revision counter, catches
//! the replica up to the newest revision (so, with the lock held, the local graph is
//! exactly the truth), plans the write on it as the embedded server would (validation,
//! preconditions, `create` conflicts, delete filters, schema orphans), writes it through
//! `arbiter_write`, commits, and waits until the replica has applied its own revision.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arbiter_engine::{
    AttributeUpdate, Change, ChangeOp, Engine, LoggedCommit, PolicyModel, EngineConfig, LoadSink, Precondition, RelationshipFilter, RelationshipRef, RelationshipStore,
    RelationshipUpdate, StoreError, StoredHeader,
};
use arbiter_rocksdb_store::{RocksStore, StoreOptions};
use arbiter_schema::Relationship;
use sqlx::postgres::PgListener;
use tokio::sync::Mutex;
use tonic::Status;

use super::store::PgStore;
use super::{next_revision, notify, write_changes, write_schema, PgSource, CHANNEL};
use crate::convert::status;
use crate::grpc::blocking;

/// How many revisions one catch-up step reads.
const CATCH_UP_STEP: u64 = 1000;
/// Relationships per batch when a replica loads a full snapshot.
const LOAD_BATCH: usize = 50_000;

/// Tuning for a replica.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// How long a read asking for a revision this replica has not applied yet may wait.
    pub consistency_timeout: Duration,
    /// How often the replica polls when no NOTIFY arrives.
    pub poll_interval: Duration,
}

/// The longest a write waits for the writes queued before it on this replica.
const WRITE_QUEUE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Replica {
    pub engine: Arc<Engine>,
    pub pg: PgSource,
    options: ReplicaOptions,
    /// One catch-up at a time.
    applying: Mutex<()>,
    /// One write at a time from this process, so waiting writers hold no pooled
    /// connection (the catch-up under the counter lock needs one).
    writing: Mutex<()>,
    /// Changes refused while applying (metric).
    pub rejected: AtomicU64,
    /// When a catch-up last reached Postgres' head (ms since the Unix epoch).
    caught_up_at: AtomicU64,
    /// Commit-to-served lag of each applied revision, once the server's metrics exist.
    lag: std::sync::OnceLock<prometheus::Histogram>,
    /// The newest revision applied: readers waiting for a token watch it.
    applied: tokio::sync::watch::Sender<u64>,
    /// Wakes the follower at once (a reader waits for a revision it has not applied).
    nudge: tokio::sync::Notify,
}

/// What a replica did at start, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// Opened its snapshot and replayed the changelog after it.
    Resumed,
    /// Loaded everything from Postgres (no snapshot, another database's, or one older
    /// than the changelog retention).
    Reloaded,
}

impl Replica {
    /// Opens (or reloads) the snapshot in `data_dir`, opens the engine on it and catches
    /// up with Postgres.
    pub async fn start(
        pg: PgSource,
        data_dir: &Path,
        store_options: StoreOptions,
        config: EngineConfig,
        options: ReplicaOptions,
    ) -> Result<(Arc<Replica>, Arc<RocksStore>, StartKind)> {
        let identity = pg.identity().await?;
        let head = pg.head().await?;
        let horizon = pg.horizon().await?;
        let store_opts = StoreOptions { sync: false, ..store_options };
        let store = RocksStore::open(data_dir, store_opts.clone()).map_err(|e| anyhow!("cannot open the snapshot: {e}"))?;
        let source = store.source().map_err(|e| anyhow!("{e}"))?;
        let local = store.revision().map_err(|e| anyhow!("{e}"))?;
        let reason = match source {
            None => Some("no snapshot yet".to_string()),
            Some(s) if s != identity => Some(format!("the snapshot is of another database ({s})")),
            Some(_) if local < horizon => Some(format!(
                "the snapshot (r{local}) is older than the changelog retention (pruned through r{horizon})"
            )),
            Some(_) if local > head => {
                Some(format!("the snapshot (r{local}) is newer than Postgres (r{head}): was the database restored?"))
            }
            Some(_) => None,
        };
        let (store, kind) = match reason {
            None => (store, StartKind::Resumed),
            Some(reason) => {
                tracing::warn!("reloading everything from Postgres: {reason}");
                drop(store);
                RocksStore::destroy(data_dir).map_err(|e| anyhow!("{e}"))?;
                let store = RocksStore::open(data_dir, store_opts).map_err(|e| anyhow!("{e}"))?;
                (load_snapshot(&pg, store, &identity).await?, StartKind::Reloaded)
            }
        };
        let store = Arc::new(store);
        let for_engine = store.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::open(Box::new(for_engine), config))
            .await
            .context("the loader failed")?
            .map_err(|e| anyhow!("cannot load the snapshot in {}: {e}", data_dir.display()))?;
        let opened_at = engine.revision();
        let replica = Arc::new(Replica {
            engine: Arc::new(engine),
            pg,
            options,
            applying: Mutex::new(()),
            writing: Mutex::new(()),
            rejected: AtomicU64::new(0),
            caught_up_at: AtomicU64::new(now_millis()),
            lag: std::sync::OnceLock::new(),
            applied: tokio::sync::watch::Sender::new(opened_at),
            nudge: tokio::sync::Notify::new(),
        });
        replica.catch_up().await?;
        Ok((replica, store, kind))
    }

    /// Applies every committed revision this replica has not applied. Returns the
    /// revision it reached.
    pub async fn catch_up(&self) -> Result<u64> {
        let _one = self.applying.lock().await;
        loop {
            let local = self.engine.revision();
            let head = self.pg.head().await?;
            if head <= local {
                self.caught_up_at.store(now_millis(), Ordering::Relaxed);
                return Ok(local);
            }
            let horizon = self.pg.horizon().await?;
            if local < horizon {
                return Err(anyhow!(
                    "this replica (r{local}) fell behind the changelog retention (pruned through r{horizon}): restart it to reload"
                ));
            }
            let through = head.min(local + CATCH_UP_STEP);
            let commits = self.pg.commits_between(local, through).await?;
            for commit in commits {
                for m in &commit.malformed {
                    self.reject(&format!("a changelog row at revision {} is malformed: {m}", commit.revision));
                }
                self.apply(LoggedCommit {
                    revision: commit.revision,
                    committed_at_micros: commit.committed_at_micros,
                    changes: commit.changes,
                    schema: commit.schema,
                    policy_model: commit.policy_model,
                    attributes: commit.attributes,
                })
                .await?;
                if let Some(lag) = self.lag.get() {
                    let micros = arbiter_engine::now_micros().saturating_sub(commit.committed_at_micros);
                    lag.observe(micros.max(0) as f64 / 1e6);
                }
            }
            // Revisions without rows (an empty write) still advance the replica.
            if self.engine.revision() < through {
                self.apply(LoggedCommit { revision: through, ..LoggedCommit::default() }).await?;
            }
        }
    }

    async fn apply(&self, commit: LoggedCommit) -> Result<()> {
        let engine = self.engine.clone();
        let revision = commit.revision;
        let report = tokio::task::spawn_blocking(move || engine.apply_logged(commit))
            .await
            .context("the applier failed")?
            .map_err(|e| anyhow!("cannot apply revision {revision}: {e}"))?;
        for r in &report.rejected {
            self.reject(r);
        }
        self.applied.send_replace(self.engine.revision());
        Ok(())
    }

    fn reject(&self, what: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("rejected from Postgres' changelog: {what}");
    }

    /// Observes each applied revision's commit-to-served lag into `histogram`.
    pub fn observe_lag(&self, histogram: prometheus::Histogram) {
        let _ = self.lag.set(histogram);
    }

    /// Ready while the replica keeps up: its last catch-up to Postgres' head is no older
    /// than the consistency timeout plus one poll. A replica that cannot reach Postgres
    /// keeps answering from its graph, but says it is not ready.
    pub fn ready(&self) -> Result<(), String> {
        let age = now_millis().saturating_sub(self.caught_up_at.load(Ordering::Relaxed));
        let bound = (self.options.consistency_timeout + self.options.poll_interval).as_millis() as u64;
        if age > bound {
            return Err(format!("not caught up with Postgres for {age} ms (bound {bound} ms)"));
        }
        Ok(())
    }

    /// Waits (bounded) until this replica has applied `revision`. A revision above
    /// Postgres' head was issued by no writer (tokens are handed out after commit): it is
    /// refused at once instead of waited for.
    pub async fn wait_for(&self, revision: u64) -> Result<(), Status> {
        if self.engine.revision() >= revision {
            return Ok(());
        }
        let head = self.pg.head().await.map_err(|e| unavailable(e.context("cannot read the head revision in Postgres")))?;
        if revision > head {
            return Err(Status::invalid_argument(format!(
                "revision r{revision} has not been written: the newest committed revision is r{head}; use a token that a write or a read returned"
            )));
        }
        self.wait_applied(revision).await
    }

    /// Waits until this replica has applied the newest revision committed in Postgres.
    pub async fn wait_for_head(&self) -> Result<u64, Status> {
        let head = self.pg.head().await.map_err(|e| unavailable(e.context("cannot read the head revision in Postgres")))?;
        self.wait_applied(head).await?;
        Ok(head)
    }

    /// Before planning a write under the counter's lock: this replica must have applied
    /// `head` (which cannot move meanwhile). Bounded by the consistency timeout, but never
    /// less than 10 s: a short read bound must not fail writes.
    async fn ready_to_write(&self, head: u64) -> Result<(), Status> {
        self.wait_applied_within(head, self.options.consistency_timeout.max(Duration::from_secs(10))).await
    }

    /// Waits (at most the consistency timeout) for the follower to apply `revision`,
    /// which has committed: woken by each applied revision, never by polling.
    async fn wait_applied(&self, revision: u64) -> Result<(), Status> {
        self.wait_applied_within(revision, self.options.consistency_timeout).await
    }

    async fn wait_applied_within(&self, revision: u64, timeout: Duration) -> Result<(), Status> {
        let mut applied = self.applied.subscribe();
        if *applied.borrow() >= revision || self.engine.revision() >= revision {
            return Ok(());
        }
        self.nudge.notify_one();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|&r| r >= revision)).await.map(|r| r.is_ok());
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::unavailable("this replica stopped following Postgres")),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "revision r{revision} is committed in Postgres but this replica has applied only r{} after waiting {timeout:?}",
                self.engine.revision()
            ))),
        }
    }

    /// After a write committed in Postgres at `revision`: waits for this replica to
    /// apply it, but a slow apply does not turn the write into an error (it landed; a
    /// retry would write it twice). The replica catches up, and a read at
    /// `at_least_as_fresh` of the token waits for it.
    async fn settle(&self, revision: u64) {
        if let Err(e) = self.wait_applied(revision).await {
            tracing::warn!(revision, "a write committed but this replica has not applied it yet: {}", e.message());
        }
    }

    /// Follows Postgres until `stop` turns true: LISTEN for new revisions, and poll.
    pub async fn follow(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut listener = match PgListener::connect_with(&self.pg.pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!("cannot LISTEN on {CHANNEL}; polling only: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::warn!("cannot LISTEN on {CHANNEL}; polling only: {e}");
                None
            }
        };
        loop {
            let notified = async {
                match listener.as_mut() {
                    Some(l) => {
                        if let Err(e) = l.recv().await {
                            tracing::warn!("LISTEN connection lost (reconnecting): {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!("catching up with Postgres failed: {e:#}");
            }
        }
    }

    /// This process's turn to write. Writes wait for each other (see `writing`), but not
    /// forever: while Postgres does not answer, each would otherwise wait out the pool's
    /// timeout in turn, and the last of a queue for many times that; one that has waited
    /// [`WRITE_QUEUE_WAIT`] is refused with UNAVAILABLE instead (nothing was written).
    async fn one_writer(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, Status> {
        tokio::time::timeout(WRITE_QUEUE_WAIT, self.writing.lock()).await.map_err(|_| {
            Status::unavailable(format!(
                "the writes before this one have not reached Postgres for {WRITE_QUEUE_WAIT:?} (is Postgres down?); nothing was written, retry later"
            ))
        })
    }

    /// Writes relationship updates through Postgres (see the module comment).
    pub async fn write(&self, updates: Vec<RelationshipUpdate>, preconditions: Vec<Precondition>) -> Result<u64, Status> {
        let _one = self.one_writer().await?;
        let (mut tx, head) = self.pg.begin_write().await.map_err(unavailable)?;
        self.ready_to_write(head).await?;
        let engine = self.engine.clone();
        let changes = blocking(move || engine.plan_write(&updates, &preconditions).map_err(status)).await?;
        let revision = write_changes(&mut tx, &changes, "arbiter").await.map_err(unavailable)?;
        tx.commit().await.map_err(|e| unavailable(anyhow::Error::new(e).context("cannot commit the write")))?;
        self.settle(revision).await;
        Ok(revision)
    }

    /// Deletes by filter through Postgres. Returns how many and the revision.
    pub async fn delete(
        &self,
        filter: RelationshipFilter,
        preconditions: Vec<Precondition>,
        limit: Option<usize>,
    ) -> Result<(usize, u64), Status> {
        let _one = self.one_writer().await?;
        let (mut tx, head) = self.pg.begin_write().await.map_err(unavailable)?;
        self.ready_to_write(head).await?;
        let engine = self.engine.clone();
        let changes = blocking(move || engine.plan_delete(&filter, &preconditions, limit).map_err(status)).await?;
        if changes.is_empty() {
            tx.rollback().await.ok();
            return Ok((0, head));
        }
        let revision = write_changes(&mut tx, &changes, "arbiter").await.map_err(unavailable)?;
        tx.commit().await.map_err(|e| unavailable(anyhow::Error::new(e).context("cannot commit the delete")))?;
        self.settle(revision).await;
        Ok((changes.len(), revision))
    }

    /// Imports (touches) relationships through Postgres at one revision.
    pub async fn import(&self, relationships: Vec<Relationship>) -> Result<u64, Status> {
        let engine = self.engine.clone();
        let changes = blocking(move || {
            engine.validate_import(&relationships).map_err(status)?;
            Ok::<Vec<Change>, Status>(
                relationships.into_iter().map(|relationship| Change { op: ChangeOp::Touch, relationship }).collect(),
            )
        })
        .await?;
        let _one = self.one_writer().await?;
        let (mut tx, _) = self.pg.begin_write().await.map_err(unavailable)?;
        let revision = write_changes(&mut tx, &changes, "arbiter-import").await.map_err(unavailable)?;
        tx.commit().await.map_err(|e| unavailable(anyhow::Error::new(e).context("cannot commit the import")))?;
        self.settle(revision).await;
        Ok(revision)
    }

    /// Writes `edit` of the policy model in force through Postgres, refused (before
    /// anything is written) as the engine would refuse it. The model is read after this
    /// replica has applied Postgres' head under the counter's lock, so it is the newest.
    pub async fn edit_policy_model<F>(&self, edit: F) -> Result<u64, Status>
    where
        F: FnOnce(PolicyModel) -> Result<PolicyModel, Status> + Send + 'static,
    {
        let _one = self.one_writer().await?;
        let (mut tx, head) = self.pg.begin_write().await.map_err(unavailable)?;
        self.ready_to_write(head).await?;
        let engine = self.engine.clone();
        let json = blocking(move || {
            let model = edit(engine.policy_model())?;
            let json = serde_json::to_string(&model)
                .map_err(|e| crate::convert::server_fault(tonic::Code::Internal, "cannot encode the policy model", &e))?;
            engine.plan_policy_model(model).map_err(status)?;
            Ok(json)
        })
        .await?;
        let revision = next_revision(&mut tx).await.map_err(unavailable)?;
        super::write_policy_model(&mut tx, revision, &json, "arbiter").await.map_err(unavailable)?;
        notify(&mut tx, revision).await.map_err(unavailable)?;
        tx.commit().await.map_err(|e| unavailable(anyhow::Error::new(e).context("cannot commit the policies")))?;
        self.settle(revision).await;
        Ok(revision)
    }

    /// Writes objects' attributes through Postgres, checked as the engine would.
    pub async fn write_attributes(&self, updates: Vec<AttributeUpdate>) -> Result<u64, Status> {
        let _one = self.one_writer().await?;
        let (mut tx, head) = self.pg.begin_write().await.map_err(unavailable)?;
        self.ready_to_write(head).await?;
        let engine = self.engine.clone();
        let changes = blocking(move || engine.plan_attributes(&updates).map_err(status)).await?;
        let revision = next_revision(&mut tx).await.map_err(unavailable)?;
        super::write_attributes(&mut tx, revision, &changes, "arbiter").await.map_err(unavailable)?;
        notify(&mut tx, revision).await.map_err(unavailable)?;
        tx.commit().await.map_err(|e| unavailable(anyhow::Error::new(e).context("cannot commit the attributes")))?;
        self.settle(revision).await;
        Ok(revision)
    }

    /// Writes the application's part of the schema through Postgres (the platform part
    /// kept), refused if stored relationships would not fit.
    pub async fn write_schema(&self, text: String) -> Result<u64, Status> {
        let _one = self.one_writer().await?;
        let (mut tx, head) = self.pg.begin_write().await.map_err(unavailable)?;
        self.ready_to_write(head).await?;
        let engine = self.engine.clone();
        let text = blocking(move || {
            let current = engine.current().plan.as_ref().map(|p| p.text.clone());
            let text =
                crate::platform::application_schema(current.as_deref(), &text).map_err(Status::invalid_argument)?;
            engine.plan_schema(&text).map_err(status)?;
            Ok(text)
        })
        .await?;
        let revision = write_schema(&mut tx, &text, "arbiter").await.map_err(unavailable)?;
        tx.commit().await.map_err(|e| unavailable(anyhow::Error::new(e).context("cannot commit the schema")))?;
        self.settle(revision).await;
        Ok(revision)
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Postgres failed: UNAVAILABLE, with what failed (the outermost context) for the client
/// and the whole chain in the server's log.
fn unavailable(e: anyhow::Error) -> Status {
    let what = e.to_string();
    crate::convert::server_fault(tonic::Code::Unavailable, &what, &format_args!("{e:#}"))
}

/// Receives Postgres' state (through [`PgStore`]'s scan) into a fresh RocksDB snapshot.
struct SnapshotWriter<'a> {
    store: &'a RocksStore,
    header: StoredHeader,
    pending: Vec<Relationship>,
    pending_attributes: Vec<(String, String, String)>,
    loaded: usize,
    started: Instant,
    reported: Instant,
}

impl SnapshotWriter<'_> {
    fn flush(&mut self) -> Result<(), StoreError> {
        self.store.bulk_put(&self.pending)?;
        self.store.bulk_put_attributes(&self.pending_attributes)?;
        self.pending_attributes.clear();
        self.loaded += self.pending.len();
        self.pending.clear();
        if self.reported.elapsed() >= Duration::from_secs(2) {
            self.reported = Instant::now();
            let rate = self.loaded as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            tracing::info!(loaded = self.loaded, rate = rate as u64, "loading the snapshot from Postgres");
        }
        Ok(())
    }
}

impl LoadSink for SnapshotWriter<'_> {
    fn header(&mut self, header: StoredHeader) -> Result<(), StoreError> {
        self.header = header;
        Ok(())
    }

    fn relationship(&mut self, r: RelationshipRef<'_>) -> Result<(), StoreError> {
        self.pending.push(r.to_relationship());
        if self.pending.len() >= LOAD_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn attributes(&mut self, object_type: &str, object_id: &str, json: &str) -> Result<(), StoreError> {
        self.pending_attributes.push((object_type.to_string(), object_id.to_string(), json.to_string()));
        if self.pending_attributes.len() >= LOAD_BATCH {
            self.flush()?;
        }
        Ok(())
    }
}

/// Loads every relationship from Postgres at one consistent revision into `store`,
/// reporting progress every two seconds.
async fn load_snapshot(pg: &PgSource, store: RocksStore, identity: &str) -> Result<RocksStore> {
    let source = PgStore::new(pg.clone(), tokio::runtime::Handle::current());
    let identity = identity.to_string();
    tokio::task::spawn_blocking(move || {
        let mut writer = SnapshotWriter {
            store: &store,
            header: StoredHeader::default(),
            pending: Vec::with_capacity(LOAD_BATCH),
            pending_attributes: Vec::new(),
            loaded: 0,
            started: Instant::now(),
            reported: Instant::now(),
        };
        source.scan(&mut writer).map_err(|e| anyhow!("cannot load the snapshot from Postgres: {e}"))?;
        writer.flush().map_err(|e| anyhow!("{e}"))?;
        let (revision, loaded, elapsed) = (writer.header.revision, writer.loaded, writer.started.elapsed());
        store
            .finish_bulk_load(revision, writer.header.schema.as_deref(), writer.header.policy_model.as_deref(), &identity)
            .map_err(|e| anyhow!("{e}"))?;
        tracing::info!(relationships = loaded, revision, elapsed_ms = elapsed.as_millis() as u64, "loaded the snapshot from Postgres");
        Ok(store)
    })
    .await
    .context("the snapshot loader failed")?
}
