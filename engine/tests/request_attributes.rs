//! Per-request attribute values (AuthZEN's `subject.properties` and
//! `resource.properties`): only attributes declared as supplied by requests, added to
//! the stored values of the principal and the resource for one Check only (a stored
//! attribute given by a request is refused), checked against the declarations like a
//! context (undeclared keys left out, a mistyped one refused), never stored; and
//! `check_until`, which stops a batch at the first answer it is told to.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

use std::collections::BTreeMap;

use arbiter_engine::*;
use arbiter_schema::parse_relationship;
use serde_json::{json, Map, Value};

const SCHEMA: &str = r#"
definition user {}

definition doc {
    relation viewer: user
    permission view = viewer
}
"#;

fn record(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not a record: {other}"),
    }
}

fn decl(ty: &str, required: bool, source: AttrSource) -> AttrDecl {
    AttrDecl { ty: ty.parse().unwrap(), required, source }
}

/// Users may carry a stored clearance and department, and a request-supplied ip;
/// documents must carry a stored classification and may be given a request-supplied
/// sensitivity. A forbid keeps users below a document's classification out, another
/// keeps everyone out of what a request calls very sensitive; a permit lets the office
/// network view `doc:open` without a relationship.
fn engine() -> Engine {
    use AttrSource::{Request, Stored};
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(SCHEMA).unwrap();
    let updates: Vec<RelationshipUpdate> = ["doc:plan#viewer@user:ann", "doc:plan#viewer@user:bob"]
        .iter()
        .map(|r| RelationshipUpdate { op: UpdateOp::Touch, relationship: parse_relationship(r).unwrap() })
        .collect();
    e.write(&updates).unwrap();
    let mut declarations = AttributeDecls::default();
    declarations.types.insert(
        "user".into(),
        BTreeMap::from([
            ("clearance".into(), decl("long", false, Stored)),
            ("ip".into(), decl("ip", false, Request)),
            ("dept".into(), decl("string", false, Stored)),
        ]),
    );
    declarations.types.insert(
        "doc".into(),
        BTreeMap::from([
            ("classification".into(), decl("long", true, Stored)),
            ("sensitivity".into(), decl("long", false, Request)),
        ]),
    );
    declarations.context.insert("net".into(), decl("ip", false, Stored));
    e.write_policy_model(PolicyModel {
        policies: split_policies(
            "test.cedar",
            r#"
            @id("clearance")
            forbid(principal, action == Action::"view", resource is doc)
            unless { principal has clearance && principal.clearance >= resource.classification };
            @id("sensitive")
            forbid(principal, action == Action::"view", resource is doc)
            when { resource has sensitivity && resource.sensitivity > 3 };
            @id("office")
            permit(principal, action == Action::"view", resource == doc::"open")
            when { principal has ip && principal.ip.isInRange(ip("10.0.0.0/8")) };
            @id("office-context")
            permit(principal, action == Action::"view", resource == doc::"lobby")
            when { context has net && context.net.isInRange(ip("10.0.0.0/8")) };
            "#,
        )
        .unwrap(),
        declarations,
        labels: BTreeMap::new(),
    })
    .unwrap();
    let attrs = |t: &str, i: &str, v: Value| AttributeUpdate {
        object_type: t.into(),
        object_id: i.into(),
        attributes: Some(ObjectAttributes { values: record(v), labels: Vec::new() }),
    };
    e.write_attributes(vec![
        attrs("doc", "plan", json!({"classification": 2})),
        attrs("doc", "open", json!({"classification": 0})),
        attrs("doc", "lobby", json!({"classification": 0})),
        attrs("user", "ann", json!({"clearance": 1, "dept": "sales"})),
        attrs("user", "zed", json!({"clearance": 0})),
    ])
    .unwrap();
    e
}

/// `doc:ID#view@user:ID` with the given per-request values.
fn check(e: &Engine, doc: &str, user: &str, principal: Option<Value>, resource: Option<Value>) -> Result<bool, EngineError> {
    let principal = principal.map(record);
    let resource = resource.map(record);
    let req = CheckRequest {
        resource_type: "doc",
        resource_id: doc,
        permission: "view",
        subject_type: "user",
        subject_id: user,
        principal_attributes: principal.as_ref(),
        resource_attributes: resource.as_ref(),
        ..CheckRequest::default()
    };
    e.check(&req).map(|r| r.decision == Decision::Allowed)
}

