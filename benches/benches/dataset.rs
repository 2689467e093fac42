//! In-process benchmarks on datasets from `arbiter-loadtest gen` (DESIGN §9): Check
//! shapes found in the data, the whole query mix, CheckBulk(100), LookupResources,
//! writes and import, at 100k and 1M relationships; then Checks again with writes
//! pending compaction.
//!
//! Run: `cargo bench --workspace --bench dataset` (or, with no C++ at all,
//! `cargo bench -p arbiter-benches --no-default-features --features baselines --bench
//! dataset`). `ARBITER_BENCH_SIZES=100000` picks the sizes; datasets are generated once
//! into `$CARGO_TARGET_DIR/bench-datasets` (or `$ARBITER_BENCH_DATA`).
//!
//! The shapes are picked from the dataset, not written by hand: a direct `viewer`
//! relationship; a document viewer checked through `view`; the allowed `team#membership`
//! and `document#view` queries whose explained path is longest (nested teams; folder
//! arrows and teams); the denied `document#view` query that takes longest (it walks the
//! most before saying no); a banned user; a public document.
#![allow(clippy::print_stderr, reason = "benchmark setup notes")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use arbiter_benches::baseline::{data_root, dataset, Dataset, Query, QueryKind};
use arbiter_benches::cedar_fixture::{attrs, policy_model};
use arbiter_benches::generated::{check_request, load_engine, relationships};
use arbiter_engine::{
    CheckRequest, Consistency, Decision, Engine, EngineConfig, LookupResourcesRequest, RelationshipUpdate, UpdateOp,
};
use arbiter_schema::{parse_relationship, Relationship};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput};
use serde_json::json;

fn sizes() -> Vec<u64> {
    std::env::var("ARBITER_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().replace('_', "").parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

fn label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn allowed(engine: &Engine, q: &CheckRequest<'_>) -> Result<bool> {
    Ok(engine.check(q).map_err(|e| anyhow!("{e}"))?.decision == Decision::Allowed)
}

/// A named Check over the dataset, and the answer it must give.
struct Shape {
    name: String,
    resource_type: String,
    resource_id: String,
    permission: String,
    user: String,
    expect: bool,
}

impl Shape {
    fn from_query(name: &str, q: &Query, expect: bool) -> Shape {
        Shape {
            name: name.to_string(),
            resource_type: q.kind.resource_type().to_string(),
            resource_id: q.resource.clone(),
            permission: q.kind.permission().to_string(),
            user: q.user.clone(),
            expect,
        }
    }

    fn request(&self) -> CheckRequest<'_> {
        CheckRequest {
            resource_type: &self.resource_type,
            resource_id: &self.resource_id,
            permission: &self.permission,
            subject_type: "user",
            subject_id: &self.user,
            subject_relation: None,
            consistency: Consistency::MinimizeLatency,
            ..Default::default()
        }
    }
}

/// The allowed query of `kind` whose explained path is longest.
fn deepest_allowed<'d>(engine: &Engine, ds: &'d Dataset, kind: QueryKind) -> Result<Option<(usize, &'d Query)>> {
    let mut best: Option<(usize, &Query)> = None;
    for (q, _) in ds.queries.iter().zip(&ds.expected).filter(|(q, a)| **a && q.kind == kind) {
        let e = engine.explain(&check_request(q)).map_err(|e| anyhow!("explain `{}`: {e}", q.line()))?;
        if best.is_none_or(|(d, _)| e.path.len() > d) {
            best = Some((e.path.len(), q));
        }
    }
    Ok(best)
}

/// The denied `document#view` query (of the first 2,000) that takes longest.
fn slowest_denied<'d>(engine: &Engine, ds: &'d Dataset) -> Option<&'d Query> {
    let mut best: Option<(Duration, &Query)> = None;
    for q in ds
        .queries
        .iter()
        .zip(&ds.expected)
        .filter(|(q, a)| !**a && q.kind == QueryKind::DocumentView)
        .map(|(q, _)| q)
        .take(2_000)
    {
        let r = check_request(q);
        let t = Instant::now();
        for _ in 0..20 {
            black_box(engine.check(black_box(&r)).ok());
        }
        let took = t.elapsed();
        if best.is_none_or(|(d, _)| took > d) {
            best = Some((took, q));
        }
    }
    best.map(|(_, q)| q)
}

