//! The Cedar policy catalogue (seed `policies` and `policy_metadata`): named policies with
//! an environment, an owner and tags, and their versions, each a Cedar text that goes
//! draft -> active -> retired. Every version is kept.
//!
//! The active version of each policy of the admin's environment (`--environment`) is in
//! the PDP's policy model as `admin.<name>` (`admin.<name>.<n>` when the text holds
//! several policies). Activating a version compiles the whole new model with the PDP's
//! own compiler, against the live schema, before the commit: a version that does not
//! compile is a 422 with Cedar's diagnostic, and nothing changes. Activation retires the
//! version it replaces; retiring the active version removes the policy from the model.
//! Both reach the PDP at one revision, with the audit record.

use arbiter_engine::PolicyText;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::roles::check_tags;
use super::{check_description, check_if_match, commit, no_content, nullable, reply, Idempotency, JsonBody, Tag, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::model::POLICY_PREFIX;
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/policies", post(create_policy).get(list_policies))
        .route("/v1/policies/{policy_id}", get(get_policy).patch(update_policy).delete(delete_policy))
        .route("/v1/policies/{policy_id}/versions", post(create_version).get(list_versions))
        .route("/v1/policies/{policy_id}/versions/{number}", get(get_version))
        .route("/v1/policies/{policy_id}/versions/{number}/activate", post(activate_version))
        .route("/v1/policies/{policy_id}/versions/{number}/retire", post(retire_version))
}

/// A policy name or an environment: lower-case letters, digits, `-` and `_`, at most 63.
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// A policy of the catalogue.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Policy {
    pub id: Uuid,
    /// Unique in its environment; the PDP's policy id is `admin.<name>`.
    pub name: String,
    pub environment: String,
    pub description: String,
    pub owner_user_id: Option<Uuid>,
    pub tags: Vec<String>,
    /// The number of the active version, if one is.
    pub active_version: Option<i32>,
    pub created_by: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const POLICY_COLUMNS: &str = "p.id, p.name, p.environment, p.description, p.owner_user_id, p.tags,
    (SELECT v.number FROM arbiter_admin.policy_versions v WHERE v.policy_id = p.id AND v.status = 'active') AS active_version,
    p.created_by, p.version, p.created_at, p.updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "no-secrets-for-contractors", "environment": "production", "tags": ["labels"]}))]
pub struct CreatePolicy {
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub name: String,
    /// `production` when absent.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub environment: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    pub owner_user_id: Option<Uuid>,
    #[serde(default)]
    #[schema(max_items = 32, value_type = Vec<Tag>)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "Contractors never see secret documents", "tags": ["labels", "contractors"]}))]
pub struct UpdatePolicy {
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub owner_user_id: Option<Option<Uuid>>,
    #[schema(max_items = 32, value_type = Option<Vec<Tag>>)]
    pub tags: Option<Vec<String>>,
}

/// One version of a policy.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PolicyVersion {
    pub id: Uuid,
    pub policy_id: Uuid,
    /// 1, 2, ... in the order written.
    pub number: i32,
    /// Cedar text: one policy or several.
    pub definition: String,
    /// `draft`, `active` or `retired`.
    pub status: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub activated_by: Option<String>,
    pub retired_at: Option<DateTime<Utc>>,
    /// The revision its activation or retirement reached the PDP at.
    pub revision: Option<i64>,
}

const VERSION_COLUMNS: &str =
    "id, policy_id, number, definition, status, created_by, created_at, activated_at, activated_by, retired_at, revision";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"definition": "forbid (principal, action, resource) when { resource.label_level > principal.label_level };"}))]
pub struct CreateVersion {
    /// Cedar text (at most 64 KiB). It must parse; it is validated against the schema
    /// when activated.
    #[schema(min_length = 1, max_length = 65536)]
    pub definition: String,
}

fn check_name(field: &str, value: &str) -> ApiResult<()> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(Problem::invalid(field, format!("`{}` must be 1 to 63 lower-case letters, digits, `-` and `_`", field.trim_start_matches('/'))))
    }
}

async fn check_owner(tx: &mut Tx, owner: Option<Uuid>) -> ApiResult<()> {
    if let Some(id) = owner {
        let found: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM arbiter_admin.users WHERE id = $1)").bind(id).fetch_one(tx.conn()).await?;
        if !found {
            return Err(Problem::invalid("/owner_user_id", format!("there is no user `{id}`")));
        }
    }
    Ok(())
}

