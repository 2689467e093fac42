//! `arbiter-rocksdb-store`: the embedded durable store. Implements the engine's
//! [`RelationshipStore`] on RocksDB, in its own crate so the engine builds and tests
//! without RocksDB's C++.
//!
//! Column families:
//! - `relationships`: `resource_type 0 resource_id 0 relation 0 subject_type 0 subject_id 0 subject_relation`
//!   -> attributes (expiration). Forward order: everything on one resource is contiguous.
//!   Reads by subject are served by the in-memory reverse index, so the store keeps no
//!   reverse order (format 1 did; opening a format-1 store drops that column family).
//! - `changelog`: revision (big-endian u64) -> the change set (commit time, then one
//!   `TOUCH|DELETE relationship` line per change, then `POLICIES` and the policy model's
//!   JSON on one line if it changed, then `SCHEMA` and the schema if it changed). Kept
//!   for a window, for Watch and exact-snapshot reads.
//!   Attribute changes are `ATTR type id json` / `ATTRDEL type id` lines (tab-separated).
//! - `attributes`: `type 0 id` -> the object's attribute values and labels (JSON).
//! - `meta`: `revision`, `schema`, `policy_model` (JSON), `format`, `source`.
//!
//! Ids, types and relations never contain a NUL byte (they are validated before they
//! get here), so NUL separates key fields unambiguously. A commit is one `WriteBatch`
//! written with a synced WAL: acknowledged means durable.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbiter_engine::{
    AttributeChange, CaveatView, Change, ChangeOp, ContextView, ChangesAfter, Commit, LoadSink, LoggedCommit, RelationshipRef, RelationshipStore, StoreError,
    StoredHeader,
};
use arbiter_schema::{parse_relationship, Relationship};
use chrono::{DateTime, TimeZone, Utc};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

const CF_FORWARD: &str = "relationships";
const CF_CHANGELOG: &str = "changelog";
const CF_META: &str = "meta";
const CF_ATTRIBUTES: &str = "attributes";
const COLUMN_FAMILIES: [&str; 4] = [CF_FORWARD, CF_CHANGELOG, CF_META, CF_ATTRIBUTES];
/// Format 1's reverse-order copy of every relationship; dropped on open.
const CF_REVERSE_V1: &str = "relationships_by_subject";

const META_REVISION: &[u8] = b"revision";
const META_SCHEMA: &[u8] = b"schema";
const META_FORMAT: &[u8] = b"format";
const META_SOURCE: &[u8] = b"source";
const META_POLICY_MODEL: &[u8] = b"policy_model";
const FORMAT: &[u8] = b"arbiter-rocksdb-2";
const FORMAT_V1: &[u8] = b"arbiter-rocksdb-1";

/// Attribute encoding version byte: `[1]`, then the expiration if any (8 bytes).
const ATTR_V1: u8 = 1;
/// For a caveated relationship: `[2]`, a byte saying whether an expiration follows, the
/// expiration (8 bytes) if so, the caveat name's length (2 bytes) and name, then the
/// context as JSON (nothing for none).
const ATTR_V2: u8 = 2;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Sync the WAL on every commit (on by default; off only for bulk loads that can be redone).
    pub sync: bool,
    /// How long changelog entries are kept.
    pub changelog_window: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: true,
            changelog_window: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug)]
pub struct RocksStore {
    db: DB,
    options: StoreOptions,
    commits: AtomicU64,
    /// Released after `db` is closed (fields drop in order).
    _claim: DirClaim,
}

/// A process's exclusive claim on a store directory: an OS file lock on `arbiter.lock`
/// in it, held for as long as a [`RocksStore`] is open there. RocksDB locks its own
/// `LOCK` file too, but tells a conflict only as the text of an I/O error; this claim
/// lets `backup` ask "is a server running here?" directly, and holding it keeps a
/// server from opening the store in the middle of a backup.
#[derive(Debug)]
struct DirClaim {
    /// Holding the file holds the lock; closing it releases it.
    _file: std::fs::File,
}

/// The claim's file, beside RocksDB's own files (which it leaves alone).
const CLAIM_FILE: &str = "arbiter.lock";

