//! Shared harness for the server's integration tests: start the real `arbiter` binary
//! on free ports over a temporary data dir, wait for its ready line, and hand out tonic
//! clients (with the preshared key when the server has one).
#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use arbiter_proto::arbiter::v1 as pb;
use pb::permission_service_client::PermissionServiceClient;
use pb::relationship_service_client::RelationshipServiceClient;
use pb::schema_service_client::SchemaServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use sqlx::Connection;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_arbiter");

/// A running server. Killed (SIGKILL) when dropped, if still running.
pub struct Server {
    pub child: Child,
    pub grpc: String,
    pub http: String,
    /// The revision token of the ready line.
    pub revision: String,
    pub data_dir: PathBuf,
    pub key: Option<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `arbiter serve` on `data_dir` with free ports and `extra` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::try_start(data_dir, extra).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Like [`Server::start`], but returns the exit status and stderr if it fails.
    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg("--data-dir").arg(data_dir);
        // Free ports unless the test names its own.
        for flag in ["--grpc-addr", "--http-addr"] {
            if !extra.contains(&flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        cmd.args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let stderr_buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let buf = stderr_buf.clone();
            std::thread::spawn(move || {
                let mut s = String::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    if let Ok(mut b) = buf.lock() {
                        *b = s.clone();
                    }
                }
            });
        }
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => l,
            Err(_) => {
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                let err = stderr_buf.lock().map(|s| s.clone()).unwrap_or_default();
                return Err(format!("no ready line (exit {status:?}); stderr: {err}"));
            }
        };
        let mut grpc = None;
        let mut http = None;
        let mut revision = None;
        let rest = line
            .strip_prefix("arbiter ready ")
            .ok_or_else(|| format!("unexpected first line `{line}`"))?;
        for part in rest.split(' ') {
            match part.split_once('=') {
                Some(("grpc", v)) => grpc = Some(v.to_string()),
                Some(("http", v)) => http = Some(v.to_string()),
                Some(("revision", v)) => revision = Some(v.to_string()),
                _ => return Err(format!("unexpected part `{part}` in `{line}`")),
            }
        }
        let key = extra
            .iter()
            .position(|a| *a == "--preshared-key")
            .and_then(|i| extra.get(i + 1))
            .map(|s| s.to_string());
        Ok(Server {
            child,
            grpc: grpc.ok_or("no grpc=")?,
            http: http.ok_or("no http=")?,
            revision: revision.ok_or("no revision=")?,
            data_dir: data_dir.to_path_buf(),
            key,
            stderr: stderr_buf,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn clients(&self) -> Clients {
        self.clients_with_key(self.key.as_deref()).await
    }

    pub async fn clients_with_key(&self, key: Option<&str>) -> Clients {
        let channel = self.channel().await;
        let auth = Auth(key.map(|k| format!("Bearer {k}").parse().unwrap()));
        Clients {
            permissions: PermissionServiceClient::with_interceptor(channel.clone(), auth.clone()),
            relationships: RelationshipServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            schema: SchemaServiceClient::with_interceptor(channel, auth),
        }
    }

    /// SIGKILL, as `kill -9` would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (waits up to 30 s).
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain HTTP/1.1 GET on the HTTP port: (status code, body).
    pub fn http_get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(&self.http).unwrap();
        let auth = key
            .map(|k| format!("authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: {}\r\n{auth}connection: close\r\n\r\n",
            self.http
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Runs the `arbiter` CLI against this server: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
    }

    /// Runs the `arbiter` CLI against this server from `dir` (relative paths in `args`
    /// are read from there).
    #[allow(dead_code, reason = "not every test binary runs the CLI from elsewhere")]
    pub fn cli_in(&self, dir: &Path, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir).args(args).env("ARBITER_ENDPOINT", self.endpoint());
        if let Some(k) = &self.key {
            cmd.env("ARBITER_PRESHARED_KEY", k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Svc = InterceptedService<Channel, Auth>;

#[derive(Clone)]
pub struct Clients {
    pub permissions: PermissionServiceClient<Svc>,
    pub relationships: RelationshipServiceClient<Svc>,
    pub schema: SchemaServiceClient<Svc>,
}

/// `type:id` as an ObjectRef.
pub fn obj(s: &str) -> pb::ObjectRef {
    let (t, id) = s.split_once(':').unwrap();
    pb::ObjectRef {
        r#type: t.into(),
        id: id.into(),
    }
}

/// `type:id[#relation]` as a SubjectRef.
pub fn subj(s: &str) -> pb::SubjectRef {
    let (o, rel) = s.split_once('#').unwrap_or((s, ""));
    pb::SubjectRef {
        object: Some(obj(o)),
        relation: rel.into(),
    }
}

/// `type:id#relation@type:id[#relation]` as a Relationship.
pub fn rel(s: &str) -> pb::Relationship {
    let (left, right) = s.split_once('@').unwrap();
    let (o, relation) = left.split_once('#').unwrap();
    pb::Relationship {
        resource: Some(obj(o)),
        relation: relation.into(),
        subject: Some(subj(right)),
        expires_at: None,
        ..Default::default()
    }
}

pub fn touch(s: &str) -> pb::RelationshipUpdate {
    pb::RelationshipUpdate {
        operation: pb::relationship_update::Operation::Touch as i32,
        relationship: Some(rel(s)),
    }
}

/// A touch of `s` with caveat `name` and its context (a JSON object).
pub fn caveated(s: &str, name: &str, context: serde_json::Value) -> pb::RelationshipUpdate {
    let mut relationship = rel(s);
    relationship.caveat_name = name.into();
    relationship.caveat_context = Some(pb_struct(context));
    pb::RelationshipUpdate { operation: pb::relationship_update::Operation::Touch as i32, relationship: Some(relationship) }
}

/// A JSON object as a protobuf Struct (anything else as an empty one).
pub fn pb_struct(v: serde_json::Value) -> prost_types::Struct {
    match v {
        serde_json::Value::Object(map) => {
            prost_types::Struct { fields: map.into_iter().map(|(k, v)| (k, pb_value(v))).collect() }
        }
        _ => prost_types::Struct::default(),
    }
}

pub fn pb_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.into_iter().map(pb_value).collect() }),
        v @ serde_json::Value::Object(_) => Kind::StructValue(pb_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A protobuf Struct as JSON text with sorted keys (numbers as Struct holds them, f64).
pub fn struct_text(s: &prost_types::Struct) -> String {
    fn json(v: &prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match &v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => (*b).into(),
            Some(Kind::NumberValue(n)) => (*n).into(),
            Some(Kind::StringValue(s)) => s.clone().into(),
            Some(Kind::ListValue(l)) => l.values.iter().map(json).collect(),
            Some(Kind::StructValue(s)) => object(s),
        }
    }
    fn object(s: &prost_types::Struct) -> serde_json::Value {
        let sorted: std::collections::BTreeMap<&String, serde_json::Value> = s.fields.iter().map(|(k, v)| (k, json(v))).collect();
        serde_json::to_value(sorted).unwrap_or_default()
    }
    object(s).to_string()
}

pub fn create(s: &str) -> pb::RelationshipUpdate {
    pb::RelationshipUpdate {
        operation: pb::relationship_update::Operation::Create as i32,
        relationship: Some(rel(s)),
    }
}

pub fn delete(s: &str) -> pb::RelationshipUpdate {
    pb::RelationshipUpdate {
        operation: pb::relationship_update::Operation::Delete as i32,
        relationship: Some(rel(s)),
    }
}

pub fn minimize_latency() -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::MinimizeLatency(true)),
    })
}

