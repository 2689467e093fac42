//! Pages in a stable order without building the whole result. A lookup's walk and a
//! read's selection yield compact items (a symbol, a stored relationship: a few bytes,
//! no string); [`Ordered`] hands them out in the order of their names a chunk at a
//! time, so only what a page needs is checked, named and sent. Ordering the next chunk
//! costs a selection over what is left, and chunks double, so streaming everything
//! costs about one sort.

use std::cmp::Ordering;

use crate::error::EngineError;
use crate::graph::StoredRelationship;
use crate::intern::{NameView, ELLIPSIS};

/// Items handed out smallest first, a chunk at a time.
#[derive(Debug)]
pub(crate) struct Ordered<T> {
    items: Vec<T>,
    /// Items before this were handed out.
    next: usize,
    /// Items from `next` up to this are the smallest of the rest, in order.
    ordered_to: usize,
    /// The last chunk's size (chunks double).
    last: usize,
}

impl<T> Ordered<T> {
    pub fn new(items: Vec<T>) -> Self {
        Ordered { items, next: 0, ordered_to: 0, last: 0 }
    }

    /// The next items in order: at least `want` (fewer only at the end), more when
    /// earlier chunks were taken.
    pub fn next_chunk(&mut self, want: usize, cmp: impl Fn(&T, &T) -> Ordering) -> &[T] {
        let start = self.next;
        if start >= self.ordered_to {
            let rest = self.items.get_mut(start..).unwrap_or_default();
            let n = want.max(1).max(self.last.saturating_mul(2));
            self.last = n;
            if n.saturating_mul(4) >= rest.len() {
                rest.sort_unstable_by(&cmp);
                self.ordered_to = self.items.len();
            } else {
                let (smallest, _, _) = rest.select_nth_unstable_by(n, &cmp);
                smallest.sort_unstable_by(&cmp);
                self.ordered_to = start + n;
            }
        }
        let end = self.ordered_to.min(start.saturating_add(want.max(1)));
        self.next = end;
        self.items.get(start..end).unwrap_or_default()
    }
}

/// The `limit` smallest items offered, in order: memory for `limit` items however many
/// are offered. A max-heap (the largest kept on top), sifted here since the order is a
/// closure's.
#[derive(Debug)]
pub(crate) struct Smallest<T> {
    kept: Vec<T>,
    limit: usize,
}

impl<T> Smallest<T> {
    pub fn new(limit: usize) -> Self {
        Smallest { kept: Vec::with_capacity(limit.min(1 << 16)), limit }
    }

    pub fn offer(&mut self, item: T, cmp: &impl Fn(&T, &T) -> Ordering) {
        if self.kept.len() < self.limit {
            self.kept.push(item);
            sift_up(&mut self.kept, cmp);
        } else if self.kept.first().is_some_and(|top| cmp(&item, top) == Ordering::Less) {
            if let Some(top) = self.kept.first_mut() {
                *top = item;
            }
            sift_down(&mut self.kept, cmp);
        }
    }

    pub fn into_sorted(mut self, cmp: &impl Fn(&T, &T) -> Ordering) -> Vec<T> {
        self.kept.sort_unstable_by(cmp);
        self.kept
    }
}

/// Restores a max-heap (by `cmp`) after a push at the end.
fn sift_up<T>(heap: &mut [T], cmp: &impl Fn(&T, &T) -> Ordering) {
    let mut i = heap.len().saturating_sub(1);
    while i > 0 {
        let parent = (i - 1) / 2;
        match (heap.get(parent), heap.get(i)) {
            (Some(p), Some(c)) if cmp(c, p) == Ordering::Greater => heap.swap(parent, i),
            _ => break,
        }
        i = parent;
    }
}

/// Restores a max-heap (by `cmp`) after its top was replaced.
fn sift_down<T>(heap: &mut [T], cmp: &impl Fn(&T, &T) -> Ordering) {
    let mut i = 0;
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut largest = i;
        for c in [l, r] {
            if let (Some(a), Some(b)) = (heap.get(c), heap.get(largest)) {
                if cmp(a, b) == Ordering::Greater {
                    largest = c;
                }
            }
        }
        if largest == i {
            return;
        }
        heap.swap(i, largest);
        i = largest;
    }
}

