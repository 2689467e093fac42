//! The preshared key: with `--preshared-key`, every gRPC call (but the health service)
//! and every HTTP call (but `/healthz` and `/readyz`) must carry
//! `authorization: Bearer <key>`. Keys are compared in constant time.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

#[derive(Debug, Clone)]
pub struct PresharedKey(Arc<[u8]>);

impl PresharedKey {
    pub fn new(key: &str) -> Self {
        PresharedKey(Arc::from(key.as_bytes()))
    }

    /// `Ok` when the headers carry the key; otherwise the reason, for the error message.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(
                "missing `authorization: Bearer <key>`: this server requires a preshared key",
            );
        };
        let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return Err("the `authorization` header must be `Bearer <key>`");
        };
        if constant_time_eq(given, &self.0) {
            Ok(())
        } else {
            Err("invalid preshared key")
        }
    }
}

/// Whether `given` is `key`, in time that depends only on the key's length: every byte
/// of the key is compared whatever was given (a shorter `given` is compared against
/// zeros), and the lengths are compared in the same fold, so neither an early mismatch
/// nor a wrong length answers sooner.
fn constant_time_eq(given: &[u8], key: &[u8]) -> bool {
    let mut diff = given.len() ^ key.len();
    for (i, k) in key.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        diff |= usize::from(g ^ k);
    }
    std::hint::black_box(diff) == 0
}

/// Paths that answer without a key: liveness and readiness probes.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// A tower layer for the gRPC server: refuses unauthenticated calls with
/// UNAUTHENTICATED before they reach a service, ends a call that outlives its deadline
/// (`--request-timeout`, or the client's `grpc-timeout` when shorter) with
/// DEADLINE_EXCEEDED, and gives unreadable requests the client's status.
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    pub key: Option<PresharedKey>,
    pub request_timeout: std::time::Duration,
}

impl<S> Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth {
            inner,
            key: self.key.clone(),
            request_timeout: self.request_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    key: Option<PresharedKey>,
    request_timeout: std::time::Duration,
}

impl<S, B, RB> Service<Request<B>> for GrpcAuth<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(key) = &self.key {
            if !exempt(req.uri().path()) {
                if let Err(reason) = key.verify(req.headers()) {
                    let response = tonic::Status::unauthenticated(reason).into_http::<RB>();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        let client = req.headers().get("grpc-timeout").and_then(|v| grpc_timeout(v.as_bytes()));
        let (limit, whose) = match client {
            Some(c) if c < self.request_timeout => (c, "the client's deadline"),
            _ => (self.request_timeout, "the server's `--request-timeout`"),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            // A stream's deadline covers its opening (the handler's answer), not the
            // stream: those are bounded per send (`--stream-send-timeout`).
            let Ok(answer) = tokio::time::timeout(limit, fut).await else {
                let status = tonic::Status::deadline_exceeded(format!("the call did not finish within {limit:?} ({whose})"));
                return Ok(status.into_http::<RB>());
            };
            let mut response = answer?;
            unreadable_is_invalid_argument(&mut response);
            readable_grpc_message(&mut response);
            Ok(response)
        })
    }
}

/// A `grpc-timeout` header's value (`<digits><unit>`, at most 8 digits, unit one of
/// `H M S m u n`); `None` when it is not one.
fn grpc_timeout(v: &[u8]) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// tonic answers a request it cannot read with codes that blame the server:
/// OUT_OF_RANGE for one over `--max-message-size`, INTERNAL for bytes that are not the
/// method's message (a bad varint, a truncated field, a string that is not UTF-8,
/// nesting past the decoder's recursion limit). Both are the client's mistake, so
/// Arbiter's contract is INVALID_ARGUMENT (DESIGN §5, §8): the limit named, or the
/// decoder's own account of what is wrong (the field and the reason). The refusal is a
/// trailers-only response, so its status is in the headers.
fn unreadable_is_invalid_argument<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    // Only the two codes are looked at further (every answer passes here).
    let code = match headers.get("grpc-status").map(http::HeaderValue::as_bytes) {
        Some(b"11") => 11,
        Some(b"13") => 13,
        _ => return,
    };
    let message = headers.get("grpc-message").map(|m| String::from_utf8_lossy(m.as_bytes()).replace("%20", " "));
    let Some(message) = message else { return };
    match code {
        11 if message.contains("message length too large") => {
            let message = "the request is larger than the server accepts (`--max-message-size`)";
            headers.insert("grpc-status", http::HeaderValue::from_static("3"));
            if let Ok(v) = http::HeaderValue::from_str(&message.replace(' ', "%20").replace('`', "%60")) {
                headers.insert("grpc-message", v);
            }
        }
        13 if message.contains("failed to decode Protobuf message") => {
            headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        }
        _ => {}
    }
}

/// tonic percent-encodes `#` and `?` in `grpc-message`, which gRPC does not require
/// (only bytes outside printable ASCII, and `%`) and which Node's gRPC client then shows
/// undecoded (`doc:1%23viewer`). Error messages name relationships, so a status carried in
/// the headers (every unary error) gets them back as plain characters. A literal `%` is
/// `%25`, so no `%23`/`%3F` in the encoded text comes from the message itself.
fn readable_grpc_message<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    let Some(message) = headers.get("grpc-message").and_then(|m| m.to_str().ok()) else { return };
    if !message.contains("%23") && !message.contains("%3F") {
        return;
    }
    let plain = message.replace("%23", "#").replace("%3F", "?");
    if let Ok(v) = http::HeaderValue::from_str(&plain) {
        headers.insert("grpc-message", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = value.parse() {
            h.insert(http::header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn grpc_messages_keep_hash_and_question_marks_plain() {
        let status = tonic::Status::already_exists("relationship `doc:1#viewer@user:a` 100% there?");
        let mut response = status.into_http::<()>();
        readable_grpc_message(&mut response);
        let message = response.headers().get("grpc-message").map(|m| m.to_str().unwrap_or_default().to_string());
        assert_eq!(message.as_deref(), Some("relationship%20%60doc:1#viewer@user:a%60%20100%25%20there?"));
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_nothing_else() {
        use std::time::Duration;
        assert_eq!(grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(grpc_timeout(b"7n"), Some(Duration::from_nanos(7)));
        for bad in [&b""[..], b"S", b"123456789S", b"-1S", b"1s", b"1.5S", b"12"] {
            assert_eq!(grpc_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_the_exact_bearer_key_passes() {
        let key = PresharedKey::new("s3cret");
        assert!(key.verify(&headers("Bearer s3cret")).is_ok());
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret!",
            "bearer s3cret",
            "s3cret",
            "Basic s3cret",
            "",
        ] {
            assert!(key.verify(&headers(bad)).is_err(), "{bad:?} passed");
        }
        assert!(key
            .verify(&HeaderMap::new())
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn keys_of_every_length_compare_by_every_byte() {
        let key = b"s3cret";
        assert!(constant_time_eq(key, key));
        // Prefixes, extensions (also by zero bytes, which a short key is padded with)
        // and one-byte changes at each position are all refused.
        for n in 0..key.len() {
            assert!(!constant_time_eq(&key[..n], key));
        }
        assert!(!constant_time_eq(b"s3cret\0", key));
        assert!(!constant_time_eq(b"s3cret\0\0\0\0\0\0\0\0", key));
        for i in 0..key.len() {
            let mut changed = key.to_vec();
            changed[i] ^= 1;
            assert!(!constant_time_eq(&changed, key));
        }
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
