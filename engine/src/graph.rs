//! One revision of the relationship graph: immutable once published, cheap to clone
//! (persistent hash maps share structure), so a write builds the next revision beside
//! the current one and readers never wait.
//!
//! Layout: a forward index `(resource type, resource id) -> per relation, sorted edges`
//! for Check (one lookup serves every relation of an object a rewrite touches), and a reverse index `(subject type, subject id, subject relation) ->
//! resources` for Lookup and reads by subject. Everything is interned symbols.

use std::sync::Arc;

use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::intern::{Sym, ELLIPSIS};
use crate::schema_plan::SchemaPlan;

type PMap<K, V> = imbl::GenericHashMap<K, V, FxBuildHasher, imbl::shared_ptr::DefaultSharedPtr>;

/// Microseconds since the Unix epoch; `NEVER` for relationships that do not expire.
pub type Micros = i64;
pub const NEVER: Micros = i64::MAX;

/// `resource_type:resource_id#relation`, interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub object_type: Sym,
    pub relation: Sym,
    pub object_id: Sym,
}

/// `type:id`, interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub object_type: Sym,
    pub object_id: Sym,
}

impl ResourceKey {
    #[inline]
    pub fn object(&self) -> ObjectKey {
        ObjectKey {
            object_type: self.object_type,
            object_id: self.object_id,
        }
    }
}

/// Everything written on one object, as a view into the flat base or into a delta
/// entry: for each relation (sorted by symbol; an object has few) where its edges
/// start, and the edges, sorted by subject within each relation.
#[derive(Debug, Clone, Copy)]
pub struct ObjectEdges<'a> {
    /// `(relation, start in edges)`; a relation's edges end where the next one's start,
    /// the last relation's at `end`.
    relations: &'a [(Sym, u32)],
    end: u32,
    edges: &'a [Edge],
}

impl<'a> ObjectEdges<'a> {
    /// The edges of one relation of this object.
    #[inline]
    pub fn relation(&self, relation: Sym) -> &'a [Edge] {
        let mut it = self.relations.iter();
        while let Some((r, start)) = it.next() {
            if *r == relation {
                let end = it.next().map_or(self.end, |n| n.1);
                return self.edges.get(*start as usize..end as usize).unwrap_or(&[]);
            }
        }
        &[]
    }

    /// Every relation of the object with its edges, in relation order.
    pub fn relations(&self) -> impl Iterator<Item = (Sym, &'a [Edge])> + 'a {
        let this = *self;
        this.relations.iter().enumerate().map(move |(i, (r, start))| {
            let end = this.relations.get(i + 1).map_or(this.end, |n| n.1);
            (*r, this.edges.get(*start as usize..end as usize).unwrap_or(&[]))
        })
    }
}

/// One object as a write rebuilt it (a delta entry); empty means "deleted".
#[derive(Debug, Clone, Default)]
struct OwnedObject {
    relations: Vec<(Sym, u32)>,
    edges: Vec<Edge>,
}

impl OwnedObject {
    fn view(&self) -> ObjectEdges<'_> {
        ObjectEdges { relations: &self.relations, end: self.edges.len() as u32, edges: &self.edges }
    }

    fn push_relation(&mut self, relation: Sym, edges: impl IntoIterator<Item = Edge>) {
        let start = self.edges.len();
        self.edges.extend(edges);
        if self.edges.len() > start {
            self.relations.push((relation, start as u32));
        }
    }
}

/// A key of an [`IdIndex`]: it names its id symbol, and has a value no real key has.
trait IdKey: Copy + Eq + std::hash::Hash {
    const NONE: Self;
    fn id(&self) -> Sym;
}

impl IdKey for ObjectKey {
    const NONE: Self = ObjectKey { object_type: Sym::MAX, object_id: Sym::MAX };
    #[inline]
    fn id(&self) -> Sym {
        self.object_id
    }
}

impl IdKey for SubjectKey {
    const NONE: Self = SubjectKey { object_type: Sym::MAX, relation: Sym::MAX, object_id: Sym::MAX };
    #[inline]
    fn id(&self) -> Sym {
        self.object_id
    }
}

/// The flat bases' index, addressed by the key's id symbol: one slot per symbol holds
/// the first key written with that id (its type, and relation, confirm it) and its
/// value; a second key with the same id (`folder:1` beside `document:1`, or `tenant:t`
/// beside `tenant:t#member`) goes to a hash map. A lookup is one read at an address
/// computed from the key, where a hash map's is two dependent ones (its control bytes,
/// then its bucket): on a graph larger than the cache, one cache miss instead of two
/// for every object a Check visits.
#[derive(Debug)]
struct IdIndex<K, V> {
    slots: Vec<(K, V)>,
    more: FxHashMap<K, V>,
    len: usize,
}

impl<K: IdKey, V: Copy + Default> Default for IdIndex<K, V> {
    fn default() -> Self {
        IdIndex { slots: Vec::new(), more: FxHashMap::default(), len: 0 }
    }
}

impl<K: IdKey, V: Copy + Default> IdIndex<K, V> {
    #[inline]
    fn get(&self, key: &K) -> Option<V> {
        let (k, v) = self.slots.get(key.id() as usize)?;
        if k == key {
            return Some(*v);
        }
        if *k == K::NONE || self.more.is_empty() {
            return None;
        }
        self.more.get(key).copied()
    }

    /// Adds a key not in the index yet.
    fn insert(&mut self, key: K, value: V) {
        let at = key.id() as usize;
        if at >= self.slots.len() {
            // `resize` grows the capacity geometrically: amortised.
            self.slots.resize(at + 1, (K::NONE, V::default()));
        }
        match self.slots.get_mut(at) {
            Some(slot) if slot.0 == K::NONE => *slot = (key, value),
            _ => {
                self.more.insert(key, value);
            }
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn finish(&mut self) {
        self.slots.shrink_to_fit();
        self.more.shrink_to_fit();
    }
}

/// The forward index in flat form: built once from sorted relationships, then shared
/// by every revision until the next compaction. Objects sit in key order, each one's
/// relations contiguous in `relations` and their edges contiguous in `edges`, so one
/// hash probe and two array reads reach an edge list (a hash-array-mapped trie needs a
/// pointer chase per level, and a heap block per object and per list).
#[derive(Debug, Default)]
struct ForwardBase {
    /// Object -> its range in `relations` and where its edges start.
    index: IdIndex<ObjectKey, [u32; 3]>,
    /// The objects in key order with where their relations start (for iteration and
    /// merging).
    objects: Vec<(ObjectKey, u32)>,
    /// `(relation, start in edges)`, with one sentinel at the end.
    relations: Vec<(Sym, u32)>,
    edges: Vec<Edge>,
}

impl ForwardBase {
    #[inline]
    fn get(&self, key: &ObjectKey) -> Option<ObjectEdges<'_>> {
        let [lo, hi, first_edge] = self.index.get(key)?;
        // The edges' address is known here, with the relations': reading the first
        // edge now starts its cache miss beside theirs, where otherwise it would wait
        // for the relations to say where the edges are.
        if let Some(edge) = self.edges.get(first_edge as usize) {
            std::hint::black_box(edge.expires_at);
        }
        self.view(lo, hi)
    }

    #[inline]
    fn view(&self, lo: u32, hi: u32) -> Option<ObjectEdges<'_>> {
        let relations = self.relations.get(lo as usize..hi as usize)?;
        let end = self.relations.get(hi as usize)?.1;
        Some(ObjectEdges { relations, end, edges: &self.edges })
    }

