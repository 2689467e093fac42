//! Users: one global identity per person (profile, status, soft delete), seen by a
//! tenant through its membership (`tenant_users`). A tenant's user managers create and
//! edit the users of their tenant; suspending a person everywhere is a platform
//! operator's call.
//!
//! Feed: an active membership is `platform/tenant:T#member@platform/user:U`; a root
//! admin is also `#owner`; a suspended person is `platform/platform:root#suspended`.

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

use super::{check_document, check_if_match, check_text, commit, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/users", post(create_user).get(list_users))
        .route("/v1/tenants/{tenant_id}/users/{user_id}", get(get_user).patch(update_user).delete(remove_user))
        .route("/v1/users/{user_id}/suspend", post(suspend_user))
        .route("/v1/users/{user_id}/reactivate", post(reactivate_user))
}

/// A user as a tenant sees them: the global identity and the membership.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct TenantUser {
    pub id: Uuid,
    pub email: String,
    pub username: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub display_name: String,
    pub locale: String,
    pub timezone: String,
    pub avatar_url: Option<String>,
    /// The person's status everywhere: `active`, `suspended` or `deleted`.
    pub status: String,
    pub status_reason: Option<String>,
    pub metadata: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub tenant_id: Uuid,
    /// The membership's status in this tenant: `active` or `suspended`.
    pub membership_status: String,
    pub is_root_admin: bool,
    pub department_id: Option<Uuid>,
    pub title: String,
    pub joined_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT u.id, u.email, u.username, u.first_name, u.last_name, u.display_name, u.locale, u.timezone,
    u.avatar_url, u.status, u.status_reason, u.metadata, u.version, u.created_at, u.updated_at, tu.tenant_id,
    tu.status AS membership_status, tu.is_root_admin, tu.department_id, tu.title, tu.joined_at
    FROM arbiter_admin.users u JOIN arbiter_admin.tenant_users tu ON tu.user_id = u.id";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "alice@acme.example", "display_name": "Alice", "first_name": "Alice", "last_name": "Liddell", "locale": "en", "timezone": "Europe/London", "title": "Engineer"}))]
pub struct CreateUser {
    #[schema(max_length = 320, pattern = r"^[^@ \u0000-\u001f\u007f-\u009f]+@[^@ \u0000-\u001f\u007f-\u009f]+$")]
    pub email: String,
    #[schema(pattern = r"^[a-z0-9._-]{1,64}$")]
    pub username: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub first_name: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub last_name: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub display_name: String,
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub locale: Option<String>,
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub timezone: Option<String>,
    #[schema(max_length = 2048, pattern = r"^https?://")]
    pub avatar_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub title: String,
    pub department_id: Option<Uuid>,
    /// A root admin owns the tenant (needs `manage` on the tenant to grant).
    #[serde(default)]
    pub is_root_admin: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"display_name": "Alice L.", "membership_status": "active"}))]
pub struct UpdateUser {
    #[schema(pattern = r"^[a-z0-9._-]{1,64}$")]
    pub username: Option<String>,
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub first_name: Option<String>,
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub last_name: Option<String>,
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub display_name: Option<String>,
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub locale: Option<String>,
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub timezone: Option<String>,
    #[schema(max_length = 2048, pattern = r"^https?://")]
    pub avatar_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub title: Option<String>,
    pub department_id: Option<Uuid>,
    /// The membership in this tenant.
    pub membership_status: Option<MembershipStatus>,
    pub is_root_admin: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "left the company"}))]
pub struct Suspend {
    #[schema(min_length = 1, max_length = 1000, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub reason: String,
}

/// A membership's status in its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStatus {
    Active,
    Suspended,
}

impl MembershipStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipStatus::Active => "active",
            MembershipStatus::Suspended => "suspended",
        }
    }
}

/// Lowercased and checked: one `@` with something on both sides, no spaces or control
/// characters, at most 320 characters.
pub fn normalize_email(email: &str) -> ApiResult<String> {
    let ok = email.chars().count() <= 320
        && email.split('@').count() == 2
        && email.split('@').all(|p| !p.is_empty())
        && !email.chars().any(|c| c == ' ' || c.is_control());
    let e = email.to_lowercase();
    if ok {
        Ok(e)
    } else {
        Err(Problem::invalid("/email", "`email` is not an email address"))
    }
}

