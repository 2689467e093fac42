//! Prometheus metrics of the admin: requests by route and status, latency by route, and
//! the PDP calls it made for its own decisions, by outcome.

use std::time::Instant;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pdp_calls: IntCounterVec,
}

/// Latency buckets from 1 ms to 10 s.
const BUCKETS: &[f64] = &[0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("arbiter_admin_requests_total", "admin API requests handled, by route and status"),
            &["route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("arbiter_admin_request_duration_seconds", "admin API request latency, by route")
                .buckets(BUCKETS.to_vec()),
            &["route"],
        )?;
        let pdp_calls = IntCounterVec::new(
            Opts::new(
                "arbiter_admin_pdp_calls_total",
                "Checks the admin asked the PDP for its own authorization, by outcome (ok, failed)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(pdp_calls.clone()))?;
        Ok(Metrics { registry, requests, latency, pdp_calls })
    }

    pub fn record(&self, route: &str, status: u16, start: Instant) {
        let status = status.to_string();
        self.requests.with_label_values(&[route, status.as_str()]).inc();
        self.latency.with_label_values(&[route]).observe(start.elapsed().as_secs_f64());
    }

    pub fn pdp(&self, outcome: &str) {
        self.pdp_calls.with_label_values(&[outcome]).inc();
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# error encoding metrics: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
