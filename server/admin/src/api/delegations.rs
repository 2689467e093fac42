//! Delegations (seed 001 `delegations`): a user's role in a tenant, held by another user
//! of the tenant for a time window.
//!
//! The grantor must hold the role when the delegation is written (a PDP Check), and must
//! not hold it as a delegate (delegations are not passed on, so they cannot form a
//! cycle). While the window lasts the delegate holds the role through
//! `platform/delegation:D#delegate@platform/user:U`, expiring at `valid_until` (the PDP
//! ends it by the clock, with no write at that moment), and
//! `platform/role:T_R#holder@platform/delegation:D#delegate` (a built-in role: the
//! tenant's relation). A window that starts later is fed by the background job
//! ([`crate::jobs`]) when it starts: relationships have no start time, and Cedar is
//! consulted only at the top of a Check, so it cannot see a role held deep in the graph;
//! once caveats exist a time caveat can replace the job. The job also revokes a
//! delegation whose grantor no longer holds the role. Revoking deletes both relationships
//! at once.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_description, commit, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/delegations", post(create_delegation).get(list_delegations))
        .route("/v1/tenants/{tenant_id}/delegations/{delegation_id}", get(get_delegation))
        .route("/v1/tenants/{tenant_id}/delegations/{delegation_id}/revoke", post(revoke_delegation))
}

/// A delegation.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Delegation {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub grantor_user_id: Uuid,
    pub delegate_user_id: Uuid,
    /// The role delegated (the tenant's, or a global one).
    pub role_id: Uuid,
    pub reason: String,
    pub valid_from: DateTime<Utc>,
    /// Never ends when null.
    pub valid_until: Option<DateTime<Utc>>,
    /// `scheduled`, `active`, `ended` or `revoked`, by the clock now.
    #[sqlx(skip)]
    pub status: String,
    /// Whether its relationships are in the graph.
    pub fed: bool,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl Delegation {
    fn with_status(mut self) -> Delegation {
        let now = Utc::now();
        self.status = if self.revoked_at.is_some() {
            "revoked"
        } else if self.valid_until.is_some_and(|u| u <= now) {
            "ended"
        } else if self.valid_from > now {
            "scheduled"
        } else {
            "active"
        }
        .to_string();
        self
    }
}

const COLUMNS: &str =
    "id, tenant_id, grantor_user_id, delegate_user_id, role_id, reason, valid_from, valid_until, fed, revoked_at, revoked_by, created_by, created_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"grantor_user_id": "7b0c8f1e-8c43-4f5e-9a53-0c6d1c1d2a11", "delegate_user_id": "0d1f6a3e-2b1c-4c1e-8f3e-5b0e4c7a9d21",
    "role_id": "5f0e2c4b-9a1d-4e3f-8b2a-1c0d9e8f7a6b", "valid_until": "2027-01-15T00:00:00Z", "reason": "holiday cover"}))]
pub struct CreateDelegation {
    pub grantor_user_id: Uuid,
    pub delegate_user_id: Uuid,
    pub role_id: Uuid,
    /// Now when absent.
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub reason: String,
}

/// The relationship that makes a delegation's delegates hold `role` in `tenant`: the
/// role's holder, or a built-in role's tenant relation.
fn role_target(tenant: Uuid, role: Uuid, builtin: Option<&str>) -> (String, String) {
    match builtin {
        Some(b) => (feed::tenant(tenant), b.to_string()),
        None => (feed::role(tenant, role), "holder".to_string()),
    }
}

fn delegation_object(id: Uuid) -> String {
    format!("platform/delegation:{id}")
}

/// Feeds (`add`) or withdraws a delegation's relationships.
pub(crate) async fn feed_delegation(tx: &mut Tx, d: &Delegation, add: bool) -> ApiResult<()> {
    let builtin: Option<Option<String>> =
        sqlx::query_scalar("SELECT builtin FROM arbiter_admin.roles WHERE id = $1").bind(d.role_id).fetch_optional(tx.conn()).await?;
    let builtin = builtin.flatten();
    let (resource, relation) = role_target(d.tenant_id, d.role_id, builtin.as_deref());
    let object = delegation_object(d.id);
    let delegates = format!("{object}#delegate");
    if add {
        tx.feed.touch_until(&object, "delegate", &feed::user(d.delegate_user_id), d.valid_until);
        tx.feed.touch(&resource, &relation, &delegates);
    } else {
        tx.feed.delete(&object, "delegate", &feed::user(d.delegate_user_id));
        tx.feed.delete(&resource, &relation, &delegates);
    }
    Ok(())
}

