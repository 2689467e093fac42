//! The audit trail (seed `audit_records`): read it, export it, and report other
//! services' events into it.
//!
//! A tenant's records need the `audit` permission; every record, platform operators.
//! The trail is ordered by time, newest first, and filtered by actor, effective actor
//! (whom an impersonated call acted as), impersonation session, action (or an action
//! prefix, `user.*`), target, request id, stream, service, severity and a time range
//! (`from` inclusive, `to` exclusive). An export streams the same query whole as NDJSON
//! or CSV, a page of rows at a time, each page its own short transaction.
//!
//! Records are written by every mutating call ([`crate::audit`]), by refused calls
//! (the `security` stream) and by services reporting events here; they are
//! append-only: no route changes one, and only the retention sweep removes them.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_document, check_text, reply, JsonBody, P};
use crate::auth::{Caller, Need};
use crate::db::Scope;
use crate::http::{App, RequestContext};
use crate::page::{time_cursor_of, PageOf, Query, TimePageParams};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/audit-records", get(list_tenant_records))
        .route("/v1/tenants/{tenant_id}/audit-records/export", get(export_tenant_records))
        .route("/v1/tenants/{tenant_id}/audit-events", post(report_tenant_events))
        .route("/v1/audit-records", get(list_records))
        .route("/v1/audit-records/export", get(export_records))
        .route("/v1/audit-events", post(report_events))
}

/// One audited change or event.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditRecord {
    /// Unique and increasing in the order records were written.
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub tenant_id: Option<Uuid>,
    /// `changes` (every mutating call), `security` (refused calls), `events` (reported
    /// by services) or a stream an operator made.
    pub stream: String,
    /// The service that wrote it: `admin` for the admin's own records.
    pub service_name: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// Who called (`api_key:<id>`, or `job:<name>` for a background job).
    pub actor: String,
    /// Whom the call acted as: the impersonated user (`user:<id>`), else the actor.
    pub effective_actor: String,
    /// The impersonation session the call ran in.
    pub impersonation_session_id: Option<Uuid>,
    /// What happened (the seed's event type): `tenant.create`, `access.denied`, ...
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// What a reported event or a refusal carries.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// The revision the change reached the PDP at.
    pub revision: Option<i64>,
    /// The request (the seed's correlation id).
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The columns of an [`AuditRecord`].
pub const COLUMNS: &str = "id, occurred_at, tenant_id, stream, service_name, severity, actor, effective_actor, impersonation_session_id, action,
    target_type, target_id, before, after, payload, revision, request_id, client_ip, user_agent";

const FILTERS: [&str; 12] = [
    "actor", "effective_actor", "impersonation_session_id", "action", "target_type", "target_id", "request_id", "stream", "service_name",
    "severity", "from", "to",
];

pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// A query's filters, checked.
#[derive(Debug, Default, Clone)]
struct Filter {
    tenant: Option<Uuid>,
    equal: Vec<(&'static str, String)>,
    session: Option<Uuid>,
    /// `action=user.*`: the prefix `user.`.
    action_prefix: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl Filter {
    fn read(q: &Query, tenant: Option<Uuid>) -> ApiResult<Filter> {
        let mut f = Filter { tenant, ..Filter::default() };
        for name in ["actor", "effective_actor", "target_type", "target_id", "request_id", "stream", "service_name"] {
            if let Some(v) = q.filter(name) {
                f.equal.push((name, v.to_string()));
            }
        }
        if let Some(s) = q.filter("severity") {
            if !SEVERITIES.contains(&s) {
                return Err(Problem::bad_request("severity", format!("`severity` must be one of {}", SEVERITIES.join(", "))));
            }
            f.equal.push(("severity", s.to_string()));
        }
        if let Some(a) = q.filter("action") {
            match a.strip_suffix('*') {
                Some(prefix) if prefix.is_empty() || prefix.ends_with('.') => f.action_prefix = Some(prefix.to_string()),
                Some(_) => return Err(Problem::bad_request("action", "`action` is an action (`user.create`) or a prefix ending in `.*` (`user.*`)")),
                None => f.equal.push(("action", a.to_string())),
            }
        }
        f.session = q
            .filter("impersonation_session_id")
            .map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("impersonation_session_id", "is not a UUID")))
            .transpose()?;
        f.from = time_param(q, "from")?;
        f.to = time_param(q, "to")?;
        if let (Some(from), Some(to)) = (f.from, f.to) {
            if from >= to {
                return Err(Problem::bad_request("to", "`to` must be later than `from`"));
            }
        }
        Ok(f)
    }

