//! Access control lists: an entry grants a user or a group of the tenant relations on one
//! object of the application's own types (seed `acl_entries`), and every change to an
//! entry is kept in its log (seed `acl_logs`).
//!
//! An entry is checked against the live application schema in its transaction, under the
//! revision counter's lock (no schema write can land between the check and the commit):
//! the type must be the application's and carry `relation tenant: platform/tenant`, and
//! each relation must be a relation (not a permission) that allows the subject,
//! `platform/user` or `platform/group#member`, `with expiration` when the entry expires.
//! An entry the schema does not allow is a 422 naming the relation.
//!
//! Feed: `type:id#tenant@platform/tenant:T` claims the object for the tenant (an object
//! another tenant claimed is refused), then one relationship per relation,
//! `type:id#relation@platform/user:U` or `type:id#relation@platform/group:G#member`,
//! expiring with the entry. The claim stays when entries go: the object is still the
//! tenant's.

use arbiter_schema::{AllowedKind, CompiledSchema};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_if_match, commit, nullable, reply, Idempotency, JsonBody, P};
use crate::audit::{self, snapshot, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::page::{PageOf, PageParams, Query};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/tenants/{tenant_id}/acl-entries", post(create_entry).get(list_entries))
        .route("/v1/tenants/{tenant_id}/acl-entries/{entry_id}", get(get_entry).patch(update_entry).delete(delete_entry))
        .route("/v1/tenants/{tenant_id}/acl-entries/{entry_id}/log", get(entry_log))
}

/// A user or a group of the tenant: whom an ACL entry grants to (a group's members), or
/// who holds a subject attribute (the group itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A user of the tenant: `platform/user:U`.
    User,
    /// A group of the tenant: `platform/group:G` (an ACL entry grants to `G#member`).
    Group,
}

impl SubjectKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::Group => "group",
        }
    }

    fn subject(self, id: Uuid) -> String {
        match self {
            SubjectKind::User => feed::user(id),
            SubjectKind::Group => feed::group_members(id),
        }
    }

    /// The platform type of the subject's object (`platform/user`, `platform/group`).
    pub(super) fn object_type(self) -> &'static str {
        match self {
            SubjectKind::User => "platform/user",
            SubjectKind::Group => "platform/group",
        }
    }

    /// The relation of the subject (`member` of a group; none for a user).
    pub(super) fn subject_relation(self) -> &'static str {
        match self {
            SubjectKind::User => "",
            SubjectKind::Group => "member",
        }
    }

    /// Is `id` a member (user) or a group of the tenant? Else a 422 naming `field`.
    pub(super) async fn check_in_tenant(self, tx: &mut Tx, tenant_id: Uuid, id: Uuid, field: &str) -> ApiResult<()> {
        let sql = match self {
            SubjectKind::User => "SELECT EXISTS (SELECT 1 FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = $2)",
            SubjectKind::Group => "SELECT EXISTS (SELECT 1 FROM arbiter_admin.groups WHERE tenant_id = $1 AND id = $2)",
        };
        let found: bool = sqlx::query_scalar(sql).bind(tenant_id).bind(id).fetch_one(tx.conn()).await?;
        if found {
            Ok(())
        } else {
            Err(Problem::invalid(field, format!("the tenant has no {} `{id}`", self.as_str())))
        }
    }
}

/// An entry of an access control list.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AclEntry {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// A type of the application's schema (with `relation tenant: platform/tenant`).
    pub resource_type: String,
    pub resource_id: String,
    /// `user` or `group`.
    pub subject_type: String,
    pub subject_id: Uuid,
    /// Relations of the type granted to the subject, one relationship each.
    pub relations: Vec<String>,
    /// When the grant ends (never when null).
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ENTRY_COLUMNS: &str =
    "id, tenant_id, resource_type, resource_id, subject_type, subject_id, relations, expires_at, created_by, version, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"resource_type": "doc", "resource_id": "roadmap", "subject_type": "user",
    "subject_id": "7b0c8f1e-8c43-4f5e-9a53-0c6d1c1d2a11", "relations": ["viewer"]}))]
