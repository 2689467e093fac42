//! Postgres as the source of truth (DESIGN §6): the SQL side of a replica. Every write
//! goes through `arbiter_write` / `arbiter_write_schema` (migrations/), which take the
//! next revision from the single-row counter and hold its row lock until commit, so
//! revisions commit in order. A replica reads the counter (`head`), then the changelog
//! rows up to it: everything at or below a committed head has committed.

pub mod replica;
pub mod store;

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use arbiter_engine::{AttributeChange, Change, ChangeOp, StoredHeader};
use arbiter_schema::{CaveatRef, ObjectRef, Relationship, SubjectRef};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio_stream::StreamExt;

/// The LISTEN/NOTIFY channel `arbiter_write` notifies with the new revision.
pub const CHANNEL: &str = "arbiter_changes";

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// One revision as Postgres' changelog holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgCommit {
    pub revision: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub committed_at_micros: i64,
    pub changes: Vec<Change>,
    pub schema: Option<String>,
    /// The new policy model (JSON), if this revision wrote one.
    pub policy_model: Option<String>,
    /// Attribute changes, in order.
    pub attributes: Vec<AttributeChange>,
    /// Rows that are not relationships at all (a direct writer's mistake the function
    /// could not catch), with the reason.
    pub malformed: Vec<String>,
}

/// One part of a consistent snapshot read ([`PgSource::snapshot`]).
#[derive(Debug)]
pub enum SnapshotPart {
    Header(StoredHeader),
    Relationships(Vec<Relationship>),
    /// `(type, id, attributes as JSON)`.
    Attributes(Vec<(String, String, String)>),
}

/// A connection pool to the source of truth.
#[derive(Debug, Clone)]
pub struct PgSource {
    pub pool: PgPool,
}

