//! Audit writes: every mutating call appends one record in its own transaction, after
//! the feed (so the record carries the revision). Records are append-only (no route
//! changes them; the role may not update them and a trigger refuses it) and refer to
//! people by id.

use serde_json::Value;
use uuid::Uuid;

use crate::auth::Caller;
use crate::db::Tx;
use crate::http::RequestContext;
use crate::problem::ApiResult;

/// What a call did.
#[derive(Debug)]
pub struct Entry<'a> {
    pub tenant: Option<Uuid>,
    /// `tenant.create`, `user.update`, `group.member.add`, ...
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Feeds the graph (if the transaction changed it) and appends the audit record.
pub async fn record(tx: &mut Tx, caller: &Caller, ctx: &RequestContext, entry: Entry<'_>) -> ApiResult<()> {
    record_as(tx, &caller.actor(), ctx, entry).await
}

/// [`record`] for an actor that is not an API caller (`bootstrap`, a background job).
pub async fn record_as(tx: &mut Tx, actor: &str, ctx: &RequestContext, entry: Entry<'_>) -> ApiResult<()> {
    let revision = tx.flush(actor).await?;
    sqlx::query(
        "INSERT INTO arbiter_admin.audit_records
            (tenant_id, actor, effective_actor, action, target_type, target_id, before, after, revision, request_id, client_ip, user_agent)
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(entry.tenant)
    .bind(actor)
    .bind(entry.action)
    .bind(entry.target_type)
    .bind(&entry.target_id)
    .bind(&entry.before)
    .bind(&entry.after)
    .bind(revision.map(|r| i64::try_from(r).unwrap_or(i64::MAX)))
    .bind(&ctx.request_id)
    .bind(&ctx.client_ip)
    .bind(&ctx.user_agent)
    .execute(tx.conn())
    .await?;
    Ok(())
}
