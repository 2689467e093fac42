//! The Cedar side of one admin transaction: the PDP's policy model (policies, attribute
//! declarations, security labels) as the transaction changes it, and the objects whose
//! attribute values or labels it changes. [`crate::db::Tx::flush`] checks both with the
//! PDP's own compiler under the revision counter's lock and writes them with the
//! relationship changes through `arbiter_write_model`, at one revision.
//!
//! Ownership inside the model: policies whose ids start with [`POLICY_PREFIX`] are the
//! admin's policy catalogue (the active versions, `api::policies`); the admin's label
//! table is the model's labels whole; an attribute definition is the declaration of its
//! name on its type. Everything else in the model is kept as stored.

use std::collections::{BTreeMap, BTreeSet};

use arbiter_engine::policy::CompiledPolicies;
use arbiter_engine::{LabelDef, ObjectAttributes, PolicyModel};
use arbiter_schema::CompiledSchema;

use crate::db::Tx;
use crate::problem::{ApiResult, Problem};

/// Policies whose ids start with this are the admin's policy catalogue; the PDP's
/// `WritePolicies` keeps them as it keeps the platform's.
pub const POLICY_PREFIX: &str = "admin.";

/// What a transaction changes on the Cedar side.
#[derive(Debug, Default)]
pub struct ModelChange {
    /// The new model (set by the first [`Tx::model_mut`]).
    pub model: Option<PolicyModel>,
    /// The field a model that does not compile is blamed on.
    pub model_field: String,
    /// Objects whose attributes are recomputed at flush, with the field to blame.
    pub objects: BTreeMap<(String, String), String>,
}

impl ModelChange {
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.objects.is_empty()
    }
}

/// The stored policy model (an empty one before any is written), read under the
/// revision counter's lock (held until the transaction ends): two transactions that
/// change the model take turns, and neither loses the other's change.
pub async fn stored_model(tx: &mut Tx) -> ApiResult<PolicyModel> {
    tx.lock_revision().await?;
    let json: Option<String> = sqlx::query_scalar("SELECT model FROM arbiter_policy_model").fetch_optional(tx.conn()).await?;
    match json {
        Some(json) => serde_json::from_str(&json).map_err(|e| Problem::internal("read the stored policy model", &e)),
        None => Ok(PolicyModel::default()),
    }
}

/// The live schema. Read without a lock, so that concurrent writes take the revision
/// counter's lock only from their write to their commit: the transaction keeps the
/// schema's revision, and its write is refused if another schema landed in between
/// ([`Tx::flush`]).
pub async fn live_schema(tx: &mut Tx, field: &str) -> ApiResult<CompiledSchema> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT schema_text, revision FROM arbiter_schema").fetch_optional(tx.conn()).await?;
    let Some((text, revision)) = row else {
        return Err(Problem::invalid(field, "the PDP has no schema yet: write the application schema first"));
    };
    if *tx.schema_seen.get_or_insert(revision) != revision {
        return Err(schema_changed());
    }
    arbiter_schema::compile(&text).map_err(|e| Problem::internal("compile the stored schema", &e))
}

/// A write checked against a schema that another write replaced before it landed.
pub fn schema_changed() -> Problem {
    Problem::conflict("/", "the application schema changed while this request was checked against it; send it again")
}

/// The labels of the admin's table, with their parents, as the model holds them.
pub async fn label_defs(tx: &mut Tx) -> ApiResult<BTreeMap<String, LabelDef>> {
    let rows: Vec<(String, i32, Vec<String>)> = sqlx::query_as(
        "SELECT l.name, l.level, coalesce(array_agg(p.name ORDER BY p.name) FILTER (WHERE p.name IS NOT NULL), '{}')
         FROM arbiter_admin.security_labels l
         LEFT JOIN arbiter_admin.label_hierarchy h ON h.child_label_id = l.id
         LEFT JOIN arbiter_admin.security_labels p ON p.id = h.parent_label_id
         GROUP BY l.name, l.level",
    )
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(|(name, level, parents)| (name, LabelDef { level: i64::from(level), parents })).collect())
}

/// Checks the transaction's Cedar side and returns what `arbiter_write_model` takes: the
/// attribute changes (JSON) and the new model's text (when it changed).
pub async fn prepare(tx: &mut Tx, change: &ModelChange) -> ApiResult<(serde_json::Value, Option<String>)> {
    let schema = live_schema(tx, &change.model_field).await?;
    let stored = stored_model(tx).await?;
    let model = change.model.clone().unwrap_or_else(|| stored.clone());
    let field = if change.model.is_some() { change.model_field.clone() } else { "body".to_string() };
    let compiled = CompiledPolicies::compile(&schema, model.clone())
        .map_err(|e| Problem::invalid(field.clone(), format!("the policy model would not compile: {e}")))?;
    let mut attributes = Vec::with_capacity(change.objects.len());
    for ((object_type, object_id), field) in &change.objects {
        let doc: Option<serde_json::Value> = sqlx::query_scalar("SELECT arbiter_admin.object_attributes($1, $2)")
            .bind(object_type)
            .bind(object_id)
            .fetch_one(tx.conn())
            .await?;
        let text = match doc {
            None => None,
            Some(doc) => {
                let attrs: ObjectAttributes =
                    serde_json::from_value(doc).map_err(|e| Problem::internal("read an object's attributes", &e))?;
                compiled.check_object(object_type, object_id, &attrs).map_err(|e| Problem::invalid(field.clone(), e))?;
                Some(attrs.encode())
            }
        };
        attributes.push(serde_json::json!({ "object_type": object_type, "object_id": object_id, "attributes": text }));
    }
    let model_text = match &change.model {
        Some(m) if *m != stored => {
            if m.declarations != stored.declarations || m.labels != stored.labels {
                check_stored_objects(tx, &compiled, &change.objects, &field).await?;
            }
            Some(serde_json::to_string(m).map_err(|e| Problem::internal("encode the policy model", &e))?)
        }
        _ => None,
    };
    Ok((serde_json::Value::Array(attributes), model_text))
}

/// Every stored object the transaction does not rewrite must still fit a changed model
/// (a replica refuses a model that strands stored attributes): a 409 naming the first
/// that does not.
async fn check_stored_objects(
    tx: &mut Tx,
    compiled: &CompiledPolicies,
    rewritten: &BTreeMap<(String, String), String>,
    field: &str,
) -> ApiResult<()> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT object_type, object_id, attributes FROM arbiter_attributes").fetch_all(tx.conn()).await?;
    let skip: BTreeSet<(&str, &str)> = rewritten.keys().map(|(t, i)| (t.as_str(), i.as_str())).collect();
    for (object_type, object_id, json) in &rows {
        if skip.contains(&(object_type.as_str(), object_id.as_str())) {
            continue;
        }
        let attrs = ObjectAttributes::decode(json).map_err(|e| Problem::internal("read stored attributes", &e))?;
        if let Err(e) = compiled.check_object(object_type, object_id, &attrs) {
            return Err(Problem::conflict(field, format!("a stored object would no longer fit: {e}")));
        }
    }
    Ok(())
}
