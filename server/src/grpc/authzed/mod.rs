//! SpiceDB's API (`authzed.api.v1`) on Arbiter's gRPC port, so that SpiceDB's client
//! libraries work unchanged: PermissionsService, SchemaService and WatchService over the
//! same engine, `Shared` state, metrics and auth layer as `arbiter.v1`. This module holds
//! the conversions between SpiceDB's wire types and the engine's, and SpiceDB's choice of
//! status code for each engine error.
//!
//! ZedTokens are Arbiter's revision tokens (`rN`); the four Consistency modes map onto
//! the engine's. Without caveats, answers are HAS_PERMISSION or NO_PERMISSION, and a
//! caveated relationship is refused as the native API refuses it.

use arbiter_engine::{
    Consistency, EngineError, ExpandNode, ExpandTree, RelationshipFilter, SubjectFilter,
    SubjectRelationFilter,
};
use arbiter_proto::authzed::api::v1 as pb;
use arbiter_schema::{CaveatRef, ObjectRef, Relationship, SubjectRef};
use chrono::{TimeZone, Utc};
use tonic::Status;

use super::Shared;
use crate::convert::{self, invalid};
use crate::token;

pub mod permissions;
pub mod schema;
pub mod watch;

pub use permissions::AuthzedPermissions;
pub use schema::AuthzedSchema;
pub use watch::AuthzedWatch;

/// The status SpiceDB gives the same mistake. Mostly the native mapping (DESIGN §5); where
/// SpiceDB differs: re-creating an existing relationship is ALREADY_EXISTS, and a
/// relationship the schema does not allow (wrong subject type, a permission written to)
/// is INVALID_ARGUMENT.
pub fn status(e: EngineError) -> Status {
    match &e {
        EngineError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        EngineError::SubjectNotAllowed { .. } | EngineError::WriteToPermission { .. } => {
            Status::invalid_argument(e.to_string())
        }
        _ => convert::status(e),
    }
}

/// A SpiceDB Consistency as the engine's (absent means minimize_latency, as in SpiceDB).
pub fn consistency(c: Option<&pb::Consistency>) -> Result<Consistency, Status> {
    use pb::consistency::Requirement;
    let decode = |t: &pb::ZedToken| token::decode(&t.token).map_err(invalid);
    match c.and_then(|c| c.requirement.as_ref()) {
        None | Some(Requirement::MinimizeLatency(_)) => Ok(Consistency::MinimizeLatency),
        Some(Requirement::FullyConsistent(_)) => Ok(Consistency::FullyConsistent),
        Some(Requirement::AtLeastAsFresh(t)) => decode(t).map(Consistency::AtLeastAsFresh),
        Some(Requirement::AtExactSnapshot(t)) => decode(t).map(Consistency::AtExactSnapshot),
    }
}

/// Before a read: on a replica, waits (bounded) until the revision the consistency asks
/// for is applied here (see [`Shared::fresh`]); nothing to wait for on the embedded store.
pub async fn fresh(shared: &Shared, c: Option<&pb::Consistency>) -> Result<Consistency, Status> {
    let consistency = consistency(c)?;
    if let Some(replica) = &shared.replica {
        match consistency {
            Consistency::MinimizeLatency => {}
            Consistency::FullyConsistent => {
                replica.wait_for_head().await?;
            }
            Consistency::AtLeastAsFresh(r) | Consistency::AtExactSnapshot(r) => {
                replica.wait_for(r).await?
            }
        }
    }
    Ok(consistency)
}

pub fn zed_token(revision: u64) -> Option<pb::ZedToken> {
    Some(pb::ZedToken {
        token: token::encode(revision),
    })
}

/// A required object reference, checked for presence (the engine checks the id).
pub fn object<'a>(
    o: Option<&'a pb::ObjectReference>,
    field: &str,
) -> Result<&'a pb::ObjectReference, Status> {
    let o = o.ok_or_else(|| invalid(format!("`{field}` is required")))?;
    if o.object_type.is_empty() {
        return Err(invalid(format!("`{field}.object_type` is required")));
    }
    if o.object_id.is_empty() {
        return Err(invalid(format!("`{field}.object_id` is required")));
    }
    Ok(o)
}

/// A required subject: `(type, id, relation or None)`; `...` means the object itself.
pub fn subject<'a>(
    s: Option<&'a pb::SubjectReference>,
    field: &str,
) -> Result<(&'a str, &'a str, Option<&'a str>), Status> {
    let s = s.ok_or_else(|| invalid(format!("`{field}` is required")))?;
    // The nested field's name is formatted only for the error (CheckBulkPermissions
    // converts thousands of subjects a call).
    let o = object(s.object.as_ref(), "").or_else(|_| object(s.object.as_ref(), &format!("{field}.object")))?;
    let relation = match s.optional_relation.as_str() {
        "" | "..." => None,
        r => Some(r),
    };
    Ok((o.object_type.as_str(), o.object_id.as_str(), relation))
}

