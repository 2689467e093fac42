//! Check evaluation at one revision: one function per rewrite kind, recursion with an
//! explicit depth, a per-request memo, and cycle handling.
//!
//! Cycles: a sub-problem that is already on the stack answers "not a member" for that
//! path (the least fixpoint). Results that leaned on such an assumption about a frame
//! further down the stack are not memoised, because that frame's final answer may
//! differ; once the frame that closes the cycle finishes, its answer is exact (for
//! monotone rewrites one pass suffices: f(false) is either false, a fixpoint, or true,
//! and then f(true) is true).
//!
//! What is tracked: every cycle in the data passes through a hop to another object (a
//! subject set or an arrow), so only hop targets (and the top of the request) become
//! frames on the path and entries in the memo. Steps within one object (computed
//! usersets) are free, unless the schema itself has a loop of permissions on one
//! object, in which case every node is tracked.

use std::rc::Rc;
use std::sync::Arc;

use arbiter_schema::caveat::Outcome;

use arbiter_schema::{AllowedKind, ArrowKind, RelationId, RelationKind, Rewrite, TypeId};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::caveats::{CaveatId, Caveats, RequestCaveats, NO_CAVEAT};
use crate::error::EngineError;
use crate::graph::{
    Edge, GraphVersion, ObjectEdges, ObjectKey, RequestTime, ResourceKey, Resources, SubjectKey,
};
use crate::intern::{Interner, Sym, ELLIPSIS, WILDCARD};
use crate::schema_plan::{Chain, SchemaPlan, Subjects};

type Node = (TypeId, RelationId, Sym);

/// Whether the target is a member: no, yes, or yes on a condition, which names the
/// caveat parameters still missing (an index into [`Evaluator::conditions`]). Caveats
/// are evaluated as a request meets them, with the request's context, so a condition
/// is only what that context leaves unknown; the connectives combine as three-valued
/// logic does (a yes absorbs a condition in a union, a no in an intersection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member(u32);

impl Member {
    pub const NO: Member = Member(0);
    pub const YES: Member = Member(1);

    #[inline]
    pub fn is_yes(self) -> bool {
        self.0 == 1
    }

    #[inline]
    pub fn is_no(self) -> bool {
        self.0 == 0
    }

    fn condition(self) -> Option<usize> {
        usize::try_from(self.0).ok()?.checked_sub(2)
    }
}

/// A Check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    No,
    Yes,
    /// Yes if the request gave these caveat parameters (sorted) and they satisfied the
    /// caveats; no otherwise.
    Conditional(Vec<String>),
}

impl Verdict {
    pub fn is_yes(&self) -> bool {
        matches!(self, Verdict::Yes)
    }
}

/// What is known about a tracked sub-problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memo {
    Done(Member),
    /// "Not a member" for as long as the frame with this number, which the answer
    /// leaned on, is in progress. Settled when that frame finishes: confirmed if it
    /// finishes "no", dropped if it finishes "yes". This keeps cyclic data polynomial:
    /// without it every path through a cycle would be explored again.
    Provisional(u32),
}

/// Per-evaluation tables: the memo, the path of tracked frames in progress (outermost
/// first; the index is the frame number), and the nodes whose memo is provisional.
#[derive(Debug, Default)]
struct Scratch {
    memo: FxHashMap<Node, Memo>,
    path: Vec<Node>,
    provisional: Vec<Node>,
}

thread_local! {
    /// The tables of the last evaluation on this thread, kept (emptied) so the next
    /// request does not allocate them again.
    static SCRATCH: std::cell::Cell<Option<Scratch>> = const { std::cell::Cell::new(None) };
}

/// Larger tables than this are dropped rather than kept for the next request.
const SCRATCH_KEEP: usize = 4096;

impl Drop for Evaluator<'_> {
    fn drop(&mut self) {
        if let Some(mut scratch) = self.scratch.take() {
            if scratch.memo.capacity() <= SCRATCH_KEEP {
                scratch.memo.clear();
                scratch.path.clear();
                scratch.provisional.clear();
                SCRATCH.with(|s| s.set(Some(scratch)));
            }
        }
    }
}

