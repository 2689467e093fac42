//! Tenants: created and listed by platform operators; read and configured by their own
//! admins; a lifecycle (active, suspended, pending deletion with a grace period) that
//! only operators change; domains.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_document, check_if_match, check_description, check_text, commit, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{tenant_id}", get(get_tenant).patch(update_tenant))
        .route("/v1/tenants/{tenant_id}/status", post(set_tenant_status))
        .route("/v1/tenants/{tenant_id}/domains", get(list_domains).post(add_domain))
        .route("/v1/tenants/{tenant_id}/domains/{domain_id}", delete(remove_domain))
}

const COLUMNS: &str = "id, slug, name, description, status, status_reason, grace_period_days, deletion_requested_at,
    deletion_scheduled_at, settings, feature_flags, quotas, security_policy, onboarding_status, version, created_at, updated_at";

/// A tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    /// `active`, `suspended` or `pending_deletion`.
    pub status: String,
    pub status_reason: Option<String>,
    /// Days between a deletion request and the deletion.
    pub grace_period_days: i32,
    pub deletion_requested_at: Option<DateTime<Utc>>,
    pub deletion_scheduled_at: Option<DateTime<Utc>>,
    pub settings: Value,
    pub feature_flags: Value,
    pub quotas: Value,
    /// Session, two-factor and IP rules for the tenant's users (seed 003's document).
    pub security_policy: Value,
    /// `pending`, `in_progress` or `completed`.
    pub onboarding_status: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"slug": "acme", "name": "Acme Inc.", "description": "Widgets", "grace_period_days": 30, "settings": {"logo": "https://acme.example/logo.png"}, "feature_flags": {"beta": true}, "quotas": {"users": 500}, "owner_email": "owner@acme.example"}))]
pub struct CreateTenant {
    /// Lowercase letters, digits and single hyphens; at most 63 characters.
    #[schema(max_length = 63, pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub slug: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    #[schema(minimum = 0, maximum = 365)]
    #[serde(default, deserialize_with = "super::whole_number")]
    pub grace_period_days: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub feature_flags: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub quotas: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub security_policy: Option<Value>,
    /// The owner: an existing user with this email, or a new one.
    #[schema(max_length = 320, pattern = r"^[^@ \u0000-\u001f\u007f-\u009f]+@[^@ \u0000-\u001f\u007f-\u009f]+$")]
    pub owner_email: Option<String>,
    /// A role template (by name) whose roles the tenant starts with.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub template: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Corporation", "onboarding_status": "completed"}))]
pub struct UpdateTenant {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    #[schema(minimum = 0, maximum = 365)]
    #[serde(default, deserialize_with = "super::whole_number")]
    pub grace_period_days: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub feature_flags: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub quotas: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub security_policy: Option<Value>,
    pub onboarding_status: Option<Onboarding>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "suspended", "reason": "invoice overdue"}))]
pub struct SetStatus {
    /// `pending_deletion` deletes the tenant after its grace period.
    pub status: TenantStatus,
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub reason: Option<String>,
}

/// A tenant's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
    PendingDeletion,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::PendingDeletion => "pending_deletion",
        }
    }
}

/// How far a tenant's onboarding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Onboarding {
    Pending,
    InProgress,
    Completed,
}

impl Onboarding {
    pub fn as_str(self) -> &'static str {
        match self {
            Onboarding::Pending => "pending",
            Onboarding::InProgress => "in_progress",
            Onboarding::Completed => "completed",
        }
    }
}

pub fn check_slug(slug: &str) -> ApiResult<()> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid("/slug", "`slug` must be 1 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit"))
    }
}

fn check_grace(days: Option<i32>) -> ApiResult<()> {
    match days {
        Some(d) if !(0..=365).contains(&d) => Err(Problem::invalid("/grace_period_days", "`grace_period_days` must be from 0 to 365")),
        _ => Ok(()),
    }
}

fn check_documents(fields: [(&str, &Option<Value>); 4]) -> ApiResult<()> {
    for (name, value) in fields {
        if let Some(v) = value {
            check_document(name, v)?;
        }
    }
    Ok(())
}

