//! Alert rules over the audit trail, and the alerts they raise (seed `audit_alerts`).
//!
//! A rule matches records whose action fits its `event_pattern` (`access.denied`,
//! `impersonation.*`, `*`) at or above its `min_severity`, and raises an alert when one
//! actor has `threshold` matching records within `window_seconds`: "5 refused calls by
//! one key in a minute", or, with threshold 1, "an impersonation started". While an
//! alert of a rule is open for an actor, the rule raises no other for that actor (with
//! threshold 1, every match is its own alert). The background job evaluates records
//! queued by their insert ([`crate::alerting`]) and sends each alert to the rule's
//! webhook, signed with the rule's secret (shown once, when the webhook is set).
//!
//! A tenant's rules (its `manage` permission) see its records; platform rules
//! (operators) see every record. Alerts are read and resolved with `audit`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::audit_config::check_pattern;
use super::audit_records::SEVERITIES;
use super::{check_description, check_if_match, check_text, commit, no_content, nullable, reply, whole_number, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/alert-rules", post(create_tenant_rule).get(list_tenant_rules))
        .route("/v1/tenants/{tenant_id}/alert-rules/{rule_id}", get(get_tenant_rule).patch(update_tenant_rule).delete(delete_tenant_rule))
        .route("/v1/alert-rules", post(create_platform_rule).get(list_platform_rules))
        .route("/v1/alert-rules/{rule_id}", get(get_platform_rule).patch(update_platform_rule).delete(delete_platform_rule))
        .route("/v1/tenants/{tenant_id}/alerts", get(list_tenant_alerts))
        .route("/v1/tenants/{tenant_id}/alerts/{alert_id}", get(get_tenant_alert))
        .route("/v1/tenants/{tenant_id}/alerts/{alert_id}/resolve", post(resolve_tenant_alert))
        .route("/v1/alerts", get(list_platform_alerts))
        .route("/v1/alerts/{alert_id}", get(get_platform_alert))
        .route("/v1/alerts/{alert_id}/resolve", post(resolve_platform_alert))
}

/// An alert rule.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AlertRule {
    pub id: Uuid,
    /// The tenant whose records it sees; absent: a platform rule (every record).
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub description: String,
    /// An action (`access.denied`), a prefix (`impersonation.*`) or `*`.
    pub event_pattern: String,
    /// The least severity of a matching record.
    pub min_severity: String,
    /// Matching records by one actor within the window that raise an alert.
    pub threshold: i32,
    pub window_seconds: i32,
    /// Where alerts are POSTed (signed with the rule's secret).
    pub webhook_url: Option<String>,
    pub enabled: bool,
    pub created_by: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const RULE_COLUMNS: &str =
    "id, tenant_id, name, description, event_pattern, min_severity, threshold, window_seconds, webhook_url, enabled, created_by, version, created_at, updated_at";

/// A rule as a create or an update returns it: with the webhook's signing secret when it
/// was just made (shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleWithSecret {
    #[serde(flatten)]
    pub rule: AlertRule,
    /// The secret webhook deliveries are signed with (`Arbiter-Signature`); shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Refused calls", "event_pattern": "access.denied", "threshold": 5, "window_seconds": 60,
    "webhook_url": "https://hooks.example.com/arbiter"}))]
pub struct CreateRule {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    #[schema(max_length = 128, pattern = r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")]
    pub event_pattern: String,
    /// `low` (the default), `medium`, `high` or `critical`.
    #[schema(pattern = "^(low|medium|high|critical)$")]
    pub min_severity: Option<String>,
    /// 1 (the default) to 100,000.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 100000)]
    pub threshold: Option<i32>,
    /// 1 to 86,400 (60 by default).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 86400)]
    pub window_seconds: Option<i32>,
    /// An https:// URL.
    #[schema(max_length = 2000)]
    pub webhook_url: Option<String>,
    /// true by default.
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"threshold": 10, "enabled": false}))]
pub struct UpdateRule {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    #[schema(max_length = 128, pattern = r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")]
    pub event_pattern: Option<String>,
    #[schema(pattern = "^(low|medium|high|critical)$")]
    pub min_severity: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 100000)]
    pub threshold: Option<i32>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 86400)]
    pub window_seconds: Option<i32>,
    /// `null` removes the webhook.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub webhook_url: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// Makes a new signing secret (returned once).
    #[serde(default)]
    pub rotate_webhook_secret: bool,
}