fn shapes(engine: &Engine, ds: &Dataset, rels: &[Relationship]) -> Result<Vec<Shape>> {
    let mut out = Vec::new();
    let find = |pred: &dyn Fn(&Relationship) -> bool| rels.iter().find(|r| pred(r));
    let banned: std::collections::HashSet<(&str, &str)> = rels
        .iter()
        .filter(|r| r.relation == "banned")
        .map(|r| (r.resource.object_id.as_str(), r.subject.object.object_id.as_str()))
        .collect();
    let shape = |name: &str, rt: &str, rid: &str, perm: &str, user: &str| -> Result<Shape> {
        let mut s = Shape {
            name: name.to_string(),
            resource_type: rt.to_string(),
            resource_id: rid.to_string(),
            permission: perm.to_string(),
            user: user.to_string(),
            expect: false,
        };
        s.expect = allowed(engine, &s.request())?;
        Ok(s)
    };
    if let Some(r) = find(&|r| {
        r.resource.object_type == "document"
            && r.relation == "viewer"
            && r.subject.object.object_type == "user"
            && r.subject.object.object_id != "*"
            && !banned.contains(&(r.resource.object_id.as_str(), r.subject.object.object_id.as_str()))
    }) {
        let (d, u) = (&r.resource.object_id, &r.subject.object.object_id);
        out.push(shape("direct relation (document#viewer)", "document", d, "viewer", u)?);
        out.push(shape("direct via permission (document#view, a viewer)", "document", d, "view", u)?);
    }
    if let Some((depth, q)) = deepest_allowed(engine, ds, QueryKind::TeamMembership)? {
        out.push(Shape::from_query(&format!("nested teams, allowed ({depth}-step path)"), q, true));
    }
    if let Some((depth, q)) = deepest_allowed(engine, ds, QueryKind::DocumentView)? {
        out.push(Shape::from_query(&format!("folder arrows + teams, deepest allowed ({depth}-step path)"), q, true));
    }
    if let Some(q) = slowest_denied(engine, ds) {
        out.push(Shape::from_query("document#view, slowest denied", q, false));
    }
    if let Some(r) = find(&|r| r.relation == "banned") {
        out.push(shape("exclusion (a banned user)", "document", &r.resource.object_id, "view", &r.subject.object.object_id)?);
    }
    if let Some(r) = find(&|r| r.relation == "viewer" && r.subject.object.object_id == "*") {
        out.push(shape("wildcard (a public document)", "document", &r.resource.object_id, "view", "someone-else")?);
    }
    Ok(out)
}

/// The whole query mix, in order: the mean Check over queries.txt.
fn bench_mix(group: &mut BenchmarkGroup<'_, WallTime>, engine: &Engine, requests: &[CheckRequest<'_>]) {
    let mut i = 0;
    group.bench_function(format!("queries.txt mix ({} queries, in turn)", requests.len()), |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            black_box(engine.check(black_box(&requests[i])))
        })
    });
}

