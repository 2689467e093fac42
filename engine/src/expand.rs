//! Expand: the userset tree of a resource's relation or permission at one revision, with
//! the rewrite structure visible. Computed usersets and arrows are expanded; the subject
//! sets written on a relation are leaves (expand them with another call), as in Zanzibar.
//! A caveated relationship shows its caveat: on its subject in a leaf, and on the child
//! an arrow reaches through it.

use arbiter_schema::{ArrowKind, ObjectRef, RelationId, RelationKind, Rewrite, SubjectRef, TypeId};
use chrono::{DateTime, TimeZone, Utc};
use rustc_hash::FxHashSet;

use crate::caveats::{Caveats, CaveatId, NO_CAVEAT};
use crate::error::EngineError;
use crate::graph::{GraphVersion, RequestTime, ResourceKey, NEVER};
use crate::intern::{Interner, Sym, ELLIPSIS};
use crate::schema_plan::SchemaPlan;

#[derive(Debug, Clone, PartialEq)]
pub struct ExpandTree {
    pub resource: ObjectRef,
    pub relation: String,
    pub node: ExpandNode,
    /// For a child of an arrow: the caveat of the relationship the arrow went through.
    pub caveat: Option<ExpandCaveat>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpandSubject {
    pub subject: SubjectRef,
    pub expires_at: Option<DateTime<Utc>>,
    pub caveat: Option<ExpandCaveat>,
}

/// A relationship's caveat as Expand shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandCaveat {
    pub name: String,
    /// The values the relationship gives; a request gives the rest.
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// The caveat's CEL expression as the schema writes it.
    pub expression: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpandNode {
    /// A relation: the subjects written on it.
    Leaf(Vec<ExpandSubject>),
    Union(Vec<ExpandTree>),
    Intersection(Vec<ExpandTree>),
    Exclusion {
        base: Box<ExpandTree>,
        subtract: Box<ExpandTree>,
    },
    /// `tupleset->computed` (`all` for `.all()`): one child per object `tupleset` names.
    Arrow {
        tupleset: String,
        computed: String,
        all: bool,
        children: Vec<ExpandTree>,
    },
    /// `nil`
    Nil,
    /// This userset is already being expanded further up the branch (cyclic data).
    Cycle,
}

pub(crate) struct Expander<'a> {
    pub graph: &'a GraphVersion,
    pub plan: &'a SchemaPlan,
    pub interner: &'a Interner,
    pub now: &'a RequestTime,
    pub caveats: &'a Caveats,
    pub max_depth: u32,
    path: FxHashSet<(TypeId, RelationId, Sym)>,
}

impl<'a> Expander<'a> {
    pub fn new(
        graph: &'a GraphVersion,
        plan: &'a SchemaPlan,
        interner: &'a Interner,
        now: &'a RequestTime,
        caveats: &'a Caveats,
        max_depth: u32,
    ) -> Self {
        Expander {
            graph,
            plan,
            interner,
            now,
            caveats,
            max_depth,
            path: FxHashSet::default(),
        }
    }

    fn object(&self, ty: TypeId, id: Sym) -> ObjectRef {
        ObjectRef {
            object_type: self
                .plan
                .schema
                .definition(ty)
                .map(|d| d.name.clone())
                .unwrap_or_default(),
            object_id: self.interner.resolve(id).to_string(),
        }
    }

    /// What an edge's caveat id names, with the caveat's expression.
    fn caveat(&self, id: CaveatId) -> Option<ExpandCaveat> {
        if id == NO_CAVEAT {
            return None;
        }
        let bound = self.caveats.get(id)?;
        let schema = &self.plan.schema;
        let expression =
            schema.caveat_id(&bound.name).and_then(|id| schema.caveat(id)).map(|c| c.expression.clone()).unwrap_or_default();
        Some(ExpandCaveat {
            name: bound.name.to_string(),
            context: bound.context.as_deref().cloned(),
            expression,
        })
    }

    fn relation_name(&self, ty: TypeId, rel: RelationId) -> String {
        self.plan
            .schema
            .relation(ty, rel)
            .map(|r| r.name.clone())
            .unwrap_or_default()
    }

    pub fn expand(
        &mut self,
        ty: TypeId,
        rel: RelationId,
        id: Sym,
        depth: u32,
    ) -> Result<ExpandTree, EngineError> {
        let resource = self.object(ty, id);
        let relation = self.relation_name(ty, rel);
        if depth > self.max_depth {
            return Err(EngineError::DepthExceeded {
                limit: self.max_depth,
                at: format!("{resource}#{relation}"),
            });
        }
        if !self.path.insert((ty, rel, id)) {
            return Ok(ExpandTree {
                resource,
                relation,
                node: ExpandNode::Cycle,
                caveat: None,
            });
        }
        let node = match self.plan.schema.relation(ty, rel).map(|r| &r.kind) {
            Some(RelationKind::Direct(_)) => Ok(self.leaf(ty, rel, id)),
            Some(RelationKind::Permission(rw)) => self.rewrite(rw, ty, rel, id, depth),
            None => Ok(ExpandNode::Nil),
        };
        self.path.remove(&(ty, rel, id));
        Ok(ExpandTree {
            resource,
            relation,
            node: node?,
            caveat: None,
        })
    }

