//! `arbiter-loadtest crash`: a crash-durability harness. It runs `arbiter serve` as a
//! child process, drives concurrent writers, deleters and importers against it over
//! gRPC, kills it with SIGKILL at a random moment, restarts it, reads everything back
//! and checks the state against the log of what was acknowledged ([`ledger`]).
//!
//! Two modes: `embedded` (the RocksDB store; one server, killed and restarted each
//! trial) and `postgres` (a throwaway Postgres cluster of the harness's own, several
//! replicas: a replica is killed and restarted while writes flow through the others,
//! and now and then the cluster itself is stopped with `-m immediate` and started
//! again while the replicas serve).

pub mod embedded;
pub mod ledger;
pub mod postgres;
pub mod process;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::args::parse_duration;
use ledger::{Fate, FateName, OpKind, Verdict};

/// Where the data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One server on its embedded RocksDB store.
    Embedded,
    /// Replicas of a throwaway Postgres cluster.
    Postgres,
}

#[derive(Debug, Args)]
pub struct CrashArgs {
    /// The `arbiter` server binary (default: `arbiter` beside this program, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub arbiter: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Embedded)]
    pub mode: Mode,
    /// Kills: of the server (embedded), of a replica (postgres).
    #[arg(long, default_value_t = 100)]
    pub trials: u64,
    /// Postgres mode: restarts of the Postgres cluster while the replicas serve, spread
    /// among the replica kills.
    #[arg(long, default_value_t = 5)]
    pub pg_restarts: u64,
    /// Postgres mode: replicas (at least 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=8))]
    pub replicas: u16,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the stores, the Postgres cluster and the server logs go (created; must be
    /// empty). Default: a new directory under the system's temp dir.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the work dir at the end (it is always kept when a violation was found).
    #[arg(long)]
    pub keep: bool,
    /// Start again from an empty store every N trials (0: never), so the stores stay
    /// small enough for a debug build to reload quickly.
    #[arg(long, default_value_t = 10)]
    pub reset_every: u64,
    /// Clients writing small batches.
    #[arg(long, default_value_t = 3)]
    pub writers: usize,
    /// Clients deleting acknowledged relationships.
    #[arg(long, default_value_t = 2)]
    pub deleters: usize,
    /// Clients streaming imports of 1,000 to 4,000 relationships.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=4))]
    pub importers: u16,
    /// The longest the clients run before a kill; the kill comes at a random moment
    /// between a tenth of it and all of it.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub max_run: Duration,
    /// Postgres mode: the directory of `initdb` and `pg_ctl` (default: `pg_config
    /// --bindir`, else PATH, else /usr/lib/postgresql/*/bin).
    #[arg(long, value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,
}

/// What the runners need, resolved from the arguments.
#[derive(Debug, Clone)]
pub struct Config {
    pub arbiter: PathBuf,
    pub work: PathBuf,
    /// The schema file (written into the work dir).
    pub schema: PathBuf,
    pub seed: u64,
    pub trials: u64,
    pub pg_restarts: u64,
    pub replicas: usize,
    pub reset_every: u64,
    pub writers: usize,
    pub deleters: usize,
    pub importers: usize,
    pub max_run: Duration,
    pub pg_bindir: Option<PathBuf>,
}

impl Config {
    /// Whether trial `trial` (from 1) starts from an empty store.
    pub fn resets_before(&self, trial: u64) -> bool {
        trial > 1 && self.reset_every > 0 && (trial - 1).is_multiple_of(self.reset_every)
    }

