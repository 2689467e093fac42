//! The Cedar-alone baseline: the schema's rules written as Cedar policies, evaluated by
//! Cedar's `Authorizer` over the entities each request needs, materialised per request
//! from the caller's own store (here, maps read from `relationships.txt`), as a caller
//! without a relationship store runs Cedar.
//!
//! The encoding:
//!
//! - `User` entities have as parents the teams naming them as a direct member and the
//!   tenants they are a `member` of; `Team` entities have their parent teams as parents
//!   (`team:P#member@team:C#member` makes `P` a parent of `C`) and a `maintainers` set.
//!   So `principal in Team::"t"` is `team:t#member` (through any nesting), and
//!   `principal in Tenant::"k"` is `tenant:k#member`.
//! - `Tenant` entities carry `admins`, a set of users.
//! - `Folder` entities carry `owners`, `editors`, `viewers` (sets of users, teams and
//!   tenants: `principal in resource.viewers` covers a direct grant, a grant to a team
//!   the user is in through nested teams, and a grant to a tenant's members), and the
//!   optional `parent` (a folder) and `tenant`.
//! - `Document` entities carry the same three sets, `banned` (users), `public` (Bool,
//!   `user:*` on viewer) and the optional `folder`.
//!
//! Cedar has no recursion, so the folder chain is followed by attribute paths
//! (`resource.folder.parent.parent...`), one policy per level up to the generator's
//! `MAX_FOLDER_DEPTH`, each guarded by `has`; `load` refuses a dataset with a longer
//! chain. Bans are a `forbid`. The materialiser only fetches entities: the principal and
//! its ancestor teams and tenants, the resource and its folder chain, and the tenants the
//! chain names; Cedar computes the answer.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context as _, Result};
use arbiter_loadtest::dataset::MAX_FOLDER_DEPTH;
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};

use super::postgres::{for_each_fact, id_number, Fact, Resource, Role, Subject};
use super::{Dataset, Query, QueryKind};

/// A folder's or document's owner, editor and viewer grants (`user:*` is kept apart).
#[derive(Debug, Default)]
struct Grants {
    owners: Vec<Subject>,
    editors: Vec<Subject>,
    viewers: Vec<Subject>,
}

impl Grants {
    fn add(&mut self, role: Role, subject: Subject) {
        match role {
            Role::Owner => self.owners.push(subject),
            Role::Editor => self.editors.push(subject),
            Role::Viewer => self.viewers.push(subject),
        }
    }
}

#[derive(Debug, Default)]
struct UserRecord {
    /// Teams naming the user as a direct member.
    teams: Vec<u32>,
    /// Tenants the user is a `member` of.
    tenants: Vec<u32>,
}

#[derive(Debug, Default)]
struct TeamRecord {
    /// Teams this team's members are members of (`team:P#member@team:this#member`).
    parents: Vec<u32>,
    maintainers: Vec<u32>,
}

#[derive(Debug, Default)]
struct FolderRecord {
    parent: Option<u32>,
    tenant: Option<u32>,
    grants: Grants,
}

#[derive(Debug, Default)]
struct DocumentRecord {
    folder: Option<u32>,
    grants: Grants,
    public: bool,
    banned: Vec<u32>,
}

#[derive(Debug, Default)]
struct TenantRecord {
    admins: Vec<u32>,
}

/// The caller's store: what it knows of each object, by numeric id.
#[derive(Debug, Default)]
struct Store {
    users: HashMap<u32, UserRecord>,
    teams: HashMap<u32, TeamRecord>,
    folders: HashMap<u32, FolderRecord>,
    documents: HashMap<u32, DocumentRecord>,
    tenants: HashMap<u32, TenantRecord>,
}

