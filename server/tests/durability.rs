//! Durability and consistency of `arbiter serve` on its embedded store, through the real
//! binary (DESIGN §3, §5, §6): no acknowledged write is lost to `kill -9` and no write is
//! ever half visible, concurrent writes are seen whole by CheckBulk, `at_least_as_fresh`
//! sees the write it names, SIGTERM exits 0 keeping the data, and `arbiter backup` makes
//! a store a second server can start from.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arbiter_proto::arbiter::v1 as pb;
use common::{
    at_exact, at_least, check_req, delete, minimize_latency, read_all, touch, Clients, Server, BIN,
    DOC_SCHEMA,
};
use tokio::sync::watch;

/// Relationships per batch in the kill tests.
const BATCH: usize = 20;

/// The relationships of batch `b`: `doc:b{b}_{i}#viewer@user:u{i}`.
fn batch(b: usize) -> Vec<pb::RelationshipUpdate> {
    (0..BATCH)
        .map(|i| touch(&format!("doc:b{b}_{i}#viewer@user:u{i}")))
        .collect()
}

async fn write_schema(c: &mut Clients) -> String {
    c.schema
        .write_schema(pb::WriteSchemaRequest {
            schema: DOC_SCHEMA.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .revision
}

async fn write(
    c: &mut Clients,
    updates: Vec<pb::RelationshipUpdate>,
) -> Result<String, tonic::Status> {
    c.relationships
        .write_relationships(pb::WriteRelationshipsRequest {
            updates,
            preconditions: Vec::new(),
        })
        .await
        .map(|r| r.into_inner().revision)
}

async fn check(c: &mut Clients, text: &str, consistency: Option<pb::Consistency>) -> pb::Decision {
    let resp = c
        .permissions
        .check(check_req(text, consistency))
        .await
        .unwrap_or_else(|s| panic!("check {text}: {s}"));
    pb::Decision::try_from(resp.into_inner().decision).unwrap()
}

/// Batch number -> how many of its relationships the server holds.
fn batches_present(rels: &[String]) -> BTreeMap<usize, usize> {
    let mut out = BTreeMap::new();
    for r in rels {
        let b = r
            .strip_prefix("doc:b")
            .and_then(|s| s.split_once('_'))
            .and_then(|(n, _)| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("unexpected relationship `{r}`"));
        *out.entry(b).or_insert(0) += 1;
    }
    out
}

/// What a sequential writer saw: the batches acknowledged (with their tokens), and
/// the batch whose write failed (it may or may not have been committed).
struct Written {
    acked: Vec<(usize, String)>,
    failed: usize,
    error: String,
}

/// Writes batches `first`, `first + 1`, ... one after another until a write fails,
/// publishing each acknowledged batch on `acks`.
async fn sequential_writer(
    mut c: Clients,
    first: usize,
    acks: watch::Sender<Vec<(usize, String)>>,
) -> Written {
    for b in first..first + 100_000 {
        match write(&mut c, batch(b)).await {
            Ok(token) => acks.send_modify(|v| v.push((b, token))),
            Err(s) => {
                let acked = acks.borrow().clone();
                return Written {
                    acked,
                    failed: b,
                    error: s.to_string(),
                };
            }
        }
    }
    panic!("the writer never saw the server go away");
}

/// Checks a restarted server against what the writers saw: every batch in `must` is
/// complete, every batch present is complete and is in `must` or `may`. Returns the
/// batches present.
async fn verify_batches(
    server: &Server,
    must: &BTreeSet<usize>,
    may: &BTreeSet<usize>,
    what: &str,
) -> BTreeSet<usize> {
    let mut c = server.clients().await;
    let present = batches_present(&read_all(&mut c).await);
    for b in must {
        let n = present.get(b).copied().unwrap_or(0);
        assert_eq!(
            n, BATCH,
            "{what}: acknowledged batch {b} has {n} of its {BATCH} relationships after the restart"
        );
    }
    for (b, n) in &present {
        assert_eq!(
            *n, BATCH,
            "{what}: batch {b} is partly visible after the restart ({n} of {BATCH} relationships)"
        );
        assert!(
            must.contains(b) || may.contains(b),
            "{what}: batch {b} is present but was never sent"
        );
    }
    present.keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_write_and_never_shows_half_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    write_schema(&mut server.clients().await).await;
    // Batches known to be committed (acknowledged, or found whole after a restart).
    let mut committed = BTreeSet::new();
    let mut next = 0;
    for k in [1, 7, 25] {
        let what = format!("kill after {k} acknowledged batches");
        let (tx, mut rx) = watch::channel(Vec::new());
        let writer = tokio::spawn(sequential_writer(server.clients().await, next, tx));
        rx.wait_for(|acked| acked.len() >= k).await.unwrap();
        // The writer sends its next batch as soon as one is acknowledged: this kill
        // most likely lands while a write is in flight.
        tokio::task::spawn_blocking(move || server.kill9())
            .await
            .unwrap();
        let written = tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("the writer hung")
            .unwrap();
        assert!(
            written.acked.len() >= k,
            "{what}: only {} acknowledged",
            written.acked.len()
        );
        let mut must = committed.clone();
        must.extend(written.acked.iter().map(|(b, _)| *b));
        let may = BTreeSet::from([written.failed]);

        server = Server::start(dir.path(), &[]);
        committed = verify_batches(&server, &must, &may, &what).await;
        eprintln!(
            "{what}: {} acknowledged; batch {} was in flight ({}) and is {} after the restart",
            written.acked.len(),
            written.failed,
            written.error,
            if committed.contains(&written.failed) {
                "present"
            } else {
                "absent"
            }
        );
        next = written.failed + 1;

        // The revision survived too: the last token handed out still reads its write.
        let (last, token) = written.acked.last().unwrap();
        let mut c = server.clients().await;
        assert_eq!(
            check(
                &mut c,
                &format!("doc:b{last}_0#viewer@user:u0"),
                at_least(token)
            )
            .await,
            pb::Decision::Allowed,
            "{what}: at_least_as_fresh({token}) after the restart (the failed write was: {})",
            written.error
        );
        // And the restarted store takes new writes whose tokens are newer.
        let t = write(&mut c, vec![touch("doc:after_restart#viewer@user:x")])
            .await
            .unwrap();
        assert_eq!(
            check(&mut c, "doc:after_restart#viewer@user:x", at_least(&t)).await,
            pb::Decision::Allowed
        );
        write(&mut c, vec![delete("doc:after_restart#viewer@user:x")])
            .await
            .unwrap();
    }
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM after the kill rounds: {status:?}"
    );
}

fn pair(n: usize) -> [String; 2] {
    [
        format!("doc:p{n}#viewer@user:a"),
        format!("doc:p{n}#owner@user:a"),
    ]
}

fn bulk_item(text: &str) -> pb::CheckBulkItem {
    let r = check_req(text, None);
    pb::CheckBulkItem {
        resource: r.resource,
        permission: r.permission,
        subject: r.subject,
        context: None,
    }
}

fn decisions(resp: &pb::CheckBulkResponse, items: &[String]) -> Vec<pb::Decision> {
    assert_eq!(resp.results.len(), items.len(), "one result per item");
    resp.results
        .iter()
        .zip(items)
        .map(|(r, item)| match &r.result {
            Some(pb::check_bulk_result::Result::Decision(d)) => pb::Decision::try_from(*d).unwrap(),
            other => panic!("CheckBulk item `{item}` failed: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_seen_whole_and_tokens_see_their_write() {
    const WRITERS: usize = 3;
    const PAIRS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    write_schema(&mut server.clients().await).await;

    let ids: Vec<usize> = (0..WRITERS)
        .flat_map(|w| (0..PAIRS).map(move |j| w * 1000 + j))
        .collect();
    let items: Arc<Vec<String>> = Arc::new(ids.iter().flat_map(|n| pair(*n)).collect());
    let done = Arc::new(AtomicBool::new(false));

    let mut readers = Vec::new();
    for r in 0..2 {
        let mut c = server.clients().await;
        let items = items.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let bulk: Vec<pb::CheckBulkItem> = items.iter().map(|t| bulk_item(t)).collect();
            let mut rounds = 0usize;
            let mut partial_pairs_seen = 0usize;
            loop {
                let finished = done.load(Ordering::Acquire);
                let consistency = if (rounds + r).is_multiple_of(2) {
                    minimize_latency()
                } else {
                    Some(pb::Consistency {
                        requirement: Some(pb::consistency::Requirement::FullyConsistent(true)),
                    })
                };
                let resp = c
                    .permissions
                    .check_bulk(pb::CheckBulkRequest {
                        consistency,
                        items: bulk.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let d = decisions(&resp, &items);
                for (i, both) in d.chunks(2).enumerate() {
                    if both[0] != both[1] {
                        partial_pairs_seen += 1;
                        eprintln!(
                            "CheckBulk at {} saw half a write: `{}` is {:?} but `{}` is {:?}",
                            resp.revision,
                            items[2 * i],
                            both[0],
                            items[2 * i + 1],
                            both[1]
                        );
                    }
                }
                // The same revision, asked for exactly, answers the same.
                if rounds.is_multiple_of(4) {
                    let again = c
                        .permissions
                        .check_bulk(pb::CheckBulkRequest {
                            consistency: at_exact(&resp.revision),
                            items: bulk.clone(),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(
                        again.revision, resp.revision,
                        "at_exact_snapshot answered at another revision"
                    );
                    assert_eq!(
                        decisions(&again, &items),
                        d,
                        "at_exact_snapshot({}) answered differently",
                        resp.revision
                    );
                }
                rounds += 1;
                if finished {
                    return (rounds, partial_pairs_seen);
                }
            }
        }));
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = server.clients().await;
        writers.push(tokio::spawn(async move {
            for j in 0..PAIRS {
                let n = w * 1000 + j;
                let [viewer, owner] = pair(n);
                let token = write(&mut c, vec![touch(&viewer), touch(&owner)])
                    .await
                    .unwrap();
                for text in [&viewer, &owner] {
                    assert_eq!(
                        check(&mut c, text, at_least(&token)).await,
                        pb::Decision::Allowed,
                        "at_least_as_fresh({token}) does not see `{text}`, written at that token"
                    );
                }
                if j % 3 == 2 {
                    let [viewer, owner] = pair(n - 1);
                    let token = write(&mut c, vec![delete(&viewer), delete(&owner)])
                        .await
                        .unwrap();
                    for text in [&viewer, &owner] {
                        assert_eq!(
                            check(&mut c, text, at_least(&token)).await,
                            pb::Decision::Denied,
                            "at_least_as_fresh({token}) still sees `{text}`, deleted at that token"
                        );
                    }
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::Release);
    let mut partial = 0;
    for r in readers {
        let (rounds, p) = r.await.unwrap();
        assert!(rounds >= 2, "a reader ran only {rounds} CheckBulk rounds");
        partial += p;
    }
    assert_eq!(
        partial, 0,
        "CheckBulk saw {partial} half-applied pair writes (see stderr)"
    );

    // The final state: every pair but the deleted ones, both halves.
    let mut c = server.clients().await;
    let mut expected = Vec::new();
    for w in 0..WRITERS {
        for j in 0..PAIRS {
            let deleted = j % 3 == 1 && j + 1 < PAIRS;
            if !deleted {
                expected.extend(pair(w * 1000 + j));
            }
        }
    }
    expected.sort();
    assert_eq!(read_all(&mut c).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_exits_zero_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    write_schema(&mut server.clients().await).await;
    let (tx, mut rx) = watch::channel(Vec::new());
    let writer = tokio::spawn(sequential_writer(server.clients().await, 0, tx));
    rx.wait_for(|acked| acked.len() >= 5).await.unwrap();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM while writes are flowing: {status:?}"
    );
    let written = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the writer hung")
        .unwrap();

    let server = Server::start(dir.path(), &[]);
    let must: BTreeSet<usize> = written.acked.iter().map(|(b, _)| *b).collect();
    verify_batches(
        &server,
        &must,
        &BTreeSet::from([written.failed]),
        "after SIGTERM",
    )
    .await;
    let mut c = server.clients().await;
    let schema = c
        .schema
        .read_schema(pb::ReadSchemaRequest {})
        .await
        .unwrap()
        .into_inner()
        .schema;
    assert_eq!(schema, DOC_SCHEMA, "the schema after a graceful restart");

    // A second clean stop and start: still all there.
    let before = read_all(&mut c).await;
    drop(c);
    let status = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM of an idle server: {status:?}"
    );
    let server = Server::start(dir.path(), &[]);
    assert_eq!(read_all(&mut server.clients().await).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_zero_while_a_watch_stream_is_open() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.clients().await;
    write_schema(&mut c).await;
    let mut stream = c
        .relationships
        .watch(pb::WatchRequest {
            after_revision: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    write(&mut c, vec![touch("doc:1#viewer@user:alice")])
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no change within 10 s");
    assert!(matches!(first, Some(Ok(_))), "the watch stream: {first:?}");

    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM with a watcher connected: {status:?}"
    );
    // The stream ends (cleanly or with an error) rather than hanging.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(
        end.is_ok(),
        "the watch stream did not end after the server exited"
    );
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        read_all(&mut server.clients().await).await,
        vec!["doc:1#viewer@user:alice".to_string()]
    );
}

fn backup(data: &Path, out: &Path) -> (i32, String, String) {
    let o = Command::new(BIN)
        .arg("backup")
        .arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_of_a_running_and_of_a_stopped_server_starts_a_second_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut c = server.clients().await;
    write_schema(&mut c).await;
    let mut token = String::new();
    for b in 0..3 {
        token = write(&mut c, batch(b)).await.unwrap();
    }
    let at_backup = read_all(&mut c).await;
    assert_eq!(at_backup.len(), 3 * BATCH);

    // Online: the first server keeps the store open (and keeps running).
    let online = dir.path().join("online");
    let (code, out, err) = backup(&data, &online);
    assert_eq!(
        code, 0,
        "backup of a running server: stdout {out} stderr {err}"
    );
    assert!(
        out.contains("backed up"),
        "backup prints what it did: {out}"
    );
    write(&mut c, batch(3)).await.unwrap();

    let second = Server::start(&online, &[]);
    let mut c2 = second.clients().await;
    assert_eq!(
        read_all(&mut c2).await,
        at_backup,
        "the online backup holds the data at the time of the backup"
    );
    assert_eq!(
        check(&mut c2, "doc:b2_0#view@user:u0", at_least(&token)).await,
        pb::Decision::Allowed
    );
    assert_eq!(
        c2.schema
            .read_schema(pb::ReadSchemaRequest {})
            .await
            .unwrap()
            .into_inner()
            .schema,
        DOC_SCHEMA
    );
    // The copy is independent of the original.
    write(&mut c2, vec![touch("doc:only_in_copy#viewer@user:x")])
        .await
        .unwrap();
    assert_eq!(
        check(&mut c, "doc:only_in_copy#viewer@user:x", minimize_latency()).await,
        pb::Decision::Denied
    );
    assert_eq!(
        read_all(&mut c).await.len(),
        4 * BATCH,
        "the first server still runs and has its own data"
    );
    drop(c2);
    assert_eq!(second.terminate().code(), Some(0));

    // Offline: a stopped server's data dir.
    drop(c);
    assert_eq!(server.terminate().code(), Some(0));
    let offline = dir.path().join("offline");
    let (code, out, err) = backup(&data, &offline);
    assert_eq!(
        code, 0,
        "backup of a stopped server: stdout {out} stderr {err}"
    );
    let third = Server::start(&offline, &[]);
    let rels = read_all(&mut third.clients().await).await;
    assert_eq!(rels.len(), 4 * BATCH);
    assert!(rels.contains(&"doc:b3_19#viewer@user:u19".to_string()));
    drop(third);

    // Into a non-empty directory: refused, naming it, and nothing there is touched.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let (code, out, err) = backup(&data, &busy);
    assert_eq!(
        code, 2,
        "backup into a non-empty dir: stdout {out} stderr {err}"
    );
    assert!(
        err.contains(&busy.display().to_string()),
        "the message names the dir: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(busy.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // An empty directory is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, out, err) = backup(&data, &empty);
    assert_eq!(
        code, 0,
        "backup into an empty dir: stdout {out} stderr {err}"
    );

    // A directory that holds no store: refused, naming it.
    let nothing = dir.path().join("nothing");
    std::fs::create_dir(&nothing).unwrap();
    let (code, out, err) = backup(&nothing, &dir.path().join("from_nothing"));
    assert_eq!(
        code, 2,
        "backup of a dir without a store: stdout {out} stderr {err}"
    );
    assert!(
        err.contains(&nothing.display().to_string()),
        "the message names the dir: {err}"
    );

    // The original store still starts after being backed up twice.
    let again = Server::start(&data, &[]);
    assert_eq!(read_all(&mut again.clients().await).await.len(), 4 * BATCH);
}
