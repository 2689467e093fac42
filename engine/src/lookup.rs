//! LookupResources and LookupSubjects. Both first walk the graph to collect candidates
//! (backwards from the subject, or forwards from the resource, guided by the schema),
//! then keep the candidates that Check allows. The walk over-approximates (it follows
//! both sides of exclusions and ignores expiration), so the final word is always
//! Check's, and the lookups agree with Check by construction.

use std::collections::VecDeque;

use arbiter_schema::{AllowedKind, RelationId, RelationKind, Rewrite, TypeId};
use rustc_hash::FxHashSet;

use crate::check::Evaluator;
use crate::error::EngineError;
use crate::graph::{GraphVersion, RequestTime, SubjectKey};
use crate::intern::{Interner, Sym, ELLIPSIS, WILDCARD};
use crate::schema_plan::SchemaPlan;

type Userset = (TypeId, RelationId, Sym);

/// Collects usersets once each.
struct Frontier {
    seen: FxHashSet<Userset>,
    queue: VecDeque<Userset>,
}

impl Frontier {
    fn new() -> Self {
        Frontier {
            seen: FxHashSet::default(),
            queue: VecDeque::new(),
        }
    }

    fn reach(&mut self, u: Userset) {
        if self.seen.insert(u) {
            self.queue.push_back(u);
        }
    }
}

/// Ids of `want` (type, permission) objects that the subject may reach, before Check.
fn resource_candidates(
    graph: &GraphVersion,
    plan: &SchemaPlan,
    subject: SubjectKey,
    subject_type: TypeId,
    subject_relation: Option<RelationId>,
    want: (TypeId, RelationId),
) -> Vec<Sym> {
    let mut frontier = Frontier::new();
    let reverse = |frontier: &mut Frontier, key: SubjectKey| {
        for res in graph.resources_of(&key) {
            let Some(t) = plan.type_of_sym(res.object_type) else {
                continue;
            };
            let Some(r) = plan.relation_of_sym(t, res.relation) else {
                continue;
            };
            frontier.reach((t, r, res.object_id));
        }
    };
    match subject_relation {
        None => {
            reverse(&mut frontier, subject);
            reverse(
                &mut frontier,
                SubjectKey {
                    object_id: WILDCARD,
                    ..subject
                },
            );
        }
        Some(r) => frontier.reach((subject_type, r, subject.object_id)),
    }
    let mut candidates = Vec::new();
    while let Some((t, r, id)) = frontier.queue.pop_front() {
        if (t, r) == want {
            candidates.push(id);
        }
        reverse(
            &mut frontier,
            SubjectKey {
                object_type: plan.type_sym(t),
                relation: plan.rel_sym(t, r),
                object_id: id,
            },
        );
        for p in plan.computed_dependents(t, r) {
            frontier.reach((t, *p, id));
        }
        for (d, tupleset, p) in plan.arrow_dependents(t, r) {
            let Some(ts_rel) = plan.schema.relation(*d, *tupleset) else {
                continue;
            };
            let d_sym = plan.type_sym(*d);
            let ts_sym = plan.rel_sym(*d, *tupleset);
            for allowed in ts_rel.allowed_subjects().iter().filter(|a| a.type_id == t) {
                let relation = match allowed.kind {
                    AllowedKind::Object => ELLIPSIS,
                    AllowedKind::SubjectSet(sr) => plan.rel_sym(t, sr),
                    AllowedKind::Wildcard => continue,
                };
                let key = SubjectKey {
                    object_type: plan.type_sym(t),
                    relation,
                    object_id: id,
                };
                for res in graph.resources_of(&key) {
                    if res.object_type == d_sym && res.relation == ts_sym {
                        frontier.reach((*d, *p, res.object_id));
                    }
                }
            }
        }
    }
    candidates
}

/// What a forward walk from a resource found.
struct SubjectCandidates {
    ids: Vec<Sym>,
    wildcard: bool,
}

