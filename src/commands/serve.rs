//! `halo serve`: loads the model on a device through the engine, then serves the worker gRPC API
//! (and with `--http-listen` the OpenAI-compatible HTTP API: `halo_server::run_with_http`) until
//! SIGTERM or Ctrl-C, and drains before exiting 0.
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
    #[arg(long, value_name = "PATH")]
    model: PathBuf,
    /// cpu, cuda or gaudi.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// gRPC address, HOST:PORT (a host name is resolved); port 0 picks a free port (the serving
    /// line on stdout names it).
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = parse_listen)]
    listen: ListenAddr,
    /// Prometheus metrics address (GET /metrics) [default: 127.0.0.1:9090; with --listen on
    /// port 0, a free port on the --listen host, named on the serving line].
    #[arg(long, value_parser = parse_listen)]
    metrics_listen: Option<ListenAddr>,
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
    /// OpenAI-compatible HTTP API address (/v1/completions, /v1/chat/completions, /v1/models,
    /// /health), HOST:PORT; off unless given. Port 0 picks a free port (the serving line names
    /// it). Same auth token, limits and metrics as gRPC.
    #[arg(long, value_parser = parse_listen)]
    http_listen: Option<ListenAddr>,
    /// Seconds in-flight requests may take to finish after SIGTERM (at most a day).
    #[arg(long, default_value_t = 30, value_parser = parse_drain_timeout)]
    drain_timeout_secs: u64,
    /// Seconds without scheduler progress (while work is pending) before health reports
    /// NOT_SERVING (1 to a day).
    #[arg(long, default_value_t = 30, value_parser = parse_stall_timeout)]
    stall_timeout_secs: u64,
}

/// The longest drain after SIGTERM: as long as the longest stall timeout (a day); beyond it a
/// value is a typo, and a `Duration` near `u64::MAX` seconds overflows deadline arithmetic.
const MAX_DRAIN_TIMEOUT_SECS: u64 = halo_engine::config::MAX_STALL_TIMEOUT.as_secs();

/// Whole seconds in `lo..=hi`; clap prefixes the flag, so the one-line error names it.
fn parse_secs(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected whole seconds between {lo} and {hi}"))?;
    if v < lo || v > hi {
        return Err(format!("must be between {lo} and {hi}"));
    }
    Ok(v)
}

fn parse_drain_timeout(s: &str) -> Result<u64, String> {
    parse_secs(s, 0, MAX_DRAIN_TIMEOUT_SECS)
}

fn parse_stall_timeout(s: &str) -> Result<u64, String> {
    parse_secs(s, 1, halo_engine::config::MAX_STALL_TIMEOUT.as_secs())
}

/// The default metrics address when --listen names a fixed port.
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";

/// A `--listen` value: what the user wrote and the addresses it resolves to.
#[derive(Clone, Debug)]
pub struct ListenAddr {
    text: String,
    addrs: Vec<SocketAddr>,
}

impl ListenAddr {
    /// Port 0: the system picks a free port.
    fn any_port(&self) -> bool {
        self.addrs.iter().all(|a| a.port() == 0)
    }
}

/// HOST:PORT with an IP or a host name (resolved now, so a bad name is a usage error).
fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(ListenAddr {
            text: s.to_string(),
            addrs: vec![a],
        });
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT, e.g. 127.0.0.1:50051 or localhost:50051".to_string())?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("expected HOST:PORT, e.g. 127.0.0.1:50051 or localhost:50051".to_string());
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(ListenAddr {
        text: s.to_string(),
        addrs,
    })
}

/// Binds the first address of `addr` that can be bound (as `TcpListener::bind` does).
async fn bind(addr: &ListenAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(&addr.addrs[..]).await
}

/// The metrics address: --metrics-listen if given; else, when --listen picks a free port, a free
/// port on the same host (so two workers on port 0 never collide on 9090); else 127.0.0.1:9090.
fn metrics_listen(args: &ServeArgs) -> ListenAddr {
    if let Some(m) = &args.metrics_listen {
        return m.clone();
    }
    if args.listen.any_port() {
        let addrs: Vec<SocketAddr> = args
            .listen
            .addrs
            .iter()
            .map(|a| SocketAddr::new(a.ip(), 0))
            .collect();
        return ListenAddr {
            text: format!("{} (a free port)", addrs[0].ip()),
            addrs,
        };
    }
    parse_listen(DEFAULT_METRICS_LISTEN).expect("a literal address")
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let device = super::progress::WithProgress::wrap(super::device::open(
        super::device::parse_kind(&args.device)?,
    )?);
    let auth_token = auth_token(args.auth_token_file.as_deref())?;
    let tls = tls_options(&args)?;
    let metrics = Arc::new(Metrics::new());
    let config = EngineConfig {
        max_concurrent_requests: args.max_concurrent,
        max_input_tokens: args.max_input_tokens,
        max_total_tokens: args.max_total_tokens,
        max_new_tokens_cap: args.max_new_tokens,
        stall_timeout: Duration::from_secs(args.stall_timeout_secs),
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
        let listener = bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen.text))?;
        let metrics_listener = if args.no_metrics {
            None
        } else {
            let m = metrics_listen(&args);
            Some(bind(&m).await.with_context(|| {
                format!(
                    "cannot listen on {} for metrics (choose another with --metrics-listen, \
                     or --no-metrics)",
                    m.text
                )
            })?)
        };
        let http_listener = match &args.http_listen {
            None => None,
            Some(h) => Some(
                bind(h)
                    .await
                    .with_context(|| format!("cannot listen on {} for HTTP", h.text))?,
            ),
        };
        let model_dir = args.model.clone();
        let load = LoadOptions {
            quantize: args.engine.quantize,
            kv_cache_dtype: args.engine.kv_cache_dtype,
            activation_dtype: args.engine.activation_dtype,
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
        let mut metrics_note = match metrics_addr {
            Some(a) => format!("metrics on http://{a}/metrics"),
            None => "metrics off".to_string(),
        };
        if let Some(l) = &http_listener {
            metrics_note.push_str(&format!("; OpenAI API on http://{}/v1", l.local_addr()?));
        }

        let options = ServerOptions {
            max_message_bytes: args.max_message_bytes,
            auth_token,
            tls,
            drain_timeout: Duration::from_secs(args.drain_timeout_secs),
            metrics,
            metrics_listener,
            ..ServerOptions::default()
        };
        // The line is printed once health already reports SERVING (a router may probe on it).
        let announce = move || {
            let mut stdout = std::io::stdout();
            let printed = writeln!(stdout, "halo serving on {addr} ({metrics_note})")
                .and_then(|()| stdout.flush());
            if let Err(e) = printed {
                tracing::warn!(error = %e, "cannot print the serving line");
            }
        };
        halo_server::run_with_http(
            listener,
            http_listener,
            engine,
            options,
            shutdown_signal(),
            announce,
        )
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
