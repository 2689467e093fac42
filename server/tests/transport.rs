//! Transport features against the real binary: TLS on both ports (a certificate made
//! with the `openssl` CLI, trusted by the clients as their CA), and server reflection
//! listing every service, as `grpcurl list` would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::path::Path;
use std::process::Command;

use arbiter_proto::arbiter::v1 as pb;
use common::*;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed to make test certificates");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA and a server certificate it issued for `localhost` and 127.0.0.1:
/// (CA certificate path, server certificate path, server key path).
fn certificates(dir: &Path) -> (String, String, String) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-days", "2", "-subj", "/CN=arbiter-test-ca", "-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca, dir);
    let mut csr = vec!["req"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
            .into_iter()
            .chain(["-extfile", "ext.cnf", "-out", "cert.pem"])
            .collect::<Vec<_>>(),
        dir,
    );
    let path = |f: &str| dir.join(f).display().to_string();
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

#[tokio::test]
async fn tls_on_both_ports() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let server = Server::start(&dir.path().join("data"), &["--tls-cert", &cert, "--tls-key", &key]);
    let port = server.grpc.rsplit_once(':').unwrap().1.to_string();
    let https = format!("https://localhost:{port}");

    // The generated client over TLS, trusting the test CA.
    let pem = std::fs::read(&ca).unwrap();
    let channel = Channel::from_shared(https.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut schema = pb::schema_service_client::SchemaServiceClient::new(channel.clone());
    schema.write_schema(pb::WriteSchemaRequest { schema: DOC_SCHEMA.into() }).await.unwrap();
    let mut rels = pb::relationship_service_client::RelationshipServiceClient::new(channel.clone());
    rels.write_relationships(pb::WriteRelationshipsRequest {
        updates: vec![touch("doc:a#viewer@user:bob")],
        preconditions: vec![],
    })
    .await
    .unwrap();

    // The CLI over TLS.
    let out = Command::new(BIN)
        .args(["check", "doc:a#view@user:bob", "--endpoint", &https, "--tls-ca", &ca])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "allowed");

    // Without the CA the CLI refuses the unknown issuer and says it could not connect.
    let out = Command::new(BIN)
        .args(["check", "doc:a#view@user:bob", "--endpoint", &https])
        .env_remove("ARBITER_TLS_CA")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));

    // Plaintext gRPC to the TLS port fails rather than being served in the clear.
    let plain = Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await;
    if let Ok(ch) = plain {
        let mut s = pb::schema_service_client::SchemaServiceClient::new(ch);
        assert!(s.read_schema(pb::ReadSchemaRequest {}).await.is_err());
    }

    // The HTTP port speaks TLS too (curl trusting the same CA).
    let http_port = server.http.rsplit_once(':').unwrap().1;
    let out = Command::new("curl")
        .args(["-sS", "--cacert", &ca, &format!("https://localhost:{http_port}/readyz")])
        .output()
        .expect("curl is needed for the HTTPS probe");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("ready"), "readyz body: {body}");
    let out = Command::new("curl")
        .args(["-sS", "--cacert", &ca, &format!("https://localhost:{http_port}/metrics")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("arbiter_"), "metrics over HTTPS");
    // Plain HTTP on the TLS port gets no page.
    let out = Command::new("curl").args(["-sS", "-m", "5", &format!("http://{}/readyz", server.http)]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
}

#[tokio::test]
async fn tls_flags_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, _key) = certificates(dir.path());
    let err = Server::try_start(&dir.path().join("data"), &["--tls-cert", &cert]).err().unwrap();
    assert!(err.contains("--tls-key"), "{err}");
    let missing = dir.path().join("nope.pem").display().to_string();
    let err = Server::try_start(&dir.path().join("data"), &["--tls-cert", &missing, "--tls-key", &missing])
        .err()
        .unwrap();
    assert!(err.contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn reflection_lists_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "arbiter.v1.PermissionService",
        "arbiter.v1.RelationshipService",
        "arbiter.v1.SchemaService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }

    // And a service's file descriptor can be fetched, which `grpcurl describe` needs.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("arbiter.v1.PermissionService".into())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// A client that connects and never finishes its TLS handshake is cut off after
/// `--tls-handshake-timeout`, on both ports (it used to hold its connection and task
/// for as long as it liked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_cut_off_on_both_ports() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = certificates(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--tls-cert", &cert, "--tls-key", &key, "--tls-handshake-timeout", "300ms"],
    );
    for addr in [&server.http, &server.grpc] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // Far longer than the handshake timeout: only the server's close ends the read.
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 16];
        let read = s.read(&mut buf);
        let closed = matches!(read, Ok(0)) || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(closed, "{addr}: the server kept a silent connection open ({read:?})");
    }
}

