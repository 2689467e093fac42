//! Decisions and their enforcement: the PDP's decision logs (seed `decision_logs`,
//! written by `arbiter serve --decision-log postgres`), and what policy enforcement
//! points report they did with a decision (seed `pep_logs`), joined.
//!
//! A tenant's decision logs are the decisions on its objects (the tenant, its roles and
//! permissions, and application objects whose `tenant` relation names it); the view
//! `arbiter_admin.decision_logs` enforces that in the database. A PEP learns a logged
//! decision's id from the Check response (`arbiter-decision-id`) and reports the outcome
//! it enforced; a report whose outcome differs from the decision is a disagreement
//! (`agrees: false`): an enforcement point that failed open, or one that cached a stale
//! answer.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::audit_records::{check_foreign_id, check_reported_time, time_param};
use super::{check_text, reply, JsonBody, P};
use crate::auth::{Caller, Need};
use crate::db::Scope;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/decision-logs", get(list_tenant_decisions))
        .route("/v1/decision-logs", get(list_decisions))
        .route("/v1/tenants/{tenant_id}/pep-logs", get(list_tenant_reports).post(report_tenant))
        .route("/v1/pep-logs", get(list_reports).post(report_platform))
}

/// A logged decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct DecisionLog {
    pub decision_id: String,
    pub evaluated_at: DateTime<Utc>,
    /// `type:id`
    pub resource: String,
    pub permission: String,
    /// `type:id[#relation]`
    pub subject: String,
    /// `allowed` or `denied`.
    pub decision: String,
    /// The revision it was made at (relationships, schema and policies alike).
    pub policy_version: i64,
    pub latency_ms: f64,
    pub trace_id: Option<String>,
    /// `Check`, `CheckBulk`, `CheckPermission`, `evaluation`, ...
    pub method: String,
}

const DECISION_COLUMNS: &str = "decision_id, evaluated_at, resource, permission, subject, decision, policy_version, latency_ms, trace_id, method";

/// A decision with what enforcement points reported of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionWithEnforcement {
    #[serde(flatten)]
    pub decision: DecisionLog,
    pub enforcements: Vec<PepLog>,
}

/// What an enforcement point reported.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PepLog {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub decision_id: String,
    /// The enforcement point's name.
    pub pep: String,
    pub enforcement_time: DateTime<Utc>,
    /// `allowed`, `denied` or `error`.
    pub outcome: String,
    /// The policy version the PEP saw with the decision.
    pub policy_version: Option<i64>,
    pub reported_by: String,
    pub created_at: DateTime<Utc>,
}

const PEP_COLUMNS: &str = "id, tenant_id, decision_id, pep, enforcement_time, outcome, policy_version, reported_by, created_at";

/// A report with the decision it names (when that decision was logged and is visible).
#[derive(Debug, Serialize, ToSchema)]
pub struct PepLogWithDecision {
    #[serde(flatten)]
    pub report: PepLog,
    pub decision: Option<DecisionLog>,
    /// Whether the outcome is the decision's (absent when the decision is unknown here).
    pub agrees: Option<bool>,
}

const DECISION_FILTERS: [&str; 7] = ["subject", "resource", "permission", "decision", "trace_id", "from", "to"];

