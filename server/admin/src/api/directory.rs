//! The rest of the directory: a tenant's departments (a tree; organisational, they
//! grant nothing), a user's preferences (per tenant, or global ones that only
//! operators write), a person's contacts, and the soft delete of a person.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_if_match, check_description, check_text, commit, no_content, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/departments", post(create_department).get(list_departments))
        .route("/v1/tenants/{tenant_id}/departments/{department_id}", get(get_department).patch(update_department).delete(delete_department))
        .route("/v1/tenants/{tenant_id}/users/{user_id}/preferences", get(list_preferences))
        .route("/v1/tenants/{tenant_id}/users/{user_id}/preferences/{key}", put(set_tenant_preference).delete(delete_tenant_preference))
        .route("/v1/users/{user_id}/preferences/{key}", put(set_global_preference).delete(delete_global_preference))
        .route("/v1/tenants/{tenant_id}/users/{user_id}/contacts", post(add_contact).get(list_contacts))
        .route("/v1/tenants/{tenant_id}/users/{user_id}/contacts/{contact_id}", delete(remove_contact))
        .route("/v1/users/{user_id}", delete(delete_person))
}


// ---------------------------------------------------------------------------------
// Departments

/// A department of a tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Department {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub description: String,
    pub parent_id: Option<Uuid>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DEPARTMENT_COLUMNS: &str = "id, tenant_id, name, description, parent_id, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Research", "description": "R&D"}))]
pub struct CreateDepartment {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    pub parent_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Research and Development"}))]
pub struct UpdateDepartment {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    /// A new parent, or `null` for none.
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub parent_id: Option<Option<Uuid>>,
}

async fn fetch_department(tx: &mut Tx, tenant: Uuid, id: Uuid) -> ApiResult<Department> {
    sqlx::query_as::<_, Department>(&format!("SELECT {DEPARTMENT_COLUMNS} FROM arbiter_admin.departments WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("department `{id}`")))
}

/// The parent exists in the tenant and is not the department or below it.
async fn check_department_parent(tx: &mut Tx, tenant: Uuid, id: Option<Uuid>, parent: Uuid) -> ApiResult<()> {
    fetch_department(tx, tenant, parent)
        .await
        .map_err(|_| Problem::invalid("/parent_id", format!("department `{parent}` does not exist in this tenant")))?;
    if let Some(id) = id {
        tx.lock_nesting("departments", tenant).await?;
        let cycle: bool = sqlx::query_scalar(
            "WITH RECURSIVE up(id) AS (SELECT $1::uuid UNION SELECT d.parent_id FROM arbiter_admin.departments d JOIN up ON d.id = up.id
                                       WHERE d.parent_id IS NOT NULL)
             SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
        )
        .bind(parent)
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
        if cycle {
            return Err(Problem::invalid("/parent_id", "the department would be inside itself"));
        }
    }
    Ok(())
}

/// Create a department.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/departments", tag = "users", request_body = CreateDepartment,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Department), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_department(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(t): P<Uuid>, body: JsonBody<CreateDepartment>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "manage_users")).await?;
    let b = &body.value;
    check_text("name", &b.name, 200, false)?;
    check_description("description", &b.description, 2000)?;
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    let claim = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &format!("/v1/tenants/{t}/departments"), &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    if let Some(p) = b.parent_id {
        check_department_parent(&mut tx, t, None, p).await?;
    }
    let d = sqlx::query_as::<_, Department>(&format!(
        "INSERT INTO arbiter_admin.departments (id, tenant_id, name, description, parent_id) VALUES ($1, $2, $3, $4, $5) RETURNING {DEPARTMENT_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(t)
    .bind(&b.name)
    .bind(&b.description)
    .bind(b.parent_id)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: Some(t), action: "department.create", target_type: "department", target_id: d.id.to_string(), before: None, after: snapshot(&d) }).await?;
    claim.save(&mut tx, StatusCode::CREATED, &d).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &d, Some(revision), Some(d.version)))
}

/// List a tenant's departments; `parent_id` filters.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/departments", tag = "users", params(("tenant_id" = Uuid, Path), PageParams, ("parent_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<Department>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_departments(State(app): State<App>, caller: Caller, P(t): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["parent_id"])?;
    let parent = q
        .filter("parent_id")
        .map(|v| v.parse::<Uuid>().map_err(|_| Problem::bad_request("parent_id", "`parent_id` is not a UUID")))
        .transpose()?;
    app.authorize(&caller, Need::Tenant(t, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    let rows = sqlx::query_as::<_, Department>(&format!(
        "SELECT {DEPARTMENT_COLUMNS} FROM arbiter_admin.departments WHERE tenant_id = $1 AND ($2::uuid IS NULL OR parent_id = $2)
         AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ))
    .bind(t)
    .bind(parent)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |d| d.id), None, None))
}

