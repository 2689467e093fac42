//! API keys for machine callers: created (the secret is shown once), listed without
//! their secret, rotated (a new secret, the old one stops at once) and revoked. A key
//! acts in one tenant with one of the admin's roles, or across tenants as a platform
//! operator.
//!
//! Feed: a tenant key is `platform/tenant:T#<role>@platform/api_key:K`; an operator
//! key is `platform/platform:root#operator@platform/api_key:K`. Expiry and revocation
//! are checked when the key authenticates; revocation also deletes the grant.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_text, commit, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{new_key, Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/api-keys", post(create_tenant_key).get(list_tenant_keys))
        .route("/v1/tenants/{tenant_id}/api-keys/{key_id}", delete(revoke_tenant_key))
        .route("/v1/tenants/{tenant_id}/api-keys/{key_id}/rotate", post(rotate_tenant_key))
        .route("/v1/api-keys", post(create_operator_key).get(list_operator_keys))
        .route("/v1/api-keys/{key_id}", delete(revoke_operator_key))
}

/// An API key, without its secret.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub name: String,
    /// `operator`, `owner`, `admin`, `user_manager` or `auditor`.
    pub role: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key as created or rotated: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyWithSecret {
    #[serde(flatten)]
    pub key: ApiKey,
    /// `Authorization: Bearer <this>`. Shown once; only a hash is kept.
    pub api_key: String,
}

const COLUMNS: &str = "id, tenant_id, name, role, created_by, created_at, expires_at, rotated_at, revoked_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "provisioning bot", "role": "user_manager"}))]
pub struct CreateTenantKey {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    pub role: TenantKeyRole,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "platform automation"}))]
pub struct CreateOperatorKey {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a tenant's API key may do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantKeyRole {
    Owner,
    Admin,
    UserManager,
    Auditor,
}

impl TenantKeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantKeyRole::Owner => "owner",
            TenantKeyRole::Admin => "admin",
            TenantKeyRole::UserManager => "user_manager",
            TenantKeyRole::Auditor => "auditor",
        }
    }
}


/// Inserts a key and feeds its grant; bootstrap uses it for the first operator key.
pub async fn insert_key(
    tx: &mut Tx,
    secrets: &crate::secrets::Secrets,
    tenant: Option<Uuid>,
    name: &str,
    role: &str,
    expires_at: Option<DateTime<Utc>>,
    created_by: &str,
) -> ApiResult<ApiKeyWithSecret> {
    let new = new_key(secrets)?;
    let key = sqlx::query_as::<_, ApiKey>(&format!(
        "INSERT INTO arbiter_admin.api_keys (id, tenant_id, name, role, secret_hash, pepper_version, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(new.id)
    .bind(tenant)
    .bind(name)
    .bind(role)
    .bind(&new.hash)
    .bind(new.pepper_version)
    .bind(created_by)
    .bind(expires_at)
    .fetch_one(tx.conn())
    .await?;
    let subject = feed::api_key(new.id);
    match tenant {
        Some(t) => tx.feed.touch(&feed::tenant(t), role, &subject),
        None => tx.feed.touch(feed::PLATFORM, "operator", &subject),
    }
    Ok(ApiKeyWithSecret { key, api_key: new.token })
}

fn check_create(name: &str, expires_at: Option<DateTime<Utc>>) -> ApiResult<()> {
    check_text("name", name, 200, false)?;
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Problem::invalid("/expires_at", "`expires_at` is in the past"));
    }
    Ok(())
}

/// Create an API key for a tenant (its admins; an owner key needs an owner's call).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/api-keys", tag = "api-keys", request_body = CreateTenantKey,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = ApiKeyWithSecret), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant_key(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateTenantKey>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    check_create(&body.value.name, body.value.expires_at)?;
    let role = body.value.role.as_str();
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/api-keys");
    // A replay would have to return the secret again, which is never stored: a repeated
    // Idempotency-Key is refused instead of answered.
    if let Idempotency::Replay(_) = Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        return Err(Problem::conflict("Idempotency-Key", "this key was created already; its secret is shown only once"));
    }
    let created = insert_key(&mut tx, &app.secrets, Some(tenant_id), &body.value.name, role, body.value.expires_at, &caller.actor()).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "api_key.create",
        target_type: "api_key",
        target_id: created.key.id.to_string(),
        before: None,
        after: snapshot(&created.key),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &created, Some(revision), None))
}

