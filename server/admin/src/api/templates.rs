//! Role templates (platform operators): named sets of roles, with their parents and the
//! global permissions they grant, that provision a new tenant (`template` on tenant
//! create). The document is checked whole on write: names unique, parents among the
//! template's roles and acyclic, permissions in the global catalogue.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{PermissionName, check_if_match, check_description, check_text, commit, no_content, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/role-templates", post(create_template).get(list_templates))
        .route("/v1/role-templates/{template_id}", get(get_template).patch(update_template).delete(delete_template))
}

/// One role of a template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRole {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    /// Another role of the template whose permissions this one inherits.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    pub parent: Option<String>,
    /// Names of global permissions.
    #[serde(default)]
    #[schema(max_items = 1000, value_type = Vec<PermissionName>)]
    pub permissions: Vec<String>,
}

/// The roles a template provisions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDocument {
    #[schema(min_items = 1, max_items = 100)]
    pub roles: Vec<TemplateRole>,
}

/// A role template.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoleTemplate {
    pub id: Uuid,
    /// Lowercase letters, digits, `_` and `-` (`family`, `saas-default`).
    pub name: String,
    pub description: String,
    pub document: TemplateDocument,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    description: String,
    document: Value,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn template(self) -> ApiResult<RoleTemplate> {
        let document = serde_json::from_value(self.document).map_err(|e| Problem::internal("a stored template is not readable", &e))?;
        Ok(RoleTemplate {
            id: self.id,
            name: self.name,
            description: self.description,
            document,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "id, name, description, document, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "starter", "document": {"roles": [{"name": "viewer", "permissions": []}, {"name": "editor", "parent": "viewer"}]}}))]
pub struct CreateTemplate {
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: String,
    pub document: TemplateDocument,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    pub document: Option<TemplateDocument>,
}

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid("/name", "`name` must be 1 to 63 of a-z, 0-9, `_` and `-`, starting with a letter or digit"))
    }
}

