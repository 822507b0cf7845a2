//! How the server runs: limits, security and timing knobs. Every HTTP/2 and message-size limit is
//! set explicitly here rather than left to library defaults, so that what the worker accepts is
//! a decision written down in one place.

use crate::auth::AuthToken;
use crate::metrics::Metrics;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The default decode (and encode) limit for one gRPC message: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// PEM-encoded TLS material. With `client_ca_pem`, clients must present a certificate signed by
/// it (mutual TLS).
#[derive(Clone)]
pub struct TlsOptions {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("TlsOptions")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// HTTP/2 and TCP limits.
#[derive(Clone, Debug)]
pub struct Http2Options {
    /// Concurrent streams one connection may open (the engine's queue cap is separate).
    pub max_concurrent_streams: u32,
    /// Largest header block a client may send.
    pub max_header_list_size: u32,
    /// Ping interval; a peer that does not answer within `keepalive_timeout` is dropped, which
    /// cancels its requests and frees their KV blocks.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// TCP keepalive probe interval.
    pub tcp_keepalive: Duration,
    /// Bounds the cost of clients that open and reset streams in a loop.
    pub max_pending_accept_reset_streams: usize,
}

impl Default for Http2Options {
    fn default() -> Self {
        Http2Options {
            max_concurrent_streams: 1024,
            max_header_list_size: 16 * 1024,
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(60),
            max_pending_accept_reset_streams: 64,
        }
    }
}

/// Everything [`crate::run`] needs besides the listener and the engine.
pub struct ServerOptions {
    /// Largest gRPC message decoded or encoded; beyond it a request gets RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// When set, every call except health checks must carry `authorization: Bearer <token>`.
    pub auth_token: Option<AuthToken>,
    pub tls: Option<TlsOptions>,
    pub http2: Http2Options,
    /// After the shutdown signal, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// How often the engine's health is turned into grpc.health.v1 status.
    pub health_poll_interval: Duration,
    /// The registry the metrics port serves; pass the same one to the engine as its observer.
    pub metrics: Arc<Metrics>,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: not served.
    pub metrics_listener: Option<TcpListener>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            auth_token: None,
            tls: None,
            http2: Http2Options::default(),
            drain_timeout: Duration::from_secs(30),
            health_poll_interval: Duration::from_millis(100),
            metrics: Arc::new(Metrics::new()),
            metrics_listener: None,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("max_message_bytes", &self.max_message_bytes)
            .field("auth", &self.auth_token.is_some())
            .field("tls", &self.tls)
            .field("http2", &self.http2)
            .field("drain_timeout", &self.drain_timeout)
            .field("metrics_listener", &self.metrics_listener.is_some())
            .finish_non_exhaustive()
    }
}
