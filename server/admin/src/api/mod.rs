//! The API under `/v1`: one module per resource, the OpenAPI document built from the
//! handlers' annotations, and what every handler shares: JSON bodies read strictly
//! (problem documents name the field), ETags, `Idempotency-Key` on creates, and the
//! `Arbiter-Revision` header on every mutating response.

pub mod access;
pub mod acl;
pub mod alerts;
pub mod api_keys;
pub mod attributes;
pub mod audit_config;
pub mod audit_records;
pub mod bulk;
pub mod decisions;
pub mod delegations;
pub mod directory;
pub mod graph;
pub mod groups;
pub mod impersonation;
pub mod labels;
pub mod membership;
pub mod policies;
pub mod roles;
pub mod templates;
pub mod tenants;
pub mod users;

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::auth::Caller;
use crate::db::Tx;
use crate::http::App;
use crate::problem::{ApiResult, Problem};

/// The response header that carries the revision a write produced (or the newest one
/// when it changed no relationship): a PDP Check at `at_least_as_fresh` of it sees the
/// change.
pub const REVISION_HEADER: &str = "arbiter-revision";

pub fn routes() -> Router<App> {
    Router::new().merge(tenants::routes()).merge(users::routes()).merge(groups::routes()).merge(api_keys::routes()).merge(roles::routes()).merge(templates::routes()).merge(directory::routes()).merge(acl::routes()).merge(graph::routes())
        .merge(labels::routes()).merge(attributes::routes()).merge(policies::routes())
        .merge(delegations::routes()).merge(impersonation::routes())
        .merge(audit_records::routes()).merge(audit_config::routes()).merge(alerts::routes()).merge(decisions::routes()).merge(access::routes()).merge(bulk::routes()).merge(membership::routes())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Arbiter admin API", description = "Tenants, users, groups, roles, API keys, access control lists, graph nodes and edges, security labels, attributes and Cedar policies, fed to the PDP in the same transaction (DESIGN §12)."),
    paths(
        crate::http::healthz, crate::http::readyz, crate::http::metrics, crate::http::openapi,
        tenants::create_tenant, tenants::list_tenants, tenants::get_tenant, tenants::update_tenant, tenants::set_tenant_status,
        tenants::list_domains, tenants::add_domain, tenants::remove_domain,
        users::create_user, users::list_users, users::get_user, users::update_user, users::remove_user,
        users::suspend_user, users::reactivate_user,
        groups::create_group, groups::list_groups, groups::get_group, groups::update_group, groups::delete_group,
        groups::add_member, groups::list_members, groups::remove_member,
        api_keys::create_tenant_key, api_keys::list_tenant_keys, api_keys::rotate_tenant_key, api_keys::revoke_tenant_key,
        api_keys::create_operator_key, api_keys::list_operator_keys, api_keys::revoke_operator_key,
        roles::create_tenant_role, roles::list_tenant_roles, roles::get_tenant_role, roles::update_tenant_role, roles::delete_tenant_role,
        roles::list_tenant_role_permissions, roles::grant_tenant_permission, roles::revoke_tenant_permission,
        roles::create_global_role, roles::list_global_roles, roles::get_global_role, roles::update_global_role, roles::delete_global_role,
        roles::list_global_role_permissions, roles::grant_global_permission, roles::revoke_global_permission,
        roles::create_tenant_permission, roles::list_tenant_permissions, roles::get_tenant_permission, roles::update_tenant_permission,
        roles::delete_tenant_permission, roles::create_global_permission, roles::list_global_permissions, roles::get_global_permission,
        roles::update_global_permission, roles::delete_global_permission,
        roles::create_assignment, roles::list_assignments, roles::delete_assignment,
        templates::create_template, templates::list_templates, templates::get_template, templates::update_template, templates::delete_template,
        directory::create_department, directory::list_departments, directory::get_department, directory::update_department,
        directory::delete_department, directory::list_preferences, directory::set_tenant_preference, directory::delete_tenant_preference,
        directory::set_global_preference, directory::delete_global_preference, directory::add_contact, directory::list_contacts,
        directory::remove_contact, directory::delete_person,
        acl::create_entry, acl::list_entries, acl::get_entry, acl::update_entry, acl::delete_entry, acl::entry_log,
        graph::create_node, graph::list_nodes, graph::get_node, graph::update_node, graph::delete_node,
        graph::create_edge, graph::list_edges, graph::get_edge, graph::update_edge, graph::delete_edge,
        labels::create_label, labels::list_labels, labels::get_label, labels::update_label, labels::delete_label,
        labels::list_parents, labels::add_parent, labels::remove_parent,
        labels::create_object_label, labels::list_object_labels, labels::delete_object_label,
        attributes::create_attribute, attributes::list_attributes, attributes::get_attribute, attributes::update_attribute,
        attributes::delete_attribute, attributes::create_value, attributes::list_values, attributes::delete_value,
        attributes::assign_subject, attributes::list_subject_attributes, attributes::unassign_subject,
        attributes::assign_resource, attributes::list_resource_attributes, attributes::unassign_resource,
        policies::create_policy, policies::list_policies, policies::get_policy, policies::update_policy, policies::delete_policy,
        policies::create_version, policies::list_versions, policies::get_version, policies::activate_version, policies::retire_version,
        delegations::create_delegation, delegations::list_delegations, delegations::get_delegation, delegations::revoke_delegation,
        impersonation::start_session, impersonation::list_sessions, impersonation::get_session, impersonation::end_session,
        audit_records::list_tenant_records, audit_records::list_records, audit_records::export_tenant_records, audit_records::export_records,
        audit_records::report_tenant_events, audit_records::report_events,
        audit_config::create_stream, audit_config::list_streams, audit_config::get_stream, audit_config::update_stream, audit_config::delete_stream,
        audit_config::create_config, audit_config::list_configs, audit_config::get_config, audit_config::update_config, audit_config::delete_config,
        alerts::create_tenant_rule, alerts::list_tenant_rules, alerts::get_tenant_rule, alerts::update_tenant_rule, alerts::delete_tenant_rule,
        alerts::create_platform_rule, alerts::list_platform_rules, alerts::get_platform_rule, alerts::update_platform_rule, alerts::delete_platform_rule,
        alerts::list_tenant_alerts, alerts::get_tenant_alert, alerts::resolve_tenant_alert,
        alerts::list_platform_alerts, alerts::get_platform_alert, alerts::resolve_platform_alert,
        decisions::list_tenant_decisions, decisions::list_decisions, decisions::report_tenant, decisions::report_platform,
        decisions::list_tenant_reports, decisions::list_reports,
        access::effective_permissions, access::who_has, bulk::provision,
        membership::create_invitation, membership::list_invitations, membership::get_invitation, membership::cancel_invitation,
        membership::accept_invitation, membership::request_to_join, membership::list_requests, membership::get_request,
        membership::approve_request, membership::reject_request, membership::list_outbox, membership::mark_delivered,
    ),
    components(schemas(Problem, Tag, PermissionName, EventPattern, AnyJson, acl::RelationName)),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    tags(
        (name = "tenants", description = "Tenants, their lifecycle and domains"),
        (name = "users", description = "Global identities and their membership in a tenant"),
        (name = "groups", description = "Groups (nested) and their members"),
        (name = "roles", description = "Roles, permissions, what roles grant, and assignments"),
        (name = "api-keys", description = "Keys for machine callers"),
        (name = "acl", description = "Access control lists on the application's own objects, and their change log"),
        (name = "graph", description = "The application's objects and relationships as nodes and edges"),
        (name = "labels", description = "Security labels, their hierarchy, and the labels on objects, fed to the PDP's Cedar side"),
        (name = "attributes", description = "Attribute definitions and values, and the values users, groups and objects hold, fed to the PDP's Cedar side"),
        (name = "policies", description = "Cedar policies with versions: activated through the PDP's own compiler"),
        (name = "delegations", description = "A user's role held by another user for a time window"),
        (name = "membership", description = "Invitations and invite codes, join requests, and the outbox the product's mailer drains"),
        (name = "audit", description = "The audit trail (every mutating call, refused calls, events services report): query, export, streams with retention, per-service configs"),
        (name = "alerts", description = "Rules over the audit trail, the alerts they raise, and their webhooks"),
        (name = "access", description = "Who can do what: a user's effective permissions, and who holds a permission on an object, answered by the PDP"),
        (name = "bulk", description = "Provisioning a tenant's users, groups, memberships, assignments and ACL entries from one NDJSON body"),
        (name = "decisions", description = "The PDP's decision logs and what enforcement points did with each decision"),
        (name = "impersonation", description = "Admins acting as a user, every action audited with the user as the effective actor"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some("An API key: `<id>.<secret>`".to_string());
            components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
        }
    }
}

