//! The gRPC workload against a fake PermissionService on a free local port: requests of
//! each kind are made and counted, answers are compared with `expected.txt`, errors are
//! counted by status, and the preshared key is sent. No timing is asserted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arbiter_loadtest::args::{parse_mix, RequestKind};
use arbiter_loadtest::schedule::{drive, DriveConfig, SpinPacer};
use arbiter_loadtest::workload::{connect, parse_consistency, read_dataset, Workload};
use arbiter_proto::arbiter::v1 as pb;
use pb::permission_service_server::{PermissionService, PermissionServiceServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the fake was asked.
#[derive(Debug, Default)]
struct Counters {
    checks: AtomicU64,
    bulk_items: AtomicU64,
    lookups: AtomicU64,
}

/// Allows everything; counts what it is asked; wants `authorization: Bearer k`.
#[derive(Debug, Clone, Default)]
struct Fake(Arc<Counters>);

fn authorize<T>(r: &Request<T>) -> Result<(), Status> {
    match r
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some("Bearer k") => Ok(()),
        _ => Err(Status::unauthenticated("bad key")),
    }
}

#[tonic::async_trait]
impl PermissionService for Fake {
    async fn check(
        &self,
        r: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        authorize(&r)?;
        assert!(r.get_ref().consistency.is_some());
        self.0.checks.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::CheckResponse {
            decision: pb::Decision::Allowed as i32,
            revision: "r1".into(),
            explanation: Vec::new(),
            missing_context: Vec::new(),
        }))
    }

    async fn check_bulk(
        &self,
        r: Request<pb::CheckBulkRequest>,
    ) -> Result<Response<pb::CheckBulkResponse>, Status> {
        authorize(&r)?;
        let n = r.get_ref().items.len();
        self.0.bulk_items.fetch_add(n as u64, Ordering::Relaxed);
        Ok(Response::new(pb::CheckBulkResponse {
            revision: "r1".into(),
            results: (0..n)
                .map(|_| pb::CheckBulkResult {
                    result: Some(pb::check_bulk_result::Result::Decision(
                        pb::Decision::Allowed as i32,
                    )),
                    missing_context: Vec::new(),
                })
                .collect(),
        }))
    }

    async fn expand(
        &self,
        _: Request<pb::ExpandRequest>,
    ) -> Result<Response<pb::ExpandResponse>, Status> {
        Err(Status::unimplemented("expand"))
    }

    type LookupResourcesStream = Streamed<pb::LookupResourcesResponse>;

    async fn lookup_resources(
        &self,
        r: Request<pb::LookupResourcesRequest>,
    ) -> Result<Response<Self::LookupResourcesStream>, Status> {
        authorize(&r)?;
        assert_eq!(r.get_ref().limit, 100);
        assert_eq!(r.get_ref().resource_type, "document");
        self.0.lookups.fetch_add(1, Ordering::Relaxed);
        let items = (0..3).map(|i| {
            Ok(pb::LookupResourcesResponse {
                resource_id: format!("d{i}"),
                cursor: String::new(),
                revision: "r1".into(),
                missing_context: Vec::new(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(
            items.collect::<Vec<_>>(),
        ))))
    }

    type LookupSubjectsStream = Streamed<pb::LookupSubjectsResponse>;

    async fn lookup_subjects(
        &self,
        _: Request<pb::LookupSubjectsRequest>,
    ) -> Result<Response<Self::LookupSubjectsStream>, Status> {
        Err(Status::unimplemented("lookup_subjects"))
    }
}

async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(PermissionServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

fn dataset() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("queries.txt"),
        "document:d1#view@user:u1\ndocument:d2#view@user:u2\n",
    )
    .unwrap();
    // The fake allows everything, so the second answer is always wrong.
    std::fs::write(dir.path().join("expected.txt"), "true\nfalse\n").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_request_is_made_counted_and_checked() {
    let fake = Fake::default();
    let endpoint = serve(fake.clone()).await;
    let dir = dataset();
    let clients = connect(&endpoint, Some("k"), 2).await.unwrap();
    let mix = parse_mix("check=2,bulk=1,lookup=1,write=1").unwrap();
    let mut w = Workload::new(
        read_dataset(dir.path()).unwrap(),
        clients,
        mix,
        parse_consistency("fully_consistent").unwrap(),
    );
    w.bulk_size = 4;
    w.preflight().await.unwrap();
    let config = DriveConfig {
        rate: 200.0,
        duration: Duration::from_millis(500),
        max_in_flight: 1000,
        timeout: Duration::from_secs(30),
        lag_threshold: Duration::from_millis(1),
        progress: false,
        stop: None,
    };
    let workload = w.clone();
    let rec = drive(&config, &mut SpinPacer::default(), move |i| {
        workload.request(i)
    })
    .await
    .unwrap();
    assert_eq!(rec.completed, 100);
    let count = |k: RequestKind| (0..100).filter(|&i| mix.kind_of(i) == k).count() as u64;
    let requests = |k: RequestKind| rec.by_kind.get(&k).map_or(0, |s| s.latency.len());
    for k in RequestKind::ALL {
        assert_eq!(requests(k), count(k), "{k:?}");
    }
    // The preflight check is one more.
    assert_eq!(
        fake.0.checks.load(Ordering::Relaxed),
        count(RequestKind::Check) + 1
    );
    assert_eq!(
        fake.0.bulk_items.load(Ordering::Relaxed),
        4 * count(RequestKind::Bulk)
    );
    assert_eq!(
        fake.0.lookups.load(Ordering::Relaxed),
        count(RequestKind::Lookup)
    );
    // Writes go to a service the fake does not serve.
    assert_eq!(
        rec.errors_by_status.get("UNIMPLEMENTED"),
        Some(&count(RequestKind::Write))
    );
    assert_eq!(rec.errors(), count(RequestKind::Write));
    // Check i asks query i mod 2; a bulk of 4 has two of each.
    let odd_checks = (0..100)
        .filter(|&i| mix.kind_of(i) == RequestKind::Check && i % 2 == 1)
        .count() as u64;
    assert_eq!(
        rec.checked_answers,
        count(RequestKind::Check) + 4 * count(RequestKind::Bulk)
    );
    assert_eq!(rec.wrong_answers, odd_checks + 2 * count(RequestKind::Bulk));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_check_stops_the_run() {
    let fake = Fake::default();
    let endpoint = serve(fake).await;
    let dir = dataset();
    let clients = connect(&endpoint, Some("wrong"), 1).await.unwrap();
    let w = Workload::new(
        read_dataset(dir.path()).unwrap(),
        clients,
        parse_mix("check=1").unwrap(),
        parse_consistency("minimize_latency").unwrap(),
    );
    let e = w.preflight().await.unwrap_err();
    assert!(e.to_string().contains("UNAUTHENTICATED"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    // Port 1 on loopback: nothing listens there.
    let e = connect("http://127.0.0.1:1", None, 1).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot connect to http://127.0.0.1:1"),
        "{e}"
    );
    let e = connect("not a url", None, 1).await.unwrap_err();
    assert!(e.to_string().contains("invalid endpoint"), "{e}");
}

/// Not a test but a probe: how fast the generator goes against the in-process fake
/// (`cargo test --release -p arbiter-loadtest --test fake_server -- --ignored
/// --nocapture`). The fake shares the process and the cores, so this understates what
/// the generator alone can send.
#[ignore]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_capacity() {
    let fake = Fake::default();
    let endpoint = serve(fake.clone()).await;
    let dir = dataset();
    for rate in [5_000.0, 10_000.0, 20_000.0, 40_000.0] {
        let clients = connect(&endpoint, Some("k"), 4).await.unwrap();
        let w = Workload::new(
            read_dataset(dir.path()).unwrap(),
            clients,
            parse_mix("check=1").unwrap(),
            parse_consistency("minimize_latency").unwrap(),
        );
        let config = DriveConfig {
            rate,
            duration: Duration::from_secs(3),
            max_in_flight: 10_000,
            timeout: Duration::from_secs(30),
            lag_threshold: Duration::from_millis(1),
            progress: false,
            stop: None,
        };
        let rec = tokio::spawn(async move {
            drive(&config, &mut SpinPacer::default(), move |i| w.request(i)).await
        })
        .await
        .unwrap()
        .unwrap();
        let r = arbiter_loadtest::report::RunReport::new(
            &rec,
            rate,
            Duration::from_secs(3),
            100,
            serde_json::Map::new(),
        );
        println!("{}", r.text());
    }
}
