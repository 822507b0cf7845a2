//! `halo serve`: loads the model on a device through the engine, then serves the worker gRPC API
//! (`halo_server::run`) until SIGTERM or Ctrl-C, and drains before exiting 0.
//!
//! Secrets never come from flag values (which every user sees in `ps`): the bearer token comes
//! from `--auth-token-file` or `HALO_AUTH_TOKEN`.

use anyhow::Context;
use clap::Args;
use halo_engine::{Engine, EngineConfig, EngineError};
use halo_hal::LoadOptions;
use halo_server::{AuthToken, Metrics, ServerOptions, TlsOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The environment variable holding the bearer token when no token file is given.
const TOKEN_ENV: &str = "HALO_AUTH_TOKEN";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model: a directory (config.json, model.safetensors or a sharded index, tokenizer.json),
    /// a .gguf file, or a directory holding one .gguf (or one split -00001-of-N set).
    #[arg(long)]
    model: PathBuf,
    /// cpu, cuda or gaudi.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// gRPC address; port 0 picks a free port (the serving line on stdout names it).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Prometheus metrics address (GET /metrics).
    #[arg(long, default_value = "127.0.0.1:9090")]
    metrics_listen: SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    no_metrics: bool,
    /// Requests waiting + running; beyond it new ones get RESOURCE_EXHAUSTED (QUEUE_FULL).
    #[arg(long, default_value_t = 256)]
    max_concurrent: usize,
    #[command(flatten)]
    engine: super::engine_args::EngineArgs,
    /// Longest prompt (default: derived from the context and the KV pool).
    #[arg(long)]
    max_input_tokens: Option<usize>,
    /// Longest prompt + generation (default: the model's context, capped by the KV pool).
    #[arg(long)]
    max_total_tokens: Option<usize>,
    /// Largest max_new_tokens a request may ask for.
    #[arg(long, default_value_t = 4096)]
    max_new_tokens: usize,
    /// Largest gRPC message in bytes (default 4 MiB).
    #[arg(long, default_value_t = halo_server::options::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// A file holding the bearer token clients must send (else $HALO_AUTH_TOKEN; else no auth).
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle; clients must present a certificate it signed (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Seconds without scheduler progress (while work is pending) before health reports
    /// NOT_SERVING.
    #[arg(long, default_value_t = 30)]
    stall_timeout_secs: u64,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let device = super::device::open(super::device::parse_kind(&args.device)?)?;
    let auth_token = auth_token(args.auth_token_file.as_deref())?;
    let tls = tls_options(&args)?;
    let metrics = Arc::new(Metrics::new());
    let config = EngineConfig {
        max_concurrent_requests: args.max_concurrent,
        max_input_tokens: args.max_input_tokens,
        max_total_tokens: args.max_total_tokens,
        max_new_tokens_cap: args.max_new_tokens,
        stall_timeout: Duration::from_secs(args.stall_timeout_secs.max(1)),
        observer: Some(metrics.clone()),
        ..args.engine.config()
    };
    config.validate().map_err(super::usage)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("halo-serve")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Bind first so a busy port fails before a long model load.
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let metrics_listener = if args.no_metrics {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(args.metrics_listen)
                    .await
                    .with_context(|| {
                        format!("cannot listen on {} for metrics", args.metrics_listen)
                    })?,
            )
        };
        let model_dir = args.model.clone();
        let load = LoadOptions {
            quantize: args.engine.quantize,
            ..LoadOptions::default()
        };
        let engine =
            tokio::task::spawn_blocking(move || Engine::start(device, &model_dir, load, config))
                .await
                .context("the engine start task failed")?
                .map_err(start_error)?;

        let addr = listener.local_addr()?;
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let metrics_note = match metrics_addr {
            Some(a) => format!("metrics on http://{a}/metrics"),
            None => "metrics off".to_string(),
        };
        let mut stdout = std::io::stdout();
        writeln!(stdout, "halo serving on {addr} ({metrics_note})")?;
        stdout.flush()?;

        let options = ServerOptions {
            max_message_bytes: args.max_message_bytes,
            auth_token,
            tls,
            drain_timeout: Duration::from_secs(args.drain_timeout_secs),
            metrics,
            metrics_listener,
            ..ServerOptions::default()
        };
        halo_server::run(listener, engine, options, shutdown_signal())
            .await
            .context("serving")
    })
}

/// Load failures (a bad model directory) are usage errors: exit 2.
fn start_error(e: EngineError) -> anyhow::Error {
    match &e {
        EngineError::Config(_) | EngineError::Tokenizer(_) => super::usage(e),
        EngineError::Device { stage: "load", .. } => super::usage(e),
        _ => anyhow::Error::new(e),
    }
}

fn auth_token(file: Option<&Path>) -> anyhow::Result<Option<AuthToken>> {
    if let Some(path) = file {
        return AuthToken::from_file(path).map(Some).map_err(super::usage);
    }
    match std::env::var(TOKEN_ENV) {
        Ok(v) => AuthToken::new(v.trim())
            .map(Some)
            .map_err(|e| super::usage(format!("{TOKEN_ENV}: {e}"))),
        Err(_) => Ok(None),
    }
}

fn tls_options(args: &ServeArgs) -> anyhow::Result<Option<TlsOptions>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| super::usage(format!("cannot read {}: {e}", p.display())))
    };
    Ok(Some(TlsOptions {
        cert_pem: read(cert)?,
        key_pem: read(key)?,
        client_ca_pem: args.tls_client_ca.as_deref().map(read).transpose()?,
    }))
}

/// Resolves at SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}
