//! Bulk provisioning: a tenant's users, groups (nested), memberships, role assignments and
//! ACL entries in one request, so that a tenant of 100k users does not take 100k
//! requests.
//!
//! The body is NDJSON (`application/x-ndjson`), one operation per line, read as it
//! streams in (bounded by `--max-bulk-size`, a line by [`MAX_LINE`]). Lines name what
//! they create with a `ref` that later lines use (or an existing row's UUID):
//!
//! ```text
//! {"op":"user","ref":"ann","email":"ann@acme.test","display_name":"Ann"}
//! {"op":"group","ref":"eng","name":"Engineering"}
//! {"op":"member","group":"eng","user":"ann"}
//! {"op":"member","group":"staff","group_member":"eng"}
//! {"op":"assignment","role_id":"<uuid>","group":"eng"}
//! {"op":"acl","resource_type":"doc","resource_id":"roadmap","subject_type":"group","subject":"eng","relations":["viewer"]}
//! ```
//!
//! Everything is validated before anything is written (shapes, references, duplicate
//! emails and names, roles, group cycles, relations against the live schema, objects of
//! other tenants); a problem names the line (`/<line index>/<field>`), and nothing
//! changes. Then one transaction copies the rows into temporary tables (`COPY`), inserts
//! them set-wise, and feeds the graph through `arbiter_write_bulk`: every relationship at
//! one revision, with one audit record for the whole request.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::acl::{check_against, relation_set, SubjectKind};
use super::{check_description, check_text, reply, P};
use crate::audit::{self, Entry};
use crate::auth::{Caller, Need};
use crate::db::{Scope, Tx};
use crate::feed;
use crate::http::{App, RequestContext};
use crate::problem::{ApiResult, Problem};

pub fn routes() -> Router<App> {
    Router::new().route("/v1/tenants/{tenant_id}/bulk", post(provision))
}

/// Longest line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// Most lines in one request.
pub const MAX_LINES: usize = 5_000_000;

/// How long one statement of a bulk write may run (the admin's others get 10 s).
const BULK_STATEMENT_TIMEOUT: &str = "300s";

/// One bulk write at a time in this process.
static WRITING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// One operation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// A person, made a member of the tenant.
    User {
        #[serde(rename = "ref")]
        key: String,
        email: String,
        #[serde(default)]
        display_name: String,
    },
    /// A group.
    Group {
        #[serde(rename = "ref")]
        key: String,
        name: String,
        #[serde(default)]
        description: String,
    },
    /// A user (`user`) or a group (`group_member`) in a group.
    Member { group: String, user: Option<String>, group_member: Option<String> },
    /// A role held by a user or a group.
    Assignment { role_id: Uuid, user: Option<String>, group: Option<String> },
    /// Relations on an application object granted to a user or a group.
    Acl { resource_type: String, resource_id: String, subject_type: SubjectKind, subject: String, relations: Vec<String> },
}

/// What a bulk request wrote.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Provisioned {
    pub users: u64,
    pub groups: u64,
    pub members: u64,
    pub assignments: u64,
    pub acl_entries: u64,
    /// Relationships fed to the graph.
    pub relationships: u64,
    /// The revision they reached the PDP at (also in `Arbiter-Revision`).
    pub revision: String,
}

fn at(i: usize, mut p: Problem) -> Problem {
    let field = p.field.take().unwrap_or_default();
    p.field = Some(match field.as_str() {
        "" => format!("/{i}"),
        f if f.starts_with('/') => format!("/{i}{f}"),
        f => format!("/{i}/{f}"),
    });
    p.detail = format!("line {}: {}", i + 1, p.detail);
    p
}

/// A reference: a `ref` of this request, or an existing row's UUID.
#[derive(Debug, Clone, Copy)]
enum Ref {
    New(usize),
    Existing(Uuid),
}

/// The request, parsed and checked line by line (references not yet resolved): each
/// operation with the index of its line in the body.
#[derive(Debug, Default)]
struct Parsed {
    lines: Vec<(usize, Line)>,
}