    /// Every object in key order.
    fn iter(&self) -> impl Iterator<Item = (ObjectKey, ObjectEdges<'_>)> + '_ {
        self.objects.windows(2).filter_map(|w| {
            let [(key, lo), (_, hi)] = w else { return None };
            Some((*key, self.view(*lo, *hi)?))
        })
    }

    fn len(&self) -> usize {
        self.index.len()
    }
}

impl ForwardBase {
    /// An empty base with room for what is about to be pushed.
    fn with_capacity(objects: usize, relations: usize, edges: usize) -> Self {
        let mut b = ForwardBase::default();
        b.objects.reserve(objects + 1);
        b.relations.reserve(relations + 1);
        b.edges.reserve(edges);
        b
    }

    /// Appends one object (objects come in key order); relations with no edges, and an
    /// object with none, are left out.
    fn push<E: IntoIterator<Item = Edge>>(&mut self, key: ObjectKey, relations: impl IntoIterator<Item = (Sym, E)>) {
        let lo = self.relations.len() as u32;
        let first_edge = self.edges.len() as u32;
        for (relation, edges) in relations {
            let start = self.edges.len();
            self.edges.extend(edges);
            if self.edges.len() > start {
                self.relations.push((relation, start as u32));
            }
        }
        let hi = self.relations.len() as u32;
        if hi > lo {
            self.index.insert(key, [lo, hi, first_edge]);
            self.objects.push((key, lo));
        }
    }

    /// Closes the arrays with their sentinels.
    fn finish(mut self) -> ForwardBase {
        let (end_rel, end_edge) = (self.relations.len() as u32, self.edges.len() as u32);
        self.index.finish();
        self.relations.push((0, end_edge));
        self.objects.push((ObjectKey { object_type: Sym::MAX, object_id: Sym::MAX }, end_rel));
        self.relations.shrink_to_fit();
        self.edges.shrink_to_fit();
        self.objects.shrink_to_fit();
        self
    }
}

/// The reverse index in flat form: each subject's resources, sorted, contiguous.
#[derive(Debug, Default)]
struct ReverseBase {
    /// Subject -> its range in `resources`.
    index: IdIndex<SubjectKey, [u32; 2]>,
    /// The subjects in key order with where their resources start, plus a sentinel.
    subjects: Vec<(SubjectKey, u32)>,
    resources: Vec<ResourceKey>,
}

impl ReverseBase {
    #[inline]
    fn get(&self, key: &SubjectKey) -> Option<&[ResourceKey]> {
        let [lo, hi] = self.index.get(key)?;
        self.resources.get(lo as usize..hi as usize)
    }

    fn iter(&self) -> impl Iterator<Item = (SubjectKey, &[ResourceKey])> + '_ {
        self.subjects.windows(2).filter_map(|w| {
            let [(key, lo), (_, hi)] = w else { return None };
            Some((*key, self.resources.get(*lo as usize..*hi as usize)?))
        })
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// An empty base with room for what is about to be pushed.
    fn with_capacity(subjects: usize, resources: usize) -> ReverseBase {
        let mut b = ReverseBase::default();
        b.subjects.reserve(subjects + 1);
        b.resources.reserve(resources);
        b
    }

    /// Appends one subject's sorted resources (subjects come in key order); an empty
    /// list is left out.
    fn push(&mut self, key: SubjectKey, resources: impl IntoIterator<Item = ResourceKey>) {
        let lo = self.resources.len() as u32;
        self.resources.extend(resources);
        let hi = self.resources.len() as u32;
        if hi > lo {
            self.index.insert(key, [lo, hi]);
            self.subjects.push((key, lo));
        }
    }

    /// Closes the arrays with their sentinel.
    fn finish(mut self) -> ReverseBase {
        let end = self.resources.len() as u32;
        let sentinel = SubjectKey { object_type: Sym::MAX, relation: Sym::MAX, object_id: Sym::MAX };
        self.index.finish();
        self.subjects.push((sentinel, end));
        self.subjects.shrink_to_fit();
        self.resources.shrink_to_fit();
        self
    }
}

/// A subject, ordered by type, then relation, then id, so that all subjects of one
/// subject set (`group#member`) sit together in an edge list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectKey {
    pub object_type: Sym,
    /// [`ELLIPSIS`] for the object itself.
    pub relation: Sym,
    pub object_id: Sym,
}

/// One relationship's far end, its caveat and its expiration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub subject: SubjectKey,
    /// [`crate::caveats::NO_CAVEAT`], or the relationship's caveat and context in the
    /// engine's [`crate::caveats::Caveats`]. It fills what would be padding: an edge is
    /// 24 bytes either way.
    pub caveat: crate::caveats::CaveatId,
    pub expires_at: Micros,
}

const _: () = assert!(std::mem::size_of::<Edge>() == 24);

impl Edge {
    #[inline]
    pub fn live_at(&self, now: Micros) -> bool {
        self.expires_at > now
    }

    /// Visible at the request's time; reads the clock only for an expiring edge.
    #[inline]
    pub fn live(&self, time: &RequestTime) -> bool {
        self.expires_at == NEVER || self.expires_at > time.get()
    }
}

/// A request's "now" for expiration: fixed, or read from the wall clock the first time
/// an expiring relationship is met (most requests never meet one).
#[derive(Debug, Clone)]
pub struct RequestTime(std::cell::Cell<Micros>);

const UNREAD: Micros = Micros::MIN;

impl RequestTime {
    pub fn wall_clock() -> Self {
        RequestTime(std::cell::Cell::new(UNREAD))
    }

    pub fn fixed(now: Micros) -> Self {
        RequestTime(std::cell::Cell::new(now))
    }

    #[inline]
    pub fn get(&self) -> Micros {
        let t = self.0.get();
        if t != UNREAD {
            return t;
        }
        let now = wall_clock_micros();
        self.0.set(now);
        now
    }
}

/// Microseconds since the Unix epoch by the system clock.
pub fn wall_clock_micros() -> Micros {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX - 1),
        Err(e) => -Micros::try_from(e.duration().as_micros()).unwrap_or(Micros::MAX - 1),
    }
}

/// One change for [`GraphVersion::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphChange {
    Upsert(ResourceKey, Edge),
    Remove(ResourceKey, SubjectKey),
}

impl GraphChange {
    /// The relationship it changes.
    pub fn identity(&self) -> (ResourceKey, SubjectKey) {
        match self {
            GraphChange::Upsert(r, e) => (*r, e.subject),
            GraphChange::Remove(r, s) => (*r, *s),
        }
    }
}

/// The stored form of one relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRelationship {
    pub resource: ResourceKey,
    pub edge: Edge,
}

#[derive(Debug, Clone)]
pub struct GraphVersion {
    pub revision: u64,
    pub plan: Option<Arc<SchemaPlan>>,
    /// The Cedar side of decisions, compiled against `plan` (none: the graph decides).
    pub policies: Option<Arc<crate::policy::CompiledPolicies>>,
    /// The forward index: a flat base shared by every revision since the last
    /// compaction, and the objects changed since, which hide the base's (an empty entry
    /// hides a deleted object).
    forward: Arc<ForwardBase>,
    forward_delta: PMap<ObjectKey, Arc<OwnedObject>>,
    /// The reverse index, the same way: a changed subject's list whole (an empty list
    /// hides the base's), or for a long list its changes laid over the base's.
    reverse: Arc<ReverseBase>,
    reverse_delta: PMap<SubjectKey, ReverseEntry>,
    relationships: usize,
    /// How many stored relationships carry an expiration (the sweep skips when none).
    expiring: usize,
    /// Attribute values and security labels, per object (the keyed attribute store).
    attributes: PMap<ObjectKey, Arc<crate::policy::ObjectAttributes>>,
    /// Names the contents of the nesting relations and the schema: unique in the
    /// process, kept by a revision that changes neither (see [`GraphVersion::groups`]).
    groups: u64,
}

/// A value for [`GraphVersion::groups`] no graph has had.
fn fresh_groups() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A delta smaller than this is folded into the base only when writes are quiet.
const MIN_COMPACTION: usize = 1024;

