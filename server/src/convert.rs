//! Conversions between the wire types of `arbiter.v1` and the engine's types, and the
//! mapping of engine errors to gRPC status codes (and to HTTP statuses, for AuthZEN). Every missing or malformed field is an
//! INVALID_ARGUMENT naming the field.

use arbiter_engine::{
    Consistency, EngineError, ErrorKind, ExpandNode, ExpandTree, RelationshipFilter, SubjectFilter,
    SubjectRelationFilter,
};
use arbiter_proto::arbiter::v1 as pb;
use arbiter_schema::{ObjectRef, Relationship, SubjectRef};
use chrono::{DateTime, TimeZone, Utc};
use tonic::Status;

use crate::token;

/// The gRPC status of an engine error: the code of DESIGN §5, the engine's message (a
/// storage failure's detail stays in the server's log: [`message`]).
pub fn status(e: EngineError) -> Status {
    let message = message(&e);
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::FailedPrecondition => Status::failed_precondition(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::Internal => Status::internal(message),
    }
}

/// What a client is told of an engine error: the engine's message for the caller's
/// mistakes; for a failure of the server's own (storage), a short message and an error
/// id, with the detail in the server's log under that id ([`server_fault`]).
pub fn message(e: &EngineError) -> String {
    match e {
        EngineError::Store(detail) => fault_message("storage error", detail),
        _ => e.to_string(),
    }
}

/// A failure of the server's own (storage, Postgres, a worker thread) as a status with
/// `code`: the client gets `what` and an error id; the detail (paths, SQL, addresses) is
/// logged under that id, never sent.
pub fn server_fault(code: tonic::Code, what: &str, detail: &dyn std::fmt::Display) -> Status {
    Status::new(code, fault_message(what, detail))
}

fn fault_message(what: &str, detail: &dyn std::fmt::Display) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| (Utc::now().timestamp_micros() as u64) ^ u64::from(std::process::id()) << 40);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{:012x}-{n}", boot & 0xffff_ffff_ffff);
    tracing::error!(error_id = %id, "{what}: {detail}");
    format!("{what} (error id `{id}`; the details are in the server's log)")
}

/// The HTTP status of an engine error (AuthZEN): the caller's mistakes (malformed input,
/// an undefined type or relation) are 400, a revision not reached yet 503.
pub fn http_status(kind: ErrorKind) -> http::StatusCode {
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition => http::StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status of a gRPC code, for the server's own refusals on the HTTP side.
pub fn http_status_of_code(code: tonic::Code) -> http::StatusCode {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => http::StatusCode::BAD_REQUEST,
        Code::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => http::StatusCode::FORBIDDEN,
        Code::NotFound => http::StatusCode::NOT_FOUND,
        Code::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => http::StatusCode::GATEWAY_TIMEOUT,
        _ => http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status code name of an engine error (for CheckBulk's per-item errors).
pub fn code_name(e: &EngineError) -> &'static str {
    match e.kind() {
        ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
        ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
        ErrorKind::Unavailable => "UNAVAILABLE",
        ErrorKind::Internal => "INTERNAL",
    }
}

pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

pub fn consistency(c: Option<&pb::Consistency>) -> Result<Consistency, Status> {
    use pb::consistency::Requirement;
    match c.and_then(|c| c.requirement.as_ref()) {
        None | Some(Requirement::MinimizeLatency(_)) => Ok(Consistency::MinimizeLatency),
        Some(Requirement::FullyConsistent(_)) => Ok(Consistency::FullyConsistent),
        Some(Requirement::AtLeastAsFresh(t)) => token::decode(t)
            .map(Consistency::AtLeastAsFresh)
            .map_err(invalid),
        Some(Requirement::AtExactSnapshot(t)) => token::decode(t)
            .map(Consistency::AtExactSnapshot)
            .map_err(invalid),
    }
}

/// A required object reference.
pub fn object<'a>(o: Option<&'a pb::ObjectRef>, field: &str) -> Result<&'a pb::ObjectRef, Status> {
    let o = o.ok_or_else(|| invalid(format!("`{field}` is required")))?;
    if o.r#type.is_empty() {
        return Err(invalid(format!("`{field}.type` is required")));
    }
    if o.id.is_empty() {
        return Err(invalid(format!("`{field}.id` is required")));
    }
    Ok(o)
}