/// Reads the body as it streams in: NDJSON, each line parsed and checked on arrival.
async fn read_lines(body: Body, max_bytes: usize) -> ApiResult<Parsed> {
    use tokio_stream::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut parsed = Parsed::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut line_no = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_request("body", format!("the body could not be read: {e}")))?;
        total += chunk.len();
        if total > max_bytes {
            return Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {max_bytes} bytes (`--max-bulk-size`)")));
        }
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(n) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + n];
            parse_line(&mut parsed, line, &mut line_no)?;
            start += n + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            return Err(at(line_no, Problem::bad_request("", format!("the line is longer than {MAX_LINE} bytes"))));
        }
    }
    if !pending.is_empty() {
        let rest = std::mem::take(&mut pending);
        parse_line(&mut parsed, &rest, &mut line_no)?;
    }
    if parsed.lines.is_empty() {
        return Err(Problem::bad_request("body", "the body holds no operation (one JSON object per line)"));
    }
    Ok(parsed)
}

fn parse_line(parsed: &mut Parsed, raw: &[u8], line_no: &mut usize) -> ApiResult<()> {
    let i = *line_no;
    *line_no += 1;
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    if raw.len() > MAX_LINE {
        return Err(at(i, Problem::bad_request("", format!("the line is longer than {MAX_LINE} bytes"))));
    }
    if parsed.lines.len() >= MAX_LINES {
        return Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, format!("more than {MAX_LINES} operations in one request")));
    }
    let mut line: Line = super::parse_json(raw).map_err(|p| at(i, p))?;
    check_line(&mut line).map_err(|p| at(i, p))?;
    parsed.lines.push((i, line));
    Ok(())
}

fn check_key(field: &str, key: &str) -> ApiResult<()> {
    if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::invalid(field, format!("`{}` must be 1 to 200 visible ASCII characters", field.trim_start_matches('/'))));
    }
    Ok(())
}

/// The checks a line needs on its own (an email is kept normalized, as a single create
/// keeps it).
fn check_line(line: &mut Line) -> ApiResult<()> {
    match line {
        Line::User { key, email, display_name } => {
            check_key("/ref", key)?;
            *email = super::users::normalize_email(email)?;
            check_text("display_name", display_name, 200, true)
        }
        Line::Group { key, name, description } => {
            check_key("/ref", key)?;
            check_text("name", name, 200, false)?;
            check_description("description", description, 2000)
        }
        Line::Member { group, user, group_member } => {
            check_key("/group", group)?;
            match (user, group_member) {
                (Some(u), None) => check_key("/user", u),
                (None, Some(g)) => check_key("/group_member", g),
                _ => Err(Problem::invalid("/user", "give exactly one of `user` and `group_member`")),
            }
        }
        Line::Assignment { user, group, .. } => match (user, group) {
            (Some(u), None) => check_key("/user", u),
            (None, Some(g)) => check_key("/group", g),
            _ => Err(Problem::invalid("/user", "give exactly one of `user` and `group`")),
        },
        Line::Acl { resource_type, resource_id, subject, relations, .. } => {
            if let Some(problem) = arbiter_schema::object_id_problem(resource_id) {
                return Err(Problem::invalid("/resource_id", problem));
            }
            if resource_type.len() > 128 || !resource_type.split('/').all(arbiter_schema::is_valid_identifier) {
                return Err(Problem::invalid("/resource_type", format!("`{}` is not a type name", arbiter_schema::shorten(resource_type))));
            }
            check_key("/subject", subject)?;
            relation_set(relations).map(|_| ())
        }
    }
}

/// A membership to write: a user or a group in a group.
#[derive(Debug)]
struct NewMember {
    group: Uuid,
    user: Option<Uuid>,
    member_group: Option<Uuid>,
}

/// A role assignment to write (`builtin`: the built-in role's tenant relation).
#[derive(Debug)]
struct NewAssignment {
    role: Uuid,
    builtin: Option<String>,
    user: Option<Uuid>,
    group: Option<Uuid>,
}

/// An ACL entry to write (`ty` indexes [`Plan::acl_types`]).
#[derive(Debug)]
struct NewAcl {
    ty: usize,
    object: String,
    kind: SubjectKind,
    who: Uuid,
    relations: Vec<String>,
}

