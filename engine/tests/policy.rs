//! Cedar policies in the decision: compile errors that name the policy and position,
//! permits that grant beyond the graph, forbids that override it (also when they
//! error), Cedar parents from membership and containment, request context, schema
//! writes that would break the policies, persistence, and explain.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arbiter_engine::*;
use arbiter_schema::parse_relationship;
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

fn engine_on(store: Box<dyn RelationshipStore>, rels: &[&str]) -> Engine {
    let engine = Engine::open(store, EngineConfig::default()).unwrap();
    engine.write_schema(SCHEMA).unwrap();
    let updates: Vec<RelationshipUpdate> = rels
        .iter()
        .map(|r| RelationshipUpdate { op: UpdateOp::Touch, relationship: parse_relationship(r).unwrap() })
        .collect();
    if !updates.is_empty() {
        engine.write(&updates).unwrap();
    }
    engine
}

fn engine(rels: &[&str]) -> Engine {
    engine_on(Box::new(MemoryStore::default()), rels)
}

fn record(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not a record: {other}"),
    }
}

/// A model from Cedar text (ids from `@id`), attribute values, and types inferred from
/// them and from `contexts`.
fn model(policies: &str, attributes: &[(&str, Value)], contexts: &[Value]) -> PolicyModel {
    let mut inference = Inference::default();
    let mut attrs = BTreeMap::new();
    for (object, value) in attributes {
        let (ty, _) = object.split_once(':').unwrap();
        let r = record(value.clone());
        inference.object(ty, object, &r).unwrap();
        attrs.insert(object.to_string(), r);
    }
    for c in contexts {
        inference.context(&record(c.clone())).unwrap();
    }
    PolicyModel {
        policies: split_policies("test.cedar", policies).unwrap(),
        declarations: inference.decls,
        attributes: attrs,
    }
}

fn check_ctx(engine: &Engine, q: &str, context: Option<&Map<String, Value>>) -> Result<bool, EngineError> {
    let (res, rest) = q.split_once('#').unwrap();
    let (perm, sub) = rest.split_once('@').unwrap();
    let (rt, rid) = res.split_once(':').unwrap();
    let (sub_obj, sub_rel) = match sub.split_once('#') {
        Some((o, r)) => (o, Some(r)),
        None => (sub, None),
    };
    let (st, sid) = sub_obj.split_once(':').unwrap();
    let req = CheckRequest {
        resource_type: rt,
        resource_id: rid,
        permission: perm,
        subject_type: st,
        subject_id: sid,
        subject_relation: sub_rel,
        consistency: Consistency::FullyConsistent,
        context,
    };
    engine.check(&req).map(|r| r.decision == Decision::Allowed)
}

fn check(engine: &Engine, q: &str) -> bool {
    check_ctx(engine, q, None).unwrap()
}

#[test]
fn split_names_policies_by_annotation_or_position() {
    let policies = split_policies(
        "p.cedar",
        "@id(\"open\")\npermit(principal, action, resource);\nforbid(principal, action, resource);\n",
    )
    .unwrap();
    let ids: Vec<&str> = policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["open", "p.cedar:2"]);
    assert!(policies[0].text.contains("@id(\"open\")"), "{:?}", policies[0].text);
    let err = split_policies("p.cedar", "permit(principal, action, resource);\npermit(principal, action resource);\n")
        .unwrap_err();
    assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
    assert!(err.to_string().starts_with("at 2:"), "{err}");
    let dup = split_policies("p.cedar", "@id(\"a\")\npermit(principal, action, resource);\n@id(\"a\")\nforbid(principal, action, resource);")
        .unwrap_err();
    assert!(dup.to_string().contains("two policies have the id `a`"), "{dup}");
}

