//! Where a dataset's query mix spends its time: every query of `queries.txt` timed on
//! its own (the fastest of a few runs), then the cost per query kind and answer, the
//! distribution, and the queries that cost the most; and first the mean of one pass in
//! turn, where each query meets a cold cache (the difference is memory latency). The criterion mean says how fast
//! the mix is; this says which queries make it so.
//!
//! Run: `cargo run --release -p arbiter-benches --bin check-profile -- [RELATIONSHIPS]
//! [SEED] [RUNS]` (defaults 1000000 1 5). With `bulk` first (`check-profile bulk
//! [RELATIONSHIPS] [SEED] [SECONDS]`), it measures CheckBulk(100) over the query set in
//! turn instead: checks a second on one thread, then on two, every answer checked. Datasets are generated once into
//! `$CARGO_TARGET_DIR/bench-datasets` (or `$ARBITER_BENCH_DATA`).
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a profile report")]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use anyhow::{anyhow, Result};
use arbiter_benches::baseline::{data_root, dataset};
use arbiter_benches::generated::{check_request, load_engine};
use arbiter_engine::Decision;

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let bulk_mode = args.first().is_some_and(|a| a == "bulk");
    if bulk_mode {
        args.remove(0);
    }
    let arg = |i: usize, default: u64| -> Result<u64> {
        args.get(i).map_or(Ok(default), |a| a.replace('_', "").parse().map_err(|e| anyhow!("argument {}: `{a}`: {e}", i + 1)))
    };
    let (n, seed, runs) = (arg(0, 1_000_000)?, arg(1, 1)?, arg(2, 5)?.max(1));
    let ds = dataset(&data_root(), n, seed)?;
    let (engine, secs) = load_engine(&ds)?;
    if bulk_mode {
        return bulk(&engine, &ds, runs);
    }
    eprintln!("loaded {} in {secs:.1} s; timing {} queries, fastest of {runs} runs each", ds.dir.display(), ds.queries.len());

    // One pass in turn, as the criterion mix runs them: each query meets a cold cache.
    let started = Instant::now();
    for q in &ds.queries {
        black_box(engine.check(black_box(&check_request(q)))).map_err(|e| anyhow!("{}: {e}", q.line()))?;
    }
    let in_turn = started.elapsed().as_nanos() as f64 / ds.queries.len().max(1) as f64;

    // (nanoseconds, query index, allowed)
    let mut timed = Vec::with_capacity(ds.queries.len());
    for (i, q) in ds.queries.iter().enumerate() {
        let req = check_request(q);
        let mut best = u128::MAX;
        let mut allowed = false;
        for _ in 0..runs {
            let t = Instant::now();
            let r = black_box(engine.check(black_box(&req))).map_err(|e| anyhow!("{}: {e}", q.line()))?;
            best = best.min(t.elapsed().as_nanos());
            allowed = r.decision == Decision::Allowed;
        }
        if ds.expected.get(i).is_some_and(|want| *want != allowed) {
            return Err(anyhow!("{}: answered {allowed}, expected.txt says otherwise", q.line()));
        }
        timed.push((best, i, allowed));
    }
    let total: u128 = timed.iter().map(|t| t.0).sum();
    println!(
        "{} queries: in turn (cold) mean {in_turn:.0} ns; each repeated (warm) mean {:.0} ns",
        timed.len(),
        total as f64 / timed.len() as f64
    );

    let mut by_kind: BTreeMap<(String, bool), (u64, u128)> = BTreeMap::new();
    for &(ns, i, allowed) in &timed {
        let Some(q) = ds.queries.get(i) else { continue };
        let kind = format!("{}#{}", q.kind.resource_type(), q.kind.permission());
        let e = by_kind.entry((kind, allowed)).or_default();
        e.0 += 1;
        e.1 += ns;
    }
    println!("\n{:<20} {:>8} {:>8} {:>10} {:>8}", "kind", "answer", "queries", "mean ns", "share");
    for ((kind, allowed), (count, ns)) in &by_kind {
        println!(
            "{kind:<20} {:>8} {count:>8} {:>10.0} {:>7.1}%",
            if *allowed { "allowed" } else { "denied" },
            *ns as f64 / *count as f64,
            *ns as f64 * 100.0 / total as f64
        );
    }

    timed.sort_unstable();
    let at = |p: f64| timed.get(((timed.len() as f64 * p) as usize).min(timed.len().saturating_sub(1))).map_or(0, |t| t.0);
    println!("\np50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns, max {} ns", at(0.5), at(0.9), at(0.99), at(0.999), at(1.0));
    let mut acc = 0u128;
    for (share, (ns, ..)) in timed.iter().rev().enumerate() {
        acc += ns;
        if acc * 2 >= total {
            println!("the slowest {} queries ({:.1}%) take half the time", share + 1, (share + 1) as f64 * 100.0 / timed.len() as f64);
            break;
        }
    }
    println!("\nslowest:");
    for &(ns, i, allowed) in timed.iter().rev().take(15) {
        if let Some(q) = ds.queries.get(i) {
            println!("{ns:>10} ns  {:<8} {}", if allowed { "allowed" } else { "denied" }, q.line());
        }
    }
    Ok(())
}