/// Rows to write, every reference resolved to an id.
#[derive(Debug, Default)]
struct Plan {
    /// (id, email, display name)
    users: Vec<(Uuid, String, String)>,
    /// (id, name, description)
    groups: Vec<(Uuid, String, String)>,
    members: Vec<NewMember>,
    assignments: Vec<NewAssignment>,
    acl: Vec<NewAcl>,
    acl_types: Vec<String>,
}

/// Provision a tenant's users, groups, memberships, role assignments and ACL entries from
/// one NDJSON body (`manage`), all or nothing, at one revision.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/bulk", tag = "bulk", params(("tenant_id" = Uuid, Path)),
    request_body(content = String, description = "One operation per line: `user`, `group`, `member`, `assignment`, `acl` (see the description above)",
        content_type = "application/x-ndjson"),
    responses((status = 200, body = Provisioned), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn provision(State(app): State<App>, caller: Caller, ctx: RequestContext, headers: HeaderMap, P(tenant_id): P<Uuid>, body: Body) -> ApiResult<Response> {
    app.authorize(&caller, Need::Tenant(tenant_id, "manage")).await?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/x-ndjson" || v == "application/jsonl" || v == "application/json-seq");
    if !ndjson {
        return Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be NDJSON (`Content-Type: application/x-ndjson`)").with_field("Content-Type"));
    }
    let started = std::time::Instant::now();
    let parsed = read_lines(body, app.max_bulk_size).await?;
    let read = started.elapsed();
    let mut tx = app.db.begin(Scope::Tenant(tenant_id)).await?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)").bind(BULK_STATEMENT_TIMEOUT).execute(tx.conn()).await?;
    let plan = resolve(&mut tx, tenant_id, &parsed.lines).await?;
    let resolved = started.elapsed();
    // Bulk writes take turns: each sorts millions of rows in Postgres' memory
    // (`arbiter_write_bulk`'s work_mem), and all of them wait for the revision
    // counter's lock in the end anyway.
    let _turn = WRITING.acquire().await.map_err(|e| Problem::internal("wait for the bulk write's turn", &e))?;
    let counts = write(&mut tx, tenant_id, &caller, plan).await?;
    tracing::info!(
        lines = parsed.lines.len(),
        read_ms = read.as_millis() as u64,
        validated_ms = (resolved - read).as_millis() as u64,
        written_ms = (started.elapsed() - resolved).as_millis() as u64,
        "bulk provisioning"
    );
    audit::record(&mut tx, &caller, &ctx, Entry {
        tenant: Some(tenant_id),
        action: "bulk.provision",
        target_type: "tenant",
        target_id: tenant_id.to_string(),
        before: None,
        after: serde_json::to_value(&counts).ok(),
    })
    .await?;
    let revision = super::commit(&app, tx).await?;
    let body = Provisioned { revision: crate::token(revision), ..counts };
    Ok(reply(StatusCode::OK, &body, Some(revision), None))
}