/// Sets a single-valued attribute, refusing a second, different value.
fn set_once(slot: &mut Option<u32>, value: u32, what: impl FnOnce() -> String) -> Result<()> {
    match *slot {
        Some(old) if old != value => bail!(
            "{} is both {old} and {value}: the Cedar encoding follows one",
            what()
        ),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

impl Store {
    fn add(&mut self, fact: Fact) -> Result<()> {
        match fact {
            Fact::TenantMember { tenant, user } => {
                self.users.entry(user).or_default().tenants.push(tenant);
            }
            Fact::TenantAdmin { tenant, user } => {
                self.tenants.entry(tenant).or_default().admins.push(user);
            }
            Fact::TeamMaintainer { team, user } => {
                self.teams.entry(team).or_default().maintainers.push(user);
            }
            Fact::TeamMemberUser { team, user } => {
                self.users.entry(user).or_default().teams.push(team);
            }
            Fact::TeamMemberTeam { team, child } => {
                self.teams.entry(child).or_default().parents.push(team);
            }
            Fact::FolderTenant { folder, tenant } => {
                let f = self.folders.entry(folder).or_default();
                set_once(&mut f.tenant, tenant, || {
                    format!("the tenant of folder f{folder}")
                })?;
            }
            Fact::FolderParent { folder, parent } => {
                let f = self.folders.entry(folder).or_default();
                set_once(&mut f.parent, parent, || {
                    format!("the parent of folder f{folder}")
                })?;
            }
            Fact::DocumentFolder { document, folder } => {
                let d = self.documents.entry(document).or_default();
                set_once(&mut d.folder, folder, || {
                    format!("the folder of document d{document}")
                })?;
            }
            Fact::Grant {
                resource,
                role,
                subject,
            } => match resource {
                Resource::Folder(f) => {
                    if subject == Subject::AllUsers {
                        bail!("folder f{f}: a grant to user:* has no place in the encoding");
                    }
                    self.folders.entry(f).or_default().grants.add(role, subject);
                }
                Resource::Document(d) => {
                    let doc = self.documents.entry(d).or_default();
                    if subject == Subject::AllUsers {
                        if role != Role::Viewer {
                            bail!("document d{d}: user:* is only a viewer");
                        }
                        doc.public = true;
                    } else {
                        doc.grants.add(role, subject);
                    }
                }
            },
            Fact::Banned { document, user } => {
                self.documents
                    .entry(document)
                    .or_default()
                    .banned
                    .push(user);
            }
        }
        Ok(())
    }

    /// Refuses folder chains longer than the policies follow (or cyclic).
    fn check_folder_depth(&self) -> Result<()> {
        let max = usize::from(MAX_FOLDER_DEPTH);
        for (&start, _) in self.folders.iter() {
            let mut x = start;
            let mut levels = 1;
            while let Some(p) = self.folders.get(&x).and_then(|f| f.parent) {
                levels += 1;
                if levels > max {
                    bail!(
                        "folder f{start} is more than {max} levels deep (or its chain is a cycle): \
                         the policies follow {max}"
                    );
                }
                x = p;
            }
        }
        Ok(())
    }
}

/// A folder at attribute path `path`: may the principal edit it (`edit`) or view it,
/// from its own grants and its tenant's admins (the chain is the caller's business).
fn folder_allows(path: &str, edit: bool) -> String {
    let mut grants = format!("principal in {path}.owners || principal in {path}.editors");
    if !edit {
        grants.push_str(&format!(" || principal in {path}.viewers"));
    }
    format!("{grants} || ({path} has tenant && principal in {path}.tenant.admins)")
}

/// The folder chain from `base` (guarded by `base_guard`): for each level, the guard that
/// the level exists and its attribute path.
fn chain_levels(base_guard: Option<&str>, base: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut guards: Vec<String> = base_guard.map(str::to_string).into_iter().collect();
    let mut path = base.to_string();
    for _ in 0..MAX_FOLDER_DEPTH {
        let guard = if guards.is_empty() {
            "true".to_string()
        } else {
            guards.join(" && ")
        };
        out.push((guard, path.clone()));
        guards.push(format!("{path} has parent"));
        path.push_str(".parent");
    }
    out
}

/// The policy set: `schema.zed`'s permissions in Cedar.
fn policies_text() -> String {
    let mut p = String::from(
        r#"// document: owner, editor, viewer (and user:*) grant view; owner and editor edit.
@id("document-view-direct")
permit (principal is User, action == Action::"view", resource is Document)
when {
    principal in resource.owners || principal in resource.editors ||
    principal in resource.viewers || resource.public
};

@id("document-edit-direct")
permit (principal is User, action == Action::"edit", resource is Document)
when { principal in resource.owners || principal in resource.editors };

// document: banned users lose view and edit, whatever grants them.
@id("document-banned")
forbid (principal is User, action in [Action::"view", Action::"edit"], resource is Document)
when { resource.banned.contains(principal) };

// team#membership = maintainer + member (member through nested teams: the hierarchy).
@id("team-membership")
permit (principal is User, action == Action::"membership", resource is Team)
when { principal in resource || principal in resource.maintainers };

"#,
    );
    // folder->view / folder->edit, one level of the chain a policy.
    for (level, (guard, path)) in chain_levels(Some("resource has folder"), "resource.folder")
        .into_iter()
        .enumerate()
    {
        for (action, edit) in [("view", false), ("edit", true)] {
            p.push_str(&format!(
                "@id(\"document-{action}-folder-{level}\")\n\
                 permit (principal is User, action == Action::\"{action}\", resource is Document)\n\
                 when {{ {guard} && ({}) }};\n\n",
                folder_allows(&path, edit)
            ));
        }
    }
    for (level, (guard, path)) in chain_levels(None, "resource").into_iter().enumerate() {
        p.push_str(&format!(
            "@id(\"folder-view-{level}\")\n\
             permit (principal is User, action == Action::\"view\", resource is Folder)\n\
             when {{ {guard} && ({}) }};\n\n",
            folder_allows(&path, false)
        ));
    }
    p
}

/// The entity type names and actions, parsed once.
#[derive(Debug)]
struct Names {
    user: EntityTypeName,
    team: EntityTypeName,
    tenant: EntityTypeName,
    folder: EntityTypeName,
    document: EntityTypeName,
    view: EntityUid,
    edit: EntityUid,
    membership: EntityUid,
}

impl Names {
    fn new() -> Result<Names> {
        let ty = |n: &str| EntityTypeName::from_str(n).with_context(|| format!("entity type {n}"));
        let action = |a: &str| {
            EntityUid::from_str(&format!("Action::\"{a}\"")).with_context(|| format!("action {a}"))
        };
        Ok(Names {
            user: ty("User")?,
            team: ty("Team")?,
            tenant: ty("Tenant")?,
            folder: ty("Folder")?,
            document: ty("Document")?,
            view: action("view")?,
            edit: action("edit")?,
            membership: action("membership")?,
        })
    }

    fn uid(ty: &EntityTypeName, prefix: &str, id: u32) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(format!("{prefix}{id}")))
    }

    fn user(&self, id: u32) -> EntityUid {
        Self::uid(&self.user, "u", id)
    }

    fn team(&self, id: u32) -> EntityUid {
        Self::uid(&self.team, "t", id)
    }

    fn tenant(&self, id: u32) -> EntityUid {
        Self::uid(&self.tenant, "org", id)
    }

    fn folder(&self, id: u32) -> EntityUid {
        Self::uid(&self.folder, "f", id)
    }

    fn document(&self, id: u32) -> EntityUid {
        Self::uid(&self.document, "d", id)
    }

    fn subject(&self, s: Subject) -> Option<EntityUid> {
        match s {
            Subject::User(u) => Some(self.user(u)),
            Subject::TeamMembers(t) => Some(self.team(t)),
            Subject::TenantMembers(k) => Some(self.tenant(k)),
            Subject::AllUsers => None,
        }
    }
}