fn check_username(u: &str) -> ApiResult<()> {
    if !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
        Ok(())
    } else {
        Err(Problem::invalid("/username", "`username` must be 1 to 64 of a-z, 0-9, `.`, `_` and `-`"))
    }
}

fn check_short(field: &str, v: &Option<String>) -> ApiResult<()> {
    match v {
        Some(v) => check_text(field, v, 64, false),
        None => Ok(()),
    }
}

fn check_avatar(v: &Option<String>) -> ApiResult<()> {
    match v {
        Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) || url.chars().count() > 2048 => {
            Err(Problem::invalid("/avatar_url", "`avatar_url` must be an http(s) URL of at most 2048 bytes"))
        }
        _ => Ok(()),
    }
}


/// The user `user_id` as tenant `tenant_id` sees them (RLS hides other tenants' users).
pub async fn fetch(tx: &mut Tx, tenant_id: Uuid, user_id: Uuid) -> ApiResult<TenantUser> {
    sqlx::query_as::<_, TenantUser>(&format!("{SELECT} WHERE tu.tenant_id = $1 AND u.id = $2"))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("user `{user_id}`")))
}

/// Makes `email` (an existing person, or a new one) a root admin of `tenant`: bootstrap
/// and tenant creation. Runs in the platform scope.
pub async fn add_owner(tx: &mut Tx, tenant: Uuid, email: &str) -> ApiResult<Uuid> {
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM arbiter_admin.users WHERE email = $1 AND status <> 'deleted'")
        .bind(email)
        .fetch_optional(tx.conn())
        .await?;
    let user = match existing {
        Some(id) => id,
        None => {
            let id = Uuid::new_v4();
            sqlx::query("INSERT INTO arbiter_admin.users (id, email) VALUES ($1, $2)").bind(id).bind(email).execute(tx.conn()).await?;
            id
        }
    };
    sqlx::query("INSERT INTO arbiter_admin.tenant_users (tenant_id, user_id, is_root_admin) VALUES ($1, $2, true)")
        .bind(tenant)
        .bind(user)
        .execute(tx.conn())
        .await?;
    tx.feed.touch(&feed::tenant(tenant), "member", &feed::user(user));
    tx.feed.touch(&feed::tenant(tenant), "owner", &feed::user(user));
    Ok(user)
}

async fn check_department(tx: &mut Tx, tenant_id: Uuid, department: Option<Uuid>) -> ApiResult<()> {
    if let Some(d) = department {
        let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM arbiter_admin.departments WHERE id = $1 AND tenant_id = $2")
            .bind(d)
            .bind(tenant_id)
            .fetch_optional(tx.conn())
            .await?;
        if found.is_none() {
            return Err(Problem::invalid("/department_id", format!("department `{d}` does not exist in this tenant")));
        }
    }
    Ok(())
}

/// Create a user in a tenant: a new global identity and its membership.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/users", tag = "users", request_body = CreateUser,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = TenantUser), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_user(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateUser>,
) -> ApiResult<Response> {
    let b = &body.value;
    let need = if b.is_root_admin { "manage" } else { "manage_users" };
    app.authorize(&caller, Need::Tenant(tenant_id, need)).await?;
    let email = normalize_email(&b.email)?;
    if let Some(u) = &b.username {
        check_username(u)?;
    }
    check_text("first_name", &b.first_name, 200, true)?;
    check_text("last_name", &b.last_name, 200, true)?;
    check_text("display_name", &b.display_name, 200, true)?;
    check_text("title", &b.title, 200, true)?;
    check_short("locale", &b.locale)?;
    check_short("timezone", &b.timezone)?;
    check_avatar(&b.avatar_url)?;
    if let Some(m) = &b.metadata {
        check_document("metadata", m)?;
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/users");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    check_department(&mut tx, tenant_id, b.department_id).await?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO arbiter_admin.users (id, email, username, first_name, last_name, display_name, locale, timezone, avatar_url, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, 'en'), coalesce($8, 'UTC'), $9, coalesce($10, '{}'::jsonb))",
    )
    .bind(id)
    .bind(&email)
    .bind(&b.username)
    .bind(&b.first_name)
    .bind(&b.last_name)
    .bind(&b.display_name)
    .bind(&b.locale)
    .bind(&b.timezone)
    .bind(&b.avatar_url)
    .bind(&b.metadata)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO arbiter_admin.tenant_users (tenant_id, user_id, is_root_admin, department_id, title) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(b.is_root_admin)
    .bind(b.department_id)
    .bind(&b.title)
    .execute(tx.conn())
    .await?;
    tx.feed.touch(&feed::tenant(tenant_id), "member", &feed::user(id));
    if b.is_root_admin {
        tx.feed.touch(&feed::tenant(tenant_id), "owner", &feed::user(id));
    }
    let user = fetch(&mut tx, tenant_id, id).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "user.create",
        target_type: "user",
        target_id: id.to_string(),
        before: None,
        after: snapshot(&user),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &user).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &user, Some(revision), Some(user.version)))
}

