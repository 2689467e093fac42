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

/// A Cedar permit that holds grants a conditional answer; a forbid that holds denies
/// it; with neither, it stays conditional (never allowed).
#[test]
fn cedar_decides_a_conditional_answer_only_when_a_policy_holds() {
    let e = engine(&[r#"doc:1#viewer@user:tom[on_network:{"cidr":"10.0.0.0/8"}]"#]);
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({})).0, Decision::Conditional);
    let policy = |id: &str, text: &str| PolicyText { id: id.into(), text: text.into() };
    e.write_policies(vec![policy("admins", r#"permit(principal == user::"root", action, resource);"#)]).unwrap();
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({})), (Decision::Conditional, missing(&["user_ip"])));
    e.write_policies(vec![policy("tom", r#"permit(principal == user::"tom", action == Action::"view", resource);"#)]).unwrap();
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({})).0, Decision::Allowed);
    e.write_policies(vec![policy("no-tom", r#"forbid(principal == user::"tom", action == Action::"view", resource);"#)]).unwrap();
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({})).0, Decision::Denied);
    assert_eq!(check(&e, "doc:1#view@user:tom", json!({"user_ip": "10.0.0.1"})).0, Decision::Denied);
}

/// GHSA-jhg6-6qrx-38mr (CVE-2024-46989): two caveated subject sets on one relation,
/// only the second of which holds; stopping at the first member found lost it.
#[test]
fn advisory_every_caveated_branch_of_a_relation_is_considered() {
    let e = engine(&[
        r#"doc:1#viewer@group:small#member[below:{"limit":2}]"#,
        r#"doc:1#viewer@group:large#member[below:{"limit":4}]"#,
        "group:small#member@user:bob",
        "group:large#member@user:bob",
    ]);
    assert_eq!(check(&e, "doc:1#view@user:bob", json!({"count": 3})).0, Decision::Allowed);
    assert_eq!(check(&e, "doc:1#view@user:bob", json!({"count": 5})).0, Decision::Denied);
    assert_eq!(check(&e, "doc:1#view@user:bob", json!({})), (Decision::Conditional, missing(&["count"])));
}

/// GHSA-cwwm-hr97-qfxm (CVE-2025-49011): the same through an arrow, several caveated
/// tupleset relationships of which only a later one holds.
#[test]
fn advisory_every_caveated_branch_of_an_arrow_is_considered() {
    const ARROWS: &str = r#"
        definition user {}
        caveat role_is(actual string, expected string) { actual == expected }
        definition team {
            relation member: user
        }
        definition doc {
            relation owner: team with role_is
            permission read = owner->member
        }
    "#;
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(ARROWS).unwrap();
    e.write(&touches(&[
        r#"doc:budget#owner@team:finance[role_is:{"expected":"viewer"}]"#,
        r#"doc:budget#owner@team:board[role_is:{"expected":"admin"}]"#,
        "team:finance#member@user:maria",
        "team:board#member@user:maria",
    ]))
    .unwrap();
    assert_eq!(check(&e, "doc:budget#read@user:maria", json!({"actual": "admin"})).0, Decision::Allowed);
    assert_eq!(check(&e, "doc:budget#read@user:maria", json!({"actual": "viewer"})).0, Decision::Allowed);
    assert_eq!(check(&e, "doc:budget#read@user:maria", json!({"actual": "guest"})).0, Decision::Denied);
}

/// CVE-2024-48909: LookupResources through an intersection and an arrow lost the
/// request's context in nested steps, answering conditional what the context decides.
#[test]
fn advisory_lookups_carry_the_request_context_all_the_way_down() {
    const LR: &str = r#"
        caveat unexpired(expires_at timestamp, now timestamp) { now < expires_at }
        definition user {}
        definition container {
            relation access: user with unexpired
            permission accesses = access
        }
        definition resource {
            relation container: container
            relation viewer: user with unexpired
            permission viewers = viewer & container->accesses
        }
    "#;
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(LR).unwrap();
    e.write(&touches(&[
        "resource:r#container@container:c",
        r#"resource:r#viewer@user:tom[unexpired:{"expires_at":"2024-10-03T14:16:30Z"}]"#,
        r#"container:c#access@user:tom[unexpired:{"expires_at":"2024-10-03T07:16:28-07:00"}]"#,
    ]))
    .unwrap();
    let lookup = |now: &str| {
        let context = json!({ "now": now });
        e.lookup_resources(&LookupResourcesRequest {
            resource_type: "resource",
            permission: "viewers",
            subject_type: "user",
            subject_id: "tom",
            subject_relation: None,
            consistency: Consistency::FullyConsistent,
            cursor: None,
            limit: None,
            context: context.as_object(),
        })
        .unwrap()
        .resources
    };
    let found = lookup("2023-01-01T00:00:00Z");
    assert_eq!(found.len(), 1);
    assert!(found[0].missing_context.is_empty(), "decided by the context, not conditional: {found:?}");
    assert!(lookup("2025-01-01T00:00:00Z").is_empty());
}

#[test]
fn a_context_nested_too_deep_is_refused() {
    let e = engine(&[]);
    let mut deep = json!("10.0.0.0/8");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let text = format!(r#"doc:1#viewer@user:tom[on_network:{{"cidr":{deep}}}]"#);
    let err = e.write(&touches(&[&text])).unwrap_err().to_string();
    assert!(err.contains("nests deeper"), "{err}");
}

#[test]
fn expand_shows_each_relationships_caveat() {
    let e = engine(&[
        "doc:1#viewer@user:ann",
        r#"doc:1#viewer@user:bob[on_network:{"cidr":"10.0.0.0/8"}]"#,
        "doc:1#parent@folder:f[flag]",
        "folder:f#viewer@user:cid",
    ]);
    let (tree, _) = e.expand("doc", "1", "view", Consistency::FullyConsistent).unwrap();
    let ExpandNode::Union(children) = &tree.node else { panic!("{tree:?}") };
    let ExpandNode::Leaf(subjects) = &children[0].node else { panic!("{tree:?}") };
    let shown: Vec<(String, Option<&ExpandCaveat>)> =
        subjects.iter().map(|s| (s.subject.to_string(), s.caveat.as_ref())).collect();
    assert_eq!(shown[0], ("user:ann".to_string(), None));
    assert_eq!(shown[1].0, "user:bob");
    let caveat = shown[1].1.unwrap();
    assert_eq!(caveat.name, "on_network");
    assert_eq!(caveat.context, json!({"cidr": "10.0.0.0/8"}).as_object().cloned());
    assert_eq!(caveat.expression.trim(), "user_ip.in_cidr(cidr)");
    // The arrow's child carries the caveat of the relationship it went through.
    let ExpandNode::Arrow { children: reached, .. } = &children[1].node else { panic!("{tree:?}") };
    assert_eq!(reached.len(), 1);
    assert_eq!(reached[0].resource.to_string(), "folder:f");
    let through = reached[0].caveat.as_ref().unwrap();
    assert_eq!((through.name.as_str(), through.context.as_ref(), through.expression.trim()), ("flag", None, "on"));
    assert!(tree.caveat.is_none() && children[0].caveat.is_none());
}
