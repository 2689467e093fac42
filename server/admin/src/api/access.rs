//! "Who can do what", answered by the PDP at the newest revision (so it is what a Check
//! would say, not a reading of the tables):
//!
//! - a user's effective permissions in a tenant: the catalogue permissions the graph
//!   grants them there (LookupResources over `platform/permission`, whatever path
//!   grants them: roles, role hierarchy, groups, delegations), and the tenant's own
//!   permissions (`manage`, `view`, `audit`, ...) they hold;
//! - who holds a permission on one of the tenant's objects (LookupSubjects), paged.
//!
//! Both need the tenant's `audit` permission: they are access reviews.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::reply;
use super::P;
use crate::auth::{Caller, Need};
use crate::db::Scope;
use crate::feed;
use crate::http::App;
use crate::page::Query;
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/users/{user_id}/effective-permissions", get(effective_permissions))
        .route("/v1/tenants/{tenant_id}/access", get(who_has))
}

/// The tenant permissions of the platform schema, in the order they are reported.
const TENANT_PERMISSIONS: [&str; 6] = ["manage", "manage_roles", "manage_users", "view", "audit", "impersonate"];

/// Most catalogue permissions one answer lists.
const MAX_PERMISSIONS: u32 = 5000;

/// A catalogue permission the user holds.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct HeldPermission {
    pub id: Uuid,
    pub name: String,
    pub resource: String,
    pub action: String,
    /// Absent for a global permission.
    pub tenant_id: Option<Uuid>,
}

/// What a user may do in a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectivePermissions {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The revision the PDP answered at.
    pub revision: String,
    /// The tenant's own permissions the user holds (`manage`, `view`, ...).
    pub tenant_permissions: Vec<String>,
    /// Catalogue permissions granted in the tenant, by name.
    pub permissions: Vec<HeldPermission>,
    /// More than 5,000 permissions: the list is cut.
    pub truncated: bool,
}

/// A user's effective permissions in a tenant (`audit`).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/users/{user_id}/effective-permissions", tag = "access",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = EffectivePermissions), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn effective_permissions(State(app): State<App>, caller: Caller, P((tenant_id, user_id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let member: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = $2)")
        .bind(tenant_id)
        .bind(user_id)
        .fetch_one(tx.conn())
        .await?;
    if !member {
        return Err(Problem::not_found(format!("user `{user_id}` in this tenant")));
    }
    let head = app.db.head().await?;
    let subject = feed::user(user_id);
    let (ids, truncated) = app.pdp.lookup_resources("platform/permission", "allowed", &subject, head, MAX_PERMISSIONS).await?;
    // A permission as granted in T is `<T>_<permission id>`; other tenants' are left out.
    let prefix = format!("{tenant_id}_");
    let held: Vec<Uuid> = ids.iter().filter_map(|i| i.strip_prefix(&prefix)).filter_map(|p| p.parse().ok()).collect();
    let permissions: Vec<HeldPermission> =
        sqlx::query_as("SELECT id, name, resource, action, tenant_id FROM arbiter_admin.permissions WHERE id = ANY($1) ORDER BY name")
            .bind(&held)
            .fetch_all(tx.conn())
            .await?;
    tx.tx.rollback().await?;
    let tenant = feed::tenant(tenant_id);
    let mut tenant_permissions = Vec::new();
    for p in TENANT_PERMISSIONS {
        if app.pdp.check(&tenant, p, &subject, head).await? {
            tenant_permissions.push(p.to_string());
        }
    }
    let body = EffectivePermissions { tenant_id, user_id, revision: crate::token(head), tenant_permissions, permissions, truncated };
    Ok(reply(StatusCode::OK, &body, None, None))
}

/// Query parameters of "who has a permission on an object".
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessParams {
    /// The object's type: the tenant (`platform/tenant`) or an application type whose
    /// objects say `relation tenant: platform/tenant`.
    #[param(min_length = 1, max_length = 128, pattern = r"^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$")]
    pub resource_type: String,
    #[param(min_length = 1, max_length = 1024, pattern = r"^[A-Za-z0-9/_|\-=+]+$")]
    pub resource_id: String,
    #[param(min_length = 1, max_length = 64, pattern = r"^[a-z][a-z0-9_]{0,63}$")]
    pub permission: String,
    /// Users per page (1 to the server's maximum, `--max-page-size`).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 1024, pattern = r"^[!-~]+$")]
    pub cursor: Option<String>,
}

/// A user who holds the permission.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Holder {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
}

/// Who holds a permission on an object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Holders {
    pub revision: String,
    /// A wildcard grants it to every user (but `excluded_user_ids`).
    pub all_users: bool,
    pub excluded_user_ids: Vec<String>,
    pub items: Vec<Holder>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Who holds `permission` on one of the tenant's objects (`audit`), through the PDP's
/// LookupSubjects.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/access", tag = "access", params(("tenant_id" = Uuid, Path), AccessParams),
    responses((status = 200, body = Holders), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn who_has(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse_opaque(raw.as_deref(), app.max_page_size, &["resource_type", "resource_id", "permission"])?;
    let cursor = q.after_opaque.clone().unwrap_or_default();
    let required = |name: &str| q.filter(name).ok_or_else(|| Problem::bad_request(name, format!("`{name}` is required")));
    let (resource_type, resource_id, permission) = (required("resource_type")?, required("resource_id")?, required("permission")?);
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    let object = format!("{resource_type}:{resource_id}");
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let owner: Option<Uuid> = sqlx::query_scalar("SELECT arbiter_admin.object_tenant($1)").bind(&object).fetch_one(tx.conn()).await?;
    if owner != Some(tenant_id) {
        return Err(Problem::not_found(format!("object `{object}` in this tenant")));
    }
    let head = app.db.head().await?;
    let found = app.pdp.lookup_subjects(&object, permission, "platform/user", head, &cursor, q.page.limit + 1).await?;
    let mut all_users = false;
    let mut excluded_user_ids = Vec::new();
    let mut ids: Vec<(Uuid, String)> = Vec::new();
    for s in &found {
        if s.subject_id == "*" {
            all_users = true;
            excluded_user_ids.clone_from(&s.excluded_ids);
        } else if let Ok(id) = s.subject_id.parse::<Uuid>() {
            ids.push((id, s.cursor.clone()));
        }
    }
    let more = ids.len() > q.page.limit as usize;
    ids.truncate(q.page.limit as usize);
    let next_cursor = if more { ids.last().map(|(_, c)| c.clone()) } else { None };
    let user_ids: Vec<Uuid> = ids.iter().map(|(id, _)| *id).collect();
    let mut items: Vec<Holder> = sqlx::query_as(
        "SELECT u.id AS user_id, u.email, u.display_name FROM arbiter_admin.users u
         JOIN arbiter_admin.tenant_users tu ON tu.user_id = u.id AND tu.tenant_id = $2 WHERE u.id = ANY($1)",
    )
    .bind(&user_ids)
    .bind(tenant_id)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    // In the PDP's order.
    items.sort_by_key(|h| user_ids.iter().position(|id| *id == h.user_id));
    Ok(reply(StatusCode::OK, &Holders { revision: crate::token(head), all_users, excluded_user_ids, items, next_cursor }, None, None))
}
