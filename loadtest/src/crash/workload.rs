//! The clients of one crash trial and what they share: writers (WriteRelationships
//! TOUCH of small batches, some with DELETEs of acknowledged relationships in the same
//! request), deleters (WriteRelationships DELETE and DeleteRelationships by filter of
//! acknowledged relationships), importers (ImportRelationships streams of a few
//! thousand) and, during a Postgres outage, checkers. Every operation goes into the
//! trial's [`Ledger`] before it is sent and gets its outcome when it ends.
//!
//! Relationships are grouped in documents (`crash/doc:ID`, viewers `crash/user:uN`).
//! A document is checked out of the pool by the one client that changes it and is
//! returned when that client's call ends, so the operations on one relationship never
//! overlap: the ledger's order is their order. A document whose operation was not
//! acknowledged is retired for the rest of the trial (its state is unknown until the
//! state is read back).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use arbiter_proto::arbiter::v1 as pb;
use tokio::task::JoinHandle;

use super::ledger::{Effect, Key, Ledger, OpKind, Outcome, DOC_TYPE, RELATION, USER_TYPE};
use crate::rng::Rng;
use crate::workload::{code_name, connect, Clients};

/// The schema every crash run writes.
pub const SCHEMA: &str = "definition crash/user {}

definition crash/doc {
    relation viewer: crash/user
    permission view = viewer
}
";

/// The document the checkers ask about; never deleted.
pub const PROBE_DOC: &str = "probe";
/// Its one viewer.
pub const PROBE_USER: &str = "u0";

/// A call that has not answered in this time is counted as not acknowledged.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Relationships per ImportRelationships message.
const IMPORT_MESSAGE: usize = 500;
/// Viewers per imported document.
const IMPORT_DOC_USERS: usize = 100;

/// Locks a mutex; a panic elsewhere while it was held does not stop the harness.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One server the clients may send to.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub clients: Clients,
}