/// A client that opens an Export and stops reading is let go after
/// `--stream-send-timeout`: the server's thread and its snapshot are freed, and the
/// client, when it reads again, finds the stream ended with RESOURCE_EXHAUSTED after
/// what was sent, never a clean end that would pass for a complete export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_an_export_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--stream-send-timeout", "300ms"]);
    let mut c = server.clients().await;
    c.schema
        .write_schema(pb::WriteSchemaRequest { schema: "definition user {}\ndefinition doc {\n    relation viewer: user\n}\n".into() })
        .await
        .unwrap();
    // Far more than the HTTP/2 windows and the stream's channel hold.
    let batches: Vec<pb::ImportRelationshipsRequest> = (0..10)
        .map(|b| pb::ImportRelationshipsRequest {
            relationships: (0..10_000).map(|i| rel(&format!("doc:d{b}_{i}#viewer@user:u{i}"))).collect(),
        })
        .collect();
    c.relationships.import_relationships(tokio_stream::iter(batches)).await.unwrap();
    let stalled = export(&mut c).await;
    // Read nothing for several send timeouts.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (got, end) = read_to_end(stalled).await;
    let status = end.unwrap_or_else(|| panic!("the stalled export ended as if complete, after {got} relationships"));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(got < 100_000, "{got}");
    // A client that reads gets everything.
    let (all, end) = read_to_end(export(&mut c).await).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(all, 100_000);
}

async fn export(c: &mut Clients) -> tonic::Streaming<pb::ExportRelationshipsResponse> {
    c.relationships.export_relationships(pb::ExportRelationshipsRequest { consistency: None }).await.unwrap().into_inner()
}

/// Reads an export to its end: how many relationships came, and the error it ended
/// with, if any.
async fn read_to_end(mut stream: tonic::Streaming<pb::ExportRelationshipsResponse>) -> (usize, Option<tonic::Status>) {
    let mut got = 0;
    loop {
        match stream.message().await {
            Ok(Some(m)) => got += m.relationships.len(),
            Ok(None) => return (got, None),
            Err(s) => return (got, Some(s)),
        }
    }
}

