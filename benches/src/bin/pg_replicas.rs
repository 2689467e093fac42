//! `pg-replicas`: Postgres as the source of truth, measured with the real `arbiter`
//! binary (release build) and a real Postgres:
//!
//! 1. import through a replica (gRPC ImportRelationships -> Postgres -> back to the
//!    replica), for up to 200,000 relationships;
//! 2. a bulk seed of the rest straight into the relationships table (one revision; the
//!    changelog horizon moves past it, so every older snapshot must reload);
//! 3. initial load: a replica on an empty data dir, spawn to ready line;
//! 4. restart: the same replica again (resumes from its RocksDB snapshot);
//! 5. lag: single writes through replica A, each followed at once by a Check on replica
//!    B with `at_least_as_fresh(token)`; and B's own `arbiter_replica_apply_lag_seconds`
//!    histogram (commit in Postgres to served on B).
//!
//! `cargo build --release --workspace --bins`, then
//! `$CARGO_TARGET_DIR/release/pg-replicas [RELATIONSHIPS] [WRITES]`
//! (`DATABASE_URL` names the server; default postgres://postgres@127.0.0.1:5432/postgres;
//! `ARBITER_BIN` the binary, default the `arbiter` beside this one).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbiter_proto::arbiter::v1 as pb;
use pb::permission_service_client::PermissionServiceClient;
use pb::relationship_service_client::RelationshipServiceClient;
use pb::schema_service_client::SchemaServiceClient;
use sqlx::Connection;

type Result<T> = std::result::Result<T, String>;

const SCHEMA: &str = "definition user {}\ndefinition team {\n relation member: user | team#member\n}\ndefinition doc {\n relation viewer: user | team#member\n relation owner: user\n permission view = viewer + owner\n}\n";
const DATABASE: &str = "arbiter_bench_replicas";
/// How many relationships go through a replica's import (the rest are seeded by SQL).
const IMPORT_AT_MOST: u64 = 200_000;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A running `arbiter serve --postgres`; killed when dropped.
struct Replica {
    child: Child,
    grpc: String,
    http: String,
    /// Spawn to ready line.
    started_in: Duration,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn start(bin: &Path, url: &str, dir: &Path) -> Result<Replica> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--postgres", url, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(err)?;
        let started_in = started.elapsed();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
                .ok_or_else(|| format!("no {name}= in the ready line {line:?}"))
        };
        Ok(Replica { grpc: format!("http://{}", field("grpc")?), http: field("http")?, child, started_in })
    }

    fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().map_err(err)?;
        self.child.wait().map_err(err)?;
        Ok(())
    }
}

/// The i-th relationship of the dataset `store-scale` uses (documents with ~5 viewers,
/// users and team subject sets), as gRPC.
fn relationship(i: u64) -> pb::Relationship {
    let object = |t: &str, id: String| Some(pb::ObjectRef { r#type: t.into(), id });
    let (subject, relation) = if i.is_multiple_of(7) {
        (object("team", format!("t{}", i % 10_007)), "member")
    } else {
        (object("user", format!("u{}", (i * 7919) % 1_000_003)), "")
    };
    pb::Relationship {
        resource: object("doc", format!("d{}", i / 5)),
        relation: "viewer".into(),
        subject: Some(pb::SubjectRef { object: subject, relation: relation.into() }),
        expires_at: None,
        ..Default::default()
    }
}

/// The same relationships `from..to`, in SQL, inserted at one new revision; the changelog
/// horizon moves to it (those rows have no changelog entries, so older snapshots reload).
const SEED: &str = "
WITH next AS (UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision)
INSERT INTO relationships (resource_type, resource_id, relation, subject_type, subject_id,
                           subject_relation, created_revision)
SELECT 'doc', 'd' || (i / 5), 'viewer',
       CASE WHEN i % 7 = 0 THEN 'team' ELSE 'user' END,
       CASE WHEN i % 7 = 0 THEN 't' || (i % 10007) ELSE 'u' || ((i * 7919) % 1000003) END,
       CASE WHEN i % 7 = 0 THEN 'member' ELSE '' END,
       (SELECT revision FROM next)
FROM generate_series($1::bigint, $2::bigint - 1) AS i
ON CONFLICT DO NOTHING";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// p50 and p99 of a Prometheus histogram from `/metrics` text, as bucket upper bounds.
fn histogram_percentiles(metrics: &str, name: &str) -> Option<(u64, String, String)> {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) else { continue };
        let (le, count) = rest.split_once("\"} ")?;
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        buckets.push((le, count.trim().parse().ok()?));
    }
    let total = buckets.last()?.1;
    let at = |p: f64| {
        let want = (total as f64 * p).ceil() as u64;
        buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .map(|(le, _)| if le.is_finite() { format!("<= {:.0} ms", le * 1e3) } else { "> 10 s".into() })
            .unwrap_or_default()
    };
    Some((total, at(0.5), at(0.99)))
}

