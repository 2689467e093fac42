//! Check evaluation at one revision: one function per rewrite kind, recursion with an
//! explicit depth, a per-request memo, and cycle handling.
//!
//! Cycles: a sub-problem that is already on the stack answers "not a member" for that
//! path (the least fixpoint). Results that leaned on such an assumption about a frame
//! further down the stack are not memoised, because that frame's final answer may
//! differ; once the frame that closes the cycle finishes, its answer is exact (for
//! monotone rewrites one pass suffices: f(false) is either false, a fixpoint, or true,
//! and then f(true) is true).

use arbiter_schema::{AllowedKind, ArrowKind, RelationId, RelationKind, Rewrite, TypeId};
use rustc_hash::FxHashMap;

use crate::error::EngineError;
use crate::graph::{GraphVersion, Micros, ResourceKey, SubjectKey};
use crate::intern::{Interner, Sym, ELLIPSIS, WILDCARD};
use crate::schema_plan::SchemaPlan;

/// No in-progress frame was leaned on.
const NO_CYCLE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memo {
    InProgress(u32),
    Done(bool),
}

/// A member answer plus the shallowest in-progress frame it depended on.
#[derive(Debug, Clone, Copy)]
struct Answer {
    member: bool,
    cycle_low: u32,
}

impl Answer {
    const YES: Answer = Answer { member: true, cycle_low: NO_CYCLE };
    const NO: Answer = Answer { member: false, cycle_low: NO_CYCLE };
}

pub(crate) struct Evaluator<'a> {
    pub graph: &'a GraphVersion,
    pub plan: &'a SchemaPlan,
    pub interner: &'a Interner,
    pub target: SubjectKey,
    /// The target subject's type in this schema.
    pub target_type: TypeId,
    pub now: Micros,
    pub max_depth: u32,
    memo: FxHashMap<(TypeId, RelationId, Sym), Memo>,
}

impl<'a> Evaluator<'a> {
    pub fn new(
        graph: &'a GraphVersion,
        plan: &'a SchemaPlan,
        interner: &'a Interner,
        target: SubjectKey,
        target_type: TypeId,
        now: Micros,
        max_depth: u32,
    ) -> Self {
        Evaluator {
            graph,
            plan,
            interner,
            target,
            target_type,
            now,
            max_depth,
            memo: FxHashMap::default(),
        }
    }

    /// Is the target a member of `object#relation` (object of type `ty`)?
    pub fn check(&mut self, ty: TypeId, rel: RelationId, object: Sym) -> Result<bool, EngineError> {
        self.check_relation(ty, rel, object, 0).map(|a| a.member)
    }

    fn depth_error(&self, ty: TypeId, rel: RelationId, object: Sym) -> EngineError {
        let schema = &self.plan.schema;
        let type_name = schema.definition(ty).map(|d| d.name.as_str()).unwrap_or("?");
        let rel_name = schema.relation(ty, rel).map(|r| r.name.as_str()).unwrap_or("?");
        EngineError::DepthExceeded {
            limit: self.max_depth,
            at: format!("{type_name}:{}#{rel_name}", self.interner.resolve(object)),
        }
    }

