//! Joining a tenant: invitations and invite codes (seed 003 `Invitations`, 002
//! `invitations`), join requests (seed 000 `tenant_requests`), and the outbox that
//! carries an invitation's link to the product's own mailer (DESIGN §12, "Messages").
//!
//! An invitation's secret is `<invitation id>.<64 hex>`, kept only as a keyed hash,
//! expiring, and used at most `max_uses` times (once for an emailed invitation). An
//! emailed invitation's secret is never returned: it goes to the outbox, encrypted with
//! the key-encryption key and erased once the mailer marks the message delivered. An
//! invite code (no email) is returned once, to whoever made it, to hand out.
//!
//! Accepting (public: the secret is the credential) and approving a join request make
//! the person a member of the tenant: the user with that email, made when there is
//! none (a person is one identity across tenants), joins it, with the invitation's role
//! if it names one, in one transaction with the feed and the audit record.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::users::normalize_email;
use super::{check_description, commit, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};
use crate::rbac::{self, Assignee};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/invitations", post(create_invitation).get(list_invitations))
        .route("/v1/tenants/{tenant_id}/invitations/{invitation_id}", get(get_invitation))
        .route("/v1/tenants/{tenant_id}/invitations/{invitation_id}/cancel", post(cancel_invitation))
        .route("/v1/invitations/accept", post(accept_invitation))
        .route("/v1/join-requests", post(request_to_join))
        .route("/v1/tenants/{tenant_id}/join-requests", get(list_requests))
        .route("/v1/tenants/{tenant_id}/join-requests/{request_id}", get(get_request))
        .route("/v1/tenants/{tenant_id}/join-requests/{request_id}/approve", post(approve_request))
        .route("/v1/tenants/{tenant_id}/join-requests/{request_id}/reject", post(reject_request))
        .route("/v1/outbox", get(list_outbox))
        .route("/v1/outbox/{message_id}/delivered", post(mark_delivered))
}

/// Longest an invitation may run, and the default.
const MAX_SECONDS: i64 = 30 * 24 * 3600;
const DEFAULT_SECONDS: i64 = 7 * 24 * 3600;

/// An invitation (its secret is never shown, except an invite code's `code` once).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Invitation {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Absent for an invite code.
    pub email: Option<String>,
    pub role_id: Option<Uuid>,
    pub invited_by: String,
    pub max_uses: i32,
    pub uses: i32,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub used_by: Option<Uuid>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<String>,
    /// `pending`, `accepted` (every use taken), `expired` or `cancelled`.
    #[sqlx(skip)]
    pub status: String,
    /// An invite code's secret, in the response that made it only.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Invitation {
    fn with_status(mut self) -> Invitation {
        self.status = if self.cancelled_at.is_some() {
            "cancelled"
        } else if self.uses >= self.max_uses {
            "accepted"
        } else if self.expires_at <= Utc::now() {
            "expired"
        } else {
            "pending"
        }
        .to_string();
        self
    }
}

const INVITATION_COLUMNS: &str =
    "id, tenant_id, email, role_id, invited_by, max_uses, uses, expires_at, used_at, used_by, cancelled_at, cancelled_by, created_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "new.hire@acme.example", "expires_in_seconds": 604800}))]
