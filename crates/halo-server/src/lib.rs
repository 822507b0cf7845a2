//! halo's worker gRPC service (`halo.worker.v1.Worker`) in front of one [`halo_engine::Engine`].
//!
//! What lives here is everything between the wire and the engine: request validation (every
//! rejection before any state changes), bearer-token auth, the message-size and HTTP/2 limits,
//! TLS, the mapping of engine outcomes to gRPC statuses (RELIABILITY.md's table), deadlines read
//! from `grpc-timeout` and handed to the scheduler, grpc.health.v1 driven by the engine's
//! heartbeat, server reflection, Prometheus metrics on a separate port, and graceful shutdown.
//!
//! The OpenAI-compatible HTTP API (`http`) is a second front on the same engine and pieces.
//!
//! [`run`] is the one entry point: the binary (`halo serve`) and in-process tests both call it
//! with a bound listener, a started engine, [`ServerOptions`] and a shutdown future.

pub mod admit;
pub mod auth;
pub mod convert;
pub mod guard;
pub mod health;
pub mod http;
pub mod metrics;
pub mod metrics_http;
pub mod options;
mod server;
pub mod service;
pub mod status;
mod stream;

pub use auth::{AuthError, AuthToken};
pub use metrics::Metrics;
pub use options::{Http2Options, ServerOptions, TlsOptions};
pub use server::{run, run_with_http, run_with_ready, ServerError};
