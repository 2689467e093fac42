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
            Err(status) => {
                self.metrics.pdp("failed");
                Err(Problem::fault(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    &format!("the PDP at {} could not decide", self.endpoint),
                    &format_args!("{:?}: {}", status.code(), status.message()),
                ))
            }
        }
    }
}
