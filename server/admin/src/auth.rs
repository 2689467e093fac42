//! Callers and what they may do. A caller is an API key (`Authorization: Bearer
//! <id>.<secret>`; sessions and OAuth tokens come with login). What it may do is a PDP
//! Check on the platform schema (`platform/tenant:T#manage_users@platform/api_key:K`)
//! at least as fresh as Postgres' newest revision, so a revoked grant is gone for the
//! next request and a decision is explained by `arbiter check --explain`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use rand::RngCore;
use uuid::Uuid;

use crate::audit;
use crate::db::Scope;
use crate::feed;
use crate::http::{App, RequestContext};
use crate::problem::{ApiResult, Problem};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    /// The tenant a tenant-scoped key acts in (None: a platform operator's key).
    pub tenant: Option<Uuid>,
    pub role: String,
    /// The impersonation session the call runs in (`Arbiter-Impersonation`), if any.
    pub impersonation: Option<Impersonation>,
    /// The request, for the security stream when the call is refused.
    pub ctx: RequestContext,
}

/// An impersonation session a call runs in: decided as its user, within its scope.
#[derive(Debug, Clone)]
pub struct Impersonation {
    pub session_id: Uuid,
    pub tenant: Uuid,
    pub user_id: Uuid,
    /// Tenant permissions of the platform schema the session may use.
    pub scope: Vec<String>,
}

/// The header naming the impersonation session a call runs in.
pub const IMPERSONATION_HEADER: &str = "arbiter-impersonation";

impl Caller {
    /// The caller as a PDP subject.
    pub fn subject(&self) -> String {
        feed::api_key(self.key_id)
    }

    /// The caller as the audit trail names it.
    pub fn actor(&self) -> String {
        format!("api_key:{}", self.key_id)
    }

    /// Whom the call acts as in the audit trail: the impersonated user, or the caller.
    pub fn effective_actor(&self) -> String {
        match &self.impersonation {
            Some(i) => format!("user:{}", i.user_id),
            None => self.actor(),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A platform operator (`platform/platform:root#operate`).
    Platform,
    /// A permission of the platform schema on one tenant (`manage`, `manage_users`,
    /// `manage_roles`, `view`, `audit`).
    Tenant(Uuid, &'static str),
}

/// A new API key's parts: its id, the secret shown once, and the secret's hash.
#[derive(Debug)]
pub struct NewKey {
    pub id: Uuid,
    pub token: String,
    pub hash: Vec<u8>,
    pub pepper_version: i32,
}

/// Makes a key: `<uuid>.<64 hex>` (256 random bits of secret).
pub fn new_key(secrets: &crate::secrets::Secrets) -> ApiResult<NewKey> {
    let id = Uuid::new_v4();
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let pepper_version = secrets.current_pepper();
    let hash = secrets
        .hash(pepper_version, secret.as_bytes())
        .ok_or_else(|| Problem::internal("cannot hash a new key", &"the current pepper is missing"))?;
    Ok(NewKey { id, token: format!("{id}.{secret}"), hash, pepper_version })
}

impl FromRequestParts<App> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Caller, Problem> {
        let ctx = RequestContext::from_request_parts(parts, app).await?;
        let value = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthenticated("this call needs `Authorization: Bearer <api key>`"))?;
        let value = value.to_str().map_err(|_| Problem::unauthenticated("the Authorization header is not readable"))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| Problem::unauthenticated("the Authorization header must be `Bearer <api key>`"))?
            .trim();
        let mut caller = match authenticate(app, token, &ctx).await {
            Ok(c) => c,
            Err(p) => {
                // A credential was presented and refused: the security stream keeps it,
                // under the key id it named (if it named one).
                if p.status == 401 {
                    let named = token.split_once('.').and_then(|(id, _)| id.parse::<Uuid>().ok());
                    let actor = named.map(|id| format!("api_key:{id}")).unwrap_or_else(|| "anonymous".to_string());
                    audit::security(app, &ctx, &actor, None, "authentication.failed", "api_key", named.map(|id| id.to_string()).unwrap_or_default(),
                        serde_json::json!({"reason": p.detail})).await;
                }
                return Err(p);
            }
        };
        if let Some(v) = parts.headers.get(IMPERSONATION_HEADER) {
            let id = v.to_str().ok().and_then(|v| v.trim().parse::<Uuid>().ok()).ok_or_else(|| {
                Problem::bad_request(IMPERSONATION_HEADER, "`Arbiter-Impersonation` must be an impersonation session's id")
            })?;
            match impersonation(app, &caller, id).await {
                Ok(i) => caller.impersonation = Some(i),
                Err(p) => {
                    if p.status == 403 {
                        audit::security(app, &ctx, &caller.actor(), None, "access.denied", "impersonation_session", id.to_string(),
                            serde_json::json!({"reason": p.detail})).await;
                    }
                    return Err(p);
                }
            }
        }
        Ok(caller)
    }
}