impl DirClaim {
    /// The claim, or `None` when another process (or another open store in this one)
    /// holds it.
    fn try_take(dir: &Path) -> Result<Option<DirClaim>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| err(&format!("create {}", dir.display()), e))?;
        let path = dir.join(CLAIM_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| err(&format!("open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirClaim { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(err(&format!("lock {}", path.display()), e)),
        }
    }
}

fn err(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{context}: {e}"))
}

impl RocksStore {
    /// Opens (creating if needed) the store in `dir`. Fails when another process has it
    /// open.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        match DirClaim::try_take(dir)? {
            Some(claim) => Self::open_claimed(dir, options, claim),
            None => Err(StoreError(format!(
                "the store in {} is in use by another process (a running `arbiter serve`?)",
                dir.display()
            ))),
        }
    }

    fn open_claimed(dir: &Path, options: StoreOptions, claim: DirClaim) -> Result<Self, StoreError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A format-1 store still has its reverse column family: open it to drop it.
        let legacy = DB::list_cf(&db_opts, dir).map(|names| names.iter().any(|n| n == CF_REVERSE_V1)).unwrap_or(false);
        let mut names = COLUMN_FAMILIES.to_vec();
        if legacy {
            names.push(CF_REVERSE_V1);
        }
        let cfs = names.into_iter().map(|name| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(name, o)
        });
        let mut db = DB::open_cf_descriptors(&db_opts, dir, cfs)
            .map_err(|e| err(&format!("open the store in {}", dir.display()), e))?;
        if legacy {
            db.drop_cf(CF_REVERSE_V1).map_err(|e| err("drop the format-1 reverse column family", e))?;
        }
        let store = RocksStore { db, options, commits: AtomicU64::new(0), _claim: claim };
        let meta = store.cf(CF_META)?;
        match store.db.get_cf(meta, META_FORMAT).map_err(|e| err("read the store format", e))? {
            Some(f) if f == FORMAT => {}
            None => store.db.put_cf(meta, META_FORMAT, FORMAT).map_err(|e| err("write the store format", e))?,
            Some(f) if f == FORMAT_V1 => {
                tracing::info!(dir = %dir.display(), "upgraded the store from format 1 to format 2");
                store.db.put_cf(meta, META_FORMAT, FORMAT).map_err(|e| err("write the store format", e))?
            }
            Some(f) => {
                return Err(StoreError(format!(
                    "{} holds an unknown store format `{}`",
                    dir.display(),
                    String::from_utf8_lossy(&f)
                )))
            }
        }
        Ok(store)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError(format!("column family `{name}` is missing")))
    }

    /// The revision the store holds (0 when empty).
    pub fn revision(&self) -> Result<u64, StoreError> {
        match self.db.get_cf(self.cf(CF_META)?, META_REVISION).map_err(|e| err("read the revision", e))? {
            Some(v) => decode_u64(&v).ok_or_else(|| StoreError("corrupt revision".into())),
            None => Ok(0),
        }
    }

    /// Where a replica's snapshot came from (the Postgres database's identity), if this
    /// store is a complete snapshot of one.
    pub fn source(&self) -> Result<Option<String>, StoreError> {
        self.db
            .get_cf(self.cf(CF_META)?, META_SOURCE)
            .map_err(|e| err("read the snapshot source", e))?
            .map(|v| String::from_utf8(v).map_err(|_| StoreError("corrupt snapshot source".into())))
            .transpose()
    }

    /// Removes the store in `dir` (RocksDB's files only), for a replica that reloads.
    pub fn destroy(dir: &Path) -> Result<(), StoreError> {
        DB::destroy(&Options::default(), dir).map_err(|e| err(&format!("remove the store in {}", dir.display()), e))
    }

    /// Bulk load, step 1 (repeated): writes relationships without the WAL or a
    /// changelog entry. Nothing is visible as a complete snapshot until
    /// [`RocksStore::finish_bulk_load`]; a crash before that leaves a store without a
    /// source, which a replica reloads.
    pub fn bulk_put(&self, relationships: &[Relationship]) -> Result<(), StoreError> {
        let fwd = self.cf(CF_FORWARD)?;
        let mut batch = WriteBatch::default();
        for r in relationships {
            batch.put_cf(fwd, forward_key(r), encode_attributes(r));
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo).map_err(|e| err("bulk load", e))
    }

    /// Bulk load, step 1 for objects' attributes: `(type, id, attributes as JSON)`.
    pub fn bulk_put_attributes(&self, attributes: &[(String, String, String)]) -> Result<(), StoreError> {
        let cf = self.cf(CF_ATTRIBUTES)?;
        let mut batch = WriteBatch::default();
        for (t, i, json) in attributes {
            batch.put_cf(cf, attribute_key(t, i), json.as_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo).map_err(|e| err("bulk load attributes", e))
    }

    /// Bulk load, step 2: flushes what [`RocksStore::bulk_put`] wrote, then durably
    /// records the revision, schema, policy model and source of the snapshot.
    pub fn finish_bulk_load(
        &self,
        revision: u64,
        schema: Option<&str>,
        policy_model: Option<&str>,
        source: &str,
    ) -> Result<(), StoreError> {
        self.db.flush_cf(self.cf(CF_FORWARD)?).map_err(|e| err("flush the bulk load", e))?;
        self.db.flush_cf(self.cf(CF_ATTRIBUTES)?).map_err(|e| err("flush the bulk load", e))?;
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_REVISION, revision.to_be_bytes());
        match schema {
            Some(s) => batch.put_cf(meta, META_SCHEMA, s.as_bytes()),
            None => batch.delete_cf(meta, META_SCHEMA),
        }
        match policy_model {
            Some(m) => batch.put_cf(meta, META_POLICY_MODEL, m.as_bytes()),
            None => batch.delete_cf(meta, META_POLICY_MODEL),
        }
        batch.put_cf(meta, META_SOURCE, source.as_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| err("record the snapshot", e))
    }

    /// A consistent online copy of the store in `out` (which must not exist), that
    /// [`RocksStore::open`] can start from.
    pub fn checkpoint(&self, out: &Path) -> Result<(), StoreError> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db)
            .map_err(|e| err("prepare a checkpoint", e))?;
        cp.create_checkpoint(out)
            .map_err(|e| err(&format!("write a checkpoint to {}", out.display()), e))
    }

    /// Bytes on disk and in memtables, over every column family.
    pub fn size_bytes(&self) -> u64 {
        COLUMN_FAMILIES
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .map(|cf| {
                [
                    "rocksdb.total-sst-files-size",
                    "rocksdb.cur-size-all-mem-tables",
                ]
                .iter()
                .filter_map(|p| self.db.property_int_value_cf(cf, *p).ok().flatten())
                .sum::<u64>()
            })
            .sum()
    }

    /// A consistent copy of the store in `data` written to `out` (which must not exist
    /// or be empty), whether or not a server has `data` open. Closed: a RocksDB
    /// checkpoint (hard links where possible). Open: a read-only secondary instance
    /// catches up with the server's WAL and its contents are copied into a new store.
    /// Either way `out` is a store that [`RocksStore::open`] starts from.
    pub fn backup(data: &Path, out: &Path) -> Result<BackupKind, StoreError> {
        if !data.join("CURRENT").is_file() {
            return Err(StoreError(format!(
                "{} holds no Arbiter store",
                data.display()
            )));
        }
        if out.exists()
            && std::fs::read_dir(out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(StoreError(format!(
                "{} already exists and is not empty",
                out.display()
            )));
        }
        if out.exists() {
            std::fs::remove_dir(out).map_err(|e| err(&format!("prepare {}", out.display()), e))?;
        }
        // No server holds the store: open it (the claim keeps one from starting until the
        // checkpoint is made). A server does: copy through a secondary instance.
        match DirClaim::try_take(data)? {
            Some(claim) => Self::open_claimed(data, StoreOptions::default(), claim)?
                .checkpoint(out)
                .map(|()| BackupKind::Checkpoint),
            None => Self::copy_from_secondary(data, out).map(|()| BackupKind::OnlineCopy),
        }
    }

    fn copy_from_secondary(data: &Path, out: &Path) -> Result<(), StoreError> {
        let secondary_dir =
            tempfile::tempdir().map_err(|e| err("create a scratch directory", e))?;
        let mut opts = Options::default();
        opts.set_max_open_files(-1);
        let names = COLUMN_FAMILIES;
        let source = DB::open_cf_as_secondary(&opts, data, secondary_dir.path(), names)
            .map_err(|e| err(&format!("open {} as a secondary", data.display()), e))?;
        source
            .try_catch_up_with_primary()
            .map_err(|e| err("catch up with the running server", e))?;
        let target = RocksStore::open(
            out,
            StoreOptions {
                sync: false,
                ..StoreOptions::default()
            },
        )?;
        for name in names {
            let from = source
                .cf_handle(name)
                .ok_or_else(|| StoreError(format!("column family `{name}` is missing")))?;
            let to = target.cf(name)?;
            let mut batch = WriteBatch::default();
            for item in source.iterator_cf(from, IteratorMode::Start) {
                let (k, v) = item.map_err(|e| err(&format!("read `{name}`"), e))?;
                batch.put_cf(to, k, v);
                if batch.len() >= 10_000 {
                    target
                        .db
                        .write(std::mem::take(&mut batch))
                        .map_err(|e| err("write the copy", e))?;
                }
            }
            target
                .db
                .write(batch)
                .map_err(|e| err("write the copy", e))?;
        }
        target
            .db
            .flush_wal(true)
            .map_err(|e| err("sync the copy", e))?;
        for name in names {
            target
                .db
                .flush_cf(target.cf(name)?)
                .map_err(|e| err("flush the copy", e))?;
        }
        Ok(())
    }

    /// Up to `limit` changelog entries after `revision`, oldest first.
    fn logged_after(&self, revision: u64, limit: usize) -> Result<Vec<LoggedCommit>, StoreError> {
        let cf = self.cf(CF_CHANGELOG)?;
        let start = revision.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
            .take(limit)
        {
            let (k, v) = item.map_err(|e| err("read the changelog", e))?;
            let rev = decode_u64(&k).ok_or_else(|| StoreError("corrupt changelog key".into()))?;
            out.push(decode_logged(rev, &v)?);
        }
        Ok(out)
    }

    /// The oldest revision still in the changelog.
    pub fn oldest_logged(&self) -> Result<Option<u64>, StoreError> {
        let cf = self.cf(CF_CHANGELOG)?;
        match self.db.iterator_cf(cf, IteratorMode::Start).next() {
            Some(item) => {
                let (k, _) = item.map_err(|e| err("read the changelog", e))?;
                Ok(decode_u64(&k))
            }
            None => Ok(None),
        }
    }

    /// Drops changelog entries older than the window.
    pub fn prune_changelog(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let cf = self.cf(CF_CHANGELOG)?;
        let window = chrono::Duration::from_std(self.options.changelog_window)
            .unwrap_or(chrono::Duration::MAX);
        let cutoff = now - window;
        let mut batch = WriteBatch::default();
        let mut pruned = 0usize;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| err("read the changelog", e))?;
            let Some(at) = v
                .get(..8)
                .and_then(decode_u64)
                .and_then(|m| Utc.timestamp_micros(m as i64).single())
            else {
                break;
            };
            if at >= cutoff {
                break;
            }
            batch.delete_cf(cf, k);
            pruned += 1;
        }
        if pruned > 0 {
            self.db
                .write(batch)
                .map_err(|e| err("prune the changelog", e))?;
        }
        Ok(pruned)
    }
}

