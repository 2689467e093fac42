//! Engine behaviour through its public API: writes, validation, MVCC, Check semantics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

use std::sync::Arc;

use arbiter_engine::*;
use arbiter_schema::{parse_relationship, Relationship};

const SCHEMA: &str = r#"
use expiration

definition user {}

definition group {
    relation member: user | group#member
}

definition folder {
    relation parent: folder
    relation viewer: user | group#member
    permission view = viewer + parent->view
}

definition doc {
    relation parent: folder
    relation owner: user
    relation viewer: user | user:* | group#member | user with expiration
    relation banned: user
    permission edit = owner
    permission view = (viewer + edit + parent->view) - banned
}
"#;

fn engine_with(config: EngineConfig, rels: &[&str]) -> Engine {
    let engine = Engine::in_memory(config);
    engine.write_schema(SCHEMA).unwrap();
    if !rels.is_empty() {
        engine.write(&touches(rels)).unwrap();
    }
    engine
}

fn engine(rels: &[&str]) -> Engine {
    engine_with(EngineConfig::default(), rels)
}

fn touches(rels: &[&str]) -> Vec<RelationshipUpdate> {
    rels.iter()
        .map(|r| RelationshipUpdate {
            op: UpdateOp::Touch,
            relationship: parse_relationship(r).unwrap(),
        })
        .collect()
}

fn update(op: UpdateOp, r: &str) -> RelationshipUpdate {
    RelationshipUpdate {
        op,
        relationship: parse_relationship(r).unwrap(),
    }
}

/// `doc:1#view@user:tom` -> allowed?
fn check_with(engine: &Engine, q: &str, consistency: Consistency) -> Result<bool, EngineError> {
    let (res, rest) = q.split_once('#').unwrap();
    let (perm, sub) = rest.split_once('@').unwrap();
    let (rt, rid) = res.split_once(':').unwrap();
    let (sub_obj, sub_rel) = match sub.split_once('#') {
        Some((o, r)) => (o, Some(r)),
        None => (sub, None),
    };
    let (st, sid) = sub_obj.split_once(':').unwrap();
    engine
        .check(&CheckRequest {
            resource_type: rt,
            resource_id: rid,
            permission: perm,
            subject_type: st,
            subject_id: sid,
            subject_relation: sub_rel,
            consistency,
            context: None,
            ..Default::default()
        })
        .map(|r| r.decision == Decision::Allowed)
}

fn check(engine: &Engine, q: &str) -> bool {
    check_with(engine, q, Consistency::MinimizeLatency).unwrap()
}

#[test]
fn every_construct() {
    let e = engine(&[
        "doc:1#owner@user:olga",
        "doc:1#viewer@user:vic",
        "doc:1#viewer@group:eng#member",
        "group:eng#member@user:gina",
        "group:eng#member@group:core#member",
        "group:core#member@user:carl",
        "doc:1#parent@folder:f",
        "folder:f#parent@folder:root",
        "folder:root#viewer@user:rita",
        "doc:1#banned@user:carl",
        "doc:2#viewer@user:*",
        "doc:2#banned@user:bob",
    ]);
    for q in [
        "doc:1#view@user:olga",
        "doc:1#edit@user:olga",
        "doc:1#view@user:vic",
        "doc:1#view@user:gina",
        "doc:1#view@user:rita",
    ] {
        assert!(check(&e, q), "{q}");
    }
    for q in [
        "doc:1#edit@user:vic",
        "doc:1#view@user:carl",
        "doc:1#view@user:nobody",
        "doc:2#view@user:bob",
    ] {
        assert!(!check(&e, q), "{q}");
    }
    assert!(check(&e, "doc:2#view@user:anyone-at-all"));
    // Subject sets as subjects.
    assert!(check(&e, "doc:1#viewer@group:eng#member"));
    assert!(check(&e, "doc:1#view@group:core#member"));
    assert!(check(&e, "group:eng#member@group:eng#member"));
    assert!(
        !check(&e, "doc:2#view@group:eng#member"),
        "a wildcard grants objects, not subject sets"
    );
    // An id nobody wrote.
    assert!(!check(&e, "doc:never-written#view@user:olga"));
}

#[test]
fn cycles_in_data_terminate() {
    let e = engine(&[
        "group:a#member@group:b#member",
        "group:b#member@group:c#member",
        "group:c#member@group:a#member",
        "group:c#member@user:cy",
        "folder:x#parent@folder:y",
        "folder:y#parent@folder:x",
        "folder:y#viewer@user:yan",
    ]);
    assert!(check(&e, "group:a#member@user:cy"));
    assert!(check(&e, "group:b#member@user:cy"));
    assert!(!check(&e, "group:a#member@user:stranger"));
    assert!(check(&e, "folder:x#view@user:yan"));
    assert!(!check(&e, "folder:x#view@user:stranger"));
}

fn group_chain(n: usize) -> Vec<String> {
    let mut rels: Vec<String> = (0..n)
        .map(|i| format!("group:g{i}#member@group:g{}#member", i + 1))
        .collect();
    rels.push(format!("group:g{n}#member@user:deep"));
    rels
}

