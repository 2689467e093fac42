//! Impersonation sessions (seed 001 `impersonation_sessions`): an admin acting as one of
//! a tenant's users, for a reason, within a scope, until it ends or expires.
//!
//! Who may impersonate whom is decided by the PDP: the caller needs `impersonate` on the
//! tenant (the platform schema: the tenant's managers and the platform's operators), and
//! a user who can manage the tenant may be impersonated only by an operator. A call
//! sent with `Arbiter-Impersonation: <session id>` (by the key that started it) is
//! decided as the user, and only for the permissions in the session's scope; its audit
//! record names the caller as the actor, the user as the effective actor, and the
//! session. Starting and ending a session are audited too.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
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
        .route("/v1/tenants/{tenant_id}/impersonation-sessions", post(start_session).get(list_sessions))
        .route("/v1/tenants/{tenant_id}/impersonation-sessions/{session_id}", get(get_session))
        .route("/v1/tenants/{tenant_id}/impersonation-sessions/{session_id}/end", post(end_session))
}

/// The tenant permissions a session's scope may name.
const SCOPES: [&str; 5] = ["view", "manage_users", "manage_roles", "manage", "audit"];

/// Longest session, and the default.
const MAX_SECONDS: i64 = 8 * 3600;
const DEFAULT_SECONDS: i64 = 3600;

/// An impersonation session.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ImpersonationSession {
    /// Send it as `Arbiter-Impersonation` to act as the user.
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Who impersonates (`api_key:<id>`).
    pub impersonator: String,
    pub target_user_id: Uuid,
    pub reason: String,
    /// The tenant permissions the session may use.
    pub scope: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, impersonator, target_user_id, reason, scope, started_at, expires_at, ended_at, ended_by";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"target_user_id": "7b0c8f1e-8c43-4f5e-9a53-0c6d1c1d2a11", "reason": "ticket 4711: the user cannot see their group",
    "scope": ["view"], "duration_seconds": 900}))]
pub struct StartSession {
    pub target_user_id: Uuid,
    #[schema(min_length = 1, max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub reason: String,
    /// Tenant permissions (`view`, `manage_users`, `manage_roles`, `manage`, `audit`);
    /// `["view"]` when absent.
    #[schema(min_items = 1, max_items = 5)]
    pub scope: Option<Vec<ScopeName>>,
    /// 60 to 28,800 (eight hours); 3,600 when absent.
    #[schema(minimum = 60, maximum = 28800)]
    pub duration_seconds: Option<i64>,
}

/// A tenant permission of the platform schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeName {
    View,
    ManageUsers,
    ManageRoles,
    Manage,
    Audit,
}

impl ScopeName {
    fn as_str(self) -> &'static str {
        SCOPES[self as usize]
    }
}

async fn fetch(tx: &mut Tx, tenant_id: Uuid, id: Uuid) -> ApiResult<ImpersonationSession> {
    sqlx::query_as::<_, ImpersonationSession>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.impersonation_sessions WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("impersonation session `{id}`")))
}

/// Start impersonating a user of the tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/impersonation-sessions", tag = "impersonation", request_body = StartSession,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = ImpersonationSession), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn start_session(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<StartSession>,
) -> ApiResult<Response> {
    if caller.impersonation.is_some() {
        return Err(Problem::forbidden("an impersonation session cannot start another"));
    }
    app.authorize(&caller, Need::Tenant(tenant_id, "impersonate")).await?;
    let b = &body.value;
    if b.reason.trim().is_empty() {
        return Err(Problem::invalid("/reason", "`reason` is required: say why"));
    }
    check_description("reason", &b.reason, 2000)?;
    let seconds = b.duration_seconds.unwrap_or(DEFAULT_SECONDS);
    if !(60..=MAX_SECONDS).contains(&seconds) {
        return Err(Problem::invalid("/duration_seconds", format!("`duration_seconds` must be 60 to {MAX_SECONDS}")));
    }
    let mut scope: Vec<&str> = b.scope.as_deref().unwrap_or(&[ScopeName::View]).iter().map(|s| s.as_str()).collect();
    if scope.is_empty() {
        return Err(Problem::invalid("/scope", "`scope` names at least one permission"));
    }
    scope.sort_unstable();
    scope.dedup();
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/impersonation-sessions");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let member: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = $2)")
        .bind(tenant_id)
        .bind(b.target_user_id)
        .fetch_one(tx.conn())
        .await?;
    if !member {
        return Err(Problem::invalid("/target_user_id", format!("the tenant has no user `{}`", b.target_user_id)));
    }
    // Whom: a user who manages the tenant only by a platform operator.
    let head = app.db.head().await?;
    let target_manages = app.pdp.check(&feed::tenant(tenant_id), "manage", &feed::user(b.target_user_id), head).await?;
    if target_manages && !app.pdp.check(feed::PLATFORM, "operate", &caller.subject(), head).await? {
        return Err(Problem::forbidden("the user manages the tenant: only a platform operator may impersonate them"));
    }
    let s = sqlx::query_as::<_, ImpersonationSession>(&format!(
        "INSERT INTO arbiter_admin.impersonation_sessions (id, tenant_id, impersonator, impersonator_key_id, target_user_id, reason, scope, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(caller.actor())
    .bind(caller.key_id)
    .bind(b.target_user_id)
    .bind(&b.reason)
    .bind(&scope)
    .bind(Utc::now() + Duration::seconds(seconds))
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "impersonation.start",
        target_type: "impersonation_session",
        target_id: s.id.to_string(),
        before: None,
        after: snapshot(&s),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &s).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &s, Some(revision), None))
}

/// A tenant's impersonation sessions; filter by `target_user_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/impersonation-sessions", tag = "impersonation",
    params(("tenant_id" = Uuid, Path), PageParams, ("target_user_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<ImpersonationSession>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_sessions(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["target_user_id"])?;
    let target =
        q.filter("target_user_id").map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("target_user_id", "is not a UUID"))).transpose()?;
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, ImpersonationSession>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.impersonation_sessions WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::uuid IS NULL OR target_user_id = $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(target)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |s| s.id), None, None))
}

/// Read an impersonation session.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/impersonation-sessions/{session_id}", tag = "impersonation",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 200, body = ImpersonationSession), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_session(State(app): State<App>, caller: Caller, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let s = fetch(&mut tx, tenant_id, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &s, None, None))
}

/// End a session: by the key that started it, or by anyone who may impersonate in the
/// tenant. Calls naming it are refused from then on.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/impersonation-sessions/{session_id}/end", tag = "impersonation",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 200, body = ImpersonationSession), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn end_session(State(app): State<App>, caller: Caller, ctx: RequestContext, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let own: Option<Uuid> = sqlx::query_scalar("SELECT impersonator_key_id FROM arbiter_admin.impersonation_sessions WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?;
    if own != Some(caller.key_id) || caller.impersonation.is_some() {
        let plain = Caller { impersonation: None, ..caller.clone() };
        app.authorize(&plain, Need::Tenant(tenant_id, "impersonate")).await?;
    }
    let before = fetch(&mut tx, tenant_id, id).await?;
    if before.ended_at.is_some() {
        return Err(Problem::conflict("/ended_at", "the session has already ended"));
    }
    let after = sqlx::query_as::<_, ImpersonationSession>(&format!(
        "UPDATE arbiter_admin.impersonation_sessions SET ended_at = now(), ended_by = $2 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    let plain = Caller { impersonation: None, ..caller.clone() };
    audit::record(&mut tx, &plain, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "impersonation.end",
        target_type: "impersonation_session",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), None))
}
