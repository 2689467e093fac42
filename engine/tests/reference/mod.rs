//! A deliberately simple reference evaluator for the differential test: every member of
//! every userset, computed as a stratified least fixpoint over an explicit finite universe.
//!
//! The universe is every object of every type (the ids in its pool plus one id nobody
//! wrote, which stands for all such ids) and every subject set `type:id#relation` over
//! those objects. A wildcard `type:*` expands to all objects of the type in the universe.
//! Membership sets are recomputed from the rules, stratum by stratum, until nothing
//! changes; speed is not a goal, being obviously right is.
//!
//! Caveats make membership three-valued (Kleene's logic, as SpiceDB's): a relationship
//! with a caveat holds as far as its caveat does under the relationship's and the
//! request's context, union is OR, intersection AND, exclusion AND NOT, and an arrow ANDs
//! the tupleset relationship's caveat with the target's membership. The least fixpoint
//! is taken in the order no < maybe < yes, where AND and OR are monotone.

use std::collections::{BTreeMap, BTreeSet};

/// A schema in the reference's own terms. Types and relations are indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub types: Vec<TypeDef>,
    /// The caveated allowed subject types of each `(type, relation)`: `t with c`, beside
    /// the uncaveated ones in [`Body::Direct`].
    pub caveated: BTreeMap<(usize, usize), BTreeSet<(Allowed, Caveat)>>,
}

/// Three-valued membership, ordered no < maybe < yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tri {
    No,
    Maybe,
    Yes,
}

impl Tri {
    pub fn and(self, other: Tri) -> Tri {
        self.min(other)
    }

    pub fn or(self, other: Tri) -> Tri {
        self.max(other)
    }

    pub fn not(self) -> Tri {
        match self {
            Tri::No => Tri::Yes,
            Tri::Maybe => Tri::Maybe,
            Tri::Yes => Tri::No,
        }
    }
}

/// The caveats generated schemas use: CEL over two int parameters `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Caveat {
    /// `a > 0`
    APositive,
    /// `a > 0 && b > 0`
    Both,
    /// `a > 0 || b > 0`
    Either,
    /// `b < 0`
    BNegative,
}

impl Caveat {
    pub const ALL: [Caveat; 4] = [Caveat::APositive, Caveat::Both, Caveat::Either, Caveat::BNegative];

    pub fn name(self) -> &'static str {
        match self {
            Caveat::APositive => "a_positive",
            Caveat::Both => "both_positive",
            Caveat::Either => "either_positive",
            Caveat::BNegative => "b_negative",
        }
    }

    /// The caveat's definition in the schema language.
    pub fn definition(self) -> String {
        let (params, body) = match self {
            Caveat::APositive => ("a int", "a > 0"),
            Caveat::Both => ("a int, b int", "a > 0 && b > 0"),
            Caveat::Either => ("a int, b int", "a > 0 || b > 0"),
            Caveat::BNegative => ("b int", "b < 0"),
        };
        format!("caveat {}({params}) {{\n    {body}\n}}\n", self.name())
    }

    pub fn has_a(self) -> bool {
        self != Caveat::BNegative
    }

    pub fn has_b(self) -> bool {
        self != Caveat::APositive
    }

    /// Kleene's evaluation: a missing parameter is unknown, `false && unknown` is false.
    pub fn eval(self, a: Option<i64>, b: Option<i64>) -> Tri {
        let test = |v: Option<i64>, f: fn(i64) -> bool| match v {
            None => Tri::Maybe,
            Some(v) if f(v) => Tri::Yes,
            Some(_) => Tri::No,
        };
        let a_pos = test(a, |v| v > 0);
        let b_pos = test(b, |v| v > 0);
        match self {
            Caveat::APositive => a_pos,
            Caveat::Both => a_pos.and(b_pos),
            Caveat::Either => a_pos.or(b_pos),
            Caveat::BNegative => test(b, |v| v < 0),
        }
    }
}

/// A relationship's caveat with the values its context fixes (these win over the
/// request's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TupleCaveat {
    pub caveat: Caveat,
    pub a: Option<i64>,
    pub b: Option<i64>,
}

/// A request's context: the values it gives `a` and `b`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Context {
    pub a: Option<i64>,
    pub b: Option<i64>,
}

impl TupleCaveat {
    pub fn eval(&self, ctx: Context) -> Tri {
        self.caveat.eval(self.a.or(ctx.a), self.b.or(ctx.b))
    }
}