impl GraphVersion {
    pub fn empty() -> Self {
        GraphVersion {
            revision: 0,
            groups: fresh_groups(),
            plan: None,
            policies: None,
            forward: Arc::default(),
            forward_delta: PMap::default(),
            reverse: Arc::default(),
            reverse_delta: PMap::default(),
            relationships: 0,
            expiring: 0,
            attributes: PMap::default(),
        }
    }

    /// The attribute values and labels of one object, if it has any.
    #[inline]
    pub fn attributes_of(&self, key: &ObjectKey) -> Option<&Arc<crate::policy::ObjectAttributes>> {
        self.attributes.get(key)
    }

    /// Sets (or, with `None`, removes) the attributes of one object.
    pub fn set_attributes(&mut self, key: ObjectKey, attributes: Option<Arc<crate::policy::ObjectAttributes>>) {
        match attributes {
            Some(a) => {
                self.attributes.insert(key, a);
            }
            None => {
                self.attributes.remove(&key);
            }
        }
    }

    /// Every object with attributes, in no particular order.
    pub fn attribute_entries(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<crate::policy::ObjectAttributes>)> {
        self.attributes.iter()
    }

    /// How many objects have attributes.
    pub fn attribute_count(&self) -> usize {
        self.attributes.len()
    }

    /// Number of relationships stored (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.relationships
    }

    pub fn is_empty(&self) -> bool {
        self.relationships == 0
    }

    /// How many stored relationships carry an expiration.
    pub fn expiring(&self) -> usize {
        self.expiring
    }

    /// A graph holding exactly `relationships` (a relationship given twice is kept
    /// once), built in one pass over them sorted: the flat forward and reverse indexes
    /// are filled in order, each array allocated once.
    pub fn build(mut relationships: Vec<StoredRelationship>) -> GraphVersion {
        relationships.sort_unstable_by(|a, b| {
            (a.resource.object(), a.resource.relation, a.edge.subject).cmp(&(
                b.resource.object(),
                b.resource.relation,
                b.edge.subject,
            ))
        });
        relationships.dedup_by(|a, b| a.resource == b.resource && a.edge.subject == b.edge.subject);
        let mut graph = GraphVersion::empty();
        graph.relationships = relationships.len();
        graph.expiring = relationships.iter().filter(|r| r.edge.expires_at != NEVER).count();
        // The reverse index is built on a second thread while this one fills the
        // forward index (a cold start is mostly these two passes).
        let (forward, reverse) = std::thread::scope(|s| {
            let reverse = s.spawn(|| Self::build_reverse(&relationships));
            let forward = Self::build_forward(&relationships);
            let reverse = reverse.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            (forward, reverse)
        });
        graph.forward = Arc::new(forward);
        graph.reverse = Arc::new(reverse);
        graph
    }

    /// The flat forward index of relationships sorted by object, relation and subject.
    fn build_forward(relationships: &[StoredRelationship]) -> ForwardBase {
        let objects = relationships.chunk_by(|a, b| a.resource.object() == b.resource.object());
        let lists = relationships.chunk_by(|a, b| a.resource == b.resource).count();
        let mut forward = ForwardBase::with_capacity(objects.clone().count(), lists, relationships.len());
        for object_run in objects {
            let Some(first) = object_run.first() else { continue };
            let relations = object_run
                .chunk_by(|a, b| a.resource.relation == b.resource.relation)
                .map(|run| (run.first().map_or(0, |r| r.resource.relation), run.iter().map(|r| r.edge)));
            forward.push(first.resource.object(), relations);
        }
        forward.finish()
    }

    /// The flat reverse index of `relationships`.
    fn build_reverse(relationships: &[StoredRelationship]) -> ReverseBase {
        let mut reverse: Vec<(SubjectKey, ResourceKey)> =
            relationships.iter().map(|r| (r.edge.subject, r.resource)).collect();
        reverse.sort_unstable();
        let subjects = reverse.chunk_by(|a, b| a.0 == b.0);
        let mut base = ReverseBase::with_capacity(subjects.clone().count(), reverse.len());
        for run in subjects {
            let Some((subject, _)) = run.first() else { continue };
            base.push(*subject, run.iter().map(|(_, r)| *r));
        }
        base.finish()
    }

    /// The edges of `resource#relation`, sorted by subject.
    #[inline]
    pub fn edges(&self, key: &ResourceKey) -> &[Edge] {
        self.object(&key.object())
            .map(|o| o.relation(key.relation))
            .unwrap_or(&[])
    }

    /// Everything written on one object.
    #[inline]
    pub fn object(&self, key: &ObjectKey) -> Option<ObjectEdges<'_>> {
        if !self.forward_delta.is_empty() {
            if let Some(o) = self.forward_delta.get(key) {
                return (!o.relations.is_empty()).then(|| o.view());
            }
        }
        self.forward.get(key)
    }

    /// Looks up a batch's objects side by side, for the Checks that follow, and returns
    /// them (in `out`, in the order of `keys`) with a value computed from what was read,
    /// so the reads stay. On a graph larger than the cache each object is a chain of
    /// three cache misses (its index slot, its relations, its edges), each address known
    /// only once the one before has arrived. Looked up one object at a time, the core can
    /// overlap the chains of only the few objects its reorder window holds; here each
    /// link is one small loop over the whole batch, whose reads are independent of each
    /// other, so a batch's misses of one link all overlap.
    pub fn touch_objects<'g>(&'g self, keys: &[ObjectKey], out: &mut Vec<Option<ObjectEdges<'g>>>) -> u64 {
        enum Found<'g> {
            Base([u32; 3]),
            Changed(ObjectEdges<'g>),
            Absent,
        }
        let base = &*self.forward;
        // The index slots.
        let found: Vec<Found<'g>> = keys
            .iter()
            .map(|key| {
                if !self.forward_delta.is_empty() {
                    if let Some(o) = self.forward_delta.get(key) {
                        return if o.relations.is_empty() { Found::Absent } else { Found::Changed(o.view()) };
                    }
                }
                base.index.get(key).map_or(Found::Absent, Found::Base)
            })
            .collect();
        // The relations, and the first edge beside them.
        let mut acc = 0u64;
        out.clear();
        out.extend(found.into_iter().map(|f| match f {
            Found::Base([lo, hi, first_edge]) => {
                if let Some(e) = base.edges.get(first_edge as usize) {
                    acc ^= u64::from(e.subject.object_id);
                }
                base.view(lo, hi)
            }
            Found::Changed(o) => Some(o),
            Found::Absent => None,
        }));
        // The last edge of each relation (a list of more than a few spans lines).
        for o in out.iter().flatten() {
            for (r, edges) in o.relations() {
                acc ^= u64::from(r) ^ edges.last().map_or(0, |e| u64::from(e.subject.object_id) << 32);
            }
        }
        acc
    }

    /// [`GraphVersion::touch_objects`] for what names each of `subjects` (the reverse
    /// list a Check reads to walk up nested groups, or to search a long edge list): the
    /// index slots, then both ends of the lists.
    pub fn touch_subjects(&self, subjects: &[SubjectKey]) -> u64 {
        let lists: Vec<Resources<'_>> = subjects.iter().map(|s| self.resources_of(s)).collect();
        lists.iter().fold(0, |acc, list| {
            // The base list's ends (an overlay's tree is walked by the Check itself).
            let first = list.base.first().map_or(0, |r| r.object_id);
            let last = list.base.last().map_or(0, |r| r.object_id);
            acc ^ u64::from(first) ^ (u64::from(last) << 32)
        })
    }

    /// Two graphs with the same value here (in one process) have the same schema and
    /// the same relationships on every nesting relation, so the same groups hold each
    /// subject: what Check's closures depend on. A new value whenever the schema changes
    /// or a change touches a nesting relation; a clone keeps it.
    pub fn groups(&self) -> u64 {
        self.groups
    }

    /// Replaces the schema (a new [`GraphVersion::groups`]).
    pub fn set_plan(&mut self, plan: Option<Arc<SchemaPlan>>) {
        self.plan = plan;
        self.groups = fresh_groups();
    }

    /// The resources that name `subject` directly, sorted.
    #[inline]
    pub fn resources_of(&self, subject: &SubjectKey) -> Resources<'_> {
        if !self.reverse_delta.is_empty() {
            match self.reverse_delta.get(subject) {
                Some(ReverseEntry::Whole(list)) => return Resources { base: list, overlay: None },
                Some(ReverseEntry::Overlay(o)) => {
                    return Resources { base: self.reverse.get(subject).unwrap_or(&[]), overlay: Some(o) }
                }
                None => {}
            }
        }
        Resources { base: self.reverse.get(subject).unwrap_or(&[]), overlay: None }
    }

    /// The stored edge for exactly this relationship, if any (expired or not).
    pub fn find(&self, resource: &ResourceKey, subject: &SubjectKey) -> Option<Edge> {
        let edges = self.edges(resource);
        edges
            .binary_search_by(|e| e.subject.cmp(subject))
            .ok()
            .and_then(|i| edges.get(i).copied())
    }

    /// Every object with its edges, in no particular order.
    fn objects(&self) -> impl Iterator<Item = (ObjectKey, ObjectEdges<'_>)> + '_ {
        let delta = &self.forward_delta;
        let base = self.forward.iter().filter(move |(k, _)| delta.is_empty() || !delta.contains_key(k));
        let changed = delta.iter().filter(|(_, o)| !o.relations.is_empty()).map(|(k, o)| (*k, o.view()));
        base.chain(changed)
    }

    /// Every stored relationship, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = StoredRelationship> + '_ {
        self.objects().flat_map(|(object, edges)| relationships_of(object, edges))
    }

    /// Every relationship stored on one object.
    pub fn object_relationships(
        &self,
        object: &ObjectKey,
    ) -> impl Iterator<Item = StoredRelationship> + '_ {
        let object = *object;
        self.object(&object).into_iter().flat_map(move |edges| relationships_of(object, edges))
    }

    /// Applies many changes to distinct relationships at once: every object and reverse
    /// list they touch is rebuilt once, however many changes land in it (one change at
    /// a time would copy a popular subject's list once per change). Returns how many
    /// relationship copies the new revision holds that its predecessor does not share:
    /// the changes, or every relationship when the change folded the delta into a new
    /// base (the engine's history counts it against what it keeps).
    ///
    /// A batch large against the graph (an import, most of all into an empty or small
    /// graph) is merged straight into new flat bases, as a compaction would fold it in
    /// right after: the delta would only be built to be thrown away.
    pub fn apply(&mut self, changes: &[GraphChange]) -> usize {
        let nesting = |c: &GraphChange| {
            let resource = c.identity().0;
            self.plan.as_deref().is_none_or(|p| p.is_nesting(resource.object_type, resource.relation))
        };
        if changes.iter().any(nesting) {
            self.groups = fresh_groups();
        }
        let sorted = sorted_changes(changes);
        if sorted.len() >= MIN_COMPACTION && sorted.len().saturating_mul(8) >= self.relationships {
            self.merge(&sorted);
            return self.relationships;
        }
        let copies = self.apply_to_delta(&sorted);
        if self.delta_is_large() {
            self.compact();
            return self.relationships;
        }
        copies
    }

    /// The delta path of [`GraphVersion::apply`]: the touched objects and reverse lists,
    /// rebuilt, go into the delta over the shared base. Returns how many relationship
    /// copies the new entries hold, a relationship counting once for its place in both
    /// indexes: an object is copied whole, a short reverse list too, a long one only in
    /// the tree nodes its overlay changes (counted as its changes).
    fn apply_to_delta(&mut self, sorted: &[SortedChange]) -> usize {
        // Reverse-index changes: (subject, resource, added).
        let mut reverse: Vec<(SubjectKey, ResourceKey, bool)> = Vec::new();
        let mut counts = Counts { relationships: self.relationships, expiring: self.expiring };
        let mut copies = 0;
        // A handle on the base, so objects can be read while the delta changes.
        let base = self.forward.clone();
        for run in sorted.chunk_by(|a, b| a.0.object() == b.0.object()) {
            let Some(first) = run.first() else { continue };
            let okey = first.0.object();
            let delta = if self.forward_delta.is_empty() { None } else { self.forward_delta.get(&okey).cloned() };
            let current = match &delta {
                Some(o) => (!o.relations.is_empty()).then(|| o.view()),
                None => base.get(&okey),
            };
            let mut object = OwnedObject::default();
            merge_object(okey, current, run, &mut object, &mut counts, Some(&mut reverse));
            copies += object.edges.len().max(1);
            // An emptied object stays in the delta as an empty entry until compaction
            // (a rebase, see `rebase`, tells changes apart by their entries).
            self.forward_delta.insert(okey, Arc::new(object));
        }
        (self.relationships, self.expiring) = (counts.relationships, counts.expiring);
        // Reverse: each subject's list changed once, in one merge.
        reverse.sort_unstable();
        for run in reverse.chunk_by(|a, b| a.0 == b.0) {
            let Some((subject, _, _)) = run.first().copied() else { continue };
            let (entry, copied) = self.changed_reverse(&subject, run);
            copies += copied;
            self.reverse_delta.insert(subject, entry);
        }
        copies.div_ceil(2)
    }

    /// `subject`'s reverse entry with `run` (its sorted changes) applied, and how many
    /// resources it copied. A list that stays short is copied whole; a long one gets
    /// (or keeps) an overlay over its base list, where a change copies a few tree nodes,
    /// whatever the list's length: a tenant object that a million documents name takes
    /// one more claim without copying the million.
    fn changed_reverse(&self, subject: &SubjectKey, run: &[(SubjectKey, ResourceKey, bool)]) -> (ReverseEntry, usize) {
        let current = self.resources_of(subject);
        let base = self.reverse.get(subject).unwrap_or(&[]);
        let in_delta = !self.reverse_delta.is_empty() && self.reverse_delta.contains_key(subject);
        let mut overlay = match current.overlay {
            Some(o) => o.clone(),
            None if current.len() + run.len() < OVERLAY_MIN => {
                let mut list = Vec::with_capacity(current.len() + run.len());
                merge_resources(current.iter(), run, &mut list);
                let copied = list.len();
                return (ReverseEntry::Whole(Arc::from(list)), copied);
            }
            // A whole list in the delta that has grown long, or the base list itself.
            None if in_delta => Overlay::between(base, current.iter()),
            None => Overlay { changes: imbl::OrdMap::new(), len: base.len() },
        };
        for &(_, resource, named) in run {
            let was = current.contains(&resource);
            overlay.len = overlay.len + usize::from(named) - usize::from(was);
            overlay.changes.insert(resource, named);
        }
        (ReverseEntry::Overlay(Arc::new(overlay)), run.len())
    }

    /// New flat bases holding the current contents (base and delta) with `sorted`
    /// applied, built in one ordered pass each: the merge path of
    /// [`GraphVersion::apply`], and with no changes a compaction. With changes and a
    /// core to spare, the reverse base is built on a second thread.
    fn merge(&mut self, sorted: &[SortedChange]) {
        let objects = self.sorted_delta_objects();
        let subjects = self.sorted_delta_subjects();
        let current_objects = || merged(self.forward.iter(), objects.iter().map(|(k, o)| (*k, o.view())));
        let current_subjects = || merged(self.reverse.iter().map(|(k, l)| (k, Resources::of(l))), subjects.iter().copied());
        let mut counts = Counts { relationships: self.relationships, expiring: self.expiring };
        let (forward, reverse) = std::thread::scope(|s| {
            let build_reverse = || {
                // A relationship upserted is in its subject's list afterwards and one
                // removed is not, whatever was there before: the same lists the
                // forward merge's own changes would give.
                let mut changes: Vec<(SubjectKey, ResourceKey, bool)> =
                    sorted.iter().map(|c| (c.1, c.0, c.2.is_some())).collect();
                changes.sort_unstable();
                let runs = changes.chunk_by(|a, b| a.0 == b.0).filter_map(|run| Some((run.first()?.0, run)));
                // Room for every key either side holds (a few too many where both do):
                // the index is not shrunk afterwards.
                let mut base = ReverseBase::with_capacity(
                    self.reverse.len() + subjects.len() + runs.clone().count(),
                    self.reverse.resources.len() + subjects.iter().map(|(_, l)| l.len()).sum::<usize>() + changes.len(),
                );
                let mut list = Vec::new();
                for (key, old, run) in zip_ordered(current_subjects(), runs) {
                    list.clear();
                    merge_resources(old.into_iter().flatten(), run.unwrap_or(&[]), &mut list);
                    base.push(key, list.iter().copied());
                }
                base.finish()
            };
            let reverse = (!sorted.is_empty() && spare_core()).then(|| s.spawn(build_reverse));
            let runs = sorted.chunk_by(|a, b| a.0.object() == b.0.object()).filter_map(|run| Some((run.first()?.0.object(), run)));
            let mut base = ForwardBase::with_capacity(
                self.forward.len() + objects.len() + runs.clone().count(),
                self.forward.relations.len()
                    + objects.iter().map(|(_, o)| o.relations.len()).sum::<usize>()
                    + sorted.chunk_by(|a, b| a.0 == b.0).count(),
                self.forward.edges.len() + objects.iter().map(|(_, o)| o.edges.len()).sum::<usize>() + sorted.len(),
            );
            let mut object = OwnedObject::default();
            for (key, current, run) in zip_ordered(current_objects(), runs) {
                match run {
                    None => {
                        if let Some(current) = current {
                            base.push(key, current.relations().map(|(r, e)| (r, e.iter().copied())));
                        }
                    }
                    Some(run) => {
                        object.relations.clear();
                        object.edges.clear();
                        merge_object(key, current, run, &mut object, &mut counts, None);
                        base.push(key, object.view().relations().map(|(r, e)| (r, e.iter().copied())));
                    }
                }
            }
            let forward = base.finish();
            let reverse = match reverse {
                Some(thread) => thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                None => build_reverse(),
            };
            (forward, reverse)
        });
        (self.relationships, self.expiring) = (counts.relationships, counts.expiring);
        self.forward = Arc::new(forward);
        self.forward_delta = PMap::default();
        self.reverse = Arc::new(reverse);
        self.reverse_delta = PMap::default();
    }

    /// Changes not yet folded into the flat indexes (see [`GraphVersion::compact`]).
    pub fn has_changes(&self) -> bool {
        !(self.forward_delta.is_empty() && self.reverse_delta.is_empty())
    }

    /// The changes not yet folded into the flat indexes touch more than `1/fraction`
    /// of the keys the indexes hold (and at least [`MIN_COMPACTION`] keys).
    pub fn changes_exceed(&self, fraction: usize) -> bool {
        let delta = self.forward_delta.len() + self.reverse_delta.len();
        let base = self.forward.len() + self.reverse.len();
        delta > MIN_COMPACTION.max(base / fraction.max(1))
    }

    /// The delta has grown to an eighth of the base: reads probe it first, and its
    /// entries cost a heap block each. Compacting in the write itself is the backstop;
    /// the server compacts earlier, off the write path ([`crate::Engine::compact_if_due`]).
    fn delta_is_large(&self) -> bool {
        self.changes_exceed(8)
    }

    /// Folds the delta into new flat bases, by merging the base's keys (in order) with
    /// the delta's (sorted): no relationship is sorted again. One thread, so the
    /// server's compactor keeps to the share of a core it is spaced for.
    pub fn compact(&mut self) {
        self.merge(&[]);
    }

    /// The objects in the delta, in key order.
    fn sorted_delta_objects(&self) -> Vec<(ObjectKey, &OwnedObject)> {
        let mut objects: Vec<(ObjectKey, &OwnedObject)> = self.forward_delta.iter().map(|(k, o)| (*k, &**o)).collect();
        objects.sort_unstable_by_key(|(k, _)| *k);
        objects
    }

    /// The subjects in the delta with their current lists, in key order.
    fn sorted_delta_subjects(&self) -> Vec<(SubjectKey, Resources<'_>)> {
        let mut subjects: Vec<(SubjectKey, Resources<'_>)> =
            self.reverse_delta.keys().map(|k| (*k, self.resources_of(k))).collect();
        subjects.sort_unstable_by_key(|(k, _)| *k);
        subjects
    }

    /// A compaction done off the write path, brought up to date: `self` is `from`
    /// compacted, and `newer` a later revision that writes made from `from` meanwhile.
    /// The result holds `newer`'s contents on `self`'s flat indexes, with only the
    /// delta entries written after `from` (an entry is a change when `from` does not
    /// share it). `None` when `newer` no longer builds on `from`'s indexes (a write
    /// compacted them itself).
    pub fn rebase(&self, from: &GraphVersion, newer: &GraphVersion) -> Option<GraphVersion> {
        if !(Arc::ptr_eq(&from.forward, &newer.forward) && Arc::ptr_eq(&from.reverse, &newer.reverse)) {
            return None;
        }
        let mut next = newer.clone();
        next.forward = self.forward.clone();
        next.reverse = self.reverse.clone();
        next.forward_delta = written_since(&newer.forward_delta, &from.forward_delta, Arc::ptr_eq);
        // An overlay holds the changes over the old base list: laid over the new one
        // (which holds some of them already) it is taken again, as what differs.
        next.reverse_delta = written_since(&newer.reverse_delta, &from.reverse_delta, ReverseEntry::same)
            .into_iter()
            .map(|(k, entry)| match entry {
                ReverseEntry::Overlay(_) => {
                    let base = self.reverse.get(&k).unwrap_or(&[]);
                    (k, ReverseEntry::Overlay(Arc::new(Overlay::between(base, newer.resources_of(&k).iter()))))
                }
                whole => (k, whole),
            })
            .collect();
        Some(next)
    }
}

