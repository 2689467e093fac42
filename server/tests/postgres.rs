//! Postgres as the source of truth, against the real binary and a real Postgres (each
//! test makes its own database and drops it): migrations, replicas that agree, waits for
//! tokens written elsewhere, restart and resume, reload past the changelog retention,
//! other applications writing through `arbiter_write`, concurrent writers, and caveated
//! relationships stored, replicated and loaded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use arbiter_proto::arbiter::v1 as pb;
use common::*;
use sqlx::Connection;

fn replica(dir: &std::path::Path, db: &TestDb, extra: &[&str]) -> Server {
    let mut args = vec!["--postgres", &db.url, "--migrate"];
    if !extra.contains(&"--poll-interval") {
        args.extend_from_slice(&["--poll-interval", "200ms"]);
    }
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

async fn write(c: &mut Clients, rels: &[&str]) -> String {
    c.relationships
        .write_relationships(pb::WriteRelationshipsRequest { updates: rels.iter().map(|r| touch(r)).collect(), preconditions: vec![] })
        .await
        .unwrap()
        .into_inner()
        .revision
}

async fn allowed(c: &mut Clients, q: &str, consistency: Option<pb::Consistency>) -> bool {
    let d = c.permissions.check(check_req(q, consistency)).await.unwrap().into_inner().decision;
    d == pb::Decision::Allowed as i32
}

fn fully_consistent() -> Option<pb::Consistency> {
    Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::FullyConsistent(true)) })
}

