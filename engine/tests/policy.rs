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

/// A model from Cedar text (ids from `@id`), with types inferred from attribute values
/// and from `contexts`, and the attribute values to write after it.
#[derive(Debug, Clone)]
struct TestModel {
    model: PolicyModel,
    attributes: Vec<AttributeUpdate>,
}

fn model(policies: &str, attributes: &[(&str, Value)], contexts: &[Value]) -> TestModel {
    let mut inference = Inference::default();
    let mut updates = Vec::new();
    for (object, value) in attributes {
        let (ty, id) = object.split_once(':').unwrap();
        let r = record(value.clone());
        inference.object(ty, object, &r).unwrap();
        updates.push(AttributeUpdate {
            object_type: ty.into(),
            object_id: id.into(),
            attributes: Some(ObjectAttributes { values: r, labels: Vec::new() }),
        });
    }
    for c in contexts {
        inference.context(&record(c.clone())).unwrap();
    }
    TestModel {
        model: PolicyModel {
            policies: split_policies("test.cedar", policies).unwrap(),
            declarations: inference.decls,
            labels: BTreeMap::new(),
        },
        attributes: updates,
    }
}

/// Writes the model, then its attribute values.
fn install(e: &Engine, m: TestModel) -> Result<u64, EngineError> {
    let revision = e.write_policy_model(m.model)?;
    if m.attributes.is_empty() {
        return Ok(revision);
    }
    e.write_attributes(m.attributes)
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
        ..Default::default()
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
    let before = install(&e, good.clone()).unwrap();
    // Strict validation: an attribute nobody declared.
    let bad = model(
        "@id(\"mls\")\nforbid(principal, action == Action::\"view\", resource)\nunless { principal.clearance > 2 };",
        &[],
        &[],
    );
    let err = install(&e, bad).unwrap_err();
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
        let err = install(&e, model(text, &[], &[])).unwrap_err();
        assert!(matches!(err, EngineError::InvalidPolicy(_)), "{text}: {err}");
    }
    // Nothing changed.
    assert_eq!(e.revision(), before);
    assert_eq!(e.policy_model(), good.model);
}

