//! Groups of a tenant and their members: users (with a role within the group: owner,
//! manager or member) and other groups of the tenant (nesting; no cycles).
//!
//! Feed: `platform/group:G#tenant@platform/tenant:T`; a user member is
//! `platform/group:G#member@platform/user:U` (owners and managers are also
//! `#manager`); a group member is `platform/group:G#member@platform/group:H#member`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_if_match, check_description, check_text, commit, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/groups", post(create_group).get(list_groups))
        .route("/v1/tenants/{tenant_id}/groups/{group_id}", get(get_group).patch(update_group).delete(delete_group))
        .route("/v1/tenants/{tenant_id}/groups/{group_id}/members", post(add_member).get(list_members))
        .route("/v1/tenants/{tenant_id}/groups/{group_id}/members/{member_id}", delete(remove_member))
}

/// A group.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Group {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub description: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const GROUP_COLUMNS: &str = "id, tenant_id, name, description, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "engineering", "description": "Everyone who builds"}))]
pub struct CreateGroup {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "Everyone who builds and runs"}))]
pub struct UpdateGroup {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
}

/// A member of a group: a user or a group.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Member {
    pub id: Uuid,
    pub group_id: Uuid,
    pub user_id: Option<Uuid>,
    /// A nested group: its members are members.
    pub member_group_id: Option<Uuid>,
    /// `owner`, `manager` or `member` (a nested group is always `member`).
    pub role: String,
    pub added_by: Option<String>,
    pub added_at: DateTime<Utc>,
}

pub const MEMBER_COLUMNS: &str = "id, group_id, user_id, member_group_id, role, added_by, added_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// A user of the tenant (or give `group_id`).
    pub user_id: Option<Uuid>,
    /// A group of the tenant to nest (or give `user_id`).
    pub group_id: Option<Uuid>,
    /// `member` by default.
    pub role: Option<MemberRole>,
}

/// A user's role within a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Owner,
    Manager,
    Member,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Owner => "owner",
            MemberRole::Manager => "manager",
            MemberRole::Member => "member",
        }
    }
}


async fn fetch(tx: &mut Tx, tenant_id: Uuid, group_id: Uuid) -> ApiResult<Group> {
    sqlx::query_as::<_, Group>(&format!("SELECT {GROUP_COLUMNS} FROM arbiter_admin.groups WHERE id = $1 AND tenant_id = $2"))
        .bind(group_id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("group `{group_id}`")))
}

/// Create a group.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/groups", tag = "groups", request_body = CreateGroup,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Group), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_group(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateGroup>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    check_text("name", &body.value.name, 200, false)?;
    check_description("description", &body.value.description, 2000)?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/groups");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let group = sqlx::query_as::<_, Group>(&format!(
        "INSERT INTO arbiter_admin.groups (id, tenant_id, name, description) VALUES ($1, $2, $3, $4) RETURNING {GROUP_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(&body.value.name)
    .bind(&body.value.description)
    .fetch_one(tx.conn())
    .await?;
    tx.feed.touch(&feed::group(group.id), "tenant", &feed::tenant(tenant_id));
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "group.create",
        target_type: "group",
        target_id: group.id.to_string(),
        before: None,
        after: snapshot(&group),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &group).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &group, Some(revision), Some(group.version)))
}

/// List a tenant's groups; filter by `name`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/groups", tag = "groups", params(("tenant_id" = Uuid, Path), PageParams, ("name" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Group>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_groups(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["name"])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, Group>(&format!(
        "SELECT {GROUP_COLUMNS} FROM arbiter_admin.groups WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
         AND ($3::text IS NULL OR name = $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("name"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |g| g.id), None, None))
}