/// Cedar with the schema's rules as policies; entities materialised per request.
#[derive(Debug)]
pub struct CedarAlone {
    store: Store,
    policies: PolicySet,
    authorizer: Authorizer,
    names: Names,
}

/// The entities of one request, each once.
struct Materialised<'a> {
    store: &'a Store,
    names: &'a Names,
    entities: Vec<Entity>,
    teams: HashSet<u32>,
    tenants: HashSet<u32>,
}

fn entity_set(uids: impl IntoIterator<Item = EntityUid>) -> RestrictedExpression {
    RestrictedExpression::new_set(uids.into_iter().map(RestrictedExpression::new_entity_uid))
}

impl Materialised<'_> {
    fn push(
        &mut self,
        uid: EntityUid,
        attrs: HashMap<String, RestrictedExpression>,
        parents: HashSet<EntityUid>,
    ) -> Result<()> {
        let entity = Entity::new(uid.clone(), attrs, parents)
            .with_context(|| format!("build entity {uid}"))?;
        self.entities.push(entity);
        Ok(())
    }

    fn grants(&self, g: &Grants, attrs: &mut HashMap<String, RestrictedExpression>) {
        let set = |subjects: &[Subject]| {
            entity_set(subjects.iter().filter_map(|&s| self.names.subject(s)))
        };
        attrs.insert("owners".into(), set(&g.owners));
        attrs.insert("editors".into(), set(&g.editors));
        attrs.insert("viewers".into(), set(&g.viewers));
    }

    fn tenant(&mut self, k: u32) -> Result<()> {
        if !self.tenants.insert(k) {
            return Ok(());
        }
        let admins = self
            .store
            .tenants
            .get(&k)
            .map(|t| t.admins.as_slice())
            .unwrap_or_default();
        let attrs = HashMap::from([(
            "admins".to_string(),
            entity_set(admins.iter().map(|&u| self.names.user(u))),
        )]);
        self.push(self.names.tenant(k), attrs, HashSet::new())
    }

    /// Team `t` and, with `ancestors`, every team above it.
    fn team(&mut self, t: u32, ancestors: bool) -> Result<()> {
        let mut todo = vec![t];
        while let Some(t) = todo.pop() {
            if !self.teams.insert(t) {
                continue;
            }
            let record = self.store.teams.get(&t);
            let parents: &[u32] = record.map(|r| r.parents.as_slice()).unwrap_or_default();
            let maintainers: &[u32] = record.map(|r| r.maintainers.as_slice()).unwrap_or_default();
            let attrs = HashMap::from([(
                "maintainers".to_string(),
                entity_set(maintainers.iter().map(|&u| self.names.user(u))),
            )]);
            let parent_uids = parents.iter().map(|&p| self.names.team(p)).collect();
            self.push(self.names.team(t), attrs, parent_uids)?;
            if ancestors {
                todo.extend_from_slice(parents);
            }
        }
        Ok(())
    }

    /// The principal, its teams and their ancestors, and its tenants.
    fn user(&mut self, u: u32) -> Result<EntityUid> {
        let uid = self.names.user(u);
        let record = self.store.users.get(&u);
        let teams: &[u32] = record.map(|r| r.teams.as_slice()).unwrap_or_default();
        let tenants: &[u32] = record.map(|r| r.tenants.as_slice()).unwrap_or_default();
        let parents = teams
            .iter()
            .map(|&t| self.names.team(t))
            .chain(tenants.iter().map(|&k| self.names.tenant(k)))
            .collect();
        self.push(uid.clone(), HashMap::new(), parents)?;
        for &t in teams {
            self.team(t, true)?;
        }
        for &k in tenants {
            self.tenant(k)?;
        }
        Ok(uid)
    }

    /// Folder `f` and the folders above it, with the tenants they name.
    fn folder_chain(&mut self, f: u32) -> Result<()> {
        let mut next = Some(f);
        let mut seen = HashSet::new();
        while let Some(f) = next {
            if !seen.insert(f) {
                bail!("folder f{f} is its own ancestor");
            }
            let Some(record) = self.store.folders.get(&f) else {
                // Unknown to the store: an entity with no grants.
                let mut attrs = HashMap::new();
                self.grants(&Grants::default(), &mut attrs);
                return self.push(self.names.folder(f), attrs, HashSet::new());
            };
            let mut attrs = HashMap::new();
            self.grants(&record.grants, &mut attrs);
            if let Some(p) = record.parent {
                attrs.insert(
                    "parent".into(),
                    RestrictedExpression::new_entity_uid(self.names.folder(p)),
                );
            }
            if let Some(k) = record.tenant {
                attrs.insert(
                    "tenant".into(),
                    RestrictedExpression::new_entity_uid(self.names.tenant(k)),
                );
                self.tenant(k)?;
            }
            self.push(self.names.folder(f), attrs, HashSet::new())?;
            next = record.parent;
        }
        Ok(())
    }

    fn document(&mut self, d: u32) -> Result<EntityUid> {
        let uid = self.names.document(d);
        let empty = DocumentRecord::default();
        let record = self.store.documents.get(&d).unwrap_or(&empty);
        let mut attrs = HashMap::new();
        self.grants(&record.grants, &mut attrs);
        attrs.insert(
            "banned".into(),
            entity_set(record.banned.iter().map(|&u| self.names.user(u))),
        );
        attrs.insert(
            "public".into(),
            RestrictedExpression::new_bool(record.public),
        );
        if let Some(f) = record.folder {
            attrs.insert(
                "folder".into(),
                RestrictedExpression::new_entity_uid(self.names.folder(f)),
            );
        }
        self.push(uid.clone(), attrs, HashSet::new())?;
        if let Some(f) = record.folder {
            self.folder_chain(f)?;
        }
        Ok(uid)
    }
}