fn bench_size(c: &mut Criterion, n: u64) -> Result<()> {
    let ds = dataset(&data_root(), n, 1)?;
    let size = label(n);
    let rels = relationships(&ds)?.collect::<Result<Vec<_>>>()?;
    let (engine, secs) = load_engine(&ds)?;
    eprintln!("dataset {size}: {} relationships imported in {secs:.1} s", rels.len());

    let mut group = c.benchmark_group(format!("gen {size}/check"));
    let shapes = shapes(&engine, &ds, &rels)?;
    for s in &shapes {
        let q = s.request();
        if allowed(&engine, &q)? != s.expect {
            return Err(anyhow!("{}: the benchmark's premise is wrong", s.name));
        }
        eprintln!("  {}: {}:{}#{}@user:{} -> {}", s.name, s.resource_type, s.resource_id, s.permission, s.user, s.expect);
        group.bench_function(&s.name, |b| b.iter(|| black_box(engine.check(black_box(&q)))));
    }
    // The whole query mix, in order: the mean Check over queries.txt.
    let requests: Vec<CheckRequest<'_>> = ds.queries.iter().map(check_request).collect();
    for (r, want) in requests.iter().zip(&ds.expected) {
        if allowed(&engine, r)? != *want {
            return Err(anyhow!("a query disagrees with expected.txt: {r:?}"));
        }
    }
    group.throughput(Throughput::Elements(1));
    bench_mix(&mut group, &engine, &requests);
    group.finish();

    // With Cedar: the label policy and 3 attributes on the deepest allowed query.
    if let Some(deep) = shapes.iter().find(|s| s.name.starts_with("folder arrows")) {
        let cedar = Engine::in_memory(EngineConfig::default());
        cedar.write_schema(&ds.schema()?).map_err(|e| anyhow!("{e}"))?;
        cedar.import(rels.clone()).map_err(|e| anyhow!("{e}"))?;
        cedar.write_policy_model(policy_model("document", "").map_err(|e| anyhow!(e))?).map_err(|e| anyhow!("{e}"))?;
        cedar
            .write_attributes(vec![
                attrs(&format!("user:{}", deep.user), json!({"clearance": 4, "department": "eng"}), &["secret"]),
                attrs(&format!("document:{}", deep.resource_id), json!({"classification": 3}), &["confidential"]),
            ])
            .map_err(|e| anyhow!("{e}"))?;
        let q = deep.request();
        if !allowed(&cedar, &q)? {
            return Err(anyhow!("with Cedar: the deepest allowed query is no longer allowed"));
        }
        let mut group = c.benchmark_group(format!("gen {size}/cedar"));
        group.bench_function("label policy + 3 attributes, deepest allowed", |b| {
            b.iter(|| black_box(cedar.check(black_box(&q))))
        });
        // The same policy over every allowed `document` query of queries.txt in turn, all
        // their users and documents given attributes that pass it: one thread's cache of
        // built entities (1024) holds a small part of them, so most requests build both.
        let mix: Vec<&CheckRequest<'_>> = requests
            .iter()
            .zip(&ds.expected)
            .filter(|(r, want)| **want && r.resource_type == "document" && r.subject_relation.is_none())
            .map(|(r, _)| r)
            .collect();
        let mut objects: Vec<String> =
            mix.iter().flat_map(|r| [format!("user:{}", r.subject_id), format!("document:{}", r.resource_id)]).collect();
        objects.sort_unstable();
        objects.dedup();
        let updates = objects
            .iter()
            .map(|o| match o.starts_with("user:") {
                true => attrs(o, json!({"clearance": 4, "department": "eng"}), &["secret"]),
                false => attrs(o, json!({"classification": 3}), &["confidential"]),
            })
            .collect();
        cedar.write_attributes(updates).map_err(|e| anyhow!("{e}"))?;
        for r in &mix {
            if !allowed(&cedar, r)? {
                return Err(anyhow!("with Cedar: an allowed query is denied: {r:?}"));
            }
        }
        eprintln!("  Cedar mix: {} allowed document queries, {} objects with attributes", mix.len(), objects.len());
        let mut i = 0;
        group.bench_function(format!("label policy + 3 attributes, allowed document queries in turn ({})", mix.len()), |b| {
            b.iter(|| {
                i = (i + 1) % mix.len();
                black_box(cedar.check(black_box(mix[i])))
            })
        });
        group.bench_function(format!("graph alone, the same queries in turn ({})", mix.len()), |b| {
            b.iter(|| {
                i = (i + 1) % mix.len();
                black_box(engine.check(black_box(mix[i])))
            })
        });
        group.finish();
    }

    let mut group = c.benchmark_group(format!("gen {size}/bulk"));
    group.throughput(Throughput::Elements(100));
    let mut at = 0;
    group.bench_function("CheckBulk(100), queries.txt in turn", |b| {
        b.iter(|| {
            at = (at + 100) % (requests.len() - 100);
            black_box(engine.check_bulk(black_box(&requests[at..at + 100]), Consistency::MinimizeLatency))
        })
    });
    group.finish();

    // LookupResources for the user of the deepest allowed query.
    if let Some(deep) = shapes.iter().find(|s| s.name.starts_with("folder arrows")) {
        let lr = LookupResourcesRequest {
            context: None,
            resource_type: "document",
            permission: "view",
            subject_type: "user",
            subject_id: &deep.user,
            subject_relation: None,
            consistency: Consistency::MinimizeLatency,
            cursor: None,
            limit: None,
        };
        let found = engine.lookup_resources(&lr).map_err(|e| anyhow!("{e}"))?.ids().len();
        let mut group = c.benchmark_group(format!("gen {size}/lookup"));
        group.sample_size(10);
        group.bench_function(format!("LookupResources document#view, {found} results"), |b| {
            b.iter(|| black_box(engine.lookup_resources(black_box(&lr))))
        });
        group.finish();
    }

    let mut group = c.benchmark_group(format!("gen {size}/write"));
    let mut next = 0u64;
    group.bench_function("write 1 relationship", |b| {
        b.iter_batched(
            || {
                next += 1;
                let d = &ds.queries[next as usize % ds.queries.len()].resource;
                parse_relationship(&format!("document:{d}#viewer@user:writer{next}"))
                    .map(|relationship| vec![RelationshipUpdate { op: UpdateOp::Touch, relationship }])
                    .unwrap_or_default()
            },
            |u| black_box(engine.write(&u)),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group(format!("gen {size}/import"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(rels.len() as u64));
    let schema = ds.schema()?;
    group.bench_function("import the dataset into an empty engine (in memory)", |b| {
        b.iter_batched(
            || {
                let e = Engine::in_memory(EngineConfig::default());
                let _ = e.write_schema(&schema);
                (e, rels.clone())
            },
            |(e, rels)| black_box(e.import(rels)),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // Checks while writes are pending compaction: after the write bench's writes, every
    // 64th relationship written again (in import batches, with no compaction since), so
    // objects and subjects sit in the delta beside the flat indexes, as between the
    // server's compactions during an import or a burst of writes.
    for batch in rels.iter().step_by(64).cloned().collect::<Vec<_>>().chunks(5_000) {
        engine.import(batch.to_vec()).map_err(|e| anyhow!("{e}"))?;
    }
    let mut group = c.benchmark_group(format!("gen {size}/check, writes pending"));
    for s in shapes.iter().filter(|s| s.name.starts_with("direct relation") || s.name.starts_with("folder arrows")) {
        let q = s.request();
        if allowed(&engine, &q)? != s.expect {
            return Err(anyhow!("{}: the answer changed with writes pending", s.name));
        }
        group.bench_function(&s.name, |b| b.iter(|| black_box(engine.check(black_box(&q)))));
    }
    bench_mix(&mut group, &engine, &requests);
    group.finish();
    Ok(())
}

fn generated(c: &mut Criterion) {
    for n in sizes() {
        if let Err(e) = bench_size(c, n) {
            eprintln!("error: dataset of {n} relationships: {e:#}");
            std::process::exit(1);
        }
    }
}

criterion_group!(benches, generated);
criterion_main!(benches);
