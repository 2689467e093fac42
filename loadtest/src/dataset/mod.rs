//! `arbiter-loadtest gen`: a seeded, reproducible organisation dataset. Writes
//! `schema.zed`, `relationships.txt` (one relationship a line), `queries.txt` (checks,
//! one a line, about half allowed), `expected.txt` (the exact answer of each query,
//! computed over the generated graph) and `manifest.json` (sizes, counts, digests).
//!
//! The model (see `schema.zed`): tenants of skewed sizes; per tenant users, teams nested
//! up to [`MAX_TEAM_DEPTH`] levels, folders nested up to [`MAX_FOLDER_DEPTH`] levels and
//! documents filling the rest of the tenant's relationship budget. Who joins which team,
//! which folder holds a document and who owns or is shared what follow Zipf-like
//! popularity, so some teams and folders are large and most are small. Everything is
//! streamed to disk as it is generated; only a compact copy of the graph stays in memory
//! to compute the queries' answers.

pub mod org;
mod queries;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::digest::Fnv1a64;
use crate::rng::{Counts, Exponent, Rng, Zipf};
use org::{Grant, Org, Rel, Subject, Tenant, NONE};

/// The schema every generated dataset uses.
pub const SCHEMA: &str = include_str!("schema.zed");

/// Levels of team nesting, a root team being level 1.
pub const MAX_TEAM_DEPTH: u8 = 6;
/// Levels of folder nesting, a root folder being level 1.
pub const MAX_FOLDER_DEPTH: u8 = 8;

/// The smallest dataset `gen` makes: below this the structure does not fit.
pub const MIN_RELATIONSHIPS: u64 = 1_000;

/// Relationships per tenant, on average.
const TENANT_BUDGET: u64 = 50_000;

/// Random streams (see [`Rng::new`]).
const STREAM_TENANT: u64 = 1;
const STREAM_QUERIES: u64 = 2;

/// What `gen` was asked for.
#[derive(Debug, Clone, Copy)]
pub struct GenParams {
    /// About this many relationships.
    pub relationships: u64,
    pub seed: u64,
}

/// What `gen` wrote, as recorded in `manifest.json`.
#[derive(Debug, Clone)]
pub struct GenSummary {
    pub manifest: serde_json::Value,
    pub relationships: u64,
    pub queries: u64,
    pub allowed: u64,
}

/// Every kind of relationship line, with its text around the two ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    TenantMember,
    TenantAdmin,
    TeamMaintainer,
    TeamMemberUser,
    TeamMemberTeam,
    FolderTenant,
    FolderParent,
    FolderOwner,
    FolderEditorUser,
    FolderEditorTeam,
    FolderViewerUser,
    FolderViewerTeam,
    FolderViewerTenant,
    DocumentFolder,
    DocumentOwner,
    DocumentEditorUser,
    DocumentEditorTeam,
    DocumentViewerUser,
    DocumentViewerTeam,
    DocumentViewerPublic,
    DocumentBanned,
}

const KINDS: usize = 21;

/// How a kind is written: `{resource}{id}{relation}{subject}{id}{suffix}`; a wildcard
/// has no subject id.
struct Shape {
    resource: &'static str,
    relation: &'static str,
    subject: &'static str,
    suffix: &'static str,
    wildcard: bool,
    /// The key in `manifest.json`.
    name: &'static str,
}

const fn shape(
    resource: &'static str,
    relation: &'static str,
    subject: &'static str,
    suffix: &'static str,
    name: &'static str,
) -> Shape {
    Shape {
        resource,
        relation,
        subject,
        suffix,
        wildcard: false,
        name,
    }
}