impl Scratch {
    /// Settles what frame `frame` leaves behind when it finishes with `answer`.
    fn finish(
        &mut self,
        node: Node,
        frame: u32,
        start: usize,
        answer: Answer,
        memoise_done: bool,
    ) -> Answer {
        let self_contained = answer.cycle_low >= frame;
        // Entries made while this frame ran. Any of them may have leaned on this frame
        // (an entry records only the outermost frame it leaned on), so:
        let mut keep = start;
        for i in start..self.provisional.len() {
            let Some(n) = self.provisional.get(i).copied() else {
                break;
            };
            let Some(Memo::Provisional(dep)) = self.memo.get(&n).copied() else {
                continue;
            };
            if !answer.member.is_no() {
                // This frame is not "no"; an entry that assumed it "no" may be wrong.
                self.memo.remove(&n);
                continue;
            }
            let dep = if dep >= frame {
                if self_contained {
                    // Everything it leaned on has finished "no".
                    self.memo.insert(n, Memo::Done(Member::NO));
                    continue;
                }
                answer.cycle_low
            } else if self_contained {
                dep
            } else {
                // Leaning on this frame now means leaning on what this frame leaned on.
                dep.min(answer.cycle_low)
            };
            self.memo.insert(n, Memo::Provisional(dep));
            if let Some(slot) = self.provisional.get_mut(keep) {
                *slot = n;
            }
            keep += 1;
        }
        self.provisional.truncate(keep);
        if self_contained {
            if memoise_done {
                self.memo.insert(node, Memo::Done(answer.member));
            }
            Answer {
                member: answer.member,
                cycle_low: NO_CYCLE,
            }
        } else {
            if answer.member.is_no() {
                self.memo.insert(node, Memo::Provisional(answer.cycle_low));
                self.provisional.push(node);
            }
            answer
        }
    }
}

/// No in-progress frame was leaned on.
const NO_CYCLE: u32 = u32::MAX;

/// A member answer plus the shallowest in-progress frame it depended on.
#[derive(Debug, Clone, Copy)]
struct Answer {
    member: Member,
    cycle_low: u32,
}

impl Answer {
    const YES: Answer = Answer {
        member: Member::YES,
        cycle_low: NO_CYCLE,
    };
    const NO: Answer = Answer {
        member: Member::NO,
        cycle_low: NO_CYCLE,
    };

    fn of(member: Member) -> Answer {
        Answer { member, cycle_low: NO_CYCLE }
    }
}

pub(crate) struct Evaluator<'a> {
    pub graph: &'a GraphVersion,
    pub plan: &'a SchemaPlan,
    pub interner: &'a Interner,
    pub target: SubjectKey,
    /// The target subject's type in this schema.
    pub target_type: TypeId,
    pub now: &'a RequestTime,
    pub max_depth: u32,
    /// Final answers of tracked sub-problems, and the tracked sub-problems in progress
    /// (outermost first; the index is the frame number). Taken from the thread's spare
    /// set the first time a node is tracked: a check answered by a direct hit needs none.
    scratch: Option<Scratch>,
    /// Track every node, not only hop targets (the schema loops within one object).
    track_all: bool,
    /// The object looked up last: a rewrite reads several relations of one object.
    last_object: Option<(ObjectKey, Option<ObjectEdges<'a>>)>,
    /// Per nesting relation met so far, the groups the target is in (see [`Closure`]).
    /// Inline: a schema has few nesting relations, and a Check should not allocate.
    closures: SmallVec<[KeptClosure; 2]>,
    /// `graph.groups()`, when closures may be kept on this thread for later Checks of
    /// graphs with the same groups (see [`ClosureCache`]).
    shared_as: Option<u64>,
    /// What names the target directly (its reverse list), once looked up.
    named: Option<Resources<'a>>,
    /// The caveats of the engine, for edges that carry one.
    caveats: &'a Caveats,
    /// The request's context (caveat parameters).
    context: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// What evaluating caveats needs, made when the first caveated edge is met: a
    /// Check that meets none (most) neither builds nor drops it.
    caveat_state: Option<Box<CaveatState<'a>>>,
}

/// An evaluation's caveat state (see [`Evaluator::caveat_state`]).
#[derive(Debug)]
struct CaveatState<'a> {
    /// The request's context, converted per caveat as the request meets them.
    request: RequestCaveats<'a>,
    /// The missing parameters of each condition a [`Member`] names, sorted.
    conditions: Vec<SmallVec<[Arc<str>; 2]>>,
}

/// Edge lists longer than this are searched from the target's side when its own list
/// of what names it is shorter (a tenant's thousands of members against a user's few
/// memberships: a binary search that stays in cache).
const LONG_LIST: usize = 32;

/// A climb (see [`Chain`]) finds repeats by scanning the objects it has met until it has
/// met more than this many.
const CLIMB_SCAN: usize = 32;

/// The objects `x` of one nesting relation `T#R` (see [`Subjects::Nesting`]) whose
/// `x#R` holds the target, found by walking up from the target through the reverse
/// index: first the groups that name it (or a wildcard of its type) directly, then the
/// groups that name those as `T:y#R`, and so on. Each with its level: the hops from
/// `x` down to a group naming the target directly, which is the depth a walk down from
/// `x` would reach it at.
#[derive(Debug, Default)]
struct Closure {
    /// Sorted by object.
    members: Vec<(Sym, u32)>,
    /// The walk stopped at the depth limit with groups left to visit: an object not in
    /// `members` may still hold the target further up (the walk down decides).
    cut: bool,
}

