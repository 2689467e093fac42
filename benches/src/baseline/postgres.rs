//! The relational baseline: the design a team builds by hand for this model in
//! Postgres, without a relationship store.
//!
//! Tables (integer keys: `user:u7` is `7`, `tenant:org3` is `3`):
//!
//! - `tenant_roles(tenant, usr, role)`, role `admin` or `member`;
//! - `team_members(team, member_user, member_team)`, one of the two members set
//!   (`team:P#member@team:C#member` is `(P, NULL, C)`);
//! - `team_maintainers(team, usr)`;
//! - `folders(id, parent, tenant)` (the generator gives a folder one parent at most, and
//!   only root folders a tenant);
//! - `documents(id, folder)` (one folder at most);
//! - `acl(resource_type, resource_id, role, usr, team, tenant, public)`: the owner,
//!   editor and viewer grants of folders and documents, to a user, to a team's members,
//!   to a tenant's members or to everyone (`user:*`);
//! - `bans(document, usr)`.
//!
//! Each table has the primary key or index its lookups need: upward from a user to its
//! teams and from a team to its parent teams, a folder's parent and tenant by id, a
//! resource's grants by `(resource_type, resource_id, role)` covering the subject columns
//! (index-only scans), a user's tenant roles, bans by `(document, usr)`. Indexes are
//! built after the bulk load, then the database is vacuumed and analysed. There are no
//! foreign keys (they would slow the load and do not serve the reads). JIT is off for
//! the database, as for any database serving short lookups.
//!
//! A check is one statement: a recursive CTE for the user's teams (nested teams upward
//! from the user), one for the folder chain (upward from the resource), then `EXISTS`
//! over the grants. A batch is one statement over `unnest(...) WITH ORDINALITY`, the same
//! two recursive CTEs computed for every pair at once (keyed by the pair's ordinal), and
//! a `CASE` on the query kind.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};

use super::{Dataset, Query, QueryKind};

// ---------------------------------------------------------------------------------------
// Relationship lines, parsed into the facts both baselines store (also used by `cedar`).
// ---------------------------------------------------------------------------------------

/// A grant's relation on a folder or document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Owner,
    Editor,
    Viewer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }
}

/// Who a grant is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    User(u32),
    /// `team:T#member`
    TeamMembers(u32),
    /// `tenant:K#member`
    TenantMembers(u32),
    /// `user:*`
    AllUsers,
}

/// A folder or a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resource {
    Folder(u32),
    Document(u32),
}

/// One relationship line of `schema.zed`'s model, ids as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fact {
    TenantMember {
        tenant: u32,
        user: u32,
    },
    TenantAdmin {
        tenant: u32,
        user: u32,
    },
    TeamMaintainer {
        team: u32,
        user: u32,
    },
    TeamMemberUser {
        team: u32,
        user: u32,
    },
    /// `team:{team}#member@team:{child}#member`
    TeamMemberTeam {
        team: u32,
        child: u32,
    },
    FolderTenant {
        folder: u32,
        tenant: u32,
    },
    FolderParent {
        folder: u32,
        parent: u32,
    },
    DocumentFolder {
        document: u32,
        folder: u32,
    },
    Grant {
        resource: Resource,
        role: Role,
        subject: Subject,
    },
    Banned {
        document: u32,
        user: u32,
    },
}

/// The number in an object id of the generator (`u12` with prefix `u` is 12).
pub(super) fn id_number(id: &str, prefix: &str, what: &str) -> Result<u32> {
    id.strip_prefix(prefix)
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|&n| n <= i32::MAX as u32)
        .ok_or_else(|| anyhow!("{what} id `{id}` is not `{prefix}<number>`"))
}

