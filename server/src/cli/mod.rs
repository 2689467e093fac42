//! Command-line entry: parses arguments and dispatches to one module per subcommand.
//! Every flag also reads `ARBITER_<FLAG>` from the environment.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::grpc::Limits;
use crate::serve::ServeOptions;

mod backup;
mod client;
mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "arbiter",
    version,
    about = "Arbiter: a Zanzibar-style policy decision point"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "ARBITER_LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the policy decision point: gRPC on --grpc-addr, HTTP on --http-addr.
    Serve(Box<ServeArgs>),
    /// Apply the Postgres migrations (idempotent).
    Migrate {
        /// The database (`postgres://user@host/db`).
        #[arg(long, env = "ARBITER_POSTGRES", hide_env_values = true)]
        postgres: String,
    },
    /// Copy the embedded store to a new directory that `serve --data-dir` can start from
    /// (works while a server has the store open).
    Backup {
        #[arg(long, env = "ARBITER_DATA_DIR", default_value = "./arbiter-data")]
        data_dir: PathBuf,
        /// The new directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run validation files (SpiceDB's YAML format): load each into a fresh engine and
    /// check its assertions and expected relations.
    Validate {
        /// Files, or directories whose `*.yaml` files are all run.
        #[arg(required = true, value_name = "FILE_OR_DIR")]
        paths: Vec<PathBuf>,
    },
    /// The admin server (tenants, users, groups, roles, API keys on Postgres), or
    /// `admin bootstrap` to create the first tenant and a platform operator key.
    Admin(Box<arbiter_admin::AdminArgs>),
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where the embedded store lives.
    #[arg(long, env = "ARBITER_DATA_DIR", default_value = "./arbiter-data")]
    data_dir: PathBuf,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "ARBITER_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: String,
    /// HTTP listen address for the AuthZEN API, /healthz, /readyz and /metrics (port 0
    /// picks a free port).
    #[arg(long, env = "ARBITER_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// The public base URL of the HTTP port (`https://pdp.example.com`), published as the
    /// AuthZEN PDP identifier and endpoint URLs; by default they are built from each
    /// request's Host.
    #[arg(long, env = "ARBITER_AUTHZEN_BASE_URL", value_parser = crate::authzen::parse_base_url)]
    authzen_base_url: Option<String>,
    /// A schema file written at start (refused like an API write if invalid or if it
    /// would orphan relationships).
    #[arg(long, env = "ARBITER_SCHEMA")]
    schema: Option<PathBuf>,
    /// A directory of Cedar policy files (`*.cedar`), written at start as the whole
    /// policy set (refused like an API write if a policy is invalid).
    #[arg(long, env = "ARBITER_POLICIES")]
    policies: Option<PathBuf>,
    /// Require `authorization: Bearer KEY` on every call but health checks.
    #[arg(long, env = "ARBITER_PRESHARED_KEY", hide_env_values = true)]
    preshared_key: Option<String>,
    /// Load the family/circle demo when the store is empty.
    #[arg(long, env = "ARBITER_DEMO")]
    demo: bool,
    /// PEM certificate chain for TLS on both ports (with --tls-key).
    #[arg(long, env = "ARBITER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "ARBITER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// How long earlier revisions stay readable with at_exact_snapshot.
    #[arg(long, env = "ARBITER_HISTORY_WINDOW", default_value = "10m", value_parser = parse_duration)]
    history_window: Duration,
    /// How long the changelog keeps revisions for Watch to resume from.
    #[arg(long, env = "ARBITER_CHANGELOG_WINDOW", default_value = "24h", value_parser = parse_duration)]
    changelog_window: Duration,
    /// How often expired relationships are removed from storage.
    #[arg(long, env = "ARBITER_SWEEP_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    sweep_interval: Duration,
    /// Maximum recursion depth of a Check.
    #[arg(long, env = "ARBITER_MAX_DEPTH", default_value_t = 50)]
    max_depth: u32,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "ARBITER_MAX_MESSAGE_SIZE", default_value_t = 4 << 20)]
    max_message_size: usize,
    /// Updates plus preconditions allowed in one write.
    #[arg(long, env = "ARBITER_MAX_UPDATES_PER_WRITE", default_value_t = 1000)]
    max_updates_per_write: usize,
    /// Items allowed in one CheckBulk.
    #[arg(long, env = "ARBITER_MAX_BULK_CHECKS", default_value_t = 1000)]
    max_bulk_checks: usize,
    /// Import streams that may run at once (more are refused with RESOURCE_EXHAUSTED).
    #[arg(long, env = "ARBITER_MAX_CONCURRENT_IMPORTS", default_value_t = 4)]
    max_concurrent_imports: usize,
    /// The most results one page of a lookup or read holds: a larger limit is refused
    /// (0 streams every result, this many at a time); AuthZEN searches page at most this.
    #[arg(long, env = "ARBITER_MAX_PAGE_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_page_size: u32,
    /// Lookups, reads and exports (every API) that run at once; more wait their turn,
    /// within the request timeout.
    #[arg(long, env = "ARBITER_MAX_HEAVY_CALLS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    max_heavy_calls: u32,
    /// How long a send to a streaming client (Export, Watch) waits for it to read before
    /// the stream is ended with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ARBITER_STREAM_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    stream_send_timeout: Duration,
    /// Longest a call may take on either port (a shorter gRPC client deadline wins);
    /// streams (Watch, Export, Lookups) are bounded only in how they open.
    #[arg(long, env = "ARBITER_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// HTTP/2 streams one gRPC connection may have open at once.
    #[arg(long, env = "ARBITER_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    max_concurrent_streams: u32,
    /// HTTP/2 keepalive ping interval on gRPC connections (a peer that does not answer
    /// within 10 s is dropped).
    #[arg(long, env = "ARBITER_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    keepalive_interval: Duration,
    /// Longest a TLS handshake may take, on both ports.
    #[arg(long, env = "ARBITER_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    tls_handshake_timeout: Duration,
    /// Relationships allowed in one ImportRelationships message.
    #[arg(long, env = "ARBITER_MAX_IMPORT_BATCH", default_value_t = 10_000)]
    max_import_batch: usize,
    /// Postgres as the source of truth (`postgres://user@host/db`); the data dir then
    /// holds this replica's snapshot.
    #[arg(long, env = "ARBITER_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    /// Apply the migrations before serving (with --postgres).
    #[arg(long, env = "ARBITER_MIGRATE", requires = "postgres")]
    migrate: bool,
    /// How long a read asking for a revision this replica has not applied yet waits
    /// (with --postgres).
    #[arg(long, env = "ARBITER_CONSISTENCY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    consistency_timeout: Duration,
    /// How often a replica polls Postgres when no NOTIFY arrives (with --postgres).
    #[arg(long, env = "ARBITER_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Log sampled Check decisions, in batches off the Check path: to a JSON-lines FILE,
    /// or `postgres` for the `arbiter_decision_logs` table (with --postgres).
    #[arg(long, env = "ARBITER_DECISION_LOG")]
    decision_log: Option<String>,
    /// The fraction of decisions logged (0 < F <= 1): 0.01 logs one in a hundred.
    #[arg(long, env = "ARBITER_DECISION_LOG_SAMPLE", default_value_t = 1.0)]
    decision_log_sample: f64,
}