/// A required subject: `(type, id, relation or None)`.
pub fn subject<'a>(
    s: Option<&'a pb::SubjectRef>,
    field: &str,
) -> Result<(&'a str, &'a str, Option<&'a str>), Status> {
    let s = s.ok_or_else(|| invalid(format!("`{field}` is required")))?;
    // The nested field's name is formatted only for the error (CheckBulk converts
    // thousands of subjects a call).
    let o = object(s.object.as_ref(), "").or_else(|_| object(s.object.as_ref(), &format!("{field}.object")))?;
    let relation = (!s.relation.is_empty() && s.relation != "...").then_some(s.relation.as_str());
    Ok((o.r#type.as_str(), o.id.as_str(), relation))
}

pub fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(invalid(format!("`{field}` is required")))
    } else {
        Ok(value)
    }
}

pub fn timestamp(t: &DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn from_timestamp(t: &prost_types::Timestamp, field: &str) -> Result<DateTime<Utc>, Status> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|n| Utc.timestamp_opt(t.seconds, n).single())
        .ok_or_else(|| invalid(format!("`{field}` is not a valid timestamp")))
}

/// A relationship from the wire (validated against the schema by the engine later).
pub fn relationship(r: Option<&pb::Relationship>, field: &str) -> Result<Relationship, Status> {
    let r = r.ok_or_else(|| invalid(format!("`{field}` is required")))?;
    let resource = object(r.resource.as_ref(), &format!("{field}.resource"))?;
    let relation = required(&r.relation, &format!("{field}.relation"))?;
    let (st, sid, srel) = subject(r.subject.as_ref(), &format!("{field}.subject"))?;
    let expiration = r
        .expires_at
        .as_ref()
        .map(|t| from_timestamp(t, &format!("{field}.expires_at")))
        .transpose()?;
    Ok(Relationship {
        resource: ObjectRef {
            object_type: resource.r#type.clone(),
            object_id: resource.id.clone(),
        },
        relation: relation.to_string(),
        subject: SubjectRef {
            object: ObjectRef {
                object_type: st.to_string(),
                object_id: sid.to_string(),
            },
            relation: srel.map(str::to_string),
        },
        caveat: (!r.caveat_name.is_empty()).then(|| arbiter_schema::CaveatRef {
            name: r.caveat_name.clone(),
            context: r.caveat_context.as_ref().map(context),
        }),
        expiration,
    })
}