/// Resolves references and checks the request as a whole against the tenant's rows
/// and the live schema.
async fn resolve(tx: &mut Tx, tenant_id: Uuid, lines: &[(usize, Line)]) -> ApiResult<Plan> {
    let mut plan = Plan::default();
    let mut user_refs: HashMap<&str, usize> = HashMap::new();
    let mut group_refs: HashMap<&str, usize> = HashMap::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut user_ids: Vec<Uuid> = Vec::new();
    let mut group_ids: Vec<Uuid> = Vec::new();
    for (i, line) in lines.iter().map(|(i, l)| (*i, l)) {
        match line {
            Line::User { key, email, display_name } => {
                if user_refs.insert(key, plan.users.len()).is_some() {
                    return Err(at(i, Problem::invalid("/ref", format!("user ref `{key}` is defined twice"))));
                }
                if let Some(first) = emails.insert(email.clone(), i) {
                    return Err(at(i, Problem::conflict("/email", format!("`{email}` is given on line {} too", first + 1))));
                }
                let id = Uuid::now_v7();
                user_ids.push(id);
                plan.users.push((id, email.clone(), display_name.clone()));
            }
            Line::Group { key, name, description } => {
                if group_refs.insert(key, plan.groups.len()).is_some() {
                    return Err(at(i, Problem::invalid("/ref", format!("group ref `{key}` is defined twice"))));
                }
                if let Some(first) = names.insert(name, i) {
                    return Err(at(i, Problem::conflict("/name", format!("group `{name}` is given on line {} too", first + 1))));
                }
                let id = Uuid::now_v7();
                group_ids.push(id);
                plan.groups.push((id, name.clone(), description.clone()));
            }
            _ => {}
        }
    }
    // Existing rows a line names by UUID, and what already takes an email or a name.
    let mut named_users: HashSet<Uuid> = HashSet::new();
    let mut named_groups: HashSet<Uuid> = HashSet::new();
    let mut roles: HashSet<Uuid> = HashSet::new();
    let existing = |refs: &HashMap<&str, usize>, key: &str| -> Option<Ref> {
        refs.get(key).map(|n| Ref::New(*n)).or_else(|| key.parse::<Uuid>().ok().map(Ref::Existing))
    };
    for (_, line) in lines {
        let note = |r: Option<Ref>, set: &mut HashSet<Uuid>| {
            if let Some(Ref::Existing(id)) = r {
                set.insert(id);
            }
        };
        match line {
            Line::Member { group, user, group_member } => {
                note(existing(&group_refs, group), &mut named_groups);
                if let Some(u) = user {
                    note(existing(&user_refs, u), &mut named_users);
                }
                if let Some(g) = group_member {
                    note(existing(&group_refs, g), &mut named_groups);
                }
            }
            Line::Assignment { role_id, user, group } => {
                roles.insert(*role_id);
                if let Some(u) = user {
                    note(existing(&user_refs, u), &mut named_users);
                }
                if let Some(g) = group {
                    note(existing(&group_refs, g), &mut named_groups);
                }
            }
            Line::Acl { subject_type, subject, .. } => match subject_type {
                SubjectKind::User => note(existing(&user_refs, subject), &mut named_users),
                SubjectKind::Group => note(existing(&group_refs, subject), &mut named_groups),
            },
            _ => {}
        }
    }
    let found_users: HashSet<Uuid> =
        sqlx::query_scalar::<_, Uuid>("SELECT user_id FROM arbiter_admin.tenant_users WHERE tenant_id = $1 AND user_id = ANY($2)")
            .bind(tenant_id)
            .bind(named_users.iter().copied().collect::<Vec<_>>())
            .fetch_all(tx.conn())
            .await?
            .into_iter()
            .collect();
    let found_groups: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>("SELECT id FROM arbiter_admin.groups WHERE tenant_id = $1 AND id = ANY($2)")
        .bind(tenant_id)
        .bind(named_groups.iter().copied().collect::<Vec<_>>())
        .fetch_all(tx.conn())
        .await?
        .into_iter()
        .collect();
    let found_roles: HashMap<Uuid, Option<String>> = sqlx::query_as::<_, (Uuid, Option<String>)>(
        "SELECT id, builtin FROM arbiter_admin.roles WHERE id = ANY($1) AND (tenant_id = $2 OR tenant_id IS NULL)",
    )
    .bind(roles.iter().copied().collect::<Vec<_>>())
    .bind(tenant_id)
    .fetch_all(tx.conn())
    .await?
    .into_iter()
    .collect();
    let taken_emails: Vec<String> = sqlx::query_scalar("SELECT email FROM arbiter_admin.users WHERE email = ANY($1)")
        .bind(emails.keys().cloned().collect::<Vec<_>>())
        .fetch_all(tx.conn())
        .await?;
    if let Some(e) = taken_emails.first() {
        return Err(at(emails[e], Problem::conflict("/email", format!("`{e}` is already taken"))));
    }
    let taken_names: Vec<String> = sqlx::query_scalar("SELECT name FROM arbiter_admin.groups WHERE tenant_id = $1 AND name = ANY($2)")
        .bind(tenant_id)
        .bind(names.keys().map(|n| n.to_string()).collect::<Vec<_>>())
        .fetch_all(tx.conn())
        .await?;
    if let Some(n) = taken_names.first() {
        return Err(at(names[n.as_str()], Problem::conflict("/name", format!("group `{n}` already exists in this tenant"))));
    }
    let user_of = |i: usize, field: &str, key: &str| -> ApiResult<Uuid> {
        match existing(&user_refs, key) {
            Some(Ref::New(n)) => Ok(user_ids[n]),
            Some(Ref::Existing(id)) if found_users.contains(&id) => Ok(id),
            _ => Err(at(i, Problem::invalid(field, format!("`{}` is neither a user ref of this request nor a user of this tenant", arbiter_schema::shorten(key))))),
        }
    };
    let group_of = |i: usize, field: &str, key: &str| -> ApiResult<Uuid> {
        match existing(&group_refs, key) {
            Some(Ref::New(n)) => Ok(group_ids[n]),
            Some(Ref::Existing(id)) if found_groups.contains(&id) => Ok(id),
            _ => Err(at(i, Problem::invalid(field, format!("`{}` is neither a group ref of this request nor a group of this tenant", arbiter_schema::shorten(key))))),
        }
    };
    let mut edges: Vec<(Uuid, Uuid, usize)> = Vec::new();
    let mut schema = None;
    let mut checked: HashSet<(String, SubjectKind, Vec<String>)> = HashSet::new();
    let mut types: HashMap<String, usize> = HashMap::new();
    let mut objects: HashSet<(usize, &str, Uuid, SubjectKind)> = HashSet::new();
    for (i, line) in lines.iter().map(|(i, l)| (*i, l)) {
        match line {
            Line::Member { group, user, group_member } => {
                let g = group_of(i, "/group", group)?;
                let (u, m) = match (user, group_member) {
                    (Some(u), _) => (Some(user_of(i, "/user", u)?), None),
                    (_, Some(h)) => (None, Some(group_of(i, "/group_member", h)?)),
                    _ => (None, None),
                };
                if m == Some(g) {
                    return Err(at(i, Problem::invalid("/group_member", "a group cannot be its own member")));
                }
                if let Some(m) = m {
                    edges.push((g, m, i));
                }
                plan.members.push(NewMember { group: g, user: u, member_group: m });
            }
            Line::Assignment { role_id, user, group } => {
                let Some(builtin) = found_roles.get(role_id) else {
                    return Err(at(i, Problem::invalid("/role_id", format!("role `{role_id}` is not usable in this tenant"))));
                };
                let (u, g) = match (user, group) {
                    (Some(u), _) => (Some(user_of(i, "/user", u)?), None),
                    (_, Some(g)) => (None, Some(group_of(i, "/group", g)?)),
                    _ => (None, None),
                };
                plan.assignments.push(NewAssignment { role: *role_id, builtin: builtin.clone(), user: u, group: g });
            }
            Line::Acl { resource_type, resource_id, subject_type, subject, relations } => {
                if schema.is_none() {
                    schema = Some(crate::model::live_schema(tx, &format!("/{i}/resource_type")).await?);
                }
                let Some(s) = schema.as_ref() else { continue };
                let key = (resource_type.clone(), *subject_type, relations.clone());
                if !checked.contains(&key) {
                    check_against(s, resource_type, *subject_type, relations, false).map_err(|p| at(i, p))?;
                    checked.insert(key);
                }
                let who = match subject_type {
                    SubjectKind::User => user_of(i, "/subject", subject)?,
                    SubjectKind::Group => group_of(i, "/subject", subject)?,
                };
                let n = types.len();
                let t = *types.entry(resource_type.clone()).or_insert(n);
                if !objects.insert((t, resource_id.as_str(), who, *subject_type)) {
                    return Err(at(i, Problem::conflict("/subject", "this subject is given on this object twice; one entry holds all its relations")));
                }
                plan.acl.push(NewAcl { ty: t, object: resource_id.clone(), kind: *subject_type, who, relations: relations.clone() });
            }
            _ => {}
        }
    }
    check_no_cycle(tx, tenant_id, &edges).await?;
    let mut acl_types = vec![String::new(); types.len()];
    for (name, n) in types {
        acl_types[n] = name;
    }
    plan.acl_types = acl_types;
    Ok(plan)
}