pub struct CreateInvitation {
    /// Sent through the outbox; without it, the invitation is an invite code returned once.
    #[schema(max_length = 320, pattern = r"^[^@\u0000-\u0020\u007f-\u009f]+@[^@\u0000-\u0020\u007f-\u009f]+$")]
    pub email: Option<String>,
    /// A role the person gets on joining.
    pub role_id: Option<Uuid>,
    /// 60 to 2,592,000 (30 days); 604,800 (7 days) when absent.
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in_seconds: Option<i64>,
    /// An invite code's uses (1 to 1,000; 1 when absent); an emailed invitation is used once.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_uses: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "0190f3c2-7a4e-7c1d-9a53-0c6d1c1d2a11.3f4e...", "email": "new.hire@acme.example"}))]
pub struct AcceptInvitation {
    /// The invitation's secret, as the link or the code carried it.
    #[schema(min_length = 1, max_length = 200)]
    pub token: String,
    /// For an invite code: who joins. An emailed invitation's person is its email.
    #[schema(max_length = 320, pattern = r"^[^@\u0000-\u0020\u007f-\u009f]+@[^@\u0000-\u0020\u007f-\u009f]+$")]
    pub email: Option<String>,
}

/// Who joined, and where.
#[derive(Debug, Serialize, ToSchema)]
pub struct Joined {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
}

/// A request to join a tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct JoinRequest {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub reason: String,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub responded_at: Option<DateTime<Utc>>,
    pub responded_by: Option<String>,
    pub response_reason: Option<String>,
    /// The member the approval made.
    pub user_id: Option<Uuid>,
}

const REQUEST_COLUMNS: &str = "id, tenant_id, email, reason, status, requested_at, responded_at, responded_by, response_reason, user_id";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tenant": "acme", "email": "someone@acme.example", "reason": "I work in the Lisbon office"}))]
pub struct RequestToJoin {
    /// The tenant's slug.
    #[schema(min_length = 1, max_length = 63, pattern = r"^[a-z0-9](-?[a-z0-9])*$")]
    pub tenant: String,
    #[schema(max_length = 320, pattern = r"^[^@\u0000-\u0020\u007f-\u009f]+@[^@\u0000-\u0020\u007f-\u009f]+$")]
    pub email: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub reason: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "welcome"}))]
pub struct Respond {
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub reason: Option<String>,
}

