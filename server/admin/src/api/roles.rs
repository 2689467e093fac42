//! Roles, permissions, the permissions a role grants, and assignments of roles to users
//! and groups (optionally until a time). A role or permission belongs to one tenant, or
//! is global (`/v1/roles`, `/v1/permissions`, platform operators) and usable in every
//! tenant. A role inherits its parent's permissions. The feed is [`crate::rbac`].

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Tag, check_if_match, check_description, check_text, commit, no_content, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};
use crate::rbac::{self, Assignee};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/roles", post(create_tenant_role).get(list_tenant_roles))
        .route("/v1/tenants/{tenant_id}/roles/{role_id}", get(get_tenant_role).patch(update_tenant_role).delete(delete_tenant_role))
        .route("/v1/tenants/{tenant_id}/roles/{role_id}/permissions", get(list_tenant_role_permissions))
        .route("/v1/tenants/{tenant_id}/roles/{role_id}/permissions/{permission_id}", put(grant_tenant_permission).delete(revoke_tenant_permission))
        .route("/v1/roles", post(create_global_role).get(list_global_roles))
        .route("/v1/roles/{role_id}", get(get_global_role).patch(update_global_role).delete(delete_global_role))
        .route("/v1/roles/{role_id}/permissions", get(list_global_role_permissions))
        .route("/v1/roles/{role_id}/permissions/{permission_id}", put(grant_global_permission).delete(revoke_global_permission))
        .route("/v1/tenants/{tenant_id}/permissions", post(create_tenant_permission).get(list_tenant_permissions))
        .route("/v1/tenants/{tenant_id}/permissions/{permission_id}", get(get_tenant_permission).patch(update_tenant_permission).delete(delete_tenant_permission))
        .route("/v1/permissions", post(create_global_permission).get(list_global_permissions))
        .route("/v1/permissions/{permission_id}", get(get_global_permission).patch(update_global_permission).delete(delete_global_permission))
        .route("/v1/tenants/{tenant_id}/assignments", post(create_assignment).get(list_assignments))
        .route("/v1/tenants/{tenant_id}/assignments/{assignment_id}", delete(delete_assignment))
}


fn scope_of(tenant: Option<Uuid>) -> Scope {
    tenant.map(Scope::Tenant).unwrap_or(Scope::Platform)
}

async fn authorize(app: &App, caller: &Caller, tenant: Option<Uuid>, permission: &'static str) -> ApiResult<()> {
    match tenant {
        Some(t) => app.authorize(caller, Need::Tenant(t, permission)).await,
        None => app.authorize(caller, Need::Platform).await,
    }
}

// ---------------------------------------------------------------------------------
// Roles

/// A role.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Role {
    pub id: Uuid,
    /// Absent for a global role (usable in every tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub description: String,
    /// The role whose permissions this one inherits.
    pub parent_role_id: Option<Uuid>,
    /// The admin's own roles: `admin`, `user_manager` or `auditor` (global, no
    /// permissions or parent; assigning one grants that power over the tenant).
    pub builtin: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ROLE_COLUMNS: &str = "id, tenant_id, name, description, parent_role_id, builtin, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "approver", "description": "Approves invoices"}))]
pub struct CreateRole {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    pub parent_role_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "Approves invoices up to a limit", "parent_role_id": null}))]
pub struct UpdateRole {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    /// A new parent, or `null` for none.
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub parent_role_id: Option<Option<Uuid>>,
}

