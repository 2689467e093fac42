//! `store-scale`: the embedded store at scale, in one process (release build):
//! durable bulk import through `Engine::import` into RocksDB, reopen (cold start) time,
//! resident memory per relationship after the reopen, and single-write latency with a
//! synced WAL. Prints a table for BENCHMARKS.md.
//!
//! `cargo run --release -p arbiter-benches --bin store-scale -- [RELATIONSHIPS] [BATCH]`
//!
//! `store-scale --schema` prints the schema and `store-scale --lines N` the first N
//! relationships as text, one a line, for `arbiter schema write` and `arbiter import`
//! (the same data through gRPC).

use std::time::Instant;

use arbiter_engine::{Engine, EngineConfig, RelationshipUpdate, UpdateOp};
use arbiter_rocksdb_store::{RocksStore, StoreOptions};
use arbiter_schema::{ObjectRef, Relationship, SubjectRef};

const SCHEMA: &str = "definition user {}\ndefinition team {\n relation member: user | team#member\n}\ndefinition doc {\n relation viewer: user | team#member\n relation owner: user\n permission view = viewer + owner\n}\n";

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The i-th relationship: documents with ~5 viewers each, users and team subject sets.
fn relationship(i: u64) -> Relationship {
    let doc = i / 5;
    let (stype, sid, srel) = if i.is_multiple_of(7) {
        (
            "team",
            format!("t{}", i % 10_007),
            Some("member".to_string()),
        )
    } else {
        ("user", format!("u{}", (i * 7919) % 1_000_003), None)
    };
    Relationship {
        resource: ObjectRef {
            object_type: "doc".into(),
            object_id: format!("d{doc}"),
        },
        relation: "viewer".into(),
        subject: SubjectRef {
            object: ObjectRef {
                object_type: stype.into(),
                object_id: sid,
            },
            relation: srel,
        },
        caveat: None,
        expiration: None,
    }
}

fn open(dir: &std::path::Path) -> Result<Engine, String> {
    let store = RocksStore::open(dir, StoreOptions::default()).map_err(|e| e.0)?;
    Engine::open(Box::new(store), EngineConfig::default()).map_err(|e| e.to_string())
}

/// The reopen half, in a fresh process so the memory figure is the loaded graph's alone.
fn reopen(data: &std::path::Path) -> Result<(), String> {
    let before = rss_bytes();
    let started = Instant::now();
    let engine = open(data)?;
    let secs = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let rels = engine.current().len() as u64;
    println!("reopen      {rels} relationships in {secs:.2} s (open the store, rebuild the graph)");
    println!(
        "memory      RSS {} MiB -> {} MiB after the reopen: {:.0} bytes per relationship",
        before >> 20,
        after >> 20,
        (after.saturating_sub(before)) as f64 / rels.max(1) as f64
    );
    Ok(())
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--schema") {
        print!("{SCHEMA}");
        return Ok(());
    }
    if args.peek().map(String::as_str) == Some("--lines") {
        let n: u64 = args.nth(1).and_then(|a| a.parse().ok()).ok_or("--lines N")?;
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for i in 0..n {
            writeln!(out, "{}", relationship(i)).map_err(|e| e.to_string())?;
        }
        return out.flush().map_err(|e| e.to_string());
    }
    if args.peek().map(String::as_str) == Some("--reopen") {
        let dir = args.nth(1).ok_or("--reopen DIR")?;
        return reopen(std::path::Path::new(&dir));
    }
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let batch: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("data");

    {
        let engine = open(&data)?;
        engine.write_schema(SCHEMA).map_err(|e| e.to_string())?;
        // The relationships are made before the clock starts: what is timed is the
        // engine's import (validation, interning, the graph, the durable commit), not
        // this program formatting ids.
        let batch = batch.max(1);
        let chunks: Vec<Vec<Relationship>> = (0..n)
            .step_by(batch as usize)
            .map(|i| (i..(i + batch).min(n)).map(relationship).collect())
            .collect();
        let started = Instant::now();
        for chunk in chunks {
            engine.import(chunk).map_err(|e| e.to_string())?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("import      {n} relationships in {secs:.2} s = {:.0} rel/s (batches of {batch}, each synced)", n as f64 / secs);

        let mut latencies = Vec::with_capacity(1000);
        for k in 0..1000u64 {
            let r = RelationshipUpdate {
                op: UpdateOp::Touch,
                relationship: relationship(n + k),
            };
            let t = Instant::now();
            engine
                .write(std::slice::from_ref(&r))
                .map_err(|e| e.to_string())?;
            latencies.push(t.elapsed().as_micros() as u64);
        }
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len() - 1))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "write 1     p50 {} us, p99 {} us (synced WAL, 1000 writes of one relationship)",
            pct(0.5),
            pct(0.99)
        );
    }

    let status = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("--reopen")
        .arg(&data)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the reopen process failed: {status}"));
    }
    Ok(())
}