/// Does `user` hold the delegation's role now, in the PDP's view at `revision`?
pub(crate) async fn holds(app: &App, tenant: Uuid, role: Uuid, builtin: Option<&str>, user: Uuid, revision: u64) -> ApiResult<bool> {
    let (resource, relation) = role_target(tenant, role, builtin);
    app.pdp.check(&resource, &relation, &feed::user(user), revision).await
}

async fn fetch(tx: &mut Tx, tenant_id: Uuid, id: Uuid) -> ApiResult<Delegation> {
    sqlx::query_as::<_, Delegation>(&format!("SELECT {COLUMNS} FROM arbiter_admin.delegations WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .map(Delegation::with_status)
        .ok_or_else(|| Problem::not_found(format!("delegation `{id}`")))
}

async fn member(tx: &mut Tx, tenant_id: Uuid, user: Uuid, field: &str) -> ApiResult<()> {
    let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = $2)")
        .bind(tenant_id)
        .bind(user)
        .fetch_one(tx.conn())
        .await?;
    if found {
        Ok(())
    } else {
        Err(Problem::invalid(field, format!("the tenant has no user `{user}`")))
    }
}

/// Delegate a role a user holds to another user of the tenant, for a time window.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/delegations", tag = "delegations", request_body = CreateDelegation,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Delegation), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_delegation(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateDelegation>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_roles")).await?;
    let b = &body.value;
    check_description("reason", &b.reason, 2000)?;
    if b.grantor_user_id == b.delegate_user_id {
        return Err(Problem::invalid("/delegate_user_id", "a user cannot delegate to themselves"));
    }
    let now = Utc::now();
    let valid_from = b.valid_from.unwrap_or(now).max(now);
    if let Some(until) = b.valid_until {
        if until <= valid_from {
            return Err(Problem::invalid("/valid_until", "`valid_until` must be after `valid_from` (and after now)"));
        }
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/delegations");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    member(&mut tx, tenant_id, b.grantor_user_id, "/grantor_user_id").await?;
    member(&mut tx, tenant_id, b.delegate_user_id, "/delegate_user_id").await?;
    let builtin: Option<Option<String>> =
        sqlx::query_scalar("SELECT builtin FROM arbiter_admin.roles WHERE id = $1 AND (tenant_id = $2 OR tenant_id IS NULL)")
            .bind(b.role_id)
            .bind(tenant_id)
            .fetch_optional(tx.conn())
            .await?;
    let builtin = builtin.ok_or_else(|| Problem::invalid("/role_id", format!("the tenant has no role `{}`", b.role_id)))?;
    let head = app.db.head().await?;
    if !holds(&app, tenant_id, b.role_id, builtin.as_deref(), b.grantor_user_id, head).await? {
        return Err(Problem::invalid("/role_id", "the grantor does not hold the role, so cannot delegate it"));
    }
    let redelegating: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM arbiter_admin.delegations WHERE tenant_id = $1 AND role_id = $2 AND delegate_user_id = $3
           AND revoked_at IS NULL AND (valid_until IS NULL OR valid_until > now()))",
    )
    .bind(tenant_id)
    .bind(b.role_id)
    .bind(b.grantor_user_id)
    .fetch_one(tx.conn())
    .await?;
    if redelegating {
        return Err(Problem::invalid("/grantor_user_id", "the grantor holds the role as a delegate: a delegation is not passed on"));
    }
    let starts_now = valid_from <= now;
    let d = sqlx::query_as::<_, Delegation>(&format!(
        "INSERT INTO arbiter_admin.delegations (id, tenant_id, grantor_user_id, delegate_user_id, role_id, reason, valid_from, valid_until, fed, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(b.grantor_user_id)
    .bind(b.delegate_user_id)
    .bind(b.role_id)
    .bind(&b.reason)
    .bind(valid_from)
    .bind(b.valid_until)
    .bind(starts_now)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?
    .with_status();
    if starts_now {
        feed_delegation(&mut tx, &d, true).await?;
    }
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "delegation.create",
        target_type: "delegation",
        target_id: d.id.to_string(),
        before: None,
        after: snapshot(&d),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &d).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &d, Some(revision), None))
}

