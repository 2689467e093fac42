//! Differential test: the engine's Check, LookupResources and LookupSubjects against the
//! simple reference evaluator in `reference/`, on random stratified schemas and random
//! relationship graphs (cycles included), and with caveats: random caveated relationships
//! under request contexts that give every parameter, some, or none, where answers are
//! three-valued. A failure prints a SpiceDB validation file that reproduces it, ready for
//! `tests/corpus/differential/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use arbiter_engine::{
    CheckRequest, Consistency, Decision, Engine, EngineConfig, FoundSubject,
    LookupResourcesRequest, LookupSubjectsRequest, RelationshipUpdate, UpdateOp,
};
use arbiter_schema::{compile, parse_relationship, AllowedKind, RelationKind, Rewrite};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::FileFailurePersistence;

use reference::{
    Allowed, ArrowKind, Body, Case, Caveat, Context, Expr, Member, Membership, Model,
    RelationDef, SubjectRef, Tri, Tuple, TupleCaveat, TypeDef, Userset,
};

/// Object ids of the generated graphs; every type draws from the first few.
const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];
/// An id no relationship names, standing for all such ids.
const NOBODY: &str = "nobody";

// ---------------------------------------------------------------------------------------
// The generator: a `Spec` of small numbers, mapped onto a schema that compiles and is
// stratified. Numbers rather than a ready schema, so that shrinking stays meaningful.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Spec {
    user_ids: usize,
    /// The types after `user`: `t1`, `t2`, ...
    types: Vec<TypeSpec>,
    tuples: Vec<TupleSpec>,
    /// Caveated allowed subject types (`t with c`) added to relations.
    caveated: Vec<CaveatedSpec>,
}

#[derive(Debug, Clone, Copy)]
struct CaveatedSpec {
    ty: u8,
    rel: u8,
    allowed: AllowedSpec,
    caveat: u8,
}

#[derive(Debug, Clone)]
struct TypeSpec {
    ids: usize,
    /// Relations `r0`, `r1`, ...: their allowed subject types.
    relations: Vec<Vec<AllowedSpec>>,
    /// Permissions `p0`, `p1`, ...
    permissions: Vec<ExprSpec>,
    /// Whether the type has `relation up: <itself>`, which [`ExprSpec::Climb`] climbs
    /// (folders in folders).
    up: bool,
}

#[derive(Debug, Clone, Copy)]
enum AllowedSpec {
    /// An object of this type or a lower one.
    Object(u8),
    /// A wildcard, mostly `user:*`.
    Wildcard(u8),
    /// A relation or permission of a strictly lower type (not `user`).
    LowerSet { ty: u8, rel: u8 },
    /// A relation or permission of this same type: `t2#r0` on `t2`, cycles in the data.
    SameSet { rel: u8 },
}

#[derive(Debug, Clone)]
enum ExprSpec {
    Nil,
    /// A relation, or an earlier permission, of the same type.
    Ref(u8),
    Arrow {
        tupleset: u8,
        target: u8,
        kind: u8,
    },
    Union(Box<ExprSpec>, Box<ExprSpec>),
    Intersection(Box<ExprSpec>, Box<ExprSpec>),
    Exclusion(Box<ExprSpec>, Box<ExprSpec>),
    Group(Box<ExprSpec>),
    /// `(x) + up->own` (or `up.any(own)`, `up.all(own)`): the permission inherits itself
    /// from the objects `up` names, as `view` does from a parent folder. Just `x` on a
    /// type without `up`.
    Climb(Box<ExprSpec>, u8),
}

#[derive(Debug, Clone, Copy)]
struct TupleSpec {
    ty: u8,
    rel: u8,
    id: u8,
    allowed: u8,
    subject: u8,
    /// A caveated relationship's context: which of its parameters it fixes, to what.
    context: u8,
}

fn allowed_spec() -> impl Strategy<Value = AllowedSpec> {
    prop_oneof![
        4 => any::<u8>().prop_map(AllowedSpec::Object),
        2 => any::<u8>().prop_map(AllowedSpec::Wildcard),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(ty, rel)| AllowedSpec::LowerSet { ty, rel }),
        3 => any::<u8>().prop_map(|rel| AllowedSpec::SameSet { rel }),
    ]
}

fn expr_spec() -> impl Strategy<Value = ExprSpec> {
    let leaf = prop_oneof![
        5 => any::<u8>().prop_map(ExprSpec::Ref),
        4 => (any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(tupleset, target, kind)| ExprSpec::Arrow { tupleset, target, kind }),
        1 => Just(ExprSpec::Nil),
    ];
    leaf.prop_recursive(3, 10, 2, |inner| {
        prop_oneof![
            3 => (inner.clone(), inner.clone()).prop_map(|(a, b)| ExprSpec::Union(Box::new(a), Box::new(b))),
            3 => (inner.clone(), inner.clone()).prop_map(|(a, b)| ExprSpec::Intersection(Box::new(a), Box::new(b))),
            3 => (inner.clone(), inner.clone()).prop_map(|(a, b)| ExprSpec::Exclusion(Box::new(a), Box::new(b))),
            1 => inner.clone().prop_map(|a| ExprSpec::Group(Box::new(a))),
            3 => (inner, any::<u8>()).prop_map(|(a, kind)| ExprSpec::Climb(Box::new(a), kind)),
        ]
    })
}

fn type_spec() -> impl Strategy<Value = TypeSpec> {
    (
        3usize..=5,
        prop::collection::vec(prop::collection::vec(allowed_spec(), 1..=3), 1..=3),
        prop::collection::vec(expr_spec(), 0..=3),
        any::<bool>(),
    )
        .prop_map(|(ids, relations, permissions, up)| TypeSpec {
            ids,
            relations,
            permissions,
            up,
        })
}

