//! One revision of the relationship graph: immutable once published, cheap to clone
//! (persistent hash maps share structure), so a write builds the next revision beside
//! the current one and readers never wait.
//!
//! Layout: a forward index `(resource type, resource id) -> per relation, sorted edges`
//! for Check (one lookup serves every relation of an object a rewrite touches), and a reverse index `(subject type, subject id, subject relation) ->
//! resources` for Lookup and reads by subject. Everything is interned symbols.

use std::sync::Arc;

use rustc_hash::FxBuildHasher;

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

/// Everything written on one object: for each relation (sorted by symbol; an object has
/// few), its edges sorted by subject. Edge lists are shared between revisions.
#[derive(Debug, Clone, Default)]
pub struct ObjectEdges {
    relations: Vec<(Sym, Arc<[Edge]>)>,
}

impl ObjectEdges {
    /// The edges of one relation of this object.
    #[inline]
    pub fn relation(&self, relation: Sym) -> &[Edge] {
        for (r, edges) in &self.relations {
            if *r == relation {
                return edges;
            }
        }
        &[]
    }

    fn position(&self, relation: Sym) -> Result<usize, usize> {
        self.relations.binary_search_by(|(r, _)| r.cmp(&relation))
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

/// One relationship's far end plus its expiration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub subject: SubjectKey,
    pub expires_at: Micros,
}

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
    forward: PMap<ObjectKey, Arc<ObjectEdges>>,
    reverse: PMap<SubjectKey, Arc<[ResourceKey]>>,
    relationships: usize,
    /// How many stored relationships carry an expiration (the sweep skips when none).
    expiring: usize,
    /// Attribute values and security labels, per object (the keyed attribute store).
    attributes: PMap<ObjectKey, Arc<crate::policy::ObjectAttributes>>,
}

impl GraphVersion {
    pub fn empty() -> Self {
        GraphVersion {
            revision: 0,
            plan: None,
            policies: None,
            forward: PMap::default(),
            reverse: PMap::default(),
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
    /// once), built in one pass over them sorted: each object's edge lists and each
    /// subject's reverse list are allocated once, at their final size.
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
        let mut reverse: Vec<(SubjectKey, ResourceKey)> =
            relationships.iter().map(|r| (r.edge.subject, r.resource)).collect();
        let mut forward = Vec::new();
        for object_run in relationships.chunk_by(|a, b| a.resource.object() == b.resource.object()) {
            let Some(first) = object_run.first() else { continue };
            let relations = object_run
                .chunk_by(|a, b| a.resource.relation == b.resource.relation)
                .filter_map(|run| {
                    let relation = run.first()?.resource.relation;
                    Some((relation, run.iter().map(|r| r.edge).collect::<Arc<[Edge]>>()))
                })
                .collect();
            forward.push((first.resource.object(), Arc::new(ObjectEdges { relations })));
        }
        drop(relationships);
        graph.forward = forward.into_iter().collect();
        reverse.sort_unstable();
        graph.reverse = reverse
            .chunk_by(|a, b| a.0 == b.0)
            .filter_map(|run| Some((run.first()?.0, run.iter().map(|(_, r)| *r).collect::<Arc<[ResourceKey]>>())))
            .collect();
        graph
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
    pub fn object(&self, key: &ObjectKey) -> Option<&ObjectEdges> {
        self.forward.get(key).map(|o| &**o)
    }

    /// The resources that name `subject` directly.
    pub fn resources_of(&self, subject: &SubjectKey) -> &[ResourceKey] {
        self.reverse.get(subject).map(|e| &e[..]).unwrap_or(&[])
    }

    /// The stored edge for exactly this relationship, if any (expired or not).
    pub fn find(&self, resource: &ResourceKey, subject: &SubjectKey) -> Option<Edge> {
        let edges = self.edges(resource);
        edges
            .binary_search_by(|e| e.subject.cmp(subject))
            .ok()
            .and_then(|i| edges.get(i).copied())
    }

    /// Every stored relationship, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = StoredRelationship> + '_ {
        self.forward.iter().flat_map(|(object, edges)| {
            edges.relations.iter().flat_map(move |(relation, list)| {
                list.iter().map(move |edge| StoredRelationship {
                    resource: ResourceKey {
                        object_type: object.object_type,
                        relation: *relation,
                        object_id: object.object_id,
                    },
                    edge: *edge,
                })
            })
        })
    }

    /// Applies many changes to distinct relationships at once: every edge list and
    /// reverse list they touch is rebuilt once, however many changes land in it (one
    /// change at a time would copy a popular subject's list once per change).
    /// Every relationship stored on one object.
    pub fn object_relationships(
        &self,
        object: &ObjectKey,
    ) -> impl Iterator<Item = StoredRelationship> + '_ {
        let object = *object;
        self.forward
            .get(&object)
            .into_iter()
            .flat_map(move |edges| {
                edges.relations.iter().flat_map(move |(relation, list)| {
                    list.iter().map(move |edge| StoredRelationship {
                        resource: ResourceKey {
                            object_type: object.object_type,
                            relation: *relation,
                            object_id: object.object_id,
                        },
                        edge: *edge,
                    })
                })
            })
    }