/// An alert a rule raised.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditAlert {
    pub id: Uuid,
    /// Absent once the rule is deleted.
    pub rule_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    /// The audit record that raised it.
    pub record_id: i64,
    /// The rule's name when it was raised.
    pub alert_type: String,
    pub actor: String,
    /// Matching records by the actor within the window.
    pub count: i32,
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
    /// `none` (no webhook), `pending`, `delivered` or `failed`.
    pub webhook_status: String,
    pub webhook_attempts: i32,
    pub webhook_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub const ALERT_COLUMNS: &str = "id, rule_id, tenant_id, record_id, alert_type, actor, count, resolved, resolved_at, resolved_by, resolution,
    webhook_status, webhook_attempts, webhook_error, created_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"resolution": "A load test; the key is a test key"}))]
pub struct ResolveAlert {
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub resolution: String,
}

/// Where a rule or an alert call acts: a tenant's, or the platform's (every one).
#[derive(Debug, Clone, Copy)]
struct At(Option<Uuid>);

impl At {
    fn scope(self) -> Scope {
        self.0.map(Scope::Tenant).unwrap_or(Scope::Platform)
    }

    async fn authorize(self, app: &App, caller: &Caller, permission: &'static str) -> ApiResult<()> {
        match self.0 {
            Some(t) => app.authorize(caller, Need::Tenant(t, permission)).await,
            None => app.authorize(caller, Need::Platform).await,
        }
    }
}

fn check_severity(field: &str, s: &str) -> ApiResult<()> {
    if SEVERITIES.contains(&s) {
        Ok(())
    } else {
        Err(Problem::invalid(field, format!("`{}` must be one of {}", field.trim_start_matches('/'), SEVERITIES.join(", "))))
    }
}

fn check_numbers(threshold: Option<i32>, window: Option<i32>) -> ApiResult<()> {
    if threshold.is_some_and(|t| !(1..=100_000).contains(&t)) {
        return Err(Problem::invalid("/threshold", "`threshold` must be 1 to 100,000"));
    }
    if window.is_some_and(|w| !(1..=86_400).contains(&w)) {
        return Err(Problem::invalid("/window_seconds", "`window_seconds` must be 1 to 86,400"));
    }
    Ok(())
}

/// A new signing secret: 32 random bytes as hex, and its sealed form.
fn new_secret(app: &App, rule: Uuid) -> ApiResult<(String, Vec<u8>)> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("whsec_{}", hex::encode(bytes));
    let sealed = app
        .secrets
        .seal(rule.as_bytes(), secret.as_bytes())
        .ok_or_else(|| Problem::internal("seal a webhook secret", &"the sealing key is unusable"))?;
    Ok((secret, sealed))
}

async fn fetch_rule(tx: &mut Tx, at: At, id: Uuid) -> ApiResult<AlertRule> {
    sqlx::query_as::<_, AlertRule>(&format!(
        "SELECT {RULE_COLUMNS} FROM arbiter_admin.alert_rules WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
    ))
    .bind(id)
    .bind(at.0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("alert rule `{id}`")))
}

async fn audit_rule(tx: &mut Tx, caller: &Caller, ctx: &RequestContext, action: &str, before: Option<&AlertRule>, after: Option<&AlertRule>) -> ApiResult<()> {
    let rule = after.or(before);
    audit::record(tx, caller, ctx, Entry {
        tenant: rule.and_then(|r| r.tenant_id),
        action,
        target_type: "alert_rule",
        target_id: rule.map(|r| r.id.to_string()).unwrap_or_default(),
        before: before.and_then(snapshot),
        after: after.and_then(snapshot),
    })
    .await
}

