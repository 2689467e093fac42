//! Differential test of the Cedar side of Check: for random graphs, attribute values
//! and labels under a fixed policy set, Arbiter's decision (entities built per request
//! from the graph, only what a policy can reach) equals the combination rule applied to
//! Cedar's own `Authorizer` run on every entity fully materialised, the way a
//! cedar-agent user would:
//!
//! ```text
//! allowed = (graph || a permit is satisfied) && no forbid is satisfied or errors
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail loudly by design")]

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use arbiter_engine::*;
use arbiter_schema::parse_relationship;
use cedar_policy as cedar;
use serde_json::{json, Map, Value};

const SCHEMA: &str = r#"
definition user {}
definition team {
    relation member: user | team#member
}
definition folder {
    relation parent: folder
    relation viewer: user | team#member
    permission view = viewer + parent->view
}
definition doc {
    relation parent: folder
    relation owner: user
    relation viewer: user | team#member
    permission edit = owner
    permission view = viewer + edit + parent->view
}
"#;

const POLICIES: &str = r#"
@id("research-folder")
permit(principal is user, action == Action::"view", resource)
when { resource in folder::"f0" && principal has department && principal.department == "research" };

@id("public-in-team")
permit(principal, action == Action::"view", resource is doc)
when { principal in team::"t0" && resource has public && resource.public };

@id("suspended")
forbid(principal is user, action, resource) when { principal has suspended && principal.suspended };

@id("mls")
forbid(principal, action, resource is doc) unless { principal.label_level >= resource.label_level };

@id("nato-edit")
forbid(principal, action == Action::"edit", resource)
when { resource.labels.contains(arbiter::Label::"nato") && !principal.labels.contains(arbiter::Label::"nato") };

@id("dominance")
forbid(principal, action == Action::"view", resource is doc)
when { resource has public && !resource.public && resource.label_level > 2 }
unless { resource in principal.labels };
"#;

const LABELS: &[(&str, i64, Option<&str>)] =
    &[("top_secret", 4, None), ("secret", 3, Some("top_secret")), ("confidential", 2, Some("secret")), ("nato", 1, None)];

/// splitmix64: a small seeded generator, so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An object's attribute values and labels.
type ValuesAndLabels = (Map<String, Value>, Vec<String>);

struct World {
    relationships: Vec<String>,
    /// `(type, id)` -> (values, labels)
    attributes: BTreeMap<(String, String), ValuesAndLabels>,
}

fn world(seed: u64) -> World {
    let mut rng = Rng(seed);
    let (users, teams, folders, docs) = (12, 5, 6, 14);
    let mut rels = BTreeSet::new();
    for t in 1..teams {
        if rng.chance(60) {
            rels.insert(format!("team:t{}#member@team:t{t}#member", rng.below(t)));
        }
    }
    for u in 0..users {
        for t in 0..teams {
            if rng.chance(25) {
                rels.insert(format!("team:t{t}#member@user:u{u}"));
            }
        }
    }
    for f in 1..folders {
        rels.insert(format!("folder:f{f}#parent@folder:f{}", rng.below(f)));
    }
    for f in 0..folders {
        if rng.chance(30) {
            rels.insert(format!("folder:f{f}#viewer@team:t{}#member", rng.below(teams)));
        }
    }
    for d in 0..docs {
        if rng.chance(80) {
            rels.insert(format!("doc:d{d}#parent@folder:f{}", rng.below(folders)));
        }
        if rng.chance(30) {
            rels.insert(format!("doc:d{d}#owner@user:u{}", rng.below(users)));
        }
        if rng.chance(40) {
            rels.insert(format!("doc:d{d}#viewer@user:u{}", rng.below(users)));
        }
        if rng.chance(20) {
            rels.insert(format!("doc:d{d}#viewer@team:t{}#member", rng.below(teams)));
        }
    }
    let label_names: Vec<&str> = LABELS.iter().map(|l| l.0).collect();
    let pick_labels = |rng: &mut Rng| -> Vec<String> {
        let mut out: Vec<String> =
            label_names.iter().filter(|_| rng.chance(20)).map(|l| l.to_string()).collect();
        out.sort();
        out
    };
    let mut attributes = BTreeMap::new();
    for u in 0..users {
        if rng.chance(80) {
            let mut v = Map::new();
            if rng.chance(50) {
                v.insert("department".into(), json!(["research", "sales", "ops"][rng.below(3) as usize]));
            }
            if rng.chance(30) {
                v.insert("suspended".into(), json!(rng.chance(40)));
            }
            let l = pick_labels(&mut rng);
            attributes.insert(("user".to_string(), format!("u{u}")), (v, l));
        }
    }
    for d in 0..docs {
        if rng.chance(80) {
            let mut v = Map::new();
            if rng.chance(60) {
                v.insert("public".into(), json!(rng.chance(50)));
            }
            let l = pick_labels(&mut rng);
            attributes.insert(("doc".to_string(), format!("d{d}")), (v, l));
        }
    }
    World { relationships: rels.into_iter().collect(), attributes }
}

