//! Arbiter in-process on a dataset from `arbiter-loadtest gen`: the engine loaded with
//! the dataset's schema and relationships, and the dataset's queries as Check requests.

use std::io::BufRead;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use arbiter_engine::{CheckRequest, Consistency, Engine, EngineConfig};
use arbiter_schema::{parse_relationship, Relationship};

use crate::baseline::{Dataset, Query};

/// Relationships per `Engine::import` call while loading.
const IMPORT_BATCH: usize = 100_000;

/// The dataset's relationships, parsed one line at a time (errors name the line).
pub fn relationships(dataset: &Dataset) -> Result<impl Iterator<Item = Result<Relationship>>> {
    let path = dataset.relationships_path();
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let lines = std::io::BufReader::with_capacity(1 << 20, file).lines().enumerate();
    Ok(lines.filter_map(move |(i, line)| match line {
        Err(e) => Some(Err(anyhow!("read {}: {e}", path.display()))),
        Ok(l) if l.trim().is_empty() => None,
        Ok(l) => Some(parse_relationship(&l).map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))),
    }))
}

/// An in-memory engine holding the dataset, and how long the import took (seconds).
pub fn load_engine(dataset: &Dataset) -> Result<(Engine, f64)> {
    let engine = Engine::in_memory(EngineConfig::default());
    engine
        .write_schema(&dataset.schema()?)
        .map_err(|e| anyhow!("write {}/schema.zed: {e}", dataset.dir.display()))?;
    let path = dataset.relationships_path();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    for r in relationships(dataset)? {
        batch.push(r?);
        if batch.len() == IMPORT_BATCH {
            engine
                .import(std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH)))
                .map_err(|e| anyhow!("import {}: {e}", path.display()))?;
        }
    }
    if !batch.is_empty() {
        engine.import(batch).map_err(|e| anyhow!("import {}: {e}", path.display()))?;
    }
    engine.compact();
    Ok((engine, started.elapsed().as_secs_f64()))
}

/// The query as an engine Check at the newest revision.
pub fn check_request(q: &Query) -> CheckRequest<'_> {
    CheckRequest {
        resource_type: q.kind.resource_type(),
        resource_id: &q.resource,
        permission: q.kind.permission(),
        subject_type: "user",
        subject_id: &q.user,
        subject_relation: None,
        consistency: Consistency::MinimizeLatency,
        ..Default::default()
    }
}