async fn fetch_role(tx: &mut Tx, tenant: Option<Uuid>, id: Uuid) -> ApiResult<Role> {
    // In a tenant: the tenant's roles and the global ones (row-level security). Global
    // endpoints: global roles only.
    sqlx::query_as::<_, Role>(&format!(
        "SELECT {ROLE_COLUMNS} FROM arbiter_admin.roles WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2 OR tenant_id IS NULL)
         AND ($2::uuid IS NOT NULL OR tenant_id IS NULL)"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("role `{id}`")))
}

/// A role this scope may change: its own tenant's (or, on the global endpoints, a
/// global one), never a built-in one.
fn own(role: &Role, tenant: Option<Uuid>) -> ApiResult<()> {
    if role.builtin.is_some() {
        return Err(Problem::conflict("role_id", "a built-in role cannot be changed"));
    }
    if role.tenant_id != tenant {
        return Err(Problem::forbidden("a global role is changed through /v1/roles, by platform operators"));
    }
    Ok(())
}

/// The parent must be visible from the role's scope, not built in, and not make a cycle.
async fn check_parent(tx: &mut Tx, tenant: Option<Uuid>, role: Option<Uuid>, parent: Uuid) -> ApiResult<()> {
    let found = fetch_role(tx, tenant, parent).await.map_err(|_| Problem::invalid("/parent_role_id", format!("role `{parent}` does not exist here")))?;
    if found.builtin.is_some() {
        return Err(Problem::invalid("/parent_role_id", "a built-in role cannot be a parent"));
    }
    if tenant.is_none() && found.tenant_id.is_some() {
        return Err(Problem::invalid("/parent_role_id", "a global role's parent must be global"));
    }
    if let Some(r) = role {
        let cycle: bool = sqlx::query_scalar(
            "WITH RECURSIVE up(id) AS (SELECT $1::uuid UNION SELECT r.parent_role_id FROM arbiter_admin.roles r JOIN up ON r.id = up.id
                                       WHERE r.parent_role_id IS NOT NULL)
             SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
        )
        .bind(parent)
        .bind(r)
        .fetch_one(tx.conn())
        .await?;
        if cycle {
            return Err(Problem::invalid("/parent_role_id", format!("role `{r}` is already an ancestor of `{parent}`: that would be a cycle")));
        }
    }
    Ok(())
}

async fn create_role(app: &App, caller: &Caller, ctx: &RequestContext, headers: &HeaderMap, tenant: Option<Uuid>, body: JsonBody<CreateRole>) -> ApiResult<Response> {
    authorize(app, caller, tenant, "manage_roles").await?;
    let b = &body.value;
    check_text("name", &b.name, 200, false)?;
    check_description("description", &b.description, 2000)?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let path = match tenant {
        Some(t) => format!("/v1/tenants/{t}/roles"),
        None => "/v1/roles".to_string(),
    };
    let claim = match Idempotency::begin(&mut tx, caller, headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    if let Some(p) = b.parent_role_id {
        check_parent(&mut tx, tenant, None, p).await?;
    }
    let role = sqlx::query_as::<_, Role>(&format!(
        "INSERT INTO arbiter_admin.roles (id, tenant_id, name, description, parent_role_id) VALUES ($1, $2, $3, $4, $5) RETURNING {ROLE_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(&b.name)
    .bind(&b.description)
    .bind(b.parent_role_id)
    .fetch_one(tx.conn())
    .await?;
    if let Some(p) = role.parent_role_id {
        let tenants = rbac::tenants_of(&mut tx, tenant).await?;
        rbac::parent_edges(&mut tx, &tenants, role.id, p, true);
    }
    audit::record(&mut tx, caller, ctx, Entry {
        tenant,
        action: "role.create",
        target_type: "role",
        target_id: role.id.to_string(),
        before: None,
        after: snapshot(&role),
    })
    .await?;
    claim.save(&mut tx, StatusCode::CREATED, &role).await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::CREATED, &role, Some(revision), Some(role.version)))
}

async fn list_roles(app: &App, caller: &Caller, tenant: Option<Uuid>, raw: Option<String>) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["name", "scope"])?;
    let only_tenant = match q.filter("scope") {
        None => None,
        Some("tenant") => Some(true),
        Some("global") => Some(false),
        Some(_) => return Err(Problem::bad_request("scope", "`scope` must be tenant or global")),
    };
    authorize(app, caller, tenant, "view").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let rows = sqlx::query_as::<_, Role>(&format!(
        "SELECT {ROLE_COLUMNS} FROM arbiter_admin.roles
         WHERE ($1::uuid IS NULL AND tenant_id IS NULL OR $1::uuid IS NOT NULL AND (tenant_id = $1 OR tenant_id IS NULL))
         AND ($2::bool IS NULL OR (tenant_id IS NOT NULL) = $2) AND ($3::text IS NULL OR name = $3)
         AND ($4::uuid IS NULL OR id > $4) ORDER BY id LIMIT $5"
    ))
    .bind(tenant)
    .bind(only_tenant)
    .bind(q.filter("name"))
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |r| r.id), None, None))
}

async fn get_role(app: &App, caller: &Caller, tenant: Option<Uuid>, id: Uuid) -> ApiResult<Response> {
    authorize(app, caller, tenant, "view").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let role = fetch_role(&mut tx, tenant, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &role, None, Some(role.version)))
}