#[test]
fn invalid_policies_are_refused_with_the_policy_and_position_and_change_nothing() {
    let e = engine(&["doc:1#viewer@user:tom"]);
    let good = model("@id(\"g\")\npermit(principal, action == Action::\"view\", resource);", &[], &[]);
    let before = e.write_policy_model(good.clone()).unwrap();
    // Strict validation: an attribute nobody declared.
    let bad = model(
        "@id(\"mls\")\nforbid(principal, action == Action::\"view\", resource)\nunless { principal.clearance > 2 };",
        &[],
        &[],
    );
    let err = e.write_policy_model(bad).unwrap_err();
    let EngineError::InvalidPolicy(p) = &err else { panic!("{err}") };
    assert_eq!(p.policy.as_deref(), Some("mls"), "{err}");
    assert!(p.position.is_some(), "{err}");
    assert!(err.to_string().contains("clearance"), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // An unknown action and an unknown entity type.
    for text in [
        "permit(principal, action == Action::\"fly\", resource);",
        "permit(principal is robot, action, resource);",
    ] {
        let err = e.write_policy_model(model(text, &[], &[])).unwrap_err();
        assert!(matches!(err, EngineError::InvalidPolicy(_)), "{text}: {err}");
    }
    // Attribute values that do not fit their (declared) types.
    let mut m = model("", &[("user:tom", json!({"clearance": 3}))], &[]);
    m.attributes.insert("user:ann".into(), record(json!({"clearance": "high"})));
    let err = e.write_policy_model(m).unwrap_err();
    assert!(err.to_string().contains("user:ann"), "{err}");
    // Nothing changed.
    assert_eq!(e.revision(), before);
    assert_eq!(e.policy_model(), good);
}

#[test]
fn a_permit_grants_beyond_the_graph_and_a_forbid_overrides_it() {
    let e = engine(&["doc:1#viewer@user:tom", "doc:2#viewer@user:tom", "doc:2#owner@user:ann"]);
    assert!(!check(&e, "doc:1#view@user:zed"));
    e.write_policy_model(model(
        r#"
        @id("public-docs")
        permit(principal, action == Action::"view", resource is doc) when { resource has public && resource.public };
        @id("suspended")
        forbid(principal is user, action, resource) when { principal has suspended && principal.suspended };
        "#,
        &[("doc:1", json!({"public": true})), ("user:tom", json!({"suspended": true})), ("user:ann", json!({"suspended": false}))],
        &[],
    ))
    .unwrap();
    // The permit: anyone may view the public doc, even someone the graph never saw.
    assert!(check(&e, "doc:1#view@user:zed"));
    assert!(check(&e, "doc:1#view@user:never-written"));
    assert!(!check(&e, "doc:2#view@user:zed"), "doc:2 is not public");
    // The permit names `view` only.
    assert!(!check(&e, "doc:1#edit@user:zed"));
    // The forbid: tom is suspended, viewer or not, on every action.
    assert!(!check(&e, "doc:1#view@user:tom"));
    assert!(!check(&e, "doc:2#view@user:tom"));
    // ann is not suspended: the graph still decides for her.
    assert!(check(&e, "doc:2#edit@user:ann"));
    assert!(!check(&e, "doc:1#edit@user:ann"));
}

#[test]
fn a_forbid_that_errors_denies_and_a_permit_that_errors_grants_nothing() {
    let e = engine(&["doc:1#viewer@user:tom", "doc:2#viewer@user:ann"]);
    e.write_policy_model(model(
        r#"
        @id("overflowing-forbid")
        forbid(principal is user, action == Action::"view", resource)
        when { principal has level && principal.level * 9223372036854775807 > 100 };
        @id("overflowing-permit")
        permit(principal is user, action == Action::"edit", resource)
        when { principal has level && principal.level * 9223372036854775807 > 100 };
        "#,
        &[("user:tom", json!({"level": 5})), ("user:ann", json!({"level": 0}))],
        &[],
    ))
    .unwrap();
    // tom's level overflows the multiplication: the forbid errors, so view is denied.
    assert!(!check(&e, "doc:1#view@user:tom"));
    let explained = e
        .explain(&CheckRequest {
            resource_type: "doc",
            resource_id: "1",
            permission: "view",
            subject_type: "user",
            subject_id: "tom",
            ..CheckRequest::default()
        })
        .unwrap();
    assert_eq!(explained.decision, Decision::Denied);
    assert!(explained.policies.iter().any(|p| p.starts_with("overflowing-forbid")), "{explained:?}");
    // ann's does not overflow and is not > 100: the graph decides.
    assert!(check(&e, "doc:2#view@user:ann"));
    // The erroring permit grants nothing.
    assert!(!check(&e, "doc:1#edit@user:tom"));
}

#[test]
fn members_are_in_their_teams_and_documents_in_their_folders() {
    let e = engine(&[
        "team:contractors#member@team:agency#member",
        "team:agency#member@user:bob",
        "doc:1#owner@user:bob",
        "doc:1#parent@folder:shared",
        "folder:shared#parent@folder:public",
        "doc:2#owner@user:carl",
    ]);
    e.write_policy_model(model(
        r#"
        @id("no-contractor-edits")
        forbid(principal in team::"contractors", action == Action::"edit", resource);
        @id("public-folder")
        permit(principal, action == Action::"view", resource in folder::"public");
        "#,
        &[],
        &[],
    ))
    .unwrap();
    // bob is in team:agency, which is in team:contractors: he may not edit his own doc.
    assert!(!check(&e, "doc:1#edit@user:bob"));
    assert!(check(&e, "doc:2#edit@user:carl"));
    // doc:1 sits in folder:shared, which sits in folder:public: anyone may view it.
    assert!(check(&e, "doc:1#view@user:anyone"));
    assert!(!check(&e, "doc:2#view@user:anyone"));
    // The principal of a subject set is its object: team:agency is in team:contractors.
    assert!(!check(&e, "doc:1#edit@team:agency#member"));
}

#[test]
fn the_request_context_reaches_cedar() {
    let e = engine(&["doc:1#viewer@user:tom"]);
    let ctx = json!({"ip": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}}, "hour": 10});
    e.write_policy_model(model(
        r#"
        @id("office-network")
        forbid(principal, action == Action::"view", resource)
        unless { context has ip && context.ip.isInRange(ip("10.0.0.0/8")) };
        @id("office-hours")
        forbid(principal, action == Action::"view", resource)
        when { context has hour && (context.hour < 8 || context.hour > 18) };
        "#,
        &[],
        &[ctx.clone()],
    ))
    .unwrap();
    let inside = record(ctx);
    let outside = record(json!({"ip": {"__extn": {"fn": "ip", "arg": "192.168.1.1"}}}));
    let late = record(json!({"ip": {"__extn": {"fn": "ip", "arg": "10.0.0.9"}}, "hour": 23}));
    assert!(check_ctx(&e, "doc:1#view@user:tom", Some(&inside)).unwrap());
    assert!(!check_ctx(&e, "doc:1#view@user:tom", Some(&outside)).unwrap());
    assert!(!check_ctx(&e, "doc:1#view@user:tom", Some(&late)).unwrap());
    assert!(!check_ctx(&e, "doc:1#view@user:tom", None).unwrap(), "no ip: the forbid holds");
    // A context that does not fit the declared types is the caller's mistake.
    let wrong = record(json!({"hour": "ten"}));
    let err = check_ctx(&e, "doc:1#view@user:tom", Some(&wrong)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn a_schema_write_that_breaks_the_policies_is_refused() {
    let e = engine(&["doc:1#viewer@user:tom"]);
    e.write_policy_model(model("@id(\"p\")\npermit(principal, action == Action::\"edit\", resource is doc);", &[], &[]))
        .unwrap();
    let without_edit = SCHEMA.replace("    permission edit = owner\n", "").replace(" + edit", "");
    let err = e.write_schema(&without_edit).unwrap_err();
    assert!(matches!(err, EngineError::SchemaBreaksPolicies(_)), "{err}");
    assert!(err.to_string().contains("`p`"), "{err}");
    assert_eq!(e.schema_text().as_deref(), Some(SCHEMA));
    // A schema change the policies survive recompiles them.
    let more = format!("{SCHEMA}\ndefinition extra {{}}\n");
    e.write_schema(&more).unwrap();
    assert!(check(&e, "doc:1#edit@user:anyone"));
}

#[test]
fn the_model_survives_reopening_and_shows_in_the_changelog() {
    let store = Arc::new(MemoryStore::default());
    let m = model(
        "@id(\"p\")\npermit(principal, action == Action::\"view\", resource) when { resource has public && resource.public };",
        &[("doc:9", json!({"public": true}))],
        &[],
    );
    let revision = {
        let e = engine_on(Box::new(store.clone()), &[]);
        e.write_policy_model(m.clone()).unwrap()
    };
    let e = Engine::open(Box::new(store.clone()), EngineConfig::default()).unwrap();
    assert_eq!(e.policy_model(), m);
    assert!(check(&e, "doc:9#view@user:x"));
    let ChangesAfter::Commits(commits) = e.changes_after(revision - 1, 10).unwrap() else { panic!() };
    assert!(commits.iter().any(|c| c.revision == revision && c.policy_model.is_some()));
    // Writing an empty model removes the Cedar side.
    e.write_policy_model(PolicyModel::default()).unwrap();
    assert!(!check(&e, "doc:9#view@user:x"));
}

#[test]
fn lookups_leave_out_what_a_forbid_denies_and_do_not_list_permit_only_grants() {
    let e = engine(&[
        "doc:1#viewer@user:tom",
        "doc:2#viewer@user:tom",
        "doc:3#viewer@user:tom",
        "doc:2#viewer@user:ann",
    ]);
    e.write_policy_model(model(
        r#"
        @id("doc-2-is-sealed")
        forbid(principal, action == Action::"view", resource == doc::"2") unless { principal == user::"ann" };
        @id("everyone-sees-doc-9")
        permit(principal, action == Action::"view", resource == doc::"9");
        "#,
        &[],
        &[],
    ))
    .unwrap();
    let resources = e
        .lookup_resources(&LookupResourcesRequest {
            resource_type: "doc",
            permission: "view",
            subject_type: "user",
            subject_id: "tom",
            subject_relation: None,
            consistency: Consistency::FullyConsistent,
            cursor: None,
            limit: None,
        })
        .unwrap();
    assert_eq!(resources.resource_ids, ["1", "3"]);
    // Every listed resource checks allowed; the left-out one checks denied.
    for id in ["1", "3"] {
        assert!(check(&e, &format!("doc:{id}#view@user:tom")));
    }
    assert!(!check(&e, "doc:2#view@user:tom"));
    // doc:9 is granted by a permit only: Check allows it, Lookup does not list it.
    assert!(check(&e, "doc:9#view@user:tom"));
    let subjects = e
        .lookup_subjects(&LookupSubjectsRequest {
            resource_type: "doc",
            resource_id: "2",
            permission: "view",
            subject_type: "user",
            subject_relation: None,
            consistency: Consistency::FullyConsistent,
            cursor: None,
            limit: None,
            written_subject_sets_only: false,
        })
        .unwrap();
    let ids: Vec<&str> = subjects.subjects.iter().map(|s| s.subject_id.as_str()).collect();
    assert_eq!(ids, ["ann"]);
}