/// Parses one `resource:id#relation@subject:id[#relation]` line into the fact it states;
/// lines `schema.zed` does not allow are errors.
pub(super) fn parse_fact(line: &str) -> Result<Fact> {
    let (resource, subject) = line
        .split_once('@')
        .ok_or_else(|| anyhow!("`{line}` has no `@`"))?;
    let (object, relation) = resource
        .split_once('#')
        .ok_or_else(|| anyhow!("`{line}` has no `#relation`"))?;
    let (rtype, rid) = object
        .split_once(':')
        .ok_or_else(|| anyhow!("`{line}`: the resource is not `type:id`"))?;
    let (subject, srel) = match subject.split_once('#') {
        Some((s, r)) => (s, Some(r)),
        None => (subject, None),
    };
    let (stype, sid) = subject
        .split_once(':')
        .ok_or_else(|| anyhow!("`{line}`: the subject is not `type:id`"))?;
    let user = || id_number(sid, "u", "user");
    let team = || id_number(sid, "t", "team");
    let tenant = || id_number(sid, "org", "tenant");
    let folder = || id_number(sid, "f", "folder");
    let grant_subject = |allowed: &[&str]| -> Result<Subject> {
        let (kind, s) = match (stype, sid, srel) {
            ("user", "*", None) => ("user:*", Subject::AllUsers),
            ("user", _, None) => ("user", Subject::User(user()?)),
            ("team", _, Some("member")) => ("team#member", Subject::TeamMembers(team()?)),
            ("tenant", _, Some("member")) => ("tenant#member", Subject::TenantMembers(tenant()?)),
            _ => bail!("`{line}`: the subject is not a user, user:*, team#member or tenant#member"),
        };
        if !allowed.contains(&kind) {
            bail!("`{line}`: schema.zed does not allow a {kind} subject on {rtype}#{relation}");
        }
        Ok(s)
    };
    let fact = match (rtype, relation) {
        ("tenant", "member" | "admin") => {
            grant_subject(&["user"])?;
            let (tenant, user) = (id_number(rid, "org", "tenant")?, user()?);
            if relation == "admin" {
                Fact::TenantAdmin { tenant, user }
            } else {
                Fact::TenantMember { tenant, user }
            }
        }
        ("team", "maintainer") => {
            grant_subject(&["user"])?;
            Fact::TeamMaintainer {
                team: id_number(rid, "t", "team")?,
                user: user()?,
            }
        }
        ("team", "member") => {
            let t = id_number(rid, "t", "team")?;
            match grant_subject(&["user", "team#member"])? {
                Subject::User(user) => Fact::TeamMemberUser { team: t, user },
                Subject::TeamMembers(child) => Fact::TeamMemberTeam { team: t, child },
                _ => bail!("`{line}`: unexpected team member"),
            }
        }
        ("folder", "tenant") | ("folder", "parent") | ("document", "folder") => {
            if srel.is_some() {
                bail!("`{line}`: {rtype}#{relation} takes an object, not a subject set");
            }
            match (rtype, relation, stype) {
                ("folder", "tenant", "tenant") => Fact::FolderTenant {
                    folder: id_number(rid, "f", "folder")?,
                    tenant: tenant()?,
                },
                ("folder", "parent", "folder") => Fact::FolderParent {
                    folder: id_number(rid, "f", "folder")?,
                    parent: folder()?,
                },
                ("document", "folder", "folder") => Fact::DocumentFolder {
                    document: id_number(rid, "d", "document")?,
                    folder: folder()?,
                },
                _ => bail!("`{line}`: schema.zed does not allow a {stype} on {rtype}#{relation}"),
            }
        }
        ("folder", "owner" | "editor" | "viewer") | ("document", "owner" | "editor" | "viewer") => {
            let resource = if rtype == "folder" {
                Resource::Folder(id_number(rid, "f", "folder")?)
            } else {
                Resource::Document(id_number(rid, "d", "document")?)
            };
            let (role, allowed): (Role, &[&str]) = match (rtype, relation) {
                (_, "owner") => (Role::Owner, &["user"]),
                (_, "editor") => (Role::Editor, &["user", "team#member"]),
                ("folder", _) => (Role::Viewer, &["user", "team#member", "tenant#member"]),
                _ => (Role::Viewer, &["user", "user:*", "team#member"]),
            };
            Fact::Grant {
                resource,
                role,
                subject: grant_subject(allowed)?,
            }
        }
        ("document", "banned") => {
            grant_subject(&["user"])?;
            Fact::Banned {
                document: id_number(rid, "d", "document")?,
                user: user()?,
            }
        }
        _ => bail!("`{line}`: {rtype}#{relation} is not a relation of schema.zed"),
    };
    Ok(fact)
}

/// Reads `relationships.txt`, calling `each` with every fact; errors name the line.
pub(super) fn for_each_fact(path: &Path, mut each: impl FnMut(Fact) -> Result<()>) -> Result<u64> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut number = 0u64;
    let mut facts = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            return Ok(facts);
        }
        number += 1;
        let text = line.trim();
        if text.is_empty() || text.starts_with("//") {
            continue;
        }
        parse_fact(text)
            .and_then(&mut each)
            .with_context(|| format!("{}:{number}", path.display()))?;
        facts += 1;
    }
}

// ---------------------------------------------------------------------------------------
// The database.
// ---------------------------------------------------------------------------------------