/// The document served at `/openapi.json` (built once).
pub fn openapi_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default()).clone()
}

/// A JSON body, read strictly: the content type must be JSON, unknown fields and wrong
/// types are 400 naming the field (a JSON pointer). Keeps the raw bytes for
/// `Idempotency-Key`.
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, Problem> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "application/json" || (v.starts_with("application/") && v.ends_with("+json")));
        if !json {
            return Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be JSON (`Content-Type: application/json`)")
                .with_field("Content-Type"));
        }
        let raw = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is larger than the server accepts (`--max-body-size`)")
            } else {
                Problem::bad_request("body", format!("the body could not be read: {e}"))
            }
        })?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// Deserialises `raw`, naming the field that is wrong.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> ApiResult<T> {
    // Every body is an object (serde would also read a struct from an array).
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::bad_request("body", "the body must be a JSON object"));
    }
    // serde_json's own recursion limit (128) bounds the depth of any body.
    let mut de = serde_json::Deserializer::from_slice(raw);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = result.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // Unreadable JSON is the body's fault; a value of the wrong shape is its field's.
        let field = if inner.is_syntax() || inner.is_eof() || path == "." {
            "body".to_string()
        } else {
            format!("/{}", path.replace('.', "/"))
        };
        Problem::bad_request(field, format!("the body is not valid: {inner}"))
    })?;
    de.end().map_err(|e| Problem::bad_request("body", format!("the body is not valid: {e}")))?;
    Ok(value)
}

