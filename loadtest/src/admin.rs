//! `arbiter-loadtest admin`: open-loop load on the admin server's HTTP API, with the
//! same schedule and latency accounting as `run` (latency from each request's due time).
//!
//! Scenarios:
//!
//! - `read`: `GET /v1/tenants/{T}/users/{U}`, a single-row read, over the tenant's
//!   first users (up to 500, read once before the run);
//! - `write`: an ACL entry granting one of those users `viewer` on a fresh `doc`, then a
//!   PDP Check of `view` at `at_least_as_fresh` of the write's `Arbiter-Revision`: the
//!   latency is write to PDP-visible, and a denial counts as a wrong answer (the
//!   application schema needs `doc` with `relation tenant: platform/tenant` and
//!   `viewer: platform/user`);
//! - `audit`: `GET /v1/audit-records?actor=A&from=D&to=D+1day`, one actor's day of the
//!   trail (platform operators).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use arbiter_proto::arbiter::v1 as pb;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::args::{parse_duration, parse_rate, RequestKind};
use crate::report::{format_us, Percentiles};
use crate::schedule::{drive, Answers, DriveConfig, RequestResult, SpinPacer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Read,
    Write,
    Audit,
}

#[derive(Debug, Args)]
pub struct AdminLoadArgs {
    /// The admin server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key (`<id>.<secret>`): a platform operator's for `audit`.
    #[arg(long, env = "ARBITER_ADMIN_KEY", hide_env_values = true)]
    pub key: String,
    /// The tenant (`read`, `write`).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// The PDP's gRPC endpoint (`write` checks there).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub pdp_endpoint: String,
    /// The actor whose day is queried (`audit`).
    #[arg(long)]
    pub actor: Option<String>,
    /// The day queried (`audit`), its start in RFC 3339.
    #[arg(long)]
    pub day: Option<String>,
    /// Requests per second.
    #[arg(long, value_parser = parse_rate)]
    pub rate: f64,
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,
    /// `write`: the id prefix of the docs granted; request i grants `<prefix><i>`. By
    /// default a prefix of this run's own, so every doc is new (and claimed for the
    /// tenant by its first entry); `d` grants on docs `d0`, `d1`, ... that exist already.
    #[arg(long)]
    pub doc_prefix: Option<String>,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

struct Target {
    http: reqwest::Client,
    url: String,
    auth: String,
    tenant: String,
    users: Vec<String>,
    pdp: Option<pb::permission_service_client::PermissionServiceClient<tonic::transport::Channel>>,
    audit_query: String,
    doc_prefix: String,
}

/// Runs the scenario and prints its report.
pub async fn main(args: AdminLoadArgs) -> Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().context("build the HTTP client")?;
    let url = args.url.trim_end_matches('/').to_string();
    let auth = format!("Bearer {}", args.key);
    let tenant = args.tenant.clone().unwrap_or_default();
    let mut target = Target { http, url, auth, tenant, users: Vec::new(), pdp: None, audit_query: String::new(),
        doc_prefix: args.doc_prefix.clone().unwrap_or_else(|| format!("lt-{:x}-", std::process::id())) };
    match args.scenario {
        Scenario::Read | Scenario::Write => {
            if target.tenant.is_empty() {
                bail!("--tenant is needed for `{:?}`", args.scenario);
            }
            let page: Value = target
                .http
                .get(format!("{}/v1/tenants/{}/users?limit=500", target.url, target.tenant))
                .header("authorization", &target.auth)
                .send()
                .await
                .context("list the tenant's users")?
                .json()
                .await
                .context("read the tenant's users")?;
            target.users = page["items"].as_array().into_iter().flatten().filter_map(|u| u["id"].as_str().map(str::to_string)).collect();
            if target.users.is_empty() {
                bail!("the tenant has no users to read or grant to: {page}");
            }
        }
        Scenario::Audit => {
            let (Some(actor), Some(day)) = (&args.actor, &args.day) else {
                bail!("--actor and --day are needed for `audit`");
            };
            let from = chrono::DateTime::parse_from_rfc3339(day).map_err(|e| anyhow!("--day is not RFC 3339: {e}"))?;
            let to = from + chrono::Duration::days(1);
            let enc = |t: chrono::DateTime<chrono::FixedOffset>| t.to_rfc3339().replace('+', "%2B");
            target.audit_query = format!("{}/v1/audit-records?actor={actor}&from={}&to={}&limit=50", target.url, enc(from), enc(to));
        }
    }
    if args.scenario == Scenario::Write {
        let channel = tonic::transport::Endpoint::from_shared(args.pdp_endpoint.clone())
            .map_err(|e| anyhow!("--pdp-endpoint: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to the PDP at {}", args.pdp_endpoint))?;
        target.pdp = Some(pb::permission_service_client::PermissionServiceClient::new(channel));
    }
    let target = Arc::new(target);
    let config = DriveConfig {
        rate: args.rate,
        duration: args.duration,
        max_in_flight: args.max_in_flight,
        timeout: args.timeout,
        lag_threshold: Duration::from_millis(1),
        progress: !args.quiet,
        stop: None,
    };
    let scenario = args.scenario;
    let rec = drive(&config, &mut SpinPacer::default(), |i| {
        let target = target.clone();
        let kind = if scenario == Scenario::Write { RequestKind::Write } else { RequestKind::Check };
        (kind, async move { one(&target, scenario, i).await })
    })
    .await
    .map_err(|e| anyhow!("cannot make a histogram: {e}"))?;
    let latency = Percentiles::of(&rec.latency);
    let elapsed = rec.last_completion.saturating_duration_since(rec.start).max(args.duration).as_secs_f64();
    let report = json!({
        "scenario": format!("{scenario:?}").to_lowercase(),
        "rate": args.rate,
        "achieved_rate": rec.completed as f64 / elapsed,
        "requests": rec.completed,
        "errors": rec.errors(),
        "errors_by_status": rec.errors_by_status.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "wrong_answers": rec.wrong_answers,
        "fell_behind": rec.fell_behind(),
        "latency_us": {"p50": latency.p50, "p90": latency.p90, "p99": latency.p99, "p999": latency.p999, "max": latency.max},
    });
    println!(
        "admin {:?}: {}/s for {:.1}s, {} requests, {} errors, {} wrong answers{}\nlatency p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        scenario,
        args.rate,
        args.duration.as_secs_f64(),
        rec.completed,
        rec.errors(),
        rec.wrong_answers,
        if rec.fell_behind() { " (the generator fell behind its schedule)" } else { "" },
        format_us(latency.p50),
        format_us(latency.p90),
        format_us(latency.p99),
        format_us(latency.p999),
        format_us(latency.max),
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

async fn one(t: &Target, scenario: Scenario, i: u64) -> RequestResult {
    let user = &t.users.get((i as usize) % t.users.len().max(1)).cloned().unwrap_or_default();
    match scenario {
        Scenario::Read => {
            let r = t.http.get(format!("{}/v1/tenants/{}/users/{user}", t.url, t.tenant)).header("authorization", &t.auth).send().await;
            status(r).await.map(|_| Answers::default())
        }
        Scenario::Audit => {
            let r = t.http.get(&t.audit_query).header("authorization", &t.auth).send().await;
            status(r).await.map(|_| Answers::default())
        }
        Scenario::Write => {
            let doc = format!("{}{i}", t.doc_prefix);
            let body = json!({"resource_type": "doc", "resource_id": doc, "subject_type": "user", "subject_id": user, "relations": ["viewer"]});
            let r = t
                .http
                .post(format!("{}/v1/tenants/{}/acl-entries", t.url, t.tenant))
                .header("authorization", &t.auth)
                .json(&body)
                .send()
                .await;
            let response = status(r).await?;
            let Some(token) = response.headers().get("arbiter-revision").and_then(|v| v.to_str().ok()).map(str::to_string) else {
                return Err("NO_REVISION");
            };
            let Some(pdp) = &t.pdp else { return Err("NO_PDP") };
            let request = pb::CheckRequest {
                consistency: Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token)) }),
                resource: Some(pb::ObjectRef { r#type: "doc".into(), id: doc }),
                permission: "view".into(),
                subject: Some(pb::SubjectRef { object: Some(pb::ObjectRef { r#type: "platform/user".into(), id: user.clone() }), relation: String::new() }),
                context: None,
                explain: false,
            };
            match pdp.clone().check(request).await {
                Ok(r) => {
                    let allowed = r.get_ref().decision == pb::Decision::Allowed as i32;
                    Ok(Answers { checked: 1, wrong: u32::from(!allowed) })
                }
                Err(s) => Err(crate::workload::code_name(s.code())),
            }
        }
    }
}

/// A 2xx response, or the status class as the error's name.
async fn status(r: reqwest::Result<reqwest::Response>) -> Result<reqwest::Response, &'static str> {
    let r = r.map_err(|e| if e.is_timeout() { "HTTP_TIMEOUT" } else { "HTTP_ERROR" })?;
    match r.status().as_u16() {
        200..=299 => Ok(r),
        429 => Err("HTTP_429"),
        400..=499 => Err("HTTP_4XX"),
        _ => Err("HTTP_5XX"),
    }
}