pub struct CreateEntry {
    #[schema(min_length = 3, max_length = 128, pattern = r"^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$")]
    pub resource_type: String,
    /// An object id: letters, digits and `/ _ | - = +`, at most 1,024 bytes.
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[A-Za-z0-9/_|\-=+]+$")]
    pub resource_id: String,
    pub subject_type: SubjectKind,
    pub subject_id: Uuid,
    #[schema(min_items = 1, max_items = 32, value_type = Vec<RelationName>)]
    pub relations: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A relation of the object's type.
#[derive(Debug)]
pub struct RelationName;

impl utoipa::PartialSchema for RelationName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::string_schema(Some(3), Some(64), r"^[a-z][a-z0-9_]{1,62}[a-z0-9]$")
    }
}

impl ToSchema for RelationName {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"relations": ["viewer", "editor"]}))]
pub struct UpdateEntry {
    /// The whole new set of relations (at least one; delete the entry to grant none).
    #[schema(min_items = 1, max_items = 32, value_type = Option<Vec<RelationName>>)]
    pub relations: Option<Vec<String>>,
    /// A new end of the grant; null: never ends.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// One change to an entry.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AclLog {
    /// Time-ordered (UUIDv7): the log is listed in the order of the changes.
    pub id: Uuid,
    pub entry_id: Uuid,
    /// `create`, `update` or `delete`.
    pub change_type: String,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// The revision the change was fed to the PDP at.
    pub revision: Option<i64>,
}

/// The relations asked for, in the order given (so that a problem names the index the
/// caller sent): each a plausible name, none twice.
pub(super) fn relation_set(relations: &[String]) -> ApiResult<Vec<String>> {
    if relations.is_empty() || relations.len() > 32 {
        return Err(Problem::invalid("/relations", "give between 1 and 32 relations"));
    }
    for (i, r) in relations.iter().enumerate() {
        if !arbiter_schema::is_valid_identifier(r) {
            return Err(Problem::invalid(format!("/relations/{i}"), format!("`{}` is not a relation name", arbiter_schema::shorten(r))));
        }
        if relations[..i].contains(r) {
            return Err(Problem::invalid(format!("/relations/{i}"), format!("`{r}` is given twice")));
        }
    }
    Ok(relations.to_vec())
}

/// The definition of an application type whose objects belong to a tenant (it has
/// `relation tenant: platform/tenant`), or a 422 naming `field`.
pub(super) fn tenant_type<'s>(schema: &'s CompiledSchema, field: &str, name: &str) -> ApiResult<&'s arbiter_schema::Definition> {
    if name.starts_with("platform/") {
        return Err(Problem::invalid(field, format!("`{name}` is the platform's; only the application's own types are managed here")));
    }
    let Some((_, def)) = schema.definition_by_name(name) else {
        return Err(Problem::invalid(field, format!("the schema has no definition `{name}`")));
    };
    let Some(tenant_ty) = schema.type_id("platform/tenant") else {
        return Err(Problem::internal("read the platform schema", &"the stored schema lacks the platform part"));
    };
    let tenant_ok = def
        .relation_id("tenant")
        .and_then(|r| def.relation(r))
        .is_some_and(|r| r.allowed_subjects().iter().any(|a| a.type_id == tenant_ty && a.kind == AllowedKind::Object));
    if !tenant_ok {
        return Err(Problem::invalid(
            field,
            format!("`{name}` has no `relation tenant: platform/tenant`, so its objects cannot belong to a tenant"),
        ));
    }
    Ok(def)
}