const CREATE_TABLES: &str = "
CREATE TABLE tenant_roles (
    tenant int NOT NULL,
    usr int NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'member'))
);
CREATE TABLE team_members (
    team int NOT NULL,
    member_user int,
    member_team int,
    CHECK (num_nonnulls(member_user, member_team) = 1)
);
CREATE TABLE team_maintainers (
    team int NOT NULL,
    usr int NOT NULL
);
CREATE TABLE folders (
    id int NOT NULL,
    parent int,
    tenant int
);
CREATE TABLE documents (
    id int NOT NULL,
    folder int
);
CREATE TABLE acl (
    resource_type text NOT NULL CHECK (resource_type IN ('folder', 'document')),
    resource_id int NOT NULL,
    role text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    usr int,
    team int,
    tenant int,
    public boolean NOT NULL DEFAULT false,
    CHECK (num_nonnulls(usr, team, tenant) + public::int = 1)
);
CREATE TABLE bans (
    document int NOT NULL,
    usr int NOT NULL
);
";

/// A table's rows in COPY text format, its COPY statement and the DDL run after it.
#[derive(Debug)]
struct TableLoad {
    table: &'static str,
    copy: &'static str,
    indexes: &'static [&'static str],
    rows: Vec<u8>,
}

fn table_loads() -> Vec<TableLoad> {
    let t = |table, copy, indexes| TableLoad {
        table,
        copy,
        indexes,
        rows: Vec::new(),
    };
    vec![
        t(
            "tenant_roles",
            "COPY tenant_roles (tenant, usr, role) FROM STDIN",
            &[
                "ALTER TABLE tenant_roles ADD PRIMARY KEY (tenant, usr, role)",
                "CREATE INDEX tenant_roles_by_user ON tenant_roles (usr, role, tenant)",
            ],
        ),
        t(
            "team_members",
            "COPY team_members (team, member_user, member_team) FROM STDIN",
            &[
                "CREATE UNIQUE INDEX team_members_by_user ON team_members (member_user, team) \
                 WHERE member_user IS NOT NULL",
                "CREATE UNIQUE INDEX team_members_by_team ON team_members (member_team, team) \
                 WHERE member_team IS NOT NULL",
            ],
        ),
        t(
            "team_maintainers",
            "COPY team_maintainers (team, usr) FROM STDIN",
            &["ALTER TABLE team_maintainers ADD PRIMARY KEY (team, usr)"],
        ),
        t(
            "folders",
            "COPY folders (id, parent, tenant) FROM STDIN",
            &["ALTER TABLE folders ADD PRIMARY KEY (id)"],
        ),
        t(
            "documents",
            "COPY documents (id, folder) FROM STDIN",
            &["ALTER TABLE documents ADD PRIMARY KEY (id)"],
        ),
        t(
            "acl",
            "COPY acl (resource_type, resource_id, role, usr, team, tenant, public) FROM STDIN",
            &[
                "CREATE INDEX acl_by_resource ON acl (resource_type, resource_id, role) \
               INCLUDE (usr, team, tenant, public)",
            ],
        ),
        t(
            "bans",
            "COPY bans (document, usr) FROM STDIN",
            &["ALTER TABLE bans ADD PRIMARY KEY (document, usr)"],
        ),
    ]
}

/// Index of each table in [`table_loads`].
const TENANT_ROLES: usize = 0;
const TEAM_MEMBERS: usize = 1;
const TEAM_MAINTAINERS: usize = 2;
const FOLDERS: usize = 3;
const DOCUMENTS: usize = 4;
const ACL: usize = 5;
const BANS: usize = 6;

#[derive(Debug, Default, Clone, Copy)]
struct FolderRow {
    parent: Option<u32>,
    tenant: Option<u32>,
}

/// Sets a single-valued column, refusing a second, different value.
fn set_once(slot: &mut Option<u32>, value: u32, what: impl FnOnce() -> String) -> Result<()> {
    match *slot {
        Some(old) if old != value => bail!(
            "{} is both {old} and {value}: the relational design holds one",
            what()
        ),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// Writes `\N` or the number.
fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "\\N".to_string(), |n| n.to_string())
}

