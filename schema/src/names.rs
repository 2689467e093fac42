//! Name -> id lookups for the names a request carries (a type, a relation), made on every
//! Check: three per request. A general hash map hashes the whole string and then calls
//! `memcmp` on the entry it finds; here a name of at most 16 bytes (nearly every type
//! and relation name) is packed into two words without a loop, and the entry is found
//! and confirmed by comparing words.

use rustc_hash::FxHashMap;

/// Names longer than this are looked up in an ordinary map.
const PACKED_MAX: usize = 16;

/// A name of at most [`PACKED_MAX`] bytes as two words and its length: for a given
/// length the words determine the bytes, so equal keys are equal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Packed {
    words: [u64; 2],
    len: u64,
}

impl Packed {
    /// Reads the first and the last bytes of `b` in at most four loads; for 8 to 16
    /// bytes the two 8-byte windows overlap, and together with the length they cover
    /// every byte once at least.
    #[inline]
    fn of(b: &[u8]) -> Option<Packed> {
        let len = b.len();
        let words = if len > PACKED_MAX {
            return None;
        } else if let (Some(first), Some(last)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) {
            [u64::from_le_bytes(*first), u64::from_le_bytes(*last)]
        } else if let (Some(first), Some(last)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
            [u64::from(u32::from_le_bytes(*first)) | (u64::from(u32::from_le_bytes(*last)) << 32), 0]
        } else {
            // 0 to 3 bytes: the first, the middle and the last say it all.
            let at = |i: usize| u64::from(b.get(i).copied().unwrap_or(0));
            [at(0) | (at(len / 2) << 8) | (at(len.saturating_sub(1)) << 16), 0]
        };
        Some(Packed { words, len: len as u64 })
    }

    #[inline]
    fn hash(&self) -> u64 {
        let [a, b] = self.words;
        (a ^ b.rotate_left(29) ^ self.len.rotate_left(53)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Names to small values, built once (when a schema compiles) and then read on every
/// request. Short names sit in an open-addressed table of packed keys, at most half
/// full; a lookup is one or two word comparisons.
#[derive(Debug, Clone)]
pub struct NameIndex<V> {
    /// Power-of-two sized; `None` is a free slot.
    slots: Vec<Option<(Packed, V)>>,
    /// `64 - log2(slots.len())`.
    shift: u32,
    long: FxHashMap<String, V>,
    len: usize,
}

impl<V: Copy> Default for NameIndex<V> {
    fn default() -> Self {
        NameIndex { slots: vec![None; 4], shift: 62, long: FxHashMap::default(), len: 0 }
    }
}

impl<V: Copy + PartialEq> PartialEq for NameIndex<V> {
    fn eq(&self, other: &Self) -> bool {
        // Equal as maps: the same names with the same values, whatever the slot order.
        self.len == other.len
            && self.slots.iter().flatten().all(|(k, v)| other.get_packed(k) == Some(*v))
            && self.long.iter().all(|(k, v)| other.long.get(k) == Some(v))
    }
}

impl<V: Copy + Eq> Eq for NameIndex<V> {}

impl<V: Copy> NameIndex<V> {
    /// The value of `name`, if it was inserted.
    #[inline]
    pub fn get(&self, name: &str) -> Option<V> {
        match Packed::of(name.as_bytes()) {
            Some(key) => self.get_packed(&key),
            None => self.long.get(name).copied(),
        }
    }

    #[inline]
    fn get_packed(&self, key: &Packed) -> Option<V> {
        let mask = self.slots.len() - 1;
        let mut i = (key.hash() >> self.shift) as usize;
        // Never more than half full, so a free slot ends every probe.
        loop {
            match self.slots.get(i)? {
                None => return None,
                Some((k, v)) if k == key => return Some(*v),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Adds or replaces the value of `name`.
    pub fn insert(&mut self, name: &str, value: V) {
        let Some(key) = Packed::of(name.as_bytes()) else {
            if self.long.insert(name.to_string(), value).is_none() {
                self.len += 1;
            }
            return;
        };
        if (self.len + 1) * 2 > self.slots.len() {
            let bigger = self.slots.len() * 2;
            let old = std::mem::replace(&mut self.slots, vec![None; bigger]);
            self.shift -= 1;
            for (k, v) in old.into_iter().flatten() {
                self.place(k, v);
            }
        }
        if !self.place(key, value) {
            self.len += 1;
        }
    }

    /// Puts `key` in its slot; true if it was there already (and is now replaced).
    fn place(&mut self, key: Packed, value: V) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = (key.hash() >> self.shift) as usize;
        loop {
            match self.slots.get_mut(i) {
                Some(slot @ None) => {
                    *slot = Some((key, value));
                    return false;
                }
                Some(Some((k, v))) if *k == key => {
                    *v = value;
                    return true;
                }
                Some(Some(_)) => i = (i + 1) & mask,
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        let mut out: Vec<String> = ["", "a", "ab", "abc", "abcd", "abcde", "user", "document", "viewer", "folder"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Every length up to past the packed limit, and names that differ only in the
        // middle or only at one end.
        for len in 1..=24 {
            out.push("x".repeat(len));
            out.push(format!("{}m{}", "y".repeat(len / 2), "y".repeat(len - len / 2)));
            out.push(format!("z{}", "y".repeat(len)));
            out.push(format!("{}z", "y".repeat(len)));
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn finds_every_name_it_holds_and_no_other() {
        let all = names();
        let (held, absent) = all.split_at(all.len() / 2);
        let mut index = NameIndex::default();
        for (i, n) in held.iter().enumerate() {
            index.insert(n, i);
        }
        assert_eq!(index.len(), held.len());
        for (i, n) in held.iter().enumerate() {
            assert_eq!(index.get(n), Some(i), "{n:?}");
        }
        for n in absent {
            assert_eq!(index.get(n), None, "{n:?}");
        }
    }

    #[test]
    fn packing_tells_apart_names_of_every_length() {
        let all = names();
        for a in &all {
            for b in &all {
                if let (Some(pa), Some(pb)) = (Packed::of(a.as_bytes()), Packed::of(b.as_bytes())) {
                    assert_eq!(pa == pb, a == b, "{a:?} {b:?}");
                }
            }
        }
        // All pairs of two-byte and three-byte strings over a small alphabet.
        let alphabet = [b'a', b'b', b'_', b'0'];
        let mut short = vec![Vec::new()];
        for len in 1..=3 {
            let mut words = vec![Vec::new()];
            for _ in 0..len {
                words = words
                    .into_iter()
                    .flat_map(|w: Vec<u8>| alphabet.iter().map(move |c| [w.clone(), vec![*c]].concat()))
                    .collect();
            }
            short.extend(words);
        }
        for a in &short {
            for b in &short {
                assert_eq!(Packed::of(a) == Packed::of(b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn inserting_again_replaces_and_equality_ignores_order() {
        let mut a = NameIndex::default();
        let mut b = NameIndex::default();
        let all = names();
        for (i, n) in all.iter().enumerate() {
            a.insert(n, i);
        }
        for (i, n) in all.iter().enumerate().rev() {
            b.insert(n, i);
        }
        assert_eq!(a, b);
        a.insert("document", 999);
        assert_eq!(a.get("document"), Some(999));
        assert_eq!(a.len(), all.len());
        assert_ne!(a, b);
    }
}
