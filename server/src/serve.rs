//! `arbiter serve`: open the embedded store, rebuild the graph, serve gRPC and HTTP,
//! print the ready line, sweep expired relationships, and drain on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use arbiter_engine::{Engine, EngineConfig};
use arbiter_proto::arbiter::v1::permission_service_server::PermissionServiceServer;
use arbiter_proto::arbiter::v1::relationship_service_server::RelationshipServiceServer;
use arbiter_proto::arbiter::v1::schema_service_server::SchemaServiceServer;
use arbiter_proto::authzed::api::v1::permissions_service_server::PermissionsServiceServer as AuthzedPermissionsServer;
use arbiter_proto::authzed::api::v1::schema_service_server::SchemaServiceServer as AuthzedSchemaServer;
use arbiter_proto::authzed::api::v1::watch_service_server::WatchServiceServer as AuthzedWatchServer;
use arbiter_rocksdb_store::{RocksStore, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{GrpcAuthLayer, PresharedKey};
use crate::grpc::authzed::{AuthzedPermissions, AuthzedSchema, AuthzedWatch};
use crate::grpc::permission::Permissions;
use crate::grpc::relationship::Relationships;
use crate::grpc::schema::Schemas;
use crate::grpc::{Limits, Shared};
use crate::http::StoreSize;
use crate::metrics::Metrics;
use crate::postgres::replica::{Replica, ReplicaOptions};
use crate::postgres::{redact, PgSource};
use crate::token;

/// How often the compactor looks at the graph, and how long writes must have been quiet
/// before it folds a small delta in.
const COMPACT_EVERY: Duration = Duration::from_millis(200);
const COMPACT_WHEN_QUIET: Duration = Duration::from_secs(1);
/// How long the decision log's writer may take at shutdown to write what is queued.
const DECISION_LOG_FLUSH: Duration = Duration::from_secs(10);

/// Everything `arbiter serve` takes (see `cli`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub grpc_addr: String,
    pub http_addr: String,
    pub schema: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub preshared_key: Option<String>,
    pub demo: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub history_window: Duration,
    pub changelog_window: Duration,
    pub sweep_interval: Duration,
    pub max_depth: u32,
    pub limits: Limits,
    pub transport: Transport,
    /// `--postgres URL`: Postgres is the source of truth; the data dir holds the snapshot.
    pub postgres: Option<String>,
    /// `--migrate`: apply the migrations before serving.
    pub migrate: bool,
    /// How long a read may wait for a revision this replica has not applied yet.
    pub consistency_timeout: Duration,
    /// How often a replica polls Postgres when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// `--decision-log FILE|postgres`.
    pub decision_log: Option<String>,
    /// `--decision-log-sample F`.
    pub decision_log_sample: f64,
    /// `--authzen-base-url`: the PDP identifier the AuthZEN metadata publishes (checked,
    /// without a trailing slash).
    pub authzen_base_url: Option<String>,
}

/// The demo loaded by `--demo` (also a validation file the test suite runs).
/// Transport bounds on both ports (README "Security").
#[derive(Debug, Clone)]
pub struct Transport {
    /// Longest a unary call, or the opening of a stream, may take (a shorter client
    /// deadline wins).
    pub request_timeout: Duration,
    /// HTTP/2 streams one gRPC connection may hold open at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive pings on idle gRPC connections, and how long an answer may take.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Longest a TLS handshake may take, on both ports.
    pub tls_handshake_timeout: Duration,
}

pub const DEMO: &str = include_str!("demo/demo.yaml");

pub fn run(opts: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("arbiter")
        // Checks evaluate Cedar policies (recursive) on these threads, workers and
        // blocking pool alike: a known stack that every admitted policy fits.
        .thread_stack_size(arbiter_engine::bounds::EVALUATION_STACK_BYTES)
        .build()
        .context("start the async runtime")?;
    runtime.block_on(serve(opts))
}

