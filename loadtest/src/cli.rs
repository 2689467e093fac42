//! The command line: `gen`, `run`, `max` and `crash`. Results go to stdout, progress
//! and errors to stderr. Exit status 0, or 2 when a command could not start or finish
//! its output (bad arguments, a missing dataset, a server that cannot be reached or
//! refuses the first check), with a message naming the problem; `crash` exits 1 when
//! it found a violation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::args::{parse_duration, parse_mix, parse_rate, Mix, RequestKind};
use crate::dataset::{generate, GenParams};
use crate::plot::{percentile_svg, Series};
use crate::report::{trim_float, MaxReport, RunReport};
use crate::schedule::{drive, DriveConfig, Recorder, SpinPacer};
use crate::workload::{connect, load_dataset, parse_consistency, read_dataset, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "arbiter-loadtest",
    version,
    about = "Dataset generator and open-loop load generator for Arbiter"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a seeded organisation dataset: schema.zed, relationships.txt,
    /// queries.txt (about half allowed), expected.txt and manifest.json. Same seed,
    /// same bytes.
    Gen {
        /// About this many relationships (at least 1000).
        #[arg(long)]
        relationships: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The directory to write (created if missing; files in it are replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Send requests at a fixed rate (open loop) and report latencies measured from each
    /// request's scheduled send time.
    Run(RunArgs),
    /// Step the rate up until p99 exceeds an SLO; report the highest rate that held.
    Max(MaxArgs),
    /// Kill `arbiter serve` (or a Postgres-mode replica, or Postgres itself) with
    /// SIGKILL mid-write, again and again, and check that every acknowledged change
    /// survived and every unacknowledged batch is all or nothing.
    Crash(Box<crate::crash::CrashArgs>),
    /// Open-loop load on the admin server's HTTP API: single-row reads, writes until
    /// the PDP sees them, or audit-trail queries.
    Admin(Box<crate::admin::AdminLoadArgs>),
}

/// The server, the dataset and how requests are made.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// The server's gRPC endpoint.
    #[arg(
        long,
        env = "ARBITER_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// A directory made by `gen` (queries.txt is needed; schema.zed and
    /// relationships.txt too with --load; expected.txt, if there, checks the answers).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Write the dataset's schema and import its relationships first.
    #[arg(long)]
    pub load: bool,
    /// gRPC channels (HTTP/2 connections), used round robin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub connections: u16,
    /// Relative weights of check, bulk (CheckBulk), lookup (LookupResources), write
    /// (WriteRelationships TOUCH of a synthetic viewer) and empty (the gRPC health
    /// check: what a call costs with no work behind it).
    #[arg(long, default_value = "check=100", value_parser = parse_mix)]
    pub mix: Mix,
    /// minimize_latency | fully_consistent | at_least_as_fresh:TOKEN | at_exact_snapshot:TOKEN
    #[arg(long, default_value = "minimize_latency")]
    pub consistency: String,
    /// Sent as `authorization: Bearer KEY`.
    #[arg(long, env = "ARBITER_PRESHARED_KEY", hide_env_values = true)]
    pub preshared_key: Option<String>,
    /// A request not answered in this time counts as DEADLINE_EXCEEDED.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// At most this many requests outstanding; beyond it sending waits, which shows as
    /// send lag and in the latencies.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Checks per CheckBulk request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub bulk_size: u32,
    /// Results asked of each LookupResources (its `limit`).
    #[arg(long, default_value_t = 100)]
    pub lookup_limit: u32,
    /// A send later than this after its due time is late; more than 1% late sends
    /// means the generator fell behind.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub late_threshold: Duration,
    /// The generator sleeps (an OS sleep, precise to tens of microseconds) until this
    /// long before each due time, then spins, yielding to the runtime, until it comes.
    #[arg(long, default_value = "200us", value_parser = parse_duration)]
    pub spin: Duration,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Requests per second.
    #[arg(long, value_parser = parse_rate)]
    pub rate: f64,
    /// How long to send: `10s`, `500ms`, `2m`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// Write the report as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a latency-by-percentile chart (SVG) to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MaxArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The p99 latency a rate must keep to hold: `1ms`, `500us`.
    #[arg(long, value_parser = parse_duration)]
    pub slo_p99: Duration,
    /// The first rate tried.
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub start: f64,
    /// Added to the rate after each step that held.
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    pub step: f64,
    /// Never try more than this rate.
    #[arg(long, default_value = "10000000", value_parser = parse_rate)]
    pub max_rate: f64,
    /// How long each step sends.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Quiet time between steps, for the server to settle.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub pause: Duration,
    /// Write the summary as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write every step's latency-by-percentile line to one SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen {
            relationships,
            seed,
            out,
        } => gen_command(relationships, seed, &out),
        Command::Run(args) => with_runtime(run_command(args)),
        Command::Max(args) => with_runtime(max_command(args)),
        Command::Crash(args) => return crate::crash::main(*args),
        Command::Admin(args) => with_runtime(crate::admin::main(*args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn with_runtime(f: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(f)
}

fn gen_command(relationships: u64, seed: u64, out: &Path) -> Result<()> {
    let started = Instant::now();
    let summary = generate(
        GenParams {
            relationships,
            seed,
        },
        out,
    )?;
    let m = &summary.manifest;
    print_stdout(&format!(
        "wrote {}: {} relationships ({} tenants, {} users, {} teams, {} folders, {} documents), {} queries ({} allowed), in {:.2}s\n",
        out.display(),
        summary.relationships,
        m["tenants"],
        m["users"],
        m["teams"],
        m["folders"],
        m["documents"],
        summary.queries,
        summary.allowed,
        started.elapsed().as_secs_f64()
    ))
}

/// Fails early if an output file's directory does not exist.
fn check_output(path: Option<&PathBuf>, flag: &str) -> Result<()> {
    if let Some(p) = path {
        if p.as_os_str() == "-" {
            return Ok(());
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(d) = parent {
            if !d.is_dir() {
                bail!(
                    "{flag} {}: directory {} does not exist",
                    p.display(),
                    d.display()
                );
            }
        }
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("write to stdout"),
        _ => Ok(()),
    }
}

fn write_output(path: &Path, text: &str) -> Result<()> {
    if path.as_os_str() == "-" {
        return print_stdout(&format!("{text}\n"));
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// Connects, loads if asked, and checks that the server answers.
async fn prepare(t: &TargetArgs) -> Result<Workload> {
    let consistency = parse_consistency(&t.consistency)?;
    let dataset = read_dataset(&t.dataset)?;
    let clients = connect(
        &t.endpoint,
        t.preshared_key.as_deref(),
        usize::from(t.connections),
    )
    .await?;
    if t.load {
        let first = clients
            .first()
            .ok_or_else(|| anyhow!("no connection to {}", t.endpoint))?;
        let s = load_dataset(first, &t.dataset).await?;
        eprintln!(
            "loaded {}: {} relationships in {:.2}s ({:.0}/s)",
            t.dataset.display(),
            s.imported,
            s.seconds,
            s.imported as f64 / s.seconds.max(1e-9)
        );
    }
    let mut w = Workload::new(dataset, clients, t.mix, consistency);
    w.bulk_size = t.bulk_size as usize;
    w.lookup_limit = t.lookup_limit;
    w.timeout = t.timeout;
    w.preflight().await?;
    Ok(w)
}

fn settings(t: &TargetArgs) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("endpoint".into(), json!(t.endpoint));
    m.insert("dataset".into(), json!(t.dataset.display().to_string()));
    m.insert("connections".into(), json!(t.connections));
    m.insert("mix".into(), json!(t.mix.to_string()));
    m.insert("consistency".into(), json!(t.consistency));
    m.insert("max_in_flight".into(), json!(t.max_in_flight));
    m.insert("bulk_size".into(), json!(t.bulk_size));
    m
}

/// From now on, Ctrl-C sets the returned flag: sending stops and the replies in flight
/// are awaited and reported. A second Ctrl-C exits at once (status 130).
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("interrupted: waiting for the requests in flight (Ctrl-C again to quit)");
        flag.store(true, Ordering::Relaxed);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    stop
}

async fn run_once(
    w: &Workload,
    t: &TargetArgs,
    rate: f64,
    duration: Duration,
    stop: &Arc<AtomicBool>,
) -> Result<(RunReport, Recorder)> {
    let config = DriveConfig {
        rate,
        duration,
        max_in_flight: t.max_in_flight,
        timeout: t.timeout,
        lag_threshold: t.late_threshold,
        progress: !t.quiet,
        stop: Some(stop.clone()),
    };
    let workload = w.clone();
    let mut pacer = SpinPacer { spin: t.spin };
    // The sending loop runs as a task on a runtime worker, not on the thread that
    // blocks on the runtime: its spin then yields to the other tasks of that worker
    // instead of competing with them for a core.
    let rec =
        tokio::spawn(async move { drive(&config, &mut pacer, move |i| workload.request(i)).await })
            .await
            .map_err(|e| anyhow!("the sending loop stopped: {e}"))?
            .map_err(|e| anyhow!("create the latency histograms: {e}"))?;
    let report = RunReport::new(&rec, rate, duration, u64::from(t.bulk_size), settings(t));
    Ok((report, rec))
}

fn kind_series(rec: &Recorder) -> Vec<Series<'_>> {
    let mut series = vec![Series {
        label: "all requests".to_string(),
        histogram: &rec.latency,
    }];
    if rec.by_kind.len() > 1 {
        for kind in RequestKind::ALL {
            if let Some(s) = rec.by_kind.get(&kind) {
                series.push(Series {
                    label: kind.name().to_string(),
                    histogram: &s.latency,
                });
            }
        }
    }
    series
}

/// Refuses a rate and duration that schedule no request at all.
fn check_schedule(rate: f64, duration: Duration, what: &str) -> Result<()> {
    if (rate * duration.as_secs_f64()) < 1.0 {
        bail!(
            "{what} {}/s for {:?} schedules no request: raise the rate or the duration",
            trim_float(rate),
            duration
        );
    }
    Ok(())
}

async fn run_command(args: RunArgs) -> Result<()> {
    check_schedule(args.rate, args.duration, "--rate")?;
    check_output(args.json.as_ref(), "--json")?;
    check_output(args.plot.as_ref(), "--plot")?;
    let w = prepare(&args.target).await?;
    let stop = stop_on_ctrl_c();
    let (report, rec) = run_once(&w, &args.target, args.rate, args.duration, &stop).await?;
    let json_to_stdout = args.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if json_to_stdout {
        eprint!("{}", report.text());
    } else {
        print_stdout(&report.text())?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "arbiter-loadtest run: {}/s for {:.1}s, {} requests, {}",
            trim_float(args.rate),
            args.duration.as_secs_f64(),
            report.requests,
            args.target.mix
        );
        write_output(path, &percentile_svg(&title, &kind_series(&rec), None))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json()).context("encode the report")?;
        write_output(path, &text)?;
    }
    Ok(())
}

async fn max_command(args: MaxArgs) -> Result<()> {
    check_schedule(args.start, args.duration, "--start")?;
    check_output(args.json.as_ref(), "--json")?;
    check_output(args.plot.as_ref(), "--plot")?;
    let slo_us = u64::try_from(args.slo_p99.as_micros()).unwrap_or(u64::MAX);
    let w = prepare(&args.target).await?;
    let stop = stop_on_ctrl_c();
    let mut rate = args.start;
    let mut best = 0.0;
    let mut steps = Vec::new();
    let mut recorders = Vec::new();
    let stopped_because;
    loop {
        if rate > args.max_rate {
            stopped_because = format!("reached --max-rate {}", trim_float(args.max_rate));
            break;
        }
        eprintln!(
            "step: {}/s for {:.1}s",
            trim_float(rate),
            args.duration.as_secs_f64()
        );
        let (report, rec) = run_once(&w, &args.target, rate, args.duration, &stop).await?;
        // A step holds if p99 is within the SLO, at most 1% of requests failed and the
        // generator kept its schedule (otherwise the rate was not really offered).
        let within_slo = report.latency.p99 <= slo_us;
        let few_errors = report.errors * 100 <= report.requests;
        let held = within_slo && few_errors && !report.fell_behind;
        eprintln!(
            "step: {}/s p99 {} errors {} -> {}",
            trim_float(rate),
            crate::report::format_us(report.latency.p99),
            report.errors,
            if held { "held" } else { "missed" }
        );
        let fell_behind = report.fell_behind;
        let interrupted = report.interrupted;
        steps.push((report, held));
        recorders.push((rate, rec));
        if interrupted {
            stopped_because = format!("interrupted at {}/s", trim_float(rate));
            break;
        }
        if !held {
            stopped_because = if fell_behind {
                format!("the generator fell behind at {}/s", trim_float(rate))
            } else if !within_slo {
                format!("p99 over the SLO at {}/s", trim_float(rate))
            } else {
                format!("more than 1% errors at {}/s", trim_float(rate))
            };
            break;
        }
        best = rate;
        rate += args.step;
        tokio::time::sleep(args.pause).await;
        if stop.load(Ordering::Relaxed) {
            stopped_because = format!("interrupted before {}/s", trim_float(rate));
            break;
        }
    }
    let summary = MaxReport {
        max_rate: best,
        slo_p99_us: slo_us,
        steps,
        stopped_because,
    };
    let json_to_stdout = args.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if json_to_stdout {
        eprint!("{}", summary.text());
    } else {
        print_stdout(&summary.text())?;
    }
    if let Some(path) = &args.plot {
        let series: Vec<Series<'_>> = recorders
            .iter()
            .map(|(r, rec)| Series {
                label: format!("{}/s", trim_float(*r)),
                histogram: &rec.latency,
            })
            .collect();
        let title = format!(
            "arbiter-loadtest max: p99 SLO {}, max rate {}/s",
            crate::report::format_us(slo_us),
            trim_float(best)
        );
        write_output(path, &percentile_svg(&title, &series, Some(slo_us)))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary.to_json()).context("encode the report")?;
        write_output(path, &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_arguments_parse() {
        let cli = Cli::try_parse_from([
            "arbiter-loadtest",
            "run",
            "--endpoint",
            "http://127.0.0.1:1",
            "--dataset",
            "d",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--mix",
            "check=95,bulk=2,lookup=2,write=1",
            "--connections",
            "2",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run");
        };
        assert_eq!(r.rate, 200.0);
        assert_eq!(r.duration, Duration::from_secs(2));
        assert_eq!(r.target.mix.weight(RequestKind::Write), 1);
        assert_eq!(r.target.connections, 2);
        assert!(!r.target.load);
        // Defaults: checks only.
        let cli = Cli::try_parse_from([
            "arbiter-loadtest",
            "run",
            "--dataset",
            "d",
            "--rate",
            "1",
            "--duration",
            "1s",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run");
        };
        assert_eq!(r.target.mix.kind_of(7), RequestKind::Check);
        assert_eq!(r.target.endpoint, "http://127.0.0.1:50051");
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for bad in [
            vec!["run", "--dataset", "d", "--rate", "0", "--duration", "1s"],
            vec!["run", "--dataset", "d", "--rate", "10", "--duration", "10"],
            vec![
                "run",
                "--dataset",
                "d",
                "--rate",
                "10",
                "--duration",
                "1s",
                "--mix",
                "read=1",
            ],
            vec![
                "run",
                "--dataset",
                "d",
                "--rate",
                "10",
                "--duration",
                "1s",
                "--connections",
                "0",
            ],
            vec!["max", "--dataset", "d", "--slo-p99", "fast"],
        ] {
            let mut argv = vec!["arbiter-loadtest"];
            argv.extend(bad.iter());
            let e = Cli::try_parse_from(argv.clone()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn max_arguments_parse() {
        let cli = Cli::try_parse_from([
            "arbiter-loadtest",
            "max",
            "--dataset",
            "d",
            "--slo-p99",
            "1ms",
            "--start",
            "500",
            "--step",
            "250",
        ])
        .unwrap();
        let Command::Max(m) = cli.command else {
            panic!("not max");
        };
        assert_eq!(m.slo_p99, Duration::from_millis(1));
        assert_eq!(m.start, 500.0);
        assert_eq!(m.step, 250.0);
        assert_eq!(m.duration, Duration::from_secs(10));
    }
}
