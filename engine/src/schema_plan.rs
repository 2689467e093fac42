//! A compiled schema bound to the symbol table: the per-schema lookup tables evaluation
//! needs (type and relation names as symbols, and back).

use arbiter_schema::{AllowedKind, CompiledSchema, RelationId, RelationKind, Rewrite, TypeId};
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
}

/// A relation as Check sees it, by the subject sets it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subjects {
    /// A permission (a rewrite), not a relation.
    Permission,
    /// No subject sets: membership is one lookup of the subject (or a wildcard).
    Plain,
    /// Its only subject sets are itself (`relation member: user | team#member`), so
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
                        if sets.clone().next().is_none() {
                            Subjects::Plain
                        } else if sets.all(|set| set == (ty, rid)) {
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
        SchemaPlan {
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
