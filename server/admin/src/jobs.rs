//! Background jobs (DESIGN §12): every `--jobs-interval`, one admin instance at a time
//! (the transaction-scoped Postgres advisory lock [`LOCK`]; the others skip that turn)
//! does what time makes due:
//!
//! - delegations whose window has started are fed to the graph (one revision for all
//!   that start in a turn, one audit record each);
//! - delegations whose grantor no longer holds the role are revoked (a bounded batch per
//!   turn, walking all running delegations in id order across turns);
//! - tenants whose deletion grace period is over are deleted, with everything they fed;
//! - audit records queued for the alert rules are evaluated, and due alerts are sent to
//!   their webhooks ([`crate::alerting`]);
//! - audit records past their stream's or service's retention are swept (a bounded batch
//!   per turn).
//!
//! A job's audit records name the job as the actor (`job:delegations`).

use std::time::Duration;

use uuid::Uuid;

use crate::api::delegations;
use crate::audit::{self, snapshot, Entry};
use crate::db::Scope;
use crate::http::{App, RequestContext};
use crate::problem::ApiResult;

/// The advisory lock the jobs hold for a turn (an arbitrary constant: "arbiter" in ASCII).
pub const LOCK: i64 = 0x0061_7262_6974_6572;

/// Most delegations started or rechecked in one turn.
const BATCH: i64 = 200;

/// Most tenants deleted in one turn.
const TENANTS_PER_TURN: usize = 4;

/// Runs the jobs every `interval` until the process ends.
pub fn spawn(app: App, interval: Duration) {
    tokio::spawn(async move {
        let mut recheck_after: Option<Uuid> = None;
        loop {
            tokio::time::sleep(interval).await;
            match turn(&app, recheck_after).await {
                Ok(next) => recheck_after = next,
                Err(p) => tracing::warn!("a background job failed: {}", p.detail),
            }
        }
    });
}

fn job_context(job: &str) -> RequestContext {
    RequestContext { request_id: format!("job-{job}-{}", Uuid::now_v7()), client_ip: None, user_agent: None }
}

/// A platform transaction holding the jobs' lock, or none when another instance holds it.
async fn locked(app: &App) -> ApiResult<Option<crate::db::Tx>> {
    let mut tx = app.db.begin(Scope::Platform).await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(LOCK).fetch_one(tx.conn()).await?;
    if ours {
        Ok(Some(tx))
    } else {
        tx.tx.rollback().await?;
        Ok(None)
    }
}

/// One turn: returns where the grantor recheck goes on next turn.
async fn turn(app: &App, recheck_after: Option<Uuid>) -> ApiResult<Option<Uuid>> {
    let Some(mut tx) = locked(app).await? else {
        return Ok(recheck_after);
    };
    // Delegations whose window started: fed together, at one revision.
    let due = delegations::due(&mut tx, BATCH).await?;
    let mut started = Vec::with_capacity(due.len());
    for d in &due {
        delegations::feed_delegation(&mut tx, d, true).await?;
        started.push(delegations::mark_fed(&mut tx, d.id).await?);
    }
    let ctx = job_context("delegations");
    for (before, after) in due.iter().zip(&started) {
        audit::record_as(&mut tx, "job:delegations", &ctx, Entry {
            tenant: Some(after.tenant_id),
            action: "delegation.start",
            target_type: "delegation",
            target_id: after.id.to_string(),
            before: snapshot(before),
            after: snapshot(after),
        })
        .await?;
    }
    tx.commit().await?;

    // Delegations whose grantor lost the role: revoked.
    let Some(mut tx) = locked(app).await? else {
        return Ok(recheck_after);
    };
    let running = delegations::running(&mut tx, recheck_after, BATCH).await?;
    let next = if (running.len() as i64) < BATCH { None } else { running.last().map(|(d, _)| d.id) };
    let head = app.db.head().await?;
    let mut lost = Vec::new();
    for (d, builtin) in running {
        if !delegations::holds(app, d.tenant_id, d.role_id, builtin.as_deref(), d.grantor_user_id, head).await? {
            lost.push(d);
        }
    }
    let mut revoked = Vec::with_capacity(lost.len());
    for d in &lost {
        revoked.push(delegations::revoke(&mut tx, d, "job:delegations (the grantor no longer holds the role)").await?);
    }
    for (before, after) in lost.iter().zip(&revoked) {
        audit::record_as(&mut tx, "job:delegations", &ctx, Entry {
            tenant: Some(after.tenant_id),
            action: "delegation.revoke",
            target_type: "delegation",
            target_id: after.id.to_string(),
            before: snapshot(before),
            after: snapshot(after),
        })
        .await?;
    }
    tx.commit().await?;

    delete_due_tenants(app).await?;
    audit_jobs(app).await?;
    Ok(next)
}

