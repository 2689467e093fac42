//! `arbiter admin bootstrap`: the first tenant, its owner, and a platform-operator API
//! key, in one transaction (one revision), audited like any call. The key is printed
//! once, as the last line of stdout (`api_key=<key>`); only its hash is kept.

use anyhow::{anyhow, Result};

use crate::api::tenants::{check_slug, insert_tenant, CreateTenant};
use crate::api::users::{add_owner, normalize_email};
use crate::audit::{record_as, Entry};
use crate::cli::BootstrapArgs;
use crate::db::{Db, Scope};
use crate::http::RequestContext;
use crate::secrets::Secrets;

/// What bootstrap made.
#[derive(Debug)]
pub struct Bootstrapped {
    pub tenant_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub api_key: String,
    pub revision: u64,
}

pub async fn run(args: &BootstrapArgs) -> Result<Bootstrapped> {
    let secrets = Secrets::load(args.secrets_file.as_deref())?;
    let db = Db::connect(&args.postgres).await?;
    db.check_migrated().await?;
    check_slug(&args.tenant).map_err(|p| anyhow!("--tenant: {}", p.detail))?;
    let email = normalize_email(&args.email).map_err(|p| anyhow!("--email: {}", p.detail))?;
    let problem = |p: crate::problem::Problem| anyhow!("{}", p.detail);
    let mut tx = db.begin(Scope::Platform).await.map_err(problem)?;
    let exists: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM arbiter_admin.tenants WHERE slug = $1")
        .bind(&args.tenant)
        .fetch_optional(tx.conn())
        .await?;
    if exists.is_some() {
        return Err(anyhow!("a tenant `{}` exists already: bootstrap runs once, on an empty platform", args.tenant));
    }
    let tenant = insert_tenant(
        &mut tx,
        &CreateTenant {
            slug: args.tenant.clone(),
            name: args.tenant.clone(),
            description: String::new(),
            grace_period_days: None,
            settings: None,
            feature_flags: None,
            quotas: None,
            security_policy: None,
            owner_email: None,
            template: None,
        },
    )
    .await
    .map_err(problem)?;
    let user = add_owner(&mut tx, tenant.id, &email).await.map_err(problem)?;
    let key = crate::api::api_keys::insert_key(&mut tx, &secrets, None, "bootstrap", "operator", None, "bootstrap")
        .await
        .map_err(problem)?;
    let ctx = RequestContext { request_id: format!("bootstrap-{}", uuid::Uuid::new_v4()), client_ip: None, user_agent: None };
    record_as(&mut tx, "bootstrap", &ctx, Entry {
        tenant: Some(tenant.id),
        action: "platform.bootstrap",
        target_type: "tenant",
        target_id: tenant.id.to_string(),
        before: None,
        after: Some(serde_json::json!({"tenant": tenant.slug, "owner": user, "operator_key": key.key.id})),
    })
    .await
    .map_err(problem)?;
    let revision = tx.commit().await.map_err(problem)?.unwrap_or(0);
    Ok(Bootstrapped { tenant_id: tenant.id, user_id: user, api_key: key.api_key, revision })
}