/// [`relationship`] for an owned message (bulk imports): its strings are moved, not
/// copied, and `field` is formatted only when the message is bad, by [`relationship`]
/// itself, so errors read the same.
pub fn owned_relationship(r: pb::Relationship, field: impl FnOnce() -> String) -> Result<Relationship, Status> {
    let complete = !r.relation.is_empty()
        && r.resource.as_ref().is_some_and(|o| !o.r#type.is_empty() && !o.id.is_empty())
        && r.subject.as_ref().and_then(|s| s.object.as_ref()).is_some_and(|o| !o.r#type.is_empty() && !o.id.is_empty())
        && r.expires_at.is_none()
        && r.caveat_name.is_empty()
        && r.caveat_context.is_none();
    if !complete {
        return relationship(Some(&r), &field());
    }
    let pb::Relationship { resource, relation, subject, .. } = r;
    let (Some(resource), Some(pb::SubjectRef { object: Some(object), relation: srel })) = (resource, subject) else {
        return Err(invalid(format!("`{}` is incomplete", field())));
    };
    Ok(Relationship {
        resource: ObjectRef { object_type: resource.r#type, object_id: resource.id },
        relation,
        subject: SubjectRef {
            object: ObjectRef { object_type: object.r#type, object_id: object.id },
            relation: (!srel.is_empty() && srel != "...").then_some(srel),
        },
        caveat: None,
        expiration: None,
    })
}

pub fn to_pb_relationship(r: &Relationship) -> pb::Relationship {
    pb::Relationship {
        resource: Some(pb::ObjectRef {
            r#type: r.resource.object_type.clone(),
            id: r.resource.object_id.clone(),
        }),
        relation: r.relation.clone(),
        subject: Some(to_pb_subject(&r.subject)),
        expires_at: r.expiration.as_ref().map(timestamp),
        caveat_name: r.caveat.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        caveat_context: r.caveat.as_ref().and_then(|c| c.context.clone()).map(to_pb_struct),
    }
}

pub fn to_pb_subject(s: &SubjectRef) -> pb::SubjectRef {
    pb::SubjectRef {
        object: Some(pb::ObjectRef {
            r#type: s.object.object_type.clone(),
            id: s.object.object_id.clone(),
        }),
        relation: s.relation.clone().unwrap_or_default(),
    }
}

/// A relationship filter from the wire; `resource_type` is required.
pub fn filter(
    f: Option<&pb::RelationshipFilter>,
    field: &str,
) -> Result<RelationshipFilter, Status> {
    let f = f.ok_or_else(|| invalid(format!("`{field}` is required")))?;
    let resource_type = required(&f.resource_type, &format!("{field}.resource_type"))?;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let subject = match &f.subject {
        None => None,
        Some(s) => Some(SubjectFilter {
            object_type: required(&s.r#type, &format!("{field}.subject.type"))?.to_string(),
            object_id: opt(&s.id),
            relation: match s.relation.as_str() {
                "" => SubjectRelationFilter::Any,
                "..." => SubjectRelationFilter::Object,
                r => SubjectRelationFilter::Relation(r.to_string()),
            },
        }),
    };
    Ok(RelationshipFilter {
        resource_type: Some(resource_type.to_string()),
        resource_id: opt(&f.resource_id),
        relation: opt(&f.relation),
        subject,
    })
}

pub fn to_pb_filter(f: &RelationshipFilter) -> pb::RelationshipFilter {
    pb::RelationshipFilter {
        resource_type: f.resource_type.clone().unwrap_or_default(),
        resource_id: f.resource_id.clone().unwrap_or_default(),
        relation: f.relation.clone().unwrap_or_default(),
        subject: f.subject.as_ref().map(|s| pb::SubjectFilter {
            r#type: s.object_type.clone(),
            id: s.object_id.clone().unwrap_or_default(),
            relation: match &s.relation {
                SubjectRelationFilter::Any => String::new(),
                SubjectRelationFilter::Object => "...".to_string(),
                SubjectRelationFilter::Relation(r) => r.clone(),
            },
        }),
    }
}

pub fn preconditions(ps: &[pb::Precondition]) -> Result<Vec<arbiter_engine::Precondition>, Status> {
    ps.iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("preconditions[{i}]");
            let must_match = match pb::precondition::Operation::try_from(p.operation) {
                Ok(pb::precondition::Operation::MustMatch) => true,
                Ok(pb::precondition::Operation::MustNotMatch) => false,
                _ => {
                    return Err(invalid(format!(
                        "`{field}.operation` must be MUST_MATCH or MUST_NOT_MATCH"
                    )))
                }
            };
            Ok(arbiter_engine::Precondition {
                must_match,
                filter: filter(p.filter.as_ref(), &format!("{field}.filter"))?,
            })
        })
        .collect()
}

pub fn expand_tree(t: &ExpandTree) -> pb::UsersetTree {
    use pb::userset_tree::{Arrow, Children, Exclusion, Leaf, Node};
    let node = match &t.node {
        ExpandNode::Leaf(subjects) => Node::Leaf(Leaf {
            subjects: subjects.iter().map(|s| to_pb_subject(&s.subject)).collect(),
            caveats: if subjects.iter().any(|s| s.caveat.is_some()) {
                subjects.iter().map(|s| s.caveat.as_ref().map(tree_caveat).unwrap_or_default()).collect()
            } else {
                Vec::new()
            },
        }),
        ExpandNode::Union(c) => Node::Union(Children {
            children: c.iter().map(expand_tree).collect(),
        }),
        ExpandNode::Intersection(c) => Node::Intersection(Children {
            children: c.iter().map(expand_tree).collect(),
        }),
        ExpandNode::Exclusion { base, subtract } => Node::Exclusion(Box::new(Exclusion {
            base: Some(Box::new(expand_tree(base))),
            subtract: Some(Box::new(expand_tree(subtract))),
        })),
        ExpandNode::Arrow {
            tupleset,
            computed,
            all,
            children,
        } => Node::Arrow(Arrow {
            tupleset: tupleset.clone(),
            computed: computed.clone(),
            all: *all,
            children: children.iter().map(expand_tree).collect(),
        }),
        ExpandNode::Nil => Node::Nil(true),
        ExpandNode::Cycle => Node::Cycle(true),
    };
    pb::UsersetTree {
        resource: Some(pb::ObjectRef {
            r#type: t.resource.object_type.clone(),
            id: t.resource.object_id.clone(),
        }),
        relation: t.relation.clone(),
        node: Some(node),
        caveat: t.caveat.as_ref().map(tree_caveat),
    }
}

fn tree_caveat(c: &arbiter_engine::ExpandCaveat) -> pb::TreeCaveat {
    pb::TreeCaveat {
        caveat_name: c.name.clone(),
        context: c.context.clone().map(to_pb_struct),
        expression: c.expression.clone(),
    }
}

/// A `google.protobuf.Struct` (a request context) as a JSON object. Whole numbers become
/// JSON integers (Cedar has longs, not floats); other numbers stay floats, which Cedar
/// then refuses with a message naming the attribute.
pub fn context(s: &prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields.iter().map(|(k, v)| (k.clone(), json_value(v))).collect()
}

/// A request's `context`, refused (INVALID_ARGUMENT naming the key) when it nests
/// deeper than every context may (`arbiter_engine::bounds::MAX_VALUE_DEPTH`), whether or
/// not a policy would read it.
pub fn request_context(
    s: Option<&prost_types::Struct>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, Status> {
    let Some(s) = s else { return Ok(None) };
    let map = context(s);
    arbiter_engine::bounds::json_fields("context", &map).map_err(invalid)?;
    Ok(Some(map))
}

fn json_value(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => serde_json::Value::from(*n as i64),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map(serde_json::Value::Number).unwrap_or_default(),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(json_value).collect()),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(context(s)),
    }
}

/// A JSON value as a `google.protobuf.Value` (numbers become doubles).
pub fn to_pb_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.into_iter().map(to_pb_value).collect() })
        }
        serde_json::Value::Object(m) => Kind::StructValue(to_pb_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn to_pb_struct(m: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: m.into_iter().map(|(k, v)| (k, to_pb_value(v))).collect() }
}

