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
        ObjectKey { object_type: self.object_type, object_id: self.object_id }
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
    forward: PMap<ObjectKey, Arc<ObjectEdges>>,
    reverse: PMap<SubjectKey, Arc<[ResourceKey]>>,
    relationships: usize,
}

impl GraphVersion {
    pub fn empty() -> Self {
        GraphVersion {
            revision: 0,
            plan: None,
            forward: PMap::default(),
            reverse: PMap::default(),
            relationships: 0,
        }
    }

    /// Number of relationships stored (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.relationships
    }

    pub fn is_empty(&self) -> bool {
        self.relationships == 0
    }

    /// The edges of `resource#relation`, sorted by subject.
    #[inline]
    pub fn edges(&self, key: &ResourceKey) -> &[Edge] {
        self.object(&key.object()).map(|o| o.relation(key.relation)).unwrap_or(&[])
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

    /// Inserts or replaces one relationship; returns whether it was new.
    pub fn upsert(&mut self, resource: ResourceKey, edge: Edge) -> bool {
        let okey = resource.object();
        let mut object = self.forward.get(&okey).map(|o| (**o).clone()).unwrap_or_default();
        let inserted = match object.position(resource.relation) {
            Err(at) => {
                object.relations.insert(at, (resource.relation, Arc::from(vec![edge])));
                true
            }
            Ok(at) => {
                let Some((_, list)) = object.relations.get_mut(at) else { return false };
                match list.binary_search_by(|e| e.subject.cmp(&edge.subject)) {
                    Ok(i) => {
                        let mut v = list.to_vec();
                        if let Some(slot) = v.get_mut(i) {
                            *slot = edge;
                        }
                        *list = Arc::from(v);
                        false
                    }
                    Err(i) => {
                        let mut v = Vec::with_capacity(list.len() + 1);
                        v.extend_from_slice(list.get(..i).unwrap_or(&[]));
                        v.push(edge);
                        v.extend_from_slice(list.get(i..).unwrap_or(&[]));
                        *list = Arc::from(v);
                        true
                    }
                }
            }
        };
        self.forward.insert(okey, Arc::new(object));
        if inserted {
            self.relationships += 1;
            let rev = self.reverse.get(&edge.subject).cloned();
            let mut v: Vec<ResourceKey> = rev.map(|r| r.to_vec()).unwrap_or_default();
            if let Err(i) = v.binary_search(&resource) {
                v.insert(i, resource);
            }
            self.reverse.insert(edge.subject, Arc::from(v));
        }
        inserted
    }

    /// Removes one relationship; returns whether it existed.
    pub fn remove(&mut self, resource: &ResourceKey, subject: &SubjectKey) -> bool {
        let okey = resource.object();
        let Some(mut object) = self.forward.get(&okey).map(|o| (**o).clone()) else {
            return false;
        };
        let Ok(at) = object.position(resource.relation) else {
            return false;
        };
        let Some((_, list)) = object.relations.get_mut(at) else { return false };
        let Ok(i) = list.binary_search_by(|e| e.subject.cmp(subject)) else {
            return false;
        };
        if list.len() == 1 {
            object.relations.remove(at);
        } else {
            let mut v = list.to_vec();
            v.remove(i);
            *list = Arc::from(v);
        }
        if object.relations.is_empty() {
            self.forward.remove(&okey);
        } else {
            self.forward.insert(okey, Arc::new(object));
        }
        self.relationships -= 1;
        if let Some(rev) = self.reverse.get(subject).cloned() {
            let mut v = rev.to_vec();
            if let Ok(j) = v.binary_search(resource) {
                v.remove(j);
            }
            if v.is_empty() {
                self.reverse.remove(subject);
            } else {
                self.reverse.insert(*subject, Arc::from(v));
            }
        }
        true
    }
}

impl SubjectKey {
    pub fn is_object(&self) -> bool {
        self.relation == ELLIPSIS
    }
}
