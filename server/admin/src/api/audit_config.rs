//! Log streams (seed `log_streams`) and per-service audit configs (`audit_configs`):
//! where the trail's records go, which of a service's events are kept, and for how
//! long. Platform operators write them; every caller with `view` on a tenant reads them.
//!
//! A record is kept for the shorter of its stream's and its service's `retention_days`
//! (neither set: kept); the retention sweep ([`crate::jobs`]) removes the rest. The
//! built-in streams (`changes`, `security`, `events`) cannot be deleted; their retention
//! can change. A service's config decides which of its reported events are kept and in
//! which stream; the admin's own changes are kept whatever its config says.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::labels::catalogue_reader;
use super::{check_description, check_if_match, commit, no_content, nullable, reply, whole_number, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/log-streams", post(create_stream).get(list_streams))
        .route("/v1/log-streams/{stream_id}", get(get_stream).patch(update_stream).delete(delete_stream))
        .route("/v1/audit-configs", post(create_config).get(list_configs))
        .route("/v1/audit-configs/{config_id}", get(get_config).patch(update_config).delete(delete_config))
}

/// A stream of the audit trail.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct LogStream {
    pub id: Uuid,
    pub name: String,
    /// Days a record is kept; absent: kept.
    pub retention_days: Option<i32>,
    pub description: String,
    /// `changes`, `security` and `events` are built in (they cannot be deleted).
    pub built_in: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const STREAM_COLUMNS: &str = "id, name, retention_days, description, built_in, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "billing", "retention_days": 400, "description": "Invoices and refunds"}))]
pub struct CreateStream {
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,62}$")]
    pub name: String,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 36500)]
    pub retention_days: Option<i32>,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"retention_days": 30}))]
pub struct UpdateStream {
    /// `null` keeps records for good.
    #[serde(default, deserialize_with = "nullable_days")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 36500)]
    pub retention_days: Option<Option<i32>>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
}

/// A service's audit config.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditConfig {
    pub id: Uuid,
    pub service_name: String,
    /// Patterns of the events kept: an event type, a prefix (`login.*`) or `*`.
    pub enabled_events: Vec<String>,
    /// Days the service's records are kept (the stream's retention also applies).
    pub retention_days: Option<i32>,
    /// The stream its events go to.
    pub stream: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CONFIG_COLUMNS: &str = "id, service_name, enabled_events, retention_days, stream, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"service_name": "billing", "enabled_events": ["invoice.*", "login.failed"], "retention_days": 400, "stream": "events"}))]
pub struct CreateConfig {
    #[schema(pattern = r"^[a-z][a-z0-9_.-]{0,62}$")]
    pub service_name: String,
    #[schema(max_items = 100, value_type = Vec<super::EventPattern>)]
    pub enabled_events: Vec<String>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 36500)]
    pub retention_days: Option<i32>,
    /// `events` when absent.
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,62}$")]
    pub stream: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled_events": ["*"]}))]
pub struct UpdateConfig {
    #[schema(max_items = 100, value_type = Option<Vec<super::EventPattern>>)]
    pub enabled_events: Option<Vec<String>>,
    /// `null` removes the service's own retention.
    #[serde(default, deserialize_with = "nullable_days")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 36500)]
    pub retention_days: Option<Option<i32>>,
    #[schema(pattern = r"^[a-z][a-z0-9_-]{0,62}$")]
    pub stream: Option<String>,
}

fn nullable_days<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    #[derive(Deserialize)]
    struct Days(#[serde(deserialize_with = "whole_number")] Option<i32>);
    let v: Option<Option<Days>> = nullable(d)?;
    Ok(v.map(|o| o.and_then(|Days(d)| d)))
}

/// Checks an event pattern (`field` is blamed).
pub fn check_pattern(field: &str, p: &str) -> ApiResult<()> {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let body = p.strip_suffix(".*").unwrap_or(p);
    if p == "*" || (p.len() <= 128 && body.split('.').all(word)) {
        Ok(())
    } else {
        Err(Problem::invalid(field, "an event pattern is an event type (`login.failed`), a prefix (`login.*`) or `*`"))
    }
}

fn check_days(field: &str, days: Option<i32>) -> ApiResult<()> {
    match days {
        Some(d) if !(1..=36500).contains(&d) => Err(Problem::invalid(field, "retention is 1 to 36,500 days")),
        _ => Ok(()),
    }
}

fn check_name(field: &str, name: &str, extra: &[u8]) -> ApiResult<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-' || extra.contains(c));
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(field, format!("`{}` must be 1 to 63 lower-case letters, digits, `_` and `-`, starting with a letter", field.trim_start_matches('/'))))
    }
}

