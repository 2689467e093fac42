//! A compiled schema bound to the symbol table: the per-schema lookup tables evaluation
//! needs (type and relation names as symbols, and back).

use arbiter_schema::{AllowedKind, AllowedSubject, ArrowKind, CompiledSchema, RelationId, RelationKind, Rewrite, TypeId};
use rustc_hash::FxHashMap;

use crate::intern::{Interner, Sym};

#[derive(Debug)]
pub struct SchemaPlan {
    pub schema: CompiledSchema,
    /// The schema text as written.
    pub text: String,
    type_syms: Vec<Sym>,
    rel_syms: Vec<Vec<Sym>>,
    type_by_sym: FxHashMap<Sym, TypeId>,
    rel_by_sym: FxHashMap<(TypeId, Sym), RelationId>,
    /// `(T, r)` -> permissions of `T` whose rewrite names `r` on the same object.
    computed_dependents: FxHashMap<(TypeId, RelationId), Vec<RelationId>>,
    /// `(T, r)` -> `(D, tupleset, P)` for every arrow `tupleset->...` in permission `P`
    /// of `D` that lands on `r` of `T`.
    arrow_dependents: FxHashMap<(TypeId, RelationId), Vec<ArrowDependent>>,
    /// Some permission reaches itself through computed usersets on the same object
    /// (`a = b`, `b = a + x`): evaluation must then track every node for cycles.
    local_cycles: bool,
    /// Per type, per relation: what its subject sets make it (see [`Subjects`]).
    subjects: Vec<Vec<Subjects>>,
    /// The nesting relations ([`Subjects::Nesting`]) as `(type, relation)` symbols.
    nesting: Vec<(Sym, Sym)>,
    /// The same relations by schema id.
    nesting_ids: Vec<(TypeId, RelationId)>,
    /// Per type with arrows (by symbol), the tupleset relations its permissions' arrows
    /// read (symbols): the hops a Check on an object of that type may take to others.
    arrow_hops: Vec<(Sym, Vec<Sym>)>,
    /// Per type, per relation: the permission as a climb, where it is one (see [`Chain`]).
    chains: Vec<Vec<Option<Chain>>>,
    /// The tenant gate, when the schema has one (see [`TenantGate`]).
    tenant_gate: Option<TenantGate>,
}

/// The tenant gate (DESIGN §12: an application type that belongs to a tenant says so
/// with `relation tenant: platform/tenant`; suspension uses that relation). When the
/// schema's `platform/tenant` has `relation suspended`, an object of a type with such a
/// `tenant` relation is closed while its tenant is suspended: every Check on it denies
/// and lookups leave it out, whatever the graph or a Cedar permit would say. It is a
/// rule on the object, not on the subject, which a rewrite cannot say (an arrow is
/// evaluated for the subject); and a Cedar forbid on every action would bring Cedar into
/// every allowed Check. A schema without the platform part has no gate.
#[derive(Debug, Clone)]
pub struct TenantGate {
    /// `tenant`, on the gated types.
    pub tenant_rel: Sym,
    /// `platform/tenant`.
    pub tenant_type: Sym,
    /// `suspended`, on `platform/tenant`.
    pub suspended: Sym,
    /// Per type: whether its objects belong to a tenant.
    gated: Vec<bool>,
}

/// The tenant type of the platform part.
pub const TENANT_TYPE: &str = "platform/tenant";

impl TenantGate {
    fn of(schema: &CompiledSchema, interner: &Interner) -> Option<TenantGate> {
        let (tenant_ty, tenant_def) = schema.definition_by_name(TENANT_TYPE)?;
        let suspended = tenant_def.relation_id("suspended").and_then(|r| tenant_def.relation(r))?;
        if suspended.is_permission() {
            return None;
        }
        let gated: Vec<bool> = schema
            .definitions
            .iter()
            .map(|def| {
                def.relation_id("tenant").and_then(|r| def.relation(r)).is_some_and(|r| {
                    !r.is_permission() && r.allowed_subjects().iter().any(|a| a.type_id == tenant_ty && a.kind == AllowedKind::Object)
                })
            })
            .collect();
        gated.iter().any(|g| *g).then(|| TenantGate {
            tenant_rel: interner.intern("tenant"),
            tenant_type: interner.intern(TENANT_TYPE),
            suspended: interner.intern("suspended"),
            gated,
        })
    }