/// Reads relationships.txt into the tables' COPY text.
fn build_rows(path: &Path) -> Result<Vec<TableLoad>> {
    let mut tables = table_loads();
    let mut folders: BTreeMap<u32, FolderRow> = BTreeMap::new();
    let mut documents: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    for_each_fact(path, |fact| {
        let io = |e: std::io::Error| anyhow!("buffer rows: {e}");
        match fact {
            Fact::TenantMember { tenant, user } => {
                writeln!(tables[TENANT_ROLES].rows, "{tenant}\t{user}\tmember").map_err(io)?;
            }
            Fact::TenantAdmin { tenant, user } => {
                writeln!(tables[TENANT_ROLES].rows, "{tenant}\t{user}\tadmin").map_err(io)?;
            }
            Fact::TeamMaintainer { team, user } => {
                writeln!(tables[TEAM_MAINTAINERS].rows, "{team}\t{user}").map_err(io)?;
            }
            Fact::TeamMemberUser { team, user } => {
                writeln!(tables[TEAM_MEMBERS].rows, "{team}\t{user}\t\\N").map_err(io)?;
            }
            Fact::TeamMemberTeam { team, child } => {
                writeln!(tables[TEAM_MEMBERS].rows, "{team}\t\\N\t{child}").map_err(io)?;
            }
            Fact::FolderTenant { folder, tenant } => {
                let row = folders.entry(folder).or_default();
                set_once(&mut row.tenant, tenant, || {
                    format!("the tenant of folder f{folder}")
                })?;
            }
            Fact::FolderParent { folder, parent } => {
                let row = folders.entry(folder).or_default();
                set_once(&mut row.parent, parent, || {
                    format!("the parent of folder f{folder}")
                })?;
                folders.entry(parent).or_default();
            }
            Fact::DocumentFolder { document, folder } => {
                let slot = documents.entry(document).or_default();
                set_once(slot, folder, || {
                    format!("the folder of document d{document}")
                })?;
                folders.entry(folder).or_default();
            }
            Fact::Grant {
                resource,
                role,
                subject,
            } => {
                let (rtype, rid) = match resource {
                    Resource::Folder(f) => {
                        folders.entry(f).or_default();
                        ("folder", f)
                    }
                    Resource::Document(d) => {
                        documents.entry(d).or_default();
                        ("document", d)
                    }
                };
                let (usr, team, tenant, public) = match subject {
                    Subject::User(u) => (Some(u), None, None, "f"),
                    Subject::TeamMembers(t) => (None, Some(t), None, "f"),
                    Subject::TenantMembers(k) => (None, None, Some(k), "f"),
                    Subject::AllUsers => (None, None, None, "t"),
                };
                writeln!(
                    tables[ACL].rows,
                    "{rtype}\t{rid}\t{}\t{}\t{}\t{}\t{public}",
                    role.name(),
                    opt(usr),
                    opt(team),
                    opt(tenant)
                )
                .map_err(io)?;
            }
            Fact::Banned { document, user } => {
                documents.entry(document).or_default();
                writeln!(tables[BANS].rows, "{document}\t{user}").map_err(io)?;
            }
        }
        Ok(())
    })?;
    let rows = &mut tables[FOLDERS].rows;
    for (id, f) in &folders {
        writeln!(rows, "{id}\t{}\t{}", opt(f.parent), opt(f.tenant)).context("buffer folders")?;
    }
    let rows = &mut tables[DOCUMENTS].rows;
    for (id, folder) in &documents {
        writeln!(rows, "{id}\t{}", opt(*folder)).context("buffer documents")?;
    }
    Ok(tables)
}

/// COPYs one table's rows on its own connection, then builds its indexes.
async fn load_table(options: &PgConnectOptions, load: TableLoad) -> Result<()> {
    let table = load.table;
    let mut conn = PgConnection::connect_with(options)
        .await
        .with_context(|| format!("connect to load {table}"))?;
    let mut copy = conn
        .copy_in_raw(load.copy)
        .await
        .with_context(|| format!("start `{}`", load.copy))?;
    for chunk in load.rows.chunks(1 << 20) {
        copy.send(chunk)
            .await
            .with_context(|| format!("COPY rows into {table}"))?;
    }
    copy.finish()
        .await
        .with_context(|| format!("finish COPY into {table}"))?;
    for ddl in load.indexes {
        sqlx::raw_sql(ddl)
            .execute(&mut conn)
            .await
            .with_context(|| format!("`{ddl}`"))?;
    }
    conn.close()
        .await
        .with_context(|| format!("close the {table} loader"))?;
    Ok(())
}

/// The user's teams: the teams naming them as a member, then those teams' parent teams,
/// up the nesting (`$2` the user).
const USER_TEAMS: &str = "
user_teams(team) AS (
    SELECT m.team FROM team_members m WHERE m.member_user = $2
  UNION
    SELECT m.team FROM user_teams t JOIN team_members m ON m.member_team = t.team
)";