/// Checks an entry against the schema: a 422 naming the field (and the relation) the
/// schema does not allow.
pub(super) fn check_against(
    schema: &CompiledSchema,
    resource_type: &str,
    subject: SubjectKind,
    relations: &[String],
    expires: bool,
) -> ApiResult<()> {
    let def = tenant_type(schema, "/resource_type", resource_type)?;
    let (Some(user_ty), Some((group_ty, group_def))) = (schema.type_id("platform/user"), schema.definition_by_name("platform/group")) else {
        return Err(Problem::internal("read the platform schema", &"the stored schema lacks the platform part"));
    };
    let member = group_def.relation_id("member");
    for (i, name) in relations.iter().enumerate() {
        let field = format!("/relations/{i}");
        let relation = def.relation_id(name).and_then(|r| def.relation(r));
        let Some(relation) = relation else {
            return Err(Problem::invalid(field, format!("`{resource_type}` has no relation `{name}`")));
        };
        if relation.is_permission() {
            return Err(Problem::invalid(field, format!("`{resource_type}#{name}` is a permission; grant a relation it is computed from")));
        }
        if name == "tenant" {
            return Err(Problem::invalid(field, "`tenant` places the object in a tenant; it is not granted"));
        }
        let fits = |expiration_needed: bool| {
            relation.allowed_subjects().iter().any(|a| {
                let kind_ok = match subject {
                    SubjectKind::User => a.type_id == user_ty && a.kind == AllowedKind::Object,
                    SubjectKind::Group => a.type_id == group_ty && member.is_some_and(|m| a.kind == AllowedKind::SubjectSet(m)),
                };
                kind_ok && (!expiration_needed || a.expiration)
            })
        };
        let wanted = match subject {
            SubjectKind::User => "platform/user",
            SubjectKind::Group => "platform/group#member",
        };
        if !fits(false) {
            return Err(Problem::invalid(field, format!("`{resource_type}#{name}` does not allow `{wanted}`")));
        }
        if expires && !fits(true) {
            return Err(Problem::invalid(field, format!("`{resource_type}#{name}` does not allow `{wanted} with expiration`: the entry cannot expire")));
        }
    }
    Ok(())
}

/// Claims the object for the tenant, or refuses one another tenant holds.
pub(super) async fn claim_object(tx: &mut Tx, tenant_id: Uuid, resource_type: &str, resource_id: &str) -> ApiResult<()> {
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT subject_id FROM relationships WHERE resource_type = $1 AND resource_id = $2 AND relation = 'tenant'
           AND subject_type = 'platform/tenant' LIMIT 2",
    )
    .bind(resource_type)
    .bind(resource_id)
    .fetch_all(tx.conn())
    .await?;
    let mine = tenant_id.to_string();
    if owners.iter().any(|o| *o != mine) {
        return Err(Problem::conflict("/resource_id", format!("`{resource_type}:{resource_id}` belongs to another tenant")));
    }
    if owners.is_empty() {
        tx.feed.touch(&format!("{resource_type}:{resource_id}"), "tenant", &feed::tenant(tenant_id));
    }
    Ok(())
}

/// Feeds (or, with `add` false, withdraws) the entry's relationships for `relations`.
fn feed_relations(tx: &mut Tx, e: &AclEntry, relations: &[String], add: bool) {
    let resource = format!("{}:{}", e.resource_type, e.resource_id);
    let subject = match e.subject_type.as_str() {
        "group" => SubjectKind::Group,
        _ => SubjectKind::User,
    }
    .subject(e.subject_id);
    for r in relations {
        if add {
            tx.feed.touch_until(&resource, r, &subject, e.expires_at);
        } else {
            tx.feed.delete(&resource, r, &subject);
        }
    }
}

async fn fetch(tx: &mut Tx, tenant_id: Uuid, entry_id: Uuid) -> ApiResult<AclEntry> {
    sqlx::query_as::<_, AclEntry>(&format!("SELECT {ENTRY_COLUMNS} FROM arbiter_admin.acl_entries WHERE id = $1 AND tenant_id = $2"))
        .bind(entry_id)
        .bind(tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Problem::not_found(format!("ACL entry `{entry_id}`")))
}

