//! Explanations: for an allowed Check, one path of relationships from the resource to
//! the subject. The search only descends into sub-problems that Check says hold, so it
//! follows the answer rather than exploring the graph; a visit budget bounds it on
//! pathological data.

use arbiter_schema::{AllowedKind, ArrowKind, RelationId, RelationKind, Rewrite, TypeId};

use crate::check::Evaluator;
use crate::error::EngineError;
use crate::graph::{Edge, GraphVersion, RequestTime, ResourceKey, SubjectKey};
use crate::intern::{Interner, Sym, ELLIPSIS, WILDCARD};
use crate::schema_plan::SchemaPlan;

/// Stands for a resource id nobody wrote in a step; the caller puts the id back.
pub(crate) const UNSEEN_MARK: &str = "\u{0}unseen\u{0}";

/// How many sub-problems one explanation may visit.
const VISIT_BUDGET: usize = 10_000;

type Node = (TypeId, RelationId, Sym);

pub(crate) struct Explainer<'a> {
    pub graph: &'a GraphVersion,
    pub plan: &'a SchemaPlan,
    pub interner: &'a Interner,
    pub caveats: &'a crate::caveats::Caveats,
    pub context: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub target: SubjectKey,
    pub target_type: TypeId,
    pub now: &'a RequestTime,
    pub max_depth: u32,
    pub unseen: Sym,
}

struct Search {
    path: Vec<Node>,
    budget: usize,
}