    /// Do objects of `ty` belong to a tenant?
    #[inline]
    pub fn gates(&self, ty: TypeId) -> bool {
        self.gated.get(usize::from(ty)).copied().unwrap_or(false)
    }
}

/// A permission that inherits itself along a relation to objects of its own type:
/// `view = viewer + edit + parent->view` on `folder`, with `relation parent: folder`.
/// Such a permission holds on `x` exactly when one of its other parts (`local`) holds on
/// `x` or on an object reachable from `x` by `via` edges (its ancestors), so Check
/// answers it by climbing the ancestors once, checking `local` on each, instead of
/// recursing into the permission on every ancestor, each a frame of its own with a memo
/// entry. A part that names another permission climbing the same relation
/// (`edit = owner + parent->edit` inside `view`) is replaced by that permission's own
/// parts: `edit` holds on some ancestor of `x` exactly when one of its parts holds on
/// some ancestor of `x`, because an ancestor's ancestors are `x`'s. So a folder chain is
/// walked once, not once for `view` and once more for `edit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The relation climbed: it allows objects of the permission's own type only, with
    /// no caveat.
    pub via: RelationId,
    /// What is checked on each object of the climb, the object itself first.
    pub local: Vec<Rewrite>,
    /// The permission and those whose parts `local` took in: a subject set naming one of
    /// them on an object of the climb (`folder:x#edit` when checking `view`) is in it.
    pub names: Vec<RelationId>,
}

/// A relation as Check sees it, by the subject sets it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subjects {
    /// A permission (a rewrite), not a relation.
    Permission,
    /// No subject sets: membership is one lookup of the subject (or a wildcard).
    Plain,
    /// Its only subject sets are itself (`relation member: user | team#member`) and it
    /// allows no caveat, so
    /// membership is the transitive closure of its own edges (groups of groups). Check
    /// answers it by walking up from the subject, bounded by how many groups the subject
    /// is in, instead of down from the group through every subgroup.
    Nesting,
    /// Other subject sets: walked down.
    Sets,
}

/// An arrow `tupleset->...` in permission `permission` of type `.0`: `(type, tupleset, permission)`.
pub type ArrowDependent = (TypeId, RelationId, RelationId);

/// Calls `f` for every computed reference and every arrow in a rewrite.
fn visit_rewrite(rw: &Rewrite, f: &mut impl FnMut(&Rewrite)) {
    match rw {
        Rewrite::Union(items) | Rewrite::Intersection(items) => {
            for i in items {
                visit_rewrite(i, f);
            }
        }
        Rewrite::Exclusion(a, b) => {
            visit_rewrite(a, f);
            visit_rewrite(b, f);
        }
        other => f(other),
    }
}

