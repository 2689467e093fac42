//! The admin process: connect, bind, print the ready line
//! (`arbiter admin ready addr=HOST:PORT`), serve until SIGINT/SIGTERM, then drain
//! in-flight requests and exit 0.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use crate::cli::ServeArgs;
use crate::db::Db;
use crate::http::{App, AppInner};
use crate::metrics::Metrics;
use crate::pdp::Pdp;
use crate::secrets::Secrets;

/// Serves until a shutdown signal. The caller has applied migrations when asked.
pub async fn run(args: &ServeArgs) -> Result<()> {
    let url = args.postgres.as_deref().ok_or_else(|| anyhow!("--postgres is required"))?;
    if args.max_page_size == 0 {
        return Err(anyhow!("--max-page-size must be at least 1"));
    }
    if !(args.jobs_interval.is_finite() && (0.01..=3600.0).contains(&args.jobs_interval)) {
        return Err(anyhow!("--jobs-interval must be 0.01 to 3600 seconds"));
    }
    if !crate::api::policies::is_valid_name(&args.environment) {
        return Err(anyhow!("--environment `{}` is not a name (lower-case letters, digits, `-` and `_`, at most 63)", args.environment));
    }
    let secrets = Secrets::load(args.secrets_file.as_deref())?;
    let db = Db::connect(url).await?;
    db.check_migrated().await?;
    let metrics = Metrics::new().context("cannot register the metrics")?;
    let pdp = Pdp::new(&args.pdp_endpoint, args.pdp_key.as_deref(), metrics.clone())?;
    let limiter = crate::ratelimit::RateLimiter::new(args.rate_limit);
    let webhooks = crate::webhook::Webhooks::new(args.webhook_allow_private_networks)?;
    if args.webhook_allow_private_networks {
        tracing::warn!("--webhook-allow-private-networks: webhooks may use http:// and reach this host's own networks (development and tests only)");
    }
    let app = App(Arc::new(AppInner { db, pdp, secrets, metrics, max_page_size: args.max_page_size, limiter, environment: args.environment.clone(), max_bulk_size: args.max_bulk_size, webhooks }));
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("cannot listen on --addr {}", args.addr))?;
    let addr = listener.local_addr()?;
    crate::jobs::spawn(app.clone(), std::time::Duration::from_secs_f64(args.jobs_interval));
    let router = crate::http::router(app, args.max_body_size);
    tracing::info!(%addr, pdp = %args.pdp_endpoint, postgres = %crate::db::redact(url), "admin server ready");
    println!("arbiter admin ready addr={addr}");
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await
        .context("the HTTP server failed")?;
    tracing::info!("admin server stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}