fn decode_u64(b: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = b.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

fn push_field(key: &mut Vec<u8>, field: &str) {
    key.extend_from_slice(field.as_bytes());
    key.push(0);
}

fn forward_key(r: &Relationship) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    write_forward_key(&mut k, r);
    k
}

/// Writes the forward key of `r` into `k` (cleared first): a bulk commit reuses one buffer.
fn write_forward_key(k: &mut Vec<u8>, r: &Relationship) {
    k.clear();
    push_field(k, &r.resource.object_type);
    push_field(k, &r.resource.object_id);
    push_field(k, &r.relation);
    push_field(k, &r.subject.object.object_type);
    push_field(k, &r.subject.object.object_id);
    k.extend_from_slice(r.subject.relation.as_deref().unwrap_or("").as_bytes());
}

/// The length of [`write_forward_key`]'s key for `r`.
fn forward_key_len(r: &Relationship) -> usize {
    r.resource.object_type.len()
        + r.resource.object_id.len()
        + r.relation.len()
        + r.subject.object.object_type.len()
        + r.subject.object.object_id.len()
        + r.subject.relation.as_deref().map_or(0, str::len)
        + 5
}

/// What a write batch adds to a record besides its key: a tag, the column family, two
/// lengths and the value (an expiration at most).
const BATCH_RECORD: usize = 24;

