//! RelationshipService: writes, deletes, reads, bulk import and export, and Watch.

use std::sync::Arc;
use std::time::Instant;

use arbiter_engine::{
    AttributeUpdate, ChangeOp, ObjectAttributes, ChangesAfter, LoggedCommit, ReadRequest, RelationshipFilter, RelationshipUpdate, UpdateOp,
};
use arbiter_proto::arbiter::v1 as pb;
use pb::relationship_service_server::RelationshipService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{too_many, Shared, Streamed};
use crate::convert::{self, status};
use crate::token;

#[derive(Debug, Clone)]
pub struct Relationships(pub Arc<Shared>);

/// Relationships per ExportRelationships message.
const EXPORT_CHUNK: usize = 1000;

fn update(u: &pb::RelationshipUpdate, i: usize) -> Result<RelationshipUpdate, Status> {
    use pb::relationship_update::Operation;
    let op = match Operation::try_from(u.operation) {
        Ok(Operation::Touch) => UpdateOp::Touch,
        Ok(Operation::Create) => UpdateOp::Create,
        Ok(Operation::Delete) => UpdateOp::Delete,
        _ => {
            return Err(convert::invalid(format!(
                "`updates[{i}].operation` must be TOUCH, CREATE or DELETE"
            )))
        }
    };
    Ok(RelationshipUpdate {
        op,
        relationship: convert::relationship(
            u.relationship.as_ref(),
            &format!("updates[{i}].relationship"),
        )?,
    })
}

fn watch_response(c: &LoggedCommit) -> pb::WatchResponse {
    use pb::relationship_change::Operation;
    pb::WatchResponse {
        revision: token::encode(c.revision),
        changes: c
            .changes
            .iter()
            .map(|ch| pb::RelationshipChange {
                operation: match ch.op {
                    ChangeOp::Touch => Operation::Touch as i32,
                    ChangeOp::Delete => Operation::Delete as i32,
                },
                relationship: Some(convert::to_pb_relationship(&ch.relationship)),
            })
            .collect(),
        schema_changed: c.schema.is_some(),
    }
}

