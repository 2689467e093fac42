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
}