/// Checks a document whole; returns the permission ids by name.
async fn check_document(tx: &mut Tx, doc: &TemplateDocument) -> ApiResult<BTreeMap<String, Uuid>> {
    const MAX_ROLES: usize = 100;
    if doc.roles.is_empty() || doc.roles.len() > MAX_ROLES {
        return Err(Problem::invalid("/document/roles", format!("a template has 1 to {MAX_ROLES} roles")));
    }
    let mut names = BTreeSet::new();
    let mut wanted = BTreeSet::new();
    for (i, r) in doc.roles.iter().enumerate() {
        check_text(&format!("document/roles/{i}/name"), &r.name, 200, false)?;
        check_description(&format!("document/roles/{i}/description"), &r.description, 2000)?;
        if !names.insert(r.name.as_str()) {
            return Err(Problem::invalid(format!("/document/roles/{i}/name"), format!("the role `{}` appears twice", r.name)));
        }
        if r.permissions.len() > 1000 {
            return Err(Problem::invalid(format!("/document/roles/{i}/permissions"), "a role has at most 1000 permissions"));
        }
        wanted.extend(r.permissions.iter().cloned());
    }
    for (i, r) in doc.roles.iter().enumerate() {
        if let Some(p) = &r.parent {
            if !names.contains(p.as_str()) {
                return Err(Problem::invalid(format!("/document/roles/{i}/parent"), format!("`{p}` is not a role of the template")));
            }
        }
        // Walk up the parents: a cycle returns to where it started within |roles| steps.
        let mut at = r.parent.as_deref();
        for _ in 0..doc.roles.len() {
            match at {
                Some(p) if p == r.name => {
                    return Err(Problem::invalid(format!("/document/roles/{i}/parent"), format!("the parents of `{}` make a cycle", r.name)))
                }
                Some(p) => at = doc.roles.iter().find(|x| x.name == p).and_then(|x| x.parent.as_deref()),
                None => break,
            }
        }
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let found: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT name, id FROM arbiter_admin.permissions WHERE tenant_id IS NULL AND name = ANY($1)")
            .bind(&wanted)
            .fetch_all(tx.conn())
            .await?;
    let ids: BTreeMap<String, Uuid> = found.into_iter().collect();
    for (i, r) in doc.roles.iter().enumerate() {
        for (j, p) in r.permissions.iter().enumerate() {
            if !ids.contains_key(p) {
                return Err(Problem::invalid(
                    format!("/document/roles/{i}/permissions/{j}"),
                    format!("`{p}` is not a global permission"),
                ));
            }
        }
    }
    Ok(ids)
}

/// Provisions `tenant` with the roles of the template named `name` (tenant create).
pub async fn provision(tx: &mut Tx, tenant: Uuid, name: &str) -> ApiResult<()> {
    let row = sqlx::query_as::<_, Row>(&format!("SELECT {COLUMNS} FROM arbiter_admin.role_templates WHERE name = $1"))
        .bind(name)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::invalid("/template", format!("there is no role template `{name}`")))?;
    let template = row.template()?;
    // The catalogue may have changed since the template was written: check again.
    let permissions = check_document(tx, &template.document).await.map_err(|p| {
        Problem::invalid("/template", format!("the template `{name}` no longer applies: {}", p.detail))
    })?;
    let mut ids: BTreeMap<&str, Uuid> = BTreeMap::new();
    for r in &template.document.roles {
        ids.insert(r.name.as_str(), Uuid::new_v4());
    }
    // Parents first: insert in an order where every parent exists.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while done.len() < template.document.roles.len() {
        let progress = done.len();
        for r in &template.document.roles {
            if done.contains(r.name.as_str()) || r.parent.as_deref().is_some_and(|p| !done.contains(p)) {
                continue;
            }
            let id = ids[r.name.as_str()];
            let parent = r.parent.as_deref().map(|p| ids[p]);
            sqlx::query("INSERT INTO arbiter_admin.roles (id, tenant_id, name, description, parent_role_id) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(tenant)
                .bind(&r.name)
                .bind(&r.description)
                .bind(parent)
                .execute(tx.conn())
                .await?;
            if let Some(p) = parent {
                crate::rbac::parent_edges(tx, &[tenant], id, p, true);
            }
            for p in &r.permissions {
                let pid = permissions[p];
                sqlx::query("INSERT INTO arbiter_admin.role_permissions (role_id, permission_id, tenant_id, granted_by) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(pid)
                    .bind(tenant)
                    .bind(format!("template:{name}"))
                    .execute(tx.conn())
                    .await?;
                crate::rbac::grant_edges(tx, &[tenant], id, pid, true);
            }
            done.insert(r.name.as_str());
        }
        if done.len() == progress {
            return Err(Problem::internal("a role template's parents do not resolve", &name));
        }
    }
    Ok(())
}

async fn fetch(tx: &mut Tx, id: Uuid) -> ApiResult<RoleTemplate> {
    sqlx::query_as::<_, Row>(&format!("SELECT {COLUMNS} FROM arbiter_admin.role_templates WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("role template `{id}`")))?
        .template()
}


/// Create a role template (platform operators).
#[utoipa::path(post, path = "/v1/role-templates", tag = "roles", request_body = CreateTemplate, params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = RoleTemplate), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_template(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, body: JsonBody<CreateTemplate>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    check_name(&b.name)?;
    check_description("description", &b.description, 2000)?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let claim = match Idempotency::begin(&mut tx, &caller, &headers, "POST", "/v1/role-templates", &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    check_document(&mut tx, &b.document).await?;
    let document = serde_json::to_value(&b.document).map_err(|e| Problem::internal("cannot encode a template", &e))?;
    let row = sqlx::query_as::<_, Row>(&format!(
        "INSERT INTO arbiter_admin.role_templates (id, name, description, document) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(&b.name)
    .bind(&b.description)
    .bind(document)
    .fetch_one(tx.conn())
    .await?;
    let t = row.template()?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: None, action: "role_template.create", target_type: "role_template", target_id: t.id.to_string(), before: None, after: snapshot(&t) }).await?;
    claim.save(&mut tx, StatusCode::CREATED, &t).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &t, Some(revision), Some(t.version)))
}

/// List role templates (platform operators).
#[utoipa::path(get, path = "/v1/role-templates", tag = "roles", params(PageParams),
    responses((status = 200, body = PageOf<RoleTemplate>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_templates(State(app): State<App>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let rows = sqlx::query_as::<_, Row>(&format!(
        "SELECT {COLUMNS} FROM arbiter_admin.role_templates WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    let rows = rows.into_iter().map(Row::template).collect::<ApiResult<Vec<_>>>()?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |t| t.id), None, None))
}

/// Read a role template (platform operators).
#[utoipa::path(get, path = "/v1/role-templates/{template_id}", tag = "roles", params(("template_id" = Uuid, Path)),
    responses((status = 200, body = RoleTemplate), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_template(State(app): State<App>, caller: Caller, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let t = fetch(&mut tx, id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &t, None, Some(t.version)))
}

/// Change a role template (platform operators); tenants provisioned before keep theirs.
#[utoipa::path(patch, path = "/v1/role-templates/{template_id}", tag = "roles", request_body = UpdateTemplate,
    params(("template_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = RoleTemplate), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_template(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>, body: JsonBody<UpdateTemplate>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let b = &body.value;
    if let Some(d) = &b.description {
        check_description("description", d, 2000)?;
    }
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    // The body is judged before the precondition: a bad body is 4xx whatever the ETag.
    if let Some(doc) = &b.document {
        check_document(&mut tx, doc).await?;
    }
    check_if_match(&headers, before.version)?;
    let document = match &b.document {
        Some(d) => Some(serde_json::to_value(d).map_err(|e| Problem::internal("cannot encode a template", &e))?),
        None => None,
    };
    let after = sqlx::query_as::<_, Row>(&format!(
        "UPDATE arbiter_admin.role_templates SET description = coalesce($2, description), document = coalesce($3, document),
            version = version + 1, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&b.description)
    .bind(document)
    .fetch_one(tx.conn())
    .await?
    .template()?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: None, action: "role_template.update", target_type: "role_template", target_id: id.to_string(), before: snapshot(&before), after: snapshot(&after) }).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete a role template (platform operators); tenants provisioned from it keep their roles.
#[utoipa::path(delete, path = "/v1/role-templates/{template_id}", tag = "roles", params(("template_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_template(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(id): P<Uuid>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Platform).await?;
    let mut tx = app.db.begin(Scope::Platform).await?;
    let before = fetch(&mut tx, id).await?;
    check_if_match(&headers, before.version)?;
    sqlx::query("DELETE FROM arbiter_admin.role_templates WHERE id = $1").bind(id).execute(tx.conn()).await?;
    audit::record(&mut tx, &caller, &ctx, Entry { tenant: None, action: "role_template.delete", target_type: "role_template", target_id: id.to_string(), before: snapshot(&before), after: None }).await?;
    let revision = commit(&app, tx).await?;
    Ok(no_content(revision))
}
