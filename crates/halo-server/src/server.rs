//! Assembly and lifecycle: the tonic server with every limit set explicitly, the guard layer,
//! health and reflection next to the worker service, the metrics port, and graceful shutdown.
//!
//! Shutdown order (RELIABILITY.md): when the shutdown future resolves, health turns NOT_SERVING
//! at once and new worker calls get UNAVAILABLE while the listener stays open (so probes can
//! see the status); the engine stops admitting; in-flight calls drain up to `drain_timeout`;
//! then the transport shuts down gracefully and [`run`] returns.

use crate::admit::Admission;
use crate::guard::{GuardLayer, GuardState};
use crate::health;
use crate::http::{self, HttpState};
use crate::metrics_http;
use crate::options::ServerOptions;
use crate::service::{ActiveCalls, WorkerService};
use halo_engine::Engine;
use halo_proto::worker::v1::worker_server::WorkerServer;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// After the drain, how long graceful transport shutdown may take before `run` returns anyway.
const TRANSPORT_GRACE: Duration = Duration::from_secs(5);
/// How long `run` waits for the engine thread to exit at the end.
const ENGINE_STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves the worker API on `listener` until `shutdown` resolves, then drains and returns.
pub async fn run<F>(
    listener: TcpListener,
    engine: Engine,
    options: ServerOptions,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()>,
{
    run_with_ready(listener, engine, options, shutdown, || {}).await
}

/// [`run`], calling `ready` once health already reports the engine's status (SERVING for a
/// started engine) and the services are assembled, just before connections are served: the
/// place to announce the worker (`halo serve` prints its serving line there). Connections that
/// arrive earlier wait in the listener's backlog.
pub async fn run_with_ready<F, R>(
    listener: TcpListener,
    engine: Engine,
    options: ServerOptions,
    shutdown: F,
    ready: R,
) -> Result<(), ServerError>
where
    F: Future<Output = ()>,
    R: FnOnce(),
{
    run_with_http(listener, None, engine, options, shutdown, ready).await
}

/// [`run_with_ready`], also serving the OpenAI-compatible HTTP API on `http_listener` when
/// given: the same engine, auth token, limits (`max_message_bytes` bounds a request body),
/// metrics and drain. On shutdown, new HTTP requests get 503 while in-flight ones (streams
/// included) finish; then the HTTP listener closes with the gRPC one.
pub async fn run_with_http<F, R>(
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    engine: Engine,
    options: ServerOptions,
    shutdown: F,
    ready: R,
) -> Result<(), ServerError>
where
    F: Future<Output = ()>,
    R: FnOnce(),
{
    let ServerOptions {
        max_message_bytes,
        auth_token,
        tls,
        http2,
        drain_timeout,
        health_poll_interval,
        metrics,
        metrics_listener,
    } = options;

    let draining = Arc::new(AtomicBool::new(false));
    let active = Arc::new(ActiveCalls::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set_status(&reporter, false).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(halo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(halo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let worker = WorkerServer::new(
        WorkerService::new(
            engine.clone(),
            metrics.clone(),
            active.clone(),
            max_message_bytes,
        )
        .with_bearer_auth(auth_token.is_some()),
    )
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);

    let mut builder = Server::builder()
        .accept_http1(false)
        .max_concurrent_streams(http2.max_concurrent_streams)
        .http2_max_header_list_size(http2.max_header_list_size)
        .http2_keepalive_interval(Some(http2.keepalive_interval))
        .http2_keepalive_timeout(Some(http2.keepalive_timeout))
        .http2_max_pending_accept_reset_streams(Some(http2.max_pending_accept_reset_streams));
    let secure = tls.is_some();
    if let Some(tls) = tls {
        let mut cfg =
            ServerTlsConfig::new().identity(Identity::from_pem(tls.cert_pem, tls.key_pem));
        if let Some(ca) = tls.client_ca_pem {
            cfg = cfg.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(cfg)?;
    }
    let (drained_tx, drained_rx) = watch::channel(false);
    let http_task = http_listener.map(|l| {
        let state = HttpState::new(
            Admission::new(engine.clone(), metrics.clone()),
            active.clone(),
            auth_token.clone(),
            draining.clone(),
            max_message_bytes,
        );
        let mut drained = drained_rx.clone();
        tokio::spawn(http::serve(l, state, async move {
            let _ = drained.wait_for(|d| *d).await;
        }))
    });
    let router = builder
        .layer(GuardLayer::new(GuardState {
            auth: auth_token,
            draining: draining.clone(),
        }))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(worker);

    let addr = listener.local_addr().ok();
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(http2.tcp_keepalive));

    // Published here, not on the watcher's first tick: whoever reads the serving line and
    // probes health at once must see SERVING.
    let published = health::publish_initial(&engine, &reporter, &draining).await;
    tokio::spawn(health::watch_engine(
        engine.clone(),
        reporter.clone(),
        draining.clone(),
        health_poll_interval,
        Some(published),
        stop_rx.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let (e, m) = (engine.clone(), metrics.clone());
        let render = Arc::new(move || m.render(&crate::service::live_stats(&e), e.health()));
        let mut stop = stop_rx.clone();
        tokio::spawn(metrics_http::serve(listener, render, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    tracing::info!(addr = ?addr, tls = secure, max_message_bytes, "worker serving");
    ready();

    let drain = {
        let engine = engine.clone();
        let active = active.clone();
        async move {
            shutdown.await;
            draining.store(true, Ordering::Release);
            health::set_status(&reporter, false).await;
            engine.shutdown();
            tracing::info!(
                in_flight = active.count(),
                "shutdown: draining in-flight requests"
            );
            let drained = tokio::time::timeout(drain_timeout, async {
                while active.count() > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!(left = active.count(), "shutdown: drain timeout passed");
            }
            let _ = drained_tx.send(true);
        }
    };
    let serve = router.serve_with_incoming_shutdown(incoming, drain);
    let mut drained = drained_rx.clone();
    let grace = async move {
        if drained.wait_for(|d| *d).await.is_ok() {
            tokio::time::sleep(TRANSPORT_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = serve => r.map_err(ServerError::from),
        _ = grace => {
            tracing::warn!("shutdown: connections still open after the grace period");
            Ok(())
        }
    };

    if let Some(task) = http_task {
        // Drained already: what is left is connections closing.
        if tokio::time::timeout(TRANSPORT_GRACE, task).await.is_err() {
            tracing::warn!("shutdown: HTTP connections still open after the grace period");
        }
    }
    let _ = stop_tx.send(true);
    engine.shutdown();
    let stopped = tokio::task::spawn_blocking(move || engine.wait_stopped(ENGINE_STOP_WAIT))
        .await
        .unwrap_or(false);
    if !stopped {
        tracing::warn!("the engine thread did not stop in time");
    }
    tracing::info!("worker stopped");
    result
}
