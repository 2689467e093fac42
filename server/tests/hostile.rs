//! A hostile client against the real server: every gRPC method of `arbiter.v1` and of
//! `authzed.api.v1`, and every HTTP route, is sent input an attacker would send —
//! oversized messages, deep nesting and long operator chains, bytes that are not UTF-8,
//! control characters and over-long ids, garbage and future revision tokens, unknown
//! names, malformed JSON, wrong methods and content types, missing and wrong keys.
//!
//! The cases are data: each names a method (or route), how to build the request, the
//! status the contract (README "Security: what is bounded, and how", DESIGN §5 and §8)
//! promises and words its message must contain. One driver runs them all and, after each,
//! checks that the revision did not move, that a Check is still answered and that the
//! process is alive. Every failing case is collected, so one run lists them all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use arbiter_proto::arbiter::v1 as pb;
use arbiter_proto::authzed::api::v1 as z;
use common::Server;
use prost::bytes::{Buf, BufMut};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The preshared key of every server here.
const KEY: &str = "k";

/// How long any one case may take before it counts as a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = r#"
definition user {}

definition group {
    relation member: user | group#member
}

definition doc {
    relation owner: user
    relation viewer: user | user:* | group#member
    permission view = viewer + owner
}
"#;

/// Policies that read a request context value, a request-supplied subject property and a
/// stored resource attribute, so that each of them reaches Cedar.
const POLICIES: &[(&str, &str)] = &[
    ("late", "forbid(principal, action, resource) when { context has hour && context.hour > 100 };"),
    ("tagged", "forbid(principal is user, action, resource) when { principal has tag && principal.tag == \"blocked\" };"),
    ("levelled", "forbid(principal, action, resource is doc) when { resource has level && resource.level > 100 };"),
];

/// Every gRPC method of both APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    // arbiter.v1
    Check, CheckBulk, Expand, LookupResources, LookupSubjects, Write, Delete, Read, Import, Export, Watch,
    WriteAttributes, ReadAttributes, ReadSchema, WriteSchema, ReadPolicies, WritePolicies, ReadAttributeSchema, WriteAttributeSchema,
    // authzed.api.v1
    ZCheck, ZCheckBulk, ZExpand, ZLookupResources, ZLookupSubjects, ZRead, ZWrite, ZDelete, ZImport, ZExport, ZReadSchema, ZWriteSchema, ZReflect, ZWatch,
}

use M::*;

const ALL: [M; 33] = [
    Check, CheckBulk, Expand, LookupResources, LookupSubjects, Write, Delete, Read, Import, Export, Watch,
    WriteAttributes, ReadAttributes, ReadSchema, WriteSchema, ReadPolicies, WritePolicies, ReadAttributeSchema,
    WriteAttributeSchema, ZCheck, ZCheckBulk, ZExpand, ZLookupResources, ZLookupSubjects, ZRead, ZWrite, ZDelete,
    ZImport, ZExport, ZReadSchema, ZWriteSchema, ZReflect, ZWatch,
];

// What a method's request carries, for choosing where a hostile value can go.
const RID: u8 = 1; // a resource (or object) id
const SID: u8 = 2; // a subject id
const TOK: u8 = 4; // a revision token
const LIM: u8 = 8; // a limit
const REL: u8 = 16; // a relation or permission
const CTX: u8 = 32; // a request context (Struct)

impl M {
    fn path(self) -> &'static str {
        match self {
            Check => "/arbiter.v1.PermissionService/Check",
            CheckBulk => "/arbiter.v1.PermissionService/CheckBulk",
            Expand => "/arbiter.v1.PermissionService/Expand",
            LookupResources => "/arbiter.v1.PermissionService/LookupResources",
            LookupSubjects => "/arbiter.v1.PermissionService/LookupSubjects",
            Write => "/arbiter.v1.RelationshipService/WriteRelationships",
            Delete => "/arbiter.v1.RelationshipService/DeleteRelationships",
            Read => "/arbiter.v1.RelationshipService/ReadRelationships",
            Import => "/arbiter.v1.RelationshipService/ImportRelationships",
            Export => "/arbiter.v1.RelationshipService/ExportRelationships",
            Watch => "/arbiter.v1.RelationshipService/Watch",
            WriteAttributes => "/arbiter.v1.RelationshipService/WriteAttributes",
            ReadAttributes => "/arbiter.v1.RelationshipService/ReadAttributes",
            ReadSchema => "/arbiter.v1.SchemaService/ReadSchema",
            WriteSchema => "/arbiter.v1.SchemaService/WriteSchema",
            ReadPolicies => "/arbiter.v1.SchemaService/ReadPolicies",
            WritePolicies => "/arbiter.v1.SchemaService/WritePolicies",
            ReadAttributeSchema => "/arbiter.v1.SchemaService/ReadAttributeSchema",
            WriteAttributeSchema => "/arbiter.v1.SchemaService/WriteAttributeSchema",
            ZCheck => "/authzed.api.v1.PermissionsService/CheckPermission",
            ZCheckBulk => "/authzed.api.v1.PermissionsService/CheckBulkPermissions",
            ZExpand => "/authzed.api.v1.PermissionsService/ExpandPermissionTree",
            ZLookupResources => "/authzed.api.v1.PermissionsService/LookupResources",
            ZLookupSubjects => "/authzed.api.v1.PermissionsService/LookupSubjects",
            ZRead => "/authzed.api.v1.PermissionsService/ReadRelationships",
            ZWrite => "/authzed.api.v1.PermissionsService/WriteRelationships",
            ZDelete => "/authzed.api.v1.PermissionsService/DeleteRelationships",
            ZImport => "/authzed.api.v1.PermissionsService/ImportBulkRelationships",
            ZExport => "/authzed.api.v1.PermissionsService/ExportBulkRelationships",
            ZReadSchema => "/authzed.api.v1.SchemaService/ReadSchema",
            ZWriteSchema => "/authzed.api.v1.SchemaService/WriteSchema",
            ZReflect => "/authzed.api.v1.SchemaService/ReflectSchema",
            ZWatch => "/authzed.api.v1.WatchService/Watch",
        }
    }

    fn uses(self) -> u8 {
        match self {
            Check | ZCheck | CheckBulk | ZCheckBulk => RID | SID | TOK | REL | CTX,
            Expand | ZExpand => RID | TOK | REL,
            LookupResources => SID | TOK | LIM | REL,
            ZLookupResources => SID | TOK | LIM | REL | CTX,
            LookupSubjects => RID | TOK | LIM | REL,
            ZLookupSubjects => RID | TOK | LIM | REL | CTX,
            Read | ZRead => RID | SID | TOK | LIM | REL,
            Delete | ZDelete => RID | SID | LIM | REL,
            Write | ZWrite | Import | ZImport => RID | SID | REL,
            Export => TOK,
            ZExport => TOK | LIM,
            Watch | ZWatch | ZReflect => TOK,
            WriteAttributes => RID | CTX,
            ReadAttributes => RID | TOK,
            ReadSchema | WriteSchema | ReadPolicies | WritePolicies | ReadAttributeSchema | WriteAttributeSchema
            | ZReadSchema | ZWriteSchema => 0,
        }
    }

    fn has(self, what: u8) -> bool {
        self.uses() & what != 0
    }

    /// Whether a malformed item is answered in the response rather than failing the call.
    fn per_item(self) -> bool {
        matches!(self, CheckBulk | ZCheckBulk)
    }
}

/// How a read names its revision.
#[derive(Debug, Clone)]
enum Tok {
    None,
    AtLeast(String),
    Exact(String),
}

/// The parts of a request; each method takes the ones it has.
#[derive(Debug, Clone)]
struct Req {
    rtype: String,
    rid: String,
    rel: String,
    stype: String,
    sid: String,
    srel: String,
    tok: Tok,
    limit: u32,
    /// The cursor of a paged call (empty: from the start).
    cursor: String,
    context: Option<prost_types::Struct>,
    /// The schema (WriteSchema), the policy (WritePolicies) or an extra attribute's type
    /// (WriteAttributeSchema); empty for what the setup wrote.
    text: String,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            rtype: "doc".into(),
            rid: "a".into(),
            rel: "viewer".into(),
            stype: "user".into(),
            sid: "bob".into(),
            srel: String::new(),
            tok: Tok::None,
            limit: 0,
            cursor: String::new(),
            context: None,
            text: String::new(),
        }
    }
}

