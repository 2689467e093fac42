//! The HTTP side: `/healthz` (the process answers), `/readyz` (the graph is loaded and
//! the server accepts calls), Prometheus `/metrics` and the AuthZEN API (`authzen`).
//! Every response echoes the request's `X-Request-ID`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::PresharedKey;
use crate::grpc::Shared;

/// Reports the store's size on disk, in bytes.
#[derive(Clone)]
pub struct StoreSize(pub Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for StoreSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSize")
    }
}

#[derive(Debug, Clone)]
struct HttpState {
    shared: Arc<Shared>,
    store_bytes: StoreSize,
}

pub fn router(
    shared: Arc<Shared>,
    key: Option<PresharedKey>,
    store_bytes: StoreSize,
    authzen: crate::authzen::Config,
) -> Router {
    let authzen = crate::authzen::router(shared.clone(), key.clone(), authzen);
    let state = HttpState {
        shared,
        store_bytes,
    };
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(key, require_key));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /healthz, /readyz, /metrics, /access/v1/... or /.well-known/authzen-configuration\n",
            )
        })
        .with_state(state)
        .merge(authzen)
        .layer(middleware::from_fn(echo_request_id))
}

/// Copies the request's `X-Request-ID` onto the response (AuthZEN: a PDP MUST return the
/// identifier the PEP sent), whatever the route and the outcome.
async fn echo_request_id(request: Request, next: Next) -> Response {
    let id = request.headers().get(REQUEST_ID).cloned();
    let mut response = next.run(request).await;
    if let Some(id) = id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

const REQUEST_ID: &str = "x-request-id";

async fn require_key(
    State(key): State<Option<PresharedKey>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = key {
        if let Err(reason) = key.verify(request.headers()) {
            return (StatusCode::UNAUTHORIZED, format!("{reason}\n")).into_response();
        }
    }
    next.run(request).await
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if let (true, Some(Err(reason))) =
        (state.shared.ready.load(Ordering::Acquire), state.shared.replica.as_ref().map(|r| r.ready()))
    {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response();
    }
    if state.shared.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading the graph\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let m = &state.shared.metrics;
    let graph = state.shared.engine.current();
    m.relationships.set(graph.len() as i64);
    m.revision.set(graph.revision as i64);
    if let Some(replica) = &state.shared.replica {
        m.rejected.set(replica.rejected.load(std::sync::atomic::Ordering::Relaxed) as i64);
    }
    let probe = state.store_bytes.0.clone();
    if let Ok(bytes) = tokio::task::spawn_blocking(move || probe()).await {
        m.store_bytes.set(bytes as i64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        m.render(),
    )
        .into_response()
}

/// Serves `app` on `listener` (over TLS when a PEM certificate and key are given) until
/// `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    transport: crate::serve::Transport,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Every route answers within the request timeout (503 past it).
    let timeout = transport.request_timeout;
    let app = app.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| async move {
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than --request-timeout ({timeout:?})\n"),
            )
                .into_response(),
        }
    }));
    let Some((cert, key)) = tls else {
        use axum::serve::ListenerExt as _;
        // Responses go out at once (no Nagle wait for the client's delayed ACK).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY on an HTTP connection: {e}");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await?;
        return Ok(());
    };
    let acceptor = tls_acceptor(&cert, &key)?;
    let handshake = transport.tls_handshake_timeout;
    // Connections are watched, so that shutdown drains them as the plain port does.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("HTTP accept failed: {e}");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on an HTTP connection: {e}");
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A client that opens a connection and never finishes its handshake is cut
            // off instead of holding a task forever.
            let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake took longer than --tls-handshake-timeout");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

fn tls_acceptor(cert: &[u8], key: &[u8]) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("invalid TLS certificate: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("the TLS certificate file holds no certificate");
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| anyhow::anyhow!("invalid TLS key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| anyhow::anyhow!("TLS certificate and key do not fit: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
