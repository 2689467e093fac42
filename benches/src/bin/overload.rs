//! `overload`: the server at its limits while a probe measures whether it still answers.
//!
//! Against a real `arbiter serve` (embedded store, the dataset imported, default limits),
//! all at once for `SECONDS`:
//!
//! - 1,000 idle gRPC connections (HTTP/2 handshake done, nothing sent);
//! - slow clients: 8 ExportRelationships and 8 unbounded LookupResources streams opened
//!   and never read (each holds a heavy call's turn until `--stream-send-timeout`; they
//!   are reopened whenever the server ends them);
//! - 4 clients looping over unbounded LookupResources of the dataset's first subjects,
//!   read to the end;
//! - 4 clients looping over CheckBulk of 1,000 of the dataset's queries;
//! - the probe: every 20 ms a `GET /readyz` (its own HTTP/1.1 connection each time) and a
//!   Check of one query on its own gRPC connection, each timed.
//!
//! Prints the probe's p50 / p99 / max and failures for both, and what the load got done.
//!
//! `cargo build --release --workspace --bins`, then
//! `$CARGO_TARGET_DIR/release/overload DATASET [SECONDS]` (`ARBITER_BIN` the server).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arbiter_benches::remote::{arbiter_bin, distinct_lookups, lookup_request, mb, ArbiterProcess, Lookup};
use arbiter_loadtest::workload::{connect, load_dataset, read_dataset, Clients};
use arbiter_proto::arbiter::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts of what the load got done.
#[derive(Debug, Default)]
struct Done {
    lookups: AtomicU64,
    lookup_results: AtomicU64,
    lookup_errors: AtomicU64,
    bulks: AtomicU64,
    bulk_errors: AtomicU64,
    stalls_opened: AtomicU64,
    /// Every error the load got, by call and gRPC code.
    errors: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Done {
    fn error(&self, call: &str, status: &tonic::Status) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(format!("{call} {:?}", status.code())).or_default() += 1;
        }
    }
}