async fn update_role(app: &App, caller: &Caller, ctx: &RequestContext, headers: &HeaderMap, tenant: Option<Uuid>, id: Uuid, body: JsonBody<UpdateRole>) -> ApiResult<Response> {
    authorize(app, caller, tenant, "manage_roles").await?;
    let b = &body.value;
    if let Some(n) = &b.name {
        check_text("name", n, 200, false)?;
    }
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let before = fetch_role(&mut tx, tenant, id).await?;
    own(&before, tenant)?;
    check_if_match(headers, before.version)?;
    let parent = b.parent_role_id.unwrap_or(before.parent_role_id);
    if let (Some(p), true) = (parent, parent != before.parent_role_id) {
        check_parent(&mut tx, tenant, Some(id), p).await?;
    }
    let after = sqlx::query_as::<_, Role>(&format!(
        "UPDATE arbiter_admin.roles SET name = coalesce($2, name), description = coalesce($3, description), parent_role_id = $4,
            version = version + 1, updated_at = now() WHERE id = $1 RETURNING {ROLE_COLUMNS}"
    ))
    .bind(id)
    .bind(&b.name)
    .bind(&b.description)
    .bind(parent)
    .fetch_one(tx.conn())
    .await?;
    if before.parent_role_id != after.parent_role_id {
        let tenants = rbac::tenants_of(&mut tx, tenant).await?;
        if let Some(old) = before.parent_role_id {
            rbac::parent_edges(&mut tx, &tenants, id, old, false);
        }
        if let Some(new) = after.parent_role_id {
            rbac::parent_edges(&mut tx, &tenants, id, new, true);
        }
    }
    audit::record(&mut tx, caller, ctx, Entry { tenant, action: "role.update", target_type: "role", target_id: id.to_string(), before: snapshot(&before), after: snapshot(&after) }).await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

async fn delete_role(app: &App, caller: &Caller, ctx: &RequestContext, headers: &HeaderMap, tenant: Option<Uuid>, id: Uuid) -> ApiResult<Response> {
    authorize(app, caller, tenant, "manage_roles").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let before = fetch_role(&mut tx, tenant, id).await?;
    own(&before, tenant)?;
    check_if_match(headers, before.version)?;
    let children: Vec<String> = sqlx::query_scalar("SELECT name FROM arbiter_admin.roles WHERE parent_role_id = $1 ORDER BY name LIMIT 10")
        .bind(id)
        .fetch_all(tx.conn())
        .await?;
    if !children.is_empty() {
        return Err(Problem::conflict("role_id", format!("the role is the parent of {}: change their parent first", children.join(", "))));
    }
    let tenants = rbac::tenants_of(&mut tx, tenant).await?;
    rbac::structure(&mut tx, &tenants, id, false).await?;
    let assignments: Vec<(Uuid, Option<Uuid>, Option<Uuid>)> =
        sqlx::query_as("SELECT tenant_id, user_id, group_id FROM arbiter_admin.role_assignments WHERE role_id = $1")
            .bind(id)
            .fetch_all(tx.conn())
            .await?;
    for (t, u, g) in assignments {
        let who = match (u, g) {
            (Some(u), _) => Assignee::User(u),
            (None, Some(g)) => Assignee::Group(g),
            (None, None) => continue,
        };
        rbac::assignment_edge(&mut tx, t, id, None, who, None, false);
    }
    sqlx::query("DELETE FROM arbiter_admin.roles WHERE id = $1").bind(id).execute(tx.conn()).await?;
    audit::record(&mut tx, caller, ctx, Entry { tenant, action: "role.delete", target_type: "role", target_id: id.to_string(), before: snapshot(&before), after: None }).await?;
    let revision = commit(app, tx).await?;
    Ok(no_content(revision))
}

/// Create a role of the tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/roles", tag = "roles", request_body = CreateRole,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Role), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant_role(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(t): P<Uuid>, body: JsonBody<CreateRole>) -> ApiResult<Response> {
    create_role(&app, &caller, &ctx, &headers, Some(t), body).await
}

