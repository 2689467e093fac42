//! Run reports: what `run` prints and writes with `--json` (the keys of DESIGN §3 plus
//! a few more), and the `max` summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::args::RequestKind;
use crate::schedule::Recorder;

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// One kind of request in a run.
#[derive(Debug, Clone)]
pub struct KindReport {
    pub name: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub latency: Percentiles,
}

/// What one `run` (or one step of `max`) measured.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Requests per second asked for.
    pub rate: f64,
    /// Answers (successes and errors) per second over `duration_s`.
    pub achieved_rate: f64,
    /// From the first due time to the last answer, at least the scheduled duration.
    pub duration_s: f64,
    pub scheduled_duration_s: f64,
    pub requests: u64,
    /// From due time to answer, every request (errors included).
    pub latency: Percentiles,
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    pub fell_behind: bool,
    /// Stopped (Ctrl-C) before the schedule ended.
    pub interrupted: bool,
    pub late_sends: u64,
    pub late_threshold_us: u64,
    pub send_lag: Percentiles,
    pub in_flight_waits: u64,
    pub checked_answers: u64,
    pub wrong_answers: u64,
    pub by_kind: Vec<KindReport>,
    /// Checks answered without error: one per Check, `bulk_size` per CheckBulk.
    pub checks: u64,
    /// Descriptive settings (mix, connections, consistency, ...), copied to the JSON.
    pub settings: Map<String, Value>,
}

impl RunReport {
    pub fn new(
        rec: &Recorder,
        rate: f64,
        scheduled: Duration,
        bulk_size: u64,
        settings: Map<String, Value>,
    ) -> Self {
        let since_start = rec.last_completion.saturating_duration_since(rec.start);
        // An interrupted run lasted as long as it ran; otherwise at least its schedule.
        let elapsed = if rec.interrupted {
            since_start
        } else {
            since_start.max(scheduled)
        }
        .as_secs_f64();
        Self {
            rate,
            achieved_rate: if elapsed > 0.0 {
                rec.completed as f64 / elapsed
            } else {
                0.0
            },
            duration_s: elapsed,
            scheduled_duration_s: scheduled.as_secs_f64(),
            requests: rec.completed,
            latency: Percentiles::of(&rec.latency),
            errors: rec.errors(),
            errors_by_status: rec
                .errors_by_status
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            fell_behind: rec.fell_behind(),
            interrupted: rec.interrupted,
            late_sends: rec.late_sends,
            late_threshold_us: u64::try_from(rec.lag_threshold.as_micros()).unwrap_or(u64::MAX),
            send_lag: Percentiles::of(&rec.send_lag),
            in_flight_waits: rec.in_flight_waits,
            checked_answers: rec.checked_answers,
            wrong_answers: rec.wrong_answers,
            by_kind: rec
                .by_kind
                .iter()
                .map(|(kind, s)| KindReport {
                    name: kind.name(),
                    requests: s.latency.len(),
                    errors: s.errors,
                    latency: Percentiles::of(&s.latency),
                })
                .collect(),
            checks: rec
                .by_kind
                .iter()
                .map(|(kind, s)| {
                    let ok = s.latency.len().saturating_sub(s.errors);
                    match kind {
                        RequestKind::Check => ok,
                        RequestKind::Bulk => ok * bulk_size,
                        _ => 0,
                    }
                })
                .sum(),
            settings,
        }
    }

    /// The `--json` document: the keys of DESIGN §3, then more.
    pub fn to_json(&self) -> Value {
        let mut by_kind = Map::new();
        for k in &self.by_kind {
            by_kind.insert(
                k.name.to_string(),
                json!({
                    "requests": k.requests,
                    "errors": k.errors,
                    "p50_us": k.latency.p50,
                    "p90_us": k.latency.p90,
                    "p99_us": k.latency.p99,
                    "p999_us": k.latency.p999,
                    "max_us": k.latency.max,
                }),
            );
        }
        let mut v = json!({
            "rate": rate_json(self.rate),
            "achieved_rate": round2(self.achieved_rate),
            "duration_s": round3(self.duration_s),
            "requests": self.requests,
            "p50_us": self.latency.p50,
            "p90_us": self.latency.p90,
            "p99_us": self.latency.p99,
            "p999_us": self.latency.p999,
            "max_us": self.latency.max,
            "errors": self.errors,
            "errors_by_status": self.errors_by_status,
            "fell_behind": self.fell_behind,
            "interrupted": self.interrupted,
            "mean_us": round2(self.latency.mean),
            "scheduled_duration_s": round3(self.scheduled_duration_s),
            "late_sends": self.late_sends,
            "late_threshold_us": self.late_threshold_us,
            "send_lag_p99_us": self.send_lag.p99,
            "send_lag_max_us": self.send_lag.max,
            "in_flight_waits": self.in_flight_waits,
            "checked_answers": self.checked_answers,
            "wrong_answers": self.wrong_answers,
            "checks": self.checks,
            "checks_per_s": round2(if self.duration_s > 0.0 { self.checks as f64 / self.duration_s } else { 0.0 }),
            "by_kind": by_kind,
        });
        if let Value::Object(m) = &mut v {
            for (k, val) in &self.settings {
                m.insert(k.clone(), val.clone());
            }
        }
        v
    }