/// The entries of `newer` that `older` does not share (by `same`): the ones written
/// in between.
fn written_since<K: std::hash::Hash + Eq + Copy, V: Clone>(
    newer: &PMap<K, V>,
    older: &PMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
) -> PMap<K, V> {
    newer
        .iter()
        .filter(|(k, v)| !older.get(k).is_some_and(|was| same(was, v)))
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// Two key-ordered sequences as one, in key order; on a key both hold, `changed`'s
/// entry replaces `base`'s.
fn merged<K: Ord + Copy, V>(
    base: impl Iterator<Item = (K, V)>,
    changed: impl Iterator<Item = (K, V)>,
) -> impl Iterator<Item = (K, V)> {
    zip_ordered(base, changed).filter_map(|(k, b, c)| Some((k, c.or(b)?)))
}

/// Two key-ordered sequences (each key at most once in each) side by side: every key
/// either holds, in order, with its entry from each.
fn zip_ordered<K: Ord + Copy, A, B>(
    a: impl Iterator<Item = (K, A)>,
    b: impl Iterator<Item = (K, B)>,
) -> impl Iterator<Item = (K, Option<A>, Option<B>)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some((ka, _)), Some((kb, _))) if ka == kb => {
                let (k, va) = a.next()?;
                return b.next().map(|(_, vb)| (k, Some(va), Some(vb)));
            }
            (Some((ka, _)), Some((kb, _))) => ka < kb,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_a {
            a.next().map(|(k, v)| (k, Some(v), None))
        } else {
            b.next().map(|(k, v)| (k, None, Some(v)))
        }
    })
}

