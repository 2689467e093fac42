//! Audit writes: every mutating call appends one record in its own transaction, after
//! the feed (so the record carries the revision). Records are append-only (no route
//! changes them; the role may not update them and a trigger refuses it) and refer to
//! people by id.

use serde_json::Value;
use uuid::Uuid;

use crate::auth::Caller;
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::problem::ApiResult;

/// A row as the trail keeps it (before/after).
pub fn snapshot<T: serde::Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

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
    let session = caller.impersonation.as_ref().map(|i| i.session_id);
    write(tx, &caller.actor(), &caller.effective_actor(), session, ctx, entry).await
}

/// Fields of a person that the trail does not keep: it refers to people by id, so
/// erasing a person's data never has to rewrite it.
const PERSONAL: [&str; 10] =
    ["email", "username", "first_name", "last_name", "display_name", "avatar_url", "metadata", "value", "locale", "timezone"];

/// A person's snapshot without their personal data (each such field says it was there).
fn impersonal(target_type: &str, v: Option<Value>) -> Option<Value> {
    let mut v = v?;
    if target_type == "user" {
        if let Some(o) = v.as_object_mut() {
            for f in PERSONAL {
                if let Some(x) = o.get_mut(f) {
                    *x = Value::String("(personal data, not kept in the audit trail)".into());
                }
            }
        }
    }
    Some(v)
}

/// [`record`] for an actor that is not an API caller (`bootstrap`, a background job).
pub async fn record_as(tx: &mut Tx, actor: &str, ctx: &RequestContext, entry: Entry<'_>) -> ApiResult<()> {
    write(tx, actor, actor, None, ctx, entry).await
}

/// Appends a refusal to the `security` stream in its own transaction (the refused call
/// changes nothing, so nothing else is written). A failure to write it is logged; the
/// refusal stands either way.
#[allow(clippy::too_many_arguments)]
pub async fn security(app: &App, ctx: &RequestContext, actor: &str, tenant: Option<Uuid>, action: &str, target_type: &str, target_id: String, payload: Value) {
    let written = async {
        let mut tx = app.db.begin(Scope::Platform).await?;
        sqlx::query(
            "INSERT INTO arbiter_admin.audit_records
                (tenant_id, stream, severity, actor, effective_actor, action, target_type, target_id, payload, request_id, client_ip, user_agent)
             VALUES ($1, 'security', 'medium', $2, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant)
        .bind(actor)
        .bind(action)
        .bind(target_type)
        .bind(&target_id)
        .bind(&payload)
        .bind(&ctx.request_id)
        .bind(&ctx.client_ip)
        .bind(&ctx.user_agent)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        ApiResult::Ok(())
    };
    if let Err(p) = written.await {
        tracing::warn!("cannot write a security record ({action} by {actor}): {}", p.detail);
    }
}

async fn write(tx: &mut Tx, actor: &str, effective_actor: &str, session: Option<Uuid>, ctx: &RequestContext, entry: Entry<'_>) -> ApiResult<()> {
    let revision = tx.flush(actor).await?;
    let before = impersonal(entry.target_type, entry.before);
    let after = impersonal(entry.target_type, entry.after);
    sqlx::query(
        "INSERT INTO arbiter_admin.audit_records
            (tenant_id, actor, effective_actor, action, target_type, target_id, before, after, revision, request_id, client_ip, user_agent,
             impersonation_session_id)
         VALUES ($1, $2, $12, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13)",
    )
    .bind(entry.tenant)
    .bind(actor)
    .bind(entry.action)
    .bind(entry.target_type)
    .bind(&entry.target_id)
    .bind(&before)
    .bind(&after)
    .bind(revision.map(|r| i64::try_from(r).unwrap_or(i64::MAX)))
    .bind(&ctx.request_id)
    .bind(&ctx.client_ip)
    .bind(&ctx.user_agent)
    .bind(effective_actor)
    .bind(session)
    .execute(tx.conn())
    .await?;
    Ok(())
}