impl SchemaPlan {
    pub fn new(schema: CompiledSchema, text: String, interner: &Interner) -> Self {
        let mut type_syms = Vec::with_capacity(schema.definitions.len());
        let mut rel_syms = Vec::with_capacity(schema.definitions.len());
        let mut type_by_sym = FxHashMap::default();
        let mut rel_by_sym = FxHashMap::default();
        for (ty, def) in schema.definitions.iter().enumerate() {
            let ty = TypeId::try_from(ty).unwrap_or(TypeId::MAX);
            let sym = interner.intern(&def.name);
            type_syms.push(sym);
            type_by_sym.insert(sym, ty);
            let mut rels = Vec::with_capacity(def.relations.len());
            for (rid, rel) in def.relations.iter().enumerate() {
                let rid = RelationId::try_from(rid).unwrap_or(RelationId::MAX);
                let rsym = interner.intern(&rel.name);
                rels.push(rsym);
                rel_by_sym.insert((ty, rsym), rid);
            }
            rel_syms.push(rels);
        }
        let mut computed_dependents: FxHashMap<(TypeId, RelationId), Vec<RelationId>> =
            FxHashMap::default();
        let mut arrow_dependents: FxHashMap<(TypeId, RelationId), Vec<ArrowDependent>> =
            FxHashMap::default();
        let mut arrow_hops: Vec<(Sym, Vec<Sym>)> = Vec::new();
        for (ty, def) in schema.definitions.iter().enumerate() {
            let ty = TypeId::try_from(ty).unwrap_or(TypeId::MAX);
            let type_rels = rel_syms.get(usize::from(ty));
            let mut hops: Vec<Sym> = Vec::new();
            for (pid, rel) in def.relations.iter().enumerate() {
                let pid = RelationId::try_from(pid).unwrap_or(RelationId::MAX);
                let RelationKind::Permission(rw) = &rel.kind else {
                    continue;
                };
                visit_rewrite(rw, &mut |node| match node {
                    Rewrite::Computed(r) => {
                        let v = computed_dependents.entry((ty, *r)).or_default();
                        if !v.contains(&pid) {
                            v.push(pid);
                        }
                    }
                    Rewrite::Arrow(a) => {
                        for (tt, tr) in &a.targets {
                            let v = arrow_dependents.entry((*tt, *tr)).or_default();
                            if !v.contains(&(ty, a.tupleset, pid)) {
                                v.push((ty, a.tupleset, pid));
                            }
                        }
                        let tupleset = type_rels.and_then(|r| r.get(usize::from(a.tupleset))).copied();
                        if let Some(sym) = tupleset.filter(|s| !hops.contains(s)) {
                            hops.push(sym);
                        }
                    }
                    _ => {}
                });
            }
            if !hops.is_empty() {
                arrow_hops.push((type_syms.get(usize::from(ty)).copied().unwrap_or(Sym::MAX), hops));
            }
        }
        let local_cycles = has_local_cycles(&schema);
        let subjects: Vec<Vec<Subjects>> = schema
            .definitions
            .iter()
            .enumerate()
            .map(|(ty, def)| {
                let ty = TypeId::try_from(ty).unwrap_or(TypeId::MAX);
                def.relations
                    .iter()
                    .enumerate()
                    .map(|(rid, rel)| {
                        let rid = RelationId::try_from(rid).unwrap_or(RelationId::MAX);
                        let RelationKind::Direct(allowed) = &rel.kind else { return Subjects::Permission };
                        let mut sets = allowed.iter().filter_map(|a| match a.kind {
                            AllowedKind::SubjectSet(r) => Some((a.type_id, r)),
                            _ => None,
                        });
                        // A caveat on the relation makes membership conditional, which a
                        // closure of groups does not record: walked down instead.
                        let caveated = allowed.iter().any(|a| a.caveat.is_some());
                        if sets.clone().next().is_none() {
                            Subjects::Plain
                        } else if !caveated && sets.all(|set| set == (ty, rid)) {
                            Subjects::Nesting
                        } else {
                            Subjects::Sets
                        }
                    })
                    .collect()
            })
            .collect();
        let mut nesting = Vec::new();
        let mut nesting_ids = Vec::new();
        for (ty, rels) in subjects.iter().enumerate() {
            for (rel, kind) in rels.iter().enumerate() {
                if *kind == Subjects::Nesting {
                    let t = type_syms.get(ty).copied().unwrap_or(Sym::MAX);
                    let r = rel_syms.get(ty).and_then(|r: &Vec<Sym>| r.get(rel)).copied().unwrap_or(Sym::MAX);
                    nesting.push((t, r));
                    nesting_ids.push((
                        TypeId::try_from(ty).unwrap_or(TypeId::MAX),
                        RelationId::try_from(rel).unwrap_or(RelationId::MAX),
                    ));
                }
            }
        }
        // A loop of permissions on one object has no climbs: evaluation tracks every
        // node of such a schema, and keeps the recursion as written.
        let chains = schema
            .definitions
            .iter()
            .enumerate()
            .map(|(ty, def)| {
                let ty = TypeId::try_from(ty).unwrap_or(TypeId::MAX);
                (0..def.relations.len())
                    .map(|rel| {
                        let rel = RelationId::try_from(rel).unwrap_or(RelationId::MAX);
                        chain_of(&schema, ty, rel, &mut Vec::new()).filter(|_| !local_cycles)
                    })
                    .collect()
            })
            .collect();
        let tenant_gate = TenantGate::of(&schema, interner);
        SchemaPlan {
            tenant_gate,
            chains,
            arrow_hops,
            local_cycles,
            subjects,
            nesting,
            nesting_ids,
            computed_dependents,
            arrow_dependents,
            schema,
            text,
            type_syms,
            rel_syms,
            type_by_sym,
            rel_by_sym,
        }
    }