/// A tenant's delegations; filter by `grantor_user_id`, `delegate_user_id` or `role_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/delegations", tag = "delegations",
    params(("tenant_id" = Uuid, Path), PageParams, ("grantor_user_id" = Option<Uuid>, Query), ("delegate_user_id" = Option<Uuid>, Query), ("role_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<Delegation>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_delegations(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["grantor_user_id", "delegate_user_id", "role_id"])?;
    let uuid = |name: &str| q.filter(name).map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request(name, "is not a UUID"))).transpose();
    let (grantor, delegate, role) = (uuid("grantor_user_id")?, uuid("delegate_user_id")?, uuid("role_id")?);
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, Delegation>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.delegations WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::uuid IS NULL OR grantor_user_id = $3) AND ($4::uuid IS NULL OR delegate_user_id = $4) AND ($5::uuid IS NULL OR role_id = $5)
         ORDER BY id LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(grantor)
    .bind(delegate)
    .bind(role)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let rows: Vec<Delegation> = rows.into_iter().map(Delegation::with_status).collect();
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |d| d.id), None, None))
}

/// Read a delegation.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/delegations/{delegation_id}", tag = "delegations",
    params(("tenant_id" = Uuid, Path), ("delegation_id" = Uuid, Path)),
    responses((status = 200, body = Delegation), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_delegation(State(app): State<App>, caller: Caller, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let d = fetch(&mut tx, tenant_id, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &d, None, None))
}

/// Revoke a delegation: the delegate stops holding the role at the returned revision.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/delegations/{delegation_id}/revoke", tag = "delegations",
    params(("tenant_id" = Uuid, Path), ("delegation_id" = Uuid, Path)),
    responses((status = 200, body = Delegation), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_delegation(State(app): State<App>, caller: Caller, ctx: RequestContext, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_roles")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id, id).await?;
    if before.revoked_at.is_some() {
        return Err(Problem::conflict("/status", "the delegation is already revoked"));
    }
    let after = revoke(&mut tx, &before, &caller.actor()).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "delegation.revoke",
        target_type: "delegation",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), None))
}

/// Marks `d` revoked by `by` and withdraws its relationships (if fed).
pub(crate) async fn revoke(tx: &mut Tx, d: &Delegation, by: &str) -> ApiResult<Delegation> {
    if d.fed {
        feed_delegation(tx, d, false).await?;
    }
    let after = sqlx::query_as::<_, Delegation>(&format!(
        "UPDATE arbiter_admin.delegations SET revoked_at = now(), revoked_by = $2, fed = false WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(d.id)
    .bind(by)
    .fetch_one(tx.conn())
    .await?;
    Ok(after.with_status())
}

/// Delegations whose window has started and that are not fed yet (the job feeds them).
pub(crate) async fn due(tx: &mut Tx, limit: i64) -> ApiResult<Vec<Delegation>> {
    let rows = sqlx::query_as::<_, Delegation>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.delegations WHERE NOT fed AND revoked_at IS NULL AND valid_from <= now()
           AND (valid_until IS NULL OR valid_until > now()) ORDER BY valid_from LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(Delegation::with_status).collect())
}

/// Marks a delegation fed (its relationships are in the transaction's feed).
pub(crate) async fn mark_fed(tx: &mut Tx, id: Uuid) -> ApiResult<Delegation> {
    let d = sqlx::query_as::<_, Delegation>(&format!("UPDATE arbiter_admin.delegations SET fed = true WHERE id = $1 RETURNING {COLUMNS}"))
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    Ok(d.with_status())
}

/// Fed delegations that still run, after `after` (id order), for the grantor recheck.
pub(crate) async fn running(tx: &mut Tx, after: Option<Uuid>, limit: i64) -> ApiResult<Vec<(Delegation, Option<String>)>> {
    let rows = sqlx::query_as::<_, Delegation>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.delegations WHERE fed AND revoked_at IS NULL AND ($1::uuid IS NULL OR id > $1)
           AND (valid_until IS NULL OR valid_until > now()) ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for d in rows {
        let builtin: Option<Option<String>> =
            sqlx::query_scalar("SELECT builtin FROM arbiter_admin.roles WHERE id = $1").bind(d.role_id).fetch_optional(tx.conn()).await?;
        out.push((d.with_status(), builtin.flatten()));
    }
    Ok(out)
}