/// A grant `a` matches user `$2`: directly, to everyone, to one of their teams or to
/// the members of a tenant they are a member of.
const GRANT_MATCHES: &str = "(a.usr = $2 OR a.public
    OR a.team IN (SELECT team FROM user_teams)
    OR a.tenant IN (SELECT r.tenant FROM tenant_roles r WHERE r.usr = $2 AND r.role = 'member'))";

/// `$1`'s folder chain is in `chain`: a grant on one of its folders, or an admin of the
/// root folder's tenant. The chain is passed as an array so that each of its few
/// folders is an index lookup whatever the planner guesses of the recursion's size.
fn folder_chain_allows(roles: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM acl a
             WHERE a.resource_type = 'folder' AND a.resource_id = ANY (ARRAY (SELECT folder FROM chain))
               AND a.role IN ({roles}) AND {GRANT_MATCHES})
      OR EXISTS (SELECT 1 FROM folders f JOIN tenant_roles r ON r.tenant = f.tenant
             WHERE f.id = ANY (ARRAY (SELECT folder FROM chain)) AND r.usr = $2 AND r.role = 'admin')"
    )
}

/// The statement answering `document:$1#view` (`edit` false) or `#edit` for `user:$2`.
fn document_check_sql(edit: bool) -> String {
    let roles = if edit {
        "'owner', 'editor'"
    } else {
        "'owner', 'editor', 'viewer'"
    };
    format!(
        "WITH RECURSIVE {USER_TEAMS},
chain(folder) AS (
    SELECT d.folder FROM documents d WHERE d.id = $1 AND d.folder IS NOT NULL
  UNION
    SELECT f.parent FROM chain c JOIN folders f ON f.id = c.folder WHERE f.parent IS NOT NULL
)
SELECT NOT EXISTS (SELECT 1 FROM bans b WHERE b.document = $1 AND b.usr = $2)
   AND (EXISTS (SELECT 1 FROM acl a
                WHERE a.resource_type = 'document' AND a.resource_id = $1 AND a.role IN ({roles})
                  AND {GRANT_MATCHES})
        OR {})",
        folder_chain_allows(roles)
    )
}

/// `folder:$1#view` for `user:$2`.
fn folder_check_sql() -> String {
    format!(
        "WITH RECURSIVE {USER_TEAMS},
chain(folder) AS (
    SELECT f.id FROM folders f WHERE f.id = $1
  UNION
    SELECT f.parent FROM chain c JOIN folders f ON f.id = c.folder WHERE f.parent IS NOT NULL
)
SELECT {}",
        folder_chain_allows("'owner', 'editor', 'viewer'")
    )
}

/// `team:$1#membership@user:$2`: a maintainer, or a member through nested teams.
fn team_check_sql() -> String {
    format!(
        "WITH RECURSIVE {USER_TEAMS}
SELECT EXISTS (SELECT 1 FROM team_maintainers m WHERE m.team = $1 AND m.usr = $2)
    OR EXISTS (SELECT 1 FROM user_teams t WHERE t.team = $1)"
    )
}

/// Query kinds in the batch statement.
const KIND_DOCUMENT_VIEW: i16 = 0;
const KIND_DOCUMENT_EDIT: i16 = 1;
const KIND_FOLDER_VIEW: i16 = 2;
const KIND_TEAM_MEMBERSHIP: i16 = 3;