fn encode_attributes(r: &Relationship) -> Vec<u8> {
    let Some(caveat) = &r.caveat else {
        let mut v = vec![ATTR_V1];
        if let Some(e) = &r.expiration {
            v.extend_from_slice(&e.timestamp_micros().to_be_bytes());
        }
        return v;
    };
    let context = caveat.context.as_ref().filter(|c| !c.is_empty()).map(|c| serde_json::Value::Object(c.clone()).to_string());
    let mut v = Vec::with_capacity(12 + caveat.name.len() + context.as_ref().map_or(0, String::len));
    v.push(ATTR_V2);
    match &r.expiration {
        Some(e) => {
            v.push(1);
            v.extend_from_slice(&e.timestamp_micros().to_be_bytes());
        }
        None => v.push(0),
    }
    // Caveat names are at most a few hundred bytes (the schema's name limits).
    v.extend_from_slice(&u16::try_from(caveat.name.len()).unwrap_or(u16::MAX).to_be_bytes());
    v.extend_from_slice(caveat.name.as_bytes());
    if let Some(c) = context {
        v.extend_from_slice(c.as_bytes());
    }
    v
}

/// The expiration and caveat of a stored relationship's value.
fn decode_value(value: &[u8]) -> Option<(Option<i64>, Option<CaveatView<'_>>)> {
    match value {
        [ATTR_V1] => Some((None, None)),
        [ATTR_V1, rest @ ..] => Some((Some(i64::from_be_bytes(rest.try_into().ok()?)), None)),
        [ATTR_V2, has_expiration, rest @ ..] => {
            let (expires_at, rest) = match has_expiration {
                0 => (None, rest),
                1 => {
                    let (e, rest) = rest.split_at_checked(8)?;
                    (Some(i64::from_be_bytes(e.try_into().ok()?)), rest)
                }
                _ => return None,
            };
            let (len, rest) = rest.split_at_checked(2)?;
            let len = usize::from(u16::from_be_bytes(len.try_into().ok()?));
            let (name, context) = rest.split_at_checked(len)?;
            let name = std::str::from_utf8(name).ok()?;
            let context = match context {
                [] => ContextView::None,
                text => ContextView::Json(std::str::from_utf8(text).ok()?),
            };
            Some((expires_at, Some(CaveatView { name, context })))
        }
        _ => None,
    }
}

