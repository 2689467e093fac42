//! Alert evaluation and delivery, turns of the background jobs ([`crate::jobs`]).
//!
//! Every audit record written while some rule is enabled is queued by its own insert
//! (`alert_queue`, same transaction), so the evaluator sees each record once, whatever
//! order transactions commit in. A turn takes a batch off the queue, matches it against
//! the enabled rules and raises alerts; raising writes no audit record (a `*` rule would
//! otherwise feed on its own alerts). Delivery claims due alerts with a lease, sends
//! them outside any transaction, and records the outcome; a failure is retried with
//! exponential backoff until [`MAX_ATTEMPTS`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::api::alerts::{AuditAlert, ALERT_COLUMNS};
use crate::api::audit_records::{pattern_matches, AuditRecord, COLUMNS, SEVERITIES};
use crate::db::Tx;
use crate::http::App;
use crate::problem::ApiResult;

/// Records evaluated per turn.
const BATCH: i64 = 500;

/// Alerts sent per turn.
const DELIVERIES: i64 = 20;

/// Attempts before a delivery is given up (`failed`).
pub const MAX_ATTEMPTS: i32 = 8;

/// How long a claimed delivery is held before another turn may try it.
const LEASE_SECONDS: f64 = 60.0;

#[derive(Debug, sqlx::FromRow)]
struct Queued {
    id: i64,
    occurred_at: DateTime<Utc>,
    tenant_id: Option<Uuid>,
    actor: String,
    action: String,
    severity: String,
}

#[derive(Debug, sqlx::FromRow)]
struct Rule {
    id: Uuid,
    tenant_id: Option<Uuid>,
    name: String,
    event_pattern: String,
    min_severity: String,
    threshold: i32,
    window_seconds: i32,
    webhook_url: Option<String>,
}

fn rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0)
}

/// One batch off the queue (in `tx`, which holds the jobs' lock): returns the alerts
/// raised.
pub async fn evaluate(tx: &mut Tx) -> ApiResult<usize> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM arbiter_admin.alert_queue WHERE record_id IN
             (SELECT record_id FROM arbiter_admin.alert_queue ORDER BY record_id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING record_id",
    )
    .bind(BATCH)
    .fetch_all(tx.conn())
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let records: Vec<Queued> = sqlx::query_as(
        "SELECT id, occurred_at, tenant_id, actor, action, severity FROM arbiter_admin.audit_records WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(tx.conn())
    .await?;
    let rules: Vec<Rule> = sqlx::query_as(
        "SELECT id, tenant_id, name, event_pattern, min_severity, threshold, window_seconds, webhook_url
         FROM arbiter_admin.alert_rules WHERE enabled ORDER BY id",
    )
    .fetch_all(tx.conn())
    .await?;
    let mut raised = 0;
    for r in &records {
        for rule in &rules {
            let applies = rule.tenant_id.is_none_or(|t| r.tenant_id == Some(t))
                && pattern_matches(&rule.event_pattern, &r.action)
                && rank(&r.severity) >= rank(&rule.min_severity);
            if !applies {
                continue;
            }
            let count = if rule.threshold <= 1 {
                1
            } else {
                let open: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM arbiter_admin.audit_alerts WHERE rule_id = $1 AND actor = $2 AND NOT resolved)",
                )
                .bind(rule.id)
                .bind(&r.actor)
                .fetch_one(tx.conn())
                .await?;
                if open {
                    continue;
                }
                let count = matching_in_window(tx, rule, r).await?;
                if count < i64::from(rule.threshold) {
                    continue;
                }
                count
            };
            let status = if rule.webhook_url.is_some() { "pending" } else { "none" };
            sqlx::query(
                "INSERT INTO arbiter_admin.audit_alerts (id, rule_id, tenant_id, record_id, alert_type, actor, count, webhook_status, webhook_next_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8 = 'pending' THEN now() END)",
            )
            .bind(Uuid::now_v7())
            .bind(rule.id)
            .bind(r.tenant_id)
            .bind(r.id)
            .bind(&rule.name)
            .bind(&r.actor)
            .bind(i32::try_from(count).unwrap_or(i32::MAX))
            .bind(status)
            .execute(tx.conn())
            .await?;
            raised += 1;
        }
    }
    Ok(raised)
}

/// The actor's records within the rule's window up to `r` that the rule matches.
async fn matching_in_window(tx: &mut Tx, rule: &Rule, r: &Queued) -> ApiResult<i64> {
    let severities: Vec<&str> = SEVERITIES[rank(&rule.min_severity)..].to_vec();
    let (exact, prefix) = match rule.event_pattern.strip_suffix('*') {
        Some(p) => (None, Some(format!("{}%", p.replace('_', "\\_")))),
        None => (Some(rule.event_pattern.clone()), None),
    };
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM arbiter_admin.audit_records
         WHERE actor = $1 AND occurred_at > $2 - make_interval(secs => $3) AND occurred_at <= $2
           AND ($4::uuid IS NULL OR tenant_id = $4) AND ($5::text IS NULL OR action = $5) AND ($6::text IS NULL OR action LIKE $6)
           AND severity = ANY($7)",
    )
    .bind(&r.actor)
    .bind(r.occurred_at)
    .bind(f64::from(rule.window_seconds))
    .bind(rule.tenant_id)
    .bind(exact)
    .bind(prefix)
    .bind(&severities)
    .fetch_one(tx.conn())
    .await?;
    Ok(count)
}

