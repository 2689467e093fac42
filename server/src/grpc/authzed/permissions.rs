//! SpiceDB's PermissionsService: checks, expand, lookups, and the relationship reads,
//! writes, deletes, bulk import and export, over the same engine as `arbiter.v1`.

use std::sync::Arc;
use std::time::Instant;

use arbiter_engine::{
    CheckRequest, Consistency, Decision, Engine, LookupResourcesRequest, LookupSubjectsRequest,
    ReadRequest, RelationshipUpdate, UpdateOp, LOOKUP_CHUNK,
};
use arbiter_proto::authzed::api::v1 as pb;
use arbiter_schema::{Relationship, WILDCARD_ID};
use pb::permissions_service_server::PermissionsService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{fresh, status, WireFilter};
use crate::convert::{self, invalid};
use crate::grpc::{blocking, produce_stream, too_many, Shared, Streamed};
use crate::token;

#[derive(Debug, Clone)]
pub struct AuthzedPermissions(pub Arc<Shared>);

/// Relationships per ExportBulkRelationships message unless the client asks for fewer.
const EXPORT_CHUNK: usize = 1000;

fn permissionship(d: Decision) -> i32 {
    use pb::check_permission_response::Permissionship;
    match d {
        Decision::Allowed => Permissionship::HasPermission as i32,
        Decision::Denied => Permissionship::NoPermission as i32,
        Decision::Conditional => Permissionship::ConditionalPermission as i32,
    }
}

/// SpiceDB's note on a conditional answer: the caveat parameters still missing.
fn partial(missing: Vec<String>) -> Option<pb::PartialCaveatInfo> {
    (!missing.is_empty()).then_some(pb::PartialCaveatInfo { missing_required_context: missing })
}

/// A lookup result's permissionship: conditional when parameters are missing.
fn lookup_permissionship(missing: &[String]) -> i32 {
    if missing.is_empty() {
        pb::LookupPermissionship::HasPermission as i32
    } else {
        pb::LookupPermissionship::ConditionalPermission as i32
    }
}

fn limit(l: u32) -> Option<usize> {
    (l > 0).then_some(l as usize)
}