/// List a tenant's API keys (no secrets).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/api-keys", tag = "api-keys", params(("tenant_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<ApiKey>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenant_keys(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = list(&mut tx, Some(tenant_id), &q).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |k| k.id), None, None))
}

async fn list(tx: &mut Tx, tenant: Option<Uuid>, q: &Query) -> ApiResult<Vec<ApiKey>> {
    Ok(sqlx::query_as::<_, ApiKey>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.api_keys WHERE tenant_id IS NOT DISTINCT FROM $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?)
}

/// Give a tenant's key a new secret; the old one stops working at once.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}/rotate", tag = "api-keys",
    params(("tenant_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 200, body = ApiKeyWithSecret), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn rotate_tenant_key(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    P((tenant_id, key_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let new = new_key(&app.secrets)?;
    // The new secret (its id part is a fresh uuid, unused: the key keeps its id).
    let secret = new.token.split_once('.').map(|(_, s)| s.to_string()).unwrap_or_default();
    let key = sqlx::query_as::<_, ApiKey>(&format!(
        "UPDATE arbiter_admin.api_keys SET secret_hash = $3, pepper_version = $4, rotated_at = now()
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(key_id)
    .bind(tenant_id)
    .bind(&new.hash)
    .bind(new.pepper_version)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("API key `{key_id}`")))?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "api_key.rotate",
        target_type: "api_key",
        target_id: key_id.to_string(),
        before: None,
        after: snapshot(&key),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    let body = ApiKeyWithSecret { key, api_key: format!("{key_id}.{secret}") };
    Ok(reply(StatusCode::OK, &body, Some(revision), None))
}

async fn revoke(app: &App, caller: &Caller, ctx: &RequestContext, scope: Scope, tenant: Option<Uuid>, key_id: Uuid) -> ApiResult<Response> {
    let mut tx = app.db.begin(scope).await?;
    let key = sqlx::query_as::<_, ApiKey>(&format!(
        "UPDATE arbiter_admin.api_keys SET revoked_at = now()
         WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 AND revoked_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(key_id)
    .bind(tenant)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("API key `{key_id}`")))?;
    let subject = feed::api_key(key_id);
    match tenant {
        Some(t) => tx.feed.delete(&feed::tenant(t), &key.role, &subject),
        None => tx.feed.delete(feed::PLATFORM, "operator", &subject),
    }
    audit::record(&mut tx, caller, ctx, Entry {
        tenant,
        action: "api_key.revoke",
        target_type: "api_key",
        target_id: key_id.to_string(),
        before: None,
        after: snapshot(&key),
    })
    .await?;
    let revision = commit(app, tx).await?;
    Ok(super::no_content(revision))
}

/// Revoke a tenant's API key.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}", tag = "api-keys",
    params(("tenant_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_tenant_key(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    P((tenant_id, key_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    revoke(&app, &caller, &ctx, Scope::Tenant(tenant_id), Some(tenant_id), key_id).await
}

/// Create a platform operator key (platform operators).
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateOperatorKey,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = ApiKeyWithSecret), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_operator_key(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    body: JsonBody<CreateOperatorKey>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    check_create(&body.value.name, body.value.expires_at)?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    if let Idempotency::Replay(_) = Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/api-keys", &body.raw).await? {
        return Err(Problem::conflict("Idempotency-Key", "this key was created already; its secret is shown only once"));
    }
    let created = insert_key(&mut tx, &app.secrets, None, &body.value.name, "operator", body.value.expires_at, &caller.actor()).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "api_key.create",
        target_type: "api_key",
        target_id: created.key.id.to_string(),
        before: None,
        after: snapshot(&created.key),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &created, Some(revision), None))
}

/// List platform operator keys (no secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageParams),
    responses((status = 200, body = PageOf<ApiKey>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_operator_keys(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let rows = list(&mut tx, None, &q).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |k| k.id), None, None))
}

/// Revoke a platform operator key.
#[utoipa::path(delete, path = "/v1/api-keys/{key_id}", tag = "api-keys", params(("key_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_operator_key(State(app): State<App>, caller: Caller, ctx: RequestContext, P(key_id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    revoke(&app, &caller, &ctx, Scope::Platform, None, key_id).await
}
