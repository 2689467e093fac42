//! The symbol table: every type name, relation name and object id becomes a `u32` once,
//! at the edge. Append-only and shared by all revisions, so a symbol never changes
//! meaning. Lookups of unknown strings do not intern them (a Check for an id nobody
//! wrote must not grow the table).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

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

    /// Is this the key of `b`? A short string is always inline (see [`Key::new`]), so an
    /// inline key of the same length is compared a word at a time from both ends (the
    /// windows overlap): no call to `memcmp`, which costs more than the comparison on
    /// a six-byte id.
    #[inline]
    fn is(&self, b: &[u8]) -> bool {
        match self {
            Key::Inline(len, bytes) => *len as usize == b.len() && same_short(bytes, b),
            Key::Heap(s) => s.as_bytes() == b,
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

/// `key` (an inline key's bytes, zero-padded) starts with `b`, which is at most
/// [`INLINE`] bytes long.
#[inline]
fn same_short(key: &[u8; INLINE], b: &[u8]) -> bool {
    let len = b.len();
    let k = key.as_slice();
    fn word<const N: usize>(s: &[u8], at: usize) -> Option<&[u8; N]> {
        s.get(at..).and_then(|s| s.first_chunk::<N>())
    }
    if len >= 8 {
        let ends = word::<8>(k, 0) == word::<8>(b, 0) && word::<8>(k, len - 8) == word::<8>(b, len - 8);
        ends && (len <= 16 || word::<8>(k, 8) == word::<8>(b, 8))
    } else if len >= 4 {
        word::<4>(k, 0) == word::<4>(b, 0) && word::<4>(k, len - 4) == word::<4>(b, len - 4)
    } else {
        k.get(..len) == Some(b)
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

/// Names by symbol under one read lock (see [`Interner::view`]).
pub struct NameView<'a>(std::sync::RwLockReadGuard<'a, Names>);

impl NameView<'_> {
    /// The string of a symbol (empty for one never interned).
    #[inline]
    pub fn get(&self, sym: Sym) -> &str {
        let bytes = self.0.by_sym.get(sym as usize).map(Key::bytes).unwrap_or_default();
        // Every key was made from a `str`.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl std::fmt::Debug for NameView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameView").field("names", &self.0.by_sym.len()).finish()
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

/// The frozen part of the table: open addressing with linear probing, written once by a
/// fold and then only read. Each slot holds the key, its symbol and 32 bits of its hash,
/// so a lookup reads one slot (and, when the probe runs on, the ones beside it): one
/// cache miss, where a table with separate control bytes takes two, one waiting on the
/// other. And a lookup's first read is an address computed from the hash alone, so
/// [`Symbols::get_many`] can issue the reads of a whole batch before it compares any.
struct Table {
    slots: Box<[Slot]>,
    /// `64 - log2(slots.len())`: the top bits of a hash pick its first slot.
    shift: u32,
    len: usize,
}

#[derive(Clone)]
struct Slot {
    key: Key,
    /// [`FREE`] in a slot no key holds.
    sym: Sym,
    tag: u32,
}

/// The symbol of a free slot (no symbol reaches it: ids are `u32` and the table counts
/// from 0).
const FREE: Sym = Sym::MAX;

/// The hash a [`Table`] files `bytes` under.
#[inline]
fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    // Fx leaves the top bits weak for short inputs; a multiply spreads them.
    h.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Default for Table {
    fn default() -> Self {
        Table::with_capacity(0)
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("len", &self.len).field("slots", &self.slots.len()).finish()
    }
}

impl Table {
    /// Room for `n` keys with at most three slots in four taken.
    fn with_capacity(n: usize) -> Table {
        let slots = (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(8);
        let free = Slot { key: Key::Inline(0, [0; INLINE]), sym: FREE, tag: 0 };
        Table { slots: vec![free; slots].into_boxed_slice(), shift: 64 - slots.trailing_zeros(), len: 0 }
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // `shift` is at most 61: there are at least 8 slots.
        (hash >> self.shift) as usize
    }

    #[inline]
    fn get(&self, bytes: &[u8]) -> Option<Sym> {
        self.find(hash_of(bytes), bytes)
    }

    /// The symbol of `bytes`, whose hash is `hash`.
    #[inline]
    fn find(&self, hash: u64, bytes: &[u8]) -> Option<Sym> {
        let mask = self.slots.len() - 1;
        let tag = hash as u32;
        let mut i = self.home(hash);
        // The table is never full (see `insert`), so a free slot ends every probe.
        loop {
            let slot = self.slots.get(i)?;
            if slot.sym == FREE {
                return None;
            }
            if slot.tag == tag && slot.key.is(bytes) {
                return Some(slot.sym);
            }
            i = (i + 1) & mask;
        }
    }

    /// Reads the first slot `hash` probes and returns something computed from it, so a
    /// batch's reads can be issued together (see [`Symbols::get_many`]).
    #[inline]
    fn touch(&self, hash: u64) -> u32 {
        self.slots.get(self.home(hash)).map_or(0, |s| s.tag)
    }

    /// Adds a key known to be absent, growing the table when it is three quarters full.
    fn insert(&mut self, key: Key, sym: Sym) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let mut bigger = Table::with_capacity((self.len + 1) * 2);
            for slot in std::mem::take(&mut self.slots).into_vec() {
                if slot.sym != FREE {
                    bigger.insert(slot.key, slot.sym);
                }
            }
            *self = bigger;
        }
        let hash = hash_of(key.bytes());
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        while self.slots.get(i).is_some_and(|s| s.sym != FREE) {
            i = (i + 1) & mask;
        }
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Slot { key, sym, tag: hash as u32 };
            self.len += 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The table, in two parts. Every symbol interned before the last fold is in `frozen`,
/// a table no one writes, so reading it takes no lock: a lock's atomic instructions
/// would order a batch's lookups one after another, where these can overlap their cache
/// misses (and on two cores, the lock's line would move between them on every lookup).
/// The symbols interned since are in `recent`, read only when `frozen` misses. A fold
/// rebuilds `frozen` from every name, when the engine asks: when it compacts the graph
/// (a pass over every relationship anyway), and when writes and interning have been
/// quiet ([`Interner::fold_if_settled`]). Never while an import interns: folding as
/// the table grows cost a large import through gRPC about 15% (each fold holds up
/// interning for a pass over every name).
#[derive(Debug)]
pub struct Interner {
    frozen: ArcSwap<Table>,
    recent: DashMap<Key, Sym, FxBuildHasher>,
    /// Every name by symbol. A short string is held here and in its key, inline in
    /// both: no heap block per id. Writers (interning, folding) take this lock first.
    names: RwLock<Names>,
}

#[derive(Debug, Default)]
struct Names {
    by_sym: Vec<Key>,
    /// How many of them `frozen` holds (the first ones).
    frozen: usize,
    /// How many there were at the last [`Interner::fold_if_settled`].
    polled: usize,
}

/// Lookups from one view of the frozen table (see [`Interner::symbols`]): a batch reads
/// the shared pointer once, not once per id.
pub struct Symbols<'a> {
    frozen: arc_swap::Guard<Arc<Table>>,
    interner: &'a Interner,
}

impl std::fmt::Debug for Symbols<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbols").field("frozen", &self.frozen.len()).finish_non_exhaustive()
    }
}

impl Symbols<'_> {
    /// The symbol of `s`, if it was ever interned.
    #[inline]
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.find(hash_of(s.as_bytes()), s)
    }

    /// [`Symbols::get`] with the hash of `s` at hand.
    #[inline]
    fn find(&self, hash: u64, s: &str) -> Option<Sym> {
        match self.frozen.find(hash, s.as_bytes()) {
            Some(sym) => Some(sym),
            None => self.interner.get_recent(s, &self.frozen),
        }
    }

    /// The symbols of many strings, in order, into `out`. On a table larger than the
    /// cache each lookup is a cache miss; one lookup after another, the core overlaps
    /// only the few its reorder window holds. Here the first pass hashes every string
    /// and reads the slot each would probe first, reads independent of each other whose
    /// misses all overlap; the second compares, in cache.
    pub fn get_many<'s>(&self, strings: impl Iterator<Item = &'s str> + Clone, out: &mut Vec<Option<Sym>>) {
        let hashes: SmallVec<[u64; 256]> = strings.clone().map(|s| hash_of(s.as_bytes())).collect();
        let touched = hashes.iter().fold(0u32, |acc, h| acc ^ self.frozen.touch(*h));
        std::hint::black_box(touched);
        out.clear();
        out.extend(strings.zip(&hashes).map(|(s, h)| self.find(*h, s)));
    }
}

