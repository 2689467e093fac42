//! Postgres mode: a throwaway cluster of the harness's own, `arbiter migrate`, and
//! several `arbiter serve --postgres` replicas. Two kinds of trial:
//!
//! - replica kill: while the clients write through every replica, one replica is
//!   killed with SIGKILL, the writes go on through the others, and it is restarted
//!   (sometimes killed once more while it starts and catches up). Once the clients
//!   stop, it must serve a read at least as fresh as the last acknowledged write, and
//!   every replica's export at `fully_consistent` must be the same, at the same
//!   revision, and agree with the log of what was acknowledged.
//! - Postgres restart: while the clients write and checkers ask Checks at
//!   `minimize_latency`, the cluster is stopped with `pg_ctl stop -m immediate` and
//!   started again 2-5 s later (every other time 21-25 s, longer than two of the
//!   replicas' 10 s waits for a connection). Checks must keep being answered meanwhile;
//!   no write may be acknowledged while Postgres is down (each fails with a status, or
//!   waits and lands once Postgres is back); after Postgres returns, writes must be
//!   acknowledged again and the replicas catch up and miss nothing (the same checks).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::embedded::{JOIN_TIMEOUT, START_TIMEOUT};
use super::ledger::{verify, Key, Outcome, Verdict};
use super::process::{run_command, PgCluster, Server, ServerSpec};
use super::workload::{export_when_ready, join, lock, wait_fresh, ReadBack, Target, Workload};
use super::{acked_breakdown, code_breakdown, fate_breakdown, say, Config, Totals};
use crate::rng::Rng;

/// How long a replica may take to catch up after a restart or an outage.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long, after Postgres starts again, the first write may take to be acknowledged.
const WRITE_RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// The cluster, the current database and its replicas.
struct Fleet<'a> {
    config: &'a Config,
    cluster: PgCluster,
    generation: u64,
    url: String,
    specs: Vec<ServerSpec>,
    servers: Vec<Option<Server>>,
    targets: Vec<Arc<Target>>,
    /// The relationships as read back and checked after the last trial.
    baseline: BTreeSet<Key>,
}

pub async fn run(config: &Config, totals: &mut Totals) -> Result<()> {
    let bindir = config
        .pg_bindir
        .clone()
        .ok_or_else(|| anyhow!("no Postgres tools directory"))?;
    let cluster =
        tokio::task::block_in_place(|| PgCluster::create(bindir, &config.work.join("pg")))?;
    say(&format!(
        "started a throwaway Postgres at {}",
        cluster.url("postgres")
    ));
    let mut fleet = Fleet {
        config,
        cluster,
        generation: 0,
        url: String::new(),
        specs: Vec::new(),
        servers: Vec::new(),
        targets: Vec::new(),
        baseline: BTreeSet::new(),
    };
    fleet.new_database(totals).await?;

    let total = config.trials + config.pg_restarts;
    let restarts: BTreeSet<u64> = (0..config.pg_restarts)
        .map(|k| (k + 1) * total / (config.pg_restarts + 1) + 1)
        .collect();
    let mut rng = Rng::new(config.seed, 0xc4a5_f000, 0);
    for trial in 1..=total {
        if config.resets_before(trial) {
            fleet.new_database(totals).await?;
        }
        if restarts.contains(&trial) {
            fleet
                .postgres_restart(trial, total, &mut rng, totals)
                .await?;
        } else {
            fleet.replica_kill(trial, total, &mut rng, totals).await?;
        }
    }
    for s in fleet.servers.iter_mut() {
        if let Some(s) = s.take() {
            s.kill()?;
        }
    }
    Ok(())
}