fn revision(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_revision(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgSource {
    pub async fn connect(url: &str) -> Result<PgSource> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))?;
        Ok(PgSource { pool })
    }

    /// Applies every migration not applied yet (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.context("cannot apply the migrations")
    }

    /// Fails with advice when the database has not been migrated.
    pub async fn check_migrated(&self) -> Result<()> {
        let present: Option<String> = sqlx::query_scalar("SELECT to_regclass('arbiter_revision')::text")
            .fetch_one(&self.pool)
            .await
            .context("cannot query Postgres")?;
        if present.is_none() {
            return Err(anyhow!(
                "the database has no Arbiter tables: run `arbiter migrate --postgres URL` or start with `--migrate`"
            ));
        }
        Ok(())
    }

    /// The identity of this database, so a snapshot is never replayed against another.
    pub async fn identity(&self) -> Result<String> {
        let (db, oid): (String, i64) =
            sqlx::query_as("SELECT current_database()::text, (SELECT oid::bigint FROM pg_database WHERE datname = current_database())")
                .fetch_one(&self.pool)
                .await
                .context("cannot read the database identity")?;
        let system: i64 = sqlx::query_scalar("SELECT system_identifier::bigint FROM pg_control_system()")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0);
        Ok(format!("postgres:{system}:{oid}:{db}"))
    }

    /// The newest committed revision.
    pub async fn head(&self) -> Result<u64> {
        let v: i64 = sqlx::query_scalar("SELECT revision FROM arbiter_revision")
            .fetch_one(&self.pool)
            .await
            .context("cannot read the revision from Postgres")?;
        Ok(revision(v))
    }

    /// The newest revision whose changelog rows were pruned.
    pub async fn horizon(&self) -> Result<u64> {
        let v: i64 = sqlx::query_scalar("SELECT pruned_through FROM arbiter_changelog_horizon")
            .fetch_one(&self.pool)
            .await
            .context("cannot read the changelog horizon")?;
        Ok(revision(v))
    }

    /// The changelog revisions in `(after, through]` that have rows, oldest first.
    pub async fn commits_between(&self, after: u64, through: u64) -> Result<Vec<PgCommit>> {
        let rows = sqlx::query(
            "SELECT revision, committed_at, operation, resource_type, resource_id, relation, subject_type, subject_id,
                    subject_relation, caveat_name, caveat_context, expires_at, schema_text, payload
             FROM arbiter_changelog WHERE revision > $1 AND revision <= $2 ORDER BY revision, seq",
        )
        .bind(sql_revision(after))
        .bind(sql_revision(through))
        .fetch_all(&self.pool)
        .await
        .context("cannot read the changelog")?;
        let mut commits: Vec<PgCommit> = Vec::new();
        for row in rows {
            let rev = revision(row.try_get("revision")?);
            if commits.last().map(|c| c.revision) != Some(rev) {
                let at: DateTime<Utc> = row.try_get("committed_at")?;
                commits.push(PgCommit { revision: rev, committed_at_micros: at.timestamp_micros(), ..PgCommit::default() });
            }
            let Some(commit) = commits.last_mut() else { continue };
            let op: String = row.try_get("operation")?;
            match op.as_str() {
                "schema" => commit.schema = row.try_get("schema_text")?,
                "policies" => commit.policy_model = row.try_get("payload")?,
                "attributes" => {
                    let object_type: Option<String> = row.try_get("resource_type")?;
                    let object_id: Option<String> = row.try_get("resource_id")?;
                    match (object_type, object_id) {
                        (Some(object_type), Some(object_id)) => commit.attributes.push(AttributeChange {
                            object_type,
                            object_id,
                            attributes: row.try_get("payload")?,
                        }),
                        _ => commit.malformed.push("an attributes row without its object".into()),
                    }
                }
                "touch" | "delete" => match relationship_of(&row) {
                    Ok(relationship) => commit.changes.push(Change {
                        op: if op == "touch" { ChangeOp::Touch } else { ChangeOp::Delete },
                        relationship,
                    }),
                    Err(e) => commit.malformed.push(e.to_string()),
                },
                other => commit.malformed.push(format!("unknown operation `{other}`")),
            }
        }
        Ok(commits)
    }

    /// Reads everything at one consistent revision: calls `part` with the header
    /// (revision, schema, policy model) first, then relationships and object attributes
    /// in batches of up to `batch_size`.
    pub async fn snapshot(&self, batch_size: usize, mut part: impl FnMut(SnapshotPart) -> Result<()>) -> Result<u64> {
        let mut tx = self.pool.begin().await.context("cannot begin the snapshot read")?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .context("cannot start a consistent read")?;
        let head: i64 = sqlx::query_scalar("SELECT revision FROM arbiter_revision").fetch_one(&mut *tx).await?;
        let head = revision(head);
        let schema: Option<String> =
            sqlx::query_scalar("SELECT schema_text FROM arbiter_schema").fetch_optional(&mut *tx).await?;
        let policy_model: Option<String> =
            sqlx::query_scalar("SELECT model FROM arbiter_policy_model").fetch_optional(&mut *tx).await?;
        part(SnapshotPart::Header(StoredHeader { revision: head, schema, policy_model }))?;
        let mut rows = sqlx::query(
            "SELECT resource_type, resource_id, relation, subject_type, subject_id, subject_relation, caveat_name,
                    caveat_context, expires_at
             FROM relationships",
        )
        .fetch(&mut *tx);
        let mut pending = Vec::with_capacity(batch_size);
        while let Some(row) = rows.next().await {
            let row = row.context("cannot read relationships")?;
            match relationship_of(&row) {
                Ok(r) => pending.push(r),
                Err(e) => tracing::warn!("skipping a relationship row that is not one: {e}"),
            }
            if pending.len() >= batch_size {
                part(SnapshotPart::Relationships(std::mem::replace(&mut pending, Vec::with_capacity(batch_size))))?;
            }
        }
        drop(rows);
        if !pending.is_empty() {
            part(SnapshotPart::Relationships(pending))?;
        }
        let mut rows = sqlx::query("SELECT object_type, object_id, attributes FROM arbiter_attributes").fetch(&mut *tx);
        let mut pending = Vec::new();
        while let Some(row) = rows.next().await {
            let row = row.context("cannot read attributes")?;
            pending.push((row.try_get("object_type")?, row.try_get("object_id")?, row.try_get("attributes")?));
            if pending.len() >= batch_size {
                part(SnapshotPart::Attributes(std::mem::take(&mut pending)))?;
            }
        }
        drop(rows);
        if !pending.is_empty() {
            part(SnapshotPart::Attributes(pending))?;
        }
        tx.commit().await.ok();
        Ok(head)
    }

    /// Begins a write: locks the revision counter (held until commit or rollback), so no
    /// other write can commit meanwhile, and returns the newest revision.
    pub async fn begin_write(&self) -> Result<(Transaction<'static, Postgres>, u64)> {
        let mut tx = self.pool.begin().await.context("cannot begin a write")?;
        let head: i64 = sqlx::query_scalar("SELECT revision FROM arbiter_revision FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .context("cannot lock the revision counter")?;
        Ok((tx, revision(head)))
    }

    /// Deletes the relationships that have expired, logged as deletions at one new
    /// revision (none when nothing expired). Returns how many.
    pub async fn sweep_expired(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT arbiter_sweep_expired()")
            .fetch_one(&self.pool)
            .await
            .context("cannot sweep expired relationships")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Prunes changelog rows committed before `before` (keeping the newest revision),
    /// moving the horizon. Returns the new horizon.
    pub async fn prune_changelog(&self, before: DateTime<Utc>) -> Result<u64> {
        let v: i64 = sqlx::query_scalar("SELECT arbiter_prune_changelog($1)")
            .bind(before)
            .fetch_one(&self.pool)
            .await
            .context("cannot prune the changelog")?;
        Ok(revision(v))
    }
}

/// Writes changes at the next revision inside `tx` (which holds the counter lock).
pub async fn write_changes(
    tx: &mut Transaction<'static, Postgres>,
    changes: &[Change],
    writer: &str,
) -> Result<u64> {
    let json: Vec<serde_json::Value> = changes.iter().map(change_json).collect();
    let v: i64 = sqlx::query_scalar("SELECT arbiter_write($1, $2)")
        .bind(serde_json::Value::Array(json))
        .bind(serde_json::json!({ "writer": writer }))
        .fetch_one(&mut **tx)
        .await
        .context("cannot write to Postgres")?;
    Ok(revision(v))
}

/// Writes a schema at the next revision inside `tx`.
pub async fn write_schema(tx: &mut Transaction<'static, Postgres>, text: &str, writer: &str) -> Result<u64> {
    let v: i64 = sqlx::query_scalar("SELECT arbiter_write_schema($1, $2)")
        .bind(text)
        .bind(serde_json::json!({ "writer": writer }))
        .fetch_one(&mut **tx)
        .await
        .context("cannot write the schema to Postgres")?;
    Ok(revision(v))
}

/// Takes the next revision inside `tx` (which holds the counter lock from
/// [`PgSource::begin_write`]).
pub async fn next_revision(tx: &mut Transaction<'static, Postgres>) -> Result<u64> {
    let v: i64 = sqlx::query_scalar("UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision")
        .fetch_one(&mut **tx)
        .await
        .context("cannot advance the revision")?;
    Ok(revision(v))
}

/// Writes a policy model (Arbiter's JSON) at `at` inside `tx`: the model, its policies
/// one row each, and a changelog row. The caller holds the counter lock, has set the
/// counter to `at`, and notifies.
pub async fn write_policy_model(tx: &mut Transaction<'static, Postgres>, at: u64, model: &str, writer: &str) -> Result<()> {
    let parsed: arbiter_engine::PolicyModel =
        serde_json::from_str(model).context("the policy model to write is not readable")?;
    let at = sql_revision(at);
    sqlx::query(
        "INSERT INTO arbiter_policy_model (singleton, model, revision) VALUES (true, $1, $2)
         ON CONFLICT (singleton) DO UPDATE SET model = EXCLUDED.model, revision = EXCLUDED.revision",
    )
    .bind(model)
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("cannot write the policy model")?;
    sqlx::query("DELETE FROM arbiter_policies").execute(&mut **tx).await.context("cannot replace the policies")?;
    let ids: Vec<String> = parsed.policies.iter().map(|p| p.id.clone()).collect();
    let texts: Vec<String> = parsed.policies.iter().map(|p| p.text.clone()).collect();
    sqlx::query(
        "INSERT INTO arbiter_policies (policy_id, policy_text, revision) SELECT id, text, $3 FROM unnest($1::text[], $2::text[]) AS p(id, text)",
    )
    .bind(&ids)
    .bind(&texts)
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("cannot write the policies")?;
    sqlx::query("INSERT INTO arbiter_changelog (revision, seq, operation, payload, metadata) VALUES ($1, -1, 'policies', $2, $3)")
        .bind(at)
        .bind(model)
        .bind(serde_json::json!({ "writer": writer }))
        .execute(&mut **tx)
        .await
        .context("cannot log the policy model")?;
    Ok(())
}

/// Writes attribute changes at `at` inside `tx` (as [`write_policy_model`]).
pub async fn write_attributes(
    tx: &mut Transaction<'static, Postgres>,
    at: u64,
    changes: &[AttributeChange],
    writer: &str,
) -> Result<()> {
    let at = sql_revision(at);
    let metadata = serde_json::json!({ "writer": writer });
    for (i, a) in changes.iter().enumerate() {
        match &a.attributes {
            Some(json) => sqlx::query(
                "INSERT INTO arbiter_attributes (object_type, object_id, attributes, revision) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (object_type, object_id) DO UPDATE SET attributes = EXCLUDED.attributes, revision = EXCLUDED.revision",
            )
            .bind(&a.object_type)
            .bind(&a.object_id)
            .bind(json)
            .bind(at),
            None => sqlx::query("DELETE FROM arbiter_attributes WHERE object_type = $1 AND object_id = $2")
                .bind(&a.object_type)
                .bind(&a.object_id),
        }
        .execute(&mut **tx)
        .await
        .context("cannot write attributes")?;
        sqlx::query(
            "INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, payload, metadata)
             VALUES ($1, $2, 'attributes', $3, $4, $5, $6)",
        )
        .bind(at)
        .bind(i32::try_from(i + 1).unwrap_or(i32::MAX))
        .bind(&a.object_type)
        .bind(&a.object_id)
        .bind(a.attributes.as_deref())
        .bind(&metadata)
        .execute(&mut **tx)
        .await
        .context("cannot log attributes")?;
    }
    Ok(())
}

/// Tells replicas (LISTEN arbiter_changes) that `at` committed (delivered at commit).
pub async fn notify(tx: &mut Transaction<'static, Postgres>, at: u64) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(at.to_string())
        .execute(&mut **tx)
        .await
        .context("cannot notify the replicas")?;
    Ok(())
}

/// The JSON form `arbiter_write` takes.
pub fn change_json(c: &Change) -> serde_json::Value {
    let r = &c.relationship;
    let mut subject = format!("{}:{}", r.subject.object.object_type, r.subject.object.object_id);
    if let Some(rel) = &r.subject.relation {
        subject.push('#');
        subject.push_str(rel);
    }
    let mut v = serde_json::json!({
        "op": match c.op { ChangeOp::Touch => "touch", ChangeOp::Delete => "delete" },
        "resource": format!("{}:{}", r.resource.object_type, r.resource.object_id),
        "relation": r.relation,
        "subject": subject,
    });
    let Some(map) = v.as_object_mut() else { return v };
    if let Some(e) = r.expiration {
        map.insert("expires_at".into(), serde_json::Value::String(e.to_rfc3339()));
    }
    if let Some(caveat) = &r.caveat {
        map.insert("caveat".into(), serde_json::Value::String(caveat.name.clone()));
        if let Some(context) = &caveat.context {
            map.insert("caveat_context".into(), serde_json::Value::Object(context.clone()));
        }
    }
    v
}

fn relationship_of(row: &PgRow) -> Result<Relationship> {
    let text = |name: &str| -> Result<String> {
        row.try_get::<Option<String>, _>(name)?.ok_or_else(|| anyhow!("`{name}` is missing"))
    };
    let subject_relation = text("subject_relation")?;
    Ok(Relationship {
        resource: ObjectRef { object_type: text("resource_type")?, object_id: text("resource_id")? },
        relation: text("relation")?,
        subject: SubjectRef {
            object: ObjectRef { object_type: text("subject_type")?, object_id: text("subject_id")? },
            relation: (!subject_relation.is_empty() && subject_relation != "...").then_some(subject_relation),
        },
        caveat: caveat_of(row)?,
        expiration: row.try_get::<Option<DateTime<Utc>>, _>("expires_at")?,
    })
}

/// A row's caveat: its name and, when it has one, its context (a JSON object).
fn caveat_of(row: &PgRow) -> Result<Option<CaveatRef>> {
    let Some(name) = row.try_get::<Option<String>, _>("caveat_name")? else { return Ok(None) };
    if name.is_empty() {
        return Err(anyhow!("`caveat_name` is empty"));
    }
    let context = match row.try_get::<Option<serde_json::Value>, _>("caveat_context")? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(map)) => Some(map),
        Some(other) => return Err(anyhow!("the context of caveat `{name}` is not a JSON object: {other}")),
    };
    Ok(Some(CaveatRef { name, context }))
}