async fn fetch(tx: &mut Tx, id: Uuid) -> ApiResult<Tenant> {
    sqlx::query_as::<_, Tenant>(&format!("SELECT {COLUMNS} FROM arbiter_admin.tenants WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("tenant `{id}`")))
}


/// Inserts a tenant and feeds its link to the platform (bootstrap uses it too).
pub async fn insert_tenant(tx: &mut Tx, body: &CreateTenant) -> ApiResult<Tenant> {
    let id = Uuid::new_v4();
    let empty = || Value::Object(Default::default());
    let tenant = sqlx::query_as::<_, Tenant>(&format!(
        "INSERT INTO arbiter_admin.tenants (id, slug, name, description, grace_period_days, settings, feature_flags, quotas, security_policy)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&body.slug)
    .bind(&body.name)
    .bind(&body.description)
    .bind(body.grace_period_days.unwrap_or(30))
    .bind(body.settings.clone().unwrap_or_else(empty))
    .bind(body.feature_flags.clone().unwrap_or_else(empty))
    .bind(body.quotas.clone().unwrap_or_else(empty))
    .bind(body.security_policy.clone().unwrap_or_else(empty))
    .fetch_one(tx.conn())
    .await?;
    tx.feed.touch(&feed::tenant(id), "platform", feed::PLATFORM);
    crate::rbac::provision_global_roles(tx, id).await?;
    Ok(tenant)
}

/// Create a tenant (platform operators).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$", description = "Replays of the same create return the stored response")),
    responses((status = 201, body = Tenant), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    body: JsonBody<CreateTenant>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    check_slug(&b.slug)?;
    check_text("name", &b.name, 200, false)?;
    check_description("description", &b.description, 2000)?;
    check_grace(b.grace_period_days)?;
    check_documents([("settings", &b.settings), ("feature_flags", &b.feature_flags), ("quotas", &b.quotas), ("security_policy", &b.security_policy)])?;
    let owner_email = match &b.owner_email {
        Some(e) => Some(super::users::normalize_email(e)?),
        None => None,
    };
    let mut tx = app.db.begin(Scope::Platform).await?;
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/tenants", &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let tenant = insert_tenant(&mut tx, b).await?;
    if let Some(email) = owner_email {
        super::users::add_owner(&mut tx, tenant.id, &email).await?;
    }
    if let Some(template) = &b.template {
        super::templates::provision(&mut tx, tenant.id, template).await?;
    }
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant.id),
        action: "tenant.create",
        target_type: "tenant",
        target_id: tenant.id.to_string(),
        before: None,
        after: snapshot(&tenant),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &tenant).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &tenant, Some(revision), Some(tenant.version)))
}

/// List tenants (platform operators); filter by `status` or `slug`.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageParams,
    ("status" = Option<String>, Query, description = "active, suspended or pending_deletion"),
    ("slug" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Tenant>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenants(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["status", "slug"])?;
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let rows = sqlx::query_as::<_, Tenant>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.tenants
         WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR slug = $3)
         ORDER BY id LIMIT $4"
    ))
    .bind(q.page.after)
    .bind(q.filter("status"))
    .bind(q.filter("slug"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |t| t.id), None, None))
}

/// Read a tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}", tag = "tenants", params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Tenant), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let tenant = fetch(&mut tx, tenant_id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &tenant, None, Some(tenant.version)))
}