/// Appends the change to the entry's log, at the revision the transaction feeds.
async fn log(tx: &mut Tx, caller: &Caller, entry: Uuid, tenant_id: Uuid, change: &str, before: Option<&AclEntry>, after: Option<&AclEntry>) -> ApiResult<()> {
    let revision = tx.flush(&caller.actor()).await?;
    sqlx::query(
        "INSERT INTO arbiter_admin.acl_logs (id, tenant_id, entry_id, change_type, changed_by, before, after, revision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(entry)
    .bind(change)
    .bind(caller.actor())
    .bind(before.and_then(snapshot))
    .bind(after.and_then(snapshot))
    .bind(revision.map(|r| r as i64))
    .execute(tx.conn())
    .await?;
    Ok(())
}

fn check_expiry(expires_at: Option<DateTime<Utc>>) -> ApiResult<()> {
    match expires_at {
        Some(t) if t <= Utc::now() => Err(Problem::invalid("/expires_at", "is in the past: an entry must grant something when written")),
        _ => Ok(()),
    }
}

/// Grant a user or a group relations on an object.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/acl-entries", tag = "acl", request_body = CreateEntry,
    params(("tenant_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$")),
    responses((status = 201, body = AclEntry), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_entry(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P(tenant_id): P<Uuid>,
    body: JsonBody<CreateEntry>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let b = &body.value;
    if let Some(problem) = arbiter_schema::object_id_problem(&b.resource_id) {
        return Err(Problem::invalid("/resource_id", problem));
    }
    if !b.resource_type.split('/').all(arbiter_schema::is_valid_identifier) {
        return Err(Problem::invalid("/resource_type", format!("`{}` is not a type name", arbiter_schema::shorten(&b.resource_type))));
    }
    let relations = relation_set(&b.relations)?;
    check_expiry(b.expires_at)?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let path = format!("/v1/tenants/{tenant_id}/acl-entries");
    let idem = match Idempotency::begin(&mut tx, &caller, &headers, "POST", &path, &body.raw).await? {
        Idempotency::Replay(r) => return Ok(r),
        Idempotency::Proceed(claim) => claim,
    };
    let schema = crate::model::live_schema(&mut tx, "/resource_type").await?;
    check_against(&schema, &b.resource_type, b.subject_type, &relations, b.expires_at.is_some())?;
    b.subject_type.check_in_tenant(&mut tx, tenant_id, b.subject_id, "/subject_id").await?;
    claim_object(&mut tx, tenant_id, &b.resource_type, &b.resource_id).await?;
    let entry = sqlx::query_as::<_, AclEntry>(&format!(
        "INSERT INTO arbiter_admin.acl_entries (id, tenant_id, resource_type, resource_id, subject_type, subject_id, relations, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {ENTRY_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(&b.resource_type)
    .bind(&b.resource_id)
    .bind(b.subject_type.as_str())
    .bind(b.subject_id)
    .bind(&relations)
    .bind(b.expires_at)
    .bind(caller.actor())
    .fetch_one(tx.conn())
    .await?;
    feed_relations(&mut tx, &entry, &entry.relations, true);
    log(&mut tx, &caller, entry.id, tenant_id, "create", None, Some(&entry)).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "acl_entry.create",
        target_type: "acl_entry",
        target_id: entry.id.to_string(),
        before: None,
        after: snapshot(&entry),
    })
    .await?;
    idem.save(&mut tx, StatusCode::CREATED, &entry).await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::CREATED, &entry, Some(revision), Some(entry.version)))
}

/// List a tenant's ACL entries; filter by object (`resource_type`, `resource_id`) or
/// by subject (`subject_type`, `subject_id`).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/acl-entries", tag = "acl",
    params(("tenant_id" = Uuid, Path), PageParams, ("resource_type" = Option<String>, Query), ("resource_id" = Option<String>, Query),
        ("subject_type" = Option<SubjectKind>, Query), ("subject_id" = Option<Uuid>, Query)),
    responses((status = 200, body = PageOf<AclEntry>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_entries(State(app): State<App>, caller: Caller, P(tenant_id): P<Uuid>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &["resource_type", "resource_id", "subject_type", "subject_id"])?;
    let subject_type = match q.filter("subject_type") {
        None | Some("user" | "group") => q.filter("subject_type"),
        Some(other) => return Err(Problem::bad_request("subject_type", format!("`{}` is not `user` or `group`", arbiter_schema::shorten(other)))),
    };
    let subject_id = q
        .filter("subject_id")
        .map(|s| s.parse::<Uuid>().map_err(|_| Problem::bad_request("subject_id", "is not a UUID")))
        .transpose()?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, AclEntry>(&format!(
        "SELECT {ENTRY_COLUMNS} FROM arbiter_admin.acl_entries WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR resource_type = $3) AND ($4::text IS NULL OR resource_id = $4)
           AND ($5::text IS NULL OR subject_type = $5) AND ($6::uuid IS NULL OR subject_id = $6)
         ORDER BY id LIMIT $7"
    ))
    .bind(tenant_id)
    .bind(q.page.after)
    .bind(q.filter("resource_type"))
    .bind(q.filter("resource_id"))
    .bind(subject_type)
    .bind(subject_id)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |e| e.id), None, None))
}