    /// The query for one page: the newest `limit` records before `after`.
    fn select(&self, after: Option<(i64, i64)>, limit: u32) -> QueryBuilder<'_, Postgres> {
        let mut b = QueryBuilder::new(format!("SELECT {COLUMNS} FROM arbiter_admin.audit_records WHERE true"));
        if let Some(t) = self.tenant {
            b.push(" AND tenant_id = ").push_bind(t);
        }
        for (column, value) in &self.equal {
            // Column names come from the fixed list above, never from the request.
            b.push(format!(" AND {column} = ")).push_bind(value.as_str());
        }
        if let Some(s) = self.session {
            b.push(" AND impersonation_session_id = ").push_bind(s);
        }
        if let Some(p) = &self.action_prefix {
            if !p.is_empty() {
                let pattern = format!("{}%", p.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
                b.push(" AND action LIKE ").push_bind(pattern);
            }
        }
        if let Some(from) = self.from {
            b.push(" AND occurred_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            b.push(" AND occurred_at < ").push_bind(to);
        }
        if let Some((micros, id)) = after {
            let at = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC);
            b.push(" AND (occurred_at, id) < (").push_bind(at).push(", ").push_bind(id).push(")");
        }
        b.push(" ORDER BY occurred_at DESC, id DESC LIMIT ").push_bind(i64::from(limit));
        b
    }
}

/// A time query parameter (RFC 3339), if given.
pub fn time_param(q: &Query, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    q.filter(name)
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| Problem::bad_request(name, format!("`{name}` must be an RFC 3339 time (`2026-12-01T00:00:00Z`)")))
        })
        .transpose()
}

/// When a reported event or enforcement happened: at most 7 days ago, at most 5 minutes
/// ahead (clocks differ a little; a report does not rewrite history).
pub fn check_reported_time(field: &str, t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> ApiResult<()> {
    match t {
        Some(t) if t < now - Duration::days(7) || t > now + Duration::minutes(5) => {
            let name = field.rsplit('/').next().unwrap_or(field);
            Err(Problem::invalid(field, format!("`{name}` must be within the last 7 days (and at most 5 minutes ahead)")))
        }
        _ => Ok(()),
    }
}

/// An identifier another system made (a correlation id, a decision id): 1 to 256 visible
/// ASCII characters.
pub fn check_foreign_id(field: &str, v: &str) -> ApiResult<()> {
    if v.is_empty() || v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        let name = field.rsplit('/').next().unwrap_or(field);
        return Err(Problem::invalid(field, format!("`{name}` must be 1 to 256 visible ASCII characters")));
    }
    Ok(())
}

async fn fetch_page(app: &App, scope: Scope, filter: &Filter, after: Option<(i64, i64)>, limit: u32) -> ApiResult<Vec<AuditRecord>> {
    let mut tx = app.db.begin(scope).await?;
    let rows = filter.select(after, limit).build_query_as::<AuditRecord>().fetch_all(tx.conn()).await?;
    tx.tx.rollback().await?;
    Ok(rows)
}

fn cursor_of(r: &AuditRecord) -> (i64, i64) {
    (r.occurred_at.timestamp_micros(), r.id)
}