/// List a tenant's users; filter by `status` (the person's), `membership_status` or
/// `email`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/users", tag = "users", params(("tenant_id" = Uuid, Path), PageParams,
    ("status" = Option<String>, Query), ("membership_status" = Option<String>, Query), ("email" = Option<String>, Query)),
    responses((status = 200, body = PageOf<TenantUser>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_users(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["status", "membership_status", "email"])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, TenantUser>(&format!(
        "{SELECT} WHERE tu.tenant_id = $1 AND ($2::uuid IS NULL OR u.id > $2) AND ($3::text IS NULL OR u.status = $3)
         AND ($4::text IS NULL OR tu.status = $4) AND ($5::text IS NULL OR u.email = lower($5)) ORDER BY u.id LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("status"))
    .bind(q.filter("membership_status"))
    .bind(q.filter("email"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |u| u.id), None, None))
}

/// Read a user of a tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/users/{user_id}", tag = "users", params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = TenantUser), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_user(State(app): State<App>, caller: Caller, P((tenant_id, user_id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let user = fetch(&mut tx, tenant_id, user_id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &user, None, Some(user.version)))
}

/// Change a user's profile and membership. `If-Match` names the user's version.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/users/{user_id}", tag = "users", request_body = UpdateUser,
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = TenantUser), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_user(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, user_id)): P<(Uuid, Uuid)>,
    body: JsonBody<UpdateUser>,
) -> ApiResult<Response> {
    let b = &body.value;
    let need = if b.is_root_admin.is_some() { "manage" } else { "manage_users" };
    app.authorize(&caller, Need::Tenant(tenant_id, need)).await?;
    if let Some(u) = &b.username {
        check_username(u)?;
    }
    for (field, v) in [("first_name", &b.first_name), ("last_name", &b.last_name), ("display_name", &b.display_name), ("title", &b.title)] {
        if let Some(v) = v {
            check_text(field, v, 200, true)?;
        }
    }
    check_short("locale", &b.locale)?;
    check_short("timezone", &b.timezone)?;
    check_avatar(&b.avatar_url)?;
    if let Some(m) = &b.metadata {
        check_document("metadata", m)?;
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id, user_id).await?;
    check_if_match(&headers, before.version)?;
    check_department(&mut tx, tenant_id, b.department_id).await?;
    sqlx::query(
        "UPDATE arbiter_admin.users SET username = coalesce($2, username), first_name = coalesce($3, first_name),
            last_name = coalesce($4, last_name), display_name = coalesce($5, display_name), locale = coalesce($6, locale),
            timezone = coalesce($7, timezone), avatar_url = coalesce($8, avatar_url), metadata = coalesce($9, metadata),
            version = version + 1, updated_at = now()
         WHERE id = $1",
    )
    .bind(user_id)
    .bind(&b.username)
    .bind(&b.first_name)
    .bind(&b.last_name)
    .bind(&b.display_name)
    .bind(&b.locale)
    .bind(&b.timezone)
    .bind(&b.avatar_url)
    .bind(&b.metadata)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "UPDATE arbiter_admin.tenant_users SET title = coalesce($3, title), department_id = coalesce($4, department_id),
            status = coalesce($5, status), is_root_admin = coalesce($6, is_root_admin), updated_at = now()
         WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(&b.title)
    .bind(b.department_id)
    .bind(b.membership_status.map(MembershipStatus::as_str))
    .bind(b.is_root_admin)
    .execute(tx.conn())
    .await?;
    let after = fetch(&mut tx, tenant_id, user_id).await?;
    let (t, u) = (feed::tenant(tenant_id), feed::user(user_id));
    if before.membership_status != after.membership_status {
        if after.membership_status == "active" {
            tx.feed.touch(&t, "member", &u);
        } else {
            tx.feed.delete(&t, "member", &u);
        }
    }
    if before.is_root_admin != after.is_root_admin {
        if after.is_root_admin {
            tx.feed.touch(&t, "owner", &u);
        } else {
            tx.feed.delete(&t, "owner", &u);
        }
    }
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "user.update",
        target_type: "user",
        target_id: user_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Remove a user from a tenant: the membership, the user's group memberships and role
/// assignments in the tenant go, and so does every grant they fed. The person stays.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/users/{user_id}", tag = "users", params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204, description = "Removed from the tenant"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_user(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    P((tenant_id, user_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id, user_id).await?;
    if before.is_root_admin {
        // Removing an owner is an owner's call.
        app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    }
    let (t, u) = (feed::tenant(tenant_id), feed::user(user_id));
    let memberships: Vec<super::groups::Member> = sqlx::query_as(&format!(
        "DELETE FROM arbiter_admin.group_members WHERE tenant_id = $1 AND user_id = $2 RETURNING {}",
        super::groups::MEMBER_COLUMNS
    ))
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(tx.conn())
    .await?;
    for m in &memberships {
        super::groups::feed_member(&mut tx.feed, m, false);
    }
    let roles: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM arbiter_admin.role_assignments WHERE tenant_id = $1 AND user_id = $2 RETURNING role_id",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(tx.conn())
    .await?;
    for r in roles {
        tx.feed.delete(&feed::role(tenant_id, r), "holder", &u);
    }
    for relation in ["member", "owner", "admin", "user_manager", "auditor"] {
        tx.feed.delete(&t, relation, &u);
    }
    sqlx::query("DELETE FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "user.remove",
        target_type: "user",
        target_id: user_id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}

/// A person as platform operators see them.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub status_changed_by: Option<String>,
    pub version: i32,
}

