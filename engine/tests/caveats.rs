//! Caveated relationships through the engine's public API: writes are checked against
//! the schema's caveats, Check and both lookups answer with three values, and the
//! relationship's context wins over the request's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

use arbiter_engine::*;
use arbiter_schema::parse_relationship;
use serde_json::json;

const SCHEMA: &str = r#"
use expiration

definition user {}

caveat on_network(user_ip ipaddress, cidr string) {
    user_ip.in_cidr(cidr)
}

caveat below(count int, limit int) {
    count < limit
}

caveat flag(on bool) {
    on
}

definition group {
    relation member: user | user with below
}

definition doc {
    relation viewer: user | user with on_network | user:* with flag | group#member with below
    relation banned: user with flag
    relation parent: folder with flag
    permission view = viewer + parent->view
    permission safe_view = view - banned
}

definition folder {
    relation viewer: user | user with below and expiration
    permission view = viewer
}
"#;

fn engine(rels: &[&str]) -> Engine {
    let engine = Engine::in_memory(EngineConfig::default());
    engine.write_schema(SCHEMA).unwrap();
    engine.write(&touches(rels)).unwrap();
    engine
}

fn touches(rels: &[&str]) -> Vec<RelationshipUpdate> {
    rels.iter().map(|r| RelationshipUpdate { op: UpdateOp::Touch, relationship: parse_relationship(r).unwrap() }).collect()
}

/// `doc:1#view@user:tom` with a context -> (decision, missing parameters).
fn check(engine: &Engine, q: &str, context: serde_json::Value) -> (Decision, Vec<String>) {
    let (res, rest) = q.split_once('#').unwrap();
    let (perm, sub) = rest.split_once('@').unwrap();
    let (rt, rid) = res.split_once(':').unwrap();
    let (st, sid) = sub.split_once(':').unwrap();
    let context = context.as_object().cloned();
    let r = engine
        .check(&CheckRequest {
            resource_type: rt,
            resource_id: rid,
            permission: perm,
            subject_type: st,
            subject_id: sid,
            context: context.as_ref(),
            ..Default::default()
        })
        .unwrap();
    (r.decision, r.missing_context)
}

fn missing(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn a_caveated_relationship_is_conditional_until_its_parameters_are_given() {
    let e = engine(&[r#"doc:1#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8"}]"#, "doc:1#viewer@user:ann"]);
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({})), (Decision::Conditional, missing(&["user_ip"])));
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({"user_ip": "10.1.2.3"})), (Decision::Allowed, vec![]));
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({"user_ip": "11.1.2.3"})), (Decision::Denied, vec![]));
    // The relationship's context wins: a request cannot widen the range.
    assert_eq!(
        check(&e, "doc:1#view@user:tom", json!({"user_ip": "11.1.2.3", "cidr": "0.0.0.0/0"})),
        (Decision::Denied, vec![])
    );
    // An uncaveated path wins outright.
    assert_eq!(check(&e, "doc:1#view@user:ann", json!({})), (Decision::Allowed, vec![]));
    assert_eq!(check(&e, "doc:1#view@user:bob", json!({})), (Decision::Denied, vec![]));
}

#[test]
fn subject_sets_arrows_and_exclusions_combine_three_valued() {
    let e = engine(&[
        r#"doc:1#viewer@group:g#member[below:{"limit":5}]"#,
        r#"group:g#member@user:tom[below:{"limit":3}]"#,
        "doc:2#parent@folder:f[flag]",
        "folder:f#viewer@user:ann",
        "doc:3#viewer@user:sue",
        "doc:3#banned@user:sue[flag]",
    ]);
    // Both caveats need `count`; the subject set's and the member's are ANDed.
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({})), (Decision::Conditional, missing(&["count"])));
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({"count": 2})), (Decision::Allowed, vec![]));
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({"count": 4})), (Decision::Denied, vec![]));
    // An arrow ANDs the tupleset relationship's caveat with the target's answer.
    assert_eq!(check(&e, "doc:2#view@user:ann", json!({})), (Decision::Conditional, missing(&["on"])));
    assert_eq!(check(&e, "doc:2#view@user:ann", json!({"on": true})), (Decision::Allowed, vec![]));
    assert_eq!(check(&e, "doc:2#view@user:ann", json!({"on": false})), (Decision::Denied, vec![]));
    // A caveated subtrahend: base AND NOT sub.
    assert_eq!(check(&e, "doc:3#safe_view@user:sue", json!({})), (Decision::Conditional, missing(&["on"])));
    assert_eq!(check(&e, "doc:3#safe_view@user:sue", json!({"on": false})), (Decision::Allowed, vec![]));
    assert_eq!(check(&e, "doc:3#safe_view@user:sue", json!({"on": true})), (Decision::Denied, vec![]));
}