/// List the roles usable in the tenant: its own and the global ones (`scope` filters).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/roles", tag = "roles",
    params(("tenant_id" = Uuid, Path), PageParams, ("scope" = Option<String>, Query, description = "tenant or global"), ("name" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Role>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_roles(State(app): State<App>, caller: Caller, P(t): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_roles(&app, &caller, Some(t), raw).await
}

/// Read a role usable in the tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/roles/{role_id}", tag = "roles", params(("tenant_id" = Uuid, Path), ("role_id" = Uuid, Path)),
    responses((status = 200, body = Role), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant_role(State(app): State<App>, caller: Caller, P((t, r)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    get_role(&app, &caller, Some(t), r).await
}

/// Change a role of the tenant (its name, description or parent).
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/roles/{role_id}", tag = "roles", request_body = UpdateRole,
    params(("tenant_id" = Uuid, Path), ("role_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Role), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_tenant_role(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, r)): P<(Uuid, Uuid)>, body: JsonBody<UpdateRole>) -> ApiResult<Response> {
    update_role(&app, &caller, &ctx, &headers, Some(t), r, body).await
}

/// Delete a role of the tenant: its assignments and grants go with it.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/roles/{role_id}", tag = "roles",
    params(("tenant_id" = Uuid, Path), ("role_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_tenant_role(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, r)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    delete_role(&app, &caller, &ctx, &headers, Some(t), r).await
}

/// Create a global role (platform operators).
#[utoipa::path(post, path = "/v1/roles", tag = "roles", request_body = CreateRole, params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Role), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_global_role(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreateRole>) -> ApiResult<Response> {
    create_role(&app, &caller, &ctx, &headers, None, body).await
}

/// List the global roles, the built-in ones among them (platform operators).
#[utoipa::path(get, path = "/v1/roles", tag = "roles", params(PageParams, ("name" = Option<String>, Query), ("scope" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Role>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_global_roles(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_roles(&app, &caller, None, raw).await
}

/// Read a global role (platform operators).
#[utoipa::path(get, path = "/v1/roles/{role_id}", tag = "roles", params(("role_id" = Uuid, Path)),
    responses((status = 200, body = Role), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_global_role(State(app): State<App>, caller: Caller, P(r): P<Uuid>) -> ApiResult<Response> {
    get_role(&app, &caller, None, r).await
}

/// Change a global role (platform operators): every tenant sees the change.
#[utoipa::path(patch, path = "/v1/roles/{role_id}", tag = "roles", request_body = UpdateRole, params(("role_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Role), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_global_role(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(r): P<Uuid>, body: JsonBody<UpdateRole>) -> ApiResult<Response> {
    update_role(&app, &caller, &ctx, &headers, None, r, body).await
}

/// Delete a global role (platform operators): its assignments in every tenant go too.
#[utoipa::path(delete, path = "/v1/roles/{role_id}", tag = "roles", params(("role_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_global_role(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(r): P<Uuid>) -> ApiResult<Response> {
    delete_role(&app, &caller, &ctx, &headers, None, r).await
}

// ---------------------------------------------------------------------------------
// Permissions

/// A permission of the catalogue: what a role can grant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Permission {
    pub id: Uuid,
    /// Absent for a global permission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    /// Letters, digits, `.`, `_`, `:` and `-` (`invoice:approve`).
    pub name: String,
    pub description: String,
    pub resource: String,
    pub action: String,
    pub tags: Vec<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const PERMISSION_COLUMNS: &str = "id, tenant_id, name, description, resource, action, tags, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "invoice:approve", "resource": "invoice", "action": "approve", "tags": ["finance"]}))]
pub struct CreatePermission {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,200}$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub resource: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub action: String,
    #[serde(default)]
    #[schema(max_items = 32, value_type = Vec<Tag>)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tags": ["finance", "audit"]}))]
pub struct UpdatePermission {
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub resource: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub action: Option<String>,
    #[schema(max_items = 32, value_type = Option<Vec<Tag>>)]
    pub tags: Option<Vec<String>>,
}

fn check_permission_name(name: &str) -> ApiResult<()> {
    if !name.is_empty() && name.len() <= 200 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) {
        Ok(())
    } else {
        Err(Problem::invalid("/name", "`name` must be 1 to 200 of letters, digits, `.`, `_`, `:` and `-`"))
    }
}

pub(super) fn check_tags(tags: &[String]) -> ApiResult<()> {
    if tags.len() > 32 {
        return Err(Problem::invalid("/tags", "at most 32 `tags`"));
    }
    for (i, t) in tags.iter().enumerate() {
        check_text(&format!("tags/{i}"), t, 64, false)?;
    }
    Ok(())
}

async fn fetch_permission(tx: &mut Tx, tenant: Option<Uuid>, id: Uuid) -> ApiResult<Permission> {
    sqlx::query_as::<_, Permission>(&format!(
        "SELECT {PERMISSION_COLUMNS} FROM arbiter_admin.permissions WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2 OR tenant_id IS NULL)
         AND ($2::uuid IS NOT NULL OR tenant_id IS NULL)"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("permission `{id}`")))
}

async fn create_permission(app: &App, caller: &Caller, ctx: &RequestContext, headers: &HeaderMap, tenant: Option<Uuid>, body: JsonBody<CreatePermission>) -> ApiResult<Response> {
    authorize(app, caller, tenant, "manage_roles").await?;
    let b = &body.value;
    check_permission_name(&b.name)?;
    check_description("description", &b.description, 2000)?;
    check_text("resource", &b.resource, 200, false)?;
    check_text("action", &b.action, 200, false)?;
    check_tags(&b.tags)?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let path = match tenant {
        Some(t) => format!("/v1/tenants/{t}/permissions"),
        None => "/v1/permissions".to_string(),
    };
    let claim = match Idempotency::begin(&mut tx, caller, headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let p = sqlx::query_as::<_, Permission>(&format!(
        "INSERT INTO arbiter_admin.permissions (id, tenant_id, name, description, resource, action, tags)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {PERMISSION_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(&b.name)
    .bind(&b.description)
    .bind(&b.resource)
    .bind(&b.action)
    .bind(&b.tags)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, caller, ctx, Entry { tenant, action: "permission.create", target_type: "permission", target_id: p.id.to_string(), before: None, after: snapshot(&p) }).await?;
    claim.save(&mut tx, StatusCode::CREATED, &p).await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::CREATED, &p, Some(revision), Some(p.version)))
}

async fn list_permissions(app: &App, caller: &Caller, tenant: Option<Uuid>, raw: Option<String>) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["name", "resource", "tag"])?;
    authorize(app, caller, tenant, "view").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let rows = sqlx::query_as::<_, Permission>(&format!(
        "SELECT {PERMISSION_COLUMNS} FROM arbiter_admin.permissions
         WHERE ($1::uuid IS NULL AND tenant_id IS NULL OR $1::uuid IS NOT NULL AND (tenant_id = $1 OR tenant_id IS NULL))
         AND ($2::text IS NULL OR name = $2) AND ($3::text IS NULL OR resource = $3) AND ($4::text IS NULL OR $4 = ANY(tags))
         AND ($5::uuid IS NULL OR id > $5) ORDER BY id LIMIT $6"
    ))
    .bind(tenant)
    .bind(q.filter("name"))
    .bind(q.filter("resource"))
    .bind(q.filter("tag"))
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |p| p.id), None, None))
}

