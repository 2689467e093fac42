//! Decision logs (`--decision-log`): sampled Check decisions written asynchronously in
//! batches (the seeds' `decision_logs`: decision, policy version, latency, trace id).
//!
//! The Check path only samples and hands a record to a bounded queue with `try_send`:
//! it never waits, never does I/O, and when the queue is full the record is dropped and
//! counted (`arbiter_decision_log_dropped_total`). A background task drains the queue in
//! batches (up to [`BATCH`] records, or whatever arrived within [`FLUSH_EVERY`]) to a
//! JSON-lines file or to the `arbiter_decision_logs` table in Postgres.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// The response header (gRPC metadata) that carries a logged decision's id.
pub const DECISION_ID_HEADER: &str = "arbiter-decision-id";

/// Records written per batch at most.
pub const BATCH: usize = 1000;
/// How long a record waits for its batch at most.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Records queued at most; past it, records are dropped and counted.
pub const QUEUE: usize = 65_536;

/// One logged decision.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DecisionRecord {
    pub decision_id: String,
    #[serde(serialize_with = "rfc3339")]
    pub evaluated_at: DateTime<Utc>,
    /// `type:id`
    pub resource: String,
    pub permission: String,
    /// `type:id[#relation]`
    pub subject: String,
    /// `allowed` or `denied`.
    pub decision: &'static str,
    /// The revision the decision was made at: of the relationships, the schema and the
    /// policy set alike (DESIGN §5: the policy version).
    pub policy_version: u64,
    pub latency_us: u64,
    /// The caller's trace id (`traceparent`'s, else `x-request-id`), if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// `Check` or `CheckBulk`.
    pub method: &'static str,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Where decisions go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Appended as JSON lines.
    File(PathBuf),
    /// Inserted into `arbiter_decision_logs`.
    Postgres(PgPool),
}

/// The Check path's handle: samples and enqueues without waiting.
#[derive(Debug)]
pub struct DecisionLog {
    tx: mpsc::Sender<DecisionRecord>,
    /// Tells the writer to write what is queued and stop, and the writer itself
    /// ([`DecisionLog::close`]).
    writer: std::sync::Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    /// Keep one decision in `every` (1: all).
    every: u64,
    seen: AtomicU64,
    ids: AtomicU64,
    boot: String,
    pub dropped: IntCounter,
}

impl DecisionLog {
    /// Starts the writer task on the current runtime. `sample` is the fraction of
    /// decisions kept (0 < sample <= 1).
    pub fn start(sink: Sink, sample: f64, written: IntCounter, dropped: IntCounter) -> Result<DecisionLog> {
        if !(sample > 0.0 && sample <= 1.0) {
            return Err(anyhow!("--decision-log-sample must be in (0, 1], got {sample}"));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let handle = tokio::spawn(writer(sink, rx, stop_rx, written));
        let log = DecisionLog::with_queue(tx, sample, dropped);
        if let Ok(mut w) = log.writer.lock() {
            *w = Some((stop_tx, handle));
        }
        Ok(log)
    }

    fn with_queue(tx: mpsc::Sender<DecisionRecord>, sample: f64, dropped: IntCounter) -> DecisionLog {
        DecisionLog {
            tx,
            writer: std::sync::Mutex::new(None),
            every: (1.0 / sample).round().max(1.0) as u64,
            seen: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            boot: format!("{:x}-{:x}", Utc::now().timestamp_micros(), std::process::id()),
            dropped,
        }
    }

    /// Whether the next decision is sampled (every `every`-th one, counted across
    /// threads: no randomness on the hot path, and an exact rate).
    pub fn sampled(&self) -> bool {
        self.every == 1 || self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every)
    }

    /// A decision id unique to this process run.
    pub fn next_id(&self) -> String {
        format!("{}-{}", self.boot, self.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues a record, or drops and counts it when the queue is full (or closed).
    pub fn offer(&self, record: DecisionRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.inc();
        }
    }

    /// At shutdown, after the last call was answered: the writer writes every queued
    /// record and stops. Waits for it at most `within` (a sink that hangs must not hold
    /// the process); what was not written by then is logged as lost.
    pub async fn close(&self, within: Duration) {
        let Some((stop, handle)) = self.writer.lock().ok().and_then(|mut w| w.take()) else { return };
        let _ = stop.send(());
        let queued = QUEUE - self.tx.capacity();
        match tokio::time::timeout(within, handle).await {
            Ok(_) => tracing::debug!(queued, "decision logs flushed"),
            Err(_) => tracing::warn!(queued, "decision logs not flushed within {within:?}; the rest are lost"),
        }
    }
}

/// The trace id of a request: the trace-id field of a W3C `traceparent`, else
/// `x-request-id`.
pub fn trace_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    if let Some(tp) = metadata.get("traceparent").and_then(|v| v.to_str().ok()) {
        if let Some(id) = tp.split('-').nth(1).filter(|id| id.len() == 32) {
            return Some(id.to_string());
        }
    }
    metadata.get("x-request-id").and_then(|v| v.to_str().ok()).map(|s| s.chars().take(128).collect())
}