/// A relationship from the wire. A caveat is carried through so that the engine refuses
/// it exactly as it refuses caveats from the native API.
pub fn relationship(r: Option<&pb::Relationship>, field: &str) -> Result<Relationship, Status> {
    let r = r.ok_or_else(|| invalid(format!("`{field}` is required")))?;
    let resource = object(r.resource.as_ref(), &format!("{field}.resource"))?;
    let relation = convert::required(&r.relation, &format!("{field}.relation"))?;
    let (st, sid, srel) = subject(r.subject.as_ref(), &format!("{field}.subject"))?;
    let expiration = r
        .optional_expires_at
        .as_ref()
        .map(|t| {
            u32::try_from(t.nanos)
                .ok()
                .and_then(|n| Utc.timestamp_opt(t.seconds, n).single())
                .ok_or_else(|| {
                    invalid(format!(
                        "`{field}.optional_expires_at` is not a valid timestamp"
                    ))
                })
        })
        .transpose()?;
    let caveat = r
        .optional_caveat
        .as_ref()
        .filter(|c| !c.caveat_name.is_empty())
        .map(|c| CaveatRef {
            name: c.caveat_name.clone(),
            context: c.context.as_ref().map(convert::context),
        });
    Ok(Relationship {
        resource: ObjectRef {
            object_type: resource.object_type.clone(),
            object_id: resource.object_id.clone(),
        },
        relation: relation.to_string(),
        subject: SubjectRef {
            object: ObjectRef {
                object_type: st.to_string(),
                object_id: sid.to_string(),
            },
            relation: srel.map(str::to_string),
        },
        caveat,
        expiration,
    })
}

pub fn to_pb_object(o: &ObjectRef) -> pb::ObjectReference {
    pb::ObjectReference {
        object_type: o.object_type.clone(),
        object_id: o.object_id.clone(),
    }
}

pub fn to_pb_subject(s: &SubjectRef) -> pb::SubjectReference {
    pb::SubjectReference {
        object: Some(to_pb_object(&s.object)),
        optional_relation: s.relation.clone().unwrap_or_default(),
    }
}

pub fn to_pb_relationship(r: &Relationship) -> pb::Relationship {
    pb::Relationship {
        resource: Some(to_pb_object(&r.resource)),
        relation: r.relation.clone(),
        subject: Some(to_pb_subject(&r.subject)),
        optional_caveat: r.caveat.as_ref().map(|c| pb::ContextualizedCaveat {
            caveat_name: c.name.clone(),
            context: c.context.clone().map(convert::to_pb_struct),
        }),
        optional_expires_at: r.expiration.as_ref().map(convert::timestamp),
    }
}

/// A SpiceDB RelationshipFilter, checked, in a form that both converts to the engine's
/// filter and matches relationships directly (for Watch, export and id prefixes, which
/// the engine's filter does not have).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireFilter {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_id_prefix: Option<String>,
    pub relation: Option<String>,
    pub subject: Option<SubjectFilter>,
}

impl WireFilter {
    pub fn parse(f: &pb::RelationshipFilter, field: &str) -> Result<WireFilter, Status> {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        if !f.optional_resource_id.is_empty() && !f.optional_resource_id_prefix.is_empty() {
            return Err(invalid(format!(
                "`{field}`: give `optional_resource_id` or `optional_resource_id_prefix`, not both"
            )));
        }
        let subject = match &f.optional_subject_filter {
            None => None,
            Some(s) => Some(SubjectFilter {
                object_type: convert::required(
                    &s.subject_type,
                    &format!("{field}.optional_subject_filter.subject_type"),
                )?
                .to_string(),
                object_id: opt(&s.optional_subject_id),
                relation: match s.optional_relation.as_ref().map(|r| r.relation.as_str()) {
                    None => SubjectRelationFilter::Any,
                    // SpiceDB: an empty relation filter selects the objects themselves.
                    Some("") | Some("...") => SubjectRelationFilter::Object,
                    Some(r) => SubjectRelationFilter::Relation(r.to_string()),
                },
            }),
        };
        let filter = WireFilter {
            resource_type: opt(&f.resource_type),
            resource_id: opt(&f.optional_resource_id),
            resource_id_prefix: opt(&f.optional_resource_id_prefix),
            relation: opt(&f.optional_relation),
            subject,
        };
        if filter.resource_type.is_none() && filter.resource_id.is_some() {
            return Err(invalid(format!(
                "`{field}.resource_type` is required with `optional_resource_id`"
            )));
        }
        Ok(filter)
    }

    pub fn is_empty(&self) -> bool {
        self == &WireFilter::default()
    }

    /// The engine's filter: everything but the id prefix, which callers apply with
    /// [`WireFilter::matches`].
    pub fn engine(&self) -> RelationshipFilter {
        RelationshipFilter {
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            relation: self.relation.clone(),
            subject: self.subject.clone(),
        }
    }