/// One page of the relationships a filter selects, in relationship order, after
/// `cursor` (a relationship key, see `arbiter_engine::store::relationship_key`), at one
/// revision; an id prefix is applied as the engine walks. Returns (page, whether more
/// follow, revision).
fn read_page(
    engine: &Engine,
    filter: &WireFilter,
    consistency: Consistency,
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<(Vec<Relationship>, bool, u64), Status> {
    let engine_filter = filter.engine();
    if filter.resource_id_prefix.is_some() && filter.resource_type.is_none() {
        return Err(invalid("`optional_resource_id_prefix` needs `resource_type`"));
    }
    let want = limit.map(|l| l.saturating_add(1));
    let req = ReadRequest {
        filter: &engine_filter,
        id_prefix: filter.resource_id_prefix.as_deref(),
        consistency,
        cursor,
        limit: want,
    };
    let mut found = Vec::new();
    let revision = engine
        .read_relationships_each(&req, want.unwrap_or(LOOKUP_CHUNK), &mut |_, mut page| {
            found.append(&mut page);
            true
        })
        .map_err(status)?;
    let more = limit.is_some_and(|l| found.len() > l);
    if let Some(l) = limit {
        found.truncate(l);
    }
    Ok((found, more, revision))
}

/// One LookupSubjects answer: the subject, and for a wildcard the ids it excludes, in
/// both the current fields and the deprecated flat ones older clients read (which list
/// every excluded id, conditionally excluded ones too, as SpiceDB's do).
#[expect(deprecated, reason = "older clients still read the flat fields")]
fn found_subject(s: arbiter_engine::FoundSubject, revision: u64) -> pb::LookupSubjectsResponse {
    let resolved = |id: &str, missing: &[String]| pb::ResolvedSubject {
        subject_object_id: id.to_string(),
        permissionship: lookup_permissionship(missing),
        partial_caveat_info: partial(missing.to_vec()),
    };
    pb::LookupSubjectsResponse {
        looked_up_at: super::zed_token(revision),
        subject_object_id: s.subject_id.clone(),
        excluded_subject_ids: s.excluded.iter().map(|e| e.id.clone()).collect(),
        permissionship: lookup_permissionship(&s.missing_context),
        partial_caveat_info: partial(s.missing_context.clone()),
        subject: Some(resolved(&s.subject_id, &s.missing_context)),
        excluded_subjects: s.excluded.iter().map(|e| resolved(&e.id, &e.missing_context)).collect(),
        after_result_cursor: super::to_cursor(s.subject_id),
    }
}

fn update(u: &pb::RelationshipUpdate, i: usize) -> Result<RelationshipUpdate, Status> {
    use pb::relationship_update::Operation;
    let op = match Operation::try_from(u.operation) {
        Ok(Operation::Create) => UpdateOp::Create,
        Ok(Operation::Touch) => UpdateOp::Touch,
        Ok(Operation::Delete) => UpdateOp::Delete,
        _ => {
            return Err(invalid(format!(
                "`updates[{i}].operation` must be OPERATION_CREATE, OPERATION_TOUCH or OPERATION_DELETE"
            )))
        }
    };
    Ok(RelationshipUpdate {
        op,
        relationship: super::relationship(
            u.relationship.as_ref(),
            &format!("updates[{i}].relationship"),
        )?,
    })
}

/// Where an export resumes: the revision it reads and how many stored relationships
/// (before filtering) it has passed. Opaque to clients.
fn export_cursor(revision: u64, offset: usize) -> String {
    format!("{}:{offset}", token::encode(revision))
}

fn parse_export_cursor(c: &str) -> Result<(u64, usize), Status> {
    let bad = || {
        invalid(format!(
            "invalid cursor `{}`: use one this server returned",
            arbiter_schema::shorten(c)
        ))
    };
    let (rev, offset) = c.split_once(':').ok_or_else(bad)?;
    let rev = token::decode(rev).map_err(|_| bad())?;
    let offset = offset.parse::<usize>().map_err(|_| bad())?;
    Ok((rev, offset))
}

impl AuthzedPermissions {
    /// Offers a sampled decision to the decision log (`--decision-log`), if there is one.
    #[expect(clippy::too_many_arguments, reason = "one decision record's fields")]
    fn record(
        &self,
        method: &'static str,
        resource: &Option<pb::ObjectReference>,
        permission: &str,
        subject: &Option<pb::SubjectReference>,
        allowed: bool,
        revision: u64,
        start: Instant,
        metadata: &tonic::metadata::MetadataMap,
    ) {
        let Some(log) = self.0.decisions.get() else {
            return;
        };
        if !log.sampled() {
            return;
        }
        let resource = resource
            .as_ref()
            .map(|o| format!("{}:{}", o.object_type, o.object_id))
            .unwrap_or_default();
        let subject = subject
            .as_ref()
            .map(|s| {
                let o = s.object.clone().unwrap_or_default();
                match s.optional_relation.as_str() {
                    "" | "..." => format!("{}:{}", o.object_type, o.object_id),
                    rel => format!("{}:{}#{rel}", o.object_type, o.object_id),
                }
            })
            .unwrap_or_default();
        log.offer(crate::decisions::DecisionRecord {
            decision_id: log.next_id(),
            evaluated_at: chrono::Utc::now(),
            resource,
            permission: permission.to_string(),
            subject,
            decision: if allowed { "allowed" } else { "denied" },
            policy_version: revision,
            latency_us: start.elapsed().as_micros() as u64,
            trace_id: crate::decisions::trace_id(metadata),
            method,
        });
    }

    fn check_inner(
        &self,
        r: &pb::CheckPermissionRequest,
        consistency: Consistency,
    ) -> Result<(Decision, u64, Vec<String>), Status> {
        let resource = super::object(r.resource.as_ref(), "resource")?;
        let permission = convert::required(&r.permission, "permission")?;
        let (subject_type, subject_id, subject_relation) =
            super::subject(r.subject.as_ref(), "subject")?;
        let context = convert::request_context(r.context.as_ref())?;
        let resp = self
            .0
            .engine
            .check(&CheckRequest {
                resource_type: &resource.object_type,
                resource_id: &resource.object_id,
                permission,
                subject_type,
                subject_id,
                subject_relation,
                consistency,
                context: context.as_ref(),
                ..CheckRequest::default()
            })
            .map_err(status)?;
        Ok((resp.decision, resp.revision, resp.missing_context))
    }

    fn check_bulk_inner(
        &self,
        r: &pb::CheckBulkPermissionsRequest,
        consistency: Consistency,
    ) -> Result<pb::CheckBulkPermissionsResponse, Status> {
        let max = self.0.limits.max_bulk_checks;
        if r.items.len() > max {
            return Err(too_many("checks", r.items.len(), max, "max-bulk-checks"));
        }
        // A malformed item fails alone, like an engine error on it.
        let parsed: Vec<Result<_, Status>> = r
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let parse = |[resource, permission, subject]: [&str; 3]| {
                    let resource = super::object(item.resource.as_ref(), resource)?;
                    let permission = convert::required(&item.permission, permission)?;
                    let subject = super::subject(item.subject.as_ref(), subject)?;
                    Ok::<_, Status>((resource, permission, subject))
                };
                // Field names with the item's index are formatted only for an error.
                let (resource, permission, subject) = parse(["resource", "permission", "subject"]).or_else(|_| {
                    let field = format!("items[{i}]");
                    parse([&format!("{field}.resource"), &format!("{field}.permission"), &format!("{field}.subject")])
                })?;
                Ok((resource, permission, subject, convert::request_context(item.context.as_ref())?))
            })
            .collect();
        let requests: Vec<CheckRequest<'_>> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .map(
                |(resource, permission, (st, sid, srel), context)| CheckRequest {
                    resource_type: &resource.object_type,
                    resource_id: &resource.object_id,
                    permission,
                    subject_type: st,
                    subject_id: sid,
                    subject_relation: *srel,
                    consistency,
                    context: context.as_ref(),
                    ..CheckRequest::default()
                },
            )
            .collect();
        let (answers, revision) = self
            .0
            .engine
            .check_bulk_responses(&requests, consistency)
            .map_err(status)?;
        let mut answers = answers.into_iter();
        let pairs = parsed
            .iter()
            .zip(&r.items)
            .map(|(p, item)| {
                use pb::check_bulk_permissions_pair::Response as R;
                let response = match p {
                    Err(s) => R::Error(super::rpc_status(s)),
                    Ok(_) => match answers.next() {
                        Some(Ok(d)) => R::Item(pb::CheckBulkPermissionsResponseItem {
                            permissionship: permissionship(d.decision),
                            partial_caveat_info: partial(d.missing_context),
                        }),
                        Some(Err(e)) => R::Error(super::rpc_status(&status(e))),
                        None => R::Error(super::rpc_status(&Status::internal("missing answer"))),
                    },
                };
                pb::CheckBulkPermissionsPair {
                    request: Some(item.clone()),
                    response: Some(response),
                }
            })
            .collect();
        Ok(pb::CheckBulkPermissionsResponse {
            checked_at: super::zed_token(revision),
            pairs,
        })
    }

    /// Deletes up to `limit` of the relationships `filter` selects (all of them without
    /// a limit), one atomic write, leaving the rest: for partial deletions and id
    /// prefixes, which the engine's delete-by-filter does not do. Returns (deleted,
    /// whether more remain, revision).
    async fn delete_listed(
        &self,
        filter: WireFilter,
        preconditions: Vec<arbiter_engine::Precondition>,
        limit: Option<usize>,
        partial: bool,
    ) -> Result<(usize, bool, u64), Status> {
        let engine = self.0.engine.clone();
        let read_limit = limit.map(|l| if partial { l } else { l + 1 });
        let (found, more, revision) = blocking(move || {
            read_page(
                &engine,
                &filter,
                Consistency::FullyConsistent,
                None,
                read_limit,
            )
        })
        .await?;
        if let Some(l) = limit {
            if !partial && found.len() > l {
                return Err(Status::failed_precondition(format!(
                    "more than {l} relationships match and `optional_allow_partial_deletions` is false; nothing was deleted"
                )));
            }
        }
        if found.is_empty() {
            if !preconditions.is_empty() {
                // Preconditions still apply: judge them with an empty write.
                let revision = self
                    .0
                    .write(Vec::new(), preconditions)
                    .await
                    .map_err(resurface)?;
                return Ok((0, false, revision));
            }
            return Ok((0, false, revision));
        }
        let n = found.len();
        let updates = found
            .into_iter()
            .map(|relationship| RelationshipUpdate {
                op: UpdateOp::Delete,
                relationship,
            })
            .collect();
        let revision = self
            .0
            .write(updates, preconditions)
            .await
            .map_err(resurface)?;
        Ok((n, more, revision))
    }
}