impl Explainer<'_> {
    /// The steps of one path that grants `object#rel` to the target. The Check is known
    /// to be allowed; if no path is found within the budget, says so in one step.
    pub fn explain(
        &self,
        ty: TypeId,
        rel: RelationId,
        object: Sym,
    ) -> Result<Vec<String>, EngineError> {
        let mut search = Search {
            path: Vec::new(),
            budget: VISIT_BUDGET,
        };
        Ok(self
            .node(ty, rel, object, 0, &mut search)?
            .unwrap_or_else(|| {
                vec![
                    "allowed, but no single path was found within the explanation budget"
                        .to_string(),
                ]
            }))
    }

    fn holds(&self, ty: TypeId, rel: RelationId, object: Sym) -> Result<bool, EngineError> {
        let mut eval = Evaluator::new(
            self.graph,
            self.plan,
            self.interner,
            self.caveats,
            self.context,
            self.target,
            self.target_type,
            self.now,
            self.max_depth,
        );
        Ok(eval.check(ty, rel, object)?.is_yes())
    }

    fn name(&self, sym: Sym) -> String {
        if sym == self.unseen {
            UNSEEN_MARK.to_string()
        } else {
            self.interner.resolve(sym).to_string()
        }
    }

    fn describe(&self, key: &ResourceKey, edge: &Edge) -> String {
        let s = &edge.subject;
        let mut out = format!(
            "{}:{}#{}@{}:{}",
            self.interner.resolve(key.object_type),
            self.name(key.object_id),
            self.interner.resolve(key.relation),
            self.interner.resolve(s.object_type),
            self.name(s.object_id),
        );
        if s.relation != ELLIPSIS {
            out.push('#');
            out.push_str(&self.interner.resolve(s.relation));
        }
        out
    }

    fn node(
        &self,
        ty: TypeId,
        rel: RelationId,
        object: Sym,
        depth: u32,
        search: &mut Search,
    ) -> Result<Option<Vec<String>>, EngineError> {
        if depth > self.max_depth || search.budget == 0 {
            return Ok(None);
        }
        search.budget -= 1;
        let type_sym = self.plan.type_sym(ty);
        let rel_sym = self.plan.rel_sym(ty, rel);
        if type_sym == self.target.object_type
            && rel_sym == self.target.relation
            && object == self.target.object_id
        {
            return Ok(Some(Vec::new()));
        }
        let node = (ty, rel, object);
        if search.path.contains(&node) || !self.holds(ty, rel, object)? {
            return Ok(None);
        }
        let Some(relation) = self.plan.schema.relation(ty, rel) else {
            return Ok(None);
        };
        search.path.push(node);
        let key = ResourceKey {
            object_type: type_sym,
            relation: rel_sym,
            object_id: object,
        };
        let found = match &relation.kind {
            RelationKind::Direct(allowed) => self.direct(&key, allowed, depth, search),
            RelationKind::Permission(rw) => self.rewrite(rw, ty, object, depth, search),
        };
        search.path.pop();
        found
    }

    fn direct(
        &self,
        key: &ResourceKey,
        allowed: &[arbiter_schema::AllowedSubject],
        depth: u32,
        search: &mut Search,
    ) -> Result<Option<Vec<String>>, EngineError> {
        let edges = self.graph.edges(key);
        let wildcard = SubjectKey {
            object_type: self.target.object_type,
            relation: ELLIPSIS,
            object_id: WILDCARD,
        };
        for e in edges.iter().filter(|e| e.live(self.now)) {
            if e.subject == self.target
                || (self.target.relation == ELLIPSIS && e.subject == wildcard)
            {
                return Ok(Some(vec![self.describe(key, e)]));
            }
        }
        for a in allowed {
            let AllowedKind::SubjectSet(srel) = a.kind else {
                continue;
            };
            let st = self.plan.type_sym(a.type_id);
            let sr = self.plan.rel_sym(a.type_id, srel);
            for e in edges.iter().filter(|e| {
                e.live(self.now) && e.subject.object_type == st && e.subject.relation == sr
            }) {
                if let Some(mut rest) =
                    self.node(a.type_id, srel, e.subject.object_id, depth + 1, search)?
                {
                    rest.insert(0, self.describe(key, e));
                    return Ok(Some(rest));
                }
            }
        }
        Ok(None)
    }

    fn rewrite(
        &self,
        rw: &Rewrite,
        ty: TypeId,
        object: Sym,
        depth: u32,
        search: &mut Search,
    ) -> Result<Option<Vec<String>>, EngineError> {
        match rw {
            Rewrite::Nil => Ok(None),
            Rewrite::Computed(rel) => self.node(ty, *rel, object, depth, search),
            Rewrite::Union(items) => {
                for item in items {
                    if let Some(p) = self.rewrite(item, ty, object, depth, search)? {
                        return Ok(Some(p));
                    }
                }
                Ok(None)
            }
            Rewrite::Intersection(items) => {
                let mut all = Vec::new();
                for item in items {
                    match self.rewrite(item, ty, object, depth, search)? {
                        Some(p) => all.extend(p),
                        None => return Ok(None),
                    }
                }
                Ok(Some(all))
            }
            Rewrite::Exclusion(base, subtract) => {
                let Some(mut p) = self.rewrite(base, ty, object, depth, search)? else {
                    return Ok(None);
                };
                let type_name = self
                    .plan
                    .schema
                    .definition(ty)
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                p.push(format!(
                    "and not excluded by `{}` on {}:{}",
                    self.expression(subtract, ty),
                    type_name,
                    self.name(object)
                ));
                Ok(Some(p))
            }
            Rewrite::Arrow(arrow) => {
                let key = ResourceKey {
                    object_type: self.plan.type_sym(ty),
                    relation: self.plan.rel_sym(ty, arrow.tupleset),
                    object_id: object,
                };
                let all = arrow.kind == ArrowKind::All;
                let mut steps = Vec::new();
                for e in self.graph.edges(&key).iter().filter(|e| e.live(self.now)) {
                    let target = arrow
                        .targets
                        .iter()
                        .find(|(t, _)| self.plan.type_sym(*t) == e.subject.object_type);
                    let sub = match target {
                        Some((tt, trel)) => {
                            self.node(*tt, *trel, e.subject.object_id, depth + 1, search)?
                        }
                        None => None,
                    };
                    match (sub, all) {
                        (Some(mut rest), false) => {
                            rest.insert(0, self.describe(&key, e));
                            return Ok(Some(rest));
                        }
                        (Some(rest), true) => {
                            steps.push(self.describe(&key, e));
                            steps.extend(rest);
                        }
                        (None, true) => return Ok(None),
                        (None, false) => {}
                    }
                }
                Ok((all && !steps.is_empty()).then_some(steps))
            }
        }
    }

    /// A rewrite as schema text (for the exclusion step).
    fn expression(&self, rw: &Rewrite, ty: TypeId) -> String {
        let schema = &self.plan.schema;
        let rel_name = |t: TypeId, r: RelationId| {
            schema
                .relation(t, r)
                .map(|r| r.name.clone())
                .unwrap_or_default()
        };
        let join = |items: &[Rewrite], op: &str| {
            items
                .iter()
                .map(|i| self.expression(i, ty))
                .collect::<Vec<_>>()
                .join(op)
        };
        match rw {
            Rewrite::Nil => "nil".to_string(),
            Rewrite::Computed(r) => rel_name(ty, *r),
            Rewrite::Arrow(a) => {
                let computed = &a.computed;
                match a.kind {
                    ArrowKind::All => format!("{}.all({computed})", rel_name(ty, a.tupleset)),
                    ArrowKind::AnyFunction => {
                        format!("{}.any({computed})", rel_name(ty, a.tupleset))
                    }
                    ArrowKind::Any => format!("{}->{computed}", rel_name(ty, a.tupleset)),
                }
            }
            Rewrite::Union(items) => format!("({})", join(items, " + ")),
            Rewrite::Intersection(items) => format!("({})", join(items, " & ")),
            Rewrite::Exclusion(b, s) => {
                format!("({} - {})", self.expression(b, ty), self.expression(s, ty))
            }
        }
    }
}
