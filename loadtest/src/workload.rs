//! The gRPC side of `run` and `max`: reading a dataset directory, connecting channels
//! (with the preshared key as `authorization: Bearer KEY`, as the `arbiter` client
//! does), loading a dataset (`--load`: WriteSchema, then relationships.txt streamed
//! through ImportRelationships) and turning request number `i` into one Check,
//! CheckBulk, LookupResources or WriteRelationships call.

use std::future::Future;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arbiter_proto::arbiter::v1 as pb;
use arbiter_schema::parse_relationship;
use pb::permission_service_client::PermissionServiceClient;
use pb::relationship_service_client::RelationshipServiceClient;
use pb::schema_service_client::SchemaServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic_health::pb::health_client::HealthClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::args::{Mix, RequestKind};
use crate::schedule::{Answers, RequestResult};

/// Relationships per ImportRelationships message (the server accepts up to 10,000).
const IMPORT_BATCH: usize = 5_000;
/// Messages up to this size are accepted from the server.
const MAX_MESSAGE: usize = 64 << 20;

/// A dataset directory as `run` reads it.
#[derive(Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    /// The queries, as Check requests without consistency.
    pub queries: Vec<pb::CheckRequest>,
    /// The answer of each query, when `expected.txt` exists.
    pub expected: Option<Vec<bool>>,
}

fn required_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "dataset {} has no {name} (make one with `arbiter-loadtest gen --relationships N --out {}`)",
            dir.display(),
            dir.display()
        );
    }
    Ok(p)
}

fn object(t: &str, id: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        r#type: t.to_string(),
        id: id.to_string(),
    }
}

/// Reads `queries.txt` (and `expected.txt` if present). Blank lines and `#`/`//`
/// comments are skipped; errors name the file and line.
pub fn read_dataset(dir: &Path) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("dataset directory {} does not exist", dir.display());
    }
    let path = required_file(dir, "queries.txt")?;
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut queries = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("read {}", path.display()))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("//") {
            continue;
        }
        let r = parse_relationship(t).map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        if r.caveat.is_some() || r.expiration.is_some() {
            bail!(
                "{}:{}: a query takes no caveat or expiration",
                path.display(),
                i + 1
            );
        }
        queries.push(pb::CheckRequest {
            consistency: None,
            resource: Some(object(&r.resource.object_type, &r.resource.object_id)),
            permission: r.relation,
            subject: Some(pb::SubjectRef {
                object: Some(object(
                    &r.subject.object.object_type,
                    &r.subject.object.object_id,
                )),
                relation: r.subject.relation.unwrap_or_default(),
            }),
            context: None,
            explain: false,
        });
    }
    if queries.is_empty() {
        bail!("{} has no queries", path.display());
    }
    let expected_path = dir.join("expected.txt");
    let expected = if expected_path.is_file() {
        let text = std::fs::read_to_string(&expected_path)
            .with_context(|| format!("read {}", expected_path.display()))?;
        let mut answers = Vec::with_capacity(queries.len());
        for (i, line) in text.lines().enumerate() {
            match line.trim() {
                "true" => answers.push(true),
                "false" => answers.push(false),
                "" => {}
                other => bail!(
                    "{}:{}: expected `true` or `false`, got `{other}`",
                    expected_path.display(),
                    i + 1
                ),
            }
        }
        if answers.len() != queries.len() {
            bail!(
                "{} has {} answers for {} queries",
                expected_path.display(),
                answers.len(),
                queries.len()
            );
        }
        Some(answers)
    } else {
        None
    };
    Ok(Dataset {
        dir: dir.to_path_buf(),
        queries,
        expected,
    })
}

/// Adds the preshared key to every call.
#[derive(Debug, Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Auth>;

/// The service clients over one channel (one HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct Clients {
    pub permissions: PermissionServiceClient<Svc>,
    pub relationships: RelationshipServiceClient<Svc>,
    pub schema: SchemaServiceClient<Svc>,
    pub health: HealthClient<Svc>,
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Opens `connections` channels to `endpoint`, each its own connection.
pub async fn connect(
    endpoint: &str,
    preshared_key: Option<&str>,
    connections: usize,
) -> Result<Vec<Clients>> {
    let ep = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| anyhow!("invalid endpoint `{endpoint}`: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let auth = match preshared_key {
        Some(k) => Some(
            format!("Bearer {k}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| anyhow!("the preshared key must be printable ASCII"))?,
        ),
        None => None,
    };
    let auth = Auth(auth);
    let mut out = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let channel = ep
            .connect()
            .await
            .map_err(|e| anyhow!("cannot connect to {endpoint}: {}", source_chain(&e)))?;
        out.push(Clients {
            permissions: PermissionServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            relationships: RelationshipServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(MAX_MESSAGE),
            schema: SchemaServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            health: HealthClient::with_interceptor(channel, auth.clone()),
        });
    }
    Ok(out)
}

