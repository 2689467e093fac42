//! SpiceDB's official client libraries against the real server: the Python client (PyPI
//! `authzed`) and the Node client (npm `@authzed/authzed-node`), pinned, installed once
//! into `~/.cache` (a virtualenv, an npm prefix) and reused by later runs. Each runs a
//! script of ours (`tests/clients/`) that exercises `authzed.api.v1` end to end against
//! `arbiter serve --preshared-key` and asserts every answer. An install that fails fails
//! the test, saying what failed: these tests never skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

/// The pinned client versions (bump deliberately: the cache is per version).
const AUTHZED_PY: &str = "1.25.0";
const AUTHZED_NODE: &str = "1.6.1";

const KEY: &str = "spicedb-client-test-key";

fn cache_root() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache")
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs an install step; on failure, panics with the command and its output.
fn run_step(what: &str, cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Builds `dir` once: `build` fills a fresh sibling directory, which is then renamed into
/// place with a marker, so an interrupted install is never taken for a finished one.
fn cached(dir: &Path, build: impl FnOnce(&Path)) {
    if dir.join(".complete").exists() {
        return;
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    build(&tmp);
    std::fs::write(tmp.join(".complete"), "").unwrap();
    let _ = std::fs::remove_dir_all(dir);
    if std::fs::rename(&tmp, dir).is_err() && !dir.join(".complete").exists() {
        panic!("cannot move {} to {}", tmp.display(), dir.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The Python interpreter of the cached virtualenv with `authzed` installed.
fn python_env() -> PathBuf {
    let dir = cache_root().join(format!("arbiter-pyenv-authzed-{AUTHZED_PY}"));
    cached(&dir, |tmp| {
        let python = std::env::var("ARBITER_PYTHON").unwrap_or_else(|_| {
            if Command::new("python3.11")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                "python3.11".into()
            } else {
                "python3".into()
            }
        });
        run_step(
            "creating the virtualenv for SpiceDB's Python client",
            Command::new(&python).args(["-m", "venv"]).arg(tmp),
        );
        run_step(
            &format!("pip install authzed=={AUTHZED_PY} (SpiceDB's Python client, from PyPI)"),
            Command::new(tmp.join("bin/python")).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                &format!("authzed=={AUTHZED_PY}"),
            ]),
        );
    });
    // A virtualenv's interpreter finds its packages from where it is run, so the
    // renamed directory works as built.
    dir.join("bin/python")
}

/// The `node_modules` of the cached npm prefix with `@authzed/authzed-node` installed.
fn node_modules() -> PathBuf {
    let dir = cache_root().join(format!("arbiter-node-authzed-{AUTHZED_NODE}"));
    cached(&dir, |tmp| {
        run_step(
            &format!("npm install @authzed/authzed-node@{AUTHZED_NODE} (SpiceDB's Node client, from npm)"),
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                .arg(tmp)
                .arg(format!("@authzed/authzed-node@{AUTHZED_NODE}")),
        );
    });
    dir.join("node_modules")
}

/// Runs a client script to completion (at most `limit`), printing its output; panics
/// with the output if it fails.
fn run_script(what: &str, mut cmd: Command, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    println!("{out}");
    match status {
        Some(s) if s.success() => start.elapsed(),
        Some(s) => panic!("{what} failed ({s})\nstdout:\n{out}\nstderr:\n{err}"),
        None => panic!("{what} did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}"),
    }
}

fn start_server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--preshared-key", KEY]);
    (dir, server)
}

#[test]
fn spicedb_python_client() {
    let started = Instant::now();
    let python = python_env();
    let installed = started.elapsed();
    let (dir, server) = start_server();
    // The client compares Arbiter's authzed.api.v1 descriptors with its own.
    let descriptors = dir.path().join("descriptors.bin");
    std::fs::write(&descriptors, arbiter_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut cmd = Command::new(&python);
    cmd.arg(clients_dir().join("spicedb_client.py"))
        .arg(&server.grpc)
        .arg(KEY)
        .arg(&descriptors);
    let ran = run_script(
        "SpiceDB's Python client against Arbiter",
        cmd,
        Duration::from_secs(300),
    );
    println!("python client: install/cache {installed:?}, script {ran:?}");
}

#[test]
fn spicedb_node_client() {
    let started = Instant::now();
    let modules = node_modules();
    let installed = started.elapsed();
    let (_dir, server) = start_server();
    let mut cmd = Command::new("node");
    cmd.arg(clients_dir().join("spicedb_client.cjs"))
        .arg(&server.grpc)
        .arg(KEY)
        .env("NODE_PATH", &modules);
    let ran = run_script(
        "SpiceDB's Node client against Arbiter",
        cmd,
        Duration::from_secs(300),
    );
    println!("node client: install/cache {installed:?}, script {ran:?}");
}

/// With `--postgres`, the authzed API goes through the replica like the native one:
/// writes are ordered in Postgres, reads wait for the ZedTokens they name, Watch on one
/// replica sees writes made through another, and mistakes keep SpiceDB's codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spicedb_api_on_postgres_replicas() {
    use arbiter_proto::authzed::api::v1 as pb;
    use pb::permissions_service_client::PermissionsServiceClient;
    use pb::schema_service_client::SchemaServiceClient;
    use pb::watch_service_client::WatchServiceClient;
    use sqlx::Connection;
    use tokio_stream::StreamExt;

    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("arbiter_test_authzed_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres is needed at {admin} (set DATABASE_URL): {e}"));
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(&drop_db).execute(&mut conn).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);

    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = |poll: &'static str| {
        vec![
            "--postgres",
            url.as_str(),
            "--migrate",
            "--poll-interval",
            poll,
            "--preshared-key",
            KEY,
        ]
    };
    let a = Server::start(da.path(), &args("200ms"));
    // A slow poll on B: only the token waits make it fresh in time.
    let b = Server::start(db.path(), &args("1h"));

    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {KEY}").parse().unwrap();
    let auth = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    };
    let (cha, chb) = (a.channel().await, b.channel().await);
    let mut schema_a = SchemaServiceClient::with_interceptor(cha.clone(), auth.clone());
    let mut perms_a = PermissionsServiceClient::with_interceptor(cha.clone(), auth.clone());
    let mut watch_a = WatchServiceClient::with_interceptor(cha, auth.clone());
    let mut perms_b = PermissionsServiceClient::with_interceptor(chb, auth);

    let obj = |t: &str, i: &str| pb::ObjectReference {
        object_type: t.into(),
        object_id: i.into(),
    };
    let user = |i: &str| pb::SubjectReference {
        object: Some(obj("user", i)),
        optional_relation: String::new(),
    };
    let update = |op: pb::relationship_update::Operation, doc: &str, relation: &str, who: &str| {
        pb::RelationshipUpdate {
            operation: op as i32,
            relationship: Some(pb::Relationship {
                resource: Some(obj("doc", doc)),
                relation: relation.into(),
                subject: Some(user(who)),
                optional_caveat: None,
                optional_expires_at: None,
            }),
        }
    };
    let write = |updates: Vec<pb::RelationshipUpdate>| pb::WriteRelationshipsRequest {
        updates,
        optional_preconditions: vec![],
        optional_transaction_metadata: None,
    };
    let check =
        |doc: &str, who: &str, c: pb::consistency::Requirement| pb::CheckPermissionRequest {
            consistency: Some(pb::Consistency {
                requirement: Some(c),
            }),
            resource: Some(obj("doc", doc)),
            permission: "view".into(),
            subject: Some(user(who)),
            context: None,
            with_tracing: false,
        };
    use pb::consistency::Requirement;
    use pb::relationship_update::Operation;
    let has = pb::check_permission_response::Permissionship::HasPermission as i32;

    schema_a
        .write_schema(pb::WriteSchemaRequest { schema: "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewer\n}\n".into() })
        .await
        .unwrap();
    let token = perms_a
        .write_relationships(write(vec![update(Operation::Touch, "1", "viewer", "ann")]))
        .await
        .unwrap()
        .into_inner()
        .written_at
        .unwrap();
    for c in [
        Requirement::AtLeastAsFresh(token.clone()),
        Requirement::AtExactSnapshot(token.clone()),
        Requirement::FullyConsistent(true),
    ] {
        let resp = perms_b
            .check_permission(check("1", "ann", c.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.permissionship, has, "{c:?}");
    }

    // Watch on A from the token; write through B; A sees it.
    let mut stream = watch_a
        .watch(pb::WatchRequest {
            optional_start_cursor: Some(token.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t2 = perms_b
        .write_relationships(write(vec![update(Operation::Create, "2", "viewer", "bob")]))
        .await
        .unwrap()
        .into_inner()
        .written_at
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.changes_through, Some(t2.clone()));
    assert_eq!(seen.updates.len(), 1);

    // Mistakes through a replica keep SpiceDB's codes and change nothing.
    let again = perms_b
        .write_relationships(write(vec![update(Operation::Create, "2", "viewer", "bob")]))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let permission = perms_b
        .write_relationships(write(vec![update(Operation::Touch, "2", "view", "bob")]))
        .await
        .unwrap_err();
    assert_eq!(
        permission.code(),
        tonic::Code::InvalidArgument,
        "{permission:?}"
    );
    let unknown = perms_a
        .write_relationships(write(vec![update(Operation::Touch, "2", "nope", "bob")]))
        .await
        .unwrap_err();
    assert_eq!(
        unknown.code(),
        tonic::Code::FailedPrecondition,
        "{unknown:?}"
    );

    // A partial delete through B (the listed path), seen by A at B's token.
    let deleted = perms_b
        .delete_relationships(pb::DeleteRelationshipsRequest {
            relationship_filter: Some(pb::RelationshipFilter {
                resource_type: "doc".into(),
                ..Default::default()
            }),
            optional_limit: 1,
            optional_allow_partial_deletions: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.relationships_deleted_count, 1);
    let left: Vec<_> = perms_a
        .read_relationships(pb::ReadRelationshipsRequest {
            consistency: Some(pb::Consistency {
                requirement: Some(Requirement::AtLeastAsFresh(deleted.deleted_at.unwrap())),
            }),
            relationship_filter: Some(pb::RelationshipFilter {
                resource_type: "doc".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(left.len(), 1);

    drop((a, b));
    let _ = sqlx::query(&drop_db).execute(&mut conn).await;
}

/// Reflection lists SpiceDB's services and describes them (what `grpcurl` needs), and
/// health reports them serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spicedb_services_in_reflection_and_health() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let channel = server.channel().await;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "authzed.api.v1.PermissionsService".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "authzed.api.v1.PermissionsService",
        "authzed.api.v1.SchemaService",
        "authzed.api.v1.WatchService",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("no file descriptor for authzed.api.v1.PermissionsService");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "authzed.api.v1.PermissionsService",
        "authzed.api.v1.SchemaService",
        "authzed.api.v1.WatchService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
}