/// Borrows the fields of one stored relationship from its key and value.
fn decode_relationship<'a>(key: &'a [u8], value: &'a [u8]) -> Result<RelationshipRef<'a>, StoreError> {
    let corrupt = || StoreError(format!("corrupt relationship key `{}`", String::from_utf8_lossy(key)));
    let text = std::str::from_utf8(key).map_err(|_| corrupt())?;
    let mut parts = text.split('\0');
    let mut next = || parts.next().ok_or_else(corrupt);
    let (rt, rid, rel, st, sid, srel) = (next()?, next()?, next()?, next()?, next()?, next()?);
    let (expires_at, caveat) = decode_value(value).ok_or_else(corrupt)?;
    Ok(RelationshipRef {
        resource_type: rt,
        resource_id: rid,
        relation: rel,
        subject_type: st,
        subject_id: sid,
        subject_relation: (!srel.is_empty()).then_some(srel),
        expires_at,
        caveat,
    })
}

fn encode_logged(commit: &Commit<'_>, at: DateTime<Utc>) -> Vec<u8> {
    use std::io::Write as _;
    let mut v = Vec::with_capacity(8 + commit.changes.len() * 64);
    v.extend_from_slice(&(at.timestamp_micros() as u64).to_be_bytes());
    for c in commit.changes {
        let op = match c.op {
            ChangeOp::Touch => "TOUCH",
            ChangeOp::Delete => "DELETE",
        };
        // Writing into a Vec cannot fail.
        let _ = writeln!(v, "{op} {}", c.relationship);
    }
    if let Some(model) = commit.policy_model {
        // One line: the model is compact JSON, whose strings escape their newlines.
        v.extend_from_slice(b"POLICIES\n");
        v.extend_from_slice(model.as_bytes());
        v.push(b'\n');
    }
    for a in commit.attributes {
        let line = match &a.attributes {
            Some(json) => format!("ATTR\t{}\t{}\t{json}\n", a.object_type, a.object_id),
            None => format!("ATTRDEL\t{}\t{}\n", a.object_type, a.object_id),
        };
        v.extend_from_slice(line.as_bytes());
    }
    if let Some(schema) = commit.schema {
        v.extend_from_slice(b"SCHEMA\n");
        v.extend_from_slice(schema.as_bytes());
    }
    v
}