fn declarations() -> AttributeDecls {
    let opt = |ty| AttrDecl::stored(ty, false);
    let mut d = AttributeDecls::default();
    d.types.insert(
        "user".into(),
        BTreeMap::from([("department".to_string(), opt(AttrType::String)), ("suspended".to_string(), opt(AttrType::Bool))]),
    );
    d.types.insert("doc".into(), BTreeMap::from([("public".to_string(), opt(AttrType::Bool))]));
    d
}

fn engine_for(w: &World, with_policies: bool) -> Engine {
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(SCHEMA).unwrap();
    let updates: Vec<RelationshipUpdate> = w
        .relationships
        .iter()
        .map(|r| RelationshipUpdate { op: UpdateOp::Touch, relationship: parse_relationship(r).unwrap() })
        .collect();
    e.write(&updates).unwrap();
    if with_policies {
        e.write_policy_model(PolicyModel {
            policies: split_policies("differential.cedar", POLICIES).unwrap(),
            declarations: declarations(),
            labels: LABELS.iter().map(|(n, l, p)| (n.to_string(), LabelDef { level: *l, parents: p.iter().map(|p| p.to_string()).collect() })).collect(),
        })
        .unwrap();
        let updates = w
            .attributes
            .iter()
            .map(|((t, i), (v, l))| AttributeUpdate {
                object_type: t.clone(),
                object_id: i.clone(),
                attributes: Some(ObjectAttributes { values: v.clone(), labels: l.clone() }),
            })
            .collect();
        e.write_attributes(updates).unwrap();
    }
    e
}

/// Every object and label as Cedar entities, parents straight from the relationships:
/// members are in their teams (`team:a#member@team:b#member` puts b in a), documents
/// and folders in their parent folders, labelled objects in their labels, labels in
/// their parents.
fn all_entities(w: &World) -> cedar::Entities {
    let mut parents: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    let mut objects: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &w.relationships {
        let r = parse_relationship(r).unwrap();
        let res = (r.resource.object_type.clone(), r.resource.object_id.clone());
        let sub = (r.subject.object.object_type.clone(), r.subject.object.object_id.clone());
        objects.insert(res.clone());
        objects.insert(sub.clone());
        match r.relation.as_str() {
            "member" => {
                parents.entry(sub).or_default().insert(res);
            }
            "parent" => {
                parents.entry(res).or_default().insert(sub);
            }
            _ => {}
        }
    }
    objects.extend(w.attributes.keys().cloned());
    // Every user and document exists, related or not.
    objects.extend((0..12).map(|u| ("user".to_string(), format!("u{u}"))));
    objects.extend((0..14).map(|d| ("doc".to_string(), format!("d{d}"))));
    let level: BTreeMap<&str, i64> = LABELS.iter().map(|(n, l, _)| (*n, *l)).collect();
    let mut out = Vec::new();
    for o in &objects {
        let (mut values, labels) = w.attributes.get(o).cloned().unwrap_or_default();
        let max = labels.iter().map(|l| level[l.as_str()]).max().unwrap_or(0);
        values.insert("label_level".into(), json!(max));
        values.insert(
            "labels".into(),
            Value::Array(labels.iter().map(|l| json!({"__entity": {"type": "arbiter::Label", "id": l}})).collect()),
        );
        let mut ps: Vec<Value> = parents
            .get(o)
            .into_iter()
            .flatten()
            .map(|(t, i)| json!({"type": t, "id": i}))
            .collect();
        ps.extend(labels.iter().map(|l| json!({"type": "arbiter::Label", "id": l})));
        out.push(json!({"uid": {"type": o.0, "id": o.1}, "attrs": values, "parents": ps}));
    }
    for (n, l, p) in LABELS {
        let ps: Vec<Value> = p.iter().map(|p| json!({"type": "arbiter::Label", "id": p})).collect();
        out.push(json!({"uid": {"type": "arbiter::Label", "id": n}, "attrs": {"level": l}, "parents": ps}));
    }
    cedar::Entities::from_json_value(Value::Array(out), None).unwrap()
}