    /// How long the clients run before the kill of this trial.
    pub fn run_time(&self, rng: &mut crate::rng::Rng) -> Duration {
        let max = self.max_run.as_millis().max(10) as u64;
        Duration::from_millis(max / 10 + rng.below(max - max / 10 + 1))
    }
}

/// The sums over a run.
#[derive(Debug, Default)]
pub struct Totals {
    pub trials: u64,
    pub kills: u64,
    pub pg_restarts: u64,
    pub acked: BTreeMap<OpKind, usize>,
    pub unacked: BTreeMap<FateName, usize>,
    pub fixed_states: usize,
    pub violations: usize,
    pub largest_store: usize,
    /// Postgres outages: their total length, from the end of the stop to the end of the
    /// start.
    pub outage_time: Duration,
    /// Postgres outages: Checks answered (right), answered wrong, failed.
    pub outage_checks_ok: usize,
    pub outage_checks_wrong: usize,
    pub outage_checks_failed: usize,
    /// Postgres outages: the writes around them.
    pub outage_writes: postgres::OutageWrites,
    /// The longest a killed replica took, from its restart's ready line, to serve a read
    /// at least as fresh as the newest write acknowledged by then.
    pub slowest_catch_up: Duration,
    /// The longest from Postgres' start to the first acknowledged write after it.
    pub slowest_write_recovery: Duration,
}

impl Totals {
    /// Adds a trial's verdict and prints its violations (and `others`, found outside
    /// the ledger: replicas that disagree, a write acknowledged while Postgres was down).
    pub fn add(&mut self, trial: u64, verdict: &Verdict, others: &[String]) {
        for (k, n) in &verdict.acked {
            *self.acked.entry(*k).or_default() += n;
        }
        for (f, n) in &verdict.unacked {
            *self.unacked.entry(*f).or_default() += n;
        }
        self.fixed_states += verdict.fixed_states_checked;
        self.largest_store = self.largest_store.max(verdict.observed);
        let n = verdict.violations.len() + others.len();
        self.violations += n;
        let shown = 20;
        for v in verdict.violations.iter().take(shown) {
            say(&format!("  VIOLATION (trial {trial}) {v}"));
        }
        for v in others.iter().take(shown) {
            say(&format!("  VIOLATION (trial {trial}) {v}"));
        }
        if n > 2 * shown {
            say(&format!("  ... {n} violations in trial {trial} in all"));
        }
    }