/// A connection URL with any password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Installs or upgrades the platform part of the schema and of the policy set
/// ([`crate::platform`]) at one new revision, keeping the application's part; nothing
/// is written when both are current. Refused, with nothing written, when the result
/// does not compile or would orphan stored relationships. Returns the revision written.
pub async fn install_platform(pg: &PgSource) -> Result<Option<u64>> {
    let (mut tx, _head) = pg.begin_write().await?;
    let schema: Option<String> = sqlx::query_scalar("SELECT schema_text FROM arbiter_schema")
        .fetch_optional(&mut *tx)
        .await
        .context("cannot read the schema")?;
    let model: Option<String> = sqlx::query_scalar("SELECT model FROM arbiter_policy_model")
        .fetch_optional(&mut *tx)
        .await
        .context("cannot read the policy model")?;
    let mut model: arbiter_engine::PolicyModel = match model {
        Some(json) => serde_json::from_str(&json).context("the stored policy model is not readable")?,
        None => arbiter_engine::PolicyModel::default(),
    };
    let new_schema = crate::platform::install_schema(schema.as_deref()).map_err(|e| anyhow!(e))?;
    let platform = crate::platform::platform_policies().map_err(|e| anyhow!("the platform policies: {e}"))?;
    let new_policies = crate::platform::install_policies(&model.policies, platform);
    let schema_changed = schema.as_deref() != Some(new_schema.as_str());
    let policies_changed = new_policies != model.policies;
    if !schema_changed && !policies_changed {
        return Ok(None);
    }
    let compiled = arbiter_schema::compile(&new_schema)
        .map_err(|e| anyhow!("the platform schema does not compile with the application's: {e}"))?;
    check_platform_relationships(&mut tx, &compiled).await?;
    model.policies = new_policies;
    let json = serde_json::to_string(&model).context("cannot encode the policy model")?;
    arbiter_engine::policy::CompiledPolicies::compile(&compiled, model)
        .map_err(|e| anyhow!("the platform policies do not validate: {e}"))?;
    let revision = if schema_changed {
        write_schema(&mut tx, &new_schema, "arbiter-migrate").await?
    } else {
        next_revision(&mut tx).await?
    };
    if policies_changed {
        write_policy_model(&mut tx, revision, &json, "arbiter-migrate").await?;
        notify(&mut tx, revision).await?;
    }
    tx.commit().await.context("cannot commit the platform part")?;
    Ok(Some(revision))
}