async fn fetch(tx: &mut Tx, id: Uuid) -> ApiResult<Policy> {
    sqlx::query_as::<_, Policy>(&format!("SELECT {POLICY_COLUMNS} FROM arbiter_admin.policies p WHERE p.id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("policy `{id}`")))
}

async fn fetch_version(tx: &mut Tx, policy_id: Uuid, number: i32) -> ApiResult<PolicyVersion> {
    sqlx::query_as::<_, PolicyVersion>(&format!(
        "SELECT {VERSION_COLUMNS} FROM arbiter_admin.policy_versions WHERE policy_id = $1 AND number = $2"
    ))
    .bind(policy_id)
    .bind(number)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Problem::not_found(format!("version {number} of policy `{policy_id}`")))
}

/// The policy texts a version puts in the model: `admin.<name>`, or `admin.<name>.<n>`
/// for each of several. A text that does not parse is a 422 with Cedar's diagnostic.
fn policy_texts(name: &str, definition: &str) -> ApiResult<Vec<PolicyText>> {
    let split = arbiter_engine::split_policies(name, definition).map_err(|e| Problem::invalid("/definition", format!("the Cedar text does not parse: {e}")))?;
    if split.is_empty() {
        return Err(Problem::invalid("/definition", "the Cedar text holds no policy"));
    }
    let one = split.len() == 1;
    Ok(split
        .into_iter()
        .enumerate()
        .map(|(i, p)| PolicyText { id: if one { format!("{POLICY_PREFIX}{name}") } else { format!("{POLICY_PREFIX}{name}.{}", i + 1) }, text: p.text })
        .collect())
}

/// Puts the active versions of the environment's policies into the transaction's model,
/// in place of the admin policies it held.
async fn feed_active(tx: &mut Tx, environment: &str, field: &str) -> ApiResult<()> {
    let active: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.name, v.definition FROM arbiter_admin.policies p JOIN arbiter_admin.policy_versions v ON v.policy_id = p.id
         WHERE p.environment = $1 AND v.status = 'active' ORDER BY p.name",
    )
    .bind(environment)
    .fetch_all(tx.conn())
    .await?;
    let mut texts = Vec::new();
    for (name, definition) in &active {
        texts.extend(policy_texts(name, definition)?);
    }
    let model = tx.model_mut(field).await?;
    model.policies.retain(|p| !p.id.starts_with(POLICY_PREFIX));
    model.policies.extend(texts);
    Ok(())
}

/// Add a policy to the catalogue (platform operators). It has no version yet.
#[utoipa::path(post, path = "/v1/policies", tag = "policies", request_body = CreatePolicy,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = Policy), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_policy(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreatePolicy>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    check_name("/name", &b.name)?;
    let environment = b.environment.clone().unwrap_or_else(|| "production".to_string());
    check_name("/environment", &environment)?;
    check_description("description", &b.description, 2000)?;
    check_tags(&b.tags)?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/policies", &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    check_owner(&mut tx, b.owner_user_id).await?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO arbiter_admin.policies (id, name, environment, description, owner_user_id, tags, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&b.name)
    .bind(&environment)
    .bind(&b.description)
    .bind(b.owner_user_id)
    .bind(&b.tags)
    .bind(caller.actor())
    .execute(tx.conn())
    .await?;
    let policy = fetch(&mut tx, id).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "policy.create",
        target_type: "policy",
        target_id: id.to_string(),
        before: None,
        after: snapshot(&policy),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &policy).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &policy, Some(revision), Some(policy.version)))
}

/// List the catalogue; filter by `environment`, `name` or `tag`.
#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    params(PageParams, ("environment" = Option<String>, Query), ("name" = Option<String>, Query), ("tag" = Option<String>, Query)),
    responses((status = 200, body = PageOf<Policy>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_policies(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["environment", "name", "tag"])?;
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let rows = sqlx::query_as::<_, Policy>(&format!(
        "SELECT {POLICY_COLUMNS} FROM arbiter_admin.policies p WHERE ($1::uuid IS NULL OR p.id > $1)
           AND ($2::text IS NULL OR p.environment = $2) AND ($3::text IS NULL OR p.name = $3) AND ($4::text IS NULL OR $4 = ANY (p.tags))
         ORDER BY p.id LIMIT $5"
    ))
    .bind(q.page.after)
    .bind(q.filter("environment"))
    .bind(q.filter("name"))
    .bind(q.filter("tag"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |p| p.id), None, None))
}

/// Read a policy.
#[utoipa::path(get, path = "/v1/policies/{policy_id}", tag = "policies", params(("policy_id" = Uuid, Path)),
    responses((status = 200, body = Policy), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_policy(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let policy = fetch(&mut tx, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &policy, None, Some(policy.version)))
}