/// Read a group.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/groups/{group_id}", tag = "groups", params(("tenant_id" = Uuid, Path), ("group_id" = Uuid, Path)),
    responses((status = 200, body = Group), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_group(State(app): State<App>, caller: Caller, P((tenant_id, group_id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let group = fetch(&mut tx, tenant_id, group_id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &group, None, Some(group.version)))
}

/// Rename or describe a group. `If-Match` guards against lost updates.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/groups/{group_id}", tag = "groups", request_body = UpdateGroup,
    params(("tenant_id" = Uuid, Path), ("group_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Group), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_group(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, group_id)): P<(Uuid, Uuid)>,
    body: JsonBody<UpdateGroup>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    if let Some(n) = &body.value.name {
        check_text("name", n, 200, false)?;
    }
    if let Some(d) = &body.value.description {
        check_description("description", d, 2000)?;
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id, group_id).await?;
    check_if_match(&headers, before.version)?;
    let after = sqlx::query_as::<_, Group>(&format!(
        "UPDATE arbiter_admin.groups SET name = coalesce($3, name), description = coalesce($4, description),
            version = version + 1, updated_at = now() WHERE id = $1 AND tenant_id = $2 RETURNING {GROUP_COLUMNS}"
    ))
    .bind(group_id)
    .bind(tenant_id)
    .bind(&body.value.name)
    .bind(&body.value.description)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "group.update",
        target_type: "group",
        target_id: group_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a group: its memberships, its place in other groups, its role assignments,
/// and every grant they fed.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/groups/{group_id}", tag = "groups",
    params(("tenant_id" = Uuid, Path), ("group_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_group(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, group_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id, group_id).await?;
    check_if_match(&headers, before.version)?;
    let g = feed::group(group_id);
    let members: Vec<Member> = sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM arbiter_admin.group_members WHERE tenant_id = $1 AND (group_id = $2 OR member_group_id = $2)"
    ))
    .bind(tenant_id)
    .bind(group_id)
    .fetch_all(tx.conn())
    .await?;
    for m in &members {
        feed_member(&mut tx.feed, m, false);
    }
    let roles: Vec<Uuid> = sqlx::query_scalar("SELECT role_id FROM arbiter_admin.role_assignments WHERE tenant_id = $1 AND group_id = $2")
        .bind(tenant_id)
        .bind(group_id)
        .fetch_all(tx.conn())
        .await?;
    for r in roles {
        tx.feed.delete(&feed::role(tenant_id, r), "holder", &feed::group_members(group_id));
    }
    for relation in ["admin", "user_manager", "auditor"] {
        tx.feed.delete(&feed::tenant(tenant_id), relation, &feed::group_members(group_id));
    }
    tx.feed.delete(&g, "tenant", &feed::tenant(tenant_id));
    sqlx::query("DELETE FROM arbiter_admin.groups WHERE id = $1 AND tenant_id = $2")
        .bind(group_id)
        .bind(tenant_id)
        .execute(tx.conn())
        .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "group.delete",
        target_type: "group",
        target_id: group_id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}

/// The relationships one membership row feeds: touched when `add`, else deleted.
pub fn feed_member(feed: &mut feed::Feed, m: &Member, add: bool) {
    let group = feed::group(m.group_id);
    let mut edges: Vec<(&str, String)> = Vec::new();
    if let Some(u) = m.user_id {
        edges.push(("member", feed::user(u)));
        if m.role != "member" {
            edges.push(("manager", feed::user(u)));
        }
    }
    if let Some(h) = m.member_group_id {
        edges.push(("member", feed::group_members(h)));
    }
    for (relation, subject) in edges {
        if add {
            feed.touch(&group, relation, &subject);
        } else {
            feed.delete(&group, relation, &subject);
        }
    }
}

/// Add a user or a nested group to a group.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/groups/{group_id}/members", tag = "groups", request_body = AddMember,
    params(("tenant_id" = Uuid, Path), ("group_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Member), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn add_member(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, group_id)): P<(Uuid, Uuid)>,
    body: JsonBody<AddMember>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    let role = b.role.map(MemberRole::as_str).unwrap_or("member");
    match (b.user_id, b.group_id) {
        (Some(_), Some(_)) | (None, None) => return Err(Problem::invalid("/user_id", "give exactly one of `user_id` and `group_id`")),
        (None, Some(_)) if role != "member" => return Err(Problem::invalid("/role", "a nested group's role is `member`")),
        (None, Some(h)) if h == group_id => return Err(Problem::invalid("/group_id", "a group cannot contain itself")),
        _ => {}
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/groups/{group_id}/members");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    fetch(&mut tx, tenant_id, group_id).await?;
    if let Some(u) = b.user_id {
        let member: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(u)
            .fetch_optional(tx.conn())
            .await?;
        if member.is_none() {
            return Err(Problem::invalid("/user_id", format!("user `{u}` is not a user of this tenant")));
        }
    }
    if let Some(h) = b.group_id {
        let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM arbiter_admin.groups WHERE id = $1 AND tenant_id = $2")
            .bind(h)
            .bind(tenant_id)
            .fetch_optional(tx.conn())
            .await?;
        if exists.is_none() {
            return Err(Problem::invalid("/group_id", format!("group `{h}` does not exist in this tenant")));
        }
        // Nesting h in g closes a cycle when g is already (transitively) inside h.
        tx.lock_nesting("groups", tenant_id).await?;
        let cycle: bool = sqlx::query_scalar(
            "WITH RECURSIVE inside(id) AS (
                 SELECT member_group_id FROM arbiter_admin.group_members WHERE group_id = $1 AND member_group_id IS NOT NULL
                 UNION SELECT gm.member_group_id FROM arbiter_admin.group_members gm JOIN inside ON gm.group_id = inside.id
                 WHERE gm.member_group_id IS NOT NULL)
             SELECT EXISTS (SELECT 1 FROM inside WHERE id = $2)",
        )
        .bind(h)
        .bind(group_id)
        .fetch_one(tx.conn())
        .await?;
        if cycle {
            return Err(Problem::invalid("/group_id", format!("group `{group_id}` is already inside group `{h}`: nesting it would make a cycle")));
        }
    }
    let member = sqlx::query_as::<_, Member>(&format!(
        "INSERT INTO arbiter_admin.group_members (id, tenant_id, group_id, user_id, member_group_id, role, added_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {MEMBER_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(group_id)
    .bind(b.user_id)
    .bind(b.group_id)
    .bind(role)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    feed_member(&mut tx.feed, &member, true);
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "group.member.add",
        target_type: "group_member",
        target_id: member.id.to_string(),
        before: None,
        after: snapshot(&member),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &member).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &member, Some(revision), None))
}

/// List a group's members (direct ones; nested groups appear as members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/groups/{group_id}/members", tag = "groups",
    params(("tenant_id" = Uuid, Path), ("group_id" = Uuid, Path), PageParams, ("role" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Member>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_members(
    State(app): State<App>,
    caller: Caller,
    P((tenant_id, group_id)): P<(Uuid, Uuid)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["role"])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    fetch(&mut tx, tenant_id, group_id).await?;
    let rows = sqlx::query_as::<_, Member>(&format!(
        "SELECT {MEMBER_COLUMNS} FROM arbiter_admin.group_members WHERE tenant_id = $1 AND group_id = $2
         AND ($3::uuid IS NULL OR id > $3) AND ($4::text IS NULL OR role = $4) ORDER BY id LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(group_id)
    .bind(q.page.after)
    .bind(q.filter("role"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |m| m.id), None, None))
}

/// Remove a member from a group.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/groups/{group_id}/members/{member_id}", tag = "groups",
    params(("tenant_id" = Uuid, Path), ("group_id" = Uuid, Path), ("member_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_member(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    P((tenant_id, group_id, member_id)): P<(Uuid, Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let gone = sqlx::query_as::<_, Member>(&format!(
        "DELETE FROM arbiter_admin.group_members WHERE id = $1 AND group_id = $2 AND tenant_id = $3 RETURNING {MEMBER_COLUMNS}"
    ))
    .bind(member_id)
    .bind(group_id)
    .bind(tenant_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("member `{member_id}`")))?;
    feed_member(&mut tx.feed, &gone, false);
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "group.member.remove",
        target_type: "group_member",
        target_id: member_id.to_string(),
        before: snapshot(&gone),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}
