//! Generic graph nodes and edges (seed `graph_nodes` / `graph_edges`): a thin view and
//! write path over relationships for tools that think in nodes and edges.
//!
//! A node is an object of the application's schema, `type:object_id`, of a type with
//! `relation tenant: platform/tenant`; creating it claims the object for the tenant
//! (`type:object_id#tenant@platform/tenant:T`, refused when another tenant holds it).
//! An edge is one relationship, `from_type:from_id#relation@to_type:to_id`, checked
//! against the live schema (the relation must allow the target's type as an object):
//! an edge the schema does not allow is a 422 naming the relation. Properties are kept
//! in the admin's tables only (a JSON object each); the PDP sees the relationships.
//! Deleting a node deletes its edges and their relationships; the object's claim stays.

use arbiter_schema::AllowedKind;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::acl::{claim_object, tenant_type, RelationName};
use super::{check_document, check_if_match, commit, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/graph/nodes", post(create_node).get(list_nodes))
        .route("/v1/tenants/{tenant_id}/graph/nodes/{node_id}", get(get_node).patch(update_node).delete(delete_node))
        .route("/v1/tenants/{tenant_id}/graph/edges", post(create_edge).get(list_edges))
        .route("/v1/tenants/{tenant_id}/graph/edges/{edge_id}", get(get_edge).patch(update_edge).delete(delete_edge))
}

/// A node: an object of the application's schema.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Node {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The object's type in the application schema.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub node_type: String,
    /// The object's id in the graph: the node is `type:object_id`.
    pub object_id: String,
    #[schema(value_type = Object)]
    pub properties: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const NODE_COLUMNS: &str = "id, tenant_id, type, object_id, properties, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "doc", "object_id": "roadmap", "properties": {"title": "Roadmap"}}))]
pub struct CreateNode {
    #[serde(rename = "type")]
    #[schema(min_length = 3, max_length = 128, pattern = r"^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$")]
    pub node_type: String,
    /// Letters, digits and `/ _ | - = +`, at most 1,024 bytes; the node's id when absent.
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[A-Za-z0-9/_|\-=+]+$")]
    pub object_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"properties": {"title": "Roadmap 2027"}}))]
pub struct UpdateProperties {
    /// The whole new set of properties.
    #[schema(value_type = Object)]
    pub properties: Value,
}

/// An edge: one relationship between two nodes of the tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Edge {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub from_node_id: Uuid,
    pub to_node_id: Uuid,
    /// A relation of the source node's type that allows the target's type.
    pub relation_type: String,
    #[schema(value_type = Object)]
    pub properties: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const EDGE_COLUMNS: &str = "id, tenant_id, from_node_id, to_node_id, relation_type, properties, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEdge {
    pub from_node_id: Uuid,
    pub to_node_id: Uuid,
    #[schema(value_type = RelationName)]
    pub relation_type: String,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
}

fn object(n: &Node) -> String {
    format!("{}:{}", n.node_type, n.object_id)
}

async fn fetch_node(tx: &mut Tx, tenant_id: Uuid, node_id: Uuid, field: Option<&str>) -> ApiResult<Node> {
    let node = sqlx::query_as::<_, Node>(&format!("SELECT {NODE_COLUMNS} FROM arbiter_admin.graph_nodes WHERE id = $1 AND tenant_id = $2"))
        .bind(node_id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?;
    match (node, field) {
        (Some(n), _) => Ok(n),
        (None, Some(field)) => Err(Problem::invalid(field, format!("the tenant has no node `{node_id}`"))),
        (None, None) => Err(Problem::not_found(format!("node `{node_id}`"))),
    }
}

async fn fetch_edge(tx: &mut Tx, tenant_id: Uuid, edge_id: Uuid) -> ApiResult<Edge> {
    sqlx::query_as::<_, Edge>(&format!("SELECT {EDGE_COLUMNS} FROM arbiter_admin.graph_edges WHERE id = $1 AND tenant_id = $2"))
        .bind(edge_id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("edge `{edge_id}`")))
}

fn properties(v: Option<&Value>) -> ApiResult<Value> {
    match v {
        None => Ok(Value::Object(Default::default())),
        Some(v) => {
            check_document("properties", v)?;
            Ok(v.clone())
        }
    }
}