/// The batch: `$1` kinds, `$2` resources, `$3` users, one answer per pair in order.
/// Every pair's teams and folder chain come from one recursive CTE each, keyed by the
/// pair's ordinal and gathered into arrays; a pair's folders are unnested and joined to
/// the grants (so each is an index lookup; `= ANY (array)` here got a range scan). The
/// recursive steps look up each row's parents in a fenced (`OFFSET 0`) lateral subquery:
/// the planner guesses the work table at ten times the first step and otherwise hashes
/// the whole `folders` or `team_members` table on every batch.
const BATCH_SQL: &str = "
WITH RECURSIVE
q AS (
    SELECT t.kind, t.resource, t.usr, t.ord
    FROM unnest($1::int2[], $2::int4[], $3::int4[]) WITH ORDINALITY AS t(kind, resource, usr, ord)
),
user_teams(ord, team) AS (
    SELECT q.ord, m.team FROM q JOIN team_members m ON m.member_user = q.usr
  UNION
    SELECT t.ord, p.team FROM user_teams t
    CROSS JOIN LATERAL (SELECT m.team FROM team_members m WHERE m.member_team = t.team OFFSET 0) p
),
chain(ord, folder) AS (
    SELECT q.ord, CASE WHEN q.kind = 2 THEN q.resource ELSE d.folder END
    FROM q LEFT JOIN documents d ON q.kind IN (0, 1) AND d.id = q.resource
    WHERE q.kind = 2 OR d.folder IS NOT NULL
  UNION
    SELECT c.ord, p.parent FROM chain c
    CROSS JOIN LATERAL (SELECT f.parent FROM folders f WHERE f.id = c.folder AND f.parent IS NOT NULL OFFSET 0) p
),
teams_of AS (SELECT ord, array_agg(team) AS teams FROM user_teams GROUP BY ord),
chain_of AS (SELECT ord, array_agg(folder) AS folders FROM chain GROUP BY ord),
tenants_of AS (
    SELECT q.ord, array_agg(r.tenant) AS tenants
    FROM q JOIN tenant_roles r ON r.usr = q.usr AND r.role = 'member'
    GROUP BY q.ord
),
p AS (
    SELECT q.ord, q.kind, q.resource, q.usr,
           CASE WHEN q.kind = 1 THEN ARRAY['owner', 'editor'] ELSE ARRAY['owner', 'editor', 'viewer'] END AS roles,
           COALESCE(t.teams, '{}') AS teams,
           COALESCE(c.folders, '{}') AS folders,
           COALESCE(k.tenants, '{}') AS tenants
    FROM q
    LEFT JOIN teams_of t ON t.ord = q.ord
    LEFT JOIN chain_of c ON c.ord = q.ord
    LEFT JOIN tenants_of k ON k.ord = q.ord
)
SELECT p.ord, CASE
    WHEN p.kind = 3 THEN
        EXISTS (SELECT 1 FROM team_maintainers m WHERE m.team = p.resource AND m.usr = p.usr)
        OR p.resource = ANY (p.teams)
    ELSE
        (p.kind = 2 OR NOT EXISTS (SELECT 1 FROM bans b WHERE b.document = p.resource AND b.usr = p.usr))
        AND ((p.kind <> 2 AND EXISTS (
                SELECT 1 FROM acl a
                WHERE a.resource_type = 'document' AND a.resource_id = p.resource AND a.role = ANY (p.roles)
                  AND (a.usr = p.usr OR a.public OR a.team = ANY (p.teams) OR a.tenant = ANY (p.tenants))))
          OR EXISTS (
                SELECT 1 FROM unnest(p.folders) AS c(folder)
                JOIN acl a ON a.resource_type = 'folder' AND a.resource_id = c.folder
                WHERE a.role = ANY (p.roles)
                  AND (a.usr = p.usr OR a.public OR a.team = ANY (p.teams) OR a.tenant = ANY (p.tenants)))
          OR EXISTS (
                SELECT 1 FROM unnest(p.folders) AS c(folder)
                JOIN folders f ON f.id = c.folder
                JOIN tenant_roles r ON r.tenant = f.tenant
                WHERE r.usr = p.usr AND r.role = 'admin'))
    END AS allowed
FROM p
ORDER BY p.ord";

/// A Postgres database holding the dataset in the relational design.
#[derive(Debug)]
pub struct Relational {
    pub pool: PgPool,
    admin: PgConnectOptions,
    name: String,
    document_view: String,
    document_edit: String,
    folder_view: String,
    team_membership: String,
}

/// Connects to the server's administrative database.
async fn admin_connection(admin: &PgConnectOptions) -> Result<PgConnection> {
    PgConnection::connect_with(admin)
        .await
        .context("connect to the Postgres server's admin database")
}

async fn drop_if_exists(conn: &mut PgConnection, name: &str) -> Result<()> {
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(conn)
        .await
        .with_context(|| format!("drop database {name}"))?;
    Ok(())
}

/// A query's resource and user ids as the tables' integers.
fn query_ids(q: &Query) -> Result<(i32, i32)> {
    let prefix = match q.kind {
        QueryKind::DocumentView | QueryKind::DocumentEdit => "d",
        QueryKind::FolderView => "f",
        QueryKind::TeamMembership => "t",
    };
    let resource = id_number(&q.resource, prefix, q.kind.resource_type())
        .with_context(|| format!("query `{}`", q.line()))?;
    let user = id_number(&q.user, "u", "user").with_context(|| format!("query `{}`", q.line()))?;
    // `id_number` keeps ids within i32.
    Ok((resource as i32, user as i32))
}