    pub fn apply(&mut self, changes: &[GraphChange]) {
        use std::collections::BTreeMap;
        // Forward: per object, per relation, the upserts and removals.
        type PerRelation = BTreeMap<Sym, (Vec<Edge>, Vec<SubjectKey>)>;
        let mut forward: BTreeMap<ObjectKey, PerRelation> = BTreeMap::new();
        for c in changes {
            let resource = match c {
                GraphChange::Upsert(r, _) | GraphChange::Remove(r, _) => r,
            };
            let entry = forward
                .entry(resource.object())
                .or_default()
                .entry(resource.relation)
                .or_default();
            match c {
                GraphChange::Upsert(_, e) => entry.0.push(*e),
                GraphChange::Remove(_, s) => entry.1.push(*s),
            }
        }
        let mut added: Vec<(SubjectKey, ResourceKey)> = Vec::new();
        let mut removed: Vec<(SubjectKey, ResourceKey)> = Vec::new();
        for (okey, relations) in forward {
            let mut object = self
                .forward
                .get(&okey)
                .map(|o| (**o).clone())
                .unwrap_or_default();
            for (relation, (mut upserts, removals)) in relations {
                let resource = ResourceKey {
                    object_type: okey.object_type,
                    relation,
                    object_id: okey.object_id,
                };
                let old: &[Edge] = match object.position(relation) {
                    Ok(at) => object.relations.get(at).map(|(_, l)| &l[..]).unwrap_or(&[]),
                    Err(_) => &[],
                };
                // The same subject twice (an import may repeat itself): the last one wins.
                upserts.reverse();
                upserts.sort_by_key(|e| e.subject);
                upserts.dedup_by(|a, b| a.subject == b.subject);
                let mut gone = removals;
                gone.sort();
                // Merge the old list with the upserts, leaving out the removals.
                let mut merged = Vec::with_capacity(old.len() + upserts.len());
                let (mut i, mut j) = (0, 0);
                while i < old.len() || j < upserts.len() {
                    let take_old = match (old.get(i), upserts.get(j)) {
                        (Some(o), Some(u)) => o.subject < u.subject,
                        (Some(_), None) => true,
                        _ => false,
                    };
                    if take_old {
                        if let Some(o) = old.get(i) {
                            if gone.binary_search(&o.subject).is_ok() {
                                removed.push((o.subject, resource));
                                self.relationships -= 1;
                                self.expiring -= usize::from(o.expires_at != NEVER);
                            } else {
                                merged.push(*o);
                            }
                        }
                        i += 1;
                    } else if let Some(u) = upserts.get(j) {
                        if let Some(o) = old.get(i).filter(|o| o.subject == u.subject) {
                            self.expiring -= usize::from(o.expires_at != NEVER);
                            i += 1; // replaced
                        } else {
                            added.push((u.subject, resource));
                            self.relationships += 1;
                        }
                        self.expiring += usize::from(u.expires_at != NEVER);
                        merged.push(*u);
                        j += 1;
                    }
                }
                match (object.position(relation), merged.is_empty()) {
                    (Ok(at), true) => {
                        object.relations.remove(at);
                    }
                    (Ok(at), false) => {
                        if let Some(slot) = object.relations.get_mut(at) {
                            slot.1 = Arc::from(merged);
                        }
                    }
                    (Err(at), false) => object.relations.insert(at, (relation, Arc::from(merged))),
                    (Err(_), true) => {}
                }
            }
            if object.relations.is_empty() {
                self.forward.remove(&okey);
            } else {
                self.forward.insert(okey, Arc::new(object));
            }
        }
        // Reverse: per subject, once.
        let mut reverse: BTreeMap<SubjectKey, (Vec<ResourceKey>, Vec<ResourceKey>)> =
            BTreeMap::new();
        for (s, r) in added {
            reverse.entry(s).or_default().0.push(r);
        }
        for (s, r) in removed {
            reverse.entry(s).or_default().1.push(r);
        }
        for (subject, (adds, removes)) in reverse {
            let mut list: Vec<ResourceKey> = self
                .reverse
                .get(&subject)
                .map(|l| l.to_vec())
                .unwrap_or_default();
            if !removes.is_empty() {
                let mut removes = removes;
                removes.sort();
                list.retain(|r| removes.binary_search(r).is_err());
            }
            list.extend(adds);
            list.sort_unstable();
            list.dedup();
            if list.is_empty() {
                self.reverse.remove(&subject);
            } else {
                self.reverse.insert(subject, Arc::from(list));
            }
        }
    }
}

impl SubjectKey {
    pub fn is_object(&self) -> bool {
        self.relation == ELLIPSIS
    }
}