/// A successful response: `body` as JSON with `status`, the revision header and, for
/// versioned rows, an ETag.
pub fn reply<T: Serialize>(status: StatusCode, body: &T, revision: Option<u64>, version: Option<i32>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Some(r) = revision.and_then(|r| HeaderValue::from_str(&crate::token(r)).ok()) {
        headers.insert(REVISION_HEADER, r);
    }
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&etag(v)).ok()) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// 204 with the revision header.
pub fn no_content(revision: u64) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&crate::token(revision)) {
        response.headers_mut().insert(REVISION_HEADER, v);
    }
    response
}

pub fn etag(version: i32) -> String {
    format!("\"v{version}\"")
}

/// `If-Match`, if sent, must name the row's current version (`*` matches any): else 412.
pub fn check_if_match(headers: &HeaderMap, version: i32) -> ApiResult<()> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    // A value that is not text cannot name the current ETag either.
    let value = value.to_str().unwrap_or("");
    let current = etag(version);
    let matches = value.split(',').map(str::trim).any(|v| v == "*" || v == current || v.strip_prefix("W/") == Some(current.as_str()));
    if matches {
        Ok(())
    } else {
        Err(Problem::precondition_failed(format!("the row changed: its ETag is now {current}; read it again and retry")))
    }
}

/// Commits and returns the revision the transaction wrote, or the newest one.
pub async fn commit(app: &App, tx: Tx) -> ApiResult<u64> {
    match tx.commit().await? {
        Some(revision) => Ok(revision),
        None => app.db.head().await,
    }
}

/// `Idempotency-Key` on a create: claims the key in the transaction (a concurrent
/// request with the same key waits for this one), or finds the stored response.
#[derive(Debug)]
pub enum Idempotency {
    /// No key, or a key claimed by this request: save the response with [`Claim::save`].
    Proceed(Claim),
    /// The key was used before with the same request: this is its response.
    Replay(Response),
}

const MAX_IDEMPOTENCY_KEY: usize = 255;