    /// The tenant gate, if the schema has one.
    #[inline]
    pub fn tenant_gate(&self) -> Option<&TenantGate> {
        self.tenant_gate.as_ref()
    }

    #[inline]
    pub fn type_sym(&self, ty: TypeId) -> Sym {
        self.type_syms
            .get(usize::from(ty))
            .copied()
            .unwrap_or(Sym::MAX)
    }

    #[inline]
    pub fn rel_sym(&self, ty: TypeId, rel: RelationId) -> Sym {
        self.rel_syms
            .get(usize::from(ty))
            .and_then(|r| r.get(usize::from(rel)))
            .copied()
            .unwrap_or(Sym::MAX)
    }

    /// What the subject sets of `ty#rel` make it, decided once per schema.
    #[inline]
    pub fn subjects(&self, ty: TypeId, rel: RelationId) -> Subjects {
        self.subjects
            .get(usize::from(ty))
            .and_then(|r| r.get(usize::from(rel)))
            .copied()
            .unwrap_or(Subjects::Permission)
    }

    /// Is `type#relation` (by symbol) a nesting relation ([`Subjects::Nesting`])?
    #[inline]
    pub fn is_nesting(&self, type_sym: Sym, relation_sym: Sym) -> bool {
        self.nesting.contains(&(type_sym, relation_sym))
    }

    /// The tupleset relations (symbols) the arrows of type `type_sym`'s permissions read.
    #[inline]
    pub fn arrow_hops(&self, type_sym: Sym) -> &[Sym] {
        self.arrow_hops.iter().find(|(t, _)| *t == type_sym).map_or(&[], |(_, h)| &h[..])
    }

    /// The nesting relations ([`Subjects::Nesting`]) by schema id.
    pub fn nesting_ids(&self) -> &[(TypeId, RelationId)] {
        &self.nesting_ids
    }

    /// Permission `ty#rel` as a climb along a relation of its own type, if it is one.
    #[inline]
    pub fn chain(&self, ty: TypeId, rel: RelationId) -> Option<&Chain> {
        self.chains.get(usize::from(ty)).and_then(|r| r.get(usize::from(rel))).and_then(Option::as_ref)
    }

    pub fn has_local_cycles(&self) -> bool {
        self.local_cycles
    }

    /// Permissions of `ty` that name `rel` directly.
    pub fn computed_dependents(&self, ty: TypeId, rel: RelationId) -> &[RelationId] {
        self.computed_dependents
            .get(&(ty, rel))
            .map(|v| &v[..])
            .unwrap_or(&[])
    }