impl CedarAlone {
    /// Reads relationships.txt into the store's maps and compiles the policy set.
    pub fn load(dataset: &Dataset) -> Result<CedarAlone> {
        let mut store = Store::default();
        for_each_fact(&dataset.relationships_path(), |fact| store.add(fact))?;
        store.check_folder_depth()?;
        let text = policies_text();
        let policies = PolicySet::from_str(&text)
            .map_err(|e| anyhow!("compile the Cedar policies: {e}\n{text}"))?;
        Ok(CedarAlone {
            store,
            policies,
            authorizer: Authorizer::new(),
            names: Names::new()?,
        })
    }

    /// Materialises the request's entities and asks Cedar.
    pub fn check(&self, q: &Query) -> Result<bool> {
        let user =
            id_number(&q.user, "u", "user").with_context(|| format!("query `{}`", q.line()))?;
        let mut m = Materialised {
            store: &self.store,
            names: &self.names,
            entities: Vec::new(),
            teams: HashSet::new(),
            tenants: HashSet::new(),
        };
        let principal = m.user(user)?;
        let (action, resource) = match q.kind {
            QueryKind::DocumentView | QueryKind::DocumentEdit => {
                let d = id_number(&q.resource, "d", "document")
                    .with_context(|| format!("query `{}`", q.line()))?;
                let action = if q.kind == QueryKind::DocumentEdit {
                    &self.names.edit
                } else {
                    &self.names.view
                };
                (action, m.document(d)?)
            }
            QueryKind::FolderView => {
                let f = id_number(&q.resource, "f", "folder")
                    .with_context(|| format!("query `{}`", q.line()))?;
                m.folder_chain(f)?;
                (&self.names.view, self.names.folder(f))
            }
            QueryKind::TeamMembership => {
                let t = id_number(&q.resource, "t", "team")
                    .with_context(|| format!("query `{}`", q.line()))?;
                m.team(t, false)?;
                (&self.names.membership, self.names.team(t))
            }
        };
        let entities = Entities::from_entities(m.entities, None)
            .with_context(|| format!("build the entities of `{}`", q.line()))?;
        let request = Request::new(principal, action.clone(), resource, Context::empty(), None)
            .with_context(|| format!("build the Cedar request of `{}`", q.line()))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            bail!(
                "Cedar could not evaluate `{}`: {}",
                q.line(),
                errors.join("; ")
            );
        }
        Ok(response.decision() == Decision::Allow)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::postgres::tests::shared_dataset;
    use super::*;