impl Idempotency {
    pub async fn begin(tx: &mut Tx, caller: &Caller, headers: &HeaderMap, method: &str, path: &str, raw: &[u8]) -> ApiResult<Idempotency> {
        let Some(key) = headers.get("idempotency-key") else {
            return Ok(Idempotency::Proceed(Claim(None)));
        };
        let key = key
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| Problem::bad_request("Idempotency-Key", format!("`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters")))?
            .to_string();
        let mut hasher = Sha256::new();
        hasher.update(method.as_bytes());
        hasher.update([0]);
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(raw);
        let hash = hasher.finalize().to_vec();
        let tenant = match tx.scope {
            crate::db::Scope::Tenant(t) => Some(t),
            crate::db::Scope::Platform => None,
        };
        let caller_id = caller.actor();
        let claimed = sqlx::query(
            "INSERT INTO arbiter_admin.idempotency_keys (caller, key, tenant_id, method, path, request_hash, status, response)
             VALUES ($1, $2, $3, $4, $5, $6, 0, 'null'::jsonb) ON CONFLICT (caller, key) DO NOTHING",
        )
        .bind(&caller_id)
        .bind(&key)
        .bind(tenant)
        .bind(method)
        .bind(path)
        .bind(&hash)
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        if claimed {
            return Ok(Idempotency::Proceed(Claim(Some((caller_id, key)))));
        }
        let stored: Option<(Vec<u8>, i32, serde_json::Value, Option<i64>)> = sqlx::query_as(
            "SELECT request_hash, status, response, revision FROM arbiter_admin.idempotency_keys WHERE caller = $1 AND key = $2",
        )
        .bind(&caller_id)
        .bind(&key)
        .fetch_optional(tx.conn())
        .await?;
        let Some((stored_hash, status, body, revision)) = stored else {
            return Err(Problem::conflict("Idempotency-Key", "this `Idempotency-Key` was used in another tenant"));
        };
        if stored_hash != hash {
            return Err(Problem::invalid(
                "Idempotency-Key",
                "this `Idempotency-Key` was used with a different request; use a new key for a new request",
            ));
        }
        let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
        let mut response = reply(status, &body, revision.and_then(|r| u64::try_from(r).ok()), None);
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        Ok(Idempotency::Replay(response))
    }

}

/// A claimed `Idempotency-Key` (or none): `(caller, key)`.
#[derive(Debug)]
pub struct Claim(Option<(String, String)>);

impl Claim {
    /// Stores the response for replays (in the same transaction as the create).
    pub async fn save<T: Serialize>(&self, tx: &mut Tx, status: StatusCode, body: &T) -> ApiResult<()> {
        let Some((caller, key)) = &self.0 else {
            return Ok(());
        };
        let body = serde_json::to_value(body).map_err(|e| Problem::internal("cannot encode a response", &e))?;
        let revision = tx.revision.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
        sqlx::query("UPDATE arbiter_admin.idempotency_keys SET status = $3, response = $4, revision = $5 WHERE caller = $1 AND key = $2")
            .bind(caller)
            .bind(key)
            .bind(i32::from(status.as_u16()))
            .bind(body)
            .bind(revision)
            .execute(tx.conn())
            .await?;
        Ok(())
    }
}

// The OpenAPI document gives text fields patterns that ECMA and Python regexes read the
// same way (no `\s`, whose meaning differs): a line has no control character
// (`[^\u0000-\u001f\u007f-\u009f]`); a name is a line with a character other than a
// space; a description may also hold tabs and newlines. The checks below are those
// patterns, so a request the document calls valid is accepted and the rest refused.

/// A single-line field: at most `max` characters, no control character, and (unless
/// `empty_ok`) a character other than a space.
pub fn check_text(field: &str, value: &str, max: usize, empty_ok: bool) -> ApiResult<()> {
    let n = value.chars().count();
    if n > max || (!empty_ok && !value.chars().any(|c| c != ' ')) {
        let what = if empty_ok { format!("at most {max} characters") } else { format!("1 to {max} characters, not all spaces") };
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` must have {what}")));
    }
    if value.chars().any(char::is_control) {
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` has a control character")));
    }
    Ok(())
}