fn tuple_spec() -> impl Strategy<Value = TupleSpec> {
    any::<(u8, u8, u8, u8, u8, u8)>().prop_map(|(ty, rel, id, allowed, subject, context)| TupleSpec {
        ty,
        rel,
        id,
        allowed,
        subject,
        context,
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        3usize..=5,
        prop::collection::vec(type_spec(), 2..=4),
        prop::collection::vec(tuple_spec(), 0..=40),
    )
        .prop_map(|(user_ids, types, tuples)| Spec {
            user_ids,
            types,
            tuples,
            caveated: Vec::new(),
        })
}

fn caveated_spec() -> impl Strategy<Value = CaveatedSpec> {
    (any::<u8>(), any::<u8>(), allowed_spec(), any::<u8>()).prop_map(|(ty, rel, allowed, caveat)| CaveatedSpec {
        ty,
        rel,
        allowed,
        caveat,
    })
}

/// A spec whose relations also allow caveated subject types.
fn caveat_spec() -> impl Strategy<Value = Spec> {
    (spec(), prop::collection::vec(caveated_spec(), 1..=6)).prop_map(|(mut spec, caveated)| {
        spec.caveated = caveated;
        spec
    })
}

fn pick<T: Copy>(items: &[T], sel: u8) -> T {
    items[usize::from(sel) % items.len()]
}

/// Maps a spec onto a case: a schema that compiles, is stratified (no relation depends on
/// itself through the right side of an exclusion), and relationships it accepts.
fn build(spec: &Spec) -> Case {
    let n = spec.types.len();
    let mut types = vec![TypeDef {
        name: "user".into(),
        relations: Vec::new(),
    }];
    for (i, ts) in spec.types.iter().enumerate() {
        let mut relations = Vec::new();
        for r in 0..ts.relations.len() {
            relations.push(RelationDef {
                name: format!("r{r}"),
                body: Body::Direct(Vec::new()),
            });
        }
        if ts.up {
            relations.push(RelationDef {
                name: "up".into(),
                body: Body::Direct(vec![Allowed::Object(i + 1)]),
            });
        }
        for p in 0..ts.permissions.len() {
            relations.push(RelationDef {
                name: format!("p{p}"),
                body: Body::Permission(Expr::Nil),
            });
        }
        types.push(TypeDef {
            name: format!("t{}", i + 1),
            relations,
        });
    }
    let rel_count: Vec<usize> = types.iter().map(|t| t.relations.len()).collect();

    // Allowed subject types.
    let resolve = |ty: usize, a: AllowedSpec| match a {
        AllowedSpec::Object(t) => Allowed::Object(usize::from(t) % (ty + 1)),
        AllowedSpec::Wildcard(t) => Allowed::Wildcard(if t % 3 == 0 {
            usize::from(t / 3) % (ty + 1)
        } else {
            0
        }),
        AllowedSpec::LowerSet { ty: t, rel } if ty > 1 => {
            let t = 1 + usize::from(t) % (ty - 1);
            Allowed::Set(t, usize::from(rel) % rel_count[t])
        }
        AllowedSpec::LowerSet { rel, .. } | AllowedSpec::SameSet { rel } => {
            Allowed::Set(ty, usize::from(rel) % rel_count[ty])
        }
    };
    for (i, ts) in spec.types.iter().enumerate() {
        let ty = i + 1;
        for (r, list) in ts.relations.iter().enumerate() {
            let allowed: BTreeSet<Allowed> = list.iter().map(|a| resolve(ty, *a)).collect();
            types[ty].relations[r].body = Body::Direct(allowed.into_iter().collect());
        }
    }
    let mut caveated: Caveated = BTreeMap::new();
    for c in &spec.caveated {
        let ty = 1 + usize::from(c.ty) % n;
        let rel = usize::from(c.rel) % spec.types[ty - 1].relations.len();
        caveated
            .entry((ty, rel))
            .or_default()
            .insert((resolve(ty, c.allowed), pick(&Caveat::ALL, c.caveat)));
    }

    // Permissions.
    for (i, ts) in spec.types.iter().enumerate() {
        let ty = i + 1;
        let nrel = ts.relations.len() + usize::from(ts.up);
        for (p, e) in ts.permissions.iter().enumerate() {
            let expr = build_expr(&types, &caveated, ty, nrel + p, e);
            types[ty].relations[nrel + p].body = Body::Permission(expr);
        }
    }
    let mut model = Model { types, caveated };
    stratify(&mut model);

    // Relationships.
    let ids_of = |t: usize| {
        if t == 0 {
            spec.user_ids
        } else {
            spec.types[t - 1].ids
        }
    };
    // Keyed by the relationship without its caveat: a later one replaces an earlier.
    let mut tuples = BTreeMap::new();
    for t in &spec.tuples {
        let ty = 1 + usize::from(t.ty) % n;
        let ts = &spec.types[ty - 1];
        let rel = usize::from(t.rel) % (ts.relations.len() + usize::from(ts.up));
        let allowed = model.allowed(ty, rel);
        if allowed.is_empty() {
            continue;
        }
        let id = usize::from(t.id) % ids_of(ty);
        let (allowed, caveat) = pick(&allowed, t.allowed);
        // Each parameter of the caveat: absent from the relationship's context, -1 or 1.
        let value = |digit: u8| match digit % 3 {
            0 => None,
            1 => Some(-1),
            _ => Some(1),
        };
        let caveat = caveat.map(|caveat| TupleCaveat {
            caveat,
            a: value(t.context).filter(|_| caveat.has_a()),
            b: value(t.context / 3).filter(|_| caveat.has_b()),
        });
        let subject = match allowed {
            Allowed::Object(st) => SubjectRef::Object {
                ty: st,
                id: usize::from(t.subject) % ids_of(st),
            },
            Allowed::Wildcard(st) => SubjectRef::Wildcard { ty: st },
            Allowed::Set(st, srel) => SubjectRef::Set {
                ty: st,
                id: usize::from(t.subject) % ids_of(st),
                rel: srel,
            },
        };
        tuples.insert(
            (ty, id, rel, subject),
            Tuple {
                ty,
                id,
                rel,
                subject,
                caveat,
            },
        );
    }

    let mut ids: Vec<String> = IDS.iter().map(|s| s.to_string()).collect();
    ids.push(NOBODY.into());
    let nobody = ids.len() - 1;
    let pools = (0..=n)
        .map(|t| (0..ids_of(t)).chain([nobody]).collect())
        .collect();
    Case {
        model,
        ids,
        pools,
        tuples: tuples.into_values().collect(),
    }
}

/// The expression of permission `own` (a relation index) of `ty`.
/// The caveated allowed subject types of each relation, as [`Model::caveated`].
type Caveated = BTreeMap<(usize, usize), BTreeSet<(Allowed, Caveat)>>;

fn build_expr(types: &[TypeDef], caveated: &Caveated, ty: usize, own: usize, e: &ExprSpec) -> Expr {
    let b = |e: &ExprSpec| Box::new(build_expr(types, caveated, ty, own, e));
    match e {
        ExprSpec::Nil => Expr::Nil,
        // Relations and earlier permissions, so permissions never name each other in a loop.
        ExprSpec::Ref(sel) => Expr::Rel(usize::from(*sel) % own),
        ExprSpec::Arrow {
            tupleset,
            target,
            kind,
        } => {
            // Arrows walk relations that allow no wildcard and some type with relations.
            let walkable: Vec<(usize, Vec<Allowed>)> = types[ty]
                .relations
                .iter()
                .enumerate()
                .filter_map(|(r, def)| match &def.body {
                    Body::Direct(a) => {
                        let mut all = a.clone();
                        all.extend(caveated.get(&(ty, r)).into_iter().flatten().map(|(x, _)| *x));
                        (!all.iter().any(|x| matches!(x, Allowed::Wildcard(_)))).then_some((r, all))
                    }
                    _ => None,
                })
                .filter(|(_, a)| a.iter().any(|x| subject_type(x) != 0))
                .collect();
            if walkable.is_empty() {
                return Expr::Rel(usize::from(*tupleset) % own);
            }
            let (ts, allowed) = &walkable[usize::from(*tupleset) % walkable.len()];
            let ts = *ts;
            let names: BTreeSet<&str> = allowed
                .iter()
                .flat_map(|a| {
                    types[subject_type(a)]
                        .relations
                        .iter()
                        .map(|r| r.name.as_str())
                })
                .collect();
            let names: Vec<&str> = names.into_iter().collect();
            let kind = [ArrowKind::Arrow, ArrowKind::Any, ArrowKind::All][usize::from(*kind) % 3];
            Expr::Arrow {
                tupleset: ts,
                target: pick(&names, *target).to_string(),
                kind,
            }
        }
        ExprSpec::Union(x, y) => Expr::Union(b(x), b(y)),
        ExprSpec::Intersection(x, y) => Expr::Intersection(b(x), b(y)),
        ExprSpec::Exclusion(x, y) => Expr::Exclusion(b(x), b(y)),
        ExprSpec::Group(x) => Expr::Group(b(x)),
        ExprSpec::Climb(x, kind) => {
            let Some(up) = types[ty].relations.iter().position(|r| r.name == "up") else {
                return build_expr(types, caveated, ty, own, x);
            };
            let kind = [ArrowKind::Arrow, ArrowKind::Any, ArrowKind::All][usize::from(*kind) % 3];
            let climb = Expr::Arrow {
                tupleset: up,
                target: types[ty].relations[own].name.clone(),
                kind,
            };
            Expr::Union(Box::new(Expr::Group(b(x))), Box::new(climb))
        }
    }
}

fn subject_type(a: &Allowed) -> usize {
    match *a {
        Allowed::Object(t) | Allowed::Wildcard(t) | Allowed::Set(t, _) => t,
    }
}

/// Replaces the right side of every exclusion that depends on its own permission with a
/// relation of the type that allows no subject set of the type (and so depends only on
/// lower types), or `nil` if there is none.
fn stratify(model: &mut Model) {
    loop {
        let Some((ty, rel, index)) = first_unstratified_exclusion(model) else {
            return;
        };
        let grounded = (0..model.types[ty].relations.len()).find(|&r| {
            matches!(model.types[ty].relations[r].body, Body::Direct(_))
                && !model
                    .allowed(ty, r)
                    .iter()
                    .any(|(x, _)| matches!(x, Allowed::Set(t, _) if *t == ty))
        });
        let replacement = grounded.map(Expr::Rel).unwrap_or(Expr::Nil);
        if let Body::Permission(e) = &mut model.types[ty].relations[rel].body {
            let mut n = 0;
            if let Some(rhs) = nth_exclusion_rhs(e, index, &mut n) {
                **rhs = replacement;
            }
        }
    }
}

/// Every node reachable from `from` through dependencies, `from` included.
fn reachable(model: &Model, from: (usize, usize)) -> BTreeSet<(usize, usize)> {
    let mut seen = BTreeSet::from([from]);
    let mut stack = vec![from];
    while let Some((t, r)) = stack.pop() {
        for (dep, _) in model.dependencies(t, r) {
            if seen.insert(dep) {
                stack.push(dep);
            }
        }
    }
    seen
}

/// `(type, permission, preorder index of the exclusion)` of the first exclusion whose right
/// side reaches back to its own permission.
fn first_unstratified_exclusion(model: &Model) -> Option<(usize, usize, usize)> {
    for (t, r) in model.nodes() {
        let Body::Permission(e) = &model.types[t].relations[r].body else {
            continue;
        };
        let mut rhs_list = Vec::new();
        collect_exclusion_rhs(e, &mut rhs_list);
        for (index, rhs) in rhs_list.into_iter().enumerate() {
            let mut deps = Vec::new();
            model.expr_dependencies(t, rhs, false, &mut deps);
            if deps
                .iter()
                .any(|(d, _)| reachable(model, *d).contains(&(t, r)))
            {
                return Some((t, r, index));
            }
        }
    }
    None
}

fn collect_exclusion_rhs<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Nil | Expr::Rel(_) | Expr::Arrow { .. } => {}
        Expr::Union(a, b) | Expr::Intersection(a, b) => {
            collect_exclusion_rhs(a, out);
            collect_exclusion_rhs(b, out);
        }
        Expr::Exclusion(a, b) => {
            out.push(b);
            collect_exclusion_rhs(a, out);
            collect_exclusion_rhs(b, out);
        }
        Expr::Group(a) => collect_exclusion_rhs(a, out),
    }
}

