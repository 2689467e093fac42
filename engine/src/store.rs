//! The storage boundary. The engine keeps the hot graph in memory; a
//! [`RelationshipStore`] makes every write durable before it becomes visible and hands
//! the whole state back at start. RocksDB and Postgres implement this trait in their own
//! crates so the engine never depends on them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

use arbiter_schema::{CaveatRef, ObjectRef, Relationship, SubjectRef};
use chrono::{TimeZone, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// Insert or replace.
    Touch,
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub op: ChangeOp,
    pub relationship: Relationship,
}

/// A change to one object's attribute values and labels (the keyed attribute store):
/// the new value as JSON, or `None` to delete them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeChange {
    pub object_type: String,
    pub object_id: String,
    pub attributes: Option<String>,
}

/// One atomic write: a new revision with an optional new schema, an optional new policy
/// model (policies, attribute declarations and labels, as JSON), relationship changes
/// and attribute changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Commit<'a> {
    pub revision: u64,
    pub schema: Option<&'a str>,
    pub policy_model: Option<&'a str>,
    pub changes: &'a [Change],
    pub attributes: &'a [AttributeChange],
}

/// Everything a store holds, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredState {
    pub revision: u64,
    pub schema: Option<String>,
    pub policy_model: Option<String>,
    pub relationships: Vec<Relationship>,
    /// `(type, id, attributes as JSON)`, in any order.
    pub attributes: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// One revision as the changelog keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoggedCommit {
    pub revision: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub committed_at_micros: i64,
    pub changes: Vec<Change>,
    /// The new schema, if this revision wrote one.
    pub schema: Option<String>,
    /// The new policy model (JSON), if this revision wrote one.
    pub policy_model: Option<String>,
    /// Attribute changes, in order.
    pub attributes: Vec<AttributeChange>,
}

/// What the changelog holds after a revision.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangesAfter {
    /// The commits after the revision, oldest first (at most the number asked for).
    Commits(Vec<LoggedCommit>),
    /// The changelog no longer reaches back to the revision: the oldest it holds is this.
    TooOld { oldest: u64 },
}

/// One stored relationship, borrowed from the store's own encoding while it is scanned
/// (no allocation per relationship on the load path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationshipRef<'a> {
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub relation: &'a str,
    pub subject_type: &'a str,
    pub subject_id: &'a str,
    /// `None` for a subject that is an object itself.
    pub subject_relation: Option<&'a str>,
    /// Microseconds since the Unix epoch, if the relationship expires.
    pub expires_at: Option<i64>,
    /// The relationship's caveat, if it has one.
    pub caveat: Option<CaveatView<'a>>,
}

/// A relationship's caveat as a store holds it: its name and its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaveatView<'a> {
    pub name: &'a str,
    pub context: ContextView<'a>,
}

/// A caveat's context: JSON text (a store's encoding) or an object (a write in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextView<'a> {
    None,
    Json(&'a str),
    Map(&'a serde_json::Map<String, serde_json::Value>),
}

impl ContextView<'_> {
    /// The context as an object (none for no context or an empty one).
    pub fn to_map(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
        match self {
            ContextView::None => Ok(None),
            ContextView::Map(m) => Ok((!m.is_empty()).then(|| (*m).clone())),
            ContextView::Json(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(m)) => Ok((!m.is_empty()).then_some(m)),
                Ok(_) => Err("a caveat context must be a JSON object".into()),
                Err(e) => Err(format!("a caveat context is not JSON: {e}")),
            },
        }
    }
}

impl RelationshipRef<'_> {
    pub fn to_relationship(&self) -> Relationship {
        Relationship {
            resource: ObjectRef { object_type: self.resource_type.into(), object_id: self.resource_id.into() },
            relation: self.relation.into(),
            subject: SubjectRef {
                object: ObjectRef { object_type: self.subject_type.into(), object_id: self.subject_id.into() },
                relation: self.subject_relation.map(str::to_string),
            },
            caveat: self.caveat.map(|c| CaveatRef { name: c.name.to_string(), context: c.context.to_map().ok().flatten() }),
            expiration: self.expires_at.and_then(|m| Utc.timestamp_micros(m).single()),
        }
    }

    pub fn of(r: &Relationship) -> RelationshipRef<'_> {
        RelationshipRef {
            resource_type: &r.resource.object_type,
            resource_id: &r.resource.object_id,
            relation: &r.relation,
            subject_type: &r.subject.object.object_type,
            subject_id: &r.subject.object.object_id,
            subject_relation: r.subject.relation.as_deref(),
            expires_at: r.expiration.map(|e| e.timestamp_micros()),
            caveat: r.caveat.as_ref().map(|c| CaveatView {
                name: &c.name,
                context: c.context.as_ref().map_or(ContextView::None, ContextView::Map),
            }),
        }
    }
}

/// The revision and schema of a stored state, as [`RelationshipStore::scan`] reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredHeader {
    pub revision: u64,
    pub schema: Option<String>,
    /// The policy model (JSON), if one was written.
    pub policy_model: Option<String>,
}