/// `a` followed by `sep` against `b` followed by `sep`, where neither contains `sep`:
/// decided within the shorter string and one byte, so the order of parts joined with
/// separators is the order of the tuples compared part by part this way.
#[inline]
fn cmp_sep(a: &str, b: &str, sep: u8) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    match a.get(..n).cmp(&b.get(..n)) {
        Ordering::Equal => {}
        other => return other,
    }
    let next = |s: &[u8]| s.get(n).copied().unwrap_or(sep);
    next(a).cmp(&next(b))
}

/// The parts of a relationship's key (`type:id#relation@type:id#relation`, with `...`
/// for a subject that is an object), and the separator after each.
type KeyParts<'a> = [(&'a str, u8); 6];

/// Splits a read cursor (the key of the last relationship of a page) into its parts.
pub(crate) fn cursor_parts(cursor: &str) -> Result<KeyParts<'_>, EngineError> {
    let bad = || {
        EngineError::InvalidArgument(format!(
            "invalid cursor `{}`: pass back the cursor of the last relationship read",
            cursor.chars().take(64).collect::<String>()
        ))
    };
    let (rtype, rest) = cursor.split_once(':').ok_or_else(bad)?;
    let (rid, rest) = rest.split_once('#').ok_or_else(bad)?;
    let (rel, rest) = rest.split_once('@').ok_or_else(bad)?;
    let (stype, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (sid, srel) = rest.split_once('#').ok_or_else(bad)?;
    Ok([(rtype, b':'), (rid, b'#'), (rel, b'@'), (stype, b':'), (sid, b'#'), (srel, 0)])
}

/// The key parts of a stored relationship, named through `names`.
pub(crate) fn key_parts<'a>(names: &'a NameView<'_>, s: &StoredRelationship) -> KeyParts<'a> {
    let r = &s.resource;
    let sub = &s.edge.subject;
    let srel = if sub.relation == ELLIPSIS { "..." } else { names.get(sub.relation) };
    [
        (names.get(r.object_type), b':'),
        (names.get(r.object_id), b'#'),
        (names.get(r.relation), b'@'),
        (names.get(sub.object_type), b':'),
        (names.get(sub.object_id), b'#'),
        (srel, 0),
    ]
}

/// Two keys in the order of their joined strings.
pub(crate) fn cmp_keys(a: &KeyParts<'_>, b: &KeyParts<'_>) -> Ordering {
    for ((x, sep), (y, _)) in a.iter().zip(b) {
        let o = if *sep == 0 { x.cmp(y) } else { cmp_sep(x, y, *sep) };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_hands_out_everything_in_order_whatever_the_chunks() {
        let items: Vec<u32> = (0..1000).map(|i| (i * 7919) % 1000).collect();
        for want in [1, 3, 100, 999, 5000] {
            let mut o = Ordered::new(items.clone());
            let mut out = Vec::new();
            loop {
                let chunk = o.next_chunk(want, |a, b| a.cmp(b)).to_vec();
                if chunk.is_empty() {
                    break;
                }
                assert!(chunk.len() <= want.max(1));
                out.extend(chunk);
            }
            assert_eq!(out, (0..1000).collect::<Vec<u32>>(), "chunks of {want}");
        }
    }

    #[test]
    fn smallest_keeps_the_limit_in_order() {
        let cmp = |a: &u32, b: &u32| a.cmp(b);
        let run = |limit| {
            let mut s = Smallest::new(limit);
            for i in 0..10_000u32 {
                s.offer((i * 7919) % 10_000, &cmp);
            }
            s.into_sorted(&cmp)
        };
        assert_eq!(run(5), vec![0, 1, 2, 3, 4]);
        assert_eq!(run(0), Vec::<u32>::new());
        assert_eq!(run(20_000), (0..10_000).collect::<Vec<u32>>());
    }

    #[test]
    fn keys_compare_as_their_joined_strings() {
        let keys = [
            "doc:a#viewer@user:b#...",
            "doc:a#viewer@user:b#member",
            "doc:a-b#viewer@user:b#...",
            "doc:ab#viewer@user:b#...",
            "doc/x:a#viewer@user:b#...",
            "doc:a#viewer@user/x:b#...",
            "doc:a#viewer@user:b-c#...",
            "doc:a#viewer_x@user:b#...",
            "doc:a#viewer@user:*#...",
            "do:a#viewer@user:b#...",
        ];
        for a in keys {
            for b in keys {
                let (pa, pb) = (cursor_parts(a).unwrap(), cursor_parts(b).unwrap());
                assert_eq!(cmp_keys(&pa, &pb), a.cmp(b), "{a} vs {b}");
            }
        }
        assert!(cursor_parts("doc:a#viewer").is_err());
    }
}
