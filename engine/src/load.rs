//! The bulk paths: rebuilding the graph from a store at start, and validating large
//! imports. Both see millions of relationships with only a handful of distinct shapes
//! (`doc#viewer@user`, `doc#viewer@group#member`, ...), so the schema is consulted once
//! per shape and each relationship then costs two id checks and two interner lookups.

use std::sync::Arc;

use arbiter_schema::{compile, object_id_problem, WILDCARD_ID};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::graph::{Edge, GraphVersion, ObjectKey, ResourceKey, StoredRelationship, SubjectKey, NEVER};
use crate::intern::{Sym, WILDCARD};
use crate::policy::{CompiledPolicies, ObjectAttributes};
use crate::schema_plan::SchemaPlan;
use crate::store::{LoadSink, RelationshipRef, StoreError, StoredHeader};

/// What makes two relationships validate alike: everything but the two ids.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    resource_type: String,
    relation: String,
    subject_type: String,
    subject_relation: Option<String>,
    wildcard: bool,
    expiring: bool,
}

impl Shape {
    fn matches(&self, r: &RelationshipRef<'_>) -> bool {
        self.relation == r.relation
            && self.resource_type == r.resource_type
            && self.subject_type == r.subject_type
            && self.subject_relation.as_deref() == r.subject_relation
            && self.wildcard == (r.subject_id == WILDCARD_ID)
            && self.expiring == r.expires_at.is_some()
    }
}

/// The interned symbols of a shape that the schema accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShapeSyms {
    object_type: Sym,
    relation: Sym,
    subject_type: Sym,
    subject_relation: Sym,
    /// The relationship's caveat: a caveated relationship is validated whole, its
    /// context with it, and never stands for a shape.
    caveat: crate::caveats::CaveatId,
}

/// Shapes the schema has accepted, most recently used first to look at.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    accepted: Vec<(Shape, ShapeSyms)>,
    last: usize,
    /// The last resource and subject ids interned: a store is read in key order, so
    /// an object's relationships come one after another, and so do runs of one subject.
    last_resource: Option<(String, Sym)>,
    last_subject: Option<(String, Sym)>,
}

/// The symbol of `id`, from `last` when it is the same id again.
fn intern_cached(interner: &crate::intern::Interner, last: &mut Option<(String, Sym)>, id: &str) -> Sym {
    if let Some((s, sym)) = last {
        if s == id {
            return *sym;
        }
    }
    let sym = interner.intern(id);
    match last {
        Some((s, slot)) => {
            s.clear();
            s.push_str(id);
            *slot = sym;
        }
        None => *last = Some((id.to_string(), sym)),
    }
    sym
}

impl Shapes {
    /// Validates `r` against `plan` (as a write would) and interns it.
    pub(crate) fn validate(
        &mut self,
        engine: &Engine,
        plan: &SchemaPlan,
        r: RelationshipRef<'_>,
    ) -> Result<StoredRelationship, EngineError> {
        let syms = self.accept(engine, plan, r)?;
        Ok(self.stored(engine.interner(), syms, r))
    }

    /// Validates `r` against `plan` (as a write would) without interning its ids: the
    /// symbols of its shape, for [`Shapes::stored`].
    pub(crate) fn accept(
        &mut self,
        engine: &Engine,
        plan: &SchemaPlan,
        r: RelationshipRef<'_>,
    ) -> Result<ShapeSyms, EngineError> {
        let found = match self.accepted.get(self.last) {
            Some((shape, syms)) if shape.matches(&r) => Some(*syms),
            _ => self.accepted.iter().position(|(shape, _)| shape.matches(&r)).and_then(|i| {
                self.last = i;
                self.accepted.get(i).map(|(_, syms)| *syms)
            }),
        };
        let wildcard = r.subject_id == WILDCARD_ID;
        if r.caveat.is_some() {
            let (key, edge) = engine.validate_ref(plan, r)?;
            return Ok(ShapeSyms {
                object_type: key.object_type,
                relation: key.relation,
                subject_type: edge.subject.object_type,
                subject_relation: edge.subject.relation,
                caveat: edge.caveat,
            });
        }
        let Some(syms) = found else {
            // A new shape: the full validation, with its precise error.
            let (key, edge) = engine.validate_ref(plan, r)?;
            let syms = ShapeSyms {
                object_type: key.object_type,
                relation: key.relation,
                subject_type: edge.subject.object_type,
                subject_relation: edge.subject.relation,
                caveat: crate::caveats::NO_CAVEAT,
            };
            self.accepted.push((
                Shape {
                    resource_type: r.resource_type.to_string(),
                    relation: r.relation.to_string(),
                    subject_type: r.subject_type.to_string(),
                    subject_relation: r.subject_relation.map(str::to_string),
                    wildcard,
                    expiring: r.expires_at.is_some(),
                },
                syms,
            ));
            self.last = self.accepted.len() - 1;
            return Ok(syms);
        };
        if object_id_problem(r.resource_id).is_some() || (!wildcard && object_id_problem(r.subject_id).is_some()) {
            // Bad ids: let the full validation word the error.
            engine.validate_ref(plan, r)?;
        }
        Ok(syms)
    }

