//! The router: the API under `/v1`, `/openapi.json`, `/healthz`, `/readyz` and
//! `/metrics`; every request gets an id (`X-Request-Id`, kept from the client when it is
//! sane) and is counted by route and status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::db::Db;
use crate::metrics::Metrics;
use crate::pdp::Pdp;
use crate::problem::Problem;
use crate::secrets::Secrets;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct App(pub Arc<AppInner>);

#[derive(Debug)]
pub struct AppInner {
    pub db: Db,
    pub pdp: Pdp,
    pub secrets: Secrets,
    pub metrics: Metrics,
    pub max_page_size: u32,
    pub limiter: crate::ratelimit::RateLimiter,
    /// The environment whose active policies the PDP enforces (`--environment`).
    pub environment: String,
    /// Largest bulk provisioning body, in bytes (`--max-bulk-size`).
    pub max_bulk_size: usize,
    /// The client alerts' webhooks are sent with.
    pub webhooks: crate::webhook::Webhooks,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Who sent a request, for the audit trail.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The request id as the middleware fixed it.
#[derive(Debug, Clone)]
struct RequestId(String);

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<RequestContext, Problem> {
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        let client_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect());
        Ok(RequestContext { request_id, client_ip, user_agent })
    }
}

pub fn router(app: App, max_body: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(crate::api::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Request id, metrics and a JSON log line per request.
async fn observe(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let limited = !matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let refused = match client {
        Some(ip) if limited => app.limiter.take(ip).err(),
        _ => None,
    };
    let mut response = match refused {
        Some(wait) => {
            let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, format!("too many requests from this address (`--rate-limit`); retry in {wait}s")).into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                p.headers_mut().insert(header::RETRY_AFTER, v);
            }
            p
        }
        None => next.run(request).await,
    };
    let status = response.status().as_u16();
    app.metrics.record(&route, status, start);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(request_id = %id, %method, route = %route, status, elapsed_ms = start.elapsed().as_millis() as u64, "request");
    response
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: Postgres answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses(
    (status = 200, description = "Postgres answers"),
    (status = 503, description = "Postgres does not answer", body = Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(app): State<App>) -> Response {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), sqlx::query("SELECT 1").execute(&app.db.pool)).await;
    match ping {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(e)) => Problem::fault(StatusCode::SERVICE_UNAVAILABLE, "Postgres does not answer", &e).into_response(),
        Err(_) => Problem::unavailable("Postgres did not answer within 2s").into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(app): State<App>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()), responses((status = 200, description = "The OpenAPI 3.1 document")))]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::api::openapi_json()).into_response()
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method")
}
