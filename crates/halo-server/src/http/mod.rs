//! The OpenAI-compatible HTTP front (`halo serve --http-listen`): `POST /v1/completions`,
//! `POST /v1/chat/completions` (unary, or server-sent events with `stream: true`),
//! `GET /v1/models` and `GET /health`, on axum.
//!
//! It is a thin front over the same pieces as gRPC: requests become the worker API's
//! `GenerateRequest` and go through the same wire checks (`crate::convert`), admission
//! (`crate::admit`), stream pump (`crate::stream`), bearer token, draining flag, in-flight count
//! and metrics; only the parsing of OpenAI's fields and the rendering of its responses and errors
//! live here.

mod chat;
mod completions;
pub mod error;
mod generate;
pub mod types;

use crate::admit::Admission;
use crate::auth::AuthToken;
use crate::service::ActiveCalls;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use error::ApiError;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The request id: taken from the request when given (checked as gRPC's `request_id`), else
/// made; echoed on the response and in its `id`.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The request's deadline in milliseconds from arrival (gRPC's `grpc-timeout`); past it the
/// request ends with 504 (or an error event in a stream) and its blocks are freed.
pub const TIMEOUT_HEADER: &str = "halo-timeout-ms";

/// What every handler shares.
#[derive(Clone)]
pub struct HttpState(Arc<Inner>);

pub struct Inner {
    admission: Admission,
    active: Arc<ActiveCalls>,
    auth: Option<AuthToken>,
    draining: Arc<AtomicBool>,
    max_body_bytes: usize,
    /// The one model served, as `/v1/models` lists it.
    model: String,
}

impl std::ops::Deref for HttpState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl HttpState {
    pub(crate) fn new(
        admission: Admission,
        active: Arc<ActiveCalls>,
        auth: Option<AuthToken>,
        draining: Arc<AtomicBool>,
        max_body_bytes: usize,
    ) -> HttpState {
        let model = admission.engine.info().model.name;
        HttpState(Arc::new(Inner {
            admission,
            active,
            auth,
            draining,
            max_body_bytes,
            model,
        }))
    }

    /// Callers holding the bearer token form one prefix-cache identity, as over gRPC.
    fn identity(&self) -> Option<String> {
        self.auth.is_some().then(|| "bearer".to_string())
    }

    /// A request may leave `model` out or name the served model; another name is a 404, as
    /// OpenAI answers an unknown model.
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.model => Err(ApiError::not_found(
                format!(
                    "the model '{m}' is not served here (this worker serves '{}')",
                    self.model
                ),
                "model_not_found",
            )
            .with_param("model")),
            _ => Ok(()),
        }
    }

    /// Tokens left for generation after a prompt of `prompt_len`: the default `max_tokens` of
    /// a chat (at least 1, so an over-long prompt meets the engine's own message).
    fn room_after(&self, prompt_len: usize) -> u32 {
        let l = self.admission.engine.limits();
        let room = l
            .max_total_tokens
            .saturating_sub(prompt_len)
            .min(l.max_new_tokens);
        u32::try_from(room.max(1)).unwrap_or(u32::MAX)
    }
}

/// The body, or 413 past the size limit (400 for a body that could not be read).
fn read_body(state: &HttpState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.max_body_bytes)
        } else {
            ApiError::bad_request(format!("the request body could not be read: {r}"))
        }
    })
}

/// Auth on everything but `/health` (probes call it without tokens), then 503 for new work
/// once the worker drains. Both before any body is read.
async fn guard(State(state): State<HttpState>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    if let Some(token) = &state.auth {
        if !token.accepts(req.headers().get(axum::http::header::AUTHORIZATION)) {
            return ApiError::unauthorized().into_response();
        }
    }
    if state.draining.load(Ordering::Acquire) {
        return ApiError::draining().into_response();
    }
    next.run(req).await
}

/// 200 while the worker serves (the same rule as grpc.health.v1), else 503.
async fn health(State(state): State<HttpState>) -> Response {
    let engine = &state.admission.engine;
    let serving = crate::health::is_serving(engine, &state.draining);
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if serving { "ok" } else { "unavailable" },
        "health": engine.health().as_str(),
    });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn models(State(state): State<HttpState>) -> Response {
    let info = state.admission.engine.info();
    let list = types::ModelList {
        object: "list",
        data: vec![types::ModelCard {
            id: state.model.clone(),
            object: "model",
            created: 0,
            owned_by: "halo",
            max_model_len: info.limits.max_total_tokens,
        }],
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&list).expect("the model list serializes"),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(
        format!("no route {} {}", req.method(), req.uri().path()),
        "not_found",
    )
}

pub(crate) fn router(state: HttpState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/completions", post(completions::handle))
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves the front on `listener` until `shutdown` resolves; then in-flight responses (streams
/// included) finish and the connections close.
pub(crate) async fn serve<F>(listener: TcpListener, state: HttpState, shutdown: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().ok();
    // Small SSE events must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tracing::info!(addr = ?addr, "OpenAI-compatible HTTP serving");
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "the HTTP front stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn unknown_routes_get_the_error_object() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let req = Request::builder()
            .uri("/v2/nothing")
            .body(Body::empty())
            .unwrap();
        let e = rt.block_on(not_found(req));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.message.contains("/v2/nothing"));
    }
}
