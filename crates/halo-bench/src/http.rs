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
            .pool_max_idle_per_host(1024)
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
                BenchError::Target(spec.label.clone(), format!("{e} (pass --model LABEL=NAME)"))
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

    async fn models(&self) -> Result<serde_json::Value, String> {
        let resp = self
            .auth(self.client.get(format!("{}/models", self.base)))
            .send()
            .await
            .map_err(|e| format!("GET /models: {}", transport_message(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("GET /models: HTTP {}", resp.status().as_u16()));
        }
        resp.bytes()
            .await
            .map_err(|e| transport_message(&e))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|_| "GET /models: not JSON".to_string())
            })
    }

    async fn first_model(&self) -> Result<String, String> {
        let v = self.models().await?;
        v.get("data")
            .and_then(|d| d.as_array())
            .and_then(|d| d.first())
            .and_then(|m| m.get("id"))
            .and_then(|id| id.as_str())
            .map(str::to_string)
            .ok_or_else(|| "GET /models lists no model".to_string())
    }

    pub async fn info(&self) -> Result<serde_json::Value, BenchError> {
        let models = self.models().await.unwrap_or(serde_json::Value::Null);
        Ok(
            serde_json::json!({ "api": "openai-completions", "model": self.model, "models": models }),
        )
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
        let body = self.body(req);
        let t0 = Instant::now();
        let since = |t0: Instant| t0.elapsed().as_secs_f64();
        let resp = match self
            .auth(self.client.post(format!("{}/completions", self.base)))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
        {
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
