//! SpiceDB's WatchService: one message per revision with the relationship updates it
//! made (as TOUCH or DELETE), from the changelog and then live, in order and without
//! gaps, like the native Watch. Object-type and relationship filters narrow the updates;
//! schema writes and checkpoints are sent when the client asks for those kinds.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arbiter_engine::{ChangeOp, ChangesAfter, LoggedCommit};
use arbiter_proto::authzed::api::v1 as pb;
use pb::watch_service_server::WatchService;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{status, WireFilter};
use crate::convert::invalid;
use crate::grpc::Shared;
use crate::token;

#[derive(Debug, Clone)]
pub struct AuthzedWatch(pub Arc<Shared>);

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What one watcher asked to see.
#[derive(Debug, Clone, Default)]
struct Selection {
    object_types: Vec<String>,
    filters: Vec<WireFilter>,
    schema: bool,
    checkpoints: bool,
}

impl Selection {
    fn parse(r: &pb::WatchRequest) -> Result<Selection, Status> {
        let filters = r
            .optional_relationship_filters
            .iter()
            .enumerate()
            .map(|(i, f)| WireFilter::parse(f, &format!("optional_relationship_filters[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut s = Selection {
            object_types: r.optional_object_types.clone(),
            filters,
            ..Selection::default()
        };
        for (i, k) in r.optional_update_kinds.iter().enumerate() {
            match pb::WatchKind::try_from(*k) {
                Ok(pb::WatchKind::Unspecified | pb::WatchKind::IncludeRelationshipUpdates) => {}
                Ok(pb::WatchKind::IncludeSchemaUpdates) => s.schema = true,
                Ok(pb::WatchKind::IncludeCheckpoints) => s.checkpoints = true,
                Err(_) => {
                    return Err(invalid(format!(
                        "`optional_update_kinds[{i}]` is not a known WatchKind"
                    )))
                }
            }
        }
        // Relationship updates are always sent: SpiceDB's default, and what the other
        // kinds add to.
        Ok(s)
    }

    fn wants(&self, r: &arbiter_schema::Relationship) -> bool {
        if self.object_types.is_empty() && self.filters.is_empty() {
            return true;
        }
        self.object_types.contains(&r.resource.object_type)
            || self.filters.iter().any(|f| f.matches(r))
    }

    /// The message for one commit, if the watcher wants anything of it.
    fn response(&self, c: &LoggedCommit) -> Option<pb::WatchResponse> {
        use pb::relationship_update::Operation;
        let updates: Vec<pb::RelationshipUpdate> = c
            .changes
            .iter()
            .filter(|ch| self.wants(&ch.relationship))
            .map(|ch| pb::RelationshipUpdate {
                operation: match ch.op {
                    ChangeOp::Touch => Operation::Touch as i32,
                    ChangeOp::Delete => Operation::Delete as i32,
                },
                relationship: Some(super::to_pb_relationship(&ch.relationship)),
            })
            .collect();
        let schema_updated = self.schema && c.schema.is_some();
        if updates.is_empty() && !schema_updated && !self.checkpoints {
            return None;
        }
        let is_checkpoint = updates.is_empty() && !schema_updated;
        Some(pb::WatchResponse {
            updates,
            changes_through: super::zed_token(c.revision),
            optional_transaction_metadata: None,
            schema_updated,
            is_checkpoint,
        })
    }
}

#[tonic::async_trait]
impl WatchService for AuthzedWatch {
    type WatchStream = Streamed<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = (|| {
            let r = request.get_ref();
            let selection = Selection::parse(r)?;
            // Subscribe before reading the changelog, so nothing falls in between.
            let live = shared.commits.subscribe();
            let after = match r
                .optional_start_cursor
                .as_ref()
                .filter(|t| !t.token.is_empty())
            {
                None => shared.engine.revision(),
                Some(t) => token::decode(&t.token).map_err(invalid)?,
            };
            let newest = shared.engine.revision();
            if after > newest {
                return Err(Status::failed_precondition(format!(
                    "cannot watch after revision {after}: the newest revision is {newest}"
                )));
            }
            if let ChangesAfter::TooOld { oldest } =
                shared.engine.changes_after(after, 1).map_err(status)?
            {
                return Err(Status::failed_precondition(format!(
                    "revision {after} is older than the changelog keeps (oldest is {oldest}); read the relationships again and watch from a newer token"
                )));
            }
            let (tx, rx) = crate::grpc::stream_channel(64);
            tokio::spawn(crate::grpc::follow_commits(
                shared.clone(),
                after,
                live,
                tx,
                "resume the watch from the last ZedToken",
                move |c| selection.response(c),
            ));
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::WatchStream
            ))
        })();
        self.0.metrics.record("authzed.Watch", start, result)
    }
}

