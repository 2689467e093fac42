//! The query set: check questions over the generated graph, about half allowed. Each
//! query first picks whether it aims to be allowed; an allowed one walks back from the
//! resource along a real grant (a direct user, a team and down its subteams to a member,
//! a folder several levels up, a tenant-wide share, the tenant's admins, a public
//! document); a denied one takes a user of the same tenant (sometimes of another tenant,
//! sometimes a banned user). The exact answer is then computed by [`Org::allowed`] and a
//! few more tries are made if it missed the aim, so the mix is close to half and half
//! and every line of `expected.txt` is exact whatever the aim was.

use std::io::{self, Write};

use serde_json::json;

use super::org::{Org, Rel, Subject, Target, NONE};
use super::push_decimal;
use crate::rng::{Counts, Exponent, Rng, Zipf};

/// document view, document edit, folder view, team membership.
const QUERY_KINDS: Counts = Counts(&[65, 15, 12, 8]);
const KIND_NAMES: [&str; 4] = [
    "document#view@user",
    "document#edit@user",
    "folder#view@user",
    "team#membership@user",
];
const TRIES: usize = 12;

#[derive(Debug, Default)]
pub struct QueryStats {
    pub allowed: u64,
    by_kind: [(u64, u64); 4],
}

impl QueryStats {
    pub fn by_kind_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, (all, allowed)) in KIND_NAMES.iter().zip(self.by_kind) {
            m.insert(
                (*name).to_string(),
                json!({"queries": all, "allowed": allowed}),
            );
        }
        serde_json::Value::Object(m)
    }
}

struct Picker<'a> {
    org: &'a Org,
    documents: Zipf,
}

/// Where a grant found on the way up from a resource comes from.
#[derive(Clone, Copy)]
enum Source {
    Subject(Subject),
    Admins(u32),
    Maintainer(u32),
}

impl Picker<'_> {
    fn random_user_of_tenant(&self, rng: &mut Rng, k: u32) -> u32 {
        match self.org.tenants.get(k as usize) {
            Some(t) if !t.users.is_empty() => t.users.start + rng.below32(t.users.len() as u32),
            _ => rng.below32(self.org.users()),
        }
    }

    /// A user who is a member of `team` (directly or through subteams), going down the
    /// nesting first: a level at a time with even odds, or, for a deep question, as far
    /// down as it goes.
    fn member_of(&self, rng: &mut Rng, team: u32) -> Option<u32> {
        let deep = rng.percent(35);
        let mut t = team;
        loop {
            let children = self.org.team_children.row(t);
            if children.is_empty() || !rng.percent(if deep { 95 } else { 50 }) {
                break;
            }
            t = children[rng.below(children.len() as u64) as usize];
        }
        let members = self.org.team_members.row(t);
        if members.is_empty() {
            return None;
        }
        Some(members[rng.below(members.len() as u64) as usize])
    }

    fn resolve(&self, rng: &mut Rng, source: Source, tenant: u32) -> Option<u32> {
        match source {
            Source::Subject(Subject::User(u)) => Some(u),
            Source::Subject(Subject::Team(t)) => self.member_of(rng, t),
            Source::Subject(Subject::TenantMembers(k)) => Some(self.random_user_of_tenant(rng, k)),
            Source::Subject(Subject::AllUsers) => {
                if rng.percent(50) {
                    Some(self.random_user_of_tenant(rng, tenant))
                } else {
                    Some(rng.below32(self.org.users()))
                }
            }
            Source::Admins(k) => {
                let admins = &self.org.tenants.get(k as usize)?.admins;
                admins.get(rng.below(admins.len() as u64) as usize).copied()
            }
            Source::Maintainer(t) => self.org.team_maintainer.get(t as usize).copied(),
        }
    }

    /// Grants on the way up from folder `f`, level by level.
    fn folder_sources(&self, f: u32, edit: bool, levels: &mut Vec<Vec<Source>>) {
        let mut x = f;
        while x != NONE {
            let level: Vec<Source> = self
                .org
                .folder_grants
                .row(x)
                .iter()
                .filter(|g| {
                    g.rel == Rel::Owner || g.rel == Rel::Editor || (!edit && g.rel == Rel::Viewer)
                })
                .map(|g| Source::Subject(g.subject))
                .collect();
            levels.push(level);
            let parent = self.org.folder_parent[x as usize];
            if parent == NONE {
                levels.push(vec![Source::Admins(self.org.tenant_of(x, |t| &t.folders))]);
            }
            x = parent;
        }
    }

    /// A source from `levels`: rarely the tenant's admins (the last level when the
    /// walk reached a root folder), sometimes one of the farthest grant (the deep
    /// questions), usually any grant.
    fn choose(rng: &mut Rng, levels: &[Vec<Source>]) -> Option<Source> {
        let (grants, admins) = match levels.last() {
            Some(last) if matches!(last.first(), Some(Source::Admins(_))) => {
                (&levels[..levels.len() - 1], last.first().copied())
            }
            _ => (levels, None),
        };
        if admins.is_some() && rng.percent(3) {
            return admins;
        }
        let non_empty: Vec<&Vec<Source>> = grants.iter().filter(|l| !l.is_empty()).collect();
        let level = if rng.percent(35) {
            *non_empty.last()?
        } else {
            let all: usize = non_empty.iter().map(|l| l.len()).sum();
            let mut i = rng.below(all as u64) as usize;
            let mut found = None;
            for l in &non_empty {
                if i < l.len() {
                    found = Some(*l);
                    break;
                }
                i -= l.len();
            }
            found?
        };
        level.get(rng.below(level.len() as u64) as usize).copied()
    }

    /// A question for query kind `kind` that aims to be allowed (`want`) or denied.
    fn propose(&self, rng: &mut Rng, kind: usize, want: bool) -> Option<(Target, u32)> {
        let org = self.org;
        let (target, tenant, levels) = match kind {
            0 if rng.percent(5) => {
                // The deepest question: the document in the deepest folder of a chain,
                // a member of the deepest team of the chain (allowed through the
                // chain's root folder shared with the chain's root team) or not.
                let k = rng.below32(org.tenants.len() as u32);
                let tenant = org.tenants.get(k as usize)?;
                let target = Target::Document {
                    id: tenant.documents.start,
                    edit: false,
                };
                let deepest = tenant.teams.start + u32::from(super::MAX_TEAM_DEPTH) - 1;
                let user = if want {
                    let members = org.team_members.row(deepest);
                    *members.get(rng.below(members.len() as u64) as usize)?
                } else {
                    self.random_user_of_tenant(rng, k)
                };
                return Some((target, user));
            }
            0 | 1 => {
                let d = self.documents.sample(rng) as u32;
                let edit = kind == 1;
                let grants = org.document_grants.row(d);
                let tenant = org.tenant_of(d, |t| &t.documents);
                if !want && rng.percent(25) {
                    let banned: Vec<u32> = grants
                        .iter()
                        .filter_map(|g| match (g.rel, g.subject) {
                            (Rel::Banned, Subject::User(u)) => Some(u),
                            _ => None,
                        })
                        .collect();
                    if !banned.is_empty() {
                        let u = banned[rng.below(banned.len() as u64) as usize];
                        return Some((Target::Document { id: d, edit }, u));
                    }
                }
                let mut levels = vec![grants
                    .iter()
                    .filter(|g| {
                        g.rel == Rel::Owner
                            || g.rel == Rel::Editor
                            || (!edit && g.rel == Rel::Viewer)
                    })
                    .map(|g| Source::Subject(g.subject))
                    .collect::<Vec<_>>()];
                if want {
                    let f = org.document_folder[d as usize];
                    if f != NONE {
                        self.folder_sources(f, edit, &mut levels);
                    }
                }
                (Target::Document { id: d, edit }, tenant, levels)
            }
            2 => {
                let f = rng.below32(org.folders());
                let mut levels = Vec::new();
                if want {
                    self.folder_sources(f, false, &mut levels);
                }
                (Target::Folder(f), org.tenant_of(f, |t| &t.folders), levels)
            }
            _ => {
                let t = rng.below32(org.teams());
                let levels = vec![vec![
                    Source::Maintainer(t),
                    Source::Subject(Subject::Team(t)),
                    Source::Subject(Subject::Team(t)),
                    Source::Subject(Subject::Team(t)),
                ]];
                (Target::Team(t), org.tenant_of(t, |t| &t.teams), levels)
            }
        };
        let user = if want {
            let source = Self::choose(rng, &levels)?;
            self.resolve(rng, source, tenant)?
        } else if rng.percent(10) {
            rng.below32(org.users())
        } else {
            self.random_user_of_tenant(rng, tenant)
        };
        Some((target, user))
    }
}