async fn get_permission(app: &App, caller: &Caller, tenant: Option<Uuid>, id: Uuid) -> ApiResult<Response> {
    authorize(app, caller, tenant, "view").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let p = fetch_permission(&mut tx, tenant, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &p, None, Some(p.version)))
}

async fn update_permission(app: &App, caller: &Caller, ctx: &RequestContext, headers: &HeaderMap, tenant: Option<Uuid>, id: Uuid, body: JsonBody<UpdatePermission>) -> ApiResult<Response> {
    authorize(app, caller, tenant, "manage_roles").await?;
    let b = &body.value;
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    if let Some(r) = &b.resource {
        check_text("resource", r, 200, false)?;
    }
    if let Some(a) = &b.action {
        check_text("action", a, 200, false)?;
    }
    if let Some(t) = &b.tags {
        check_tags(t)?;
    }
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let before = fetch_permission(&mut tx, tenant, id).await?;
    if before.tenant_id != tenant {
        return Err(Problem::forbidden("a global permission is changed through /v1/permissions, by platform operators"));
    }
    check_if_match(headers, before.version)?;
    let after = sqlx::query_as::<_, Permission>(&format!(
        "UPDATE arbiter_admin.permissions SET description = coalesce($2, description), resource = coalesce($3, resource),
            action = coalesce($4, action), tags = coalesce($5, tags), version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING {PERMISSION_COLUMNS}"
    ))
    .bind(id)
    .bind(&b.description)
    .bind(&b.resource)
    .bind(&b.action)
    .bind(&b.tags)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, caller, ctx, Entry { tenant, action: "permission.update", target_type: "permission", target_id: id.to_string(), before: snapshot(&before), after: snapshot(&after) }).await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

async fn delete_permission(app: &App, caller: &Caller, ctx: &RequestContext, headers: &HeaderMap, tenant: Option<Uuid>, id: Uuid) -> ApiResult<Response> {
    authorize(app, caller, tenant, "manage_roles").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let before = fetch_permission(&mut tx, tenant, id).await?;
    if before.tenant_id != tenant {
        return Err(Problem::forbidden("a global permission is deleted through /v1/permissions, by platform operators"));
    }
    check_if_match(headers, before.version)?;
    let grants: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT rp.role_id, r.tenant_id FROM arbiter_admin.role_permissions rp JOIN arbiter_admin.roles r ON r.id = rp.role_id WHERE rp.permission_id = $1",
    )
    .bind(id)
    .fetch_all(tx.conn())
    .await?;
    for (role, role_tenant) in grants {
        let tenants = rbac::tenants_of(&mut tx, role_tenant).await?;
        rbac::grant_edges(&mut tx, &tenants, role, id, false);
    }
    sqlx::query("DELETE FROM arbiter_admin.permissions WHERE id = $1").bind(id).execute(tx.conn()).await?;
    audit::record(&mut tx, caller, ctx, Entry { tenant, action: "permission.delete", target_type: "permission", target_id: id.to_string(), before: snapshot(&before), after: None }).await?;
    let revision = commit(app, tx).await?;
    Ok(no_content(revision))
}

/// Create a permission of the tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/permissions", tag = "roles", request_body = CreatePermission,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Permission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(t): P<Uuid>, body: JsonBody<CreatePermission>) -> ApiResult<Response> {
    create_permission(&app, &caller, &ctx, &headers, Some(t), body).await
}

