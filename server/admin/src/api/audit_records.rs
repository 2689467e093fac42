//! Reading the audit trail (seed `audit_records`): a tenant's records (the `audit`
//! permission) and, for platform operators, all of them. Newest first; filter by actor,
//! effective actor (whom an impersonated call acted as), impersonation session, action
//! and target. Records are written by every mutating call ([`crate::audit`]) and are
//! append-only: there is no route that changes one.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{reply, P};
use crate::auth::{Caller, Need};
use crate::db::Scope;
use crate::http::App;
use crate::page::{NumberedPageParams, PageOf, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new().route("/v1/tenants/{tenant_id}/audit-records", get(list_tenant_records)).route("/v1/audit-records", get(list_records))
}

/// One audited change.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditRecord {
    /// Increasing: the trail's order.
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub tenant_id: Option<Uuid>,
    /// Who called (`api_key:<id>`, or `job:<name>` for a background job).
    pub actor: String,
    /// Whom the call acted as: the impersonated user (`user:<id>`), else the actor.
    pub effective_actor: String,
    /// The impersonation session the call ran in.
    pub impersonation_session_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// The revision the change reached the PDP at.
    pub revision: Option<i64>,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

const FILTERS: [&str; 6] = ["actor", "effective_actor", "impersonation_session_id", "action", "target_type", "target_id"];

/// A tenant's audit records, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/audit-records", tag = "audit",
    params(("tenant_id" = Uuid, Path), NumberedPageParams, ("actor" = Option<String>, Query), ("effective_actor" = Option<String>, Query),
        ("impersonation_session_id" = Option<Uuid>, Query), ("action" = Option<String>, Query), ("target_type" = Option<String>, Query),
        ("target_id" = Option<String>, Query)),
    responses((status = 200, body = PageOf<AuditRecord>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_records(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse_numbered(raw.as_deref(), app.max_page_size, &FILTERS)?;
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    list(&app, Scope::Tenant(tenant_id), Some(tenant_id), &q).await
}

/// Every audit record (platform operators), newest first; filter by `tenant_id` too.
#[utoipa::path(get, path = "/v1/audit-records", tag = "audit",
    params(NumberedPageParams, ("tenant_id" = Option<Uuid>, Query), ("actor" = Option<String>, Query), ("effective_actor" = Option<String>, Query),
        ("impersonation_session_id" = Option<Uuid>, Query), ("action" = Option<String>, Query), ("target_type" = Option<String>, Query),
        ("target_id" = Option<String>, Query)),
    responses((status = 200, body = PageOf<AuditRecord>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_records(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let mut allowed = FILTERS.to_vec();
    allowed.push("tenant_id");
    let q = Query::parse_numbered(raw.as_deref(), app.max_page_size, &allowed)?;
    let tenant = q.filter("tenant_id").map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("tenant_id", "is not a UUID"))).transpose()?;
    app.authorize(&caller, Need::Platform).await?;
    list(&app, Scope::Platform, tenant, &q).await
}

async fn list(app: &App, scope: Scope, tenant: Option<Uuid>, q: &Query) -> ApiResult<Response> {
    let session = q
        .filter("impersonation_session_id")
        .map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("impersonation_session_id", "is not a UUID")))
        .transpose()?;
    let mut tx = app.db.begin(scope).await?;
    let mut rows = sqlx::query_as::<_, AuditRecord>(
        "SELECT id, occurred_at, tenant_id, actor, effective_actor, impersonation_session_id, action, target_type, target_id, before, after,
                revision, request_id, client_ip, user_agent
         FROM arbiter_admin.audit_records
         WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::bigint IS NULL OR id < $2)
           AND ($3::text IS NULL OR actor = $3) AND ($4::text IS NULL OR effective_actor = $4)
           AND ($5::uuid IS NULL OR impersonation_session_id = $5) AND ($6::text IS NULL OR action = $6)
           AND ($7::text IS NULL OR target_type = $7) AND ($8::text IS NULL OR target_id = $8)
         ORDER BY id DESC LIMIT $9",
    )
    .bind(tenant)
    .bind(q.page.after_number)
    .bind(q.filter("actor"))
    .bind(q.filter("effective_actor"))
    .bind(session)
    .bind(q.filter("action"))
    .bind(q.filter("target_type"))
    .bind(q.filter("target_id"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let more = rows.len() > q.page.limit as usize;
    rows.truncate(q.page.limit as usize);
    let next_cursor = if more { rows.last().map(|r| r.id.to_string()) } else { None };
    Ok(reply(StatusCode::OK, &PageOf { items: rows, next_cursor }, None, None))
}