/// Every shape of stored relationship that names a platform type must fit `schema`
/// (an upgrade of the platform part must not orphan what the admin wrote).
async fn check_platform_relationships(tx: &mut Transaction<'static, Postgres>, schema: &arbiter_schema::CompiledSchema) -> Result<()> {
    let shapes: Vec<(String, String, String, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT resource_type, relation, subject_type, subject_relation, expires_at IS NOT NULL, caveat_name
         FROM relationships WHERE resource_type LIKE 'platform/%' OR subject_type LIKE 'platform/%'",
    )
    .fetch_all(&mut **tx)
    .await
    .context("cannot read the platform relationships")?;
    let mut orphaned = Vec::new();
    for (rt, rel, st, srel, expiring, caveat) in shapes {
        if !shape_fits(schema, &rt, &rel, &st, &srel, expiring, caveat.as_deref()) {
            let srel = if srel.is_empty() { String::new() } else { format!("#{srel}") };
            let caveat = caveat.map(|c| format!("[{c}]")).unwrap_or_default();
            orphaned.push(format!("{rt}#{rel}@{st}{srel}{caveat}"));
        }
    }
    if !orphaned.is_empty() {
        return Err(anyhow!(
            "the new platform schema would orphan stored relationships of these shapes: {}",
            orphaned.join(", ")
        ));
    }
    Ok(())
}

fn shape_fits(
    schema: &arbiter_schema::CompiledSchema,
    rt: &str,
    rel: &str,
    st: &str,
    srel: &str,
    expiring: bool,
    caveat: Option<&str>,
) -> bool {
    use arbiter_schema::{AllowedKind, RelationKind};
    let (Some((_, def)), Some((sub_ty, sub_def))) = (schema.definition_by_name(rt), schema.definition_by_name(st)) else {
        return false;
    };
    let Some(relation) = def.relation_id(rel).and_then(|id| def.relation(id)) else {
        return false;
    };
    let RelationKind::Direct(allowed) = &relation.kind else {
        return false;
    };
    allowed.iter().any(|a| {
        a.type_id == sub_ty
            && a.expiration == expiring
            && a.caveat.and_then(|c| schema.caveat(c)).map(|c| c.name.as_str()) == caveat
            && match a.kind {
                AllowedKind::Object | AllowedKind::Wildcard => srel.is_empty(),
                AllowedKind::SubjectSet(r) => sub_def.relation(r).is_some_and(|r| r.name == srel),
            }
    })
}