/// How much a relationship holds: as far as its caveat does.
fn holds(t: &Tuple, ctx: Context) -> Tri {
    t.caveat.map_or(Tri::Yes, |c| c.eval(ctx))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDef {
    pub name: String,
    /// Relations and permissions, in the order they are written.
    pub relations: Vec<RelationDef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationDef {
    pub name: String,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A relation with its allowed subject types.
    Direct(Vec<Allowed>),
    /// A permission.
    Permission(Expr),
}

/// An allowed subject type of a relation: `t`, `t:*` or `t#r` (type and relation indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Allowed {
    Object(usize),
    Wildcard(usize),
    Set(usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrowKind {
    /// `ts->p`
    Arrow,
    /// `ts.any(p)`
    Any,
    /// `ts.all(p)`
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Nil,
    /// Another relation or permission (index) of the same object.
    Rel(usize),
    /// Walks the objects named by relation `tupleset` to the relation called `target`.
    Arrow {
        tupleset: usize,
        target: String,
        kind: ArrowKind,
    },
    Union(Box<Expr>, Box<Expr>),
    Intersection(Box<Expr>, Box<Expr>),
    Exclusion(Box<Expr>, Box<Expr>),
    /// Written in parentheses; means the same as the inner expression.
    Group(Box<Expr>),
}

/// The subject of a relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubjectRef {
    Object { ty: usize, id: usize },
    Wildcard { ty: usize },
    Set { ty: usize, id: usize, rel: usize },
}

/// One relationship `ty:id#rel@subject`; ids index into [`Case::ids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    pub ty: usize,
    pub id: usize,
    pub rel: usize,
    pub subject: SubjectRef,
    pub caveat: Option<TupleCaveat>,
}

/// A member of a userset: an object (`rel == None`) or a subject set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub ty: usize,
    pub id: usize,
    pub rel: Option<usize>,
}

/// `ty:id#rel`.
pub type Userset = (usize, usize, usize);

/// A schema, its data and the universe of objects to reason about.
#[derive(Debug, Clone)]
pub struct Case {
    pub model: Model,
    /// Object id names; relationships and pools hold indices into this.
    pub ids: Vec<String>,
    /// Per type, the ids of its objects in the universe. Must include an id that no
    /// relationship names (it stands for every such id).
    pub pools: Vec<Vec<usize>>,
    pub tuples: Vec<Tuple>,
}

/// Members of a userset and how far each is one (`No` is never stored).
type Members = BTreeMap<Member, Tri>;

/// Every member of every userset of the universe.
#[derive(Debug, Clone)]
pub struct Membership {
    sets: BTreeMap<Userset, Members>,
}

impl Membership {
    /// Whether `member` is in `userset` for certain.
    pub fn contains(&self, userset: Userset, member: Member) -> bool {
        self.value(userset, member) == Tri::Yes
    }

    pub fn value(&self, userset: Userset, member: Member) -> Tri {
        self.sets.get(&userset).and_then(|s| s.get(&member)).copied().unwrap_or(Tri::No)
    }
}

/// Adds `member` at `value` to `set` (OR with what is there).
fn add(set: &mut Members, member: Member, value: Tri) {
    if value != Tri::No {
        let slot = set.entry(member).or_insert(Tri::No);
        *slot = slot.or(value);
    }
}

impl Model {
    pub fn relation_named(&self, ty: usize, name: &str) -> Option<usize> {
        self.types
            .get(ty)?
            .relations
            .iter()
            .position(|r| r.name == name)
    }

    fn body(&self, ty: usize, rel: usize) -> Option<&Body> {
        self.types.get(ty)?.relations.get(rel).map(|r| &r.body)
    }

    /// Every allowed subject type of a relation: the uncaveated ones, then `t with c`.
    pub fn allowed(&self, ty: usize, rel: usize) -> Vec<(Allowed, Option<Caveat>)> {
        let mut out: Vec<(Allowed, Option<Caveat>)> = match self.body(ty, rel) {
            Some(Body::Direct(allowed)) => allowed.iter().map(|a| (*a, None)).collect(),
            _ => return Vec::new(),
        };
        if let Some(caveated) = self.caveated.get(&(ty, rel)) {
            out.extend(caveated.iter().map(|(a, c)| (*a, Some(*c))));
        }
        out
    }

    /// The `(type, relation)` pairs an arrow over `ty#tupleset` to `target` lands on.
    pub fn arrow_targets(
        &self,
        ty: usize,
        tupleset: usize,
        target: &str,
    ) -> BTreeSet<(usize, usize)> {
        let mut out = BTreeSet::new();
        {
            for (a, _) in self.allowed(ty, tupleset) {
                let t = match a {
                    Allowed::Object(t) | Allowed::Set(t, _) => t,
                    Allowed::Wildcard(_) => continue,
                };
                if let Some(r) = self.relation_named(t, target) {
                    out.insert((t, r));
                }
            }
        }
        out
    }