/// Read a department.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/departments/{department_id}", tag = "users", params(("tenant_id" = Uuid, Path), ("department_id" = Uuid, Path)),
    responses((status = 200, body = Department), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_department(State(app): State<App>, caller: Caller, P((t, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    let d = fetch_department(&mut tx, t, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &d, None, Some(d.version)))
}

/// Rename, describe or move a department.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/departments/{department_id}", tag = "users", request_body = UpdateDepartment,
    params(("tenant_id" = Uuid, Path), ("department_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Department), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_department(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, id)): P<(Uuid, Uuid)>, body: JsonBody<UpdateDepartment>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "manage_users")).await?;
    let b = &body.value;
    if let Some(n) = &b.name {
        check_text("name", n, 200, false)?;
    }
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    let before = fetch_department(&mut tx, t, id).await?;
    check_if_match(&headers, before.version)?;
    if let Some(Some(p)) = b.parent_id {
        check_department_parent(&mut tx, t, Some(id), p).await?;
    }
    let parent = b.parent_id.unwrap_or(before.parent_id);
    let after = sqlx::query_as::<_, Department>(&format!(
        "UPDATE arbiter_admin.departments SET name = coalesce($3, name), description = coalesce($4, description), parent_id = $5,
            version = version + 1, updated_at = now() WHERE id = $1 AND tenant_id = $2 RETURNING {DEPARTMENT_COLUMNS}"
    ))
    .bind(id)
    .bind(t)
    .bind(&b.name)
    .bind(&b.description)
    .bind(parent)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: Some(t), action: "department.update", target_type: "department", target_id: id.to_string(), before: snapshot(&before), after: snapshot(&after) }).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a department with no sub-departments; its users keep their membership.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/departments/{department_id}", tag = "users",
    params(("tenant_id" = Uuid, Path), ("department_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_department(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    let before = fetch_department(&mut tx, t, id).await?;
    check_if_match(&headers, before.version)?;
    let children: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.departments WHERE parent_id = $1")
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    if children > 0 {
        return Err(Problem::conflict("department_id", format!("the department has {children} sub-departments: move or delete them first")));
    }
    sqlx::query("DELETE FROM arbiter_admin.departments WHERE id = $1 AND tenant_id = $2").bind(id).bind(t).execute(tx.conn()).await?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: Some(t), action: "department.delete", target_type: "department", target_id: id.to_string(), before: snapshot(&before), after: None }).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

// ---------------------------------------------------------------------------------
// Preferences

/// A preference: in one tenant, or global (`tenant_id` absent).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Preference {
    pub user_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub key: String,
    pub value: Value,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"value": "dark"}))]
pub struct SetPreference {
    /// Any JSON value (at most 16 KiB).
    #[schema(value_type = super::AnyJson)]
    pub value: Value,
}

fn check_key(key: &str) -> ApiResult<()> {
    if !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Ok(())
    } else {
        Err(Problem::bad_request("key", "a preference `key` is 1 to 128 of letters, digits, `.`, `_` and `-`"))
    }
}

fn check_value(v: &Value) -> ApiResult<()> {
    if v.to_string().len() > 16 * 1024 {
        return Err(Problem::invalid("/value", "`value` is larger than 16 KiB"));
    }
    if super::has_nul(v) {
        return Err(Problem::invalid("/value", "`value` holds a NUL character (\\u0000), which cannot be stored"));
    }
    Ok(())
}

/// The user must be one of the tenant's (row-level security hides the others).
async fn tenant_user(tx: &mut Tx, tenant: Uuid, user: Uuid) -> ApiResult<()> {
    super::users::fetch(tx, tenant, user).await.map(|_| ())
}

async fn set_preference(app: &App, caller: &Caller, ctx: &RequestContext, tenant: Option<Uuid>, user: Uuid, key: String, value: Value) -> ApiResult<Response> {
    check_key(&key)?;
    check_value(&value)?;
    let mut tx = app.db.begin(tenant.map(Scope::Tenant).unwrap_or(Scope::Platform)).await?;
    match tenant {
        Some(t) => tenant_user(&mut tx, t, user).await?,
        None => {
            let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM arbiter_admin.users WHERE id = $1 AND status <> 'deleted'")
                .bind(user)
                .fetch_optional(tx.conn())
                .await?;
            exists.ok_or_else(|| Problem::not_found(format!("user `{user}`")))?;
        }
    }
    let before = sqlx::query_as::<_, Preference>(
        "DELETE FROM arbiter_admin.user_preferences WHERE user_id = $1 AND tenant_id IS NOT DISTINCT FROM $2 AND key = $3
         RETURNING user_id, tenant_id, key, value, updated_at",
    )
    .bind(user)
    .bind(tenant)
    .bind(&key)
    .fetch_optional(tx.conn())
    .await?;
    let after = sqlx::query_as::<_, Preference>(
        "INSERT INTO arbiter_admin.user_preferences (user_id, tenant_id, key, value) VALUES ($1, $2, $3, $4)
         RETURNING user_id, tenant_id, key, value, updated_at",
    )
    .bind(user)
    .bind(tenant)
    .bind(&key)
    .bind(&value)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, caller, ctx, Entry { tenant, action: "user.preference.set", target_type: "user", target_id: user.to_string(), before: snapshot(&before), after: snapshot(&after) }).await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), None))
}

