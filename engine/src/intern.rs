//! The symbol table: every type name, relation name and object id becomes a `u32` once,
//! at the edge. Append-only and shared by all revisions, so a symbol never changes
//! meaning. Lookups of unknown strings do not intern them (a Check for an id nobody
//! wrote must not grow the table).

use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

/// An interned string.
pub type Sym = u32;

/// The empty relation of a subject that is an object itself (`user:tom`, `user:tom#...`).
pub const ELLIPSIS: Sym = 0;
/// The object id of a wildcard subject (`user:*`).
pub const WILDCARD: Sym = 1;

#[derive(Debug)]
pub struct Interner {
    ids: DashMap<Arc<str>, Sym, FxBuildHasher>,
    names: RwLock<Vec<Arc<str>>>,
}

impl Default for Interner {
    fn default() -> Self {
        let interner = Interner {
            ids: DashMap::with_hasher(FxBuildHasher),
            names: RwLock::new(Vec::new()),
        };
        let e = interner.intern("");
        let w = interner.intern("*");
        debug_assert_eq!((e, w), (ELLIPSIS, WILDCARD));
        interner
    }
}

impl Interner {
    /// The symbol of `s`, if it was ever interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).map(|r| *r)
    }

    /// The symbol of `s`, interning it if new.
    pub fn intern(&self, s: &str) -> Sym {
        if let Some(id) = self.get(s) {
            return id;
        }
        let arc: Arc<str> = Arc::from(s);
        let mut names = match self.names.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // One probe that finds what another writer may have added since the miss above,
        // or the slot the new symbol goes in (a lookup and then an insert would hash and
        // probe twice: interning is most of a large import's cost).
        match self.ids.entry(arc) {
            dashmap::Entry::Occupied(e) => *e.get(),
            dashmap::Entry::Vacant(v) => {
                let id = Sym::try_from(names.len()).unwrap_or(Sym::MAX);
                names.push(v.key().clone());
                v.insert(id);
                id
            }
        }
    }

    /// The string of a symbol.
    pub fn resolve(&self, sym: Sym) -> Arc<str> {
        let names = match self.names.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        names
            .get(sym as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