/// A tenant's audit records, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/audit-records", tag = "audit",
    params(("tenant_id" = Uuid, Path), TimePageParams, TrailFilters),
    responses((status = 200, body = PageOf<AuditRecord>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_records(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse_timed(raw.as_deref(), app.max_page_size, &FILTERS)?;
    let filter = Filter::read(&q, Some(tenant_id))?;
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    list(&app, Scope::Tenant(tenant_id), &filter, &q).await
}

/// Every audit record (platform operators), newest first; filter by `tenant_id` too.
#[utoipa::path(get, path = "/v1/audit-records", tag = "audit",
    params(TimePageParams, ("tenant_id" = Option<Uuid>, Query), TrailFilters),
    responses((status = 200, body = PageOf<AuditRecord>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_records(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse_timed(raw.as_deref(), app.max_page_size, &platform_filters())?;
    let filter = Filter::read(&q, tenant_filter(&q)?)?;
    app.authorize(&caller, Need::Platform).await?;
    list(&app, Scope::Platform, &filter, &q).await
}

fn platform_filters() -> Vec<&'static str> {
    let mut allowed = FILTERS.to_vec();
    allowed.push("tenant_id");
    allowed
}

fn tenant_filter(q: &Query) -> ApiResult<Option<Uuid>> {
    q.filter("tenant_id").map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("tenant_id", "is not a UUID"))).transpose()
}

async fn list(app: &App, scope: Scope, filter: &Filter, q: &Query) -> ApiResult<Response> {
    let mut rows = fetch_page(app, scope, filter, q.page.after_time, q.page.limit + 1).await?;
    let more = rows.len() > q.page.limit as usize;
    rows.truncate(q.page.limit as usize);
    let next_cursor = if more { rows.last().map(|r| { let (t, id) = cursor_of(r); time_cursor_of(t, id) }) } else { None };
    Ok(reply(StatusCode::OK, &PageOf { items: rows, next_cursor }, None, None))
}

/// The filters of a trail query (documented once for every route that takes them).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrailFilters {
    /// Who called.
    #[param(max_length = 1024)]
    pub actor: Option<String>,
    /// Whom the call acted as.
    #[param(max_length = 1024)]
    pub effective_actor: Option<String>,
    pub impersonation_session_id: Option<Uuid>,
    /// An action (`user.create`) or a prefix of actions (`user.*`).
    #[param(max_length = 1024)]
    pub action: Option<String>,
    #[param(max_length = 1024)]
    pub target_type: Option<String>,
    #[param(max_length = 1024)]
    pub target_id: Option<String>,
    /// The request (correlation) id.
    #[param(max_length = 1024)]
    pub request_id: Option<String>,
    #[param(max_length = 1024)]
    pub stream: Option<String>,
    #[param(max_length = 1024)]
    pub service_name: Option<String>,
    #[param(pattern = "^(low|medium|high|critical)$")]
    pub severity: Option<String>,
    /// Records at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Records before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------
// Export

/// Rows fetched per page of an export.
const EXPORT_PAGE: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

fn export_format(q: &Query) -> ApiResult<Format> {
    match q.filter("format") {
        None | Some("ndjson") => Ok(Format::Ndjson),
        Some("csv") => Ok(Format::Csv),
        Some(_) => Err(Problem::bad_request("format", "`format` must be `ndjson` or `csv`")),
    }
}

/// Export a tenant's audit records (the query of the list, whole), streamed.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/audit-records/export", tag = "audit",
    params(("tenant_id" = Uuid, Path), ExportParams, TrailFilters),
    responses((status = 200, description = "One record per line (NDJSON), or CSV with a header row",
        content(("application/x-ndjson"), ("text/csv"))),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn export_tenant_records(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let mut allowed = FILTERS.to_vec();
    allowed.push("format");
    let q = Query::parse_timed(raw.as_deref(), app.max_page_size, &allowed)?;
    let format = export_format(&q)?;
    let filter = Filter::read(&q, Some(tenant_id))?;
    app.authorize(&caller, Need::Tenant(tenant_id, "audit")).await?;
    export(app, Scope::Tenant(tenant_id), filter, q.page.after_time, format).await
}

/// Export audit records (platform operators), streamed.
#[utoipa::path(get, path = "/v1/audit-records/export", tag = "audit",
    params(ExportParams, ("tenant_id" = Option<Uuid>, Query), TrailFilters),
    responses((status = 200, description = "One record per line (NDJSON), or CSV with a header row",
        content(("application/x-ndjson"), ("text/csv"))),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn export_records(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let mut allowed = platform_filters();
    allowed.push("format");
    let q = Query::parse_timed(raw.as_deref(), app.max_page_size, &allowed)?;
    let format = export_format(&q)?;
    let filter = Filter::read(&q, tenant_filter(&q)?)?;
    app.authorize(&caller, Need::Platform).await?;
    export(app, Scope::Platform, filter, q.page.after_time, format).await
}

/// An export's own parameter.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `ndjson` (the default) or `csv`.
    #[param(pattern = "^(ndjson|csv)$")]
    pub format: Option<String>,
    /// Start after this record: a list page's `next_cursor`.
    #[param(pattern = r"^[0-9]{1,18}\.[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// Streams the query whole: the first page is read before the response starts (so an
/// error is still a problem document); later pages follow as the client reads. The
/// export ends at the time it started (`to` defaults to then), so records written
/// during it do not join it.
async fn export(app: App, scope: Scope, mut filter: Filter, after: Option<(i64, i64)>, format: Format) -> ApiResult<Response> {
    if filter.to.is_none() {
        filter.to = Some(Utc::now() + Duration::microseconds(1));
    }
    let first = fetch_page(&app, scope, &filter, after, EXPORT_PAGE).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        let mut chunk = Vec::with_capacity(256 * 1024);
        if format == Format::Csv {
            csv_header(&mut chunk);
        }
        let mut page = first;
        loop {
            for r in &page {
                match format {
                    Format::Ndjson => {
                        if serde_json::to_writer(&mut chunk, r).is_err() {
                            return;
                        }
                        chunk.push(b'\n');
                    }
                    Format::Csv => csv_row(&mut chunk, r),
                }
            }
            if tx.send(Ok(Bytes::from(std::mem::take(&mut chunk)))).await.is_err() {
                return; // The client went away.
            }
            if page.len() < EXPORT_PAGE as usize {
                return;
            }
            let after = page.last().map(cursor_of);
            page = match fetch_page(&app, scope, &filter, after, EXPORT_PAGE).await {
                Ok(p) => p,
                Err(p) => {
                    // The status is sent; the body ends short, which a client sees as a
                    // truncated transfer (the chunked encoding has no final chunk).
                    tracing::warn!("an audit export stopped: {}", p.detail);
                    let _ = tx.send(Ok(Bytes::new())).await;
                    return;
                }
            };
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let (content_type, extension) = match format {
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"audit-records.{extension}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

const CSV_COLUMNS: [&str; 19] = [
    "id", "occurred_at", "tenant_id", "stream", "service_name", "severity", "actor", "effective_actor", "impersonation_session_id", "action",
    "target_type", "target_id", "before", "after", "payload", "revision", "request_id", "client_ip", "user_agent",
];

fn csv_header(out: &mut Vec<u8>) {
    out.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn csv_row(out: &mut Vec<u8>, r: &AuditRecord) {
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
    let cells: [String; 19] = [
        r.id.to_string(),
        r.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        r.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        r.stream.clone(),
        r.service_name.clone(),
        r.severity.clone(),
        r.actor.clone(),
        r.effective_actor.clone(),
        r.impersonation_session_id.map(|s| s.to_string()).unwrap_or_default(),
        r.action.clone(),
        r.target_type.clone(),
        r.target_id.clone(),
        json(&r.before),
        json(&r.after),
        json(&r.payload),
        r.revision.map(|v| v.to_string()).unwrap_or_default(),
        r.request_id.clone(),
        r.client_ip.clone().unwrap_or_default(),
        r.user_agent.clone().unwrap_or_default(),
    ];
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_cell(out, c);
    }
    out.extend_from_slice(b"\r\n");
}

/// One CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line break. A
/// cell a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab
/// or a carriage return) is prefixed with `'`, so opening an export never runs what an
/// actor wrote into a field.
fn csv_cell(out: &mut Vec<u8>, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || cell.contains([',', '"', '\n', '\r']);
    if quote {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for b in cell.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    if quote {
        out.push(b'"');
    }
}

// ---------------------------------------------------------------------------------
// Events reported by services

/// Most events in one report.
pub const MAX_EVENTS: usize = 1000;

/// Events a service reports (another service's audit trail, kept here).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"events": [{"service_name": "billing", "event_type": "invoice.refund", "actor": "user:4a5e", "severity": "medium",
    "target_type": "invoice", "target_id": "inv-77", "payload": {"amount": 120}}]}))]
pub struct ReportEvents {
    /// 1 to 1,000 events.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<ReportedEvent>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedEvent {
    /// The reporting service (not `admin`, which is the admin's own).
    #[schema(pattern = r"^[a-z][a-z0-9_.-]{0,62}$")]
    pub service_name: String,
    /// What happened: dot-separated lower-case words (`login.failed`).
    #[schema(max_length = 128, pattern = r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")]
    pub event_type: String,
    /// `low` (the default), `medium`, `high` or `critical`.
    #[schema(pattern = "^(low|medium|high|critical)$")]
    pub severity: Option<String>,
    /// Who did it, in the service's terms.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub actor: String,
    /// Whom they acted as; the actor when absent.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub effective_actor: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub target_type: String,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub target_id: String,
    /// The request the event belongs to; this report's request id when absent.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[!-~]+$")]
    pub correlation_id: Option<String>,
    /// When it happened (at most 7 days ago, at most 5 minutes ahead); now when absent.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The tenant it belongs to (the platform route only; a tenant's route sets it).
    pub tenant_id: Option<Uuid>,
    /// What else the service records: an object (at most 64 KiB, 16 levels).
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
}

/// What a report kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reported {
    /// Events written to the trail.
    pub kept: usize,
    /// Events the service's audit config does not enable.
    pub dropped: usize,
}

