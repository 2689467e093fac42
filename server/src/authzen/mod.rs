//! The OpenID AuthZEN Authorization API 1.0 on the HTTP port: access evaluation (one and
//! boxcarred), subject / resource / action search with paging, and the PDP metadata
//! document at `/.well-known/authzen-configuration`.
//!
//! Mapping: a subject `{type, id}` is the Arbiter subject `type:id` (an object, never a
//! subject set: the spec has no relation on a subject), a resource `{type, id}` the
//! object checked, an action's `name` the permission or relation checked. The request
//! `context` is the Cedar context; `subject.properties` and `resource.properties` are
//! values of the principal's and the resource's request-supplied attributes for that
//! request (declared with source `request`; a stored attribute given there is refused,
//! undeclared keys are left out, mistyped ones refused).
//!
//! Errors: a request that is not what the spec says (bad JSON, a missing or mistyped
//! field), or that names what the schema does not define, is a 400 with
//! `{"error": {"status": 400, "message": "..."}}`; in a batch, an item the engine refuses
//! is `{"decision": false, "context": {"error": {...}}}` and the others are answered. A
//! missing or wrong preshared key is a 401. A decision, allowed or denied, is a 200.

use std::sync::Arc;
use std::time::Instant;

use arbiter_engine::{
    CheckRequest, CheckResponse, Consistency, Decision, EngineError, LookupResourcesRequest, LookupSubjectsRequest,
};
use arbiter_proto::arbiter::v1 as pb;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::auth::PresharedKey;
use crate::grpc::Shared;

mod page;
mod wire;

use page::Kind;
use wire::{BadRequest, Evaluation, Evaluations, Search, Semantic};

/// How the metadata document names this server.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `--authzen-base-url`: the PDP identifier and the base of every endpoint URL. Without
    /// it they are built from the request's `Host` and the port's scheme.
    pub base_url: Option<String>,
    /// Whether the HTTP port serves TLS (the scheme of derived URLs).
    pub tls: bool,
}

#[derive(Debug, Clone)]
struct AuthzenState {
    shared: Arc<Shared>,
    config: Arc<Config>,
}

pub const EVALUATION: &str = "/access/v1/evaluation";
pub const EVALUATIONS: &str = "/access/v1/evaluations";
pub const SEARCH_SUBJECT: &str = "/access/v1/search/subject";
pub const SEARCH_RESOURCE: &str = "/access/v1/search/resource";
pub const SEARCH_ACTION: &str = "/access/v1/search/action";
pub const CONFIGURATION: &str = "/.well-known/authzen-configuration";

/// The AuthZEN routes, behind the preshared key when there is one.
pub fn router(shared: Arc<Shared>, key: Option<PresharedKey>, config: Config) -> Router {
    let state = AuthzenState { shared, config: Arc::new(config) };
    Router::new()
        .route(EVALUATION, post(evaluation))
        .route(EVALUATIONS, post(evaluations))
        .route(SEARCH_SUBJECT, post(search_subject))
        .route(SEARCH_RESOURCE, post(search_resource))
        .route(SEARCH_ACTION, post(search_action))
        .route(CONFIGURATION, get(configuration))
        .with_state(state)
        .layer(middleware::from_fn_with_state(key, require_key))
}

/// A refused request: its HTTP status and a message naming the problem.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Failure { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn response(&self) -> Response {
        error_response(self.status, &self.message)
    }
}

