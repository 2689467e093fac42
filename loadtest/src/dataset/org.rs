//! The generated organisation held in memory (compact arrays, global integer ids) and
//! an exact evaluator of `schema.zed` over it, so that `expected.txt` is computed rather
//! than guessed.

use std::ops::Range;

/// No parent / no folder.
pub const NONE: u32 = u32::MAX;

/// A direct relation of a folder or document to a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Owner,
    Editor,
    Viewer,
    Banned,
}

/// The subject of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    User(u32),
    /// `team:T#member`
    Team(u32),
    /// `tenant:K#member`
    TenantMembers(u32),
    /// `user:*`
    AllUsers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub rel: Rel,
    pub subject: Subject,
}

/// The id ranges of one tenant's objects and its admins. The first
/// `MAX_TEAM_DEPTH` teams and `MAX_FOLDER_DEPTH` folders of a tenant form chains; the
/// first document lies in the deepest folder.
#[derive(Debug, Clone, Default)]
pub struct Tenant {
    pub users: Range<u32>,
    pub teams: Range<u32>,
    pub folders: Range<u32>,
    pub documents: Range<u32>,
    pub admins: Vec<u32>,
}

/// A check question over the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `document:D#view` (`edit` false) or `#edit`.
    Document { id: u32, edit: bool },
    /// `folder:F#view`
    Folder(u32),
    /// `team:T#membership`
    Team(u32),
}

/// Compressed rows: the items of row `i` are `items[offsets[i]..offsets[i+1]]`.
#[derive(Debug, Clone)]
pub struct Rows<T> {
    offsets: Vec<u32>,
    items: Vec<T>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            items: Vec::new(),
        }
    }
}

impl<T> Rows<T> {
    /// Appends to the row being built (the last one).
    pub fn push(&mut self, item: T) {
        self.items.push(item);
    }

    /// Closes the row being built and starts the next.
    pub fn end_row(&mut self) {
        self.offsets.push(self.items.len() as u32);
    }

    /// The items of the row being built.
    pub fn open_row(&self) -> &[T] {
        let start = self.offsets.last().copied().unwrap_or(0) as usize;
        self.items.get(start..).unwrap_or(&[])
    }

    pub fn row(&self, i: u32) -> &[T] {
        let i = i as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.items.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }
}

impl Rows<u32> {
    /// Groups `(row, item)` pairs into `n` rows, keeping the pairs' order within a row.
    pub fn from_pairs(n: usize, pairs: impl Iterator<Item = (u32, u32)> + Clone) -> Self {
        let mut counts = vec![0u32; n + 1];
        for (r, _) in pairs.clone() {
            counts[r as usize + 1] += 1;
        }
        for i in 1..=n {
            counts[i] += counts[i - 1];
        }
        let offsets = counts.clone();
        let mut fill = counts;
        let mut items = vec![0u32; offsets[n] as usize];
        for (r, x) in pairs {
            let slot = &mut fill[r as usize];
            items[*slot as usize] = x;
            *slot += 1;
        }
        Self { offsets, items }
    }
}

/// The whole organisation, every id global (`user:u7` is user 7 of all tenants).
#[derive(Debug, Clone, Default)]
pub struct Org {
    pub tenants: Vec<Tenant>,
    pub team_parent: Vec<u32>,
    pub team_depth: Vec<u8>,
    pub team_maintainer: Vec<u32>,
    /// The teams each user is a direct member of.
    pub user_teams: Rows<u32>,
    pub folder_parent: Vec<u32>,
    pub folder_depth: Vec<u8>,
    pub folder_grants: Rows<Grant>,
    pub document_folder: Vec<u32>,
    pub document_grants: Rows<Grant>,
    /// Built by [`Org::index`]: child teams and direct user members of each team.
    pub team_children: Rows<u32>,
    pub team_members: Rows<u32>,
}

impl Org {
    pub fn users(&self) -> u32 {
        self.user_teams.rows() as u32
    }

    pub fn teams(&self) -> u32 {
        self.team_parent.len() as u32
    }

    pub fn folders(&self) -> u32 {
        self.folder_parent.len() as u32
    }