/// Report a tenant's events from another service (the tenant's `manage` permission).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/audit-events", tag = "audit", request_body = ReportEvents,
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Reported), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn report_tenant_events(State(app): State<App>, caller: Caller, ctx: RequestContext, P(tenant_id): P<Uuid>, body: JsonBody<ReportEvents>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    if let Some(i) = body.value.events.iter().position(|e| e.tenant_id.is_some_and(|t| t != tenant_id)) {
        return Err(Problem::invalid(format!("/events/{i}/tenant_id"), "an event reported to a tenant belongs to that tenant"));
    }
    report(&app, &caller, &ctx, Scope::Tenant(tenant_id), Some(tenant_id), body.value).await
}

/// Report events from another service (platform operators).
#[utoipa::path(post, path = "/v1/audit-events", tag = "audit", request_body = ReportEvents,
    responses((status = 200, body = Reported), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn report_events(State(app): State<App>, caller: Caller, ctx: RequestContext, body: JsonBody<ReportEvents>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    report(&app, &caller, &ctx, Scope::Platform, None, body.value).await
}

fn check_event(i: usize, e: &ReportedEvent, now: DateTime<Utc>) -> ApiResult<()> {
    let field = |f: &str| format!("/events/{i}/{f}");
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let service = e.service_name.as_bytes();
    let service_ok = !service.is_empty()
        && service.len() <= 63
        && service[0].is_ascii_lowercase()
        && service.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if !service_ok {
        return Err(Problem::invalid(field("service_name"), "`service_name` must be 1 to 63 lower-case letters, digits, `_`, `.` and `-`, starting with a letter"));
    }
    if e.service_name == "admin" {
        return Err(Problem::invalid(field("service_name"), "`admin` is the admin's own service name; report under your service's name"));
    }
    if e.event_type.len() > 128 || !e.event_type.split('.').all(word) {
        return Err(Problem::invalid(field("event_type"), "`event_type` must be dot-separated lower-case words (`login.failed`), at most 128 characters"));
    }
    if let Some(s) = &e.severity {
        if !SEVERITIES.contains(&s.as_str()) {
            return Err(Problem::invalid(field("severity"), format!("`severity` must be one of {}", SEVERITIES.join(", "))));
        }
    }
    check_text(&format!("events/{i}/actor"), &e.actor, 256, false)?;
    if let Some(a) = &e.effective_actor {
        check_text(&format!("events/{i}/effective_actor"), a, 256, false)?;
    }
    check_text(&format!("events/{i}/target_type"), &e.target_type, 256, true)?;
    check_text(&format!("events/{i}/target_id"), &e.target_id, 1024, true)?;
    if let Some(c) = &e.correlation_id {
        check_foreign_id(&field("correlation_id"), c)?;
    }
    check_reported_time(&field("occurred_at"), e.occurred_at, now)?;
    if let Some(p) = &e.payload {
        check_document(&format!("events/{i}/payload"), p)?;
    }
    Ok(())
}

/// Does `pattern` (an event type, a prefix `login.*`, or `*`) take `event`?
pub fn pattern_matches(pattern: &str, event: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event.starts_with(prefix),
        None => pattern == event,
    }
}