/// Subjects of type `want_type` (or subject sets `want_type#want_rel`) that a forward
/// walk from `start` meets, before Check.
fn subject_candidates(
    graph: &GraphVersion,
    plan: &SchemaPlan,
    start: Userset,
    want_type: TypeId,
    want_rel: Option<RelationId>,
    written_only: bool,
) -> SubjectCandidates {
    let mut frontier = Frontier::new();
    frontier.reach(start);
    let mut ids = FxHashSet::default();
    let mut wildcard = false;
    while let Some((t, r, id)) = frontier.queue.pop_front() {
        if !written_only && t == want_type && want_rel == Some(r) {
            ids.insert(id);
        }
        let Some(rel) = plan.schema.relation(t, r) else {
            continue;
        };
        let key_of = |rel_id: RelationId| crate::graph::ResourceKey {
            object_type: plan.type_sym(t),
            relation: plan.rel_sym(t, rel_id),
            object_id: id,
        };
        match &rel.kind {
            RelationKind::Direct(_) => {
                for e in graph.edges(&key_of(r)) {
                    let Some(st) = plan.type_of_sym(e.subject.object_type) else {
                        continue;
                    };
                    if e.subject.relation == ELLIPSIS {
                        if st == want_type && want_rel.is_none() {
                            if e.subject.object_id == WILDCARD {
                                wildcard = true;
                            } else {
                                ids.insert(e.subject.object_id);
                            }
                        }
                    } else if let Some(sr) = plan.relation_of_sym(st, e.subject.relation) {
                        if written_only && st == want_type && want_rel == Some(sr) {
                            ids.insert(e.subject.object_id);
                        }
                        frontier.reach((st, sr, e.subject.object_id));
                    }
                }
            }
            RelationKind::Permission(rw) => {
                let mut stack = vec![rw];
                while let Some(node) = stack.pop() {
                    match node {
                        Rewrite::Nil => {}
                        Rewrite::Computed(r2) => frontier.reach((t, *r2, id)),
                        Rewrite::Union(items) | Rewrite::Intersection(items) => {
                            stack.extend(items.iter())
                        }
                        Rewrite::Exclusion(a, b) => {
                            stack.push(a);
                            stack.push(b);
                        }
                        Rewrite::Arrow(a) => {
                            for e in graph.edges(&key_of(a.tupleset)) {
                                if let Some((tt, tr)) = a
                                    .targets
                                    .iter()
                                    .find(|(tt, _)| plan.type_sym(*tt) == e.subject.object_type)
                                {
                                    frontier.reach((*tt, *tr, e.subject.object_id));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    SubjectCandidates {
        ids: ids.into_iter().collect(),
        wildcard,
    }
}

/// The context every lookup evaluates in.
pub(crate) struct LookupContext<'a> {
    pub graph: &'a GraphVersion,
    pub plan: &'a SchemaPlan,
    pub interner: &'a Interner,
    pub caveats: &'a crate::caveats::Caveats,
    /// The request's caveat parameters.
    pub context: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub now: &'a RequestTime,
    pub max_depth: u32,
}

impl LookupContext<'_> {
    /// Every `want` (type, permission) id the subject may reach, unchecked and unsorted:
    /// one symbol each, never a string.
    pub fn resource_candidates(
        &self,
        want: (TypeId, RelationId),
        subject: SubjectKey,
        subject_type: TypeId,
        subject_relation: Option<RelationId>,
    ) -> Vec<Sym> {
        resource_candidates(self.graph, self.plan, subject, subject_type, subject_relation, want)
    }

    /// A Check evaluator for one subject, to be asked about many resources (it keeps
    /// what it learns between them).
    pub fn evaluator(&self, subject: SubjectKey, subject_type: TypeId) -> Evaluator<'_> {
        Evaluator::new(
            self.graph,
            self.plan,
            self.interner,
            self.caveats,
            self.context,
            subject,
            subject_type,
            self.now,
            self.max_depth,
        )
    }

    /// Subjects of `want_type` (or `want_type#want_rel`) a forward walk from the
    /// resource meets, unchecked and unsorted, and whether it met a wildcard. A
    /// resource's own subject set counts unless `written_only`.
    pub fn subject_candidates(
        &self,
        resource: (TypeId, RelationId, Sym),
        want_type: TypeId,
        want_rel: Option<RelationId>,
        written_only: bool,
    ) -> (Vec<Sym>, bool) {
        let (ty, rel, id) = resource;
        let mut found = subject_candidates(self.graph, self.plan, resource, want_type, want_rel, written_only);
        if !written_only && want_rel == Some(rel) && want_type == ty && !found.ids.contains(&id) {
            found.ids.push(id);
        }
        (found.ids, found.wildcard && want_rel.is_none())
    }

    /// Does the subject `candidate` of `want_type` (or `want_type#want_rel`) have the
    /// permission on the resource? `candidate` may be the symbol no id has, which
    /// stands for any subject not written anywhere (a wildcard's reach).
    pub fn subject_allowed(
        &self,
        resource: (TypeId, RelationId, Sym),
        want_type: TypeId,
        want_rel: Option<RelationId>,
        candidate: Sym,
    ) -> Result<crate::check::Verdict, EngineError> {
        let (ty, rel, id) = resource;
        let relation = match want_rel {
            None => ELLIPSIS,
            Some(r) => self.plan.rel_sym(want_type, r),
        };
        let target = SubjectKey { object_type: self.plan.type_sym(want_type), relation, object_id: candidate };
        self.evaluator(target, want_type).check(ty, rel, id)
    }
}