/// The closures (see [`Closure`]) computed on one thread, for the graphs with one
/// [`GraphVersion::groups`] (the same schema and nesting relationships: revisions that
/// change only documents, folders and the like keep it): a PEP asks about the same users
/// again and again, and walking up a user's nested groups is a chain of cache misses
/// through the reverse index. Emptied when a Check on the thread reads a graph with
/// other groups, or when it reaches [`CLOSURE_CACHE_KEEP`] entries.
#[derive(Default)]
struct ClosureCache {
    owner: Option<u64>,
    map: FxHashMap<(SubjectKey, TypeId, RelationId), Rc<Closure>>,
}

thread_local! {
    static CLOSURES: std::cell::RefCell<ClosureCache> = std::cell::RefCell::new(ClosureCache::default());
}

/// Entries a thread's [`ClosureCache`] may hold before it starts again.
const CLOSURE_CACHE_KEEP: usize = 65_536;

/// For CheckBulk's warm pass: reads what this thread keeps of the closures of
/// `subjects` (see [`ClosureCache`]) for graphs with `owner` as their groups, one per
/// nesting relation in `nesting`: the table's slot, the closure and the ends of its
/// members, three dependent cache misses a Check would otherwise wait on in turn; each
/// is one loop over the batch, so the misses of one link overlap. Returns a value
/// computed from them, so the reads stay.
pub(crate) fn touch_closures(owner: u64, subjects: &[SubjectKey], nesting: &[(TypeId, RelationId)]) -> u64 {
    CLOSURES.with(|c| {
        let Ok(cache) = c.try_borrow() else { return 0 };
        if cache.owner != Some(owner) {
            return 0;
        }
        let closures: Vec<&Closure> = subjects
            .iter()
            .flat_map(|s| nesting.iter().filter_map(|&(ty, rel)| cache.map.get(&(*s, ty, rel)).map(|c| &**c)))
            .collect();
        let members: Vec<&[(Sym, u32)]> = closures.iter().map(|c| c.members.as_slice()).collect();
        members.iter().fold(0, |acc, m| {
            let first = m.first().map_or(0, |m| m.0);
            let last = m.last().map_or(0, |m| m.0);
            acc ^ u64::from(first) ^ (u64::from(last) << 32)
        })
    })
}

/// A nesting relation and the target's closure in it.
type KeptClosure = ((TypeId, RelationId), Rc<Closure>);

enum Nested {
    Member(u32),
    NotMember,
    Unknown,
}

