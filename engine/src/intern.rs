//! The symbol table: every type name, relation name and object id becomes a `u32` once,
//! at the edge. Append-only and shared by all revisions, so a symbol never changes
//! meaning. Lookups of unknown strings do not intern them (a Check for an id nobody
//! wrote must not grow the table).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

/// An interned string.
pub type Sym = u32;

/// The empty relation of a subject that is an object itself (`user:tom`, `user:tom#...`).
pub const ELLIPSIS: Sym = 0;
/// The object id of a wildcard subject (`user:*`).
pub const WILDCARD: Sym = 1;

/// Strings up to this long are kept in the table's key itself.
const INLINE: usize = 22;

/// A key of the table. Object ids are mostly short (`d12345`, a UUID is 36 bytes): held
/// inline, a lookup compares them in the slot it probed, without following a pointer to
/// the string (on a table of millions, a cache miss per lookup, and a Check looks up two
/// ids). Hashed and compared as bytes, so the table is probed with `s.as_bytes()`.
#[derive(Clone)]
enum Key {
    Inline(u8, [u8; INLINE]),
    Heap(Arc<str>),
}

impl Key {
    fn new(s: &str) -> Key {
        let b = s.as_bytes();
        match u8::try_from(b.len()) {
            Ok(len) if b.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                for (to, from) in bytes.iter_mut().zip(b) {
                    *to = *from;
                }
                Key::Inline(len, bytes)
            }
            _ => Key::Heap(Arc::from(s)),
        }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline(len, bytes) => bytes.get(..*len as usize).unwrap_or_default(),
            Key::Heap(s) => s.as_bytes(),
        }
    }
}

impl Borrow<[u8]> for Key {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Key) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.bytes()))
    }
}

/// An interned string, as [`Interner::resolve`] returns it: a short one copied, a long
/// one shared. Dereferences to `str`.
#[derive(Clone)]
pub struct Name(Key);

impl std::ops::Deref for Name {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        // Every key was made from a `str`.
        std::str::from_utf8(self.0.bytes()).unwrap_or_default()
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

#[derive(Debug)]
pub struct Interner {
    ids: DashMap<Key, Sym, FxBuildHasher>,
    /// By symbol. A short string is held here and in its key, inline in both: no heap
    /// block per id.
    names: RwLock<Vec<Key>>,
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
        self.ids.get(s.as_bytes()).map(|r| *r)
    }

    /// The symbol of `s`, interning it if new.
    pub fn intern(&self, s: &str) -> Sym {
        if let Some(id) = self.get(s) {
            return id;
        }
        let key = Key::new(s);
        let mut names = match self.names.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // One probe that finds what another writer may have added since the miss above,
        // or the slot the new symbol goes in (a lookup and then an insert would hash and
        // probe twice: interning is most of a large import's cost).
        match self.ids.entry(key) {
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
    pub fn resolve(&self, sym: Sym) -> Name {
        let names = match self.names.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Name(names.get(sym as usize).cloned().unwrap_or(Key::Inline(0, [0; INLINE])))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_strings_intern_and_resolve_alike() {
        let interner = Interner::default();
        let strings: Vec<String> = (0..=40).map(|n| "x".repeat(n)).chain(["é".repeat(11), "é".repeat(12)]).collect();
        let syms: Vec<Sym> = strings.iter().map(|s| interner.intern(s)).collect();
        for (s, sym) in strings.iter().zip(&syms) {
            assert_eq!(interner.get(s), Some(*sym), "{s:?}");
            assert_eq!(interner.intern(s), *sym, "{s:?} interned twice");
            assert_eq!(&*interner.resolve(*sym), s.as_str());
        }
        // `""` is the ellipsis, interned first; every other string is new and distinct.
        assert_eq!(syms.first(), Some(&ELLIPSIS));
        let mut distinct = syms.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), syms.len());
        // A prefix or an extension of an interned id is another id.
        assert_eq!(interner.get("y"), None);
        assert_eq!(interner.get(&"x".repeat(41)), None);
        assert_eq!(interner.len(), strings.len() + 1);
    }
}
