//! Background jobs (DESIGN §12): every `--jobs-interval`, one admin instance at a time
//! (the transaction-scoped Postgres advisory lock [`LOCK`]; the others skip that turn)
//! does what time makes due:
//!
//! - delegations whose window has started are fed to the graph (one revision for all
//!   that start in a turn, one audit record each);
//! - delegations whose grantor no longer holds the role are revoked (a bounded batch per
//!   turn, walking all running delegations in id order across turns).
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

/// One turn: returns where the grantor recheck goes on next turn.
async fn turn(app: &App, recheck_after: Option<Uuid>) -> ApiResult<Option<Uuid>> {
    let mut tx = app.db.begin(Scope::Platform).await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(LOCK).fetch_one(tx.conn()).await?;
    if !ours {
        tx.tx.rollback().await?;
        return Ok(recheck_after);
    }
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
    let mut tx = app.db.begin(Scope::Platform).await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(LOCK).fetch_one(tx.conn()).await?;
    if !ours {
        tx.tx.rollback().await?;
        return Ok(recheck_after);
    }
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
    Ok(next)
}
