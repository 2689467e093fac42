//! A compiled schema bound to the symbol table: the per-schema lookup tables evaluation
//! needs (type and relation names as symbols, and back).

use arbiter_schema::{CompiledSchema, RelationId, TypeId};
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
        SchemaPlan {
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
        self.type_syms.get(usize::from(ty)).copied().unwrap_or(Sym::MAX)
    }

    #[inline]
    pub fn rel_sym(&self, ty: TypeId, rel: RelationId) -> Sym {
        self.rel_syms
            .get(usize::from(ty))
            .and_then(|r| r.get(usize::from(rel)))
            .copied()
            .unwrap_or(Sym::MAX)
    }

    pub fn type_of_sym(&self, sym: Sym) -> Option<TypeId> {
        self.type_by_sym.get(&sym).copied()
    }

    pub fn relation_of_sym(&self, ty: TypeId, sym: Sym) -> Option<RelationId> {
        self.rel_by_sym.get(&(ty, sym)).copied()
    }
}
