//! A page of a lookup or a read costs memory for its page, not for the whole result:
//! the heap's peak during one call, measured by dhat, for a page of 100 against the
//! whole result of 100,000. (Allocation counts, not time: the figures are the same on
//! every run.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

use arbiter_engine::*;
use arbiter_schema::parse_relationship;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const SCHEMA: &str = r#"
definition user {}

definition group {
    relation member: user
}

definition doc {
    relation viewer: user | group#member
    permission view = viewer
}
"#;

const DOCS: usize = 100_000;

/// The most the heap held above where it stood when `f` started.
fn peak_of<T>(f: impl FnOnce() -> T) -> u64 {
    let profiler = dhat::Profiler::builder().testing().build();
    let out = f();
    let peak = dhat::HeapStats::get().max_bytes as u64;
    drop(out);
    drop(profiler);
    peak
}

/// An engine with `DOCS` documents that alice may view (half of them through a group),
/// their ids `pad` bytes longer than a UUID's.
fn engine(pad: usize) -> Engine {
    let engine = Engine::in_memory(EngineConfig::default());
    engine.write_schema(SCHEMA).unwrap();
    let padding = "x".repeat(pad);
    let rels = (0..DOCS)
        .map(|i| {
            let subject = if i % 2 == 0 { "user:alice" } else { "group:staff#member" };
            parse_relationship(&format!("doc:document-{i:08}-0000-0000-000000000000{padding}#viewer@{subject}")).unwrap()
        })
        .chain([parse_relationship("group:staff#member@user:alice").unwrap()])
        .collect();
    engine.import(rels).unwrap();
    engine
}

/// The heap's peak during a lookup of alice's documents with this limit.
fn lookup_peak(engine: &Engine, limit: Option<usize>) -> u64 {
    let req = LookupResourcesRequest {
        context: None,
        resource_type: "doc",
        permission: "view",
        subject_type: "user",
        subject_id: "alice",
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        cursor: None,
        limit,
    };
    peak_of(|| {
        let page = engine.lookup_resources(&req).unwrap();
        assert_eq!(page.ids().len(), limit.unwrap_or(DOCS));
        page
    })
}

/// The heap's peak during a read of every document relationship with this limit.
fn read_peak(engine: &Engine, limit: Option<usize>) -> u64 {
    let filter = RelationshipFilter::parse("doc").unwrap();
    peak_of(|| {
        let page = engine.read_relationships(&filter, Consistency::MinimizeLatency, None, limit).unwrap();
        assert_eq!(page.relationships.len(), limit.unwrap_or(DOCS));
        page
    })
}

/// One test (dhat counts the whole process, so nothing else may run beside it).
#[test]
fn pages_cost_their_page() {
    a_lookup_page_costs_the_walk_not_the_results_it_does_not_return();
    a_read_page_costs_its_page();
}

/// A lookup's page costs the walk (a symbol per candidate), never the strings of the
/// results it does not return: with ids ten times longer its peak stays where it was,
/// while the whole result's grows with the ids.
fn a_lookup_page_costs_the_walk_not_the_results_it_does_not_return() {
    let (short, long) = (engine(0), engine(400));
    let (page_short, whole_short) = (lookup_peak(&short, Some(100)), lookup_peak(&short, None));
    let (page_long, whole_long) = (lookup_peak(&long, Some(100)), lookup_peak(&long, None));
    assert!(
        whole_long > whole_short * 3,
        "the whole result should grow with its ids: {whole_short} -> {whole_long} bytes"
    );
    assert!(
        page_long * 10 < page_short * 11,
        "a page of 100 peaked at {page_short} bytes with short ids and {page_long} with long ones: it should not grow with the results it does not return (the whole result: {whole_short} -> {whole_long})"
    );
    assert!(page_short < whole_short, "{page_short} vs {whole_short}");
}

/// A read's page keeps only its page while it scans.
fn a_read_page_costs_its_page() {
    let engine = engine(0);
    let (page, whole) = (read_peak(&engine, Some(100)), read_peak(&engine, None));
    assert!(
        page * 20 < whole,
        "a read page of 100 peaked at {page} bytes, the whole read of {DOCS} at {whole}: the page should cost a small fraction"
    );
}