/// Nested groups must not form a cycle, with the tenant's existing nesting.
async fn check_no_cycle(tx: &mut Tx, tenant_id: Uuid, new: &[(Uuid, Uuid, usize)]) -> ApiResult<()> {
    if new.is_empty() {
        return Ok(());
    }
    tx.lock_nesting("groups", tenant_id).await?;
    let old: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT group_id, member_group_id FROM arbiter_admin.group_members WHERE tenant_id = $1 AND member_group_id IS NOT NULL")
            .bind(tenant_id)
            .fetch_all(tx.conn())
            .await?;
    let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut indegree: HashMap<Uuid, usize> = HashMap::new();
    for (g, m) in old.iter().copied().chain(new.iter().map(|(g, m, _)| (*g, *m))) {
        out.entry(g).or_default().push(m);
        *indegree.entry(m).or_default() += 1;
        indegree.entry(g).or_default();
    }
    // Kahn: what remains after peeling every group nobody contains is on a cycle.
    let mut ready: Vec<Uuid> = indegree.iter().filter(|(_, d)| **d == 0).map(|(g, _)| *g).collect();
    while let Some(g) = ready.pop() {
        for m in out.get(&g).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(m) {
                *d -= 1;
                if *d == 0 {
                    ready.push(*m);
                }
            }
        }
        indegree.remove(&g);
    }
    if let Some((_, _, i)) = new.iter().find(|(g, m, _)| indegree.contains_key(g) && indegree.contains_key(m)) {
        return Err(at(*i, Problem::invalid("/group_member", "this nesting makes a cycle of groups")));
    }
    Ok(())
}