#[tonic::async_trait]
impl RelationshipService for Relationships {
    async fn write_relationships(
        &self,
        request: Request<pb::WriteRelationshipsRequest>,
    ) -> Result<Response<pb::WriteRelationshipsResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async move {
            let r = request.get_ref();
            let limit = shared.limits.max_updates_per_write;
            let n = r.updates.len() + r.preconditions.len();
            if n > limit {
                return Err(too_many("updates and preconditions", n, limit, "max-updates-per-write"));
            }
            if r.updates.is_empty() {
                return Err(convert::invalid("`updates` is empty: nothing to write"));
            }
            let updates = r.updates.iter().enumerate().map(|(i, u)| update(u, i)).collect::<Result<Vec<_>, _>>()?;
            let preconditions = convert::preconditions(&r.preconditions)?;
            let revision = shared.write(updates, preconditions).await?;
            Ok(Response::new(pb::WriteRelationshipsResponse { revision: token::encode(revision) }))
        }
        .await;
        self.0.metrics.record("WriteRelationships", start, result)
    }

    async fn delete_relationships(
        &self,
        request: Request<pb::DeleteRelationshipsRequest>,
    ) -> Result<Response<pb::DeleteRelationshipsResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async move {
            let r = request.get_ref();
            let limit = shared.limits.max_updates_per_write;
            if r.preconditions.len() > limit {
                return Err(too_many("preconditions", r.preconditions.len(), limit, "max-updates-per-write"));
            }
            let filter = convert::filter(r.filter.as_ref(), "filter")?;
            let preconditions = convert::preconditions(&r.preconditions)?;
            let max = (r.limit > 0).then_some(r.limit as usize);
            let (deleted, revision) = shared.delete(filter, preconditions, max).await?;
            Ok(Response::new(pb::DeleteRelationshipsResponse {
                revision: token::encode(revision),
                deleted: deleted as u64,
            }))
        }
        .await;
        self.0.metrics.record("DeleteRelationships", start, result)
    }

    type ReadRelationshipsStream = Streamed<pb::ReadRelationshipsResponse>;

    async fn read_relationships(
        &self,
        request: Request<pb::ReadRelationshipsRequest>,
    ) -> Result<Response<Self::ReadRelationshipsStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async {
            self.0.fresh(request.get_ref().consistency.as_ref()).await?;
            let limit = self.0.page_limit(request.get_ref().limit, "limit")?;
            let stream = super::produce_stream(&shared.clone(), move |out| {
                let r = request.get_ref();
                let consistency = convert::consistency(r.consistency.as_ref())?;
                // No filter (or no resource type) reads everything.
                let filter = match &r.filter {
                    Some(f) if !f.resource_type.is_empty() => convert::filter(Some(f), "filter")?,
                    Some(f) if f != &pb::RelationshipFilter::default() => {
                        return Err(convert::invalid(
                            "`filter.resource_type` is required when the filter names anything else",
                        ))
                    }
                    _ => RelationshipFilter::default(),
                };
                let req = ReadRequest {
                    filter: &filter,
                    id_prefix: None,
                    consistency,
                    cursor: (!r.cursor.is_empty()).then_some(r.cursor.as_str()),
                    limit,
                };
                let chunk = shared.limits.max_page_size;
                shared
                    .engine
                    .read_relationships_each(&req, chunk, &mut |revision, page| {
                        let revision = token::encode(revision);
                        page.iter().all(|rel| {
                            out.send(pb::ReadRelationshipsResponse {
                                relationship: Some(convert::to_pb_relationship(rel)),
                                cursor: arbiter_engine::store::relationship_key(rel),
                                revision: revision.clone(),
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
        self.0.metrics.record("ReadRelationships", start, result)
    }

    async fn import_relationships(
        &self,
        request: Request<Streaming<pb::ImportRelationshipsRequest>>,
    ) -> Result<Response<pb::ImportRelationshipsResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let limit = shared.limits.max_import_batch;
        let result = shared
            .import_stream(request.into_inner(), |batch: pb::ImportRelationshipsRequest, message| {
                if batch.relationships.len() > limit {
                    return Err(too_many("relationships", batch.relationships.len(), limit, "max-import-batch"));
                }
                batch
                    .relationships
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| convert::owned_relationship(r, || format!("message {message}: relationships[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map(|(imported, revision)| {
                Response::new(pb::ImportRelationshipsResponse {
                    imported,
                    revision: token::encode(revision),
                })
            });
        self.0.metrics.record("ImportRelationships", start, result)
    }

    type ExportRelationshipsStream = Streamed<pb::ExportRelationshipsResponse>;

    async fn export_relationships(
        &self,
        request: Request<pb::ExportRelationshipsRequest>,
    ) -> Result<Response<Self::ExportRelationshipsStream>, Status> {
        let start = Instant::now();
        if let Err(e) = self.0.fresh(request.get_ref().consistency.as_ref()).await {
            return self.0.metrics.record("ExportRelationships", start, Err(e));
        }
        let turn = match self.0.heavy_turn().await {
            Ok(t) => t,
            Err(e) => return self.0.metrics.record("ExportRelationships", start, Err(e)),
        };
        let result = (|| {
            let consistency = convert::consistency(request.get_ref().consistency.as_ref())?;
            let engine = self.0.engine.clone();
            let graph = engine.snapshot(consistency).map_err(status)?;
            let (mut tx, rx) = super::stream_channel(4);
            let timeout = self.0.limits.stream_send_timeout;
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _turn = turn;
                let revision = token::encode(graph.revision);
                let now = arbiter_engine::now_micros();
                let mut chunk = Vec::with_capacity(EXPORT_CHUNK);
                for stored in graph.iter().filter(|s| s.edge.live_at(now)) {
                    chunk.push(convert::to_pb_relationship(
                        &engine.to_relationship(&stored),
                    ));
                    if chunk.len() == EXPORT_CHUNK {
                        let msg = pb::ExportRelationshipsResponse {
                            relationships: std::mem::take(&mut chunk),
                            revision: revision.clone(),
                        };
                        // The client went away, or stalled past the send timeout: this
                        // thread and the snapshot are let go either way.
                        if !runtime.block_on(tx.send(Ok(msg), timeout)) {
                            return;
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = runtime.block_on(tx.send(Ok(pb::ExportRelationshipsResponse { relationships: chunk, revision }), timeout));
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::ExportRelationshipsStream
            ))
        })();
        self.0.metrics.record("ExportRelationships", start, result)
    }

    type WatchStream = Streamed<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = (|| {
            let after = request.get_ref().after_revision.as_str();
            // Subscribe before reading the changelog, so nothing falls in between.
            let live = shared.commits.subscribe();
            let after = if after.is_empty() {
                shared.engine.revision()
            } else {
                token::decode(after).map_err(convert::invalid)?
            };
            let newest = shared.engine.revision();
            if after > newest {
                return Err(Status::failed_precondition(format!(
                    "cannot watch after revision {after}: the newest revision is {newest}"
                )));
            }
            // Refuse up front a cursor the changelog no longer reaches.
            if let ChangesAfter::TooOld { oldest } =
                shared.engine.changes_after(after, 1).map_err(status)?
            {
                return Err(Status::failed_precondition(format!(
                    "revision {after} is older than the changelog keeps (oldest is {oldest}); read the relationships again and watch from a newer token"
                )));
            }
            let (tx, rx) = super::stream_channel(64);
            tokio::spawn(super::follow_commits(
                shared.clone(),
                after,
                live,
                tx,
                "resume the watch from the last revision token",
                |c| Some(watch_response(c)),
            ));
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::WatchStream
            ))
        })();
        self.0.metrics.record("Watch", start, result)
    }

    async fn write_attributes(
        &self,
        request: Request<pb::WriteAttributesRequest>,
    ) -> Result<Response<pb::WriteAttributesResponse>, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = async move {
            let req = request.into_inner();
            let n = req.set.len() + req.delete.len();
            let limit = shared.limits.max_updates_per_write;
            if n > limit {
                return Err(too_many("attribute updates", n, limit, "max-updates-per-write"));
            }
            if n == 0 {
                return Err(convert::invalid("`set` and `delete` are empty: nothing to write"));
            }
            let mut updates = Vec::with_capacity(n);
            for (i, a) in req.set.iter().enumerate() {
                let o = convert::object(a.object.as_ref(), &format!("set[{i}].object"))?;
                let values = a.values.as_ref().map(convert::context).unwrap_or_default();
                updates.push(AttributeUpdate {
                    object_type: o.r#type.clone(),
                    object_id: o.id.clone(),
                    attributes: Some(ObjectAttributes { values, labels: a.labels.clone() }),
                });
            }
            for (i, o) in req.delete.iter().enumerate() {
                let o = convert::object(Some(o), &format!("delete[{i}]"))?;
                updates.push(AttributeUpdate { object_type: o.r#type.clone(), object_id: o.id.clone(), attributes: None });
            }
            let revision = shared.write_attributes(updates).await?;
            Ok(Response::new(pb::WriteAttributesResponse { revision: token::encode(revision) }))
        }
        .await;
        self.0.metrics.record("WriteAttributes", start, result)
    }

    async fn read_attributes(
        &self,
        request: Request<pb::ReadAttributesRequest>,
    ) -> Result<Response<pb::ReadAttributesResponse>, Status> {
        let start = Instant::now();
        if let Err(e) = self.0.fresh(request.get_ref().consistency.as_ref()).await {
            return self.0.metrics.record("ReadAttributes", start, Err(e));
        }
        let result = (|| {
            let req = request.get_ref();
            let consistency = convert::consistency(req.consistency.as_ref())?;
            let mut objects = Vec::with_capacity(req.objects.len());
            for (i, o) in req.objects.iter().enumerate() {
                let o = convert::object(Some(o), &format!("objects[{i}]"))?;
                objects.push((o.r#type.clone(), o.id.clone()));
            }
            let (revision, found) = self.0.engine.read_attributes(&objects, consistency).map_err(status)?;
            let attributes = objects
                .into_iter()
                .zip(found)
                .filter_map(|((t, i), a)| {
                    let a = a?;
                    Some(pb::ObjectAttributes {
                        object: Some(pb::ObjectRef { r#type: t, id: i }),
                        values: Some(convert::to_pb_struct(a.values)),
                        labels: a.labels,
                    })
                })
                .collect();
            Ok(Response::new(pb::ReadAttributesResponse { attributes, revision: token::encode(revision) }))
        })();
        self.0.metrics.record("ReadAttributes", start, result)
    }
}