async fn create_rule(app: App, caller: Caller, ctx: RequestContext, headers: HeaderMap, at: At, path: String, body: JsonBody<CreateRule>) -> ApiResult<Response> {
    at.authorize(&app, &caller, "manage").await?;
    let b = &body.value;
    check_text("name", &b.name, 200, false)?;
    check_description("description", &b.description, 2000)?;
    check_pattern("/event_pattern", &b.event_pattern)?;
    let min_severity = b.min_severity.as_deref().unwrap_or("low");
    check_severity("/min_severity", min_severity)?;
    check_numbers(b.threshold, b.window_seconds)?;
    let webhook = b.webhook_url.as_deref().map(|u| app.webhooks.check_url("/webhook_url", u)).transpose()?;
    let id = Uuid::now_v7();
    let secret = webhook.as_ref().map(|_| new_secret(&app, id)).transpose()?;
    let mut tx = app.db.begin(at.scope()).await?;
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let rule = sqlx::query_as::<_, AlertRule>(&format!(
        "INSERT INTO arbiter_admin.alert_rules
            (id, tenant_id, name, description, event_pattern, min_severity, threshold, window_seconds, webhook_url, sealed_webhook_secret, enabled, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {RULE_COLUMNS}"
    ))
    .bind(id)
    .bind(at.0)
    .bind(&b.name)
    .bind(&b.description)
    .bind(&b.event_pattern)
    .bind(min_severity)
    .bind(b.threshold.unwrap_or(1))
    .bind(b.window_seconds.unwrap_or(60))
    .bind(webhook.as_ref().map(|u| u.to_string()))
    .bind(secret.as_ref().map(|(_, sealed)| sealed.clone()))
    .bind(b.enabled.unwrap_or(true))
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    audit_rule(&mut tx, &caller, &ctx, "alert_rule.create", None, Some(&rule)).await?;
    // A replay returns the rule without its secret (shown once).
    idem.save(&mut tx, StatusCode::CREATED, &rule).await?;
    let revision = commit(&app, tx).await?;
    let version = rule.version;
    Ok(reply(StatusCode::CREATED, &RuleWithSecret { rule, webhook_secret: secret.map(|(s, _)| s) }, Some(revision), Some(version)))
}

async fn list_rules(app: App, caller: Caller, at: At, raw: Option<String>) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["enabled"])?;
    let enabled = match q.filter("enabled") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(Problem::bad_request("enabled", "`enabled` is `true` or `false`")),
    };
    at.authorize(&app, &caller, "audit").await?;
    let mut tx = app.db.begin(at.scope()).await?;
    let rows = sqlx::query_as::<_, AlertRule>(&format!(
        "SELECT {RULE_COLUMNS} FROM arbiter_admin.alert_rules
         WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid IS NULL OR id > $2) AND ($3::boolean IS NULL OR enabled = $3)
         ORDER BY id LIMIT $4"
    ))
    .bind(at.0)
    .bind(q.page.after)
    .bind(enabled)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |r| r.id), None, None))
}

async fn get_rule(app: App, caller: Caller, at: At, id: Uuid) -> ApiResult<Response> {
    at.authorize(&app, &caller, "audit").await?;
    let mut tx = app.db.begin(at.scope()).await?;
    let rule = fetch_rule(&mut tx, at, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &rule, None, Some(rule.version)))
}