/// Add a node: claim an object of the application's schema for the tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/graph/nodes", tag = "graph", request_body = CreateNode,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Node), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_node(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateNode>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    if !b.node_type.split('/').all(arbiter_schema::is_valid_identifier) {
        return Err(Problem::invalid("/type", format!("`{}` is not a type name", arbiter_schema::shorten(&b.node_type))));
    }
    let id = Uuid::new_v4();
    let object_id = b.object_id.clone().unwrap_or_else(|| id.to_string());
    if let Some(problem) = arbiter_schema::object_id_problem(&object_id) {
        return Err(Problem::invalid("/object_id", problem));
    }
    let props = properties(b.properties.as_ref())?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/graph/nodes");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let schema = crate::model::live_schema(&mut tx, "/type").await?;
    tenant_type(&schema, "/type", &b.node_type)?;
    claim_object(&mut tx, tenant_id, &b.node_type, &object_id).await.map_err(|p| p.with_field("/object_id"))?;
    let node = sqlx::query_as::<_, Node>(&format!(
        "INSERT INTO arbiter_admin.graph_nodes (id, tenant_id, type, object_id, properties) VALUES ($1, $2, $3, $4, $5) RETURNING {NODE_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant_id)
    .bind(&b.node_type)
    .bind(&object_id)
    .bind(&props)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "graph_node.create",
        target_type: "graph_node",
        target_id: node.id.to_string(),
        before: None,
        after: snapshot(&node),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &node).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &node, Some(revision), Some(node.version)))
}

