//! The RocksDB store against the shared store suite, plus what only a durable store has:
//! reopening from disk, checkpoints and the changelog.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

use std::path::PathBuf;

use arbiter_engine::{
    store_suite, ChangesAfter, CheckRequest, Consistency, Decision, Engine, EngineConfig,
    RelationshipStore, RelationshipUpdate, UpdateOp,
};
use arbiter_rocksdb_store::{RocksStore, StoreOptions};
use arbiter_schema::parse_relationship;

#[test]
fn passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    let factory = move |name: &str| -> Result<Box<dyn RelationshipStore>, String> {
        let store = RocksStore::open(&root.join(name), StoreOptions::default()).map_err(|e| e.0)?;
        Ok(Box::new(store))
    };
    let mut failures = store_suite::run(&factory);
    failures.extend(store_suite::run_policy_model(&factory));
    failures.extend(store_suite::run_caveats(&factory));
    assert!(failures.is_empty(), "{failures:#?}");
}

fn check(engine: &Engine, doc: &str, user: &str) -> bool {
    engine
        .check(&CheckRequest {
            resource_type: "doc",
            resource_id: doc,
            permission: "view",
            subject_type: "user",
            subject_id: user,
            subject_relation: None,
            consistency: Consistency::MinimizeLatency,
            context: None,
            ..Default::default()
        })
        .unwrap()
        .decision
        == Decision::Allowed
}

const SCHEMA: &str =
    "definition user {}\ndefinition doc {\n relation viewer: user\n permission view = viewer\n}";

fn touch(s: &str) -> RelationshipUpdate {
    RelationshipUpdate {
        op: UpdateOp::Touch,
        relationship: parse_relationship(s).unwrap(),
    }
}

#[test]
fn an_engine_restarts_from_disk_and_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backup = dir.path().join("backup");
    {
        let store = RocksStore::open(&data, StoreOptions::default()).unwrap();
        let engine = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
        engine.write_schema(SCHEMA).unwrap();
        engine
            .write(&[touch("doc:1#viewer@user:a"), touch("doc:2#viewer@user:b")])
            .unwrap();
        engine
            .write(&[RelationshipUpdate {
                op: UpdateOp::Delete,
                relationship: parse_relationship("doc:2#viewer@user:b").unwrap(),
            }])
            .unwrap();
        assert_eq!(engine.revision(), 3);
    }
    {
        let store = RocksStore::open(&data, StoreOptions::default()).unwrap();
        store.checkpoint(&backup).unwrap();
        let ChangesAfter::Commits(log) = store.changes_after(1, 100).unwrap() else {
            panic!("changelog too old")
        };
        assert_eq!(
            log.iter().map(|c| c.revision).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(log[0].changes.len(), 2);
        assert_eq!(store.oldest_logged().unwrap(), Some(1));
        let engine = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
        assert_eq!(engine.revision(), 3);
        assert!(check(&engine, "1", "a"));
        assert!(!check(&engine, "2", "b"));
    }
    let store = RocksStore::open(&backup, StoreOptions::default()).unwrap();
    let engine = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
    assert_eq!(engine.revision(), 3);
    assert!(check(&engine, "1", "a"));
}

#[test]
fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["meta"]).unwrap();
        db.put_cf(
            db.cf_handle("meta").unwrap(),
            b"format",
            b"something-else-9",
        )
        .unwrap();
    }
    let e = RocksStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        e.0.contains("unknown store format `something-else-9`"),
        "{e}"
    );
}

#[test]
fn a_format_1_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What format 1 wrote: a reverse-order copy of every relationship beside the
        // forward one.
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ["relationships", "relationships_by_subject", "changelog", "meta"];
        let db = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"format", b"arbiter-rocksdb-1").unwrap();
        db.put_cf(meta, b"revision", 7u64.to_be_bytes()).unwrap();
        db.put_cf(meta, b"schema", b"definition user {}\ndefinition doc { relation viewer: user\npermission view = viewer }")
            .unwrap();
        db.put_cf(db.cf_handle("relationships").unwrap(), b"doc\x001\x00viewer\x00user\x00a\x00", [1u8]).unwrap();
        db.put_cf(db.cf_handle("relationships_by_subject").unwrap(), b"user\x00a\x00\x00doc\x001\x00viewer", [])
            .unwrap();
    }
    let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    let engine = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
    assert_eq!(engine.revision(), 7);
    assert!(check(&engine, "1", "a"));
    engine.write(&[touch("doc:2#viewer@user:b")]).unwrap();
    drop(engine);
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(!cfs.iter().any(|c| c == "relationships_by_subject"), "{cfs:?}");
    // And it reopens as format 2 with both relationships.
    let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    let engine = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
    assert!(check(&engine, "1", "a") && check(&engine, "2", "b"));
}

#[test]
fn an_invalid_stored_relationship_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
        let engine = Engine::open(Box::new(store), EngineConfig::default()).unwrap();
        engine.write_schema("definition user {}\ndefinition doc { relation viewer: user\npermission view = viewer }").unwrap();
        engine.write(&[touch("doc:1#viewer@user:a")]).unwrap();
    }
    {
        // Corrupt it behind the store's back: a relation the schema does not have.
        let opts = rocksdb::Options::default();
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["relationships", "changelog", "meta", "attributes"]).unwrap();
        db.put_cf(db.cf_handle("relationships").unwrap(), b"doc\x002\x00owner\x00user\x00a\x00", [1u8]).unwrap();
    }
    let store = RocksStore::open(dir.path(), StoreOptions::default()).unwrap();
    let e = Engine::open(Box::new(store), EngineConfig::default()).unwrap_err();
    assert!(e.to_string().contains("owner"), "{e}");
}

/// One process at a time has a store open; `backup` tells a store in use (copied through
/// a secondary instance) from one that is not (a checkpoint) by asking for that claim,
/// not by reading error text: a store that fails to open for another reason, even in a
/// directory whose name contains "lock", is an error, not an online copy.
#[test]
fn a_store_is_open_in_one_process_and_backup_asks_that_directly() {
    use arbiter_rocksdb_store::BackupKind;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = RocksStore::open(&data, StoreOptions::default()).unwrap();
    let again = RocksStore::open(&data, StoreOptions::default()).err().unwrap();
    assert!(again.0.contains("in use by another process"), "{}", again.0);
    assert!(matches!(RocksStore::backup(&data, &dir.path().join("online")), Ok(BackupKind::OnlineCopy)));
    drop(store);
    assert!(matches!(RocksStore::backup(&data, &dir.path().join("closed")), Ok(BackupKind::Checkpoint)));
    // The claim is released with the store: it opens again.
    drop(RocksStore::open(&data, StoreOptions::default()).unwrap());

    // A store of an unknown format, in a directory named like a lock.
    let odd = dir.path().join("blocklist");
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&opts, &odd, ["relationships", "changelog", "meta", "attributes"]).unwrap();
    db.put_cf(db.cf_handle("meta").unwrap(), b"format", b"someone-elses-format").unwrap();
    drop(db);
    let err = RocksStore::backup(&odd, &dir.path().join("odd-backup")).err().unwrap();
    assert!(err.0.contains("unknown store format"), "{}", err.0);
}