async fn serve(opts: ServeOptions) -> Result<()> {
    let tls = load_tls(&opts)?;
    let key = opts.preshared_key.as_deref().map(PresharedKey::new);
    if opts.preshared_key.as_deref().is_some_and(str::is_empty) {
        bail!("`--preshared-key` is empty");
    }

    let started = std::time::Instant::now();
    let config = EngineConfig { max_depth: opts.max_depth, history_window: opts.history_window, ..EngineConfig::default() };
    let store_options = StoreOptions { sync: true, changelog_window: opts.changelog_window };
    let (engine, store, replica) = match &opts.postgres {
        None => {
            let store =
                Arc::new(RocksStore::open(&opts.data_dir, store_options).map_err(|e| anyhow!("cannot open the store: {e}"))?);
            let engine = Arc::new(
                Engine::open(Box::new(store.clone()), config)
                    .map_err(|e| anyhow!("cannot load the store in {}: {e}", opts.data_dir.display()))?,
            );
            (engine, store, None)
        }
        Some(url) => {
            let pg = PgSource::connect(url).await?;
            if opts.migrate {
                pg.migrate().await?;
                crate::postgres::install_platform(&pg).await?;
            } else {
                pg.check_migrated().await?;
            }
            let replica_options =
                ReplicaOptions { consistency_timeout: opts.consistency_timeout, poll_interval: opts.poll_interval };
            let (replica, store, kind) =
                Replica::start(pg, &opts.data_dir, store_options, config, replica_options).await?;
            tracing::info!(?kind, postgres = %redact(url), "following Postgres");
            (replica.engine.clone(), store, Some(replica))
        }
    };
    tracing::info!(
        relationships = engine.current().len(),
        revision = engine.revision(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "graph loaded from {}",
        opts.data_dir.display()
    );
    let metrics = Metrics::new().map_err(|e| anyhow!("cannot set up metrics: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(r) = &replica {
        r.observe_lag(metrics.replica_lag.clone());
    }
    let decision_log = match opts.decision_log.as_deref() {
        None => None,
        Some("postgres") => {
            let replica = replica.as_ref().ok_or_else(|| anyhow!("`--decision-log postgres` needs --postgres"))?;
            Some(crate::decisions::Sink::Postgres(replica.pg.pool.clone()))
        }
        Some(path) => Some(crate::decisions::Sink::File(PathBuf::from(path))),
    };
    let decision_log = match decision_log {
        None => None,
        Some(sink) => Some(
            crate::decisions::DecisionLog::start(
                sink,
                opts.decision_log_sample,
                metrics.decisions_logged.clone(),
                metrics.decisions_dropped.clone(),
            )
            .context("--decision-log")?,
        ),
    };
    let shared = Shared::new(engine.clone(), opts.limits, metrics, stop_rx.clone(), replica.clone());
    if let Some(log) = decision_log {
        let _ = shared.decisions.set(log);
    }
    // On a replica the follower runs before anything is written at start: a write
    // (`--demo`, `--schema`, `--policies`) waits for its own revision to be applied here.
    let follower = replica.clone().map(|r| tokio::spawn(r.follow(stop_rx.clone())));
    if opts.demo {
        load_demo(&shared).await?;
    }
    if let Some(path) = &opts.schema {
        apply_schema(&shared, path).await?;
    }
    if let Some(dir) = &opts.policies {
        apply_policies(&shared, dir).await?;
    }

    let grpc_listener = TcpListener::bind(&opts.grpc_addr)
        .await
        .map_err(|e| anyhow!("cannot bind the gRPC address `{}`: {e}", opts.grpc_addr))?;
    let http_listener = TcpListener::bind(&opts.http_addr)
        .await
        .map_err(|e| anyhow!("cannot bind the HTTP address `{}`: {e}", opts.http_addr))?;
    let grpc_local = grpc_listener.local_addr()?;
    let http_local = http_listener.local_addr()?;

    tokio::spawn(wait_for_signal(stop_tx));

    // gRPC.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PermissionServiceServer<Permissions>>()
        .await;
    health
        .set_serving::<RelationshipServiceServer<Relationships>>()
        .await;
    health.set_serving::<SchemaServiceServer<Schemas>>().await;
    health.set_serving::<AuthzedPermissionsServer<AuthzedPermissions>>().await;
    health.set_serving::<AuthzedSchemaServer<AuthzedSchema>>().await;
    health.set_serving::<AuthzedWatchServer<AuthzedWatch>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("build the reflection service")?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(arbiter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("build the reflection service")?;
    let max = opts.limits.max_message_bytes;
    let t = &opts.transport;
    // The request timeout is the auth layer's (it answers DEADLINE_EXCEEDED; tonic's own
    // would answer CANCELLED).
    let mut builder = Server::builder()
        .max_concurrent_streams(t.max_concurrent_streams)
        .http2_keepalive_interval(Some(t.keepalive_interval))
        .http2_keepalive_timeout(Some(t.keepalive_timeout));
    if let Some((cert, key_pem)) = &tls {
        builder = builder
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(cert, key_pem)).timeout(t.tls_handshake_timeout),
            )
            .context("configure TLS for gRPC")?;
    }
    let router = builder
        .layer(GrpcAuthLayer { key: key.clone(), request_timeout: t.request_timeout })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            PermissionServiceServer::new(Permissions(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            RelationshipServiceServer::new(Relationships(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            SchemaServiceServer::new(Schemas(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        // SpiceDB's API (authzed.api.v1) on the same port, behind the same key.
        .add_service(
            AuthzedPermissionsServer::new(AuthzedPermissions(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            AuthzedSchemaServer::new(AuthzedSchema(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            AuthzedWatchServer::new(AuthzedWatch(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    let mut grpc_stop = stop_rx.clone();
    // Replies go out at once: without TCP_NODELAY a reply written in two segments
    // waits for the client's delayed ACK (tens of milliseconds on Linux).
    let incoming = TcpListenerStream::new(grpc_listener).map(|conn| {
        conn.and_then(|stream| {
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    });
    let grpc = tokio::spawn(router.serve_with_incoming_shutdown(
        incoming,
        async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        },
    ));

    // HTTP.
    let probe_store = store.clone();
    let app = crate::http::router(
        shared.clone(),
        key,
        StoreSize(Arc::new(move || probe_store.size_bytes())),
        crate::authzen::Config { base_url: opts.authzen_base_url.clone(), tls: tls.is_some() },
    );
    let http = tokio::spawn(crate::http::serve(
        http_listener,
        app,
        tls.clone(),
        opts.transport.clone(),
        stop_rx.clone(),
    ));

    // Expired relationships: invisible at once, reclaimed here (in Postgres, which
    // every replica then applies, when Postgres is the source of truth). Replicas also
    // prune Postgres' changelog to the retention window.
    let sweep_engine = engine.clone();
    let sweep_replica = replica.clone();
    let sweep_interval = opts.sweep_interval;
    let changelog_window = opts.changelog_window;
    let mut sweep_stop = stop_rx.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sweep_stop.wait_for(|s| *s) => return,
            }
            let swept = match &sweep_replica {
                Some(replica) => {
                    let before = chrono::Utc::now()
                        - chrono::Duration::from_std(changelog_window).unwrap_or(chrono::Duration::days(1));
                    if let Err(e) = replica.pg.prune_changelog(before).await {
                        tracing::warn!("pruning the changelog failed: {e:#}");
                    }
                    replica.pg.sweep_expired().await.map(|n| n as usize).map_err(|e| format!("{e:#}"))
                }
                None => {
                    let engine = sweep_engine.clone();
                    tokio::task::spawn_blocking(move || engine.sweep_expired(arbiter_engine::now_micros()))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
            };
            match swept {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "swept expired relationships"),
                Err(e) => tracing::warn!("expiration sweep failed: {e}"),
            }
        }
    });

    // Writes land in a small persistent delta beside the flat indexes; folding it in
    // keeps reads at one probe per lookup. Off the request path, on a blocking thread.
    let compact_engine = engine.clone();
    let mut compact_stop = stop_rx.clone();
    let compactor = tokio::spawn(async move {
        let mut tick = tokio::time::interval(COMPACT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = compact_stop.wait_for(|s| *s) => return,
            }
            let engine = compact_engine.clone();
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || engine.compact_if_due(COMPACT_WHEN_QUIET)).await {
                Ok(true) => tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "compacted the graph"),
                Ok(false) => {}
                Err(e) => tracing::warn!("graph compaction failed: {e}"),
            }
        }
    });

    shared.ready.store(true, Ordering::Release);
    println!(
        "arbiter ready grpc={} http={} revision={}",
        display_addr(grpc_local),
        display_addr(http_local),
        token::encode(engine.revision())
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tracing::info!(grpc = %grpc_local, http = %http_local, tls = tls.is_some(), auth = opts.preshared_key.is_some(), "serving");

    let grpc_result = grpc.await;
    let _ = http.await;
    let _ = sweeper.await;
    let _ = compactor.await;
    if let Some(f) = follower {
        let _ = f.await;
    }
    // Every call is answered: what their decisions queued is written before exiting.
    if let Some(log) = shared.decisions.get() {
        log.close(DECISION_LOG_FLUSH).await;
    }
    shared.ready.store(false, Ordering::Release);
    match grpc_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("the gRPC server failed: {e}"),
        Err(e) => bail!("the gRPC server failed: {e}"),
    }
    tracing::info!("stopped; the store is closed cleanly");
    Ok(())
}

fn display_addr(a: SocketAddr) -> String {
    a.to_string()
}

/// Sets the stop flag on SIGINT or SIGTERM.
async fn wait_for_signal(stop: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    let _ = stop.send(true);
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: draining in-flight calls");
    let _ = stop.send(true);
}

fn load_tls(opts: &ServeOptions) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    match (&opts.tls_cert, &opts.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let c = std::fs::read(cert)
                .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?;
            let k = std::fs::read(key)
                .with_context(|| format!("cannot read the TLS key {}", key.display()))?;
            Ok(Some((c, k)))
        }
        _ => bail!("`--tls-cert` and `--tls-key` go together: give both or neither"),
    }
}

/// Loads the demo when the store is empty (no schema, no relationships).
async fn load_demo(shared: &Shared) -> Result<()> {
    let engine = &shared.engine;
    if engine.schema_text().is_some() || !engine.current().is_empty() {
        tracing::info!("--demo: the store is not empty; leaving it as it is");
        return Ok(());
    }
    let file = arbiter_schema::parse_validation_file(DEMO).map_err(|e| anyhow!("the built-in demo is invalid: {e}"))?;
    shared
        .write_schema(file.schema.clone())
        .await
        .map_err(|e| anyhow!("the built-in demo schema is invalid: {}", e.message()))?;
    let rels: Vec<_> = file.relationships.into_iter().map(|(_, r)| r).collect();
    let count = rels.len();
    shared.import(rels).await.map_err(|e| anyhow!("the built-in demo relationships are invalid: {}", e.message()))?;
    tracing::info!(relationships = count, "--demo: loaded the family/circle demo");
    Ok(())
}

/// `--policies DIR`: every `*.cedar` file in it (sorted by name), written at start as
/// the whole policy set like a write through the API, unless exactly these policies are
/// already in force.
async fn apply_policies(shared: &Shared, dir: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the policy directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let policies = crate::cli::read_policy_files(&files)?;
    if shared.engine.policy_model().policies == policies {
        return Ok(());
    }
    let n = policies.len();
    let revision = shared.write_policies(policies).await.map_err(|e| anyhow!("{}: {}", dir.display(), e.message()))?;
    tracing::info!(revision, "wrote {n} policies from {}", dir.display());
    Ok(())
}

/// `--schema FILE`: written at start like a write through the API (refused with the
/// usual error), unless the store already holds exactly this schema.
async fn apply_schema(shared: &Shared, path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the schema file {}", path.display()))?;
    if shared.engine.schema_text().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let revision = shared.write_schema(text).await.map_err(|e| anyhow!("{}: {}", path.display(), e.message()))?;
    tracing::info!(revision, "wrote the schema from {}", path.display());
    Ok(())
}
