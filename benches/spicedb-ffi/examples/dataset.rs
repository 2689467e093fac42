//! Loads an `arbiter-loadtest gen` dataset into the real SpiceDB and compares every
//! answer with its `expected.txt`, at each consistency a benchmark could ask for:
//! single checks at `minimize_latency` for the first 7 s after the load (memdb rounds
//! that revision down to 5 s, so it may predate the last writes), then every query
//! (or the first `--single N`) as a single check at `fully_consistent`, with the time
//! per query kind, then the first `--bulk N` (1000 unless told) in CheckBulk(100) at
//! `fully_consistent`, at `at_least_as_fresh` the load's token and at
//! `minimize_latency`.
//!
//! ```text
//! arbiter-loadtest gen --relationships 100000 --seed 1 --out /tmp/ds100k
//! cargo run -p arbiter-spicedb-ffi --example dataset -- /tmp/ds100k [--single N] [--bulk N] [--postgres URI]
//! ```
#![allow(clippy::print_stdout, reason = "a report")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arbiter_proto::authzed::api::v1 as pb;
use arbiter_spicedb_ffi::request::{
    allowed, at_least_as_fresh, bulk_allowed, fully_consistent, minimize_latency, parts,
};
use arbiter_spicedb_ffi::{default_library_path, Options, Spicedb};

/// `type:id#relation@type:id[#relation]` as (resource, relation, subject).
fn parse(line: &str) -> Result<(pb::ObjectReference, String, pb::SubjectReference)> {
    parts(line).map_err(|e| anyhow!(e))
}