#[test]
fn requests_supply_their_own_attributes_and_never_replace_stored_ones() {
    let e = engine();
    // Stored: ann's clearance 1 is below the plan's classification 2; bob has none.
    assert!(!check(&e, "plan", "ann", None, None).unwrap());
    assert!(!check(&e, "plan", "bob", None, None).unwrap());
    // A stored attribute given by a request is refused, naming it, whether the object
    // has a stored value or not: the store's facts are the store's alone.
    for (user, principal, resource, name) in [
        ("ann", Some(json!({"clearance": 3})), None, "clearance"),
        ("bob", Some(json!({"clearance": 2})), None, "clearance"),
        ("ann", Some(json!({"dept": "eng", "ip": "10.0.0.1"})), None, "dept"),
        ("ann", None, Some(json!({"classification": 0})), "classification"),
    ] {
        let err = check(&e, "plan", user, principal.clone(), resource.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("`{name}` is a stored attribute")), "{principal:?} {resource:?}: {text}");
    }
    // Request-supplied ones reach the policies: an ip (written as a string) in a permit,
    // a sensitivity in a forbid.
    assert!(!check(&e, "open", "zed", None, None).unwrap());
    assert!(check(&e, "open", "zed", Some(json!({"ip": "10.1.2.3"})), None).unwrap());
    assert!(!check(&e, "open", "zed", Some(json!({"ip": "192.168.1.1"})), None).unwrap());
    assert!(!check(&e, "open", "zed", Some(json!({"ip": "10.1.2.3"})), Some(json!({"sensitivity": 5}))).unwrap());
    assert!(check(&e, "open", "zed", Some(json!({"ip": "10.1.2.3"})), Some(json!({"sensitivity": 1}))).unwrap());
    // The stored values stay in force beside them (ann's clearance still falls short).
    assert!(!check(&e, "plan", "ann", Some(json!({"ip": "10.1.2.3"})), Some(json!({"sensitivity": 1}))).unwrap());
    // Keys no declaration names are left out, as for a context.
    assert!(!check(&e, "plan", "bob", Some(json!({"nickname": "b", "level": 9})), None).unwrap());
    // Nothing is stored: the next check sees the stored values alone.
    assert!(!check(&e, "open", "zed", None, None).unwrap());
    let (_, stored) = e
        .read_attributes(&[("user".into(), "ann".into()), ("user".into(), "bob".into())], Consistency::FullyConsistent)
        .unwrap();
    assert_eq!(stored[0].as_ref().map(|a| a.values.clone()), Some(record(json!({"clearance": 1, "dept": "sales"}))));
    assert_eq!(stored[1], None);
}

#[test]
fn values_are_typed_like_written_ones_and_mistyped_ones_are_refused() {
    let e = engine();
    // A context value declared as an ip may be written as a string.
    let ctx = record(json!({"net": "10.9.9.9"}));
    let req = CheckRequest {
        resource_type: "doc",
        resource_id: "lobby",
        permission: "view",
        subject_type: "user",
        subject_id: "zed",
        context: Some(&ctx),
        ..CheckRequest::default()
    };
    assert_eq!(e.check(&req).unwrap().decision, Decision::Allowed);
    // Mistyped values are the caller's mistake, naming the side and the attribute.
    for (principal, resource, side, name) in [
        (Some(json!({"ip": "not an address"})), None, "principal attributes", "ip"),
        (Some(json!({"ip": 10})), None, "principal attributes", "ip"),
        (None, Some(json!({"sensitivity": "high"})), "resource attributes", "sensitivity"),
        (None, Some(json!({"sensitivity": 1.5})), "resource attributes", "sensitivity"),
        (None, Some(json!({"sensitivity": [1]})), "resource attributes", "sensitivity"),
    ] {
        let err = check(&e, "plan", "ann", principal.clone(), resource.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let text = err.to_string();
        assert!(text.contains(side) && text.contains(name), "{principal:?} {resource:?}: {text}");
    }
}

#[test]
fn without_policies_request_values_change_nothing() {
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(SCHEMA).unwrap();
    e.write(&[RelationshipUpdate { op: UpdateOp::Touch, relationship: parse_relationship("doc:1#viewer@user:ann").unwrap() }])
        .unwrap();
    assert!(check(&e, "1", "ann", Some(json!({"anything": "goes"})), Some(json!({"x": 1}))).unwrap());
    assert!(!check(&e, "1", "bob", Some(json!({"clearance": 9})), None).unwrap());
}

#[test]
fn check_until_stops_after_the_first_answer_it_is_told_to() {
    let e = engine();
    let ips: Vec<Map<String, Value>> = ["10.0.0.1", "192.168.0.1", "10.0.0.2"].iter().map(|ip| record(json!({"ip": ip}))).collect();
    let items: Vec<CheckRequest<'_>> = ips
        .iter()
        .map(|ip| CheckRequest {
            resource_type: "doc",
            resource_id: "open",
            permission: "view",
            subject_type: "user",
            subject_id: "zed",
            principal_attributes: Some(ip),
            ..CheckRequest::default()
        })
        .collect();
    let denied = |a: &Result<CheckResponse, EngineError>| !matches!(a, Ok(r) if r.decision == Decision::Allowed);
    let (answers, revision) = e.check_until(&items, Consistency::MinimizeLatency, denied).unwrap();
    assert_eq!(revision, e.revision());
    assert_eq!(
        answers.into_iter().map(|a| a.unwrap().decision).collect::<Vec<_>>(),
        [Decision::Allowed, Decision::Denied]
    );
    let (answers, _) = e.check_until(&items, Consistency::MinimizeLatency, |_| false).unwrap();
    assert_eq!(answers.len(), 3);
    // A failing item fails alone and can stop the run like a denial.
    let mut bad = items.clone();
    bad[0].permission = "nope";
    let (answers, _) = e.check_until(&bad, Consistency::MinimizeLatency, denied).unwrap();
    assert_eq!(answers.len(), 1);
    assert!(answers[0].is_err());
}