/// `250ms`, `10s`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration `{s}`: write e.g. 250ms, 10s, 5m, 2h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "invalid duration `{s}`: the unit must be ms, s, m, h or d"
            ))
        }
    };
    Ok(d)
}

/// The policies of Cedar files, in order (`arbiter policy write`, `serve --policies`):
/// a policy's id is its `@id("...")` annotation, else `FILE:N`; an id used twice across
/// the files is an error naming the file.
pub fn read_policy_files(files: &[PathBuf]) -> anyhow::Result<Vec<arbiter_engine::PolicyText>> {
    let mut policies: Vec<arbiter_engine::PolicyText> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for p in arbiter_engine::split_policies(&name, &text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))? {
            if policies.iter().any(|q| q.id == p.id) {
                anyhow::bail!("{}: the policy id `{}` is used twice", file.display(), p.id);
            }
            policies.push(p);
        }
    }
    Ok(policies)
}

fn init_logging(format: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // sqlx reports every statement over a second at WARN, which a replica's bulk read of
    // the whole relationships table always is; say `sqlx` in RUST_LOG to see them.
    let mentions_sqlx = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("sqlx"));
    if !mentions_sqlx {
        if let Ok(quiet) = "sqlx::query=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => validate::run(&paths),
        Command::Serve(a) => {
            init_logging(&cli.log_format);
            let opts = ServeOptions {
                data_dir: a.data_dir,
                grpc_addr: a.grpc_addr,
                http_addr: a.http_addr,
                schema: a.schema,
                policies: a.policies,
                preshared_key: a.preshared_key,
                demo: a.demo,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                history_window: a.history_window,
                changelog_window: a.changelog_window,
                sweep_interval: a.sweep_interval,
                max_depth: a.max_depth,
                limits: Limits {
                    max_message_bytes: a.max_message_size,
                    max_updates_per_write: a.max_updates_per_write,
                    max_bulk_checks: a.max_bulk_checks,
                    max_import_batch: a.max_import_batch,
                    max_concurrent_imports: a.max_concurrent_imports,
                    stream_send_timeout: a.stream_send_timeout,
                    max_page_size: a.max_page_size as usize,
                    max_heavy_calls: a.max_heavy_calls as usize,
                },
                transport: crate::serve::Transport {
                    request_timeout: a.request_timeout,
                    max_concurrent_streams: a.max_concurrent_streams,
                    keepalive_interval: a.keepalive_interval,
                    keepalive_timeout: Duration::from_secs(10),
                    tls_handshake_timeout: a.tls_handshake_timeout,
                },
                postgres: a.postgres,
                migrate: a.migrate,
                consistency_timeout: a.consistency_timeout,
                poll_interval: a.poll_interval,
                decision_log: a.decision_log,
                decision_log_sample: a.decision_log_sample,
                authzen_base_url: a.authzen_base_url,
            };
            match crate::serve::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Backup { data_dir, out } => backup::run(&data_dir, &out),
        Command::Migrate { postgres } => {
            init_logging(&cli.log_format);
            migrate(&postgres)
        }
        Command::Admin(a) => {
            init_logging(&cli.log_format);
            admin(*a)
        }
        Command::Client(c) => client::run(c),
    }
}

