//! A deliberately simple reference evaluator for the differential test: every member of
//! every userset, computed as a stratified least fixpoint over an explicit finite universe.
//!
//! The universe is every object of every type (the ids in its pool plus one id nobody
//! wrote, which stands for all such ids) and every subject set `type:id#relation` over
//! those objects. A wildcard `type:*` expands to all objects of the type in the universe.
//! Membership sets are recomputed from the rules, stratum by stratum, until nothing
//! changes; speed is not a goal, being obviously right is.

use std::collections::{BTreeMap, BTreeSet};

/// A schema in the reference's own terms. Types and relations are indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub types: Vec<TypeDef>,
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

/// Every member of every userset of the universe.
#[derive(Debug, Clone)]
pub struct Membership {
    sets: BTreeMap<Userset, BTreeSet<Member>>,
}

impl Membership {
    pub fn contains(&self, userset: Userset, member: Member) -> bool {
        self.sets.get(&userset).is_some_and(|s| s.contains(&member))
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

    /// The `(type, relation)` pairs an arrow over `ty#tupleset` to `target` lands on.
    pub fn arrow_targets(
        &self,
        ty: usize,
        tupleset: usize,
        target: &str,
    ) -> BTreeSet<(usize, usize)> {
        let mut out = BTreeSet::new();
        if let Some(Body::Direct(allowed)) = self.body(ty, tupleset) {
            for a in allowed {
                let t = match *a {
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
            Some(Body::Direct(allowed)) => {
                for a in allowed {
                    if let Allowed::Set(t, r) = *a {
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

    /// The distinct objects a relation of `ty:id` names (subject relations ignored).
    pub fn named_objects(&self, ty: usize, id: usize, rel: usize) -> BTreeSet<(usize, usize)> {
        self.tuples
            .iter()
            .filter(|t| t.ty == ty && t.id == id && t.rel == rel)
            .filter_map(|t| match t.subject {
                SubjectRef::Object { ty, id } | SubjectRef::Set { ty, id, .. } => Some((ty, id)),
                SubjectRef::Wildcard { .. } => None,
            })
            .collect()
    }

    /// Membership of every userset of the universe. Panics if the schema is not stratified
    /// (the generator only makes stratified ones).
    pub fn evaluate(&self) -> Membership {
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
                m.sets.insert(*u, BTreeSet::new());
            }
            // Kleene iteration: within a stratum everything is monotone, so starting
            // from empty sets this climbs to the least fixpoint.
            loop {
                let mut changed = false;
                for &u in &usersets {
                    let next = self.step(&m, u);
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
    fn step(&self, m: &Membership, u: Userset) -> BTreeSet<Member> {
        let (ty, id, rel) = u;
        let mut out = match self.model.body(ty, rel) {
            Some(Body::Direct(_)) => {
                let mut out = BTreeSet::new();
                for t in self
                    .tuples
                    .iter()
                    .filter(|t| t.ty == ty && t.id == id && t.rel == rel)
                {
                    match t.subject {
                        SubjectRef::Object { ty, id } => {
                            out.insert(Member { ty, id, rel: None });
                        }
                        SubjectRef::Wildcard { ty } => out.extend(self.objects(ty)),
                        SubjectRef::Set { ty, id, rel } => {
                            out.insert(Member {
                                ty,
                                id,
                                rel: Some(rel),
                            });
                            out.extend(get(m, (ty, id, rel)));
                        }
                    }
                }
                out
            }
            Some(Body::Permission(e)) => self.eval(m, ty, id, e),
            None => BTreeSet::new(),
        };
        out.insert(Member {
            ty,
            id,
            rel: Some(rel),
        });
        out
    }

    fn eval(&self, m: &Membership, ty: usize, id: usize, e: &Expr) -> BTreeSet<Member> {
        match e {
            Expr::Nil => BTreeSet::new(),
            Expr::Rel(r) => get(m, (ty, id, *r)),
            Expr::Group(a) => self.eval(m, ty, id, a),
            Expr::Union(a, b) => {
                let mut out = self.eval(m, ty, id, a);
                out.extend(self.eval(m, ty, id, b));
                out
            }
            Expr::Intersection(a, b) => {
                let b = self.eval(m, ty, id, b);
                self.eval(m, ty, id, a)
                    .into_iter()
                    .filter(|x| b.contains(x))
                    .collect()
            }
            Expr::Exclusion(a, b) => {
                let b = self.eval(m, ty, id, b);
                self.eval(m, ty, id, a)
                    .into_iter()
                    .filter(|x| !b.contains(x))
                    .collect()
            }
            Expr::Arrow {
                tupleset,
                target,
                kind,
            } => {
                let objects = self.named_objects(ty, id, *tupleset);
                // An object whose type lacks `target` has no members.
                let members_of = |(t, i): (usize, usize)| match self.model.relation_named(t, target)
                {
                    Some(r) => get(m, (t, i, r)),
                    None => BTreeSet::new(),
                };
                match kind {
                    ArrowKind::Arrow | ArrowKind::Any => {
                        objects.into_iter().flat_map(members_of).collect()
                    }
                    ArrowKind::All => {
                        let mut sets = objects.into_iter().map(members_of);
                        match sets.next() {
                            None => BTreeSet::new(),
                            Some(first) => {
                                sets.fold(first, |acc, s| acc.intersection(&s).copied().collect())
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The current members of `u`: empty if not computed yet, or if `u` is outside the
/// universe (an object id nobody's pool holds).
fn get(m: &Membership, u: Userset) -> BTreeSet<Member> {
    m.sets.get(&u).cloned().unwrap_or_default()
}