/// One `GET /readyz` on a new connection: whether it answered 200.
async fn readyz(http: &str) -> Result<bool> {
    let mut s = tokio::net::TcpStream::connect(http).await?;
    s.write_all(format!("GET /readyz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    Ok(reply.starts_with(b"HTTP/1.1 200"))
}

/// p50, p99 and max of a set of microsecond samples.
fn summary(mut us: Vec<u64>) -> String {
    if us.is_empty() {
        return "no samples".into();
    }
    us.sort_unstable();
    let at = |q: f64| us.get(((us.len() as f64 * q) as usize).min(us.len() - 1)).copied().unwrap_or(0);
    format!("p50 {} us, p99 {} us, max {} us ({} samples)", at(0.5), at(0.99), us.last().copied().unwrap_or(0), us.len())
}

/// Opens a stream that is never read, again whenever the server ends it.
async fn stall(c: Clients, lookup: Lookup, export: bool, stop: Arc<AtomicBool>, done: Arc<Done>) {
    let mut c = c;
    while !stop.load(Ordering::Relaxed) {
        // Held (unread) until the server gives up on it or the run ends.
        let held: Result<Box<dyn std::any::Any + Send>, tonic::Status> = if export {
            c.relationships
                .export_relationships(pb::ExportRelationshipsRequest { consistency: None })
                .await
                .map(|r| Box::new(r.into_inner()) as Box<dyn std::any::Any + Send>)
        } else {
            c.permissions
                .lookup_resources(lookup_request(&lookup, 0, ""))
                .await
                .map(|r| Box::new(r.into_inner()) as Box<dyn std::any::Any + Send>)
        };
        if held.is_ok() {
            done.stalls_opened.fetch_add(1, Ordering::Relaxed);
        }
        // The server's send timeout is 30 s: hold it that long, then open another.
        let until = Instant::now() + Duration::from_secs(31);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(held);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(dataset) = args.get(1).map(PathBuf::from) else {
        bail!("usage: overload DATASET [SECONDS]");
    };
    let seconds: u64 = args.get(2).map_or(Ok(30), |s| s.parse()).context("SECONDS")?;
    let data = tempfile::tempdir()?;
    let server = ArbiterProcess::start(&arbiter_bin()?, data.path(), &[])?;
    let conns = connect(&server.grpc, None, 16).await?;
    let first = conns.first().cloned().ok_or_else(|| anyhow!("no connection"))?;
    let loaded = load_dataset(&first, &dataset).await?;
    let queries = read_dataset(&dataset)?.queries;
    let lookups = distinct_lookups(&queries, 8);
    let query = queries.first().cloned().ok_or_else(|| anyhow!("the dataset has no queries"))?;
    println!("loaded {} relationships in {:.1} s; server RSS {}", loaded.imported, loaded.seconds, mb(server.rss()?));

    // Probe alone first: the figures to compare with.
    let probe_conn = connect(&server.grpc, None, 1).await?.into_iter().next().ok_or_else(|| anyhow!("no connection"))?;
    let probe = |seconds: u64| {
        let (http, mut c, query) = (server.http.clone(), probe_conn.clone(), query.clone());
        tokio::spawn(async move {
            let (mut ready, mut check, mut failures) = (Vec::new(), Vec::new(), (0u64, 0u64));
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                let t = Instant::now();
                match readyz(&http).await {
                    Ok(true) => ready.push(t.elapsed().as_micros() as u64),
                    _ => failures.0 += 1,
                }
                let t = Instant::now();
                match c.permissions.check(query.clone()).await {
                    Ok(_) => check.push(t.elapsed().as_micros() as u64),
                    Err(_) => failures.1 += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ready, check, failures)
        })
    };
    let (ready, check, failures) = probe(seconds.min(10)).await?;
    println!("idle:   /readyz {}; failures {}", summary(ready), failures.0);
    println!("idle:   Check   {}; failures {}", summary(check), failures.1);

    // 1,000 idle connections.
    let idle = connect(&server.grpc, None, 1000).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Done::default());
    let mut load = Vec::new();
    for i in 0..16 {
        let c = conns.get(i % conns.len()).cloned().ok_or_else(|| anyhow!("no connection"))?;
        let l = lookups.get(i % lookups.len().max(1)).cloned().ok_or_else(|| anyhow!("no lookups"))?;
        load.push(tokio::spawn(stall(c, l, i % 2 == 0, stop.clone(), done.clone())));
    }
    for i in 0..4 {
        let mut c = conns.get((i + 1) % conns.len()).cloned().ok_or_else(|| anyhow!("no connection"))?;
        let (stop, done, lookups) = (stop.clone(), done.clone(), lookups.clone());
        load.push(tokio::spawn(async move {
            let mut k = i;
            while !stop.load(Ordering::Relaxed) {
                let Some(l) = lookups.get(k % lookups.len().max(1)) else { return };
                k += 1;
                match c.permissions.lookup_resources(lookup_request(l, 0, "")).await {
                    Ok(r) => {
                        let mut s = r.into_inner();
                        loop {
                            match s.message().await {
                                Ok(Some(_)) => {
                                    done.lookup_results.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(None) => {
                                    done.lookups.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                Err(e) => {
                                    done.lookup_errors.fetch_add(1, Ordering::Relaxed);
                                    done.error("LookupResources", &e);
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        done.lookup_errors.fetch_add(1, Ordering::Relaxed);
                        done.error("LookupResources", &e);
                    }
                }
            }
        }));
    }
    for i in 0..4 {
        let mut c = conns.get((i + 5) % conns.len()).cloned().ok_or_else(|| anyhow!("no connection"))?;
        let items: Vec<pb::CheckBulkItem> = queries
            .iter()
            .skip(i * 1000)
            .take(1000)
            .map(|q| pb::CheckBulkItem {
                resource: q.resource.clone(),
                permission: q.permission.clone(),
                subject: q.subject.clone(),
                context: None,
            })
            .collect();
        let (stop, done) = (stop.clone(), done.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = pb::CheckBulkRequest { items: items.clone(), consistency: None };
                match c.permissions.check_bulk(req).await {
                    Ok(_) => {
                        done.bulks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        done.bulk_errors.fetch_add(1, Ordering::Relaxed);
                        done.error("CheckBulk", &e);
                    }
                }
            }
        }));
    }
    // Let the load build up, then probe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = server.rss()?;
    let (ready, check, failures) = probe(seconds).await?;
    stop.store(true, Ordering::Relaxed);
    println!("loaded: /readyz {}; failures {}", summary(ready), failures.0);
    println!("loaded: Check   {}; failures {}", summary(check), failures.1);
    println!(
        "load: {} idle connections, {} stalled streams opened, {} unbounded lookups read to the end ({} results, {} ended in errors), {} CheckBulk(1000) ({} errors); server RSS {} under load",
        idle.len(),
        done.stalls_opened.load(Ordering::Relaxed),
        done.lookups.load(Ordering::Relaxed),
        done.lookup_results.load(Ordering::Relaxed),
        done.lookup_errors.load(Ordering::Relaxed),
        done.bulks.load(Ordering::Relaxed),
        done.bulk_errors.load(Ordering::Relaxed),
        mb(rss_loaded),
    );
    if let Ok(errors) = done.errors.lock() {
        for (what, n) in errors.iter() {
            println!("load errors: {what}: {n}");
        }
    }
    for t in load {
        t.abort();
    }
    drop(idle);
    Ok(())
}