/// COPY text format: a field escaped, or `\N` for none.
fn field(out: &mut Vec<u8>, v: Option<&str>) {
    let Some(v) = v else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn row(out: &mut Vec<u8>, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        field(out, *f);
    }
    out.push(b'\n');
}

/// A text array literal for COPY (`{"a","b"}`), its elements quoted.
fn array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", quoted.join(","))
}

async fn copy(tx: &mut Tx, table: &str, data: Vec<u8>) -> ApiResult<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut copy = tx.conn().copy_in_raw(&format!("COPY {table} FROM STDIN")).await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    Ok(())
}

/// The relationships `plan` (its ACL entries `acl`) implies for tenant `t`, as COPY rows
/// of `arbiter_bulk_changes` in the relationships' key order (byte order, as the
/// database's C collation sorts), each once; and how many.
fn changes(plan: &Plan, acl: &[NewAcl], tenant_id: Uuid) -> (Vec<u8>, usize) {
    let t = &tenant_id.to_string();
    type Row<'a> = [Cow<'a, str>; 6];
    let b = Cow::Borrowed;
    let id = |u: Uuid| Cow::Owned(u.to_string());
    // A membership's or an assignment's subject, as an ACL entry's would be.
    let subject = |user: Option<Uuid>, group: Option<Uuid>| {
        let (kind, who) = match (user, group) {
            (Some(u), _) => (SubjectKind::User, u),
            (None, Some(g)) => (SubjectKind::Group, g),
            (None, None) => return None,
        };
        Some((b(kind.object_type()), id(who), b(kind.subject_relation())))
    };
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(
        plan.users.len() + plan.groups.len() + plan.members.len() + plan.assignments.len() + acl.iter().map(|e| 1 + e.relations.len()).sum::<usize>(),
    );
    for (u, _, _) in &plan.users {
        rows.push([b("platform/tenant"), b(t), b("member"), b("platform/user"), id(*u), b("")]);
    }
    for (g, _, _) in &plan.groups {
        rows.push([b("platform/group"), id(*g), b("tenant"), b("platform/tenant"), b(t), b("")]);
    }
    for m in &plan.members {
        if let Some((ty, who, rel)) = subject(m.user, m.member_group) {
            rows.push([b("platform/group"), id(m.group), b("member"), ty, who, rel]);
        }
    }
    for a in &plan.assignments {
        let Some((ty, who, rel)) = subject(a.user, a.group) else { continue };
        rows.push(match &a.builtin {
            Some(relation) => [b("platform/tenant"), b(t), b(relation.as_str()), ty, who, rel],
            None => [b("platform/role"), Cow::Owned(feed::role_id(tenant_id, a.role)), b("holder"), ty, who, rel],
        });
    }
    for e in acl {
        let ty = plan.acl_types[e.ty].as_str();
        // Claimed for the tenant (a claim it holds already is touched again).
        rows.push([b(ty), b(e.object.as_str()), b("tenant"), b("platform/tenant"), b(t), b("")]);
        for relation in &e.relations {
            rows.push([b(ty), b(e.object.as_str()), b(relation.as_str()), b(e.kind.object_type()), id(e.who), b(e.kind.subject_relation())]);
        }
    }
    rows.sort_unstable();
    rows.dedup();
    let mut data = Vec::with_capacity(rows.len() * 96);
    for r in &rows {
        row(&mut data, &r.each_ref().map(|f| Some(f.as_ref())));
    }
    (data, rows.len())
}