    fn check_relation(&mut self, ty: TypeId, rel: RelationId, object: Sym, depth: u32) -> Result<Answer, EngineError> {
        if depth > self.max_depth {
            return Err(self.depth_error(ty, rel, object));
        }
        let type_sym = self.plan.type_sym(ty);
        let rel_sym = self.plan.rel_sym(ty, rel);
        // The subject set itself is a member of itself (`group:x#member` in
        // `group:x#member`), which is what makes subject-set checks work.
        if type_sym == self.target.object_type && rel_sym == self.target.relation && object == self.target.object_id {
            return Ok(Answer::YES);
        }
        let Some(relation) = self.plan.schema.relation(ty, rel) else {
            return Ok(Answer::NO);
        };
        let key = ResourceKey { object_type: type_sym, relation: rel_sym, object_id: object };
        if let RelationKind::Direct(allowed) = &relation.kind {
            // The cheap part first, with no memo: the subject itself or a wildcard.
            if self.direct_hit(&key, allowed) {
                return Ok(Answer::YES);
            }
            if !allowed.iter().any(|a| matches!(a.kind, AllowedKind::SubjectSet(_))) {
                return Ok(Answer::NO);
            }
        }
        let memo_key = (ty, rel, object);
        match self.memo.get(&memo_key) {
            Some(Memo::Done(b)) => return Ok(Answer { member: *b, cycle_low: NO_CYCLE }),
            Some(Memo::InProgress(d)) => return Ok(Answer { member: false, cycle_low: *d }),
            None => {}
        }
        self.memo.insert(memo_key, Memo::InProgress(depth));
        let result = match &relation.kind {
            RelationKind::Direct(allowed) => self.subject_sets(&key, allowed, depth),
            RelationKind::Permission(rw) => self.rewrite(rw, ty, object, depth),
        };
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                self.memo.remove(&memo_key);
                return Err(e);
            }
        };
        if answer.cycle_low >= depth {
            self.memo.insert(memo_key, Memo::Done(answer.member));
            Ok(Answer { member: answer.member, cycle_low: NO_CYCLE })
        } else {
            self.memo.remove(&memo_key);
            Ok(answer)
        }
    }

    /// The target itself, or a wildcard of its type, written directly on `key`.
    #[inline]
    fn direct_hit(&self, key: &ResourceKey, allowed: &[arbiter_schema::AllowedSubject]) -> bool {
        let edges = self.graph.edges(key);
        if edges.is_empty() {
            return false;
        }
        let find = |s: &SubjectKey| {
            edges
                .binary_search_by(|e| e.subject.cmp(s))
                .ok()
                .and_then(|i| edges.get(i))
                .is_some_and(|e| e.live_at(self.now))
        };
        if find(&self.target) {
            return true;
        }
        if self.target.relation == ELLIPSIS
            && allowed
                .iter()
                .any(|a| a.type_id == self.target_type && a.kind == AllowedKind::Wildcard)
        {
            let wildcard = SubjectKey { object_type: self.target.object_type, relation: ELLIPSIS, object_id: WILDCARD };
            if find(&wildcard) {
                return true;
            }
        }
        false
    }

    /// Recurses into the subject sets (`group:x#member`) written on `key`.
    fn subject_sets(
        &mut self,
        key: &ResourceKey,
        allowed: &[arbiter_schema::AllowedSubject],
        depth: u32,
    ) -> Result<Answer, EngineError> {
        let graph = self.graph;
        let edges = graph.edges(key);
        let mut cycle_low = NO_CYCLE;
        for a in allowed {
            let AllowedKind::SubjectSet(srel) = a.kind else { continue };
            let st_sym = self.plan.type_sym(a.type_id);
            let srel_sym = self.plan.rel_sym(a.type_id, srel);
            let lo = SubjectKey { object_type: st_sym, relation: srel_sym, object_id: 0 };
            let start = edges.partition_point(|e| e.subject < lo);
            for e in edges.get(start..).unwrap_or(&[]) {
                if e.subject.object_type != st_sym || e.subject.relation != srel_sym {
                    break;
                }
                if !e.live_at(self.now) {
                    continue;
                }
                let ans = self.check_relation(a.type_id, srel, e.subject.object_id, depth + 1)?;
                if ans.member {
                    return Ok(Answer::YES);
                }
                cycle_low = cycle_low.min(ans.cycle_low);
            }
        }
        Ok(Answer { member: false, cycle_low })
    }

    fn rewrite(&mut self, rw: &Rewrite, ty: TypeId, object: Sym, depth: u32) -> Result<Answer, EngineError> {
        match rw {
            Rewrite::Nil => Ok(Answer::NO),
            // Same object: no hop, so no depth; the memo breaks schema-level loops.
            Rewrite::Computed(rel) => self.check_relation(ty, *rel, object, depth),
            Rewrite::Arrow(arrow) => self.arrow(arrow, ty, object, depth),
            Rewrite::Union(items) => {
                let mut cycle_low = NO_CYCLE;
                for item in items {
                    let a = self.rewrite(item, ty, object, depth)?;
                    if a.member {
                        return Ok(Answer::YES);
                    }
                    cycle_low = cycle_low.min(a.cycle_low);
                }
                Ok(Answer { member: false, cycle_low })
            }
            Rewrite::Intersection(items) => {
                let mut cycle_low = NO_CYCLE;
                for item in items {
                    let a = self.rewrite(item, ty, object, depth)?;
                    cycle_low = cycle_low.min(a.cycle_low);
                    if !a.member {
                        return Ok(Answer { member: false, cycle_low });
                    }
                }
                Ok(Answer { member: true, cycle_low })
            }
            Rewrite::Exclusion(base, subtract) => {
                let b = self.rewrite(base, ty, object, depth)?;
                if !b.member {
                    return Ok(b);
                }
                let s = self.rewrite(subtract, ty, object, depth)?;
                Ok(Answer { member: !s.member, cycle_low: b.cycle_low.min(s.cycle_low) })
            }
        }
    }

    fn arrow(&mut self, arrow: &arbiter_schema::Arrow, ty: TypeId, object: Sym, depth: u32) -> Result<Answer, EngineError> {
        let key = ResourceKey {
            object_type: self.plan.type_sym(ty),
            relation: self.plan.rel_sym(ty, arrow.tupleset),
            object_id: object,
        };
        let graph = self.graph;
        let edges = graph.edges(&key);
        let all = arrow.kind == ArrowKind::All;
        let mut cycle_low = NO_CYCLE;
        let mut seen_any = false;
        for e in edges {
            if !e.live_at(self.now) {
                continue;
            }
            seen_any = true;
            let target = arrow
                .targets
                .iter()
                .find(|(t, _)| self.plan.type_sym(*t) == e.subject.object_type);
            let ans = match target {
                Some((tt, trel)) => self.check_relation(*tt, *trel, e.subject.object_id, depth + 1)?,
                None => Answer::NO,
            };
            cycle_low = cycle_low.min(ans.cycle_low);
            if all && !ans.member {
                return Ok(Answer { member: false, cycle_low });
            }
            if !all && ans.member {
                return Ok(Answer::YES);
            }
        }
        Ok(Answer { member: all && seen_any, cycle_low })
    }
}