/// Change a policy's metadata (description, owner, tags). `If-Match` guards against lost
/// updates.
#[utoipa::path(patch, path = "/v1/policies/{policy_id}", tag = "policies", request_body = UpdatePolicy,
    params(("policy_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Policy), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_policy(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(id): P<Uuid>,
    body: JsonBody<UpdatePolicy>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    if let Some(t) = &b.tags {
        check_tags(t)?;
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    let owner = b.owner_user_id.unwrap_or(before.owner_user_id);
    check_owner(&mut tx, owner).await?;
    sqlx::query(
        "UPDATE arbiter_admin.policies SET description = $2, owner_user_id = $3, tags = $4, version = version + 1, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(b.description.as_ref().unwrap_or(&before.description))
    .bind(owner)
    .bind(b.tags.as_ref().unwrap_or(&before.tags))
    .execute(tx.conn())
    .await?;
    let after = fetch(&mut tx, id).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "policy.update",
        target_type: "policy",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a policy and its versions. A policy with an active version is refused (409):
/// retire it first, so that deleting never changes a decision by surprise.
#[utoipa::path(delete, path = "/v1/policies/{policy_id}", tag = "policies", params(("policy_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_policy(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    if let Some(n) = before.active_version {
        return Err(Problem::conflict("/active_version", format!("version {n} is active: retire it before deleting the policy")));
    }
    sqlx::query("DELETE FROM arbiter_admin.policies WHERE id = $1").bind(id).execute(tx.conn()).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "policy.delete",
        target_type: "policy",
        target_id: id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}

/// Write a new version (a draft). Its Cedar text must parse; it is validated against the
/// schema when activated.
#[utoipa::path(post, path = "/v1/policies/{policy_id}/versions", tag = "policies", request_body = CreateVersion,
    params(("policy_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = PolicyVersion), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_version(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(policy_id): P<Uuid>,
    body: JsonBody<CreateVersion>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let definition = &body.value.definition;
    if definition.len() > 65536 || definition.trim().is_empty() {
        return Err(Problem::invalid("/definition", "`definition` must be 1 byte to 64 KiB of Cedar text"));
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let path = format!("/v1/policies/{policy_id}/versions");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    // Locks the policy: versions are numbered one at a time.
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM arbiter_admin.policies WHERE id = $1 FOR UPDATE")
        .bind(policy_id)
        .fetch_optional(tx.conn())
        .await?;
    let name = name.ok_or_else(|| Problem::not_found(format!("policy `{policy_id}`")))?;
    policy_texts(&name, definition)?;
    let version = sqlx::query_as::<_, PolicyVersion>(&format!(
        "INSERT INTO arbiter_admin.policy_versions (id, policy_id, number, definition, created_by)
         VALUES ($1, $2, (SELECT coalesce(max(number), 0) + 1 FROM arbiter_admin.policy_versions WHERE policy_id = $2), $3, $4)
         RETURNING {VERSION_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(policy_id)
    .bind(definition)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: None,
        action: "policy.version.create",
        target_type: "policy",
        target_id: policy_id.to_string(),
        before: None,
        after: snapshot(&version),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &version).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &version, Some(revision), None))
}

/// A policy's versions, oldest first (every version is kept); filter by `status`.
#[utoipa::path(get, path = "/v1/policies/{policy_id}/versions", tag = "policies",
    params(("policy_id" = Uuid, Path), PageParams, ("status" = Option<String>, Query)),
    responses((status = 200, body = PageOf<PolicyVersion>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_versions(State(app): State<App>, caller: Caller, P(policy_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["status"])?;
    if let Some(s) = q.filter("status") {
        if !matches!(s, "draft" | "active" | "retired") {
            return Err(Problem::bad_request("status", format!("`{}` is not `draft`, `active` or `retired`", arbiter_schema::shorten(s))));
        }
    }
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    fetch(&mut tx, policy_id).await?;
    let rows = sqlx::query_as::<_, PolicyVersion>(&format!(
        "SELECT {VERSION_COLUMNS} FROM arbiter_admin.policy_versions WHERE policy_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR status = $3) ORDER BY id LIMIT $4"
    ))
    .bind(policy_id)
    .bind(q.page.after)
    .bind(q.filter("status"))
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |v| v.id), None, None))
}

/// Read one version.
#[utoipa::path(get, path = "/v1/policies/{policy_id}/versions/{number}", tag = "policies",
    params(("policy_id" = Uuid, Path), ("number" = i32, Path, minimum = 1)),
    responses((status = 200, body = PolicyVersion), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_version(State(app): State<App>, caller: Caller, P((policy_id, number)): P<(Uuid, i32)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let version = fetch_version(&mut tx, policy_id, number).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &version, None, None))
}

/// Activate a version: compiled with the PDP's own compiler against the live schema
/// (a 422 with Cedar's diagnostic, and nothing changes, when it does not compile). The
/// version it replaces is retired. In the admin's environment the PDP enforces it from
/// the revision in `Arbiter-Revision`.
#[utoipa::path(post, path = "/v1/policies/{policy_id}/versions/{number}/activate", tag = "policies",
    params(("policy_id" = Uuid, Path), ("number" = i32, Path, minimum = 1)),
    responses((status = 200, body = PolicyVersion), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn activate_version(State(app): State<App>, caller: Caller, ctx: RequestContext, P((policy_id, number)): P<(Uuid, i32)>) -> ApiResult<Response> {
    transition(&app, &caller, &ctx, policy_id, number, true).await
}

/// Retire a version: the active one leaves the PDP's policy set at once; a draft is
/// retired without ever being enforced.
#[utoipa::path(post, path = "/v1/policies/{policy_id}/versions/{number}/retire", tag = "policies",
    params(("policy_id" = Uuid, Path), ("number" = i32, Path, minimum = 1)),
    responses((status = 200, body = PolicyVersion), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn retire_version(State(app): State<App>, caller: Caller, ctx: RequestContext, P((policy_id, number)): P<(Uuid, i32)>) -> ApiResult<Response> {
    transition(&app, &caller, &ctx, policy_id, number, false).await
}

async fn transition(app: &App, caller: &Caller, ctx: &RequestContext, policy_id: Uuid, number: i32, activate: bool) -> ApiResult<Response> {
    app.authorize(caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let policy = fetch(&mut tx, policy_id).await?;
    let before = fetch_version(&mut tx, policy_id, number).await?;
    match (activate, before.status.as_str()) {
        (true, "active") => return Err(Problem::conflict("/status", format!("version {number} is already active"))),
        (_, "retired") => {
            return Err(Problem::conflict("/status", format!("version {number} is retired; write a new version with its text to use it again")))
        }
        _ => {}
    }
    let was_active = before.status == "active";
    if activate {
        sqlx::query(
            "UPDATE arbiter_admin.policy_versions SET status = 'retired', retired_at = now() WHERE policy_id = $1 AND status = 'active'",
        )
        .bind(policy_id)
        .execute(tx.conn())
        .await?;
        sqlx::query(
            "UPDATE arbiter_admin.policy_versions SET status = 'active', activated_at = now(), activated_by = $3 WHERE policy_id = $1 AND number = $2",
        )
        .bind(policy_id)
        .bind(number)
        .bind(caller.actor())
        .execute(tx.conn())
        .await?;
    } else {
        sqlx::query("UPDATE arbiter_admin.policy_versions SET status = 'retired', retired_at = now() WHERE policy_id = $1 AND number = $2")
            .bind(policy_id)
            .bind(number)
            .execute(tx.conn())
            .await?;
    }
    if policy.environment == app.environment {
        if activate || was_active {
            feed_active(&mut tx, &app.environment, "/definition").await?;
        }
    } else if activate {
        // Another environment's PDP enforces it: compiled here all the same, against
        // this schema, in place of the admin policies this PDP holds.
        let schema = crate::model::live_schema(&mut tx, "/definition").await?;
        let mut probe = crate::model::stored_model(&mut tx).await?;
        probe.policies.retain(|p| !p.id.starts_with(POLICY_PREFIX));
        probe.policies.extend(policy_texts(&policy.name, &before.definition)?);
        arbiter_engine::policy::CompiledPolicies::compile(&schema, probe)
            .map_err(|e| Problem::invalid("/definition", format!("the policy model would not compile: {e}")))?;
    }
    let revision = tx.flush(&caller.actor()).await?;
    sqlx::query("UPDATE arbiter_admin.policy_versions SET revision = $3 WHERE policy_id = $1 AND number = $2")
        .bind(policy_id)
        .bind(number)
        .bind(revision.map(|r| r as i64))
        .execute(tx.conn())
        .await?;
    let after = fetch_version(&mut tx, policy_id, number).await?;
    audit::record(&mut tx, caller, ctx, Entry {
        tenant: None,
        action: if activate { "policy.version.activate" } else { "policy.version.retire" },
        target_type: "policy",
        target_id: policy_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "no-secrets", "p_1", "0"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a.b", "a b", &"a".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_version_becomes_admin_policies() {
        let one = policy_texts("p", "forbid (principal, action, resource);").unwrap();
        assert_eq!(one.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["admin.p"]);
        let two = policy_texts("p", "forbid (principal, action, resource);\npermit (principal, action, resource);").unwrap();
        assert_eq!(two.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["admin.p.1", "admin.p.2"]);
        let err = policy_texts("p", "forbid (principal, action, resource").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("/definition"));
        assert!(policy_texts("p", "// nothing").is_err());
    }
}