const SHAPES: [Shape; KINDS] = [
    shape("tenant:org", "#member@", "user:u", "", "tenant#member@user"),
    shape("tenant:org", "#admin@", "user:u", "", "tenant#admin@user"),
    shape(
        "team:t",
        "#maintainer@",
        "user:u",
        "",
        "team#maintainer@user",
    ),
    shape("team:t", "#member@", "user:u", "", "team#member@user"),
    shape(
        "team:t",
        "#member@",
        "team:t",
        "#member",
        "team#member@team#member",
    ),
    shape(
        "folder:f",
        "#tenant@",
        "tenant:org",
        "",
        "folder#tenant@tenant",
    ),
    shape(
        "folder:f",
        "#parent@",
        "folder:f",
        "",
        "folder#parent@folder",
    ),
    shape("folder:f", "#owner@", "user:u", "", "folder#owner@user"),
    shape("folder:f", "#editor@", "user:u", "", "folder#editor@user"),
    shape(
        "folder:f",
        "#editor@",
        "team:t",
        "#member",
        "folder#editor@team#member",
    ),
    shape("folder:f", "#viewer@", "user:u", "", "folder#viewer@user"),
    shape(
        "folder:f",
        "#viewer@",
        "team:t",
        "#member",
        "folder#viewer@team#member",
    ),
    shape(
        "folder:f",
        "#viewer@",
        "tenant:org",
        "#member",
        "folder#viewer@tenant#member",
    ),
    shape(
        "document:d",
        "#folder@",
        "folder:f",
        "",
        "document#folder@folder",
    ),
    shape("document:d", "#owner@", "user:u", "", "document#owner@user"),
    shape(
        "document:d",
        "#editor@",
        "user:u",
        "",
        "document#editor@user",
    ),
    shape(
        "document:d",
        "#editor@",
        "team:t",
        "#member",
        "document#editor@team#member",
    ),
    shape(
        "document:d",
        "#viewer@",
        "user:u",
        "",
        "document#viewer@user",
    ),
    shape(
        "document:d",
        "#viewer@",
        "team:t",
        "#member",
        "document#viewer@team#member",
    ),
    Shape {
        resource: "document:d",
        relation: "#viewer@",
        subject: "user:*",
        suffix: "",
        wildcard: true,
        name: "document#viewer@user:*",
    },
    shape(
        "document:d",
        "#banned@",
        "user:u",
        "",
        "document#banned@user",
    ),
];

// Fan-out distributions: weight of 0, 1, 2, ... items.
const TEAMS_PER_USER: Counts = Counts(&[4, 56, 22, 9, 5, 3, 1]);
const FOLDER_EDITOR_USERS: Counts = Counts(&[70, 20, 7, 3]);
const FOLDER_EDITOR_TEAMS: Counts = Counts(&[75, 20, 5]);
const FOLDER_VIEWER_USERS: Counts = Counts(&[55, 20, 10, 6, 4, 3, 2]);
const FOLDER_VIEWER_TEAMS: Counts = Counts(&[50, 30, 12, 8]);
const DOCUMENT_EDITOR_USERS: Counts = Counts(&[55, 25, 10, 5, 3, 2]);
const DOCUMENT_EDITOR_TEAMS: Counts = Counts(&[88, 10, 2]);
const DOCUMENT_VIEWER_USERS: Counts = Counts(&[40, 20, 12, 8, 6, 4, 3, 2, 2, 1, 1, 1]);
const DOCUMENT_VIEWER_TEAMS: Counts = Counts(&[72, 18, 7, 3]);

/// Writes relationship lines, counting them by kind and hashing the bytes.
struct LineWriter<W: Write> {
    out: Fnv1a64<W>,
    counts: [u64; KINDS],
    total: u64,
    line: Vec<u8>,
}

impl<W: Write> LineWriter<W> {
    fn new(out: W) -> Self {
        Self {
            out: Fnv1a64::new(out),
            counts: [0; KINDS],
            total: 0,
            line: Vec::with_capacity(96),
        }
    }

    fn write(&mut self, kind: Kind, resource: u32, subject: u32) -> io::Result<()> {
        let s = &SHAPES[kind as usize];
        self.line.clear();
        self.line.extend_from_slice(s.resource.as_bytes());
        push_decimal(&mut self.line, resource);
        self.line.extend_from_slice(s.relation.as_bytes());
        self.line.extend_from_slice(s.subject.as_bytes());
        if !s.wildcard {
            push_decimal(&mut self.line, subject);
        }
        self.line.extend_from_slice(s.suffix.as_bytes());
        self.line.push(b'\n');
        self.counts[kind as usize] += 1;
        self.total += 1;
        self.out.write_all(&self.line)
    }
}