/// `minimize_latency`, `fully_consistent`, `at_least_as_fresh:TOKEN` or
/// `at_exact_snapshot:TOKEN`.
pub fn parse_consistency(s: &str) -> Result<pb::Consistency> {
    use pb::consistency::Requirement;
    let requirement = match s.split_once(':') {
        None if s == "minimize_latency" => Requirement::MinimizeLatency(true),
        None if s == "fully_consistent" => Requirement::FullyConsistent(true),
        Some(("at_least_as_fresh", t)) if !t.is_empty() => Requirement::AtLeastAsFresh(t.to_string()),
        Some(("at_exact_snapshot", t)) if !t.is_empty() => Requirement::AtExactSnapshot(t.to_string()),
        _ => bail!(
            "invalid consistency `{s}`: use minimize_latency, fully_consistent, at_least_as_fresh:TOKEN or at_exact_snapshot:TOKEN"
        ),
    };
    Ok(pb::Consistency {
        requirement: Some(requirement),
    })
}

/// The upper-snake name of a gRPC status code, as in `errors_by_status`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_error(s: &tonic::Status) -> anyhow::Error {
    anyhow!("{}: {}", code_name(s.code()), s.message())
}

/// What `--load` did.
#[derive(Debug, Clone, Copy)]
pub struct LoadSummary {
    pub imported: u64,
    pub seconds: f64,
}

