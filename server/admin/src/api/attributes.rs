//! Attributes (seed `attributes`, `attribute_values`, `subject_attributes`,
//! `resource_attributes`): definitions of Cedar attributes on one schema type, the values
//! each may take, and the values users, groups and the tenant's application objects hold.
//!
//! Definitions and values are platform-wide (operators write them; tenants read them),
//! since Cedar policies name the attributes: a definition declares `name` on its type in
//! the PDP's policy model (optional, stored: policies guard it with `has`). Its type is
//! `string`, `long`, `bool`, `decimal`, `ip`, or a set of one of them (a set's values are
//! its elements' values). A value that does not fit its definition is a 422 naming it,
//! found by the PDP's own check of an object holding it.
//!
//! A tenant assigns values: to its users and groups (`platform/user`, `platform/group`
//! attributes) and to application objects it holds (their type's attributes). An
//! object's values reach the PDP as its stored attributes, recomputed from every row in
//! the transaction that changes them: a single-valued attribute has one value per object
//! (a person is one identity: across tenants too), a set is the union of the values
//! assigned. Definitions and values in use cannot be deleted (409).

use std::str::FromStr;

use arbiter_engine::policy::CompiledPolicies;
use arbiter_engine::{AttrDecl, AttrType, ObjectAttributes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::acl::SubjectKind;
use super::labels::{catalogue_reader, tenant_object};
use super::{check_description, check_if_match, commit, no_content, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::model;
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/attributes", post(create_attribute).get(list_attributes))
        .route("/v1/attributes/{attr_id}", get(get_attribute).patch(update_attribute).delete(delete_attribute))
        .route("/v1/attributes/{attr_id}/values", post(create_value).get(list_values))
        .route("/v1/attributes/{attr_id}/values/{value_id}", delete(delete_value))
        .route("/v1/tenants/{tenant_id}/subject-attributes", post(assign_subject).get(list_subject_attributes))
        .route("/v1/tenants/{tenant_id}/subject-attributes/{subject_attribute_id}", delete(unassign_subject))
        .route("/v1/tenants/{tenant_id}/resource-attributes", post(assign_resource).get(list_resource_attributes))
        .route("/v1/tenants/{tenant_id}/resource-attributes/{resource_attribute_id}", delete(unassign_resource))
}

/// An attribute definition.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Attribute {
    pub id: Uuid,
    /// The schema type whose objects hold it (`platform/user`, `doc`).
    pub object_type: String,
    /// Cedar's name for it: `principal.<name>` / `resource.<name>`.
    pub name: String,
    pub description: String,
    /// `string`, `long`, `bool`, `decimal`, `ip`, or `set<...>` of one of them.
    pub data_type: String,
    pub created_by: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ATTRIBUTE_COLUMNS: &str = "id, object_type, name, description, data_type, created_by, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"object_type": "platform/user", "name": "department", "data_type": "string"}))]
pub struct CreateAttribute {
    #[schema(min_length = 3, max_length = 128, pattern = r"^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$")]
    pub object_type: String,
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,62}$")]
    pub name: String,
    #[schema(pattern = r"^(set<)?(string|long|bool|decimal|ip)>?$")]
    pub data_type: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "The department a person works in"}))]
pub struct UpdateAttribute {
    /// The description (the name, type and object type are fixed: policies and values
    /// depend on them).
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
}

/// A value an attribute may take.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AttributeValue {
    pub id: Uuid,
    pub attr_id: Uuid,
    /// A JSON value of the attribute's type (for a set, of its elements' type).
    #[schema(value_type = Object)]
    pub value: Value,
    pub description: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

const VALUE_COLUMNS: &str = "id, attr_id, value, description, created_by, created_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"value": "engineering"}))]
pub struct CreateValue {
    #[schema(value_type = Object)]
    pub value: Value,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
}

/// A value a user or group holds.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct SubjectAttribute {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `user` or `group`.
    pub subject_type: String,
    pub subject_id: Uuid,
    pub attr_id: Uuid,
    pub value_id: Uuid,
    pub assigned_by: String,
    pub assigned_at: DateTime<Utc>,
}

const SUBJECT_COLUMNS: &str = "id, tenant_id, subject_type, subject_id, attr_id, value_id, assigned_by, assigned_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"subject_type": "user", "subject_id": "7b0c8f1e-8c43-4f5e-9a53-0c6d1c1d2a11", "value_id": "0d1f6a3e-2b1c-4c1e-8f3e-5b0e4c7a9d21"}))]
pub struct AssignSubject {
    pub subject_type: SubjectKind,
    pub subject_id: Uuid,
    pub value_id: Uuid,
}