    fn leaf(&self, ty: TypeId, rel: RelationId, id: Sym) -> ExpandNode {
        let key = ResourceKey {
            object_type: self.plan.type_sym(ty),
            relation: self.plan.rel_sym(ty, rel),
            object_id: id,
        };
        let subjects = self
            .graph
            .edges(&key)
            .iter()
            .filter(|e| e.live(self.now))
            .map(|e| ExpandSubject {
                subject: SubjectRef {
                    object: ObjectRef {
                        object_type: self.interner.resolve(e.subject.object_type).to_string(),
                        object_id: self.interner.resolve(e.subject.object_id).to_string(),
                    },
                    relation: (e.subject.relation != ELLIPSIS)
                        .then(|| self.interner.resolve(e.subject.relation).to_string()),
                },
                expires_at: (e.expires_at != NEVER)
                    .then(|| Utc.timestamp_micros(e.expires_at).single())
                    .flatten(),
                caveat: self.caveat(e.caveat),
            })
            .collect();
        ExpandNode::Leaf(subjects)
    }

    fn rewrite(
        &mut self,
        rw: &Rewrite,
        ty: TypeId,
        rel: RelationId,
        id: Sym,
        depth: u32,
    ) -> Result<ExpandNode, EngineError> {
        Ok(match rw {
            Rewrite::Nil => ExpandNode::Nil,
            Rewrite::Computed(r) => {
                // A permission that is exactly another relation: show it as a one-child union.
                ExpandNode::Union(vec![self.expand(ty, *r, id, depth)?])
            }
            Rewrite::Union(items) | Rewrite::Intersection(items) => {
                let mut children = Vec::with_capacity(items.len());
                for item in items {
                    children.push(self.child(item, ty, rel, id, depth)?);
                }
                if matches!(rw, Rewrite::Union(_)) {
                    ExpandNode::Union(children)
                } else {
                    ExpandNode::Intersection(children)
                }
            }
            Rewrite::Exclusion(a, b) => {
                let base = self.child(a, ty, rel, id, depth)?;
                let subtract = self.child(b, ty, rel, id, depth)?;
                ExpandNode::Exclusion {
                    base: Box::new(base),
                    subtract: Box::new(subtract),
                }
            }
            Rewrite::Arrow(arrow) => {
                let key = ResourceKey {
                    object_type: self.plan.type_sym(ty),
                    relation: self.plan.rel_sym(ty, arrow.tupleset),
                    object_id: id,
                };
                // One child per object; of several relationships naming it (through
                // different subject relations), an uncaveated one shows, else the first.
                let mut edges: Vec<(Sym, Sym, CaveatId)> = Vec::new();
                for e in self.graph.edges(&key) {
                    if !e.live(self.now) {
                        continue;
                    }
                    let object = (e.subject.object_type, e.subject.object_id);
                    match edges.iter_mut().find(|(t, i, _)| (*t, *i) == object) {
                        Some(seen) if e.caveat == NO_CAVEAT => seen.2 = NO_CAVEAT,
                        Some(_) => {}
                        None => edges.push((object.0, object.1, e.caveat)),
                    }
                }
                let mut children = Vec::new();
                for (object_type, object_id, caveat) in edges {
                    if let Some((tt, tr)) = arrow
                        .targets
                        .iter()
                        .find(|(t, _)| self.plan.type_sym(*t) == object_type)
                    {
                        let mut child = self.expand(*tt, *tr, object_id, depth + 1)?;
                        child.caveat = self.caveat(caveat);
                        children.push(child);
                    }
                }
                ExpandNode::Arrow {
                    tupleset: self.relation_name(ty, arrow.tupleset),
                    computed: arrow.computed.clone(),
                    all: arrow.kind == ArrowKind::All,
                    children,
                }
            }
        })
    }

    /// An operand of a set operation: a computed userset expands to its own tree; nested
    /// operators stay labelled with the permission they belong to.
    fn child(
        &mut self,
        rw: &Rewrite,
        ty: TypeId,
        rel: RelationId,
        id: Sym,
        depth: u32,
    ) -> Result<ExpandTree, EngineError> {
        match rw {
            Rewrite::Computed(r) => self.expand(ty, *r, id, depth),
            other => {
                let node = self.rewrite(other, ty, rel, id, depth)?;
                Ok(ExpandTree {
                    resource: self.object(ty, id),
                    relation: self.relation_name(ty, rel),
                    node,
                    caveat: None,
                })
            }
        }
    }
}
