//! Embedded mode: one `arbiter serve` on its RocksDB store. Each trial runs the clients
//! against it, kills it with SIGKILL at a random moment, restarts it on the same data
//! dir (one restart in five is itself killed while it opens the store), reads
//! everything back and checks it; the restarted server serves the next trial. Every
//! `reset_every` trials the store starts again empty.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arbiter_proto::arbiter::v1 as pb;

use super::ledger::{verify, Key, Outcome};
use super::process::{Server, ServerSpec};
use super::workload::{export, join, lock, Target, Workload};
use super::{acked_breakdown, code_breakdown, fate_breakdown, say, Config, Totals};
use crate::rng::Rng;

/// How long a server may take to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the clients may take to stop after the kill.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(config: &Config, totals: &mut Totals) -> Result<()> {
    let mut rng = Rng::new(config.seed, 0xc4a5_e000, 0);
    let mut generation = 0u64;
    let mut spec = store_spec(config, generation);
    let mut baseline: BTreeSet<Key> = BTreeSet::new();
    let mut server: Option<Server> = None;
    for trial in 1..=config.trials {
        if config.resets_before(trial) {
            if let Some(s) = server.take() {
                s.kill()?;
            }
            let old = spec.data_dir.clone();
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("remove the store {}", old.display()))?;
            generation += 1;
            spec = store_spec(config, generation);
            baseline.clear();
            say(&format!(
                "reset: a new empty store {}",
                spec.data_dir.display()
            ));
        }
        let running = match server.take() {
            Some(s) => s,
            None => {
                // A new store: the schema is written at start.
                let first = ServerSpec {
                    schema: Some(config.schema.clone()),
                    ..spec.clone()
                };
                first.start(START_TIMEOUT).await?
            }
        };
        let target = Target::connect(&running.name, &running.endpoint).await?;
        let w = Workload::new(trial, config.seed, baseline.clone(), vec![target]);
        let tasks = w.spawn(config.writers, config.deleters, config.importers);
        let run_for = config.run_time(&mut rng);
        tokio::time::sleep(run_for).await;

        let in_flight = lock(&w.ledger)
            .ops()
            .iter()
            .filter(|op| op.outcome == Outcome::Pending)
            .count();
        // No new calls from here: the ones in flight are cut by the kill.
        w.stop();
        running.kill()?;
        totals.kills += 1;
        join(tasks, JOIN_TIMEOUT).await;

        // Sometimes the restart is killed too, while it opens (and recovers) the store.
        let mut again = String::new();
        if rng.percent(20) {
            let after = Duration::from_millis(rng.below(800));
            let starting = spec.spawn()?;
            tokio::time::sleep(after).await;
            starting.kill()?;
            totals.kills += 1;
            again = format!(", killed again {}ms into the restart", after.as_millis());
        }
        let restarted = spec.start(START_TIMEOUT).await?;
        let restart_time = restarted.start_time;
        let target = Target::connect(&restarted.name, &restarted.endpoint).await?;
        let read = read_back(&target).await?;
        let ledger = lock(&w.ledger).clone();
        let verdict = verify(&ledger, &read.keys, &read.foreign);
        say(&format!(
            "trial {trial}/{}: kill -9 after {:.2}s with {in_flight} calls in flight{again}; acknowledged {} ({}); unacknowledged {} ({}; {}); restart {:.2}s; {} relationships read back at {}; {}",
            config.trials,
            run_for.as_secs_f64(),
            verdict.acked_total(),
            acked_breakdown(&verdict.acked),
            verdict.unacked_total(),
            fate_breakdown(&verdict.unacked),
            code_breakdown(&lock(&w.seen).errors),
            restart_time.as_secs_f64(),
            verdict.observed,
            read.revision,
            if verdict.violations.is_empty() { "ok".to_string() } else { format!("{} VIOLATIONS", verdict.violations.len()) }
        ));
        totals.trials += 1;
        totals.add(trial, &verdict, &[]);
        baseline = read.keys;
        server = Some(restarted);
    }
    if let Some(s) = server {
        s.kill()?;
    }
    Ok(())
}

fn store_spec(config: &Config, generation: u64) -> ServerSpec {
    ServerSpec {
        name: "arbiter".to_string(),
        binary: config.arbiter.clone(),
        data_dir: config.work.join(format!("store-{generation}")),
        schema: None,
        postgres: None,
        log: config.work.join("arbiter.log"),
    }
}

/// Everything the restarted server holds.
async fn read_back(target: &Target) -> Result<super::workload::ReadBack> {
    let started = Instant::now();
    loop {
        match export(target, pb::consistency::Requirement::FullyConsistent(true)).await {
            Ok(r) => return Ok(r),
            Err(s) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!(
                    "export from {} failed, retrying: {}",
                    target.name,
                    s.message()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(s) => {
                return Err(anyhow::anyhow!(
                    "cannot export from the restarted {}: {}",
                    target.name,
                    s.message()
                ))
            }
        }
    }
}
