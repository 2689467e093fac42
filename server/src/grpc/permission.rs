//! PermissionService: Check, CheckBulk, Expand and the lookups.

use std::sync::Arc;
use std::time::Instant;

use arbiter_engine::{CheckRequest, Decision, LookupResourcesRequest, LookupSubjectsRequest};
use arbiter_proto::arbiter::v1 as pb;
use pb::permission_service_server::PermissionService;
use tonic::{Request, Response, Status};

use super::{blocking, too_many, Shared, Streamed};
use crate::convert::{self, status};
use crate::token;

#[derive(Debug, Clone)]
pub struct Permissions(pub Arc<Shared>);

fn decision(d: Decision) -> i32 {
    match d {
        Decision::Allowed => pb::Decision::Allowed as i32,
        Decision::Denied => pb::Decision::Denied as i32,
        Decision::Conditional => pb::Decision::Conditional as i32,
    }
}

fn cursor(c: &str) -> Option<&str> {
    (!c.is_empty()).then_some(c)
}

impl Permissions {
    /// A decision log record (built only for sampled decisions).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        log: &crate::decisions::DecisionLog,
        method: &'static str,
        resource: &Option<pb::ObjectRef>,
        permission: &str,
        subject: &Option<pb::SubjectRef>,
        decision: i32,
        revision: &str,
        start: Instant,
        metadata: &tonic::metadata::MetadataMap,
    ) -> crate::decisions::DecisionRecord {
        let resource = resource.as_ref().map(|o| format!("{}:{}", o.r#type, o.id)).unwrap_or_default();
        let subject = subject
            .as_ref()
            .map(|s| {
                let o = s.object.clone().unwrap_or_default();
                match s.relation.as_str() {
                    "" => format!("{}:{}", o.r#type, o.id),
                    rel => format!("{}:{}#{rel}", o.r#type, o.id),
                }
            })
            .unwrap_or_default();
        crate::decisions::DecisionRecord {
            decision_id: log.next_id(),
            evaluated_at: chrono::Utc::now(),
            resource,
            permission: permission.to_string(),
            subject,
            decision: if decision == pb::Decision::Allowed as i32 {
                "allowed"
            } else if decision == pb::Decision::Conditional as i32 {
                "conditional"
            } else {
                "denied"
            },
            policy_version: token::decode(revision).unwrap_or(0),
            latency_us: start.elapsed().as_micros() as u64,
            trace_id: crate::decisions::trace_id(metadata),
            method,
        }
    }

    fn check_inner(&self, r: &pb::CheckRequest) -> Result<pb::CheckResponse, Status> {
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let resource = convert::object(r.resource.as_ref(), "resource")?;
        let permission = convert::required(&r.permission, "permission")?;
        let (subject_type, subject_id, subject_relation) =
            convert::subject(r.subject.as_ref(), "subject")?;
        let context = convert::request_context(r.context.as_ref())?;
        let req = CheckRequest {
            resource_type: &resource.r#type,
            resource_id: &resource.id,
            permission,
            subject_type,
            subject_id,
            subject_relation,
            consistency,
            context: context.as_ref(),
            ..Default::default()
        };
        let engine = &self.0.engine;
        if r.explain {
            let e = engine.explain(&req).map_err(status)?;
            let effect = if e.decision == Decision::Allowed { "permit" } else { "forbid" };
            let mut explanation = e.path;
            explanation.extend(e.policies.iter().map(|p| format!("cedar {effect} `{p}`")));
            if e.decision == Decision::Conditional {
                // The path waits on caveat parameters: answered as a plain Check.
                let resp = engine.check(&req).map_err(status)?;
                return Ok(pb::CheckResponse {
                    decision: decision(resp.decision),
                    revision: token::encode(resp.revision),
                    explanation: Vec::new(),
                    missing_context: resp.missing_context,
                });
            }
            return Ok(pb::CheckResponse {
                decision: decision(e.decision),
                revision: token::encode(e.revision),
                explanation,
                missing_context: Vec::new(),
            });
        }
        let resp = engine.check(&req).map_err(status)?;
        Ok(pb::CheckResponse {
            decision: decision(resp.decision),
            revision: token::encode(resp.revision),
            explanation: Vec::new(),
            missing_context: resp.missing_context,
        })
    }

    fn check_bulk_inner(&self, r: &pb::CheckBulkRequest) -> Result<pb::CheckBulkResponse, Status> {
        let limits = &self.0.limits;
        if r.items.len() > limits.max_bulk_checks {
            return Err(too_many(
                "checks",
                r.items.len(),
                limits.max_bulk_checks,
                "max-bulk-checks",
            ));
        }
        let consistency = convert::consistency(r.consistency.as_ref())?;
        // Malformed items fail alone, like engine errors do.
        let mut parsed = Vec::with_capacity(r.items.len());
        for (i, item) in r.items.iter().enumerate() {
            let parse = |[resource, permission, subject]: [&str; 3]| {
                let resource = convert::object(item.resource.as_ref(), resource)?;
                let permission = convert::required(&item.permission, permission)?;
                let subject = convert::subject(item.subject.as_ref(), subject)?;
                Ok::<_, Status>((resource, permission, subject))
            };
            // Field names with the item's index are formatted only for an error.
            let one = parse(["resource", "permission", "subject"])
                .or_else(|_| {
                    let field = format!("items[{i}]");
                    parse([&format!("{field}.resource"), &format!("{field}.permission"), &format!("{field}.subject")])
                })
                .and_then(|(resource, permission, subject)| {
                    Ok((resource, permission, subject, convert::request_context(item.context.as_ref())?))
                });
            parsed.push(one);
        }
        let requests: Vec<CheckRequest<'_>> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .map(|(resource, permission, (st, sid, srel), context)| CheckRequest {
                resource_type: &resource.r#type,
                resource_id: &resource.id,
                permission,
                subject_type: st,
                subject_id: sid,
                subject_relation: *srel,
                consistency,
                context: context.as_ref(),
                ..Default::default()
            })
            .collect();
        let (answers, revision) = self
            .0
            .engine
            .check_bulk_responses(&requests, consistency)
            .map_err(status)?;
        let mut answers = answers.into_iter();
        let results = parsed
            .iter()
            .map(|p| {
                use pb::check_bulk_result::Result as R;
                let mut missing_context = Vec::new();
                let result = match p {
                    Err(s) => R::Error(pb::Error {
                        code: "INVALID_ARGUMENT".into(),
                        message: s.message().to_string(),
                    }),
                    Ok(_) => match answers.next() {
                        Some(Ok(d)) => {
                            missing_context = d.missing_context;
                            R::Decision(decision(d.decision))
                        }
                        Some(Err(e)) => R::Error(pb::Error {
                            code: convert::code_name(&e).into(),
                            message: convert::message(&e),
                        }),
                        None => R::Error(pb::Error {
                            code: "INTERNAL".into(),
                            message: "missing answer".into(),
                        }),
                    },
                };
                pb::CheckBulkResult {
                    result: Some(result),
                    missing_context,
                }
            })
            .collect();
        Ok(pb::CheckBulkResponse {
            revision: token::encode(revision),
            results,
        })
    }
}

#[tonic::async_trait]
impl PermissionService for Permissions {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let start = Instant::now();
        if let Err(e) = self.0.fresh(request.get_ref().consistency.as_ref()).await {
            return self.0.metrics.record("Check", start, Err(e));
        }
        let result = self.check_inner(request.get_ref());
        let mut logged = None;
        if let (Ok(resp), Some(log)) = (&result, self.0.decisions.get()) {
            if log.sampled() {
                let r = request.get_ref();
                let record = self.record(log, "Check", &r.resource, &r.permission, &r.subject, resp.decision, &resp.revision, start, request.metadata());
                logged = Some(record.decision_id.clone());
                log.offer(record);
            }
        }
        let mut result = self.0.metrics.record("Check", start, result.map(Response::new));
        // A logged decision's id goes back to the caller, which reports what it
        // enforced under it (the admin's pep-logs).
        if let (Ok(response), Some(id)) = (&mut result, logged) {
            if let Ok(v) = id.parse() {
                response.metadata_mut().insert(crate::decisions::DECISION_ID_HEADER, v);
            }
        }
        result
    }

    async fn check_bulk(
        &self,
        request: Request<pb::CheckBulkRequest>,
    ) -> Result<Response<pb::CheckBulkResponse>, Status> {
        let start = Instant::now();
        if let Err(e) = self.0.fresh(request.get_ref().consistency.as_ref()).await {
            return self.0.metrics.record("CheckBulk", start, Err(e));
        }
        let (metadata, _, message) = request.into_parts();
        let this = self.clone();
        let (result, message) = match super::batch(message.items.len(), move || (this.check_bulk_inner(&message), message)).await {
            Ok(done) => done,
            Err(e) => return self.0.metrics.record("CheckBulk", start, Err(e)),
        };
        if let (Ok(resp), Some(log)) = (&result, self.0.decisions.get()) {
            for (item, r) in message.items.iter().zip(&resp.results) {
                let Some(pb::check_bulk_result::Result::Decision(d)) = r.result else { continue };
                if log.sampled() {
                    log.offer(self.record(log, "CheckBulk", &item.resource, &item.permission, &item.subject, d, &resp.revision, start, &metadata));
                }
            }
        }
        self.0.metrics.record("CheckBulk", start, result.map(Response::new))
    }

    async fn expand(
        &self,
        request: Request<pb::ExpandRequest>,
    ) -> Result<Response<pb::ExpandResponse>, Status> {
        let start = Instant::now();
        if let Err(e) = self.0.fresh(request.get_ref().consistency.as_ref()).await {
            return self.0.metrics.record("Expand", start, Err(e));
        }
        let shared = self.0.clone();
        let result = blocking(move || {
            let r = request.get_ref();
            let consistency = convert::consistency(r.consistency.as_ref())?;
            let resource = convert::object(r.resource.as_ref(), "resource")?;
            let permission = convert::required(&r.permission, "permission")?;
            let (tree, revision) = shared
                .engine
                .expand(&resource.r#type, &resource.id, permission, consistency)
                .map_err(status)?;
            Ok(Response::new(pb::ExpandResponse {
                revision: token::encode(revision),
                tree: Some(convert::expand_tree(&tree)),
            }))
        })
        .await;
        self.0.metrics.record("Expand", start, result)
    }

    type LookupResourcesStream = Streamed<pb::LookupResourcesResponse>;

    async fn lookup_resources(
        &self,
        request: Request<pb::LookupResourcesRequest>,
    ) -> Result<Response<Self::LookupResourcesStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async {
            self.0.fresh(request.get_ref().consistency.as_ref()).await?;
            let limit = self.0.page_limit(request.get_ref().limit, "limit")?;
            let stream = super::produce_stream(&shared.clone(), move |out| {
                let r = request.get_ref();
                let consistency = convert::consistency(r.consistency.as_ref())?;
                let resource_type = convert::required(&r.resource_type, "resource_type")?;
                let permission = convert::required(&r.permission, "permission")?;
                let (subject_type, subject_id, subject_relation) =
                    convert::subject(r.subject.as_ref(), "subject")?;
                let context = convert::request_context(r.context.as_ref())?;
                let req = LookupResourcesRequest {
                    context: context.as_ref(),
                    resource_type,
                    permission,
                    subject_type,
                    subject_id,
                    subject_relation,
                    consistency,
                    cursor: cursor(&r.cursor),
                    limit,
                };
                let chunk = shared.limits.max_page_size;
                shared
                    .engine
                    .lookup_resources_each(&req, chunk, &mut |revision, ids| {
                        let revision = token::encode(revision);
                        ids.into_iter().all(|r| {
                            out.send(pb::LookupResourcesResponse {
                                cursor: r.id.clone(),
                                resource_id: r.id,
                                revision: revision.clone(),
                                missing_context: r.missing_context,
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
        self.0.metrics.record("LookupResources", start, result)
    }

    type LookupSubjectsStream = Streamed<pb::LookupSubjectsResponse>;

    async fn lookup_subjects(
        &self,
        request: Request<pb::LookupSubjectsRequest>,
    ) -> Result<Response<Self::LookupSubjectsStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async {
            self.0.fresh(request.get_ref().consistency.as_ref()).await?;
            let limit = self.0.page_limit(request.get_ref().limit, "limit")?;
            let stream = super::produce_stream(&shared.clone(), move |out| {
                let r = request.get_ref();
                let consistency = convert::consistency(r.consistency.as_ref())?;
                let resource = convert::object(r.resource.as_ref(), "resource")?;
                let permission = convert::required(&r.permission, "permission")?;
                let subject_type = convert::required(&r.subject_type, "subject_type")?;
                let context = convert::request_context(r.context.as_ref())?;
                let req = LookupSubjectsRequest {
                    context: context.as_ref(),
                    resource_type: &resource.r#type,
                    resource_id: &resource.id,
                    permission,
                    subject_type,
                    subject_relation: (!r.subject_relation.is_empty()).then_some(r.subject_relation.as_str()),
                    consistency,
                    cursor: cursor(&r.cursor),
                    limit,
                    written_subject_sets_only: false,
                };
                let chunk = shared.limits.max_page_size;
                shared
                    .engine
                    .lookup_subjects_each(&req, chunk, &mut |revision, subjects| {
                        let revision = token::encode(revision);
                        subjects.into_iter().all(|s| {
                            let conditionally_excluded = s
                                .excluded
                                .iter()
                                .filter(|e| !e.missing_context.is_empty())
                                .map(|e| pb::ConditionallyExcluded {
                                    subject_id: e.id.clone(),
                                    missing_context: e.missing_context.clone(),
                                })
                                .collect();
                            out.send(pb::LookupSubjectsResponse {
                                cursor: s.subject_id.clone(),
                                subject_id: s.subject_id,
                                excluded_ids: s.excluded.into_iter().map(|e| e.id).collect(),
                                revision: revision.clone(),
                                missing_context: s.missing_context,
                                conditionally_excluded,
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
        self.0.metrics.record("LookupSubjects", start, result)
    }
}