impl Fleet<'_> {
    /// A new database, migrated, with fresh replicas and the probe relationship.
    async fn new_database(&mut self, totals: &mut Totals) -> Result<()> {
        for s in self.servers.iter_mut() {
            if let Some(s) = s.take() {
                s.kill()?;
            }
        }
        for spec in &self.specs {
            if spec.data_dir.exists() {
                std::fs::remove_dir_all(&spec.data_dir).map_err(|e| {
                    anyhow!("remove the replica store {}: {e}", spec.data_dir.display())
                })?;
            }
        }
        self.generation += 1;
        let db = format!("crash_{}", self.generation);
        tokio::task::block_in_place(|| self.cluster.create_database(&db))?;
        self.url = self.cluster.url(&db);
        let migrated = tokio::task::block_in_place(|| {
            run_command(
                Command::new(&self.config.arbiter).args(["migrate", "--postgres", &self.url]),
                "arbiter migrate",
            )
        })?;
        self.specs = (0..self.config.replicas)
            .map(|i| ServerSpec {
                name: format!("replica-{i}"),
                binary: self.config.arbiter.clone(),
                data_dir: self
                    .config
                    .work
                    .join(format!("replica-{i}-db{}", self.generation)),
                schema: None,
                postgres: Some(self.url.clone()),
                log: self.config.work.join(format!("replica-{i}.log")),
            })
            .collect();
        self.servers.clear();
        self.targets.clear();
        for (i, spec) in self.specs.iter().enumerate() {
            // The first replica writes the schema.
            let spec = if i == 0 {
                ServerSpec {
                    schema: Some(self.config.schema.clone()),
                    ..spec.clone()
                }
            } else {
                spec.clone()
            };
            let server = spec.start(START_TIMEOUT).await?;
            self.targets
                .push(Target::connect(&server.name, &server.endpoint).await?);
            self.servers.push(Some(server));
        }
        let setup = Workload::new(0, self.config.seed, BTreeSet::new(), self.targets.clone());
        let first = self
            .targets
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("no replica"))?;
        setup.write_probe(&first).await?;
        let (verdict, read, others) = self.check(&setup).await?;
        say(&format!(
            "database {db}: {}; {} replicas agree at {}{}",
            migrated.trim(),
            self.targets.len(),
            read.revision,
            if verdict.violations.is_empty() && others.is_empty() {
                ""
            } else {
                " (VIOLATIONS)"
            }
        ));
        totals.add(0, &verdict, &others);
        self.baseline = read.keys;
        Ok(())
    }

    /// Waits until every replica serves the last acknowledged write, exports from each
    /// at `fully_consistent`, and checks the exports against each other and the log.
    /// Returns the verdict, the first replica's export and the violations outside the
    /// log.
    async fn check(&self, w: &Workload) -> Result<(Verdict, ReadBack, Vec<String>)> {
        let mut others = Vec::new();
        let token = lock(&w.seen).last_token.clone();
        if let Some(token) = &token {
            for t in &self.targets {
                if let Err(e) = wait_fresh(t, token, CATCH_UP_TIMEOUT).await {
                    others.push(format!("catch-up: {e:#}"));
                }
            }
        }
        let mut reads = Vec::new();
        for t in &self.targets {
            reads.push((
                t.name.clone(),
                export_when_ready(t, CATCH_UP_TIMEOUT).await?,
            ));
        }
        let Some((first_name, first)) = reads.first().cloned() else {
            return Err(anyhow!("no replica to read back from"));
        };
        for (name, read) in reads.iter().skip(1) {
            if read.revision != first.revision {
                others.push(format!(
                    "replicas at different revisions after the clients stopped: {first_name} at {}, {name} at {}",
                    first.revision, read.revision
                ));
            }
            if read.keys != first.keys || read.foreign != first.foreign {
                let only_first: Vec<&Key> = first.keys.difference(&read.keys).take(3).collect();
                let only_other: Vec<&Key> = read.keys.difference(&first.keys).take(3).collect();
                others.push(format!(
                    "replicas disagree: {first_name} ({} relationships at {}) and {name} ({} at {}); only on {first_name}: {}; only on {name}: {}",
                    first.keys.len(),
                    first.revision,
                    read.keys.len(),
                    read.revision,
                    show(&only_first),
                    show(&only_other)
                ));
            }
        }
        let ledger = lock(&w.ledger).clone();
        let verdict = verify(&ledger, &first.keys, &first.foreign);
        Ok((verdict, first, others))
    }

    async fn replica_kill(
        &mut self,
        trial: u64,
        total: u64,
        rng: &mut Rng,
        totals: &mut Totals,
    ) -> Result<()> {
        let victim = rng.below(self.targets.len() as u64) as usize;
        let w = Workload::new(
            trial,
            self.config.seed,
            self.baseline.clone(),
            self.targets.clone(),
        );
        let tasks = w.spawn(
            self.config.writers,
            self.config.deleters,
            self.config.importers,
        );
        let run_for = self.config.run_time(rng);
        tokio::time::sleep(run_for).await;

        w.set_target(victim, None);
        let in_flight = pending(&w);
        let server = self
            .servers
            .get_mut(victim)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("replica-{victim} is not running"))?;
        server.kill()?;
        totals.kills += 1;
        // The writes go on through the others: the victim has to catch up.
        let down_for = Duration::from_millis(200 + rng.below(1300));
        tokio::time::sleep(down_for).await;

        let spec = self
            .specs
            .get(victim)
            .cloned()
            .ok_or_else(|| anyhow!("no replica-{victim}"))?;
        let mut again = String::new();
        if rng.percent(30) {
            let after = Duration::from_millis(rng.below(600));
            let starting = spec.spawn()?;
            tokio::time::sleep(after).await;
            starting.kill()?;
            totals.kills += 1;
            again = format!(", killed again {}ms into its restart", after.as_millis());
        }
        let restarted = spec.start(START_TIMEOUT).await?;
        let restart_time = restarted.start_time;
        let target = Target::connect(&restarted.name, &restarted.endpoint).await?;
        if let Some(slot) = self.targets.get_mut(victim) {
            *slot = target.clone();
        }
        if let Some(slot) = self.servers.get_mut(victim) {
            *slot = Some(restarted);
        }
        // Straight back into use; meanwhile it must catch up with what was written while
        // it was down: a read at least as fresh as the newest acknowledged write.
        let newest = lock(&w.seen).last_token.clone();
        w.set_target(victim, Some(target.clone()));
        let mut others = Vec::new();
        let mut catch_up = Duration::ZERO;
        if let Some(token) = &newest {
            match wait_fresh(&target, token, CATCH_UP_TIMEOUT).await {
                Ok(d) => catch_up = d,
                Err(e) => others.push(format!("catch-up after the restart: {e:#}")),
            }
        }
        totals.slowest_catch_up = totals.slowest_catch_up.max(catch_up);
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        w.stop();
        join(tasks, JOIN_TIMEOUT).await;

        let (verdict, read, more) = self.check(&w).await?;
        others.extend(more);
        say(&format!(
            "trial {trial}/{total} replica kill: replica-{victim} killed after {:.2}s with {in_flight} calls in flight (all replicas), down {:.2}s{again}, restarted in {:.2}s, served the newest acknowledged write {:.2}s later; acknowledged {} ({}); unacknowledged {} ({}; {}); {} relationships, replicas agree at {}; {}",
            run_for.as_secs_f64(),
            down_for.as_secs_f64(),
            restart_time.as_secs_f64(),
            catch_up.as_secs_f64(),
            verdict.acked_total(),
            acked_breakdown(&verdict.acked),
            verdict.unacked_total(),
            fate_breakdown(&verdict.unacked),
            code_breakdown(&lock(&w.seen).errors),
            verdict.observed,
            read.revision,
            outcome(&verdict, &others)
        ));
        totals.trials += 1;
        totals.add(trial, &verdict, &others);
        self.baseline = read.keys;
        Ok(())
    }

    async fn postgres_restart(
        &mut self,
        trial: u64,
        total: u64,
        rng: &mut Rng,
        totals: &mut Totals,
    ) -> Result<()> {
        let w = Workload::new(
            trial,
            self.config.seed,
            self.baseline.clone(),
            self.targets.clone(),
        );
        let mut tasks = w.spawn(
            self.config.writers,
            self.config.deleters,
            self.config.importers,
        );
        tasks.extend(w.spawn_checkers());
        let run_for = self.config.run_time(rng) / 2;
        tokio::time::sleep(run_for).await;

        let in_flight = pending(&w);
        let stop_at = Instant::now();
        tokio::task::block_in_place(|| self.cluster.crash())?;
        let down_at = Instant::now();
        totals.pg_restarts += 1;
        // Every other outage outlasts two of the replicas' 10 s waits for a pooled
        // connection: writes sent meanwhile must then fail, not wait for Postgres.
        let outage = if totals.pg_restarts.is_multiple_of(2) {
            Duration::from_millis(21_000 + rng.below(4000))
        } else {
            Duration::from_millis(2000 + rng.below(3000))
        };
        tokio::time::sleep(outage).await;
        let up_at = Instant::now();
        tokio::task::block_in_place(|| self.cluster.start())?;
        let started_at = Instant::now();
        totals.outage_time += started_at.duration_since(down_at);

        // Writes must succeed again.
        let mut others = Vec::new();
        let recovered = loop {
            let acked_since = lock(&w.seen)
                .attempts
                .iter()
                .filter(|a| a.error.is_none() && a.sent >= started_at)
                .map(|a| a.done)
                .min();
            if let Some(at) = acked_since {
                break Some(at.duration_since(started_at));
            }
            if started_at.elapsed() > WRITE_RECOVERY_TIMEOUT {
                others.push(format!(
                    "no write was acknowledged in the {WRITE_RECOVERY_TIMEOUT:?} after Postgres started again"
                ));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.stop();
        join(tasks, JOIN_TIMEOUT).await;

        // What happened while Postgres was down: from the end of the stop to the end of
        // the start (which includes its crash recovery). A write acknowledged before the
        // start even began is a violation.
        let (mut checks_ok, mut checks_wrong, mut checks_failed) = (0usize, 0usize, 0usize);
        let mut check_errors: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut writes = OutageWrites::default();
        {
            let seen = lock(&w.seen);
            for c in seen
                .checks
                .iter()
                .filter(|c| c.sent >= down_at && c.done <= started_at)
            {
                match c.result {
                    Ok(true) => checks_ok += 1,
                    Ok(false) => checks_wrong += 1,
                    Err(code) => {
                        checks_failed += 1;
                        *check_errors.entry(code).or_default() += 1;
                    }
                }
            }
            for a in &seen.attempts {
                if a.sent < stop_at && a.done >= stop_at {
                    match a.error {
                        None => writes.cut_acked += 1,
                        Some(code) => *writes.cut_failed.entry(code).or_default() += 1,
                    }
                    continue;
                }
                if a.sent < down_at || a.sent >= started_at {
                    continue;
                }
                writes.sent += 1;
                writes.slowest = writes.slowest.max(a.done.duration_since(a.sent));
                match a.error {
                    None if a.done <= up_at => others.push(format!(
                        "a write sent {:.2}s into the Postgres outage was acknowledged {:.2}s into it",
                        a.sent.duration_since(down_at).as_secs_f64(),
                        a.done.duration_since(down_at).as_secs_f64()
                    )),
                    None => writes.acked_after += 1,
                    Some(code) => *writes.failed.entry(code).or_default() += 1,
                }
            }
        }
        if checks_failed > 0 {
            others.push(format!(
                "{checks_failed} Checks at minimize_latency failed while Postgres was down ({})",
                code_breakdown(&check_errors)
            ));
        }
        if checks_wrong > 0 {
            others.push(format!(
                "{checks_wrong} Checks of the probe answered denied while Postgres was down"
            ));
        }
        totals.outage_checks_ok += checks_ok;
        totals.outage_checks_wrong += checks_wrong;
        totals.outage_checks_failed += checks_failed;
        totals.outage_writes.add(&writes);
        if let Some(r) = recovered {
            totals.slowest_write_recovery = totals.slowest_write_recovery.max(r);
        }

        let (verdict, read, more) = self.check(&w).await?;
        others.extend(more);
        say(&format!(
            "trial {trial}/{total} Postgres restart: stopped -m immediate after {:.2}s with {in_flight} calls in flight (all replicas), down {:.2}s (stopped {:.2}s, then {:.2}s for pg_ctl start to recover and accept connections); meanwhile {checks_ok} Checks answered, {checks_failed} failed; {}; writes back {}; acknowledged {} ({}); unacknowledged {} ({}; {}); {} relationships, replicas agree at {}; {}",
            run_for.as_secs_f64(),
            started_at.duration_since(down_at).as_secs_f64(),
            outage.as_secs_f64(),
            started_at.duration_since(up_at).as_secs_f64(),
            writes.describe(),
            recovered.map_or_else(|| "never".to_string(), |d| format!("{:.2}s after it accepted connections", d.as_secs_f64())),
            verdict.acked_total(),
            acked_breakdown(&verdict.acked),
            verdict.unacked_total(),
            fate_breakdown(&verdict.unacked),
            code_breakdown(&lock(&w.seen).errors),
            verdict.observed,
            read.revision,
            outcome(&verdict, &others)
        ));
        totals.trials += 1;
        totals.add(trial, &verdict, &others);
        self.baseline = read.keys;
        Ok(())
    }
}

/// The writes (writes, deletes, imports) around one Postgres outage, or summed over
/// several.
#[derive(Debug, Clone, Default)]
pub struct OutageWrites {
    /// In flight when the stop began: acknowledged, failed by code.
    pub cut_acked: usize,
    pub cut_failed: BTreeMap<&'static str, usize>,
    /// Sent while Postgres was down.
    pub sent: usize,
    /// Of those: failed by code, acknowledged once Postgres was back.
    pub failed: BTreeMap<&'static str, usize>,
    pub acked_after: usize,
    /// The longest any of them took to be answered.
    pub slowest: Duration,
}

impl OutageWrites {
    pub fn add(&mut self, o: &OutageWrites) {
        self.cut_acked += o.cut_acked;
        self.sent += o.sent;
        self.acked_after += o.acked_after;
        self.slowest = self.slowest.max(o.slowest);
        for (c, n) in &o.cut_failed {
            *self.cut_failed.entry(c).or_default() += n;
        }
        for (c, n) in &o.failed {
            *self.failed.entry(c).or_default() += n;
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "writes in flight at the stop: {} acknowledged, failed {}; writes sent while down: {}, failed {}, acknowledged after Postgres returned {}, slowest answer {:.1}s",
            self.cut_acked,
            code_breakdown(&self.cut_failed),
            self.sent,
            code_breakdown(&self.failed),
            self.acked_after,
            self.slowest.as_secs_f64()
        )
    }
}

fn pending(w: &Workload) -> usize {
    lock(&w.ledger)
        .ops()
        .iter()
        .filter(|op| op.outcome == Outcome::Pending)
        .count()
}

fn outcome(verdict: &Verdict, others: &[String]) -> String {
    let n = verdict.violations.len() + others.len();
    if n == 0 {
        "ok".to_string()
    } else {
        format!("{n} VIOLATIONS")
    }
}

fn show(keys: &[&Key]) -> String {
    if keys.is_empty() {
        return "none".to_string();
    }
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
