//! SchemaService: read and write the schema.

use std::sync::Arc;
use std::time::Instant;

use arbiter_proto::arbiter::v1 as pb;
use pb::schema_service_server::SchemaService;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::token;

#[derive(Debug, Clone)]
pub struct Schemas(pub Arc<Shared>);

#[tonic::async_trait]
impl SchemaService for Schemas {
    async fn read_schema(
        &self,
        _request: Request<pb::ReadSchemaRequest>,
    ) -> Result<Response<pb::ReadSchemaResponse>, Status> {
        let start = Instant::now();
        let graph = self.0.engine.current();
        let result = match graph.plan.as_ref() {
            Some(plan) => Ok(Response::new(pb::ReadSchemaResponse {
                schema: plan.text.clone(),
                revision: token::encode(graph.revision),
            })),
            None => Err(Status::not_found("no schema has been written yet")),
        };
        self.0.metrics.record("ReadSchema", start, result)
    }

    async fn write_schema(
        &self,
        request: Request<pb::WriteSchemaRequest>,
    ) -> Result<Response<pb::WriteSchemaResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async move {
            let text = request.into_inner().schema;
            if text.trim().is_empty() {
                return Err(Status::invalid_argument("`schema` is empty"));
            }
            let revision = shared.write_schema(text).await?;
            Ok(Response::new(pb::WriteSchemaResponse { revision: token::encode(revision) }))
        }
        .await;
        self.0.metrics.record("WriteSchema", start, result)
    }

    async fn read_policies(
        &self,
        _request: Request<pb::ReadPoliciesRequest>,
    ) -> Result<Response<pb::ReadPoliciesResponse>, Status> {
        let start = Instant::now();
        let graph = self.0.engine.current();
        let mut policies: Vec<pb::Policy> = graph
            .policies
            .as_ref()
            .map(|p| p.model.policies.iter().map(|p| pb::Policy { id: p.id.clone(), text: p.text.clone() }).collect())
            .unwrap_or_default();
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        let result = Ok(Response::new(pb::ReadPoliciesResponse { policies, revision: token::encode(graph.revision) }));
        self.0.metrics.record("ReadPolicies", start, result)
    }

    async fn write_policies(
        &self,
        request: Request<pb::WritePoliciesRequest>,
    ) -> Result<Response<pb::WritePoliciesResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async move {
            let mut policies = Vec::new();
            for (i, p) in request.into_inner().policies.into_iter().enumerate() {
                if p.id.trim().is_empty() {
                    return Err(Status::invalid_argument(format!("policies[{i}].id is empty")));
                }
                if policies.iter().any(|q: &arbiter_engine::PolicyText| q.id == p.id) {
                    return Err(Status::invalid_argument(format!("policies[{i}]: the id `{}` is used twice", p.id)));
                }
                policies.push(arbiter_engine::PolicyText { id: p.id, text: p.text });
            }
            let revision = shared.write_policies(policies).await?;
            Ok(Response::new(pb::WritePoliciesResponse { revision: token::encode(revision) }))
        }
        .await;
        self.0.metrics.record("WritePolicies", start, result)
    }

    async fn read_attribute_schema(
        &self,
        _request: Request<pb::ReadAttributeSchemaRequest>,
    ) -> Result<Response<pb::ReadAttributeSchemaResponse>, Status> {
        let start = Instant::now();
        let graph = self.0.engine.current();
        let model = graph.policies.as_ref().map(|p| p.model.clone()).unwrap_or_default();
        let (definitions, labels) = crate::convert::to_pb_attribute_schema(&model);
        let result = Ok(Response::new(pb::ReadAttributeSchemaResponse {
            definitions,
            labels,
            revision: token::encode(graph.revision),
        }));
        self.0.metrics.record("ReadAttributeSchema", start, result)
    }

    async fn write_attribute_schema(
        &self,
        request: Request<pb::WriteAttributeSchemaRequest>,
    ) -> Result<Response<pb::WriteAttributeSchemaResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async move {
            let req = request.into_inner();
            let (declarations, labels) = crate::convert::attribute_schema(&req.definitions, &req.labels)?;
            let revision = shared.write_attribute_schema(declarations, labels).await?;
            Ok(Response::new(pb::WriteAttributeSchemaResponse { revision: token::encode(revision) }))
        }
        .await;
        self.0.metrics.record("WriteAttributeSchema", start, result)
    }
}