/// List a tenant's nodes; filter by `type` and `object_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/graph/nodes", tag = "graph",
    params(("tenant_id" = Uuid, Path), PageParams, ("type" = Option<String>, Query), ("object_id" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Node>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_nodes(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["type", "object_id"])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, Node>(&format!(
        "SELECT {NODE_COLUMNS} FROM arbiter_admin.graph_nodes WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR type = $3) AND ($4::text IS NULL OR object_id = $4) ORDER BY id LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("type"))
    .bind(q.filter("object_id"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |n| n.id), None, None))
}

/// Read a node.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/graph/nodes/{node_id}", tag = "graph", params(("tenant_id" = Uuid, Path), ("node_id" = Uuid, Path)),
    responses((status = 200, body = Node), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_node(State(app): State<App>, caller: Caller, P((tenant_id, node_id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let node = fetch_node(&mut tx, tenant_id, node_id, None).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &node, None, Some(node.version)))
}

/// Replace a node's properties. `If-Match` guards against lost updates.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/graph/nodes/{node_id}", tag = "graph", request_body = UpdateProperties,
    params(("tenant_id" = Uuid, Path), ("node_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Node), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_node(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, node_id)): P<(Uuid, Uuid)>,
    body: JsonBody<UpdateProperties>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let props = properties(Some(&body.value.properties))?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch_node(&mut tx, tenant_id, node_id, None).await?;
    check_if_match(&headers, before.version)?;
    let after = sqlx::query_as::<_, Node>(&format!(
        "UPDATE arbiter_admin.graph_nodes SET properties = $3, version = version + 1, updated_at = now()
         WHERE id = $1 AND tenant_id = $2 RETURNING {NODE_COLUMNS}"
    ))
    .bind(node_id)
    .bind(tenant_id)
    .bind(&props)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "graph_node.update",
        target_type: "graph_node",
        target_id: node_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a node and its edges (their relationships go in the same revision).
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/graph/nodes/{node_id}", tag = "graph",
    params(("tenant_id" = Uuid, Path), ("node_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_node(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, node_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch_node(&mut tx, tenant_id, node_id, None).await?;
    check_if_match(&headers, before.version)?;
    // Every edge touching the node, with both ends, to withdraw its relationship.
    let ends: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT f.type || ':' || f.object_id, e.relation_type, t.type || ':' || t.object_id
           FROM arbiter_admin.graph_edges e
           JOIN arbiter_admin.graph_nodes f ON f.id = e.from_node_id
           JOIN arbiter_admin.graph_nodes t ON t.id = e.to_node_id
          WHERE e.tenant_id = $1 AND (e.from_node_id = $2 OR e.to_node_id = $2)",
    )
    .bind(tenant_id)
    .bind(node_id)
    .fetch_all(tx.conn())
    .await?;
    for (from, relation, to) in &ends {
        tx.feed.delete(from, relation, to);
    }
    sqlx::query("DELETE FROM arbiter_admin.graph_nodes WHERE id = $1 AND tenant_id = $2")
        .bind(node_id)
        .bind(tenant_id)
        .execute(tx.conn())
        .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "graph_node.delete",
        target_type: "graph_node",
        target_id: node_id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}

/// Connect two nodes of the tenant: one relationship, checked against the schema.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/graph/edges", tag = "graph", request_body = CreateEdge,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Edge), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_edge(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateEdge>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    if !arbiter_schema::is_valid_identifier(&b.relation_type) {
        return Err(Problem::invalid("/relation_type", format!("`{}` is not a relation name", arbiter_schema::shorten(&b.relation_type))));
    }
    let props = properties(b.properties.as_ref())?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/graph/edges");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let schema = crate::model::live_schema(&mut tx, "/relation_type").await?;
    let from = fetch_node(&mut tx, tenant_id, b.from_node_id, Some("/from_node_id")).await?;
    let to = fetch_node(&mut tx, tenant_id, b.to_node_id, Some("/to_node_id")).await?;
    let name = &b.relation_type;
    let def = tenant_type(&schema, "/from_node_id", &from.node_type)?;
    let relation = def.relation_id(name).and_then(|r| def.relation(r));
    let Some(relation) = relation else {
        return Err(Problem::invalid("/relation_type", format!("`{}` has no relation `{name}`", from.node_type)));
    };
    if relation.is_permission() || name == "tenant" {
        return Err(Problem::invalid("/relation_type", format!("`{}#{name}` is not a relation an edge can write", from.node_type)));
    }
    let to_ty = schema.type_id(&to.node_type);
    if !relation.allowed_subjects().iter().any(|a| Some(a.type_id) == to_ty && a.kind == AllowedKind::Object) {
        return Err(Problem::invalid("/relation_type", format!("`{}#{name}` does not allow `{}`", from.node_type, to.node_type)));
    }
    let edge = sqlx::query_as::<_, Edge>(&format!(
        "INSERT INTO arbiter_admin.graph_edges (id, tenant_id, from_node_id, to_node_id, relation_type, properties)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {EDGE_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(from.id)
    .bind(to.id)
    .bind(name)
    .bind(&props)
    .fetch_one(tx.conn())
    .await?;
    tx.feed.touch(&object(&from), name, &object(&to));
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "graph_edge.create",
        target_type: "graph_edge",
        target_id: edge.id.to_string(),
        before: None,
        after: snapshot(&edge),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &edge).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &edge, Some(revision), Some(edge.version)))
}

/// List a tenant's edges; filter by `from_node_id`, `to_node_id` and `relation_type`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/graph/edges", tag = "graph",
    params(("tenant_id" = Uuid, Path), PageParams, ("from_node_id" = Option<Uuid>, Query), ("to_node_id" = Option<Uuid>, Query),
        ("relation_type" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Edge>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_edges(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["from_node_id", "to_node_id", "relation_type"])?;
    let uuid = |name: &'static str| {
        q.filter(name).map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request(name, "is not a UUID"))).transpose()
    };
    let (from, to) = (uuid("from_node_id")?, uuid("to_node_id")?);
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, Edge>(&format!(
        "SELECT {EDGE_COLUMNS} FROM arbiter_admin.graph_edges WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::uuid IS NULL OR from_node_id = $3) AND ($4::uuid IS NULL OR to_node_id = $4)
           AND ($5::text IS NULL OR relation_type = $5) ORDER BY id LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(from)
    .bind(to)
    .bind(q.filter("relation_type"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |e| e.id), None, None))
}

/// Read an edge.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/graph/edges/{edge_id}", tag = "graph", params(("tenant_id" = Uuid, Path), ("edge_id" = Uuid, Path)),
    responses((status = 200, body = Edge), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_edge(State(app): State<App>, caller: Caller, P((tenant_id, edge_id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let edge = fetch_edge(&mut tx, tenant_id, edge_id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &edge, None, Some(edge.version)))
}

/// Replace an edge's properties. `If-Match` guards against lost updates.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/graph/edges/{edge_id}", tag = "graph", request_body = UpdateProperties,
    params(("tenant_id" = Uuid, Path), ("edge_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Edge), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_edge(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, edge_id)): P<(Uuid, Uuid)>,
    body: JsonBody<UpdateProperties>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let props = properties(Some(&body.value.properties))?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch_edge(&mut tx, tenant_id, edge_id).await?;
    check_if_match(&headers, before.version)?;
    let after = sqlx::query_as::<_, Edge>(&format!(
        "UPDATE arbiter_admin.graph_edges SET properties = $3, version = version + 1, updated_at = now()
         WHERE id = $1 AND tenant_id = $2 RETURNING {EDGE_COLUMNS}"
    ))
    .bind(edge_id)
    .bind(tenant_id)
    .bind(&props)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "graph_edge.update",
        target_type: "graph_edge",
        target_id: edge_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete an edge: its relationship goes in the same revision.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/graph/edges/{edge_id}", tag = "graph",
    params(("tenant_id" = Uuid, Path), ("edge_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_edge(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, edge_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch_edge(&mut tx, tenant_id, edge_id).await?;
    check_if_match(&headers, before.version)?;
    let from = fetch_node(&mut tx, tenant_id, before.from_node_id, None).await?;
    let to = fetch_node(&mut tx, tenant_id, before.to_node_id, None).await?;
    tx.feed.delete(&object(&from), &before.relation_type, &object(&to));
    sqlx::query("DELETE FROM arbiter_admin.graph_edges WHERE id = $1 AND tenant_id = $2")
        .bind(edge_id)
        .bind(tenant_id)
        .execute(tx.conn())
        .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "graph_edge.delete",
        target_type: "graph_edge",
        target_id: edge_id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}
