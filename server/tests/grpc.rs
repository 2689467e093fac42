//! The gRPC API against the real server binary: every RPC, every consistency mode,
//! preconditions, paging cursors, Watch resumption, health, HTTP endpoints, and bad
//! input that must be refused with the right code and leave the store unchanged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use std::time::Duration;

use arbiter_proto::arbiter::v1 as pb;
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;

/// Clients of `server`, with the document schema written.
async fn with_doc_schema(server: &Server) -> Clients {
    let mut c = server.clients().await;
    c.schema
        .write_schema(pb::WriteSchemaRequest {
            schema: DOC_SCHEMA.into(),
        })
        .await
        .unwrap();
    c
}

/// LookupSubjects: every `user` with `permission` on `resource`, in one page.
async fn users_of(c: &mut Clients, resource: &str, permission: &str) -> Vec<pb::LookupSubjectsResponse> {
    c.permissions
        .lookup_subjects(pb::LookupSubjectsRequest {
            context: None,
            consistency: None,
            resource: Some(obj(resource)),
            permission: permission.into(),
            subject_type: "user".into(),
            subject_relation: String::new(),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await
}

async fn setup(server: &Server) -> (Clients, String) {
    let mut c = with_doc_schema(server).await;
    let token = c
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![
                touch("group:eng#member@user:alice"),
                touch("group:all#member@group:eng#member"),
                touch("folder:root#viewer@group:all#member"),
                touch("folder:sub#parent@folder:root"),
                touch("doc:readme#parent@folder:sub"),
                touch("doc:readme#owner@user:olga"),
                touch("doc:public#viewer@user:*"),
                touch("doc:public#banned@user:mallory"),
                touch("doc:a#viewer@user:bob"),
                touch("doc:b#viewer@user:bob"),
                touch("doc:c#viewer@user:bob"),
            ],
            preconditions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    (c, token)
}

async fn allowed(c: &mut Clients, q: &str, consistency: Option<pb::Consistency>) -> bool {
    let d = c
        .permissions
        .check(check_req(q, consistency))
        .await
        .unwrap()
        .into_inner()
        .decision;
    match pb::Decision::try_from(d).unwrap() {
        pb::Decision::Allowed => true,
        pb::Decision::Denied => false,
        other => panic!("unexpected decision {other:?} for {q}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.revision, "r0");
    let (mut c, _) = setup(&server).await;

    // Check: nested groups, arrows, wildcard, exclusion.
    assert!(allowed(&mut c, "doc:readme#view@user:alice", None).await);
    assert!(allowed(&mut c, "doc:readme#view@user:olga", None).await);
    assert!(!allowed(&mut c, "doc:readme#view@user:bob", None).await);
    assert!(allowed(&mut c, "doc:public#view@user:anyone", None).await);
    assert!(!allowed(&mut c, "doc:public#view@user:mallory", None).await);
    assert!(allowed(&mut c, "group:all#member@group:eng#member", None).await);

    // Explain: the path from the resource to the subject.
    let mut req = check_req("doc:readme#view@user:alice", None);
    req.explain = true;
    let resp = c.permissions.check(req).await.unwrap().into_inner();
    assert_eq!(resp.decision, pb::Decision::Allowed as i32);
    assert_eq!(
        resp.explanation,
        vec![
            "doc:readme#parent@folder:sub",
            "folder:sub#parent@folder:root",
            "folder:root#viewer@group:all#member",
            "group:all#member@group:eng#member",
            "group:eng#member@user:alice",
            "and not excluded by `banned` on doc:readme",
        ]
    );
    let mut req = check_req("doc:public#view@user:zed", None);
    req.explain = true;
    let resp = c.permissions.check(req).await.unwrap().into_inner();
    assert_eq!(
        resp.explanation.first().map(String::as_str),
        Some("doc:public#viewer@user:*")
    );
    assert!(
        resp.explanation
            .iter()
            .any(|s| s.contains("not excluded by `banned`")),
        "{:?}",
        resp.explanation
    );

    // CheckBulk: one revision, per-item errors.
    let mut items = [
        "doc:a#view@user:bob",
        "doc:a#view@user:alice",
        "doc:a#nope@user:bob",
        "doc:public#view@user:x",
    ]
    .iter()
    .map(|q| {
        let r = check_req(q, None);
        pb::CheckBulkItem {
            resource: r.resource,
            permission: r.permission,
            subject: r.subject,
            context: None,
        }
    })
    .collect::<Vec<_>>();
    // A malformed item fails alone, its error naming the field by the item's index.
    let mut malformed = items[0].clone();
    if let Some(o) = malformed.subject.as_mut().and_then(|s| s.object.as_mut()) {
        o.id.clear();
    }
    items.push(malformed);
    let bulk = c
        .permissions
        .check_bulk(pb::CheckBulkRequest {
            consistency: None,
            items,
        })
        .await
        .unwrap()
        .into_inner();
    use pb::check_bulk_result::Result as R;
    let results: Vec<_> = bulk
        .results
        .into_iter()
        .map(|r| r.result.unwrap())
        .collect();
    assert_eq!(results[0], R::Decision(pb::Decision::Allowed as i32));
    assert_eq!(results[1], R::Decision(pb::Decision::Denied as i32));
    match &results[2] {
        R::Error(e) => {
            assert_eq!(e.code, "FAILED_PRECONDITION");
            assert!(e.message.contains("`nope`"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(results[3], R::Decision(pb::Decision::Allowed as i32));
    match &results[4] {
        R::Error(e) => {
            assert_eq!(e.code, "INVALID_ARGUMENT");
            assert!(e.message.contains("`items[4].subject.object.id` is required"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // Expand.
    let tree = c
        .permissions
        .expand(pb::ExpandRequest {
            consistency: None,
            resource: Some(obj("doc:readme")),
            permission: "view".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tree
        .unwrap();
    assert_eq!(tree.relation, "view");
    assert!(matches!(
        tree.node,
        Some(pb::userset_tree::Node::Exclusion(_))
    ));

    // LookupResources with paging.
    let lr = |cursor: &str, limit: u32| pb::LookupResourcesRequest {
        context: None,
        consistency: None,
        resource_type: "doc".into(),
        permission: "view".into(),
        subject: Some(subj("user:bob")),
        cursor: cursor.into(),
        limit,
    };
    let all: Vec<String> = collect_ids(
        c.permissions
            .lookup_resources(lr("", 0))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(all, vec!["a", "b", "c", "public"]);
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = collect_lr(
            c.permissions
                .lookup_resources(lr(&cursor, 3))
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        if page.is_empty() {
            break;
        }
        cursor = page.last().unwrap().cursor.clone();
        let n = page.len();
        paged.extend(page.into_iter().map(|p| p.resource_id));
        if n < 3 {
            break;
        }
    }
    assert_eq!(paged, all);

    // LookupSubjects: the wildcard with its exclusion.
    let subjects = users_of(&mut c, "doc:public", "view").await;
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].subject_id, "*");
    assert_eq!(subjects[0].excluded_ids, vec!["mallory"]);

    // ReadRelationships: filter, order, cursor.
    let read = |filter: Option<pb::RelationshipFilter>, cursor: String, limit: u32| {
        pb::ReadRelationshipsRequest {
            consistency: None,
            filter,
            cursor,
            limit,
        }
    };
    let by_bob = Some(pb::RelationshipFilter {
        resource_type: "doc".into(),
        resource_id: String::new(),
        relation: "viewer".into(),
        subject: Some(pb::SubjectFilter {
            r#type: "user".into(),
            id: "bob".into(),
            relation: String::new(),
        }),
    });
    let rows = collect_read(
        c.relationships
            .read_relationships(read(by_bob.clone(), String::new(), 0))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let ids: Vec<_> = rows
        .iter()
        .map(|r| {
            r.relationship
                .as_ref()
                .unwrap()
                .resource
                .as_ref()
                .unwrap()
                .id
                .clone()
        })
        .collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    let first = collect_read(
        c.relationships
            .read_relationships(read(by_bob.clone(), String::new(), 2))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(first.len(), 2);
    let rest = collect_read(
        c.relationships
            .read_relationships(read(by_bob.clone(), first[1].cursor.clone(), 2))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(rest.len(), 1);
    assert_eq!(
        rest[0]
            .relationship
            .as_ref()
            .unwrap()
            .resource
            .as_ref()
            .unwrap()
            .id,
        "c"
    );
    assert_eq!(read_all(&mut c).await.len(), 11);

    // Export sees everything; import adds in bulk.
    let exported: usize = c
        .relationships
        .export_relationships(pb::ExportRelationshipsRequest { consistency: None })
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().relationships.len())
        .fold(0, |a, b| a + b)
        .await;
    assert_eq!(exported, 11);
    let batches: Vec<pb::ImportRelationshipsRequest> = (0..3)
        .map(|b| pb::ImportRelationshipsRequest {
            relationships: (0..100)
                .map(|i| rel(&format!("doc:imp{b}_{i}#viewer@user:u{i}")))
                .collect(),
        })
        .collect();
    let imported = c
        .relationships
        .import_relationships(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.imported, 300);
    assert!(
        allowed(
            &mut c,
            "doc:imp2_99#view@user:u99",
            Some(at_least(&imported.revision).unwrap())
        )
        .await
    );

    // DeleteRelationships: refused over the limit (nothing deleted), then done.
    let filter = Some(pb::RelationshipFilter {
        resource_type: "doc".into(),
        resource_id: "imp0_5".into(),
        ..Default::default()
    });
    let wide = Some(pb::RelationshipFilter {
        resource_type: "doc".into(),
        relation: "viewer".into(),
        subject: Some(pb::SubjectFilter {
            r#type: "user".into(),
            id: "u7".into(),
            relation: String::new(),
        }),
        ..Default::default()
    });
    let err = c
        .relationships
        .delete_relationships(pb::DeleteRelationshipsRequest {
            filter: wide.clone(),
            preconditions: vec![],
            limit: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("more than the limit of 2"),
        "{}",
        err.message()
    );
    let deleted = c
        .relationships
        .delete_relationships(pb::DeleteRelationshipsRequest {
            filter: wide,
            preconditions: vec![],
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 3);
    let deleted = c
        .relationships
        .delete_relationships(pb::DeleteRelationshipsRequest {
            filter,
            preconditions: vec![],
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(read_all(&mut c).await.len(), 11 + 300 - 4);

    // ReadSchema gives back what was written.
    let schema = c
        .schema
        .read_schema(pb::ReadSchemaRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(schema.schema, DOC_SCHEMA);
}

async fn collect_ids(s: tonic::Streaming<pb::LookupResourcesResponse>) -> Vec<String> {
    collect_lr(s)
        .await
        .into_iter()
        .map(|r| r.resource_id)
        .collect()
}

async fn collect_lr(
    s: tonic::Streaming<pb::LookupResourcesResponse>,
) -> Vec<pb::LookupResourcesResponse> {
    s.map(|r| r.unwrap()).collect().await
}

async fn collect_read(
    s: tonic::Streaming<pb::ReadRelationshipsResponse>,
) -> Vec<pb::ReadRelationshipsResponse> {
    s.map(|r| r.unwrap()).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_modes_and_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--history-window", "1h"]);
    let (mut c, before) = setup(&server).await;
    let after = c
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![touch("doc:a#viewer@user:carol")],
            preconditions: vec![pb::Precondition {
                operation: pb::precondition::Operation::MustMatch as i32,
                filter: Some(pb::RelationshipFilter {
                    resource_type: "doc".into(),
                    resource_id: "a".into(),
                    ..Default::default()
                }),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let q = "doc:a#view@user:carol";
    assert!(allowed(&mut c, q, None).await);
    assert!(
        allowed(
            &mut c,
            q,
            Some(pb::Consistency {
                requirement: Some(pb::consistency::Requirement::FullyConsistent(true))
            })
        )
        .await
    );
    assert!(allowed(&mut c, q, at_least(&after)).await);
    assert!(allowed(&mut c, q, at_least(&before)).await);
    assert!(
        !allowed(&mut c, q, at_exact(&before)).await,
        "the older snapshot must not see the later write"
    );
    assert!(allowed(&mut c, q, at_exact(&after)).await);

    // A token from the future, a mangled token.
    let future = c
        .permissions
        .check(check_req(q, at_least("r999999")))
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::Unavailable, "{future:?}");
    for bad in ["999", "zzz", ""] {
        let e = c
            .permissions
            .check(check_req(q, at_exact(bad)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("revision token"), "{}", e.message());
    }

    // Preconditions that fail change nothing.
    let snapshot = read_all(&mut c).await;
    let must_not = pb::Precondition {
        operation: pb::precondition::Operation::MustNotMatch as i32,
        filter: Some(pb::RelationshipFilter {
            resource_type: "doc".into(),
            resource_id: "a".into(),
            ..Default::default()
        }),
    };
    let e = c
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![touch("doc:z#viewer@user:x")],
            preconditions: vec![must_not],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("doc:a"), "{}", e.message());
    let must = pb::Precondition {
        operation: pb::precondition::Operation::MustMatch as i32,
        filter: Some(pb::RelationshipFilter {
            resource_type: "doc".into(),
            resource_id: "nothing".into(),
            ..Default::default()
        }),
    };
    let e = c
        .relationships
        .delete_relationships(pb::DeleteRelationshipsRequest {
            filter: Some(pb::RelationshipFilter {
                resource_type: "doc".into(),
                ..Default::default()
            }),
            preconditions: vec![must],
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Create of an existing relationship fails as a whole.
    let e = c
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![
                create("doc:new#viewer@user:x"),
                create("doc:a#viewer@user:bob"),
            ],
            preconditions: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("doc:a#viewer@user:bob"),
        "{}",
        e.message()
    );
    assert_eq!(read_all(&mut c).await, snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (mut c, first) = setup(&server).await;
    let mut tokens = vec![first.clone()];
    for i in 0..3 {
        let t = c
            .relationships
            .write_relationships(pb::WriteRelationshipsRequest {
                updates: vec![touch(&format!("doc:w{i}#viewer@user:x"))],
                preconditions: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .revision;
        tokens.push(t);
    }
    // Resume after the first write: the three later ones, in order.
    let mut stream = c
        .relationships
        .watch(pb::WatchRequest {
            after_revision: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    for (i, token) in tokens.iter().skip(1).enumerate() {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&msg.revision, token);
        assert_eq!(msg.changes.len(), 1);
        let r = msg.changes[0].relationship.as_ref().unwrap();
        assert_eq!(r.resource.as_ref().unwrap().id, format!("w{i}"));
        assert_eq!(
            msg.changes[0].operation,
            pb::relationship_change::Operation::Touch as i32
        );
    }
    // Then live: a delete arrives on the same stream.
    let t = c
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![delete("doc:w0#viewer@user:x")],
            preconditions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.revision, t);
    assert_eq!(
        msg.changes[0].operation,
        pb::relationship_change::Operation::Delete as i32
    );
    // A schema write shows up as such.
    let t = c
        .schema
        .write_schema(pb::WriteSchemaRequest {
            schema: format!("{DOC_SCHEMA}\ndefinition extra {{}}\n"),
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.revision, t);
    assert!(msg.schema_changed);
    // Resume from a token in the middle, after a restart too.
    drop(stream);
    drop(c);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.clients().await;
    let mut stream = c
        .relationships
        .watch(pb::WatchRequest {
            after_revision: tokens[2].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.revision, tokens[3]);
    // A token from the future is refused.
    let e = c
        .relationships
        .watch(pb::WatchRequest {
            after_revision: "r99999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-updates-per-write",
            "11",
            "--max-bulk-checks",
            "3",
            "--max-message-size",
            "65536",
        ],
    );
    let (mut c, _) = setup(&server).await;
    let before = read_all(&mut c).await;
    let revision = c
        .schema
        .read_schema(pb::ReadSchemaRequest {})
        .await
        .unwrap()
        .into_inner()
        .revision;

    let write = |updates: Vec<pb::RelationshipUpdate>| pb::WriteRelationshipsRequest {
        updates,
        preconditions: vec![],
    };
    let cases: Vec<(pb::WriteRelationshipsRequest, Code, &str)> = vec![
        (
            write(vec![touch("doc:bad id#viewer@user:x")]),
            Code::InvalidArgument,
            "bad id",
        ),
        (
            write(vec![
                touch("doc:ok#viewer@user:x"),
                touch("nope:x#viewer@user:x"),
            ]),
            Code::FailedPrecondition,
            "`nope`",
        ),
        (
            write(vec![touch("doc:ok#nope@user:x")]),
            Code::FailedPrecondition,
            "`nope`",
        ),
        (
            write(vec![touch("doc:ok#view@user:x")]),
            Code::FailedPrecondition,
            "permission",
        ),
        (
            write(vec![touch("doc:ok#owner@group:eng")]),
            Code::FailedPrecondition,
            "not allowed",
        ),
        (
            write(
                (0..12)
                    .map(|i| touch(&format!("doc:{i}#viewer@user:x")))
                    .collect(),
            ),
            Code::InvalidArgument,
            "max-updates-per-write",
        ),
        (write(vec![]), Code::InvalidArgument, "empty"),
        (
            pb::WriteRelationshipsRequest {
                updates: vec![pb::RelationshipUpdate {
                    operation: 0,
                    relationship: Some(rel("doc:ok#viewer@user:x")),
                }],
                preconditions: vec![],
            },
            Code::InvalidArgument,
            "operation",
        ),
        (
            pb::WriteRelationshipsRequest {
                updates: vec![pb::RelationshipUpdate {
                    operation: 1,
                    relationship: None,
                }],
                preconditions: vec![],
            },
            Code::InvalidArgument,
            "updates[0].relationship",
        ),
        (
            write(vec![touch(&format!(
                "doc:{}#viewer@user:x",
                "x".repeat(1025)
            ))]),
            Code::InvalidArgument,
            "1024",
        ),
        (
            write(vec![
                touch("doc:dup#viewer@user:x"),
                touch("doc:dup#viewer@user:x"),
            ]),
            Code::InvalidArgument,
            "more than once",
        ),
    ];
    for (req, code, needle) in cases {
        let e = c.relationships.write_relationships(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{needle}: {e:?}");
        assert!(
            e.message().contains(needle),
            "expected `{needle}` in: {}",
            e.message()
        );
    }
    // An oversized message.
    let mut huge_schema = DOC_SCHEMA.to_string();
    huge_schema.push_str(&format!("\n// {}\n", "z".repeat(70_000)));
    let e = c
        .schema
        .write_schema(pb::WriteSchemaRequest {
            schema: huge_schema,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("max-message-size"), "{}", e.message());
    // A schema that does not compile, and one that would orphan relationships.
    let e = c
        .schema
        .write_schema(pb::WriteSchemaRequest {
            schema: "definition user {\n relation x: nope\n}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("nope"), "{}", e.message());
    let e = c
        .schema
        .write_schema(pb::WriteSchemaRequest {
            schema:
                "definition user {}\ndefinition group {\n relation member: user | group#member\n}"
                    .into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("orphan") && e.message().contains("doc:"),
        "{}",
        e.message()
    );
    // Too many bulk checks; malformed checks and lookups.
    let items = (0..4)
        .map(|_| {
            let r = check_req("doc:a#view@user:bob", None);
            pb::CheckBulkItem {
                resource: r.resource,
                permission: r.permission,
                subject: r.subject,
                context: None,
            }
        })
        .collect();
    let e = c
        .permissions
        .check_bulk(pb::CheckBulkRequest {
            consistency: None,
            items,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max-bulk-checks"), "{}", e.message());
    let e = c
        .permissions
        .check(pb::CheckRequest {
            resource: None,
            ..check_req("doc:a#view@user:bob", None)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`resource`"), "{}", e.message());
    let e = c
        .permissions
        .check(check_req("doc:a#view@user:b c", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .permissions
        .check(check_req("nope:a#view@user:bob", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .relationships
        .delete_relationships(pb::DeleteRelationshipsRequest {
            filter: None,
            preconditions: vec![],
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .relationships
        .import_relationships(tokio_stream::iter(vec![pb::ImportRelationshipsRequest {
            relationships: vec![rel("doc:ok#nope@user:x")],
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    assert_eq!(
        read_all(&mut c).await,
        before,
        "a refused request changed the store"
    );
    let after = c
        .schema
        .read_schema(pb::ReadSchemaRequest {})
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert_eq!(after, revision, "a refused request made a revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preshared_key_health_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--preshared-key", "s3cret"]);
    // With the key: works.
    let (mut c, _) = setup(&server).await;
    assert!(allowed(&mut c, "doc:a#view@user:bob", None).await);
    // Without it, or with a wrong one: UNAUTHENTICATED, nothing written.
    for key in [None, Some("wrong")] {
        let mut bad = server.clients_with_key(key).await;
        let e = bad
            .permissions
            .check(check_req("doc:a#view@user:bob", None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{key:?}");
        let e = bad
            .relationships
            .write_relationships(pb::WriteRelationshipsRequest {
                updates: vec![touch("doc:x#viewer@user:x")],
                preconditions: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    assert!(!read_all(&mut c)
        .await
        .iter()
        .any(|r| r.starts_with("doc:x#")));
    // gRPC health answers without a key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "arbiter.v1.PermissionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // HTTP: probes open, metrics behind the key.
    assert_eq!(server.http_get("/healthz", None).0, 200);
    let (code, body) = server.http_get("/readyz", None);
    assert_eq!((code, body.trim()), (200, "ready"));
    assert_eq!(server.http_get("/metrics", None).0, 401);
    assert_eq!(server.http_get("/metrics", Some("wrong")).0, 401);
    let (code, body) = server.http_get("/metrics", Some("s3cret"));
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"arbiter_grpc_requests_total{code="OK",method="Check"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"arbiter_grpc_requests_total{code="UNAUTHENTICATED""#)
            || body.contains("arbiter_grpc_request_duration_seconds_bucket"),
        "{body}"
    );
    assert!(body.contains("arbiter_relationships 11"), "{body}");
    assert!(body.contains("arbiter_store_bytes"), "{body}");
}

#[test]
fn startup_failures_exit_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &[]);
    // The same data dir is locked by the first server.
    let other = tempfile::tempdir().unwrap();
    let taken = Server::try_start(other.path(), &["--grpc-addr", &first.grpc]);
    let err = taken.err().expect("binding a taken port must fail");
    assert!(err.contains("cannot bind the gRPC address"), "{err}");
    let locked = Server::try_start(dir.path(), &[])
        .err()
        .expect("a locked store must fail");
    assert!(locked.contains("cannot open the store"), "{locked}");
    let bad_schema = other.path().join("bad.zed");
    std::fs::write(&bad_schema, "definition doc { relation r: nobody }").unwrap();
    let e = Server::try_start(
        &other.path().join("d2"),
        &["--schema", bad_schema.to_str().unwrap()],
    )
    .err()
    .unwrap();
    assert!(e.contains("nobody"), "{e}");
}

/// An import commits its stream's messages in order, gathering the ones that arrive
/// while a commit runs into the next. A bad message ends the call: the error says how
/// many relationships landed, and exactly those are in the store, whole messages from
/// the start of the stream, none from the bad message or after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_fails_midway_reports_what_landed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = with_doc_schema(&server).await;
    let per = 500;
    // Message 12 fails the schema (the engine refuses it); then an id the wire refuses.
    for (round, bad, code) in [
        (0, "doc:ok#nope@user:x", Code::FailedPrecondition),
        (1, "doc:ok#viewer@user:", Code::InvalidArgument),
    ] {
        let before = read_all(&mut c).await;
        let messages: Vec<pb::ImportRelationshipsRequest> = (0..20)
            .map(|m| pb::ImportRelationshipsRequest {
                relationships: (0..per)
                    .map(|i| {
                        if m == 12 && i == per - 1 {
                            rel(bad)
                        } else {
                            rel(&format!("doc:r{round}m{m}#viewer@user:u{i}"))
                        }
                    })
                    .collect(),
            })
            .collect();
        let e = c
            .relationships
            .import_relationships(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        let landed: usize = e
            .message()
            .rsplit_once("(after ")
            .and_then(|(_, rest)| rest.split_once(' '))
            .map(|(n, _)| n.parse().unwrap())
            .unwrap_or_else(|| panic!("no count in {:?}", e.message()));
        let after = read_all(&mut c).await;
        let new: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
        assert_eq!(new.len(), landed, "the error's count against the store");
        assert_eq!(landed % per, 0, "a message landed in part");
        assert!(landed <= 12 * per, "the bad message or one after it landed");
        for m in 0..landed / per {
            for i in [0, per - 1] {
                let r = format!("doc:r{round}m{m}#viewer@user:u{i}");
                assert!(after.contains(&r), "{r} is missing");
            }
        }
    }
}

const CAVEAT_SCHEMA: &str = r#"
caveat below(n int, limit int) {
    n < limit
}

definition user {}

definition doc {
    relation viewer: user | user:* | user with below
    relation banned: user with below
    permission view = viewer - banned
}"#;

/// Caveated relationships through arbiter.v1: conditional answers name what is missing
/// in Check, CheckBulk and both lookups (a wildcard's conditional exclusions too), the
/// request's context decides them, reads return the caveat, and Expand shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caveats_through_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.clients().await;
    let schema_written =
        c.schema.write_schema(pb::WriteSchemaRequest { schema: CAVEAT_SCHEMA.into() }).await.unwrap().into_inner().revision;
    let limit = |n: i64| serde_json::json!({ "limit": n });
    c.relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![
                caveated("doc:1#viewer@user:ann", "below", limit(5)),
                touch("doc:2#viewer@user:ann"),
                touch("doc:pub#viewer@user:*"),
                caveated("doc:pub#banned@user:bob", "below", limit(3)),
            ],
            preconditions: vec![],
        })
        .await
        .unwrap();
    let check = |q: &str, ctx: serde_json::Value| {
        let mut req = check_req(q, None);
        req.context = Some(pb_struct(ctx));
        req
    };
    let r = c.permissions.check(check("doc:1#view@user:ann", serde_json::json!({}))).await.unwrap().into_inner();
    assert_eq!((r.decision, r.missing_context), (pb::Decision::Conditional as i32, vec!["n".to_string()]));
    let r = c.permissions.check(check("doc:1#view@user:ann", serde_json::json!({"n": 1}))).await.unwrap().into_inner();
    assert_eq!((r.decision, r.missing_context.len()), (pb::Decision::Allowed as i32, 0));
    // bob is banned from the public doc only while n < 3.
    let r = c.permissions.check(check("doc:pub#view@user:bob", serde_json::json!({}))).await.unwrap().into_inner();
    assert_eq!((r.decision, r.missing_context), (pb::Decision::Conditional as i32, vec!["n".to_string()]));
    let r = c.permissions.check(check("doc:pub#view@user:bob", serde_json::json!({"n": 3}))).await.unwrap().into_inner();
    assert_eq!(r.decision, pb::Decision::Allowed as i32);
    // A context that does not fit the parameter's type is the caller's mistake.
    let err = c.permissions.check(check("doc:1#view@user:ann", serde_json::json!({"n": "many"}))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("`n`"), "{}", err.message());

    // CheckBulk: each item's own context and missing names.
    let item = |q: &str, ctx: serde_json::Value| {
        let r = check(q, ctx);
        pb::CheckBulkItem { resource: r.resource, permission: r.permission, subject: r.subject, context: r.context }
    };
    let bulk = c
        .permissions
        .check_bulk(pb::CheckBulkRequest {
            consistency: None,
            items: vec![
                item("doc:1#view@user:ann", serde_json::json!({})),
                item("doc:1#view@user:ann", serde_json::json!({"n": 9})),
                item("doc:2#view@user:ann", serde_json::json!({})),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    use pb::check_bulk_result::Result as R;
    let got: Vec<(R, Vec<String>)> = bulk.results.into_iter().map(|r| (r.result.unwrap(), r.missing_context)).collect();
    assert_eq!(
        got,
        [
            (R::Decision(pb::Decision::Conditional as i32), vec!["n".to_string()]),
            (R::Decision(pb::Decision::Denied as i32), vec![]),
            (R::Decision(pb::Decision::Allowed as i32), vec![]),
        ]
    );

    // LookupResources marks the conditional result; a context decides it.
    let lookup = |ctx: serde_json::Value| pb::LookupResourcesRequest {
        consistency: None,
        resource_type: "doc".into(),
        permission: "view".into(),
        subject: Some(subj("user:ann")),
        cursor: String::new(),
        limit: 0,
        context: Some(pb_struct(ctx)),
    };
    let found: Vec<(String, Vec<String>)> = c
        .permissions
        .lookup_resources(lookup(serde_json::json!({})))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.map(|r| (r.resource_id, r.missing_context)).unwrap())
        .collect()
        .await;
    assert_eq!(found, [("1".into(), vec!["n".to_string()]), ("2".into(), vec![]), ("pub".into(), vec![])]);
    let found: Vec<String> = c
        .permissions
        .lookup_resources(lookup(serde_json::json!({"n": 8})))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap().resource_id)
        .collect()
        .await;
    assert_eq!(found, ["2", "pub"]);

    // LookupSubjects: the wildcard, with bob excluded under a condition.
    let subjects = users_of(&mut c, "doc:pub", "view").await;
    // bob also comes on his own, conditional: he is a member when the ban does not hold.
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert_eq!((subjects[0].subject_id.as_str(), subjects[0].excluded_ids.clone()), ("*", vec!["bob".to_string()]));
    assert_eq!(
        subjects[0].conditionally_excluded,
        [pb::ConditionallyExcluded { subject_id: "bob".into(), missing_context: vec!["n".into()] }]
    );
    assert_eq!((subjects[1].subject_id.as_str(), subjects[1].missing_context.clone()), ("bob", vec!["n".to_string()]));

    // Reads return the caveat and its context; Expand shows them with the expression.
    let all = read_all(&mut c).await;
    assert!(all.contains(&r#"doc:1#viewer@user:ann[below:{"limit":5.0}]"#.to_string()), "{all:?}");
    let leaf = expand_leaf(&mut c, "doc:pub", "banned", None).await;
    assert_eq!(leaf.caveats.len(), 1);
    assert_eq!((leaf.caveats[0].caveat_name.as_str(), leaf.caveats[0].expression.trim()), ("below", "n < limit"));

    // Watch streams the caveat with the change; export carries it; import takes it.
    let caveat_of = |r: &pb::Relationship| (r.caveat_name.clone(), r.caveat_context.as_ref().map(struct_text));
    let mut stream =
        c.relationships.watch(pb::WatchRequest { after_revision: schema_written }).await.unwrap().into_inner();
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    let watched: Vec<(String, Option<String>)> =
        msg.changes.iter().filter_map(|ch| ch.relationship.as_ref()).map(caveat_of).filter(|(n, _)| !n.is_empty()).collect();
    assert_eq!(
        watched,
        [("below".to_string(), Some(r#"{"limit":5.0}"#.to_string())), ("below".to_string(), Some(r#"{"limit":3.0}"#.to_string()))]
    );
    let exported: Vec<pb::Relationship> = c
        .relationships
        .export_relationships(pb::ExportRelationshipsRequest { consistency: None })
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().relationships)
        .collect::<Vec<Vec<pb::Relationship>>>()
        .await
        .concat();
    let doc1 = exported.iter().find(|r| r.resource.as_ref().is_some_and(|o| o.id == "1")).unwrap();
    assert_eq!(caveat_of(doc1), ("below".to_string(), Some(r#"{"limit":5.0}"#.to_string())));
    let mut imported = rel("doc:3#viewer@user:cid");
    imported.caveat_name = "below".into();
    imported.caveat_context = Some(pb_struct(limit(2)));
    let batch = pb::ImportRelationshipsRequest { relationships: vec![imported] };
    c.relationships.import_relationships(tokio_stream::iter(vec![batch])).await.unwrap();
    let r = c.permissions.check(check("doc:3#view@user:cid", serde_json::json!({}))).await.unwrap().into_inner();
    assert_eq!((r.decision, r.missing_context), (pb::Decision::Conditional as i32, vec!["n".to_string()]));
    let r = c.permissions.check(check("doc:3#view@user:cid", serde_json::json!({"n": 2}))).await.unwrap().into_inner();
    assert_eq!(r.decision, pb::Decision::Denied as i32);
}
