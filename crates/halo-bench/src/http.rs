//! The OpenAI-compatible target: `POST {base}/completions` with `stream: true` and
//! `stream_options.include_usage`, timing every SSE event as it arrives.

use crate::record::{Chunk, Outcome};
use crate::sse::{interpret, SseParser};
use crate::target::{Attempt, ClientOptions, TargetSpec};
use crate::workload::RequestSpec;
use crate::BenchError;
use std::time::Instant;

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base: String,
    model: String,
    token: Option<String>,
}

fn install_crypto_provider() {
    // reqwest is built without a bundled provider (aws-lc needs a C toolchain); ring is already in
    // the tree through tonic. Installing twice is harmless: the second call just reports it.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn transport_message(e: &reqwest::Error) -> String {
    // reqwest's Display can include the URL but never the body, so it carries no prompt text.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Why `GET /models` gave no model name.
#[derive(Debug)]
pub enum ModelsError {
    /// No HTTP answer at all (refused, reset, DNS, timeout).
    Unreachable(String),
    /// An HTTP answer with this status.
    Status(u16),
    /// An answer that names no model.
    Unusable(String),
}

/// The message for a target whose model could not be found. `--model` is suggested only where
/// it would help: the server answered but named no model (a server that is down, or refuses the
/// token, needs something else).
pub fn model_error_message(e: &ModelsError, token_env: &Option<String>) -> String {
    match e {
        ModelsError::Unreachable(m) => format!("cannot reach the target: {m}"),
        ModelsError::Status(code @ (401 | 403)) => format!(
            "GET /models: HTTP {code}: the target refused the request's credentials; put its \
             bearer token in {} (or name another variable with --token-env LABEL=NAME)",
            token_env.as_deref().unwrap_or("HALO_BENCH_TOKEN")
        ),
        ModelsError::Status(code) => {
            format!("GET /models: HTTP {code} (pass the model name with --model LABEL=NAME)")
        }
        ModelsError::Unusable(m) => format!("{m} (pass the model name with --model LABEL=NAME)"),
    }
}

impl HttpClient {
    pub async fn connect(
        spec: &TargetSpec,
        token: Option<String>,
        opts: &ClientOptions,
    ) -> Result<HttpClient, BenchError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            // No kept-alive connections: a server may close one right after a streamed response
            // (llama-server does), and a request sent on it then fails for a reason that is the
            // client's, not the target's. A fresh connection per request costs one loopback or
            // LAN handshake, outside TTFT's dominant terms and identical for every target.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| BenchError::Target(spec.label.clone(), transport_message(&e)))?;
        let mut c = HttpClient {
            client,
            base: spec.url.clone(),
            model: String::new(),
            token,
        };
        c.model = match &spec.model {
            Some(m) => m.clone(),
            None => c.first_model().await.map_err(|e| {
                BenchError::Target(spec.label.clone(), model_error_message(&e, &spec.token_env))
            })?,
        };
        Ok(c)
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn get_json(&self, url: String, what: &str) -> Result<serde_json::Value, ModelsError> {
        let resp = self.auth(self.client.get(url)).send().await.map_err(|e| {
            ModelsError::Unreachable(format!("GET {what}: {}", transport_message(&e)))
        })?;
        if !resp.status().is_success() {
            return Err(ModelsError::Status(resp.status().as_u16()));
        }
        resp.bytes()
            .await
            .map_err(|e| ModelsError::Unreachable(transport_message(&e)))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|_| ModelsError::Unusable(format!("GET {what}: not JSON")))
            })
    }

    async fn models(&self) -> Result<serde_json::Value, ModelsError> {
        self.get_json(format!("{}/models", self.base), "/models")
            .await
    }

    async fn first_model(&self) -> Result<String, ModelsError> {
        let v = self.models().await?;
        v.get("data")
            .and_then(|d| d.as_array())
            .and_then(|d| d.first())
            .and_then(|m| m.get("id"))
            .and_then(|id| id.as_str())
            .map(str::to_string)
            .ok_or_else(|| ModelsError::Unusable("GET /models lists no model".to_string()))
    }

    /// The target's self-description: the model used, `GET /models`, and `GET /props` (on the
    /// server root, next to `/v1`) where the server has it (llama-server does; others answer 404,
    /// recorded as null).
    pub async fn info(&self) -> Result<serde_json::Value, BenchError> {
        let models = self.models().await.unwrap_or(serde_json::Value::Null);
        let root = self.base.strip_suffix("/v1").unwrap_or(&self.base);
        let props = self
            .get_json(format!("{root}/props"), "/props")
            .await
            .unwrap_or(serde_json::Value::Null);
        Ok(serde_json::json!({
            "api": "openai-completions", "model": self.model, "models": models, "props": props,
        }))
    }

    /// The request body. `ignore_eos` and `min_tokens` are the vLLM/llama.cpp/TGI extensions
    /// that force the output length; they are left out when the workload does not force it.
    pub fn body(&self, req: &RequestSpec) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.model,
            "prompt": req.prompt,
            "max_tokens": req.max_tokens,
            "temperature": 0.0,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        if req.ignore_eos {
            body["ignore_eos"] = true.into();
            body["min_tokens"] = req.max_tokens.into();
        }
        body
    }

    pub async fn send(&self, req: &RequestSpec) -> Attempt {
        let body = self.body(req).to_string();
        let post = || {
            self.auth(self.client.post(format!("{}/completions", self.base)))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
        };
        let mut t0 = Instant::now();
        let mut retries = 0;
        let mut sent = post().await;
        if let Err(e) = &sent {
            // Nothing reached the server (the connection itself failed): resend once on a fresh
            // connection and count it, timing from the resend.
            if e.is_connect() {
                retries = 1;
                t0 = Instant::now();
                sent = post().await;
            }
        }
        let mut a = self.receive(sent, t0).await;
        a.retries = retries;
        a
    }

    async fn receive(
        &self,
        sent: Result<reqwest::Response, reqwest::Error>,
        t0: Instant,
    ) -> Attempt {
        let since = |t0: Instant| t0.elapsed().as_secs_f64();
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let status = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                return Attempt::failed(since(t0), vec![], status, transport_message(&e));
            }
        };
        if !resp.status().is_success() {
            let code = resp.status().as_u16();
            return Attempt::failed(
                since(t0),
                vec![],
                format!("http:{code}"),
                format!("HTTP {code}"),
            );
        }
        let mut resp = resp;
        let mut parser = SseParser::default();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut a = Attempt {
            chunks: vec![],
            end: 0.0,
            outcome: Outcome::Ok,
            usage_output_tokens: None,
            prompt_tokens: None,
            finish_reason: None,
            server: None,
            cached_prompt_tokens: None,
            retries: 0,
        };
        let mut done = false;
        loop {
            let next = resp.chunk().await;
            let t = since(t0);
            let (events, eof) = match next {
                Ok(Some(bytes)) => (parser.push(&bytes), false),
                Ok(None) => (parser.finish().into_iter().collect::<Vec<_>>(), true),
                Err(e) => {
                    let status = if e.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    };
                    return Attempt::failed(t, chunks, status, transport_message(&e));
                }
            };
            for data in events {
                let info = match interpret(&data) {
                    Ok(i) => i,
                    Err(why) => return Attempt::failed(t, chunks, "protocol", why),
                };
                if let Some(kind) = info.error {
                    return Attempt::failed(
                        t,
                        chunks,
                        "stream_error",
                        format!("error event: {kind}"),
                    );
                }
                if info.done {
                    done = true;
                    a.end = t;
                    break;
                }
                if info.tokens > 0 {
                    chunks.push(Chunk {
                        t,
                        tokens: info.tokens,
                    });
                }
                if info.finish_reason.is_some() {
                    a.finish_reason = info.finish_reason;
                }
                if info.cached_prompt_tokens.is_some() {
                    a.cached_prompt_tokens = info.cached_prompt_tokens;
                }
                if info.completion_tokens.is_some() {
                    a.usage_output_tokens = info.completion_tokens;
                    a.prompt_tokens = info.prompt_tokens;
                }
            }
            if done || eof {
                if !done {
                    a.end = t;
                }
                break;
            }
        }
        if !done {
            return Attempt::failed(
                a.end,
                chunks,
                "protocol",
                "stream ended without data: [DONE]",
            );
        }
        if chunks.is_empty() {
            return Attempt::failed(a.end, chunks, "protocol", "stream carried no tokens");
        }
        a.chunks = chunks;
        a
    }
}