/// The right side of the `index`-th exclusion, in the order of [`collect_exclusion_rhs`].
fn nth_exclusion_rhs<'e>(
    e: &'e mut Expr,
    index: usize,
    n: &mut usize,
) -> Option<&'e mut Box<Expr>> {
    match e {
        Expr::Nil | Expr::Rel(_) | Expr::Arrow { .. } => None,
        Expr::Union(a, b) | Expr::Intersection(a, b) => match nth_exclusion_rhs(a, index, n) {
            Some(x) => Some(x),
            None => nth_exclusion_rhs(b, index, n),
        },
        Expr::Exclusion(a, b) => {
            if *n == index {
                return Some(b);
            }
            *n += 1;
            match nth_exclusion_rhs(a, index, n) {
                Some(x) => Some(x),
                None => nth_exclusion_rhs(b, index, n),
            }
        }
        Expr::Group(a) => nth_exclusion_rhs(a, index, n),
    }
}

// ---------------------------------------------------------------------------------------
// Rendering: schema text, relationships, queries and the validation file of a failure.
// ---------------------------------------------------------------------------------------

fn schema_text(model: &Model) -> String {
    let mut out = String::new();
    let used: BTreeSet<Caveat> = model.caveated.values().flatten().map(|(_, c)| *c).collect();
    for c in used {
        out.push_str(&c.definition());
        out.push('\n');
    }
    for (t, def) in model.types.iter().enumerate() {
        if t > 0 {
            out.push('\n');
        }
        if def.relations.is_empty() {
            writeln!(out, "definition {} {{}}", def.name).unwrap();
            continue;
        }
        writeln!(out, "definition {} {{", def.name).unwrap();
        for (r, rel) in def.relations.iter().enumerate() {
            match &rel.body {
                Body::Direct(_) => {
                    let list: Vec<String> = model
                        .allowed(t, r)
                        .iter()
                        .map(|(a, c)| match c {
                            None => allowed_text(model, a),
                            Some(c) => format!("{} with {}", allowed_text(model, a), c.name()),
                        })
                        .collect();
                    writeln!(out, "    relation {}: {}", rel.name, list.join(" | ")).unwrap();
                }
                Body::Permission(e) => {
                    writeln!(
                        out,
                        "    permission {} = {}",
                        rel.name,
                        expr_text(model, t, e)
                    )
                    .unwrap();
                }
            }
        }
        out.push_str("}\n");
    }
    out
}

fn allowed_text(model: &Model, a: &Allowed) -> String {
    match *a {
        Allowed::Object(t) => model.types[t].name.clone(),
        Allowed::Wildcard(t) => format!("{}:*", model.types[t].name),
        Allowed::Set(t, r) => format!(
            "{}#{}",
            model.types[t].name, model.types[t].relations[r].name
        ),
    }
}

/// Binding strength: `-` loosest, then `&`, then `+`; leaves bind tightest.
fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Exclusion(..) => 0,
        Expr::Intersection(..) => 1,
        Expr::Union(..) => 2,
        _ => 3,
    }
}

/// An expression with only the parentheses precedence needs (plus the `Group`s).
fn expr_text(model: &Model, ty: usize, e: &Expr) -> String {
    let binary = |a: &Expr, op: &str, b: &Expr| {
        let level = precedence(e);
        let side = |x: &Expr, right: bool| {
            let text = expr_text(model, ty, x);
            let p = precedence(x);
            if p < level || (right && p == level) {
                format!("({text})")
            } else {
                text
            }
        };
        format!("{} {op} {}", side(a, false), side(b, true))
    };
    match e {
        Expr::Nil => "nil".into(),
        Expr::Rel(r) => model.types[ty].relations[*r].name.clone(),
        Expr::Arrow {
            tupleset,
            target,
            kind,
        } => {
            let ts = &model.types[ty].relations[*tupleset].name;
            match kind {
                ArrowKind::Arrow => format!("{ts}->{target}"),
                ArrowKind::Any => format!("{ts}.any({target})"),
                ArrowKind::All => format!("{ts}.all({target})"),
            }
        }
        Expr::Union(a, b) => binary(a, "+", b),
        Expr::Intersection(a, b) => binary(a, "&", b),
        Expr::Exclusion(a, b) => binary(a, "-", b),
        Expr::Group(a) => format!("({})", expr_text(model, ty, a)),
    }
}

fn tuple_text(case: &Case, t: &Tuple) -> String {
    let mut text = format!(
        "{}#{}@{}",
        object_text(case, t.ty, t.id),
        rel_name(case, t.ty, t.rel),
        subject_ref_text(case, &t.subject)
    );
    if let Some(c) = &t.caveat {
        match context_json(Context { a: c.a, b: c.b }) {
            Some(json) => write!(text, "[{}:{}]", c.caveat.name(), serde_json::Value::Object(json)).unwrap(),
            None => write!(text, "[{}]", c.caveat.name()).unwrap(),
        }
    }
    text
}

/// A context as a JSON object; `None` when it gives nothing.
fn context_json(ctx: Context) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    if let Some(a) = ctx.a {
        map.insert("a".into(), a.into());
    }
    if let Some(b) = ctx.b {
        map.insert("b".into(), b.into());
    }
    (!map.is_empty()).then_some(map)
}

fn subject_ref_text(case: &Case, s: &SubjectRef) -> String {
    match *s {
        SubjectRef::Object { ty, id } => object_text(case, ty, id),
        SubjectRef::Wildcard { ty } => format!("{}:*", case.model.types[ty].name),
        SubjectRef::Set { ty, id, rel } => {
            format!("{}#{}", object_text(case, ty, id), rel_name(case, ty, rel))
        }
    }
}