/// A value an application object holds.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ResourceAttribute {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub resource_type: String,
    pub resource_id: String,
    pub attr_id: Uuid,
    pub value_id: Uuid,
    pub assigned_by: String,
    pub assigned_at: DateTime<Utc>,
}

const RESOURCE_COLUMNS: &str = "id, tenant_id, resource_type, resource_id, attr_id, value_id, assigned_by, assigned_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"resource_type": "doc", "resource_id": "roadmap", "value_id": "0d1f6a3e-2b1c-4c1e-8f3e-5b0e4c7a9d21"}))]
pub struct AssignResource {
    #[schema(min_length = 3, max_length = 128, pattern = r"^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$")]
    pub resource_type: String,
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[A-Za-z0-9/_|\-=+]+$")]
    pub resource_id: String,
    pub value_id: Uuid,
}

/// A definition's type: a scalar or a set of one (records are declared with the PDP's
/// `WriteAttributeSchema`).
fn data_type(s: &str) -> ApiResult<AttrType> {
    let ty = AttrType::from_str(s).map_err(|e| Problem::invalid("/data_type", e))?;
    let scalar = |t: &AttrType| matches!(t, AttrType::String | AttrType::Long | AttrType::Bool | AttrType::Decimal | AttrType::Ip);
    match &ty {
        t if scalar(t) => Ok(ty),
        AttrType::Set(e) if scalar(e) => Ok(ty),
        _ => Err(Problem::invalid("/data_type", format!("`{s}` is not `string`, `long`, `bool`, `decimal`, `ip` or a `set<...>` of one"))),
    }
}

fn check_attribute_name(name: &str) -> ApiResult<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid("/name", "`name` must be 1 to 63 lower-case letters, digits and `_`, starting with a letter"))
    }
}

async fn fetch(tx: &mut Tx, id: Uuid) -> ApiResult<Attribute> {
    sqlx::query_as::<_, Attribute>(&format!("SELECT {ATTRIBUTE_COLUMNS} FROM arbiter_admin.attributes WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("attribute `{id}`")))
}

/// Define an attribute on a schema type (platform operators): declared in the PDP's
/// model at the returned revision.
#[utoipa::path(post, path = "/v1/attributes", tag = "attributes", request_body = CreateAttribute,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Attribute), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_attribute(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreateAttribute>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    if !b.object_type.split('/').all(arbiter_schema::is_valid_identifier) {
        return Err(Problem::invalid("/object_type", format!("`{}` is not a type name", arbiter_schema::shorten(&b.object_type))));
    }
    check_attribute_name(&b.name)?;
    let ty = data_type(&b.data_type)?;
    check_description("description", &b.description, 2000)?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/attributes", &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let schema = model::live_schema(&mut tx, "/object_type").await?;
    if schema.definition_by_name(&b.object_type).is_none() {
        return Err(Problem::invalid("/object_type", format!("the schema has no definition `{}`", b.object_type)));
    }
    let row = sqlx::query_as::<_, Attribute>(&format!(
        "INSERT INTO arbiter_admin.attributes (id, object_type, name, description, data_type, created_by) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {ATTRIBUTE_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(&b.object_type)
    .bind(&b.name)
    .bind(&b.description)
    .bind(ty.to_string())
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    let declared = tx.model_mut("/name").await?.declarations.types.entry(b.object_type.clone()).or_default();
    if declared.contains_key(&b.name) {
        return Err(Problem::conflict("/name", format!("`{}` is already declared on `{}` (by the PDP's attribute schema)", b.name, b.object_type)));
    }
    declared.insert(b.name.clone(), AttrDecl::stored(ty, false));
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "attribute.create",
        target_type: "attribute",
        target_id: row.id.to_string(),
        before: None,
        after: snapshot(&row),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &row).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &row, Some(revision), Some(row.version)))
}

/// List the definitions (tenants may read them); filter by `object_type` or `name`.
#[utoipa::path(get, path = "/v1/attributes", tag = "attributes", params(PageParams, ("object_type" = Option<String>, Query), ("name" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Attribute>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_attributes(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["object_type", "name"])?;
    let mut tx = catalogue_reader(&app, &caller).await?;
    let rows = sqlx::query_as::<_, Attribute>(&format!(
        "SELECT {ATTRIBUTE_COLUMNS} FROM arbiter_admin.attributes WHERE ($1::uuid IS NULL OR id > $1)
           AND ($2::text IS NULL OR object_type = $2) AND ($3::text IS NULL OR name = $3) ORDER BY id LIMIT $4"
    ))
    .bind(q.page.after)
    .bind(q.filter("object_type"))
    .bind(q.filter("name"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |a| a.id), None, None))
}

