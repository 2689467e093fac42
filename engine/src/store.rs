//! The storage boundary. The engine keeps the hot graph in memory; a
//! [`RelationshipStore`] makes every write durable before it becomes visible and hands
//! the whole state back at start. RocksDB and Postgres implement this trait in their own
//! crates so the engine never depends on them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

use arbiter_schema::Relationship;

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

/// One atomic write: a new revision with an optional new schema and relationship changes.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    pub revision: u64,
    pub schema: Option<&'a str>,
    pub changes: &'a [Change],
}

/// Everything a store holds, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredState {
    pub revision: u64,
    pub schema: Option<String>,
    pub relationships: Vec<Relationship>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// One revision as the changelog keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedCommit {
    pub revision: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub committed_at_micros: i64,
    pub changes: Vec<Change>,
    /// The new schema, if this revision wrote one.
    pub schema: Option<String>,
}

/// What the changelog holds after a revision.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangesAfter {
    /// The commits after the revision, oldest first (at most the number asked for).
    Commits(Vec<LoggedCommit>),
    /// The changelog no longer reaches back to the revision: the oldest it holds is this.
    TooOld { oldest: u64 },
}

pub trait RelationshipStore: Send + Sync + Debug {
    /// The state to rebuild the graph from.
    fn load(&self) -> Result<StoredState, StoreError>;
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
    relationships: BTreeMap<String, Relationship>,
    changelog: std::collections::VecDeque<LoggedCommit>,
}

/// How many commits the memory store's changelog keeps.
const MEMORY_CHANGELOG: usize = 10_000;

impl RelationshipStore for MemoryStore {
    fn load(&self) -> Result<StoredState, StoreError> {
        let st = self
            .state
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))?;
        Ok(StoredState {
            revision: st.revision,
            schema: st.schema.clone(),
            relationships: st.relationships.values().cloned().collect(),
        })
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
        st.changelog.push_back(LoggedCommit {
            revision: commit.revision,
            committed_at_micros: crate::graph::wall_clock_micros(),
            changes: commit.changes.to_vec(),
            schema: commit.schema.map(str::to_string),
        });
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
    fn load(&self) -> Result<StoredState, StoreError> {
        (**self).load()
    }

    fn commit(&self, commit: &Commit<'_>) -> Result<(), StoreError> {
        (**self).commit(commit)
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, StoreError> {
        (**self).changes_after(revision, limit)
    }
}