fn lines(path: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("read {}", path.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The revision inside a SpiceDB ZedToken (base64 of a protobuf holding the revision
/// as decimal text): the longest run of digits, enough to order memdb's revisions.
fn revision(token: Option<&pb::ZedToken>) -> String {
    let Some(token) = token else {
        return "-".to_string();
    };
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut bytes = Vec::new();
    for c in token.token.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push(((acc >> bits) & 0xff) as u8);
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    text.split(|c: char| !c.is_ascii_digit() && c != '.')
        .max_by_key(|s| s.len())
        .unwrap_or("")
        .to_string()
}

struct Disagreement {
    query: usize,
    got: bool,
    after_load: Duration,
    checked_at: String,
}

fn report(
    phase: &str,
    started: Instant,
    asked: usize,
    found: &[Disagreement],
    queries: &[String],
    expected: &[bool],
) {
    let false_negatives = found.iter().filter(|d| !d.got).count();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{phase:<40} {asked:>5} queries, {:>5} disagreements ({} false where expected true, {} true where expected false), {seconds:.2}s, {:.2} ms per check",
        found.len(),
        false_negatives,
        found.len() - false_negatives,
        seconds * 1e3 / asked.max(1) as f64
    );
    for d in found.iter().take(5) {
        println!(
            "    query {:>5} `{}`: got {}, expected {}, asked {:.3}s after the load, checked at revision {}",
            d.query + 1,
            queries[d.query],
            d.got,
            expected[d.query],
            d.after_load.as_secs_f64(),
            d.checked_at
        );
    }
    if let Some(last) = found.last() {
        println!(
            "    last disagreement: query {} at {:.3}s after the load",
            last.query + 1,
            last.after_load.as_secs_f64()
        );
    }
}

/// Single checks of every query in order, or of those asked before `until` after the
/// load.
fn single(
    db: &Spicedb,
    phase: &str,
    consistency: &pb::Consistency,
    loaded: Instant,
    until: Option<Duration>,
    queries: &[String],
    expected: &[bool],
) -> Result<()> {
    let started = Instant::now();
    let mut found = Vec::new();
    let mut asked = 0;
    // (`type#permission`, expected answer) -> (checks, total time, slowest).
    let mut by_kind: BTreeMap<(String, bool), (u32, Duration, Duration)> = BTreeMap::new();
    for (i, line) in queries.iter().enumerate() {
        if until.is_some_and(|u| loaded.elapsed() > u) {
            break;
        }
        if i > 0 && i % 1000 == 0 {
            println!("    {i} asked, {:.1}s", started.elapsed().as_secs_f64());
        }
        asked += 1;
        let (resource, permission, subject) = parse(line)?;
        let kind = (
            format!("{}#{permission}", resource.object_type),
            expected[i],
        );
        let asked_at = Instant::now();
        let response = db
            .check(&pb::CheckPermissionRequest {
                consistency: Some(consistency.clone()),
                resource: Some(resource),
                permission,
                subject: Some(subject),
                ..Default::default()
            })
            .with_context(|| format!("check `{line}`"))?;
        let took = asked_at.elapsed();
        let stats = by_kind.entry(kind).or_default();
        stats.0 += 1;
        stats.1 += took;
        stats.2 = stats.2.max(took);
        let got = allowed(&response);
        if got != expected[i] {
            found.push(Disagreement {
                query: i,
                got,
                after_load: loaded.elapsed(),
                checked_at: revision(response.checked_at.as_ref()),
            });
        }
    }
    report(phase, started, asked, &found, queries, expected);
    for ((kind, answer), (n, total, slowest)) in &by_kind {
        println!(
            "    {kind:<20} expected {answer:<5} {n:>5} checks, mean {:>8.2} ms, slowest {:>8.2} ms",
            total.as_secs_f64() * 1e3 / f64::from(*n),
            slowest.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn bulk(
    db: &Spicedb,
    phase: &str,
    consistency: &pb::Consistency,
    loaded: Instant,
    queries: &[String],
    expected: &[bool],
) -> Result<()> {
    let started = Instant::now();
    let mut found = Vec::new();
    for (c, chunk) in queries.chunks(100).enumerate() {
        let items = chunk
            .iter()
            .map(|line| {
                let (resource, permission, subject) = parse(line)?;
                Ok(pb::CheckBulkPermissionsRequestItem {
                    resource: Some(resource),
                    permission,
                    subject: Some(subject),
                    context: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let response = db.check_bulk(&pb::CheckBulkPermissionsRequest {
            consistency: Some(consistency.clone()),
            items,
            with_tracing: false,
        })?;
        if response.pairs.len() != chunk.len() {
            bail!("{} pairs for {} items", response.pairs.len(), chunk.len());
        }
        for (j, pair) in response.pairs.iter().enumerate() {
            let i = c * 100 + j;
            let got = bulk_allowed(pair).map_err(|e| anyhow!("check `{}`: {e}", queries[i]))?;
            if got != expected[i] {
                found.push(Disagreement {
                    query: i,
                    got,
                    after_load: loaded.elapsed(),
                    checked_at: revision(response.checked_at.as_ref()),
                });
            }
        }
    }
    report(phase, started, queries.len(), &found, queries, expected);
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut options = Options::memory();
    let mut single_limit = usize::MAX;
    let mut bulk_limit = 1000;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--single" => single_limit = args.next().context("--single needs a count")?.parse()?,
            "--bulk" => bulk_limit = args.next().context("--bulk needs a count")?.parse()?,
            "--postgres" => {
                options = Options::postgres(args.next().context("--postgres needs a URI")?)
            }
            other if dir.is_none() => dir = Some(PathBuf::from(other)),
            other => bail!(
                "unexpected argument `{other}`; use DIR [--single N] [--bulk N] [--postgres URI]"
            ),
        }
    }
    let dir = dir.context("usage: dataset DIR [--single N] [--bulk N] [--postgres URI]")?;
    let schema = std::fs::read_to_string(dir.join("schema.zed")).context("read schema.zed")?;
    let relationships = lines(&dir.join("relationships.txt"))?
        .iter()
        .map(|l| {
            let (resource, relation, subject) = parse(l)?;
            Ok(pb::Relationship {
                resource: Some(resource),
                relation,
                subject: Some(subject),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let queries = lines(&dir.join("queries.txt"))?;
    let expected = lines(&dir.join("expected.txt"))?
        .iter()
        .map(|l| match l.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(anyhow!("expected.txt: `{other}`")),
        })
        .collect::<Result<Vec<_>>>()?;
    if queries.len() != expected.len() {
        bail!("{} queries, {} answers", queries.len(), expected.len());
    }

    let library = default_library_path();
    let db = Spicedb::open(&library, &options)?;
    println!(
        "SpiceDB from {} ({:?})",
        db.library_path().display(),
        options.datastore
    );
    let started = Instant::now();
    let schema_token = db.write_schema(&schema)?;
    let mut token = None;
    for (i, chunk) in relationships.chunks(10_000).enumerate() {
        token = db.touch_relationships(chunk)?;
        println!(
            "  {} written, {:.2}s",
            i * 10_000 + chunk.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let token = token.context("no relationships")?;
    let loaded = Instant::now();
    println!(
        "loaded {} relationships in {:.2}s; schema at revision {}, last write at revision {}",
        relationships.len(),
        started.elapsed().as_secs_f64(),
        revision(Some(&schema_token)),
        revision(Some(&token))
    );

    // minimize_latency reads at the datastore's optimized revision: memdb's is the
    // time now, rounded down to 5 s, so it can predate the last writes for up to 5 s.
    single(
        &db,
        "check, minimize_latency, first 7s",
        &minimize_latency(),
        loaded,
        Some(Duration::from_secs(7)),
        &queries,
        &expected,
    )?;
    let n = single_limit.min(queries.len());
    single(
        &db,
        "check, fully_consistent",
        &fully_consistent(),
        loaded,
        None,
        &queries[..n],
        &expected[..n],
    )?;
    let n = bulk_limit.min(queries.len());
    let consistencies = [
        ("fully_consistent", fully_consistent()),
        ("at_least_as_fresh(load token)", at_least_as_fresh(&token)),
        ("minimize_latency, later", minimize_latency()),
    ];
    for (name, consistency) in &consistencies {
        let phase = format!("check_bulk(100), {name}");
        bulk(
            &db,
            &phase,
            consistency,
            loaded,
            &queries[..n],
            &expected[..n],
        )?;
    }
    db.close()?;
    Ok(())
}
