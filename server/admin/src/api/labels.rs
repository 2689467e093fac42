//! Security labels (seed `security_labels`), their hierarchy (`label_hierarchy`) and the
//! labels on objects (`object_labels`).
//!
//! Labels are platform-wide (operators write them; tenants read them): Cedar policies
//! name them (`arbiter::Label::"secret"`), so they are one namespace. The label table
//! with its hierarchy is the PDP's label set whole: every change rewrites the model's
//! labels, compiled before the commit (a cycle in the hierarchy is a 422). A parent
//! dominates its child: in Cedar the child is `in` the parent.
//!
//! An object label puts a label on an application object the tenant holds (its type has
//! `relation tenant: platform/tenant`; the first label or attribute claims it). The
//! object's labels reach the PDP as its stored attributes; Cedar sees
//! `resource.labels` and `resource.label_level` (the highest level). Deleting a label
//! removes it from every object in the same revision.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::acl::{claim_object, tenant_type};
use super::{check_description, check_if_match, commit, no_content, reply, whole_number, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::model;
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/security-labels", post(create_label).get(list_labels))
        .route("/v1/security-labels/{label_id}", get(get_label).patch(update_label).delete(delete_label))
        .route("/v1/security-labels/{label_id}/parents", get(list_parents))
        .route("/v1/security-labels/{label_id}/parents/{parent_id}", put(add_parent).delete(remove_parent))
        .route("/v1/tenants/{tenant_id}/object-labels", post(create_object_label).get(list_object_labels))
        .route("/v1/tenants/{tenant_id}/object-labels/{object_label_id}", delete(delete_object_label))
}

/// A security label.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct SecurityLabel {
    pub id: Uuid,
    /// Cedar's name for it: `arbiter::Label::"<name>"`.
    pub name: String,
    /// Higher is more sensitive (0 to 1,000,000).
    pub level: i32,
    pub description: String,
    pub created_by: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const LABEL_COLUMNS: &str = "id, name, level, description, created_by, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "secret", "level": 3, "description": "Need to know"}))]
pub struct CreateLabel {
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,62}$")]
    pub name: String,
    #[serde(deserialize_with = "whole_number")]
    #[schema(value_type = i32, minimum = 0, maximum = 1000000)]
    pub level: Option<i32>,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"level": 4}))]
pub struct UpdateLabel {
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 1000000)]
    pub level: Option<i32>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
}

/// A label on an object.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ObjectLabel {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub object_type: String,
    pub object_id: String,
    pub label_id: Uuid,
    pub assigned_by: String,
    pub assigned_at: DateTime<Utc>,
}

const OBJECT_LABEL_COLUMNS: &str = "id, tenant_id, object_type, object_id, label_id, assigned_by, assigned_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"object_type": "doc", "object_id": "roadmap", "label_id": "7b0c8f1e-8c43-4f5e-9a53-0c6d1c1d2a11"}))]
pub struct CreateObjectLabel {
    #[schema(min_length = 3, max_length = 128, pattern = r"^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$")]
    pub object_type: String,
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[A-Za-z0-9/_|\-=+]+$")]
    pub object_id: String,
    pub label_id: Uuid,
}

fn check_label_name(name: &str) -> ApiResult<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid("/name", "`name` must be 1 to 63 lower-case letters, digits, `-` and `_`, starting with a letter"))
    }
}

fn check_level(level: Option<i32>) -> ApiResult<()> {
    match level {
        Some(l) if !(0..=1_000_000).contains(&l) => Err(Problem::invalid("/level", "`level` must be 0 to 1,000,000")),
        _ => Ok(()),
    }
}

async fn fetch(tx: &mut Tx, id: Uuid) -> ApiResult<SecurityLabel> {
    sqlx::query_as::<_, SecurityLabel>(&format!("SELECT {LABEL_COLUMNS} FROM arbiter_admin.security_labels WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("security label `{id}`")))
}

/// The model's labels become the table's, checked at flush (`field` is blamed).
async fn feed_labels(tx: &mut Tx, field: &str) -> ApiResult<()> {
    let labels = model::label_defs(tx).await?;
    tx.model_mut(field).await?.labels = labels;
    Ok(())
}

async fn audit_label(tx: &mut Tx, caller: &Caller, ctx: &RequestContext, action: &str, id: Uuid, before: Option<&SecurityLabel>, after: Option<&SecurityLabel>) -> ApiResult<()> {
    audit::record(tx, caller, ctx, Entry {
        tenant: None,
        action,
        target_type: "security_label",
        target_id: id.to_string(),
        before: before.and_then(snapshot),
        after: after.and_then(snapshot),
    })
    .await
}

/// Define a security label (platform operators).
#[utoipa::path(post, path = "/v1/security-labels", tag = "labels", request_body = CreateLabel,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = SecurityLabel), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_label(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreateLabel>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    check_label_name(&b.name)?;
    let level = b.level.ok_or_else(|| Problem::invalid("/level", "`level` is required"))?;
    check_level(Some(level))?;
    check_description("description", &b.description, 2000)?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/security-labels", &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let label = sqlx::query_as::<_, SecurityLabel>(&format!(
        "INSERT INTO arbiter_admin.security_labels (id, name, level, description, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING {LABEL_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(&b.name)
    .bind(level)
    .bind(&b.description)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    feed_labels(&mut tx, "/name").await?;
    audit_label(&mut tx, &caller, &ctx, "security_label.create", label.id, None, Some(&label)).await?;
    idem.save(&mut tx, StatusCode::CREATED, &label).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &label, Some(revision), Some(label.version)))
}