async fn delete_preference(app: &App, caller: &Caller, ctx: &RequestContext, tenant: Option<Uuid>, user: Uuid, key: String) -> ApiResult<Response> {
    check_key(&key)?;
    let mut tx = app.db.begin(tenant.map(Scope::Tenant).unwrap_or(Scope::Platform)).await?;
    if let Some(t) = tenant {
        tenant_user(&mut tx, t, user).await?;
    }
    let gone = sqlx::query_as::<_, Preference>(
        "DELETE FROM arbiter_admin.user_preferences WHERE user_id = $1 AND tenant_id IS NOT DISTINCT FROM $2 AND key = $3
         RETURNING user_id, tenant_id, key, value, updated_at",
    )
    .bind(user)
    .bind(tenant)
    .bind(&key)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("preference `{key}`")))?;
    audit::record(&mut tx, caller, ctx, Entry { tenant, action: "user.preference.delete", target_type: "user", target_id: user.to_string(), before: snapshot(&gone), after: None }).await?;
    let revision = commit(app, tx).await?;
    Ok(no_content(revision))
}

/// A user's preferences as the tenant sees them: the tenant's and the global ones.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/users/{user_id}/preferences", tag = "users", params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Preference>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_preferences(State(app): State<App>, caller: Caller, P((t, u)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    tenant_user(&mut tx, t, u).await?;
    let rows = sqlx::query_as::<_, Preference>(
        "SELECT user_id, tenant_id, key, value, updated_at FROM arbiter_admin.user_preferences WHERE user_id = $1
         AND (tenant_id = $2 OR tenant_id IS NULL) ORDER BY tenant_id NULLS FIRST, key LIMIT 1000",
    )
    .bind(u)
    .bind(t)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &rows, None, None))
}

/// Set a user's preference in this tenant.
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/users/{user_id}/preferences/{key}", tag = "users", request_body = SetPreference,
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path), ("key" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 200, body = Preference), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_tenant_preference(State(app): State<App>, caller: Caller, ctx: RequestContext, P((t, u, key)): P<(Uuid, Uuid, String)>, body: JsonBody<SetPreference>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "manage_users")).await?;
    set_preference(&app, &caller, &ctx, Some(t), u, key, body.value.value).await
}

/// Remove a user's preference in this tenant.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/users/{user_id}/preferences/{key}", tag = "users",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path), ("key" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_tenant_preference(State(app): State<App>, caller: Caller, ctx: RequestContext, P((t, u, key)): P<(Uuid, Uuid, String)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "manage_users")).await?;
    delete_preference(&app, &caller, &ctx, Some(t), u, key).await
}

/// Set a person's global preference (platform operators; users themselves once login exists).
#[utoipa::path(put, path = "/v1/users/{user_id}/preferences/{key}", tag = "users", request_body = SetPreference,
    params(("user_id" = Uuid, Path), ("key" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 200, body = Preference), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_global_preference(State(app): State<App>, caller: Caller, ctx: RequestContext, P((u, key)): P<(Uuid, String)>, body: JsonBody<SetPreference>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    set_preference(&app, &caller, &ctx, None, u, key, body.value.value).await
}

/// Remove a person's global preference (platform operators).
#[utoipa::path(delete, path = "/v1/users/{user_id}/preferences/{key}", tag = "users", params(("user_id" = Uuid, Path), ("key" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_global_preference(State(app): State<App>, caller: Caller, ctx: RequestContext, P((u, key)): P<(Uuid, String)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    delete_preference(&app, &caller, &ctx, None, u, key).await
}

// ---------------------------------------------------------------------------------
// Contacts

/// A way to reach a person.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Contact {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `email`, `phone`, `address` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub is_default: bool,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const CONTACT_COLUMNS: &str = "id, user_id, type AS kind, value, is_default, verified_at, created_at";

/// A kind of contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContactType {
    Email,
    Phone,
    Address,
    Other,
}

impl ContactType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactType::Email => "email",
            ContactType::Phone => "phone",
            ContactType::Address => "address",
            ContactType::Other => "other",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "phone", "value": "+44 20 7946 0000", "is_default": true}))]
pub struct AddContact {
    #[serde(rename = "type")]
    pub kind: ContactType,
    #[schema(min_length = 1, max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub value: String,
    #[serde(default)]
    pub is_default: bool,
}