#[tonic::async_trait]
impl PermissionsService for AuthzedPermissions {
    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let start = Instant::now();
        let r = request.get_ref();
        let result = match fresh(&self.0, r.consistency.as_ref()).await {
            Ok(consistency) => self.check_inner(r, consistency),
            Err(e) => Err(e),
        };
        if let Ok((decision, revision, _)) = &result {
            self.record(
                "CheckPermission",
                &r.resource,
                &r.permission,
                &r.subject,
                *decision == Decision::Allowed,
                *revision,
                start,
                request.metadata(),
            );
        }
        let result = result.map(|(decision, revision, missing)| {
            Response::new(pb::CheckPermissionResponse {
                checked_at: super::zed_token(revision),
                permissionship: permissionship(decision),
                partial_caveat_info: partial(missing),
                optional_expires_at: None,
            })
        });
        self.0
            .metrics
            .record("authzed.CheckPermission", start, result)
    }

    async fn check_bulk_permissions(
        &self,
        request: Request<pb::CheckBulkPermissionsRequest>,
    ) -> Result<Response<pb::CheckBulkPermissionsResponse>, Status> {
        let start = Instant::now();
        let (metadata, _, message) = request.into_parts();
        let result = match fresh(&self.0, message.consistency.as_ref()).await {
            Ok(consistency) => {
                let this = self.clone();
                let items = message.items.len();
                match crate::grpc::batch(items, move || this.check_bulk_inner(&message, consistency)).await {
                    Ok(result) => result,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Ok(resp) = &result {
            let revision = resp
                .checked_at
                .as_ref()
                .and_then(|t| token::decode(&t.token).ok())
                .unwrap_or(0);
            for pair in &resp.pairs {
                let (Some(item), Some(pb::check_bulk_permissions_pair::Response::Item(answer))) =
                    (&pair.request, &pair.response)
                else {
                    continue;
                };
                let allowed = answer.permissionship == permissionship(Decision::Allowed);
                self.record(
                    "CheckBulkPermissions",
                    &item.resource,
                    &item.permission,
                    &item.subject,
                    allowed,
                    revision,
                    start,
                    &metadata,
                );
            }
        }
        self.0.metrics.record(
            "authzed.CheckBulkPermissions",
            start,
            result.map(Response::new),
        )
    }

    async fn expand_permission_tree(
        &self,
        request: Request<pb::ExpandPermissionTreeRequest>,
    ) -> Result<Response<pb::ExpandPermissionTreeResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async {
            let consistency = fresh(&shared, request.get_ref().consistency.as_ref()).await?;
            let shared = shared.clone();
            blocking(move || {
                let r = request.get_ref();
                let resource = super::object(r.resource.as_ref(), "resource")?;
                let permission = convert::required(&r.permission, "permission")?;
                let (tree, revision) = shared
                    .engine
                    .expand(
                        &resource.object_type,
                        &resource.object_id,
                        permission,
                        consistency,
                    )
                    .map_err(status)?;
                Ok(Response::new(pb::ExpandPermissionTreeResponse {
                    expanded_at: super::zed_token(revision),
                    tree_root: Some(super::expand_tree(&tree)),
                }))
            })
            .await
        }
        .await;
        self.0
            .metrics
            .record("authzed.ExpandPermissionTree", start, result)
    }

    type LookupResourcesStream = Streamed<pb::LookupResourcesResponse>;

    async fn lookup_resources(
        &self,
        request: Request<pb::LookupResourcesRequest>,
    ) -> Result<Response<Self::LookupResourcesStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async {
            let consistency = fresh(&shared, request.get_ref().consistency.as_ref()).await?;
            let limit = shared.page_limit(request.get_ref().optional_limit, "optional_limit")?;
            let stream = produce_stream(&shared.clone(), move |out| {
                let r = request.get_ref();
                // The context gives caveat parameters; Cedar forbids are judged
                // without it (failing closed).
                let context = convert::request_context(r.context.as_ref())?;
                let resource_type =
                    convert::required(&r.resource_object_type, "resource_object_type")?;
                let permission = convert::required(&r.permission, "permission")?;
                let (subject_type, subject_id, subject_relation) =
                    super::subject(r.subject.as_ref(), "subject")?;
                let req = LookupResourcesRequest {
                    context: context.as_ref(),
                    resource_type,
                    permission,
                    subject_type,
                    subject_id,
                    subject_relation,
                    consistency,
                    cursor: super::cursor(&r.optional_cursor),
                    limit,
                };
                shared
                    .engine
                    .lookup_resources_each(&req, shared.limits.max_page_size, &mut |revision, ids| {
                        let token = super::zed_token(revision);
                        ids.into_iter().all(|r| {
                            out.send(pb::LookupResourcesResponse {
                                looked_up_at: token.clone(),
                                after_result_cursor: super::to_cursor(r.id.clone()),
                                resource_object_id: r.id,
                                permissionship: lookup_permissionship(&r.missing_context),
                                partial_caveat_info: partial(r.missing_context),
                            })
                        })
                    })
                    .map_err(status)?;
                Ok(())
            })
            .await?;
            Ok(Response::new(stream))
        }
        .await;
        self.0
            .metrics
            .record("authzed.LookupResources", start, result)
    }

    type LookupSubjectsStream = Streamed<pb::LookupSubjectsResponse>;

    async fn lookup_subjects(
        &self,
        request: Request<pb::LookupSubjectsRequest>,
    ) -> Result<Response<Self::LookupSubjectsStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async {
            let consistency = fresh(&shared, request.get_ref().consistency.as_ref()).await?;
            let limit = shared.page_limit(request.get_ref().optional_concrete_limit, "optional_concrete_limit")?;
            let stream = produce_stream(&shared.clone(), move |out| {
                use pb::lookup_subjects_request::WildcardOption;
                let r = request.get_ref();
                let context = convert::request_context(r.context.as_ref())?;
                let resource = super::object(r.resource.as_ref(), "resource")?;
                let permission = convert::required(&r.permission, "permission")?;
                let subject_type =
                    convert::required(&r.subject_object_type, "subject_object_type")?;
                let exclude_wildcards = match WildcardOption::try_from(r.wildcard_option) {
                    Ok(WildcardOption::Unspecified | WildcardOption::IncludeWildcards) => false,
                    Ok(WildcardOption::ExcludeWildcards) => true,
                    Err(_) => {
                        return Err(invalid("`wildcard_option` is not a known WildcardOption"))
                    }
                };
                // The wildcard sorts first (`*` before every id character), so a cursor
                // of `*` starts just after it.
                let cursor = match super::cursor(&r.optional_cursor) {
                    None if exclude_wildcards => Some(WILDCARD_ID),
                    c => c,
                };
                let req = LookupSubjectsRequest {
                    context: context.as_ref(),
                    resource_type: &resource.object_type,
                    resource_id: &resource.object_id,
                    permission,
                    subject_type,
                    subject_relation: match r.optional_subject_relation.as_str() {
                        "" | "..." => None,
                        rel => Some(rel),
                    },
                    consistency,
                    cursor,
                    limit,
                    written_subject_sets_only: false,
                };
                shared
                    .engine
                    .lookup_subjects_each(&req, shared.limits.max_page_size, &mut |revision, subjects| {
                        subjects.into_iter().all(|s| out.send(found_subject(s, revision)))
                    })
                    .map_err(status)?;
                Ok(())
            })
            .await?;
            Ok(Response::new(stream))
        }
        .await;
        self.0
            .metrics
            .record("authzed.LookupSubjects", start, result)
    }

    type ReadRelationshipsStream = Streamed<pb::ReadRelationshipsResponse>;

    async fn read_relationships(
        &self,
        request: Request<pb::ReadRelationshipsRequest>,
    ) -> Result<Response<Self::ReadRelationshipsStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async {
            let consistency = fresh(&shared, request.get_ref().consistency.as_ref()).await?;
            let limit = shared.page_limit(request.get_ref().optional_limit, "optional_limit")?;
            let stream = produce_stream(&shared.clone(), move |out| {
                let r = request.get_ref();
                let filter = match &r.relationship_filter {
                    Some(f) => WireFilter::parse(f, "relationship_filter")?,
                    None => WireFilter::default(),
                };
                if filter.resource_id_prefix.is_some() && filter.resource_type.is_none() {
                    return Err(invalid("`optional_resource_id_prefix` needs `resource_type`"));
                }
                let engine_filter = filter.engine();
                let req = ReadRequest {
                    filter: &engine_filter,
                    id_prefix: filter.resource_id_prefix.as_deref(),
                    consistency,
                    cursor: super::cursor(&r.optional_cursor),
                    limit,
                };
                shared
                    .engine
                    .read_relationships_each(&req, shared.limits.max_page_size, &mut |revision, page| {
                        let token = super::zed_token(revision);
                        page.iter().all(|rel| {
                            out.send(pb::ReadRelationshipsResponse {
                                read_at: token.clone(),
                                relationship: Some(super::to_pb_relationship(rel)),
                                after_result_cursor: super::to_cursor(arbiter_engine::store::relationship_key(rel)),
                            })
                        })
                    })
                    .map_err(status)?;
                Ok(())
            })
            .await?;
            Ok(Response::new(stream))
        }
        .await;
        self.0
            .metrics
            .record("authzed.ReadRelationships", start, result)
    }

    async fn write_relationships(
        &self,
        request: Request<pb::WriteRelationshipsRequest>,
    ) -> Result<Response<pb::WriteRelationshipsResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async move {
            let r = request.get_ref();
            let max = shared.limits.max_updates_per_write;
            let n = r.updates.len() + r.optional_preconditions.len();
            if n > max {
                return Err(too_many(
                    "updates and preconditions",
                    n,
                    max,
                    "max-updates-per-write",
                ));
            }
            let updates = r
                .updates
                .iter()
                .enumerate()
                .map(|(i, u)| update(u, i))
                .collect::<Result<Vec<_>, _>>()?;
            let preconditions = super::preconditions(&r.optional_preconditions)?;
            let revision = shared
                .write(updates, preconditions)
                .await
                .map_err(resurface)?;
            Ok(Response::new(pb::WriteRelationshipsResponse {
                written_at: super::zed_token(revision),
            }))
        }
        .await;
        self.0
            .metrics
            .record("authzed.WriteRelationships", start, result)
    }

    async fn delete_relationships(
        &self,
        request: Request<pb::DeleteRelationshipsRequest>,
    ) -> Result<Response<pb::DeleteRelationshipsResponse>, Status> {
        use pb::delete_relationships_response::DeletionProgress;
        let start = Instant::now();
        let result = async {
            let r = request.get_ref();
            let max = self.0.limits.max_updates_per_write;
            if r.optional_preconditions.len() > max {
                return Err(too_many("preconditions", r.optional_preconditions.len(), max, "max-updates-per-write"));
            }
            let f = r.relationship_filter.as_ref().ok_or_else(|| invalid("`relationship_filter` is required"))?;
            let filter = WireFilter::parse(f, "relationship_filter")?;
            if filter.is_empty() {
                return Err(invalid("`relationship_filter` is empty: name at least a resource type or a subject filter"));
            }
            let preconditions = super::preconditions(&r.optional_preconditions)?;
            let max = limit(r.optional_limit);
            let (deleted, more, revision) = if filter.resource_id_prefix.is_some() || (max.is_some() && r.optional_allow_partial_deletions) {
                self.delete_listed(filter, preconditions, max, r.optional_allow_partial_deletions).await?
            } else {
                let (n, revision) = self.0.delete(filter.engine(), preconditions, max).await.map_err(resurface)?;
                (n, false, revision)
            };
            Ok(Response::new(pb::DeleteRelationshipsResponse {
                deleted_at: super::zed_token(revision),
                deletion_progress: if more { DeletionProgress::Partial } else { DeletionProgress::Complete } as i32,
                relationships_deleted_count: deleted as u64,
            }))
        }
        .await;
        self.0
            .metrics
            .record("authzed.DeleteRelationships", start, result)
    }

    async fn import_bulk_relationships(
        &self,
        request: Request<Streaming<pb::ImportBulkRelationshipsRequest>>,
    ) -> Result<Response<pb::ImportBulkRelationshipsResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let max = shared.limits.max_import_batch;
        let result = shared
            .import_stream(request.into_inner(), |batch: pb::ImportBulkRelationshipsRequest, message| {
                if batch.relationships.len() > max {
                    return Err(too_many("relationships", batch.relationships.len(), max, "max-import-batch"));
                }
                batch
                    .relationships
                    .iter()
                    .enumerate()
                    .map(|(i, r)| super::relationship(Some(r), &format!("message {message}: relationships[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(resurface)
            .map(|(loaded, _)| Response::new(pb::ImportBulkRelationshipsResponse { num_loaded: loaded }));
        self.0
            .metrics
            .record("authzed.ImportBulkRelationships", start, result)
    }

    type ExportBulkRelationshipsStream = Streamed<pb::ExportBulkRelationshipsResponse>;

    async fn export_bulk_relationships(
        &self,
        request: Request<pb::ExportBulkRelationshipsRequest>,
    ) -> Result<Response<Self::ExportBulkRelationshipsStream>, Status> {
        let start = Instant::now();
        let result = async {
            let r = request.get_ref();
            let filter = match &r.optional_relationship_filter {
                Some(f) => WireFilter::parse(f, "optional_relationship_filter")?,
                None => WireFilter::default(),
            };
            // A cursor pins the revision it was made at: the export resumes in the same
            // snapshot (while the history window keeps it).
            let (consistency, skip) = match super::cursor(&r.optional_cursor) {
                Some(c) => {
                    let (revision, offset) = parse_export_cursor(c)?;
                    if let Some(replica) = &self.0.replica {
                        replica.wait_for(revision).await?;
                    }
                    (Consistency::AtExactSnapshot(revision), offset)
                }
                None => (fresh(&self.0, r.consistency.as_ref()).await?, 0),
            };
            let chunk = limit(r.optional_limit).unwrap_or(EXPORT_CHUNK);
            let engine = self.0.engine.clone();
            let graph = engine.snapshot(consistency).map_err(status)?;
            let turn = self.0.heavy_turn().await?;
            let (mut tx, rx) = crate::grpc::stream_channel(4);
            let timeout = self.0.limits.stream_send_timeout;
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _turn = turn;
                let now = arbiter_engine::now_micros();
                let mut batch = Vec::with_capacity(chunk);
                let mut offset = skip;
                for stored in graph.iter().skip(skip) {
                    offset += 1;
                    if !stored.edge.live_at(now) {
                        continue;
                    }
                    let rel = engine.to_relationship(&stored);
                    if !filter.matches(&rel) {
                        continue;
                    }
                    batch.push(super::to_pb_relationship(&rel));
                    if batch.len() == chunk {
                        let msg = pb::ExportBulkRelationshipsResponse {
                            after_result_cursor: super::to_cursor(export_cursor(
                                graph.revision,
                                offset,
                            )),
                            relationships: std::mem::take(&mut batch),
                        };
                        // The client went away, or stalled past the send timeout: this
                        // thread and the snapshot are let go either way.
                        if !runtime.block_on(tx.send(Ok(msg), timeout)) {
                            return;
                        }
                    }
                }
                if !batch.is_empty() {
                    let last = pb::ExportBulkRelationshipsResponse {
                        after_result_cursor: super::to_cursor(export_cursor(graph.revision, offset)),
                        relationships: batch,
                    };
                    let _ = runtime.block_on(tx.send(Ok(last), timeout));
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::ExportBulkRelationshipsStream
            ))
        }
        .await;
        self.0
            .metrics
            .record("authzed.ExportBulkRelationships", start, result)
    }
}

/// The shared write paths (`Shared::write`, `delete`, `import`, which also serve a
/// Postgres replica) hand back statuses mapped the native way; SpiceDB gives three of
/// those mistakes other codes (see [`super::status`]). They are recognised by the engine's
/// messages, which the test below pins to `super::status`.
fn resurface(s: Status) -> Status {
    if s.code() != tonic::Code::FailedPrecondition {
        return s;
    }
    let m = s.message();
    if m.starts_with("relationship `") && m.contains("` already exists") {
        return Status::already_exists(m);
    }
    let not_allowed = m.starts_with("subject `") && m.contains("` is not allowed on `");
    let permission =
        m.contains("` is a permission; relationships can only be written to relations");
    if not_allowed || permission {
        return Status::invalid_argument(m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbiter_engine::EngineError;

    #[test]
    fn write_errors_resurface_with_spicedb_codes() {
        let cases = [
            EngineError::AlreadyExists("doc:a#viewer@user:b".into()),
            EngineError::WriteToPermission {
                object_type: "doc".into(),
                relation: "view".into(),
            },
            EngineError::SubjectNotAllowed {
                relationship: "doc:a#viewer@team:b".into(),
                object_type: "doc".into(),
                relation: "viewer".into(),
                subject: "team".into(),
                allowed: "user".into(),
            },
            EngineError::UnknownRelation {
                object_type: "doc".into(),
                relation: "nope".into(),
            },
            EngineError::UnknownType("nope".into()),
            EngineError::PreconditionFailed("nothing matches `doc:a`".into()),
            EngineError::InvalidArgument("bad id".into()),
        ];
        for e in cases {
            let expected = status(e.clone()).code();
            assert_eq!(
                resurface(convert::status(e.clone())).code(),
                expected,
                "{e}"
            );
        }
    }

    #[test]
    fn export_cursors_round_trip() {
        assert_eq!(
            parse_export_cursor(&export_cursor(42, 7)).ok(),
            Some((42, 7))
        );
        for bad in ["", "r1", "1:2", "r1:x", "rx:1"] {
            assert!(parse_export_cursor(bad).is_err(), "{bad}");
        }
    }
}