fn relationships_of(object: ObjectKey, edges: ObjectEdges<'_>) -> impl Iterator<Item = StoredRelationship> + '_ {
    edges.relations().flat_map(move |(relation, list)| {
        list.iter().map(move |edge| StoredRelationship {
            resource: ResourceKey {
                object_type: object.object_type,
                relation,
                object_id: object.object_id,
            },
            edge: *edge,
        })
    })
}

/// This process may run on more than one core (its affinity mask and CPU quota allow
/// it), so a second thread can do work beside the first. Pinned to one core (as a
/// server sharing a machine with its load generator is), a second thread would only
/// share that core and its cache: measured, a 10M import through gRPC took 25% longer.
pub(crate) fn spare_core() -> bool {
    static SPARE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPARE.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// One change as [`GraphVersion::apply`] merges it: the relationship, and its new edge
/// (`None`: removed).
type SortedChange = (ResourceKey, SubjectKey, Option<Edge>);

/// `changes` sorted by object, relation and subject, one per relationship: of two
/// changes to one relationship the later one wins (the sort is stable).
fn sorted_changes(changes: &[GraphChange]) -> Vec<SortedChange> {
    let mut sorted: Vec<SortedChange> = changes
        .iter()
        .map(|c| match c {
            GraphChange::Upsert(r, e) => (*r, e.subject, Some(*e)),
            GraphChange::Remove(r, s) => (*r, *s, None),
        })
        .collect();
    sorted.sort_by_key(|c| (c.0.object(), c.0.relation, c.1));
    let mut write = 0;
    for read in 0..sorted.len() {
        let same_as_next = match (sorted.get(read), sorted.get(read + 1)) {
            (Some(a), Some(b)) => a.0 == b.0 && a.1 == b.1,
            _ => false,
        };
        if !same_as_next {
            sorted.swap(write, read);
            write += 1;
        }
    }
    sorted.truncate(write);
    sorted
}

/// The relationship counts a merge keeps current.
#[derive(Debug, Clone, Copy)]
struct Counts {
    relationships: usize,
    expiring: usize,
}

/// One object (`current`, if it holds anything) with the changes of `run` (all on
/// `object`, sorted) applied, into `out` (empty). Each relationship added or removed is
/// counted, and reported to `reverse` as `(subject, resource, added)` when given.
fn merge_object(
    object: ObjectKey,
    current: Option<ObjectEdges<'_>>,
    run: &[SortedChange],
    out: &mut OwnedObject,
    counts: &mut Counts,
    mut reverse: Option<&mut Vec<(SubjectKey, ResourceKey, bool)>>,
) {
    let mut old_relations = current.into_iter().flat_map(|o| o.relations()).peekable();
    let mut runs = run.chunk_by(|a, b| a.0.relation == b.0.relation).peekable();
    // Walk the object's relations and the changed ones together, in order.
    loop {
        let next_old = old_relations.peek().map(|(r, _)| *r);
        let next_changed = runs.peek().and_then(|run| run.first()).map(|c| c.0.relation);
        let relation = match (next_old, next_changed) {
            (None, None) => break,
            (Some(o), Some(c)) => o.min(c),
            (Some(o), None) => o,
            (None, Some(c)) => c,
        };
        let old: &[Edge] = if next_old == Some(relation) {
            old_relations.next().map(|(_, e)| e).unwrap_or(&[])
        } else {
            &[]
        };
        let run = if next_changed == Some(relation) { runs.next().unwrap_or(&[]) } else { &[] };
        if run.is_empty() {
            out.push_relation(relation, old.iter().copied());
            continue;
        }
        let resource = ResourceKey { object_type: object.object_type, relation, object_id: object.object_id };
        let mut report = |subject: SubjectKey, added: bool| {
            if let Some(r) = reverse.as_deref_mut() {
                r.push((subject, resource, added));
            }
        };
        // Merge the old list with the run (both sorted by subject).
        let start = out.edges.len();
        let (mut i, mut j) = (0, 0);
        loop {
            match (old.get(i), run.get(j)) {
                (Some(o), Some(c)) if o.subject < c.1 => {
                    out.edges.push(*o);
                    i += 1;
                }
                (Some(o), Some(c)) if o.subject == c.1 => {
                    counts.expiring -= usize::from(o.expires_at != NEVER);
                    match c.2 {
                        Some(e) => {
                            counts.expiring += usize::from(e.expires_at != NEVER);
                            out.edges.push(e);
                        }
                        None => {
                            report(o.subject, false);
                            counts.relationships -= 1;
                        }
                    }
                    i += 1;
                    j += 1;
                }
                (_, Some(c)) => {
                    if let Some(e) = c.2 {
                        report(e.subject, true);
                        counts.relationships += 1;
                        counts.expiring += usize::from(e.expires_at != NEVER);
                        out.edges.push(e);
                    }
                    j += 1;
                }
                (Some(o), None) => {
                    out.edges.push(*o);
                    i += 1;
                }
                (None, None) => break,
            }
        }
        if out.edges.len() > start {
            out.relations.push((relation, start as u32));
        }
    }
}

/// One subject's sorted resources `old` with `run` (sorted changes to that subject's
/// list: `(subject, resource, added)`) applied, appended to `out`.
fn merge_resources(
    old: impl IntoIterator<Item = ResourceKey>,
    run: &[(SubjectKey, ResourceKey, bool)],
    out: &mut Vec<ResourceKey>,
) {
    let mut old = old.into_iter().peekable();
    let mut run = run.iter().peekable();
    loop {
        match (old.peek(), run.peek()) {
            (Some(o), Some(c)) if *o < c.1 => {
                out.push(*o);
                old.next();
            }
            (Some(o), Some(c)) if *o == c.1 => {
                if c.2 {
                    out.push(*o);
                }
                old.next();
                run.next();
            }
            (_, Some(c)) => {
                if c.2 {
                    out.push(c.1);
                }
                run.next();
            }
            (Some(o), None) => {
                out.push(*o);
                old.next();
            }
            (None, None) => break,
        }
    }
}

/// Below this many resources a changed subject's list is copied whole into the delta;
/// from it on, the changes are laid over the base list in a persistent tree instead.
/// Small in the crate's tests, so that their graphs take both paths.
const OVERLAY_MIN: usize = if cfg!(test) { 3 } else { 256 };

/// A subject's entry in the reverse delta.
#[derive(Debug, Clone)]
enum ReverseEntry {
    /// Its whole list (empty: the subject names nothing any more).
    Whole(Arc<[ResourceKey]>),
    /// Its changes over its list in the base.
    Overlay(Arc<Overlay>),
}

impl ReverseEntry {
    /// The same entry (not merely equal contents): a rebase keeps the entries written
    /// since the compaction's start.
    fn same(a: &ReverseEntry, b: &ReverseEntry) -> bool {
        match (a, b) {
            (ReverseEntry::Whole(a), ReverseEntry::Whole(b)) => Arc::ptr_eq(a, b),
            (ReverseEntry::Overlay(a), ReverseEntry::Overlay(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Changes over a base list: each resource named (`true`) or not (`false`) whatever
/// the base says; the base decides the rest. Cloned in O(1), changed in O(log n).
#[derive(Debug, Clone)]
struct Overlay {
    changes: imbl::OrdMap<ResourceKey, bool>,
    /// How many resources the list holds with the changes applied.
    len: usize,
}

impl Overlay {
    /// The overlay that turns `base` into `list` (both sorted).
    fn between(base: &[ResourceKey], list: impl IntoIterator<Item = ResourceKey>) -> Overlay {
        let mut changes = imbl::OrdMap::new();
        let mut len = 0;
        for (key, in_base, in_list) in zip_ordered(base.iter().map(|r| (*r, ())), list.into_iter().map(|r| (r, ()))) {
            len += usize::from(in_list.is_some());
            if in_base.is_some() != in_list.is_some() {
                changes.insert(key, in_list.is_some());
            }
        }
        Overlay { changes, len }
    }
}

/// The resources that name one subject, in order: a sorted list, or a base list with
/// an [`Overlay`] of changes over it.
#[derive(Debug, Clone, Copy)]
pub struct Resources<'a> {
    base: &'a [ResourceKey],
    overlay: Option<&'a Overlay>,
}

impl<'a> Resources<'a> {
    fn of(list: &'a [ResourceKey]) -> Resources<'a> {
        Resources { base: list, overlay: None }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.overlay.map_or(self.base.len(), |o| o.len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `resource` is among them.
    #[inline]
    pub fn contains(&self, resource: &ResourceKey) -> bool {
        match self.overlay.and_then(|o| o.changes.get(resource)) {
            Some(named) => *named,
            None => self.base.binary_search(resource).is_ok(),
        }
    }

    /// All of them, in order.
    #[inline]
    pub fn iter(&self) -> ResourcesIter<'a> {
        match self.overlay {
            None => ResourcesIter::List(self.base.iter()),
            Some(o) => ResourcesIter::overlaid(self.base, o.changes.range(..)),
        }
    }

    /// Those from `lo` on, in order.
    #[inline]
    pub fn iter_from(&self, lo: ResourceKey) -> ResourcesIter<'a> {
        let base = self.base.get(self.base.partition_point(|r| *r < lo)..).unwrap_or(&[]);
        match self.overlay {
            None => ResourcesIter::List(base.iter()),
            Some(o) => ResourcesIter::overlaid(base, o.changes.range(lo..)),
        }
    }
}

impl<'a> IntoIterator for Resources<'a> {
    type Item = ResourceKey;
    type IntoIter = ResourcesIter<'a>;

    #[inline]
    fn into_iter(self) -> ResourcesIter<'a> {
        self.iter()
    }
}

/// The iterator of [`Resources`]: a sorted list, or a base list merged with an
/// overlay's changes (boxed: only long lists changed since the last compaction have one).
pub enum ResourcesIter<'a> {
    List(std::slice::Iter<'a, ResourceKey>),
    Overlaid(Box<dyn Iterator<Item = ResourceKey> + 'a>),
}

impl<'a> ResourcesIter<'a> {
    /// `base` with `changes` (in key order) laid over it: a changed resource is named
    /// as its change says, any other as the base does.
    fn overlaid(base: &'a [ResourceKey], changes: impl Iterator<Item = (&'a ResourceKey, &'a bool)> + 'a) -> Self {
        let merged = zip_ordered(base.iter().map(|r| (*r, ())), changes.map(|(r, named)| (*r, *named)));
        ResourcesIter::Overlaid(Box::new(merged.filter_map(|(r, _, change)| change.unwrap_or(true).then_some(r))))
    }
}

impl std::fmt::Debug for ResourcesIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourcesIter").field("overlaid", &matches!(self, ResourcesIter::Overlaid(_))).finish_non_exhaustive()
    }
}

impl Iterator for ResourcesIter<'_> {
    type Item = ResourceKey;

    #[inline]
    fn next(&mut self) -> Option<ResourceKey> {
        match self {
            ResourcesIter::List(list) => list.next().copied(),
            ResourcesIter::Overlaid(merged) => merged.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            ResourcesIter::List(list) => list.size_hint(),
            ResourcesIter::Overlaid(merged) => merged.size_hint(),
        }
    }
}

impl SubjectKey {
    pub fn is_object(&self) -> bool {
        self.relation == ELLIPSIS
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// One relationship change: upsert or remove, resource object, relation, subject
    /// object, subject relation, expiring.
    type Op = (bool, u32, u32, u32, u32, bool);

    /// Objects of the two types share ids in pairs (`10:100` and `11:100`), as subjects of
    /// one id do across relations: the flat index keeps one of each id in its slot.
    fn resource(o: u32, r: u32) -> ResourceKey {
        ResourceKey { object_type: 10 + o % 2, relation: 20 + r, object_id: 100 + o / 2 }
    }

    fn subject(s: u32, r: u32) -> SubjectKey {
        SubjectKey { object_type: 12 + s % 3, relation: if r == 0 { ELLIPSIS } else { 30 + r }, object_id: 200 + s }
    }

    fn change((upsert, o, r, s, sr, expiring): Op) -> GraphChange {
        let (res, sub) = (resource(o, r), subject(s, sr));
        if upsert {
            let expires_at = if expiring { 1_000 + i64::from(o) } else { NEVER };
            GraphChange::Upsert(res, Edge { subject: sub, caveat: 0, expires_at })
        } else {
            GraphChange::Remove(res, sub)
        }
    }

    /// The graph holds exactly `model`, through every read.
    fn agrees(graph: &GraphVersion, model: &BTreeMap<(ResourceKey, SubjectKey), Edge>) -> Result<(), TestCaseError> {
        let stored: BTreeSet<_> = graph.iter().map(|r| (r.resource, r.edge.subject, r.edge.expires_at)).collect();
        let expected: BTreeSet<_> = model.iter().map(|((r, s), e)| (*r, *s, e.expires_at)).collect();
        prop_assert_eq!(&stored, &expected);
        prop_assert_eq!(graph.len(), model.len());
        prop_assert_eq!(graph.expiring(), model.values().filter(|e| e.expires_at != NEVER).count());
        for o in 0..12 {
            for r in 0..3 {
                let key = resource(o, r);
                let want: Vec<Edge> = model.range((key, subject(0, 0))..).take_while(|((k, _), _)| *k == key).map(|(_, e)| *e).collect();
                let mut want = want;
                want.sort_by_key(|e| e.subject);
                prop_assert_eq!(graph.edges(&key), &want[..]);
            }
            let object = resource(o, 0).object();
            let on_object: BTreeSet<_> = graph.object_relationships(&object).map(|r| (r.resource, r.edge.subject)).collect();
            let want: BTreeSet<_> = model.keys().filter(|(r, _)| r.object() == object).copied().collect();
            prop_assert_eq!(on_object, want);
        }
        // The batch lookup finds each object as a single lookup does, in the keys' order
        // (repeats and absent objects included).
        let keys: Vec<ObjectKey> = (0..14).rev().chain([3, 3, 0]).map(|o| resource(o, 0).object()).collect();
        let mut found = Vec::new();
        graph.touch_objects(&keys, &mut found);
        prop_assert_eq!(found.len(), keys.len());
        for (key, got) in keys.iter().zip(&found) {
            let want: Option<Vec<(Sym, Vec<Edge>)>> = graph.object(key).map(|o| o.relations().map(|(r, e)| (r, e.to_vec())).collect());
            let got: Option<Vec<(Sym, Vec<Edge>)>> = got.map(|o| o.relations().map(|(r, e)| (r, e.to_vec())).collect());
            prop_assert_eq!(got, want);
        }
        for s in 0..12 {
            for sr in 0..2 {
                let key = subject(s, sr);
                let want: Vec<ResourceKey> = model.keys().filter(|(_, sub)| *sub == key).map(|(r, _)| *r).collect::<BTreeSet<_>>().into_iter().collect();
                let got = graph.resources_of(&key);
                prop_assert_eq!(got.iter().collect::<Vec<_>>(), want.clone());
                prop_assert_eq!(got.len(), want.len());
                for o in 0..12 {
                    for r in 0..3 {
                        let res = resource(o, r);
                        prop_assert_eq!(got.contains(&res), want.contains(&res));
                        let from: Vec<ResourceKey> = want.iter().copied().filter(|w| *w >= res).collect();
                        prop_assert_eq!(got.iter_from(res).collect::<Vec<_>>(), from);
                    }
                }
            }
        }
        Ok(())
    }

    /// A popular subject's list, changed batch by batch over a base that compactions
    /// and rebases replace: what its overlay (or whole list) reads agrees with a set.
    fn popular_subject_agrees(graph: &GraphVersion, model: &BTreeSet<ResourceKey>) -> Result<(), TestCaseError> {
        let got = graph.resources_of(&subject(0, 0));
        let want: Vec<ResourceKey> = model.iter().copied().collect();
        prop_assert_eq!(got.iter().collect::<Vec<_>>(), want.clone());
        prop_assert_eq!(got.len(), want.len());
        prop_assert_eq!(graph.len(), want.len());
        for o in 0..40 {
            let res = resource(o, 0);
            prop_assert_eq!(got.contains(&res), model.contains(&res));
            prop_assert_eq!(got.iter_from(res).collect::<Vec<_>>(), model.range(res..).copied().collect::<Vec<_>>());
        }
        Ok(())
    }

    /// A list kept whole in the delta grows long enough for an overlay while a
    /// compaction runs off to the side: its overlay, made over the old base, does not
    /// name a resource the compaction folded in and a later change removed again. The
    /// rebase takes the overlay again over the new base.
    #[test]
    fn an_overlay_made_during_a_compaction_is_taken_again_over_the_new_base() {
        let claim = |o: u32, add: bool| {
            let (r, s) = (resource(o, 0), subject(0, 0));
            if add { GraphChange::Upsert(r, Edge { subject: s, caveat: 0, expires_at: NEVER }) } else { GraphChange::Remove(r, s) }
        };
        let mut graph = GraphVersion::build(Vec::new());
        graph.apply(&[claim(1, true)]);
        let from = graph.clone();
        graph.apply(&[claim(1, false)]);
        graph.apply(&[claim(2, true), claim(3, true), claim(4, true)]);
        assert!(matches!(graph.reverse_delta.get(&subject(0, 0)), Some(ReverseEntry::Overlay(_))));
        let mut side = from.clone();
        side.compact();
        let rebased = side.rebase(&from, &graph).expect("no write compacted meanwhile");
        let mut want: Vec<ResourceKey> = [2, 3, 4].map(|o| resource(o, 0)).to_vec();
        want.sort();
        assert_eq!(rebased.resources_of(&subject(0, 0)).iter().collect::<Vec<_>>(), want);
        assert_eq!(rebased.resources_of(&subject(0, 0)).len(), 3);
        assert!(!rebased.resources_of(&subject(0, 0)).contains(&resource(1, 0)));
    }

    /// One more resource for a subject that a long list names copies a few tree nodes,
    /// not the list, and the write counts it so.
    #[test]
    fn a_write_to_a_long_reverse_list_copies_only_its_change() {
        let tenant = subject(0, 0);
        let claims: Vec<StoredRelationship> = (0..10_000)
            .map(|o| StoredRelationship { resource: resource(o, 0), edge: Edge { subject: tenant, caveat: 0, expires_at: NEVER } })
            .collect();
        let mut graph = GraphVersion::build(claims);
        for o in 10_000..10_100u32 {
            let copies = graph.apply(&[GraphChange::Upsert(resource(o, 0), Edge { subject: tenant, caveat: 0, expires_at: NEVER })]);
            assert!(copies <= 2, "one claim copied {copies} relationships");
        }
        assert!(matches!(graph.reverse_delta.get(&tenant), Some(ReverseEntry::Overlay(_))));
        assert_eq!(graph.resources_of(&tenant).len(), 10_100);
    }

    proptest! {
        #[test]
        fn a_popular_subjects_list_agrees_with_a_plain_set(
            initial in prop::collection::btree_set(0..40u32, 0..30),
            batches in prop::collection::vec((prop::collection::btree_map(0..40u32, any::<bool>(), 0..8), 0..4u8), 0..16),
        ) {
            let claim = |o: u32| StoredRelationship { resource: resource(o, 0), edge: Edge { subject: subject(0, 0), caveat: 0, expires_at: NEVER } };
            let mut model: BTreeSet<ResourceKey> = initial.iter().map(|o| resource(*o, 0)).collect();
            let mut graph = GraphVersion::build(initial.iter().map(|o| claim(*o)).collect());
            popular_subject_agrees(&graph, &model)?;
            // Where a compaction off to the side started: several batches may land
            // before it is rebased onto.
            let mut started: Option<GraphVersion> = None;
            for (batch, then) in batches {
                let before = started.clone().unwrap_or_else(|| graph.clone());
                let changes: Vec<GraphChange> = batch
                    .iter()
                    .map(|(o, add)| {
                        let c = claim(*o);
                        if *add {
                            model.insert(c.resource);
                            GraphChange::Upsert(c.resource, c.edge)
                        } else {
                            model.remove(&c.resource);
                            GraphChange::Remove(c.resource, c.edge.subject)
                        }
                    })
                    .collect();
                graph.apply_to_delta(&sorted_changes(&changes));
                match then {
                    0 => {
                        graph.compact();
                        started = None;
                    }
                    1 => {
                        let mut side = before.clone();
                        side.compact();
                        if let Some(r) = side.rebase(&before, &graph) {
                            graph = r;
                        }
                        started = None;
                    }
                    2 if started.is_none() => started = Some(graph.clone()),
                    _ => {}
                }
                popular_subject_agrees(&graph, &model)?;
            }
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        (any::<bool>(), 0..12u32, 0..3u32, 0..12u32, 0..2u32, prop::bool::weighted(0.2))
    }

    proptest! {
        /// Built, changed batch by batch (into the delta, or merged into new bases), and
        /// folded into new bases at arbitrary points, the graph always reads as the plain
        /// set of relationships it should hold.
        #[test]
        fn writes_and_compactions_agree_with_a_plain_set(
            initial in prop::collection::vec(op(), 0..40),
            batches in prop::collection::vec((prop::collection::vec(op(), 0..12), any::<bool>(), any::<bool>(), any::<bool>()), 0..12),
        ) {
            let mut model = BTreeMap::new();
            let mut stored = Vec::new();
            for op in initial.into_iter().filter(|op| op.0) {
                if let GraphChange::Upsert(r, e) = change(op) {
                    // `build` keeps one of two equal relationships; the model keeps the first.
                    if let std::collections::btree_map::Entry::Vacant(v) = model.entry((r, e.subject)) {
                        v.insert(e);
                        stored.push(StoredRelationship { resource: r, edge: e });
                    }
                }
            }
            let mut graph = GraphVersion::build(stored);
            agrees(&graph, &model)?;
            for (batch, compact, raw, merge) in batches {
                // One change per relationship in a batch, the last one given (as writes
                // hand them over), or the batch as given (as imports do: the last wins).
                let changes: Vec<GraphChange> = if raw {
                    batch.into_iter().map(change).collect()
                } else {
                    let mut last = BTreeMap::new();
                    for op in batch {
                        let c = change(op);
                        last.insert(c.identity(), c);
                    }
                    last.into_values().collect()
                };
                let before = graph.clone();
                let before_model = model.clone();
                for c in &changes {
                    match c {
                        GraphChange::Upsert(r, e) => {
                            model.insert((*r, e.subject), *e);
                        }
                        GraphChange::Remove(r, s) => {
                            model.remove(&(*r, *s));
                        }
                    }
                }
                if merge {
                    // The path a batch large against the graph takes.
                    graph.merge(&sorted_changes(&changes));
                    prop_assert!(!graph.has_changes());
                } else {
                    graph.apply(&changes);
                }
                if compact {
                    graph.compact();
                } else if graph.has_changes() {
                    // Compacted off to the side while this batch was written, then rebased.
                    let mut side = before.clone();
                    side.compact();
                    let rebased = side.rebase(&before, &graph);
                    prop_assert!(rebased.is_some() || !Arc::ptr_eq(&before.forward, &graph.forward));
                    if let Some(r) = rebased {
                        agrees(&r, &model)?;
                        graph = r;
                    }
                }
                agrees(&graph, &model)?;
                // The revision it was made from is unchanged.
                agrees(&before, &before_model)?;
            }
        }
    }
}