async fn fetch_stream(tx: &mut Tx, id: Uuid) -> ApiResult<LogStream> {
    sqlx::query_as::<_, LogStream>(&format!("SELECT {STREAM_COLUMNS} FROM arbiter_admin.log_streams WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("log stream `{id}`")))
}

async fn fetch_config(tx: &mut Tx, id: Uuid) -> ApiResult<AuditConfig> {
    sqlx::query_as::<_, AuditConfig>(&format!("SELECT {CONFIG_COLUMNS} FROM arbiter_admin.audit_configs WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("audit config `{id}`")))
}

#[allow(clippy::too_many_arguments)]
async fn audit_row<T: Serialize>(tx: &mut Tx, caller: &Caller, ctx: &RequestContext, action: &str, target_type: &str, id: Uuid, before: Option<&T>, after: Option<&T>) -> ApiResult<()> {
    audit::record(tx, caller, ctx, Entry {
        tenant: None,
        action,
        target_type,
        target_id: id.to_string(),
        before: before.and_then(snapshot),
        after: after.and_then(snapshot),
    })
    .await
}

/// Make a log stream (platform operators).
#[utoipa::path(post, path = "/v1/log-streams", tag = "audit", request_body = CreateStream,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = LogStream), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_stream(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreateStream>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    check_name("/name", &b.name, b"")?;
    check_days("/retention_days", b.retention_days)?;
    check_description("description", &b.description, 2000)?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/log-streams", &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let stream = sqlx::query_as::<_, LogStream>(&format!(
        "INSERT INTO arbiter_admin.log_streams (id, name, retention_days, description) VALUES ($1, $2, $3, $4) RETURNING {STREAM_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&b.name)
    .bind(b.retention_days)
    .bind(&b.description)
    .fetch_one(tx.conn())
    .await?;
    audit_row(&mut tx, &caller, &ctx, "log_stream.create", "log_stream", stream.id, None, Some(&stream)).await?;
    idem.save(&mut tx, StatusCode::CREATED, &stream).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &stream, Some(revision), Some(stream.version)))
}

/// List the log streams; filter by `name`.
#[utoipa::path(get, path = "/v1/log-streams", tag = "audit", params(PageParams, ("name" = Option<String>, Query)),
    responses((status = 200, body = PageOf<LogStream>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_streams(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["name"])?;
    let mut tx = catalogue_reader(&app, &caller).await?;
    let rows = sqlx::query_as::<_, LogStream>(&format!(
        "SELECT {STREAM_COLUMNS} FROM arbiter_admin.log_streams WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR name = $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(q.page.after)
    .bind(q.filter("name"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |s| s.id), None, None))
}

/// Read a log stream.
#[utoipa::path(get, path = "/v1/log-streams/{stream_id}", tag = "audit", params(("stream_id" = Uuid, Path)),
    responses((status = 200, body = LogStream), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_stream(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    let mut tx = catalogue_reader(&app, &caller).await?;
    let s = fetch_stream(&mut tx, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &s, None, Some(s.version)))
}

/// Change a stream's retention or description (its name is what records carry: fixed).
#[utoipa::path(patch, path = "/v1/log-streams/{stream_id}", tag = "audit", request_body = UpdateStream,
    params(("stream_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = LogStream), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_stream(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>, body: JsonBody<UpdateStream>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    if let Some(days) = b.retention_days {
        check_days("/retention_days", days)?;
    }
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch_stream(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    let after = sqlx::query_as::<_, LogStream>(&format!(
        "UPDATE arbiter_admin.log_streams SET retention_days = $2, description = $3, version = version + 1, updated_at = now() WHERE id = $1
         RETURNING {STREAM_COLUMNS}"
    ))
    .bind(id)
    .bind(b.retention_days.unwrap_or(before.retention_days))
    .bind(b.description.as_ref().unwrap_or(&before.description))
    .fetch_one(tx.conn())
    .await?;
    audit_row(&mut tx, &caller, &ctx, "log_stream.update", "log_stream", id, Some(&before), Some(&after)).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a stream that holds no record and that no config names (built-in streams
/// stay).
#[utoipa::path(delete, path = "/v1/log-streams/{stream_id}", tag = "audit", params(("stream_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_stream(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch_stream(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    if before.built_in {
        return Err(Problem::conflict("/stream_id", format!("`{}` is a built-in stream; set its retention instead", before.name)));
    }
    let used: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM arbiter_admin.audit_records WHERE stream = $1) OR EXISTS (SELECT 1 FROM arbiter_admin.audit_configs WHERE stream = $1)",
    )
    .bind(&before.name)
    .fetch_one(tx.conn())
    .await?;
    if used {
        return Err(Problem::conflict("/stream_id", format!("stream `{}` still holds records or is named by an audit config", before.name)));
    }
    sqlx::query("DELETE FROM arbiter_admin.log_streams WHERE id = $1").bind(id).execute(tx.conn()).await?;
    audit_row(&mut tx, &caller, &ctx, "log_stream.delete", "log_stream", id, Some(&before), None).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

fn check_patterns(patterns: &[String]) -> ApiResult<Vec<String>> {
    if patterns.len() > 100 {
        return Err(Problem::invalid("/enabled_events", "`enabled_events` holds at most 100 patterns"));
    }
    for (i, p) in patterns.iter().enumerate() {
        check_pattern(&format!("/enabled_events/{i}"), p)?;
    }
    Ok(patterns.to_vec())
}

/// The stream a config names must exist (422 naming `/stream`, not the constraint), and
/// not be one the admin keeps its own records in: a reported event never sits among the
/// changes or the refusals.
async fn check_stream(tx: &mut Tx, name: &str) -> ApiResult<()> {
    check_name("/stream", name, b"")?;
    if name == "changes" || name == "security" {
        return Err(Problem::invalid("/stream", format!("`{name}` holds the admin's own records; reported events go to `events` or a stream of their own")));
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM arbiter_admin.log_streams WHERE name = $1)").bind(name).fetch_one(tx.conn()).await?;
    if exists {
        Ok(())
    } else {
        Err(Problem::invalid("/stream", format!("there is no log stream `{name}`")))
    }
}

/// Set a service's audit config (platform operators).
#[utoipa::path(post, path = "/v1/audit-configs", tag = "audit", request_body = CreateConfig,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = AuditConfig), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_config(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreateConfig>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    check_name("/service_name", &b.service_name, b".")?;
    let patterns = check_patterns(&b.enabled_events)?;
    check_days("/retention_days", b.retention_days)?;
    let stream = b.stream.clone().unwrap_or_else(|| "events".to_string());
    check_name("/stream", &stream, b"")?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/audit-configs", &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    check_stream(&mut tx, &stream).await?;
    let config = sqlx::query_as::<_, AuditConfig>(&format!(
        "INSERT INTO arbiter_admin.audit_configs (id, service_name, enabled_events, retention_days, stream) VALUES ($1, $2, $3, $4, $5)
         RETURNING {CONFIG_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&b.service_name)
    .bind(&patterns)
    .bind(b.retention_days)
    .bind(&stream)
    .fetch_one(tx.conn())
    .await?;
    audit_row(&mut tx, &caller, &ctx, "audit_config.create", "audit_config", config.id, None, Some(&config)).await?;
    idem.save(&mut tx, StatusCode::CREATED, &config).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &config, Some(revision), Some(config.version)))
}

/// List the audit configs; filter by `service_name`.
#[utoipa::path(get, path = "/v1/audit-configs", tag = "audit", params(PageParams, ("service_name" = Option<String>, Query)),
    responses((status = 200, body = PageOf<AuditConfig>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_configs(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["service_name"])?;
    let mut tx = catalogue_reader(&app, &caller).await?;
    let rows = sqlx::query_as::<_, AuditConfig>(&format!(
        "SELECT {CONFIG_COLUMNS} FROM arbiter_admin.audit_configs WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR service_name = $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(q.page.after)
    .bind(q.filter("service_name"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |c| c.id), None, None))
}

/// Read an audit config.
#[utoipa::path(get, path = "/v1/audit-configs/{config_id}", tag = "audit", params(("config_id" = Uuid, Path)),
    responses((status = 200, body = AuditConfig), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_config(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    let mut tx = catalogue_reader(&app, &caller).await?;
    let c = fetch_config(&mut tx, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &c, None, Some(c.version)))
}

/// Change which events a service keeps, where, and for how long.
#[utoipa::path(patch, path = "/v1/audit-configs/{config_id}", tag = "audit", request_body = UpdateConfig,
    params(("config_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = AuditConfig), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_config(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>, body: JsonBody<UpdateConfig>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    let patterns = b.enabled_events.as_deref().map(check_patterns).transpose()?;
    if let Some(days) = b.retention_days {
        check_days("/retention_days", days)?;
    }
    if let Some(s) = &b.stream {
        check_name("/stream", s, b"")?;
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch_config(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    if let Some(s) = &b.stream {
        check_stream(&mut tx, s).await?;
    }
    let after = sqlx::query_as::<_, AuditConfig>(&format!(
        "UPDATE arbiter_admin.audit_configs SET enabled_events = $2, retention_days = $3, stream = $4, version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING {CONFIG_COLUMNS}"
    ))
    .bind(id)
    .bind(patterns.as_ref().unwrap_or(&before.enabled_events))
    .bind(b.retention_days.unwrap_or(before.retention_days))
    .bind(b.stream.as_ref().unwrap_or(&before.stream))
    .fetch_one(tx.conn())
    .await?;
    audit_row(&mut tx, &caller, &ctx, "audit_config.update", "audit_config", id, Some(&before), Some(&after)).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a service's config: all its events are kept again, in `events`.
#[utoipa::path(delete, path = "/v1/audit-configs/{config_id}", tag = "audit", params(("config_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_config(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch_config(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    sqlx::query("DELETE FROM arbiter_admin.audit_configs WHERE id = $1").bind(id).execute(tx.conn()).await?;
    audit_row(&mut tx, &caller, &ctx, "audit_config.delete", "audit_config", id, Some(&before), None).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}