fn req(f: impl FnOnce(&mut Req)) -> Req {
    let mut r = Req::default();
    f(&mut r);
    r
}

fn pb_obj(t: &str, id: &str) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef { r#type: t.into(), id: id.into() })
}

fn pb_subject(r: &Req) -> Option<pb::SubjectRef> {
    Some(pb::SubjectRef { object: pb_obj(&r.stype, &r.sid), relation: r.srel.clone() })
}

fn pb_consistency(t: &Tok) -> Option<pb::Consistency> {
    use pb::consistency::Requirement as R;
    let requirement = match t {
        Tok::None => R::MinimizeLatency(true),
        Tok::AtLeast(s) => R::AtLeastAsFresh(s.clone()),
        Tok::Exact(s) => R::AtExactSnapshot(s.clone()),
    };
    Some(pb::Consistency { requirement: Some(requirement) })
}

fn pb_relationship(r: &Req) -> pb::Relationship {
    pb::Relationship { resource: pb_obj(&r.rtype, &r.rid), relation: r.rel.clone(), subject: pb_subject(r), ..Default::default() }
}

fn pb_filter(r: &Req) -> Option<pb::RelationshipFilter> {
    Some(pb::RelationshipFilter {
        resource_type: r.rtype.clone(),
        resource_id: r.rid.clone(),
        relation: r.rel.clone(),
        subject: Some(pb::SubjectFilter { r#type: r.stype.clone(), id: r.sid.clone(), relation: r.srel.clone() }),
    })
}

fn z_obj(t: &str, id: &str) -> Option<z::ObjectReference> {
    Some(z::ObjectReference { object_type: t.into(), object_id: id.into() })
}

fn z_subject(r: &Req) -> Option<z::SubjectReference> {
    Some(z::SubjectReference { object: z_obj(&r.stype, &r.sid), optional_relation: r.srel.clone() })
}

fn z_token(t: &Tok) -> Option<z::ZedToken> {
    match t {
        Tok::None => None,
        Tok::AtLeast(s) | Tok::Exact(s) => Some(z::ZedToken { token: s.clone() }),
    }
}

fn z_consistency(t: &Tok) -> Option<z::Consistency> {
    use z::consistency::Requirement as R;
    let requirement = match t {
        Tok::None => R::MinimizeLatency(true),
        Tok::AtLeast(s) => R::AtLeastAsFresh(z::ZedToken { token: s.clone() }),
        Tok::Exact(s) => R::AtExactSnapshot(z::ZedToken { token: s.clone() }),
    };
    Some(z::Consistency { requirement: Some(requirement) })
}

fn z_relationship(r: &Req) -> Option<z::Relationship> {
    Some(z::Relationship {
        resource: z_obj(&r.rtype, &r.rid),
        relation: r.rel.clone(),
        subject: z_subject(r),
        optional_caveat: None,
        optional_expires_at: None,
    })
}

fn z_cursor(r: &Req) -> Option<z::Cursor> {
    (!r.cursor.is_empty()).then(|| z::Cursor { token: r.cursor.clone() })
}

fn z_filter(r: &Req) -> Option<z::RelationshipFilter> {
    Some(z::RelationshipFilter {
        resource_type: r.rtype.clone(),
        optional_resource_id: r.rid.clone(),
        optional_resource_id_prefix: String::new(),
        optional_relation: r.rel.clone(),
        optional_subject_filter: Some(z::SubjectFilter {
            subject_type: r.stype.clone(),
            optional_subject_id: r.sid.clone(),
            optional_relation: (!r.srel.is_empty())
                .then(|| z::subject_filter::RelationFilter { relation: r.srel.clone() }),
        }),
    })
}

fn policy_text(r: &Req) -> String {
    if r.text.is_empty() {
        POLICIES[0].1.to_string()
    } else {
        r.text.clone()
    }
}

fn attribute_definitions(extra_type: &str) -> Vec<pb::AttributeDefinition> {
    let def = |t: &str, name: &str, ty: &str, source: &str| pb::AttributeDefinition {
        object_type: t.into(),
        name: name.into(),
        r#type: ty.into(),
        required: false,
        source: source.into(),
    };
    let mut defs = vec![
        def("user", "tag", "string", "request"),
        def("doc", "level", "long", "stored"),
        def("", "hour", "long", ""),
    ];
    if !extra_type.is_empty() {
        defs.push(def("doc", "probe", extra_type, "stored"));
    }
    defs
}

/// The request messages of `m` built from `r`, encoded.
fn encode(m: M, r: &Req) -> Vec<Vec<u8>> {
    let tok = |t: &Tok| match t {
        Tok::None => String::new(),
        Tok::AtLeast(s) | Tok::Exact(s) => s.clone(),
    };
    let one = match m {
        Check => pb::CheckRequest {
            consistency: pb_consistency(&r.tok),
            resource: pb_obj(&r.rtype, &r.rid),
            permission: r.rel.clone(),
            subject: pb_subject(r),
            context: r.context.clone(),
            explain: false,
        }
        .encode_to_vec(),
        CheckBulk => pb::CheckBulkRequest {
            consistency: pb_consistency(&r.tok),
            items: vec![pb::CheckBulkItem {
                resource: pb_obj(&r.rtype, &r.rid),
                permission: r.rel.clone(),
                subject: pb_subject(r),
                context: r.context.clone(),
            }],
        }
        .encode_to_vec(),
        Expand => pb::ExpandRequest {
            consistency: pb_consistency(&r.tok),
            resource: pb_obj(&r.rtype, &r.rid),
            permission: r.rel.clone(),
        }
        .encode_to_vec(),
        LookupResources => pb::LookupResourcesRequest {
            context: None,
            consistency: pb_consistency(&r.tok),
            resource_type: r.rtype.clone(),
            permission: r.rel.clone(),
            subject: pb_subject(r),
            cursor: r.cursor.clone(),
            limit: r.limit,
        }
        .encode_to_vec(),
        LookupSubjects => pb::LookupSubjectsRequest {
            context: None,
            consistency: pb_consistency(&r.tok),
            resource: pb_obj(&r.rtype, &r.rid),
            permission: r.rel.clone(),
            subject_type: r.stype.clone(),
            subject_relation: r.srel.clone(),
            cursor: r.cursor.clone(),
            limit: r.limit,
        }
        .encode_to_vec(),
        Write => pb::WriteRelationshipsRequest {
            updates: vec![pb::RelationshipUpdate {
                operation: pb::relationship_update::Operation::Touch as i32,
                relationship: Some(pb_relationship(r)),
            }],
            preconditions: vec![],
        }
        .encode_to_vec(),
        Delete => pb::DeleteRelationshipsRequest { filter: pb_filter(r), preconditions: vec![], limit: r.limit }
            .encode_to_vec(),
        Read => pb::ReadRelationshipsRequest {
            consistency: pb_consistency(&r.tok),
            filter: pb_filter(r),
            cursor: r.cursor.clone(),
            limit: r.limit,
        }
        .encode_to_vec(),
        Import => pb::ImportRelationshipsRequest { relationships: vec![pb_relationship(r)] }.encode_to_vec(),
        Export => pb::ExportRelationshipsRequest { consistency: pb_consistency(&r.tok) }.encode_to_vec(),
        Watch => pb::WatchRequest { after_revision: tok(&r.tok) }.encode_to_vec(),
        WriteAttributes => match &r.context {
            Some(values) => pb::WriteAttributesRequest {
                set: vec![pb::ObjectAttributes {
                    object: pb_obj(&r.rtype, &r.rid),
                    values: Some(values.clone()),
                    labels: vec![],
                }],
                delete: vec![],
            },
            None => pb::WriteAttributesRequest { set: vec![], delete: vec![pb_obj(&r.rtype, &r.rid).unwrap()] },
        }
        .encode_to_vec(),
        ReadAttributes => pb::ReadAttributesRequest {
            consistency: pb_consistency(&r.tok),
            objects: vec![pb_obj(&r.rtype, &r.rid).unwrap()],
        }
        .encode_to_vec(),
        ReadSchema => pb::ReadSchemaRequest {}.encode_to_vec(),
        WriteSchema => pb::WriteSchemaRequest { schema: if r.text.is_empty() { SCHEMA.into() } else { r.text.clone() } }
            .encode_to_vec(),
        ReadPolicies => pb::ReadPoliciesRequest {}.encode_to_vec(),
        WritePolicies => pb::WritePoliciesRequest { policies: vec![pb::Policy { id: "hostile-policy".into(), text: policy_text(r) }] }
            .encode_to_vec(),
        ReadAttributeSchema => pb::ReadAttributeSchemaRequest {}.encode_to_vec(),
        WriteAttributeSchema => {
            pb::WriteAttributeSchemaRequest { definitions: attribute_definitions(&r.text), labels: vec![] }
                .encode_to_vec()
        }
        ZCheck => z::CheckPermissionRequest {
            consistency: z_consistency(&r.tok),
            resource: z_obj(&r.rtype, &r.rid),
            permission: r.rel.clone(),
            subject: z_subject(r),
            context: r.context.clone(),
            with_tracing: false,
        }
        .encode_to_vec(),
        ZCheckBulk => z::CheckBulkPermissionsRequest {
            consistency: z_consistency(&r.tok),
            items: vec![z::CheckBulkPermissionsRequestItem {
                resource: z_obj(&r.rtype, &r.rid),
                permission: r.rel.clone(),
                subject: z_subject(r),
                context: r.context.clone(),
            }],
            with_tracing: false,
        }
        .encode_to_vec(),
        ZExpand => z::ExpandPermissionTreeRequest {
            consistency: z_consistency(&r.tok),
            resource: z_obj(&r.rtype, &r.rid),
            permission: r.rel.clone(),
        }
        .encode_to_vec(),
        ZLookupResources => z::LookupResourcesRequest {
                        consistency: z_consistency(&r.tok),
            resource_object_type: r.rtype.clone(),
            permission: r.rel.clone(),
            subject: z_subject(r),
            context: r.context.clone(),
            optional_limit: r.limit,
            optional_cursor: z_cursor(r),
        }
        .encode_to_vec(),
        ZLookupSubjects => z::LookupSubjectsRequest {
                        consistency: z_consistency(&r.tok),
            resource: z_obj(&r.rtype, &r.rid),
            permission: r.rel.clone(),
            subject_object_type: r.stype.clone(),
            optional_subject_relation: r.srel.clone(),
            context: r.context.clone(),
            optional_concrete_limit: r.limit,
            optional_cursor: z_cursor(r),
            wildcard_option: 0,
        }
        .encode_to_vec(),
        ZRead => z::ReadRelationshipsRequest {
            consistency: z_consistency(&r.tok),
            relationship_filter: z_filter(r),
            optional_limit: r.limit,
            optional_cursor: z_cursor(r),
        }
        .encode_to_vec(),
        ZWrite => z::WriteRelationshipsRequest {
            updates: vec![z::RelationshipUpdate {
                operation: z::relationship_update::Operation::Touch as i32,
                relationship: z_relationship(r),
            }],
            optional_preconditions: vec![],
            optional_transaction_metadata: None,
        }
        .encode_to_vec(),
        ZDelete => z::DeleteRelationshipsRequest {
            relationship_filter: z_filter(r),
            optional_preconditions: vec![],
            optional_limit: r.limit,
            optional_allow_partial_deletions: false,
            optional_transaction_metadata: None,
        }
        .encode_to_vec(),
        ZImport => z::ImportBulkRelationshipsRequest { relationships: vec![z_relationship(r).unwrap()] }.encode_to_vec(),
        ZExport => z::ExportBulkRelationshipsRequest {
            consistency: z_consistency(&r.tok),
            optional_limit: r.limit,
            optional_cursor: z_cursor(r),
            optional_relationship_filter: None,
        }
        .encode_to_vec(),
        ZReadSchema => z::ReadSchemaRequest {}.encode_to_vec(),
        ZWriteSchema => z::WriteSchemaRequest { schema: if r.text.is_empty() { SCHEMA.into() } else { r.text.clone() } }
            .encode_to_vec(),
        ZReflect => z::ReflectSchemaRequest { consistency: z_consistency(&r.tok), optional_filters: vec![] }.encode_to_vec(),
        ZWatch => z::WatchRequest {
            optional_object_types: vec![],
            optional_start_cursor: z_token(&r.tok),
            optional_relationship_filters: vec![],
            optional_update_kinds: vec![],
        }
        .encode_to_vec(),
    };
    vec![one]
}

/// A codec that sends and receives messages as they are on the wire, so that a test can
/// send bytes no generated type can hold (invalid UTF-8, garbage, unknown fields).
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Sends `msgs` to `path` (as a stream: unary methods get one message) and collects the
/// answers, or the status the call ended with.
async fn call(channel: Channel, path: &'static str, msgs: Vec<Vec<u8>>, key: Option<&str>) -> Result<Vec<Vec<u8>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    grpc.ready().await.map_err(|e| Status::unknown(format!("the channel is not ready: {e}")))?;
    let mut request = tonic::Request::new(tokio_stream::iter(msgs));
    if let Some(k) = key {
        request.metadata_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let mut stream = grpc.streaming(request, path, Raw).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// What a case must get.
#[derive(Debug, Clone)]
enum Want {
    /// The call fails with this code; the message contains each word (`a|b`: either).
    Err(Code, Vec<String>),
    /// The call (a read) succeeds with at least this many answers.
    Ok(usize),
    /// The call may write (the revision may move) and succeeds.
    OkWrites,
    /// The call succeeds and its one item is refused with this code and words.
    Item(Code, Vec<String>),
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

fn err(code: Code, w: &[&str]) -> Want {
    Want::Err(code, words(w))
}

/// `err`, or its per-item form for the bulk checks (whose malformed items fail alone).
fn err_for(m: M, code: Code, w: &[&str]) -> Want {
    if m.per_item() {
        Want::Item(code, words(w))
    } else {
        err(code, w)
    }
}

fn short(s: &str) -> String {
    let s = s.escape_debug().to_string();
    if s.len() <= 300 {
        return s;
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Whether the message has every word group (`a|b`: either), compared without case.
fn missing_words(message: &str, words: &[String]) -> Vec<String> {
    let lower = message.to_lowercase();
    words
        .iter()
        .filter(|w| !w.split('|').any(|alt| lower.contains(&alt.to_lowercase())))
        .cloned()
        .collect()
}

fn status_matches(want: Code, words: &[String], code: Code, message: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    if code != want {
        problems.push(format!("want {want:?}"));
    }
    if message.trim().is_empty() {
        problems.push("the message is empty".to_string());
    }
    for w in missing_words(message, words) {
        problems.push(format!("the message lacks `{w}`"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; got {code:?}: {}", problems.join(", "), short(message)))
    }
}

/// `CheckBulkPermissionsResponse` without the requests each pair echoes (whose contexts
/// may nest deeper than a decoder takes).
#[derive(Clone, PartialEq, prost::Message)]
struct ZBulkAnswers {
    #[prost(message, repeated, tag = "2")]
    pairs: Vec<ZBulkAnswer>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ZBulkAnswer {
    #[prost(message, optional, tag = "3")]
    error: Option<arbiter_proto::google::rpc::Status>,
}

/// The code and message of the first item of a bulk check's answer, if it is an error.
fn first_item_error(m: M, answers: &[Vec<u8>]) -> Result<(Code, String), String> {
    let bytes = answers.first().ok_or("no answer message")?;
    match m {
        CheckBulk => {
            let r = pb::CheckBulkResponse::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            match r.results.first().and_then(|r| r.result.as_ref()) {
                Some(pb::check_bulk_result::Result::Error(e)) => {
                    let code = [Code::InvalidArgument, Code::FailedPrecondition, Code::Unavailable, Code::Internal]
                        .into_iter()
                        .find(|c| format!("{c:?}").to_uppercase() == e.code.replace('_', ""))
                        .unwrap_or(Code::Unknown);
                    Ok((code, format!("[{}] {}", e.code, e.message)))
                }
                other => Err(format!("the item was answered, not refused: {other:?}")),
            }
        }
        ZCheckBulk => {
            let r = ZBulkAnswers::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            match r.pairs.first().and_then(|p| p.error.as_ref()) {
                Some(e) => Ok((Code::from_i32(e.code), e.message.clone())),
                None => Err("the item was answered, not refused".into()),
            }
        }
        _ => Err(format!("{m:?} has no items")),
    }
}

fn judge(m: M, want: &Want, got: &Result<Vec<Vec<u8>>, Status>) -> Result<(), String> {
    match (want, got) {
        (Want::Err(code, w), Err(s)) => status_matches(*code, w, s.code(), s.message()),
        (Want::Err(code, _), Ok(r)) => Err(format!("want {code:?}, got OK with {} answer(s)", r.len())),
        (Want::Ok(min), Ok(r)) if r.len() < *min => Err(format!("want at least {min} answer(s), got {}", r.len())),
        (Want::Ok(_) | Want::OkWrites, Ok(_)) => Ok(()),
        (Want::Ok(_) | Want::OkWrites | Want::Item(..), Err(s)) => {
            Err(format!("want OK, got {:?}: {}", s.code(), short(s.message())))
        }
        (Want::Item(code, w), Ok(r)) => {
            let (c, message) = first_item_error(m, r)?;
            status_matches(*code, w, c, &message)
        }
    }
}

/// An HTTP case: the request and what must come back.
#[derive(Debug, Clone)]
struct HttpCase {
    name: String,
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    /// Words the body must contain (`a|b`: either).
    words: Vec<String>,
    /// A header the answer must carry, with a word its value must contain.
    header: Option<(&'static str, &'static str)>,
}

fn json_headers(key: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(k) = key {
        h.push(("authorization".into(), format!("Bearer {k}")));
    }
    h
}

/// A POST of `body` as JSON with the key.
fn post(name: impl Into<String>, path: &'static str, body: impl Into<Vec<u8>>, status: u16, w: &[&str]) -> HttpCase {
    HttpCase {
        name: name.into(),
        method: "POST",
        path,
        headers: json_headers(Some(KEY)),
        body: Some(body.into()),
        status,
        words: words(w),
        header: None,
    }
}

/// Runs cases against one server and collects what fails.
struct Run<'a> {
    server: &'a mut Server,
    channel: Channel,
    /// The revision every case must leave unchanged.
    revision: String,
    passed: Vec<String>,
    failures: Vec<String>,
    /// How much of the server's stderr has been looked at for panics.
    stderr_seen: usize,
}

impl<'a> Run<'a> {
    async fn new(server: &'a mut Server) -> Run<'a> {
        let channel = server.channel().await;
        let mut run = Run { server, channel, revision: String::new(), passed: Vec::new(), failures: Vec::new(), stderr_seen: 0 };
        run.revision = run.revision().await.expect("ReadSchema answers before any case");
        run
    }

    /// The server's revision, from ReadSchema.
    async fn revision(&self) -> Result<String, String> {
        let answers = call(self.channel.clone(), ReadSchema.path(), encode(ReadSchema, &Req::default()), Some(KEY))
            .await
            .map_err(|s| format!("ReadSchema failed: {s:?}"))?;
        let bytes = answers.first().ok_or("ReadSchema gave no answer")?;
        let r = pb::ReadSchemaResponse::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
        Ok(r.revision)
    }

    fn fail(&mut self, name: &str, problem: String) {
        eprintln!("FAIL {name}: {problem}");
        self.failures.push(format!("{name}: {problem}"));
    }

    /// One gRPC case, then the checks every case ends with.
    async fn grpc(&mut self, name: &str, m: M, msgs: Vec<Vec<u8>>, key: Option<&str>, want: Want) {
        let name = format!("{m:?} {name}");
        let got = tokio::time::timeout(CASE_TIMEOUT, call(self.channel.clone(), m.path(), msgs, key)).await;
        let verdict = match &got {
            Err(_) => Err(format!("no answer within {CASE_TIMEOUT:?} (a hang)")),
            Ok(got) => judge(m, &want, got),
        };
        match verdict {
            Ok(()) => self.passed.push(name.clone()),
            Err(problem) => self.fail(&name, problem),
        }
        self.settle(&name, matches!(want, Want::OkWrites)).await;
    }

    /// A gRPC case built from `r` for method `m`, with the key.
    async fn case(&mut self, name: &str, m: M, r: &Req, want: Want) {
        self.grpc(name, m, encode(m, r), Some(KEY), want).await;
    }

    /// One HTTP case, then the checks every case ends with.
    async fn http(&mut self, c: HttpCase) {
        let name = format!("{} {} {}", c.method, c.path, c.name);
        let addr = self.server.http.clone();
        let sent = c.clone();
        let got = tokio::time::timeout(
            CASE_TIMEOUT,
            tokio::task::spawn_blocking(move || common::http_request(&addr, sent.method, sent.path, &sent.headers, sent.body.as_deref())),
        )
        .await;
        let verdict = match got {
            Err(_) => Err(format!("no answer within {CASE_TIMEOUT:?} (a hang)")),
            Ok(Err(e)) => Err(format!("the client failed: {e}")),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(reply))) => {
                let mut problems = Vec::new();
                if reply.status != c.status {
                    problems.push(format!("want {}", c.status));
                }
                if !c.words.is_empty() && reply.body.trim().is_empty() {
                    problems.push("the body is empty".to_string());
                }
                for w in missing_words(&reply.body, &c.words) {
                    problems.push(format!("the body lacks `{w}`"));
                }
                if let Some((h, v)) = c.header {
                    if !reply.header(h).is_some_and(|got| got.contains(v)) {
                        problems.push(format!("want a `{h}` header with `{v}`, got {:?}", reply.header(h)));
                    }
                }
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{}; got {}: {}", problems.join(", "), reply.status, short(&reply.body)))
                }
            }
        };
        match verdict {
            Ok(()) => self.passed.push(name.clone()),
            Err(problem) => self.fail(&name, problem),
        }
        self.settle(&name, false).await;
    }

    /// After a case: the process is alive and did not panic, the revision is where it
    /// was (unless the case may write), and a Check is still answered correctly.
    async fn settle(&mut self, name: &str, writes: bool) {
        if let Ok(Some(status)) = self.server.child.try_wait() {
            let err = self.server.stderr();
            panic!("the server died after `{name}` ({status}); stderr:\n{err}\nearlier failures: {:#?}", self.failures);
        }
        let stderr = self.server.stderr();
        if stderr.len() > self.stderr_seen {
            let new = stderr.get(self.stderr_seen..).unwrap_or("").to_string();
            self.stderr_seen = stderr.len();
            if new.contains("panicked") {
                self.fail(name, format!("the server panicked: {}", short(&new)));
            }
        }
        match self.revision().await {
            Ok(now) if now != self.revision => {
                if !writes {
                    self.fail(name, format!("the revision moved from {} to {now}: something was written", self.revision));
                }
                self.revision = now;
            }
            Ok(_) => {}
            Err(e) => self.fail(name, format!("afterwards: {e}")),
        }
        let check = call(self.channel.clone(), Check.path(), encode(Check, &Req::default()), Some(KEY)).await;
        let allowed = check
            .as_ref()
            .ok()
            .and_then(|a| a.first())
            .and_then(|b| pb::CheckResponse::decode(b.as_slice()).ok())
            .is_some_and(|r| r.decision == pb::Decision::Allowed as i32);
        if !allowed {
            self.fail(name, format!("afterwards a Check of doc:a#viewer@user:bob was not allowed: {check:?}"));
        }
    }

    /// Panics with every failure, if any.
    fn finish(self, what: &str) {
        eprintln!("{what}: {} case(s) passed, {} failed", self.passed.len(), self.failures.len());
        if !self.failures.is_empty() {
            panic!("{what}: {} of {} case(s) failed:\n{}", self.failures.len(), self.failures.len() + self.passed.len(), self.failures.join("\n"));
        }
    }
}

/// The setup every server gets: the schema, attribute declarations, policies that read
/// them, and a few relationships (doc:a#viewer@user:bob among them).
async fn setup(server: &Server) {
    let mut c = server.clients().await;
    c.schema.write_schema(pb::WriteSchemaRequest { schema: SCHEMA.into() }).await.unwrap();
    c.schema
        .write_attribute_schema(pb::WriteAttributeSchemaRequest { definitions: attribute_definitions(""), labels: vec![] })
        .await
        .unwrap();
    let policies = POLICIES.iter().map(|(id, text)| pb::Policy { id: (*id).into(), text: (*text).into() }).collect();
    c.schema.write_policies(pb::WritePoliciesRequest { policies }).await.unwrap();
    let updates = ["doc:a#viewer@user:bob", "doc:b#viewer@user:bob", "doc:c#owner@user:bob", "doc:a#viewer@user:carl", "doc:d#viewer@user:x1", "doc:d#viewer@user:x2"]
        .into_iter()
        .map(common::touch)
        .collect();
    c.relationships.write_relationships(pb::WriteRelationshipsRequest { updates, preconditions: vec![] }).await.unwrap();
}

/// A `google.protobuf.Struct` `{key: {"a": {"a": ... 1}}}` with `levels` objects under
/// `key`.
fn nested_struct(key: &str, levels: usize) -> prost_types::Struct {
    use prost_types::value::Kind;
    let mut v = prost_types::Value { kind: Some(Kind::NumberValue(1.0)) };
    for _ in 0..levels {
        let s = prost_types::Struct { fields: [("a".to_string(), v)].into_iter().collect() };
        v = prost_types::Value { kind: Some(Kind::StructValue(s)) };
    }
    prost_types::Struct { fields: [(key.to_string(), v)].into_iter().collect() }
}

/// `{"a": {"a": ... 1}}` as JSON text, `levels` objects deep.
fn nested_json(levels: usize) -> String {
    format!("{}1{}", "{\"a\": ".repeat(levels), "}".repeat(levels))
}

/// `encode` with an unknown length-delimited field of `pad` bytes appended to the first
/// message: the same request, oversized (decoders skip unknown fields; the size limit
/// applies before decoding).
fn padded(m: M, pad: usize) -> Vec<Vec<u8>> {
    let mut msgs = encode(m, &Req::default());
    let first = &mut msgs[0];
    prost::encoding::encode_key(1000, prost::encoding::WireType::LengthDelimited, first);
    prost::encoding::encode_varint(pad as u64, first);
    first.resize(first.len() + pad, b'x');
    msgs
}

const MARK: &[u8] = b"UTF8MARK";

/// `m`'s request with `MARK` in one of its strings, then those bytes made invalid UTF-8;
/// `None` for a method whose request has no string.
fn invalid_utf8(m: M) -> Option<Vec<Vec<u8>>> {
    let mark = String::from_utf8(MARK.to_vec()).unwrap();
    let r = if m.has(RID) {
        req(|r| r.rid = mark)
    } else if matches!(m, LookupResources | ZLookupResources) {
        req(|r| r.sid = mark)
    } else if m.has(TOK) {
        req(|r| r.tok = Tok::Exact(format!("r{mark}")))
    } else if matches!(m, WriteSchema | ZWriteSchema) {
        req(|r| r.text = format!("// {mark}\n{SCHEMA}"))
    } else if m == WritePolicies {
        req(|r| r.text = format!("// {mark}\n{}", POLICIES[0].1))
    } else if m == WriteAttributeSchema {
        req(|r| r.text = mark)
    } else {
        return None;
    };
    let mut msgs = encode(m, &r);
    let first = &mut msgs[0];
    let at = first.windows(MARK.len()).position(|w| w == MARK).expect("the mark is in the request");
    first[at..at + MARK.len()].fill(0xFF);
    Some(msgs)
}

/// Requests that are not what they claim to be, on every method: no key, a wrong key,
/// more bytes than `--max-message-size`, bytes that are not protobuf, a truncated
/// message, and strings that are not UTF-8.
async fn keys_and_bytes(run: &mut Run<'_>) {
    let decode = ["decode|malformed|protobuf|invalid"];
    for m in ALL {
        let valid = encode(m, &Req::default());
        run.grpc("without a key", m, valid.clone(), None, err(Code::Unauthenticated, &["missing"])).await;
        run.grpc("with a wrong key", m, valid.clone(), Some("k2"), err(Code::Unauthenticated, &["invalid"])).await;
        run.grpc("with the key's prefix", m, valid.clone(), Some(""), err(Code::Unauthenticated, &["invalid|bearer"])).await;
        let oversized = err(Code::InvalidArgument, &["--max-message-size"]);
        run.grpc("100 KiB over a 64 KiB limit", m, padded(m, 100 << 10), Some(KEY), oversized.clone()).await;
        run.grpc("4 MiB over a 64 KiB limit", m, padded(m, 4 << 20), Some(KEY), oversized).await;
        run.grpc("of 0xFF bytes", m, vec![vec![0xFF; 16]], Some(KEY), err(Code::InvalidArgument, &decode)).await;
        // A field that claims more bytes than follow.
        let mut cut = valid[0].clone();
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut cut);
        prost::encoding::encode_varint(1 << 20, &mut cut);
        cut.extend_from_slice(b"short");
        run.grpc("truncated", m, vec![cut], Some(KEY), err(Code::InvalidArgument, &decode)).await;
        if let Some(msgs) = invalid_utf8(m) {
            run.grpc("with a string that is not UTF-8", m, msgs, Some(KEY), err(Code::InvalidArgument, &["utf"])).await;
        }
    }
}

/// Object ids that break the id rules, in every place an id goes. The message names the
/// id: by its value, or (for one too long to quote) by which id of the request it is.
async fn bad_ids(run: &mut Run<'_>) {
    let long_rid = format!("L0ngid{}", "a".repeat(1019));
    let long_sid = format!("L0ngsid{}", "b".repeat(1018));
    assert_eq!((long_rid.len(), long_sid.len()), (1025, 1025));
    // At the limit is fine (a read of an object that does not exist).
    let at_limit = "c".repeat(1024);
    run.case("with a 1,024-byte resource id", Check, &req(|r| r.rid = at_limit.clone()), Want::Ok(1)).await;
    for m in ALL {
        if m.has(RID) {
            let long = err_for(m, Code::InvalidArgument, &["resource|L0ngid", "1024|1,024"]);
            run.case("with a 1,025-byte resource id", m, &req(|r| r.rid = long_rid.clone()), long).await;
        }
        if m.has(SID) {
            let long = err_for(m, Code::InvalidArgument, &["subject|L0ngsid", "1024|1,024"]);
            run.case("with a 1,025-byte subject id", m, &req(|r| r.sid = long_sid.clone()), long).await;
        }
        for (what, id) in [("U+0001", "ctl\u{1}x"), ("a newline", "ctl\nx"), ("NUL", "ctl\u{0}x"), ("DEL", "ctl\u{7f}x"), ("a space and é", "ctl é")] {
            if m.has(RID) {
                let name = format!("with {what} in the resource id");
                run.case(&name, m, &req(|r| r.rid = id.into()), err_for(m, Code::InvalidArgument, &["ctl"])).await;
            }
            if m.has(SID) {
                let name = format!("with {what} in the subject id");
                run.case(&name, m, &req(|r| r.sid = id.into()), err_for(m, Code::InvalidArgument, &["ctl"])).await;
            }
        }
    }
}

/// Revision tokens that are garbage, out of range, SpiceDB's own, or from the future.
async fn bad_tokens(run: &mut Run<'_>) {
    let garbage = ["zzz", "r", "r-1", "r18446744073709551616", "R1", "r 1", "GhUKEzE3MjA5NTk3NzgwMDAwMDAwMDA="];
    for m in ALL.into_iter().filter(|m| m.has(TOK)) {
        let watch = matches!(m, Watch | ZWatch);
        for t in garbage {
            let want = err(Code::InvalidArgument, &["token"]);
            run.case(&format!("at least as fresh as `{t}`"), m, &req(|r| r.tok = Tok::AtLeast(t.into())), want).await;
            if !watch {
                let want = err(Code::InvalidArgument, &["token"]);
                run.case(&format!("at exact snapshot `{t}`"), m, &req(|r| r.tok = Tok::Exact(t.into())), want).await;
            }
        }
        // From the future: a read cannot reach it within --consistency-timeout (1s) and
        // is UNAVAILABLE; a watch cannot start after it (FAILED_PRECONDITION).
        for t in ["r999999999", "r18446744073709551615"] {
            let code = if watch { Code::FailedPrecondition } else { Code::Unavailable };
            let digits = t.trim_start_matches('r');
            let modes = if watch { vec![Tok::AtLeast(t.into())] } else { vec![Tok::AtLeast(t.into()), Tok::Exact(t.into())] };
            for tok in modes {
                let name = format!("at the future token {tok:?}");
                let start = Instant::now();
                run.case(&name, m, &req(|r| r.tok = tok.clone()), err(code, &[digits])).await;
                if start.elapsed() > Duration::from_secs(11) {
                    run.fail(&format!("{m:?} {name}"), format!("took {:?}, past --consistency-timeout 1s", start.elapsed()));
                }
            }
        }
    }
}

/// Types, relations and permissions the schema does not define.
async fn unknown_names(run: &mut Run<'_>) {
    for m in ALL {
        if m.has(REL) || matches!(m, WriteAttributes | ReadAttributes) {
            let want = err_for(m, Code::FailedPrecondition, &["nosuchtype"]);
            run.case("of an undefined resource type", m, &req(|r| r.rtype = "nosuchtype".into()), want).await;
        }
        if m.has(REL) {
            let want = err_for(m, Code::FailedPrecondition, &["nosuchrel"]);
            run.case("of an undefined relation", m, &req(|r| r.rel = "nosuchrel".into()), want).await;
        }
        if m.has(SID) || matches!(m, LookupSubjects | ZLookupSubjects) {
            let want = err_for(m, Code::FailedPrecondition, &["nosuchtype"]);
            run.case("of an undefined subject type", m, &req(|r| r.stype = "nosuchtype".into()), want).await;
        }
    }
    for m in [Check, ZCheck, CheckBulk, ZCheckBulk, Write, ZWrite] {
        let want = err_for(m, Code::FailedPrecondition, &["nosuchrel"]);
        run.case("of an undefined subject relation", m, &req(|r| r.srel = "nosuchrel".into()), want).await;
    }
    // A relationship to a permission: FAILED_PRECONDITION natively, INVALID_ARGUMENT as
    // SpiceDB has it.
    run.case("to a permission", Write, &req(|r| r.rel = "view".into()), err(Code::FailedPrecondition, &["view", "permission"])).await;
    run.case("to a permission", ZWrite, &req(|r| r.rel = "view".into()), err(Code::InvalidArgument, &["view", "permission"])).await;
    run.case("to a permission", ZImport, &req(|r| r.rel = "view".into()), err(Code::InvalidArgument, &["view", "permission"])).await;
}

/// Cursors no page ended with: malformed, or longer than any id, are refused by name;
/// one past every result is an empty page.
async fn cursors(run: &mut Run<'_>) {
    const PAGED: [M; 7] = [LookupResources, LookupSubjects, Read, ZLookupResources, ZLookupSubjects, ZRead, ZExport];
    for m in PAGED {
        let bad = err(Code::InvalidArgument, &["cursor"]);
        run.case("with a malformed cursor", m, &req(|r| r.cursor = "no such cursor!".into()), bad.clone()).await;
        run.case("with a cursor of 60,000 bytes", m, &req(|r| r.cursor = "a".repeat(60_000)), bad.clone()).await;
        run.case("with a cursor of one `:`", m, &req(|r| r.cursor = ":".into()), bad).await;
    }
    for m in [LookupResources, LookupSubjects, ZLookupResources, ZLookupSubjects] {
        run.case("with a cursor past every id", m, &req(|r| r.cursor = "zzzz".into()), Want::Ok(0)).await;
    }
    for m in [Read, ZRead] {
        let past = "zzzz:zzzz#zzzz@zzzz:zzzz#...";
        run.case("with a cursor past every relationship", m, &req(|r| r.cursor = past.into()), Want::Ok(0)).await;
    }
}

/// Limits and page sizes of 0 (no limit: streamed) and 1 answered; u32::MAX, above
/// `--max-page-size`, refused by name (an export's batch size is not a page); never a
/// crash or hang; and the request-count flags, each exceeded by one.
async fn limits(run: &mut Run<'_>) {
    for m in [LookupResources, LookupSubjects, Read, ZLookupResources, ZLookupSubjects, ZRead, ZExport] {
        for limit in [0, 1, u32::MAX] {
            let want = if limit == u32::MAX && m != ZExport { err(Code::InvalidArgument, &["max-page-size"]) } else { Want::Ok(1) };
            run.case(&format!("with limit {limit}"), m, &req(|r| r.limit = limit), want).await;
        }
    }
    // Deletes: 0 and u32::MAX on a filter that matches nothing succeed; a limit below
    // the matches refuses the whole delete.
    for m in [Delete, ZDelete] {
        for limit in [0, u32::MAX] {
            run.case(&format!("with limit {limit}, matching nothing"), m, &req(|r| { r.rid = "nomatch".into(); r.limit = limit; }), Want::OkWrites).await;
        }
        let want = err(Code::FailedPrecondition, &["limit"]);
        run.case("with limit 1 of 2 matches", m, &req(|r| { r.rid = "d".into(); r.sid = String::new(); r.limit = 1; }), want).await;
    }
    // One more than --max-bulk-checks / --max-updates-per-write / --max-import-batch (10).
    let r = Req::default();
    let n = 11;
    let pb_item = pb::CheckBulkItem { resource: pb_obj("doc", "a"), permission: "viewer".into(), subject: pb_subject(&r), context: None };
    let z_item = z::CheckBulkPermissionsRequestItem { resource: z_obj("doc", "a"), permission: "viewer".into(), subject: z_subject(&r), context: None };
    let pb_update = pb::RelationshipUpdate { operation: pb::relationship_update::Operation::Touch as i32, relationship: Some(pb_relationship(&r)) };
    let z_update = z::RelationshipUpdate { operation: z::relationship_update::Operation::Touch as i32, relationship: z_relationship(&r) };
    let many: [(M, Vec<u8>, &str); 7] = [
        (CheckBulk, pb::CheckBulkRequest { consistency: None, items: vec![pb_item; n] }.encode_to_vec(), "max-bulk-checks"),
        (ZCheckBulk, z::CheckBulkPermissionsRequest { consistency: None, items: vec![z_item; n], with_tracing: false }.encode_to_vec(), "max-bulk-checks"),
        (Write, pb::WriteRelationshipsRequest { updates: vec![pb_update; n], preconditions: vec![] }.encode_to_vec(), "max-updates-per-write"),
        (ZWrite, z::WriteRelationshipsRequest { updates: vec![z_update; n], optional_preconditions: vec![], optional_transaction_metadata: None }.encode_to_vec(), "max-updates-per-write"),
        (Import, pb::ImportRelationshipsRequest { relationships: vec![pb_relationship(&r); n] }.encode_to_vec(), "max-import-batch"),
        (ZImport, z::ImportBulkRelationshipsRequest { relationships: vec![z_relationship(&r).unwrap(); n] }.encode_to_vec(), "max-import-batch"),
        (WriteAttributes, pb::WriteAttributesRequest { set: vec![], delete: vec![pb_obj("doc", "a").unwrap(); n] }.encode_to_vec(), "max-updates-per-write"),
    ];
    for (m, bytes, flag) in many {
        run.grpc(&format!("with {n} items over --{flag} 10"), m, vec![bytes], Some(KEY), err(Code::InvalidArgument, &[flag])).await;
    }
}

const EVAL: &str = "/access/v1/evaluation";
const EVALS: &str = "/access/v1/evaluations";
const SEARCH_SUBJECT: &str = "/access/v1/search/subject";
const SEARCH_RESOURCE: &str = "/access/v1/search/resource";
const SEARCH_ACTION: &str = "/access/v1/search/action";
const POSTS: [&str; 5] = [EVAL, EVALS, SEARCH_SUBJECT, SEARCH_RESOURCE, SEARCH_ACTION];

/// A valid AuthZEN body for `route` (the searched side left out), with `rid` and `sid`.
fn authzen(route: &str, rid: &str, sid: &str) -> serde_json::Value {
    use serde_json::json;
    let subject = json!({"type": "user", "id": sid});
    let resource = json!({"type": "doc", "id": rid});
    let action = json!({"name": "viewer"});
    match route {
        SEARCH_SUBJECT => json!({"subject": {"type": "user"}, "action": action, "resource": resource}),
        SEARCH_RESOURCE => json!({"subject": subject, "action": action, "resource": {"type": "doc"}}),
        SEARCH_ACTION => json!({"subject": subject, "resource": resource}),
        _ => json!({"subject": subject, "action": action, "resource": resource}),
    }
}

fn with(route: &str, f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v = authzen(route, "a", "bob");
    f(&mut v);
    v.to_string().into_bytes()
}

/// Every HTTP route, attacked: keys, methods, sizes, malformed and mistyped bodies, bad
/// ids, unknown names, hostile page limits and tokens.
async fn http_routes(run: &mut Run<'_>) {
    let long_rid = format!("L0ngid{}", "a".repeat(1019));
    let long_sid = format!("L0ngsid{}", "b".repeat(1018));
    for route in POSTS {
        let valid = with(route, |_| {});
        let mut c = post("a valid request", route, valid.clone(), 200, &[]);
        run.http(c.clone()).await;
        c.status = 401;
        c.headers = json_headers(None);
        c.name = "without a key".into();
        c.words = words(&["missing"]);
        run.http(c.clone()).await;
        c.headers = json_headers(Some("k2"));
        c.name = "with a wrong key".into();
        c.words = words(&["invalid"]);
        run.http(c.clone()).await;
        run.http(HttpCase {
            name: "as a GET".into(),
            method: "GET",
            path: route,
            headers: json_headers(Some(KEY)),
            body: None,
            status: 405,
            words: vec![],
            header: Some(("allow", "POST")),
        })
        .await;
        let size = ["--max-message-size"];
        let pad = "x".repeat(100 << 10);
        run.http(post("of 100 KiB over a 64 KiB limit", route, with(route, |v| v["context"] = serde_json::json!({"pad": pad})), 400, &size)).await;
        let mut declared = post("declaring 1 GB and sending nothing", route, Vec::new(), 400, &size);
        declared.headers.push(("content-length".into(), "1000000000".into()));
        run.http(declared).await;
        let mut chunked = post("chunked past the limit", route, Vec::new(), 400, &size);
        chunked.headers.push(("transfer-encoding".into(), "chunked".into()));
        let chunk = format!("{:x}\r\n{}\r\n", 32 << 10, "x".repeat(32 << 10));
        chunked.body = Some(format!("{}0\r\n\r\n", chunk.repeat(4)).into_bytes());
        run.http(chunked).await;
        // A body that is not declared JSON is refused as such (415), whatever it holds.
        let mut text = post("of JSON sent as text/plain", route, valid.clone(), 415, &["content-type", "text/plain"]);
        text.headers[0].1 = "text/plain".into();
        run.http(text).await;
        let mut form = post("of a form", route, b"subject=user:bob&action=viewer".to_vec(), 415, &["content-type", "form"]);
        form.headers[0].1 = "application/x-www-form-urlencoded".into();
        run.http(form).await;
        let mut untyped = post("of JSON without a content type", route, valid.clone(), 415, &["content-type", "none"]);
        untyped.headers.remove(0);
        run.http(untyped).await;
        run.http(post("that is empty", route, Vec::new(), 400, &["empty"])).await;
        run.http(post("cut short", route, b"{\"subject\": ".to_vec(), 400, &["JSON"])).await;
        run.http(post("that is an array", route, b"[]".to_vec(), 400, &["JSON object"])).await;
        run.http(post("that is a 100,000-deep array", route, format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)), 400, &["recursion|nest|deep"])).await;
        let mut not_utf8 = valid.clone();
        let at = not_utf8.windows(3).position(|w| w == b"bob" || w == b"\"a\"").unwrap();
        not_utf8[at + 1] = 0xFF;
        run.http(post("with bytes that are not UTF-8", route, not_utf8, 400, &["UTF|unicode|JSON"])).await;
        let has_resource_id = route != SEARCH_RESOURCE;
        let has_subject_id = route != SEARCH_SUBJECT;
        if has_resource_id {
            run.http(post("with a 1,025-byte resource id", route, with(route, |v| v["resource"]["id"] = long_rid.clone().into()), 400, &["resource", "1024"])).await;
            run.http(post("with U+0001 in the resource id", route, with(route, |v| v["resource"]["id"] = "ctl\u{1}x".into()), 400, &["ctl"])).await;
        }
        if has_subject_id {
            run.http(post("with a 1,025-byte subject id", route, with(route, |v| v["subject"]["id"] = long_sid.clone().into()), 400, &["subject", "1024"])).await;
            run.http(post("with a newline in the subject id", route, with(route, |v| v["subject"]["id"] = "ctl\nx".into()), 400, &["ctl"])).await;
        }
        run.http(post("of an undefined resource type", route, with(route, |v| v["resource"]["type"] = "nosuchtype".into()), 400, &["nosuchtype"])).await;
        if route != SEARCH_ACTION {
            run.http(post("of an undefined action", route, with(route, |v| v["action"]["name"] = "nosuchrel".into()), 400, &["nosuchrel"])).await;
        }
        if route.contains("search") {
            for limit in ["0", "1", "4294967295", "18446744073709551615"] {
                let body = format!("{{\"page\": {{\"limit\": {limit}}}, {}", &String::from_utf8(valid.clone()).unwrap()[1..]);
                run.http(post(format!("with page.limit {limit}"), route, body, 200, &["results"])).await;
            }
            for limit in ["-1", "\"ten\"", "1.5", "1e400"] {
                let body = format!("{{\"page\": {{\"limit\": {limit}}}, {}", &String::from_utf8(valid.clone()).unwrap()[1..]);
                run.http(post(format!("with page.limit {limit}"), route, body, 400, &["limit|JSON"])).await;
            }
            for token in ["zzz", "s1.0.999999999.00", "r1.0.1.ff"] {
                run.http(post(format!("with page.token {token}"), route, with(route, |v| v["page"] = serde_json::json!({"token": token})), 400, &["token"])).await;
            }
        }
    }
    // A batch: one item too many, and an item with a bad id (answered in the item).
    let items: Vec<_> = (0..11).map(|_| authzen(EVAL, "a", "bob")).collect();
    run.http(post("with 11 items over --max-bulk-checks 10", EVALS, serde_json::json!({"evaluations": items}).to_string(), 400, &["max-bulk-checks"])).await;
    let items = serde_json::json!({"evaluations": [authzen(EVAL, "a", "bob"), authzen(EVAL, &long_rid, "bob")]});
    run.http(post("with an item with a 1,025-byte id", EVALS, items.to_string(), 200, &["resource", "1024", "\"decision\":true"])).await;

    // The GET routes and the open probes.
    for (path, open, word) in [
        ("/.well-known/authzen-configuration", false, "access_evaluation_endpoint"),
        ("/metrics", false, "arbiter_"),
        ("/healthz", true, "ok"),
        ("/readyz", true, "ready"),
    ] {
        let get = |name: &str, key: Option<&str>, status: u16, w: &[&str]| HttpCase {
            name: name.into(),
            method: "GET",
            path,
            headers: key.map(|k| vec![("authorization".to_string(), format!("Bearer {k}"))]).unwrap_or_default(),
            body: None,
            status,
            words: words(w),
            header: None,
        };
        run.http(get("with the key", Some(KEY), 200, &[word])).await;
        run.http(get("without a key", None, if open { 200 } else { 401 }, &[if open { word } else { "missing" }])).await;
        run.http(get("with a wrong key", Some("k2"), if open { 200 } else { 401 }, &[if open { word } else { "invalid" }])).await;
        let mut p = get("as a POST", Some(KEY), 405, &[]);
        p.method = "POST";
        p.body = Some(b"{}".to_vec());
        p.header = Some(("allow", "GET"));
        run.http(p).await;
    }
    for path in ["/nope", "/access/v1/../../metrics", "/access/v2/evaluation"] {
        let mut c = post("to a route that does not exist", "/", b"{}".to_vec(), 404, &["not found"]);
        c.path = path;
        run.http(c).await;
    }
}

/// A Cedar shape that nests one level per repetition: its name, the repetitions asked
/// for, and its text for `n` repetitions.
type Shape = (&'static str, usize, fn(usize) -> String);

fn cedar_shapes() -> [Shape; 5] {
    [
        ("nested parentheses", 50_000, |n| format!("{}true{}", "(".repeat(n), ")".repeat(n))),
        ("nested set literals", 50_000, |n| format!("{}1{}.contains(1)", "[".repeat(n), "]".repeat(n))),
        ("an `&&` chain", 100_000, |n| format!("{}true", "true && ".repeat(n - 1))),
        ("nested if-then-else", 20_000, |n| format!("{}true{}", "if true then ".repeat(n), " else false".repeat(n))),
        ("an attribute chain", 100_000, |n| format!("principal{} == 1", ".a".repeat(n))),
    ]
}

fn forbid_when(condition: &str) -> String {
    format!("forbid(principal, action, resource) when {{ {condition} }};")
}

/// Deep and long Cedar policies, attribute types and schemas, and deeply nested
/// contexts, attribute values and AuthZEN bodies.
async fn deep_and_long(run: &mut Run<'_>) {
    let too_deep = ["nests too deep|more than the limit", "hostile-policy"];
    for (what, n, text) in cedar_shapes() {
        // Within 64 KiB, so that only the depth refuses them; then the sizes asked for and
        // ten times those.
        for count in [200, n, 10 * n] {
            let policy = forbid_when(&text(count));
            let want = if count == 200 { err(Code::InvalidArgument, &["nests too deep", "hostile-policy"]) } else { err(Code::InvalidArgument, &too_deep) };
            run.case(&format!("with {what}, {count} deep ({} bytes)", policy.len()), WritePolicies, &req(|r| r.text = policy.clone()), want).await;
        }
    }
    // Deep but within the bound: accepted, and evaluated by every later Check.
    let mut policies: Vec<pb::Policy> = POLICIES.iter().map(|(id, text)| pb::Policy { id: (*id).into(), text: (*text).into() }).collect();
    policies.push(pb::Policy { id: "deep-brackets".into(), text: forbid_when(&format!("{}false{}", "(".repeat(100), ")".repeat(100))) });
    policies.push(pb::Policy { id: "long-chain".into(), text: forbid_when(&format!("{}false", "true && ".repeat(100))) });
    run.grpc("with policies 100 deep", WritePolicies, vec![pb::WritePoliciesRequest { policies }.encode_to_vec()], Some(KEY), Want::OkWrites).await;

    for (what, open, close) in [("`set<`", "set<", ">"), ("`{a: `", "{a: ", "}")] {
        for count in [40, 100_000, 1_000_000] {
            let ty = format!("{}long{}", open.repeat(count), close.repeat(count));
            let want = if count == 40 { err(Code::InvalidArgument, &["nests deeper"]) } else { err(Code::InvalidArgument, &["nests deeper|more than the limit"]) };
            run.case(&format!("with a type of {count} {what}"), WriteAttributeSchema, &req(|r| r.text = ty.clone()), want).await;
        }
    }

    let schema = |permission: &str| format!("definition user {{}}\ndefinition doc {{\n relation viewer: user\n relation owner: user\n permission view = {permission}\n}}\n");
    let schemas = [
        ("100,000 nested parentheses", schema(&format!("{}viewer{}", "(".repeat(100_000), ")".repeat(100_000))), "nest"),
        ("a 100,000-term union", schema(&format!("{}viewer", "viewer + ".repeat(100_000))), "operators"),
        ("a 100-byte relation name", SCHEMA.replace("viewer", &"v".repeat(100)), "64"),
    ];
    for (what, text, word) in schemas {
        for m in [WriteSchema, ZWriteSchema] {
            run.case(&format!("with {what}"), m, &req(|r| r.text = text.clone()), err(Code::InvalidArgument, &[word])).await;
        }
    }

    // Contexts and attribute values: 32 objects under a declared key is one level past
    // the bound (and as deep as protobuf decoding goes); 90 and 150 cannot be decoded.
    let deep = ["nest|deep|recursion"];
    for m in [Check, CheckBulk, ZCheck, ZCheckBulk, ZLookupResources, ZLookupSubjects, WriteAttributes] {
        let key = if m == WriteAttributes { "level" } else { "hour" };
        let want = err_for(m, Code::InvalidArgument, &[key, "nest"]);
        run.case(&format!("with `{key}` 33 levels deep"), m, &req(|r| r.context = Some(nested_struct(key, 32))), want).await;
        for levels in [90, 150] {
            let name = format!("with a context {levels} levels deep");
            run.case(&name, m, &req(|r| r.context = Some(nested_struct(key, levels))), err(Code::InvalidArgument, &deep)).await;
        }
    }

    // AuthZEN: nested past what the JSON parser takes, and past the value bound.
    for route in POSTS {
        let deep_json = |levels: usize| serde_json::from_str::<serde_json::Value>(&nested_json(levels.min(100))).unwrap();
        let raw = |field: &str, levels: usize| {
            let body = String::from_utf8(with(route, |_| {})).unwrap();
            format!("{{{field}: {}, {}", nested_json(levels), &body[1..])
        };
        run.http(post("with `context` 10,000 deep", route, raw("\"context\"", 10_000), 400, &["recursion|nest|deep"])).await;
        run.http(post("with `context.hour` 40 deep", route, with(route, |v| v["context"] = serde_json::json!({"hour": deep_json(40)})), 400, &["hour", "nest"])).await;
        if route != SEARCH_SUBJECT {
            let body = String::from_utf8(with(route, |_| {})).unwrap();
            let props = body.replacen("\"type\":\"user\"", &format!("\"properties\": {{\"tag\": {}}}, \"type\":\"user\"", nested_json(10_000)), 1);
            assert_ne!(props, body);
            run.http(post("with subject `properties` 10,000 deep", route, props, 400, &["recursion|nest|deep"])).await;
            let tag = with(route, |v| v["subject"]["properties"] = serde_json::json!({"tag": deep_json(40)}));
            run.http(post("with subject `properties.tag` 40 deep", route, tag, 400, &["tag", "nest"])).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_on_a_small_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[
            "--preshared-key", KEY,
            "--max-message-size", "65536",
            "--consistency-timeout", "1s",
            "--max-bulk-checks", "10",
            "--max-updates-per-write", "10",
            "--max-import-batch", "10",
        ],
    );
    setup(&server).await;
    let mut run = Run::new(&mut server).await;
    keys_and_bytes(&mut run).await;
    bad_ids(&mut run).await;
    bad_tokens(&mut run).await;
    unknown_names(&mut run).await;
    limits(&mut run).await;
    cursors(&mut run).await;
    http_routes(&mut run).await;
    run.finish("the small server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_requests_on_a_large_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--preshared-key", KEY, "--max-message-size", "16777216"]);
    setup(&server).await;
    let mut run = Run::new(&mut server).await;
    deep_and_long(&mut run).await;
    run.finish("the large server");
}
