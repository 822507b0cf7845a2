//! A tower layer in front of every gRPC route. It does what must happen before a request reaches
//! a handler or the codec, or after the codec has answered:
//!
//! - bearer-token auth (all services except grpc.health.v1, which probes call without tokens);
//! - while draining, new worker calls get UNAVAILABLE (health keeps answering NOT_SERVING);
//! - `grpc-timeout` becomes a [`Deadline`] request extension, stamped *before* tonic's own
//!   timeout timer starts, so the handler's deadline never falls after tonic's and a deadline
//!   ends as DEADLINE_EXCEEDED from the scheduler rather than as tonic's CANCELLED;
//! - tonic's codec answers an over-limit message with OUT_OF_RANGE; gRPC's core
//!   implementations (and RELIABILITY.md) say RESOURCE_EXHAUSTED, so the code is rewritten. No
//!   halo handler ever returns OUT_OF_RANGE, so the rewrite cannot hide one of ours.

use crate::auth::AuthToken;
use http::{HeaderMap, HeaderValue};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::body::Body;
use tonic::Status;

/// When the client's `grpc-timeout` runs out, as measured from arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
const WORKER_PREFIX: &str = "/halo.worker.v1.Worker/";

/// What the guard needs to decide.
pub struct GuardState {
    pub auth: Option<AuthToken>,
    /// Set once shutdown began.
    pub draining: Arc<AtomicBool>,
}

#[derive(Clone)]
pub struct GuardLayer {
    state: Arc<GuardState>,
}

impl GuardLayer {
    pub fn new(state: GuardState) -> Self {
        GuardLayer {
            state: Arc::new(state),
        }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    state: Arc<GuardState>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody> tower_service::Service<http::Request<ReqBody>> for Guard<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let arrival = Instant::now();
        if let Err(status) = self.admit(&req) {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        if let Some(timeout) = parse_grpc_timeout(req.headers()) {
            req.extensions_mut().insert(Deadline(arrival + timeout));
        }
        // The service that was polled ready handles this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            map_size_limit_code(response.headers_mut());
            Ok(response)
        })
    }
}

impl<S> Guard<S> {
    fn admit<B>(&self, req: &http::Request<B>) -> Result<(), Status> {
        let path = req.uri().path();
        if path.starts_with(HEALTH_PREFIX) {
            return Ok(());
        }
        if let Some(token) = &self.state.auth {
            if !token.accepts(req.headers().get(http::header::AUTHORIZATION)) {
                return Err(Status::unauthenticated("missing or invalid bearer token"));
            }
        }
        if path.starts_with(WORKER_PREFIX) && self.state.draining.load(Ordering::Acquire) {
            return Err(Status::unavailable("the worker is shutting down"));
        }
        Ok(())
    }
}

/// OUT_OF_RANGE (11) in a trailers-only response is the codec's over-limit answer.
fn map_size_limit_code(headers: &mut HeaderMap) {
    const OUT_OF_RANGE: &[u8] = b"11";
    if headers.get("grpc-status").map(|v| v.as_bytes()) == Some(OUT_OF_RANGE) {
        let code = tonic::Code::ResourceExhausted as i32;
        headers.insert("grpc-status", HeaderValue::from(code));
    }
}

/// Parses gRPC's `grpc-timeout` header: at most 8 ASCII digits and a unit (H, M, S, m, u, n).
/// Anything malformed is ignored, as the gRPC spec leaves it to the server.
pub fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_timeout(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (v, d) in cases {
            assert_eq!(parse_grpc_timeout(&with_timeout(v)), Some(d), "{v}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for v in ["", "S", "123456789S", "-1S", "1.5S", "10x", "1 S"] {
            let h = if v.is_empty() {
                HeaderMap::new()
            } else {
                with_timeout(v)
            };
            assert_eq!(parse_grpc_timeout(&h), None, "{v:?}");
        }
    }

    #[test]
    fn maps_only_out_of_range() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        map_size_limit_code(&mut h);
        assert_eq!(h.get("grpc-status").unwrap(), "8");
        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", HeaderValue::from_static("3"));
        map_size_limit_code(&mut ok);
        assert_eq!(ok.get("grpc-status").unwrap(), "3");
    }

    proptest! {
        #[test]
        fn never_panics(s in "[0-9A-Za-z]{0,12}") {
            if let Ok(v) = HeaderValue::from_str(&s) {
                let mut h = HeaderMap::new();
                h.insert("grpc-timeout", v);
                let _ = parse_grpc_timeout(&h);
            }
        }
    }
}