/// Checks every event, then keeps those the services' configs enable, in one
/// transaction (all or nothing).
async fn report(app: &App, caller: &Caller, ctx: &RequestContext, scope: Scope, tenant: Option<Uuid>, body: ReportEvents) -> ApiResult<Response> {
    if body.events.is_empty() || body.events.len() > MAX_EVENTS {
        return Err(Problem::invalid("/events", format!("`events` must hold 1 to {MAX_EVENTS} events")));
    }
    let now = Utc::now();
    for (i, e) in body.events.iter().enumerate() {
        check_event(i, e, now)?;
    }
    let mut tx = app.db.begin(scope).await?;
    let mut services: Vec<&str> = body.events.iter().map(|e| e.service_name.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let configs: Vec<(String, Vec<String>, String)> =
        sqlx::query_as("SELECT service_name, enabled_events, stream FROM arbiter_admin.audit_configs WHERE service_name = ANY($1)")
            .bind(&services)
            .fetch_all(tx.conn())
            .await?;
    let mut rows = Vec::with_capacity(body.events.len());
    for e in &body.events {
        let config = configs.iter().find(|c| c.0 == e.service_name);
        let stream = match config {
            Some((_, enabled, stream)) if enabled.iter().any(|p| pattern_matches(p, &e.event_type)) => stream.as_str(),
            Some(_) => continue,
            None => "events",
        };
        rows.push(serde_json::json!({
            "tenant_id": tenant.or(e.tenant_id),
            "stream": stream,
            "service_name": e.service_name,
            "severity": e.severity.as_deref().unwrap_or("low"),
            "actor": e.actor,
            "effective_actor": e.effective_actor.as_deref().unwrap_or(&e.actor),
            "action": e.event_type,
            "target_type": e.target_type,
            "target_id": e.target_id,
            "payload": e.payload,
            "request_id": e.correlation_id.as_deref().unwrap_or(&ctx.request_id),
            "occurred_at": e.occurred_at.unwrap_or(now),
        }));
    }
    let kept = rows.len();
    if kept > 0 {
        // One statement for the batch; the reporter is kept as the client of each.
        sqlx::query(
            "INSERT INTO arbiter_admin.audit_records
                (tenant_id, stream, service_name, severity, actor, effective_actor, action, target_type, target_id, payload, request_id,
                 occurred_at, client_ip, user_agent)
             SELECT tenant_id, stream, service_name, severity, actor, effective_actor, action, target_type, target_id, payload, request_id,
                    occurred_at, $2, $3
             FROM jsonb_to_recordset($1) AS e(tenant_id uuid, stream text, service_name text, severity text, actor text, effective_actor text,
                  action text, target_type text, target_id text, payload jsonb, request_id text, occurred_at timestamptz)",
        )
        .bind(Value::Array(rows))
        .bind(&ctx.client_ip)
        .bind(ctx.user_agent.as_deref().map(|u| format!("{u} (reported by {})", caller.actor())).unwrap_or_else(|| format!("reported by {}", caller.actor())))
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    // No revision is written; the header names the newest, as for any mutating call.
    let head = app.db.head().await?;
    Ok(reply(StatusCode::OK, &Reported { kept, dropped: body.events.len() - kept }, Some(head), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_an_event_a_prefix_or_all() {
        assert!(pattern_matches("*", "login.failed"));
        assert!(pattern_matches("login.*", "login.failed"));
        assert!(!pattern_matches("login.*", "logout"));
        assert!(pattern_matches("login.failed", "login.failed"));
        assert!(!pattern_matches("login.failed", "login.failed.twice"));
    }

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        let cell = |s: &str| {
            let mut out = Vec::new();
            csv_cell(&mut out, s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1"), "\"'-1\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
    }
}
