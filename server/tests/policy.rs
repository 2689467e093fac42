//! Cedar policies through the real server: `--policies DIR` at start, `arbiter policy
//! write|read`, WritePolicies refusing an invalid set with the policy's id and position
//! (and changing nothing), Check with a request context and `explain`, and the policies
//! surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use arbiter_proto::arbiter::v1 as pb;
use common::*;

const SCHEMA: &str = "definition user {}\n\ndefinition doc {\n    relation owner: user\n    relation viewer: user\n    permission edit = owner\n    permission view = viewer + edit\n}\n";

const POLICIES: &str = r#"
@id("nobody-edits-archived")
forbid(principal, action == Action::"edit", resource == doc::"archived");

@id("everyone-views-the-handbook")
permit(principal, action == Action::"view", resource == doc::"handbook");
"#;

fn decision(allowed: bool) -> i32 {
    if allowed {
        pb::Decision::Allowed as i32
    } else {
        pb::Decision::Denied as i32
    }
}

async fn check(c: &mut Clients, q: &str, explain: bool) -> pb::CheckResponse {
    let mut req = check_req(q, None);
    req.explain = explain;
    c.permissions.check(req).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_from_a_directory_the_cli_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("schema.zed"), SCHEMA).unwrap();
    let policy_dir = files.path().join("policies");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("base.cedar"), POLICIES).unwrap();
    std::fs::write(policy_dir.join("notes.txt"), "not a policy").unwrap();
    let schema_flag = files.path().join("schema.zed");
    let args = ["--schema", schema_flag.to_str().unwrap(), "--policies", policy_dir.to_str().unwrap()];
    let server = Server::start(dir.path(), &args);
    let mut c = server.clients().await;
    c.relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates: vec![touch("doc:archived#owner@user:ann"), touch("doc:current#owner@user:ann")],
            preconditions: vec![],
        })
        .await
        .unwrap();

    // The forbid overrides ownership; the permit grants without a relationship.
    assert_eq!(check(&mut c, "doc:archived#edit@user:ann", false).await.decision, decision(false));
    assert_eq!(check(&mut c, "doc:current#edit@user:ann", false).await.decision, decision(true));
    assert_eq!(check(&mut c, "doc:handbook#view@user:zed", false).await.decision, decision(true));
    // explain names the deciding policy.
    let why = check(&mut c, "doc:archived#edit@user:ann", true).await;
    assert_eq!(why.explanation, ["cedar forbid `nobody-edits-archived`"], "{why:?}");
    let why = check(&mut c, "doc:handbook#view@user:zed", true).await;
    assert_eq!(why.explanation, ["cedar permit `everyone-views-the-handbook`"], "{why:?}");
    let why = check(&mut c, "doc:current#edit@user:ann", true).await;
    assert_eq!(why.explanation, ["doc:current#owner@user:ann"], "{why:?}");

    // `arbiter policy read` prints them by id.
    let (code, out, err) = server.cli(&["policy", "read"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("// id: everyone-views-the-handbook") && out.contains("// id: nobody-edits-archived"), "{out}");

    // An invalid set is refused with the policy id, position and Cedar's message, and
    // nothing changes.
    let bad = files.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "@id(\"typo\")\npermit(principal, action == Action::\"view\", resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let (code, _, err) = server.cli(&["policy", "write", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("INVALID_ARGUMENT") || err.contains("invalid policy"), "{err}");
    assert!(err.contains("`typo`") && err.contains("colour"), "{err}");
    let unparsable = files.path().join("unparsable.cedar");
    std::fs::write(&unparsable, "permit(principal, action resource);").unwrap();
    let (code, _, err) = server.cli(&["policy", "write", unparsable.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unparsable.cedar") && err.contains("1:"), "{err}");
    let read = c.schema.read_policies(pb::ReadPoliciesRequest {}).await.unwrap().into_inner();
    assert_eq!(read.policies.len(), 2);
    assert_eq!(check(&mut c, "doc:archived#edit@user:ann", false).await.decision, decision(false));
    // Duplicate ids through the API.
    let dup = c
        .schema
        .write_policies(pb::WritePoliciesRequest {
            policies: vec![
                pb::Policy { id: "a".into(), text: "permit(principal, action, resource);".into() },
                pb::Policy { id: "a".into(), text: "forbid(principal, action, resource);".into() },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::InvalidArgument, "{dup:?}");

    // `arbiter policy write` replaces the whole set.
    let only = files.path().join("only.cedar");
    std::fs::write(&only, "permit(principal, action == Action::\"view\", resource == doc::\"news\");\n").unwrap();
    let (code, out, err) = server.cli(&["policy", "write", only.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());
    assert_eq!(check(&mut c, "doc:archived#edit@user:ann", false).await.decision, decision(true));
    assert_eq!(check(&mut c, "doc:news#view@user:zed", false).await.decision, decision(true));
    let read = c.schema.read_policies(pb::ReadPoliciesRequest {}).await.unwrap().into_inner();
    assert_eq!(read.policies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["only.cedar:1"]);

    // A restart keeps them (no --policies this time).
    server.terminate();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.clients().await;
    assert_eq!(check(&mut c, "doc:news#view@user:zed", false).await.decision, decision(true));
    assert_eq!(check(&mut c, "doc:handbook#view@user:zed", false).await.decision, decision(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_directory_stops_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("schema.zed"), SCHEMA).unwrap();
    std::fs::write(files.path().join("p.cedar"), "permit(principal, action == Action::\"fly\", resource);").unwrap();
    let schema = files.path().join("schema.zed");
    let err = Server::try_start(
        dir.path(),
        &["--schema", schema.to_str().unwrap(), "--policies", files.path().to_str().unwrap()],
    )
    .err()
    .unwrap();
    assert!(err.contains("p.cedar:1") && err.contains("fly"), "{err}");
}

/// Attributes and labels through the CLI against the server: define them from a file,
/// set values, read them back, see a policy use them, delete them; mistakes are refused
/// with the object and attribute named. Decisions are logged to a file with their
/// revision and the caller's request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_and_labels_through_the_cli_and_decision_logs() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("decisions.jsonl");
    std::fs::write(files.path().join("schema.zed"), SCHEMA).unwrap();
    let schema_flag = files.path().join("schema.zed");
    let server = Server::start(
        dir.path(),
        &["--schema", schema_flag.to_str().unwrap(), "--decision-log", log.to_str().unwrap()],
    );
    let attributes_file = files.path().join("attributes.yaml");
    std::fs::write(
        &attributes_file,
        "types:\n  user:\n    clearance?: long\n    ip?: ip\n  doc:\n    classification: long\ncontext:\n  hour?: long\nlabels:\n  secret: {level: 3}\n  internal: {level: 1, parent: secret}\n",
    )
    .unwrap();
    let (code, _, err) = server.cli(&["attributes", "define", attributes_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = server.cli(&["attributes", "schema"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("clearance?: long") && out.contains("parent: secret"), "{out}");
    let policy = files.path().join("mls.cedar");
    std::fs::write(
        &policy,
        "@id(\"mls\")\nforbid(principal, action, resource is doc)\nunless { principal has clearance && principal.clearance >= resource.classification };\n",
    )
    .unwrap();
    let (code, _, err) = server.cli(&["policy", "write", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = server.cli(&["write", "doc:plan#viewer@user:ann", "doc:plan#viewer@user:bob"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = server.cli(&[
        "attributes", "set",
        "user:ann", r#"{"clearance": 3, "ip": "10.0.0.1", "labels": ["internal"]}"#,
        "user:bob", r#"{"clearance": 1}"#,
        "doc:plan", r#"{"classification": 2}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = server.cli(&["attributes", "get", "user:ann", "user:nobody"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "user:ann {\"clearance\":3,\"ip\":{\"__extn\":{\"arg\":\"10.0.0.1\",\"fn\":\"ip\"}},\"labels\":[\"internal\"]}\n"
    );
    let (code, out, _) = server.cli(&["check", "doc:plan#view@user:ann"]);
    assert_eq!((code, out.as_str()), (0, "allowed\n"));
    let (code, out, _) = server.cli(&["check", "doc:plan#view@user:bob"]);
    assert_eq!((code, out.as_str()), (1, "denied\n"));
    // Refused: a mistyped value, an undeclared attribute, an undefined label, a missing
    // required attribute. Nothing changes.
    for (obj, json, needle) in [
        ("user:bob", r#"{"clearance": "high"}"#, "clearance"),
        ("user:bob", r#"{"age": 40}"#, "age"),
        ("user:bob", r#"{"labels": ["cosmic"]}"#, "cosmic"),
        ("doc:plan", r#"{}"#, "classification"),
    ] {
        let (code, _, err) = server.cli(&["attributes", "set", obj, json]);
        assert_eq!(code, 2, "{obj} {json}");
        assert!(err.contains(needle) && err.contains(obj), "{obj} {json}: {err}");
    }
    let (code, out, _) = server.cli(&["check", "doc:plan#view@user:bob"]);
    assert_eq!((code, out.as_str()), (1, "denied\n"));
    let (code, _, _) = server.cli(&["attributes", "delete", "user:bob"]);
    assert_eq!(code, 0);
    let (_, out, _) = server.cli(&["attributes", "get", "user:bob"]);
    assert_eq!(out, "");

    // Decision logs: the gRPC checks above, with a caller's request id on one more.
    let mut c = server.clients().await;
    let mut req = tonic::Request::new(check_req("doc:plan#view@user:ann", None));
    req.metadata_mut().insert("x-request-id", "trace-me".parse().unwrap());
    c.permissions.check(req).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.iter().any(|l| l["trace_id"] == "trace-me") || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let traced = lines.iter().find(|l| l["trace_id"] == "trace-me").expect("the traced decision is logged");
    assert_eq!(traced["decision"], "allowed");
    assert_eq!(traced["resource"], "doc:plan");
    assert_eq!(traced["subject"], "user:ann");
    assert!(traced["policy_version"].as_u64().unwrap() > 0);
    assert!(lines.iter().any(|l| l["decision"] == "denied" && l["subject"] == "user:bob"), "{lines:?}");
    let (_, metrics) = server.http_get("/metrics", None);
    assert!(metrics.contains("arbiter_decision_log_written_total"), "{metrics}");
}
