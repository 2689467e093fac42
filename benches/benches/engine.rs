//! In-process engine benchmarks: Check shapes, LookupResources, writes.
//! Run with `cargo bench -p arbiter-benches --bench engine`.

use std::hint::black_box;

use arbiter_benches::{filed_updates, viewer_updates, Org};
use arbiter_benches::cedar_fixture::{attrs, label_policy, more_policies, policy_model, LABELS};
use arbiter_engine::{AttributeUpdate, CheckRequest, Consistency, Decision, Engine, EngineConfig, LookupResourcesRequest};
use serde_json::json;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn req<'a>(resource: &'a str, permission: &'a str, subject: &'a str) -> CheckRequest<'a> {
    let (rt, rid) = resource.split_once(':').unwrap_or((resource, ""));
    let (st, sid) = subject.split_once(':').unwrap_or((subject, ""));
    CheckRequest {
        resource_type: rt,
        resource_id: rid,
        permission,
        subject_type: st,
        subject_id: sid,
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        context: None,
        ..Default::default()
    }
}

fn bench_check(
    c: &mut Criterion,
    engine: &Engine,
    name: &str,
    q: CheckRequest<'_>,
    expect: Decision,
) {
    let got = engine.check(&q).map(|r| r.decision);
    assert_eq!(got, Ok(expect), "{name}: the benchmark's premise is wrong");
    c.bench_function(name, |b| b.iter(|| black_box(engine.check(black_box(&q)))));
}