    fn summary(&self, mode: Mode, wall: Duration) -> String {
        let acked: usize = self.acked.values().sum();
        let unacked: usize = self.unacked.values().sum();
        let mut s = format!(
            "crash summary ({}): {} trials, {} kills{}, {} acknowledged operations checked ({}), {} relationship states fixed by the log checked, {} unacknowledged operations ({}), largest store {} relationships, {} violations, {:.1}s",
            match mode {
                Mode::Embedded => "embedded",
                Mode::Postgres => "postgres",
            },
            self.trials,
            self.kills,
            if mode == Mode::Postgres {
                format!(" of replicas, {} Postgres restarts", self.pg_restarts)
            } else {
                String::new()
            },
            acked,
            acked_breakdown(&self.acked),
            self.fixed_states,
            unacked,
            fate_breakdown(&self.unacked),
            self.largest_store,
            self.violations,
            wall.as_secs_f64()
        );
        if mode == Mode::Postgres {
            s.push_str(&format!(
                "\n  during {:.1}s of Postgres outages: {} Checks answered ({} wrong), {} failed; {}\n  a restarted replica served the newest acknowledged write at most {:.2}s after its ready line; writes were acknowledged again at most {:.2}s after Postgres accepted connections",
                self.outage_time.as_secs_f64(),
                self.outage_checks_ok + self.outage_checks_wrong,
                self.outage_checks_wrong,
                self.outage_checks_failed,
                self.outage_writes.describe(),
                self.slowest_catch_up.as_secs_f64(),
                self.slowest_write_recovery.as_secs_f64()
            ));
        }
        s
    }
}

/// `write 12, delete 3, ...`.
pub fn acked_breakdown(m: &BTreeMap<OpKind, usize>) -> String {
    OpKind::ALL
        .iter()
        .map(|k| format!("{} {}", k.name(), m.get(k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `applied 1, not applied 2, partial 0, undetermined 0`.
pub fn fate_breakdown(m: &BTreeMap<FateName, usize>) -> String {
    [
        (Fate::Applied, "applied"),
        (Fate::NotApplied, "not applied"),
        (Fate::Partial, "partial import"),
        (Fate::Undetermined, "undetermined"),
    ]
    .iter()
    .map(|(f, name)| {
        format!(
            "{name} {}",
            m.get(&FateName::from(*f)).copied().unwrap_or(0)
        )
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// `UNAVAILABLE 3, DEADLINE_EXCEEDED 1` (`none` when empty).
pub fn code_breakdown(m: &BTreeMap<&'static str, usize>) -> String {
    if m.is_empty() {
        return "none".to_string();
    }
    m.iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line to stdout; a closed pipe is not an error.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Runs the command: 0 when no violation was found, 1 when one was, 2 when the run
/// could not be carried out.
pub fn main(args: CrashArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the trials; the number of violations.
async fn run(args: CrashArgs) -> Result<usize> {
    let arbiter = find_arbiter(args.arbiter.as_deref())?;
    let pg_bindir = match args.mode {
        Mode::Postgres => Some(process::PgCluster::find_bindir(args.pg_bindir.as_deref())?),
        Mode::Embedded => None,
    };
    let work = prepare_work_dir(args.work_dir.as_deref())?;
    let schema = work.join("schema.zed");
    std::fs::write(&schema, workload::SCHEMA)
        .with_context(|| format!("write {}", schema.display()))?;
    let config = Config {
        arbiter,
        work: work.clone(),
        schema,
        seed: args.seed,
        trials: args.trials,
        pg_restarts: args.pg_restarts,
        replicas: usize::from(args.replicas),
        reset_every: args.reset_every,
        writers: args.writers,
        deleters: args.deleters,
        importers: usize::from(args.importers),
        max_run: args.max_run,
        pg_bindir,
    };
    say(&format!(
        "crash ({:?}): {} with {} writers, {} deleters, {} importers, seed {}, store reset every {} trials; work dir {}",
        args.mode,
        config.arbiter.display(),
        config.writers,
        config.deleters,
        config.importers,
        config.seed,
        config.reset_every,
        work.display()
    ));
    let started = Instant::now();
    let mut totals = Totals::default();
    let result = match args.mode {
        Mode::Embedded => embedded::run(&config, &mut totals).await,
        Mode::Postgres => postgres::run(&config, &mut totals).await,
    };
    say(&totals.summary(args.mode, started.elapsed()));
    let keep = args.keep || totals.violations > 0 || result.is_err();
    if keep {
        say(&format!(
            "kept the work dir {} (server logs: *.log)",
            work.display()
        ));
    } else if let Err(e) = std::fs::remove_dir_all(&work) {
        eprintln!(
            "warning: cannot remove the work dir {}: {e}",
            work.display()
        );
    }
    result?;
    Ok(totals.violations)
}

/// The server binary, checked to run.
fn find_arbiter(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => {
            if !p.is_file() {
                bail!(
                    "--arbiter {}: no such file (build the server with `cargo build -p arbiter-server`; the binary is then in the target dir's debug/arbiter)",
                    p.display()
                );
            }
            p.to_path_buf()
        }
        None => {
            let beside = std::env::current_exe()
                .ok()
                .map(|exe| exe.with_file_name("arbiter"))
                .filter(|p| p.is_file());
            let on_path = || {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|d| d.join("arbiter"))
                        .find(|p| p.is_file())
                })
            };
            beside.or_else(on_path).ok_or_else(|| {
                anyhow!("no `arbiter` binary beside this program or on PATH: pass --arbiter PATH (build it with `cargo build -p arbiter-server`)")
            })?
        }
    };
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} --version failed ({}): is it the Arbiter server binary?",
            path.display(),
            out.status
        );
    }
    Ok(path)
}

/// The work dir: `given` (created if missing, refused if not empty), else a new one
/// under the system's temp dir.
fn prepare_work_dir(given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("arbiter-crash-{}-{nanos:08x}", std::process::id()))
        }
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(&dir)
            .with_context(|| format!("read the work dir {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "the work dir {} is not empty: give a new or empty directory (a store left from another run would fail the checks)",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("create the work dir {}", dir.display()))?;
    // The Postgres cluster's directory inside is used by the `postgres` OS user when the
    // harness runs as root: the path to it must be searchable.
    std::fs::canonicalize(&dir).with_context(|| format!("resolve the work dir {}", dir.display()))
}