/// Change a tenant's settings (its admins). `If-Match` guards against lost updates.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}", tag = "tenants", request_body = UpdateTenant,
    params(("tenant_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Tenant), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_tenant(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<UpdateTenant>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    let b = &body.value;
    if let Some(name) = &b.name {
        check_text("name", name, 200, false)?;
    }
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    check_grace(b.grace_period_days)?;
    check_documents([("settings", &b.settings), ("feature_flags", &b.feature_flags), ("quotas", &b.quotas), ("security_policy", &b.security_policy)])?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id).await?;
    check_if_match(&headers, before.version)?;
    let after = sqlx::query_as::<_, Tenant>(&format!(
        "UPDATE arbiter_admin.tenants SET name = coalesce($2, name), description = coalesce($3, description),
            grace_period_days = coalesce($4, grace_period_days), settings = coalesce($5, settings),
            feature_flags = coalesce($6, feature_flags), quotas = coalesce($7, quotas),
            security_policy = coalesce($8, security_policy), onboarding_status = coalesce($9, onboarding_status),
            version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(&b.name)
    .bind(&b.description)
    .bind(b.grace_period_days)
    .bind(&b.settings)
    .bind(&b.feature_flags)
    .bind(&b.quotas)
    .bind(&b.security_policy)
    .bind(b.onboarding_status.map(Onboarding::as_str))
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "tenant.update",
        target_type: "tenant",
        target_id: tenant_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Move a tenant through its lifecycle (platform operators): suspend, reactivate, or
/// schedule its deletion after its grace period (reactivating cancels it).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/status", tag = "tenants", request_body = SetStatus,
    params(("tenant_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Tenant), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn set_tenant_status(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<SetStatus>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    if let Some(r) = &b.reason {
        check_text("reason", r, 1000, true)?;
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id).await?;
    check_if_match(&headers, before.version)?;
    if before.status == b.status.as_str() {
        return Err(Problem::conflict("/status", format!("the tenant is already {}", b.status.as_str())));
    }
    let after = sqlx::query_as::<_, Tenant>(&format!(
        "UPDATE arbiter_admin.tenants SET status = $2, status_reason = $3,
            deletion_requested_at = CASE WHEN $2 = 'pending_deletion' THEN now() END,
            deletion_scheduled_at = CASE WHEN $2 = 'pending_deletion' THEN now() + make_interval(days => grace_period_days) END,
            version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(b.status.as_str())
    .bind(&b.reason)
    .fetch_one(tx.conn())
    .await?;
    // The tenant gate: closed unless active.
    let (was_open, is_open) = (before.status == "active", after.status == "active");
    if was_open != is_open {
        let tenant = feed::tenant(tenant_id);
        if is_open {
            tx.feed.delete(&tenant, "suspended", feed::PLATFORM);
        } else {
            tx.feed.touch(&tenant, "suspended", feed::PLATFORM);
        }
    }
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "tenant.status",
        target_type: "tenant",
        target_id: tenant_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// A domain of a tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Domain {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub domain: String,
    pub is_primary: bool,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"domain": "acme.example.com", "is_primary": true}))]
pub struct AddDomain {
    /// A lowercase DNS name (`acme.example.com`).
    #[schema(max_length = 253, pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")]
    pub domain: String,
    #[serde(default)]
    pub is_primary: bool,
}

fn check_domain(d: &str) -> ApiResult<()> {
    let labels_ok = d.split('.').count() >= 2
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if d.len() <= 253 && labels_ok {
        Ok(())
    } else {
        Err(Problem::invalid("/domain", "`domain` must be a lowercase DNS name with at least two labels (`acme.example.com`)"))
    }
}

/// List a tenant's domains.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/domains", tag = "tenants", params(("tenant_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<Domain>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_domains(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, Domain>(
        "SELECT id, tenant_id, domain, is_primary, verified_at, created_at FROM arbiter_admin.tenant_domains
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
    )
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |d| d.id), None, None))
}

/// Add a domain to a tenant (its admins). A domain belongs to one tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/domains", tag = "tenants", request_body = AddDomain,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Domain), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn add_domain(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<AddDomain>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    check_domain(&body.value.domain)?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/domains");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    if body.value.is_primary {
        sqlx::query("UPDATE arbiter_admin.tenant_domains SET is_primary = false WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(tx.conn())
            .await?;
    }
    let domain = sqlx::query_as::<_, Domain>(
        "INSERT INTO arbiter_admin.tenant_domains (id, tenant_id, domain, is_primary) VALUES ($1, $2, $3, $4)
         RETURNING id, tenant_id, domain, is_primary, verified_at, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(&body.value.domain)
    .bind(body.value.is_primary)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "tenant.domain.add",
        target_type: "tenant_domain",
        target_id: domain.id.to_string(),
        before: None,
        after: snapshot(&domain),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &domain).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &domain, Some(revision), None))
}

/// Remove a domain from a tenant (its admins).
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/domains/{domain_id}", tag = "tenants",
    params(("tenant_id" = Uuid, Path), ("domain_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_domain(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    P((tenant_id, domain_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let gone = sqlx::query_as::<_, Domain>(
        "DELETE FROM arbiter_admin.tenant_domains WHERE id = $1 AND tenant_id = $2
         RETURNING id, tenant_id, domain, is_primary, verified_at, created_at",
    )
    .bind(domain_id)
    .bind(tenant_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("domain `{domain_id}`")))?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "tenant.domain.remove",
        target_type: "tenant_domain",
        target_id: domain_id.to_string(),
        before: snapshot(&gone),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}