    /// Schema-level dependencies of `ty#rel`: `(node, through an exclusion's right side)`.
    pub fn dependencies(&self, ty: usize, rel: usize) -> Vec<((usize, usize), bool)> {
        let mut out = Vec::new();
        match self.body(ty, rel) {
            Some(Body::Direct(_)) => {
                for (a, _) in self.allowed(ty, rel) {
                    if let Allowed::Set(t, r) = a {
                        out.push(((t, r), false));
                    }
                }
            }
            Some(Body::Permission(e)) => self.expr_dependencies(ty, e, false, &mut out),
            None => {}
        }
        out
    }

    pub fn expr_dependencies(
        &self,
        ty: usize,
        e: &Expr,
        negative: bool,
        out: &mut Vec<((usize, usize), bool)>,
    ) {
        match e {
            Expr::Nil => {}
            Expr::Rel(r) => out.push(((ty, *r), negative)),
            Expr::Arrow {
                tupleset, target, ..
            } => {
                for node in self.arrow_targets(ty, *tupleset, target) {
                    out.push((node, negative));
                }
            }
            Expr::Union(a, b) | Expr::Intersection(a, b) => {
                self.expr_dependencies(ty, a, negative, out);
                self.expr_dependencies(ty, b, negative, out);
            }
            Expr::Exclusion(a, b) => {
                self.expr_dependencies(ty, a, negative, out);
                self.expr_dependencies(ty, b, true, out);
            }
            Expr::Group(a) => self.expr_dependencies(ty, a, negative, out),
        }
    }

    /// Every `(type, relation)` node.
    pub fn nodes(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (t, def) in self.types.iter().enumerate() {
            for r in 0..def.relations.len() {
                out.push((t, r));
            }
        }
        out
    }

    /// A stratum per node such that a node depends on nodes of its own or lower strata,
    /// and through an exclusion's right side only on strictly lower ones. `Err` if there
    /// is none (a cycle through an exclusion).
    pub fn strata(&self) -> Result<BTreeMap<(usize, usize), usize>, String> {
        let nodes = self.nodes();
        let mut stratum: BTreeMap<(usize, usize), usize> = nodes.iter().map(|n| (*n, 0)).collect();
        loop {
            let mut changed = false;
            for &(t, r) in &nodes {
                for (dep, negative) in self.dependencies(t, r) {
                    let need = stratum.get(&dep).copied().unwrap_or(0) + usize::from(negative);
                    let cur = stratum.get(&(t, r)).copied().unwrap_or(0);
                    if need > cur {
                        if need > nodes.len() {
                            return Err(format!(
                                "`{}#{}` depends on itself through an exclusion",
                                self.types[t].name, self.types[t].relations[r].name
                            ));
                        }
                        stratum.insert((t, r), need);
                        changed = true;
                    }
                }
            }
            if !changed {
                return Ok(stratum);
            }
        }
    }
}