#[test]
fn lookups_mark_conditional_results() {
    let e = engine(&[
        r#"doc:1#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8"}]"#,
        "doc:2#viewer@user:tom",
        "doc:3#viewer@user:*[flag]",
        "doc:3#viewer@user:ann",
    ]);
    let lr = |context: serde_json::Value| {
        let context = context.as_object().cloned();
        e.lookup_resources(&LookupResourcesRequest {
            resource_type: "doc",
            permission: "view",
            subject_type: "user",
            subject_id: "tom",
            subject_relation: None,
            consistency: Consistency::FullyConsistent,
            cursor: None,
            limit: None,
            context: context.as_ref(),
        })
        .unwrap()
        .resources
    };
    let found: Vec<(String, Vec<String>)> = lr(json!({})).into_iter().map(|r| (r.id, r.missing_context)).collect();
    assert_eq!(
        found,
        vec![
            ("1".to_string(), missing(&["user_ip"])),
            ("2".to_string(), vec![]),
            ("3".to_string(), missing(&["on"])),
        ]
    );
    let found: Vec<String> = lr(json!({"user_ip": "1.2.3.4", "on": true})).into_iter().map(|r| r.id).collect();
    assert_eq!(found, vec!["2", "3"]);
    let subjects = e
        .lookup_subjects(&LookupSubjectsRequest {
            resource_type: "doc",
            resource_id: "3",
            permission: "view",
            subject_type: "user",
            subject_relation: None,
            consistency: Consistency::FullyConsistent,
            cursor: None,
            limit: None,
            written_subject_sets_only: false,
            context: None,
        })
        .unwrap()
        .subjects;
    let got: Vec<(&str, &[String])> = subjects.iter().map(|s| (s.subject_id.as_str(), s.missing_context.as_slice())).collect();
    assert_eq!(got, vec![("*", &missing(&["on"])[..]), ("ann", &[][..])]);
}

#[test]
fn writes_are_held_to_the_schemas_caveats() {
    let e = engine(&[]);
    let refused = |r: &str| e.write(&touches(&[r])).unwrap_err().to_string();
    let err = refused(r#"doc:1#viewer@user:tom[nope:{"x":1}]"#);
    assert!(err.contains("caveat `nope` is not defined"), "{err}");
    let err = refused("doc:1#viewer@user:tom[below]");
    assert!(err.contains("user with below") && err.contains("not allowed"), "{err}");
    let err = refused("doc:1#banned@user:tom");
    assert!(err.contains("not allowed"), "{err}");
    let err = refused(r#"doc:1#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8","extra":1}]"#);
    assert!(err.contains("unknown parameter `extra`"), "{err}");
    let err = refused(r#"doc:1#viewer@user:tom[on_network:{"user_ip":"not an ip"}]"#);
    assert!(err.contains("parameter `user_ip`") && err.contains("IP address"), "{err}");
    let big = "x".repeat(MAX_CAVEAT_CONTEXT_BYTES);
    let err = refused(&format!(r#"doc:1#viewer@user:tom[on_network:{{"cidr":"{big}"}}]"#));
    assert!(err.contains("bytes"), "{err}");
    // Nothing was written.
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({"user_ip": "10.0.0.1"})).0, Decision::Denied);
    // Caveat and expiration together, as the schema allows them.
    e.write(&touches(&[r#"folder:f#viewer@user:tom[below:{"limit":3}][expiration:2099-01-01T00:00:00Z]"#])).unwrap();
}

#[test]
fn a_schema_change_that_strands_a_caveated_relationship_is_refused() {
    let e = engine(&[r#"group:g#member@user:tom[below:{"limit":3}]"#]);
    let without = SCHEMA.replace("relation member: user | user with below", "relation member: user");
    let err = e.write_schema(&without).unwrap_err().to_string();
    assert!(err.contains("orphan"), "{err}");
}

#[test]
fn an_evaluation_error_is_the_requests_error() {
    let e = engine(&[r#"group:g#member@user:tom[below:{"limit":3}]"#]);
    let err = e
        .check(&CheckRequest {
            resource_type: "group",
            resource_id: "g",
            permission: "member",
            subject_type: "user",
            subject_id: "tom",
            context: json!({"count": "many"}).as_object(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("parameter `count`"), "{err}");
}