impl From<BadRequest> for Failure {
    fn from(BadRequest(message): BadRequest) -> Self {
        Failure::bad(message)
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure { status: crate::convert::http_status(e.kind()), message: crate::convert::message(&e) }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Failure { status: crate::convert::http_status_of_code(s.code()), message: s.message().to_string() }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": {"status": status.as_u16(), "message": message}}))
}

/// `authorization: Bearer KEY` when the server has a key; a JSON 401 otherwise.
async fn require_key(State(key): State<Option<PresharedKey>>, request: Request, next: Next) -> Response {
    if let Some(key) = key {
        if let Err(reason) = key.verify(request.headers()) {
            let mut response = error_response(StatusCode::UNAUTHORIZED, reason);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// The body as a JSON object, refusing one that is not declared JSON (415: the spec's
/// requests are `application/json`) and one over `--max-message-size`.
async fn read_body(state: &AuthzenState, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, Failure> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if !content_type.as_deref().is_some_and(is_json) {
        let given = content_type.map_or("none".to_string(), |t| format!("`{t}`"));
        return Err(Failure {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("the request body must be JSON (`content-type: application/json`); the content type given is {given}"),
        });
    }
    let limit = state.shared.limits.max_message_bytes;
    let too_large = || Failure::bad(format!("the request body is larger than the limit of {limit} bytes (`--max-message-size`)"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    Ok(wire::parse_body(&bytes)?)
}

/// `application/json`, or a `+json` type, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The engine's question for one evaluation.
fn check_request(e: &Evaluation, consistency: Consistency) -> CheckRequest<'_> {
    CheckRequest {
        resource_type: &e.resource.kind,
        resource_id: &e.resource.id,
        permission: &e.action,
        subject_type: &e.subject.kind,
        subject_id: &e.subject.id,
        subject_relation: None,
        consistency,
        context: e.context.as_ref(),
        principal_attributes: e.subject.properties.as_ref(),
        resource_attributes: e.resource.properties.as_ref(),
    }
}

/// An answer as AuthZEN gives it. A conditional one is a denial (the decision is a
/// boolean), with the caveat parameters it waits on in `context.missing_context`.
fn decision_json(d: Decision, missing: &[String]) -> Value {
    match d {
        Decision::Conditional => json!({"decision": false, "context": {"conditional": true, "missing_context": missing}}),
        d => json!({"decision": d == Decision::Allowed}),
    }
}

/// A batch item the engine refused: denied, with the reason (the spec's per-item error).
fn item_error(e: &EngineError) -> Value {
    let status = crate::convert::http_status(e.kind()).as_u16();
    json!({"decision": false, "context": {"error": {"status": status, "message": crate::convert::message(e)}}})
}

impl AuthzenState {
    /// Records the request's metrics and turns its result into the response.
    fn finish(&self, route: &'static str, start: Instant, result: Result<Value, Failure>) -> Response {
        let response = match result {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(failure) => {
                tracing::debug!(route, status = failure.status.as_u16(), "{}", failure.message);
                failure.response()
            }
        };
        self.shared.metrics.record_http(route, response.status().as_u16(), start);
        response
    }

    /// Offers a sampled decision to the decision log, with the caller's request id.
    fn log(&self, method: &'static str, e: &Evaluation, allowed: bool, revision: u64, start: Instant, headers: &HeaderMap) {
        let Some(log) = self.shared.decisions.get() else { return };
        if !log.sampled() {
            return;
        }
        let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
        log.offer(crate::decisions::DecisionRecord {
            decision_id: log.next_id(),
            evaluated_at: chrono::Utc::now(),
            resource: format!("{}:{}", e.resource.kind, e.resource.id),
            permission: e.action.clone(),
            subject: format!("{}:{}", e.subject.kind, e.subject.id),
            decision: if allowed { "allowed" } else { "denied" },
            policy_version: revision,
            latency_us: start.elapsed().as_micros() as u64,
            trace_id: crate::decisions::trace_id(&metadata),
            method,
        });
    }

    fn evaluate_one(&self, e: &Evaluation, start: Instant, headers: &HeaderMap) -> Result<Value, Failure> {
        let span = tracing::debug_span!(
            "authzen.evaluation",
            resource = %format_args!("{}:{}", e.resource.kind, e.resource.id),
            action = %e.action,
            subject = %format_args!("{}:{}", e.subject.kind, e.subject.id),
        );
        let _entered = span.enter();
        let answer = self.shared.engine.check(&check_request(e, Consistency::MinimizeLatency))?;
        self.log("AuthZEN evaluation", e, answer.decision == Decision::Allowed, answer.revision, start, headers);
        Ok(decision_json(answer.decision, &answer.missing_context))
    }

    fn evaluate_batch(&self, items: &[Evaluation], semantic: Semantic, start: Instant, headers: &HeaderMap) -> Result<Value, Failure> {
        let _entered = tracing::debug_span!("authzen.evaluations", items = items.len(), ?semantic).entered();
        let requests: Vec<CheckRequest<'_>> =
            items.iter().map(|e| check_request(e, Consistency::MinimizeLatency)).collect();
        let engine = &self.shared.engine;
        let allowed = |a: &Result<CheckResponse, EngineError>| matches!(a, Ok(r) if r.decision == Decision::Allowed);
        let (answers, revision): (Vec<Result<CheckResponse, EngineError>>, u64) = match semantic {
            Semantic::ExecuteAll => engine.check_bulk_responses(&requests, Consistency::MinimizeLatency)?,
            // An error counts as a denial (the spec: "any denial (error, or decision: false)");
            // so does a conditional answer, which keeps its missing parameters.
            Semantic::DenyOnFirstDeny => engine.check_until(&requests, Consistency::MinimizeLatency, |a| !allowed(a))?,
            Semantic::PermitOnFirstPermit => engine.check_until(&requests, Consistency::MinimizeLatency, allowed)?,
        };
        let results: Vec<Value> = answers
            .iter()
            .zip(items)
            .map(|(answer, e)| match answer {
                Ok(d) => {
                    self.log("AuthZEN evaluations", e, d.decision == Decision::Allowed, revision, start, headers);
                    decision_json(d.decision, &d.missing_context)
                }
                Err(err) => item_error(err),
            })
            .collect();
        Ok(json!({"evaluations": results}))
    }

    /// Waits (on a replica) for the revision a continued search read its first page at.
    async fn fresh_for(&self, position: Option<&page::Position>) -> Result<(), Failure> {
        let consistency = position.map(|p| pb::Consistency {
            requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(crate::token::encode(p.revision))),
        });
        Ok(self.shared.fresh(consistency.as_ref()).await?)
    }
}

async fn evaluation(State(state): State<AuthzenState>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let result = async {
        let body = read_body(&state, &headers, body).await?;
        let e = wire::evaluation(&body)?;
        state.shared.fresh(None).await?;
        state.evaluate_one(&e, start, &headers)
    }
    .await;
    state.finish("evaluation", start, result)
}

async fn evaluations(State(state): State<AuthzenState>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let result = async {
        let body = read_body(&state, &headers, body).await?;
        let request = wire::evaluations(&body, state.shared.limits.max_bulk_checks)?;
        state.shared.fresh(None).await?;
        match request {
            Evaluations::Single(e) => state.evaluate_one(&e, start, &headers),
            Evaluations::Batch { items, semantic } => {
                // A big batch runs off the async workers (see `grpc::INLINE_BATCH`).
                let (state, headers) = (state.clone(), headers.clone());
                let n = items.len();
                crate::grpc::batch(n, move || state.evaluate_batch(&items, semantic, start, &headers))
                    .await
                    .map_err(|e| Failure { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.message().to_string() })?
            }
        }
    }
    .await;
    state.finish("evaluations", start, result)
}

/// Whether a search must re-check what the lookup found: the lookups apply Cedar forbids
/// without a context or request attributes, so with either, a forbid may yet deny.
fn needs_recheck(q: &Evaluation) -> bool {
    q.context.is_some() || q.subject.properties.is_some() || q.resource.properties.is_some()
}

/// Which of `ids` (put on one side of `q` by `place`) the engine allows, at `revision`.
fn recheck<'a>(
    shared: &Shared,
    q: &'a Evaluation,
    ids: &'a [String],
    revision: u64,
    place: impl Fn(&mut CheckRequest<'a>, &'a str),
) -> Result<Vec<bool>, Failure> {
    let consistency = Consistency::AtExactSnapshot(revision);
    let requests: Vec<CheckRequest<'_>> = ids
        .iter()
        .map(|id| {
            let mut r = check_request(q, consistency);
            place(&mut r, id);
            r
        })
        .collect();
    let (answers, _) = shared.engine.check_bulk(&requests, consistency)?;
    answers.into_iter().map(|a| Ok(a? == Decision::Allowed)).collect()
}

fn page_json(kind: Kind, fingerprint: u64, revision: u64, next: Option<String>, count: usize) -> Value {
    let next_token = next
        .map(|after| page::encode(kind, fingerprint, &page::Position { revision, after }))
        .unwrap_or_default();
    json!({"next_token": next_token, "count": count})
}

/// Runs a search off the async workers.
async fn blocking(f: impl FnOnce() -> Result<Value, Failure> + Send + 'static) -> Result<Value, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("a worker failed: {e}") })?
}

/// [`blocking`] for a search, in its turn among the server's heavy calls
/// (`--max-heavy-calls`).
async fn heavy_blocking(
    shared: &Arc<Shared>,
    f: impl FnOnce() -> Result<Value, Failure> + Send + 'static,
) -> Result<Value, Failure> {
    let turn = shared
        .heavy_turn()
        .await
        .map_err(|_| Failure { status: StatusCode::SERVICE_UNAVAILABLE, message: "the server is shutting down".into() })?;
    blocking(move || {
        let _turn = turn;
        f()
    })
    .await
}

/// Parses a search and its page token, and waits for the token's revision.
async fn start_search(
    state: &AuthzenState,
    headers: &HeaderMap,
    body: Body,
    parse: fn(&Map<String, Value>) -> Result<Search, BadRequest>,
    kind: Kind,
) -> Result<(Search, u64, Option<page::Position>), Failure> {
    let body = read_body(state, headers, body).await?;
    let search = parse(&body)?;
    let q = &search.query;
    let fingerprint = match kind {
        Kind::Subject => page::fingerprint(kind, &[&q.subject.kind, &q.resource.kind, &q.resource.id, &q.action]),
        Kind::Resource => page::fingerprint(kind, &[&q.subject.kind, &q.subject.id, &q.resource.kind, &q.action]),
        Kind::Action => page::fingerprint(kind, &[&q.subject.kind, &q.subject.id, &q.resource.kind, &q.resource.id]),
    };
    let position = search
        .page
        .token
        .as_deref()
        .map(|t| page::decode(kind, fingerprint, t))
        .transpose()
        .map_err(Failure::bad)?;
    state.fresh_for(position.as_ref()).await?;
    Ok((search, fingerprint, position))
}

fn consistency_after(position: Option<&page::Position>) -> Consistency {
    position.map_or(Consistency::MinimizeLatency, |p| Consistency::AtLeastAsFresh(p.revision))
}

async fn search_subject(State(state): State<AuthzenState>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let result = async {
        let (search, fingerprint, position) =
            start_search(&state, &headers, body, wire::subject_search, Kind::Subject).await?;
        let shared = state.shared.clone();
        heavy_blocking(&state.shared, move || {
            let q = &search.query;
            let _entered = tracing::debug_span!(
                "authzen.search_subject",
                resource = %format_args!("{}:{}", q.resource.kind, q.resource.id),
                action = %q.action,
                subject_type = %q.subject.kind,
            )
            .entered();
            if needs_recheck(q) {
                shared.engine.validate_request_values(&check_request(q, consistency_after(position.as_ref())))?;
            }
            let found = shared.engine.lookup_subjects(&LookupSubjectsRequest {
                context: q.context.as_ref(),
                resource_type: &q.resource.kind,
                resource_id: &q.resource.id,
                permission: &q.action,
                subject_type: &q.subject.kind,
                subject_relation: None,
                consistency: consistency_after(position.as_ref()),
                cursor: position.as_ref().map(|p| p.after.as_str()),
                limit: Some(page::limit(search.page.limit, shared.limits.max_page_size)),
                written_subject_sets_only: false,
            })?;
            // A subject allowed only on a condition is not allowed (AuthZEN's decisions are
            // booleans): left out.
            let (wildcards, mut subjects): (Vec<_>, Vec<_>) = found
                .subjects
                .into_iter()
                .filter(|s| s.missing_context.is_empty())
                .partition(|s| s.subject_id == "*");
            if needs_recheck(q) {
                let ids: Vec<String> = subjects.iter().map(|s| s.subject_id.clone()).collect();
                let keep = recheck(&shared, q, &ids, found.revision, |r, id| r.subject_id = id)?;
                let mut keep = keep.into_iter();
                subjects.retain(|_| keep.next().unwrap_or(false));
            }
            // A wildcard is every subject of the type but the excluded ids (it sorts first).
            let mut results: Vec<Value> = wildcards
                .into_iter()
                .map(|w| json!({"type": q.subject.kind, "id": "*", "properties": {"excluded_ids": w.excluded_ids()}}))
                .collect();
            results.extend(subjects.into_iter().map(|s| json!({"type": q.subject.kind, "id": s.subject_id})));
            let page = page_json(Kind::Subject, fingerprint, found.revision, found.next_cursor, results.len());
            Ok(json!({"results": results, "page": page}))
        })
        .await
    }
    .await;
    state.finish("search_subject", start, result)
}

async fn search_resource(State(state): State<AuthzenState>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let result = async {
        let (search, fingerprint, position) =
            start_search(&state, &headers, body, wire::resource_search, Kind::Resource).await?;
        let shared = state.shared.clone();
        heavy_blocking(&state.shared, move || {
            let q = &search.query;
            let _entered = tracing::debug_span!(
                "authzen.search_resource",
                resource_type = %q.resource.kind,
                action = %q.action,
                subject = %format_args!("{}:{}", q.subject.kind, q.subject.id),
            )
            .entered();
            if needs_recheck(q) {
                shared.engine.validate_request_values(&check_request(q, consistency_after(position.as_ref())))?;
            }
            let found = shared.engine.lookup_resources(&LookupResourcesRequest {
                context: q.context.as_ref(),
                resource_type: &q.resource.kind,
                permission: &q.action,
                subject_type: &q.subject.kind,
                subject_id: &q.subject.id,
                subject_relation: None,
                consistency: consistency_after(position.as_ref()),
                cursor: position.as_ref().map(|p| p.after.as_str()),
                limit: Some(page::limit(search.page.limit, shared.limits.max_page_size)),
            })?;
            // A resource allowed only on a condition is not allowed: left out.
            let mut ids: Vec<String> =
                found.resources.into_iter().filter(|r| r.missing_context.is_empty()).map(|r| r.id).collect();
            if needs_recheck(q) {
                let keep = recheck(&shared, q, &ids, found.revision, |r, id| r.resource_id = id)?;
                let mut keep = keep.into_iter();
                ids.retain(|_| keep.next().unwrap_or(false));
            }
            let results: Vec<Value> = ids.into_iter().map(|id| json!({"type": q.resource.kind, "id": id})).collect();
            let page = page_json(Kind::Resource, fingerprint, found.revision, found.next_cursor, results.len());
            Ok(json!({"results": results, "page": page}))
        })
        .await
    }
    .await;
    state.finish("search_resource", start, result)
}

/// The actions (permissions and relations of the resource's type) the subject may take
/// on the resource, in name order: each checked like an evaluation, at one revision.
async fn search_action(State(state): State<AuthzenState>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let result = async {
        let (search, fingerprint, position) =
            start_search(&state, &headers, body, wire::action_search, Kind::Action).await?;
        let q = &search.query;
        let _entered = tracing::debug_span!(
            "authzen.search_action",
            resource = %format_args!("{}:{}", q.resource.kind, q.resource.id),
            subject = %format_args!("{}:{}", q.subject.kind, q.subject.id),
        )
        .entered();
        let graph = state.shared.engine.current();
        let plan = graph.plan.as_deref().ok_or(EngineError::NoSchema)?;
        let (_, definition) = plan
            .schema
            .definition_by_name(&q.resource.kind)
            .ok_or_else(|| EngineError::UnknownType(q.resource.kind.clone()))?;
        let mut names: Vec<&str> = definition.relations.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(p) = &position {
            names.retain(|n| *n > p.after.as_str());
        }
        let consistency = Consistency::AtExactSnapshot(graph.revision);
        let requests: Vec<CheckRequest<'_>> = names
            .iter()
            .map(|name| CheckRequest { permission: name, ..check_request(q, consistency) })
            .collect();
        let (answers, revision) = state.shared.engine.check_bulk(&requests, consistency)?;
        let mut allowed = Vec::new();
        for (name, answer) in names.iter().zip(answers) {
            if answer? == Decision::Allowed {
                allowed.push(*name);
            }
        }
        let limit = page::limit(search.page.limit, state.shared.limits.max_page_size);
        let next = (allowed.len() > limit).then(|| allowed.get(limit - 1).map(|n| n.to_string())).flatten();
        allowed.truncate(limit);
        let results: Vec<Value> = allowed.iter().map(|name| json!({"name": name})).collect();
        let page = page_json(Kind::Action, fingerprint, revision, next, results.len());
        Ok(json!({"results": results, "page": page}))
    }
    .await;
    state.finish("search_action", start, result)
}

/// The PDP metadata: its identifier and the URL of every endpoint, under
/// `--authzen-base-url` or else the request's `Host` with the port's scheme.
async fn configuration(State(state): State<AuthzenState>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let start = Instant::now();
    let derived = state.config.base_url.is_none();
    let result = base_url(&state.config, &headers, &uri).map(|base| {
        json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}{EVALUATION}"),
            "access_evaluations_endpoint": format!("{base}{EVALUATIONS}"),
            "search_subject_endpoint": format!("{base}{SEARCH_SUBJECT}"),
            "search_resource_endpoint": format!("{base}{SEARCH_RESOURCE}"),
            "search_action_endpoint": format!("{base}{SEARCH_ACTION}"),
        })
    });
    let mut response = state.finish("configuration", start, result);
    if response.status() == StatusCode::OK {
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
        if derived {
            h.insert(header::VARY, HeaderValue::from_static("host"));
        }
    }
    response
}