impl Case {
    /// Every object of `ty` in the universe.
    fn objects(&self, ty: usize) -> impl Iterator<Item = Member> + '_ {
        self.pools[ty]
            .iter()
            .map(move |&id| Member { ty, id, rel: None })
    }

    /// The relationships of `ty:id#rel` that name an object (subject relations ignored),
    /// with how far each holds.
    fn named_objects(&self, ty: usize, id: usize, rel: usize, ctx: Context) -> Vec<((usize, usize), Tri)> {
        self.tuples
            .iter()
            .filter(|t| t.ty == ty && t.id == id && t.rel == rel)
            .filter_map(|t| match t.subject {
                SubjectRef::Object { ty, id } | SubjectRef::Set { ty, id, .. } => Some(((ty, id), holds(t, ctx))),
                SubjectRef::Wildcard { .. } => None,
            })
            .collect()
    }

    /// Membership of every userset of the universe, with no caveat context. Panics if the
    /// schema is not stratified (the generator only makes stratified ones).
    pub fn evaluate(&self) -> Membership {
        self.evaluate_in(Context::default())
    }

    /// Membership of every userset of the universe under a request context.
    pub fn evaluate_in(&self, ctx: Context) -> Membership {
        let strata = match self.model.strata() {
            Ok(s) => s,
            Err(e) => panic!("the reference needs a stratified schema: {e}"),
        };
        let top = strata.values().copied().max().unwrap_or(0);
        let mut m = Membership {
            sets: BTreeMap::new(),
        };
        for s in 0..=top {
            let usersets: Vec<Userset> = strata
                .iter()
                .filter(|(_, st)| **st == s)
                .flat_map(|(&(t, r), _)| self.pools[t].iter().map(move |&id| (t, id, r)))
                .collect();
            for u in &usersets {
                m.sets.insert(*u, Members::new());
            }
            // Kleene iteration: within a stratum everything is monotone, so starting
            // from empty sets this climbs to the least fixpoint.
            loop {
                let mut changed = false;
                for &u in &usersets {
                    let next = self.step(&m, u, ctx);
                    if m.sets.get(&u) != Some(&next) {
                        m.sets.insert(u, next);
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        m
    }

    /// The members of `u` given the current sets: itself, plus what its rule yields.
    fn step(&self, m: &Membership, u: Userset, ctx: Context) -> Members {
        let (ty, id, rel) = u;
        let mut out = match self.model.body(ty, rel) {
            Some(Body::Direct(_)) => {
                let mut out = Members::new();
                for t in self
                    .tuples
                    .iter()
                    .filter(|t| t.ty == ty && t.id == id && t.rel == rel)
                {
                    let h = holds(t, ctx);
                    match t.subject {
                        SubjectRef::Object { ty, id } => add(&mut out, Member { ty, id, rel: None }, h),
                        SubjectRef::Wildcard { ty } => {
                            for o in self.objects(ty) {
                                add(&mut out, o, h);
                            }
                        }
                        SubjectRef::Set { ty, id, rel } => {
                            add(&mut out, Member { ty, id, rel: Some(rel) }, h);
                            for (x, v) in get(m, (ty, id, rel)) {
                                add(&mut out, x, h.and(v));
                            }
                        }
                    }
                }
                out
            }
            Some(Body::Permission(e)) => self.eval(m, ty, id, e, ctx),
            None => Members::new(),
        };
        add(&mut out, Member { ty, id, rel: Some(rel) }, Tri::Yes);
        out
    }

    fn eval(&self, m: &Membership, ty: usize, id: usize, e: &Expr, ctx: Context) -> Members {
        match e {
            Expr::Nil => Members::new(),
            Expr::Rel(r) => get(m, (ty, id, *r)),
            Expr::Group(a) => self.eval(m, ty, id, a, ctx),
            Expr::Union(a, b) => {
                let mut out = self.eval(m, ty, id, a, ctx);
                for (x, v) in self.eval(m, ty, id, b, ctx) {
                    add(&mut out, x, v);
                }
                out
            }
            Expr::Intersection(a, b) => {
                let b = self.eval(m, ty, id, b, ctx);
                let mut out = Members::new();
                for (x, v) in self.eval(m, ty, id, a, ctx) {
                    add(&mut out, x, v.and(b.get(&x).copied().unwrap_or(Tri::No)));
                }
                out
            }
            Expr::Exclusion(a, b) => {
                let b = self.eval(m, ty, id, b, ctx);
                let mut out = Members::new();
                for (x, v) in self.eval(m, ty, id, a, ctx) {
                    add(&mut out, x, v.and(b.get(&x).copied().unwrap_or(Tri::No).not()));
                }
                out
            }
            Expr::Arrow {
                tupleset,
                target,
                kind,
            } => {
                // Each relationship of the tupleset: its caveat AND the target's members.
                // An object whose type lacks `target` has no members.
                let members_of = |((t, i), h): ((usize, usize), Tri)| -> Members {
                    match self.model.relation_named(t, target) {
                        Some(r) => get(m, (t, i, r)).into_iter().map(|(x, v)| (x, h.and(v))).filter(|(_, v)| *v != Tri::No).collect(),
                        None => Members::new(),
                    }
                };
                let edges = self.named_objects(ty, id, *tupleset, ctx);
                match kind {
                    ArrowKind::Arrow | ArrowKind::Any => {
                        let mut out = Members::new();
                        for (x, v) in edges.into_iter().flat_map(members_of) {
                            add(&mut out, x, v);
                        }
                        out
                    }
                    ArrowKind::All => {
                        let mut sets = edges.into_iter().map(members_of);
                        match sets.next() {
                            None => Members::new(),
                            Some(first) => sets.fold(first, |acc, s| {
                                acc.into_iter()
                                    .map(|(x, v)| (x, v.and(s.get(&x).copied().unwrap_or(Tri::No))))
                                    .filter(|(_, v)| *v != Tri::No)
                                    .collect()
                            }),
                        }
                    }
                }
            }
        }
    }
}

/// The current members of `u`: empty if not computed yet, or if `u` is outside the
/// universe (an object id nobody's pool holds).
fn get(m: &Membership, u: Userset) -> Members {
    m.sets.get(&u).cloned().unwrap_or_default()
}