/// A message for the product's mailer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    /// `invitation`.
    pub kind: String,
    pub recipient: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The secret to deliver (an invitation's token), until the message is delivered.
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Makes `email` (made a user when there is none) a member of `tenant`, with `role`;
/// returns the user. Runs in the platform scope: a person is one identity across tenants.
async fn join(tx: &mut Tx, tenant: Uuid, email: &str, role: Option<Uuid>, by: &str) -> ApiResult<Uuid> {
    let existing: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM arbiter_admin.users WHERE email = $1 AND status <> 'deleted'").bind(email).fetch_optional(tx.conn()).await?;
    let user = match existing {
        Some((_, status)) if status == "suspended" => return Err(Problem::forbidden("the person's account is suspended")),
        Some((id, _)) => id,
        None => {
            let id = Uuid::new_v4();
            sqlx::query("INSERT INTO arbiter_admin.users (id, email) VALUES ($1, $2)").bind(id).bind(email).execute(tx.conn()).await?;
            id
        }
    };
    let added = sqlx::query("INSERT INTO arbiter_admin.tenant_users (tenant_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(user)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if added > 0 {
        tx.feed.touch(&feed::tenant(tenant), "member", &feed::user(user));
    }
    if let Some(role) = role {
        let builtin: Option<Option<String>> =
            sqlx::query_scalar("SELECT builtin FROM arbiter_admin.roles WHERE id = $1 AND (tenant_id = $2 OR tenant_id IS NULL)")
                .bind(role)
                .bind(tenant)
                .fetch_optional(tx.conn())
                .await?;
        if let Some(builtin) = builtin {
            let assigned = sqlx::query(
                "INSERT INTO arbiter_admin.role_assignments (id, tenant_id, role_id, user_id, assigned_by) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(tenant)
            .bind(role)
            .bind(user)
            .bind(by)
            .execute(tx.conn())
            .await?
            .rows_affected();
            if assigned > 0 {
                rbac::assignment_edge(tx, tenant, role, builtin.as_deref(), Assignee::User(user), None, true);
            }
        }
    }
    Ok(user)
}

async fn fetch_invitation(tx: &mut Tx, tenant_id: Uuid, id: Uuid) -> ApiResult<Invitation> {
    sqlx::query_as::<_, Invitation>(&format!("SELECT {INVITATION_COLUMNS} FROM arbiter_admin.invitations WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .map(Invitation::with_status)
        .ok_or_else(|| Problem::not_found(format!("invitation `{id}`")))
}

/// Invite a person by email (the link goes to the outbox), or make an invite code.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/invitations", tag = "membership", request_body = CreateInvitation,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Invitation), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_invitation(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateInvitation>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    let email = b.email.as_deref().map(normalize_email).transpose()?;
    let seconds = b.expires_in_seconds.unwrap_or(DEFAULT_SECONDS);
    if !(60..=MAX_SECONDS).contains(&seconds) {
        return Err(Problem::invalid("/expires_in_seconds", format!("`expires_in_seconds` must be 60 to {MAX_SECONDS}")));
    }
    let max_uses = b.max_uses.unwrap_or(1);
    if !(1..=1000).contains(&max_uses) {
        return Err(Problem::invalid("/max_uses", "`max_uses` must be 1 to 1,000"));
    }
    if email.is_some() && max_uses != 1 {
        return Err(Problem::invalid("/max_uses", "an emailed invitation is used once; give no email for a code with several uses"));
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/invitations");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    if let Some(role) = b.role_id {
        let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM arbiter_admin.roles WHERE id = $1 AND (tenant_id = $2 OR tenant_id IS NULL))")
            .bind(role)
            .bind(tenant_id)
            .fetch_one(tx.conn())
            .await?;
        if !found {
            return Err(Problem::invalid("/role_id", format!("the tenant has no role `{role}`")));
        }
        // Giving a role is managing roles.
        app.authorize(&caller, Need::Tenant(tenant_id, "manage_roles")).await?;
    }
    let key = crate::auth::new_key(&app.secrets)?;
    let mut invitation = sqlx::query_as::<_, Invitation>(&format!(
        "INSERT INTO arbiter_admin.invitations (id, tenant_id, email, secret_hash, pepper_version, role_id, invited_by, max_uses, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(key.id)
    .bind(tenant_id)
    .bind(&email)
    .bind(&key.hash)
    .bind(key.pepper_version)
    .bind(b.role_id)
    .bind(caller.actor())
    .bind(max_uses)
    .bind(Utc::now() + Duration::seconds(seconds))
    .fetch_one(tx.conn())
    .await?
    .with_status();
    match &email {
        Some(to) => {
            let message = Uuid::now_v7();
            let sealed = app
                .secrets
                .seal(message.as_bytes(), key.token.as_bytes())
                .ok_or_else(|| Problem::internal("seal an invitation", &"the sealing key is unusable"))?;
            sqlx::query(
                "INSERT INTO arbiter_admin.outbox (id, tenant_id, kind, recipient, payload, sealed_secret) VALUES ($1, $2, 'invitation', $3, $4, $5)",
            )
            .bind(message)
            .bind(tenant_id)
            .bind(to)
            .bind(json!({ "invitation_id": invitation.id, "tenant_id": tenant_id, "expires_at": invitation.expires_at, "role_id": b.role_id }))
            .bind(sealed)
            .execute(tx.conn())
            .await?;
        }
        None => invitation.code = Some(key.token.clone()),
    }
    let mut kept = invitation.clone();
    kept.code = None;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "invitation.create",
        target_type: "invitation",
        target_id: invitation.id.to_string(),
        before: None,
        after: snapshot(&kept),
    })
    .await?;
    // A replay returns the invitation without its code: the code is shown once.
    idem.save(&mut tx, StatusCode::CREATED, &kept).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &invitation, Some(revision), None))
}

/// A tenant's invitations; filter by `email`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/invitations", tag = "membership",
    params(("tenant_id" = Uuid, Path), PageParams, ("email" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Invitation>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_invitations(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["email"])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, Invitation>(&format!(
        "SELECT {INVITATION_COLUMNS} FROM arbiter_admin.invitations WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR email = lower($3)) ORDER BY id LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("email"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let rows: Vec<Invitation> = rows.into_iter().map(Invitation::with_status).collect();
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |i| i.id), None, None))
}