fn decode_logged(revision: u64, v: &[u8]) -> Result<LoggedCommit, StoreError> {
    let corrupt = |what: &str| StoreError(format!("corrupt changelog entry {revision}: {what}"));
    let micros = v
        .get(..8)
        .and_then(decode_u64)
        .ok_or_else(|| corrupt("no commit time"))?;
    let text = std::str::from_utf8(v.get(8..).unwrap_or(&[])).map_err(|_| corrupt("not UTF-8"))?;
    let (lines, schema) = match text.split_once("SCHEMA\n") {
        Some((l, s)) => (l, Some(s.to_string())),
        None => (text, None),
    };
    let mut changes = Vec::new();
    let mut attributes = Vec::new();
    let mut policy_model = None;
    let mut lines = lines.lines().filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        if line == "POLICIES" {
            policy_model = Some(lines.next().ok_or_else(|| corrupt("POLICIES without a model"))?.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("ATTR\t") {
            let mut f = rest.splitn(3, '\t');
            let (Some(t), Some(i), Some(json)) = (f.next(), f.next(), f.next()) else { return Err(corrupt(line)) };
            attributes.push(AttributeChange { object_type: t.into(), object_id: i.into(), attributes: Some(json.into()) });
            continue;
        }
        if let Some(rest) = line.strip_prefix("ATTRDEL\t") {
            let (t, i) = rest.split_once('\t').ok_or_else(|| corrupt(line))?;
            attributes.push(AttributeChange { object_type: t.into(), object_id: i.into(), attributes: None });
            continue;
        }
        let (op, rel) = line.split_once(' ').ok_or_else(|| corrupt(line))?;
        let op = match op {
            "TOUCH" => ChangeOp::Touch,
            "DELETE" => ChangeOp::Delete,
            _ => return Err(corrupt(line)),
        };
        let r = parse_relationship(rel).map_err(|e| corrupt(&e.message))?;
        changes.push(Change {
            op,
            relationship: r,
        });
    }
    Ok(LoggedCommit {
        revision,
        committed_at_micros: micros as i64,
        changes,
        schema,
        policy_model,
        attributes,
    })
}

fn attribute_key(object_type: &str, object_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(object_type.len() + object_id.len() + 1);
    k.extend_from_slice(object_type.as_bytes());
    k.push(0);
    k.extend_from_slice(object_id.as_bytes());
    k
}

/// How [`RocksStore::backup`] made its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// The store was closed: a RocksDB checkpoint.
    Checkpoint,
    /// A server had it open: copied from a secondary instance at its newest revision.
    OnlineCopy,
}

/// How often (in commits) the changelog window is enforced.
const PRUNE_EVERY: u64 = 1024;