/// CheckBulk(100) over the query set in turn for `seconds` on one thread, then on two
/// (each starting at its own place in the set), with every answer compared with
/// `expected.txt`.
fn bulk(engine: &arbiter_engine::Engine, ds: &arbiter_benches::baseline::Dataset, seconds: u64) -> Result<()> {
    use arbiter_engine::Consistency;
    const BATCH: usize = 100;
    let requests: Vec<_> = ds.queries.iter().map(check_request).collect();
    let batches = requests.len() / BATCH;
    if batches == 0 {
        return Err(anyhow!("fewer than {BATCH} queries"));
    }
    let run = |start: usize| -> Result<u64> {
        let until = Instant::now() + std::time::Duration::from_secs(seconds);
        let mut done = 0u64;
        let mut b = start % batches;
        while Instant::now() < until {
            let at = b * BATCH;
            let (answers, _) = engine
                .check_bulk(black_box(&requests[at..at + BATCH]), Consistency::MinimizeLatency)
                .map_err(|e| anyhow!("{e}"))?;
            for (i, answer) in answers.into_iter().enumerate() {
                let allowed = answer.map_err(|e| anyhow!("{e}"))? == Decision::Allowed;
                if ds.expected.get(at + i).is_some_and(|want| *want != allowed) {
                    return Err(anyhow!("{}: answered {allowed}, expected.txt says otherwise", ds.queries[at + i].line()));
                }
            }
            done += BATCH as u64;
            b = (b + 1) % batches;
        }
        Ok(done)
    };
    // What the symbol table's lookups cost alone: a batch's ids, the way CheckBulk's
    // first pass looks them up.
    let started = Instant::now();
    let mut found = 0usize;
    let mut syms = Vec::with_capacity(2 * BATCH);
    for batch in ds.queries.chunks(BATCH) {
        engine
            .interner()
            .symbols()
            .get_many(batch.iter().flat_map(|q| [q.resource.as_str(), q.user.as_str()]), &mut syms);
        found += black_box(&syms).iter().filter(|s| s.is_some()).count();
    }
    println!(
        "symbol table: {:.0} ns per lookup, a batch's ids side by side ({found} of {} found)",
        started.elapsed().as_nanos() as f64 / (2 * ds.queries.len()).max(1) as f64,
        2 * ds.queries.len()
    );
    let secs = seconds as f64;
    let one = run(0)?;
    println!("CheckBulk(100), one thread: {:.0} checks/s", one as f64 / secs);
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| run(batches / 2));
        let mine = run(0);
        (mine, other.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });
    println!("CheckBulk(100), two threads: {:.0} checks/s", (a? + b?) as f64 / secs);
    Ok(())
}
