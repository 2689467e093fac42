//! SpiceDB's SchemaService: ReadSchema and WriteSchema over the engine's schema (the
//! same schema language, stored as written).

use std::sync::Arc;
use std::time::Instant;

use arbiter_proto::authzed::api::v1 as pb;
use pb::schema_service_server::SchemaService;
use tonic::{Request, Response, Status};

use crate::grpc::Shared;

#[derive(Debug, Clone)]
pub struct AuthzedSchema(pub Arc<Shared>);

#[tonic::async_trait]
impl SchemaService for AuthzedSchema {
    async fn read_schema(
        &self,
        _request: Request<pb::ReadSchemaRequest>,
    ) -> Result<Response<pb::ReadSchemaResponse>, Status> {
        let start = Instant::now();
        let graph = self.0.engine.current();
        let result = match graph.plan.as_ref() {
            Some(plan) => Ok(Response::new(pb::ReadSchemaResponse {
                schema_text: plan.text.clone(),
                read_at: super::zed_token(graph.revision),
            })),
            // As SpiceDB answers before any schema is written.
            None => Err(Status::not_found("no schema has been written yet")),
        };
        self.0.metrics.record("authzed.ReadSchema", start, result)
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
            Ok(Response::new(pb::WriteSchemaResponse {
                written_at: super::zed_token(revision),
            }))
        }
        .await;
        self.0.metrics.record("authzed.WriteSchema", start, result)
    }
}