/// Writes `schema.zed`, then streams `relationships.txt` through ImportRelationships,
/// with a progress line a second on stderr.
pub async fn load_dataset(clients: &Clients, dir: &Path) -> Result<LoadSummary> {
    let schema_path = required_file(dir, "schema.zed")?;
    let rel_path = required_file(dir, "relationships.txt")?;
    let schema = std::fs::read_to_string(&schema_path)
        .with_context(|| format!("read {}", schema_path.display()))?;
    let mut c = clients.clone();
    c.schema
        .write_schema(pb::WriteSchemaRequest { schema })
        .await
        .map_err(|s| {
            status_error(&s).context(format!("write the schema {}", schema_path.display()))
        })?;

    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportRelationshipsRequest>(4);
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer_sent = sent.clone();
    let producer_path = rel_path.clone();
    // Reading and parsing is blocking work: a thread of its own.
    let producer = tokio::task::spawn_blocking(move || -> Result<()> {
        let path = producer_path;
        let file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        for (i, line) in std::io::BufReader::with_capacity(1 << 20, file)
            .lines()
            .enumerate()
        {
            let line = line.with_context(|| format!("read {}", path.display()))?;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with("//") {
                continue;
            }
            let r =
                parse_relationship(t).map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))?;
            if r.caveat.is_some() || r.expiration.is_some() {
                bail!(
                    "{}:{}: caveats and expirations are not loaded by --load; use `arbiter import`",
                    path.display(),
                    i + 1
                );
            }
            batch.push(pb::Relationship {
                resource: Some(object(&r.resource.object_type, &r.resource.object_id)),
                relation: r.relation,
                subject: Some(pb::SubjectRef {
                    object: Some(object(
                        &r.subject.object.object_type,
                        &r.subject.object.object_id,
                    )),
                    relation: r.subject.relation.unwrap_or_default(),
                }),
                expires_at: None,
                ..Default::default()
            });
            if batch.len() == IMPORT_BATCH {
                let n = batch.len() as u64;
                let msg = pb::ImportRelationshipsRequest {
                    relationships: std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH)),
                };
                if tx.blocking_send(msg).is_err() {
                    // The call ended early; its error is reported.
                    return Ok(());
                }
                producer_sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            if tx
                .blocking_send(pb::ImportRelationshipsRequest {
                    relationships: batch,
                })
                .is_ok()
            {
                producer_sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    });
    let progress_sent = sent.clone();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = progress_sent.load(std::sync::atomic::Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "loading: {n} relationships sent in {secs:.0}s ({:.0}/s)",
                n as f64 / secs.max(1e-9)
            );
        }
    });
    let mut c = clients.clone();
    let response = c
        .relationships
        .import_relationships(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    progress.abort();
    let produced = producer
        .await
        .map_err(|e| anyhow!("the reader of {} stopped: {e}", rel_path.display()))?;
    produced?;
    let response = response
        .map_err(|s| status_error(&s).context(format!("import {}", rel_path.display())))?
        .into_inner();
    Ok(LoadSummary {
        imported: response.imported,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Everything needed to turn a request number into a call.
#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: Arc<[Clients]>,
    pub queries: Arc<[pb::CheckRequest]>,
    pub expected: Option<Arc<[bool]>>,
    pub mix: Mix,
    pub consistency: pb::Consistency,
    pub bulk_size: usize,
    pub lookup_limit: u32,
    pub timeout: Duration,
    /// Document ids (from the queries) that writes add a viewer to.
    pub write_documents: Arc<[String]>,
}

impl Workload {
    pub fn new(
        dataset: Dataset,
        clients: Vec<Clients>,
        mix: Mix,
        consistency: pb::Consistency,
    ) -> Self {
        let mut write_documents: Vec<String> = dataset
            .queries
            .iter()
            .filter_map(|q| q.resource.as_ref())
            .filter(|r| r.r#type == "document")
            .map(|r| r.id.clone())
            .collect();
        write_documents.sort_unstable();
        write_documents.dedup();
        if write_documents.is_empty() {
            write_documents.push("loadtest".to_string());
        }
        let queries: Vec<pb::CheckRequest> = dataset
            .queries
            .into_iter()
            .map(|mut q| {
                q.consistency = Some(consistency.clone());
                q
            })
            .collect();
        Self {
            clients: clients.into(),
            queries: queries.into(),
            expected: dataset.expected.map(Into::into),
            mix,
            consistency,
            bulk_size: 100,
            lookup_limit: 100,
            timeout: Duration::from_secs(10),
            write_documents: write_documents.into(),
        }
    }

    fn with_timeout<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(self.timeout);
        r
    }

    fn expected(&self, q: usize) -> Option<bool> {
        self.expected.as_ref().and_then(|e| e.get(q).copied())
    }

    /// Sends one Check of query 0 and fails with a clear message if the server does not
    /// answer it: a run where every request fails measures nothing.
    pub async fn preflight(&self) -> Result<()> {
        let (_, request) = self.request_of_kind(RequestKind::Check, 0);
        match request.await {
            Ok(_) => Ok(()),
            Err(code) => {
                let hint = match code {
                    "FAILED_PRECONDITION" | "INVALID_ARGUMENT" => {
                        " (is the dataset loaded? pass --load, or run `arbiter schema write` and `arbiter import` first)"
                    }
                    "UNAUTHENTICATED" => " (check --preshared-key)",
                    _ => "",
                };
                bail!("the server refused the first check with {code}{hint}")
            }
        }
    }

    /// Request number `i`: its kind (from the mix) and the call.
    pub fn request(
        &self,
        i: u64,
    ) -> (
        RequestKind,
        impl Future<Output = RequestResult> + Send + 'static,
    ) {
        self.request_of_kind(self.mix.kind_of(i), i)
    }

    fn request_of_kind(
        &self,
        kind: RequestKind,
        i: u64,
    ) -> (
        RequestKind,
        impl Future<Output = RequestResult> + Send + 'static,
    ) {
        let n = self.queries.len().max(1);
        let q = (i % n as u64) as usize;
        let clients = self
            .clients
            .get(i as usize % self.clients.len().max(1))
            .cloned();
        let this = self.clone();
        let fut = async move {
            let Some(mut c) = clients else {
                return Err("UNAVAILABLE");
            };
            match kind {
                RequestKind::Check => {
                    let Some(query) = this.queries.get(q).cloned() else {
                        return Err("INVALID_ARGUMENT");
                    };
                    let resp = c
                        .permissions
                        .check(this.with_timeout(query))
                        .await
                        .map_err(|s| code_name(s.code()))?
                        .into_inner();
                    Ok(this.compare(q, resp.decision))
                }
                RequestKind::Bulk => {
                    // Consecutive bulks take consecutive slices of the queries.
                    let size = this.bulk_size.max(1);
                    let q = ((u128::from(i) * size as u128) % n as u128) as usize;
                    let items: Vec<pb::CheckBulkItem> = (0..size)
                        .filter_map(|k| this.queries.get((q + k) % n))
                        .map(|query| pb::CheckBulkItem {
                            resource: query.resource.clone(),
                            permission: query.permission.clone(),
                            subject: query.subject.clone(),
                            context: None,
                        })
                        .collect();
                    let resp = c
                        .permissions
                        .check_bulk(this.with_timeout(pb::CheckBulkRequest {
                            consistency: Some(this.consistency.clone()),
                            items,
                        }))
                        .await
                        .map_err(|s| code_name(s.code()))?
                        .into_inner();
                    let mut answers = Answers::default();
                    for (k, result) in resp.results.iter().enumerate() {
                        let decision = match &result.result {
                            Some(pb::check_bulk_result::Result::Decision(d)) => *d,
                            _ => pb::Decision::Unspecified as i32,
                        };
                        let a = this.compare((q + k) % n, decision);
                        answers.checked += a.checked;
                        answers.wrong += a.wrong;
                    }
                    Ok(answers)
                }
                RequestKind::Lookup => {
                    let Some(query) = this.queries.get(q) else {
                        return Err("INVALID_ARGUMENT");
                    };
                    let request = pb::LookupResourcesRequest {
                        context: None,
                        consistency: Some(this.consistency.clone()),
                        resource_type: query
                            .resource
                            .as_ref()
                            .map(|r| r.r#type.clone())
                            .unwrap_or_default(),
                        permission: query.permission.clone(),
                        subject: query.subject.clone(),
                        cursor: String::new(),
                        limit: this.lookup_limit,
                    };
                    let mut stream = c
                        .permissions
                        .lookup_resources(this.with_timeout(request))
                        .await
                        .map_err(|s| code_name(s.code()))?
                        .into_inner();
                    while stream
                        .message()
                        .await
                        .map_err(|s| code_name(s.code()))?
                        .is_some()
                    {}
                    Ok(Answers::default())
                }
                RequestKind::Write => {
                    let docs = &this.write_documents;
                    let doc = docs
                        .get(i as usize % docs.len().max(1))
                        .cloned()
                        .unwrap_or_else(|| "loadtest".to_string());
                    let relationship = pb::Relationship {
                        resource: Some(object("document", &doc)),
                        relation: "viewer".to_string(),
                        subject: Some(pb::SubjectRef {
                            object: Some(object("user", &format!("loadtest_w{i}"))),
                            relation: String::new(),
                        }),
                        expires_at: None,
                        ..Default::default()
                    };
                    c.relationships
                        .write_relationships(this.with_timeout(pb::WriteRelationshipsRequest {
                            updates: vec![pb::RelationshipUpdate {
                                operation: pb::relationship_update::Operation::Touch as i32,
                                relationship: Some(relationship),
                            }],
                            preconditions: Vec::new(),
                        }))
                        .await
                        .map_err(|s| code_name(s.code()))?;
                    Ok(Answers::default())
                }
                RequestKind::Empty => {
                    c.health
                        .check(this.with_timeout(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        }))
                        .await
                        .map_err(|s| code_name(s.code()))?;
                    Ok(Answers::default())
                }
            }
        };
        (kind, fut)
    }

    /// Compares a decision with `expected.txt`, when there is one.
    fn compare(&self, q: usize, decision: i32) -> Answers {
        match self.expected(q) {
            None => Answers::default(),
            Some(want) => {
                let got = match pb::Decision::try_from(decision) {
                    Ok(pb::Decision::Allowed) => Some(true),
                    Ok(pb::Decision::Denied) => Some(false),
                    _ => None,
                };
                Answers {
                    checked: 1,
                    wrong: u32::from(got != Some(want)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dataset_and_names_problems() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_dataset(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = read_dataset(dir.path()).unwrap_err();
        assert!(e.to_string().contains("has no queries.txt"), "{e}");
        std::fs::write(
            dir.path().join("queries.txt"),
            "# comment\ndocument:d1#view@user:u1\n\nteam:t1#membership@team:t2#member\n",
        )
        .unwrap();
        let d = read_dataset(dir.path()).unwrap();
        assert_eq!(d.queries.len(), 2);
        assert_eq!(d.queries[1].subject.as_ref().unwrap().relation, "member");
        assert!(d.expected.is_none());
        std::fs::write(dir.path().join("expected.txt"), "true\n").unwrap();
        let e = read_dataset(dir.path()).unwrap_err();
        assert!(e.to_string().contains("1 answers for 2 queries"), "{e}");
        std::fs::write(dir.path().join("expected.txt"), "true\nfalse\n").unwrap();
        assert_eq!(
            read_dataset(dir.path()).unwrap().expected,
            Some(vec![true, false])
        );
        std::fs::write(dir.path().join("queries.txt"), "document:d1#view\n").unwrap();
        let e = read_dataset(dir.path()).unwrap_err();
        assert!(e.to_string().contains("queries.txt:1:"), "{e}");
    }

    #[test]
    fn consistency_modes() {
        assert!(parse_consistency("minimize_latency").is_ok());
        assert!(parse_consistency("fully_consistent").is_ok());
        assert!(parse_consistency("at_least_as_fresh:abc").is_ok());
        let e = parse_consistency("eventually").unwrap_err();
        assert!(e.to_string().contains("invalid consistency `eventually`"));
    }
}