#[derive(Debug, sqlx::FromRow)]
struct Due {
    #[sqlx(flatten)]
    alert: AuditAlert,
    webhook_url: Option<String>,
    sealed_webhook_secret: Option<Vec<u8>>,
}

/// Sends due alerts to their rules' webhooks: claims a batch (a lease), sends them at
/// once, and records each outcome.
pub async fn deliver(app: &App) -> ApiResult<usize> {
    let mut tx = app.db.begin(crate::db::Scope::Platform).await?;
    let due: Vec<Due> = sqlx::query_as(&format!(
        "WITH claimed AS (
             SELECT id FROM arbiter_admin.audit_alerts WHERE webhook_status = 'pending' AND webhook_next_at <= now()
             ORDER BY webhook_next_at LIMIT $1 FOR UPDATE SKIP LOCKED
         ), leased AS (
             UPDATE arbiter_admin.audit_alerts a SET webhook_next_at = now() + make_interval(secs => $2)
             FROM claimed WHERE a.id = claimed.id RETURNING a.*
         )
         SELECT {cols}, r.webhook_url, r.sealed_webhook_secret FROM leased l LEFT JOIN arbiter_admin.alert_rules r ON r.id = l.rule_id",
        cols = ALERT_COLUMNS.split(',').map(|c| format!("l.{}", c.trim())).collect::<Vec<_>>().join(", ")
    ))
    .bind(DELIVERIES)
    .bind(LEASE_SECONDS)
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut sends = tokio::task::JoinSet::new();
    for d in due {
        let app = app.clone();
        sends.spawn(async move {
            let outcome = send(&app, &d).await;
            (d.alert.id, d.alert.webhook_attempts, outcome)
        });
    }
    let mut delivered = 0;
    while let Some(done) = sends.join_next().await {
        let Ok((id, attempts, outcome)) = done else { continue };
        let mut tx = app.db.begin(crate::db::Scope::Platform).await?;
        match outcome {
            Ok(()) => {
                delivered += 1;
                sqlx::query(
                    "UPDATE arbiter_admin.audit_alerts SET webhook_status = 'delivered', webhook_attempts = webhook_attempts + 1,
                         webhook_next_at = NULL, webhook_error = NULL WHERE id = $1",
                )
                .bind(id)
                .execute(tx.conn())
                .await?;
            }
            Err(error) => {
                let attempts = attempts + 1;
                let gave_up = attempts >= MAX_ATTEMPTS;
                let backoff = Duration::from_secs(2u64.saturating_pow(u32::try_from(attempts).unwrap_or(12).min(12))).min(Duration::from_secs(3600));
                tracing::warn!(alert = %id, attempts, "an alert's webhook failed: {error}");
                sqlx::query(
                    "UPDATE arbiter_admin.audit_alerts SET webhook_status = CASE WHEN $2 THEN 'failed' ELSE 'pending' END, webhook_attempts = $3,
                         webhook_next_at = CASE WHEN $2 THEN NULL ELSE now() + make_interval(secs => $4) END, webhook_error = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(gave_up)
                .bind(attempts)
                .bind(backoff.as_secs_f64())
                .bind(error.chars().take(1000).collect::<String>())
                .execute(tx.conn())
                .await?;
            }
        }
        tx.commit().await?;
    }
    Ok(delivered)
}

/// One delivery: the alert, its rule's name and the record that raised it.
async fn send(app: &App, d: &Due) -> Result<(), String> {
    let (Some(url), Some(sealed), Some(rule_id)) = (&d.webhook_url, &d.sealed_webhook_secret, d.alert.rule_id) else {
        return Err("the rule or its webhook is gone".to_string());
    };
    let secret = app.secrets.open(rule_id.as_bytes(), sealed).ok_or("the webhook's secret cannot be opened (was the key-encryption key changed?)")?;
    let record: Option<AuditRecord> = async {
        let mut tx = app.db.begin(crate::db::Scope::Platform).await.ok()?;
        sqlx::query_as::<_, AuditRecord>(&format!("SELECT {COLUMNS} FROM arbiter_admin.audit_records WHERE id = $1"))
        .bind(d.alert.record_id)
        .fetch_optional(tx.conn())
        .await
        .ok()
        .flatten()
    }
    .await;
    let body = json!({"type": "audit.alert", "alert": d.alert, "record": record});
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    app.webhooks.deliver(url, &secret, &body).await
}