/// Appends the decimal digits of `n`.
pub(crate) fn push_decimal(buf: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Relationship budgets of the tenants: skewed (weight `1/sqrt(k+1)`), summing to `n`.
fn tenant_budgets(n: u64) -> Vec<u64> {
    let tenants = ((n + TENANT_BUDGET / 2) / TENANT_BUDGET).max(1) as usize;
    let weights: Vec<f64> = (0..tenants)
        .map(|k| 1.0 / ((k as f64) + 1.0).sqrt())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut budgets: Vec<u64> = weights
        .iter()
        .map(|w| ((n as f64) * w / total) as u64)
        .collect();
    let assigned: u64 = budgets.iter().sum();
    if let Some(last) = budgets.last_mut() {
        *last += n.saturating_sub(assigned);
    }
    budgets
}

/// Builds the in-memory graph and streams its relationship lines.
struct Generator<W: Write> {
    org: Org,
    out: LineWriter<W>,
    seed: u64,
    public_documents: u64,
    documents_with_bans: u64,
}

impl<W: Write> Generator<W> {
    fn tenant(&mut self, k: u32, budget: u64) -> io::Result<()> {
        let mut rng = Rng::new(self.seed, STREAM_TENANT, u64::from(k));
        let start_lines = self.out.total;
        let n_users = (budget / 25).max(16) as u32;
        let n_teams = (n_users / 8).max(u32::from(MAX_TEAM_DEPTH) + 2);
        let n_folders = ((budget / 30) as u32).max(u32::from(MAX_FOLDER_DEPTH) + 2);
        let user0 = self.org.users();
        let team0 = self.org.teams();
        let folder0 = self.org.folders();
        let doc0 = self.org.documents();
        let users = Zipf::new(n_users as usize, Exponent::One, rng.next_u64());
        let teams = Zipf::new(n_teams as usize, Exponent::One, rng.next_u64());
        let folders = Zipf::new(n_folders as usize, Exponent::One, rng.next_u64());
        let pick_user = |rng: &mut Rng| user0 + users.sample(rng) as u32;
        let pick_team = |rng: &mut Rng| team0 + teams.sample(rng) as u32;

        // Teams: the first MAX_TEAM_DEPTH form a chain so the deepest level is always
        // reached; the others are new roots (5%) or join a random earlier team.
        for j in 0..n_teams {
            let t = team0 + j;
            let parent = if j == 0 {
                NONE
            } else if j < u32::from(MAX_TEAM_DEPTH) {
                t - 1
            } else if rng.percent(5) {
                NONE
            } else {
                let p = team0 + rng.below32(j);
                if self.org.team_depth[p as usize] >= MAX_TEAM_DEPTH {
                    self.org.team_parent[p as usize]
                } else {
                    p
                }
            };
            let depth = if parent == NONE {
                1
            } else {
                self.org.team_depth[parent as usize] + 1
            };
            self.org.team_parent.push(parent);
            self.org.team_depth.push(depth);
            if parent != NONE {
                self.out.write(Kind::TeamMemberTeam, parent, t)?;
            }
            let maintainer = pick_user(&mut rng);
            self.org.team_maintainer.push(maintainer);
            self.out.write(Kind::TeamMaintainer, t, maintainer)?;
        }

        // Users: tenant members, a few admins, members of popular teams.
        let mut tenant = Tenant {
            users: user0..user0 + n_users,
            teams: team0..team0 + n_teams,
            ..Tenant::default()
        };
        for i in 0..n_users {
            let u = user0 + i;
            self.out.write(Kind::TenantMember, k, u)?;
            if i == 0 || rng.percent(1) {
                tenant.admins.push(u);
                self.out.write(Kind::TenantAdmin, k, u)?;
            }
            // The chain's teams get a member each, so deep memberships exist.
            if i < u32::from(MAX_TEAM_DEPTH) {
                self.member(u, team0 + i)?;
            }
            for _ in 0..TEAMS_PER_USER.sample(&mut rng) {
                let t = pick_team(&mut rng);
                self.member(u, t)?;
            }
            self.org.user_teams.end_row();
        }

        // Folders: a chain of MAX_FOLDER_DEPTH first, then roots (8%) or children of a
        // random earlier folder.
        tenant.folders = folder0..folder0 + n_folders;
        for j in 0..n_folders {
            let f = folder0 + j;
            let parent = if j == 0 {
                NONE
            } else if j < u32::from(MAX_FOLDER_DEPTH) {
                f - 1
            } else if rng.percent(8) {
                NONE
            } else {
                let p = folder0 + rng.below32(j);
                if self.org.folder_depth[p as usize] >= MAX_FOLDER_DEPTH {
                    self.org.folder_parent[p as usize]
                } else {
                    p
                }
            };
            let depth = if parent == NONE {
                1
            } else {
                self.org.folder_depth[parent as usize] + 1
            };
            self.org.folder_parent.push(parent);
            self.org.folder_depth.push(depth);
            if parent == NONE {
                self.out.write(Kind::FolderTenant, f, k)?;
            } else {
                self.out.write(Kind::FolderParent, f, parent)?;
            }
            let owner = pick_user(&mut rng);
            self.folder_grant(f, Kind::FolderOwner, owner)?;
            for _ in 0..FOLDER_EDITOR_USERS.sample(&mut rng) {
                self.folder_grant(f, Kind::FolderEditorUser, pick_user(&mut rng))?;
            }
            for _ in 0..FOLDER_EDITOR_TEAMS.sample(&mut rng) {
                self.folder_grant(f, Kind::FolderEditorTeam, pick_team(&mut rng))?;
            }
            for _ in 0..FOLDER_VIEWER_USERS.sample(&mut rng) {
                self.folder_grant(f, Kind::FolderViewerUser, pick_user(&mut rng))?;
            }
            for _ in 0..FOLDER_VIEWER_TEAMS.sample(&mut rng) {
                self.folder_grant(f, Kind::FolderViewerTeam, pick_team(&mut rng))?;
            }
            if parent == NONE && rng.percent(10) {
                self.folder_grant(f, Kind::FolderViewerTenant, k)?;
            }
            // The chain's root folder is shared with the chain's root team, so a user
            // of the deepest team reaches a document of the deepest folder through
            // 6 levels of teams and 8 of folders.
            if j == 0 {
                self.folder_grant(f, Kind::FolderViewerTeam, team0)?;
            }
            self.org.folder_grants.end_row();
        }

        // Documents until the tenant's budget is spent.
        let mut d = doc0;
        while self.out.total - start_lines < budget || d == doc0 {
            let folder = if d == doc0 {
                // The first document lies in the deepest folder of the chain.
                let f = folder0 + u32::from(MAX_FOLDER_DEPTH) - 1;
                self.out.write(Kind::DocumentFolder, d, f)?;
                f
            } else if rng.percent(95) {
                let f = folder0 + folders.sample(&mut rng) as u32;
                self.out.write(Kind::DocumentFolder, d, f)?;
                f
            } else {
                NONE
            };
            self.org.document_folder.push(folder);
            self.document_grant(d, Kind::DocumentOwner, pick_user(&mut rng))?;
            for _ in 0..DOCUMENT_EDITOR_USERS.sample(&mut rng) {
                self.document_grant(d, Kind::DocumentEditorUser, pick_user(&mut rng))?;
            }
            for _ in 0..DOCUMENT_EDITOR_TEAMS.sample(&mut rng) {
                self.document_grant(d, Kind::DocumentEditorTeam, pick_team(&mut rng))?;
            }
            // A long tail: 1% of documents are shared with 20 to 100 people.
            let viewers = if rng.percent(1) {
                20 + rng.below(81) as usize
            } else {
                DOCUMENT_VIEWER_USERS.sample(&mut rng)
            };
            for _ in 0..viewers {
                self.document_grant(d, Kind::DocumentViewerUser, pick_user(&mut rng))?;
            }
            for _ in 0..DOCUMENT_VIEWER_TEAMS.sample(&mut rng) {
                self.document_grant(d, Kind::DocumentViewerTeam, pick_team(&mut rng))?;
            }
            let public = rng.percent(1);
            if public {
                self.public_documents += 1;
                self.document_grant(d, Kind::DocumentViewerPublic, 0)?;
            }
            // Bans are most useful on public documents (everyone but these users).
            if rng.percent(if public { 30 } else { 1 }) {
                self.documents_with_bans += 1;
                for _ in 0..1 + rng.below(3) {
                    let u = user0 + rng.below32(n_users);
                    self.document_grant(d, Kind::DocumentBanned, u)?;
                }
            }
            self.org.document_grants.end_row();
            d += 1;
        }
        tenant.documents = doc0..d;
        self.org.tenants.push(tenant);
        Ok(())
    }

    /// `team:t#member@user:u`, once.
    fn member(&mut self, u: u32, t: u32) -> io::Result<()> {
        if self.org.user_teams.open_row().contains(&t) {
            return Ok(());
        }
        self.org.user_teams.push(t);
        self.out.write(Kind::TeamMemberUser, t, u)
    }

    fn folder_grant(&mut self, f: u32, kind: Kind, id: u32) -> io::Result<()> {
        let g = grant(kind, id);
        if self.org.folder_grants.open_row().contains(&g) {
            return Ok(());
        }
        self.org.folder_grants.push(g);
        self.out.write(kind, f, id)
    }

    fn document_grant(&mut self, d: u32, kind: Kind, id: u32) -> io::Result<()> {
        let g = grant(kind, id);
        if self.org.document_grants.open_row().contains(&g) {
            return Ok(());
        }
        self.org.document_grants.push(g);
        self.out.write(kind, d, id)
    }
}

fn grant(kind: Kind, id: u32) -> Grant {
    let (rel, subject) = match kind {
        Kind::FolderOwner | Kind::DocumentOwner => (Rel::Owner, Subject::User(id)),
        Kind::FolderEditorUser | Kind::DocumentEditorUser => (Rel::Editor, Subject::User(id)),
        Kind::FolderEditorTeam | Kind::DocumentEditorTeam => (Rel::Editor, Subject::Team(id)),
        Kind::FolderViewerUser | Kind::DocumentViewerUser => (Rel::Viewer, Subject::User(id)),
        Kind::FolderViewerTeam | Kind::DocumentViewerTeam => (Rel::Viewer, Subject::Team(id)),
        Kind::FolderViewerTenant => (Rel::Viewer, Subject::TenantMembers(id)),
        Kind::DocumentViewerPublic => (Rel::Viewer, Subject::AllUsers),
        Kind::DocumentBanned => (Rel::Banned, Subject::User(id)),
        // Not grants; never passed here.
        _ => (Rel::Banned, Subject::User(NONE)),
    };
    Grant { rel, subject }
}

/// How many queries a dataset of `n` relationships gets.
pub fn query_count(n: u64) -> u64 {
    (n / 10).clamp(1_000, 100_000)
}

fn create(dir: &Path, name: &str) -> Result<(PathBuf, BufWriter<File>)> {
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    Ok((path, BufWriter::with_capacity(1 << 20, file)))
}

fn file_entry(bytes: u64, hash: u64) -> serde_json::Value {
    json!({"bytes": bytes, "fnv1a64": format!("{hash:016x}")})
}

/// Generates the dataset into `dir` (created if missing).
pub fn generate(params: GenParams, dir: &Path) -> Result<GenSummary> {
    if params.relationships < MIN_RELATIONSHIPS {
        bail!(
            "--relationships must be at least {MIN_RELATIONSHIPS}, got {}",
            params.relationships
        );
    }
    if params.relationships > u64::from(u32::MAX / 2) {
        bail!(
            "--relationships must be at most {}, got {}",
            u32::MAX / 2,
            params.relationships
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;

    let (schema_path, mut schema_out) = create(dir, "schema.zed")?;
    schema_out
        .write_all(SCHEMA.as_bytes())
        .and_then(|()| schema_out.flush())
        .with_context(|| format!("write {}", schema_path.display()))?;
    let schema_hash = crate::digest::fnv1a64(SCHEMA.as_bytes());

    let (rel_path, rel_out) = create(dir, "relationships.txt")?;
    let mut g = Generator {
        org: Org::default(),
        out: LineWriter::new(rel_out),
        seed: params.seed,
        public_documents: 0,
        documents_with_bans: 0,
    };
    for (k, budget) in tenant_budgets(params.relationships).into_iter().enumerate() {
        g.tenant(k as u32, budget)
            .with_context(|| format!("write {}", rel_path.display()))?;
    }
    g.out
        .out
        .flush()
        .with_context(|| format!("write {}", rel_path.display()))?;
    let Generator {
        mut org,
        out,
        public_documents,
        documents_with_bans,
        ..
    } = g;
    let (rel_bytes, rel_hash) = (out.out.bytes(), out.out.hash());
    org.index();

    let (q_path, q_out) = create(dir, "queries.txt")?;
    let (e_path, e_out) = create(dir, "expected.txt")?;
    let mut q_out = Fnv1a64::new(q_out);
    let mut e_out = Fnv1a64::new(e_out);
    let mut rng = Rng::new(params.seed, STREAM_QUERIES, 0);
    let n_queries = query_count(params.relationships);
    let stats = queries::write_queries(&org, &mut rng, n_queries, &mut q_out, &mut e_out)
        .with_context(|| format!("write {} and {}", q_path.display(), e_path.display()))?;
    q_out
        .flush()
        .with_context(|| format!("write {}", q_path.display()))?;
    e_out
        .flush()
        .with_context(|| format!("write {}", e_path.display()))?;

    let mut by_kind = serde_json::Map::new();
    for (shape, count) in SHAPES.iter().zip(out.counts) {
        by_kind.insert(shape.name.to_string(), json!(count));
    }
    let manifest = json!({
        "generator": "arbiter-loadtest gen",
        "format": 1,
        "seed": params.seed,
        "requested_relationships": params.relationships,
        "relationships": out.total,
        "relationships_by_kind": by_kind,
        "tenants": org.tenants.len(),
        "users": org.users(),
        "teams": org.teams(),
        "folders": org.folders(),
        "documents": org.documents(),
        "public_documents": public_documents,
        "documents_with_bans": documents_with_bans,
        "tenant_admins": org.tenants.iter().map(|t| t.admins.len()).sum::<usize>(),
        "max_team_depth": org.team_depth.iter().copied().max().unwrap_or(0),
        "max_folder_depth": org.folder_depth.iter().copied().max().unwrap_or(0),
        "queries": n_queries,
        "allowed": stats.allowed,
        "denied": n_queries - stats.allowed,
        "queries_by_kind": stats.by_kind_json(),
        "files": {
            "schema.zed": file_entry(SCHEMA.len() as u64, schema_hash),
            "relationships.txt": file_entry(rel_bytes, rel_hash),
            "queries.txt": file_entry(q_out.bytes(), q_out.hash()),
            "expected.txt": file_entry(e_out.bytes(), e_out.hash()),
        },
    });
    let manifest_path = dir.join("manifest.json");
    let mut text = serde_json::to_string_pretty(&manifest).context("encode manifest.json")?;
    text.push('\n');
    std::fs::write(&manifest_path, text)
        .with_context(|| format!("write {}", manifest_path.display()))?;
    Ok(GenSummary {
        manifest,
        relationships: out.total,
        queries: n_queries,
        allowed: stats.allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_sum_to_n_and_are_skewed() {
        for n in [1_000u64, 10_000, 100_000, 1_000_000, 10_000_000] {
            let b = tenant_budgets(n);
            assert_eq!(b.iter().sum::<u64>(), n);
            assert!(b
                .windows(2)
                .take(b.len().saturating_sub(2))
                .all(|w| w[0] >= w[1]));
        }
        assert_eq!(tenant_budgets(10_000_000).len(), 200);
    }

    #[test]
    fn decimal_digits() {
        let mut v = Vec::new();
        for n in [0u32, 7, 10, 12345, u32::MAX] {
            v.clear();
            push_decimal(&mut v, n);
            assert_eq!(String::from_utf8(v.clone()).unwrap(), n.to_string());
        }
    }
}
