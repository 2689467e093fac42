//! `arbiter-engine`: the interned, in-memory relationship graph with MVCC revisions, and
//! Check evaluation over it. No network, no async runtime; durable storage plugs in
//! through [`RelationshipStore`].

pub mod bounds;
pub mod caveats;
mod check;
pub mod engine;
pub mod error;
pub mod expand;
mod explain;
pub mod filter;
pub mod graph;
pub mod intern;
mod load;
mod lookup;
mod paging;
pub mod policy;
pub mod schema_plan;
pub mod store;
pub mod store_suite;

pub use engine::{
    now_micros, ApplyReport, MAX_CAVEAT_CONTEXT_BYTES, AttributeUpdate, CheckRequest, CheckResponse, Consistency, Decision, Engine, EngineConfig, Explanation,
    Excluded, FoundResource, FoundSubject, Listener, LookupResourcesPage, LookupResourcesRequest, LookupSubjectsPage,
    LookupSubjectsRequest, Precondition, ReadPage, ReadRequest, RelationshipUpdate, UpdateOp, LOOKUP_CHUNK,
};
pub use error::{EngineError, ErrorKind};
pub use expand::{ExpandCaveat, ExpandNode, ExpandSubject, ExpandTree};
pub use policy::{
    split_policies, AttrDecl, AttrSource, AttrType, AttributeDecls, Inference, LabelDef, ObjectAttributes, PolicyError, PolicyModel,
    PolicyText,
};
pub use filter::{RelationshipFilter, SubjectFilter, SubjectRelationFilter};
pub use store::{
    AttributeChange, CaveatView, Change, ChangeOp, ContextView, ChangesAfter, Commit, LoadSink, LoggedCommit, MemoryStore, RelationshipRef,
    RelationshipStore, StoreError, StoredHeader, StoredState,
};