#[test]
fn depth_limit_is_a_clear_error() {
    let rels = group_chain(60);
    let refs: Vec<&str> = rels.iter().map(|s| s.as_str()).collect();
    let e = engine(&refs);
    let err = check_with(
        &e,
        "group:g0#member@user:deep",
        Consistency::MinimizeLatency,
    )
    .unwrap_err();
    assert!(
        matches!(err, EngineError::DepthExceeded { limit: 50, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("depth limit of 50 exceeded while checking `group:g"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    // Within the limit the same data answers.
    assert!(check(&e, "group:g20#member@user:deep"));
    // The limit is configurable.
    let e = engine_with(
        EngineConfig {
            max_depth: 100,
            ..EngineConfig::default()
        },
        &refs,
    );
    assert!(check(&e, "group:g0#member@user:deep"));
}

#[test]
fn expiration_is_judged_at_request_time() {
    let e = engine(&[
        "doc:1#viewer@user:past[expiration:2020-01-01T00:00:00Z]",
        "doc:1#viewer@user:future[expiration:2300-01-01T00:00:00Z]",
    ]);
    assert!(!check(&e, "doc:1#view@user:past"));
    assert!(check(&e, "doc:1#view@user:future"));
    let req = CheckRequest {
        resource_type: "doc",
        resource_id: "1",
        permission: "view",
        subject_type: "user",
        subject_id: "past",
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        context: None,
        ..Default::default()
    };
    let before = chrono::DateTime::parse_from_rfc3339("2019-12-31T23:59:59Z")
        .unwrap()
        .timestamp_micros();
    let at = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
        .unwrap()
        .timestamp_micros();
    assert_eq!(
        e.check_at(&req, before).unwrap().decision,
        Decision::Allowed
    );
    assert_eq!(
        e.check_at(&req, at).unwrap().decision,
        Decision::Denied,
        "invisible from the expiration on"
    );
}

/// Folders inheriting `edit` and `view` from their parents, which Check climbs once
/// (both permissions along `parent`): expiring parents, subject sets of the inherited
/// permissions, and the depth limit, as the recursion they replace answers them.
#[test]
fn folder_chains_are_climbed_with_expirations_subject_sets_and_the_depth_limit() {
    const FOLDERS: &str = "use expiration
        definition user {}
        definition folder {
            relation parent: folder | folder with expiration
            relation owner: user
            relation viewer: user | folder#edit
            permission edit = owner + parent->edit
            permission view = edit + viewer + parent->view
        }";
    let load = |config: EngineConfig| {
        let e = Engine::in_memory(config);
        e.write_schema(FOLDERS).unwrap();
        e.write(&touches(&[
            "folder:f1#owner@user:ann",
            "folder:f2#parent@folder:f1[expiration:2020-01-01T00:00:00Z]",
            "folder:f2#viewer@user:bob",
            "folder:f3#parent@folder:f2",
            "folder:f4#parent@folder:f3",
            "folder:f4#viewer@folder:x#edit",
            "folder:x#owner@user:xena",
        ]))
        .unwrap();
        e
    };
    let e = load(EngineConfig::default());
    let at = |q: &str, when: &str| {
        let (res, rest) = q.split_once('#').unwrap();
        let (perm, sub) = rest.split_once('@').unwrap();
        let (sub_obj, sub_rel) = match sub.split_once('#') {
            Some((o, r)) => (o, Some(r)),
            None => (sub, None),
        };
        let now = chrono::DateTime::parse_from_rfc3339(when).unwrap().timestamp_micros();
        let req = CheckRequest {
            resource_type: res.split_once(':').unwrap().0,
            resource_id: res.split_once(':').unwrap().1,
            permission: perm,
            subject_type: sub_obj.split_once(':').unwrap().0,
            subject_id: sub_obj.split_once(':').unwrap().1,
            subject_relation: sub_rel,
            ..Default::default()
        };
        e.check_at(&req, now).unwrap().decision == Decision::Allowed
    };
    let (before, after) = ("2019-12-31T23:59:59Z", "2020-01-01T00:00:00Z");
    for (q, was, is) in [
        // ann owns f1, three parents up from f4, through f2's expiring parent.
        ("folder:f4#view@user:ann", true, false),
        ("folder:f4#edit@user:ann", true, false),
        ("folder:f2#edit@user:ann", true, false),
        // bob views f2: f4's view, never its edit.
        ("folder:f4#view@user:bob", true, true),
        ("folder:f4#edit@user:bob", false, false),
        // A subject set of an inherited permission on an ancestor is in the permission.
        ("folder:f4#view@folder:f1#edit", true, false),
        ("folder:f4#view@folder:f2#view", true, true),
        ("folder:f4#edit@folder:f3#edit", true, true),
        ("folder:f3#edit@folder:f4#edit", false, false),
        // And a subject set written on the chain.
        ("folder:f4#view@user:xena", true, true),
        ("folder:f3#view@user:xena", false, false),
    ] {
        assert_eq!(at(q, before), was, "{q} before the expiration");
        assert_eq!(at(q, after), is, "{q} from the expiration on");
    }
    // Each ancestor is as deep as the recursion would reach it: g3's chain climbs three
    // parents, which a limit of two refuses unless an answer comes first.
    let e = load(EngineConfig { max_depth: 2, ..EngineConfig::default() });
    e.write(&touches(&["folder:g1#parent@folder:g0", "folder:g2#parent@folder:g1", "folder:g3#parent@folder:g2", "folder:g1#viewer@user:gil"]))
        .unwrap();
    let err = check_with(&e, "folder:g3#view@user:nobody", Consistency::MinimizeLatency).unwrap_err();
    assert!(matches!(err, EngineError::DepthExceeded { limit: 2, .. }), "{err}");
    assert!(check(&e, "folder:g3#view@user:gil"));
    assert!(!check(&e, "folder:g2#view@user:nobody"));
}

#[test]
fn bad_writes_name_the_problem_and_change_nothing() {
    let e = engine(&["doc:1#owner@user:olga"]);
    let rev = e.revision();
    let cases: &[(&str, &str)] = &[
        ("nosuch:1#owner@user:a", "undefined type `nosuch`"),
        (
            "doc:1#nosuch@user:a",
            "undefined relation `nosuch` on `doc`",
        ),
        ("doc:1#view@user:a", "`view` on `doc` is a permission"),
        (
            "doc:1#owner@group:eng#member",
            "subject `group#member` is not allowed on `doc#owner` (allowed: user)",
        ),
        (
            "doc:1#owner@user:*",
            "subject `user:*` is not allowed on `doc#owner`",
        ),
        (
            "doc:1#owner@user:a[expiration:2300-01-01T00:00:00Z]",
            "subject `user with expiration` is not allowed",
        ),
        (
            "doc:1#viewer@group:eng#nosuch",
            "undefined relation `nosuch` on `group`",
        ),
        (
            "doc:1#owner@user:a[somecaveat]",
            "caveat `somecaveat` is not defined in the schema",
        ),
    ];
    for (rel, needle) in cases {
        // A valid update first: it must not survive the failing one.
        let updates = vec![
            update(UpdateOp::Touch, "doc:9#owner@user:ok"),
            update(UpdateOp::Touch, rel),
        ];
        let err = e.write(&updates).unwrap_err();
        assert!(err.to_string().contains(needle), "{rel}: {err}");
        assert_eq!(e.revision(), rev, "{rel}");
        assert!(
            !check(&e, "doc:9#edit@user:ok"),
            "{rel}: partial write visible"
        );
    }
    let long = format!("doc:{}#owner@user:a", "x".repeat(1025));
    let mut r = parse_relationship("doc:1#owner@user:a").unwrap();
    r.resource.object_id = "x".repeat(1025);
    let err = e
        .write(&[RelationshipUpdate {
            op: UpdateOp::Touch,
            relationship: r,
        }])
        .unwrap_err();
    assert!(err.to_string().contains("1025 bytes"), "{long}: {err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    let dup = vec![
        update(UpdateOp::Touch, "doc:1#owner@user:x"),
        update(UpdateOp::Delete, "doc:1#owner@user:x"),
    ];
    let err = e.write(&dup).unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");

    let err = e
        .write(&[update(UpdateOp::Create, "doc:1#owner@user:olga")])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "relationship `doc:1#owner@user:olga` already exists"
    );
    assert_eq!(e.revision(), rev);
}

#[test]
fn create_touch_delete() {
    let e = engine(&[]);
    e.write(&[update(UpdateOp::Create, "doc:1#owner@user:a")])
        .unwrap();
    assert!(check(&e, "doc:1#edit@user:a"));
    e.write(&[update(UpdateOp::Touch, "doc:1#owner@user:a")])
        .unwrap();
    e.write(&[update(UpdateOp::Delete, "doc:1#owner@user:a")])
        .unwrap();
    assert!(!check(&e, "doc:1#edit@user:a"));
    // Deleting what is not there is not an error.
    e.write(&[update(UpdateOp::Delete, "doc:1#owner@user:a")])
        .unwrap();
    assert_eq!(e.current().len(), 0);
}

#[test]
fn revisions_are_snapshots() {
    let e = engine(&["doc:1#owner@user:a"]);
    let r1 = e.revision();
    let r2 = e
        .write(&touches(&["doc:2#owner@user:a", "doc:3#owner@user:a"]))
        .unwrap();
    assert_eq!(r2, r1 + 1);
    let old = Consistency::AtExactSnapshot(r1);
    assert!(!check_with(&e, "doc:2#edit@user:a", old).unwrap());
    assert!(!check_with(&e, "doc:3#edit@user:a", old).unwrap());
    assert!(check_with(&e, "doc:2#edit@user:a", Consistency::AtExactSnapshot(r2)).unwrap());
    assert!(check_with(&e, "doc:3#edit@user:a", Consistency::AtLeastAsFresh(r1)).unwrap());
    let err = check_with(&e, "doc:2#edit@user:a", Consistency::AtLeastAsFresh(r2 + 5)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

/// The groups a subject is in are kept per thread for the graphs with the same groups
/// (the closure cache): each answer must still be that of its own revision and engine.
#[test]
fn nested_group_answers_follow_the_revision_and_the_engine() {
    let rels = ["doc:1#viewer@group:eng#member", "group:eng#member@group:core#member", "group:core#member@user:ann"];
    let a = engine(&rels);
    let q = "doc:1#view@user:ann";
    assert!(check(&a, q));
    let with_ann = a.revision();
    let without = a.write(&[update(UpdateOp::Delete, "group:core#member@user:ann")]).unwrap();
    assert!(!check(&a, q), "a removed membership is gone at the next revision");
    // A revision that changes no group keeps the cached groups, and still answers right.
    a.write(&touches(&["doc:2#viewer@user:ann"])).unwrap();
    assert!(!check(&a, q));
    assert!(check(&a, "doc:2#view@user:ann"));
    assert!(check_with(&a, q, Consistency::AtExactSnapshot(with_ann)).unwrap());
    assert!(!check_with(&a, q, Consistency::AtExactSnapshot(without)).unwrap());
    // Another engine at the same revisions with other contents.
    let b = engine(&["doc:1#viewer@group:eng#member", "group:eng#member@group:core#member", "group:core#member@user:bob"]);
    b.write(&touches(&["group:eng#member@user:cat"])).unwrap();
    b.write(&touches(&["doc:2#viewer@user:cat"])).unwrap();
    assert_eq!(b.revision(), a.revision());
    assert!(!check(&b, q));
    assert!(check(&b, "doc:1#view@user:cat"));
    assert!(!check(&a, "doc:1#view@user:cat"));
    a.write(&touches(&["group:eng#member@user:ann"])).unwrap();
    assert!(check(&a, q), "a membership added at a later revision is found");
    assert!(!check(&b, q));
    // CheckBulk shares the same cache.
    let items = [check_req("doc:1", "view", "user:ann"), check_req("doc:1", "view", "user:cat"), check_req("doc:1", "view", "user:bob")];
    let answers = |e: &Engine| -> Vec<bool> {
        e.check_bulk(&items, Consistency::MinimizeLatency).unwrap().0.into_iter().map(|r| r.unwrap() == Decision::Allowed).collect()
    };
    assert_eq!(answers(&a), [true, false, false]);
    assert_eq!(answers(&b), [false, true, true]);
}

#[test]
fn snapshots_outside_the_window_are_too_old() {
    let config = EngineConfig {
        history_window: std::time::Duration::ZERO,
        ..EngineConfig::default()
    };
    let e = engine_with(config, &["doc:1#owner@user:a"]);
    let r1 = e.revision();
    e.write(&touches(&["doc:2#owner@user:a"])).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    e.write(&touches(&["doc:3#owner@user:a"])).unwrap();
    let err = check_with(&e, "doc:1#edit@user:a", Consistency::AtExactSnapshot(r1)).unwrap_err();
    assert!(err.to_string().starts_with("snapshot too old"), "{err}");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn history_keeps_a_bounded_number_of_changes() {
    // A bulk import in batches must not pin every batch's copies for the whole window.
    let config = EngineConfig { history_max_changes: 3, ..EngineConfig::default() };
    // (A change copies its object and its subject's list: each here holds only it.)
    let e = engine_with(config, &["doc:1#owner@user:a"]);
    let r1 = e.revision();
    e.write(&touches(&["doc:2#owner@user:b", "doc:3#owner@user:c"])).unwrap();
    let r2 = e.revision();
    assert!(check_with(&e, "doc:1#edit@user:a", Consistency::AtExactSnapshot(r1)).unwrap());
    e.write(&touches(&["doc:4#owner@user:d", "doc:5#owner@user:e"])).unwrap();
    // r1 fell out (4 changes after it > 3); r2 is still there (2 after it).
    let err = check_with(&e, "doc:1#edit@user:a", Consistency::AtExactSnapshot(r1)).unwrap_err();
    assert!(err.to_string().starts_with("snapshot too old"), "{err}");
    assert!(!check_with(&e, "doc:4#edit@user:d", Consistency::AtExactSnapshot(r2)).unwrap());
}

#[test]
fn history_counts_the_lists_a_change_copies() {
    // One more document for a user who owns fifty: its object is new, but the user's
    // reverse list (short, so kept whole) is copied with it: 26 (51 reverse entries and
    // the new edge, a relationship counting once for both indexes) > 20.
    let config = EngineConfig { history_max_changes: 20, ..EngineConfig::default() };
    let owned: Vec<String> = (0..50).map(|i| format!("doc:{i}#owner@user:a")).collect();
    let e = engine_with(config, &owned.iter().map(String::as_str).collect::<Vec<_>>());
    let r = e.revision();
    e.write(&touches(&["doc:50#owner@user:a"])).unwrap();
    let err = check_with(&e, "doc:1#edit@user:a", Consistency::AtExactSnapshot(r)).unwrap_err();
    assert!(err.to_string().starts_with("snapshot too old"), "{err}");
}

#[test]
fn readers_never_see_half_a_write() {
    let e = Arc::new(engine(&[]));
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                let a = format!("doc:{i}#owner@user:w");
                let b = format!("doc:{i}#viewer@user:w");
                e.write(&touches(&[&a, &b])).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let rev = e.revision();
                    let i = rev % 300;
                    let at = Consistency::AtExactSnapshot(rev);
                    let owner = check_with(&e, &format!("doc:{i}#edit@user:w"), at).unwrap();
                    let viewer = check_with(&e, &format!("doc:{i}#viewer@user:w"), at).unwrap();
                    assert_eq!(owner, viewer, "revision {rev} shows half of a write");
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn schema_changes_that_orphan_are_refused() {
    let e = engine(&[
        "doc:1#owner@user:a",
        "doc:2#owner@user:b",
        "doc:1#viewer@user:c",
    ]);
    let rev = e.revision();
    let without_owner = SCHEMA
        .replace("relation owner: user\n", "")
        .replace("permission edit = owner", "permission edit = nil");
    let err = e.write_schema(&without_owner).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("the schema change would orphan 2 existing relationship(s)"),
        "{msg}"
    );
    assert!(
        msg.contains("`doc:1#owner@user:a` (relation `owner` no longer exists on `doc`)"),
        "{msg}"
    );
    assert_eq!(e.revision(), rev);
    assert_eq!(e.schema_text().as_deref(), Some(SCHEMA));
    // Once the relationships are gone the change goes through.
    e.write(&[
        update(UpdateOp::Delete, "doc:1#owner@user:a"),
        update(UpdateOp::Delete, "doc:2#owner@user:b"),
    ])
    .unwrap();
    e.write_schema(&without_owner).unwrap();
    assert!(check(&e, "doc:1#view@user:c"));
}

#[test]
fn invalid_schema_is_refused_with_positions() {
    let e = engine(&[]);
    let err = e.write_schema("definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewr\n}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid schema: undefined relation `viewr` on `doc` (line 4, column 21)"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(e.schema_text().as_deref(), Some(SCHEMA));
}

#[test]
fn bad_checks_name_the_problem() {
    let e = engine(&["doc:1#owner@user:a"]);
    for (q, needle) in [
        ("nosuch:1#view@user:a", "undefined type `nosuch`"),
        (
            "doc:1#nosuch@user:a",
            "undefined relation `nosuch` on `doc`",
        ),
        ("doc:1#view@nosuch:a", "undefined type `nosuch`"),
        (
            "doc:1#view@group:eng#nosuch",
            "undefined relation `nosuch` on `group`",
        ),
        ("doc:1#view@user:*", "cannot check a wildcard subject"),
        ("doc:a b#view@user:a", "contains ` `"),
    ] {
        let err = check_with(&e, q, Consistency::MinimizeLatency).unwrap_err();
        assert!(err.to_string().contains(needle), "{q}: {err}");
    }
}

#[test]
fn reopening_a_store_rebuilds_the_graph() {
    let store = Arc::new(MemoryStore::default());
    let e = Engine::open(Box::new(store.clone()), EngineConfig::default()).unwrap();
    e.write_schema(SCHEMA).unwrap();
    e.write(&touches(&[
        "doc:1#owner@user:a",
        "doc:1#viewer@user:b[expiration:2300-01-01T00:00:00Z]",
    ]))
    .unwrap();
    e.write(&[
        update(UpdateOp::Delete, "doc:1#owner@user:a"),
        update(UpdateOp::Touch, "doc:2#owner@user:a"),
    ])
    .unwrap();
    let rev = e.revision();
    drop(e);
    let e = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
    assert_eq!(e.revision(), rev);
    assert!(!check(&e, "doc:1#edit@user:a"));
    assert!(check(&e, "doc:2#edit@user:a"));
    assert!(check(&e, "doc:1#view@user:b"));
}

/// The graph rebuilt at start (sorted bulk build) is the graph the writes built
/// (incremental merges): same relationships, same forward lists, same reverse index.
#[test]
fn the_bulk_built_graph_equals_the_written_one() {
    let store = Arc::new(MemoryStore::default());
    let e = Engine::open(Box::new(store.clone()), EngineConfig::default()).unwrap();
    e.write_schema(SCHEMA).unwrap();
    // Deterministic pseudo-random writes and deletes over a small id space, so lists
    // grow, shrink and empty out.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _ in 0..40 {
        let mut batch = std::collections::BTreeMap::new();
        for _ in 0..25 {
            let r = match next(5) {
                0 => format!("doc:d{}#viewer@user:u{}", next(30), next(20)),
                1 => format!("doc:d{}#viewer@group:g{}#member", next(30), next(5)),
                2 => format!("group:g{}#member@user:u{}", next(5), next(20)),
                3 => format!("doc:d{}#parent@folder:f{}", next(30), next(6)),
                _ => format!("doc:d{}#viewer@user:u{}[expiration:2300-01-01T00:00:00Z]", next(30), next(20)),
            };
            let op = if next(3) == 0 { UpdateOp::Delete } else { UpdateOp::Touch };
            batch.insert(r.split('[').next().unwrap_or_default().to_string(), update(op, &r));
        }
        e.write(&batch.into_values().collect::<Vec<_>>()).unwrap();
    }
    let written = e.current();
    let reopened = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
    let built = reopened.current();
    let describe = |engine: &Engine, g: &arbiter_engine::graph::GraphVersion| {
        let mut all: Vec<String> = g.iter().map(|r| engine.describe(&r)).collect();
        all.sort();
        all
    };
    assert!(written.len() > 100, "the test should store a fair number");
    assert_eq!(built.len(), written.len());
    assert_eq!(built.expiring(), written.expiring());
    assert_eq!(describe(&reopened, &built), describe(&e, &written));
    // The reverse index, subject by subject, through the public lookups.
    for u in 0..20 {
        for q in [format!("user:u{u}"), format!("group:g{}#member", u % 5)] {
            let want = lr(&e, "doc", "view", &q, None, None);
            let got = lr(&reopened, "doc", "view", &q, None, None);
            assert_eq!(got, want, "LookupResources for {q}");
        }
    }
}

fn lr(
    e: &Engine,
    resource_type: &str,
    permission: &str,
    subject: &str,
    cursor: Option<&str>,
    limit: Option<usize>,
) -> LookupResourcesPage {
    let (st, sid) = subject.split_once(':').unwrap();
    let (sid, srel) = match sid.split_once('#') {
        Some((i, r)) => (i, Some(r)),
        None => (sid, None),
    };
    e.lookup_resources(&LookupResourcesRequest {
        context: None,
        resource_type,
        permission,
        subject_type: st,
        subject_id: sid,
        subject_relation: srel,
        consistency: Consistency::MinimizeLatency,
        cursor,
        limit,
    })
    .unwrap()
}

#[test]
fn lookup_resources_pages_in_id_order() {
    let e = engine(&[
        "doc:c#viewer@user:a",
        "doc:a#viewer@group:eng#member",
        "group:eng#member@user:a",
        "doc:b#parent@folder:f",
        "folder:f#viewer@user:a",
        "doc:d#viewer@user:a",
        "doc:d#banned@user:a",
        "doc:e#viewer@user:*",
    ]);
    let all = lr(&e, "doc", "view", "user:a", None, None);
    assert_eq!(all.ids(), vec!["a", "b", "c", "e"]);
    assert_eq!(all.next_cursor, None);
    let p1 = lr(&e, "doc", "view", "user:a", None, Some(3));
    assert_eq!(p1.ids(), vec!["a", "b", "c"]);
    let p2 = lr(
        &e,
        "doc",
        "view",
        "user:a",
        p1.next_cursor.as_deref(),
        Some(3),
    );
    assert_eq!(p2.ids(), vec!["e"]);
    assert_eq!(p2.next_cursor, None);
    // Someone nobody wrote about still gets what the wildcard gives.
    assert_eq!(
        lr(&e, "doc", "view", "user:newcomer", None, None).ids(),
        vec!["e"]
    );
    // Subject sets.
    assert_eq!(
        lr(&e, "doc", "view", "group:eng#member", None, None).ids(),
        vec!["a"]
    );
    assert_eq!(
        lr(&e, "group", "member", "group:zzz#member", None, None).ids(),
        vec!["zzz"]
    );
}

#[test]
fn lookup_subjects_reports_wildcards_with_exclusions() {
    let e = engine(&[
        "doc:1#viewer@user:*",
        "doc:1#viewer@user:tom",
        "doc:1#banned@user:bob",
        "doc:1#viewer@group:eng#member",
        "group:eng#member@user:gina",
    ]);
    let req = LookupSubjectsRequest {
        context: None,
        resource_type: "doc",
        resource_id: "1",
        permission: "view",
        subject_type: "user",
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        cursor: None,
        limit: None,
        written_subject_sets_only: false,
    };
    let page = e.lookup_subjects(&req).unwrap();
    let ids: Vec<(&str, Vec<&str>)> = page
        .subjects
        .iter()
        .map(|s| (s.subject_id.as_str(), s.excluded_ids()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("*", vec!["bob"]),
            ("gina", vec![]),
            ("tom", vec![])
        ]
    );
    let first = e
        .lookup_subjects(&LookupSubjectsRequest {
            context: None,
            limit: Some(1),
            ..req
        })
        .unwrap();
    assert_eq!(first.subjects.len(), 1);
    let rest = e
        .lookup_subjects(&LookupSubjectsRequest {
            context: None,
            cursor: first.next_cursor.as_deref(),
            limit: Some(5),
            ..req
        })
        .unwrap();
    assert_eq!(
        rest.subjects
            .iter()
            .map(|s| s.subject_id.as_str())
            .collect::<Vec<_>>(),
        vec!["gina", "tom"]
    );
    let sets = e
        .lookup_subjects(&LookupSubjectsRequest {
            context: None,
            subject_type: "group",
            subject_relation: Some("member"),
            ..req
        })
        .unwrap();
    assert_eq!(
        sets.subjects
            .iter()
            .map(|s| s.subject_id.as_str())
            .collect::<Vec<_>>(),
        vec!["eng"]
    );
}

#[test]
fn expand_shows_the_rewrite() {
    let e = engine(&[
        "doc:1#owner@user:olga",
        "doc:1#parent@folder:f",
        "folder:f#viewer@user:rita",
        "doc:1#banned@user:bob",
    ]);
    let (tree, rev) = e
        .expand("doc", "1", "view", Consistency::MinimizeLatency)
        .unwrap();
    assert_eq!(rev, e.revision());
    assert_eq!(
        (tree.resource.to_string(), tree.relation.as_str()),
        ("doc:1".to_string(), "view")
    );
    let ExpandNode::Exclusion { base, subtract } = &tree.node else {
        panic!("{tree:?}")
    };
    let ExpandNode::Union(parts) = &base.node else {
        panic!("{base:?}")
    };
    assert_eq!(parts.len(), 3, "{parts:?}");
    let ExpandNode::Leaf(banned) = &subtract.node else {
        panic!("{subtract:?}")
    };
    assert_eq!(banned[0].subject.to_string(), "user:bob");
    let ExpandNode::Arrow {
        tupleset,
        computed,
        children,
        ..
    } = &parts[2].node
    else {
        panic!("{:?}", parts[2])
    };
    assert_eq!((tupleset.as_str(), computed.as_str()), ("parent", "view"));
    assert_eq!(children[0].resource.to_string(), "folder:f");
}

#[test]
fn densely_cyclic_data_stays_polynomial() {
    // Every group contains every other: without settling cycles once, a denied check
    // would explore every simple path (factorially many).
    let n = 30;
    let mut rels = Vec::new();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                rels.push(format!("group:g{i}#member@group:g{j}#member"));
            }
        }
    }
    rels.push(format!("group:g{}#member@user:last", n - 1));
    let refs: Vec<&str> = rels.iter().map(|s| s.as_str()).collect();
    let e = engine(&refs);
    for i in 0..n {
        assert!(!check(&e, &format!("group:g{i}#member@user:stranger")));
        assert!(check(&e, &format!("group:g{i}#member@user:last")));
    }
    let found = lr(&e, "group", "member", "user:last", None, None)
        .ids()
        .len();
    assert_eq!(found, n);
}

#[test]
fn memory_store_passes_the_store_suite() {
    // The memory store has no durable location: "reopen" hands back the same instance.
    let stores: std::sync::Mutex<std::collections::HashMap<String, Arc<MemoryStore>>> =
        Default::default();
    let factory = |name: &str| -> Result<Box<dyn RelationshipStore>, String> {
        let mut stores = stores.lock().unwrap();
        let store = stores.entry(name.to_string()).or_default().clone();
        Ok(Box::new(store))
    };
    let mut failures = arbiter_engine::store_suite::run(&factory);
    failures.extend(arbiter_engine::store_suite::run_policy_model(&factory));
    failures.extend(arbiter_engine::store_suite::run_caveats(&factory));
    assert!(failures.is_empty(), "{failures:#?}");
}

fn check_req<'a>(resource: &'a str, perm: &'a str, subject: &'a str) -> CheckRequest<'a> {
    let (rt, rid) = resource.split_once(':').unwrap();
    let (st, sid) = subject.split_once(':').unwrap();
    CheckRequest {
        resource_type: rt,
        resource_id: rid,
        permission: perm,
        subject_type: st,
        subject_id: sid,
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        context: None,
        ..Default::default()
    }
}

fn all_text(e: &Engine) -> Vec<String> {
    let page = e
        .read_relationships(
            &RelationshipFilter::default(),
            Consistency::MinimizeLatency,
            None,
            None,
        )
        .unwrap();
    page.relationships.iter().map(|r| r.to_string()).collect()
}

#[test]
fn filters_parse_print_and_refuse_malformed_text() {
    for text in [
        "doc",
        "doc:1",
        "doc#viewer",
        "doc:1#viewer@user",
        "doc@user:bob",
        "doc@group:eng#member",
        "doc@user#...",
    ] {
        assert_eq!(RelationshipFilter::parse(text).unwrap().to_string(), text);
    }
    assert_eq!(
        RelationshipFilter::parse("").unwrap(),
        RelationshipFilter::default()
    );
    for bad in [":1", "doc:", "doc#", "doc@", "doc@user:", "doc@user#"] {
        let e = RelationshipFilter::parse(bad).unwrap_err();
        assert!(e.to_string().contains(bad), "{bad}: {e}");
    }
}

#[test]
fn reads_select_by_filter_in_order_with_cursors() {
    let e = engine(&[
        "doc:b#viewer@user:tom",
        "doc:a#viewer@user:tom",
        "doc:a#owner@user:ann",
        "doc:c#viewer@group:eng#member",
        "group:eng#member@user:tom",
    ]);
    let read = |f: &str, cursor: Option<&str>, limit: Option<usize>| {
        e.read_relationships(
            &RelationshipFilter::parse(f).unwrap(),
            Consistency::MinimizeLatency,
            cursor,
            limit,
        )
        .unwrap()
    };
    let ids = |p: &ReadPage| {
        p.relationships
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&read("doc@user:tom", None, None)),
        ["doc:a#viewer@user:tom", "doc:b#viewer@user:tom"]
    );
    assert_eq!(
        ids(&read("doc:a", None, None)),
        ["doc:a#owner@user:ann", "doc:a#viewer@user:tom"]
    );
    assert_eq!(
        ids(&read("doc@group", None, None)),
        ["doc:c#viewer@group:eng#member"]
    );
    assert_eq!(read("doc@user#...", None, None).relationships.len(), 3);
    assert!(read("doc@user:nobody", None, None).relationships.is_empty());
    let first = read("doc", None, Some(2));
    assert_eq!(first.relationships.len(), 2);
    let rest = read("doc", first.next_cursor.as_deref(), Some(2));
    assert_eq!(
        ids(&rest),
        ["doc:b#viewer@user:tom", "doc:c#viewer@group:eng#member"]
    );
    assert_eq!(rest.next_cursor, None);
    let err = e
        .read_relationships(
            &RelationshipFilter::parse("nope").unwrap(),
            Consistency::MinimizeLatency,
            None,
            None,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn preconditions_and_filtered_deletes_are_atomic() {
    let e = engine(&[
        "doc:a#viewer@user:tom",
        "doc:b#viewer@user:tom",
        "doc:c#viewer@user:ann",
    ]);
    let before = all_text(&e);
    let rev = e.revision();
    let must = |must_match, f: &str| Precondition {
        must_match,
        filter: RelationshipFilter::parse(f).unwrap(),
    };
    let err = e
        .write_with_preconditions(&touches(&["doc:d#viewer@user:x"]), &[must(true, "doc:zzz")])
        .unwrap_err();
    assert!(matches!(err, EngineError::PreconditionFailed(_)), "{err}");
    let err = e
        .write_with_preconditions(
            &touches(&["doc:d#viewer@user:x"]),
            &[must(false, "doc@user:tom")],
        )
        .unwrap_err();
    assert!(err.to_string().contains("doc@user:tom"), "{err}");
    let err = e
        .delete_matching(
            &RelationshipFilter::parse("doc@user:tom").unwrap(),
            &[],
            Some(1),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::TooManyMatches {
                count: 2,
                limit: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        (all_text(&e), e.revision()),
        (before, rev),
        "a refused write changed something"
    );
    e.write_with_preconditions(
        &touches(&["doc:d#viewer@user:x"]),
        &[must(true, "doc:a"), must(false, "doc:zzz")],
    )
    .unwrap();
    let (n, _) = e
        .delete_matching(
            &RelationshipFilter::parse("doc@user:tom").unwrap(),
            &[],
            Some(2),
        )
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        all_text(&e),
        ["doc:c#viewer@user:ann", "doc:d#viewer@user:x"]
    );
    // Nothing to delete: no new revision.
    let rev = e.revision();
    assert_eq!(
        e.delete_matching(&RelationshipFilter::parse("doc:zzz").unwrap(), &[], None)
            .unwrap(),
        (0, rev)
    );
}

#[test]
fn import_takes_the_last_of_repeated_relationships_and_sweep_reclaims_expired_ones() {
    let e = engine(&[]);
    let rels: Vec<_> = [
        "doc:a#viewer@user:tom",
        "doc:a#viewer@user:tom",
        "doc:a#viewer@user:ann[expiration:2000-01-01T00:00:00Z]",
        "doc:b#viewer@user:ann[expiration:2999-01-01T00:00:00Z]",
    ]
    .iter()
    .map(|r| parse_relationship(r).unwrap())
    .collect();
    e.import(rels).unwrap();
    assert_eq!(e.current().len(), 3);
    assert_eq!(e.current().expiring(), 2);
    assert!(!e
        .check(&check_req("doc:a", "view", "user:ann"))
        .map(|r| r.decision == Decision::Allowed)
        .unwrap());
    assert_eq!(e.sweep_expired(now_micros()).unwrap(), 1);
    assert_eq!(e.current().len(), 2);
    assert_eq!(e.current().expiring(), 1);
    assert_eq!(e.sweep_expired(now_micros()).unwrap(), 0);
    let bad = vec![parse_relationship("doc:a#nope@user:tom").unwrap()];
    let rev = e.revision();
    assert!(e.import(bad).is_err());
    assert_eq!(e.revision(), rev);
}

#[test]
fn check_bulk_answers_at_one_revision_with_per_item_errors() {
    let e = engine(&["doc:a#viewer@user:tom"]);
    let items = [
        check_req("doc:a", "view", "user:tom"),
        check_req("doc:a", "nope", "user:tom"),
        check_req("doc:b", "view", "user:tom"),
    ];
    let (answers, rev) = e.check_bulk(&items, Consistency::MinimizeLatency).unwrap();
    assert_eq!(rev, e.revision());
    assert_eq!(answers[0], Ok(Decision::Allowed));
    assert!(matches!(
        answers[1],
        Err(EngineError::UnknownRelation { .. })
    ));
    assert_eq!(answers[2], Ok(Decision::Denied));
}

/// CheckBulk answers as Check does, item by item, whether it touches its items' objects
/// first (graphs of at least `warm_min_relationships`) or not.
#[test]
fn check_bulk_answers_as_check_with_and_without_its_warm_pass() {
    let rels = [
        "doc:1#owner@user:olga",
        "doc:1#viewer@group:eng#member",
        "group:eng#member@group:core#member",
        "group:core#member@user:carl",
        "doc:1#parent@folder:f",
        "doc:2#parent@folder:g",
        "folder:g#parent@folder:f",
        "folder:f#parent@folder:root",
        "folder:root#viewer@user:rita",
        "folder:g#viewer@group:core#member",
        "doc:1#banned@user:carl",
        "doc:3#viewer@user:*",
        "doc:3#banned@user:bob",
    ];
    let users = ["user:olga", "user:carl", "user:rita", "user:bob", "user:nobody"];
    let docs = ["doc:1", "doc:2", "doc:3", "doc:none"];
    let mut items = Vec::new();
    for d in docs {
        for u in users {
            for p in ["view", "edit"] {
                items.push(check_req(d, p, u));
            }
        }
    }
    items.push(check_req("folder:g", "view", "user:rita"));
    items.push(CheckRequest { subject_relation: Some("member"), ..check_req("folder:g", "view", "group:core") });
    items.push(check_req("doc:2", "nope", "user:rita"));
    for warm_min_relationships in [0, usize::MAX] {
        let e = engine_with(EngineConfig { warm_min_relationships, ..EngineConfig::default() }, &rels);
        let (answers, _) = e.check_bulk(&items, Consistency::MinimizeLatency).unwrap();
        let singles: Vec<_> = items.iter().map(|r| e.check(r).map(|c| c.decision)).collect();
        assert_eq!(answers, singles, "warm from {warm_min_relationships} relationships");
        assert!(answers.iter().filter(|a| **a == Ok(Decision::Allowed)).count() >= 8);
    }
}

#[test]
fn explain_gives_the_granting_path() {
    let e = engine(&[
        "group:eng#member@user:tom",
        "folder:root#viewer@group:eng#member",
        "doc:a#parent@folder:root",
        "doc:b#viewer@user:*",
    ]);
    let path = e.explain(&check_req("doc:a", "view", "user:tom")).unwrap().path;
    assert_eq!(
        path,
        [
            "doc:a#parent@folder:root",
            "folder:root#viewer@group:eng#member",
            "group:eng#member@user:tom",
            "and not excluded by `banned` on doc:a"
        ]
    );
    let path = e.explain(&check_req("doc:b", "view", "user:zed")).unwrap().path;
    assert_eq!(path[0], "doc:b#viewer@user:*");
    let denied = e.explain(&check_req("doc:a", "view", "user:ann")).unwrap();
    assert_eq!((denied.decision, denied.path.is_empty()), (Decision::Denied, true)
    );
}

#[test]
fn listeners_and_the_changelog_see_every_commit_in_order() {
    let e = engine(&[]);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    e.subscribe(Box::new(move |c: &LoggedCommit| {
        s.lock()
            .unwrap()
            .push((c.revision, c.changes.len(), c.schema.is_some()))
    }));
    let r1 = e
        .write(&touches(&[
            "doc:a#viewer@user:tom",
            "doc:b#viewer@user:tom",
        ]))
        .unwrap();
    let (_, r2) = e
        .delete_matching(&RelationshipFilter::parse("doc:a").unwrap(), &[], None)
        .unwrap();
    let r3 = e.write_schema(SCHEMA).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [(r1, 2, false), (r2, 1, false), (r3, 0, true)]
    );
    let ChangesAfter::Commits(log) = e.changes_after(r1, 10).unwrap() else {
        panic!("changelog too old")
    };
    assert_eq!(log.iter().map(|c| c.revision).collect::<Vec<_>>(), [r2, r3]);
    assert_eq!(log[0].changes[0].op, ChangeOp::Delete);
}

fn change(op: ChangeOp, r: &str) -> Change {
    Change { op, relationship: parse_relationship(r).unwrap() }
}

/// A replica applies revisions ordered elsewhere: invalid changes are reported and left
/// out, never fatal; old revisions are skipped; the last change to a relationship wins.
#[test]
fn external_revisions_apply_in_order_and_reject_what_does_not_fit() {
    let store = Arc::new(MemoryStore::default());
    let e = Engine::open(Box::new(store.clone()), EngineConfig::default()).unwrap();
    let r = e.apply_external(3, vec![change(ChangeOp::Touch, "doc:1#owner@user:a")], Some(SCHEMA)).unwrap();
    assert_eq!((r.applied, r.rejected.len()), (1, 0));
    assert_eq!(e.revision(), 3);
    assert!(check(&e, "doc:1#edit@user:a"));
    let r = e
        .apply_external(
            7,
            vec![
                change(ChangeOp::Touch, "doc:2#owner@user:b"),
                change(ChangeOp::Touch, "doc:2#nope@user:b"),
                change(ChangeOp::Touch, "nothing:2#owner@user:b"),
                change(ChangeOp::Delete, "doc:1#owner@user:a"),
                change(ChangeOp::Touch, "doc:3#owner@user:c"),
                change(ChangeOp::Delete, "doc:3#owner@user:c"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(r.applied, 3, "{r:?}");
    assert_eq!(r.rejected.len(), 2, "{r:?}");
    assert!(r.rejected.iter().any(|m| m.contains("nope")), "{r:?}");
    assert_eq!(e.revision(), 7);
    assert!(!check(&e, "doc:1#edit@user:a"));
    assert!(check(&e, "doc:2#edit@user:b"));
    assert!(!check(&e, "doc:3#edit@user:c"));
    // Already applied: skipped.
    let r = e.apply_external(7, vec![change(ChangeOp::Touch, "doc:9#owner@user:z")], None).unwrap();
    assert_eq!(r, ApplyReport::default());
    assert!(!check(&e, "doc:9#edit@user:z"));
    // A schema that would orphan stored relationships is refused; the old one stays.
    let r = e.apply_external(8, vec![], Some("definition user {}")).unwrap();
    assert_eq!(r.rejected.len(), 1, "{r:?}");
    assert_eq!(e.revision(), 8);
    assert!(check(&e, "doc:2#edit@user:b"));
    // Durable in the engine's own store: a reopen resumes at the applied revision.
    drop(e);
    let e = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
    assert_eq!(e.revision(), 8);
    assert!(check(&e, "doc:2#edit@user:b"));
}

/// The plan_* calls judge a write exactly as the write would, and change nothing.
#[test]
fn planning_a_write_changes_nothing() {
    let e = engine(&["doc:1#owner@user:a", "doc:2#viewer@user:b"]);
    let rev = e.revision();
    let planned = e
        .plan_write(
            &[update(UpdateOp::Touch, "doc:3#owner@user:c"), update(UpdateOp::Delete, "doc:9#owner@user:z")],
            &[],
        )
        .unwrap();
    assert_eq!(planned.len(), 1, "the delete of an absent relationship logs nothing");
    assert!(matches!(
        e.plan_write(&[update(UpdateOp::Create, "doc:1#owner@user:a")], &[]),
        Err(EngineError::AlreadyExists(_))
    ));
    let filter = RelationshipFilter::parse("doc#viewer").unwrap();
    assert_eq!(e.plan_delete(&filter, &[], None).unwrap().len(), 1);
    assert!(matches!(e.plan_schema("definition user {}"), Err(EngineError::WouldOrphan { .. })));
    e.plan_schema(SCHEMA).unwrap();
    assert!(e.validate_import(&[parse_relationship("doc:1#nope@user:a").unwrap()]).is_err());
    assert_eq!(e.revision(), rev);
    assert!(!check(&e, "doc:3#edit@user:c"));
}

/// Groups of groups are answered by walking up from the subject (a nesting relation:
/// its only subject sets are itself); the answers must be those of the walk down, with
/// cycles, wildcards, expiring nesting edges, subject-set subjects, and a relation with
/// two kinds of subject set (not a nesting relation) beside it.
#[test]
fn nested_groups_answer_as_the_walk_down_would() {
    const NESTED: &str = r#"
use expiration

definition user {}

definition team {
    relation member: user | user:* | user with expiration | team#member | team#member with expiration
}

definition org {
    relation member: user | team#member | org#member
}

definition doc {
    relation viewer: team#member | org#member
    permission view = viewer
}
"#;
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(NESTED).unwrap();
    e.write(&touches(&[
        "team:a#member@team:b#member",
        "team:b#member@team:c#member",
        "team:c#member@user:u",
        "team:x#member@team:y#member",
        "team:y#member@team:x#member",
        "team:y#member@user:w",
        "team:past#member@team:c#member[expiration:2020-01-01T00:00:00Z]",
        "team:future#member@team:c#member[expiration:2300-01-01T00:00:00Z]",
        "team:lapsed#member@user:u[expiration:2020-01-01T00:00:00Z]",
        "team:pub#member@user:*",
        "team:outer#member@team:pub#member",
        "org:o#member@team:a#member",
        "org:o#member@org:p#member",
        "org:p#member@user:q",
        "doc:1#viewer@team:a#member",
        "doc:2#viewer@org:o#member",
        "doc:3#viewer@team:x#member",
        "doc:4#viewer@team:outer#member",
    ]))
    .unwrap();
    let cases = [
        ("team:a#member@user:u", true),
        ("team:b#member@user:u", true),
        ("team:a#member@user:v", false),
        ("doc:1#view@user:u", true),
        ("doc:1#view@user:w", false),
        // A cycle of groups: members found, and non-members end.
        ("team:x#member@user:w", true),
        ("team:y#member@user:w", true),
        ("doc:3#view@user:w", true),
        ("doc:3#view@user:u", false),
        // Expiring nesting edges and memberships.
        ("team:past#member@user:u", false),
        ("team:future#member@user:u", true),
        ("team:lapsed#member@user:u", false),
        // A wildcard member of a nested group: every user, but no subject set.
        ("team:outer#member@user:anyone", true),
        ("doc:4#view@user:anyone", true),
        ("team:outer#member@team:c#member", false),
        // A subject set as the subject: team:c#member is in a, through b.
        ("team:a#member@team:c#member", true),
        ("doc:1#view@team:c#member", true),
        ("team:c#member@team:a#member", false),
        ("team:c#member@team:c#member", true),
        // Not a nesting relation (two kinds of subject set), beside one.
        ("org:o#member@user:u", true),
        ("org:o#member@user:q", true),
        ("doc:2#view@user:u", true),
        ("doc:2#view@user:w", false),
    ];
    for (q, want) in cases {
        assert_eq!(check(&e, q), want, "{q}");
    }
    // Before the expirations, the expiring edges count.
    let before = chrono::DateTime::parse_from_rfc3339("2019-12-31T23:59:59Z").unwrap().timestamp_micros();
    for (resource, subject, want) in [("past", "u", true), ("lapsed", "u", true), ("a", "nobody", false)] {
        let req = CheckRequest {
            resource_type: "team",
            resource_id: resource,
            permission: "member",
            subject_type: "user",
            subject_id: subject,
            subject_relation: None,
            consistency: Consistency::MinimizeLatency,
            ..Default::default()
        };
        assert_eq!(e.check_at(&req, before).unwrap().decision == Decision::Allowed, want, "team:{resource}#member@user:{subject} in 2019");
    }
    // Removing a nesting edge takes the membership away at the next revision.
    e.write(&[RelationshipUpdate { op: UpdateOp::Delete, relationship: parse_relationship("team:b#member@team:c#member").unwrap() }])
        .unwrap();
    assert!(!check(&e, "team:a#member@user:u"));
    assert!(!check(&e, "doc:1#view@user:u"));
    assert!(check(&e, "team:c#member@user:u"));
}

#[test]
fn compaction_keeps_the_revision_and_every_answer() {
    let e = engine(&["doc:a#viewer@user:u", "folder:f#viewer@group:g#member", "group:g#member@user:v", "doc:b#parent@folder:f"]);
    let revision = e.revision();
    let before = all_text(&e);
    assert!(!e.compact_if_due(std::time::Duration::from_secs(3600)), "a small delta waits for quiet");
    assert!(e.compact_if_due(std::time::Duration::ZERO));
    assert!(!e.compact(), "nothing left to fold in");
    assert_eq!(e.revision(), revision);
    assert_eq!(all_text(&e), before);
    assert_eq!(e.check(&CheckRequest { consistency: Consistency::AtExactSnapshot(revision), ..check_req("doc:b", "view", "user:v") }).unwrap().decision, Decision::Allowed);
    assert!(check(&e, "doc:a#view@user:u"));
    // Writes after a compaction land beside the new indexes.
    e.write(&[update(UpdateOp::Delete, "group:g#member@user:v"), update(UpdateOp::Touch, "doc:c#viewer@user:v")]).unwrap();
    assert!(!check(&e, "doc:b#view@user:v"));
    assert!(check(&e, "doc:c#view@user:v"));
    assert!(e.compact());
    assert!(!check(&e, "doc:b#view@user:v"));
    assert!(check(&e, "doc:c#view@user:v"));
}

#[test]
fn a_compaction_counts_against_the_history_bound() {
    // Revisions kept for exact-snapshot reads pin the indexes they were built on; after
    // a compaction the old indexes are whole copies, so the bound lets them go.
    let config = EngineConfig { history_max_changes: 4, ..EngineConfig::default() };
    let e = engine_with(config, &["doc:1#owner@user:a", "doc:2#owner@user:a", "doc:3#owner@user:a", "doc:4#owner@user:a"]);
    e.write(&touches(&["doc:5#owner@user:a"])).unwrap();
    let r = e.revision();
    e.write(&touches(&["doc:6#owner@user:a"])).unwrap();
    // One change after `r`: still kept.
    assert!(!check_with(&e, "doc:6#edit@user:a", Consistency::AtExactSnapshot(r)).unwrap());
    // 6 relationships in all: the compacted revision weighs 6 > 4.
    assert!(e.compact());
    let err = check_with(&e, "doc:6#edit@user:a", Consistency::AtExactSnapshot(r)).unwrap_err();
    assert!(err.to_string().starts_with("snapshot too old"), "{err}");
    assert!(check_with(&e, "doc:6#edit@user:a", Consistency::AtExactSnapshot(e.revision())).unwrap());
}

#[test]
fn a_large_import_is_merged_into_new_indexes_with_every_answer_kept() {
    // An import large against the graph (here 3,000 relationships onto 500, some of
    // them pending in the delta) is merged straight into new flat indexes instead of
    // going through the delta: nothing written before may be lost, repeated
    // relationships stay single, expirations keep counting, and the revision before
    // it still reads as it did.
    let mut first: Vec<String> = (0..500).map(|i| format!("doc:d{i}#viewer@user:u{}", i % 50)).collect();
    first.push("group:g#member@user:grouped".into());
    first.push("folder:f#viewer@group:g#member".into());
    let refs: Vec<&str> = first.iter().map(String::as_str).collect();
    let e = engine(&refs);
    e.compact();
    // Pending in the delta when the import arrives: one deletion, one new relationship.
    e.write(&[update(UpdateOp::Delete, "doc:d0#viewer@user:u0"), update(UpdateOp::Touch, "doc:pending#owner@user:p")]).unwrap();
    let before = e.revision();
    let mut import: Vec<String> = (0..2_990).map(|i| format!("doc:d{}#parent@folder:f", 500 + i)).collect();
    // Already stored (the import touches them again), and given twice.
    import.extend((1..6).map(|i| format!("doc:d{i}#viewer@user:u{i}")));
    import.push("doc:d500#parent@folder:f".into());
    import.push("doc:soon#viewer@user:ann[expiration:2000-01-01T00:00:00Z]".into());
    import.push("doc:late#viewer@user:ann[expiration:2999-01-01T00:00:00Z]".into());
    let stored_before = all_text(&e);
    e.import(import.iter().map(|r| parse_relationship(r).unwrap()).collect()).unwrap();
    let after = all_text(&e);
    assert_eq!(e.current().len(), 500 + 2 - 1 + 1 + 2_990 + 2);
    // Reads leave out the expired one; the graph holds it until a sweep.
    assert_eq!(after.len() + 1, e.current().len());
    assert_eq!(e.current().expiring(), 2);
    assert!(!e.current().has_changes(), "merged into the flat indexes, no delta left");
    // Every relationship there before is still there.
    let after_set: std::collections::BTreeSet<&String> = after.iter().collect();
    assert!(stored_before.iter().all(|r| after_set.contains(r)));
    assert!(!check(&e, "doc:d0#view@user:u0"), "the pending deletion holds");
    assert!(check(&e, "doc:pending#edit@user:p"), "the pending write holds");
    assert!(check(&e, "doc:d7#view@user:u7"));
    assert!(check(&e, "doc:d3000#view@user:grouped"), "through the imported parent");
    assert!(check(&e, "doc:late#view@user:ann"));
    assert!(!check(&e, "doc:soon#view@user:ann"));
    // The reverse index agrees: everything under the folder is found from the group.
    let found = e
        .lookup_resources(
            &LookupResourcesRequest {
                context: None,
                resource_type: "doc",
                permission: "view",
                subject_type: "user",
                subject_id: "grouped",
                subject_relation: None,
                consistency: Consistency::MinimizeLatency,
                cursor: None,
                limit: None,
            },
        )
        .unwrap();
    assert_eq!(found.ids().len(), 2_990);
    // The revision before the import reads as it did.
    assert!(!check_with(&e, "doc:d3000#view@user:grouped", Consistency::AtExactSnapshot(before)).unwrap());
    assert_eq!(e.sweep_expired(now_micros()).unwrap(), 1);
}

/// A store whose disk is full for writes of more than a few relationships.
#[derive(Debug, Default)]
struct FullDiskStore(MemoryStore);

impl RelationshipStore for FullDiskStore {
    fn scan(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        self.0.scan(sink)
    }
    fn commit(&self, commit: &Commit<'_>) -> Result<(), StoreError> {
        if commit.changes.len() > 10 {
            return Err(StoreError("no space left on device".into()));
        }
        self.0.commit(commit)
    }
    fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, StoreError> {
        self.0.changes_after(revision, limit)
    }
}

#[test]
fn an_import_the_store_refuses_is_not_published() {
    // A large import is written to the store while the graph is built beside it: when
    // the store fails, the graph built meanwhile must be thrown away.
    let e = Engine::open(Box::new(FullDiskStore::default()), EngineConfig::default()).unwrap();
    e.write_schema(SCHEMA).unwrap();
    e.write(&touches(&["doc:kept#viewer@user:tom"])).unwrap();
    let revision = e.revision();
    let import: Vec<Relationship> =
        (0..5_000).map(|i| parse_relationship(&format!("doc:d{i}#viewer@user:tom")).unwrap()).collect();
    let err = e.import(import).unwrap_err();
    assert!(err.to_string().contains("no space left on device"), "{err}");
    assert_eq!(e.revision(), revision);
    assert_eq!(e.current().len(), 1);
    assert!(!check(&e, "doc:d7#view@user:tom"));
    assert!(check(&e, "doc:kept#view@user:tom"));
    // And a small import (written before the graph, on one thread) fails the same way.
    let small: Vec<Relationship> =
        (0..11).map(|i| parse_relationship(&format!("doc:s{i}#viewer@user:tom")).unwrap()).collect();
    assert!(e.import(small).is_err());
    assert_eq!(e.revision(), revision);
    assert!(!check(&e, "doc:s1#view@user:tom"));
}

#[test]
fn a_large_import_names_its_first_bad_relationship_and_writes_nothing() {
    // A large batch is validated in two halves side by side: whichever half finishes
    // first, the error is the batch's first bad relationship, and nothing is written.
    let e = engine(&["doc:kept#viewer@user:tom"]);
    let revision = e.revision();
    let batch = |bad: &[usize]| -> Vec<Relationship> {
        (0..4_000)
            .map(|i| {
                let text = if bad.contains(&i) { format!("doc:d{i}#nope{i}@user:tom") } else { format!("doc:d{i}#viewer@user:tom") };
                parse_relationship(&text).unwrap()
            })
            .collect()
    };
    for (bad, named) in [(vec![300, 3_500], "`nope300`"), (vec![3_500], "`nope3500`"), (vec![1_999, 2_000], "`nope1999`")] {
        let err = e.import(batch(&bad)).unwrap_err().to_string();
        assert!(err.contains(named), "{bad:?}: {err}");
        assert_eq!(e.revision(), revision, "{bad:?}: a refused import made a revision");
        assert_eq!(e.current().len(), 1);
    }
    e.import(batch(&[])).unwrap();
    assert_eq!(e.current().len(), 4_001);
}

#[test]
fn long_edge_lists_answer_alike_from_either_side() {
    // Past a few dozen edges, a direct hit is looked up in the subject's own list of
    // what names it; every kind of answer must stay the same.
    let mut rels: Vec<String> = (0..100).map(|i| format!("doc:big#viewer@user:u{i}")).collect();
    rels.push("doc:big#viewer@user:past[expiration:2020-01-01T00:00:00Z]".into());
    rels.push("doc:big#viewer@user:future[expiration:2300-01-01T00:00:00Z]".into());
    rels.push("doc:big#viewer@group:g#member".into());
    rels.push("group:g#member@user:in-group".into());
    rels.push("doc:big#owner@user:owner".into());
    // Users who name many things, so their own list is the longer one.
    for i in 0..200 {
        rels.push(format!("doc:d{i}#viewer@user:u5"));
        rels.push(format!("doc:d{i}#viewer@user:busy"));
    }
    let refs: Vec<&str> = rels.iter().map(String::as_str).collect();
    let e = engine(&refs);
    assert!(check(&e, "doc:big#view@user:u7"));
    assert!(check(&e, "doc:big#view@user:u5"), "a long list on both sides");
    assert!(!check(&e, "doc:big#view@user:busy"), "named elsewhere, not here");
    assert!(!check(&e, "doc:big#view@user:past"), "expired");
    assert!(check(&e, "doc:big#view@user:future"));
    assert!(check(&e, "doc:big#view@user:in-group"));
    assert!(check(&e, "doc:big#view@user:owner"), "named on another relation of the object");
    assert!(!check(&e, "doc:big#viewer@user:owner"));
    assert!(!check(&e, "doc:big#view@user:nobody"));
    assert!(check(&e, "doc:big#viewer@group:g#member"), "a subject set named directly");
}

/// The tenant gate: with a `platform/tenant` that has `relation suspended`, an object
/// whose type says `relation tenant: platform/tenant` is closed while its tenant is
/// suspended (Check, CheckBulk, explain and both lookups), and open again after; a type
/// without the relation, and a schema without the platform type, are not gated.
#[test]
fn a_suspended_tenants_objects_are_closed() {
    const GATED: &str = r#"
definition platform/platform {}
definition user {}
definition platform/tenant {
    relation suspended: platform/platform
}
definition doc {
    relation tenant: platform/tenant
    relation viewer: user | user:*
    permission view = viewer
}
definition note {
    relation viewer: user
}
"#;
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(GATED).unwrap();
    e.write(&touches(&[
        "doc:a#tenant@platform/tenant:t1",
        "doc:a#viewer@user:ann",
        "doc:b#tenant@platform/tenant:t2",
        "doc:b#viewer@user:ann",
        "doc:c#viewer@user:*",
        "doc:c#tenant@platform/tenant:t1",
        "note:n#viewer@user:ann",
    ]))
    .unwrap();
    let lookup = |e: &Engine| -> Vec<String> {
        e.lookup_resources(&LookupResourcesRequest {
            context: None,
            resource_type: "doc",
            permission: "view",
            subject_type: "user",
            subject_id: "ann",
            subject_relation: None,
            consistency: Consistency::FullyConsistent,
            cursor: None,
            limit: None,
        })
        .unwrap()
        .ids()
        .into_iter()
        .map(str::to_string)
        .collect()
    };
    let subjects = |e: &Engine, doc: &str| -> usize {
        e.lookup_subjects(&LookupSubjectsRequest {
            context: None,
            resource_type: "doc",
            resource_id: doc,
            permission: "view",
            subject_type: "user",
            subject_relation: None,
            consistency: Consistency::FullyConsistent,
            cursor: None,
            limit: None,
            written_subject_sets_only: false,
        })
        .unwrap()
        .subjects
        .len()
    };
    assert!(check(&e, "doc:a#view@user:ann"));
    assert_eq!(lookup(&e), ["a", "b", "c"]);
    assert_eq!(subjects(&e, "a"), 1);
    e.write(&touches(&["platform/tenant:t1#suspended@platform/platform:root"])).unwrap();
    let fresh = Consistency::FullyConsistent;
    assert!(!check_with(&e, "doc:a#view@user:ann", fresh).unwrap(), "a suspended tenant's object is closed");
    assert!(!check_with(&e, "doc:c#view@user:zed", fresh).unwrap(), "a wildcard too");
    assert!(check_with(&e, "doc:b#view@user:ann", fresh).unwrap(), "another tenant's object is open");
    assert!(check_with(&e, "note:n#viewer@user:ann", fresh).unwrap(), "a type without `tenant` is not gated");
    assert!(check_with(&e, "doc:a#viewer@user:ann", fresh).is_ok_and(|a| !a), "relations are closed too");
    assert_eq!(lookup(&e), ["b"]);
    assert_eq!((subjects(&e, "a"), subjects(&e, "c")), (0, 0));
    let req = CheckRequest { resource_type: "doc", resource_id: "a", permission: "view", subject_type: "user", subject_id: "ann", consistency: fresh, ..Default::default() };
    let (bulk, _) = e.check_bulk(&[req], fresh).unwrap();
    assert_eq!(bulk[0].as_ref().unwrap(), &Decision::Denied);
    assert_eq!(e.explain(&req).unwrap().decision, Decision::Denied);
    e.write(&[update(UpdateOp::Delete, "platform/tenant:t1#suspended@platform/platform:root")]).unwrap();
    assert!(check_with(&e, "doc:a#view@user:ann", fresh).unwrap(), "reactivated: open again");
    assert_eq!(lookup(&e), ["a", "b", "c"]);

    // The same objects under the test schema, which has no platform type: no gate.
    let plain = engine(&["doc:1#viewer@user:ann"]);
    assert!(check(&plain, "doc:1#view@user:ann"));
}