    /// A relationship [`Shapes::accept`] took, with its ids interned. Cannot fail: what
    /// could be wrong with it was checked there.
    pub(crate) fn stored(&mut self, interner: &crate::intern::Interner, syms: ShapeSyms, r: RelationshipRef<'_>) -> StoredRelationship {
        StoredRelationship {
            resource: ResourceKey {
                object_type: syms.object_type,
                relation: syms.relation,
                object_id: intern_cached(interner, &mut self.last_resource, r.resource_id),
            },
            edge: Edge {
                subject: SubjectKey {
                    object_type: syms.subject_type,
                    relation: syms.subject_relation,
                    object_id: if r.subject_id == WILDCARD_ID {
                        WILDCARD
                    } else {
                        intern_cached(interner, &mut self.last_subject, r.subject_id)
                    },
                },
                caveat: syms.caveat,
                expires_at: r.expires_at.unwrap_or(NEVER),
            },
        }
    }
}

/// Receives a store's state at start and builds the first graph revision from it.
pub(crate) struct GraphLoader<'e> {
    engine: &'e Engine,
    revision: u64,
    plan: Option<Arc<SchemaPlan>>,
    policies: Option<Arc<CompiledPolicies>>,
    shapes: Shapes,
    relationships: Vec<StoredRelationship>,
    attributes: Vec<(ObjectKey, Arc<ObjectAttributes>)>,
    /// The first invalid relationship, reported after the scan with its engine error.
    error: Option<EngineError>,
}

impl<'e> GraphLoader<'e> {
    pub(crate) fn new(engine: &'e Engine) -> Self {
        GraphLoader {
            engine,
            revision: 0,
            plan: None,
            policies: None,
            shapes: Shapes::default(),
            relationships: Vec::new(),
            attributes: Vec::new(),
            error: None,
        }
    }

    /// The loaded graph, or why the stored state cannot be served.
    pub(crate) fn finish(self) -> Result<GraphVersion, EngineError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut graph = GraphVersion::build(self.relationships);
        graph.revision = self.revision;
        graph.set_plan(self.plan);
        graph.policies = self.policies;
        for (key, attrs) in self.attributes {
            graph.set_attributes(key, Some(attrs));
        }
        Ok(graph)
    }
}

impl LoadSink for GraphLoader<'_> {
    fn header(&mut self, header: StoredHeader) -> Result<(), StoreError> {
        self.revision = header.revision;
        if let Some(text) = header.schema {
            match compile(&text) {
                Ok(compiled) => {
                    self.plan = Some(Arc::new(SchemaPlan::new(compiled, text, self.engine.interner())));
                }
                Err(e) => {
                    self.error = Some(EngineError::InvalidSchema(e));
                    return Err(StoreError("the stored schema does not compile".into()));
                }
            }
        }
        if let Some(json) = header.policy_model {
            match crate::engine::compile_model(self.plan.as_deref(), &json) {
                Ok(policies) => self.policies = policies.map(Arc::new),
                Err(e) => {
                    let message = format!("the stored policies cannot be served: {e}");
                    self.error = Some(e);
                    return Err(StoreError(message));
                }
            }
        }
        Ok(())
    }

    fn relationship(&mut self, r: RelationshipRef<'_>) -> Result<(), StoreError> {
        let Some(plan) = self.plan.clone() else {
            self.error = Some(EngineError::NoSchema);
            return Err(StoreError("relationships are stored without a schema".into()));
        };
        match self.shapes.validate(self.engine, &plan, r) {
            Ok(stored) => {
                self.relationships.push(stored);
                Ok(())
            }
            Err(e) => {
                let message = format!("stored relationship `{}` is invalid: {e}", r.to_relationship());
                self.error = Some(e);
                Err(StoreError(message))
            }
        }
    }

    fn attributes(&mut self, object_type: &str, object_id: &str, json: &str) -> Result<(), StoreError> {
        match ObjectAttributes::decode(json) {
            Ok(attrs) => {
                let interner = self.engine.interner();
                let key = ObjectKey { object_type: interner.intern(object_type), object_id: interner.intern(object_id) };
                self.attributes.push((key, Arc::new(attrs)));
                Ok(())
            }
            Err(e) => {
                let message = format!("`{object_type}:{object_id}`: {e}");
                self.error = Some(EngineError::Store(message.clone()));
                Err(StoreError(message))
            }
        }
    }
}
