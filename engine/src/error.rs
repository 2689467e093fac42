//! Engine errors. Messages are lowercase, name the offending value in backticks, and
//! each error has a [`ErrorKind`] that the server maps to a status code.

use arbiter_schema::SchemaErrors;

/// How a caller should classify an error (the server maps these to gRPC/HTTP codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input: bad id, bad syntax (INVALID_ARGUMENT).
    InvalidArgument,
    /// Well-formed but impossible in the current state: unknown type or relation,
    /// failed precondition, depth limit, snapshot too old (FAILED_PRECONDITION).
    FailedPrecondition,
    /// The revision asked for is not available here yet (UNAVAILABLE).
    Unavailable,
    /// The storage layer failed (INTERNAL).
    Internal,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("invalid schema: {0}")]
    InvalidSchema(SchemaErrors),
    #[error("no schema has been written yet")]
    NoSchema,
    #[error("undefined type `{0}`")]
    UnknownType(String),
    #[error("undefined relation `{relation}` on `{object_type}`")]
    UnknownRelation {
        object_type: String,
        relation: String,
    },
    #[error("`{relation}` on `{object_type}` is a permission; relationships can only be written to relations")]
    WriteToPermission {
        object_type: String,
        relation: String,
    },
    #[error("subject `{subject}` is not allowed on `{object_type}#{relation}` (allowed: {allowed}), in `{relationship}`")]
    SubjectNotAllowed {
        relationship: String,
        object_type: String,
        relation: String,
        subject: String,
        allowed: String,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("caveat `{caveat}` could not be evaluated: {message}")]
    CaveatEvaluation { caveat: String, message: String },
    #[error("relationship `{0}` already exists")]
    AlreadyExists(String),
    #[error("relationship `{0}` appears more than once in one write")]
    DuplicateInWrite(String),
    #[error("the schema change would orphan {count} existing relationship(s): {}{}", examples.join("; "), if *count > examples.len() { "; ..." } else { "" })]
    WouldOrphan { count: usize, examples: Vec<String> },
    #[error("depth limit of {limit} exceeded while checking `{at}`: the data nests deeper than the limit allows")]
    DepthExceeded { limit: u32, at: String },
    #[error("snapshot too old: revision {requested} is outside the history window (oldest kept is {oldest})")]
    SnapshotTooOld { requested: u64, oldest: u64 },
    #[error("revision {requested} is not available yet (newest here is {newest})")]
    RevisionUnavailable { requested: u64, newest: u64 },
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("{count} relationships match `{filter}`, more than the limit of {limit}; nothing was deleted")]
    TooManyMatches {
        filter: String,
        count: usize,
        limit: usize,
    },
    #[error("invalid policy: {0}")]
    InvalidPolicy(crate::policy::PolicyError),
    #[error("the schema change would make the running policies invalid: {0}")]
    SchemaBreaksPolicies(crate::policy::PolicyError),
    #[error("storage error: {0}")]
    Store(String),
}

impl EngineError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::InvalidSchema(_)
            | EngineError::InvalidArgument(_)
            | EngineError::DuplicateInWrite(_)
            | EngineError::InvalidPolicy(_)
            | EngineError::CaveatEvaluation { .. } => ErrorKind::InvalidArgument,
            EngineError::NoSchema
            | EngineError::UnknownType(_)
            | EngineError::UnknownRelation { .. }
            | EngineError::WriteToPermission { .. }
            | EngineError::SubjectNotAllowed { .. }
            | EngineError::AlreadyExists(_)
            | EngineError::WouldOrphan { .. }
            | EngineError::DepthExceeded { .. }
            | EngineError::SnapshotTooOld { .. }
            | EngineError::PreconditionFailed(_)
            | EngineError::TooManyMatches { .. }
            | EngineError::SchemaBreaksPolicies(_) => ErrorKind::FailedPrecondition,
            EngineError::RevisionUnavailable { .. } => ErrorKind::Unavailable,
            EngineError::Store(_) => ErrorKind::Internal,
        }
    }
}