    pub fn matches(&self, r: &Relationship) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.resource_type, &r.resource.object_type)
            && eq(&self.resource_id, &r.resource.object_id)
            && self
                .resource_id_prefix
                .as_deref()
                .is_none_or(|p| r.resource.object_id.starts_with(p))
            && eq(&self.relation, &r.relation)
            && self.subject.as_ref().is_none_or(|s| {
                s.object_type == r.subject.object.object_type
                    && eq(&s.object_id, &r.subject.object.object_id)
                    && match &s.relation {
                        SubjectRelationFilter::Any => true,
                        SubjectRelationFilter::Object => r.subject.relation.is_none(),
                        SubjectRelationFilter::Relation(rel) => {
                            r.subject.relation.as_deref() == Some(rel.as_str())
                        }
                    }
            })
    }
}

/// Write preconditions. An id prefix cannot be judged atomically with the write here,
/// so it is refused.
pub fn preconditions(ps: &[pb::Precondition]) -> Result<Vec<arbiter_engine::Precondition>, Status> {
    ps.iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("optional_preconditions[{i}]");
            let must_match = match pb::precondition::Operation::try_from(p.operation) {
                Ok(pb::precondition::Operation::MustMatch) => true,
                Ok(pb::precondition::Operation::MustNotMatch) => false,
                _ => {
                    return Err(invalid(format!(
                        "`{field}.operation` must be OPERATION_MUST_MATCH or OPERATION_MUST_NOT_MATCH"
                    )))
                }
            };
            let f = p.filter.as_ref().ok_or_else(|| invalid(format!("`{field}.filter` is required")))?;
            let filter = WireFilter::parse(f, &format!("{field}.filter"))?;
            if filter.resource_id_prefix.is_some() {
                return Err(Status::unimplemented(format!(
                    "`{field}.filter.optional_resource_id_prefix`: Arbiter does not take id prefixes in preconditions"
                )));
            }
            if filter.resource_type.is_none() {
                return Err(invalid(format!("`{field}.filter.resource_type` is required")));
            }
            Ok(arbiter_engine::Precondition { must_match, filter: filter.engine() })
        })
        .collect()
}

/// Expand's userset tree in SpiceDB's shape: a relation's written subjects are a leaf;
/// union, intersection and exclusion are intermediate nodes; an arrow is the union of
/// what it reaches; `nil` is an empty leaf; a cycle is a leaf naming the userset itself.
pub fn expand_tree(t: &ExpandTree) -> pb::PermissionRelationshipTree {
    use pb::algebraic_subject_set::Operation;
    use pb::permission_relationship_tree::TreeType;
    let intermediate = |op: Operation, children: Vec<pb::PermissionRelationshipTree>| {
        TreeType::Intermediate(pb::AlgebraicSubjectSet {
            operation: op as i32,
            children,
        })
    };
    let leaf =
        |subjects: Vec<pb::SubjectReference>| TreeType::Leaf(pb::DirectSubjectSet { subjects });
    let tree_type = match &t.node {
        ExpandNode::Leaf(subjects) => {
            leaf(subjects.iter().map(|s| to_pb_subject(&s.subject)).collect())
        }
        ExpandNode::Union(c) => intermediate(Operation::Union, c.iter().map(expand_tree).collect()),
        ExpandNode::Intersection(c) => {
            intermediate(Operation::Intersection, c.iter().map(expand_tree).collect())
        }
        ExpandNode::Exclusion { base, subtract } => intermediate(
            Operation::Exclusion,
            vec![expand_tree(base), expand_tree(subtract)],
        ),
        ExpandNode::Arrow { children, .. } => {
            intermediate(Operation::Union, children.iter().map(expand_tree).collect())
        }
        ExpandNode::Nil => leaf(Vec::new()),
        ExpandNode::Cycle => leaf(vec![pb::SubjectReference {
            object: Some(to_pb_object(&t.resource)),
            optional_relation: t.relation.clone(),
        }]),
    };
    pb::PermissionRelationshipTree {
        tree_type: Some(tree_type),
        expanded_object: Some(to_pb_object(&t.resource)),
        expanded_relation: t.relation.clone(),
    }
}

/// A `google.rpc.Status` for one failed item of CheckBulkPermissions.
pub fn rpc_status(s: &Status) -> arbiter_proto::google::rpc::Status {
    arbiter_proto::google::rpc::Status {
        code: s.code() as i32,
        message: s.message().to_string(),
        details: Vec::new(),
    }
}

/// A cursor token from the wire (empty means from the start).
pub fn cursor(c: &Option<pb::Cursor>) -> Option<&str> {
    c.as_ref()
        .map(|c| c.token.as_str())
        .filter(|t| !t.is_empty())
}

pub fn to_cursor(token: String) -> Option<pb::Cursor> {
    Some(pb::Cursor { token })
}