/// Writes the plan set-wise and feeds the graph at one revision.
async fn write(tx: &mut Tx, tenant_id: Uuid, caller: &Caller, mut plan: Plan) -> ApiResult<Provisioned> {
    let actor = caller.actor();
    let t = tenant_id.to_string();
    for table in [
        "bulk_users (id uuid, email text, display_name text)",
        "bulk_groups (id uuid, name text, description text)",
        "bulk_members (id uuid, group_id uuid, user_id uuid, member_group_id uuid)",
        "bulk_assignments (id uuid, role_id uuid, builtin text, user_id uuid, group_id uuid)",
        "bulk_acl (id uuid, log_id uuid, resource_type text, resource_id text, subject_type text, subject_id uuid, relations text[])",
        "arbiter_bulk_changes (resource_type text, resource_id text, relation text, subject_type text, subject_id text, subject_relation text)",
    ] {
        sqlx::query(&format!("CREATE TEMP TABLE {table} ON COMMIT DROP")).execute(tx.conn()).await?;
    }
    let mut counts = Provisioned::default();
    let mut data = Vec::new();
    for (id, email, name) in &plan.users {
        row(&mut data, &[Some(&id.to_string()), Some(email), Some(name)]);
    }
    copy(tx, "bulk_users", std::mem::take(&mut data)).await?;
    for (id, name, description) in &plan.groups {
        row(&mut data, &[Some(&id.to_string()), Some(name), Some(description)]);
    }
    copy(tx, "bulk_groups", std::mem::take(&mut data)).await?;
    let text = |id: Option<Uuid>| id.map(|i| i.to_string());
    for m in &plan.members {
        row(&mut data, &[Some(&Uuid::now_v7().to_string()), Some(&m.group.to_string()), text(m.user).as_deref(), text(m.member_group).as_deref()]);
    }
    copy(tx, "bulk_members", std::mem::take(&mut data)).await?;
    for a in &plan.assignments {
        let id = Uuid::now_v7().to_string();
        row(&mut data, &[Some(&id), Some(&a.role.to_string()), a.builtin.as_deref(), text(a.user).as_deref(), text(a.group).as_deref()]);
    }
    copy(tx, "bulk_assignments", std::mem::take(&mut data)).await?;
    // In the order of the entries' unique key, with ids that grow (time-ordered): both
    // indexes of the entries, and the log's, then take them at their right edge rather
    // than at a random page each.
    let mut acl = std::mem::take(&mut plan.acl);
    acl.sort_unstable_by(|a, b| {
        (&plan.acl_types[a.ty], &a.object, a.kind.as_str(), a.who).cmp(&(&plan.acl_types[b.ty], &b.object, b.kind.as_str(), b.who))
    });
    for e in &acl {
        let (id, log_id) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        let who = e.who.to_string();
        row(&mut data, &[Some(&id), Some(&log_id), Some(&plan.acl_types[e.ty]), Some(&e.object), Some(e.kind.as_str()), Some(&who), Some(&array(&e.relations))]);
    }
    let any_acl = !acl.is_empty();
    copy(tx, "bulk_acl", std::mem::take(&mut data)).await?;

    // An object of another tenant is refused (the whole request).
    if any_acl {
        let theirs: Option<(String, String)> = sqlx::query_as(
            "SELECT a.resource_type, a.resource_id FROM bulk_acl a JOIN relationships r
               ON r.resource_type = a.resource_type AND r.resource_id = a.resource_id AND r.relation = 'tenant'
              AND r.subject_type = 'platform/tenant' AND r.subject_relation = '' AND r.subject_id <> $1 LIMIT 1",
        )
        .bind(&t)
        .fetch_optional(tx.conn())
        .await?;
        if let Some((ty, id)) = theirs {
            return Err(Problem::conflict("/resource_id", format!("`{ty}:{id}` belongs to another tenant")));
        }
    }

    // The rows, set-wise.
    counts.users = sqlx::query("INSERT INTO arbiter_admin.users (id, email, display_name) SELECT id, email, display_name FROM bulk_users")
        .execute(tx.conn())
        .await?
        .rows_affected();
    sqlx::query("INSERT INTO arbiter_admin.tenant_users (tenant_id, user_id) SELECT $1, id FROM bulk_users").bind(tenant_id).execute(tx.conn()).await?;
    counts.groups = sqlx::query("INSERT INTO arbiter_admin.groups (id, tenant_id, name, description) SELECT id, $1, name, description FROM bulk_groups")
        .bind(tenant_id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    counts.members = sqlx::query(
        "INSERT INTO arbiter_admin.group_members (id, tenant_id, group_id, user_id, member_group_id, added_by)
         SELECT id, $1, group_id, user_id, member_group_id, $2 FROM bulk_members ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&actor)
    .execute(tx.conn())
    .await?
    .rows_affected();
    counts.assignments = sqlx::query(
        "INSERT INTO arbiter_admin.role_assignments (id, tenant_id, role_id, user_id, group_id, assigned_by)
         SELECT id, $1, role_id, user_id, group_id, $2 FROM bulk_assignments ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&actor)
    .execute(tx.conn())
    .await?
    .rows_affected();
    counts.acl_entries = sqlx::query(
        "INSERT INTO arbiter_admin.acl_entries (id, tenant_id, resource_type, resource_id, subject_type, subject_id, relations, created_by)
         SELECT id, $1, resource_type, resource_id, subject_type, subject_id, relations, $2 FROM bulk_acl",
    )
    .bind(tenant_id)
    .bind(&actor)
    .execute(tx.conn())
    .await?
    .rows_affected();

    // What they feed: the relationships the single-row endpoints write, sorted here in
    // their key order and without repeats (Postgres would spend longer sorting them).
    let (changes, n) = changes(&plan, &acl, tenant_id);
    drop(acl);
    counts.relationships = n as u64;
    copy(tx, "arbiter_bulk_changes", changes).await?;
    let metadata = serde_json::json!({ "writer": "arbiter-admin", "actor": actor, "bulk": true });
    let v: i64 = sqlx::query_scalar("SELECT arbiter_write_bulk($1, sorted => true)").bind(metadata).fetch_one(tx.conn()).await?;
    tx.verify_schema().await?;
    let revision = u64::try_from(v).unwrap_or(0);
    tx.revision = Some(revision);
    // Each ACL entry's change log starts with its creation, at that revision.
    sqlx::query(
        "INSERT INTO arbiter_admin.acl_logs (id, tenant_id, entry_id, change_type, changed_by, after, revision)
         SELECT log_id, $1, id, 'create', $2,
                jsonb_build_object('resource_type', resource_type, 'resource_id', resource_id, 'subject_type', subject_type,
                                   'subject_id', subject_id, 'relations', to_jsonb(relations)), $3
         FROM bulk_acl",
    )
    .bind(tenant_id)
    .bind(&actor)
    .bind(v)
    .execute(tx.conn())
    .await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_are_escaped() {
        let mut out = Vec::new();
        row(&mut out, &[Some("a\tb"), None, Some("back\\slash\nnew")]);
        assert_eq!(String::from_utf8(out).unwrap(), "a\\tb\t\\N\tback\\\\slash\\nnew\n");
        assert_eq!(array(&["viewer".into(), "a\"b".into()]), "{\"viewer\",\"a\\\"b\"}");
    }

    #[test]
    fn lines_name_their_problem() {
        let mut parsed = Parsed::default();
        let mut n = 0;
        parse_line(&mut parsed, br#"{"op":"user","ref":"a","email":"a@x.test"}"#, &mut n).unwrap();
        let e = parse_line(&mut parsed, br#"{"op":"user","ref":"b","email":"nope"}"#, &mut n).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("/1/email"));
        let e = parse_line(&mut parsed, br#"{"op":"launch"}"#, &mut n).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("/2/op"));
        let e = parse_line(&mut parsed, br#"{"op":"member","group":"g"}"#, &mut n).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("/3/user"));
    }
}