async fn set_status(app: &App, caller: &Caller, ctx: &RequestContext, user_id: Uuid, status: &str, reason: Option<&str>) -> ApiResult<Response> {
    app.authorize(caller, Need::Platform).await?;
    if let Some(r) = reason {
        check_text("reason", r, 1000, false)?;
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let cols = "id, email, status, status_reason, status_changed_at, status_changed_by, version";
    let before = sqlx::query_as::<_, User>(&format!("SELECT {cols} FROM arbiter_admin.users WHERE id = $1 AND status <> 'deleted'"))
        .bind(user_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("user `{user_id}`")))?;
    if before.status == status {
        return Err(Problem::conflict("status", format!("the user is already {status}")));
    }
    let after = sqlx::query_as::<_, User>(&format!(
        "UPDATE arbiter_admin.users SET status = $2, status_reason = $3, status_changed_at = now(), status_changed_by = $4,
            version = version + 1, updated_at = now() WHERE id = $1 RETURNING {cols}"
    ))
    .bind(user_id)
    .bind(status)
    .bind(reason)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    if status == "suspended" {
        tx.feed.touch(feed::PLATFORM, "suspended", &feed::user(user_id));
    } else {
        tx.feed.delete(feed::PLATFORM, "suspended", &feed::user(user_id));
    }
    audit::record(&mut tx, caller, ctx, Entry {
        tenant: None,
        action: if status == "suspended" { "user.suspend" } else { "user.reactivate" },
        target_type: "user",
        target_id: user_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Suspend a person everywhere (platform operators): they hold no admin power in any
/// tenant until reactivated.
#[utoipa::path(post, path = "/v1/users/{user_id}/suspend", tag = "users", request_body = Suspend, params(("user_id" = Uuid, Path)),
    responses((status = 200, body = User), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn suspend_user(State(app): State<App>, caller: Caller, ctx: RequestContext, P(user_id): P<Uuid>, body: JsonBody<Suspend>) -> ApiResult<Response> {
    set_status(&app, &caller, &ctx, user_id, "suspended", Some(&body.value.reason)).await
}

/// Reactivate a suspended person (platform operators).
#[utoipa::path(post, path = "/v1/users/{user_id}/reactivate", tag = "users", params(("user_id" = Uuid, Path)),
    responses((status = 200, body = User), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn reactivate_user(State(app): State<App>, caller: Caller, ctx: RequestContext, P(user_id): P<Uuid>) -> ApiResult<Response> {
    set_status(&app, &caller, &ctx, user_id, "active", None).await
}