/// Read an invitation.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/invitations/{invitation_id}", tag = "membership",
    params(("tenant_id" = Uuid, Path), ("invitation_id" = Uuid, Path)),
    responses((status = 200, body = Invitation), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_invitation(State(app): State<App>, caller: Caller, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let i = fetch_invitation(&mut tx, tenant_id, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &i, None, None))
}

/// Cancel an invitation: its secret stops working at once.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/invitations/{invitation_id}/cancel", tag = "membership",
    params(("tenant_id" = Uuid, Path), ("invitation_id" = Uuid, Path)),
    responses((status = 200, body = Invitation), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel_invitation(State(app): State<App>, caller: Caller, ctx: RequestContext, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch_invitation(&mut tx, tenant_id, id).await?;
    if before.status != "pending" {
        return Err(Problem::conflict("/status", format!("the invitation is {}", before.status)));
    }
    let after = sqlx::query_as::<_, Invitation>(&format!(
        "UPDATE arbiter_admin.invitations SET cancelled_at = now(), cancelled_by = $2, updated_at = now() WHERE id = $1 RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(id)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?
    .with_status();
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "invitation.cancel",
        target_type: "invitation",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), None))
}

/// Accept an invitation (public: the secret is the credential): the person joins the
/// tenant. A wrong, used, expired or cancelled secret is refused alike.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "membership", request_body = AcceptInvitation, security(()),
    responses((status = 200, body = Joined), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn accept_invitation(State(app): State<App>, ctx: RequestContext, body: JsonBody<AcceptInvitation>) -> ApiResult<Response> {
    let b = &body.value;
    let refused = || Problem::new(StatusCode::FORBIDDEN, "the invitation is not valid (unknown, used, expired, cancelled or mistyped)");
    let (id, secret) = b.token.split_once('.').ok_or_else(refused)?;
    let id: Uuid = id.parse().map_err(|_| refused())?;
    if secret.len() != 64 {
        return Err(refused());
    }
    let email = b.email.as_deref().map(normalize_email).transpose()?;
    // Across tenants: who the person is does not depend on the tenant.
    let mut tx = app.db.begin(Scope::Platform).await?;
    type Row = (Uuid, Option<String>, Vec<u8>, i32, Option<Uuid>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT tenant_id, email, secret_hash, pepper_version, role_id FROM arbiter_admin.invitations
         WHERE id = $1 AND cancelled_at IS NULL AND uses < max_uses AND expires_at > now() FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    let (tenant_id, invited, hash, pepper, role) = row.ok_or_else(refused)?;
    if !app.secrets.verify(pepper, secret.as_bytes(), &hash) {
        return Err(refused());
    }
    let who = match (invited, email) {
        (Some(invited), Some(given)) if invited != given => {
            return Err(Problem::invalid("/email", "the invitation was sent to another address"));
        }
        (Some(invited), _) => invited,
        (None, Some(given)) => given,
        (None, None) => return Err(Problem::invalid("/email", "an invite code needs the `email` of the person joining")),
    };
    let user = join(&mut tx, tenant_id, &who, role, &format!("invitation:{id}")).await?;
    let after = sqlx::query_as::<_, Invitation>(&format!(
        "UPDATE arbiter_admin.invitations SET uses = uses + 1, used_at = now(), used_by = $2, updated_at = now() WHERE id = $1 RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(id)
    .bind(user)
    .fetch_one(tx.conn())
    .await?
    .with_status();
    audit::record_as(&mut tx, &format!("user:{user}"), &ctx, Entry {
        tenant: Some(tenant_id),
        action: "invitation.accept",
        target_type: "invitation",
        target_id: id.to_string(),
        before: None,
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &Joined { tenant_id, user_id: user }, Some(revision), None))
}

/// Ask to join a tenant (public); its managers approve or reject the request.
#[utoipa::path(post, path = "/v1/join-requests", tag = "membership", request_body = RequestToJoin, security(()),
    responses((status = 201, body = JoinRequest), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn request_to_join(State(app): State<App>, ctx: RequestContext, body: JsonBody<RequestToJoin>) -> ApiResult<Response> {
    let b = &body.value;
    let email = normalize_email(&b.email)?;
    check_description("reason", &b.reason, 2000)?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let tenant: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM arbiter_admin.tenants WHERE slug = $1").bind(&b.tenant).fetch_optional(tx.conn()).await?;
    let (tenant_id, status) = tenant.ok_or_else(|| Problem::invalid("/tenant", format!("there is no tenant `{}`", arbiter_schema::shorten(&b.tenant))))?;
    if status != "active" {
        return Err(Problem::invalid("/tenant", "the tenant does not take requests now"));
    }
    let request = sqlx::query_as::<_, JoinRequest>(&format!(
        "INSERT INTO arbiter_admin.tenant_requests (id, tenant_id, email, reason) VALUES ($1, $2, $3, $4) RETURNING {REQUEST_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(&email)
    .bind(&b.reason)
    .fetch_one(tx.conn())
    .await?;
    audit::record_as(&mut tx, "public", &ctx, Entry {
        tenant: Some(tenant_id),
        action: "join_request.create",
        target_type: "join_request",
        target_id: request.id.to_string(),
        before: None,
        after: Some(json!({ "id": request.id, "status": request.status })),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &request, Some(revision), None))
}

/// A tenant's join requests; filter by `status`.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/join-requests", tag = "membership",
    params(("tenant_id" = Uuid, Path), PageParams, ("status" = Option<String>, Query)),
    responses((status = 200, body = PageOf<JoinRequest>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_requests(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["status"])?;
    if let Some(s) = q.filter("status") {
        if !matches!(s, "pending" | "approved" | "rejected") {
            return Err(Problem::bad_request("status", format!("`{}` is not `pending`, `approved` or `rejected`", arbiter_schema::shorten(s))));
        }
    }
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, JoinRequest>(&format!(
        "SELECT {REQUEST_COLUMNS} FROM arbiter_admin.tenant_requests WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR status = $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("status"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |r| r.id), None, None))
}

async fn fetch_request(tx: &mut Tx, tenant_id: Uuid, id: Uuid) -> ApiResult<JoinRequest> {
    sqlx::query_as::<_, JoinRequest>(&format!("SELECT {REQUEST_COLUMNS} FROM arbiter_admin.tenant_requests WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("join request `{id}`")))
}

/// Read a join request.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/join-requests/{request_id}", tag = "membership",
    params(("tenant_id" = Uuid, Path), ("request_id" = Uuid, Path)),
    responses((status = 200, body = JoinRequest), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_request(State(app): State<App>, caller: Caller, P((tenant_id, id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let r = fetch_request(&mut tx, tenant_id, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &r, None, None))
}

/// Approve a join request: the person becomes a member (a user is made for them when
/// there is none).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/join-requests/{request_id}/approve", tag = "membership", request_body = Respond,
    params(("tenant_id" = Uuid, Path), ("request_id" = Uuid, Path)),
    responses((status = 200, body = JoinRequest), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn approve_request(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    P((tenant_id, id)): P<(Uuid, Uuid)>,
    body: JsonBody<Respond>,
) -> ApiResult<Response> {
    respond(&app, &caller, &ctx, tenant_id, id, body.value.reason.as_deref(), true).await
}

/// Reject a join request.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/join-requests/{request_id}/reject", tag = "membership", request_body = Respond,
    params(("tenant_id" = Uuid, Path), ("request_id" = Uuid, Path)),
    responses((status = 200, body = JoinRequest), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn reject_request(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    P((tenant_id, id)): P<(Uuid, Uuid)>,
    body: JsonBody<Respond>,
) -> ApiResult<Response> {
    respond(&app, &caller, &ctx, tenant_id, id, body.value.reason.as_deref(), false).await
}

async fn respond(app: &App, caller: &Caller, ctx: &RequestContext, tenant_id: Uuid, id: Uuid, reason: Option<&str>, approve: bool) -> ApiResult<Response> {
    app.authorize(caller, Need::Tenant(tenant_id, "manage_users")).await?;
    if let Some(r) = reason {
        check_description("reason", r, 2000)?;
    }
    // The platform scope: approving may make the person's one global identity.
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch_request(&mut tx, tenant_id, id).await?;
    if before.status != "pending" {
        return Err(Problem::conflict("/status", format!("the request is already {}", before.status)));
    }
    let user = if approve { Some(join(&mut tx, tenant_id, &before.email, None, &caller.actor()).await?) } else { None };
    let after = sqlx::query_as::<_, JoinRequest>(&format!(
        "UPDATE arbiter_admin.tenant_requests SET status = $2, responded_at = now(), responded_by = $3, response_reason = $4, user_id = $5
         WHERE id = $1 RETURNING {REQUEST_COLUMNS}"
    ))
    .bind(id)
    .bind(if approve { "approved" } else { "rejected" })
    .bind(caller.actor())
    .bind(reason)
    .bind(user)
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, caller, ctx, Entry {
        tenant: Some(tenant_id),
        action: if approve { "join_request.approve" } else { "join_request.reject" },
        target_type: "join_request",
        target_id: id.to_string(),
        before: Some(json!({ "status": before.status })),
        after: Some(json!({ "status": after.status, "user_id": after.user_id })),
    })
    .await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), None))
}

/// Messages not yet delivered, oldest first, with their secrets (platform operators:
/// the product's mailer drains it with an operator key).
#[utoipa::path(get, path = "/v1/outbox", tag = "membership", params(PageParams),
    responses((status = 200, body = PageOf<OutboxMessage>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_outbox(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    type Row = (Uuid, Option<Uuid>, String, String, serde_json::Value, Option<Vec<u8>>, DateTime<Utc>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, tenant_id, kind, recipient, payload, sealed_secret, created_at, delivered_at FROM arbiter_admin.outbox
         WHERE delivered_at IS NULL AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
    )
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let mut items = Vec::with_capacity(rows.len());
    for (id, tenant_id, kind, recipient, payload, sealed, created_at, delivered_at) in rows {
        let secret = match sealed {
            Some(s) => Some(
                app.secrets
                    .open(id.as_bytes(), &s)
                    .and_then(|p| String::from_utf8(p).ok())
                    .ok_or_else(|| Problem::internal("open an outbox secret", &"it does not open with this key-encryption key"))?,
            ),
            None => None,
        };
        items.push(OutboxMessage { id, tenant_id, kind, recipient, payload, secret, created_at, delivered_at });
    }
    Ok(reply(StatusCode::OK, &PageOf::of(items, q.page, |m| m.id), None, None))
}

/// Mark a message delivered: its secret is erased.
#[utoipa::path(post, path = "/v1/outbox/{message_id}/delivered", tag = "membership", params(("message_id" = Uuid, Path)),
    responses((status = 204, description = "Delivered"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn mark_delivered(State(app): State<App>, caller: Caller, ctx: RequestContext, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let tenant: Option<Option<Uuid>> = sqlx::query_scalar(
        "UPDATE arbiter_admin.outbox SET delivered_at = now(), sealed_secret = NULL WHERE id = $1 AND delivered_at IS NULL RETURNING tenant_id",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    let tenant = tenant.ok_or_else(|| Problem::not_found(format!("undelivered message `{id}`")))?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant,
        action: "outbox.delivered",
        target_type: "outbox_message",
        target_id: id.to_string(),
        before: None,
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}