/// Read an ACL entry.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/acl-entries/{entry_id}", tag = "acl", params(("tenant_id" = Uuid, Path), ("entry_id" = Uuid, Path)),
    responses((status = 200, body = AclEntry), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_entry(State(app): State<App>, caller: Caller, P((tenant_id, entry_id)): P<(Uuid, Uuid)>) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let entry = fetch(&mut tx, tenant_id, entry_id).await?;
    tx.tx.rollback().await?;
    Ok(reply(StatusCode::OK, &entry, None, Some(entry.version)))
}

/// Change an entry's relations or its end. `If-Match` guards against lost updates.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/acl-entries/{entry_id}", tag = "acl", request_body = UpdateEntry,
    params(("tenant_id" = Uuid, Path), ("entry_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = AclEntry), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_entry(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, entry_id)): P<(Uuid, Uuid)>,
    body: JsonBody<UpdateEntry>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let relations = body.value.relations.as_deref().map(relation_set).transpose()?;
    if let Some(expires_at) = body.value.expires_at {
        check_expiry(expires_at)?;
    }
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let schema = crate::model::live_schema(&mut tx, "/resource_type").await?;
    let before = fetch(&mut tx, tenant_id, entry_id).await?;
    check_if_match(&headers, before.version)?;
    let new_relations = relations.unwrap_or_else(|| before.relations.clone());
    let expires_at = body.value.expires_at.unwrap_or(before.expires_at);
    let subject = if before.subject_type == "group" { SubjectKind::Group } else { SubjectKind::User };
    check_against(&schema, &before.resource_type, subject, &new_relations, expires_at.is_some())?;
    let after = sqlx::query_as::<_, AclEntry>(&format!(
        "UPDATE arbiter_admin.acl_entries SET relations = $3, expires_at = $4, version = version + 1, updated_at = now()
         WHERE id = $1 AND tenant_id = $2 RETURNING {ENTRY_COLUMNS}"
    ))
    .bind(entry_id)
    .bind(tenant_id)
    .bind(&new_relations)
    .bind(expires_at)
    .fetch_one(tx.conn())
    .await?;
    let dropped: Vec<String> = before.relations.iter().filter(|r| !after.relations.contains(r)).cloned().collect();
    feed_relations(&mut tx, &before, &dropped, false);
    // Touch every kept relation: a new end replaces the old one.
    feed_relations(&mut tx, &after, &after.relations, true);
    log(&mut tx, &caller, entry_id, tenant_id, "update", Some(&before), Some(&after)).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "acl_entry.update",
        target_type: "acl_entry",
        target_id: entry_id.to_string(),
        before: snapshot(&before),
        after: snapshot(&after),
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(reply(StatusCode::OK, &after, Some(revision), Some(after.version)))
}

/// Delete an entry: its relationships go in the same revision.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/acl-entries/{entry_id}", tag = "acl",
    params(("tenant_id" = Uuid, Path), ("entry_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_entry(
    State(app): State<App>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    P((tenant_id, entry_id)): P<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage_users")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let before = fetch(&mut tx, tenant_id, entry_id).await?;
    check_if_match(&headers, before.version)?;
    feed_relations(&mut tx, &before, &before.relations, false);
    sqlx::query("DELETE FROM arbiter_admin.acl_entries WHERE id = $1 AND tenant_id = $2")
        .bind(entry_id)
        .bind(tenant_id)
        .execute(tx.conn())
        .await?;
    log(&mut tx, &caller, entry_id, tenant_id, "delete", Some(&before), None).await?;
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "acl_entry.delete",
        target_type: "acl_entry",
        target_id: entry_id.to_string(),
        before: snapshot(&before),
        after: None,
    })
    .await?;
    let revision = commit(&app, tx).await?;
    Ok(super::no_content(revision))
}