    pub fn documents(&self) -> u32 {
        self.document_folder.len() as u32
    }

    /// Builds the reverse indexes used to pick allowed questions.
    pub fn index(&mut self) {
        let parents = &self.team_parent;
        self.team_children = Rows::from_pairs(
            parents.len(),
            parents
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != NONE)
                .map(|(c, &p)| (p, c as u32)),
        );
        let user_teams = &self.user_teams;
        self.team_members = Rows::from_pairs(
            parents.len(),
            (0..user_teams.rows() as u32)
                .flat_map(move |u| user_teams.row(u).iter().map(move |&t| (t, u))),
        );
    }

    /// The tenant owning an object, from the id ranges.
    pub fn tenant_of(&self, id: u32, range: impl Fn(&Tenant) -> &Range<u32>) -> u32 {
        let i = self.tenants.partition_point(|t| range(t).end <= id);
        i.min(self.tenants.len().saturating_sub(1)) as u32
    }

    pub fn tenant_of_user(&self, u: u32) -> u32 {
        self.tenant_of(u, |t| &t.users)
    }

    /// Every team `u` is a member of: its direct teams and their ancestors (a parent's
    /// `member` includes its child teams' members).
    pub fn teams_of_user(&self, u: u32, out: &mut Vec<u32>) {
        out.clear();
        for &t in self.user_teams.row(u) {
            let mut x = t;
            while x != NONE {
                if !out.contains(&x) {
                    out.push(x);
                }
                x = self.team_parent.get(x as usize).copied().unwrap_or(NONE);
            }
        }
    }

    fn grant_allows(&self, g: Grant, edit: bool, u: u32, tenant: u32, teams: &[u32]) -> bool {
        let rel_ok = match g.rel {
            Rel::Owner | Rel::Editor => true,
            Rel::Viewer => !edit,
            Rel::Banned => false,
        };
        rel_ok
            && match g.subject {
                Subject::User(x) => x == u,
                Subject::Team(t) => teams.contains(&t),
                Subject::TenantMembers(k) => k == tenant,
                Subject::AllUsers => true,
            }
    }

    /// `folder:f#edit` (`edit`) or `#view` for user `u`.
    fn folder_allows(&self, f: u32, edit: bool, u: u32, tenant: u32, teams: &[u32]) -> bool {
        let mut x = f;
        while x != NONE {
            if self
                .folder_grants
                .row(x)
                .iter()
                .any(|&g| self.grant_allows(g, edit, u, tenant, teams))
            {
                return true;
            }
            let parent = self.folder_parent.get(x as usize).copied().unwrap_or(NONE);
            if parent == NONE {
                // A root folder: `tenant->administer`.
                let k = self.tenant_of(x, |t| &t.folders);
                if self
                    .tenants
                    .get(k as usize)
                    .is_some_and(|t| t.admins.contains(&u))
                {
                    return true;
                }
            }
            x = parent;
        }
        false
    }

    /// The answer of the schema for `target` and `user:u`; `scratch` is reused memory.
    pub fn allowed(&self, target: Target, u: u32, scratch: &mut Vec<u32>) -> bool {
        self.teams_of_user(u, scratch);
        let tenant = self.tenant_of_user(u);
        let teams = scratch.as_slice();
        match target {
            Target::Team(t) => {
                self.team_maintainer.get(t as usize) == Some(&u) || teams.contains(&t)
            }
            Target::Folder(f) => self.folder_allows(f, false, u, tenant, teams),
            Target::Document { id, edit } => {
                let grants = self.document_grants.row(id);
                let banned = grants
                    .iter()
                    .any(|g| g.rel == Rel::Banned && g.subject == Subject::User(u));
                if banned {
                    return false;
                }
                if grants
                    .iter()
                    .any(|&g| self.grant_allows(g, edit, u, tenant, teams))
                {
                    return true;
                }
                let f = self
                    .document_folder
                    .get(id as usize)
                    .copied()
                    .unwrap_or(NONE);
                f != NONE && self.folder_allows(f, edit, u, tenant, teams)
            }
        }
    }
}