/// Most audit records the retention sweep removes in one turn.
const SWEEP_BATCH: i32 = 10_000;

/// Alerts, their webhooks, and the retention sweep.
async fn audit_jobs(app: &App) -> ApiResult<()> {
    let Some(mut tx) = locked(app).await? else {
        return Ok(());
    };
    let raised = crate::alerting::evaluate(&mut tx).await?;
    let swept: i64 = sqlx::query_scalar("SELECT arbiter_admin.sweep_audit_records($1)").bind(SWEEP_BATCH).fetch_one(tx.conn()).await?;
    tx.commit().await?;
    if raised > 0 || swept > 0 {
        tracing::info!(raised, swept, "audit jobs: alerts raised, records past retention swept");
    }
    crate::alerting::deliver(app).await?;
    Ok(())
}

/// Tenants whose grace period is over are deleted, one per transaction: every
/// relationship that names the tenant, its groups, its roles and permissions as held
/// there, its delegations, and the application objects it holds (and their attributes
/// and labels) leaves the graph at one revision, and the tenant's rows go with it.
/// People stay: a person is one identity, with memberships elsewhere.
async fn delete_due_tenants(app: &App) -> ApiResult<()> {
    for _ in 0..TENANTS_PER_TURN {
        let Some(mut tx) = locked(app).await? else {
            return Ok(());
        };
        let due: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT id, slug FROM arbiter_admin.tenants WHERE status = 'pending_deletion' AND deletion_scheduled_at <= now()
             ORDER BY deletion_scheduled_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(tx.conn())
        .await?;
        let Some((tenant, slug)) = due else {
            tx.tx.rollback().await?;
            return Ok(());
        };
        let t = tenant.to_string();
        let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
            "WITH objects AS (
                 SELECT resource_type AS t, resource_id AS i FROM relationships
                 WHERE relation = 'tenant' AND subject_type = 'platform/tenant' AND subject_id = $1
                 UNION ALL SELECT 'platform/tenant', $1
                 UNION ALL SELECT 'platform/group', id::text FROM arbiter_admin.groups WHERE tenant_id = $2
                 UNION ALL SELECT 'platform/delegation', id::text FROM arbiter_admin.delegations WHERE tenant_id = $2
             )
             SELECT r.resource_type, r.resource_id, r.relation, r.subject_type, r.subject_id, r.subject_relation FROM relationships r
             WHERE (r.resource_type, r.resource_id) IN (SELECT t, i FROM objects)
                OR (r.subject_type, r.subject_id) IN (SELECT t, i FROM objects)
                OR (r.resource_type IN ('platform/role', 'platform/permission') AND r.resource_id LIKE $1 || '\\_%')
                OR (r.subject_type = 'platform/role' AND r.subject_id LIKE $1 || '\\_%')",
        )
        .bind(&t)
        .bind(tenant)
        .fetch_all(tx.conn())
        .await?;
        for (rt, ri, rel, st, si, sr) in &rows {
            let subject = if sr.is_empty() { format!("{st}:{si}") } else { format!("{st}:{si}#{sr}") };
            tx.feed.delete(&format!("{rt}:{ri}"), rel, &subject);
        }
        // Objects whose labels or values the tenant gave: recomputed without them.
        let labelled: Vec<(String, String)> = sqlx::query_as(
            "SELECT object_type, object_id FROM arbiter_admin.object_labels WHERE tenant_id = $1
             UNION SELECT resource_type, resource_id FROM arbiter_admin.resource_attributes WHERE tenant_id = $1
             UNION SELECT 'platform/' || subject_type, subject_id::text FROM arbiter_admin.subject_attributes WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(tx.conn())
        .await?;
        sqlx::query("DELETE FROM arbiter_admin.tenants WHERE id = $1").bind(tenant).execute(tx.conn()).await?;
        for (object_type, object_id) in &labelled {
            tx.touch_object(object_type, object_id, "/tenant_id");
        }
        let ctx = job_context("tenant-deletion");
        audit::record_as(&mut tx, "job:tenant-deletion", &ctx, Entry {
            tenant: Some(tenant),
            action: "tenant.delete",
            target_type: "tenant",
            target_id: t.clone(),
            before: Some(serde_json::json!({ "id": tenant, "slug": slug })),
            after: Some(serde_json::json!({ "relationships_deleted": rows.len() })),
        })
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %t, relationships = rows.len(), "deleted a tenant whose grace period ended");
    }
    Ok(())
}