async fn update_rule(app: App, caller: Caller, ctx: RequestContext, headers: HeaderMap, at: At, id: Uuid, body: JsonBody<UpdateRule>) -> ApiResult<Response> {
    at.authorize(&app, &caller, "manage").await?;
    let b = &body.value;
    if let Some(n) = &b.name {
        check_text("name", n, 200, false)?;
    }
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    if let Some(p) = &b.event_pattern {
        check_pattern("/event_pattern", p)?;
    }
    if let Some(s) = &b.min_severity {
        check_severity("/min_severity", s)?;
    }
    check_numbers(b.threshold, b.window_seconds)?;
    let webhook = match &b.webhook_url {
        Some(Some(u)) => Some(Some(app.webhooks.check_url("/webhook_url", u)?.to_string())),
        Some(None) => Some(None),
        None => None,
    };
    let mut tx = app.db.begin(at.scope()).await?;
    let before = fetch_rule(&mut tx, at, id).await?;
    check_if_match(&headers, before.version)?;
    let url = webhook.clone().unwrap_or_else(|| before.webhook_url.clone());
    if b.rotate_webhook_secret && url.is_none() {
        return Err(Problem::invalid("/rotate_webhook_secret", "the rule has no webhook whose secret could rotate"));
    }
    // A secret is made when a webhook is first set or on rotation; it goes with the webhook.
    let fresh = url.is_some() && (b.rotate_webhook_secret || before.webhook_url.is_none());
    let secret = if fresh { Some(new_secret(&app, id)?) } else { None };
    let after = sqlx::query_as::<_, AlertRule>(&format!(
        "UPDATE arbiter_admin.alert_rules SET name = $2, description = $3, event_pattern = $4, min_severity = $5, threshold = $6,
             window_seconds = $7, webhook_url = $8, enabled = $9,
             sealed_webhook_secret = CASE WHEN $8::text IS NULL THEN NULL WHEN $10::bytea IS NOT NULL THEN $10 ELSE sealed_webhook_secret END,
             version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING {RULE_COLUMNS}"
    ))
    .bind(id)
    .bind(b.name.as_ref().unwrap_or(&before.name))
    .bind(b.description.as_ref().unwrap_or(&before.description))
    .bind(b.event_pattern.as_ref().unwrap_or(&before.event_pattern))
    .bind(b.min_severity.as_ref().unwrap_or(&before.min_severity))
    .bind(b.threshold.unwrap_or(before.threshold))
    .bind(b.window_seconds.unwrap_or(before.window_seconds))
    .bind(&url)
    .bind(b.enabled.unwrap_or(before.enabled))
    .bind(secret.as_ref().map(|(_, sealed)| sealed.clone()))
    .fetch_one(tx.conn())
    .await?;
    audit_rule(&mut tx, &caller, &ctx, "alert_rule.update", Some(&before), Some(&after)).await?;
    let revision = commit(&app, tx).await?;
    let version = after.version;
    Ok(reply(StatusCode::OK, &RuleWithSecret { rule: after, webhook_secret: secret.map(|(s, _)| s) }, Some(revision), Some(version)))
}

async fn delete_rule(app: App, caller: Caller, ctx: RequestContext, headers: HeaderMap, at: At, id: Uuid) -> ApiResult<Response> {
    at.authorize(&app, &caller, "manage").await?;
    let mut tx = app.db.begin(at.scope()).await?;
    let before = fetch_rule(&mut tx, at, id).await?;
    check_if_match(&headers, before.version)?;
    sqlx::query("DELETE FROM arbiter_admin.alert_rules WHERE id = $1").bind(id).execute(tx.conn()).await?;
    audit_rule(&mut tx, &caller, &ctx, "alert_rule.delete", Some(&before), None).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

async fn fetch_alert(tx: &mut Tx, at: At, id: Uuid) -> ApiResult<AuditAlert> {
    sqlx::query_as::<_, AuditAlert>(&format!(
        "SELECT {ALERT_COLUMNS} FROM arbiter_admin.audit_alerts WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
    ))
    .bind(id)
    .bind(at.0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("alert `{id}`")))
}

async fn list_alerts(app: App, caller: Caller, at: At, raw: Option<String>) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["resolved", "rule_id", "actor"])?;
    let resolved = match q.filter("resolved") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(Problem::bad_request("resolved", "`resolved` is `true` or `false`")),
    };
    let rule = q.filter("rule_id").map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("rule_id", "is not a UUID"))).transpose()?;
    at.authorize(&app, &caller, "audit").await?;
    let mut tx = app.db.begin(at.scope()).await?;
    // Newest first: ids are UUIDv7.
    let rows = sqlx::query_as::<_, AuditAlert>(&format!(
        "SELECT {ALERT_COLUMNS} FROM arbiter_admin.audit_alerts
         WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid IS NULL OR id < $2) AND ($3::boolean IS NULL OR resolved = $3)
           AND ($4::uuid IS NULL OR rule_id = $4) AND ($5::text IS NULL OR actor = $5)
         ORDER BY id DESC LIMIT $6"
    ))
    .bind(at.0)
    .bind(q.page.after)
    .bind(resolved)
    .bind(rule)
    .bind(q.filter("actor"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |a| a.id), None, None))
}