    /// The human summary printed on stdout.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "rate {}/s for {:.2}s: {} requests in {:.2}s, achieved {:.1}/s",
            trim_float(self.rate),
            self.scheduled_duration_s,
            self.requests,
            self.duration_s,
            self.achieved_rate
        );
        if self.interrupted {
            let _ = writeln!(s, "interrupted: stopped before the end of the schedule");
        }
        let l = &self.latency;
        let _ = writeln!(
            s,
            "latency from scheduled send: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            format_us(l.p50),
            format_us(l.p90),
            format_us(l.p99),
            format_us(l.p999),
            format_us(l.max)
        );
        if self.by_kind.len() > 1 {
            for k in &self.by_kind {
                let _ = writeln!(
                    s,
                    "  {:<7}{:>9} requests  p50 {:>8}  p99 {:>8}  max {:>8}  errors {}",
                    k.name,
                    k.requests,
                    format_us(k.latency.p50),
                    format_us(k.latency.p99),
                    format_us(k.latency.max),
                    k.errors
                );
            }
        }
        if self.by_kind.iter().any(|k| k.name == "bulk") {
            let _ = writeln!(
                s,
                "checks answered: {} ({:.0}/s, CheckBulk items included)",
                self.checks,
                self.checks as f64 / self.duration_s.max(1e-9)
            );
        }
        if self.errors == 0 {
            let _ = writeln!(s, "errors: none");
        } else {
            let by: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "errors: {} ({})", self.errors, by.join(", "));
        }
        if self.checked_answers > 0 {
            let _ = writeln!(
                s,
                "answers compared with expected.txt: {}, wrong: {}",
                self.checked_answers, self.wrong_answers
            );
        }
        let late_pct = if self.requests == 0 {
            0.0
        } else {
            self.late_sends as f64 * 100.0 / self.requests as f64
        };
        let verdict = if self.fell_behind {
            "FELL BEHIND (the rate asked for was not offered; results understate latency)"
        } else {
            "kept up"
        };
        let _ = writeln!(
            s,
            "generator: {verdict}: {late_pct:.2}% of sends more than {} late (limit 1%), send lag p99 {} max {}",
            format_us(self.late_threshold_us),
            format_us(self.send_lag.p99),
            format_us(self.send_lag.max)
        );
        if self.in_flight_waits > 0 {
            let _ = writeln!(
                s,
                "  {} sends waited for a free slot under --max-in-flight",
                self.in_flight_waits
            );
        }
        s
    }
}

/// The `max` summary.
#[derive(Debug, Clone)]
pub struct MaxReport {
    pub max_rate: f64,
    pub slo_p99_us: u64,
    pub steps: Vec<(RunReport, bool)>,
    pub stopped_because: String,
}

impl MaxReport {
    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|(r, held)| {
                let mut v = r.to_json();
                if let Value::Object(m) = &mut v {
                    m.insert("held".to_string(), json!(held));
                }
                v
            })
            .collect();
        json!({
            "max_rate": rate_json(self.max_rate),
            "slo_p99_us": self.slo_p99_us,
            "steps": steps,
            "stopped_because": self.stopped_because,
        })
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        for (r, held) in &self.steps {
            let _ =
                writeln!(
                s,
                "{:>10}/s  achieved {:>10.1}/s  p50 {:>8}  p99 {:>8}  max {:>8}  errors {:<6} {}{}",
                trim_float(r.rate),
                r.achieved_rate,
                format_us(r.latency.p50),
                format_us(r.latency.p99),
                format_us(r.latency.max),
                r.errors,
                if *held { "held" } else { "missed" },
                if r.fell_behind { " (generator fell behind)" } else { "" }
            );
        }
        let _ = writeln!(
            s,
            "max rate with p99 <= {}: {}/s ({})",
            format_us(self.slo_p99_us),
            trim_float(self.max_rate),
            self.stopped_because
        );
        s
    }
}

/// A rate as JSON: a whole number when it is one (`500`, not `500.0`).
pub fn rate_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `1000` rather than `1000.0`, `0.5` as is.
pub fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Microseconds for people: `850us`, `1.25ms`, `3.40s`.
pub fn format_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_contract_keys() {
        let mut rec = Recorder::new(tokio::time::Instant::now(), Duration::from_millis(1)).unwrap();
        rec.latency.record(120).unwrap();
        rec.completed = 1;
        rec.errors_by_status.insert("UNAVAILABLE", 2);
        let r = RunReport::new(&rec, 100.0, Duration::from_secs(2), 100, Map::new());
        let v = r.to_json();
        for key in [
            "rate",
            "achieved_rate",
            "duration_s",
            "requests",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "errors_by_status",
            "fell_behind",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["errors"], json!(2));
        assert_eq!(v["errors_by_status"]["UNAVAILABLE"], json!(2));
        assert_eq!(v["fell_behind"], json!(false));
        assert_eq!(v["duration_s"], json!(2.0));
        assert_eq!(v["achieved_rate"], json!(0.5));
        assert_eq!(v["rate"], json!(100));
        assert!(v["p50_us"].is_u64());
    }

    #[test]
    fn formats() {
        assert_eq!(format_us(850), "850us");
        assert_eq!(format_us(1250), "1.25ms");
        assert_eq!(format_us(3_400_000), "3.40s");
        assert_eq!(trim_float(1000.0), "1000");
        assert_eq!(trim_float(0.5), "0.5");
    }
}