fn write_query(
    out: &mut impl Write,
    target: Target,
    user: u32,
    line: &mut Vec<u8>,
) -> io::Result<()> {
    line.clear();
    let (prefix, id, permission): (&str, u32, &str) = match target {
        Target::Document { id, edit } => ("document:d", id, if edit { "#edit@" } else { "#view@" }),
        Target::Folder(f) => ("folder:f", f, "#view@"),
        Target::Team(t) => ("team:t", t, "#membership@"),
    };
    line.extend_from_slice(prefix.as_bytes());
    push_decimal(line, id);
    line.extend_from_slice(permission.as_bytes());
    line.extend_from_slice(b"user:u");
    push_decimal(line, user);
    line.push(b'\n');
    out.write_all(line)
}

/// Writes `n` queries and their answers.
pub fn write_queries(
    org: &Org,
    rng: &mut Rng,
    n: u64,
    queries: &mut impl Write,
    expected: &mut impl Write,
) -> io::Result<QueryStats> {
    let picker = Picker {
        org,
        documents: Zipf::new(org.documents() as usize, Exponent::Half, rng.next_u64()),
    };
    let mut stats = QueryStats::default();
    let mut scratch = Vec::new();
    let mut line = Vec::with_capacity(64);
    for _ in 0..n {
        let want = rng.next_u64() & 1 == 1;
        let kind = QUERY_KINDS.sample(rng);
        let mut chosen = None;
        for _ in 0..TRIES {
            let Some((target, user)) = picker.propose(rng, kind, want) else {
                continue;
            };
            let answer = org.allowed(target, user, &mut scratch);
            chosen = Some((target, user, answer));
            if answer == want {
                break;
            }
        }
        let (target, user, answer) = match chosen {
            Some(c) => c,
            None => {
                // Every document has an owner: fall back to the owner of document 0.
                let target = Target::Document { id: 0, edit: false };
                let owner = org
                    .document_grants
                    .row(0)
                    .iter()
                    .find_map(|g| match (g.rel, g.subject) {
                        (Rel::Owner, Subject::User(u)) => Some(u),
                        _ => None,
                    })
                    .unwrap_or(0);
                (target, owner, org.allowed(target, owner, &mut scratch))
            }
        };
        write_query(queries, target, user, &mut line)?;
        expected.write_all(if answer { b"true\n" } else { b"false\n" })?;
        stats.allowed += u64::from(answer);
        let kind = match target {
            Target::Document { edit: false, .. } => 0,
            Target::Document { edit: true, .. } => 1,
            Target::Folder(_) => 2,
            Target::Team(_) => 3,
        };
        stats.by_kind[kind].0 += 1;
        stats.by_kind[kind].1 += u64::from(answer);
    }
    Ok(stats)
}