async fn http_get(addr: &str, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(err)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.map_err(err)?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.map_err(err)?;
    Ok(body)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let writes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let bin = match std::env::var_os("ARBITER_BIN") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_exe().map_err(err)?.with_file_name("arbiter"),
    };
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).ok_or("DATABASE_URL has no database")?;
    let url = format!("{base}/{DATABASE}");
    {
        let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(|e| format!("{admin}: {e}"))?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut conn).await.map_err(err)?;
        sqlx::query(&format!("CREATE DATABASE {DATABASE}")).execute(&mut conn).await.map_err(err)?;
    }
    let out = Command::new(&bin).args(["migrate", "--postgres", &url]).output().map_err(err)?;
    if !out.status.success() {
        return Err(format!("arbiter migrate failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let tmp = tempfile::tempdir().map_err(err)?;
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));

    // 1. Import through replica A.
    let imported = n.min(IMPORT_AT_MOST);
    let a = Replica::start(&bin, &url, &dir_a)?;
    let channel = |addr: &str| tonic::transport::Endpoint::from_shared(addr.to_string()).map(|e| e.connect_lazy());
    let ch_a = channel(&a.grpc).map_err(err)?;
    SchemaServiceClient::new(ch_a.clone())
        .write_schema(pb::WriteSchemaRequest { schema: SCHEMA.into() })
        .await
        .map_err(err)?;
    let started = Instant::now();
    let batches: Vec<pb::ImportRelationshipsRequest> = (0..imported)
        .step_by(1000)
        .map(|from| pb::ImportRelationshipsRequest {
            relationships: (from..(from + 1000).min(imported)).map(relationship).collect(),
        })
        .collect();
    RelationshipServiceClient::new(ch_a.clone())
        .import_relationships(tokio_stream::iter(batches))
        .await
        .map_err(err)?;
    let import_secs = started.elapsed().as_secs_f64();
    a.stop()?;

    // 2. Seed the rest by SQL, in chunks (one revision each).
    let seed_started = Instant::now();
    let mut pg = sqlx::PgConnection::connect(&url).await.map_err(err)?;
    let mut from = imported;
    while from < n {
        let to = (from + 1_000_000).min(n);
        let mut tx = pg.begin().await.map_err(err)?;
        sqlx::query(SEED).bind(from as i64).bind(to as i64).execute(&mut *tx).await.map_err(err)?;
        sqlx::query("UPDATE arbiter_changelog_horizon SET pruned_through = (SELECT revision FROM arbiter_revision)")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        from = to;
        eprintln!("seeded {to} relationships");
    }
    let seed_secs = seed_started.elapsed().as_secs_f64();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM relationships").fetch_one(&mut pg).await.map_err(err)?;

    // 3 and 4. Initial load of B, restart of B, and A reloading past the horizon.
    let b = Replica::start(&bin, &url, &dir_b)?;
    let load = b.started_in;
    b.stop()?;
    let b = Replica::start(&bin, &url, &dir_b)?;
    let resume = b.started_in;
    let a = Replica::start(&bin, &url, &dir_a)?;
    let reload_a = a.started_in;

    // 5. Lag: write on A, Check on B at that token.
    let ch_a = channel(&a.grpc).map_err(err)?;
    let ch_b = channel(&b.grpc).map_err(err)?;
    let mut writer = RelationshipServiceClient::new(ch_a);
    let mut checker = PermissionServiceClient::new(ch_b);
    let (mut write_latency, mut visible) = (Vec::with_capacity(writes), Vec::with_capacity(writes));
    for k in 0..writes as u64 {
        let rel = relationship(n + k);
        let sent = Instant::now();
        let token = writer
            .write_relationships(pb::WriteRelationshipsRequest {
                updates: vec![pb::RelationshipUpdate {
                    operation: pb::relationship_update::Operation::Touch as i32,
                    relationship: Some(rel.clone()),
                }],
                preconditions: vec![],
            })
            .await
            .map_err(err)?
            .into_inner()
            .revision;
        let acked = sent.elapsed();
        let decision = checker
            .check(pb::CheckRequest {
                consistency: Some(pb::Consistency {
                    requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token)),
                }),
                resource: rel.resource,
                permission: "view".into(),
                subject: rel.subject,
                context: None,
                explain: false,
            })
            .await
            .map_err(err)?
            .into_inner()
            .decision;
        if decision != pb::Decision::Allowed as i32 {
            return Err(format!("write {k}: replica B does not see it at the write's token"));
        }
        write_latency.push(acked);
        visible.push(sent.elapsed());
        // Writes spaced out, as independent requests would be.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    write_latency.sort_unstable();
    visible.sort_unstable();
    let metrics = http_get(&b.http, "/metrics").await?;
    let histogram = histogram_percentiles(&metrics, "arbiter_replica_apply_lag_seconds");
    drop(a);
    drop(b);
    drop(pg);

    println!();
    println!("pg-replicas: {n} relationships ({rows} rows in Postgres), {writes} writes");
    println!(
        "import via replica   {imported} relationships in {import_secs:.2} s = {:.0} rel/s (gRPC ImportRelationships, 1000 a message, each committed to Postgres and applied back)",
        imported as f64 / import_secs
    );
    if n > imported {
        println!("seed by SQL          {} relationships in {seed_secs:.1} s (bench setup, not a product path)", n - imported);
    }
    println!("initial load         {:.2} s, spawn to ready (read the table, write the snapshot, build the graph)", load.as_secs_f64());
    println!("restart (resume)     {:.2} s, spawn to ready (open the snapshot, replay nothing)", resume.as_secs_f64());
    println!("reload past horizon  {:.2} s, spawn to ready (replica A: its snapshot predates the seed)", reload_a.as_secs_f64());
    println!(
        "write on A           p50 {}, p99 {}, max {}",
        ms(percentile(&write_latency, 0.5)),
        ms(percentile(&write_latency, 0.99)),
        ms(percentile(&write_latency, 1.0))
    );
    println!(
        "sent on A -> allowed on B at its token   p50 {}, p99 {}, max {}",
        ms(percentile(&visible, 0.5)),
        ms(percentile(&visible, 0.99)),
        ms(percentile(&visible, 1.0))
    );
    if let Some((count, p50, p99)) = histogram {
        println!("B's apply lag (commit in Postgres -> served on B; {count} revisions)   p50 {p50}, p99 {p99}");
    }
    let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(err)?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).execute(&mut conn).await.map_err(err)?;
    Ok(())
}