/// Polls until `f` holds (a replica following by NOTIFY or polling), or fails.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_serve_requires_it() {
    let db = TestDb::new("migrate").await;
    let dir = tempfile::tempdir().unwrap();
    // Without --migrate on an empty database: a clear refusal.
    let err = Server::try_start(dir.path(), &["--postgres", &db.url]).err().unwrap();
    assert!(err.contains("arbiter migrate"), "{err}");
    // The first run installs the platform part of the schema at revision 1; the second
    // finds everything current and writes nothing.
    for platform in ["platform part installed at", "platform part current"] {
        let out = std::process::Command::new(BIN).args(["migrate", "--postgres", &db.url]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("migrated") && stdout.contains(platform), "{stdout}");
    }
    let pool = db.pool().await;
    let head: i64 = sqlx::query_scalar("SELECT revision FROM arbiter_revision").fetch_one(&pool).await.unwrap();
    assert_eq!(head, 1);
    let schema: String = sqlx::query_scalar("SELECT schema_text FROM arbiter_schema").fetch_one(&pool).await.unwrap();
    assert!(schema.contains("definition platform/tenant") && schema.contains("end of the platform part"), "{schema}");
    // A bad URL names the problem.
    let out = std::process::Command::new(BIN)
        .args(["migrate", "--postgres", "postgres://nobody:secret@127.0.0.1:1/none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to Postgres") && !err.contains("secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_and_wait_for_tokens_written_elsewhere() {
    let db = TestDb::new("replicas").await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    // A slow poll on B: only the token wait can make it fresh in time.
    let b = replica(dbb.path(), &db, &["--poll-interval", "1h"]);
    let (mut ca, mut cb) = (a.clients().await, b.clients().await);
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    let token = write(&mut ca, &["doc:1#viewer@user:ann", "group:eng#member@user:bob", "doc:1#viewer@group:eng#member"]).await;
    // B answers at least as fresh as A's write.
    assert!(allowed(&mut cb, "doc:1#view@user:bob", at_least(&token)).await);
    assert!(allowed(&mut cb, "doc:1#view@user:ann", at_exact(&token)).await);
    let t2 = write(&mut cb, &["doc:2#viewer@user:cid"]).await;
    assert!(allowed(&mut ca, "doc:2#view@user:cid", fully_consistent()).await);
    assert!(allowed(&mut ca, "doc:2#view@user:cid", at_least(&t2)).await);
    // B measured how long A's revisions took to reach it.
    let (_, metrics) = b.http_get("/metrics", None);
    let applied: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("arbiter_replica_apply_lag_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(applied >= 2.0, "{metrics}");
    // The schema written through A is B's too.
    // (after the platform part that --migrate installed: reads return both parts).
    let schema = cb.schema.read_schema(pb::ReadSchemaRequest {}).await.unwrap().into_inner().schema;
    assert!(schema.starts_with("// The platform part") && schema.ends_with(DOC_SCHEMA), "{schema}");
    // A token no writer has issued (above Postgres' head) is refused at once, not
    // waited for (B polls only hourly, and the consistency timeout is 5 s).
    let err = cb
        .permissions
        .check(check_req("doc:1#view@user:ann", at_least("r999999")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("r999999") && err.message().contains("has not been written"), "{}", err.message());


    // Bad writes through a replica are refused as on the embedded store; Postgres is unchanged.
    let pool = db.pool().await;
    let head = || async { sqlx::query_scalar::<_, i64>("SELECT revision FROM arbiter_revision").fetch_one(&pool).await.unwrap() };
    let before = head().await;
    let err = ca
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest { updates: vec![touch("doc:1#nope@user:ann")], preconditions: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let err = ca
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest { updates: vec![create("doc:1#viewer@user:ann")], preconditions: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already exists"), "{err:?}");
    let err = cb.schema.write_schema(pb::WriteSchemaRequest { schema: "definition user {}".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(head().await, before);

    // Deletes by filter, through B, seen by A.
    let resp = cb
        .relationships
        .delete_relationships(pb::DeleteRelationshipsRequest {
            filter: Some(pb::RelationshipFilter { resource_type: "doc".into(), resource_id: "1".into(), ..Default::default() }),
            preconditions: vec![],
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.deleted, 2);
    assert!(!allowed(&mut ca, "doc:1#view@user:ann", at_least(&resp.revision)).await);
    assert_eq!(read_all(&mut ca).await, read_all(&mut cb).await);
    // And the relationship table is what both serve.
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT resource_type, resource_id, relation, subject_type, subject_id, subject_relation FROM relationships",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut table: Vec<String> = rows
        .into_iter()
        .map(|(rt, ri, r, st, si, sr)| {
            let mut s = format!("{rt}:{ri}#{r}@{st}:{si}");
            if !sr.is_empty() {
                s = format!("{s}#{sr}");
            }
            s
        })
        .collect();
    table.sort();
    assert_eq!(table, read_all(&mut ca).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resumes_after_restart_and_reloads_past_the_retention() {
    let db = TestDb::new("resume").await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    let mut ca = a.clients().await;
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    write(&mut ca, &["doc:1#viewer@user:ann"]).await;
    let b = replica(dbb.path(), &db, &[]);
    let first = b.revision.clone();
    b.kill9();
    // Writes while B is down.
    write(&mut ca, &["doc:2#viewer@user:bob"]).await;
    let t = write(&mut ca, &["doc:3#viewer@user:cid"]).await;
    let b = replica(dbb.path(), &db, &[]);
    assert_eq!(b.revision, t, "B resumed from {first} and caught up before serving");
    assert!(!b.stderr().contains("reloading"), "B should resume, not reload: {}", b.stderr());
    let mut cb = b.clients().await;
    assert!(allowed(&mut cb, "doc:3#view@user:cid", None).await);
    b.terminate();

    // B is down while the changelog is pruned past its snapshot: it must reload.
    write(&mut ca, &["doc:4#viewer@user:dan"]).await;
    let t = write(&mut ca, &["doc:5#viewer@user:eve"]).await;
    let pool = db.pool().await;
    let horizon: i64 = sqlx::query_scalar("SELECT arbiter_prune_changelog(now() + interval '1 day')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(horizon >= 5, "pruned through {horizon}");
    let b = replica(dbb.path(), &db, &[]);
    assert_eq!(b.revision, t);
    assert!(b.stderr().contains("older than the changelog retention"), "{}", b.stderr());
    let mut cb = b.clients().await;
    assert_eq!(read_all(&mut cb).await, read_all(&mut ca).await);
    assert!(allowed(&mut cb, "doc:5#view@user:eve", None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_applications_write_through_the_sql_function() {
    let db = TestDb::new("direct").await;
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), &db, &[]);
    let mut c = a.clients().await;
    c.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    let pool = db.pool().await;
    let rev: i64 = sqlx::query_scalar("SELECT arbiter_write($1::jsonb, '{\"writer\":\"billing\"}'::jsonb)")
        .bind(serde_json::json!([
            {"op": "touch", "resource": "doc:9", "relation": "viewer", "subject": "group:eng#member"},
            {"op": "touch", "resource": "group:eng", "relation": "member", "subject": "user:zoe"},
            {"op": "touch", "resource": "doc:9", "relation": "nope", "subject": "user:zoe"},
            {"op": "touch", "resource": "doc:10", "relation": "viewer", "subject": "user:*"},
            {"op": "touch", "resource": "doc:11", "relation": "viewer", "subject": "user:old", "expires_at": "2001-01-01T00:00:00Z"}
        ]))
        .fetch_one(&pool)
        .await
        .unwrap();
    // Picked up by NOTIFY (or polling), without any token.
    eventually("the direct write to arrive", || {
        let mut c = c.clone();
        async move { allowed(&mut c, "doc:9#view@user:zoe", None).await }
    })
    .await;
    assert!(allowed(&mut c, "doc:10#view@user:anyone", at_least(&format!("r{rev}"))).await);
    assert!(!allowed(&mut c, "doc:11#view@user:old", None).await, "refused, and expired anyway");
    // The rows the schema refuses (an unknown relation; an expiration on a relation that
    // does not allow one) were left out, counted and logged; the replica serves on.
    let (_, metrics) = a.http_get("/metrics", None);
    assert!(metrics.contains("arbiter_replica_rejected_changes_total 2"), "{metrics}");
    assert!(a.stderr().contains("nope") && a.stderr().contains("with expiration"), "{}", a.stderr());
    // Malformed input to the function is refused by it, naming the problem, and changes nothing.
    let err = sqlx::query_scalar::<_, i64>("SELECT arbiter_write('[{\"op\":\"touch\",\"resource\":\"doc\"}]'::jsonb)")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a relationship"), "{err}");
    let head: i64 = sqlx::query_scalar("SELECT revision FROM arbiter_revision").fetch_one(&pool).await.unwrap();
    assert_eq!(head, rev);
    // The sweep removes the expired row in Postgres, and the replicas apply it.
    let swept: i64 = sqlx::query_scalar("SELECT arbiter_sweep_expired()").fetch_one(&pool).await.unwrap();
    assert_eq!(swept, 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM relationships WHERE resource_id = '11'").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_replicas_never_lose_a_change() {
    let db = TestDb::new("concurrent").await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    let b = replica(dbb.path(), &db, &[]);
    let mut ca = a.clients().await;
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    let mut tasks = Vec::new();
    for (w, server) in [&a, &b, &a, &b].into_iter().enumerate() {
        let mut c = server.clients().await;
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for i in 0..25 {
                tokens.push(write(&mut c, &[&format!("doc:w{w}n{i}#viewer@user:u{w}")]).await);
            }
            tokens
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.extend(t.await.unwrap());
    }
    // Every write got its own revision.
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 100);
    let mut cb = b.clients().await;
    assert!(allowed(&mut cb, "doc:w0n0#view@user:u0", fully_consistent()).await);
    assert!(allowed(&mut ca, "doc:w0n0#view@user:u0", fully_consistent()).await);
    let (ra, rb) = (read_all(&mut ca).await, read_all(&mut cb).await);
    assert_eq!(ra.len(), 100);
    assert_eq!(ra, rb);
    // Exactly what Postgres holds: count and digest.
    let pool = db.pool().await;
    let (count, digest): (i64, String) = sqlx::query_as(
        "SELECT count(*), md5(coalesce(string_agg(t, ',' ORDER BY t COLLATE \"C\"), ''))
         FROM (SELECT resource_type || ':' || resource_id || '#' || relation || '@' || subject_type || ':' || subject_id AS t
               FROM relationships) r",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(count, 100);
    let mut mine: Vec<&String> = ra.iter().collect();
    mine.sort();
    let joined = mine.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
    let (ours,): (String,) = sqlx::query_as("SELECT md5($1)").bind(&joined).fetch_one(&pool).await.unwrap();
    assert_eq!(ours, digest, "the replicas hold what Postgres holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_survives_lost_connections_and_catches_up() {
    let db = TestDb::new("reconnect").await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    let b = replica(dbb.path(), &db, &["--consistency-timeout", "1s"]);
    let (mut ca, mut cb) = (a.clients().await, b.clients().await);
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    write(&mut ca, &["doc:1#viewer@user:ann"]).await;
    // Postgres drops every connection of this database and refuses new ones for a while
    // (as a restart would).
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name)).execute(&mut admin).await.unwrap();
    let kill = format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}'", db.name);
    sqlx::query_scalar::<_, i64>(&kill).fetch_one(&mut admin).await.unwrap();
    // B keeps answering from its graph meanwhile, but is not ready once it cannot catch
    // up within its bound.
    assert!(allowed(&mut cb, "doc:1#view@user:ann", None).await);
    eventually("B to report not ready", || async {
        let (code, body) = b.http_get("/readyz", None);
        code == 503 && body.contains("not caught up")
    })
    .await;
    assert!(allowed(&mut cb, "doc:1#view@user:ann", None).await);
    sqlx::query(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name)).execute(&mut admin).await.unwrap();
    // Writes through A work again once the pool reconnects, and B catches up.
    let t = loop {
        match ca
            .relationships
            .write_relationships(pb::WriteRelationshipsRequest { updates: vec![touch("doc:2#viewer@user:bob")], preconditions: vec![] })
            .await
        {
            Ok(r) => break r.into_inner().revision,
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(allowed(&mut cb, "doc:2#view@user:bob", at_least(&t)).await);
    eventually("B to report ready", || async { b.http_get("/readyz", None).0 == 200 }).await;
}

/// Cedar in Postgres mode: the policy model and attributes written on replica A are
/// stored in Postgres (one row per policy in `arbiter_policies`), reach replica B through
/// the changelog, survive B's restart (resume) and its reload from Postgres, and a write
/// the engine refuses is refused before anything reaches Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_attributes_reach_every_replica_and_survive_restarts() {
    let db = TestDb::new("policies").await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    let b = replica(dbb.path(), &db, &[]);
    let (mut ca, mut cb) = (a.clients().await, b.clients().await);
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    write(&mut ca, &["doc:1#viewer@user:ann", "doc:2#viewer@user:ann"]).await;
    let definitions = vec![pb::AttributeDefinition {
        object_type: "user".into(),
        name: "suspended".into(),
        r#type: "bool".into(),
        required: false,
        source: String::new(),
    }];
    let labels = vec![
        pb::SecurityLabel { name: "secret".into(), level: 3, parents: vec![] },
        pb::SecurityLabel { name: "internal".into(), level: 1, parents: vec!["secret".into()] },
    ];
    ca.schema
        .write_attribute_schema(pb::WriteAttributeSchemaRequest { definitions, labels })
        .await
        .unwrap();
    let policies = vec![
        pb::Policy {
            id: "suspended".into(),
            text: "forbid(principal is user, action, resource) when { principal has suspended && principal.suspended };".into(),
        },
        pb::Policy {
            id: "levels".into(),
            text: "forbid(principal, action, resource is doc) unless { principal.label_level >= resource.label_level };".into(),
        },
    ];
    ca.schema.write_policies(pb::WritePoliciesRequest { policies }).await.unwrap();
    // Refused on A (an undeclared attribute): nothing reaches Postgres.
    let err = ca
        .schema
        .write_policies(pb::WritePoliciesRequest {
            policies: vec![pb::Policy { id: "bad".into(), text: "forbid(principal, action, resource) when { principal.age > 3 };".into() }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let object = |t: &str, i: &str| Some(pb::ObjectRef { r#type: t.into(), id: i.into() });
    let set = |t: &str, i: &str, values: serde_json::Value, labels: &[&str]| pb::ObjectAttributes {
        object: object(t, i),
        values: Some(prost_types::Struct {
            fields: values
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), prost_types::Value { kind: Some(prost_types::value::Kind::BoolValue(v.as_bool().unwrap())) }))
                .collect(),
        }),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    let token = ca
        .relationships
        .write_attributes(pb::WriteAttributesRequest {
            set: vec![
                set("user", "ann", serde_json::json!({}), &["internal"]),
                set("doc", "2", serde_json::json!({}), &["secret"]),
            ],
            delete: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let at_token = Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token)) });
    // B, at A's token: ann (internal, level 1) reads doc:1 (unlabelled) but not doc:2 (secret).
    assert!(allowed(&mut cb, "doc:1#view@user:ann", at_token.clone()).await);
    assert!(!allowed(&mut cb, "doc:2#view@user:ann", at_token.clone()).await);
    let read = cb
        .relationships
        .read_attributes(pb::ReadAttributesRequest { consistency: at_token.clone(), objects: vec![pb::ObjectRef { r#type: "user".into(), id: "ann".into() }] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.attributes.len(), 1);
    assert_eq!(read.attributes[0].labels, vec!["internal".to_string()]);
    // Postgres holds the policies one row each.
    let pool = db.pool().await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT policy_id FROM arbiter_policies ORDER BY policy_id").fetch_all(&pool).await.unwrap();
    assert_eq!(ids, ["levels", "suspended"]);
    // Suspend ann on B; A sees it.
    let token = cb
        .relationships
        .write_attributes(pb::WriteAttributesRequest {
            set: vec![set("user", "ann", serde_json::json!({"suspended": true}), &["internal"])],
            delete: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let at_token = Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token)) });
    assert!(!allowed(&mut ca, "doc:1#view@user:ann", at_token).await);
    // B resumes from its snapshot with the policies and attributes in it.
    b.terminate();
    let b = replica(dbb.path(), &db, &[]);
    assert!(!b.stderr().contains("reloading"), "{}", b.stderr());
    let mut cb = b.clients().await;
    assert!(!allowed(&mut cb, "doc:1#view@user:ann", fully_consistent()).await);
    // And a replica loading everything from Postgres gets them too.
    b.terminate();
    let dc = tempfile::tempdir().unwrap();
    let c = replica(dc.path(), &db, &[]);
    let mut cc = c.clients().await;
    assert!(!allowed(&mut cc, "doc:1#view@user:ann", fully_consistent()).await);
    ca.relationships
        .write_attributes(pb::WriteAttributesRequest { set: vec![], delete: vec![pb::ObjectRef { r#type: "user".into(), id: "ann".into() }] })
        .await
        .unwrap();
    eventually("ann's attributes to go on C", || {
        let mut cc = cc.clone();
        async move { allowed(&mut cc, "doc:1#view@user:ann", None).await }
    })
    .await;
    let policies = cc.schema.read_policies(pb::ReadPoliciesRequest {}).await.unwrap().into_inner().policies;
    assert_eq!(policies.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_through_a_replica_commits_in_groups_postgres_takes() {
    // A replica gathers an import stream's messages into commits of a size one
    // `arbiter_write` call takes: several revisions for a large stream, every
    // relationship in Postgres and on the other replica.
    let db = TestDb::new("import").await;
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    let b = replica(dbb.path(), &db, &[]);
    let (mut ca, mut cb) = (a.clients().await, b.clients().await);
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    let pool = db.pool().await;
    let head = || async { sqlx::query_scalar::<_, i64>("SELECT revision FROM arbiter_revision").fetch_one(&pool).await.unwrap() };
    let before = head().await;
    let (messages, per) = (12usize, 5_000usize);
    let stream: Vec<pb::ImportRelationshipsRequest> = (0..messages)
        .map(|m| pb::ImportRelationshipsRequest {
            relationships: (0..per).map(|i| rel(&format!("doc:m{m}_{i}#viewer@user:u{i}"))).collect(),
        })
        .collect();
    let done = ca.relationships.import_relationships(tokio_stream::iter(stream)).await.unwrap().into_inner();
    assert_eq!(done.imported, (messages * per) as u64);
    let commits = head().await - before;
    assert!((3..=messages as i64).contains(&commits), "{commits} commits for {messages} messages of {per}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM relationships").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, (messages * per) as i64);
    for q in ["doc:m0_0#view@user:u0", "doc:m11_4999#view@user:u4999", "doc:m6_17#view@user:u17"] {
        assert!(allowed(&mut cb, q, at_least(&done.revision)).await, "{q}");
    }
}

/// Graceful shutdown writes every queued decision: N checks answered, SIGTERM at once
/// (well inside the writer's 500 ms batching window), N rows in `arbiter_decision_logs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_logs_queued_at_sigterm_are_written_before_exit() {
    const N: usize = 300;
    let db = TestDb::new("decision_flush").await;
    let dir = tempfile::tempdir().unwrap();
    let server = replica(dir.path(), &db, &["--decision-log", "postgres", "--decision-log-sample", "1"]);
    let mut c = server.clients().await;
    c.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    let token = write(&mut c, &["doc:1#viewer@user:ann"]).await;
    let at_least = Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token)) });
    let pool = db.pool().await;
    let logged = || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM arbiter_decision_logs").fetch_one(&pool).await.unwrap() };
    let before = logged().await;
    for n in 0..N {
        let user = if n % 2 == 0 { "ann" } else { "bob" };
        c.permissions.check(check_req(&format!("doc:1#view@user:{user}"), at_least.clone())).await.unwrap();
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let rows = logged().await - before;
    assert_eq!(rows, N as i64, "every decision answered before SIGTERM is logged");
}

/// A Postgres failure reaches the client as what failed and an error id, never the SQL
/// error itself (table names, addresses); the server's log has the detail under the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failures_reach_clients_as_a_short_message_and_an_error_id() {
    let db = TestDb::new("fault_message").await;
    let dir = tempfile::tempdir().unwrap();
    let server = replica(dir.path(), &db, &[]);
    let mut c = server.clients().await;
    c.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    let pool = db.pool().await;
    sqlx::query("ALTER TABLE arbiter_revision RENAME TO arbiter_revision_away").execute(&pool).await.unwrap();
    let err = c
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest { updates: vec![touch("doc:1#viewer@user:ann")], preconditions: vec![] })
        .await
        .unwrap_err();
    sqlx::query("ALTER TABLE arbiter_revision_away RENAME TO arbiter_revision").execute(&pool).await.unwrap();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let message = err.message();
    assert!(message.starts_with("cannot lock the revision counter (error id `"), "{message}");
    assert!(!message.contains("arbiter_revision") && !message.contains("does not exist"), "{message}");
    let id = message.split('`').nth(1).unwrap();
    let log = server.stderr();
    let line = log.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("error id {id} not logged: {log}"));
    assert!(line.contains("arbiter_revision") && line.contains("does not exist"), "{line}");
    // Nothing was written, and the next write goes through.
    write(&mut c, &["doc:1#viewer@user:ann"]).await;
    assert!(allowed(&mut c, "doc:1#view@user:ann", fully_consistent()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_committed_is_a_success_even_when_the_local_apply_is_slow() {
    let db = TestDb::new("slow_apply").await;
    let (da, ds) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    // S waits at most a millisecond for its own apply: shorter than any apply takes.
    let s = replica(ds.path(), &db, &["--consistency-timeout", "1ms", "--poll-interval", "1h"]);
    let (mut ca, mut cs) = (a.clients().await, s.clients().await);
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    // Every write through S lands in Postgres; each must be reported as the success it
    // is, with its token (a client told otherwise would retry a write that landed).
    for i in 0..20 {
        let token = write(&mut cs, &[&format!("doc:{i}#viewer@user:ann")]).await;
        assert!(allowed(&mut ca, &format!("doc:{i}#view@user:ann"), at_least(&token)).await);
    }
    // And S catches up.
    eventually("S to apply its writes", || {
        let mut cs = cs.clone();
        async move { allowed(&mut cs, "doc:19#view@user:ann", minimize_latency()).await }
    })
    .await;
}

/// A replica started with `--schema` applies its own write at once: the follower runs
/// before anything is written at start, so the write does not wait out the consistency
/// timeout for a revision nobody is applying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_given_at_start_is_applied_without_waiting_out_the_timeout() {
    let db = TestDb::new("schema_at_start").await;
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.zed");
    std::fs::write(&schema, DOC_SCHEMA).unwrap();
    let data = dir.path().join("data");
    // With a timeout this long, a write waiting on a follower that is not running yet
    // would keep the server from starting for the whole test.
    let s = replica(&data, &db, &["--schema", schema.to_str().unwrap(), "--consistency-timeout", "10m"]);
    let mut c = s.clients().await;
    let token = write(&mut c, &["doc:1#viewer@user:ann"]).await;
    assert!(allowed(&mut c, "doc:1#view@user:ann", at_least(&token)).await);
    assert!(!s.stderr().contains("has not applied it yet"), "{}", s.stderr());
}

const CAVEAT_SCHEMA: &str = r#"
caveat under_limit(n int, limit int) {
    n < limit
}

definition user {}

definition doc {
    relation viewer: user | user with under_limit
    permission view = viewer
}"#;

/// A Check with a request context: (decision, missing context).
async fn check_with(c: &mut Clients, q: &str, consistency: Option<pb::Consistency>, context: serde_json::Value) -> (pb::Decision, Vec<String>) {
    let mut req = check_req(q, consistency);
    req.context = Some(pb_struct(context));
    let r = c.permissions.check(req).await.unwrap().into_inner();
    (pb::Decision::try_from(r.decision).unwrap(), r.missing_context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caveated_relationships_are_stored_replicated_and_written_through_sql() {
    let db = TestDb::new("caveats").await;
    let (da, dbb, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &[]);
    let b = replica(dbb.path(), &db, &[]);
    let (mut ca, mut cb) = (a.clients().await, b.clients().await);
    ca.schema.write_schema(pb::WriteSchemaRequest { schema: CAVEAT_SCHEMA.into() }).await.unwrap();
    let token = ca
        .relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![caveated("doc:1#viewer@user:ann", "under_limit", serde_json::json!({"limit": 5})), touch("doc:2#viewer@user:ann")],
            preconditions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .revision;

    // B evaluates the caveat A wrote: conditional without `n`, decided with it, and the
    // relationship's `limit` wins over the request's.
    let fresh = || at_least(&token);
    let none = serde_json::json!({});
    assert_eq!(check_with(&mut cb, "doc:1#view@user:ann", fresh(), none.clone()).await, (pb::Decision::Conditional, vec!["n".to_string()]));
    assert_eq!(check_with(&mut cb, "doc:1#view@user:ann", fresh(), serde_json::json!({"n": 3})).await.0, pb::Decision::Allowed);
    assert_eq!(check_with(&mut cb, "doc:1#view@user:ann", fresh(), serde_json::json!({"n": 9})).await.0, pb::Decision::Denied);
    assert_eq!(check_with(&mut cb, "doc:1#view@user:ann", fresh(), serde_json::json!({"n": 9, "limit": 100})).await.0, pb::Decision::Denied);
    assert_eq!(check_with(&mut cb, "doc:2#view@user:ann", fresh(), none.clone()).await.0, pb::Decision::Allowed);
    // Expand shows the caveat with the relationship's values and the expression.
    let leaf = expand_leaf(&mut cb, "doc:1", "viewer", fresh()).await;
    assert_eq!(leaf.caveats.len(), 1, "{leaf:?}");
    assert_eq!(leaf.caveats[0].caveat_name, "under_limit");
    assert_eq!(leaf.caveats[0].expression.trim(), "n < limit");
    assert_eq!(struct_text(leaf.caveats[0].context.as_ref().unwrap()), r#"{"limit":5.0}"#);

    // Postgres holds the caveat in the relationship and in the changelog; reads return it.
    let pool = db.pool().await;
    let row: (Option<String>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT caveat_name, caveat_context FROM relationships WHERE resource_id = '1'").fetch_one(&pool).await.unwrap();
    assert_eq!(row, (Some("under_limit".into()), Some(serde_json::json!({"limit": 5}))));
    let logged: (Option<String>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT caveat_name, caveat_context FROM arbiter_changelog WHERE resource_id = '1'").fetch_one(&pool).await.unwrap();
    assert_eq!(logged, row);
    assert_eq!(read_all(&mut cb).await, ["doc:1#viewer@user:ann[under_limit:{\"limit\":5.0}]", "doc:2#viewer@user:ann"]);

    // Other applications write caveats through `arbiter_write`; the replicas apply them.
    sqlx::query_scalar::<_, i64>("SELECT arbiter_write($1::jsonb)")
        .bind(serde_json::json!([{"op": "touch", "resource": "doc:3", "relation": "viewer", "subject": "user:bob",
                                  "caveat": "under_limit", "caveat_context": {"limit": 2}}]))
        .fetch_one(&pool)
        .await
        .unwrap();
    eventually("the caveated direct write to arrive", || {
        let mut c = cb.clone();
        async move { check_with(&mut c, "doc:3#view@user:bob", None, serde_json::json!({"n": 1})).await.0 == pb::Decision::Allowed }
    })
    .await;
    assert_eq!(
        check_with(&mut ca, "doc:3#view@user:bob", fully_consistent(), serde_json::json!({"n": 2})).await.0,
        pb::Decision::Denied
    );
    // ... and get a clear error, with nothing written, for a caveat that is not a name or
    // a context that is not an object.
    let head = || async { sqlx::query_scalar::<_, i64>("SELECT revision FROM arbiter_revision").fetch_one(&pool).await.unwrap() };
    let before = head().await;
    for (bad, says) in [
        (serde_json::json!({"caveat": 5}), "is not a caveat name"),
        (serde_json::json!({"caveat": ""}), "is not a caveat name"),
        (serde_json::json!({"caveat": "under_limit", "caveat_context": [1]}), "not a JSON object"),
        (serde_json::json!({"caveat_context": {"limit": 1}}), "not a JSON object beside a caveat name"),
    ] {
        let mut change = serde_json::json!({"op": "touch", "resource": "doc:4", "relation": "viewer", "subject": "user:bob"});
        change.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let err = sqlx::query_scalar::<_, i64>("SELECT arbiter_write($1::jsonb)")
            .bind(serde_json::json!([change]))
            .fetch_one(&pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
    assert_eq!(head().await, before);

    // A caveat the schema does not define, or a context that does not fit its parameters,
    // is refused by the replica before Postgres sees it.
    for (update, says) in [
        (caveated("doc:5#viewer@user:bob", "nope", serde_json::json!({})), "nope"),
        (caveated("doc:5#viewer@user:bob", "under_limit", serde_json::json!({"limit": "many"})), "limit"),
    ] {
        let err = cb
            .relationships
            .write_relationships(pb::WriteRelationshipsRequest { updates: vec![update], preconditions: vec![] })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    }
    assert_eq!(head().await, before);

    // A touch without the caveat replaces the relationship: the caveat is gone everywhere.
    let t = write(&mut cb, &["doc:1#viewer@user:ann"]).await;
    let row: (Option<String>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT caveat_name, caveat_context FROM relationships WHERE resource_id = '1'").fetch_one(&pool).await.unwrap();
    assert_eq!(row, (None, None));
    assert_eq!(check_with(&mut ca, "doc:1#view@user:ann", at_least(&t), none.clone()).await.0, pb::Decision::Allowed);

    // A new replica loads its snapshot from Postgres, caveats and contexts included.
    let c = replica(dc.path(), &db, &[]);
    let mut cc = c.clients().await;
    assert_eq!(
        check_with(&mut cc, "doc:3#view@user:bob", fully_consistent(), none).await,
        (pb::Decision::Conditional, vec!["n".to_string()])
    );
    assert_eq!(read_all(&mut cc).await, ["doc:1#viewer@user:ann", "doc:2#viewer@user:ann", "doc:3#viewer@user:bob[under_limit:{\"limit\":2.0}]"]);
}