/// Query parameters of the decision logs.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionParams {
    /// Items per page (1 to the server's maximum, `--max-page-size`).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}~[A-Za-z0-9_-]{1,256}$")]
    pub cursor: Option<String>,
    /// `type:id[#relation]`
    #[param(max_length = 1024)]
    pub subject: Option<String>,
    /// `type:id`
    #[param(max_length = 1024)]
    pub resource: Option<String>,
    #[param(max_length = 1024)]
    pub permission: Option<String>,
    #[param(pattern = "^(allowed|denied)$")]
    pub decision: Option<String>,
    #[param(max_length = 1024)]
    pub trace_id: Option<String>,
    /// Decisions at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Decisions before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// A tenant's decision logs, newest first (`audit`), each with its enforcement reports.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/decision-logs", tag = "decisions", params(("tenant_id" = Uuid, Path), DecisionParams),
    responses((status = 200, body = PageOf<DecisionWithEnforcement>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_decisions(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse_keyed(raw.as_deref(), app.max_page_size, &DECISION_FILTERS)?;
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    decisions(&app, Scope::Tenant(tenant_id), &q).await
}

/// Every decision log, newest first (platform operators).
#[utoipa::path(get, path = "/v1/decision-logs", tag = "decisions", params(DecisionParams),
    responses((status = 200, body = PageOf<DecisionWithEnforcement>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_decisions(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse_keyed(raw.as_deref(), app.max_page_size, &DECISION_FILTERS)?;
    app.authorize(&caller, Need::Platform).await?;
    decisions(&app, Scope::Platform, &q).await
}

async fn decisions(app: &App, scope: Scope, q: &Query) -> ApiResult<Response> {
    let decision = q.filter("decision");
    if decision.is_some_and(|d| d != "allowed" && d != "denied") {
        return Err(Problem::bad_request("decision", "`decision` is `allowed` or `denied`"));
    }
    let (from, to) = (time_param(q, "from")?, time_param(q, "to")?);
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {DECISION_COLUMNS} FROM arbiter_admin.decision_logs WHERE true"));
    for name in ["subject", "resource", "permission", "decision", "trace_id"] {
        if let Some(v) = q.filter(name) {
            b.push(format!(" AND {name} = ")).push_bind(v.to_string());
        }
    }
    if let Some(t) = from {
        b.push(" AND evaluated_at >= ").push_bind(t);
    }
    if let Some(t) = to {
        b.push(" AND evaluated_at < ").push_bind(t);
    }
    if let Some((micros, key)) = &q.after_key {
        let at = DateTime::<Utc>::from_timestamp_micros(*micros).unwrap_or(DateTime::<Utc>::MIN_UTC);
        b.push(" AND (evaluated_at, decision_id) < (").push_bind(at).push(", ").push_bind(key.clone()).push(")");
    }
    b.push(" ORDER BY evaluated_at DESC, decision_id DESC LIMIT ").push_bind(i64::from(q.page.limit) + 1);
    let mut tx = app.db.begin(scope).await?;
    let mut rows: Vec<DecisionLog> = b.build_query_as().fetch_all(tx.conn()).await?;
    let more = rows.len() > q.page.limit as usize;
    rows.truncate(q.page.limit as usize);
    let ids: Vec<&str> = rows.iter().map(|d| d.decision_id.as_str()).collect();
    let reports: Vec<PepLog> =
        sqlx::query_as(&format!("SELECT {PEP_COLUMNS} FROM arbiter_admin.pep_logs WHERE decision_id = ANY($1) ORDER BY id"))
            .bind(&ids)
            .fetch_all(tx.conn())
            .await?;
    tx.tx.rollback().await?;
    let next_cursor = if more { rows.last().map(|d| format!("{}~{}", d.evaluated_at.timestamp_micros(), d.decision_id)) } else { None };
    let items = rows
        .into_iter()
        .map(|d| {
            let enforcements = reports.iter().filter(|r| r.decision_id == d.decision_id).cloned().collect();
            DecisionWithEnforcement { decision: d, enforcements }
        })
        .collect();
    Ok(reply(StatusCode::OK, &PageOf { items, next_cursor }, None, None))
}

// ---------------------------------------------------------------------------------
// Enforcement reports

/// Most reports in one call.
const MAX_REPORTS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reports": [{"decision_id": "18f3a2c1b0-4d2-17", "pep": "api-gateway", "outcome": "allowed", "policy_version": 42}]}))]
pub struct ReportEnforcement {
    /// 1 to 1,000 reports.
    #[schema(min_items = 1, max_items = 1000)]
    pub reports: Vec<Enforcement>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enforcement {
    /// The decision's id (the Check response's `arbiter-decision-id`).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[!-~]+$")]
    pub decision_id: String,
    /// The enforcement point's name.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub pep: String,
    /// When it enforced (now when absent; at most 7 days ago, 5 minutes ahead).
    pub enforcement_time: Option<DateTime<Utc>>,
    /// `allowed`, `denied` or `error`.
    #[schema(pattern = "^(allowed|denied|error)$")]
    pub outcome: String,
    /// The policy version the PEP saw with the decision.
    #[schema(minimum = 0)]
    pub policy_version: Option<i64>,
}

/// What a report kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enforced {
    pub recorded: usize,
}

/// Report what enforcement points did with a tenant's decisions (`manage`).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/pep-logs", tag = "decisions", request_body = ReportEnforcement, params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Enforced), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn report_tenant(State(app): State<App>, caller: Caller, ctx: RequestContext, P(tenant_id): P<Uuid>, body: JsonBody<ReportEnforcement>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    report(&app, &caller, &ctx, Scope::Tenant(tenant_id), Some(tenant_id), body.value).await
}

/// Report what enforcement points did with decisions (platform operators).
#[utoipa::path(post, path = "/v1/pep-logs", tag = "decisions", request_body = ReportEnforcement,
    responses((status = 200, body = Enforced), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn report_platform(State(app): State<App>, caller: Caller, ctx: RequestContext, body: JsonBody<ReportEnforcement>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    report(&app, &caller, &ctx, Scope::Platform, None, body.value).await
}

fn check_report(i: usize, r: &Enforcement, now: DateTime<Utc>) -> ApiResult<()> {
    check_foreign_id(&format!("/reports/{i}/decision_id"), &r.decision_id)?;
    check_text(&format!("reports/{i}/pep"), &r.pep, 200, false)?;
    if !["allowed", "denied", "error"].contains(&r.outcome.as_str()) {
        return Err(Problem::invalid(format!("/reports/{i}/outcome"), "`outcome` is `allowed`, `denied` or `error`"));
    }
    if r.policy_version.is_some_and(|v| v < 0) {
        return Err(Problem::invalid(format!("/reports/{i}/policy_version"), "`policy_version` is a revision: 0 or more"));
    }
    check_reported_time(&format!("/reports/{i}/enforcement_time"), r.enforcement_time, now)
}

/// Checks every report, then keeps them all in one statement with one audit record
/// (all or nothing).
async fn report(app: &App, caller: &Caller, ctx: &RequestContext, scope: Scope, tenant: Option<Uuid>, body: ReportEnforcement) -> ApiResult<Response> {
    if body.reports.is_empty() || body.reports.len() > MAX_REPORTS {
        return Err(Problem::invalid("/reports", format!("`reports` must hold 1 to {MAX_REPORTS} reports")));
    }
    let now = Utc::now();
    for (i, r) in body.reports.iter().enumerate() {
        check_report(i, r, now)?;
    }
    let rows: Vec<serde_json::Value> = body
        .reports
        .iter()
        .map(|r| {
            serde_json::json!({"id": Uuid::now_v7(), "decision_id": r.decision_id, "pep": r.pep, "enforcement_time": r.enforcement_time.unwrap_or(now),
                "outcome": r.outcome, "policy_version": r.policy_version})
        })
        .collect();
    let mut tx = app.db.begin(scope).await?;
    sqlx::query(
        "INSERT INTO arbiter_admin.pep_logs (id, tenant_id, decision_id, pep, enforcement_time, outcome, policy_version, reported_by)
         SELECT id, $2, decision_id, pep, enforcement_time, outcome, policy_version, $3
         FROM jsonb_to_recordset($1) AS r(id uuid, decision_id text, pep text, enforcement_time timestamptz, outcome text, policy_version bigint)",
    )
    .bind(serde_json::Value::Array(rows))
    .bind(tenant)
    .bind(caller.actor())
    .execute(tx.conn())
    .await?;
    let mut peps: Vec<&str> = body.reports.iter().map(|r| r.pep.as_str()).collect();
    peps.sort_unstable();
    peps.dedup();
    crate::audit::record(&mut tx, caller, ctx, crate::audit::Entry {
        tenant,
        action: "pep_log.report",
        target_type: "pep",
        target_id: peps.first().map(|p| p.to_string()).unwrap_or_default(),
        before: None,
        after: Some(serde_json::json!({"recorded": body.reports.len(), "peps": peps.iter().take(20).collect::<Vec<_>>()})),
    })
    .await?;
    tx.commit().await?;
    let head = app.db.head().await?;
    Ok(reply(StatusCode::OK, &Enforced { recorded: body.reports.len() }, Some(head), None))
}

const REPORT_FILTERS: [&str; 4] = ["decision_id", "pep", "outcome", "agrees"];

/// A tenant's enforcement reports, newest first (`audit`), each with its decision; filter
/// by `decision_id`, `pep`, `outcome`, or `agrees=false` for disagreements.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/pep-logs", tag = "decisions",
    params(("tenant_id" = Uuid, Path), PageParams, ("decision_id" = Option<String>, Query), ("pep" = Option<String>, Query),
        ("outcome" = Option<String>, Query, pattern = "^(allowed|denied|error)$"), ("agrees" = Option<bool>, Query)),
    responses((status = 200, body = PageOf<PepLogWithDecision>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_reports(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &REPORT_FILTERS)?;
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    reports(&app, Scope::Tenant(tenant_id), &q).await
}

/// Every enforcement report, newest first (platform operators).
#[utoipa::path(get, path = "/v1/pep-logs", tag = "decisions",
    params(PageParams, ("decision_id" = Option<String>, Query), ("pep" = Option<String>, Query),
        ("outcome" = Option<String>, Query, pattern = "^(allowed|denied|error)$"), ("agrees" = Option<bool>, Query)),
    responses((status = 200, body = PageOf<PepLogWithDecision>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_reports(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &REPORT_FILTERS)?;
    app.authorize(&caller, Need::Platform).await?;
    reports(&app, Scope::Platform, &q).await
}

#[derive(Debug, sqlx::FromRow)]
struct JoinedRow {
    #[sqlx(flatten)]
    report: PepLog,
    decision: Option<sqlx::types::Json<DecisionLog>>,
}

async fn reports(app: &App, scope: Scope, q: &Query) -> ApiResult<Response> {
    let outcome = q.filter("outcome");
    if outcome.is_some_and(|o| !["allowed", "denied", "error"].contains(&o)) {
        return Err(Problem::bad_request("outcome", "`outcome` is `allowed`, `denied` or `error`"));
    }
    let agrees = match q.filter("agrees") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(Problem::bad_request("agrees", "`agrees` is `true` or `false`")),
    };
    let cols = PEP_COLUMNS.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
    let mut tx = app.db.begin(scope).await?;
    let rows: Vec<JoinedRow> = sqlx::query_as(&format!(
        "SELECT {cols}, CASE WHEN d.decision_id IS NULL THEN NULL ELSE to_jsonb(d) END AS decision
         FROM arbiter_admin.pep_logs p LEFT JOIN arbiter_admin.decision_logs d ON d.decision_id = p.decision_id
         WHERE ($1::uuid IS NULL OR p.id < $1) AND ($2::text IS NULL OR p.decision_id = $2) AND ($3::text IS NULL OR p.pep = $3)
           AND ($4::text IS NULL OR p.outcome = $4)
           AND ($5::boolean IS NULL OR (d.decision_id IS NOT NULL AND (p.outcome = d.decision) = $5))
         ORDER BY p.id DESC LIMIT $6"
    ))
    .bind(q.page.after)
    .bind(q.filter("decision_id"))
    .bind(q.filter("pep"))
    .bind(outcome)
    .bind(agrees)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let items: Vec<PepLogWithDecision> = rows
        .into_iter()
        .map(|r| {
            let decision = r.decision.map(|d| d.0);
            let agrees = decision.as_ref().map(|d| d.decision == r.report.outcome);
            PepLogWithDecision { report: r.report, decision, agrees }
        })
        .collect();
    Ok(reply(StatusCode::OK, &PageOf::of(items, q.page, |r| r.report.id), None, None))
}