/// Read a definition.
#[utoipa::path(get, path = "/v1/attributes/{attr_id}", tag = "attributes", params(("attr_id" = Uuid, Path)),
    responses((status = 200, body = Attribute), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_attribute(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    let mut tx = catalogue_reader(&app, &caller).await?;
    let row = fetch(&mut tx, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &row, None, Some(row.version)))
}

/// Change a definition's description.
#[utoipa::path(patch, path = "/v1/attributes/{attr_id}", tag = "attributes", request_body = UpdateAttribute,
    params(("attr_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Attribute), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_attribute(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(id): P<Uuid>,
    body: JsonBody<UpdateAttribute>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    if let Some(d) = &body.value.description {
        check_description("description", d, 2000)?;
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    let after = sqlx::query_as::<_, Attribute>(&format!(
        "UPDATE arbiter_admin.attributes SET description = $2, version = version + 1, updated_at = now() WHERE id = $1 RETURNING {ATTRIBUTE_COLUMNS}"
    ))
    .bind(id)
    .bind(body.value.description.as_ref().unwrap_or(&before.description))
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "attribute.update",
        target_type: "attribute",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a definition with no values (409 while it has some): its declaration leaves
/// the PDP's model.
#[utoipa::path(delete, path = "/v1/attributes/{attr_id}", tag = "attributes", params(("attr_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_attribute(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    let values: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.attribute_values WHERE attr_id = $1").bind(id).fetch_one(tx.conn()).await?;
    if values > 0 {
        return Err(Problem::conflict("/attr_id", format!("the attribute has {values} values: delete them first")));
    }
    sqlx::query("DELETE FROM arbiter_admin.attributes WHERE id = $1").bind(id).execute(tx.conn()).await?;
    let types = &mut tx.model_mut("/attr_id").await?.declarations.types;
    if let Some(fields) = types.get_mut(&before.object_type) {
        fields.remove(&before.name);
        if fields.is_empty() {
            types.remove(&before.object_type);
        }
    }
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "attribute.delete",
        target_type: "attribute",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

/// Add a value the attribute may take: it must fit the definition, as the PDP checks it
/// (a 422 naming `/value` when it does not).
#[utoipa::path(post, path = "/v1/attributes/{attr_id}/values", tag = "attributes", request_body = CreateValue,
    params(("attr_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = AttributeValue), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_value(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(attr_id): P<Uuid>,
    body: JsonBody<CreateValue>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    check_description("description", &body.value.description, 2000)?;
    if super::has_nul(&body.value.value) {
        return Err(Problem::invalid("/value", "`value` holds a NUL character"));
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let path = format!("/v1/attributes/{attr_id}/values");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let attr = fetch(&mut tx, attr_id).await?;
    check_value(&mut tx, &attr, &body.value.value).await?;
    let row = sqlx::query_as::<_, AttributeValue>(&format!(
        "INSERT INTO arbiter_admin.attribute_values (id, attr_id, value, description, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING {VALUE_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(attr_id)
    .bind(&body.value.value)
    .bind(&body.value.description)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "attribute.value.create",
        target_type: "attribute",
        target_id: attr_id.to_string(),
        before: None,
        after: snapshot(&row),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &row).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &row, Some(revision), None))
}

/// Does `value` fit `attr`? Asked of the PDP's own compiled model: an object of the
/// attribute's type holding just this value (in a set, for a set attribute).
async fn check_value(tx: &mut Tx, attr: &Attribute, value: &Value) -> ApiResult<()> {
    let schema = model::live_schema(tx, "/value").await?;
    let stored = model::stored_model(tx).await?;
    let compiled = CompiledPolicies::compile(&schema, stored).map_err(|e| Problem::internal("compile the stored policy model", &e))?;
    let held = if attr.data_type.starts_with("set<") { Value::Array(vec![value.clone()]) } else { value.clone() };
    let mut attrs = ObjectAttributes::default();
    attrs.values.insert(attr.name.clone(), held);
    compiled
        .check_object(&attr.object_type, "value-check", &attrs)
        .map_err(|e| Problem::invalid("/value", format!("the value does not fit `{}` ({}): {e}", attr.name, attr.data_type)))
}

/// The values an attribute may take.
#[utoipa::path(get, path = "/v1/attributes/{attr_id}/values", tag = "attributes", params(("attr_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<AttributeValue>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_values(State(app): State<App>, caller: Caller, P(attr_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    let mut tx = catalogue_reader(&app, &caller).await?;
    fetch(&mut tx, attr_id).await?;
    let rows = sqlx::query_as::<_, AttributeValue>(&format!(
        "SELECT {VALUE_COLUMNS} FROM arbiter_admin.attribute_values WHERE attr_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(attr_id)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |v| v.id), None, None))
}

/// Delete a value nobody holds (409 while one does).
#[utoipa::path(delete, path = "/v1/attributes/{attr_id}/values/{value_id}", tag = "attributes",
    params(("attr_id" = Uuid, Path), ("value_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_value(State(app): State<App>, caller: Caller, ctx: RequestContext, P((attr_id, value_id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM arbiter_admin.subject_attributes WHERE value_id = $1)
              + (SELECT count(*) FROM arbiter_admin.resource_attributes WHERE value_id = $1)",
    )
    .bind(value_id)
    .fetch_one(tx.conn())
    .await?;
    if held > 0 {
        return Err(Problem::conflict("/value_id", format!("{held} subjects or objects hold the value: unassign it first")));
    }
    let before = sqlx::query_as::<_, AttributeValue>(&format!(
        "DELETE FROM arbiter_admin.attribute_values WHERE id = $1 AND attr_id = $2 RETURNING {VALUE_COLUMNS}"
    ))
    .bind(value_id)
    .bind(attr_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("value `{value_id}` of attribute `{attr_id}`")))?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "attribute.value.delete",
        target_type: "attribute",
        target_id: attr_id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

/// The value `value_id` and its definition, which must be on `object_type`.
async fn value_for(tx: &mut Tx, value_id: Uuid, object_type: &str) -> ApiResult<(Uuid, bool)> {
    let row: Option<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT a.id, a.object_type, a.name, a.data_type FROM arbiter_admin.attribute_values v JOIN arbiter_admin.attributes a ON a.id = v.attr_id
         WHERE v.id = $1",
    )
    .bind(value_id)
    .fetch_optional(tx.conn())
    .await?;
    let (attr_id, on_type, name, data_type) = row.ok_or_else(|| Problem::invalid("/value_id", format!("there is no attribute value `{value_id}`")))?;
    if on_type != object_type {
        return Err(Problem::invalid("/value_id", format!("the value is of `{name}`, an attribute of `{on_type}`, not of `{object_type}`")));
    }
    Ok((attr_id, !data_type.starts_with("set<")))
}

/// Give a user or a group of the tenant a value.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/subject-attributes", tag = "attributes", request_body = AssignSubject,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = SubjectAttribute), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn assign_subject(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<AssignSubject>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/subject-attributes");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    b.subject_type.check_in_tenant(&mut tx, tenant_id, b.subject_id, "/subject_id").await?;
    let (attr_id, single) = value_for(&mut tx, b.value_id, b.subject_type.object_type()).await?;
    let row = sqlx::query_as::<_, SubjectAttribute>(&format!(
        "INSERT INTO arbiter_admin.subject_attributes (id, tenant_id, subject_type, subject_id, attr_id, value_id, single, assigned_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {SUBJECT_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(b.subject_type.as_str())
    .bind(b.subject_id)
    .bind(attr_id)
    .bind(b.value_id)
    .bind(single)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    tx.touch_object(b.subject_type.object_type(), &b.subject_id.to_string(), "/value_id");
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "subject_attribute.create",
        target_type: "subject_attribute",
        target_id: row.id.to_string(),
        before: None,
        after: snapshot(&row),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &row).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &row, Some(revision), None))
}

/// The values the tenant gave its users and groups; filter by subject or `attr_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/subject-attributes", tag = "attributes",
    params(("tenant_id" = Uuid, Path), PageParams, ("subject_type" = Option<SubjectKind>, Query), ("subject_id" = Option<Uuid>, Query), ("attr_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<SubjectAttribute>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_subject_attributes(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["subject_type", "subject_id", "attr_id"])?;
    if let Some(s) = q.filter("subject_type") {
        if !matches!(s, "user" | "group") {
            return Err(Problem::bad_request("subject_type", format!("`{}` is not `user` or `group`", arbiter_schema::shorten(s))));
        }
    }
    let uuid = |name: &str| q.filter(name).map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request(name, "is not a UUID"))).transpose();
    let (subject_id, attr_id) = (uuid("subject_id")?, uuid("attr_id")?);
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, SubjectAttribute>(&format!(
        "SELECT {SUBJECT_COLUMNS} FROM arbiter_admin.subject_attributes WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR subject_type = $3) AND ($4::uuid IS NULL OR subject_id = $4) AND ($5::uuid IS NULL OR attr_id = $5)
         ORDER BY id LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("subject_type"))
    .bind(subject_id)
    .bind(attr_id)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |a| a.id), None, None))
}