impl Relational {
    /// Creates database `name` afresh on the server of `admin_url`, loads the dataset's
    /// relationships (COPY, then indexes, then VACUUM ANALYZE) and returns a pool of
    /// `pool_size` connections to it.
    pub async fn load(
        admin_url: &str,
        name: &str,
        dataset: &Dataset,
        pool_size: u32,
    ) -> Result<Relational> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!("database name `{name}`: use lowercase letters, digits and `_`");
        }
        let admin = PgConnectOptions::from_str(admin_url)
            .with_context(|| format!("parse the Postgres URL `{admin_url}`"))?;
        let options = admin.clone().database(name);

        let mut conn = admin_connection(&admin).await?;
        drop_if_exists(&mut conn, name).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("create database {name}"))?;
        // Short lookups: JIT compiling a plan the planner costs high (the batch's
        // recursion) takes far longer than running it.
        sqlx::raw_sql(&format!("ALTER DATABASE \"{name}\" SET jit = off"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("turn JIT off on database {name}"))?;
        conn.close().await.context("close the admin connection")?;

        let path = dataset.relationships_path();
        let tables = tokio::task::spawn_blocking(move || build_rows(&path))
            .await
            .context("the relationships reader panicked")??;

        let mut conn = PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("connect to database {name}"))?;
        sqlx::raw_sql(CREATE_TABLES)
            .execute(&mut conn)
            .await
            .context("create the tables")?;

        // The tables load concurrently, each on its own connection (and server process).
        let [a, b, c, d, e, f, g]: [TableLoad; 7] = tables
            .try_into()
            .map_err(|t: Vec<TableLoad>| anyhow!("{} tables to load, not 7", t.len()))?;
        let o = &options;
        tokio::try_join!(
            load_table(o, a),
            load_table(o, b),
            load_table(o, c),
            load_table(o, d),
            load_table(o, e),
            load_table(o, f),
            load_table(o, g),
        )?;
        sqlx::raw_sql("VACUUM (ANALYZE)")
            .execute(&mut conn)
            .await
            .context("VACUUM ANALYZE")?;
        conn.close().await.context("close the schema connection")?;

        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .with_context(|| format!("open a pool of {pool_size} connections to {name}"))?;
        Ok(Relational {
            pool,
            admin,
            name: name.to_string(),
            document_view: document_check_sql(false),
            document_edit: document_check_sql(true),
            folder_view: folder_check_sql(),
            team_membership: team_check_sql(),
        })
    }

    /// One check: one statement (prepared once per connection).
    pub async fn check(&self, q: &Query) -> Result<bool> {
        let (resource, user) = query_ids(q)?;
        let sql = match q.kind {
            QueryKind::DocumentView => &self.document_view,
            QueryKind::DocumentEdit => &self.document_edit,
            QueryKind::FolderView => &self.folder_view,
            QueryKind::TeamMembership => &self.team_membership,
        };
        sqlx::query_scalar::<_, bool>(sql)
            .bind(resource)
            .bind(user)
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("check `{}` in Postgres", q.line()))
    }

    /// A batch of checks of any kinds: one statement, answers in input order.
    pub async fn check_batch(&self, qs: &[Query]) -> Result<Vec<bool>> {
        if qs.is_empty() {
            return Ok(Vec::new());
        }
        let mut kinds = Vec::with_capacity(qs.len());
        let mut resources = Vec::with_capacity(qs.len());
        let mut users = Vec::with_capacity(qs.len());
        for q in qs {
            let (resource, user) = query_ids(q)?;
            kinds.push(match q.kind {
                QueryKind::DocumentView => KIND_DOCUMENT_VIEW,
                QueryKind::DocumentEdit => KIND_DOCUMENT_EDIT,
                QueryKind::FolderView => KIND_FOLDER_VIEW,
                QueryKind::TeamMembership => KIND_TEAM_MEMBERSHIP,
            });
            resources.push(resource);
            users.push(user);
        }
        let rows = sqlx::query(BATCH_SQL)
            .bind(kinds)
            .bind(resources)
            .bind(users)
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("check a batch of {} in Postgres", qs.len()))?;
        if rows.len() != qs.len() {
            bail!(
                "the batch statement answered {} of {} checks",
                rows.len(),
                qs.len()
            );
        }
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                let ord: i64 = row.try_get(0).context("read a batch answer's ordinal")?;
                if ord != i as i64 + 1 {
                    bail!(
                        "the batch statement answered check {ord} at position {}",
                        i + 1
                    );
                }
                row.try_get::<bool, _>(1)
                    .with_context(|| format!("read the answer of `{}`", qs[i].line()))
            })
            .collect()
    }

    /// Closes the pool and drops the database.
    pub async fn drop_database(self) -> Result<()> {
        self.pool.close().await;
        let mut conn = admin_connection(&self.admin).await?;
        drop_if_exists(&mut conn, &self.name).await?;
        conn.close().await.context("close the admin connection")?;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use super::super::{data_root, dataset};
    use super::*;

    /// The dataset of `relationships` and seed 7 under `data_root()`, generated by one test
    /// at a time (the Postgres and Cedar tests run in parallel and share it).
    pub(in crate::baseline) fn shared_dataset(relationships: u64) -> Result<Dataset> {
        static GENERATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = GENERATING.lock().unwrap_or_else(|e| e.into_inner());
        dataset(&data_root(), relationships, 7)
    }

    fn admin_url() -> String {
        std::env::var("ARBITER_BASELINE_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
    }

    #[test]
    fn facts_follow_the_schema() {
        assert_eq!(
            parse_fact("team:t3#member@team:t9#member").unwrap(),
            Fact::TeamMemberTeam { team: 3, child: 9 }
        );
        assert_eq!(
            parse_fact("document:d5#viewer@user:*").unwrap(),
            Fact::Grant {
                resource: Resource::Document(5),
                role: Role::Viewer,
                subject: Subject::AllUsers
            }
        );
        assert_eq!(
            parse_fact("folder:f1#viewer@tenant:org2#member").unwrap(),
            Fact::Grant {
                resource: Resource::Folder(1),
                role: Role::Viewer,
                subject: Subject::TenantMembers(2)
            }
        );
        for bad in [
            "folder:f1#viewer@user:*",
            "document:d1#viewer@tenant:org2#member",
            "document:d1#owner@team:t1#member",
            "folder:f1#parent@folder:f2#parent",
            "team:t1#member@user:x1",
            "document:d1#reader@user:u1",
        ] {
            assert!(parse_fact(bad).is_err(), "{bad}");
        }
    }

    /// Loads a dataset, checks every query singly and in batches of 100 against
    /// `expected.txt`, and drops the database.
    async fn agree(relationships: u64) -> Result<()> {
        let data = shared_dataset(relationships)?;
        let name = format!("arbiter_baseline_test_{}", std::process::id());
        let started = Instant::now();
        let db = Relational::load(&admin_url(), &name, &data, 4).await?;
        let loaded = started.elapsed();
        let outcome = async {
            let started = Instant::now();
            let mut wrong = Vec::new();
            for (q, &want) in data.queries.iter().zip(&data.expected) {
                if db.check(q).await? != want {
                    wrong.push(q.line());
                }
            }
            let single = started.elapsed();
            let started = Instant::now();
            let mut batch_wrong = Vec::new();
            for (qs, want) in data.queries.chunks(100).zip(data.expected.chunks(100)) {
                let got = db.check_batch(qs).await?;
                for ((q, g), w) in qs.iter().zip(got).zip(want) {
                    if g != *w {
                        batch_wrong.push(q.line());
                    }
                }
            }
            let batched = started.elapsed();
            let n = data.queries.len();
            println!(
                "postgres: {} relationships loaded in {loaded:.2?}; {n} checks ({} allowed) singly in {single:.2?} \
                 ({:.0} us each), in batches of 100 in {batched:.2?} ({:.1} us a check)",
                data.relationships,
                data.expected.iter().filter(|&&a| a).count(),
                single.as_secs_f64() * 1e6 / n as f64,
                batched.as_secs_f64() * 1e6 / n as f64,
            );
            Ok::<_, anyhow::Error>((wrong, batch_wrong))
        }
        .await;
        db.drop_database().await?;
        let (wrong, batch_wrong) = outcome?;
        assert!(
            wrong.is_empty(),
            "{} single checks disagree with expected.txt, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
        assert!(
            batch_wrong.is_empty(),
            "{} batched checks disagree with expected.txt, e.g. {:?}",
            batch_wrong.len(),
            &batch_wrong[..batch_wrong.len().min(10)]
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relational_agrees_with_expected() -> Result<()> {
        agree(20_000).await
    }

    /// By hand, at scale (release build):
    /// `ARBITER_BASELINE_RELATIONSHIPS=1000000 cargo test --release -p arbiter-benches
    /// --no-default-features --features baselines --lib -- --ignored --nocapture relational_at_scale`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "slow: run by hand at scale"]
    async fn relational_at_scale() -> Result<()> {
        let n = std::env::var("ARBITER_BASELINE_RELATIONSHIPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        agree(n).await
    }
}