impl Target {
    pub async fn connect(name: &str, endpoint: &str) -> Result<Arc<Target>> {
        let clients = connect(endpoint, None, 1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no connection to {name} at {endpoint}"))?;
        Ok(Arc::new(Target {
            name: name.to_string(),
            clients,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocStatus {
    Idle,
    Busy,
    Retired,
}

#[derive(Debug, Clone)]
struct Doc {
    /// Every viewer this trial knows the document to have had.
    universe: BTreeSet<String>,
    present: BTreeSet<String>,
    status: DocStatus,
}

/// The documents of a trial and who has them.
#[derive(Debug, Default)]
struct Pool {
    docs: HashMap<String, Doc>,
    /// Idle documents, for random choice.
    idle: Vec<String>,
}

impl Pool {
    /// The documents present in `initial`, all idle, but for the probe.
    fn from_initial(initial: &BTreeSet<Key>) -> Pool {
        let mut docs: HashMap<String, Doc> = HashMap::new();
        for key in initial {
            if key.doc == PROBE_DOC {
                continue;
            }
            let doc = docs.entry(key.doc.clone()).or_insert_with(|| Doc {
                universe: BTreeSet::new(),
                present: BTreeSet::new(),
                status: DocStatus::Idle,
            });
            doc.universe.insert(key.user.clone());
            doc.present.insert(key.user.clone());
        }
        let mut idle: Vec<String> = docs.keys().cloned().collect();
        idle.sort();
        Pool { docs, idle }
    }

    /// Checks out an idle document that `fits` (a few random tries): its id and state.
    fn checkout(&mut self, rng: &mut Rng, fits: impl Fn(&Doc) -> bool) -> Option<(String, Doc)> {
        for _ in 0..8 {
            if self.idle.is_empty() {
                return None;
            }
            let i = rng.below(self.idle.len() as u64) as usize;
            let id = self.idle.get(i).cloned()?;
            let Some(doc) = self.docs.get_mut(&id) else {
                self.idle.swap_remove(i);
                continue;
            };
            if !fits(doc) {
                continue;
            }
            self.idle.swap_remove(i);
            doc.status = DocStatus::Busy;
            return Some((id, doc.clone()));
        }
        None
    }

    /// A new document, checked out.
    fn create(&mut self, id: &str) {
        self.docs.insert(
            id.to_string(),
            Doc {
                universe: BTreeSet::new(),
                present: BTreeSet::new(),
                status: DocStatus::Busy,
            },
        );
    }

    /// Returns the documents of an operation that ended: with its effects if it was
    /// acknowledged, retired if not.
    fn settle(&mut self, docs: &[String], effects: &[(Key, Effect)], acked: bool) {
        if acked {
            for (key, effect) in effects {
                if let Some(doc) = self.docs.get_mut(&key.doc) {
                    doc.universe.insert(key.user.clone());
                    match effect {
                        Effect::Present => doc.present.insert(key.user.clone()),
                        Effect::Absent => doc.present.remove(&key.user),
                    };
                }
            }
        }
        for id in docs {
            if let Some(doc) = self.docs.get_mut(id) {
                if doc.status != DocStatus::Busy {
                    continue;
                }
                if acked {
                    doc.status = DocStatus::Idle;
                    self.idle.push(id.clone());
                } else {
                    doc.status = DocStatus::Retired;
                }
            }
        }
    }
}

/// One call's timing and result, for the outage report.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sent: Instant,
    pub done: Instant,
    /// `None`: acknowledged; else the status code's name.
    pub error: Option<&'static str>,
}

/// One Check of the probe by a checker.
#[derive(Debug, Clone)]
pub struct CheckAttempt {
    pub sent: Instant,
    pub done: Instant,
    /// `Ok(allowed)` or the status code's name.
    pub result: Result<bool, &'static str>,
}

/// What the clients saw, besides the ledger.
#[derive(Debug, Default)]
pub struct Seen {
    /// Unacknowledged operations by status code.
    pub errors: BTreeMap<&'static str, usize>,
    /// The token of the operation acknowledged last.
    pub last_token: Option<String>,
    /// Every write, delete and import.
    pub attempts: Vec<Attempt>,
    pub checks: Vec<CheckAttempt>,
}

/// Everything the clients of a trial share.
#[derive(Debug)]
pub struct Workload {
    trial: u64,
    seed: u64,
    pub ledger: Mutex<Ledger>,
    pool: Mutex<Pool>,
    /// The servers; `None` while one is down.
    targets: RwLock<Vec<Option<Arc<Target>>>>,
    stop: AtomicBool,
    pub seen: Mutex<Seen>,
}

impl Workload {
    /// Trial `trial`, starting from the relationships `initial`, sending to `targets`.
    pub fn new(
        trial: u64,
        seed: u64,
        initial: BTreeSet<Key>,
        targets: Vec<Arc<Target>>,
    ) -> Arc<Workload> {
        Arc::new(Workload {
            trial,
            seed,
            pool: Mutex::new(Pool::from_initial(&initial)),
            ledger: Mutex::new(Ledger::new(initial)),
            targets: RwLock::new(targets.into_iter().map(Some).collect()),
            stop: AtomicBool::new(false),
            seen: Mutex::new(Seen::default()),
        })
    }

    /// Takes server `i` out of use (before it is killed) or back (`Some`).
    pub fn set_target(&self, i: usize, target: Option<Arc<Target>>) {
        let mut t = self
            .targets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = t.get_mut(i) {
            *slot = target;
        }
    }

    fn live_targets(&self) -> Vec<Arc<Target>> {
        self.targets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn pick(&self, rng: &mut Rng) -> Option<Arc<Target>> {
        let live = self.live_targets();
        live.get(rng.below(live.len() as u64) as usize).cloned()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Tells every client to stop after its current call.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Starts the clients.
    pub fn spawn(
        self: &Arc<Self>,
        writers: usize,
        deleters: usize,
        importers: usize,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        for i in 0..writers {
            tasks.push(tokio::spawn(self.clone().writer(i)));
        }
        for i in 0..deleters {
            tasks.push(tokio::spawn(self.clone().deleter(i)));
        }
        for i in 0..importers {
            tasks.push(tokio::spawn(self.clone().importer(i)));
        }
        tasks
    }

    /// Starts one checker per server: Checks of the probe at `minimize_latency`, in a
    /// loop, until stopped.
    pub fn spawn_checkers(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let n = self
            .targets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        (0..n)
            .map(|i| tokio::spawn(self.clone().checker(i)))
            .collect()
    }

    fn rng(&self, role: u64, index: usize) -> Rng {
        Rng::new(
            self.seed,
            0xc4a5_0000 + role,
            self.trial * 1024 + index as u64,
        )
    }

    /// Sends one operation and records it: in the ledger before it is sent, its
    /// outcome after; its documents are returned to the pool (or retired).
    async fn perform<F>(
        &self,
        kind: OpKind,
        client: &str,
        target: &Target,
        docs: Vec<String>,
        units: Vec<Vec<(Key, Effect)>>,
        call: F,
    ) -> bool
    where
        F: std::future::Future<Output = Result<String, tonic::Status>>,
    {
        let effects: Vec<(Key, Effect)> = units.iter().flatten().cloned().collect();
        let id = lock(&self.ledger).begin(kind, format!("{client}@{}", target.name), units);
        let sent = Instant::now();
        let result = match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(s)) => Err((
                code_name(s.code()),
                format!("{}: {}", code_name(s.code()), s.message()),
            )),
            Err(_) => Err(("DEADLINE_EXCEEDED", format!("no answer in {OP_TIMEOUT:?}"))),
        };
        let done = Instant::now();
        let acked = result.is_ok();
        {
            let mut seen = lock(&self.seen);
            seen.attempts.push(Attempt {
                sent,
                done,
                error: result.as_ref().err().map(|(code, _)| *code),
            });
            match &result {
                Ok(token) => seen.last_token = Some(token.clone()),
                Err((code, _)) => *seen.errors.entry(code).or_default() += 1,
            }
        }
        lock(&self.ledger).finish(
            id,
            match result {
                Ok(token) => Outcome::Acked(token),
                Err((_, message)) => Outcome::Unacked(message),
            },
        );
        lock(&self.pool).settle(&docs, &effects, acked);
        acked
    }

    /// Writes the probe relationship (once per store) as an operation of the log.
    pub async fn write_probe(&self, target: &Target) -> Result<()> {
        let key = Key::new(PROBE_DOC, PROBE_USER);
        let units = vec![vec![(key.clone(), Effect::Present)]];
        let mut c = target.clients.relationships.clone();
        let ok = self
            .perform(
                OpKind::Write,
                "setup",
                target,
                Vec::new(),
                units,
                async move {
                    let r = c
                        .write_relationships(request(write_request(&[(key, Effect::Present)])))
                        .await?;
                    Ok(r.into_inner().revision)
                },
            )
            .await;
        if !ok {
            let seen = lock(&self.seen);
            return Err(anyhow!(
                "cannot write the probe relationship through {}: {:?}",
                target.name,
                seen.errors
            ));
        }
        Ok(())
    }

    async fn pause_if_idle(&self) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    /// Small batches of TOUCHes: new documents, documents re-written after deletes, and
    /// new documents written with DELETEs of others in the same request.
    async fn writer(self: Arc<Self>, index: usize) {
        let mut rng = self.rng(1, index);
        let client = format!("writer-{index}");
        let mut n = 0u64;
        while !self.stopped() {
            let Some(target) = self.pick(&mut rng) else {
                self.pause_if_idle().await;
                continue;
            };
            n += 1;
            let roll = rng.below(100);
            let mut docs = Vec::new();
            let mut updates: Vec<(Key, Effect)> = Vec::new();
            if (60..80).contains(&roll) {
                // Re-write a document, preferably one that lost viewers.
                let old = {
                    let mut pool = lock(&self.pool);
                    pool.checkout(&mut rng, |d| d.present.len() < d.universe.len())
                        .or_else(|| pool.checkout(&mut rng, |_| true))
                };
                if let Some((id, doc)) = old {
                    updates.extend(
                        doc.universe
                            .iter()
                            .map(|u| (Key::new(id.clone(), u.clone()), Effect::Present)),
                    );
                    docs.push(id);
                }
            }
            if updates.is_empty() {
                let id = format!("t{}_w{index}_{n}", self.trial);
                let users = 2 + rng.below(5) as usize;
                lock(&self.pool).create(&id);
                updates.extend(
                    (0..users).map(|u| (Key::new(id.clone(), format!("u{u}")), Effect::Present)),
                );
                docs.push(id);
                if roll >= 80 {
                    // And delete one or two acknowledged viewers of another document.
                    let other = lock(&self.pool).checkout(&mut rng, |d| !d.present.is_empty());
                    if let Some((other, doc)) = other {
                        let take = 1 + rng.below(2) as usize;
                        updates.extend(
                            pick_some(&mut rng, &doc.present, take)
                                .into_iter()
                                .map(|u| (Key::new(other.clone(), u), Effect::Absent)),
                        );
                        docs.push(other);
                    }
                }
            }
            let mut c = target.clients.relationships.clone();
            let req = write_request(&updates);
            self.perform(
                OpKind::Write,
                &client,
                &target,
                docs,
                vec![updates],
                async move {
                    Ok(c.write_relationships(request(req))
                        .await?
                        .into_inner()
                        .revision)
                },
            )
            .await;
        }
    }

    /// Deletes of acknowledged relationships: WriteRelationships DELETE across one to
    /// three documents, DeleteRelationships of a whole document, or of one viewer.
    async fn deleter(self: Arc<Self>, index: usize) {
        let mut rng = self.rng(2, index);
        let client = format!("deleter-{index}");
        while !self.stopped() {
            let Some(target) = self.pick(&mut rng) else {
                self.pause_if_idle().await;
                continue;
            };
            let roll = rng.below(100);
            let mut c = target.clients.relationships.clone();
            if roll < 50 {
                let wanted = 1 + rng.below(3) as usize;
                let mut docs = Vec::new();
                let mut updates = Vec::new();
                {
                    let mut pool = lock(&self.pool);
                    for _ in 0..wanted {
                        if let Some((id, doc)) = pool.checkout(&mut rng, |d| !d.present.is_empty())
                        {
                            let take = 1 + rng.below(doc.present.len().min(3) as u64) as usize;
                            updates.extend(
                                pick_some(&mut rng, &doc.present, take)
                                    .into_iter()
                                    .map(|u| (Key::new(id.clone(), u), Effect::Absent)),
                            );
                            docs.push(id);
                        }
                    }
                }
                if updates.is_empty() {
                    self.pause_if_idle().await;
                    continue;
                }
                let req = write_request(&updates);
                self.perform(
                    OpKind::Delete,
                    &client,
                    &target,
                    docs,
                    vec![updates],
                    async move {
                        Ok(c.write_relationships(request(req))
                            .await?
                            .into_inner()
                            .revision)
                    },
                )
                .await;
            } else {
                let Some((id, doc)) =
                    lock(&self.pool).checkout(&mut rng, |d| !d.present.is_empty())
                else {
                    self.pause_if_idle().await;
                    continue;
                };
                let (subject, deleted): (Option<pb::SubjectFilter>, Vec<String>) = if roll < 80 {
                    (None, doc.universe.iter().cloned().collect())
                } else {
                    let user = pick_some(&mut rng, &doc.present, 1)
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    (
                        Some(pb::SubjectFilter {
                            r#type: USER_TYPE.to_string(),
                            id: user.clone(),
                            relation: String::new(),
                        }),
                        vec![user],
                    )
                };
                let units = vec![deleted
                    .into_iter()
                    .map(|u| (Key::new(id.clone(), u), Effect::Absent))
                    .collect()];
                let req = pb::DeleteRelationshipsRequest {
                    filter: Some(pb::RelationshipFilter {
                        resource_type: DOC_TYPE.to_string(),
                        resource_id: id.clone(),
                        relation: RELATION.to_string(),
                        subject,
                    }),
                    preconditions: Vec::new(),
                    limit: 0,
                };
                self.perform(
                    OpKind::FilterDelete,
                    &client,
                    &target,
                    vec![id],
                    units,
                    async move {
                        Ok(c.delete_relationships(request(req))
                            .await?
                            .into_inner()
                            .revision)
                    },
                )
                .await;
            }
        }
    }

    /// ImportRelationships streams of 1,000 to 4,000 new relationships, 500 a message,
    /// 100 to 600 ms apart.
    async fn importer(self: Arc<Self>, index: usize) {
        let mut rng = self.rng(3, index);
        let client = format!("importer-{index}");
        let mut n = 0u64;
        while !self.stopped() {
            let Some(target) = self.pick(&mut rng) else {
                self.pause_if_idle().await;
                continue;
            };
            n += 1;
            let total = IMPORT_MESSAGE * (2 + rng.below(7) as usize);
            let docs: Vec<String> = (0..total / IMPORT_DOC_USERS)
                .map(|d| format!("t{}_i{index}_{n}_{d}", self.trial))
                .collect();
            {
                let mut pool = lock(&self.pool);
                for d in &docs {
                    pool.create(d);
                }
            }
            let keys: Vec<Key> = docs
                .iter()
                .flat_map(|d| {
                    (0..IMPORT_DOC_USERS).map(move |u| Key::new(d.clone(), format!("u{u}")))
                })
                .collect();
            let units: Vec<Vec<(Key, Effect)>> = keys
                .chunks(IMPORT_MESSAGE)
                .map(|chunk| chunk.iter().map(|k| (k.clone(), Effect::Present)).collect())
                .collect();
            let messages: Vec<pb::ImportRelationshipsRequest> = keys
                .chunks(IMPORT_MESSAGE)
                .map(|chunk| pb::ImportRelationshipsRequest {
                    relationships: chunk.iter().map(relationship).collect(),
                })
                .collect();
            let mut c = target.clients.relationships.clone();
            self.perform(OpKind::Import, &client, &target, docs, units, async move {
                let r = c
                    .import_relationships(request(tokio_stream::iter(messages)))
                    .await?;
                Ok(r.into_inner().revision)
            })
            .await;
            // Imports are cheap for the server: paced, so they do not swamp the store.
            tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
        }
    }

    /// Checks of the probe against server `index`, while it is up.
    async fn checker(self: Arc<Self>, index: usize) {
        let check = pb::CheckRequest {
            consistency: Some(pb::Consistency {
                requirement: Some(pb::consistency::Requirement::MinimizeLatency(true)),
            }),
            resource: Some(pb::ObjectRef {
                r#type: DOC_TYPE.to_string(),
                id: PROBE_DOC.to_string(),
            }),
            permission: "view".to_string(),
            subject: Some(pb::SubjectRef {
                object: Some(pb::ObjectRef {
                    r#type: USER_TYPE.to_string(),
                    id: PROBE_USER.to_string(),
                }),
                relation: String::new(),
            }),
            context: None,
            explain: false,
        };
        while !self.stopped() {
            let target = self
                .targets
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(index)
                .cloned()
                .flatten();
            let Some(target) = target else {
                self.pause_if_idle().await;
                continue;
            };
            let mut c = target.clients.permissions.clone();
            let mut req = tonic::Request::new(check.clone());
            req.set_timeout(Duration::from_secs(2));
            let sent = Instant::now();
            let result = match tokio::time::timeout(Duration::from_secs(3), c.check(req)).await {
                Ok(Ok(r)) => Ok(r.into_inner().decision == pb::Decision::Allowed as i32),
                Ok(Err(s)) => Err(code_name(s.code())),
                Err(_) => Err("DEADLINE_EXCEEDED"),
            };
            let done = Instant::now();
            lock(&self.seen)
                .checks
                .push(CheckAttempt { sent, done, result });
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Up to `n` distinct members of `set`, at random.
fn pick_some(rng: &mut Rng, set: &BTreeSet<String>, n: usize) -> Vec<String> {
    let mut all: Vec<&String> = set.iter().collect();
    let mut out = Vec::new();
    while out.len() < n && !all.is_empty() {
        let i = rng.below(all.len() as u64) as usize;
        out.push(all.swap_remove(i).clone());
    }
    out
}

fn relationship(key: &Key) -> pb::Relationship {
    pb::Relationship {
        resource: Some(pb::ObjectRef {
            r#type: DOC_TYPE.to_string(),
            id: key.doc.clone(),
        }),
        relation: RELATION.to_string(),
        subject: Some(pb::SubjectRef {
            object: Some(pb::ObjectRef {
                r#type: USER_TYPE.to_string(),
                id: key.user.clone(),
            }),
            relation: String::new(),
        }),
        expires_at: None,
        ..Default::default()
    }
}

fn write_request(updates: &[(Key, Effect)]) -> pb::WriteRelationshipsRequest {
    use pb::relationship_update::Operation;
    pb::WriteRelationshipsRequest {
        updates: updates
            .iter()
            .map(|(key, effect)| pb::RelationshipUpdate {
                operation: match effect {
                    Effect::Present => Operation::Touch as i32,
                    Effect::Absent => Operation::Delete as i32,
                },
                relationship: Some(relationship(key)),
            })
            .collect(),
        preconditions: Vec::new(),
    }
}

/// A request with a deadline the server sees.
fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(OP_TIMEOUT);
    r
}

/// What a store holds, read back with ExportRelationships.
#[derive(Debug, Clone, Default)]
pub struct ReadBack {
    /// The revision token of the export.
    pub revision: String,
    pub keys: BTreeSet<Key>,
    /// Relationships of the harness's types but not of its shape, or of unknown types.
    pub foreign: Vec<String>,
    /// Relationships of the platform part (`platform/...`), which Postgres mode's
    /// migrations may write: not the harness's.
    pub ignored: usize,
}

/// Reads everything `target` holds at `consistency`.
pub async fn export(
    target: &Target,
    consistency: pb::consistency::Requirement,
) -> Result<ReadBack, tonic::Status> {
    use tokio_stream::StreamExt;
    let mut c = target.clients.relationships.clone();
    let mut req = tonic::Request::new(pb::ExportRelationshipsRequest {
        consistency: Some(pb::Consistency {
            requirement: Some(consistency),
        }),
    });
    req.set_timeout(Duration::from_secs(300));
    let mut stream = c.export_relationships(req).await?.into_inner();
    let mut out = ReadBack::default();
    while let Some(message) = stream.next().await {
        let message = message?;
        if out.revision.is_empty() {
            out.revision = message.revision.clone();
        } else if message.revision != out.revision {
            return Err(tonic::Status::internal(format!(
                "the export changed revision midway, from {} to {}",
                out.revision, message.revision
            )));
        }
        for r in &message.relationships {
            match key_of(r) {
                Ok(key) => {
                    out.keys.insert(key);
                }
                Err(text) if text.starts_with("platform/") || text.contains("@platform/") => {
                    out.ignored += 1
                }
                Err(text) => out.foreign.push(text),
            }
        }
    }
    Ok(out)
}

/// The harness's key of a relationship, or the relationship as text if it is not one.
fn key_of(r: &pb::Relationship) -> Result<Key, String> {
    let resource = r.resource.clone().unwrap_or_default();
    let subject = r.subject.clone().unwrap_or_default();
    let object = subject.object.clone().unwrap_or_default();
    if resource.r#type == DOC_TYPE
        && r.relation == RELATION
        && object.r#type == USER_TYPE
        && subject.relation.is_empty()
        && r.expires_at.is_none()
    {
        return Ok(Key::new(resource.id, object.id));
    }
    let relation = if subject.relation.is_empty() {
        String::new()
    } else {
        format!("#{}", subject.relation)
    };
    Err(format!(
        "{}:{}#{}@{}:{}{relation}{}",
        resource.r#type,
        resource.id,
        r.relation,
        object.r#type,
        object.id,
        if r.expires_at.is_some() {
            " (expiring)"
        } else {
            ""
        }
    ))
}

/// Waits (bounded by `within`) until `target` answers a read at least as fresh as
/// `token`: the time it took.
pub async fn wait_fresh(target: &Target, token: &str, within: Duration) -> Result<Duration> {
    use tokio_stream::StreamExt;
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        let mut c = target.clients.relationships.clone();
        let mut req = tonic::Request::new(pb::ReadRelationshipsRequest {
            consistency: Some(pb::Consistency {
                requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(
                    token.to_string(),
                )),
            }),
            filter: Some(pb::RelationshipFilter {
                resource_type: DOC_TYPE.to_string(),
                ..Default::default()
            }),
            cursor: String::new(),
            limit: 1,
        });
        req.set_timeout(Duration::from_secs(10));
        let result = async {
            let mut s = c.read_relationships(req).await?.into_inner();
            while s.next().await.transpose()?.is_some() {}
            Ok::<(), tonic::Status>(())
        }
        .await;
        match result {
            Ok(()) => return Ok(started.elapsed()),
            Err(s) => last = format!("{}: {}", code_name(s.code()), s.message()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow!(
        "{} did not serve a read at least as fresh as {token} within {within:?} (last: {last})",
        target.name
    ))
}

/// Exports from `target` at `fully_consistent`, retrying while it catches up (bounded
/// by `within`).
pub async fn export_when_ready(target: &Target, within: Duration) -> Result<ReadBack> {
    let started = Instant::now();
    loop {
        match export(target, pb::consistency::Requirement::FullyConsistent(true)).await {
            Ok(r) => return Ok(r),
            // Expected while a replica catches up or reconnects.
            Err(_) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => {
                return Err(anyhow!(
                    "cannot export from {} within {within:?}: {}: {}",
                    target.name,
                    code_name(s.code()),
                    s.message()
                ))
            }
        }
    }
}

/// Waits for the tasks to end (they stop after their current call), at most `within`;
/// the ones still running then are aborted.
pub async fn join(tasks: Vec<JoinHandle<()>>, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut aborted = 0;
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            abort.abort();
            aborted += 1;
        }
    }
    aborted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_hands_a_document_to_one_client_at_a_time() {
        let initial: BTreeSet<Key> = [
            Key::new("a", "u0"),
            Key::new("a", "u1"),
            Key::new(PROBE_DOC, PROBE_USER),
        ]
        .into_iter()
        .collect();
        let mut pool = Pool::from_initial(&initial);
        let mut rng = Rng::new(1, 2, 3);
        let (id, doc) = pool.checkout(&mut rng, |_| true).unwrap();
        assert_eq!(id, "a");
        assert_eq!(doc.present.len(), 2);
        // The probe is never handed out, and "a" is busy.
        assert!(pool.checkout(&mut rng, |_| true).is_none());
        pool.settle(
            std::slice::from_ref(&id),
            &[(Key::new("a", "u0"), Effect::Absent)],
            true,
        );
        let (_, doc) = pool.checkout(&mut rng, |_| true).unwrap();
        assert_eq!(doc.present.iter().collect::<Vec<_>>(), vec!["u1"]);
        assert_eq!(doc.universe.len(), 2);
        // Not acknowledged: retired for the rest of the trial.
        pool.settle(&[id], &[], false);
        assert!(pool.checkout(&mut rng, |_| true).is_none());
    }

    #[test]
    fn exported_relationships_are_told_apart() {
        let mut r = relationship(&Key::new("d", "u1"));
        assert_eq!(key_of(&r), Ok(Key::new("d", "u1")));
        r.relation = "owner".into();
        assert_eq!(
            key_of(&r),
            Err("crash/doc:d#owner@crash/user:u1".to_string())
        );
    }
}