impl RelationshipStore for RocksStore {
    fn scan(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        // One snapshot for the header and every relationship.
        let snapshot = self.db.snapshot();
        let meta = self.cf(CF_META)?;
        let revision = match snapshot.get_cf(meta, META_REVISION).map_err(|e| err("read the revision", e))? {
            Some(v) => decode_u64(&v).ok_or_else(|| StoreError("corrupt revision".into()))?,
            None => 0,
        };
        let schema = match snapshot.get_cf(meta, META_SCHEMA).map_err(|e| err("read the schema", e))? {
            Some(v) => Some(String::from_utf8(v).map_err(|_| StoreError("stored schema is not UTF-8".into()))?),
            None => None,
        };
        let policy_model = match snapshot.get_cf(meta, META_POLICY_MODEL).map_err(|e| err("read the policy model", e))? {
            Some(v) => Some(String::from_utf8(v).map_err(|_| StoreError("stored policy model is not UTF-8".into()))?),
            None => None,
        };
        sink.header(StoredHeader { revision, schema, policy_model })?;
        let mut read = ReadOptions::default();
        // A full scan: read ahead, and keep it out of the block cache.
        read.fill_cache(false);
        read.set_readahead_size(4 << 20);
        read.set_snapshot(&snapshot);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_FORWARD)?, read);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            sink.relationship(decode_relationship(k, v)?)?;
            it.next();
        }
        it.status().map_err(|e| err("read relationships", e))?;
        let mut read = ReadOptions::default();
        read.set_snapshot(&snapshot);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_ATTRIBUTES)?, read);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let corrupt = || StoreError(format!("corrupt attributes key {:?}", String::from_utf8_lossy(k)));
            let key = std::str::from_utf8(k).map_err(|_| corrupt())?;
            let (t, i) = key.split_once('\0').ok_or_else(corrupt)?;
            let json = std::str::from_utf8(v).map_err(|_| corrupt())?;
            sink.attributes(t, i, json)?;
            it.next();
        }
        it.status().map_err(|e| err("read attributes", e))
    }

    fn commit(&self, commit: &Commit<'_>) -> Result<(), StoreError> {
        let fwd = self.cf(CF_FORWARD)?;
        let log = self.cf(CF_CHANGELOG)?;
        let meta = self.cf(CF_META)?;
        let now = Utc::now();
        let logged = encode_logged(commit, now);
        // Sized up front: a batch grows as a C++ string, copying itself at each doubling,
        // and an import's batch is hundreds of megabytes.
        let records: usize = commit.changes.iter().map(|c| forward_key_len(&c.relationship) + BATCH_RECORD).sum();
        let mut batch = WriteBatch::with_capacity_bytes(records + logged.len() + 4 * BATCH_RECORD);
        let mut key = Vec::with_capacity(128);
        for c in commit.changes {
            write_forward_key(&mut key, &c.relationship);
            match c.op {
                ChangeOp::Touch => match (&c.relationship.expiration, &c.relationship.caveat) {
                    (None, None) => batch.put_cf(fwd, &key, [ATTR_V1]),
                    _ => batch.put_cf(fwd, &key, encode_attributes(&c.relationship)),
                },
                ChangeOp::Delete => batch.delete_cf(fwd, &key),
            }
        }
        if !commit.attributes.is_empty() {
            let attrs = self.cf(CF_ATTRIBUTES)?;
            for a in commit.attributes {
                let key = attribute_key(&a.object_type, &a.object_id);
                match &a.attributes {
                    Some(json) => batch.put_cf(attrs, key, json.as_bytes()),
                    None => batch.delete_cf(attrs, key),
                }
            }
        }
        batch.put_cf(log, commit.revision.to_be_bytes(), logged);
        batch.put_cf(meta, META_REVISION, commit.revision.to_be_bytes());
        if let Some(schema) = commit.schema {
            batch.put_cf(meta, META_SCHEMA, schema.as_bytes());
        }
        if let Some(model) = commit.policy_model {
            batch.put_cf(meta, META_POLICY_MODEL, model.as_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.options.sync);
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| err(&format!("commit revision {}", commit.revision), e))?;
        if self.commits.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune_changelog(now)?;
        }
        Ok(())
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, StoreError> {
        if let Some(oldest) = self.oldest_logged()? {
            if revision.saturating_add(1) < oldest {
                return Ok(ChangesAfter::TooOld { oldest });
            }
        }
        self.logged_after(revision, limit)
            .map(ChangesAfter::Commits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_sized_by_the_keys_it_will_hold() {
        for line in ["document:d1#viewer@user:u1", "team:t1#member@team:t2#member", "doc:x#viewer@user:*"] {
            let r = arbiter_schema::parse_relationship(line).unwrap_or_else(|e| unreachable!("{line}: {e}"));
            let mut key = Vec::new();
            write_forward_key(&mut key, &r);
            assert_eq!(forward_key_len(&r), key.len(), "{line}");
        }
    }
}