/// A description: at most `max` characters; tabs and newlines are the only control
/// characters allowed.
pub fn check_description(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.chars().count() > max {
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` must have at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` has a control character other than a tab or a newline")));
    }
    Ok(())
}

/// JSON documents stored as given (settings, metadata, ...): an object, bounded in size
/// and depth.
pub fn check_document(field: &str, value: &serde_json::Value) -> ApiResult<()> {
    const MAX_BYTES: usize = 64 * 1024;
    const MAX_DEPTH: usize = 16;
    if !value.is_object() {
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` must be a JSON object")));
    }
    if has_nul(value) {
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` holds a NUL character (\\u0000), which cannot be stored")));
    }
    if depth(value) > MAX_DEPTH {
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` nests deeper than {MAX_DEPTH} levels")));
    }
    if value.to_string().len() > MAX_BYTES {
        return Err(Problem::invalid(format!("/{field}"), format!("`{field}` is larger than {MAX_BYTES} bytes")));
    }
    Ok(())
}

/// Does any key or string in `v` hold U+0000 (which Postgres' jsonb cannot store)?
pub fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn depth(v: &serde_json::Value) -> usize {
    // Bodies are bounded by --max-body-size and serde_json's own recursion limit (128),
    // so this walk is bounded before it starts.
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A tag of a permission: a name of at most 64 characters.
#[derive(Debug)]
pub struct Tag;

/// The name of a permission.
#[derive(Debug)]
pub struct PermissionName;

fn string_schema(min: Option<usize>, max: Option<usize>, pattern: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(min)
        .max_length(max)
        .pattern(Some(pattern))
        .into()
}

impl utoipa::PartialSchema for Tag {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(Some(1), Some(64), r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")
    }
}

impl ToSchema for Tag {}

/// An event pattern of the audit trail: an event type (`login.failed`), a prefix
/// (`login.*`) or `*`.
#[derive(Debug)]
pub struct EventPattern;

impl utoipa::PartialSchema for EventPattern {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(Some(1), Some(128), r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")
    }
}

impl ToSchema for EventPattern {}

/// Any JSON value, spelled as the list of JSON types.
#[derive(Debug)]
pub struct AnyJson;

impl utoipa::PartialSchema for AnyJson {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{SchemaType, Type};
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Number, Type::Boolean, Type::Object, Type::Array, Type::Null]))
            .into()
    }
}

impl ToSchema for AnyJson {}

impl utoipa::PartialSchema for PermissionName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(None, None, r"^[A-Za-z0-9._:-]{1,200}$")
    }
}

impl ToSchema for PermissionName {}

/// An optional integer that also reads `5.0` (JSON Schema's integers include it).
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    use serde::de::Error;
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(v) if v.fract() == 0.0 && v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX) => Ok(Some(v as i32)),
        Some(v) => Err(D::Error::custom(format!("{v} is not a whole number in range"))),
    }
}

/// Absent (`None`), `null` (`Some(None)`) or a value: a PATCH field that can be cleared.
pub fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Path parameters, with a problem document (naming the parameter) when one is not
/// readable, such as an id that is not a UUID.
#[derive(Debug)]
pub struct P<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for P<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<P<T>, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(P(v)),
            Err(e) => Err(Problem::bad_request("path", format!("a path parameter is not valid: {}", e.body_text()))),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The committed snapshot (`server/admin/openapi.json`) is the document the server
    /// serves: an API change shows in review. `ARBITER_UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn the_openapi_snapshot_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let served = super::openapi_json();
        if std::env::var_os("ARBITER_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &served).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == served,
            "the served OpenAPI document differs from {}: run `ARBITER_UPDATE_OPENAPI=1 cargo test --workspace --lib openapi` and review the diff",
            path.display()
        );
        let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        // Public operations say so; every other one needs the key.
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            assert_eq!(doc["paths"][path]["get"]["security"], serde_json::json!([{}]), "{path}");
        }
        assert_eq!(doc["security"], serde_json::json!([{"api_key": []}]));
    }
}
