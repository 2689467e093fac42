//! Big batches do not stall the server: CheckBulk batches of 100,000 checks run off the
//! async workers, so a small Check sent while several are being evaluated is answered
//! before the first of them finishes (when they ran on the workers, every worker was
//! busy until a batch ended, and the small Check waited for it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use arbiter_proto::arbiter::v1 as pb;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_check_is_answered_while_big_batches_are_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo", "--max-bulk-checks", "100000", "--max-message-size", "67108864"]);
    let item = pb::CheckBulkItem {
        resource: Some(obj("note:groceries")),
        permission: "edit".into(),
        subject: Some(subj("user:bob")),
        context: None,
    };
    let batch = pb::CheckBulkRequest { consistency: None, items: vec![item; 100_000] };
    let mut batches = Vec::new();
    for _ in 0..6 {
        let mut c = server.clients().await;
        let batch = batch.clone();
        batches.push(tokio::spawn(async move {
            let resp = c.permissions.check_bulk(batch).await.unwrap().into_inner();
            assert_eq!(resp.results.len(), 100_000);
            Instant::now()
        }));
    }
    // Let the batches arrive and start, then probe.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut probe = server.clients().await;
    let allowed = probe.permissions.check(check_req("note:groceries#edit@user:bob", None)).await.unwrap().into_inner();
    let answered = Instant::now();
    assert_eq!(allowed.decision, pb::Decision::Allowed as i32);
    let mut first_batch_done = None;
    for b in batches {
        let done = b.await.unwrap();
        first_batch_done = Some(first_batch_done.map_or(done, |f: Instant| f.min(done)));
    }
    let first = first_batch_done.unwrap();
    assert!(answered < first, "the small Check waited for a big batch ({:?} after the first batch finished)", answered - first);
}