async fn get_alert(app: App, caller: Caller, at: At, id: Uuid) -> ApiResult<Response> {
    at.authorize(&app, &caller, "audit").await?;
    let mut tx = app.db.begin(at.scope()).await?;
    let alert = fetch_alert(&mut tx, at, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &alert, None, None))
}

async fn resolve_alert(app: App, caller: Caller, ctx: RequestContext, at: At, id: Uuid, body: JsonBody<ResolveAlert>) -> ApiResult<Response> {
    at.authorize(&app, &caller, "audit").await?;
    check_description("resolution", &body.value.resolution, 2000)?;
    let mut tx = app.db.begin(at.scope()).await?;
    let before = fetch_alert(&mut tx, at, id).await?;
    if before.resolved {
        return Err(Problem::conflict("/alert_id", "the alert is resolved already"));
    }
    let after = sqlx::query_as::<_, AuditAlert>(&format!(
        "UPDATE arbiter_admin.audit_alerts SET resolved = true, resolved_at = now(), resolved_by = $2, resolution = $3 WHERE id = $1
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(id)
    .bind(caller.effective_actor())
    .bind(&body.value.resolution)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: after.tenant_id,
        action: "alert.resolve",
        target_type: "alert",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), None))
}

// The routes: a tenant's and the platform's, each a thin door to the above.

/// Make an alert rule over a tenant's records (`manage`).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/alert-rules", tag = "alerts", request_body = CreateRule,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = RuleWithSecret), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant_rule(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(t): P<Uuid>, body: JsonBody<CreateRule>) -> ApiResult<Response> {
    create_rule(app, caller, ctx, headers, At(Some(t)), format!("/v1/tenants/{t}/alert-rules"), body).await
}