async fn writer(
    sink: Sink,
    mut rx: mpsc::Receiver<DecisionRecord>,
    mut stop: oneshot::Receiver<()>,
    written: IntCounter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stopping = false;
    loop {
        let first = if stopping {
            rx.recv().await
        } else {
            tokio::select! {
                r = rx.recv() => r,
                _ = &mut stop => {
                    // Shutting down: refuse new records, then write what is queued.
                    stopping = true;
                    rx.close();
                    rx.recv().await
                }
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match write_batch(&sink, &batch).await {
            Ok(()) => written.inc_by(n),
            Err(e) => tracing::warn!(records = n, "cannot write decision logs: {e:#}"),
        }
        batch.clear();
    }
}

async fn write_batch(sink: &Sink, batch: &[DecisionRecord]) -> Result<()> {
    match sink {
        Sink::File(path) => {
            let mut text = String::with_capacity(batch.len() * 256);
            for r in batch {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.write_all(text.as_bytes()).await.with_context(|| format!("cannot write {}", path.display()))?;
            f.flush().await?;
            Ok(())
        }
        Sink::Postgres(pool) => {
            let col = |f: &dyn Fn(&DecisionRecord) -> String| batch.iter().map(f).collect::<Vec<String>>();
            let ids = col(&|r| r.decision_id.clone());
            let resources = col(&|r| r.resource.clone());
            let permissions = col(&|r| r.permission.clone());
            let subjects = col(&|r| r.subject.clone());
            let decisions = col(&|r| r.decision.to_string());
            let methods = col(&|r| r.method.to_string());
            let at: Vec<DateTime<Utc>> = batch.iter().map(|r| r.evaluated_at).collect();
            let versions: Vec<i64> = batch.iter().map(|r| i64::try_from(r.policy_version).unwrap_or(i64::MAX)).collect();
            let latency: Vec<f64> = batch.iter().map(|r| r.latency_us as f64 / 1000.0).collect();
            let traces: Vec<Option<String>> = batch.iter().map(|r| r.trace_id.clone()).collect();
            sqlx::query(
                "INSERT INTO arbiter_decision_logs
                   (decision_id, evaluated_at, resource, permission, subject, decision, policy_version, latency_ms, trace_id, method)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::bigint[], $8::float8[], $9::text[], $10::text[])",
            )
            .bind(&ids)
            .bind(&at)
            .bind(&resources)
            .bind(&permissions)
            .bind(&subjects)
            .bind(&decisions)
            .bind(&versions)
            .bind(&latency)
            .bind(&traces)
            .bind(&methods)
            .execute(pool)
            .await
            .context("cannot insert decision logs")?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn record(n: u64) -> DecisionRecord {
        DecisionRecord {
            decision_id: n.to_string(),
            evaluated_at: Utc::now(),
            resource: "doc:1".into(),
            permission: "view".into(),
            subject: "user:ann".into(),
            decision: "allowed",
            policy_version: 7,
            latency_us: 12,
            trace_id: None,
            method: "Check",
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = DecisionLog::with_queue(tx, 1.0, dropped.clone());
        for n in 0..5 {
            log.offer(record(n));
        }
        assert_eq!(dropped.get(), 3);
        assert_eq!(rx.try_recv().unwrap().decision_id, "0");
        assert_eq!(rx.try_recv().unwrap().decision_id, "1");
    }

    #[test]
    fn sampling_keeps_the_asked_fraction_and_ids_are_unique() {
        let (tx, _rx) = mpsc::channel(1);
        let log = DecisionLog::with_queue(tx, 0.25, IntCounter::new("d", "d").unwrap());
        let kept = (0..1000).filter(|_| log.sampled()).count();
        assert_eq!(kept, 250);
        assert_ne!(log.next_id(), log.next_id());
    }

    #[test]
    fn the_trace_id_comes_from_traceparent_else_x_request_id() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(trace_id(&m), None);
        m.insert("x-request-id", "req-1".parse().unwrap());
        assert_eq!(trace_id(&m).as_deref(), Some("req-1"));
        m.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(trace_id(&m).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[tokio::test]
    async fn batches_land_in_the_file_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let written = IntCounter::new("w", "w").unwrap();
        let log = DecisionLog::start(Sink::File(path.clone()), 1.0, written.clone(), IntCounter::new("d", "d").unwrap())
            .unwrap();
        for n in 0..3 {
            log.offer(record(n));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while written.get() < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["policy_version"], 7);
        assert_eq!(lines[2]["decision_id"], "2");
    }
}