#[test]
fn a_permit_grants_beyond_the_graph_and_a_forbid_overrides_it() {
    let e = engine(&["doc:1#viewer@user:tom", "doc:2#viewer@user:tom", "doc:2#owner@user:ann"]);
    assert!(!check(&e, "doc:1#view@user:zed"));
    install(&e, model(
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
    install(&e, model(
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
    install(&e, model(
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
    install(&e, model(
        r#"
        @id("office-network")
        forbid(principal, action == Action::"view", resource)
        unless { context has ip && context.ip.isInRange(ip("10.0.0.0/8")) };
        @id("office-hours")
        forbid(principal, action == Action::"view", resource)
        when { context has hour && (context.hour < 8 || context.hour > 18) };
        "#,
        &[],
        std::slice::from_ref(&ctx),
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
    install(&e, model("@id(\"p\")\npermit(principal, action == Action::\"edit\", resource is doc);", &[], &[]))
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
        install(&e, m.clone()).unwrap()
    };
    let e = Engine::open(Box::new(store.clone()), EngineConfig::default()).unwrap();
    assert_eq!(e.policy_model(), m.model);
    assert!(check(&e, "doc:9#view@user:x"));
    let ChangesAfter::Commits(commits) = e.changes_after(revision - 2, 10).unwrap() else { panic!() };
    assert!(commits.iter().any(|c| c.revision == revision - 1 && c.policy_model.is_some()));
    assert!(commits.iter().any(|c| c.revision == revision && c.attributes.len() == 1));
    // An empty model would leave doc:9's attribute undeclared: refused until it goes.
    let err = e.write_policy_model(PolicyModel::default()).unwrap_err();
    assert!(err.to_string().contains("doc:9"), "{err}");
    e.write_attributes(vec![AttributeUpdate { object_type: "doc".into(), object_id: "9".into(), attributes: None }])
        .unwrap();
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
    install(&e, model(
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
            context: None,
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
    assert_eq!(resources.ids(), ["1", "3"]);
    // Every listed resource checks allowed; the left-out one checks denied.
    for id in ["1", "3"] {
        assert!(check(&e, &format!("doc:{id}#view@user:tom")));
    }
    assert!(!check(&e, "doc:2#view@user:tom"));
    // doc:9 is granted by a permit only: Check allows it, Lookup does not list it.
    assert!(check(&e, "doc:9#view@user:tom"));
    let subjects = e
        .lookup_subjects(&LookupSubjectsRequest {
            context: None,
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

fn labels(defs: &[(&str, i64, Option<&str>)]) -> BTreeMap<String, LabelDef> {
    defs.iter().map(|(n, l, p)| (n.to_string(), LabelDef { level: *l, parents: p.iter().map(|p| p.to_string()).collect() })).collect()
}

fn set_attrs(e: &Engine, object: &str, values: Value, object_labels: &[&str]) -> Result<u64, EngineError> {
    let (t, i) = object.split_once(':').unwrap();
    e.write_attributes(vec![AttributeUpdate {
        object_type: t.into(),
        object_id: i.into(),
        attributes: Some(ObjectAttributes {
            values: record(values),
            labels: object_labels.iter().map(|l| l.to_string()).collect(),
        }),
    }])
}

const MLS_LABELS: &[(&str, i64, Option<&str>)] = &[
    ("top_secret", 4, None),
    ("secret", 3, Some("top_secret")),
    ("confidential", 2, Some("secret")),
    ("nato", 1, None),
];

#[test]
fn labels_dominate_down_their_hierarchy_and_levels_compare() {
    let docs = ["1", "2", "3", "4"];
    let rels: Vec<String> =
        docs.iter().flat_map(|d| [format!("doc:{d}#viewer@user:tom"), format!("doc:{d}#viewer@user:ann")]).collect();
    let e = engine(&rels.iter().map(String::as_str).collect::<Vec<_>>());
    let m = PolicyModel {
        policies: split_policies(
            "mls.cedar",
            r#"
            @id("dominance")
            forbid(principal, action == Action::"view", resource is doc)
            when { resource.label_level > 0 }
            unless { resource in principal.labels };
            "#,
        )
        .unwrap(),
        declarations: AttributeDecls::default(),
        labels: labels(MLS_LABELS),
    };
    e.write_policy_model(m).unwrap();
    set_attrs(&e, "user:tom", json!({}), &["top_secret"]).unwrap();
    set_attrs(&e, "user:ann", json!({}), &["confidential"]).unwrap();
    set_attrs(&e, "doc:1", json!({}), &["secret"]).unwrap();
    set_attrs(&e, "doc:2", json!({}), &["confidential"]).unwrap();
    set_attrs(&e, "doc:4", json!({}), &["nato"]).unwrap();
    // The parent dominates the child, transitively; an unlabelled document is open.
    assert!(check(&e, "doc:1#view@user:tom"));
    assert!(check(&e, "doc:2#view@user:tom"));
    assert!(check(&e, "doc:3#view@user:tom"));
    assert!(!check(&e, "doc:1#view@user:ann"));
    assert!(check(&e, "doc:2#view@user:ann"));
    assert!(check(&e, "doc:3#view@user:ann"));
    // A label outside the hierarchy is dominated by nobody else's.
    assert!(!check(&e, "doc:4#view@user:tom"));
    let why = e
        .explain(&CheckRequest {
            resource_type: "doc",
            resource_id: "1",
            permission: "view",
            subject_type: "user",
            subject_id: "ann",
            consistency: Consistency::FullyConsistent,
            ..CheckRequest::default()
        })
        .unwrap();
    assert_eq!(why.policies, vec!["dominance".to_string()]);

    // Levels: `label_level` is the highest level of an object's labels.
    let mut m = e.policy_model();
    m.policies = split_policies(
        "levels.cedar",
        "@id(\"levels\")\nforbid(principal, action, resource is doc) unless { principal.label_level >= resource.label_level };",
    )
    .unwrap();
    e.write_policy_model(m).unwrap();
    assert!(check(&e, "doc:4#view@user:ann"), "confidential (2) >= nato (1)");
    assert!(!check(&e, "doc:1#view@user:ann"), "confidential (2) < secret (3)");
    assert!(check(&e, "doc:1#view@user:tom"));
}

#[test]
fn attribute_and_label_writes_are_checked_and_change_nothing_when_refused() {
    let e = engine(&["doc:1#viewer@user:tom"]);
    // Nothing declared yet.
    let err = set_attrs(&e, "user:tom", json!({"clearance": 3}), &[]).unwrap_err();
    assert!(err.to_string().contains("user:tom"), "{err}");
    let mut decls = AttributeDecls::default();
    decls.types.entry("user".into()).or_default().insert("clearance".into(), AttrDecl::stored(AttrType::Long, true));
    decls.types.entry("user".into()).or_default().insert("ip".into(), AttrDecl::stored(AttrType::Ip, false));
    e.write_policy_model(PolicyModel { declarations: decls, labels: labels(MLS_LABELS), ..PolicyModel::default() }).unwrap();
    let before = e.revision();
    for (values, object_labels, needle) in [
        (json!({"clearance": "high"}), vec![], "clearance"),
        (json!({}), vec![], "clearance"),
        (json!({"clearance": 3, "age": 40}), vec![], "age"),
        (json!({"clearance": 3, "ip": "not an ip"}), vec![], "ip"),
        (json!({"clearance": 3}), vec!["cosmic"], "cosmic"),
    ] {
        let err = set_attrs(&e, "user:tom", values.clone(), &object_labels).unwrap_err();
        assert!(err.to_string().contains(needle), "{values}: {err}");
        assert!(err.to_string().contains("user:tom"), "{values}: {err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
    assert!(e.write_attributes(vec![AttributeUpdate { object_type: "robot".into(), object_id: "r".into(), attributes: None }]).is_err());
    assert_eq!(e.revision(), before, "refused writes change nothing");
    // A plain string for an `ip` attribute is converted.
    set_attrs(&e, "user:tom", json!({"clearance": 3, "ip": "10.0.0.1"}), &["secret", "secret"]).unwrap();
    let (_, got) = e.read_attributes(&[("user".into(), "tom".into()), ("user".into(), "x".into())], Consistency::FullyConsistent).unwrap();
    let tom = got[0].clone().unwrap();
    assert_eq!(tom.labels, vec!["secret".to_string()]);
    assert_eq!(tom.values["ip"], json!({"__extn": {"fn": "ip", "arg": "10.0.0.1"}}));
    assert!(got[1].is_none());
    // A label in use cannot go, nor can its parent; a cycle is refused.
    let mut m = e.policy_model();
    m.labels.remove("secret");
    let err = e.write_policy_model(m).unwrap_err();
    assert!(err.to_string().contains("secret"), "{err}");
    let mut m = e.policy_model();
    m.labels.get_mut("top_secret").unwrap().parents = vec!["confidential".into()];
    let err = e.write_policy_model(m).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    // A declaration change that strands a stored value is refused, naming the object.
    let mut m = e.policy_model();
    m.declarations.types.get_mut("user").unwrap().remove("clearance");
    let err = e.write_policy_model(m).unwrap_err();
    assert!(err.to_string().contains("user:tom") && err.to_string().contains("clearance"), "{err}");
    // As is a schema change that drops a type with attributes.
    let mut m = e.policy_model();
    m.declarations.types.insert("doc".into(), BTreeMap::from([("n".to_string(), AttrDecl::stored(AttrType::Long, false))]));
    e.write_policy_model(m).unwrap();
    set_attrs(&e, "doc:1", json!({"n": 1}), &[]).unwrap();
    let schema_without_doc = SCHEMA.split("definition doc").next().unwrap().to_string();
    e.write(&[RelationshipUpdate { op: UpdateOp::Delete, relationship: parse_relationship("doc:1#viewer@user:tom").unwrap() }]).unwrap();
    let err = e.write_schema(&schema_without_doc).unwrap_err();
    assert!(err.to_string().contains("doc"), "{err}");
}

#[test]
fn attributes_survive_reopening_and_deletes_remove_them() {
    let store = Arc::new(MemoryStore::default());
    {
        let e = engine_on(Box::new(store.clone()), &[]);
        install(&e, model("", &[("user:tom", json!({"clearance": 3})), ("user:ann", json!({"clearance": 1}))], &[])).unwrap();
        e.write_attributes(vec![AttributeUpdate { object_type: "user".into(), object_id: "ann".into(), attributes: None }])
            .unwrap();
    }
    let e = Engine::open(Box::new(store.clone()), EngineConfig::default()).unwrap();
    let (_, all) = e.export_attributes(Consistency::FullyConsistent).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, "user");
    assert_eq!(all[0].1, "tom");
    assert_eq!(all[0].2.values["clearance"], json!(3));
}

/// While policy sets alternate, every check sees one whole set: set A forbids doc:1 and
/// permits doc:2, set B the reverse, so a bulk check of both at one revision is always
/// exactly one allowed.
#[test]
fn a_policy_swap_under_load_is_atomic() {
    let e = Arc::new(engine(&[]));
    let set = |forbid: &str, permit: &str| {
        let text = format!(
            "@id(\"f\")\nforbid(principal, action == Action::\"view\", resource == doc::\"{forbid}\");\n\
             @id(\"p\")\npermit(principal, action == Action::\"view\", resource == doc::\"{permit}\");"
        );
        split_policies("swap.cedar", &text).unwrap()
    };
    let (a, b) = (set("1", "2"), set("2", "1"));
    e.write_policies(a.clone()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut checks = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = |id| CheckRequest {
                        resource_type: "doc",
                        resource_id: id,
                        permission: "view",
                        subject_type: "user",
                        subject_id: "tom",
                        ..CheckRequest::default()
                    };
                    let (results, revision) = e.check_bulk(&[req("1"), req("2")], Consistency::MinimizeLatency).unwrap();
                    let allowed: Vec<bool> = results.into_iter().map(|r| r.unwrap() == Decision::Allowed).collect();
                    assert!(allowed == [true, false] || allowed == [false, true], "half a set at {revision}: {allowed:?}");
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for i in 0..200 {
        e.write_policies(if i % 2 == 0 { b.clone() } else { a.clone() }).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checks > 0);
}

/// Each thread keeps the Cedar entities it built; these checks run on one thread, so a
/// stale entity would answer the second check of each pair.
#[test]
fn entities_built_earlier_are_reused_only_while_what_they_came_from_is_unchanged() {
    let e = engine(&["doc:1#viewer@user:tom", "doc:2#owner@user:tom", "team:a#member@user:tom"]);
    let levels = |high: i64| PolicyModel {
        policies: split_policies(
            "levels.cedar",
            r#"
            @id("levels")
            forbid(principal, action == Action::"view", resource is doc)
            unless { principal.label_level >= resource.label_level };
            @id("team-a")
            forbid(principal, action == Action::"edit", resource == doc::"2")
            unless { principal in team::"a" };
            "#,
        )
        .unwrap(),
        declarations: AttributeDecls::default(),
        labels: labels(&[("high", high, None), ("low", 2, None)]),
    };
    let twice = |q: &str, want: bool, why: &str| {
        for _ in 0..2 {
            assert_eq!(check(&e, q), want, "{q}: {why}");
        }
    };
    e.write_policy_model(levels(4)).unwrap();
    set_attrs(&e, "user:tom", json!({}), &["low"]).unwrap();
    set_attrs(&e, "doc:1", json!({}), &["high"]).unwrap();
    twice("doc:1#view@user:tom", false, "low (2) < high (4)");
    // New values for the principal, then for the resource.
    set_attrs(&e, "user:tom", json!({}), &["high"]).unwrap();
    twice("doc:1#view@user:tom", true, "high (4) >= high (4)");
    set_attrs(&e, "doc:1", json!({}), &["low"]).unwrap();
    twice("doc:1#view@user:tom", true, "high (4) >= low (2)");
    // A new policy model over the same stored values: `high` is now level 1.
    e.write_policy_model(levels(1)).unwrap();
    twice("doc:1#view@user:tom", false, "high (1) < low (2)");
    // The same values, other parents: tom leaves team:a.
    twice("doc:2#edit@user:tom", true, "tom is in team:a");
    let leave = RelationshipUpdate {
        op: UpdateOp::Delete,
        relationship: parse_relationship("team:a#member@user:tom").unwrap(),
    };
    e.write(&[leave]).unwrap();
    twice("doc:2#edit@user:tom", false, "tom left team:a");
}

/// Cedar refuses `platform::user` beside `user` (a namespaced type may not shadow one
/// without a namespace). The namespaced type is left out of the Cedar schema: policies
/// on the other types validate and decide, a policy naming it is refused by name, and
/// a check whose subject is of that type still runs through Cedar.
#[test]
fn a_namespaced_type_that_shadows_a_plain_one_is_left_out_of_cedar() {
    let engine = Engine::open(Box::new(MemoryStore::default()), EngineConfig::default()).unwrap();
    engine
        .write_schema(
            "definition platform/user {}\ndefinition user {}\n\
             definition doc {\n    relation viewer: user | platform/user\n    permission view = viewer\n}\n",
        )
        .unwrap();
    let write = |rel: &str| {
        engine
            .write(&[RelationshipUpdate { op: UpdateOp::Touch, relationship: parse_relationship(rel).unwrap() }])
            .unwrap()
    };
    write("doc:1#viewer@user:ann");
    write("doc:1#viewer@platform/user:ann");
    install(&engine, model("@id(\"no-2\") forbid (principal, action, resource == doc::\"2\");", &[], &[])).unwrap();
    assert!(check(&engine, "doc:1#view@user:ann"));
    assert!(check(&engine, "doc:1#view@platform/user:ann"));
    // A forbid for everyone reaches the left-out type's principals too.
    install(&engine, model("@id(\"none\") forbid (principal, action, resource == doc::\"1\");", &[], &[])).unwrap();
    assert!(!check(&engine, "doc:1#view@platform/user:ann"));
    assert!(!check(&engine, "doc:1#view@user:ann"));
    // Naming the left-out type is a validation error that names it.
    let err = install(&engine, model("@id(\"p\") permit (principal is platform::user, action, resource);", &[], &[])).unwrap_err();
    assert!(err.to_string().contains("platform::user"), "{err}");
}