/// `arbiter admin`: the PDP's migrations and platform part first when asked (they are
/// one set), then the admin crate. `bootstrap` prints its key as the last line.
fn admin(args: arbiter_admin::AdminArgs) -> ExitCode {
    let run = async move {
        match &args.command {
            Some(arbiter_admin::AdminCommand::Bootstrap(b)) => {
                let done = arbiter_admin::bootstrap::run(b).await?;
                println!("tenant_id={}", done.tenant_id);
                println!("user_id={}", done.user_id);
                println!("revision={}", crate::token::encode(done.revision));
                println!("api_key={}", done.api_key);
                anyhow::Ok(())
            }
            None => {
                if args.serve.migrate {
                    let url = args.serve.postgres.as_deref().unwrap_or_default();
                    let pg = crate::postgres::PgSource::connect(url).await?;
                    pg.migrate().await?;
                    crate::postgres::install_platform(&pg).await?;
                }
                arbiter_admin::server::run(&args.serve).await
            }
        }
    };
    exit_code(tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run)))
}

/// 0, or 1 with the error on stderr.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn migrate(url: &str) -> ExitCode {
    let run = async {
        let pg = crate::postgres::PgSource::connect(url).await?;
        pg.migrate().await?;
        let applied = crate::postgres::MIGRATOR.iter().count();
        let platform = match crate::postgres::install_platform(&pg).await? {
            Some(revision) => format!("platform part installed at {}", crate::token::encode(revision)),
            None => "platform part current".to_string(),
        };
        println!("migrated {} ({applied} migrations, {platform})", crate::postgres::redact(url));
        anyhow::Ok(())
    };
    exit_code(tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "10", "s", "1.5s", "10 s", "-1s", "3w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
