//! `lookup-pages`: many clients paging through LookupResources at once against the real
//! `arbiter` binary on an embedded store, with the server's resident memory sampled
//! throughout (DESIGN §8: heavy calls must queue, not exhaust memory).
//!
//! Two phases, each `CLIENTS` clients at once, every client following cursors a page of
//! `PAGE` at a time until its lookup is done:
//!
//! - `distinct`: each client pages a different lookup, the first distinct (type,
//!   permission, subject) of the dataset's queries;
//! - `largest`: every client pages the lookup with the most results among the first 20
//!   distinct ones (counted once, before the phase).
//!
//! `cargo build --release --workspace --bins`, then
//! `$CARGO_TARGET_DIR/release/lookup-pages DATASET [CLIENTS] [PAGE]`
//! (`DATASET` made by `arbiter-loadtest gen`; `ARBITER_BIN` the server binary, default
//! the `arbiter` beside this one). Prints one line per phase: time, pages, results, and
//! the server's RSS after loading and at its peak during the phase.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arbiter_benches::remote::{arbiter_bin, distinct_lookups, lookup_request, mb, rss_of, ArbiterProcess, Lookup};
use arbiter_loadtest::workload::{connect, load_dataset, read_dataset, Clients};

/// Pages through `lookup` to its end: (pages, results).
async fn page_through(mut c: Clients, lookup: Lookup, page: u32) -> Result<(u64, u64)> {
    let (mut pages, mut results, mut cursor) = (0, 0, String::new());
    loop {
        let mut stream = c.permissions.lookup_resources(lookup_request(&lookup, page, &cursor)).await?.into_inner();
        let mut n = 0;
        while let Some(m) = stream.message().await? {
            n += 1;
            cursor = m.cursor;
        }
        pages += 1;
        results += n;
        if n < u64::from(page) {
            return Ok((pages, results));
        }
    }
}

/// Runs every lookup at once, sampling the server's RSS: (seconds, pages, results, peak RSS).
async fn phase(server: &ArbiterProcess, clients: &[Clients], lookups: Vec<Lookup>, page: u32) -> Result<(f64, u64, u64, u64)> {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(server.rss()?));
    let pid = server.pid();
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let start = Instant::now();
    let tasks: Vec<_> = lookups
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let c = clients.get(i % clients.len()).cloned();
            tokio::spawn(async move {
                match c {
                    Some(c) => page_through(c, l, page).await,
                    None => Err(anyhow!("no client")),
                }
            })
        })
        .collect();
    let (mut pages, mut results) = (0, 0);
    for t in tasks {
        let (p, r) = t.await??;
        pages += p;
        results += r;
    }
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    Ok((seconds, pages, results, peak.load(Ordering::Relaxed)))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(dataset) = args.get(1).map(PathBuf::from) else {
        bail!("usage: lookup-pages DATASET [CLIENTS] [PAGE]");
    };
    let clients_n: usize = args.get(2).map_or(Ok(50), |s| s.parse()).context("CLIENTS")?;
    let page: u32 = args.get(3).map_or(Ok(100), |s| s.parse()).context("PAGE")?;
    let data = tempfile::tempdir()?;
    let server = ArbiterProcess::start(&arbiter_bin()?, data.path(), &[])?;
    let clients = connect(&server.grpc, None, 4).await?;
    let first = clients.first().cloned().ok_or_else(|| anyhow!("no connection"))?;
    let loaded = load_dataset(&first, &dataset).await?;
    println!("loaded {} relationships in {:.1} s; server RSS {}", loaded.imported, loaded.seconds, mb(server.rss()?));

    let distinct = distinct_lookups(&read_dataset(&dataset)?.queries, clients_n.max(20));
    // The largest of the first 20, counted once.
    let mut largest = (0, None);
    for l in distinct.iter().take(20) {
        let (_, n) = page_through(first.clone(), l.clone(), 1000).await?;
        if n > largest.0 {
            largest = (n, Some(l.clone()));
        }
    }
    let before = server.rss()?;
    let phases = [
        ("distinct", distinct.iter().take(clients_n).cloned().collect::<Vec<_>>()),
        ("largest", largest.1.iter().cycle().take(clients_n).cloned().collect()),
    ];
    for (name, lookups) in phases {
        let (seconds, pages, results, peak) = phase(&server, &clients, lookups, page).await?;
        println!(
            "{name}: {clients_n} clients, page {page}: {seconds:.2} s, {pages} pages, {results} results; server RSS {} before, peak {}",
            mb(before),
            mb(peak)
        );
    }
    Ok(())
}