fn uid(t: &str, i: &str) -> cedar::EntityUid {
    cedar::EntityUid::from_type_name_and_id(cedar::EntityTypeName::from_str(t).unwrap(), cedar::EntityId::new(i))
}

fn check(e: &Engine, doc: &str, action: &str, user: &str) -> bool {
    e.check(&CheckRequest {
        resource_type: "doc",
        resource_id: doc,
        permission: action,
        subject_type: "user",
        subject_id: user,
        consistency: Consistency::FullyConsistent,
        ..CheckRequest::default()
    })
    .unwrap()
    .decision
        == Decision::Allowed
}

#[test]
fn arbiter_agrees_with_cedar_on_fully_materialised_entities() {
    let set = cedar::PolicySet::from_str(POLICIES).unwrap();
    let forbids: BTreeSet<String> =
        set.policies().filter(|p| p.effect() == cedar::Effect::Forbid).map(|p| p.annotation("id").unwrap().to_string()).collect();
    let ids: BTreeMap<String, String> =
        set.policies().map(|p| (p.id().to_string(), p.annotation("id").unwrap().to_string())).collect();
    let mut compared = 0;
    let mut changed_by_cedar = 0;
    for seed in 0..12u64 {
        let w = world(seed);
        let graph_only = engine_for(&w, false);
        let arbiter = engine_for(&w, true);
        let entities = all_entities(&w);
        for d in 0..14 {
            for u in 0..12 {
                for action in ["view", "edit"] {
                    let (doc, user) = (format!("d{d}"), format!("u{u}"));
                    let graph = check(&graph_only, &doc, action, &user);
                    let request = cedar::Request::new(
                        uid("user", &user),
                        uid("Action", action),
                        uid("doc", &doc),
                        cedar::Context::empty(),
                        None,
                    )
                    .unwrap();
                    let response = cedar::Authorizer::new().is_authorized(&request, &set, &entities);
                    let satisfied: Vec<&String> = response.diagnostics().reason().map(|id| &ids[&id.to_string()]).collect();
                    let erroring: Vec<String> = response
                        .diagnostics()
                        .errors()
                        .map(|e| {
                            let cedar::AuthorizationError::PolicyEvaluationError(pe) = e;
                            ids[&pe.policy_id().to_string()].clone()
                        })
                        .collect();
                    let permit = satisfied.iter().any(|id| !forbids.contains(*id));
                    let forbid = satisfied.iter().any(|id| forbids.contains(*id)) || erroring.iter().any(|id| forbids.contains(id));
                    let expected = (graph || permit) && !forbid;
                    let got = check(&arbiter, &doc, action, &user);
                    assert_eq!(
                        got, expected,
                        "seed {seed}: doc:{doc}#{action}@user:{user}: graph {graph}, satisfied {satisfied:?}, erroring {erroring:?}"
                    );
                    compared += 1;
                    changed_by_cedar += usize::from(graph != got);
                }
            }
        }
    }
    assert_eq!(compared, 12 * 14 * 12 * 2);
    assert!(changed_by_cedar > 20, "the policies should change some decisions, changed {changed_by_cedar}");
}