/// List the security labels (tenants may read them); filter by `name`.
#[utoipa::path(get, path = "/v1/security-labels", tag = "labels", params(PageParams, ("name" = Option<String>, Query)),
    responses((status = 200, body = PageOf<SecurityLabel>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_labels(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["name"])?;
    let mut tx = catalogue_reader(&app, &caller).await?;
    let rows = sqlx::query_as::<_, SecurityLabel>(&format!(
        "SELECT {LABEL_COLUMNS} FROM arbiter_admin.security_labels WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR name = $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(q.page.after)
    .bind(q.filter("name"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |l| l.id), None, None))
}

/// A transaction that reads the platform-wide catalogue: operators in the platform
/// scope, a tenant's caller (with `view`) in its tenant's.
pub(super) async fn catalogue_reader(app: &App, caller: &Caller) -> ApiResult<Tx> {
    match caller.tenant {
        Some(t) => {
            app.authorize(caller, Need::Tenant(t, "view")).await?;
            app.db.begin(Scope::Tenant(t)).await
        }
        None => {
            app.authorize(caller, Need::Platform).await?;
            app.db.begin(Scope::Platform).await
        }
    }
}

/// Read a security label.
#[utoipa::path(get, path = "/v1/security-labels/{label_id}", tag = "labels", params(("label_id" = Uuid, Path)),
    responses((status = 200, body = SecurityLabel), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_label(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    let mut tx = catalogue_reader(&app, &caller).await?;
    let label = fetch(&mut tx, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &label, None, Some(label.version)))
}

/// Change a label's level or description (its name is what policies say: fixed).
#[utoipa::path(patch, path = "/v1/security-labels/{label_id}", tag = "labels", request_body = UpdateLabel,
    params(("label_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = SecurityLabel), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_label(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(id): P<Uuid>,
    body: JsonBody<UpdateLabel>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    check_level(body.value.level)?;
    if let Some(d) = &body.value.description {
        check_description("description", d, 2000)?;
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    let after = sqlx::query_as::<_, SecurityLabel>(&format!(
        "UPDATE arbiter_admin.security_labels SET level = $2, description = $3, version = version + 1, updated_at = now() WHERE id = $1
         RETURNING {LABEL_COLUMNS}"
    ))
    .bind(id)
    .bind(body.value.level.unwrap_or(before.level))
    .bind(body.value.description.as_ref().unwrap_or(&before.description))
    .fetch_one(tx.conn())
    .await?;
    feed_labels(&mut tx, "/level").await?;
    audit_label(&mut tx, &caller, &ctx, "security_label.update", id, Some(&before), Some(&after)).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a label: it leaves every object that carries it and the hierarchy, in the
/// same revision.
#[utoipa::path(delete, path = "/v1/security-labels/{label_id}", tag = "labels", params(("label_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_label(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    let labelled: Vec<(String, String)> =
        sqlx::query_as("DELETE FROM arbiter_admin.object_labels WHERE label_id = $1 RETURNING object_type, object_id")
            .bind(id)
            .fetch_all(tx.conn())
            .await?;
    for (object_type, object_id) in &labelled {
        tx.touch_object(object_type, object_id, "/label_id");
    }
    sqlx::query("DELETE FROM arbiter_admin.security_labels WHERE id = $1").bind(id).execute(tx.conn()).await?;
    feed_labels(&mut tx, "/label_id").await?;
    audit_label(&mut tx, &caller, &ctx, "security_label.delete", id, Some(&before), None).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

/// The labels that dominate this one directly (its parents).
#[utoipa::path(get, path = "/v1/security-labels/{label_id}/parents", tag = "labels", params(("label_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<SecurityLabel>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_parents(State(app): State<App>, caller: Caller, P(id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    let mut tx = catalogue_reader(&app, &caller).await?;
    fetch(&mut tx, id).await?;
    let rows = sqlx::query_as::<_, SecurityLabel>(&format!(
        "SELECT {LABEL_COLUMNS} FROM arbiter_admin.security_labels WHERE id IN
           (SELECT parent_label_id FROM arbiter_admin.label_hierarchy WHERE child_label_id = $1)
           AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(id)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |l| l.id), None, None))
}

/// Make `parent_id` dominate this label. A cycle is a 422.
#[utoipa::path(put, path = "/v1/security-labels/{label_id}/parents/{parent_id}", tag = "labels",
    params(("label_id" = Uuid, Path), ("parent_id" = Uuid, Path)),
    responses((status = 201, body = SecurityLabel), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn add_parent(State(app): State<App>, caller: Caller, ctx: RequestContext, P((id, parent)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    if id == parent {
        return Err(Problem::invalid("/parent_label_id", "a label cannot be its own parent"));
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let child = fetch(&mut tx, id).await?;
    let parent_label = fetch(&mut tx, parent).await?;
    sqlx::query("INSERT INTO arbiter_admin.label_hierarchy (parent_label_id, child_label_id) VALUES ($1, $2)")
        .bind(parent)
        .bind(id)
        .execute(tx.conn())
        .await?;
    feed_labels(&mut tx, "/parent_label_id").await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "security_label.parent.add",
        target_type: "security_label",
        target_id: id.to_string(),
        before: None,
        after: Some(serde_json::json!({ "parent_label_id": parent, "parent": parent_label.name, "child": child.name })),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &parent_label, Some(revision), None))
}

/// Stop `parent_id` dominating this label.
#[utoipa::path(delete, path = "/v1/security-labels/{label_id}/parents/{parent_id}", tag = "labels",
    params(("label_id" = Uuid, Path), ("parent_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_parent(State(app): State<App>, caller: Caller, ctx: RequestContext, P((id, parent)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let removed = sqlx::query("DELETE FROM arbiter_admin.label_hierarchy WHERE parent_label_id = $1 AND child_label_id = $2")
        .bind(parent)
        .bind(id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(Problem::not_found(format!("parent `{parent}` of security label `{id}`")));
    }
    feed_labels(&mut tx, "/parent_label_id").await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "security_label.parent.remove",
        target_type: "security_label",
        target_id: id.to_string(),
        before: Some(serde_json::json!({ "parent_label_id": parent })),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

/// Checks an application object a tenant labels or gives attributes to, and claims it
/// for the tenant (a 409 when another tenant holds it).
pub(super) async fn tenant_object(tx: &mut Tx, tenant_id: Uuid, object_type: &str, object_id: &str, type_field: &str) -> ApiResult<()> {
    if let Some(problem) = arbiter_schema::object_id_problem(object_id) {
        return Err(Problem::invalid(type_field.replace("type", "id"), problem));
    }
    let schema = model::live_schema(tx, type_field).await?;
    tenant_type(&schema, type_field, object_type)?;
    claim_object(tx, tenant_id, object_type, object_id).await
}

/// Label an object the tenant holds.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/object-labels", tag = "labels", request_body = CreateObjectLabel,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = ObjectLabel), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_object_label(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateObjectLabel>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/object-labels");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    tenant_object(&mut tx, tenant_id, &b.object_type, &b.object_id, "/object_type").await?;
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM arbiter_admin.security_labels WHERE id = $1)")
        .bind(b.label_id)
        .fetch_one(tx.conn())
        .await?;
    if !known {
        return Err(Problem::invalid("/label_id", format!("there is no security label `{}`", b.label_id)));
    }
    let row = sqlx::query_as::<_, ObjectLabel>(&format!(
        "INSERT INTO arbiter_admin.object_labels (id, tenant_id, object_type, object_id, label_id, assigned_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {OBJECT_LABEL_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(&b.object_type)
    .bind(&b.object_id)
    .bind(b.label_id)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    tx.touch_object(&b.object_type, &b.object_id, "/label_id");
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "object_label.create",
        target_type: "object_label",
        target_id: row.id.to_string(),
        before: None,
        after: snapshot(&row),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &row).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &row, Some(revision), None))
}

/// A tenant's object labels; filter by object (`object_type`, `object_id`) or `label_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/object-labels", tag = "labels",
    params(("tenant_id" = Uuid, Path), PageParams, ("object_type" = Option<String>, Query), ("object_id" = Option<String>, Query), ("label_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<ObjectLabel>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_object_labels(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["object_type", "object_id", "label_id"])?;
    let label_id = q.filter("label_id").map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("label_id", "is not a UUID"))).transpose()?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, ObjectLabel>(&format!(
        "SELECT {OBJECT_LABEL_COLUMNS} FROM arbiter_admin.object_labels WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR object_type = $3) AND ($4::text IS NULL OR object_id = $4) AND ($5::uuid IS NULL OR label_id = $5)
         ORDER BY id LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("object_type"))
    .bind(q.filter("object_id"))
    .bind(label_id)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |l| l.id), None, None))
}

/// Take a label off an object: the PDP stops seeing it at the returned revision.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/object-labels/{object_label_id}", tag = "labels",
    params(("tenant_id" = Uuid, Path), ("object_label_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_object_label(State(app): State<App>, caller: Caller, ctx: RequestContext, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = sqlx::query_as::<_, ObjectLabel>(&format!(
        "DELETE FROM arbiter_admin.object_labels WHERE id = $1 AND tenant_id = $2 RETURNING {OBJECT_LABEL_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("object label `{id}`")))?;
    tx.touch_object(&before.object_type, &before.object_id, "/object_label_id");
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "object_label.delete",
        target_type: "object_label",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}