/// Take a value from a user or group: the PDP stops seeing it at the returned revision.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/subject-attributes/{subject_attribute_id}", tag = "attributes",
    params(("tenant_id" = Uuid, Path), ("subject_attribute_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn unassign_subject(State(app): State<App>, caller: Caller, ctx: RequestContext, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = sqlx::query_as::<_, SubjectAttribute>(&format!(
        "DELETE FROM arbiter_admin.subject_attributes WHERE id = $1 AND tenant_id = $2 RETURNING {SUBJECT_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("subject attribute `{id}`")))?;
    let object_type = if before.subject_type == "group" { "platform/group" } else { "platform/user" };
    tx.touch_object(object_type, &before.subject_id.to_string(), "/subject_attribute_id");
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "subject_attribute.delete",
        target_type: "subject_attribute",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

/// Give an application object the tenant holds a value (the first label or value claims
/// the object for the tenant).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/resource-attributes", tag = "attributes", request_body = AssignResource,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = ResourceAttribute), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn assign_resource(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<AssignResource>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    if !b.resource_type.split('/').all(arbiter_schema::is_valid_identifier) {
        return Err(Problem::invalid("/resource_type", format!("`{}` is not a type name", arbiter_schema::shorten(&b.resource_type))));
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/resource-attributes");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    tenant_object(&mut tx, tenant_id, &b.resource_type, &b.resource_id, "/resource_type").await?;
    let (attr_id, single) = value_for(&mut tx, b.value_id, &b.resource_type).await?;
    let row = sqlx::query_as::<_, ResourceAttribute>(&format!(
        "INSERT INTO arbiter_admin.resource_attributes (id, tenant_id, resource_type, resource_id, attr_id, value_id, single, assigned_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {RESOURCE_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(&b.resource_type)
    .bind(&b.resource_id)
    .bind(attr_id)
    .bind(b.value_id)
    .bind(single)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    tx.touch_object(&b.resource_type, &b.resource_id, "/value_id");
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "resource_attribute.create",
        target_type: "resource_attribute",
        target_id: row.id.to_string(),
        before: None,
        after: snapshot(&row),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &row).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &row, Some(revision), None))
}

