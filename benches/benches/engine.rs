//! In-process engine benchmarks: Check shapes, LookupResources, writes.
//! Run with `cargo bench -p arbiter-benches --bench engine`.

use std::hint::black_box;

use arbiter_benches::{viewer_updates, Org};
use arbiter_engine::{CheckRequest, Consistency, Decision, Engine, LookupResourcesRequest};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn req<'a>(resource: &'a str, permission: &'a str, subject: &'a str) -> CheckRequest<'a> {
    let (rt, rid) = resource.split_once(':').unwrap_or((resource, ""));
    let (st, sid) = subject.split_once(':').unwrap_or((subject, ""));
    CheckRequest {
        resource_type: rt,
        resource_id: rid,
        permission,
        subject_type: st,
        subject_id: sid,
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        context: None,
    }
}

fn bench_check(
    c: &mut Criterion,
    engine: &Engine,
    name: &str,
    q: CheckRequest<'_>,
    expect: Decision,
) {
    let got = engine.check(&q).map(|r| r.decision);
    assert_eq!(got, Ok(expect), "{name}: the benchmark's premise is wrong");
    c.bench_function(name, |b| b.iter(|| black_box(engine.check(black_box(&q)))));
}

fn checks(c: &mut Criterion) {
    let org = match Org::build(10_000, 100) {
        Ok(o) => o,
        Err(e) => return eprintln!("cannot build the org: {e}"),
    };
    let e = &org.engine;
    use Decision::{Allowed, Denied};
    bench_check(
        c,
        e,
        "check/direct relation",
        req("doc:d42", "viewer", "user:u297"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/direct via permission",
        req("doc:d42", "view", "user:u297"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/nested teams 6 deep",
        req("folder:f3_0", "view", "user:member3"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/folder arrows 8 deep + teams 6 deep, allowed",
        req("doc:d42", "view", "user:member2"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/folder arrows 8 deep + teams 6 deep, denied",
        req("doc:d42", "view", "user:nobody"),
        Denied,
    );
    bench_check(
        c,
        e,
        "check/exclusion, banned",
        req("doc:d0", "view", "user:u0"),
        Denied,
    );
    bench_check(
        c,
        e,
        "check/exclusion, not banned",
        req("doc:d1", "view", "user:u1"),
        Allowed,
    );
    bench_check(
        c,
        e,
        "check/wildcard",
        req("doc:public", "view", "user:anyone"),
        Allowed,
    );

    let lr = LookupResourcesRequest {
        resource_type: "doc",
        permission: "view",
        subject_type: "user",
        subject_id: "reader",
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        cursor: None,
        limit: None,
    };
    let n = e.lookup_resources(&lr).map(|p| p.resource_ids.len());
    assert_eq!(
        n,
        Ok(10_001),
        "lookup premise: every document plus the public one"
    );
    let mut group = c.benchmark_group("lookup");
    group.sample_size(20);
    group.bench_function("lookup_resources 10k documents (10001 results)", |b| {
        b.iter(|| black_box(e.lookup_resources(&lr)))
    });
    group.finish();
}

fn writes(c: &mut Criterion) {
    let org = match Org::build(10_000, 100) {
        Ok(o) => o,
        Err(e) => return eprintln!("cannot build the org: {e}"),
    };
    let e = &org.engine;
    let mut next = 0usize;
    let mut group = c.benchmark_group("write");
    group.bench_function("write 1 relationship", |b| {
        b.iter_batched(
            || {
                next += 1;
                viewer_updates(next, 1).unwrap_or_default()
            },
            |u| black_box(e.write(&u)),
            BatchSize::SmallInput,
        )
    });
    group.sample_size(20);
    group.bench_function("write 1000 relationships", |b| {
        b.iter_batched(
            || {
                next += 1000;
                viewer_updates(1_000_000 + next, 1000).unwrap_or_default()
            },
            |u| black_box(e.write(&u)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, checks, writes);
criterion_main!(benches);