impl Default for Interner {
    fn default() -> Self {
        let interner = Interner {
            frozen: ArcSwap::from_pointee(Table::default()),
            recent: DashMap::with_hasher(FxBuildHasher),
            names: RwLock::new(Names::default()),
        };
        let e = interner.intern("");
        let w = interner.intern("*");
        debug_assert_eq!((e, w), (ELLIPSIS, WILDCARD));
        interner
    }
}

impl Interner {
    /// A view for many lookups in a row.
    #[inline]
    pub fn symbols(&self) -> Symbols<'_> {
        Symbols { frozen: self.frozen.load(), interner: self }
    }

    /// The symbol of `s`, if it was ever interned.
    #[inline]
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.symbols().get(s)
    }

    /// `s` is not in `seen` (a frozen table): is it in `recent`, or in a newer frozen
    /// table? A fold publishes its table before it empties `recent`, so a symbol missing
    /// from `recent` was either never interned or is in the table published since.
    #[cold]
    fn get_recent(&self, s: &str, seen: &Table) -> Option<Sym> {
        if let Some(sym) = self.recent.get(s.as_bytes()) {
            return Some(*sym);
        }
        let now = self.frozen.load();
        if std::ptr::eq(&**now, seen) {
            return None;
        }
        now.get(s.as_bytes())
    }

    fn write_names(&self) -> std::sync::RwLockWriteGuard<'_, Names> {
        match self.names.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn read_names(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        match self.names.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The symbol of `s`, interning it if new.
    pub fn intern(&self, s: &str) -> Sym {
        if let Some(id) = self.get(s) {
            return id;
        }
        let mut names = self.write_names();
        // Another writer may have added it since the miss above, to `recent` or (by a
        // fold) to `frozen`.
        if let Some(id) = self.frozen.load().get(s.as_bytes()) {
            return id;
        }
        let key = Key::new(s);
        // One probe that finds it in `recent`, or the slot the new symbol goes in (a
        // lookup and then an insert would hash and probe twice: interning is most of a
        // large import's cost).
        match self.recent.entry(key) {
            dashmap::Entry::Occupied(e) => *e.get(),
            dashmap::Entry::Vacant(v) => {
                let id = Sym::try_from(names.by_sym.len()).unwrap_or(Sym::MAX);
                names.by_sym.push(v.key().clone());
                v.insert(id);
                id
            }
        }
    }

    /// Folds the symbols interned since the last fold into the frozen table, so that
    /// looking them up takes no lock. Costs a pass over every name: the engine calls it
    /// when the graph is compacted, not on every write. The table is built under the
    /// names' read lock (`resolve` goes on meanwhile; interning waits), and published
    /// under the write lock with what was interned in between.
    pub fn fold(&self) {
        let (mut table, built) = {
            let names = self.read_names();
            if names.by_sym.len() == names.frozen {
                return;
            }
            let mut table = Table::with_capacity(names.by_sym.len());
            add_names(&mut table, &names.by_sym, 0);
            (table, names.by_sym.len())
        };
        let mut names = self.write_names();
        add_names(&mut table, &names.by_sym, built);
        // Published first, emptied after: see `get_recent`. No symbol is added to
        // `recent` meanwhile (writers hold `names`).
        self.frozen.store(Arc::new(table));
        self.recent.clear();
        self.recent.shrink_to_fit();
        names.frozen = names.by_sym.len();
    }

    /// [`Interner::fold`], if no symbol was interned since the last call: for a timer,
    /// which must not fold again and again while an import is still interning (each
    /// fold is a pass over every name, and holds up interning while it runs).
    pub fn fold_if_settled(&self) {
        let settled = {
            let mut names = self.write_names();
            let len = names.by_sym.len();
            let settled = len > names.frozen && len == names.polled;
            names.polled = len;
            settled
        };
        if settled {
            self.fold();
        }
    }

    /// Every name under one read lock, for comparing many symbols by their strings
    /// (ordering a lookup's candidates) without a lock or a copy per comparison. Hold
    /// it briefly: interning a new name waits for it.
    pub fn view(&self) -> NameView<'_> {
        NameView(self.read_names())
    }

    /// The string of a symbol.
    pub fn resolve(&self, sym: Sym) -> Name {
        let names = self.read_names();
        Name(names.by_sym.get(sym as usize).cloned().unwrap_or(Key::Inline(0, [0; INLINE])))
    }

    pub fn len(&self) -> usize {
        self.read_names().by_sym.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Adds `names[from..]` (none of them in it yet) to `table`, each under its symbol (its
/// index).
fn add_names(table: &mut Table, names: &[Key], from: usize) {
    for (sym, key) in names.iter().enumerate().skip(from) {
        table.insert(key.clone(), Sym::try_from(sym).unwrap_or(Sym::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_keys_compare_by_words_as_bytes_would() {
        // Every length an inline key has, against strings of the same length that differ
        // in exactly one byte (each position in turn), and against themselves.
        for len in 0..=INLINE {
            let s: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let key = Key::new(std::str::from_utf8(&s).unwrap_or_default());
            assert!(key.is(&s), "len {len}");
            for at in 0..len {
                let mut other = s.clone();
                if let Some(b) = other.get_mut(at) {
                    *b = b'Z';
                }
                assert!(!key.is(&other), "len {len}, differing at {at}");
            }
            let mut longer = s.clone();
            longer.push(b'a');
            assert!(!key.is(&longer), "len {len} against one byte more");
            if let Some((_, shorter)) = s.split_last() {
                assert!(!key.is(shorter), "len {len} against one byte less");
            }
        }
        let long = "l".repeat(INLINE + 1);
        assert!(Key::new(&long).is(long.as_bytes()));
        assert!(!Key::new(&long).is(long.as_bytes().get(1..).unwrap_or_default()));
    }

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

    #[test]
    fn symbols_survive_folds_and_stay_the_same() {
        let interner = Interner::default();
        let ids: Vec<String> = (0..10_000).map(|i| format!("id{i}")).collect();
        let half = ids.len() / 2;
        let mut syms: Vec<Sym> = ids.iter().take(half).map(|s| interner.intern(s)).collect();
        interner.fold();
        // Half the ids in the frozen part, half in the recent one.
        syms.extend(ids.iter().skip(half).map(|s| interner.intern(s)));
        assert_eq!(interner.read_names().frozen, half + 2);
        let check = |interner: &Interner| {
            let symbols = interner.symbols();
            for (s, sym) in ids.iter().zip(&syms) {
                assert_eq!(symbols.get(s), Some(*sym), "{s}");
                assert_eq!(interner.intern(s), *sym, "{s} interned twice");
                assert_eq!(&*interner.resolve(*sym), s.as_str());
            }
            assert_eq!(symbols.get("nobody"), None);
            assert!(interner.len() >= ids.len() + 2);
        };
        check(&interner);
        // A timer's fold waits until a poll finds nothing new since the last one.
        let frozen = interner.read_names().frozen;
        interner.fold_if_settled();
        assert_eq!(interner.read_names().frozen, frozen);
        interner.fold_if_settled();
        assert_eq!(interner.read_names().frozen, ids.len() + 2);
        interner.intern("one more");
        interner.fold_if_settled();
        assert_eq!(interner.read_names().frozen, ids.len() + 2);
        interner.fold();
        assert_eq!(interner.read_names().frozen, ids.len() + 3);
        assert!(interner.recent.is_empty());
        check(&interner);
    }

    #[test]
    fn a_frozen_table_grows_and_finds_every_key_it_holds() {
        let mut table = Table::with_capacity(0);
        let keys: Vec<String> = (0..5_000).map(|i| if i % 7 == 0 { format!("{i}-{}", "long".repeat(8)) } else { format!("k{i}") }).collect();
        for (sym, k) in keys.iter().enumerate() {
            table.insert(Key::new(k), Sym::try_from(sym).unwrap_or(FREE));
        }
        assert_eq!(table.len(), keys.len());
        // At most three slots in four taken, so every probe ends at a free slot.
        assert!(table.slots.len() * 3 >= table.len() * 4);
        for (sym, k) in keys.iter().enumerate() {
            assert_eq!(table.get(k.as_bytes()), Some(Sym::try_from(sym).unwrap_or(FREE)), "{k}");
        }
        for absent in ["", "k5000", "k-1", "long"] {
            assert_eq!(table.get(absent.as_bytes()), None, "{absent}");
        }
    }

    #[test]
    fn a_batch_lookup_finds_what_single_lookups_find() {
        let interner = Interner::default();
        let frozen: Vec<String> = (0..3_000).map(|i| format!("f{i}")).collect();
        for s in &frozen {
            interner.intern(s);
        }
        interner.fold();
        let recent: Vec<String> = (0..300).map(|i| format!("r{i}-{}", "x".repeat(i % 40))).collect();
        for s in &recent {
            interner.intern(s);
        }
        let absent: Vec<String> = (0..300).map(|i| format!("a{i}")).collect();
        // Interleaved, repeats included, as a batch's resource and subject ids come.
        let batch: Vec<&str> = frozen
            .iter()
            .zip(recent.iter().cycle())
            .zip(absent.iter().cycle())
            .flat_map(|((f, r), a)| [f.as_str(), r.as_str(), a.as_str(), f.as_str()])
            .collect();
        let symbols = interner.symbols();
        let mut out = vec![Some(7)];
        symbols.get_many(batch.iter().copied(), &mut out);
        let one_by_one: Vec<Option<Sym>> = batch.iter().map(|s| symbols.get(s)).collect();
        assert_eq!(out, one_by_one);
        assert_eq!(out.iter().filter(|s| s.is_none()).count(), batch.len() / 4);
        assert!(out.iter().step_by(4).zip(&frozen).all(|(s, f)| *s == interner.get(f) && s.is_some()));
        symbols.get_many(std::iter::empty(), &mut out);
        assert!(out.is_empty());
    }

    /// A reader holding an older view of the frozen table still finds symbols that a
    /// fold has since moved out of `recent`, while a writer interns and another thread
    /// folds beside them.
    #[test]
    fn readers_find_every_symbol_while_a_writer_folds() {
        use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
        const N: usize = 25_000;
        let interner = Interner::default();
        let done = AtomicUsize::new(0);
        let syms: Vec<AtomicU32> = (0..N).map(|_| AtomicU32::new(0)).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for (i, slot) in syms.iter().enumerate() {
                    slot.store(interner.intern(&format!("w{i}")), Ordering::Relaxed);
                    done.store(i + 1, Ordering::Release);
                }
            });
            // Folds beside the writer: symbols interned while a fold builds its table
            // must reach the table it publishes.
            s.spawn(|| {
                while done.load(Ordering::Acquire) < N {
                    interner.fold();
                }
            });
            let mut checked = 0usize;
            loop {
                let n = done.load(Ordering::Acquire);
                // A view taken before the lookups, as CheckBulk takes one per batch.
                let symbols = interner.symbols();
                for j in (0..n).rev().take(64) {
                    let want = syms.get(j).map(|a| a.load(Ordering::Relaxed));
                    assert_eq!(symbols.get(&format!("w{j}")), want, "w{j} of {n}");
                    checked += 1;
                }
                if n == N {
                    break;
                }
            }
            assert!(checked > 0);
        });
        assert_eq!(interner.len(), N + 2);
    }
}
