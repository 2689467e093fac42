//! Postgres behind the engine's storage trait, so it passes the same conformance suite
//! as the memory and RocksDB stores: `scan` is one REPEATABLE READ snapshot, `commit`
//! writes through `arbiter_apply` at exactly the engine's revision under the counter
//! lock (refusing a revision that is not newer than Postgres' head: another writer got
//! there first), and `changes_after` reads the changelog up to its horizon.
//!
//! The trait is synchronous (the engine has no async); these calls block on the given
//! runtime and must be made from outside it (a plain thread or `spawn_blocking`).

use anyhow::anyhow;
use arbiter_engine::{ChangesAfter, Commit, LoadSink, LoggedCommit, RelationshipRef, RelationshipStore, StoreError};
use tokio::runtime::Handle;

use super::{change_json, PgSource, SnapshotPart};

#[derive(Debug, Clone)]
pub struct PgStore {
    pub source: PgSource,
    runtime: Handle,
}

fn store_error(e: anyhow::Error) -> StoreError {
    StoreError(format!("{e:#}"))
}

impl PgStore {
    pub fn new(source: PgSource, runtime: Handle) -> PgStore {
        PgStore { source, runtime }
    }
}

impl RelationshipStore for PgStore {
    fn scan(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        let mut failed: Option<StoreError> = None;
        // The snapshot read hands its parts over as it streams, all from one transaction.
        self.runtime
            .block_on(self.source.snapshot(10_000, |part| {
                let result = match part {
                    SnapshotPart::Header(header) => sink.header(header),
                    SnapshotPart::Relationships(batch) => {
                        batch.iter().try_for_each(|r| sink.relationship(RelationshipRef::of(r)))
                    }
                    SnapshotPart::Attributes(batch) => batch.iter().try_for_each(|(t, i, json)| sink.attributes(t, i, json)),
                };
                result.map_err(|e| {
                    failed = Some(e.clone());
                    anyhow!("{e}")
                })
            }))
            .map_err(|e| failed.take().unwrap_or_else(|| store_error(e)))?;
        Ok(())
    }

    fn commit(&self, commit: &Commit<'_>) -> Result<(), StoreError> {
        let changes: Vec<serde_json::Value> = commit.changes.iter().map(change_json).collect();
        self.runtime
            .block_on(async {
                let (mut tx, head) = self.source.begin_write().await?;
                if commit.revision <= head {
                    return Err(anyhow!(
                        "revision {} is taken: Postgres is already at revision {head} (another writer committed first)",
                        commit.revision
                    ));
                }
                sqlx::query("UPDATE arbiter_revision SET revision = $1")
                    .bind(i64::try_from(commit.revision)?)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT arbiter_apply($1, $2, $3, $4)")
                    .bind(i64::try_from(commit.revision)?)
                    .bind(serde_json::Value::Array(changes))
                    .bind(commit.schema)
                    .bind(serde_json::json!({ "writer": "arbiter" }))
                    .execute(&mut *tx)
                    .await?;
                if let Some(model) = commit.policy_model {
                    super::write_policy_model(&mut tx, commit.revision, model, "arbiter").await?;
                }
                if !commit.attributes.is_empty() {
                    super::write_attributes(&mut tx, commit.revision, commit.attributes, "arbiter").await?;
                }
                tx.commit().await?;
                Ok(())
            })
            .map_err(store_error)
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, StoreError> {
        self.runtime
            .block_on(async {
                let horizon = self.source.horizon().await?;
                if revision < horizon {
                    return Ok(ChangesAfter::TooOld { oldest: horizon + 1 });
                }
                let head = self.source.head().await?;
                let through = head.min(revision.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX)));
                let commits = self.source.commits_between(revision, through).await?;
                Ok(ChangesAfter::Commits(
                    commits
                        .into_iter()
                        .take(limit)
                        .map(|c| LoggedCommit {
                            revision: c.revision,
                            committed_at_micros: c.committed_at_micros,
                            changes: c.changes,
                            schema: c.schema,
                            policy_model: c.policy_model,
                            attributes: c.attributes,
                        })
                        .collect(),
                ))
            })
            .map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

    use super::*;
    use sqlx::Connection;

    /// The storage conformance suite every store runs, against a real Postgres: one
    /// database per suite location, made here and dropped after.
    #[test]
    fn postgres_passes_the_store_suite() {
        let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let prefix = format!("arbiter_suite_{}", std::process::id());
        let made = std::sync::Mutex::new(Vec::<String>::new());
        let factory = |name: &str| -> Result<Box<dyn RelationshipStore>, String> {
            let db = format!("{prefix}_{}", name.replace('-', "_"));
            let url = format!("{base}/{db}");
            let fresh = !made.lock().unwrap().contains(&db);
            let source = runtime
                .block_on(async {
                    if fresh {
                        let mut conn = sqlx::PgConnection::connect(&admin).await?;
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await?;
                        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await?;
                    }
                    let source = PgSource::connect(&url).await?;
                    source.migrate().await?;
                    anyhow::Ok(source)
                })
                .map_err(|e| format!("{e:#}"))?;
            made.lock().unwrap().push(db);
            Ok(Box::new(PgStore::new(source, runtime.handle().clone())))
        };
        let mut failures = arbiter_engine::store_suite::run(&factory);
        failures.extend(arbiter_engine::store_suite::run_policy_model(&factory));
        failures.extend(arbiter_engine::store_suite::run_caveats(&factory));
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            let made: Vec<String> = made.lock().unwrap().clone();
            for db in &made {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await;
            }
        });
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