pub fn at_exact(token: &str) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtExactSnapshot(token.into())),
    })
}

pub fn at_least(token: &str) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token.into())),
    })
}

/// A Check request: `type:id#permission@type:id[#relation]`.
pub fn check_req(s: &str, consistency: Option<pb::Consistency>) -> pb::CheckRequest {
    let r = rel(s);
    pb::CheckRequest {
        consistency,
        resource: r.resource,
        permission: r.relation,
        subject: r.subject,
        context: None,
        explain: false,
    }
}

/// Expand of `resource#relation` (a relation: its tree is one leaf), the leaf.
pub async fn expand_leaf(c: &mut Clients, resource: &str, relation: &str, consistency: Option<pb::Consistency>) -> pb::userset_tree::Leaf {
    let tree = c
        .permissions
        .expand(pb::ExpandRequest { consistency, resource: Some(obj(resource)), permission: relation.into() })
        .await
        .unwrap()
        .into_inner()
        .tree
        .unwrap();
    match tree.node {
        Some(pb::userset_tree::Node::Leaf(leaf)) => leaf,
        other => panic!("expected a leaf, got {other:?}"),
    }
}

/// Every relationship the server holds, as sorted relationship text.
pub async fn read_all(c: &mut Clients) -> Vec<String> {
    use tokio_stream::StreamExt;
    let mut stream = c
        .relationships
        .read_relationships(pb::ReadRelationshipsRequest {
            consistency: minimize_latency(),
            filter: None,
            cursor: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        let r = item.unwrap().relationship.unwrap();
        let s = r.subject.unwrap();
        let so = s.object.unwrap();
        let ro = r.resource.unwrap();
        let mut text = format!(
            "{}:{}#{}@{}:{}",
            ro.r#type, ro.id, r.relation, so.r#type, so.id
        );
        if !s.relation.is_empty() {
            text.push('#');
            text.push_str(&s.relation);
        }
        if !r.caveat_name.is_empty() {
            match r.caveat_context.as_ref().filter(|c| !c.fields.is_empty()) {
                Some(c) => text.push_str(&format!("[{}:{}]", r.caveat_name, struct_text(c))),
                None => text.push_str(&format!("[{}]", r.caveat_name)),
            }
        }
        out.push(text);
    }
    out.sort();
    out
}

pub const DOC_SCHEMA: &str = r#"
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
    relation viewer: user | user:* | group#member
    relation banned: user
    permission edit = owner
    permission view = (viewer + edit + parent->view) - banned
}
"#;

/// One HTTP/1.1 answer, as the tests' raw client reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 request, so that tests can send what no client library would:
/// `headers` as given (a `content-length` is added for a body unless the headers frame
/// it themselves); the answer, or why none came.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let framed = headers.iter().any(|(n, _)| n == "content-length" || n == "transfer-encoding");
    if let (Some(b), false) = (body, framed) {
        head.push_str(&format!("content-length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    if let Some(b) = body {
        // A server that refuses a body before reading all of it may close first...
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    // ... and then reset the connection after its answer: keep what arrived.
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(format!("no answer ({read:?})"));
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no header end: {text:.200}"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok(Reply { status, headers, body })
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}

/// The server every database is made on: `DATABASE_URL` (set by scripts/with-postgres.sh)
/// or the local one. Postgres tests never skip.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new(tag: &str) -> TestDb {
        let admin = admin_url();
        let name = format!("arbiter_test_{tag}_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("Postgres is needed at {admin} (set DATABASE_URL): {e}"));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
        TestDb { url: format!("{base}/{name}"), name }
    }

    pub async fn pool(&self) -> sqlx::postgres::PgPool {
        sqlx::postgres::PgPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = admin_url();
        let name = self.name.clone();
        // A fresh runtime: drop may run inside or outside one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