fn base_url(config: &Config, headers: &HeaderMap, uri: &axum::http::Uri) -> Result<String, Failure> {
    if let Some(base) = &config.base_url {
        return Ok(base.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '"', '\\']))
        .ok_or_else(|| Failure::bad("the request has no usable `Host`: send one, or start the server with `--authzen-base-url`"))?;
    let scheme = if config.tls { "https" } else { "http" };
    Ok(format!("{scheme}://{host}"))
}

/// Checks `--authzen-base-url`: an http(s) URL without query or fragment; returned
/// without a trailing slash.
pub fn parse_base_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let uri: axum::http::Uri = trimmed.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!("`{url}` must be an http:// or https:// URL with a host"));
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return Err(format!("`{url}` must not have a query or a fragment"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn base_urls_are_http_urls_without_query_or_fragment() {
        assert_eq!(parse_base_url("https://pdp.example.com/").unwrap(), "https://pdp.example.com");
        assert_eq!(parse_base_url("http://10.0.0.1:8080/authz").unwrap(), "http://10.0.0.1:8080/authz");
        for bad in ["pdp.example.com", "ftp://pdp", "https://pdp/?a=1", "https://pdp/#x", "https://"] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_base_urls_use_the_host_and_the_ports_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("pdp.local:8080"));
        let uri: axum::http::Uri = "/.well-known/authzen-configuration".parse().unwrap();
        let plain = Config { base_url: None, tls: false };
        assert_eq!(base_url(&plain, &headers, &uri).unwrap(), "http://pdp.local:8080");
        let tls = Config { base_url: None, tls: true };
        assert_eq!(base_url(&tls, &headers, &uri).unwrap(), "https://pdp.local:8080");
        let fixed = Config { base_url: Some("https://pdp.example.com".into()), tls: false };
        assert_eq!(base_url(&fixed, &headers, &uri).unwrap(), "https://pdp.example.com");
        assert!(base_url(&plain, &HeaderMap::new(), &uri).is_err());
    }
}
