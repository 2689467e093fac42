//! Prometheus metrics: request counts and latency histograms per RPC and per HTTP API
//! route, and gauges read at
//! scrape time (graph size, revision, store size).

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tonic::Status;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub relationships: IntGauge,
    pub revision: IntGauge,
    pub store_bytes: IntGauge,
    pub watchers: IntGauge,
    /// Changes from Postgres' changelog a replica refused (read at scrape time).
    pub rejected: IntGauge,
    /// On a replica: seconds from a revision's commit in Postgres to this replica
    /// serving it.
    pub replica_lag: prometheus::Histogram,
    /// HTTP API requests (AuthZEN), by route and status.
    http_requests: IntCounterVec,
    http_latency: HistogramVec,
    /// Decision log records written.
    pub decisions_logged: prometheus::IntCounter,
    /// Decision log records dropped because the queue was full (the Check path never
    /// waits for the log).
    pub decisions_dropped: prometheus::IntCounter,
}

/// Latency buckets from 5 us to 10 s: a Check sits in the low ones, an import in the high.
const BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "arbiter_grpc_requests_total",
                "gRPC requests handled, by method and status code",
            ),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "arbiter_grpc_request_duration_seconds",
                "gRPC request latency, by method",
            )
            .buckets(BUCKETS.to_vec()),
            &["method"],
        )?;
        let relationships = IntGauge::new(
            "arbiter_relationships",
            "relationships in the current graph revision",
        )?;
        let revision = IntGauge::new("arbiter_revision", "the newest revision served")?;
        let store_bytes = IntGauge::new(
            "arbiter_store_bytes",
            "size of the embedded store on disk (SST files and memtables)",
        )?;
        let watchers = IntGauge::new("arbiter_watch_streams", "open Watch streams")?;
        let rejected = IntGauge::new(
            "arbiter_replica_rejected_changes_total",
            "changes from Postgres' changelog this replica refused to apply (invalid for the schema)",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(relationships.clone()))?;
        registry.register(Box::new(revision.clone()))?;
        registry.register(Box::new(store_bytes.clone()))?;
        registry.register(Box::new(watchers.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        let replica_lag = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "arbiter_replica_apply_lag_seconds",
                "time from a revision's commit in Postgres to this replica serving it (same clock assumed)",
            )
            .buckets(vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]),
        )?;
        registry.register(Box::new(replica_lag.clone()))?;
        let decisions_logged =
            prometheus::IntCounter::new("arbiter_decision_log_written_total", "decision log records written")?;
        let decisions_dropped = prometheus::IntCounter::new(
            "arbiter_decision_log_dropped_total",
            "decision log records dropped because the writer fell behind (the Check path never waits for it)",
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new("arbiter_http_requests_total", "HTTP API (AuthZEN) requests handled, by route and status"),
            &["route", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new("arbiter_http_request_duration_seconds", "HTTP API (AuthZEN) request latency, by route")
                .buckets(BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_latency.clone()))?;
        registry.register(Box::new(decisions_logged.clone()))?;
        registry.register(Box::new(decisions_dropped.clone()))?;
        Ok(Metrics {
            http_requests,
            http_latency,
            decisions_logged,
            decisions_dropped,
            registry,
            requests,
            latency,
            relationships,
            revision,
            store_bytes,
            watchers,
            rejected,
            replica_lag,
        })
    }

    /// Records one finished request and passes its result through.
    pub fn record<T>(
        &self,
        method: &str,
        start: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => "OK",
            Err(s) => code_label(s.code()),
        };
        self.requests.with_label_values(&[method, code]).inc();
        self.latency
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        result
    }

    /// Records one finished HTTP API request.
    pub fn record_http(&self, route: &str, status: u16, start: Instant) {
        let status = status.to_string();
        self.http_requests.with_label_values(&[route, status.as_str()]).inc();
        self.http_latency.with_label_values(&[route]).observe(start.elapsed().as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# error encoding metrics: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