/// Attribute definitions and labels from the API, as the engine keeps them.
pub fn attribute_schema(
    definitions: &[pb::AttributeDefinition],
    labels: &[pb::SecurityLabel],
) -> Result<(arbiter_engine::AttributeDecls, std::collections::BTreeMap<String, arbiter_engine::LabelDef>), Status> {
    let mut decls = arbiter_engine::AttributeDecls::default();
    for (i, d) in definitions.iter().enumerate() {
        if d.name.trim().is_empty() {
            return Err(invalid(format!("`definitions[{i}].name` is required")));
        }
        let ty: arbiter_engine::AttrType =
            d.r#type.parse().map_err(|e| invalid(format!("`definitions[{i}].type`: {e}")))?;
        let fields = if d.object_type.is_empty() {
            &mut decls.context
        } else {
            decls.types.entry(d.object_type.clone()).or_default()
        };
        let source: arbiter_engine::AttrSource =
            d.source.parse().map_err(|e| invalid(format!("`definitions[{i}].source`: {e}")))?;
        let decl = arbiter_engine::AttrDecl { ty, required: d.required, source };
        if fields.insert(d.name.clone(), decl).is_some() {
            let on = if d.object_type.is_empty() { "the context".to_string() } else { format!("`{}`", d.object_type) };
            return Err(invalid(format!("`definitions[{i}]`: `{}` is defined twice on {on}", d.name)));
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        if l.name.trim().is_empty() {
            return Err(invalid(format!("`labels[{i}].name` is required")));
        }
        let def = arbiter_engine::LabelDef { level: l.level, parents: l.parents.clone() };
        if out.insert(l.name.clone(), def).is_some() {
            return Err(invalid(format!("`labels[{i}]`: the label `{}` is defined twice", l.name)));
        }
    }
    Ok((decls, out))
}

/// The attribute definitions and labels in force, for the API.
pub fn to_pb_attribute_schema(
    model: &arbiter_engine::PolicyModel,
) -> (Vec<pb::AttributeDefinition>, Vec<pb::SecurityLabel>) {
    let def = |object_type: &str, (name, d): (&String, &arbiter_engine::AttrDecl)| pb::AttributeDefinition {
        object_type: object_type.to_string(),
        name: name.clone(),
        r#type: d.ty.to_string(),
        required: d.required,
        source: if d.source.is_stored() { String::new() } else { d.source.as_str().to_string() },
    };
    let mut definitions: Vec<pb::AttributeDefinition> = model
        .declarations
        .types
        .iter()
        .flat_map(|(t, fields)| fields.iter().map(move |f| def(t, f)))
        .collect();
    definitions.extend(model.declarations.context.iter().map(|f| def("", f)));
    let labels = model
        .labels
        .iter()
        .map(|(name, l)| pb::SecurityLabel { name: name.clone(), level: l.level, parents: l.parents.clone() })
        .collect();
    (definitions, labels)
}
