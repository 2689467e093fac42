//! SpiceDB's SchemaService: ReadSchema and WriteSchema over the engine's schema (the
//! same schema language, stored as written), and ReflectSchema from its compiled form.

use std::sync::Arc;
use std::time::Instant;

use arbiter_proto::authzed::api::v1 as pb;
use arbiter_schema::{AllowedKind, CompiledSchema, RelationKind};
use pb::schema_service_server::SchemaService;
use tonic::{Request, Response, Status};

use super::{fresh, status};
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

    async fn reflect_schema(
        &self,
        request: Request<pb::ReflectSchemaRequest>,
    ) -> Result<Response<pb::ReflectSchemaResponse>, Status> {
        let start = Instant::now();
        let result = async {
            let r = request.get_ref();
            let consistency = fresh(&self.0, r.consistency.as_ref()).await?;
            let graph = self.0.engine.snapshot(consistency).map_err(status)?;
            let plan = graph
                .plan
                .as_ref()
                .ok_or_else(|| Status::not_found("no schema has been written yet"))?;
            let (definitions, caveats) = reflect(&plan.schema, &r.optional_filters);
            Ok(Response::new(pb::ReflectSchemaResponse {
                definitions,
                caveats,
                read_at: super::zed_token(graph.revision),
            }))
        }
        .await;
        self.0
            .metrics
            .record("authzed.ReflectSchema", start, result)
    }
}

/// Whether `name` passes a prefix filter (an empty filter passes everything).
fn prefix(filter: &str, name: &str) -> bool {
    name.starts_with(filter)
}

/// The definitions and caveats the filters select (everything without filters): a
/// definition when a filter without a caveat name names it; its relations and
/// permissions by the relation and permission names of the filters that named it.
fn reflect(
    schema: &CompiledSchema,
    filters: &[pb::ReflectionSchemaFilter],
) -> (Vec<pb::ReflectionDefinition>, Vec<pb::ReflectionCaveat>) {
    let all = filters.is_empty();
    let mut definitions = Vec::new();
    for def in &schema.definitions {
        let matching: Vec<&pb::ReflectionSchemaFilter> = filters
            .iter()
            .filter(|f| {
                f.optional_caveat_name_filter.is_empty()
                    && prefix(&f.optional_definition_name_filter, &def.name)
            })
            .collect();
        if !all && matching.is_empty() {
            continue;
        }
        // A filter naming neither relations nor permissions takes them all.
        let member = |name: &str, is_permission: bool| {
            all || matching.iter().any(|f| {
                let (rel, perm) = (
                    &f.optional_relation_name_filter,
                    &f.optional_permission_name_filter,
                );
                (rel.is_empty() && perm.is_empty())
                    || (is_permission && !perm.is_empty() && prefix(perm, name))
                    || (!is_permission && !rel.is_empty() && prefix(rel, name))
            })
        };
        let mut relations = Vec::new();
        let mut permissions = Vec::new();
        for rel in &def.relations {
            match &rel.kind {
                RelationKind::Direct(allowed) if member(&rel.name, false) => {
                    relations.push(pb::ReflectionRelation {
                        name: rel.name.clone(),
                        comment: rel.doc.join("\n"),
                        parent_definition_name: def.name.clone(),
                        subject_types: allowed
                            .iter()
                            .filter_map(|a| {
                                use pb::reflection_type_reference::Typeref;
                                let sub = schema.definition(a.type_id)?;
                                let typeref = match a.kind {
                                    AllowedKind::Object => Typeref::IsTerminalSubject(true),
                                    AllowedKind::Wildcard => Typeref::IsPublicWildcard(true),
                                    AllowedKind::SubjectSet(r) => {
                                        Typeref::OptionalRelationName(sub.relation(r)?.name.clone())
                                    }
                                };
                                Some(pb::ReflectionTypeReference {
                                    subject_definition_name: sub.name.clone(),
                                    optional_caveat_name: a
                                        .caveat
                                        .and_then(|c| schema.caveats.get(usize::from(c)))
                                        .map(|c| c.name.clone())
                                        .unwrap_or_default(),
                                    typeref: Some(typeref),
                                })
                            })
                            .collect(),
                    })
                }
                RelationKind::Permission(_) if member(&rel.name, true) => {
                    permissions.push(pb::ReflectionPermission {
                        name: rel.name.clone(),
                        comment: rel.doc.join("\n"),
                        parent_definition_name: def.name.clone(),
                    })
                }
                _ => {}
            }
        }
        definitions.push(pb::ReflectionDefinition {
            name: def.name.clone(),
            comment: def.doc.join("\n"),
            relations,
            permissions,
        });
    }
    let caveats = schema
        .caveats
        .iter()
        .filter(|c| {
            all || filters.iter().any(|f| {
                (!f.optional_caveat_name_filter.is_empty()
                    && prefix(&f.optional_caveat_name_filter, &c.name))
                    || *f == pb::ReflectionSchemaFilter::default()
            })
        })
        .map(|c| pb::ReflectionCaveat {
            name: c.name.clone(),
            comment: c.doc.join("\n"),
            parameters: c
                .params
                .iter()
                .map(|(name, ty)| pb::ReflectionCaveatParameter {
                    name: name.clone(),
                    r#type: ty.clone(),
                    parent_caveat_name: c.name.clone(),
                })
                .collect(),
            expression: c.expression.clone(),
        })
        .collect();
    (definitions, caveats)
}