/// Receives one consistent stored state from [`RelationshipStore::scan`]: the header
/// first, then every relationship and every object's attributes (in any order). An
/// error stops the scan.
pub trait LoadSink {
    fn header(&mut self, header: StoredHeader) -> Result<(), StoreError>;
    fn relationship(&mut self, relationship: RelationshipRef<'_>) -> Result<(), StoreError>;
    /// One object's attribute values and labels (JSON).
    fn attributes(&mut self, object_type: &str, object_id: &str, json: &str) -> Result<(), StoreError>;
}

/// A sink that keeps everything as owned values.
impl LoadSink for StoredState {
    fn header(&mut self, header: StoredHeader) -> Result<(), StoreError> {
        self.revision = header.revision;
        self.schema = header.schema;
        self.policy_model = header.policy_model;
        Ok(())
    }

    fn relationship(&mut self, relationship: RelationshipRef<'_>) -> Result<(), StoreError> {
        self.relationships.push(relationship.to_relationship());
        Ok(())
    }

    fn attributes(&mut self, object_type: &str, object_id: &str, json: &str) -> Result<(), StoreError> {
        self.attributes.push((object_type.to_string(), object_id.to_string(), json.to_string()));
        Ok(())
    }
}

pub trait RelationshipStore: Send + Sync + Debug {
    /// Reads one consistent state into `sink`: its header, then every relationship.
    fn scan(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError>;

    /// The whole state, owned (tests and small stores; the engine scans).
    fn load(&self) -> Result<StoredState, StoreError> {
        let mut state = StoredState::default();
        self.scan(&mut state)?;
        Ok(state)
    }
    /// Makes one write durable. Called under the engine's write lock, in revision order;
    /// on error the write is not published.
    fn commit(&self, commit: &Commit<'_>) -> Result<(), StoreError>;
    /// Up to `limit` logged commits after `revision`, oldest first (for Watch).
    fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, StoreError>;
}

/// Identity of a relationship (caveat and expiration are attributes, not identity).
pub fn relationship_key(r: &Relationship) -> String {
    let mut s = format!("{}#{}@{}", r.resource, r.relation, r.subject);
    if r.subject.relation.is_none() {
        s.push_str("#...");
    }
    s
}

/// A store that keeps its state in process memory: nothing survives a restart. Used by
/// `arbiter validate` and tests; the server uses a durable store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    revision: u64,
    schema: Option<String>,
    policy_model: Option<String>,
    relationships: BTreeMap<String, Relationship>,
    attributes: BTreeMap<(String, String), String>,
    changelog: std::collections::VecDeque<LoggedCommit>,
}

/// How many commits the memory store's changelog keeps.
const MEMORY_CHANGELOG: usize = 10_000;

impl RelationshipStore for MemoryStore {
    fn scan(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        let st = self.state.lock().map_err(|_| StoreError("memory store lock poisoned".into()))?;
        sink.header(StoredHeader {
            revision: st.revision,
            schema: st.schema.clone(),
            policy_model: st.policy_model.clone(),
        })?;
        for r in st.relationships.values() {
            sink.relationship(RelationshipRef::of(r))?;
        }
        for ((t, i), json) in &st.attributes {
            sink.attributes(t, i, json)?;
        }
        Ok(())
    }

    fn commit(&self, commit: &Commit<'_>) -> Result<(), StoreError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))?;
        st.revision = commit.revision;
        if let Some(s) = commit.schema {
            st.schema = Some(s.to_string());
        }
        if let Some(m) = commit.policy_model {
            st.policy_model = Some(m.to_string());
        }
        st.changelog.push_back(LoggedCommit {
            revision: commit.revision,
            committed_at_micros: crate::graph::wall_clock_micros(),
            changes: commit.changes.to_vec(),
            schema: commit.schema.map(str::to_string),
            policy_model: commit.policy_model.map(str::to_string),
            attributes: commit.attributes.to_vec(),
        });
        for a in commit.attributes {
            let key = (a.object_type.clone(), a.object_id.clone());
            match &a.attributes {
                Some(json) => {
                    st.attributes.insert(key, json.clone());
                }
                None => {
                    st.attributes.remove(&key);
                }
            }
        }
        if st.changelog.len() > MEMORY_CHANGELOG {
            st.changelog.pop_front();
        }
        for c in commit.changes {
            let key = relationship_key(&c.relationship);
            match c.op {
                ChangeOp::Touch => {
                    st.relationships.insert(key, c.relationship.clone());
                }
                ChangeOp::Delete => {
                    st.relationships.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, StoreError> {
        let st = self
            .state
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))?;
        if let Some(oldest) = st.changelog.front().map(|c| c.revision) {
            if revision + 1 < oldest {
                return Ok(ChangesAfter::TooOld { oldest });
            }
        }
        Ok(ChangesAfter::Commits(
            st.changelog
                .iter()
                .filter(|c| c.revision > revision)
                .take(limit)
                .cloned()
                .collect(),
        ))
    }
}

impl<T: RelationshipStore + ?Sized> RelationshipStore for std::sync::Arc<T> {
    fn scan(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        (**self).scan(sink)
    }

    fn commit(&self, commit: &Commit<'_>) -> Result<(), StoreError> {
        (**self).commit(commit)
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, StoreError> {
        (**self).changes_after(revision, limit)
    }
}