/// The session `id`, which the caller's key must have started and which must still run.
async fn impersonation(app: &App, caller: &Caller, id: Uuid) -> ApiResult<Impersonation> {
    let mut tx = app.db.begin(Scope::Platform).await?;
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT tenant_id, impersonator_key_id, target_user_id, scope, expires_at, ended_at FROM arbiter_admin.impersonation_sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let refused = || Problem::forbidden("the impersonation session is unknown, another caller's, ended or expired");
    let s = row.ok_or_else(refused)?;
    if s.impersonator_key_id != caller.key_id || s.ended_at.is_some() || s.expires_at <= Utc::now() {
        return Err(refused());
    }
    Ok(Impersonation { session_id: id, tenant: s.tenant_id, user_id: s.target_user_id, scope: s.scope })
}

/// What a call in an impersonation session reads of it.
#[derive(Debug, sqlx::FromRow)]
struct SessionRow {
    tenant_id: Uuid,
    impersonator_key_id: Uuid,
    target_user_id: Uuid,
    scope: Vec<String>,
    expires_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

/// What authentication reads of a key.
#[derive(Debug, sqlx::FromRow)]
struct KeyRow {
    tenant_id: Option<Uuid>,
    role: String,
    secret_hash: Vec<u8>,
    pepper_version: i32,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// The caller a bearer token names, or 401 without saying which part was wrong.
async fn authenticate(app: &App, token: &str, ctx: &RequestContext) -> ApiResult<Caller> {
    let refused = || Problem::unauthenticated("the API key is not valid (unknown, revoked, expired or mistyped)");
    let (id, secret) = token.split_once('.').ok_or_else(refused)?;
    let id: Uuid = id.parse().map_err(|_| refused())?;
    if secret.len() != 64 {
        return Err(refused());
    }
    // The key's row is read in the platform scope: which tenant it belongs to is what
    // this lookup finds out. Nothing else is read or written here.
    let mut tx = app.db.begin(Scope::Platform).await?;
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT tenant_id, role, secret_hash, pepper_version, expires_at, revoked_at FROM arbiter_admin.api_keys WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let key = row.ok_or_else(refused)?;
    if !app.secrets.verify(key.pepper_version, secret.as_bytes(), &key.secret_hash) {
        return Err(refused());
    }
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(refused());
    }
    Ok(Caller { key_id: id, tenant: key.tenant_id, role: key.role, impersonation: None, ctx: ctx.clone() })
}

impl App {
    /// Asks the PDP whether `caller` may do what `need` says. A tenant the caller cannot
    /// even view is 404 (its existence is not the caller's business); a tenant it views
    /// but may not change is 403.
    pub async fn authorize(&self, caller: &Caller, need: Need) -> ApiResult<()> {
        let decision = self.decide(caller, need).await;
        if let Err(p) = &decision {
            // Refusals (403, and the 404 that hides a tenant) go to the security stream.
            if p.status == 403 || p.status == 404 {
                let (tenant, target_type, target_id, permission) = match need {
                    Need::Platform => (None, "platform", "root".to_string(), "operate"),
                    Need::Tenant(t, p) => (Some(t), "tenant", t.to_string(), p),
                };
                let session = caller.impersonation.as_ref().map(|i| i.session_id);
                audit::security(self, &caller.ctx, &caller.actor(), tenant, "access.denied", target_type, target_id,
                    serde_json::json!({"permission": permission, "effective_actor": caller.effective_actor(), "impersonation_session_id": session,
                        "reason": p.detail})).await;
            }
        }
        decision
    }

    async fn decide(&self, caller: &Caller, need: Need) -> ApiResult<()> {
        let head = self.db.head().await?;
        let subject = match &caller.impersonation {
            None => caller.subject(),
            // Decided as the user, within the session's tenant and scope.
            Some(i) => {
                match need {
                    Need::Platform => return Err(Problem::forbidden("platform operations are not available while impersonating")),
                    Need::Tenant(t, _) if t != i.tenant => return Err(Problem::not_found(format!("tenant `{t}`"))),
                    Need::Tenant(_, p) if !i.scope.iter().any(|s| s == p) => {
                        return Err(Problem::forbidden(format!("the impersonation session's scope does not include `{p}`")))
                    }
                    Need::Tenant(..) => {}
                }
                feed::user(i.user_id)
            }
        };
        match need {
            Need::Platform => {
                if self.pdp.check(feed::PLATFORM, "operate", &subject, head).await? {
                    return Ok(());
                }
                Err(Problem::forbidden("this call is for platform operators"))
            }
            Need::Tenant(tenant, permission) => {
                if caller.tenant.is_some_and(|t| t != tenant) {
                    return Err(Problem::not_found(format!("tenant `{tenant}`")));
                }
                let resource = feed::tenant(tenant);
                if self.pdp.check(&resource, permission, &subject, head).await? {
                    return Ok(());
                }
                if permission != "view" && self.pdp.check(&resource, "view", &subject, head).await? {
                    return Err(Problem::forbidden(format!("this call needs `{permission}` on the tenant")));
                }
                Err(Problem::not_found(format!("tenant `{tenant}`")))
            }
        }
    }
}