/// List the permissions usable in the tenant (its own and the global ones).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/permissions", tag = "roles",
    params(("tenant_id" = Uuid, Path), PageParams, ("name" = Option<String>, Query), ("resource" = Option<String>, Query), ("tag" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Permission>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_permissions(State(app): State<App>, caller: Caller, P(t): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_permissions(&app, &caller, Some(t), raw).await
}

/// Read a permission usable in the tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/permissions/{permission_id}", tag = "roles", params(("tenant_id" = Uuid, Path), ("permission_id" = Uuid, Path)),
    responses((status = 200, body = Permission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant_permission(State(app): State<App>, caller: Caller, P((t, p)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    get_permission(&app, &caller, Some(t), p).await
}

/// Change a permission of the tenant.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/permissions/{permission_id}", tag = "roles", request_body = UpdatePermission,
    params(("tenant_id" = Uuid, Path), ("permission_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Permission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_tenant_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, p)): P<(Uuid, Uuid)>, body: JsonBody<UpdatePermission>) -> ApiResult<Response> {
    update_permission(&app, &caller, &ctx, &headers, Some(t), p, body).await
}

/// Delete a permission of the tenant: every role stops granting it.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/permissions/{permission_id}", tag = "roles",
    params(("tenant_id" = Uuid, Path), ("permission_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_tenant_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, p)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    delete_permission(&app, &caller, &ctx, &headers, Some(t), p).await
}

/// Create a global permission (platform operators).
#[utoipa::path(post, path = "/v1/permissions", tag = "roles", request_body = CreatePermission, params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Permission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_global_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreatePermission>) -> ApiResult<Response> {
    create_permission(&app, &caller, &ctx, &headers, None, body).await
}

/// List the global permissions (platform operators).
#[utoipa::path(get, path = "/v1/permissions", tag = "roles",
    params(PageParams, ("name" = Option<String>, Query), ("resource" = Option<String>, Query), ("tag" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Permission>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_global_permissions(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_permissions(&app, &caller, None, raw).await
}

/// Read a global permission (platform operators).
#[utoipa::path(get, path = "/v1/permissions/{permission_id}", tag = "roles", params(("permission_id" = Uuid, Path)),
    responses((status = 200, body = Permission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_global_permission(State(app): State<App>, caller: Caller, P(p): P<Uuid>) -> ApiResult<Response> {
    get_permission(&app, &caller, None, p).await
}

/// Change a global permission (platform operators).
#[utoipa::path(patch, path = "/v1/permissions/{permission_id}", tag = "roles", request_body = UpdatePermission,
    params(("permission_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Permission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_global_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(p): P<Uuid>, body: JsonBody<UpdatePermission>) -> ApiResult<Response> {
    update_permission(&app, &caller, &ctx, &headers, None, p, body).await
}

/// Delete a global permission (platform operators): no role grants it anywhere after.
#[utoipa::path(delete, path = "/v1/permissions/{permission_id}", tag = "roles", params(("permission_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_global_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(p): P<Uuid>) -> ApiResult<Response> {
    delete_permission(&app, &caller, &ctx, &headers, None, p).await
}

// ---------------------------------------------------------------------------------
// The permissions a role grants

/// A permission a role grants.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct RolePermission {
    pub role_id: Uuid,
    pub permission_id: Uuid,
    pub granted_by: Option<String>,
    pub granted_at: DateTime<Utc>,
}

async fn grant(app: &App, caller: &Caller, ctx: &RequestContext, tenant: Option<Uuid>, role_id: Uuid, permission_id: Uuid, add: bool) -> ApiResult<Response> {
    authorize(app, caller, tenant, "manage_roles").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    let role = fetch_role(&mut tx, tenant, role_id).await?;
    own(&role, tenant)?;
    let permission = fetch_permission(&mut tx, tenant, permission_id).await?;
    if role.tenant_id.is_none() && permission.tenant_id.is_some() {
        return Err(Problem::invalid("permission_id", "a global role grants only global permissions"));
    }
    let row = if add {
        sqlx::query_as::<_, RolePermission>(
            "INSERT INTO arbiter_admin.role_permissions (role_id, permission_id, tenant_id, granted_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (role_id, permission_id) DO NOTHING RETURNING role_id, permission_id, granted_by, granted_at",
        )
        .bind(role_id)
        .bind(permission_id)
        .bind(role.tenant_id)
        .bind(caller.actor())
        .fetch_optional(tx.conn())
        .await?
    } else {
        sqlx::query_as::<_, RolePermission>(
            "DELETE FROM arbiter_admin.role_permissions WHERE role_id = $1 AND permission_id = $2 RETURNING role_id, permission_id, granted_by, granted_at",
        )
        .bind(role_id)
        .bind(permission_id)
        .fetch_optional(tx.conn())
        .await?
    };
    let Some(row) = row else {
        return match add {
            // Granting again changes nothing (PUT is idempotent).
            true => {
                let existing = sqlx::query_as::<_, RolePermission>(
                    "SELECT role_id, permission_id, granted_by, granted_at FROM arbiter_admin.role_permissions WHERE role_id = $1 AND permission_id = $2",
                )
                .bind(role_id)
                .bind(permission_id)
                .fetch_one(tx.conn())
                .await?;
                tx.tx.rollback().await?;
                Ok(reply(StatusCode::OK, &existing, Some(app.db.head().await?), None))
            }
            false => Err(Problem::not_found(format!("a grant of permission `{permission_id}` by role `{role_id}`"))),
        };
    };
    let tenants = rbac::tenants_of(&mut tx, role.tenant_id).await?;
    rbac::grant_edges(&mut tx, &tenants, role_id, permission_id, add);
    audit::record(&mut tx, caller, ctx, Entry {
        tenant,
        action: if add { "role.permission.grant" } else { "role.permission.revoke" },
        target_type: "role",
        target_id: role_id.to_string(),
        before: if add { None } else { snapshot(&row) },
        after: if add { snapshot(&row) } else { None },
    })
    .await?;
    let revision = commit(app, tx).await?;
    Ok(if add { reply(StatusCode::CREATED, &row, Some(revision), None) } else { no_content(revision) })
}

async fn list_role_permissions(app: &App, caller: &Caller, tenant: Option<Uuid>, role_id: Uuid, raw: Option<String>) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    authorize(app, caller, tenant, "view").await?;
    let mut tx = app.db.begin(scope_of(tenant)).await?;
    fetch_role(&mut tx, tenant, role_id).await?;
    let rows = sqlx::query_as::<_, RolePermission>(
        "SELECT role_id, permission_id, granted_by, granted_at FROM arbiter_admin.role_permissions WHERE role_id = $1
         AND ($2::uuid IS NULL OR permission_id > $2) ORDER BY permission_id LIMIT $3",
    )
    .bind(role_id)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |r| r.permission_id), None, None))
}

/// Make a role of the tenant grant a permission (201; 200 when it already did).
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/roles/{role_id}/permissions/{permission_id}", tag = "roles",
    params(("tenant_id" = Uuid, Path), ("role_id" = Uuid, Path), ("permission_id" = Uuid, Path)),
    responses((status = 201, body = RolePermission), (status = 200, body = RolePermission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn grant_tenant_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, P((t, r, p)): P<(Uuid, Uuid, Uuid)>) -> ApiResult<Response> {
    grant(&app, &caller, &ctx, Some(t), r, p, true).await
}

/// Stop a role of the tenant granting a permission.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/roles/{role_id}/permissions/{permission_id}", tag = "roles",
    params(("tenant_id" = Uuid, Path), ("role_id" = Uuid, Path), ("permission_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_tenant_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, P((t, r, p)): P<(Uuid, Uuid, Uuid)>) -> ApiResult<Response> {
    grant(&app, &caller, &ctx, Some(t), r, p, false).await
}

/// The permissions a role usable in the tenant grants (directly; a parent's are its own).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/roles/{role_id}/permissions", tag = "roles",
    params(("tenant_id" = Uuid, Path), ("role_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<RolePermission>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_role_permissions(State(app): State<App>, caller: Caller, P((t, r)): P<(Uuid, Uuid)>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_role_permissions(&app, &caller, Some(t), r, raw).await
}

/// Make a global role grant a global permission, in every tenant (platform operators).
#[utoipa::path(put, path = "/v1/roles/{role_id}/permissions/{permission_id}", tag = "roles",
    params(("role_id" = Uuid, Path), ("permission_id" = Uuid, Path)),
    responses((status = 201, body = RolePermission), (status = 200, body = RolePermission), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn grant_global_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, P((r, p)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    grant(&app, &caller, &ctx, None, r, p, true).await
}

/// Stop a global role granting a permission, in every tenant (platform operators).
#[utoipa::path(delete, path = "/v1/roles/{role_id}/permissions/{permission_id}", tag = "roles",
    params(("role_id" = Uuid, Path), ("permission_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_global_permission(State(app): State<App>, caller: Caller, ctx: RequestContext, P((r, p)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    grant(&app, &caller, &ctx, None, r, p, false).await
}

/// The permissions a global role grants (platform operators).
#[utoipa::path(get, path = "/v1/roles/{role_id}/permissions", tag = "roles", params(("role_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<RolePermission>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_global_role_permissions(State(app): State<App>, caller: Caller, P(r): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_role_permissions(&app, &caller, None, r, raw).await
}

// ---------------------------------------------------------------------------------
// Assignments

/// A role held by a user or a group in a tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Assignment {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub role_id: Uuid,
    pub user_id: Option<Uuid>,
    pub group_id: Option<Uuid>,
    /// The assignment ends at this time (the grant expires in the graph then; no write
    /// is needed).
    pub expires_at: Option<DateTime<Utc>>,
    pub assigned_by: Option<String>,
    pub assigned_at: DateTime<Utc>,
}

const ASSIGNMENT_COLUMNS: &str = "id, tenant_id, role_id, user_id, group_id, expires_at, assigned_by, assigned_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssignment {
    pub role_id: Uuid,
    /// A user of the tenant (or give `group_id`).
    pub user_id: Option<Uuid>,
    /// A group of the tenant (or give `user_id`).
    pub group_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Assign a role usable in the tenant to a user or a group. Assigning a built-in role
/// (tenant admin, user manager, auditor) needs `manage` on the tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/assignments", tag = "roles", request_body = CreateAssignment,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Assignment), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_assignment(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateAssignment>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_roles")).await?;
    let b = &body.value;
    let who = match (b.user_id, b.group_id) {
        (Some(u), None) => Assignee::User(u),
        (None, Some(g)) => Assignee::Group(g),
        _ => return Err(Problem::invalid("/user_id", "give exactly one of `user_id` and `group_id`")),
    };
    if b.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Problem::invalid("/expires_at", "`expires_at` is in the past"));
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/assignments");
    let claim = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let role = fetch_role(&mut tx, Some(tenant_id), b.role_id)
        .await
        .map_err(|_| Problem::invalid("/role_id", format!("role `{}` is not usable in this tenant", b.role_id)))?;
    match who {
        Assignee::User(u) => {
            let found: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant_id)
                .bind(u)
                .fetch_optional(tx.conn())
                .await?;
            if found.is_none() {
                return Err(Problem::invalid("/user_id", format!("user `{u}` is not a user of this tenant")));
            }
        }
        Assignee::Group(g) => {
            let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM arbiter_admin.groups WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(g)
                .fetch_optional(tx.conn())
                .await?;
            if found.is_none() {
                return Err(Problem::invalid("/group_id", format!("group `{g}` does not exist in this tenant")));
            }
        }
    }
    let a = sqlx::query_as::<_, Assignment>(&format!(
        "INSERT INTO arbiter_admin.role_assignments (id, tenant_id, role_id, user_id, group_id, expires_at, assigned_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ASSIGNMENT_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(b.role_id)
    .bind(b.user_id)
    .bind(b.group_id)
    .bind(b.expires_at)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    rbac::assignment_edge(&mut tx, tenant_id, role.id, role.builtin.as_deref(), who, a.expires_at, true);
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: Some(tenant_id), action: "assignment.create", target_type: "assignment", target_id: a.id.to_string(), before: None, after: snapshot(&a) }).await?;
    claim.save(&mut tx, StatusCode::CREATED, &a).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &a, Some(revision), None))
}

/// List a tenant's assignments; filter by `role_id`, `user_id` or `group_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/assignments", tag = "roles",
    params(("tenant_id" = Uuid, Path), PageParams, ("role_id" = Option<Uuid>, Query), ("user_id" = Option<Uuid>, Query), ("group_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<Assignment>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_assignments(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["role_id", "user_id", "group_id"])?;
    let id = |name: &str| -> ApiResult<Option<Uuid>> {
        q.filter(name)
            .map(|v| v.parse::<Uuid>().map_err(|_| Problem::bad_request(name.to_string(), format!("`{name}` is not a UUID"))))
            .transpose()
    };
    let (role, user, group) = (id("role_id")?, id("user_id")?, id("group_id")?);
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, Assignment>(&format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM arbiter_admin.role_assignments WHERE tenant_id = $1
         AND ($2::uuid IS NULL OR role_id = $2) AND ($3::uuid IS NULL OR user_id = $3) AND ($4::uuid IS NULL OR group_id = $4)
         AND ($5::uuid IS NULL OR id > $5) ORDER BY id LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(role)
    .bind(user)
    .bind(group)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |a| a.id), None, None))
}

/// End an assignment: the grant goes at once.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/assignments/{assignment_id}", tag = "roles",
    params(("tenant_id" = Uuid, Path), ("assignment_id" = Uuid, Path)),
    responses((status = 204, description = "Ended"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_assignment(State(app): State<App>, caller: Caller, ctx: RequestContext, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_roles")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let gone = sqlx::query_as::<_, Assignment>(&format!(
        "DELETE FROM arbiter_admin.role_assignments WHERE id = $1 AND tenant_id = $2 RETURNING {ASSIGNMENT_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("assignment `{id}`")))?;
    let builtin: Option<String> = sqlx::query_scalar("SELECT builtin FROM arbiter_admin.roles WHERE id = $1")
        .bind(gone.role_id)
        .fetch_optional(tx.conn())
        .await?
        .flatten();
    let who = match (gone.user_id, gone.group_id) {
        (Some(u), _) => Assignee::User(u),
        (None, Some(g)) => Assignee::Group(g),
        (None, None) => return Err(Problem::internal("an assignment has no assignee", &id)),
    };
    rbac::assignment_edge(&mut tx, tenant_id, gone.role_id, builtin.as_deref(), who, None, false);
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: Some(tenant_id), action: "assignment.delete", target_type: "assignment", target_id: id.to_string(), before: snapshot(&gone), after: None }).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}