/// Import streams beyond `--max-concurrent-imports` are refused by name while the others
/// run, and accepted once one has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_streams_beyond_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-concurrent-imports", "1"]);
    let mut c = server.clients().await;
    c.schema
        .write_schema(pb::WriteSchemaRequest { schema: "definition user {}\ndefinition doc {\n    relation viewer: user\n}\n".into() })
        .await
        .unwrap();
    let message = |id: &str| pb::ImportRelationshipsRequest { relationships: vec![rel(&format!("doc:{id}#viewer@user:ann"))] };
    // Stream A: one message, then held open.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(message("a")).await.unwrap();
    let mut ca = server.clients().await;
    let a = tokio::spawn(async move { ca.relationships.import_relationships(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    // A is running once its first message has landed.
    let mut landed = false;
    for _ in 0..200 {
        let r = c.permissions.check(check_req("doc:a#viewer@user:ann", None)).await;
        if r.is_ok_and(|r| r.into_inner().decision == pb::Decision::Allowed as i32) {
            landed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(landed, "stream A's first message never landed");
    let err = c.relationships.import_relationships(tokio_stream::iter(vec![message("b")])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--max-concurrent-imports"), "{}", err.message());
    drop(tx);
    a.await.unwrap().unwrap();
    c.relationships.import_relationships(tokio_stream::iter(vec![message("b")])).await.unwrap();
}

/// A server whose `doc`s (`n` of them, ids `d000000` on, padded with `pad` bytes) user
/// `ann` may all view.
async fn docs_for_ann(server: &Server, n: usize, pad: usize) -> Clients {
    let pad = "x".repeat(pad);
    let mut c = server.clients().await;
    c.schema
        .write_schema(pb::WriteSchemaRequest { schema: "definition user {}\ndefinition doc {\n    relation viewer: user\n}\n".into() })
        .await
        .unwrap();
    let ids: Vec<usize> = (0..n).collect();
    let batches: Vec<pb::ImportRelationshipsRequest> = ids
        .chunks(10_000)
        .map(|ids| pb::ImportRelationshipsRequest {
            relationships: ids.iter().map(|i| rel(&format!("doc:d{i:06}{pad}#viewer@user:ann"))).collect(),
        })
        .collect();
    c.relationships.import_relationships(tokio_stream::iter(batches)).await.unwrap();
    c
}

fn ann_views(limit: u32, cursor: &str) -> pb::LookupResourcesRequest {
    pb::LookupResourcesRequest {
        context: None,
        resource_type: "doc".into(),
        permission: "viewer".into(),
        subject: Some(subj("user:ann")),
        limit,
        cursor: cursor.into(),
        ..Default::default()
    }
}

/// Reads a lookup to its end: the ids, and the error it ended with, if any.
async fn lookup_to_end(mut stream: tonic::Streaming<pb::LookupResourcesResponse>) -> (Vec<String>, Option<tonic::Status>) {
    let mut ids = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => ids.push(m.resource_id),
            Ok(None) => return (ids, None),
            Err(s) => return (ids, Some(s)),
        }
    }
}

/// A limit above `--max-page-size` is refused by name (a silently shorter page would
/// pass for the last one); a limit of 0 streams every result, and pages follow cursors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_pages_are_capped_and_a_limit_of_zero_streams_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-page-size", "100"]);
    let mut c = docs_for_ann(&server, 1000, 0).await;
    let err = c.permissions.lookup_resources(ann_views(101, "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("--max-page-size"), "{}", err.message());
    let (all, end) = lookup_to_end(c.permissions.lookup_resources(ann_views(0, "")).await.unwrap().into_inner()).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(all, (0..1000).map(|i| format!("d{i:06}")).collect::<Vec<_>>());
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (page, end) = lookup_to_end(c.permissions.lookup_resources(ann_views(100, &cursor)).await.unwrap().into_inner()).await;
        assert!(end.is_none(), "{end:?}");
        let Some(last) = page.last() else { break };
        cursor = last.clone();
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

/// Lookups stream as they are made, and take turns (`--max-heavy-calls`): a client that
/// stops reading a big lookup holds its turn only until `--stream-send-timeout` ends
/// its stream (RESOURCE_EXHAUSTED after what was sent, never a clean end); a call that
/// waits for a turn past `--request-timeout` ends with DEADLINE_EXCEEDED naming it;
/// after the stalled stream is let go, lookups run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lookup_holds_its_turn_only_until_the_send_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Far more than the HTTP/2 windows (a client's are 2 MB a stream, 5 MB a connection)
    // and the stream's channel hold: some 14 MB of answers. Loaded first, then served
    // again with the limits under test (a 1 s request timeout would cut the import).
    let loader = Server::start(dir.path(), &[]);
    docs_for_ann(&loader, 60_000, 100).await;
    loader.terminate();
    let server = Server::start(
        dir.path(),
        &["--max-heavy-calls", "1", "--stream-send-timeout", "4s", "--request-timeout", "1s"],
    );
    let mut c = server.clients().await;
    let stalled = c.permissions.lookup_resources(ann_views(0, "")).await.unwrap().into_inner();
    // The server's deadline, not the client's (tonic's client would end the call itself).
    let waiting = c.permissions.lookup_resources(ann_views(10, "")).await.unwrap_err();
    assert_eq!(waiting.code(), tonic::Code::DeadlineExceeded, "{waiting:?}");
    assert!(waiting.message().contains("--request-timeout"), "{}", waiting.message());
    // The stalled stream is ended after the send timeout; its turn is free again.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let (page, end) = lookup_to_end(c.permissions.lookup_resources(ann_views(10, "")).await.unwrap().into_inner()).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(page.len(), 10);
    let (got, end) = lookup_to_end(stalled).await;
    let status = end.unwrap_or_else(|| panic!("the stalled lookup ended as if complete, after {} ids", got.len()));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(got.len() < 60_000, "{}", got.len());
}
