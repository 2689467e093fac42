//! Transactions as the row-level-security role. Every admin transaction runs as
//! `arbiter_admin_app` (a non-superuser: Postgres applies the policies of the
//! migration) with the one tenant it acts in set for the transaction, or the platform
//! scope on an operator's explicit endpoint. Nothing else reaches the tables.

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::feed::Feed;
use crate::model::{self, ModelChange};
use crate::problem::{ApiResult, Problem};

/// Where a transaction acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's rows (and the global rows every tenant reads).
    Tenant(Uuid),
    /// Every tenant's rows: only the platform operators' explicit endpoints.
    Platform,
}

/// The role the migrations create for the admin's transactions.
pub const APP_ROLE: &str = "arbiter_admin_app";

/// How long one statement may run before Postgres cancels it (a 503 to the client).
const STATEMENT_TIMEOUT: &str = "10s";

#[derive(Debug, Clone)]
pub struct Db {
    pub pool: PgPool,
}

impl Db {
    pub async fn connect(url: &str) -> Result<Db> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))?;
        Ok(Db { pool })
    }

    /// Fails with advice when the admin's tables are missing.
    pub async fn check_migrated(&self) -> Result<()> {
        // The newest migration's table: an older database lacks it.
        let present: Option<String> = sqlx::query_scalar("SELECT to_regclass('arbiter_admin.alert_queue')::text")
            .fetch_one(&self.pool)
            .await
            .context("cannot query Postgres")?;
        if present.is_none() {
            anyhow::bail!("the database has no admin tables: run `arbiter migrate --postgres URL` or start with `--migrate`");
        }
        Ok(())
    }

    /// Begins a transaction as the RLS role in `scope`.
    pub async fn begin(&self, scope: Scope) -> ApiResult<Tx> {
        let mut tx = self.pool.begin().await?;
        let (tenant, platform) = match scope {
            Scope::Tenant(t) => (t.to_string(), ""),
            Scope::Platform => (String::new(), "platform"),
        };
        sqlx::query(&format!("SET LOCAL ROLE {APP_ROLE}")).execute(&mut *tx).await?;
        sqlx::query(
            "SELECT set_config('arbiter.tenant_id', $1, true), set_config('arbiter.scope', $2, true),
                    set_config('statement_timeout', $3, true)",
        )
        .bind(&tenant)
        .bind(platform)
        .bind(STATEMENT_TIMEOUT)
        .execute(&mut *tx)
        .await?;
        Ok(Tx { tx, scope, feed: Feed::default(), model: ModelChange::default(), revision: None, schema_seen: None, locked: false })
    }

    /// The newest committed revision of the PDP's graph.
    pub async fn head(&self) -> ApiResult<u64> {
        let v: i64 = sqlx::query_scalar("SELECT revision FROM arbiter_revision").fetch_one(&self.pool).await?;
        Ok(u64::try_from(v).unwrap_or(0))
    }
}

/// One admin transaction: its relationship changes (and Cedar-side changes) are written
/// once, at one revision, before its audit record ([`Tx::flush`]).
#[derive(Debug)]
pub struct Tx {
    pub tx: Transaction<'static, Postgres>,
    pub scope: Scope,
    pub feed: Feed,
    /// The policy model and object attributes the transaction changes.
    pub model: ModelChange,
    /// The revision the feed was written at.
    pub revision: Option<u64>,
    /// The revision of the schema the transaction checked its changes against
    /// ([`model::live_schema`]): still the live one when they are written, or the write
    /// is refused.
    pub schema_seen: Option<i64>,
    /// Whether the transaction holds the revision counter's lock.
    locked: bool,
}

impl Tx {
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Takes the revision counter's lock (held until the transaction ends), once: no
    /// other write, schema or policy model lands before this transaction commits.
    pub async fn lock_revision(&mut self) -> ApiResult<()> {
        if !self.locked {
            sqlx::query("SELECT revision FROM arbiter_revision FOR UPDATE").execute(&mut *self.tx).await?;
            self.locked = true;
        }
        Ok(())
    }

    /// Takes turns, until commit, with every other transaction that changes `tenant`'s
    /// nesting of `what` (groups in groups, departments under departments): a cycle
    /// check made after it sees every nesting committed before.
    pub async fn lock_nesting(&mut self, what: &str, tenant: Uuid) -> ApiResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("arbiter-admin/{what}/{tenant}"))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// After a write function has taken the revision counter's lock: the schema the
    /// transaction checked against is still the live one (a schema written since is
    /// visible to this statement, one written later waits for the commit).
    pub async fn verify_schema(&mut self) -> ApiResult<()> {
        self.locked = true;
        let Some(seen) = self.schema_seen else { return Ok(()) };
        let live: Option<i64> = sqlx::query_scalar("SELECT revision FROM arbiter_schema").fetch_optional(&mut *self.tx).await?;
        if live != Some(seen) {
            return Err(model::schema_changed());
        }
        Ok(())
    }

    /// The policy model this transaction writes (the stored one at first); a model that
    /// does not compile at flush is a 422 naming `field`.
    pub async fn model_mut(&mut self, field: &str) -> ApiResult<&mut arbiter_engine::PolicyModel> {
        if self.model.model.is_none() {
            let stored = model::stored_model(self).await?;
            self.model.model = Some(stored);
            self.model.model_field = field.to_string();
        }
        self.model.model.as_mut().ok_or_else(|| Problem::internal("hold the policy model", &"missing"))
    }

    /// Marks an object whose attribute values or labels changed: its stored attributes
    /// are recomputed from the tables and checked at flush (a problem names `field`).
    pub fn touch_object(&mut self, object_type: &str, object_id: &str, field: &str) {
        self.model.objects.entry((object_type.to_string(), object_id.to_string())).or_insert_with(|| field.to_string());
    }

    /// Writes the feed's changes through `arbiter_write` (the revision counter's lock is
    /// then held until commit), or with Cedar-side changes through `arbiter_write_model`
    /// after checking them with the PDP's compiler. Refused (409) when the schema the
    /// changes were checked against was replaced meanwhile. Once per transaction; later
    /// changes are refused.
    pub async fn flush(&mut self, writer: &str) -> ApiResult<Option<u64>> {
        if self.revision.is_some() {
            if !self.feed.is_empty() || !self.model.is_empty() {
                return Err(Problem::internal("a transaction fed the graph twice", &"flush after flush"));
            }
            return Ok(self.revision);
        }
        if self.feed.is_empty() && self.model.is_empty() {
            return Ok(None);
        }
        let metadata = serde_json::json!({ "writer": "arbiter-admin", "actor": writer });
        let v: i64 = if self.model.is_empty() {
            let changes = self.feed.take();
            sqlx::query_scalar("SELECT arbiter_write($1, $2)").bind(changes).bind(metadata).fetch_one(&mut *self.tx).await?
        } else {
            let change = std::mem::take(&mut self.model);
            let (attributes, model_text) = model::prepare(self, &change).await?;
            let changes = self.feed.take();
            sqlx::query_scalar("SELECT arbiter_write_model($1, $2, $3, $4)")
                .bind(changes)
                .bind(attributes)
                .bind(model_text)
                .bind(metadata)
                .fetch_one(&mut *self.tx)
                .await?
        };
        self.verify_schema().await?;
        self.revision = Some(u64::try_from(v).unwrap_or(0));
        Ok(self.revision)
    }

    pub async fn commit(self) -> ApiResult<Option<u64>> {
        let revision = self.revision;
        self.tx.commit().await?;
        Ok(revision)
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user@host/db`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