fn object_text(case: &Case, ty: usize, id: usize) -> String {
    format!("{}:{}", case.model.types[ty].name, case.ids[id])
}

/// The index of the id nobody wrote.
fn nobody(case: &Case) -> usize {
    case.ids
        .iter()
        .position(|x| x == NOBODY)
        .expect("every case has the id nobody wrote")
}

fn rel_name(case: &Case, ty: usize, rel: usize) -> &str {
    &case.model.types[ty].relations[rel].name
}

fn member_text(case: &Case, m: &Member) -> String {
    match m.rel {
        None => object_text(case, m.ty, m.id),
        Some(r) => format!(
            "{}#{}",
            object_text(case, m.ty, m.id),
            rel_name(case, m.ty, r)
        ),
    }
}

/// `t1:a#p0@user:b`
fn query_text(case: &Case, u: Userset, s: &Member) -> String {
    format!(
        "{}#{}@{}",
        object_text(case, u.0, u.1),
        rel_name(case, u.0, u.2),
        member_text(case, s)
    )
}

/// A SpiceDB validation file: the case's schema and relationships, a comment saying what
/// went wrong, and assertions with the reference's answers.
fn validation_yaml(case: &Case, comment: &str, assertions: &[(String, Tri)]) -> String {
    let mut out = String::new();
    for line in comment.lines() {
        writeln!(out, "# {line}").unwrap();
    }
    out.push_str("schema: |-\n");
    for line in schema_text(&case.model).trim_end().lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            writeln!(out, "  {line}").unwrap();
        }
    }
    if !case.tuples.is_empty() {
        out.push_str("relationships: |-\n");
        for t in &case.tuples {
            writeln!(out, "  {}", tuple_text(case, t)).unwrap();
        }
    }
    out.push_str("assertions:\n");
    for (key, want) in [("assertTrue", Tri::Yes), ("assertCaveated", Tri::Maybe), ("assertFalse", Tri::No)] {
        let list: Vec<&String> = assertions
            .iter()
            .filter(|(_, w)| *w == want)
            .map(|(q, _)| q)
            .collect();
        if !list.is_empty() {
            writeln!(out, "  {key}:").unwrap();
            for q in list {
                writeln!(out, "    - '{q}'").unwrap();
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Driving the engine and comparing.
// ---------------------------------------------------------------------------------------

/// What the engine got wrong: a description, and assertions (with the reference's
/// answers) that pin it down.
#[derive(Debug)]
struct Mismatch {
    what: String,
    assertions: Vec<(String, Tri)>,
}

fn load(case: &Case) -> Engine {
    // The depth limit is a resource bound, not semantics; keep it out of the comparison.
    let engine = Engine::in_memory(EngineConfig {
        max_depth: 1000,
        ..EngineConfig::default()
    });
    let schema = schema_text(&case.model);
    if let Err(e) = engine.write_schema(&schema) {
        panic!("the generated schema does not compile: {e}\n{schema}");
    }
    let updates: Vec<RelationshipUpdate> = case
        .tuples
        .iter()
        .map(|t| {
            let text = tuple_text(case, t);
            let relationship =
                parse_relationship(&text).unwrap_or_else(|e| panic!("`{text}`: {e:?}"));
            RelationshipUpdate {
                op: UpdateOp::Touch,
                relationship,
            }
        })
        .collect();
    if !updates.is_empty() {
        if let Err(e) = engine.write(&updates) {
            panic!(
                "the generated relationships were refused: {e}\n{}",
                validation_yaml(case, "", &[])
            );
        }
    }
    engine
}

/// Which subjects to ask about.
fn subjects(case: &Case, cov: Coverage) -> Vec<Member> {
    let mut out = BTreeSet::new();
    for (ty, pool) in case.pools.iter().enumerate() {
        for &id in pool {
            out.insert(Member { ty, id, rel: None });
        }
    }
    for t in &case.tuples {
        if let SubjectRef::Set { ty, id, rel } = t.subject {
            out.insert(Member {
                ty,
                id,
                rel: Some(rel),
            });
        }
    }
    // Sets perhaps nobody wrote: each is a member of itself and of what names it. The
    // first id of a pool, and the id nobody wrote.
    let nobody = nobody(case);
    for (ty, def) in case.model.types.iter().enumerate() {
        for rel in 0..def.relations.len() {
            for id in case.pools[ty].first().into_iter().chain([&nobody]) {
                out.insert(Member {
                    ty,
                    id: *id,
                    rel: Some(rel),
                });
            }
        }
    }
    if !cov.unwritten_ids {
        out.retain(|s| s.rel.is_none() || s.id != nobody);
    }
    out.into_iter().collect()
}

/// Every userset whose members to compare: each relation of each object in the universe.
fn usersets(case: &Case, cov: Coverage) -> Vec<Userset> {
    let nobody = nobody(case);
    let mut out = Vec::new();
    for (ty, def) in case.model.types.iter().enumerate() {
        for &id in case.pools[ty]
            .iter()
            .filter(|&&id| cov.unwritten_ids || id != nobody)
        {
            for rel in 0..def.relations.len() {
                out.push((ty, id, rel));
            }
        }
    }
    out
}

/// The engine's Check under `ctx`: its answer, and for a conditional one the parameters
/// it says are missing.
fn engine_check(engine: &Engine, case: &Case, u: Userset, s: &Member, ctx: Context) -> Result<(Tri, Vec<String>), String> {
    let context = context_json(ctx);
    let resp = engine
        .check(&CheckRequest {
            resource_type: &case.model.types[u.0].name,
            resource_id: &case.ids[u.1],
            permission: rel_name(case, u.0, u.2),
            subject_type: &case.model.types[s.ty].name,
            subject_id: &case.ids[s.id],
            subject_relation: s.rel.map(|r| rel_name(case, s.ty, r)),
            consistency: Consistency::FullyConsistent,
            context: context.as_ref(),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    let answer = match resp.decision {
        Decision::Allowed => Tri::Yes,
        Decision::Conditional => Tri::Maybe,
        _ => Tri::No,
    };
    Ok((answer, resp.missing_context))
}

/// `ctx` with every parameter in `names` set to `value` (names it does not know ignored).
fn supplied(ctx: Context, names: &[String], value: i64) -> Context {
    let mut out = ctx;
    for n in names {
        match n.as_str() {
            "a" => out.a = Some(value),
            "b" => out.b = Some(value),
            _ => {}
        }
    }
    out
}

/// The parameters `ctx` does not give.
fn absent(ctx: Context) -> Vec<String> {
    let mut out = Vec::new();
    if ctx.a.is_none() {
        out.push("a".to_string());
    }
    if ctx.b.is_none() {
        out.push("b".to_string());
    }
    out
}

/// A query with the request context, as validation files write it.
fn with_context(q: String, ctx: Context) -> String {
    match context_json(ctx) {
        Some(json) => format!("{q} with {}", serde_json::Value::Object(json)),
        None => q,
    }
}

/// A lookup result's id, with `?` when it is conditional.
fn marked(id: &str, missing: &[String]) -> String {
    if missing.is_empty() {
        id.to_string()
    } else {
        format!("{id}?")
    }
}

/// LookupResources, all pages concatenated.
fn engine_lookup_resources(
    engine: &Engine,
    case: &Case,
    ty: usize,
    rel: usize,
    s: &Member,
    limit: Option<usize>,
    ctx: Context,
) -> Result<Vec<String>, String> {
    let context = context_json(ctx);
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..=case.ids.len() + 2 {
        let page = engine
            .lookup_resources(&LookupResourcesRequest {
                context: context.as_ref(),
                resource_type: &case.model.types[ty].name,
                permission: rel_name(case, ty, rel),
                subject_type: &case.model.types[s.ty].name,
                subject_id: &case.ids[s.id],
                subject_relation: s.rel.map(|r| rel_name(case, s.ty, r)),
                consistency: Consistency::FullyConsistent,
                cursor: cursor.as_deref(),
                limit,
            })
            .map_err(|e| e.to_string())?;
        if let Some(l) = limit {
            if page.ids().len() > l {
                return Err(format!(
                    "a page of {} ids with limit {l}",
                    page.ids().len()
                ));
            }
        }
        out.extend(page.resources.iter().map(|r| marked(&r.id, &r.missing_context)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
    Err("pagination did not end".into())
}

/// LookupSubjects, all pages concatenated.
fn engine_lookup_subjects(
    engine: &Engine,
    case: &Case,
    u: Userset,
    sub_ty: usize,
    sub_rel: Option<usize>,
    limit: Option<usize>,
    ctx: Context,
) -> Result<Vec<FoundSubject>, String> {
    let context = context_json(ctx);
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..=case.ids.len() + 3 {
        let page = engine
            .lookup_subjects(&LookupSubjectsRequest {
                context: context.as_ref(),
                resource_type: &case.model.types[u.0].name,
                resource_id: &case.ids[u.1],
                permission: rel_name(case, u.0, u.2),
                subject_type: &case.model.types[sub_ty].name,
                subject_relation: sub_rel.map(|r| rel_name(case, sub_ty, r)),
                consistency: Consistency::FullyConsistent,
                cursor: cursor.as_deref(),
                limit,
                written_subject_sets_only: false,
            })
            .map_err(|e| e.to_string())?;
        if let Some(l) = limit {
            if page.subjects.len() > l {
                return Err(format!(
                    "a page of {} subjects with limit {l}",
                    page.subjects.len()
                ));
            }
        }
        out.extend(page.subjects);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
    Err("pagination did not end".into())
}

/// How much of the API to compare.
#[derive(Debug, Clone, Copy)]
struct Coverage {
    lookup_resources: bool,
    lookup_subjects: bool,
    /// Also page through lookups with limits 1 and 2.
    paginate: bool,
    /// Also ask about the id nobody wrote as a resource and in subject sets (objects
    /// with that id are always asked about: they are what wildcards cover).
    unwritten_ids: bool,
}

const EVERYTHING: Coverage = Coverage {
    lookup_resources: true,
    lookup_subjects: true,
    paginate: true,
    unwritten_ids: true,
};

/// Compares the engine with the reference on every check, and on the lookups `cov` asks
/// for, under the request context `ctx` (`m` is the reference's membership under it).
fn compare(case: &Case, engine: &Engine, m: &Membership, cov: Coverage, ctx: Context) -> Result<(), Mismatch> {
    let subjects = subjects(case, cov);
    let usersets = usersets(case, cov);
    for &u in &usersets {
        for s in &subjects {
            let want = m.value(u, *s);
            let q = with_context(query_text(case, u, s), ctx);
            let fail = |what: String| Mismatch { what: format!("Check {q}: {what}"), assertions: vec![(q.clone(), want)] };
            let (got, missing) = engine_check(engine, case, u, s, ctx).map_err(|e| fail(format!("error {e}")))?;
            if got != want {
                return Err(fail(format!("expected {want:?}, got {got:?} (missing {missing:?})")));
            }
            if got != Tri::Maybe {
                if !missing.is_empty() {
                    return Err(fail(format!("a decided answer names missing parameters {missing:?}")));
                }
                continue;
            }
            // A conditional answer names parameters the request did not give, sorted, and
            // enough of them: given those, whatever their values, the answer is decided.
            let absent = absent(ctx);
            if missing.is_empty() || !missing.is_sorted() || missing.iter().any(|n| !absent.contains(n)) {
                return Err(fail(format!("conditional, naming {missing:?} where {absent:?} are absent")));
            }
            for value in [-1, 1] {
                let given = supplied(ctx, &missing, value);
                let (then, _) = engine_check(engine, case, u, s, given).map_err(|e| fail(format!("error {e}")))?;
                if then == Tri::Maybe {
                    return Err(fail(format!("still conditional when {missing:?} are given as {value}")));
                }
            }
        }
    }
    if cov.lookup_resources {
        compare_lookup_resources(case, engine, m, &subjects, cov, ctx)?;
    }
    if cov.lookup_subjects {
        for &u in &usersets {
            compare_lookup_subjects(case, engine, m, u, cov, ctx)?;
        }
    }
    Ok(())
}

fn compare_lookup_resources(
    case: &Case,
    engine: &Engine,
    m: &Membership,
    subjects: &[Member],
    cov: Coverage,
    ctx: Context,
) -> Result<(), Mismatch> {
    for (ty, def) in case.model.types.iter().enumerate() {
        for rel in 0..def.relations.len() {
            for s in subjects {
                let mut want: Vec<String> = case.pools[ty]
                    .iter()
                    .filter_map(|&id| match m.value((ty, id, rel), *s) {
                        Tri::No => None,
                        Tri::Maybe => Some(format!("{}?", case.ids[id])),
                        Tri::Yes => Some(case.ids[id].clone()),
                    })
                    .collect();
                want.sort();
                let limits: &[Option<usize>] = if cov.paginate {
                    &[None, Some(1), Some(2)]
                } else {
                    &[None]
                };
                for &limit in limits {
                    let call = format!(
                        "LookupResources {}#{} for {} (limit {limit:?}, context {ctx:?})",
                        def.name,
                        def.relations[rel].name,
                        member_text(case, s)
                    );
                    let got =
                        engine_lookup_resources(engine, case, ty, rel, s, limit, ctx).map_err(|e| {
                            Mismatch {
                                what: format!("{call}: error {e}"),
                                assertions: Vec::new(),
                            }
                        })?;
                    if got != want {
                        // Pin the difference down as checks on the ids concerned.
                        let mut assertions = Vec::new();
                        for id in want
                            .iter()
                            .filter(|x| !got.contains(x))
                            .chain(got.iter().filter(|x| !want.contains(x)))
                        {
                            let bare = id.trim_end_matches('?');
                            let member = if want.iter().any(|w| w == bare) {
                                Tri::Yes
                            } else if want.iter().any(|w| w.trim_end_matches('?') == bare) {
                                Tri::Maybe
                            } else {
                                Tri::No
                            };
                            let q = format!("{}:{bare}#{}@{}", def.name, def.relations[rel].name, member_text(case, s));
                            assertions.push((with_context(q, ctx), member));
                        }
                        return Err(Mismatch {
                            what: format!("{call}: expected {want:?}, got {got:?}"),
                            assertions,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn compare_lookup_subjects(
    case: &Case,
    engine: &Engine,
    m: &Membership,
    u: Userset,
    cov: Coverage,
    ctx: Context,
) -> Result<(), Mismatch> {
    let res_text = format!(
        "{}#{}",
        object_text(case, u.0, u.1),
        rel_name(case, u.0, u.2)
    );
    let nobody = nobody(case);
    let tri = |missing: &[String]| if missing.is_empty() { Tri::Yes } else { Tri::Maybe };
    for (sub_ty, def) in case.model.types.iter().enumerate() {
        let sub_rels: Vec<Option<usize>> = std::iter::once(None)
            .chain((0..def.relations.len()).map(Some))
            .collect();
        for sub_rel in sub_rels {
            let label = match sub_rel {
                None => def.name.clone(),
                Some(r) => format!("{}#{}", def.name, def.relations[r].name),
            };
            let call = format!("LookupSubjects {res_text} for {label} (context {ctx:?})");
            let got = engine_lookup_subjects(engine, case, u, sub_ty, sub_rel, None, ctx)
                .map_err(|e| Mismatch {
                    what: format!("{call}: error {e}"),
                    assertions: Vec::new(),
                })?;
            // Membership of any id, as the reference sees it; ids outside the pool behave
            // like the id nobody wrote.
            let index_of = |name: &str| {
                case.pools[sub_ty]
                    .iter()
                    .copied()
                    .find(|&i| case.ids[i] == name)
            };
            let expected = |name: &str| {
                let id = index_of(name).unwrap_or(nobody);
                m.value(
                    u,
                    Member {
                        ty: sub_ty,
                        id,
                        rel: sub_rel,
                    },
                )
            };
            let concrete: BTreeMap<&str, Tri> = got
                .iter()
                .filter(|f| f.subject_id != "*")
                .map(|f| (f.subject_id.as_str(), tri(&f.missing_context)))
                .collect();
            let wildcards: Vec<&FoundSubject> =
                got.iter().filter(|f| f.subject_id == "*").collect();
            let mut problems = Vec::new();
            if wildcards.len() > 1 || (sub_rel.is_some() && !wildcards.is_empty()) {
                problems.push(format!("unexpected wildcards {wildcards:?}"));
            }
            // What the wildcard says of each id it names: excluded outright (no), or
            // excluded under a condition (maybe, at most).
            let excluded: BTreeMap<&str, Tri> = wildcards
                .iter()
                .flat_map(|w| w.excluded.iter())
                .map(|e| (e.id.as_str(), if e.missing_context.is_empty() { Tri::No } else { Tri::Maybe }))
                .collect();
            let wildcard = wildcards.first().map_or(Tri::No, |w| tri(&w.missing_context));
            let described = |name: &str| {
                let by_wildcard = match excluded.get(name) {
                    Some(cap) => wildcard.and(*cap),
                    None => wildcard,
                };
                concrete.get(name).copied().unwrap_or(Tri::No).or(by_wildcard)
            };
            let mut names: BTreeSet<&str> = case.pools[sub_ty]
                .iter()
                .map(|&i| case.ids[i].as_str())
                .collect();
            names.extend(concrete.keys().copied());
            names.extend(excluded.keys().copied());
            let mut assertions = Vec::new();
            for name in &names {
                if concrete.contains_key(name) && excluded.get(name) == Some(&Tri::No) {
                    problems.push(format!("`{name}` both listed and excluded"));
                }
                let want = expected(name);
                if described(name) != want {
                    problems.push(format!("`{name}`: expected {want:?}, described as {:?}", described(name)));
                    let s = match sub_rel {
                        None => format!("{}:{name}", def.name),
                        Some(r) => format!("{}:{name}#{}", def.name, def.relations[r].name),
                    };
                    assertions.push((with_context(format!("{res_text}@{s}"), ctx), want));
                }
            }
            // The wildcard stands for every id nobody wrote.
            let nobody_member = m.value(
                u,
                Member {
                    ty: sub_ty,
                    id: nobody,
                    rel: sub_rel,
                },
            );
            if sub_rel.is_none() && wildcard != nobody_member {
                problems.push(format!("wildcard: expected {nobody_member:?}, got {wildcard:?}"));
            }
            if !problems.is_empty() {
                return Err(Mismatch {
                    what: format!("{call}: {} (got {got:?})", problems.join("; ")),
                    assertions,
                });
            }
            if cov.paginate && got.len() >= 2 {
                for limit in [1, 2] {
                    let paged =
                        engine_lookup_subjects(engine, case, u, sub_ty, sub_rel, Some(limit), ctx)
                            .map_err(|e| Mismatch {
                                what: format!("{call} (limit {limit}): error {e}"),
                                assertions: Vec::new(),
                            })?;
                    if paged != got {
                        return Err(Mismatch {
                            what: format!(
                                "{call}: pages of {limit} give {paged:?}, one page gives {got:?}"
                            ),
                            assertions: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs the whole comparison on a case, with no request context; a failure carries the
/// validation file.
fn run(case: &Case, cov: Coverage) -> Result<(), String> {
    run_in(case, cov, &[Context::default()])
}

/// Runs the whole comparison on a case under each request context.
fn run_in(case: &Case, cov: Coverage, contexts: &[Context]) -> Result<(), String> {
    let engine = load(case);
    for &ctx in contexts {
        let m = case.evaluate_in(ctx);
        compare(case, &engine, &m, cov, ctx).map_err(|mm| {
            let comment = format!(
                "Differential test: engine and reference disagree.\n{}",
                mm.what
            );
            validation_yaml(case, &comment, &mm.assertions)
        })?;
    }
    Ok(())
}

/// Every request context over `a` and `b`: each absent, -1 or 1.
fn all_contexts() -> Vec<Context> {
    let values = [None, Some(-1), Some(1)];
    values.iter().flat_map(|&a| values.iter().map(move |&b| Context { a, b })).collect()
}

// ---------------------------------------------------------------------------------------
// The properties.
// ---------------------------------------------------------------------------------------

/// `cases` cases, unless `PROPTEST_CASES` asks for another number (for longer hunts).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        // A failing case shrinks for at most a minute, so `make test` stays bounded.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// Check on every (resource, relation, subject) of the universe.
    #[test]
    fn check_agrees_with_reference(spec in spec()) {
        let case = build(&spec);
        let cov = Coverage { lookup_resources: false, lookup_subjects: false, paginate: false, ..EVERYTHING };
        if let Err(yaml) = run(&case, cov) {
            return Err(TestCaseError::fail(format!("\n{yaml}")));
        }
    }
}

proptest! {
    #![proptest_config(config(250))]

    /// Caveated relationships: Check under every request context (each parameter given
    /// as -1 or 1, or absent), answers three-valued.
    #[test]
    fn caveated_checks_agree_with_reference(spec in caveat_spec()) {
        let case = build(&spec);
        let cov = Coverage { lookup_resources: false, lookup_subjects: false, paginate: false, ..EVERYTHING };
        if let Err(yaml) = run_in(&case, cov, &all_contexts()) {
            return Err(TestCaseError::fail(format!("\n{yaml}")));
        }
    }
}

proptest! {
    #![proptest_config(config(100))]

    /// Caveated relationships: Check, LookupResources and LookupSubjects under a full, a
    /// partial and an empty request context.
    #[test]
    fn caveated_lookups_agree_with_reference(spec in caveat_spec(), a in prop::option::of(prop_oneof![Just(-1i64), Just(1)])) {
        let case = build(&spec);
        let contexts = [Context { a: Some(1), b: Some(-1) }, Context { a, b: None }, Context::default()];
        if let Err(yaml) = run_in(&case, EVERYTHING, &contexts) {
            return Err(TestCaseError::fail(format!("\n{yaml}")));
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// Check, LookupResources and LookupSubjects, with pagination.
    #[test]
    fn lookups_agree_with_reference(spec in spec()) {
        let case = build(&spec);
        if let Err(yaml) = run(&case, EVERYTHING) {
            return Err(TestCaseError::fail(format!("\n{yaml}")));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Known tricky cases, as fixtures: schema text, relationships and assertions, checked
// against the reference and the engine, then the full comparison on the same data.
// ---------------------------------------------------------------------------------------

/// A case from schema text and relationship lines (the schema is compiled by the system
/// under test, but the fixture's assertions pin the answers independently).
fn fixture_case(schema: &str, relationships: &[&str]) -> Case {
    let compiled = compile(schema).unwrap_or_else(|e| panic!("fixture schema: {e}"));
    let types = compiled
        .definitions
        .iter()
        .map(|d| TypeDef {
            name: d.name.clone(),
            relations: d
                .relations
                .iter()
                .map(|r| RelationDef {
                    name: r.name.clone(),
                    body: match &r.kind {
                        RelationKind::Direct(allowed) => Body::Direct(
                            allowed
                                .iter()
                                .map(|a| {
                                    let t = usize::from(a.type_id);
                                    match a.kind {
                                        AllowedKind::Object => Allowed::Object(t),
                                        AllowedKind::Wildcard => Allowed::Wildcard(t),
                                        AllowedKind::SubjectSet(r) => {
                                            Allowed::Set(t, usize::from(r))
                                        }
                                    }
                                })
                                .collect(),
                        ),
                        RelationKind::Permission(rw) => Body::Permission(expr_of(rw)),
                    },
                })
                .collect(),
        })
        .collect();
    let mut case = Case {
        model: Model { types, caveated: BTreeMap::new() },
        ids: Vec::new(),
        pools: Vec::new(),
        tuples: Vec::new(),
    };
    let mut pools: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); case.model.types.len()];
    for line in relationships {
        let r = parse_relationship(line).unwrap_or_else(|e| panic!("`{line}`: {e:?}"));
        let ty = type_index(&case.model, &r.resource.object_type);
        let id = intern(&mut case.ids, &r.resource.object_id);
        pools[ty].insert(id);
        let rel = case
            .model
            .relation_named(ty, &r.relation)
            .unwrap_or_else(|| panic!("`{line}`: relation"));
        let sty = type_index(&case.model, &r.subject.object.object_type);
        let subject = if r.subject.object.object_id == "*" {
            SubjectRef::Wildcard { ty: sty }
        } else {
            let sid = intern(&mut case.ids, &r.subject.object.object_id);
            pools[sty].insert(sid);
            match &r.subject.relation {
                None => SubjectRef::Object { ty: sty, id: sid },
                Some(name) => SubjectRef::Set {
                    ty: sty,
                    id: sid,
                    rel: case
                        .model
                        .relation_named(sty, name)
                        .unwrap_or_else(|| panic!("`{line}`: subject relation")),
                },
            }
        };
        case.tuples.push(Tuple {
            ty,
            id,
            rel,
            subject,
            caveat: None,
        });
    }
    let nobody = intern(&mut case.ids, NOBODY);
    case.pools = pools
        .into_iter()
        .map(|p| p.into_iter().chain([nobody]).collect())
        .collect();
    case
}

fn expr_of(rw: &Rewrite) -> Expr {
    let fold = |items: &[Rewrite], make: fn(Box<Expr>, Box<Expr>) -> Expr| {
        let mut it = items.iter().map(expr_of);
        let first = it.next().unwrap_or(Expr::Nil);
        it.fold(first, |acc, x| make(Box::new(acc), Box::new(x)))
    };
    match rw {
        Rewrite::Nil => Expr::Nil,
        Rewrite::Computed(r) => Expr::Rel(usize::from(*r)),
        Rewrite::Arrow(a) => Expr::Arrow {
            tupleset: usize::from(a.tupleset),
            target: a.computed.clone(),
            kind: match a.kind {
                arbiter_schema::ArrowKind::Any => ArrowKind::Arrow,
                arbiter_schema::ArrowKind::AnyFunction => ArrowKind::Any,
                arbiter_schema::ArrowKind::All => ArrowKind::All,
            },
        },
        Rewrite::Union(items) => fold(items, Expr::Union),
        Rewrite::Intersection(items) => fold(items, Expr::Intersection),
        Rewrite::Exclusion(a, b) => Expr::Exclusion(Box::new(expr_of(a)), Box::new(expr_of(b))),
    }
}

fn type_index(model: &Model, name: &str) -> usize {
    model
        .types
        .iter()
        .position(|t| t.name == name)
        .unwrap_or_else(|| panic!("unknown type `{name}`"))
}

fn intern(ids: &mut Vec<String>, id: &str) -> usize {
    match ids.iter().position(|x| x == id) {
        Some(i) => i,
        None => {
            ids.push(id.to_string());
            ids.len() - 1
        }
    }
}

/// Asserts each `resource#relation@subject` query against the reference and the engine,
/// then runs the full comparison.
fn check_fixture(schema: &str, relationships: &[&str], expectations: &[(&str, bool)]) {
    let case = fixture_case(schema, relationships);
    let engine = load(&case);
    let m = case.evaluate();
    let nobody = nobody(&case);
    // Ids the fixture's relationships never name are the id nobody wrote to the reference.
    let id_of = |ty: usize, name: &str| {
        case.pools[ty]
            .iter()
            .copied()
            .find(|&i| case.ids[i] == name)
            .unwrap_or(nobody)
    };
    for &(q, want) in expectations {
        let r = parse_relationship(q).unwrap_or_else(|e| panic!("`{q}`: {e:?}"));
        let ty = type_index(&case.model, &r.resource.object_type);
        let rel = case.model.relation_named(ty, &r.relation).unwrap();
        let sty = type_index(&case.model, &r.subject.object.object_type);
        let srel = r
            .subject
            .relation
            .as_deref()
            .map(|n| case.model.relation_named(sty, n).unwrap());
        let subject = Member {
            ty: sty,
            id: id_of(sty, &r.subject.object.object_id),
            rel: srel,
        };
        let reference = m.contains((ty, id_of(ty, &r.resource.object_id), rel), subject);
        assert_eq!(reference, want, "reference on `{q}`");
        let got = engine
            .check(&CheckRequest {
                resource_type: &r.resource.object_type,
                resource_id: &r.resource.object_id,
                permission: &r.relation,
                subject_type: &r.subject.object.object_type,
                subject_id: &r.subject.object.object_id,
                subject_relation: r.subject.relation.as_deref(),
                consistency: Consistency::FullyConsistent,
                context: None,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.decision == Decision::Allowed, want, "engine on `{q}`");
    }
    // Then everything else about the fixture's data. Unwritten resources and subject sets
    // are the properties' business (and `subject_set_of_an_unwritten_resource`'s).
    if let Err(yaml) = run(
        &case,
        Coverage {
            unwritten_ids: false,
            ..EVERYTHING
        },
    ) {
        panic!("{yaml}");
    }
}

#[test]
fn cycle_through_union_is_false() {
    check_fixture(
        "definition user {}
         definition group {
             relation member: user | group#member
         }
         definition folder {
             relation parent: folder
             relation viewer: user | group#member
             permission view = parent->view + viewer
         }",
        &[
            "group:g1#member@group:g2#member",
            "group:g2#member@group:g1#member",
            "folder:f1#parent@folder:f2",
            "folder:f2#parent@folder:f1",
            "folder:f1#viewer@group:g1#member",
            "folder:f3#viewer@user:tom",
        ],
        &[
            ("folder:f1#view@user:tom", false),
            ("folder:f2#view@user:tom", false),
            ("group:g1#member@user:tom", false),
            ("folder:f2#view@group:g2#member", true),
            ("folder:f3#view@user:tom", true),
        ],
    );
}

#[test]
fn cycle_true_via_far_branch() {
    // From f1, the loop f1 -> f2 -> f3 -> f1 is walked first; the answer is found only at
    // f3's viewer, after f2 and f3 have each met the loop's start in progress.
    check_fixture(
        "definition user {}
         definition folder {
             relation parent: folder
             relation viewer: user
             permission view = parent->view + viewer
             permission both = view & parent->view
         }",
        &[
            "folder:f1#parent@folder:f2",
            "folder:f2#parent@folder:f3",
            "folder:f2#parent@folder:f1",
            "folder:f3#parent@folder:f1",
            "folder:f3#viewer@user:tom",
        ],
        &[
            ("folder:f1#view@user:tom", true),
            ("folder:f2#view@user:tom", true),
            ("folder:f3#view@user:tom", true),
            ("folder:f1#both@user:tom", true),
            ("folder:f1#view@user:ann", false),
        ],
    );
}

#[test]
fn all_over_empty_tupleset_is_false() {
    check_fixture(
        "definition user {}
         definition team {
             relation member: user
         }
         definition doc {
             relation team: team
             relation viewer: user | user:*
             permission every_team = team.all(member)
             permission any_team = team.any(member)
             permission view = viewer - team.all(member)
         }",
        &[
            "doc:empty#viewer@user:*",
            "doc:one#team@team:t1",
            "doc:two#team@team:t1",
            "doc:two#team@team:t2",
            "team:t1#member@user:tom",
        ],
        &[
            ("doc:empty#every_team@user:tom", false),
            ("doc:empty#any_team@user:tom", false),
            ("doc:empty#view@user:tom", true),
            ("doc:one#every_team@user:tom", true),
            ("doc:two#every_team@user:tom", false),
            ("doc:two#any_team@user:tom", true),
        ],
    );
}

#[test]
fn wildcard_minus_exclusion() {
    check_fixture(
        "definition user {}
         definition group {
             relation member: user
         }
         definition doc {
             relation viewer: user:* | group#member
             relation banned: user | group#member
             permission view = viewer - banned
         }",
        &[
            "doc:d#viewer@user:*",
            "doc:d#banned@user:mallory",
            "doc:d#banned@group:bad#member",
            "group:bad#member@user:eve",
            "doc:e#viewer@group:good#member",
            "group:good#member@user:ann",
        ],
        &[
            ("doc:d#view@user:anyone", true),
            ("doc:d#view@user:mallory", false),
            ("doc:d#view@user:eve", false),
            ("doc:d#view@group:bad#member", false),
            ("doc:d#viewer@group:bad#member", false),
            ("doc:e#view@group:good#member", true),
            ("doc:e#view@user:ann", true),
        ],
    );
}

#[test]
fn memo_of_permission_in_progress_at_same_depth() {
    // `b` is entered at the same depth as `a` (a computed reference adds no hop), leans on
    // `a` in progress through the parent loop, and must not be remembered as false: `a`
    // turns out true through `viewer`, and with it `b`.
    check_fixture(
        "definition user {}
         definition doc {
             relation parent: doc
             relation viewer: user
             permission b = parent->a
             permission a = b + viewer
             permission top = a & b
         }",
        &[
            "doc:1#parent@doc:2",
            "doc:2#parent@doc:1",
            "doc:1#viewer@user:tom",
        ],
        &[
            ("doc:1#a@user:tom", true),
            ("doc:1#b@user:tom", true),
            ("doc:2#a@user:tom", true),
            ("doc:1#top@user:tom", true),
            ("doc:2#top@user:tom", true),
        ],
    );
}

#[test]
fn no_from_a_cycle_is_dropped_when_an_inner_frame_turns_yes() {
    // `doc:b#view` meets both `doc:a#view` and `doc:a#ok` in progress; `doc:a#ok` then
    // turns out "yes", so the "no" found for `doc:b#view` on the way must not be kept.
    // (tests/corpus/differential/provisional_no_after_inner_frame_yes.yaml)
    check_fixture(
        "definition user {}
         definition doc {
             relation parent: doc
             relation viewer: user
             permission view = parent.all(ok) + parent->view
             permission ok = viewer & (view + viewer)
         }",
        &[
            "doc:a#parent@doc:a",
            "doc:a#parent@doc:b",
            "doc:b#parent@doc:a",
            "doc:a#viewer@user:tom",
        ],
        &[
            ("doc:a#ok@user:tom", true),
            ("doc:b#ok@user:tom", false),
            ("doc:b#view@user:tom", true),
            ("doc:a#view@user:tom", true),
        ],
    );
}

#[test]
fn subject_set_of_an_unwritten_resource() {
    // A subject set is a member of itself, and so of what a permission computes from it,
    // whether or not any relationship names its object.
    // (tests/corpus/differential/unwritten_resource_subject_set.yaml)
    check_fixture(
        "definition user {}
         definition doc {
             relation viewer: user
             permission view = viewer
         }",
        &["doc:1#viewer@user:tom"],
        &[
            ("doc:1#view@doc:1#viewer", true),
            ("doc:viewer#view@doc:viewer#viewer", true),
            ("doc:unwritten#view@doc:unwritten#viewer", true),
            ("doc:unwritten#view@doc:unwritten#view", true),
        ],
    );
}

/// The generator's schemas compile and are stratified, the engine accepts its
/// relationships, and it reaches every construct often enough to matter.
#[test]
fn generated_cases_load_and_cover_the_constructs() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let total = 300;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..total {
        let spec = spec().new_tree(&mut runner).unwrap().current();
        let case = build(&spec);
        assert!(case.model.strata().is_ok(), "{}", schema_text(&case.model));
        load(&case);
        let text = schema_text(&case.model);
        let m = case.evaluate();
        let edges: BTreeSet<((usize, usize), (usize, usize))> = case
            .tuples
            .iter()
            .filter_map(|t| match t.subject {
                SubjectRef::Object { ty, id } | SubjectRef::Set { ty, id, .. } => {
                    Some(((t.ty, t.id), (ty, id)))
                }
                SubjectRef::Wildcard { .. } => None,
            })
            .collect();
        let features = [
            ("exclusion", text.contains(" - ")),
            ("intersection", text.contains(" & ")),
            ("arrow", text.contains("->") || text.contains(".any(")),
            ("all", text.contains(".all(")),
            ("nil", text.contains("nil")),
            ("parentheses", text.contains('(')),
            (
                "wildcard relationship",
                case.tuples
                    .iter()
                    .any(|t| matches!(t.subject, SubjectRef::Wildcard { .. })),
            ),
            (
                "subject set relationship",
                case.tuples
                    .iter()
                    .any(|t| matches!(t.subject, SubjectRef::Set { .. })),
            ),
            (
                "cycle in the data",
                edges.iter().any(|&(from, _)| reaches(&edges, from, from)),
            ),
            // Some permission has a member other than itself.
            (
                "non-trivial permission member",
                usersets(&case, EVERYTHING).into_iter().any(|u| {
                    matches!(
                        case.model.types[u.0].relations[u.2].body,
                        Body::Permission(_)
                    ) && subjects(&case, EVERYTHING).iter().any(|s| {
                        m.contains(u, *s)
                            && *s
                                != Member {
                                    ty: u.0,
                                    id: u.1,
                                    rel: Some(u.2),
                                }
                    })
                }),
            ),
        ];
        for (name, present) in features {
            *seen.entry(name).or_default() += usize::from(present);
        }
    }
    for (name, count) in &seen {
        assert!(
            count * 4 >= total,
            "only {count} of {total} generated cases have: {name} ({seen:?})"
        );
    }
}

#[test]
fn generated_caveat_cases_load_and_cover_the_constructs() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let total = 200;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..total {
        let spec = caveat_spec().new_tree(&mut runner).unwrap().current();
        let case = build(&spec);
        load(&case);
        let caveated: Vec<&Tuple> = case.tuples.iter().filter(|t| t.caveat.is_some()).collect();
        let m = case.evaluate_in(Context::default());
        let conditional = usersets(&case, EVERYTHING)
            .into_iter()
            .any(|u| subjects(&case, EVERYTHING).iter().any(|s| m.value(u, *s) == Tri::Maybe));
        let features = [
            ("caveated relationship", !caveated.is_empty()),
            ("caveated subject set", caveated.iter().any(|t| matches!(t.subject, SubjectRef::Set { .. }))),
            ("caveated wildcard", caveated.iter().any(|t| matches!(t.subject, SubjectRef::Wildcard { .. }))),
            ("relationship context", caveated.iter().any(|t| t.caveat.is_some_and(|c| c.a.is_some() || c.b.is_some()))),
            ("conditional answer", conditional),
        ];
        for (name, present) in features {
            *seen.entry(name).or_default() += usize::from(present);
        }
    }
    for (name, count) in &seen {
        assert!(count * 8 >= total, "only {count} of {total} generated caveat cases have: {name} ({seen:?})");
    }
}

/// Whether `to` can be reached from `from` in one or more steps.
type Node = (usize, usize);

fn reaches(edges: &BTreeSet<(Node, Node)>, from: Node, to: Node) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(x) = stack.pop() {
        for &(_, b) in edges.iter().filter(|(a, _)| *a == x) {
            if b == to {
                return true;
            }
            if seen.insert(b) {
                stack.push(b);
            }
        }
    }
    false
}
