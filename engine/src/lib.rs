//! `arbiter-engine`: the interned, in-memory relationship graph with MVCC revisions, and
//! Check evaluation over it. No network, no async runtime; durable storage plugs in
//! through [`RelationshipStore`].

mod check;
pub mod engine;
pub mod expand;
mod lookup;
pub mod error;
pub mod graph;
pub mod intern;
pub mod schema_plan;
pub mod store;
pub mod store_suite;

pub use engine::{
    now_micros, CheckRequest, CheckResponse, Consistency, Decision, Engine, EngineConfig, FoundSubject,
    LookupResourcesPage, LookupResourcesRequest, LookupSubjectsPage, LookupSubjectsRequest, RelationshipUpdate,
    UpdateOp,
};
pub use expand::{ExpandNode, ExpandSubject, ExpandTree};
pub use error::{EngineError, ErrorKind};
pub use store::{Change, ChangeOp, Commit, MemoryStore, RelationshipStore, StoreError, StoredState};