    /// Arrows that land on `rel` of `ty`: `(type, tupleset, permission)`.
    pub fn arrow_dependents(&self, ty: TypeId, rel: RelationId) -> &[ArrowDependent] {
        self.arrow_dependents
            .get(&(ty, rel))
            .map(|v| &v[..])
            .unwrap_or(&[])
    }

    pub fn type_of_sym(&self, sym: Sym) -> Option<TypeId> {
        self.type_by_sym.get(&sym).copied()
    }

    pub fn relation_of_sym(&self, ty: TypeId, sym: Sym) -> Option<RelationId> {
        self.rel_by_sym.get(&(ty, sym)).copied()
    }
}

/// `ty#perm` as a [`Chain`], if it is a union with an arrow to itself along a relation
/// that allows only objects of `ty` (no wildcard, no subject set, no caveat). `visiting`
/// holds the permissions whose parts are being gathered, so a part naming one of them is
/// kept as it is.
fn chain_of(schema: &CompiledSchema, ty: TypeId, perm: RelationId, visiting: &mut Vec<RelationId>) -> Option<Chain> {
    let RelationKind::Permission(Rewrite::Union(items)) = &schema.relation(ty, perm)?.kind else {
        return None;
    };
    let climbs = |item: &Rewrite| -> Option<RelationId> {
        let Rewrite::Arrow(a) = item else { return None };
        if a.kind == ArrowKind::All || a.targets.as_slice() != [(ty, perm)] {
            return None;
        }
        let RelationKind::Direct(allowed) = &schema.relation(ty, a.tupleset)?.kind else {
            return None;
        };
        let own = |s: &AllowedSubject| s.type_id == ty && s.kind == AllowedKind::Object && s.caveat.is_none();
        (!allowed.is_empty() && allowed.iter().all(own)).then_some(a.tupleset)
    };
    let via = items.iter().find_map(climbs)?;
    visiting.push(perm);
    let mut local = Vec::with_capacity(items.len());
    let mut names = vec![perm];
    for item in items {
        if climbs(item) == Some(via) {
            continue;
        }
        if let Rewrite::Computed(q) = item {
            if !visiting.contains(q) {
                if let Some(inner) = chain_of(schema, ty, *q, visiting).filter(|c| c.via == via) {
                    local.extend(inner.local);
                    for n in inner.names {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                    continue;
                }
            }
        }
        local.push(item.clone());
    }
    visiting.pop();
    Some(Chain { via, local, names })
}

/// Whether any definition has a loop of computed usersets (a permission that reaches
/// itself without leaving the object).
fn has_local_cycles(schema: &CompiledSchema) -> bool {
    schema.definitions.iter().any(|def| {
        let refs: Vec<Vec<RelationId>> = def
            .relations
            .iter()
            .map(|rel| {
                let mut out = Vec::new();
                if let RelationKind::Permission(rw) = &rel.kind {
                    visit_rewrite(rw, &mut |node| {
                        if let Rewrite::Computed(r) = node {
                            out.push(*r);
                        }
                    });
                }
                out
            })
            .collect();
        // Depth-first search with colours: 0 unvisited, 1 on the stack, 2 done.
        let mut colour = vec![0u8; refs.len()];
        fn visit(n: usize, refs: &[Vec<RelationId>], colour: &mut [u8]) -> bool {
            match colour.get(n) {
                Some(1) => return true,
                Some(2) | None => return false,
                _ => {}
            }
            if let Some(c) = colour.get_mut(n) {
                *c = 1;
            }
            let found = refs
                .get(n)
                .is_some_and(|next| next.iter().any(|m| visit(usize::from(*m), refs, colour)));
            if let Some(c) = colour.get_mut(n) {
                *c = 2;
            }
            found
        }
        (0..refs.len()).any(|n| visit(n, &refs, &mut colour))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

    use super::*;

    fn plan(text: &str) -> SchemaPlan {
        SchemaPlan::new(arbiter_schema::compile(text).unwrap(), text.to_string(), &Interner::default())
    }

    fn ids(plan: &SchemaPlan, ty: &str, names: &[&str]) -> Vec<RelationId> {
        let (_, def) = plan.schema.definition_by_name(ty).unwrap();
        names.iter().map(|n| def.relation_id(n).unwrap()).collect()
    }

    fn chain<'p>(plan: &'p SchemaPlan, ty: &str, perm: &str) -> Option<&'p Chain> {
        let (t, def) = plan.schema.definition_by_name(ty).unwrap();
        plan.chain(t, def.relation_id(perm).unwrap())
    }

    #[test]
    fn a_permission_inherited_from_parents_is_a_climb_with_the_inherited_parts_taken_in() {
        let p = plan(
            "definition user {}
             definition tenant { relation admin: user  permission administer = admin }
             definition folder {
                 relation tenant: tenant
                 relation parent: folder
                 relation owner: user
                 relation viewer: user
                 permission edit = owner + parent->edit + tenant->administer
                 permission view = edit + viewer + parent->view
             }",
        );
        let [parent, owner, viewer, edit, view] = ids(&p, "folder", &["parent", "owner", "viewer", "edit", "view"])[..] else {
            panic!("five ids")
        };
        let c = chain(&p, "folder", "view").expect("view climbs parent");
        assert_eq!(c.via, parent);
        assert_eq!(c.names, vec![view, edit]);
        // edit's parts in place of `edit`, without its own climb.
        assert_eq!(c.local.len(), 3);
        assert_eq!(c.local.first(), Some(&Rewrite::Computed(owner)));
        assert!(matches!(c.local.get(1), Some(Rewrite::Arrow(a)) if a.computed == "administer"));
        assert_eq!(c.local.get(2), Some(&Rewrite::Computed(viewer)));
        let e = chain(&p, "folder", "edit").expect("edit climbs parent");
        assert_eq!((e.via, e.names.clone(), e.local.len()), (parent, vec![edit], 2));
        assert!(chain(&p, "tenant", "administer").is_none());
    }

    #[test]
    fn only_a_union_climbing_a_relation_of_its_own_objects_is_a_climb() {
        let p = plan(
            "definition user {}
             definition group { relation member: user }
             definition folder {
                 relation parent: folder
                 relation mixed: folder | group
                 relation sets: folder#view
                 relation owner: user
                 permission other = owner + mixed->other
                 permission through_set = owner + sets->through_set
                 permission every = owner + parent.all(every)
                 permission alone = parent->alone
                 permission excluded = (owner + parent->excluded) - owner
                 permission view = owner + parent->view
             }",
        );
        for perm in ["other", "through_set", "every", "alone", "excluded"] {
            assert!(chain(&p, "folder", perm).is_none(), "{perm} is not a climb");
        }
        assert!(chain(&p, "folder", "view").is_some());
    }

    #[test]
    fn a_part_climbing_another_relation_stays_a_part() {
        let p = plan(
            "definition user {}
             definition folder {
                 relation parent: folder
                 relation shortcut: folder
                 relation owner: user
                 permission edit = owner + shortcut->edit
                 permission view = edit + parent->view
             }",
        );
        let [parent, edit, view] = ids(&p, "folder", &["parent", "edit", "view"])[..] else {
            panic!("three ids")
        };
        let c = chain(&p, "folder", "view").unwrap();
        assert_eq!(c.via, parent);
        assert_eq!(c.local, vec![Rewrite::Computed(edit)]);
        assert_eq!(c.names, vec![view]);
    }

    #[test]
    fn a_loop_of_permissions_on_one_object_has_no_climbs() {
        let p = plan(
            "definition user {}
             definition folder {
                 relation parent: folder
                 relation owner: user
                 permission a = b + parent->a
                 permission b = a + owner
             }",
        );
        assert!(chain(&p, "folder", "a").is_none());
    }
}