/// The values the tenant gave its objects; filter by object or `attr_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/resource-attributes", tag = "attributes",
    params(("tenant_id" = Uuid, Path), PageParams, ("resource_type" = Option<String>, Query), ("resource_id" = Option<String>, Query), ("attr_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<ResourceAttribute>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_resource_attributes(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["resource_type", "resource_id", "attr_id"])?;
    let attr_id = q.filter("attr_id").map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("attr_id", "is not a UUID"))).transpose()?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, ResourceAttribute>(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM arbiter_admin.resource_attributes WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR resource_type = $3) AND ($4::text IS NULL OR resource_id = $4) AND ($5::uuid IS NULL OR attr_id = $5)
         ORDER BY id LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("resource_type"))
    .bind(q.filter("resource_id"))
    .bind(attr_id)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |a| a.id), None, None))
}

/// Take a value from an object: the PDP stops seeing it at the returned revision.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/resource-attributes/{resource_attribute_id}", tag = "attributes",
    params(("tenant_id" = Uuid, Path), ("resource_attribute_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn unassign_resource(State(app): State<App>, caller: Caller, ctx: RequestContext, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = sqlx::query_as::<_, ResourceAttribute>(&format!(
        "DELETE FROM arbiter_admin.resource_attributes WHERE id = $1 AND tenant_id = $2 RETURNING {RESOURCE_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("resource attribute `{id}`")))?;
    tx.touch_object(&before.resource_type, &before.resource_id, "/resource_attribute_id");
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "resource_attribute.delete",
        target_type: "resource_attribute",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_types_are_scalars_or_sets_of_them() {
        for ok in ["string", "long", "bool", "decimal", "ip", "set<string>", "set<ip>"] {
            assert_eq!(data_type(ok).unwrap().to_string(), ok);
        }
        for bad in ["set<set<long>>", "{a: long}", "text", "", "set<"] {
            assert_eq!(data_type(bad).unwrap_err().field.as_deref(), Some("/data_type"), "{bad}");
        }
    }
}
