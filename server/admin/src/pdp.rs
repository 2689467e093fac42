//! The PDP, asked for the admin's own decisions over gRPC (arbiter.v1 Check), always at
//! least as fresh as the newest revision in Postgres: a revocation the admin (any
//! instance of it) committed is seen by the next request. Unreachable: 503, never an
//! allow.

use std::time::Duration;

use arbiter_proto::arbiter::v1 as pb;
use pb::permission_service_client::PermissionServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::metrics::Metrics;
use crate::problem::{ApiResult, Problem};

/// How long one decision may take, the wait for the revision included.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Pdp {
    client: PermissionServiceClient<Channel>,
    key: Option<MetadataValue<tonic::metadata::Ascii>>,
    endpoint: String,
    metrics: Metrics,
}

impl Pdp {
    /// A client for `endpoint`; connects on first use and reconnects by itself.
    pub fn new(endpoint: &str, key: Option<&str>, metrics: Metrics) -> anyhow::Result<Pdp> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| anyhow::anyhow!("--pdp-endpoint `{endpoint}` is not a URL: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CHECK_TIMEOUT)
            .connect_lazy();
        let key = match key {
            Some(k) => Some(
                format!("Bearer {k}")
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--pdp-key is not a valid header value"))?,
            ),
            None => None,
        };
        Ok(Pdp { client: PermissionServiceClient::new(channel), key, endpoint: endpoint.to_string(), metrics })
    }

    /// Does `subject` (`type:id`) have `permission` on `resource` (`type:id`), at least as
    /// fresh as `revision`?
    pub async fn check(&self, resource: &str, permission: &str, subject: &str, revision: u64) -> ApiResult<bool> {
        let (rt, rid) = resource.split_once(':').unwrap_or((resource, ""));
        let (st, sid) = subject.split_once(':').unwrap_or((subject, ""));
        let mut request = tonic::Request::new(pb::CheckRequest {
            consistency: Some(pb::Consistency {
                requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(crate::token(revision))),
            }),
            resource: Some(pb::ObjectRef { r#type: rt.to_string(), id: rid.to_string() }),
            permission: permission.to_string(),
            subject: Some(pb::SubjectRef {
                object: Some(pb::ObjectRef { r#type: st.to_string(), id: sid.to_string() }),
                relation: String::new(),
            }),
            context: None,
            explain: false,
        });
        request.set_timeout(CHECK_TIMEOUT);
        if let Some(key) = &self.key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        let mut client = self.client.clone();
        match client.check(request).await {
            Ok(response) => {
                self.metrics.pdp("ok");
                Ok(response.into_inner().decision == pb::Decision::Allowed as i32)
            }
            Err(status) => Err(self.failed(&status, false)),
        }
    }

    /// A failed call: 503, or, for a question the caller asked (`asked`), a 422 when the
    /// PDP found the question itself wrong (an unknown type or permission).
    fn failed(&self, status: &tonic::Status, asked: bool) -> Problem {
        self.metrics.pdp("failed");
        if asked && matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition) {
            return Problem::invalid("query", format!("the PDP refused the question: {}", status.message()));
        }
        Problem::fault(
            http::StatusCode::SERVICE_UNAVAILABLE,
            &format!("the PDP at {} could not decide", self.endpoint),
            &format_args!("{:?}: {}", status.code(), status.message()),
        )
    }

    fn consistency(revision: u64) -> Option<pb::Consistency> {
        Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(crate::token(revision))) })
    }

    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CHECK_TIMEOUT);
        if let Some(key) = &self.key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        request
    }

    /// The ids of `resource_type` objects on which `subject` (`type:id`) has
    /// `permission`, at most `limit` (and whether there were more).
    pub async fn lookup_resources(&self, resource_type: &str, permission: &str, subject: &str, revision: u64, limit: u32) -> ApiResult<(Vec<String>, bool)> {
        let (st, sid) = subject.split_once(':').unwrap_or((subject, ""));
        let request = self.authorized(pb::LookupResourcesRequest {
            context: None,
            consistency: Pdp::consistency(revision),
            resource_type: resource_type.to_string(),
            permission: permission.to_string(),
            subject: Some(pb::SubjectRef { object: Some(pb::ObjectRef { r#type: st.to_string(), id: sid.to_string() }), relation: String::new() }),
            cursor: String::new(),
            // Streamed whole; reading stops after `limit + 1` (dropping the stream
            // cancels the rest).
            limit: 0,
        });
        let mut client = self.client.clone();
        let mut stream = client.lookup_resources(request).await.map_err(|s| self.failed(&s, true))?.into_inner();
        let mut ids = Vec::new();
        while let Some(item) = stream.message().await.map_err(|s| self.failed(&s, true))? {
            // Allowed only on a caveat's condition is not allowed here (no context).
            if !item.missing_context.is_empty() {
                continue;
            }
            ids.push(item.resource_id);
            if ids.len() > limit as usize {
                break;
            }
        }
        self.metrics.pdp("ok");
        let more = ids.len() > limit as usize;
        ids.truncate(limit as usize);
        Ok((ids, more))
    }

    /// The subjects of `subject_type` that have `permission` on `resource` (`type:id`),
    /// from `cursor`, at most `limit`: each id (or `*`, a wildcard, with the ids it does
    /// not cover) and the cursor after it.
    pub async fn lookup_subjects(&self, resource: &str, permission: &str, subject_type: &str, revision: u64, cursor: &str, limit: u32) -> ApiResult<Vec<pb::LookupSubjectsResponse>> {
        let (rt, rid) = resource.split_once(':').unwrap_or((resource, ""));
        let request = self.authorized(pb::LookupSubjectsRequest {
            context: None,
            consistency: Pdp::consistency(revision),
            resource: Some(pb::ObjectRef { r#type: rt.to_string(), id: rid.to_string() }),
            permission: permission.to_string(),
            subject_type: subject_type.to_string(),
            subject_relation: String::new(),
            cursor: cursor.to_string(),
            limit,
        });
        let mut client = self.client.clone();
        let mut stream = client.lookup_subjects(request).await.map_err(|s| self.failed(&s, true))?.into_inner();
        let mut out = Vec::new();
        while let Some(item) = stream.message().await.map_err(|s| self.failed(&s, true))? {
            // Allowed only on a caveat's condition is not allowed here (no context).
            if item.missing_context.is_empty() {
                out.push(item);
            }
        }
        self.metrics.pdp("ok");
        Ok(out)
    }
}