impl<'a> Evaluator<'a> {
    #[allow(clippy::too_many_arguments, reason = "one evaluation's whole setting, built in three places")]
    pub fn new(
        graph: &'a GraphVersion,
        plan: &'a SchemaPlan,
        interner: &'a Interner,
        caveats: &'a Caveats,
        context: Option<&'a serde_json::Map<String, serde_json::Value>>,
        target: SubjectKey,
        target_type: TypeId,
        now: &'a RequestTime,
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
            scratch: None,
            track_all: plan.has_local_cycles(),
            last_object: None,
            closures: SmallVec::new(),
            named: None,
            shared_as: None,
            caveats,
            context,
            caveat_state: None,
        }
    }

    fn caveat_state(&mut self) -> &mut CaveatState<'a> {
        let context = self.context;
        self.caveat_state
            .get_or_insert_with(|| Box::new(CaveatState { request: RequestCaveats::new(context), conditions: Vec::new() }))
    }

    fn condition_names(&self, m: Member) -> Option<&SmallVec<[Arc<str>; 2]>> {
        let i = m.condition()?;
        self.caveat_state.as_ref()?.conditions.get(i)
    }

    /// The verdict a member answer stands for.
    pub fn verdict(&self, m: Member) -> Verdict {
        if m.is_yes() {
            return Verdict::Yes;
        }
        match self.condition_names(m) {
            Some(names) => Verdict::Conditional(names.iter().map(|n| n.to_string()).collect()),
            None => Verdict::No,
        }
    }

    fn new_condition(&mut self, names: SmallVec<[Arc<str>; 2]>) -> Member {
        let conditions = &mut self.caveat_state().conditions;
        conditions.push(names);
        Member(u32::try_from(conditions.len() + 1).unwrap_or(u32::MAX))
    }

    /// Either holds.
    fn or(&mut self, a: Member, b: Member) -> Member {
        if a.is_yes() || b.is_yes() {
            Member::YES
        } else if a.is_no() {
            b
        } else if b.is_no() || a == b {
            a
        } else {
            self.union(a, b)
        }
    }

    /// Both hold.
    fn and(&mut self, a: Member, b: Member) -> Member {
        if a.is_no() || b.is_no() {
            Member::NO
        } else if a.is_yes() {
            b
        } else if b.is_yes() || a == b {
            a
        } else {
            self.union(a, b)
        }
    }

    /// A condition missing the parameters of both.
    fn union(&mut self, a: Member, b: Member) -> Member {
        let names = |m: Member| self.condition_names(m).cloned().unwrap_or_default();
        let mut all = names(a);
        all.extend(names(b));
        all.sort_unstable();
        all.dedup();
        self.new_condition(all)
    }

    /// Whether the caveat of an edge holds for this request.
    #[inline]
    fn edge_member(&mut self, e: &Edge) -> Result<Member, EngineError> {
        if e.caveat == NO_CAVEAT {
            return Ok(Member::YES);
        }
        self.caveat_member(e.caveat)
    }

    /// Evaluates a relationship's caveat with its context and the request's.
    #[inline(never)]
    fn caveat_member(&mut self, id: CaveatId) -> Result<Member, EngineError> {
        let Some(bound) = self.caveats.get(id) else {
            return Err(EngineError::CaveatEvaluation { caveat: format!("#{id}"), message: "unknown caveat id".into() });
        };
        let failed = |message: String| EngineError::CaveatEvaluation { caveat: bound.name.to_string(), message };
        let program = self
            .plan
            .schema
            .caveat_id(&bound.name)
            .and_then(|c| self.plan.schema.caveat(c))
            .and_then(|c| c.program.clone())
            .ok_or_else(|| failed("the schema no longer defines it".into()))?;
        let values = bound.values(&program).map_err(failed)?;
        match self.caveat_state().request.evaluate(&program, &values.1).map_err(failed)? {
            Outcome::True => Ok(Member::YES),
            Outcome::False => Ok(Member::NO),
            Outcome::Missing(m) => {
                let mut names: SmallVec<[Arc<str>; 2]> = program.missing_names(m).cloned().collect();
                names.sort_unstable();
                Ok(self.new_condition(names))
            }
        }
    }

    /// Lets this evaluator keep the closures it computes on this thread, and use those
    /// kept, for graphs whose [`GraphVersion::groups`] is `owner`: the groups a subject
    /// is in are the same in all of them.
    pub fn share_closures(&mut self, owner: u64) {
        self.shared_as = Some(owner);
    }

    /// The closure of `ty#rel` for the target: from this thread's cache when the graph
    /// allows it (shared, and no relationship expires, which would make it depend on
    /// the request's time), else computed.
    fn closure_of(&self, ty: TypeId, rel: RelationId) -> Rc<Closure> {
        let Some(owner) = self.shared_as.filter(|_| self.graph.expiring() == 0) else {
            return Rc::new(self.closure(ty, rel));
        };
        let key = (self.target, ty, rel);
        let cached = CLOSURES.with(|c| {
            let mut cache = c.borrow_mut();
            if cache.owner != Some(owner) {
                cache.map.clear();
                cache.owner = Some(owner);
            }
            cache.map.get(&key).cloned()
        });
        if let Some(closure) = cached {
            return closure;
        }
        let closure = Rc::new(self.closure(ty, rel));
        CLOSURES.with(|c| {
            let mut cache = c.borrow_mut();
            if cache.map.len() >= CLOSURE_CACHE_KEEP {
                cache.map.clear();
            }
            cache.map.insert(key, closure.clone());
        });
        closure
    }

    /// `rw` names a relation of `ty` with no subject sets: answered by one lookup.
    fn is_plain_direct(&self, ty: TypeId, rw: &Rewrite) -> bool {
        matches!(rw, Rewrite::Computed(rel) if self.plan.subjects(ty, *rel) == Subjects::Plain)
    }

    /// Is the target in `object#rel` of the nesting relation `ty#rel`, and at what level?
    fn nested(&mut self, ty: TypeId, rel: RelationId, object: Sym) -> Nested {
        let at = match self.closures.iter().position(|(k, _)| *k == (ty, rel)) {
            Some(at) => at,
            None => {
                let c = self.closure_of(ty, rel);
                self.closures.push(((ty, rel), c));
                self.closures.len() - 1
            }
        };
        let Some((_, c)) = self.closures.get(at) else { return Nested::Unknown };
        match c.members.binary_search_by_key(&object, |m| m.0) {
            Ok(i) => c.members.get(i).map_or(Nested::Unknown, |m| Nested::Member(m.1)),
            Err(_) if c.cut => Nested::Unknown,
            Err(_) => Nested::NotMember,
        }
    }

    fn closure(&self, ty: TypeId, rel: RelationId) -> Closure {
        let t_sym = self.plan.type_sym(ty);
        let r_sym = self.plan.rel_sym(ty, rel);
        let check_expiry = self.graph.expiring() > 0;
        let mut members: Vec<(Sym, u32)> = Vec::new();
        // Most subjects are in a handful of groups: a scan of `members` finds repeats
        // until there are enough of them for a set to pay off.
        let mut seen: Option<rustc_hash::FxHashSet<Sym>> = None;
        let mut is_new = |members: &mut Vec<(Sym, u32)>, id: Sym| -> bool {
            if let Some(set) = &mut seen {
                return set.insert(id);
            }
            if members.iter().any(|m| m.0 == id) {
                return false;
            }
            if members.len() >= 32 {
                seen = Some(members.iter().map(|m| m.0).chain([id]).collect());
            }
            true
        };
        let mut level: Vec<SubjectKey> = vec![self.target];
        // The subject set itself is in itself (`team:x#member` in `team:x#member`).
        if self.target.object_type == t_sym && self.target.relation == r_sym {
            members.push((self.target.object_id, 0));
        }
        let wildcard_allowed = self.target.relation == ELLIPSIS
            && self.plan.schema.relation(ty, rel).is_some_and(|r| match &r.kind {
                RelationKind::Direct(allowed) => allowed
                    .iter()
                    .any(|a| a.type_id == self.target_type && a.kind == AllowedKind::Wildcard),
                RelationKind::Permission(_) => false,
            });
        if wildcard_allowed {
            level.push(SubjectKey {
                object_type: self.target.object_type,
                relation: ELLIPSIS,
                object_id: WILDCARD,
            });
        }
        let lo = ResourceKey { object_type: t_sym, relation: r_sym, object_id: 0 };
        let mut depth = 0u32;
        let mut next = Vec::new();
        while !level.is_empty() {
            if depth > self.max_depth {
                return finish(members, true);
            }
            for subject in level.drain(..) {
                for r in self.graph.resources_of(&subject).iter_from(lo) {
                    if r.object_type != t_sym || r.relation != r_sym {
                        break;
                    }
                    if check_expiry && !self.graph.find(&r, &subject).is_some_and(|e| e.live(self.now)) {
                        continue;
                    }
                    if is_new(&mut members, r.object_id) {
                        members.push((r.object_id, depth));
                        next.push(SubjectKey { object_type: t_sym, relation: r_sym, object_id: r.object_id });
                    }
                }
            }
            std::mem::swap(&mut level, &mut next);
            depth += 1;
        }
        return finish(members, false);

        fn finish(mut members: Vec<(Sym, u32)>, cut: bool) -> Closure {
            members.sort_unstable_by_key(|m| m.0);
            Closure { members, cut }
        }
    }

    /// Is the target a member of `object#relation` (object of type `ty`)?
    pub fn check(&mut self, ty: TypeId, rel: RelationId, object: Sym) -> Result<Verdict, EngineError> {
        let m = self.check_relation(ty, rel, object, 0, true)?.member;
        Ok(self.verdict(m))
    }


    fn depth_error(&self, ty: TypeId, rel: RelationId, object: Sym) -> EngineError {
        let schema = &self.plan.schema;
        let type_name = schema
            .definition(ty)
            .map(|d| d.name.as_str())
            .unwrap_or("?");
        let rel_name = schema
            .relation(ty, rel)
            .map(|r| r.name.as_str())
            .unwrap_or("?");
        EngineError::DepthExceeded {
            limit: self.max_depth,
            at: format!("{type_name}:{}#{rel_name}", self.interner.resolve(object)),
        }
    }

    /// `hop` is true when this node was reached by moving to another object (or is the
    /// top of the request): such nodes are tracked for cycles and memoised.
    fn check_relation(
        &mut self,
        ty: TypeId,
        rel: RelationId,
        object: Sym,
        depth: u32,
        hop: bool,
    ) -> Result<Answer, EngineError> {
        if depth > self.max_depth {
            return Err(self.depth_error(ty, rel, object));
        }
        let type_sym = self.plan.type_sym(ty);
        let rel_sym = self.plan.rel_sym(ty, rel);
        // The subject set itself is a member of itself (`group:x#member` in
        // `group:x#member`), which is what makes subject-set checks work.
        if type_sym == self.target.object_type
            && rel_sym == self.target.relation
            && object == self.target.object_id
        {
            return Ok(Answer::YES);
        }
        let Some(relation) = self.plan.schema.relation(ty, rel) else {
            return Ok(Answer::NO);
        };
        let key = ResourceKey {
            object_type: type_sym,
            relation: rel_sym,
            object_id: object,
        };
        // What the subject itself or a wildcard of its type gives, written directly.
        let mut direct = Member::NO;
        if let RelationKind::Direct(allowed) = &relation.kind {
            let subjects = self.plan.subjects(ty, rel);
            // Groups of groups: walk up from the target once per request instead of
            // down through every subgroup of every group asked about. The groups found
            // include those naming the target directly (level 0), so the group's own
            // edges need not be read at all.
            if subjects == Subjects::Nesting {
                match self.nested(ty, rel, object) {
                    Nested::Member(level) if depth + level > self.max_depth => {
                        return Err(self.depth_error(ty, rel, object));
                    }
                    Nested::Member(_) => return Ok(Answer::YES),
                    Nested::NotMember => return Ok(Answer::NO),
                    Nested::Unknown => {}
                }
            }
            // The cheap part first, untracked: the subject itself or a wildcard.
            direct = self.direct_hit(&key, allowed)?;
            if direct.is_yes() {
                return Ok(Answer::YES);
            }
            if subjects == Subjects::Plain {
                return Ok(Answer::of(direct));
            }
        }
        let node = (ty, rel, object);
        if !(hop || self.track_all) {
            // Not tracked here, but the same node may have been answered as a hop
            // target already (`view = edit + parent->view` meets `edit` of each folder
            // both ways): a final answer is reused, so a chain is walked once, not once
            // per level.
            if let Some(Memo::Done(m)) = self.scratch.as_ref().and_then(|s| s.memo.get(&node)) {
                return Ok(Answer::of(*m));
            }
            let a = self.evaluate(&relation.kind, &key, ty, rel, object, depth)?;
            let member = self.or(direct, a.member);
            return Ok(Answer { member, cycle_low: a.cycle_low });
        }
        let scratch = self
            .scratch
            .get_or_insert_with(|| SCRATCH.with(|s| s.take()).unwrap_or_default());
        match scratch.memo.get(&node) {
            Some(Memo::Done(m)) => return Ok(Answer::of(*m)),
            Some(Memo::Provisional(dep)) => {
                return Ok(Answer {
                    member: direct,
                    cycle_low: *dep,
                })
            }
            None => {}
        }
        if let Some(frame) = scratch.path.iter().position(|n| *n == node) {
            return Ok(Answer {
                member: direct,
                cycle_low: frame as u32,
            });
        }
        let frame = scratch.path.len() as u32;
        let start = scratch.provisional.len();
        scratch.path.push(node);
        let result = self.evaluate(&relation.kind, &key, ty, rel, object, depth);
        let scratch = self.scratch.get_or_insert_with(Default::default);
        scratch.path.pop();
        let mut answer = match result {
            Ok(a) => a,
            Err(e) => {
                // The request fails as a whole; nothing here will be read again.
                return Err(e);
            }
        };
        answer.member = self.or(direct, answer.member);
        let scratch = self.scratch.get_or_insert_with(Default::default);
        Ok(scratch.finish(node, frame, start, answer, depth > 0 || self.track_all))
    }

    fn evaluate(
        &mut self,
        kind: &RelationKind,
        key: &ResourceKey,
        ty: TypeId,
        rel: RelationId,
        object: Sym,
        depth: u32,
    ) -> Result<Answer, EngineError> {
        match kind {
            RelationKind::Direct(allowed) => self.subject_sets(key, allowed, depth),
            // A schema that loops within one object has no climbs (see `SchemaPlan::chain`).
            RelationKind::Permission(rw) => match self.plan.chain(ty, rel) {
                Some(chain) => self.climb(chain, ty, rel, object, depth),
                None => self.rewrite(rw, ty, object, depth),
            },
        }
    }

    /// A permission that inherits itself along `chain.via` (see [`Chain`]): its other
    /// parts on `object`, then on each object `via` leads to, breadth first, each once,
    /// at the depth the recursion would reach it at. Only `object` is a frame (the
    /// caller's); what the parts hop to is tracked as usual.
    fn climb(
        &mut self,
        chain: &'a Chain,
        ty: TypeId,
        rel: RelationId,
        object: Sym,
        depth: u32,
    ) -> Result<Answer, EngineError> {
        let type_sym = self.plan.type_sym(ty);
        let via = self.plan.rel_sym(ty, chain.via);
        // The objects met so far with their levels, in the order they are checked: the
        // queue and, while short, the set of those seen.
        let mut queue: SmallVec<[(Sym, u32); 16]> = SmallVec::new();
        queue.push((object, 0));
        let mut seen: Option<rustc_hash::FxHashSet<Sym>> = None;
        // A subject set of the climb's own permissions (`folder:y#view`) is in them on
        // its own object, as `check_relation` answers when the recursion enters it.
        let target_named = self.target.object_type == type_sym
            && chain.names.iter().any(|r| self.plan.rel_sym(ty, *r) == self.target.relation);
        let mut cycle_low = NO_CYCLE;
        // The climb's `via` relation allows no caveat (see `Chain`), so the parts on
        // every ancestor are simply ORed.
        let mut member = Member::NO;
        let mut at = 0;
        while let Some(&(x, level)) = queue.get(at) {
            at += 1;
            let depth = depth + level;
            if depth > self.max_depth {
                return Err(self.depth_error(ty, rel, x));
            }
            if target_named && x == self.target.object_id {
                return Ok(Answer::YES);
            }
            // The way up first, while `x` is the object in hand.
            let up = self.edges(&ResourceKey { object_type: type_sym, relation: via, object_id: x });
            for e in up {
                if e.subject.object_type != type_sym || !e.live(self.now) {
                    continue;
                }
                let id = e.subject.object_id;
                let new = match &mut seen {
                    Some(set) => set.insert(id),
                    None => !queue.iter().any(|q| q.0 == id),
                };
                if new {
                    queue.push((id, level + 1));
                    if seen.is_none() && queue.len() > CLIMB_SCAN {
                        seen = Some(queue.iter().map(|q| q.0).collect());
                    }
                }
            }
            for part in &chain.local {
                let a = self.rewrite(part, ty, x, depth)?;
                if a.member.is_yes() {
                    return Ok(Answer::YES);
                }
                member = self.or(member, a.member);
                cycle_low = cycle_low.min(a.cycle_low);
            }
        }
        Ok(Answer { member, cycle_low })
    }

    /// The edges of `key`, through the one-object cache.
    #[inline]
    fn edges(&mut self, key: &ResourceKey) -> &'a [Edge] {
        let okey = key.object();
        let object = match self.last_object {
            Some((k, o)) if k == okey => o,
            _ => {
                let graph: &'a GraphVersion = self.graph;
                let o = graph.object(&okey);
                self.last_object = Some((okey, o));
                o
            }
        };
        object.map(|o| o.relation(key.relation)).unwrap_or(&[])
    }

    /// The target itself, or a wildcard of its type, written directly on `key`: yes,
    /// no, or on the condition their caveats leave.
    #[inline]
    fn direct_hit(
        &mut self,
        key: &ResourceKey,
        allowed: &[arbiter_schema::AllowedSubject],
    ) -> Result<Member, EngineError> {
        let edges = self.edges(key);
        if edges.is_empty() {
            return Ok(Member::NO);
        }
        let named_here = if edges.len() > LONG_LIST { self.named_in_reverse(key, edges.len()) } else { None };
        let now = self.now;
        let find = |s: &SubjectKey| {
            edges
                .binary_search_by(|e| e.subject.cmp(s))
                .ok()
                .and_then(|i| edges.get(i))
                .filter(|e| e.live(now))
        };
        let mut member = Member::NO;
        if named_here.unwrap_or(true) {
            if let Some(e) = find(&self.target) {
                member = self.edge_member(e)?;
                if member.is_yes() {
                    return Ok(member);
                }
            }
        }
        if self.target.relation == ELLIPSIS
            && allowed
                .iter()
                .any(|a| a.type_id == self.target_type && a.kind == AllowedKind::Wildcard)
        {
            let wildcard = SubjectKey {
                object_type: self.target.object_type,
                relation: ELLIPSIS,
                object_id: WILDCARD,
            };
            if let Some(e) = find(&wildcard) {
                let w = self.edge_member(e)?;
                member = self.or(member, w);
            }
        }
        Ok(member)
    }

    /// For a long edge list on `key`: whether the target's reverse list (looked up once
    /// per request) names `key`, when that list is the shorter one to search. The list
    /// is complete: absent there means no edge; present, the edge decides (it holds the
    /// expiration). Out of line, so that the common short-list path stays small.
    #[inline(never)]
    fn named_in_reverse(&mut self, key: &ResourceKey, edges: usize) -> Option<bool> {
        let graph: &'a GraphVersion = self.graph;
        let target = self.target;
        let named = *self.named.get_or_insert_with(|| graph.resources_of(&target));
        (named.len() < edges).then(|| named.contains(key))
    }

    /// Recurses into the subject sets (`group:x#member`) written on `key`.
    fn subject_sets(
        &mut self,
        key: &ResourceKey,
        allowed: &[arbiter_schema::AllowedSubject],
        depth: u32,
    ) -> Result<Answer, EngineError> {
        let edges = self.edges(key);
        let mut cycle_low = NO_CYCLE;
        let mut member = Member::NO;
        for a in allowed {
            let AllowedKind::SubjectSet(srel) = a.kind else {
                continue;
            };
            let st_sym = self.plan.type_sym(a.type_id);
            let srel_sym = self.plan.rel_sym(a.type_id, srel);
            let lo = SubjectKey {
                object_type: st_sym,
                relation: srel_sym,
                object_id: 0,
            };
            let start = edges.partition_point(|e| e.subject < lo);
            for e in edges.get(start..).unwrap_or(&[]) {
                if e.subject.object_type != st_sym || e.subject.relation != srel_sym {
                    break;
                }
                if !e.live(self.now) {
                    continue;
                }
                // A caveated subject set holds when its caveat and the set both do.
                let on = self.edge_member(e)?;
                if on.is_no() {
                    continue;
                }
                let ans =
                    self.check_relation(a.type_id, srel, e.subject.object_id, depth + 1, true)?;
                cycle_low = cycle_low.min(ans.cycle_low);
                let through = self.and(on, ans.member);
                if through.is_yes() {
                    return Ok(Answer::YES);
                }
                member = self.or(member, through);
            }
        }
        Ok(Answer { member, cycle_low })
    }

    fn rewrite(
        &mut self,
        rw: &Rewrite,
        ty: TypeId,
        object: Sym,
        depth: u32,
    ) -> Result<Answer, EngineError> {
        match rw {
            Rewrite::Nil => Ok(Answer::NO),
            // Same object: no hop, so no depth; the memo breaks schema-level loops.
            Rewrite::Computed(rel) => self.check_relation(ty, *rel, object, depth, false),
            Rewrite::Arrow(arrow) => self.arrow(arrow, ty, object, depth),
            Rewrite::Union(items) => {
                let mut cycle_low = NO_CYCLE;
                let mut member = Member::NO;
                for item in items {
                    let a = self.rewrite(item, ty, object, depth)?;
                    if a.member.is_yes() {
                        return Ok(Answer::YES);
                    }
                    member = self.or(member, a.member);
                    cycle_low = cycle_low.min(a.cycle_low);
                }
                Ok(Answer { member, cycle_low })
            }
            Rewrite::Intersection(items) => {
                let mut cycle_low = NO_CYCLE;
                let mut member = Member::YES;
                for item in items {
                    let a = self.rewrite(item, ty, object, depth)?;
                    cycle_low = cycle_low.min(a.cycle_low);
                    if a.member.is_no() {
                        return Ok(Answer { member: Member::NO, cycle_low });
                    }
                    member = self.and(member, a.member);
                }
                Ok(Answer { member, cycle_low })
            }
            Rewrite::Exclusion(base, subtract) => {
                // A subtracted relation that is one lookup (`- banned`, subjects only, no
                // subject sets) goes first: a banned subject is refused without walking
                // the base. It never hops, so it has no cycle to report. A caveated
                // subtrahend makes the answer `base AND NOT sub`.
                if self.is_plain_direct(ty, subtract) {
                    let s = self.rewrite(subtract, ty, object, depth)?;
                    if s.member.is_yes() {
                        return Ok(Answer::NO);
                    }
                    let b = self.rewrite(base, ty, object, depth)?;
                    let member = self.and_not(b.member, s.member);
                    return Ok(Answer { member, cycle_low: b.cycle_low });
                }
                let b = self.rewrite(base, ty, object, depth)?;
                if b.member.is_no() {
                    return Ok(b);
                }
                let s = self.rewrite(subtract, ty, object, depth)?;
                let member = self.and_not(b.member, s.member);
                Ok(Answer {
                    member,
                    cycle_low: b.cycle_low.min(s.cycle_low),
                })
            }
        }
    }

    /// `base AND NOT sub`: a conditional subtrahend leaves its condition on the answer.
    fn and_not(&mut self, base: Member, sub: Member) -> Member {
        if sub.is_yes() {
            Member::NO
        } else if sub.is_no() {
            base
        } else if base.is_no() {
            Member::NO
        } else {
            // NOT a condition is a condition on the same parameters.
            self.and(base, sub)
        }
    }

    fn arrow(
        &mut self,
        arrow: &arbiter_schema::Arrow,
        ty: TypeId,
        object: Sym,
        depth: u32,
    ) -> Result<Answer, EngineError> {
        let key = ResourceKey {
            object_type: self.plan.type_sym(ty),
            relation: self.plan.rel_sym(ty, arrow.tupleset),
            object_id: object,
        };
        let edges = self.edges(&key);
        let all = arrow.kind == ArrowKind::All;
        let mut cycle_low = NO_CYCLE;
        // `any`: the OR over the edges of (edge caveat AND the target's answer); `all`:
        // their AND, so an edge whose caveat is false fails it (as SpiceDB answers).
        let mut member = if all { Member::YES } else { Member::NO };
        let mut seen_any = false;
        for e in edges {
            if !e.live(self.now) {
                continue;
            }
            seen_any = true;
            let on = self.edge_member(e)?;
            let target = arrow
                .targets
                .iter()
                .find(|(t, _)| self.plan.type_sym(*t) == e.subject.object_type);
            let ans = match target {
                Some((tt, trel)) if !on.is_no() => {
                    self.check_relation(*tt, *trel, e.subject.object_id, depth + 1, true)?
                }
                _ => Answer::NO,
            };
            cycle_low = cycle_low.min(ans.cycle_low);
            let through = self.and(on, ans.member);
            if all {
                if through.is_no() {
                    return Ok(Answer { member: Member::NO, cycle_low });
                }
                member = self.and(member, through);
            } else {
                if through.is_yes() {
                    return Ok(Answer::YES);
                }
                member = self.or(member, through);
            }
        }
        if all && !seen_any {
            member = Member::NO;
        }
        Ok(Answer { member, cycle_low })
    }
}
