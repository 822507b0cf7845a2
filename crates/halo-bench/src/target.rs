//! Benchmark targets: parsing `[LABEL=]URL` and the per-target options, and the client enum that
//! sends one request to either kind of target and reports what it saw.

use crate::record::{Chunk, Outcome, ServerTimings};
use crate::workload::RequestSpec;
use crate::BenchError;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// halo's worker API (`grpc://host:port`).
    Grpc,
    /// An OpenAI-compatible completions endpoint (`http(s)://host:port/v1`).
    OpenAi,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetSpec {
    pub label: String,
    pub url: String,
    pub kind: Kind,
    /// The environment variable holding the bearer token (never the token itself).
    pub token_env: Option<String>,
    /// The `model` field for OpenAI targets (else the first of `GET /models`).
    pub model: Option<String>,
    pub price_per_hour: Option<f64>,
}

impl TargetSpec {
    /// `grpc://host:port`, `http(s)://host:port[/path]`, each optionally prefixed by `LABEL=`.
    /// An HTTP URL without a path means `/v1`.
    pub fn parse(arg: &str) -> Result<TargetSpec, BenchError> {
        let (label, url) = match (arg.find('='), arg.find("://")) {
            (Some(eq), Some(scheme)) if eq < scheme => (Some(&arg[..eq]), &arg[eq + 1..]),
            (Some(eq), None) => (Some(&arg[..eq]), &arg[eq + 1..]),
            _ => (None, arg),
        };
        let bad = |why: &str| BenchError::Arg(format!("bad target '{arg}': {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected grpc://HOST:PORT or http(s)://HOST:PORT/v1"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            return Err(bad("no host"));
        }
        let (kind, url) = match scheme {
            "grpc" => {
                match hostport.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
                    _ => return Err(bad("a gRPC target needs HOST:PORT")),
                }
                if !path.trim_matches('/').is_empty() {
                    return Err(bad("a gRPC target has no path"));
                }
                (Kind::Grpc, format!("grpc://{hostport}"))
            }
            "http" | "https" => {
                let path = path.trim_end_matches('/');
                let path = if path.is_empty() { "/v1" } else { path };
                (Kind::OpenAi, format!("{scheme}://{hostport}{path}"))
            }
            other => {
                return Err(bad(&format!(
                    "unknown scheme '{other}' (grpc, http, https)"
                )))
            }
        };
        let label = match label {
            Some(l) if l.trim().is_empty() => return Err(bad("empty label")),
            Some(l) if l.contains(char::is_whitespace) || l.contains(',') => {
                return Err(bad("labels have no spaces or commas"))
            }
            Some(l) => l.to_string(),
            None => hostport.to_string(),
        };
        Ok(TargetSpec {
            label,
            url,
            kind,
            token_env: None,
            model: None,
            price_per_hour: None,
        })
    }
}

/// Options that apply to every target's client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

/// What one request looked like, before the runner adds where and when it ran.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub chunks: Vec<Chunk>,
    /// Seconds from send to the end of the stream.
    pub end: f64,
    pub outcome: Outcome,
    pub usage_output_tokens: Option<u32>,
    pub prompt_tokens: Option<u32>,
    pub finish_reason: Option<String>,
    pub server: Option<ServerTimings>,
    pub cached_prompt_tokens: Option<u32>,
    /// Resends on a fresh connection (see `RequestRecord::retries`).
    pub retries: u32,
}

impl Attempt {
    pub fn failed(
        end: f64,
        chunks: Vec<Chunk>,
        status: impl Into<String>,
        message: impl Into<String>,
    ) -> Attempt {
        Attempt {
            chunks,
            end,
            outcome: Outcome::Failed {
                status: status.into(),
                message: message.into(),
            },
            usage_output_tokens: None,
            prompt_tokens: None,
            finish_reason: None,
            server: None,
            cached_prompt_tokens: None,
            retries: 0,
        }
    }
}

/// A connected target. Cheap to clone: every concurrent request holds one.
#[derive(Clone)]
pub enum Client {
    OpenAi(crate::http::HttpClient),
    Grpc(crate::grpc::GrpcClient),
}

fn bearer(spec: &TargetSpec) -> Result<Option<String>, BenchError> {
    match &spec.token_env {
        None => Ok(None),
        Some(name) => match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(BenchError::Arg(format!(
                "target '{}': environment variable {name} (its bearer token) is not set",
                spec.label
            ))),
        },
    }
}

impl Client {
    pub async fn connect(spec: &TargetSpec, opts: &ClientOptions) -> Result<Client, BenchError> {
        let token = bearer(spec)?;
        Ok(match spec.kind {
            Kind::OpenAi => {
                Client::OpenAi(crate::http::HttpClient::connect(spec, token, opts).await?)
            }
            Kind::Grpc => Client::Grpc(crate::grpc::GrpcClient::connect(spec, token, opts).await?),
        })
    }

    /// What the target says about itself (halo: `GetInfo`; OpenAI: the model list), as JSON.
    pub async fn info(&self) -> Result<serde_json::Value, BenchError> {
        match self {
            Client::OpenAi(c) => c.info().await,
            Client::Grpc(c) => c.info().await,
        }
    }

    pub async fn send(&self, req: &RequestSpec) -> Attempt {
        match self {
            Client::OpenAi(c) => c.send(req).await,
            Client::Grpc(c) => c.send(req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = TargetSpec::parse("a100=grpc://10.0.0.1:50051").unwrap();
        assert_eq!(
            (t.label.as_str(), t.url.as_str(), t.kind),
            ("a100", "grpc://10.0.0.1:50051", Kind::Grpc)
        );
        let t = TargetSpec::parse("http://localhost:8000").unwrap();
        assert_eq!(
            (t.label.as_str(), t.url.as_str(), t.kind),
            ("localhost:8000", "http://localhost:8000/v1", Kind::OpenAi)
        );
        let t = TargetSpec::parse("vllm=https://h:443/api/v1/").unwrap();
        assert_eq!(t.url, "https://h:443/api/v1");
        // An '=' after the scheme belongs to the URL.
        let t = TargetSpec::parse("http://h:1/v1?x=y").unwrap();
        assert_eq!(t.label, "h:1");
        for bad in [
            "localhost:8000",
            "grpc://host",
            "grpc://h:1/x",
            "ftp://h:1",
            "=grpc://h:1",
            "a b=grpc://h:1",
            "grpc://:1",
        ] {
            assert!(TargetSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