fn checks(c: &mut Criterion) {
    let org = match Org::build(10_000, 100) {
        Ok(o) => o,
        Err(e) => return eprintln!("cannot build the org: {e}"),
    };
    let e = &org.engine;
    use Decision::{Allowed, Denied};
    bench_check(
        c,
        e,
        "check/direct relation",
        req("doc:d42", "viewer", "user:u297"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/direct via permission",
        req("doc:d42", "view", "user:u297"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/nested teams 6 deep",
        req("folder:f3_0", "view", "user:member3"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/folder arrows 8 deep + teams 6 deep, allowed",
        req("doc:d42", "view", "user:member2"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/folder arrows 8 deep + teams 6 deep, denied",
        req("doc:d42", "view", "user:nobody"),
        Denied,
    );
    bench_check(
        c,
        e,
        "check/exclusion, banned",
        req("doc:d0", "view", "user:u0"),
        Denied,
    );
    bench_check(
        c,
        e,
        "check/exclusion, not banned",
        req("doc:d1", "view", "user:u1"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/wildcard",
        req("doc:public", "view", "user:anyone"),
        Allowed,
    );

    caveated_checks(c);

    let lr = LookupResourcesRequest {
        context: None,
        resource_type: "doc",
        permission: "view",
        subject_type: "user",
        subject_id: "reader",
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        cursor: None,
        limit: None,
    };
    let n = e.lookup_resources(&lr).map(|p| p.ids().len());
    assert_eq!(
        n,
        Ok(10_001),
        "lookup premise: every document plus the public one"
    );
    let mut group = c.benchmark_group("lookup");
    group.sample_size(20);
    group.bench_function("lookup_resources 10k documents (10001 results)", |b| {
        b.iter(|| black_box(e.lookup_resources(&lr)))
    });
    group.finish();
}

/// The same direct Check with and without a caveat: an IP range and a time window,
/// the relationship giving the range and the window, the request the address and the
/// time (converted per request, as a server receives them).
fn caveated_checks(c: &mut Criterion) {
    const SCHEMA: &str = r#"
        definition user {}

        caveat ip_window(user_ip ipaddress, cidr string, now timestamp, not_before timestamp, not_after timestamp) {
            user_ip.in_cidr(cidr) && now >= not_before && now < not_after
        }

        definition doc {
            relation viewer: user | user with ip_window
            permission view = viewer
        }
    "#;
    let engine = Engine::in_memory(EngineConfig::default());
    let built = engine.write_schema(SCHEMA).and_then(|_| {
        let mut lines: Vec<String> = (0..10_000).map(|i| format!("doc:d{i}#viewer@user:u{i}")).collect();
        lines.push("doc:plain#viewer@user:ann".into());
        lines.push(
            r#"doc:caveated#viewer@user:ann[ip_window:{"cidr":"10.0.0.0/8","not_before":"2026-01-01T00:00:00Z","not_after":"2027-01-01T00:00:00Z"}]"#
                .into(),
        );
        let updates: Vec<arbiter_engine::RelationshipUpdate> = lines
            .iter()
            .filter_map(|l| arbiter_schema::parse_relationship(l).ok())
            .map(|relationship| arbiter_engine::RelationshipUpdate { op: arbiter_engine::UpdateOp::Touch, relationship })
            .collect();
        engine.write(&updates)
    });
    if let Err(e) = built {
        return eprintln!("cannot build the caveat fixture: {e}");
    }
    let context = json!({"user_ip": "10.1.2.3", "now": "2026-06-01T12:00:00Z"});
    let context = context.as_object();
    let with_context = |resource| CheckRequest { context, ..req(resource, "view", "user:ann") };
    bench_check(c, &engine, "check/caveat baseline: direct, uncaveated", with_context("doc:plain"), Decision::Allowed);
    bench_check(
        c,
        &engine,
        "check/caveat: direct through an IP range and a time window",
        with_context("doc:caveated"),
        Decision::Allowed,
    );
}

fn writes(c: &mut Criterion) {
    let org = match Org::build(10_000, 100) {
        Ok(o) => o,
        Err(e) => return eprintln!("cannot build the org: {e}"),
    };
    let e = &org.engine;
    let mut next = 0usize;
    let mut group = c.benchmark_group("write");
    group.bench_function("write 1 relationship", |b| {
        b.iter_batched(
            || {
                next += 1;
                viewer_updates(next, 1).unwrap_or_default()
            },
            |u| black_box(e.write(&u)),
            BatchSize::SmallInput,
        )
    });
    group.sample_size(20);
    group.bench_function("write 1000 relationships", |b| {
        b.iter_batched(
            || {
                next += 1000;
                viewer_updates(1_000_000 + next, 1000).unwrap_or_default()
            },
            |u| black_box(e.write(&u)),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // One document more for a folder that a million already name: the folder's reverse
    // list is not copied (a write copies what it changes, whatever the list's length).
    let filed = Engine::in_memory(EngineConfig::default());
    let premise = filed
        .write_schema(arbiter_benches::SCHEMA)
        .and_then(|_| filed_updates(0, 1_000_000, "big"))
        .and_then(|u| filed.write(&u));
    if let Err(e) = premise {
        return eprintln!("cannot file the million documents: {e}");
    }
    let mut next = 1_000_000usize;
    let mut group = c.benchmark_group("write");
    group.bench_function("write 1 relationship naming a subject 1M name", |b| {
        b.iter_batched(
            || {
                next += 1;
                filed_updates(next, 1, "big").unwrap_or_default()
            },
            |u| black_box(filed.write(&u)),
            BatchSize::SmallInput,
        )
    });
    // One viewer more for a folder a million users view: the folder's edge list is
    // copied whole (the forward delta keeps a changed object whole).
    let viewed = Engine::in_memory(EngineConfig::default());
    let premise = viewed
        .write_schema(arbiter_benches::SCHEMA)
        .and_then(|_| (0..1_000_000).map(|i| arbiter_benches::touch(&format!("folder:big#viewer@user:v{i}"))).collect::<Result<Vec<_>, _>>())
        .and_then(|u| viewed.write(&u));
    if let Err(e) = premise {
        return eprintln!("cannot write the million viewers: {e}");
    }
    let mut next = 1_000_000usize;
    group.bench_function("write 1 relationship on an object with 1M edges", |b| {
        b.iter_batched(
            || {
                next += 1;
                arbiter_benches::touch(&format!("folder:big#viewer@user:v{next}")).map(|u| vec![u]).unwrap_or_default()
            },
            |u| black_box(viewed.write(&u)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Every object of the org as a Cedar entity (parents from the relationships, the
/// attributes and labels above): what a cedar-agent user keeps loaded.
fn all_entities(lines: &[String], attributes: &[AttributeUpdate]) -> Vec<serde_json::Value> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut parents: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    for l in lines {
        let Ok(r) = arbiter_schema::parse_relationship(l) else { continue };
        let res = (r.resource.object_type.clone(), r.resource.object_id.clone());
        let sub = (r.subject.object.object_type.clone(), r.subject.object.object_id.clone());
        if sub.1 == "*" {
            continue;
        }
        parents.entry(res.clone()).or_default();
        parents.entry(sub.clone()).or_default();
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
    let level: BTreeMap<&str, i64> = LABELS.iter().map(|(n, l, _)| (*n, *l)).collect();
    let mut out = Vec::with_capacity(parents.len() + LABELS.len());
    for (o, ps) in parents {
        let found = attributes.iter().find(|a| a.object_type == o.0 && a.object_id == o.1).and_then(|a| a.attributes.clone());
        let (mut values, labels) = found.map(|a| (a.values, a.labels)).unwrap_or_default();
        values.insert("label_level".into(), json!(labels.iter().map(|l| level[l.as_str()]).max().unwrap_or(0)));
        values.insert(
            "labels".into(),
            serde_json::Value::Array(labels.iter().map(|l| json!({"__entity": {"type": "arbiter::Label", "id": l}})).collect()),
        );
        let mut ps: Vec<serde_json::Value> = ps.iter().map(|(t, i)| json!({"type": t, "id": i})).collect();
        ps.extend(labels.iter().map(|l| json!({"type": "arbiter::Label", "id": l})));
        out.push(json!({"uid": {"type": o.0, "id": o.1}, "attrs": values, "parents": ps}));
    }
    for (n, l, p) in LABELS {
        let ps: Vec<serde_json::Value> = p.iter().map(|p| json!({"type": "arbiter::Label", "id": p})).collect();
        out.push(json!({"uid": {"type": "arbiter::Label", "id": n}, "attrs": {"level": l}, "parents": ps}));
    }
    out
}

fn cedar_checks(c: &mut Criterion) {
    if let Err(e) = try_cedar_checks(c) {
        eprintln!("cannot set up the Cedar benchmarks: {e}");
    }
}

fn try_cedar_checks(c: &mut Criterion) -> Result<(), String> {
    use cedar_policy as cedar;
    use std::str::FromStr;
    let org = Org::build(10_000, 100).map_err(|e| e.to_string())?;
    let e = &org.engine;
    let attributes = vec![
        attrs("user:member2", json!({"clearance": 4, "department": "eng"}), &["secret"]),
        attrs("user:member3", json!({"clearance": 1, "department": "eng"}), &["confidential"]),
        attrs("doc:d42", json!({"classification": 3}), &["confidential"]),
        attrs("doc:d43", json!({"classification": 3}), &["secret"]),
    ];
    e.write_policy_model(policy_model("doc", "")?).map_err(|e| e.to_string())?;
    e.write_attributes(attributes.clone()).map_err(|e| e.to_string())?;
    let solo = arbiter_schema::parse_relationship("doc:solo#viewer@user:member2").map_err(|e| e.message)?;
    e.write(&[arbiter_engine::RelationshipUpdate { op: arbiter_engine::UpdateOp::Touch, relationship: solo }])
        .map_err(|e| e.to_string())?;
    e.write_attributes(vec![attrs("doc:solo", json!({"classification": 1}), &["confidential"])]).map_err(|e| e.to_string())?;
    use Decision::{Allowed, Denied};
    bench_check(c, e, "cedar/label policy + 3 attributes, deep, allowed", req("doc:d42", "view", "user:member2"), Allowed);
    bench_check(c, e, "cedar/label policy + 3 attributes, direct (principal + team chain, resource alone)", req("doc:solo", "view", "user:member2"), Allowed);
    bench_check(c, e, "cedar/label policy + 3 attributes, deep, forbidden", req("doc:d43", "view", "user:member3"), Denied);
    e.write_policy_model(policy_model("doc", &more_policies("doc"))?).map_err(|e| e.to_string())?;
    bench_check(c, e, "cedar/20 policies, deep, allowed", req("doc:d42", "view", "user:member2"), Allowed);

    // Cedar alone, as a cedar-agent user runs it: the same policies plus a permit that
    // stands in for the graph's path (team chain 2 may view folder chain 42), on every
    // entity of the org materialised once, or on the request's entities built per request.
    let lines = arbiter_benches::org_relationships(10_000, 100);
    let text = format!(
        "{}\n{}\n@id(\"graph\")\npermit(principal in team::\"t2_0\", action == Action::\"view\", resource in folder::\"f42_0\");",
        label_policy("doc"),
        more_policies("doc")
    );
    let set = cedar::PolicySet::from_str(&text).map_err(|e| e.to_string())?;
    let everything = all_entities(&lines, &attributes);
    let entities = cedar::Entities::from_json_value(serde_json::Value::Array(everything.clone()), None).map_err(|e| e.to_string())?;
    let uid = |t: &str, i: &str| -> Result<cedar::EntityUid, String> {
        Ok(cedar::EntityUid::from_type_name_and_id(cedar::EntityTypeName::from_str(t).map_err(|e| e.to_string())?, cedar::EntityId::new(i)))
    };
    let request = cedar::Request::new(uid("user", "member2")?, uid("Action", "view")?, uid("doc", "d42")?, cedar::Context::empty(), None)
        .map_err(|e| e.to_string())?;
    let authorizer = cedar::Authorizer::new();
    let decision = authorizer.is_authorized(&request, &set, &entities).decision();
    if decision != cedar::Decision::Allow {
        return Err(format!("Cedar alone decided {decision:?} on the allowed request"));
    }
    c.bench_function(&format!("cedar/Cedar alone, 20 policies, {} entities loaded once", everything.len()), |b| {
        b.iter(|| black_box(authorizer.is_authorized(black_box(&request), &set, &entities)))
    });
    // Per request: only the principal, the resource and their ancestors (what the
    // request needs), materialised from JSON each time.
    let wanted: Vec<serde_json::Value> = everything
        .into_iter()
        .filter(|v| {
            let t = v["uid"]["type"].as_str().unwrap_or("");
            let i = v["uid"]["id"].as_str().unwrap_or("");
            t == "arbiter::Label"
                || (t == "user" && i == "member2")
                || (t == "doc" && i == "d42")
                || (t == "team" && i.starts_with("t2_"))
                || (t == "folder" && i.starts_with("f42_"))
        })
        .collect();
    c.bench_function(&format!("cedar/Cedar alone, 20 policies, {} entities materialised per request", wanted.len()), |b| {
        b.iter(|| {
            let entities = cedar::Entities::from_json_value(serde_json::Value::Array(wanted.clone()), None);
            black_box(entities.map(|es| authorizer.is_authorized(&request, &set, &es).decision()).ok())
        })
    });
    Ok(())
}

criterion_group!(benches, checks, cedar_checks, writes);
criterion_main!(benches);