    fn send_and_sync<T: Send + Sync>() {}

    #[test]
    fn cedar_alone_is_send_and_sync() {
        send_and_sync::<CedarAlone>();
    }

    #[test]
    fn policies_follow_the_whole_folder_chain() {
        let text = policies_text();
        let policies = PolicySet::from_str(&text).unwrap();
        // 4 fixed, then view and edit for documents and view for folders at every level.
        let levels = usize::from(MAX_FOLDER_DEPTH);
        assert_eq!(policies.policies().count(), 4 + 3 * levels);
        let deepest = format!("resource{}", ".parent".repeat(levels - 1));
        assert!(text.contains(&format!("{deepest}.tenant.admins")), "{text}");
        assert!(!text.contains(&format!("{deepest}.parent")), "{text}");
    }

    fn agree(relationships: u64) -> Result<()> {
        let data = shared_dataset(relationships)?;
        let started = Instant::now();
        let cedar = CedarAlone::load(&data)?;
        let loaded = started.elapsed();
        let started = Instant::now();
        let mut wrong = Vec::new();
        for (q, &want) in data.queries.iter().zip(&data.expected) {
            if cedar.check(q)? != want {
                wrong.push(q.line());
            }
        }
        let checked = started.elapsed();
        let n = data.queries.len();
        println!(
            "cedar: {} relationships loaded in {loaded:.2?}; {n} checks ({} allowed) in {checked:.2?} ({:.1} us each)",
            data.relationships,
            data.expected.iter().filter(|&&a| a).count(),
            checked.as_secs_f64() * 1e6 / n as f64,
        );
        assert!(
            wrong.is_empty(),
            "{} checks disagree with expected.txt, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
        Ok(())
    }

    #[test]
    fn cedar_agrees_with_expected() -> Result<()> {
        agree(20_000)
    }

    /// By hand, at scale (release build):
    /// `ARBITER_BASELINE_RELATIONSHIPS=1000000 cargo test --release -p arbiter-benches
    /// --no-default-features --features baselines --lib -- --ignored --nocapture cedar_at_scale`
    #[test]
    #[ignore = "slow: run by hand at scale"]
    fn cedar_at_scale() -> Result<()> {
        let n = std::env::var("ARBITER_BASELINE_RELATIONSHIPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        agree(n)
    }
}