/// An entry's change log, oldest first (kept after the entry is deleted).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/acl-entries/{entry_id}/log", tag = "acl",
    params(("tenant_id" = Uuid, Path), ("entry_id" = Uuid, Path), PageParams),
    responses((status = 200, body = PageOf<AclLog>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn entry_log(
    State(app): State<App>,
    caller: Caller,
    P((tenant_id, entry_id)): P<(Uuid, Uuid)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref(), app.max_page_size, &[])?;
    app.authorize(&caller, Need::Tenant(tenant_id, "view")).await?;
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    let rows = sqlx::query_as::<_, AclLog>(
        "SELECT id, entry_id, change_type, changed_by, changed_at, before, after, revision FROM arbiter_admin.acl_logs
         WHERE tenant_id = $1 AND entry_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
    )
    .bind(tenant_id)
    .bind(entry_id)
    .bind(q.page.after)
    .bind(i64::from(q.page.limit) + 1)
    .fetch_all(tx.conn())
    .await?;
    tx.tx.rollback().await?;
    if rows.is_empty() && q.page.after.is_none() {
        return Err(Problem::not_found(format!("ACL entry `{entry_id}`")));
    }
    Ok(reply(StatusCode::OK, &PageOf::of(rows, q.page, |l| l.id), None, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"
definition platform/user {}
definition platform/tenant {}
definition platform/group {
    relation member: platform/user | platform/group#member
}
definition doc {
    relation tenant: platform/tenant
    relation viewer: platform/user | platform/group#member | platform/user with expiration
    relation owner: platform/user
    permission view = viewer + owner
}
definition loose {
    relation viewer: platform/user
}
use expiration
"#;

    fn schema() -> CompiledSchema {
        arbiter_schema::compile(SCHEMA).unwrap()
    }

    fn field(r: ApiResult<()>) -> String {
        r.unwrap_err().field.unwrap_or_default()
    }

    #[test]
    fn entries_the_schema_allows_pass() {
        let s = schema();
        check_against(&s, "doc", SubjectKind::User, &["owner".into(), "viewer".into()], false).unwrap();
        check_against(&s, "doc", SubjectKind::Group, &["viewer".into()], false).unwrap();
        check_against(&s, "doc", SubjectKind::User, &["viewer".into()], true).unwrap();
    }

    #[test]
    fn entries_the_schema_refuses_name_the_relation() {
        let s = schema();
        assert_eq!(field(check_against(&s, "doc", SubjectKind::Group, &["viewer".into(), "owner".into()], false)), "/relations/1");
        assert_eq!(field(check_against(&s, "doc", SubjectKind::User, &["view".into()], false)), "/relations/0");
        assert_eq!(field(check_against(&s, "doc", SubjectKind::User, &["nosuch".into()], false)), "/relations/0");
        assert_eq!(field(check_against(&s, "doc", SubjectKind::User, &["owner".into()], true)), "/relations/0");
        assert_eq!(field(check_against(&s, "doc", SubjectKind::User, &["tenant".into()], false)), "/relations/0");
        assert_eq!(field(check_against(&s, "loose", SubjectKind::User, &["viewer".into()], false)), "/resource_type");
        assert_eq!(field(check_against(&s, "nosuch", SubjectKind::User, &["viewer".into()], false)), "/resource_type");
        assert_eq!(field(check_against(&s, "platform/group", SubjectKind::User, &["member".into()], false)), "/resource_type");
    }
}