/// A tenant's alert rules (`audit`); filter by `enabled`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/alert-rules", tag = "alerts", params(("tenant_id" = Uuid, Path), PageParams, ("enabled" = Option<bool>, Query)),
    responses((status = 200, body = PageOf<AlertRule>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_rules(State(app): State<App>, caller: Caller, P(t): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_rules(app, caller, At(Some(t)), raw).await
}

/// Read a tenant's alert rule.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/alert-rules/{rule_id}", tag = "alerts", params(("tenant_id" = Uuid, Path), ("rule_id" = Uuid, Path)),
    responses((status = 200, body = AlertRule), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant_rule(State(app): State<App>, caller: Caller, P((t, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    get_rule(app, caller, At(Some(t)), id).await
}

/// Change a tenant's alert rule (`manage`).
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/alert-rules/{rule_id}", tag = "alerts", request_body = UpdateRule,
    params(("tenant_id" = Uuid, Path), ("rule_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = RuleWithSecret), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_tenant_rule(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, id)): P<(Uuid, Uuid)>, body: JsonBody<UpdateRule>) -> ApiResult<Response> {
    update_rule(app, caller, ctx, headers, At(Some(t)), id, body).await
}

/// Delete a tenant's alert rule (its alerts stay).
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/alert-rules/{rule_id}", tag = "alerts",
    params(("tenant_id" = Uuid, Path), ("rule_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_tenant_rule(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P((t, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    delete_rule(app, caller, ctx, headers, At(Some(t)), id).await
}

/// Make a platform alert rule over every record (platform operators).
#[utoipa::path(post, path = "/v1/alert-rules", tag = "alerts", request_body = CreateRule,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = RuleWithSecret), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_platform_rule(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreateRule>) -> ApiResult<Response> {
    create_rule(app, caller, ctx, headers, At(None), "/v1/alert-rules".to_string(), body).await
}

/// Every alert rule, tenants' and the platform's (platform operators).
#[utoipa::path(get, path = "/v1/alert-rules", tag = "alerts", params(PageParams, ("enabled" = Option<bool>, Query)),
    responses((status = 200, body = PageOf<AlertRule>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_platform_rules(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_rules(app, caller, At(None), raw).await
}

/// Read any alert rule (platform operators).
#[utoipa::path(get, path = "/v1/alert-rules/{rule_id}", tag = "alerts", params(("rule_id" = Uuid, Path)),
    responses((status = 200, body = AlertRule), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_platform_rule(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    get_rule(app, caller, At(None), id).await
}

/// Change any alert rule (platform operators).
#[utoipa::path(patch, path = "/v1/alert-rules/{rule_id}", tag = "alerts", request_body = UpdateRule,
    params(("rule_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = RuleWithSecret), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_platform_rule(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>, body: JsonBody<UpdateRule>) -> ApiResult<Response> {
    update_rule(app, caller, ctx, headers, At(None), id, body).await
}

/// Delete any alert rule (platform operators; its alerts stay).
#[utoipa::path(delete, path = "/v1/alert-rules/{rule_id}", tag = "alerts", params(("rule_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_platform_rule(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>) -> ApiResult<Response> {
    delete_rule(app, caller, ctx, headers, At(None), id).await
}

/// A tenant's alerts, newest first (`audit`); filter by `resolved`, `rule_id`, `actor`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/alerts", tag = "alerts",
    params(("tenant_id" = Uuid, Path), PageParams, ("resolved" = Option<bool>, Query), ("rule_id" = Option<Uuid>, Query), ("actor" = Option<String>, Query)),
    responses((status = 200, body = PageOf<AuditAlert>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_alerts(State(app): State<App>, caller: Caller, P(t): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_alerts(app, caller, At(Some(t)), raw).await
}

/// Read a tenant's alert.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/alerts/{alert_id}", tag = "alerts", params(("tenant_id" = Uuid, Path), ("alert_id" = Uuid, Path)),
    responses((status = 200, body = AuditAlert), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant_alert(State(app): State<App>, caller: Caller, P((t, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    get_alert(app, caller, At(Some(t)), id).await
}

/// Resolve a tenant's alert (`audit`).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/alerts/{alert_id}/resolve", tag = "alerts", request_body = ResolveAlert,
    params(("tenant_id" = Uuid, Path), ("alert_id" = Uuid, Path)),
    responses((status = 200, body = AuditAlert), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn resolve_tenant_alert(State(app): State<App>, caller: Caller, ctx: RequestContext, P((t, id)): P<(Uuid, Uuid)>, body: JsonBody<ResolveAlert>) -> ApiResult<Response> {
    resolve_alert(app, caller, ctx, At(Some(t)), id, body).await
}

/// Every alert, newest first (platform operators).
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(PageParams, ("resolved" = Option<bool>, Query), ("rule_id" = Option<Uuid>, Query), ("actor" = Option<String>, Query)),
    responses((status = 200, body = PageOf<AuditAlert>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_platform_alerts(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    list_alerts(app, caller, At(None), raw).await
}

/// Read any alert (platform operators).
#[utoipa::path(get, path = "/v1/alerts/{alert_id}", tag = "alerts", params(("alert_id" = Uuid, Path)),
    responses((status = 200, body = AuditAlert), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_platform_alert(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    get_alert(app, caller, At(None), id).await
}

/// Resolve any alert (platform operators).
#[utoipa::path(post, path = "/v1/alerts/{alert_id}/resolve", tag = "alerts", request_body = ResolveAlert, params(("alert_id" = Uuid, Path)),
    responses((status = 200, body = AuditAlert), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn resolve_platform_alert(State(app): State<App>, caller: Caller, ctx: RequestContext, P(id): P<Uuid>, body: JsonBody<ResolveAlert>) -> ApiResult<Response> {
    resolve_alert(app, caller, ctx, At(None), id, body).await
}