/// Add a contact to a user of the tenant (unverified; verification comes with login).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/users/{user_id}/contacts", tag = "users", request_body = AddContact,
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Contact), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn add_contact(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, u)): P<(Uuid, Uuid)>, body: JsonBody<AddContact>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "manage_users")).await?;
    let b = &body.value;
    check_text("value", &b.value, 500, false)?;
    let value = if b.kind == ContactType::Email { super::users::normalize_email(&b.value).map_err(|p| p.with_field("/value"))? } else { b.value.clone() };
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    let claim = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &format!("/v1/tenants/{t}/users/{u}/contacts"), &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    tenant_user(&mut tx, t, u).await?;
    if b.is_default {
        sqlx::query("UPDATE arbiter_admin.user_contacts SET is_default = false WHERE user_id = $1 AND type = $2")
            .bind(u)
            .bind(b.kind.as_str())
            .execute(tx.conn())
            .await?;
    }
    let c = sqlx::query_as::<_, Contact>(&format!(
        "INSERT INTO arbiter_admin.user_contacts (id, user_id, type, value, is_default) VALUES ($1, $2, $3, $4, $5) RETURNING {CONTACT_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(u)
    .bind(b.kind.as_str())
    .bind(&value)
    .bind(b.is_default)
    .fetch_one(tx.conn())
    .await
    .map_err(|e| Problem::from(e).with_field("/value"))?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: Some(t), action: "user.contact.add", target_type: "user", target_id: u.to_string(), before: None, after: snapshot(&c) }).await?;
    claim.save(&mut tx, StatusCode::CREATED, &c).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &c, Some(revision), None))
}

/// A user's contacts.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/users/{user_id}/contacts", tag = "users", params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<Contact>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_contacts(State(app): State<App>, caller: Caller, P((t, u)): P<(Uuid, Uuid)>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    app.authorize(&caller, Need::Tenant(t, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    tenant_user(&mut tx, t, u).await?;
    let rows = sqlx::query_as::<_, Contact>(&format!(
        "SELECT {CONTACT_COLUMNS} FROM arbiter_admin.user_contacts WHERE user_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(u)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |c| c.id), None, None))
}

/// Remove a contact.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/users/{user_id}/contacts/{contact_id}", tag = "users",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path), ("contact_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_contact(State(app): State<App>, caller: Caller, ctx: RequestContext, P((t, u, c)): P<(Uuid, Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(t, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(t)).await?;
    tenant_user(&mut tx, t, u).await?;
    let gone = sqlx::query_as::<_, Contact>(&format!("DELETE FROM arbiter_admin.user_contacts WHERE id = $1 AND user_id = $2 RETURNING {CONTACT_COLUMNS}"))
        .bind(c)
        .bind(u)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("contact `{c}`")))?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: Some(t), action: "user.contact.remove", target_type: "user", target_id: u.to_string(), before: snapshot(&gone), after: None }).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

// ---------------------------------------------------------------------------------
// The soft delete of a person

/// Delete a person (platform operators): the row stays, marked deleted with who and
/// when (the audit trail refers to it by id); their memberships, group memberships and
/// assignments in every tenant go, and so does every relationship naming them as a
/// subject, the application's too: a deleted person holds nothing.
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_person(State(app): State<App>, caller: Caller, ctx: RequestContext, P(u): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM arbiter_admin.users WHERE id = $1 AND status <> 'deleted' FOR UPDATE")
        .bind(u)
        .fetch_optional(tx.conn())
        .await?;
    let status = status.ok_or_else(|| Problem::not_found(format!("user `{u}`")))?;
    let subject_id = u.to_string();
    let grants: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT resource_type, resource_id, relation FROM relationships
         WHERE subject_type = 'platform/user' AND subject_id = $1 AND subject_relation = ''",
    )
    .bind(&subject_id)
    .fetch_all(tx.conn())
    .await?;
    let subject = crate::feed::user(u);
    for (rt, rid, rel) in &grants {
        tx.feed.delete(&format!("{rt}:{rid}"), rel, &subject);
    }
    for table in ["tenant_users", "group_members", "role_assignments"] {
        sqlx::query(&format!("DELETE FROM arbiter_admin.{table} WHERE user_id = $1")).bind(u).execute(tx.conn()).await?;
    }
    sqlx::query(
        "UPDATE arbiter_admin.users SET status = 'deleted', deleted_at = now(), deleted_by = $2, status_changed_at = now(),
            status_changed_by = $2, version = version + 1, updated_at = now() WHERE id = $1",
    )
    .bind(u)
    .bind(caller.actor())
    .execute(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "user.delete",
        target_type: "user",
        target_id: subject_id,
        before: Some(serde_json::json!({"status": status, "grants": grants.len()})),
        after: Some(serde_json::json!({"status": "deleted"})),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}
